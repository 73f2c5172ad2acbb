/* DN4 image-to-class measure (peers.md section 2), see dn4.h. */
#include "heads/dn4.h"

#include <math.h>

#include "core/core.h"
#include "heads/i2c.h"
#include "model.h"

#define NORM_EPS 1e-12

void lwfm__dn4_prepare_image(const float *feat, int C, int64_t P, float *U) {
    for (int64_t p = 0; p < P; p++) {
        float *u = U + p * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) {
            float v = feat[(int64_t)c * P + p];
            u[c] = v;
            ss += (double)v * v;
        }
        double norm = sqrt(ss);
        float inv = (float)(1.0 / (norm > NORM_EPS ? norm : NORM_EPS));
        for (int c = 0; c < C; c++) u[c] *= inv;
    }
}

int64_t lwfm__fewest_in_class(const int64_t *count, int64_t way) {
    int64_t fewest = INT64_MAX;
    for (int64_t c = 0; c < way; c++)
        if (count[c] < fewest) fewest = count[c];
    return fewest;
}

lwfm_status lwfm__dn4_score(const lwfm_model *m, const lwfm__dn4_side *S, const int32_t *labels,
                            const int64_t *count, int64_t way, const lwfm__dn4_side *Q,
                            float *logits, lwfm__arena *arena) {
    size_t n = (size_t)Q->n * way;
    double *acc = lwfm__arena_get(arena, LWFM_SLOT_LEVELS, n * sizeof(double));
    if (!acc) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring DN4 queries");
    lwfm_status st = lwfm__i2c_topk(m->engine, Q->U, Q->n, Q->P, S->U, S->n, S->P, m->layers.C,
                                    labels, count, way, m->cfg.neighbor_k, acc, arena,
                                    LWFM_SLOT_R);
    if (st) return st;
    for (size_t i = 0; i < n; i++) logits[i] = (float)acc[i];
    return LWFM_OK;
}
