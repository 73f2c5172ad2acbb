/* LWE kernels (see lwe.h). */
#include "lwe/lwe.h"

#include <math.h>

#include "core/core.h"

#define UNIT_EPS 1e-6 /* step 2: sqrt(sum of squares + 1e-6) */
#define VAR_EPS 1e-5  /* step 3: (R - mean) / sqrt(var + 1e-5) */

LWFM_MULTIARCH void lwfm__lwe_prepare_image(const lwfm__layers *ly, const float *feat, float *X,
                                            float *U) {
    const int C = ly->C, P = ly->P;
    /* channel mean per position, accumulated over contiguous rows of feat */
    float mean[LWFM_MAX_POSITIONS];
    for (int p = 0; p < P; p++) mean[p] = 0.0f;
    for (int c = 0; c < C; c++) {
        const float *row = feat + (int64_t)c * P;
#pragma omp simd
        for (int p = 0; p < P; p++) mean[p] += row[p];
    }
    for (int p = 0; p < P; p++) mean[p] /= (float)C;
    /* Transpose to position-major while centring, 16 channels at a time: a
     * block of 16 channels is 16 * P contiguous floats of feat, and each of
     * X's rows (C floats apart, often exactly 4 KiB, so scattered writes
     * into all rows would thrash one L1 set) gets a whole 64-byte line. */
    float block[16 * 64]; /* 16 channels x up to 64 positions */
    int c0 = 0;
    if (P <= 64) {
        for (; c0 + 16 <= C; c0 += 16) {
            const float *src = feat + (int64_t)c0 * P;
            for (int k = 0; k < 16; k++)
                for (int p = 0; p < P; p++) block[p * 16 + k] = src[k * P + p];
            for (int p = 0; p < P; p++) {
                float *x = X + (int64_t)p * C + c0;
                const float mp = mean[p];
#pragma omp simd
                for (int k = 0; k < 16; k++) x[k] = block[p * 16 + k] - mp;
            }
        }
    }
    for (int p = 0; p < P; p++) { /* the rest (or every channel for large P) */
        float *x = X + (int64_t)p * C;
        const float mp = mean[p];
        for (int c = c0; c < C; c++) x[c] = feat[(int64_t)c * P + p] - mp;
    }
    for (int p = 0; p < P; p++) {
        const float *x = X + (int64_t)p * C;
        float *u = U + (int64_t)p * C;
        for (int l = 0; l < ly->n; l++) {
            const float *xs = x + ly->off[l];
            float *us = u + ly->off[l];
            const int d = ly->dim[l];
            float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
            for (int k = 0; k < d; k++) ss += xs[k] * xs[k];
            const float inv = (float)(1.0 / sqrt((double)ss + UNIT_EPS));
#pragma omp simd
            for (int k = 0; k < d; k++) us[k] = xs[k] * inv;
        }
    }
}

/* exp(x) for x <= 0 (softmax arguments after the max is subtracted), to
 * about 2 ulp: 2^n * p(r) with r = x - n ln 2 in [-ln2/2, ln2/2] and a
 * degree-6 polynomial. Plain arithmetic, so loops over it vectorise. */
static inline float exp_nonpos(float x) {
    x = x >= -87.0f ? x : -87.0f; /* NaN too: it must not reach the int conversion */
    const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f); /* inlines */
    const float r = x - n * 0.693145751953125f - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        float f;
        int32_t i;
    } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

/* Steps 3-4 with every inner loop running along R's contiguous (query)
 * axis, so the compiler vectorises them: the support-side softmax (along a,
 * for each column b) keeps per-column statistics in vectors over b, the
 * query-side softmax (along b, for each row a) works row by row. Single
 * precision is ample: correlations lie in [-1, 1] and P is small. */
LWFM_MULTIARCH void lwfm__lwe_attention(const float *R, int64_t ldr, int P, float t_attn, float *ws,
                                        float *wq, float *work) {
    float *E = work; /* P x P exponentials */
    float *mean = work + (size_t)P * P, *scale = mean + P, *mx = scale + P, *sum = mx + P;
    const float inv_p = 1.0f / (float)P, inv_p1 = 1.0f / (float)(P - 1); /* P >= 2 */

    /* support side: softmax over a of the column-standardised R, for each b */
    for (int b = 0; b < P; b++) mean[b] = 0.0f, scale[b] = 0.0f, sum[b] = 0.0f;
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) mean[b] += R[a * ldr + b];
    for (int b = 0; b < P; b++) mean[b] *= inv_p;
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) {
            const float d = R[a * ldr + b] - mean[b];
            scale[b] += d * d;
        }
    for (int b = 0; b < P; b++) {
        scale[b] = 1.0f / (sqrtf(scale[b] * inv_p1 + (float)VAR_EPS) * t_attn);
        mx[b] = -INFINITY;
    }
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) {
            const float z = (R[a * ldr + b] - mean[b]) * scale[b];
            E[a * P + b] = z;
            mx[b] = z > mx[b] ? z : mx[b];
        }
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) {
            const float e = exp_nonpos(E[a * P + b] - mx[b]);
            E[a * P + b] = e;
            sum[b] += e;
        }
    for (int b = 0; b < P; b++) sum[b] = 1.0f / sum[b];
    for (int a = 0; a < P; a++) {
        float w = 0.0f;
        for (int b = 0; b < P; b++) w += E[a * P + b] * sum[b];
        ws[a] = w;
    }

    /* query side: softmax over b of the row-standardised R, for each a */
    for (int b = 0; b < P; b++) wq[b] = 0.0f;
    for (int a = 0; a < P; a++) {
        const float *r = R + a * ldr;
        float m = 0.0f, v = 0.0f, top = -INFINITY, tot = 0.0f;
        for (int b = 0; b < P; b++) m += r[b];
        m *= inv_p;
        for (int b = 0; b < P; b++) v += (r[b] - m) * (r[b] - m);
        const float sc = 1.0f / (sqrtf(v * inv_p1 + (float)VAR_EPS) * t_attn);
        float *e = E + a * P;
        for (int b = 0; b < P; b++) {
            e[b] = (r[b] - m) * sc;
            top = e[b] > top ? e[b] : top;
        }
        for (int b = 0; b < P; b++) tot += (e[b] = exp_nonpos(e[b] - top));
        tot = 1.0f / tot;
        for (int b = 0; b < P; b++) wq[b] += e[b] * tot;
    }
}
