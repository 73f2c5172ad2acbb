/* SPM matcher (see matcher.h). */
#include "spm/matcher.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "core/vec.h"
#include "core/omp_compat.h"
#include "core/panel_gemm.h"
#include "spm/assign.h"

#define COS_EPS 1e-8

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
        /* x W^T with W (out x in): B(i, j) = W[j][i] */
        snprintf(key, sizeof key, "matchers.%d.linear.0.weight", l);
        if ((st = lwfm__archive_get_f32(ar, key, 2, s1, &w))) return st;
        if (!(m->w1[l] = lwfm__alloc(lwfm__panels_floats(d, h) * sizeof(float)))) goto oom;
        lwfm__panels_pack(w, 1, d, d, h, m->w1[l]);
        snprintf(key, sizeof key, "matchers.%d.linear.2.weight", l);
        if ((st = lwfm__archive_get_f32(ar, key, 2, s2, &w))) return st;
        if (!(m->w2[l] = lwfm__alloc(lwfm__panels_floats(h, d) * sizeof(float)))) goto oom;
        lwfm__panels_pack(w, 1, h, h, d, m->w2[l]);
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

/* Position rows per step of a thread: a multiple of the panel kernel's 6,
 * and enough that each panel of the weights (read from L2 or memory) serves
 * many rows, while the step's rows of X stay in L2. */
#define MATCHER_ROWS 96

size_t lwfm__matcher_tmp_floats(const lwfm__matcher *m, const lwfm__layers *ly) {
    int h = 0;
    for (int l = 0; l < ly->n; l++)
        if (m->hid[l] > h) h = m->hid[l];
    return (size_t)omp_get_max_threads() * MATCHER_ROWS * (size_t)(h > 0 ? h : 1);
}

/* Rows [0, rows) of X: G_l = relu(relu(X_l W1^T) W2^T) + X_l (or X_l when
 * not learnable) and the norms |G_l|. The ReLUs are fused in the GEMMs. */
LWFM_MULTIARCH static void matcher_rows(const lwfm__matcher *m, const lwfm__layers *ly,
                                        int64_t rows, const float *X, float *G, float *gnorm,
                                        float *tmp) {
    const int C = ly->C, L = ly->n;
    for (int l = 0; l < L; l++) {
        const int off = ly->off[l], d = ly->dim[l], h = m->hid[l];
        if (m->learnable) {
            lwfm__panels_gemm(m->w1[l], d, h, rows, X + off, C, tmp, h, 1);
            lwfm__panels_gemm(m->w2[l], h, d, rows, tmp, h, G + off, C, 1);
        }
        for (int64_t r = 0; r < rows; r++) {
            const float *x = X + r * C + off;
            float *g = G + r * C + off;
            if (m->learnable) {
#pragma omp simd
                for (int c = 0; c < d; c++) g[c] += x[c];
            } else {
                memcpy(g, x, sizeof(float) * (size_t)d);
            }
            gnorm[r * L + l] = sqrtf(lwfm__dot(g, g, d));
        }
    }
}

void lwfm__matcher_apply(const lwfm__matcher *m, const lwfm__layers *ly, int64_t n, int64_t P,
                         const float *X, float *G, float *gnorm, float *tmp) {
    const int C = ly->C, L = ly->n;
    const int64_t rows = n * P;
    int h = 1;
    for (int l = 0; l < L; l++)
        if (m->hid[l] > h) h = m->hid[l];
    /* Every position row is computed alone by the panel GEMM (one FMA
     * sequence per element), so the threads split the rows evenly, across
     * images: an image's g_l(X) does not depend on the images prepared with
     * it or on the thread count (a grown or saved support set equals one
     * prepared whole). Each thread walks its rows in steps of MATCHER_ROWS. */
#pragma omp parallel if (rows > 6) /* even one image's rows are worth splitting */
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t first = rows * t / nt, last = rows * (t + 1) / nt;
        float *mine = tmp + (size_t)t * MATCHER_ROWS * (size_t)h;
        for (int64_t r0 = first; r0 < last; r0 += MATCHER_ROWS) {
            const int64_t nr = last - r0 < MATCHER_ROWS ? last - r0 : MATCHER_ROWS;
            matcher_rows(m, ly, nr, X + r0 * C, G + r0 * C, gnorm + r0 * L, mine);
        }
    }
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
