/* The public header compiles alone as C++ with -Wall -Wextra -pedantic -Werror. */
#include "lwfm/lwfm.h"

#include <stdio.h>
#include <string.h>

int main(void) {
    int fails = 0;
#define EXPECT(c)                                                   \
    do {                                                            \
        if (!(c)) {                                                 \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
            fails++;                                                \
        }                                                           \
    } while (0)
    EXPECT(LWFM_OK == 0);
    EXPECT(LWFM_ERR_INVALID_ARGUMENT == 1);
    EXPECT(LWFM_ERR_INTERNAL == 14);
    EXPECT(LWFM_METHOD_LWFM_SPM == 0 && LWFM_METHOD_RCN == 3);
    EXPECT(strcmp(lwfm_version(), LWFM_VERSION_STRING) == 0);
    EXPECT(lwfm_version_number() ==
           LWFM_VERSION_MAJOR * 10000 + LWFM_VERSION_MINOR * 100 + LWFM_VERSION_PATCH);
    return fails != 0;
}
