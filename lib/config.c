/* Model configuration: the "config/..." arrays of a weight file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core/core.h"

static const char *kMethods[] = {"lwfm-spm", "dn4", "mml", "rcn"};
static const char *kDistances[] = {"wass", "kl", "w2"};
static const char *kBatchNorm[] = {"running", "batch"};

const char *lwfm__distance_name(lwfm__mml_distance d) {
    return (unsigned)d < 3 ? kDistances[d] : "unknown";
}
static const char *kBackbones[] = {"resnet18", "conv64f", "resnet12", "conv4"};

const char *lwfm__method_name(lwfm_method m) {
    return (unsigned)m < 4 ? kMethods[m] : "unknown";
}

const char *lwfm__backbone_name(lwfm__backbone_kind b) {
    return (unsigned)b < 4 ? kBackbones[b] : "unknown";
}

const char *lwfm__backbone_prefix(const lwfm__config *cfg) {
    switch (cfg->method) {
    case LWFM_METHOD_LWFM_SPM:
        return "feature_extractor.";
    case LWFM_METHOD_RCN:
        return "feature_encoder.";
    default:
        return "";
    }
}

/* Bool arrays are integers to the archive; only learnable_matcher takes one
 * (docs/weight-format.md): a bool `format_version` (True == 1) is refused. */
static lwfm_status no_bool(const lwfm__archive *ar, const char *key) {
    const lwfm__tensor *t = lwfm__archive_find(ar, key);
    if (t && t->descr[1] == 'b')
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' is a bool; it must be an integer",
                           key);
    return LWFM_OK;
}

/* Optional integer: absent keeps *v. Present but malformed is an error. */
static lwfm_status opt_int(const lwfm__archive *ar, const char *key, int lo, int hi, int *v) {
    if (!lwfm__archive_find(ar, key)) return LWFM_OK;
    if (strcmp(key, "config/learnable_matcher") != 0) {
        lwfm_status bst = no_bool(ar, key);
        if (bst) return bst;
    }
    int64_t x;
    lwfm_status st = lwfm__archive_get_int(ar, key, &x);
    if (st) return st;
    if (x < lo || x > hi)
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' = %lld is outside [%d, %d]", key,
                           (long long)x, lo, hi);
    *v = (int)x;
    return LWFM_OK;
}

static lwfm_status opt_float(const lwfm__archive *ar, const char *key, double lo, double hi,
                             double *v) {
    if (!lwfm__archive_find(ar, key)) return LWFM_OK;
    double x;
    lwfm_status st = lwfm__archive_get_float(ar, key, &x);
    if (st) return st;
    /* a float32 or float16 value is compared with the bounds rounded to
     * float32: float32(1e-6) is 9.99999997e-07, and refusing it as "outside
     * [1e-06, ...]" would contradict the message */
    const lwfm__tensor *t = lwfm__archive_find(ar, key);
    if (t->f32 && t->descr[2] != '8') {
        lo = (double)(float)lo;
        hi = (double)(float)hi;
    }
    if (!(x >= lo && x <= hi))
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' = %.9g is outside [%g, %g]", key,
                           x, lo, hi);
    *v = x;
    return LWFM_OK;
}

#define NORM_STD_MIN 1e-6
#define NORM_MAX 1e6

static lwfm_status read_norm(const lwfm__archive *ar, const char *key, double *vals, int *n,
                             int positive) {
    const lwfm__tensor *t = lwfm__archive_find(ar, key);
    if (!t) return LWFM_OK;
    if (!t->f32 || t->ndim > 1 || (t->numel != 1 && t->numel != 3))
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' must be 1 or 3 floats", key);
    /* std in [1e-6, 1e6], mean in [-1e6, 1e6]: inputs scaled to [0, 1] then
     * normalise to finite values of moderate size (a std of 1e-45 passed
     * "positive" and made lwfm_model_preprocess() return infinities) */
    const double lo = positive ? (double)(float)NORM_STD_MIN : -NORM_MAX, hi = NORM_MAX;
    for (size_t i = 0; i < t->numel; i++) {
        vals[i] = t->f32[i];
        if (!(vals[i] >= lo && vals[i] <= hi))
            return lwfm__error(LWFM_ERR_FORMAT,
                               "config value '%s' has an invalid entry %.9g (must be in [%g, %g])",
                               key, vals[i], positive ? NORM_STD_MIN : -NORM_MAX, hi);
    }
    *n = (int)t->numel;
    return LWFM_OK;
}

static lwfm_status lookup(const char *key, const char *value, const char *const *names, int count,
                          int *out) {
    for (int i = 0; i < count; i++)
        if (strcmp(value, names[i]) == 0) {
            *out = i;
            return LWFM_OK;
        }
    return lwfm__error(LWFM_ERR_UNSUPPORTED, "config '%s' = '%s' is not supported", key, value);
}

lwfm_status lwfm__config_read(lwfm__config *out, const lwfm__archive *ar) {
    lwfm_status st;
    lwfm__config c;
    memset(&c, 0, sizeof c);
    char s[64];
    int64_t v;

    if ((st = no_bool(ar, "config/format_version"))) return st;
    if ((st = lwfm__archive_get_int(ar, "config/format_version", &v))) return st;
    if (v != LWFM_FORMAT_VERSION)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "weight-file format version %lld; this library reads version %d",
                           (long long)v, LWFM_FORMAT_VERSION);
    c.format_version = (int)v;
    int idx = 0;
    if ((st = lwfm__archive_get_string(ar, "config/method", s, sizeof s))) return st;
    if ((st = lookup("config/method", s, kMethods, 4, &idx))) return st;
    c.method = (lwfm_method)idx;
    if ((st = lwfm__archive_get_string(ar, "config/backbone", s, sizeof s))) return st;
    if ((st = lookup("config/backbone", s, kBackbones, 4, &idx))) return st;
    c.backbone = (lwfm__backbone_kind)idx;
    c.distance = LWFM_MML_WASS;
    if (lwfm__archive_find(ar, "config/distance")) {
        if ((st = lwfm__archive_get_string(ar, "config/distance", s, sizeof s))) return st;
        if ((st = lookup("config/distance", s, kDistances, 3, &idx))) return st;
        c.distance = (lwfm__mml_distance)idx;
    }
    if (lwfm__archive_find(ar, "config/batch_norm")) {
        if ((st = lwfm__archive_get_string(ar, "config/batch_norm", s, sizeof s))) return st;
        if ((st = lookup("config/batch_norm", s, kBatchNorm, 2, &idx))) return st;
        c.bn_batch = idx;
        if (c.bn_batch && c.method != LWFM_METHOD_RCN)
            return lwfm__error(LWFM_ERR_UNSUPPORTED,
                               "config 'config/batch_norm' = 'batch' is for rcn models only "
                               "(this model is %s)",
                               lwfm__method_name(c.method));
    }
    c.query_batch = LWFM_RCN_QUERY_BATCH;

    /* Defaults: spec section 4 (lwfm-spm) and peers.md (dn4: k = 3). */
    c.first_padding = 3;
    c.feature_size = 3;
    c.temperature = 0.2;
    c.temperature_attn = 5.0;
    c.calibration_temperature = 1.0;
    c.unknown_threshold = 0.0;
    c.matcher_prob = 0.25;
    c.learnable_matcher = 1;
    c.top_k = 1;
    c.neighbor_k = c.method == LWFM_METHOD_MML ? 1 : 3;
    c.image_size = 84;
    c.resize = 92;
    c.n_norm = 3;
    c.mean[0] = 125.3 / 255, c.mean[1] = 123.0 / 255, c.mean[2] = 113.9 / 255;
    c.std[0] = 63.0 / 255, c.std[1] = 62.1 / 255, c.std[2] = 66.7 / 255;

    const lwfm__tensor *ids = lwfm__archive_find(ar, "config/hyperpixel_ids");
    if (ids) {
        size_t n;
        int64_t vals[LWFM_MAX_TAPS];
        if ((st = no_bool(ar, "config/hyperpixel_ids"))) return st;
        if ((st =
                 lwfm__archive_get_int_array(ar, "config/hyperpixel_ids", vals, LWFM_MAX_TAPS, &n)))
            return st;
        if (n == 0) return lwfm__error(LWFM_ERR_FORMAT, "config 'config/hyperpixel_ids' is empty");
        for (size_t i = 0; i < n; i++) {
            if (vals[i] < 0 || vals[i] > 64 || (i > 0 && vals[i] <= vals[i - 1]))
                return lwfm__error(LWFM_ERR_FORMAT,
                                   "config 'config/hyperpixel_ids' must be strictly increasing "
                                   "block ids");
            c.hyperpixel_ids[i] = (int)vals[i];
        }
        c.n_taps = (int)n;
    } else {
        c.n_taps = 1;
        c.hyperpixel_ids[0] = c.backbone == LWFM_BACKBONE_RESNET18 ? 8 : 3; /* the last block */
        if (c.backbone == LWFM_BACKBONE_RESNET18) {
            c.n_taps = 2;
            c.hyperpixel_ids[0] = 7;
            c.hyperpixel_ids[1] = 8;
        }
    }
    if ((st = opt_int(ar, "config/first_padding", 0, 16, &c.first_padding))) return st;
    if ((st = opt_int(ar, "config/feature_size", 0, 64, &c.feature_size))) return st;
    if ((st = opt_float(ar, "config/temperature", 1e-6, 1e6, &c.temperature))) return st;
    if ((st = opt_float(ar, "config/temperature_attn", 1e-6, 1e6, &c.temperature_attn))) return st;
    if ((st = opt_float(ar, "config/matcher_prob", 0.0, 1e6, &c.matcher_prob))) return st;
    if ((st = opt_float(ar, "config/calibration_temperature", 1e-6, 1e6,
                        &c.calibration_temperature)))
        return st;
    if ((st = opt_float(ar, "config/unknown_threshold", 0.0, 1.0, &c.unknown_threshold)))
        return st;
    if ((st = opt_int(ar, "config/learnable_matcher", 0, 1, &c.learnable_matcher))) return st;
    if ((st = opt_int(ar, "config/top_k", 1, 4096, &c.top_k))) return st;
    if ((st = opt_int(ar, "config/neighbor_k", 1, 4096, &c.neighbor_k))) return st;
    if ((st = opt_int(ar, "config/query_batch", 1, LWFM_RCN_QUERY_BATCH_MAX, &c.query_batch)))
        return st;
    if ((st = opt_int(ar, "config/image_size", 8, 4096, &c.image_size))) return st;
    if ((st = opt_int(ar, "config/resize", 0, 8192, &c.resize))) return st;
    if ((st = read_norm(ar, "config/mean", c.mean, &c.n_norm, 0))) return st;
    int n_std = c.n_norm;
    if ((st = read_norm(ar, "config/std", c.std, &n_std, 1))) return st;
    if (n_std != c.n_norm)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "config 'config/mean' and 'config/std' differ in length");
    if (c.resize != 0 && c.resize < c.image_size)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "config 'config/resize' (%d) is smaller than "
                           "'config/image_size' (%d)",
                           c.resize, c.image_size);
    /* the SPM matcher solves a P x P assignment per (support, query) pair and
     * layer, O(P^3): P = feature_size^2 is bounded (feature_size 64 gave
     * 4096 positions and minutes for a one-query episode) */
    if (c.method == LWFM_METHOD_LWFM_SPM && c.matcher_prob > 0 &&
        c.feature_size * c.feature_size > LWFM_LIMIT_SPM_POSITIONS)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "config 'config/feature_size' = %d gives %d matched positions, more "
                           "than LWFM_LIMIT_SPM_POSITIONS = %d (the SPM assignment costs "
                           "O(positions^3) per pair and layer)",
                           c.feature_size, c.feature_size * c.feature_size,
                           LWFM_LIMIT_SPM_POSITIONS);
    if (c.feature_size < 2 && c.method == LWFM_METHOD_LWFM_SPM)
        return lwfm__error(LWFM_ERR_FORMAT, "lwfm-spm needs config 'config/feature_size' >= 2 "
                                            "(its attention normalises over the fs*fs positions)");

    /* Input channels come from the first convolution's weight. */
    char key[160];
    snprintf(key, sizeof key, "%s%s", lwfm__backbone_prefix(&c),
             c.backbone == LWFM_BACKBONE_RESNET18  ? "initial_block.conv1.weight"
             : c.backbone == LWFM_BACKBONE_CONV64F ? "features.0.weight"
             : c.backbone == LWFM_BACKBONE_CONV4   ? "layer1.0.weight"
                                                   : "layer1.0.conv1.weight");
    const lwfm__tensor *first = lwfm__archive_find(ar, key);
    if (!first) return lwfm__error(LWFM_ERR_MISSING_KEY, "missing tensor '%s'", key);
    if (first->ndim != 4 || first->shape[1] < 1 || first->shape[1] > 4)
        return lwfm__error(LWFM_ERR_SHAPE, "tensor '%s' must be (out, 1..4, kh, kw)", key);
    c.input_channels = (int)first->shape[1];
    if (c.n_norm != 1 && c.n_norm != c.input_channels)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "config 'config/mean' has %d entries for a %d-channel "
                           "model",
                           c.n_norm, c.input_channels);
    *out = c;
    return LWFM_OK;
}

/* Append formatted text; tracks the full length even past cap. */
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...) LWFM_PRINTF(4, 5);
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *dst = *len < cap ? buf + *len : NULL;
    int n = vsnprintf(dst, dst ? cap - *len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
}

/* The shortest decimal that reads back as the same float32 (the values are
 * float32 quantities): 0.2, not 0.200000003. Non-finite values as %g. */
static const char *f32(char out[32], double v) {
    const float want = (float)v;
    for (int p = 1; p <= 9 && isfinite(want); p++) {
        snprintf(out, 32, "%.*g", p, (double)want);
        if (strtof(out, NULL) == want) return out;
    }
    snprintf(out, 32, "%.9g", (double)want);
    return out;
}

static void put_list(char *buf, size_t cap, size_t *len, const char *name, const double *v, int n) {
    char t[32];
    put(buf, cap, len, ", \"%s\": [", name);
    for (int i = 0; i < n; i++) put(buf, cap, len, "%s%s", i ? ", " : "", f32(t, v[i]));
    put(buf, cap, len, "]");
}

size_t lwfm__config_json(const lwfm__config *c, char *buf, size_t cap) {
    size_t len = 0;
    char t1[32], t2[32], t3[32];
    put(buf, cap, &len, "{\"format_version\": %d, \"method\": \"%s\", \"backbone\": \"%s\"",
        c->format_version, lwfm__method_name(c->method), lwfm__backbone_name(c->backbone));
    put(buf, cap, &len, ", \"input_channels\": %d", c->input_channels);
    if (c->backbone == LWFM_BACKBONE_RESNET18)
        put(buf, cap, &len, ", \"first_padding\": %d", c->first_padding);
    put(buf, cap, &len, ", \"hyperpixel_ids\": [");
    for (int i = 0; i < c->n_taps; i++)
        put(buf, cap, &len, "%s%d", i ? ", " : "", c->hyperpixel_ids[i]);
    put(buf, cap, &len, "], \"feature_size\": %d", c->feature_size);
    if (c->method == LWFM_METHOD_LWFM_SPM)
        put(buf, cap, &len,
            ", \"temperature\": %s, \"temperature_attn\": %s, \"matcher_prob\": %s, "
            "\"learnable_matcher\": %s, \"top_k\": %d",
            f32(t1, c->temperature), f32(t2, c->temperature_attn), f32(t3, c->matcher_prob),
            c->learnable_matcher ? "true" : "false", c->top_k);
    if (c->method == LWFM_METHOD_DN4 || c->method == LWFM_METHOD_MML)
        put(buf, cap, &len, ", \"neighbor_k\": %d", c->neighbor_k);
    if (c->method == LWFM_METHOD_MML)
        put(buf, cap, &len, ", \"distance\": \"%s\"", lwfm__distance_name(c->distance));
    if (c->method == LWFM_METHOD_RCN) {
        put(buf, cap, &len, ", \"batch_norm\": \"%s\"", kBatchNorm[c->bn_batch ? 1 : 0]);
        if (c->bn_batch) put(buf, cap, &len, ", \"query_batch\": %d", c->query_batch);
    }
    if (c->calibration_temperature != 1.0 || c->unknown_threshold != 0.0)
        put(buf, cap, &len, ", \"calibration_temperature\": %s, \"unknown_threshold\": %s",
            f32(t1, c->calibration_temperature), f32(t2, c->unknown_threshold));
    put(buf, cap, &len, ", \"image_size\": %d, \"resize\": %d", c->image_size, c->resize);
    put_list(buf, cap, &len, "mean", c->mean, c->n_norm);
    put_list(buf, cap, &len, "std", c->std, c->n_norm);
    put(buf, cap, &len, "}");
    if (cap > 0 && len >= cap) buf[cap - 1] = '\0';
    return len;
}
