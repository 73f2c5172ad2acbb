/* The check macro the C API tests share: EXPECT(cond) counts the check and
 * reports a failing one with its line; main() returns `fails != 0`. */
#ifndef LWFM_TESTS_EXPECT_H
#define LWFM_TESTS_EXPECT_H

#include <stdio.h>

static int fails = 0, checks = 0;

#define EXPECT(c)                                                           \
    do {                                                                    \
        checks++;                                                           \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
            fails++;                                                        \
        }                                                                   \
    } while (0)

#endif
