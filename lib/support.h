/* The prepared support set behind lwfm_support, shared by the episode
 * driver (episode.c: prepare, score) and lib/support.c (class names,
 * growing, saving and loading). Private to liblwfm. */
#ifndef LWFM_SUPPORT_H
#define LWFM_SUPPORT_H

#include "methods/method.h"
#include "model.h"

/* Immutable once made (class names aside: lwfm_support_set_class_names). */
struct lwfm_support {
    lwfm_model *model;
    int64_t way;
    int32_t *labels;
    int64_t *count;    /* supports per class */
    int64_t n, P;      /* images, positions per image */
    lwfm__prep *prep;  /* the method's prepared images */
    int from_features; /* prepared from feature maps (lwfm_support_from_features) */
    char **names;      /* way class names, one allocation with their bytes; or NULL */
};

/* Labels 0..way-1, every class present, within the limits; fills count
 * (way entries). */
lwfm_status lwfm__check_labels(const int32_t *labels, int64_t n, int64_t way, int64_t *count);

/* fh * fw of validated images within LWFM_LIMIT_POSITIONS. */
lwfm_status lwfm__check_positions(const char *what, int64_t fh, int64_t fw);

/* Backbone + the method's per-image preparation of n images validated with
 * lwfm__check_images (into the arena's slots when one is given, else into
 * buffers *out owns). */
lwfm_status lwfm__images_to_prep(const lwfm_model *m, const char *what, const float *images,
                                 int64_t n, int64_t h, int64_t w, lwfm__prep **out,
                                 lwfm__arena *arena);

/* A support set with validated, copied labels and no reference on the model
 * yet; then lwfm__support_finish: on failure (st) it is destroyed, else it
 * takes its model reference and goes to *out. */
lwfm_status lwfm__support_begin(lwfm_model *m, const int32_t *labels, int64_t n, int64_t way,
                                lwfm_support **out);
lwfm_status lwfm__support_finish(lwfm_support *s, lwfm_status st, lwfm_support **out);

/* The method's limits that depend on the support set. */
lwfm_status lwfm__support_check_size(const lwfm_model *m, const lwfm_support *s);

#endif
