/* `lwfm info` and `lwfm classify`. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

/* ---- lwfm info ------------------------------------------------------------ */

static const char kInfoUsage[] =
    "Usage: lwfm info [--model] MODEL.npz [--json]\n"
    "\n"
    "A weight file's method, configuration (backbone, metric parameters,\n"
    "preprocessing), the input shape it expects and the feature-map shape of\n"
    "one such input.\n"
    "\n"
    "  --model PATH  weight file (.npz) or an installed model's name (omniglot);\n"
    "                the --model may be left out\n"
    "  --json        print one JSON object\n";

int cmd_info(int argc, char **argv) {
    const char *model_path = NULL, *given = NULL;
    cli_args a = {argc, argv, 2, "info", &given};
    const cli_string_option opts[] = {{"--model", &model_path}};
    int json = 0, code;
    const cli_bool_flag flags[] = {{"--json", &json}};
    if (cli_parse(&a, kInfoUsage, flags, 1, opts, 1, &code)) return code;
    if (cli_model_arg("info", &model_path, given, 1)) return EXIT_USAGE;

    lwfm_model *model = load_model(model_path);
    if (!model) return EXIT_RUNTIME;
    int rc = EXIT_RUNTIME;
    int64_t c, h, w, fc, fh, fw;
    char *config = model_config_json(model);
    lwfm_status st = config ? LWFM_OK : LWFM_ERR_OUT_OF_MEMORY;
    if (!st) st = lwfm_model_input_shape(model, &c, &h, &w);
    if (!st) st = lwfm_model_feature_shape(model, h, w, &fc, &fh, &fw);
    if (st) {
        cli_error("cannot describe model", model_path, "%s",
                  *lwfm_last_error() ? lwfm_last_error() : lwfm_status_string(st));
        goto done;
    }
    const char *method = method_name(lwfm_model_method(model));
    if (json) {
        fputs("{\"model\": ", stdout);
        json_string(stdout, model_path);
        printf(", \"method\": \"%s\", \"input_shape\": [%lld, %lld, %lld], "
               "\"feature_shape\": [%lld, %lld, %lld], \"library_version\": ",
               method, (long long)c, (long long)h, (long long)w, (long long)fc, (long long)fh,
               (long long)fw);
        json_string(stdout, lwfm_version());
        printf(", \"config\": %s}\n", config);
    } else {
        printf("model     %s\n", model_path);
        printf("method    %s\n", method);
        printf("input     %lld x %lld x %lld (channels x height x width)\n", (long long)c,
               (long long)h, (long long)w);
        printf("features  %lld x %lld x %lld for a %lld x %lld input\n", (long long)fc,
               (long long)fh, (long long)fw, (long long)h, (long long)w);
        printf("config    %s\n", config);
    }
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
done:
    free(config);
    lwfm_model_destroy(model);
    return rc;
}

/* ---- lwfm classify -------------------------------------------------------- */

static const char kClassifyUsage[] =
    "Usage: lwfm classify [--model] MODEL.npz --support DIR --query PATH... [options]\n"
    "\n"
    "Classify query images against labelled support images. DIR holds one\n"
    "sub-folder per class (classes sorted by name); every image in it (PNG, JPEG\n"
    "or WebP, turned as its EXIF orientation says) is a support image of that\n"
    "class; other files are named on stderr and left out. A query PATH is an\n"
    "image file or a directory (all its images, sorted by name). Prints, per\n"
    "query, its path, the predicted class and the probability of every class\n"
    "(softmax of the logits, calibrated when the model is: docs/models.md),\n"
    "tab-separated.\n"
    "\n"
    "  --model PATH        weight file (.npz) or an installed model's name\n"
    "                      (omniglot); the --model may be left out when\n"
    "                      MODEL.npz does not follow --query\n"
    "  --support DIR       support images, one sub-folder per class\n"
    "  --query PATH...     query images or directories (one or more; may repeat)\n"
    "  --on-bad fail|skip  an unreadable image (support or query): stop with an\n"
    "                      error (default), or report it on stderr and leave it\n"
    "                      out. Files that are not images are named on stderr and\n"
    "                      left out either way.\n"
    "  --explain DIR       write DIR/NNN_<query>.png per query: the predicted class's\n"
    "                      best-matching support image beside the query, with heat\n"
    "                      maps, matches, class names and probabilities (lwfm-spm\n"
    "                      and rcn models)\n"
    "  --precision P       backbone arithmetic: fp32 (default) or bf16\n"
    "  --threads N         OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
    "  --unknown           a query whose top probability is below the model's\n"
    "                      calibrated threshold is predicted '(none of these)'\n"
    "  --unknown-threshold P  the same with threshold P in [0, 1]\n"
    "  --json              print one JSON object\n";

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

/* Preprocess `path` into the set with `label`. 0: added; 1: bad image and
 * skipped; -1: stop (bad image with --on-bad fail, or out of memory). */
static int add_image(const lwfm_model *model, image_set *s, const char *path, int32_t label,
                     int skip_bad, bad_list *bad) {
    char err[ERR_CAP];
    float *slot = image_set_slot(s);
    if (!slot) {
        cli_error("cannot read image", path, "out of memory");
        return -1;
    }
    if (preprocess_file(model, path, slot, s->per, err, sizeof err)) {
        if (!skip_bad) {
            cli_error("cannot read image", path, "%s", err);
            cli_hint("--on-bad skip leaves unreadable images out");
            return -1;
        }
        cli_error("skipping unreadable image", path, "%s", err);
        bad_add(bad, path);
        return 1;
    }
    s->paths[s->n] = str_dup(path);
    s->labels[s->n] = label;
    s->n++;
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
            return cli_usage_error("classify", "--unknown-threshold takes a number in [0, 1], "
                                               "got '%s'", given);
    } else if (use_model) {
        *thr = lwfm_model_unknown_threshold(model);
        if (*thr <= 0.0) {
            cli_error("--unknown", NULL, "this model carries no calibrated threshold; calibrate "
                      "it with python3 -m lwfm.calibrate or give --unknown-threshold P");
            return EXIT_USAGE;
        }
    }
    return 0;
}

int cmd_classify(int argc, char **argv) {
    cli_args a = {argc, argv, 2, "classify", NULL};
    const char *model_path = NULL, *support_dir = NULL, *on_bad = "fail", *query = NULL,
               *explain_dir = NULL, *precision_s = "fp32", *unknown_s = NULL, *threads_s = NULL,
               *given = NULL;
    const cli_string_option opts[] = {{"--model", &model_path},    {"--support", &support_dir},
                                      {"--on-bad", &on_bad},       {"--query", &query},
                                      {"--explain", &explain_dir}, {"--precision", &precision_s},
                                      {"--unknown-threshold", &unknown_s},
                                      {"--threads", &threads_s}};
    const char **queries = calloc((size_t)argc, sizeof *queries);
    int64_t n_queries = 0;
    int json = 0, use_unknown = 0, r, usage = 0;
    if (!queries) return EXIT_RUNTIME;
    for (; a.i < argc && !usage; a.i++) {
        if (cli_flag(&a, "--help") || cli_flag(&a, "-h")) {
            fputs(kClassifyUsage, stdout);
            free(queries);
            return EXIT_OK;
        }
        if (cli_flag(&a, "--json")) {
            json = 1;
        } else if (cli_flag(&a, "--unknown")) {
            use_unknown = 1;
        } else if (cli_flag(&a, "--query")) { /* one or more values */
            int first = a.i + 1;
            while (a.i + 1 < argc && strncmp(argv[a.i + 1], "--", 2) != 0)
                queries[n_queries++] = argv[++a.i];
            if (a.i < first)
                usage = cli_usage_error("classify", "option --query needs at least one path");
        } else if ((r = cli_options(&a, opts, 8)) != 0) {
            if (r < 0) usage = EXIT_USAGE;
            if (query) queries[n_queries++] = query; /* --query=PATH */
            query = NULL;
        } else if (!given && argv[a.i][0] != '-' && argv[a.i][0]) {
            given = argv[a.i]; /* the model, positional */
        } else {
            usage = cli_usage_error("classify", "unexpected argument '%s'", argv[a.i]);
        }
    }
    if (!usage) usage = cli_model_arg("classify", &model_path, given, 0);
    if (!usage) usage = cli_threads("classify", threads_s);
    const char *missing = !model_path    ? "--model"
                          : !support_dir ? "--support"
                          : !n_queries   ? "--query"
                                         : NULL;
    if (!usage && missing) usage = cli_usage_error("classify", "%s is required", missing);
    if (!usage && explain_dir && !*explain_dir)
        usage = cli_usage_error("classify", "--explain needs a folder");
    lwfm_precision precision = LWFM_PRECISION_FP32;
    if (!usage) usage = cli_precision("classify", precision_s, &precision);
    if (!usage && strcmp(on_bad, "fail") && strcmp(on_bad, "skip"))
        usage = cli_usage_error("classify", "--on-bad takes 'fail' or 'skip', got '%s'", on_bad);
    if (usage) {
        free(queries);
        return EXIT_USAGE;
    }
    const int skip_bad = !strcmp(on_bad, "skip");

    int rc = EXIT_RUNTIME;
    char err[ERR_CAP];
    lwfm_model *model = NULL;
    lwfm_support *set = NULL;
    image_set sup = {0}, qry = {0};
    bad_list bad = {0};
    char **classes = NULL;
    int64_t n_classes = 0, way = 0, *counts = NULL;
    float *logits = NULL, *prob = NULL;
    double threshold = -1.0;
    int64_t c, h, w;
    explainer *ex = NULL;
    char **explained = NULL; /* per query, the explanation's path */

    model = load_model_precision(model_path, precision);
    if (!model) goto done;
    if ((r = unknown_threshold(model, use_unknown, unknown_s, &threshold)) != 0) {
        rc = r;
        goto done;
    }
    if (explain_dir && explain_open(&ex, model, model_path, explain_dir)) goto done;
    lwfm_model_input_shape(model, &c, &h, &w);
    sup.per = qry.per = (size_t)(c * h * w);

    /* support: one sub-folder per class; folders without images are no class */
    if (list_dir(support_dir, 1, &classes, &n_classes, err, sizeof err)) {
        cli_error("cannot read support folder", support_dir, "%s", err);
        goto done;
    }
    counts = calloc((size_t)(n_classes ? n_classes : 1), sizeof *counts);
    if (!counts) goto done;
    for (int64_t k = 0; k < n_classes; k++) {
        char *dir = path_join(support_dir, classes[k]);
        char **files = NULL;
        int64_t n = 0;
        if (list_images(dir, &files, &n, err, sizeof err)) {
            cli_error("cannot read class folder", dir, "%s", err);
            free(dir);
            goto done;
        }
        if (n > 0) { /* this folder is class number `way` */
            char *tmp = classes[way];
            classes[way] = classes[k];
            classes[k] = tmp;
            for (int64_t i = 0; i < n; i++) {
                char *path = path_join(dir, files[i]);
                int got = add_image(model, &sup, path, (int32_t)way, skip_bad, &bad);
                free(path);
                if (got < 0) {
                    free_names(files, n);
                    free(dir);
                    goto done;
                }
                counts[way] += got == 0;
            }
            if (counts[way] == 0) {
                cli_error("no readable support image for class", dir, "all %lld images are bad",
                          (long long)n);
                free_names(files, n);
                free(dir);
                goto done;
            }
            way++;
        }
        free_names(files, n);
        free(dir);
    }
    if (way < 2) {
        cli_error("not enough classes", support_dir,
                  "found %lld class folder%s with images; "
                  "2 or more are needed",
                  (long long)way, way == 1 ? "" : "s");
        cli_hint("--support DIR holds one sub-folder of .png/.jpg/.jpeg/.webp images per class");
        goto done;
    }

    /* queries: files, or directories of images */
    for (int64_t k = 0; k < n_queries; k++) {
        struct stat sb;
        if (stat(queries[k], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            char **files = NULL;
            int64_t n = 0;
            if (list_images(queries[k], &files, &n, err, sizeof err)) {
                cli_error("cannot read query folder", queries[k], "%s", err);
                goto done;
            }
            if (n == 0) {
                cli_error("no query images", queries[k],
                          "no .png/.jpg/.jpeg/.webp files in the folder");
                goto done;
            }
            for (int64_t i = 0; i < n; i++) {
                char *path = path_join(queries[k], files[i]);
                int got = add_image(model, &qry, path, -1, skip_bad, &bad);
                free(path);
                if (got < 0) {
                    free_names(files, n);
                    goto done;
                }
            }
            free_names(files, n);
        } else if (add_image(model, &qry, queries[k], -1, skip_bad, &bad) < 0) {
            goto done;
        }
    }
    if (qry.n == 0) {
        cli_error("nothing to classify", NULL, "every query image was unreadable");
        goto done;
    }

    lwfm_status st = lwfm_support_prepare(&set, model, sup.data, sup.n, sup.labels, c, h, w, way);
    if (st) {
        cli_error("cannot prepare the support set", support_dir, "%s", lwfm_last_error());
        goto done;
    }
    logits = malloc((size_t)qry.n * (size_t)way * sizeof *logits);
    prob = malloc((size_t)qry.n * (size_t)way * sizeof *prob);
    if (!logits || !prob) {
        cli_error("cannot classify", NULL, "out of memory");
        goto done;
    }
    enum { BATCH = 32 };
    for (int64_t q = 0; q < qry.n; q += BATCH) {
        int64_t n = qry.n - q < BATCH ? qry.n - q : BATCH;
        st = lwfm_support_score(set, qry.data + (size_t)q * qry.per, n, c, h, w,
                                logits + (size_t)q * (size_t)way, (size_t)(n * way));
        if (st) {
            cli_error("cannot score queries", qry.paths[q], "%s", lwfm_last_error());
            goto done;
        }
    }

    st = lwfm_model_probabilities(model, logits, qry.n, way, prob, (size_t)(qry.n * way));
    if (st) {
        cli_error("cannot compute probabilities", NULL, "%s", lwfm_last_error());
        goto done;
    }

    if (ex) { /* before any output: a failure leaves stdout empty */
        explained = calloc((size_t)qry.n, sizeof *explained);
        if (!explained) {
            cli_error("cannot explain", NULL, "out of memory");
            goto done;
        }
        for (int64_t q = 0; q < qry.n; q++) {
            const float *l = logits + (size_t)q * (size_t)way;
            int64_t best = 0;
            for (int64_t k = 1; k < way; k++)
                if (l[k] > l[best]) best = k;
            explained[q] = explain_query(ex, sup.data, sup.paths, sup.labels, sup.n,
                                         qry.data + (size_t)q * qry.per, qry.paths[q], q,
                                         (int32_t)best, classes, prob + (size_t)q * (size_t)way,
                                         way);
            if (!explained[q]) goto done;
        }
    }

    if (json) {
        fputs("{\"model\": ", stdout);
        json_string(stdout, model_path);
        fputs(", \"support\": ", stdout);
        json_string(stdout, support_dir);
        fputs(", \"classes\": [", stdout);
        for (int64_t k = 0; k < way; k++) {
            fputs(k ? ", " : "", stdout);
            json_string(stdout, classes[k]);
        }
        fputs("], \"support_counts\": [", stdout);
        for (int64_t k = 0; k < way; k++) printf("%s%lld", k ? ", " : "", (long long)counts[k]);
        fputs("], \"skipped\": [", stdout);
        for (int64_t k = 0; k < bad.n; k++) {
            fputs(k ? ", " : "", stdout);
            json_string(stdout, bad.paths[k]);
        }
        fputs("], \"queries\": [", stdout);
    }
    for (int64_t q = 0; q < qry.n; q++) {
        const float *l = logits + (size_t)q * (size_t)way;
        int64_t best = 0;
        for (int64_t k = 1; k < way; k++)
            if (l[k] > l[best]) best = k;
        const float *p = prob + (size_t)q * (size_t)way;
        const int none = p[best] < threshold; /* threshold -1: never */
        if (json) {
            fputs(q ? ", {\"path\": " : "{\"path\": ", stdout);
            json_string(stdout, qry.paths[q]);
            fputs(", \"prediction\": ", stdout);
            if (none)
                fputs("null", stdout);
            else
                json_string(stdout, classes[best]);
            printf(", \"label\": %lld, \"probabilities\": [", none ? -1LL : (long long)best);
            for (int64_t k = 0; k < way; k++) {
                fputs(k ? ", " : "", stdout);
                json_f32(stdout, p[k]);
            }
            fputs("], \"logits\": [", stdout);
            for (int64_t k = 0; k < way; k++) {
                fputs(k ? ", " : "", stdout);
                json_f32(stdout, l[k]);
            }
            fputs("]", stdout);
            if (explained) {
                fputs(", \"explanation\": ", stdout);
                json_string(stdout, explained[q]);
            }
            fputs("}", stdout);
        } else {
            /* one line per query, 2 + way fields, whatever the names hold */
            tsv_field(stdout, qry.paths[q]);
            putchar('\t');
            tsv_field(stdout, none ? "(none of these)" : classes[best]);
            for (int64_t k = 0; k < way; k++) {
                putchar('\t');
                tsv_field(stdout, classes[k]);
                printf("=%.4f", (double)p[k]);
            }
            putchar('\n');
        }
    }
    if (json) fputs("]}\n", stdout);
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;

done:
    if (explained) free_names(explained, qry.n);
    explain_close(ex);
    free(logits);
    free(prob);
    lwfm_support_destroy(set);
    image_set_free(&sup);
    image_set_free(&qry);
    bad_free(&bad);
    free_names(classes, n_classes);
    free(counts);
    free(queries);
    lwfm_model_destroy(model);
    return rc;
}
