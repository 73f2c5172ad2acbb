/* Public API contract without a weight file: argument checks, status
 * strings, per-thread error details, load errors, log callback. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lwfm/lwfm.h"

#include "expect.h"

static int log_calls = 0;
static void on_log(lwfm_log_level level, const char *msg, void *user) {
    (void)level;
    (void)msg;
    *(int *)user += 1;
}

static void *thread_error(void *arg) {
    (void)arg;
    /* A failure on another thread does not touch this thread's message. */
    lwfm_model *m = NULL;
    lwfm_status st = lwfm_model_load(&m, "/nonexistent/other-thread.npz", NULL);
    return (void *)(long)(st == LWFM_ERR_IO && strstr(lwfm_last_error(), "other-thread"));
}

int main(void) {
    for (int s = 0; s <= 14; s++) {
        const char *str = lwfm_status_string((lwfm_status)s);
        EXPECT(str && *str && strcmp(str, "unknown status") != 0);
    }
    EXPECT(strcmp(lwfm_status_string((lwfm_status)999), "unknown status") == 0);

    /* NULL arguments */
    lwfm_model *model = (lwfm_model *)0x1;
    EXPECT(lwfm_model_load(NULL, "x.npz", NULL) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_model_load(&model, NULL, NULL) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(model == (lwfm_model *)0x1); /* out-parameter untouched */
    EXPECT(strlen(lwfm_last_error()) > 0);

    /* missing file: IO error naming the path */
    EXPECT(lwfm_model_load(&model, "/nonexistent/dir/model.npz", NULL) == LWFM_ERR_IO);
    EXPECT(strstr(lwfm_last_error(), "/nonexistent/dir/model.npz") != NULL);
    EXPECT(model == (lwfm_model *)0x1);

    /* per-thread details */
    pthread_t th;
    void *ok = NULL;
    pthread_create(&th, NULL, thread_error, NULL);
    pthread_join(th, &ok);
    EXPECT(ok != NULL);
    EXPECT(strstr(lwfm_last_error(), "/nonexistent/dir/model.npz") != NULL);

    /* not a zip */
    static const char junk[] = "this is not a weight file";
    EXPECT(lwfm_model_load_from_memory(&model, junk, sizeof junk, NULL) == LWFM_ERR_FORMAT);
    EXPECT(model == (lwfm_model *)0x1);

    /* options */
    lwfm_load_options *opts = NULL;
    EXPECT(lwfm_load_options_create(&opts) == LWFM_OK && opts);
    EXPECT(lwfm_load_options_set_precision(opts, (lwfm_precision)7) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_load_options_set_precision(opts, LWFM_PRECISION_BF16) == LWFM_OK);
    EXPECT(lwfm_load_options_set_precision(opts, LWFM_PRECISION_INT8) == LWFM_OK);
    EXPECT(strcmp(lwfm_last_error(), "") == 0); /* cleared by a successful call */
    EXPECT(lwfm_load_options_set_max_total_bytes(opts, 0) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_load_options_set_max_total_bytes(NULL, 10) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_load_options_set_convolutions(opts, (lwfm_convolutions)3) ==
           LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(strstr(lwfm_last_error(), "unknown convolutions 3") != NULL);
    EXPECT(lwfm_load_options_set_convolutions(opts, (lwfm_convolutions)-1) ==
           LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_load_options_set_convolutions(NULL, LWFM_CONVOLUTIONS_AUTO) ==
           LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_load_options_set_convolutions(opts, LWFM_CONVOLUTIONS_DIRECT) == LWFM_OK);
    EXPECT(lwfm_load_options_set_convolutions(opts, LWFM_CONVOLUTIONS_WINOGRAD) == LWFM_OK);
    lwfm_load_options_destroy(opts);
    lwfm_load_options_destroy(NULL);
    lwfm_model_destroy(NULL);
    lwfm_backbone_destroy(NULL);

    /* backbone without a model */
    lwfm_backbone *bb = NULL;
    EXPECT(lwfm_backbone_create(&bb, NULL) == LWFM_ERR_INVALID_ARGUMENT && bb == NULL);
    float x = 0, y = 0;
    EXPECT(lwfm_backbone_forward(NULL, &x, 1, 3, 84, 84, &y, 1) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_model_features(NULL, &x, 1, 3, 84, 84, &y, 1) == LWFM_ERR_INVALID_ARGUMENT);
    /* int8 calibration without a model */
    EXPECT(lwfm_model_convolutions(NULL) == 0);
    EXPECT(lwfm_model_convolution_name(NULL, 0) == NULL);
    EXPECT(lwfm_model_convolution_ranges(NULL, &x, 1, 3, 84, 84, &y, 1) ==
           LWFM_ERR_INVALID_ARGUMENT);
    uint64_t counts[2] = {7, 7};
    EXPECT(lwfm_model_convolution_histograms(NULL, &x, 1, 3, 84, 84, &y, 2, counts, 2) ==
               LWFM_ERR_INVALID_ARGUMENT &&
           counts[0] == 7 && counts[1] == 7);

    /* log callback: silent by default, receives messages once installed */
    lwfm_set_log_callback(on_log, &log_calls, LWFM_LOG_DEBUG);
    EXPECT(lwfm_model_load(&model, "/nonexistent/x.npz", NULL) == LWFM_ERR_IO);
    EXPECT(log_calls > 0);
    lwfm_set_log_callback(NULL, NULL, LWFM_LOG_DEBUG);

    if (fails) fprintf(stderr, "%d check(s) failed\n", fails);
    else printf("test_api: all checks passed\n");
    return fails != 0;
}
