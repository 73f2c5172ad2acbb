/* DN4 image-to-class k-nearest-neighbour head (peers.md section 2).
 * Private to liblwfm. */
#ifndef LWFM_HEADS_DN4_H
#define LWFM_HEADS_DN4_H

#include <stdint.h>

#include "core/arena.h"
#include "lwfm/lwfm.h"

/* Prepared images: n of P unit descriptors each, U (n x P x C). */
typedef struct lwfm__dn4_side {
    int64_t n, P;
    float *U;
} lwfm__dn4_side;
/* One image: feat (C x P, as the backbone writes it) -> U (P x C), every
 * position's C-vector divided by max(|x|, 1e-12). Also MML's first step. */
void lwfm__dn4_prepare_image(const float *feat, int C, int64_t P, float *U);

/* Images in the smallest class. */
int64_t lwfm__fewest_in_class(const int64_t *count, int64_t way);

/* logits[q * way + c] = sum over query q's descriptors of the sum of their
 * neighbor_k largest cosines with class c's support descriptors
 * (lwfm__i2c_topk on the unit descriptors; per support image, averaged,
 * when the classes' image counts differ). */
lwfm_status lwfm__dn4_score(const lwfm_model *m, const lwfm__dn4_side *S, const int32_t *labels,
                            const int64_t *count, int64_t way, const lwfm__dn4_side *Q,
                            float *logits, lwfm__arena *arena);

#endif
