/* RCN's Conv4 (peers.md 4.1): four blocks layer{1..4} of conv 3x3 with bias
 * (padding 0 in layers 1-2, 1 in layers 3-4) + BN + ReLU, layers 1-2 followed
 * by 2x2 max pooling. Block ids 0..3 (84x84 input: 41, 19, 19, 19). */
#include <stdio.h>

#include "backbone/net_internal.h"
#include "core/core.h"

lwfm_status lwfm__build_conv4(lwfm__net *net, const lwfm__config *cfg, const lwfm__archive *ar,
                              const char *prefix) {
    lwfm_status st;
    char w[160], b[160], bn[160];
    int last = cfg->hyperpixel_ids[cfg->n_taps - 1];
    if (last > 3) return lwfm__error(LWFM_ERR_UNSUPPORTED, "conv4 has blocks 0..3, not %d", last);
    int cur = LWFM_NET_INPUT;
    for (int block = 0; block <= last; block++) {
        int conv_out = cur == 0 ? 1 : 0;
        snprintf(w, sizeof w, "%slayer%d.0.weight", prefix, block + 1);
        snprintf(b, sizeof b, "%slayer%d.0.bias", prefix, block + 1);
        snprintf(bn, sizeof bn, "%slayer%d.1", prefix, block + 1);
        if ((st = lwfm__net_add_conv(net, ar, w, b, bn, block == 0 ? cfg->input_channels : 64, 64,
                                     3, 1, block < 2 ? 0 : 1, cur, conv_out, 0, LWFM_ACT_RELU,
                                     0.0f)))
            return st;
        cur = conv_out;
        if (block < 2) {
            int pool_out = cur == 0 ? 1 : 0;
            if ((st = lwfm__net_add_maxpool(net, 64, 2, 2, 0, cur, pool_out))) return st;
            cur = pool_out;
        }
        lwfm__net_tap_block(net, cfg, block, 64);
    }
    return LWFM_OK;
}
