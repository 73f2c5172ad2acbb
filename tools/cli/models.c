/* Models by name: `--model omniglot` finds omniglot.npz among the installed
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
