/*
 * test_examples.c: what the README shows a person, run as real processes
 * against a real PostgreSQL, so that it cannot rot: examples/mail-sink.sh
 * as the exec sink of `claimer send` (one .eml per delivery, named by its
 * key, the delivery's JSON as its body; a replay replaces the same files;
 * a failure is a failed attempt), and `claimer demo` from start to end
 * (the work with a worker killed, then two subscribers served by four
 * senders with one killed), its summary lines checked against the
 * database.
 */
#include <dirent.h>
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
  cl_conn_t *c;
  PGconn *pg;
} fx_t;

static int setup(void **state) {
  static int n;
  fx_t *fx = calloc(1, sizeof *fx);
  char db[32];
  snprintf(db, sizeof db, "examples_%d", ++n);
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

/* Writes the path of examples/NAME in the source tree into out.  Ninja
 * compiles from the build root, so a relative __FILE__ is relative to it;
 * the build root is two levels above CLAIMER_BIN (build/workers/claimer).
 * Fails the test when the file is not there. */
static void example_path(const char *name, char *out, size_t n) {
  char src[900];
  if (__FILE__[0] == '/') {
    snprintf(src, sizeof src, "%s", __FILE__);
  } else {
    char bin[700];
    snprintf(bin, sizeof bin, "%s", th_claimer_bin());
    for (int up = 0; up < 2; up++) {
      char *slash = strrchr(bin, '/');
      assert_non_null(slash);
      *slash = '\0';
    }
    snprintf(src, sizeof src, "%s/%s", bin, __FILE__);
  }
  /* src is ROOT/tests/integration/test_examples.c. */
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(src, '/');
    assert_non_null(slash);
    *slash = '\0';
  }
  snprintf(out, n, "%s/examples/%s", src, name);
  if (access(out, X_OK) != 0)
    fail_msg("%s is missing or not executable", out);
}

/* Counts the entries of dir whose names end with suffix. */
static int count_files(const char *dir, const char *suffix) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return -1;
  int n = 0;
  size_t sl = strlen(suffix);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    size_t l = strlen(e->d_name);
    if (e->d_name[0] != '.' && l >= sl &&
        strcmp(e->d_name + l - sl, suffix) == 0)
      n++;
  }
  closedir(d);
  return n;
}

/* Runs `claimer ARGS... --dsn DSN` (ARGS ending with NULL); returns its
 * exit status, its output in *out. */
static int run_claimer(fx_t *fx, char **out, ...) {
  const char *argv[40];
  int n = 0;
  argv[n++] = th_claimer_bin();
  va_list ap;
  va_start(ap, out);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 36;)
    argv[n++] = a;
  va_end(ap);
  argv[n++] = "--dsn";
  argv[n++] = fx->dsn;
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

/* Three sign-ups with results, and the subscriber "mail" of their queue. */
static void signups(fx_t *fx) {
  static const char *const users[] = {"ana", "bo", "cy"};
  for (int i = 0; i < 3; i++) {
    char id[64], payload[96];
    snprintf(id, sizeof id, "signup-%s", users[i]);
    snprintf(payload, sizeof payload, "{\"to\":\"%s@example.com\"}", users[i]);
    cl_item_t it = {.item_id = id, .queue = "signup", .payload = payload};
    assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
    cl_lease_t *l = NULL;
    size_t got = 0;
    assert_int_equal(cl_claim(fx->c, "signup", "w", 1, 30, &l, &got), 0);
    assert_int_equal(got, 1);
    assert_int_equal(cl_complete(fx->c, l[0].item_id, l[0].token,
                                 "{\"welcome\":\"sent\"}", NULL),
                     0);
    cl_leases_free(l, got);
  }
  const char *queues[] = {"signup"};
  cl_subscriber_opts_t o = {
      .queues = queues, .nqueues = 1, .from = "beginning"};
  assert_int_equal(cl_subscriber_add(fx->c, "mail", &o, NULL), 1);
}

/* Prints text a line at a time (cmocka's messages have a size limit). */
static void print_lines(const char *text) {
  for (const char *p = text; *p != '\0';) {
    const char *nl = strchr(p, '\n');
    int len = nl ? (int)(nl - p) : (int)strlen(p);
    print_message("%.*s\n", len, p);
    p += len + (nl != NULL);
  }
}

/* Checks that outbox/new holds one message per sent delivery of "mail",
 * named by its key, with the delivery's attempt and JSON; writes the
 * files' inode numbers into ino[0..3) (the database's order by item). */
static void check_outbox(fx_t *fx, const char *outbox, ino_t ino[3]) {
  char path[1200];
  snprintf(path, sizeof path, "%s/new", outbox);
  assert_int_equal(count_files(path, ".eml"), 3);
  snprintf(path, sizeof path, "%s/tmp", outbox);
  assert_int_equal(count_files(path, ""), 0); /* nothing left half-written */
  PGresult *r = PQexec(fx->pg, "SELECT idempotency_key, item_id, "
                               "attempts FROM claimer.deliveries WHERE "
                               "subscriber = 'mail' AND state = 'sent' "
                               "ORDER BY item_id");
  assert_int_equal(PQntuples(r), 3);
  for (int i = 0; i < 3; i++) {
    const char *key = PQgetvalue(r, i, 0), *item = PQgetvalue(r, i, 1);
    int attempt = atoi(PQgetvalue(r, i, 2));
    snprintf(path, sizeof path, "%s/new/%s.eml", outbox, key);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    ino[i] = st.st_ino;
    char *eml = th_read_file(path), want[300];
    if (i == 0) {
      print_message("%s:\n", path);
      print_lines(eml);
    }
    snprintf(want, sizeof want, "Message-ID: <%s@claimer.invalid>\n", key);
    assert_int_equal(th_count(eml, want), 1);
    snprintf(want, sizeof want, "Subject: result of %s\n", item);
    assert_int_equal(th_count(eml, want), 1);
    snprintf(want, sizeof want, "X-Claimer-Attempt: %d\n", attempt);
    assert_int_equal(th_count(eml, want), 1);
    assert_int_equal(th_count(eml, "X-Claimer-Subscriber: mail\n"), 1);
    /* The body: the delivery as the sender wrote it on stdin. */
    snprintf(want, sizeof want,
             "\n\n{\"subscriber\":\"mail\",\"item_id\":\"%s\",\"queue\":"
             "\"signup\",\"attempt\":%d,\"idempotency_key\":\"%s\","
             "\"result\":{\"welcome\":\"sent\"},\"payload\":{\"to\":",
             item, attempt, key);
    assert_int_equal(th_count(eml, want), 1);
    free(eml);
  }
  PQclear(r);
}

/* examples/mail-sink.sh as the README runs it: one message per delivery;
 * a replay sends every delivery again with the same keys and the outbox
 * still holds one message each (each file replaced: a new inode); an
 * outbox that cannot be written is a failed attempt, retried. */
static void test_mail_sink(void **state) {
  fx_t *fx = *state;
  signups(fx);
  char script[1200], outbox[700], cmd[2400], *out = NULL;
  example_path("mail-sink.sh", script, sizeof script);
  snprintf(outbox, sizeof outbox, "%s/outbox", fx->dir);
  snprintf(cmd, sizeof cmd, "'%s' '%s'", script, outbox);
  int rc = run_claimer(fx, &out, "send", "--subscriber", "mail", "--exec", cmd,
                       "--once", NULL);
  print_message("%s", out);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "sent 3, retry 0, dead 0, in doubt 0"));
  free(out);
  ino_t first[3], second[3];
  check_outbox(fx, outbox, first);

  /* Everything sent again, same keys: the same three files, replaced. */
  rc = run_claimer(fx, &out, "deliveries", "replay", "--subscriber", "mail",
                   "--from", "0", NULL);
  print_message("%s", out);
  assert_int_equal(rc, 0);
  free(out);
  rc = run_claimer(fx, &out, "send", "--subscriber", "mail", "--exec", cmd,
                   "--once", NULL);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "sent 3, retry 0"));
  free(out);
  check_outbox(fx, outbox, second);
  for (int i = 0; i < 3; i++)
    assert_true(first[i] != second[i]);

  /* An outbox that is a file: mkdir fails, the script exits non-zero. */
  char bad[800];
  snprintf(bad, sizeof bad, "%s/not-a-dir", fx->dir);
  FILE *f = fopen(bad, "w");
  assert_non_null(f);
  fclose(f);
  th_exec(fx->pg, "UPDATE claimer.deliveries SET state = 'retry', "
                  "next_at = now()");
  snprintf(cmd, sizeof cmd, "'%s' '%s'", script, bad);
  rc = run_claimer(fx, &out, "send", "--subscriber", "mail", "--exec", cmd,
                   "--once", NULL);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "sent 0, retry 3"));
  free(out);
}

/* `claimer demo` end to end, small: every summary line a person reads,
 * and the counts behind them read back from the database and the file. */
static void test_demo(void **state) {
  fx_t *fx = *state;
  char *out = NULL;
  const char *old = getenv("TMPDIR");
  char *saved = old ? strdup(old) : NULL;
  setenv("TMPDIR", fx->dir, 1); /* the demo's files go beside the test's */
  double t0 = th_now();
  int rc =
      run_claimer(fx, &out, "demo", "--items", "300", "--workers", "3", NULL);
  double took = th_now() - t0;
  if (saved != NULL) {
    setenv("TMPDIR", saved, 1);
    free(saved);
  } else {
    unsetenv("TMPDIR");
  }
  print_message("claimer demo: exit %d after %.1f s\n", rc, took);
  print_lines(out);
  assert_int_equal(rc, 0);
  /* The work. */
  assert_non_null(strstr(out, "enqueued 300 items on queue demo_"));
  assert_non_null(strstr(out, "killed worker 2 with SIGKILL"));
  assert_non_null(strstr(out, "items 300, done 300, results 300 "
                              "(duplicates 0)"));
  assert_non_null(strstr(out, "OK: every item done exactly once"));
  /* The deliveries. */
  assert_non_null(strstr(out, "started 4 sender processes (claimer send)"));
  assert_non_null(strstr(out, "killed mail sender 1 with SIGKILL mid-way"));
  assert_non_null(strstr(out, "stopped the other 3 senders (SIGTERM): each "
                              "drained and exited 0"));
  assert_non_null(strstr(out, "mail:  300 of 300 results sent; mail.log has"));
  assert_non_null(strstr(out, "300 distinct keys, 300 of them the database's "
                              "key for their item"));
  assert_non_null(strstr(out, "       raw repeats: "));
  assert_non_null(strstr(out, "audit: 300 of 300 results sent; "
                              "claimer_demo_audit has 300 rows for 300 "
                              "distinct results, 300 with their delivery's "
                              "key"));
  assert_non_null(strstr(out, "OK: every subscriber served every result, "
                              "once per key"));

  /* Behind the lines: the file holds its printed count of lines, 300 of
   * them distinct; the database 600 deliveries sent, 300 audit rows. */
  const char *at = strstr(out, "appends \"KEY ITEM\" to ");
  assert_non_null(at);
  at += strlen("appends \"KEY ITEM\" to ");
  const char *end = strstr(at, " (a stand-in");
  assert_non_null(end);
  char path[800];
  snprintf(path, sizeof path, "%.*s", (int)(end - at), at);
  assert_int_equal(strncmp(path, fx->dir, strlen(fx->dir)), 0);
  long lines = -1, repeats = -1;
  const char *has = strstr(out, "mail.log has ");
  const char *rep = strstr(out, "raw repeats: ");
  assert_int_equal(sscanf(has, "mail.log has %ld lines", &lines), 1);
  assert_int_equal(sscanf(rep, "raw repeats: %ld line", &repeats), 1);
  char *mail = th_read_file(path);
  assert_int_equal(th_count(mail, "\n"), lines);
  assert_int_equal(lines, 300 + repeats);
  assert_int_equal(th_count(mail, "clm_"), lines);
  free(mail);
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   600);
  assert_int_equal(th_long(fx->pg, "SELECT count(DISTINCT item_id) FROM "
                                   "claimer_demo_audit"),
                   300);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer_demo_audit"),
                   300);
  /* Nothing is left sending, to retry, held or dead. */
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state <> 'sent'"),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_mail_sink, setup, teardown),
      cmocka_unit_test_setup_teardown(test_demo, setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("examples", tests, th_group_setup,
                                     th_group_teardown);
}
