/*
 * test_send_config.c: subscribers declared in the config file, as real
 * processes against a real PostgreSQL.  One `claimer send --config F
 * --once` serves two subscribers, each with its own sink (a command that
 * appends to a file, and a pg sink into a target database), and each gets
 * every result once; the policies of the file are what the database
 * holds; an edited file synced with `claimer subscriber sync --config F`
 * changes the policies and keeps the cursors; and a bad config (an
 * unknown key, a bad enum, two sinks, a missing or readable secret file,
 * a statement that does not prepare) exits 2 with its file:line:col and
 * leaves claimer.subscribers exactly as it was, also when the file
 * declares a new subscriber before the fault.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "harness.h"

typedef struct fx {
  char dsn[1024];
  char dir[600];
  char cfg[700]; /* the config file */
  cl_conn_t *c;
  PGconn *pg;
} fx_t;

static int setup(void **state) {
  static int n;
  fx_t *fx = calloc(1, sizeof *fx);
  char db[32];
  snprintf(db, sizeof db, "send_config_%d", ++n);
  if (fx == NULL || th_db_create(&th_pg, db, 1, fx->dsn, sizeof fx->dsn) != 0)
    return -1;
  snprintf(fx->dir, sizeof fx->dir, "%s/%s", th_pg.dir, db);
  snprintf(fx->cfg, sizeof fx->cfg, "%s/claimer.yaml", fx->dir);
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

/* n items of queue q, each with a result. */
static void results(fx_t *fx, const char *prefix, int n) {
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
}

/* Writes the config file: the printf-style text fmt. */
__attribute__((format(printf, 2, 3))) static void
write_config(fx_t *fx, const char *fmt, ...) {
  FILE *f = fopen(fx->cfg, "w");
  assert_non_null(f);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fclose(f);
}

/* Runs `claimer CMD... --config F --dsn DSN` (under valgrind when
 * CLAIMER_TEST_WRAP says so), CMD... ending with NULL. */
static int run_claimer(fx_t *fx, char **out, ...) {
  const char *argv[40];
  int n = th_wrap(argv, 16);
  argv[n++] = th_claimer_bin();
  va_list ap;
  va_start(ap, out);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 34;)
    argv[n++] = a;
  va_end(ap);
  argv[n++] = "--config";
  argv[n++] = fx->cfg;
  argv[n++] = "--dsn";
  argv[n++] = fx->dsn;
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

/* The whole of claimer.subscribers, one row a line, every column. */
static char *snapshot(fx_t *fx) {
  PGresult *r = PQexec(fx->pg, "SELECT coalesce(string_agg(to_jsonb(s)::text, "
                               "E'\\n' ORDER BY subscriber), '') FROM "
                               "claimer.subscribers s");
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  char *s = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  return s;
}

/* The line of `claimer subscriber list --json` for name (malloc'd). */
static char *list_json(fx_t *fx, const char *name) {
  const char *argv[] = {th_claimer_bin(), "subscriber", "list", "--json",
                        "--dsn",          fx->dsn,      NULL};
  char *out = NULL, want[96];
  assert_int_equal(th_run(argv, NULL, &out), 0);
  snprintf(want, sizeof want, "{\"subscriber\":\"%s\"", name);
  char *line = strstr(out, want);
  if (line == NULL)
    fail_msg("no %s in:\n%s", name, out);
  char *s = strndup(line, strcspn(line, "\n"));
  free(out);
  return s;
}

#define assert_contains(what, hay, needle)                                     \
  do {                                                                         \
    if (strstr((hay), (needle)) == NULL)                                       \
      fail_msg("%s: \"%s\" not in:\n%s", (what), (needle), (hay));             \
  } while (0)

/* The two sinks' config: mail (a command appending the subscriber and
 * the key to DIR/effects) and audit (a pg sink into target).  The
 * policies that vary between the tests' versions are given. */
static void write_two(fx_t *fx, const char *target, const char *mail_policy,
                      const char *audit_policy) {
  write_config(
      fx,
      "subscribers:\n"
      "  mail:\n"
      "    queues: [q]\n"
      "%s"
      "    sink:\n"
      "      exec: 'echo \"$CLAIMER_SUBSCRIBER "
      "$CLAIMER_IDEMPOTENCY_KEY\" >> %s/effects'\n"
      "      timeout: 5s\n"
      "  audit:\n"
      "    from: beginning\n"
      "%s"
      "    sink:\n"
      "      pg:\n"
      "        target: \"%s\"\n"
      "        sql: INSERT INTO audit (item_id, key) VALUES ($1, $5)\n",
      mail_policy, fx->dir, audit_policy, target);
}

/* Runs send --config --once until a run sends nothing (at most 4 runs);
 * returns the deliveries sent in all. */
static long send_until_idle(fx_t *fx) {
  long total = 0;
  for (int run = 0; run < 4; run++) {
    char *out = NULL;
    int rc = run_claimer(fx, &out, "send", "--once", NULL);
    if (rc != 0)
      fail_msg("send --config --once exited %d:\n%s", rc, out);
    const char *sent = strstr(out, "sent ");
    assert_non_null(sent);
    long n = atol(sent + 5);
    print_message("run %d: sent %ld\n", run + 1, n);
    free(out);
    total += n;
    if (n == 0)
      break;
  }
  return total;
}

static void test_two_sinks_one_process(void **state) {
  fx_t *fx = *state;
  results(fx, "a", 10);
  char target[1024], *out = NULL, path[700];
  assert_int_equal(
      th_db_create(&th_pg, "send_config_target", 0, target, sizeof target), 0);
  PGconn *t = th_connect(target);
  th_exec(t, "CREATE TABLE audit (item_id text, key text)");
  const char *setup_argv[] = {th_claimer_bin(), "sink-setup", "--target",
                              target, NULL};
  assert_int_equal(th_run(setup_argv, NULL, &out), 0);
  free(out);
  write_two(fx, target,
            "    from: beginning\n"
            "    in_doubt: hold\n"
            "    max_attempts: 4\n"
            "    concurrency: 3\n"
            "    rate: 1000\n",
            "    break_after: 0\n"
            "    rate: 0.5\n");

  /* One process, two senders, two sinks: each subscriber every result. */
  int rc = run_claimer(fx, &out, "send", "--once", NULL);
  print_message("%s", out);
  assert_int_equal(rc, 0);
  assert_contains("send", out, "subscriber mail: created (from position 0)\n");
  assert_contains("send", out, "subscriber audit: created (from position 0)\n");
  assert_contains("send", out, "sent 20, retry 0, dead 0");
  assert_contains("send", out, "pg sink: 0 repeats skipped by the inbox");
  free(out);
  snprintf(path, sizeof path, "%s/effects", fx->dir);
  char *eff = th_read_file(path);
  assert_int_equal(th_count(eff, "\n"), 10);
  assert_int_equal(th_count(eff, "mail clm_"), 10);
  free(eff);
  assert_int_equal(th_long(t, "SELECT count(*) FROM audit"), 10);
  assert_int_equal(th_long(t, "SELECT count(DISTINCT key) FROM audit"), 10);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   20);
  /* Each pg row carries a key of audit's deliveries: each sink got its
   * own subscriber's. */
  PGresult *r = PQexec(fx->pg, "SELECT string_agg(quote_literal("
                               "idempotency_key), ',') FROM "
                               "claimer.deliveries WHERE subscriber = 'audit' "
                               "AND state = 'sent'");
  char sql[4096];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM audit WHERE key IN (%s)",
           PQgetvalue(r, 0, 0));
  PQclear(r);
  assert_int_equal(th_long(t, sql), 10);

  /* The file's policies are the database's. */
  char *m = list_json(fx, "mail"), *a = list_json(fx, "audit");
  print_message("%s\n%s\n", m, a);
  assert_contains("mail", m, "\"queues\":\"q\"");
  assert_contains("mail", m, "\"in_doubt\":\"hold\"");
  assert_contains("mail", m, "\"concurrency\":3,\"rate\":1000,");
  assert_contains("mail", m, "\"ordering\":\"none\"");
  assert_contains("mail", m, "\"sent\":10");
  assert_contains("audit", a, "\"queues\":\"\"");
  assert_contains("audit", a, "\"in_doubt\":\"retry\"");
  assert_contains("audit", a, "\"rate\":0.5,");
  assert_contains("audit", a, "\"sent\":10");
  assert_contains("mail", m, "\"max_attempts\":4,");
  assert_contains("audit", a, "\"break_after\":0,");
  free(m);
  free(a);
  /* And in the table. */
  assert_int_equal(th_long(fx->pg, "SELECT max_attempts FROM "
                                   "claimer.subscribers WHERE subscriber = "
                                   "'mail'"),
                   4);
  assert_int_equal(th_long(fx->pg, "SELECT break_after FROM "
                                   "claimer.subscribers WHERE subscriber = "
                                   "'audit'"),
                   0);
  long mail_cursor = th_long(fx->pg, "SELECT cursor_pos FROM "
                                     "claimer.subscribers WHERE subscriber = "
                                     "'mail'");

  /* The file edited and synced: the policies follow, the cursors stay
   * (from: only counts at creation, so "now" changes nothing). */
  write_two(fx, target,
            "    from: now\n"
            "    max_attempts: 7\n"
            "    concurrency: 5\n"
            "    ordering: fifo\n",
            "    concurrency: 2\n");
  rc = run_claimer(fx, &out, "subscriber", "sync", NULL);
  print_message("%s", out);
  assert_int_equal(rc, 0);
  assert_string_equal(out, "subscriber mail: policy updated\n"
                           "subscriber audit: policy updated\n");
  free(out);
  m = list_json(fx, "mail");
  a = list_json(fx, "audit");
  print_message("%s\n%s\n", m, a);
  assert_contains("mail", m, "\"in_doubt\":\"retry\"");
  assert_contains("mail", m, "\"concurrency\":5,\"rate\":0,");
  assert_contains("mail", m, "\"ordering\":\"fifo\"");
  assert_contains("mail", m, "\"sent\":10");
  assert_contains("audit", a, "\"concurrency\":2,\"rate\":0,");
  assert_contains("audit", a, "\"sent\":10");
  free(m);
  free(a);
  assert_int_equal(th_long(fx->pg, "SELECT max_attempts FROM "
                                   "claimer.subscribers WHERE subscriber = "
                                   "'mail'"),
                   7);
  assert_int_equal(th_long(fx->pg, "SELECT break_after FROM "
                                   "claimer.subscribers WHERE subscriber = "
                                   "'audit'"),
                   100);
  assert_int_equal(th_long(fx->pg, "SELECT cursor_pos FROM "
                                   "claimer.subscribers WHERE subscriber = "
                                   "'mail'"),
                   mail_cursor);

  /* New results: sent once each, the first ten never again. */
  results(fx, "b", 5);
  assert_int_equal(send_until_idle(fx), 10);
  eff = th_read_file(path);
  assert_int_equal(th_count(eff, "mail clm_"), 15);
  free(eff);
  assert_int_equal(th_long(t, "SELECT count(*) FROM audit"), 15);
  assert_int_equal(th_long(t, "SELECT count(DISTINCT key) FROM audit"), 15);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   30);
  PQfinish(t);
}

/* Writes a config whose fault is in fault (the text of the hooks
 * subscriber's record, or of a second sink), after a new subscriber
 * "fresh" and a changed policy for "mail", so that a sync that ran before
 * the check would show in the table. */
static void write_bad(fx_t *fx, const char *fault) {
  write_config(fx,
               "subscribers:\n"
               "  fresh:\n"
               "    sink: {exec: \"true\"}\n"
               "  mail:\n"
               "    max_attempts: 9\n"
               "    sink: {exec: \"true\"}\n"
               "  hooks:\n"
               "%s",
               fault);
}

/* Both commands refuse the file with exit 2 and a message that starts
 * with want (after the program's name); the table is as it was. */
static void expect_refused(fx_t *fx, const char *before, const char *want) {
  static const char *const cmds[][2] = {{"send", "--once"},
                                        {"subscriber", "sync"}};
  for (size_t i = 0; i < 2; i++) {
    char *out = NULL, line[2048];
    int rc = run_claimer(fx, &out, cmds[i][0], cmds[i][1], NULL);
    snprintf(line, sizeof line, "claimer %s: %s", cmds[i][0], want);
    if (rc != 2 || strncmp(out, line, strlen(line)) != 0)
      fail_msg("%s %s exited %d:\n%s\nwanted it to start with:\n%s", cmds[i][0],
               cmds[i][1], rc, out, line);
    free(out);
    char *after = snapshot(fx);
    assert_string_equal(after, before);
    free(after);
  }
}

static void test_bad_config_changes_nothing(void **state) {
  fx_t *fx = *state;
  char *out = NULL, want[2048], secret[700], target[1024];
  write_config(fx, "subscribers:\n  mail:\n    sink: {exec: \"true\"}\n");
  assert_int_equal(run_claimer(fx, &out, "subscriber", "sync", NULL), 0);
  assert_string_equal(out, "subscriber mail: created (from position 1)\n");
  free(out);
  char *before = snapshot(fx);
  print_message("claimer.subscribers:\n%s\n", before);

  /* An unknown key. */
  write_bad(fx, "    sink: {exec: \"true\"}\n"
                "    max_attempt: 3\n");
  snprintf(want, sizeof want,
           "%s:9:5: unknown key \"max_attempt\" in subscribers.hooks (did you "
           "mean \"max_attempts\"?)\n",
           fx->cfg);
  expect_refused(fx, before, want);
  /* A bad enum. */
  write_bad(fx, "    in_doubt: maybe\n"
                "    sink: {exec: \"true\"}\n");
  snprintf(want, sizeof want,
           "%s:8:15: subscribers.hooks.in_doubt: expected one of retry, hold, "
           "got \"maybe\"\n",
           fx->cfg);
  expect_refused(fx, before, want);
  /* Two sinks. */
  write_bad(fx, "    sink:\n"
                "      exec: \"true\"\n"
                "      pg: {target: \"dbname=x\", sql: \"SELECT 1\"}\n");
  snprintf(want, sizeof want,
           "%s:10:7: subscribers.hooks.sink: both exec and pg (a sink is "
           "exactly one of exec, webhook or pg)\n",
           fx->cfg);
  expect_refused(fx, before, want);
  /* A secret file that is not there: found by the sender's own check,
   * still before anything is written. */
  snprintf(secret, sizeof secret, "%s/hook.secret", fx->dir);
  char fault[1200];
  snprintf(fault, sizeof fault,
           "    sink:\n"
           "      webhook: http://127.0.0.1:9/in\n"
           "      secret_file: %s\n",
           secret);
  write_bad(fx, fault);
  snprintf(want, sizeof want,
           "%s:10:20: subscribers.hooks.sink.secret_file %s: No such file or "
           "directory\n",
           fx->cfg, secret);
  expect_refused(fx, before, want);
  /* One that others may read. */
  FILE *f = fopen(secret, "w");
  assert_non_null(f);
  fputs("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", f);
  fclose(f);
  chmod(secret, 0644);
  snprintf(want, sizeof want,
           "%s:10:20: subscribers.hooks.sink.secret_file %s: must be a "
           "regular file readable by its owner only (chmod 600)\n",
           fx->cfg, secret);
  expect_refused(fx, before, want);
  /* A pg statement that does not prepare in its target. */
  assert_int_equal(
      th_db_create(&th_pg, "send_config_bad_target", 0, target, sizeof target),
      0);
  const char *setup_argv[] = {th_claimer_bin(), "sink-setup", "--target",
                              target, NULL};
  assert_int_equal(th_run(setup_argv, NULL, &out), 0);
  free(out);
  snprintf(fault, sizeof fault,
           "    sink:\n"
           "      pg: {target: \"%s\", sql: \"INSRT INTO audit\"}\n",
           target);
  write_bad(fx, fault);
  snprintf(want, sizeof want,
           "%s:9:%zu: subscribers.hooks.sink.pg.sql: pg sink: the statement "
           "does not prepare: ERROR:  syntax error at or near \"INSRT\"",
           fx->cfg,
           strlen("      pg: {target: \"\", sql: ") + strlen(target) + 1);
  expect_refused(fx, before, want);
  free(before);
}

/* With --config: --subscriber picks among the declared (an undeclared one
 * is named, exit 2), the sink flags are refused, and a file without
 * subscribers has nothing to send. */
static void test_config_usage(void **state) {
  fx_t *fx = *state;
  char *out = NULL;
  write_config(fx, "subscribers:\n  mail:\n    sink: {exec: \"true\"}\n");
  assert_int_equal(
      run_claimer(fx, &out, "send", "--once", "--subscriber", "nobody", NULL),
      2);
  assert_contains("undeclared", out, "--subscriber nobody: not declared in");
  free(out);
  assert_int_equal(run_claimer(fx, &out, "send", "--exec", "true", NULL), 2);
  assert_contains("sink flag", out,
                  "--exec: the sinks come from the config file with --config");
  free(out);
  assert_int_equal(run_claimer(fx, &out, "subscriber", "sync", "--once", NULL),
                   2);
  assert_contains("sync --once", out,
                  "--once does not go with subscriber sync");
  free(out);
  write_config(fx, "worker:\n  concurrency: 2\n");
  assert_int_equal(run_claimer(fx, &out, "send", "--once", NULL), 2);
  assert_contains("none declared", out, "declares no subscribers");
  free(out);
  char *rows = snapshot(fx);
  assert_string_equal(rows, "");
  free(rows);
  /* Served alone, a declared one is created and gets what it is owed. */
  write_config(fx, "subscribers:\n"
                   "  mail:\n"
                   "    from: beginning\n"
                   "    sink: {exec: \"true\"}\n"
                   "  other:\n"
                   "    sink: {exec: \"false\"}\n");
  results(fx, "u", 2);
  assert_int_equal(
      run_claimer(fx, &out, "send", "--once", "--subscriber", "mail", NULL), 0);
  print_message("%s", out);
  assert_contains("one of two", out, "subscriber mail: created");
  assert_contains("one of two", out, "sent 2, retry 0");
  if (strstr(out, "subscriber other") != NULL)
    fail_msg("other was synced:\n%s", out);
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.subscribers"),
                   1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_two_sinks_one_process, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bad_config_changes_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_config_usage, setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("send_config", tests, th_group_setup,
                                     th_group_teardown);
}
