/* The `lwfm` command: entry point, the command table, the top-level help.
 * See docs/cli.md. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const cli_command *const kCommands[] = {&cli_cmd_info, &cli_cmd_classify, &cli_cmd_eval,
                                               &cli_cmd_bench};
enum { N_COMMANDS = sizeof kCommands / sizeof kCommands[0] };

static const cli_command *find_command(const char *name) {
    for (int k = 0; k < N_COMMANDS; k++)
        if (!strcmp(kCommands[k]->name, name)) return kCommands[k];
    return NULL;
}

/* "info, classify, eval, bench", for messages. */
static const char *command_names(void) {
    static char names[128];
    size_t n = 0;
    for (int k = 0; k < N_COMMANDS && n < sizeof names; k++)
        n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", k ? ", " : "",
                              kCommands[k]->name);
    return names;
}

/* `lwfm --help`: the commands from the table, each with its summary. */
static void usage(FILE *f) {
    int width = 0;
    for (int k = 0; k < N_COMMANDS; k++) {
        int n = (int)strlen(kCommands[k]->name);
        if (n > width) width = n;
    }
    fputs("Usage: lwfm <command> [options]\n"
          "\n"
          "Few-shot image classification with libLWFM (LWFM-SPM).\n"
          "\n"
          "Commands:\n",
          f);
    for (int k = 0; k < N_COMMANDS; k++)
        fprintf(f, "  %-*s  %s\n", width, kCommands[k]->name, kCommands[k]->summary);
    fputs("\n"
          "Options:\n"
          "  -h, --help     this help ('lwfm help <command>' or 'lwfm <command> --help'\n"
          "                 for a command's options)\n"
          "  -V, --version  versions of the program and of the library it runs on\n"
          "\n"
          "Exit status: 0 success, 1 failure (unreadable file, bad image, library error),\n"
          "2 usage error. Documentation: docs/cli.md.\n",
          f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "help") && argc == 3) { /* lwfm help CMD: that command's help */
        const cli_command *cmd = find_command(argv[2]);
        if (!cmd)
            return cli_usage_error(NULL, "no command '%s' (commands: %s)", argv[2],
                                   command_names());
        cli_help(stdout, cmd);
        return EXIT_OK;
    }
    if (argc > 3 && !strcmp(name, "help"))
        return cli_usage_error(NULL, "'lwfm help' takes one command name");
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(name, "-V") || !strcmp(name, "--version")) {
        printf("lwfm %s (libLWFM %s)\n", LWFM_VERSION_STRING, lwfm_version());
        return EXIT_OK;
    }
    const cli_command *cmd = find_command(name);
    if (cmd) return cmd->run(argc, argv);
    if (name[0] == '-') return cli_usage_error(NULL, "unknown option '%s'", name);
    return cli_usage_error(NULL, "unknown command '%s' (commands: %s)", name, command_names());
}
