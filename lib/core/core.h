/* Internal core services: errors, logging, allocation, checked arithmetic.
 * Everything here is private to liblwfm (hidden visibility). */
#ifndef LWFM_CORE_H
#define LWFM_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lwfm/lwfm.h"

#if defined(__GNUC__)
#define LWFM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LWFM_PRINTF(a, b)
#endif

/* Hot loops are compiled for several x86-64 levels and picked at load time
 * (GCC function multi-versioning): the library runs on any x86-64 CPU and
 * uses AVX2 / AVX-512 where present. Off under sanitizers and other
 * compilers. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&                             \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) && !defined(LWFM_NO_MULTIARCH)
#define LWFM_MULTIARCH __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define LWFM_MULTIARCH
#endif

/* Record a detail message for the calling thread and return `status`.
 * Typical use: return lwfm__error(LWFM_ERR_SHAPE, "expected %d", n); */
lwfm_status lwfm__error(lwfm_status status, const char *fmt, ...) LWFM_PRINTF(2, 3);

/* Prefix the current thread's detail message with "prefix: " (used to add
 * context such as a file name while an error propagates). Returns status. */
lwfm_status lwfm__error_prefix(lwfm_status status, const char *fmt, ...) LWFM_PRINTF(2, 3);

/* Clear the calling thread's detail message (done on entry of API calls). */
void lwfm__error_clear(void);
/* Incremented in a child process after fork() (error.c): objects caching
 * oneDNN primitives compare it with the value they saw and rebuild them. */
extern _Atomic unsigned lwfm__fork_generation;

/* Log through the user's callback (silent by default). */
void lwfm__log(lwfm_log_level level, const char *fmt, ...) LWFM_PRINTF(2, 3);

/* 64-byte aligned allocation. Returns NULL on failure or when bytes == 0
 * would overflow internal rounding. lwfm__alloc(0) returns a valid pointer. */
void *lwfm__alloc(size_t bytes);
void *lwfm__calloc(size_t count, size_t size); /* zeroed, overflow-checked */
void lwfm__free(void *p);

/* Checked size arithmetic: return 0 on success, 1 on overflow. */
static inline int lwfm__mul_size(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int lwfm__add_size(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out);
}

/* Product of n int64 dims into *out with overflow and negativity checks. */
int lwfm__numel(const int64_t *dims, int n, size_t *out);

/* Returns 1 if every value is finite. */
int lwfm__all_finite(const float *x, size_t n);

#endif
