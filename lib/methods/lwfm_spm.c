/* LWFM-SPM (spec section 3): the layer-wise embedding fuser (LWE) and the
 * semantic-pixel matcher (SPM). Per image, once: centring, unit vectors and
 * (with SPM) the matcher MLP g_l. Scoring: each thread takes a contiguous
 * range of queries: one GEMM per layer, block of queries and chunk of
 * supports gives their correlations, then the per-pair steps (attention,
 * vectorised across the supports; assignment; matched cosines) follow while
 * the chunk is in cache, into per-class sums that carry over chunk to chunk. The kernels are lib/lwe and lib/spm;
 * the per-pair views are lwfm_spm_pair.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/omp_compat.h"
#include "core/panel_gemm.h"
#include "core/profile.h"
#include "core/vec.h"
#include "methods/lwfm_spm.h"
#include "spm/assign.h"

#define COS_EPS 1e-8
/* A thread's correlation blocks (all layers) aim at this many floats. */
#define RT_BLOCK_FLOATS ((size_t)64 << 10)
/* Supports per chunk: a multiple of the attention kernel's 16 lanes. */
#define CHUNK_ALIGN 16

/* How a call is cut: queries per block (one GEMM per layer and chunk) and
 * supports per chunk. Scratch depends on these, never on the whole gallery:
 * a chunk's correlations (L x P x chunk*P, both layouts) stay near L2-sized,
 * and the per-class accumulators of a block's queries are block x slots x
 * (C + L P) floats (see class_slots), with block > 1 only while the gallery
 * is small. */
typedef struct spm_cut {
    int64_t block, chunk;
} spm_cut;

static spm_cut spm_cut_for(int64_t n_q, int64_t n_s, int P, int L, int threads) {
    const size_t per_support = (size_t)P * P * L; /* correlations of one (query, support) */
    int64_t chunk = (int64_t)(RT_BLOCK_FLOATS / per_support) / CHUNK_ALIGN * CHUNK_ALIGN;
    if (chunk < CHUNK_ALIGN) chunk = CHUNK_ALIGN;
    if (chunk > n_s) chunk = n_s;
    int64_t block = (int64_t)(RT_BLOCK_FLOATS / (per_support * (size_t)chunk));
    int64_t share = (n_q + threads - 1) / threads;
    if (block < 1) block = 1;
    if (block > share) block = share;
    return (spm_cut){block, chunk};
}

/* Accumulator slots. A class's sums are needed from its first support
 * (in index order) to its last, last[c], where its logit is finished and
 * its slot given to the next class that starts: slot[c] is class c's, and
 * the count of slots is the most classes open at once: 1 for supports
 * grouped by class, way at worst (interleaved labels), never more than
 * before. The map depends only on the labels, so every query of the call
 * shares it. free_slots: way entries of scratch. Returns the slot count. */
static int64_t class_slots(const int32_t *labels, int64_t n, int64_t way, int64_t *last,
                           int32_t *slot, int32_t *free_slots) {
    int64_t slots = 0, n_free = 0;
    for (int64_t c = 0; c < way; c++) slot[c] = -1;
    for (int64_t j = 0; j < n; j++) last[labels[j]] = j;
    for (int64_t j = 0; j < n; j++) {
        const int32_t c = labels[j];
        if (slot[c] < 0) slot[c] = n_free ? free_slots[--n_free] : (int32_t)slots++;
        if (last[c] == j) free_slots[n_free++] = slot[c];
    }
    return slots;
}

/* Per-thread scratch of the pair loop (floats; the solver's part doubles).
 * N = chunk x P columns. */
typedef struct pair_scratch {
    float *rt;    /* L blocks of block*P rows x N: correlations of a query block with a chunk */
    float *rs;    /* L x P x N: one query's correlations, support position-major */
    float *ws;    /* L x N: support weights of one query against the chunk's supports */
    float *wq;    /* L x N: query weights likewise */
    float *attn;  /* LWFM_LWE_WORK_FLOATS(P, chunk) */
    float *sacc;  /* block x slots x C: per query and open class, sum over the class's
                     supports of pooled attended support maps */
    float *wqacc; /* block x slots x L x P: per query and open class, sum over the
                     class's supports of the query weights */
    float *qv;    /* C */
    float *panel; /* C x 16: 16 support positions of one layer, packed for the GEMM */
    double *macc; /* block x slots: per query and open class, sum of SPM scores */
    double *spm;
    int *sigma;
} pair_scratch;

/* Offsets (floats) of a pair_scratch slice's float arrays, in order; the
 * last entry is the total (see scratch_bind). */
static void scratch_layout(int64_t slots, int C, int L, int P, spm_cut cut, size_t off[10]) {
    const size_t N = (size_t)cut.chunk * P, B = (size_t)cut.block;
    const size_t sizes[9] = {B * P * N * L,
                             (size_t)L * P * N,
                             (size_t)L * N,
                             (size_t)L * N,
                             LWFM_LWE_WORK_FLOATS(P, cut.chunk),
                             B * slots * C,
                             B * slots * L * P,
                             (size_t)C,
                             lwfm__panels_floats(C, LWFM_PANEL_COLS)};
    off[0] = 0;
    for (int i = 0; i < 9; i++) off[i + 1] = off[i] + (sizes[i] + 15) / 16 * 16;
}

static size_t scratch_bytes(int64_t slots, int C, int L, int P, spm_cut cut) {
    size_t off[10];
    scratch_layout(slots, C, L, P, cut, off);
    size_t doubles = (size_t)cut.block * slots + lwfm__spm_work_doubles(P);
    size_t bytes = off[9] * sizeof(float) + doubles * sizeof(double) + (size_t)P * sizeof(int);
    return (bytes + 63) / 64 * 64; /* each thread's slice starts 64-byte aligned */
}

static void scratch_bind(pair_scratch *ps, char *base, int64_t slots, int C, int L, int P,
                         spm_cut cut) {
    size_t off[10];
    scratch_layout(slots, C, L, P, cut, off);
    float *f = (float *)base;
    float **dst[9] = {&ps->rt,   &ps->rs,   &ps->ws, &ps->wq,   &ps->attn,
                      &ps->sacc, &ps->wqacc, &ps->qv, &ps->panel};
    for (int i = 0; i < 9; i++) *dst[i] = f + off[i];
    double *d = (double *)(f + off[9]);
    ps->macc = d;
    ps->spm = d + (size_t)cut.block * slots;
    ps->sigma = (int *)(ps->spm + lwfm__spm_work_doubles(P));
}

/* What the threads of spm_score share. */
typedef struct score_job {
    const lwfm_model *m;
    const spm_prep *S, *Q;
    const int32_t *labels;
    const int64_t *count;
    int64_t way;
    const int64_t *last; /* class_slots: each class's last support */
    const int32_t *slot; /* class_slots: each class's accumulator slot */
    int64_t slots;
    float *logits;
    char *scratch; /* one slice of sd bytes per thread */
    size_t sd;     /* bytes per thread */
    spm_cut cut;
} score_job;

/* Logit (q, c) from slot s of row qi's accumulators, once class c's last
 * support is in (steps 6, 8); the slot is then zeroed for the next class. */
LWFM_MULTIARCH static void finish_class(const lwfm_model *m, const score_job *job,
                                        const spm_prep *Q, int64_t q, int64_t qi, int32_t c,
                                        pair_scratch *ps) {
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    const size_t s = (size_t)qi * job->slots + job->slot[c];
    const float *Xq = Q->X + q * P * C;
    /* base = cos(pool(mean_j S'), pool(mean_j Q')); the common factor
     * 1 / (P n_c) cancels except against the cosine's 1e-8 floor. */
    float *sacc = ps->sacc + s * C, *qv = ps->qv;
    float *wqa = ps->wqacc + s * L * P;
    for (int l = 0; l < L; l++)
        lwfm__weighted_rows(Xq + ly->off[l], C, wqa + (size_t)l * P, P, ly->dim[l],
                            qv + ly->off[l], 0);
    double dot = 0.0, ns = 0.0, nq = 0.0;
#pragma omp simd reduction(+ : dot, ns, nq)
    for (int k = 0; k < C; k++) {
        dot += (double)sacc[k] * qv[k];
        ns += (double)sacc[k] * sacc[k];
        nq += (double)qv[k] * qv[k];
    }
    const double scale = 1.0 / ((double)P * job->count[c]);
    double den = sqrt(ns) * sqrt(nq) * scale * scale;
    double base = dot * scale * scale / (den > COS_EPS ? den : COS_EPS);
    double match = lwfm__spm_on(m) ? ps->macc[s] / (double)job->count[c] : 0.0;
    job->logits[q * job->way + c] = (float)((base + match) / m->cfg.temperature);
    memset(sacc, 0, sizeof(float) * C);
    memset(wqa, 0, sizeof(float) * L * P);
    ps->macc[s] = 0.0;
}

/* Query q (row qi of the thread's block) against supports j0 .. j0+ns-1:
 * attention, pooled attended support maps and query weights and the SPM
 * scores, added to the query's per-class accumulators. RT[l] holds layer
 * l's correlations of the block with the chunk: row qi*P + b (query
 * position), column (j - j0)*P + a (support position), leading dimension
 * ldt. Supports are visited in index order, as an unchunked pass would; a
 * class whose last support this is gets its logit (finish_class). */
LWFM_MULTIARCH static void score_chunk(const score_job *job, const spm_prep *Q, int64_t q,
                                       int64_t qi, int64_t j0, int64_t ns, float *const *RT,
                                       int64_t ldt, pair_scratch *ps) {
    const lwfm_model *m = job->m;
    const spm_prep *S = job->S;
    const int32_t *labels = job->labels;
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    const int64_t N = ns * P; /* this chunk's columns; ws, wq, rs are packed to N */
    const lwfm__config *cfg = &m->cfg;
    const int spm = lwfm__spm_on(m);
    const float t_attn = (float)cfg->temperature_attn;
    float *sacc0 = ps->sacc + (size_t)qi * job->slots * C;
    float *wqacc0 = ps->wqacc + (size_t)qi * job->slots * L * P;
    double *macc = ps->macc + (size_t)qi * job->slots;

    /* attention of this query against the chunk's supports, a layer at a time */
    for (int l = 0; l < L; l++) {
        const float *rq = RT[l] + qi * P * ldt;
        float *rs = ps->rs + (size_t)l * P * N;
        for (int64_t j = 0; j < ns; j++)
            for (int b = 0; b < P; b++)
                for (int a = 0; a < P; a++) rs[a * N + j * P + b] = rq[b * ldt + j * P + a];
        lwfm__lwe_attention_blocks(rq, ldt, rs, N, P, (int)ns, t_attn, ps->ws + l * N,
                                   ps->wq + l * N, ps->attn);
    }

    for (int64_t jj = 0; jj < ns; jj++) {
        const int64_t j = j0 + jj;
        const int32_t c = labels[j], sl = job->slot[c];
        const float *Xs = S->X + j * P * C;
        float *sacc = sacc0 + (size_t)sl * C;
        double best = -INFINITY;
        for (int l = 0; l < L; l++) {
            const float *ws = ps->ws + l * N + jj * P, *wq = ps->wq + l * N + jj * P;
            const int off = ly->off[l], d = ly->dim[l];
            /* attended support map, pooled (sum over positions; / P later) */
            lwfm__weighted_rows(Xs + off, C, ws, P, d, sacc + off, 1);
            float *wqa = wqacc0 + ((size_t)sl * L + l) * P;
            for (int b = 0; b < P; b++) wqa[b] += wq[b];
            if (spm) {
                const int64_t gs = j * P * C + off, gq = q * P * C + off;
                double tp = LWFM_PROF_T0();
                double sc =
                    lwfm__spm_pair_score(ps->rs + (size_t)l * P * N + jj * P, N, P, S->G + gs,
                                         S->gn + j * P * L + l, Q->G + gq, Q->gn + q * P * L + l, C,
                                         L, d, cfg->top_k, ps->sigma, NULL, ps->spm);
                LWFM_PROF_ADD(LWFM_PROF_SOLVER_THREAD, tp);
                sc *= cfg->matcher_prob;
                if (sc > best) best = sc;
            }
        }
        if (spm) macc[sl] += best;
        if (job->last[c] == j) finish_class(m, job, Q, q, qi, c, ps);
    }
}

/* rt (rows x n, ldt) = the correlations of `rows` query position vectors
 * (uq, row stride C) with n support position vectors (us, row stride C),
 * over d channels: the panel GEMM, 16 support positions at a time packed
 * into `panel` (d x 16 floats). Each correlation is one fixed sequence of
 * fused multiply-adds, so a query's logits do not depend on the queries
 * scored with it, the blocks or the thread count (oneDNN's sgemm rounds a
 * row differently with the call's shape). */
static void correlate(const float *uq, int64_t rows, const float *us, int64_t n, int d, int C,
                      float *rt, int64_t ldt, float *panel) {
    for (int64_t j = 0; j < n; j += LWFM_PANEL_COLS) {
        const int cols = n - j < LWFM_PANEL_COLS ? (int)(n - j) : LWFM_PANEL_COLS;
        lwfm__panels_pack(us + j * C, 1, C, d, cols, panel);
        lwfm__panel_gemm(panel, d, rows, uq, C, rt + j, ldt, cols, 0);
    }
}

/* Thread t of nt: its contiguous range of queries, in blocks; each block
 * goes through the supports a chunk at a time (one product per layer and
 * chunk), then its logits are finished. */
static void score_range(const score_job *job, int t, int nt) {
    const lwfm_model *m = job->m;
    const spm_prep *S = job->S, *Q = job->Q;
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    const int64_t slots = job->slots, first = Q->n * t / nt, last = Q->n * (t + 1) / nt;
    const int64_t ldt = job->cut.chunk * P;
    pair_scratch ps;
    float *RT[LWFM_MAX_TAPS];
    double tt = LWFM_PROF_T0();
    scratch_bind(&ps, job->scratch + job->sd * (size_t)t, slots, C, L, P, job->cut);
    for (int l = 0; l < L; l++) RT[l] = ps.rt + (size_t)l * job->cut.block * P * ldt;
    for (int64_t q0 = first; q0 < last; q0 += job->cut.block) {
        const int64_t nq = last - q0 < job->cut.block ? last - q0 : job->cut.block;
        /* finish_class zeroes a slot it is done with: a block's queries start
         * from zeroed slots after the first */
        if (q0 == first) {
            memset(ps.sacc, 0, sizeof(float) * (size_t)nq * slots * C);
            memset(ps.wqacc, 0, sizeof(float) * (size_t)nq * slots * L * P);
            memset(ps.macc, 0, sizeof(double) * (size_t)nq * slots);
        }
        for (int64_t j0 = 0; j0 < S->n; j0 += job->cut.chunk) {
            const int64_t ns = S->n - j0 < job->cut.chunk ? S->n - j0 : job->cut.chunk;
            for (int l = 0; l < L; l++)
                correlate(Q->U + q0 * P * C + ly->off[l], nq * P, S->U + j0 * P * C + ly->off[l],
                          ns * P, ly->dim[l], C, RT[l], ldt, ps.panel);
            for (int64_t qi = 0; qi < nq; qi++)
                score_chunk(job, Q, q0 + qi, qi, j0, ns, RT, ldt, &ps);
        }
    }
    LWFM_PROF_ADD(LWFM_PROF_PAIRS_THREAD, tt);
}

/* Logits (Q->n x way) of prepared queries against a prepared support set.
 * LWFM-SPM: each thread takes a contiguous range of queries and works
 * through it in blocks, and through the supports in chunks (spm_cut): one
 * GEMM per layer correlates the block's query positions (rows) with the
 * chunk's support positions, then the chunk's pairs are scored while they
 * are in cache. Logits of class c depend only on class c's supports (spec
 * steps 6-8), so per-class sums carry over from chunk to chunk and nothing
 * of size "whole gallery x positions" is ever held. Every correlation is
 * one fixed FMA sequence (correlate), so a query's logits are the same
 * whether it is scored alone or among others, on any number of threads. */
static lwfm_status spm_score(const lwfm_model *m, const lwfm__prep *Sp, const int32_t *labels,
                             const int64_t *count, int64_t way, const lwfm__prep *Qp, float *logits,
                             lwfm__arena *arena) {
    const spm_prep *S = (const spm_prep *)Sp, *Q = (const spm_prep *)Qp;
    const lwfm__layers *ly = &m->layers;
    const int C = ly->C, P = ly->P, L = ly->n;
    int threads = omp_get_max_threads();
    if (threads > Q->n) threads = (int)Q->n;
    score_job job = {.m = m,
                     .S = S,
                     .Q = Q,
                     .labels = labels,
                     .count = count,
                     .way = way,
                     .logits = logits,
                     .cut = spm_cut_for(Q->n, S->n, P, L, threads)};
    /* the class slot map: last (way int64), slot and free list (way int32 each) */
    int64_t *last = lwfm__arena_get(arena, LWFM_SLOT_LEVELS, (size_t)way * 16);
    if (!last)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring %lld queries",
                           (long long)Q->n);
    int32_t *slot = (int32_t *)(last + way);
    job.slots = class_slots(labels, S->n, way, last, slot, slot + way);
    job.last = last, job.slot = slot;
    job.sd = scratch_bytes(job.slots, C, L, P, job.cut);
    job.scratch = lwfm__arena_get(arena, LWFM_SLOT_PAIRS, job.sd * (size_t)threads);
    if (!job.scratch)
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring %lld queries",
                           (long long)Q->n);
    double tp = LWFM_PROF_T0();
    if (threads == 1) {
        score_range(&job, 0, 1);
    } else {
#pragma omp parallel num_threads(threads)
        score_range(&job, omp_get_thread_num(), omp_get_num_threads());
    }
    LWFM_PROF_ADD(LWFM_PROF_PAIRS, tp);
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
            spm ? lwfm__matcher_tmp_floats(lwfm__spm_matcher(m), ly) * sizeof(float) : 0};
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
    if (spm) {
        tp = LWFM_PROF_T0();
        lwfm__matcher_apply(lwfm__spm_matcher(m), ly, n, P, p->X, p->G, p->gn, p->mem.buf[4]);
        LWFM_PROF_ADD(LWFM_PROF_MATCHER, tp);
        if (p->mem.owned) {
            lwfm__free(p->mem.buf[4]);
            p->mem.buf[4] = NULL;
        }
    }
    *out = (lwfm__prep *)p;
    return LWFM_OK;
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
