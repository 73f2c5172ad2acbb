/* Tests of the Winograd convolution (lib/backbone/winograd.c) against a plain
 * direct convolution in double precision:
 *
 *  (a) every tile size m = 2, 3, 4, in nChw8c and nChw16c, on maps whose sides are and are not
 *      multiples of m (1x1 up to 23x17), channel counts 8..256, with bias,
 *      with and without the residual sum, no activation / ReLU / LeakyReLU;
 *      the error must stay within a few times that of a float32 direct
 *      convolution (printed for each case);
 *  (b) results do not depend on how the batch is split: each image alone
 *      gives the same bits as the whole batch (tile blocks and GEMM row
 *      groups fall differently), and on 1 and 2 OpenMP threads;
 *  (c) the tile-size rule (fewest multiplies) on the backbones' map sizes;
 *  (d) NaN in the input stays NaN through the fused ReLU.
 * Skipped (exit 77) on a CPU without AVX2 and FMA, where the library keeps
 * oneDNN's direct convolution. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/winograd.h"
#include "core/core.h"
#include "core/omp_compat.h"
#include "expect.h"

typedef struct conv_case {
    int n, ic, oc, h, w;
} conv_case;

/* Index of (img, c, y, x) in nChw<g_blk>c, the layout under test */
static int g_blk = 8;
static size_t blk(int c_n, int h, int w, int img, int c, int y, int x) {
    return ((((size_t)img * (c_n / g_blk) + c / g_blk) * h + y) * w + x) * g_blk + c % g_blk;
}

/* out[img][o][y][x] = act(sum w x + bias + (acc ? init : 0)) in double; and
 * the same in float, summed in the same order, for the error scale */
static void direct(const conv_case *cc, const float *x, const float *wt, const float *bias,
                   const float *init, int acc, int act, float slope, double *ref,
                   float *ref32) {
    for (int img = 0; img < cc->n; img++)
        for (int o = 0; o < cc->oc; o++)
            for (int y = 0; y < cc->h; y++)
                for (int xx = 0; xx < cc->w; xx++) {
                    double s = 0.0;
                    float s32 = 0.0f;
                    for (int i = 0; i < cc->ic; i++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int sy = y + ky - 1, sx = xx + kx - 1;
                                if (sy < 0 || sy >= cc->h || sx < 0 || sx >= cc->w) continue;
                                float a = x[blk(cc->ic, cc->h, cc->w, img, i, sy, sx)];
                                float b = wt[(((size_t)o * cc->ic + i) * 3 + ky) * 3 + kx];
                                s += (double)a * b;
                                s32 += a * b;
                            }
                    size_t k = blk(cc->oc, cc->h, cc->w, img, o, y, xx);
                    s += bias[o] + (acc ? init[k] : 0.0f);
                    s32 += bias[o] + (acc ? init[k] : 0.0f);
                    if (act && s < 0) s *= slope;
                    if (act && s32 < 0) s32 *= slope;
                    ref[k] = s;
                    ref32[k] = s32;
                }
}

static double max_err(const float *got, const double *ref, size_t count, double *scale) {
    double e = 0.0, mx = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs(got[i] - ref[i]);
        if (!(d <= e)) e = d; /* NaN counts as the largest error */
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    }
    *scale = mx;
    return e;
}

static void fill(float *v, size_t count, float amp) {
    for (size_t i = 0; i < count; i++) v[i] = amp * test_uniform();
}

static float *run(const lwfm__wino *wg, const conv_case *cc, const float *x, const float *bias,
                  const float *init, int acc, int act, float slope) {
    size_t out = (size_t)cc->n * cc->oc * cc->h * cc->w;
    float *y = test_alloc(out * sizeof *y);
    void *scratch = test_alloc(lwfm__wino_scratch(wg, cc->n, cc->h, cc->w));
    memcpy(y, init, out * sizeof *y);
    lwfm__wino_run(wg, x, cc->n, cc->h, cc->w, y, bias, acc, act, slope, scratch);
    free(scratch);
    return y;
}

/* (b): image by image, and on one thread, the same bits as the batch */
static void check_split(const lwfm__wino *wg, const conv_case *cc, const float *x,
                        const float *bias, const float *init, const float *batch) {
    size_t in_per = (size_t)cc->ic * cc->h * cc->w, out_per = (size_t)cc->oc * cc->h * cc->w;
    conv_case one = *cc;
    one.n = 1;
    for (int img = 0; img < cc->n; img++) {
        float *y = run(wg, &one, x + img * in_per, bias, init + img * out_per, 1, 1, 0.2f);
        EXPECT(memcmp(y, batch + img * out_per, out_per * sizeof *y) == 0);
        free(y);
    }
    int threads = omp_get_max_threads();
#ifdef _OPENMP
    omp_set_num_threads(threads > 1 ? 1 : 2);
#endif
    float *y = run(wg, cc, x, bias, init, 1, 1, 0.2f);
    EXPECT(memcmp(y, batch, (size_t)cc->n * out_per * sizeof *y) == 0);
    free(y);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
}

static void check_case(const conv_case *cc, int m) {
    size_t in = (size_t)cc->n * cc->ic * cc->h * cc->w, out = (size_t)cc->n * cc->oc * cc->h * cc->w;
    float *x = test_alloc(in * sizeof *x), *init = test_alloc(out * sizeof *init);
    float *wt = test_alloc((size_t)cc->oc * cc->ic * 9 * sizeof *wt);
    float *bias = test_alloc((size_t)cc->oc * sizeof *bias), *ref32 = test_alloc(out * sizeof *ref32);
    double *ref = test_alloc(out * sizeof *ref);
    fill(x, in, 1.0f);
    fill(init, out, 1.0f);
    fill(wt, (size_t)cc->oc * cc->ic * 9, 1.0f / sqrtf(9.0f * cc->ic));
    fill(bias, (size_t)cc->oc, 0.5f);
    lwfm__wino *wg = NULL;
    EXPECT(lwfm__wino_create(&wg, wt, cc->oc, cc->ic, m, g_blk) == LWFM_OK);
    if (!wg) return;
    static const struct {
        int acc, act;
        float slope;
    } modes[] = {{0, 0, 0.0f}, {0, 1, 0.0f}, {1, 1, 0.0f}, {1, 1, 0.2f}};
    for (size_t k = 0; k < sizeof modes / sizeof *modes; k++) {
        direct(cc, x, wt, bias, init, modes[k].acc, modes[k].act, modes[k].slope, ref, ref32);
        float *y = run(wg, cc, x, bias, init, modes[k].acc, modes[k].act, modes[k].slope);
        double scale, e = max_err(y, ref, out, &scale), e32 = max_err(ref32, ref, out, &scale);
        /* the bound: float32 direct convolution's own error, times 8, plus
         * float32 rounding of the output's scale */
        double bound = 8.0 * e32 + 4.0 * 1.2e-7 * scale;
        printf("m=%d nChw%dc n=%d ic=%3d oc=%3d %2dx%-2d acc=%d act=%d: max error %.2e (float32 "
               "direct %.2e, bound %.2e)\n",
               m, g_blk, cc->n, cc->ic, cc->oc, cc->h, cc->w, modes[k].acc, modes[k].act, e, e32, bound);
        EXPECT(e <= bound);
        if (k == 3 && cc->n > 1) check_split(wg, cc, x, bias, init, y);
        free(y);
    }
    lwfm__wino_free(wg);
    free(x), free(init), free(wt), free(bias), free(ref), free(ref32);
}

int main(void) {
    if (!lwfm__wino_cpu_ok()) {
        printf("SKIP: this CPU has no AVX2 + FMA; the library keeps oneDNN's convolution\n");
        return 77;
    }
    static const conv_case cases[] = {
        {3, 16, 32, 7, 5},  {2, 8, 16, 1, 1},   {4, 64, 64, 3, 3},  {2, 32, 16, 11, 11},
        {2, 24, 32, 23, 17}, {5, 256, 16, 6, 6}, {1, 16, 256, 4, 9},
    };
    for (int m = 2; m <= 4; m++)
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) check_case(&cases[c], m);
    /* the AVX-512 layout, where the channel counts allow it */
    g_blk = 16;
    for (int m = 2; m <= 4; m++)
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
            if (cases[c].ic % 16 == 0) check_case(&cases[c], m);
    g_blk = 8;

    /* (c) fewest multiplies: m = 3 for ResNet-18's 3x3, 6x6 and 21x21 maps,
     * m = 4 for 11x11 and 42x42 */
    EXPECT(lwfm__wino_pick_tile(3, 3) == 3);
    EXPECT(lwfm__wino_pick_tile(6, 6) == 3);
    EXPECT(lwfm__wino_pick_tile(21, 21) == 3);
    EXPECT(lwfm__wino_pick_tile(11, 11) == 4);
    EXPECT(lwfm__wino_pick_tile(42, 42) == 4);
    EXPECT(lwfm__wino_pick_tile(1, 1) == 2);

    /* (d) NaN and infinity propagate through ReLU (the library refuses
     * features that overflowed; a ReLU turning NaN into 0 would hide it) */
    {
        conv_case cc = {1, 8, 16, 5, 5};
        float x[8 * 25], wt[16 * 8 * 9], bias[16] = {0}, init[16 * 25] = {0};
        fill(x, 8 * 25, 1.0f);
        fill(wt, 16 * 8 * 9, 0.3f);
        x[blk(8, 5, 5, 0, 3, 2, 2)] = NAN;
        lwfm__wino *nw = NULL;
        EXPECT(lwfm__wino_create(&nw, wt, 16, 8, 3, 8) == LWFM_OK);
        float *y = nw ? run(nw, &cc, x, bias, init, 0, 1, 0.0f) : NULL;
        for (int o = 0; y && o < 16; o++) EXPECT(isnan(y[blk(16, 5, 5, 0, o, 2, 2)]));
        free(y);
        lwfm__wino_free(nw);
    }

    lwfm__wino *wg = NULL;
    float w[16 * 8 * 9] = {0};
    EXPECT(lwfm__wino_create(&wg, w, 16, 12, 3, 8) == LWFM_ERR_INTERNAL && !wg);
    EXPECT(lwfm__wino_create(&wg, w, 8, 8, 3, 8) == LWFM_ERR_INTERNAL && !wg);
    EXPECT(lwfm__wino_create(&wg, w, 16, 8, 5, 8) == LWFM_ERR_INTERNAL && !wg);
    EXPECT(lwfm__wino_create(&wg, w, 16, 8, 3, 16) == LWFM_ERR_INTERNAL && !wg);
    EXPECT(lwfm__wino_create(&wg, w, 16, 8, 3, 4) == LWFM_ERR_INTERNAL && !wg);
    printf("%d checks, %d failed\n", checks, fails);
    return fails != 0;
}
