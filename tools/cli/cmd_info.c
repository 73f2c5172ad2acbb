/* `lwfm info`: a weight file's method, configuration, input and feature
 * shapes. Stages: parse -> options -> load -> describe -> print. */
#include <stddef.h>
#include <stdlib.h>

#include "cli.h"

typedef struct info_options {
    const char *model, *given; /* --model, or the model as an argument */
    int json;
} info_options;

static const cli_opt kOptions[] = {
    {"--model", "PATH", NULL,
     "weight file (.npz) or an installed model's name (omniglot);\n"
     "the --model may be left out",
     CLI_VALUE, offsetof(info_options, model)},
    {"--json", NULL, NULL, "print one JSON object", CLI_FLAG, offsetof(info_options, json)},
};

static int cmd_info(int argc, char **argv);

const cli_command cli_cmd_info = {
    "info",
    "a weight file's method, configuration, input and feature shapes",
    "[--model] MODEL.npz [--json]",
    "A weight file's method, configuration (backbone, metric parameters,\n"
    "preprocessing), the input shape it expects and the feature-map shape of\n"
    "one such input.\n",
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    16,
    offsetof(info_options, given),
    cmd_info};

/* What `info` prints. */
typedef struct info_result {
    const char *method;
    char *config; /* JSON, malloc'd */
    int64_t c, h, w, fc, fh, fw;
} info_result;

/* 0, or -1 after the error. */
static int describe(const lwfm_model *model, const char *model_path, info_result *r) {
    r->config = model_config_json(model);
    lwfm_status st = r->config ? LWFM_OK : LWFM_ERR_OUT_OF_MEMORY;
    if (!st) st = lwfm_model_input_shape(model, &r->c, &r->h, &r->w);
    if (!st) st = lwfm_model_feature_shape(model, r->h, r->w, &r->fc, &r->fh, &r->fw);
    if (st) {
        cli_error("cannot describe model", model_path, "%s",
                  *lwfm_last_error() ? lwfm_last_error() : lwfm_status_string(st));
        return -1;
    }
    r->method = method_name(lwfm_model_method(model));
    return 0;
}

static void print_json(const char *model_path, const info_result *r) {
    fputs("{\"model\": ", stdout);
    json_string(stdout, model_path);
    printf(", \"method\": \"%s\", \"input_shape\": [%lld, %lld, %lld], "
           "\"feature_shape\": [%lld, %lld, %lld], \"library_version\": ",
           r->method, (long long)r->c, (long long)r->h, (long long)r->w, (long long)r->fc,
           (long long)r->fh, (long long)r->fw);
    json_string(stdout, lwfm_version());
    printf(", \"config\": %s}\n", r->config);
}

static void print_text(const char *model_path, const info_result *r) {
    printf("model     %s\n", model_path);
    printf("method    %s\n", r->method);
    printf("input     %lld x %lld x %lld (channels x height x width)\n", (long long)r->c,
           (long long)r->h, (long long)r->w);
    printf("features  %lld x %lld x %lld for a %lld x %lld input\n", (long long)r->fc,
           (long long)r->fh, (long long)r->fw, (long long)r->h, (long long)r->w);
    printf("config    %s\n", r->config);
}

static int cmd_info(int argc, char **argv) {
    info_options o = {0};
    int code;
    if (cli_parse_command(&cli_cmd_info, argc, argv, &o, &code)) return code;
    if (cli_model_arg("info", &o.model, o.given, 1)) return EXIT_USAGE;

    lwfm_model *model = load_model(o.model);
    if (!model) return EXIT_RUNTIME;
    info_result r = {0};
    int rc = EXIT_RUNTIME;
    if (!describe(model, o.model, &r)) {
        if (o.json)
            print_json(o.model, &r);
        else
            print_text(o.model, &r);
        rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    }
    free(r.config);
    lwfm_model_destroy(model);
    return rc;
}
