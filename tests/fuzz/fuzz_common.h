/* Shared by the fuzz targets (tests/fuzz, docs/fuzzing.md): checks that stay
 * on in release builds, the test models, a byte reader.
 *
 * The targets build two ways: with clang -fsanitize=fuzzer (-Dfuzzing=true,
 * libFuzzer supplies main) and with any compiler linked to replay.c, which
 * runs LLVMFuzzerTestOneInput on every file of the corpus and regression
 * folders (the fuzz-replay-* tests of `make test`). */
#ifndef LWFM_FUZZ_COMMON_H
#define LWFM_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwfm/lwfm.h"

/* A broken invariant: print and abort (libFuzzer reports it as a crash). */
#define FUZZ_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s (last error: \"%s\")\n", __FILE__,       \
                    __LINE__, #cond, lwfm_last_error());                                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A failed call: a known status with a detail message. */
#define FUZZ_CHECK_FAILURE(st)                                                                    \
    do {                                                                                           \
        FUZZ_CHECK((st) > LWFM_OK && (st) < LWFM_ERR_INTERNAL);                                    \
        FUZZ_CHECK(lwfm_last_error()[0] != '\0');                                                  \
        FUZZ_CHECK(strcmp(lwfm_status_string(st), "unknown status") != 0);                         \
    } while (0)

/* Test models: $LWFM_FUZZ_MODELS (a folder holding lwfm_tiny.npz and
 * dn4_random.npz, as tests/make_test_models.py writes them), else the build
 * folder's tests/ (compiled in). The bundled models come from the source
 * tree's models/. */
#ifndef LWFM_FUZZ_MODELS_DIR
#define LWFM_FUZZ_MODELS_DIR "tests"
#endif
#ifndef LWFM_FUZZ_SOURCE_ROOT
#define LWFM_FUZZ_SOURCE_ROOT "."
#endif

static inline lwfm_model *fuzz_load(const char *dir_env, const char *dir_default,
                                    const char *name) {
    const char *dir = getenv(dir_env);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : dir_default, name);
    lwfm_model *m = NULL;
    if (lwfm_model_load(&m, path, NULL) != LWFM_OK) {
        fprintf(stderr, "fuzz: cannot load %s: %s (set %s)\n", path, lwfm_last_error(), dir_env);
        exit(2);
    }
    return m;
}

static inline lwfm_model *fuzz_test_model(const char *name) {
    return fuzz_load("LWFM_FUZZ_MODELS", LWFM_FUZZ_MODELS_DIR, name);
}

static inline lwfm_model *fuzz_bundled_model(const char *name) {
    return fuzz_load("LWFM_FUZZ_BUNDLED", LWFM_FUZZ_SOURCE_ROOT "/models", name);
}

/* Reads the fuzz input as a stream; zeros once it is used up. */
typedef struct fuzz_reader {
    const uint8_t *p;
    size_t n;
} fuzz_reader;

static inline uint8_t fuzz_u8(fuzz_reader *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

static inline uint32_t fuzz_u32(fuzz_reader *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | fuzz_u8(r);
    return v;
}

/* splitmix64: deterministic filler for pixel and feature values. */
static inline uint64_t fuzz_mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
