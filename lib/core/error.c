/* Per-thread error details, status strings, logging, versions, fork(). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "omp_compat.h"
#include <stdatomic.h>

#define LWFM_ERROR_CAP 1024

static _Thread_local char tls_error[LWFM_ERROR_CAP];

static lwfm_log_fn g_log_fn = NULL;
static void *g_log_user = NULL;
static lwfm_log_level g_log_min = LWFM_LOG_WARN;

LWFM_API const char *lwfm_version(void) {
    return LWFM_VERSION_STRING;
}

LWFM_API int lwfm_version_number(void) {
    return LWFM_VERSION_MAJOR * 10000 + LWFM_VERSION_MINOR * 100 + LWFM_VERSION_PATCH;
}

LWFM_API const char *lwfm_status_string(lwfm_status status) {
    switch (status) {
    case LWFM_OK:
        return "ok";
    case LWFM_ERR_INVALID_ARGUMENT:
        return "invalid argument";
    case LWFM_ERR_OUT_OF_MEMORY:
        return "out of memory";
    case LWFM_ERR_IO:
        return "input/output error";
    case LWFM_ERR_FORMAT:
        return "malformed weight file";
    case LWFM_ERR_MISSING_KEY:
        return "missing tensor in weight file";
    case LWFM_ERR_SHAPE:
        return "wrong shape";
    case LWFM_ERR_DTYPE:
        return "unsupported dtype";
    case LWFM_ERR_LIMIT:
        return "resource limit exceeded";
    case LWFM_ERR_UNSUPPORTED:
        return "unsupported configuration";
    case LWFM_ERR_WRONG_KIND:
        return "call does not apply to this model's method";
    case LWFM_ERR_NONFINITE:
        return "non-finite value in input";
    case LWFM_ERR_BUFFER_TOO_SMALL:
        return "output buffer too small";
    case LWFM_ERR_BACKEND:
        return "oneDNN backend error";
    case LWFM_ERR_INTERNAL:
        return "internal error";
    }
    return "unknown status";
}

LWFM_API const char *lwfm_last_error(void) {
    return tls_error;
}

/* Set by every API call (they all begin with lwfm__error_clear()): this
 * thread may have started OpenMP parallel regions through the library. */
static _Thread_local int tls_used = 0;

void lwfm__error_clear(void) {
    tls_error[0] = '\0';
    tls_used = 1;
}

/* fork() after use (lwfm.h, THREAD SAFETY). GNU libgomp keeps, per thread
 * that started a parallel region, a pool of worker threads. After fork() the
 * child has only the forking thread, whose pool still lists the parent's
 * workers, and its next parallel region of more than one thread waits for
 * them forever (inside oneDNN or our own loops). In the child, if the forking
 * thread used the library, its OpenMP thread count becomes 1: libgomp runs a
 * one-thread region without touching the pool, and oneDNN calls its kernels
 * directly when it has one thread, so the child computes (single-threaded,
 * bitwise as the parent would). Threads the child creates later start from
 * libgomp's defaults with pools of their own and are not affected. */
_Atomic unsigned lwfm__fork_generation = 0;

static void after_fork_child(void) {
    /* cached oneDNN primitives keep the thread count they were created
     * with: lwfm__net contexts recreate theirs on the next call */
    atomic_fetch_add(&lwfm__fork_generation, 1u);
#ifdef _OPENMP
    if (tls_used) omp_set_num_threads(1);
#endif
}

__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, after_fork_child);
}

lwfm_status lwfm__error(lwfm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_error, sizeof tls_error, fmt, ap);
    va_end(ap);
    lwfm__log(LWFM_LOG_DEBUG, "error %d (%s): %s", (int)status, lwfm_status_string(status),
              tls_error);
    return status;
}

lwfm_status lwfm__error_prefix(lwfm_status status, const char *fmt, ...) {
    char prefix[256];
    char old[LWFM_ERROR_CAP - 300]; /* keeps prefix + old within the buffer */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t keep = strnlen(tls_error, sizeof old - 1);
    memcpy(old, tls_error, keep);
    old[keep] = '\0';
    if (old[0])
        snprintf(tls_error, sizeof tls_error, "%s: %s", prefix, old);
    else
        snprintf(tls_error, sizeof tls_error, "%s: %s", prefix, lwfm_status_string(status));
    return status;
}

LWFM_API void lwfm_set_log_callback(lwfm_log_fn fn, void *user_data, lwfm_log_level min_level) {
    g_log_fn = fn;
    g_log_user = user_data;
    g_log_min = min_level;
}

void lwfm__log(lwfm_log_level level, const char *fmt, ...) {
    lwfm_log_fn fn = g_log_fn;
    if (!fn || level < g_log_min) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(level, msg, g_log_user);
}
