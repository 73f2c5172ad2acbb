/* Checks shared by the episode driver (episode.c) and the per-pair views
 * of the methods (lib/methods). Private to liblwfm. */
#ifndef LWFM_EPISODE_H
#define LWFM_EPISODE_H

#include "model.h"

/* Caller-given feature maps: NULL, count, the model's (C, fs, fs), finite. */
lwfm_status lwfm__check_features(const lwfm_model *m, const char *what, const float *f, int64_t n,
                                 int64_t C, int64_t fh, int64_t fw);

#endif
