/* Per-pair inspection handles: the LWE fuser and the SPM matcher
 * (lwfm_lwe_*, lwfm_spm_*) and the RCN region comparison (lwfm_rcn_*) for
 * one (support, query) pair of feature maps. A handle is a counted reference
 * to a model whose method offers the view (its entry in the method table,
 * lib/methods); the computation is the method's own. */
#include <stdlib.h>

#include "core/core.h"
#include "methods/method.h"
#include "model.h"

struct lwfm_lwe {
    lwfm_model *model;
};

struct lwfm_spm {
    lwfm_model *model;
};

struct lwfm_rcn {
    lwfm_model *model;
};

/* Whether the model's method offers view `kind` and this model can give it. */
static lwfm_status check_view(const lwfm_model *m, lwfm__pair_kind kind, const char *what) {
    if (!lwfm__method_offers(m->method, kind)) {
        const lwfm__method *owner = lwfm__method_offering(kind);
        return lwfm__error(LWFM_ERR_WRONG_KIND, "%s needs an %s model, this one is '%s'", what,
                           owner ? owner->name : "other", m->method->name);
    }
    return m->method->pair_ready ? m->method->pair_ready(m, kind) : LWFM_OK;
}

/* Every handle is a counted reference to its model. */
static lwfm_status handle_new(void **out, lwfm_model *model, lwfm__pair_kind kind,
                              const char *what) {
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    lwfm_status st = check_view(model, kind, what);
    if (st) return st;
    lwfm_model **h = calloc(1, sizeof *h);
    if (!h) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm__model_retain(model);
    *h = model;
    *out = h;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_lwe_create(lwfm_lwe **out, lwfm_model *model) {
    return handle_new((void **)out, model, LWFM_PAIR_LWE, "the LWE fuser");
}

LWFM_API lwfm_status lwfm_spm_create(lwfm_spm **out, lwfm_model *model) {
    return handle_new((void **)out, model, LWFM_PAIR_SPM, "the SPM matcher");
}

LWFM_API lwfm_status lwfm_rcn_create(lwfm_rcn **out, lwfm_model *model) {
    return handle_new((void **)out, model, LWFM_PAIR_RCN, "the region comparison");
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

LWFM_API void lwfm_rcn_destroy(lwfm_rcn *rcn) {
    if (!rcn) return;
    lwfm__model_release(rcn->model);
    free(rcn);
}

LWFM_API int64_t lwfm_model_layers(const lwfm_model *model) {
    return model ? model->layers.n : 0;
}

LWFM_API lwfm_status lwfm_lwe_pair(const lwfm_lwe *lwe, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, float *support_weights, float *query_weights,
                                   size_t capacity, float *global_similarity) {
    lwfm__error_clear();
    if (!lwe || !support_weights || !query_weights)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "lwe or an output is NULL");
    return lwe->model->method->lwe_pair(lwe->model, support_feature, query_feature, channels, fh,
                                        fw, support_weights, query_weights, capacity,
                                        global_similarity);
}

LWFM_API lwfm_status lwfm_spm_pair(const lwfm_spm *spm, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, int64_t *assignment, float *similarity,
                                   float *layer_scores, size_t capacity, float *score) {
    lwfm__error_clear();
    if (!spm || !assignment || !similarity || !layer_scores)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "spm or an output is NULL");
    return spm->model->method->spm_pair(spm->model, support_feature, query_feature, channels, fh,
                                        fw, assignment, similarity, layer_scores, capacity, score);
}

LWFM_API lwfm_status lwfm_rcn_pair(const lwfm_rcn *rcn, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, float *similarity, int64_t *match, float *weight,
                                   size_t capacity, float *score) {
    lwfm__error_clear();
    if (!rcn || !similarity || !match || !weight)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "rcn or an output is NULL");
    return rcn->model->method->rcn_pair(rcn->model, support_feature, query_feature, channels, fh,
                                        fw, similarity, match, weight, capacity, score);
}
