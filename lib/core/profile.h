/* Opt-in per-stage timing (LWFM_PROFILE=1 in the environment): the episode
 * and feature calls add the time of each stage to process-wide counters and,
 * when the outermost public call returns, log one line through the log
 * callback (level INFO) and reset them:
 *
 *   profile lwfm_episode_score: total 12.345 backbone 10.000 lwe 1.000
 *   matcher 0.800 solver 0.300 head 0.000 other 0.245 ms threads 2
 *
 * lwe: centring and unit vectors, the correlation GEMMs, attention, pooling
 * and the logits; matcher: the g_l MLP; solver: assignments and matched
 * cosines (its share of the parallel pair loop, from thread-summed times);
 * head: the whole metric of DN4 / MML / RCN models; other: the rest
 * (argument checks, copies). Off (one predictable branch per stage) unless
 * LWFM_PROFILE is set to a non-empty value other than "0" when the library
 * first looks. With concurrent calls the counters mix: profile one call at a
 * time. Not part of the ABI; the line's format may change. */
#ifndef LWFM_CORE_PROFILE_H
#define LWFM_CORE_PROFILE_H

enum {
    LWFM_PROF_BACKBONE,
    LWFM_PROF_LWE,
    LWFM_PROF_MATCHER,
    LWFM_PROF_HEAD,
    LWFM_PROF_PAIRS,        /* wall time of the parallel pair loops */
    LWFM_PROF_PAIRS_THREAD, /* thread-summed time of the same loops */
    LWFM_PROF_SOLVER_THREAD, /* thread-summed solver time inside them */
    LWFM_PROF_N
};

extern int lwfm__profile_on; /* read-only after lwfm__profile_init() */

/* Reads LWFM_PROFILE once (thread-safe). */
void lwfm__profile_init(void);
double lwfm__prof_now(void);
/* Add seconds to a stage's counter (atomic). */
void lwfm__prof_add(int stage, double seconds);
/* On entry of a public call: returns its start time (0 when profiling is
 * off) and counts the nesting. */
double lwfm__prof_enter(void);
/* On exit: logs and resets the counters when the outermost call returns. */
void lwfm__prof_leave(const char *call, double t0);

/* First statement of a public call: times it until it returns, by any path
 * (GCC/Clang cleanup attribute). */
typedef struct lwfm__prof_scope {
    const char *call;
    double t0;
} lwfm__prof_scope;
void lwfm__prof_scope_leave(lwfm__prof_scope *s);
#define LWFM_PROF_SCOPE(name)                                                                      \
    lwfm__prof_scope lwfm__prof_scope_ __attribute__((cleanup(lwfm__prof_scope_leave))) = {        \
        (name), lwfm__prof_enter()}

/* t = LWFM_PROF_T0(); ...; LWFM_PROF_ADD(stage, t); */
#define LWFM_PROF_T0() (lwfm__profile_on ? lwfm__prof_now() : 0.0)
#define LWFM_PROF_ADD(stage, t0)                                                                   \
    do {                                                                                           \
        if (lwfm__profile_on) lwfm__prof_add((stage), lwfm__prof_now() - (t0));                    \
    } while (0)

#endif
