/* Plain convolution stacks (Conv-64F of DN4 / MML, peers.md section 1; RCN's
 * Conv4, peers.md 4.1): one builder, parameterised by the lwfm__plain_conv
 * of the network's entry in the backbone table (table.c). */
#include <stdio.h>

#include "backbone/net_internal.h"
#include "core/core.h"

lwfm_status lwfm__build_plain_conv(lwfm__net *net, const lwfm__backbone *bb,
                                   const lwfm__config *cfg, const lwfm__archive *ar,
                                   const char *prefix) {
    const lwfm__plain_conv *sp = bb->spec;
    lwfm_status st;
    char w[160], b[160], bn[160];
    int last = cfg->hyperpixel_ids[cfg->n_taps - 1];
    int cur = LWFM_NET_INPUT;
    for (int block = 0; block <= last; block++) {
        int conv_out = cur == 0 ? 1 : 0;
        snprintf(w, sizeof w, "%s%s%d%s", prefix, sp->stem, sp->weight_id[block], sp->weight_key);
        if (sp->bias_key)
            snprintf(b, sizeof b, "%s%s%d%s", prefix, sp->stem, sp->weight_id[block], sp->bias_key);
        snprintf(bn, sizeof bn, "%s%s%d%s", prefix, sp->stem, sp->bn_id[block], sp->bn_key);
        if ((st = lwfm__net_add_conv(net, ar, w, sp->bias_key ? b : NULL, bn,
                                     block == 0 ? cfg->input_channels : sp->width, sp->width, 3, 1,
                                     sp->pad[block], cur, conv_out, 0, sp->act, sp->alpha)))
            return st;
        cur = conv_out;
        if (block < sp->pooled) {
            int pool_out = cur == 0 ? 1 : 0;
            if ((st = lwfm__net_add_maxpool(net, sp->width, 2, 2, 0, cur, pool_out))) return st;
            cur = pool_out;
        }
        lwfm__net_tap_block(net, cfg, block, sp->width);
    }
    return LWFM_OK;
}
