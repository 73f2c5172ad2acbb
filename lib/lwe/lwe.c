/* LWE kernels (see lwe.h). */
#include "lwe/lwe.h"

#include <math.h>

#include "core/core.h"
#include "core/vec.h"

#define UNIT_EPS 1e-6 /* step 2: sqrt(sum of squares + 1e-6) */
#define VAR_EPS 1e-5  /* step 3: (R - mean) / sqrt(var + 1e-5) */

LWFM_MULTIARCH void lwfm__lwe_prepare_image(const lwfm__layers *ly, const float *feat, float *X,
                                            float *U) {
    const int C = ly->C, P = ly->P;
    /* Transpose to position-major, 64 channels at a time so that the block
     * read (64 x P contiguous floats) stays in L1 while each position's 64
     * channels are gathered from it (stride P). */
    for (int c0 = 0; c0 < C; c0 += 64) {
        const int nc = C - c0 < 64 ? C - c0 : 64;
        const float *blk = feat + (int64_t)c0 * P;
        for (int p = 0; p < P; p++) {
            float *x = X + (int64_t)p * C + c0;
#pragma omp simd
            for (int c = 0; c < nc; c++) x[c] = blk[c * P + p];
        }
    }
    for (int p = 0; p < P; p++) {
        float *x = X + (int64_t)p * C;
        const float sum = lwfm__sum(x, C);
        /* centre (step 1), then unit vectors per layer (step 2) */
        const float mp = sum / (float)C;
#pragma omp simd
        for (int c = 0; c < C; c++) x[c] -= mp;
        float *u = U + (int64_t)p * C;
        for (int l = 0; l < ly->n; l++) {
            const float *xs = x + ly->off[l];
            float *us = u + ly->off[l];
            const int d = ly->dim[l];
            const float ss = lwfm__dot(xs, xs, d);
            const float inv = (float)(1.0 / sqrt((double)ss + UNIT_EPS));
#pragma omp simd
            for (int k = 0; k < d; k++) us[k] = xs[k] * inv;
        }
    }
}

/* exp(x) for x <= 0 (softmax arguments after the max is subtracted) on 8
 * lanes, to about 2 ulp: 2^n p(r) with n = round(x / ln 2) taken from the
 * low bits of x / ln 2 + 1.5 * 2^23 (no float-to-int conversion, so a NaN
 * stays a NaN without undefined behaviour), r = x - n ln 2 in
 * [-ln2/2, ln2/2] and a degree-6 polynomial. Below -87 the result is
 * exp(-87) (never denormal). */
LWFM_VEC_INLINE lwfm__v8 exp_nonpos(lwfm__v8 x) {
    const lwfm__v8 lo = LWFM_V8(-87.0f), magic = LWFM_V8(12582912.0f);
    const lwfm__v8i below = x < lo;
    x = lwfm__v8_select(below, lo, x);
    const lwfm__v8 t = x * LWFM_V8(1.44269504088896341f) + magic;
    const lwfm__v8 n = t - magic;
    const lwfm__v8 r =
        x - n * LWFM_V8(0.693145751953125f) - n * LWFM_V8(1.42860682030941723212e-6f);
    lwfm__v8 p = LWFM_V8(1.0f / 720.0f);
    p = p * r + LWFM_V8(1.0f / 120.0f);
    p = p * r + LWFM_V8(1.0f / 24.0f);
    p = p * r + LWFM_V8(1.0f / 6.0f);
    p = p * r + LWFM_V8(0.5f);
    p = p * r + LWFM_V8(1.0f);
    p = p * r + LWFM_V8(1.0f);
    const lwfm__v8i bits = ((lwfm__v8i)t - (lwfm__v8i)magic + 127) << 23; /* 2^n */
    return p * (lwfm__v8)bits;
}

/* Steps 3-4 along the rows of a rows x n block M (leading dimension ldm)
 * made of n / rows square pair blocks side by side: each column is
 * standardised over the rows (unbiased variance) and soft-maxed over them at
 * temperature t_attn; out[s * rows + r] = sum of row r of the result over
 * the s-th block's columns. Columns are processed 8 at a time in vector
 * registers, so one pass covers several pair blocks. Single precision is
 * ample: correlations lie in [-1, 1]. work: rows * n floats. */
LWFM_MULTIARCH static void softmax_rows_blocksum(const float *M, int64_t ldm, int rows, int n,
                                                 float t_attn, float *out, float *work) {
    float *E = work; /* rows x n: the soft-maxed block */
    const lwfm__v8 inv_r = LWFM_V8(1.0f / (float)rows);
    const float inv_r1 = 1.0f / (float)(rows - 1); /* rows >= 2 */
    for (int c0 = 0; c0 < n; c0 += 8) {
        const int k = n - c0 < 8 ? n - c0 : 8;
        lwfm__v8 mean = {0}, var = {0}, scale, mx = LWFM_V8(-INFINITY), sum = {0};
        for (int r = 0; r < rows; r++) mean += lwfm__v8_loadn(M + r * ldm + c0, k);
        mean *= inv_r;
        for (int r = 0; r < rows; r++) {
            const lwfm__v8 d = lwfm__v8_loadn(M + r * ldm + c0, k) - mean;
            var += d * d;
        }
        { /* through arrays, so the loop vectorises (lane by lane, GCC goes through the stack) */
            float vr[8], sc[8];
            *(lwfm__v8u *)vr = var;
#pragma omp simd
            for (int i = 0; i < 8; i++)
                sc[i] = 1.0f / (sqrtf(vr[i] * inv_r1 + (float)VAR_EPS) * t_attn);
            scale = lwfm__v8_load(sc);
        }
        for (int r = 0; r < rows; r++) {
            const lwfm__v8 z = (lwfm__v8_loadn(M + r * ldm + c0, k) - mean) * scale;
            const lwfm__v8i up = z > mx;
            mx = lwfm__v8_select(up, z, mx);
            lwfm__v8_storen(E + (size_t)r * n + c0, z, k);
        }
        for (int r = 0; r < rows; r++) {
            const lwfm__v8 e = exp_nonpos(lwfm__v8_loadn(E + (size_t)r * n + c0, k) - mx);
            sum += e;
            lwfm__v8_storen(E + (size_t)r * n + c0, e, k);
        }
        const lwfm__v8 inv = LWFM_V8(1.0f) / sum; /* lanes past k: exp(0) sums, unused */
        for (int r = 0; r < rows; r++)
            lwfm__v8_storen(E + (size_t)r * n + c0,
                             lwfm__v8_loadn(E + (size_t)r * n + c0, k) * inv, k);
    }
    for (int r = 0; r < rows; r++) {
        const float *e = E + (size_t)r * n;
        for (int s = 0; s < n / rows; s++) {
            float w = 0.0f;
            for (int k = s * rows; k < (s + 1) * rows; k++) w += e[k];
            out[s * rows + r] = w;
        }
    }
}

LWFM_MULTIARCH void lwfm__lwe_attention_blocks(const float *Rq, int64_t ldq, const float *Rs,
                                               int64_t lds, int P, int n_pairs, float t_attn,
                                               float *ws, float *wq, float *work) {
    /* support side: softmax over a (Rs's rows) for each b; query side:
     * softmax over b (Rq's rows) for each a */
    softmax_rows_blocksum(Rs, lds, P, P * n_pairs, t_attn, ws, work);
    softmax_rows_blocksum(Rq, ldq, P, P * n_pairs, t_attn, wq, work);
}

LWFM_MULTIARCH void lwfm__lwe_attention(const float *R, int64_t ldr, int P, float t_attn, float *ws,
                                        float *wq, float *work) {
    float *Rt = work; /* R transposed: query position-major */
    for (int a = 0; a < P; a++)
        for (int b = 0; b < P; b++) Rt[b * P + a] = R[a * ldr + b];
    lwfm__lwe_attention_blocks(Rt, P, R, ldr, P, 1, t_attn, ws, wq, work + (size_t)P * P);
}
