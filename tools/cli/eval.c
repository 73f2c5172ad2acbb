/* `lwfm eval`: N-way K-shot accuracy over the episodes of
 * lwfm.episodes.EpisodeSampler, so that `python3 -m lwfm.evaluate` with
 * the same arguments scores the very same episodes. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Whether the model's BatchNorm uses batch statistics (an rcn model with
 * config batch_norm 'batch'): its queries are then scored in the authors'
 * interleaved class order (c0, c1, ..., c0, c1, ...), so that each batch of
 * 25 holds 5 queries of each of 5 classes as in the official protocol. */
static int transductive(const lwfm_model *model) {
    const char *batch_norm = NULL; /* a key of rcn models only */
    return lwfm_model_config_string(model, "batch_norm", &batch_norm) == LWFM_OK &&
           !strcmp(batch_norm, "batch");
}

static const char kEvalUsage[] =
    "Usage: lwfm eval [--model] MODEL.npz --data PATH [options]\n"
    "\n"
    "Mean accuracy and 95% confidence interval of the model over few-shot\n"
    "episodes of a dataset. The episodes are those of lwfm.episodes.EpisodeSampler\n"
    "(splitmix64 from --seed): 'python3 -m lwfm.evaluate' with the same arguments\n"
    "draws the same ones.\n"
    "\n"
    "  --model PATH        weight file (.npz) or an installed model's name\n"
    "                      (omniglot), or MODEL.npz without --model; not\n"
    "                      needed with --list-episodes\n"
    "  --data PATH         an Omniglot .npz archive (bool array 'images' (classes,\n"
    "                      drawings, H, W), True = paper) or a folder with one\n"
    "                      sub-folder of .png/.jpg/.jpeg/.webp images per class\n"
    "  --way N             classes per episode (default 5)\n"
    "  --shot K            support images per class (default 1)\n"
    "  --query Q           query images per class (default 15)\n"
    "  --episodes E        number of episodes (default 600)\n"
    "  --seed S            sampler seed, any 64-bit integer (default 1)\n"
    "  --precision P       backbone arithmetic: fp32 (default) or bf16\n"
    "  --threads N         OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
    "  --on-bad fail|skip  an unreadable image: stop with an error (default; every\n"
    "                      file of a folder is opened and its header read before\n"
    "                      the first episode), or leave it out of its class\n"
    "                      (folders are then decoded in full before sampling, so\n"
    "                      the episodes are those of the dataset without the bad\n"
    "                      images). Classes with fewer than shot + query images\n"
    "                      are named on stderr and not counted.\n"
    "  --list-episodes     print the episodes as JSON lines, without scoring\n"
    "  --json              print one JSON object\n"
    "  --quiet             no progress on stderr\n";

/* ---- progress on stderr ----------------------------------------------------- */

typedef struct progress {
    int on, tty;
    const char *what;
    int64_t total, last_step;
    double start, last;
} progress;

static void progress_start(progress *p, int on, const char *what, int64_t total) {
    p->on = on;
    p->tty = on && isatty(STDERR_FILENO);
    p->what = what;
    p->total = total;
    p->last_step = 0;
    p->start = p->last = now_seconds();
}

/* accuracy < 0: none to show. Self-overwriting line on a terminal (at most
 * 10 updates a second); otherwise a plain line per tenth of the work. */
static void progress_update(progress *p, int64_t done, double accuracy) {
    if (!p->on) return;
    double t = now_seconds(), rate = done / fmax(t - p->start, 1e-9);
    int final = done == p->total;
    int64_t step = done * 10 / p->total;
    if (p->tty ? (!final && t - p->last < 0.1) : (!final && step == p->last_step)) return;
    p->last = t;
    p->last_step = step;
    char acc[48] = "";
    if (accuracy >= 0) snprintf(acc, sizeof acc, "  accuracy %.2f%%", accuracy);
    char when[32];
    long secs = lround(final ? t - p->start : (double)(p->total - done) / fmax(rate, 1e-9));
    if (secs >= 3600)
        snprintf(when, sizeof when, "%ldh%02ldm", secs / 3600, secs / 60 % 60);
    else if (secs >= 60)
        snprintf(when, sizeof when, "%ldm%02lds", secs / 60, secs % 60);
    else
        snprintf(when, sizeof when, "%lds", secs);
    fprintf(stderr, "%s%s %lld/%lld%s  %.1f/s  %s %s%s", p->tty ? "\r" : "", p->what,
            (long long)done, (long long)p->total, acc, rate, final ? "took" : "ETA", when,
            p->tty ? (final ? "\x1b[K\n" : "\x1b[K") : "\n");
    fflush(stderr);
}

/* ---- preprocessed images, decoded once ------------------------------------ */

typedef struct image_cache {
    const dataset *ds;
    const lwfm_model *model;
    size_t per;      /* floats per image */
    int64_t *offset; /* first item of each class */
    float **images;  /* per item, NULL until needed */
    int64_t n_items;
} image_cache;

static int cache_init(image_cache *c, const dataset *ds, const lwfm_model *model, size_t per) {
    memset(c, 0, sizeof *c);
    c->ds = ds;
    c->model = model;
    c->per = per;
    c->offset = malloc((size_t)(ds->n_classes + 1) * sizeof *c->offset);
    if (!c->offset) return -1;
    c->offset[0] = 0;
    for (int64_t k = 0; k < ds->n_classes; k++) c->offset[k + 1] = c->offset[k] + ds->sizes[k];
    c->n_items = c->offset[ds->n_classes];
    c->images = calloc((size_t)(c->n_items ? c->n_items : 1), sizeof *c->images);
    return c->images ? 0 : -1;
}

static void cache_free(image_cache *c) {
    if (c->images)
        for (int64_t i = 0; i < c->n_items; i++) free(c->images[i]);
    free(c->images);
    free(c->offset);
    memset(c, 0, sizeof *c);
}

/* Decode (and, with a model, preprocess) one example. 0, or -1 with err. */
static int load_item(const dataset *ds, const lwfm_model *model, size_t per, int64_t cls,
                     int64_t idx, float **out, char *err, size_t cap) {
    cli_image img;
    if (dataset_image(ds, cls, idx, &img, err, cap)) return -1;
    int rc = 0;
    if (model) {
        float *x = malloc(per * sizeof *x);
        lwfm_status st = x ? lwfm_model_preprocess(model, img.pixels, img.format, img.height,
                                                   img.width, img.channels, 0, x, per)
                           : LWFM_ERR_OUT_OF_MEMORY;
        if (st) {
            snprintf(err, cap, "%s", x ? lwfm_last_error() : "out of memory");
            free(x);
            rc = -1;
        } else {
            *out = x;
        }
    }
    dataset_image_free(ds, &img);
    return rc;
}

/* The preprocessed example, decoded on first use. NULL after an error
 * message naming its path. */
static const float *cache_get(image_cache *c, int64_t cls, int64_t idx) {
    float **slot = &c->images[c->offset[cls] + idx];
    if (!*slot) {
        char err[ERR_CAP];
        if (load_item(c->ds, c->model, c->per, cls, idx, slot, err, sizeof err)) {
            char *path = dataset_item_path(c->ds, cls, idx);
            cli_error("cannot read image", path ? path : c->ds->path, "%s", err);
            cli_hint("--on-bad skip leaves unreadable images out of their class");
            free(path);
            return NULL;
        }
    }
    return *slot;
}

/* --on-bad skip on a folder tree: decode every image now, drop the bad ones
 * (classes left empty disappear), and keep the preprocessed images. The
 * sampler then sees the dataset without them. *kept receives the images in
 * dataset order after compaction. */
static int decode_all(dataset *ds, const lwfm_model *model, size_t per, int quiet, float ***kept,
                      char ***bad, int64_t *n_bad) {
    int64_t total = 0;
    for (int64_t k = 0; k < ds->n_classes; k++) total += ds->sizes[k];
    float **imgs = calloc((size_t)(total ? total : 1), sizeof *imgs);
    if (!imgs) return -1;
    progress pr;
    progress_start(&pr, !quiet, "decoding images", total);
    int64_t done = 0, n = 0;
    for (int64_t k = 0; k < ds->n_classes; k++) {
        for (int64_t i = 0; i < ds->sizes[k];) {
            char err[ERR_CAP];
            float *x = NULL;
            done++;
            if (load_item(ds, model, per, k, i, &x, err, sizeof err)) {
                char *path = dataset_item_path(ds, k, i);
                cli_error("skipping unreadable image", path, "%s", err);
                char **grown = realloc(*bad, (size_t)(*n_bad + 1) * sizeof *grown);
                if (grown) {
                    *bad = grown;
                    (*bad)[(*n_bad)++] = path;
                } else {
                    free(path);
                }
                dataset_drop(ds, k, i); /* the next image moves to index i */
            } else {
                imgs[n++] = x;
                i++;
            }
            progress_update(&pr, done, -1);
        }
    }
    dataset_compact(ds);
    *kept = imgs;
    return 0;
}

/* --on-bad fail on a folder tree: open every file and decode its headers
 * before the first episode, so that a dangling link or a broken file stops
 * the run at once rather than at the episode that draws it. 0, or -1 after
 * the error. */
static int check_all(const dataset *ds, int quiet) {
    int64_t total = 0, done = 0;
    for (int64_t k = 0; k < ds->n_classes; k++) total += ds->sizes[k];
    progress pr;
    progress_start(&pr, !quiet && total > 0, "checking images", total);
    for (int64_t k = 0; k < ds->n_classes; k++) {
        for (int64_t i = 0; i < ds->sizes[k]; i++) {
            char err[ERR_CAP];
            char *path = dataset_item_path(ds, k, i);
            int bad = image_check_file(path, err, sizeof err);
            if (bad) {
                cli_error("cannot read image", path, "%s", err);
                cli_hint("--on-bad skip leaves unreadable images out of their class");
            }
            free(path);
            if (bad) return -1;
            progress_update(&pr, ++done, -1);
        }
    }
    return 0;
}

/* Name on stderr every class too small for an episode (fewer than shot +
 * query examples): the sampler leaves them out. */
static void report_small(const dataset *ds, int64_t shot, int64_t query) {
    for (int64_t k = 0; k < ds->n_classes; k++) {
        if (ds->sizes[k] >= shot + query) continue;
        char *dir = ds->is_npz ? str_dup(ds->path) : path_join(ds->path, ds->names[k]);
        fprintf(stderr,
                "lwfm: class '%s' (%s) has %lld example%s, fewer than shot + query = %lld: "
                "left out of the episodes\n",
                ds->names[k], dir, (long long)ds->sizes[k], ds->sizes[k] == 1 ? "" : "s",
                (long long)(shot + query));
        free(dir);
    }
}

/* ---- output ----------------------------------------------------------------- */

static void print_items(const char *key, const int64_t *cls, const int64_t *idx, int64_t n) {
    printf(", \"%s\": [", key);
    for (int64_t k = 0; k < n; k++)
        printf("%s[%lld, %lld]", k ? ", " : "", (long long)cls[k], (long long)idx[k]);
    putchar(']');
}

static void print_labels(const char *key, const int32_t *labels, int64_t n) {
    printf(", \"%s\": [", key);
    for (int64_t k = 0; k < n; k++) printf("%s%d", k ? ", " : "", (int)labels[k]);
    putchar(']');
}

static void print_episode(int64_t e, const sampler *s, const episode *ep, const dataset *ds) {
    printf("{\"episode\": %lld, \"classes\": [", (long long)e);
    for (int64_t l = 0; l < s->way; l++) printf("%s%lld", l ? ", " : "", (long long)s->chosen[l]);
    fputs("], \"class_names\": [", stdout);
    for (int64_t l = 0; l < s->way; l++) {
        fputs(l ? ", " : "", stdout);
        json_string(stdout, ds->names[s->chosen[l]]);
    }
    putchar(']');
    print_items("support", ep->s_class, ep->s_index, ep->n_support);
    print_labels("support_labels", ep->s_label, ep->n_support);
    print_items("query", ep->q_class, ep->q_index, ep->n_query);
    print_labels("query_labels", ep->q_label, ep->n_query);
    fputs("}\n", stdout);
}

/* ---- the command ------------------------------------------------------------ */

/* Any 64-bit integer, as Python's int(seed) & (2**64 - 1). */
static int parse_seed(const char *text, uint64_t *seed) {
    char *end = NULL;
    errno = 0;
    if (text[0] == '-') {
        long long v = strtoll(text, &end, 10);
        *seed = (uint64_t)v;
    } else {
        unsigned long long v = strtoull(text, &end, 10);
        *seed = (uint64_t)v;
    }
    if (!*text || *end || errno == ERANGE)
        return cli_usage_error("eval", "--seed expects a 64-bit integer, got '%s'", text);
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *data_path = NULL, *on_bad = "fail", *given = NULL;
    cli_args a = {argc, argv, 2, "eval", &given};
    const char *way_s = "5", *shot_s = "1", *query_s = "15", *episodes_s = "600", *seed_s = "1";
    const char *precision_s = "fp32", *threads_s = NULL;
    const cli_string_option opts[] = {
        {"--model", &model_path},    {"--data", &data_path}, {"--on-bad", &on_bad},
        {"--way", &way_s},           {"--shot", &shot_s},    {"--query", &query_s},
        {"--episodes", &episodes_s}, {"--seed", &seed_s},    {"--precision", &precision_s},
        {"--threads", &threads_s}};
    int json = 0, list = 0, quiet = 0, code;
    const cli_bool_flag flags[] = {
        {"--json", &json}, {"--list-episodes", &list}, {"--quiet", &quiet}};
    if (cli_parse(&a, kEvalUsage, flags, 3, opts, 10, &code)) return code;
    if (cli_model_arg("eval", &model_path, given, 0) || cli_threads("eval", threads_s))
        return EXIT_USAGE;
    int64_t way, shot, query, episodes;
    uint64_t seed;
    lwfm_precision precision;
    if (cli_precision("eval", precision_s, &precision) ||
        cli_int("eval", "--way", way_s, list ? 1 : 2, 1 << 20, &way) ||
        cli_int("eval", "--shot", shot_s, 1, 1 << 20, &shot) ||
        cli_int("eval", "--query", query_s, 1, 1 << 20, &query) ||
        cli_int("eval", "--episodes", episodes_s, 1, (int64_t)1 << 40, &episodes) ||
        parse_seed(seed_s, &seed))
        return EXIT_USAGE;
    if (!data_path) return cli_usage_error("eval", "--data is required");
    if (!model_path && !list) return cli_usage_error("eval", "--model is required");
    if (strcmp(on_bad, "fail") && strcmp(on_bad, "skip"))
        return cli_usage_error("eval", "--on-bad takes 'fail' or 'skip', got '%s'", on_bad);
    const int skip_bad = !strcmp(on_bad, "skip");

    int rc = EXIT_RUNTIME;
    char err[ERR_CAP];
    dataset ds;
    lwfm_model *model = NULL;
    sampler smp = {0};
    episode ep = {0};
    image_cache cache = {0};
    float **kept = NULL, *support = NULL, *queries = NULL, *logits = NULL;
    double *accs = NULL;
    int64_t *order_class = NULL, *order_index = NULL;
    int32_t *order_label = NULL;
    int interleave = 0;
    char **bad = NULL;
    int64_t n_bad = 0, c = 0, h = 0, w = 0;
    size_t per = 0;
    const double t0 = now_seconds();

    if (dataset_open(&ds, data_path)) return EXIT_RUNTIME;
    if (!list) {
        model = load_model_precision(model_path, precision);
        if (!model) goto done;
        lwfm_model_input_shape(model, &c, &h, &w);
        per = (size_t)(c * h * w);
        interleave = transductive(model);
    }
    if (skip_bad && !ds.is_npz && decode_all(&ds, model, per, quiet || list, &kept, &bad, &n_bad)) {
        cli_error("cannot read dataset", data_path, "out of memory");
        goto done;
    }
    if (!skip_bad && !ds.is_npz && !list && check_all(&ds, quiet)) goto done;
    report_small(&ds, shot, query);
    if (sampler_init(&smp, ds.sizes, ds.n_classes, way, shot, query, seed, err, sizeof err)) {
        cli_error("cannot sample episodes", data_path, "%s", err);
        goto done;
    }
    if (episode_alloc(&ep, way, shot, query)) {
        cli_error("cannot sample episodes", data_path, "out of memory");
        goto done;
    }
    if (list) {
        for (int64_t e = 0; e < episodes; e++) {
            sampler_episode(&smp, &ep);
            print_episode(e, &smp, &ep, &ds);
        }
        rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
        goto done;
    }

    if (cache_init(&cache, &ds, model, per)) {
        cli_error("cannot evaluate", data_path, "out of memory");
        goto done;
    }
    if (kept) { /* images decoded up front, in dataset order */
        memcpy(cache.images, kept, (size_t)cache.n_items * sizeof *kept);
        free(kept);
        kept = NULL;
    }
    support = malloc((size_t)ep.n_support * per * sizeof *support);
    queries = malloc((size_t)ep.n_query * per * sizeof *queries);
    logits = malloc((size_t)(ep.n_query * way) * sizeof *logits);
    accs = malloc((size_t)episodes * sizeof *accs);
    if (interleave) {
        order_class = malloc((size_t)ep.n_query * sizeof *order_class);
        order_index = malloc((size_t)ep.n_query * sizeof *order_index);
        order_label = malloc((size_t)ep.n_query * sizeof *order_label);
    }
    if (!support || !queries || !logits || !accs ||
        (interleave && (!order_class || !order_index || !order_label))) {
        cli_error("cannot evaluate", data_path, "out of memory");
        goto done;
    }
    if (!quiet)
        fprintf(stderr,
                "lwfm: %lld classes, %lld-way %lld-shot, %lld queries per class, %lld "
                "episodes, seed %s\n",
                (long long)smp.n_eligible, (long long)way, (long long)shot, (long long)query,
                (long long)episodes, seed_s);
    progress pr;
    progress_start(&pr, !quiet, "episode", episodes);
    double sum = 0;
    for (int64_t e = 0; e < episodes; e++) {
        sampler_episode(&smp, &ep);
        for (int64_t k = 0; k < ep.n_support; k++) {
            const float *x = cache_get(&cache, ep.s_class[k], ep.s_index[k]);
            if (!x) goto done;
            memcpy(support + (size_t)k * per, x, per * sizeof *x);
        }
        if (interleave) { /* class-major -> c0, c1, ..., c0, c1, ... (query per class) */
            for (int64_t k = 0; k < ep.n_query; k++) {
                const int64_t at = (k % query) * way + k / query;
                order_class[at] = ep.q_class[k];
                order_index[at] = ep.q_index[k];
                order_label[at] = ep.q_label[k];
            }
            memcpy(ep.q_class, order_class, (size_t)ep.n_query * sizeof *order_class);
            memcpy(ep.q_index, order_index, (size_t)ep.n_query * sizeof *order_index);
            memcpy(ep.q_label, order_label, (size_t)ep.n_query * sizeof *order_label);
        }
        for (int64_t k = 0; k < ep.n_query; k++) {
            const float *x = cache_get(&cache, ep.q_class[k], ep.q_index[k]);
            if (!x) goto done;
            memcpy(queries + (size_t)k * per, x, per * sizeof *x);
        }
        lwfm_status st =
            lwfm_episode_score(model, support, ep.n_support, ep.s_label, queries, ep.n_query, c, h,
                               w, way, logits, (size_t)(ep.n_query * way));
        if (st) {
            cli_error("cannot score episode", data_path, "episode %lld: %s", (long long)e,
                      lwfm_last_error());
            goto done;
        }
        int64_t correct = 0;
        for (int64_t q = 0; q < ep.n_query; q++) {
            const float *l = logits + (size_t)(q * way);
            int64_t best = 0; /* first maximum, as numpy's argmax */
            for (int64_t k = 1; k < way; k++)
                if (l[k] > l[best]) best = k;
            correct += best == ep.q_label[q];
        }
        accs[e] = (double)correct / (double)ep.n_query * 100.0;
        sum += accs[e];
        progress_update(&pr, e + 1, sum / (double)(e + 1));
    }

    const double mean = sum / (double)episodes;
    double var = 0;
    for (int64_t e = 0; e < episodes; e++) var += (accs[e] - mean) * (accs[e] - mean);
    const double ci95 = 1.96 * sqrt(var / (double)episodes) / sqrt((double)episodes);
    if (json) {
        fputs("{\"accuracy\": ", stdout);
        json_f64(stdout, mean);
        fputs(", \"ci95\": ", stdout);
        json_f64(stdout, ci95);
        printf(", \"episodes\": %lld, \"way\": %lld, \"shot\": %lld, \"query\": %lld, \"seed\": ",
               (long long)episodes, (long long)way, (long long)shot, (long long)query);
        if (seed_s[0] == '-')
            printf("%lld, \"model\": ", (long long)seed);
        else
            printf("%llu, \"model\": ", (unsigned long long)seed);
        json_string(stdout, model_path);
        fputs(", \"data\": ", stdout);
        json_string(stdout, data_path);
        printf(", \"backend\": \"lwfm\", \"seconds\": %.3f, \"classes\": %lld, \"skipped\": [",
               now_seconds() - t0, (long long)smp.n_eligible);
        for (int64_t k = 0; k < n_bad; k++) {
            fputs(k ? ", " : "", stdout);
            json_string(stdout, bad[k]);
        }
        fputs("], \"episode_accuracies\": [", stdout);
        for (int64_t e = 0; e < episodes; e++) {
            fputs(e ? ", " : "", stdout);
            json_f64(stdout, accs[e]);
        }
        fputs("]}\n", stdout);
    } else {
        printf("accuracy %.2f%% +- %.2f%% (95%% CI, %lld episodes, %lld-way %lld-shot)\n", mean,
               ci95, (long long)episodes, (long long)way, (long long)shot);
    }
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;

done:
    if (kept) {
        int64_t n = 0;
        for (int64_t k = 0; k < ds.n_classes; k++) n += ds.sizes[k];
        for (int64_t i = 0; i < n; i++) free(kept[i]);
        free(kept);
    }
    free_names(bad, n_bad);
    free(support);
    free(queries);
    free(logits);
    free(accs);
    free(order_class);
    free(order_index);
    free(order_label);
    cache_free(&cache);
    episode_free(&ep);
    sampler_free(&smp);
    lwfm_model_destroy(model);
    dataset_free(&ds);
    return rc;
}
