/* Tests of the .npz / .npy reader (lib/io/npz.c, lib/io/npy.c).
 *
 * Valid and hostile archives are built here in C, with libzip's write API
 * into memory, then patched byte-wise where a hostile case needs it (lying
 * sizes, renamed members, foreign compression methods). Two archives written
 * by NumPy itself (np.savez and np.savez_compressed, whose members carry
 * zip64 extra fields) are embedded as bytes; the script that produced them
 * is quoted above them. No Python is needed to run the test.
 *
 * Every error case checks the exact status, that lwfm_last_error() names the
 * member or key, and that the output archive is left zeroed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "core/core.h"
#include "io/npy.h"
#include "io/npz.h"

/* ------------------------------------------------------------------------ */
/* Test harness                                                              */

static int g_checks, g_failures;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        g_checks++;                                                                 \
        if (!(cond)) {                                                              \
            g_failures++;                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

/* Status must be `want`; on errors the detail message must contain s1 and s2
 * (either may be NULL). */
#define EXPECT(st, want, s1, s2) expect_(__LINE__, (st), (want), (s1), (s2))

static void expect_(int line, lwfm_status got, lwfm_status want, const char *s1, const char *s2) {
    const char *msg = lwfm_last_error();
    g_checks++;
    if (got != want) {
        g_failures++;
        fprintf(stderr, "line %d: status %d (%s), want %d (%s); message: %s\n", line, (int)got,
                lwfm_status_string(got), (int)want, lwfm_status_string(want), msg);
        return;
    }
    const char *subs[2] = {s1, s2};
    for (int i = 0; i < 2; i++) {
        if (subs[i] && !strstr(msg, subs[i])) {
            g_failures++;
            fprintf(stderr, "line %d: message lacks \"%s\": %s\n", line, subs[i], msg);
        }
    }
}

static void die(const char *what) {
    fprintf(stderr, "test setup failed: %s\n", what);
    exit(2);
}

static int is_zeroed(const lwfm__archive *ar) {
    static const lwfm__archive zero;
    return memcmp(ar, &zero, sizeof zero) == 0;
}

/* ------------------------------------------------------------------------ */
/* Byte buffers, .npy and zip builders                                       */

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *d, size_t n) {
    if (!b->p || b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) die("realloc");
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_uint(bytes *b, uint64_t v, int size, int big) {
    uint8_t t[8];
    for (int i = 0; i < size; i++) t[big ? size - 1 - i : i] = (uint8_t)(v >> (8 * i));
    put(b, t, (size_t)size);
}

static void bytes_free(bytes *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static uint32_t get_le(const uint8_t *p, int size) {
    uint32_t v = 0;
    for (int i = size - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void set_le(uint8_t *p, uint32_t v, int size) {
    for (int i = 0; i < size; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Array data in a given byte order. */
static bytes pack_uints(const uint64_t *v, size_t n, int size, int big) {
    bytes b = {0};
    for (size_t i = 0; i < n; i++) put_uint(&b, v[i], size, big);
    if (!b.p) put(&b, "", 0);
    return b;
}

static bytes pack_f32(const float *v, size_t n, int big) {
    bytes b = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        put_uint(&b, u, 4, big);
    }
    return b;
}

static bytes pack_f64(const double *v, size_t n, int big) {
    bytes b = {0};
    for (size_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &v[i], 8);
        put_uint(&b, u, 8, big);
    }
    return b;
}

/* A .npy member: format version major.0, header text `dict` padded with
 * spaces and a newline so that the data starts 64-byte aligned (as NumPy
 * does), then the data. hlen_override, when nonzero, replaces the header
 * length field. Consumes `data`. */
static bytes npy_full(int major, const char *dict, bytes data, uint32_t hlen_override) {
    static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t pad = (64 - (pre + dl + 1) % 64) % 64;
    uint32_t hlen = (uint32_t)(dl + pad + 1);
    bytes b = {0};
    put(&b, magic, 6);
    put_uint(&b, (uint64_t)major, 1, 0);
    put_uint(&b, 0, 1, 0);
    put_uint(&b, hlen_override ? hlen_override : hlen, major == 1 ? 2 : 4, 0);
    put(&b, dict, dl);
    for (size_t i = 0; i < pad; i++) put(&b, " ", 1);
    put(&b, "\n", 1);
    put(&b, data.p, data.n);
    bytes_free(&data);
    return b;
}

/* The usual NumPy header for descr and shape text, e.g. "<f4", "(2, 3)". */
static bytes npy(const char *descr, const char *shape, bytes data) {
    char dict[512];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
             shape);
    return npy_full(1, dict, data, 0);
}

typedef struct member {
    const char *name;
    bytes data; /* for a directory entry (name ending in '/'): empty */
    int method; /* ZIP_CM_STORE or ZIP_CM_DEFLATE */
    int encrypt;
} member;

/* A zip archive in memory holding the members (which are not consumed). */
static bytes zip_build(const member *m, int count) {
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &err);
    if (!src) die("zip_source_buffer_create");
    zip_t *za = zip_open_from_source(src, ZIP_TRUNCATE, &err);
    if (!za) die("zip_open_from_source");
    zip_source_keep(src);
    for (int i = 0; i < count; i++) {
        size_t len = strlen(m[i].name);
        zip_int64_t idx;
        if (len && m[i].name[len - 1] == '/') {
            if ((idx = zip_dir_add(za, m[i].name, 0)) < 0) die(zip_strerror(za));
            continue;
        }
        zip_source_t *s = zip_source_buffer(za, m[i].data.p, m[i].data.n, 0);
        if (!s) die("zip_source_buffer");
        if ((idx = zip_file_add(za, m[i].name, s, 0)) < 0) die(zip_strerror(za));
        if (zip_set_file_compression(za, (zip_uint64_t)idx, m[i].method, 9) != 0)
            die("zip_set_file_compression");
        if (m[i].encrypt &&
            zip_file_set_encryption(za, (zip_uint64_t)idx, ZIP_EM_TRAD_PKWARE, "secret") != 0)
            die("zip_file_set_encryption");
    }
    if (zip_close(za) != 0) die(zip_strerror(za));
    if (zip_source_open(src) != 0 || zip_source_seek(src, 0, SEEK_END) != 0) die("reopen");
    zip_int64_t n = zip_source_tell(src);
    bytes b = {0};
    if (n <= 0 || zip_source_seek(src, 0, SEEK_SET) != 0) die("tell");
    b.p = malloc((size_t)n);
    if (!b.p || zip_source_read(src, b.p, (zip_uint64_t)n) != n) die("read back");
    b.n = b.cap = (size_t)n;
    zip_source_close(src);
    zip_source_free(src);
    zip_error_fini(&err);
    return b;
}

static void members_free(member *m, int count) {
    for (int i = 0; i < count; i++) bytes_free(&m[i].data);
}

/* Offset of the local (central = 0) or central (central = 1) header of a
 * member, or (size_t)-1. */
static size_t find_header(const bytes *z, const char *name, int central) {
    uint32_t sig = central ? 0x02014b50u : 0x04034b50u;
    size_t name_at = central ? 46 : 30, len_at = central ? 28 : 26, len = strlen(name);
    for (size_t off = 0; off + name_at + len <= z->n; off++)
        if (get_le(z->p + off, 4) == sig && get_le(z->p + off + len_at, 2) == len &&
            memcmp(z->p + off + name_at, name, len) == 0)
            return off;
    return (size_t)-1;
}

/* Overwrite a little-endian field in a member's local and central headers;
 * offsets are those of the local header (the central header has the same
 * fields 2 bytes (flags/method) or 2 bytes (sizes) further on). */
static void patch_member(bytes *z, const char *name, size_t local_off, uint32_t v, int size) {
    size_t l = find_header(z, name, 0), c = find_header(z, name, 1);
    if (l == (size_t)-1 || c == (size_t)-1) die("member header not found");
    set_le(z->p + l + local_off, v, size);
    set_le(z->p + c + local_off + 2, v, size);
}
enum { LH_FLAGS = 6, LH_METHOD = 8, LH_USIZE = 22 };

/* Where a member's stored bytes lie in the archive. */
static void data_region(const bytes *z, const char *name, size_t *start, size_t *len) {
    size_t l = find_header(z, name, 0);
    if (l == (size_t)-1) die("member header not found");
    *start = l + 30 + get_le(z->p + l + 26, 2) + get_le(z->p + l + 28, 2);
    *len = get_le(z->p + l + 18, 4);
}

static lwfm_status load(lwfm__archive *ar, const bytes *z, const lwfm__npz_limits *lim) {
    lwfm_status st = lwfm__npz_read_memory(ar, z->p, z->n, lim);
    if (st) CHECK(is_zeroed(ar));
    return st;
}

/* Build a one-member stored archive from `data` (consumed) and load it. */
static lwfm_status load1(lwfm__archive *ar, const char *name, bytes data,
                         const lwfm__npz_limits *lim) {
    member m = {name, data, ZIP_CM_STORE, 0};
    bytes z = zip_build(&m, 1);
    lwfm_status st = load(ar, &z, lim);
    bytes_free(&z);
    bytes_free(&m.data);
    return st;
}

static int same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* ------------------------------------------------------------------------ */
/* Valid arrays: every dtype, both byte orders, both compression methods     */

static const uint16_t kHalf[] = {0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0xfbff,
                                 0x0001, 0x03ff, 0x0400, 0x3555};
static const float kHalfF[] = {0.0f, -0.0f, 1.0f, -2.0f, 65504.0f, -65504.0f,
                               0x1p-24f, 1023 * 0x1p-24f, 0x1p-14f, 0.333251953125f};
static const float kF4[] = {0.0f, 1.5f, -2.0f, 3.25f, 1e-3f, -1e-40f};
static const double kF8[] = {1.0 / 3, -1e-40, 3.0e38, -0.0, 1e-50, 123456789.0};

static void test_dtypes(void) {
    static const uint64_t b1[] = {0, 1, 2, 255};
    static const uint64_t i1[] = {0x80, 0x7f, 0xff};
    static const uint64_t i2[] = {0x8000, 0xfffe, 0x1234};
    static const uint64_t i4[] = {0x80000000u, 0xffffffffu, 7};
    static const uint64_t i8[] = {0x8000000000000000u, 0x0102030405060708u};
    static const uint64_t u8[] = {0x7fffffffffffffffu, 0};
    uint64_t half64[10];
    for (int i = 0; i < 10; i++) half64[i] = kHalf[i];

    for (int method = 0; method < 2; method++) {
        int cm = method ? ZIP_CM_DEFLATE : ZIP_CM_STORE;
        member m[] = {
            {"f4.npy", npy("<f4", "(2, 3)", pack_f32(kF4, 6, 0)), cm, 0},
            {"f4be.npy", npy(">f4", "(6,)", pack_f32(kF4, 6, 1)), cm, 0},
            {"f2.npy", npy("<f2", "(10,)", pack_uints(half64, 10, 2, 0)), cm, 0},
            {"f2be.npy", npy(">f2", "(2, 5)", pack_uints(half64, 10, 2, 1)), cm, 0},
            {"f8.npy", npy("<f8", "(6,)", pack_f64(kF8, 6, 0)), cm, 0},
            {"f8be.npy", npy(">f8", "(3, 2)", pack_f64(kF8, 6, 1)), cm, 0},
            {"b1.npy", npy("|b1", "(4,)", pack_uints(b1, 4, 1, 0)), cm, 0},
            {"i1.npy", npy("|i1", "(3,)", pack_uints(i1, 3, 1, 0)), cm, 0},
            {"i1lt.npy", npy("<i1", "(3,)", pack_uints(i1, 3, 1, 0)), cm, 0},
            {"u1.npy", npy("|u1", "(3,)", pack_uints(i1, 3, 1, 0)), cm, 0},
            {"i2.npy", npy("<i2", "(3,)", pack_uints(i2, 3, 2, 0)), cm, 0},
            {"i2be.npy", npy(">i2", "(3,)", pack_uints(i2, 3, 2, 1)), cm, 0},
            {"u2.npy", npy("<u2", "(3,)", pack_uints(i2, 3, 2, 0)), cm, 0},
            {"u2be.npy", npy(">u2", "(3,)", pack_uints(i2, 3, 2, 1)), cm, 0},
            {"i4.npy", npy("<i4", "(3,)", pack_uints(i4, 3, 4, 0)), cm, 0},
            {"i4be.npy", npy(">i4", "(3,)", pack_uints(i4, 3, 4, 1)), cm, 0},
            {"u4.npy", npy("<u4", "(3,)", pack_uints(i4, 3, 4, 0)), cm, 0},
            {"u4be.npy", npy(">u4", "(3,)", pack_uints(i4, 3, 4, 1)), cm, 0},
            {"i8.npy", npy("<i8", "(2,)", pack_uints(i8, 2, 8, 0)), cm, 0},
            {"i8be.npy", npy(">i8", "(2,)", pack_uints(i8, 2, 8, 1)), cm, 0},
            {"u8.npy", npy("<u8", "(2,)", pack_uints(u8, 2, 8, 0)), cm, 0},
            {"u8be.npy", npy(">u8", "(2,)", pack_uints(u8, 2, 8, 1)), cm, 0},
            {"scalar.npy", npy("<f4", "()", pack_f32(kF4 + 1, 1, 0)), cm, 0},
            {"empty.npy", npy("<f4", "(0, 3)", pack_f32(NULL, 0, 0)), cm, 0},
            {"net/bn.num_batches_tracked.npy", npy("<i8", "()", pack_uints(u8 + 1, 1, 8, 0)), cm,
             0},
        };
        int nm = (int)(sizeof m / sizeof m[0]);
        bytes z = zip_build(m, nm);
        lwfm__archive ar;
        EXPECT(load(&ar, &z, NULL), LWFM_OK, NULL, NULL);
        CHECK(ar.count == (size_t)nm - 1); /* num_batches_tracked dropped */
        CHECK(strcmp(ar.source, "<memory>") == 0);
        CHECK(lwfm__archive_find(&ar, "net/bn.num_batches_tracked") == NULL);
        CHECK(lwfm__archive_find(&ar, "f4.npy") == NULL); /* names lose ".npy" */

        const lwfm__tensor *t;
        float f8want[6];
        for (int i = 0; i < 6; i++) f8want[i] = (float)kF8[i];
        const struct {
            const char *name;
            const float *want;
            size_t n;
        } fl[] = {{"f4", kF4, 6},      {"f4be", kF4, 6},    {"f2", kHalfF, 10},
                  {"f2be", kHalfF, 10}, {"f8", f8want, 6}, {"f8be", f8want, 6}};
        for (size_t k = 0; k < sizeof fl / sizeof fl[0]; k++) {
            t = lwfm__archive_find(&ar, fl[k].name);
            CHECK(t && t->f32 && !t->ints && t->numel == fl[k].n);
            if (t && t->f32) CHECK(same_bits(t->f32, fl[k].want, fl[k].n));
        }
        t = lwfm__archive_find(&ar, "f4");
        CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
              strcmp(t->descr, "<f4") == 0);
        t = lwfm__archive_find(&ar, "f2be");
        CHECK(t && strcmp(t->descr, ">f2") == 0 && t->ndim == 2 && t->shape[1] == 5);
        t = lwfm__archive_find(&ar, "scalar");
        CHECK(t && t->ndim == 0 && t->numel == 1 && t->f32 && t->f32[0] == 1.5f);
        t = lwfm__archive_find(&ar, "empty");
        CHECK(t && t->ndim == 2 && t->numel == 0 && t->f32);

        const struct {
            const char *name;
            int64_t want[4];
            size_t n;
        } in[] = {
            {"b1", {0, 1, 1, 1}, 4},
            {"i1", {-128, 127, -1}, 3},
            {"i1lt", {-128, 127, -1}, 3},
            {"u1", {128, 127, 255}, 3},
            {"i2", {-32768, -2, 0x1234}, 3},
            {"i2be", {-32768, -2, 0x1234}, 3},
            {"u2", {32768, 65534, 0x1234}, 3},
            {"u2be", {32768, 65534, 0x1234}, 3},
            {"i4", {INT32_MIN, -1, 7}, 3},
            {"i4be", {INT32_MIN, -1, 7}, 3},
            {"u4", {2147483648LL, 4294967295LL, 7}, 3},
            {"u4be", {2147483648LL, 4294967295LL, 7}, 3},
            {"i8", {INT64_MIN, 0x0102030405060708LL}, 2},
            {"i8be", {INT64_MIN, 0x0102030405060708LL}, 2},
            {"u8", {INT64_MAX, 0}, 2},
            {"u8be", {INT64_MAX, 0}, 2},
        };
        for (size_t k = 0; k < sizeof in / sizeof in[0]; k++) {
            t = lwfm__archive_find(&ar, in[k].name);
            CHECK(t && t->ints && !t->f32 && t->numel == in[k].n);
            if (t && t->ints && t->numel == in[k].n)
                for (size_t i = 0; i < in[k].n; i++)
                    CHECK(lwfm__tensor_int(t, i) == in[k].want[i]);
        }
        lwfm__archive_free(&ar);
        CHECK(is_zeroed(&ar));
        bytes_free(&z);
        members_free(m, nm);
    }
}

/* Every finite binary16 value against an independent reference. */
static void test_half_exhaustive(void) {
    uint64_t *bits = malloc(65536 * sizeof *bits);
    float *want = malloc(65536 * sizeof *want);
    size_t n = 0;
    if (!bits || !want) die("malloc");
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, mant = h & 1023;
        if (e == 31) continue; /* inf / nan are rejected, tested below */
        float v = e ? ldexpf((float)(1024 + mant), e - 25) : ldexpf((float)mant, -24);
        bits[n] = h;
        want[n++] = (h & 0x8000) ? -v : v;
    }
    char shape[32];
    snprintf(shape, sizeof shape, "(%zu,)", n);
    lwfm__archive ar;
    EXPECT(load1(&ar, "h.npy", npy("<f2", shape, pack_uints(bits, n, 2, 0)), NULL), LWFM_OK,
           NULL, NULL);
    CHECK(ar.count == 1 && ar.tensors[0].numel == n && same_bits(ar.tensors[0].f32, want, n));
    lwfm__archive_free(&ar);
    free(bits);
    free(want);
}

/* Header spellings NumPy (or a careful hand) may produce. */
static void test_header_variants(void) {
    float v[3] = {1, 2, 3};
    const struct {
        int major;
        const char *dict;
    } ok[] = {
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"},
        {1, "{\"shape\": (3,), \"descr\": \"<f4\", \"fortran_order\": False}"},
        {1, "{ 'fortran_order' : False ,'shape':( 3 , ),'descr':'<f4' }"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3L,)}"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3)}\t\r"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        lwfm__archive ar;
        EXPECT(load1(&ar, "v.npy", npy_full(ok[i].major, ok[i].dict, pack_f32(v, 3, 0), 0), NULL),
               LWFM_OK, NULL, NULL);
        CHECK(ar.count == 1 && ar.tensors[0].numel == 3 && same_bits(ar.tensors[0].f32, v, 3));
        lwfm__archive_free(&ar);
    }
}

/* Malformed .npy members. */
static void test_npy_hostile(void) {
    lwfm__archive ar;
    float v[4] = {1, 2, 3, 4};
    const struct {
        const char *dict;
        lwfm_status want;
        const char *msg;
    } bad[] = {
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", LWFM_ERR_FORMAT,
         "C-contiguous"},
        {"{'descr': '<f4', 'fortran_order': False, }", LWFM_ERR_FORMAT, "no 'shape'"},
        {"{'descr': '<f4', 'shape': (4,), }", LWFM_ERR_FORMAT, "no 'fortran_order'"},
        {"{'fortran_order': False, 'shape': (4,), }", LWFM_ERR_FORMAT, "no 'descr'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}",
         LWFM_ERR_FORMAT, "duplicate key"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", LWFM_ERR_FORMAT,
         "unknown key 'x'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4)}", LWFM_ERR_FORMAT, "1-tuple"},
        {"{'descr': '<f4', 'fortran_order': false, 'shape': (4,)}", LWFM_ERR_FORMAT,
         "True or False"},
        {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (4,)}", LWFM_ERR_FORMAT,
         "True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} x", LWFM_ERR_FORMAT,
         "only whitespace"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)", LWFM_ERR_FORMAT, "'}'"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_FORMAT, "',' or '}'"},
        {"{'descr': '<f\\x34', 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_FORMAT,
         "without escapes"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", LWFM_ERR_FORMAT,
         "negative dimension"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,,)}", LWFM_ERR_FORMAT,
         "a dimension"},
        {"['descr', '<f4']", LWFM_ERR_FORMAT, "'{'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,4)}",
         LWFM_ERR_LIMIT, "more than 8 dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776)}",
         LWFM_ERR_LIMIT, "max_elements"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999,)}",
         LWFM_ERR_LIMIT, "max_elements"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (16384, 16385)}", LWFM_ERR_LIMIT,
         "max_elements"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5,)}", LWFM_ERR_FORMAT,
         "truncated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", LWFM_ERR_FORMAT,
         "trailing bytes"},
        {"{'descr': '<f2', 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_FORMAT,
         "trailing bytes"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}", LWFM_ERR_DTYPE, "'<c8'"},
        {"{'descr': '|O', 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_DTYPE, "'|O'"},
        {"{'descr': '<U4', 'fortran_order': False, 'shape': (1,)}", LWFM_ERR_DTYPE, "'<U4'"},
        {"{'descr': '|S16', 'fortran_order': False, 'shape': (1,)}", LWFM_ERR_DTYPE, "'|S16'"},
        {"{'descr': '<M8[s]', 'fortran_order': False, 'shape': (2,)}", LWFM_ERR_DTYPE,
         "'<M8[s]'"},
        {"{'descr': '<f16', 'fortran_order': False, 'shape': (1,)}", LWFM_ERR_DTYPE, "'<f16'"},
        {"{'descr': '|f4', 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_DTYPE, "'|f4'"},
        {"{'descr': '<b4', 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_DTYPE, "'<b4'"},
        {"{'descr': 'float32', 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_DTYPE,
         "'float32'"},
        {"{'descr': '<f4aaaaaaaaaaaaaaaaaaaaaaaaa', 'fortran_order': False, 'shape': (4,)}",
         LWFM_ERR_DTYPE, "unsupported dtype"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,)}", LWFM_ERR_DTYPE,
         "structured"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(load1(&ar, "layer.w.npy", npy_full(1, bad[i].dict, pack_f32(v, 4, 0), 0), NULL),
               bad[i].want, "member 'layer.w.npy'", bad[i].msg);
    }

    /* Preamble problems. */
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
    bytes b = npy_full(1, dict, pack_f32(v, 4, 0), 0);
    b.p[1] = 'n';
    EXPECT(load1(&ar, "m.npy", b, NULL), LWFM_ERR_FORMAT, "'m.npy'", "bad magic");
    b = npy_full(1, dict, pack_f32(v, 4, 0), 0);
    b.p[6] = 4;
    EXPECT(load1(&ar, "m.npy", b, NULL), LWFM_ERR_UNSUPPORTED, "'m.npy'", "version 4.0");
    b = npy_full(1, dict, pack_f32(v, 4, 0), 0);
    b.p[7] = 1;
    EXPECT(load1(&ar, "m.npy", b, NULL), LWFM_ERR_UNSUPPORTED, "'m.npy'", "version 1.1");
    b = npy_full(1, dict, pack_f32(v, 4, 0), 0);
    b.n = 9;
    EXPECT(load1(&ar, "m.npy", b, NULL), LWFM_ERR_FORMAT, "'m.npy'", "too short");
    b = npy_full(2, dict, pack_f32(v, 4, 0), 0);
    b.n = 11;
    EXPECT(load1(&ar, "m.npy", b, NULL), LWFM_ERR_FORMAT, "'m.npy'", "preamble");
    EXPECT(load1(&ar, "m.npy", npy_full(1, dict, pack_f32(v, 4, 0), 5000), NULL), LWFM_ERR_FORMAT,
           "'m.npy'", "header length 5000");
    EXPECT(load1(&ar, "m.npy", npy_full(2, dict, pack_f32(v, 4, 0), 0xffffffffu), NULL),
           LWFM_ERR_FORMAT, "'m.npy'", "header length 4294967295");
    b = (bytes){0};
    put(&b, "", 0);
    EXPECT(load1(&ar, "m.npy", b, NULL), LWFM_ERR_FORMAT, "'m.npy'", "too short");

    /* A tighter element limit. */
    lwfm__npz_limits lim;
    lwfm__npz_limits_default(&lim);
    lim.max_elements = 3;
    EXPECT(load1(&ar, "m.npy", npy("<f4", "(4,)", pack_f32(v, 4, 0)), &lim), LWFM_ERR_LIMIT,
           "'m.npy'", "max_elements = 3");
    EXPECT(load1(&ar, "m.npy", npy("<f4", "(2, 2)", pack_f32(v, 4, 0)), &lim), LWFM_ERR_LIMIT,
           "'m.npy'", "max_elements = 3");
    lim.max_elements = 4;
    EXPECT(load1(&ar, "m.npy", npy("<f4", "(2, 2)", pack_f32(v, 4, 0)), &lim), LWFM_OK, NULL,
           NULL);
    lwfm__archive_free(&ar);
}

/* Values that are not acceptable weights. */
static void test_values_hostile(void) {
    lwfm__archive ar;
    float nanv[3] = {1, NAN, 2}, infv[2] = {-INFINITY, 0};
    double big[2] = {0, 1e300}, dnan[1] = {NAN};
    uint64_t hinf[2] = {0x3c00, 0x7c00}, hnan[1] = {0xfe00}, u8big[2] = {1, 0x8000000000000000u};

    EXPECT(load1(&ar, "conv1.weight.npy", npy("<f4", "(3,)", pack_f32(nanv, 3, 0)), NULL),
           LWFM_ERR_FORMAT, "'conv1.weight.npy'",
           "non-finite value (NaN or infinity) at element 1");
    EXPECT(load1(&ar, "conv1.weight.npy", npy(">f4", "(2,)", pack_f32(infv, 2, 1)), NULL),
           LWFM_ERR_FORMAT, "'conv1.weight.npy'", "at element 0");
    EXPECT(load1(&ar, "w16.npy", npy("<f2", "(2,)", pack_uints(hinf, 2, 2, 0)), NULL),
           LWFM_ERR_FORMAT, "'w16.npy'", "at element 1");
    EXPECT(load1(&ar, "w16.npy", npy(">f2", "()", pack_uints(hnan, 1, 2, 1)), NULL),
           LWFM_ERR_FORMAT, "'w16.npy'", "non-finite");
    EXPECT(load1(&ar, "w64.npy", npy("<f8", "(2,)", pack_f64(big, 2, 0)), NULL), LWFM_ERR_FORMAT,
           "'w64.npy'", "outside the float32 range");
    EXPECT(load1(&ar, "w64.npy", npy(">f8", "(1,)", pack_f64(dnan, 1, 1)), NULL), LWFM_ERR_FORMAT,
           "'w64.npy'", "non-finite");
    EXPECT(load1(&ar, "ids.npy", npy("<u8", "(2,)", pack_uints(u8big, 2, 8, 0)), NULL),
           LWFM_ERR_FORMAT, "'ids.npy'", "does not fit in int64");
    EXPECT(load1(&ar, "ids.npy", npy(">u8", "(2,)", pack_uints(u8big, 2, 8, 1)), NULL),
           LWFM_ERR_FORMAT, "'ids.npy'", "9223372036854775808");
}

/* ------------------------------------------------------------------------ */
/* Zip-level problems                                                        */

static void test_zip_hostile(void) {
    lwfm__archive ar;
    float v[2] = {1, 2};
    lwfm__npz_limits lim;

    /* A member that is not .npy, and a bare ".npy". */
    {
        member m[] = {{"a.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0},
                      {"notes.txt", pack_f32(v, 2, 0), ZIP_CM_DEFLATE, 0}};
        bytes z = zip_build(m, 2);
        EXPECT(load(&ar, &z, NULL), LWFM_ERR_FORMAT, "'notes.txt'", "not a .npy array");
        bytes_free(&z);
        members_free(m, 2);
        EXPECT(load1(&ar, ".npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), NULL), LWFM_ERR_FORMAT,
               "member '.npy'", "not a .npy array");
    }
    /* Directory entries are skipped; an archive of only those is empty. */
    {
        member m[] = {{"config/", {0}, 0, 0},
                      {"config/x.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0}};
        bytes z = zip_build(m, 2);
        EXPECT(load(&ar, &z, NULL), LWFM_OK, NULL, NULL);
        CHECK(ar.count == 1 && lwfm__archive_find(&ar, "config/x"));
        lwfm__archive_free(&ar);
        bytes_free(&z);
        z = zip_build(m, 1);
        EXPECT(load(&ar, &z, NULL), LWFM_ERR_FORMAT, "<memory>", "no .npy arrays");
        bytes_free(&z);
        members_free(m, 2);
    }
    /* Duplicate member: build a.npy and b.npy, then rename b to a. */
    {
        member m[] = {{"a.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0},
                      {"b.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_DEFLATE, 0}};
        bytes z = zip_build(m, 2);
        size_t l = find_header(&z, "b.npy", 0), c = find_header(&z, "b.npy", 1);
        CHECK(l != (size_t)-1 && c != (size_t)-1);
        z.p[l + 30] = 'a';
        z.p[c + 46] = 'a';
        EXPECT(load(&ar, &z, NULL), LWFM_ERR_FORMAT, "duplicate member 'a.npy'", NULL);
        bytes_free(&z);
        members_free(m, 2);
    }
    /* Name length bound. */
    {
        char name[700];
        memset(name, 'n', sizeof name);
        strcpy(name + 600, ".npy");
        EXPECT(load1(&ar, name, npy("<f4", "(2,)", pack_f32(v, 2, 0)), NULL), LWFM_ERR_FORMAT,
               "nnnnnnnn...", "name longer than 512");
    }
    /* Compression other than stored/deflate (method field patched to LZMA:
     * the check must happen before any decompression is attempted). */
    {
        member m = {"w.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0};
        bytes z = zip_build(&m, 1);
        patch_member(&z, "w.npy", LH_METHOD, ZIP_CM_LZMA, 2);
        EXPECT(load(&ar, &z, NULL), LWFM_ERR_UNSUPPORTED, "'w.npy'", "compression method 14");
        bytes_free(&z);
        bytes_free(&m.data);
    }
    /* Encrypted member (traditional PKWARE, which libzip can write). */
    {
        member m = {"w.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_DEFLATE, 1};
        bytes z = zip_build(&m, 1);
        EXPECT(load(&ar, &z, NULL), LWFM_ERR_UNSUPPORTED, "'w.npy'", "encrypted");
        bytes_free(&z);
        bytes_free(&m.data);
    }
    /* Member count limit. */
    {
        member m[] = {{"a.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0},
                      {"b.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0},
                      {"c.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0}};
        bytes z = zip_build(m, 3);
        lwfm__npz_limits_default(&lim);
        lim.max_members = 2;
        EXPECT(load(&ar, &z, &lim), LWFM_ERR_LIMIT, "3 members", "max_members = 2");
        lim.max_members = 3;
        EXPECT(load(&ar, &z, &lim), LWFM_OK, NULL, NULL);
        CHECK(ar.count == 3);
        lwfm__archive_free(&ar);
        bytes_free(&z);
        members_free(m, 3);
    }
    /* Not a zip at all, empty input, bad arguments. */
    {
        static const char junk[] = "this is not a zip archive, just some text of some length";
        EXPECT(lwfm__npz_read_memory(&ar, junk, sizeof junk, NULL), LWFM_ERR_FORMAT, "<memory>",
               "Not a zip archive");
        CHECK(is_zeroed(&ar));
        EXPECT(lwfm__npz_read_memory(&ar, junk, 0, NULL), LWFM_ERR_FORMAT, "<memory>", "empty");
        EXPECT(lwfm__npz_read_memory(&ar, NULL, 0, NULL), LWFM_ERR_FORMAT, "<memory>", "empty");
        EXPECT(lwfm__npz_read_memory(&ar, NULL, 10, NULL), LWFM_ERR_INVALID_ARGUMENT, NULL, NULL);
        EXPECT(lwfm__npz_read_memory(NULL, junk, 10, NULL), LWFM_ERR_INVALID_ARGUMENT, NULL, NULL);
        EXPECT(lwfm__npz_read_file(&ar, NULL, NULL), LWFM_ERR_INVALID_ARGUMENT, NULL, NULL);
        EXPECT(lwfm__npz_read_file(NULL, "x.npz", NULL), LWFM_ERR_INVALID_ARGUMENT, NULL, NULL);
        lwfm__archive_free(NULL);
    }
}

/* Size limits, zip bombs and lying size fields. */
static void test_limits(void) {
    lwfm__archive ar;
    lwfm__npz_limits lim;
    const size_t big_n = (10u << 20) / 4; /* 10 MiB of float zeros */
    float *zeros = calloc(big_n, sizeof *zeros);
    if (!zeros) die("calloc");

    lwfm__npz_limits_default(&lim);
    CHECK(lim.max_total_bytes == 1073741824u && lim.max_member_bytes == 1073741824u &&
          lim.max_members == 4096 && lim.max_elements == 268435456u);

    char shape[32];
    snprintf(shape, sizeof shape, "(%zu,)", big_n);
    bytes data = {0};
    put(&data, zeros, big_n * 4);
    member m = {"bomb.npy", npy("<f4", shape, data), ZIP_CM_DEFLATE, 0};
    bytes z = zip_build(&m, 1);
    CHECK(z.n < 100000); /* a real bomb: ~10 KiB on disk */

    /* Within the default limits it loads. */
    EXPECT(load(&ar, &z, NULL), LWFM_OK, NULL, NULL);
    CHECK(ar.count == 1 && ar.tensors[0].numel == big_n && ar.tensors[0].f32[big_n - 1] == 0.0f);
    lwfm__archive_free(&ar);

    /* Per-member limit, checked from the directory before inflating. */
    lim.max_member_bytes = 1u << 20;
    EXPECT(load(&ar, &z, &lim), LWFM_ERR_LIMIT, "'bomb.npy'", "max_member_bytes = 1048576");
    EXPECT(load(&ar, &z, &lim), LWFM_ERR_LIMIT, "lwfm_load_options_set_max_total_bytes", NULL);

    /* Total limit over several members. */
    {
        const size_t n = (600u << 10) / 4;
        char shp[32];
        snprintf(shp, sizeof shp, "(%zu,)", n);
        bytes d1 = {0}, d2 = {0};
        put(&d1, zeros, n * 4);
        put(&d2, zeros, n * 4);
        member mm[] = {{"a.npy", npy("<f4", shp, d1), ZIP_CM_DEFLATE, 0},
                       {"b.npy", npy("<f4", shp, d2), ZIP_CM_DEFLATE, 0}};
        bytes zz = zip_build(mm, 2);
        lwfm__npz_limits_default(&lim);
        lim.max_member_bytes = lim.max_total_bytes = 1u << 20;
        EXPECT(load(&ar, &zz, &lim), LWFM_ERR_LIMIT, "max_total_bytes = 1048576",
               "lwfm_load_options_set_max_total_bytes");
        EXPECT(load(&ar, &zz, &lim), LWFM_ERR_LIMIT, "'b.npy'", NULL);
        lim.max_total_bytes = 2u << 20;
        EXPECT(load(&ar, &zz, &lim), LWFM_OK, NULL, NULL);
        lwfm__archive_free(&ar);
        bytes_free(&zz);
        members_free(mm, 2);
    }

    /* Declared size smaller than the real stream: the reader must stop at
     * the declared size and notice the excess, not write past its buffer. */
    bytes lie = {0};
    put(&lie, z.p, z.n);
    patch_member(&lie, "bomb.npy", LH_USIZE, 1000, 4);
    EXPECT(load(&ar, &lie, NULL), LWFM_ERR_FORMAT, "'bomb.npy'", NULL);
    /* Declared larger than the stream (within limits). */
    patch_member(&lie, "bomb.npy", LH_USIZE, 20u << 20, 4);
    EXPECT(load(&ar, &lie, NULL), LWFM_ERR_FORMAT, "'bomb.npy'", NULL);
    /* Declared 4 GiB from ~10 KiB: more than deflate can produce (1032:1),
     * refused from the directory with nothing allocated. */
    patch_member(&lie, "bomb.npy", LH_USIZE, 0xfffffff0u, 4);
    EXPECT(load(&ar, &lie, NULL), LWFM_ERR_FORMAT, "'bomb.npy'", "is impossible for");
    /* Stored member whose declared size differs from its stored bytes. */
    {
        float v[2] = {1, 2};
        member s1 = {"s.npy", npy("<f4", "(2,)", pack_f32(v, 2, 0)), ZIP_CM_STORE, 0};
        bytes zs = zip_build(&s1, 1);
        patch_member(&zs, "s.npy", LH_USIZE, (uint32_t)s1.data.n + 1, 4);
        EXPECT(load(&ar, &zs, NULL), LWFM_ERR_FORMAT, "'s.npy'", "impossible");
        bytes_free(&zs);
        bytes_free(&s1.data);
    }
    bytes_free(&lie);
    /* Declared 4 GiB for a member whose 5 MiB of incompressible deflated
     * bytes could in principle expand that far: over the member limit,
     * refused before anything is allocated or inflated. */
    {
        bytes noise = {0};
        uint64_t x = 0x9e3779b97f4a7c15u;
        for (size_t i = 0; i < (5u << 20) / 8; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
            put_uint(&noise, x, 8, 0);
        }
        member mn = {"noise.npy", noise, ZIP_CM_DEFLATE, 0};
        bytes zn = zip_build(&mn, 1);
        patch_member(&zn, "noise.npy", LH_USIZE, 0xfffffff0u, 4);
        EXPECT(load(&ar, &zn, NULL), LWFM_ERR_LIMIT, "'noise.npy'",
               "decompressed size of 4294967280 bytes exceeds max_member_bytes = 1073741824");
        bytes_free(&zn);
        bytes_free(&mn.data);
    }

    bytes_free(&z);
    bytes_free(&m.data);
    free(zeros);
}

/* ------------------------------------------------------------------------ */
/* Robustness: every truncation and every single-bit flip of small archives  */

static bytes small_archive(int method, const char **stored_name) {
    float v[3] = {0.5f, -1, 2};
    uint64_t one = 1;
    member m[] = {{"w.npy", npy("<f4", "(3,)", pack_f32(v, 3, 0)), method, 0},
                  {"k.npy", npy("<i4", "()", pack_uints(&one, 1, 4, 0)), ZIP_CM_STORE, 0}};
    bytes z = zip_build(m, 2);
    members_free(m, 2);
    *stored_name = method == ZIP_CM_STORE ? "w.npy" : "k.npy";
    return z;
}

static void test_truncation_and_flips(void) {
    for (int method = 0; method < 2; method++) {
        const char *stored;
        bytes z = small_archive(method ? ZIP_CM_DEFLATE : ZIP_CM_STORE, &stored);
        lwfm__archive ar;

        EXPECT(load(&ar, &z, NULL), LWFM_OK, NULL, NULL);
        CHECK(ar.count == 2);
        lwfm__archive_free(&ar);

        /* Every proper prefix is an error (zeroed output checked by load). */
        int bad = 0;
        for (size_t len = 0; len < z.n; len++) {
            uint8_t *cut = malloc(len ? len : 1);
            if (!cut) die("malloc");
            memcpy(cut, z.p, len);
            lwfm_status st = lwfm__npz_read_memory(&ar, cut, len, NULL);
            if (st == LWFM_OK) {
                bad++;
                lwfm__archive_free(&ar);
            } else {
                CHECK(is_zeroed(&ar));
            }
            free(cut);
        }
        CHECK(bad == 0);

        /* Every single-bit flip: any status, no crash or leak; inside the
         * bytes of a stored member the CRC must catch it. */
        size_t ds, dl;
        data_region(&z, stored, &ds, &dl);
        CHECK(dl > 0);
        int crc_missed = 0, accepted = 0;
        for (size_t i = 0; i < z.n; i++) {
            for (int bit = 0; bit < 8; bit++) {
                z.p[i] ^= (uint8_t)(1u << bit);
                lwfm_status st = lwfm__npz_read_memory(&ar, z.p, z.n, NULL);
                if (st == LWFM_OK) {
                    accepted++;
                    lwfm__archive_free(&ar);
                } else {
                    CHECK(is_zeroed(&ar));
                }
                if (i >= ds && i < ds + dl &&
                    (st != LWFM_ERR_FORMAT || !strstr(lwfm_last_error(), "CRC"))) {
                    if (!crc_missed)
                        fprintf(stderr, "flip at %zu bit %d: %d %s\n", i, bit, (int)st,
                                lwfm_last_error());
                    crc_missed++;
                }
                z.p[i] ^= (uint8_t)(1u << bit);
            }
        }
        CHECK(crc_missed == 0);
        /* Flips in timestamps, attributes, etc. are harmless, so some must
         * pass; most must not. */
        CHECK(accepted > 0 && (size_t)accepted < z.n * 8 / 2);
        bytes_free(&z);
    }
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) die("write_file");
}

static void test_files(void) {
    char dir[] = "/tmp/lwfm_test_npz_XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");
    char good[256], cut[256], missing[256], locked[256];
    snprintf(good, sizeof good, "%s/good.npz", dir);
    snprintf(cut, sizeof cut, "%s/cut.npz", dir);
    snprintf(missing, sizeof missing, "%s/missing.npz", dir);
    snprintf(locked, sizeof locked, "%s/locked.npz", dir);

    const char *stored;
    bytes z = small_archive(ZIP_CM_DEFLATE, &stored);
    write_file(good, z.p, z.n);
    write_file(cut, z.p, z.n - 30);
    write_file(locked, z.p, z.n);
    chmod(locked, 0);

    lwfm__archive ar;
    EXPECT(lwfm__npz_read_file(&ar, good, NULL), LWFM_OK, NULL, NULL);
    CHECK(ar.count == 2 && strcmp(ar.source, good) == 0);
    lwfm__archive_free(&ar);

    EXPECT(lwfm__npz_read_file(&ar, missing, NULL), LWFM_ERR_IO, missing,
           "No such file or directory");
    CHECK(is_zeroed(&ar));
    EXPECT(lwfm__npz_read_file(&ar, dir, NULL), LWFM_ERR_IO, dir, "not a regular file");
    EXPECT(lwfm__npz_read_file(&ar, cut, NULL), LWFM_ERR_FORMAT, cut, "zip");
    CHECK(is_zeroed(&ar));
    if (geteuid() != 0) /* root reads anything */
        EXPECT(lwfm__npz_read_file(&ar, locked, NULL), LWFM_ERR_IO, locked, "Permission denied");

    /* Member errors from a file carry the path and the member. */
    float nanv[1] = {NAN};
    member m = {"bad.npy", npy("<f4", "(1,)", pack_f32(nanv, 1, 0)), ZIP_CM_STORE, 0};
    bytes zb = zip_build(&m, 1);
    write_file(good, zb.p, zb.n);
    EXPECT(lwfm__npz_read_file(&ar, good, NULL), LWFM_ERR_FORMAT, good, "member 'bad.npy'");

    bytes_free(&zb);
    bytes_free(&m.data);
    bytes_free(&z);
    unlink(good);
    unlink(cut);
    unlink(locked);
    rmdir(dir);
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */

static void test_accessors(void) {
    uint64_t one = 1, ids[4] = {0, 3, 5, 8}, s[8], bad_s[2] = {'a', 7}, i2d[4] = {1, 2, 3, 4};
    float temp = 0.2f, *conv = malloc(64 * 27 * sizeof *conv);
    if (!conv) die("malloc");
    for (int i = 0; i < 64 * 27; i++) conv[i] = (float)i * 0.5f;
    for (int i = 0; i < 8; i++) s[i] = (uint8_t)"lwfm-spm"[i];
    member m[] = {
        {"config/format_version.npy", npy("<i4", "()", pack_uints(&one, 1, 4, 0)),
         ZIP_CM_DEFLATE, 0},
        {"config/learnable_matcher.npy", npy("|b1", "()", pack_uints(&one, 1, 1, 0)),
         ZIP_CM_STORE, 0},
        {"config/temperature.npy", npy("<f4", "()", pack_f32(&temp, 1, 0)), ZIP_CM_STORE, 0},
        {"config/method.npy", npy("|u1", "(8,)", pack_uints(s, 8, 1, 0)), ZIP_CM_STORE, 0},
        {"config/bad_string.npy", npy("|u1", "(2,)", pack_uints(bad_s, 2, 1, 0)), ZIP_CM_STORE, 0},
        {"config/hyperpixel_ids.npy", npy("<i4", "(4,)", pack_uints(ids, 4, 4, 0)),
         ZIP_CM_STORE, 0},
        {"conv.weight.npy", npy("<f4", "(64, 3, 3, 3)", pack_f32(conv, 64 * 27, 0)),
         ZIP_CM_DEFLATE, 0},
        {"ints2d.npy", npy("<i8", "(2, 2)", pack_uints(i2d, 4, 8, 0)), ZIP_CM_STORE, 0},
        {"bn.num_batches_tracked.npy", npy("<i8", "()", pack_uints(&one, 1, 8, 0)),
         ZIP_CM_STORE, 0},
    };
    int nm = (int)(sizeof m / sizeof m[0]);
    bytes z = zip_build(m, nm);
    lwfm__archive ar;
    EXPECT(load(&ar, &z, NULL), LWFM_OK, NULL, NULL);
    CHECK(ar.count == 8);
    CHECK(lwfm__archive_find(&ar, "bn.num_batches_tracked") == NULL);
    CHECK(lwfm__archive_find(&ar, NULL) == NULL && lwfm__archive_find(NULL, "x") == NULL);

    const float *w = NULL;
    int64_t want[4] = {64, 3, 3, 3}, wrong[4] = {64, 3, 7, 7};
    EXPECT(lwfm__archive_get_f32(&ar, "conv.weight", 4, want, &w), LWFM_OK, NULL, NULL);
    CHECK(w && w[0] == 0.0f && w[64 * 27 - 1] == (64 * 27 - 1) * 0.5f);
    EXPECT(lwfm__archive_get_f32(&ar, "conv.weight", 4, wrong, &w), LWFM_ERR_SHAPE,
           "<memory>: tensor 'conv.weight': expected shape (64, 3, 7, 7), got (64, 3, 3, 3)",
           NULL);
    EXPECT(lwfm__archive_get_f32(&ar, "conv.weight", 2, want, &w), LWFM_ERR_SHAPE,
           "expected shape (64, 3), got (64, 3, 3, 3)", NULL);
    EXPECT(lwfm__archive_get_f32(&ar, "conv.bias", 1, want, &w), LWFM_ERR_MISSING_KEY,
           "missing tensor 'conv.bias'", NULL);
    const int64_t four[1] = {4};
    EXPECT(lwfm__archive_get_f32(&ar, "config/hyperpixel_ids", 1, four, &w), LWFM_ERR_DTYPE,
           "tensor 'config/hyperpixel_ids'", "'<i4'");
    EXPECT(lwfm__archive_get_f32(&ar, "config/temperature", 0, NULL, &w), LWFM_OK, NULL, NULL);
    CHECK(w && *w == 0.2f);
    EXPECT(lwfm__archive_get_f32(&ar, "config/temperature", 1, want, &w), LWFM_ERR_SHAPE,
           "expected shape (64,), got ()", NULL);
    EXPECT(lwfm__archive_get_f32(&ar, "conv.weight", 9, want, &w), LWFM_ERR_INVALID_ARGUMENT,
           NULL, NULL);
    EXPECT(lwfm__archive_get_f32(&ar, "conv.weight", 4, NULL, &w), LWFM_ERR_INVALID_ARGUMENT,
           NULL, NULL);
    EXPECT(lwfm__archive_get_f32(&ar, "conv.weight", 4, want, NULL), LWFM_ERR_INVALID_ARGUMENT,
           NULL, NULL);

    int64_t iv = -1;
    EXPECT(lwfm__archive_get_int(&ar, "config/format_version", &iv), LWFM_OK, NULL, NULL);
    CHECK(iv == 1);
    iv = -1;
    EXPECT(lwfm__archive_get_int(&ar, "config/learnable_matcher", &iv), LWFM_OK, NULL, NULL);
    CHECK(iv == 1);
    EXPECT(lwfm__archive_get_int(&ar, "config/temperature", &iv), LWFM_ERR_DTYPE,
           "'config/temperature'", "'<f4'");
    EXPECT(lwfm__archive_get_int(&ar, "config/hyperpixel_ids", &iv), LWFM_ERR_SHAPE,
           "'config/hyperpixel_ids'", "got shape (4,)");
    EXPECT(lwfm__archive_get_int(&ar, "config/top_k", &iv), LWFM_ERR_MISSING_KEY,
           "missing tensor 'config/top_k'", NULL);

    double dv = 0;
    EXPECT(lwfm__archive_get_float(&ar, "config/temperature", &dv), LWFM_OK, NULL, NULL);
    CHECK(dv == (double)0.2f);
    EXPECT(lwfm__archive_get_float(&ar, "config/format_version", &dv), LWFM_OK, NULL, NULL);
    CHECK(dv == 1.0);
    EXPECT(lwfm__archive_get_float(&ar, "conv.weight", &dv), LWFM_ERR_SHAPE, "'conv.weight'",
           "(64, 3, 3, 3)");
    EXPECT(lwfm__archive_get_float(&ar, "config/matcher_prob", &dv), LWFM_ERR_MISSING_KEY,
           "'config/matcher_prob'", NULL);

    char buf[16];
    EXPECT(lwfm__archive_get_string(&ar, "config/method", buf, sizeof buf), LWFM_OK, NULL, NULL);
    CHECK(strcmp(buf, "lwfm-spm") == 0);
    EXPECT(lwfm__archive_get_string(&ar, "config/method", buf, 9), LWFM_OK, NULL, NULL);
    EXPECT(lwfm__archive_get_string(&ar, "config/method", buf, 8), LWFM_ERR_LIMIT,
           "'config/method'", "longer than 7");
    EXPECT(lwfm__archive_get_string(&ar, "config/hyperpixel_ids", buf, sizeof buf),
           LWFM_ERR_DTYPE, "'config/hyperpixel_ids'", "uint8");
    EXPECT(lwfm__archive_get_string(&ar, "config/temperature", buf, sizeof buf), LWFM_ERR_DTYPE,
           "'config/temperature'", NULL);
    EXPECT(lwfm__archive_get_string(&ar, "config/bad_string", buf, sizeof buf), LWFM_ERR_FORMAT,
           "'config/bad_string'", "not printable ASCII");
    EXPECT(lwfm__archive_get_string(&ar, "config/backbone", buf, sizeof buf),
           LWFM_ERR_MISSING_KEY, "'config/backbone'", NULL);
    EXPECT(lwfm__archive_get_string(&ar, "config/method", buf, 0), LWFM_ERR_INVALID_ARGUMENT,
           NULL, NULL);

    int64_t vals[8];
    size_t n = 0;
    EXPECT(lwfm__archive_get_int_array(&ar, "config/hyperpixel_ids", vals, 8, &n), LWFM_OK, NULL,
           NULL);
    CHECK(n == 4 && vals[0] == 0 && vals[1] == 3 && vals[2] == 5 && vals[3] == 8);
    EXPECT(lwfm__archive_get_int_array(&ar, "config/hyperpixel_ids", vals, 3, &n), LWFM_ERR_LIMIT,
           "'config/hyperpixel_ids'", "4 values, at most 3");
    EXPECT(lwfm__archive_get_int_array(&ar, "config/format_version", vals, 8, &n), LWFM_OK, NULL,
           NULL);
    CHECK(n == 1 && vals[0] == 1);
    EXPECT(lwfm__archive_get_int_array(&ar, "ints2d", vals, 8, &n), LWFM_ERR_SHAPE, "'ints2d'",
           "(2, 2)");
    EXPECT(lwfm__archive_get_int_array(&ar, "config/temperature", vals, 8, &n), LWFM_ERR_DTYPE,
           "'config/temperature'", NULL);
    EXPECT(lwfm__archive_get_int_array(&ar, "config/hyperpixel_ids", vals, 8, NULL),
           LWFM_ERR_INVALID_ARGUMENT, NULL, NULL);

    lwfm__archive_free(&ar);
    bytes_free(&z);
    members_free(m, nm);
    free(conv);
}

/* ------------------------------------------------------------------------ */
/* Archives written by NumPy 1.24 (zip64 extra fields in the local headers),
 * produced by:
 *
 *   arrays = {
 *     'feature_extractor.initial_block.conv1.weight':
 *         (np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2) - 4) / 8,
 *     'feature_extractor.initial_block.bn1.num_batches_tracked': np.int64(100),
 *     'config/method': np.frombuffer(b'lwfm-spm', np.uint8),
 *     'config/hyperpixel_ids': np.array([4, 5, 6], np.int32),
 *     'h16': np.array([1, -2.5, 65504, 2.0**-24], np.float16),
 *     'be': np.array([1.5, -3], '>f8'),
 *   }
 *   np.savez(f, **arrays)             -> numpy_stored
 *   np.savez_compressed(f, **arrays)  -> numpy_deflated
 */
static const unsigned char numpy_stored[1774] = {
    0x50,0x4b,0x03,0x04,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,0x91,0x5c,0x49,0x3e,
    0xa0,0x00,0x00,0x00,0xa0,0x00,0x00,0x00,0x30,0x00,0x14,0x00,0x66,0x65,0x61,0x74,0x75,0x72,
    0x65,0x5f,0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,0x69,0x6e,0x69,0x74,0x69,0x61,
    0x6c,0x5f,0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x63,0x6f,0x6e,0x76,0x31,0x2e,0x77,0x65,0x69,0x67,
    0x68,0x74,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0xa0,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0xa0,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x93,0x4e,0x55,0x4d,0x50,0x59,0x01,0x00,0x76,0x00,
    0x7b,0x27,0x64,0x65,0x73,0x63,0x72,0x27,0x3a,0x20,0x27,0x3c,0x66,0x34,0x27,0x2c,0x20,0x27,
    0x66,0x6f,0x72,0x74,0x72,0x61,0x6e,0x5f,0x6f,0x72,0x64,0x65,0x72,0x27,0x3a,0x20,0x46,0x61,
    0x6c,0x73,0x65,0x2c,0x20,0x27,0x73,0x68,0x61,0x70,0x65,0x27,0x3a,0x20,0x28,0x32,0x2c,0x20,
    0x31,0x2c,0x20,0x32,0x2c,0x20,0x32,0x29,0x2c,0x20,0x7d,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x0a,0x00,0x00,0x00,0xbf,0x00,0x00,0xc0,0xbe,
    0x00,0x00,0x80,0xbe,0x00,0x00,0x00,0xbe,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x3e,0x00,0x00,
    0x80,0x3e,0x00,0x00,0xc0,0x3e,0x50,0x4b,0x03,0x04,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x21,0x00,0x7b,0x1f,0x94,0x32,0x88,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x3b,0x00,0x14,0x00,
    0x66,0x65,0x61,0x74,0x75,0x72,0x65,0x5f,0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,
    0x69,0x6e,0x69,0x74,0x69,0x61,0x6c,0x5f,0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x62,0x6e,0x31,0x2e,
    0x6e,0x75,0x6d,0x5f,0x62,0x61,0x74,0x63,0x68,0x65,0x73,0x5f,0x74,0x72,0x61,0x63,0x6b,0x65,
    0x64,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0x88,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x88,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x93,0x4e,0x55,0x4d,0x50,0x59,0x01,0x00,0x76,0x00,0x7b,
    0x27,0x64,0x65,0x73,0x63,0x72,0x27,0x3a,0x20,0x27,0x3c,0x69,0x38,0x27,0x2c,0x20,0x27,0x66,
    0x6f,0x72,0x74,0x72,0x61,0x6e,0x5f,0x6f,0x72,0x64,0x65,0x72,0x27,0x3a,0x20,0x46,0x61,0x6c,
    0x73,0x65,0x2c,0x20,0x27,0x73,0x68,0x61,0x70,0x65,0x27,0x3a,0x20,0x28,0x29,0x2c,0x20,0x7d,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x0a,0x64,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x50,
    0x4b,0x03,0x04,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,0x1d,0x4e,0xba,0x1b,0x88,
    0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x11,0x00,0x14,0x00,0x63,0x6f,0x6e,0x66,0x69,0x67,0x2f,
    0x6d,0x65,0x74,0x68,0x6f,0x64,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0x88,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x93,0x4e,0x55,0x4d,0x50,0x59,
    0x01,0x00,0x76,0x00,0x7b,0x27,0x64,0x65,0x73,0x63,0x72,0x27,0x3a,0x20,0x27,0x7c,0x75,0x31,
    0x27,0x2c,0x20,0x27,0x66,0x6f,0x72,0x74,0x72,0x61,0x6e,0x5f,0x6f,0x72,0x64,0x65,0x72,0x27,
    0x3a,0x20,0x46,0x61,0x6c,0x73,0x65,0x2c,0x20,0x27,0x73,0x68,0x61,0x70,0x65,0x27,0x3a,0x20,
    0x28,0x38,0x2c,0x29,0x2c,0x20,0x7d,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x0a,0x6c,0x77,0x66,0x6d,
    0x2d,0x73,0x70,0x6d,0x50,0x4b,0x03,0x04,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,
    0xd0,0x4e,0x93,0xa1,0x8c,0x00,0x00,0x00,0x8c,0x00,0x00,0x00,0x19,0x00,0x14,0x00,0x63,0x6f,
    0x6e,0x66,0x69,0x67,0x2f,0x68,0x79,0x70,0x65,0x72,0x70,0x69,0x78,0x65,0x6c,0x5f,0x69,0x64,
    0x73,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0x8c,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x8c,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x93,0x4e,0x55,0x4d,0x50,0x59,0x01,0x00,0x76,0x00,0x7b,
    0x27,0x64,0x65,0x73,0x63,0x72,0x27,0x3a,0x20,0x27,0x3c,0x69,0x34,0x27,0x2c,0x20,0x27,0x66,
    0x6f,0x72,0x74,0x72,0x61,0x6e,0x5f,0x6f,0x72,0x64,0x65,0x72,0x27,0x3a,0x20,0x46,0x61,0x6c,
    0x73,0x65,0x2c,0x20,0x27,0x73,0x68,0x61,0x70,0x65,0x27,0x3a,0x20,0x28,0x33,0x2c,0x29,0x2c,
    0x20,0x7d,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x0a,0x04,0x00,0x00,0x00,0x05,0x00,0x00,0x00,0x06,
    0x00,0x00,0x00,0x50,0x4b,0x03,0x04,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,0xe8,
    0x67,0xfd,0xef,0x88,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x07,0x00,0x14,0x00,0x68,0x31,0x36,
    0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0x88,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x88,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x93,0x4e,0x55,0x4d,0x50,0x59,0x01,0x00,0x76,0x00,0x7b,0x27,
    0x64,0x65,0x73,0x63,0x72,0x27,0x3a,0x20,0x27,0x3c,0x66,0x32,0x27,0x2c,0x20,0x27,0x66,0x6f,
    0x72,0x74,0x72,0x61,0x6e,0x5f,0x6f,0x72,0x64,0x65,0x72,0x27,0x3a,0x20,0x46,0x61,0x6c,0x73,
    0x65,0x2c,0x20,0x27,0x73,0x68,0x61,0x70,0x65,0x27,0x3a,0x20,0x28,0x34,0x2c,0x29,0x2c,0x20,
    0x7d,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x0a,0x00,0x3c,0x00,0xc1,0xff,0x7b,0x01,0x00,0x50,0x4b,
    0x03,0x04,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,0x30,0x4d,0x7a,0x2c,0x90,0x00,
    0x00,0x00,0x90,0x00,0x00,0x00,0x06,0x00,0x14,0x00,0x62,0x65,0x2e,0x6e,0x70,0x79,0x01,0x00,
    0x10,0x00,0x90,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x90,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x93,0x4e,0x55,0x4d,0x50,0x59,0x01,0x00,0x76,0x00,0x7b,0x27,0x64,0x65,0x73,0x63,0x72,0x27,
    0x3a,0x20,0x27,0x3e,0x66,0x38,0x27,0x2c,0x20,0x27,0x66,0x6f,0x72,0x74,0x72,0x61,0x6e,0x5f,
    0x6f,0x72,0x64,0x65,0x72,0x27,0x3a,0x20,0x46,0x61,0x6c,0x73,0x65,0x2c,0x20,0x27,0x73,0x68,
    0x61,0x70,0x65,0x27,0x3a,0x20,0x28,0x32,0x2c,0x29,0x2c,0x20,0x7d,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,0x20,
    0x20,0x0a,0x3f,0xf8,0x00,0x00,0x00,0x00,0x00,0x00,0xc0,0x08,0x00,0x00,0x00,0x00,0x00,0x00,
    0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,0x91,0x5c,
    0x49,0x3e,0xa0,0x00,0x00,0x00,0xa0,0x00,0x00,0x00,0x30,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x80,0x01,0x00,0x00,0x00,0x00,0x66,0x65,0x61,0x74,0x75,0x72,0x65,0x5f,
    0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,0x69,0x6e,0x69,0x74,0x69,0x61,0x6c,0x5f,
    0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x63,0x6f,0x6e,0x76,0x31,0x2e,0x77,0x65,0x69,0x67,0x68,0x74,
    0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x21,0x00,0x7b,0x1f,0x94,0x32,0x88,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x3b,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x02,0x01,0x00,0x00,0x66,0x65,0x61,0x74,
    0x75,0x72,0x65,0x5f,0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,0x69,0x6e,0x69,0x74,
    0x69,0x61,0x6c,0x5f,0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x62,0x6e,0x31,0x2e,0x6e,0x75,0x6d,0x5f,
    0x62,0x61,0x74,0x63,0x68,0x65,0x73,0x5f,0x74,0x72,0x61,0x63,0x6b,0x65,0x64,0x2e,0x6e,0x70,
    0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,0x1d,
    0x4e,0xba,0x1b,0x88,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x11,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x80,0x01,0xf7,0x01,0x00,0x00,0x63,0x6f,0x6e,0x66,0x69,0x67,0x2f,
    0x6d,0x65,0x74,0x68,0x6f,0x64,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x21,0x00,0xd0,0x4e,0x93,0xa1,0x8c,0x00,0x00,0x00,0x8c,0x00,
    0x00,0x00,0x19,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0xc2,0x02,
    0x00,0x00,0x63,0x6f,0x6e,0x66,0x69,0x67,0x2f,0x68,0x79,0x70,0x65,0x72,0x70,0x69,0x78,0x65,
    0x6c,0x5f,0x69,0x64,0x73,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x21,0x00,0xe8,0x67,0xfd,0xef,0x88,0x00,0x00,0x00,0x88,0x00,0x00,
    0x00,0x07,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x99,0x03,0x00,
    0x00,0x68,0x31,0x36,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x21,0x00,0x30,0x4d,0x7a,0x2c,0x90,0x00,0x00,0x00,0x90,0x00,0x00,0x00,
    0x06,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x5a,0x04,0x00,0x00,
    0x62,0x65,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x05,0x06,0x00,0x00,0x00,0x00,0x06,0x00,0x06,0x00,
    0xb6,0x01,0x00,0x00,0x22,0x05,0x00,0x00,0x00,0x00,
};
static const unsigned char numpy_deflated[1396] = {
    0x50,0x4b,0x03,0x04,0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,0x91,0x5c,0x49,0x3e,
    0x62,0x00,0x00,0x00,0xa0,0x00,0x00,0x00,0x30,0x00,0x14,0x00,0x66,0x65,0x61,0x74,0x75,0x72,
    0x65,0x5f,0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,0x69,0x6e,0x69,0x74,0x69,0x61,
    0x6c,0x5f,0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x63,0x6f,0x6e,0x76,0x31,0x2e,0x77,0x65,0x69,0x67,
    0x68,0x74,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0xa0,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x62,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x9b,0xec,0x17,0xea,0x1b,0x10,0xc9,0xc8,0x50,0xc6,
    0x50,0xad,0x9e,0x92,0x5a,0x9c,0x5c,0xa4,0x6e,0xa5,0xa0,0x6e,0x93,0x66,0xa2,0xae,0xa3,0xa0,
    0x9e,0x96,0x5f,0x54,0x52,0x94,0x98,0x17,0x9f,0x5f,0x94,0x92,0x0a,0x12,0x77,0x4b,0xcc,0x29,
    0x4e,0x05,0x8a,0x17,0x67,0x24,0x16,0xa4,0x02,0xf9,0x1a,0x46,0x3a,0x0a,0x86,0x3a,0x0a,0x40,
    0xd2,0x48,0x53,0x47,0xa1,0x56,0x81,0x0c,0xc0,0xc5,0xc0,0xc0,0xb0,0x9f,0x81,0xe1,0xc0,0x3e,
    0x06,0x86,0x06,0x20,0x66,0x00,0x61,0x10,0xb0,0x03,0xf2,0x81,0xf8,0x80,0x1d,0x00,0x50,0x4b,
    0x03,0x04,0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,0x7b,0x1f,0x94,0x32,0x46,0x00,
    0x00,0x00,0x88,0x00,0x00,0x00,0x3b,0x00,0x14,0x00,0x66,0x65,0x61,0x74,0x75,0x72,0x65,0x5f,
    0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,0x69,0x6e,0x69,0x74,0x69,0x61,0x6c,0x5f,
    0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x62,0x6e,0x31,0x2e,0x6e,0x75,0x6d,0x5f,0x62,0x61,0x74,0x63,
    0x68,0x65,0x73,0x5f,0x74,0x72,0x61,0x63,0x6b,0x65,0x64,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,
    0x00,0x88,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x46,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x9b,
    0xec,0x17,0xea,0x1b,0x10,0xc9,0xc8,0x50,0xc6,0x50,0xad,0x9e,0x92,0x5a,0x9c,0x5c,0xa4,0x6e,
    0xa5,0xa0,0x6e,0x93,0x69,0xa1,0xae,0xa3,0xa0,0x9e,0x96,0x5f,0x54,0x52,0x94,0x98,0x17,0x9f,
    0x5f,0x94,0x92,0x0a,0x12,0x77,0x4b,0xcc,0x29,0x4e,0x05,0x8a,0x17,0x67,0x24,0x16,0xa4,0x02,
    0xf9,0x1a,0x9a,0x3a,0x0a,0xb5,0x0a,0x14,0x01,0xae,0x14,0x06,0x08,0x00,0x00,0x50,0x4b,0x03,
    0x04,0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,0x1d,0x4e,0xba,0x1b,0x4c,0x00,0x00,
    0x00,0x88,0x00,0x00,0x00,0x11,0x00,0x14,0x00,0x63,0x6f,0x6e,0x66,0x69,0x67,0x2f,0x6d,0x65,
    0x74,0x68,0x6f,0x64,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0x88,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x4c,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x9b,0xec,0x17,0xea,0x1b,0x10,0xc9,0xc8,
    0x50,0xc6,0x50,0xad,0x9e,0x92,0x5a,0x9c,0x5c,0xa4,0x6e,0xa5,0xa0,0x5e,0x53,0x6a,0xa8,0xae,
    0xa3,0xa0,0x9e,0x96,0x5f,0x54,0x52,0x94,0x98,0x17,0x9f,0x5f,0x94,0x92,0x0a,0x12,0x77,0x4b,
    0xcc,0x29,0x4e,0x05,0x8a,0x17,0x67,0x24,0x16,0xa4,0x02,0xf9,0x1a,0x16,0x3a,0x9a,0x3a,0x0a,
    0xb5,0x0a,0x14,0x00,0xae,0x9c,0xf2,0xb4,0x5c,0xdd,0xe2,0x82,0x5c,0x00,0x50,0x4b,0x03,0x04,
    0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,0xd0,0x4e,0x93,0xa1,0x4d,0x00,0x00,0x00,
    0x8c,0x00,0x00,0x00,0x19,0x00,0x14,0x00,0x63,0x6f,0x6e,0x66,0x69,0x67,0x2f,0x68,0x79,0x70,
    0x65,0x72,0x70,0x69,0x78,0x65,0x6c,0x5f,0x69,0x64,0x73,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,
    0x00,0x8c,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x4d,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x9b,
    0xec,0x17,0xea,0x1b,0x10,0xc9,0xc8,0x50,0xc6,0x50,0xad,0x9e,0x92,0x5a,0x9c,0x5c,0xa4,0x6e,
    0xa5,0xa0,0x6e,0x93,0x69,0xa2,0xae,0xa3,0xa0,0x9e,0x96,0x5f,0x54,0x52,0x94,0x98,0x17,0x9f,
    0x5f,0x94,0x92,0x0a,0x12,0x77,0x4b,0xcc,0x29,0x4e,0x05,0x8a,0x17,0x67,0x24,0x16,0xa4,0x02,
    0xf9,0x1a,0xc6,0x3a,0x9a,0x3a,0x0a,0xb5,0x0a,0x14,0x00,0x2e,0x16,0x06,0x06,0x06,0x56,0x20,
    0x66,0x03,0x62,0x00,0x50,0x4b,0x03,0x04,0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,
    0xe8,0x67,0xfd,0xef,0x4c,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x07,0x00,0x14,0x00,0x68,0x31,
    0x36,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0x88,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x4c,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x9b,0xec,0x17,0xea,0x1b,0x10,0xc9,0xc8,0x50,0xc6,0x50,
    0xad,0x9e,0x92,0x5a,0x9c,0x5c,0xa4,0x6e,0xa5,0xa0,0x6e,0x93,0x66,0xa4,0xae,0xa3,0xa0,0x9e,
    0x96,0x5f,0x54,0x52,0x94,0x98,0x17,0x9f,0x5f,0x94,0x92,0x0a,0x12,0x77,0x4b,0xcc,0x29,0x4e,
    0x05,0x8a,0x17,0x67,0x24,0x16,0xa4,0x02,0xf9,0x1a,0x26,0x3a,0x9a,0x3a,0x0a,0xb5,0x0a,0x14,
    0x00,0x2e,0x06,0x1b,0x86,0x83,0xff,0xab,0x19,0x19,0x00,0x50,0x4b,0x03,0x04,0x14,0x00,0x00,
    0x00,0x08,0x00,0x00,0x00,0x21,0x00,0x30,0x4d,0x7a,0x2c,0x4d,0x00,0x00,0x00,0x90,0x00,0x00,
    0x00,0x06,0x00,0x14,0x00,0x62,0x65,0x2e,0x6e,0x70,0x79,0x01,0x00,0x10,0x00,0x90,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x4d,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x9b,0xec,0x17,0xea,0x1b,
    0x10,0xc9,0xc8,0x50,0xc6,0x50,0xad,0x9e,0x92,0x5a,0x9c,0x5c,0xa4,0x6e,0xa5,0xa0,0x6e,0x97,
    0x66,0xa1,0xae,0xa3,0xa0,0x9e,0x96,0x5f,0x54,0x52,0x94,0x98,0x17,0x9f,0x5f,0x94,0x92,0x0a,
    0x12,0x77,0x4b,0xcc,0x29,0x4e,0x05,0x8a,0x17,0x67,0x24,0x16,0xa4,0x02,0xf9,0x1a,0x46,0x3a,
    0x9a,0x3a,0x0a,0xb5,0x0a,0x14,0x00,0x2e,0xfb,0x1f,0x0c,0x60,0x70,0x80,0x03,0x42,0x03,0x00,
    0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,0x91,0x5c,
    0x49,0x3e,0x62,0x00,0x00,0x00,0xa0,0x00,0x00,0x00,0x30,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x80,0x01,0x00,0x00,0x00,0x00,0x66,0x65,0x61,0x74,0x75,0x72,0x65,0x5f,
    0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,0x69,0x6e,0x69,0x74,0x69,0x61,0x6c,0x5f,
    0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x63,0x6f,0x6e,0x76,0x31,0x2e,0x77,0x65,0x69,0x67,0x68,0x74,
    0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,
    0x21,0x00,0x7b,0x1f,0x94,0x32,0x46,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x3b,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0xc4,0x00,0x00,0x00,0x66,0x65,0x61,0x74,
    0x75,0x72,0x65,0x5f,0x65,0x78,0x74,0x72,0x61,0x63,0x74,0x6f,0x72,0x2e,0x69,0x6e,0x69,0x74,
    0x69,0x61,0x6c,0x5f,0x62,0x6c,0x6f,0x63,0x6b,0x2e,0x62,0x6e,0x31,0x2e,0x6e,0x75,0x6d,0x5f,
    0x62,0x61,0x74,0x63,0x68,0x65,0x73,0x5f,0x74,0x72,0x61,0x63,0x6b,0x65,0x64,0x2e,0x6e,0x70,
    0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,0x1d,
    0x4e,0xba,0x1b,0x4c,0x00,0x00,0x00,0x88,0x00,0x00,0x00,0x11,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x77,0x01,0x00,0x00,0x63,0x6f,0x6e,0x66,0x69,0x67,0x2f,
    0x6d,0x65,0x74,0x68,0x6f,0x64,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,
    0x00,0x00,0x08,0x00,0x00,0x00,0x21,0x00,0xd0,0x4e,0x93,0xa1,0x4d,0x00,0x00,0x00,0x8c,0x00,
    0x00,0x00,0x19,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x06,0x02,
    0x00,0x00,0x63,0x6f,0x6e,0x66,0x69,0x67,0x2f,0x68,0x79,0x70,0x65,0x72,0x70,0x69,0x78,0x65,
    0x6c,0x5f,0x69,0x64,0x73,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,
    0x00,0x08,0x00,0x00,0x00,0x21,0x00,0xe8,0x67,0xfd,0xef,0x4c,0x00,0x00,0x00,0x88,0x00,0x00,
    0x00,0x07,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x9e,0x02,0x00,
    0x00,0x68,0x31,0x36,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x01,0x02,0x14,0x03,0x14,0x00,0x00,0x00,
    0x08,0x00,0x00,0x00,0x21,0x00,0x30,0x4d,0x7a,0x2c,0x4d,0x00,0x00,0x00,0x90,0x00,0x00,0x00,
    0x06,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x23,0x03,0x00,0x00,
    0x62,0x65,0x2e,0x6e,0x70,0x79,0x50,0x4b,0x05,0x06,0x00,0x00,0x00,0x00,0x06,0x00,0x06,0x00,
    0xb6,0x01,0x00,0x00,0xa8,0x03,0x00,0x00,0x00,0x00,
};

static void test_numpy_written(void) {
    const struct {
        const unsigned char *p;
        size_t n;
    } fx[] = {{numpy_stored, sizeof numpy_stored}, {numpy_deflated, sizeof numpy_deflated}};
    for (int k = 0; k < 2; k++) {
        lwfm__archive ar;
        EXPECT(lwfm__npz_read_memory(&ar, fx[k].p, fx[k].n, NULL), LWFM_OK, NULL, NULL);
        CHECK(ar.count == 5);
        const float *w = NULL;
        int64_t shape[4] = {2, 1, 2, 2};
        EXPECT(lwfm__archive_get_f32(&ar, "feature_extractor.initial_block.conv1.weight", 4, shape,
                                     &w),
               LWFM_OK, NULL, NULL);
        for (int i = 0; w && i < 8; i++) CHECK(w[i] == (float)(i - 4) / 8);
        CHECK(!lwfm__archive_find(&ar, "feature_extractor.initial_block.bn1.num_batches_tracked"));
        char buf[16];
        EXPECT(lwfm__archive_get_string(&ar, "config/method", buf, sizeof buf), LWFM_OK, NULL,
               NULL);
        CHECK(strcmp(buf, "lwfm-spm") == 0);
        int64_t ids[4];
        size_t n = 0;
        EXPECT(lwfm__archive_get_int_array(&ar, "config/hyperpixel_ids", ids, 4, &n), LWFM_OK,
               NULL, NULL);
        CHECK(n == 3 && ids[0] == 4 && ids[1] == 5 && ids[2] == 6);
        const lwfm__tensor *t = lwfm__archive_find(&ar, "h16");
        CHECK(t && strcmp(t->descr, "<f2") == 0 && t->numel == 4);
        if (t && t->f32)
            CHECK(t->f32[0] == 1.0f && t->f32[1] == -2.5f && t->f32[2] == 65504.0f &&
                  t->f32[3] == 0x1p-24f);
        t = lwfm__archive_find(&ar, "be");
        CHECK(t && strcmp(t->descr, ">f8") == 0 && t->numel == 2);
        if (t && t->f32) CHECK(t->f32[0] == 1.5f && t->f32[1] == -3.0f);
        lwfm__archive_free(&ar);
    }
}

int main(void) {
    test_dtypes();
    test_half_exhaustive();
    test_header_variants();
    test_npy_hostile();
    test_values_hostile();
    test_zip_hostile();
    test_limits();
    test_truncation_and_flips();
    test_files();
    test_accessors();
    test_numpy_written();
    printf("test_npz: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
