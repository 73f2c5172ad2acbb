/* Deterministic panel GEMM (see panel_gemm.h). */
#include "core/panel_gemm.h"

#include <math.h>
#include <string.h>

#define COLS LWFM_PANEL_COLS
#define ROWS 6 /* rows per step of the AVX2 kernel: 12 accumulators + 2 panel vectors */

size_t lwfm__panels_floats(int64_t k, int64_t n) {
    return (size_t)((n + COLS - 1) / COLS) * (size_t)k * COLS;
}

void lwfm__panels_pack(const float *b, int64_t stride_k, int64_t stride_n, int64_t k, int64_t n,
                       float *out) {
    const int64_t panels = (n + COLS - 1) / COLS;
    /* a column at a time: the callers' B columns are contiguous (stride_k 1) */
    for (int64_t p = 0; p < panels; p++)
        for (int j = 0; j < COLS; j++) {
            const int64_t col = p * COLS + j;
            float *o = out + p * k * COLS + j;
            if (col < n)
                for (int64_t i = 0; i < k; i++) o[i * COLS] = b[i * stride_k + col * stride_n];
            else
                for (int64_t i = 0; i < k; i++) o[i * COLS] = 0.0f;
        }
}

/* The reference sequence: acc = fma(a_i, b_i, acc) for i = 0 .. k-1 from 0. */
static void panel_portable(const float *panel, int64_t k, int64_t rows, const float *a,
                           int64_t lda, float *c, int64_t ldc, int cols, int relu) {
    for (int64_t r = 0; r < rows; r++) {
        float acc[COLS] = {0};
        for (int64_t i = 0; i < k; i++)
            for (int j = 0; j < COLS; j++) acc[j] = fmaf(a[r * lda + i], panel[i * COLS + j], acc[j]);
        for (int j = 0; j < cols; j++) c[r * ldc + j] = relu ? (acc[j] > 0.0f ? acc[j] : 0.0f) : acc[j];
    }
}

/* LWFM_PANEL_GEMM_PORTABLE: the portable path only (tests/c/test_panel_gemm.c). */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(LWFM_PANEL_GEMM_PORTABLE)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))

int lwfm__panel_gemm_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* `rows` (<= 6) rows against one panel; inlined with a constant row count
 * so the accumulators stay in registers. Stores 16 columns to c. */
AVX2 static inline __attribute__((always_inline)) void rows_avx2(int rows, const float *a,
                                                                 int64_t lda, const float *panel,
                                                                 int64_t k, float *c, int64_t ldc,
                                                                 int relu) {
    __m256 acc[ROWS][2];
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t i = 0; i < k; i++) {
        const __m256 u0 = _mm256_loadu_ps(panel + i * COLS), u1 = _mm256_loadu_ps(panel + i * COLS + 8);
#pragma GCC unroll 6 /* keeps the accumulators in registers at -O2 too */
        for (int r = 0; r < rows; r++) {
            const __m256 b = _mm256_broadcast_ss(a + r * lda + i);
            acc[r][0] = _mm256_fmadd_ps(b, u0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, u1, acc[r][1]);
        }
    }
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) {
        if (relu) { /* max returns its second operand on NaN: NaN -> 0, as the portable path */
            acc[r][0] = _mm256_max_ps(acc[r][0], zero);
            acc[r][1] = _mm256_max_ps(acc[r][1], zero);
        }
        _mm256_storeu_ps(c + r * ldc, acc[r][0]);
        _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
    }
}

AVX2 static void panel_avx2(const float *panel, int64_t k, int64_t rows, const float *a,
                            int64_t lda, float *c, int64_t ldc, int relu) {
    int64_t r = 0;
    for (; r + ROWS <= rows; r += ROWS) rows_avx2(ROWS, a + r * lda, lda, panel, k, c + r * ldc, ldc, relu);
    a += r * lda, c += r * ldc;
    switch (rows - r) {
    case 5: rows_avx2(5, a, lda, panel, k, c, ldc, relu); break;
    case 4: rows_avx2(4, a, lda, panel, k, c, ldc, relu); break;
    case 3: rows_avx2(3, a, lda, panel, k, c, ldc, relu); break;
    case 2: rows_avx2(2, a, lda, panel, k, c, ldc, relu); break;
    case 1: rows_avx2(1, a, lda, panel, k, c, ldc, relu); break;
    default: break;
    }
}
#else
int lwfm__panel_gemm_avx2(void) { return 0; }
static void panel_avx2(const float *panel, int64_t k, int64_t rows, const float *a, int64_t lda,
                       float *c, int64_t ldc, int relu) {
    panel_portable(panel, k, rows, a, lda, c, ldc, COLS, relu);
}
#endif

void lwfm__panel_gemm(const float *panel, int64_t k, int64_t rows, const float *a, int64_t lda,
                      float *c, int64_t ldc, int cols, int relu) {
    if (!lwfm__panel_gemm_avx2()) {
        panel_portable(panel, k, rows, a, lda, c, ldc, cols, relu);
        return;
    }
    if (cols == COLS) {
        panel_avx2(panel, k, rows, a, lda, c, ldc, relu);
        return;
    }
    /* a narrow last panel: full width into a small buffer, then the columns */
    float buf[ROWS * COLS];
    for (int64_t r0 = 0; r0 < rows; r0 += ROWS) {
        const int64_t nr = rows - r0 < ROWS ? rows - r0 : ROWS;
        panel_avx2(panel, k, nr, a + r0 * lda, lda, buf, COLS, relu);
        for (int64_t r = 0; r < nr; r++) memcpy(c + (r0 + r) * ldc, buf + r * COLS, sizeof(float) * (size_t)cols);
    }
}

void lwfm__panels_gemm(const float *panels, int64_t k, int64_t n, int64_t rows, const float *a,
                       int64_t lda, float *c, int64_t ldc, int relu) {
    for (int64_t j = 0; j < n; j += COLS) {
        const int cols = n - j < COLS ? (int)(n - j) : COLS;
        lwfm__panel_gemm(panels + j * k, k, rows, a, lda, c + j, ldc, cols, relu);
    }
}
