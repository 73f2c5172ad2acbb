/* Winograd F(m x m, 3 x 3) convolution (see winograd.h).
 *
 * For an a x a input tile d (a = m + 2) and a 3x3 filter g, the m x m output
 * tile is  Y = A^T [(G g G^T) . (B^T d B)] A  (Lavin & Gray 2016), with the
 * matrices from Toom-Cook on the points below. Over a batch this becomes
 * a * a independent GEMMs, one per point p of the transformed tile:
 *     M_p[tile][oc] = sum_ic V_p[tile][ic] * U_p[ic][oc]
 * where V = B^T d B per tile and input channel, U = G g G^T per filter. The
 * three stages are the input transform (nChw8c or nChw16c -> V), the GEMMs
 * (one AVX2 kernel, 6 tiles x 16 output channels per step) and the output
 * transform (M -> Y, plus bias, residual sum and activation, -> the map). */
#include "backbone/winograd.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/omp_compat.h"
#include "core/panel_gemm.h"

#define MAX_A 6 /* input tile side for m = 4 */
#define COLS LWFM_PANEL_COLS /* output channels per panel of U */
#define ROWS 6 /* tiles per step of the panel kernel: blocks are multiples of it */

struct lwfm__wino {
    int m, a, points; /* output tile m x m, input tile a x a, points = a * a */
    int ic, oc;
    int blk;                /* activation layout nChw<blk>c: 8 or 16 */
    float *u;               /* U: [points][oc / 16][ic][16] */
};

/* Interpolation points (besides infinity) per tile size: integers and
 * halves keep B^T and A^T exact in float. Among the sets tried these gave
 * the smallest error against a double-precision direct convolution
 * (tests/c/test_winograd.c prints it): at most 1.4x (m = 2), 3.9x (m = 3)
 * and 7.4x (m = 4) that of a float32 direct convolution. */
static const double kPoints2[] = {0, 1, -1};
static const double kPoints3[] = {0, 1, -1, 2};
static const double kPoints4[] = {0, 1, -1, 2, -0.5};

/* B^T and A^T of those points, as constants so that the transforms compile
 * to adds for the zeros and ones (toom_cook() derives them again at create
 * and refuses to run if they differ). Indexed by m - 2. */
static const float kBT[3][MAX_A][MAX_A] = {
    {{-1, 0, 1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, -1, 0, 1}},
    {{2, -1, -2, 1, 0}, {0, -2, -1, 1, 0}, {0, 2, -3, 1, 0}, {0, -1, 0, 1, 0}, {0, 2, -1, -2, 1}},
    {{1, 1.5f, -2, -1.5f, 1, 0},
     {0, -1, -2.5f, -0.5f, 1, 0},
     {0, 1, 0.5f, -2.5f, 1, 0},
     {0, -0.5f, -1, 0.5f, 1, 0},
     {0, 2, -1, -2, 1, 0},
     {0, 1, 1.5f, -2, -1.5f, 1}}};
static const float kAT[3][MAX_A][MAX_A] = {
    {{1, 1, 1, 0}, {0, 1, -1, 1}},
    {{1, 1, 1, 1, 0}, {0, 1, -1, 2, 0}, {0, 1, 1, 4, 1}},
    {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -0.5f, 0}, {0, 1, 1, 4, 0.25f, 0}, {0, 1, -1, 8, -0.125f, 1}}};

int lwfm__wino_cpu_ok(void) {
#if defined(__x86_64__) || defined(__i386__)
    return lwfm__panel_gemm_avx2(); /* the transforms are AVX2 code too */
#else
    return 0;
#endif
}

static int64_t tiles(int64_t len, int m) {
    return (len + m - 1) / m;
}

int lwfm__wino_pick_tile(int64_t h, int64_t w) {
    int best = 2;
    int64_t best_cost = -1;
    for (int m = 2; m <= 4; m++) {
        int64_t cost = tiles(h, m) * tiles(w, m) * (m + 2) * (m + 2);
        if (best_cost < 0 || cost < best_cost) {
            best = m;
            best_cost = cost;
        }
    }
    return best;
}

/* poly (degree deg, coefficients low first) *= (x - root) */
static void poly_mul_root(double *poly, int deg, double root) {
    for (int c = deg + 1; c >= 0; c--) poly[c] = (c ? poly[c - 1] : 0.0) - root * poly[c];
}

/* Toom-Cook matrices for F(m, 3) on the points of m plus infinity. */
static void toom_cook(int m, double at[MAX_A][MAX_A], double g[MAX_A][3],
                      double bt[MAX_A][MAX_A]) {
    const double *pts = m == 2 ? kPoints2 : m == 3 ? kPoints3 : kPoints4;
    const int n = m + 1, a = m + 2; /* finite points, tile side */
    memset(at, 0, sizeof(double) * MAX_A * MAX_A);
    memset(g, 0, sizeof(double) * MAX_A * 3);
    memset(bt, 0, sizeof(double) * MAX_A * MAX_A);
    double all[MAX_A + 1] = {1.0}; /* prod over all points of (x - p) */
    for (int l = 0; l < n; l++) poly_mul_root(all, l, pts[l]);
    for (int j = 0; j < n; j++) {
        double others[MAX_A + 1] = {1.0}, norm = 1.0, pw = 1.0;
        int deg = 0;
        for (int l = 0; l < n; l++)
            if (l != j) {
                poly_mul_root(others, deg++, pts[l]);
                norm *= pts[j] - pts[l];
            }
        for (int c = 0; c < n; c++) bt[j][c] = others[c];
        for (int i = 0; i < m; i++, pw *= pts[j]) at[i][j] = pw;
        for (int k = 0; k < 3; k++) g[j][k] = (k == 0 ? 1.0 : k == 1 ? pts[j] : pts[j] * pts[j]) / norm;
    }
    for (int c = 0; c < a; c++) bt[n][c] = all[c];
    at[m - 1][n] = 1.0;
    g[n][2] = 1.0;
}

static void transform_filter(const lwfm__wino *wg, const double gm[MAX_A][3], const float *f,
                             int o, int i) {
    const int a = wg->a;
    double tmp[MAX_A][3], u;
    for (int r = 0; r < a; r++)
        for (int c = 0; c < 3; c++)
            tmp[r][c] = gm[r][0] * f[c] + gm[r][1] * f[3 + c] + gm[r][2] * f[6 + c];
    for (int r = 0; r < a; r++)
        for (int c = 0; c < a; c++) {
            u = tmp[r][0] * gm[c][0] + tmp[r][1] * gm[c][1] + tmp[r][2] * gm[c][2];
            size_t p = (size_t)r * a + c;
            wg->u[((p * (wg->oc / COLS) + o / COLS) * wg->ic + i) * COLS + o % COLS] = (float)u;
        }
}

lwfm_status lwfm__wino_create(lwfm__wino **out, const float *w, int oc, int ic, int m, int blk) {
    if (m < 2 || m > 4 || (blk != 8 && blk != 16) || ic % blk || oc % COLS)
        return lwfm__error(LWFM_ERR_INTERNAL, "Winograd: unsupported shape");
    lwfm__wino *wg = calloc(1, sizeof *wg);
    if (!wg) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (Winograd weights)");
    wg->m = m;
    wg->a = m + 2;
    wg->points = wg->a * wg->a;
    wg->ic = ic;
    wg->oc = oc;
    wg->blk = blk;
    wg->u = lwfm__alloc((size_t)wg->points * ic * oc * sizeof(float));
    if (!wg->u) {
        free(wg);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (Winograd weights)");
    }
    double at[MAX_A][MAX_A], gm[MAX_A][3], bt[MAX_A][MAX_A];
    toom_cook(m, at, gm, bt);
    for (int r = 0; r < MAX_A; r++)
        for (int c = 0; c < MAX_A; c++)
            if ((float)at[r][c] != kAT[m - 2][r][c] || (float)bt[r][c] != kBT[m - 2][r][c]) {
                lwfm__wino_free(wg);
                return lwfm__error(LWFM_ERR_INTERNAL, "Winograd: transform tables disagree");
            }
    for (int o = 0; o < oc; o++)
        for (int i = 0; i < ic; i++) transform_filter(wg, gm, w + ((size_t)o * ic + i) * 9, o, i);
    *out = wg;
    return LWFM_OK;
}

void lwfm__wino_free(lwfm__wino *wg) {
    if (!wg) return;
    lwfm__free(wg->u);
    free(wg);
}

size_t lwfm__wino_bytes(const lwfm__wino *wg) {
    return (size_t)wg->points * wg->ic * wg->oc * sizeof(float);
}

/* Tiles per block: V and M of a block are written once and read once, U is
 * read once per block; blocks of about ic oc / (ic + oc) tiles move no more
 * bytes of V and M than of U, and keep the narrow layers' V and M near the
 * cache (the wide layers take the whole batch in one block). */
static int64_t block_tiles(const lwfm__wino *wg, int64_t t_all) {
    int64_t b = (int64_t)wg->ic * wg->oc / (wg->ic + wg->oc);
    b = (b + ROWS - 1) / ROWS * ROWS;
    return b < t_all ? b : t_all;
}

size_t lwfm__wino_scratch(const lwfm__wino *wg, int64_t n, int64_t h, int64_t w) {
    size_t t = (size_t)block_tiles(wg, n * tiles(h, wg->m) * tiles(w, wg->m));
    return (size_t)wg->points * t * (size_t)(wg->ic + wg->oc) * sizeof(float);
}

#if defined(__x86_64__) || defined(__i386__)
#define AVX2 __attribute__((target("avx2,fma")))

/* One tile, one block of 8 channels: V = B^T d B, d read from the padded
 * map (zero outside), V written to each point's row `t`. Inlined for each
 * tile size: a and bt are constants there and the zeros of B^T vanish. */
#define INLINE static inline __attribute__((always_inline))
/* out[i][j] = sum_k mat[i][k] in[k][j] (i < rows, j < a): the left product
 * of both transforms. Inlined with a constant mat, whose zeros vanish. */
AVX2 INLINE void left_product(const int rows, const int a, const float mat[MAX_A][MAX_A],
                              __m256 in[MAX_A][MAX_A], __m256 out[MAX_A][MAX_A]) {
#pragma GCC unroll 6
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 6
        for (int j = 0; j < a; j++) {
            __m256 s = _mm256_setzero_ps();
#pragma GCC unroll 6
            for (int k = 0; k < a; k++)
                if (mat[i][k] != 0.0f) s = _mm256_fmadd_ps(_mm256_set1_ps(mat[i][k]), in[k][j], s);
            out[i][j] = s;
        }
}

/* init + sum_k mat[j][k] row[k] (k < a): one entry of the right product
 * (x mat^T) of both transforms, inlined with a constant mat likewise. */
AVX2 INLINE __m256 right_entry(const int a, const float mat[MAX_A][MAX_A], int j,
                               const __m256 row[MAX_A], __m256 init) {
    __m256 s = init;
#pragma GCC unroll 6
    for (int k = 0; k < a; k++)
        if (mat[j][k] != 0.0f) s = _mm256_fmadd_ps(_mm256_set1_ps(mat[j][k]), row[k], s);
    return s;
}

AVX2 INLINE void input_tile_a(const int a, const float bt[MAX_A][MAX_A], const float *map,
                              int pix, int64_t h, int64_t w, int64_t y0, int64_t x0, float *v,
                              int64_t point_stride) {
    __m256 d[MAX_A][MAX_A], tmp[MAX_A][MAX_A];
    const int inside = y0 >= 0 && x0 >= 0 && y0 + a <= h && x0 + a <= w;
#pragma GCC unroll 6
    for (int i = 0; i < a; i++)
#pragma GCC unroll 6
        for (int j = 0; j < a; j++) {
            int64_t y = y0 + i, x = x0 + j;
            d[i][j] = inside || (y >= 0 && y < h && x >= 0 && x < w)
                          ? _mm256_loadu_ps(map + (y * w + x) * pix)
                          : _mm256_setzero_ps();
        }
    left_product(a, a, bt, d, tmp);
#pragma GCC unroll 6
    for (int i = 0; i < a; i++)
#pragma GCC unroll 6
        for (int j = 0; j < a; j++)
            _mm256_storeu_ps(v + (int64_t)(i * a + j) * point_stride,
                             right_entry(a, bt, j, tmp[i], _mm256_setzero_ps()));
}

AVX2 static void input_tile(int m, const float *map, int pix, int64_t h, int64_t w, int64_t y0,
                            int64_t x0, float *v, int64_t point_stride) {
    switch (m) {
    case 2: input_tile_a(4, kBT[0], map, pix, h, w, y0, x0, v, point_stride); break;
    case 3: input_tile_a(5, kBT[1], map, pix, h, w, y0, x0, v, point_stride); break;
    default: input_tile_a(6, kBT[2], map, pix, h, w, y0, x0, v, point_stride); break;
    }
}

/* Offset of channels 8 c8 .. 8 c8 + 7 of image img, pixel (0, 0), in an
 * nChw<blk>c map of `chans` channels; pixels are then blk floats apart. */
static inline int64_t block_offset(int64_t img, int64_t c8, int64_t chans, int64_t h, int64_t w,
                                   int blk) {
    int64_t c = c8 * 8;
    return (img * (chans / blk) + c / blk) * h * w * blk + c % blk;
}

/* The tiles [t0, t0 + tn) of the batch, all input channels, into V (rows
 * 0..tn of each point). Tile t is image t / (th tw), row t / tw % th. */
AVX2 static void input_transform(const lwfm__wino *wg, const float *src, int64_t h, int64_t w,
                                 int64_t t0, int64_t tn, float *v) {
    const int64_t th = tiles(h, wg->m), tw = tiles(w, wg->m), cb_n = wg->ic / 8;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int64_t job = 0; job < tn * cb_n; job++) {
        int64_t r = job / cb_n, cb = job % cb_n, t = t0 + r;
        int64_t img = t / (th * tw), ty = t / tw % th, tx = t % tw;
        const float *map = src + block_offset(img, cb, wg->ic, h, w, wg->blk);
        input_tile(wg->m, map, wg->blk, h, w, ty * wg->m - 1, tx * wg->m - 1, v + r * wg->ic + cb * 8,
                   tn * wg->ic);
    }
}

/* M_p = V_p U_p for every point p: the jobs are (point, 16-channel panel)
 * pairs; each panel of U (ic x 16) is reused by all the tiles. */
AVX2 static void gemms(const lwfm__wino *wg, const float *v, float *mo, int64_t t_all) {
    /* t_all: the rows of this block of tiles */
    const int64_t panels = wg->oc / COLS, ic = wg->ic, oc = wg->oc;
    const int64_t jobs = (int64_t)wg->points * panels;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int64_t job = 0; job < jobs; job++) {
        int64_t p = job / panels, j = job % panels;
        const float *u = wg->u + job * ic * COLS, *vp = v + p * t_all * ic;
        float *mp = mo + p * t_all * oc + j * COLS;
        lwfm__panel_gemm(u, ic, t_all, vp, ic, mp, oc, COLS, 0);
    }
}

typedef struct epilogue {
    const float *bias; /* the block's 8 */
    int accumulate, activate;
    float slope;
} epilogue;

/* One tile, one block of 8 output channels: Y = A^T M A, then bias,
 * residual and activation, written where the tile lies inside the map.
 * Inlined per tile size, as input_tile_a. */
AVX2 INLINE void output_tile_a(const int a, const float at[MAX_A][MAX_A], const float *mo,
                               int64_t point_stride, float *map, int pix, int64_t h, int64_t w,
                               int64_t y0, int64_t x0, const epilogue *ep) {
    const int m = a - 2;
    __m256 mm[MAX_A][MAX_A], tmp[MAX_A][MAX_A];
#pragma GCC unroll 6
    for (int i = 0; i < a; i++)
#pragma GCC unroll 6
        for (int j = 0; j < a; j++)
            mm[i][j] = _mm256_loadu_ps(mo + (int64_t)(i * a + j) * point_stride);
    left_product(m, a, at, mm, tmp);
    const __m256 bias = _mm256_loadu_ps(ep->bias), zero = _mm256_setzero_ps(),
                 slope = _mm256_set1_ps(ep->slope);
#pragma GCC unroll 4
    for (int r = 0; r < m; r++)
#pragma GCC unroll 4
        for (int c = 0; c < m; c++) {
            if (y0 + r >= h || x0 + c >= w) continue;
            __m256 s = right_entry(a, at, c, tmp[r], bias);
            float *out = map + ((y0 + r) * w + x0 + c) * pix;
            if (ep->accumulate) s = _mm256_add_ps(s, _mm256_loadu_ps(out));
            if (ep->activate) { /* NaN stays NaN (max / min return their 2nd operand) */
                __m256 neg = _mm256_mul_ps(_mm256_min_ps(zero, s), slope);
                s = _mm256_add_ps(_mm256_max_ps(zero, s), neg);
            }
            _mm256_storeu_ps(out, s);
        }
}

AVX2 static void output_tile(int m, const float *mo, int64_t point_stride, float *map, int pix,
                             int64_t h, int64_t w, int64_t y0, int64_t x0, const epilogue *ep) {
    switch (m) {
    case 2: output_tile_a(4, kAT[0], mo, point_stride, map, pix, h, w, y0, x0, ep); break;
    case 3: output_tile_a(5, kAT[1], mo, point_stride, map, pix, h, w, y0, x0, ep); break;
    default: output_tile_a(6, kAT[2], mo, point_stride, map, pix, h, w, y0, x0, ep); break;
    }
}

AVX2 static void output_transform(const lwfm__wino *wg, const float *mo, int64_t h, int64_t w,
                                  int64_t t0, int64_t tn, float *dst, const epilogue *all) {
    const int64_t th = tiles(h, wg->m), tw = tiles(w, wg->m), ob_n = wg->oc / 8;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int64_t job = 0; job < tn * ob_n; job++) {
        int64_t r = job / ob_n, ob = job % ob_n, t = t0 + r;
        int64_t img = t / (th * tw), ty = t / tw % th, tx = t % tw;
        epilogue ep = *all;
        ep.bias += ob * 8;
        float *map = dst + block_offset(img, ob, wg->oc, h, w, wg->blk);
        output_tile(wg->m, mo + r * wg->oc + ob * 8, tn * wg->oc, map, wg->blk, h, w, ty * wg->m, tx * wg->m,
                    &ep);
    }
}

void lwfm__wino_run(const lwfm__wino *wg, const float *src, int64_t n, int64_t h, int64_t w,
                    float *dst, const float *bias, int accumulate, int activate, float slope,
                    void *scratch) {
    const int64_t t_all = n * tiles(h, wg->m) * tiles(w, wg->m), tb = block_tiles(wg, t_all);
    const epilogue ep = {bias, accumulate, activate, slope};
    float *v = scratch, *mo = v + (int64_t)wg->points * tb * wg->ic;
    for (int64_t t0 = 0; t0 < t_all; t0 += tb) {
        int64_t tn = t_all - t0 < tb ? t_all - t0 : tb;
        input_transform(wg, src, h, w, t0, tn, v);
        gemms(wg, v, mo, tn);
        output_transform(wg, mo, h, w, t0, tn, dst, &ep);
    }
}
#else
void lwfm__wino_run(const lwfm__wino *wg, const float *src, int64_t n, int64_t h, int64_t w,
                    float *dst, const float *bias, int accumulate, int activate, float slope,
                    void *scratch) {
    /* never chosen: lwfm__wino_cpu_ok() is 0 off x86 */
    (void)wg, (void)src, (void)n, (void)h, (void)w, (void)dst, (void)bias, (void)accumulate;
    (void)activate, (void)slope, (void)scratch;
}
#endif
