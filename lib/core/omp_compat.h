/* OpenMP, or its serial stand-in when the library is built without it
 * (meson -Dopenmp=disabled, e.g. the ThreadSanitizer build: libgomp is not
 * instrumented, so TSan cannot see its synchronisation). Without OpenMP the
 * `#pragma omp` lines are ignored (simd ones still vectorise with
 * -fopenmp-simd) and every parallel region runs on the calling thread as
 * thread 0 of 1, which is what the per-thread scratch indexing expects. */
#ifndef LWFM_CORE_OMP_COMPAT_H
#define LWFM_CORE_OMP_COMPAT_H

#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_in_parallel(void) { return 0; }
#endif

#endif
