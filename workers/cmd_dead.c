/*
 * cmd_dead.c: `claimer dead list|retry|discard`, the dead letters for a
 * person: see what died and why, put items back for a new round (attempts
 * reset, the old error kept in the item's history), or drop them for good.
 * Arguments are checked before connecting, so a bad one changes nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: claimer dead list [-q QUEUE] [--limit N] [--json]\n"
          "       claimer dead retry (--id ID [--id ID ...] | -q QUEUE --all)\n"
          "       claimer dead discard (--id ID [--id ID ...] | -q QUEUE "
          "--all)\n"
          "\n"
          "Dead items spent their attempts, or their handler failed them for "
          "good.\n"
          "  list     oldest first: item, queue, attempts, when it died, its "
          "error\n"
          "           (--json: one object per line, with the payload)\n"
          "  retry    back to ready now, attempts reset to 0; the error it "
          "died with\n"
          "           is kept in the item's history\n"
          "  discard  out of the dead letters for good (the item_id stays "
          "taken)\n"
          "\n"
          "Exit status: 0; 1 when a named item is not dead (the others are "
          "still\n"
          "handled) or on a database error; 2 on bad usage.\n"
          "\n"
          "Every form takes the database options:\n" CLI_DSN_HELP);
}

static void put_json(FILE *out, const char *key, const char *s, int first) {
  fprintf(out, "%s\"%s\":", first ? "{" : ",", key);
  cli_put_json_string(out, s);
}

static int dead_list(const char *dsn, const char *queue, int limit, int json) {
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_dead_t *rows = NULL;
  size_t n = 0;
  int rc = cl_dead_list(c, queue, limit, &rows, &n);
  if (rc != 0) {
    ex = cli_fail(c, rc, "list");
    cl_conn_free(&c);
    return ex;
  }
  if (!json && n > 0)
    printf("%-24s %-12s %-8s %-24s %s\n", "ITEM", "QUEUE", "ATTEMPTS", "DIED",
           "ERROR");
  for (size_t i = 0; i < n; i++) {
    if (json) {
      put_json(stdout, "item_id", rows[i].item_id, 1);
      put_json(stdout, "queue", rows[i].queue, 0);
      printf(",\"attempts\":%d,\"max_attempts\":%d", rows[i].attempts,
             rows[i].max_attempts);
      put_json(stdout, "died_at", rows[i].finished_at, 0);
      put_json(stdout, "error", rows[i].last_error, 0);
      printf(",\"payload\":%s}\n", rows[i].payload);
    } else {
      /* One line per item: the error's first line only. */
      char *err = rows[i].last_error;
      size_t len = strcspn(err, "\n");
      printf("%-24s %-12s %3d/%-4d %-24s %.*s%s\n", rows[i].item_id,
             rows[i].queue, rows[i].attempts, rows[i].max_attempts,
             rows[i].finished_at, (int)(len > 120 ? 120 : len), err,
             len > 120 || err[len] ? " ..." : "");
    }
  }
  if (!json)
    fprintf(stderr, "%zu dead item%s%s%s\n", n, n == 1 ? "" : "s",
            queue ? " in " : "", queue ? queue : "");
  cl_dead_free(rows, n);
  cl_conn_free(&c);
  return EXIT_OK;
}

static int dead_change(const char *sub, const char *dsn, const char **ids,
                       size_t nids, const char *queue) {
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  int retry = strcmp(sub, "retry") == 0;
  int rc = retry ? cl_dead_retry(c, nids ? ids : NULL, nids, queue)
                 : cl_dead_discard(c, nids ? ids : NULL, nids, queue);
  if (rc < 0) {
    ex = cli_fail(c, rc, sub);
    cl_conn_free(&c);
    return ex;
  }
  printf("%s %d dead item%s\n", retry ? "retried" : "discarded", rc,
         rc == 1 ? "" : "s");
  cl_conn_free(&c);
  if (nids > 0 && (size_t)rc < nids) {
    cli_err("%zu of the %zu items named were not dead (unknown, or not in "
            "the dead letters) and were left as they are",
            nids - (size_t)rc, nids);
    return EXIT_ERROR;
  }
  return EXIT_OK;
}

int cmd_dead(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *sub = argv[1];
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
    usage(stdout);
    return EXIT_OK;
  }
  int is_list = strcmp(sub, "list") == 0;
  if (!is_list && strcmp(sub, "retry") != 0 && strcmp(sub, "discard") != 0)
    return cli_usage_error("unknown subcommand \"%s\" (list, retry or "
                           "discard)",
                           sub);
  static const struct option opts[] = {CLI_DSN_OPTIONS,
                                       {"help", no_argument, NULL, 'h'},
                                       {"queue", required_argument, NULL, 'q'},
                                       {"id", required_argument, NULL, 'i'},
                                       {"all", no_argument, NULL, 'a'},
                                       {"limit", required_argument, NULL, 'l'},
                                       {"json", no_argument, NULL, 'j'},
                                       {0}};
  const char *dsn = NULL, *queue = NULL;
  cli_dsn_t src = {0};
  const char **ids = calloc((size_t)argc, sizeof *ids);
  size_t nids = 0;
  int all = 0, json = 0, limit = 100, ch, ex = EXIT_OK;
  if (ids == NULL)
    return EXIT_ERROR;
  optind = 2;
  opterr = 0;
  char why[512];
  while (ex == EXIT_OK &&
         (ch = getopt_long(argc, argv, ":hq:", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        ex = EXIT_USAGE;
      dsn = src.value;
      break;
    case 'q':
      queue = optarg;
      if (cl_check_queue(queue, why, sizeof why) != 0)
        ex = cli_usage_error("--queue: %s", why);
      break;
    case 'i':
      if (is_list)
        ex = cli_usage_error("--id is for retry and discard");
      else if (cl_check_item_id(optarg, why, sizeof why) != 0)
        ex = cli_usage_error("--id: %s", why);
      else
        ids[nids++] = optarg;
      break;
    case 'a':
      all = 1;
      break;
    case 'l':
      if (cli_parse_int(optarg, "--limit", 1, 100000, &limit))
        ex = EXIT_USAGE;
      break;
    case 'j':
      json = 1;
      break;
    case 'h':
      usage(stdout);
      free(ids);
      return EXIT_OK;
    default:
      ex = cli_bad_option(argv, optopt);
    }
  }
  if (ex == EXIT_OK && optind < argc)
    ex = cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  if (ex == EXIT_OK && !is_list) {
    if (nids > 0 && all)
      ex = cli_usage_error("give --id or --all, not both");
    else if (nids == 0 && !all)
      ex = cli_usage_error("name the items: --id ID (repeatable), or -q "
                           "QUEUE --all");
    else if (all && queue == NULL)
      ex = cli_usage_error("--all needs -q QUEUE");
    else if (nids > 0 && queue != NULL)
      ex = cli_usage_error("-q does not go with --id (an id names one item)");
  }
  if (ex == EXIT_OK && is_list && (all || nids))
    ex = cli_usage_error("list takes -q, --limit and --json");
  if (ex == EXIT_OK)
    ex = is_list ? dead_list(dsn, queue, limit, json)
                 : dead_change(sub, dsn, ids, nids, queue);
  free(ids);
  return ex;
}
