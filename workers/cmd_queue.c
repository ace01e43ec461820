/*
 * cmd_queue.c: the subcommands that speak the claim protocol: migrate,
 * enqueue, claim, complete, fail, heartbeat, release, reap, status.  With
 * these a shell script is already a worker: claim, run something, complete.
 *
 * Each one checks all of its arguments before it connects, so that bad
 * input exits 2 having changed nothing.
 */
#include <errno.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* The ranges of an item's numbers, the same for the flags and for NDJSON
 * keys (the library checks max_attempts against the same bound). */
#define PRIORITY_MIN -1000000
#define PRIORITY_MAX 1000000
#define ATTEMPTS_MIN 1
#define ATTEMPTS_MAX 1000000

#define COMMON_OPTIONS                                                         \
  CLI_DSN_OPTIONS, { "help", no_argument, NULL, 'h' }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------ */
/* migrate                                                                   */

static void on_migration(void *arg, int version, const char *name) {
  (void)arg;
  (void)version;
  printf("applying %s\n", name);
  fflush(stdout);
}

int cmd_migrate(int argc, char **argv) {
  static const struct option opts[] = {COMMON_OPTIONS, {0}};
  const char *dsn = NULL;
  cli_dsn_t src = {0};
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        return EXIT_USAGE;
      dsn = src.value;
      break;
    case 'h':
      printf("usage: claimer migrate [--dsn DSN]\n\n"
             "Applies the schema migrations this binary ships that the\n"
             "database lacks, each once, in order, in its own transaction,\n"
             "under an advisory lock (safe to run from several hosts at\n"
             "once).  Running it again is a no-op.  A database whose\n"
             "applied migrations differ from the shipped ones is refused.\n"
             "\n" CLI_DSN_HELP);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  int rc = cl_migrate(c, on_migration, NULL);
  if (rc < 0) {
    ex = cli_fail(c, rc, "migrate");
  } else {
    printf("schema is up to date (version %d; %d applied now)\n",
           cl_schema_version(), rc);
  }
  cl_conn_free(&c);
  return ex;
}

/* ------------------------------------------------------------------------ */
/* enqueue                                                                   */

typedef struct line_item {
  char *id;
  char *queue; /* NULL: the -q queue */
  char *payload;
  int priority;
  int max_attempts;
  double run_in;
} line_item_t;

/* Returns the length of the JSON value that starts at p (p must point at a
 * valid value; the text was validated by json-c before). */
static size_t json_value_span(const char *p) {
  const char *s = p;
  int depth = 0;
  do {
    if (*s == '"') {
      for (s++; *s && *s != '"'; s++)
        if (*s == '\\' && s[1])
          s++;
      if (*s)
        s++;
    } else if (*s == '{' || *s == '[') {
      depth++;
      s++;
    } else if (*s == '}' || *s == ']') {
      depth--;
      s++;
    } else if (depth == 0) {
      while (*s && !strchr(",}] \t\r\n", *s))
        s++;
    } else {
      s++;
    }
  } while (depth > 0 && *s);
  return (size_t)(s - p);
}

/* Finds the raw text of top-level member key in the JSON object text obj,
 * so that a payload travels byte for byte (json-c would round big numbers).
 * Returns a malloc'd copy or NULL when the key is not written plainly. */
static char *raw_member(const char *obj, const char *key) {
  const char *p = obj;
  size_t klen = strlen(key);
  while (*p && *p != '{')
    p++;
  if (*p++ != '{')
    return NULL;
  for (;;) {
    while (*p && strchr(" \t\r\n,", *p))
      p++;
    if (*p != '"')
      return NULL;
    const char *k = p + 1;
    size_t span = json_value_span(p);
    int match = span == klen + 2 && strncmp(k, key, klen) == 0;
    p += span;
    while (*p && strchr(" \t\r\n:", *p))
      p++;
    size_t vlen = json_value_span(p);
    if (match) {
      char *out = malloc(vlen + 1);
      if (out != NULL) {
        memcpy(out, p, vlen);
        out[vlen] = '\0';
      }
      return out;
    }
    p += vlen;
  }
}

/* Writes s into out (n bytes) safe to print: printable ASCII as is, '"'
 * and '\\' escaped, any other byte as \xNN; cut with "..." past 40 bytes. */
static void echo_key(char *out, size_t n, const char *s) {
  size_t o = 0;
  for (size_t i = 0; s[i] != '\0' && o + 8 < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (i == 40) {
      o += (size_t)snprintf(out + o, n - o, "...");
      break;
    }
    if (c == '"' || c == '\\')
      o += (size_t)snprintf(out + o, n - o, "\\%c", c);
    else if (c >= 0x20 && c < 0x7F)
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
  }
  out[o] = '\0';
}

/* Checks that no key appears twice at the top level of the JSON object
 * text obj (already validated), comparing keys as JSON reads them, so
 * "id" and "\u0069d" are the same key.  json-c, like jsonb, keeps the last
 * of two, which would let a line say two things.  Returns 0, or -1 with the
 * key named in why. */
static int check_unique_keys(const char *obj, char *why, size_t whylen) {
  json_object *seen = json_object_new_object();
  if (seen == NULL) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  const char *p = obj;
  int rc = 0;
  while (*p && *p != '{')
    p++;
  if (*p == '{')
    p++;
  for (;;) {
    while (*p && strchr(" \t\r\n,", *p))
      p++;
    if (*p != '"')
      break;
    size_t span = json_value_span(p);
    char *text = strndup(p, span);
    json_object *k = text ? json_tokener_parse(text) : NULL;
    free(text);
    const char *key = k ? json_object_get_string(k) : NULL;
    if (key == NULL) {
      snprintf(why, whylen, "out of memory");
      rc = -1;
    } else if (json_object_object_get_ex(seen, key, NULL)) {
      char shown[200];
      echo_key(shown, sizeof shown, key);
      snprintf(why, whylen,
               "duplicate key \"%s\" (each key may appear once in an item)",
               shown);
      rc = -1;
    } else if (json_object_object_add(seen, key, NULL) != 0) {
      snprintf(why, whylen, "out of memory");
      rc = -1;
    }
    json_object_put(k);
    if (rc != 0)
      break;
    p += span;
    while (*p && strchr(" \t\r\n:", *p))
      p++;
    p += json_value_span(p);
  }
  json_object_put(seen);
  return rc;
}

/* Reads the integer member key of an item into *out when it is one within
 * [min, max], with the words and range the matching flag uses.  Returns 0,
 * or -1 with the reason in why. */
static int line_int(const char *key, json_object *val, long min, long max,
                    int *out, char *why, size_t whylen) {
  if (json_object_get_type(val) != json_type_int) {
    snprintf(why, whylen, "\"%s\" must be an integer in [%ld, %ld]", key, min,
             max);
    return -1;
  }
  errno = 0;
  int64_t v = json_object_get_int64(val);
  if (errno != 0 || v < min || v > max) {
    snprintf(why, whylen, "\"%s\": %s is out of range [%ld, %ld]", key,
             json_object_get_string(val), min, max);
    return -1;
  }
  *out = (int)v;
  return 0;
}

static void line_item_free(line_item_t *it) {
  free(it->id);
  free(it->queue);
  free(it->payload);
}

/* Parses one NDJSON line into it.  Returns 0, or -1 with a message in why. */
static int parse_line(const char *line, size_t len, line_item_t *it, char *why,
                      size_t whylen) {
  memset(it, 0, sizeof *it);
  if (cl_check_json(line, len, why, whylen) != 0)
    return -1;
  json_object *o = json_tokener_parse(line);
  int rc = -1;
  if (o == NULL || !json_object_is_type(o, json_type_object)) {
    snprintf(why, whylen, "not a JSON object");
    goto out;
  }
  if (check_unique_keys(line, why, whylen) != 0)
    goto out;
  json_object_object_foreach(o, key, val) {
    json_type t = json_object_get_type(val);
    if (strcmp(key, "id") == 0) {
      if (t != json_type_string) {
        snprintf(why, whylen, "\"id\" must be a string");
        goto out;
      }
      it->id = strdup(json_object_get_string(val));
    } else if (strcmp(key, "queue") == 0) {
      if (t != json_type_string) {
        snprintf(why, whylen, "\"queue\" must be a string");
        goto out;
      }
      it->queue = strdup(json_object_get_string(val));
    } else if (strcmp(key, "payload") == 0) {
      it->payload = raw_member(line, "payload");
      if (it->payload == NULL)
        it->payload = strdup(json_object_to_json_string_ext(
            val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    } else if (strcmp(key, "priority") == 0) {
      if (line_int(key, val, PRIORITY_MIN, PRIORITY_MAX, &it->priority, why,
                   whylen) != 0)
        goto out;
    } else if (strcmp(key, "max_attempts") == 0) {
      /* 0 is not "the default" here: leave the key out for that, as with
       * the flag. */
      if (line_int(key, val, ATTEMPTS_MIN, ATTEMPTS_MAX, &it->max_attempts, why,
                   whylen) != 0)
        goto out;
    } else if (strcmp(key, "run_in") == 0) {
      if (t != json_type_int && t != json_type_double) {
        snprintf(why, whylen, "\"run_in\" must be a number of seconds");
        goto out;
      }
      it->run_in = json_object_get_double(val);
    } else {
      snprintf(why, whylen,
               "unknown key \"%.40s\" (allowed: id, payload, queue, priority, "
               "max_attempts, run_in)",
               key);
      goto out;
    }
  }
  if (it->id == NULL) {
    snprintf(why, whylen,
             "\"id\" is missing (NDJSON items need an id, so that running "
             "the same input again enqueues nothing twice)");
    goto out;
  }
  if (cl_check_item_id(it->id, why, whylen) != 0 ||
      (it->queue && cl_check_queue(it->queue, why, whylen) != 0))
    goto out;
  if (it->run_in < 0) {
    snprintf(why, whylen, "\"run_in\" must be >= 0");
    goto out;
  }
  rc = 0;
out:
  json_object_put(o);
  if (rc != 0)
    line_item_free(it);
  return rc;
}

typedef struct enq_totals {
  long created, existed, rejected;
} enq_totals_t;

/* Enqueues items[0..n) in batches of batch, showing progress on stderr
 * every second.  Returns EXIT_OK or the failure's exit status. */
static int enqueue_lines(cl_conn_t *c, const char *queue, line_item_t *items,
                         size_t n, int batch, enq_totals_t *t) {
  cl_item_t *b = calloc((size_t)batch, sizeof *b);
  int *outcome = calloc((size_t)batch, sizeof *outcome);
  if (b == NULL || outcome == NULL) {
    free(b);
    free(outcome);
    cli_err("out of memory");
    return EXIT_ERROR;
  }
  double last = now_s();
  int ex = EXIT_OK;
  for (size_t at = 0; at < n; at += (size_t)batch) {
    size_t m = n - at < (size_t)batch ? n - at : (size_t)batch;
    for (size_t i = 0; i < m; i++) {
      line_item_t *it = &items[at + i];
      b[i] = (cl_item_t){.item_id = it->id,
                         .queue = it->queue ? it->queue : queue,
                         .payload = it->payload,
                         .priority = it->priority,
                         .max_attempts = it->max_attempts,
                         .run_in = it->run_in};
    }
    int rc = cl_enqueue(c, b, m, outcome);
    if (rc < 0) {
      ex = cli_fail(c, rc, "enqueue");
      cli_err("stopped after %zu of %zu items; running the same input "
              "again is safe (existing ids are skipped)",
              at, n);
      break;
    }
    t->created += rc;
    t->existed += (long)m - rc;
    if (now_s() - last >= 1.0) {
      fprintf(stderr, "enqueue: %zu/%zu items (%ld created, %ld existed)\n",
              at + m, n, t->created, t->existed);
      last = now_s();
    }
  }
  free(b);
  free(outcome);
  return ex;
}

/* The longest NDJSON line kept: one JSON text at its limit, and a CR. */
#define LINE_MAX_BYTES ((size_t)CL_PAYLOAD_MAX + 1)

/* Reads the next line of in into buf (LINE_MAX_BYTES + 1 bytes), without
 * its newline, NUL-terminated.  Returns its length, or -1 at the end of
 * the input.  A line longer than LINE_MAX_BYTES is read to its end but not
 * kept: *over is set and the whole length returned, so that an over-long
 * line costs no more memory than a long one. */
static long long read_line(FILE *in, char *buf, int *over) {
  long long len = 0;
  int c;
  *over = 0;
  while ((c = getc_unlocked(in)) != EOF && c != '\n') {
    if ((size_t)len < LINE_MAX_BYTES)
      buf[len] = (char)c;
    else
      *over = 1;
    len++;
  }
  if (c == EOF && len == 0)
    return -1;
  buf[*over ? LINE_MAX_BYTES : (size_t)len] = '\0';
  return len;
}

static int enqueue_ndjson(const char *dsn, const char *queue, int batch,
                          int skip_invalid) {
  line_item_t *items = NULL;
  size_t n = 0, cap = 0;
  char *line = malloc(LINE_MAX_BYTES + 1);
  long long got;
  int over = 0;
  long lineno = 0, bad = 0;
  enq_totals_t t = {0};
  int ex = EXIT_OK;
  if (line == NULL) {
    cli_err("out of memory");
    return EXIT_ERROR;
  }
  while ((got = read_line(stdin, line, &over)) != -1) {
    lineno++;
    if (over) {
      if (++bad <= 10)
        cli_err("stdin line %ld: %lld bytes; the limit for one line is %d "
                "(the rest of the line was skipped)",
                lineno, got, CL_PAYLOAD_MAX);
      continue;
    }
    size_t len = (size_t)got;
    while (len > 0 && line[len - 1] == '\r')
      line[--len] = '\0';
    size_t sp = strspn(line, " \t");
    if (len == sp)
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 1024;
      line_item_t *grown = realloc(items, cap * sizeof *items);
      if (grown == NULL) {
        cli_err("out of memory after %zu lines", n);
        ex = EXIT_ERROR;
        break;
      }
      items = grown;
    }
    char why[512];
    if (parse_line(line, len, &items[n], why, sizeof why) != 0) {
      if (++bad <= 10)
        cli_err("stdin line %ld: %s", lineno, why);
      continue;
    }
    n++;
  }
  free(line);
  if (ex == EXIT_OK && bad > 0) {
    if (bad > 10)
      cli_err("... and %ld more bad lines", bad - 10);
    if (!skip_invalid) {
      cli_err("%ld of %ld lines are bad; nothing was enqueued (fix them, or "
              "pass --skip-invalid to enqueue the good ones)",
              bad, (long)n + bad);
      ex = EXIT_USAGE;
    }
    t.rejected = bad;
  }
  if (ex == EXIT_OK && n > 0) {
    cl_conn_t *c = NULL;
    ex = cli_connect(dsn, &c);
    if (ex == EXIT_OK)
      ex = enqueue_lines(c, queue, items, n, batch, &t);
    cl_conn_free(&c);
  }
  if (ex == EXIT_OK)
    printf("created %ld, existed %ld, rejected %ld\n", t.created, t.existed,
           t.rejected);
  for (size_t i = 0; i < n; i++)
    line_item_free(&items[i]);
  free(items);
  return ex;
}

int cmd_enqueue(int argc, char **argv) {
  static const struct option opts[] = {
      COMMON_OPTIONS,
      {"queue", required_argument, NULL, 'q'},
      {"id", required_argument, NULL, 'i'},
      {"payload", required_argument, NULL, 'p'},
      {"priority", required_argument, NULL, 'P'},
      {"max-attempts", required_argument, NULL, 'm'},
      {"run-in", required_argument, NULL, 'r'},
      {"ndjson", no_argument, NULL, 'n'},
      {"batch", required_argument, NULL, 'b'},
      {"skip-invalid", no_argument, NULL, 's'},
      {0}};
  const char *dsn = NULL, *queue = NULL, *id = NULL, *payload = NULL;
  cli_dsn_t src = {0};
  int priority = 0, max_attempts = 0, ndjson = 0, batch = 500, skip = 0;
  double run_in = 0;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":hq:", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        return EXIT_USAGE;
      dsn = src.value;
      break;
    case 'q':
      queue = optarg;
      break;
    case 'i':
      id = optarg;
      break;
    case 'p':
      payload = optarg;
      break;
    case 'P':
      if (cli_parse_int(optarg, "--priority", PRIORITY_MIN, PRIORITY_MAX,
                        &priority))
        return EXIT_USAGE;
      break;
    case 'm':
      if (cli_parse_int(optarg, "--max-attempts", ATTEMPTS_MIN, ATTEMPTS_MAX,
                        &max_attempts))
        return EXIT_USAGE;
      break;
    case 'r':
      if (cli_parse_double(optarg, "--run-in", 0, 3.2e9, &run_in))
        return EXIT_USAGE;
      break;
    case 'n':
      ndjson = 1;
      break;
    case 'b':
      if (cli_parse_int(optarg, "--batch", 1, 10000, &batch))
        return EXIT_USAGE;
      break;
    case 's':
      skip = 1;
      break;
    case 'h':
      printf(
          "usage: claimer enqueue -q QUEUE [--id ID] [--payload JSON]\n"
          "                       [--priority P] [--max-attempts N] "
          "[--run-in SECONDS]\n"
          "       claimer enqueue -q QUEUE --ndjson [--batch N] "
          "[--skip-invalid] < items.ndjson\n\n"
          "Adds an item.  The id is the idempotency key: enqueueing an id\n"
          "that exists changes nothing and says so.  Without --id a UUID is\n"
          "generated and printed, so that the caller can retry with it.\n\n"
          "With --ndjson, reads one JSON object per line from stdin:\n"
          "  {\"id\": \"...\", \"payload\": {...}, \"priority\": 0, "
          "\"max_attempts\": 25,\n"
          "   \"run_in\": 0, \"queue\": \"...\"}   (only id is required)\n"
          "checks every line first (a bad line enqueues nothing unless\n"
          "--skip-invalid), then enqueues in batches (default 500) and\n"
          "prints the counts created, existed and rejected.\n\n"
          "  -q, --queue QUEUE    letters, digits, _ . - (1..63 bytes; no ':',\n"
          "                       which separates a weight in claimer work)\n"
          "  --priority P         higher first (default 0)\n"
          "  --max-attempts N     tries before the item is dead (default: "
          "the queue's\n"
          "                       policy, else 25)\n"
          "  --run-in SECONDS     not before this delay (default 0)\n" CLI_DSN_HELP);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  char why[512];
  if (queue == NULL)
    return cli_usage_error("-q/--queue is required");
  if (cl_check_queue(queue, why, sizeof why) != 0)
    return cli_usage_error("--queue: %s", why);
  if (ndjson) {
    if (id || payload)
      return cli_usage_error("--ndjson takes ids and payloads from stdin, "
                             "not --id or --payload");
    return enqueue_ndjson(dsn, queue, batch, skip);
  }
  char uuid[37];
  if (id == NULL) {
    if (cl_uuid4(uuid) != 0) {
      cli_err("cannot read randomness for an item id");
      return EXIT_ERROR;
    }
    id = uuid;
  } else if (cl_check_item_id(id, why, sizeof why) != 0) {
    return cli_usage_error("--id: %s", why);
  }
  if (payload != NULL && cli_check_json_arg(payload, "--payload") != 0)
    return EXIT_USAGE;
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_item_t item = {.item_id = id,
                    .queue = queue,
                    .payload = payload,
                    .priority = priority,
                    .max_attempts = max_attempts,
                    .run_in = run_in};
  int outcome = 0;
  int rc = cl_enqueue(c, &item, 1, &outcome);
  if (rc < 0) {
    ex = cli_fail(c, rc, "enqueue");
  } else {
    printf("%s\n", id);
    if (outcome == CL_ENQ_EXISTED)
      cli_err("item %s already existed; nothing changed", id);
  }
  cl_conn_free(&c);
  return ex;
}

/* ------------------------------------------------------------------------ */
/* claim                                                                     */

int cmd_claim(int argc, char **argv) {
  static const struct option opts[] = {COMMON_OPTIONS,
                                       {"queue", required_argument, NULL, 'q'},
                                       {"count", required_argument, NULL, 'n'},
                                       {"lease", required_argument, NULL, 'l'},
                                       {"worker", required_argument, NULL, 'w'},
                                       {0}};
  const char *dsn = NULL, *queue = NULL, *worker = NULL;
  cli_dsn_t src = {0};
  int n = 1;
  double lease = 30;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":hq:n:", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        return EXIT_USAGE;
      dsn = src.value;
      break;
    case 'q':
      queue = optarg;
      break;
    case 'n':
      if (cli_parse_int(optarg, "-n/--count", 1, 10000, &n))
        return EXIT_USAGE;
      break;
    case 'l':
      if (cli_parse_double(optarg, "--lease", 0.001, 604800, &lease))
        return EXIT_USAGE;
      break;
    case 'w':
      worker = optarg;
      break;
    case 'h':
      printf("usage: claimer claim -q QUEUE [-n N] [--lease SECONDS] "
             "[--worker NAME]\n\n"
             "Claims up to N ready items (default 1) with a lease of SECONDS\n"
             "(default 30) and prints one JSON line per lease:\n"
             "  {\"item_id\", \"token\", \"attempt\", \"payload\", "
             "\"lease_until\"}\n"
             "Prints nothing when no item is ready.  Pass the token to\n"
             "complete, fail or release; heartbeat extends the lease.\n"
             "The worker name defaults to HOST:PID.\n"
             "\n" CLI_DSN_HELP);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  char why[512], defworker[300];
  if (queue == NULL)
    return cli_usage_error("-q/--queue is required");
  if (cl_check_queue(queue, why, sizeof why) != 0)
    return cli_usage_error("--queue: %s", why);
  if (worker == NULL) {
    cli_default_worker(defworker, sizeof defworker);
    worker = defworker;
  } else if (cl_check_worker(worker, why, sizeof why) != 0) {
    return cli_usage_error("--worker: %s", why);
  }
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_lease_t *leases = NULL;
  size_t count = 0;
  int rc = cl_claim(c, queue, worker, n, lease, &leases, &count);
  if (rc < 0)
    ex = cli_fail(c, rc, "claim");
  for (size_t i = 0; i < count; i++) {
    fputs("{\"item_id\":", stdout);
    cli_put_json_string(stdout, leases[i].item_id);
    printf(",\"token\":\"%s\",\"attempt\":%d,\"payload\":%s,"
           "\"lease_until\":\"%s\"}\n",
           leases[i].token, leases[i].attempt, leases[i].payload,
           leases[i].lease_until);
  }
  cl_leases_free(leases, count);
  cl_conn_free(&c);
  return ex;
}

/* ------------------------------------------------------------------------ */
/* complete, fail, release                                                   */

typedef struct lease_args {
  const char *dsn, *id, *token, *result, *error;
  cli_dsn_t src;
  int no_retry;
  double retry_in;
} lease_args_t;

/* Parses the options complete, fail and release share.  extra lists the
 * command's own; help is printed for --help.  Returns -1 to go on, or an
 * exit status. */
static int parse_lease_args(int argc, char **argv, const struct option *opts,
                            const char *help, lease_args_t *a) {
  int ch;
  a->retry_in = -1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&a->src, ch, optarg) != 0)
        return EXIT_USAGE;
      a->dsn = a->src.value;
      break;
    case 'i':
      a->id = optarg;
      break;
    case 't':
      a->token = optarg;
      break;
    case 'r':
      a->result = optarg;
      break;
    case 'e':
      a->error = optarg;
      break;
    case 'N':
      a->no_retry = 1;
      break;
    case 'R':
      if (cli_parse_double(optarg, "--retry-in", 0, 3.2e9, &a->retry_in))
        return EXIT_USAGE;
      break;
    case 'h':
      fputs(help, stdout);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  char why[512];
  if (a->id == NULL || a->token == NULL)
    return cli_usage_error("--id and --token are required");
  if (cl_check_item_id(a->id, why, sizeof why) != 0)
    return cli_usage_error("--id: %s", why);
  if (a->result != NULL && cli_check_json_arg(a->result, "--result") != 0)
    return EXIT_USAGE;
  return -1;
}

/* Returns 1 when an item called id exists, 0 when none does, -1 when the
 * database could not say (the caller then keeps its first diagnosis). */
static int item_exists(cl_conn_t *c, const char *id) {
  const char *params[] = {id};
  PGresult *r = PQexecParams(cl_conn_pg(c),
                             "SELECT 1 FROM claimer.items WHERE item_id = $1",
                             1, NULL, params, NULL, NULL, 0);
  int found = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) > 0 : -1;
  PQclear(r);
  return found;
}

int cmd_complete(int argc, char **argv) {
  static const struct option opts[] = {COMMON_OPTIONS,
                                       {"id", required_argument, NULL, 'i'},
                                       {"token", required_argument, NULL, 't'},
                                       {"result", required_argument, NULL, 'r'},
                                       {0}};
  lease_args_t a = {0};
  int ex = parse_lease_args(
      argc, argv, opts,
      "usage: claimer complete --id ID --token TOKEN [--result JSON]\n\n"
      "Records the item's result (JSON, default null) and ends its lease,\n"
      "in one transaction, only if TOKEN still holds the lease.\n"
      "Exit 0 when the item is done with this token's result (also when\n"
      "this same token had completed it already), 3 when the lease was\n"
      "lost (nothing written).  A dropped connection is retried with the\n"
      "same token: the retry reads back whether the first try committed.\n"
      "\n" CLI_DSN_HELP,
      &a);
  if (ex >= 0)
    return ex;
  cl_conn_t *c = NULL;
  ex = cli_connect(a.dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_complete_info_t info;
  int rc = cl_complete(c, a.id, a.token, a.result, &info);
  int exists = rc == CL_ELEASE_LOST ? item_exists(c, a.id) : 1;
  if (exists == 0) {
    /* "Lease lost" would send the reader looking for a reaper; the id is
     * the thing to check.  Exit 1, as for the other ids that name nothing
     * (dead retry, dead discard). */
    char shown[200];
    echo_key(shown, sizeof shown, a.id);
    cli_err("complete: no item \"%s\" exists (never enqueued, or removed "
            "after its retention); nothing was written",
            shown);
    ex = EXIT_ERROR;
  } else if (rc < 0)
    ex = cli_fail(c, rc, "complete");
  else if (info.already)
    cli_err("item %s was already completed by this token; nothing changed%s",
            a.id, info.retries ? " (settled after a lost connection)" : "");
  else if (info.retries)
    cli_err("completed item %s after %d reconnect%s", a.id, info.retries,
            info.retries == 1 ? "" : "s");
  cl_conn_free(&c);
  return ex;
}

int cmd_fail(int argc, char **argv) {
  static const struct option opts[] = {
      COMMON_OPTIONS,
      {"id", required_argument, NULL, 'i'},
      {"token", required_argument, NULL, 't'},
      {"error", required_argument, NULL, 'e'},
      {"no-retry", no_argument, NULL, 'N'},
      {"retry-in", required_argument, NULL, 'R'},
      {0}};
  lease_args_t a = {0};
  int ex = parse_lease_args(
      argc, argv, opts,
      "usage: claimer fail --id ID --token TOKEN --error MESSAGE\n"
      "                    [--retry-in SECONDS | --no-retry]\n\n"
      "Ends the lease as a failed attempt.  The item goes back to ready\n"
      "after an exponential backoff with jitter (or --retry-in), or is dead\n"
      "when its attempts are spent or with --no-retry.  Prints\n"
      "{\"item_id\", \"state\", \"attempts\", \"retry_at\"}.  Exit 3 when the\n"
      "lease was lost.\n"
      "\n" CLI_DSN_HELP,
      &a);
  if (ex >= 0)
    return ex;
  if (a.error == NULL)
    return cli_usage_error("--error is required");
  cl_conn_t *c = NULL;
  ex = cli_connect(a.dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_fail_info_t info;
  int rc = cl_fail(c, a.id, a.token, a.error, !a.no_retry, a.retry_in, &info);
  if (rc < 0) {
    ex = cli_fail(c, rc, "fail");
  } else {
    fputs("{\"item_id\":", stdout);
    cli_put_json_string(stdout, a.id);
    printf(",\"state\":\"%s\",\"attempts\":%d", info.dead ? "dead" : "ready",
           info.attempts);
    if (!info.dead)
      printf(",\"retry_at\":\"%s\"", info.retry_at);
    printf("}\n");
  }
  cl_conn_free(&c);
  return ex;
}

int cmd_release(int argc, char **argv) {
  static const struct option opts[] = {COMMON_OPTIONS,
                                       {"id", required_argument, NULL, 'i'},
                                       {"token", required_argument, NULL, 't'},
                                       {0}};
  lease_args_t a = {0};
  int ex = parse_lease_args(
      argc, argv, opts,
      "usage: claimer release --id ID --token TOKEN\n\n"
      "Gives the lease back without spending an attempt (for a worker that\n"
      "shuts down before starting the item).  Exit 3 when the lease was\n"
      "already lost.\n"
      "\n" CLI_DSN_HELP,
      &a);
  if (ex >= 0)
    return ex;
  cl_conn_t *c = NULL;
  ex = cli_connect(a.dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  int rc = cl_release(c, a.id, a.token);
  if (rc < 0)
    ex = cli_fail(c, rc, "release");
  cl_conn_free(&c);
  return ex;
}

/* ------------------------------------------------------------------------ */
/* heartbeat                                                                 */

int cmd_heartbeat(int argc, char **argv) {
  static const struct option opts[] = {COMMON_OPTIONS,
                                       {"worker", required_argument, NULL, 'w'},
                                       {"lease", required_argument, NULL, 'l'},
                                       {0}};
  const char *dsn = NULL, *worker = NULL;
  cli_dsn_t src = {0};
  double lease = 30;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        return EXIT_USAGE;
      dsn = src.value;
      break;
    case 'w':
      worker = optarg;
      break;
    case 'l':
      if (cli_parse_double(optarg, "--lease", 0.001, 604800, &lease))
        return EXIT_USAGE;
      break;
    case 'h':
      printf("usage: claimer heartbeat --worker NAME [--lease SECONDS]\n\n"
             "Marks the worker alive and extends every lease it holds to\n"
             "SECONDS from now (default 30), in one statement.  Prints one\n"
             "JSON line per lease still held: {\"item_id\", \"token\",\n"
             "\"lease_until\"}.  A lease missing from the output is lost:\n"
             "stop its work.\n"
             "\n" CLI_DSN_HELP);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  char why[512];
  if (worker == NULL)
    return cli_usage_error("--worker is required");
  if (cl_check_worker(worker, why, sizeof why) != 0)
    return cli_usage_error("--worker: %s", why);
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_held_t *held = NULL;
  size_t count = 0;
  int rc = cl_heartbeat(c, worker, lease, &held, &count);
  if (rc < 0)
    ex = cli_fail(c, rc, "heartbeat");
  for (size_t i = 0; i < count; i++) {
    fputs("{\"item_id\":", stdout);
    cli_put_json_string(stdout, held[i].item_id);
    printf(",\"token\":\"%s\",\"lease_until\":\"%s\"}\n", held[i].token,
           held[i].lease_until);
  }
  cl_held_free(held, count);
  cl_conn_free(&c);
  return ex;
}

/* ------------------------------------------------------------------------ */
/* status                                                                    */

int cmd_status(int argc, char **argv) {
  static const struct option opts[] = {
      COMMON_OPTIONS, {"json", no_argument, NULL, 'j'}, {0}};
  const char *dsn = NULL;
  cli_dsn_t src = {0};
  int json = 0;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        return EXIT_USAGE;
      dsn = src.value;
      break;
    case 'j':
      json = 1;
      break;
    case 'h':
      printf("usage: claimer status [--json]\n\n"
             "Per queue: items ready now, scheduled for later, leased, done\n"
             "and dead; leases past expiry not yet reaped (stale); and the\n"
             "age of the oldest ready item.  --json prints one object per\n"
             "queue per line, for scripts.  Reads the claimer.queue_status\n"
             "view.  Then, per subscriber: results pending, deliveries\n"
             "sending, to retry, sent, held, dead, and the lag in positions\n"
             "(claimer.subscriber_status).\n"
             "\n" CLI_DSN_HELP);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn, &c);
  if (ex != EXIT_OK)
    return ex;
  cl_queue_status_t *rows = NULL;
  size_t n = 0;
  int rc = cl_status(c, &rows, &n);
  if (rc < 0) {
    ex = cli_fail(c, rc, "status");
  } else if (json) {
    for (size_t i = 0; i < n; i++) {
      fputs("{\"queue\":", stdout);
      cli_put_json_string(stdout, rows[i].queue);
      printf(",\"ready\":%ld,\"scheduled\":%ld,\"leased\":%ld,\"done\":%ld,"
             "\"dead\":%ld,\"stale\":%ld,\"oldest_ready_s\":%.3f}\n",
             rows[i].ready, rows[i].scheduled, rows[i].leased, rows[i].done,
             rows[i].dead, rows[i].stale, rows[i].oldest_ready_s);
    }
  } else if (n == 0) {
    printf("no items yet\n");
  } else {
    printf("%-24s %9s %9s %9s %9s %9s %9s %12s\n", "QUEUE", "READY",
           "SCHEDULED", "LEASED", "DONE", "DEAD", "STALE", "OLDEST READY");
    for (size_t i = 0; i < n; i++)
      printf("%-24s %9ld %9ld %9ld %9ld %9ld %9ld %11.1fs\n", rows[i].queue,
             rows[i].ready, rows[i].scheduled, rows[i].leased, rows[i].done,
             rows[i].dead, rows[i].stale, rows[i].oldest_ready_s);
  }
  /* Then the subscribers, when there are any (`claimer subscriber list`
   * has the same, with --json). */
  cl_subscriber_status_t *subs = NULL;
  size_t nsubs = 0;
  if (ex == EXIT_OK && !json && cl_subscriber_list(c, &subs, &nsubs) == 0 &&
      nsubs > 0) {
    printf("\n%-24s %-7s %9s %9s %9s %9s %9s %9s %9s %7s\n", "SUBSCRIBER",
           "STATE", "PENDING", "SENDING", "RETRY", "SENT", "HELD", "DEAD",
           "LAG", "OLDEST");
    for (size_t i = 0; i < nsubs; i++) {
      char age[16];
      cli_format_age(age, sizeof age, subs[i].oldest_age_s);
      printf("%-24s %-7s %9ld %9ld %9ld %9ld %9ld %9ld %9lld %7s\n",
             subs[i].name, subs[i].paused ? "paused" : "active",
             subs[i].pending, subs[i].in_flight, subs[i].retry, subs[i].sent,
             subs[i].held, subs[i].dead, subs[i].lag, age);
    }
  }
  cl_subscribers_free(subs, nsubs);
  cl_status_free(rows, n);
  cl_conn_free(&c);
  return ex;
}
