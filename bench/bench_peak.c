/* oneDNN fp32 matmul throughput on this machine: the yardstick for the
 * backbone's GFLOP/s (bench/bench_backbone.py prints both).
 *
 *   bench_peak [N] [reps]      (square N x N x N, default 2048, 10 reps)
 *
 * Weights are pre-packed in the layout oneDNN picks (format `any`), so this
 * is the best case of oneDNN's f32 GEMM. Prints the best GFLOP/s. */
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if ((x) != dnnl_success) {                                                                 \
            fprintf(stderr, "oneDNN call failed: %s\n", #x);                                       \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

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
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t a_md, b_md, c_md, b_plain;
    dnnl_dims_t d = {n, n};
    CHECK(dnnl_memory_desc_init_by_tag(&a_md, 2, d, dnnl_f32, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&b_md, 2, d, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&b_plain, 2, d, dnnl_f32, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&c_md, 2, d, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    CHECK(dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md));
    CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL));
    CHECK(dnnl_primitive_create(&prim, pd));
    const dnnl_memory_desc_t *b_best = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t ma, mb, mc;
    CHECK(dnnl_memory_create(&ma, &a_md, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&mb, b_best, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&mc, &c_md, eng, DNNL_MEMORY_ALLOCATE));
    float *a;
    CHECK(dnnl_memory_get_data_handle(ma, (void **)&a));
    for (int64_t i = 0; i < n * n; i++) a[i] = (float)((i % 17) - 8) / 8.0f;
    /* B's layout does not matter for timing, only that it holds normal floats */
    float *b;
    CHECK(dnnl_memory_get_data_handle(mb, (void **)&b));
    size_t b_count = dnnl_memory_desc_get_size(b_best) / sizeof(float);
    for (size_t i = 0; i < b_count; i++) b[i] = 0.25f;
    (void)b_plain;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
    double best = 0;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        CHECK(dnnl_primitive_execute(prim, stream, 3, args));
        CHECK(dnnl_stream_wait(stream));
        double gf = 2.0 * n * n * n / (now() - t0) / 1e9;
        if (r > 0 && gf > best) best = gf;
    }
    printf("%.1f\n", best);
    dnnl_memory_destroy(ma);
    dnnl_memory_destroy(mb);
    dnnl_memory_destroy(mc);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    return 0;
}
