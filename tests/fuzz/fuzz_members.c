/* Fuzz target: the weight-file reader past the zip layer.
 *
 * fuzz_weights.c mutates whole archives, where almost every change breaks a
 * CRC or the deflate stream, so the .npy headers, the configuration values
 * and the model build behind them are reached only by the seeds. Here the
 * input is a list of members that the target packs into a valid zip itself
 * (libzip, fresh CRCs), so every mutation of a name, an .npy header or a
 * configuration value reaches lwfm_model_load_from_memory()'s later stages.
 *
 * Input: records until the data ends or a name length of 0:
 *   u8 flags        bit 0: deflate (else stored); bit 1: drop the ".npy" suffix;
 *                   bit 2: data one byte short; bit 3: one byte too many;
 *                   bit 4: .npy format 2.0
 *   u8 name_len, name
 *   u8 header_len, header (the .npy dict text, e.g. "{'descr': '<f4', ...}")
 *   u8 pattern_len, pattern (tiled to the size the header's shape and descr
 *                   ask for, when the target can read them and it is at most
 *                   8 MiB; else written once)
 * Invariants as fuzz_weights.c: a known status with a message, *out
 * untouched on failure; a model that loads is used the same way. */
#include <zip.h>

#include "fuzz_weights_use.h"

/* Bytes the header's shape and descr call for, or 0 when unreadable. */
static size_t wanted_bytes(const char *h) {
    const char *d = strstr(h, "descr");
    const char *s = strstr(h, "shape");
    if (!d || !s) return 0;
    d = strchr(d + 5, ':'); /* the value's quote, not the key's */
    if (d) d = strpbrk(d, "'\"");
    if (!d || !d[1] || !d[2] || !d[3]) return 0;
    int item = d[3] - '0';
    if (item < 1 || item > 8) return 0;
    s = strchr(s, '(');
    if (!s) return 0;
    uint64_t n = 1;
    for (s++; *s && *s != ')'; s++) {
        if (*s < '0' || *s > '9') continue;
        uint64_t v = 0;
        while (*s >= '0' && *s <= '9' && v < ((uint64_t)1 << 32)) v = v * 10 + (uint64_t)(*s++ - '0');
        n *= v;
        if (n > ((uint64_t)8 << 20)) return 0;
        s--;
    }
    n *= (uint64_t)item;
    return n > ((uint64_t)8 << 20) ? 0 : (size_t)n;
}

typedef struct member {
    char name[300];
    uint8_t *data;
    size_t size;
    int deflate;
} member;

#define MAX_MEMBERS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_opts) LLVMFuzzerInitialize(NULL, NULL);
    fuzz_reader rd = {data, size}, *r = &rd;
    static member m[MAX_MEMBERS];
    int n = 0;
    while (r->n && n < MAX_MEMBERS) {
        const uint8_t flags = fuzz_u8(r), nl = fuzz_u8(r);
        if (nl == 0) break;
        member *e = &m[n];
        size_t k = 0;
        for (int i = 0; i < nl; i++) {
            char c = (char)fuzz_u8(r);
            e->name[k++] = c ? c : '_';
        }
        if (!(flags & 2)) memcpy(e->name + k, ".npy", 4), k += 4;
        e->name[k] = '\0';
        char header[256];
        const uint8_t hl = fuzz_u8(r);
        for (int i = 0; i < hl; i++) header[i] = (char)fuzz_u8(r);
        header[hl] = '\0';
        uint8_t pattern[256];
        const uint8_t pl = fuzz_u8(r);
        for (int i = 0; i < pl; i++) pattern[i] = fuzz_u8(r);
        size_t want = wanted_bytes(header);
        if (!want || !pl) want = pl;
        if (flags & 4 && want) want--;
        if (flags & 8) want++;
        /* .npy: magic, version, header length, header padded to 64, data */
        const int v2 = flags & 16;
        const size_t pre = v2 ? 12 : 10;
        size_t hlen = hl + 1, pad = (64 - (pre + hlen) % 64) % 64;
        hlen += pad;
        e->size = pre + hlen + want;
        e->data = malloc(e->size);
        FUZZ_CHECK(e->data);
        memcpy(e->data, "\x93NUMPY", 6);
        e->data[6] = v2 ? 2 : 1;
        e->data[7] = 0;
        e->data[8] = (uint8_t)(hlen & 0xff);
        e->data[9] = (uint8_t)(hlen >> 8);
        if (v2) e->data[10] = e->data[11] = 0;
        memcpy(e->data + pre, header, hl);
        memset(e->data + pre + hl, ' ', pad);
        e->data[pre + hlen - 1] = '\n';
        for (size_t i = 0; i < want; i++) e->data[pre + hlen + i] = pl ? pattern[i % pl] : 0;
        e->deflate = flags & 1;
        n++;
    }

    /* pack: a fresh zip in memory with valid CRCs */
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &err);
    zip_t *za = src ? zip_open_from_source(src, ZIP_TRUNCATE, &err) : NULL;
    FUZZ_CHECK(za);
    zip_source_keep(src);
    for (int i = 0; i < n; i++) {
        zip_source_t *s = zip_source_buffer(za, m[i].data, m[i].size, 0);
        FUZZ_CHECK(s);
        zip_int64_t idx = zip_file_add(za, m[i].name, s, ZIP_FL_ENC_RAW);
        if (idx < 0) { /* e.g. a duplicate name: libzip refuses, leave it out */
            zip_source_free(s);
            continue;
        }
        zip_set_file_compression(za, (zip_uint64_t)idx, m[i].deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE,
                                 1);
    }
    uint8_t *zbuf = NULL;
    zip_int64_t zn = 0;
    const int closed = zip_close(za) == 0;
    if (!closed && getenv("LWFM_FUZZ_VERBOSE")) fprintf(stderr, "zip_close: %s\n", zip_strerror(za));
    if (!closed) zip_discard(za); /* a failed close leaves the archive to discard */
    if (closed && zip_source_open(src) == 0) {
        zip_source_seek(src, 0, SEEK_END);
        zn = zip_source_tell(src);
        zip_source_seek(src, 0, SEEK_SET);
        zbuf = malloc(zn > 0 ? (size_t)zn : 1);
        FUZZ_CHECK(zbuf);
        if (zn > 0) FUZZ_CHECK(zip_source_read(src, zbuf, (zip_uint64_t)zn) == zn);
        zip_source_close(src);
    }
    zip_source_free(src);
    zip_error_fini(&err);
    for (int i = 0; i < n; i++) free(m[i].data);

    if (zbuf) {
        lwfm_model *const canary = (lwfm_model *)&g_opts;
        lwfm_model *model = canary;
        lwfm_status st = lwfm_model_load_from_memory(&model, zbuf, (size_t)zn, g_opts);
        if (getenv("LWFM_FUZZ_VERBOSE"))
            fprintf(stderr, "status %d: %s\n", (int)st, st ? lwfm_last_error() : "ok");
        if (st) {
            FUZZ_CHECK_FAILURE(st);
            FUZZ_CHECK(model == canary);
        } else {
            FUZZ_CHECK(model && model != canary);
            use_model(model);
            lwfm_model_destroy(model);
        }
        free(zbuf);
    }
    return 0;
}
