/* Fuzz target: the support-set file reader (docs/support-format.md).
 *
 * Input: one flags byte, then the bytes of a support-set file. Flag bit 0:
 * recompute the file's CRC-32 before loading, so that mutations reach the
 * checks behind the CRC (header fields against the model, labels, names,
 * finite values) instead of stopping at the checksum. The bytes are loaded
 * with lwfm_support_load_from_memory() for each test model (LWFM-SPM on
 * Conv-64F, DN4, MML, the bundled RCN); a file is bound to one model by its
 * fingerprint, so at most one can accept it. Invariants:
 *  - no crash, no sanitizer report, no leak;
 *  - a failure is a known status with a message, *out untouched;
 *  - a set that loads saves back to exactly the bytes it was loaded from;
 *    its class names are valid; it scores a query (finite logits, or a
 *    clean failure) and grows by one image of class 0. */
#include <math.h>

#include "fuzz_common.h"

#define N_MODELS 4
static lwfm_model *g_m[N_MODELS];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    g_m[0] = fuzz_test_model("lwfm_tiny.npz");
    g_m[1] = fuzz_test_model("dn4_random.npz");
    g_m[2] = fuzz_test_model("mml_random.npz");
    g_m[3] = fuzz_bundled_model("omniglot-rcn.npz");
    return 0;
}

static uint32_t crc32_le(const uint8_t *p, size_t n) { /* zlib's CRC-32, bit by bit */
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    return ~c;
}

/* A loaded set: re-saved bytes, names, a score and one added image. */
static void use_set(lwfm_model *m, lwfm_support *s, const uint8_t *data, size_t size) {
    size_t n = 0;
    FUZZ_CHECK(lwfm_support_save_to_memory(s, NULL, 0, &n) == LWFM_OK && n == size);
    uint8_t *again = malloc(n);
    FUZZ_CHECK(again && lwfm_support_save_to_memory(s, again, n, NULL) == LWFM_OK);
    FUZZ_CHECK(memcmp(again, data, n) == 0);
    free(again);
    const int64_t way = lwfm_support_way(s);
    FUZZ_CHECK(way >= 2 && way <= LWFM_LIMIT_WAY && lwfm_support_count(s) >= way);
    for (int64_t k = 0; k < way; k++) {
        const char *name = lwfm_support_class_name(s, k);
        FUZZ_CHECK(!name || (name[0] && strlen(name) <= LWFM_LIMIT_CLASS_NAME));
    }
    /* a query of the set's positions: P x 1 feature maps (native taps) or
     * the model's fixed size */
    const uint32_t P = (uint32_t)(data[88] | data[89] << 8 | data[90] << 16 | (uint32_t)data[91] << 24);
    int64_t C, fh, fw, ch, h, w;
    FUZZ_CHECK(lwfm_model_input_shape(m, &ch, &h, &w) == LWFM_OK);
    FUZZ_CHECK(lwfm_model_feature_shape(m, h, w, &C, &fh, &fw) == LWFM_OK);
    if (fh * fw != (int64_t)P) fh = P, fw = 1;
    if ((uint64_t)C * P > (1u << 20) || way > 64) return;
    float *q = malloc(sizeof(float) * (size_t)(C * P)), logits[64];
    FUZZ_CHECK(q != NULL);
    for (int64_t i = 0; i < C * (int64_t)P; i++) q[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    lwfm_status st = lwfm_support_score_features(s, q, 1, C, fh, fw, logits, 64);
    if (st)
        FUZZ_CHECK_FAILURE(st);
    else
        for (int64_t k = 0; k < way; k++) FUZZ_CHECK(isfinite(logits[k]));
    lwfm_support *grown = NULL;
    const int32_t label = 0;
    st = lwfm_support_add_features(&grown, s, q, 1, &label, C, fh, fw, way);
    if (st) {
        FUZZ_CHECK_FAILURE(st);
        FUZZ_CHECK(grown == NULL);
    } else {
        FUZZ_CHECK(lwfm_support_count(grown) == lwfm_support_count(s) + 1);
        lwfm_support_destroy(grown);
    }
    free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_m[0]) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1) return 0;
    const int fix_crc = data[0] & 1;
    size--, data++;
    uint8_t *copy = malloc(size ? size : 1); /* exactly `size` bytes: ASan sees overreads */
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    if (fix_crc && size >= 4) {
        const uint32_t c = crc32_le(copy, size - 4);
        for (int i = 0; i < 4; i++) copy[size - 4 + i] = (uint8_t)(c >> (8 * i));
    }
    int loaded = 0;
    for (int k = 0; k < N_MODELS; k++) {
        lwfm_support *const canary = (lwfm_support *)&g_m;
        lwfm_support *s = canary;
        lwfm_status st = lwfm_support_load_from_memory(&s, g_m[k], copy, size);
        if (st) {
            FUZZ_CHECK_FAILURE(st);
            FUZZ_CHECK(s == canary);
            continue;
        }
        FUZZ_CHECK(s != canary && s != NULL);
        loaded++;
        use_set(g_m[k], s, copy, size);
        lwfm_support_destroy(s);
    }
    FUZZ_CHECK(loaded <= 1); /* bound to one model's fingerprint */
    free(copy);
    return 0;
}
