/* LWFM-SPM (spec section 3): the layer-wise embedding fuser (LWE) and the
 * semantic-pixel matcher (SPM). Per image, once: centring, unit vectors and
 * (with SPM) the matcher MLP g_l. Scoring: each thread takes a contiguous
 * range of queries: one GEMM per layer and block of queries gives their
 * correlations with every support position, then the per-pair steps
 * (attention, vectorised across the supports; assignment; matched cosines)
 * follow while the block is in cache. The kernels are lib/lwe and lib/spm;
 * the per-pair views are lwfm_spm_pair.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/omp_compat.h"
#include "core/profile.h"
#include "core/vec.h"
#include "methods/lwfm_spm.h"
#include "spm/assign.h"

#define COS_EPS 1e-8
/* A thread's correlation blocks (all layers) aim at this many floats. */
#define RT_BLOCK_FLOATS ((size_t)64 << 10)

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
LWFM_MULTIARCH static void score_query(const lwfm_model *m, const spm_prep *S,
                                       const int32_t *labels, const int64_t *count, int64_t way,
                                       const spm_prep *Q, int64_t q, int64_t qi, float *const *RT,
                                       pair_scratch *ps, float *logits) {
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

/* What the threads of spm_score share. */
typedef struct score_job {
    const lwfm_model *m;
    const spm_prep *S, *Q;
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
    const spm_prep *S = job->S, *Q = job->Q;
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
static lwfm_status spm_score(const lwfm_model *m, const lwfm__prep *Sp, const int32_t *labels,
                             const int64_t *count, int64_t way, const lwfm__prep *Qp, float *logits,
                             lwfm__arena *arena) {
    const spm_prep *S = (const spm_prep *)Sp, *Q = (const spm_prep *)Qp;
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
/* Weights, configuration, per-image work                                   */

static lwfm_status spm_load(const lwfm_model *m, const lwfm__archive *ar, void **weights) {
    lwfm__matcher *mt = calloc(1, sizeof *mt);
    if (!mt) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory");
    *weights = mt; /* spm_free releases what a failed load left */
    if (!lwfm__spm_on(m)) return LWFM_OK;
    if (m->cfg.top_k > m->layers.P)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "config top_k = %d exceeds the %d positions of a "
                           "%dx%d feature map",
                           m->cfg.top_k, m->layers.P, m->cfg.feature_size, m->cfg.feature_size);
    return lwfm__matcher_load(mt, ar, &m->layers, m->cfg.learnable_matcher);
}

static void spm_free(void *weights) {
    if (!weights) return;
    lwfm__matcher_free(weights);
    free(weights);
}

static int spm_config_key(const lwfm__config *c, const char *key) {
    static const char *const keys[] = {"temperature", "temperature_attn", "matcher_prob",
                                       "learnable_matcher", "top_k"};
    (void)c;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strcmp(key, keys[i])) return 1;
    return 0;
}

/* Per image: centred features X and unit vectors U (P x C each); with SPM
 * also g_l(X) (P x C) and its norms (P x L). The matcher's scratch is the
 * extra buffer. */
static void spm_layout(const lwfm_model *m, int64_t n, int64_t P, lwfm__prep_layout *out) {
    const lwfm__layers *ly = &m->layers;
    const size_t cells = (size_t)P * (size_t)ly->C;
    const int spm = lwfm__spm_on(m);
    *out = (lwfm__prep_layout){
        .struct_bytes = sizeof(spm_prep),
        .n_image_buf = spm ? 4 : 2,
        .image_bytes = {cells * sizeof(float), cells * sizeof(float), cells * sizeof(float),
                        (size_t)P * (size_t)ly->n * sizeof(float)},
        .type = {'f', 'f', 'f', 'f'},
        .scratch_bytes =
            spm ? lwfm__matcher_tmp_floats(lwfm__spm_matcher(m), ly, n * P) * sizeof(float) : 0};
}

static void spm_bind(lwfm__prep *prep) {
    spm_prep *p = (spm_prep *)prep;
    p->n = p->mem.n, p->P = p->mem.P;
    p->X = p->mem.buf[0], p->U = p->mem.buf[1];
    p->G = p->mem.layout.n_image_buf > 2 ? p->mem.buf[2] : NULL;
    p->gn = p->mem.layout.n_image_buf > 3 ? p->mem.buf[3] : NULL;
}

/* Centring and unit vectors (LWE steps 1-2), then with SPM g_l(X) and its
 * norms; the matcher's scratch (buffer 4) is given back at once when owned. */
lwfm_status lwfm__lwfm_spm_prepare(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                                   lwfm__arena *arena, lwfm__prep **out) {
    const lwfm__layers *ly = &m->layers;
    const int64_t C = ly->C;
    const int spm = lwfm__spm_on(m);
    spm_prep *p = (spm_prep *)lwfm__prep_make(m, n, P, arena);
    if (!p) return LWFM_ERR_OUT_OF_MEMORY;
    double tp = LWFM_PROF_T0();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        lwfm__lwe_prepare_image(ly, feats + i * C * P, p->X + i * P * C, p->U + i * P * C);
    LWFM_PROF_ADD(LWFM_PROF_LWE, tp);
    lwfm_status st = LWFM_OK;
    if (spm) {
        tp = LWFM_PROF_T0();
        st = lwfm__matcher_apply(lwfm__spm_matcher(m), ly, n * P, p->X, p->G, p->gn, p->mem.buf[4]);
        LWFM_PROF_ADD(LWFM_PROF_MATCHER, tp);
        if (p->mem.owned) {
            lwfm__free(p->mem.buf[4]);
            p->mem.buf[4] = NULL;
        }
    }
    if (st)
        lwfm__prep_release((lwfm__prep *)p);
    else
        *out = (lwfm__prep *)p;
    return st;
}

static lwfm_status spm_pair_ready(const lwfm_model *m, lwfm__pair_kind kind) {
    if (kind == LWFM_PAIR_SPM && !lwfm__spm_on(m))
        return lwfm__error(LWFM_ERR_WRONG_KIND,
                           "this model has SPM switched off (matcher_prob = 0): no matcher");
    return LWFM_OK;
}

const lwfm__method lwfm__method_lwfm_spm = {
    .id = LWFM_METHOD_LWFM_SPM,
    .name = "lwfm-spm",
    .weight_prefix = "feature_extractor.",
    .load = spm_load,
    .free = spm_free,
    .config_key = spm_config_key,
    .layout = spm_layout,
    .bind = spm_bind,
    .prepare = lwfm__lwfm_spm_prepare,
    .score = spm_score,
    .pair_ready = spm_pair_ready,
    .lwe_pair = lwfm__lwfm_spm_lwe_pair,
    .spm_pair = lwfm__lwfm_spm_spm_pair,
};
