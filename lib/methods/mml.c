/* MML (peers.md section 3): pixel, part and distribution levels fused by a
 * learned layer. The kernels are lib/heads/mml.c and lib/heads/i2c.c. */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/omp_compat.h"
#include "core/profile.h"
#include "heads/i2c.h"
#include "heads/mml.h"
#include "methods/method.h"
#include "model.h"

typedef struct mml_prep {
    lwfm__prep_mem mem;
    lwfm__mml_side s;
} mml_prep;

static lwfm_status mml_load(const lwfm_model *m, const lwfm__archive *ar, void **weights) {
    (void)m;
    lwfm__mml *h = calloc(1, sizeof *h);
    if (!h) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm_status st = lwfm__mml_load(h, ar);
    if (st)
        free(h);
    else
        *weights = h;
    return st;
}

static void mml_free(void *weights) {
    free(weights);
}

static int mml_config_key(const lwfm__config *c, const char *key) {
    (void)c;
    return !strcmp(key, "neighbor_k") || !strcmp(key, "distance");
}

/* Per image: descriptors U (P x C) and V (C x P) in float, the mean mu (C)
 * and scatter (C x C) in double. */
static void mml_layout(const lwfm_model *m, int64_t n, int64_t P, lwfm__prep_layout *out) {
    (void)n;
    const size_t C = (size_t)m->layers.C, cells = (size_t)P * C;
    *out = (lwfm__prep_layout){.struct_bytes = sizeof(mml_prep),
                               .n_image_buf = 4,
                               .image_bytes = {cells * sizeof(float), cells * sizeof(float),
                                               C * sizeof(double), C * C * sizeof(double)},
                               .type = {'f', 'f', 'd', 'd'}};
}

static void mml_bind(lwfm__prep *prep) {
    mml_prep *p = (mml_prep *)prep;
    p->s = (lwfm__mml_side){.n = p->mem.n,
                            .P = p->mem.P,
                            .U = p->mem.buf[0],
                            .V = p->mem.buf[1],
                            .mu = p->mem.buf[2],
                            .scat = p->mem.buf[3]};
}

static lwfm_status mml_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                               lwfm__arena *arena, lwfm__prep **out) {
    double tp = LWFM_PROF_T0();
    const int64_t C = m->layers.C;
    mml_prep *p = (mml_prep *)lwfm__prep_make(m, n, P, arena);
    if (!p) return LWFM_ERR_OUT_OF_MEMORY;
    lwfm__mml_side *s = &p->s;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        lwfm__mml_prepare_image(feats + i * C * P, (int)C, P, s->U + i * P * C, s->V + i * C * P,
                                s->mu + i * C, s->scat + i * C * C);
    *out = (lwfm__prep *)p;
    LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
    return LWFM_OK;
}

static lwfm_status mml_check_support(const lwfm_model *m, int64_t P, const int64_t *count,
                                     int64_t way) {
    int64_t fewest = lwfm__i2c_images(count, way);
    if (P < 2)
        return lwfm__error(LWFM_ERR_SHAPE,
                           "MML needs feature maps of at least 2 positions (Gaussians of the "
                           "descriptors); use larger images");
    if (m->cfg.neighbor_k > fewest * P || m->cfg.neighbor_k > fewest * m->layers.C)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "MML neighbor_k = %d exceeds the descriptors or parts of the "
                           "smallest class",
                           m->cfg.neighbor_k);
    return LWFM_OK;
}

static lwfm_status mml_score(const lwfm_model *m, const lwfm__prep *S, const int32_t *labels,
                             const int64_t *count, int64_t way, const lwfm__prep *Q, float *logits,
                             lwfm__arena *arena) {
    double tp = LWFM_PROF_T0();
    lwfm_status st = lwfm__mml_score(m, m->weights, &((const mml_prep *)S)->s, labels, count, way,
                                     &((const mml_prep *)Q)->s, logits, arena);
    LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
    return st;
}

const lwfm__method lwfm__method_mml = {
    .id = LWFM_METHOD_MML,
    .name = "mml",
    .weight_prefix = "",
    .load = mml_load,
    .free = mml_free,
    .config_key = mml_config_key,
    .layout = mml_layout,
    .bind = mml_bind,
    .prepare = mml_prepare,
    .check_support = mml_check_support,
    .score = mml_score,
};
