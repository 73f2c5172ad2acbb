/* One NumPy .npy array (format versions 1.0, 2.0 and 3.0), parsed from a
 * complete in-memory copy of the member. Private to liblwfm; used by npz.c. */
#ifndef LWFM_IO_NPY_H
#define LWFM_IO_NPY_H

#include <stddef.h>

#include "io/npz.h"

/* Parse and validate `size` bytes at `data` into *t; t->name becomes a copy
 * of `name`. Float dtypes become float32 and must be finite; integer and
 * bool dtypes become int64. On failure returns the status, sets a detail
 * message without any source/member prefix (the caller adds it) and leaves
 * *t zeroed. */
lwfm_status lwfm__npy_parse(lwfm__tensor *t, const char *name, const void *data, size_t size,
                            const lwfm__npz_limits *lim);

/* Python-style shape text into buf: "()", "(5,)", "(64, 3, 7, 7)". */
void lwfm__format_shape(char *buf, size_t cap, const int64_t *shape, int ndim);

/* Free what a tensor owns and zero it. NULL is accepted. */
void lwfm__tensor_free(lwfm__tensor *t);

#endif
