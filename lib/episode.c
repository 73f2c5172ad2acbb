/* The episode driver: argument checks, the backbone, arenas and the public
 * episode / prepared-support calls (spec section 3). Everything that depends
 * on the method (per-image preparation, scoring, its limits) is reached
 * through the model's entry in the method table (lib/methods/method.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/profile.h"
#include "episode.h"
#include "methods/method.h"
#include "model.h"
#include "support.h"


/* ------------------------------------------------------------------------ */
/* Argument checks                                                          */

/* Labels: 0..way-1, every class present. Fills count (way entries). */
lwfm_status lwfm__check_labels(const int32_t *labels, int64_t n, int64_t way, int64_t *count) {
    if (!labels) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support_labels is NULL");
    if (way < 2)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "way must be in 2..%d, got %lld",
                           LWFM_LIMIT_WAY, (long long)way);
    if (way > LWFM_LIMIT_WAY)
        return lwfm__error(LWFM_ERR_LIMIT, "way = %lld exceeds LWFM_LIMIT_WAY = %d", (long long)way,
                           LWFM_LIMIT_WAY);
    if (n > LWFM_LIMIT_IMAGES)
        return lwfm__error(LWFM_ERR_LIMIT, "support: %lld images exceed LWFM_LIMIT_IMAGES = %d",
                           (long long)n, LWFM_LIMIT_IMAGES);
    if (n < way)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "%lld support images cannot cover %lld classes", (long long)n,
                           (long long)way);
    memset(count, 0, sizeof(int64_t) * (size_t)way);
    for (int64_t j = 0; j < n; j++) {
        if (labels[j] < 0 || labels[j] >= way)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                               "support label %lld is %d; labels must be in 0..%lld", (long long)j,
                               (int)labels[j], (long long)(way - 1));
        count[labels[j]]++;
    }
    for (int64_t c = 0; c < way; c++) {
        if (count[c] == 0)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                               "class %lld has no support image (every class 0..%lld needs one)",
                               (long long)c, (long long)(way - 1));
        if (count[c] > LWFM_LIMIT_SHOT)
            return lwfm__error(LWFM_ERR_LIMIT,
                               "class %lld has %lld support images; shot exceeds "
                               "LWFM_LIMIT_SHOT = %d",
                               (long long)c, (long long)count[c], LWFM_LIMIT_SHOT);
    }
    return LWFM_OK;
}

/* Feature maps given by the caller: shape must be the model's (C, fs, fs). */
lwfm_status lwfm__check_features(const lwfm_model *m, const char *what, const float *f, int64_t n,
                                 int64_t C, int64_t fh, int64_t fw) {
    if (!f) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "%s is NULL", what);
    if (n <= 0)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "%s: count must be > 0, got %lld", what,
                           (long long)n);
    if (n > LWFM_LIMIT_IMAGES)
        return lwfm__error(LWFM_ERR_LIMIT, "%s: %lld feature maps exceed LWFM_LIMIT_IMAGES = %d",
                           what, (long long)n, LWFM_LIMIT_IMAGES);
    if (m->cfg.feature_size == 0 && fh >= 1 && fw >= 1 &&
        (fh > LWFM_LIMIT_POSITIONS || fw > LWFM_LIMIT_POSITIONS || fh * fw > LWFM_LIMIT_POSITIONS))
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%s: feature maps of %lld x %lld positions exceed "
                           "LWFM_LIMIT_POSITIONS = %d",
                           what, (long long)fh, (long long)fw, LWFM_LIMIT_POSITIONS);
    if (m->cfg.feature_size == 0) { /* native-size taps: any spatial size */
        if (C != m->layers.C || fh < 1 || fw < 1)
            return lwfm__error(LWFM_ERR_SHAPE,
                               "%s: model features have %d channels and a native size, got "
                               "(%lld, %lld, %lld)",
                               what, m->layers.C, (long long)C, (long long)fh, (long long)fw);
    } else if (C != m->layers.C || fh != m->cfg.feature_size || fw < 1 ||
               fw > LWFM_LIMIT_POSITIONS || fh * fw != m->layers.P)
        return lwfm__error(LWFM_ERR_SHAPE,
                           "%s: model features are (%d, %d, %d), got (%lld, %lld, %lld)", what,
                           m->layers.C, m->cfg.feature_size, m->cfg.feature_size, (long long)C,
                           (long long)fh, (long long)fw);
    size_t cells;
    int64_t dims[2] = {n, C * fh * fw};
    if (lwfm__numel(dims, 2, &cells) || cells > ((size_t)1 << 36))
        return lwfm__error(LWFM_ERR_LIMIT, "%s: %lld feature maps is too many", what, (long long)n);
    if (!lwfm__all_finite(f, cells))
        return lwfm__error(LWFM_ERR_NONFINITE, "%s contain NaN or infinite values", what);
    return LWFM_OK;
}

static lwfm_status check_logits(const float *logits, int64_t n_query, int64_t way,
                                size_t capacity) {
    if (!logits) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "logits is NULL");
    uint64_t need;
    if (__builtin_mul_overflow((uint64_t)n_query, (uint64_t)way, &need) || need > capacity)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "logits buffer holds %zu floats, %lld x %lld needed", capacity,
                           (long long)n_query, (long long)way);
    return LWFM_OK;
}

/* The feature map of validated images must stay within LWFM_LIMIT_POSITIONS
 * to be scored (native-size taps grow with the image). */
lwfm_status lwfm__check_positions(const char *what, int64_t fh, int64_t fw) {
    if (fh * fw > LWFM_LIMIT_POSITIONS)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%s: feature maps of %lld x %lld positions exceed "
                           "LWFM_LIMIT_POSITIONS = %d; use smaller images",
                           what, (long long)fh, (long long)fw, LWFM_LIMIT_POSITIONS);
    return LWFM_OK;
}

/* Backbone + per-image preparation of n images already validated with
 * lwfm__check_images (into the arena's slots when one is given, else into
 * buffers *out owns). */
lwfm_status lwfm__images_to_prep(const lwfm_model *m, const char *what, const float *images,
                                  int64_t n, int64_t h, int64_t w, lwfm__prep **out,
                                  lwfm__arena *arena) {
    int64_t C, fh, fw;
    lwfm_status st = lwfm__net_out_shape(m->net, h, w, &C, &fh, &fw);
    if (st) return st;
    size_t bytes = (size_t)n * C * fh * fw * sizeof(float);
    float *feats = arena ? lwfm__arena_get(arena, LWFM_SLOT_FEATS, bytes) : lwfm__alloc(bytes);
    if (!feats) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory for %s features", what);
    double tp = LWFM_PROF_T0();
    st = lwfm__model_forward(m, images, n, h, w, feats);
    LWFM_PROF_ADD(LWFM_PROF_BACKBONE, tp);
    /* finite pixels of extreme magnitude can overflow in the backbone */
    if (!st && !lwfm__all_finite(feats, (size_t)n * C * fh * fw))
        st = lwfm__error(LWFM_ERR_NONFINITE,
                         "%s: the backbone's features overflowed to NaN or infinity (pixel "
                         "values of extreme magnitude; are the images normalised?)",
                         what);
    if (!st) st = m->method->prepare(m, feats, n, fh * fw, arena, out);
    if (!arena) lwfm__free(feats);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Prepared support sets                                                    */

/* A support set with validated labels (no reference on the model yet). */
lwfm_status lwfm__support_begin(lwfm_model *m, const int32_t *labels, int64_t n, int64_t way,
                                 lwfm_support **out) {
    if (n <= 0)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support: count must be > 0, got %lld",
                           (long long)n);
    lwfm_status st;
    int64_t *count =
        malloc(sizeof(int64_t) * (size_t)(way >= 2 && way <= LWFM_LIMIT_WAY ? way : 1));
    if (!count) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    if ((st = lwfm__check_labels(labels, n, way, count))) {
        free(count);
        return st;
    }
    lwfm_support *s = calloc(1, sizeof *s);
    if (!s || !(s->labels = malloc(sizeof(int32_t) * (size_t)n))) {
        free(s);
        free(count);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(s->labels, labels, sizeof(int32_t) * (size_t)n);
    s->count = count;
    s->way = way;
    s->model = m;
    *out = s;
    return LWFM_OK;
}

/* Method-specific limits that depend on the support set. */
lwfm_status lwfm__support_check_size(const lwfm_model *m, const lwfm_support *s) {
    return m->method->check_support ? m->method->check_support(m, s->P, s->count, s->way)
                                    : LWFM_OK;
}

LWFM_API void lwfm_support_destroy(lwfm_support *support) {
    if (!support) return;
    lwfm__prep_release(support->prep);
    free(support->labels);
    free(support->count);
    free(support->names);
    if (support->model) lwfm__model_release(support->model);
    free(support);
}

lwfm_status lwfm__support_finish(lwfm_support *s, lwfm_status st, lwfm_support **out) {
    if (st) {
        s->model = NULL; /* no reference taken yet */
        lwfm_support_destroy(s);
        return st;
    }
    lwfm__model_retain(s->model);
    *out = s;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_support_prepare(lwfm_support **out, lwfm_model *model,
                                          const float *support, int64_t n_support,
                                          const int32_t *support_labels, int64_t channels,
                                          int64_t height, int64_t width, int64_t way) {
    LWFM_PROF_SCOPE("lwfm_support_prepare");
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    lwfm_status st;
    lwfm_support *s;
    if ((st = lwfm__support_begin(model, support_labels, n_support, way, &s))) return st;
    int64_t C = 0, fh = 0, fw = 0; /* read below even when the images are refused */
    st = lwfm__check_images(model, "support images", support, n_support, channels, height, width,
                            &C, &fh, &fw);
    if (!st) st = lwfm__check_positions("support images", fh, fw);
    s->n = n_support, s->P = fh * fw;
    if (!st)
        st = lwfm__images_to_prep(model, "support images", support, n_support, height, width, &s->prep,
                            NULL);
    if (!st) st = lwfm__support_check_size(model, s);
    return lwfm__support_finish(s, st, out);
}

LWFM_API lwfm_status lwfm_support_prepare_features(lwfm_support **out, lwfm_model *model,
                                                   const float *support_features, int64_t n_support,
                                                   const int32_t *support_labels, int64_t channels,
                                                   int64_t fh, int64_t fw, int64_t way) {
    LWFM_PROF_SCOPE("lwfm_support_prepare_features");
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    lwfm_status st;
    if ((st = lwfm__check_features(model, "support features", support_features, n_support, channels,
                                   fh, fw)))
        return st;
    lwfm_support *s;
    if ((st = lwfm__support_begin(model, support_labels, n_support, way, &s))) return st;
    s->n = n_support, s->P = fh * fw, s->from_features = 1;
    st = model->method->prepare(model, support_features, n_support, fh * fw, NULL, &s->prep);
    if (!st) st = lwfm__support_check_size(model, s);
    return lwfm__support_finish(s, st, out);
}

LWFM_API int64_t lwfm_support_way(const lwfm_support *support) {
    return support ? support->way : 0;
}

LWFM_API int64_t lwfm_support_count(const lwfm_support *support) {
    return support ? support->n : 0;
}

/* Where a top-k call's rows go: k entries per query, best first; logits and
 * probs may be NULL (not wanted). */
typedef struct topk_out {
    int64_t k;
    int32_t *classes;
    float *logits, *probs;
} topk_out;

/* (logit, class) in the order of lwfm_support_score_topk: larger logit
 * first, the lower class index first on equal logits. */
typedef struct topk_entry {
    float v;
    int32_t c;
} topk_entry;

static int topk_before(topk_entry a, topk_entry b) {
    return a.v > b.v || (a.v == b.v && a.c < b.c);
}

static int topk_cmp(const void *x, const void *y) {
    const topk_entry *a = x, *b = y;
    return topk_before(*a, *b) ? -1 : topk_before(*b, *a) ? 1 : 0;
}

/* Rows q of the finite logits (n x way) -> tk's rows q0 + q: the k best
 * classes by insertion into a sorted list (k small against way: one pass),
 * or by sorting the whole row (k near way). Probabilities as
 * lwfm_model_probabilities computes them (softmax over the whole row at the
 * model's calibration temperature), for the selected classes only. */
static lwfm_status topk_select(const lwfm_model *m, const float *logits, int64_t n, int64_t way,
                               const topk_out *tk, int64_t q0) {
    const int64_t k = tk->k;
    const int sort_row = k > 32;
    topk_entry *e = malloc((size_t)(sort_row ? way : k) * sizeof *e);
    if (!e) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory selecting top-k classes");
    const double inv_t = 1.0 / m->cfg.calibration_temperature;
    for (int64_t q = 0; q < n; q++) {
        const float *l = logits + q * way;
        if (sort_row) {
            for (int64_t c = 0; c < way; c++) e[c] = (topk_entry){l[c], (int32_t)c};
            qsort(e, (size_t)way, sizeof *e, topk_cmp);
        } else {
            int64_t have = 0;
            for (int64_t c = 0; c < way; c++) {
                topk_entry x = {l[c], (int32_t)c};
                if (have == k && !topk_before(x, e[k - 1])) continue;
                int64_t i = have < k ? have++ : k - 1;
                for (; i > 0 && topk_before(x, e[i - 1]); i--) e[i] = e[i - 1];
                e[i] = x;
            }
        }
        double sum = 0.0; /* e[0] holds the row's largest logit */
        if (tk->probs)
            for (int64_t c = 0; c < way; c++) sum += exp((l[c] - e[0].v) * inv_t);
        const size_t o = (size_t)(q0 + q) * (size_t)k;
        for (int64_t i = 0; i < k; i++) {
            tk->classes[o + i] = e[i].c;
            if (tk->logits) tk->logits[o + i] = e[i].v;
            if (tk->probs) tk->probs[o + i] = (float)(exp((e[i].v - e[0].v) * inv_t) / sum);
        }
    }
    free(e);
    return LWFM_OK;
}

/* Validated queries (images, or feature maps when `features`) against a prepared
 * support set. All per-call buffers come from a reused arena; the logits are
 * computed there and copied out only on success. */
static lwfm_status support_score_once(const lwfm_support *sp, const float *query, int features,
                                      int64_t n_query, int64_t channels, int64_t h, int64_t w,
                                      float *logits, const topk_out *tk) {
    lwfm__arena *arena = lwfm__model_arena_take(sp->model);
    if (!arena) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    const lwfm__method *me = sp->model->method;
    lwfm__prep *Q = NULL;
    size_t n = (size_t)n_query * (size_t)sp->way;
    lwfm_status st =
        features ? me->prepare(sp->model, query, n_query, h * w, arena, &Q)
                 : lwfm__images_to_prep(sp->model, "query images", query, n_query, h, w, &Q, arena);
    if (!st) {
        float *tmp = lwfm__arena_get(arena, LWFM_SLOT_LOGITS, n * sizeof(float));
        st = tmp ? me->score(sp->model, sp->prep, sp->labels, sp->count, sp->way, Q, tmp, arena)
                 : lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        /* inputs of extreme magnitude can overflow inside the metric */
        if (!st && !lwfm__all_finite(tmp, n))
            st = lwfm__error(LWFM_ERR_NONFINITE,
                             "scores overflowed to NaN or infinity (feature values of extreme "
                             "magnitude)");
        if (!st && tk) st = topk_select(sp->model, tmp, n_query, sp->way, tk, 0);
        else if (!st) memcpy(logits, tmp, n * sizeof(float));
    }
    lwfm__model_arena_give(sp->model, arena);
    return st;
}

/* A method may need the backbone to see the queries a batch at a time (RCN
 * with batch-statistics BatchNorm, peers.md 4.7: each batch is its own
 * BatchNorm batch). The logits are gathered in a buffer and copied out only
 * when every batch succeeded. */
static lwfm_status support_score(const lwfm_support *sp, const float *query, int features,
                                 int64_t n_query, int64_t channels, int64_t h, int64_t w,
                                 float *logits, const topk_out *tk) {
    const lwfm__method *me = sp->model->method;
    const int64_t qb = me->query_batch ? me->query_batch(sp->model) : 0;
    if (features || qb <= 0 || n_query <= qb)
        return support_score_once(sp, query, features, n_query, channels, h, w, logits, tk);
    const size_t per_image = (size_t)channels * (size_t)h * (size_t)w;
    float *all = malloc((size_t)n_query * (size_t)sp->way * sizeof(float));
    if (!all) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm_status st = LWFM_OK;
    for (int64_t q0 = 0; q0 < n_query && !st; q0 += qb) {
        const int64_t nq = n_query - q0 < qb ? n_query - q0 : qb;
        st = support_score_once(sp, query + (size_t)q0 * per_image, 0, nq, channels, h, w,
                                all + (size_t)q0 * (size_t)sp->way, NULL);
    }
    if (!st && tk) st = topk_select(sp->model, all, n_query, sp->way, tk, 0);
    else if (!st) memcpy(logits, all, (size_t)n_query * (size_t)sp->way * sizeof(float));
    free(all);
    return st;
}

LWFM_API lwfm_status lwfm_support_score(const lwfm_support *support, const float *query,
                                        int64_t n_query, int64_t channels, int64_t height,
                                        int64_t width, float *logits, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_support_score");
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    int64_t C, fh, fw;
    lwfm_status st = check_logits(logits, n_query > 0 ? n_query : 0, support->way, capacity);
    if (!st)
        st = lwfm__check_images(support->model, "query images", query, n_query, channels, height,
                                width, &C, &fh, &fw);
    if (!st) st = lwfm__check_positions("query images", fh, fw);
    if (st) return st;
    return support_score(support, query, 0, n_query, channels, height, width, logits, NULL);
}

LWFM_API lwfm_status lwfm_support_score_features(const lwfm_support *support,
                                                 const float *query_features, int64_t n_query,
                                                 int64_t channels, int64_t fh, int64_t fw,
                                                 float *logits, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_support_score_features");
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    lwfm_status st = lwfm__check_features(support->model, "query features", query_features, n_query,
                                          channels, fh, fw);
    if (!st) st = check_logits(logits, n_query, support->way, capacity);
    if (st) return st;
    return support_score(support, query_features, 1, n_query, channels, fh, fw, logits, NULL);
}

/* ------------------------------------------------------------------------ */
/* Top-k classes of a prepared support set                                  */

/* k in 1..way, the outputs (n_query x k) present and large enough. */
static lwfm_status check_topk(const lwfm_support *sp, int64_t n_query, int64_t k,
                              const int32_t *classes, size_t capacity) {
    if (!classes) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "classes is NULL");
    if (k < 1 || k > sp->way)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "k = %lld: the support set has %lld classes, k must be in 1..%lld",
                           (long long)k, (long long)sp->way, (long long)sp->way);
    uint64_t need;
    if (__builtin_mul_overflow((uint64_t)(n_query > 0 ? n_query : 0), (uint64_t)k, &need) ||
        need > capacity)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "top-k outputs hold %zu entries, %lld x %lld needed", capacity,
                           (long long)n_query, (long long)k);
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_support_score_topk(const lwfm_support *support, const float *query,
                                             int64_t n_query, int64_t channels, int64_t height,
                                             int64_t width, int64_t k, int32_t *classes,
                                             float *logits, float *probabilities,
                                             size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_support_score_topk");
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    int64_t C, fh, fw;
    lwfm_status st = check_topk(support, n_query, k, classes, capacity);
    if (!st)
        st = lwfm__check_images(support->model, "query images", query, n_query, channels, height,
                                width, &C, &fh, &fw);
    if (!st) st = lwfm__check_positions("query images", fh, fw);
    if (st) return st;
    const topk_out tk = {k, classes, logits, probabilities};
    return support_score(support, query, 0, n_query, channels, height, width, NULL, &tk);
}

LWFM_API lwfm_status lwfm_support_score_topk_features(const lwfm_support *support,
                                                      const float *query_features,
                                                      int64_t n_query, int64_t channels,
                                                      int64_t fh, int64_t fw, int64_t k,
                                                      int32_t *classes, float *logits,
                                                      float *probabilities, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_support_score_topk_features");
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    lwfm_status st = lwfm__check_features(support->model, "query features", query_features,
                                          n_query, channels, fh, fw);
    if (!st) st = check_topk(support, n_query, k, classes, capacity);
    if (st) return st;
    const topk_out tk = {k, classes, logits, probabilities};
    return support_score(support, query_features, 1, n_query, channels, fh, fw, NULL, &tk);
}

/* ------------------------------------------------------------------------ */
/* One-shot episodes                                                        */

LWFM_API lwfm_status lwfm_episode_score(const lwfm_model *model, const float *support,
                                        int64_t n_support, const int32_t *support_labels,
                                        const float *query, int64_t n_query, int64_t channels,
                                        int64_t height, int64_t width, int64_t way, float *logits,
                                        size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_episode_score");
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    lwfm_status st;
    int64_t C, fh, fw;
    /* Check everything cheap before any backbone work. */
    if ((st = check_logits(logits, n_query > 0 ? n_query : 0, way > 0 ? way : 0, capacity)) ||
        (st = lwfm__check_images(model, "query images", query, n_query, channels, height, width, &C,
                                 &fh, &fw)) ||
        (st = lwfm__check_positions("query images", fh, fw)))
        return st;
    lwfm_support *s = NULL;
    if ((st = lwfm_support_prepare(&s, (lwfm_model *)model, support, n_support, support_labels,
                                   channels, height, width, way)))
        return st;
    /* the queries were validated above: score them without checking again */
    st = support_score(s, query, 0, n_query, channels, height, width, logits, NULL);
    lwfm_support_destroy(s);
    return st;
}

LWFM_API lwfm_status lwfm_episode_score_features(const lwfm_model *model,
                                                 const float *support_features, int64_t n_support,
                                                 const int32_t *support_labels,
                                                 const float *query_features, int64_t n_query,
                                                 int64_t channels, int64_t fh, int64_t fw,
                                                 int64_t way, float *logits, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_episode_score_features");
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    lwfm_status st;
    if ((st = lwfm__check_features(model, "query features", query_features, n_query, channels, fh,
                                   fw)) ||
        (st = check_logits(logits, n_query, way > 0 ? way : 0, capacity)))
        return st;
    lwfm_support *s = NULL;
    if ((st = lwfm_support_prepare_features(&s, (lwfm_model *)model, support_features, n_support,
                                            support_labels, channels, fh, fw, way)))
        return st;
    /* the queries were validated above: score them without checking again */
    st = support_score(s, query_features, 1, n_query, channels, fh, fw, logits, NULL);
    lwfm_support_destroy(s);
    return st;
}
