/* MML multi-level metric (see mml.h). */
#include "heads/mml.h"

#include <math.h>
#include "core/omp_compat.h"
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "core/linalg.h"
#include "heads/dn4.h"
#include "heads/i2c.h"
#include "model.h"

#define RIDGE 0.01
#define BN_EPS 1e-5

lwfm_status lwfm__mml_load(lwfm__mml *h, const lwfm__archive *ar) {
    memset(h, 0, sizeof *h);
    const lwfm__tensor *t = lwfm__archive_find(ar, "classifier.Norm_layer.weight");
    if (!t)
        return lwfm__error(LWFM_ERR_MISSING_KEY,
                           "tensor 'classifier.Norm_layer.weight' (MML fusion layer) is missing");
    if (t->ndim != 1 || t->shape[0] % 3 || t->shape[0] < 3 ||
        t->shape[0] > 3 * LWFM_MML_MAX_SLOTS)
        return lwfm__error(LWFM_ERR_SHAPE,
                           "tensor 'classifier.Norm_layer.weight' must have shape (3n,) with "
                           "1 <= n <= %d",
                           LWFM_MML_MAX_SLOTS);
    int64_t cols = t->shape[0];
    h->slots = (int)(cols / 3);
    static const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
    double *dst[4] = {h->gamma, h->beta, h->mean, h->var};
    for (int i = 0; i < 4; i++) {
        char key[64];
        const float *v;
        snprintf(key, sizeof key, "classifier.Norm_layer.%s", names[i]);
        lwfm_status st = lwfm__archive_get_f32(ar, key, 1, &cols, &v);
        if (st) return st;
        for (int64_t j = 0; j < cols; j++) {
            dst[i][j] = v[j];
            if (!isfinite(v[j]) || (i == 3 && !(v[j] >= 0)))
                return lwfm__error(LWFM_ERR_FORMAT, "tensor '%s' has an invalid value %g", key,
                                   (double)v[j]);
        }
    }
    int64_t wshape[3] = {1, 1, 3};
    const float *w;
    lwfm_status st = lwfm__archive_get_f32(ar, "classifier.FC_layer.weight", 3, wshape, &w);
    if (st) return st;
    for (int i = 0; i < 3; i++) {
        if (!isfinite(w[i]))
            return lwfm__error(LWFM_ERR_FORMAT,
                               "tensor 'classifier.FC_layer.weight' has an invalid value");
        h->w[i] = w[i];
    }
    return LWFM_OK;
}

void lwfm__mml_prepare_image(const float *feat, int C, int64_t P, float *U, float *V, double *mu,
                             double *scatter) {
    lwfm__dn4_prepare_image(feat, C, P, U);
    for (int64_t p = 0; p < P; p++)
        for (int c = 0; c < C; c++) V[(int64_t)c * P + p] = U[p * C + c];
    for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int64_t p = 0; p < P; p++) s += feat[(int64_t)c * P + p];
        mu[c] = s / (double)P;
    }
    /* centred scatter sum_p (x_p - mu)(x_p - mu)^T, lower triangle then mirrored */
    for (int a = 0; a < C; a++) {
        const float *xa = feat + (int64_t)a * P;
        for (int b = 0; b <= a; b++) {
            const float *xb = feat + (int64_t)b * P;
            double s = 0.0;
            for (int64_t p = 0; p < P; p++) s += ((double)xa[p] - mu[a]) * ((double)xb[p] - mu[b]);
            scatter[a * C + b] = scatter[b * C + a] = s;
        }
    }
}

/* Gaussian of a class from its images' means and scatters (parallel-axis
 * combination), or of one image: mean mu (C) and covariance cov (C x C),
 * (scatter / (n - 1)) + RIDGE * I with n the number of descriptors. The
 * class's images are members[0 .. n_members-1], in index order. */
static void class_gaussian(const lwfm__mml_side *S, const int64_t *members, int64_t n_members,
                           int C, double *mu, double *cov) {
    const int64_t P = S->P;
    memset(mu, 0, sizeof(double) * C);
    memset(cov, 0, sizeof(double) * C * C);
    for (int64_t i = 0; i < n_members; i++)
        for (int c = 0; c < C; c++) mu[c] += S->mu[members[i] * C + c] / (double)n_members;
    for (int64_t i = 0; i < n_members; i++) {
        const int64_t j = members[i];
        const double *mj = S->mu + j * C, *sj = S->scat + j * C * C;
        for (int a = 0; a < C; a++)
            for (int b = 0; b < C; b++)
                cov[a * C + b] += sj[a * C + b] + (double)P * (mj[a] - mu[a]) * (mj[b] - mu[b]);
    }
    double n = (double)(n_members * P);
    for (int i = 0; i < C * C; i++) cov[i] /= n - 1.0;
    for (int a = 0; a < C; a++) cov[a * C + a] += RIDGE;
}

/* The support images of each class, in index order: class c's are
 * members[first[c] .. first[c+1]-1] (a counting sort: one pass over the
 * labels, where looking each class's images up among all images would take
 * way x images steps per call). first: way + 1 entries, next: way. */
static void class_members(const int32_t *labels, int64_t n, const int64_t *count, int64_t way,
                          int64_t *first, int64_t *next, int64_t *members) {
    first[0] = 0;
    for (int64_t c = 0; c < way; c++) next[c] = first[c], first[c + 1] = first[c] + count[c];
    for (int64_t j = 0; j < n; j++) members[next[labels[j]]++] = j;
}

/* KL(class || query) from the query's inverse covariance inv and the class
 * covariance sc (C x C), their means and log-determinants. */
static double kl_distance(int C, const double *inv, const double *sc, const double *mq,
                          const double *mc, double logdet_q, double logdet_c) {
    const size_t CC = (size_t)C * C;
    double tr = 0.0, maha = 0.0;
    for (size_t i = 0; i < CC; i++) tr += inv[i] * sc[i];
    for (int a = 0; a < C; a++) {
        double s = 0.0;
        for (int b = 0; b < C; b++) s += inv[a * C + b] * (mq[b] - mc[b]);
        maha += (mq[a] - mc[a]) * s;
    }
    return 0.5 * (tr + maha - C + logdet_q - logdet_c);
}

/* Exact 2-Wasserstein distance into *out from the query's Cholesky factor L
 * (Sq = L L^T), the class covariance sc, the squared mean distance dm2 and
 * tr Sq (trq). A, tmp: C x C scratch. Nonzero when the eigensolver failed
 * (*out is still written). */
static int w2_distance(int C, const double *L, const double *sc, double dm2, double trq,
                       double *A, double *tmp, double *out) {
    /* tr sqrt(Sq^1/2 Sc Sq^1/2) = sum sqrt(eig(L^T Sc L)) */
    for (int a = 0; a < C; a++) /* tmp = Sc L */
        for (int b = 0; b < C; b++) {
            double s = 0.0;
            for (int k = b; k < C; k++) s += sc[a * C + k] * L[k * C + b];
            tmp[a * C + b] = s;
        }
    for (int a = 0; a < C; a++) /* A = L^T tmp */
        for (int b = 0; b <= a; b++) {
            double s = 0.0;
            for (int k = a; k < C; k++) s += L[k * C + a] * tmp[k * C + b];
            A[a * C + b] = A[b * C + a] = s;
        }
    double *eig = tmp, *work = tmp + C;
    double root = 0.0, trc = 0.0;
    int bad = lwfm__sym_eigenvalues(A, C, eig, work) != 0;
    for (int a = 0; a < C; a++) root += sqrt(eig[a] > 0 ? eig[a] : 0.0);
    for (int a = 0; a < C; a++) trc += sc[a * C + a];
    double w2 = dm2 + trq + trc - 2.0 * root;
    *out = sqrt(w2 > 0 ? w2 : 0.0);
    return bad;
}

/* Distribution-level distances d[q * way + c]. */
static lwfm_status distances(const lwfm_model *m, const lwfm__mml_side *S, const int32_t *labels,
                             const int64_t *count, int64_t way, const lwfm__mml_side *Q, double *d,
                             double *buf) {
    const int C = m->layers.C;
    const size_t CC = (size_t)C * C;
    const int kind = m->cfg.distance;
    /* buf: way class Gaussians (mu, cov, logdet), per-thread work, then the
     * class member lists (int64: first, next, members) */
    double *cmu = buf, *ccov = cmu + (size_t)way * C, *clogdet = ccov + way * CC;
    double *tbase = clogdet + way;
    int64_t *first = (int64_t *)(tbase + (size_t)omp_get_max_threads() * 4 * CC);
    int64_t *next = first + way + 1, *members = next + way;
    class_members(labels, S->n, count, way, first, next, members);
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < way; c++) {
        class_gaussian(S, members + first[c], count[c], C, cmu + c * C, ccov + c * CC);
        if (kind == LWFM_MML_KL) {
            double *L = tbase + (size_t)omp_get_thread_num() * 4 * CC;
            memcpy(L, ccov + c * CC, CC * sizeof(double));
            if (lwfm__cholesky(L, C)) {
#pragma omp atomic write
                bad = 1;
            } else {
                clogdet[c] = lwfm__chol_logdet(L, C);
            }
        }
    }
    if (bad)
        return lwfm__error(LWFM_ERR_NONFINITE,
                           "MML: a class covariance is not positive definite (non-finite "
                           "features?)");
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t q = 0; q < Q->n; q++) {
        double *w = tbase + (size_t)omp_get_thread_num() * 4 * CC;
        double *cov = w, *L = w + CC, *inv = w + 2 * CC, *tmp = w + 3 * CC;
        const double *mq = Q->mu + q * C, *sq = Q->scat + q * CC;
        double n1 = (double)Q->P - 1.0, trq = 0.0, logdet_q = 0.0;
        for (size_t i = 0; i < CC; i++) cov[i] = sq[i] / n1;
        for (int a = 0; a < C; a++) cov[a * C + a] += RIDGE, trq += cov[a * C + a];
        if (kind != LWFM_MML_WASS) {
            memcpy(L, cov, CC * sizeof(double));
            if (lwfm__cholesky(L, C)) {
#pragma omp atomic write
                bad = 1;
                continue;
            }
            logdet_q = lwfm__chol_logdet(L, C);
            if (kind == LWFM_MML_KL) lwfm__chol_inverse(L, C, inv, tmp);
        }
        for (int64_t c = 0; c < way; c++) {
            const double *mc = cmu + c * C, *sc = ccov + c * CC;
            double dm2 = 0.0, out = 0.0;
            for (int a = 0; a < C; a++) dm2 += (mq[a] - mc[a]) * (mq[a] - mc[a]);
            if (kind == LWFM_MML_WASS) {
                double f2 = 0.0;
                for (size_t i = 0; i < CC; i++) f2 += (cov[i] - sc[i]) * (cov[i] - sc[i]);
                out = sqrt(dm2) / C + sqrt(f2) / ((double)C * C);
            } else if (kind == LWFM_MML_KL) {
                out = kl_distance(C, inv, sc, mq, mc, logdet_q, clogdet[c]);
            } else if (w2_distance(C, L, sc, dm2, trq, inv, tmp, &out)) {
#pragma omp atomic write
                bad = 1;
            }
            d[q * way + c] = out;
        }
    }
    if (bad)
        return lwfm__error(LWFM_ERR_NONFINITE,
                           "MML: a query covariance could not be factorised (non-finite "
                           "features?)");
    return LWFM_OK;
}

lwfm_status lwfm__mml_score(const lwfm_model *m, const lwfm__mml *h, const lwfm__mml_side *S,
                            const int32_t *labels, const int64_t *count, int64_t way,
                            const lwfm__mml_side *Q, float *logits, lwfm__arena *arena) {
    const int C = m->layers.C, k = m->cfg.neighbor_k;
    const size_t CC = (size_t)C * C, n = (size_t)Q->n * way;
    int threads = omp_get_max_threads();
    size_t dist_doubles = (size_t)way * (C + CC + 1) + (size_t)threads * 4 * CC +
                          (size_t)(2 * way + 1 + S->n); /* + class member lists (int64) */
    double *lv = lwfm__arena_get(arena, LWFM_SLOT_LEVELS, (3 * n + dist_doubles) * sizeof(double));
    if (!lv) return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory scoring MML queries");
    double *D = lv, *Pix = lv + n, *Part = lv + 2 * n, *buf = lv + 3 * n;
    lwfm_status st;
    if ((st = lwfm__i2c_topk(m->engine, Q->U, Q->n, Q->P, S->U, S->n, S->P, C, labels, count, way, k, Pix,
                             arena, LWFM_SLOT_R)) ||
        (st = lwfm__i2c_topk(m->engine, Q->V, Q->n, C, S->V, S->n, C, Q->P, labels, count, way, k, Part,
                             arena, LWFM_SLOT_R)) ||
        (st = distances(m, S, labels, count, way, Q, D, buf)))
        return st;
    /* Fusion: per-column BatchNorm (per class slot when the layer was trained for
     * this many ways, else each level's mean over its slots), then the three weights. */
    double g[3 * LWFM_MML_MAX_SLOTS], b[3 * LWFM_MML_MAX_SLOTS];
    double mu[3 * LWFM_MML_MAX_SLOTS], sd[3 * LWFM_MML_MAX_SLOTS];
    int per_slot = way == h->slots;
    for (int lvl = 0; lvl < 3; lvl++) {
        int cols = per_slot ? h->slots : 1;
        for (int j = 0; j < cols; j++) {
            double gg = 0, bb = 0, mm = 0, vv = 0;
            if (per_slot) {
                int i = lvl * h->slots + j;
                gg = h->gamma[i], bb = h->beta[i], mm = h->mean[i], vv = h->var[i];
            } else {
                for (int s = 0; s < h->slots; s++) {
                    int i = lvl * h->slots + s;
                    gg += h->gamma[i], bb += h->beta[i], mm += h->mean[i], vv += h->var[i];
                }
                gg /= h->slots, bb /= h->slots, mm /= h->slots, vv /= h->slots;
            }
            g[lvl * LWFM_MML_MAX_SLOTS + j] = gg;
            b[lvl * LWFM_MML_MAX_SLOTS + j] = bb;
            mu[lvl * LWFM_MML_MAX_SLOTS + j] = mm;
            sd[lvl * LWFM_MML_MAX_SLOTS + j] = sqrt(vv + BN_EPS);
        }
    }
    for (int64_t q = 0; q < Q->n; q++)
        for (int64_t c = 0; c < way; c++) {
            double z[3] = {-D[q * way + c], Pix[q * way + c], Part[q * way + c]}, out = 0.0;
            for (int lvl = 0; lvl < 3; lvl++) {
                int i = lvl * LWFM_MML_MAX_SLOTS + (per_slot ? (int)c : 0);
                out += h->w[lvl] * ((z[lvl] - mu[i]) / sd[i] * g[i] + b[i]);
            }
            logits[q * way + c] = (float)out;
        }
    return LWFM_OK;
}
