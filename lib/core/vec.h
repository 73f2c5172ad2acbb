/* Reductions over float arrays with four independent vector accumulators,
 * so that a loop is bound by loads, not by the latency of one add chain
 * (GCC vector extensions: each multiarch clone lowers them to its own
 * registers). Summation order differs from a sequential loop by rounding
 * only. Private. */
#ifndef LWFM_CORE_VEC_H
#define LWFM_CORE_VEC_H

#include <stdint.h>

/* The helpers are always inlined into their callers, so the warning that
 * passing 64-byte vectors changes the ABI on CPUs without AVX-512 (the
 * default target clone) concerns no real call. */
#if defined(__GNUC__) /* GCC and clang */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float lwfm__v16 __attribute__((vector_size(64)));
/* the same, at float alignment: dereferencing one is an unaligned load */
typedef float lwfm__v16u __attribute__((vector_size(64), aligned(4), may_alias));

typedef int32_t lwfm__v16i __attribute__((vector_size(64)));

#define lwfm__v16_load(p) (*(const lwfm__v16u *)(p))
/* all 16 lanes set to x */
#define LWFM_V16(x) ((lwfm__v16){0} + (x))

#define LWFM_VEC_INLINE static inline __attribute__((always_inline))

LWFM_VEC_INLINE float lwfm__v16_hsum(lwfm__v16 v) {
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += v[k];
    return s;
}

/* lane i: mask[i] ? a[i] : b[i] (mask lanes all ones or all zeros, as
 * vector comparisons give them) */
LWFM_VEC_INLINE lwfm__v16 lwfm__v16_select(lwfm__v16i mask, lwfm__v16 a, lwfm__v16 b) {
    return (lwfm__v16)((mask & (lwfm__v16i)a) | (~mask & (lwfm__v16i)b));
}

/* the first k <= 16 floats at p; the other lanes 0 */
LWFM_VEC_INLINE lwfm__v16 lwfm__v16_loadn(const float *p, int k) {
    if (k == 16) return lwfm__v16_load(p);
    lwfm__v16 v = {0};
    for (int i = 0; i < k; i++) v[i] = p[i];
    return v;
}

/* store the first k <= 16 lanes of v at p */
LWFM_VEC_INLINE void lwfm__v16_storen(float *p, lwfm__v16 v, int k) {
    if (k == 16) {
        *(lwfm__v16u *)p = v;
        return;
    }
    for (int i = 0; i < k; i++) p[i] = v[i];
}

/* sum_i a[i] * b[i] */
LWFM_VEC_INLINE float lwfm__dot(const float *a, const float *b, int64_t n) {
    lwfm__v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 += lwfm__v16_load(a + i) * lwfm__v16_load(b + i);
        s1 += lwfm__v16_load(a + i + 16) * lwfm__v16_load(b + i + 16);
        s2 += lwfm__v16_load(a + i + 32) * lwfm__v16_load(b + i + 32);
        s3 += lwfm__v16_load(a + i + 48) * lwfm__v16_load(b + i + 48);
    }
    for (; i + 16 <= n; i += 16) s0 += lwfm__v16_load(a + i) * lwfm__v16_load(b + i);
    float s = lwfm__v16_hsum((s0 + s1) + (s2 + s3));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* sum_i a[i] */
LWFM_VEC_INLINE float lwfm__sum(const float *a, int64_t n) {
    lwfm__v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 += lwfm__v16_load(a + i);
        s1 += lwfm__v16_load(a + i + 16);
        s2 += lwfm__v16_load(a + i + 32);
        s3 += lwfm__v16_load(a + i + 48);
    }
    for (; i + 16 <= n; i += 16) s0 += lwfm__v16_load(a + i);
    float s = lwfm__v16_hsum((s0 + s1) + (s2 + s3));
    for (; i < n; i++) s += a[i];
    return s;
}

/* out[k] = sum_r w[r] * rows[r * ld + k] for k < n (added to out when
 * accumulate): four vectors of out stay in registers across the rows. */
LWFM_VEC_INLINE void lwfm__weighted_rows(const float *rows, int64_t ld, const float *w, int nr,
                                         int64_t n, float *out, int accumulate) {
    int64_t k = 0;
    for (; k + 64 <= n; k += 64) {
        lwfm__v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        if (accumulate) {
            a0 = lwfm__v16_load(out + k);
            a1 = lwfm__v16_load(out + k + 16);
            a2 = lwfm__v16_load(out + k + 32);
            a3 = lwfm__v16_load(out + k + 48);
        }
        for (int r = 0; r < nr; r++) {
            const float *x = rows + r * ld + k;
            const lwfm__v16 wr = (lwfm__v16){0} + w[r];
            a0 += wr * lwfm__v16_load(x);
            a1 += wr * lwfm__v16_load(x + 16);
            a2 += wr * lwfm__v16_load(x + 32);
            a3 += wr * lwfm__v16_load(x + 48);
        }
        *(lwfm__v16u *)(out + k) = a0;
        *(lwfm__v16u *)(out + k + 16) = a1;
        *(lwfm__v16u *)(out + k + 32) = a2;
        *(lwfm__v16u *)(out + k + 48) = a3;
    }
    for (; k < n; k++) {
        float a = accumulate ? out[k] : 0.0f;
        for (int r = 0; r < nr; r++) a += w[r] * rows[r * ld + k];
        out[k] = a;
    }
}

#endif
