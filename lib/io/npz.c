/* .npz reader on top of libzip (see docs/weight-format.md).
 *
 * Two passes over the zip directory. The first checks every member's name,
 * compression, encryption and declared size against the limits before any
 * data is decompressed, and rejects duplicate names. The second reads each
 * member into a buffer of exactly its declared size, checks that the stream
 * ends there (so a lying size field cannot overrun the buffer or inflate
 * without bound; reaching the end also makes libzip verify the CRC), and
 * hands the bytes to the .npy parser. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strerror_r returning char * on glibc */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "core/core.h"
#include "io/npy.h"
#include "io/npz.h"

#define NPZ_MAX_NAME LWFM_LIMIT_NPZ_NAME /* bytes in a member name, ".npy" included */
#define NPZ_RAISE_HINT "raise it with lwfm_load_options_set_max_total_bytes()"

void lwfm__npz_limits_default(lwfm__npz_limits *lim) {
    /* the public defaults (lwfm.h, "Resource limits") */
    lim->max_total_bytes = LWFM_LIMIT_NPZ_BYTES;
    lim->max_member_bytes = LWFM_LIMIT_NPZ_BYTES;
    lim->max_members = LWFM_LIMIT_NPZ_MEMBERS;
    lim->max_elements = LWFM_LIMIT_NPY_ELEMENTS;
    lim->max_kept_bytes = UINT64_MAX;
}

/* Where the archive comes from: a path, or a buffer when path is NULL. */
typedef struct npz_input {
    const char *path;
    const void *data;
    size_t size;
} npz_input;

typedef struct npz_entry {
    zip_uint64_t index;
    const char *name; /* owned by libzip, valid while the archive is open */
    size_t size;      /* declared decompressed size */
} npz_entry;

static int ends_with(const char *s, size_t len, const char *suffix) {
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

static const char *errno_text(int e, char *buf, size_t cap) {
#if defined(__GLIBC__)
    return strerror_r(e, buf, cap);
#else
    return strerror_r(e, buf, cap) == 0 ? buf : "unknown error";
#endif
}

/* Status for a libzip error code. */
static lwfm_status zip_status(int code) {
    switch (code) {
    case ZIP_ER_MEMORY:
        return LWFM_ERR_OUT_OF_MEMORY;
    case ZIP_ER_NOENT:
    case ZIP_ER_OPEN:
    case ZIP_ER_READ:
    case ZIP_ER_SEEK:
    case ZIP_ER_TELL:
        return LWFM_ERR_IO;
    case ZIP_ER_MULTIDISK:
    case ZIP_ER_COMPNOTSUPP:
    case ZIP_ER_ENCRNOTSUPP:
    case ZIP_ER_NOPASSWD:
        return LWFM_ERR_UNSUPPORTED;
    default:
        return LWFM_ERR_FORMAT; /* NOZIP, INCONS, CRC, EOF, ZLIB, ... */
    }
}

/* A file we can report on precisely (libzip only says "can't open"). */
static lwfm_status check_file(const char *path) {
    char eb[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* no blocking on FIFOs */
    if (fd < 0) {
        int e = errno;
        return lwfm__error(LWFM_ERR_IO, "%s: cannot open: %s", path, errno_text(e, eb, sizeof eb));
    }
    struct stat sb;
    int rc = fstat(fd, &sb), e = errno;
    close(fd);
    if (rc != 0)
        return lwfm__error(LWFM_ERR_IO, "%s: cannot stat: %s", path, errno_text(e, eb, sizeof eb));
    if (!S_ISREG(sb.st_mode)) return lwfm__error(LWFM_ERR_IO, "%s: not a regular file", path);
    return LWFM_OK;
}

static zip_t *open_zip(const npz_input *in, int flags, zip_error_t *err) {
    if (in->path) {
        int code = 0;
        zip_t *za = zip_open(in->path, flags, &code);
        if (!za) zip_error_set(err, code, 0);
        return za;
    }
    zip_source_t *src = zip_source_buffer_create(in->data, in->size, 0, err);
    if (!src) return NULL;
    zip_t *za = zip_open_from_source(src, flags, err);
    if (!za) zip_source_free(src); /* the archive owns src only on success */
    return za;
}

/* A declared decompressed size that the stored bytes cannot produce: stored
 * data has the same size; deflate expands at most 1032:1 (zlib's documented
 * bound: a 258-byte match coded in 2 bits). Rejecting these keeps a tiny
 * hostile file from making us allocate up to the member limit. */
static int impossible_size(const zip_stat_t *zs) {
    if (zs->comp_method == ZIP_CM_STORE) return zs->size != zs->comp_size;
    if (zs->comp_size > UINT64_MAX / 1032 - 1) return 0;
    return zs->size > (zs->comp_size + 1) * 1032;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const npz_entry *)a)->name, ((const npz_entry *)b)->name);
}

/* Pass 1: directory checks; fills a name-sorted list of the .npy members. */
static lwfm_status scan_entries(zip_t *za, const char *src, const lwfm__npz_limits *lim,
                                npz_entry **out, size_t *count) {
    const zip_uint64_t need = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE |
                              ZIP_STAT_COMP_METHOD | ZIP_STAT_ENCRYPTION_METHOD;
    lwfm_status st = LWFM_OK;
    uint64_t total = 0;
    size_t k = 0;

    *out = NULL;
    *count = 0;
    zip_int64_t n = zip_get_num_entries(za, 0);
    if (n < 0) return lwfm__error(LWFM_ERR_INTERNAL, "%s: cannot count zip members", src);
    if ((uint64_t)n > lim->max_members)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%s: archive has %lld members, more than max_members = %u "
                           "(LWFM_LIMIT_NPZ_MEMBERS)",
                           src,
                           (long long)n, (unsigned)lim->max_members);
    npz_entry *e = calloc(n ? (size_t)n : 1, sizeof *e);
    if (!e) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "%s: out of memory", src);

    for (zip_uint64_t i = 0; i < (zip_uint64_t)n && !st; i++) {
        zip_stat_t zs;
        zip_stat_init(&zs);
        if (zip_stat_index(za, i, 0, &zs) != 0) {
            st = lwfm__error(zip_status(zip_error_code_zip(zip_get_error(za))),
                             "%s: member #%llu: %s", src, (unsigned long long)i, zip_strerror(za));
            break;
        }
        if ((zs.valid & need) != need) {
            st = lwfm__error(LWFM_ERR_FORMAT, "%s: member #%llu: incomplete directory entry", src,
                             (unsigned long long)i);
            break;
        }
        const char *name = zs.name;
        size_t len = strnlen(name, NPZ_MAX_NAME + 1);
        if (len > NPZ_MAX_NAME) {
            st = lwfm__error(LWFM_ERR_FORMAT, "%s: member '%.64s...': name longer than %d bytes",
                             src, name, NPZ_MAX_NAME);
        } else if (len > 0 && name[len - 1] == '/') {
            if (zs.size != 0)
                st = lwfm__error(LWFM_ERR_FORMAT, "%s: directory entry '%s' has data", src, name);
            continue; /* a plain directory entry: nothing to load */
        } else if (len <= 4 || !ends_with(name, len, ".npy")) {
            st = lwfm__error(LWFM_ERR_FORMAT,
                             "%s: member '%s' is not a .npy array (only <name>.npy members are "
                             "allowed)",
                             src, name);
        } else if (zs.encryption_method != ZIP_EM_NONE) {
            st = lwfm__error(LWFM_ERR_UNSUPPORTED, "%s: member '%s' is encrypted", src, name);
        } else if (zs.comp_method != ZIP_CM_STORE && zs.comp_method != ZIP_CM_DEFLATE) {
            st = lwfm__error(LWFM_ERR_UNSUPPORTED,
                             "%s: member '%s': compression method %d is not supported (only "
                             "stored or deflate)",
                             src, name, (int)zs.comp_method);
        } else if (impossible_size(&zs)) {
            st = lwfm__error(LWFM_ERR_FORMAT,
                             "%s: member '%s': declared size of %llu bytes is impossible for %llu "
                             "%s bytes",
                             src, name, (unsigned long long)zs.size,
                             (unsigned long long)zs.comp_size,
                             zs.comp_method == ZIP_CM_STORE ? "stored" : "deflated");
        } else if (zs.size > lim->max_member_bytes || zs.size > SIZE_MAX) {
            st = lwfm__error(LWFM_ERR_LIMIT,
                             "%s: member '%s': decompressed size of %llu bytes exceeds "
                             "max_member_bytes = %llu; " NPZ_RAISE_HINT,
                             src, name, (unsigned long long)zs.size,
                             (unsigned long long)lim->max_member_bytes);
        } else if (__builtin_add_overflow(total, zs.size, &total) || total > lim->max_total_bytes) {
            st = lwfm__error(LWFM_ERR_LIMIT,
                             "%s: member '%s': total decompressed size of the archive exceeds "
                             "max_total_bytes = %llu; " NPZ_RAISE_HINT,
                             src, name, (unsigned long long)lim->max_total_bytes);
        } else {
            e[k].index = i;
            e[k].name = name;
            e[k].size = (size_t)zs.size;
            k++;
        }
    }
    if (!st && k == 0)
        st = lwfm__error(LWFM_ERR_FORMAT, "%s: archive contains no .npy arrays", src);
    if (!st) {
        qsort(e, k, sizeof *e, cmp_entry);
        for (size_t j = 1; j < k && !st; j++)
            if (strcmp(e[j - 1].name, e[j].name) == 0)
                st = lwfm__error(LWFM_ERR_FORMAT, "%s: duplicate member '%s'", src, e[j].name);
    }
    if (st) {
        free(e);
        return st;
    }
    *out = e;
    *count = k;
    return LWFM_OK;
}

/* Decompress one member into buf (exactly e->size bytes) and verify that the
 * stream ends there. */
static lwfm_status read_member(zip_t *za, const npz_entry *e, const char *src, uint8_t *buf) {
    zip_file_t *zf = zip_fopen_index(za, e->index, 0);
    if (!zf)
        return lwfm__error(zip_status(zip_error_code_zip(zip_get_error(za))), "%s: member '%s': %s",
                           src, e->name, zip_strerror(za));
    lwfm_status st = LWFM_OK;
    size_t got = 0;
    zip_int64_t r = 1;
    while (got < e->size && (r = zip_fread(zf, buf + got, e->size - got)) > 0) got += (size_t)r;
    if (r >= 0 && got < e->size) {
        st = lwfm__error(LWFM_ERR_FORMAT,
                         "%s: member '%s': truncated: data ends after %zu of %zu declared bytes",
                         src, e->name, got, e->size);
    } else if (r >= 0) {
        uint8_t extra;
        r = zip_fread(zf, &extra, 1); /* must be end of data; triggers the CRC check */
        if (r > 0)
            st = lwfm__error(LWFM_ERR_FORMAT,
                             "%s: member '%s': data is longer than its declared size of %zu bytes",
                             src, e->name, e->size);
    }
    if (r < 0) {
        int code = zip_error_code_zip(zip_file_get_error(zf));
        st = lwfm__error(zip_status(code), "%s: member '%s': %s%s", src, e->name,
                         code == ZIP_ER_CRC ? "data corrupted: " : "", zip_file_strerror(zf));
    }
    int crc = zip_fclose(zf);
    if (!st && crc != 0)
        st = lwfm__error(zip_status(crc), "%s: member '%s': error closing member (libzip %d)", src,
                         e->name, crc);
    return st;
}

/* Pass 2: read, parse and keep each member (except num_batches_tracked). */
static lwfm_status read_entries(zip_t *za, const npz_entry *e, size_t n, const char *src,
                                const lwfm__npz_limits *lim, lwfm__archive *ar) {
    ar->tensors = lwfm__calloc(n, sizeof *ar->tensors);
    if (!ar->tensors) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "%s: out of memory", src);
    /* What the archive keeps (converted arrays) counts against
     * max_total_bytes as well as what it inflates: at any time the load holds
     * at most the kept arrays plus one member's raw bytes, about twice the
     * limit (docs/weight-format.md). */
    uint64_t kept = 0;
    lwfm__npz_limits plim = *lim;
    for (size_t i = 0; i < n; i++) {
        plim.max_kept_bytes = lim->max_total_bytes - kept;
        uint8_t *buf = malloc(e[i].size ? e[i].size : 1);
        if (!buf)
            return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "%s: member '%s': cannot allocate %zu bytes",
                               src, e[i].name, e[i].size);
        lwfm_status st = read_member(za, &e[i], src, buf);
        if (!st) {
            char name[NPZ_MAX_NAME + 1];
            size_t len = strlen(e[i].name) - 4; /* drop ".npy" (checked in pass 1) */
            memcpy(name, e[i].name, len);
            name[len] = '\0';
            lwfm__tensor *t = &ar->tensors[ar->count];
            st = lwfm__npy_parse(t, name, buf, e[i].size, &plim);
            if (st) {
                lwfm__error_prefix(st, "%s: member '%s'", src, e[i].name);
            } else if (ends_with(name, len, "num_batches_tracked")) {
                lwfm__tensor_free(t); /* validated, but not needed */
            } else {
                kept += t->numel * (t->f32 ? sizeof(float) : (size_t)t->int_size);
                ar->count++;
            }
        }
        free(buf);
        if (st) return st;
    }
    return LWFM_OK;
}

/* libzip refuses duplicate names under ZIP_CHECKCONS without saying which;
 * reopen without the consistency check only to name the member. */
static lwfm_status duplicate_error(const npz_input *in, const char *src,
                                   const lwfm__npz_limits *lim) {
    zip_error_t zerr;
    npz_entry *entries;
    size_t n;
    lwfm_status st = LWFM_OK;
    zip_error_init(&zerr);
    zip_t *za = open_zip(in, ZIP_RDONLY, &zerr);
    zip_error_fini(&zerr);
    if (za) {
        st = scan_entries(za, src, lim, &entries, &n); /* names the duplicate */
        if (!st) free(entries);
        zip_discard(za);
    }
    if (!st) st = lwfm__error(LWFM_ERR_FORMAT, "%s: duplicate member names", src);
    return st;
}

static lwfm_status read_archive(lwfm__archive *out, const npz_input *in,
                                const lwfm__npz_limits *lim_in) {
    lwfm__npz_limits lim;
    lwfm__archive ar;
    npz_entry *entries = NULL;
    size_t n = 0;
    lwfm_status st;

    if (lim_in)
        lim = *lim_in;
    else
        lwfm__npz_limits_default(&lim);
    memset(&ar, 0, sizeof ar);
    snprintf(ar.source, sizeof ar.source, "%s", in->path ? in->path : "<memory>");
    const char *src = ar.source;

    if (in->path && (st = check_file(in->path))) return st;
    if (!in->path && in->size == 0)
        return lwfm__error(LWFM_ERR_FORMAT, "%s: not a zip archive (empty buffer)", src);

    zip_error_t zerr;
    zip_error_init(&zerr);
    zip_t *za = open_zip(in, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (!za) {
        int code = zip_error_code_zip(&zerr);
        if (code == ZIP_ER_EXISTS) {
            zip_error_fini(&zerr);
            return duplicate_error(in, src, &lim);
        }
        st = lwfm__error(zip_status(code), "%s: cannot open as a zip archive: %s", src,
                         zip_error_strerror(&zerr));
        zip_error_fini(&zerr);
        return st;
    }
    zip_error_fini(&zerr);

    st = scan_entries(za, src, &lim, &entries, &n);
    if (!st) st = read_entries(za, entries, n, src, &lim, &ar);
    free(entries);
    zip_discard(za); /* read-only: nothing to write back */
    if (st) {
        lwfm__archive_free(&ar);
        return st;
    }
    *out = ar;
    return LWFM_OK;
}

lwfm_status lwfm__npz_read_file(lwfm__archive *out, const char *path, const lwfm__npz_limits *lim) {
    if (!out) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "archive pointer is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "path is NULL");
    npz_input in = {path, NULL, 0};
    return read_archive(out, &in, lim);
}

lwfm_status lwfm__npz_read_memory(lwfm__archive *out, const void *data, size_t size,
                                  const lwfm__npz_limits *lim) {
    if (!out) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "archive pointer is NULL");
    memset(out, 0, sizeof *out);
    if (!data && size) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "data is NULL");
    npz_input in = {NULL, data, size};
    return read_archive(out, &in, lim);
}

void lwfm__archive_free(lwfm__archive *ar) {
    if (!ar) return;
    for (size_t i = 0; i < ar->count; i++) lwfm__tensor_free(&ar->tensors[i]);
    lwfm__free(ar->tensors);
    memset(ar, 0, sizeof *ar);
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */

const lwfm__tensor *lwfm__archive_find(const lwfm__archive *ar, const char *name) {
    if (!ar || !name) return NULL;
    for (size_t i = 0; i < ar->count; i++)
        if (strcmp(ar->tensors[i].name, name) == 0) return &ar->tensors[i];
    return NULL;
}

/* Common start of every accessor: argument checks and lookup. */
static lwfm_status lookup(const lwfm__archive *ar, const char *name, const void *out,
                          const lwfm__tensor **t) {
    if (!ar || !name || !out)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "NULL archive, name or output");
    *t = lwfm__archive_find(ar, name);
    if (!*t) return lwfm__error(LWFM_ERR_MISSING_KEY, "%s: missing tensor '%s'", ar->source, name);
    return LWFM_OK;
}

static lwfm_status wrong_dtype(const lwfm__archive *ar, const lwfm__tensor *t, const char *want) {
    return lwfm__error(LWFM_ERR_DTYPE, "%s: tensor '%s': expected %s, got dtype '%s'", ar->source,
                       t->name, want, t->descr);
}

static lwfm_status wrong_shape(const lwfm__archive *ar, const lwfm__tensor *t, const char *want) {
    char got[256];
    lwfm__format_shape(got, sizeof got, t->shape, t->ndim);
    return lwfm__error(LWFM_ERR_SHAPE, "%s: tensor '%s': expected %s, got shape %s", ar->source,
                       t->name, want, got);
}

lwfm_status lwfm__archive_get_f32(const lwfm__archive *ar, const char *name, int ndim,
                                  const int64_t *shape, const float **out) {
    const lwfm__tensor *t;
    lwfm_status st;
    if (ndim < 0 || ndim > LWFM_NPZ_MAX_NDIM || (ndim > 0 && !shape))
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "invalid expected shape for '%s'",
                           name ? name : "(null)");
    if ((st = lookup(ar, name, out, &t))) return st;
    if (!t->f32) return wrong_dtype(ar, t, "a float array");
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[256], got[256];
        lwfm__format_shape(want, sizeof want, shape, ndim);
        lwfm__format_shape(got, sizeof got, t->shape, t->ndim);
        return lwfm__error(LWFM_ERR_SHAPE, "%s: tensor '%s': expected shape %s, got %s", ar->source,
                           name, want, got);
    }
    *out = t->f32;
    return LWFM_OK;
}

lwfm_status lwfm__archive_get_int(const lwfm__archive *ar, const char *name, int64_t *out) {
    const lwfm__tensor *t;
    lwfm_status st;
    if ((st = lookup(ar, name, out, &t))) return st;
    if (!t->ints) return wrong_dtype(ar, t, "an integer or bool scalar");
    if (t->numel != 1) return wrong_shape(ar, t, "a scalar");
    *out = lwfm__tensor_int(t, 0);
    return LWFM_OK;
}

lwfm_status lwfm__archive_get_float(const lwfm__archive *ar, const char *name, double *out) {
    const lwfm__tensor *t;
    lwfm_status st;
    if ((st = lookup(ar, name, out, &t))) return st;
    if (t->numel != 1) return wrong_shape(ar, t, "a scalar");
    *out = t->f32 ? (double)t->f32[0] : (double)lwfm__tensor_int(t, 0);
    return LWFM_OK;
}

lwfm_status lwfm__archive_get_string(const lwfm__archive *ar, const char *name, char *buf,
                                     size_t cap) {
    const lwfm__tensor *t;
    lwfm_status st;
    if (cap == 0) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "zero-size string buffer");
    if ((st = lookup(ar, name, buf, &t))) return st;
    if (!t->ints || t->descr[1] != 'u' || t->descr[2] != '1')
        return wrong_dtype(ar, t, "an ASCII string stored as a uint8 array");
    if (t->ndim != 1) return wrong_shape(ar, t, "a 1-D uint8 array");
    if (t->numel >= cap)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%s: tensor '%s': string of %zu bytes is longer than %zu", ar->source,
                           name, t->numel, cap - 1);
    for (size_t i = 0; i < t->numel; i++)
        if (t->ints[i] < 0x20 || t->ints[i] > 0x7e)
            return lwfm__error(LWFM_ERR_FORMAT,
                               "%s: tensor '%s': byte %zu (value %d) is not printable ASCII",
                               ar->source, name, i, (int)t->ints[i]);
    for (size_t i = 0; i < t->numel; i++) buf[i] = (char)t->ints[i];
    buf[t->numel] = '\0';
    return LWFM_OK;
}

lwfm_status lwfm__archive_get_int_array(const lwfm__archive *ar, const char *name, int64_t *vals,
                                        size_t cap, size_t *n) {
    const lwfm__tensor *t;
    lwfm_status st;
    if (!vals && cap) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "NULL value buffer");
    if ((st = lookup(ar, name, n, &t))) return st;
    if (!t->ints) return wrong_dtype(ar, t, "an integer array");
    if (t->ndim > 1) return wrong_shape(ar, t, "a 1-D array");
    if (t->numel > cap)
        return lwfm__error(LWFM_ERR_LIMIT, "%s: tensor '%s': %zu values, at most %zu allowed",
                           ar->source, name, t->numel, cap);
    for (size_t i = 0; i < t->numel; i++) vals[i] = lwfm__tensor_int(t, i);
    *n = t->numel;
    return LWFM_OK;
}
