/* A complete few-shot episode from raw pixels: 5-way 1-shot.
 *
 *   episode MODEL.npz [QUERIES_PER_CLASS]
 *
 * What a real program does, step by step:
 *   1. load the model and read its preprocessing (input size, resize,
 *      per-channel mean and std) from lwfm_model_config_json();
 *   2. turn 8-bit RGB images (height x width x 3, interleaved, as image
 *      decoders return them) into the model's input: bilinear resize to
 *      resize x resize, centre crop to size x size, x / 255, then
 *      (x - mean[c]) / std[c] per channel, planar NCHW float32;
 *   3. score the episode in one call, lwfm_episode_score();
 *   4. or prepare the support set once (lwfm_support_prepare()) and score
 *      any number of query batches against it (lwfm_support_score()), which
 *      is what to do when many queries arrive over time.
 * The program checks that 3 and 4 agree (exit status 1 if not) and prints
 * each query's predicted class and softmax probabilities.
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
/* Preprocessing parameters from the model's configuration                 */

typedef struct preprocess {
    int64_t channels; /* 3 */
    int64_t size;     /* network input size (image_size), e.g. 84 */
    int64_t resize;   /* resize before the centre crop, 0 = straight to size */
    double mean[3], std[3];
} preprocess;

/* A tiny scanner for the flat JSON object of lwfm_model_config_json():
 * finds "key" and parses the number, or the array of numbers, after it.
 * Returns how many numbers it stored in out[0..max-1] (0: key not found). */
static int json_numbers(const char *json, const char *key, double *out, int max) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(json, pattern);
    if (!p) return 0;
    p += strlen(pattern);
    while (*p == ' ' || *p == ':') p++;
    int array = *p == '[';
    if (array) p++;
    int n = 0;
    while (n < max) {
        char *end;
        double v = strtod(p, &end);
        if (end == p) break; /* not a number: end of the array (or a string) */
        out[n++] = v;
        p = end;
        while (*p == ' ') p++;
        if (!array || *p != ',') break;
        p++;
    }
    return n;
}

static int read_preprocess(const lwfm_model *model, preprocess *pp) {
    int64_t h, w;
    lwfm_status st = lwfm_model_input_shape(model, &pp->channels, &h, &w);
    if (st) {
        fprintf(stderr, "lwfm_model_input_shape: %s: %s\n", lwfm_status_string(st),
                lwfm_last_error());
        return -1;
    }
    pp->size = h;

    /* The configuration as JSON: ask for the length first, then fetch it. */
    size_t len = 0;
    lwfm_model_config_json(model, NULL, 0, &len); /* LWFM_ERR_BUFFER_TOO_SMALL, sets len */
    char *json = malloc(len + 1);
    if (!json) return -1;
    if ((st = lwfm_model_config_json(model, json, len + 1, NULL))) {
        fprintf(stderr, "lwfm_model_config_json: %s: %s\n", lwfm_status_string(st),
                lwfm_last_error());
        free(json);
        return -1;
    }
    double size = 0, resize = 0;
    int ok = json_numbers(json, "image_size", &size, 1) == 1 &&
             json_numbers(json, "resize", &resize, 1) == 1 &&
             json_numbers(json, "mean", pp->mean, 3) == 3 &&
             json_numbers(json, "std", pp->std, 3) == 3;
    free(json);
    if (!ok || pp->channels != 3 || (int64_t)size != pp->size) {
        fprintf(stderr, "unexpected model configuration (this example handles RGB models)\n");
        return -1;
    }
    pp->resize = (int64_t)resize;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 8-bit RGB -> normalised NCHW float32                                     */

/* Bilinear sample of channel c of an interleaved RGB image at (y, x), in
 * source coordinates where pixel (i, j) is centred on (i, j); clamped at
 * the borders. */
static double bilinear(const uint8_t *rgb, int h, int w, int c, double y, double x) {
    if (y < 0) y = 0;
    if (x < 0) x = 0;
    if (y > h - 1) y = h - 1;
    if (x > w - 1) x = w - 1;
    int y0 = (int)y, x0 = (int)x;
    int y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
    double fy = y - y0, fx = x - x0;
    double top = rgb[(y0 * w + x0) * 3 + c] * (1 - fx) + rgb[(y0 * w + x1) * 3 + c] * fx;
    double bot = rgb[(y1 * w + x0) * 3 + c] * (1 - fx) + rgb[(y1 * w + x1) * 3 + c] * fx;
    return top * (1 - fy) + bot * fy;
}

/* One h x w RGB image -> pp->channels x pp->size x pp->size floats at out.
 * Resize to R x R (R = resize, or size when resize is 0) with plain bilinear
 * interpolation (half-pixel centres, like OpenCV's INTER_LINEAR), keep the
 * centred size x size window, scale to [0, 1] and normalise. For large
 * downscaling factors use an antialiased resize instead (PIL, which the
 * reference trainer uses) to match the model's training data closely. */
static void to_model_input(const uint8_t *rgb, int h, int w, const preprocess *pp, float *out) {
    const int64_t S = pp->size, R = pp->resize > 0 ? pp->resize : pp->size;
    const int64_t off = (R - S) / 2; /* centre crop offset in the resized image */
    for (int c = 0; c < 3; c++)
        for (int64_t i = 0; i < S; i++)
            for (int64_t j = 0; j < S; j++) {
                double y = ((double)(i + off) + 0.5) * h / (double)R - 0.5;
                double x = ((double)(j + off) + 0.5) * w / (double)R - 0.5;
                double v = bilinear(rgb, h, w, c, y, x) / 255.0;
                out[(c * S + i) * S + j] = (float)((v - pp->mean[c]) / pp->std[c]);
            }
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
    preprocess pp;
    lwfm_status st;

    if ((st = lwfm_model_load(&model, argv[1], NULL))) return report("lwfm_model_load", st);
    if (read_preprocess(model, &pp)) goto done;
    const int64_t C = pp.channels, S = pp.size, image = C * S * S; /* floats per image */
    printf("libLWFM %s, model input %lldx%lldx%lld (resize %lld), mean (%.4f %.4f %.4f), "
           "std (%.4f %.4f %.4f)\n",
           lwfm_version(), (long long)C, (long long)S, (long long)S, (long long)pp.resize,
           pp.mean[0], pp.mean[1], pp.mean[2], pp.std[0], pp.std[1], pp.std[2]);

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
        to_model_input(raw, RAW_H, RAW_W, &pp, support + k * image);
    }
    /* Queries: shifted, noisier copies, classes interleaved. */
    for (int64_t q = 0; q < n_query; q++) {
        int cls = (int)(q % WAY), i = (int)(q / WAY) + 1;
        truth[q] = cls;
        draw(raw, cls, 3 * i, 5 * i, 30);
        to_model_input(raw, RAW_H, RAW_W, &pp, query + q * image);
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

    /* Predictions: argmax of each row; softmax for probabilities. */
    int correct = 0;
    for (int64_t q = 0; q < n_query; q++) {
        const float *row = logits + q * WAY;
        int best = 0;
        for (int c = 1; c < WAY; c++)
            if (row[c] > row[best]) best = c;
        double p[WAY], sum = 0;
        for (int c = 0; c < WAY; c++) sum += p[c] = exp((double)row[c] - row[best]);
        printf("query %2lld (class %d): predicted %d  p =", (long long)q, truth[q], best);
        for (int c = 0; c < WAY; c++) printf(" %.3f", p[c] / sum);
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
