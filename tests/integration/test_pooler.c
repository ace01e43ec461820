/*
 * test_pooler.c: claimer behind PgBouncer in transaction pooling mode.
 *
 * A pooler in transaction mode hands a client's next transaction to
 * whichever server session is free, so a statement prepared in one
 * transaction may be missing in the next (PgBouncer before 1.21, or
 * later ones with max_prepared_statements = 0; Debian 12 ships 1.18).
 * The library then sends its statements unnamed (claimer/conn.c,
 * loop_conn.c).  Each test starts a real pgbouncer (transaction mode, on a
 * unix socket of its own) in front of the harness's server, and forces the
 * move: a second client holds the server session the first one prepared
 * on in an open transaction, so the first one's next statement reaches a
 * new server session.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "claimer/claimer.h"
#include "harness.h"
#include "proc.h"

typedef struct bouncer {
  char dir[256];
  char dsn[1024];    /* through pgbouncer */
  char direct[1024]; /* the server itself */
  pid_t pid;
  pid_t worker; /* test_worker's `claimer work`, stopped by teardown */
} bouncer_t;

static const char *pgbouncer_bin(void) {
  const char *bin = getenv("PGBOUNCER_BIN");
  return bin ? bin : "/usr/sbin/pgbouncer";
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    fail_msg("cannot write %s", path);
  fputs(text, f);
  fclose(f);
}

/* Database db (migrated) and a pgbouncer in front of it. */
static void bouncer_start(bouncer_t *b, const char *db) {
  memset(b, 0, sizeof *b);
  assert_int_equal(th_db_create(&th_pg, db, 1, b->direct, sizeof b->direct), 0);
  snprintf(b->dir, sizeof b->dir, "/tmp/claimer-pooler-XXXXXX");
  if (mkdtemp(b->dir) == NULL)
    fail_msg("mkdtemp failed");
  char path[512], text[2048];
  snprintf(path, sizeof path, "%s/users.txt", b->dir);
  snprintf(text, sizeof text, "\"%s\" \"\"\n", th_pg.user);
  write_text(path, text);
  snprintf(path, sizeof path, "%s/pgbouncer.ini", b->dir);
  snprintf(text, sizeof text,
           "[databases]\n"
           "%s = host=127.0.0.1 port=%d dbname=%s\n"
           "[pgbouncer]\n"
           "listen_addr =\n"
           "listen_port = 6432\n"
           "unix_socket_dir = %s\n"
           "auth_type = trust\n"
           "auth_file = %s/users.txt\n"
           "pool_mode = transaction\n"
           "default_pool_size = 8\n"
           "max_client_conn = 50\n"
           "logfile = %s/pgbouncer.log\n"
           "pidfile = %s/pgbouncer.pid\n",
           db, th_pg.port, db, b->dir, b->dir, b->dir, b->dir);
  write_text(path, text);
  /* pgbouncer will not run as root: then as the user the harness runs
   * PostgreSQL as, owning the directory. */
  char user[64] = "";
  if (geteuid() == 0) {
    uid_t uid;
    gid_t gid;
    char err[512];
    if (cl__server_user(user, sizeof user, &uid, &gid, err, sizeof err) != 0)
      fail_msg("%s", err);
    if (chown(b->dir, uid, gid) != 0)
      fail_msg("chown %s failed", b->dir);
  }
  const char *argv[5];
  int k = 0;
  argv[k++] = pgbouncer_bin();
  if (user[0] != '\0') {
    argv[k++] = "-u";
    argv[k++] = user;
  }
  argv[k++] = path;
  argv[k] = NULL;
  char log[512];
  snprintf(log, sizeof log, "%s/stdout.log", b->dir);
  b->pid = th_spawn(argv, log);
  snprintf(b->dsn, sizeof b->dsn,
           "host=%s port=6432 dbname=%s user=%s connect_timeout=5", b->dir, db,
           th_pg.user);
  for (int i = 0; i < 100; i++) {
    PGconn *c = PQconnectdb(b->dsn);
    int ok = PQstatus(c) == CONNECTION_OK;
    PQfinish(c);
    if (ok)
      return;
    usleep(100 * 1000);
  }
  fail_msg("pgbouncer did not come up (see %s)", b->dir);
}

static void bouncer_stop(bouncer_t *b) {
  if (b->pid > 0) {
    kill(b->pid, SIGTERM);
    if (th_wait_exit(b->pid, 10) < 0) {
      kill(b->pid, SIGKILL);
      th_wait_exit(b->pid, 10);
    }
  }
  b->pid = 0;
}

/* Each test's pgbouncer, stopped after it whether it passed or not. */
static int setup(void **state) {
  bouncer_t *b = calloc(1, sizeof *b);
  *state = b;
  return b == NULL ? -1 : 0;
}

static int teardown(void **state) {
  bouncer_t *b = *state;
  if (b->worker > 0) {
    kill(b->worker, SIGKILL);
    th_wait_exit(b->worker, 10);
  }
  bouncer_stop(b);
  free(*state);
  return 0;
}

/* The server sessions pgbouncer holds (over TCP; the tests' own direct
 * connections use the unix socket). */
static long server_sessions(PGconn *direct, const char *db) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' "
           "AND client_addr IS NOT NULL",
           db);
  return th_long(direct, sql);
}

/* Holds every server session pgbouncer has open now, each in an open
 * transaction of its own client; returns how many (at most max). */
static int hold_sessions(const bouncer_t *b, PGconn *direct, const char *db,
                         PGconn **held, int max) {
  int n = (int)server_sessions(direct, db);
  if (n > max)
    n = max;
  for (int i = 0; i < n; i++) {
    held[i] = th_connect(b->dsn);
    th_exec(held[i], "BEGIN");
    th_exec(held[i], "SELECT 1");
  }
  return n;
}

static void release_sessions(PGconn **held, int n) {
  for (int i = 0; i < n; i++) {
    th_exec(held[i], "COMMIT");
    PQfinish(held[i]);
  }
}

static int enqueue_one(cl_conn_t *c, const char *id) {
  cl_item_t it = {.item_id = id, .queue = "q", .payload = "{}"};
  return cl_enqueue(c, &it, 1, NULL);
}

/* The blocking calls: the second enqueue reaches a server session that
 * never saw the first one's Parse; it runs all the same (unnamed), and so
 * does everything after, with the sessions held or not. */
static void test_blocking_calls(void **state) {
  bouncer_t *b = *state;
  bouncer_start(b, "pooler_blocking");
  PGconn *direct = th_connect(b->direct);
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, b->dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  assert_int_equal(enqueue_one(c, "i1"), 1);
  PGconn *held[8];
  int nheld = hold_sessions(b, direct, "pooler_blocking", held, 8);
  assert_true(nheld >= 1);
  int rc = enqueue_one(c, "i2");
  if (rc != 1)
    fail_msg("enqueue behind the pooler: %d (%s)", rc, cl_conn_last_error(c));
  release_sessions(held, nheld);
  for (int i = 0; i < 2; i++) {
    cl_lease_t *l = NULL;
    size_t got = 0;
    assert_int_equal(cl_claim(c, "q", "w", 1, 30, &l, &got), 0);
    assert_int_equal(got, 1);
    nheld = hold_sessions(b, direct, "pooler_blocking", held, 8);
    assert_int_equal(cl_complete(c, l[0].item_id, l[0].token, "{}", NULL), 0);
    release_sessions(held, nheld);
    cl_leases_free(l, got);
  }
  assert_int_equal(th_long(direct, "SELECT count(*) FROM claimer.items "
                                   "WHERE state = 'done'"),
                   2);
  cl_conn_free(&c);
  PQfinish(direct);
}

/* The worker daemon (its event loop's pipelined connection): after its
 * first item, the server sessions it prepared on are held; the items
 * enqueued then are done all the same, each once, and its log says why it
 * reconnected. */
static void test_worker(void **state) {
  bouncer_t *b = *state;
  bouncer_start(b, "pooler_worker");
  PGconn *direct = th_connect(b->direct);
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, b->direct), 0);
  assert_int_equal(enqueue_one(c, "first"), 1);
  char log[512];
  snprintf(log, sizeof log, "%s/worker.log", b->dir);
  const char *wargv[40];
  int n = th_wrap(wargv, 16); /* valgrind, when CLAIMER_TEST_WRAP says so */
  const char *args[] = {th_claimer_bin(),
                        "work",
                        "--dsn",
                        b->dsn,
                        "--name",
                        "pooled",
                        "-q",
                        "q",
                        "--poll",
                        "100ms",
                        "--log-level",
                        "info",
                        "--exec",
                        "cat >/dev/null; echo '{}'",
                        NULL};
  for (size_t i = 0; i < sizeof args / sizeof args[0]; i++)
    wargv[n++] = args[i];
  pid_t w = th_spawn(wargv, log);
  b->worker = w;
  double t0 = th_now();
  while (th_long(direct, "SELECT count(*) FROM claimer.items WHERE state = "
                         "'done'") < 1 &&
         th_now() - t0 < 30)
    usleep(50 * 1000);
  assert_int_equal(th_long(direct, "SELECT count(*) FROM claimer.items WHERE "
                                   "state = 'done'"),
                   1);
  PGconn *held[8];
  int nheld = hold_sessions(b, direct, "pooler_worker", held, 8);
  assert_true(nheld >= 1);
  char id[32];
  for (int i = 0; i < 20; i++) {
    snprintf(id, sizeof id, "later-%d", i);
    assert_int_equal(enqueue_one(c, id), 1);
  }
  t0 = th_now();
  while (th_long(direct, "SELECT count(*) FROM claimer.items WHERE state = "
                         "'done'") < 21 &&
         th_now() - t0 < 60)
    usleep(100 * 1000);
  long done = th_long(direct, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'done'");
  release_sessions(held, nheld);
  kill(w, SIGTERM);
  th_wait_exit(w, 30);
  b->worker = 0;
  char *text = th_read_file(log);
  if (done != 21)
    fail_msg("done %ld of 21 behind the pooler; worker log:\n%s", done,
             text ? text : "");
  assert_non_null(strstr(text, "a pooler moved this session"));
  free(text);
  assert_int_equal(th_long(direct, "SELECT count(*) FROM claimer.results"), 21);
  cl_conn_free(&c);
  PQfinish(direct);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_blocking_calls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_worker, setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("pooler", tests, th_group_setup,
                                     th_group_teardown);
}
