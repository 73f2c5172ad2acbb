/* Vector helpers (GCC vector extensions: each multiarch clone lowers them
 * to its own registers) and reductions over float arrays with independent
 * vector accumulators, so that a loop is bound by loads, not by the latency
 * of one add chain. Summation order differs from a sequential loop by
 * rounding only. Private. */
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
#define LWFM_VEC_INLINE static inline __attribute__((always_inline))

/* all 16 lanes set to x: one broadcast. (Written as {0} + x, GCC must keep
 * the addition, which turns -0 into +0, and built the vector through the
 * stack, lane by lane, on every use.) */
LWFM_VEC_INLINE lwfm__v16 lwfm__v16_splat(float x) {
    return (lwfm__v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}
#define LWFM_V16(x) lwfm__v16_splat(x)

/* lane i: mask[i] ? a[i] : b[i] (mask lanes all ones or all zeros, as
 * vector comparisons give them) */
LWFM_VEC_INLINE lwfm__v16 lwfm__v16_select(lwfm__v16i mask, lwfm__v16 a, lwfm__v16 b) {
    return (lwfm__v16)((mask & (lwfm__v16i)a) | (~mask & (lwfm__v16i)b));
}

/* 8-lane vectors: one AVX2 register. Kernels whose vectors stay live across
 * loops (the attention's softmax) use these: on CPUs without AVX-512 GCC
 * keeps 16-lane values partly in memory and copies them through the stack. */
typedef float lwfm__v8 __attribute__((vector_size(32)));
typedef float lwfm__v8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t lwfm__v8i __attribute__((vector_size(32)));
#define lwfm__v8_load(p) (*(const lwfm__v8u *)(p))

LWFM_VEC_INLINE lwfm__v8 lwfm__v8_splat(float x) { return (lwfm__v8){x, x, x, x, x, x, x, x}; }
#define LWFM_V8(x) lwfm__v8_splat(x)

LWFM_VEC_INLINE lwfm__v8 lwfm__v8_select(lwfm__v8i mask, lwfm__v8 a, lwfm__v8 b) {
    return (lwfm__v8)((mask & (lwfm__v8i)a) | (~mask & (lwfm__v8i)b));
}

/* the first k <= 8 floats at p, the other lanes 0; and the store of k lanes */
LWFM_VEC_INLINE lwfm__v8 lwfm__v8_loadn(const float *p, int k) {
    if (k == 8) return lwfm__v8_load(p);
    float buf[8] = {0};
    for (int i = 0; i < k; i++) buf[i] = p[i];
    return lwfm__v8_load(buf);
}

LWFM_VEC_INLINE void lwfm__v8_storen(float *p, lwfm__v8 v, int k) {
    if (k == 8) {
        *(lwfm__v8u *)p = v;
        return;
    }
    float buf[8];
    *(lwfm__v8u *)buf = v;
    for (int i = 0; i < k; i++) p[i] = buf[i];
}

/* The reductions below keep four 16-lane accumulators, held as eight
 * 8-lane halves (lo: lanes 0-7, hi: 8-15) so that each is one AVX2
 * register. Lanes are added in the order 0..15 at the end. */
LWFM_VEC_INLINE float lwfm__hsum16(lwfm__v8 s0lo, lwfm__v8 s0hi, lwfm__v8 s1lo, lwfm__v8 s1hi,
                                   lwfm__v8 s2lo, lwfm__v8 s2hi, lwfm__v8 s3lo, lwfm__v8 s3hi) {
    float lanes[16];
    *(lwfm__v8u *)lanes = (s0lo + s1lo) + (s2lo + s3lo);
    *(lwfm__v8u *)(lanes + 8) = (s0hi + s1hi) + (s2hi + s3hi);
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += lanes[k];
    return s;
}

/* sum_i a[i] * b[i] */
LWFM_VEC_INLINE float lwfm__dot(const float *a, const float *b, int64_t n) {
    lwfm__v8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
#define LWFM_DOT8(j) (lwfm__v8_load(a + i + 8 * (j)) * lwfm__v8_load(b + i + 8 * (j)))
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 += LWFM_DOT8(0), s1 += LWFM_DOT8(1), s2 += LWFM_DOT8(2), s3 += LWFM_DOT8(3);
        s4 += LWFM_DOT8(4), s5 += LWFM_DOT8(5), s6 += LWFM_DOT8(6), s7 += LWFM_DOT8(7);
    }
    for (; i + 16 <= n; i += 16) s0 += LWFM_DOT8(0), s1 += LWFM_DOT8(1);
#undef LWFM_DOT8
    float s = lwfm__hsum16(s0, s1, s2, s3, s4, s5, s6, s7);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* sum_i a[i] */
LWFM_VEC_INLINE float lwfm__sum(const float *a, int64_t n) {
    lwfm__v8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 += lwfm__v8_load(a + i), s1 += lwfm__v8_load(a + i + 8);
        s2 += lwfm__v8_load(a + i + 16), s3 += lwfm__v8_load(a + i + 24);
        s4 += lwfm__v8_load(a + i + 32), s5 += lwfm__v8_load(a + i + 40);
        s6 += lwfm__v8_load(a + i + 48), s7 += lwfm__v8_load(a + i + 56);
    }
    for (; i + 16 <= n; i += 16) s0 += lwfm__v8_load(a + i), s1 += lwfm__v8_load(a + i + 8);
    float s = lwfm__hsum16(s0, s1, s2, s3, s4, s5, s6, s7);
    for (; i < n; i++) s += a[i];
    return s;
}

/* out[k] = sum_r w[r] * rows[r * ld + k] for k < n (added to out when
 * accumulate): 64 floats of out stay in registers across the rows. */
LWFM_VEC_INLINE void lwfm__weighted_rows(const float *rows, int64_t ld, const float *w, int nr,
                                         int64_t n, float *out, int accumulate) {
    int64_t k = 0;
    for (; k + 64 <= n; k += 64) {
        lwfm__v8 acc[8] = {{0}};
        if (accumulate)
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) acc[j] = lwfm__v8_load(out + k + 8 * j);
        for (int r = 0; r < nr; r++) {
            const float *x = rows + r * ld + k;
            const lwfm__v8 wr = LWFM_V8(w[r]);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) acc[j] += wr * lwfm__v8_load(x + 8 * j);
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) *(lwfm__v8u *)(out + k + 8 * j) = acc[j];
    }
    for (; k < n; k++) {
        float a = accumulate ? out[k] : 0.0f;
        for (int r = 0; r < nr; r++) a += w[r] * rows[r * ld + k];
        out[k] = a;
    }
}

#endif
