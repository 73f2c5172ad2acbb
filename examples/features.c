/* Smallest host program: load a model, run its backbone on a batch of
 * images held in memory, print the feature-map shape and a checksum.
 *
 *   features MODEL.npz [N]
 *
 * Images here are synthetic (a smooth pattern per image) so the example
 * needs no image files; a real program passes normalised NCHW pixels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <lwfm/lwfm.h>

static int fail(const char *what, lwfm_status st) {
    fprintf(stderr, "%s failed: %s: %s\n", what, lwfm_status_string(st), lwfm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.npz [N]\n", argv[0]);
        return 2;
    }
    int64_t n = argc > 2 ? atoll(argv[2]) : 4;
    lwfm_model *model = NULL;
    lwfm_status st = lwfm_model_load(&model, argv[1], NULL);
    if (st) return fail("lwfm_model_load", st);

    int64_t c, h, w, fc, fh, fw;
    lwfm_model_input_shape(model, &c, &h, &w);
    if ((st = lwfm_model_feature_shape(model, h, w, &fc, &fh, &fw))) {
        lwfm_model_destroy(model);
        return fail("lwfm_model_feature_shape", st);
    }
    size_t in_n = (size_t)(n * c * h * w), out_n = (size_t)(n * fc * fh * fw);
    float *images = malloc(in_n * sizeof *images), *feats = malloc(out_n * sizeof *feats);
    if (!images || !feats) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < in_n; i++) images[i] = (float)sin(0.01 * (double)i);

    lwfm_backbone *backbone = NULL;
    int rc = 0;
    if ((st = lwfm_backbone_create(&backbone, model)) ||
        (st = lwfm_backbone_forward(backbone, images, n, c, h, w, feats, out_n))) {
        rc = fail("backbone", st);
    } else {
        double sum = 0, sq = 0;
        for (size_t i = 0; i < out_n; i++) sum += feats[i], sq += (double)feats[i] * feats[i];
        printf("libLWFM %s: %lld images of %lldx%lldx%lld -> features %lld x %lld x %lld x %lld\n",
               lwfm_version(), (long long)n, (long long)c, (long long)h, (long long)w,
               (long long)n, (long long)fc, (long long)fh, (long long)fw);
        printf("mean %.6g  rms %.6g\n", sum / (double)out_n, sqrt(sq / (double)out_n));
    }
    lwfm_backbone_destroy(backbone);
    lwfm_model_destroy(model);
    free(images);
    free(feats);
    return rc;
}
