/* What the C API tests share: EXPECT(cond) counts the check and reports a
 * failing one with its line (main() returns `fails != 0`); test_uniform(),
 * a fixed-seed noise source; test_alloc(), malloc or exit. */
#ifndef LWFM_TESTS_EXPECT_H
#define LWFM_TESTS_EXPECT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int fails = 0, checks = 0;

#define EXPECT(c)                                                           \
    do {                                                                    \
        checks++;                                                           \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
            fails++;                                                        \
        }                                                                   \
    } while (0)

/* xorshift32 in [-1, 1), the same sequence in every test program. */
static inline float test_uniform(void) {
    static uint32_t rng = 2463534242u;
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return (float)((rng >> 8) * (1.0 / 8388608.0) - 1.0);
}

/* malloc that exits on failure (n = 0 gives a valid pointer). */
static inline void *test_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

#endif
