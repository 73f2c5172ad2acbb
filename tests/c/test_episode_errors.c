/* Episode API contract on a real (random-weight) model:
 *
 *   test_episode_errors LWFM_SPM.npz DN4.npz
 *
 *  - bad episodes (labels, counts, NULLs, shapes, NaN/Inf, capacity) fail with
 *    the exact status, a detail message naming the problem, the logits
 *    buffer untouched (compared byte by byte with a sentinel) and
 *    out-parameters untouched;
 *  - a prepared support set outlives its model handle (reference counting);
 *  - lwfm_support_way / lwfm_support_count;
 *  - one model and one prepared support set scored from 8 threads at once
 *    give bitwise the results of serial scoring;
 *  - a DN4 model: episode calls work (parity is tests/python/test_dn4.py), the LWE/SPM
 *    views refuse it with LWFM_ERR_WRONG_KIND.
 *
 * The weight files are written at build time by tests/make_test_models.py. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwfm/lwfm.h"

#include "expect.h"

/* ------------------------------------------------------------------------ */
/* The logits buffer of the failing calls, filled with a sentinel first.    */

#define LOGITS_CAP 256
#define SENTINEL_BYTE 0xA5
static float logits_buf[LOGITS_CAP];

static void arm(void) { memset(logits_buf, SENTINEL_BYTE, sizeof logits_buf); }

/* Number of floats from `from` on that are still the sentinel, up to the end. */
static int sentinel_from(size_t from) {
    const unsigned char *b = (const unsigned char *)(logits_buf + from);
    for (size_t i = 0; i < (LOGITS_CAP - from) * sizeof(float); i++)
        if (b[i] != SENTINEL_BYTE) return 0;
    return 1;
}

/* A failed call: exact status, a message containing `needle`, logits untouched. */
static void check_fail(int line, const char *what, lwfm_status got, lwfm_status want,
                       const char *needle) {
    checks++;
    const char *msg = lwfm_last_error();
    int bad = 0;
    if (got != want) {
        fprintf(stderr, "line %d: %s: status %d (%s), expected %d (%s)\n", line, what, (int)got,
                lwfm_status_string(got), (int)want, lwfm_status_string(want));
        bad = 1;
    }
    if (!msg || !*msg || !strstr(msg, needle)) {
        fprintf(stderr, "line %d: %s: message \"%s\" does not contain \"%s\"\n", line, what,
                msg ? msg : "(null)", needle);
        bad = 1;
    }
    if (!sentinel_from(0)) {
        fprintf(stderr, "line %d: %s: the logits buffer was written by a failing call\n", line,
                what);
        bad = 1;
    }
    fails += bad;
}

/* ------------------------------------------------------------------------ */
/* Episodes: a base episode and one-field modifications of it.              */

typedef struct episode {
    const lwfm_model *model;
    const float *support; /* images or feature maps */
    int64_t n_support;
    const int32_t *labels;
    const float *query;
    int64_t n_query;
    int64_t c, h, w; /* channels, height, width (or C, fh, fw) */
    int64_t way;
    float *logits;
    size_t capacity;
} episode;

static lwfm_status score_images(const episode *e) {
    return lwfm_episode_score(e->model, e->support, e->n_support, e->labels, e->query, e->n_query,
                              e->c, e->h, e->w, e->way, e->logits, e->capacity);
}

static lwfm_status score_features(const episode *e) {
    return lwfm_episode_score_features(e->model, e->support, e->n_support, e->labels, e->query,
                                       e->n_query, e->c, e->h, e->w, e->way, e->logits,
                                       e->capacity);
}

/* Modify a copy of `base` with the statement `mod`, run `fn` on it, and check. */
#define CASE(fn, base, mod, want, needle)                                   \
    do {                                                                    \
        episode e = (base);                                                 \
        mod;                                                                \
        arm();                                                              \
        check_fail(__LINE__, #fn ": " #mod, fn(&e), (want), (needle));     \
    } while (0)

/* lwfm_support_prepare*: status, message, and *out left alone. */
#define PREP_CASE(call, want, needle)                                          \
    do {                                                                       \
        lwfm_support *out_ = (lwfm_support *)&checks; /* any non-NULL value */ \
        lwfm_support **out = &out_;                                            \
        (void)out;                                                             \
        arm();                                                                 \
        check_fail(__LINE__, #call, (call), (want), (needle));                \
        EXPECT(out_ == (lwfm_support *)&checks);                               \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Data                                                                     */

#define WAY 5
#define N_SUPPORT 6 /* unequal shots: class 0 has two images */
#define N_QUERY 4
#define N_THREADS 8
#define Q_PER_THREAD 2
#define N_QALL (N_THREADS * Q_PER_THREAD)
#define ROUNDS 3

static const int32_t labels_ok[N_SUPPORT] = {3, 0, 4, 1, 2, 0};
static const int32_t labels_missing[N_SUPPORT] = {3, 0, 1, 1, 2, 0}; /* no class 4 */
static const int32_t labels_negative[N_SUPPORT] = {3, 0, 4, -1, 2, 0};
static const int32_t labels_too_big[N_SUPPORT] = {3, 0, 4, 1, 5, 0};

static float *alloc_floats(size_t n) {
    return test_alloc(n * sizeof(float));
}

static float *copy_floats(const float *x, size_t n) {
    float *p = alloc_floats(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double m = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs(a[i]));
        d = fmax(d, fabs((double)a[i] - b[i]));
    }
    return d / fmax(m, 1e-30);
}

/* ------------------------------------------------------------------------ */
/* Concurrency: 8 threads, one model, one prepared support set.             */

typedef struct worker {
    pthread_t thread;
    pthread_barrier_t *barrier;
    const lwfm_support *support;      /* prepared from images */
    const lwfm_support *support_feat; /* prepared from feature maps */
    const float *query, *query_feat;  /* this thread's queries */
    int64_t c, h, w, C, fh, fw;
    const float *expect, *expect_feat; /* serial results */
    int errors;
} worker;

static void *work(void *arg) {
    worker *wk = arg;
    float out[Q_PER_THREAD * WAY];
    pthread_barrier_wait(wk->barrier);
    for (int r = 0; r < ROUNDS; r++) {
        lwfm_status st = lwfm_support_score(wk->support, wk->query, Q_PER_THREAD, wk->c, wk->h,
                                            wk->w, out, Q_PER_THREAD * WAY);
        if (st || memcmp(out, wk->expect, sizeof out) != 0) wk->errors++;
        st = lwfm_support_score_features(wk->support_feat, wk->query_feat, Q_PER_THREAD, wk->C,
                                         wk->fh, wk->fw, out, Q_PER_THREAD * WAY);
        if (st || memcmp(out, wk->expect_feat, sizeof out) != 0) wk->errors++;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LWFM_SPM.npz DN4.npz\n", argv[0]);
        return 2;
    }
    lwfm_model *model = NULL;
    lwfm_status st = lwfm_model_load(&model, argv[1], NULL);
    if (st) {
        fprintf(stderr, "cannot load %s: %s: %s\n", argv[1], lwfm_status_string(st),
                lwfm_last_error());
        return 1;
    }
    EXPECT(lwfm_model_method(model) == LWFM_METHOD_LWFM_SPM);
    int64_t c, h, w, C, fh, fw;
    EXPECT(lwfm_model_input_shape(model, &c, &h, &w) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(model, h, w, &C, &fh, &fw) == LWFM_OK);
    EXPECT(c == 3 && h == 84 && w == 84 && C == 1024 && fh == 3 && fw == 3);
    const size_t img = (size_t)(c * h * w), fm = (size_t)(C * fh * fw);

    /* Images (uniform noise is as good as any: these checks are not about
     * accuracy) and their feature maps. */
    float *support = alloc_floats(N_SUPPORT * img), *query = alloc_floats(N_QALL * img);
    for (size_t i = 0; i < N_SUPPORT * img; i++) support[i] = 2 * test_uniform();
    for (size_t i = 0; i < N_QALL * img; i++) query[i] = 2 * test_uniform();
    float *sfeat = alloc_floats(N_SUPPORT * fm), *qfeat = alloc_floats(N_QALL * fm);
    EXPECT(lwfm_model_features(model, support, N_SUPPORT, c, h, w, sfeat, N_SUPPORT * fm) ==
           LWFM_OK);
    EXPECT(lwfm_model_features(model, query, N_QALL, c, h, w, qfeat, N_QALL * fm) == LWFM_OK);

    /* Copies with one bad value each. */
    float *support_nan = copy_floats(support, N_SUPPORT * img);
    float *support_inf = copy_floats(support, N_SUPPORT * img);
    float *query_nan = copy_floats(query, N_QUERY * img);
    float *query_inf = copy_floats(query, N_QUERY * img);
    support_nan[3 * img + 1234] = NAN;
    support_inf[N_SUPPORT * img - 1] = INFINITY;
    query_nan[0] = NAN;
    query_inf[2 * img + 77] = INFINITY;
    float *sfeat_nan = copy_floats(sfeat, N_SUPPORT * fm);
    float *sfeat_inf = copy_floats(sfeat, N_SUPPORT * fm);
    float *qfeat_nan = copy_floats(qfeat, N_QUERY * fm);
    float *qfeat_inf = copy_floats(qfeat, N_QUERY * fm);
    sfeat_nan[fm + 5] = NAN;
    sfeat_inf[0] = INFINITY;
    qfeat_nan[N_QUERY * fm - 1] = NAN;
    qfeat_inf[fm * 2] = INFINITY;

    const episode img0 = {model, support, N_SUPPORT, labels_ok, query, N_QUERY, c, h, w,
                          WAY,   logits_buf, LOGITS_CAP};
    const episode feat0 = {model, sfeat, N_SUPPORT, labels_ok, qfeat, N_QUERY, C, fh, fw,
                           WAY,   logits_buf, LOGITS_CAP};
    const lwfm_status INVAL = LWFM_ERR_INVALID_ARGUMENT;

    /* --- the base episodes succeed, write exactly n_query * way floats ---- */
    float ref[N_QUERY * WAY], ref_feat[N_QUERY * WAY];
    arm();
    EXPECT(score_images(&img0) == LWFM_OK);
    EXPECT(strcmp(lwfm_last_error(), "") == 0);
    memcpy(ref, logits_buf, sizeof ref);
    EXPECT(sentinel_from(N_QUERY * WAY));
    for (int i = 0; i < N_QUERY * WAY; i++) EXPECT(isfinite(ref[i]));
    arm();
    EXPECT(score_features(&feat0) == LWFM_OK);
    memcpy(ref_feat, logits_buf, sizeof ref_feat);
    EXPECT(sentinel_from(N_QUERY * WAY));
    EXPECT(max_rel_diff(ref, ref_feat, N_QUERY * WAY) <= 1e-5);
    /* exactly the needed capacity is enough */
    {
        episode e = img0;
        e.capacity = N_QUERY * WAY;
        arm();
        EXPECT(score_images(&e) == LWFM_OK);
        EXPECT(sentinel_from(N_QUERY * WAY));
    }

    /* --- lwfm_episode_score: bad episodes ---------------------------------- */
    /* labels */
    CASE(score_images, img0, e.labels = labels_missing, INVAL, "class 4 has no support image");
    CASE(score_images, img0, e.n_support = 4, INVAL, "4 support images cannot cover 5 classes");
    CASE(score_images, img0, e.labels = labels_negative, INVAL, "support label 3 is -1");
    CASE(score_images, img0, e.labels = labels_too_big, INVAL, "support label 4 is 5");
    CASE(score_images, img0, e.way = 4, INVAL, "support label 2 is 4"); /* label >= way */
    /* way */
    CASE(score_images, img0, e.way = 1, INVAL, "way must be");
    CASE(score_images, img0, e.way = 0, INVAL, "way must be");
    CASE(score_images, img0, e.way = -5, INVAL, "way must be");
    /* counts */
    CASE(score_images, img0, e.n_query = 0, INVAL, "query images: image count must be > 0");
    CASE(score_images, img0, e.n_query = -3, INVAL, "query images: image count must be > 0");
    CASE(score_images, img0, e.n_support = 0, INVAL, "support: count must be > 0, got 0");
    CASE(score_images, img0, e.n_support = -1, INVAL, "support: count must be > 0, got -1");
    /* NULL pointers */
    CASE(score_images, img0, e.model = NULL, INVAL, "model is NULL");
    CASE(score_images, img0, e.support = NULL, INVAL, "support images is NULL");
    CASE(score_images, img0, e.labels = NULL, INVAL, "support_labels is NULL");
    CASE(score_images, img0, e.query = NULL, INVAL, "query images is NULL");
    CASE(score_images, img0, e.logits = NULL, INVAL, "logits is NULL");
    /* shapes */
    CASE(score_images, img0, e.c = 1, LWFM_ERR_SHAPE, "3-channel images, got 1 channels");
    CASE(score_images, img0, e.c = 4, LWFM_ERR_SHAPE, "3-channel images, got 4 channels");
    CASE(score_images, img0, e.h = 0, LWFM_ERR_SHAPE, "image size 0 x 84 out of range");
    CASE(score_images, img0, e.w = -84, LWFM_ERR_SHAPE, "image size 84 x -84 out of range");
    /* non-finite pixels */
    CASE(score_images, img0, e.support = support_nan, LWFM_ERR_NONFINITE,
         "support images contain NaN or infinite values");
    CASE(score_images, img0, e.support = support_inf, LWFM_ERR_NONFINITE,
         "support images contain NaN or infinite values");
    CASE(score_images, img0, e.query = query_nan, LWFM_ERR_NONFINITE,
         "query images contain NaN or infinite values");
    CASE(score_images, img0, e.query = query_inf, LWFM_ERR_NONFINITE,
         "query images contain NaN or infinite values");
    /* output capacity */
    CASE(score_images, img0, e.capacity = N_QUERY * WAY - 1, LWFM_ERR_BUFFER_TOO_SMALL,
         "logits buffer holds 19 floats, 4 x 5 needed");
    CASE(score_images, img0, e.capacity = 0, LWFM_ERR_BUFFER_TOO_SMALL, "logits buffer holds 0");

    /* --- lwfm_episode_score_features: bad episodes ------------------------- */
    CASE(score_features, feat0, e.labels = labels_missing, INVAL, "class 4 has no support image");
    CASE(score_features, feat0, e.labels = labels_negative, INVAL, "support label 3 is -1");
    CASE(score_features, feat0, e.labels = labels_too_big, INVAL, "support label 4 is 5");
    CASE(score_features, feat0, e.n_support = 3, INVAL, "3 support images cannot cover 5");
    CASE(score_features, feat0, e.way = 1, INVAL, "way must be");
    CASE(score_features, feat0, e.way = -1, INVAL, "way must be");
    CASE(score_features, feat0, e.n_query = 0, INVAL, "query features: count must be > 0");
    CASE(score_features, feat0, e.n_query = -2, INVAL, "query features: count must be > 0");
    CASE(score_features, feat0, e.n_support = 0, INVAL, "support features: count must be > 0");
    CASE(score_features, feat0, e.model = NULL, INVAL, "model is NULL");
    CASE(score_features, feat0, e.support = NULL, INVAL, "support features is NULL");
    CASE(score_features, feat0, e.labels = NULL, INVAL, "support_labels is NULL");
    CASE(score_features, feat0, e.query = NULL, INVAL, "query features is NULL");
    CASE(score_features, feat0, e.logits = NULL, INVAL, "logits is NULL");
    CASE(score_features, feat0, e.c = 1023, LWFM_ERR_SHAPE,
         "model features are (1024, 3, 3), got (1023, 3, 3)");
    CASE(score_features, feat0, e.c = 512, LWFM_ERR_SHAPE, "got (512, 3, 3)");
    CASE(score_features, feat0, e.h = 4, LWFM_ERR_SHAPE, "got (1024, 4, 3)");
    CASE(score_features, feat0, e.w = 2, LWFM_ERR_SHAPE, "got (1024, 3, 2)");
    CASE(score_features, feat0, e.h = 1; e.w = 9, LWFM_ERR_SHAPE, "got (1024, 1, 9)");
    CASE(score_features, feat0, e.support = sfeat_nan, LWFM_ERR_NONFINITE,
         "support features contain NaN or infinite values");
    CASE(score_features, feat0, e.support = sfeat_inf, LWFM_ERR_NONFINITE,
         "support features contain NaN or infinite values");
    CASE(score_features, feat0, e.query = qfeat_nan, LWFM_ERR_NONFINITE,
         "query features contain NaN or infinite values");
    CASE(score_features, feat0, e.query = qfeat_inf, LWFM_ERR_NONFINITE,
         "query features contain NaN or infinite values");
    CASE(score_features, feat0, e.capacity = N_QUERY * WAY - 1, LWFM_ERR_BUFFER_TOO_SMALL,
         "logits buffer holds 19 floats, 4 x 5 needed");

    /* --- lwfm_support_prepare*: bad support sets, *out untouched ---------- */
    PREP_CASE(lwfm_support_prepare(NULL, model, support, N_SUPPORT, labels_ok, c, h, w, WAY),
              INVAL, "out or model is NULL");
    PREP_CASE(lwfm_support_prepare(out, NULL, support, N_SUPPORT, labels_ok, c, h, w, WAY), INVAL,
              "out or model is NULL");
    PREP_CASE(lwfm_support_prepare(out, model, NULL, N_SUPPORT, labels_ok, c, h, w, WAY), INVAL,
              "support images is NULL");
    PREP_CASE(lwfm_support_prepare(out, model, support, N_SUPPORT, NULL, c, h, w, WAY), INVAL,
              "support_labels is NULL");
    PREP_CASE(lwfm_support_prepare(out, model, support, N_SUPPORT, labels_missing, c, h, w, WAY),
              INVAL, "class 4 has no support image");
    PREP_CASE(lwfm_support_prepare(out, model, support, N_SUPPORT, labels_ok, c, h, w, 1), INVAL,
              "way must be");
    PREP_CASE(lwfm_support_prepare(out, model, support, 0, labels_ok, c, h, w, WAY), INVAL,
              "support: count must be > 0, got 0");
    PREP_CASE(lwfm_support_prepare(out, model, support, N_SUPPORT, labels_ok, 2, h, w, WAY),
              LWFM_ERR_SHAPE, "3-channel images, got 2 channels");
    PREP_CASE(lwfm_support_prepare(out, model, support_inf, N_SUPPORT, labels_ok, c, h, w, WAY),
              LWFM_ERR_NONFINITE, "support images contain NaN or infinite values");
    PREP_CASE(lwfm_support_prepare_features(out, model, sfeat, N_SUPPORT, labels_ok, C, fh, 4,
                                            WAY),
              LWFM_ERR_SHAPE, "got (1024, 3, 4)");
    PREP_CASE(lwfm_support_prepare_features(out, model, sfeat_nan, N_SUPPORT, labels_ok, C, fh, fw,
                                            WAY),
              LWFM_ERR_NONFINITE, "support features contain NaN or infinite values");
    PREP_CASE(lwfm_support_prepare_features(out, model, sfeat, N_SUPPORT, labels_too_big, C, fh,
                                            fw, WAY),
              INVAL, "support label 4 is 5");

    /* --- prepared support sets: scoring errors ----------------------------- */
    lwfm_support *sp = NULL, *spf = NULL;
    EXPECT(lwfm_support_prepare(&sp, model, support, N_SUPPORT, labels_ok, c, h, w, WAY) ==
               LWFM_OK &&
           sp);
    EXPECT(lwfm_support_prepare_features(&spf, model, sfeat, N_SUPPORT, labels_ok, C, fh, fw,
                                         WAY) == LWFM_OK &&
           spf);
    EXPECT(lwfm_support_way(sp) == WAY && lwfm_support_count(sp) == N_SUPPORT);
    EXPECT(lwfm_support_way(spf) == WAY && lwfm_support_count(spf) == N_SUPPORT);
    EXPECT(lwfm_support_way(NULL) == 0 && lwfm_support_count(NULL) == 0);
    lwfm_support_destroy(NULL);

#define SCORE_CASE(call, want, needle)                           \
    do {                                                         \
        arm();                                                   \
        check_fail(__LINE__, #call, (call), (want), (needle));   \
    } while (0)
    float *L = logits_buf;
    SCORE_CASE(lwfm_support_score(NULL, query, N_QUERY, c, h, w, L, LOGITS_CAP), INVAL,
               "support is NULL");
    SCORE_CASE(lwfm_support_score(sp, NULL, N_QUERY, c, h, w, L, LOGITS_CAP), INVAL,
               "query images is NULL");
    SCORE_CASE(lwfm_support_score(sp, query, N_QUERY, c, h, w, NULL, LOGITS_CAP), INVAL,
               "logits is NULL");
    SCORE_CASE(lwfm_support_score(sp, query, 0, c, h, w, L, LOGITS_CAP), INVAL,
               "image count must be > 0");
    SCORE_CASE(lwfm_support_score(sp, query, N_QUERY, 1, h, w, L, LOGITS_CAP), LWFM_ERR_SHAPE,
               "3-channel images, got 1 channels");
    SCORE_CASE(lwfm_support_score(sp, query_nan, N_QUERY, c, h, w, L, LOGITS_CAP),
               LWFM_ERR_NONFINITE, "query images contain NaN or infinite values");
    SCORE_CASE(lwfm_support_score(sp, query, N_QUERY, c, h, w, L, N_QUERY * WAY - 1),
               LWFM_ERR_BUFFER_TOO_SMALL, "logits buffer holds 19 floats, 4 x 5 needed");
    /* feature maps of the wrong shape against a prepared set */
    SCORE_CASE(lwfm_support_score_features(spf, qfeat, N_QUERY, 1000, fh, fw, L, LOGITS_CAP),
               LWFM_ERR_SHAPE, "query features: model features are (1024, 3, 3), got (1000, 3, 3)");
    SCORE_CASE(lwfm_support_score_features(spf, qfeat, N_QUERY, C, 2, fw, L, LOGITS_CAP),
               LWFM_ERR_SHAPE, "got (1024, 2, 3)");
    SCORE_CASE(lwfm_support_score_features(spf, qfeat, N_QUERY, C, fh, 5, L, LOGITS_CAP),
               LWFM_ERR_SHAPE, "got (1024, 3, 5)");
    SCORE_CASE(lwfm_support_score_features(spf, qfeat_inf, N_QUERY, C, fh, fw, L, LOGITS_CAP),
               LWFM_ERR_NONFINITE, "query features contain NaN or infinite values");
    SCORE_CASE(lwfm_support_score_features(spf, qfeat, N_QUERY, C, fh, fw, L, 3),
               LWFM_ERR_BUFFER_TOO_SMALL, "logits buffer holds 3 floats, 4 x 5 needed");
    SCORE_CASE(lwfm_support_score_features(NULL, qfeat, N_QUERY, C, fh, fw, L, LOGITS_CAP), INVAL,
               "support is NULL");
    SCORE_CASE(lwfm_support_score_features(spf, NULL, N_QUERY, C, fh, fw, L, LOGITS_CAP), INVAL,
               "query features is NULL");

    /* The prepared sets agree with the one-call episodes. */
    arm();
    EXPECT(lwfm_support_score(sp, query, N_QUERY, c, h, w, L, LOGITS_CAP) == LWFM_OK);
    EXPECT(memcmp(L, ref, sizeof ref) == 0 && sentinel_from(N_QUERY * WAY));
    arm();
    EXPECT(lwfm_support_score_features(spf, qfeat, N_QUERY, C, fh, fw, L, LOGITS_CAP) == LWFM_OK);
    EXPECT(memcmp(L, ref_feat, sizeof ref_feat) == 0 && sentinel_from(N_QUERY * WAY));

    /* --- reference counting: a support set outlives its model handle ------- */
    {
        lwfm_model *m2 = NULL;
        lwfm_support *orphan = NULL;
        EXPECT(lwfm_model_load(&m2, argv[1], NULL) == LWFM_OK);
        EXPECT(lwfm_support_prepare(&orphan, m2, support, N_SUPPORT, labels_ok, c, h, w, WAY) ==
               LWFM_OK);
        lwfm_model_destroy(m2); /* the set still holds a reference */
        EXPECT(lwfm_support_way(orphan) == WAY && lwfm_support_count(orphan) == N_SUPPORT);
        float out[N_QUERY * WAY];
        EXPECT(lwfm_support_score(orphan, query, N_QUERY, c, h, w, out, N_QUERY * WAY) ==
               LWFM_OK);
        EXPECT(memcmp(out, ref, sizeof out) == 0); /* same weights, same batch: same bits */
        SCORE_CASE(lwfm_support_score(orphan, query, N_QUERY, 4, h, w, L, LOGITS_CAP),
                   LWFM_ERR_SHAPE, "3-channel images"); /* errors still use the model */
        lwfm_support_destroy(orphan);                   /* frees the model too */
    }

    /* --- concurrency: 8 threads, one model, one prepared set --------------- */
    {
        float *expect = alloc_floats(N_QALL * WAY), *expect_feat = alloc_floats(N_QALL * WAY);
        for (int t = 0; t < N_THREADS; t++) {
            EXPECT(lwfm_support_score(sp, query + (size_t)t * Q_PER_THREAD * img, Q_PER_THREAD, c,
                                      h, w, expect + t * Q_PER_THREAD * WAY,
                                      Q_PER_THREAD * WAY) == LWFM_OK);
            EXPECT(lwfm_support_score_features(spf, qfeat + (size_t)t * Q_PER_THREAD * fm,
                                               Q_PER_THREAD, C, fh, fw,
                                               expect_feat + t * Q_PER_THREAD * WAY,
                                               Q_PER_THREAD * WAY) == LWFM_OK);
        }
        /* the threads' queries differ, and so do their logits */
        EXPECT(memcmp(expect, expect + Q_PER_THREAD * WAY, Q_PER_THREAD * WAY * sizeof(float)));
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, N_THREADS);
        worker wk[N_THREADS];
        for (int t = 0; t < N_THREADS; t++) {
            wk[t] = (worker){.barrier = &barrier,
                             .support = sp,
                             .support_feat = spf,
                             .query = query + (size_t)t * Q_PER_THREAD * img,
                             .query_feat = qfeat + (size_t)t * Q_PER_THREAD * fm,
                             .c = c, .h = h, .w = w, .C = C, .fh = fh, .fw = fw,
                             .expect = expect + t * Q_PER_THREAD * WAY,
                             .expect_feat = expect_feat + t * Q_PER_THREAD * WAY};
            EXPECT(pthread_create(&wk[t].thread, NULL, work, &wk[t]) == 0);
        }
        int errors = 0;
        for (int t = 0; t < N_THREADS; t++) {
            pthread_join(wk[t].thread, NULL);
            errors += wk[t].errors;
        }
        pthread_barrier_destroy(&barrier);
        if (errors) fprintf(stderr, "concurrency: %d threaded results differ or failed\n", errors);
        EXPECT(errors == 0);
        free(expect);
        free(expect_feat);
    }
    lwfm_support_destroy(sp);
    lwfm_support_destroy(spf);

    /* --- a DN4 model: episodes dispatch on the method; LWE/SPM views refuse it */
    {
        lwfm_model *dn4 = NULL;
        EXPECT(lwfm_model_load(&dn4, argv[2], NULL) == LWFM_OK && dn4);
        if (dn4) {
            EXPECT(lwfm_model_method(dn4) == LWFM_METHOD_DN4);
            int64_t dc, dh, dw;
            EXPECT(lwfm_model_feature_shape(dn4, h, w, &dc, &dh, &dw) == LWFM_OK);
            EXPECT(dc == 64 && dh == 21 && dw == 21);
            episode e = img0;
            e.model = dn4;
            float dn4_logits[N_QUERY * WAY], dn4_logits_f[N_QUERY * WAY];
            e.logits = dn4_logits;
            e.capacity = N_QUERY * WAY;
            EXPECT(score_images(&e) == LWFM_OK);
            int sane = 1;
            for (int i = 0; i < N_QUERY * WAY; i++)  /* k = 3 cosines per descriptor */
                sane &= isfinite(dn4_logits[i]) && fabsf(dn4_logits[i]) <= 3 * 441 + 1e-2f;
            EXPECT(sane);
            const size_t dfm = (size_t)(dc * dh * dw);
            float *dfeat = alloc_floats(N_SUPPORT * dfm);
            float *dqfeat = alloc_floats(N_QUERY * dfm);
            memset(dfeat, SENTINEL_BYTE, N_SUPPORT * dfm * sizeof(float));
            EXPECT(lwfm_model_features(dn4, support, N_SUPPORT, c, h, w, dfeat, N_SUPPORT * dfm) ==
                   LWFM_OK);
            EXPECT(lwfm_model_features(dn4, query, N_QUERY, c, h, w, dqfeat, N_QUERY * dfm) ==
                   LWFM_OK);
            e = (episode){dn4, dfeat, N_SUPPORT, labels_ok, dqfeat, N_QUERY, dc, dh, dw, WAY,
                          dn4_logits_f, N_QUERY * WAY};
            EXPECT(score_features(&e) == LWFM_OK);
            int same = 1;
            for (int i = 0; i < N_QUERY * WAY; i++)
                same &= fabsf(dn4_logits[i] - dn4_logits_f[i]) <= 1e-4f * 3 * 441;
            EXPECT(same);
            /* native-size features: a feature map of another size is fine for DN4,
             * a wrong channel count is not */
            e.c = dc + 1;
            arm();
            check_fail(__LINE__, "DN4 features with a wrong channel count", score_features(&e),
                       LWFM_ERR_SHAPE, "channels");
            lwfm_lwe *lwe = NULL;
            lwfm_spm *spm = NULL;
            EXPECT(lwfm_lwe_create(&lwe, dn4) == LWFM_ERR_WRONG_KIND && lwe == NULL);
            EXPECT(strstr(lwfm_last_error(), "dn4") != NULL);
            EXPECT(lwfm_spm_create(&spm, dn4) == LWFM_ERR_WRONG_KIND && spm == NULL);
            free(dfeat);
            free(dqfeat);
            lwfm_model_destroy(dn4);
        }
    }

    lwfm_model_destroy(model);
    free(support);
    free(query);
    free(sfeat);
    free(qfeat);
    free(support_nan);
    free(support_inf);
    free(query_nan);
    free(query_inf);
    free(sfeat_nan);
    free(sfeat_inf);
    free(qfeat_nan);
    free(qfeat_inf);

    if (fails) fprintf(stderr, "test_episode_errors: %d of %d check(s) failed\n", fails, checks);
    else printf("test_episode_errors: all %d checks passed\n", checks);
    return fails != 0;
}
