/* Resource limits (lwfm.h, "Resource limits"; docs/api.md) through the
 * public API, each at the limit's edge where that is cheap:
 *
 *   test_limits LWFM_TINY.npz DN4.npz
 *
 *  - weight files: more than LWFM_LIMIT_NPZ_MEMBERS members; a member over
 *    lwfm_load_options_set_max_total_bytes() (a zip bomb, refused from the
 *    directory before inflating); a total over it; shapes over
 *    LWFM_LIMIT_NPY_ELEMENTS and LWFM_LIMIT_NPY_NDIM;
 *  - episodes: way, shot, images per call, image side and feature positions
 *    over their limits, each refused with LWFM_ERR_LIMIT, a message naming
 *    the limit and the value, the output untouched; the counts over the limit
 *    come with 16-element buffers, so that a read of them is a heap overflow
 *    under AddressSanitizer;
 *  - out of memory (not under sanitizers): with the address space capped
 *    (RLIMIT_AS) 24 MiB above what the process uses, scoring 20000 queries
 *    and loading a weight file with a 64 MiB member fail with
 *    LWFM_ERR_OUT_OF_MEMORY (output untouched) and the library works again
 *    once memory is back. */
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zip.h>

#include "lwfm/lwfm.h"

#include "expect.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                       \
    __has_feature(memory_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

/* A failed call: the status, and a message holding both needles. */
#define EXPECT_FAIL(call, want, n1, n2)                                                           \
    do {                                                                                           \
        lwfm_status st_ = (call);                                                                  \
        const char *m_ = lwfm_last_error();                                                        \
        checks++;                                                                                  \
        if (st_ != (want) || !strstr(m_, (n1)) || !strstr(m_, (n2))) {                             \
            fprintf(stderr, "%s:%d: %s\n  -> status %d (%s), message \"%s\"; expected %d with "    \
                            "\"%s\" and \"%s\"\n",                                                 \
                    __FILE__, __LINE__, #call, (int)st_, lwfm_status_string(st_), m_, (int)(want), \
                    (n1), (n2));                                                                   \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

static void die(const char *what) {
    fprintf(stderr, "test_limits: %s\n", what);
    exit(1);
}

/* ---- archives in memory ------------------------------------------------ */

typedef struct bytes {
    uint8_t *p;
    size_t n;
} bytes;

/* A .npy member: header dict text + raw data bytes. */
static bytes npy(const char *dict, const void *data, size_t n) {
    size_t dl = strlen(dict), pad = (64 - (10 + dl + 1) % 64) % 64, hl = dl + pad + 1;
    bytes b = {malloc(10 + hl + n), 10 + hl + n};
    if (!b.p) die("out of memory");
    memcpy(b.p, "\x93NUMPY\x01\x00", 8);
    b.p[8] = (uint8_t)(hl & 0xff);
    b.p[9] = (uint8_t)(hl >> 8);
    memcpy(b.p + 10, dict, dl);
    memset(b.p + 10 + dl, ' ', pad);
    b.p[10 + dl + pad] = '\n';
    if (n) memcpy(b.p + 10 + hl, data, n);
    return b;
}

/* A zip of `count` members named by fmt % i, all deflated copies of m. */
static bytes zip_of(const bytes *m, int count, const char *fmt) {
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &err);
    zip_t *za = src ? zip_open_from_source(src, ZIP_TRUNCATE, &err) : NULL;
    if (!za) die("zip_open_from_source");
    zip_source_keep(src);
    for (int i = 0; i < count; i++) {
        char name[64];
        snprintf(name, sizeof name, fmt, i);
        zip_source_t *s = zip_source_buffer(za, m->p, m->n, 0);
        zip_int64_t idx = s ? zip_file_add(za, name, s, 0) : -1;
        if (idx < 0 || zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_DEFLATE, 1) != 0)
            die(zip_strerror(za));
    }
    if (zip_close(za) != 0) die("zip_close");
    if (zip_source_open(src) != 0 || zip_source_seek(src, 0, SEEK_END) != 0) die("reopen");
    zip_int64_t n = zip_source_tell(src);
    bytes b = {malloc((size_t)n), (size_t)n};
    if (!b.p || zip_source_seek(src, 0, SEEK_SET) != 0 ||
        zip_source_read(src, b.p, (zip_uint64_t)n) != n)
        die("read back");
    zip_source_close(src);
    zip_source_free(src);
    zip_error_fini(&err);
    return b;
}

static void test_weight_files(void) {
    lwfm_model *const canary = (lwfm_model *)&fails;
    lwfm_model *m = canary;
    float one = 1.0f;
    bytes scalar = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &one, 4);

    /* members: LWFM_LIMIT_NPZ_MEMBERS + 1 */
    bytes z = zip_of(&scalar, LWFM_LIMIT_NPZ_MEMBERS + 1, "m%d.npy");
    EXPECT_FAIL(lwfm_model_load_from_memory(&m, z.p, z.n, NULL), LWFM_ERR_LIMIT, "4097 members",
                "LWFM_LIMIT_NPZ_MEMBERS");
    EXPECT(m == canary);
    free(z.p);

    /* a zip bomb: 64 MiB of zeros in ~64 KiB, over a 16 MiB load limit */
    const size_t big = (size_t)64 << 20;
    char *zeros = calloc(1, big);
    if (!zeros) die("out of memory");
    char dict[128];
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu,), }",
             big / 4);
    bytes bomb = npy(dict, zeros, big);
    free(zeros);
    z = zip_of(&bomb, 1, "bomb%d.npy");
    free(bomb.p);
    EXPECT(z.n < ((size_t)1 << 20));
    lwfm_load_options *o = NULL;
    EXPECT(lwfm_load_options_create(&o) == LWFM_OK);
    EXPECT(lwfm_load_options_set_max_total_bytes(o, (uint64_t)16 << 20) == LWFM_OK);
    EXPECT_FAIL(lwfm_model_load_from_memory(&m, z.p, z.n, o), LWFM_ERR_LIMIT,
                "decompressed size of 67108992 bytes", "max_member_bytes = 16777216");
    EXPECT(m == canary);
    free(z.p);

    /* total: 40 members of 1 MiB each under a 16 MiB limit */
    zeros = calloc(1, (size_t)1 << 20);
    bytes mib = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1048576,), }", zeros,
                    (size_t)1 << 20);
    free(zeros);
    z = zip_of(&mib, 40, "w%02d.npy");
    free(mib.p);
    EXPECT_FAIL(lwfm_model_load_from_memory(&m, z.p, z.n, o), LWFM_ERR_LIMIT,
                "total decompressed size", "max_total_bytes = 16777216");
    EXPECT(m == canary);
    free(z.p);
    lwfm_load_options_destroy(o);

    /* shapes: elements and dimensions */
    bytes huge = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536), }", NULL,
                     0);
    z = zip_of(&huge, 1, "h%d.npy");
    EXPECT_FAIL(lwfm_model_load_from_memory(&m, z.p, z.n, NULL), LWFM_ERR_LIMIT, "(65536, 65536)",
                "max_elements = 268435456");
    free(z.p);
    free(huge.p);
    bytes nine = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
                     &one, 4);
    z = zip_of(&nine, 1, "d%d.npy");
    EXPECT_FAIL(lwfm_model_load_from_memory(&m, z.p, z.n, NULL), LWFM_ERR_LIMIT,
                "more than 8 dimensions", "LWFM_LIMIT_NPY_NDIM");
    EXPECT(m == canary);
    free(z.p);
    free(nine.p);
    free(scalar.p);
}

/* ---- episodes ------------------------------------------------------------ */

#define OUT_CAP 64
static float out_buf[OUT_CAP];
static void arm(void) { memset(out_buf, 0xA5, sizeof out_buf); }
static int untouched(void) {
    const unsigned char *b = (const unsigned char *)out_buf;
    for (size_t i = 0; i < sizeof out_buf; i++)
        if (b[i] != 0xA5) return 0;
    return 1;
}

static float *filled(size_t n) {
    float *p = malloc(n * sizeof(float));
    if (!p) die("out of memory");
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    return p;
}

static void test_episodes(lwfm_model *tiny, lwfm_model *dn4) {
    int64_t c, h, w, C, fh, fw;
    EXPECT(lwfm_model_input_shape(tiny, &c, &h, &w) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(tiny, h, w, &C, &fh, &fw) == LWFM_OK);
    const size_t img = (size_t)(c * h * w), feat = (size_t)(C * fh * fw);
    float *small = filled(16); /* the buffer of every count over a limit */
    int32_t small_labels[16] = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
    float *s2 = filled(2 * img), *f2 = filled(2 * feat);
    const int32_t l2[2] = {0, 1};

    /* way */
    arm();
    EXPECT_FAIL(lwfm_episode_score_features(tiny, f2, 2, l2, f2, 1, C, fh, fw,
                                            LWFM_LIMIT_WAY + 1, out_buf, (size_t)-1),
                LWFM_ERR_LIMIT, "way = 16385", "LWFM_LIMIT_WAY = 16384");
    EXPECT(untouched());
    lwfm_support *sp = NULL;
    EXPECT_FAIL(lwfm_support_prepare(&sp, tiny, s2, 2, l2, c, h, w, (int64_t)1 << 40),
                LWFM_ERR_LIMIT, "way = 1099511627776", "LWFM_LIMIT_WAY");
    EXPECT(sp == NULL);

    /* images per call: support, query, forward batch (16-element buffers) */
    arm();
    EXPECT_FAIL(lwfm_episode_score(tiny, small, LWFM_LIMIT_IMAGES + 1, small_labels, s2, 1, c, h,
                                   w, 2, out_buf, OUT_CAP),
                LWFM_ERR_LIMIT, "65537 images", "LWFM_LIMIT_IMAGES = 65536");
    EXPECT_FAIL(lwfm_episode_score(tiny, s2, 2, l2, small, LWFM_LIMIT_IMAGES + 1, c, h, w, 2,
                                   out_buf, (size_t)-1),
                LWFM_ERR_LIMIT, "query images: 65537 images", "LWFM_LIMIT_IMAGES");
    EXPECT_FAIL(lwfm_episode_score_features(tiny, small, INT64_MAX, small_labels, f2, 1, C, fh, fw,
                                            2, out_buf, OUT_CAP),
                LWFM_ERR_LIMIT, "9223372036854775807 feature maps", "LWFM_LIMIT_IMAGES");
    EXPECT_FAIL(lwfm_model_features(tiny, small, LWFM_LIMIT_IMAGES + 1, c, h, w, out_buf, (size_t)-1),
                LWFM_ERR_LIMIT, "65537 images", "LWFM_LIMIT_IMAGES");
    EXPECT(untouched());

    /* image side */
    EXPECT_FAIL(lwfm_episode_score(tiny, small, 2, l2, small, 1, c, LWFM_LIMIT_IMAGE_SIDE + 1, w,
                                   2, out_buf, OUT_CAP),
                LWFM_ERR_LIMIT, "16385 x 32 pixels", "LWFM_LIMIT_IMAGE_SIDE = 16384");
    EXPECT_FAIL(lwfm_model_features(tiny, small, 1, c, 8, (int64_t)1 << 50, out_buf, OUT_CAP),
                LWFM_ERR_LIMIT, "1125899906842624 pixels", "LWFM_LIMIT_IMAGE_SIDE");
    EXPECT(untouched());

    /* shot: LWFM_LIMIT_SHOT + 1 supports of class 0 (feature maps) */
    {
        const int64_t n = LWFM_LIMIT_SHOT + 2;
        float *f = filled((size_t)n * feat);
        int32_t *l = calloc((size_t)n, sizeof *l);
        l[n - 1] = 1;
        arm();
        EXPECT_FAIL(lwfm_episode_score_features(tiny, f, n, l, f2, 1, C, fh, fw, 2, out_buf,
                                                OUT_CAP),
                    LWFM_ERR_LIMIT, "class 0 has 4097 support images", "LWFM_LIMIT_SHOT = 4096");
        EXPECT(untouched());
        /* at the limit it is fine */
        l[0] = 1;
        EXPECT(lwfm_episode_score_features(tiny, f, n, l, f2, 1, C, fh, fw, 2, out_buf, OUT_CAP) ==
               LWFM_OK);
        free(f);
        free(l);
    }

    /* positions: DN4 takes feature maps of any size (native taps) */
    int64_t dc, dh, dw, DC, dfh, dfw;
    EXPECT(lwfm_model_input_shape(dn4, &dc, &dh, &dw) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(dn4, dh, dw, &DC, &dfh, &dfw) == LWFM_OK);
    arm();
    EXPECT_FAIL(lwfm_episode_score_features(dn4, small, 2, l2, small, 1, DC, 65, 64, 2, out_buf,
                                            OUT_CAP),
                LWFM_ERR_LIMIT, "65 x 64 positions", "LWFM_LIMIT_POSITIONS = 4096");
    EXPECT_FAIL(lwfm_episode_score_features(dn4, small, 2, l2, small, 1, DC, 1, 5000, 2, out_buf,
                                            OUT_CAP),
                LWFM_ERR_LIMIT, "1 x 5000 positions", "LWFM_LIMIT_POSITIONS");
    {
        /* images whose feature map is over the limit: 264 x 264 -> 66 x 66 */
        const int64_t side = 264;
        int64_t xc, xh, xw;
        EXPECT(lwfm_model_feature_shape(dn4, side, side, &xc, &xh, &xw) == LWFM_OK);
        EXPECT(xh * xw > LWFM_LIMIT_POSITIONS);
        float *big = filled((size_t)(2 * dc * side * side));
        EXPECT_FAIL(lwfm_episode_score(dn4, big, 2, l2, big, 1, dc, side, side, 2, out_buf,
                                       OUT_CAP),
                    LWFM_ERR_LIMIT, "positions exceed", "LWFM_LIMIT_POSITIONS");
        EXPECT_FAIL(lwfm_support_prepare(&sp, dn4, big, 2, l2, dc, side, side, 2), LWFM_ERR_LIMIT,
                    "support images: feature maps of", "LWFM_LIMIT_POSITIONS");
        EXPECT(sp == NULL);
        free(big);
    }
    EXPECT(untouched());
    free(small);
    free(s2);
    free(f2);
}

/* ---- bad inputs of docs/bad-input.md that no other test covers ------------ */

static void test_other_bad_inputs(lwfm_model *tiny, lwfm_model *dn4) {
    int64_t c, h, w, C, fh, fw;
    EXPECT(lwfm_model_input_shape(tiny, &c, &h, &w) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(tiny, h, w, &C, &fh, &fw) == LWFM_OK);
    float *img = filled((size_t)(3 * c * h * w));
    const int32_t l2[2] = {0, 1};
    lwfm_support *sp = NULL;

    /* an image too small for the backbone's layers */
    arm();
    EXPECT_FAIL(lwfm_episode_score(tiny, img, 2, l2, img, 1, c, 2, 2, 2, out_buf, OUT_CAP),
                LWFM_ERR_SHAPE, "2 x 2 pixels", "too small for this backbone");
    EXPECT(untouched());

    /* the wrong method for a call: RCN's per-pair view on an LWFM-SPM model,
     * LWE and SPM views on DN4 (also in test_episode_errors) */
    lwfm_rcn *rcn = (lwfm_rcn *)&fails;
    EXPECT_FAIL(lwfm_rcn_create(&rcn, tiny), LWFM_ERR_WRONG_KIND, "rcn", "lwfm-spm");
    EXPECT(rcn == (lwfm_rcn *)&fails);
    lwfm_lwe *lwe = NULL;
    EXPECT_FAIL(lwfm_lwe_create(&lwe, dn4), LWFM_ERR_WRONG_KIND, "lwfm-spm", "dn4");
    EXPECT(lwe == NULL);

    /* DN4 with fewer local descriptors in a class than its neighbor_k (3):
     * 1 x 1 feature maps, one support image per class */
    int64_t dc, dh, dw, DC, dfh, dfw;
    EXPECT(lwfm_model_input_shape(dn4, &dc, &dh, &dw) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(dn4, dh, dw, &DC, &dfh, &dfw) == LWFM_OK);
    float *f = filled((size_t)(3 * DC));
    arm();
    EXPECT_FAIL(lwfm_episode_score_features(dn4, f, 2, l2, f + 2 * DC, 1, DC, 1, 1, 2, out_buf,
                                            OUT_CAP),
                LWFM_ERR_INVALID_ARGUMENT, "neighbor_k = 3", "local descriptors");
    EXPECT_FAIL(lwfm_support_prepare_features(&sp, dn4, f, 2, l2, DC, 1, 1, 2),
                LWFM_ERR_INVALID_ARGUMENT, "neighbor_k = 3", "smallest class");
    EXPECT(sp == NULL && untouched());

    /* finite values of extreme magnitude: they overflow inside the backbone
     * or the metric, and the call refuses instead of returning NaN logits */
    float *big = filled((size_t)(3 * c * h * w));
    for (int64_t i = 0; i < c * h * w; i++) big[i] = i % 2 ? 3e38f : -3e38f;
    arm();
    EXPECT_FAIL(lwfm_episode_score(tiny, big, 2, l2, big + 2 * c * h * w, 1, c, h, w, 2, out_buf,
                                   OUT_CAP),
                LWFM_ERR_NONFINITE, "support images", "overflowed to NaN or infinity");
    EXPECT(untouched());
    float *tf = filled((size_t)(3 * C * fh * fw));
    for (int64_t i = 0; i < C * fh * fw; i++) tf[2 * C * fh * fw + i] = (i % 2 ? 3e38f : -3e38f);
    arm();
    EXPECT_FAIL(lwfm_episode_score_features(tiny, tf, 2, l2, tf + 2 * C * fh * fw, 1, C, fh, fw,
                                            2, out_buf, OUT_CAP),
                LWFM_ERR_NONFINITE, "overflowed to NaN or infinity", "");
    EXPECT(untouched());
    /* the per-pair views refuse the same way and write nothing */
    lwfm_spm *spm = NULL;
    EXPECT(lwfm_lwe_create(&lwe, tiny) == LWFM_OK && lwfm_spm_create(&spm, tiny) == LWFM_OK);
    float *extreme = tf + 2 * C * fh * fw; /* all +3e38: the attention overflows too */
    for (int64_t i = 0; i < C * fh * fw; i++) extreme[i] = 3e38f;
    float g = 7.0f;
    arm();
    EXPECT_FAIL(lwfm_lwe_pair(lwe, tf, extreme, C, fh, fw, out_buf, out_buf + OUT_CAP / 2,
                              OUT_CAP / 2, &g),
                LWFM_ERR_NONFINITE, "LWE pair", "overflowed to NaN or infinity");
    EXPECT(untouched() && g == 7.0f);
    int64_t assign[OUT_CAP];
    for (int i = 0; i < OUT_CAP; i++) assign[i] = -7;
    float score = 7.0f;
    arm();
    EXPECT_FAIL(lwfm_spm_pair(spm, tf, extreme, C, fh, fw, assign, out_buf, out_buf + OUT_CAP / 2,
                              OUT_CAP / 2, &score),
                LWFM_ERR_NONFINITE, "SPM pair", "overflowed to NaN or infinity");
    EXPECT(untouched() && score == 7.0f && assign[0] == -7 && assign[OUT_CAP - 1] == -7);
    /* and still answer for ordinary features */
    EXPECT(lwfm_lwe_pair(lwe, tf, tf + C * fh * fw, C, fh, fw, out_buf, out_buf + OUT_CAP / 2,
                         OUT_CAP / 2, &g) == LWFM_OK && isfinite(g) && g != 7.0f);
    lwfm_spm_destroy(spm);
    lwfm_lwe_destroy(lwe);
    free(tf);
    free(big);
    free(f);
    free(img);
}

/* ---- out of memory -------------------------------------------------------- */

#ifndef UNDER_SANITIZER
static size_t vm_size(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1) die("/proc/self/statm");
    fclose(f);
    return (size_t)pages * 4096;
}

static bytes read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    bytes b = {malloc((size_t)n), (size_t)n};
    if (!b.p || fread(b.p, 1, b.n, f) != b.n) die(path);
    fclose(f);
    return b;
}

#endif

static void test_out_of_memory(lwfm_model *tiny, const char *tiny_path) {
#ifdef UNDER_SANITIZER
    (void)tiny;
    (void)tiny_path;
    printf("out-of-memory checks skipped: address space limits and sanitizers do not mix\n");
#else
    int64_t c, h, w, C, fh, fw;
    lwfm_model_input_shape(tiny, &c, &h, &w);
    lwfm_model_feature_shape(tiny, h, w, &C, &fh, &fw);
    const size_t feat = (size_t)(C * fh * fw);
    const int64_t nq = 20000; /* ~92 MB of query features; scoring needs several times that */
    float *q = filled((size_t)nq * feat), *f2 = filled(2 * feat);
    const int32_t l2[2] = {0, 1};
    float *logits = malloc((size_t)nq * 2 * sizeof(float));
    bytes file = read_file(tiny_path);
    /* warm up: OpenMP threads and oneDNN state exist before the cap */
    EXPECT(lwfm_episode_score_features(tiny, f2, 2, l2, f2, 1, C, fh, fw, 2, logits, 2) ==
           LWFM_OK);
    lwfm_model *m2 = NULL;
    EXPECT(lwfm_model_load_from_memory(&m2, file.p, file.n, NULL) == LWFM_OK);
    lwfm_model_destroy(m2);
    m2 = NULL;
    const size_t big = (size_t)64 << 20;
    char *zeros = calloc(1, big), dict[128];
    if (!zeros) die("out of memory");
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu,), }",
             big / 4);
    bytes member = npy(dict, zeros, big);
    free(zeros);
    bytes bomb = zip_of(&member, 1, "w%d.npy");
    free(member.p);

    struct rlimit old, cap;
    if (getrlimit(RLIMIT_AS, &old) != 0) die("getrlimit");
    cap = old;
    cap.rlim_cur = vm_size() + ((size_t)24 << 20);
    if (setrlimit(RLIMIT_AS, &cap) != 0) die("setrlimit");

    memset(logits, 0xA5, 4 * sizeof(float));
    lwfm_status st1 = lwfm_episode_score_features(tiny, f2, 2, l2, q, nq, C, fh, fw, 2, logits,
                                                  (size_t)nq * 2);
    char msg1[256];
    snprintf(msg1, sizeof msg1, "%s", lwfm_last_error());
    const unsigned char *lb = (const unsigned char *)logits;
    int logits_untouched = 1;
    for (size_t i = 0; i < 4 * sizeof(float); i++) logits_untouched &= lb[i] == 0xA5;
    /* a weight file with a 64 MiB member (within the default limits) */
    lwfm_status st2 = lwfm_model_load_from_memory(&m2, bomb.p, bomb.n, NULL);
    char msg2[256];
    snprintf(msg2, sizeof msg2, "%s", lwfm_last_error());
    if (setrlimit(RLIMIT_AS, &old) != 0) die("setrlimit restore");

    printf("capped address space: scoring %lld queries -> %d (%s); loading -> %d (%s)\n",
           (long long)nq, (int)st1, msg1, (int)st2, msg2);
    EXPECT(st1 == LWFM_ERR_OUT_OF_MEMORY);
    EXPECT(strstr(msg1, "out of memory") != NULL);
    EXPECT(logits_untouched);
    EXPECT(st2 == LWFM_ERR_OUT_OF_MEMORY);
    EXPECT(m2 == NULL);
    /* and everything works again */
    EXPECT(lwfm_episode_score_features(tiny, f2, 2, l2, q, 100, C, fh, fw, 2, logits, 200) ==
           LWFM_OK);
    EXPECT(lwfm_model_load_from_memory(&m2, file.p, file.n, NULL) == LWFM_OK);
    lwfm_model_destroy(m2);
    free(bomb.p);
    free(file.p);
    free(q);
    free(f2);
    free(logits);
#endif
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LWFM_TINY.npz DN4.npz\n", argv[0]);
        return 2;
    }
    lwfm_model *tiny = NULL, *dn4 = NULL;
    if (lwfm_model_load(&tiny, argv[1], NULL) || lwfm_model_load(&dn4, argv[2], NULL)) {
        fprintf(stderr, "cannot load the test models: %s\n", lwfm_last_error());
        return 1;
    }
    test_weight_files();
    test_episodes(tiny, dn4);
    test_other_bad_inputs(tiny, dn4);
    test_out_of_memory(tiny, argv[1]);
    lwfm_model_destroy(tiny);
    lwfm_model_destroy(dn4);
    printf("%d checks, %d failed\n", checks, fails);
    return fails != 0;
}
