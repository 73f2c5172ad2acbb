/* NumPy .npz weight archives: a zip (stored or deflated members, zip64
 * allowed) of .npy arrays. Everything is validated before use; see
 * docs/weight-format.md. Private to liblwfm. */
#ifndef LWFM_IO_NPZ_H
#define LWFM_IO_NPZ_H

#include <stddef.h>
#include <stdint.h>

#include "lwfm/lwfm.h"

#define LWFM_NPZ_MAX_NDIM LWFM_LIMIT_NPY_NDIM

typedef struct lwfm__npz_limits {
    uint64_t max_total_bytes;  /* sum of decompressed member sizes (default 1 GiB) */
    uint64_t max_member_bytes; /* one decompressed member (default 1 GiB) */
    uint32_t max_members;      /* number of members (default 4096) */
    uint64_t max_elements;     /* elements of one array (default 2^28) */
    /* bytes the parsed arrays may still take once converted (float16 widened
     * to float32; integers are kept at their size): read_entries() counts
     * what the archive keeps against max_total_bytes (default: no bound) */
    uint64_t max_kept_bytes;
} lwfm__npz_limits;

void lwfm__npz_limits_default(lwfm__npz_limits *lim);

/* One array after loading. Floating dtypes (<f2 <f4 <f8, either byte order)
 * are converted to float32 into `f32`; integer and bool dtypes
 * (|b1 |i1 |u1 <i2 <u2 <i4 <u4 <i8 <u8, either byte order) are kept as
 * stored in `ints` (`int_size` bytes per element; read them with
 * lwfm__tensor_int(): widening every one to int64 up front cost 8x the
 * limit for bool arrays). Exactly one of f32/ints is non-NULL. */
typedef struct lwfm__tensor {
    char *name; /* member name without the ".npy" suffix */
    int ndim;   /* 0 for a scalar */
    int64_t shape[LWFM_NPZ_MAX_NDIM];
    size_t numel; /* product of shape (1 for a scalar) */
    float *f32;
    uint8_t *ints; /* integer / bool data as stored (validated) */
    int int_size;  /* bytes per element of `ints` */
    char descr[8]; /* original dtype descr, e.g. "<f2" */
} lwfm__tensor;

/* Element i of an integer / bool tensor as int64 (bool: 0 / 1). */
int64_t lwfm__tensor_int(const lwfm__tensor *t, size_t i);

typedef struct lwfm__archive {
    lwfm__tensor *tensors;
    size_t count;
    char source[256]; /* file name (or "<memory>") for error messages */
} lwfm__archive;

/* Read and validate a whole archive. On failure returns a specific status
 * with a detail message naming the source and member, and leaves *out
 * zeroed. `lim` may be NULL for defaults. */
lwfm_status lwfm__npz_read_file(lwfm__archive *out, const char *path, const lwfm__npz_limits *lim);
lwfm_status lwfm__npz_read_memory(lwfm__archive *out, const void *data, size_t size,
                                  const lwfm__npz_limits *lim);
void lwfm__archive_free(lwfm__archive *ar);

/* Lookup by exact name; NULL when absent. */
const lwfm__tensor *lwfm__archive_find(const lwfm__archive *ar, const char *name);

/* Float tensor `name` with exactly the given shape (ndim may be 0).
 * LWFM_ERR_MISSING_KEY / LWFM_ERR_SHAPE / LWFM_ERR_DTYPE (integer array where
 * a float one is needed) with a message naming the key and both shapes. */
lwfm_status lwfm__archive_get_f32(const lwfm__archive *ar, const char *name, int ndim,
                                  const int64_t *shape, const float **out);

/* Integer scalar (0-d or 1-element array; integer or bool dtype). */
lwfm_status lwfm__archive_get_int(const lwfm__archive *ar, const char *name, int64_t *out);
/* Float scalar (0-d or 1-element array; float or integer dtype). */
lwfm_status lwfm__archive_get_float(const lwfm__archive *ar, const char *name, double *out);
/* ASCII string stored as a 1-D uint8 array; NUL-terminated into buf. */
lwfm_status lwfm__archive_get_string(const lwfm__archive *ar, const char *name, char *buf,
                                     size_t cap);
/* 1-D integer array: copies up to `cap` values, *n receives the count
 * (fails with LWFM_ERR_LIMIT when more than cap). */
lwfm_status lwfm__archive_get_int_array(const lwfm__archive *ar, const char *name, int64_t *vals,
                                        size_t cap, size_t *n);

#endif
