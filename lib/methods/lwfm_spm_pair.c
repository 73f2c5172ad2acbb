/* LWFM-SPM's per-pair views: the LWE fuser (attention weights, attended
 * global similarity) and the SPM matcher (assignment correspondences and
 * matched similarities) for one (support, query) pair of feature maps.
 * They compute exactly what an episode computes for that pair. The public
 * handles are lib/pair.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "episode.h"
#include "methods/lwfm_spm.h"
#include "spm/assign.h"

#define COS_EPS 1e-8

/* Check the arguments shared by both pair calls (`capacity` elements per
 * (L, P) output), prepare the pair and its per-layer correlation matrices R
 * (L x P x P, R[a][b]). */
static lwfm_status prepare_pair(const lwfm_model *m, const float *sf, const float *qf,
                                int64_t channels, int64_t fh, int64_t fw, size_t capacity,
                                spm_prep **S, spm_prep **Q, float **R) {
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    lwfm_status st;
    *S = *Q = NULL;
    *R = NULL;
    if (capacity < (size_t)L * (size_t)P)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "output buffers hold %zu elements, layers x positions = %zu needed",
                           capacity, (size_t)L * (size_t)P);
    if ((st = lwfm__check_features(m, "support feature", sf, 1, channels, fh, fw)) ||
        (st = lwfm__check_features(m, "query feature", qf, 1, channels, fh, fw)))
        return st;
    if ((st = lwfm__lwfm_spm_prepare(m, sf, 1, m->layers.P, NULL, (lwfm__prep **)S))) return st;
    if ((st = lwfm__lwfm_spm_prepare(m, qf, 1, m->layers.P, NULL, (lwfm__prep **)Q))) goto fail;
    if (!(*R = lwfm__alloc((size_t)L * P * P * sizeof(float)))) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    for (int l = 0; l < L; l++)
        for (int a = 0; a < P; a++)
            for (int b = 0; b < P; b++) {
                const float *u = (*S)->U + (int64_t)a * C + ly->off[l];
                const float *v = (*Q)->U + (int64_t)b * C + ly->off[l];
                double dot = 0.0;
                for (int k = 0; k < ly->dim[l]; k++) dot += (double)u[k] * v[k];
                (*R)[((size_t)l * P + a) * P + b] = (float)dot;
            }
    return LWFM_OK;
fail:
    lwfm__prep_release((lwfm__prep *)*S);
    lwfm__prep_release((lwfm__prep *)*Q);
    *S = *Q = NULL;
    return st;
}

lwfm_status lwfm__lwfm_spm_lwe_pair(const lwfm_model *m, const float *support_feature,
                                    const float *query_feature, int64_t channels, int64_t fh,
                                    int64_t fw, float *support_weights, float *query_weights,
                                    size_t capacity, float *global_similarity) {
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    spm_prep *S, *Q;
    float *R;
    lwfm_status st =
        prepare_pair(m, support_feature, query_feature, channels, fh, fw, capacity, &S, &Q, &R);
    if (st) return st;
    /* results go to scratch first (all layers' weights): the outputs are
     * written only on success */
    const size_t lp = (size_t)L * P;
    float *work = lwfm__alloc((LWFM_LWE_WORK_FLOATS(P, 1) + 2 * lp) * sizeof(float) + 64 +
                              (size_t)2 * C * sizeof(double));
    if (!work) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    float *ws_all = work + LWFM_LWE_WORK_FLOATS(P, 1), *wq_all = ws_all + lp;
    /* pooled attended maps, in doubles after the floats (64-byte aligned) */
    size_t float_bytes = (LWFM_LWE_WORK_FLOATS(P, 1) + 2 * lp) * sizeof(float);
    double *ps = (double *)((char *)work + (float_bytes + 63) / 64 * 64), *pq = ps + C;
    for (int l = 0; l < L; l++) {
        float *ws = ws_all + (size_t)l * P, *wq = wq_all + (size_t)l * P;
        lwfm__lwe_attention(R + (size_t)l * P * P, P, P, (float)m->cfg.temperature_attn, ws, wq,
                            work);
        for (int k = ly->off[l]; k < ly->off[l] + ly->dim[l]; k++) {
            double s = 0.0, q = 0.0;
            for (int a = 0; a < P; a++) {
                s += (double)ws[a] * S->X[(int64_t)a * C + k];
                q += (double)wq[a] * Q->X[(int64_t)a * C + k];
            }
            ps[k] = s / P;
            pq[k] = q / P;
        }
    }
    double dot = 0.0, ns = 0.0, nq = 0.0;
    for (int k = 0; k < C; k++) {
        dot += ps[k] * pq[k];
        ns += ps[k] * ps[k];
        nq += pq[k] * pq[k];
    }
    double den = sqrt(ns) * sqrt(nq);
    float global = (float)(dot / (den > COS_EPS ? den : COS_EPS));
    if (!isfinite(global) || !lwfm__all_finite(ws_all, 2 * lp)) {
        st = lwfm__error(LWFM_ERR_NONFINITE,
                         "LWE pair: attention overflowed to NaN or infinity (feature values of "
                         "extreme magnitude)");
        goto done;
    }
    memcpy(support_weights, ws_all, lp * sizeof(float));
    memcpy(query_weights, wq_all, lp * sizeof(float));
    if (global_similarity) *global_similarity = global;
done:
    lwfm__free(work);
    lwfm__free(R);
    lwfm__prep_release((lwfm__prep *)S);
    lwfm__prep_release((lwfm__prep *)Q);
    return st;
}

lwfm_status lwfm__lwfm_spm_spm_pair(const lwfm_model *m, const float *support_feature,
                                    const float *query_feature, int64_t channels, int64_t fh,
                                    int64_t fw, int64_t *assignment, float *similarity,
                                    float *layer_scores, size_t capacity, float *score) {
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    spm_prep *S, *Q;
    float *R;
    lwfm_status st =
        prepare_pair(m, support_feature, query_feature, channels, fh, fw, capacity, &S, &Q, &R);
    if (st) return st;
    /* results go to scratch first: the outputs are written only on success */
    double *work =
        lwfm__alloc(lwfm__spm_work_doubles(P) * sizeof(double) +
                    (size_t)L * P * (sizeof(int) + sizeof(float)) + (size_t)L * sizeof(float));
    if (!work) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    int *sigma = (int *)(work + lwfm__spm_work_doubles(P));
    float *sim = (float *)(sigma + (size_t)L * P), *ls = sim + (size_t)L * P;
    double best = -INFINITY;
    for (int l = 0; l < L; l++) {
        double s = lwfm__spm_pair_score(
            R + (size_t)l * P * P, P, P, S->G + ly->off[l], S->gn + l, Q->G + ly->off[l], Q->gn + l,
            C, L, ly->dim[l], m->cfg.top_k, sigma + (size_t)l * P, sim + (size_t)l * P, work);
        s *= m->cfg.matcher_prob;
        /* finite inputs of extreme magnitude overflowed (in the score, or in a
         * matched similarity the top_k sum left out) */
        if (!isfinite(s) || !lwfm__all_finite(sim + (size_t)l * P, (size_t)P)) {
            st = lwfm__error(LWFM_ERR_NONFINITE,
                             "SPM pair: similarities overflowed to NaN or infinity (feature "
                             "values of extreme magnitude)");
            goto done;
        }
        best = s > best ? s : best;
        ls[l] = (float)s;
    }
    for (int l = 0; l < L; l++) {
        layer_scores[l] = ls[l];
        for (int a = 0; a < P; a++) {
            assignment[(size_t)l * P + a] = sigma[(size_t)l * P + a];
            similarity[(size_t)l * P + a] = sim[(size_t)l * P + a];
        }
    }
    if (score) *score = (float)best;
done:
    lwfm__free(work);
    lwfm__free(R);
    lwfm__prep_release((lwfm__prep *)S);
    lwfm__prep_release((lwfm__prep *)Q);
    return st;
}
