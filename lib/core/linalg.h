/* Small dense double-precision linear algebra for the MML distribution
 * level (64 x 64 covariances). Row-major n x n matrices. Private. */
#ifndef LWFM_CORE_LINALG_H
#define LWFM_CORE_LINALG_H

/* In-place Cholesky A = L L^T of a symmetric positive definite matrix (the
 * lower triangle is read; L is written there, the strict upper triangle is
 * zeroed). Returns 0, or -1 when A is not numerically positive definite. */
int lwfm__cholesky(double *A, int n);

/* log det A = 2 sum log L_ii from the factor. */
double lwfm__chol_logdet(const double *L, int n);

/* A^{-1} (full, symmetric) from the factor L; work: n * n doubles. */
void lwfm__chol_inverse(const double *L, int n, double *inv, double *work);

/* Eigenvalues (ascending order not guaranteed) of a symmetric matrix by
 * Householder tridiagonalisation and implicit QL; A (lower triangle read) is
 * destroyed. work: n doubles. Returns 0, or -1 if QL did not converge. */
int lwfm__sym_eigenvalues(double *A, int n, double *w, double *work);

#endif
