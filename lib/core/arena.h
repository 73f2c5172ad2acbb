/* Grow-only scratch buffers reused across calls (no page faults and no
 * zeroing of fresh memory on every call). An arena is used by one thread
 * at a time; models keep a small pool of them. Private to liblwfm. */
#ifndef LWFM_CORE_ARENA_H
#define LWFM_CORE_ARENA_H

#include <stddef.h>

/* Slots: 0-4 a method's prepared images (lib/methods), then the driver's
 * and the kernels' scratch, then the prepared-images struct itself. */
enum {
    LWFM_SLOT_R = 5,  /* kernels' per-thread scratch */
    LWFM_SLOT_PAIRS,  /* lwfm-spm pair loop */
    LWFM_SLOT_LOGITS, /* the driver's logits before they are copied out */
    LWFM_SLOT_FEATS,  /* backbone features */
    LWFM_SLOT_LEVELS, /* heads' per-(query, class) accumulators */
    LWFM_SLOT_STATE,  /* lwfm__prep_new's struct */
    LWFM_ARENA_SLOTS
};

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
