/* A program outside the source tree that uses an installed libLWFM
 * (tests/install_check.sh consumers): built once with CMake's
 * find_package(lwfm) (CMakeLists.txt here) and once with
 * `cc $(pkg-config --cflags --libs lwfm)`.
 *
 *   consumer MODEL.npz
 *
 * Loads the model, checks the run-time version against the header's, reads
 * the configuration with the typed calls, preprocesses two synthetic grey
 * images per class with lwfm_model_preprocess() and scores a 2-way episode. */
#include <stdio.h>
#include <string.h>

#include <lwfm/lwfm.h>

#define SIDE 40

static void draw(unsigned char *px, int cls, int shift) {
    for (int y = 0; y < SIDE; y++)
        for (int x = 0; x < SIDE; x++) {
            int on = cls ? ((y + shift) / 5) % 2 : ((x + shift) / 5) % 2;
            px[y * SIDE + x] = on ? 20 : 235;
        }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.npz\n", argv[0]);
        return 2;
    }
    if (strcmp(lwfm_version(), LWFM_VERSION_STRING) != 0) {
        fprintf(stderr, "library %s, header %s\n", lwfm_version(), LWFM_VERSION_STRING);
        return 1;
    }
    lwfm_model *model = NULL;
    lwfm_status st = lwfm_model_load(&model, argv[1], NULL);
    if (st) {
        fprintf(stderr, "lwfm_model_load: %s: %s\n", lwfm_status_string(st), lwfm_last_error());
        return 1;
    }
    const char *method = NULL;
    int64_t size = 0, c = 0, h = 0, w = 0;
    if ((st = lwfm_model_config_string(model, "method", &method)) ||
        (st = lwfm_model_config_int(model, "image_size", &size)) ||
        (st = lwfm_model_input_shape(model, &c, &h, &w))) {
        fprintf(stderr, "configuration: %s: %s\n", lwfm_status_string(st), lwfm_last_error());
        lwfm_model_destroy(model);
        return 1;
    }
    enum { MAXF = 3 * 84 * 84 };
    static float support[2][MAXF], query[2][MAXF];
    static unsigned char px[SIDE * SIDE];
    const size_t per = (size_t)(c * h * w);
    int32_t labels[2] = {0, 1};
    float logits[4];
    if (per > MAXF || size != h) {
        fprintf(stderr, "unexpected input shape %lldx%lldx%lld\n", (long long)c, (long long)h,
                (long long)w);
        lwfm_model_destroy(model);
        return 1;
    }
    for (int k = 0; k < 2 && !st; k++) {
        draw(px, k, 0);
        st = lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, SIDE, SIDE, 1, 0, support[k], per);
        draw(px, k, 2);
        if (!st) st = lwfm_model_preprocess(model, px, LWFM_PIXEL_U8, SIDE, SIDE, 1, 0, query[k], per);
    }
    /* support[] and query[] are MAXF apart: score the queries one by one */
    float sup[2 * MAXF];
    memcpy(sup, support[0], per * sizeof(float));
    memcpy(sup + per, support[1], per * sizeof(float));
    for (int q = 0; q < 2 && !st; q++)
        st = lwfm_episode_score(model, sup, 2, labels, query[q], 1, c, h, w, 2, logits + 2 * q, 2);
    if (st) {
        fprintf(stderr, "episode: %s: %s\n", lwfm_status_string(st), lwfm_last_error());
        lwfm_model_destroy(model);
        return 1;
    }
    printf("consumer: libLWFM %s, %s model, logits %.3f %.3f / %.3f %.3f\n", lwfm_version(), method,
           logits[0], logits[1], logits[2], logits[3]);
    lwfm_model_destroy(model);
    return 0;
}
