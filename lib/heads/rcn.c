/* RCN region comparison head (see rcn.h). */
#include "heads/rcn.h"

#include <math.h>
#include "core/omp_compat.h"
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "core/gemm.h"
#include "model.h"

#define COS_EPS 1e-8
#define BN_EPS 1e-5

void lwfm__rcn_free(lwfm__rcn *h) {
    for (int i = 0; i < LWFM_RCN_MAX_LAYERS; i++) {
        lwfm__free(h->w[i]);
        lwfm__free(h->b[i]);
        lwfm__free(h->g[i]);
        lwfm__free(h->beta[i]);
    }
    lwfm__free(h->w0s);
    lwfm__free(h->w0q);
    memset(h, 0, sizeof *h);
}

/* Meta-learner layer i: the (out, in) 1x1 convolution w and the BatchNorm
 * `explain_network.meta_learner.{3i+1}.*`, folded into w[i], b[i] (or kept
 * apart with batch statistics). The caller frees h on failure. */
static lwfm_status load_layer(lwfm__rcn *h, const lwfm__archive *ar, int i, int in, int out,
                              const float *w) {
    char key[96];
    int64_t vshape[1] = {out};
    const float *g, *beta, *mu, *var;
    lwfm_status st;
    const float **dst[4] = {&g, &beta, &mu, &var};
    static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int k = 0; k < 4; k++) {
        snprintf(key, sizeof key, "explain_network.meta_learner.%d.%s", 3 * i + 1, suffix[k]);
        if ((st = lwfm__archive_get_f32(ar, key, 1, vshape, dst[k]))) return st;
    }
    h->w[i] = lwfm__alloc((size_t)out * in * sizeof(float));
    h->b[i] = lwfm__alloc((size_t)out * sizeof(float));
    if (h->batch_stats) {
        h->g[i] = lwfm__alloc((size_t)out * sizeof(float));
        h->beta[i] = lwfm__alloc((size_t)out * sizeof(float));
    }
    if (!h->w[i] || !h->b[i] || (h->batch_stats && (!h->g[i] || !h->beta[i])))
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (RCN meta-learner)");
    for (int o = 0; o < out; o++) {
        if (!(var[o] >= 0.0f))
            return lwfm__error(LWFM_ERR_FORMAT,
                               "tensor 'explain_network.meta_learner.%d.running_var' has a "
                               "negative value",
                               3 * i + 1);
        if (h->batch_stats) { /* raw conv; the BatchNorm runs per query batch */
            memcpy(h->w[i] + (size_t)o * in, w + (size_t)o * in, (size_t)in * sizeof(float));
            h->b[i][o] = 0.0f;
            h->g[i][o] = g[o];
            h->beta[i][o] = beta[o];
            continue;
        }
        double scale = g[o] / sqrt((double)var[o] + BN_EPS);
        for (int k = 0; k < in; k++)
            h->w[i][(size_t)o * in + k] = (float)(w[(size_t)o * in + k] * scale);
        h->b[i][o] = (float)(beta[o] - mu[o] * scale);
    }
    return LWFM_OK;
}

lwfm_status lwfm__rcn_load(lwfm__rcn *h, const lwfm__archive *ar, int channels,
                           int batch_stats) {
    memset(h, 0, sizeof *h);
    h->batch_stats = batch_stats;
    int in = 2 * channels;
    for (int i = 0;; i++) {
        char key[96];
        snprintf(key, sizeof key, "explain_network.meta_learner.%d.weight", 3 * i);
        const lwfm__tensor *t = lwfm__archive_find(ar, key);
        if (!t) {
            if (i == 0)
                return lwfm__error(LWFM_ERR_MISSING_KEY,
                                   "tensor '%s' (RCN meta-learner) is missing", key);
            break;
        }
        if (i == LWFM_RCN_MAX_LAYERS)
            return lwfm__error(LWFM_ERR_LIMIT, "RCN meta-learner has more than %d layers",
                               LWFM_RCN_MAX_LAYERS);
        if (t->ndim != 4 || t->shape[1] != in || t->shape[2] != 1 || t->shape[3] != 1 ||
            t->shape[0] < 1 || t->shape[0] > 65536)
            return lwfm__error(LWFM_ERR_SHAPE,
                               "tensor '%s' must be a 1x1 convolution (out, %d, 1, 1)", key, in);
        int out = (int)t->shape[0];
        int64_t wshape[4] = {out, in, 1, 1};
        const float *w;
        lwfm_status st = lwfm__archive_get_f32(ar, key, 4, wshape, &w);
        if (st) return st;
        if ((st = load_layer(h, ar, i, in, out, w))) {
            lwfm__rcn_free(h);
            return st;
        }
        h->in[i] = in;
        h->out[i] = out;
        h->n_layers = i + 1;
        in = out;
    }
    h->widest = 1;
    for (int i = 0; i < h->n_layers; i++)
        if (h->out[i] > h->widest) h->widest = h->out[i];
    if (h->out[h->n_layers - 1] != 1) {
        lwfm__rcn_free(h);
        return lwfm__error(LWFM_ERR_SHAPE, "the RCN meta-learner's last layer must have 1 output");
    }
    /* first layer split into its support and query halves */
    int o0 = h->out[0];
    h->w0s = lwfm__alloc((size_t)o0 * channels * sizeof(float));
    h->w0q = lwfm__alloc((size_t)o0 * channels * sizeof(float));
    if (!h->w0s || !h->w0q) {
        lwfm__rcn_free(h);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory (RCN meta-learner)");
    }
    for (int o = 0; o < o0; o++) {
        memcpy(h->w0s + (size_t)o * channels, h->w[0] + (size_t)o * 2 * channels,
               (size_t)channels * sizeof(float));
        memcpy(h->w0q + (size_t)o * channels, h->w[0] + (size_t)o * 2 * channels + channels,
               (size_t)channels * sizeof(float));
    }
    return LWFM_OK;
}

lwfm_status lwfm__rcn_prepare(const lwfm_model *m, const lwfm__rcn *h, const float *feats,
                              int64_t n, int64_t P, lwfm__rcn_side *s) {
    const int C = m->layers.C, o0 = h->out[0];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *f = feats + i * C * P;
        float *x = s->X + i * P * C, *nrm = s->norm + i * P;
        for (int64_t p = 0; p < P; p++) {
            double ss = 0.0;
            for (int c = 0; c < C; c++) {
                float v = f[(int64_t)c * P + p];
                x[p * C + c] = v;
                ss += (double)v * v;
            }
            nrm[p] = (float)sqrt(ss);
        }
    }
    /* The first layer on each side, one image per (single-threaded) GEMM:
     * an image's values then depend on that image alone, not on how many
     * were prepared with it, so a support set grown by lwfm_support_add
     * scores bit-identically to one prepared whole. */
    int failed = 0;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *x = s->X + i * P * C;
        if (dnnl_sgemm('N', 'T', P, o0, C, 1.0f, x, C, h->w0s, C, 0.0f, s->A + i * P * o0, o0) !=
                dnnl_success ||
            dnnl_sgemm('N', 'T', P, o0, C, 1.0f, x, C, h->w0q, C, 0.0f, s->B + i * P * o0, o0) !=
                dnnl_success) {
#pragma omp atomic write
            failed = 1;
        }
    }
    if (failed) return lwfm__error(LWFM_ERR_BACKEND, "oneDNN: sgemm (RCN first layer) failed");
    const float *b0 = h->b[0];
    for (int64_t r = 0; r < n * P; r++)
        for (int o = 0; o < o0; o++) s->B[r * o0 + o] += b0[o];
    return LWFM_OK;
}

/* Region similarities of support image j against query q: sim[r] (and match[r]). */
static void similarities(const lwfm__rcn_side *S, int64_t j, const lwfm__rcn_side *Q, int64_t q,
                         int C, const float *dots, float *sim, int *match) {
    const int64_t P = S->P, Pq = Q->P;
    const float *ns = S->norm + j * P, *nq = Q->norm + q * Pq;
    for (int64_t r = 0; r < P; r++) {
        double best = -INFINITY;
        int arg = 0;
        for (int64_t p = 0; p < Pq; p++) {
            double den = (double)ns[r] * nq[p];
            double c = dots[r * Pq + p] / (den > COS_EPS ? den : COS_EPS);
            if (c > best) best = c, arg = (int)p;
        }
        sim[r] = (float)best;
        if (match) match[r] = arg;
    }
    (void)C;
}

size_t lwfm__rcn_pair_floats(const lwfm__rcn *h, int64_t P) {
    return (size_t)P * P + 2 * (size_t)P * h->widest;
}

/* Scalar meta-learner on `rows` cells whose first layer is h (rows x out0,
 * pre-activation); writes w (rows). tmp: rows x widest floats. */
static void meta_rest(const lwfm__rcn *h, float *H, int64_t rows, float *tmp, float *w) {
    int width = h->out[0];
    for (int64_t r = 0; r < rows * width; r++) H[r] = H[r] > 0 ? H[r] : 0;
    float *cur = H, *nxt = tmp;
    for (int i = 1; i < h->n_layers; i++) {
        int out = h->out[i];
        for (int64_t r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) {
                const float *wr = h->w[i] + (size_t)o * width, *x = cur + r * width;
                float s = h->b[i][o];
                for (int k = 0; k < width; k++) s += wr[k] * x[k];
                nxt[r * out + o] = s > 0 ? s : 0;
            }
        float *t = cur;
        cur = nxt;
        nxt = t;
        width = out;
    }
    for (int64_t r = 0; r < rows; r++) w[r] = cur[r];
}

double lwfm__rcn_pair(const lwfm_model *m, const lwfm__rcn *h, const lwfm__rcn_side *S, int64_t j,
                      const lwfm__rcn_side *Q, int64_t q, float *sim, int *match, float *w,
                      float *scratch) {
    const int C = m->layers.C, o0 = h->out[0];
    const int64_t P = S->P, Pq = Q->P;
    float *dots = scratch, *H = dots + P * Pq, *tmp = H + P * h->widest;
    const float *xs = S->X + j * P * C, *xq = Q->X + q * Pq * C;
    for (int64_t r = 0; r < P; r++)
        for (int64_t p = 0; p < Pq; p++) {
            float s = 0.0f;
            for (int c = 0; c < C; c++) s += xs[r * C + c] * xq[p * C + c];
            dots[r * Pq + p] = s;
        }
    similarities(S, j, Q, q, C, dots, sim, match);
    const float *A = S->A + j * P * o0, *B = Q->B + q * Pq * o0;
    for (int64_t r = 0; r < P * o0; r++) H[r] = A[r] + B[r]; /* same cell: P == Pq */
    meta_rest(h, H, P, tmp, w);
    double e = 0.0;
    for (int64_t r = 0; r < P; r++) e += (double)w[r] * sim[r];
    return e;
}

/* In place on H (rows x width): BatchNorm with the rows' statistics (mean
 * and biased variance per column, in double), scale g, shift b, then ReLU.
 * part: threads x 2 x width doubles. */
static void batch_norm_relu(float *H, int64_t rows, int width, const float *g, const float *b,
                            double *part) {
    int threads = omp_get_max_threads();
    double *mean = part, *var = part + width; /* thread 0's partials become the totals */
    for (int pass = 0; pass < 2; pass++) {
        for (int t = 0; t < threads; t++) /* a team may be smaller than `threads` */
            for (int k = 0; k < width; k++) part[(size_t)t * 2 * width + (size_t)pass * width + k] = 0.0;
#pragma omp parallel
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            double *acc = part + (size_t)t * 2 * width + (size_t)pass * width;
            int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
            for (int64_t r = lo; r < hi; r++) {
                const float *x = H + r * width;
                if (pass == 0)
                    for (int k = 0; k < width; k++) acc[k] += x[k];
                else
                    for (int k = 0; k < width; k++) {
                        double d = x[k] - mean[k];
                        acc[k] += d * d;
                    }
            }
        }
        double *tot = pass == 0 ? mean : var;
        for (int t = 1; t < threads; t++)
            for (int k = 0; k < width; k++) tot[k] += part[(size_t)t * 2 * width + (size_t)pass * width + k];
        for (int k = 0; k < width; k++) tot[k] /= (double)rows;
    }
    float *scale = (float *)(part + 2 * (size_t)threads * width), *shift = scale + width;
    for (int k = 0; k < width; k++) {
        double sc = g[k] / sqrt(var[k] + BN_EPS);
        scale[k] = (float)sc;
        shift[k] = (float)(b[k] - mean[k] * sc);
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *x = H + r * width;
        for (int k = 0; k < width; k++) {
            float v = x[k] * scale[k] + shift[k];
            x[k] = v > 0 ? v : 0;
        }
    }
}

/* Query q: its region similarities against every support image (sim: ns x
 * P) and the meta-learner's first layer before its BatchNorm / ReLU (H: ns x
 * P x out0), from the per-image halves. dots: ns*P x P scratch. */
static lwfm_status first_layer(const lwfm_model *m, const lwfm__rcn *h,
                                     const lwfm__rcn_side *S, const lwfm__rcn_side *Q, int64_t q,
                                     dnnl_stream_t ts, float *dots, float *sim, float *H) {
    const int C = m->layers.C, o0 = h->out[0];
    const int64_t P = S->P, ns = S->n;
    lwfm_status st = lwfm__gemm_abt(m->engine, ts, ns * P, P, C, S->X, C, Q->X + q * P * C, C,
                                    dots, P, 0);
    if (st) return st;
    for (int64_t j = 0; j < ns; j++)
        similarities(S, j, Q, q, C, dots + j * P * P, sim + j * P, NULL);
    const float *B = Q->B + q * P * o0;
    for (int64_t j = 0; j < ns; j++)
        for (int64_t r = 0; r < P; r++) {
            const float *a = S->A + (j * P + r) * o0, *b = B + r * o0;
            float *o = H + (j * P + r) * o0;
            for (int k = 0; k < o0; k++) o[k] = a[k] + b[k];
        }
    return LWFM_OK;
}

/* Batch mode: the meta-learner's layers over the batch's nrows cells, each
 * BatchNorm with the batch's statistics; H holds the first layer (pre-
 * BatchNorm), H2 is scratch of the same size. *w: the weights (H or H2). */
static lwfm_status batch_meta_layers(const lwfm_model *m, const lwfm__rcn *h,
                                     dnnl_stream_t stream, int64_t nrows, float *H, float *H2,
                                     double *part, const float **w) {
    float *cur = H, *nxt = H2;
    int width = h->out[0];
    batch_norm_relu(cur, nrows, width, h->g[0], h->beta[0], part);
    for (int i = 1; i < h->n_layers; i++) {
        int out = h->out[i];
        lwfm_status st = lwfm__gemm_abt(m->engine, stream, nrows, out, width, cur, width,
                                        h->w[i], width, nxt, out, 0);
        if (st) return st;
        batch_norm_relu(nxt, nrows, out, h->g[i], h->beta[i], part);
        float *t = cur;
        cur = nxt;
        nxt = t;
        width = out;
    }
    *w = cur;
    return LWFM_OK;
}

/* Batch-statistics mode: queries in batches of cfg.query_batch; per batch,
 * every meta-learner BatchNorm normalises over all (query, support image,
 * cell) rows of the batch (peers.md 4.7). */
static lwfm_status rcn_score_batch(const lwfm_model *m, const lwfm__rcn *h,
                                   const lwfm__rcn_side *S, const int32_t *labels,
                                   const int64_t *count, int64_t way, const lwfm__rcn_side *Q,
                                   float *logits, lwfm__arena *arena) {
    const int widest = h->widest, o0 = h->out[0];
    const int64_t P = S->P, ns = S->n, qb = m->cfg.query_batch < Q->n ? m->cfg.query_batch : Q->n;
    int threads = omp_get_max_threads();
    const size_t rows = (size_t)qb * (size_t)ns * (size_t)P; /* of the largest batch */
    /* H, H2: rows x widest; sim: rows; dots: per thread ns*P x P; stats */
    size_t floats = 2 * rows * (size_t)widest + rows + (size_t)threads * ns * P * P;
    size_t bytes = (floats * sizeof(float) + 7) / 8 * 8;
    size_t stat_bytes = (2 * (size_t)threads * widest + (size_t)widest) * sizeof(double);
    char *mem = lwfm__arena_get(arena, LWFM_SLOT_R, bytes + stat_bytes);
    if (!mem) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring RCN queries");
    float *H = (float *)mem, *H2 = H + rows * widest, *sim = H2 + rows * widest;
    float *dots_all = sim + rows;
    double *part = (double *)(mem + bytes);
    lwfm_status st = LWFM_OK;
    dnnl_stream_t stream = NULL;
    if (dnnl_stream_create(&stream, m->engine, dnnl_stream_default_flags) != dnnl_success)
        return lwfm__error(LWFM_ERR_BACKEND, "oneDNN: stream create failed");
    for (int64_t q0 = 0; q0 < Q->n && !st; q0 += qb) {
        const int64_t nq = Q->n - q0 < qb ? Q->n - q0 : qb;
        const int64_t nrows = nq * ns * P;
        /* region similarities and the first layer, pre-BatchNorm */
#pragma omp parallel
        {
            float *dots = dots_all + (size_t)omp_get_thread_num() * ns * P * P;
            dnnl_stream_t ts = NULL;
            lwfm_status my = LWFM_OK;
            if (dnnl_stream_create(&ts, m->engine, dnnl_stream_default_flags) != dnnl_success)
                my = LWFM_ERR_BACKEND;
#pragma omp for schedule(dynamic, 1)
            for (int64_t qi = 0; qi < nq; qi++) {
                if (my) continue;
                my = first_layer(m, h, S, Q, q0 + qi, ts, dots, sim + qi * ns * P,
                                 H + qi * ns * P * o0);
            }
            if (ts) dnnl_stream_destroy(ts);
            if (my) {
#pragma omp critical
                if (!st) st = my;
            }
        }
        if (st) break;
        const float *cur = NULL;
        if ((st = batch_meta_layers(m, h, stream, nrows, H, H2, part, &cur))) break;
        /* cur: the weights w[(qi, j, r)] */
#pragma omp parallel for schedule(static)
        for (int64_t qi = 0; qi < nq; qi++) {
            for (int64_t c = 0; c < way; c++) {
                double acc = 0.0;
                for (int64_t j = 0; j < ns; j++) {
                    if (labels[j] != c) continue;
                    const float *w = cur + (qi * ns + j) * P, *sm = sim + (qi * ns + j) * P;
                    for (int64_t r = 0; r < P; r++) acc += (double)w[r] * sm[r];
                }
                logits[(q0 + qi) * way + c] = (float)(acc / (double)count[c]);
            }
        }
    }
    dnnl_stream_destroy(stream);
    if (st) return lwfm__error(st, "RCN scoring: a oneDNN matmul failed");
    return LWFM_OK;
}

/* Running-statistics mode, query q: region similarities (sim) against all
 * support images, the meta-learner's weights (in H / H2), logits row q.
 * dots: ns*P x P, H, H2: ns*P x widest, sim: ns*P, acc: way. */
static lwfm_status score_one(const lwfm_model *m, const lwfm__rcn *h, const lwfm__rcn_side *S,
                             const int32_t *labels, const int64_t *count, int64_t way,
                             const lwfm__rcn_side *Q, int64_t q, dnnl_stream_t stream,
                             float *dots, float *H, float *H2, float *sim, double *acc,
                             float *logits) {
    const int o0 = h->out[0];
    const int64_t P = S->P, ns = S->n;
    const size_t rows = (size_t)ns * P;
    /* all support regions against the query's regions (one GEMM), the
     * meta-learner's first layer + ReLU, then its other layers (GEMMs) */
    lwfm_status my = first_layer(m, h, S, Q, q, stream, dots, sim, H);
    if (my) return my;
    for (size_t i = 0; i < rows * (size_t)o0; i++) H[i] = H[i] > 0 ? H[i] : 0;
    float *cur = H, *nxt = H2;
    int width = o0;
    for (int i = 1; i < h->n_layers && !my; i++) {
        int out = h->out[i];
        my = lwfm__gemm_abt(m->engine, stream, (int64_t)rows, out, width, cur, width,
                            h->w[i], width, nxt, out, 0);
        for (size_t r = 0; r < rows && !my; r++)
            for (int o = 0; o < out; o++) {
                float v = nxt[r * out + o] + h->b[i][o];
                nxt[r * out + o] = v > 0 ? v : 0;
            }
        float *t = cur;
        cur = nxt;
        nxt = t;
        width = out;
    }
    if (my) return my;
    for (int64_t c = 0; c < way; c++) acc[c] = 0.0;
    for (int64_t j = 0; j < ns; j++) {
        double e = 0.0;
        for (int64_t r = 0; r < P; r++) e += (double)cur[j * P + r] * sim[j * P + r];
        acc[labels[j]] += e;
    }
    for (int64_t c = 0; c < way; c++) logits[q * way + c] = (float)(acc[c] / count[c]);
    return LWFM_OK;
}

lwfm_status lwfm__rcn_score(const lwfm_model *m, const lwfm__rcn *h, const lwfm__rcn_side *S,
                            const int32_t *labels, const int64_t *count, int64_t way,
                            const lwfm__rcn_side *Q, float *logits, lwfm__arena *arena) {
    const int64_t P = S->P, ns = S->n;
    if (Q->P != P)
        return lwfm__error(LWFM_ERR_SHAPE,
                           "RCN compares regions of the same grid: support maps have %lld "
                           "regions, queries %lld",
                           (long long)P, (long long)Q->P);
    if (h->batch_stats) return rcn_score_batch(m, h, S, labels, count, way, Q, logits, arena);
    const int widest = h->widest;
    int threads = omp_get_max_threads();
    size_t rows = (size_t)ns * P;
    /* floats, then the doubles at an 8-byte boundary (the float count may be odd) */
    const size_t acc_off = ((rows * P + 2 * rows * widest + 2 * rows + (size_t)way) *
                                sizeof(float) + 7) / 8 * 8;
    size_t per_thread = acc_off + (size_t)way * sizeof(double);
    per_thread = (per_thread + 63) / 64 * 64;
    char *scratch = lwfm__arena_get(arena, LWFM_SLOT_R, per_thread * (size_t)threads);
    if (!scratch) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring RCN queries");
    lwfm_status st = LWFM_OK;
#pragma omp parallel
    {
        float *dots = (float *)(scratch + per_thread * (size_t)omp_get_thread_num());
        float *H = dots + rows * P, *H2 = H + rows * widest, *sim = H2 + rows * widest;
        double *acc = (double *)((char *)dots + acc_off);
        dnnl_stream_t stream = NULL;
        lwfm_status my = LWFM_OK;
        if (dnnl_stream_create(&stream, m->engine, dnnl_stream_default_flags) != dnnl_success)
            my = LWFM_ERR_BACKEND;
#pragma omp for schedule(dynamic, 1)
        for (int64_t q = 0; q < Q->n; q++) {
            if (my) continue;
            my = score_one(m, h, S, labels, count, way, Q, q, stream, dots, H, H2, sim, acc,
                           logits);
        }
        if (stream) dnnl_stream_destroy(stream);
        if (my) {
#pragma omp critical
            if (!st) st = my;
        }
    }
    if (st) return lwfm__error(st, "RCN scoring: a oneDNN matmul failed");
    return LWFM_OK;
}
