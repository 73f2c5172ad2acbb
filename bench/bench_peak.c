/* oneDNN fp32 matmul throughput on this machine: the yardstick for the
 * backbone's GFLOP/s (bench/bench_backbone.py prints both).
 *
 *   bench_peak [N] [reps]      (square N x N x N, default 2048, 10 reps)
 *
 * Prints the best GFLOP/s over the repetitions. */
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/core.h"
#include "core/gemm.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int64_t n = argc > 1 ? atoll(argv[1]) : 2048;
    int reps = argc > 2 ? atoi(argv[2]) : 10;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) || dnnl_stream_create(&stream, eng, dnnl_stream_default_flags))
        return 1;
    float *a = lwfm__alloc((size_t)n * n * sizeof(float));
    float *b = lwfm__alloc((size_t)n * n * sizeof(float));
    float *c = lwfm__alloc((size_t)n * n * sizeof(float));
    if (!a || !b || !c) return 1;
    for (int64_t i = 0; i < n * n; i++) a[i] = b[i] = (float)((i % 17) - 8) / 8.0f;
    double best = 0;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        if (lwfm__gemm_abt(eng, stream, n, n, n, a, n, b, n, c, n, 0)) {
            fprintf(stderr, "matmul failed: %s\n", lwfm_last_error());
            return 1;
        }
        double gf = 2.0 * n * n * n / (now() - t0) / 1e9;
        if (r > 0 && gf > best) best = gf; /* r = 0 creates the primitive */
    }
    printf("%.1f\n", best);
    lwfm__free(a);
    lwfm__free(b);
    lwfm__free(c);
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    return 0;
}
