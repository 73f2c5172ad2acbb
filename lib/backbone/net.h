/* Backbone networks on oneDNN (v2 C API).
 *
 * lwfm__net is immutable once built: the layer list with BatchNorm folded
 * into the convolutions and weights reordered once into oneDNN's compute
 * layout. lwfm__net_ctx is a per-thread execution context holding plans
 * (primitives + activation buffers) per input shape. */
#ifndef LWFM_BACKBONE_NET_H
#define LWFM_BACKBONE_NET_H

#include <dnnl.h>
#include <stdint.h>

#include "config.h"
#include "io/npz.h"

typedef struct lwfm__net lwfm__net;
typedef struct lwfm__net_ctx lwfm__net_ctx;

/* The backbone table (table.c): one entry per network. */
typedef struct lwfm__backbone lwfm__backbone;
struct lwfm__backbone {
    lwfm__backbone_kind kind; /* config's backbone value */
    const char *name;         /* config/backbone */
    /* Add the ops of blocks 0..last tapped block (< blocks) to net; tensor
     * names are prefix + the network's own keys (the prefix is the method's:
     * lwfm__method.weight_prefix). */
    lwfm_status (*build)(struct lwfm__net *net, const lwfm__backbone *bb, const lwfm__config *cfg,
                         const lwfm__archive *ar, const char *prefix);
    const void *spec;          /* the builder's parameters (plain convolution stacks) */
    int blocks;                /* block ids 0..blocks-1 */
    int n_default_taps;        /* taps when the config names none: */
    int default_taps[2];       /* the last block(s) */
    const char *first_weight;  /* the first convolution's weight key: gives input channels */
    int first_padding;         /* 1: config 'first_padding' applies (its stem padding) */
};

/* The entry of a config backbone value; NULL when there is none. */
const lwfm__backbone *lwfm__backbone_get(lwfm__backbone_kind kind);
/* The entry named `name` (config/backbone); NULL when there is none. */
const lwfm__backbone *lwfm__backbone_find(const char *name);

/* Build the backbone described by cfg from the archive tensors (names are
 * lwfm__backbone_prefix(cfg) + the backbone's own keys); `convolutions`:
 * the load option (which fp32 3x3 convolutions run as Winograd). */
lwfm_status lwfm__net_build(lwfm__net **out, const lwfm__config *cfg, const lwfm__archive *ar,
                            lwfm_precision precision, lwfm_convolutions convolutions);
void lwfm__net_free(lwfm__net *net);

/* Output feature shape for an input of h x w: channels, fh, fw. */
lwfm_status lwfm__net_out_shape(const lwfm__net *net, int64_t h, int64_t w, int64_t *c, int64_t *fh,
                                int64_t *fw);
int lwfm__net_tap_channels(const lwfm__net *net, int tap);

lwfm_status lwfm__net_ctx_create(lwfm__net_ctx **out, const lwfm__net *net);
void lwfm__net_ctx_free(lwfm__net_ctx *ctx);

/* Forward n images (n x c x h x w, NCHW f32, already validated) into out
 * (n x C x fh x fw). */
lwfm_status lwfm__net_forward(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h, int64_t w,
                              float *out);

/* The convolutions, in the order the forward runs them: their count and
 * the weight key of number i (NULL when out of range). */
int lwfm__net_convs(const lwfm__net *net);
const char *lwfm__net_conv_name(const lwfm__net *net, int i);

/* int8 calibration: lwfm__net_forward on the fp32 net, also writing, per
 * image k and convolution i, the largest |value| it reads into
 * ranges[k * lwfm__net_convs(net) + i]. */
lwfm_status lwfm__net_ranges(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h, int64_t w,
                             float *out, float *ranges);

/* int8 calibration: lwfm__net_forward on the fp32 net, also adding to
 * counts[i * bins + b] how many values convolution i reads fall in bin b of
 * `bins` equal bins over [-limits[i], limits[i]] (outside: the end bins). */
lwfm_status lwfm__net_histograms(lwfm__net_ctx *ctx, const float *x, int64_t n, int64_t h,
                                 int64_t w, float *out, const float *limits, int64_t bins,
                                 uint64_t *counts);

#endif
