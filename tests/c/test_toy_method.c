/* A method added through the method table alone (docs/adding-a-method.md):
 * cosine to prototypes. A class's prototype is the mean of its support
 * images' pooled features (mean over positions); logit = cosine(pooled
 * query, prototype) / temperature (the model's config temperature).
 *
 * The whole method is the first part of this file (its prepared-images
 * struct, prepare, score and its table entry); the test registers the entry
 * with lwfm__method_register() (lib/methods/table.c), points a loaded model
 * at it, scores episodes through the public calls and checks the logits
 * against a plain computation below. The method table is internal, so the
 * test links the white-box archive (lwfm_internal). The config parser
 * (lib/config.c) knows only the built-in method names, so the model is a
 * DN4 weight file (no weights of its own) switched to the toy entry.
 *
 * usage: test_toy_method DN4_MODEL.npz */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "lwfm/lwfm.h"
#include "methods/method.h"
#include "model.h"

#include "expect.h"

/* ------------------------------------------------------------------------ */
/* The toy method                                                           */

typedef struct toy_prep {
    lwfm__prep_mem mem; /* first, as every method's prepared images */
    int64_t n;
    float *pooled; /* n x C: mean over positions */
} toy_prep;

/* One buffer: the pooled features, C floats per image (their layout lets
 * the library copy, grow, save and load prepared sets of the method). */
static void toy_layout(const lwfm_model *m, int64_t n, int64_t P, lwfm__prep_layout *out) {
    (void)n, (void)P;
    out->struct_bytes = sizeof(toy_prep);
    out->n_image_buf = 1;
    out->image_bytes[0] = (size_t)m->layers.C * sizeof(float);
    out->type[0] = 'f';
}

static void toy_bind(lwfm__prep *prep) {
    toy_prep *p = (toy_prep *)prep;
    p->n = p->mem.n;
    p->pooled = p->mem.buf[0];
}

static lwfm_status toy_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                               lwfm__arena *arena, lwfm__prep **out) {
    const int64_t C = m->layers.C;
    toy_prep *p = (toy_prep *)lwfm__prep_make(m, n, P, arena);
    if (!p) return LWFM_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n * C; i++) {
        double s = 0.0;
        for (int64_t a = 0; a < P; a++) s += feats[i * P + a];
        p->pooled[i] = (float)(s / (double)P);
    }
    *out = (lwfm__prep *)p;
    return LWFM_OK;
}

static lwfm_status toy_score(const lwfm_model *m, const lwfm__prep *Sp, const int32_t *labels,
                             const int64_t *count, int64_t way, const lwfm__prep *Qp, float *logits,
                             lwfm__arena *arena) {
    const toy_prep *S = (const toy_prep *)Sp, *Q = (const toy_prep *)Qp;
    const int64_t C = m->layers.C;
    double *proto = lwfm__arena_get(arena, LWFM_SLOT_LEVELS, (size_t)way * C * sizeof(double));
    if (!proto) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    memset(proto, 0, (size_t)way * C * sizeof(double));
    for (int64_t j = 0; j < S->n; j++)
        for (int64_t c = 0; c < C; c++)
            proto[labels[j] * C + c] += S->pooled[j * C + c] / (double)count[labels[j]];
    for (int64_t q = 0; q < Q->n; q++)
        for (int64_t k = 0; k < way; k++) {
            double dot = 0.0, nq = 0.0, np = 0.0;
            for (int64_t c = 0; c < C; c++) {
                double a = Q->pooled[q * C + c], b = proto[k * C + c];
                dot += a * b, nq += a * a, np += b * b;
            }
            double den = sqrt(nq) * sqrt(np);
            logits[q * way + k] = (float)(dot / (den > 1e-8 ? den : 1e-8) / m->cfg.temperature);
        }
    return LWFM_OK;
}

static const lwfm__method toy_method = {
    .id = (lwfm_method)100,
    .name = "toy-cosine",
    .weight_prefix = "",
    .layout = toy_layout,
    .bind = toy_bind,
    .prepare = toy_prepare,
    .score = toy_score,
};

/* ------------------------------------------------------------------------ */
/* The test                                                                 */

/* The logits written plainly: pooled maps, prototypes, cosines, in double. */
static void reference(const float *sf, const int32_t *labels, int64_t ns, const float *qf,
                      int64_t nq, int64_t C, int64_t P, int64_t way, double temperature,
                      double *out) {
    double *proto = calloc((size_t)(way * C), sizeof(double)), *pq = test_alloc(C * sizeof(double));
    int64_t count[8] = {0};
    for (int64_t j = 0; j < ns; j++) count[labels[j]]++;
    for (int64_t j = 0; j < ns; j++)
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int64_t a = 0; a < P; a++) s += sf[(j * C + c) * P + a];
            proto[labels[j] * C + c] += s / P / count[labels[j]];
        }
    for (int64_t q = 0; q < nq; q++) {
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int64_t a = 0; a < P; a++) s += qf[(q * C + c) * P + a];
            pq[c] = s / P;
        }
        for (int64_t k = 0; k < way; k++) {
            double dot = 0.0, n1 = 0.0, n2 = 0.0;
            for (int64_t c = 0; c < C; c++) {
                dot += pq[c] * proto[k * C + c];
                n1 += pq[c] * pq[c];
                n2 += proto[k * C + c] * proto[k * C + c];
            }
            out[q * way + k] = dot / (sqrt(n1) * sqrt(n2)) / temperature;
        }
    }
    free(proto);
    free(pq);
}

static void expect_close(const float *got, const double *want, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        worst = e > worst ? e : worst;
    }
    if (worst > 1e-5) fprintf(stderr, "worst relative error %g\n", worst);
    EXPECT(worst <= 1e-5); /* float pooling and cosines against double ones */
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DN4_MODEL.npz\n", argv[0]);
        return 2;
    }
    EXPECT(lwfm__method_register(&toy_method) == LWFM_OK);
    EXPECT(lwfm__method_register(&toy_method) == LWFM_ERR_INVALID_ARGUMENT); /* taken */
    EXPECT(lwfm__method_find("toy-cosine") == &toy_method);
    EXPECT(lwfm_method_name(toy_method.id) &&
           !strcmp(lwfm_method_name(toy_method.id), "toy-cosine"));

    lwfm_model *m = NULL;
    EXPECT(lwfm_model_load(&m, argv[1], NULL) == LWFM_OK);
    if (!m) return 1;
    /* a DN4 model has no weights of its own to give back: switch it */
    EXPECT(m->method->load == NULL && m->weights == NULL);
    m->cfg.method = toy_method.id;
    m->method = lwfm__method_get(toy_method.id);
    EXPECT(lwfm_model_method(m) == toy_method.id);

    int64_t ch, h, w, C, fh, fw;
    EXPECT(lwfm_model_input_shape(m, &ch, &h, &w) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(m, h, w, &C, &fh, &fw) == LWFM_OK);
    const int64_t way = 4, nq = 6, P = fh * fw;
    const int32_t labels[7] = {0, 1, 2, 3, 1, 3, 3}; /* unequal shots */
    const int64_t ns = 7;
    const size_t img = (size_t)(ch * h * w), feat = (size_t)(C * P);
    float *si = test_alloc(ns * img * sizeof(float)), *qi = test_alloc(nq * img * sizeof(float));
    for (size_t i = 0; i < ns * img; i++) si[i] = test_uniform();
    for (size_t i = 0; i < nq * img; i++) qi[i] = test_uniform();
    float *sf = test_alloc(ns * feat * sizeof(float)), *qf = test_alloc(nq * feat * sizeof(float));
    EXPECT(lwfm_model_features(m, si, ns, ch, h, w, sf, ns * feat) == LWFM_OK);
    EXPECT(lwfm_model_features(m, qi, nq, ch, h, w, qf, nq * feat) == LWFM_OK);
    double want[6 * 4];
    reference(sf, labels, ns, qf, nq, C, P, way, m->cfg.temperature, want);

    float got[6 * 4];
    EXPECT(lwfm_episode_score_features(m, sf, ns, labels, qf, nq, C, fh, fw, way, got, 24) ==
           LWFM_OK);
    expect_close(got, want, 24);
    memset(got, 0, sizeof got);
    EXPECT(lwfm_episode_score(m, si, ns, labels, qi, nq, ch, h, w, way, got, 24) == LWFM_OK);
    expect_close(got, want, 24);
    lwfm_support *sup = NULL;
    EXPECT(lwfm_support_prepare_features(&sup, m, sf, ns, labels, C, fh, fw, way) == LWFM_OK);
    memset(got, 0, sizeof got);
    EXPECT(sup && lwfm_support_score_features(sup, qf, nq, C, fh, fw, got, 24) == LWFM_OK);
    expect_close(got, want, 24);

    /* its layout lets the library save, load and grow toy sets too */
    size_t bytes = 0;
    EXPECT(lwfm_support_save_to_memory(sup, NULL, 0, &bytes) == LWFM_OK);
    void *blob = test_alloc(bytes);
    EXPECT(lwfm_support_save_to_memory(sup, blob, bytes, NULL) == LWFM_OK);
    lwfm_support *back = NULL, *base = NULL, *grown = NULL;
    float again[6 * 4];
    EXPECT(lwfm_support_load_from_memory(&back, m, blob, bytes) == LWFM_OK);
    EXPECT(back && lwfm_support_score_features(back, qf, nq, C, fh, fw, again, 24) == LWFM_OK);
    EXPECT(!memcmp(again, got, sizeof got));
    EXPECT(lwfm_support_prepare_features(&base, m, sf, 3, labels, C, fh, fw, 3) == LWFM_OK);
    EXPECT(lwfm_support_add_features(&grown, base, sf + 3 * feat, ns - 3, labels + 3, C, fh, fw,
                                     way) == LWFM_OK); /* class 3 is new */
    EXPECT(grown && lwfm_support_score_features(grown, qf, nq, C, fh, fw, again, 24) == LWFM_OK);
    EXPECT(!memcmp(again, got, sizeof got));
    lwfm_support_destroy(back), lwfm_support_destroy(base), lwfm_support_destroy(grown);
    free(blob);
    lwfm_support_destroy(sup);

    /* no per-pair views: the handles say which method has them */
    lwfm_lwe *lwe = NULL;
    EXPECT(lwfm_lwe_create(&lwe, m) == LWFM_ERR_WRONG_KIND && lwe == NULL);
    EXPECT(strstr(lwfm_last_error(), "'toy-cosine'") != NULL);

    lwfm_model_destroy(m);
    free(si), free(qi), free(sf), free(qf);
    printf("%d checks, %d failed\n", checks, fails);
    return fails != 0;
}
