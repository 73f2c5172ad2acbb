/* Prepared support sets beyond prepare and score: class names, growing a
 * set (lwfm_support_add), saving and loading it (docs/support-format.md).
 * All of it works on the generic description of the method's prepared
 * images (lwfm__prep_mem, lib/methods/method.h): no method is named here. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/core.h"
#include "episode.h"
#include "support.h"

/* ------------------------------------------------------------------------ */
/* Class names                                                              */

/* Length of a valid UTF-8 string of at most `max` bytes (no overlongs, no
 * surrogates, nothing above U+10FFFF); -1 when it is not one. */
static int64_t utf8_length(const char *s, size_t max) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i <= max && p[i]) {
        const unsigned c = p[i];
        int more;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) more = 0;
        else if (c >= 0xC2 && c <= 0xDF) more = 1;
        else if (c >= 0xE0 && c <= 0xEF) more = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) more = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else return -1;
        i++;
        for (int k = 0; k < more; k++, i++) {
            if (i > max || p[i] < (k ? 0x80 : lo) || p[i] > (k ? 0xBF : hi)) return -1;
        }
    }
    return i <= max ? (int64_t)i : -1;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* way names, each valid UTF-8 of 1..LWFM_LIMIT_CLASS_NAME bytes, all
 * different, copied into one allocation (*out; NULL when count is 0). */
static lwfm_status copy_names(const char *const *names, int64_t count, int64_t way, char ***out) {
    if (count == 0 && !names) {
        *out = NULL;
        return LWFM_OK;
    }
    if (!names) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "names is NULL");
    if (count != way)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "%lld class names for a set of %lld classes (one per class)",
                           (long long)count, (long long)way);
    size_t bytes = 0;
    for (int64_t k = 0; k < way; k++) {
        if (!names[k]) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "class name %lld is NULL", (long long)k);
        int64_t len = utf8_length(names[k], LWFM_LIMIT_CLASS_NAME);
        if (len < 0 && strnlen(names[k], LWFM_LIMIT_CLASS_NAME + 1) > LWFM_LIMIT_CLASS_NAME)
            return lwfm__error(LWFM_ERR_LIMIT,
                               "class name %lld exceeds LWFM_LIMIT_CLASS_NAME = %d bytes",
                               (long long)k, LWFM_LIMIT_CLASS_NAME);
        if (len < 0)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "class name %lld is not valid UTF-8",
                               (long long)k);
        if (len == 0)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "class name %lld is empty", (long long)k);
        bytes += (size_t)len + 1;
    }
    char **copy = malloc(sizeof(char *) * (size_t)way + bytes);
    char **sorted = malloc(sizeof(char *) * (size_t)way);
    if (!copy || !sorted) {
        free(copy), free(sorted);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    char *at = (char *)(copy + way);
    for (int64_t k = 0; k < way; k++) {
        size_t len = strlen(names[k]) + 1;
        copy[k] = sorted[k] = memcpy(at, names[k], len);
        at += len;
    }
    qsort(sorted, (size_t)way, sizeof *sorted, cmp_name);
    for (int64_t k = 1; k < way; k++)
        if (!strcmp(sorted[k - 1], sorted[k])) {
            lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "class name '%s' is given twice", sorted[k]);
            free(copy), free(sorted);
            return LWFM_ERR_INVALID_ARGUMENT;
        }
    free(sorted);
    *out = copy;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_support_set_class_names(lwfm_support *support, const char *const *names,
                                                  int64_t count) {
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    char **copy;
    lwfm_status st = copy_names(names, count, support->way, &copy);
    if (st) return st;
    free(support->names);
    support->names = copy;
    return LWFM_OK;
}

LWFM_API const char *lwfm_support_class_name(const lwfm_support *support, int64_t k) {
    if (!support || !support->names || k < 0 || k >= support->way) return NULL;
    return support->names[k];
}

LWFM_API int lwfm_support_from_features(const lwfm_support *support) {
    return support ? support->from_features : -1;
}

/* ------------------------------------------------------------------------ */
/* Growing a set                                                            */

/* The new set: base's labels followed by `labels`, base's prepared images
 * followed by `add` (prepared from the new images alone). */
static lwfm_status grow(const lwfm_support *base, lwfm__prep *add, int64_t n, int64_t P,
                        const int32_t *labels, int64_t new_way, lwfm_support **out) {
    lwfm_model *m = base->model;
    if (P != base->P) {
        lwfm__prep_release(add);
        return lwfm__error(LWFM_ERR_SHAPE,
                           "the added images give feature maps of %lld positions, the set's "
                           "have %lld (give images of the set's size)",
                           (long long)P, (long long)base->P);
    }
    const int64_t total = base->n + n;
    int32_t *all = malloc(sizeof(int32_t) * (size_t)total);
    if (!all) {
        lwfm__prep_release(add);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(all, base->labels, sizeof(int32_t) * (size_t)base->n);
    memcpy(all + base->n, labels, sizeof(int32_t) * (size_t)n);
    lwfm_support *s;
    lwfm_status st = lwfm__support_begin(m, all, total, new_way, &s);
    free(all);
    if (st) {
        lwfm__prep_release(add);
        return st;
    }
    s->n = total, s->P = P, s->from_features = base->from_features;
    st = lwfm__prep_concat(m, base->prep, add, &s->prep);
    lwfm__prep_release(add);
    if (!st) st = lwfm__support_check_size(m, s);
    if (!st && base->names && new_way == base->way)
        st = copy_names((const char *const *)base->names, base->way, base->way, &s->names);
    return lwfm__support_finish(s, st, out);
}

/* Checks shared by both calls, before any backbone work. */
static lwfm_status check_add(lwfm_support **out, const lwfm_support *base, int64_t n,
                             const int32_t *labels, int64_t new_way) {
    if (!out || !base) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or base is NULL");
    if (!labels) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "labels is NULL");
    if (new_way < base->way)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "new_way = %lld is below the set's %lld classes", (long long)new_way,
                           (long long)base->way);
    if (n > 0 && base->n + n > LWFM_LIMIT_IMAGES)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "support: %lld + %lld images exceed LWFM_LIMIT_IMAGES = %d",
                           (long long)base->n, (long long)n, LWFM_LIMIT_IMAGES);
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_support_add(lwfm_support **out, const lwfm_support *base,
                                      const float *images, int64_t n, const int32_t *labels,
                                      int64_t channels, int64_t height, int64_t width,
                                      int64_t new_way) {
    lwfm__error_clear();
    lwfm_status st = check_add(out, base, n, labels, new_way);
    if (st) return st;
    const lwfm_model *m = base->model;
    int64_t C, fh, fw;
    if ((st = lwfm__check_images(m, "added images", images, n, channels, height, width, &C, &fh,
                                 &fw)) ||
        (st = lwfm__check_positions("added images", fh, fw)))
        return st;
    lwfm__prep *add = NULL;
    if ((st = lwfm__images_to_prep(m, "added images", images, n, height, width, &add, NULL)))
        return st;
    return grow(base, add, n, fh * fw, labels, new_way, out);
}

LWFM_API lwfm_status lwfm_support_add_features(lwfm_support **out, const lwfm_support *base,
                                               const float *features, int64_t n,
                                               const int32_t *labels, int64_t channels, int64_t fh,
                                               int64_t fw, int64_t new_way) {
    lwfm__error_clear();
    lwfm_status st = check_add(out, base, n, labels, new_way);
    if (st) return st;
    const lwfm_model *m = base->model;
    if ((st = lwfm__check_features(m, "added features", features, n, channels, fh, fw)))
        return st;
    lwfm__prep *add = NULL;
    if ((st = m->method->prepare(m, features, n, fh * fw, NULL, &add))) return st;
    return grow(base, add, n, fh * fw, labels, new_way, out);
}

/* ------------------------------------------------------------------------ */
/* The file format (docs/support-format.md)                                 */

#define MAGIC "LWFMSUPP"
#define FORMAT_VERSION 1u
#define HEADER_BYTES 152
#define METHOD_NAME_BYTES 16
#define FLAG_FEATURES 1u

/* The header's fields, decoded and checked against the limits. */
typedef struct header {
    uint32_t version, flags, precision, n_buf;
    char method[METHOD_NAME_BYTES + 1];
    uint8_t fingerprint[32];
    int64_t way, n, P;
    uint64_t names_bytes;
    uint64_t image_bytes[LWFM_PREP_MAX_BUFS];
    uint64_t total; /* bytes of the whole file, CRC included */
} header;

static uint64_t get_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void set_le(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static int little_endian_host(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static uint64_t names_bytes(const lwfm_support *s) {
    uint64_t b = 0;
    if (s->names)
        for (int64_t k = 0; k < s->way; k++) b += strlen(s->names[k]) + 1;
    return b;
}

static void header_encode(const lwfm_support *s, uint8_t h[HEADER_BYTES]) {
    const lwfm__prep_mem *mem = (const lwfm__prep_mem *)s->prep;
    memset(h, 0, HEADER_BYTES);
    memcpy(h, MAGIC, 8);
    set_le(h + 8, FORMAT_VERSION, 4);
    set_le(h + 12, s->from_features ? FLAG_FEATURES : 0, 4);
    strncpy((char *)h + 16, s->model->method->name, METHOD_NAME_BYTES);
    memcpy(h + 32, s->model->fingerprint, 32);
    set_le(h + 64, (uint64_t)s->model->precision, 4);
    set_le(h + 68, (uint64_t)mem->layout.n_image_buf, 4);
    set_le(h + 72, (uint64_t)s->way, 8);
    set_le(h + 80, (uint64_t)s->n, 8);
    set_le(h + 88, (uint64_t)s->P, 8);
    set_le(h + 96, names_bytes(s), 8);
    for (int i = 0; i < mem->layout.n_image_buf; i++)
        set_le(h + 104 + 8 * i, mem->layout.image_bytes[i], 8);
}

/* For messages: the name of a valid precision value. */
static const char *precision_name(uint32_t precision) {
    return precision == LWFM_PRECISION_BF16   ? "bf16"
           : precision == LWFM_PRECISION_INT8 ? "int8"
                                              : "fp32";
}

/* Fields and their limits; h->total from them, overflow-checked. */
static lwfm_status header_decode(const uint8_t *d, size_t size, const char *src, header *h) {
    if (size < 8 || memcmp(d, MAGIC, 8))
        return lwfm__error(LWFM_ERR_FORMAT, "%s: not a libLWFM support-set file (no '%s' magic)",
                           src, MAGIC);
    if (size < HEADER_BYTES + 4)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "%s: truncated: %zu bytes, a support-set file has at least %d", src,
                           size, HEADER_BYTES + 4);
    memset(h, 0, sizeof *h);
    h->version = (uint32_t)get_le(d + 8, 4);
    if (h->version != FORMAT_VERSION)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "%s: support-set format version %u; this library reads version %u",
                           src, h->version, FORMAT_VERSION);
    h->flags = (uint32_t)get_le(d + 12, 4);
    memcpy(h->method, d + 16, METHOD_NAME_BYTES);
    memcpy(h->fingerprint, d + 32, 32);
    h->precision = (uint32_t)get_le(d + 64, 4);
    h->n_buf = (uint32_t)get_le(d + 68, 4);
    h->way = (int64_t)get_le(d + 72, 8);
    h->n = (int64_t)get_le(d + 80, 8);
    h->P = (int64_t)get_le(d + 88, 8);
    h->names_bytes = get_le(d + 96, 8);
    for (int i = 0; i < LWFM_PREP_MAX_BUFS; i++) h->image_bytes[i] = get_le(d + 104 + 8 * i, 8);
    size_t mlen = strnlen(h->method, METHOD_NAME_BYTES);
    for (size_t i = mlen; i < METHOD_NAME_BYTES; i++)
        if (h->method[i]) return lwfm__error(LWFM_ERR_FORMAT, "%s: bad method name field", src);
    if (h->flags & ~FLAG_FEATURES)
        return lwfm__error(LWFM_ERR_FORMAT, "%s: unknown flags 0x%x", src, h->flags);
    if (h->precision > LWFM_PRECISION_INT8)
        return lwfm__error(LWFM_ERR_FORMAT, "%s: unknown precision %u", src, h->precision);
    if (h->way < 2 || h->way > LWFM_LIMIT_WAY)
        return lwfm__error(h->way < 2 ? LWFM_ERR_FORMAT : LWFM_ERR_LIMIT,
                           "%s: way = %lld is outside 2..LWFM_LIMIT_WAY = %d", src,
                           (long long)h->way, LWFM_LIMIT_WAY);
    if (h->n < h->way || h->n > LWFM_LIMIT_IMAGES)
        return lwfm__error(h->n < h->way ? LWFM_ERR_FORMAT : LWFM_ERR_LIMIT,
                           "%s: %lld images for %lld classes (at most LWFM_LIMIT_IMAGES = %d)",
                           src, (long long)h->n, (long long)h->way, LWFM_LIMIT_IMAGES);
    if (h->P < 1 || h->P > LWFM_LIMIT_POSITIONS)
        return lwfm__error(h->P < 1 ? LWFM_ERR_FORMAT : LWFM_ERR_LIMIT,
                           "%s: %lld positions per image is outside 1..LWFM_LIMIT_POSITIONS = %d",
                           src, (long long)h->P, LWFM_LIMIT_POSITIONS);
    if (h->n_buf < 1 || h->n_buf >= LWFM_PREP_MAX_BUFS)
        return lwfm__error(LWFM_ERR_FORMAT, "%s: %u buffers per image (1..%d)", src, h->n_buf,
                           LWFM_PREP_MAX_BUFS - 1);
    if (h->names_bytes > (uint64_t)h->way * (LWFM_LIMIT_CLASS_NAME + 1))
        return lwfm__error(LWFM_ERR_LIMIT, "%s: %llu bytes of class names exceed %lld x (%d + 1)",
                           src, (unsigned long long)h->names_bytes, (long long)h->way,
                           LWFM_LIMIT_CLASS_NAME);
    uint64_t total = HEADER_BYTES + 4 * (uint64_t)h->n + h->names_bytes + 4, b;
    for (int i = 0; i < LWFM_PREP_MAX_BUFS; i++) {
        if ((i < (int)h->n_buf) != (h->image_bytes[i] != 0))
            return lwfm__error(LWFM_ERR_FORMAT, "%s: buffer %d: %llu bytes per image", src, i,
                               (unsigned long long)h->image_bytes[i]);
        if (__builtin_mul_overflow(h->image_bytes[i], (uint64_t)h->n, &b) ||
            __builtin_add_overflow(total, b, &total))
            return lwfm__error(LWFM_ERR_FORMAT, "%s: buffer sizes overflow", src);
    }
    h->total = total;
    return LWFM_OK;
}

/* The header agrees with this model and its method's layout. */
static lwfm_status check_binding(const header *h, const lwfm_model *m, const char *src) {
    char want[LWFM_FINGERPRINT_CHARS + 1], got[LWFM_FINGERPRINT_CHARS + 1];
    lwfm__hex(h->fingerprint, 32, got);
    lwfm__hex(m->fingerprint, 32, want);
    if (strcmp(h->method, m->method->name))
        return lwfm__error(LWFM_ERR_WRONG_KIND,
                           "%s: the set was prepared by a '%s' model (fingerprint %s); this "
                           "model is '%s' (fingerprint %s)",
                           src, h->method, got, m->method->name, want);
    if (memcmp(h->fingerprint, m->fingerprint, 32))
        return lwfm__error(LWFM_ERR_WRONG_KIND,
                           "%s: the set was prepared by the model of fingerprint %s; this "
                           "model's is %s (a set is scored only by the weights that prepared it)",
                           src, got, want);
    if (h->precision != (uint32_t)m->precision)
        return lwfm__error(LWFM_ERR_WRONG_KIND,
                           "%s: the set was prepared at %s precision; this model runs at %s", src,
                           precision_name(h->precision), precision_name((uint32_t)m->precision));
    if (m->cfg.feature_size && h->P != m->layers.P)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "%s: %lld positions per image; this model's feature maps have %d", src,
                           (long long)h->P, m->layers.P);
    lwfm__prep_layout ly;
    memset(&ly, 0, sizeof ly);
    m->method->layout(m, h->n, h->P, &ly);
    if ((uint32_t)ly.n_image_buf != h->n_buf)
        return lwfm__error(LWFM_ERR_FORMAT, "%s: %u buffers per image; the method has %d", src,
                           h->n_buf, ly.n_image_buf);
    for (int i = 0; i < ly.n_image_buf; i++)
        if (ly.image_bytes[i] != h->image_bytes[i])
            return lwfm__error(LWFM_ERR_FORMAT,
                               "%s: buffer %d holds %llu bytes per image; the method lays out "
                               "%zu for %lld positions",
                               src, i, (unsigned long long)h->image_bytes[i], ly.image_bytes[i],
                               (long long)h->P);
    return LWFM_OK;
}

/* The names block: exactly way NUL-terminated names filling it. */
static lwfm_status read_names(const char *block, uint64_t bytes, int64_t way, const char *src,
                              char ***out) {
    *out = NULL;
    if (bytes == 0) return LWFM_OK;
    const char **names = malloc(sizeof(char *) * (size_t)way);
    if (!names) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    uint64_t at = 0;
    lwfm_status st = LWFM_OK;
    for (int64_t k = 0; k < way && !st; k++) {
        const char *end = at < bytes ? memchr(block + at, 0, bytes - at) : NULL;
        if (!end)
            st = lwfm__error(LWFM_ERR_FORMAT, "%s: class names: %lld of %lld in the block", src,
                             (long long)k, (long long)way);
        else
            names[k] = block + at, at = (uint64_t)(end - block) + 1;
    }
    if (!st && at != bytes)
        st = lwfm__error(LWFM_ERR_FORMAT, "%s: %llu bytes after the class names", src,
                         (unsigned long long)(bytes - at));
    if (!st && (st = copy_names(names, way, way, out)))
        st = lwfm__error_prefix(st, "%s: class names", src);
    free(names);
    return st;
}

static lwfm_status check_finite(const lwfm__prep_mem *mem, const char *src) {
    for (int i = 0; i < mem->layout.n_image_buf; i++) {
        const size_t bytes = mem->layout.image_bytes[i] * (size_t)mem->n;
        int ok = 1;
        if (mem->layout.type[i] == 'd') {
            const double *v = mem->buf[i];
            for (size_t k = 0; k < bytes / sizeof(double) && ok; k++) ok = isfinite(v[k]);
        } else {
            ok = lwfm__all_finite(mem->buf[i], bytes / sizeof(float));
        }
        if (!ok)
            return lwfm__error(LWFM_ERR_NONFINITE, "%s: prepared buffer %d holds NaN or infinity",
                               src, i);
    }
    return LWFM_OK;
}

/* A set from the bytes of a whole file (size bytes), checked to the last. */
static lwfm_status parse(lwfm_support **out, lwfm_model *m, const uint8_t *d, size_t size,
                         const char *src) {
    header h;
    lwfm_status st = header_decode(d, size, src, &h);
    if (st) return st;
    if (h.total != size)
        return lwfm__error(LWFM_ERR_FORMAT, "%s: %s: %zu bytes, the header says %llu", src,
                           size < h.total ? "truncated" : "trailing bytes", size,
                           (unsigned long long)h.total);
    const uint32_t stored = (uint32_t)get_le(d + size - 4, 4),
                   crc = (uint32_t)crc32_z(0, d, size - 4);
    if (stored != crc)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "%s: CRC mismatch (stored %08x, computed %08x): the file is corrupted",
                           src, stored, crc);
    if ((st = check_binding(&h, m, src))) return st;
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)h.n);
    if (!labels) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(labels, d + HEADER_BYTES, sizeof(int32_t) * (size_t)h.n); /* little-endian host */
    lwfm_support *s;
    st = lwfm__support_begin(m, labels, h.n, h.way, &s);
    free(labels);
    if (st) return lwfm__error_prefix(st, "%s", src);
    s->n = h.n, s->P = h.P, s->from_features = (h.flags & FLAG_FEATURES) != 0;
    const char *names = (const char *)d + HEADER_BYTES + 4 * (size_t)h.n;
    st = read_names(names, h.names_bytes, h.way, src, &s->names);
    const void *src_buf[LWFM_PREP_MAX_BUFS];
    const uint8_t *at = (const uint8_t *)names + h.names_bytes;
    for (uint32_t i = 0; i < h.n_buf; i++) src_buf[i] = at, at += h.image_bytes[i] * (size_t)h.n;
    if (!st && !(s->prep = lwfm__prep_copy_in(m, h.n, h.P, src_buf))) st = LWFM_ERR_OUT_OF_MEMORY;
    if (!st) st = check_finite((const lwfm__prep_mem *)s->prep, src);
    if (!st && (st = lwfm__support_check_size(m, s))) st = lwfm__error_prefix(st, "%s", src);
    return lwfm__support_finish(s, st, out);
}

/* Where the bytes go: memory, or a file descriptor; CRC as they pass. */
typedef struct sink {
    uint8_t *mem;
    int fd;
    uint64_t pos;
    uint32_t crc;
    int failed; /* errno of a failed write, else 0 */
} sink;

static void put(sink *k, const void *data, size_t n, int in_crc) {
    if (k->failed || !n) return;
    if (in_crc) k->crc = (uint32_t)crc32_z(k->crc, data, n);
    if (k->mem) {
        memcpy(k->mem + k->pos, data, n);
    } else {
        const char *p = data;
        for (size_t left = n; left;) {
            ssize_t w = write(k->fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                k->failed = w < 0 ? errno : EIO;
                return;
            }
            p += w, left -= (size_t)w;
        }
    }
    k->pos += n;
}

static uint64_t file_size(const lwfm_support *s) {
    const lwfm__prep_mem *mem = (const lwfm__prep_mem *)s->prep;
    uint64_t total = HEADER_BYTES + 4 * (uint64_t)s->n + names_bytes(s) + 4;
    for (int i = 0; i < mem->layout.n_image_buf; i++)
        total += mem->layout.image_bytes[i] * (uint64_t)s->n;
    return total;
}

static void write_set(const lwfm_support *s, sink *k) {
    const lwfm__prep_mem *mem = (const lwfm__prep_mem *)s->prep;
    uint8_t h[HEADER_BYTES], crc[4];
    header_encode(s, h);
    put(k, h, sizeof h, 1);
    put(k, s->labels, sizeof(int32_t) * (size_t)s->n, 1);
    if (s->names)
        for (int64_t c = 0; c < s->way; c++) put(k, s->names[c], strlen(s->names[c]) + 1, 1);
    for (int i = 0; i < mem->layout.n_image_buf; i++)
        put(k, mem->buf[i], mem->layout.image_bytes[i] * (size_t)s->n, 1);
    set_le(crc, k->crc, 4);
    put(k, crc, 4, 0);
}

static lwfm_status check_host(void) {
    if (!little_endian_host())
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "support-set files are little-endian; this host is not");
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_support_save_to_memory(const lwfm_support *support, void *buffer,
                                                 size_t capacity, size_t *size) {
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    lwfm_status st = check_host();
    if (st) return st;
    const uint64_t need = file_size(support);
    if (need > SIZE_MAX) return lwfm__error(LWFM_ERR_LIMIT, "the set needs %llu bytes", (unsigned long long)need);
    if (size) *size = (size_t)need;
    if (!buffer) return LWFM_OK;
    if (capacity < need)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL, "the set needs %llu bytes, buffer has %zu",
                           (unsigned long long)need, capacity);
    sink k = {.mem = buffer};
    write_set(support, &k);
    return LWFM_OK;
}

/* A new file next to `path` for the temporary copy (mode 0666 less the
 * umask, as for any new file): `tmp` receives its name. */
static int open_temp(const char *path, char *tmp, size_t cap) {
    static atomic_uint counter;
    for (int tries = 0; tries < 100; tries++) {
        int n = snprintf(tmp, cap, "%s.tmp-%ld-%u", path, (long)getpid(),
                         atomic_fetch_add(&counter, 1));
        if (n < 0 || (size_t)n >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

/* Flush the directory entry of the rename too (best effort: the file is in
 * place whole either way; this makes it survive a power cut). */
static void sync_parent(const char *path, char *buf, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (slash && (size_t)(slash - path) + 2 > cap) return;
    if (slash) {
        memcpy(buf, path, (size_t)(slash - path));
        buf[slash == path ? 1 : slash - path] = 0;
        if (slash == path) buf[0] = '/';
    } else {
        strcpy(buf, ".");
    }
    int fd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

LWFM_API lwfm_status lwfm_support_save(const lwfm_support *support, const char *path) {
    lwfm__error_clear();
    if (!support || !path) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support or path is NULL");
    lwfm_status st = check_host();
    if (st) return st;
    char tmp[4096];
    int fd = open_temp(path, tmp, sizeof tmp);
    if (fd < 0)
        return lwfm__error(LWFM_ERR_IO, "%s: cannot create a temporary file next to it: %s", path,
                           strerror(errno));
    sink k = {.fd = fd};
    write_set(support, &k);
    int err = k.failed;
    if (!err && fsync(fd)) err = errno;
    if (close(fd) && !err) err = errno;
    if (!err && rename(tmp, path)) err = errno;
    if (err) {
        unlink(tmp);
        return lwfm__error(LWFM_ERR_IO, "%s: cannot write the support set: %s", path,
                           strerror(err));
    }
    sync_parent(path, tmp, sizeof tmp);
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_support_load_from_memory(lwfm_support **out, lwfm_model *model,
                                                   const void *data, size_t size) {
    lwfm__error_clear();
    if (!out || !model || (!data && size))
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out, model or data is NULL");
    lwfm_status st = check_host();
    if (st) return st;
    return parse(out, model, data ? data : "", size, "<memory>");
}

/* All `n` bytes from fd; 0, or errno (EIO for a file that ended early). */
static int read_all(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? errno : EIO;
        p += r, n -= (size_t)r;
    }
    return 0;
}

/* The file's header says how long the whole file is: nothing is allocated
 * beyond that, and only when the file is that long. */
LWFM_API lwfm_status lwfm_support_load(lwfm_support **out, lwfm_model *model, const char *path) {
    lwfm__error_clear();
    if (!out || !model || !path)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out, model or path is NULL");
    lwfm_status st = check_host();
    if (st) return st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        int err = fd < 0 ? errno : EISDIR;
        if (fd >= 0) close(fd);
        return lwfm__error(LWFM_ERR_IO, "%s: cannot open: %s", path,
                           fd < 0 || err != EISDIR ? strerror(err) : "not a regular file");
    }
    uint8_t head[HEADER_BYTES];
    const size_t head_n = (uint64_t)sb.st_size < sizeof head ? (size_t)sb.st_size : sizeof head;
    header h;
    int err = read_all(fd, head, head_n);
    if (!err && !(st = header_decode(head, head_n < sizeof head ? head_n : (size_t)sb.st_size,
                                     path, &h)) &&
        h.total != (uint64_t)sb.st_size)
        st = lwfm__error(LWFM_ERR_FORMAT, "%s: %s: %lld bytes, the header says %llu", path,
                         (uint64_t)sb.st_size < h.total ? "truncated" : "trailing bytes",
                         (long long)sb.st_size, (unsigned long long)h.total);
    uint8_t *all = NULL;
    if (!err && !st && h.total > SIZE_MAX)
        st = lwfm__error(LWFM_ERR_LIMIT, "%s: %llu bytes", path, (unsigned long long)h.total);
    if (!err && !st && !(all = malloc((size_t)h.total)))
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "%s: out of memory for %llu bytes", path,
                         (unsigned long long)h.total);
    if (!err && !st) {
        memcpy(all, head, sizeof head);
        err = read_all(fd, all + sizeof head, (size_t)h.total - sizeof head);
    }
    close(fd);
    if (err && !st)
        st = err == EIO ? lwfm__error(LWFM_ERR_FORMAT, "%s: truncated while reading", path)
                        : lwfm__error(LWFM_ERR_IO, "%s: read failed: %s", path, strerror(err));
    if (!st) st = parse(out, model, all, (size_t)h.total, path);
    free(all);
    return st;
}
