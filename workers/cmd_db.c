/*
 * cmd_db.c: `claimer db`, the embedded PostgreSQL that claimer runs when
 * no DSN is given: a private cluster in a local state directory, reached
 * over a unix socket only.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "embedded.h"

static void print_info(const cl_embedded_info_t *info) {
  printf("state dir:  %s\n"
         "data dir:   %s\n"
         "socket dir: %s\n"
         "log:        %s\n"
         "dsn:        %s\n"
         "running:    %s\n",
         info->state_dir, info->data_dir, info->socket_dir, info->log_file,
         info->dsn, info->running ? "yes" : "no");
}

int cmd_db(int argc, char **argv) {
  static const struct option opts[] = {
      {"state-dir", required_argument, NULL, 's'},
      {"help", no_argument, NULL, 'h'},
      {0}};
  const char *state = NULL;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 's':
      state = optarg;
      break;
    case 'h':
      printf("usage: claimer db start|stop|status|url [--state-dir DIR]\n\n"
             "The embedded PostgreSQL used when no DSN is given (no --dsn,\n"
             "no CLAIMER_DSN).  It lives in DIR (default: CLAIMER_HOME, else\n"
             "/var/lib/claimer as root, else $XDG_STATE_HOME/claimer or\n"
             "~/.local/state/claimer), listens on a unix socket only, and is\n"
             "created and started by any command that needs it.  As root it\n"
             "runs as the user postgres (or CLAIMER_PG_USER): PostgreSQL\n"
             "refuses to run as root.\n\n"
             "  start   create when missing, start when stopped; print where\n"
             "  stop    stop it (fast shutdown)\n"
             "  status  where it lives and whether it runs (exit 3 when not)\n"
             "  url     print the connection string\n");
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind != argc - 1)
    return cli_usage_error("expected one of start, stop, status, url");
  const char *verb = argv[optind];
  cl_embedded_info_t info;
  char why[2048];
  if (strcmp(verb, "start") == 0) {
    if (cl_embedded_ensure(state, &info, why, sizeof why) != 0) {
      cli_err("%s", why);
      return EXIT_ERROR;
    }
    printf("%s\n", info.created   ? "created and started"
                   : info.started ? "started"
                                  : "already running");
    print_info(&info);
    return EXIT_OK;
  }
  if (strcmp(verb, "stop") == 0) {
    if (cl_embedded_stop(state, why, sizeof why) != 0) {
      cli_err("%s", why);
      return EXIT_ERROR;
    }
    printf("stopped\n");
    return EXIT_OK;
  }
  if (strcmp(verb, "status") == 0 || strcmp(verb, "url") == 0) {
    if (cl_embedded_locate(state, &info) != 0) {
      cli_err("cannot locate the embedded PostgreSQL");
      return EXIT_ERROR;
    }
    if (verb[0] == 'u') {
      printf("%s\n", info.dsn);
      return EXIT_OK;
    }
    print_info(&info);
    return info.running ? EXIT_OK : 3;
  }
  return cli_usage_error("unknown action \"%s\" (start, stop, status, url)",
                         verb);
}
