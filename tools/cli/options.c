/* The `lwfm` command: option parsing. Each command's options are one table
 * (cli_opt, cli.h) from which both the parser and the help are driven. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifdef _OPENMP
#include <omp.h>
#endif

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
        return cli_usage_error(cmd,
                               "--model is required (or the weight file as an argument: "
                               "lwfm %s MODEL.npz)",
                               cmd);
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

int cli_precision(const char *cmd, const char *text, lwfm_precision *out) {
    if (!strcmp(text, "fp32"))
        *out = LWFM_PRECISION_FP32;
    else if (!strcmp(text, "bf16"))
        *out = LWFM_PRECISION_BF16;
    else if (!strcmp(text, "int8"))
        *out = LWFM_PRECISION_INT8;
    else
        return cli_usage_error(cmd, "--precision takes 'fp32', 'bf16' or 'int8', got '%s'", text);
    return 0;
}

const char *cli_precision_name(lwfm_precision p) {
    return p == LWFM_PRECISION_BF16 ? "bf16" : p == LWFM_PRECISION_INT8 ? "int8" : "fp32";
}

int cli_convolutions(const char *cmd, const char *text, lwfm_convolutions *out) {
    if (!strcmp(text, "auto"))
        *out = LWFM_CONVOLUTIONS_AUTO;
    else if (!strcmp(text, "direct"))
        *out = LWFM_CONVOLUTIONS_DIRECT;
    else if (!strcmp(text, "winograd"))
        *out = LWFM_CONVOLUTIONS_WINOGRAD;
    else
        return cli_usage_error(cmd, "--convolutions takes 'auto', 'direct' or 'winograd', got '%s'",
                               text);
    return 0;
}

/* ---- option tables ----------------------------------------------------------- */

static void *field(void *opts, size_t offset) {
    return (char *)opts + offset;
}

/* The option of `cmd` that argument `arg` names (`--name` or `--name=...`,
 * `=` only for options that take a value), or NULL. */
static const cli_opt *find_opt(const cli_command *cmd, const char *arg) {
    for (int k = 0; k < cmd->n_opts; k++) {
        const cli_opt *o = &cmd->opts[k];
        size_t n = strlen(o->name);
        if (strncmp(arg, o->name, n) != 0) continue;
        if (arg[n] == '\0' || (arg[n] == '=' && o->kind != CLI_FLAG)) return o;
    }
    return NULL;
}

/* A list option given as `--name V1 V2 ...` (values up to the next argument
 * that starts with "--"): 0, or -1 after a usage message when there is none. */
static int take_list(cli_args *a, const cli_opt *o, cli_list *list) {
    int first = a->i + 1;
    while (a->i + 1 < a->argc && strncmp(a->argv[a->i + 1], "--", 2) != 0)
        list->items[list->n++] = a->argv[++a->i];
    if (a->i >= first) return 0;
    char what[32]; /* "PATH..." -> "path" */
    size_t n = 0;
    for (const char *p = o->arg; *p && *p != '.' && n + 1 < sizeof what; p++)
        what[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    what[n] = '\0';
    cli_usage_error(a->cmd, "option %s needs at least one %s", o->name, what);
    return -1;
}

/* One option at a->i into opts: 1 when taken, -1 after a usage message. */
static int take_opt(cli_args *a, const cli_opt *o, void *opts) {
    const char *arg = a->argv[a->i], *value = NULL;
    if (o->kind == CLI_FLAG) {
        *(int *)field(opts, o->field) = 1;
        return 1;
    }
    if (o->kind == CLI_LIST && !strcmp(arg, o->name))
        return take_list(a, o, field(opts, o->field)) ? -1 : 1;
    if (cli_option(a, o->name, &value) < 0) return -1;
    if (o->kind == CLI_LIST) {
        cli_list *list = field(opts, o->field);
        list->items[list->n++] = value;
    } else {
        *(const char **)field(opts, o->field) = value;
    }
    return 1;
}

/* Defaults set, lists allocated (argc values at most). 0, or -1 out of memory. */
static int init_opts(const cli_command *cmd, int argc, void *opts) {
    for (int k = 0; k < cmd->n_opts; k++) {
        const cli_opt *o = &cmd->opts[k];
        if (o->kind == CLI_VALUE && o->def) *(const char **)field(opts, o->field) = o->def;
        if (o->kind != CLI_LIST) continue;
        cli_list *list = field(opts, o->field);
        list->items = calloc((size_t)argc, sizeof *list->items);
        if (!list->items) return -1;
    }
    return 0;
}

void cli_free_options(const cli_command *cmd, void *opts) {
    for (int k = 0; k < cmd->n_opts; k++) {
        if (cmd->opts[k].kind != CLI_LIST) continue;
        cli_list *list = field(opts, cmd->opts[k].field);
        free(list->items);
        list->items = NULL;
        list->n = 0;
    }
}

int cli_parse_command(const cli_command *cmd, int argc, char **argv, void *opts, int *code) {
    cli_args a = {argc, argv, 2, cmd->name};
    const char **positional = field(opts, cmd->model_field);
    *code = EXIT_USAGE;
    if (init_opts(cmd, argc, opts)) {
        cli_free_options(cmd, opts);
        *code = EXIT_RUNTIME;
        return 1;
    }
    for (; a.i < argc; a.i++) {
        const char *arg = argv[a.i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            cli_help(stdout, cmd);
            *code = EXIT_OK;
            break;
        }
        const cli_opt *o = find_opt(cmd, arg);
        if (o && take_opt(&a, o, opts) < 0) break;
        if (o) continue;
        if (!*positional && arg[0] != '-' && arg[0] != '\0') { /* the model */
            *positional = arg;
            continue;
        }
        cli_usage_error(cmd->name, "unexpected argument '%s'", arg);
        break;
    }
    if (a.i >= argc) return 0;
    cli_free_options(cmd, opts);
    return 1;
}

/* One option's help: "  --name ARG", the help text from column cmd->column
 * (or two spaces further when the name is longer), its further lines
 * indented to the column, and " (default D)" when the option has a default
 * that its text does not mention. */
static void help_option(FILE *f, const cli_command *cmd, const cli_opt *o) {
    int n = fprintf(f, "  %s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(f, "%*s", n + 2 <= cmd->column ? cmd->column - n : 2, "");
    for (const char *p = o->help; *p; p++) {
        fputc(*p, f);
        if (*p == '\n') fprintf(f, "%*s", cmd->column, "");
    }
    if (o->def && !strstr(o->help, "default")) fprintf(f, " (default %s)", o->def);
    fputc('\n', f);
}

void cli_help(FILE *f, const cli_command *cmd) {
    fprintf(f, "Usage: lwfm %s %s\n\n%s\n", cmd->name, cmd->synopsis, cmd->about);
    for (int k = 0; k < cmd->n_opts; k++) help_option(f, cmd, &cmd->opts[k]);
}
