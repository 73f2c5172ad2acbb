/* Exact linear assignment (minimum-cost perfect matching of an n x n cost
 * matrix) for the SPM matcher: a shortest-augmenting-path Hungarian
 * algorithm (Jonker-Volgenant style, dual potentials u and v), O(n^3) in
 * the worst case. Re-entrant and allocation-free: all scratch is supplied by
 * the caller, so any number of threads may solve independent problems at
 * once. Private to liblwfm except lwfm_linear_assignment(), the public
 * wrapper (also declared in lwfm/lwfm.h). */
#ifndef LWFM_SPM_ASSIGN_H
#define LWFM_SPM_ASSIGN_H

#include <stddef.h>
#include <stdint.h>

#include "lwfm/lwfm.h"

#define LWFM_ASSIGN_MAX_N 4096

/* Scratch doubles for an n x n problem, as a constant expression for arrays
 * sized at compile time (e.g. double work[LWFM_ASSIGN_WORK_DOUBLES(49)]). */
#define LWFM_ASSIGN_WORK_DOUBLES(n) ((size_t)7 * (size_t)(n))

/* Number of doubles of scratch lwfm__assign_solve needs for an n x n
 * problem: LWFM_ASSIGN_WORK_DOUBLES(n) = 7 * n (0 when n is out of range).
 * Any memory suitably aligned for double works (a stack array is fine);
 * every working array, the index arrays included, is stored as double
 * (indices are exact below 2^53), so the buffer is only ever accessed as
 * double. Its contents on entry do not matter. */
size_t lwfm__assign_work_doubles(int n);

/* Minimum-cost perfect assignment of the n x n row-major cost matrix (n >= 1,
 * n <= LWFM_ASSIGN_MAX_N). row_to_col[i] receives the column of row i;
 * *total (may be NULL) the sum of the chosen costs, accumulated in double in
 * row order (sum over i = 0..n-1 of cost[i * n + row_to_col[i]]; it may
 * overflow to +-inf for costs near DBL_MAX although the assignment is still
 * computed). `work` holds lwfm__assign_work_doubles(n) doubles (caller-owned;
 * the function never allocates and keeps no state, so concurrent calls with
 * distinct work buffers are safe). Returns 0 on success, -1 if any cost is
 * NaN or infinite, n is out of range or cost/row_to_col/work is NULL
 * (outputs untouched then). Deterministic: the same input gives the same
 * assignment, bit for bit. Ties (many equal costs), all-zero matrices,
 * constant rows/columns, negative costs and huge magnitudes (e.g. 1e30 mixed
 * with 1e-30) are handled; matrices whose largest magnitude exceeds 2^960 are
 * scaled by an exact power of two internally so that no intermediate
 * overflows. No epsilon is used anywhere: the result is optimal up to the
 * rounding of the reduced costs (about n * DBL_EPSILON * max|cost|), and
 * exactly optimal when all intermediate sums are exact, e.g. for integer
 * costs with |cost| <= 2^53 / (8 n). */
int lwfm__assign_solve(const double *cost, int n, int *row_to_col, double *total, double *work);

/* float convenience (costs converted to double internally, element by
 * element; no copy of the matrix; same contract, same work size). */
int lwfm__assign_solve_f32(const float *cost, int n, int *row_to_col, double *total, double *work);

/* Public wrapper; see lwfm/lwfm.h. */
LWFM_API lwfm_status lwfm_linear_assignment(const double *cost, int64_t n, int64_t *assignment,
                                            double *total_cost);

#endif
