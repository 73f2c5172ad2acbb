/* MML multi-level metric (peers.md section 3): pixel level (DN4 with its own
 * k), part level (top-k inner products of the columns of the row-normalised
 * descriptor matrix), distribution level (Gaussians of the raw descriptors:
 * the authors' Wasserstein surrogate, KL, or the exact 2-Wasserstein
 * distance) and the learned fusion layer. Private to liblwfm. */
#ifndef LWFM_HEADS_MML_H
#define LWFM_HEADS_MML_H

#include <stdint.h>

#include "core/arena.h"
#include "io/npz.h"
#include "lwfm/lwfm.h"

/* Prepared images (n of P positions each): U (n x P x C unit rows), V
 * (n x C x P: U transposed, the parts), mu (n x C) and scat (n x C x C). */
typedef struct lwfm__mml_side {
    int64_t n, P;
    float *U, *V;
    double *mu, *scat;
} lwfm__mml_side;

#define LWFM_MML_MAX_SLOTS 64

/* The fusion layer: BatchNorm1d over 3 * slots columns (eval mode), then
 * logit_c = w0 z_c + w1 z_{way+c} + w2 z_{2way+c}. */
typedef struct lwfm__mml {
    int slots; /* ways the layer was trained for (5 in the authors' checkpoints) */
    double gamma[3 * LWFM_MML_MAX_SLOTS], beta[3 * LWFM_MML_MAX_SLOTS];
    double mean[3 * LWFM_MML_MAX_SLOTS], var[3 * LWFM_MML_MAX_SLOTS];
    double w[3];
} lwfm__mml;

/* Load `classifier.Norm_layer.{weight,bias,running_mean,running_var}` (3n,)
 * and `classifier.FC_layer.weight` (1, 1, 3). */
lwfm_status lwfm__mml_load(lwfm__mml *h, const lwfm__archive *ar);

/* Per-image work for n feature maps (C x P each): U (P x C unit rows),
 * V (C x P: U transposed, the "parts"), mu (C) and the centred scatter
 * matrix (C x C, double). */
void lwfm__mml_prepare_image(const float *feat, int C, int64_t P, float *U, float *V, double *mu,
                             double *scatter);

/* Logits of the queries Q against the supports S. */
lwfm_status lwfm__mml_score(const lwfm_model *m, const lwfm__mml *h, const lwfm__mml_side *S,
                            const int32_t *labels, const int64_t *count, int64_t way,
                            const lwfm__mml_side *Q, float *logits, lwfm__arena *arena);

#endif
