/* Exact linear assignment by shortest augmenting paths (see assign.h).
 *
 * Formulation. Rows are added to the matching one at a time. Dual variables
 * u (rows) and v (columns) are kept such that for every row already matched
 * the reduced cost c[i][j] - u[i] - v[j] is >= 0 for all columns and == 0 on
 * its matched edge. Adding the free row `cur` is a single-source shortest
 * path problem (Dijkstra over columns) in the residual graph: from a row i
 * reached at distance d, column j is reached at d + c[i][j] - u[i] - v[j];
 * a matched column leads on to its row at the same distance (tight edge). All
 * edge lengths after the first are >= 0, so Dijkstra is exact; the first
 * edges (out of `cur`) may be negative, which does no harm because every
 * path uses exactly one of them. The search stops at the first free column
 * settled (the sink, at distance dmin). Then, with dist[j] the settled
 * distances:
 *     u[cur] += dmin
 *     for settled non-sink j, delta = dmin - dist[j] >= 0:
 *         u[row of j] += delta,  v[j] -= delta
 * keeps every matched edge tight, makes the path edges tight and keeps all
 * reduced costs of matched rows (now cur included) >= 0. Finally the path is
 * flipped (augmented) using the predecessor row recorded for each column.
 * After n rounds the matching is perfect and, with the feasible duals
 * certifying it, optimal.
 *
 * Start. Column reduction (v[j] = min_i c[i][j], u = 0) gives a feasible
 * dual in which each column's minimum is tight; a column is matched to its
 * minimising row (lowest index on ties) when that row is still free. Only the
 * rows left free go through the shortest-path rounds. For random matrices
 * this settles a large share of the rows for the price of one pass.
 *
 * Ties. Among columns at the same minimal distance a free one is preferred
 * (it ends the round early); otherwise the lowest index wins. Everything is
 * in a fixed order, so the result is deterministic.
 *
 * Storage. Seven arrays of n doubles in the caller's work buffer: u, v,
 * dist, pred (row from which a column was reached), row4col (matched row of
 * a column, -1 if free), off (0 for unsettled columns, +inf for columns
 * settled in the current round; see solve_core) and the list of the
 * matched columns settled in the current round. Index values are stored as
 * doubles (exact) so the buffer is only ever accessed as double. The
 * matching itself (col4row) is built directly in the caller's row_to_col,
 * which is only written once the input has been validated.
 */
#include <float.h>
#include <math.h>
#include <string.h>

/* SSE2 (baseline on x86-64) paths for the hot loops; a portable scalar path
 * otherwise. The two do the same operations in the same order, so results
 * are bit-identical. Define LWFM_ASSIGN_NO_SIMD to force the scalar path
 * (used to test it on x86). */
#if defined(__SSE2__) && !defined(LWFM_ASSIGN_NO_SIMD)
#define ASSIGN_SSE2 1
#include <emmintrin.h>
#else
#define ASSIGN_SSE2 0
#endif

#include "core/core.h"
#include "spm/assign.h"

/* Infinities mark settled columns and x - x == 0 detects non-finite input;
 * both need IEEE semantics. */
#if defined(__FAST_MATH__) || (defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__)
#error "lib/spm/assign.c must not be compiled with -ffast-math / -ffinite-math-only"
#endif

enum { SRC_F64 = 0, SRC_F64_SCALED = 1, SRC_F32 = 2 };

/* Magnitudes above this are scaled down by a power of two before solving:
 * potentials and path lengths are sums of at most a few n (n <= 2^12) cost
 * entries, so this leaves a wide margin below DBL_MAX (~2^1024). */
#define ASSIGN_SCALE_LIMIT 0x1p960

#define ASSIGN_INF ((double)INFINITY)

size_t lwfm__assign_work_doubles(int n) {
    if (n < 1 || n > LWFM_ASSIGN_MAX_N) return 0;
    return LWFM_ASSIGN_WORK_DOUBLES(n);
}

static inline __attribute__((always_inline)) double load_cost(const void *cost, int kind,
                                                              double scale, size_t k) {
    if (kind == SRC_F32) return (double)((const float *)cost)[k];
    if (kind == SRC_F64_SCALED) return ((const double *)cost)[k] * scale;
    return ((const double *)cost)[k];
}

/* One row scan: for every column j,
 *     r = ((base + c[row][j]) - v[j]) + off[j]
 *     if (r < dist[j]) dist[j] = r, pred[j] = di
 * and returns min_j (dist[j] + off[j]), the smallest distance among the
 * unsettled columns. Branch-free (the comparisons are data-dependent and
 * unpredictable); two columns at a time with SSE2 where available. The
 * operations and their order are the same in both paths, so the results are
 * bit-identical. */
static inline __attribute__((always_inline)) double
relax_row(const void *cost, int kind, double scale, size_t roff, int n, double base, double di,
          const double *v, const double *off, double *dist, double *pred) {
    int j = 0;
    double lowest = ASSIGN_INF;
#if ASSIGN_SSE2
    const __m128d vbase = _mm_set1_pd(base), vdi = _mm_set1_pd(di), vscale = _mm_set1_pd(scale);
    __m128d vlow = _mm_set1_pd(ASSIGN_INF);
    for (; j + 2 <= n; j += 2) {
        __m128d c;
        if (kind == SRC_F32) {
            const float *cf = (const float *)cost + roff + (size_t)j;
            c = _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(const void *)cf)));
        } else {
            c = _mm_loadu_pd((const double *)cost + roff + (size_t)j);
            if (kind == SRC_F64_SCALED) c = _mm_mul_pd(c, vscale);
        }
        const __m128d o = _mm_loadu_pd(off + j);
        const __m128d r = _mm_add_pd(_mm_sub_pd(_mm_add_pd(vbase, c), _mm_loadu_pd(v + j)), o);
        const __m128d d = _mm_loadu_pd(dist + j);
        const __m128d lt = _mm_cmplt_pd(r, d);
        const __m128d nd = _mm_min_pd(r, d); /* r < d ? r : d */
        _mm_storeu_pd(dist + j, nd);
        const __m128d p = _mm_loadu_pd(pred + j);
        _mm_storeu_pd(pred + j, _mm_or_pd(_mm_and_pd(lt, vdi), _mm_andnot_pd(lt, p)));
        vlow = _mm_min_pd(_mm_add_pd(nd, o), vlow);
    }
    const double l0 = _mm_cvtsd_f64(vlow), l1 = _mm_cvtsd_f64(_mm_unpackhi_pd(vlow, vlow));
    lowest = l0 < l1 ? l0 : l1;
#endif
    for (; j < n; j++) {
        const double r = ((base + load_cost(cost, kind, scale, roff + (size_t)j)) - v[j]) + off[j];
        const double d = dist[j];
        const int lt = r < d;
        const double nd = lt ? r : d;
        dist[j] = nd;
        pred[j] = lt ? di : pred[j];
        const double k = nd + off[j];
        lowest = k < lowest ? k : lowest;
    }
    return lowest;
}

/* First column j in [0, n) with dist[j] + off[j] == lowest, preferring a
 * free one (row4col[j] < 0): a free column ends the round. -1 if none. */
static inline __attribute__((always_inline)) int pick_column(int n, double lowest,
                                                             const double *dist, const double *off,
                                                             const double *row4col, int *is_free) {
    int first = -1, j = 0;
#if ASSIGN_SSE2
    const __m128d vl = _mm_set1_pd(lowest);
    for (; j + 2 <= n; j += 2) {
        const int m = _mm_movemask_pd(
            _mm_cmpeq_pd(_mm_add_pd(_mm_loadu_pd(dist + j), _mm_loadu_pd(off + j)), vl));
        if (!m) continue;
        for (int t = 0; t < 2; t++) {
            if (!(m >> t & 1)) continue;
            if (row4col[j + t] < 0.0) {
                *is_free = 1;
                return j + t;
            }
            if (first < 0) first = j + t;
        }
    }
#endif
    for (; j < n; j++) {
        if (dist[j] + off[j] != lowest) continue;
        if (row4col[j] < 0.0) {
            *is_free = 1;
            return j;
        }
        if (first < 0) first = j;
    }
    *is_free = 0;
    return first;
}

/* The solver proper. `kind` is a compile-time constant at every call site so
 * the loads specialise. Writes the matching to col4row.
 *
 * The scan of one row is split into simple passes without data-dependent
 * branches in the hot loop (random costs make such branches unpredictable):
 * relax every column and take the minimum over the unsettled ones
 * (relax_row), then find the column (pick_column). Settled columns carry
 * off[j] = +inf, which both keeps them from being relaxed again (r + inf < d
 * is false) and hides them from the minimum (dist + inf = inf); their dist
 * stays the settled distance. */
static inline __attribute__((always_inline)) void
solve_core(const void *cost, int kind, double scale, int n, int *col4row, double *work) {
    double *const u = work;
    double *const v = work + n;
    double *const dist = work + 2 * (size_t)n;
    double *const pred = work + 3 * (size_t)n;
    double *const row4col = work + 4 * (size_t)n;
    double *const off = work + 5 * (size_t)n;
    double *const settled = work + 6 * (size_t)n; /* columns settled this round */

    for (int i = 0; i < n; i++) {
        u[i] = 0.0;
        v[i] = ASSIGN_INF;
        pred[i] = 0.0;
        off[i] = 0.0;
        col4row[i] = -1;
    }

    /* Column reduction: v[j] = column minimum, lowest row on ties, with pred
     * holding the minimising row. This is a relaxation of every row with
     * base 0 and zero potentials (off, all zero here, stands in for both):
     * ((0 + c) - 0) + 0 == c. */
    for (int i = 0; i < n; i++)
        (void)relax_row(cost, kind, scale, (size_t)i * (size_t)n, n, 0.0, (double)i, off, off, v,
                        pred);
    for (int j = 0; j < n; j++) {
        const int r = (int)pred[j];
        if (col4row[r] < 0) {
            col4row[r] = j;
            row4col[j] = (double)r;
        } else {
            row4col[j] = -1.0;
        }
    }

    /* Shortest augmenting path from each row still free. On entry to a
     * round every off[j] is 0. */
    for (int cur = 0; cur < n; cur++) {
        if (col4row[cur] >= 0) continue;
        for (int j = 0; j < n; j++) dist[j] = ASSIGN_INF;

        int i = cur;
        double dmin = 0.0; /* distance at which row i was reached */
        int sink = -1;
        int nsettled = 0;
        for (;;) {
            double lowest = relax_row(cost, kind, scale, (size_t)i * (size_t)n, n, dmin - u[i],
                                      (double)i, v, off, dist, pred);
            int is_free;
            int jlow = pick_column(n, lowest, dist, off, row4col, &is_free);
            if (jlow < 0) {
                /* Unreachable with finite inputs (costs are pre-scaled so
                 * nothing overflows); kept so that even NaN distances end
                 * the loop with a valid permutation: take the first
                 * unsettled column, reached from row i. An unsettled column
                 * exists: a free one is never settled before the round
                 * ends. */
                for (int j = 0; j < n && jlow < 0; j++)
                    if (off[j] == 0.0) jlow = j;
                is_free = row4col[jlow] < 0.0;
                pred[jlow] = (double)i;
                lowest = dist[jlow];
            }
            off[jlow] = ASSIGN_INF;
            dmin = lowest;
            if (is_free) {
                sink = jlow;
                break;
            }
            settled[nsettled++] = (double)jlow;
            i = (int)row4col[jlow];
        }

        /* Dual update over the settled columns except the sink (whose delta
         * is zero); reset off for the next round. */
        u[cur] += dmin;
        off[sink] = 0.0;
        for (int t = 0; t < nsettled; t++) {
            const int j = (int)settled[t];
            const double delta = dmin - dist[j];
            off[j] = 0.0;
            u[(int)row4col[j]] += delta;
            v[j] -= delta;
        }

        /* Augment along the predecessor chain back to cur. */
        int j = sink;
        for (;;) {
            const int r = (int)pred[j];
            row4col[j] = (double)r;
            const int next = col4row[r];
            col4row[r] = j;
            if (r == cur) break;
            j = next;
        }
    }
}

/* Returns 1 when all `count` entries are finite; *maxabs the largest |cost|.
 * x - x is 0 for finite x and NaN for NaN or infinity. */
static int scan_f64(const double *cost, size_t count, double *maxabs) {
    size_t k = 0;
    double m = 0.0;
    int bad = 0;
#if ASSIGN_SSE2
    const __m128d absmask = _mm_castsi128_pd(_mm_set1_epi64x(INT64_MAX));
    __m128d m0 = _mm_setzero_pd(), m1 = _mm_setzero_pd();
    __m128d n0 = _mm_setzero_pd(), n1 = _mm_setzero_pd();
    for (; k + 4 <= count; k += 4) {
        const __m128d x0 = _mm_loadu_pd(cost + k), x1 = _mm_loadu_pd(cost + k + 2);
        const __m128d z0 = _mm_sub_pd(x0, x0), z1 = _mm_sub_pd(x1, x1);
        n0 = _mm_or_pd(n0, _mm_cmpunord_pd(z0, z0));
        n1 = _mm_or_pd(n1, _mm_cmpunord_pd(z1, z1));
        m0 = _mm_max_pd(m0, _mm_and_pd(x0, absmask));
        m1 = _mm_max_pd(m1, _mm_and_pd(x1, absmask));
    }
    bad = _mm_movemask_pd(_mm_or_pd(n0, n1)) != 0;
    m0 = _mm_max_pd(m0, m1);
    const double a0 = _mm_cvtsd_f64(m0), a1 = _mm_cvtsd_f64(_mm_unpackhi_pd(m0, m0));
    m = a0 > a1 ? a0 : a1;
#endif
    for (; k < count; k++) {
        const double x = cost[k], a = fabs(x);
        bad |= !(x - x == 0.0);
        m = a > m ? a : m;
    }
    *maxabs = m;
    return !bad;
}

static int scan_f32(const float *cost, size_t count) {
    size_t k = 0;
    int bad = 0;
#if ASSIGN_SSE2
    __m128 n0 = _mm_setzero_ps(), n1 = _mm_setzero_ps();
    for (; k + 8 <= count; k += 8) {
        const __m128 x0 = _mm_loadu_ps(cost + k), x1 = _mm_loadu_ps(cost + k + 4);
        const __m128 z0 = _mm_sub_ps(x0, x0), z1 = _mm_sub_ps(x1, x1);
        n0 = _mm_or_ps(n0, _mm_cmpunord_ps(z0, z0));
        n1 = _mm_or_ps(n1, _mm_cmpunord_ps(z1, z1));
    }
    bad = _mm_movemask_ps(_mm_or_ps(n0, n1)) != 0;
#endif
    for (; k < count; k++) bad |= !(cost[k] - cost[k] == 0.0f);
    return !bad;
}

int lwfm__assign_solve(const double *cost, int n, int *row_to_col, double *total, double *work) {
    if (n < 1 || n > LWFM_ASSIGN_MAX_N || !cost || !row_to_col || !work) return -1;
    const size_t count = (size_t)n * (size_t)n;
    double maxabs;
    if (!scan_f64(cost, count, &maxabs)) return -1;

    if (maxabs > ASSIGN_SCALE_LIMIT) {
        /* Exact power-of-two scaling; the ordering of path costs is kept
         * (magnitudes tiny enough to underflow were already below rounding
         * relative to the large entries). */
        const double scale = ldexp(1.0, 959 - ilogb(maxabs));
        solve_core(cost, SRC_F64_SCALED, scale, n, row_to_col, work);
    } else {
        solve_core(cost, SRC_F64, 1.0, n, row_to_col, work);
    }

    if (total) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += cost[(size_t)i * (size_t)n + (size_t)row_to_col[i]];
        *total = s;
    }
    return 0;
}

int lwfm__assign_solve_f32(const float *cost, int n, int *row_to_col, double *total, double *work) {
    if (n < 1 || n > LWFM_ASSIGN_MAX_N || !cost || !row_to_col || !work) return -1;
    if (!scan_f32(cost, (size_t)n * (size_t)n)) return -1;
    /* |float| < 2^128: never needs scaling. */
    solve_core(cost, SRC_F32, 1.0, n, row_to_col, work);
    if (total) {
        double s = 0.0;
        for (int i = 0; i < n; i++)
            s += (double)cost[(size_t)i * (size_t)n + (size_t)row_to_col[i]];
        *total = s;
    }
    return 0;
}

LWFM_API lwfm_status lwfm_linear_assignment(const double *cost, int64_t n, int64_t *assignment,
                                            double *total_cost) {
    lwfm__error_clear();
    if (!cost || !assignment)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "lwfm_linear_assignment: %s is NULL",
                           !cost ? "cost" : "assignment");
    if (n < 1)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "lwfm_linear_assignment: n must be >= 1, got %lld", (long long)n);
    if (n > LWFM_ASSIGN_MAX_N)
        return lwfm__error(LWFM_ERR_LIMIT, "lwfm_linear_assignment: n = %lld exceeds the limit %d",
                           (long long)n, LWFM_ASSIGN_MAX_N);
    const int nn = (int)n;
    const size_t count = (size_t)nn * (size_t)nn;
    /* finite costs near DBL_MAX overflow in the solver's sums (a total of
     * -inf came back as LWFM_OK): magnitudes are bounded so that any sum of
     * 2n of them and their differences stays finite */
    const double bound = DBL_MAX / (16.0 * (double)nn);
    for (size_t k = 0; k < count; k++) {
        if (!isfinite(cost[k]))
            return lwfm__error(LWFM_ERR_NONFINITE,
                               "lwfm_linear_assignment: cost[%zu][%zu] is not finite (%g)",
                               k / (size_t)nn, k % (size_t)nn, cost[k]);
        if (fabs(cost[k]) > bound)
            return lwfm__error(LWFM_ERR_LIMIT,
                               "lwfm_linear_assignment: |cost[%zu][%zu]| = %g exceeds DBL_MAX / "
                               "(16 n) = %g",
                               k / (size_t)nn, k % (size_t)nn, fabs(cost[k]), bound);
    }

    /* One block: the double scratch, then the int matching. */
    const size_t wd = lwfm__assign_work_doubles(nn);
    void *block = lwfm__alloc(wd * sizeof(double) + (size_t)nn * sizeof(int));
    if (!block)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY,
                           "lwfm_linear_assignment: cannot allocate scratch for n = %d", nn);
    double *work = (double *)block;
    int *r2c = (int *)(work + wd);
    double total = 0.0;
    if (lwfm__assign_solve(cost, nn, r2c, &total, work) != 0) {
        lwfm__free(block);
        return lwfm__error(LWFM_ERR_INTERNAL, "lwfm_linear_assignment: solver rejected its input");
    }
    for (int i = 0; i < nn; i++) assignment[i] = r2c[i];
    if (total_cost) *total_cost = total;
    lwfm__free(block);
    return LWFM_OK;
}
