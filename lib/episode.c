/* The episode pipeline: support preparation, query scoring, and the public
 * episode / prepared-support / LWE / SPM calls (spec section 3).
 *
 * Work is split so that everything depending on one image only is done
 * once per image (centring, unit vectors, the matcher MLP g_l), and each
 * thread takes a contiguous range of queries: one GEMM per layer and block
 * of queries gives their correlations with every support position, then
 * the per-pair steps (attention, vectorised across the supports;
 * assignment; matched cosines) follow while the block is in cache. */
#include <math.h>
#include "core/omp_compat.h"
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/profile.h"
#include "core/vec.h"
#include "episode.h"
#include "heads/dn4.h"
#include "heads/i2c.h"
#include "heads/mml.h"
#include "heads/rcn.h"
#include "model.h"
#include "spm/assign.h"

#define COS_EPS 1e-8
/* A thread's correlation blocks (all layers) aim at this many floats. */
#define RT_BLOCK_FLOATS ((size_t)64 << 10)

struct lwfm_support {
    lwfm_model *model;
    int64_t way;
    int32_t *labels;
    int64_t *count; /* supports per class */
    side s;
};

void lwfm__side_free(side *s) {
    if (!s->owned) {
        memset(s, 0, sizeof *s);
        return;
    }
    lwfm__free(s->X);
    lwfm__free(s->U);
    lwfm__free(s->G);
    lwfm__free(s->gn);
    lwfm__free(s->V);
    lwfm__free(s->mu);
    lwfm__free(s->scat);
    memset(s, 0, sizeof *s);
}

/* Per-image work for n feature maps (n x C x P). */
static lwfm_status side_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                                side *out, lwfm__arena *arena);
lwfm_status lwfm__side_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                               side *out, lwfm__arena *arena) {
    double tp = LWFM_PROF_T0();
    lwfm_status st = side_prepare(m, feats, n, P, out, arena);
    if (m->cfg.method != LWFM_METHOD_LWFM_SPM) LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
    return st;
}

static lwfm_status side_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                                side *out, lwfm__arena *arena) {
    const lwfm__layers *ly = &m->layers;
    const int64_t C = ly->C, L = ly->n;
    lwfm_status st = LWFM_OK;
    float *tmp = NULL;
    side s = {.n = n, .P = P, .owned = arena == NULL};
    if (m->cfg.method == LWFM_METHOD_DN4) {
        size_t bytes = (size_t)n * P * C * sizeof(float);
        s.U = arena ? lwfm__arena_get(arena, 1, bytes) : lwfm__alloc(bytes);
        if (!s.U)
            return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory preparing %lld images",
                               (long long)n);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            lwfm__dn4_prepare_image(feats + i * C * P, (int)C, P, s.U + i * P * C);
        *out = s;
        return LWFM_OK;
    }
    if (m->cfg.method == LWFM_METHOD_RCN) {
        size_t o0 = (size_t)m->rcn.out[0];
        size_t bytes[4] = {(size_t)n * P * C * sizeof(float), (size_t)n * P * o0 * sizeof(float),
                           (size_t)n * P * o0 * sizeof(float), (size_t)n * P * sizeof(float)};
        float **dst[4] = {&s.X, &s.U, &s.G, &s.gn};
        for (int i = 0; i < 4; i++) {
            *dst[i] = arena ? lwfm__arena_get(arena, i, bytes[i]) : lwfm__alloc(bytes[i]);
            if (!*dst[i]) {
                lwfm__side_free(&s);
                return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory preparing %lld images",
                                   (long long)n);
            }
        }
        if ((st = lwfm__rcn_prepare(m, feats, n, P, &s))) {
            lwfm__side_free(&s);
            return st;
        }
        *out = s;
        return LWFM_OK;
    }
    if (m->cfg.method == LWFM_METHOD_MML) {
        size_t cells = (size_t)n * P * C;
        size_t bytes[4] = {cells * sizeof(float), cells * sizeof(float),
                           (size_t)n * C * sizeof(double), (size_t)n * C * C * sizeof(double)};
        void **dst[4] = {(void **)&s.U, (void **)&s.V, (void **)&s.mu, (void **)&s.scat};
        for (int i = 0; i < 4; i++) {
            *dst[i] = arena ? lwfm__arena_get(arena, i, bytes[i]) : lwfm__alloc(bytes[i]);
            if (!*dst[i]) {
                lwfm__side_free(&s);
                return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory preparing %lld images",
                                   (long long)n);
            }
        }
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            lwfm__mml_prepare_image(feats + i * C * P, (int)C, P, s.U + i * P * C, s.V + i * C * P,
                                    s.mu + i * C, s.scat + i * C * C);
        *out = s;
        return LWFM_OK;
    }
    size_t cells = (size_t)n * P * C;
    size_t bytes[5] = {cells * sizeof(float), cells * sizeof(float), cells * sizeof(float),
                       (size_t)n * P * L * sizeof(float),
                       lwfm__matcher_tmp_floats(&m->matcher, ly, n * P) * sizeof(float)};
    float **dst[5] = {&s.X, &s.U, &s.G, &s.gn, &tmp};
    int spm = lwfm__spm_on(m);
    for (int i = 0; i < (spm ? 5 : 2); i++) {
        *dst[i] = arena ? lwfm__arena_get(arena, i, bytes[i]) : lwfm__alloc(bytes[i]);
        if (!*dst[i]) {
            st = lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory preparing %lld images",
                             (long long)n);
            goto done;
        }
    }
    double tp = LWFM_PROF_T0();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        lwfm__lwe_prepare_image(ly, feats + i * C * P, s.X + i * P * C, s.U + i * P * C);
    LWFM_PROF_ADD(LWFM_PROF_LWE, tp);
    if (spm) {
        tp = LWFM_PROF_T0();
        st = lwfm__matcher_apply(&m->matcher, ly, n * P, s.X, s.G, s.gn, tmp);
        LWFM_PROF_ADD(LWFM_PROF_MATCHER, tp);
    }
done:
    if (!arena) lwfm__free(tmp);
    if (st)
        lwfm__side_free(&s);
    else
        *out = s;
    return st;
}

/* Per-thread scratch of the pair loop (floats; the solver's part doubles).
 * N = supports x P columns. */
typedef struct pair_scratch {
    float *rt;    /* L blocks of rows x N: correlations of the thread's query block */
    float *rs;    /* L x P x N: one query's correlations, support position-major */
    float *ws;    /* L x N: support weights of one query against every support */
    float *wq;    /* L x N: query weights likewise */
    float *attn;  /* LWFM_LWE_WORK_FLOATS(P, supports) */
    float *sacc;  /* way x C: sum over the class's supports of pooled attended support maps */
    float *wqacc; /* way x L x P: sum over the class's supports of the query weights */
    float *qv;    /* C */
    double *macc; /* way: sum of SPM scores */
    double *spm;
    int *sigma;
} pair_scratch;

/* Offsets (floats) of a pair_scratch slice's float arrays, in order; the
 * last entry is the total (see scratch_bind). */
static void scratch_layout(int64_t way, int C, int L, int P, int64_t n_s, size_t rt_floats,
                           size_t off[9]) {
    const size_t N = (size_t)n_s * P;
    const size_t sizes[8] = {rt_floats * L,
                             (size_t)L * P * N,
                             (size_t)L * N,
                             (size_t)L * N,
                             LWFM_LWE_WORK_FLOATS(P, n_s),
                             (size_t)way * C,
                             (size_t)way * L * P,
                             (size_t)C};
    off[0] = 0;
    for (int i = 0; i < 8; i++) off[i + 1] = off[i] + (sizes[i] + 15) / 16 * 16;
}

static size_t scratch_bytes(int64_t way, int C, int L, int P, int64_t n_s, size_t rt_floats) {
    size_t off[9];
    scratch_layout(way, C, L, P, n_s, rt_floats, off);
    size_t doubles = (size_t)way + lwfm__spm_work_doubles(P);
    size_t bytes = off[8] * sizeof(float) + doubles * sizeof(double) + (size_t)P * sizeof(int);
    return (bytes + 63) / 64 * 64; /* each thread's slice starts 64-byte aligned */
}

static void scratch_bind(pair_scratch *ps, char *base, int64_t way, int C, int L, int P,
                         int64_t n_s, size_t rt_floats) {
    size_t off[9];
    scratch_layout(way, C, L, P, n_s, rt_floats, off);
    float *f = (float *)base;
    float **dst[8] = {&ps->rt,   &ps->rs,   &ps->ws,    &ps->wq,
                      &ps->attn, &ps->sacc, &ps->wqacc, &ps->qv};
    for (int i = 0; i < 8; i++) *dst[i] = f + off[i];
    double *d = (double *)(f + off[8]);
    ps->macc = d;
    ps->spm = d + way;
    ps->sigma = (int *)(ps->spm + lwfm__spm_work_doubles(P));
}

/* Logits of one query q (row of Q) against the prepared support set.
 * RT[l] holds the correlations of layer l for the thread's query block:
 * row qi*P + b (query position), column j*P + a (support position),
 * leading dimension N = S->n * P. */
LWFM_MULTIARCH static void score_query(const lwfm_model *m, const side *S, const int32_t *labels,
                                       const int64_t *count, int64_t way, const side *Q, int64_t q,
                                       int64_t qi, float *const *RT, pair_scratch *ps,
                                       float *logits) {
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    const int64_t N = S->n * P;
    const lwfm__config *cfg = &m->cfg;
    const int spm = lwfm__spm_on(m);
    const float t_attn = (float)cfg->temperature_attn;
    const float *Xq = Q->X + q * P * C;
    memset(ps->sacc, 0, sizeof(float) * (size_t)way * C);
    memset(ps->wqacc, 0, sizeof(float) * (size_t)way * L * P);
    memset(ps->macc, 0, sizeof(double) * (size_t)way);

    /* attention of this query against every support, a layer at a time */
    for (int l = 0; l < L; l++) {
        const float *rq = RT[l] + qi * P * N;
        float *rs = ps->rs + (size_t)l * P * N;
        for (int64_t j = 0; j < S->n; j++)
            for (int b = 0; b < P; b++)
                for (int a = 0; a < P; a++) rs[a * N + j * P + b] = rq[b * N + j * P + a];
        lwfm__lwe_attention_blocks(rq, N, rs, N, P, (int)S->n, t_attn, ps->ws + l * N,
                                   ps->wq + l * N, ps->attn);
    }

    for (int64_t j = 0; j < S->n; j++) {
        const int c = labels[j];
        const float *Xs = S->X + j * P * C;
        float *sacc = ps->sacc + (size_t)c * C;
        double best = -INFINITY;
        for (int l = 0; l < L; l++) {
            const float *ws = ps->ws + l * N + j * P, *wq = ps->wq + l * N + j * P;
            const int off = ly->off[l], d = ly->dim[l];
            /* attended support map, pooled (sum over positions; / P later) */
            lwfm__weighted_rows(Xs + off, C, ws, P, d, sacc + off, 1);
            float *wqa = ps->wqacc + ((size_t)c * L + l) * P;
            for (int b = 0; b < P; b++) wqa[b] += wq[b];
            if (spm) {
                const int64_t gs = j * P * C + off, gq = q * P * C + off;
                double tp = LWFM_PROF_T0();
                double sc =
                    lwfm__spm_pair_score(ps->rs + (size_t)l * P * N + j * P, N, P, S->G + gs,
                                         S->gn + j * P * L + l, Q->G + gq, Q->gn + q * P * L + l, C,
                                         L, d, cfg->top_k, ps->sigma, NULL, ps->spm);
                LWFM_PROF_ADD(LWFM_PROF_SOLVER_THREAD, tp);
                sc *= cfg->matcher_prob;
                if (sc > best) best = sc;
            }
        }
        if (spm) ps->macc[c] += best;
    }

    for (int64_t c = 0; c < way; c++) {
        /* base = cos(pool(mean_j S'), pool(mean_j Q')); the common factor
         * 1 / (P n_c) cancels except against the cosine's 1e-8 floor. */
        const float *sacc = ps->sacc + (size_t)c * C;
        float *qv = ps->qv;
        for (int l = 0; l < L; l++) {
            const float *wqa = ps->wqacc + ((size_t)c * L + l) * P;
            const int off = ly->off[l], d = ly->dim[l];
            lwfm__weighted_rows(Xq + off, C, wqa, P, d, qv + off, 0);
        }
        double dot = 0.0, ns = 0.0, nq = 0.0;
#pragma omp simd reduction(+ : dot, ns, nq)
        for (int k = 0; k < C; k++) {
            dot += (double)sacc[k] * qv[k];
            ns += (double)sacc[k] * sacc[k];
            nq += (double)qv[k] * qv[k];
        }
        const double scale = 1.0 / ((double)P * count[c]);
        double den = sqrt(ns) * sqrt(nq) * scale * scale;
        double base = dot * scale * scale / (den > COS_EPS ? den : COS_EPS);
        double match = spm ? ps->macc[c] / (double)count[c] : 0.0;
        logits[q * way + c] = (float)((base + match) / cfg->temperature);
    }
}

/* What the threads of score_sides share. */
typedef struct score_job {
    const lwfm_model *m;
    const side *S, *Q;
    const int32_t *labels;
    const int64_t *count;
    int64_t way;
    float *logits;
    char *scratch;    /* one slice of sd bytes per thread */
    size_t sd;        /* bytes per thread */
    int64_t block;    /* queries per correlation GEMM */
    size_t rt_floats; /* floats of one layer's correlation block */
} score_job;

/* Thread t of nt: its contiguous range of queries, in blocks. Returns 0, or
 * -1 when oneDNN's GEMM failed. */
static int score_range(const score_job *job, int t, int nt) {
    const lwfm_model *m = job->m;
    const side *S = job->S, *Q = job->Q;
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    const int64_t ldt = S->n * P;
    const int64_t first = Q->n * t / nt, last = Q->n * (t + 1) / nt;
    pair_scratch ps;
    float *RT[LWFM_MAX_TAPS];
    double tt = LWFM_PROF_T0();
    scratch_bind(&ps, job->scratch + job->sd * (size_t)t, job->way, C, L, P, S->n, job->rt_floats);
    for (int l = 0; l < L; l++) RT[l] = ps.rt + (size_t)l * job->rt_floats;
    int bad = 0;
    for (int64_t q0 = first; q0 < last && !bad; q0 += job->block) {
        const int64_t nq = last - q0 < job->block ? last - q0 : job->block;
        for (int l = 0; l < L && !bad; l++)
            bad =
                dnnl_sgemm('N', 'T', nq * P, ldt, ly->dim[l], 1.0f, Q->U + q0 * P * C + ly->off[l],
                           C, S->U + ly->off[l], C, 0.0f, RT[l], ldt) != dnnl_success;
        for (int64_t qi = 0; qi < nq && !bad; qi++)
            score_query(m, S, job->labels, job->count, job->way, Q, q0 + qi, qi, RT, &ps,
                        job->logits);
    }
    LWFM_PROF_ADD(LWFM_PROF_PAIRS_THREAD, tt);
    return bad ? -1 : 0;
}

/* Logits (Q->n x way) of prepared queries against a prepared support set.
 * LWFM-SPM: each thread takes a contiguous range of queries and works
 * through it in blocks: one GEMM per layer correlates the block's query
 * positions (rows) with every support position, then the block's pairs
 * are scored. oneDNN's GEMM runs single-threaded inside the parallel
 * region, and tall (query-row) products are the shape it runs fastest.
 * With one thread's worth of queries no parallel region is opened: inside
 * a one-thread (inactive) region oneDNN would start a nested team of its
 * own on every call. */
static lwfm_status score_sides(const lwfm_model *m, const side *S, const int32_t *labels,
                               const int64_t *count, int64_t way, const side *Q, float *logits,
                               lwfm__arena *arena) {
    if (m->cfg.method != LWFM_METHOD_LWFM_SPM) {
        double tp = LWFM_PROF_T0();
        lwfm_status hs = m->cfg.method == LWFM_METHOD_DN4
                             ? lwfm__dn4_score(m, S, labels, count, way, Q, logits, arena)
                         : m->cfg.method == LWFM_METHOD_MML
                             ? lwfm__mml_score(m, S, labels, count, way, Q, logits, arena)
                             : lwfm__rcn_score(m, S, labels, count, way, Q, logits, arena);
        LWFM_PROF_ADD(LWFM_PROF_HEAD, tp);
        return hs;
    }
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    const int64_t ldt = S->n * P;
    int threads = omp_get_max_threads();
    if (threads > Q->n) threads = (int)Q->n;

    /* queries per block: a thread's correlation blocks stay near L2-sized */
    size_t per_query = (size_t)ldt * P * L;
    int64_t block = (int64_t)(RT_BLOCK_FLOATS / per_query);
    int64_t share = (Q->n + threads - 1) / threads;
    if (block < 1) block = 1;
    if (block > share) block = share;
    score_job job = {.m = m,
                     .S = S,
                     .Q = Q,
                     .labels = labels,
                     .count = count,
                     .way = way,
                     .logits = logits,
                     .block = block,
                     .rt_floats = (size_t)block * P * (size_t)ldt};
    job.sd = scratch_bytes(way, C, L, P, S->n, job.rt_floats);
    job.scratch = lwfm__arena_get(arena, LWFM_SLOT_PAIRS, job.sd * (size_t)threads);
    if (!job.scratch)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring %lld queries",
                           (long long)Q->n);
    int failed = 0;
    double tp = LWFM_PROF_T0();
    if (threads == 1) {
        failed = score_range(&job, 0, 1);
    } else {
#pragma omp parallel num_threads(threads)
        if (score_range(&job, omp_get_thread_num(), omp_get_num_threads())) {
#pragma omp atomic write
            failed = 1;
        }
    }
    LWFM_PROF_ADD(LWFM_PROF_PAIRS, tp);
    if (failed) return lwfm__error(LWFM_ERR_BACKEND, "oneDNN: sgemm (layer correlations) failed");
    return LWFM_OK;
}

/* ------------------------------------------------------------------------ */
/* Argument checks                                                          */

/* Labels: 0..way-1, every class present. Fills count (way entries). */
static lwfm_status check_labels(const int32_t *labels, int64_t n, int64_t way, int64_t *count) {
    if (!labels) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support_labels is NULL");
    if (way < 2)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "way must be in 2..%d, got %lld",
                           LWFM_LIMIT_WAY, (long long)way);
    if (way > LWFM_LIMIT_WAY)
        return lwfm__error(LWFM_ERR_LIMIT, "way = %lld exceeds LWFM_LIMIT_WAY = %d", (long long)way,
                           LWFM_LIMIT_WAY);
    if (n > LWFM_LIMIT_IMAGES)
        return lwfm__error(LWFM_ERR_LIMIT, "support: %lld images exceed LWFM_LIMIT_IMAGES = %d",
                           (long long)n, LWFM_LIMIT_IMAGES);
    if (n < way)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "%lld support images cannot cover %lld classes", (long long)n,
                           (long long)way);
    memset(count, 0, sizeof(int64_t) * (size_t)way);
    for (int64_t j = 0; j < n; j++) {
        if (labels[j] < 0 || labels[j] >= way)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                               "support label %lld is %d; labels must be in 0..%lld", (long long)j,
                               (int)labels[j], (long long)(way - 1));
        count[labels[j]]++;
    }
    for (int64_t c = 0; c < way; c++) {
        if (count[c] == 0)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                               "class %lld has no support image (every class 0..%lld needs one)",
                               (long long)c, (long long)(way - 1));
        if (count[c] > LWFM_LIMIT_SHOT)
            return lwfm__error(LWFM_ERR_LIMIT,
                               "class %lld has %lld support images; shot exceeds "
                               "LWFM_LIMIT_SHOT = %d",
                               (long long)c, (long long)count[c], LWFM_LIMIT_SHOT);
    }
    return LWFM_OK;
}

/* Feature maps given by the caller: shape must be the model's (C, fs, fs). */
lwfm_status lwfm__check_features(const lwfm_model *m, const char *what, const float *f, int64_t n,
                                 int64_t C, int64_t fh, int64_t fw) {
    if (!f) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "%s is NULL", what);
    if (n <= 0)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "%s: count must be > 0, got %lld", what,
                           (long long)n);
    if (n > LWFM_LIMIT_IMAGES)
        return lwfm__error(LWFM_ERR_LIMIT, "%s: %lld feature maps exceed LWFM_LIMIT_IMAGES = %d",
                           what, (long long)n, LWFM_LIMIT_IMAGES);
    if (m->cfg.feature_size == 0 && fh >= 1 && fw >= 1 &&
        (fh > LWFM_LIMIT_POSITIONS || fw > LWFM_LIMIT_POSITIONS || fh * fw > LWFM_LIMIT_POSITIONS))
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%s: feature maps of %lld x %lld positions exceed "
                           "LWFM_LIMIT_POSITIONS = %d",
                           what, (long long)fh, (long long)fw, LWFM_LIMIT_POSITIONS);
    if (m->cfg.feature_size == 0) { /* native-size taps: any spatial size */
        if (C != m->layers.C || fh < 1 || fw < 1)
            return lwfm__error(LWFM_ERR_SHAPE,
                               "%s: model features have %d channels and a native size, got "
                               "(%lld, %lld, %lld)",
                               what, m->layers.C, (long long)C, (long long)fh, (long long)fw);
    } else if (C != m->layers.C || fh != m->cfg.feature_size || fw < 1 ||
               fw > LWFM_LIMIT_POSITIONS || fh * fw != m->layers.P)
        return lwfm__error(LWFM_ERR_SHAPE,
                           "%s: model features are (%d, %d, %d), got (%lld, %lld, %lld)", what,
                           m->layers.C, m->cfg.feature_size, m->cfg.feature_size, (long long)C,
                           (long long)fh, (long long)fw);
    size_t cells;
    int64_t dims[2] = {n, C * fh * fw};
    if (lwfm__numel(dims, 2, &cells) || cells > ((size_t)1 << 36))
        return lwfm__error(LWFM_ERR_LIMIT, "%s: %lld feature maps is too many", what, (long long)n);
    if (!lwfm__all_finite(f, cells))
        return lwfm__error(LWFM_ERR_NONFINITE, "%s contain NaN or infinite values", what);
    return LWFM_OK;
}

static lwfm_status check_logits(const float *logits, int64_t n_query, int64_t way,
                                size_t capacity) {
    if (!logits) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "logits is NULL");
    uint64_t need;
    if (__builtin_mul_overflow((uint64_t)n_query, (uint64_t)way, &need) || need > capacity)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "logits buffer holds %zu floats, %lld x %lld needed", capacity,
                           (long long)n_query, (long long)way);
    return LWFM_OK;
}

/* The feature map of validated images must stay within LWFM_LIMIT_POSITIONS
 * to be scored (native-size taps grow with the image). */
static lwfm_status check_positions(const char *what, int64_t fh, int64_t fw) {
    if (fh * fw > LWFM_LIMIT_POSITIONS)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "%s: feature maps of %lld x %lld positions exceed "
                           "LWFM_LIMIT_POSITIONS = %d; use smaller images",
                           what, (long long)fh, (long long)fw, LWFM_LIMIT_POSITIONS);
    return LWFM_OK;
}

/* Backbone + per-image preparation of n images already validated with
 * lwfm__check_images (into the arena's slots when one is given, else into
 * buffers the side owns). */
static lwfm_status images_to_side(const lwfm_model *m, const char *what, const float *images,
                                  int64_t n, int64_t h, int64_t w, side *out, lwfm__arena *arena) {
    int64_t C, fh, fw;
    lwfm_status st = lwfm__net_out_shape(m->net, h, w, &C, &fh, &fw);
    if (st) return st;
    size_t bytes = (size_t)n * C * fh * fw * sizeof(float);
    float *feats = arena ? lwfm__arena_get(arena, LWFM_SLOT_FEATS, bytes) : lwfm__alloc(bytes);
    if (!feats) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory for %s features", what);
    double tp = LWFM_PROF_T0();
    st = lwfm__model_forward(m, images, n, h, w, feats);
    LWFM_PROF_ADD(LWFM_PROF_BACKBONE, tp);
    /* finite pixels of extreme magnitude can overflow in the backbone */
    if (!st && !lwfm__all_finite(feats, (size_t)n * C * fh * fw))
        st = lwfm__error(LWFM_ERR_NONFINITE,
                         "%s: the backbone's features overflowed to NaN or infinity (pixel "
                         "values of extreme magnitude; are the images normalised?)",
                         what);
    if (!st) st = lwfm__side_prepare(m, feats, n, fh * fw, out, arena);
    if (!arena) lwfm__free(feats);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Prepared support sets                                                    */

/* A support set with validated labels (no reference on the model yet). */
static lwfm_status support_begin(lwfm_model *m, const int32_t *labels, int64_t n, int64_t way,
                                 lwfm_support **out) {
    if (n <= 0)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support: count must be > 0, got %lld",
                           (long long)n);
    lwfm_status st;
    int64_t *count =
        malloc(sizeof(int64_t) * (size_t)(way >= 2 && way <= LWFM_LIMIT_WAY ? way : 1));
    if (!count) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    if ((st = check_labels(labels, n, way, count))) {
        free(count);
        return st;
    }
    lwfm_support *s = calloc(1, sizeof *s);
    if (!s || !(s->labels = malloc(sizeof(int32_t) * (size_t)n))) {
        free(s);
        free(count);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(s->labels, labels, sizeof(int32_t) * (size_t)n);
    s->count = count;
    s->way = way;
    s->model = m;
    *out = s;
    return LWFM_OK;
}

/* Images whose vectors one image-to-class top-k list draws from: those of
 * the smallest class, or one when unequal classes are scored per image. */
static int64_t i2c_images(const lwfm_support *s) {
    return lwfm__i2c_per_image(s->count, s->way) ? 1 : lwfm__fewest_in_class(s->count, s->way);
}

/* Method-specific limits that depend on the support set. */
static lwfm_status check_support_size(const lwfm_model *m, const lwfm_support *s) {
    if (m->cfg.method == LWFM_METHOD_DN4) {
        int64_t most = i2c_images(s) * s->s.P;
        if (m->cfg.neighbor_k > most)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                               "DN4 neighbor_k = %d exceeds the %lld local descriptors of the "
                               "smallest class (of one image when the classes' image counts "
                               "differ); give more or larger support images",
                               m->cfg.neighbor_k, (long long)most);
    }
    if (m->cfg.method == LWFM_METHOD_MML) {
        int64_t fewest = i2c_images(s);
        if (s->s.P < 2)
            return lwfm__error(LWFM_ERR_SHAPE,
                               "MML needs feature maps of at least 2 positions (Gaussians of the "
                               "descriptors); use larger images");
        if (m->cfg.neighbor_k > fewest * s->s.P || m->cfg.neighbor_k > fewest * m->layers.C)
            return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                               "MML neighbor_k = %d exceeds the descriptors or parts of the "
                               "smallest class",
                               m->cfg.neighbor_k);
    }
    return LWFM_OK;
}

LWFM_API void lwfm_support_destroy(lwfm_support *support) {
    if (!support) return;
    lwfm__side_free(&support->s);
    free(support->labels);
    free(support->count);
    if (support->model) lwfm__model_release(support->model);
    free(support);
}

static lwfm_status support_finish(lwfm_support *s, lwfm_status st, lwfm_support **out) {
    if (st) {
        s->model = NULL; /* no reference taken yet */
        lwfm_support_destroy(s);
        return st;
    }
    lwfm__model_retain(s->model);
    *out = s;
    return LWFM_OK;
}

LWFM_API lwfm_status lwfm_support_prepare(lwfm_support **out, lwfm_model *model,
                                          const float *support, int64_t n_support,
                                          const int32_t *support_labels, int64_t channels,
                                          int64_t height, int64_t width, int64_t way) {
    LWFM_PROF_SCOPE("lwfm_support_prepare");
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    lwfm_status st;
    lwfm_support *s;
    if ((st = support_begin(model, support_labels, n_support, way, &s))) return st;
    int64_t C, fh, fw;
    st = lwfm__check_images(model, "support images", support, n_support, channels, height, width,
                            &C, &fh, &fw);
    if (!st) st = check_positions("support images", fh, fw);
    if (!st)
        st =
            images_to_side(model, "support images", support, n_support, height, width, &s->s, NULL);
    if (!st) st = check_support_size(model, s);
    return support_finish(s, st, out);
}

LWFM_API lwfm_status lwfm_support_prepare_features(lwfm_support **out, lwfm_model *model,
                                                   const float *support_features, int64_t n_support,
                                                   const int32_t *support_labels, int64_t channels,
                                                   int64_t fh, int64_t fw, int64_t way) {
    LWFM_PROF_SCOPE("lwfm_support_prepare_features");
    lwfm__error_clear();
    if (!out || !model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "out or model is NULL");
    lwfm_status st;
    if ((st = lwfm__check_features(model, "support features", support_features, n_support, channels,
                                   fh, fw)))
        return st;
    lwfm_support *s;
    if ((st = support_begin(model, support_labels, n_support, way, &s))) return st;
    st = lwfm__side_prepare(model, support_features, n_support, fh * fw, &s->s, NULL);
    if (!st) st = check_support_size(model, s);
    return support_finish(s, st, out);
}

LWFM_API int64_t lwfm_support_way(const lwfm_support *support) {
    return support ? support->way : 0;
}

LWFM_API int64_t lwfm_support_count(const lwfm_support *support) {
    return support ? support->s.n : 0;
}

/* Validated queries (images, or feature maps when `features`) against a prepared
 * support set. All per-call buffers come from a reused arena; the logits are
 * computed there and copied out only on success. */
static lwfm_status support_score_once(const lwfm_support *sp, const float *query, int features,
                                      int64_t n_query, int64_t channels, int64_t h, int64_t w,
                                      float *logits) {
    lwfm__arena *arena = lwfm__model_arena_take(sp->model);
    if (!arena) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    side Q;
    size_t n = (size_t)n_query * (size_t)sp->way;
    lwfm_status st =
        features ? lwfm__side_prepare(sp->model, query, n_query, h * w, &Q, arena)
                 : images_to_side(sp->model, "query images", query, n_query, h, w, &Q, arena);
    if (!st) {
        float *tmp = lwfm__arena_get(arena, LWFM_SLOT_LOGITS, n * sizeof(float));
        st = tmp ? score_sides(sp->model, &sp->s, sp->labels, sp->count, sp->way, &Q, tmp, arena)
                 : lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
        /* inputs of extreme magnitude can overflow inside the metric */
        if (!st && !lwfm__all_finite(tmp, n))
            st = lwfm__error(LWFM_ERR_NONFINITE,
                             "scores overflowed to NaN or infinity (feature values of extreme "
                             "magnitude)");
        if (!st) memcpy(logits, tmp, n * sizeof(float));
    }
    lwfm__model_arena_give(sp->model, arena);
    return st;
}

/* RCN with batch-statistics BatchNorm (peers.md 4.7): the backbone sees the
 * queries in batches of cfg.query_batch, each its own BatchNorm batch (the
 * meta-learner batches the same way inside lwfm__rcn_score). The logits
 * are gathered in a buffer and copied out only when every batch succeeded. */
static lwfm_status support_score(const lwfm_support *sp, const float *query, int features,
                                 int64_t n_query, int64_t channels, int64_t h, int64_t w,
                                 float *logits) {
    const int64_t qb = sp->model->cfg.query_batch;
    if (features || !sp->model->cfg.bn_batch || n_query <= qb)
        return support_score_once(sp, query, features, n_query, channels, h, w, logits);
    const size_t per_image = (size_t)channels * (size_t)h * (size_t)w;
    float *all = malloc((size_t)n_query * (size_t)sp->way * sizeof(float));
    if (!all) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    lwfm_status st = LWFM_OK;
    for (int64_t q0 = 0; q0 < n_query && !st; q0 += qb) {
        const int64_t nq = n_query - q0 < qb ? n_query - q0 : qb;
        st = support_score_once(sp, query + (size_t)q0 * per_image, 0, nq, channels, h, w,
                                all + (size_t)q0 * (size_t)sp->way);
    }
    if (!st) memcpy(logits, all, (size_t)n_query * (size_t)sp->way * sizeof(float));
    free(all);
    return st;
}

LWFM_API lwfm_status lwfm_support_score(const lwfm_support *support, const float *query,
                                        int64_t n_query, int64_t channels, int64_t height,
                                        int64_t width, float *logits, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_support_score");
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    int64_t C, fh, fw;
    lwfm_status st = check_logits(logits, n_query > 0 ? n_query : 0, support->way, capacity);
    if (!st)
        st = lwfm__check_images(support->model, "query images", query, n_query, channels, height,
                                width, &C, &fh, &fw);
    if (!st) st = check_positions("query images", fh, fw);
    if (st) return st;
    return support_score(support, query, 0, n_query, channels, height, width, logits);
}

LWFM_API lwfm_status lwfm_support_score_features(const lwfm_support *support,
                                                 const float *query_features, int64_t n_query,
                                                 int64_t channels, int64_t fh, int64_t fw,
                                                 float *logits, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_support_score_features");
    lwfm__error_clear();
    if (!support) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "support is NULL");
    lwfm_status st = lwfm__check_features(support->model, "query features", query_features, n_query,
                                          channels, fh, fw);
    if (!st) st = check_logits(logits, n_query, support->way, capacity);
    if (st) return st;
    return support_score(support, query_features, 1, n_query, channels, fh, fw, logits);
}

/* ------------------------------------------------------------------------ */
/* One-shot episodes                                                        */

LWFM_API lwfm_status lwfm_episode_score(const lwfm_model *model, const float *support,
                                        int64_t n_support, const int32_t *support_labels,
                                        const float *query, int64_t n_query, int64_t channels,
                                        int64_t height, int64_t width, int64_t way, float *logits,
                                        size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_episode_score");
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    lwfm_status st;
    int64_t C, fh, fw;
    /* Check everything cheap before any backbone work. */
    if ((st = check_logits(logits, n_query > 0 ? n_query : 0, way > 0 ? way : 0, capacity)) ||
        (st = lwfm__check_images(model, "query images", query, n_query, channels, height, width, &C,
                                 &fh, &fw)) ||
        (st = check_positions("query images", fh, fw)))
        return st;
    lwfm_support *s = NULL;
    if ((st = lwfm_support_prepare(&s, (lwfm_model *)model, support, n_support, support_labels,
                                   channels, height, width, way)))
        return st;
    /* the queries were validated above: score them without checking again */
    st = support_score(s, query, 0, n_query, channels, height, width, logits);
    lwfm_support_destroy(s);
    return st;
}

LWFM_API lwfm_status lwfm_episode_score_features(const lwfm_model *model,
                                                 const float *support_features, int64_t n_support,
                                                 const int32_t *support_labels,
                                                 const float *query_features, int64_t n_query,
                                                 int64_t channels, int64_t fh, int64_t fw,
                                                 int64_t way, float *logits, size_t capacity) {
    LWFM_PROF_SCOPE("lwfm_episode_score_features");
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "model is NULL");
    lwfm_status st;
    if ((st = lwfm__check_features(model, "query features", query_features, n_query, channels, fh,
                                   fw)) ||
        (st = check_logits(logits, n_query, way > 0 ? way : 0, capacity)))
        return st;
    lwfm_support *s = NULL;
    if ((st = lwfm_support_prepare_features(&s, (lwfm_model *)model, support_features, n_support,
                                            support_labels, channels, fh, fw, way)))
        return st;
    /* the queries were validated above: score them without checking again */
    st = support_score(s, query_features, 1, n_query, channels, fh, fw, logits);
    lwfm_support_destroy(s);
    return st;
}
