/* Image decoding from memory: PNG through libpng, JPEG through libjpeg,
 * WebP through libwebp, chosen by the first bytes. Kept apart from image.c (files, folders) so
 * that the fuzz target tests/fuzz/fuzz_image.c links exactly this code.
 *
 * PNG: grey, grey + alpha, RGB, RGBA; palettes expanded to RGB, tRNS to an
 * alpha channel, 1/2/4-bit grey to 8-bit; 16-bit samples kept (native byte
 * order). JPEG: grey and YCbCr/RGB (as RGB); CMYK and other colour spaces
 * are refused. libjpeg's warnings about missing or corrupt data (a
 * truncated file, say) count as errors. WebP: lossy and lossless, as RGB
 * or RGBA (animations: the first frame is refused, as libwebp's simple API
 * does). The EXIF orientation tag (JPEG APP1, PNG eXIf, WebP EXIF chunk) is
 * applied, so that pixels come out as a viewer shows them: only IFD0's
 * Orientation entry is read, by a small bounded parser (exif_orientation).
 * libpng and libjpeg report errors with
 * longjmp: the objects that change after setjmp and are used after it are
 * volatile, and every path frees what it allocated. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

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


/* ---- EXIF orientation ------------------------------------------------------ */

static unsigned rd16(const unsigned char *p, int le) {
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t rd32(const unsigned char *p, int le) {
    return le ? (uint32_t)rd16(p, 1) | (uint32_t)rd16(p + 2, 1) << 16
              : (uint32_t)rd16(p, 0) << 16 | (uint32_t)rd16(p + 2, 0);
}

/* The Orientation (tag 0x0112) of IFD0 of a TIFF-structured EXIF block,
 * optionally preceded by "Exif\0\0"; 1 (as stored) when absent or invalid.
 * Every offset is checked against n before use; at most 512 entries. */
static int exif_orientation(const unsigned char *t, size_t n) {
    if (n >= 6 && memcmp(t, "Exif\0\0", 6) == 0) t += 6, n -= 6;
    if (n < 8) return 1;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd < 8 || ifd > n - 2) return 1;
    unsigned count = rd16(t + ifd, le);
    for (unsigned k = 0; k < count && k < 512; k++) {
        size_t e = (size_t)ifd + 2 + (size_t)k * 12;
        if (e + 12 > n) break;
        if (rd16(t + e, le) != 0x0112) continue;
        /* SHORT (3), count 1: the value sits in the first two bytes */
        if (rd16(t + e + 2, le) != 3 || rd32(t + e + 4, le) != 1) return 1;
        unsigned v = rd16(t + e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Turn img (packed rows) as EXIF orientation `o` says: 2 mirror, 3 rotate
 * 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate
 * 270 clockwise. 0, or -1 with err (out of memory). */
static int apply_orientation(cli_image *img, int o, char *err, size_t cap) {
    if (o <= 1 || o > 8) return 0;
    const size_t H = (size_t)img->height, W = (size_t)img->width;
    const size_t px = (size_t)img->channels * (img->format == LWFM_PIXEL_U16 ? 2 : 1);
    const int swap = o >= 5;
    const size_t oh = swap ? W : H, ow = swap ? H : W;
    unsigned char *out = malloc(H * W * px);
    if (!out) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    const unsigned char *in = img->pixels;
    for (size_t y = 0; y < oh; y++) {
        for (size_t x = 0; x < ow; x++) {
            size_t sy, sx;
            switch (o) {
            case 2:
                sy = y, sx = W - 1 - x;
                break;
            case 3:
                sy = H - 1 - y, sx = W - 1 - x;
                break;
            case 4:
                sy = H - 1 - y, sx = x;
                break;
            case 5:
                sy = x, sx = y;
                break;
            case 6:
                sy = H - 1 - x, sx = y;
                break;
            case 7:
                sy = H - 1 - x, sx = W - 1 - y;
                break;
            default: /* 8 */
                sy = x, sx = W - 1 - y;
                break;
            }
            memcpy(out + (y * ow + x) * px, in + (sy * W + sx) * px, px);
        }
    }
    free(img->pixels);
    img->pixels = out;
    img->height = (int64_t)oh;
    img->width = (int64_t)ow;
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

static int decode_png(const unsigned char *data, size_t size, cli_image *img, char *err, size_t cap,
                      int header_only) {
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
    if (header_only) {
        png_destroy_read_struct(&png, &info, NULL);
        return 0;
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
    png_read_end(png, info); /* checks the rest of the file up to IEND */
    int orientation = 1;
#ifdef PNG_eXIf_SUPPORTED
    png_bytep exif = NULL;
    png_uint_32 exif_len = 0;
    if (png_get_eXIf_1(png, info, &exif_len, &exif) && exif)
        orientation = exif_orientation(exif, exif_len);
#endif
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    img->height = h;
    img->width = w;
    img->channels = channels;
    img->format = out_depth == 16 ? LWFM_PIXEL_U16 : LWFM_PIXEL_U8;
    img->pixels = pixels;
    return apply_orientation(img, orientation, err, cap);
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

/* The EXIF orientation of the saved APP1 markers (1 without one). */
static int jpeg_orientation(const struct jpeg_decompress_struct *cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0)
            return exif_orientation(m->data, m->data_length);
    }
    return 1;
}

/* The header read: the colour space (grey or RGB output, *channels), the
 * size limits, the decompression-bomb ratio. 0, or -1 with the reason in
 * err. Reads cinfo's fields only (no libjpeg call, so no longjmp). */
static int jpeg_check_header(struct jpeg_decompress_struct *cinfo, size_t size, int *channels,
                             char *err, size_t cap) {
    switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo->out_color_space = JCS_GRAYSCALE;
        *channels = 1;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo->out_color_space = JCS_RGB;
        *channels = 3;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        snprintf(err, cap, "CMYK JPEG images are not supported (convert the file to RGB)");
        return -1;
    default:
        snprintf(err, cap, "JPEG colour space %d is not supported (grey and RGB are)",
                 (int)cinfo->jpeg_color_space);
        return -1;
    }
    if (too_large(cinfo->image_height, cinfo->image_width, err, cap)) return -1;
    const uint64_t declared = (uint64_t)cinfo->image_width * cinfo->image_height;
    if (declared > JPEG_BOMB_PIXELS && declared / size > JPEG_BOMB_RATIO) {
        snprintf(err, cap,
                 "JPEG declares %u x %u pixels but has only %zu bytes (more than %d pixels per "
                 "byte): refused as a decompression bomb",
                 (unsigned)cinfo->image_width, (unsigned)cinfo->image_height, size,
                 JPEG_BOMB_RATIO);
        return -1;
    }
    return 0;
}

static int decode_jpeg(const unsigned char *data, size_t size, cli_image *img, char *err,
                       size_t cap, int header_only) {
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
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff); /* APP1: EXIF */
    jpeg_read_header(&cinfo, TRUE);
    int orientation = jpeg_orientation(&cinfo), channels;
    if (jpeg_check_header(&cinfo, size, &channels, err, cap)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    if (header_only) {
        jpeg_destroy_decompress(&cinfo);
        return 0;
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
    return apply_orientation(img, orientation, err, cap);
}

/* ---- WebP --------------------------------------------------------------- */

/* The orientation in the EXIF chunk of a RIFF WebP container; 1 without. */
static int webp_orientation(const unsigned char *data, size_t size) {
    size_t pos = 12;
    while (size >= 8 && pos <= size - 8) {
        const uint32_t len = rd32(data + pos + 4, 1);
        if (len > size - pos - 8) break;
        if (memcmp(data + pos, "EXIF", 4) == 0) return exif_orientation(data + pos + 8, len);
        pos += 8 + (size_t)len + (len & 1);
    }
    return 1;
}

static const char *webp_status(VP8StatusCode st) {
    switch (st) {
    case VP8_STATUS_OUT_OF_MEMORY:
        return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
        return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
        return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return "unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA:
        return "file is truncated";
    default:
        return "cannot decode";
    }
}

static int decode_webp(const unsigned char *data, size_t size, cli_image *img, char *err,
                       size_t cap, int header_only) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, size, &f);
    if (st != VP8_STATUS_OK) {
        snprintf(err, cap, "corrupt WebP: %s", webp_status(st));
        return -1;
    }
    if (f.has_animation) {
        snprintf(err, cap, "animated WebP images are not supported");
        return -1;
    }
    if (too_large((uint64_t)f.height, (uint64_t)f.width, err, cap)) return -1;
    const uint64_t declared = (uint64_t)f.width * (uint64_t)f.height;
    if (declared > JPEG_BOMB_PIXELS && declared / size > JPEG_BOMB_RATIO) {
        snprintf(err, cap,
                 "WebP declares %d x %d pixels but has only %zu bytes (more than %d pixels per "
                 "byte): refused as a decompression bomb",
                 f.width, f.height, size, JPEG_BOMB_RATIO);
        return -1;
    }
    if (header_only) return 0;
    const int channels = f.has_alpha ? 4 : 3;
    const size_t stride = (size_t)f.width * (size_t)channels, bytes = stride * (size_t)f.height;
    unsigned char *pixels = malloc(bytes);
    if (!pixels) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    const uint8_t *got = f.has_alpha ? WebPDecodeRGBAInto(data, size, pixels, bytes, (int)stride)
                                     : WebPDecodeRGBInto(data, size, pixels, bytes, (int)stride);
    if (!got) {
        snprintf(err, cap, "corrupt WebP: cannot decode the image data");
        free(pixels);
        return -1;
    }
    img->height = f.height;
    img->width = f.width;
    img->channels = channels;
    img->format = LWFM_PIXEL_U8;
    img->pixels = pixels;
    return apply_orientation(img, webp_orientation(data, size), err, cap);
}

static int decode_any(const unsigned char *data, size_t size, cli_image *img, char *err, size_t cap,
                      int header_only) {
    static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int rc = -1;
    memset(img, 0, sizeof *img);
    err[0] = '\0';
    if (!data || size == 0)
        snprintf(err, cap, "empty file, not an image");
    else if (size >= 8 && memcmp(data, kPng, 8) == 0)
        rc = decode_png(data, size, img, err, cap, header_only);
    else if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        rc = decode_jpeg(data, size, img, err, cap, header_only);
    else if (size >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        rc = decode_webp(data, size, img, err, cap, header_only);
    else if (size >= 2 && memcmp(data, "BM", 2) == 0)
        snprintf(err, cap, "BMP images are not supported (PNG, JPEG and WebP are)");
    else if (size >= 4 && memcmp(data, "GIF8", 4) == 0)
        snprintf(err, cap, "GIF images are not supported (PNG, JPEG and WebP are)");
    else if (size >= 4 && (memcmp(data, "II*\0", 4) == 0 || memcmp(data, "MM\0*", 4) == 0))
        snprintf(err, cap, "TIFF images are not supported (PNG, JPEG and WebP are)");
    else if (size >= 12 && memcmp(data + 4, "ftyp", 4) == 0)
        snprintf(err, cap, "HEIF/AVIF images are not supported (PNG, JPEG and WebP are)");
    else
        snprintf(err, cap, "not a PNG, JPEG or WebP image (unrecognised file signature)");
    if (rc) {
        free(img->pixels);
        memset(img, 0, sizeof *img);
    }
    return rc;
}

int image_check(const unsigned char *data, size_t size, char *err, size_t cap) {
    cli_image img;
    return decode_any(data, size, &img, err, cap, 1);
}

int image_decode(const unsigned char *data, size_t size, cli_image *img, char *err, size_t cap) {
    return decode_any(data, size, img, err, cap, 0);
}

void image_free(cli_image *img) {
    free(img->pixels);
    memset(img, 0, sizeof *img);
}
