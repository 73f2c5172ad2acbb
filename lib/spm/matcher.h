/* SPM: the semantic-pixel matcher of LWFM-SPM (spec section 3, step 7):
 * the learnable matcher g_l and the per-pair assignment score. Private. */
#ifndef LWFM_SPM_MATCHER_H
#define LWFM_SPM_MATCHER_H

#include <stdint.h>

#include "io/npz.h"
#include "lwe/lwe.h"

typedef struct lwfm__matcher {
    int learnable;            /* 0: g is the identity */
    int hid[LWFM_MAX_TAPS];   /* d_l / 2 */
    float *w1[LWFM_MAX_TAPS]; /* W1^T (d x hid) in panels (core/panel_gemm.h) */
    float *w2[LWFM_MAX_TAPS]; /* W2^T (hid x d) in panels */
} lwfm__matcher;

/* Load `matchers.{l}.linear.0.weight` (d/2, d) and `.linear.2.weight`
 * (d, d/2) for every layer when learnable. */
lwfm_status lwfm__matcher_load(lwfm__matcher *m, const lwfm__archive *ar, const lwfm__layers *ly,
                               int learnable);
void lwfm__matcher_free(lwfm__matcher *m);

/* Floats of scratch lwfm__matcher_apply needs (a step's hidden activations
 * per OpenMP thread; independent of the image count and size). */
size_t lwfm__matcher_tmp_floats(const lwfm__matcher *m, const lwfm__layers *ly);

/* G = g_l(X) on each layer's slice of the n x P position vectors of n
 * images (row stride C, as lwfm__lwe_prepare_image lays them out);
 * gnorm[r * L + l] = |G_l(r)|. An image's results depend on that image
 * alone (not on n, its place among them or the thread count). */
void lwfm__matcher_apply(const lwfm__matcher *m, const lwfm__layers *ly, int64_t n, int64_t P,
                         const float *X, float *G, float *gnorm, float *tmp);

/* Step 7 for one pair and one layer: assignment on the cost 1 - R (R as in
 * lwfm__lwe_attention), then c_a = cos(g(u_a), g(v_sigma(a))) and the sum of
 * the top_k largest c_a (returned). Gs/Gq point at the layer's slice of the
 * support / query position rows (stride ldg), ns/nq at their norms (stride
 * nstride). sigma (P ints) and sim (P floats, may be NULL) receive the
 * assignment and the c_a. work: lwfm__spm_work_doubles(P) doubles. */
size_t lwfm__spm_work_doubles(int P);
double lwfm__spm_pair_score(const float *R, int64_t ldr, int P, const float *Gs, const float *ns,
                            const float *Gq, const float *nq, int64_t ldg, int64_t nstride, int d,
                            int top_k, int *sigma, float *sim, double *work);

#endif
