/* oneDNN matmul wrapper (see gemm.h). */
#include "core/gemm.h"

#include "core/core.h"

#define CHECK(call, what)                                                                          \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            st = lwfm__error(LWFM_ERR_BACKEND, "oneDNN matmul: %s failed (dnnl status %d)", what,  \
                             (int)s_);                                                             \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

static lwfm_status gemm(dnnl_engine_t engine, dnnl_stream_t stream, int64_t M, int64_t N, int64_t K,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float *C,
                        int64_t ldc, int relu) {
    lwfm_status st = LWFM_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, ms = NULL;
    void *scratch = NULL;
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t ad = {M, K}, as = {lda, 1};
    dnnl_dims_t bd = {K, N}, bs = {1, ldb}; /* B^T as a (K, N) view of B */
    dnnl_dims_t cd = {M, N}, cs = {ldc, 1};
    CHECK(dnnl_memory_desc_init_by_strides(&a_md, 2, ad, dnnl_f32, as), "src md");
    CHECK(dnnl_memory_desc_init_by_strides(&b_md, 2, bd, dnnl_f32, bs), "weights md");
    CHECK(dnnl_memory_desc_init_by_strides(&c_md, 2, cd, dnnl_f32, cs), "dst md");
    CHECK(dnnl_primitive_attr_create(&attr), "attr");
    CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad");
    if (relu) {
        CHECK(dnnl_post_ops_create(&po), "post-ops");
        CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f), "relu");
        CHECK(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops");
    }
    dnnl_matmul_desc_t desc;
    CHECK(dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md), "desc");
    CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL), "primitive desc");
    CHECK(dnnl_primitive_create(&prim, pd), "primitive");
    const dnnl_memory_desc_t *s_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t s_bytes = dnnl_memory_desc_get_size(s_md);
    if (s_bytes && !(scratch = lwfm__alloc(s_bytes))) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (matmul scratchpad)");
        goto done;
    }
    CHECK(dnnl_memory_create(&ma, &a_md, engine, (void *)A), "memory");
    CHECK(dnnl_memory_create(&mb, &b_md, engine, (void *)B), "memory");
    CHECK(dnnl_memory_create(&mc, &c_md, engine, C), "memory");
    CHECK(dnnl_memory_create(&ms, s_md, engine, scratch), "memory");
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}, {DNNL_ARG_SCRATCHPAD, ms}};
    CHECK(dnnl_primitive_execute(prim, stream, 4, args), "execute");
    CHECK(dnnl_stream_wait(stream), "wait");
done:
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    if (ms) dnnl_memory_destroy(ms);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    lwfm__free(scratch);
    return st;
}

lwfm_status lwfm__gemm_abt(dnnl_engine_t engine, dnnl_stream_t stream, int64_t M, int64_t N,
                           int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                           float *C, int64_t ldc, int relu) {
    return gemm(engine, stream, M, N, K, A, lda, B, ldb, C, ldc, relu);
}
