/* Fuzz target: the weight-file reader end to end.
 *
 * The input is a weight file in memory: lwfm_model_load_from_memory() runs
 * the zip reader (libzip + zlib), the .npy parser, the configuration and the
 * model build on it. Failures must be a known status with a message and
 * leave *out untouched. A model that loads is used: configuration JSON,
 * shapes, features of one image, an episode on those features and the
 * per-pair views, so that hostile weights and configurations reach the
 * kernels too; a file that loads is loaded again in int8. */
#include <math.h>

#include "fuzz_weights_use.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_opts) LLVMFuzzerInitialize(NULL, NULL);
    lwfm_model *const canary = (lwfm_model *)&g_opts;
    lwfm_model *m = canary;
    lwfm_status st = lwfm_model_load_from_memory(&m, data, size, g_opts);
    if (st) {
        FUZZ_CHECK_FAILURE(st);
        FUZZ_CHECK(m == canary);
        return 0;
    }
    FUZZ_CHECK(m != canary && m != NULL);
    use_model(m);
    lwfm_model_destroy(m);
    /* a file that loads in fp32 in int8 too: refused (no or bad quant/
     * members, no int8 kernel) with a known status, or used the same way */
    m = canary;
    st = lwfm_model_load_from_memory(&m, data, size, g_opts_int8);
    if (st) {
        FUZZ_CHECK_FAILURE(st);
        FUZZ_CHECK(m == canary);
        return 0;
    }
    use_model(m);
    lwfm_model_destroy(m);
    return 0;
}
