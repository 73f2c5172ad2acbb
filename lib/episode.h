/* Per-image preparation shared by the episode pipeline and the per-pair
 * LWE / SPM handles. Private to liblwfm. */
#ifndef LWFM_EPISODE_H
#define LWFM_EPISODE_H

#include "model.h"

/* Images after the per-image steps of the metric. */
typedef struct side {
    int64_t n;
    float *X;  /* n x P x C: centred features, position-major */
    float *U;  /* n x P x C: per-layer unit vectors */
    float *G;  /* n x P x C: g_l(X) (SPM only) */
    float *gn; /* n x P x L: |g_l| (SPM only) */
} side;

static inline int lwfm__spm_on(const lwfm_model *m) {
    return m->cfg.matcher_prob > 0;
}

/* Centring, unit vectors and (with SPM) the matcher MLP for n feature maps
 * (n x C x P, validated). */
lwfm_status lwfm__side_prepare(const lwfm_model *m, const float *feats, int64_t n, side *out);
void lwfm__side_free(side *s);

/* Caller-given feature maps: NULL, count, the model's (C, fs, fs), finite. */
lwfm_status lwfm__check_features(const lwfm_model *m, const char *what, const float *f, int64_t n,
                                 int64_t C, int64_t fh, int64_t fw);

#endif
