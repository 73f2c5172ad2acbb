/* Test helper for tests/python/test_cli_photos.py: decode one image file
 * with the `lwfm` tool's decoder (tools/cli/decode.c: PNG, JPEG, WebP, EXIF
 * orientation applied) and write "HEIGHT WIDTH CHANNELS BYTES_PER_SAMPLE\n"
 * and the packed pixels to stdout; or the error on stderr and exit 1. */
#include <stdio.h>
#include <stdlib.h>

#include "../../tools/cli/cli.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fputs("usage: image_dump FILE\n", stderr);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *data = malloc(cap);
    size_t got;
    while (data && (got = fread(data + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) data = realloc(data, cap *= 2);
    }
    fclose(f);
    if (!data) return 1;
    cli_image img;
    char err[ERR_CAP];
    if (image_decode(data, n, &img, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        free(data);
        return 1;
    }
    const size_t bps = img.format == LWFM_PIXEL_U16 ? 2 : 1;
    printf("%lld %lld %lld %zu\n", (long long)img.height, (long long)img.width,
           (long long)img.channels, bps);
    fwrite(img.pixels, bps, (size_t)(img.height * img.width * img.channels), stdout);
    image_free(&img);
    free(data);
    return 0;
}
