/* RCN region comparison head (peers.md section 4), eval-mode BatchNorm:
 * region similarities (best cosine of each support region over the query's
 * regions), meta-learner region weights (1x1 convs over the same cell of the
 * support and query maps) and their weighted sum, averaged per class.
 * Private to liblwfm. */
#ifndef LWFM_HEADS_RCN_H
#define LWFM_HEADS_RCN_H

#include <stdint.h>

#include "core/arena.h"
#include "io/npz.h"
#include "lwfm/lwfm.h"

/* Prepared images (n of P regions each): X (n x P x C, position-major),
 * A = W0s X (n x P x out0: the meta-learner's first layer on a support
 * cell), B = W0q X + b0 (n x P x out0: on a query cell), norm (n x P: |X|). */
typedef struct lwfm__rcn_side {
    int64_t n, P;
    float *X, *A, *B, *norm;
} lwfm__rcn_side;

#define LWFM_RCN_MAX_LAYERS 8

/* The meta-learner, BatchNorm folded: layer i maps in[i] -> out[i] channels,
 * y = relu(W_i x + b_i); W_i is (out, in) row-major. in[0] = 2C (support
 * cell first, then the query cell), out[last] = 1. */
typedef struct lwfm__rcn {
    int n_layers;
    /* batch-statistics BatchNorm (config batch_norm 'batch', peers.md 4.7):
     * w, w0s, w0q hold the raw convolutions, b is 0, and g / beta the
     * BatchNorm scale and shift, applied with the statistics of all the
     * (query, support, cell) rows of a query batch. */
    int batch_stats;
    float *g[LWFM_RCN_MAX_LAYERS], *beta[LWFM_RCN_MAX_LAYERS];
    int in[LWFM_RCN_MAX_LAYERS], out[LWFM_RCN_MAX_LAYERS];
    int widest; /* the largest out[i] (scratch sizes) */
    float *w[LWFM_RCN_MAX_LAYERS];
    float *b[LWFM_RCN_MAX_LAYERS];
    float *w0s, *w0q; /* the first layer split: (out0, C) each, row-major */
} lwfm__rcn;

/* Load `explain_network.meta_learner.{3i}.weight` (out, in, 1, 1) and the
 * BatchNorm `explain_network.meta_learner.{3i+1}.*` for i = 0, 1, ... */
lwfm_status lwfm__rcn_load(lwfm__rcn *h, const lwfm__archive *ar, int channels,
                           int batch_stats);
void lwfm__rcn_free(lwfm__rcn *h);

/* Fill s (buffers given, s->n = n, s->P = P) from n feature maps (C x P
 * each). */
lwfm_status lwfm__rcn_prepare(const lwfm_model *m, const lwfm__rcn *h, const float *feats,
                              int64_t n, int64_t P, lwfm__rcn_side *s);

lwfm_status lwfm__rcn_score(const lwfm_model *m, const lwfm__rcn *h, const lwfm__rcn_side *S,
                            const int32_t *labels, const int64_t *count, int64_t way,
                            const lwfm__rcn_side *Q, float *logits, lwfm__arena *arena);

/* One (support, query) pair (both prepared, one image each): sim[r], the
 * matched query region match[r] and the weight w[r] for the P support regions;
 * returns sum_r w[r] sim[r]. scratch: lwfm__rcn_pair_floats(P) floats. */
size_t lwfm__rcn_pair_floats(const lwfm__rcn *h, int64_t P);
double lwfm__rcn_pair(const lwfm_model *m, const lwfm__rcn *h, const lwfm__rcn_side *S, int64_t j,
                      const lwfm__rcn_side *Q, int64_t q, float *sim, int *match, float *w,
                      float *scratch);

#endif
