/* DN4 (peers.md section 2): unit local descriptors, image-to-class k-nearest-
 * neighbour sums. The kernels are lib/heads/dn4.c and lib/heads/i2c.c. */
#include <string.h>

#include "core/core.h"
#include "core/omp_compat.h"
#include "core/profile.h"
#include "heads/dn4.h"
#include "heads/i2c.h"
#include "methods/method.h"
#include "model.h"

typedef struct dn4_prep {
    lwfm__prep_mem mem;
    lwfm__dn4_side s;
} dn4_prep;

static int dn4_config_key(const lwfm__config *c, const char *key) {
    (void)c;
    return !strcmp(key, "neighbor_k");
}

/* One buffer: the unit descriptors U, P x C per image. */
static void dn4_layout(const lwfm_model *m, int64_t n, int64_t P, lwfm__prep_layout *out) {
    (void)n;
    out->struct_bytes = sizeof(dn4_prep);
    out->n_image_buf = 1;
    out->image_bytes[0] = (size_t)P * (size_t)m->layers.C * sizeof(float);
    out->type[0] = 'f';
}

static void dn4_bind(lwfm__prep *prep) {
    dn4_prep *p = (dn4_prep *)prep;
    p->s = (lwfm__dn4_side){.n = p->mem.n, .P = p->mem.P, .U = p->mem.buf[0]};
}

static lwfm_status dn4_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                               lwfm__arena *arena, lwfm__prep **out) {
    double tp = LWFM_PROF_T0();
    const int64_t C = m->layers.C;
    dn4_prep *p = (dn4_prep *)lwfm__prep_make(m, n, P, arena);
    if (!p) return LWFM_ERR_OUT_OF_MEMORY;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        lwfm__dn4_prepare_image(feats + i * C * P, (int)C, P, p->s.U + i * P * C);
    *out = (lwfm__prep *)p;
    LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
    return LWFM_OK;
}

static lwfm_status dn4_check_support(const lwfm_model *m, int64_t P, const int64_t *count,
                                     int64_t way) {
    int64_t most = lwfm__i2c_images(count, way) * P;
    if (m->cfg.neighbor_k > most)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "DN4 neighbor_k = %d exceeds the %lld local descriptors of the "
                           "smallest class (of one image when the classes' image counts "
                           "differ); give more or larger support images",
                           m->cfg.neighbor_k, (long long)most);
    return LWFM_OK;
}

static lwfm_status dn4_score(const lwfm_model *m, const lwfm__prep *S, const int32_t *labels,
                             const int64_t *count, int64_t way, const lwfm__prep *Q, float *logits,
                             lwfm__arena *arena) {
    double tp = LWFM_PROF_T0();
    lwfm_status st = lwfm__dn4_score(m, &((const dn4_prep *)S)->s, labels, count, way,
                                     &((const dn4_prep *)Q)->s, logits, arena);
    LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
    return st;
}

const lwfm__method lwfm__method_dn4 = {
    .id = LWFM_METHOD_DN4,
    .name = "dn4",
    .weight_prefix = "",
    .config_key = dn4_config_key,
    .layout = dn4_layout,
    .bind = dn4_bind,
    .prepare = dn4_prepare,
    .check_support = dn4_check_support,
    .score = dn4_score,
};
