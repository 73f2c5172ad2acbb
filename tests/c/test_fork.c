/* fork() after use (issue 15, item 2).
 *
 *   test_fork MODEL.npz [MODEL.npz ...]
 *
 * The parent computes features and scores an episode (so that libgomp's
 * thread pool and oneDNN are in use), then forks. The child computes the
 * same features and episode again; it must finish (an alarm turns a hang
 * into a failure) with results bitwise equal to the parent's. Before the
 * fork handling, the child's first call blocked forever inside libgomp.
 * The parent keeps working after the fork too. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lwfm/lwfm.h"

#include "expect.h"

#define WAY 3
#define N_SUPPORT 3
#define N_QUERY 2

static int run(lwfm_model *m, const float *sup, const float *qry, const int32_t *labels,
               int64_t c, int64_t h, int64_t w, float *feats, size_t nf, float *logits) {
    if (lwfm_model_features(m, sup, N_SUPPORT, c, h, w, feats, nf) != LWFM_OK) return 1;
    if (lwfm_episode_score(m, sup, N_SUPPORT, labels, qry, N_QUERY, c, h, w, WAY, logits,
                           N_QUERY * WAY) != LWFM_OK)
        return 1;
    return 0;
}

static void one_model(const char *path) {
    lwfm_model *m = NULL;
    if (lwfm_model_load(&m, path, NULL) != LWFM_OK) {
        fprintf(stderr, "load: %s\n", lwfm_last_error());
        exit(1);
    }
    int64_t c, h, w, C, fh, fw;
    EXPECT(lwfm_model_input_shape(m, &c, &h, &w) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(m, h, w, &C, &fh, &fw) == LWFM_OK);
    size_t img = (size_t)(c * h * w), nf = (size_t)(N_SUPPORT * C * fh * fw);
    float *sup = test_alloc(N_SUPPORT * img * sizeof(float));
    float *qry = test_alloc(N_QUERY * img * sizeof(float));
    for (size_t i = 0; i < N_SUPPORT * img; i++) sup[i] = test_uniform();
    for (size_t i = 0; i < N_QUERY * img; i++) qry[i] = test_uniform();
    const int32_t labels[N_SUPPORT] = {0, 1, 2};
    float *feats = test_alloc(nf * sizeof(float)), *feats2 = test_alloc(nf * sizeof(float));
    float logits[N_QUERY * WAY], logits2[N_QUERY * WAY];
    EXPECT(run(m, sup, qry, labels, c, h, w, feats, nf, logits) == 0);

    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        alarm(120); /* a hang is a failure (SIGALRM), not a stuck test */
        int bad = run(m, sup, qry, labels, c, h, w, feats2, nf, logits2);
        if (bad) fprintf(stderr, "child: %s\n", lwfm_last_error());
        if (!bad && memcmp(feats, feats2, nf * sizeof(float)) != 0) {
            fprintf(stderr, "child: features differ from the parent's\n");
            bad = 1;
        }
        if (!bad && memcmp(logits, logits2, sizeof logits) != 0) {
            fprintf(stderr, "child: logits differ from the parent's\n");
            bad = 1;
        }
        /* a second call, and one more fork from the child */
        if (!bad) bad = run(m, sup, qry, labels, c, h, w, feats2, nf, logits2);
        _exit(bad ? 3 : 0);
    }
    int status = 0;
    EXPECT(waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status))
        fprintf(stderr, "child killed by signal %d (%s)\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? "hung" : "crashed");
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* the parent is unaffected */
    EXPECT(run(m, sup, qry, labels, c, h, w, feats2, nf, logits2) == 0);
    EXPECT(memcmp(feats, feats2, nf * sizeof(float)) == 0);
    lwfm_model_destroy(m);
    free(sup);
    free(qry);
    free(feats);
    free(feats2);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_fork MODEL.npz [MODEL.npz ...]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) one_model(argv[i]);
    printf("test_fork: %d checks, %d failures\n", checks, fails);
    return fails != 0;
}
