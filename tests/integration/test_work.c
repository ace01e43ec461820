/*
 * test_work.c: `claimer work`, the daemon, as real processes against a
 * real PostgreSQL: four workers draining 20,000 items through an exec
 * handler; kill -9 of a worker mid-run; a worker SIGSTOPped past its lease
 * whose late completions are refused; SIGTERM draining; a database restart
 * mid-run; a refused password and a missing schema stopping the daemon
 * with a clear message.  Every run ends by checking the tables: every item
 * done, one result each, from the lease that held it.
 *
 * CLAIMER_TEST_WORK_ITEMS overrides the 20,000 of the drain test.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include <json-c/json.h>

#include "claimer/claimer.h"
#include "harness.h"
#include "proc.h"

/* The handler: reads the payload (one line, no newline at its end) and
 * answers with it, the item and the attempt; shell builtins only, so one
 * process per item. */
#define HANDLER                                                                \
  "IFS= read -r p; printf '{\"item\":\"%s\",\"attempt\":%s,"                   \
  "\"payload\":%s}' \"$CLAIMER_ITEM_ID\" \"$CLAIMER_ATTEMPT\" \"$p\""

static char logdir[] = "/tmp/claimer-work-XXXXXX";

/* Every worker started, so that none outlives a failed test. */
static pid_t started[64];
static int nstarted;

static void kill_leftovers(void) {
  for (int i = 0; i < nstarted; i++) {
    if (kill(started[i], 0) == 0) {
      kill(-started[i], SIGKILL);
      kill(-started[i], SIGCONT);
      waitpid(started[i], NULL, WNOHANG);
    }
  }
}

/* Starts `claimer work` with args (NULL-terminated) after the common ones,
 * its output in logdir/NAME.log.  Returns the pid. */
static pid_t start_worker(const char *dsn, const char *name,
                          const char *const *args) {
  const char *argv[60];
  int n = 0;
  n = th_wrap(argv, 16); /* valgrind, when CLAIMER_TEST_WRAP says so */
  argv[n++] = th_claimer_bin();
  argv[n++] = "work";
  argv[n++] = "--dsn";
  argv[n++] = dsn;
  argv[n++] = "--name";
  argv[n++] = name;
  argv[n++] = "--log-level";
  argv[n++] = "info";
  for (; args && *args && n < 58; args++)
    argv[n++] = *args;
  argv[n] = NULL;
  char path[256];
  snprintf(path, sizeof path, "%s/%s.log", logdir, name);
  pid_t pid = th_spawn(argv, path);
  if (nstarted < 64)
    started[nstarted++] = pid;
  return pid;
}

static char *read_log(const char *name) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s.log", logdir, name);
  return th_read_file(path);
}

static void print_log(const char *name) {
  char *s = read_log(name);
  size_t len = strlen(s);
  fprintf(stderr, "---- %s.log (last 3000 bytes) ----\n%s\n", name,
          len > 3000 ? s + len - 3000 : s);
  free(s);
}

/* SIGTERMs the worker and asserts that it drains and exits 0 (its log is
 * printed when not). */
static void stop_ok(pid_t pid, const char *name) {
  kill(pid, SIGTERM);
  int st = th_wait_exit(pid, 60);
  if (st != 0)
    print_log(name);
  assert_int_equal(st, 0);
}

/* Waits up to timeout_s until the log of name holds needle at least n
 * times; returns the log (malloc'd) either way. */
static char *wait_log(const char *name, const char *needle, int n,
                      double timeout_s) {
  double end = th_now() + timeout_s;
  for (;;) {
    char *log = read_log(name);
    if (th_count(log, needle) >= n || th_now() > end)
      return log;
    free(log);
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

static void enqueue_n(PGconn *p, const char *queue, long n) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "INSERT INTO claimer.items (item_id, queue, payload) "
           "SELECT '%s-' || g, '%s', jsonb_build_object('n', g) "
           "FROM generate_series(1, %ld) g",
           queue, queue, n);
  th_exec(p, sql);
}

/* Waits until count(sql) reaches want, printing progress; fails the test
 * after timeout_s. */
static void wait_count(PGconn *p, const char *sql, long want, double timeout_s,
                       const char *what) {
  double start = th_now(), last = start;
  long v = 0;
  while ((v = th_long(p, sql)) < want) {
    double now = th_now();
    if (now - start > timeout_s)
      fail_msg("%s: %ld of %ld after %.0f s", what, v, want, timeout_s);
    if (now - last >= 5) {
      fprintf(stderr, "  %s: %ld of %ld (%.0f s)\n", what, v, want,
              now - start);
      last = now;
    }
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

/* The invariants of every run: all n items of queue done, one result per
 * item, each result from the token that last held the item and naming its
 * own item; no claim left. */
static void check_all_done(PGconn *p, const char *queue, long n) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.items WHERE queue = '%s' AND "
           "state = 'done'",
           queue);
  assert_int_equal(th_long(p, sql), n);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.results WHERE queue = '%s'", queue);
  assert_int_equal(th_long(p, sql), n);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.results r JOIN claimer.items i "
           "USING (item_id) WHERE r.queue = '%s' AND r.result->>'item' = "
           "r.item_id AND (r.result->>'attempt')::int = r.attempt AND "
           "r.attempt = i.attempts AND r.result->'payload' = i.payload",
           queue);
  assert_int_equal(th_long(p, sql), n);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims"), 0);
}

static long env_long(const char *name, long def) {
  const char *v = getenv(name);
  return v && *v ? atol(v) : def;
}

/* ------------------------------------------------------------------------ */

/* Four workers, concurrency 8, an exec handler: 20,000 items, each done
 * once; then SIGTERM: each exits 0 and removes its worker row. */
static void test_drain_four_workers(void **state) {
  (void)state;
  long items = env_long("CLAIMER_TEST_WORK_ITEMS", 20000);
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_drain", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "drain", items);
  const char *args[] = {"-q",    "drain", "--concurrency", "8", "--exec",
                        HANDLER, NULL};
  char names[4][16];
  pid_t pids[4];
  double start = th_now();
  for (int i = 0; i < 4; i++) {
    snprintf(names[i], sizeof names[i], "drain-%d", i);
    pids[i] = start_worker(dsn, names[i], args);
  }
  wait_count(p,
             "SELECT count(*) FROM claimer.items WHERE queue = 'drain' AND "
             "state = 'done'",
             items, 600, "drain");
  double took = th_now() - start;
  fprintf(stderr, "  drain: %ld items by 4 workers x 8 in %.1f s (%.0f/s)\n",
          items, took, items / took);
  for (int i = 0; i < 4; i++)
    stop_ok(pids[i], names[i]);
  check_all_done(p, "drain", items);
  assert_int_equal(th_long(p, "SELECT count(DISTINCT worker_id) FROM "
                              "claimer.results WHERE queue = 'drain'"),
                   4);
  assert_int_equal(th_long(p, "SELECT max(attempts) FROM claimer.items"), 1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.workers"), 0);
  char *log = read_log("drain-0");
  assert_non_null(strstr(log, "event=worker_started"));
  assert_non_null(strstr(log, "event=exit status=0 loop_closed=true"));
  free(log);
  PQfinish(p);
}

/* kill -9 of one worker mid-run: its items come back after lease expiry
 * (a reaper runs here, as `claimer reap --once` in a loop would) and every
 * item ends done once. */
static void test_kill9(void **state) {
  (void)state;
  enum { N = 2000 };
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_kill", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "kill", N);
  const char *args[] = {"-q", "kill",   "--concurrency",        "8", "--lease",
                        "2",  "--exec", "sleep 0.02; " HANDLER, NULL};
  pid_t a = start_worker(dsn, "kill-a", args);
  pid_t b = start_worker(dsn, "kill-b", args);
  wait_count(p,
             "SELECT count(*) FROM claimer.claims WHERE worker_id = "
             "'kill-a'",
             1, 30, "kill-a holding leases");
  wait_count(p, "SELECT count(*) FROM claimer.results", N / 4, 120,
             "first quarter");
  long held = th_long(p, "SELECT count(*) FROM claimer.claims WHERE "
                         "worker_id = 'kill-a'");
  kill(-a, SIGKILL); /* the worker and its handlers */
  assert_int_equal(th_wait_exit(a, 10), 128 + SIGKILL);
  fprintf(stderr, "  kill -9 of kill-a while it held %ld leases\n", held);
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  cl_reap_info_t reaped = {0};
  double end = th_now() + 180;
  while (th_long(p, "SELECT count(*) FROM claimer.items WHERE state = "
                    "'done'") < N) {
    if (th_now() > end)
      fail_msg("not all done after the kill");
    assert_int_equal(cl_reap(c, 1000, &reaped), 0);
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
  }
  cl_conn_free(&c);
  stop_ok(b, "kill-b");
  fprintf(stderr, "  reaped %ld leases of the killed worker\n", reaped.expired);
  assert_true(reaped.expired >= 1);
  check_all_done(p, "kill", N);
  /* The reaped ones finished on a later attempt, by the survivor. */
  assert_true(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                         "attempts = 2") >= 1);
  PQfinish(p);
}

/* SIGSTOP a worker past its lease; another takes its items; SIGCONT: its
 * late completions are refused and logged, and no duplicate exists. */
static void test_sigstop(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_stop", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "stop", 4);
  const char *args_a[] = {
      "-q", "stop",   "--concurrency",     "4", "--prefetch", "0", "--lease",
      "2",  "--exec", "sleep 1; " HANDLER, NULL};
  pid_t a = start_worker(dsn, "stop-a", args_a);
  wait_count(p,
             "SELECT count(*) FROM claimer.claims WHERE worker_id = "
             "'stop-a'",
             4, 30, "stop-a holding 4 leases");
  kill(a, SIGSTOP);
  /* Past the lease; then the reaper hands the items back. */
  wait_count(p,
             "SELECT count(*) FROM claimer.claims WHERE lease_until < "
             "now()",
             4, 30, "stop-a's leases expiring");
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  cl_reap_info_t reaped = {0};
  assert_int_equal(cl_reap(c, 100, &reaped), 0);
  assert_int_equal(reaped.expired, 4);
  cl_conn_free(&c);
  const char *args_b[] = {"-q",    "stop", "--concurrency", "4", "--exec",
                          HANDLER, NULL};
  pid_t b = start_worker(dsn, "stop-b", args_b);
  wait_count(p, "SELECT count(*) FROM claimer.results", 4, 30,
             "stop-b completing");
  kill(a, SIGCONT);
  /* Give A time to wake, see its handlers done, and try. */
  char *log = wait_log("stop-a", "event=lease_lost", 4, 20);
  stop_ok(a, "stop-a");
  stop_ok(b, "stop-b");
  int lost = 0;
  for (const char *s = log; (s = strstr(s, "event=lease_lost")); s++)
    lost++;
  if (lost < 4 || strstr(log, "event=fenced") == NULL)
    print_log("stop-a");
  assert_true(lost >= 4);
  /* On waking, A's own clock said its leases were over before any answer
   * from the database could (G7). */
  assert_non_null(strstr(log, "event=fenced"));
  free(log);
  check_all_done(p, "stop", 4);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results WHERE "
                              "worker_id = 'stop-b'"),
                   4);
  PQfinish(p);
}

/* SIGTERM drains: running items complete, unstarted ones are released
 * with attempts unchanged, the worker row goes, exit 0. */
static void test_sigterm_drain(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_term", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "term", 10);
  const char *args[] = {
      "-q", "term",   "--concurrency",       "2", "--prefetch",
      "4",  "--exec", "sleep 1.5; " HANDLER, NULL};
  pid_t a = start_worker(dsn, "term-a", args);
  wait_count(p, "SELECT count(*) FROM claimer.claims", 6, 30,
             "2 running and 4 prefetched");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.workers WHERE "
                              "worker_id = 'term-a'"),
                   1);
  stop_ok(a, "term-a");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results"), 2);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'ready' AND attempts = 0"),
                   8);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.workers"), 0);
  char *log = read_log("term-a");
  assert_non_null(strstr(log, "event=draining"));
  assert_non_null(strstr(log, "released=4"));
  free(log);
  PQfinish(p);
}

/* pg_ctl restart -m fast mid-run: workers reconnect by themselves. */
static void test_db_restart(void **state) {
  (void)state;
  if (!th_pg.own)
    th_skip("an external server (CLAIMER_TEST_DSN) is not ours to restart");
  enum { N = 1500 };
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_restart", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "restart", N);
  const char *args[] = {"-q", "restart", "--concurrency",
                        "8",  "--exec",  "sleep 0.01; " HANDLER,
                        NULL};
  pid_t a = start_worker(dsn, "restart-a", args);
  pid_t b = start_worker(dsn, "restart-b", args);
  wait_count(p, "SELECT count(*) FROM claimer.results", N / 3, 120,
             "first third");
  PQfinish(p);
  th_pg_restart(&th_pg, 1);
  p = th_connect(dsn);
  wait_count(p, "SELECT count(*) FROM claimer.items WHERE state = 'done'", N,
             180, "after the restart");
  stop_ok(a, "restart-a");
  stop_ok(b, "restart-b");
  char *log = read_log("restart-a");
  if (!strstr(log, "event=db_disconnected"))
    print_log("restart-a");
  assert_non_null(strstr(log, "event=db_disconnected"));
  free(log);
  check_all_done(p, "restart", N);
  PQfinish(p);
}

/* A refused password stops the daemon at once with a clear message, and
 * the password appears in no output. */
static void test_wrong_password(void **state) {
  (void)state;
  char dsn[1024], tcp[1024];
  assert_int_equal(th_db_create(&th_pg, "work_pw", 1, dsn, sizeof dsn), 0);
  if (th_db_tcp_dsn(&th_pg, "work_pw", 0, tcp, sizeof tcp) != 0)
    th_skip("needs the harness\'s own PostgreSQL (its TCP port and "
            "claimer_pw role); CLAIMER_TEST_DSN is set");
  char bad[1200];
  snprintf(bad, sizeof bad, "%s user=claimer_pw password=s3cret-Planted", tcp);
  const char *args[] = {"-q", "pw", "--exec", "true", NULL};
  double t0 = th_now();
  pid_t a = start_worker(bad, "pw-a", args);
  int st = th_wait_exit(a, 30);
  char *log = read_log("pw-a");
  if (st != 1)
    print_log("pw-a");
  assert_int_equal(st, 1);
  assert_true(th_now() - t0 < 10);
  assert_non_null(strstr(log, "password authentication failed"));
  assert_null(strstr(log, "s3cret-Planted"));
  free(log);
}

/* A database without the schema: a clear message, exit 1. */
static void test_missing_schema(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_noschema", 0, dsn, sizeof dsn),
                   0);
  const char *args[] = {"-q", "x", "--exec", "true", NULL};
  pid_t a = start_worker(dsn, "noschema", args);
  int st = th_wait_exit(a, 30);
  char *log = read_log("noschema");
  if (st != 1)
    print_log("noschema");
  assert_int_equal(st, 1);
  assert_non_null(strstr(log, "claimer migrate"));
  free(log);
}

/* An idle worker whose poll interval is a minute starts a new item within
 * a second: NOTIFY woke it.  Its log is JSON, one object per line. */
static void test_notify_wakeup(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_notify", 1, dsn, sizeof dsn), 0);
  const char *args[] = {"-q",           "wake",  "--poll",      "60",
                        "--log-format", "json",  "--log-level", "debug",
                        "--exec",       HANDLER, NULL};
  pid_t a = start_worker(dsn, "wake", args);
  PGconn *p = th_connect(dsn);
  /* Idle: connected, registered, the first (empty) claim answered. */
  wait_count(p, "SELECT count(*) FROM claimer.workers", 1, 30, "registered");
  struct timespec ts = {0, 500 * 1000000L};
  nanosleep(&ts, NULL);
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  double worst = 0;
  for (int i = 0; i < 5; i++) {
    char id[16];
    snprintf(id, sizeof id, "wake-%d", i);
    cl_item_t it = {.item_id = id, .queue = "wake", .payload = "{\"n\":1}"};
    double t0 = th_now();
    assert_int_equal(cl_enqueue(c, &it, 1, NULL), 1);
    wait_count(p, "SELECT count(*) FROM claimer.results", i + 1, 10,
               "woken by NOTIFY");
    double took = th_now() - t0;
    worst = took > worst ? took : worst;
  }
  cl_conn_free(&c);
  fprintf(stderr, "  NOTIFY wake-up: worst enqueue-to-result %.0f ms\n",
          worst * 1000);
  assert_true(worst < 1.0);
  stop_ok(a, "wake");
  char *log = read_log("wake");
  int lines = 0;
  for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
    json_object *o = json_tokener_parse(line);
    if (o == NULL)
      fail_msg("not a JSON log line: %s", line);
    assert_true(json_object_object_get_ex(o, "event", NULL));
    json_object_put(o);
    lines++;
  }
  assert_true(lines >= 10);
  free(log);
  PQfinish(p);
}

/* Two queues weighted 1 and 3, one handler at a time: while both have
 * work, claims go about 1:3. */
static void test_weights(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_weights", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "light", 300);
  enqueue_n(p, "heavy", 300);
  const char *args[] = {"-q", "light:1",    "-q", "heavy:3", "--concurrency",
                        "1",  "--prefetch", "1",  "--exec",  HANDLER,
                        NULL};
  pid_t a = start_worker(dsn, "weights", args);
  wait_count(p, "SELECT count(*) FROM claimer.results", 200, 60, "weights");
  stop_ok(a, "weights");
  long heavy = th_long(p, "SELECT count(*) FROM (SELECT queue FROM "
                          "claimer.results ORDER BY pos LIMIT 200) f WHERE "
                          "queue = 'heavy'");
  fprintf(stderr, "  weights 1:3: %ld of the first 200 from the heavy queue\n",
          heavy);
  assert_in_range(heavy, 130, 170);
  PQfinish(p);
}

/* What each way of ending does, through the exec handler: plain text on
 * stdout is stored as a JSON string; exit 75 retries; any other exit is
 * dead with stderr's tail as the error; a handler past its timeout is
 * killed and retried; stdout over the cap fails the item. */
static void test_exec_outcomes(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_outcomes", 1, dsn, sizeof dsn),
                   0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue) VALUES "
             "('text', 'out'), ('tempfail', 'out'), ('broken', 'out'), "
             "('slow', 'out'), ('big', 'out'), ('empty', 'out')");
  const char *args[] = {
      "-q",
      "out",
      "--timeout",
      "1",
      "--kill-grace",
      "1",
      "--result-max",
      "100",
      "--exec",
      "case $CLAIMER_ITEM_ID in "
      "text) echo 'hello \"world\"';; "
      "tempfail) echo 'try later' >&2; exit 75;; "
      "broken) echo 'first line' >&2; echo 'it broke' >&2; exit 3;; "
      "slow) exec sleep 30;; "
      "big) head -c 500 /dev/zero | tr '\\0' x;; "
      "empty) true;; "
      "esac",
      NULL};
  pid_t a = start_worker(dsn, "out", args);
  wait_count(p,
             "SELECT count(*) FROM claimer.items WHERE last_error IS NOT "
             "NULL OR state = 'done'",
             6, 30, "outcomes");
  stop_ok(a, "out");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results WHERE "
                              "item_id = 'text' AND result = "
                              "to_jsonb('hello \"world\"'::text)"),
                   1);
  /* No output is the JSON string "", as documented, not null. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results WHERE "
                              "item_id = 'empty' AND result = '\"\"'"),
                   1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id = 'tempfail' AND state = 'ready' AND "
                              "attempts = 1 AND last_error LIKE '%exit 75%' "
                              "AND last_error LIKE '%try later%'"),
                   1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id = 'broken' AND state = 'dead' AND "
                              "last_error = 'handler exited with status 3: "
                              "first line\nit broke'"),
                   1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id = 'slow' AND state = 'ready' AND "
                              "attempts = 1 AND last_error LIKE "
                              "'handler stopped (timeout)%'"),
                   1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id = 'big' AND state = 'dead' AND "
                              "last_error LIKE '%over the 100-byte result "
                              "limit%'"),
                   1);
  PQfinish(p);
}

/* A lease taken away while its handler runs (expired and reaped behind the
 * worker's back): the next heartbeat sees it gone, the handler is killed,
 * and nothing it would have said is written. */
static void test_lease_lost_by_heartbeat(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_hblost", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "hbl", 1);
  const char *args[] = {
      "-q", "hbl",          "--lease", "6",      "--heartbeat",
      "1",  "--kill-grace", "1",       "--exec", "sleep 30; " HANDLER,
      NULL};
  pid_t a = start_worker(dsn, "hbl", args);
  wait_count(p, "SELECT count(*) FROM claimer.claims", 1, 30, "claimed");
  double t0 = th_now();
  th_exec(p, "UPDATE claimer.claims SET lease_until = now() - "
             "interval '1 second'");
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  cl_reap_info_t info = {0};
  assert_int_equal(cl_reap(c, 10, &info), 0);
  assert_int_equal(info.expired, 1);
  cl_conn_free(&c);
  char *log = wait_log("hbl", "event=discarded", 1, 15);
  double took = th_now() - t0;
  fprintf(stderr, "  lease lost: handler stopped and discarded in %.1f s\n",
          took);
  if (strstr(log, "event=discarded") == NULL)
    print_log("hbl");
  assert_non_null(strstr(log, "event=lease_lost"));
  assert_non_null(strstr(log, "seen_by=heartbeat"));
  assert_non_null(strstr(log, "event=discarded"));
  assert_true(took < 10); /* not the handler's 30 s */
  free(log);
  stop_ok(a, "hbl");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results"), 0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'ready' AND attempts = 1"),
                   1);
  PQfinish(p);
}

/* The in-process API: a C handler on the worker's loop (the example
 * program), 500 items, SIGTERM, every item done once. */
static void test_in_process(void **state) {
  (void)state;
  enum { N = 500 };
  const char *bin = getenv("EXAMPLE_WORKER_BIN");
  if (bin == NULL)
    th_skip("EXAMPLE_WORKER_BIN is not set (run through meson test)");
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_inproc", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "inproc", N);
  char path[256];
  snprintf(path, sizeof path, "%s/inproc.log", logdir);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(bin, bin, dsn, "inproc", "16", "5", (char *)NULL);
    _exit(127);
  }
  wait_count(p, "SELECT count(*) FROM claimer.results", N, 120, "in-process");
  stop_ok(pid, "inproc");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results r JOIN "
                              "claimer.items i USING (item_id) WHERE "
                              "r.result->>'item' = r.item_id AND "
                              "i.state = 'done' AND i.attempts = 1"),
                   N);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims"), 0);
  PQfinish(p);
}

/* A worker on a DSN holding the right password: the password appears in
 * no log line, at debug level, through a whole run. */
static void test_password_never_logged(void **state) {
  (void)state;
  char dsn[1024], tcp[1024];
  assert_int_equal(th_db_create(&th_pg, "work_pwlog", 1, dsn, sizeof dsn), 0);
  if (th_db_tcp_dsn(&th_pg, "work_pwlog", 0, tcp, sizeof tcp) != 0)
    th_skip("needs the harness\'s own PostgreSQL (its TCP port and "
            "claimer_pw role); CLAIMER_TEST_DSN is set");
  char good[1200];
  snprintf(good, sizeof good, "%s user=claimer_pw password=right-password",
           tcp);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "pwlog", 20);
  const char *args[] = {"-q",     "pwlog", "--log-level", "debug",
                        "--exec", HANDLER, NULL};
  pid_t a = start_worker(good, "pwlog", args);
  wait_count(p, "SELECT count(*) FROM claimer.results", 20, 30, "pwlog");
  stop_ok(a, "pwlog");
  char *log = read_log("pwlog");
  assert_non_null(strstr(log, "event=completed"));
  assert_non_null(strstr(log, "password=***"));
  assert_null(strstr(log, "right-password"));
  free(log);
  PQfinish(p);
}

/* Bad config for `claimer work`: exit 2 with the exact message, before
 * anything connects. */
static void test_config_errors(void **state) {
  (void)state;
  char path[256];
  snprintf(path, sizeof path, "%s/bad.yaml", logdir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("worker:\n  queues: [a]\n  concurency: 8\n", f);
  fclose(f);
  char want[512];
  snprintf(want, sizeof want,
           "claimer work: %s:3:3: unknown key \"concurency\" in worker (did "
           "you mean \"concurrency\"?)\n",
           path);
  const char *argv1[] = {
      th_claimer_bin(), "work",  "--config",          path, "--exec",
      "true",           "--dsn", "host=/nonexistent", NULL};
  char *out = NULL;
  assert_int_equal(th_run(argv1, NULL, &out), 2);
  assert_string_equal(out, want);
  free(out);
  const char *argv2[] = {th_claimer_bin(), "work",    "-q",  "a", "--exec",
                         "true",           "--lease", "-5s", NULL};
  assert_int_equal(th_run(argv2, NULL, &out), 2);
  assert_string_equal(out,
                      "claimer work: flag --lease: \"-5s\" is not a duration "
                      "(a number of seconds >= 0, or a number with ms, s, m, "
                      "h or d)\n");
  free(out);
  const char *argv3[] = {th_claimer_bin(), "work", "--exec", "true", NULL};
  assert_int_equal(th_run(argv3, NULL, &out), 2);
  assert_string_equal(out, "claimer work: no queue to work on (give -q "
                           "QUEUE, CLAIMER_WORKER_QUEUES or worker.queues)\n");
  free(out);
  const char *argv4[] = {th_claimer_bin(), "work", "-q", "a", NULL};
  assert_int_equal(th_run(argv4, NULL, &out), 2);
  assert_string_equal(out, "claimer work: no handler command (give --exec "
                           "COMMAND, CLAIMER_WORKER_COMMAND or "
                           "worker.command)\n");
  free(out);
  const char *argv5[] = {th_claimer_bin(), "work",        "-q",  "a", "--exec",
                         "true",           "--heartbeat", "40s", NULL};
  assert_int_equal(th_run(argv5, NULL, &out), 2);
  assert_string_equal(out, "claimer work: worker.heartbeat (40s, from flag "
                           "--heartbeat) must be shorter than worker.lease "
                           "(30s, from default) minus the fencing margin "
                           "(3s)\n");
  free(out);
  /* Issue 9: timings that cannot work are refused, with the bound. */
  const char *argv5b[] = {th_claimer_bin(), "work",    "-q",    "a", "--exec",
                          "true",           "--lease", "0.001", NULL};
  assert_int_equal(th_run(argv5b, NULL, &out), 2);
  assert_string_equal(out, "claimer work: flag --lease: 0.001 is out of "
                           "range 1s..7d\n");
  free(out);
  const char *argv5c[] = {th_claimer_bin(), "work",        "-q",  "a", "--exec",
                          "true",           "--heartbeat", "1ms", NULL};
  assert_int_equal(th_run(argv5c, NULL, &out), 2);
  assert_string_equal(out, "claimer work: worker.heartbeat (1ms, from flag "
                           "--heartbeat) is below the minimum of 100ms\n");
  free(out);
  /* config check prints the effective config, secrets redacted. */
  snprintf(path, sizeof path, "%s/good.yaml", logdir);
  f = fopen(path, "w");
  fputs("dsn: \"host=db1 password=s3cret\"\nworker:\n  queues: [a, "
        "{name: b, weight: 3}]\n  lease: 1m\n",
        f);
  fclose(f);
  const char *argv6[] = {th_claimer_bin(), "config", "check", path, NULL};
  assert_int_equal(th_run(argv6, NULL, &out), 0);
  assert_non_null(strstr(out, "password=***"));
  assert_null(strstr(out, "s3cret"));
  assert_non_null(strstr(out, "weight: 3"));
  free(out);
}

/* SIGHUP reloads the file: a new concurrency takes effect, a changed
 * lease is reported as needing a restart. */
static void test_sighup_reload(void **state) {
  (void)state;
  char dsn[1024], path[256];
  assert_int_equal(th_db_create(&th_pg, "work_hup", 1, dsn, sizeof dsn), 0);
  snprintf(path, sizeof path, "%s/hup.yaml", logdir);
  FILE *f = fopen(path, "w");
  fputs("worker:\n  queues: [hup]\n  concurrency: 2\n  command: \"true\"\n", f);
  fclose(f);
  const char *args[] = {"--config", path, NULL};
  pid_t a = start_worker(dsn, "hup", args);
  PGconn *p = th_connect(dsn);
  wait_count(p, "SELECT count(*) FROM claimer.workers WHERE concurrency = 2", 1,
             30, "registered");
  f = fopen(path, "w");
  fputs("worker:\n  queues: [hup]\n  concurrency: 5\n  command: \"true\"\n"
        "  lease: 45s\n",
        f);
  fclose(f);
  kill(a, SIGHUP);
  char *log = wait_log("hup", "event=reloaded", 1, 10);
  stop_ok(a, "hup");
  assert_non_null(strstr(log, "event=reloaded"));
  assert_non_null(strstr(log, "concurrency=5 needs_restart=worker.lease"));
  free(log);
  PQfinish(p);
}

/* ------------------------------------------------------------------------ */
/* Issue 9: what a hostile test found                                        */

/* Counts the lines of the file at path (0 when it does not exist). */
static long count_lines(const char *path) {
  char *s = th_read_file(path);
  long n = th_count(s, "\n");
  free(s);
  return n;
}

/* A handler failing with 64 KiB of quotes and control bytes on stderr: the
 * item_dead NOTIFY once carried the whole error, PostgreSQL refused it
 * (8000 bytes at most), the FAIL with it, and the item came back for free
 * forever.  Now: dead after exactly max_attempts, one alert whose detail
 * holds the error clipped and marked so. */
static void test_fail_long_stderr(void **state) {
  (void)state;
  char dsn[1024], runs[300];
  assert_int_equal(th_db_create(&th_pg, "work_longerr", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  PGconn *l = th_connect(dsn);
  th_exec(l, "LISTEN claimer_alerts");
  th_exec(p, "INSERT INTO claimer.queue_policy (queue, backoff_s, "
             "backoff_max_s) VALUES ('longerr', 0.05, 0.1)");
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, max_attempts) "
             "VALUES ('noisy', 'longerr', 3)");
  snprintf(runs, sizeof runs, "%s/longerr.runs", logdir);
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "echo run >> %s; "
           "awk 'BEGIN { for (i = 0; i < 8192; i++) "
           "printf \"\\\"\\\\\\001\\002\\033\\\"\\\"\\\"\\\"\" }' >&2; "
           "exit 75",
           runs);
  const char *args[] = {"-q", "longerr", "--stderr-max", "64KiB", "--exec",
                        cmd,  NULL};
  pid_t a = start_worker(dsn, "longerr", args);
  wait_count(p, "SELECT count(*) FROM claimer.items WHERE state = 'dead'", 1,
             60, "noisy item dead");
  stop_ok(a, "longerr");
  assert_int_equal(count_lines(runs), 3);
  assert_int_equal(th_long(p, "SELECT attempts FROM claimer.items"), 3);
  assert_true(th_long(p, "SELECT length(last_error) FROM claimer.items") >
              4000);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.alerts WHERE "
                              "kind = 'item_dead' AND subject = 'noisy' AND "
                              "(detail->>'error_truncated')::bool AND "
                              "length(detail->>'error') = 1003 AND "
                              "detail->>'error' LIKE '%...'"),
                   1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.alerts"), 1);
  /* The notification went out, once, within PostgreSQL's 8000 bytes. */
  PQconsumeInput(l);
  int sent = 0;
  for (PGnotify *n; (n = PQnotifies(l)) != NULL; PQfreemem(n))
    sent += strstr(n->extra, "\"subject\": \"noisy\"") != NULL &&
            strlen(n->extra) < 8000;
  assert_int_equal(sent, 1);
  char *log = read_log("longerr");
  assert_null(strstr(log, "event=orphan_released"));
  assert_null(strstr(log, "event=ack_failed"));
  free(log);
  PQfinish(l);
  PQfinish(p);
}

/* A failure the database refuses for a reason that will not change (here
 * a trigger): recorded with a short stand-in, so the attempt is spent;
 * when even that is refused, the lease is left to expire (no longer
 * extended, never released as an orphan) and the reaper spends it. */
static void test_refused_fail(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_refused", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "CREATE FUNCTION public.refuse() RETURNS trigger "
             "LANGUAGE plpgsql AS $$ BEGIN "
             "IF NEW.last_error LIKE '%refuse-me%' OR "
             "   (NEW.item_id LIKE 'all-%' AND NEW.last_error IS NOT NULL "
             "    AND NEW.last_token IS NOT NULL) "
             "THEN RAISE EXCEPTION 'refused by a trigger'; END IF; "
             "RETURN NEW; END $$");
  th_exec(p, "CREATE TRIGGER refuse BEFORE UPDATE ON claimer.items "
             "FOR EACH ROW EXECUTE FUNCTION public.refuse()");
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, max_attempts) "
             "VALUES ('some-1', 'refused', 1), ('all-1', 'refused', 1)");
  const char *args[] = {"-q", "refused", "--lease",
                        "2",  "--exec",  "echo refuse-me >&2; exit 3",
                        NULL};
  pid_t a = start_worker(dsn, "refused", args);
  wait_count(p,
             "SELECT count(*) FROM claimer.items WHERE item_id = "
             "'some-1' AND state = 'dead'",
             1, 30, "stand-in recorded");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id = 'some-1' AND attempts = 1 AND "
                              "last_error LIKE 'the failure could not be "
                              "recorded as given: %refused by a trigger%'"),
                   1);
  /* all-1: refused whatever its error; its lease runs out although the
   * worker heartbeats every 0.67 s. */
  wait_count(p,
             "SELECT count(*) FROM claimer.claims WHERE item_id = "
             "'all-1' AND lease_until < now()",
             1, 30, "refused lease expired");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims WHERE "
                              "item_id = 'all-1' AND lease_until < now()"),
                   1);
  th_exec(p, "DROP TRIGGER refuse ON claimer.items");
  const char *reap[] = {th_claimer_bin(), "reap", "--once", "--dsn", dsn, NULL};
  int st = th_run(reap, NULL, NULL);
  assert_true(st == 0 || st == 4);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id = 'all-1' AND state = 'dead' AND "
                              "attempts = 1"),
                   1);
  stop_ok(a, "refused");
  char *log = read_log("refused");
  assert_null(strstr(log, "event=orphan_released"));
  assert_non_null(strstr(log, "event=ack_failed"));
  free(log);
  PQfinish(p);
}

/* Two workers under one name: the second is refused (exit 2, a clear
 * message) instead of taking the first one's leases for its own lost
 * claims and releasing them; 200 items take exactly 200 handler runs. */
static void test_same_name(void **state) {
  (void)state;
  enum { N = 200 };
  char dsn[1024], runs[300], cmd[512];
  assert_int_equal(th_db_create(&th_pg, "work_samename", 1, dsn, sizeof dsn),
                   0);
  PGconn *p = th_connect(dsn);
  snprintf(runs, sizeof runs, "%s/same.runs", logdir);
  snprintf(cmd, sizeof cmd, "echo $CLAIMER_ITEM_ID >> %s; sleep 0.05; %s", runs,
           HANDLER);
  /* The second --name wins over start_worker's, which names the log. */
  const char *args[] = {"-q", "same",   "--concurrency", "8", "--exec",
                        cmd,  "--name", "same",          NULL};
  /* Both at once: one gets the name. */
  pid_t a = start_worker(dsn, "same-a", args);
  pid_t b = start_worker(dsn, "same-b", args);
  enqueue_n(p, "same", N);
  int sa = -1, sb = -1;
  double end = th_now() + 30;
  while (sa < 0 && sb < 0 && th_now() < end) {
    if (waitpid(a, NULL, WNOHANG) == a)
      sa = 2, a = 0;
    else if (waitpid(b, NULL, WNOHANG) == b)
      sb = 2, b = 0;
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_true(sa == 2 || sb == 2); /* one of them exited */
  pid_t live = a ? a : b;
  wait_count(p, "SELECT count(*) FROM claimer.results", N, 60, "same");
  stop_ok(live, a ? "same-a" : "same-b");
  check_all_done(p, "same", N);
  assert_int_equal(count_lines(runs), N);
  char *refused = read_log(a ? "same-b" : "same-a");
  char *kept = read_log(a ? "same-a" : "same-b");
  assert_non_null(strstr(refused, "worker name \"same\" is in use by a "
                                  "live worker"));
  assert_null(strstr(kept, "event=orphan_released"));
  free(refused);
  free(kept);
  /* A third, refused, says so and exits 2 before touching anything. */
  const char *args3[] = {"-q", "same", "--exec", "true", NULL};
  pid_t c = start_worker(dsn, "same3", args3);
  wait_count(p,
             "SELECT count(*) FROM claimer.workers WHERE worker_id = "
             "'same3'",
             1, 30, "same3 registered");
  const char *argv[] = {th_claimer_bin(), "work",  "--dsn", dsn,
                        "--name",         "same3", "-q",    "same",
                        "--exec",         "true",  NULL};
  char *out = NULL;
  assert_int_equal(th_run(argv, NULL, &out), 2);
  assert_non_null(strstr(out, "worker name \"same3\" is in use by a live "
                              "worker (host "));
  free(out);
  stop_ok(c, "same3");
  PQfinish(p);
}

/* A worker killed -9 and restarted under its name at once: the name's row
 * says its pid is gone on this host, so the new one takes it over and
 * releases what the dead one held without waiting for lease expiry. */
static void test_same_name_restart(void **state) {
  (void)state;
  enum { N = 40 };
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_restart", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "rs", N);
  const char *args[] = {"-q",
                        "rs",
                        "--lease",
                        "600",
                        "--concurrency",
                        "4",
                        "--exec",
                        "sleep 0.3; " HANDLER,
                        NULL};
  pid_t a = start_worker(dsn, "rs", args);
  wait_count(p, "SELECT count(*) FROM claimer.claims", 1, 30, "rs holding");
  kill(-a, SIGKILL);
  assert_int_equal(th_wait_exit(a, 10), 128 + SIGKILL);
  pid_t b = start_worker(dsn, "rs", args);
  /* Leases of 10 minutes: done in seconds only if the orphans went back. */
  wait_count(p, "SELECT count(*) FROM claimer.results", N, 60, "rs");
  stop_ok(b, "rs");
  check_all_done(p, "rs", N);
  char *log = read_log("rs");
  assert_non_null(strstr(log, "event=worker_name_reclaimed"));
  assert_non_null(strstr(log, "event=orphan_released"));
  free(log);
  PQfinish(p);
}

/* Out of file descriptors (ulimit -n 48, concurrency 40): handlers that
 * cannot start give their items back without spending an attempt; the
 * worker pauses and says so once.  With max_attempts 1 a spent attempt
 * would kill the item. */
static void test_spawn_failure(void **state) {
  (void)state;
  enum { N = 300 };
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "work_emfile", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, payload, "
             "max_attempts) SELECT 'fd-' || g, 'fd', '{}', 1 "
             "FROM generate_series(1, 300) g");
  const char *argv[] = {"/bin/sh",
                        "-c",
                        "ulimit -n 48; exec \"$0\" \"$@\"",
                        th_claimer_bin(),
                        "work",
                        "--dsn",
                        dsn,
                        "--name",
                        "fd",
                        "-q",
                        "fd",
                        "--concurrency",
                        "40",
                        "--exec",
                        "sleep 0.1; echo '{}'",
                        NULL};
  char path[256];
  snprintf(path, sizeof path, "%s/fd.log", logdir);
  pid_t a = th_spawn(argv, path);
  if (nstarted < 64)
    started[nstarted++] = a;
  wait_count(p,
             "SELECT count(*) FROM claimer.items WHERE state <> 'ready' "
             "AND state <> 'leased'",
             N, 120, "fd");
  stop_ok(a, "fd");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'dead'"),
                   0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'done' AND attempts = 1"),
                   N);
  char *log = read_log("fd");
  int warned = th_count(log, "event=handler_start_failed");
  fprintf(stderr, "  %d handler_start_failed warnings\n", warned);
  assert_true(warned >= 1 && warned <= 2); /* once a minute at most */
  assert_non_null(strstr(log, "attempt_spent=false"));
  free(log);
  PQfinish(p);
}

/* A handler that leaves a child in the background: the child is killed
 * when the handler ends, not left running beside the item's next holder. */
static void test_background_child_killed(void **state) {
  (void)state;
  char dsn[1024], pidfile[300], cmd[512];
  assert_int_equal(th_db_create(&th_pg, "work_bg", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue) VALUES "
             "('bg', 'bg')");
  snprintf(pidfile, sizeof pidfile, "%s/bg.pid", logdir);
  snprintf(cmd, sizeof cmd,
           "sleep 300 </dev/null >/dev/null 2>&1 & echo $! > %s; echo ok",
           pidfile);
  const char *args[] = {"-q", "bg", "--exec", cmd, NULL};
  pid_t a = start_worker(dsn, "bg", args);
  wait_count(p, "SELECT count(*) FROM claimer.results", 1, 30, "bg");
  char *s = th_read_file(pidfile);
  pid_t child = (pid_t)atol(s);
  free(s);
  assert_true(child > 0);
  double end = th_now() + 5;
  while (kill(child, 0) == 0 && th_now() < end) {
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
  int alive = kill(child, 0) == 0;
  if (alive)
    kill(child, SIGKILL);
  assert_false(alive);
  stop_ok(a, "bg");
  PQfinish(p);
}

/* Output written after the shell exited, by what it left in the
 * background, within the linger: kept, even when the worker's loop falls
 * behind (here: SIGSTOPped) past the linger while it sits in the pipe.
 * The linger once reported what had been read so far, and the result was
 * "" with exit 0. */
static void test_late_output_kept(void **state) {
  (void)state;
  char dsn[1024], started_f[300], cmd[700];
  assert_int_equal(th_db_create(&th_pg, "work_late", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue) VALUES "
             "('late', 'late')");
  snprintf(started_f, sizeof started_f, "%s/late.started", logdir);
  snprintf(cmd, sizeof cmd, "(sleep 0.5; echo '\"late\"') & touch %s; exit 0",
           started_f);
  const char *args[] = {"-q", "late", "--exec", cmd, NULL};
  pid_t a = start_worker(dsn, "late", args);
  double end = th_now() + 30;
  while (access(started_f, F_OK) != 0 && th_now() < end) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(access(started_f, F_OK), 0);
  struct timespec ts = {0, 150 * 1000000L};
  nanosleep(&ts, NULL); /* the shell has exited; the output is still due */
  kill(a, SIGSTOP);
  ts.tv_sec = 2;
  ts.tv_nsec = 0;
  nanosleep(&ts, NULL); /* past the linger, with the output in the pipe */
  kill(a, SIGCONT);
  wait_count(p, "SELECT count(*) FROM claimer.results", 1, 30, "late");
  PGresult *r = PQexec(p, "SELECT result::text FROM claimer.results");
  print_message("result after the loop fell behind: %s\n", PQgetvalue(r, 0, 0));
  assert_string_equal(PQgetvalue(r, 0, 0), "\"late\"");
  PQclear(r);
  stop_ok(a, "late");
  PQfinish(p);
}

/* Whether a process of group pgid still runs (a zombie, waiting for
 * init to reap it, does not). */
static int group_runs(pid_t pgid) {
  DIR *d = opendir("/proc");
  if (d == NULL)
    return kill(-pgid, 0) == 0;
  int runs = 0;
  for (struct dirent *e; !runs && (e = readdir(d)) != NULL;) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* past the command name */
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (rp != NULL && sscanf(rp + 1, " %c %ld %ld", &state, &ppid, &pgrp) == 3)
      runs = pgrp == pgid && state != 'Z';
  }
  closedir(d);
  return runs;
}

/* A worker killed with SIGKILL alone (not its process group: the
 * handlers sit in sessions of their own anyway) leaves no handler
 * running: its guard kills their groups, so nothing of an item runs on
 * beside the item's next holder. */
static void test_sigkill_leaves_no_handler(void **state) {
  (void)state;
  enum { N = 4 };
  char dsn[1024], pids[300], cmd[700];
  assert_int_equal(th_db_create(&th_pg, "work_orphans", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  enqueue_n(p, "orph", N);
  snprintf(pids, sizeof pids, "%s/orph.pids", logdir);
  /* The shell, and a child of it: both must go. */
  snprintf(cmd, sizeof cmd, "echo $$ >> %s; sleep 60; echo never", pids);
  const char *args[] = {"-q", "orph", "--exec", cmd, "--concurrency",
                        "8",  NULL};
  pid_t a = start_worker(dsn, "orph", args);
  double end = th_now() + 30;
  char *s = NULL;
  while (th_count((s = th_read_file(pids)), "\n") < N && th_now() < end) {
    free(s);
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(th_count(s, "\n"), N);
  pid_t groups[N];
  char *line = s;
  for (int i = 0; i < N; i++, line = strchr(line, '\n') + 1)
    groups[i] = (pid_t)strtol(line, NULL, 10);
  free(s);
  assert_int_equal(kill(a, SIGKILL), 0); /* the worker alone */
  assert_int_equal(th_wait_exit(a, 10), 128 + SIGKILL);
  double killed = th_now();
  int alive = N;
  end = killed + 5;
  while (alive > 0 && th_now() < end) {
    alive = 0;
    for (int i = 0; i < N; i++)
      alive += group_runs(groups[i]);
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  print_message("worker SIGKILLed: %d of %d handler groups left after "
                "%.2f s\n",
                alive, N, th_now() - killed);
  for (int i = 0; i < N; i++)
    kill(-groups[i], SIGKILL); /* a failed test leaves nothing either */
  assert_int_equal(alive, 0);
  PQfinish(p);
}

/* A reload that fails under log.format json is logged as one JSON line,
 * like every other line of that log. */
static void test_reload_failure_json(void **state) {
  (void)state;
  char dsn[1024], path[256];
  assert_int_equal(th_db_create(&th_pg, "work_hupjson", 1, dsn, sizeof dsn), 0);
  snprintf(path, sizeof path, "%s/hupjson.yaml", logdir);
  FILE *f = fopen(path, "w");
  fputs("log:\n  format: json\nworker:\n  queues: [hj]\n  command: \"true\"\n",
        f);
  fclose(f);
  const char *args[] = {"--config", path, NULL};
  pid_t a = start_worker(dsn, "hupjson", args);
  char *log = wait_log("hupjson", "\"event\":\"db_connected\"", 1, 30);
  free(log);
  f = fopen(path, "w");
  fputs("worker:\n  concurrency: lots\n", f);
  fclose(f);
  kill(a, SIGHUP);
  log = wait_log("hupjson", "reload_failed", 1, 10);
  stop_ok(a, "hupjson");
  free(log);
  log = read_log("hupjson");
  assert_non_null(strstr(log, "reload_failed"));
  assert_non_null(strstr(log, "worker.concurrency"));
  /* Every line is a JSON object. */
  int lines = 0;
  for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
    json_object *o = json_tokener_parse(line);
    if (o == NULL || !json_object_is_type(o, json_type_object))
      fail_msg("not a JSON line: %s", line);
    json_object_put(o);
    lines++;
  }
  assert_true(lines >= 3);
  free(log);
}

/* A worker whose password stops working (changed while it runs) exits 1
 * without claiming a drain timeout that never happened. */
static void test_password_changed(void **state) {
  (void)state;
  char dsn[1024], tcp[1024];
  assert_int_equal(th_db_create(&th_pg, "work_pwchg", 1, dsn, sizeof dsn), 0);
  if (th_db_tcp_dsn(&th_pg, "work_pwchg", 0, tcp, sizeof tcp) != 0)
    th_skip("needs the harness\'s own PostgreSQL (its TCP port and "
            "claimer_pw role); CLAIMER_TEST_DSN is set");
  char good[1200];
  snprintf(good, sizeof good, "%s user=claimer_pw password=right-password",
           tcp);
  PGconn *admin = th_connect(th_pg.admin_dsn);
  const char *args[] = {"-q", "pwchg", "--exec", "true", NULL};
  pid_t a = start_worker(good, "pwchg", args);
  char *log = wait_log("pwchg", "event=db_connected", 1, 30);
  free(log);
  th_exec(admin, "ALTER ROLE claimer_pw PASSWORD 'changed-password'");
  th_exec(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE usename = 'claimer_pw'");
  int st = th_wait_exit(a, 30);
  th_exec(admin, "ALTER ROLE claimer_pw PASSWORD 'right-password'");
  log = read_log("pwchg");
  if (st != 1)
    print_log("pwchg");
  assert_int_equal(st, 1);
  assert_non_null(strstr(log, "password authentication failed"));
  assert_null(strstr(log, "drain_timeout"));
  free(log);
  PQfinish(admin);
}

int main(void) {
  if (mkdtemp(logdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  th_filter_from_env(); /* CLAIMER_TEST_FILTER=test_sigstop: one case */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_notify_wakeup),
      cmocka_unit_test(test_weights),
      cmocka_unit_test(test_sigterm_drain),
      cmocka_unit_test(test_exec_outcomes),
      cmocka_unit_test(test_lease_lost_by_heartbeat),
      cmocka_unit_test(test_in_process),
      cmocka_unit_test(test_wrong_password),
      cmocka_unit_test(test_password_never_logged),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_sighup_reload),
      cmocka_unit_test(test_missing_schema),
      cmocka_unit_test(test_sigstop),
      cmocka_unit_test(test_kill9),
      cmocka_unit_test(test_db_restart),
      cmocka_unit_test(test_drain_four_workers),
      cmocka_unit_test(test_fail_long_stderr),
      cmocka_unit_test(test_refused_fail),
      cmocka_unit_test(test_same_name),
      cmocka_unit_test(test_same_name_restart),
      cmocka_unit_test(test_spawn_failure),
      cmocka_unit_test(test_background_child_killed),
      cmocka_unit_test(test_late_output_kept),
      cmocka_unit_test(test_sigkill_leaves_no_handler),
      cmocka_unit_test(test_reload_failure_json),
      cmocka_unit_test(test_password_changed),
  };
  int failed = cmocka_run_group_tests_name("work", tests, th_group_setup,
                                           th_group_teardown);
  kill_leftovers();
  if (failed == 0 && getenv("CLAIMER_TEST_KEEP") == NULL)
    cl__rmtree(logdir);
  return failed;
}
