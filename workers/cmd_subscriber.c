/*
 * cmd_subscriber.c: `claimer subscriber add|set|list|pause|resume|remove`,
 * the consumers of results (a mail sender, an audit log, a webhook relay):
 * each subscriber records each result of its queues once (G5).  Arguments
 * are checked before connecting, so a bad one changes nothing.  `claimer
 * subscriber sync` (declared subscribers from a config file) is handed to
 * cmd_send.c, whose start does the same.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: claimer subscriber add NAME [--queue Q ...] "
      "[--from now|beginning|POS]\n"
      "                              [--in-doubt retry|hold] "
      "[--max-attempts N]\n"
      "                              [--break-after N] [--concurrency N] "
      "[--rate R]\n"
      "                              [--ordering none|fifo] [--backoff "
      "LIST]\n"
      "       claimer subscriber set NAME [the options of add but --from]\n"
      "       claimer subscriber list [--json]\n"
      "       claimer subscriber pause NAME [--reason TEXT]\n"
      "       claimer subscriber resume NAME\n"
      "       claimer subscriber remove NAME [--force]\n"
      "       claimer subscriber sync --config FILE [--subscriber NAME ...]\n"
      "\n"
      "A subscriber consumes the results of its queues (every queue when "
      "none is\n"
      "given), each once: its senders (`claimer send`) record a delivery "
      "per\n"
      "(subscriber, item) and hand the sink a key stable for that pair.\n"
      "  add      --from now (default): results from here on; beginning: "
      "every\n"
      "           result kept; POS: from that position.  --in-doubt: what a "
      "delivery\n"
      "           whose sender stopped between the sink and the record "
      "becomes:\n"
      "           retry (default: sent again with the same key) or hold "
      "(waits for\n"
      "           a person; a delivery_in_doubt alert).  --max-attempts "
      "(default 10)\n"
      "           failed attempts, then the delivery is dead (an alert).  "
      "--break-after N\n"
      "           (default 100; 0 never): that many failed attempts in a "
      "row pause\n"
      "           the subscriber (a subscriber_failing alert) until resume.\n"
      "           Flow control, shared by all of its senders through the "
      "database:\n"
      "           --concurrency N deliveries leased at once (default 0: no "
      "limit);\n"
      "           --rate R deliveries started per second (default 0: no "
      "limit);\n"
      "           --ordering fifo: one at a time, by position, each "
      "position once\n"
      "           final; a failed or held one holds back the rest until "
      "sent or dead.\n"
      "           --backoff 10s,1m,10m: the waits after each failed attempt "
      "(the\n"
      "           last repeats; default 5s,5m,30m,2h,5h,10h; \"default\" "
      "sets it back).\n"
      "  set      changes the options given, keeps the others (and the "
      "cursor)\n"
      "  list     per subscriber: pending, in flight, retry, sent, held, "
      "dead, lag\n"
      "  pause    its senders send nothing until resume; nothing is lost\n"
      "  remove   the subscriber and its deliveries; refused while some "
      "delivery is\n"
      "           not sent, unless --force\n"
      "  sync     adds or sets the subscribers a config file declares, as "
      "`claimer\n"
      "           send --config` does at start, without sending (`claimer "
      "subscriber\n"
      "           sync --help`)\n"
      "\n"
      "Exit status: 0; 1 on a database error or an unknown subscriber; 2 on "
      "bad\n"
      "usage; 4 remove refused (deliveries not settled).  An add of a name "
      "that\n"
      "exists changes nothing and says so (exit 0).\n"
      "\n"
      "Every form takes the database options:\n" CLI_DSN_HELP);
}

enum { EXIT_BUSY = 4 };

/* --backoff 10s,1m,10m (at most 50 waits, each in (0, 31 d]) into
 * out[0..*n), or "default" (none).  Returns EXIT_OK or EXIT_USAGE. */
static int parse_backoff(const char *text, double out[51], size_t *n) {
  *n = 0;
  if (strcmp(text, "default") == 0)
    return EXIT_OK;
  char *copy = strdup(text);
  if (copy == NULL)
    return EXIT_ERROR;
  int ex = EXIT_OK;
  char *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t != NULL && ex == EXIT_OK;
       t = strtok_r(NULL, ",", &save)) {
    while (*t == ' ')
      t++;
    double v = 0;
    if (*n == 50)
      ex = cli_usage_error("--backoff: at most 50 waits");
    else if (cl_config_parse_duration(t, &v) != 0 ||
             !(v > 0 && v <= 31 * 86400.0))
      ex = cli_usage_error("--backoff: \"%s\" is not a duration above 0 "
                           "and at most 31d (such as 30s, 5m, 2h)",
                           t);
    else
      out[(*n)++] = v;
  }
  if (ex == EXIT_OK && *n == 0)
    ex = cli_usage_error("--backoff needs a list of durations (10s,1m,10m) "
                         "or \"default\"");
  free(copy);
  return ex;
}

static int sub_list(const char *dsn, int json) {
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_subscriber_status_t *rows = NULL;
  size_t n = 0;
  int rc = cl_subscriber_list(c, &rows, &n);
  if (rc != 0) {
    ex = cli_fail(c, rc, "list");
    cl_conn_free(&c);
    return ex;
  }
  if (!json && n > 0)
    printf("%-20s %-7s %-16s %8s %8s %7s %9s %6s %6s %8s %7s %s\n",
           "SUBSCRIBER", "STATE", "QUEUES", "PENDING", "SENDING", "RETRY",
           "SENT", "HELD", "DEAD", "LAG", "OLDEST", "FLOW");
  for (size_t i = 0; i < n; i++) {
    cl_subscriber_status_t *s = &rows[i];
    if (json) {
      printf("{\"subscriber\":");
      cli_put_json_string(stdout, s->name);
      printf(",\"queues\":");
      cli_put_json_string(stdout, s->queues);
      printf(",\"paused\":%s,\"paused_why\":", s->paused ? "true" : "false");
      cli_put_json_string(stdout, s->paused_why);
      printf(",\"in_doubt\":");
      cli_put_json_string(stdout, s->in_doubt);
      printf(",\"from_pos\":%lld,\"cursor_pos\":%lld,\"pending\":%ld,"
             "\"in_flight\":%ld,\"retry\":%ld,\"sent\":%ld,\"held\":%ld,"
             "\"dead\":%ld,\"lag\":%lld,\"concurrency\":%d,\"rate\":%g,"
             "\"ordering\":\"%s\",\"max_attempts\":%d,"
             "\"break_after\":%d,\"oldest_age_s\":",
             s->from_pos, s->cursor_pos, s->pending, s->in_flight, s->retry,
             s->sent, s->held, s->dead, s->lag, s->concurrency, s->rate,
             strcmp(s->ordering, "fifo") == 0 ? "fifo" : "none",
             s->max_attempts, s->break_after);
      if (s->oldest_age_s < 0)
        printf("null");
      else
        printf("%.3f", s->oldest_age_s);
      /* the schedule in seconds, [] for the default */
      printf(",\"backoff_s\":[%s]}\n", s->backoff);
    } else {
      char age[16], flow[96] = "";
      cli_format_age(age, sizeof age, s->oldest_age_s);
      size_t used = 0;
      if (strcmp(s->ordering, "fifo") == 0)
        used += (size_t)snprintf(flow + used, sizeof flow - used, "fifo ");
      if (s->concurrency > 0 && used < sizeof flow)
        used += (size_t)snprintf(flow + used, sizeof flow - used,
                                 "concurrency=%d ", s->concurrency);
      if (s->rate > 0 && used < sizeof flow)
        used += (size_t)snprintf(flow + used, sizeof flow - used, "rate=%g/s ",
                                 s->rate);
      if (used == 0)
        snprintf(flow, sizeof flow, "-");
      printf("%-20s %-7s %-16s %8ld %8ld %7ld %9ld %6ld %6ld %8lld %7s %s\n",
             s->name, s->paused ? "paused" : "active",
             *s->queues ? s->queues : "(all)", s->pending, s->in_flight,
             s->retry, s->sent, s->held, s->dead, s->lag, age, flow);
    }
  }
  if (!json)
    fprintf(stderr, "%zu subscriber%s\n", n, n == 1 ? "" : "s");
  cl_subscribers_free(rows, n);
  cl_conn_free(&c);
  return EXIT_OK;
}

static int sub_change(const char *sub, const char *dsn, const char *name,
                      const cl_subscriber_opts_t *o, unsigned fields,
                      const char *reason, int force) {
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  int rc;
  long open = 0;
  long long from = 0;
  if (strcmp(sub, "add") == 0) {
    rc = cl_subscriber_add(c, name, o, &from);
    if (rc == 1)
      printf("added subscriber %s: results from position %lld\n", name, from);
    else if (rc == 0)
      printf("subscriber %s exists: left as it is\n", name);
  } else if (strcmp(sub, "set") == 0) {
    rc = cl_subscriber_set(c, name, o, fields);
    if (rc == 0)
      printf("subscriber %s: %s\n", name,
             fields ? "policy changed" : "nothing to change");
  } else if (strcmp(sub, "remove") == 0) {
    rc = cl_subscriber_remove(c, name, force, &open);
    if (rc == 0)
      printf("removed subscriber %s%s\n", name,
             open ? " and its unsettled deliveries" : "");
  } else {
    int pause = strcmp(sub, "pause") == 0;
    rc = cl_subscriber_pause(c, name, pause, reason);
    if (rc == 0)
      printf("%s subscriber %s\n", pause ? "paused" : "resumed", name);
  }
  if (rc == CL_EBUSY) {
    cli_err("%s", cl_conn_last_error(c));
    ex = EXIT_BUSY;
  } else if (rc == CL_EINVAL) {
    cli_err("%s", cl_conn_last_error(c));
    ex = EXIT_USAGE;
  } else if (rc < 0) {
    ex = cli_fail(c, rc, sub);
  }
  cl_conn_free(&c);
  return ex;
}

int cmd_subscriber(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *sub = argv[1];
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
    usage(stdout);
    return EXIT_OK;
  }
  /* sync is the start of `claimer send --config` without the sending:
   * the same checks and writes, in cmd_send.c, which knows the sinks. */
  if (strcmp(sub, "sync") == 0)
    return cmd_send(argc - 1, argv + 1);
  static const char *const subs[] = {"add",    "set",    "list", "pause",
                                     "resume", "remove", NULL};
  int known = 0;
  for (int i = 0; subs[i]; i++)
    known |= strcmp(sub, subs[i]) == 0;
  if (!known)
    return cli_usage_error("unknown subcommand \"%s\" (add, set, list, "
                           "pause, resume, remove or sync)",
                           sub);
  int is_list = strcmp(sub, "list") == 0, is_add = strcmp(sub, "add") == 0;
  /* add and set take the policy */
  int is_policy = is_add || strcmp(sub, "set") == 0;
  static const struct option opts[] = {
      CLI_DSN_OPTIONS,
      {"help", no_argument, NULL, 'h'},
      {"queue", required_argument, NULL, 'q'},
      {"from", required_argument, NULL, 'f'},
      {"in-doubt", required_argument, NULL, 'd'},
      {"max-attempts", required_argument, NULL, 'm'},
      {"break-after", required_argument, NULL, 'b'},
      {"concurrency", required_argument, NULL, 'c'},
      {"rate", required_argument, NULL, 'R'},
      {"ordering", required_argument, NULL, 'o'},
      {"backoff", required_argument, NULL, 'B'},
      {"reason", required_argument, NULL, 'r'},
      {"force", no_argument, NULL, 'F'},
      {"json", no_argument, NULL, 'j'},
      {0}};
  const char *dsn = NULL, *reason = NULL;
  cli_dsn_t src = {0};
  const char **queues = calloc((size_t)argc, sizeof *queues);
  cl_subscriber_opts_t o = {0};
  int force = 0, json = 0, ch, ex = EXIT_OK;
  unsigned fields = 0; /* set: the policy options given */
  double backoff[51];
  const char *only = NULL; /* an option this subcommand does not take */
  if (queues == NULL)
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
      if (cl_check_queue(optarg, why, sizeof why) != 0)
        ex = cli_usage_error("--queue: %s", why);
      queues[o.nqueues++] = optarg;
      fields |= CL_SUB_QUEUES;
      only = is_policy ? only : "--queue";
      break;
    case 'f':
      o.from = optarg;
      only = is_add ? only : "--from";
      break;
    case 'd':
      o.in_doubt = optarg;
      fields |= CL_SUB_IN_DOUBT;
      only = is_policy ? only : "--in-doubt";
      break;
    case 'm':
      if (cli_parse_int(optarg, "--max-attempts", 1, 1000, &o.max_attempts))
        ex = EXIT_USAGE;
      fields |= CL_SUB_MAX_ATTEMPTS;
      only = is_policy ? only : "--max-attempts";
      break;
    case 'b':
      if (cli_parse_int(optarg, "--break-after", 0, 1000000, &o.break_after))
        ex = EXIT_USAGE;
      if (o.break_after == 0)
        o.break_after = -1; /* 0 on the command line: never */
      fields |= CL_SUB_BREAK_AFTER;
      only = is_policy ? only : "--break-after";
      break;
    case 'c':
      if (cli_parse_int(optarg, "--concurrency", 0, 100000, &o.concurrency))
        ex = EXIT_USAGE;
      fields |= CL_SUB_CONCURRENCY;
      only = is_policy ? only : "--concurrency";
      break;
    case 'R':
      if (cli_parse_double(optarg, "--rate", 0, 1000000, &o.rate))
        ex = EXIT_USAGE;
      fields |= CL_SUB_RATE;
      only = is_policy ? only : "--rate";
      break;
    case 'B':
      ex = parse_backoff(optarg, backoff, &o.nbackoff);
      o.backoff_s = backoff;
      fields |= CL_SUB_BACKOFF;
      only = is_policy ? only : "--backoff";
      break;
    case 'o':
      if (strcmp(optarg, "none") != 0 && strcmp(optarg, "fifo") != 0)
        ex = cli_usage_error("--ordering \"%s\" is not none or fifo", optarg);
      o.ordering = optarg;
      fields |= CL_SUB_ORDERING;
      only = is_policy ? only : "--ordering";
      break;
    case 'r':
      reason = optarg;
      only = strcmp(sub, "pause") == 0 ? only : "--reason";
      break;
    case 'F':
      force = 1;
      only = strcmp(sub, "remove") == 0 ? only : "--force";
      break;
    case 'j':
      json = 1;
      only = is_list ? only : "--json";
      break;
    case 'h':
      usage(stdout);
      free(queues);
      return EXIT_OK;
    default:
      ex = cli_bad_option(argv, optopt);
    }
  }
  o.queues = queues;
  const char *name = NULL;
  if (ex == EXIT_OK && only != NULL)
    ex = cli_usage_error("%s does not go with subscriber %s", only, sub);
  if (ex == EXIT_OK && !is_list) {
    if (optind >= argc)
      ex = cli_usage_error("subscriber %s needs a NAME", sub);
    else if (cl_check_queue((name = argv[optind++]), why, sizeof why) != 0)
      ex = cli_usage_error("subscriber name: %s", why);
  }
  if (ex == EXIT_OK && optind < argc)
    ex = cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  if (ex == EXIT_OK)
    ex = is_list ? sub_list(dsn, json)
                 : sub_change(sub, dsn, name, &o, fields, reason, force);
  free(queues);
  return ex;
}
