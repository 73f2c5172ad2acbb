/* ResNet-12 (peers.md 4.1; the field's standard widths 64-160-320-640): four
 * stages layer{1..4}.0, each conv1-BN-LReLU(0.1)-conv2-BN-LReLU(0.1)-conv3-BN
 * plus a 1x1 conv + BN shortcut, then add, LReLU(0.1) and 2x2 max pooling.
 * Block ids 0..3 are the stage outputs (84x84 input: 42, 21, 10, 5). */
#include <stdio.h>

#include "backbone/net_internal.h"
#include "core/core.h"

static const int kWidth[4] = {64, 160, 320, 640};
#define SLOPE 0.1f

lwfm_status lwfm__build_resnet12(lwfm__net *net, const lwfm__backbone *bb,
                                 const lwfm__config *cfg, const lwfm__archive *ar,
                                 const char *prefix) {
    lwfm_status st;
    char w[160], bn[160];
    int last = cfg->hyperpixel_ids[cfg->n_taps - 1];
    (void)bb; /* blocks 0..last checked by lwfm__net_build */
    int cur = LWFM_NET_INPUT;
    for (int block = 0; block <= last; block++) {
        int in_c = block == 0 ? cfg->input_channels : kWidth[block - 1], out_c = kWidth[block];
        /* the two activation buffers other than `cur` (any two for the input) */
        int a = cur == LWFM_NET_INPUT ? 0 : (cur + 1) % LWFM_NET_NBUF;
        int b = cur == LWFM_NET_INPUT ? 1 : (cur + 2) % LWFM_NET_NBUF;
        int l = block + 1;
        snprintf(w, sizeof w, "%slayer%d.0.conv1.weight", prefix, l);
        snprintf(bn, sizeof bn, "%slayer%d.0.bn1", prefix, l);
        if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, in_c, out_c, 3, 1, 1, cur, a, 0,
                                     LWFM_ACT_LRELU, SLOPE)))
            return st;
        snprintf(w, sizeof w, "%slayer%d.0.conv2.weight", prefix, l);
        snprintf(bn, sizeof bn, "%slayer%d.0.bn2", prefix, l);
        if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, out_c, out_c, 3, 1, 1, a, b, 0,
                                     LWFM_ACT_LRELU, SLOPE)))
            return st;
        /* shortcut into `a` (free again), then conv3 + BN accumulated onto it,
         * LReLU fused; `cur` is free after the shortcut has read it */
        snprintf(w, sizeof w, "%slayer%d.0.downsample.0.weight", prefix, l);
        snprintf(bn, sizeof bn, "%slayer%d.0.downsample.1", prefix, l);
        if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, in_c, out_c, 1, 1, 0, cur, a, 0,
                                     LWFM_ACT_NONE, 0.0f)))
            return st;
        snprintf(w, sizeof w, "%slayer%d.0.conv3.weight", prefix, l);
        snprintf(bn, sizeof bn, "%slayer%d.0.bn3", prefix, l);
        if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, out_c, out_c, 3, 1, 1, b, a, 1,
                                     LWFM_ACT_LRELU, SLOPE)))
            return st;
        int pooled = cur == LWFM_NET_INPUT ? 2 : cur;
        if ((st = lwfm__net_add_maxpool(net, out_c, 2, 2, 0, a, pooled))) return st;
        cur = pooled;
        lwfm__net_tap_block(net, cfg, block, out_c);
    }
    return LWFM_OK;
}
