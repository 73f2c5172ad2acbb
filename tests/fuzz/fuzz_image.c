/* Fuzz target: image decoding in the `lwfm` tool (tools/cli/decode.c, PNG
 * through libpng, JPEG through libjpeg, WebP through libwebp, the EXIF
 * orientation parser) and the preprocessing that follows
 * it in `lwfm classify` / `lwfm eval` (lwfm_model_preprocess()).
 *
 * The input is an image file. A decoding failure must come with a reason
 * and no pixels; a decoded image must have sane dimensions and be turned into
 * finite model inputs by a grey model (the bundled Omniglot model, 28x28) and
 * an RGB model (the test model lwfm_tiny, 32x32) without writing past the
 * output (checked with a canary). */
#include <math.h>

#include "../../tools/cli/cli.h"
#include "fuzz_common.h"

static lwfm_model *g_models[2];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    g_models[0] = fuzz_bundled_model("omniglot.npz");
    g_models[1] = fuzz_test_model("lwfm_tiny.npz");
    return 0;
}

#define CANARY_FLOATS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_models[0]) LLVMFuzzerInitialize(NULL, NULL);
    cli_image img;
    char err[ERR_CAP];
    err[0] = '\0';
    if (image_decode(data, size, &img, err, sizeof err)) {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(img.pixels == NULL && img.width == 0 && img.height == 0);
        return 0;
    }
    FUZZ_CHECK(img.pixels != NULL);
    FUZZ_CHECK(img.height >= 1 && img.width >= 1 && img.height <= MAX_IMAGE_SIDE &&
               img.width <= MAX_IMAGE_SIDE);
    FUZZ_CHECK((uint64_t)img.height * (uint64_t)img.width <= MAX_IMAGE_PIXELS);
    FUZZ_CHECK(img.channels >= 1 && img.channels <= 4);
    FUZZ_CHECK(img.format == LWFM_PIXEL_U8 || img.format == LWFM_PIXEL_U16);
    /* no JPEG decompression bombs: over 4M pixels, at most 4096 per file byte
     * (tools/cli/decode.c; regressions/image/jpeg-arith-bomb-*) */
    if (data[0] == 0xff || data[0] == 'R') { /* JPEG, WebP */
        const uint64_t px = (uint64_t)img.height * (uint64_t)img.width;
        FUZZ_CHECK(px <= ((uint64_t)1 << 22) || px / size <= 4096);
    }
    /* Resampling costs O(pixels): fine in a release build (about 30 ns a
     * pixel), but over libFuzzer's time limit under ASan for the largest
     * images a few KB of PNG can declare. Decoding is still fuzzed. */
    if (img.height * img.width > ((int64_t)1 << 21)) {
        image_free(&img);
        return 0;
    }
    for (int k = 0; k < 2; k++) {
        int64_t c, h, w;
        FUZZ_CHECK(lwfm_model_input_shape(g_models[k], &c, &h, &w) == LWFM_OK);
        const size_t n = (size_t)(c * h * w);
        float *out = malloc((n + CANARY_FLOATS) * sizeof(float));
        FUZZ_CHECK(out);
        memset(out, 0x5a, (n + CANARY_FLOATS) * sizeof(float));
        lwfm_status st = lwfm_model_preprocess(g_models[k], img.pixels, img.format, img.height,
                                               img.width, img.channels, 0, out, n);
        FUZZ_CHECK(st == LWFM_OK);
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(isfinite(out[i]));
        const unsigned char *tail = (const unsigned char *)(out + n);
        for (size_t i = 0; i < CANARY_FLOATS * sizeof(float); i++) FUZZ_CHECK(tail[i] == 0x5a);
        free(out);
    }
    image_free(&img);
    return 0;
}
