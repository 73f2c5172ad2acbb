/* A complete few-shot episode from raw pixels: 5-way 1-shot.
 *
 *   episode MODEL.npz [QUERIES_PER_CLASS]
 *
 * e.g. `episode /usr/local/share/lwfm/models/omniglot.npz` (a bundled model,
 * grey 28 x 28) or any RGB model. What a real program does, step by step:
 *   1. load the model and read its configuration through the typed calls
 *      (lwfm_model_config_int / _float / _floats / _string), no JSON parsing;
 *   2. turn decoded 8-bit RGB images (height x width x 3, interleaved, as
 *      image decoders return them, any size) into the model's input with
 *      lwfm_model_preprocess(): exactly the preprocessing of `lwfm classify`
 *      and of the Python bindings (grey or RGB as the model takes it,
 *      antialiased resize, centre crop, mean / std);
 *   3. score the episode in one call, lwfm_episode_score();
 *   4. or prepare the support set once (lwfm_support_prepare()) and score
 *      any number of query batches against it (lwfm_support_score()), which
 *      is what to do when many queries arrive over time.
 * The program checks that 3 and 4 agree (exit status 1 if not) and prints
 * each query's predicted class and calibrated probabilities
 * (lwfm_model_probabilities()).
 *
 * The pixels are synthetic, so that the example needs no image files: each
 * class is a coloured pattern (stripes, checkers, rings, ...) and the
 * queries are shifted, noisy copies of their class's pattern. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lwfm/lwfm.h>

#define WAY 5
#define RAW_H 100 /* size of the "decoded" images, before preprocessing */
#define RAW_W 120

/* ------------------------------------------------------------------------ */
/* The model's configuration, through the typed calls                      */

static int describe(const lwfm_model *model) {
    const char *method = NULL, *backbone = NULL;
    int64_t size = 0, resize = 0, channels = 0;
    double mean[3] = {0}, std_[3] = {0}, temperature = 1;
    size_t n_mean = 0, n_std = 0;
    lwfm_status st;
    if ((st = lwfm_model_config_string(model, "method", &method)) ||
        (st = lwfm_model_config_string(model, "backbone", &backbone)) ||
        (st = lwfm_model_config_int(model, "input_channels", &channels)) ||
        (st = lwfm_model_config_int(model, "image_size", &size)) ||
        (st = lwfm_model_config_int(model, "resize", &resize)) ||
        (st = lwfm_model_config_floats(model, "mean", mean, 3, &n_mean)) ||
        (st = lwfm_model_config_floats(model, "std", std_, 3, &n_std)) ||
        (st = lwfm_model_config_float(model, "calibration_temperature", &temperature))) {
        fprintf(stderr, "reading the configuration: %s: %s\n", lwfm_status_string(st),
                lwfm_last_error());
        return -1;
    }
    printf("libLWFM %s: %s on %s, input %lldx%lldx%lld (resize %lld), mean", lwfm_version(),
           method, backbone, (long long)channels, (long long)size, (long long)size,
           (long long)resize);
    for (size_t c = 0; c < n_mean; c++) printf(" %.4f", mean[c]);
    printf(", std");
    for (size_t c = 0; c < n_std; c++) printf(" %.4f", std_[c]);
    printf(", calibration temperature %.4g\n", temperature);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Synthetic images                                                         */

static uint32_t rng_state = 12345u;
static int noise(int amplitude) { /* uniform in [-amplitude, amplitude] */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (int)((rng_state >> 8) % (uint32_t)(2 * amplitude + 1)) - amplitude;
}

static uint8_t clamp8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Class `cls`'s pattern, shifted by (dy, dx), plus uniform noise. */
static void draw(uint8_t *rgb, int cls, int dy, int dx, int amplitude) {
    for (int y = 0; y < RAW_H; y++)
        for (int x = 0; x < RAW_W; x++) {
            int Y = y + dy, X = x + dx, r, g, b;
            switch (cls) {
            case 0: /* red horizontal stripes */
                r = (Y / 8) % 2 ? 220 : 40, g = 30, b = 30;
                break;
            case 1: /* green vertical stripes */
                r = 30, g = (X / 6) % 2 ? 210 : 50, b = 40;
                break;
            case 2: /* blue / yellow checkerboard */
                if (((Y / 16) + (X / 16)) % 2) r = 230, g = 220, b = 40;
                else r = 30, g = 40, b = 200;
                break;
            case 3: /* magenta diagonal gradient */
                r = (X + Y) % 64 * 4, g = 20, b = (X + Y) % 64 * 3 + 40;
                break;
            default: { /* cyan rings */
                double d = sqrt((double)((Y - 50) * (Y - 50) + (X - 60) * (X - 60)));
                int on = (int)(d / 7.0) % 2;
                r = 20, g = on ? 200 : 60, b = on ? 220 : 70;
            }
            }
            uint8_t *px = rgb + ((size_t)y * RAW_W + x) * 3;
            px[0] = clamp8(r + noise(amplitude));
            px[1] = clamp8(g + noise(amplitude));
            px[2] = clamp8(b + noise(amplitude));
        }
}

/* ------------------------------------------------------------------------ */

static int report(const char *call, lwfm_status st) {
    fprintf(stderr, "%s failed: %s: %s\n", call, lwfm_status_string(st), lwfm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL.npz [QUERIES_PER_CLASS]\n", argv[0]);
        return 2;
    }
    const int per_class = argc > 2 ? atoi(argv[2]) : 2;
    if (per_class < 1 || per_class > 100) {
        fprintf(stderr, "QUERIES_PER_CLASS must be in 1..100\n");
        return 2;
    }
    const int64_t n_support = WAY, n_query = (int64_t)WAY * per_class;

    int rc = 1;
    lwfm_model *model = NULL;
    lwfm_support *prepared = NULL;
    uint8_t *raw = NULL;
    float *support = NULL, *query = NULL, *logits = NULL, *logits2 = NULL;
    int32_t labels[WAY];
    int *truth = NULL;
    lwfm_status st;

    if ((st = lwfm_model_load(&model, argv[1], NULL))) return report("lwfm_model_load", st);
    if (describe(model)) goto done;
    int64_t C, S, S_w;
    lwfm_model_input_shape(model, &C, &S, &S_w);
    const int64_t image = C * S * S; /* floats per preprocessed image */

    raw = malloc((size_t)RAW_H * RAW_W * 3);
    support = malloc(sizeof(float) * (size_t)(n_support * image));
    query = malloc(sizeof(float) * (size_t)(n_query * image));
    logits = malloc(sizeof(float) * (size_t)(n_query * WAY));
    logits2 = malloc(sizeof(float) * (size_t)(n_query * WAY));
    truth = malloc(sizeof(int) * (size_t)n_query);
    if (!raw || !support || !query || !logits || !logits2 || !truth) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }

    /* Support: one clean image per class. Labels may come in any order; the
     * k-th support image here shows class labels[k]. */
    for (int k = 0; k < WAY; k++) {
        labels[k] = (int32_t)((k + 2) % WAY);
        draw(raw, labels[k], 0, 0, 8);
        if ((st = lwfm_model_preprocess(model, raw, LWFM_PIXEL_U8, RAW_H, RAW_W, 3, 0,
                                        support + k * image, (size_t)image))) {
            report("lwfm_model_preprocess", st);
            goto done;
        }
    }
    /* Queries: shifted, noisier copies, classes interleaved. */
    for (int64_t q = 0; q < n_query; q++) {
        int cls = (int)(q % WAY), i = (int)(q / WAY) + 1;
        truth[q] = cls;
        draw(raw, cls, 3 * i, 5 * i, 30);
        if ((st = lwfm_model_preprocess(model, raw, LWFM_PIXEL_U8, RAW_H, RAW_W, 3, 0,
                                        query + q * image, (size_t)image))) {
            report("lwfm_model_preprocess", st);
            goto done;
        }
    }

    /* 3. The whole episode in one call. */
    if ((st = lwfm_episode_score(model, support, n_support, labels, query, n_query, C, S, S, WAY,
                                 logits, (size_t)(n_query * WAY)))) {
        report("lwfm_episode_score", st);
        goto done;
    }

    /* 4. The support side once, then the queries in two batches. */
    if ((st = lwfm_support_prepare(&prepared, model, support, n_support, labels, C, S, S, WAY))) {
        report("lwfm_support_prepare", st);
        goto done;
    }
    /* The prepared set holds its own reference to the model: a program that
     * only scores from now on could call lwfm_model_destroy(model) here. */
    const int64_t first = n_query / 2; /* n_query >= WAY, so both batches are non-empty */
    if ((st = lwfm_support_score(prepared, query, first, C, S, S, logits2,
                                 (size_t)(first * WAY))) ||
        (st = lwfm_support_score(prepared, query + first * image, n_query - first, C, S, S,
                                 logits2 + first * WAY, (size_t)((n_query - first) * WAY)))) {
        report("lwfm_support_score", st);
        goto done;
    }
    printf("prepared support set: %lld classes, %lld images\n",
           (long long)lwfm_support_way(prepared), (long long)lwfm_support_count(prepared));

    /* Both ways must agree (up to float rounding: oneDNN may pick different
     * kernels for different batch sizes). */
    double max_abs = 0, max_diff = 0;
    for (int64_t i = 0; i < n_query * WAY; i++) {
        max_abs = fmax(max_abs, fabs(logits[i]));
        max_diff = fmax(max_diff, fabs((double)logits[i] - logits2[i]));
    }
    printf("one call vs prepared support: max |difference| %.3g (max |logit| %.4g)\n", max_diff,
           max_abs);
    if (!(max_diff <= 1e-5 * fmax(max_abs, 1.0))) {
        fprintf(stderr, "the two ways of scoring disagree\n");
        goto done;
    }

    /* Predictions: argmax of each row; calibrated probabilities (softmax of
     * logits / the model's calibration temperature). */
    if ((st = lwfm_model_probabilities(model, logits, n_query, WAY, logits2,
                                       (size_t)(n_query * WAY)))) {
        report("lwfm_model_probabilities", st);
        goto done;
    }
    int correct = 0;
    for (int64_t q = 0; q < n_query; q++) {
        const float *p = logits2 + q * WAY;
        int best = 0;
        for (int c = 1; c < WAY; c++)
            if (p[c] > p[best]) best = c;
        printf("query %2lld (class %d): predicted %d  p =", (long long)q, truth[q], best);
        for (int c = 0; c < WAY; c++) printf(" %.3f", p[c]);
        printf("\n");
        correct += best == truth[q];
    }
    /* With a trained model nearly all are right; a random-weight test model
     * guesses. */
    printf("%d of %lld queries classified as their class\n", correct, (long long)n_query);
    rc = 0;

done:
    lwfm_support_destroy(prepared);
    lwfm_model_destroy(model);
    free(raw);
    free(support);
    free(query);
    free(logits);
    free(logits2);
    free(truth);
    return rc;
}
