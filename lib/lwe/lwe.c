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
    x = x < -87.0f ? -87.0f : x;
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

/* In place: z-score along one axis of the P x P matrix m (unbiased
 * variance), then softmax of z / t along the same axis. `stride_in` steps
 * along the normalised axis, `stride_out` between the independent lines.
 * Single precision is ample here: the inputs are correlations in [-1, 1]
 * and P is small; means and variances accumulate in double. */
static inline void norm_softmax(float *m, int P, int stride_in, int stride_out, float t) {
    for (int line = 0; line < P; line++) {
        float *v = m + (int64_t)line * stride_out;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < P; i++) mean += v[i * stride_in];
        mean /= P;
        for (int i = 0; i < P; i++) {
            double d = v[i * stride_in] - mean;
            var += d * d;
        }
        var /= P - 1; /* unbiased; P >= 2 is checked when the model loads */
        const float scale = (float)(1.0 / (sqrt(var + VAR_EPS) * t));
        const float fmean = (float)mean;
        float mx = -INFINITY;
        for (int i = 0; i < P; i++) {
            float z = (v[i * stride_in] - fmean) * scale;
            v[i * stride_in] = z;
            mx = z > mx ? z : mx;
        }
        float sum = 0.0f;
        for (int i = 0; i < P; i++) sum += (v[i * stride_in] = exp_nonpos(v[i * stride_in] - mx));
        const float inv = 1.0f / sum;
        for (int i = 0; i < P; i++) v[i * stride_in] *= inv;
    }
}

LWFM_MULTIARCH void lwfm__lwe_attention(const float *R, int64_t ldr, int P, float t_attn, float *ws,
                                        float *wq, float *work) {
    float *As = work, *Aq = work + (int64_t)P * P; /* both (a, b) row-major */
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) As[a * P + b] = Aq[a * P + b] = R[a * ldr + b];
    norm_softmax(As, P, P, 1, t_attn); /* along a, for each column b */
    norm_softmax(Aq, P, 1, P, t_attn); /* along b, for each row a */
    for (int a = 0; a < P; a++) {
        float s = 0.0f;
        for (int b = 0; b < P; b++) s += As[a * P + b];
        ws[a] = s;
    }
    for (int b = 0; b < P; b++) wq[b] = 0.0f;
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) wq[b] += Aq[a * P + b];
}
