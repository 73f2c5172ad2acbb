/* Models: finding them by name, loading them (a PyTorch checkpoint is named
 * as such), preprocessing an image file for them.
 *
 * By name: `--model omniglot` finds omniglot.npz among the installed
 * bundled models (docs/cli.md, "Models by name").
 *
 * A MODEL argument that names an existing file, or that holds a '/', is a
 * path and is used as given. Otherwise NAME and NAME.npz are looked for in
 *   1. each folder of $LWFM_MODEL_PATH (colon-separated), in order;
 *   2. the models folder of this installed command, relative to its own
 *      location (bin/../share/lwfm/models for the usual layout), so that a
 *      DESTDIR or moved install finds its models;
 *   3. the configured one (LWFM_MODELS_DIR, e.g. /usr/local/share/lwfm/models).
 * python3's lwfm.find_model() searches the same places. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zip.h>

#include "cli.h"

#ifndef LWFM_MODELS_DIR
#define LWFM_MODELS_DIR "/usr/local/share/lwfm/models"
#endif
#ifndef LWFM_MODELS_FROM_BINDIR
#define LWFM_MODELS_FROM_BINDIR "../share/lwfm/models"
#endif

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* dir/name or dir/name.npz when it is a file; malloc'd, or NULL. */
static char *try_dir(const char *dir, size_t dir_len, const char *name) {
    if (dir_len == 0) return NULL;
    size_t n = strlen(name);
    char *p = malloc(dir_len + n + 6);
    if (!p) return NULL;
    memcpy(p, dir, dir_len);
    p[dir_len] = '/';
    memcpy(p + dir_len + 1, name, n + 1);
    if (is_file(p)) return p;
    memcpy(p + dir_len + 1 + n, ".npz", 5);
    if (is_file(p)) return p;
    free(p);
    return NULL;
}

/* The folders searched, in order, joined by ", " into buf (for messages). */
void model_search_path(char *buf, size_t cap) {
    const char *env = getenv("LWFM_MODEL_PATH");
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
    } else {
        snprintf(exe, sizeof exe, "?");
    }
    snprintf(buf, cap, "%s%s%s/%s, %s", env && *env ? env : "", env && *env ? ", " : "", exe,
             LWFM_MODELS_FROM_BINDIR, LWFM_MODELS_DIR);
}

char *find_model(const char *name) {
    if (!name || !*name) return NULL;
    if (strchr(name, '/') || is_file(name)) return str_dup(name);
    char *found = NULL;
    const char *env = getenv("LWFM_MODEL_PATH");
    for (const char *p = env; p && *p && !found;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        found = try_dir(p, len, name);
        p = end ? end + 1 : p + len;
    }
    if (!found) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        char *slash = n > 0 ? (exe[n] = '\0', strrchr(exe, '/')) : NULL;
        if (slash) {
            *slash = '\0';
            char *dir = path_join(exe, LWFM_MODELS_FROM_BINDIR);
            if (dir) found = try_dir(dir, strlen(dir), name);
            free(dir);
        }
    }
    if (!found) found = try_dir(LWFM_MODELS_DIR, strlen(LWFM_MODELS_DIR), name);
    return found ? found : str_dup(name);
}

/* ---- loading ---------------------------------------------------------------- */

char *model_config_json(const lwfm_model *model) {
    size_t len = 0;
    lwfm_status st = lwfm_model_config_json(model, NULL, 0, &len);
    if (st != LWFM_OK && st != LWFM_ERR_BUFFER_TOO_SMALL) return NULL;
    char *json = malloc(len + 1);
    if (json && lwfm_model_config_json(model, json, len + 1, NULL) != LWFM_OK) {
        free(json);
        json = NULL;
    }
    return json;
}

lwfm_model *load_model(const char *path) {
    return load_model_precision(path, LWFM_PRECISION_FP32, LWFM_CONVOLUTIONS_AUTO);
}

/* "zip" for a PyTorch zip checkpoint (torch.save since 1.6: a zip with
 * <name>/data.pkl), "pickle" for a legacy one (a pickle stream), else NULL. */
static const char *pytorch_checkpoint(const char *path) {
    unsigned char b[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5) return "pickle";
    if (n < 4 || memcmp(b, "PK\3\4", 4) != 0) return NULL;
    int code = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY, &code);
    if (!za) return NULL;
    const char *kind = NULL;
    zip_int64_t entries = zip_get_num_entries(za, 0);
    for (zip_int64_t k = 0; k < entries && k < 100000 && !kind; k++) {
        const char *name = zip_get_name(za, (zip_uint64_t)k, 0);
        size_t len = name ? strlen(name) : 0;
        if (len >= 8 && !strcmp(name + len - 8, "data.pkl")) kind = "zip";
    }
    zip_discard(za);
    return kind;
}

lwfm_model *load_model_precision(const char *path, lwfm_precision precision,
                                  lwfm_convolutions convolutions) {
    lwfm_model *model = NULL;
    lwfm_load_options *opts = NULL;
    lwfm_status st = lwfm_load_options_create(&opts);
    if (!st) st = lwfm_load_options_set_precision(opts, precision);
    if (!st) st = lwfm_load_options_set_convolutions(opts, convolutions);
    char *file = find_model(path); /* a name like "omniglot": models.c */
    if (!st) st = file ? lwfm_model_load(&model, file, opts) : LWFM_ERR_OUT_OF_MEMORY;
    free(file);
    lwfm_load_options_destroy(opts);
    const char *torch = st ? pytorch_checkpoint(path) : NULL;
    if (torch) {
        cli_error("cannot load model", path,
                  "this is a PyTorch checkpoint (%s), not a libLWFM weight file: convert it "
                  "with python3 -m lwfm.convert",
                  !strcmp(torch, "zip") ? "a zip with data.pkl" : "a legacy pickle");
        cli_hint("python3 -m lwfm.convert --method lwfm-spm|dn4|mml CHECKPOINT OUT.npz "
                 "(docs/weight-format.md)");
        return NULL;
    }
    if (st) {
        cli_error("cannot load model", path, "%s", lwfm_last_error());
        if (st == LWFM_ERR_IO && !strchr(path, '/')) {
            char where[2 * ERR_CAP];
            model_search_path(where, sizeof where);
            cli_hint("--model takes a weight file (.npz) or the name of an installed model, "
                     "looked for in %s", where);
        } else if (st == LWFM_ERR_IO)
            cli_hint("--model takes a weight file (.npz) written by lwfm.convert or lwfm.train");
        else if (st == LWFM_ERR_FORMAT || st == LWFM_ERR_MISSING_KEY)
            cli_hint("is it a libLWFM weight file? see docs/weight-format.md");
        return NULL;
    }
    return model;
}

int preprocess_file(const lwfm_model *model, const char *path, float *out, size_t count, char *err,
                    size_t cap) {
    cli_image img;
    if (image_read(path, &img, err, cap)) return -1;
    lwfm_status st = lwfm_model_preprocess(model, img.pixels, img.format, img.height, img.width,
                                           img.channels, 0, out, count);
    if (st) snprintf(err, cap, "%s", lwfm_last_error());
    image_free(&img);
    return st ? -1 : 0;
}
