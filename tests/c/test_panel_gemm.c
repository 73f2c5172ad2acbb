/* Tests of the deterministic panel GEMM (lib/core/panel_gemm.c), the
 * product behind the Winograd convolutions and the SPM matcher:
 *
 *  (a) every element equals the reference sequence acc = fmaf(a_i, b_i, acc),
 *      i = 0 .. k-1 from 0, bit for bit, for row counts 1..13 (the kernel's
 *      6-row steps and every tail), depths 1..70 and widths 1..40 (narrow
 *      last panels), with strided A and C, with and without the ReLU;
 *  (b) a row's bits do not depend on the other rows in the call (each row
 *      alone against the whole block);
 *  (c) the ReLU maps NaN to 0 and -0 / negatives to +0, and columns past n are
 *      never written (guard values around C stay);
 *  (d) packing honours both strides (a PyTorch Linear weight used as x W^T).
 * On CPUs without AVX2 + FMA the portable path is what runs; the checks are
 * the same. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/panel_gemm.h"
#include "expect.h"

#define GUARD 12345.0f

static float ref_elem(const float *a, const float *b, int64_t k, int64_t n, int j, int relu) {
    float acc = 0.0f;
    for (int64_t i = 0; i < k; i++) acc = fmaf(a[i], b[i * n + j], acc);
    return relu ? (acc > 0.0f ? acc : 0.0f) : acc;
}

static int same_bits(float x, float y) { return memcmp(&x, &y, sizeof x) == 0; }

/* One shape: A rows x k (lda = k + 3), B k x n, C rows x n (ldc = n + 5). */
static void check_shape(int rows, int k, int n, int relu) {
    const int lda = k + 3, ldc = n + 5;
    float *a = test_alloc(sizeof(float) * (size_t)rows * lda);
    float *b = test_alloc(sizeof(float) * (size_t)k * n);
    float *p = test_alloc(sizeof(float) * lwfm__panels_floats(k, n));
    float *c = test_alloc(sizeof(float) * (size_t)rows * ldc);
    float *c1 = test_alloc(sizeof(float) * (size_t)ldc);
    for (int i = 0; i < rows * lda; i++) a[i] = test_uniform();
    for (int i = 0; i < k * n; i++) b[i] = test_uniform();
    lwfm__panels_pack(b, n, 1, k, n, p);
    for (int i = 0; i < rows * ldc; i++) c[i] = GUARD;
    lwfm__panels_gemm(p, k, n, rows, a, lda, c, ldc, relu);
    int bad = 0, guard = 0, alone = 0;
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < n; j++)
            bad += !same_bits(c[r * ldc + j], ref_elem(a + r * lda, b, k, n, j, relu));
        for (int j = n; j < ldc; j++) guard += c[r * ldc + j] != GUARD;
        lwfm__panels_gemm(p, k, n, 1, a + r * lda, lda, c1, ldc, relu);
        alone += memcmp(c1, c + r * ldc, sizeof(float) * (size_t)n) != 0;
    }
    if (bad || guard || alone)
        fprintf(stderr, "rows %d k %d n %d relu %d: %d differ, %d guards, %d rows alone\n", rows, k,
                n, relu, bad, guard, alone);
    EXPECT(bad == 0);
    EXPECT(guard == 0);
    EXPECT(alone == 0);
    free(a), free(b), free(p), free(c), free(c1);
}

static void check_relu_edges(void) {
    /* one row, k = 2: products chosen to give NaN, -0, negative, positive */
    const float inf = INFINITY;
    float a[2] = {1.0f, 1.0f};
    float b[2 * 4] = {inf, -0.0f, -1.0f, 2.0f, /* row i = 0 */
                      -inf, -0.0f, 0.5f, 1.0f}; /* row i = 1: inf + -inf = NaN */
    float p[4 * 16 / 4 * 2], c[4];
    lwfm__panels_pack(b, 4, 1, 2, 4, p);
    lwfm__panels_gemm(p, 2, 4, 1, a, 2, c, 4, 1);
    EXPECT(c[0] == 0.0f && !signbit(c[0])); /* NaN -> 0 */
    EXPECT(c[1] == 0.0f && !signbit(c[1])); /* -0 -> +0 */
    EXPECT(c[2] == 0.0f && !signbit(c[2]));
    EXPECT(c[3] == 3.0f);
    lwfm__panels_gemm(p, 2, 4, 1, a, 2, c, 4, 0);
    EXPECT(isnan(c[0]));
    EXPECT(c[2] == -0.5f);
}

static void check_pack_strides(void) {
    /* W (out 3 x in 5) used as x W^T: B(i, j) = W[j][i] */
    float w[15], p[16 * 5], x[5], y[3];
    for (int i = 0; i < 15; i++) w[i] = (float)(i + 1);
    for (int i = 0; i < 5; i++) x[i] = (float)(i % 2 ? -1 : 2);
    lwfm__panels_pack(w, 1, 5, 5, 3, p);
    lwfm__panels_gemm(p, 5, 3, 1, x, 5, y, 3, 0);
    for (int j = 0; j < 3; j++) {
        float e = 0.0f;
        for (int i = 0; i < 5; i++) e += w[j * 5 + i] * x[i];
        EXPECT(y[j] == e); /* small integers: exact in any order */
    }
    EXPECT(p[5 * 16 - 1] == 0.0f); /* columns past n are zero */
}

int main(void) {
    printf("panel GEMM on the %s path\n", lwfm__panel_gemm_avx2() ? "AVX2 + FMA" : "portable");
    for (int relu = 0; relu < 2; relu++)
        for (int rows = 1; rows <= 13; rows++)
            for (int k = 1; k <= 70; k += 23)
                for (int n = 1; n <= 40; n += 13) check_shape(rows, k, n, relu);
    check_shape(97, 512, 256, 1); /* the matcher's shape */
    check_shape(200, 64, 48, 0);
    check_relu_edges();
    check_pack_strides();
    printf("%d checks, %d failed\n", checks, fails);
    return fails != 0;
}
