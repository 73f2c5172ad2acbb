/* .npy member parser (see docs/weight-format.md).
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for 1.0, uint32
 * LE for 2.0/3.0), the header (a Python dict literal padded with spaces and a
 * newline), then the raw array data in C order. The header is parsed by a
 * small strict parser that only accepts the literal forms NumPy writes:
 * quoted strings without escapes, True/False, and tuples of non-negative
 * integers. Every length is checked against the member size before use. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "io/npy.h"

/* ------------------------------------------------------------------------ */
/* Header dict parser                                                        */

typedef struct npy_cursor {
    const char *start, *p, *end;
} npy_cursor;

typedef struct npy_header {
    char descr[16];
    int fortran_order;
    int ndim;
    uint64_t dims[LWFM_NPZ_MAX_NDIM]; /* saturated at UINT64_MAX */
} npy_header;

static void skip_ws(npy_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* Next non-blank character, or -1 at the end of the header. */
static int peek(npy_cursor *c) {
    skip_ws(c);
    return c->p < c->end ? (unsigned char)*c->p : -1;
}

static int accept(npy_cursor *c, char ch) {
    if (peek(c) != (unsigned char)ch) return 0;
    c->p++;
    return 1;
}

static lwfm_status syntax(const npy_cursor *c, const char *expected) {
    return lwfm__error(LWFM_ERR_FORMAT, "malformed .npy header: expected %s at header offset %td",
                       expected, c->p - c->start);
}

/* A quoted string of printable ASCII without escapes. At most cap-1
 * characters are kept; *truncated is set when there were more. */
static lwfm_status parse_string(npy_cursor *c, char *buf, size_t cap, int *truncated) {
    int q = peek(c);
    if (q != '\'' && q != '"') return syntax(c, "a quoted string");
    c->p++;
    size_t n = 0;
    *truncated = 0;
    while (c->p < c->end && *c->p != q) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '\\' || ch < 0x20 || ch > 0x7e)
            return syntax(c, "a string of printable ASCII without escapes");
        if (n + 1 < cap)
            buf[n++] = (char)ch;
        else
            *truncated = 1;
        c->p++;
    }
    if (c->p >= c->end) return syntax(c, "a closing quote");
    c->p++;
    buf[n] = '\0';
    return LWFM_OK;
}

static int is_ident_char(int ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_';
}

/* True or False. */
static lwfm_status parse_bool(npy_cursor *c, int *out) {
    static const char *const words[2] = {"False", "True"};
    skip_ws(c);
    for (int v = 0; v < 2; v++) {
        size_t len = strlen(words[v]);
        if ((size_t)(c->end - c->p) >= len && memcmp(c->p, words[v], len) == 0 &&
            ((size_t)(c->end - c->p) == len || !is_ident_char((unsigned char)c->p[len]))) {
            c->p += len;
            *out = v;
            return LWFM_OK;
        }
    }
    return syntax(c, "True or False");
}

/* A non-negative decimal integer (a Python 2 'L' suffix is tolerated),
 * saturating at UINT64_MAX so that absurd values still reach the limit
 * checks with a clear message. */
static lwfm_status parse_dim(npy_cursor *c, uint64_t *out) {
    int ch = peek(c);
    if (ch == '-') return lwfm__error(LWFM_ERR_FORMAT, "negative dimension in the .npy shape");
    if (ch < '0' || ch > '9') return syntax(c, "a dimension");
    uint64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p - '0');
        v = (v > (UINT64_MAX - d) / 10) ? UINT64_MAX : v * 10 + d;
        c->p++;
    }
    if (c->p < c->end && (*c->p == 'L' || *c->p == 'l')) c->p++;
    *out = v;
    return LWFM_OK;
}

/* "()", "(5,)", "(64, 3, 7, 7)"; a trailing comma is optional except in a
 * 1-tuple, where Python requires it. */
static lwfm_status parse_shape(npy_cursor *c, npy_header *h) {
    lwfm_status st;
    if (!accept(c, '(')) return syntax(c, "'(' starting the shape tuple");
    h->ndim = 0;
    if (accept(c, ')')) return LWFM_OK;
    for (;;) {
        uint64_t v = 0;
        if ((st = parse_dim(c, &v))) return st;
        if (h->ndim == LWFM_NPZ_MAX_NDIM)
            return lwfm__error(LWFM_ERR_LIMIT, "array has more than %d dimensions (LWFM_LIMIT_NPY_NDIM)",
                               LWFM_NPZ_MAX_NDIM);
        h->dims[h->ndim++] = v;
        if (accept(c, ')')) {
            if (h->ndim == 1) return syntax(c, "',' after the only dimension of a 1-tuple");
            return LWFM_OK;
        }
        if (!accept(c, ',')) return syntax(c, "',' or ')' in the shape tuple");
        if (accept(c, ')')) return LWFM_OK;
    }
}

/* The whole header: {'descr': ..., 'fortran_order': ..., 'shape': ...} with
 * keys in any order, each exactly once, optional trailing comma, nothing but
 * whitespace after the closing brace. */
static lwfm_status parse_header(const char *text, size_t len, npy_header *h) {
    npy_cursor c = {text, text, text + len};
    enum { K_DESCR = 1, K_FORTRAN = 2, K_SHAPE = 4 };
    unsigned seen = 0;
    lwfm_status st;
    int trunc;

    memset(h, 0, sizeof *h);
    if (!accept(&c, '{')) return syntax(&c, "'{'");
    while (!accept(&c, '}')) {
        char key[16];
        unsigned bit;
        if ((st = parse_string(&c, key, sizeof key, &trunc))) return st;
        if (!accept(&c, ':')) return syntax(&c, "':'");
        if (!trunc && strcmp(key, "descr") == 0) {
            bit = K_DESCR;
            if (peek(&c) == '[')
                return lwfm__error(LWFM_ERR_DTYPE, "structured dtypes are not supported "
                                                   "(plain numeric arrays only)");
            if ((st = parse_string(&c, h->descr, sizeof h->descr, &trunc))) return st;
            if (trunc) return lwfm__error(LWFM_ERR_DTYPE, "unsupported dtype '%s...'", h->descr);
        } else if (!trunc && strcmp(key, "fortran_order") == 0) {
            bit = K_FORTRAN;
            if ((st = parse_bool(&c, &h->fortran_order))) return st;
        } else if (!trunc && strcmp(key, "shape") == 0) {
            bit = K_SHAPE;
            if ((st = parse_shape(&c, h))) return st;
        } else {
            return lwfm__error(LWFM_ERR_FORMAT, "malformed .npy header: unknown key '%s%s'", key,
                               trunc ? "..." : "");
        }
        if (seen & bit)
            return lwfm__error(LWFM_ERR_FORMAT, "malformed .npy header: duplicate key '%s'", key);
        seen |= bit;
        if (accept(&c, ',')) continue;
        if (accept(&c, '}')) break;
        return syntax(&c, "',' or '}'");
    }
    skip_ws(&c);
    if (c.p != c.end) return syntax(&c, "only whitespace after '}'");
    if (!(seen & K_DESCR)) return lwfm__error(LWFM_ERR_FORMAT, "malformed .npy header: no 'descr'");
    if (!(seen & K_FORTRAN))
        return lwfm__error(LWFM_ERR_FORMAT, "malformed .npy header: no 'fortran_order'");
    if (!(seen & K_SHAPE)) return lwfm__error(LWFM_ERR_FORMAT, "malformed .npy header: no 'shape'");
    return LWFM_OK;
}

/* ------------------------------------------------------------------------ */
/* dtypes and conversion                                                     */

typedef struct npy_dtype {
    char kind; /* 'f' float, 'i' signed, 'u' unsigned, 'b' bool */
    int size;  /* bytes per element */
    int big;   /* big-endian storage */
} npy_dtype;

/* Accepts exactly the descrs listed in docs/weight-format.md. One-byte types
 * may carry any byte-order mark since order is irrelevant for them. */
static int parse_descr(const char *d, npy_dtype *t) {
    if (strlen(d) != 3) return 0;
    char order = d[0], kind = d[1];
    int size = d[2] - '0';
    if (order != '<' && order != '>' && order != '|') return 0;
    switch (kind) {
    case 'f':
        if (size != 2 && size != 4 && size != 8) return 0;
        break;
    case 'i':
    case 'u':
        if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
        break;
    case 'b':
        if (size != 1) return 0;
        break;
    default:
        return 0;
    }
    if (order == '|' && size != 1) return 0;
    t->kind = kind;
    t->size = size;
    t->big = order == '>';
    return 1;
}

/* Unsigned integer of `size` bytes at p, in the given byte order. */
static uint64_t load_uint(const uint8_t *p, int size, int big) {
    uint64_t v = 0;
    if (big)
        for (int i = 0; i < size; i++) v = (v << 8) | p[i];
    else
        for (int i = size - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* IEEE 754 binary16 to binary32, exact for every input. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, nan (payload kept) */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13); /* rebias 15 -> 127 */
    } else {
        f = (float)man * 0x1p-24f; /* zero or subnormal: man * 2^-24, exact */
        return sign ? -f : f;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

static lwfm_status nonfinite_error(size_t i) {
    return lwfm__error(LWFM_ERR_FORMAT,
                       "non-finite value (NaN or infinity) at element %zu; weights must be finite",
                       i);
}

static lwfm_status convert_float(float *dst, const uint8_t *src, size_t n, npy_dtype t) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (t.size == 4 && !t.big) {
        memcpy(dst, src, n * sizeof(float));
        goto check;
    }
#endif
    for (size_t i = 0; i < n; i++) {
        uint64_t bits = load_uint(src + i * (size_t)t.size, t.size, t.big);
        if (t.size == 2) {
            dst[i] = half_to_float((uint16_t)bits);
        } else if (t.size == 4) {
            uint32_t b32 = (uint32_t)bits;
            memcpy(&dst[i], &b32, sizeof b32);
        } else {
            double d;
            memcpy(&d, &bits, sizeof d);
            if (!isfinite(d)) return nonfinite_error(i);
            if (fabs(d) > FLT_MAX)
                return lwfm__error(LWFM_ERR_FORMAT,
                                   "value %g at element %zu is outside the float32 range", d, i);
            dst[i] = (float)d;
        }
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
check:
#endif
    if (!lwfm__all_finite(dst, n))
        for (size_t i = 0; i < n; i++)
            if (!isfinite(dst[i])) return nonfinite_error(i);
    return LWFM_OK;
}

/* One stored integer / bool element as int64 (u8 values were checked to fit). */
static int64_t int_value(const uint8_t *p, npy_dtype t) {
    uint64_t u = load_uint(p, t.size, t.big);
    if (t.kind == 'b') return u != 0;
    if (t.kind == 'u') return (int64_t)u;
    switch (t.size) { /* sign-extend from size*8 bits */
    case 1:
        return (int8_t)(uint8_t)u;
    case 2:
        return (int16_t)(uint16_t)u;
    case 4:
        return (int32_t)(uint32_t)u;
    default:
        return (int64_t)u;
    }
}

/* Integers are kept as stored; only what cannot be read as int64 is refused. */
static lwfm_status check_int(const uint8_t *src, size_t n, npy_dtype t) {
    if (t.kind != 'u' || t.size != 8) return LWFM_OK;
    for (size_t i = 0; i < n; i++) {
        uint64_t u = load_uint(src + i * (size_t)t.size, t.size, t.big);
        if (u > (uint64_t)INT64_MAX)
            return lwfm__error(LWFM_ERR_FORMAT, "value %llu at element %zu does not fit in int64",
                               (unsigned long long)u, i);
    }
    return LWFM_OK;
}

int64_t lwfm__tensor_int(const lwfm__tensor *t, size_t i) {
    npy_dtype dt;
    if (!t || !t->ints || i >= t->numel || !parse_descr(t->descr, &dt)) return 0;
    return int_value(t->ints + i * (size_t)t->int_size, dt);
}

/* ------------------------------------------------------------------------ */

void lwfm__format_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t len = 0;
    if (cap == 0) return;
    buf[0] = '\0';
#define APPEND(...)                                                                                \
    do {                                                                                           \
        int k_ = snprintf(buf + len, cap - len, __VA_ARGS__);                                      \
        if (k_ < 0 || (size_t)k_ >= cap - len) return; /* truncated */                             \
        len += (size_t)k_;                                                                         \
    } while (0)
    APPEND("(");
    for (int i = 0; i < ndim; i++) APPEND(i ? ", %lld" : "%lld", (long long)shape[i]);
    APPEND(ndim == 1 ? ",)" : ")");
#undef APPEND
}

void lwfm__tensor_free(lwfm__tensor *t) {
    if (!t) return;
    lwfm__free(t->name);
    lwfm__free(t->f32);
    lwfm__free(t->ints);
    memset(t, 0, sizeof *t);
}

lwfm_status lwfm__npy_parse(lwfm__tensor *t, const char *name, const void *data, size_t size,
                            const lwfm__npz_limits *lim) {
    static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    const uint8_t *b = data;
    npy_header h;
    npy_dtype dt;
    lwfm_status st;

    memset(t, 0, sizeof *t);

    /* Preamble. */
    if (size < 10 || memcmp(b, magic, sizeof magic) != 0)
        return lwfm__error(LWFM_ERR_FORMAT, "not a .npy array (bad magic or too short)");
    int major = b[6], minor = b[7];
    if (major < 1 || major > 3 || minor != 0)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           ".npy format version %d.%d is not supported (1.0, 2.0, 3.0 are)", major,
                           minor);
    size_t pre = major == 1 ? 10 : 12;
    if (size < pre) return lwfm__error(LWFM_ERR_FORMAT, "truncated .npy preamble");
    size_t hlen = major == 1 ? (size_t)load_uint(b + 8, 2, 0) : (size_t)load_uint(b + 8, 4, 0);
    if (hlen > size - pre)
        return lwfm__error(LWFM_ERR_FORMAT,
                           ".npy header length %zu exceeds the %zu bytes left in the member", hlen,
                           size - pre);

    /* Header. */
    if ((st = parse_header((const char *)b + pre, hlen, &h))) return st;
    if (h.fortran_order)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "array is stored in Fortran order; save it C-contiguous "
                           "(np.ascontiguousarray) before np.savez");
    if (!parse_descr(h.descr, &dt))
        return lwfm__error(LWFM_ERR_DTYPE,
                           "unsupported dtype '%s' (float: <f2 <f4 <f8; integer/bool: |b1 |i1 |u1 "
                           "<i2 <u2 <i4 <u4 <i8 <u8; '>' byte order also accepted)",
                           h.descr);

    /* Shape and size limits, in 64-bit arithmetic that cannot overflow. */
    uint64_t numel = 1;
    for (int i = 0; i < h.ndim; i++) {
        if (h.dims[i] > lim->max_elements || h.dims[i] > (uint64_t)INT64_MAX)
            return lwfm__error(
                LWFM_ERR_LIMIT, "dimension %d is %llu, more than max_elements = %llu", i,
                (unsigned long long)h.dims[i], (unsigned long long)lim->max_elements);
        if (__builtin_mul_overflow(numel, h.dims[i], &numel)) numel = UINT64_MAX;
    }
    int64_t shape[LWFM_NPZ_MAX_NDIM] = {0};
    for (int i = 0; i < h.ndim; i++) shape[i] = (int64_t)h.dims[i];
    if (numel > lim->max_elements) {
        char shp[256];
        lwfm__format_shape(shp, sizeof shp, shape, h.ndim);
        return lwfm__error(LWFM_ERR_LIMIT, "shape %s has more than max_elements = %llu elements",
                           shp, (unsigned long long)lim->max_elements);
    }
    size_t n, need, outbytes;
    if (numel > SIZE_MAX || lwfm__mul_size((size_t)numel, (size_t)dt.size, &need) ||
        lwfm__mul_size((size_t)numel, dt.kind == 'f' ? sizeof(float) : (size_t)dt.size,
                       &outbytes))
        return lwfm__error(LWFM_ERR_LIMIT, "array too large for this machine");
    if (outbytes > lim->max_kept_bytes)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%zu bytes once converted%s exceed what is left of max_total_bytes "
                           "(%llu bytes); raise it with lwfm_load_options_set_max_total_bytes()",
                           outbytes, dt.kind == 'f' && dt.size == 2 ? " (float16 to float32)" : "",
                           (unsigned long long)lim->max_kept_bytes);
    n = (size_t)numel;

    /* Data: exactly numel * itemsize bytes must follow the header. */
    size_t avail = size - pre - hlen;
    if (avail != need) {
        if (avail < need)
            return lwfm__error(LWFM_ERR_FORMAT,
                               "truncated data: %zu bytes present, %zu expected for %zu "
                               "elements of '%s'",
                               avail, need, n, h.descr);
        return lwfm__error(LWFM_ERR_FORMAT, "%zu trailing bytes after the %zu bytes of array data",
                           avail - need, need);
    }
    const uint8_t *src = b + pre + hlen;

    /* Convert into a fresh, 64-byte-aligned buffer. */
    t->ndim = h.ndim;
    memcpy(t->shape, shape, sizeof shape);
    t->numel = n;
    memcpy(t->descr, h.descr, 4); /* 3 characters + NUL, checked by parse_descr */
    size_t name_len = strlen(name);
    t->name = lwfm__alloc(name_len + 1);
    if (dt.kind == 'f') {
        t->f32 = lwfm__alloc(outbytes);
    } else {
        t->ints = lwfm__alloc(outbytes ? outbytes : 1);
        t->int_size = dt.size;
    }
    if (!t->name || (!t->f32 && !t->ints)) {
        lwfm__tensor_free(t);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the array",
                           outbytes);
    }
    memcpy(t->name, name, name_len + 1);
    if (dt.kind == 'f') {
        st = convert_float(t->f32, src, n, dt);
    } else {
        st = check_int(src, n, dt);
        if (!st && n) memcpy(t->ints, src, outbytes);
    }
    if (st) lwfm__tensor_free(t);
    return st;
}
