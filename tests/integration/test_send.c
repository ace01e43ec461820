/*
 * test_send.c: `claimer send`, the sender daemon, as real processes
 * against a real PostgreSQL: an exec sink delivers every result of a
 * subscriber once with the documented key; exit statuses map to sent,
 * retry and dead; a sender killed with SIGKILL mid-send leaves the
 * delivery to be sent again with the same key (the retry policy) while
 * the database records it sent once; bad input exits 2 and changes
 * nothing.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "harness.h"

typedef struct fx {
  char dsn[1024];
  char dir[600];
  cl_conn_t *c;
  PGconn *pg;
} fx_t;

static int setup(void **state) {
  static int n;
  fx_t *fx = calloc(1, sizeof *fx);
  char db[32];
  snprintf(db, sizeof db, "send_%d", ++n);
  if (fx == NULL || th_db_create(&th_pg, db, 1, fx->dsn, sizeof fx->dsn) != 0)
    return -1;
  snprintf(fx->dir, sizeof fx->dir, "%s/%s", th_pg.dir, db);
  if (mkdir(fx->dir, 0700) != 0)
    return -1;
  if (cl_conn_new(&fx->c, fx->dsn) != 0 || cl_conn_connect(fx->c) != 0)
    return -1;
  fx->pg = th_connect(fx->dsn);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fx_t *fx = *state;
  cl_conn_free(&fx->c);
  PQfinish(fx->pg);
  free(fx);
  return 0;
}

/* n items of queue q with results, and a subscriber of them all. */
static void results(fx_t *fx, const char *prefix, int n, int max_attempts) {
  for (int i = 0; i < n; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%d", prefix, i);
    cl_item_t it = {.item_id = id, .queue = "q"};
    assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
    cl_lease_t *l = NULL;
    size_t got = 0;
    assert_int_equal(cl_claim(fx->c, "q", "w", 1, 30, &l, &got), 0);
    assert_int_equal(
        cl_complete(fx->c, l[0].item_id, l[0].token, "{\"ok\":1}", NULL), 0);
    cl_leases_free(l, got);
  }
  cl_subscriber_opts_t o = {.from = "beginning", .max_attempts = max_attempts};
  assert_true(cl_subscriber_add(fx->c, "sub", &o, NULL) >= 0);
}

/* Runs `claimer send --subscriber sub ARGS... --once --dsn DSN` (under
 * valgrind when CLAIMER_TEST_WRAP says so), ARGS ending with NULL. */
static int run_send(fx_t *fx, char **out, ...) {
  const char *argv[40];
  int n = th_wrap(argv, 16);
  argv[n++] = th_claimer_bin();
  argv[n++] = "send";
  argv[n++] = "--subscriber";
  argv[n++] = "sub";
  va_list ap;
  va_start(ap, out);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 34;)
    argv[n++] = a;
  va_end(ap);
  argv[n++] = "--once";
  argv[n++] = "--dsn";
  argv[n++] = fx->dsn;
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

static int send_once(fx_t *fx, const char *cmd, char **out) {
  return run_send(fx, out, "--exec", cmd, "--timeout", "5", NULL);
}

/* Every result delivered once, the key in the environment and on stdin. */
static void test_once_delivers_all(void **state) {
  fx_t *fx = *state;
  results(fx, "a", 30, 0);
  char cmd[1200], *out = NULL;
  snprintf(cmd, sizeof cmd,
           "printf '%%s %%s\\n' \"$CLAIMER_IDEMPOTENCY_KEY\" "
           "\"$(cat | tr -d '\\n')\" >> '%s/effects'",
           fx->dir);
  int rc = send_once(fx, cmd, &out);
  print_message("%s", out);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "sent 30, retry 0"));
  free(out);
  char path[700];
  snprintf(path, sizeof path, "%s/effects", fx->dir);
  char *eff = th_read_file(path);
  assert_int_equal(th_count(eff, "\n"), 30);
  assert_int_equal(th_count(eff, "\"subscriber\":\"sub\""), 30);
  assert_int_equal(th_count(eff, "\"result\":{\"ok\":1}"), 30);
  /* Each line starts with the key the database holds for its item. */
  PGresult *r = PQexec(fx->pg, "SELECT idempotency_key, item_id FROM "
                               "claimer.deliveries WHERE state = 'sent'");
  assert_int_equal(PQntuples(r), 30);
  for (int i = 0; i < PQntuples(r); i++) {
    char line[256];
    snprintf(line, sizeof line, "%s {\"subscriber\":\"sub\",\"item_id\":\"%s\"",
             PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    assert_int_equal(th_count(eff, line), 1);
  }
  PQclear(r);
  free(eff);
  /* Nothing is due any more. */
  assert_int_equal(send_once(fx, "exit 1", &out), 0);
  assert_non_null(strstr(out, "sent 0"));
  free(out);
}

/* Exit statuses: 0 sent; 75 and others a failed attempt, retried on the
 * schedule, dead after the last; killed at the timeout: in doubt. */
static void test_exit_statuses(void **state) {
  fx_t *fx = *state;
  results(fx, "b", 3, 2);
  char *out = NULL;
  const char *cmd = "case \"$CLAIMER_ITEM_ID\" in b-0) exit 0;; b-1) exit 75;;"
                    " *) echo nope >&2; exit 3;; esac";
  assert_int_equal(send_once(fx, cmd, &out), 0);
  assert_non_null(strstr(out, "sent 1, retry 2"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'retry' AND last_error LIKE "
                                   "'exec sink: exit %'"),
                   2);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE last_error LIKE '%nope%'"),
                   1);
  /* Due now, the second attempt fails too: dead (max_attempts 2). */
  th_exec(fx->pg, "UPDATE claimer.deliveries SET next_at = now() "
                  "WHERE state = 'retry'");
  assert_int_equal(send_once(fx, cmd, &out), 0);
  assert_non_null(strstr(out, "dead 2"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'delivery_dead'"),
                   2);
  /* A command killed at its timeout: in doubt, nothing recorded. */
  results(fx, "c", 1, 0);
  assert_int_equal(run_send(fx, &out, "--exec", "sleep 30", "--timeout", "0.5",
                            "--lease", "2", NULL),
                   0);
  assert_non_null(strstr(out, "in doubt 1"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE item_id = 'c-0' AND state = "
                                   "'sending'"),
                   1);
}

/* A sender killed with SIGKILL while its command runs: the lease runs out
 * and the next sender sends again, same key, attempt 2; one 'sent'. */
static void test_kill9_resends_same_key(void **state) {
  fx_t *fx = *state;
  results(fx, "k", 1, 0);
  char cmd[1200], path[700], log[700];
  snprintf(path, sizeof path, "%s/effects", fx->dir);
  snprintf(log, sizeof log, "%s/sender.log", fx->dir);
  snprintf(cmd, sizeof cmd,
           "echo \"$CLAIMER_IDEMPOTENCY_KEY $CLAIMER_DELIVERY_ATTEMPT\" >> "
           "'%s'; [ \"$CLAIMER_DELIVERY_ATTEMPT\" = 1 ] && sleep 30; exit 0",
           path);
  const char *argv[] = {th_claimer_bin(),
                        "send",
                        "--subscriber",
                        "sub",
                        "--exec",
                        cmd,
                        "--lease",
                        "2",
                        "--poll",
                        "0.2",
                        "--dsn",
                        fx->dsn,
                        NULL};
  pid_t pid = th_spawn(argv, log);
  for (int i = 0; i < 100; i++) {
    char *eff = th_read_file(path);
    int n = th_count(eff, "\n");
    free(eff);
    if (n >= 1)
      break;
    usleep(100 * 1000);
  }
  kill(-pid, SIGKILL); /* the sender and its command, as a host crash */
  assert_int_equal(th_wait_exit(pid, 10), 128 + SIGKILL);
  usleep(2200 * 1000); /* the lease runs out */
  char *out = NULL;
  assert_int_equal(send_once(fx, cmd, &out), 0);
  free(out);
  char *eff = th_read_file(path);
  char key[80];
  PGresult *r = PQexec(fx->pg, "SELECT idempotency_key, attempts, state FROM "
                               "claimer.deliveries");
  assert_int_equal(PQntuples(r), 1);
  snprintf(key, sizeof key, "%s", PQgetvalue(r, 0, 0));
  assert_string_equal(PQgetvalue(r, 0, 1), "2");
  assert_string_equal(PQgetvalue(r, 0, 2), "sent");
  PQclear(r);
  print_message("effects:\n%s", eff);
  assert_int_equal(th_count(eff, key), 2); /* at least once, same key */
  free(eff);
}

/* SIGTERM with a command running past the drain timeout: the command is
 * killed, the delivery left in doubt (nothing recorded), the daemon exits
 * 0 with its loop closed; the next sender sends it again, same key.
 * Before it, SIGUSR1 has the sender say what it holds (sender_state: one
 * delivery in its sink). */
static void test_sigterm_drain_kills_sink(void **state) {
  fx_t *fx = *state;
  results(fx, "t", 1, 0);
  char cmd[1200], path[700], log[700];
  snprintf(path, sizeof path, "%s/effects", fx->dir);
  snprintf(log, sizeof log, "%s/sender.log", fx->dir);
  snprintf(cmd, sizeof cmd,
           "echo \"$CLAIMER_DELIVERY_ATTEMPT\" >> '%s'; "
           "[ \"$CLAIMER_DELIVERY_ATTEMPT\" = 1 ] && sleep 30; exit 0",
           path);
  const char *argv[32];
  int n = th_wrap(argv, 16);
  const char *rest[] = {th_claimer_bin(),
                        "send",
                        "--subscriber",
                        "sub",
                        "--exec",
                        cmd,
                        "--lease",
                        "2",
                        "--drain",
                        "0.5",
                        "--timeout",
                        "60",
                        "--dsn",
                        fx->dsn,
                        NULL};
  for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
    argv[n++] = rest[i];
  pid_t pid = th_spawn(argv, log);
  for (int i = 0; i < 300; i++) {
    char *eff = th_read_file(path);
    int lines = th_count(eff, "\n");
    free(eff);
    if (lines >= 1)
      break;
    usleep(100 * 1000);
  }
  /* Asked, it says what it holds: one delivery in its sink. */
  kill(pid, SIGUSR1);
  char *out = NULL;
  for (int i = 0; i < 100; i++) {
    free(out);
    out = th_read_file(log);
    if (strstr(out, "event=sender_state"))
      break;
    usleep(100 * 1000);
  }
  const char *st = strstr(out, "event=sender_state");
  if (st == NULL)
    print_message("%s", out);
  assert_non_null(st);
  assert_non_null(strstr(st, "subscriber=sub live=1 waiting=0 sinking=1"));
  assert_non_null(strstr(st, "db=up"));
  free(out);
  double t0 = th_now();
  kill(pid, SIGTERM);
  int rc = th_wait_exit(pid, 30);
  double took = th_now() - t0;
  out = th_read_file(log);
  print_message("exit %d after %.2f s\n", rc, took);
  if (rc != 0)
    print_message("%s", out);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "drain_timeout"));
  assert_non_null(strstr(out, "send_in_doubt"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'sending'"),
                   1);
  usleep(2200 * 1000); /* its lease runs out */
  assert_int_equal(send_once(fx, cmd, &out), 0);
  assert_non_null(strstr(out, "sent 1"));
  free(out);
}

/* ------------------------------------------------------------------------ */
/* The webhook sink, against hookd (a real HTTP server that checks the
 * Standard Webhooks signature and counts effects per webhook-id). */

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define OTHER_SECRET "whsec_dGhpcyBpcyBub3QgdGhlIHNhbWUgc2VjcmV0IQ=="

typedef struct hook {
  pid_t pid;
  char url[128];
  char out[700];
  char log[700];
} hook_t;

/* Starts hookd checking signatures with secret, answering as script says
 * (NULL: always 200). */
static void hook_up(fx_t *fx, hook_t *h, const char *secret,
                    const char *script) {
  char port_file[700];
  snprintf(port_file, sizeof port_file, "%s/hookd.port", fx->dir);
  snprintf(h->out, sizeof h->out, "%s/hookd.out", fx->dir);
  snprintf(h->log, sizeof h->log, "%s/hookd.log", fx->dir);
  const char *argv[12] = {
      getenv("HOOKD_BIN"), "--out",    h->out, "--port-file",
      port_file,           "--secret", secret};
  int n = 7;
  if (script != NULL) {
    argv[n++] = "--script";
    argv[n++] = script;
  }
  argv[n] = NULL;
  assert_non_null(argv[0]);
  h->pid = th_spawn(argv, h->log);
  double end = th_now() + 10;
  char *port = NULL;
  while ((port = th_read_file(port_file))[0] == '\0' && th_now() < end) {
    free(port);
    usleep(20 * 1000);
  }
  assert_true(atoi(port) > 0);
  snprintf(h->url, sizeof h->url, "http://127.0.0.1:%d/hook", atoi(port));
  free(port);
}

/* Stops hookd; returns its log, the summary line at its end (malloc'd). */
static char *hook_down(hook_t *h) {
  kill(h->pid, SIGTERM);
  assert_int_equal(th_wait_exit(h->pid, 10), 0);
  return th_read_file(h->log);
}

static int send_webhook(fx_t *fx, const hook_t *h, const char *secret,
                        char **out) {
  char path[700];
  snprintf(path, sizeof path, "%s/secrets", fx->dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", secret);
  fclose(f);
  chmod(path, 0600);
  return run_send(fx, out, "--webhook", h->url, "--secret-file", path,
                  "--timeout", "5", NULL);
}

/* Every result POSTed once, signed, with its key as webhook-id; the
 * receiver verified each signature and saw each key once. */
static void test_webhook_signed_once(void **state) {
  fx_t *fx = *state;
  results(fx, "w", 25, 0);
  hook_t h;
  hook_up(fx, &h, SECRET, NULL);
  char *out = NULL;
  int rc = send_webhook(fx, &h, SECRET, &out);
  print_message("%s", out);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "sent 25, retry 0"));
  free(out);
  char *summary = hook_down(&h);
  print_message("%s", summary);
  assert_non_null(strstr(summary, "25 recorded, 0 bad signatures, 25 "
                                  "distinct ids, 0 repeated"));
  free(summary);
  char *lines = th_read_file(h.out);
  PGresult *r = PQexec(fx->pg, "SELECT idempotency_key FROM "
                               "claimer.deliveries WHERE state = 'sent'");
  assert_int_equal(PQntuples(r), 25);
  for (int i = 0; i < PQntuples(r); i++) {
    char want[128];
    snprintf(want, sizeof want, "%s {\"type\":\"claimer.result\"",
             PQgetvalue(r, i, 0));
    assert_int_equal(th_count(lines, want), 1);
  }
  PQclear(r);
  free(lines);
}

/* A receiver that takes the request and never answers: the timeout makes
 * the delivery in doubt (nothing recorded, not "failed"); once its lease
 * has run out it is sent again, to a receiver that answers, with the key
 * of the first try. */
static void test_webhook_silent_receiver(void **state) {
  fx_t *fx = *state;
  results(fx, "s", 1, 0);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(ls >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(ls, 4), 0);
  assert_int_equal(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
  char first[700];
  snprintf(first, sizeof first, "%s/first-request", fx->dir);
  pid_t silent = fork();
  assert_true(silent >= 0);
  if (silent == 0) { /* takes the request, answers nothing */
    int c = accept(ls, NULL, NULL);
    char buf[16384];
    ssize_t n = c >= 0 ? read(c, buf, sizeof buf) : -1;
    FILE *f = fopen(first, "w");
    if (f != NULL && n > 0)
      fwrite(buf, 1, (size_t)n, f);
    if (f != NULL)
      fclose(f);
    for (;;)
      pause();
  }
  close(ls);
  hook_t quiet = {.pid = silent};
  snprintf(quiet.url, sizeof quiet.url, "http://127.0.0.1:%d/hook",
           ntohs(sa.sin_port));
  char path[700];
  snprintf(path, sizeof path, "%s/secrets", fx->dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", SECRET);
  fclose(f);
  chmod(path, 0600);
  char *out = NULL;
  double t0 = th_now();
  int rc = run_send(fx, &out, "--webhook", quiet.url, "--secret-file", path,
                    "--timeout", "1", "--lease", "2", NULL);
  double took = th_now() - t0;
  print_message("%s", out);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "sent 0, retry 0, dead 0, in doubt 1"));
  free(out);
  kill(silent, SIGKILL);
  waitpid(silent, NULL, 0);
  char key[80];
  PGresult *r = PQexec(fx->pg, "SELECT idempotency_key, state, attempts, "
                               "last_error IS NULL FROM claimer.deliveries");
  assert_int_equal(PQntuples(r), 1);
  snprintf(key, sizeof key, "%s", PQgetvalue(r, 0, 0));
  assert_string_equal(PQgetvalue(r, 0, 1), "sending"); /* nothing recorded */
  assert_string_equal(PQgetvalue(r, 0, 2), "1");
  assert_string_equal(PQgetvalue(r, 0, 3), "t");
  PQclear(r);
  char *req = th_read_file(first);
  char want[128];
  snprintf(want, sizeof want, "webhook-id: %s\r\n", key);
  assert_non_null(strstr(req, want));
  free(req);
  usleep(2200 * 1000); /* the lease runs out */
  hook_t h;
  hook_up(fx, &h, SECRET, NULL);
  assert_int_equal(send_webhook(fx, &h, SECRET, &out), 0);
  assert_non_null(strstr(out, "sent 1,"));
  free(out);
  char *summary = hook_down(&h);
  assert_non_null(strstr(summary, "1 recorded, 0 bad signatures, 1 distinct "
                                  "ids, 0 repeated"));
  free(summary);
  char *lines = th_read_file(h.out);
  /* One effect, under the key of the first try. */
  snprintf(want, sizeof want, "%s {\"type\":\"claimer.result\"", key);
  assert_int_equal(th_count(lines, want), 1);
  assert_int_equal(th_count(lines, "\n"), 1);
  free(lines);
  assert_int_equal(th_long(fx->pg, "SELECT attempts FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   2);
  print_message("silent receiver: in doubt after its 1 s timeout (the run "
                "took %.2f s), sent again with key %s to a receiver that "
                "answers\n",
                took, key);
}

/* 500, then 429 with Retry-After: 30, then 200: retried as documented,
 * the wait the receiver asked for honoured, one effect.  (The wait is long
 * so that "not yet due" holds however slowly the next sender starts: with
 * 2 s, a sender under valgrind on a loaded machine started after it.) */
static void test_webhook_retry_after(void **state) {
  fx_t *fx = *state;
  results(fx, "r", 1, 0);
  hook_t h;
  hook_up(fx, &h, SECRET, "500,429:30,200");
  char *out = NULL;
  assert_int_equal(send_webhook(fx, &h, SECRET, &out), 0);
  assert_non_null(strstr(out, "retry 1"));
  free(out);
  /* The 500: the schedule's first wait, about 5 s. */
  long wait1 = th_long(fx->pg, "SELECT round(extract(epoch FROM next_at - "
                               "now()))::int FROM claimer.deliveries");
  assert_true(wait1 >= 4 && wait1 <= 6);
  th_exec(fx->pg, "UPDATE claimer.deliveries SET next_at = now()");
  assert_int_equal(send_webhook(fx, &h, SECRET, &out), 0);
  assert_non_null(strstr(out, "retry 1"));
  free(out);
  /* The 429: what Retry-After said. */
  double wait2 =
      (double)th_long(fx->pg, "SELECT (extract(epoch FROM next_at - now()) "
                              "* 1000)::int FROM claimer.deliveries");
  print_message("after the 500: %ld s; after the 429 (Retry-After: 30): "
                "%.2f s\n",
                wait1, wait2 / 1000);
  assert_true(wait2 > 29000 && wait2 <= 30100);
  assert_int_equal(send_webhook(fx, &h, SECRET, &out), 0);
  assert_non_null(strstr(out, "sent 0")); /* not yet due */
  free(out);
  th_exec(fx->pg, "UPDATE claimer.deliveries SET next_at = now()");
  assert_int_equal(send_webhook(fx, &h, SECRET, &out), 0);
  assert_non_null(strstr(out, "sent 1"));
  free(out);
  char *summary = hook_down(&h);
  assert_non_null(strstr(summary, "3 requests, 1 recorded"));
  assert_non_null(strstr(summary, "1 distinct ids, 0 repeated"));
  free(summary);
  assert_int_equal(th_long(fx->pg, "SELECT attempts FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   3);
}

/* 410 Gone pauses the subscriber and raises subscriber_failing. */
static void test_webhook_gone_pauses(void **state) {
  fx_t *fx = *state;
  results(fx, "g", 2, 0);
  hook_t h;
  hook_up(fx, &h, SECRET, "410,410");
  char *out = NULL;
  assert_int_equal(send_webhook(fx, &h, SECRET, &out), 0);
  free(out);
  free(hook_down(&h));
  assert_int_equal(th_long(fx->pg, "SELECT paused::int FROM "
                                   "claimer.subscribers"),
                   1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'subscriber_failing' AND "
                                   "subject = 'sub'"),
                   1);
}

/* A receiver that does not know our secret refuses (401): a failed
 * attempt, nothing recorded by it. */
static void test_webhook_wrong_secret(void **state) {
  fx_t *fx = *state;
  results(fx, "s", 1, 0);
  hook_t h;
  hook_up(fx, &h, SECRET, NULL);
  char *out = NULL;
  assert_int_equal(send_webhook(fx, &h, OTHER_SECRET, &out), 0);
  assert_non_null(strstr(out, "retry 1"));
  free(out);
  char *summary = hook_down(&h);
  assert_non_null(strstr(summary, "0 recorded, 1 bad signatures"));
  free(summary);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE last_error LIKE 'webhook: HTTP "
                                   "401%'"),
                   1);
}

/* ------------------------------------------------------------------------ */
/* The pg sink: the statement and the inbox row commit together in the
 * target, so a repeat is skipped there. */

static int send_pg(fx_t *fx, const char *target, const char *sql, char **out) {
  return run_send(fx, out, "--pg-target", target, "--pg-sql", sql, NULL);
}

static void test_pg_sink_exactly_once(void **state) {
  fx_t *fx = *state;
  results(fx, "p", 20, 0);
  char target[1024], *out = NULL;
  assert_int_equal(
      th_db_create(&th_pg, "send_target", 0, target, sizeof target), 0);
  PGconn *t = th_connect(target);
  th_exec(t, "CREATE TABLE audit (n serial, item_id text, key text, "
             "result jsonb, attempt int)");
  const char *setup[] = {th_claimer_bin(), "sink-setup", "--target", target,
                         NULL};
  assert_int_equal(th_run(setup, NULL, &out), 0);
  free(out);
  /* Again: nothing to do, and no server NOTICE on the terminal. */
  assert_int_equal(th_run(setup, NULL, &out), 0);
  assert_null(strstr(out, "NOTICE"));
  free(out);
  const char *sql = "INSERT INTO audit (item_id, key, result, attempt) "
                    "VALUES ($1, $5, $3, $7)";
  assert_int_equal(send_pg(fx, target, sql, &out), 0);
  assert_non_null(strstr(out, "sent 20"));
  assert_non_null(strstr(out, "0 repeats skipped"));
  free(out);
  assert_int_equal(th_long(t, "SELECT count(*) FROM audit"), 20);
  assert_int_equal(th_long(t, "SELECT count(DISTINCT key) FROM audit"), 20);
  /* Every delivery sent again (as after a lost COMMIT answer, or a
   * replay): the inbox skips each, the audit log stays as it was. */
  th_exec(fx->pg, "UPDATE claimer.deliveries SET state = 'retry', "
                  "next_at = now()");
  /* This time the target's DSN from a file, as a password should come. */
  char tfile[700];
  snprintf(tfile, sizeof tfile, "%s/target.dsn", fx->dir);
  FILE *tf = fopen(tfile, "w");
  assert_non_null(tf);
  fprintf(tf, "%s\n", target);
  fclose(tf);
  chmod(tfile, 0600);
  assert_int_equal(
      run_send(fx, &out, "--pg-target-file", tfile, "--pg-sql", sql, NULL), 0);
  print_message("%s", out);
  assert_non_null(strstr(out, "sent 20"));
  assert_non_null(strstr(out, "20 repeats skipped"));
  free(out);
  const char *setup_f[] = {th_claimer_bin(), "sink-setup", "--target-file",
                           tfile, NULL};
  assert_int_equal(th_run(setup_f, NULL, &out), 0);
  free(out);
  assert_int_equal(th_long(t, "SELECT count(*) FROM audit"), 20);
  assert_int_equal(th_long(t, "SELECT count(*) FROM claimer_sink.inbox"), 20);
  /* Bad input: a statement that does not parse, a target without the
   * inbox: exit 2, nothing changed. */
  results(fx, "q", 1, 0);
  assert_int_equal(send_pg(fx, target, "INSRT INTO audit", &out), 2);
  assert_non_null(strstr(out, "does not prepare"));
  free(out);
  char bare[1024];
  assert_int_equal(th_db_create(&th_pg, "send_bare", 0, bare, sizeof bare), 0);
  assert_int_equal(send_pg(fx, bare, sql, &out), 2);
  assert_non_null(strstr(out, "claimer sink-setup"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE item_id = 'q-0'"),
                   0);
  PQfinish(t);
}

/* The claimer database itself as the target: the effect and the sent mark
 * commit in one transaction; a failing statement leaves neither. */
static void test_pg_sink_same_database(void **state) {
  fx_t *fx = *state;
  results(fx, "m", 5, 0);
  char *out = NULL;
  th_exec(fx->pg, "CREATE TABLE audit (item_id text, key text)");
  const char *setup[] = {th_claimer_bin(), "sink-setup", "--target", fx->dsn,
                         NULL};
  assert_int_equal(th_run(setup, NULL, &out), 0);
  free(out);
  /* m-3 fails inside the statement (a division by zero). */
  const char *sql = "INSERT INTO audit (item_id, key) SELECT $1, $5 "
                    "WHERE 1 / (CASE WHEN $1 = 'm-3' THEN 0 ELSE 1 END) = 1";
  assert_int_equal(send_pg(fx, fx->dsn, sql, &out), 0);
  print_message("%s", out);
  assert_non_null(strstr(out, "sent 4, retry 1"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM audit"), 4);
  /* Each sent delivery and its row and its inbox entry, together. */
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries d "
                                   "JOIN audit a ON a.item_id = d.item_id "
                                   "AND a.key = d.idempotency_key WHERE "
                                   "d.state = 'sent'"),
                   4);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE item_id = 'm-3' AND state = "
                                   "'retry' AND last_error LIKE '%division%'"),
                   1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer_sink.inbox "
                                   "WHERE item_id = 'm-3'"),
                   0);
}

/* Several --subscriber in one process: one sender each on one loop, the
 * same sink; each subscriber gets every result once. */
static void test_two_subscribers_one_process(void **state) {
  fx_t *fx = *state;
  results(fx, "two", 12, 0);
  cl_subscriber_opts_t o = {.from = "beginning"};
  assert_int_equal(cl_subscriber_add(fx->c, "other", &o, NULL), 1);
  char cmd[1200], path[700], *out = NULL;
  snprintf(path, sizeof path, "%s/effects", fx->dir);
  snprintf(cmd, sizeof cmd,
           "echo \"$CLAIMER_SUBSCRIBER $CLAIMER_IDEMPOTENCY_KEY\" >> '%s'",
           path);
  assert_int_equal(
      run_send(fx, &out, "--subscriber", "other", "--exec", cmd, NULL), 0);
  print_message("%s", out);
  assert_non_null(strstr(out, "sent 24"));
  free(out);
  char *eff = th_read_file(path);
  assert_int_equal(th_count(eff, "sub clm_"), 12);
  assert_int_equal(th_count(eff, "other clm_"), 12);
  free(eff);
  assert_int_equal(th_long(fx->pg, "SELECT count(DISTINCT idempotency_key) "
                                   "FROM claimer.deliveries WHERE state = "
                                   "'sent'"),
                   24);
}

/* Bad input: exit 2, nothing written. */
static void test_bad_input(void **state) {
  fx_t *fx = *state;
  char *out = NULL;
  const char *a1[] = {th_claimer_bin(), "send", "--subscriber", "nobody",
                      "--exec",         "true", "--once",       "--dsn",
                      fx->dsn,          NULL};
  assert_int_equal(th_run(a1, NULL, &out), 2);
  assert_non_null(strstr(out, "no subscriber \"nobody\""));
  free(out);
  const char *a2[] = {th_claimer_bin(), "send", "--subscriber", "x", "--dsn",
                      fx->dsn,          NULL};
  assert_int_equal(th_run(a2, NULL, &out), 2);
  assert_non_null(strstr(out, "give one sink"));
  free(out);
  const char *a3[] = {
      th_claimer_bin(), "send", "--subscriber", "bad name", "--exec",
      "true",           NULL};
  assert_int_equal(th_run(a3, NULL, &out), 2);
  free(out);
  const char *a4[] = {
      th_claimer_bin(),     "send",         "--subscriber", "x", "--webhook",
      "ftp://example.com/", "--secret-env", "NOPE",         NULL};
  assert_int_equal(th_run(a4, NULL, &out), 2);
  assert_non_null(strstr(out, "http:// or https://"));
  free(out);
  const char *a5[] = {
      th_claimer_bin(),      "send", "--subscriber", "x", "--webhook",
      "http://127.0.0.1:1/", NULL};
  assert_int_equal(th_run(a5, NULL, &out), 2);
  assert_non_null(strstr(out, "signing secrets"));
  free(out);
  char path[700];
  snprintf(path, sizeof path, "%s/open-secrets", fx->dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", SECRET);
  fclose(f);
  chmod(path, 0644);
  const char *a6[] = {
      th_claimer_bin(),      "send",          "--subscriber", "x", "--webhook",
      "http://127.0.0.1:1/", "--secret-file", path,           NULL};
  assert_int_equal(th_run(a6, NULL, &out), 2);
  assert_non_null(strstr(out, "chmod 600"));
  assert_null(strstr(out, "MfKQ9r8"));
  free(out);
  setenv("CLAIMER_TEST_BAD_SECRET", "whsec_%%%", 1);
  const char *a7[] = {th_claimer_bin(),
                      "send",
                      "--subscriber",
                      "x",
                      "--webhook",
                      "http://127.0.0.1:1/",
                      "--secret-env",
                      "CLAIMER_TEST_BAD_SECRET",
                      NULL};
  assert_int_equal(th_run(a7, NULL, &out), 2);
  assert_non_null(strstr(out, "signing secret 1"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries"),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_once_delivers_all, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exit_statuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill9_resends_same_key, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sigterm_drain_kills_sink, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_webhook_signed_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_webhook_silent_receiver, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_webhook_retry_after, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_webhook_gone_pauses, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_webhook_wrong_secret, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_pg_sink_exactly_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_pg_sink_same_database, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_two_subscribers_one_process, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("send", tests, th_group_setup,
                                     th_group_teardown);
}
