/* Winograd convolution F(m x m, 3 x 3) for the 3x3, stride-1, pad-1 layers
 * of the fp32 backbones, on CPUs with AVX2 and FMA (docs/internals.md,
 * "Winograd"). oneDNN 2.6 has Winograd only for AVX-512; below it every 3x3
 * conv ran as a direct convolution, which needs (m + 2)^2 / (9 m^2) fewer
 * multiplies here: 3.2x fewer for m = 3, 3.4x for m = 4.
 *
 * Activations are in oneDNN's nChw8c layout (the net's layout on AVX2) or
 * nChw16c (AVX-512, where the net uses these kernels only when asked:
 * LWFM_WINOGRAD=1, unmeasured there so far).
 * Each output is a fixed sequence of fused multiply-adds whatever the batch
 * size, the tile's position in the batch or the thread count, so results do
 * not depend on how a batch is split. Private to lib/backbone. */
#ifndef LWFM_BACKBONE_WINOGRAD_H
#define LWFM_BACKBONE_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>

#include "lwfm/lwfm.h"

typedef struct lwfm__wino lwfm__wino;

/* Whether this CPU runs the Winograd kernels (AVX2 and FMA). */
int lwfm__wino_cpu_ok(void);

/* The output tile size m (2, 3 or 4) needing the fewest multiplies for an
 * h x w output map. */
int lwfm__wino_pick_tile(int64_t h, int64_t w);

/* Transform folded OIHW 3x3 weights (oc x ic x 3 x 3) for tile size m and
 * activations in nChw<blk>c (blk 8 or 16). Needs ic % blk == 0 and
 * oc % 16 == 0. The weights are transformed in double precision and rounded
 * once. */
lwfm_status lwfm__wino_create(lwfm__wino **out, const float *w, int oc, int ic, int m, int blk);
void lwfm__wino_free(lwfm__wino *wg);
/* Bytes of the transformed weights (what the net holds instead of oneDNN's). */
size_t lwfm__wino_bytes(const lwfm__wino *wg);
/* Scratch bytes one forward of n images of h x w needs. */
size_t lwfm__wino_scratch(const lwfm__wino *wg, int64_t n, int64_t h, int64_t w);

/* dst = act(conv(src) + bias [+ dst when accumulate]), src and dst n x C x h
 * x w in the layout given at create; act: slope 0 is ReLU, a negative slope LeakyReLU, and
 * !activate none. Threads: the caller's OpenMP team when not already in a
 * parallel region. */
void lwfm__wino_run(const lwfm__wino *wg, const float *src, int64_t n, int64_t h, int64_t w,
                    float *dst, const float *bias, int accumulate, int activate, float slope,
                    void *scratch);

#endif
