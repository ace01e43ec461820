/*
 * cmd_send.c: `claimer send`, the sender daemon: the sender of libclaimer
 * (sender.h) on a libuv loop for one subscriber, with a sink that runs a
 * command per delivery (`--exec`): /bin/sh -c CMD, the delivery as JSON
 * on stdin, its idempotency key in the environment.  Exit 0 is sent, 75
 * a temporary failure and anything else a failed attempt (both retried on
 * the subscriber's schedule until its attempts are spent); a command
 * killed at the timeout or by a signal may have done its effect, so the
 * delivery is in doubt (the subscriber's policy decides: send again with
 * the same key, or hold).  `--once` drains what is due and exits (cron).
 *
 * Or a webhook (`--webhook URL`): a POST through libcurl on the same loop
 * (http.h), to the Standard Webhooks contract: webhook-id (the
 * idempotency key, also sent as Idempotency-Key), webhook-timestamp and
 * webhook-signature (v1, HMAC-SHA256 over id.timestamp.body with each
 * secret, for rotation; signature.h).  2xx is sent; 410 pauses the
 * subscriber with an alert; 408, 429, 5xx and network errors before the
 * request went out are retried, after Retry-After when given; other
 * answers are failed attempts; a timeout or a cut after the request went
 * out is in doubt.
 *
 * The sinks come from the flags (one, shared by every --subscriber) or,
 * with --config, from the config file's subscribers: section (one per
 * subscriber).  With a file the start also writes the declared
 * subscribers to the database, once every sink has been checked; `claimer
 * subscriber sync` is that start without the sending.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "claimer/sender.h"
#include "cli.h"
#include "config.h"
#include "hook.h"
#include "http.h"
#include "log.h"
#include "signature.h"
#include "sink_pg.h"

enum { SUBS_MAX = CL_CONFIG_SUBSCRIBERS_MAX };

typedef struct sendd sendd_t;

/* Where deliveries go: one of a command, a webhook or a pg target.  The
 * flags make one sink that every --subscriber shares; a config file one
 * per subscriber, from its record. */
typedef struct sink {
  sendd_t *d;
  const char *command;            /* --exec */
  const char *url;                /* --webhook */
  const char *pg_target, *pg_sql; /* --pg-target, --pg-sql */
  pgsink_t *pg;
  cl_sig_keys_t *keys;
  cl_http_t *http;
  int http_closing;
  double timeout_s;
  /* From a config file: its place there, for the checks made here. */
  const char *target_at, *sql_at; /* "FILE:LINE:COL" of pg's values */
  char label[96];                 /* "subscribers.NAME.sink" */
} sink_t;

/* One sender per subscriber, all on one loop, each with its sink. */
typedef struct subsender {
  sendd_t *d;
  sink_t *sink;
  cl_sender_t *s; /* NULL once it has exited */
  const char *name;
} subsender_t;

struct sendd {
  uv_loop_t loop;
  subsender_t subs[SUBS_MAX];
  sink_t sinks[SUBS_MAX];
  int nsubs, nsinks, nrunning;
  uv_signal_t sigterm, sigint, sigusr1;
  int signals_seen;
  int exit_rc;
  cl_sender_stats_t st; /* summed over the senders */
  cl_config_t cfg;      /* --config: the sinks' strings are its */
};

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: claimer send --subscriber NAME [--subscriber NAME ...] SINK "
      "[OPTIONS]\n"
      "       claimer send --config FILE [--subscriber NAME ...] [OPTIONS]\n"
      "\n"
      "Delivers the results owed to a subscriber (`claimer subscriber "
      "add`), each\n"
      "once: a delivery row per (subscriber, item) records it, and the sink "
      "gets a\n"
      "key stable for that pair.  Several senders of one subscriber share "
      "the work.\n"
      "\n"
      "  --subscriber NAME      a subscriber to serve (repeatable: one sender "
      "each, on\n"
      "                         one loop, sharing the sink)\n"
      "  --config FILE          or serve the subscribers declared in FILE "
      "(its\n"
      "                         subscribers: section), each with its own "
      "sink, and\n"
      "                         its dsn and log settings; at start each is "
      "created\n"
      "                         or has its policy set as the file says (one "
      "line each\n"
      "                         on stderr: \"subscriber NAME: created (from "
      "position\n"
      "                         N)\" or \"... policy updated\"), after every "
      "sink was\n"
      "                         checked.  --subscriber then picks among them; "
      "the\n"
      "                         sink flags and --timeout do not go with it\n"
      "  --exec COMMAND         /bin/sh -c COMMAND per delivery: JSON on "
      "stdin\n"
      "                         (subscriber, item_id, queue, attempt, "
      "result,\n"
      "                         payload), CLAIMER_IDEMPOTENCY_KEY, "
      "CLAIMER_DELIVERY_ATTEMPT,\n"
      "                         CLAIMER_SUBSCRIBER, CLAIMER_ITEM_ID in its "
      "environment;\n"
      "                         exit 0 sent, 75 retry later, other a failed "
      "attempt;\n"
      "                         killed (timeout, signal): in doubt\n"
      "  --webhook URL          or POST each delivery to URL (http or "
      "https), signed\n"
      "                         as Standard Webhooks 1.0 says: webhook-id "
      "(the key),\n"
      "                         webhook-timestamp, webhook-signature; 2xx "
      "sent, 410\n"
      "                         pauses the subscriber (an alert), 408/429/5xx "
      "retried\n"
      "                         (Retry-After honoured), a timeout in doubt\n"
      "  --secret-file FILE     the signing secrets (whsec_..., one per line, "
      "several\n"
      "                         for rotation); the file must not be readable "
      "by others\n"
      "  --secret-env VAR       or from the environment variable VAR "
      "(space-separated)\n"
      "");
  fprintf(
      out,
      "  --pg-target DSN        or run --pg-sql in that PostgreSQL database, "
      "in one\n"
      "                         transaction with an insert into its inbox "
      "(claimer\n"
      "                         sink-setup --target DSN): a repeat is "
      "skipped there,\n"
      "                         so the effect happens once; $1 item_id, $2 "
      "queue,\n"
      "                         $3 result, $4 payload (jsonb), $5 "
      "idempotency_key,\n"
      "                         $6 subscriber, $7 attempt; when DSN is the "
      "claimer\n"
      "                         database itself, the sent mark commits in "
      "the same\n"
      "                         transaction\n"
      "  --pg-target-file FILE  the same DSN from FILE's first line (a "
      "password in\n"
      "                         argv is seen by ps)\n"
      "  --pg-sql SQL           the statement (checked with PREPARE at "
      "start)\n"
      "  --once                 deliver what is due, then exit\n"
      "  --concurrency N        sends at once (default 8)\n"
      "  --timeout SECONDS      per command (default 30)\n"
      "  --lease SECONDS        per delivery (default: timeout + 30)\n"
      "  --poll SECONDS         between claims when idle (default 1)\n"
      "  --name NAME            this sender's id (default host:pid:random)\n"
      "  --drain SECONDS        on SIGTERM, wait this long for the commands "
      "running,\n"
      "                         then kill them: in doubt (default 30)\n"
      "  --log-level L          debug, info (default), warning, error\n" CLI_DSN_HELP
      "\n"
      "Exit status: 0; 1 on a database error; 2 on bad usage or a bad "
      "config (nothing\n"
      "written).  SIGTERM or SIGINT\n"
      "stops claiming and waits --drain for the commands running (then "
      "kills them:\n"
      "in doubt); a second one exits 1 at once.  SIGUSR1 logs what each "
      "sender\n"
      "holds (sender_state: deliveries by state, the claim in flight and "
      "for how\n"
      "long, requests unanswered).\n");
}

static void sync_usage(FILE *out) {
  fprintf(
      out,
      "usage: claimer subscriber sync --config FILE [--subscriber NAME ...]\n"
      "\n"
      "Writes the subscribers declared in FILE (its subscribers: section; "
      "without\n"
      "--config, the file named by CLAIMER_CONFIG) to the database, as "
      "`claimer send\n"
      "--config` does at start, without sending: each one missing is created "
      "(from:\n"
      "applies then), each one there gets the policy of the file (queues, "
      "in_doubt,\n"
      "max_attempts, break_after, concurrency, rate, ordering); cursors and "
      "deliveries\n"
      "stay.  Its sinks are checked first as the sender checks them (webhook "
      "secrets\n"
      "read, pg statements prepared), so a config the sender would refuse "
      "changes\n"
      "nothing.  Prints one line per subscriber:\n"
      "  subscriber NAME: created (from position N)\n"
      "  subscriber NAME: policy updated\n"
      "--subscriber syncs only those (each must be declared).\n"
      "\n"
      "Exit status: 0; 1 on a database error; 2 on a bad config (the message "
      "names\n"
      "the file, line and column) or bad usage.\n"
      "\n" CLI_DSN_HELP);
}

/* One delivery through the command. */
typedef struct xsend {
  cl_send_t *send;
  cl__exec_t *run; /* the command, until on_exec */
} xsend_t;

/* The sender asks the sink to stop (drain timeout): the command is
 * killed, and on_exec reports the delivery in doubt. */
static void stop_exec(cl_send_t *send, void *arg) {
  xsend_t *x = arg;
  (void)send;
  cl__exec_kill(x->run);
}

static void on_exec(void *arg, cl__exec_end_t end, int status,
                    const char *msg) {
  (void)status;
  xsend_t *x = arg;
  cl_send_t *send = x->send;
  free(x);
  switch (end) {
  case CL__EXEC_OK:
    cl_send_done(send, CL_SEND_OK, NULL, 0);
    break;
  case CL__EXEC_EXITED:      /* 75 and any other status (msg says which) */
  case CL__EXEC_NOT_STARTED: /* nothing ran */
    cl_send_done(send, CL_SEND_RETRY, msg, -1);
    break;
  default:
    /* Killed: it may have done its effect. */
    cl_send_done(send, CL_SEND_IN_DOUBT, msg, 0);
  }
}

/* The delivery as JSON: what a sink is told.  The webhook wraps it in
 * the Standard Webhooks envelope (type, timestamp, data).  Returns a
 * malloc'd string or NULL. */
static char *delivery_json(cl_send_t *send, int envelope) {
  json_object *o = json_object_new_object();
  if (o == NULL)
    return NULL;
  json_object_object_add(o, "subscriber",
                         json_object_new_string(cl_send_subscriber(send)));
  json_object_object_add(o, "item_id",
                         json_object_new_string(cl_send_item_id(send)));
  json_object_object_add(o, "queue",
                         json_object_new_string(cl_send_queue(send)));
  json_object_object_add(o, "attempt",
                         json_object_new_int(cl_send_attempt(send)));
  json_object_object_add(o, "idempotency_key",
                         json_object_new_string(cl_send_key(send)));
  json_object_object_add(o, "result", json_tokener_parse(cl_send_result(send)));
  json_object_object_add(o, "payload",
                         json_tokener_parse(cl_send_payload(send)));
  if (envelope) {
    json_object *e = json_object_new_object();
    char when[40];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_object_add(e, "type", json_object_new_string("claimer.result"));
    json_object_object_add(e, "timestamp", json_object_new_string(when));
    json_object_object_add(e, "data", o);
    o = e;
  }
  const char *text = json_object_to_json_string_ext(
      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  char *out = text ? strdup(text) : NULL;
  json_object_put(o);
  return out;
}

static void sink_exec(cl_send_t *send, void *arg) {
  sink_t *k = arg;
  char *json = delivery_json(send, 0);
  char *input = json ? malloc(strlen(json) + 2) : NULL;
  xsend_t *x = calloc(1, sizeof *x);
  char attempt[16];
  snprintf(attempt, sizeof attempt, "%d", cl_send_attempt(send));
  int ok = input != NULL && x != NULL;
  if (ok) {
    sprintf(input, "%s\n", json);
    const char *const names[] = {"CLAIMER_IDEMPOTENCY_KEY",
                                 "CLAIMER_DELIVERY_ATTEMPT",
                                 "CLAIMER_SUBSCRIBER", "CLAIMER_ITEM_ID"};
    const char *const vals[] = {cl_send_key(send), attempt,
                                cl_send_subscriber(send),
                                cl_send_item_id(send)};
    x->send = send;
    ok = cl__exec_run(&k->d->loop, "exec sink", k->command, input, names, vals,
                      4, k->timeout_s, on_exec, x, &x->run) == 0;
  }
  free(json);
  free(input);
  if (!ok) {
    free(x);
    /* Nothing ran: a failed attempt, tried again on the schedule. */
    cl_send_done(send, CL_SEND_RETRY, "exec sink: out of memory", -1);
    return;
  }
  cl_send_on_stop(send, stop_exec, x);
}

typedef struct wsend {
  sink_t *k;
  cl_send_t *send;
} wsend_t;

static void on_http(void *arg, const cl_http_result_t *r) {
  wsend_t *w = arg;
  cl_send_t *send = w->send;
  sendd_t *d = w->k->d;
  free(w);
  char err[600];
  snprintf(err, sizeof err, "webhook: HTTP %ld%s%s%s%.200s", r->status,
           *r->error ? ": " : "", r->error, r->body_len ? ": " : "",
           r->body_len ? r->body : "");
  switch (r->cls) {
  case CL_HTTP_OK:
    cl_send_done(send, CL_SEND_OK, NULL, 0);
    break;
  case CL_HTTP_GONE:
    /* The receiver says the endpoint is gone: stop sending to it. */
    for (int i = 0; i < d->nsubs; i++)
      if (d->subs[i].s != NULL &&
          strcmp(d->subs[i].name, cl_send_subscriber(send)) == 0)
        cl_sender_disable(d->subs[i].s, "the webhook answered 410 Gone");
    cl_send_done(send, CL_SEND_RETRY, err, -1);
    break;
  case CL_HTTP_RETRY:
    cl_send_done(send, CL_SEND_RETRY, err,
                 r->retry_after >= 0 ? (double)r->retry_after : -1);
    break;
  case CL_HTTP_IN_DOUBT:
    cl_send_done(send, CL_SEND_IN_DOUBT, err, 0);
    break;
  case CL_HTTP_ABORTED:
    cl_send_done(send, r->sent ? CL_SEND_IN_DOUBT : CL_SEND_RETRY, err, -1);
    break;
  default:
    cl_send_done(send, CL_SEND_RETRY, err, -1);
  }
}

/* The sender asks the sinks to stop: closing the client answers every
 * request in flight (ABORTED: in doubt once sent). */
static void stop_webhook(cl_send_t *send, void *arg) {
  sink_t *k = arg;
  (void)send;
  if (!k->http_closing) {
    k->http_closing = 1;
    cl_http_close(k->http, NULL, NULL);
  }
}

static void sink_webhook(cl_send_t *send, void *arg) {
  sink_t *k = arg;
  char *body = delivery_json(send, 1);
  wsend_t *w = calloc(1, sizeof *w);
  char sig[CL_SIG_HEADER_MAX], h_id[160], h_ts[64],
      h_sig[CL_SIG_HEADER_MAX + 32], h_idem[160];
  int64_t ts = (int64_t)time(NULL);
  int rc = body && w ? 0 : CL_ENOMEM;
  if (rc == 0)
    rc = cl_sig_sign(k->keys, cl_send_key(send), ts, body, strlen(body), sig,
                     sizeof sig);
  if (rc == 0 && k->http_closing)
    rc = -ECANCELED;
  if (rc == 0) {
    snprintf(h_id, sizeof h_id, "webhook-id: %s", cl_send_key(send));
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", (long long)ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    snprintf(h_idem, sizeof h_idem, "Idempotency-Key: %s", cl_send_key(send));
    const char *headers[] = {h_id, h_ts, h_sig, h_idem, NULL};
    w->k = k;
    w->send = send;
    rc = cl_http_post(k->http, k->url, headers, body, strlen(body),
                      (long)(k->timeout_s * 1000), on_http, w);
  }
  free(body);
  if (rc != 0) {
    free(w);
    cl_send_done(send, CL_SEND_RETRY, "webhook: cannot send the request", -1);
    return;
  }
  cl_send_on_stop(send, stop_webhook, k);
}

static void sink_pgsql(cl_send_t *send, void *arg) {
  sink_t *k = arg;
  pgsink_send(k->pg, send);
}

/* Reads the signing secrets of the webhook sink k: the lines of a file
 * that only its owner may read, or the words of an environment variable
 * (file NULL).  what names the source in messages: "--secret-file FILE",
 * "--secret-env VAR", or its place in a config file.  Returns 0, or
 * prints what is wrong (never a secret) and returns EXIT_USAGE. */
static int load_secrets(sink_t *k, const char *file, const char *env,
                        const char *what) {
  if (cl_sig_keys_new(&k->keys) != 0)
    return EXIT_ERROR;
  char *text = NULL;
  if (file != NULL) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      cli_err("%s: %s", what, strerror(errno));
      if (fd >= 0)
        close(fd);
      return EXIT_USAGE;
    }
    if ((st.st_mode & 077) != 0 || !S_ISREG(st.st_mode)) {
      cli_err("%s: must be a regular file readable by its owner only (chmod "
              "600)",
              what);
      close(fd);
      return EXIT_USAGE;
    }
    text = calloc(1, (size_t)st.st_size + 1);
    if (text == NULL || read(fd, text, (size_t)st.st_size) != st.st_size) {
      cli_err("%s: cannot read it", what);
      close(fd);
      free(text);
      return EXIT_USAGE;
    }
    close(fd);
  } else {
    const char *v = getenv(env);
    if (v == NULL || *v == '\0') {
      cli_err("%s: the variable is not set", what);
      return EXIT_USAGE;
    }
    text = strdup(v);
    if (text == NULL)
      return EXIT_ERROR;
  }
  int ex = EXIT_OK, n = 0;
  char *save = NULL, why[256];
  for (char *t = strtok_r(text, " \t\r\n", &save); t && ex == EXIT_OK;
       t = strtok_r(NULL, " \t\r\n", &save)) {
    n++;
    if (cl_sig_keys_add(k->keys, t, strlen(t), why, sizeof why) != 0)
      ex = cli_usage_error("%s: signing secret %d: %s", what, n, why);
  }
  memset(text, 0, strlen(text));
  free(text);
  if (ex == EXIT_OK && n == 0)
    ex = cli_usage_error("%s: no signing secret in it", what);
  return ex;
}

/* Opens what the sinks need on the loop: a pg sink's connections (which
 * PREPARE its statement, so a bad one fails now) and a webhook's HTTP
 * client.  dsn is the claimer database (a pg target that is the same
 * commits the sent mark with the effect); nconns the connections of each
 * pg sink.  Returns an exit status after printing why. */
static int sinks_open(sendd_t *d, const char *dsn, int nconns) {
  for (int i = 0; i < d->nsinks; i++) {
    sink_t *k = &d->sinks[i];
    if (k->pg_target != NULL) {
      char why[1024];
      int same = strcmp(k->pg_target, dsn) == 0;
      int rc = pgsink_open(&k->pg, &d->loop, k->pg_target, k->pg_sql, nconns,
                           same, why, sizeof why);
      if (rc != 0) {
        /* From a file, the fault is at the statement when it does not
         * prepare, else at the target (no inbox, no connection). */
        int stmt = strstr(why, "does not prepare") != NULL;
        if (k->sql_at != NULL)
          cli_err("%s: %s.pg.%s: %s", stmt ? k->sql_at : k->target_at, k->label,
                  stmt ? "sql" : "target", why);
        else
          cli_err("%s", why);
        return rc == CL_EINVAL ? EXIT_USAGE : EXIT_ERROR;
      }
    }
    if (k->url != NULL && cl_http_new(&k->http, &d->loop, NULL) != 0) {
      cli_err("cannot set up libcurl");
      return EXIT_ERROR;
    }
  }
  return EXIT_OK;
}

/* Closes the HTTP clients still open (their close ends on the loop). */
static void sinks_close_http(sendd_t *d) {
  for (int i = 0; i < d->nsinks; i++) {
    sink_t *k = &d->sinks[i];
    if (k->http != NULL && !k->http_closing) {
      k->http_closing = 1;
      cl_http_close(k->http, NULL, NULL);
    }
  }
}

/* Frees what the sinks hold off the loop (secrets, pg connections) and
 * the config they came from. */
static void sinks_free(sendd_t *d) {
  for (int i = 0; i < d->nsinks; i++) {
    cl_sig_keys_free(&d->sinks[i].keys);
    pgsink_close(&d->sinks[i].pg);
  }
  cl_config_free(&d->cfg);
}

/* Ends a run that never started its senders: lets what the sinks opened
 * on the loop close, and frees the rest.  Returns ex. */
static int abandon(sendd_t *d, int ex) {
  sinks_close_http(d);
  uv_run(&d->loop, UV_RUN_DEFAULT);
  uv_loop_close(&d->loop);
  sinks_free(d);
  return ex;
}

/* --config: loads the file at path with the flags fs over it (dsn,
 * log.level), as the other daemons do, and makes d's senders its
 * subscribers: those named by --subscriber, each of which must be
 * declared there, or else every one declared.  Each gets a sink of its
 * own from its record, whose webhook secrets are read now.  Returns an
 * exit status after printing why. */
static int config_sinks(sendd_t *d, const char *path, const cli_flags_t *fs) {
  if (cli_load_config(&d->cfg, path, fs) != EXIT_OK)
    return EXIT_USAGE;
  const cl_config_t *cfg = &d->cfg;
  if (cfg->nsubscribers == 0)
    return cli_usage_error("%s declares no subscribers (subscribers: NAME: "
                           "{sink: {exec: COMMAND}})",
                           path);
  for (int i = 0; i < d->nsubs; i++) {
    if (cl_config_subscriber(cfg, d->subs[i].name) == NULL)
      return cli_usage_error("--subscriber %s: not declared in %s",
                             d->subs[i].name, path);
    for (int j = 0; j < i; j++)
      if (strcmp(d->subs[j].name, d->subs[i].name) == 0)
        return cli_usage_error("--subscriber %s is given twice",
                               d->subs[i].name);
  }
  if (d->nsubs == 0) {
    for (size_t i = 0; i < cfg->nsubscribers; i++)
      d->subs[i].name = cfg->subscribers[i].name;
    d->nsubs = (int)cfg->nsubscribers;
  }
  d->nsinks = d->nsubs;
  for (int i = 0; i < d->nsubs; i++) {
    const cl_config_subscriber_t *r =
        cl_config_subscriber(cfg, d->subs[i].name);
    const cl_config_sink_t *rs = &r->sink;
    sink_t *k = &d->sinks[i];
    *k = (sink_t){.d = d,
                  .command = rs->exec,
                  .url = rs->webhook,
                  .pg_target = rs->pg_target,
                  .pg_sql = rs->pg_sql,
                  .timeout_s = rs->timeout_s,
                  .target_at = rs->target_at,
                  .sql_at = rs->sql_at};
    snprintf(k->label, sizeof k->label, "subscribers.%s.sink", r->name);
    d->subs[i].sink = k;
    if (rs->webhook == NULL)
      continue;
    char what[1200];
    const char *via = rs->secret_file ? "secret_file" : "secret_env";
    snprintf(what, sizeof what, "%s: %s.%s %s",
             rs->secret_at ? rs->secret_at : path, k->label, via,
             rs->secret_file ? rs->secret_file : rs->secret_env);
    int ex = load_secrets(k, rs->secret_file, rs->secret_env, what);
    if (ex != EXIT_OK)
      return ex;
  }
  return EXIT_OK;
}

/* Writes each subscriber of d to the database as its record says:
 * cl_subscriber_add() (where from: applies), and when it existed already
 * cl_subscriber_set(..., CL_SUB_ALL), so that the database follows the
 * file; its cursor and deliveries stay.  Prints one line per subscriber
 * on out.  Returns an exit status. */
static int sync_subscribers(cl_conn_t *c, const sendd_t *d, FILE *out) {
  for (int i = 0; i < d->nsubs; i++) {
    const cl_config_subscriber_t *r =
        cl_config_subscriber(&d->cfg, d->subs[i].name);
    cl_subscriber_opts_t o;
    cl_config_subscriber_opts(r, &o);
    long long from = 0;
    int rc = cl_subscriber_add(c, r->name, &o, &from);
    if (rc == 1)
      fprintf(out, "subscriber %s: created (from position %lld)\n", r->name,
              from);
    else if (rc == 0 &&
             (rc = cl_subscriber_set(c, r->name, &o, CL_SUB_ALL)) == 0)
      fprintf(out, "subscriber %s: policy updated\n", r->name);
    if (rc < 0) {
      char what[96];
      snprintf(what, sizeof what, "subscriber %s", r->name);
      return cli_fail(c, rc, what);
    }
  }
  fflush(out);
  return EXIT_OK;
}

/* Checks that every subscriber d serves exists (the flags' way: they are
 * added by `claimer subscriber add`).  Returns an exit status. */
static int subscribers_exist(cl_conn_t *c, const sendd_t *d) {
  cl_subscriber_status_t *rows = NULL;
  size_t n = 0;
  int ex = EXIT_OK, rc = cl_subscriber_list(c, &rows, &n);
  if (rc != 0)
    return cli_fail(c, rc, "subscriber");
  for (int j = 0; j < d->nsubs && ex == EXIT_OK; j++) {
    int found = 0;
    for (size_t i = 0; i < n; i++)
      found |= strcmp(rows[i].name, d->subs[j].name) == 0;
    if (!found)
      ex = cli_usage_error("no subscriber \"%s\" (claimer subscriber add %s)",
                           d->subs[j].name, d->subs[j].name);
  }
  cl_subscribers_free(rows, n);
  return ex;
}

static void on_sender_exit(void *arg, int rc, const char *why) {
  subsender_t *ss = arg;
  sendd_t *d = ss->d;
  cl_sender_stats_t st;
  cl_sender_stats(ss->s, &st);
  d->st.claimed += st.claimed;
  d->st.sent += st.sent;
  d->st.retried += st.retried;
  d->st.dead += st.dead;
  d->st.in_doubt += st.in_doubt;
  d->st.lost += st.lost;
  ss->s = NULL;
  if (rc != 0) {
    cli_err("%s: %s", ss->name,
            why && *why ? why : "the sender stopped on an error");
    d->exit_rc = EXIT_ERROR;
  }
  if (--d->nrunning > 0)
    return;
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sigusr1, NULL);
  sinks_close_http(d);
}

/* SIGUSR1: each sender says what it holds (sender_state). */
static void on_state_signal(uv_signal_t *h, int signum) {
  sendd_t *d = h->data;
  (void)signum;
  for (int i = 0; i < d->nsubs; i++)
    if (d->subs[i].s != NULL)
      cl_sender_log_state(d->subs[i].s);
}

static void on_stop_signal(uv_signal_t *h, int signum) {
  sendd_t *d = h->data;
  if (d->nrunning == 0)
    return;
  if (++d->signals_seen > 1) {
    cl_log(CL_LEVEL_WARNING, "signal", "signal", strsignal(signum), "action",
           "exit now; deliveries being sent are left in doubt", NULL);
    _exit(EXIT_ERROR);
  }
  cl_log(CL_LEVEL_INFO, "signal", "signal", strsignal(signum), "action", "stop",
         NULL);
  for (int i = 0; i < d->nsubs; i++)
    if (d->subs[i].s != NULL)
      cl_sender_stop(d->subs[i].s);
}

int cmd_send(int argc, char **argv) {
  static const struct option opts[] = {
      CLI_DSN_OPTIONS,
      {"help", no_argument, NULL, 'h'},
      {"config", required_argument, NULL, 'C'},
      {"subscriber", required_argument, NULL, 's'},
      {"exec", required_argument, NULL, 'x'},
      {"once", no_argument, NULL, 'o'},
      {"concurrency", required_argument, NULL, 'c'},
      {"timeout", required_argument, NULL, 't'},
      {"lease", required_argument, NULL, 'L'},
      {"poll", required_argument, NULL, 'p'},
      {"name", required_argument, NULL, 'n'},
      {"drain", required_argument, NULL, 'r'},
      {"webhook", required_argument, NULL, 'w'},
      {"secret-file", required_argument, NULL, 'S'},
      {"secret-env", required_argument, NULL, 'E'},
      {"pg-target", required_argument, NULL, 'T'},
      {"pg-target-file", required_argument, NULL, 'F'},
      {"pg-sql", required_argument, NULL, 'Q'},
      {"log-level", required_argument, NULL, 'l'},
      {0}};
  static sendd_t d;
  static cli_flags_t fs; /* --config: the flags over the file */
  /* `claimer subscriber sync` is this command's start without the
   * sending: cmd_subscriber() hands its arguments over from "sync". */
  int sync_only = strcmp(argv[0], "sync") == 0;
  cl_sender_opts_t so;
  cl_sender_opts_init(&so);
  cli_dsn_t src = {0};
  const char *dsn_opt = NULL, *config_path = NULL, *level_opt = NULL;
  const char *sink_flag = NULL;    /* the first sink flag given */
  const char *sending_flag = NULL; /* the first flag sync does not take */
  double lease = 0;
  cl_level_t level = CL_LEVEL_INFO;
  const char *secret_file = NULL, *secret_env = NULL;
  /* The flags' sink, which every --subscriber shares. */
  sink_t *k = &d.sinks[0];
  d.nsinks = 1;
  k->d = &d;
  k->timeout_s = 30;
  uv_loop_init(&d.loop);
  int ch, ex = EXIT_OK;
  char why[512];
  optind = 1;
  opterr = 0;
  while (ex == EXIT_OK &&
         (ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        ex = EXIT_USAGE;
      dsn_opt = src.value;
      break;
    case 'C':
      config_path = optarg;
      break;
    case 's':
      if (cl_check_queue(optarg, why, sizeof why) != 0)
        ex = cli_usage_error("--subscriber: %s", why);
      if (d.nsubs == SUBS_MAX)
        ex = cli_usage_error("at most %d --subscriber", SUBS_MAX);
      else
        d.subs[d.nsubs++].name = optarg;
      break;
    case 'x':
      if (*optarg == '\0')
        ex = cli_usage_error("--exec needs a command");
      k->command = optarg;
      sink_flag = sink_flag ? sink_flag : "--exec";
      break;
    case 'o':
      so.once = 1;
      sending_flag = sending_flag ? sending_flag : "--once";
      break;
    case 'c':
      if (cli_parse_int(optarg, "--concurrency", 1, 10000, &so.concurrency))
        ex = EXIT_USAGE;
      sending_flag = sending_flag ? sending_flag : "--concurrency";
      break;
    case 't':
      if (cli_parse_double(optarg, "--timeout", 0.1, 86400, &k->timeout_s))
        ex = EXIT_USAGE;
      sink_flag = sink_flag ? sink_flag : "--timeout";
      break;
    case 'L':
      if (cli_parse_double(optarg, "--lease", 1, 604800, &lease))
        ex = EXIT_USAGE;
      sending_flag = sending_flag ? sending_flag : "--lease";
      break;
    case 'p':
      if (cli_parse_double(optarg, "--poll", 0.01, 3600, &so.poll_s))
        ex = EXIT_USAGE;
      sending_flag = sending_flag ? sending_flag : "--poll";
      break;
    case 'w':
      if (strncmp(optarg, "http://", 7) != 0 &&
          strncmp(optarg, "https://", 8) != 0)
        ex = cli_usage_error("--webhook: the URL must start with http:// or "
                             "https://");
      k->url = optarg;
      sink_flag = sink_flag ? sink_flag : "--webhook";
      break;
    case 'S':
      secret_file = optarg;
      sink_flag = sink_flag ? sink_flag : "--secret-file";
      break;
    case 'T':
    case 'F': /* the DSN from a file's first line: no password in argv */
      if (k->pg_target != NULL)
        ex = cli_usage_error("give --pg-target or --pg-target-file, once");
      else if ((k->pg_target = ch == 'T' ? cli_keep_dsn(optarg)
                                         : cli_read_dsn_file(optarg)) == NULL)
        ex = ch == 'T' ? EXIT_ERROR : EXIT_USAGE;
      else if (cl_check_dsn(k->pg_target, why, sizeof why) != 0)
        ex = cli_usage_error(
            "%s: %s", ch == 'T' ? "--pg-target" : "--pg-target-file", why);
      sink_flag = sink_flag ? sink_flag : "--pg-target";
      break;
    case 'Q':
      k->pg_sql = optarg;
      sink_flag = sink_flag ? sink_flag : "--pg-sql";
      break;
    case 'E':
      secret_env = optarg;
      sink_flag = sink_flag ? sink_flag : "--secret-env";
      break;
    case 'r':
      if (cli_parse_double(optarg, "--drain", 0, 86400, &so.drain_s))
        ex = EXIT_USAGE;
      sending_flag = sending_flag ? sending_flag : "--drain";
      break;
    case 'n':
      if (cl_check_worker(optarg, why, sizeof why) != 0)
        ex = cli_usage_error("--name: %s", why);
      so.name = optarg;
      sending_flag = sending_flag ? sending_flag : "--name";
      break;
    case 'l':
      level_opt = optarg;
      if (strcmp(optarg, "debug") == 0)
        level = CL_LEVEL_DEBUG;
      else if (strcmp(optarg, "info") == 0)
        level = CL_LEVEL_INFO;
      else if (strcmp(optarg, "warning") == 0)
        level = CL_LEVEL_WARNING;
      else if (strcmp(optarg, "error") == 0)
        level = CL_LEVEL_ERROR;
      else
        ex = cli_usage_error("--log-level \"%s\" is not debug, info, "
                             "warning or error",
                             optarg);
      sending_flag = sending_flag ? sending_flag : "--log-level";
      break;
    case 'h':
      if (sync_only)
        sync_usage(stdout);
      else
        usage(stdout);
      return abandon(&d, EXIT_OK);
    default:
      ex = cli_bad_option(argv, optopt);
    }
  }
  if (ex == EXIT_OK && optind < argc)
    ex = cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  if (sync_only && config_path == NULL)
    config_path = getenv("CLAIMER_CONFIG");
  if (ex == EXIT_OK && sync_only && (sink_flag || sending_flag))
    ex = cli_usage_error("%s does not go with subscriber sync",
                         sink_flag ? sink_flag : sending_flag);
  if (ex == EXIT_OK && sync_only && config_path == NULL)
    ex = cli_usage_error("subscriber sync needs --config FILE (or "
                         "CLAIMER_CONFIG)");
  if (ex == EXIT_OK && config_path != NULL && sink_flag != NULL)
    ex = cli_usage_error("%s: the sinks come from the config file with "
                         "--config",
                         sink_flag);
  if (ex == EXIT_OK && config_path != NULL) {
    /* The flags go over the file, as in the other daemons. */
    if (dsn_opt != NULL)
      (void)cli_flag_add(&fs, src.option[0] ? src.option + 2 : "dsn", "dsn",
                         dsn_opt);
    if (level_opt != NULL)
      (void)cli_flag_add(&fs, "log-level", "log.level", level_opt);
    ex = config_sinks(&d, config_path, &fs);
  } else if (ex == EXIT_OK) {
    if (d.nsubs == 0)
      ex = cli_usage_error("--subscriber NAME is required");
    if (ex == EXIT_OK &&
        (k->command != NULL) + (k->url != NULL) + (k->pg_target != NULL) != 1)
      ex = cli_usage_error("give one sink: --exec COMMAND, --webhook URL or "
                           "--pg-target DSN");
    if (ex == EXIT_OK && (k->pg_target == NULL) != (k->pg_sql == NULL))
      ex = cli_usage_error("--pg-target and --pg-sql go together");
    if (ex == EXIT_OK && k->url != NULL &&
        (secret_file == NULL) == (secret_env == NULL))
      ex = cli_usage_error("--webhook needs its signing secrets: "
                           "--secret-file FILE or --secret-env VAR");
    if (ex == EXIT_OK && k->url == NULL && (secret_file || secret_env))
      ex = cli_usage_error("--secret-file and --secret-env go with --webhook");
    if (ex == EXIT_OK && k->url != NULL) {
      char what[600];
      snprintf(what, sizeof what, "%s %s",
               secret_file ? "--secret-file" : "--secret-env",
               secret_file ? secret_file : secret_env);
      ex = load_secrets(k, secret_file, secret_env, what);
    }
    for (int i = 0; i < d.nsubs; i++)
      d.subs[i].sink = k;
  }
  if (ex != EXIT_OK)
    return abandon(&d, ex);
  if (config_path != NULL)
    cl_log_setup(d.cfg.log_format, d.cfg.log_level, 2);
  else
    cl_log_setup(CL_LOG_LOGFMT, level, 2);

  cli_hold_signals(); /* a SIGTERM from here on drains, once we can */
  /* Connect once, blocking: a refused password, a missing schema or an
   * unknown subscriber is reported now, not retried forever. */
  cl_conn_t *c = NULL;
  char *dsn = NULL;
  ex = cli_connect_dsn(config_path != NULL ? d.cfg.dsn : dsn_opt, &c, &dsn);
  if (ex == EXIT_OK) {
    int rc = cl_schema_check(c);
    if (rc != 0)
      ex = cli_fail(c, rc, "schema");
  }
  if (ex == EXIT_OK && config_path == NULL)
    ex = subscribers_exist(c, &d);

  signal(SIGPIPE, SIG_IGN);
  int webhooks = 0;
  for (int i = 0; i < d.nsinks; i++)
    webhooks |= d.sinks[i].url != NULL;
  if (ex == EXIT_OK && webhooks && cl_http_global_init() != 0) {
    cli_err("cannot set up libcurl");
    ex = EXIT_ERROR;
  }
  /* Every sink is checked (a pg statement prepared) before the config's
   * subscribers are written: a bad config changes nothing. */
  if (ex == EXIT_OK)
    ex = sinks_open(&d, dsn, so.concurrency < 4 ? so.concurrency : 4);
  if (ex == EXIT_OK && config_path != NULL)
    ex = sync_subscribers(c, &d, sync_only ? stdout : stderr);
  cl_conn_free(&c);
  if (ex != EXIT_OK || sync_only) {
    free(dsn);
    return abandon(&d, ex);
  }
  so.dsn = dsn;
  so.events = cl_log_events();
  so.on_exit = on_sender_exit;
  char err[512];
  int rc = 0;
  for (int i = 0; i < d.nsubs && rc == 0; i++) {
    subsender_t *ss = &d.subs[i];
    ss->d = &d;
    so.subscriber = ss->name;
    so.arg = ss;
    so.lease_s = lease > 0 ? lease : ss->sink->timeout_s + 30;
    so.sink = ss->sink->url != NULL  ? sink_webhook
              : ss->sink->pg != NULL ? sink_pgsql
                                     : sink_exec;
    so.sink_arg = ss->sink;
    rc = cl_sender_new(&ss->s, &d.loop, &so, err, sizeof err);
  }
  free(dsn);
  if (rc != 0) {
    cli_err("%s", err);
    for (int i = 0; i < d.nsubs; i++)
      if (d.subs[i].s != NULL)
        cl_sender_stop(d.subs[i].s); /* never started: it just closes */
    d.nrunning = d.nsubs + 1;        /* on_sender_exit must not close signals */
    return abandon(&d, rc == CL_ENOMEM ? EXIT_ERROR : EXIT_USAGE);
  }
  d.nrunning = d.nsubs;
  uv_signal_init(&d.loop, &d.sigterm);
  uv_signal_init(&d.loop, &d.sigint);
  uv_signal_init(&d.loop, &d.sigusr1);
  d.sigterm.data = d.sigint.data = d.sigusr1.data = &d;
  uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&d.sigusr1, on_state_signal, SIGUSR1);
  cli_release_signals();
  for (int i = 0; i < d.nsubs; i++) {
    if ((rc = cl_sender_start(d.subs[i].s)) != 0) {
      cli_err("cannot start the sender of %s: %s", d.subs[i].name,
              cl_strerror(rc));
      d.exit_rc = EXIT_ERROR;
      cl_sender_stop(d.subs[i].s);
    }
  }
  uv_run(&d.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&d.loop) != 0) {
    cli_err("internal error: the loop still had handles open at exit");
    d.exit_rc = EXIT_ERROR;
  }
  if (webhooks)
    cl_http_global_cleanup();
  long repeats = 0;
  int pg_sinks = 0;
  for (int i = 0; i < d.nsinks; i++) {
    if (d.sinks[i].pg != NULL) {
      repeats += pgsink_repeats(d.sinks[i].pg);
      pg_sinks = 1;
    }
  }
  sinks_free(&d);
  if (so.once && d.exit_rc == EXIT_OK)
    printf("sent %ld, retry %ld, dead %ld, in doubt %ld, lost %ld\n", d.st.sent,
           d.st.retried, d.st.dead, d.st.in_doubt, d.st.lost);
  if (so.once && d.exit_rc == EXIT_OK && pg_sinks)
    printf("pg sink: %ld repeats skipped by the inbox\n", repeats);
  return d.exit_rc;
}

/* `claimer sink-setup --target DSN`: the pg sink's inbox in a target. */
int cmd_sink_setup(int argc, char **argv) {
  static const struct option opts[] = {
      {"help", no_argument, NULL, 'h'},
      {"target", required_argument, NULL, 'T'},
      {"target-file", required_argument, NULL, 'F'},
      {0}};
  const char *target = NULL;
  int ch;
  char why[512];
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    if (ch == 'h') {
      printf("usage: claimer sink-setup --target DSN | --target-file FILE\n\n"
             "Creates claimer_sink.inbox in the target database of a pg "
             "sink (claimer send\n"
             "--pg-target): one row per (subscriber, idempotency_key) "
             "delivered, so that\n"
             "a repeat is skipped in the target's own transaction.  Safe to "
             "run again.\n");
      return EXIT_OK;
    }
    if (ch != 'T' && ch != 'F')
      return cli_bad_option(argv, optopt);
    if (target != NULL)
      return cli_usage_error("give --target or --target-file, once");
    if ((target = ch == 'T' ? cli_keep_dsn(optarg)
                            : cli_read_dsn_file(optarg)) == NULL)
      return ch == 'T' ? EXIT_ERROR : EXIT_USAGE;
    if (cl_check_dsn(target, why, sizeof why) != 0)
      return cli_usage_error("--target: %s", why);
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  if (target == NULL)
    return cli_usage_error("--target DSN is required");
  char err[1024];
  if (pgsink_setup(target, err, sizeof err) != 0) {
    cli_err("%s", err);
    return EXIT_ERROR;
  }
  printf("inbox ready: claimer_sink.inbox\n");
  return EXIT_OK;
}
