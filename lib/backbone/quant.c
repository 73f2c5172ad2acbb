/* int8 backbones: calibrated input ranges, input types and scales.
 *
 * A convolution runs as oneDNN's u8/s8 x s8 -> f32 convolution:
 *   input  q_x = round(x * levels_in / in_range), saturated (u8: 0..255 when
 *          the input is non-negative, after ReLU or max pooling of ReLU;
 *          s8: -127..127 otherwise: the normalised image, LeakyReLU maps,
 *          residual sums before their ReLU);
 *   weight q_w = round(w * 63 / w_max[o]) per output channel o (-63..63);
 *   output y = oscale[o] * (sum q_x q_w + q_bias[o]), with
 *          oscale[o] = (in_range / levels_in) * (w_max[o] / 63) and
 *          q_bias = bias / oscale (oneDNN v2 adds the bias before the output
 *          scale; checked against a plain convolution in
 *          tests/python/test_int8.py).
 * The destination stays f32, so residual sums, pooling, taps and the metric
 * are those of the fp32 path; except where the output only feeds one int8
 * conv (lwfm__quant_chain): it is then written quantised for that conv.
 *
 * Why 63 weight levels: AVX2 without VNNI sums pairs of u8 x s8 products in
 * 16 bits (vpmaddubsw), which saturates for |q_w| > 64; for an s8 input
 * oneDNN halves the weights itself on such CPUs (its s8s8 compensation).
 * The weights are rounded here and stored doubled for an s8 input (the
 * output scale halved), so that halving is exact: the same integers, and
 * the same results, on every CPU. */
#include <math.h>
#include <stdio.h>

#include "backbone/net_internal.h"
#include "core/core.h"

#define QUANT_TOOL "python3 -m lwfm.quantize MODEL.npz --data TRAINING_IMAGES"

lwfm_status lwfm__quant_read(lwfm__op *op, const lwfm__archive *ar) {
    char key[128];
    const float *v;
    snprintf(key, sizeof key, "quant/%s", op->name);
    op->in_range = 0.0f;
    const lwfm__tensor *t = lwfm__archive_find(ar, key);
    if (!t) return LWFM_OK;
    /* a float32 scalar, or a one-element vector (what np.ascontiguousarray,
     * and so lwfm.weights.save_weights, makes of a scalar) */
    const int64_t one = 1;
    lwfm_status st = lwfm__archive_get_f32(ar, key, t->ndim == 1 ? 1 : 0, &one, &v);
    if (st) return st;
    if (!(isfinite(*v) && *v > 0.0f))
        return lwfm__error(LWFM_ERR_FORMAT,
                           "tensor '%s' = %g: an int8 input range must be finite and > 0", key,
                           (double)*v);
    op->in_range = *v;
    return LWFM_OK;
}

#define W_LEVELS 63.0f

float lwfm__quant_in_scale(const lwfm__op *op) {
    return (op->q_dt == dnnl_u8 ? 255.0f : 127.0f) / op->in_range;
}

float lwfm__quant_w_store(const lwfm__op *op) {
    return op->q_dt == dnnl_u8 ? 1.0f : 2.0f;
}

/* Weight ranges, output scales and the rescaled bias of one conv. */
static lwfm_status conv_scales(lwfm__op *op) {
    const size_t per_oc = (size_t)op->ic * op->kh * op->kw;
    op->w_max = lwfm__alloc((size_t)op->oc * sizeof(float));
    op->oscale = lwfm__alloc((size_t)op->oc * sizeof(float));
    op->q_bias = lwfm__alloc((size_t)op->oc * sizeof(float));
    if (!op->w_max || !op->oscale || !op->q_bias)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory building the backbone");
    const float in_step = 1.0f / lwfm__quant_in_scale(op);
    for (int o = 0; o < op->oc; o++) {
        float m = 0.0f;
        for (size_t i = 0; i < per_oc; i++) m = fmaxf(m, fabsf(op->w_plain[o * per_oc + i]));
        op->w_max[o] = m > 0.0f ? m : 1.0f; /* an all-zero channel: any step will do */
        op->oscale[o] = in_step * (op->w_max[o] / W_LEVELS) / lwfm__quant_w_store(op);
        op->q_bias[o] = op->bias[o] / op->oscale[o];
        if (!(op->oscale[o] > 0.0f) || !isfinite(op->q_bias[o]))
            return lwfm__error(LWFM_ERR_FORMAT,
                               "tensor 'quant/%s' = %g is too small for int8: output channel "
                               "%d's bias overflows float32 at that step",
                               op->name, (double)op->in_range, o);
    }
    return LWFM_OK;
}

lwfm_status lwfm__quant_prepare(lwfm__net *net) {
    int nonneg[LWFM_NET_NBUF] = {0};
    for (int i = 0; i < net->n_ops; i++) {
        lwfm__op *op = &net->ops[i];
        int src_nonneg = op->src == LWFM_NET_INPUT ? 0 : nonneg[op->src];
        if (op->kind == LWFM_OP_MAXPOOL) {
            nonneg[op->dst] = src_nonneg;
            continue;
        }
        if (!(op->in_range > 0.0f))
            return lwfm__error(LWFM_ERR_MISSING_KEY,
                               "int8 needs a calibrated input range for every convolution, and "
                               "this file has no 'quant/%s'; add them with `" QUANT_TOOL "`",
                               op->name);
        op->q = 1;
        op->q_dt = src_nonneg ? dnnl_u8 : dnnl_s8;
        lwfm_status st = conv_scales(op);
        if (st) return st;
        nonneg[op->dst] = op->act == LWFM_ACT_RELU;
    }
    return LWFM_OK;
}

/* The one op that reads op i's output before it is overwritten, or -1 when
 * none, several, or an accumulating op (which adds to it in f32) does. */
static int sole_reader(const lwfm__net *net, int i) {
    const int b = net->ops[i].dst;
    int reader = -1, count = 0;
    for (int j = i + 1; j < net->n_ops; j++) {
        const lwfm__op *op = &net->ops[j];
        if (op->src == b) {
            reader = j;
            count++;
        }
        if (op->dst == b) {
            if (op->accumulate) return -1;
            break;
        }
    }
    return count == 1 ? reader : -1;
}

/* An op whose output stays f32: tapped, accumulating, or not int8. */
static int keeps_f32(const lwfm__op *op) {
    return op->tap >= 0 || op->accumulate || (op->kind == LWFM_OP_CONV && !op->q);
}

void lwfm__quant_chain(lwfm__net *net) {
    for (int i = 0; i < net->n_ops; i++) {
        lwfm__op *op = &net->ops[i];
        if (op->kind != LWFM_OP_CONV || keeps_f32(op)) continue;
        int pool = -1, next = sole_reader(net, i);
        if (next >= 0 && net->ops[next].kind == LWFM_OP_MAXPOOL && !keeps_f32(&net->ops[next])) {
            pool = next;
            next = sole_reader(net, pool);
        }
        if (next < 0 || net->ops[next].kind != LWFM_OP_CONV || !net->ops[next].q) continue;
        lwfm__op *to = &net->ops[next];
        const float s = lwfm__quant_in_scale(to);
        op->q_out = to->q_dt;
        for (int o = 0; o < op->oc; o++) op->oscale[o] *= s;
        if (pool >= 0) net->ops[pool].q_out = to->q_dt;
        to->q_ready = 1;
    }
}

void lwfm__quant_round_weights(lwfm__op *op) {
    const size_t per_oc = (size_t)op->ic * op->kh * op->kw;
    for (int o = 0; o < op->oc; o++)
        for (size_t i = 0; i < per_oc; i++)
            op->w_plain[o * per_oc + i] =
                rintf(op->w_plain[o * per_oc + i] * (W_LEVELS / op->w_max[o]));
}

void lwfm__quant_observe(const float *src, int64_t n, size_t bytes, float *ranges,
                         int64_t stride) {
    const size_t per = bytes / sizeof(float) / (size_t)n;
    for (int64_t k = 0; k < n; k++) {
        float m = 0.0f;
        const float *x = src + (size_t)k * per;
        for (size_t i = 0; i < per; i++) m = fmaxf(m, fabsf(x[i]));
        ranges[k * stride] = m;
    }
}

static int64_t hist_bin(float x, double scale, int64_t bins) {
    /* x * scale + bins / 2: 0 falls exactly on the boundary bins / 2 */
    double b = floor((double)x * scale + 0.5 * (double)bins);
    /* !(b >= 0) also takes NaN (no finite image makes one, but converting
     * it to an integer would be undefined) */
    return !(b >= 0.0) ? 0 : b >= (double)bins ? bins - 1 : (int64_t)b;
}

void lwfm__quant_histogram(const float *src, int64_t n, size_t bytes, size_t logical, float limit,
                           int64_t bins, uint64_t *counts) {
    const size_t per = bytes / sizeof(float) / (size_t)n;
    const double scale = 0.5 * (double)bins / (double)limit;
    for (size_t i = 0; i < per * (size_t)n; i++) counts[hist_bin(src[i], scale, bins)]++;
    /* A blocked layout stores its padding channels as zeros (oneDNN keeps
     * them zero): take them back out of the bin of 0 (a percentile of the
     * values would otherwise count them). */
    const uint64_t pad = (uint64_t)(per - (logical < per ? logical : per)) * (uint64_t)n;
    uint64_t *zero = &counts[hist_bin(0.0f, scale, bins)];
    *zero -= pad < *zero ? pad : *zero;
}
