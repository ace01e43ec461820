/*
 * test_ambiguous.c: G9 and G1 with real connections cut at the worst
 * moment.  Each test puts cutproxy (tests/tools/cutproxy.c) between the
 * library and the throwaway PostgreSQL and has it cut the connection that
 * carries a chosen item id, either after the statement reached the server
 * (it commits, the answer is lost: the outcome is ambiguous) or before (it
 * never ran).  The library must settle complete and fail by reading back
 * with the same token, never doubling a result or an attempt; a retry after
 * the lease was lost meanwhile must say so and write nothing; and a batch
 * enqueue that died mid-way must be safe to send again whole.
 *
 * The proxy needs the harness's own server (its TCP port); against
 * CLAIMER_TEST_DSN these tests are skipped, saying why.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

enum { BATCH = 1000 };

typedef struct proxy {
  pid_t pid;
  int port;
  char log[64]; /* the proxy's stderr: one line per cut */
} proxy_t;

typedef struct fixture {
  char name[64];
  char dsn[1024]; /* direct, unix socket */
  cl_conn_t *c;   /* direct */
  PGconn *raw;    /* direct, for checks */
  proxy_t proxy;
  char proxy_dsn[1200];
} fixture_t;

/* ------------------------------------------------------------------------ */
/* The proxy                                                                 */

static const char *cutproxy_bin(void) {
  const char *bin = getenv("CUTPROXY_BIN");
  return bin ? bin : "cutproxy";
}

/* Starts cutproxy toward the harness's TCP port, listening on port (0: a
 * free one, read back from its "port N" line), cutting the first count
 * connections that carry trigger, in mode ("before" or "after"). */
static void proxy_start(proxy_t *p, int port, const char *trigger,
                        const char *mode, int count) {
  snprintf(p->log, sizeof p->log, "/tmp/claimer-cutproxy-XXXXXX");
  int logfd = mkstemp(p->log);
  if (logfd < 0)
    fail_msg("mkstemp: %s", strerror(errno));
  int out[2];
  if (pipe(out) != 0)
    fail_msg("pipe: %s", strerror(errno));
  char sport[16], upport[16], scount[16];
  snprintf(sport, sizeof sport, "%d", port);
  snprintf(upport, sizeof upport, "%d", th_pg.port);
  snprintf(scount, sizeof scount, "%d", count);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    fail_msg("fork: %s", strerror(errno));
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(logfd, 2);
    close(out[0]);
    close(out[1]);
    close(logfd);
    const char *bin = cutproxy_bin();
    execl(bin, bin, sport, "127.0.0.1", upport, trigger, mode, scount,
          (char *)NULL);
    fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
    _exit(127);
  }
  close(out[1]);
  close(logfd);
  p->pid = pid;
  p->port = port;
  if (port == 0) {
    /* Read "port N\n", waiting at most 10 s. */
    char line[64];
    size_t len = 0;
    double until = th_now() + 10;
    while (len < sizeof line - 1 && (len == 0 || line[len - 1] != '\n')) {
      struct pollfd pfd = {.fd = out[0], .events = POLLIN};
      int left = (int)((until - th_now()) * 1000);
      if (left <= 0 || poll(&pfd, 1, left) <= 0)
        break;
      ssize_t n = read(out[0], line + len, sizeof line - 1 - len);
      if (n <= 0)
        break;
      len += (size_t)n;
    }
    line[len] = '\0';
    if (sscanf(line, "port %d", &p->port) != 1 || p->port <= 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      fail_msg("cutproxy did not announce its port (got \"%s\")", line);
    }
  } else {
    /* A fixed port: wait until it accepts. */
    char probe[256];
    snprintf(probe, sizeof probe,
             "host=127.0.0.1 port=%d dbname=postgres user=%s "
             "connect_timeout=2",
             port, th_pg.user);
    double until = th_now() + 10;
    for (;;) {
      PGconn *t = PQconnectdb(probe);
      int ok = PQstatus(t) == CONNECTION_OK;
      PQfinish(t);
      if (ok)
        break;
      if (th_now() > until)
        fail_msg("cutproxy on port %d does not answer", port);
      usleep(20000);
    }
  }
  close(out[0]);
}

/* Counts the cuts the proxy has logged. */
static int proxy_cuts(const proxy_t *p) {
  FILE *f = fopen(p->log, "r");
  if (f == NULL)
    return 0;
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (strstr(line, "cutproxy: cut connection") != NULL)
      n++;
  fclose(f);
  return n;
}

/* Returns 1 when the proxy's log holds text. */
static int proxy_logged(const proxy_t *p, const char *text) {
  FILE *f = fopen(p->log, "r");
  if (f == NULL)
    return 0;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f) != NULL)
    found = strstr(line, text) != NULL;
  fclose(f);
  return found;
}

/* Stops the proxy (SIGTERM; it must exit 0) and removes its log. */
static void proxy_stop(proxy_t *p) {
  if (p->pid <= 0)
    return;
  kill(p->pid, SIGTERM);
  int st = 0;
  waitpid(p->pid, &st, 0);
  p->pid = 0;
  unlink(p->log);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

/* ------------------------------------------------------------------------ */
/* Fixture                                                                   */

static int setup(void **state) {
  static int n;
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -1;
  *state = f;
  if (!th_pg.own)
    return 0;
  snprintf(f->name, sizeof f->name, "ambiguous_%d", ++n);
  if (th_db_create(&th_pg, f->name, 1, f->dsn, sizeof f->dsn) != 0)
    return -1;
  if (cl_conn_new(&f->c, f->dsn) != 0 || cl_conn_connect(f->c) != 0)
    return -1;
  f->raw = th_connect(f->dsn);
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (f->proxy.pid > 0) {
    kill(f->proxy.pid, SIGKILL);
    waitpid(f->proxy.pid, NULL, 0);
    unlink(f->proxy.log);
  }
  cl_conn_free(&f->c);
  if (f->raw != NULL)
    PQfinish(f->raw);
  free(f);
  return 0;
}

/* Skips the test when the server is not the harness's own. */
static void require_own_server(void) {
  if (!th_pg.own) {
    print_message("skipped: cutproxy needs the harness's own PostgreSQL "
                  "(its TCP port); CLAIMER_TEST_DSN is set\n");
    skip();
  }
}

/* Starts the fixture's proxy and writes the DSN that goes through it. */
static void start_proxy(fixture_t *f, const char *trigger, const char *mode,
                        int count) {
  proxy_start(&f->proxy, 0, trigger, mode, count);
  char base[1024];
  assert_int_equal(
      th_db_tcp_dsn(&th_pg, f->name, f->proxy.port, base, sizeof base), 0);
  /* In the clear, so that the proxy sees the trigger and the framing. */
  snprintf(f->proxy_dsn, sizeof f->proxy_dsn, "%s sslmode=disable", base);
}

/* Opens a library connection through the proxy. */
static cl_conn_t *proxied_conn(const fixture_t *f) {
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, f->proxy_dsn), 0);
  int rc = cl_conn_connect(c);
  if (rc != 0)
    fail_msg("connect through cutproxy: %s", cl_conn_last_error(c));
  return c;
}

/* Runs a query built from fmt (the caller's own constants, quoted in fmt)
 * and returns its one value as a long, or fails the test. */
__attribute__((format(printf, 2, 3))) static long q_long(const fixture_t *f,
                                                         const char *fmt, ...) {
  char sql[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  return th_long(f->raw, sql);
}

static void assert_item_state(const fixture_t *f, const char *id,
                              const char *state) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT state FROM claimer.items WHERE item_id = '%s'", id);
  PGresult *r = PQexec(f->raw, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
    PQclear(r);
    fail_msg("%s: %s", sql, msg);
  }
  char got[32];
  snprintf(got, sizeof got, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  assert_string_equal(got, state);
}

/* Enqueues id and claims it over the direct connection; returns the lease
 * (the caller frees it with cl_leases_free(l, 1)). */
static cl_lease_t *enqueue_and_claim(fixture_t *f, const char *id,
                                     int max_attempts) {
  cl_item_t it = {.item_id = id,
                  .queue = "amb",
                  .payload = "{\"k\":1}",
                  .max_attempts = max_attempts};
  assert_int_equal(cl_enqueue(f->c, &it, 1, NULL), 1);
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(f->c, "amb", "w-amb", 1, 300, &l, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(l->item_id, id);
  return l;
}

/* ------------------------------------------------------------------------ */
/* complete                                                                  */

/* The first send commits and its answer is lost: the retry must read back
 * that this token completed the item, and write nothing more. */
static void test_complete_cut_after_commit(void **state) {
  fixture_t *f = *state;
  require_own_server();
  const char *id = "amb-complete-after";
  cl_lease_t *l = enqueue_and_claim(f, id, 0);
  start_proxy(f, id, "after", 1);
  cl_conn_t *pc = proxied_conn(f);
  cl_complete_info_t info = {-1, -1};
  int rc = cl_complete(pc, id, l->token, "{\"r\":1}", &info);
  if (rc != 0)
    fail_msg("cl_complete: %s: %s", cl_err_name(rc), cl_conn_last_error(pc));
  assert_int_equal(info.already, 1);
  assert_true(info.retries >= 1);
  assert_int_equal(proxy_cuts(&f->proxy), 1);
  assert_true(proxy_logged(&f->proxy, "after forwarding trigger"));
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s'",
                          id),
                   1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s' AND token = '%s' "
                          "AND result = '{\"r\":1}'::jsonb",
                          id, l->token),
                   1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims "
                          "WHERE item_id = '%s'",
                          id),
                   0);
  assert_item_state(f, id, "done");
  assert_int_equal(q_long(f,
                          "SELECT attempts FROM claimer.items "
                          "WHERE item_id = '%s'",
                          id),
                   1);
  cl_conn_free(&pc);
  cl_leases_free(l, 1);
  proxy_stop(&f->proxy);
}

/* Many completes in one statement, the connection cut after the batch's
 * COMMIT was forwarded (mode "after": every item reads back as already
 * done on the resend) or before the batch reached the server ("before":
 * the resend does it).  Either way each item has one result, with its own
 * token, and no claim is left.  With joint, the completes carry a claim
 * (cl_complete_many_claim()) of the one item of another queue: cut after
 * the commit, that item was claimed by the lost send (an orphan held
 * under the worker's name) and the claim sent alone after the resend
 * finds nothing; cut before, the claim sent alone gets it. */
static void complete_many_cut(fixture_t *f, const char *mode, int joint) {
  require_own_server();
  char trigger[64], id1[80], id2[80], next_q[80];
  snprintf(trigger, sizeof trigger, "amb-many-%s%s", joint ? "joint-" : "",
           mode);
  snprintf(next_q, sizeof next_q, "next-%s", mode);
  cl_item_t next = {.item_id = next_q, .queue = next_q};
  if (joint)
    assert_int_equal(cl_enqueue(f->c, &next, 1, NULL), 1);
  snprintf(id1, sizeof id1, "%s-1", trigger);
  snprintf(id2, sizeof id2, "%s-2", trigger);
  cl_lease_t *l1 = enqueue_and_claim(f, id1, 0);
  cl_lease_t *l2 = enqueue_and_claim(f, id2, 0);
  start_proxy(f, trigger, mode, 1);
  cl_conn_t *pc = proxied_conn(f);
  cl_done_t items[] = {{id1, l1->token, "{\"r\":1}"},
                       {id2, l2->token, "{\"r\":2}"}};
  int rcs[2] = {-1, -1};
  cl_complete_info_t infos[2];
  cl_lease_t *got = NULL;
  size_t ngot = 0;
  int rc = joint ? cl_complete_many_claim(pc, items, 2, rcs, infos, next_q,
                                          "w-amb", 1, 300, &got, &ngot)
                 : cl_complete_many(pc, items, 2, rcs, infos);
  if (rc != 0 || rcs[0] != 0 || rcs[1] != 0)
    fail_msg("cl_complete_many: %s, items %s %s: %s", cl_err_name(rc),
             cl_err_name(rcs[0]), cl_err_name(rcs[1]), cl_conn_last_error(pc));
  int after = strcmp(mode, "after") == 0;
  if (joint) {
    assert_int_equal(ngot, after ? 0 : 1);
    if (!after)
      assert_string_equal(got[0].item_id, next_q);
    assert_int_equal(q_long(f,
                            "SELECT count(*) FROM claimer.claims WHERE "
                            "item_id = '%s' AND worker_id = 'w-amb'",
                            next_q),
                     1);
    cl_leases_free(got, ngot);
  }
  for (int i = 0; i < 2; i++) {
    assert_int_equal(infos[i].already, after);
    assert_true(infos[i].retries >= 1);
  }
  assert_int_equal(proxy_cuts(&f->proxy), 1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE (item_id = '%s' AND token = '%s' AND "
                          "result = '{\"r\":1}'::jsonb) OR (item_id = '%s' "
                          "AND token = '%s' AND result = '{\"r\":2}'::jsonb)",
                          id1, l1->token, id2, l2->token),
                   2);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id LIKE '%s%%'",
                          trigger),
                   2);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims "
                          "WHERE item_id LIKE '%s%%'",
                          trigger),
                   0);
  assert_item_state(f, id1, "done");
  assert_item_state(f, id2, "done");
  cl_conn_free(&pc);
  cl_leases_free(l1, 1);
  cl_leases_free(l2, 1);
  proxy_stop(&f->proxy);
}

static void test_complete_many_cut_after_commit(void **state) {
  complete_many_cut(*state, "after", 0);
}

static void test_complete_many_cut_before_send(void **state) {
  complete_many_cut(*state, "before", 0);
}

static void test_complete_claim_cut_after_commit(void **state) {
  complete_many_cut(*state, "after", 1);
}

static void test_complete_claim_cut_before_send(void **state) {
  complete_many_cut(*state, "before", 1);
}

/* The first send never reaches the server: the retry completes for real. */
static void test_complete_cut_before_send(void **state) {
  fixture_t *f = *state;
  require_own_server();
  const char *id = "amb-complete-before";
  cl_lease_t *l = enqueue_and_claim(f, id, 0);
  start_proxy(f, id, "before", 1);
  cl_conn_t *pc = proxied_conn(f);
  cl_complete_info_t info = {-1, -1};
  int rc = cl_complete(pc, id, l->token, "{\"r\":2}", &info);
  if (rc != 0)
    fail_msg("cl_complete: %s: %s", cl_err_name(rc), cl_conn_last_error(pc));
  assert_int_equal(info.already, 0);
  assert_true(info.retries >= 1);
  assert_int_equal(proxy_cuts(&f->proxy), 1);
  assert_true(proxy_logged(&f->proxy, "before forwarding trigger"));
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s' AND token = '%s' "
                          "AND result = '{\"r\":2}'::jsonb",
                          id, l->token),
                   1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s'",
                          id),
                   1);
  assert_item_state(f, id, "done");
  cl_conn_free(&pc);
  cl_leases_free(l, 1);
  proxy_stop(&f->proxy);
}

/* The same ambiguity through the command line: exit 0, one result. */
static void test_cli_complete_cut_after_commit(void **state) {
  fixture_t *f = *state;
  require_own_server();
  const char *id = "amb-cli-after";
  cl_lease_t *l = enqueue_and_claim(f, id, 0);
  start_proxy(f, id, "after", 1);
  const char *argv[] = {
      th_claimer_bin(), "complete", "--dsn",    f->proxy_dsn,     "--id", id,
      "--token",        l->token,   "--result", "{\"cli\":true}", NULL};
  char *out = NULL;
  int ex = th_run(argv, NULL, &out);
  if (ex != 0)
    fail_msg("claimer complete exited %d: %s", ex, out);
  assert_non_null(strstr(out, "already completed by this token"));
  assert_int_equal(proxy_cuts(&f->proxy), 1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s' AND token = '%s' "
                          "AND result = '{\"cli\":true}'::jsonb",
                          id, l->token),
                   1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s'",
                          id),
                   1);
  assert_item_state(f, id, "done");
  free(out);
  cl_leases_free(l, 1);
  proxy_stop(&f->proxy);
}

/* The library's own retry of complete, after the lease was lost while the
 * connection was down: it must report the lost lease and write nothing.
 * The order is made deterministic: the proxy cuts every try before it
 * reaches the server while a child process sits in cl_complete's retry
 * loop; meanwhile the lease expires and is reaped; then a pass-through
 * proxy replaces the cutting one on the same port, and the next retry
 * reaches the server. */
static void test_complete_retry_after_lease_lost(void **state) {
  fixture_t *f = *state;
  require_own_server();
  const char *id = "amb-lost";
  cl_lease_t *l = enqueue_and_claim(f, id, 0);
  start_proxy(f, id, "before", 1000000);
  int res[2];
  assert_int_equal(pipe(res), 0);
  fflush(NULL);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    close(res[0]);
    int out[3] = {-9999, -1, -1};
    cl_conn_t *c = NULL;
    if (cl_conn_new(&c, f->proxy_dsn) == 0 && cl_conn_connect(c) == 0) {
      cl_complete_info_t info = {-1, -1};
      out[0] = cl_complete(c, id, l->token, "{\"late\":1}", &info);
      out[1] = info.already;
      out[2] = info.retries;
    }
    cl_conn_free(&c);
    _exit(write(res[1], out, sizeof out) == sizeof out ? 0 : 1);
  }
  close(res[1]);
  /* Wait for the first cut: the child is now in its retry loop. */
  double until = th_now() + 10;
  while (proxy_cuts(&f->proxy) < 1 && th_now() < until)
    usleep(10000);
  assert_true(proxy_cuts(&f->proxy) >= 1);
  /* The lease expires and is reaped meanwhile. */
  th_exec(f->raw, "UPDATE claimer.claims SET lease_until = now() - "
                  "interval '1s'");
  cl_reap_info_t ri = {0};
  assert_int_equal(cl_reap(f->c, 100, &ri), 0);
  assert_int_equal(ri.expired, 1);
  assert_item_state(f, id, "ready");
  /* Let the next retry through. */
  int port = f->proxy.port;
  proxy_stop(&f->proxy);
  proxy_start(&f->proxy, port, id, "before", 0);
  int got[3] = {0, 0, 0};
  struct pollfd pfd = {.fd = res[0], .events = POLLIN};
  assert_int_equal(poll(&pfd, 1, 60000), 1);
  assert_int_equal(read(res[0], got, sizeof got), (ssize_t)sizeof got);
  close(res[0]);
  int st = 0;
  waitpid(child, &st, 0);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  if (got[0] != CL_ELEASE_LOST)
    fail_msg("retried cl_complete returned %d (%s), expected CL_ELEASE_LOST",
             got[0], cl_err_name(got[0]));
  assert_int_equal(got[1], 0);
  assert_true(got[2] >= 1);
  assert_int_equal(proxy_cuts(&f->proxy), 0);
  /* Nothing written: no result, the item stays as the reaper left it. */
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s'",
                          id),
                   0);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims "
                          "WHERE item_id = '%s'",
                          id),
                   0);
  assert_item_state(f, id, "ready");
  assert_int_equal(q_long(f,
                          "SELECT attempts FROM claimer.items "
                          "WHERE item_id = '%s'",
                          id),
                   1);
  cl_leases_free(l, 1);
  proxy_stop(&f->proxy);
}

/* Every try cut before it reaches the server: the library gives up with
 * "connection lost" and nothing was written; the lease is still held, and
 * the caller's own later retry with the same token completes for real. */
static void test_complete_gives_up_then_caller_retries(void **state) {
  fixture_t *f = *state;
  require_own_server();
  const char *id = "amb-giveup";
  cl_lease_t *l = enqueue_and_claim(f, id, 0);
  start_proxy(f, id, "before", 1000000);
  cl_conn_t *pc = proxied_conn(f);
  cl_complete_info_t info = {-1, -1};
  double t0 = th_now();
  int rc = cl_complete(pc, id, l->token, "{\"r\":3}", &info);
  double took = th_now() - t0;
  if (rc != CL_ECONNLOST)
    fail_msg("cl_complete returned %s (%s), expected CL_ECONNLOST",
             cl_err_name(rc), cl_conn_last_error(pc));
  assert_true(info.retries >= 1);
  assert_int_equal(proxy_cuts(&f->proxy), info.retries + 1);
  print_message("gave up after %d reconnects in %.1f s\n", info.retries, took);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.results "
                          "WHERE item_id = '%s'",
                          id),
                   0);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims "
                          "WHERE item_id = '%s'",
                          id),
                   1);
  assert_item_state(f, id, "leased");
  cl_conn_free(&pc);
  proxy_stop(&f->proxy);
  /* The caller retries later, on another connection. */
  assert_int_equal(cl_complete(f->c, id, l->token, "{\"r\":3}", &info), 0);
  assert_int_equal(info.already, 0);
  assert_int_equal(info.retries, 0);
  assert_item_state(f, id, "done");
  cl_leases_free(l, 1);
}

/* ------------------------------------------------------------------------ */
/* fail                                                                      */

/* The first send of fail commits and its answer is lost: the retry reports
 * success with info.already, and the attempt was spent exactly once. */
static void test_fail_cut_after_commit(void **state) {
  fixture_t *f = *state;
  require_own_server();
  const char *id = "amb-fail-after";
  cl_lease_t *l = enqueue_and_claim(f, id, 5);
  start_proxy(f, id, "after", 1);
  cl_conn_t *pc = proxied_conn(f);
  cl_fail_info_t info;
  memset(&info, 0xff, sizeof info);
  int rc = cl_fail(pc, id, l->token, "boom", 1, 60, &info);
  if (rc != 0)
    fail_msg("cl_fail: %s: %s", cl_err_name(rc), cl_conn_last_error(pc));
  assert_int_equal(proxy_cuts(&f->proxy), 1);
  assert_int_equal(info.already, 1);
  assert_int_equal(info.dead, 0);
  assert_int_equal(info.attempts, 1);
  assert_non_null(strchr(info.retry_at, 'T'));
  assert_int_equal(q_long(f,
                          "SELECT attempts FROM claimer.items "
                          "WHERE item_id = '%s'",
                          id),
                   1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.items "
                          "WHERE item_id = '%s' AND last_error = 'boom' "
                          "AND run_at > now() + interval '30 s'",
                          id),
                   1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims "
                          "WHERE item_id = '%s'",
                          id),
                   0);
  assert_item_state(f, id, "ready");
  cl_conn_free(&pc);
  cl_leases_free(l, 1);
  proxy_stop(&f->proxy);
}

/* ------------------------------------------------------------------------ */
/* batch enqueue                                                             */

typedef struct batch {
  char ids[BATCH][16];
  char payloads[BATCH][24];
  cl_item_t items[BATCH];
  int outcome[BATCH];
} batch_t;

static batch_t *make_batch(void) {
  batch_t *b = calloc(1, sizeof *b);
  assert_non_null(b);
  for (int i = 0; i < BATCH; i++) {
    snprintf(b->ids[i], sizeof b->ids[i], "batch-%04d", i);
    snprintf(b->payloads[i], sizeof b->payloads[i], "{\"n\":%d}", i);
    b->items[i] = (cl_item_t){
        .item_id = b->ids[i], .queue = "bulk", .payload = b->payloads[i]};
  }
  return b;
}

/* Enqueues the batch on a new direct connection; checks that every item
 * got outcome want; returns the number created. */
static int enqueue_fresh(const fixture_t *f, batch_t *b, int want) {
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, f->dsn), 0);
  for (int i = 0; i < BATCH; i++)
    b->outcome[i] = -1;
  int rc = cl_enqueue(c, b->items, BATCH, b->outcome);
  if (rc < 0)
    fail_msg("cl_enqueue: %s: %s", cl_err_name(rc), cl_conn_last_error(c));
  for (int i = 0; i < BATCH; i++)
    if (b->outcome[i] != want)
      fail_msg("item %d: outcome %d, expected %d", i, b->outcome[i], want);
  cl_conn_free(&c);
  return rc;
}

/* Sends the batch through the proxy, which cuts it; enqueue does not retry
 * by itself, so it must report the lost connection. */
static void enqueue_cut(fixture_t *f, batch_t *b, const char *mode) {
  start_proxy(f, "batch-0500", mode, 1);
  cl_conn_t *pc = proxied_conn(f);
  int rc = cl_enqueue(pc, b->items, BATCH, b->outcome);
  if (rc != CL_ECONNLOST)
    fail_msg("cl_enqueue through the cut returned %d (%s), expected "
             "CL_ECONNLOST",
             rc, cl_err_name(rc));
  assert_int_equal(proxy_cuts(&f->proxy), 1);
  cl_conn_free(&pc);
  proxy_stop(&f->proxy);
}

/* The batch committed but the answer was lost: the producer sends it again
 * whole, and every item reports that it existed. */
static void test_batch_enqueue_cut_after_commit(void **state) {
  fixture_t *f = *state;
  require_own_server();
  batch_t *b = make_batch();
  enqueue_cut(f, b, "after");
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"),
                   BATCH);
  assert_int_equal(enqueue_fresh(f, b, CL_ENQ_EXISTED), 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"),
                   BATCH);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items "
                                   "WHERE payload = jsonb_build_object('n', "
                                   "substr(item_id, 7)::int)"),
                   BATCH);
  free(b);
}

/* The batch never reached the server: the retry creates all of it, and a
 * second retry creates nothing. */
static void test_batch_enqueue_cut_before_send(void **state) {
  fixture_t *f = *state;
  require_own_server();
  batch_t *b = make_batch();
  enqueue_cut(f, b, "before");
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"), 0);
  assert_int_equal(enqueue_fresh(f, b, CL_ENQ_CREATED), BATCH);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"),
                   BATCH);
  assert_int_equal(enqueue_fresh(f, b, CL_ENQ_EXISTED), 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"),
                   BATCH);
  free(b);
}

/* ------------------------------------------------------------------------ */
/* A sender's record                                                         */

/* `claimer send` through the proxy, which cuts the connection that
 * carries the record of one delivery (the first bytes holding its item
 * id: the claim names none).  Cut after the record committed, or before it
 * reached the server: either way the sender sends the record again with
 * the same token (G9), the delivery is recorded sent once with one
 * attempt, and the sink is not called again: the cut lost an answer, not
 * a send. */
static void sender_record_cut(fixture_t *f, const char *mode) {
  require_own_server();
  char id[64];
  snprintf(id, sizeof id, "amb-send-%s", mode);
  const char *ids[] = {"amb-send-x", id, "amb-send-y"};
  for (int i = 0; i < 3; i++) {
    cl_lease_t *l = enqueue_and_claim(f, ids[i], 0);
    assert_int_equal(cl_complete(f->c, l->item_id, l->token, "{}", NULL), 0);
    cl_leases_free(l, 1);
  }
  cl_subscriber_opts_t o = {.from = "beginning"};
  assert_int_equal(cl_subscriber_add(f->c, "sub", &o, NULL), 1);
  start_proxy(f, id, mode, 1);
  char effects[600], cmd[800];
  snprintf(effects, sizeof effects, "%s/%s.effects", th_pg.dir, f->name);
  snprintf(cmd, sizeof cmd, "echo \"$CLAIMER_ITEM_ID\" >> '%s'", effects);
  const char *argv[] = {th_claimer_bin(), "send", "--subscriber", "sub",
                        "--exec",         cmd,    "--once",       "--dsn",
                        f->proxy_dsn,     NULL};
  char *out = NULL;
  int ex = th_run(argv, NULL, &out);
  print_message("%s", out);
  if (ex != 0)
    fail_msg("claimer send exited %d: %s", ex, out);
  assert_non_null(strstr(out, "sent 3,"));
  free(out);
  assert_int_equal(proxy_cuts(&f->proxy), 1);
  assert_int_equal(q_long(f, "SELECT count(*) FROM claimer.deliveries "
                             "WHERE state = 'sent' AND attempts = 1"),
                   3);
  char *eff = th_read_file(effects);
  print_message("sink calls:\n%s", eff);
  assert_int_equal(th_count(eff, "\n"), 3);
  char line[80];
  snprintf(line, sizeof line, "%s\n", id);
  assert_int_equal(th_count(eff, line), 1);
  free(eff);
  proxy_stop(&f->proxy);
}

static void test_sender_record_cut_after_commit(void **state) {
  sender_record_cut(*state, "after");
}

static void test_sender_record_cut_before_send(void **state) {
  sender_record_cut(*state, "before");
}

/* G7 for a sender: cut off from the database (the proxy frozen with
 * SIGSTOP, so its connection neither answers nor breaks), the sender
 * stops its sink before the lease the database holds runs out, by its own
 * clock; once the proxy wakes, the delivery is sent again (same key) and
 * recorded once. */
static void test_sender_fences_itself(void **state) {
  fixture_t *f = *state;
  require_own_server();
  cl_lease_t *l = enqueue_and_claim(f, "amb-fence", 0);
  assert_int_equal(cl_complete(f->c, l->item_id, l->token, "{}", NULL), 0);
  cl_leases_free(l, 1);
  cl_subscriber_opts_t o = {.from = "beginning"};
  assert_int_equal(cl_subscriber_add(f->c, "sub", &o, NULL), 1);
  start_proxy(f, "no such trigger", "after", 0); /* never cuts */
  char dir[600], pidf[700], calm[700], calls[700], log[700], cmd[4200];
  snprintf(dir, sizeof dir, "%s/%s", th_pg.dir, f->name);
  snprintf(pidf, sizeof pidf, "%s.sink-pid", dir);
  snprintf(calm, sizeof calm, "%s.calm", dir);
  snprintf(calls, sizeof calls, "%s.calls", dir);
  snprintf(log, sizeof log, "%s.sender.log", dir);
  snprintf(cmd, sizeof cmd,
           "echo \"$CLAIMER_IDEMPOTENCY_KEY\" >> '%s'; "
           "[ -e '%s' ] && exit 0; echo $$ > '%s.tmp'; mv '%s.tmp' '%s'; "
           "exec sleep 60",
           calls, calm, pidf, pidf, pidf);
  const char *argv[] = {th_claimer_bin(),
                        "send",
                        "--subscriber",
                        "sub",
                        "--exec",
                        cmd,
                        "--lease",
                        "3",
                        "--poll",
                        "0.2",
                        "--dsn",
                        f->proxy_dsn,
                        NULL};
  pid_t sender = th_spawn(argv, log);
  char *pid = NULL;
  double end = th_now() + 20;
  while ((pid = th_read_file(pidf))[0] == '\0' && th_now() < end) {
    free(pid);
    usleep(20 * 1000);
  }
  pid_t sink = (pid_t)atoi(pid);
  free(pid);
  assert_true(sink > 0);
  usleep(1200 * 1000); /* a heartbeat or so goes through */
  assert_int_equal(kill(f->proxy.pid, SIGSTOP), 0);
  /* The lease the database holds, read directly (not through the proxy). */
  double lease_end = (double)q_long(f, "SELECT (extract(epoch FROM "
                                       "lease_until) * 1000)::bigint FROM "
                                       "claimer.deliveries") /
                     1000;
  struct timespec ts;
  double killed = 0;
  end = th_now() + 10;
  while (th_now() < end) {
    if (kill(sink, 0) != 0) {
      clock_gettime(CLOCK_REALTIME, &ts);
      killed = (double)ts.tv_sec + ts.tv_nsec / 1e9;
      break;
    }
    usleep(10 * 1000);
  }
  print_message("sink stopped %.3f s before the database's lease ran out\n",
                lease_end - killed);
  assert_true(killed > 0);
  assert_true(killed < lease_end);
  FILE *cf = fopen(calm, "w");
  assert_non_null(cf);
  fclose(cf);
  assert_int_equal(kill(f->proxy.pid, SIGCONT), 0);
  end = th_now() + 30;
  while (q_long(f, "SELECT count(*) FROM claimer.deliveries WHERE state = "
                   "'sent'") < 1 &&
         th_now() < end)
    usleep(50 * 1000);
  kill(-sender, SIGTERM);
  assert_int_equal(th_wait_exit(sender, 20), 0);
  char *out = th_read_file(log);
  assert_non_null(strstr(out, "event=fenced item=amb-fence"));
  free(out);
  assert_int_equal(q_long(f, "SELECT count(*) FROM claimer.deliveries WHERE "
                             "state = 'sent' AND attempts = 2"),
                   1);
  char *c = th_read_file(calls);
  assert_int_equal(th_count(c, "\n"), 2); /* the same key twice */
  char *nl = strchr(c, '\n');
  assert_non_null(nl);
  assert_memory_equal(c, nl + 1, (size_t)(nl - c));
  free(c);
  proxy_stop(&f->proxy);
}

/* A SIGTERM that arrives while `claimer send` is still connecting (the
 * proxy frozen: the blocking start-up waits on it) is acted on once the
 * loop runs: a drain and exit 0, not death by the signal (143). */
static void test_sigterm_during_startup(void **state) {
  fixture_t *f = *state;
  require_own_server();
  cl_subscriber_opts_t o = {.from = "beginning"};
  assert_int_equal(cl_subscriber_add(f->c, "sub", &o, NULL), 1);
  start_proxy(f, "no such trigger", "after", 0);
  char log[700];
  snprintf(log, sizeof log, "%s/%s.startup.log", th_pg.dir, f->name);
  assert_int_equal(kill(f->proxy.pid, SIGSTOP), 0);
  const char *argv[] = {
      th_claimer_bin(), "send",  "--subscriber", "sub", "--exec",
      "true",           "--dsn", f->proxy_dsn,   NULL};
  pid_t sender = th_spawn(argv, log);
  usleep(500 * 1000); /* well inside its connect */
  kill(sender, SIGTERM);
  usleep(200 * 1000);
  assert_int_equal(kill(f->proxy.pid, SIGCONT), 0);
  int st = th_wait_exit(sender, 30);
  char *out = th_read_file(log);
  print_message("SIGTERM while connecting: exit %d\n", st);
  if (st != 0)
    fail_msg("exit %d:\n%s", st, out);
  assert_non_null(strstr(out, "event=sender_stopped"));
  free(out);
  proxy_stop(&f->proxy);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_complete_cut_after_commit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_complete_many_cut_after_commit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_complete_many_cut_before_send, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_complete_claim_cut_after_commit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_complete_claim_cut_before_send,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_complete_cut_before_send, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cli_complete_cut_after_commit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_complete_retry_after_lease_lost,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_complete_gives_up_then_caller_retries, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fail_cut_after_commit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_batch_enqueue_cut_after_commit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_batch_enqueue_cut_before_send, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sender_record_cut_after_commit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_sender_record_cut_before_send, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sender_fences_itself, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sigterm_during_startup, setup,
                                      teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("ambiguous", tests, th_group_setup,
                                     th_group_teardown);
}
