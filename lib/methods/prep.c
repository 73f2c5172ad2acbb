/* Prepared-images structs of the methods (see method.h). */
#include <string.h>

#include "core/core.h"
#include "methods/method.h"

void lwfm__prep_release(lwfm__prep *p) {
    lwfm__prep_mem *mem = (lwfm__prep_mem *)p;
    if (!mem || !mem->owned) return;
    for (int i = 0; i < mem->n_buf; i++) lwfm__free(mem->buf[i]);
    lwfm__free(mem);
}

void *lwfm__prep_new(lwfm__arena *arena, size_t bytes, int n_buf, const size_t *buf_bytes,
                     int64_t n) {
    lwfm__prep_mem *mem =
        arena ? lwfm__arena_get(arena, LWFM_SLOT_STATE, bytes) : lwfm__alloc(bytes);
    if (mem) {
        memset(mem, 0, bytes);
        mem->owned = arena == NULL;
        for (int i = 0; i < n_buf; i++) {
            mem->buf[i] =
                arena ? lwfm__arena_get(arena, i, buf_bytes[i]) : lwfm__alloc(buf_bytes[i]);
            mem->n_buf = i + 1;
            if (!mem->buf[i]) {
                lwfm__prep_release((lwfm__prep *)mem);
                mem = NULL;
                break;
            }
        }
    }
    if (!mem)
        lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory preparing %lld images", (long long)n);
    return mem;
}
