/* The `lwfm` command: shared declarations.
 *
 *   main.c          entry point, the command table, `lwfm --help`
 *   options.c       option tables: parsing and generated help; value checks
 *   output.c        messages on stderr, JSON and TSV output, small helpers
 *   models.c        models by name, loading (PyTorch checkpoints named), preprocessing
 *   image.c         image files and folders
 *   decode.c        PNG (libpng), JPEG (libjpeg), WebP (libwebp) decoding from memory
 *   dataset.c       image folders, Omniglot .npz archives, the episode sampler
 *   explain.c       `lwfm classify --explain`: one PNG per query
 *   cmd_info.c      `lwfm info`
 *   cmd_classify.c  `lwfm classify`
 *   cmd_eval.c      `lwfm eval`
 *   cmd_bench.c     `lwfm bench`: speed on this machine
 *
 * A command is a cli_command (its option table, its help text and its
 * function) in its own cmd_<name>.c, whose work runs in stages: parse (the
 * table) -> options (checked values) -> load -> score -> print (text / JSON).
 *
 * Only the public libLWFM API is used (lwfm/lwfm.h). */
#ifndef LWFM_CLI_H
#define LWFM_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <lwfm/lwfm.h>

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

/* Exit statuses. */
#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

/* Refused before allocating: a side over MAX_IMAGE_SIDE pixels, more than
 * MAX_IMAGE_PIXELS pixels, or a file over MAX_IMAGE_FILE bytes. */
#define MAX_IMAGE_SIDE 32768
#define MAX_IMAGE_PIXELS ((uint64_t)1 << 28)
#define MAX_IMAGE_FILE ((uint64_t)1 << 30)

/* Size of the error text buffers passed around. */
#define ERR_CAP 512

/* ---- output.c: messages ------------------------------------------------------ */

/* "lwfm: <what> (<path>): <reason>" on stderr; path may be NULL. */
void cli_error(const char *what, const char *path, const char *reason_fmt, ...) CLI_PRINTF(3, 4);
/* "  hint: ..." on stderr. */
void cli_hint(const char *fmt, ...) CLI_PRINTF(1, 2);
/* A usage error of command `cmd` (NULL: the top level); returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);

/* ---- options.c: command-line parsing helpers --------------------------------- */

/* Command-line cursor. An option is `--name VALUE` or `--name=VALUE`. */
typedef struct cli_args {
    int argc;
    char **argv;
    int i;           /* index of the current argument */
    const char *cmd; /* for messages */
} cli_args;

/* 1 when argv[i] is option `name`: *value receives its value and the cursor
 * moves past it; -1 (after a usage message) when the value is missing. */
int cli_option(cli_args *a, const char *name, const char **value);
/* ---- options.c: commands and their option tables -------------------------
 *
 * Each command describes its options once, in a table: the parser reads the
 * command line with it and the help (`lwfm help CMD`, `lwfm CMD --help`) is
 * printed from it, so the two cannot disagree. Values land in the command's
 * own options struct, at each option's offsetof(). */

typedef enum cli_opt_kind {
    CLI_FLAG,  /* --name, no value: an int set to 1 */
    CLI_VALUE, /* --name V or --name=V: a const char * (the argument itself) */
    CLI_LIST   /* --name V1 V2 ... (up to the next "--" argument) or --name=V,
                  repeatable: a cli_list */
} cli_opt_kind;

typedef struct cli_list {
    const char **items; /* argc entries allocated by the parser */
    int64_t n;
} cli_list;

typedef struct cli_opt {
    const char *name; /* "--way" */
    const char *arg;  /* the value's name in the help ("N", "PATH..."); NULL for a flag */
    const char *def;  /* CLI_VALUE: the value when not given (NULL: none); the help
                         adds " (default D)" unless its text mentions a default */
    const char *help; /* lines separated by '\n', without the last one's */
    cli_opt_kind kind;
    size_t field; /* offsetof() the value in the command's options struct */
} cli_opt;

typedef struct cli_command {
    const char *name;     /* "eval" */
    const char *summary;  /* one line for `lwfm --help` */
    const char *synopsis; /* the usage line after "Usage: lwfm NAME " */
    const char *about;    /* the help's paragraph, lines ending in '\n' */
    const cli_opt *opts;
    int n_opts;
    int column;         /* where the help of the options starts */
    size_t model_field; /* offsetof() the const char * that receives the one
                           argument that is not an option (the model) */
    int (*run)(int argc, char **argv);
} cli_command;

/* The commands, in the order of `lwfm --help` (cmd_<name>.c). */
extern const cli_command cli_cmd_info, cli_cmd_classify, cli_cmd_eval, cli_cmd_bench;

/* Parse argv[2..] of command `cmd` into `opts` (zeroed by the caller):
 * defaults first, then the arguments; --help / -h prints the help. The one
 * argument that is not an option (the model, as in `lwfm info MODEL.npz`)
 * goes to cmd->model_field; a second is a usage error. Returns
 * 0 to go on (free the lists with cli_free_options()), or 1 with *code the
 * status the command returns at once: EXIT_OK after the help, EXIT_USAGE
 * after a usage message (EXIT_RUNTIME out of memory). */
int cli_parse_command(const cli_command *cmd, int argc, char **argv, void *opts, int *code);
void cli_free_options(const cli_command *cmd, void *opts);
/* The command's help, generated from its table. */
void cli_help(FILE *f, const cli_command *cmd);
/* Strict integer parsing: the whole text, in [lo, hi]. 0 on success,
 * otherwise a usage message naming `name` and EXIT_USAGE. */
int cli_int(const char *cmd, const char *name, const char *text, int64_t lo, int64_t hi,
            int64_t *out);
/* The model given as --model PATH or as the positional argument (`given`):
 * *model_path set; 0, or EXIT_USAGE after a message when it is given twice
 * or not at all (`required`). */
int cli_model_arg(const char *cmd, const char **model_path, const char *given, int required);
/* --threads N (NULL: the default, OMP_NUM_THREADS or all cores): sets the
 * OpenMP thread count of the calls that follow. 0, or EXIT_USAGE. */
int cli_threads(const char *cmd, const char *text);
/* The number of threads the library will use. */
int cli_max_threads(void);

/* ---- output.c: JSON, TSV and small helpers ----------------------------- */

void json_string(FILE *f, const char *s);           /* a quoted, escaped JSON string (invalid UTF-8 as U+FFFD) */
/* Numbers in the shortest form that reads back as the same value: float32
 * (0.2, not 0.200000003) or double (56, not 56.000000000000007). */
void json_f32(FILE *f, float v);
void json_f64(FILE *f, double v);
void tsv_field(FILE *f, const char *s); /* a tab-separated field: \\ \t \n \r escaped as in C */
double now_seconds(void);                           /* monotonic clock */
char *path_join(const char *dir, const char *name); /* malloc'd "dir/name" */
char *str_dup(const char *s);
const char *method_name(lwfm_method m);

/* ---- image.c ---------------------------------------------------------- */

typedef struct cli_image {
    int64_t height, width, channels; /* channels: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA */
    lwfm_pixel_format format;        /* U8, or U16 in native byte order */
    void *pixels;                    /* packed rows, malloc'd */
} cli_image;

/* Decode a PNG, JPEG or WebP file (recognised by its first bytes, whatever
 * its name), turned as its EXIF orientation says. 0 on success; otherwise -1
 * with a reason in err (no path in it). */
int image_read(const char *path, cli_image *img, char *err, size_t cap);
/* The same from `size` bytes in memory (decode.c; what image_read and the
 * fuzz target tests/fuzz/fuzz_image.c call). */
int image_decode(const unsigned char *data, size_t size, cli_image *img, char *err, size_t cap);
/* Only the headers: the format is known, the size within the limits. 0, or
 * -1 with a reason in err. image_check_file() reads the file first. */
int image_check(const unsigned char *data, size_t size, char *err, size_t cap);
int image_check_file(const char *path, char *err, size_t cap);
void image_free(cli_image *img);

/* 1 when the file name ends in .png, .jpg, .jpeg or .webp (any case): the
 * files lwfm.episodes.FolderSet lists. */
int image_name(const char *name);

/* Sorted names (strcmp order, which is Python's sorted() on UTF-8) of the
 * entries of `dir`: sub-directories when `dirs`, else the other entries but
 * hidden ones (names starting with '.'). 0 on success, -1 with a reason in
 * err. */
int list_dir(const char *dir, int dirs, char ***names, int64_t *count, char *err, size_t cap);
/* The files of `dir` that are images (an image name, another image format's
 * name such as .bmp, or an image's first bytes), sorted; every other file is
 * named on stderr ("skipping file (PATH): not an image"). Images in formats
 * the tool does not read stay in: decoding them gives the reason. */
int list_images(const char *dir, char ***names, int64_t *count, char *err, size_t cap);
void free_names(char **names, int64_t count);

/* ---- dataset.c -------------------------------------------------------- */

/* Classes of examples: a folder tree (one sub-folder of images per class)
 * or an Omniglot .npz (bool (classes, drawings, H, W), True = paper). */
typedef struct dataset {
    int is_npz;
    char *path;
    int64_t n_classes;
    char **names;    /* class names */
    int64_t *sizes;  /* examples per class */
    char ***files;   /* folder: per class, file names */
    uint8_t *pixels; /* npz: (classes, drawings, H, W) grey 0 / 255 */
    int64_t drawings, height, width;
} dataset;

/* 0 on success, -1 after printing the error. */
int dataset_open(dataset *ds, const char *path);
void dataset_free(dataset *ds);
/* Path of an example (malloc'd; for an npz "PATH[class C, drawing I]"). */
char *dataset_item_path(const dataset *ds, int64_t c, int64_t i);
/* The example's pixels: decoded from its file, or a view into the archive
 * (then img->pixels is not owned: use dataset_image_free). 0 / -1 + err. */
int dataset_image(const dataset *ds, int64_t c, int64_t i, cli_image *img, char *err, size_t cap);
void dataset_image_free(const dataset *ds, cli_image *img);
/* Drop example i of class c (a bad image). Classes left empty are removed
 * when dataset_compact() runs. */
void dataset_drop(dataset *ds, int64_t c, int64_t i);
void dataset_compact(dataset *ds);

/* The episode sampler of lwfm.episodes.EpisodeSampler. */
typedef struct sampler {
    uint64_t state;
    int64_t way, shot, query;
    const int64_t *sizes;
    int64_t *eligible, n_eligible;
    int64_t *perm;   /* scratch, max(n_eligible, largest class) */
    int64_t *chosen; /* the episode's classes, by label */
} sampler;

/* One episode: (class, example) items and labels 0..way-1; supports are
 * way * shot, queries way * query, in label order. */
typedef struct episode {
    int64_t *s_class, *s_index, *q_class, *q_index;
    int32_t *s_label, *q_label;
    int64_t n_support, n_query;
} episode;

/* 0, or -1 with the reason in err (Python's ValueError messages). */
int sampler_init(sampler *s, const int64_t *sizes, int64_t n_classes, int64_t way, int64_t shot,
                 int64_t query, uint64_t seed, char *err, size_t cap);
void sampler_free(sampler *s);
int episode_alloc(episode *e, int64_t way, int64_t shot, int64_t query);
void episode_free(episode *e);
void sampler_episode(sampler *s, episode *e);

/* ---- explain.c: `lwfm classify --explain DIR` -------------------------- */

typedef struct explainer explainer;

/* The model's pair view (LWE / SPM of an lwfm-spm model, or RCN's), and `dir`
 * created (with its parents) and writable. 0, or -1 after printing
 * "--explain (<model path>): ..." (a model without such a view: its method). */
int explain_open(explainer **out, lwfm_model *model, const char *model_path, const char *dir);
/* Explain query `query_index` (its preprocessed input and file), predicted
 * as class `predicted`, against the support images (preprocessed inputs,
 * files and labels, n_support of them, the same on every call); the class
 * names and the query's probabilities (way of each) are written in the
 * picture: writes
 * DIR/<NNN>_<stem>.png, prints "explained ..." on stderr and returns the
 * PNG's path (malloc'd), or NULL after printing the error. */
char *explain_query(explainer *ex, const float *support_inputs, char *const *support_paths,
                    const int32_t *support_labels, int64_t n_support, const float *query_input,
                    const char *query_path, int64_t query_index, int32_t predicted,
                    char *const *class_names, const float *probabilities, int64_t way);
void explain_close(explainer *ex); /* NULL is accepted */

/* Shared by the commands: load a model, printing the error. */
lwfm_model *load_model(const char *path);
/* The model's configuration as JSON (malloc'd; NULL out of memory or on a
 * library error, lwfm_last_error() then says which). */
char *model_config_json(const lwfm_model *model);
/* models.c: a MODEL argument to a path: as given when it is a file or holds a
 * '/', else NAME or NAME.npz in $LWFM_MODEL_PATH, then in the installed
 * models folder (malloc'd; the argument itself when nothing matches). */
char *find_model(const char *name);
/* The folders find_model() searches, for messages. */
void model_search_path(char *buf, size_t cap);
/* The same with a backbone precision (`--precision`). */
lwfm_model *load_model_precision(const char *path, lwfm_precision precision,
                                  lwfm_convolutions convolutions);
/* Parse a --precision value ("fp32", "bf16" or "int8"); 0, or EXIT_USAGE after a
 * usage message. */
int cli_precision(const char *cmd, const char *text, lwfm_precision *out);
/* The name cli_precision reads for p. */
const char *cli_precision_name(lwfm_precision p);
/* --convolutions auto|direct|winograd: 0, or EXIT_USAGE after the message. */
int cli_convolutions(const char *cmd, const char *text, lwfm_convolutions *out);
/* Decode + preprocess one file into out (model input floats). 0 / -1 + err. */
int preprocess_file(const lwfm_model *model, const char *path, float *out, size_t count, char *err,
                    size_t cap);

#endif
