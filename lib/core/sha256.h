/* SHA-256 (FIPS 180-4), for the model fingerprint (lwfm_model_fingerprint)
 * and the support-set file's model binding. Incremental; no allocation.
 * Private to liblwfm. */
#ifndef LWFM_CORE_SHA256_H
#define LWFM_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct lwfm__sha256 {
    uint32_t h[8];
    uint64_t bytes; /* hashed so far */
    uint8_t block[64];
    size_t used; /* bytes waiting in block */
    int portable; /* 1: never the CPU's SHA instructions (tests set it to check both paths) */
} lwfm__sha256;

void lwfm__sha256_init(lwfm__sha256 *s);
void lwfm__sha256_update(lwfm__sha256 *s, const void *data, size_t n);
void lwfm__sha256_final(lwfm__sha256 *s, uint8_t digest[32]);

#endif
