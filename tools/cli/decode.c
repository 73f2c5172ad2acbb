/* Image decoding from memory: PNG through libpng, JPEG through libjpeg,
 * chosen by the first bytes. Kept apart from image.c (files, folders) so
 * that the fuzz target tests/fuzz/fuzz_image.c links exactly this code.
 *
 * PNG: grey, grey + alpha, RGB, RGBA; palettes expanded to RGB, tRNS to an
 * alpha channel, 1/2/4-bit grey to 8-bit; 16-bit samples kept (native byte
 * order). JPEG: grey and YCbCr/RGB (as RGB); CMYK and other colour spaces
 * are refused. libjpeg's warnings about missing or corrupt data (a
 * truncated file, say) count as errors. Both decoders report errors with
 * longjmp: the objects that change after setjmp and are used after it are
 * volatile, and every path frees what it allocated. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "cli.h"

/* A JPEG over JPEG_BOMB_PIXELS pixels must come with at least one byte per
 * JPEG_BOMB_RATIO pixels. libjpeg fills missing arithmetic-coded (and some
 * progressive) data with zeros without a warning, so a 148-byte file could
 * otherwise make us decode and resample a 16384 x 3082 image (found by
 * fuzzing: tests/fuzz/regressions/image/). Real photographs are far below
 * this ratio (baseline JPEG needs at least 2 bits per 8x8 block). */
#define JPEG_BOMB_PIXELS ((uint64_t)1 << 22)
#define JPEG_BOMB_RATIO 4096

static int too_large(uint64_t h, uint64_t w, char *err, size_t cap) {
    if (h == 0 || w == 0) {
        snprintf(err, cap, "image has no pixels (%llu x %llu)", (unsigned long long)w,
                 (unsigned long long)h);
        return 1;
    }
    if (h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE || h * w > MAX_IMAGE_PIXELS) {
        snprintf(err, cap, "image is %llu x %llu pixels; the limit is %d per side and %llu in all",
                 (unsigned long long)w, (unsigned long long)h, MAX_IMAGE_SIDE,
                 (unsigned long long)MAX_IMAGE_PIXELS);
        return 1;
    }
    return 0;
}

/* ---- PNG ---------------------------------------------------------------- */

typedef struct png_source {
    const unsigned char *data;
    size_t size, pos;
    char *err; /* the caller's buffer: not an automatic of the setjmp frame */
    size_t cap;
} png_source;

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_source *src = png_get_io_ptr(png);
    if (n > src->size - src->pos) png_error(png, "file is truncated");
    memcpy(out, src->data + src->pos, n);
    src->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_source *src = png_get_error_ptr(png);
    snprintf(src->err, src->cap, "corrupt PNG: %s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png; /* ancillary-chunk problems: libpng recovers; stay quiet */
    (void)msg;
}

static int decode_png(const unsigned char *data, size_t size, cli_image *img, char *err,
                      size_t cap) {
    png_source src = {data, size, 0, err, cap};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        snprintf(err, cap, "out of memory");
        return -1;
    }
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return -1; /* err written by png_on_error */
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    if (too_large(h, w, err, cap)) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    const uint16_t one = 1;
    if (depth == 16 && *(const unsigned char *)&one == 1) png_set_swap(png); /* little-endian */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int channels = png_get_channels(png, info);
    const int out_depth = png_get_bit_depth(png, info);
    const size_t rowbytes = png_get_rowbytes(png, info);
    if (channels < 1 || channels > 4 || (out_depth != 8 && out_depth != 16) ||
        rowbytes != (size_t)w * (size_t)channels * (size_t)(out_depth / 8))
        png_error(png, "unexpected pixel layout after expansion");
    pixels = malloc(rowbytes * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL); /* checks the rest of the file up to IEND */
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    img->height = h;
    img->width = w;
    img->channels = channels;
    img->format = out_depth == 16 ? LWFM_PIXEL_U16 : LWFM_PIXEL_U8;
    img->pixels = pixels;
    return 0;
}

/* ---- JPEG --------------------------------------------------------------- */

typedef struct jpeg_errors {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *err; /* the caller's buffer */
    size_t cap;
    int bad_data; /* a warning about corrupt or missing data */
} jpeg_errors;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_errors *e = (jpeg_errors *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, msg);
    snprintf(e->err, e->cap, "corrupt JPEG: %s", msg);
    longjmp(e->jump, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level) {
    jpeg_errors *e = (jpeg_errors *)cinfo->err;
    /* level -1: a warning. Stray bytes between markers are harmless (other
     * decoders accept them); anything else means damaged data. */
    if (level >= 0 || e->bad_data || cinfo->err->msg_code == JWRN_EXTRANEOUS_DATA) return;
    char msg[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, msg);
    snprintf(e->err, e->cap, "corrupt JPEG: %s", msg);
    e->bad_data = 1;
}

static int decode_jpeg(const unsigned char *data, size_t size, cli_image *img, char *err,
                       size_t cap) {
    struct jpeg_decompress_struct cinfo;
    jpeg_errors jerr;
    unsigned char *volatile pixels = NULL;
    memset(&jerr, 0, sizeof jerr);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_on_error;
    jerr.pub.emit_message = jpeg_on_message;
    jerr.err = err;
    jerr.cap = cap;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return -1; /* err written by jpeg_on_error */
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    int channels;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo.out_color_space = JCS_GRAYSCALE;
        channels = 1;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        channels = 3;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        snprintf(err, cap, "CMYK JPEG images are not supported (convert the file to RGB)");
        jpeg_destroy_decompress(&cinfo);
        return -1;
    default:
        snprintf(err, cap, "JPEG colour space %d is not supported (grey and RGB are)",
                 (int)cinfo.jpeg_color_space);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    if (too_large(cinfo.image_height, cinfo.image_width, err, cap)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    const uint64_t declared = (uint64_t)cinfo.image_width * cinfo.image_height;
    if (declared > JPEG_BOMB_PIXELS && declared / size > JPEG_BOMB_RATIO) {
        snprintf(err, cap,
                 "JPEG declares %u x %u pixels but has only %zu bytes (more than %d pixels per "
                 "byte): refused as a decompression bomb",
                 (unsigned)cinfo.image_width, (unsigned)cinfo.image_height, size,
                 JPEG_BOMB_RATIO);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_start_decompress(&cinfo);
    const size_t w = cinfo.output_width, h = cinfo.output_height;
    if (cinfo.output_components != channels) {
        snprintf(err, cap, "unexpected JPEG output (%d components)", cinfo.output_components);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    const size_t stride = w * (size_t)channels;
    pixels = malloc(stride * h);
    if (!pixels) {
        snprintf(err, cap, "out of memory");
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    while (cinfo.output_scanline < h) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * stride;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) break; /* suspension: cannot happen */
        if (jerr.bad_data) break; /* corrupt or missing data: stop now, not after every row */
    }
    if (cinfo.output_scanline == h) jpeg_finish_decompress(&cinfo);
    const int complete = cinfo.output_scanline == h;
    jpeg_destroy_decompress(&cinfo);
    if (!complete || jerr.bad_data) {
        if (!jerr.bad_data) snprintf(err, cap, "corrupt JPEG: decoding stopped early");
        free(pixels);
        return -1;
    }
    img->height = (int64_t)h;
    img->width = (int64_t)w;
    img->channels = channels;
    img->format = LWFM_PIXEL_U8;
    img->pixels = pixels;
    return 0;
}

int image_decode(const unsigned char *data, size_t size, cli_image *img, char *err, size_t cap) {
    static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int rc = -1;
    memset(img, 0, sizeof *img);
    if (!data || size == 0)
        snprintf(err, cap, "empty file, not an image");
    else if (size >= 8 && memcmp(data, kPng, 8) == 0)
        rc = decode_png(data, size, img, err, cap);
    else if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        rc = decode_jpeg(data, size, img, err, cap);
    else
        snprintf(err, cap, "not a PNG or JPEG image (unrecognised file signature)");
    if (rc) memset(img, 0, sizeof *img);
    return rc;
}

void image_free(cli_image *img) {
    free(img->pixels);
    memset(img, 0, sizeof *img);
}
