/* RCN (peers.md section 4): region similarities weighted by a meta-learner,
 * and its per-pair view (lwfm_rcn_pair). The kernels are lib/heads/rcn.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/profile.h"
#include "episode.h"
#include "heads/rcn.h"
#include "methods/method.h"
#include "model.h"

typedef struct rcn_prep {
    lwfm__prep_mem mem;
    lwfm__rcn_side s;
} rcn_prep;

static lwfm_status rcn_load(const lwfm_model *m, const lwfm__archive *ar, void **weights) {
    lwfm__rcn *h = calloc(1, sizeof *h);
    if (!h) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm_status st = lwfm__rcn_load(h, ar, m->layers.C, m->cfg.bn_batch);
    *weights = h; /* rcn_free releases what a failed load left */
    return st;
}

static void rcn_free(void *weights) {
    if (!weights) return;
    lwfm__rcn_free(weights);
    free(weights);
}

static int rcn_config_key(const lwfm__config *c, const char *key) {
    return !strcmp(key, "batch_norm") || (!strcmp(key, "query_batch") && c->bn_batch);
}

/* Per image: regions X (P x C), the meta-learner's first layer on the
 * support side A and query side B (P x out0 each), region norms (P). */
static void rcn_layout(const lwfm_model *m, int64_t n, int64_t P, lwfm__prep_layout *out) {
    (void)n;
    const lwfm__rcn *h = m->weights;
    const size_t C = (size_t)m->layers.C, o0 = (size_t)h->out[0], p = (size_t)P;
    *out = (lwfm__prep_layout){.struct_bytes = sizeof(rcn_prep),
                               .n_image_buf = 4,
                               .image_bytes = {p * C * sizeof(float), p * o0 * sizeof(float),
                                               p * o0 * sizeof(float), p * sizeof(float)},
                               .type = {'f', 'f', 'f', 'f'}};
}

static void rcn_bind(lwfm__prep *prep) {
    rcn_prep *p = (rcn_prep *)prep;
    p->s = (lwfm__rcn_side){.n = p->mem.n,
                            .P = p->mem.P,
                            .X = p->mem.buf[0],
                            .A = p->mem.buf[1],
                            .B = p->mem.buf[2],
                            .norm = p->mem.buf[3]};
}

static lwfm_status rcn_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                               lwfm__arena *arena, lwfm__prep **out) {
    double tp = LWFM_PROF_T0();
    rcn_prep *p = (rcn_prep *)lwfm__prep_make(m, n, P, arena);
    if (!p) return LWFM_ERR_OUT_OF_MEMORY;
    lwfm_status st = lwfm__rcn_prepare(m, m->weights, feats, n, P, &p->s);
    if (st)
        lwfm__prep_release((lwfm__prep *)p);
    else
        *out = (lwfm__prep *)p;
    LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
    return st;
}

static lwfm_status rcn_score(const lwfm_model *m, const lwfm__prep *S, const int32_t *labels,
                             const int64_t *count, int64_t way, const lwfm__prep *Q, float *logits,
                             lwfm__arena *arena) {
    double tp = LWFM_PROF_T0();
    lwfm_status st = lwfm__rcn_score(m, m->weights, &((const rcn_prep *)S)->s, labels, count, way,
                                     &((const rcn_prep *)Q)->s, logits, arena);
    LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
    return st;
}

/* Batch-statistics BatchNorm (peers.md 4.7): the backbone sees the queries
 * in batches of cfg.query_batch, each its own BatchNorm batch. */
static int64_t rcn_query_batch(const lwfm_model *m) {
    return m->cfg.bn_batch ? m->cfg.query_batch : 0;
}

static lwfm_status rcn_pair_ready(const lwfm_model *m, lwfm__pair_kind kind) {
    (void)kind;
    if (m->cfg.bn_batch)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "this rcn model uses batch-statistics BatchNorm (config batch_norm "
                           "'batch'): a pair's region weights depend on its whole query batch, "
                           "so there is no per-pair view; use the model with batch_norm "
                           "'running'");
    return LWFM_OK;
}

/* One pair's region similarities, matches and weights into scratch, copied
 * to the outputs only on success. */
static lwfm_status pair_outputs(const lwfm_model *m, const rcn_prep *S, const rcn_prep *Q,
                                int64_t P, float *similarity, int64_t *match, float *weight,
                                float *score) {
    const lwfm__rcn *h = m->weights;
    lwfm_status st = LWFM_OK;
    float *scratch = lwfm__alloc(lwfm__rcn_pair_floats(h, P) * sizeof(float));
    float *sim = lwfm__alloc((size_t)P * sizeof(float));
    float *w = lwfm__alloc((size_t)P * sizeof(float));
    int *mt = lwfm__alloc((size_t)P * sizeof(int));
    if (!scratch || !sim || !w || !mt) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    double e = lwfm__rcn_pair(m, h, &S->s, 0, &Q->s, 0, sim, mt, w, scratch);
    if (!isfinite(e) || !lwfm__all_finite(sim, (size_t)P) || !lwfm__all_finite(w, (size_t)P)) {
        st = lwfm__error(LWFM_ERR_NONFINITE,
                         "RCN pair: similarities or weights overflowed to NaN or infinity "
                         "(feature values of extreme magnitude)");
        goto done;
    }
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
    return st;
}

static lwfm_status rcn_pair(const lwfm_model *m, const float *sf, const float *qf, int64_t channels,
                            int64_t fh, int64_t fw, float *similarity, int64_t *match,
                            float *weight, size_t capacity, float *score) {
    lwfm_status st;
    if ((st = lwfm__check_features(m, "support feature", sf, 1, channels, fh, fw)) ||
        (st = lwfm__check_features(m, "query feature", qf, 1, channels, fh, fw)))
        return st;
    const int64_t P = fh * fw;
    if (capacity < (size_t)P)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "output buffers hold %zu elements, %lld regions", capacity,
                           (long long)P);
    lwfm__prep *S = NULL, *Q = NULL;
    if (!(st = rcn_prepare(m, sf, 1, P, NULL, &S)) && !(st = rcn_prepare(m, qf, 1, P, NULL, &Q)))
        st = pair_outputs(m, (const rcn_prep *)S, (const rcn_prep *)Q, P, similarity, match, weight,
                          score);
    lwfm__prep_release(S);
    lwfm__prep_release(Q);
    return st;
}

const lwfm__method lwfm__method_rcn = {
    .id = LWFM_METHOD_RCN,
    .name = "rcn",
    .weight_prefix = "feature_encoder.",
    .load = rcn_load,
    .free = rcn_free,
    .config_key = rcn_config_key,
    .layout = rcn_layout,
    .bind = rcn_bind,
    .prepare = rcn_prepare,
    .score = rcn_score,
    .query_batch = rcn_query_batch,
    .pair_ready = rcn_pair_ready,
    .rcn_pair = rcn_pair,
};
