/* LWE: the layer-wise embedding fuser of LWFM-SPM (spec section 3, steps
 * 1-6). Kernels over plain arrays; the episode pipeline (episode.c) and the
 * public lwfm_lwe handle call them. Private to liblwfm. */
#ifndef LWFM_LWE_H
#define LWFM_LWE_H

#include <stdint.h>

#include "config.h"

/* feature_size <= 64 (checked at load), so at most 64 * 64 positions */
#define LWFM_MAX_POSITIONS 4096

/* The tapped layers of a feature map: layer l owns channels
 * [off[l], off[l] + dim[l]) of C; P positions per image. */
typedef struct lwfm__layers {
    int n;
    int off[LWFM_MAX_TAPS];
    int dim[LWFM_MAX_TAPS];
    int C;
    int P;
} lwfm__layers;

/* Steps 1-2 for one image. feat: (C, P) as the backbone writes it.
 * X (P x C, position-major): centred features (channel mean per position
 * subtracted). U (P x C): X with each layer's slice of each position divided
 * by sqrt(sum of squares + 1e-6). */
void lwfm__lwe_prepare_image(const lwfm__layers *ly, const float *feat, float *X, float *U);

/* Steps 3-4 for one pair and layer. R[a * ldr + b] is the correlation of
 * support position a with query position b (P x P). Writes the support
 * weights ws[a] = sum_b softmax_a(Rs / t)[a, b] and the query weights
 * wq[b] = sum_a softmax_b(Rq / t)[a, b]. work: LWFM_LWE_WORK_FLOATS(P, 1). */
#define LWFM_LWE_WORK_FLOATS(P, n_pairs) ((size_t)(P) * (P) * ((n_pairs) + 1))
void lwfm__lwe_attention(const float *R, int64_t ldr, int P, float t_attn, float *ws, float *wq,
                         float *work);

/* Steps 3-4 for n_pairs pairs of one layer at once (one query against
 * several supports), their P x P blocks side by side in two layouts:
 * Rs[a * lds + i * P + b] (support position-major) and
 * Rq[b * ldq + i * P + a] (query position-major) both hold pair i's
 * correlation of support position a with query position b. Writes
 * ws[i * P + a] and wq[i * P + b] as lwfm__lwe_attention does for each pair.
 * work: LWFM_LWE_WORK_FLOATS(P, n_pairs). */
void lwfm__lwe_attention_blocks(const float *Rq, int64_t ldq, const float *Rs, int64_t lds, int P,
                                int n_pairs, float t_attn, float *ws, float *wq, float *work);

#endif
