/*
 * test_secrets.c: where claimer's secrets may and may not show.  A running
 * `claimer work` or `claimer reap` given a password in --dsn, or a hook
 * URL with credentials and a token, shows none of them to `ps` or in
 * /proc/PID/cmdline; --dsn-file takes a DSN from a file that only its
 * owner may read, on every command, whose --help says where else a DSN
 * and a password can come from; and `config check` takes --dsn and
 * --dsn-file and shows the DSN redacted.  The children claimer starts
 * (an exec handler of `claimer work`, an exec hook of `claimer reap`),
 * with the database's credentials in the daemon's environment
 * (CLAIMER_DSN with a password, PGPASSWORD, PGPASSFILE, PGSERVICEFILE,
 * PGSSLKEY), see none of them; and a handler command of several lines
 * runs every line, as `sh -c` does.
 *
 * The daemons log in in as the harness's role claimer_pw, whose password
 * the server really checks (scram-sha-256 over TCP), so a scrubbed
 * password that still worked would show as a connected worker.
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

#include "claimer/claimer.h"
#include "harness.h"

#define PASSWORD "right-password"

static char tmpdir[] = "/tmp/claimer-secrets-XXXXXX";

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

/* Waits up to timeout_s for needle in the daemon's log; fails the test,
 * printing the log, when it does not come. */
static void wait_log(const char *log, const char *needle, double timeout_s) {
  double end = th_now() + timeout_s;
  for (;;) {
    char *s = read_log(log);
    int found = strstr(s, needle) != NULL;
    if (found) {
      free(s);
      return;
    }
    if (th_now() > end) {
      fprintf(stderr, "---- %s.log ----\n%s\n", log, s);
      free(s);
      fail_msg("no \"%s\" in %s.log after %.0f s", needle, log, timeout_s);
    }
    free(s);
    sleep_s(0.05);
  }
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

/* /proc/PID/cmdline with its NULs turned into spaces (malloc'd). */
static char *proc_cmdline(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    fail_msg("open %s: %s", path, strerror(errno));
  char *buf = malloc(65536);
  size_t len = 0;
  ssize_t got;
  while (len < 65535 && (got = read(fd, buf + len, 65535 - len)) > 0)
    len += (size_t)got;
  close(fd);
  for (size_t i = 0; i < len; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  buf[len] = '\0';
  return buf;
}

/* What `ps -o args= -p PID` prints (malloc'd). */
static char *ps_args(pid_t pid) {
  char pidtext[32];
  snprintf(pidtext, sizeof pidtext, "%ld", (long)pid);
  const char *argv[] = {"/bin/ps", "-ww", "-o", "args=", "-p", pidtext, NULL};
  if (access(argv[0], X_OK) != 0)
    argv[0] = "/usr/bin/ps";
  char *out = NULL;
  int ex = th_run(argv, NULL, &out);
  if (ex != 0)
    fail_msg("ps exited %d: %s", ex, out);
  return out;
}

static void assert_contains(const char *what, const char *s, const char *want) {
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

/* Asserts that neither ps nor /proc/PID/cmdline of pid shows any of the
 * NULL-terminated secrets, and that both show "***". */
static void assert_title_clean(pid_t pid, const char *const *secrets) {
  char *ps = ps_args(pid);
  char *cmd = proc_cmdline(pid);
  for (; *secrets; secrets++) {
    assert_lacks("ps -o args", ps, *secrets);
    assert_lacks("/proc/PID/cmdline", cmd, *secrets);
  }
  assert_contains("ps -o args", ps, "***");
  free(ps);
  free(cmd);
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

/* Writes text into tmpdir/name with mode; writes the path into path. */
static void write_secret_file(const char *name, const char *text, mode_t mode,
                              char *path, size_t n) {
  snprintf(path, n, "%s/%s", tmpdir, name);
  unlink(path);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  assert_int_equal(chmod(path, mode), 0);
}

/* ------------------------------------------------------------------------ */
/* The process title                                                         */

/* `claimer work` with the password in a key=value --dsn, and another with
 * it in a URI (user:password@ and ?password=): ps shows neither, and both
 * workers did connect with it. */
static void test_work_title(void **state) {
  (void)state;
  need_own_server();
  char dsn[1200], uri[1200];
  password_dsn("sec_title", dsn, sizeof dsn);
  const char *kv_args[] = {"work", "--dsn", dsn,      "--name", "title-kv",
                           "-q",   "t",     "--exec", "cat",    NULL};
  pid_t a = start("title-kv", kv_args);
  snprintf(uri, sizeof uri,
           "postgresql://claimer_pw:" PASSWORD "@127.0.0.1:%d/sec_title"
           "?password=" PASSWORD "&application_name=sec",
           th_pg.port);
  char uri_opt[1300];
  snprintf(uri_opt, sizeof uri_opt, "--dsn=%s", uri);
  const char *uri_args[] = {"work", uri_opt,  "--name", "title-uri", "-q",
                            "t",    "--exec", "cat",    NULL};
  pid_t b = start("title-uri", uri_args);
  wait_log("title-kv", "worker_started", 30);
  wait_log("title-uri", "worker_started", 30);
  PGconn *p = th_connect(dsn);
  double end = th_now() + 30;
  while (th_long(p, "SELECT count(*) FROM claimer.workers") < 2 &&
         th_now() < end)
    sleep_s(0.05);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.workers"), 2);
  PQfinish(p);
  const char *secrets[] = {PASSWORD, NULL};
  assert_title_clean(a, secrets);
  assert_title_clean(b, secrets);
  /* What is not secret stays readable. */
  char *ps = ps_args(b);
  assert_contains("ps -o args", ps, "claimer_pw:***@127.0.0.1");
  assert_contains("ps -o args", ps, "application_name=sec");
  free(ps);
  stop(a);
  stop(b);
}

/* `claimer reap` with a password in --dsn and a hook URL with userinfo
 * and a token: ps shows none of the three. */
static void test_reap_title(void **state) {
  (void)state;
  need_own_server();
  char dsn[1200];
  password_dsn("sec_reap_title", dsn, sizeof dsn);
  const char *args[] = {
      "reap",
      "--dsn",
      dsn,
      "--interval",
      "1s",
      "--hook-url",
      "http://hookuser:hook-Pass-7@127.0.0.1:9/alerts?token=tok-Secret-7"
      "&channel=ops",
      NULL};
  pid_t r = start("reap-title", args);
  wait_log("reap-title", "reaper_started", 30);
  const char *secrets[] = {PASSWORD, "hook-Pass-7", "tok-Secret-7", NULL};
  assert_title_clean(r, secrets);
  char *ps = ps_args(r);
  assert_contains("ps -o args", ps, "http://hookuser:***@127.0.0.1:9/alerts");
  free(ps);
  /* Nor does its log show the hook's secrets. */
  char *log = read_log("reap-title");
  for (int i = 0; secrets[i]; i++)
    assert_lacks("the reaper's log", log, secrets[i]);
  free(log);
  stop(r);
}

/* ------------------------------------------------------------------------ */
/* --dsn-file                                                                */

static void test_dsn_file(void **state) {
  (void)state;
  need_own_server();
  char dsn[1200], text[1300], path[300], loose[300], empty[300];
  password_dsn("sec_file", dsn, sizeof dsn);
  snprintf(text, sizeof text, "%s\nthe second line is ignored\n", dsn);
  write_secret_file("dsn", text, 0600, path, sizeof path);
  char *out = NULL;

  /* A one-shot command reads it. */
  int ex = run(&out, "enqueue", "--dsn-file", path, "-q", "f", "--id",
               "from-file", NULL);
  if (ex != 0)
    fail_msg("enqueue --dsn-file exited %d: %s", ex, out);
  assert_string_equal(out, "from-file\n");
  free(out);
  ex = run(&out, "status", "--dsn-file", path, NULL);
  assert_int_equal(ex, 0);
  assert_contains("status", out, "f");
  free(out);

  /* A file that group or others may read is refused, naming it and why,
   * before anything is touched. */
  write_secret_file("dsn-loose", text, 0644, loose, sizeof loose);
  ex = run(&out, "enqueue", "--dsn-file", loose, "-q", "f", "--id", "loose",
           NULL);
  if (ex != 2)
    fail_msg("a 0644 DSN file: exit %d, expected 2: %s", ex, out);
  assert_contains("enqueue", out, loose);
  assert_contains("enqueue", out, "chmod 600");
  assert_lacks("enqueue", out, PASSWORD);
  free(out);
  write_secret_file("dsn-group", text, 0640, loose, sizeof loose);
  ex = run(&out, "status", "--dsn-file", loose, NULL);
  assert_int_equal(ex, 2);
  free(out);

  /* A missing file, an empty one, and --dsn beside --dsn-file. */
  char missing[300];
  snprintf(missing, sizeof missing, "%s/no-such-file", tmpdir);
  ex = run(&out, "status", "--dsn-file", missing, NULL);
  assert_int_equal(ex, 2);
  assert_contains("status", out, missing);
  free(out);
  write_secret_file("dsn-empty", "\n", 0600, empty, sizeof empty);
  ex = run(&out, "status", "--dsn-file", empty, NULL);
  assert_int_equal(ex, 2);
  assert_contains("status", out, "empty");
  free(out);
  ex = run(&out, "status", "--dsn", dsn, "--dsn-file", path, NULL);
  assert_int_equal(ex, 2);
  assert_contains("status", out, "not both");
  assert_lacks("status", out, PASSWORD);
  free(out);

  PGconn *p = th_connect(dsn);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items"), 1);

  /* The daemons take it too; their title shows the file, no password. */
  const char *args[] = {"work", "--dsn-file", path,     "--name", "file-w",
                        "-q",   "f",          "--exec", "cat",    NULL};
  pid_t w = start("file-w", args);
  double end = th_now() + 30;
  while (th_long(p, "SELECT count(*) FROM claimer.items WHERE state = "
                    "'done'") < 1 &&
         th_now() < end)
    sleep_s(0.05);
  assert_int_equal(
      th_long(p, "SELECT count(*) FROM claimer.items WHERE state = 'done'"), 1);
  char *ps = ps_args(w);
  assert_lacks("ps -o args", ps, PASSWORD);
  free(ps);
  stop(w);
  const char *rargs[] = {"reap", "--once", "--dsn-file", path, NULL};
  pid_t r = start("file-r", rargs);
  assert_int_equal(th_wait_exit(r, 60), 0);
  ex = run(&out, "work", "--dsn-file", loose, "-q", "f", "--exec", "cat", NULL);
  assert_int_equal(ex, 2);
  free(out);
  PQfinish(p);
}

/* Every command that takes --dsn takes --dsn-file, and its --help says
 * where else a DSN or a password can come from. */
static void test_help_names_sources(void **state) {
  (void)state;
  static const char *const cmds[][3] = {
      {"migrate", NULL},   {"enqueue", NULL}, {"claim", NULL},
      {"complete", NULL},  {"fail", NULL},    {"heartbeat", NULL},
      {"release", NULL},   {"reap", NULL},    {"status", NULL},
      {"demo", NULL},      {"work", NULL},    {"dead", NULL},
      {"config", "check"},
  };
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    char *out = NULL;
    int ex = cmds[i][1] ? run(&out, cmds[i][0], cmds[i][1], "--help", NULL)
                        : run(&out, cmds[i][0], "--help", NULL);
    if (ex != 0)
      fail_msg("claimer %s --help exited %d: %s", cmds[i][0], ex, out);
    assert_contains(cmds[i][0], out, "--dsn-file FILE");
    assert_contains(cmds[i][0], out, "CLAIMER_DSN");
    assert_contains(cmds[i][0], out, ".pgpass");
    free(out);
  }
}

/* ------------------------------------------------------------------------ */
/* config check --dsn                                                        */

static void test_config_check_dsn(void **state) {
  (void)state;
  char *out = NULL;
  int ex = run(&out, "config", "check", "--dsn",
               "postgresql://u:cfg-Secret-9@db.example/claimer", NULL);
  if (ex != 0)
    fail_msg("config check --dsn exited %d: %s", ex, out);
  assert_contains("config check", out, "password=***");
  assert_contains("config check", out, "flag --dsn");
  assert_lacks("config check", out, "cfg-Secret-9");
  free(out);
  ex = run(&out, "config", "check", "--dsn", "host=db port=notaport", NULL);
  if (ex != 2)
    fail_msg("config check with a bad --dsn exited %d: %s", ex, out);
  assert_contains("config check", out, "dsn");
  free(out);
  char path[300];
  write_secret_file("cfg-dsn", "host=db.example password=cfg-File-9\n", 0600,
                    path, sizeof path);
  ex = run(&out, "config", "check", "--dsn-file", path, NULL);
  if (ex != 0)
    fail_msg("config check --dsn-file exited %d: %s", ex, out);
  assert_contains("config check", out, "host=db.example");
  assert_contains("config check", out, "flag --dsn-file");
  assert_lacks("config check", out, "cfg-File-9");
  free(out);
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
      PASSWORD,      "pgpassword-Planted", "CLAIMER_DSN=", "PGPASSWORD=",
      "PGPASSFILE=", "PGSERVICEFILE=",     "PGSSLKEY=",    "Planted",
      NULL};
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
  const char *args[] = {"work", "--name", "env-w", "-q",
                        "env",  "--exec", cmd,     NULL};
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
  assert_int_equal(
      run(&out, "enqueue", "--dsn", dsn, "-q", "h", "--id", "hook-1", NULL), 0);
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
  const char *args[] = {"work", "--dsn", dsn,      "--name", "lines-w",
                        "-q",   "lines", "--exec", cmd,      NULL};
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
      cmocka_unit_test(test_work_title),
      cmocka_unit_test(test_reap_title),
      cmocka_unit_test(test_dsn_file),
      cmocka_unit_test(test_help_names_sources),
      cmocka_unit_test(test_config_check_dsn),
      cmocka_unit_test(test_handler_env),
      cmocka_unit_test(test_hook_env),
      cmocka_unit_test(test_multiline_exec),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("secrets", tests, group_setup,
                                     group_teardown);
}
