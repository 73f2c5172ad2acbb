/* The one list of backbones (see net.h): a new network is a builder (or a
 * plain stack's parameters) plus one entry below. */
#include <string.h>

#include "backbone/net_internal.h"

/* Conv-64F (DN4 / MML, peers.md section 1): conv 3x3 (no bias) + BN +
 * LeakyReLU(0.2), blocks 0-1 followed by 2x2 max pooling; block ids 0..3 are
 * the outputs of features.3, .7, .10, .13. */
static const lwfm__plain_conv kConv64F = {
    .stem = "features.",
    .weight_key = ".weight",
    .bias_key = NULL,
    .bn_key = "",
    .weight_id = {0, 4, 8, 11},
    .bn_id = {1, 5, 9, 12},
    .pad = {1, 1, 1, 1},
    .act = LWFM_ACT_LRELU,
    .alpha = 0.2f,
    .pooled = 2,
    .width = 64,
};

/* RCN's Conv4 (peers.md 4.1): layer{1..4} of conv 3x3 with bias (padding 0
 * in layers 1-2, 1 in layers 3-4) + BN + ReLU, layers 1-2 followed by 2x2
 * max pooling; block ids 0..3 (84x84 input: 41, 19, 19, 19). */
static const lwfm__plain_conv kConv4 = {
    .stem = "layer",
    .weight_key = ".0.weight",
    .bias_key = ".0.bias",
    .bn_key = ".1",
    .weight_id = {1, 2, 3, 4},
    .bn_id = {1, 2, 3, 4},
    .pad = {0, 0, 1, 1},
    .act = LWFM_ACT_RELU,
    .alpha = 0.0f,
    .pooled = 2,
    .width = 64,
};

static const lwfm__backbone kBackbones[] = {
    {.kind = LWFM_BACKBONE_RESNET18,
     .name = "resnet18",
     .build = lwfm__build_resnet18,
     .blocks = 9,
     .n_default_taps = 2,
     .default_taps = {7, 8},
     .first_weight = "initial_block.conv1.weight",
     .first_padding = 1},
    {.kind = LWFM_BACKBONE_CONV64F,
     .name = "conv64f",
     .build = lwfm__build_plain_conv,
     .spec = &kConv64F,
     .blocks = 4,
     .n_default_taps = 1,
     .default_taps = {3},
     .first_weight = "features.0.weight"},
    {.kind = LWFM_BACKBONE_RESNET12,
     .name = "resnet12",
     .build = lwfm__build_resnet12,
     .blocks = 4,
     .n_default_taps = 1,
     .default_taps = {3},
     .first_weight = "layer1.0.conv1.weight"},
    {.kind = LWFM_BACKBONE_CONV4,
     .name = "conv4",
     .build = lwfm__build_plain_conv,
     .spec = &kConv4,
     .blocks = 4,
     .n_default_taps = 1,
     .default_taps = {3},
     .first_weight = "layer1.0.weight"},
};

const lwfm__backbone *lwfm__backbone_get(lwfm__backbone_kind kind) {
    for (size_t i = 0; i < sizeof kBackbones / sizeof kBackbones[0]; i++)
        if (kBackbones[i].kind == kind) return &kBackbones[i];
    return NULL;
}

const lwfm__backbone *lwfm__backbone_find(const char *name) {
    for (size_t i = 0; i < sizeof kBackbones / sizeof kBackbones[0]; i++)
        if (!strcmp(kBackbones[i].name, name)) return &kBackbones[i];
    return NULL;
}
