/* Model configuration: read from the "config/..." arrays of a weight file
 * (docs/weight-format.md), validated, and rendered as JSON. */
#ifndef LWFM_CONFIG_H
#define LWFM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "io/npz.h"
#include "lwfm/lwfm.h"

#define LWFM_MAX_TAPS 16
#define LWFM_FORMAT_VERSION 1

typedef enum lwfm__backbone_kind {
    LWFM_BACKBONE_RESNET18 = 0,
    LWFM_BACKBONE_CONV64F = 1,
    LWFM_BACKBONE_RESNET12 = 2,
    LWFM_BACKBONE_CONV4 = 3 /* RCN's Conv4 */
} lwfm__backbone_kind;

/* MML distribution-level distance (peers.md 3.3). */
typedef enum lwfm__mml_distance {
    LWFM_MML_WASS = 0, /* the authors' surrogate |mu_q - mu_c| / C + |S_q - S_c|_F / C^2 */
    LWFM_MML_KL = 1,   /* KL(class Gaussian || query Gaussian) */
    LWFM_MML_W2 = 2    /* exact 2-Wasserstein distance between the Gaussians */
} lwfm__mml_distance;

/* rcn, batch-statistics BatchNorm: the authors' 25 queries per forward
 * (peers.md 4.6) by default, at most this many. */
#define LWFM_RCN_QUERY_BATCH 25
#define LWFM_RCN_QUERY_BATCH_MAX 4096

typedef struct lwfm__config {
    int format_version;
    lwfm_method method;
    lwfm__backbone_kind backbone;
    int input_channels; /* from the first conv weight (1 or 3) */
    int first_padding;  /* resnet18 stem padding */
    int n_taps;
    int hyperpixel_ids[LWFM_MAX_TAPS];
    int feature_size; /* 0: taps kept at native size */
    double temperature;
    double temperature_attn;
    /* Probabilities (any method): softmax(logits / calibration_temperature),
     * fitted on held-out classes (lwfm.calibrate; 1: uncalibrated), and the
     * fitted "none of these" threshold on the top probability (0: none). */
    double calibration_temperature;
    double unknown_threshold;
    double matcher_prob;
    int learnable_matcher;
    int top_k;
    int neighbor_k; /* dn4 / mml */
    lwfm__mml_distance distance; /* mml */
    int bn_batch;    /* rcn: BatchNorm with batch statistics (peers.md 4.7), else running */
    int query_batch; /* rcn with bn_batch: queries per batch (backbone and meta-learner) */
    int image_size;
    int resize;
    int n_norm; /* entries in mean/std: 1 or 3 */
    int n_std;  /* entries read for std (must equal n_norm) */
    double mean[3];
    double std[3];
} lwfm__config;

const char *lwfm__method_name(lwfm_method m);
const char *lwfm__backbone_name(lwfm__backbone_kind b);
const char *lwfm__distance_name(lwfm__mml_distance d);

/* Parse and validate the configuration against the table of keys in
 * config.c (the schema of lwfm_config_schema_json()); every violated rule
 * gives a status and a message naming the key. */
lwfm_status lwfm__config_read(lwfm__config *cfg, const lwfm__archive *ar);

/* Key prefix of the backbone's tensors for this method
 * ("feature_extractor." for lwfm-spm, "" for dn4/mml). */
const char *lwfm__backbone_prefix(const lwfm__config *cfg);

/* JSON rendering; returns the length needed (without NUL), writes at most
 * cap bytes (always NUL-terminated when cap > 0). */
size_t lwfm__config_json(const lwfm__config *cfg, char *buf, size_t cap);

#endif
