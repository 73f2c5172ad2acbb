/* Dense linear algebra helpers (see linalg.h). */
#include "core/linalg.h"

#include <math.h>
#include <string.h>

int lwfm__cholesky(double *A, int n) {
    for (int j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (int k = 0; k < j; k++) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0.0)) return -1;
        d = sqrt(d);
        A[j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = A[i * n + j];
            for (int k = 0; k < j; k++) s -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = s / d;
        }
        for (int i = 0; i < j; i++) A[i * n + j] = 0.0;
    }
    return 0;
}

double lwfm__chol_logdet(const double *L, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += log(L[i * n + i]);
    return 2.0 * s;
}

void lwfm__chol_inverse(const double *L, int n, double *inv, double *work) {
    /* M = L^{-1} (lower triangular) by forward substitution, column by column */
    double *M = work;
    memset(M, 0, sizeof(double) * (size_t)n * n);
    for (int j = 0; j < n; j++) {
        M[j * n + j] = 1.0 / L[j * n + j];
        for (int i = j + 1; i < n; i++) {
            double s = 0.0;
            for (int k = j; k < i; k++) s -= L[i * n + k] * M[k * n + j];
            M[i * n + j] = s / L[i * n + i];
        }
    }
    /* A^{-1} = M^T M */
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0.0;
            for (int k = i; k < n; k++) s += M[k * n + i] * M[k * n + j];
            inv[i * n + j] = inv[j * n + i] = s;
        }
}

int lwfm__sym_eigenvalues(double *a, int n, double *d, double *e) {
    /* Householder reduction to tridiagonal form (d: diagonal, e: sub-diagonal). */
    for (int i = n - 1; i > 0; i--) {
        int l = i - 1;
        double h = 0.0;
        if (l > 0) {
            double scale = 0.0;
            for (int k = 0; k <= l; k++) scale += fabs(a[i * n + k]);
            if (scale == 0.0) {
                e[i] = a[i * n + l];
            } else {
                for (int k = 0; k <= l; k++) {
                    a[i * n + k] /= scale;
                    h += a[i * n + k] * a[i * n + k];
                }
                double f = a[i * n + l];
                double g = f >= 0.0 ? -sqrt(h) : sqrt(h);
                e[i] = scale * g;
                h -= f * g;
                a[i * n + l] = f - g;
                f = 0.0;
                for (int j = 0; j <= l; j++) {
                    g = 0.0;
                    for (int k = 0; k <= j; k++) g += a[j * n + k] * a[i * n + k];
                    for (int k = j + 1; k <= l; k++) g += a[k * n + j] * a[i * n + k];
                    e[j] = g / h;
                    f += e[j] * a[i * n + j];
                }
                double hh = f / (h + h);
                for (int j = 0; j <= l; j++) {
                    f = a[i * n + j];
                    e[j] = g = e[j] - hh * f;
                    for (int k = 0; k <= j; k++) a[j * n + k] -= f * e[k] + g * a[i * n + k];
                }
            }
        } else {
            e[i] = a[i * n + l];
        }
    }
    for (int i = 0; i < n; i++) d[i] = a[i * n + i];
    /* Implicit QL on the tridiagonal matrix. */
    for (int i = 1; i < n; i++) e[i - 1] = e[i];
    if (n > 0) e[n - 1] = 0.0;
    for (int l = 0; l < n; l++) {
        int iter = 0, m;
        do {
            for (m = l; m < n - 1; m++) {
                double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= 1e-15 * dd) break;
            }
            if (m != l) {
                if (iter++ == 100) return -1;
                double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
                double r = hypot(g, 1.0);
                g = d[m] - d[l] + e[l] / (g + copysign(r, g));
                double s = 1.0, c = 1.0, p = 0.0;
                int i;
                for (i = m - 1; i >= l; i--) {
                    double f = s * e[i], b = c * e[i];
                    e[i + 1] = r = hypot(f, g);
                    if (r == 0.0) {
                        d[i + 1] -= p;
                        e[m] = 0.0;
                        break;
                    }
                    s = f / r;
                    c = g / r;
                    g = d[i + 1] - p;
                    r = (d[i] - g) * s + 2.0 * c * b;
                    d[i + 1] = g + (p = s * r);
                    g = c * r - b;
                }
                if (r == 0.0 && i >= l) continue;
                d[l] -= p;
                e[l] = g;
                e[m] = 0.0;
            }
        } while (m != l);
    }
    return 0;
}
