/* `lwfm eval`: N-way K-shot accuracy over the episodes of
 * lwfm.episodes.EpisodeSampler, so that `python3 -m lwfm.evaluate` with
 * the same arguments scores the very same episodes.
 * Stages: parse -> options -> load (dataset, model, sampler) -> score
 * (episode by episode) -> print (text / JSON); --list-episodes prints the
 * episodes instead of scoring them. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct eval_options {
    const char *model, *given, *data, *on_bad, *precision, *convolutions, *threads;
    const char *way, *shot, *query, *episodes, *seed;
    int list, json, quiet;
} eval_options;

static const cli_opt kOptions[] = {
    {"--model", "PATH", NULL,
     "weight file (.npz) or an installed model's name\n"
     "(omniglot), or MODEL.npz without --model; not\n"
     "needed with --list-episodes",
     CLI_VALUE, offsetof(eval_options, model)},
    {"--data", "PATH", NULL,
     "an Omniglot .npz archive (bool array 'images' (classes,\n"
     "drawings, H, W), True = paper) or a folder with one\n"
     "sub-folder of .png/.jpg/.jpeg/.webp images per class",
     CLI_VALUE, offsetof(eval_options, data)},
    {"--way", "N", "5", "classes per episode", CLI_VALUE, offsetof(eval_options, way)},
    {"--shot", "K", "1", "support images per class", CLI_VALUE, offsetof(eval_options, shot)},
    {"--query", "Q", "15", "query images per class", CLI_VALUE, offsetof(eval_options, query)},
    {"--episodes", "E", "600", "number of episodes", CLI_VALUE, offsetof(eval_options, episodes)},
    {"--seed", "S", "1", "sampler seed, any 64-bit integer", CLI_VALUE,
     offsetof(eval_options, seed)},
    {"--precision", "P", "fp32", "backbone arithmetic: fp32 (default), bf16 or int8", CLI_VALUE,
     offsetof(eval_options, precision)},
    {"--convolutions", "C", "auto",
     "3x3 convolutions of an fp32 backbone: auto (default,\n"
     "Winograd where measured faster), direct (oneDNN's: the\n"
     "least memory) or winograd",
     CLI_VALUE, offsetof(eval_options, convolutions)},
    {"--threads", "N", NULL, "OpenMP threads (default: OMP_NUM_THREADS or all cores)", CLI_VALUE,
     offsetof(eval_options, threads)},
    {"--on-bad", "fail|skip", "fail",
     "an unreadable image: stop with an error (default; every\n"
     "file of a folder is opened and its header read before\n"
     "the first episode), or leave it out of its class\n"
     "(folders are then decoded in full before sampling, so\n"
     "the episodes are those of the dataset without the bad\n"
     "images). Classes with fewer than shot + query images\n"
     "are named on stderr and not counted.",
     CLI_VALUE, offsetof(eval_options, on_bad)},
    {"--list-episodes", NULL, NULL, "print the episodes as JSON lines, without scoring", CLI_FLAG,
     offsetof(eval_options, list)},
    {"--json", NULL, NULL, "print one JSON object", CLI_FLAG, offsetof(eval_options, json)},
    {"--quiet", NULL, NULL, "no progress on stderr", CLI_FLAG, offsetof(eval_options, quiet)},
};

static int cmd_eval(int argc, char **argv);

const cli_command cli_cmd_eval = {
    "eval",
    "N-way K-shot accuracy over reproducible episodes of a dataset",
    "[--model] MODEL.npz --data PATH [options]",
    "Mean accuracy and 95% confidence interval of the model over few-shot\n"
    "episodes of a dataset. The episodes are those of lwfm.episodes.EpisodeSampler\n"
    "(splitmix64 from --seed): 'python3 -m lwfm.evaluate' with the same arguments\n"
    "draws the same ones.\n",
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    22,
    offsetof(eval_options, given),
    cmd_eval};

/* Whether the model's BatchNorm uses batch statistics (an rcn model with
 * config batch_norm 'batch'): its queries are then scored in the authors'
 * interleaved class order (c0, c1, ..., c0, c1, ...), so that each batch of
 * 25 holds 5 queries of each of 5 classes as in the official protocol. */
static int transductive(const lwfm_model *model) {
    const char *batch_norm = NULL; /* a key of rcn models only */
    return lwfm_model_config_string(model, "batch_norm", &batch_norm) == LWFM_OK &&
           !strcmp(batch_norm, "batch");
}

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

/* ---- options ---------------------------------------------------------------- */

typedef struct eval_settings {
    int64_t way, shot, query, episodes;
    uint64_t seed;
    lwfm_precision precision;
    lwfm_convolutions convolutions;
    int skip_bad;
} eval_settings;

/* The checked options: 0, or EXIT_USAGE after a usage message. */
static int check_options(eval_options *o, eval_settings *s) {
    if (cli_model_arg("eval", &o->model, o->given, 0) || cli_threads("eval", o->threads))
        return EXIT_USAGE;
    if (cli_precision("eval", o->precision, &s->precision) ||
        cli_convolutions("eval", o->convolutions, &s->convolutions) ||
        cli_int("eval", "--way", o->way, o->list ? 1 : 2, 1 << 20, &s->way) ||
        cli_int("eval", "--shot", o->shot, 1, 1 << 20, &s->shot) ||
        cli_int("eval", "--query", o->query, 1, 1 << 20, &s->query) ||
        cli_int("eval", "--episodes", o->episodes, 1, (int64_t)1 << 40, &s->episodes) ||
        parse_seed(o->seed, &s->seed))
        return EXIT_USAGE;
    if (!o->data) return cli_usage_error("eval", "--data is required");
    if (!o->model && !o->list) return cli_usage_error("eval", "--model is required");
    if (strcmp(o->on_bad, "fail") && strcmp(o->on_bad, "skip"))
        return cli_usage_error("eval", "--on-bad takes 'fail' or 'skip', got '%s'", o->on_bad);
    s->skip_bad = !strcmp(o->on_bad, "skip");
    return 0;
}

/* ---- the run's state -------------------------------------------------------- */

typedef struct eval_run {
    const eval_options *o;
    const eval_settings *s;
    dataset ds;
    int have_ds;
    lwfm_model *model;
    int64_t c, h, w;
    size_t per; /* floats per preprocessed image */
    int interleave;
    sampler smp;
    episode ep;
    image_cache cache;
    float **kept; /* --on-bad skip: the images decoded up front */
    char **bad;   /* and the paths left out */
    int64_t n_bad;
    float *support, *queries, *logits;
    int64_t *order_class, *order_index; /* the interleaved query order */
    int32_t *order_label;
    double *accs, t0; /* per-episode accuracies; the start */
} eval_run;

static void run_free(eval_run *r) {
    if (r->kept) {
        int64_t n = 0;
        for (int64_t k = 0; k < r->ds.n_classes; k++) n += r->ds.sizes[k];
        for (int64_t i = 0; i < n; i++) free(r->kept[i]);
        free(r->kept);
    }
    free_names(r->bad, r->n_bad);
    free(r->support);
    free(r->queries);
    free(r->logits);
    free(r->accs);
    free(r->order_class);
    free(r->order_index);
    free(r->order_label);
    cache_free(&r->cache);
    episode_free(&r->ep);
    sampler_free(&r->smp);
    lwfm_model_destroy(r->model);
    if (r->have_ds) dataset_free(&r->ds);
}

/* ---- load ------------------------------------------------------------------- */

/* The dataset, the model (not for --list-episodes), the bad images left out
 * or checked, the sampler. 0, or -1 after the error. */
static int load(eval_run *r) {
    const eval_options *o = r->o;
    const eval_settings *s = r->s;
    char err[ERR_CAP];
    if (dataset_open(&r->ds, o->data)) return -1;
    r->have_ds = 1;
    if (!o->list) {
        r->model = load_model_precision(o->model, s->precision, s->convolutions);
        if (!r->model) return -1;
        lwfm_model_input_shape(r->model, &r->c, &r->h, &r->w);
        r->per = (size_t)(r->c * r->h * r->w);
        r->interleave = transductive(r->model);
    }
    if (s->skip_bad && !r->ds.is_npz &&
        decode_all(&r->ds, r->model, r->per, o->quiet || o->list, &r->kept, &r->bad, &r->n_bad)) {
        cli_error("cannot read dataset", o->data, "out of memory");
        return -1;
    }
    if (!s->skip_bad && !r->ds.is_npz && !o->list && check_all(&r->ds, o->quiet)) return -1;
    report_small(&r->ds, s->shot, s->query);
    if (sampler_init(&r->smp, r->ds.sizes, r->ds.n_classes, s->way, s->shot, s->query, s->seed, err,
                     sizeof err)) {
        cli_error("cannot sample episodes", o->data, "%s", err);
        return -1;
    }
    if (episode_alloc(&r->ep, s->way, s->shot, s->query)) {
        cli_error("cannot sample episodes", o->data, "out of memory");
        return -1;
    }
    return 0;
}

/* --list-episodes: the episodes as JSON lines, no scoring. */
static int list_episodes(eval_run *r) {
    for (int64_t e = 0; e < r->s->episodes; e++) {
        sampler_episode(&r->smp, &r->ep);
        print_episode(e, &r->smp, &r->ep, &r->ds);
    }
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* The image cache (with the images decoded up front) and the episode's
 * buffers. 0, or -1 after the error. */
static int alloc_buffers(eval_run *r) {
    const size_t per = r->per, nq = (size_t)r->ep.n_query;
    if (cache_init(&r->cache, &r->ds, r->model, per)) {
        cli_error("cannot evaluate", r->o->data, "out of memory");
        return -1;
    }
    if (r->kept) { /* images decoded up front, in dataset order */
        memcpy(r->cache.images, r->kept, (size_t)r->cache.n_items * sizeof *r->kept);
        free(r->kept);
        r->kept = NULL;
    }
    r->support = malloc((size_t)r->ep.n_support * per * sizeof *r->support);
    r->queries = malloc(nq * per * sizeof *r->queries);
    r->logits = malloc(nq * (size_t)r->s->way * sizeof *r->logits);
    r->accs = malloc((size_t)r->s->episodes * sizeof *r->accs);
    if (r->interleave) {
        r->order_class = malloc(nq * sizeof *r->order_class);
        r->order_index = malloc(nq * sizeof *r->order_index);
        r->order_label = malloc(nq * sizeof *r->order_label);
    }
    if (!r->support || !r->queries || !r->logits || !r->accs ||
        (r->interleave && (!r->order_class || !r->order_index || !r->order_label))) {
        cli_error("cannot evaluate", r->o->data, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- score ------------------------------------------------------------------ */

/* Class-major queries -> c0, c1, ..., c0, c1, ... (query per class). */
static void interleave_queries(eval_run *r) {
    episode *ep = &r->ep;
    const int64_t way = r->s->way, query = r->s->query;
    for (int64_t k = 0; k < ep->n_query; k++) {
        const int64_t at = (k % query) * way + k / query;
        r->order_class[at] = ep->q_class[k];
        r->order_index[at] = ep->q_index[k];
        r->order_label[at] = ep->q_label[k];
    }
    memcpy(ep->q_class, r->order_class, (size_t)ep->n_query * sizeof *r->order_class);
    memcpy(ep->q_index, r->order_index, (size_t)ep->n_query * sizeof *r->order_index);
    memcpy(ep->q_label, r->order_label, (size_t)ep->n_query * sizeof *r->order_label);
}

/* Copy the episode's items' preprocessed images into `out`. 0, or -1. */
static int gather(eval_run *r, const int64_t *cls, const int64_t *idx, int64_t n, float *out) {
    for (int64_t k = 0; k < n; k++) {
        const float *x = cache_get(&r->cache, cls[k], idx[k]);
        if (!x) return -1;
        memcpy(out + (size_t)k * r->per, x, r->per * sizeof *x);
    }
    return 0;
}

/* Episode e: sampled, scored; its accuracy in percent, or -1 after the error. */
static double score_episode(eval_run *r, int64_t e) {
    episode *ep = &r->ep;
    const int64_t way = r->s->way;
    sampler_episode(&r->smp, ep);
    if (gather(r, ep->s_class, ep->s_index, ep->n_support, r->support)) return -1;
    if (r->interleave) interleave_queries(r);
    if (gather(r, ep->q_class, ep->q_index, ep->n_query, r->queries)) return -1;
    lwfm_status st = lwfm_episode_score(r->model, r->support, ep->n_support, ep->s_label,
                                        r->queries, ep->n_query, r->c, r->h, r->w, way, r->logits,
                                        (size_t)(ep->n_query * way));
    if (st) {
        cli_error("cannot score episode", r->o->data, "episode %lld: %s", (long long)e,
                  lwfm_last_error());
        return -1;
    }
    int64_t correct = 0;
    for (int64_t q = 0; q < ep->n_query; q++) {
        const float *l = r->logits + (size_t)(q * way);
        int64_t best = 0; /* first maximum, as numpy's argmax */
        for (int64_t k = 1; k < way; k++)
            if (l[k] > l[best]) best = k;
        correct += best == ep->q_label[q];
    }
    return (double)correct / (double)ep->n_query * 100.0;
}

/* Every episode, with progress on stderr. 0, or -1 after the error. */
static int score(eval_run *r) {
    const eval_settings *s = r->s;
    if (alloc_buffers(r)) return -1;
    if (!r->o->quiet)
        fprintf(stderr,
                "lwfm: %lld classes, %lld-way %lld-shot, %lld queries per class, %lld "
                "episodes, seed %s\n",
                (long long)r->smp.n_eligible, (long long)s->way, (long long)s->shot,
                (long long)s->query, (long long)s->episodes, r->o->seed);
    progress pr;
    progress_start(&pr, !r->o->quiet, "episode", s->episodes);
    double sum = 0;
    for (int64_t e = 0; e < s->episodes; e++) {
        r->accs[e] = score_episode(r, e);
        if (r->accs[e] < 0) return -1;
        sum += r->accs[e];
        progress_update(&pr, e + 1, sum / (double)(e + 1));
    }
    return 0;
}

/* ---- print ------------------------------------------------------------------ */

static void print_json(const eval_run *r, double mean, double ci95) {
    const eval_settings *s = r->s;
    fputs("{\"accuracy\": ", stdout);
    json_f64(stdout, mean);
    fputs(", \"ci95\": ", stdout);
    json_f64(stdout, ci95);
    printf(", \"episodes\": %lld, \"way\": %lld, \"shot\": %lld, \"query\": %lld, \"seed\": ",
           (long long)s->episodes, (long long)s->way, (long long)s->shot, (long long)s->query);
    if (r->o->seed[0] == '-')
        printf("%lld, \"model\": ", (long long)s->seed);
    else
        printf("%llu, \"model\": ", (unsigned long long)s->seed);
    json_string(stdout, r->o->model);
    fputs(", \"data\": ", stdout);
    json_string(stdout, r->o->data);
    printf(", \"backend\": \"lwfm\", \"seconds\": %.3f, \"classes\": %lld, \"skipped\": [",
           now_seconds() - r->t0, (long long)r->smp.n_eligible);
    for (int64_t k = 0; k < r->n_bad; k++) {
        fputs(k ? ", " : "", stdout);
        json_string(stdout, r->bad[k]);
    }
    fputs("], \"episode_accuracies\": [", stdout);
    for (int64_t e = 0; e < s->episodes; e++) {
        fputs(e ? ", " : "", stdout);
        json_f64(stdout, r->accs[e]);
    }
    fputs("]}\n", stdout);
}

/* The mean and its 95% confidence interval, 1.96 std / sqrt(E) (ddof 0). */
static int print_result(const eval_run *r) {
    const int64_t episodes = r->s->episodes;
    double sum = 0, var = 0;
    for (int64_t e = 0; e < episodes; e++) sum += r->accs[e];
    const double mean = sum / (double)episodes;
    for (int64_t e = 0; e < episodes; e++) var += (r->accs[e] - mean) * (r->accs[e] - mean);
    const double ci95 = 1.96 * sqrt(var / (double)episodes) / sqrt((double)episodes);
    if (r->o->json)
        print_json(r, mean, ci95);
    else
        printf("accuracy %.2f%% +- %.2f%% (95%% CI, %lld episodes, %lld-way %lld-shot)\n", mean,
               ci95, (long long)episodes, (long long)r->s->way, (long long)r->s->shot);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* ---- the command ------------------------------------------------------------ */

static int cmd_eval(int argc, char **argv) {
    eval_options o = {0};
    eval_settings s = {0};
    int code;
    if (cli_parse_command(&cli_cmd_eval, argc, argv, &o, &code)) return code;
    if (check_options(&o, &s)) return EXIT_USAGE;
    eval_run r = {0};
    r.o = &o;
    r.s = &s;
    r.t0 = now_seconds();
    int rc = EXIT_RUNTIME;
    if (!load(&r)) {
        if (o.list)
            rc = list_episodes(&r);
        else if (!score(&r))
            rc = print_result(&r);
    }
    run_free(&r);
    return rc;
}
