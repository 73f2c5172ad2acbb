/* `lwfm classify`: query images against a folder of labelled support images.
 * Stages: parse -> options -> load (model, support, queries) -> score
 * (prepare, score, probabilities, explanations) -> print (text / JSON). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

typedef struct classify_options {
    const char *model, *given, *support, *on_bad, *explain, *precision, *convolutions, *threads;
    const char *unknown_threshold;
    cli_list queries;
    int unknown, json;
} classify_options;

static const cli_opt kOptions[] = {
    {"--model", "PATH", NULL,
     "weight file (.npz) or an installed model's name\n"
     "(omniglot); the --model may be left out when\n"
     "MODEL.npz does not follow --query",
     CLI_VALUE, offsetof(classify_options, model)},
    {"--support", "DIR", NULL, "support images, one sub-folder per class", CLI_VALUE,
     offsetof(classify_options, support)},
    {"--query", "PATH...", NULL, "query images or directories (one or more; may repeat)", CLI_LIST,
     offsetof(classify_options, queries)},
    {"--on-bad", "fail|skip", "fail",
     "an unreadable image (support or query): stop with an\n"
     "error (default), or report it on stderr and leave it\n"
     "out. Files that are not images are named on stderr and\n"
     "left out either way.",
     CLI_VALUE, offsetof(classify_options, on_bad)},
    {"--explain", "DIR", NULL,
     "write DIR/NNN_<query>.png per query: the predicted class's\n"
     "best-matching support image beside the query, with heat\n"
     "maps, matches, class names and probabilities (lwfm-spm\n"
     "and rcn models)",
     CLI_VALUE, offsetof(classify_options, explain)},
    {"--precision", "P", "fp32", "backbone arithmetic: fp32 (default), bf16 or int8", CLI_VALUE,
     offsetof(classify_options, precision)},
    {"--convolutions", "C", "auto",
     "3x3 convolutions of an fp32 backbone: auto (default,\n"
     "Winograd where measured faster), direct (oneDNN's: the\n"
     "least memory) or winograd",
     CLI_VALUE, offsetof(classify_options, convolutions)},
    {"--threads", "N", NULL, "OpenMP threads (default: OMP_NUM_THREADS or all cores)", CLI_VALUE,
     offsetof(classify_options, threads)},
    {"--unknown", NULL, NULL,
     "a query whose top probability is below the model's\n"
     "calibrated threshold is predicted '(none of these)'",
     CLI_FLAG, offsetof(classify_options, unknown)},
    {"--unknown-threshold", "P", NULL, "the same with threshold P in [0, 1]", CLI_VALUE,
     offsetof(classify_options, unknown_threshold)},
    {"--json", NULL, NULL, "print one JSON object", CLI_FLAG, offsetof(classify_options, json)},
};

static int cmd_classify(int argc, char **argv);

const cli_command cli_cmd_classify = {
    "classify",
    "classify query images against a folder of labelled support images",
    "[--model] MODEL.npz --support DIR --query PATH... [options]",
    "Classify query images against labelled support images. DIR holds one\n"
    "sub-folder per class (classes sorted by name); every image in it (PNG, JPEG\n"
    "or WebP, turned as its EXIF orientation says) is a support image of that\n"
    "class; other files are named on stderr and left out. A query PATH is an\n"
    "image file or a directory (all its images, sorted by name). Prints, per\n"
    "query, its path, the predicted class and the probability of every class\n"
    "(softmax of the logits, calibrated when the model is: docs/models.md),\n"
    "tab-separated.\n",
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    22,
    offsetof(classify_options, given),
    cmd_classify};

/* ---- options ---------------------------------------------------------------- */

/* The checked options: 0, or EXIT_USAGE after a usage message. */
static int check_options(classify_options *o, lwfm_precision *precision,
                         lwfm_convolutions *convolutions) {
    if (cli_model_arg("classify", &o->model, o->given, 0)) return EXIT_USAGE;
    if (cli_threads("classify", o->threads)) return EXIT_USAGE;
    const char *missing = !o->model       ? "--model"
                          : !o->support   ? "--support"
                          : !o->queries.n ? "--query"
                                          : NULL;
    if (missing) return cli_usage_error("classify", "%s is required", missing);
    if (o->explain && !*o->explain) return cli_usage_error("classify", "--explain needs a folder");
    if (cli_precision("classify", o->precision, precision) ||
        cli_convolutions("classify", o->convolutions, convolutions))
        return EXIT_USAGE;
    if (strcmp(o->on_bad, "fail") && strcmp(o->on_bad, "skip"))
        return cli_usage_error("classify", "--on-bad takes 'fail' or 'skip', got '%s'", o->on_bad);
    return 0;
}

/* The "none of these" threshold asked for: --unknown-threshold P, or the
 * model's own with --unknown (an error when the model has none); -1: off. */
static int unknown_threshold(const lwfm_model *model, int use_model, const char *given,
                             double *thr) {
    *thr = -1.0;
    if (given) {
        char *end;
        *thr = strtod(given, &end);
        if (*end || end == given || !(*thr >= 0.0 && *thr <= 1.0))
            return cli_usage_error("classify",
                                   "--unknown-threshold takes a number in [0, 1], "
                                   "got '%s'",
                                   given);
    } else if (use_model) {
        *thr = lwfm_model_unknown_threshold(model);
        if (*thr <= 0.0) {
            cli_error("--unknown", NULL,
                      "this model carries no calibrated threshold; calibrate "
                      "it with python3 -m lwfm.calibrate or give --unknown-threshold P");
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* ---- images ----------------------------------------------------------------- */

/* A growable array of preprocessed images. */
typedef struct image_set {
    float *data;
    int64_t n, cap;
    size_t per; /* floats per image */
    char **paths;
    int32_t *labels;
} image_set;

static float *image_set_slot(image_set *s) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 16;
        float *d = realloc(s->data, (size_t)cap * s->per * sizeof(float));
        if (!d) return NULL;
        s->data = d;
        char **p = realloc(s->paths, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        s->paths = p;
        int32_t *l = realloc(s->labels, (size_t)cap * sizeof *l);
        if (!l) return NULL;
        s->labels = l;
        s->cap = cap;
    }
    return s->data + (size_t)s->n * s->per;
}

static void image_set_free(image_set *s) {
    for (int64_t i = 0; i < s->n; i++) free(s->paths[i]);
    free(s->paths);
    free(s->data);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

typedef struct bad_list {
    char **paths;
    int64_t n;
} bad_list;

static void bad_add(bad_list *b, const char *path) {
    char **p = realloc(b->paths, (size_t)(b->n + 1) * sizeof *p);
    if (!p) return; /* the path was reported on stderr already */
    b->paths = p;
    b->paths[b->n++] = str_dup(path);
}

static void bad_free(bad_list *b) {
    free_names(b->paths, b->n);
    memset(b, 0, sizeof *b);
}

/* ---- the run's state -------------------------------------------------------- */

typedef struct classify_run {
    const classify_options *o;
    int skip_bad;
    lwfm_model *model;
    int64_t c, h, w;
    image_set sup, qry;
    bad_list bad;
    char **classes; /* the class folders; the first `way` are the classes */
    int64_t n_classes, way, *counts;
    lwfm_support *set;
    float *logits, *prob; /* qry.n x way */
    double threshold;     /* -1: no "none of these" */
    explainer *ex;
    char **explained; /* per query, the explanation's path */
} classify_run;

static void run_free(classify_run *r) {
    if (r->explained) free_names(r->explained, r->qry.n);
    explain_close(r->ex);
    free(r->logits);
    free(r->prob);
    lwfm_support_destroy(r->set);
    image_set_free(&r->sup);
    image_set_free(&r->qry);
    bad_free(&r->bad);
    free_names(r->classes, r->n_classes);
    free(r->counts);
    lwfm_model_destroy(r->model);
}

/* ---- load ------------------------------------------------------------------- */

/* Preprocess `path` into the set with `label`. 0: added; 1: bad image and
 * skipped; -1: stop (bad image with --on-bad fail, or out of memory). */
static int add_image(classify_run *r, image_set *s, const char *path, int32_t label) {
    char err[ERR_CAP];
    float *slot = image_set_slot(s);
    if (!slot) {
        cli_error("cannot read image", path, "out of memory");
        return -1;
    }
    if (preprocess_file(r->model, path, slot, s->per, err, sizeof err)) {
        if (!r->skip_bad) {
            cli_error("cannot read image", path, "%s", err);
            cli_hint("--on-bad skip leaves unreadable images out");
            return -1;
        }
        cli_error("skipping unreadable image", path, "%s", err);
        bad_add(&r->bad, path);
        return 1;
    }
    s->paths[s->n] = str_dup(path);
    s->labels[s->n] = label;
    s->n++;
    return 0;
}

/* The images of class folder `dir` (n files) as class number r->way. 0, or
 * -1 after the error. */
static int load_class(classify_run *r, const char *dir, char **files, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        char *path = path_join(dir, files[i]);
        int got = add_image(r, &r->sup, path, (int32_t)r->way);
        free(path);
        if (got < 0) return -1;
        r->counts[r->way] += got == 0;
    }
    if (r->counts[r->way] == 0) {
        cli_error("no readable support image for class", dir, "all %lld images are bad",
                  (long long)n);
        return -1;
    }
    return 0;
}

/* The support folder: one sub-folder per class; folders without images are
 * no class. 0, or -1 after the error. */
static int load_support(classify_run *r) {
    const char *support_dir = r->o->support;
    char err[ERR_CAP];
    if (list_dir(support_dir, 1, &r->classes, &r->n_classes, err, sizeof err)) {
        cli_error("cannot read support folder", support_dir, "%s", err);
        return -1;
    }
    r->counts = calloc((size_t)(r->n_classes ? r->n_classes : 1), sizeof *r->counts);
    if (!r->counts) return -1;
    for (int64_t k = 0; k < r->n_classes; k++) {
        char *dir = path_join(support_dir, r->classes[k]);
        char **files = NULL;
        int64_t n = 0;
        int failed = list_images(dir, &files, &n, err, sizeof err);
        if (failed) cli_error("cannot read class folder", dir, "%s", err);
        if (!failed && n > 0) { /* this folder is class number `way` */
            char *tmp = r->classes[r->way];
            r->classes[r->way] = r->classes[k];
            r->classes[k] = tmp;
            failed = load_class(r, dir, files, n);
            r->way += !failed;
        }
        free_names(files, n);
        free(dir);
        if (failed) return -1;
    }
    if (r->way < 2) {
        cli_error("not enough classes", support_dir,
                  "found %lld class folder%s with images; "
                  "2 or more are needed",
                  (long long)r->way, r->way == 1 ? "" : "s");
        cli_hint("--support DIR holds one sub-folder of .png/.jpg/.jpeg/.webp images per class");
        return -1;
    }
    return 0;
}

/* One --query PATH: a file, or a directory of images. 0, or -1. */
static int load_query(classify_run *r, const char *query) {
    struct stat sb;
    if (!(stat(query, &sb) == 0 && S_ISDIR(sb.st_mode)))
        return add_image(r, &r->qry, query, -1) < 0 ? -1 : 0;
    char err[ERR_CAP], **files = NULL;
    int64_t n = 0;
    if (list_images(query, &files, &n, err, sizeof err)) {
        cli_error("cannot read query folder", query, "%s", err);
        return -1;
    }
    if (n == 0) {
        cli_error("no query images", query, "no .png/.jpg/.jpeg/.webp files in the folder");
        return -1;
    }
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        char *path = path_join(query, files[i]);
        rc = add_image(r, &r->qry, path, -1) < 0 ? -1 : 0;
        free(path);
    }
    free_names(files, n);
    return rc;
}

/* The model, the threshold, the explainer, the support set and the
 * queries. 0, or an exit status after the error. */
static int load(classify_run *r, lwfm_precision precision, lwfm_convolutions convolutions) {
    const classify_options *o = r->o;
    r->model = load_model_precision(o->model, precision, convolutions);
    if (!r->model) return EXIT_RUNTIME;
    int code = unknown_threshold(r->model, o->unknown, o->unknown_threshold, &r->threshold);
    if (code) return code;
    if (o->explain && explain_open(&r->ex, r->model, o->model, o->explain)) return EXIT_RUNTIME;
    lwfm_model_input_shape(r->model, &r->c, &r->h, &r->w);
    r->sup.per = r->qry.per = (size_t)(r->c * r->h * r->w);
    if (load_support(r)) return EXIT_RUNTIME;
    for (int64_t k = 0; k < o->queries.n; k++)
        if (load_query(r, o->queries.items[k])) return EXIT_RUNTIME;
    if (r->qry.n == 0) {
        cli_error("nothing to classify", NULL, "every query image was unreadable");
        return EXIT_RUNTIME;
    }
    return 0;
}

/* ---- score ------------------------------------------------------------------ */

/* The first maximum of query q's logits. */
static int64_t predicted(const classify_run *r, int64_t q) {
    const float *l = r->logits + (size_t)q * (size_t)r->way;
    int64_t best = 0;
    for (int64_t k = 1; k < r->way; k++)
        if (l[k] > l[best]) best = k;
    return best;
}

/* The explanations, before any output: a failure leaves stdout empty. */
static int explain_all(classify_run *r) {
    r->explained = calloc((size_t)r->qry.n, sizeof *r->explained);
    if (!r->explained) {
        cli_error("cannot explain", NULL, "out of memory");
        return -1;
    }
    for (int64_t q = 0; q < r->qry.n; q++) {
        r->explained[q] = explain_query(r->ex, r->sup.data, r->sup.paths, r->sup.labels, r->sup.n,
                                        r->qry.data + (size_t)q * r->qry.per, r->qry.paths[q], q,
                                        (int32_t)predicted(r, q), r->classes,
                                        r->prob + (size_t)q * (size_t)r->way, r->way);
        if (!r->explained[q]) return -1;
    }
    return 0;
}

/* Prepare the support set, score the queries in batches, their
 * probabilities and explanations. 0, or -1 after the error. */
static int score(classify_run *r) {
    const int64_t way = r->way, c = r->c, h = r->h, w = r->w;
    lwfm_status st =
        lwfm_support_prepare(&r->set, r->model, r->sup.data, r->sup.n, r->sup.labels, c, h, w, way);
    if (st) {
        cli_error("cannot prepare the support set", r->o->support, "%s", lwfm_last_error());
        return -1;
    }
    r->logits = malloc((size_t)r->qry.n * (size_t)way * sizeof *r->logits);
    r->prob = malloc((size_t)r->qry.n * (size_t)way * sizeof *r->prob);
    if (!r->logits || !r->prob) {
        cli_error("cannot classify", NULL, "out of memory");
        return -1;
    }
    enum { BATCH = 32 };
    for (int64_t q = 0; q < r->qry.n; q += BATCH) {
        int64_t n = r->qry.n - q < BATCH ? r->qry.n - q : BATCH;
        st = lwfm_support_score(r->set, r->qry.data + (size_t)q * r->qry.per, n, c, h, w,
                                r->logits + (size_t)q * (size_t)way, (size_t)(n * way));
        if (st) {
            cli_error("cannot score queries", r->qry.paths[q], "%s", lwfm_last_error());
            return -1;
        }
    }
    st = lwfm_model_probabilities(r->model, r->logits, r->qry.n, way, r->prob,
                                  (size_t)(r->qry.n * way));
    if (st) {
        cli_error("cannot compute probabilities", NULL, "%s", lwfm_last_error());
        return -1;
    }
    return r->ex ? explain_all(r) : 0;
}

/* ---- print ------------------------------------------------------------------ */

static void json_floats(const float *v, int64_t n) {
    for (int64_t k = 0; k < n; k++) {
        fputs(k ? ", " : "", stdout);
        json_f32(stdout, v[k]);
    }
}

static void print_json_query(const classify_run *r, int64_t q) {
    const int64_t best = predicted(r, q);
    const float *p = r->prob + (size_t)q * (size_t)r->way;
    const int none = p[best] < r->threshold; /* threshold -1: never */
    fputs(q ? ", {\"path\": " : "{\"path\": ", stdout);
    json_string(stdout, r->qry.paths[q]);
    fputs(", \"prediction\": ", stdout);
    if (none)
        fputs("null", stdout);
    else
        json_string(stdout, r->classes[best]);
    printf(", \"label\": %lld, \"probabilities\": [", none ? -1LL : (long long)best);
    json_floats(p, r->way);
    fputs("], \"logits\": [", stdout);
    json_floats(r->logits + (size_t)q * (size_t)r->way, r->way);
    fputs("]", stdout);
    if (r->explained) {
        fputs(", \"explanation\": ", stdout);
        json_string(stdout, r->explained[q]);
    }
    fputs("}", stdout);
}

static void print_json(const classify_run *r) {
    fputs("{\"model\": ", stdout);
    json_string(stdout, r->o->model);
    fputs(", \"support\": ", stdout);
    json_string(stdout, r->o->support);
    fputs(", \"classes\": [", stdout);
    for (int64_t k = 0; k < r->way; k++) {
        fputs(k ? ", " : "", stdout);
        json_string(stdout, r->classes[k]);
    }
    fputs("], \"support_counts\": [", stdout);
    for (int64_t k = 0; k < r->way; k++) printf("%s%lld", k ? ", " : "", (long long)r->counts[k]);
    fputs("], \"skipped\": [", stdout);
    for (int64_t k = 0; k < r->bad.n; k++) {
        fputs(k ? ", " : "", stdout);
        json_string(stdout, r->bad.paths[k]);
    }
    fputs("], \"queries\": [", stdout);
    for (int64_t q = 0; q < r->qry.n; q++) print_json_query(r, q);
    fputs("]}\n", stdout);
}

/* One line per query, 2 + way fields, whatever the names hold. */
static void print_text(const classify_run *r) {
    for (int64_t q = 0; q < r->qry.n; q++) {
        const int64_t best = predicted(r, q);
        const float *p = r->prob + (size_t)q * (size_t)r->way;
        const int none = p[best] < r->threshold; /* threshold -1: never */
        tsv_field(stdout, r->qry.paths[q]);
        putchar('\t');
        tsv_field(stdout, none ? "(none of these)" : r->classes[best]);
        for (int64_t k = 0; k < r->way; k++) {
            putchar('\t');
            tsv_field(stdout, r->classes[k]);
            printf("=%.4f", (double)p[k]);
        }
        putchar('\n');
    }
}

/* ---- the command ------------------------------------------------------------ */

static int cmd_classify(int argc, char **argv) {
    classify_options o = {0};
    int code;
    if (cli_parse_command(&cli_cmd_classify, argc, argv, &o, &code)) return code;
    lwfm_precision precision = LWFM_PRECISION_FP32;
    lwfm_convolutions convolutions = LWFM_CONVOLUTIONS_AUTO;
    if (check_options(&o, &precision, &convolutions)) {
        cli_free_options(&cli_cmd_classify, &o);
        return EXIT_USAGE;
    }
    classify_run r = {0};
    r.o = &o;
    r.skip_bad = !strcmp(o.on_bad, "skip");
    r.threshold = -1.0;
    int rc = load(&r, precision, convolutions);
    if (!rc) rc = score(&r) ? EXIT_RUNTIME : 0;
    if (!rc) {
        if (o.json)
            print_json(&r);
        else
            print_text(&r);
        rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    }
    run_free(&r);
    cli_free_options(&cli_cmd_classify, &o);
    return rc;
}
