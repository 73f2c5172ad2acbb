/* Backbone execution on oneDNN (v2 C API).
 *
 * A backbone is a list of ops (convolution with folded BatchNorm, bias,
 * activation and optional residual accumulation fused as oneDNN post-ops;
 * max pooling) over a few activation buffers kept in oneDNN's blocked layout.
 * Some op outputs are "taps": they are reordered to plain NCHW and
 * adaptively average-pooled (PyTorch's bin rule) into the caller's output.
 *
 * A plan holds the primitives for one input shape (chunk size, h, w); a
 * context keeps a few plans, the activation buffers and the scratchpad, and
 * is used by one thread at a time. The net itself is immutable after build.
 */
#include <math.h>
#include "core/omp_compat.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/net_internal.h"
#include "core/core.h"

/* Images per forward chunk: bounds activation memory for large batches and
 * keeps a chunk's activations in cache. With the Winograd kernels the wide
 * layers' transformed weights (26 MB for ResNet-18's layer4) are read once
 * per chunk, so 8 images run ResNet-18 1.1-1.2x faster than 4 on one thread
 * (Conv-64F the same); 80 images still give 10 chunks to share among
 * threads. LWFM_BATCH_CHUNK overrides. */
#define LWFM_DEFAULT_CHUNK 8
#define LWFM_MAX_PLANS 8
#define BN_EPS 1e-5

#define DNNL_CHECK(call, what)                                                                     \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            st = lwfm__error(LWFM_ERR_BACKEND, "oneDNN: %s failed (dnnl status %d)", what,         \
                             (int)s_);                                                             \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Building                                                                 */

static lwfm__op *push_op(lwfm__net *net) {
    if (net->n_ops == net->cap_ops) {
        int cap = net->cap_ops ? net->cap_ops * 2 : 32;
        lwfm__op *ops = realloc(net->ops, (size_t)cap * sizeof *ops);
        if (!ops) return NULL;
        net->ops = ops;
        net->cap_ops = cap;
    }
    lwfm__op *op = &net->ops[net->n_ops++];
    memset(op, 0, sizeof *op);
    op->tap = -1;
    return op;
}

lwfm_status lwfm__net_add_conv(lwfm__net *net, const lwfm__archive *ar, const char *conv_key,
                               const char *bias_key, const char *bn_prefix, int ic, int oc, int k,
                               int stride, int pad, int src, int dst, int accumulate, lwfm__act act,
                               float alpha) {
    lwfm_status st;
    const float *w, *b = NULL, *g = NULL, *beta = NULL, *mu = NULL, *var = NULL;
    int64_t wshape[4] = {oc, ic, k, k}, vshape[1] = {oc};
    if ((st = lwfm__archive_get_f32(ar, conv_key, 4, wshape, &w))) return st;
    if (bias_key && (st = lwfm__archive_get_f32(ar, bias_key, 1, vshape, &b))) return st;
    if (bn_prefix) {
        char key[160];
        const float **dst_ptrs[4] = {&g, &beta, &mu, &var};
        static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.%s", bn_prefix, suffix[i]);
            if ((st = lwfm__archive_get_f32(ar, key, 1, vshape, dst_ptrs[i]))) return st;
        }
        for (int o = 0; o < oc; o++)
            if (!(var[o] >= 0.0f))
                return lwfm__error(LWFM_ERR_FORMAT, "tensor '%s.running_var' has a negative value",
                                   bn_prefix);
    }
    lwfm__op *op = push_op(net);
    if (!op) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory building the backbone");
    op->kind = LWFM_OP_CONV;
    op->src = src;
    op->dst = dst;
    op->accumulate = accumulate;
    op->ic = ic;
    op->oc = oc;
    op->kh = op->kw = k;
    op->sh = op->sw = stride;
    op->ph = op->pw = pad;
    op->act = act;
    op->alpha = alpha;
    snprintf(op->name, sizeof op->name, "%s", conv_key);
    op->conv_index = net->n_convs++;
    if ((st = lwfm__quant_read(op, ar))) return st;
    size_t per_oc = (size_t)ic * k * k;
    op->w_plain = lwfm__alloc((size_t)oc * per_oc * sizeof(float));
    op->bias = lwfm__alloc((size_t)oc * sizeof(float));
    if (!op->w_plain || !op->bias)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory building the backbone");
    if (bn_prefix && net->bn_batch) {
        op->bn_g = lwfm__alloc((size_t)oc * sizeof(float));
        op->bn_b = lwfm__alloc((size_t)oc * sizeof(float));
        if (!op->bn_g || !op->bn_b)
            return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory building the backbone");
        memcpy(op->bn_g, g, (size_t)oc * sizeof(float));
        memcpy(op->bn_b, beta, (size_t)oc * sizeof(float));
    }
    /* Fold eval-mode BatchNorm: y = (conv(x) + b - mu) * g / sqrt(var + eps) + beta
     * (batch statistics: the conv alone, the BatchNorm runs after it). */
    for (int o = 0; o < oc; o++) {
        double scale = 1.0, shift = b ? b[o] : 0.0;
        if (bn_prefix && !net->bn_batch) {
            scale = g[o] / sqrt((double)var[o] + BN_EPS);
            shift = (shift - mu[o]) * scale + beta[o];
        }
        for (size_t i = 0; i < per_oc; i++)
            op->w_plain[o * per_oc + i] = (float)(w[o * per_oc + i] * scale);
        op->bias[o] = (float)shift;
        /* finite tensors can fold to infinity (a large weight over a zero
         * running_var): refuse the file here, naming the tensors, rather than
         * every later call blaming the caller's pixels */
        if (!isfinite(op->bias[o]) || !lwfm__all_finite(op->w_plain + o * per_oc, per_oc))
            return lwfm__error(LWFM_ERR_FORMAT,
                               "tensor '%s'%s%s%s: output channel %d overflows float32 (%s); "
                               "weights must stay finite",
                               conv_key, bn_prefix ? " with BatchNorm '" : "",
                               bn_prefix ? bn_prefix : "", bn_prefix ? "'" : "", o,
                               bn_prefix && !net->bn_batch
                                   ? "folded as weight / sqrt(running_var + eps)"
                                   : "convolution weight or bias");
    }
    return LWFM_OK;
}

lwfm_status lwfm__net_add_maxpool(lwfm__net *net, int channels, int k, int stride, int pad, int src,
                                  int dst) {
    lwfm__op *op = push_op(net);
    if (!op) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory building the backbone");
    op->kind = LWFM_OP_MAXPOOL;
    op->src = src;
    op->dst = dst;
    op->ic = op->oc = channels;
    op->kh = op->kw = k;
    op->sh = op->sw = stride;
    op->ph = op->pw = pad;
    snprintf(op->name, sizeof op->name, "maxpool");
    return LWFM_OK;
}

void lwfm__net_mark_tap(lwfm__net *net, int slot) {
    if (net->n_ops > 0) net->ops[net->n_ops - 1].tap = slot;
}

void lwfm__net_tap_block(lwfm__net *net, const lwfm__config *cfg, int block, int channels) {
    for (int t = 0; t < cfg->n_taps; t++)
        if (cfg->hyperpixel_ids[t] == block) {
            lwfm__net_mark_tap(net, t);
            net->tap_channels[t] = channels;
            if (t + 1 > net->n_taps) net->n_taps = t + 1;
        }
}

/* ------------------------------------------------------------------------ */
/* Shapes                                                                   */

static int64_t out_dim(int64_t in, int k, int s, int p) {
    int64_t span = in + 2 * (int64_t)p - k;
    return span < 0 ? 0 : span / s + 1;
}

/* Walk the op list for an input of h x w; fills per-op output sizes
 * (arrays of n_ops, may be NULL). Fails with LWFM_ERR_SHAPE when a layer
 * would get an empty input. */
static lwfm_status walk_shapes(const lwfm__net *net, int64_t h, int64_t w, int64_t *oh,
                               int64_t *ow) {
    int64_t bh[LWFM_NET_NBUF] = {0}, bw[LWFM_NET_NBUF] = {0};
    for (int i = 0; i < net->n_ops; i++) {
        const lwfm__op *op = &net->ops[i];
        int64_t ih = op->src == LWFM_NET_INPUT ? h : bh[op->src];
        int64_t iw = op->src == LWFM_NET_INPUT ? w : bw[op->src];
        int64_t h2 = out_dim(ih, op->kh, op->sh, op->ph), w2 = out_dim(iw, op->kw, op->sw, op->pw);
        if (ih < 1 || iw < 1 || h2 < 1 || w2 < 1)
            return lwfm__error(LWFM_ERR_SHAPE,
                               "input of %lld x %lld pixels is too small for this backbone "
                               "('%s' would get %lld x %lld)",
                               (long long)h, (long long)w, op->name, (long long)h2, (long long)w2);
        if (op->accumulate && (bh[op->dst] != h2 || bw[op->dst] != w2))
            return lwfm__error(LWFM_ERR_INTERNAL, "residual shape mismatch at '%s'", op->name);
        bh[op->dst] = h2;
        bw[op->dst] = w2;
        if (oh) oh[i] = h2;
        if (ow) ow[i] = w2;
    }
    return LWFM_OK;
}

lwfm_status lwfm__net_out_shape(const lwfm__net *net, int64_t h, int64_t w, int64_t *c, int64_t *fh,
                                int64_t *fw) {
    if (h < 1 || w < 1 || h > 65536 || w > 65536)
        return lwfm__error(LWFM_ERR_SHAPE, "image size %lld x %lld out of range (1..65536)",
                           (long long)h, (long long)w);
    int64_t oh[256], ow[256];
    if (net->n_ops > 256) return lwfm__error(LWFM_ERR_INTERNAL, "too many ops");
    lwfm_status st = walk_shapes(net, h, w, oh, ow);
    if (st) return st;
    int64_t th = -1, tw = -1;
    for (int i = 0; i < net->n_ops; i++) {
        if (net->ops[i].tap < 0) continue;
        if (net->feature_size > 0) continue;
        if (th >= 0 && (th != oh[i] || tw != ow[i]))
            return lwfm__error(
                LWFM_ERR_SHAPE,
                "feature_size 0 keeps taps at native size, but for a %lld x %lld "
                "input the tapped layers differ in size (%lld x %lld vs %lld x %lld)",
                (long long)h, (long long)w, (long long)th, (long long)tw, (long long)oh[i],
                (long long)ow[i]);
        th = oh[i];
        tw = ow[i];
    }
    *c = net->out_channels;
    *fh = net->feature_size > 0 ? net->feature_size : th;
    *fw = net->feature_size > 0 ? net->feature_size : tw;
    return LWFM_OK;
}

int lwfm__net_tap_channels(const lwfm__net *net, int tap) {
    return net->tap_channels[tap];
}

/* ------------------------------------------------------------------------ */
/* Primitive creation                                                       */

static dnnl_data_type_t act_dt(const lwfm__net *net) {
    return net->precision == LWFM_PRECISION_BF16 ? dnnl_bf16 : dnnl_f32;
}

/* Memory descriptor of an activation buffer, in the net's layout. */
static void act_md(const lwfm__net *net, dnnl_memory_desc_t *md, int64_t n, int64_t c, int64_t h,
                   int64_t w, dnnl_data_type_t dt) {
    dnnl_dims_t d = {n, c, h, w};
    dnnl_memory_desc_init_by_tag(md, 4, d, dt, net->act_tag);
}

/* Whether oneDNN has an optimised (non-reference) kernel for pd. */
static int is_fast(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return 0;
    return strncmp(impl, "ref", 3) != 0;
}

/* The activation layout for this CPU (and ONEDNN_MAX_CPU_ISA): the first of
 * nChw16c (AVX-512 kernels), nChw8c (AVX2 / SSE4.1 kernels) and nhwc for
 * which a probe convolution gets an optimised kernel. A layout the CPU's
 * kernels do not take would send oneDNN to its slow reference convolution.
 * When no layout gets a convolution at all (bf16 on a CPU without AVX-512:
 * oneDNN 2.6 has no bf16 kernel, not even a reference one, below it), the
 * precision is refused here, at load, rather than at the first call. */
static lwfm_status pick_act_tag(dnnl_engine_t eng, dnnl_data_type_t dt,
                                dnnl_format_tag_t *tag) {
    static const dnnl_format_tag_t candidates[] = {dnnl_nChw16c, dnnl_nChw8c, dnnl_nhwc};
    dnnl_dims_t sd = {16, 64, 21, 21}, wd = {64, 64, 3, 3}, one = {1, 1};
    int any = 0;
    *tag = dnnl_nhwc;
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        dnnl_memory_desc_t act, wmd;
        dnnl_convolution_desc_t cd;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_memory_desc_init_by_tag(&act, 4, sd, dt, candidates[i]);
        dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dt, dnnl_format_tag_any);
        if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                               &act, &wmd, NULL, &act, one, one,
                                               one) == dnnl_success &&
            dnnl_primitive_desc_create(&pd, &cd, NULL, eng, NULL) == dnnl_success) {
            int fast = is_fast(pd);
            dnnl_primitive_desc_destroy(pd);
            any = 1;
            if (fast) {
                *tag = candidates[i];
                return LWFM_OK;
            }
        }
    }
    if (!any && dt == dnnl_bf16)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "bf16 needs a CPU with AVX-512 (oneDNN has no bf16 convolution for "
                           "this one); load the model with the fp32 precision");
    return LWFM_OK;
}

static lwfm_status make_attr(dnnl_primitive_attr_t *attr, const lwfm__op *op) {
    lwfm_status st = LWFM_OK;
    dnnl_post_ops_t po = NULL;
    *attr = NULL;
    DNNL_CHECK(dnnl_primitive_attr_create(attr), "attr create");
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user),
               "scratchpad mode");
    if (op->q) /* per output channel: dimension 1 of the destination */
        DNNL_CHECK(dnnl_primitive_attr_set_output_scales(*attr, op->oc, 1 << 1, op->oscale),
                   "output scales");
    /* batch-statistics BatchNorm: the sum and activation come after it */
    if (op->kind == LWFM_OP_CONV && !op->bn_g && (op->accumulate || op->act != LWFM_ACT_NONE)) {
        DNNL_CHECK(dnnl_post_ops_create(&po), "post-ops create");
        if (op->accumulate) DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f), "sum post-op");
        if (op->act != LWFM_ACT_NONE)
            DNNL_CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu,
                                                    op->act == LWFM_ACT_LRELU ? op->alpha : 0.0f,
                                                    0.0f),
                       "eltwise post-op");
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(*attr, po), "set post-ops");
    }
done:
    if (po) dnnl_post_ops_destroy(po);
    if (st && *attr) {
        dnnl_primitive_attr_destroy(*attr);
        *attr = NULL;
    }
    return st;
}

/* Primitive descriptor of op i for a batch of n with input ih x iw. */
static lwfm_status op_pd(const lwfm__net *net, const lwfm__op *op, int64_t n, int64_t ih,
                         int64_t iw, dnnl_primitive_desc_t *pd) {
    lwfm_status st = LWFM_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_memory_desc_t src, dst, wmd, bmd;
    dnnl_data_type_t dt = act_dt(net);
    int64_t oh = out_dim(ih, op->kh, op->sh, op->ph), ow = out_dim(iw, op->kw, op->sw, op->pw);
    dnnl_dims_t strides = {op->sh, op->sw}, pad = {op->ph, op->pw};
    *pd = NULL;
    if ((st = make_attr(&attr, op))) return st;
    if (op->q) {
        /* int8: the input is quantised into the net's layout first */
        act_md(net, &src, n, op->ic, ih, iw, op->q_dt);
    } else if (op->src == LWFM_NET_INPUT) {
        dnnl_dims_t d = {n, op->ic, ih, iw};
        /* The input arrives as plain NCHW f32; it is reordered first when the
         * first layer wants another layout or bf16. */
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(&src, 4, d, dt, net->in_tag), "src md");
    } else {
        act_md(net, &src, n, op->ic, ih, iw, dt);
    }
    if (op->kind == LWFM_OP_MAXPOOL && op->q_out) /* pooled in int8 */
        act_md(net, &src, n, op->ic, ih, iw, op->q_out);
    act_md(net, &dst, n, op->oc, oh, ow, op->q_out ? op->q_out : dt);
    if (op->kind == LWFM_OP_CONV) {
        dnnl_dims_t wd = {op->oc, op->ic, op->kh, op->kw}, bd = {op->oc};
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(&wmd, 4, wd, op->q ? dnnl_s8 : dt,
                                                dnnl_format_tag_any),
                   "w md");
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x), "b md");
        dnnl_convolution_desc_t cd;
        DNNL_CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                      dnnl_convolution_direct, &src, &wmd, &bmd,
                                                      &dst, strides, pad, pad),
                   "convolution desc");
        DNNL_CHECK(dnnl_primitive_desc_create(pd, &cd, attr, net->engine, NULL),
                   "convolution primitive desc");
    } else {
        dnnl_dims_t kernel = {op->kh, op->kw}, dil = {0, 0};
        dnnl_pooling_v2_desc_t pdsc;
        DNNL_CHECK(dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_inference,
                                                     dnnl_pooling_max, &src, &dst, strides, kernel,
                                                     dil, pad, pad),
                   "pooling desc");
        DNNL_CHECK(dnnl_primitive_desc_create(pd, &pdsc, attr, net->engine, NULL),
                   "pooling primitive desc");
    }
done:
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Run a reorder between two memory descriptors once (weights at build). */
static lwfm_status reorder_once(dnnl_engine_t eng, const dnnl_memory_desc_t *from, void *src,
                                const dnnl_memory_desc_t *to, void *dst,
                                const_dnnl_primitive_attr_t attr) {
    lwfm_status st = LWFM_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t ms = NULL, md = NULL;
    dnnl_stream_t stream = NULL;
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, attr), "reorder desc");
    DNNL_CHECK(dnnl_primitive_create(&prim, pd), "reorder create");
    DNNL_CHECK(dnnl_memory_create(&ms, from, eng, src), "memory");
    DNNL_CHECK(dnnl_memory_create(&md, to, eng, dst), "memory");
    DNNL_CHECK(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags), "stream");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    DNNL_CHECK(dnnl_primitive_execute(prim, stream, 2, args), "reorder");
    DNNL_CHECK(dnnl_stream_wait(stream), "stream wait");
done:
    if (stream) dnnl_stream_destroy(stream);
    if (ms) dnnl_memory_destroy(ms);
    if (md) dnnl_memory_destroy(md);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return st;
}

/* Input size of op i for the model's own image size, given every op's
 * output size there (walk_shapes). */
static void canonical_input(const lwfm__net *net, int i, const int64_t *oh, const int64_t *ow,
                            int64_t *ih, int64_t *iw) {
    const lwfm__op *op = &net->ops[i];
    *ih = net->canonical_h;
    *iw = net->canonical_w;
    for (int j = i - 1; j >= 0 && op->src != LWFM_NET_INPUT; j--)
        if (net->ops[j].dst == op->src) {
            *ih = oh[j];
            *iw = ow[j];
            return;
        }
}

/* int8: types and scales of every conv (quant.c); a conv for which oneDNN
 * has only its reference int8 kernel here (slower than f32) stays f32. */
static lwfm_status int8_prepare(lwfm__net *net) {
    int64_t oh[256], ow[256];
    lwfm_status st = lwfm__quant_prepare(net);
    if (!st) st = walk_shapes(net, net->canonical_h, net->canonical_w, oh, ow);
    for (int i = 0; !st && i < net->n_ops; i++) {
        lwfm__op *op = &net->ops[i];
        if (!op->q) continue;
        int64_t ih, iw;
        dnnl_primitive_desc_t pd = NULL;
        canonical_input(net, i, oh, ow, &ih, &iw);
        if ((st = op_pd(net, op, LWFM_DEFAULT_CHUNK, ih, iw, &pd))) break;
        if (!is_fast(pd)) {
            op->q = 0;
            lwfm__log(LWFM_LOG_DEBUG, "int8: '%s' stays f32 (no fast int8 kernel)", op->name);
        }
        dnnl_primitive_desc_destroy(pd);
    }
    if (!st) lwfm__quant_chain(net);
    return st;
}

/* op's plain f32 weights into its compute layout (w_md, w_data); int8:
 * the integers quant.c rounded them to, into s8 (scaled by
 * lwfm__quant_w_store). */
static lwfm_status store_weights(const lwfm__net *net, lwfm__op *op,
                                 const dnnl_memory_desc_t *plain) {
    lwfm_status st = LWFM_OK;
    dnnl_primitive_attr_t attr = NULL;
    if (op->q) {
        float scale = lwfm__quant_w_store(op);
        lwfm__quant_round_weights(op);
        DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attr create");
        DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale), "weight scale");
    }
    st = reorder_once(net->engine, plain, op->w_plain, &op->w_md, op->w_data, attr);
done:
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Transformed weights take (m + 2)^2 / 9 times the direct ones (4x at
 * m = 4): a conv whose copy would pass this stays direct, so that a weight
 * file cannot make a load hold several times its own size. ResNet-18's
 * largest is 26 MiB. */
#define WINOGRAD_MAX_BYTES ((size_t)64 << 20)

/* The load option, with LWFM_WINOGRAD=0 / 1 overriding AUTO only (a
 * diagnostic switch for benchmarks and parity checks). */
static lwfm_convolutions convolutions_wanted(const lwfm__net *net) {
    if (net->convolutions != LWFM_CONVOLUTIONS_AUTO) return net->convolutions;
    const char *env = getenv("LWFM_WINOGRAD");
    if (env && env[0] == '0') return LWFM_CONVOLUTIONS_DIRECT;
    if (env && env[0] == '1') return LWFM_CONVOLUTIONS_WINOGRAD;
    return LWFM_CONVOLUTIONS_AUTO;
}

/* Whether op runs on the Winograd kernels: fp32 3x3 stride-1 pad-1 convs
 * with eval-mode BatchNorm, channels in multiples of the kernels' blocks,
 * on CPUs with AVX2 and FMA. AUTO takes them in the nChw8c layout of AVX2
 * only: on AVX-512 (nChw16c) oneDNN's own kernels run unless WINOGRAD is
 * asked for, ours being AVX2 code there, not yet measured against them. */
static int use_winograd(const lwfm__net *net, const lwfm__op *op) {
    const lwfm_convolutions want = convolutions_wanted(net);
    if (want == LWFM_CONVOLUTIONS_DIRECT) return 0;
    const int layout_ok = net->act_tag == dnnl_nChw8c ||
                          (want == LWFM_CONVOLUTIONS_WINOGRAD && net->act_tag == dnnl_nChw16c);
    return op->kind == LWFM_OP_CONV && net->precision == LWFM_PRECISION_FP32 && !op->bn_g &&
           !op->q && layout_ok && op->ic % (net->act_tag == dnnl_nChw16c ? 16 : 8) == 0 &&
           op->kh == 3 && op->kw == 3 && op->sh == 1 &&
           op->sw == 1 && op->ph == 1 && op->pw == 1 && op->ic % 8 == 0 && op->oc % 16 == 0 &&
           (size_t)op->ic * op->oc * 36 * sizeof(float) <= WINOGRAD_MAX_BYTES &&
           lwfm__wino_cpu_ok();
}

/* Lay out every conv's weights as oneDNN prefers them for the model's own
 * image size, then drop the plain copy: the net holds one copy of weights. */
static lwfm_status finalise_weights(lwfm__net *net) {
    lwfm_status st = LWFM_OK;
    int64_t oh[256], ow[256];
    size_t held = 0, f32_bytes = 0;
    int winograd = 0;
    if ((st = walk_shapes(net, net->canonical_h, net->canonical_w, oh, ow))) return st;
    for (int i = 0; i < net->n_ops; i++) {
        lwfm__op *op = &net->ops[i];
        if (op->kind != LWFM_OP_CONV) continue;
        int64_t ih, iw;
        canonical_input(net, i, oh, ow, &ih, &iw);
        f32_bytes += ((size_t)op->oc * op->ic * op->kh * op->kw + (size_t)op->oc) * sizeof(float);
        if (use_winograd(net, op)) {
            if ((st = lwfm__wino_create(&op->wino, op->w_plain, op->oc, op->ic,
                                        lwfm__wino_pick_tile(oh[i], ow[i]),
                                        net->act_tag == dnnl_nChw16c ? 16 : 8)))
                return st;
            held += lwfm__wino_bytes(op->wino) + (size_t)op->oc * sizeof(float);
            winograd++;
            lwfm__free(op->w_plain);
            op->w_plain = NULL;
            continue;
        }
        dnnl_primitive_desc_t pd = NULL;
        if ((st = op_pd(net, op, LWFM_DEFAULT_CHUNK, ih, iw, &pd))) return st;
        op->w_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        dnnl_primitive_desc_destroy(pd);
        size_t bytes = dnnl_memory_desc_get_size(&op->w_md);
        held += bytes + (size_t)op->oc * sizeof(float);
        op->w_data = lwfm__alloc(bytes);
        if (!op->w_data) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (weights)");
        dnnl_memory_desc_t plain;
        dnnl_dims_t wd = {op->oc, op->ic, op->kh, op->kw};
        dnnl_memory_desc_init_by_tag(&plain, 4, wd, dnnl_f32, dnnl_oihw);
        if ((st = store_weights(net, op, &plain))) return st;
        lwfm__free(op->w_plain);
        op->w_plain = NULL;
    }
    /* one copy, in the compute layout (bench/bench_all.py reads this line) */
    lwfm__log(LWFM_LOG_DEBUG,
              "backbone weights held: %zu bytes (%s, BatchNorm folded; %zu as f32); "
              "%d convolutions as Winograd",
              held,
              net->precision == LWFM_PRECISION_BF16   ? "bf16"
              : net->precision == LWFM_PRECISION_INT8 ? "int8"
                                                      : "f32",
              f32_bytes, winograd);
    return LWFM_OK;
}

lwfm_status lwfm__net_build(lwfm__net **out, const lwfm__config *cfg, const lwfm__archive *ar,
                            lwfm_precision precision, lwfm_convolutions convolutions) {
    lwfm_status st = LWFM_OK;
    lwfm__net *net = calloc(1, sizeof *net);
    if (!net) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    net->precision = precision;
    net->convolutions = convolutions;
    net->bn_batch = cfg->bn_batch;
    if (net->bn_batch && precision != LWFM_PRECISION_FP32) {
        free(net);
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "batch-statistics BatchNorm (config 'batch_norm' = 'batch') runs in "
                           "fp32 only; load the model with the fp32 precision");
    }
    net->in_channels = cfg->input_channels;
    net->feature_size = cfg->feature_size;
    net->canonical_h = net->canonical_w = cfg->image_size > 0 ? cfg->image_size : 84;
    DNNL_CHECK(dnnl_engine_create(&net->engine, dnnl_cpu, 0), "engine create");
    st = pick_act_tag(net->engine, act_dt(net), &net->act_tag);
    if (st) goto done;
    /* int8 kernels (AVX2 and AVX-512 alike) read and write nhwc; the f32
     * maps between them are kept in it too, so quantising is element-wise */
    if (precision == LWFM_PRECISION_INT8) net->act_tag = dnnl_nhwc;
    lwfm__log(LWFM_LOG_DEBUG, "backbone activations in layout %s",
              net->act_tag == dnnl_nChw16c  ? "nChw16c"
              : net->act_tag == dnnl_nChw8c ? "nChw8c"
                                            : "nhwc");
    const char *prefix = lwfm__backbone_prefix(cfg);
    const lwfm__backbone *bb = lwfm__backbone_get(cfg->backbone);
    const int last = cfg->hyperpixel_ids[cfg->n_taps - 1];
    if (!bb)
        st = lwfm__error(LWFM_ERR_UNSUPPORTED, "backbone '%s' is not implemented yet",
                         lwfm__backbone_name(cfg->backbone));
    else if (last >= bb->blocks)
        st = lwfm__error(LWFM_ERR_UNSUPPORTED, "%s has blocks 0..%d, not %d", bb->name,
                         bb->blocks - 1, last);
    else
        st = bb->build(net, bb, cfg, ar, prefix);
    if (!st && precision == LWFM_PRECISION_INT8) st = int8_prepare(net);
    if (st) goto done;
    /* The first layer reads the caller's NCHW directly when oneDNN has a
     * fast kernel for that, else the input is reordered to act_tag. */
    net->in_tag = dnnl_nchw;
    if (net->n_ops > 0) {
        dnnl_primitive_desc_t pd = NULL;
        if ((st = op_pd(net, &net->ops[0], LWFM_DEFAULT_CHUNK, net->canonical_h, net->canonical_w,
                        &pd)))
            goto done;
        if (!is_fast(pd)) net->in_tag = net->act_tag;
        dnnl_primitive_desc_destroy(pd);
    }
    int off = 0;
    for (int t = 0; t < net->n_taps; t++) {
        net->tap_offset[t] = off;
        off += net->tap_channels[t];
    }
    net->out_channels = off;
    st = finalise_weights(net);
done:
    if (st) {
        lwfm__net_free(net);
        return st;
    }
    *out = net;
    return LWFM_OK;
}

void lwfm__net_free(lwfm__net *net) {
    if (!net) return;
    for (int i = 0; i < net->n_ops; i++) {
        lwfm__free(net->ops[i].w_plain);
        lwfm__free(net->ops[i].w_data);
        lwfm__free(net->ops[i].bias);
        lwfm__free(net->ops[i].bn_g);
        lwfm__free(net->ops[i].bn_b);
        lwfm__free(net->ops[i].w_max);
        lwfm__free(net->ops[i].oscale);
        lwfm__free(net->ops[i].q_bias);
        lwfm__wino_free(net->ops[i].wino);
    }
    free(net->ops);
    if (net->engine) dnnl_engine_destroy(net->engine);
    free(net);
}

/* ------------------------------------------------------------------------ */
/* Plans and contexts                                                       */

typedef struct plan_op {
    dnnl_primitive_t prim;
    dnnl_memory_t src, dst, wts, bias, scratch;
    /* batch-statistics BatchNorm after the conv (op->bn_g): in place on the
     * conv's output (dst, or the context's bn_tmp when the op accumulates) */
    dnnl_primitive_t bn;
    dnnl_memory_t bn_src, bn_dst, bn_scale, bn_shift, bn_mean, bn_var, bn_scratch;
    /* int8 (op->q): the f32 input quantised into the context's q_tmp */
    dnnl_primitive_t q_reorder;
    dnnl_memory_t q_from, q_to, q_scratch;
    size_t out_bytes; /* bytes of the conv's output */
    int64_t ih, iw;   /* input size (the Winograd kernels take it per call) */
    void *w_local; /* weights reordered for this plan when its layout differs */
} plan_op;

typedef struct plan_tap {
    dnnl_primitive_t reorder; /* blocked activation -> plain NCHW */
    dnnl_memory_t from, to, scratch;
    int64_t h, w; /* native size of the tapped map */
} plan_tap;

typedef struct plan {
    int64_t n, h, w;
    plan_op *ops;
    plan_tap taps[LWFM_MAX_TAPS];
    dnnl_primitive_t in_reorder; /* f32 input -> bf16 (bf16 mode only) */
    dnnl_memory_t in_from, in_to, in_scratch;
    size_t buf_bytes[LWFM_NET_NBUF];
    size_t scratch_bytes;
    size_t tap_bytes; /* plain copy of the largest pooled tap */
    size_t in_bytes;  /* bf16 copy of the input */
    size_t bn_bytes;  /* conv output of an accumulating batch-statistics op */
    size_t stat_bytes; /* mean and variance of the widest batch-statistics op */
    size_t q_bytes;    /* the largest quantised conv input (int8) */
    unsigned long last_used;
} plan;

struct lwfm__net_ctx {
    const lwfm__net *net;
    dnnl_stream_t stream;
    plan *plans[LWFM_MAX_PLANS];
    int n_plans;
    unsigned fork_generation; /* lwfm__fork_generation when the plans were made */
    unsigned long tick;
    int chunk;
    void *buf[LWFM_NET_NBUF];
    size_t buf_cap[LWFM_NET_NBUF];
    void *scratch, *tap_tmp, *in_tmp, *bn_tmp, *stats, *q_tmp;
    size_t scratch_cap, tap_cap, in_cap, bn_cap, stats_cap, q_cap;
    /* calibration (lwfm__net_ranges): per image, each conv's largest |input|
     * (n x n_convs), image `ranges_base` first; NULL otherwise */
    float *ranges;
    int64_t ranges_base;
    /* calibration (lwfm__net_histograms): counts[conv * hist_bins + b] of
     * the values each conv reads, bins over [-limit, limit]; NULL otherwise */
    uint64_t *hist;
    const float *hist_limits;
    int64_t hist_bins;
    /* Image-parallel mode (forward_lanes): one single-threaded child context
     * per OpenMP thread, made on first use. */
    lwfm__net_ctx **lanes;
    int n_lanes;
    int image_parallel; /* 0: LWFM_IMAGE_PARALLEL=0, a diagnostic switch for benchmarks */
};

static void plan_free(const lwfm__net *net, plan *p) {
    if (!p) return;
    if (p->ops) {
        for (int i = 0; i < net->n_ops; i++) {
            plan_op *o = &p->ops[i];
            if (o->prim) dnnl_primitive_destroy(o->prim);
            if (o->src) dnnl_memory_destroy(o->src);
            if (o->dst) dnnl_memory_destroy(o->dst);
            if (o->wts) dnnl_memory_destroy(o->wts);
            if (o->bias) dnnl_memory_destroy(o->bias);
            if (o->scratch) dnnl_memory_destroy(o->scratch);
            if (o->q_reorder) dnnl_primitive_destroy(o->q_reorder);
            dnnl_memory_t qm[3] = {o->q_from, o->q_to, o->q_scratch};
            for (int k = 0; k < 3; k++)
                if (qm[k]) dnnl_memory_destroy(qm[k]);
            if (o->bn) dnnl_primitive_destroy(o->bn);
            dnnl_memory_t bm[7] = {o->bn_src,  o->bn_dst, o->bn_scale,  o->bn_shift,
                                   o->bn_mean, o->bn_var, o->bn_scratch};
            for (int k = 0; k < 7; k++)
                if (bm[k]) dnnl_memory_destroy(bm[k]);
            lwfm__free(o->w_local);
        }
        free(p->ops);
    }
    for (int t = 0; t < LWFM_MAX_TAPS; t++) {
        plan_tap *tp = &p->taps[t];
        if (tp->reorder) dnnl_primitive_destroy(tp->reorder);
        if (tp->from) dnnl_memory_destroy(tp->from);
        if (tp->to) dnnl_memory_destroy(tp->to);
        if (tp->scratch) dnnl_memory_destroy(tp->scratch);
    }
    if (p->in_reorder) dnnl_primitive_destroy(p->in_reorder);
    if (p->in_from) dnnl_memory_destroy(p->in_from);
    if (p->in_to) dnnl_memory_destroy(p->in_to);
    if (p->in_scratch) dnnl_memory_destroy(p->in_scratch);
    free(p);
}

static size_t max_sz(size_t a, size_t b) {
    return a > b ? a : b;
}

/* Create a reorder primitive with a user scratchpad, multiplying by
 * `scale` when not 0 (int8 quantisation); memory objects are created
 * without data (handles are set before each execution). */
static lwfm_status make_reorder(const lwfm__net *net, const dnnl_memory_desc_t *from,
                                const dnnl_memory_desc_t *to, float scale, dnnl_primitive_t *prim,
                                dnnl_memory_t *mfrom, dnnl_memory_t *mto, dnnl_memory_t *mscr,
                                size_t *scratch_bytes) {
    lwfm_status st = LWFM_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attr create");
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
               "scratchpad mode");
    if (scale != 0.0f)
        DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale), "input scale");
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, from, net->engine, to, net->engine, attr),
               "reorder desc");
    DNNL_CHECK(dnnl_primitive_create(prim, pd), "reorder create");
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    *scratch_bytes = max_sz(*scratch_bytes, dnnl_memory_desc_get_size(smd));
    DNNL_CHECK(dnnl_memory_create(mfrom, from, net->engine, DNNL_MEMORY_NONE), "memory");
    DNNL_CHECK(dnnl_memory_create(mto, to, net->engine, DNNL_MEMORY_NONE), "memory");
    DNNL_CHECK(dnnl_memory_create(mscr, smd, net->engine, DNNL_MEMORY_NONE), "memory");
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

/* The batch-statistics BatchNorm of a conv op (forward training: mean and
 * biased variance over the batch and the positions, as PyTorch's train
 * mode normalises), in place on the conv's output `data`. */
static lwfm_status make_bn(const lwfm__net *net, const lwfm__op *op, const dnnl_memory_desc_t *data,
                           plan_op *po, size_t *scratch_bytes) {
    lwfm_status st = LWFM_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_batch_normalization_desc_t bd;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attr create");
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
               "scratchpad mode");
    DNNL_CHECK(dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_training, data,
                                                          (float)BN_EPS,
                                                          dnnl_use_scale | dnnl_use_shift),
               "batch normalization desc");
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &bd, attr, net->engine, NULL),
               "batch normalization primitive desc");
    DNNL_CHECK(dnnl_primitive_create(&po->bn, pd), "batch normalization create");
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    *scratch_bytes = max_sz(*scratch_bytes, dnnl_memory_desc_get_size(smd));
    dnnl_memory_desc_t vec;
    dnnl_dims_t vd = {op->oc};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&vec, 1, vd, dnnl_f32, dnnl_x), "md");
    DNNL_CHECK(dnnl_memory_create(&po->bn_src, data, net->engine, DNNL_MEMORY_NONE), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->bn_dst, data, net->engine, DNNL_MEMORY_NONE), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->bn_scale, &vec, net->engine, op->bn_g), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->bn_shift, &vec, net->engine, op->bn_b), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->bn_mean, &vec, net->engine, DNNL_MEMORY_NONE), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->bn_var, &vec, net->engine, DNNL_MEMORY_NONE), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->bn_scratch, smd, net->engine, DNNL_MEMORY_NONE), "memory");
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

/* A tapped op's output (descriptor dmd, oh x ow) reordered into the plan's
 * tap buffer, or straight into the caller's output at native size. */
static lwfm_status plan_tap_create(const lwfm__net *net, plan *p, const lwfm__op *op, int64_t n,
                                   int64_t oh, int64_t ow, const dnnl_memory_desc_t *dmd) {
    lwfm_status st = LWFM_OK;
    plan_tap *tp = &p->taps[op->tap];
    dnnl_memory_desc_t plain;
    dnnl_dims_t d = {n, op->oc, oh, ow};
    tp->h = oh;
    tp->w = ow;
    if (net->feature_size > 0) {
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(&plain, 4, d, dnnl_f32, dnnl_nchw), "md");
        p->tap_bytes = max_sz(p->tap_bytes, dnnl_memory_desc_get_size(&plain));
    } else {
        /* Native size: write straight into the caller's (n, C, h, w) output. */
        dnnl_dims_t s = {(int64_t)net->out_channels * oh * ow, oh * ow, ow, 1};
        DNNL_CHECK(dnnl_memory_desc_init_by_strides(&plain, 4, d, dnnl_f32, s), "md");
    }
    st = make_reorder(net, dmd, &plain, 0.0f, &tp->reorder, &tp->from, &tp->to, &tp->scratch,
                      &p->scratch_bytes);
done:
    return st;
}

/* A convolution's weights and bias in the layout its primitive (pd) wants
 * for an n x h x w input: the net's own copy, or a private reorder of it. */
static lwfm_status plan_conv_weights(const lwfm__net *net, const lwfm__op *op,
                                     dnnl_primitive_desc_t pd, plan_op *po, int64_t n, int64_t h,
                                     int64_t w) {
    lwfm_status st = LWFM_OK;
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
    void *wdata = op->w_data;
    if (!dnnl_memory_desc_equal(wmd, &op->w_md)) {
        /* This shape wants another weight layout: keep a private copy. */
        lwfm__log(LWFM_LOG_DEBUG, "plan %lldx%lldx%lld: '%s' needs its own weight layout",
                  (long long)n, (long long)h, (long long)w, op->name);
        po->w_local = lwfm__alloc(dnnl_memory_desc_get_size(wmd));
        if (!po->w_local) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (weights)");
        if ((st = reorder_once(net->engine, &op->w_md, op->w_data, wmd, po->w_local, NULL)))
            return st;
        wdata = po->w_local;
    }
    DNNL_CHECK(dnnl_memory_create(&po->wts, wmd, net->engine, wdata), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->bias, bmd, net->engine, op->q ? op->q_bias : op->bias),
               "memory");
done:
    return st;
}

/* int8: the reorder that quantises op's f32 input (the caller's NCHW
 * images, or an activation buffer) into the conv's src (qmd). */
static lwfm_status plan_quantise(const lwfm__net *net, plan *p, const lwfm__op *op, plan_op *po,
                                 const dnnl_memory_desc_t *qmd, int64_t ih, int64_t iw) {
    dnnl_memory_desc_t from;
    if (op->src == LWFM_NET_INPUT) {
        dnnl_dims_t d = {p->n, op->ic, ih, iw};
        dnnl_memory_desc_init_by_tag(&from, 4, d, dnnl_f32, net->in_tag);
    } else {
        act_md(net, &from, p->n, op->ic, ih, iw, dnnl_f32);
    }
    p->q_bytes = max_sz(p->q_bytes, dnnl_memory_desc_get_size(qmd));
    return make_reorder(net, &from, qmd, lwfm__quant_in_scale(op), &po->q_reorder, &po->q_from,
                        &po->q_to, &po->q_scratch, &p->scratch_bytes);
}

/* A Winograd conv (same size in and out): no primitive, only the memories
 * that calibration and taps read, its buffer and scratch sizes. */
static lwfm_status plan_winograd(const lwfm__net *net, plan *p, const lwfm__op *op, plan_op *po,
                                 int64_t ih, int64_t iw) {
    lwfm_status st = LWFM_OK;
    dnnl_memory_desc_t smd, dmd;
    act_md(net, &smd, p->n, op->ic, ih, iw, dnnl_f32);
    act_md(net, &dmd, p->n, op->oc, ih, iw, dnnl_f32);
    po->out_bytes = dnnl_memory_desc_get_size(&dmd);
    p->buf_bytes[op->dst] = max_sz(p->buf_bytes[op->dst], po->out_bytes);
    p->scratch_bytes = max_sz(p->scratch_bytes, lwfm__wino_scratch(op->wino, p->n, ih, iw));
    DNNL_CHECK(dnnl_memory_create(&po->src, &smd, net->engine, DNNL_MEMORY_NONE), "memory");
    DNNL_CHECK(dnnl_memory_create(&po->dst, &dmd, net->engine, DNNL_MEMORY_NONE), "memory");
    if (op->tap >= 0) st = plan_tap_create(net, p, op, p->n, ih, iw, &dmd);
done:
    return st;
}

static lwfm_status plan_create(const lwfm__net *net, int64_t n, int64_t h, int64_t w, plan **out) {
    lwfm_status st = LWFM_OK;
    dnnl_primitive_desc_t pd = NULL;
    int64_t oh[256], ow[256];
    dnnl_data_type_t dt = act_dt(net);
    plan *p = calloc(1, sizeof *p);
    if (!p || !(p->ops = calloc((size_t)net->n_ops, sizeof *p->ops))) {
        st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory creating backbone plan");
        goto done;
    }
    p->n = n;
    p->h = h;
    p->w = w;
    if ((st = walk_shapes(net, h, w, oh, ow))) goto done;
    int64_t bh[LWFM_NET_NBUF] = {0}, bw[LWFM_NET_NBUF] = {0};
    for (int i = 0; i < net->n_ops; i++) {
        const lwfm__op *op = &net->ops[i];
        plan_op *po = &p->ops[i];
        int64_t ih = op->src == LWFM_NET_INPUT ? h : bh[op->src];
        int64_t iw = op->src == LWFM_NET_INPUT ? w : bw[op->src];
        po->ih = ih;
        po->iw = iw;
        if (op->wino) {
            if ((st = plan_winograd(net, p, op, po, ih, iw))) goto done;
            bh[op->dst] = oh[i];
            bw[op->dst] = ow[i];
            continue;
        }
        if ((st = op_pd(net, op, n, ih, iw, &pd))) goto done;
        DNNL_CHECK(dnnl_primitive_create(&po->prim, pd), "primitive create");
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        /* copied: the descriptors die with pd */
        const dnnl_memory_desc_t dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        const dnnl_memory_desc_t *dmd = &dst_md;
        const dnnl_memory_desc_t *scr =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        p->scratch_bytes = max_sz(p->scratch_bytes, dnnl_memory_desc_get_size(scr));
        p->buf_bytes[op->dst] = max_sz(p->buf_bytes[op->dst], dnnl_memory_desc_get_size(dmd));
        DNNL_CHECK(dnnl_memory_create(&po->src, smd, net->engine, DNNL_MEMORY_NONE), "memory");
        DNNL_CHECK(dnnl_memory_create(&po->dst, dmd, net->engine, DNNL_MEMORY_NONE), "memory");
        DNNL_CHECK(dnnl_memory_create(&po->scratch, scr, net->engine, DNNL_MEMORY_NONE), "memory");
        if (op->q && !op->q_ready && (st = plan_quantise(net, p, op, po, smd, ih, iw)))
            goto done;
        if (op->kind == LWFM_OP_CONV) {
            if ((st = plan_conv_weights(net, op, pd, po, n, h, w))) goto done;
            po->out_bytes = dnnl_memory_desc_get_size(dmd);
            if (op->bn_g) {
                if ((st = make_bn(net, op, dmd, po, &p->scratch_bytes))) goto done;
                if (op->accumulate) p->bn_bytes = max_sz(p->bn_bytes, po->out_bytes);
                p->stat_bytes = max_sz(p->stat_bytes, 2 * (size_t)op->oc * sizeof(float));
            }
        }
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        bh[op->dst] = oh[i];
        bw[op->dst] = ow[i];
        if (op->tap >= 0 && (st = plan_tap_create(net, p, op, n, oh[i], ow[i], dmd))) goto done;
    }
    if (dt != dnnl_f32 || net->in_tag != dnnl_nchw) {
        dnnl_memory_desc_t from, to;
        dnnl_dims_t d = {n, net->in_channels, h, w};
        dnnl_memory_desc_init_by_tag(&from, 4, d, dnnl_f32, dnnl_nchw);
        dnnl_memory_desc_init_by_tag(&to, 4, d, dt, net->in_tag);
        p->in_bytes = dnnl_memory_desc_get_size(&to);
        if ((st = make_reorder(net, &from, &to, 0.0f, &p->in_reorder, &p->in_from, &p->in_to,
                               &p->in_scratch, &p->scratch_bytes)))
            goto done;
    }
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (st) {
        plan_free(net, p);
        return st;
    }
    *out = p;
    return LWFM_OK;
}

lwfm_status lwfm__net_ctx_create(lwfm__net_ctx **out, const lwfm__net *net) {
    lwfm_status st = LWFM_OK;
    lwfm__net_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    ctx->net = net;
    ctx->chunk = LWFM_DEFAULT_CHUNK;
    ctx->fork_generation = atomic_load(&lwfm__fork_generation);
    const char *env = getenv("LWFM_BATCH_CHUNK");
    if (env) {
        int c = atoi(env);
        if (c >= 1 && c <= 4096) ctx->chunk = c;
    }
    env = getenv("LWFM_IMAGE_PARALLEL");
    ctx->image_parallel = !(env && env[0] == '0');
    DNNL_CHECK(dnnl_stream_create(&ctx->stream, net->engine, dnnl_stream_default_flags),
               "stream create");
done:
    if (st) {
        free(ctx);
        return st;
    }
    *out = ctx;
    return LWFM_OK;
}

void lwfm__net_ctx_free(lwfm__net_ctx *ctx) {
    if (!ctx) return;
    for (int i = 0; i < ctx->n_lanes; i++) lwfm__net_ctx_free(ctx->lanes[i]);
    free(ctx->lanes);
    for (int i = 0; i < ctx->n_plans; i++) plan_free(ctx->net, ctx->plans[i]);
    for (int b = 0; b < LWFM_NET_NBUF; b++) lwfm__free(ctx->buf[b]);
    lwfm__free(ctx->scratch);
    lwfm__free(ctx->tap_tmp);
    lwfm__free(ctx->in_tmp);
    lwfm__free(ctx->bn_tmp);
    lwfm__free(ctx->stats);
    lwfm__free(ctx->q_tmp);
    if (ctx->stream) dnnl_stream_destroy(ctx->stream);
    free(ctx);
}

static lwfm_status get_plan(lwfm__net_ctx *ctx, int64_t n, int64_t h, int64_t w, plan **out) {
    ctx->tick++;
    /* in a forked child, primitives made before fork() would start parallel
     * regions of the parent's thread count, which libgomp cannot run there */
    unsigned gen = atomic_load(&lwfm__fork_generation);
    if (ctx->fork_generation != gen) {
        for (int i = 0; i < ctx->n_plans; i++) plan_free(ctx->net, ctx->plans[i]);
        ctx->n_plans = 0;
        ctx->fork_generation = gen;
    }
    for (int i = 0; i < ctx->n_plans; i++) {
        plan *p = ctx->plans[i];
        if (p->n == n && p->h == h && p->w == w) {
            p->last_used = ctx->tick;
            *out = p;
            return LWFM_OK;
        }
    }
    plan *p;
    lwfm_status st = plan_create(ctx->net, n, h, w, &p);
    if (st) return st;
    p->last_used = ctx->tick;
    if (ctx->n_plans == LWFM_MAX_PLANS) { /* evict the least recently used */
        int lru = 0;
        for (int i = 1; i < ctx->n_plans; i++)
            if (ctx->plans[i]->last_used < ctx->plans[lru]->last_used) lru = i;
        plan_free(ctx->net, ctx->plans[lru]);
        ctx->plans[lru] = p;
    } else {
        ctx->plans[ctx->n_plans++] = p;
    }
    *out = p;
    return LWFM_OK;
}

static int grow(void **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    void *nb = lwfm__alloc(need);
    if (!nb) return 1;
    lwfm__free(*buf);
    *buf = nb;
    *cap = need;
    return 0;
}

/* Adaptive average pooling, PyTorch's bin rule, of a plain (n, c, h, w) map
 * into channels [off, off + c) of the (n, C, fs, fs) output. */
static void adaptive_pool(const float *in, int64_t n, int64_t c, int64_t h, int64_t w, float *out,
                          int64_t C, int64_t off, int fs) {
#pragma omp parallel for schedule(static)
    for (int64_t nc = 0; nc < n * c; nc++) {
        int64_t img = nc / c, ch = nc % c;
        const float *src = in + nc * h * w;
        float *dst = out + ((img * C) + off + ch) * fs * fs;
        for (int i = 0; i < fs; i++) {
            int64_t r0 = (i * h) / fs, r1 = ((i + 1) * h + fs - 1) / fs;
            for (int j = 0; j < fs; j++) {
                int64_t c0 = (j * w) / fs, c1 = ((j + 1) * w + fs - 1) / fs;
                float acc = 0.0f;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t q = c0; q < c1; q++) acc += src[r * w + q];
                dst[i * fs + j] = acc / (float)((r1 - r0) * (c1 - c0));
            }
        }
    }
}

/* Grow the context's buffers for plan p (no output is touched here). */
static lwfm_status plan_reserve(lwfm__net_ctx *ctx, const plan *p) {
    for (int b = 0; b < LWFM_NET_NBUF; b++)
        if (grow(&ctx->buf[b], &ctx->buf_cap[b], p->buf_bytes[b]))
            return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory for activations (%zu bytes)",
                               p->buf_bytes[b]);
    if (grow(&ctx->scratch, &ctx->scratch_cap, p->scratch_bytes) ||
        grow(&ctx->tap_tmp, &ctx->tap_cap, p->tap_bytes) ||
        grow(&ctx->in_tmp, &ctx->in_cap, p->in_bytes) ||
        grow(&ctx->bn_tmp, &ctx->bn_cap, p->bn_bytes) ||
        grow(&ctx->stats, &ctx->stats_cap, p->stat_bytes) ||
        grow(&ctx->q_tmp, &ctx->q_cap, p->q_bytes))
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory for backbone scratch");
    return LWFM_OK;
}

/* After a batch-statistics conv wrote `conv_out`: its BatchNorm in place,
 * then dst = act(dst + conv_out) when the op accumulates, else
 * dst = act(dst) (conv_out is dst). Element-wise over the buffer: dst and
 * conv_out share one layout. */
static lwfm_status run_bn(lwfm__net_ctx *ctx, const lwfm__op *op, plan_op *po, void *conv_out,
                          void *dst) {
    lwfm_status st = LWFM_OK;
    float *stats = ctx->stats;
    dnnl_memory_set_data_handle(po->bn_src, conv_out);
    dnnl_memory_set_data_handle(po->bn_dst, conv_out);
    dnnl_memory_set_data_handle(po->bn_mean, stats);
    dnnl_memory_set_data_handle(po->bn_var, stats + op->oc);
    dnnl_memory_set_data_handle(po->bn_scratch, ctx->scratch);
    dnnl_exec_arg_t a[7] = {{DNNL_ARG_SRC, po->bn_src},     {DNNL_ARG_DST, po->bn_dst},
                            {DNNL_ARG_SCALE, po->bn_scale}, {DNNL_ARG_SHIFT, po->bn_shift},
                            {DNNL_ARG_MEAN, po->bn_mean},   {DNNL_ARG_VARIANCE, po->bn_var},
                            {DNNL_ARG_SCRATCHPAD, po->bn_scratch}};
    DNNL_CHECK(dnnl_primitive_execute(po->bn, ctx->stream, 7, a), "batch normalization");
    DNNL_CHECK(dnnl_stream_wait(ctx->stream), "stream wait");
    if (!op->accumulate && op->act == LWFM_ACT_NONE) return LWFM_OK;
    const int64_t count = (int64_t)(po->out_bytes / sizeof(float));
    const float slope = op->act == LWFM_ACT_LRELU ? op->alpha : 0.0f;
    const int act = op->act != LWFM_ACT_NONE, acc = op->accumulate;
    float *d = dst;
    const float *c = conv_out;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) {
        float v = acc ? d[i] + c[i] : d[i];
        d[i] = act && v < 0.0f ? v * slope : v;
    }
done:
    return st;
}

/* Tapped op's output `dst` into the caller's output (pooled when the
 * model has a feature size). */
static lwfm_status run_tap(lwfm__net_ctx *ctx, plan *p, const lwfm__op *op, void *dst,
                           float *out) {
    lwfm_status st = LWFM_OK;
    const lwfm__net *net = ctx->net;
    plan_tap *tp = &p->taps[op->tap];
    int64_t off = net->tap_offset[op->tap];
    void *to = net->feature_size > 0 ? ctx->tap_tmp : (void *)(out + off * tp->h * tp->w);
    dnnl_memory_set_data_handle(tp->from, dst);
    dnnl_memory_set_data_handle(tp->to, to);
    dnnl_memory_set_data_handle(tp->scratch, ctx->scratch);
    dnnl_exec_arg_t r[3] = {
        {DNNL_ARG_FROM, tp->from}, {DNNL_ARG_TO, tp->to}, {DNNL_ARG_SCRATCHPAD, tp->scratch}};
    DNNL_CHECK(dnnl_primitive_execute(tp->reorder, ctx->stream, 3, r), "tap reorder");
    if (net->feature_size > 0) {
        DNNL_CHECK(dnnl_stream_wait(ctx->stream), "stream wait");
        adaptive_pool(ctx->tap_tmp, p->n, op->oc, tp->h, tp->w, out, net->out_channels, off,
                      net->feature_size);
    }
done:
    return st;
}

/* What op reads: `src` as it is, or (int8) quantised into q_tmp. When
 * calibrating, each image's largest |input| of a conv is recorded first. */
static lwfm_status op_input(lwfm__net_ctx *ctx, plan *p, const lwfm__op *op, plan_op *po,
                            void *src, void **use) {
    lwfm_status st = LWFM_OK;
    *use = src;
    if (ctx->ranges && op->kind == LWFM_OP_CONV) {
        const dnnl_memory_desc_t *md;
        DNNL_CHECK(dnnl_stream_wait(ctx->stream), "stream wait");
        DNNL_CHECK(dnnl_memory_get_memory_desc(po->src, &md), "memory desc");
        lwfm__quant_observe(src, p->n, dnnl_memory_desc_get_size(md),
                            ctx->ranges + ctx->ranges_base * ctx->net->n_convs + op->conv_index,
                            ctx->net->n_convs);
    }
    if (ctx->hist && op->kind == LWFM_OP_CONV) {
        const dnnl_memory_desc_t *md;
        DNNL_CHECK(dnnl_stream_wait(ctx->stream), "stream wait");
        DNNL_CHECK(dnnl_memory_get_memory_desc(po->src, &md), "memory desc");
        /* the logical size: blocked layouts pad channels with zeros */
        const size_t logical = (size_t)(md->dims[1] * md->dims[2] * md->dims[3]);
        lwfm__quant_histogram(src, p->n, dnnl_memory_desc_get_size(md), logical,
                              ctx->hist_limits[op->conv_index], ctx->hist_bins,
                              ctx->hist + op->conv_index * ctx->hist_bins);
    }
    if (!po->q_reorder) return LWFM_OK;
    dnnl_memory_set_data_handle(po->q_from, src);
    dnnl_memory_set_data_handle(po->q_to, ctx->q_tmp);
    dnnl_memory_set_data_handle(po->q_scratch, ctx->scratch);
    dnnl_exec_arg_t a[3] = {
        {DNNL_ARG_FROM, po->q_from}, {DNNL_ARG_TO, po->q_to}, {DNNL_ARG_SCRATCHPAD, po->q_scratch}};
    DNNL_CHECK(dnnl_primitive_execute(po->q_reorder, ctx->stream, 3, a), "int8 input reorder");
    *use = ctx->q_tmp;
done:
    return st;
}

static lwfm_status run_plan(lwfm__net_ctx *ctx, plan *p, const float *x, float *out) {
    lwfm_status st = LWFM_OK;
    const lwfm__net *net = ctx->net;
    void *input = (void *)x;
    if (p->in_reorder) {
        dnnl_memory_set_data_handle(p->in_from, input);
        dnnl_memory_set_data_handle(p->in_to, ctx->in_tmp);
        dnnl_memory_set_data_handle(p->in_scratch, ctx->scratch);
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, p->in_from},
                                {DNNL_ARG_TO, p->in_to},
                                {DNNL_ARG_SCRATCHPAD, p->in_scratch}};
        DNNL_CHECK(dnnl_primitive_execute(p->in_reorder, ctx->stream, 3, a), "input reorder");
        input = ctx->in_tmp;
    }
    for (int i = 0; i < net->n_ops; i++) {
        const lwfm__op *op = &net->ops[i];
        plan_op *po = &p->ops[i];
        void *dst = ctx->buf[op->dst], *src;
        /* batch statistics: an accumulating conv writes beside dst first */
        void *conv_out = op->bn_g && op->accumulate ? ctx->bn_tmp : dst;
        if ((st = op_input(ctx, p, op, po, op->src == LWFM_NET_INPUT ? input : ctx->buf[op->src],
                           &src)))
            goto done;
        if (op->wino) {
            DNNL_CHECK(dnnl_stream_wait(ctx->stream), "stream wait");
            lwfm__wino_run(op->wino, src, p->n, po->ih, po->iw, dst, op->bias, op->accumulate,
                           op->act != LWFM_ACT_NONE, op->act == LWFM_ACT_LRELU ? op->alpha : 0.0f,
                           ctx->scratch);
            if (op->tap >= 0 && (st = run_tap(ctx, p, op, dst, out))) goto done;
            continue;
        }
        dnnl_memory_set_data_handle(po->src, src);
        dnnl_memory_set_data_handle(po->dst, conv_out);
        dnnl_memory_set_data_handle(po->scratch, ctx->scratch);
        dnnl_exec_arg_t a[5];
        int na = 0;
        a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, po->src};
        a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, po->dst};
        a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, po->scratch};
        if (op->kind == LWFM_OP_CONV) {
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, po->wts};
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, po->bias};
        }
        DNNL_CHECK(dnnl_primitive_execute(po->prim, ctx->stream, na, a), op->name);
        if (op->bn_g && (st = run_bn(ctx, op, po, conv_out, dst))) goto done;
        if (op->tap >= 0 && (st = run_tap(ctx, p, op, dst, out))) goto done;
    }
    DNNL_CHECK(dnnl_stream_wait(ctx->stream), "stream wait");
done:
    return st;
}

/* Plans and buffers of every chunk size the batch needs, made before any
 * output is written, so that a failure leaves the output untouched. */
static lwfm_status prepare_chunks(lwfm__net_ctx *ctx, int64_t n, int64_t chunk, int64_t h,
                                  int64_t w, plan **pf, plan **pr) {
    int64_t full = n < chunk ? n : chunk, rest = n % full;
    lwfm_status st;
    *pr = NULL;
    if ((st = get_plan(ctx, full, h, w, pf))) return st;
    if (rest && (st = get_plan(ctx, rest, h, w, pr))) return st;
    if ((st = plan_reserve(ctx, *pf))) return st;
    return *pr ? plan_reserve(ctx, *pr) : LWFM_OK;
}

/* The caller's thread alone, oneDNN's threads inside each primitive. */
static lwfm_status forward_chunks(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h,
                                  int64_t w, float *out, int64_t out_per) {
    /* batch statistics: the whole batch in one pass */
    int64_t chunk = ctx->net->bn_batch ? n : ctx->chunk;
    plan *pf, *pr;
    lwfm_status st = prepare_chunks(ctx, n, chunk, h, w, &pf, &pr);
    if (st) return st;
    int64_t in_per = (int64_t)ctx->net->in_channels * h * w;
    for (int64_t i = 0; i < n; i += pf->n) {
        plan *p = n - i >= pf->n ? pf : pr;
        ctx->ranges_base = i;
        if ((st = run_plan(ctx, p, x + i * in_per, out + i * out_per))) return st;
    }
    return LWFM_OK;
}

#ifdef _OPENMP
static lwfm_status ensure_lanes(lwfm__net_ctx *ctx, int threads) {
    if (ctx->n_lanes >= threads) return LWFM_OK;
    lwfm__net_ctx **lanes = realloc(ctx->lanes, (size_t)threads * sizeof *lanes);
    if (!lanes) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    ctx->lanes = lanes;
    for (; ctx->n_lanes < threads; ctx->n_lanes++) {
        lwfm_status st = lwfm__net_ctx_create(&lanes[ctx->n_lanes], ctx->net);
        if (st) return st;
        lanes[ctx->n_lanes]->chunk = ctx->chunk;
    }
    return LWFM_OK;
}

/* Image-parallel forward: each OpenMP thread runs whole chunks through its
 * own single-threaded primitives, taking the next chunk when it is done
 * (dynamic schedule). Threads meet once per batch instead of at every layer
 * of every primitive, so a thread that loses its core to another process
 * (a busy vision pipeline) delays only its own chunk, where the per-layer
 * barriers of intra-primitive threading stall every layer; and each chunk's
 * activations stay in its core's cache. The results are those of one thread:
 * the same single-threaded plans, whichever thread runs a chunk. */
static lwfm_status forward_lanes(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h,
                                 int64_t w, float *out, int64_t out_per, int threads) {
    lwfm_status st = ensure_lanes(ctx, threads);
    if (st) return st;
    const int64_t chunk = ctx->chunk, n_chunks = (n + chunk - 1) / chunk;
    const int64_t in_per = (int64_t)ctx->net->in_channels * h * w;
    lwfm_status prep = LWFM_OK, run = LWFM_OK;
#pragma omp parallel num_threads(threads)
    {
        /* this thread's primitives are made for, and run on, one thread */
        omp_set_num_threads(1);
        lwfm__net_ctx *lane = ctx->lanes[omp_get_thread_num()];
        plan *pf, *pr;
        lwfm_status s = prepare_chunks(lane, n, chunk, h, w, &pf, &pr);
        if (s) {
#pragma omp critical(lwfm_lanes)
            if (!prep) prep = s;
        }
#pragma omp barrier
        if (!prep) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t c = 0; c < n_chunks; c++) {
                int64_t i = c * chunk;
                plan *p = n - i >= chunk ? pf : pr;
                s = run_plan(lane, p, x + i * in_per, out + i * out_per);
                if (s) {
#pragma omp critical(lwfm_lanes)
                    if (!run) run = s;
                }
            }
        }
    }
    return prep ? prep : run;
}
#endif

lwfm_status lwfm__net_forward(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h, int64_t w,
                              float *out) {
    int64_t C, fh, fw;
    lwfm_status st = lwfm__net_out_shape(ctx->net, h, w, &C, &fh, &fw);
    if (st) return st;
    const int64_t out_per = C * fh * fw;
#ifdef _OPENMP
    /* Image-parallel when every thread gets at least one chunk; a small
     * batch (one query) keeps all threads on each primitive for latency.
     * Batch statistics need the whole batch in one pass. */
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads > 1 && ctx->image_parallel && !ctx->net->bn_batch &&
        n >= (int64_t)threads * ctx->chunk)
        return forward_lanes(ctx, x, n, h, w, out, out_per, threads);
#endif
    return forward_chunks(ctx, x, n, h, w, out, out_per);
}

int lwfm__net_convs(const lwfm__net *net) {
    return net->n_convs;
}

const char *lwfm__net_conv_name(const lwfm__net *net, int i) {
    for (int k = 0; k < net->n_ops; k++)
        if (net->ops[k].kind == LWFM_OP_CONV && net->ops[k].conv_index == i)
            return net->ops[k].name;
    return NULL;
}

/* A calibration pass: the forward on this thread, one chunk at a time
 * (ranges_base is the chunk's), with the context's observer (ranges or
 * histograms, read in op_input) set by the caller. The public calls
 * (lib/model.c) refuse models not loaded in fp32. */
static lwfm_status observed_forward(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h,
                                    int64_t w, float *out) {
    int64_t C, fh, fw;
    lwfm_status st = lwfm__net_out_shape(ctx->net, h, w, &C, &fh, &fw);
    return st ? st : forward_chunks(ctx, x, n, h, w, out, C * fh * fw);
}

lwfm_status lwfm__net_ranges(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h, int64_t w,
                             float *out, float *ranges) {
    ctx->ranges = ranges;
    lwfm_status st = observed_forward(ctx, x, n, h, w, out);
    ctx->ranges = NULL;
    return st;
}

lwfm_status lwfm__net_histograms(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h,
                                 int64_t w, float *out, const float *limits, int64_t bins,
                                 uint64_t *counts) {
    ctx->hist = counts;
    ctx->hist_limits = limits;
    ctx->hist_bins = bins;
    lwfm_status st = observed_forward(ctx, x, n, h, w, out);
    ctx->hist = NULL;
    return st;
}
