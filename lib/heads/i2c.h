/* Image-to-class top-k sums: the kernel shared by DN4's image-to-class
 * measure and MML's pixel and part levels (peers.md sections 2, 3.1, 3.2).
 * Private to liblwfm. */
#ifndef LWFM_HEADS_I2C_H
#define LWFM_HEADS_I2C_H

#include <dnnl.h>
#include <stdint.h>

#include "core/arena.h"
#include "lwfm/lwfm.h"

/* Each image is a set of vectors: the query side is n_q images of mq
 * vectors, the support side n_s images of ms vectors, all of dimension dim,
 * stored image after image, vector after vector (row-major).
 * out[q * way + c] = sum over query q's vectors of the sum of their k largest
 * inner products with the vectors of all support images labelled c.
 * Needs k <= ms * (images of the smallest class), checked by the caller.
 * Parallel over queries; each thread multiplies cache-sized tiles (one query
 * against one support image) on oneDNN and folds them into per-vector,
 * per-class top-k lists at once, so no episode-sized matrix is formed.
 * Scratch comes from the arena's slot `slot`. */
lwfm_status lwfm__i2c_topk(dnnl_engine_t engine, const float *Qv, int64_t n_q, int64_t mq,
                           const float *Sv, int64_t n_s, int64_t ms, int64_t dim,
                           const int32_t *labels, int64_t way, int k, double *out,
                           lwfm__arena *arena, int slot);

#endif
