/* Prepared-images structs of the methods (see method.h): made from the
 * method's layout, released, concatenated, all without knowing the method. */
#include <string.h>

#include "core/core.h"
#include "methods/method.h"
#include "model.h"

void lwfm__prep_release(lwfm__prep *p) {
    lwfm__prep_mem *mem = (lwfm__prep_mem *)p;
    if (!mem || !mem->owned) return;
    for (int i = 0; i < mem->n_buf; i++) lwfm__free(mem->buf[i]);
    lwfm__free(mem);
}

/* Bytes of buffer i for mem's n images (0 on overflow: refused by the caller). */
static size_t buf_bytes(const lwfm__prep_layout *ly, int i, int64_t n) {
    if (i == ly->n_image_buf) return ly->scratch_bytes;
    size_t b;
    return __builtin_mul_overflow(ly->image_bytes[i], (size_t)n, &b) ? 0 : b;
}

lwfm__prep *lwfm__prep_make(const lwfm_model *m, int64_t n, int64_t P, lwfm__arena *arena) {
    lwfm__prep_layout ly;
    memset(&ly, 0, sizeof ly);
    m->method->layout(m, n, P, &ly);
    const int n_buf = ly.n_image_buf + (ly.scratch_bytes > 0);
    lwfm__prep_mem *mem = arena ? lwfm__arena_get(arena, LWFM_SLOT_STATE, ly.struct_bytes)
                                : lwfm__alloc(ly.struct_bytes);
    if (mem) {
        memset(mem, 0, ly.struct_bytes);
        mem->owned = arena == NULL;
        mem->n = n, mem->P = P, mem->layout = ly;
        for (int i = 0; i < n_buf; i++) {
            const size_t bytes = buf_bytes(&ly, i, n);
            mem->buf[i] = !bytes ? NULL
                          : arena ? lwfm__arena_get(arena, i, bytes)
                                  : lwfm__alloc(bytes);
            mem->n_buf = i + 1;
            if (!mem->buf[i]) {
                lwfm__prep_release((lwfm__prep *)mem);
                mem = NULL;
                break;
            }
        }
    }
    if (!mem) {
        lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory preparing %lld images", (long long)n);
        return NULL;
    }
    m->method->bind((lwfm__prep *)mem);
    return (lwfm__prep *)mem;
}

/* Owned struct for n images, without the scratch only preparing uses. */
static lwfm__prep *make_images(const lwfm_model *m, int64_t n, int64_t P) {
    lwfm__prep_mem *mem = (lwfm__prep_mem *)lwfm__prep_make(m, n, P, NULL);
    if (mem && mem->layout.scratch_bytes) {
        lwfm__free(mem->buf[mem->layout.n_image_buf]);
        mem->buf[mem->layout.n_image_buf] = NULL;
    }
    return (lwfm__prep *)mem;
}

lwfm_status lwfm__prep_concat(const lwfm_model *m, const lwfm__prep *a, const lwfm__prep *b,
                              lwfm__prep **out) {
    const lwfm__prep_mem *ma = (const lwfm__prep_mem *)a, *mb = (const lwfm__prep_mem *)b;
    if (ma->P != mb->P || ma->layout.n_image_buf != mb->layout.n_image_buf ||
        memcmp(ma->layout.image_bytes, mb->layout.image_bytes, sizeof ma->layout.image_bytes))
        return lwfm__error(LWFM_ERR_INTERNAL, "prepared images of different layouts");
    lwfm__prep *p = make_images(m, ma->n + mb->n, ma->P);
    if (!p) return LWFM_ERR_OUT_OF_MEMORY;
    lwfm__prep_mem *mp = (lwfm__prep_mem *)p;
    for (int i = 0; i < mp->layout.n_image_buf; i++) {
        const size_t ia = ma->layout.image_bytes[i] * (size_t)ma->n;
        memcpy(mp->buf[i], ma->buf[i], ia);
        memcpy((char *)mp->buf[i] + ia, mb->buf[i], mb->layout.image_bytes[i] * (size_t)mb->n);
    }
    *out = p;
    return LWFM_OK;
}

lwfm__prep *lwfm__prep_copy_in(const lwfm_model *m, int64_t n, int64_t P,
                               const void *const *src) {
    lwfm__prep_mem *mp = (lwfm__prep_mem *)make_images(m, n, P);
    if (mp)
        for (int i = 0; i < mp->layout.n_image_buf; i++)
            memcpy(mp->buf[i], src[i], mp->layout.image_bytes[i] * (size_t)n);
    return (lwfm__prep *)mp;
}
