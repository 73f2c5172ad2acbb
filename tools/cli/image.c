/* Image files (decoded by decode.c: PNG through libpng, JPEG through
 * libjpeg, chosen by the file's first bytes); directory listings of image
 * files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* ---- files -------------------------------------------------------------- */

int image_read(const char *path, cli_image *img, char *err, size_t cap) {
    memset(img, 0, sizeof *img);
    /* O_NONBLOCK: opening a FIFO (or a device) for reading must not wait for
     * a writer; the regular-file check below refuses it (as the library's
     * own reader does, lib/io/npz.c) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        snprintf(err, cap, "cannot open: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        snprintf(err, cap, "cannot read: %s", strerror(errno));
        fclose(f);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, cap, "%s", S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
        fclose(f);
        return -1;
    }
    if ((uint64_t)sb.st_size > MAX_IMAGE_FILE) {
        snprintf(err, cap, "file of %llu bytes is larger than the limit of %llu",
                 (unsigned long long)sb.st_size, (unsigned long long)MAX_IMAGE_FILE);
        fclose(f);
        return -1;
    }
    size_t size = (size_t)sb.st_size;
    unsigned char *data = malloc(size ? size : 1);
    if (!data) {
        snprintf(err, cap, "out of memory for a file of %zu bytes", size);
        fclose(f);
        return -1;
    }
    size_t got = fread(data, 1, size, f);
    int read_error = ferror(f);
    fclose(f);
    int rc = -1;
    if (read_error || got != size)
        snprintf(err, cap, "read error: %s", read_error ? strerror(errno) : "file changed size");
    else
        rc = image_decode(data, size, img, err, cap);
    free(data);
    if (rc) memset(img, 0, sizeof *img);
    return rc;
}

int image_name(const char *name) {
    size_t n = strlen(name);
    static const char *const kExt[] = {".png", ".jpg", ".jpeg"};
    for (int k = 0; k < 3; k++) {
        size_t e = strlen(kExt[k]);
        if (n >= e && strcasecmp(name + n - e, kExt[k]) == 0) return 1;
    }
    return 0;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void free_names(char **names, int64_t count) {
    if (!names) return;
    for (int64_t i = 0; i < count; i++) free(names[i]);
    free(names);
}

int list_dir(const char *dir, int dirs, char ***names, int64_t *count, char *err, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, cap, "cannot open directory: %s", strerror(errno));
        return -1;
    }
    char **out = NULL;
    int64_t n = 0, alloc = 0;
    struct dirent *ent;
    errno = 0;
    while ((ent = readdir(d)) != NULL) {
        const char *name = ent->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        if (!dirs && !image_name(name)) continue;
        char *full = path_join(dir, name);
        struct stat sb;
        int is_dir = stat(full, &sb) == 0 && S_ISDIR(sb.st_mode);
        free(full);
        if (is_dir != dirs) continue;
        if (n == alloc) {
            alloc = alloc ? 2 * alloc : 64;
            char **grown = realloc(out, (size_t)alloc * sizeof *out);
            if (!grown) {
                free_names(out, n);
                closedir(d);
                snprintf(err, cap, "out of memory");
                return -1;
            }
            out = grown;
        }
        out[n++] = str_dup(name);
        errno = 0;
    }
    int read_errno = errno;
    closedir(d);
    if (read_errno) {
        free_names(out, n);
        snprintf(err, cap, "cannot read directory: %s", strerror(read_errno));
        return -1;
    }
    if (n > 1) qsort(out, (size_t)n, sizeof *out, cmp_names);
    *names = out;
    *count = n;
    return 0;
}
