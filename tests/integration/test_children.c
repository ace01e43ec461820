/*
 * test_children.c: what the children claimer starts get.  An exec handler
 * of `claimer work` and an exec hook of `claimer reap`, started with the
 * database's credentials in the daemon's environment (CLAIMER_DSN with a
 * password, PGPASSWORD, PGPASSFILE, PGSERVICEFILE, PGSSLKEY), see none of
 * them; and a handler command of several lines runs every line, as
 * `sh -c` does.
 */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer.h"
#include "harness.h"

#define PASSWORD "right-password"

static char tmpdir[] = "/tmp/claimer-children-XXXXXX";

/* Every daemon started, so that none outlives a failed test. */
static pid_t started[16];
static int nstarted;

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

static void kill_leftovers(void) {
  for (int i = 0; i < nstarted; i++)
    if (started[i] > 0 && kill(started[i], 0) == 0) {
      kill(-started[i], SIGKILL);
      waitpid(started[i], NULL, 0);
    }
  nstarted = 0;
}

static int group_setup(void **state) {
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  return th_group_setup(state);
}

static int group_teardown(void **state) {
  kill_leftovers();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", tmpdir);
  return th_group_teardown(state);
}

/* Skips the test when the harness runs no server of its own (the password
 * role claimer_pw is the harness's). */
static void need_own_server(void) {
  if (!th_pg.own) {
    print_message("skipped: needs the harness's own PostgreSQL (its "
                  "claimer_pw role); CLAIMER_TEST_DSN is set\n");
    skip();
  }
}

/* Makes database name and writes into dsn a TCP DSN for it that logs in as
 * claimer_pw with its password. */
static void password_dsn(const char *name, char *dsn, size_t n) {
  char sock[1024], tcp[1024];
  assert_int_equal(th_db_create(&th_pg, name, 1, sock, sizeof sock), 0);
  assert_int_equal(th_db_tcp_dsn(&th_pg, name, 0, tcp, sizeof tcp), 0);
  snprintf(dsn, n, "%s user=claimer_pw password=" PASSWORD, tcp);
}

/* The unix-socket DSN of database name, made afresh. */
static void plain_dsn(const char *name, char *dsn, size_t n) {
  assert_int_equal(th_db_create(&th_pg, name, 1, dsn, n), 0);
}

/* Starts `claimer ARGS...` (NULL-terminated) as a daemon, its output in
 * tmpdir/LOG.log. */
static pid_t start(const char *log, const char *const *args) {
  const char *argv[40];
  int n = th_wrap(argv, 8);
  argv[n++] = th_claimer_bin();
  for (; *args && n < 38; args++)
    argv[n++] = *args;
  argv[n] = NULL;
  char path[256];
  snprintf(path, sizeof path, "%s/%s.log", tmpdir, log);
  pid_t pid = th_spawn(argv, path);
  if (nstarted < 16)
    started[nstarted++] = pid;
  return pid;
}

static char *read_log(const char *log) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s.log", tmpdir, log);
  return th_read_file(path);
}

/* SIGTERMs the daemon and waits for it. */
static void stop(pid_t pid) {
  kill(pid, SIGTERM);
  if (th_wait_exit(pid, 60) < 0) {
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  for (int i = 0; i < nstarted; i++)
    if (started[i] == pid)
      started[i] = 0;
}

static void assert_contains(const char *what, const char *s,
                            const char *want) {
  if (s == NULL)
    fail_msg("%s: no output", what);
  else if (strstr(s, want) == NULL)
    fail_msg("%s lacks \"%s\":\n%s", what, want, s);
}

static void assert_lacks(const char *what, const char *s,
                         const char *unwanted) {
  if (s == NULL)
    fail_msg("%s: no output", what);
  else if (strstr(s, unwanted) != NULL)
    fail_msg("%s shows \"%s\":\n%s", what, unwanted, s);
}

/* Runs `claimer ARGS...` to completion; output in *out (caller frees). */
__attribute__((sentinel)) static int run(char **out, ...) {
  const char *argv[40];
  int n = 0;
  argv[n++] = th_claimer_bin();
  va_list ap;
  va_start(ap, out);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && n < 39)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

/* ------------------------------------------------------------------------ */
/* The children's environment                                                */

/* The variables no child may see, set in the daemons' environment. */
static void plant_credentials(const char *dsn) {
  setenv("CLAIMER_DSN", dsn, 1);
  setenv("PGPASSWORD", "pgpassword-Planted", 1);
  setenv("PGPASSFILE", "/tmp/pgpassfile-Planted", 1);
  setenv("PGSERVICEFILE", "/tmp/pgservicefile-Planted", 1);
  setenv("PGSSLKEY", "/tmp/pgsslkey-Planted", 1);
}

static void unplant_credentials(void) {
  unsetenv("CLAIMER_DSN");
  unsetenv("PGPASSWORD");
  unsetenv("PGPASSFILE");
  unsetenv("PGSERVICEFILE");
  unsetenv("PGSSLKEY");
}

static void assert_env_clean(const char *what, const char *env) {
  if (env[0] == '\0')
    fail_msg("%s: the environment dump is empty", what);
  static const char *const unwanted[] = {
      PASSWORD,        "pgpassword-Planted", "CLAIMER_DSN=",
      "PGPASSWORD=",   "PGPASSFILE=",        "PGSERVICEFILE=",
      "PGSSLKEY=",     "Planted",            NULL};
  for (int i = 0; unwanted[i]; i++)
    assert_lacks(what, env, unwanted[i]);
  /* The rest of the environment is still there. */
  assert_contains(what, env, "PATH=");
}

/* An exec handler of `claimer work` whose worker has CLAIMER_DSN (with a
 * password), PGPASSWORD and the credential file variables: its `env`
 * shows none of them, and has the job's variables. */
static void test_handler_env(void **state) {
  (void)state;
  need_own_server();
  char dsn[1200], cmd[400], dump[300];
  password_dsn("sec_env", dsn, sizeof dsn);
  snprintf(dump, sizeof dump, "%s/handler.env", tmpdir);
  snprintf(cmd, sizeof cmd, "env > %s", dump);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, payload) VALUES "
             "('env-1', 'env', '{}')");
  plant_credentials(dsn);
  const char *args[] = {"work", "--name", "env-w", "-q", "env", "--exec",
                        cmd, NULL};
  pid_t w = start("env-w", args);
  unplant_credentials();
  double end = th_now() + 30;
  while (th_long(p, "SELECT count(*) FROM claimer.items WHERE state = "
                    "'done'") < 1 &&
         th_now() < end)
    sleep_s(0.05);
  if (th_long(p, "SELECT count(*) FROM claimer.items WHERE state = 'done'") !=
      1) {
    char *log = read_log("env-w");
    fprintf(stderr, "---- env-w.log ----\n%s\n", log);
    free(log);
    fail_msg("the item was not done");
  }
  stop(w);
  char *env = th_read_file(dump);
  assert_env_clean("the handler's environment", env);
  assert_contains("the handler's environment", env, "CLAIMER_ITEM_ID=env-1");
  free(env);
  PQfinish(p);
}

/* The reaper's exec hook, alike: an expired lease raises lease_expired,
 * the hook dumps its environment. */
static void test_hook_env(void **state) {
  (void)state;
  need_own_server();
  char dsn[1200], cmd[400], dump[300];
  password_dsn("sec_hook_env", dsn, sizeof dsn);
  snprintf(dump, sizeof dump, "%s/hook.env", tmpdir);
  snprintf(cmd, sizeof cmd, "env > %s", dump);
  char *out = NULL;
  assert_int_equal(run(&out, "enqueue", "--dsn", dsn, "-q", "h", "--id",
                       "hook-1", NULL),
                   0);
  free(out);
  assert_int_equal(run(&out, "claim", "--dsn", dsn, "-q", "h", NULL), 0);
  free(out);
  PGconn *p = th_connect(dsn);
  th_exec(p, "UPDATE claimer.claims SET lease_until = now() - "
             "interval '1 minute'");
  plant_credentials(dsn);
  const char *args[] = {"reap", "--once", "--hook-exec", cmd, NULL};
  pid_t r = start("hook-env", args);
  unplant_credentials();
  int st = th_wait_exit(r, 60);
  if (st != 4) {
    char *log = read_log("hook-env");
    fprintf(stderr, "---- hook-env.log ----\n%s\n", log);
    free(log);
    fail_msg("reap --once exited %d, expected 4 (new alerts)", st);
  }
  char *env = th_read_file(dump);
  assert_env_clean("the hook's environment", env);
  assert_contains("the hook's environment", env, "CLAIMER_ALERT_KIND=");
  free(env);
  PQfinish(p);
}

/* A handler command of two lines runs both. */
static void test_multiline_exec(void **state) {
  (void)state;
  char dsn[1024], cmd[700], one[300], two[300];
  plain_dsn("sec_lines", dsn, sizeof dsn);
  snprintf(one, sizeof one, "%s/line-one", tmpdir);
  snprintf(two, sizeof two, "%s/line-two", tmpdir);
  snprintf(cmd, sizeof cmd, "echo first > %s\necho second > %s", one, two);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, payload) VALUES "
             "('lines-1', 'lines', '{}')");
  const char *args[] = {"work", "--dsn", dsn, "--name", "lines-w", "-q",
                        "lines", "--exec", cmd, NULL};
  pid_t w = start("lines-w", args);
  double end = th_now() + 30;
  while (th_long(p, "SELECT count(*) FROM claimer.items WHERE state = "
                    "'done'") < 1 &&
         th_now() < end && th_wait_exit(w, 0.05) < 0)
    ;
  char *log = read_log("lines-w");
  if (th_long(p, "SELECT count(*) FROM claimer.items WHERE state = 'done'") !=
      1)
    fail_msg("the two-line command did not complete the item:\n%s", log);
  free(log);
  stop(w);
  char *a = th_read_file(one), *b = th_read_file(two);
  assert_string_equal(a, "first\n");
  assert_string_equal(b, "second\n");
  free(a);
  free(b);
  PQfinish(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handler_env),
      cmocka_unit_test(test_hook_env),
      cmocka_unit_test(test_multiline_exec),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("children", tests, group_setup,
                                     group_teardown);
}
