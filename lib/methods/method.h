/* The method table: one struct of operations per few-shot method (LWFM-SPM,
 * DN4, MML, RCN) and one list of them (table.c). The episode driver
 * (episode.c), the model loader (model.c) and the per-pair handles (pair.c)
 * reach a method only through its entry, so a method lives in one file of
 * this folder (docs/adding-a-method.md). Private to liblwfm. */
#ifndef LWFM_METHODS_METHOD_H
#define LWFM_METHODS_METHOD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "core/arena.h"
#include "io/npz.h"
#include "lwfm/lwfm.h"

/* A method's prepared images (support set or queries): its own struct,
 * opaque to the driver. Every such struct begins with an lwfm__prep_mem
 * (below), which describes its buffers generically: each holds the n images
 * one after another, image_bytes of them per image. So the driver can
 * release any of them, and copy, append (lwfm_support_add) and save or load
 * (lwfm_support_save, docs/support-format.md) a prepared support set without
 * knowing the method. */
typedef struct lwfm__prep lwfm__prep;

#define LWFM_PREP_MAX_BUFS 6

/* How a method lays out n prepared images of P positions (its `layout` op). */
typedef struct lwfm__prep_layout {
    size_t struct_bytes; /* sizeof the method's struct (begins with lwfm__prep_mem) */
    int n_image_buf;     /* buffers holding the images: 1..LWFM_PREP_MAX_BUFS-1 */
    size_t image_bytes[LWFM_PREP_MAX_BUFS]; /* bytes of one image in buffer i */
    char type[LWFM_PREP_MAX_BUFS];          /* its elements: 'f' float32, 'd' float64 */
    size_t scratch_bytes; /* one more buffer, used only while preparing (0: none) */
} lwfm__prep_layout;

/* The per-pair views of the public API (lwfm_lwe_*, lwfm_spm_*, lwfm_rcn_*). */
typedef enum lwfm__pair_kind { LWFM_PAIR_LWE, LWFM_PAIR_SPM, LWFM_PAIR_RCN } lwfm__pair_kind;

typedef struct lwfm__method {
    lwfm_method id;            /* config's method value */
    const char *name;          /* config/method ("lwfm-spm", "dn4", ...) */
    const char *weight_prefix; /* key prefix of the backbone's tensors */

    /* The method's own weights (NULL: none): *weights receives what `free`
     * takes back. m is loaded up to its tapped layers (m->layers). */
    lwfm_status (*load)(const lwfm_model *m, const lwfm__archive *ar, void **weights);
    void (*free)(void *weights);

    /* 1 when the method-specific configuration key `key` is present for a
     * model of this method (lwfm_model_config_*, lwfm_model_config_json);
     * NULL: it has none. */
    int (*config_key)(const lwfm__config *c, const char *key);

    /* The buffers of n prepared images of P positions: per-image sizes and
     * element types, the struct's size, scratch (lwfm__prep_layout). The
     * per-image sizes must not depend on n: a support set grows by copying
     * its images' bytes (lwfm_support_add). */
    void (*layout)(const lwfm_model *m, int64_t n, int64_t P, lwfm__prep_layout *out);
    /* Point the struct's own fields (counts, array pointers) at mem.n, mem.P
     * and mem.buf, after the generic code allocated (and maybe filled) them. */
    void (*bind)(lwfm__prep *p);

    /* Per-image work for n validated feature maps (n x C x P): into a struct
     * from lwfm__prep_make (in the arena's slots 0-4 and LWFM_SLOT_STATE when
     * arena is given, valid until the arena is reused, else memory *out
     * owns). Image i's results depend on image i alone (not on n or the
     * other images): a set grown by lwfm_support_add scores bit-identically
     * to one prepared whole. */
    lwfm_status (*prepare)(const lwfm_model *m, const float *feats, int64_t n, int64_t P,
                           lwfm__arena *arena, lwfm__prep **out);

    /* Limits that depend on the support set (P positions per image, count
     * images per class); NULL: none. */
    lwfm_status (*check_support)(const lwfm_model *m, int64_t P, const int64_t *count, int64_t way);

    /* logits (queries x way, row-major) of the prepared queries Q against the
     * prepared supports S (labels: one per support image, count: per class).
     * Scratch from the arena's slots other than those of Q. */
    lwfm_status (*score)(const lwfm_model *m, const lwfm__prep *S, const int32_t *labels,
                         const int64_t *count, int64_t way, const lwfm__prep *Q, float *logits,
                         lwfm__arena *arena);

    /* Queries the backbone must see at a time (0: any number); NULL: 0. */
    int64_t (*query_batch)(const lwfm_model *m);

    /* Per-pair views (NULL where the method has none). Arguments as the
     * public calls, the handle replaced by its model; outputs are written
     * only on success. pair_ready: whether this model can give view `kind`
     * (e.g. an lwfm-spm model with SPM switched off has no SPM view). */
    lwfm_status (*pair_ready)(const lwfm_model *m, lwfm__pair_kind kind);
    lwfm_status (*lwe_pair)(const lwfm_model *m, const float *sf, const float *qf, int64_t channels,
                            int64_t fh, int64_t fw, float *support_weights, float *query_weights,
                            size_t capacity, float *global_similarity);
    lwfm_status (*spm_pair)(const lwfm_model *m, const float *sf, const float *qf, int64_t channels,
                            int64_t fh, int64_t fw, int64_t *assignment, float *similarity,
                            float *layer_scores, size_t capacity, float *score);
    lwfm_status (*rcn_pair)(const lwfm_model *m, const float *sf, const float *qf, int64_t channels,
                            int64_t fh, int64_t fw, float *similarity, int64_t *match,
                            float *weight, size_t capacity, float *score);
} lwfm__method;

/* The entry for a config method value; NULL when there is none. */
const lwfm__method *lwfm__method_get(lwfm_method id);
/* The entry named `name`; NULL when there is none. */
const lwfm__method *lwfm__method_find(const char *name);
/* The first entry that offers the per-pair view `kind` (for messages). */
const lwfm__method *lwfm__method_offering(lwfm__pair_kind kind);
/* Whether the method offers the per-pair view `kind`. */
int lwfm__method_offers(const lwfm__method *me, lwfm__pair_kind kind);

/* Add an entry after the built-in ones (for tests: the toy method of
 * tests/c/test_toy_method.c): its id must be unused. Not thread-safe: call
 * it before any model is loaded. LWFM_OK, or LWFM_ERR_LIMIT when the table
 * is full, LWFM_ERR_INVALID_ARGUMENT for a taken id or name. */
lwfm_status lwfm__method_register(const lwfm__method *me);

/* ------------------------------------------------------------------------ */
/* For method implementations                                               */

/* The head of every method's prepared-images struct. */
typedef struct lwfm__prep_mem {
    int owned;                /* buffers and struct are the prep's own (else the arena's) */
    int n_buf;                /* buffers allocated: the images', then the scratch */
    int64_t n, P;             /* images, positions per image */
    lwfm__prep_layout layout; /* the method's, for these n and P */
    void *buf[LWFM_PREP_MAX_BUFS];
} lwfm__prep_mem;

/* A prepared-images struct for n images of P positions as the method's
 * layout says, zeroed head, buffers allocated but not filled, bound (the
 * method's bind): the arena's slots 0..k and LWFM_SLOT_STATE when arena is
 * given, else owned memory. NULL (error set, nothing left allocated) when
 * out of memory. */
lwfm__prep *lwfm__prep_make(const lwfm_model *m, int64_t n, int64_t P, lwfm__arena *arena);

/* Release a prepared-images struct (NULL, or arena-held: nothing to do). */
void lwfm__prep_release(lwfm__prep *p);

/* The images of a followed by those of b (same model and P) in a new owned
 * struct: their bytes copied, nothing recomputed. */
lwfm_status lwfm__prep_concat(const lwfm_model *m, const lwfm__prep *a, const lwfm__prep *b,
                              lwfm__prep **out);

/* n images of P positions in a new owned struct, buffer i copied from
 * src[i] (n x layout.image_bytes[i] bytes, as the method's layout for this
 * model says); NULL (error set) when out of memory. */
lwfm__prep *lwfm__prep_copy_in(const lwfm_model *m, int64_t n, int64_t P, const void *const *src);

#endif
