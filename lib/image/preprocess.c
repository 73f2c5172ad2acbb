/* Decoded pixels -> one normalised model input (lwfm_model_preprocess).
 *
 * The arithmetic follows lwfm.episodes.preprocess (NumPy + PyTorch) step by
 * step in single precision, including how PyTorch's antialiased bilinear
 * kernel (aten upsample_bilinear2d_aa, the same filter as PIL's) computes
 * its scale, filter centres and normalised weights in float: computing those
 * in double instead moves results by up to ~1e-5 when enlarging. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model.h"

/* Largest accepted side, in pixels. */
#define MAX_SIDE ((int64_t)INT32_MAX)

/* Resampling weights of one axis for the output indices [first, first + n):
 * output i reads input [start[i], start[i] + taps[i]) with weights
 * w[i * stride ...]. */
typedef struct axis_weights {
    int64_t *start;
    int *taps;
    float *w;
    int stride;
} axis_weights;

static void axis_free(axis_weights *a) {
    free(a->start);
    free(a->taps);
    free(a->w);
    memset(a, 0, sizeof *a);
}

/* PyTorch's triangle filter (interp_size 2). */
static float triangle(float x) {
    if (x < 0.0f) x = -x;
    return x < 1.0f ? 1.0f - x : 0.0f;
}

/* Weights resampling `in_size` samples to `out_size`, for the n outputs
 * starting at `first`. Mirrors aten's _compute_weights_aa for
 * align_corners=False, antialias=True, scalar_t = float. */
static lwfm_status axis_init(axis_weights *a, int64_t in_size, int64_t out_size, int64_t first,
                             int64_t n) {
    memset(a, 0, sizeof *a);
    const float scale = (float)in_size / (float)out_size;
    const float support = scale >= 1.0f ? scale : 1.0f; /* (interp_size / 2) * scale */
    const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    /* Taps per output: at most the window's width rounded up, plus one. */
    double span = ceil((double)support) * 2.0 + 1.0;
    int stride = span < (double)in_size ? (int)span : (int)in_size;
    size_t nw;
    if (lwfm__mul_size((size_t)n, (size_t)stride, &nw) || lwfm__mul_size(nw, sizeof(float), &nw))
        return lwfm__error(LWFM_ERR_LIMIT, "resampling weights overflow");
    a->start = malloc((size_t)n * sizeof *a->start);
    a->taps = malloc((size_t)n * sizeof *a->taps);
    a->w = malloc(nw ? nw : 1);
    a->stride = stride;
    if (!a->start || !a->taps || !a->w) {
        axis_free(a);
        return lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "out of memory for resampling weights");
    }
    for (int64_t k = 0; k < n; k++) {
        const int64_t i = first + k;
        const float center = (float)((double)scale * ((double)i + 0.5));
        int64_t xmin = (int64_t)((double)(center - support) + 0.5);
        if (xmin < 0) xmin = 0;
        int64_t xmax = (int64_t)((double)(center + support) + 0.5);
        if (xmax > in_size) xmax = in_size;
        int64_t xsize = xmax - xmin;
        if (xsize > stride) xsize = stride; /* cannot happen; keeps writes in bounds */
        if (xsize < 0) xsize = 0;
        float *w = a->w + (size_t)k * (size_t)stride;
        float total = 0.0f;
        for (int64_t j = 0; j < xsize; j++) {
            const float d = (float)(j + xmin) - center;
            w[j] = triangle((float)(((double)d + 0.5) * (double)invscale));
            total += w[j];
        }
        for (int64_t j = 0; j < xsize; j++) w[j] = total != 0.0f ? w[j] / total : 0.0f;
        a->start[k] = xmin;
        a->taps[k] = (int)xsize;
    }
    return LWFM_OK;
}

/* Sample of channel ch of pixel x in a row, scaled to [0, 1]. */
static inline float sample(const unsigned char *row, lwfm_pixel_format format, int64_t x,
                           int64_t channels, int64_t ch) {
    if (format == LWFM_PIXEL_U8) return (float)row[x * channels + ch] / 255.0f;
    uint16_t v;
    memcpy(&v, row + (size_t)(x * channels + ch) * 2, sizeof v); /* any alignment */
    return (float)v / 65535.0f;
}

/* One input row -> `width` pixels of `out_ch` floats: scaled, alpha
 * composited over white, converted to the model's channel count. */
static void convert_row(const unsigned char *row, lwfm_pixel_format format, int64_t width,
                        int64_t channels, int out_ch, float *dst) {
    const int has_alpha = channels == 2 || channels == 4;
    const int colour = channels >= 3;
    for (int64_t x = 0; x < width; x++) {
        float v[3];
        int n = colour ? 3 : 1;
        for (int c = 0; c < n; c++) v[c] = sample(row, format, x, channels, c);
        if (has_alpha) {
            const float alpha = sample(row, format, x, channels, channels - 1);
            const float white = 1.0f - alpha;
            for (int c = 0; c < n; c++) v[c] = v[c] * alpha + white;
        }
        float *d = dst + x * out_ch;
        if (out_ch == n) {
            for (int c = 0; c < n; c++) d[c] = v[c];
        } else if (out_ch == 1) { /* RGB -> luma */
            d[0] = 0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2];
        } else { /* grey -> every channel */
            for (int c = 0; c < out_ch; c++) d[c] = v[0];
        }
    }
}

/* round(d / 2) with halves to even (Python's round, torchvision's crop). */
static int64_t centre_offset(int64_t d) {
    int64_t half = d / 2;
    if (d % 2 != 0 && half % 2 != 0) half += 1;
    return half;
}

LWFM_API lwfm_status lwfm_model_preprocess(const lwfm_model *model, const void *pixels,
                                           lwfm_pixel_format format, int64_t height, int64_t width,
                                           int64_t channels, int64_t row_stride_bytes, float *out,
                                           size_t out_count) {
    lwfm__error_clear();
    if (!model) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "preprocess: model is NULL");
    if (!pixels) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "preprocess: pixels is NULL");
    if (!out) return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "preprocess: out is NULL");
    if (format != LWFM_PIXEL_U8 && format != LWFM_PIXEL_U16)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "preprocess: unknown pixel format %d (LWFM_PIXEL_U8 = 0, "
                           "LWFM_PIXEL_U16 = 1)",
                           (int)format);
    if (height < 1 || width < 1)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "preprocess: image size %lld x %lld (height x width) must be "
                           "positive",
                           (long long)height, (long long)width);
    if (channels < 1 || channels > 4)
        return lwfm__error(LWFM_ERR_SHAPE,
                           "preprocess: %lld channels; images have 1 (grey), 2 (grey + alpha), "
                           "3 (RGB) or 4 (RGBA)",
                           (long long)channels);
    if (height > MAX_SIDE || width > MAX_SIDE)
        return lwfm__error(LWFM_ERR_LIMIT,
                           "preprocess: image size %lld x %lld exceeds the limit of %lld pixels "
                           "per side",
                           (long long)height, (long long)width, (long long)MAX_SIDE);
    const size_t bps = format == LWFM_PIXEL_U8 ? 1 : 2;
    size_t packed, span;
    if (lwfm__mul_size((size_t)width, (size_t)channels * bps, &packed))
        return lwfm__error(LWFM_ERR_LIMIT, "preprocess: row of %lld pixels overflows",
                           (long long)width);
    if (row_stride_bytes < 0)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "preprocess: row stride %lld is negative",
                           (long long)row_stride_bytes);
    size_t stride = row_stride_bytes == 0 ? packed : (size_t)row_stride_bytes;
    if (stride < packed)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "preprocess: row stride of %lld bytes is shorter than a row "
                           "(%lld pixels x %lld channels x %zu bytes = %zu)",
                           (long long)row_stride_bytes, (long long)width, (long long)channels, bps,
                           packed);
    if (lwfm__mul_size(stride, (size_t)(height - 1), &span) || lwfm__add_size(span, packed, &span))
        return lwfm__error(LWFM_ERR_LIMIT, "preprocess: image of %lld rows of %zu bytes overflows",
                           (long long)height, stride);

    const lwfm__config *cfg = &model->cfg;
    const int out_ch = cfg->input_channels;
    const int64_t size = cfg->image_size;
    const int64_t resize = cfg->resize > 0 ? cfg->resize : size;
    if (out_ch != 1 && out_ch != 3)
        return lwfm__error(LWFM_ERR_UNSUPPORTED,
                           "preprocess: the model takes %d-channel images; only 1 (grey) and 3 "
                           "(RGB) are defined",
                           out_ch);
    const size_t plane = (size_t)size * (size_t)size;
    const size_t needed = (size_t)out_ch * plane;
    if (out_count < needed)
        return lwfm__error(LWFM_ERR_BUFFER_TOO_SMALL,
                           "preprocess: output holds %zu floats, the model's input "
                           "(%d x %lld x %lld) needs %zu",
                           out_count, out_ch, (long long)size, (long long)size, needed);

    const int64_t top = centre_offset(resize - size); /* resize >= size (config check) */
    axis_weights ax = {0}, ay = {0};
    lwfm_status st = LWFM_OK;
    float *row = NULL, *tmp = NULL;
    size_t row_n, tmp_n;
    /* tmp: every input row resampled horizontally, the crop's columns only
     * (height x size x out_ch floats). */
    if (lwfm__mul_size((size_t)width, (size_t)out_ch * sizeof(float), &row_n) ||
        lwfm__mul_size((size_t)height, (size_t)size * (size_t)out_ch * sizeof(float), &tmp_n))
        return lwfm__error(LWFM_ERR_LIMIT, "preprocess: image of %lld x %lld overflows scratch",
                           (long long)height, (long long)width);
    row = malloc(row_n);
    tmp = malloc(tmp_n);
    if (!row || !tmp) {
        st =
            lwfm__error(LWFM_ERR_OUT_OF_MEMORY, "preprocess: out of memory for a %lld x %lld image",
                        (long long)height, (long long)width);
        goto done;
    }
    /* An axis that already has the resize length is copied (PyTorch skips
     * the resize when both match; for one axis its weights are the identity). */
    if (width != resize && (st = axis_init(&ax, width, resize, top, size))) goto done;
    if (height != resize && (st = axis_init(&ay, height, resize, top, size))) goto done;

    /* Horizontal pass (PyTorch resamples the contiguous axis first). */
    for (int64_t y = 0; y < height; y++) {
        const unsigned char *src = (const unsigned char *)pixels + (size_t)y * stride;
        convert_row(src, format, width, channels, out_ch, row);
        float *dst = tmp + (size_t)y * (size_t)size * (size_t)out_ch;
        for (int64_t k = 0; k < size; k++) {
            if (!ax.w) { /* width already right: copy the crop's columns */
                for (int c = 0; c < out_ch; c++) dst[k * out_ch + c] = row[(top + k) * out_ch + c];
                continue;
            }
            const float *w = ax.w + (size_t)k * (size_t)ax.stride;
            const float *s = row + ax.start[k] * out_ch;
            for (int c = 0; c < out_ch; c++) {
                float acc = 0.0f;
                for (int j = 0; j < ax.taps[k]; j++) acc += w[j] * s[j * out_ch + c];
                dst[k * out_ch + c] = acc;
            }
        }
    }
    /* Vertical pass, crop rows only, then normalisation into CHW. */
    for (int c = 0; c < out_ch; c++) {
        const float mean = (float)cfg->mean[cfg->n_norm == 1 ? 0 : c];
        const float sd = (float)cfg->std[cfg->n_norm == 1 ? 0 : c];
        for (int64_t k = 0; k < size; k++) {
            float *dst = out + (size_t)c * plane + (size_t)k * (size_t)size;
            for (int64_t x = 0; x < size; x++) {
                float v;
                if (!ay.w) {
                    v = tmp[((size_t)(top + k) * (size_t)size + (size_t)x) * out_ch + c];
                } else {
                    const float *w = ay.w + (size_t)k * (size_t)ay.stride;
                    const float *s =
                        tmp + ((size_t)ay.start[k] * (size_t)size + (size_t)x) * out_ch + c;
                    const size_t step = (size_t)size * (size_t)out_ch;
                    v = 0.0f;
                    for (int j = 0; j < ay.taps[k]; j++) v += w[j] * s[(size_t)j * step];
                }
                dst[x] = (v - mean) / sd;
            }
        }
    }
done:
    axis_free(&ax);
    axis_free(&ay);
    free(row);
    free(tmp);
    return st;
}
