/* Conv-64F (DN4 / MML backbone, peers.md section 1): four blocks of
 * conv 3x3 (no bias) + BN + LeakyReLU(0.2), the first two followed by
 * 2x2 max pooling. Block ids 0..3 are the outputs of features.3, .7, .10, .13. */
#include <stdio.h>

#include "backbone/net_internal.h"
#include "core/core.h"

lwfm_status lwfm__build_conv64f(lwfm__net *net, const lwfm__config *cfg, const lwfm__archive *ar,
                                const char *prefix) {
    static const int conv_idx[4] = {0, 4, 8, 11};
    lwfm_status st;
    char w[160], bn[160];
    int last = cfg->hyperpixel_ids[cfg->n_taps - 1];
    if (last > 3) return lwfm__error(LWFM_ERR_UNSUPPORTED, "conv64f has blocks 0..3, not %d", last);
    int cur = LWFM_NET_INPUT;
    for (int block = 0; block <= last; block++) {
        int conv_out = cur == 0 ? 1 : 0;
        snprintf(w, sizeof w, "%sfeatures.%d.weight", prefix, conv_idx[block]);
        snprintf(bn, sizeof bn, "%sfeatures.%d", prefix, conv_idx[block] + 1);
        if ((st = lwfm__net_add_conv(net, ar, w, NULL, bn, block == 0 ? cfg->input_channels : 64,
                                     64, 3, 1, 1, cur, conv_out, 0, LWFM_ACT_LRELU, 0.2f)))
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
