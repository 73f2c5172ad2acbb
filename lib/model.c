/* Model loading, configuration access and the backbone handle. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/net.h"
#include "config.h"
#include "core/core.h"
#include "io/npz.h"

struct lwfm_load_options {
    lwfm_precision precision;
    lwfm__npz_limits limits;
};

/* A pool of backbone contexts lets the thread-safe model-level calls reuse
 * primitives and buffers without a context per call. */
#define LWFM_POOL_MAX 16

struct lwfm_model {
    atomic_int refs;
    lwfm__config cfg;
    lwfm__net *net;
    lwfm_precision precision;
    pthread_mutex_t pool_lock;
    lwfm__net_ctx *pool[LWFM_POOL_MAX];
    int pool_n;
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

LWFM_API void lwfm_load_options_destroy(lwfm_load_options *options) { free(options); }

LWFM_API lwfm_status lwfm_load_options_set_precision(lwfm_load_options *options,
                                                     lwfm_precision precision) {
    lwfm__error_clear();
    if (!options) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "options is NULL");
    if (precision != LWFM_PRECISION_FP32 && precision != LWFM_PRECISION_BF16)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "unknown precision %d", (int)precision);
    options->precision = precision;
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
    lwfm__net_free(m->net);
    pthread_mutex_destroy(&m->pool_lock);
    free(m);
}

static void model_release(lwfm_model *m) {
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
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
    if ((st = lwfm__net_build(&m->net, &m->cfg, ar, m->precision))) goto fail;
    *out = m;
    return LWFM_OK;
fail:
    model_free(m);
    return st;
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
    if (st) return lwfm__error_prefix(st, "%s", path);
    lwfm__log(LWFM_LOG_INFO, "loaded %s: %s on %s, %d taps", path,
              lwfm__method_name((*out)->cfg.method), lwfm__backbone_name((*out)->cfg.backbone),
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
    if (st) return lwfm__error_prefix(st, "<memory>");
    return LWFM_OK;
}

LWFM_API void lwfm_model_destroy(lwfm_model *model) { model_release(model); }

LWFM_API lwfm_method lwfm_model_method(const lwfm_model *model) { return model->cfg.method; }

LWFM_API lwfm_status lwfm_model_config_json(const lwfm_model *model, char *buffer, size_t capacity,
                                            size_t *length) {
    lwfm__error_clear();
    if (!model || (!buffer && capacity))
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model or buffer is NULL");
    size_t need = lwfm__config_json(&model->cfg, NULL, 0);
    if (length) *length = need;
    if (capacity < need + 1)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL, "configuration needs %zu bytes, buffer has %zu",
                           need + 1, capacity);
    lwfm__config_json(&model->cfg, buffer, capacity);
    return LWFM_OK;
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

/* Validate a forward call's arguments; returns the number of output floats. */
static lwfm_status check_forward(const lwfm_model *m, const float *images, int64_t n,
                                 int64_t channels, int64_t height, int64_t width,
                                 const float *features, size_t capacity) {
    if (!images || !features)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "images or features is NULL");
    if (n <= 0) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "image count must be > 0, got %lld",
                                   (long long)n);
    if (channels != m->cfg.input_channels)
        return lwfm__error(LWFM_ERR_SHAPE, "model takes %d-channel images, got %lld channels",
                           m->cfg.input_channels, (long long)channels);
    int64_t c, fh, fw;
    lwfm_status st = lwfm__net_out_shape(m->net, height, width, &c, &fh, &fw);
    if (st) return st;
    size_t in_n, out_n;
    int64_t in_dims[4] = {n, channels, height, width}, out_dims[4] = {n, c, fh, fw};
    if (lwfm__numel(in_dims, 4, &in_n) || lwfm__numel(out_dims, 4, &out_n) ||
        in_n > ((size_t)1 << 40))
        return lwfm__error(LWFM_ERR_LIMIT, "batch of %lld images is too large", (long long)n);
    if (capacity < out_n)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "features buffer holds %zu floats, %lld x %lld x %lld x %lld = %zu needed",
                           capacity, (long long)n, (long long)c, (long long)fh, (long long)fw, out_n);
    if (!lwfm__all_finite(images, in_n))
        return lwfm__error(LWFM_ERR_NONFINITE, "input images contain NaN or infinite values");
    return LWFM_OK;
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
    atomic_fetch_add(&model->refs, 1);
    b->model = model;
    *out = b;
    return LWFM_OK;
}

LWFM_API void lwfm_backbone_destroy(lwfm_backbone *backbone) {
    if (!backbone) return;
    lwfm__net_ctx_free(backbone->ctx);
    model_release(backbone->model);
    free(backbone);
}

LWFM_API lwfm_status lwfm_backbone_forward(lwfm_backbone *backbone, const float *images, int64_t n,
                                           int64_t channels, int64_t height, int64_t width,
                                           float *features, size_t capacity) {
    lwfm__error_clear();
    if (!backbone) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "backbone is NULL");
    lwfm_status st = check_forward(backbone->model, images, n, channels, height, width, features,
                                   capacity);
    if (st) return st;
    return lwfm__net_forward(backbone->ctx, images, n, height, width, features);
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

LWFM_API lwfm_status lwfm_model_features(const lwfm_model *model, const float *images, int64_t n,
                                         int64_t channels, int64_t height, int64_t width,
                                         float *features, size_t capacity) {
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    lwfm_status st = check_forward(model, images, n, channels, height, width, features, capacity);
    if (st) return st;
    /* The pool is mutable scratch behind an immutable model. */
    lwfm_model *m = (lwfm_model *)model;
    lwfm__net_ctx *ctx;
    if ((st = pool_take(m, &ctx))) return st;
    st = lwfm__net_forward(ctx, images, n, height, width, features);
    pool_give(m, ctx);
    return st;
}
