/* Aligned allocation and checked arithmetic helpers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "core/arena.h"

void *lwfm__alloc(size_t bytes) {
    size_t rounded;
    if (lwfm__add_size(bytes, 63, &rounded)) return NULL;
    rounded &= ~(size_t)63;
    if (rounded == 0) rounded = 64;
    return aligned_alloc(64, rounded);
}

void *lwfm__calloc(size_t count, size_t size) {
    size_t bytes;
    if (lwfm__mul_size(count, size, &bytes)) return NULL;
    void *p = lwfm__alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void lwfm__free(void *p) {
    free(p);
}

int lwfm__numel(const int64_t *dims, int n, size_t *out) {
    size_t total = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] < 0) return 1;
        if ((uint64_t)dims[i] > SIZE_MAX) return 1;
        if (lwfm__mul_size(total, (size_t)dims[i], &total)) return 1;
    }
    *out = total;
    return 0;
}

LWFM_MULTIARCH int lwfm__all_finite(const float *x, size_t n) {
    /* A float is NaN or infinite exactly when its exponent bits are all
     * ones; integer tests keep the loop vectorisable. */
    const uint32_t *bits = (const uint32_t *)x;
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (bits[i] & 0x7f800000u) == 0x7f800000u;
    return !bad;
}

void *lwfm__arena_get(lwfm__arena *a, int slot, size_t bytes) {
    if (bytes <= a->cap[slot]) return a->slot[slot];
    void *p = lwfm__alloc(bytes);
    if (!p) return NULL;
    lwfm__free(a->slot[slot]);
    a->slot[slot] = p;
    a->cap[slot] = bytes;
    return p;
}

void lwfm__arena_free(lwfm__arena *a) {
    for (int i = 0; i < LWFM_ARENA_SLOTS; i++) lwfm__free(a->slot[i]);
}
