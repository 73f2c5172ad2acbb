/* Private to lib/backbone: the op list a backbone builder produces. */
#ifndef LWFM_BACKBONE_NET_INTERNAL_H
#define LWFM_BACKBONE_NET_INTERNAL_H

#include "backbone/net.h"
#include "backbone/winograd.h"

typedef enum lwfm__op_kind { LWFM_OP_CONV, LWFM_OP_MAXPOOL } lwfm__op_kind;
typedef enum lwfm__act { LWFM_ACT_NONE, LWFM_ACT_RELU, LWFM_ACT_LRELU } lwfm__act;

#define LWFM_NET_INPUT (-1) /* buffer id of the network input */
#define LWFM_NET_NBUF 3     /* activation buffers a backbone may use */

typedef struct lwfm__op {
    lwfm__op_kind kind;
    int src, dst;   /* buffer ids; src may be LWFM_NET_INPUT */
    int accumulate; /* conv: add the result to what dst already holds */
    int ic, oc;     /* channels in and out (equal for pooling) */
    int kh, kw, sh, sw, ph, pw;
    lwfm__act act;
    float alpha; /* negative slope for LWFM_ACT_LRELU */
    int tap;     /* tap slot this op's output feeds, or -1 */
    /* convolution parameters (owned) */
    float *w_plain; /* folded OIHW weights until the net is finalised */
    void *w_data;   /* weights in compute layout, described by w_md */
    dnnl_memory_desc_t w_md;
    float *bias;   /* oc floats (folded BatchNorm shift) */
    /* Batch-statistics BatchNorm (net->bn_batch): the BatchNorm is not
     * folded; bias is the conv's own, bn_g / bn_b its scale and shift (oc
     * floats each), the statistics come from each forward's batch. */
    float *bn_g, *bn_b;
    char name[96]; /* key of the conv weight, for messages */
    int conv_index; /* position among the net's convolutions (calibration order) */
    /* int8 (quant.c; docs/weight-format.md, "quant/"): in_range is the
     * calibrated largest |input| (0: the file has none). An op with q set
     * quantises its input to q_dt (u8 when it is non-negative, else s8) and
     * runs an s8-weight convolution with an f32 destination. */
    float in_range;
    int q;
    dnnl_data_type_t q_dt;
    float *w_max;  /* oc: largest |folded weight| per output channel */
    float *oscale; /* oc: output scales (input step x weight step) */
    float *q_bias; /* oc: bias / oscale (oneDNN v2 adds the bias before the scale) */
    /* int8 chains (lwfm__quant_chain): q_out is the type this op writes when
     * its output only feeds one int8 conv (directly or through a max pool),
     * already quantised at that conv's input scale (0: f32); q_ready marks
     * that conv, which then reads its buffer as it is. */
    dnnl_data_type_t q_out;
    int q_ready;
    /* fp32 3x3 stride-1 convs on AVX2: our Winograd kernels (winograd.h)
     * hold the weights instead of oneDNN (w_data stays NULL) */
    lwfm__wino *wino;
} lwfm__op;

struct lwfm__net {
    dnnl_engine_t engine;
    lwfm_precision precision;
    lwfm_convolutions convolutions; /* the load option (use_winograd) */
    int bn_batch; /* BatchNorm with batch statistics (rcn's transductive mode) */
    int in_channels;
    lwfm__op *ops;
    int n_ops, cap_ops;
    int n_convs;
    int n_taps;
    int tap_channels[LWFM_MAX_TAPS];
    int tap_offset[LWFM_MAX_TAPS];
    int out_channels;
    int feature_size;
    int canonical_h, canonical_w; /* the model's image size: weights are laid out for it */
    dnnl_format_tag_t act_tag;    /* activation layout oneDNN prefers on this CPU */
    dnnl_format_tag_t in_tag;     /* layout the first layer reads (nchw, else act_tag) */
};

/* Builder API used by the per-architecture files. `conv_key` names the
 * (oc, ic, kh, kw) weight; `bn_prefix` (may be NULL) names BatchNorm
 * tensors "<bn_prefix>.weight/.bias/.running_mean/.running_var" folded into
 * the conv; `bias_key` (may be NULL) names a conv bias. */
lwfm_status lwfm__net_add_conv(lwfm__net *net, const lwfm__archive *ar, const char *conv_key,
                               const char *bias_key, const char *bn_prefix, int ic, int oc, int k,
                               int stride, int pad, int src, int dst, int accumulate, lwfm__act act,
                               float alpha);
lwfm_status lwfm__net_add_maxpool(lwfm__net *net, int channels, int k, int stride, int pad, int src,
                                  int dst);
/* Mark the output of the last op added as tap slot `slot`. */
void lwfm__net_mark_tap(lwfm__net *net, int slot);
/* The last op added ends block `block`: mark it as the tap of that block when
 * the configuration taps it (with `channels` channels). */
void lwfm__net_tap_block(lwfm__net *net, const lwfm__config *cfg, int block, int channels);

/* int8 (quant.c). Read and validate `quant/<op name>` into op->in_range
 * when the archive has it (every precision). */
lwfm_status lwfm__quant_read(lwfm__op *op, const lwfm__archive *ar);
/* Pick each conv's input type (u8 after ReLU / max pooling of ReLU, else
 * s8) and its scales; fails naming the calibration tool when a range is
 * missing. Before finalise: needs the plain weights. */
lwfm_status lwfm__quant_prepare(lwfm__net *net);
/* Let a conv whose output feeds only one int8 conv (directly, or through a
 * max pool that is not tapped) write it quantised, pooled in int8; after
 * lwfm__quant_prepare and the f32 fallbacks. Max pooling commutes with the
 * (monotonic) quantisation, so only float rounding differs from quantising
 * the pooled f32 map. */
void lwfm__quant_chain(lwfm__net *net);
/* The reorder scales of op's input (f32 -> u8/s8) and of its weights (the
 * integers q_w -> what is stored: 1, or 2 for an s8 input). */
float lwfm__quant_in_scale(const lwfm__op *op);
float lwfm__quant_w_store(const lwfm__op *op);
/* op's plain weights into the integers q_w (when it is finalised: a conv
 * that falls back to f32 keeps its weights). */
void lwfm__quant_round_weights(lwfm__op *op);
/* Per image, the largest |value| of `src` (n images of `bytes` f32 bytes in
 * all, image-major) into ranges[k * stride]. */
void lwfm__quant_observe(const float *src, int64_t n, size_t bytes, float *ranges,
                         int64_t stride);
/* Adds to counts[b] the values of `src` (n images of `bytes` f32 bytes in
 * all, image-major, `logical` values each and zero padding after them in
 * storage order or not) in bin b of `bins` over [-limit, limit]. */
void lwfm__quant_histogram(const float *src, int64_t n, size_t bytes, size_t logical, float limit,
                           int64_t bins, uint64_t *counts);

/* The builders of the backbone table (table.c). */
lwfm_status lwfm__build_resnet18(lwfm__net *net, const lwfm__backbone *bb,
                                 const lwfm__config *cfg, const lwfm__archive *ar,
                                 const char *prefix);
lwfm_status lwfm__build_resnet12(lwfm__net *net, const lwfm__backbone *bb,
                                 const lwfm__config *cfg, const lwfm__archive *ar,
                                 const char *prefix);

/* A plain stack of blocks conv 3x3 (+ bias) + BN + activation, the first
 * `pooled` of them followed by 2x2 max pooling, all `width` channels wide
 * (Conv-64F, Conv4). Block b's tensors are
 *   prefix stem <weight_id[b]> weight_key   (conv weight)
 *   prefix stem <weight_id[b]> bias_key     (conv bias, when bias_key)
 *   prefix stem <bn_id[b]> bn_key           (BatchNorm prefix). */
#define LWFM_PLAIN_MAX_BLOCKS 4
typedef struct lwfm__plain_conv {
    const char *stem, *weight_key, *bias_key, *bn_key;
    int weight_id[LWFM_PLAIN_MAX_BLOCKS], bn_id[LWFM_PLAIN_MAX_BLOCKS];
    int pad[LWFM_PLAIN_MAX_BLOCKS];
    lwfm__act act;
    float alpha;
    int pooled, width;
} lwfm__plain_conv;

/* Builder of the plain stacks; bb->spec is their lwfm__plain_conv. */
lwfm_status lwfm__build_plain_conv(lwfm__net *net, const lwfm__backbone *bb,
                                   const lwfm__config *cfg, const lwfm__archive *ar,
                                   const char *prefix);

#endif
