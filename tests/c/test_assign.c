/* Tests of the exact linear assignment solver (lib/spm/assign.c).
 *
 *  (a) n = 1..8: every matrix is compared with brute force over all n!
 *      permutations (uniform, small integers with many ties, all-equal, one
 *      constant row, constant columns, zero, negative, huge/tiny magnitudes,
 *      huge entries masking a tiny-cost sub-problem, near-DBL_MAX).
 *  (b) n = 9..64 (several matrices each) and n = 200: an independent
 *      optimality certificate. An assignment s is optimal iff its exchange
 *      graph (node per row, arc i -> k of weight c[i][s(k)] - c[i][s(i)]:
 *      "row i takes row k's column") has no negative cycle; checked with
 *      Floyd-Warshall, exactly for integer costs.
 *  (c) NaN / infinity anywhere, bad n and NULL pointers are rejected with
 *      the outputs untouched.
 *  (d) the float entry point, (e) the public lwfm_linear_assignment(),
 *  (f) determinism with a dirty (NaN-filled) work buffer and a stack work
 *      array, (g) concurrent solves from several threads, (h) the internal
 *      power-of-two scaling of matrices near DBL_MAX.
 * Every solve also checks that the result is a permutation and that the
 * returned total is exactly the row-order sum of the chosen costs. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "spm/assign.h"

/* ------------------------------------------------------------------------ */
/* Test harness                                                              */

static int g_checks, g_failures;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        g_checks++;                                                                 \
        if (!(cond)) {                                                              \
            g_failures++;                                                           \
            if (g_failures <= 50)                                                   \
                fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* splitmix64: deterministic, platform-independent. */
static uint64_t g_rng = 0x243F6A8885A308D3ull;
static uint64_t rnd_u64(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rnd_unit(void) { return (double)(rnd_u64() >> 11) * 0x1p-53; } /* [0, 1) */
static int rnd_int(int lo, int hi) { return lo + (int)(rnd_u64() % (uint64_t)(hi - lo + 1)); }

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static double max_abs(const double *c, int n) {
    double m = 0.0;
    for (int k = 0; k < n * n; k++) m = fmax(m, fabs(c[k]));
    return m;
}

/* Row-order sum of the chosen costs, as the solver documents it. */
static double perm_cost(const double *c, int n, const int *p) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += c[(size_t)i * n + p[i]];
    return s;
}

static int is_permutation(const int *p, int n) {
    char *seen = xmalloc((size_t)n);
    memset(seen, 0, (size_t)n);
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

/* Solve, check permutation + exact total; returns the total (NaN on error). */
static double solve_checked(const double *c, int n, int *p) {
    double *work = xmalloc(lwfm__assign_work_doubles(n) * sizeof(double));
    double total = NAN;
    int rc = lwfm__assign_solve(c, n, p, &total, work);
    free(work);
    CHECK(rc == 0);
    if (rc != 0) return NAN;
    int perm_ok = is_permutation(p, n);
    CHECK(perm_ok);
    if (!perm_ok) return NAN;
    CHECK(total == perm_cost(c, n, p) || (isnan(total) && isnan(perm_cost(c, n, p))));
    return total;
}

/* Brute force: minimum over all permutations of the row-order sum. */
static void brute_rec(const double *c, int n, int row, double acc, int *used, double *best) {
    if (row == n) {
        if (acc < *best) *best = acc;
        return;
    }
    for (int j = 0; j < n; j++) {
        if (used[j]) continue;
        used[j] = 1;
        brute_rec(c, n, row + 1, acc + c[(size_t)row * n + j], used, best);
        used[j] = 0;
    }
}

static double brute_force(const double *c, int n) {
    int used[16] = {0};
    double best = INFINITY;
    brute_rec(c, n, 0, 0.0, used, &best);
    return best;
}

/* Exchange-graph certificate (see the file comment). Returns 1 when no cycle
 * of weight < -tol exists. */
static int no_negative_cycle(const double *c, int n, const int *p, double tol) {
    double *d = xmalloc((size_t)n * n * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++)
            d[(size_t)i * n + k] = c[(size_t)i * n + p[k]] - c[(size_t)i * n + p[i]];
    int ok = 1;
    for (int k = 0; k < n && ok; k++) {
        for (int i = 0; i < n; i++) {
            const double dik = d[(size_t)i * n + k];
            double *di = d + (size_t)i * n;
            const double *dk = d + (size_t)k * n;
            for (int j = 0; j < n; j++) {
                const double t = dik + dk[j];
                if (t < di[j]) di[j] = t;
            }
        }
        for (int i = 0; i < n; i++)
            if (d[(size_t)i * n + i] < -tol) ok = 0;
    }
    free(d);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Matrix generators. Each fills c and returns the tolerance scale for the  */
/* total (0: exact comparison).                                             */

enum {
    GEN_UNIFORM, GEN_INT03, GEN_ALL_EQUAL, GEN_CONST_ROW, GEN_CONST_COLS, GEN_ZERO,
    GEN_NEGATIVE, GEN_NEG_INT, GEN_HUGE_TINY, GEN_MASKED_TINY, GEN_BIG_INT, GEN_RANK_ONE,
    GEN_HUGE_1E300, GEN_COUNT
};
static const char *const gen_names[GEN_COUNT] = {
    "uniform", "int0..3", "all-equal", "constant-row", "constant-columns", "zero",
    "negative", "negative-int", "huge/tiny", "masked-tiny", "big-int", "rank-one", "1e300"};

static double gen(int kind, double *c, int n) {
    const int nn = n * n;
    switch (kind) {
    case GEN_UNIFORM:
        for (int k = 0; k < nn; k++) c[k] = rnd_unit();
        return 1e-12 * n * max_abs(c, n);
    case GEN_INT03:
        for (int k = 0; k < nn; k++) c[k] = rnd_int(0, 3);
        return 0.0;
    case GEN_ALL_EQUAL: {
        const double x = rnd_unit() * 10.0 - 5.0;
        for (int k = 0; k < nn; k++) c[k] = x;
        return 1e-12 * n * max_abs(c, n);
    }
    case GEN_CONST_ROW: {
        for (int k = 0; k < nn; k++) c[k] = rnd_int(0, 9);
        const int r = rnd_int(0, n - 1);
        const int x = rnd_int(-3, 12);
        for (int j = 0; j < n; j++) c[(size_t)r * n + j] = x;
        return 0.0;
    }
    case GEN_CONST_COLS:
        for (int j = 0; j < n; j++) {
            const double x = rnd_int(0, 4);
            for (int i = 0; i < n; i++) c[(size_t)i * n + j] = x;
        }
        return 0.0;
    case GEN_ZERO:
        for (int k = 0; k < nn; k++) c[k] = 0.0;
        return 0.0;
    case GEN_NEGATIVE:
        for (int k = 0; k < nn; k++) c[k] = -5.0 * rnd_unit() + 1.0;
        return 1e-12 * n * max_abs(c, n);
    case GEN_NEG_INT:
        for (int k = 0; k < nn; k++) c[k] = rnd_int(-5, 5);
        return 0.0;
    case GEN_HUGE_TINY: {
        static const double mags[] = {1e30, 1e-30, 1.0, 0.0};
        for (int k = 0; k < nn; k++)
            c[k] = (rnd_u64() & 1 ? 1.0 : -1.0) * mags[rnd_int(0, 3)] * (1.0 + rnd_unit());
        return 1e-12 * n * max_abs(c, n);
    }
    case GEN_MASKED_TINY: {
        /* 1e30 everywhere except a random permutation and a few extra
         * entries, which hold costs of order 1e-30: the optimum avoids every
         * 1e30 entry and is decided by the tiny costs alone. */
        for (int k = 0; k < nn; k++) c[k] = 1e30;
        int perm[16];
        for (int i = 0; i < n; i++) perm[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = rnd_int(0, i), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int i = 0; i < n; i++) c[(size_t)i * n + perm[i]] = 1e-30 * (1.0 + rnd_unit());
        for (int e = 0; e < n; e++) c[rnd_int(0, nn - 1)] = 1e-30 * (1.0 + rnd_unit());
        return 1e-12 * n * 2e-30;
    }
    case GEN_BIG_INT: /* exact integers near 2^40 */
        for (int k = 0; k < nn; k++) c[k] = (double)((int64_t)1 << 40) + rnd_int(-1000, 1000);
        return 0.0;
    case GEN_RANK_ONE: { /* c[i][j] = a_i * b_j with small integers: many ties */
        int a[16], b[16];
        for (int i = 0; i < n; i++) a[i] = rnd_int(-3, 3), b[i] = rnd_int(-3, 3);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) c[(size_t)i * n + j] = a[i] * b[j];
        return 0.0;
    }
    case GEN_HUGE_1E300: /* above the internal scaling limit (2^960 ~ 1e289) */
        for (int k = 0; k < nn; k++) c[k] = (rnd_unit() * 2.0 - 1.0) * 1e300;
        return 1e-12 * n * max_abs(c, n);
    }
    return 0.0;
}

/* ------------------------------------------------------------------------ */
/* (a) brute force, n = 1..8                                                */

static void test_brute_force(void) {
    double c[64];
    int p[8];
    int solved = 0, mismatches = 0;
    for (int n = 1; n <= 8; n++) {
        const int reps = n <= 5 ? 200 : n == 6 ? 60 : n == 7 ? 24 : 10;
        for (int kind = 0; kind < GEN_COUNT; kind++) {
            for (int r = 0; r < reps; r++) {
                const double tol = gen(kind, c, n);
                const double got = solve_checked(c, n, p);
                const double best = brute_force(c, n);
                solved++;
                /* got is a permutation's exact row-order sum, so got >= best
                 * up to the same rounding; optimality: got <= best + tol. */
                const int ok = fabs(got - best) <= tol;
                CHECK(ok);
                if (!ok && ++mismatches <= 10)
                    fprintf(stderr, "  n=%d %s rep %d: solver %.17g, brute force %.17g\n", n,
                            gen_names[kind], r, got, best);
            }
        }
    }
    printf("(a) brute force: %d matrices, n = 1..8, %d generators\n", solved, GEN_COUNT);
}

/* ------------------------------------------------------------------------ */
/* (b) larger n: exchange-graph certificate                                  */

static void certify(const double *c, int n, double tol, const char *what) {
    int *p = xmalloc((size_t)n * sizeof(int));
    const double total = solve_checked(c, n, p);
    if (!isnan(total)) {
        const int ok = no_negative_cycle(c, n, p, tol);
        CHECK(ok);
        if (!ok) fprintf(stderr, "  n=%d %s: negative exchange cycle (not optimal)\n", n, what);
    }
    free(p);
}

static void test_certificate(void) {
    int count = 0;
    for (int n = 9; n <= 64; n++) {
        double *c = xmalloc((size_t)n * n * sizeof(double));
        const int reps = n <= 32 ? 4 : 2;
        for (int r = 0; r < reps; r++) {
            for (int k = 0; k < n * n; k++) c[k] = rnd_unit();
            certify(c, n, 1e-11 * n, "uniform");
            for (int k = 0; k < n * n; k++) c[k] = rnd_int(0, 3);
            certify(c, n, 0.0, "int0..3");
            for (int k = 0; k < n * n; k++) c[k] = rnd_int(-100, 100);
            certify(c, n, 0.0, "int-100..100");
            /* integers up to the documented exactness bound 2^53 / (8 n) */
            const double bound = floor(0x1p53 / (8.0 * n));
            for (int k = 0; k < n * n; k++) c[k] = floor((rnd_unit() * 2.0 - 1.0) * bound);
            certify(c, n, 0.0, "big-int");
            /* SPM-like: 1 - cosine similarity of random unit vectors in R^8 */
            double a[64][8], b[64][8];
            for (int i = 0; i < n; i++) {
                double na = 0, nb = 0;
                for (int d = 0; d < 8; d++) {
                    a[i][d] = rnd_unit() - 0.5;
                    b[i][d] = rnd_unit() - 0.5;
                    na += a[i][d] * a[i][d];
                    nb += b[i][d] * b[i][d];
                }
                for (int d = 0; d < 8; d++) a[i][d] /= sqrt(na), b[i][d] /= sqrt(nb);
            }
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    double dot = 0;
                    for (int d = 0; d < 8; d++) dot += a[i][d] * b[j][d];
                    c[(size_t)i * n + j] = 1.0 - dot;
                }
            certify(c, n, 1e-11 * n * 2.0, "1-cosine");
            count += 5;
        }
        free(c);
    }
    const int n = 200;
    double *c = xmalloc((size_t)n * n * sizeof(double));
    for (int k = 0; k < n * n; k++) c[k] = rnd_unit();
    certify(c, n, 1e-11 * n, "uniform");
    for (int k = 0; k < n * n; k++) c[k] = rnd_int(0, 3);
    certify(c, n, 0.0, "int0..3");
    for (int k = 0; k < n * n; k++) c[k] = rnd_int(0, 1000);
    certify(c, n, 0.0, "int0..1000");
    /* Worst-case style: c[i][j] = i * j (every row's ranking is the same). */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) c[(size_t)i * n + j] = (double)i * j;
    certify(c, n, 0.0, "i*j");
    count += 4;
    free(c);
    printf("(b) certificates: %d matrices, n = 9..64 and 200\n", count);
}

/* ------------------------------------------------------------------------ */
/* (c) rejection                                                             */

static void test_rejects(void) {
    const int n = 5;
    double c[25], work[LWFM_ASSIGN_WORK_DOUBLES(5)];
    int p[5];
    const double bad[] = {NAN, INFINITY, -INFINITY};
    /* every position of matrices of several sizes (the finiteness scan works
     * on blocks of elements plus a tail) */
    static const int sizes[] = {1, 2, 3, 4, 5, 7, 9, 25};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int m = sizes[s];
        double *cm = xmalloc((size_t)m * m * sizeof(double));
        double *wm = xmalloc(lwfm__assign_work_doubles(m) * sizeof(double));
        int *pm = xmalloc((size_t)m * sizeof(int));
        for (int pos = 0; pos < m * m; pos++) {
            for (int b = 0; b < 3; b++) {
                for (int k = 0; k < m * m; k++) cm[k] = rnd_unit();
                cm[pos] = bad[b];
                for (int i = 0; i < m; i++) pm[i] = -7;
                double total = 123.0;
                CHECK(lwfm__assign_solve(cm, m, pm, &total, wm) == -1);
                CHECK(total == 123.0);
                for (int i = 0; i < m; i++) CHECK(pm[i] == -7);
            }
        }
        free(cm);
        free(wm);
        free(pm);
    }
    for (int k = 0; k < 25; k++) c[k] = rnd_unit();
    const int bad_n[] = {0, -1, -1000, LWFM_ASSIGN_MAX_N + 1, 1 << 30};
    for (int b = 0; b < 5; b++) {
        double total = 123.0;
        p[0] = -7;
        CHECK(lwfm__assign_solve(c, bad_n[b], p, &total, work) == -1);
        CHECK(total == 123.0 && p[0] == -7);
        CHECK(lwfm__assign_work_doubles(bad_n[b]) == 0);
    }
    CHECK(lwfm__assign_solve(NULL, n, p, NULL, work) == -1);
    CHECK(lwfm__assign_solve(c, n, NULL, NULL, work) == -1);
    CHECK(lwfm__assign_solve(c, n, p, NULL, NULL) == -1);
    for (int m = 1; m <= 64; m++) CHECK(lwfm__assign_work_doubles(m) == LWFM_ASSIGN_WORK_DOUBLES(m));
    CHECK(lwfm__assign_work_doubles(LWFM_ASSIGN_MAX_N) ==
          LWFM_ASSIGN_WORK_DOUBLES(LWFM_ASSIGN_MAX_N));
    /* total may be NULL */
    CHECK(lwfm__assign_solve(c, n, p, NULL, work) == 0 && is_permutation(p, n));
    printf("(c) rejection of NaN/Inf, bad n, NULL: done\n");
}

/* ------------------------------------------------------------------------ */
/* (d) float entry point                                                     */

static void test_f32(void) {
    float cf[64 * 64];
    double cd[64 * 64], work[LWFM_ASSIGN_WORK_DOUBLES(64)];
    int pf[64], pd[64];
    for (int n = 1; n <= 64; n++) {
        for (int r = 0; r < 3; r++) {
            for (int k = 0; k < n * n; k++) {
                cf[k] = r == 1 ? (float)rnd_int(0, 3) : (float)(rnd_unit() * 4.0 - 1.0);
                cd[k] = (double)cf[k];
            }
            double tf = NAN, td = NAN;
            CHECK(lwfm__assign_solve_f32(cf, n, pf, &tf, work) == 0);
            CHECK(lwfm__assign_solve(cd, n, pd, &td, work) == 0);
            /* element-wise conversion: the same arithmetic, the same result */
            CHECK(memcmp(pf, pd, (size_t)n * sizeof(int)) == 0);
            CHECK(tf == td);
            CHECK(is_permutation(pf, n));
            if (n <= 7) CHECK(fabs(tf - brute_force(cd, n)) <= 1e-12 * n * 4.0);
        }
    }
    /* huge floats (no scaling needed below 2^128) */
    for (int k = 0; k < 49; k++) cf[k] = (float)((rnd_unit() * 2.0 - 1.0) * 3e38);
    for (int k = 0; k < 49; k++) cd[k] = cf[k];
    double tf, td;
    CHECK(lwfm__assign_solve_f32(cf, 7, pf, &tf, work) == 0);
    CHECK(lwfm__assign_solve(cd, 7, pd, &td, work) == 0);
    CHECK(memcmp(pf, pd, 7 * sizeof(int)) == 0 && tf == td);
    CHECK(fabs(tf - brute_force(cd, 7)) <= 1e-12 * 7 * 3e38);
    /* rejection, every position of several sizes */
    const float badf[] = {NAN, INFINITY, -INFINITY};
    static const int sizes[] = {1, 2, 3, 4, 5, 7, 9, 25};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int m = sizes[s];
        for (int pos = 0; pos < m * m; pos++) {
            for (int b = 0; b < 3; b++) {
                for (int k = 0; k < m * m; k++) cf[k] = (float)rnd_unit();
                cf[pos] = badf[b];
                double total = 5.0;
                for (int i = 0; i < m; i++) pf[i] = -9;
                CHECK(lwfm__assign_solve_f32(cf, m, pf, &total, work) == -1);
                CHECK(total == 5.0);
                for (int i = 0; i < m; i++) CHECK(pf[i] == -9);
            }
        }
    }
    CHECK(lwfm__assign_solve_f32(cf, 0, pf, NULL, work) == -1);
    CHECK(lwfm__assign_solve_f32(cf, LWFM_ASSIGN_MAX_N + 1, pf, NULL, work) == -1);
    printf("(d) float entry point: done\n");
}

/* ------------------------------------------------------------------------ */
/* (e) public wrapper                                                        */

static void test_public(void) {
    double c[49];
    int64_t a[7];
    double total;
    for (int k = 0; k < 49; k++) c[k] = rnd_int(0, 20);
    CHECK(lwfm_linear_assignment(c, 7, a, &total) == LWFM_OK);
    CHECK(lwfm_last_error()[0] == '\0');
    int p[7];
    for (int i = 0; i < 7; i++) p[i] = (int)a[i];
    CHECK(is_permutation(p, 7));
    CHECK(total == perm_cost(c, 7, p));
    CHECK(total == brute_force(c, 7));
    CHECK(lwfm_linear_assignment(c, 7, a, NULL) == LWFM_OK); /* total optional */

    for (int i = 0; i < 7; i++) a[i] = -5;
    total = -1.0;
    CHECK(lwfm_linear_assignment(NULL, 7, a, &total) == LWFM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lwfm_last_error(), "cost") != NULL);
    CHECK(lwfm_linear_assignment(c, 7, NULL, &total) == LWFM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(lwfm_last_error(), "assignment") != NULL);
    CHECK(lwfm_linear_assignment(c, 0, a, &total) == LWFM_ERR_INVALID_ARGUMENT);
    CHECK(lwfm_linear_assignment(c, -3, a, &total) == LWFM_ERR_INVALID_ARGUMENT);
    CHECK(lwfm_linear_assignment(c, LWFM_ASSIGN_MAX_N + 1, a, &total) == LWFM_ERR_LIMIT);
    CHECK(lwfm_linear_assignment(c, INT64_MAX, a, &total) == LWFM_ERR_LIMIT);
    CHECK(strstr(lwfm_last_error(), "4096") != NULL);
    c[3 * 7 + 5] = NAN;
    CHECK(lwfm_linear_assignment(c, 7, a, &total) == LWFM_ERR_NONFINITE);
    CHECK(strstr(lwfm_last_error(), "cost[3][5]") != NULL);
    c[3 * 7 + 5] = -INFINITY;
    CHECK(lwfm_linear_assignment(c, 7, a, &total) == LWFM_ERR_NONFINITE);
    for (int i = 0; i < 7; i++) CHECK(a[i] == -5);
    CHECK(total == -1.0);
    /* the error is cleared by the next successful call */
    c[3 * 7 + 5] = 1.0;
    CHECK(lwfm_linear_assignment(c, 7, a, &total) == LWFM_OK);
    CHECK(lwfm_last_error()[0] == '\0');
    c[0] = 3.0;
    CHECK(lwfm_linear_assignment(c, 1, a, &total) == LWFM_OK && a[0] == 0 && total == 3.0);
    /* finite costs whose sums overflow (issue 15): the total was -inf with
     * LWFM_OK; now refused, outputs untouched; up to the bound they work */
    {
        double big[4] = {1e308, -1e308, -1e308, 1e308};
        a[0] = a[1] = -5;
        total = -1.0;
        CHECK(lwfm_linear_assignment(big, 2, a, &total) == LWFM_ERR_LIMIT);
        CHECK(strstr(lwfm_last_error(), "DBL_MAX") != NULL);
        CHECK(a[0] == -5 && a[1] == -5 && total == -1.0);
        const double b = DBL_MAX / 32.0;
        double ok[4] = {b, -b, -b, b};
        CHECK(lwfm_linear_assignment(ok, 2, a, &total) == LWFM_OK);
        CHECK(a[0] == 1 && a[1] == 0 && isfinite(total) && total == -2.0 * b);
    }
    printf("(e) public lwfm_linear_assignment: done\n");
}

/* ------------------------------------------------------------------------ */
/* (f) determinism, dirty work buffers                                        */

static void test_determinism(void) {
    const int n = 49;
    double c[49 * 49], stack_work[LWFM_ASSIGN_WORK_DOUBLES(49)];
    int p1[49], p2[49];
    double *heap_work = xmalloc(lwfm__assign_work_doubles(n) * sizeof(double));
    for (int r = 0; r < 20; r++) {
        for (int k = 0; k < n * n; k++) c[k] = r & 1 ? rnd_int(0, 2) : rnd_unit();
        for (size_t k = 0; k < lwfm__assign_work_doubles(n); k++) heap_work[k] = NAN;
        for (size_t k = 0; k < LWFM_ASSIGN_WORK_DOUBLES(49); k++) stack_work[k] = (double)rnd_int(-100, 100);
        double t1, t2;
        CHECK(lwfm__assign_solve(c, n, p1, &t1, heap_work) == 0);
        CHECK(lwfm__assign_solve(c, n, p2, &t2, stack_work) == 0);
        CHECK(memcmp(p1, p2, sizeof p1) == 0 && t1 == t2);
        /* reuse of the same buffer for a smaller problem, then again */
        CHECK(lwfm__assign_solve(c, 5, p2, &t2, heap_work) == 0);
        CHECK(lwfm__assign_solve(c, n, p2, &t2, heap_work) == 0);
        CHECK(memcmp(p1, p2, sizeof p1) == 0 && t1 == t2);
    }
    free(heap_work);
    printf("(f) determinism: done\n");
}

/* ------------------------------------------------------------------------ */
/* (g) concurrent solves                                                      */

#define MT_MATS 64
#define MT_N 25
static double g_mt_cost[MT_MATS][MT_N * MT_N];
static int g_mt_expect[MT_MATS][MT_N];

static void *mt_worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    double work[LWFM_ASSIGN_WORK_DOUBLES(MT_N)];
    int p[MT_N];
    int bad = 0;
    for (int rep = 0; rep < 20; rep++) {
        for (int m = 0; m < MT_MATS; m++) {
            const int mm = (m + id * 7) % MT_MATS;
            double t;
            if (lwfm__assign_solve(g_mt_cost[mm], MT_N, p, &t, work) != 0 ||
                memcmp(p, g_mt_expect[mm], sizeof p) != 0)
                bad++;
        }
    }
    return (void *)(intptr_t)bad;
}

static void test_threads(void) {
    for (int m = 0; m < MT_MATS; m++) {
        for (int k = 0; k < MT_N * MT_N; k++) g_mt_cost[m][k] = m & 1 ? rnd_int(0, 3) : rnd_unit();
        solve_checked(g_mt_cost[m], MT_N, g_mt_expect[m]);
    }
    pthread_t th[4];
    int started = 0;
    for (int t = 0; t < 4; t++)
        if (pthread_create(&th[t], NULL, mt_worker, (void *)(intptr_t)t) == 0) started++;
        else break;
    CHECK(started == 4);
    for (int t = 0; t < started; t++) {
        void *ret = NULL;
        pthread_join(th[t], &ret);
        CHECK((intptr_t)ret == 0);
    }
    printf("(g) %d threads x %d solves: done\n", started, 20 * MT_MATS);
}

/* ------------------------------------------------------------------------ */
/* (h) internal scaling near DBL_MAX                                          */

static void test_scaling(void) {
    const int n = 30;
    double c[30 * 30], cs[30 * 30];
    int p1[30], p2[30];
    for (int r = 0; r < 10; r++) {
        for (int k = 0; k < n * n; k++) {
            c[k] = (rnd_unit() * 2.0 - 1.0) * DBL_MAX;
            if (r & 1) c[k] = rnd_int(-3, 3) * 0x1p1020; /* ties at huge scale */
            cs[k] = c[k] * 0x1p-700;                     /* exact */
        }
        c[0] = r & 1 ? DBL_MAX : -DBL_MAX;
        cs[0] = c[0] * 0x1p-700;
        double t1, t2;
        solve_checked(cs, n, p2);
        int work_ok = lwfm__assign_solve(c, n, p1, &t1, (double[LWFM_ASSIGN_WORK_DOUBLES(30)]){0}) == 0;
        CHECK(work_ok);
        CHECK(is_permutation(p1, n));
        /* the power-of-two scaling commutes with every operation: same result */
        CHECK(memcmp(p1, p2, sizeof p1) == 0);
        t2 = perm_cost(c, n, p1);
        CHECK(t1 == t2 || (isinf(t1) && isinf(t2))); /* the total itself may overflow */
        CHECK(no_negative_cycle(cs, n, p2, r & 1 ? 0.0 : 1e-11 * n * DBL_MAX * 0x1p-700));
    }
    /* Huge entries only at some flat positions: the odd ones, the even
     * ones, k mod 4 in {0, 1}, k mod 4 in {2, 3} (the lanes of the
     * magnitude scan), small ones elsewhere. */
    for (int rep = 0; rep < 40; rep++) {
        static const unsigned patterns[4] = {0xA, 0x5, 0x3, 0xC}; /* bit k % 4 */
        const unsigned pat = patterns[rep % 4];
        const int m = rep < 20 ? 30 : 29;
        for (int k = 0; k < m * m; k++) {
            c[k] = rnd_unit() * 2.0 - 1.0;
            if (pat >> (k % 4) & 1) c[k] = (rnd_unit() * 2.0 - 1.0) * DBL_MAX;
            cs[k] = c[k] * 0x1p-700;
        }
        solve_checked(cs, m, p2);
        double t1;
        CHECK(lwfm__assign_solve(c, m, p1, &t1, (double[LWFM_ASSIGN_WORK_DOUBLES(30)]){0}) == 0);
        CHECK(is_permutation(p1, m) && memcmp(p1, p2, (size_t)m * sizeof(int)) == 0);
        CHECK(no_negative_cycle(cs, m, p2, 1e-11 * m * DBL_MAX * 0x1p-700));
    }
    /* +DBL_MAX and -DBL_MAX in the same column among entries in [-1, 1],
     * the pair at every position in turn (the magnitude scan works on
     * blocks plus a tail): their difference overflows unless the matrix is
     * scaled. Checked against the same matrix scaled by 2^-700 (exact) and
     * against brute force. */
    for (int m = 5; m <= 6; m++) {
        for (int pos = 0; pos < m * m; pos++) {
            for (int k = 0; k < m * m; k++) c[k] = rnd_unit() * 2.0 - 1.0;
            c[pos] = DBL_MAX;
            c[(pos + m) % (m * m)] = -DBL_MAX;
            for (int k = 0; k < m * m; k++) cs[k] = c[k] * 0x1p-700;
            solve_checked(cs, m, p2);
            double t1;
            CHECK(lwfm__assign_solve(c, m, p1, &t1, (double[LWFM_ASSIGN_WORK_DOUBLES(6)]){0}) == 0);
            CHECK(is_permutation(p1, m) && memcmp(p1, p2, (size_t)m * sizeof(int)) == 0);
            CHECK(fabs(perm_cost(cs, m, p2) - brute_force(cs, m)) <= 1e-12 * m * DBL_MAX * 0x1p-700);
        }
    }
    printf("(h) scaling near DBL_MAX: done\n");
}

int main(void) {
    test_brute_force();
    test_certificate();
    test_rejects();
    test_f32();
    test_public();
    test_determinism();
    test_threads();
    test_scaling();
    printf("test_assign: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
