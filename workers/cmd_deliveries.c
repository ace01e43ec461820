/*
 * cmd_deliveries.c: `claimer deliveries list|retry|resolve|replay`, a
 * subscriber's deliveries for a person: see what waits and why, send dead
 * ones again, settle one in doubt, or replay a window with the same keys.
 * Arguments are checked before connecting, so a bad one changes nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: claimer deliveries list --subscriber S [--state STATE] "
      "[--limit N] [--json]\n"
      "       claimer deliveries retry --subscriber S (--id ITEM ... | "
      "--all-dead)\n"
      "       claimer deliveries resolve --subscriber S --id ITEM --as "
      "sent|retry\n"
      "       claimer deliveries replay --subscriber S (--from POS | --since "
      "TIME)\n"
      "\n"
      "  list     oldest position first; without --state, every delivery "
      "not sent\n"
      "           (sending, retry, held, dead)\n"
      "  retry    dead (or failed) deliveries due now, attempts reset\n"
      "  resolve  a delivery in doubt (held, or sending past its lease): "
      "--as sent\n"
      "           when the sink has it, --as retry to send it again (same "
      "key)\n"
      "  replay   send again the sent deliveries from position POS on, or "
      "sent\n"
      "           since TIME (RFC 3339), with their keys (an idempotent "
      "sink drops\n"
      "           them; one that keeps its own log sees them again)\n"
      "\n"
      "Exit status: 0; 1 on a database error or nothing to resolve; 2 on "
      "bad usage.\n"
      "\n"
      "Every form takes the database options:\n" CLI_DSN_HELP);
}

static int run(const char *sub, const char *dsn, const char *subscriber,
               const char *state, int limit, int json, const char **ids,
               size_t nids, int all_dead, int as_sent, long long from,
               const char *since) {
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  int rc = 0;
  if (strcmp(sub, "list") == 0) {
    cl_delivery_row_t *rows = NULL;
    size_t n = 0;
    rc = cl_delivery_list(c, subscriber, state, limit, &rows, &n);
    if (rc == 0 && !json && n > 0)
      printf("%-24s %-8s %8s %-24s %s\n", "ITEM", "STATE", "ATTEMPTS", "NEXT",
             "ERROR");
    for (size_t i = 0; rc == 0 && i < n; i++) {
      cl_delivery_row_t *d = &rows[i];
      if (json) {
        printf("{\"item_id\":");
        cli_put_json_string(stdout, d->item_id);
        printf(",\"state\":\"%s\",\"attempts\":%d,\"idempotency_key\":\"%s\","
               "\"pos\":%lld,\"next_at\":",
               d->state, d->attempts, d->idempotency_key, d->pos);
        cli_put_json_string(stdout, d->next_at);
        printf(",\"updated_at\":\"%s\",\"error\":", d->updated_at);
        cli_put_json_string(stdout, d->last_error);
        printf("}\n");
      } else {
        size_t len = strcspn(d->last_error, "\n");
        printf("%-24s %-8s %8d %-24s %.*s\n", d->item_id, d->state, d->attempts,
               *d->next_at ? d->next_at : "-", (int)(len > 100 ? 100 : len),
               d->last_error);
      }
    }
    if (rc == 0 && !json)
      fprintf(stderr, "%zu deliver%s\n", n, n == 1 ? "y" : "ies");
    cl_delivery_rows_free(rows, n);
  } else if (strcmp(sub, "retry") == 0) {
    rc = cl_delivery_retry(c, subscriber, all_dead ? NULL : ids, nids);
    if (rc >= 0)
      printf("%d deliver%s due again now\n", rc, rc == 1 ? "y" : "ies");
  } else if (strcmp(sub, "resolve") == 0) {
    rc = cl_delivery_resolve(c, subscriber, ids[0], as_sent);
    if (rc == 0)
      printf("resolved %s of %s as %s\n", ids[0], subscriber,
             as_sent ? "sent" : "due again (same key)");
  } else {
    rc = cl_delivery_replay(c, subscriber, from, since);
    if (rc >= 0)
      printf("%d deliver%s to send again, same keys\n", rc,
             rc == 1 ? "y" : "ies");
  }
  if (rc < 0)
    ex = cli_fail(c, rc, sub);
  cl_conn_free(&c);
  return ex;
}

int cmd_deliveries(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *sub = argv[1];
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
    usage(stdout);
    return EXIT_OK;
  }
  if (strcmp(sub, "list") && strcmp(sub, "retry") && strcmp(sub, "resolve") &&
      strcmp(sub, "replay"))
    return cli_usage_error("unknown subcommand \"%s\" (list, retry, resolve "
                           "or replay)",
                           sub);
  static const struct option opts[] = {
      CLI_DSN_OPTIONS,
      {"help", no_argument, NULL, 'h'},
      {"subscriber", required_argument, NULL, 's'},
      {"state", required_argument, NULL, 'S'},
      {"limit", required_argument, NULL, 'l'},
      {"json", no_argument, NULL, 'j'},
      {"id", required_argument, NULL, 'i'},
      {"all-dead", no_argument, NULL, 'a'},
      {"as", required_argument, NULL, 'A'},
      {"from", required_argument, NULL, 'f'},
      {"since", required_argument, NULL, 't'},
      {0}};
  const char *dsn = NULL, *subscriber = NULL, *state = NULL, *since = NULL,
             *as = NULL;
  cli_dsn_t src = {0};
  const char **ids = calloc((size_t)argc, sizeof *ids);
  size_t nids = 0;
  int limit = 100, json = 0, all_dead = 0, ch, ex = EXIT_OK;
  long long from = -1;
  if (ids == NULL)
    return EXIT_ERROR;
  optind = 2;
  opterr = 0;
  char why[512];
  while (ex == EXIT_OK &&
         (ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        ex = EXIT_USAGE;
      dsn = src.value;
      break;
    case 's':
      if (cl_check_queue(optarg, why, sizeof why) != 0)
        ex = cli_usage_error("--subscriber: %s", why);
      subscriber = optarg;
      break;
    case 'S':
      state = optarg;
      if (strcmp(state, "sending") && strcmp(state, "sent") &&
          strcmp(state, "retry") && strcmp(state, "held") &&
          strcmp(state, "dead"))
        ex = cli_usage_error("--state \"%s\" is not sending, sent, retry, "
                             "held or dead",
                             state);
      break;
    case 'l':
      if (cli_parse_int(optarg, "--limit", 1, 100000, &limit))
        ex = EXIT_USAGE;
      break;
    case 'j':
      json = 1;
      break;
    case 'i':
      if (cl_check_item_id(optarg, why, sizeof why) != 0)
        ex = cli_usage_error("--id: %s", why);
      ids[nids++] = optarg;
      break;
    case 'a':
      all_dead = 1;
      break;
    case 'A':
      as = optarg;
      if (strcmp(as, "sent") && strcmp(as, "retry"))
        ex = cli_usage_error("--as \"%s\" is not sent or retry", as);
      break;
    case 'f': {
      char *end = NULL;
      from = strtoll(optarg, &end, 10);
      if (end == optarg || *end != '\0' || from < 0)
        ex = cli_usage_error("--from \"%s\" is not a position (a whole "
                             "number >= 0)",
                             optarg);
      break;
    }
    case 't':
      since = optarg;
      if (cl_check_time(since, why, sizeof why) != 0)
        ex = cli_usage_error("--since: %s", why);
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
  if (ex == EXIT_OK && subscriber == NULL)
    ex = cli_usage_error("--subscriber NAME is required");
  if (ex == EXIT_OK && strcmp(sub, "retry") == 0 && (nids > 0) == all_dead)
    ex = cli_usage_error("retry takes --id ITEM (repeatable) or --all-dead");
  if (ex == EXIT_OK && strcmp(sub, "resolve") == 0 && (nids != 1 || as == NULL))
    ex = cli_usage_error("resolve takes one --id ITEM and --as sent|retry");
  if (ex == EXIT_OK && strcmp(sub, "replay") == 0 &&
      (from >= 0) == (since != NULL))
    ex = cli_usage_error("replay takes --from POS or --since TIME");
  if (ex == EXIT_OK)
    ex = run(sub, dsn, subscriber, state, limit, json, ids, nids, all_dead,
             as != NULL && strcmp(as, "sent") == 0, from, since);
  free(ids);
  return ex;
}
