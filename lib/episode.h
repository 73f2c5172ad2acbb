/* Per-image preparation shared by the episode pipeline and the per-pair
 * LWE / SPM handles. Private to liblwfm. */
#ifndef LWFM_EPISODE_H
#define LWFM_EPISODE_H

#include "model.h"

/* Images after the per-image steps of the metric. */
typedef struct side {
    int64_t n;
    int64_t P; /* positions per image */
    float *X;  /* n x P x C: centred features, position-major */
    float *U;  /* n x P x C: per-layer unit vectors */
    float *G;  /* n x P x C: g_l(X) (SPM only) */
    float *gn; /* n x P x L: |g_l| (SPM only) */
    float *V;      /* MML: n x C x P, U transposed (the parts) */
    double *mu;    /* MML: n x C descriptor means */
    double *scat;  /* MML: n x C x C centred scatter matrices */
    int owned; /* buffers are the side's own (else they belong to an arena) */
} side;

static inline int lwfm__spm_on(const lwfm_model *m) {
    return m->cfg.matcher_prob > 0;
}

/* Per-image work for n feature maps (n x C x P, validated): LWFM-SPM:
 * centring, unit vectors and (with SPM) the matcher MLP; DN4: unit
 * descriptors (U only); MML: U, V, mu, scat. With an arena the buffers are its slots 0-4 (valid
 * until the arena is reused); without, the side owns them. */
lwfm_status lwfm__side_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                               side *out, lwfm__arena *arena);

/* Arena slots used by the episode pipeline (0-4: side_prepare). */
enum { LWFM_SLOT_R = 5, LWFM_SLOT_PAIRS, LWFM_SLOT_LOGITS, LWFM_SLOT_FEATS, LWFM_SLOT_LEVELS };
void lwfm__side_free(side *s);

/* Caller-given feature maps: NULL, count, the model's (C, fs, fs), finite. */
lwfm_status lwfm__check_features(const lwfm_model *m, const char *what, const float *f, int64_t n,
                                 int64_t C, int64_t fh, int64_t fw);

#endif
