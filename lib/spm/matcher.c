/* SPM matcher (see matcher.h). */
#include "spm/matcher.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "core/vec.h"
#include "core/omp_compat.h"
#include "spm/assign.h"

#define COS_EPS 1e-8
/* Rows of position vectors per matcher GEMM. */

/* out (cols x rows) = in (rows x cols)^T */
static void transpose(const float *in, int rows, int cols, float *out) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) out[(size_t)c * rows + r] = in[(size_t)r * cols + c];
}

lwfm_status lwfm__matcher_load(lwfm__matcher *m, const lwfm__archive *ar, const lwfm__layers *ly,
                               int learnable) {
    memset(m, 0, sizeof *m);
    m->learnable = learnable;
    if (!learnable) return LWFM_OK;
    for (int l = 0; l < ly->n; l++) {
        int d = ly->dim[l], h = d / 2;
        if (h < 1)
            return lwfm__error(LWFM_ERR_SHAPE, "layer %d has %d channels; the matcher needs >= 2",
                               l, d);
        char key[96];
        const float *w;
        int64_t s1[2] = {h, d}, s2[2] = {d, h};
        lwfm_status st;
        m->hid[l] = h;
        snprintf(key, sizeof key, "matchers.%d.linear.0.weight", l);
        if ((st = lwfm__archive_get_f32(ar, key, 2, s1, &w))) return st;
        if (!(m->w1[l] = lwfm__alloc((size_t)h * d * sizeof(float)))) goto oom;
        transpose(w, h, d, m->w1[l]);
        snprintf(key, sizeof key, "matchers.%d.linear.2.weight", l);
        if ((st = lwfm__archive_get_f32(ar, key, 2, s2, &w))) return st;
        if (!(m->w2[l] = lwfm__alloc((size_t)h * d * sizeof(float)))) goto oom;
        transpose(w, d, h, m->w2[l]);
    }
    return LWFM_OK;
oom:
    return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (matcher weights)");
}

void lwfm__matcher_free(lwfm__matcher *m) {
    for (int l = 0; l < LWFM_MAX_TAPS; l++) {
        lwfm__free(m->w1[l]);
        lwfm__free(m->w2[l]);
    }
    memset(m, 0, sizeof *m);
}

size_t lwfm__matcher_tmp_floats(const lwfm__matcher *m, const lwfm__layers *ly, int64_t P) {
    int h = 0;
    for (int l = 0; l < ly->n; l++)
        if (m->hid[l] > h) h = m->hid[l];
    return (size_t)omp_get_max_threads() * (size_t)P * (size_t)(h > 0 ? h : 1);
}

/* One block of rows: G_l = relu(relu(X_l W1^T) W2^T) + X_l (or X_l when not
 * learnable) and the norms. oneDNN's GEMM runs single-threaded here. */
LWFM_MULTIARCH static int matcher_block(const lwfm__matcher *m, const lwfm__layers *ly,
                                        int64_t rows, const float *X, float *G, float *gnorm,
                                        float *tmp) {
    const int C = ly->C, L = ly->n;
    for (int l = 0; l < L; l++) {
        const int off = ly->off[l], d = ly->dim[l], h = m->hid[l];
        if (m->learnable) {
            if (dnnl_sgemm('N', 'N', rows, h, d, 1.0f, X + off, C, m->w1[l], h, 0.0f, tmp, h) !=
                dnnl_success)
                return -1;
            for (int64_t i = 0; i < rows * h; i++) tmp[i] = tmp[i] > 0.0f ? tmp[i] : 0.0f;
            if (dnnl_sgemm('N', 'N', rows, d, h, 1.0f, tmp, h, m->w2[l], d, 0.0f, G + off, C) !=
                dnnl_success)
                return -1;
        }
        for (int64_t r = 0; r < rows; r++) {
            const float *x = X + r * C + off;
            float *g = G + r * C + off;
            if (m->learnable) {
#pragma omp simd
                for (int c = 0; c < d; c++) g[c] = (g[c] > 0.0f ? g[c] : 0.0f) + x[c];
            } else {
                memcpy(g, x, sizeof(float) * (size_t)d);
            }
            gnorm[r * L + l] = sqrtf(lwfm__dot(g, g, d));
        }
    }
    return 0;
}

lwfm_status lwfm__matcher_apply(const lwfm__matcher *m, const lwfm__layers *ly, int64_t n,
                                int64_t P, const float *X, float *G, float *gnorm, float *tmp) {
    const int C = ly->C, L = ly->n;
    int h = 1, failed = 0;
    for (int l = 0; l < L; l++)
        if (m->hid[l] > h) h = m->hid[l];
    /* One GEMM per image: oneDNN's GEMM rounds a row differently depending on
     * how many rows share the call and where the row falls among them, so
     * blocks spanning images would make an image's g_l(X) depend on the
     * images prepared with it and on the thread count (a grown or saved
     * support set must equal one prepared whole, on any number of threads). */
#pragma omp parallel
    {
        float *mine = tmp + (size_t)omp_get_thread_num() * (size_t)P * (size_t)h;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            if (failed) continue;
            if (matcher_block(m, ly, P, X + i * P * C, G + i * P * C, gnorm + i * P * L, mine)) {
#pragma omp atomic write
                failed = 1;
            }
        }
    }
    if (failed) return lwfm__error(LWFM_ERR_BACKEND, "oneDNN: sgemm (matcher) failed");
    return LWFM_OK;
}

size_t lwfm__spm_work_doubles(int P) {
    return (size_t)P * P + lwfm__assign_work_doubles(P) + (size_t)P;
}

LWFM_MULTIARCH double lwfm__spm_pair_score(const float *R, int64_t ldr, int P, const float *Gs,
                                           const float *ns, const float *Gq, const float *nq,
                                           int64_t ldg, int64_t nstride, int d, int top_k,
                                           int *sigma, float *sim, double *work) {
    double *cost = work, *solver = work + (size_t)P * P;
    double *c = solver + lwfm__assign_work_doubles(P);
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) cost[a * P + b] = 1.0 - (double)R[a * ldr + b];
    /* Inputs are finite, but values of extreme magnitude can overflow to NaN
     * on the way; then the solver refuses, and the pair's score is NaN (the
     * caller refuses non-finite scores) with an identity matching, so that
     * sigma never holds stale indices. */
    if (lwfm__assign_solve(cost, P, sigma, NULL, solver) != 0) {
        for (int a = 0; a < P; a++) {
            sigma[a] = a;
            if (sim) sim[a] = NAN;
        }
        return NAN;
    }
    for (int a = 0; a < P; a++) {
        const float *u = Gs + (int64_t)a * ldg, *v = Gq + (int64_t)sigma[a] * ldg;
        const float dot = lwfm__dot(u, v, d);
        double den = (double)ns[a * nstride] * nq[sigma[a] * nstride];
        c[a] = dot / (den > COS_EPS ? den : COS_EPS);
        if (sim) sim[a] = (float)c[a];
    }
    /* sum of the top_k largest c_a: partial selection sort (P is small) */
    double sum = 0.0;
    for (int k = 0; k < top_k && k < P; k++) {
        int best = k;
        for (int a = k + 1; a < P; a++)
            if (c[a] > c[best]) best = a;
        double t = c[k];
        c[k] = c[best];
        c[best] = t;
        sum += c[k];
    }
    return sum;
}
