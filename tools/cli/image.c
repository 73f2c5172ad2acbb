/* Image files (decoded by decode.c: PNG through libpng, JPEG through
 * libjpeg, WebP through libwebp, chosen by the file's first bytes); directory listings of image
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

/* Read the whole file into a malloc'd buffer. 0, or -1 with err. */
static int read_file(const char *path, unsigned char **out, size_t *out_size, char *err,
                     size_t cap) {
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
    if (read_error || got != size) {
        snprintf(err, cap, "read error: %s", read_error ? strerror(errno) : "file changed size");
        free(data);
        return -1;
    }
    *out = data;
    *out_size = size;
    return 0;
}

int image_read(const char *path, cli_image *img, char *err, size_t cap) {
    memset(img, 0, sizeof *img);
    unsigned char *data;
    size_t size;
    if (read_file(path, &data, &size, err, cap)) return -1;
    int rc = image_decode(data, size, img, err, cap);
    free(data);
    return rc;
}

int image_check_file(const char *path, char *err, size_t cap) {
    unsigned char *data;
    size_t size;
    if (read_file(path, &data, &size, err, cap)) return -1;
    int rc = image_check(data, size, err, cap);
    free(data);
    return rc;
}

static int name_ends(const char *name, const char *const *ext, int n_ext) {
    size_t n = strlen(name);
    for (int k = 0; k < n_ext; k++) {
        size_t e = strlen(ext[k]);
        if (n >= e && strcasecmp(name + n - e, ext[k]) == 0) return 1;
    }
    return 0;
}

int image_name(const char *name) {
    static const char *const kExt[] = {".png", ".jpg", ".jpeg", ".webp"};
    return name_ends(name, kExt, 4);
}

/* Whether a file that has no image name is still an image, of a format we
 * read or not (then decoding says which): an image-format name, or the
 * first bytes of one. */
static int image_like(const char *path, const char *name) {
    static const char *const kOther[] = {".bmp",  ".gif", ".tif", ".tiff", ".heic", ".heif",
                                         ".avif", ".jxl", ".ppm", ".pgm",  ".pnm",  ".ico"};
    if (name_ends(name, kOther, 12)) return 1;
    unsigned char b[12] = {0};
    /* O_NONBLOCK: a FIFO must not stall the listing; it is no image */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return 1; /* unreadable (a dangling link): decoding reports it */
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return 0;
    }
    ssize_t got = read(fd, b, sizeof b);
    close(fd);
    size_t n = got > 0 ? (size_t)got : 0;
    return (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) ||
           (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) ||
           (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) ||
           (n >= 4 && memcmp(b, "GIF8", 4) == 0) || (n >= 2 && memcmp(b, "BM", 2) == 0) ||
           (n >= 4 && (memcmp(b, "II*\0", 4) == 0 || memcmp(b, "MM\0*", 4) == 0)) ||
           (n >= 8 && memcmp(b + 4, "ftyp", 4) == 0);
}

int list_images(const char *dir, char ***names, int64_t *count, char *err, size_t cap) {
    char **all = NULL;
    int64_t n = 0, k = 0;
    if (list_dir(dir, 0, &all, &n, err, cap)) return -1;
    for (int64_t i = 0; i < n; i++) {
        char *path = path_join(dir, all[i]);
        if (image_name(all[i]) || image_like(path, all[i])) {
            all[k++] = all[i];
        } else {
            cli_error("skipping file", path, "not an image (PNG, JPEG and WebP files are read)");
            free(all[i]);
        }
        free(path);
    }
    *names = all;
    *count = k;
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
        if (!dirs && name[0] == '.') continue; /* hidden files, as ls */
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
