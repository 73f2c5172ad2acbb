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
 *
 * Classes of unequal size (count: images per class) are scored per image
 * instead: out[q * way + c] = mean over the images of class c of the same
 * sum taken against that image's vectors alone (needs k <= ms). Pooling the
 * vectors of all of a class's images favours the class with the most of
 * them (its k largest of more candidates are larger: a class of 5 images
 * against classes of 1 took 45 of 50 queries on photos); the mean of per-
 * image sums is on the scale of a one-image class whatever the count. With
 * equal counts the pooled measure is kept: it is the one the authors trained
 * (peers.md 2, 3.1, 3.2), and for one image per class the two coincide.
 * Parallel over queries; each thread multiplies cache-sized tiles (one query
 * against one support image) on oneDNN and folds them into per-vector,
 * per-class top-k lists at once, so no episode-sized matrix is formed.
 * Scratch comes from the arena's slot `slot`. */
lwfm_status lwfm__i2c_topk(dnnl_engine_t engine, const float *Qv, int64_t n_q, int64_t mq,
                           const float *Sv, int64_t n_s, int64_t ms, int64_t dim,
                           const int32_t *labels, const int64_t *count, int64_t way, int k,
                           double *out, lwfm__arena *arena, int slot);

/* Whether the classes' image counts differ (then scoring is per image). */
int lwfm__i2c_per_image(const int64_t *count, int64_t way);

/* Images whose vectors one top-k list draws from: those of the smallest
 * class, or one when unequal classes are scored per image. */
int64_t lwfm__i2c_images(const int64_t *count, int64_t way);

#endif
