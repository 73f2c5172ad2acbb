/* lwfm_model_preprocess(): argument checks (statuses, messages, output left
 * untouched), strides, pixel formats, channel conversions and threads.
 * Exact parity with lwfm.episodes.preprocess is tests/python/test_preprocess.py.
 *
 *   test_preprocess MODEL.npz   (a 3-channel model: lwfm_tiny.npz) */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwfm/lwfm.h"

#include "expect.h"

#define SENTINEL 12345.0f

static lwfm_model *model;
static int64_t C, S;
static size_t N; /* floats per preprocessed image */
static double mean[3], sd[3];

/* mean/std from the configuration JSON ("mean": [a, b, c], "std": [...]). */
static void read_norm(const char *json, const char *key, double *v) {
    const char *p = strstr(json, key);
    EXPECT(p != NULL);
    if (!p) return;
    p = strchr(p, '[');
    int n = 0;
    while (p && *p != ']' && n < 3) {
        v[n++] = strtod(p + 1, (char **)&p);
        while (*p == ' ') p++;
    }
    for (; n < 3; n++) v[n] = v[0]; /* one entry: every channel */
}

static int untouched(const float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (out[i] != SENTINEL) return 0;
    return 1;
}

static void fill(float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = SENTINEL;
}

/* Expect `status` with a non-empty message containing `word`, output untouched. */
static void expect_fail(lwfm_status got, lwfm_status want, const char *word, const float *out,
                        int line) {
    if (got != want || !strstr(lwfm_last_error(), word) || !untouched(out, N)) {
        fprintf(stderr, "line %d: got %d (%s) '%s', want %d with '%s'\n", line, (int)got,
                lwfm_status_string(got), lwfm_last_error(), (int)want, word);
        fails++;
    }
}
#define FAIL(call, want, word) expect_fail((call), (want), (word), out, __LINE__)

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static void *thread_run(void *arg) {
    const float *want = arg;
    enum { H = 50, W = 70 };
    uint8_t *img = malloc(H * W * 3);
    float *got = malloc(N * sizeof(float));
    int ok = img && got;
    for (int rep = 0; ok && rep < 20; rep++) {
        for (int i = 0; i < H * W * 3; i++) img[i] = (uint8_t)(i * 7 + i / 13);
        ok = lwfm_model_preprocess(model, img, LWFM_PIXEL_U8, H, W, 3, 0, got, N) == LWFM_OK &&
             memcmp(got, want, N * sizeof(float)) == 0;
    }
    free(img);
    free(got);
    return (void *)(intptr_t)ok;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.npz\n", argv[0]);
        return 2;
    }
    if (lwfm_model_load(&model, argv[1], NULL)) {
        fprintf(stderr, "%s\n", lwfm_last_error());
        return 1;
    }
    int64_t h, w;
    EXPECT(lwfm_model_input_shape(model, &C, &h, &w) == LWFM_OK && h == w);
    S = h;
    N = (size_t)(C * S * S);
    size_t len = 0;
    lwfm_model_config_json(model, NULL, 0, &len);
    char *json = malloc(len + 1);
    EXPECT(lwfm_model_config_json(model, json, len + 1, NULL) == LWFM_OK);
    read_norm(json, "\"mean\"", mean);
    read_norm(json, "\"std\"", sd);
    free(json);

    float *out = malloc(N * sizeof(float)), *ref = malloc(N * sizeof(float));
    uint8_t px[4 * 64 * 64];
    memset(px, 128, sizeof px);
    fill(out, N);

    /* arguments */
    FAIL(lwfm_model_preprocess(NULL, px, LWFM_PIXEL_U8, 8, 8, 1, 0, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "model");
    FAIL(lwfm_model_preprocess(model, NULL, LWFM_PIXEL_U8, 8, 8, 1, 0, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "pixels");
    EXPECT(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 1, 0, NULL, N) ==
           LWFM_ERR_INVALID_ARGUMENT);
    FAIL(lwfm_model_preprocess(model, px, (lwfm_pixel_format)2, 8, 8, 1, 0, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "pixel format");
    FAIL(lwfm_model_preprocess(model, px, (lwfm_pixel_format)-1, 8, 8, 1, 0, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "pixel format");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 0, 8, 1, 0, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "positive");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, -3, 1, 0, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "positive");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 0, 0, out, N), LWFM_ERR_SHAPE,
         "channels");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 5, 0, out, N), LWFM_ERR_SHAPE,
         "channels");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 3, 23, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "stride");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U16, 8, 8, 3, 24, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "stride");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 3, -24, out, N),
         LWFM_ERR_INVALID_ARGUMENT, "stride");
    /* sizes whose byte counts overflow, or absurd sides: refused before any access */
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, INT64_MAX, 8, 1, 0, out, N),
         LWFM_ERR_LIMIT, "limit");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U16, 8, (int64_t)1 << 40, 4, 0, out, N),
         LWFM_ERR_LIMIT, "limit");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, (int64_t)1 << 30, (int64_t)1 << 30, 4,
                               (int64_t)1 << 40, out, N),
         LWFM_ERR_LIMIT, "overflows");
    /* output too small */
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 1, 0, out, N - 1),
         LWFM_ERR_BUFFER_TOO_SMALL, "needs");
    FAIL(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 1, 0, out, 0),
         LWFM_ERR_BUFFER_TOO_SMALL, "needs");

    /* a uniform image stays uniform through any resize: (v / 255 - mean) / sd */
    const int64_t sizes[][2] = {{1, 1}, {S, S}, {S + 9, S + 9}, {3, 60}, {64, 17}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        fill(out, N);
        memset(px, 77, sizeof px);
        EXPECT(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, sizes[k][0], sizes[k][1], 1, 0, out,
                                     N) == LWFM_OK);
        EXPECT(lwfm_last_error()[0] == '\0');
        double worst = 0;
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < S * S; i++)
                worst = fmax(worst, fabs(out[c * S * S + i] - (77.0 / 255 - mean[c]) / sd[c]));
        EXPECT(worst < 1e-5);
    }
    /* a larger buffer is fine; only the image is written */
    float *big = malloc((N + 4) * sizeof(float));
    for (size_t i = 0; i < N + 4; i++) big[i] = SENTINEL;
    EXPECT(lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, 8, 8, 1, 0, big, N + 4) == LWFM_OK);
    EXPECT(big[N] == SENTINEL && big[N + 3] == SENTINEL && big[0] != SENTINEL);
    free(big);

    /* formats and conversions: an 8-bit gradient */
    enum { H = 21, W = 45 };
    static uint8_t grey[H * W], rgb[H * W * 3], ga[H * W * 2], rgba[H * W * 4];
    static uint16_t grey16[H * W];
    static uint8_t padded[H * (W + 11)];
    for (int i = 0; i < H * W; i++) {
        uint8_t v = (uint8_t)((i * 37) % 251);
        grey[i] = v;
        grey16[i] = (uint16_t)(v * 257); /* v / 255 == v * 257 / 65535 */
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = v;
        ga[2 * i] = v, ga[2 * i + 1] = 255;
        rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = v, rgba[4 * i + 3] = 255;
        padded[(i / W) * (W + 11) + i % W] = v;
    }
    EXPECT(lwfm_model_preprocess(model, grey, LWFM_PIXEL_U8, H, W, 1, 0, ref, N) == LWFM_OK);
    EXPECT(lwfm_model_preprocess(model, grey16, LWFM_PIXEL_U16, H, W, 1, 0, out, N) == LWFM_OK);
    EXPECT(max_diff(out, ref, N) < 1e-5);
    EXPECT(lwfm_model_preprocess(model, padded, LWFM_PIXEL_U8, H, W, 1, W + 11, out, N) == LWFM_OK);
    EXPECT(memcmp(out, ref, N * sizeof(float)) == 0);
    EXPECT(lwfm_model_preprocess(model, ga, LWFM_PIXEL_U8, H, W, 2, 0, out, N) == LWFM_OK);
    EXPECT(memcmp(out, ref, N * sizeof(float)) == 0); /* opaque alpha changes nothing */
    EXPECT(lwfm_model_preprocess(model, rgba, LWFM_PIXEL_U8, H, W, 4, 0, out, N) == LWFM_OK);
    if (C == 3) /* equal R, G, B: same as grey replicated */
        EXPECT(memcmp(out, ref, N * sizeof(float)) == 0);
    EXPECT(lwfm_model_preprocess(model, rgb, LWFM_PIXEL_U8, H, W, 3, 0, out, N) == LWFM_OK);
    if (C == 3) EXPECT(memcmp(out, ref, N * sizeof(float)) == 0);
    /* transparent pixels are white, whatever their colour */
    for (int i = 0; i < H * W; i++) rgba[4 * i + 3] = 0;
    EXPECT(lwfm_model_preprocess(model, rgba, LWFM_PIXEL_U8, H, W, 4, 0, out, N) == LWFM_OK);
    for (int64_t c = 0; c < C; c++)
        EXPECT(fabs(out[c * S * S + 5] - (1.0 - mean[c]) / sd[c]) < 1e-5);
    /* odd row stride for 16-bit samples (unaligned rows) */
    static uint8_t odd[H * (W * 2 + 1)];
    for (int y = 0; y < H; y++) memcpy(odd + y * (W * 2 + 1), grey16 + y * W, W * 2);
    EXPECT(lwfm_model_preprocess(model, odd, LWFM_PIXEL_U16, H, W, 1, W * 2 + 1, out, N) ==
           LWFM_OK);
    EXPECT(max_diff(out, ref, N) < 1e-5);

    /* threads: same results, no shared state */
    uint8_t *img = malloc(50 * 70 * 3);
    for (int i = 0; i < 50 * 70 * 3; i++) img[i] = (uint8_t)(i * 7 + i / 13);
    EXPECT(lwfm_model_preprocess(model, img, LWFM_PIXEL_U8, 50, 70, 3, 0, ref, N) == LWFM_OK);
    free(img);
    pthread_t th[4];
    for (int t = 0; t < 4; t++) pthread_create(&th[t], NULL, thread_run, ref);
    for (int t = 0; t < 4; t++) {
        void *ok = NULL;
        pthread_join(th[t], &ok);
        EXPECT(ok != NULL);
    }

    free(out);
    free(ref);
    lwfm_model_destroy(model);
    if (fails)
        fprintf(stderr, "%d check(s) failed\n", fails);
    else
        printf("preprocess: all checks passed\n");
    return fails ? 1 : 0;
}
