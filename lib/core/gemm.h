/* Single-precision C = op(A * B^T) on oneDNN's matmul, for the peer heads
 * (DN4 / MML image-to-class similarities, RCN). The LWFM-SPM metric calls
 * dnnl_sgemm directly, single-threaded inside its own parallel regions.
 * Private to liblwfm. */
#ifndef LWFM_CORE_GEMM_H
#define LWFM_CORE_GEMM_H

#include <dnnl.h>
#include <stdint.h>

#include "lwfm/lwfm.h"

/* C[i][j] = sum_k A[i*lda + k] * B[j*ldb + k]   (i < M, j < N, k < K),
 * written to C[i*ldc + j]; with relu != 0, C = max(C, 0).
 * Uses oneDNN's primitive cache, so repeated shapes cost no re-creation.
 * Safe to call from several threads with distinct outputs and streams. */
lwfm_status lwfm__gemm_abt(dnnl_engine_t engine, dnnl_stream_t stream, int64_t M, int64_t N,
                           int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                           float *C, int64_t ldc, int relu);

#endif
