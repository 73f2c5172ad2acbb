/* DN4 image-to-class measure (peers.md section 2), see dn4.h. */
#include "heads/dn4.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/core.h"
#include "core/gemm.h"

#define NORM_EPS 1e-12
/* Tile of one query's descriptors against one support image's: at most
 * TILE_ROWS x TILE_COLS floats (512 KiB), so it is folded while in L2. */
#define TILE_ROWS 256
#define TILE_COLS 512

void lwfm__dn4_prepare_image(const float *feat, int C, int64_t P, float *U) {
    for (int64_t p = 0; p < P; p++) {
        float *u = U + p * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) {
            float v = feat[(int64_t)c * P + p];
            u[c] = v;
            ss += (double)v * v;
        }
        double norm = sqrt(ss);
        float inv = (float)(1.0 / (norm > NORM_EPS ? norm : NORM_EPS));
        for (int c = 0; c < C; c++) u[c] *= inv;
    }
}

int64_t lwfm__dn4_max_k(const side *S, const int64_t *count, int64_t way) {
    int64_t fewest = INT64_MAX;
    for (int64_t c = 0; c < way; c++)
        if (count[c] < fewest) fewest = count[c];
    return fewest * S->P;
}

/* Fold a tile's rows into the sorted (descending) top-k lists of one class.
 * top: rows x (way * k); the class's list of row a is top + a * way * k + cls * k. */
static void fold_tile(const float *tile, int64_t rows, int64_t cols, int64_t ld, float *top,
                      int64_t way, int k, int cls) {
    for (int64_t a = 0; a < rows; a++) {
        const float *r = tile + a * ld;
        float *t = top + (a * way + cls) * k;
        float thr = t[k - 1];
        for (int64_t p = 0; p < cols; p++) {
            float v = r[p];
            if (v > thr) {
                int i = k - 1;
                while (i > 0 && t[i - 1] < v) {
                    t[i] = t[i - 1];
                    i--;
                }
                t[i] = v;
                thr = t[k - 1];
            }
        }
    }
}

lwfm_status lwfm__dn4_score(const lwfm_model *m, const side *S, const int32_t *labels,
                            int64_t way, const side *Q, float *logits, lwfm__arena *arena) {
    const int C = m->layers.C, k = m->cfg.neighbor_k;
    const int64_t Pq = Q->P, Ps = S->P;
    int threads = omp_get_max_threads();
    /* Row blocks of near-equal size (<= TILE_ROWS), column blocks of TILE_COLS. */
    int64_t row_blocks = (Pq + TILE_ROWS - 1) / TILE_ROWS;
    int64_t rb = (Pq + row_blocks - 1) / row_blocks;
    int64_t cb = Ps < TILE_COLS ? Ps : TILE_COLS;
    size_t tile_floats = ((size_t)rb * cb + 15) / 16 * 16;
    size_t top_floats = ((size_t)Pq * way * k + 15) / 16 * 16;
    size_t per_thread = (tile_floats + top_floats) * sizeof(float) + (size_t)way * sizeof(double);
    per_thread = (per_thread + 63) / 64 * 64;
    char *scratch = lwfm__arena_get(arena, LWFM_SLOT_R, per_thread * (size_t)threads);
    if (!scratch)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring %lld queries (DN4)",
                           (long long)Q->n);
    lwfm_status st = LWFM_OK;
#pragma omp parallel
    {
        char *mine = scratch + per_thread * (size_t)omp_get_thread_num();
        float *tile = (float *)mine;
        float *top = tile + tile_floats;
        double *acc = (double *)(top + top_floats);
        dnnl_stream_t stream = NULL;
        lwfm_status my = LWFM_OK;
        if (dnnl_stream_create(&stream, m->engine, dnnl_stream_default_flags) != dnnl_success)
            my = lwfm__error(LWFM_ERR_BACKEND, "oneDNN: stream create failed");
#pragma omp for schedule(dynamic, 1)
        for (int64_t q = 0; q < Q->n; q++) {
            if (my) continue;
            const float *xq = Q->U + q * Pq * C;
            for (size_t i = 0; i < (size_t)Pq * way * k; i++) top[i] = -INFINITY;
            for (int64_t j = 0; j < S->n && !my; j++) {
                const float *xs = S->U + j * Ps * C;
                for (int64_t a0 = 0; a0 < Pq && !my; a0 += rb) {
                    int64_t rows = Pq - a0 < rb ? Pq - a0 : rb;
                    for (int64_t p0 = 0; p0 < Ps; p0 += cb) {
                        int64_t cols = Ps - p0 < cb ? Ps - p0 : cb;
                        my = lwfm__gemm_abt(m->engine, stream, rows, cols, C, xq + a0 * C, C,
                                            xs + p0 * C, C, tile, cols, 0);
                        if (my) break;
                        fold_tile(tile, rows, cols, cols, top + a0 * way * k, way, k, labels[j]);
                    }
                }
            }
            if (my) continue;
            for (int64_t c = 0; c < way; c++) acc[c] = 0.0;
            for (int64_t a = 0; a < Pq; a++)
                for (int64_t c = 0; c < way; c++) {
                    const float *t = top + (a * way + c) * k;
                    float s = 0.0f;
                    for (int i = 0; i < k; i++) s += t[i];
                    acc[c] += s;
                }
            for (int64_t c = 0; c < way; c++) logits[q * way + c] = (float)acc[c];
        }
        if (stream) dnnl_stream_destroy(stream);
        if (my) {
#pragma omp critical(lwfm_dn4_status)
            if (!st) st = my;
        }
    }
    /* the detail was recorded on a worker thread: restate it on the caller's */
    if (st) return lwfm__error(st, "DN4 scoring: a oneDNN matmul failed");
    return LWFM_OK;
}
