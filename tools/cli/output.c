/* The `lwfm` command: messages on stderr, JSON and TSV output, small helpers. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

void cli_error(const char *what, const char *path, const char *reason_fmt, ...) {
    char reason[1024];
    va_list ap;
    va_start(ap, reason_fmt);
    vsnprintf(reason, sizeof reason, reason_fmt, ap);
    va_end(ap);
    if (path)
        fprintf(stderr, "lwfm: %s (%s): %s\n", what, path, reason);
    else
        fprintf(stderr, "lwfm: %s: %s\n", what, reason);
}

void cli_hint(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("  hint: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("lwfm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "Try 'lwfm %s --help'.\n", cmd);
    else
        fputs("Try 'lwfm --help'.\n", stderr);
    return EXIT_USAGE;
}

void json_f32(FILE *f, float v) {
    char t[32];
    for (int p = 1; p <= 9 && isfinite(v); p++) {
        snprintf(t, sizeof t, "%.*g", p, (double)v);
        if (strtof(t, NULL) == v) {
            fputs(t, f);
            return;
        }
    }
    fprintf(f, "%.9g", (double)v);
}

void json_f64(FILE *f, double v) {
    char t[32];
    for (int p = 1; p <= 17 && isfinite(v); p++) {
        snprintf(t, sizeof t, "%.*g", p, v);
        if (strtod(t, NULL) == v) {
            fputs(t, f);
            return;
        }
    }
    fprintf(f, "%.17g", v);
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), 0 when it is not one. */
static int utf8_length(const unsigned char *p) {
    unsigned c = p[0];
    int n;
    unsigned lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int k = 2; k < n; k++)
        if (p[k] < 0x80 || p[k] > 0xbf) return 0;
    return n;
}

void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x80) { /* JSON is UTF-8: a byte that is not becomes U+FFFD */
            int n = utf8_length(p);
            if (n == 0) {
                fputs("\xef\xbf\xbd", f);
            } else {
                fwrite(p, 1, (size_t)n, f);
                p += n - 1;
            }
            continue;
        }
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void tsv_field(FILE *f, const char *s) {
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '\\':
            fputs("\\\\", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            fputc(*p, f);
        }
    }
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void out_of_memory(void) {
    fputs("lwfm: out of memory\n", stderr);
    exit(EXIT_RUNTIME);
}

char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) out_of_memory();
    memcpy(d, s, n);
    return d;
}

char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + (size_t)slash + b + 1);
    if (!p) out_of_memory();
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

const char *method_name(lwfm_method m) {
    const char *name = lwfm_method_name(m); /* NULL: no lwfm_method */
    return name ? name : "unknown";
}
