/* Datasets and the episode sampler, as bindings/python/lwfm/episodes.py
 * defines them (FolderSet, OmniglotSet, EpisodeSampler): `lwfm eval` and
 * `python3 -m lwfm.evaluate` see the same classes, the same examples in the
 * same order, and draw the same episodes from the same seed.
 *
 * Omniglot archives are read here with libzip rather than with the
 * library's weight-file reader (private to liblwfm), by the same rules:
 * a strict .npy header parser and the library's size limits. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zip.h>

#include "cli.h"

/* ---- folder tree -------------------------------------------------------- */

static int open_folder(dataset *ds, const char *root) {
    char err[ERR_CAP];
    char **classes = NULL;
    int64_t n = 0;
    if (list_dir(root, 1, &classes, &n, err, sizeof err)) {
        cli_error("cannot read dataset", root, "%s", err);
        return -1;
    }
    ds->names = calloc((size_t)(n ? n : 1), sizeof *ds->names);
    ds->files = calloc((size_t)(n ? n : 1), sizeof *ds->files);
    ds->sizes = calloc((size_t)(n ? n : 1), sizeof *ds->sizes);
    if (!ds->names || !ds->files || !ds->sizes) {
        free_names(classes, n);
        cli_error("cannot read dataset", root, "out of memory");
        return -1;
    }
    for (int64_t c = 0; c < n; c++) {
        char *dir = path_join(root, classes[c]);
        char **files = NULL;
        int64_t k = 0;
        int rc = list_images(dir, &files, &k, err, sizeof err);
        if (rc) {
            cli_error("cannot read class folder", dir, "%s", err);
            free(dir);
            free_names(classes, n);
            return -1;
        }
        free(dir);
        if (k == 0) { /* as FolderSet: folders without images are no class */
            free(files);
            continue;
        }
        ds->names[ds->n_classes] = classes[c];
        classes[c] = NULL;
        ds->files[ds->n_classes] = files;
        ds->sizes[ds->n_classes] = k;
        ds->n_classes++;
    }
    free_names(classes, n);
    if (ds->n_classes == 0) {
        cli_error("cannot read dataset", root, "no class folders with images");
        cli_hint("a dataset folder holds one sub-folder of .png/.jpg/.jpeg/.webp images per "
                 "class");
        return -1;
    }
    return 0;
}

/* ---- Omniglot .npz ------------------------------------------------------ */

typedef struct npy_header {
    char descr[16];
    int fortran;
    int ndim;
    int64_t shape[8];
    size_t data_offset;
} npy_header;

/* Parse the dict literal of a .npy header: {'descr': '|b1', 'fortran_order':
 * False, 'shape': (659, 20, 105, 105), }, with the library's rules
 * (lib/io/npy.c): exactly the three keys, once each, in the literal forms
 * NumPy writes (quoted strings without escapes, True / False, a tuple of
 * non-negative integers), nothing but blanks after the closing brace. */
typedef struct npy_cursor {
    const char *p;
} npy_cursor;

static int npy_peek(npy_cursor *c) {
    while (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r') c->p++;
    return (unsigned char)*c->p;
}

static int npy_expect(npy_cursor *c, char ch) {
    if (npy_peek(c) != (unsigned char)ch) return -1;
    c->p++;
    return 0;
}

/* A quoted string into buf (cap bytes with the NUL). */
static int npy_string(npy_cursor *c, char *buf, size_t cap) {
    int q = npy_peek(c);
    if (q != '\'' && q != '"') return -1;
    const char *start = ++c->p;
    while (*c->p && *c->p != q && *c->p != '\\') c->p++;
    if (*c->p != q || (size_t)(c->p - start) >= cap) return -1;
    memcpy(buf, start, (size_t)(c->p - start));
    buf[c->p - start] = '\0';
    c->p++;
    return 0;
}

static int parse_npy_dict(const char *h, npy_header *out, char *err, size_t cap) {
    npy_cursor c = {h};
    int seen_descr = 0, seen_fortran = 0, seen_shape = 0;
    if (npy_expect(&c, '{')) goto bad;
    while (npy_peek(&c) != '}') {
        char key[32];
        if (npy_string(&c, key, sizeof key) || npy_expect(&c, ':')) goto bad;
        if (!strcmp(key, "descr") && !seen_descr++) {
            if (npy_string(&c, out->descr, sizeof out->descr)) goto bad;
        } else if (!strcmp(key, "fortran_order") && !seen_fortran++) {
            npy_peek(&c);
            if (!strncmp(c.p, "True", 4)) out->fortran = 1, c.p += 4;
            else if (!strncmp(c.p, "False", 5)) out->fortran = 0, c.p += 5;
            else goto bad; /* 'fortran_order': 1 was read as C order */
        } else if (!strcmp(key, "shape") && !seen_shape++) {
            if (npy_expect(&c, '(')) goto bad;
            out->ndim = 0;
            while (npy_peek(&c) != ')') {
                if (*c.p < '0' || *c.p > '9' || out->ndim == 8) goto bad;
                errno = 0;
                char *end;
                long long v = strtoll(c.p, &end, 10);
                if (errno == ERANGE) goto bad;
                out->shape[out->ndim++] = v;
                c.p = end;
                if (npy_peek(&c) == ',') c.p++;
                else if (npy_peek(&c) != ')') goto bad;
            }
            c.p++;
        } else {
            goto bad; /* an unknown or repeated key */
        }
        if (npy_peek(&c) == ',') c.p++;
        else if (npy_peek(&c) != '}') goto bad;
    }
    c.p++;
    if (npy_peek(&c) != 0 || !seen_descr || !seen_fortran || !seen_shape) goto bad;
    return 0;
bad:
    snprintf(err, cap, "malformed .npy header at offset %zu: %.40s", (size_t)(c.p - h), h);
    return -1;
}

/* Read the header of member `index`; leaves the member open at its data. */
static zip_file_t *open_npy(zip_t *za, zip_uint64_t index, npy_header *hd, char *err, size_t cap) {
    zip_file_t *zf = zip_fopen_index(za, index, 0);
    if (!zf) {
        snprintf(err, cap, "%s", zip_strerror(za));
        return NULL;
    }
    unsigned char pre[12];
    char *text = NULL;
    if (zip_fread(zf, pre, 10) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] < 1 ||
        pre[6] > 3) {
        snprintf(err, cap, "not a .npy array");
        goto fail;
    }
    size_t hlen = (size_t)pre[8] | (size_t)pre[9] << 8, off = 10;
    if (pre[6] >= 2) {
        if (zip_fread(zf, pre + 10, 2) != 2) {
            snprintf(err, cap, "truncated .npy header");
            goto fail;
        }
        hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        off = 12;
    }
    if (hlen > 65536) {
        snprintf(err, cap, ".npy header of %zu bytes is too long", hlen);
        goto fail;
    }
    text = malloc(hlen + 1);
    if (!text || zip_fread(zf, text, hlen) != (zip_int64_t)hlen) {
        snprintf(err, cap, "truncated .npy header");
        goto fail;
    }
    text[hlen] = '\0';
    if (parse_npy_dict(text, hd, err, cap)) goto fail;
    hd->data_offset = off + hlen;
    free(text);
    return zf;
fail:
    free(text);
    zip_fclose(zf);
    return NULL;
}

/* The member holding the images: 'images.npy', else the only 4-D array. */
static int find_images(zip_t *za, zip_uint64_t *index, char *err, size_t cap) {
    zip_int64_t i = zip_name_locate(za, "images.npy", 0);
    if (i >= 0) {
        *index = (zip_uint64_t)i;
        return 0;
    }
    zip_int64_t n = zip_get_num_entries(za, 0), found = -1, count = 0;
    for (zip_int64_t k = 0; k < n; k++) {
        const char *name = zip_get_name(za, (zip_uint64_t)k, 0);
        size_t len = name ? strlen(name) : 0;
        if (len < 4 || strcmp(name + len - 4, ".npy") != 0) continue;
        npy_header hd;
        char e[ERR_CAP];
        zip_file_t *zf = open_npy(za, (zip_uint64_t)k, &hd, e, sizeof e);
        if (!zf) continue;
        zip_fclose(zf);
        if (hd.ndim == 4) found = k, count++;
    }
    if (count != 1) {
        snprintf(err, cap,
                 "expected an 'images' array (classes, drawings, height, width); found %s",
                 count ? "several 4-D arrays" : "none");
        return -1;
    }
    *index = (zip_uint64_t)found;
    return 0;
}

/* The images member's header against the library's rules and limits, and
 * its stored size: 0 (*total the pixel count, *is_bool the dtype), or -1
 * with the reason in err. */
static int check_npy(zip_t *za, zip_uint64_t index, const npy_header *hd, uint64_t *total,
                     int *is_bool, char *err, size_t cap) {
    *is_bool = strcmp(hd->descr, "|b1") == 0;
    if (!*is_bool && strcmp(hd->descr, "|u1") != 0 && strcmp(hd->descr, "<u1") != 0) {
        snprintf(err, cap, "array dtype '%s': bool or uint8 images are needed", hd->descr);
        return -1;
    }
    if (hd->fortran || hd->ndim != 4) {
        snprintf(err, cap,
                 "the images must be a C-order (classes, drawings, height, "
                 "width) array");
        return -1;
    }
    /* the library's limits (lwfm.h): at most LWFM_LIMIT_NPY_ELEMENTS pixels
     * and LWFM_LIMIT_IMAGES classes (the per-class bookkeeping below grows
     * with them: a 16 KB file declaring 16M classes cost 0.8 GB) */
    *total = 1;
    for (int k = 0; k < 4; k++) {
        if (hd->shape[k] < 1 || hd->shape[k] > (int64_t)LWFM_LIMIT_NPY_ELEMENTS ||
            __builtin_mul_overflow(*total, (uint64_t)hd->shape[k], total)) {
            snprintf(err, cap, "array shape is empty or too large");
            return -1;
        }
    }
    if (hd->shape[2] > MAX_IMAGE_SIDE || hd->shape[3] > MAX_IMAGE_SIDE ||
        *total > LWFM_LIMIT_NPY_ELEMENTS || hd->shape[0] > LWFM_LIMIT_IMAGES) {
        snprintf(err, cap,
                 "array of %lld classes and %llu pixels exceeds the limits (%d classes, %llu "
                 "pixels)",
                 (long long)hd->shape[0], (unsigned long long)*total, LWFM_LIMIT_IMAGES,
                 (unsigned long long)LWFM_LIMIT_NPY_ELEMENTS);
        return -1;
    }
    /* sizes the compressed data cannot produce are refused before reading
     * (deflate expands at most 1032:1, lib/io/npz.c) */
    zip_stat_t zs;
    if (zip_stat_index(za, index, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE) ||
        !(zs.valid & ZIP_STAT_COMP_SIZE) || zs.size != hd->data_offset + *total ||
        zs.size / 1032 > zs.comp_size + 1) {
        snprintf(err, cap, "member holds %llu bytes (%llu compressed), its shape needs %llu",
                 (unsigned long long)(zs.size - hd->data_offset),
                 (unsigned long long)zs.comp_size, (unsigned long long)*total);
        return -1;
    }
    return 0;
}

/* Exactly `total` bytes of the member into *out (malloc'd): 0, or -1 with
 * the reason in err. */
static int read_pixels(zip_file_t *zf, uint64_t total, uint8_t **out, char *err, size_t cap) {
    uint8_t *px = malloc((size_t)total);
    if (!px) {
        snprintf(err, cap, "out of memory for %llu bytes", (unsigned long long)total);
        return -1;
    }
    uint64_t got = 0;
    zip_int64_t r = 1;
    while (got < total && (r = zip_fread(zf, px + got, total - got)) > 0) got += (uint64_t)r;
    uint8_t extra;
    if (r < 0 || got < total || zip_fread(zf, &extra, 1) != 0) {
        snprintf(err, cap, "images data is %s",
                 r < 0 ? zip_file_strerror(zf) : "truncated or too long");
        free(px);
        return -1;
    }
    *out = px;
    return 0;
}

/* The dataset over the archive's pixels (grey 0 / 255 when bool): classes
 * named classNNNN, as OmniglotSet. 0, or -1 after the error. */
static int npz_classes(dataset *ds, const char *path, const npy_header *hd, uint8_t *px,
                       uint64_t total, int is_bool) {
    if (is_bool) /* True = paper: white */
        for (uint64_t k = 0; k < total; k++) px[k] = px[k] ? 255 : 0;
    ds->pixels = px;
    ds->n_classes = hd->shape[0];
    ds->drawings = hd->shape[1];
    ds->height = hd->shape[2];
    ds->width = hd->shape[3];
    ds->names = calloc((size_t)ds->n_classes, sizeof *ds->names);
    ds->sizes = calloc((size_t)ds->n_classes, sizeof *ds->sizes);
    if (!ds->names || !ds->sizes) {
        cli_error("cannot read dataset", path, "out of memory");
        return -1;
    }
    for (int64_t c = 0; c < ds->n_classes; c++) {
        char name[32];
        snprintf(name, sizeof name, "class%04lld", (long long)c); /* as OmniglotSet */
        ds->names[c] = str_dup(name);
        ds->sizes[c] = ds->drawings;
    }
    return 0;
}

static int open_npz(dataset *ds, const char *path) {
    char err[ERR_CAP] = "";
    int code = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY, &code);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        cli_error("cannot read dataset", path, "%s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        if (code == ZIP_ER_NOZIP)
            cli_hint("--data takes an Omniglot .npz archive or a folder with one sub-folder "
                     "of images per class");
        return -1;
    }
    zip_uint64_t index;
    npy_header hd;
    zip_file_t *zf = NULL;
    uint8_t *px = NULL;
    uint64_t total = 0;
    int is_bool = 0;
    if (find_images(za, &index, err, sizeof err)) goto fail;
    zf = open_npy(za, index, &hd, err, sizeof err);
    if (!zf) goto fail;
    if (check_npy(za, index, &hd, &total, &is_bool, err, sizeof err)) goto fail;
    if (read_pixels(zf, total, &px, err, sizeof err)) goto fail;
    zip_fclose(zf);
    zip_discard(za);
    return npz_classes(ds, path, &hd, px, total, is_bool);
fail:
    if (zf) zip_fclose(zf);
    zip_discard(za);
    cli_error("cannot read dataset", path, "%s", err);
    return -1;
}

int dataset_open(dataset *ds, const char *path) {
    memset(ds, 0, sizeof *ds);
    ds->path = str_dup(path);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        cli_error("cannot read dataset", path, "%s", strerror(errno));
        dataset_free(ds);
        return -1;
    }
    /* a directory is a folder tree, a regular file an archive; anything
     * else (a FIFO would block zip_open() forever) is refused */
    if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode)) {
        cli_error("cannot read dataset", path, "not a regular file or a directory");
        dataset_free(ds);
        return -1;
    }
    ds->is_npz = !S_ISDIR(sb.st_mode);
    if ((ds->is_npz ? open_npz(ds, path) : open_folder(ds, path)) == 0) return 0;
    dataset_free(ds);
    return -1;
}

void dataset_free(dataset *ds) {
    for (int64_t c = 0; c < ds->n_classes; c++) {
        if (ds->names) free(ds->names[c]);
        if (ds->files) free_names(ds->files[c], ds->sizes[c]);
    }
    free(ds->names);
    free(ds->files);
    free(ds->sizes);
    free(ds->pixels);
    free(ds->path);
    memset(ds, 0, sizeof *ds);
}

char *dataset_item_path(const dataset *ds, int64_t c, int64_t i) {
    if (!ds->is_npz) {
        char *dir = path_join(ds->path, ds->names[c]);
        char *p = path_join(dir, ds->files[c][i]);
        free(dir);
        return p;
    }
    size_t n = strlen(ds->path) + 64;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s[class %lld, drawing %lld]", ds->path, (long long)c, (long long)i);
    return p;
}

int dataset_image(const dataset *ds, int64_t c, int64_t i, cli_image *img, char *err, size_t cap) {
    if (!ds->is_npz) {
        char *path = dataset_item_path(ds, c, i);
        int rc = image_read(path, img, err, cap);
        free(path);
        return rc;
    }
    const size_t plane = (size_t)ds->height * (size_t)ds->width;
    img->height = ds->height;
    img->width = ds->width;
    img->channels = 1;
    img->format = LWFM_PIXEL_U8;
    img->pixels = ds->pixels + ((size_t)c * (size_t)ds->drawings + (size_t)i) * plane;
    return 0;
}

void dataset_image_free(const dataset *ds, cli_image *img) {
    if (!ds->is_npz) image_free(img);
    memset(img, 0, sizeof *img);
}

void dataset_drop(dataset *ds, int64_t c, int64_t i) {
    if (ds->is_npz) return;
    free(ds->files[c][i]);
    memmove(ds->files[c] + i, ds->files[c] + i + 1,
            (size_t)(ds->sizes[c] - i - 1) * sizeof *ds->files[c]);
    ds->sizes[c]--;
}

void dataset_compact(dataset *ds) {
    int64_t k = 0;
    for (int64_t c = 0; c < ds->n_classes; c++) {
        if (ds->sizes[c] == 0) {
            free(ds->names[c]);
            if (ds->files) free(ds->files[c]);
            continue;
        }
        ds->names[k] = ds->names[c];
        if (ds->files) ds->files[k] = ds->files[c];
        ds->sizes[k] = ds->sizes[c];
        k++;
    }
    ds->n_classes = k;
}

/* ---- episode sampler ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *state) {
    *state += 0x9E3779B97F4A7C15ull;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The first k of a partial Fisher-Yates shuffle of 0..n-1, into perm. */
static void pick(sampler *s, int64_t n, int64_t k) {
    for (int64_t i = 0; i < n; i++) s->perm[i] = i;
    for (int64_t i = 0; i < k; i++) {
        int64_t j = i + (int64_t)(splitmix64(&s->state) % (uint64_t)(n - i));
        int64_t t = s->perm[i];
        s->perm[i] = s->perm[j];
        s->perm[j] = t;
    }
}

int sampler_init(sampler *s, const int64_t *sizes, int64_t n_classes, int64_t way, int64_t shot,
                 int64_t query, uint64_t seed, char *err, size_t cap) {
    memset(s, 0, sizeof *s);
    if (way < 1 || shot < 1 || query < 1) {
        snprintf(err, cap, "way, shot and query must be >= 1");
        return -1;
    }
    if (way > n_classes) {
        snprintf(err, cap, "%lld-way episodes need %lld classes, the data has %lld", (long long)way,
                 (long long)way, (long long)n_classes);
        return -1;
    }
    int64_t largest = n_classes;
    s->eligible = malloc((size_t)n_classes * sizeof *s->eligible);
    if (!s->eligible) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    for (int64_t c = 0; c < n_classes; c++) {
        if (sizes[c] >= shot + query) s->eligible[s->n_eligible++] = c;
        if (sizes[c] > largest) largest = sizes[c];
    }
    if (s->n_eligible < way) {
        snprintf(err, cap,
                 "only %lld classes have at least shot + query = %lld examples; %lld needed",
                 (long long)s->n_eligible, (long long)(shot + query), (long long)way);
        sampler_free(s);
        return -1;
    }
    s->perm = malloc((size_t)largest * sizeof *s->perm);
    s->chosen = malloc((size_t)way * sizeof *s->chosen);
    if (!s->perm || !s->chosen) {
        snprintf(err, cap, "out of memory");
        sampler_free(s);
        return -1;
    }
    s->state = seed;
    s->way = way, s->shot = shot, s->query = query;
    s->sizes = sizes;
    return 0;
}

void sampler_free(sampler *s) {
    free(s->eligible);
    free(s->perm);
    free(s->chosen);
    memset(s, 0, sizeof *s);
}

int episode_alloc(episode *e, int64_t way, int64_t shot, int64_t query) {
    memset(e, 0, sizeof *e);
    e->n_support = way * shot;
    e->n_query = way * query;
    e->s_class = malloc((size_t)e->n_support * sizeof(int64_t));
    e->s_index = malloc((size_t)e->n_support * sizeof(int64_t));
    e->s_label = malloc((size_t)e->n_support * sizeof(int32_t));
    e->q_class = malloc((size_t)e->n_query * sizeof(int64_t));
    e->q_index = malloc((size_t)e->n_query * sizeof(int64_t));
    e->q_label = malloc((size_t)e->n_query * sizeof(int32_t));
    if (!e->s_class || !e->s_index || !e->s_label || !e->q_class || !e->q_index || !e->q_label) {
        episode_free(e);
        return -1;
    }
    return 0;
}

void episode_free(episode *e) {
    free(e->s_class);
    free(e->s_index);
    free(e->s_label);
    free(e->q_class);
    free(e->q_index);
    free(e->q_label);
    memset(e, 0, sizeof *e);
}

void sampler_episode(sampler *s, episode *e) {
    /* classes: the first `way` of a shuffle of the eligible ones; label = rank */
    pick(s, s->n_eligible, s->way);
    for (int64_t l = 0; l < s->way; l++) s->chosen[l] = s->eligible[s->perm[l]];
    int64_t ns = 0, nq = 0;
    for (int64_t l = 0; l < s->way; l++) {
        const int64_t c = s->chosen[l];
        pick(s, s->sizes[c], s->shot + s->query);
        for (int64_t k = 0; k < s->shot + s->query; k++) {
            if (k < s->shot) {
                e->s_class[ns] = c, e->s_index[ns] = s->perm[k], e->s_label[ns] = (int32_t)l;
                ns++;
            } else {
                e->q_class[nq] = c, e->q_index[nq] = s->perm[k], e->q_label[nq] = (int32_t)l;
                nq++;
            }
        }
    }
}
