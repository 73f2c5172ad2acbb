/* A deterministic single-precision GEMM on packed right-hand panels, for
 * the products whose results must not depend on how the rows are grouped:
 * the Winograd convolutions (lib/backbone) and the SPM matcher's MLP
 * (lib/spm), where an image's result must be the same whether it is
 * prepared alone, among others, or on any number of threads.
 *
 * Every element of C is the same sequence of fused multiply-adds, k
 * ascending from zero, whatever the row count, the row's place among them
 * or the caller's blocking. An AVX2 + FMA kernel (6 rows x 16 columns per
 * step) runs where the CPU has it; elsewhere a portable loop performs the
 * same sequence with fmaf, so the bits are the same on every CPU.
 * oneDNN's sgemm rounds a row differently depending on the call's shape
 * and the row's position in it, which is why it is not used here.
 * Private to liblwfm. */
#ifndef LWFM_CORE_PANEL_GEMM_H
#define LWFM_CORE_PANEL_GEMM_H

#include <stddef.h>
#include <stdint.h>

#define LWFM_PANEL_COLS 16

/* Whether this CPU runs the AVX2 + FMA kernel (else the portable loop). */
int lwfm__panel_gemm_avx2(void);

/* Floats of a k x n matrix packed into panels: [ceil(n / 16)][k][16], the
 * columns past n zero. */
size_t lwfm__panels_floats(int64_t k, int64_t n);

/* Pack B (k x n), B(i, j) = b[i * stride_k + j * stride_n], into `out`
 * (lwfm__panels_floats(k, n) floats). A PyTorch Linear weight (out x in)
 * used as x W^T is b = W, stride_k = 1, stride_n = in. */
void lwfm__panels_pack(const float *b, int64_t stride_k, int64_t stride_n, int64_t k, int64_t n,
                       float *out);

/* One panel (k x 16): c[r * ldc + j] = sum_i a[r * lda + i] * panel[i * 16 + j] for r < rows,
 * j < cols (<= 16); with relu, max(., 0), NaN becoming 0. */
void lwfm__panel_gemm(const float *panel, int64_t k, int64_t rows, const float *a, int64_t lda,
                      float *c, int64_t ldc, int cols, int relu);

/* All panels of a packed k x n matrix: c (rows x n, ldc) = a (rows x k, lda)
 * times B, with relu as above. Single-threaded; callers split the rows. */
void lwfm__panels_gemm(const float *panels, int64_t k, int64_t n, int64_t rows, const float *a,
                       int64_t lda, float *c, int64_t ldc, int relu);

#endif
