/* `lwfm bench`: the standard speed measurements on this machine, with the
 * public API only (no Python): backbone throughput, episode times, the
 * metric's share of them, and streaming queries against a prepared support
 * set, in fp32, bf16 and int8 (each where the CPU and the
 * model run it). Inputs are random (fixed seed): speed does not
 * depend on pixel values. See docs/cli.md and docs/benchmarks.md.
 * Stages: parse -> options -> load (models, inputs) -> measure -> print
 * (table / JSON). */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifdef _OPENMP
#include <omp.h>
#else /* a build without OpenMP: the library runs serially */
static void omp_set_num_threads(int n) {
    (void)n;
}
static int omp_get_max_threads(void) {
    return 1;
}
#endif

typedef struct bench_options {
    const char *model, *given, *precision, *convolutions, *threads, *reps;
    int quick, json;
} bench_options;

static const cli_opt kOptions[] = {
    {"--model", "PATH", NULL, "weight file (.npz) or an installed model's name", CLI_VALUE,
     offsetof(bench_options, model)},
    {"--precision", "P", "both", "fp32, bf16, int8 or both", CLI_VALUE,
     offsetof(bench_options, precision)},
    {"--convolutions", "C", "auto",
     "3x3 convolutions of an fp32 backbone: auto (default,\n"
     "Winograd where measured faster), direct (oneDNN's: the\n"
     "least memory) or winograd",
     CLI_VALUE, offsetof(bench_options, convolutions)},
    {"--threads", "N", NULL, "OpenMP threads (default: OMP_NUM_THREADS or all cores)", CLI_VALUE,
     offsetof(bench_options, threads)},
    {"--reps", "R", NULL, "timed repetitions (default 5; --quick: 2)", CLI_VALUE,
     offsetof(bench_options, reps)},
    {"--quick", NULL, NULL, "fewer repetitions, streaming batch of 75 only once", CLI_FLAG,
     offsetof(bench_options, quick)},
    {"--json", NULL, NULL, "print one JSON object instead of the table", CLI_FLAG,
     offsetof(bench_options, json)},
};

static int cmd_bench(int argc, char **argv);

const cli_command cli_cmd_bench = {
    "bench",
    "speed of this machine: backbone, episodes, streaming queries",
    "[--model] MODEL.npz [options]",
    "Speed of the model on this machine, fp32, bf16 and int8 side by side\n"
    "(with --precision both, bf16 where the CPU runs it, int8 where the model\n"
    "has its calibration, the quant/ members of 'python3 -m lwfm.quantize';\n"
    "a precision left out is named on stderr with the reason):\n"
    "backbone images/s (a 5-way 1-shot 15-query episode's 80 images), episode\n"
    "times (5-way 1-shot and 5-shot, 15 queries per class), the metric's share\n"
    "of the backbone's time, and streaming queries (images/s scoring batches\n"
    "of 1, 16 and 75 queries against a prepared 5-way 5-shot support set).\n"
    "Each figure is the median of --reps timed repetitions after one warm-up;\n"
    "The precisions alternate repetition by repetition. Inputs are random.\n",
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    22,
    offsetof(bench_options, given),
    cmd_bench};

typedef struct bench_model {
    lwfm_model *model;
    lwfm_precision precision;
} bench_model;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* splitmix64 -> roughly normal pixels (sum of uniforms), fixed seed. */
static void fill_random(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        float acc = 0.0f;
        for (int k = 0; k < 4; k++) {
            uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            z ^= z >> 31;
            acc += (float)(z >> 40) / (float)(1 << 24);
        }
        x[i] = (acc - 2.0f) * 1.7f;
    }
}

/* Measurements, per precision. */
enum { M_BACKBONE, M_EP1, M_EP5, M_MET1, M_MET5, M_S1, M_S16, M_S75, M_COUNT };
static const char *const kNames[M_COUNT] = {
    "backbone, 80 images",       "episode 5-way 1-shot 15q",  "episode 5-way 5-shot 15q",
    "metric / backbone, 1-shot", "metric / backbone, 5-shot", "streaming, batch of 1",
    "streaming, batch of 16",    "streaming, batch of 75"};
static const char *const kKeys[M_COUNT] = {"backbone_images_per_s",   "episode_5w1s_ms",
                                           "episode_5w5s_ms",         "metric_share_1shot_pct",
                                           "metric_share_5shot_pct",  "stream_b1_images_per_s",
                                           "stream_b16_images_per_s", "stream_b75_images_per_s"};
static const char *const kUnits[M_COUNT] = {"img/s", "ms",    "ms",    "%",
                                            "%",     "img/s", "img/s", "img/s"};

typedef struct workload {
    int64_t c, h, w, C, fh, fw, way;
    float *s1, *s5, *q;       /* images: 5 supports, 25 supports, 75 queries */
    int32_t *l1, *l5;         /* labels */
    float *f_s1, *f_s5, *f_q; /* features of the same */
    float *logits, *feat_tmp;
} workload;

/* One timed call of measurement m on model bm; seconds (or -1 on error). */
static double run_once(const bench_model *bm, lwfm_support *set, const workload *wl, int m) {
    lwfm_status st = LWFM_OK;
    const lwfm_model *md = bm->model;
    size_t cap_l = (size_t)(75 * wl->way);
    double t = now_seconds();
    switch (m) {
    case M_BACKBONE: { /* 5 supports + 75 queries: the 1-shot episode's images */
        size_t per_f = (size_t)(wl->C * wl->fh * wl->fw);
        st = lwfm_model_features(md, wl->s1, 5, wl->c, wl->h, wl->w, wl->feat_tmp, 5 * per_f);
        if (!st)
            st = lwfm_model_features(md, wl->q, 75, wl->c, wl->h, wl->w, wl->feat_tmp + 5 * per_f,
                                     75 * per_f);
        break;
    }
    case M_EP1:
        st = lwfm_episode_score(md, wl->s1, 5, wl->l1, wl->q, 75, wl->c, wl->h, wl->w, wl->way,
                                wl->logits, cap_l);
        break;
    case M_EP5:
        st = lwfm_episode_score(md, wl->s5, 25, wl->l5, wl->q, 75, wl->c, wl->h, wl->w, wl->way,
                                wl->logits, cap_l);
        break;
    case M_MET1:
        st = lwfm_episode_score_features(md, wl->f_s1, 5, wl->l1, wl->f_q, 75, wl->C, wl->fh,
                                         wl->fw, wl->way, wl->logits, cap_l);
        break;
    case M_MET5:
        st = lwfm_episode_score_features(md, wl->f_s5, 25, wl->l5, wl->f_q, 75, wl->C, wl->fh,
                                         wl->fw, wl->way, wl->logits, cap_l);
        break;
    case M_S1:
    case M_S16: {
        int64_t b = m == M_S1 ? 1 : 16;
        for (int64_t i = 0; i + b <= 75 && !st; i += b) /* as many batches as fit in 75 */
            st = lwfm_support_score(set, wl->q + i * wl->c * wl->h * wl->w, b, wl->c, wl->h, wl->w,
                                    wl->logits, cap_l);
        break;
    }
    case M_S75:
        st = lwfm_support_score(set, wl->q, 75, wl->c, wl->h, wl->w, wl->logits, cap_l);
        break;
    }
    t = now_seconds() - t;
    if (st) {
        cli_error("bench", kNames[m], "%s", lwfm_last_error());
        return -1.0;
    }
    return t;
}

/* Images a streaming measurement scores per call. */
static double stream_images(int m) {
    return m == M_S1 ? 75.0 : m == M_S16 ? 64.0 : 75.0;
}

/* Whether the model loads in precision `p` here. The library refuses bf16
 * where it cannot run it (a CPU without AVX-512, a batch-statistics model)
 * and int8 without the file's calibration (LWFM_ERR_MISSING_KEY) or for a
 * backbone it does not quantise; the default "both" then leaves `p` out and
 * says why on stderr. */
static int precision_available(const char *path, lwfm_precision p) {
    lwfm_model *model = NULL;
    lwfm_load_options *opts = NULL;
    lwfm_status st = lwfm_load_options_create(&opts);
    if (!st) st = lwfm_load_options_set_precision(opts, p);
    if (!st) st = lwfm_model_load(&model, path, opts);
    lwfm_load_options_destroy(opts);
    lwfm_model_destroy(model);
    if (st != LWFM_ERR_UNSUPPORTED && st != LWFM_ERR_MISSING_KEY)
        return 1; /* other errors surface at the real load */
    fprintf(stderr, "lwfm bench: %s not measured: %s\n", cli_precision_name(p),
            lwfm_last_error());
    return 0;
}

/* ---- options ---------------------------------------------------------------- */

#define N_PRECISIONS 3 /* fp32, bf16, int8: the most one run measures */

typedef struct bench_settings {
    int n_prec;
    lwfm_precision precs[N_PRECISIONS]; /* fp32 first when several */
    lwfm_convolutions convolutions;
    int64_t reps;
    int threads; /* the OpenMP threads the library will use */
} bench_settings;

/* The checked options (with --precision both, whether bf16 and int8 load):
 * 0, or EXIT_USAGE after a usage message. */
static int check_options(bench_options *o, bench_settings *s) {
    if (cli_model_arg("bench", &o->model, o->given, 1) ||
        cli_convolutions("bench", o->convolutions, &s->convolutions))
        return EXIT_USAGE;
    if (!strcmp(o->precision, "both")) {
        s->precs[s->n_prec++] = LWFM_PRECISION_FP32;
        if (precision_available(o->model, LWFM_PRECISION_BF16))
            s->precs[s->n_prec++] = LWFM_PRECISION_BF16;
        if (precision_available(o->model, LWFM_PRECISION_INT8))
            s->precs[s->n_prec++] = LWFM_PRECISION_INT8;
    } else {
        if (cli_precision("bench", o->precision, &s->precs[0])) return EXIT_USAGE;
        s->n_prec = 1;
    }
    int64_t threads = 0;
    s->reps = o->quick ? 2 : 5;
    if (o->threads && cli_int("bench", "--threads", o->threads, 1, 1024, &threads))
        return EXIT_USAGE;
    if (o->reps && cli_int("bench", "--reps", o->reps, 1, 1000, &s->reps)) return EXIT_USAGE;
    if (threads > 0) omp_set_num_threads((int)threads);
    s->threads = omp_get_max_threads();
    return 0;
}

/* ---- the run's state -------------------------------------------------------- */

typedef struct bench_run {
    const bench_options *o;
    const bench_settings *s;
    bench_model bm[N_PRECISIONS];
    lwfm_support *sets[N_PRECISIONS];
    workload wl;
    double *times, result[N_PRECISIONS][M_COUNT];
} bench_run;

static void run_free(bench_run *r) {
    for (int p = 0; p < N_PRECISIONS; p++) {
        lwfm_support_destroy(r->sets[p]);
        lwfm_model_destroy(r->bm[p].model);
    }
    workload *wl = &r->wl;
    free(wl->s1);
    free(wl->s5);
    free(wl->q);
    free(wl->f_s1);
    free(wl->f_s5);
    free(wl->f_q);
    free(wl->feat_tmp);
    free(wl->logits);
    free(wl->l1);
    free(wl->l5);
    free(r->times);
}

/* ---- load ------------------------------------------------------------------- */

/* The workload's buffers and the timings' (the shapes known). 0, or -1 after
 * the error. */
static int alloc_workload(bench_run *r) {
    workload *wl = &r->wl;
    const size_t per = (size_t)(wl->c * wl->h * wl->w), per_f = (size_t)(wl->C * wl->fh * wl->fw);
    wl->s1 = malloc(5 * per * sizeof(float));
    wl->s5 = malloc(25 * per * sizeof(float));
    wl->q = malloc(75 * per * sizeof(float));
    wl->f_s1 = malloc(5 * per_f * sizeof(float));
    wl->f_s5 = malloc(25 * per_f * sizeof(float));
    wl->f_q = malloc(75 * per_f * sizeof(float));
    wl->feat_tmp = malloc(80 * per_f * sizeof(float));
    wl->logits = malloc(75 * 5 * sizeof(float));
    wl->l1 = malloc(5 * sizeof(int32_t));
    wl->l5 = malloc(25 * sizeof(int32_t));
    r->times = malloc((size_t)r->s->reps * N_PRECISIONS * M_COUNT * sizeof *r->times);
    if (!wl->s1 || !wl->s5 || !wl->q || !wl->f_s1 || !wl->f_s5 || !wl->f_q || !wl->feat_tmp ||
        !wl->logits || !wl->l1 || !wl->l5 || !r->times) {
        cli_error("bench", NULL, "out of memory");
        return -1;
    }
    return 0;
}

/* The random inputs, their labels, the fp32 model's features of them (the
 * metric is f32 in every precision; the share is taken against each one's
 * backbone) and the prepared support sets. 0, or -1 after the error. */
static int fill_workload(bench_run *r) {
    workload *wl = &r->wl;
    const size_t per = (size_t)(wl->c * wl->h * wl->w), per_f = (size_t)(wl->C * wl->fh * wl->fw);
    fill_random(wl->s5, 25 * per, 1);
    fill_random(wl->q, 75 * per, 2);
    for (int i = 0; i < 25; i++) wl->l5[i] = i / 5;
    for (int i = 0; i < 5; i++) {
        wl->l1[i] = i;
        memcpy(wl->s1 + i * per, wl->s5 + (size_t)(i * 5) * per, per * sizeof(float));
    }
    const lwfm_model *m0 = r->bm[0].model;
    if (lwfm_model_features(m0, wl->s5, 25, wl->c, wl->h, wl->w, wl->f_s5, 25 * per_f) ||
        lwfm_model_features(m0, wl->q, 75, wl->c, wl->h, wl->w, wl->f_q, 75 * per_f)) {
        cli_error("bench", r->o->model, "%s", lwfm_last_error());
        return -1;
    }
    for (int i = 0; i < 5; i++)
        memcpy(wl->f_s1 + i * per_f, wl->f_s5 + (size_t)(i * 5) * per_f, per_f * sizeof(float));
    for (int p = 0; p < r->s->n_prec; p++)
        if (lwfm_support_prepare(&r->sets[p], r->bm[p].model, wl->s5, 25, wl->l5, wl->c, wl->h,
                                 wl->w, 5)) {
            cli_error("bench", r->o->model, "%s", lwfm_last_error());
            return -1;
        }
    return 0;
}

/* The models (one per precision) and the workload. 0, or -1 after the error. */
static int load(bench_run *r) {
    workload *wl = &r->wl;
    for (int p = 0; p < r->s->n_prec; p++) {
        r->bm[p].precision = r->s->precs[p];
        if (!(r->bm[p].model =
                  load_model_precision(r->o->model, r->s->precs[p], r->s->convolutions)))
            return -1;
    }
    wl->way = 5;
    lwfm_model_input_shape(r->bm[0].model, &wl->c, &wl->h, &wl->w);
    if (lwfm_model_feature_shape(r->bm[0].model, wl->h, wl->w, &wl->C, &wl->fh, &wl->fw)) {
        cli_error("bench", r->o->model, "%s", lwfm_last_error());
        return -1;
    }
    return alloc_workload(r) || fill_workload(r) ? -1 : 0;
}

/* ---- measure ---------------------------------------------------------------- */

/* Measurement m for every precision: a warm-up (primitives created, buffers
 * grown), then timed repetitions alternating between the precisions; the
 * medians as rates or milliseconds. 0, or -1 after the error. */
static int measure(bench_run *r, int m) {
    const bench_settings *s = r->s;
    for (int p = 0; p < s->n_prec; p++)
        if (run_once(&r->bm[p], r->sets[p], &r->wl, m) < 0) return -1;
    int64_t mreps = (r->o->quick && m == M_S1) ? 1 : s->reps;
    for (int64_t k = 0; k < mreps; k++)
        for (int p = 0; p < s->n_prec; p++) {
            double t = run_once(&r->bm[p], r->sets[p], &r->wl, m);
            if (t < 0) return -1;
            r->times[(p * M_COUNT + m) * s->reps + k] = t;
        }
    for (int p = 0; p < s->n_prec; p++) {
        double t = median(&r->times[(p * M_COUNT + m) * s->reps], (int)mreps);
        switch (m) {
        case M_BACKBONE:
            r->result[p][m] = 80.0 / t;
            break;
        case M_EP1:
        case M_EP5:
        case M_MET1:
        case M_MET5:
            r->result[p][m] = 1e3 * t;
            break;
        default:
            r->result[p][m] = stream_images(m) / t;
        }
    }
    return 0;
}

/* Every measurement. 0, or -1 after the error. */
static int measure_all(bench_run *r) {
    if (!r->o->json)
        fprintf(stderr, "lwfm bench: %lld threads, %lld reps per figure...\n",
                (long long)r->s->threads, (long long)r->s->reps);
    for (int m = 0; m < M_COUNT; m++)
        if (measure(r, m)) return -1;
    /* metric share: metric time over the backbone time of that episode's
     * images (80 for 1-shot, 100 for 5-shot, from the backbone's rate) */
    for (int p = 0; p < r->s->n_prec; p++) {
        double bb = 1e3 / r->result[p][M_BACKBONE];
        r->result[p][M_MET1] = 100.0 * r->result[p][M_MET1] / (80.0 * bb);
        r->result[p][M_MET5] = 100.0 * r->result[p][M_MET5] / (100.0 * bb);
    }
    return 0;
}

/* ---- print ------------------------------------------------------------------ */

static void print_json(const bench_run *r) {
    const bench_settings *s = r->s;
    const workload *wl = &r->wl;
    printf("{\"model\": ");
    json_string(stdout, r->o->model);
    printf(", \"method\": \"%s\", \"threads\": %d, \"reps\": %lld, \"input\": [%lld, %lld, %lld]",
           method_name(lwfm_model_method(r->bm[0].model)), s->threads, (long long)s->reps,
           (long long)wl->c, (long long)wl->h, (long long)wl->w);
    for (int p = 0; p < s->n_prec; p++) {
        printf(", \"%s\": {", cli_precision_name(s->precs[p]));
        for (int m = 0; m < M_COUNT; m++)
            printf("%s\"%s\": %.6g", m ? ", " : "", kKeys[m], r->result[p][m]);
        printf("}");
    }
    printf("}\n");
}

/* A Markdown table: a row per measurement, a column per precision (and each
 * other precision's ratio to fp32 when several were measured). */
static void print_table(const bench_run *r) {
    const bench_settings *s = r->s;
    const workload *wl = &r->wl;
    const int n_prec = s->n_prec;
    printf("lwfm bench: %s (%s), input %lldx%lldx%lld, %d threads, median of %lld reps\n\n",
           r->o->model, method_name(lwfm_model_method(r->bm[0].model)), (long long)wl->c,
           (long long)wl->h, (long long)wl->w, s->threads, (long long)s->reps);
    printf("| measure | unit |");
    for (int p = 0; p < n_prec; p++) printf(" %s |", cli_precision_name(s->precs[p]));
    for (int p = 1; p < n_prec; p++) printf(" %s / fp32 |", cli_precision_name(s->precs[p]));
    printf("\n|---|---|");
    for (int p = 0; p < 2 * n_prec - 1; p++) printf("---|");
    printf("\n");
    for (int m = 0; m < M_COUNT; m++) {
        printf("| %s | %s |", kNames[m], kUnits[m]);
        for (int p = 0; p < n_prec; p++)
            printf(" %.*f |", r->result[p][m] >= 100 ? 1 : 2, r->result[p][m]);
        for (int p = 1; p < n_prec; p++) printf(" %.2f |", r->result[p][m] / r->result[0][m]);
        printf("\n");
    }
}

/* ---- the command ------------------------------------------------------------ */

static int cmd_bench(int argc, char **argv) {
    bench_options o = {0};
    bench_settings s = {0};
    int code;
    if (cli_parse_command(&cli_cmd_bench, argc, argv, &o, &code)) return code;
    if (check_options(&o, &s)) return EXIT_USAGE;
    bench_run r = {0};
    r.o = &o;
    r.s = &s;
    int rc = EXIT_RUNTIME;
    if (!load(&r) && !measure_all(&r)) {
        if (o.json)
            print_json(&r);
        else
            print_table(&r);
        rc = EXIT_OK;
    }
    run_free(&r);
    return rc;
}
