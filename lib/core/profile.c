/* Opt-in per-stage timing: see profile.h. */
#include "core/profile.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "core/omp_compat.h"

int lwfm__profile_on = 0;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int64_t g_ns[LWFM_PROF_N];
static __thread int t_depth;

static void read_env(void) {
    const char *v = getenv("LWFM_PROFILE");
    lwfm__profile_on = v && *v && strcmp(v, "0") != 0;
}

void lwfm__profile_init(void) {
    pthread_once(&g_once, read_env);
}

double lwfm__prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void lwfm__prof_add(int stage, double seconds) {
    __atomic_fetch_add(&g_ns[stage], (int64_t)(seconds * 1e9), __ATOMIC_RELAXED);
}

double lwfm__prof_enter(void) {
    lwfm__profile_init();
    if (!lwfm__profile_on) return 0.0;
    t_depth++;
    return lwfm__prof_now();
}

void lwfm__prof_leave(const char *call, double t0) {
    if (!lwfm__profile_on || --t_depth > 0) return;
    double total = lwfm__prof_now() - t0, ms[LWFM_PROF_N];
    for (int i = 0; i < LWFM_PROF_N; i++)
        ms[i] = 1e-6 * (double)__atomic_exchange_n(&g_ns[i], 0, __ATOMIC_RELAXED);
    /* the solver's share of the pair loops' wall time; the rest is LWE work */
    double solver = ms[LWFM_PROF_PAIRS_THREAD] > 0
                        ? ms[LWFM_PROF_PAIRS] * ms[LWFM_PROF_SOLVER_THREAD] /
                              ms[LWFM_PROF_PAIRS_THREAD]
                        : 0.0;
    double lwe = ms[LWFM_PROF_LWE] + ms[LWFM_PROF_PAIRS] - solver;
    double other = 1e3 * total - ms[LWFM_PROF_BACKBONE] - lwe - ms[LWFM_PROF_MATCHER] - solver -
                   ms[LWFM_PROF_HEAD];
    lwfm__log(LWFM_LOG_INFO,
              "profile %s: total %.3f backbone %.3f lwe %.3f matcher %.3f solver %.3f head %.3f "
              "other %.3f ms threads %d",
              call, 1e3 * total, ms[LWFM_PROF_BACKBONE], lwe, ms[LWFM_PROF_MATCHER], solver,
              ms[LWFM_PROF_HEAD], other, omp_get_max_threads());
}

void lwfm__prof_scope_leave(lwfm__prof_scope *s) {
    lwfm__prof_leave(s->call, s->t0);
}
