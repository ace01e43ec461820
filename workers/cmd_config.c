/*
 * cmd_config.c: `claimer config check [FILE]`, which builds the
 * configuration the way the daemons do (the file, then the CLAIMER_*
 * environment), checks it, and prints the result with where each value came
 * from, so that a config can be tried before a daemon is restarted with it.
 * Nothing here touches the database.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"

static const cli_flag_key_t flag_keys[] = {{"dsn", "dsn"}};

static void usage(FILE *out) {
  fprintf(out,
          "usage: claimer config check [--dsn DSN | --dsn-file FILE] "
          "[FILE]\n"
          "\n"
          "Reads the YAML config FILE (without FILE, the file named by\n"
          "CLAIMER_CONFIG; with neither, the defaults), applies the CLAIMER_*\n"
          "environment variables over it (CLAIMER_WORKER_LEASE=45s, ...),\n"
          "then --dsn or --dsn-file as the daemons would, checks the result,\n"
          "and prints the effective config as YAML, each key with a comment\n"
          "saying where its value came from.  The dsn's password is shown as\n"
          "***, and so are the hook URL's password and query values.  Nothing\n"
          "connects to the database.\n"
          "\n" CLI_DSN_HELP "\n"
          "Exit status: 0 when the config is good, 2 when it is not (the\n"
          "message names the file, line and column of the fault).\n");
}

/* Runs the check of the file path (may be NULL) with the flags fs; returns
 * an exit status. */
static int check(const char *path, const cli_flags_t *fs) {
  cl_config_t cfg;
  char why[1024];
  int rc = 0;
  cl_config_init(&cfg);
  if (path != NULL)
    rc = cl_config_load_file(&cfg, path, why, sizeof why);
  if (rc == 0)
    rc = cl_config_apply_env(&cfg, why, sizeof why);
  for (int i = 0; rc == 0 && i < fs->n; i++)
    rc = cl_config_set(&cfg, fs->path[i], fs->value[i], fs->origin[i], why,
                       sizeof why);
  if (rc == 0)
    rc = cl_config_validate(&cfg, why, sizeof why);
  if (rc != 0) {
    cli_err("%s", why);
    cl_config_free(&cfg);
    return rc == CL_ENOMEM ? EXIT_ERROR : EXIT_USAGE;
  }
  rc = cl_config_print(&cfg, stdout);
  cl_config_free(&cfg);
  if (rc != 0) {
    cli_err("cannot write the config: %s", cl_strerror(rc));
    return EXIT_ERROR;
  }
  return EXIT_OK;
}

int cmd_config(int argc, char **argv) {
  static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
  static const struct option check_opts[] = {
      {"help", no_argument, NULL, 'h'}, CLI_DSN_OPTIONS, {0}};
  static cli_flags_t fs;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
    if (ch != 'h')
      return cli_bad_option(argv, optopt);
    usage(stdout);
    return EXIT_OK;
  }
  if (optind >= argc)
    return cli_usage_error("expected a subcommand: check");
  const char *verb = argv[optind];
  if (strcmp(verb, "check") != 0)
    return cli_usage_error("unknown subcommand \"%s\" (expected check)", verb);
  /* The options of `check` itself: parse what follows the verb afresh,
   * with the verb as argv[0] (optind 0 makes glibc reset its state). */
  argc -= optind;
  argv += optind;
  optind = 0;
  while ((ch = getopt_long(argc, argv, ":h", check_opts, NULL)) != -1) {
    if (ch == 'D' || ch == CLI_OPT_DSN_FILE) {
      /* Checked by cl_config_set() with the rest, and shown redacted. */
      if (cli_flag_arg(&fs, ch == 'D' ? &flag_keys[0] : NULL, optarg) != 0)
        return EXIT_USAGE;
      continue;
    }
    if (ch != 'h')
      return cli_bad_option(argv, optopt);
    usage(stdout);
    return EXIT_OK;
  }
  if (argc - optind > 1)
    return cli_usage_error("expected at most one FILE");
  const char *path = optind < argc ? argv[optind] : getenv("CLAIMER_CONFIG");
  if (path != NULL && *path == '\0')
    return cli_usage_error("CLAIMER_CONFIG is set but empty");
  return check(path, &fs);
}
