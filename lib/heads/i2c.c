/* Image-to-class top-k sums (see i2c.h). */
#include "heads/i2c.h"

#include <math.h>
#include "core/omp_compat.h"

#include "core/core.h"
#include "core/gemm.h"
#include "core/vec.h"
#include "heads/dn4.h"

/* Tile of one query image's vectors against one support image's, or against
 * several whole support images side by side when they are small: at most
 * TILE_ROWS x TILE_COLS floats (512 KiB), folded while it is in L2. */
#define TILE_ROWS 256
#define TILE_COLS 512

/* Insert v into the sorted (descending) list t of k values if it beats the
 * last one; returns the new last value. */
static inline float topk_insert(float *t, int k, float v) {
    int i = k - 1;
    while (i > 0 && t[i - 1] < v) {
        t[i] = t[i - 1];
        i--;
    }
    t[i] = v;
    return t[k - 1];
}

/* Lists up to this long are kept per vector lane while a row is scanned. */
#define LANE_TOPK_MAX 8

/* Fold a tile's rows into the sorted (descending) top-k lists of one class
 * (or one support image); row a of the tile starts at tile + a * ld. Its list
 * for row a is top + (a * lists + list) * k. For k <=
 * LANE_TOPK_MAX each of 16 lanes keeps its own top k of the row, branch-free
 * (a max / min network), and only those 16 k candidates are then merged into
 * the list: a row's top k are among them. */
LWFM_MULTIARCH static void fold_tile(const float *tile, int64_t rows, int64_t cols, int64_t ld,
                                     float *top, int64_t lists, int k, int list) {
    for (int64_t a = 0; a < rows; a++) {
        const float *r = tile + a * ld;
        float *t = top + (a * lists + list) * k;
        float thr = t[k - 1];
        int64_t p = 0;
        if (k <= LANE_TOPK_MAX && cols >= 16) {
            lwfm__v16 lane[LANE_TOPK_MAX];
            for (int i = 0; i < k; i++) lane[i] = LWFM_V16(-INFINITY);
            for (; p + 16 <= cols; p += 16) {
                lwfm__v16 v = lwfm__v16_load(r + p);
                for (int i = 0; i < k; i++) { /* v sinks to the first level it does not beat */
                    const lwfm__v16i up = v > lane[i];
                    const lwfm__v16 hi = lwfm__v16_select(up, v, lane[i]);
                    v = lwfm__v16_select(up, lane[i], v);
                    lane[i] = hi;
                }
            }
            for (int i = 0; i < k; i++)
                for (int l = 0; l < 16; l++)
                    if (lane[i][l] > thr) thr = topk_insert(t, k, lane[i][l]);
        }
        for (; p < cols; p++)
            if (r[p] > thr) thr = topk_insert(t, k, r[p]);
    }
}

int lwfm__i2c_per_image(const int64_t *count, int64_t way) {
    for (int64_t c = 1; c < way; c++)
        if (count[c] != count[0]) return 1;
    return 0;
}

int64_t lwfm__i2c_images(const int64_t *count, int64_t way) {
    return lwfm__i2c_per_image(count, way) ? 1 : lwfm__fewest_in_class(count, way);
}

/* One query's scores from its top-k lists: lists per class (pooled), or per
 * support image, averaged over each class's images. */
static void sum_lists(const float *top, int64_t mq, int64_t lists, int k,
                      const int32_t *labels, const int64_t *count, int64_t way, int per_image,
                      double *o) {
    for (int64_t c = 0; c < way; c++) o[c] = 0.0;
    /* each vector's top-k summed in float, the vectors' sums in double */
    for (int64_t a = 0; a < mq; a++)
        for (int64_t l = 0; l < lists; l++) {
            const float *t = top + (a * lists + l) * k;
            float s = 0.0f;
            for (int i = 0; i < k; i++) s += t[i];
            o[per_image ? labels[l] : l] += s;
        }
    if (per_image)
        for (int64_t c = 0; c < way; c++) o[c] /= (double)count[c];
}

lwfm_status lwfm__i2c_topk(dnnl_engine_t engine, const float *Qv, int64_t n_q, int64_t mq,
                           const float *Sv, int64_t n_s, int64_t ms, int64_t dim,
                           const int32_t *labels, const int64_t *count, int64_t way, int k,
                           double *out, lwfm__arena *arena, int slot) {
    int threads = omp_get_max_threads();
    const int per_image = lwfm__i2c_per_image(count, way);
    const int64_t lists = per_image ? n_s : way;   /* top-k lists per query vector */
    /* Row blocks of near-equal size (<= TILE_ROWS), column blocks of TILE_COLS. */
    int64_t row_blocks = (mq + TILE_ROWS - 1) / TILE_ROWS;
    int64_t rb = (mq + row_blocks - 1) / row_blocks;
    /* Small support images go several to a GEMM (group of them side by
     * side, as many as fill the tile: one oneDNN call per image would cost
     * more than its arithmetic for a gallery of small maps); a large one is
     * cut into column blocks of TILE_COLS. */
    const int64_t tile_cols = (int64_t)TILE_ROWS * TILE_COLS / rb;
    int64_t group = ms <= tile_cols ? tile_cols / ms : 1;
    if (group > n_s) group = n_s;
    int64_t cb = group > 1 ? group * ms : (ms < TILE_COLS ? ms : TILE_COLS);
    size_t tile_floats = ((size_t)rb * cb + 15) / 16 * 16;
    size_t top_floats = ((size_t)mq * lists * k + 15) / 16 * 16;
    size_t per_thread = (tile_floats + top_floats) * sizeof(float);
    per_thread = (per_thread + 63) / 64 * 64;
    char *scratch = lwfm__arena_get(arena, slot, per_thread * (size_t)threads);
    if (!scratch)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY,
                           "out of memory for image-to-class similarities (%lld queries)",
                           (long long)n_q);
    lwfm_status st = LWFM_OK;
#pragma omp parallel
    {
        float *tile = (float *)(scratch + per_thread * (size_t)omp_get_thread_num());
        float *top = tile + tile_floats;
        dnnl_stream_t stream = NULL;
        lwfm_status my = LWFM_OK;
        if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success)
            my = LWFM_ERR_BACKEND;
#pragma omp for schedule(dynamic, 1)
        for (int64_t q = 0; q < n_q; q++) {
            if (my) continue;
            const float *xq = Qv + q * mq * dim;
            for (size_t i = 0; i < (size_t)mq * lists * k; i++) top[i] = -INFINITY;
            for (int64_t j0 = 0; j0 < n_s && !my; j0 += group) {
                const int64_t nj = n_s - j0 < group ? n_s - j0 : group;
                const float *xs = Sv + j0 * ms * dim;
                for (int64_t a0 = 0; a0 < mq && !my; a0 += rb) {
                    int64_t rows = mq - a0 < rb ? mq - a0 : rb;
                    if (group > 1) { /* nj whole images in one tile */
                        my = lwfm__gemm_abt(engine, stream, rows, nj * ms, dim, xq + a0 * dim, dim,
                                            xs, dim, tile, nj * ms, 0);
                        for (int64_t i = 0; i < nj && !my; i++)
                            fold_tile(tile + i * ms, rows, ms, nj * ms, top + a0 * lists * k,
                                      lists, k, per_image ? (int)(j0 + i) : labels[j0 + i]);
                        continue;
                    }
                    for (int64_t p0 = 0; p0 < ms; p0 += cb) {
                        int64_t cols = ms - p0 < cb ? ms - p0 : cb;
                        my = lwfm__gemm_abt(engine, stream, rows, cols, dim, xq + a0 * dim, dim,
                                            xs + p0 * dim, dim, tile, cols, 0);
                        if (my) break;
                        fold_tile(tile, rows, cols, cols, top + a0 * lists * k, lists, k,
                                  per_image ? (int)j0 : labels[j0]);
                    }
                }
            }
            if (my) continue;
            sum_lists(top, mq, lists, k, labels, count, way, per_image, out + q * way);
        }
        if (stream) dnnl_stream_destroy(stream);
        if (my) {
#pragma omp critical
            if (!st) st = my;
        }
    }
    /* a worker's detail is on its own thread: state it on the caller's */
    if (st) return lwfm__error(st, "image-to-class similarities: a oneDNN matmul failed");
    return LWFM_OK;
}
