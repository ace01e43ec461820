/*
 * test_alerts.c: each alert kind raised by a real scenario, with real
 * processes: a worker killed with SIGKILL mid-item (worker_lost and
 * lease_expired), a worker SIGSTOPped past its heartbeat (worker_lost, its
 * lease released long before it would expire; SIGCONT resolves it), an
 * item left unclaimed past its SLA (item_overdue), a poison item failing to
 * dead (item_dead, raised by the worker's fail), a delivery left in
 * 'sending' (delivery_in_doubt).  For each: `claimer reap --once` exits 4
 * on the run that raises it and 0 on the next (raised once), the alert
 * came as NOTIFY claimer_alerts, reached the exec hook and a real HTTP
 * endpoint (tests/tools/hookd) exactly once, and is resolved once its
 * condition clears.  Also: an HTTP hook that fails is retried with backoff
 * until it takes the alert, and the reaping goes on meanwhile.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "harness.h"

static char tmpdir[] = "/tmp/claimer-alerts-XXXXXX";

/* One scenario's world: a database, a LISTEN connection, the hook
 * endpoint and the exec hook's file. */
typedef struct world {
  char dsn[1024];
  PGconn *p;
  PGconn *listen;
  pid_t hookd;
  char url[128];
  char http_out[256], exec_out[256], exec_cmd[600];
  pid_t workers[8];
  int nworkers;
} world_t;

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

static void world_up(world_t *w, const char *name, int hook_fails) {
  memset(w, 0, sizeof *w);
  assert_int_equal(th_db_create(&th_pg, name, 1, w->dsn, sizeof w->dsn), 0);
  w->p = th_connect(w->dsn);
  w->listen = th_connect(w->dsn);
  th_exec(w->listen, "LISTEN claimer_alerts");
  snprintf(w->http_out, sizeof w->http_out, "%s/%s.http", tmpdir, name);
  snprintf(w->exec_out, sizeof w->exec_out, "%s/%s.exec", tmpdir, name);
  snprintf(w->exec_cmd, sizeof w->exec_cmd, "cat >> %s; echo >> %s",
           w->exec_out, w->exec_out);
  char port_file[256], log[256], fails[16];
  snprintf(port_file, sizeof port_file, "%s/%s.port", tmpdir, name);
  snprintf(log, sizeof log, "%s/%s.hookd.log", tmpdir, name);
  snprintf(fails, sizeof fails, "%d", hook_fails);
  const char *argv[] = {
      getenv("HOOKD_BIN"), "--out",  w->http_out, "--port-file",
      port_file,           "--fail", fails,       NULL};
  assert_non_null(argv[0]);
  w->hookd = th_spawn(argv, log);
  double end = th_now() + 10;
  char *port = NULL;
  while ((port = th_read_file(port_file))[0] == '\0' && th_now() < end) {
    free(port);
    sleep_s(0.02);
  }
  assert_true(atoi(port) > 0);
  snprintf(w->url, sizeof w->url, "http://127.0.0.1:%d/alerts", atoi(port));
  free(port);
}

static void world_down(world_t *w) {
  for (int i = 0; i < w->nworkers; i++) {
    kill(-w->workers[i], SIGCONT);
    kill(-w->workers[i], SIGKILL);
    th_wait_exit(w->workers[i], 10);
  }
  kill(w->hookd, SIGTERM);
  assert_int_equal(th_wait_exit(w->hookd, 10), 0);
  PQfinish(w->listen);
  PQfinish(w->p);
}

/* `claimer reap --once` with both hooks and extra args; returns the exit
 * status and the output in *out. */
static int reap_once(world_t *w, char **out, ...) {
  const char *argv[48];
  int n = th_wrap(argv, 16); /* valgrind, when CLAIMER_TEST_WRAP says so */
  argv[n++] = th_claimer_bin();
  argv[n++] = "reap";
  argv[n++] = "--once";
  argv[n++] = "--dsn";
  argv[n++] = w->dsn;
  argv[n++] = "--hook-exec";
  argv[n++] = w->exec_cmd;
  argv[n++] = "--hook-url";
  argv[n++] = w->url;
  argv[n++] = "--hook-timeout";
  argv[n++] = "5s";
  va_list ap;
  va_start(ap, out);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 47;)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

/* Runs reap --once and asserts its exit status and that its output holds
 * each of the NULL-terminated needles. */
static void reap_expect(world_t *w, int status, const char *const *args, ...) {
  char *out = NULL;
  const char *a[9] = {NULL};
  for (int i = 0; args && args[i] && i < 8; i++)
    a[i] = args[i];
  int st =
      reap_once(w, &out, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL);
  if (st != status)
    fail_msg("reap --once exited %d, not %d:\n%s", st, status, out);
  va_list ap;
  va_start(ap, args);
  for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
    if (strstr(out, needle) == NULL)
      fail_msg("reap --once output lacks \"%s\":\n%s", needle, out);
  va_end(ap);
  free(out);
}

/* NOTIFY claimer_alerts payloads received so far naming kind. */
static int notified(world_t *w, const char *kind) {
  static char seen[64][2048];
  static int nseen;
  static PGconn *of;
  if (of != w->listen) {
    of = w->listen;
    nseen = 0;
  }
  PQconsumeInput(w->listen);
  for (PGnotify *n; (n = PQnotifies(w->listen)) != NULL; PQfreemem(n))
    if (nseen < 64)
      snprintf(seen[nseen++], sizeof seen[0], "%s", n->extra);
  char want[64];
  snprintf(want, sizeof want, "\"kind\": \"%s\"", kind);
  int count = 0;
  for (int i = 0; i < nseen; i++)
    count += strstr(seen[i], want) != NULL;
  return count;
}

/* Asserts that exactly one alert of kind for subject was raised and reached
 * NOTIFY, the exec hook and the HTTP endpoint once each. */
static void delivered_once(world_t *w, const char *kind, const char *subject) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.alerts WHERE kind = '%s' AND "
           "subject = '%s'",
           kind, subject);
  assert_int_equal(th_long(w->p, sql), 1);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.alerts WHERE kind = '%s' AND "
           "subject = '%s' AND hook_state = 'sent'",
           kind, subject);
  assert_int_equal(th_long(w->p, sql), 1);
  assert_int_equal(notified(w, kind), 1);
  char needle[256];
  snprintf(needle, sizeof needle, "\"kind\": \"%s\", \"detail\"", kind);
  char *http = th_read_file(w->http_out);
  char *exec = th_read_file(w->exec_out);
  if (th_count(http, needle) != 1 || th_count(exec, needle) != 1)
    fail_msg("%s: http hook saw it %d times, exec hook %d times\n%s\n%s", kind,
             th_count(http, needle), th_count(exec, needle), http, exec);
  free(http);
  free(exec);
}

static void assert_resolved(world_t *w, const char *kind, const char *subject,
                            int resolved) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.alerts WHERE kind = '%s' AND "
           "subject = '%s' AND resolved_at IS %s NULL",
           kind, subject, resolved ? "NOT" : "");
  assert_int_equal(th_long(w->p, sql), 1);
}

/* Starts `claimer work` on queue q with handler cmd; extra args after. */
static pid_t start_worker(world_t *w, const char *name, const char *q,
                          const char *cmd, const char *lease) {
  char log[256];
  snprintf(log, sizeof log, "%s/%s.log", tmpdir, name);
  const char *argv[] = {th_claimer_bin(),
                        "work",
                        "--dsn",
                        w->dsn,
                        "--name",
                        name,
                        "-q",
                        q,
                        "--exec",
                        cmd,
                        "--lease",
                        lease,
                        "--heartbeat",
                        "0.3s",
                        "--poll",
                        "0.2s",
                        NULL};
  pid_t pid = th_spawn(argv, log);
  w->workers[w->nworkers++] = pid;
  return pid;
}

static void wait_sql(world_t *w, const char *sql, long want, double secs) {
  double end = th_now() + secs;
  long v;
  while ((v = th_long(w->p, sql)) != want) {
    if (th_now() > end)
      fail_msg("%s: %ld, not %ld, after %.0f s", sql, v, want, secs);
    sleep_s(0.05);
  }
}

/* ------------------------------------------------------------------------ */

/* kill -9 of a worker mid-item: one cycle finds it lost (worker_lost), makes
 * its lease due at once and reaps it (lease_expired); the item is back to
 * ready with attempts 1.  When the worker comes back (same name) and the
 * item is done, both alerts resolve. */
static void test_killed_worker(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "killed", 0);
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue) "
               "VALUES ('k-1', 'kq')");
  pid_t pid = start_worker(&w, "wk", "kq", "sleep 60", "60s");
  wait_sql(&w, "SELECT count(*) FROM claimer.claims WHERE item_id = 'k-1'", 1,
           20);
  kill(-pid, SIGKILL);
  assert_int_equal(th_wait_exit(pid, 10), 128 + SIGKILL);
  w.nworkers = 0;
  sleep_s(1.2); /* > 2 heartbeats of 0.3 s */
  const char *args[] = {"--worker-lost-after", "2", NULL};
  reap_expect(&w, 4, args, "reaped 1 stale lease: 1 back to ready",
              "workers lost: 1 (1 lease made due)", "lease_expired 1",
              "worker_lost 1", "2 announced", NULL);
  assert_int_equal(th_long(w.p, "SELECT attempts FROM claimer.items WHERE "
                                "item_id = 'k-1' AND state = 'ready'"),
                   1);
  delivered_once(&w, "worker_lost", "wk");
  delivered_once(&w, "lease_expired", "k-1");
  /* Raised once: the next run has nothing new. */
  reap_expect(&w, 0, args, "alerts: 0 raised", NULL);
  assert_resolved(&w, "worker_lost", "wk", 0);
  assert_resolved(&w, "lease_expired", "k-1", 0);

  /* The worker comes back and finishes the item. */
  start_worker(&w, "wk", "kq", "echo '{}'", "60s");
  wait_sql(&w,
           "SELECT count(*) FROM claimer.items WHERE item_id = 'k-1' "
           "AND state = 'done'",
           1, 30);
  reap_expect(&w, 0, args, "2 resolved", NULL);
  assert_resolved(&w, "worker_lost", "wk", 1);
  assert_resolved(&w, "lease_expired", "k-1", 1);
  world_down(&w);
}

/* A worker SIGSTOPped past its heartbeat: its 60 s lease is released within
 * a second or two, not after 60 s; SIGCONT brings its heartbeat back and
 * the worker_lost alert resolves. */
static void test_stopped_worker(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "stopped", 0);
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue) "
               "VALUES ('s-1', 'sq')");
  pid_t pid = start_worker(&w, "ws", "sq", "sleep 3", "60s");
  wait_sql(&w, "SELECT count(*) FROM claimer.claims WHERE item_id = 's-1'", 1,
           20);
  kill(-pid, SIGSTOP);
  double t0 = th_now();
  sleep_s(1.2);
  const char *args[] = {"--worker-lost-after", "2", NULL};
  reap_expect(&w, 4, args, "workers lost: 1 (1 lease made due)",
              "worker_lost 1", NULL);
  double took = th_now() - t0;
  assert_true(took < 30); /* far from the 60 s lease */
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(w.p, "SELECT attempts FROM claimer.items WHERE "
                                "item_id = 's-1'"),
                   1);
  delivered_once(&w, "worker_lost", "ws");
  reap_expect(&w, 0, args, "alerts: 0 raised", NULL);
  assert_resolved(&w, "worker_lost", "ws", 0);

  kill(-pid, SIGCONT);
  /* Its next heartbeat is newer than the alert. */
  wait_sql(&w,
           "SELECT count(*) FROM claimer.workers w JOIN claimer.alerts "
           "a ON a.subject = w.worker_id WHERE a.kind = 'worker_lost' "
           "AND w.heartbeat_at > a.raised_at",
           1, 20);
  reap_expect(&w, 0, args, "resolved", NULL);
  assert_resolved(&w, "worker_lost", "ws", 1);
  world_down(&w);
}

/* An item nobody claims, past its queue's SLA. */
static void test_overdue(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "overdue", 0);
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue) "
               "VALUES ('o-1', 'slow'), ('o-2', 'other')");
  /* Enqueued long ago but scheduled for later: not late yet. */
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue, enqueued_at, "
               "run_at) VALUES ('o-3', 'slow', now() - interval '1 h', "
               "now() + interval '1 h')");
  sleep_s(1.2);
  /* The default SLA (1 h) spares o-2; slow's own SLA of 1 s does not. */
  const char *args[] = {"--queue-sla", "slow:1s", NULL};
  reap_expect(&w, 4, args, "item_overdue 1", NULL);
  delivered_once(&w, "item_overdue", "o-1");
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.alerts WHERE "
                                "subject IN ('o-2', 'o-3')"),
                   0);
  reap_expect(&w, 0, args, "alerts: 0 raised", NULL);

  /* Claimed and still not done: still overdue. */
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, w.dsn), 0);
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(c, "slow", "by-hand", 1, 60, &l, &n), 0);
  assert_int_equal(n, 1);
  reap_expect(&w, 0, args, "0 resolved", NULL);
  assert_resolved(&w, "item_overdue", "o-1", 0);
  assert_int_equal(cl_complete(c, l[0].item_id, l[0].token, "{}", NULL), 0);
  cl_leases_free(l, n);
  cl_conn_free(&c);
  reap_expect(&w, 0, args, "1 resolved", NULL);
  assert_resolved(&w, "item_overdue", "o-1", 1);
  world_down(&w);
}

/* A poison item: its handler exits 3, the worker fails it for good, and
 * that fail raises item_dead (a NOTIFY at once); the next reaper run
 * announces it.  `claimer dead retry` clears it. */
static void test_poison(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "poison", 0);
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue) "
               "VALUES ('p-1', 'pq')");
  start_worker(&w, "wp", "pq", "echo bad input >&2; exit 3", "60s");
  wait_sql(&w,
           "SELECT count(*) FROM claimer.items WHERE item_id = 'p-1' "
           "AND state = 'dead'",
           1, 30);
  reap_expect(&w, 4, NULL, "alerts: 0 raised", "1 announced",
              "event=alert kind=item_dead subject=p-1", NULL);
  delivered_once(&w, "item_dead", "p-1");
  char *exec = th_read_file(w.exec_out);
  assert_non_null(strstr(exec, "bad input"));
  free(exec);
  reap_expect(&w, 0, NULL, "0 announced", NULL);
  assert_resolved(&w, "item_dead", "p-1", 0);

  /* Stop the worker (SIGTERM: it drains and removes its row), retry the
   * item: no longer dead, so the alert resolves. */
  kill(w.workers[0], SIGTERM);
  assert_int_equal(th_wait_exit(w.workers[0], 30), 0);
  w.nworkers = 0;
  char *out = NULL;
  const char *retry[] = {th_claimer_bin(), "dead", "retry", "--dsn", w.dsn,
                         "--id",           "p-1",  NULL};
  assert_int_equal(th_run(retry, NULL, &out), 0);
  free(out);
  reap_expect(&w, 0, NULL, "1 resolved", NULL);
  assert_resolved(&w, "item_dead", "p-1", 1);
  world_down(&w);
}

/* A sender that crashed between sending and recording "sent": its delivery
 * row stays in 'sending' past its lease. */
static void test_delivery_in_doubt(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "doubt", 0);
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, w.dsn), 0);
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue) "
               "VALUES ('d-1', 'dq')");
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(c, "dq", "by-hand", 1, 60, &l, &n), 0);
  assert_int_equal(cl_complete(c, l[0].item_id, l[0].token, "{}", NULL), 0);
  cl_leases_free(l, n);
  cl_conn_free(&c);
  th_exec(w.p, "INSERT INTO claimer.deliveries (subscriber, item_id, state, "
               "attempts, idempotency_key, lease_until) VALUES ('email', "
               "'d-1', 'sending', 1, 'email/d-1', now() + interval '1 h')");
  /* Its lease still holds: not in doubt yet. */
  reap_expect(&w, 0, NULL, "alerts: 0 raised", NULL);
  /* The sender died; its lease runs out. */
  th_exec(w.p, "UPDATE claimer.deliveries SET lease_until = now() - "
               "interval '1 s'");
  reap_expect(&w, 4, NULL, "delivery_in_doubt 1", NULL);
  delivered_once(&w, "delivery_in_doubt", "email/d-1");
  reap_expect(&w, 0, NULL, "alerts: 0 raised", NULL);
  th_exec(w.p, "UPDATE claimer.deliveries SET state = 'sent', sent_at = "
               "now() WHERE item_id = 'd-1'");
  reap_expect(&w, 0, NULL, "1 resolved", NULL);
  assert_resolved(&w, "delivery_in_doubt", "email/d-1", 1);
  world_down(&w);
}

/* The HTTP endpoint refuses the first two posts: the reaping is done all
 * the same, the alert is tried again after a backoff and taken on the
 * third attempt, exactly once; the exec hook ran for every attempt (a hook
 * may see an alert again: alert_id tells). */
static void test_hook_retry(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "retry", 2);
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue, state, attempts) "
               "VALUES ('r-1', 'rq', 'leased', 1)");
  th_exec(w.p, "INSERT INTO claimer.claims (item_id, queue, worker_id, "
               "token, attempt, lease_until) VALUES ('r-1', 'rq', 'gone', "
               "'t', 1, now() - interval '1 s')");
  reap_expect(&w, 4, NULL, "reaped 1 stale lease", NULL);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.alerts WHERE "
                                "hook_state = 'pending' AND hook_attempts = 1 "
                                "AND hook_error LIKE 'http hook: HTTP status "
                                "500%'"),
                   1);
  double end = th_now() + 30;
  while (th_long(w.p, "SELECT count(*) FROM claimer.alerts WHERE "
                      "hook_state = 'sent'") == 0) {
    assert_true(th_now() < end);
    sleep_s(0.5);
    char *out = NULL;
    (void)reap_once(&w, &out, NULL);
    free(out);
  }
  assert_int_equal(th_long(w.p, "SELECT hook_attempts FROM claimer.alerts"), 3);
  char *http = th_read_file(w.http_out);
  assert_int_equal(th_count(http, "\"kind\": \"lease_expired\""), 1);
  free(http);
  world_down(&w);
}

/* Starts a `claimer reap` daemon with both hooks; its log in tmpdir. */
static pid_t start_reaper(world_t *w, const char *name, const char *interval,
                          const char *lost_after) {
  char log[256];
  snprintf(log, sizeof log, "%s/%s.log", tmpdir, name);
  const char *argv[48];
  int n = th_wrap(argv, 16);
  const char *rest[] = {th_claimer_bin(),
                        "reap",
                        "--dsn",
                        w->dsn,
                        "--interval",
                        interval,
                        "--worker-lost-after",
                        lost_after,
                        "--hook-exec",
                        w->exec_cmd,
                        "--hook-url",
                        w->url,
                        NULL};
  for (int i = 0; rest[i]; i++)
    argv[n++] = rest[i];
  argv[n] = NULL;
  pid_t pid = th_spawn(argv, log);
  w->workers[w->nworkers++] = pid;
  return pid;
}

static void stop_reaper(world_t *w, pid_t pid, const char *name) {
  kill(pid, SIGTERM);
  int st = th_wait_exit(pid, 60);
  if (st != 0) {
    char log[256];
    snprintf(log, sizeof log, "%s/%s.log", tmpdir, name);
    char *text = th_read_file(log);
    fail_msg("%s exited %d:\n%s", name, st, text);
  }
  for (int i = 0; i < w->nworkers; i++)
    if (w->workers[i] == pid)
      w->workers[i] = w->workers[--w->nworkers];
}

/* Three reaper daemons at once on 1,000 expired leases: every lease is
 * reaped once, every alert raised once, announced
 * once (one warning line among the three logs) and handed to each hook
 * once; each daemon exits 0 on SIGTERM. */
static void test_three_daemons(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "daemons", 0);
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue, state, attempts) "
               "SELECT 'm-' || g, 'mq', 'leased', 1 "
               "FROM generate_series(1, 1000) g");
  th_exec(w.p, "INSERT INTO claimer.claims (item_id, queue, worker_id, "
               "token, attempt, lease_until) SELECT item_id, 'mq', 'gone', "
               "'t-' || item_id, 1, now() - interval '1 s' "
               "FROM claimer.items");
  const char *names[] = {"reaper-a", "reaper-b", "reaper-c"};
  pid_t pids[3];
  for (int i = 0; i < 3; i++)
    pids[i] = start_reaper(&w, names[i], "0.2s", "3");
  wait_sql(&w,
           "SELECT count(*) FROM claimer.alerts WHERE hook_state = "
           "'sent'",
           1000, 240);
  for (int i = 0; i < 3; i++)
    stop_reaper(&w, pids[i], names[i]);
  /* attempts counts claims: the reaped lease spent attempt 1. */
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.items WHERE "
                                "attempts = 1 AND state = 'ready'"),
                   1000);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(w.p, "SELECT count(DISTINCT subject) FROM "
                                "claimer.alerts WHERE kind = "
                                "'lease_expired' AND hook_attempts = 1"),
                   1000);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.alerts"), 1000);
  int lines = 0, used = 0;
  for (int i = 0; i < 3; i++) {
    char log[256];
    snprintf(log, sizeof log, "%s/%s.log", tmpdir, names[i]);
    char *text = th_read_file(log);
    int n = th_count(text, "event=alert ");
    lines += n;
    used += n > 0;
    assert_int_equal(th_count(text, "event=reaper_stopped"), 1);
    free(text);
  }
  assert_int_equal(lines, 1000);
  char *http = th_read_file(w.http_out);
  char *exec = th_read_file(w.exec_out);
  assert_int_equal(th_count(http, "\"kind\": \"lease_expired\""), 1000);
  assert_int_equal(th_count(exec, "\"kind\": \"lease_expired\""), 1000);
  free(http);
  free(exec);
  fprintf(stderr, "  1000 alerts announced by %d of 3 daemons\n", used);
  world_down(&w);
}

/* The latency bound, with the reaper as a daemon: a worker killed with
 * SIGKILL while holding 8 items with a 20 s lease.  Its heartbeat (0.3 s)
 * stops; after 3 missed ones the reaper (every 1 s) finds it lost and
 * hands the items back (ready at once), so each is claimable again within
 * lost-after x heartbeat + interval + slack, long before the lease would
 * have run out.
 * The figures are in bench/bench_reap (latency). */
static void test_kill_latency(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "latency", 0);
  pid_t reaper = start_reaper(&w, "reaper-lat", "1s", "3");
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue) "
               "SELECT 'l-' || g, 'lq' FROM generate_series(1, 8) g");
  pid_t worker = start_worker(&w, "wl", "lq", "sleep 60", "20s");
  wait_sql(&w, "SELECT count(*) FROM claimer.claims WHERE worker_id = 'wl'", 8,
           30);
  th_exec(w.p, "CREATE TEMP TABLE kill_at AS SELECT clock_timestamp() AS t");
  kill(-worker, SIGKILL);
  assert_int_equal(th_wait_exit(worker, 10), 128 + SIGKILL);
  for (int i = 0; i < w.nworkers; i++)
    if (w.workers[i] == worker)
      w.workers[i] = w.workers[--w.nworkers];
  wait_sql(&w,
           "SELECT count(*) FROM claimer.items WHERE state = 'ready' "
           "AND attempts = 1",
           8, 30);
  const double bound = 3 * 0.3 + 1 + 3; /* slack 3 s */
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT (1000 * max(extract(epoch FROM greatest(a.raised_at, "
           "i.run_at) - k.t)))::bigint FROM claimer.items i JOIN "
           "claimer.alerts a ON a.kind = 'lease_expired' AND a.subject = "
           "i.item_id, kill_at k");
  long worst_ms = th_long(w.p, sql);
  fprintf(stderr,
          "  killed worker's 8 items claimable again within %.2f s "
          "(bound %.1f s, lease 20 s)\n",
          (double)worst_ms / 1000, bound);
  assert_true(worst_ms > 0);
  assert_true((double)worst_ms / 1000 < bound);
  stop_reaper(&w, reaper, "reaper-lat");
  world_down(&w);
}

/* The reaper daemon rides out a database restart: it logs the loss,
 * reconnects by itself and goes on reaping. */
static void test_reaper_db_restart(void **state) {
  (void)state;
  if (!th_pg.own)
    th_skip("an external server (CLAIMER_TEST_DSN) is not ours to restart");
  world_t w;
  world_up(&w, "reaper_restart", 0);
  pid_t reaper = start_reaper(&w, "reaper-rs", "0.2s", "3");
  char log[256];
  snprintf(log, sizeof log, "%s/reaper-rs.log", tmpdir);
  double end = th_now() + 30;
  for (;;) {
    char *t = th_read_file(log);
    int up = th_count(t, "event=db_connected");
    free(t);
    if (up > 0)
      break;
    assert_true(th_now() < end);
    sleep_s(0.05);
  }
  th_pg_restart(&th_pg, 1);
  PQreset(w.p);
  PQreset(w.listen);
  th_exec(w.listen, "LISTEN claimer_alerts");
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue, state, attempts) "
               "VALUES ('rs-1', 'rq', 'leased', 1)");
  th_exec(w.p, "INSERT INTO claimer.claims (item_id, queue, worker_id, "
               "token, attempt, lease_until) VALUES ('rs-1', 'rq', 'gone', "
               "'t', 1, now() - interval '1 s')");
  wait_sql(&w,
           "SELECT count(*) FROM claimer.alerts WHERE subject = 'rs-1' "
           "AND hook_state = 'sent'",
           1, 60);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.claims"), 0);
  stop_reaper(&w, reaper, "reaper-rs");
  char *text = th_read_file(log);
  assert_true(th_count(text, "event=db_disconnected") >= 1);
  assert_true(th_count(text, "event=db_connected") >= 2);
  free(text);
  world_down(&w);
}

/* The retry policy in the reaper's config reaches the database: items
 * enqueued without max_attempts take their queue's (or the default), a
 * failed try waits its queue's backoff; a reaper whose config has no
 * policy leaves it alone; a policy-free queue keeps the defaults. */
static void test_retry_policy(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "policy", 0);
  char *out = NULL;
  const char *args[] = {"--max-attempts",
                        "7",
                        "--queue-max-attempts",
                        "payments:2",
                        "--queue-backoff",
                        "mail:20s",
                        NULL};
  reap_expect(&w, 0, args, "alerts: 0 raised", NULL);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.queue_policy"),
                   3);
  /* A reaper without a policy writes nothing. */
  reap_expect(&w, 0, NULL, "alerts: 0 raised", NULL);
  assert_int_equal(th_long(w.p, "SELECT max_attempts FROM "
                                "claimer.queue_policy WHERE queue = "
                                "'payments'"),
                   2);
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, w.dsn), 0);
  const cl_item_t items[] = {
      {.item_id = "pay-1", .queue = "payments"},
      {.item_id = "mail-1", .queue = "mail"},
      {.item_id = "misc-1", .queue = "misc"},
      {.item_id = "own-1", .queue = "payments", .max_attempts = 9}};
  assert_int_equal(cl_enqueue(c, items, 4, NULL), 4); /* all created */
  assert_int_equal(th_long(w.p, "SELECT sum(max_attempts) FROM claimer.items"),
                   2 + 7 + 7 + 9);
  /* mail's first retry waits 20 s x [0.5, 1); misc's the default 1 s x
   * [0.5, 1). */
  const char *qs[] = {"mail", "misc"};
  for (int i = 0; i < 2; i++) {
    cl_lease_t *l = NULL;
    size_t n = 0;
    assert_int_equal(cl_claim(c, qs[i], "by-hand", 1, 60, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(cl_fail(c, l[0].item_id, l[0].token, "no", 1, -1, NULL),
                     0);
    cl_leases_free(l, n);
  }
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.items WHERE "
                                "item_id = 'mail-1' AND run_at - now() "
                                "BETWEEN interval '9 s' AND interval '20 s'"),
                   1);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.items WHERE "
                                "item_id = 'misc-1' AND run_at - now() "
                                "< interval '1 s'"),
                   1);
  /* A new policy replaces the old one whole. */
  const char *args2[] = {"--queue-backoff", "mail:5s", NULL};
  reap_expect(&w, 0, args2, "alerts: 0 raised", NULL);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.queue_policy "
                                "WHERE queue = 'payments'"),
                   0);
  assert_int_equal(th_long(w.p, "SELECT max_attempts FROM "
                                "claimer.queue_policy WHERE queue = '*'"),
                   25);
  cl_conn_free(&c);
  free(out);
  world_down(&w);
}

/* A step the database refuses does not stop the others: with inserts of
 * item_overdue alerts failing, the stale lease is still reaped; --once
 * names the step and exits 1. */
static void test_refused_step(void **state) {
  (void)state;
  world_t w;
  world_up(&w, "refused", 0);
  th_exec(w.p, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql "
               "AS $$BEGIN RAISE EXCEPTION 'refused by a test'; END$$");
  th_exec(w.p, "CREATE TRIGGER refuse BEFORE INSERT ON claimer.alerts FOR "
               "EACH ROW WHEN (NEW.kind = 'item_overdue') EXECUTE FUNCTION "
               "refuse()");
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue, enqueued_at, "
               "run_at) VALUES ('late', 'q', now() - interval '2 h', "
               "now() - interval '2 h')");
  th_exec(w.p, "INSERT INTO claimer.items (item_id, queue, state, attempts) "
               "VALUES ('st-1', 'q', 'leased', 1)");
  th_exec(w.p, "INSERT INTO claimer.claims (item_id, queue, worker_id, "
               "token, attempt, lease_until) VALUES ('st-1', 'q', 'gone', "
               "'t', 1, now() - interval '1 s')");
  reap_expect(&w, 1, NULL, "event=reap_step_failed step=overdue_items",
              "refused by a test", "step=overdue_items", NULL);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(w.p, "SELECT count(*) FROM claimer.alerts WHERE "
                                "kind = 'lease_expired'"),
                   1);
  world_down(&w);
}

static int setup(void **state) {
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  return th_group_setup(state);
}

int main(void) {
  th_filter_from_env();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_killed_worker),
      cmocka_unit_test(test_stopped_worker),
      cmocka_unit_test(test_overdue),
      cmocka_unit_test(test_poison),
      cmocka_unit_test(test_delivery_in_doubt),
      cmocka_unit_test(test_hook_retry),
      cmocka_unit_test(test_three_daemons),
      cmocka_unit_test(test_kill_latency),
      cmocka_unit_test(test_reaper_db_restart),
      cmocka_unit_test(test_retry_policy),
      cmocka_unit_test(test_refused_step),
  };
  return cmocka_run_group_tests(tests, setup, th_group_teardown);
}
