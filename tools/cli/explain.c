/* `lwfm classify --explain DIR`: one PNG per query showing why an LWFM-SPM
 * or RCN model chose its class (docs/cli.md, "Explanations").
 *
 * Per query: the predicted class's support image with the highest pair
 * score. LWFM-SPM: the SPM score of lwfm_spm_pair(), or the attended global
 * similarity of lwfm_lwe_pair() when the model has SPM off; the layer with
 * the highest SPM layer score (layer 0 without SPM). The picture: the
 * support image (left) and the query (right), each resized to S x S, under a
 * heat map of that layer's attention weights, with the Hungarian matches of
 * that layer drawn from panel to panel; above them the support's class and
 * file, the query's file, the predicted class and the runner-up with their
 * probabilities; below them labelled colour bars.
 * RCN (peers.md 4.8): the pair term e = sum_r w_r sim_r of lwfm_rcn_pair();
 * the support panel shows a_r = w_r sim_r (how much each support region adds
 * to e), the query panel the a_r max-scattered into each region's matched
 * query cell, and lines join every support region with a_r > 0 to its match
 * (the RCN_LINES largest drawn bold).
 *
 * Only the public API is used. The heat maps are computed per pixel; the
 * lines, discs, colour bars and words are drawn with cairo (text through
 * fontconfig: DejaVu Sans), and cairo writes the PNG into a temporary file
 * in DIR, renamed into place once complete. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cairo.h>

#include "cli.h"

enum {
    PANEL = 192, /* S: side of each panel */
    GAP = 24,    /* between the panels */
    HEAD = 48,   /* three lines of words above the panels */
    STRIP = 44,  /* labelled colour bars at the bottom */
    CANVAS_W = 2 * PANEL + GAP,
    CANVAS_H = HEAD + PANEL + STRIP
};
#define FONT "DejaVu Sans"
#define FONT_SIZE 11.0
#define HEAT_ALPHA 0.45f
#define RCN_LINES 5 /* RCN: bold lines for the regions adding most to the pair term */

struct explainer {
    lwfm_model *model;
    lwfm_lwe *lwe;
    lwfm_spm *spm; /* NULL: SPM off (or an RCN model) */
    lwfm_rcn *rcn; /* RCN models: the region comparison, else NULL */
    char *dir;
    int64_t c, h, w;    /* model input */
    int64_t fc, fh, fw; /* feature map */
    int64_t layers, top_k;
    size_t feat;         /* floats per feature map */
    float *sup_feat;     /* n_support feature maps, computed on first use */
    unsigned char *have; /* per support image: sup_feat filled */
    int64_t n_support;
    float *q_feat;
    float *ws, *wq, *sim, *layer_scores; /* L * P each (layer_scores: L) */
    float *best_ws, *best_wq, *best_sim, *best_layers;
    int64_t *assign, *best_assign;
    cairo_surface_t *canvas; /* CANVAS_W x CANVAS_H, RGB24 */
};

/* ---- setup ----------------------------------------------------------------- */

/* mkdir -p; 0 or -1 with errno set. */
static int make_dirs(const char *dir) {
    char *p = str_dup(dir);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            errno = e;
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
    int e = errno;
    free(p);
    errno = e;
    if (rc) return -1;
    struct stat sb;
    if (stat(dir, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return access(dir, W_OK | X_OK);
}

/* The model configuration's top_k (1 when the model has none). */
static int64_t config_top_k(const lwfm_model *model) {
    int64_t k = 1;
    if (lwfm_model_config_int(model, "top_k", &k) != LWFM_OK || k < 1) k = 1;
    return k;
}

void explain_close(explainer *ex) {
    if (!ex) return;
    lwfm_spm_destroy(ex->spm);
    lwfm_lwe_destroy(ex->lwe);
    lwfm_rcn_destroy(ex->rcn);
    free(ex->dir);
    free(ex->sup_feat);
    free(ex->have);
    free(ex->q_feat);
    free(ex->ws);
    free(ex->assign);
    if (ex->canvas) cairo_surface_destroy(ex->canvas);
    free(ex);
}

/* The pair view a model offers decides the drawing: the LWE (+ SPM) view of
 * an lwfm-spm model, or RCN's relation view; the library says which by
 * refusing the other with LWFM_ERR_WRONG_KIND (no list of methods here). */
static lwfm_status open_view(explainer *ex, lwfm_model *model) {
    lwfm_status st = lwfm_lwe_create(&ex->lwe, model);
    if (st == LWFM_ERR_WRONG_KIND) st = lwfm_rcn_create(&ex->rcn, model);
    return st;
}

int explain_open(explainer **out, lwfm_model *model, const char *model_path, const char *dir) {
    *out = NULL;
    explainer *ex = calloc(1, sizeof *ex);
    if (!ex) {
        cli_error("--explain", NULL, "out of memory");
        return -1;
    }
    ex->model = model;
    lwfm_status st = open_view(ex, model);
    if (st == LWFM_ERR_WRONG_KIND) {
        cli_error("--explain", model_path,
                  "explanations are available for lwfm-spm and rcn models; this model is %s",
                  lwfm_method_name(lwfm_model_method(model)));
        explain_close(ex);
        return -1;
    }
    if (st) {
        cli_error("--explain", model_path, "%s", lwfm_last_error());
        explain_close(ex);
        return -1;
    }
    st = ex->rcn ? LWFM_ERR_WRONG_KIND : lwfm_spm_create(&ex->spm, model);
    if (st == LWFM_ERR_WRONG_KIND) {
        ex->spm = NULL; /* matcher_prob 0: SPM off */
    } else if (st) {
        cli_error("--explain", model_path, "%s", lwfm_last_error());
        explain_close(ex);
        return -1;
    }
    lwfm_model_input_shape(model, &ex->c, &ex->h, &ex->w);
    st = lwfm_model_feature_shape(model, ex->h, ex->w, &ex->fc, &ex->fh, &ex->fw);
    if (st) {
        cli_error("--explain", model_path, "%s", lwfm_last_error());
        explain_close(ex);
        return -1;
    }
    ex->layers = ex->rcn ? 1 : lwfm_model_layers(model);
    ex->top_k = config_top_k(model);
    ex->feat = (size_t)(ex->fc * ex->fh * ex->fw);
    const size_t lp = (size_t)(ex->layers * ex->fh * ex->fw);
    /* ws, wq, sim, best_ws, best_wq, best_sim: L * P; layer_scores, best_layers: L */
    ex->ws = malloc((6 * lp + 2 * (size_t)ex->layers) * sizeof(float));
    ex->assign = malloc(2 * lp * sizeof(int64_t) + lp); /* + RCN's scratch flags */
    ex->q_feat = malloc(ex->feat * sizeof(float));
    ex->canvas = cairo_image_surface_create(CAIRO_FORMAT_RGB24, CANVAS_W, CANVAS_H);
    if (cairo_surface_status(ex->canvas) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(ex->canvas);
        ex->canvas = NULL;
    }
    if (!ex->ws || !ex->assign || !ex->q_feat || !ex->canvas) {
        cli_error("--explain", NULL, "out of memory");
        explain_close(ex);
        return -1;
    }
    ex->wq = ex->ws + lp;
    ex->sim = ex->wq + lp;
    ex->best_ws = ex->sim + lp;
    ex->best_wq = ex->best_ws + lp;
    ex->best_sim = ex->best_wq + lp;
    ex->layer_scores = ex->best_sim + lp;
    ex->best_layers = ex->layer_scores + ex->layers;
    ex->best_assign = ex->assign + lp;
    if (make_dirs(dir) != 0) {
        cli_error("cannot create the explanation folder", dir, "%s", strerror(errno));
        explain_close(ex);
        return -1;
    }
    ex->dir = str_dup(dir);
    *out = ex;
    return 0;
}

/* ---- the original images, resized ----------------------------------------- */

/* Pixel (y, x) of a decoded image as RGB in [0, 1], alpha over white. */
static void pixel_rgb(const cli_image *img, int64_t y, int64_t x, float rgb[3]) {
    const int64_t ch = img->channels;
    const size_t at = ((size_t)y * (size_t)img->width + (size_t)x) * (size_t)ch;
    float v[4] = {0, 0, 0, 1};
    if (img->format == LWFM_PIXEL_U16) {
        const uint16_t *p = (const uint16_t *)img->pixels + at;
        for (int64_t k = 0; k < ch; k++) v[k] = p[k] / 65535.0f;
    } else {
        const uint8_t *p = (const uint8_t *)img->pixels + at;
        for (int64_t k = 0; k < ch; k++) v[k] = p[k] / 255.0f;
    }
    float a = 1.0f;
    if (ch == 1 || ch == 2) {
        rgb[0] = rgb[1] = rgb[2] = v[0];
        if (ch == 2) a = v[1];
    } else {
        rgb[0] = v[0];
        rgb[1] = v[1];
        rgb[2] = v[2];
        if (ch == 4) a = v[3];
    }
    for (int k = 0; k < 3; k++) rgb[k] = rgb[k] * a + 1.0f - a;
}

/* Resampling taps along one axis, n source samples to PANEL: bilinear
 * (centres aligned) when enlarging, area averaging when shrinking. */
typedef struct taps {
    int64_t start[PANEL];
    int count[PANEL];
    int per; /* weights stored per output sample */
    float *weight;
} taps;

static int taps_make(taps *t, int64_t n) {
    const double s = (double)n / PANEL;
    t->per = s > 1.0 ? (int)ceil(s) + 2 : 2;
    t->weight = malloc((size_t)PANEL * (size_t)t->per * sizeof(float));
    if (!t->weight) return -1;
    for (int o = 0; o < PANEL; o++) {
        float *w = t->weight + (size_t)o * (size_t)t->per;
        if (s > 1.0) {
            const double lo = o * s, hi = (o + 1) * s;
            int64_t i0 = (int64_t)floor(lo), i1 = (int64_t)ceil(hi);
            if (i1 > n) i1 = n;
            if (i1 - i0 > t->per) i1 = i0 + t->per; /* cannot happen */
            double sum = 0.0;
            for (int64_t i = i0; i < i1; i++) {
                double cover = fmin((double)(i + 1), hi) - fmax((double)i, lo);
                w[i - i0] = (float)(cover > 0 ? cover : 0);
                sum += w[i - i0];
            }
            for (int64_t i = i0; i < i1; i++) w[i - i0] = (float)(w[i - i0] / sum);
            t->start[o] = i0;
            t->count[o] = (int)(i1 - i0);
        } else {
            double c = (o + 0.5) * s - 0.5;
            if (c < 0) c = 0;
            if (c > (double)(n - 1)) c = (double)(n - 1);
            int64_t i0 = (int64_t)floor(c);
            double f = c - (double)i0;
            t->start[o] = i0;
            if (i0 + 1 < n) {
                t->count[o] = 2;
                w[0] = (float)(1.0 - f);
                w[1] = (float)f;
            } else {
                t->count[o] = 1;
                w[0] = 1.0f;
            }
        }
    }
    return 0;
}

/* img resized to PANEL x PANEL RGB floats (out: PANEL * PANEL * 3). */
static int resize_panel(const cli_image *img, float *out) {
    taps ty = {0}, tx = {0};
    if (taps_make(&ty, img->height) || taps_make(&tx, img->width)) {
        free(ty.weight);
        free(tx.weight);
        return -1;
    }
    for (int oy = 0; oy < PANEL; oy++) {
        const float *wy = ty.weight + (size_t)oy * (size_t)ty.per;
        for (int ox = 0; ox < PANEL; ox++) {
            const float *wx = tx.weight + (size_t)ox * (size_t)tx.per;
            float acc[3] = {0, 0, 0}, rgb[3];
            for (int j = 0; j < ty.count[oy]; j++)
                for (int i = 0; i < tx.count[ox]; i++) {
                    pixel_rgb(img, ty.start[oy] + j, tx.start[ox] + i, rgb);
                    const float w = wy[j] * wx[i];
                    for (int k = 0; k < 3; k++) acc[k] += w * rgb[k];
                }
            float *o = out + ((size_t)oy * PANEL + (size_t)ox) * 3;
            for (int k = 0; k < 3; k++) o[k] = acc[k];
        }
    }
    free(ty.weight);
    free(tx.weight);
    return 0;
}

/* ---- drawing ------------------------------------------------------------------ */

/* Viridis, 5 stops. */
static void colormap(float t, float rgb[3]) {
    static const float stops[5][3] = {
        {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float x = t * 4.0f;
    int i = (int)x;
    if (i > 3) i = 3;
    float f = x - (float)i;
    for (int k = 0; k < 3; k++) rgb[k] = ((1 - f) * stops[i][k] + f * stops[i + 1][k]) / 255.0f;
}

/* Matched similarity in [0, 1] -> red, yellow, green. */
static void match_colour(float t, float rgb[3]) {
    static const float stops[3][3] = {{215, 38, 38}, {235, 200, 30}, {30, 170, 60}};
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float x = t * 2.0f;
    int i = x >= 1.0f ? 1 : 0;
    float f = x - (float)i;
    for (int k = 0; k < 3; k++) rgb[k] = ((1 - f) * stops[i][k] + f * stops[i + 1][k]) / 255.0f;
}

static unsigned char to_u8(float v) {
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return (unsigned char)lrintf(v * 255.0f);
}

/* One panel at column x0 (below the words): image plus the fh x fw weights
 * as a heat map, written into the surface's pixels. */
static void draw_panel(cairo_surface_t *canvas, int x0, const float *image, const float *weights,
                       int64_t fh, int64_t fw) {
    float lo = weights[0], hi = weights[0];
    for (int64_t i = 1; i < fh * fw; i++) {
        lo = weights[i] < lo ? weights[i] : lo;
        hi = weights[i] > hi ? weights[i] : hi;
    }
    const float range = hi - lo;
    cairo_surface_flush(canvas);
    unsigned char *data = cairo_image_surface_get_data(canvas);
    const int stride = cairo_image_surface_get_stride(canvas);
    for (int y = 0; y < PANEL; y++) {
        float gy = (y + 0.5f) * (float)fh / PANEL - 0.5f;
        gy = gy < 0 ? 0 : gy > (float)(fh - 1) ? (float)(fh - 1) : gy;
        int64_t y0 = (int64_t)gy, y1 = y0 + 1 < fh ? y0 + 1 : y0;
        float fy = gy - (float)y0;
        uint32_t *row = (uint32_t *)(data + (size_t)(HEAD + y) * (size_t)stride);
        for (int x = 0; x < PANEL; x++) {
            float gx = (x + 0.5f) * (float)fw / PANEL - 0.5f;
            gx = gx < 0 ? 0 : gx > (float)(fw - 1) ? (float)(fw - 1) : gx;
            int64_t x0g = (int64_t)gx, x1g = x0g + 1 < fw ? x0g + 1 : x0g;
            float fx = gx - (float)x0g;
            float v = (1 - fy) * ((1 - fx) * weights[y0 * fw + x0g] + fx * weights[y0 * fw + x1g]) +
                      fy * ((1 - fx) * weights[y1 * fw + x0g] + fx * weights[y1 * fw + x1g]);
            float t = range > 0 ? (v - lo) / range : 0.5f;
            float heat[3];
            colormap(t, heat);
            const float *im = image + ((size_t)y * PANEL + (size_t)x) * 3;
            unsigned char c[3];
            for (int k = 0; k < 3; k++)
                c[k] = to_u8((1 - HEAT_ALPHA) * im[k] + HEAT_ALPHA * heat[k]);
            row[x0 + x] = (uint32_t)c[0] << 16 | (uint32_t)c[1] << 8 | c[2]; /* RGB24 */
        }
    }
    cairo_surface_mark_dirty(canvas);
}

static void set_rgb(cairo_t *cr, const float rgb[3]) {
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
}

static void draw_segment(cairo_t *cr, float xa, float ya, float xb, float yb, float width,
                         const float rgb[3]) {
    cairo_set_line_width(cr, width);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    set_rgb(cr, rgb);
    cairo_move_to(cr, xa, ya);
    cairo_line_to(cr, xb, yb);
    cairo_stroke(cr);
}

static void draw_disc(cairo_t *cr, float cx, float cy, float radius, const float rgb[3]) {
    set_rgb(cr, rgb);
    cairo_new_sub_path(cr);
    cairo_arc(cr, cx, cy, radius, 0, 2 * M_PI);
    cairo_fill(cr);
}

static void cell_centre(int64_t pos, int64_t fh, int64_t fw, int x0, float *x, float *y) {
    *x = (float)x0 + ((float)(pos % fw) + 0.5f) * PANEL / (float)fw;
    *y = HEAD + ((float)(pos / fw) + 0.5f) * PANEL / (float)fh;
}

/* `text` at (x, baseline y), at most `room` pixels wide (shortened with an
 * ellipsis); align 0 left, 1 centre, 2 right of x. */
static void draw_text(cairo_t *cr, const char *text, double x, double y, double room, int align,
                      int bold, double grey) {
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, FONT_SIZE);
    cairo_set_source_rgb(cr, grey, grey, grey);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    cairo_text_extents_t te;
    cairo_text_extents(cr, buf, &te);
    size_t n = strlen(buf);
    while (te.x_advance > room && n > 1) { /* drop UTF-8 characters from the end */
        do n--;
        while (n > 0 && ((unsigned char)buf[n] & 0xc0) == 0x80);
        snprintf(buf + n, sizeof buf - n, "\xe2\x80\xa6"); /* ... */
        cairo_text_extents(cr, buf, &te);
    }
    double at = align == 0 ? x : align == 1 ? x - te.x_advance / 2 : x - te.x_advance;
    cairo_move_to(cr, at, y);
    cairo_show_text(cr, buf);
}

/* A framed bar of `map` under the panel at column x0 (inset 8 px), with
 * labels under its ends and middle. */
static void draw_bar(cairo_t *cr, int x0, void (*map)(float, float *), const char *low,
                     const char *mid, const char *high) {
    const double top = HEAD + PANEL + 6, height = 12, left = x0 + 8, width = PANEL - 16;
    cairo_pattern_t *pat = cairo_pattern_create_linear(left, 0, left + width, 0);
    for (int k = 0; k <= 16; k++) {
        float rgb[3];
        map((float)k / 16.0f, rgb);
        cairo_pattern_add_color_stop_rgb(pat, k / 16.0, rgb[0], rgb[1], rgb[2]);
    }
    cairo_rectangle(cr, left, top, width, height);
    cairo_set_source(cr, pat);
    cairo_fill_preserve(cr);
    cairo_pattern_destroy(pat);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    cairo_set_line_width(cr, 1.0);
    cairo_stroke(cr);
    const double base = top + height + 13;
    cairo_text_extents_t lo, hi;
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, FONT_SIZE);
    cairo_text_extents(cr, low, &lo);
    cairo_text_extents(cr, high, &hi);
    const double ends = lo.x_advance > hi.x_advance ? lo.x_advance : hi.x_advance;
    draw_text(cr, low, left, base, width / 3, 0, 0, 0.2);
    draw_text(cr, mid, left + width / 2, base, width - 2 * ends - 8, 1, 0, 0.2);
    draw_text(cr, high, left + width, base, width / 3, 2, 0, 0.2);
}

/* ---- PNG output --------------------------------------------------------------- */

static cairo_status_t write_to_file(void *closure, const unsigned char *data, unsigned int n) {
    return fwrite(data, 1, n, (FILE *)closure) == n ? CAIRO_STATUS_SUCCESS
                                                    : CAIRO_STATUS_WRITE_ERROR;
}

/* Write the canvas to `path` through a temporary file in `dir`. */
static int save_png(const char *dir, const char *path, cairo_surface_t *canvas, char *err,
                    size_t cap) {
    char *tmp = path_join(dir, ".lwfm-explain-XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, cap, "cannot create a file in %s: %s", dir, strerror(errno));
        free(tmp);
        return -1;
    }
    mode_t mask = umask(0);
    umask(mask);
    FILE *f = fchmod(fd, 0666 & ~mask) == 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        snprintf(err, cap, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    int rc = 0;
    cairo_status_t cs = cairo_surface_write_to_png_stream(canvas, write_to_file, f);
    if (cs != CAIRO_STATUS_SUCCESS) {
        snprintf(err, cap, "cairo: %s", cairo_status_to_string(cs));
        rc = -1;
    }
    if (fflush(f) != 0 && rc == 0) {
        snprintf(err, cap, "cannot write: %s", strerror(errno));
        rc = -1;
    }
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, cap, "cannot write: %s", strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, cap, "cannot rename %s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- one query --------------------------------------------------------------- */

/* RCN: from the pair's sim (ex->sim), matches (ex->assign) and weights
 * (ex->ws), the support map a_r = w_r sim_r (into ex->ws) and the query map,
 * a_r max-scattered into the matched query cells, 0 where nothing matched
 * (into ex->wq). */
static void rcn_maps(explainer *ex, int64_t P) {
    if (P <= 0) return;
    for (int64_t r = 0; r < P; r++) ex->ws[r] *= ex->sim[r];
    for (int64_t p = 0; p < P; p++) ex->wq[p] = 0.0f;
    unsigned char *hit = (unsigned char *)(ex->assign + 2 * P); /* lp = P bytes past both */
    memset(hit, 0, (size_t)P);
    for (int64_t r = 0; r < P; r++) {
        int64_t p = ex->assign[r];
        if (p < 0 || p >= P) continue;
        if (!hit[p] || ex->ws[r] > ex->wq[p]) ex->wq[p] = ex->ws[r];
        hit[p] = 1;
    }
}

/* "NNN_<stem>.png" in the folder (malloc'd). */
static char *output_path(const char *dir, const char *query_path, int64_t index) {
    const char *base = strrchr(query_path, '/');
    base = base ? base + 1 : query_path;
    size_t n = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) n = (size_t)(dot - base);
    char *name = malloc(n + 32);
    if (!name) return NULL;
    snprintf(name, n + 32, "%03lld_%.*s.png", (long long)index, (int)n, base);
    char *path = path_join(dir, name);
    free(name);
    return path;
}

static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b && b[1] ? b + 1 : path;
}

/* The pair of support features `sf` and the query's (ex->q_feat): its maps
 * into ex->ws / wq / sim / assign / layer_scores and its score. */
static lwfm_status pair(explainer *ex, const float *sf, float *score) {
    const int64_t P = ex->fh * ex->fw;
    const size_t lp = (size_t)(ex->layers * P);
    float global = 0;
    lwfm_status st;
    *score = 0;
    if (ex->rcn) {
        st = lwfm_rcn_pair(ex->rcn, sf, ex->q_feat, ex->fc, ex->fh, ex->fw, ex->sim, ex->assign,
                           ex->ws, lp, score);
        if (!st) rcn_maps(ex, P);
        return st;
    }
    st = lwfm_lwe_pair(ex->lwe, sf, ex->q_feat, ex->fc, ex->fh, ex->fw, ex->ws, ex->wq, lp,
                       &global);
    if (!st && ex->spm)
        st = lwfm_spm_pair(ex->spm, sf, ex->q_feat, ex->fc, ex->fh, ex->fw, ex->assign, ex->sim,
                           ex->layer_scores, lp, score);
    if (!ex->spm) *score = global;
    return st;
}

/* The support images of one call (the same on every call). */
typedef struct support_view {
    const float *inputs;
    char *const *paths;
    const int32_t *labels;
    int64_t n;
} support_view;

/* The predicted class's support image with the highest pair score, its maps
 * kept in ex->best_*: its index (*best_score its score), or -1 after the
 * error. */
static int64_t best_support(explainer *ex, const support_view *sv, const char *query_path,
                            int32_t predicted, float *best_score) {
    const size_t per = (size_t)(ex->c * ex->h * ex->w);
    const size_t lp = (size_t)(ex->layers * ex->fh * ex->fw);
    int64_t best = -1;
    for (int64_t j = 0; j < sv->n; j++) {
        if (sv->labels[j] != predicted) continue;
        float *sf = ex->sup_feat + (size_t)j * ex->feat, score = 0;
        if (!ex->have[j]) {
            lwfm_status st = lwfm_model_features(ex->model, sv->inputs + (size_t)j * per, 1, ex->c,
                                                 ex->h, ex->w, sf, ex->feat);
            if (st) {
                cli_error("cannot explain", sv->paths[j], "%s", lwfm_last_error());
                return -1;
            }
            ex->have[j] = 1;
        }
        if (pair(ex, sf, &score)) {
            cli_error("cannot explain", query_path, "%s", lwfm_last_error());
            return -1;
        }
        if (best < 0 || score > *best_score) {
            best = j;
            *best_score = score;
            memcpy(ex->best_ws, ex->ws, lp * sizeof(float));
            memcpy(ex->best_wq, ex->wq, lp * sizeof(float));
            if (ex->spm || ex->rcn) {
                memcpy(ex->best_sim, ex->sim, lp * sizeof(float));
                memcpy(ex->best_assign, ex->assign, lp * sizeof(int64_t));
                memcpy(ex->best_layers, ex->layer_scores, (size_t)ex->layers * sizeof(float));
            }
        }
    }
    if (best < 0)
        cli_error("cannot explain", query_path, "the predicted class has no support image");
    return best;
}

/* The two heat-mapped panels (support, query) of `layer` on the canvas,
 * painted white first. 0, or -1 after the error. */
static int draw_panels(explainer *ex, cairo_t *cr, const char *const files[2], int64_t layer,
                       const char *query_path) {
    const int64_t P = ex->fh * ex->fw;
    char err[ERR_CAP];
    float *panel = malloc((size_t)PANEL * PANEL * 3 * sizeof(float));
    if (!panel || cairo_status(cr) != CAIRO_STATUS_SUCCESS) {
        cli_error("cannot explain", query_path, "out of memory");
        free(panel);
        return -1;
    }
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    for (int side = 0; side < 2; side++) {
        cli_image img;
        if (image_read(files[side], &img, err, sizeof err)) {
            cli_error("cannot read image", files[side], "%s", err);
            free(panel);
            return -1;
        }
        int bad = resize_panel(&img, panel);
        image_free(&img);
        if (bad) {
            cli_error("cannot explain", query_path, "out of memory");
            free(panel);
            return -1;
        }
        const float *w = (side ? ex->best_wq : ex->best_ws) + (size_t)layer * (size_t)P;
        draw_panel(ex->canvas, side ? PANEL + GAP : 0, panel, w, ex->fh, ex->fw);
    }
    free(panel);
    return 0;
}

/* Words: the support's class, file and pair score; the query's file, the
 * predicted class and the runner-up with their probabilities. */
static void draw_words(cairo_t *cr, char *const *class_names, const float *probabilities,
                       int64_t way, int32_t predicted, const char *support_path,
                       const char *query_path, float best_score) {
    char line[256];
    int64_t second = -1;
    for (int64_t k = 0; k < way; k++)
        if (k != predicted && (second < 0 || probabilities[k] > probabilities[second])) second = k;
    const double right = PANEL + GAP + 2, room = PANEL - 4;
    snprintf(line, sizeof line, "support: %s", class_names[predicted]);
    draw_text(cr, line, 2, 13, room, 0, 1, 0.1);
    draw_text(cr, base_name(support_path), 2, 28, room, 0, 0, 0.35);
    snprintf(line, sizeof line, "pair score %.4g", (double)best_score);
    draw_text(cr, line, 2, 43, room, 0, 0, 0.35);
    snprintf(line, sizeof line, "predicted: %s %.1f%%", class_names[predicted],
             100.0 * (double)probabilities[predicted]);
    draw_text(cr, line, right, 13, room, 0, 1, 0.1);
    draw_text(cr, base_name(query_path), right, 28, room, 0, 0, 0.35);
    if (second >= 0) {
        snprintf(line, sizeof line, "next: %s %.1f%%", class_names[second],
                 100.0 * (double)probabilities[second]);
        draw_text(cr, line, right, 43, room, 0, 0, 0.35);
    }
}

/* Bold: the top_k best matches (RCN: RCN_LINES), the k largest values of
 * sim (first wins ties): top[a] set for them. */
static void mark_top(const float *sim, int64_t P, int64_t k, unsigned char *top) {
    k = k < P ? k : P;
    for (int64_t r = 0; r < k; r++) {
        int64_t arg = -1;
        for (int64_t a = 0; a < P; a++)
            if (!top[a] && (arg < 0 || sim[a] > sim[arg])) arg = a;
        if (arg >= 0) top[arg] = 1;
    }
}

/* The match lines of `layer` and their colour bar (SPM on, or RCN). 0, or
 * -1 after the error. */
static int draw_matches(explainer *ex, cairo_t *cr, int64_t layer, const char *query_path) {
    const int64_t P = ex->fh * ex->fw;
    const int64_t *as = ex->best_assign + (size_t)layer * (size_t)P;
    /* SPM: the matched similarities; RCN: a_r = w_r sim_r (best_ws) */
    const float *sim = (ex->rcn ? ex->best_ws : ex->best_sim) + (size_t)layer * (size_t)P;
    /* RCN draws only the regions that add to the term */
    unsigned char *top = calloc((size_t)P, 1);
    if (!top) {
        cli_error("cannot explain", query_path, "out of memory");
        return -1;
    }
    mark_top(sim, P, ex->rcn ? RCN_LINES : ex->top_k, top);
    /* colours: the matched similarities normalised over this picture's
     * matches, the weakest red, the strongest green (the cosines of a
     * model's matches are often all close to 1) */
    float lo = sim[0], hi = sim[0];
    for (int64_t a = 1; a < P; a++) {
        lo = sim[a] < lo ? sim[a] : lo;
        hi = sim[a] > hi ? sim[a] : hi;
    }
    char lo_s[32], hi_s[32];
    snprintf(lo_s, sizeof lo_s, "%.3g", (double)lo);
    snprintf(hi_s, sizeof hi_s, "%.3g", (double)hi);
    draw_bar(cr, PANEL + GAP, match_colour, lo_s, ex->rcn ? "w\xc2\xb7sim" : "similarity", hi_s);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t a = 0; a < P; a++) {
            if (top[a] != pass || (ex->rcn && !(sim[a] > 0))) continue;
            float xa, ya, xb, yb, rgb[3];
            cell_centre(a, ex->fh, ex->fw, 0, &xa, &ya);
            cell_centre(as[a], ex->fh, ex->fw, PANEL + GAP, &xb, &yb);
            match_colour(hi > lo ? (sim[a] - lo) / (hi - lo) : 1.0f, rgb);
            if (!pass) {
                draw_segment(cr, xa, ya, xb, yb, 1.0f, rgb);
            } else {
                static const float dark[3] = {0.1f, 0.1f, 0.1f};
                draw_segment(cr, xa, ya, xb, yb, 3.0f, rgb);
                draw_disc(cr, xa, ya, 5.0f, dark);
                draw_disc(cr, xb, yb, 5.0f, dark);
                draw_disc(cr, xa, ya, 3.5f, rgb);
                draw_disc(cr, xb, yb, 3.5f, rgb);
            }
        }
    free(top);
    return 0;
}

/* The whole picture on ex->canvas. 0, or -1 after the error. */
static int draw_picture(explainer *ex, const char *const files[2], int64_t layer,
                        char *const *class_names, const float *probabilities, int64_t way,
                        int32_t predicted, float best_score) {
    cairo_t *cr = cairo_create(ex->canvas);
    int rc = draw_panels(ex, cr, files, layer, files[1]);
    if (!rc) {
        draw_words(cr, class_names, probabilities, way, predicted, files[0], files[1],
                   best_score);
        char attn[64];
        if (ex->rcn)
            snprintf(attn, sizeof attn, "w\xc2\xb7sim");
        else
            snprintf(attn, sizeof attn, "attention (layer %lld)", (long long)layer);
        draw_bar(cr, 0, colormap, "low", attn, "high");
        if (ex->spm || ex->rcn) rc = draw_matches(ex, cr, layer, files[1]);
    }
    if (rc) {
        cairo_destroy(cr);
        return -1;
    }
    cairo_status_t cs = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_flush(ex->canvas);
    if (cs != CAIRO_STATUS_SUCCESS) {
        cli_error("cannot explain", files[1], "cairo: %s", cairo_status_to_string(cs));
        return -1;
    }
    return 0;
}

char *explain_query(explainer *ex, const float *support_inputs, char *const *support_paths,
                    const int32_t *support_labels, int64_t n_support, const float *query_input,
                    const char *query_path, int64_t query_index, int32_t predicted,
                    char *const *class_names, const float *probabilities, int64_t way) {
    char err[ERR_CAP];
    if (!ex->sup_feat) {
        ex->sup_feat = malloc((size_t)n_support * ex->feat * sizeof(float));
        ex->have = calloc((size_t)n_support, 1);
        ex->n_support = n_support;
        if (!ex->sup_feat || !ex->have) {
            cli_error("cannot explain", query_path, "out of memory");
            return NULL;
        }
    }
    lwfm_status st =
        lwfm_model_features(ex->model, query_input, 1, ex->c, ex->h, ex->w, ex->q_feat, ex->feat);
    if (st) {
        cli_error("cannot explain", query_path, "%s", lwfm_last_error());
        return NULL;
    }
    const support_view sv = {support_inputs, support_paths, support_labels, n_support};
    float best_score = 0;
    int64_t best = best_support(ex, &sv, query_path, predicted, &best_score);
    if (best < 0) return NULL;
    int64_t layer = 0;
    if (ex->spm)
        for (int64_t l = 1; l < ex->layers; l++)
            if (ex->best_layers[l] > ex->best_layers[layer]) layer = l;
    const char *const files[2] = {support_paths[best], query_path};
    if (draw_picture(ex, files, layer, class_names, probabilities, way, predicted, best_score))
        return NULL;

    char *out = output_path(ex->dir, query_path, query_index);
    if (!out) {
        cli_error("cannot explain", query_path, "out of memory");
        return NULL;
    }
    if (save_png(ex->dir, out, ex->canvas, err, sizeof err)) {
        cli_error("cannot write explanation", out, "%s", err);
        free(out);
        return NULL;
    }
    fprintf(stderr, "explained %s -> %s (support %s, layer %lld, score %.4f)\n", query_path, out,
            support_paths[best], (long long)layer, (double)best_score);
    return out;
}
