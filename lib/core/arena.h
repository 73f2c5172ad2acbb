/* Grow-only scratch buffers reused across calls (no page faults and no
 * zeroing of fresh memory on every call). An arena is used by one thread
 * at a time; models keep a small pool of them. Private to liblwfm. */
#ifndef LWFM_CORE_ARENA_H
#define LWFM_CORE_ARENA_H

#include <stddef.h>

#define LWFM_ARENA_SLOTS 10

typedef struct lwfm__arena {
    void *slot[LWFM_ARENA_SLOTS];
    size_t cap[LWFM_ARENA_SLOTS];
} lwfm__arena;

/* Buffer `slot` with at least `bytes` bytes (64-byte aligned, contents
 * unspecified); NULL when out of memory. Pointers from earlier calls for
 * the same slot are invalidated when it grows. */
void *lwfm__arena_get(lwfm__arena *a, int slot, size_t bytes);
void lwfm__arena_free(lwfm__arena *a);

#endif
