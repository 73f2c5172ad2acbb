/* Model loading, configuration access and the backbone handle. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/sha256.h"
#include "io/npz.h"
#include "model.h"
#include "core/profile.h"

struct lwfm_load_options {
    lwfm_precision precision;
    lwfm_convolutions convolutions;
    lwfm__npz_limits limits;
};

struct lwfm_backbone {
    lwfm_model *model;
    lwfm__net_ctx *ctx;
};

/* ------------------------------------------------------------------------ */

LWFM_API lwfm_status lwfm_load_options_create(lwfm_load_options **out) {
    lwfm__error_clear();
    if (!out) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out is NULL");
    lwfm_load_options *o = calloc(1, sizeof *o);
    if (!o) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    o->precision = LWFM_PRECISION_FP32;
    lwfm__npz_limits_default(&o->limits);
    *out = o;
    return LWFM_OK;
}

LWFM_API void lwfm_load_options_destroy(lwfm_load_options *options) {
    free(options);
}

LWFM_API lwfm_status lwfm_load_options_set_precision(lwfm_load_options *options,
                                                     lwfm_precision precision) {
    lwfm__error_clear();
    if (!options) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "options is NULL");
    if (precision != LWFM_PRECISION_FP32 && precision != LWFM_PRECISION_BF16 &&
        precision != LWFM_PRECISION_INT8)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "unknown precision %d", (int)precision);
    options->precision = precision;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_load_options_set_convolutions(lwfm_load_options *options,
                                                        lwfm_convolutions convolutions) {
    lwfm__error_clear();
    if (!options) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "options is NULL");
    if (convolutions != LWFM_CONVOLUTIONS_AUTO && convolutions != LWFM_CONVOLUTIONS_DIRECT &&
        convolutions != LWFM_CONVOLUTIONS_WINOGRAD)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "unknown convolutions %d (auto 0, direct 1, winograd 2)",
                           (int)convolutions);
    options->convolutions = convolutions;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_load_options_set_max_total_bytes(lwfm_load_options *options,
                                                           uint64_t bytes) {
    lwfm__error_clear();
    if (!options) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "options is NULL");
    if (bytes == 0) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "max_total_bytes must be > 0");
    options->limits.max_total_bytes = bytes;
    if (options->limits.max_member_bytes > bytes) options->limits.max_member_bytes = bytes;
    return LWFM_OK;
}

/* ------------------------------------------------------------------------ */

static void model_free(lwfm_model *m) {
    for (int i = 0; i < m->pool_n; i++) lwfm__net_ctx_free(m->pool[i]);
    for (int i = 0; i < m->arena_n; i++) {
        lwfm__arena_free(m->arenas[i]);
        free(m->arenas[i]);
    }
    lwfm__net_free(m->net);
    if (m->method && m->method->free) m->method->free(m->weights);
    if (m->engine) dnnl_engine_destroy(m->engine);
    pthread_mutex_destroy(&m->pool_lock);
    free(m);
}

void lwfm__model_retain(lwfm_model *m) {
    atomic_fetch_add(&m->refs, 1);
}

void lwfm__model_release(lwfm_model *m) {
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
}

/* ------------------------------------------------------------------------ */
/* Fingerprint: SHA-256 of the weight file's arrays as the library reads them
 * (docs/weight-format.md, "Fingerprint"), so that a file re-compressed or
 * re-ordered keeps it and any changed value, shape or key changes it. Taken
 * while the decoded archive exists: the model keeps its weights only in the
 * backbone's compute layout, which depends on the CPU and the precision. */

void lwfm__hex(const uint8_t *bytes, size_t n, char *hex) {
    static const char kDigits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = kDigits[bytes[i] >> 4];
        hex[2 * i + 1] = kDigits[bytes[i] & 15];
    }
    hex[2 * n] = 0;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const lwfm__tensor *const *)a)->name, (*(const lwfm__tensor *const *)b)->name);
}

static void put_le(lwfm__sha256 *s, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    lwfm__sha256_update(s, b, (size_t)bytes);
}

/* A tensor's values as the fingerprint stream has them: float32 or int64,
 * little-endian, converted a block at a time (one update per value costs
 * more than the hash). */
static void hash_values(lwfm__sha256 *s, const lwfm__tensor *t) {
    const uint16_t one = 1;
    if (t->f32 && *(const uint8_t *)&one == 1) {
        lwfm__sha256_update(s, t->f32, t->numel * sizeof(float));
        return;
    }
    uint8_t block[4096];
    const size_t width = t->f32 ? 4 : 8, per = sizeof block / width;
    for (size_t k = 0; k < t->numel; k += per) {
        const size_t m = t->numel - k < per ? t->numel - k : per;
        for (size_t j = 0; j < m; j++) {
            uint64_t v;
            if (t->f32) {
                uint32_t w;
                memcpy(&w, t->f32 + k + j, 4);
                v = w;
            } else {
                v = (uint64_t)lwfm__tensor_int(t, k + j);
            }
            for (size_t b = 0; b < width; b++) block[j * width + b] = (uint8_t)(v >> (8 * b));
        }
        lwfm__sha256_update(s, block, m * width);
    }
}

static lwfm_status fingerprint_archive(const lwfm__archive *ar, uint8_t digest[32]) {
    const lwfm__tensor **order = malloc(sizeof *order * (ar->count ? ar->count : 1));
    if (!order) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < ar->count; i++) order[i] = &ar->tensors[i];
    qsort(order, ar->count, sizeof *order, cmp_tensor_name);
    lwfm__sha256 s;
    lwfm__sha256_init(&s);
    static const char kTag[] = "lwfm-weights-v1";
    lwfm__sha256_update(&s, kTag, sizeof kTag); /* with its NUL */
    for (size_t i = 0; i < ar->count; i++) {
        const lwfm__tensor *t = order[i];
        lwfm__sha256_update(&s, t->name, strlen(t->name) + 1);
        lwfm__sha256_update(&s, t->f32 ? "f" : "i", 1);
        put_le(&s, (uint64_t)t->ndim, 4);
        for (int d = 0; d < t->ndim; d++) put_le(&s, (uint64_t)t->shape[d], 8);
        hash_values(&s, t);
    }
    lwfm__sha256_final(&s, digest);
    free(order);
    return LWFM_OK;
}

static lwfm_status model_from_archive(lwfm_model **out, lwfm__archive *ar,
                                      const lwfm_load_options *opts) {
    lwfm_status st;
    lwfm_model *m = calloc(1, sizeof *m);
    if (!m) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->pool_lock, NULL);
    m->precision = opts ? opts->precision : LWFM_PRECISION_FP32;
    if ((st = lwfm__config_read(&m->cfg, ar))) goto fail;
    if ((st = fingerprint_archive(ar, m->fingerprint))) goto fail;
    if ((st = lwfm__net_build(&m->net, &m->cfg, ar, m->precision,
                              opts ? opts->convolutions : LWFM_CONVOLUTIONS_AUTO)))
        goto fail;
    if (dnnl_engine_create(&m->engine, dnnl_cpu, 0) != dnnl_success) {
        st = lwfm__error(LWFM_ERR_BACKEND, "oneDNN: engine create failed");
        goto fail;
    }
    /* Tapped layers: channel slices of the concatenated feature map. */
    int64_t C, fh, fw;
    if ((st = lwfm__net_out_shape(m->net, m->cfg.image_size, m->cfg.image_size, &C, &fh, &fw)))
        goto fail;
    m->layers.n = m->cfg.n_taps;
    m->layers.C = (int)C;
    m->layers.P = (int)(fh * fw);
    for (int l = 0, off = 0; l < m->cfg.n_taps; l++) {
        m->layers.off[l] = off;
        m->layers.dim[l] = lwfm__net_tap_channels(m->net, l);
        off += m->layers.dim[l];
    }
    /* The method's own weights. */
    const lwfm__method *me = lwfm__method_get(m->cfg.method);
    if (!me) {
        st = lwfm__error(LWFM_ERR_UNSUPPORTED, "method %d is not implemented",
                         (int)m->cfg.method);
        goto fail;
    }
    m->method = me;
    if (me->load && (st = me->load(m, ar, &m->weights))) goto fail;
    *out = m;
    return LWFM_OK;
fail:
    model_free(m);
    return st;
}

/* Prefix the message with the file name unless it already starts with it
 * (the archive's own messages name their source). */
static lwfm_status source_prefix(lwfm_status st, const char *source) {
    const char *e = lwfm_last_error();
    const size_t n = strlen(source);
    if (strncmp(e, source, n) == 0 && e[n] == ':') return st;
    return lwfm__error_prefix(st, "%s", source);
}

LWFM_API lwfm_status lwfm_model_load(lwfm_model **out, const char *path,
                                     const lwfm_load_options *options) {
    lwfm__error_clear();
    if (!out || !path) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or path is NULL");
    lwfm__archive ar;
    lwfm_status st = lwfm__npz_read_file(&ar, path, options ? &options->limits : NULL);
    if (st) return st;
    st = model_from_archive(out, &ar, options);
    lwfm__archive_free(&ar);
    if (st) return source_prefix(st, path);
    lwfm__log(LWFM_LOG_INFO, "loaded %s: %s on %s, %d taps", path,
              (*out)->method->name, lwfm__backbone_name((*out)->cfg.backbone),
              (*out)->cfg.n_taps);
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_model_load_from_memory(lwfm_model **out, const void *data, size_t size,
                                                 const lwfm_load_options *options) {
    lwfm__error_clear();
    if (!out || (!data && size))
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or data is NULL");
    lwfm__archive ar;
    lwfm_status st = lwfm__npz_read_memory(&ar, data, size, options ? &options->limits : NULL);
    if (st) return st;
    st = model_from_archive(out, &ar, options);
    lwfm__archive_free(&ar);
    if (st) return source_prefix(st, "<memory>");
    return LWFM_OK;
}

LWFM_API void lwfm_model_destroy(lwfm_model *model) {
    lwfm__model_release(model);
}

LWFM_API lwfm_status lwfm_model_fingerprint(const lwfm_model *model, char *hex, size_t capacity) {
    lwfm__error_clear();
    if (!model || !hex) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model or hex is NULL");
    if (capacity < LWFM_FINGERPRINT_CHARS + 1)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "a fingerprint needs %d bytes with its NUL, buffer has %zu",
                           LWFM_FINGERPRINT_CHARS + 1, capacity);
    lwfm__hex(model->fingerprint, 32, hex);
    return LWFM_OK;
}

LWFM_API lwfm_method lwfm_model_method(const lwfm_model *model) {
    return model ? model->cfg.method : (lwfm_method)-1;
}

LWFM_API lwfm_status lwfm_model_config_json(const lwfm_model *model, char *buffer, size_t capacity,
                                            size_t *length) {
    lwfm__error_clear();
    if (!model || (!buffer && capacity))
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model or buffer is NULL");
    size_t need = lwfm__config_json(&model->cfg, NULL, 0);
    if (length) *length = need;
    if (capacity < need + 1)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "configuration needs %zu bytes, buffer has %zu", need + 1, capacity);
    lwfm__config_json(&model->cfg, buffer, capacity);
    return LWFM_OK;
}

LWFM_API const char *lwfm_method_name(lwfm_method method) {
    const lwfm__method *me = lwfm__method_get(method);
    return me ? me->name : NULL;
}

/* One configuration value, present under the same rules as in
 * lwfm__config_json(), plus the calibration keys every model has. */
typedef enum { CFG_INT, CFG_FLOAT, CFG_STRING, CFG_INTS, CFG_FLOATS } cfg_kind;
typedef struct cfg_value {
    cfg_kind kind;
    int64_t i;
    double f;
    const char *s;
    const int *ints;
    const double *floats;
    int n;
} cfg_value;

static int cfg_lookup(const lwfm_model *m, const char *key, cfg_value *v) {
    const lwfm__config *c = &m->cfg;
    /* keys of one method (its table entry says which are present) */
    const int own = m->method->config_key && m->method->config_key(c, key);
    static const char *const kBatchNormNames[] = {"running", "batch"};
    memset(v, 0, sizeof *v);
#define INT_KEY(name, cond, val)                                                                 \
    if (!strcmp(key, name)) return (cond) ? (v->kind = CFG_INT, v->i = (val), 0) : -1
#define FLOAT_KEY(name, cond, val)                                                               \
    if (!strcmp(key, name)) return (cond) ? (v->kind = CFG_FLOAT, v->f = (val), 0) : -1
#define STRING_KEY(name, cond, val)                                                              \
    if (!strcmp(key, name)) return (cond) ? (v->kind = CFG_STRING, v->s = (val), 0) : -1
    INT_KEY("format_version", 1, c->format_version);
    STRING_KEY("method", 1, m->method->name);
    STRING_KEY("backbone", 1, lwfm__backbone_name(c->backbone));
    INT_KEY("input_channels", 1, c->input_channels);
    INT_KEY("first_padding", lwfm__backbone_get(c->backbone)->first_padding,
            c->first_padding);
    INT_KEY("feature_size", 1, c->feature_size);
    FLOAT_KEY("temperature", own, c->temperature);
    FLOAT_KEY("temperature_attn", own, c->temperature_attn);
    FLOAT_KEY("matcher_prob", own, c->matcher_prob);
    INT_KEY("learnable_matcher", own, c->learnable_matcher ? 1 : 0);
    INT_KEY("top_k", own, c->top_k);
    INT_KEY("neighbor_k", own, c->neighbor_k);
    STRING_KEY("distance", own, lwfm__distance_name(c->distance));
    STRING_KEY("batch_norm", own, kBatchNormNames[c->bn_batch ? 1 : 0]);
    INT_KEY("query_batch", own, c->query_batch);
    FLOAT_KEY("calibration_temperature", 1, c->calibration_temperature);
    FLOAT_KEY("unknown_threshold", 1, c->unknown_threshold);
    INT_KEY("image_size", 1, c->image_size);
    INT_KEY("resize", 1, c->resize);
#undef INT_KEY
#undef FLOAT_KEY
#undef STRING_KEY
    if (!strcmp(key, "hyperpixel_ids")) {
        v->kind = CFG_INTS, v->ints = c->hyperpixel_ids, v->n = c->n_taps;
        return 0;
    }
    if (!strcmp(key, "mean") || !strcmp(key, "std")) {
        v->kind = CFG_FLOATS, v->floats = key[0] == 'm' ? c->mean : c->std, v->n = c->n_norm;
        return 0;
    }
    return -1;
}

static lwfm_status cfg_get(const lwfm_model *model, const char *key, const void *out,
                           cfg_value *v) {
    lwfm__error_clear();
    if (!model || !key || !out)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model, key or value is NULL");
    if (cfg_lookup(model, key, v))
        return lwfm__error(LWFM_ERR_MISSING_KEY, "no configuration key '%s' for this %s model",
                           key, model->method->name);
    return LWFM_OK;
}

static lwfm_status cfg_wrong(const char *key, const char *want) {
    return lwfm__error(LWFM_ERR_WRONG_KIND, "configuration key '%s' is not %s", key, want);
}

LWFM_API lwfm_status lwfm_model_config_int(const lwfm_model *model, const char *key,
                                           int64_t *value) {
    cfg_value v;
    lwfm_status st = cfg_get(model, key, value, &v);
    if (st) return st;
    if (v.kind != CFG_INT) return cfg_wrong(key, "an integer");
    *value = v.i;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_model_config_float(const lwfm_model *model, const char *key,
                                             double *value) {
    cfg_value v;
    lwfm_status st = cfg_get(model, key, value, &v);
    if (st) return st;
    if (v.kind != CFG_FLOAT && v.kind != CFG_INT) return cfg_wrong(key, "a number");
    *value = v.kind == CFG_INT ? (double)v.i : v.f;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_model_config_string(const lwfm_model *model, const char *key,
                                              const char **value) {
    cfg_value v;
    lwfm_status st = cfg_get(model, key, value, &v);
    if (st) return st;
    if (v.kind != CFG_STRING) return cfg_wrong(key, "a string");
    *value = v.s;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_model_config_floats(const lwfm_model *model, const char *key,
                                              double *values, size_t capacity, size_t *count) {
    cfg_value v;
    lwfm__error_clear();
    if (!values && capacity)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "values is NULL with capacity %zu",
                           capacity);
    lwfm_status st = cfg_get(model, key, "", &v);
    if (st) return st;
    if (v.kind != CFG_INTS && v.kind != CFG_FLOATS) return cfg_wrong(key, "a list");
    if (count) *count = (size_t)v.n;
    if (capacity < (size_t)v.n)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL, "'%s' has %d values, buffer holds %zu", key,
                           v.n, capacity);
    for (int k = 0; k < v.n; k++) values[k] = v.kind == CFG_INTS ? v.ints[k] : v.floats[k];
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_model_probabilities(const lwfm_model *model, const float *logits,
                                              int64_t n, int64_t way, float *probs,
                                              size_t probs_len) {
    lwfm__error_clear();
    if (!model || !logits || !probs)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model, logits or probs is NULL");
    if (n < 0 || way < 1 || (n > 0 && (uint64_t)way > SIZE_MAX / sizeof(float) / (uint64_t)n))
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "bad row count %lld or way %lld",
                           (long long)n, (long long)way);
    size_t total = (size_t)n * (size_t)way;
    if (probs_len < total)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL, "probs holds %zu floats, %zu needed",
                           probs_len, total);
    for (size_t i = 0; i < total; i++)
        if (!isfinite(logits[i]))
            return lwfm__error(LWFM_ERR_NONFINITE, "logit %zu is not finite", i);
    const double inv_t = 1.0 / model->cfg.calibration_temperature;
    for (int64_t q = 0; q < n; q++) {
        const float *l = logits + q * way;
        float *p = probs + q * way;
        double top = l[0], sum = 0.0;
        for (int64_t c = 1; c < way; c++) top = l[c] > top ? l[c] : top;
        for (int64_t c = 0; c < way; c++) sum += exp((l[c] - top) * inv_t);
        /* element by element after the row's sum: probs may alias logits */
        for (int64_t c = 0; c < way; c++) p[c] = (float)(exp((l[c] - top) * inv_t) / sum);
    }
    return LWFM_OK;
}

LWFM_API double lwfm_model_unknown_threshold(const lwfm_model *model) {
    return model ? model->cfg.unknown_threshold : -1.0;
}

LWFM_API lwfm_status lwfm_model_input_shape(const lwfm_model *model, int64_t *channels,
                                            int64_t *height, int64_t *width) {
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    if (channels) *channels = model->cfg.input_channels;
    if (height) *height = model->cfg.image_size;
    if (width) *width = model->cfg.image_size;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_model_feature_shape(const lwfm_model *model, int64_t height,
                                              int64_t width, int64_t *channels, int64_t *fh,
                                              int64_t *fw) {
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    int64_t c, h, w;
    lwfm_status st = lwfm__net_out_shape(model->net, height, width, &c, &h, &w);
    if (st) return st;
    if (channels) *channels = c;
    if (fh) *fh = h;
    if (fw) *fw = w;
    return LWFM_OK;
}

lwfm_status lwfm__check_images(const lwfm_model *m, const char *what, const float *images,
                               int64_t n, int64_t channels, int64_t height, int64_t width,
                               int64_t *C, int64_t *fh, int64_t *fw) {
    if (!images) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "%s is NULL", what);
    if (n <= 0)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "%s: image count must be > 0, got %lld", what,
                           (long long)n);
    if (channels != m->cfg.input_channels)
        return lwfm__error(LWFM_ERR_SHAPE, "%s: model takes %d-channel images, got %lld channels",
                           what, m->cfg.input_channels, (long long)channels);
    if (n > LWFM_LIMIT_IMAGES)
        return lwfm__error(LWFM_ERR_LIMIT, "%s: %lld images exceed LWFM_LIMIT_IMAGES = %d", what,
                           (long long)n, LWFM_LIMIT_IMAGES);
    if (height > LWFM_LIMIT_IMAGE_SIDE || width > LWFM_LIMIT_IMAGE_SIDE)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%s: images of %lld x %lld pixels exceed LWFM_LIMIT_IMAGE_SIDE = %d",
                           what, (long long)height, (long long)width, LWFM_LIMIT_IMAGE_SIDE);
    lwfm_status st = lwfm__net_out_shape(m->net, height, width, C, fh, fw);
    if (st) return st;
    size_t in_n;
    int64_t in_dims[4] = {n, channels, height, width};
    if (lwfm__numel(in_dims, 4, &in_n) || in_n > ((size_t)1 << 40))
        return lwfm__error(LWFM_ERR_LIMIT, "%s: batch of %lld images is too large", what,
                           (long long)n);
    if (!lwfm__all_finite(images, in_n))
        return lwfm__error(LWFM_ERR_NONFINITE, "%s contain NaN or infinite values", what);
    return LWFM_OK;
}

/* Validate a forward call's arguments including the output capacity. */
static lwfm_status check_forward(const lwfm_model *m, const float *images, int64_t n,
                                 int64_t channels, int64_t height, int64_t width,
                                 const float *features, size_t capacity, size_t *count) {
    if (!features) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "features is NULL");
    int64_t c, fh, fw;
    lwfm_status st =
        lwfm__check_images(m, "images", images, n, channels, height, width, &c, &fh, &fw);
    if (st) return st;
    size_t out_n;
    int64_t out_dims[4] = {n, c, fh, fw};
    if (lwfm__numel(out_dims, 4, &out_n) || capacity < out_n)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "features buffer holds %zu floats, %lld x %lld x %lld x %lld needed",
                           capacity, (long long)n, (long long)c, (long long)fh, (long long)fw);
    *count = out_n;
    return LWFM_OK;
}

/* The backbone into scratch, then into `features` only when every value is
 * finite: finite pixels of extreme magnitude (+-3e38) overflow inside the
 * backbone, which the episode calls refuse as well; and `features` may
 * overlap `images` (nothing is written before the whole batch is read). */
static lwfm_status forward_checked(const lwfm_model *m, lwfm__net_ctx *ctx, const float *images,
                                   int64_t n, int64_t h, int64_t w, float *features,
                                   size_t count) {
    float *tmp = lwfm__alloc(count * sizeof(float));
    if (!tmp)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory for %zu feature values", count);
    lwfm_status st = ctx ? lwfm__net_forward(ctx, images, n, h, w, tmp)
                         : lwfm__model_forward(m, images, n, h, w, tmp);
    if (!st && !lwfm__all_finite(tmp, count))
        st = lwfm__error(LWFM_ERR_NONFINITE,
                         "images: the backbone's features overflowed to NaN or infinity (pixel "
                         "values of extreme magnitude; are the images normalised?)");
    if (!st) memcpy(features, tmp, count * sizeof(float));
    lwfm__free(tmp);
    return st;
}

LWFM_API lwfm_status lwfm_backbone_create(lwfm_backbone **out, lwfm_model *model) {
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    lwfm_backbone *b = calloc(1, sizeof *b);
    if (!b) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm_status st = lwfm__net_ctx_create(&b->ctx, model->net);
    if (st) {
        free(b);
        return st;
    }
    lwfm__model_retain(model);
    b->model = model;
    *out = b;
    return LWFM_OK;
}

LWFM_API void lwfm_backbone_destroy(lwfm_backbone *backbone) {
    if (!backbone) return;
    lwfm__net_ctx_free(backbone->ctx);
    lwfm__model_release(backbone->model);
    free(backbone);
}

LWFM_API lwfm_status lwfm_backbone_forward(lwfm_backbone *backbone, const float *images, int64_t n,
                                           int64_t channels, int64_t height, int64_t width,
                                           float *features, size_t capacity) {
    lwfm__error_clear();
    if (!backbone) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "backbone is NULL");
    size_t count = 0;
    lwfm_status st = check_forward(backbone->model, images, n, channels, height, width, features,
                                   capacity, &count);
    if (st) return st;
    return forward_checked(backbone->model, backbone->ctx, images, n, height, width, features,
                           count);
}

/* Borrow a context from the model's pool (or make one). */
static lwfm_status pool_take(lwfm_model *m, lwfm__net_ctx **ctx) {
    pthread_mutex_lock(&m->pool_lock);
    lwfm__net_ctx *c = m->pool_n > 0 ? m->pool[--m->pool_n] : NULL;
    pthread_mutex_unlock(&m->pool_lock);
    if (c) {
        *ctx = c;
        return LWFM_OK;
    }
    return lwfm__net_ctx_create(ctx, m->net);
}

static void pool_give(lwfm_model *m, lwfm__net_ctx *ctx) {
    pthread_mutex_lock(&m->pool_lock);
    if (m->pool_n < LWFM_POOL_MAX) {
        m->pool[m->pool_n++] = ctx;
        ctx = NULL;
    }
    pthread_mutex_unlock(&m->pool_lock);
    lwfm__net_ctx_free(ctx);
}

lwfm_status lwfm__model_forward(const lwfm_model *model, const float *images, int64_t n, int64_t h,
                                int64_t w, float *out) {
    /* The pool is mutable scratch behind an immutable model. */
    lwfm_model *m = (lwfm_model *)model;
    lwfm__net_ctx *ctx;
    lwfm_status st = pool_take(m, &ctx);
    if (st) return st;
    st = lwfm__net_forward(ctx, images, n, h, w, out);
    pool_give(m, ctx);
    return st;
}

LWFM_API lwfm_status lwfm_model_features(const lwfm_model *model, const float *images, int64_t n,
                                         int64_t channels, int64_t height, int64_t width,
                                         float *features, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_model_features");
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    double tp = LWFM_PROF_T0();
    size_t count = 0;
    lwfm_status st =
        check_forward(model, images, n, channels, height, width, features, capacity, &count);
    if (st) return st;
    st = forward_checked(model, NULL, images, n, height, width, features, count);
    LWFM_PROF_ADD(LWFM_PROF_BACKBONE, tp);
    return st;
}

lwfm__arena *lwfm__model_arena_take(const lwfm_model *model) {
    lwfm_model *m = (lwfm_model *)model; /* the pool is scratch behind an immutable model */
    pthread_mutex_lock(&m->pool_lock);
    lwfm__arena *a = m->arena_n > 0 ? m->arenas[--m->arena_n] : NULL;
    pthread_mutex_unlock(&m->pool_lock);
    return a ? a : calloc(1, sizeof(lwfm__arena));
}

void lwfm__model_arena_give(const lwfm_model *model, lwfm__arena *a) {
    lwfm_model *m = (lwfm_model *)model;
    if (!a) return;
    pthread_mutex_lock(&m->pool_lock);
    if (m->arena_n < LWFM_POOL_MAX) {
        m->arenas[m->arena_n++] = a;
        a = NULL;
    }
    pthread_mutex_unlock(&m->pool_lock);
    if (a) {
        lwfm__arena_free(a);
        free(a);
    }
}

LWFM_API int64_t lwfm_model_convolutions(const lwfm_model *model) {
    return model ? lwfm__net_convs(model->net) : 0;
}

LWFM_API const char *lwfm_model_convolution_name(const lwfm_model *model, int64_t i) {
    if (!model || i < 0 || i >= lwfm__net_convs(model->net)) return NULL;
    return lwfm__net_conv_name(model->net, (int)i);
}

/* The forward with its range recording, into scratch: `ranges` is written
 * only when the whole batch ran. */
static lwfm_status ranges_run(lwfm_model *m, const float *images, int64_t n, int64_t h,
                              int64_t w, size_t n_feat, float *ranges, size_t n_ranges) {
    float *feat = lwfm__alloc(n_feat * sizeof(float));
    float *tmp = lwfm__alloc(n_ranges * sizeof(float));
    lwfm__net_ctx *ctx = NULL;
    lwfm_status st = !feat || !tmp ? lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory")
                                   : pool_take(m, &ctx);
    if (!st) {
        st = lwfm__net_ranges(ctx, images, n, h, w, feat, tmp);
        pool_give(m, ctx);
    }
    if (!st) memcpy(ranges, tmp, n_ranges * sizeof(float));
    lwfm__free(feat);
    lwfm__free(tmp);
    return st;
}

LWFM_API lwfm_status lwfm_model_convolution_ranges(const lwfm_model *model, const float *images,
                                                   int64_t n, int64_t channels, int64_t height,
                                                   int64_t width, float *ranges, size_t capacity) {
    lwfm__error_clear();
    if (!model || !ranges) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model or ranges is NULL");
    if (model->precision != LWFM_PRECISION_FP32)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "convolution ranges are measured on the model loaded in fp32");
    int64_t c, fh, fw;
    lwfm_status st =
        lwfm__check_images(model, "images", images, n, channels, height, width, &c, &fh, &fw);
    if (st) return st;
    const size_t n_ranges = (size_t)n * (size_t)lwfm__net_convs(model->net);
    if (capacity < n_ranges)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "ranges buffer holds %zu floats, %lld x %d needed", capacity,
                           (long long)n, lwfm__net_convs(model->net));
    return ranges_run((lwfm_model *)model, images, n, height, width, (size_t)(n * c * fh * fw),
                      ranges, n_ranges);
}

/* The forward with its histograms, into scratch counts added to `counts`
 * only when the whole batch ran. */
static lwfm_status histograms_run(lwfm_model *m, const float *images, int64_t n, int64_t h,
                                  int64_t w, size_t n_feat, const float *limits, int64_t bins,
                                  uint64_t *counts, size_t n_counts) {
    float *feat = lwfm__alloc(n_feat * sizeof(float));
    uint64_t *tmp = calloc(n_counts ? n_counts : 1, sizeof(uint64_t));
    lwfm__net_ctx *ctx = NULL;
    lwfm_status st =
        !feat || !tmp ? lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory") : pool_take(m, &ctx);
    if (!st) {
        st = lwfm__net_histograms(ctx, images, n, h, w, feat, limits, bins, tmp);
        pool_give(m, ctx);
    }
    if (!st)
        for (size_t i = 0; i < n_counts; i++) counts[i] += tmp[i];
    lwfm__free(feat);
    free(tmp);
    return st;
}

#define LWFM_MAX_HIST_BINS (1 << 24)

LWFM_API lwfm_status lwfm_model_convolution_histograms(const lwfm_model *model, const float *images,
                                                       int64_t n, int64_t channels, int64_t height,
                                                       int64_t width, const float *limits,
                                                       int64_t bins, uint64_t *counts,
                                                       size_t capacity) {
    lwfm__error_clear();
    if (!model || !limits || !counts)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model, limits or counts is NULL");
    if (model->precision != LWFM_PRECISION_FP32)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "convolution histograms are measured on the model loaded in fp32");
    if (bins < 2 || bins > LWFM_MAX_HIST_BINS)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "bins = %lld, must be 2 .. %d",
                           (long long)bins, LWFM_MAX_HIST_BINS);
    const int convs = lwfm__net_convs(model->net);
    for (int i = 0; i < convs; i++)
        if (!(isfinite(limits[i]) && limits[i] > 0.0f))
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "limits[%d] = %g, must be finite and > 0",
                               i, (double)limits[i]);
    int64_t c, fh, fw;
    lwfm_status st =
        lwfm__check_images(model, "images", images, n, channels, height, width, &c, &fh, &fw);
    if (st) return st;
    const size_t n_counts = (size_t)convs * (size_t)bins;
    if (capacity < n_counts)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "counts buffer holds %zu entries, %d x %lld needed", capacity, convs,
                           (long long)bins);
    return histograms_run((lwfm_model *)model, images, n, height, width, (size_t)(n * c * fh * fw),
                          limits, bins, counts, n_counts);
}
