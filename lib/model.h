/* The model object behind lwfm_model (private). */
#ifndef LWFM_MODEL_H
#define LWFM_MODEL_H

#include <pthread.h>
#include <stdatomic.h>

#include "backbone/net.h"
#include "core/arena.h"
#include "config.h"
#include "lwe/lwe.h"
#include "methods/method.h"

#define LWFM_POOL_MAX 16

struct lwfm_model {
    atomic_int refs;
    lwfm__config cfg;
    lwfm__net *net;
    lwfm_precision precision;
    uint8_t fingerprint[32]; /* SHA-256 of the weight file's arrays (lwfm_model_fingerprint) */
    lwfm__layers layers;   /* tapped layers of the feature map */
    const lwfm__method *method; /* the entry of cfg.method in the method table */
    void *weights;              /* the method's own weights (its load / free) */
    dnnl_engine_t engine;  /* for the metric's matmuls */
    pthread_mutex_t pool_lock;
    lwfm__net_ctx *pool[LWFM_POOL_MAX];
    int pool_n;
    lwfm__arena *arenas[LWFM_POOL_MAX]; /* metric scratch, reused across calls */
    int arena_n;
};

/* `n` bytes as 2n lowercase hex digits and a NUL into hex. */
void lwfm__hex(const uint8_t *bytes, size_t n, char *hex);

/* Borrow a scratch arena (NULL when out of memory) and give it back. */
lwfm__arena *lwfm__model_arena_take(const lwfm_model *m);
void lwfm__model_arena_give(const lwfm_model *m, lwfm__arena *a);

/* Reference counting: handles made from a model keep it alive. */
void lwfm__model_retain(lwfm_model *m);
void lwfm__model_release(lwfm_model *m);

/* Backbone features of validated images into out (n x C x fh x fw), using
 * a pooled context. */
lwfm_status lwfm__model_forward(const lwfm_model *m, const float *images, int64_t n, int64_t h,
                                int64_t w, float *out);

/* Validate an image batch (NULL, counts, channels, non-finite) and give the
 * feature shape. */
lwfm_status lwfm__check_images(const lwfm_model *m, const char *what, const float *images,
                               int64_t n, int64_t channels, int64_t height, int64_t width,
                               int64_t *C, int64_t *fh, int64_t *fw);

#endif
