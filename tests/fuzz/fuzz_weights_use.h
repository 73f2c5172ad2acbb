/* What fuzz_weights.c and fuzz_members.c share: their load options
 * (g_opts, LLVMFuzzerInitialize) and use_model(), what they do with a model that
 * loaded (configuration JSON, shapes, features of three images, an episode
 * on them, the per-pair views), checking the output canaries. Included by
 * the targets (a static function each). */
#ifndef LWFM_FUZZ_WEIGHTS_USE_H
#define LWFM_FUZZ_WEIGHTS_USE_H

#include "fuzz_common.h"

/* Load options of both targets, set up once by libFuzzer (g_opts_int8:
 * the same in int8, which reads and checks the quant/ members). */
static lwfm_load_options *g_opts, *g_opts_int8;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    FUZZ_CHECK(lwfm_load_options_create(&g_opts) == LWFM_OK);
    /* keep one run's memory far below libFuzzer's -rss_limit_mb */
    FUZZ_CHECK(lwfm_load_options_set_max_total_bytes(g_opts, (uint64_t)64 << 20) == LWFM_OK);
    FUZZ_CHECK(lwfm_load_options_create(&g_opts_int8) == LWFM_OK);
    FUZZ_CHECK(lwfm_load_options_set_max_total_bytes(g_opts_int8, (uint64_t)64 << 20) == LWFM_OK);
    FUZZ_CHECK(lwfm_load_options_set_precision(g_opts_int8, LWFM_PRECISION_INT8) == LWFM_OK);
    return 0;
}

#define CANARY_FLOATS 8
#define CANARY 0x5a

static int canary_ok(const float *buf, size_t from, size_t total) {
    const unsigned char *b = (const unsigned char *)(buf + from);
    for (size_t i = 0; i < (total - from) * sizeof(float); i++)
        if (b[i] != CANARY) return 0;
    return 1;
}

static void use_model(lwfm_model *m) {
    size_t len = 0;
    lwfm_status st = lwfm_model_config_json(m, NULL, 0, &len);
    FUZZ_CHECK(st == LWFM_ERR_BUFFER_TOO_SMALL && len > 0);
    char *json = malloc(len + 1);
    FUZZ_CHECK(json && lwfm_model_config_json(m, json, len + 1, NULL) == LWFM_OK);
    FUZZ_CHECK(strlen(json) == len && json[0] == '{' && json[len - 1] == '}');
    free(json);

    int64_t c = 0, h = 0, w = 0;
    FUZZ_CHECK(lwfm_model_input_shape(m, &c, &h, &w) == LWFM_OK);
    FUZZ_CHECK(c >= 1 && c <= 4 && h >= 8 && h == w);
    if (h > 40) return; /* the backbone on large inputs: too slow to fuzz */
    int64_t C, fh, fw;
    if ((st = lwfm_model_feature_shape(m, h, w, &C, &fh, &fw))) {
        FUZZ_CHECK_FAILURE(st);
        return;
    }
    FUZZ_CHECK(C >= 1 && fh >= 1 && fw >= 1);
    const size_t per_image = (size_t)(c * h * w), per_feat = (size_t)(C * fh * fw);
    if (per_feat > ((size_t)1 << 20)) return;
    /* three images: two supports (classes 0 and 1) and one query */
    float *img = malloc(3 * per_image * sizeof(float));
    float *feat = malloc((3 * per_feat + CANARY_FLOATS) * sizeof(float));
    FUZZ_CHECK(img && feat);
    uint64_t seed = 42;
    for (size_t i = 0; i < 3 * per_image; i++)
        img[i] = (float)((double)(fuzz_mix(&seed) >> 11) * 0x1p-53 * 4.0 - 2.0);
    memset(feat, CANARY, (3 * per_feat + CANARY_FLOATS) * sizeof(float));
    st = lwfm_model_features(m, img, 3, c, h, w, feat, 3 * per_feat);
    FUZZ_CHECK(canary_ok(feat, 3 * per_feat, 3 * per_feat + CANARY_FLOATS));
    if (st) {
        FUZZ_CHECK_FAILURE(st);
        FUZZ_CHECK(canary_ok(feat, 0, 3 * per_feat + CANARY_FLOATS));
        goto out;
    }
    /* random-ish weights can overflow to inf: the episode must then refuse */
    const int32_t labels[2] = {0, 1};
    float logits[2 + CANARY_FLOATS];
    memset(logits, CANARY, sizeof logits);
    st = lwfm_episode_score_features(m, feat, 2, labels, feat + 2 * per_feat, 1, C, fh, fw, 2,
                                     logits, 2);
    if (st) {
        FUZZ_CHECK_FAILURE(st);
        FUZZ_CHECK(canary_ok(logits, 0, 2 + CANARY_FLOATS));
    } else {
        FUZZ_CHECK(canary_ok(logits, 2, 2 + CANARY_FLOATS));
    }

    /* the per-pair views, where the method has them */
    const size_t L = (size_t)lwfm_model_layers(m), P = (size_t)(fh * fw);
    if (L == 0 || L * P > ((size_t)1 << 16)) goto out;
    float *a = malloc(L * P * sizeof(float)), *b = malloc(L * P * sizeof(float));
    float *d = malloc(L * sizeof(float));
    int64_t *as = malloc(L * P * sizeof(int64_t));
    float g = 0;
    FUZZ_CHECK(a && b && d && as);
    lwfm_lwe *lwe = NULL;
    if (!lwfm_lwe_create(&lwe, m)) {
        st = lwfm_lwe_pair(lwe, feat, feat + 2 * per_feat, C, fh, fw, a, b, L * P, &g);
        if (st) FUZZ_CHECK_FAILURE(st);
        lwfm_lwe_destroy(lwe);
    }
    lwfm_spm *spm = NULL;
    if (!lwfm_spm_create(&spm, m)) {
        st = lwfm_spm_pair(spm, feat, feat + 2 * per_feat, C, fh, fw, as, a, d, L * P, &g);
        if (st) FUZZ_CHECK_FAILURE(st);
        lwfm_spm_destroy(spm);
    }
    lwfm_rcn *rcn = NULL;
    if (!lwfm_rcn_create(&rcn, m)) {
        st = lwfm_rcn_pair(rcn, feat, feat + 2 * per_feat, C, fh, fw, a, as, b, L * P, &g);
        if (st) FUZZ_CHECK_FAILURE(st);
        lwfm_rcn_destroy(rcn);
    }
    free(a);
    free(b);
    free(d);
    free(as);
out:
    free(img);
    free(feat);
}

#endif
