/* Micro-benchmark of the exact assignment solver (lib/spm/assign.c) at the
 * SPM sizes: P x P with P = 9, 25, 49 (feature maps 3x3, 5x5, 7x7), plus 100
 * and 200 for scale. Not a test.
 *
 *   gcc -std=gnu11 -O2 -Iinclude -Ilib -DLWFM_BUILDING lib/core/error.c \
 *       lib/core/alloc.c lib/spm/assign.c bench/bench_assign.c -lm -o /tmp/bench_assign
 *   /tmp/bench_assign [seconds-per-case, default 0.5]
 *
 * Two inputs per size, a pool of 256 distinct matrices cycled through (so
 * no solve sees a warm copy of the same problem):
 *   uniform  costs uniform in [0, 1)
 *   cosine   1 - cosine similarity of random 64-d vectors (the SPM cost)
 * Single thread; prints the median over 5 timed runs of microseconds per
 * solve (double entry point; the float entry point on the cosine matrices).
 * bench/bench_assign.py times SciPy's linear_sum_assignment on the same
 * sizes for comparison. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "spm/assign.h"

#define POOL 256

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double rnd_unit(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile double g_sink;

/* Median over 5 runs of seconds per solve. */
static double time_solves(const double *pd, const float *pf, int n, double budget) {
    double *work = malloc(lwfm__assign_work_doubles(n) * sizeof(double));
    int *p = malloc((size_t)n * sizeof(int));
    const size_t nn = (size_t)n * (size_t)n;
    /* calibrate */
    long iters = 16;
    for (;;) {
        const double t0 = now_s();
        for (long k = 0; k < iters; k++) {
            double t;
            if (pf) lwfm__assign_solve_f32(pf + (size_t)(k % POOL) * nn, n, p, &t, work);
            else lwfm__assign_solve(pd + (size_t)(k % POOL) * nn, n, p, &t, work);
            g_sink += t;
        }
        if (now_s() - t0 > budget / 10 || iters > (1L << 26)) break;
        iters *= 2;
    }
    double runs[5];
    for (int r = 0; r < 5; r++) {
        const double t0 = now_s();
        for (long k = 0; k < iters; k++) {
            double t;
            if (pf) lwfm__assign_solve_f32(pf + (size_t)(k % POOL) * nn, n, p, &t, work);
            else lwfm__assign_solve(pd + (size_t)(k % POOL) * nn, n, p, &t, work);
            g_sink += t;
        }
        runs[r] = (now_s() - t0) / (double)iters;
    }
    qsort(runs, 5, sizeof runs[0], cmp_double);
    free(work);
    free(p);
    return runs[2];
}

int main(int argc, char **argv) {
    const double budget = argc > 1 ? atof(argv[1]) : 0.5;
    static const int sizes[] = {9, 25, 49, 100, 200};
    printf("%-6s %14s %14s %14s\n", "n", "uniform f64", "cosine f64", "cosine f32");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int n = sizes[s];
        const size_t nn = (size_t)n * (size_t)n;
        double *uni = malloc(POOL * nn * sizeof(double));
        double *cosd = malloc(POOL * nn * sizeof(double));
        float *cosf = malloc(POOL * nn * sizeof(float));
        double *a = malloc((size_t)n * 64 * sizeof(double));
        double *b = malloc((size_t)n * 64 * sizeof(double));
        for (size_t k = 0; k < POOL * nn; k++) uni[k] = rnd_unit();
        for (int m = 0; m < POOL; m++) {
            for (int i = 0; i < n; i++) {
                double na = 0.0, nb = 0.0;
                for (int d = 0; d < 64; d++) {
                    a[i * 64 + d] = rnd_unit() - 0.5;
                    b[i * 64 + d] = rnd_unit() - 0.5;
                    na += a[i * 64 + d] * a[i * 64 + d];
                    nb += b[i * 64 + d] * b[i * 64 + d];
                }
                for (int d = 0; d < 64; d++) a[i * 64 + d] /= sqrt(na), b[i * 64 + d] /= sqrt(nb);
            }
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < 64; d++) dot += a[i * 64 + d] * b[j * 64 + d];
                    cosd[(size_t)m * nn + (size_t)i * n + j] = 1.0 - dot;
                    cosf[(size_t)m * nn + (size_t)i * n + j] = (float)(1.0 - dot);
                }
        }
        const double tu = time_solves(uni, NULL, n, budget);
        const double tc = time_solves(cosd, NULL, n, budget);
        const double tf = time_solves(NULL, cosf, n, budget);
        printf("%-6d %11.3f us %11.3f us %11.3f us\n", n, 1e6 * tu, 1e6 * tc, 1e6 * tf);
        fflush(stdout);
        free(uni);
        free(cosd);
        free(cosf);
        free(a);
        free(b);
    }
    return 0;
}
