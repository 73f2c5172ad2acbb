/* Concurrency: the thread-safety contract of lwfm.h under load.
 *
 *   test_concurrency MODEL.npz [MODEL.npz ...]
 *
 * For each model (the build passes an LWFM-SPM and a DN4 model written by
 * tests/make_test_models.py):
 *  1. one loaded model and one prepared support set (from images, and one
 *     from feature maps) shared by 8 threads started together; each thread
 *     scores its own query batches (different images, different batch
 *     sizes) many times with lwfm_support_score(),
 *     lwfm_support_score_features(), lwfm_episode_score(),
 *     lwfm_model_features() and lwfm_model_preprocess(), and runs its own
 *     lwfm_backbone handle; every result must be bitwise what the same call
 *     on the same batch gave on the main thread before the threads started;
 *  2. 8 threads each loading (from the file, or from memory), using and
 *     destroying their own model handle, in both destroy orders (model
 *     first: the support set keeps it alive), several times, while the
 *     shared model of (1) is also being scored; plus a failing call per
 *     thread whose detail message must stay its own (per-thread errors).
 *
 * Also built into the ThreadSanitizer build (meson -Dopenmp=disabled
 * -Db_sanitize=thread, `make test-sanitize`), where it must run clean.
 * LWFM_CONCURRENCY_ROUNDS overrides the number of rounds per thread. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwfm/lwfm.h"

#include "expect.h"

#define N_THREADS 8
#define WAY 5
#define N_SUPPORT 7 /* unequal shots */
#define N_BATCHES 2 /* query batches per thread */
#define MAX_BATCH 3
#define RAW 40 /* side of the raw u8 images given to lwfm_model_preprocess */

static const int32_t labels[N_SUPPORT] = {2, 0, 4, 1, 3, 0, 2};

/* Batch b of thread t: 1..MAX_BATCH queries, all distinct images. */
static int batch_size(int t, int b) { return 1 + (t + 2 * b) % MAX_BATCH; }

static int rounds_from_env(int dflt) {
    const char *s = getenv("LWFM_CONCURRENCY_ROUNDS");
    int r = s ? atoi(s) : 0;
    return r > 0 ? r : dflt;
}

/* ------------------------------------------------------------------------ */
/* Shared state of one model's run (read-only while the threads run).       */

typedef struct batch {
    int n;
    const float *images, *features; /* the batch's images and their feature maps */
    const uint8_t *raw;             /* the first image as raw RGB pixels */
    float *logits, *logits_feat, *logits_episode; /* serial results */
    float *preprocessed;                           /* serial lwfm_model_preprocess of raw */
} batch;

typedef struct shared {
    const char *path;
    const void *file; /* the weight file's bytes, for lwfm_model_load_from_memory */
    size_t file_size;
    lwfm_model *model;
    const lwfm_support *support, *support_feat;
    const float *support_images;
    int64_t c, h, w, C, fh, fw;
    size_t img, fm;
    int rounds;
    batch batches[N_THREADS][N_BATCHES];
    pthread_barrier_t barrier;
} shared;

typedef struct worker {
    pthread_t thread;
    shared *s;
    int t;
    int errors;
    char what[160]; /* the first failure */
} worker;

static void fail(worker *wk, const char *what, lwfm_status st) {
    if (!wk->errors++)
        snprintf(wk->what, sizeof wk->what, "%s: %s (%s)", what, lwfm_status_string(st),
                 lwfm_last_error());
}

#define SAME(a, b, n) (memcmp((a), (b), (size_t)(n) * sizeof(float)) == 0)

/* Part 1: everything on the shared model and the shared support sets. */
static void *work_shared(void *arg) {
    worker *wk = arg;
    shared *s = wk->s;
    float out[MAX_BATCH * WAY];
    size_t feat_cap = (size_t)MAX_BATCH * s->fm;
    float *feat = test_alloc(feat_cap * sizeof(float));
    float *pre = test_alloc(s->img * sizeof(float));
    lwfm_backbone *bb = NULL;
    lwfm_status st = lwfm_backbone_create(&bb, s->model);
    if (st) fail(wk, "lwfm_backbone_create", st);
    pthread_barrier_wait(&s->barrier);
    for (int r = 0; r < s->rounds && !wk->errors; r++) {
        for (int b = 0; b < N_BATCHES; b++) {
            /* the batches in a different order on every round */
            const batch *q = &s->batches[wk->t][(b + r) % N_BATCHES];
            size_t cap = (size_t)q->n * WAY;
            st = lwfm_support_score(s->support, q->images, q->n, s->c, s->h, s->w, out, cap);
            if (st || !SAME(out, q->logits, cap)) fail(wk, "lwfm_support_score", st);
            st = lwfm_support_score_features(s->support_feat, q->features, q->n, s->C, s->fh,
                                             s->fw, out, cap);
            if (st || !SAME(out, q->logits_feat, cap))
                fail(wk, "lwfm_support_score_features", st);
            st = lwfm_model_features(s->model, q->images, q->n, s->c, s->h, s->w, feat,
                                     feat_cap);
            if (st || !SAME(feat, q->features, (size_t)q->n * s->fm))
                fail(wk, "lwfm_model_features", st);
            if (bb) {
                st = lwfm_backbone_forward(bb, q->images, q->n, s->c, s->h, s->w, feat,
                                           feat_cap);
                if (st || !SAME(feat, q->features, (size_t)q->n * s->fm))
                    fail(wk, "lwfm_backbone_forward", st);
            }
            st = lwfm_model_preprocess(s->model, q->raw, LWFM_PIXEL_U8, RAW, RAW, 3, 0, pre,
                                       s->img);
            if (st || !SAME(pre, q->preprocessed, s->img)) fail(wk, "lwfm_model_preprocess", st);
            if (r == 0) { /* the one-call form runs the support backbone too: once */
                st = lwfm_episode_score(s->model, s->support_images, N_SUPPORT, labels,
                                        q->images, q->n, s->c, s->h, s->w, WAY, out, cap);
                if (st || !SAME(out, q->logits_episode, cap)) fail(wk, "lwfm_episode_score", st);
            }
        }
    }
    lwfm_backbone_destroy(bb);
    free(feat);
    free(pre);
    return NULL;
}

/* Part 2: private model handles loaded, used and destroyed concurrently. */
static void *work_private(void *arg) {
    worker *wk = arg;
    shared *s = wk->s;
    float out[MAX_BATCH * WAY];
    const batch *q = &s->batches[wk->t][0];
    size_t cap = (size_t)q->n * WAY;
    char bad_path[64];
    snprintf(bad_path, sizeof bad_path, "/nonexistent/thread-%d.npz", wk->t);
    pthread_barrier_wait(&s->barrier);
    int loads = s->rounds < 2 ? 2 : s->rounds;
    if (loads > 3) loads = 3; /* loading is the expensive part */
    for (int r = 0; r < loads && !wk->errors; r++) {
        lwfm_model *m = NULL;
        lwfm_support *sp = NULL;
        lwfm_status st = (wk->t + r) % 2
                             ? lwfm_model_load(&m, s->path, NULL)
                             : lwfm_model_load_from_memory(&m, s->file, s->file_size, NULL);
        if (st) {
            fail(wk, "lwfm_model_load", st);
            break;
        }
        /* a failing call on this thread, while the others succeed or fail */
        lwfm_model *none = NULL;
        st = lwfm_model_load(&none, bad_path, NULL);
        if (st != LWFM_ERR_IO || none || !strstr(lwfm_last_error(), bad_path))
            fail(wk, "per-thread error detail", st);
        st = lwfm_support_prepare(&sp, m, s->support_images, N_SUPPORT, labels, s->c, s->h, s->w,
                                  WAY);
        if (st) fail(wk, "lwfm_support_prepare on a private model", st);
        if ((wk->t + r) % 2 == 0) { /* drop the model first: the set keeps it alive */
            lwfm_model_destroy(m);
            m = NULL;
        }
        if (sp) {
            st = lwfm_support_score(sp, q->images, q->n, s->c, s->h, s->w, out, cap);
            if (st || !SAME(out, q->logits, cap)) fail(wk, "score on a private model", st);
        }
        lwfm_support_destroy(sp);
        lwfm_model_destroy(m);
        /* and the shared model, between loads */
        st = lwfm_support_score(s->support, q->images, q->n, s->c, s->h, s->w, out, cap);
        if (st || !SAME(out, q->logits, cap)) fail(wk, "lwfm_support_score between loads", st);
    }
    return NULL;
}

static int run_threads(shared *s, void *(*fn)(void *), const char *part) {
    worker wk[N_THREADS];
    pthread_barrier_init(&s->barrier, NULL, N_THREADS);
    int started = 0;
    for (int t = 0; t < N_THREADS; t++) {
        wk[t] = (worker){.s = s, .t = t};
        if (pthread_create(&wk[t].thread, NULL, fn, &wk[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(1); /* the others wait at the barrier forever */
        }
        started++;
    }
    int errors = 0;
    for (int t = 0; t < started; t++) {
        pthread_join(wk[t].thread, NULL);
        if (wk[t].errors)
            fprintf(stderr, "%s: %s: thread %d: %d failure(s), first: %s\n", s->path, part, t,
                    wk[t].errors, wk[t].what);
        errors += wk[t].errors;
    }
    pthread_barrier_destroy(&s->barrier);
    return errors;
}

static void *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = n > 0 ? test_alloc((size_t)n) : NULL;
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

static void test_model(const char *path, int rounds) {
    shared *s = calloc(1, sizeof *s);
    if (!s) exit(1);
    s->path = path;
    s->rounds = rounds;
    lwfm_status st = lwfm_model_load(&s->model, path, NULL);
    if (st) {
        fprintf(stderr, "cannot load %s: %s: %s\n", path, lwfm_status_string(st),
                lwfm_last_error());
        fails++;
        free(s);
        return;
    }
    void *file = read_file(path, &s->file_size);
    EXPECT(file != NULL);
    s->file = file;
    EXPECT(lwfm_model_input_shape(s->model, &s->c, &s->h, &s->w) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(s->model, s->h, s->w, &s->C, &s->fh, &s->fw) == LWFM_OK);
    s->img = (size_t)(s->c * s->h * s->w);
    s->fm = (size_t)(s->C * s->fh * s->fw);

    /* Support images and their two prepared sets. */
    float *support = test_alloc(N_SUPPORT * s->img * sizeof(float));
    for (size_t i = 0; i < N_SUPPORT * s->img; i++) support[i] = 2 * test_uniform();
    float *sfeat = test_alloc(N_SUPPORT * s->fm * sizeof(float));
    EXPECT(lwfm_model_features(s->model, support, N_SUPPORT, s->c, s->h, s->w, sfeat,
                               N_SUPPORT * s->fm) == LWFM_OK);
    lwfm_support *sp = NULL, *spf = NULL;
    EXPECT(lwfm_support_prepare(&sp, s->model, support, N_SUPPORT, labels, s->c, s->h, s->w,
                                WAY) == LWFM_OK);
    EXPECT(lwfm_support_prepare_features(&spf, s->model, sfeat, N_SUPPORT, labels, s->C, s->fh,
                                         s->fw, WAY) == LWFM_OK);
    s->support = sp;
    s->support_feat = spf;
    s->support_images = support;
    if (!sp || !spf) goto done;

    /* Every thread's batches and their serial results. */
    for (int t = 0; t < N_THREADS; t++)
        for (int b = 0; b < N_BATCHES; b++) {
            batch *q = &s->batches[t][b];
            q->n = batch_size(t, b);
            size_t cap = (size_t)q->n * WAY;
            float *images = test_alloc(q->n * s->img * sizeof(float));
            for (size_t i = 0; i < q->n * s->img; i++) images[i] = 2 * test_uniform();
            float *features = test_alloc(q->n * s->fm * sizeof(float));
            uint8_t *raw = test_alloc(RAW * RAW * 3);
            for (int i = 0; i < RAW * RAW * 3; i++) raw[i] = (uint8_t)((test_uniform() + 1) * 127.5f);
            q->logits = test_alloc(cap * sizeof(float));
            q->logits_feat = test_alloc(cap * sizeof(float));
            q->logits_episode = test_alloc(cap * sizeof(float));
            q->preprocessed = test_alloc(s->img * sizeof(float));
            EXPECT(lwfm_model_features(s->model, images, q->n, s->c, s->h, s->w, features,
                                       q->n * s->fm) == LWFM_OK);
            EXPECT(lwfm_support_score(sp, images, q->n, s->c, s->h, s->w, q->logits, cap) ==
                   LWFM_OK);
            EXPECT(lwfm_support_score_features(spf, features, q->n, s->C, s->fh, s->fw,
                                               q->logits_feat, cap) == LWFM_OK);
            EXPECT(lwfm_episode_score(s->model, support, N_SUPPORT, labels, images, q->n, s->c,
                                      s->h, s->w, WAY, q->logits_episode, cap) == LWFM_OK);
            EXPECT(lwfm_model_preprocess(s->model, raw, LWFM_PIXEL_U8, RAW, RAW, 3, 0,
                                         q->preprocessed, s->img) == LWFM_OK);
            q->images = images;
            q->features = features;
            q->raw = raw;
        }
    /* the batches differ, and so do their logits */
    EXPECT(!SAME(s->batches[0][0].logits, s->batches[3][0].logits, WAY));
    if (fails) goto done;

    int e1 = run_threads(s, work_shared, "shared model and support set");
    EXPECT(e1 == 0);
    int e2 = run_threads(s, work_private, "private models loaded and destroyed");
    EXPECT(e2 == 0);
    printf("%s: 8 threads x %d rounds: %s; 8 threads loading/destroying: %s\n", path, rounds,
           e1 ? "FAILED" : "bitwise equal to serial", e2 ? "FAILED" : "ok");

done:
    for (int t = 0; t < N_THREADS; t++)
        for (int b = 0; b < N_BATCHES; b++) {
            batch *q = &s->batches[t][b];
            free((void *)q->images);
            free((void *)q->features);
            free((void *)q->raw);
            free(q->logits);
            free(q->logits_feat);
            free(q->logits_episode);
            free(q->preprocessed);
        }
    lwfm_support_destroy(sp);
    lwfm_support_destroy(spf);
    lwfm_model_destroy(s->model);
    free(support);
    free(sfeat);
    free(file);
    free(s);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.npz [MODEL.npz ...]\n", argv[0]);
        return 2;
    }
    int rounds = rounds_from_env(4);
    for (int i = 1; i < argc; i++) test_model(argv[i], rounds);
    if (fails) fprintf(stderr, "test_concurrency: %d of %d check(s) failed\n", fails, checks);
    else printf("test_concurrency: all %d checks passed\n", checks);
    return fails != 0;
}
