/* ResNet-18 (torchvision layout, eval-mode BatchNorm folded) with hyperpixel
 * taps: block 0 is the stem (conv 7x7/2, BN, ReLU, maxpool 3x3/2), blocks
 * 1..8 are the BasicBlocks of layer1..layer4 (spec section 2). */
#include <stdio.h>

#include "backbone/net_internal.h"
#include "core/core.h"

static const int kWidth[5] = {64, 64, 128, 256, 512}; /* stem, layer1..4 */

lwfm_status lwfm__build_resnet18(lwfm__net *net, const lwfm__backbone *bb,
                                 const lwfm__config *cfg, const lwfm__archive *ar,
                                 const char *prefix) {
    lwfm_status st;
    char w[160], bn[160];
    int last = cfg->hyperpixel_ids[cfg->n_taps - 1];
    (void)bb; /* blocks 0..last checked by lwfm__net_build */

    snprintf(w, sizeof w, "%sinitial_block.conv1.weight", prefix);
    snprintf(bn, sizeof bn, "%sinitial_block.bn1", prefix);
    if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, cfg->input_channels, 64, 7, 2,
                                 cfg->first_padding, LWFM_NET_INPUT, 0, 0, LWFM_ACT_RELU, 0.0f)))
        return st;
    if ((st = lwfm__net_add_maxpool(net, 64, 3, 2, 1, 0, 1))) return st;
    lwfm__net_tap_block(net, cfg, 0, 64);

    int cur = 1;
    for (int block = 1; block <= last; block++) {
        int layer = (block + 1) / 2, idx = (block + 1) % 2;
        int out_c = kWidth[layer];
        int in_c = idx == 0 ? kWidth[layer - 1] : out_c;
        int stride = (layer > 1 && idx == 0) ? 2 : 1;
        int t = (cur + 1) % LWFM_NET_NBUF, d = (cur + 2) % LWFM_NET_NBUF;
        snprintf(w, sizeof w, "%slayer%d.%d.conv1.weight", prefix, layer, idx);
        snprintf(bn, sizeof bn, "%slayer%d.%d.bn1", prefix, layer, idx);
        if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, in_c, out_c, 3, stride, 1, cur, t, 0,
                                     LWFM_ACT_RELU, 0.0f)))
            return st;
        int out = cur;
        if (stride != 1 || in_c != out_c) {
            snprintf(w, sizeof w, "%slayer%d.%d.downsample.0.weight", prefix, layer, idx);
            snprintf(bn, sizeof bn, "%slayer%d.%d.downsample.1", prefix, layer, idx);
            if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, in_c, out_c, 1, stride, 0, cur, d, 0,
                                         LWFM_ACT_NONE, 0.0f)))
                return st;
            out = d;
        }
        /* conv2 + BN, then += shortcut (already in `out`), then ReLU: fused. */
        snprintf(w, sizeof w, "%slayer%d.%d.conv2.weight", prefix, layer, idx);
        snprintf(bn, sizeof bn, "%slayer%d.%d.bn2", prefix, layer, idx);
        if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, out_c, out_c, 3, 1, 1, t, out, 1,
                                     LWFM_ACT_RELU, 0.0f)))
            return st;
        lwfm__net_tap_block(net, cfg, block, out_c);
        cur = out;
    }
    return LWFM_OK;
}
