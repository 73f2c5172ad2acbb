/* The `lwfm` command: entry point, messages, option parsing, helpers.
 * See docs/cli.md. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zip.h>

#include "cli.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static const char kUsage[] =
    "Usage: lwfm <command> [options]\n"
    "\n"
    "Few-shot image classification with libLWFM (LWFM-SPM).\n"
    "\n"
    "Commands:\n"
    "  info      a weight file's method, configuration, input and feature shapes\n"
    "  classify  classify query images against a folder of labelled support images\n"
    "  eval      N-way K-shot accuracy over reproducible episodes of a dataset\n"
    "  bench     speed of this machine: backbone, episodes, streaming queries\n"
    "\n"
    "Options:\n"
    "  -h, --help     this help ('lwfm help <command>' or 'lwfm <command> --help'\n"
    "                 for a command's options)\n"
    "  -V, --version  versions of the program and of the library it runs on\n"
    "\n"
    "Exit status: 0 success, 1 failure (unreadable file, bad image, library error),\n"
    "2 usage error. Documentation: docs/cli.md.\n";

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

int cli_flag(cli_args *a, const char *name) {
    return strcmp(a->argv[a->i], name) == 0;
}

int cli_option(cli_args *a, const char *name, const char **value) {
    const char *arg = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0') return 0;
    if (a->i + 1 >= a->argc) {
        cli_usage_error(a->cmd, "option %s needs a value", name);
        return -1;
    }
    *value = a->argv[++a->i];
    return 1;
}

int cli_options(cli_args *a, const cli_string_option *opts, int n) {
    for (int k = 0; k < n; k++) {
        int r = cli_option(a, opts[k].name, opts[k].value);
        if (r) return r;
    }
    return 0;
}

int cli_parse(cli_args *a, const char *usage, const cli_bool_flag *flags, int n_flags,
              const cli_string_option *opts, int n_opts, int *code) {
    for (; a->i < a->argc; a->i++) {
        if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
            fputs(usage, stdout);
            *code = EXIT_OK;
            return 1;
        }
        int k = 0;
        while (k < n_flags && !cli_flag(a, flags[k].name)) k++;
        if (k < n_flags) {
            *flags[k].value = 1;
            continue;
        }
        int r = cli_options(a, opts, n_opts);
        if (r == 0 && a->positional && !*a->positional && a->argv[a->i][0] != '-' &&
            a->argv[a->i][0] != '\0') {
            *a->positional = a->argv[a->i];
            continue;
        }
        if (r == 0) cli_usage_error(a->cmd, "unexpected argument '%s'", a->argv[a->i]);
        if (r <= 0) {
            *code = EXIT_USAGE;
            return 1;
        }
    }
    return 0;
}

int cli_int(const char *cmd, const char *name, const char *text, int64_t lo, int64_t hi,
            int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno == ERANGE)
        return cli_usage_error(cmd, "%s expects an integer, got '%s'", name, text);
    if (v < lo || v > hi)
        return cli_usage_error(cmd, "%s must be in %lld..%lld, got %lld", name, (long long)lo,
                               (long long)hi, v);
    *out = v;
    return 0;
}

int cli_model_arg(const char *cmd, const char **model_path, const char *given, int required) {
    if (given && *model_path)
        return cli_usage_error(cmd, "the model is given twice ('%s' and --model %s)", given,
                               *model_path);
    if (given) *model_path = given;
    if (required && !*model_path)
        return cli_usage_error(cmd, "--model is required (or the weight file as an argument: "
                                    "lwfm %s MODEL.npz)", cmd);
    return 0;
}

int cli_threads(const char *cmd, const char *text) {
    int64_t n = 0;
    if (!text) return 0;
    if (cli_int(cmd, "--threads", text, 1, 1024, &n)) return EXIT_USAGE;
#ifdef _OPENMP
    omp_set_num_threads((int)n);
#endif
    return 0;
}

int cli_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1; /* a build without OpenMP: the library runs serially */
#endif
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

int cli_precision(const char *cmd, const char *text, lwfm_precision *out) {
    if (!strcmp(text, "fp32"))
        *out = LWFM_PRECISION_FP32;
    else if (!strcmp(text, "bf16"))
        *out = LWFM_PRECISION_BF16;
    else
        return cli_usage_error(cmd, "--precision takes 'fp32' or 'bf16', got '%s'", text);
    return 0;
}

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
    return load_model_precision(path, LWFM_PRECISION_FP32);
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

lwfm_model *load_model_precision(const char *path, lwfm_precision precision) {
    lwfm_model *model = NULL;
    lwfm_load_options *opts = NULL;
    lwfm_status st = lwfm_load_options_create(&opts);
    if (!st) st = lwfm_load_options_set_precision(opts, precision);
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

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(kUsage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") && argc == 3) { /* lwfm help CMD: that command's help */
        static const char *const kCmds[] = {"info", "classify", "eval", "bench"};
        for (int k = 0; k < 4; k++) {
            if (strcmp(argv[2], kCmds[k])) continue;
            char *args[] = {argv[0], argv[2], "--help", NULL};
            return main(3, args);
        }
        return cli_usage_error(NULL, "no command '%s' (commands: info, classify, eval, bench)",
                               argv[2]);
    }
    if (argc > 3 && !strcmp(cmd, "help"))
        return cli_usage_error(NULL, "'lwfm help' takes one command name");
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(kUsage, stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("lwfm %s (libLWFM %s)\n", LWFM_VERSION_STRING, lwfm_version());
        return EXIT_OK;
    }
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "classify")) return cmd_classify(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (cmd[0] == '-') return cli_usage_error(NULL, "unknown option '%s'", cmd);
    return cli_usage_error(NULL, "unknown command '%s' (commands: info, classify, eval, bench)",
                           cmd);
}
