/* Per-pair inspection handles: the LWE fuser (attention weights, attended
 * global similarity) and the SPM matcher (Hungarian correspondences and
 * matched similarities) for one (support, query) pair of feature maps.
 * They compute exactly what an episode computes for that pair, and let a
 * user see why a query was matched to a class. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "episode.h"

#define COS_EPS 1e-8

struct lwfm_lwe {
    lwfm_model *model;
};

struct lwfm_spm {
    lwfm_model *model;
};

static lwfm_status check_lwfm(const lwfm_model *m, const char *what) {
    if (m->cfg.method != LWFM_METHOD_LWFM_SPM)
        return lwfm__error(LWFM_ERR_WRONG_KIND, "%s needs an lwfm-spm model, this one is '%s'",
                           what, lwfm__method_name(m->cfg.method));
    return LWFM_OK;
}

/* Both handles are a counted reference to an LWFM-SPM model. */
static lwfm_status handle_new(void **out, lwfm_model *model, const char *what, int need_spm) {
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    lwfm_status st = check_lwfm(model, what);
    if (st) return st;
    if (need_spm && !lwfm__spm_on(model))
        return lwfm__error(LWFM_ERR_WRONG_KIND,
                           "this model has SPM switched off (matcher_prob = 0): no matcher");
    lwfm_model **h = calloc(1, sizeof *h);
    if (!h) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm__model_retain(model);
    *h = model;
    *out = h;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_lwe_create(lwfm_lwe **out, lwfm_model *model) {
    return handle_new((void **)out, model, "the LWE fuser", 0);
}

LWFM_API lwfm_status lwfm_spm_create(lwfm_spm **out, lwfm_model *model) {
    return handle_new((void **)out, model, "the SPM matcher", 1);
}

LWFM_API void lwfm_lwe_destroy(lwfm_lwe *lwe) {
    if (!lwe) return;
    lwfm__model_release(lwe->model);
    free(lwe);
}

LWFM_API void lwfm_spm_destroy(lwfm_spm *spm) {
    if (!spm) return;
    lwfm__model_release(spm->model);
    free(spm);
}

LWFM_API int64_t lwfm_model_layers(const lwfm_model *model) {
    return model ? model->layers.n : 0;
}

/* Check the arguments shared by both pair calls (`capacity` elements per
 * (L, P) output), prepare the pair and its per-layer correlation matrices R
 * (L x P x P, R[a][b]). */
static lwfm_status prepare_pair(const lwfm_model *m, const float *sf, const float *qf,
                                int64_t channels, int64_t fh, int64_t fw, size_t capacity, side *S,
                                side *Q, float **R) {
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    lwfm_status st;
    memset(S, 0, sizeof *S);
    memset(Q, 0, sizeof *Q);
    *R = NULL;
    if (capacity < (size_t)L * (size_t)P)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "output buffers hold %zu elements, layers x positions = %zu needed",
                           capacity, (size_t)L * (size_t)P);
    if ((st = lwfm__check_features(m, "support feature", sf, 1, channels, fh, fw)) ||
        (st = lwfm__check_features(m, "query feature", qf, 1, channels, fh, fw)))
        return st;
    if ((st = lwfm__side_prepare(m, sf, 1, m->layers.P, S, NULL))) return st;
    if ((st = lwfm__side_prepare(m, qf, 1, m->layers.P, Q, NULL))) goto fail;
    if (!(*R = lwfm__alloc((size_t)L * P * P * sizeof(float)))) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    for (int l = 0; l < L; l++)
        for (int a = 0; a < P; a++)
            for (int b = 0; b < P; b++) {
                const float *u = S->U + (int64_t)a * C + ly->off[l];
                const float *v = Q->U + (int64_t)b * C + ly->off[l];
                double dot = 0.0;
                for (int k = 0; k < ly->dim[l]; k++) dot += (double)u[k] * v[k];
                (*R)[((size_t)l * P + a) * P + b] = (float)dot;
            }
    return LWFM_OK;
fail:
    lwfm__side_free(S);
    lwfm__side_free(Q);
    return st;
}

LWFM_API lwfm_status lwfm_lwe_pair(const lwfm_lwe *lwe, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, float *support_weights, float *query_weights,
                                   size_t capacity, float *global_similarity) {
    lwfm__error_clear();
    if (!lwe || !support_weights || !query_weights)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "lwe or an output is NULL");
    const lwfm_model *m = lwe->model;
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    side S, Q;
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
                s += (double)ws[a] * S.X[(int64_t)a * C + k];
                q += (double)wq[a] * Q.X[(int64_t)a * C + k];
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
    lwfm__side_free(&S);
    lwfm__side_free(&Q);
    return st;
}

LWFM_API lwfm_status lwfm_spm_pair(const lwfm_spm *spm, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, int64_t *assignment, float *similarity,
                                   float *layer_scores, size_t capacity, float *score) {
    lwfm__error_clear();
    if (!spm || !assignment || !similarity || !layer_scores)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "spm or an output is NULL");
    const lwfm_model *m = spm->model;
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    side S, Q;
    float *R;
    lwfm_status st =
        prepare_pair(m, support_feature, query_feature, channels, fh, fw, capacity, &S, &Q, &R);
    if (st) return st;
    /* results go to scratch first: the outputs are written only on success */
    double *work = lwfm__alloc(lwfm__spm_work_doubles(P) * sizeof(double) +
                               (size_t)L * P * (sizeof(int) + sizeof(float)) +
                               (size_t)L * sizeof(float));
    if (!work) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    int *sigma = (int *)(work + lwfm__spm_work_doubles(P));
    float *sim = (float *)(sigma + (size_t)L * P), *ls = sim + (size_t)L * P;
    double best = -INFINITY;
    for (int l = 0; l < L; l++) {
        double s = lwfm__spm_pair_score(R + (size_t)l * P * P, P, P, S.G + ly->off[l], S.gn + l,
                                        Q.G + ly->off[l], Q.gn + l, C, L, ly->dim[l], m->cfg.top_k,
                                        sigma + (size_t)l * P, sim + (size_t)l * P, work);
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
    lwfm__side_free(&S);
    lwfm__side_free(&Q);
    return st;
}

/* ------------------------------------------------------------------------ */
/* RCN                                                                      */

struct lwfm_rcn {
    lwfm_model *model;
};

LWFM_API lwfm_status lwfm_rcn_create(lwfm_rcn **out, lwfm_model *model) {
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    if (model->cfg.method != LWFM_METHOD_RCN)
        return lwfm__error(LWFM_ERR_WRONG_KIND,
                           "the region comparison needs an rcn model, this one is '%s'",
                           lwfm__method_name(model->cfg.method));
    if (model->cfg.bn_batch)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "this rcn model uses batch-statistics BatchNorm (config batch_norm "
                           "'batch'): a pair's region weights depend on its whole query batch, "
                           "so there is no per-pair view; use the model with batch_norm "
                           "'running'");
    lwfm_rcn *h = calloc(1, sizeof *h);
    if (!h) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm__model_retain(model);
    h->model = model;
    *out = h;
    return LWFM_OK;
}

LWFM_API void lwfm_rcn_destroy(lwfm_rcn *rcn) {
    if (!rcn) return;
    lwfm__model_release(rcn->model);
    free(rcn);
}

LWFM_API lwfm_status lwfm_rcn_pair(const lwfm_rcn *rcn, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, float *similarity, int64_t *match, float *weight,
                                   size_t capacity, float *score) {
    lwfm__error_clear();
    if (!rcn || !similarity || !match || !weight)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "rcn or an output is NULL");
    const lwfm_model *m = rcn->model;
    lwfm_status st;
    if ((st = lwfm__check_features(m, "support feature", support_feature, 1, channels, fh, fw)) ||
        (st = lwfm__check_features(m, "query feature", query_feature, 1, channels, fh, fw)))
        return st;
    const int64_t P = fh * fw;
    if (capacity < (size_t)P)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "output buffers hold %zu elements, %lld regions", capacity,
                           (long long)P);
    side S, Q;
    memset(&S, 0, sizeof S);
    memset(&Q, 0, sizeof Q);
    float *scratch = NULL, *sim = NULL, *w = NULL;
    int *mt = NULL;
    if ((st = lwfm__side_prepare(m, support_feature, 1, P, &S, NULL)) ||
        (st = lwfm__side_prepare(m, query_feature, 1, P, &Q, NULL)))
        goto done;
    scratch = lwfm__alloc(lwfm__rcn_pair_floats(m, P) * sizeof(float));
    sim = lwfm__alloc((size_t)P * sizeof(float));
    w = lwfm__alloc((size_t)P * sizeof(float));
    mt = lwfm__alloc((size_t)P * sizeof(int));
    if (!scratch || !sim || !w || !mt) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    double e = lwfm__rcn_pair(m, &S, 0, &Q, 0, sim, mt, w, scratch);
    if (!isfinite(e) || !lwfm__all_finite(sim, (size_t)P) || !lwfm__all_finite(w, (size_t)P)) {
        st = lwfm__error(LWFM_ERR_NONFINITE,
                         "RCN pair: similarities or weights overflowed to NaN or infinity "
                         "(feature values of extreme magnitude)");
        goto done;
    }
    /* outputs written only now, on success */
    for (int64_t r = 0; r < P; r++) {
        similarity[r] = sim[r];
        weight[r] = w[r];
        match[r] = mt[r];
    }
    if (score) *score = (float)e;
done:
    lwfm__free(scratch);
    lwfm__free(sim);
    lwfm__free(w);
    lwfm__free(mt);
    lwfm__side_free(&S);
    lwfm__side_free(&Q);
    return st;
}
