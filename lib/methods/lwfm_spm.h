/* LWFM-SPM's prepared images, shared by its scoring (lwfm_spm.c) and its
 * per-pair views (lwfm_spm_pair.c). Private to lib/methods. */
#ifndef LWFM_METHODS_LWFM_SPM_H
#define LWFM_METHODS_LWFM_SPM_H

#include "methods/method.h"
#include "model.h"
#include "spm/matcher.h"

typedef struct spm_prep {
    lwfm__prep_mem mem;
    int64_t n;
    int64_t P; /* positions per image */
    float *X;  /* n x P x C: centred features, position-major */
    float *U;  /* n x P x C: per-layer unit vectors */
    float *G;  /* n x P x C: g_l(X) (SPM only) */
    float *gn; /* n x P x L: |g_l| (SPM only) */
} spm_prep;

/* Whether the model's SPM branch is on (matcher_prob > 0). */
static inline int lwfm__spm_on(const lwfm_model *m) {
    return m->cfg.matcher_prob > 0;
}

/* The method's weights: the learnable matcher (zero when SPM is off). */
static inline const lwfm__matcher *lwfm__spm_matcher(const lwfm_model *m) {
    return (const lwfm__matcher *)m->weights;
}

lwfm_status lwfm__lwfm_spm_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                                   lwfm__arena *arena, lwfm__prep **out);

lwfm_status lwfm__lwfm_spm_lwe_pair(const lwfm_model *m, const float *sf, const float *qf,
                                    int64_t channels, int64_t fh, int64_t fw,
                                    float *support_weights, float *query_weights, size_t capacity,
                                    float *global_similarity);
lwfm_status lwfm__lwfm_spm_spm_pair(const lwfm_model *m, const float *sf, const float *qf,
                                    int64_t channels, int64_t fh, int64_t fw, int64_t *assignment,
                                    float *similarity, float *layer_scores, size_t capacity,
                                    float *score);

#endif
