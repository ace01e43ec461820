/*
 * test_cli.c: the `claimer` binary as a user meets it.  Bad input of every
 * kind exits 2 with a message that names the problem and changes nothing
 * in the database (G8); a database that cannot be reached, or refuses the
 * password, exits 1 at once without echoing the secret; every command
 * answers --help; and a shell script can be a worker: enqueue (idempotent,
 * G1), claim, complete (idempotent for its token, fenced for others, G3),
 * fail until dead, release, heartbeat, reap, status, migrate, and bulk
 * NDJSON enqueue.  Each test runs the binary against a database of its own
 * and passes --dsn explicitly.
 */
#include <ctype.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "claimer/claimer.h"
#include "harness.h"

enum { MAX_ARGS = 32, NDJSON_LINES = 2000 };

typedef struct fixture {
  char name[64];
  char dsn[1024];
  PGconn *raw;
} fixture_t;

static int setup_db(void **state, int migrated) {
  static int n;
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -1;
  *state = f;
  snprintf(f->name, sizeof f->name, "cli_%d", ++n);
  if (th_db_create(&th_pg, f->name, migrated, f->dsn, sizeof f->dsn) != 0)
    return -1;
  f->raw = th_connect(f->dsn);
  return 0;
}

static int setup(void **state) { return setup_db(state, 1); }
static int setup_unmigrated(void **state) { return setup_db(state, 0); }

static int teardown(void **state) {
  fixture_t *f = *state;
  if (f->raw != NULL)
    PQfinish(f->raw);
  free(f);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* Runs `claimer ARGS...` (NULL-terminated) with in on stdin (NULL: none);
 * stores its stdout and stderr together in *out (caller frees) and returns
 * its exit status. */
__attribute__((sentinel)) static int run(char **out, const char *in, ...) {
  const char *argv[MAX_ARGS + 2];
  int n = 0;
  argv[n++] = th_claimer_bin();
  va_list ap;
  va_start(ap, in);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL) {
    if (n == MAX_ARGS)
      fail_msg("too many arguments");
    argv[n++] = a;
  }
  va_end(ap);
  argv[n] = NULL;
  return th_run(argv, in, out);
}

/* Runs a query built from fmt (constants of the test, quoted in fmt) and
 * returns its one value as a long. */
__attribute__((format(printf, 2, 3))) static long q_long(const fixture_t *f,
                                                         const char *fmt, ...) {
  char sql[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  return th_long(f->raw, sql);
}

/* Returns the one text value of a query built from fmt (caller frees). */
__attribute__((format(printf, 2, 3))) static char *
q_text(const fixture_t *f, const char *fmt, ...) {
  char sql[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  PGresult *r = PQexec(f->raw, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
    PQclear(r);
    fail_msg("%s: %s", sql, msg);
  }
  char *v = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  return v;
}

static long item_count(const fixture_t *f) {
  return th_long(f->raw, "SELECT count(*) FROM claimer.items");
}

/* A digest of everything the protocol writes, to show that a rejected
 * command changed nothing at all. */
static char *db_digest(const fixture_t *f) {
  return q_text(
      f, "SELECT md5(coalesce((SELECT string_agg(i::text, '|' ORDER BY "
         "item_id) FROM claimer.items i), '') || '/' || "
         "coalesce((SELECT string_agg(c::text, '|' ORDER BY item_id) FROM "
         "claimer.claims c), '') || '/' || "
         "coalesce((SELECT string_agg(r::text, '|' ORDER BY item_id) FROM "
         "claimer.results r), ''))");
}

static void assert_contains(const char *out, const char *want) {
  if (strstr(out, want) == NULL)
    fail_msg("output lacks \"%s\":\n%s", want, out);
}

static void assert_lacks(const char *out, const char *unwanted) {
  if (strstr(out, unwanted) != NULL)
    fail_msg("output contains \"%s\":\n%s", unwanted, out);
}

/* Seeds one item so that "nothing changed" is checked against a non-empty
 * table. */
static void seed(fixture_t *f) {
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue, payload) "
                  "VALUES ('seed', 'q', '{\"s\":1}') "
                  "ON CONFLICT (item_id) DO NOTHING");
}

/* Runs the binary with args (NULL-terminated array), expects exit 2, every
 * string of want in the output, and no change in the database. */
static void expect_rejected(fixture_t *f, const char *in,
                            const char *const want[],
                            const char *const args[]) {
  seed(f);
  long before = item_count(f);
  char *digest = db_digest(f);
  const char *argv[MAX_ARGS + 2];
  int n = 0;
  argv[n++] = th_claimer_bin();
  for (int i = 0; args[i] != NULL; i++) {
    if (n == MAX_ARGS)
      fail_msg("too many arguments");
    argv[n++] = args[i];
  }
  argv[n] = NULL;
  char *out = NULL;
  int ex = th_run(argv, in, &out);
  if (ex != 2)
    fail_msg("exit %d, expected 2; output:\n%s", ex, out);
  for (int i = 0; want[i] != NULL; i++)
    assert_contains(out, want[i]);
  assert_int_equal(item_count(f), before);
  char *after = db_digest(f);
  assert_string_equal(after, digest);
  free(after);
  free(digest);
  free(out);
}

/* Parses one JSON object from text, or fails the test. */
static json_object *parse_json(const char *text) {
  json_object *o = json_tokener_parse(text);
  if (o == NULL || !json_object_is_type(o, json_type_object))
    fail_msg("not a JSON object: %s", text);
  return o;
}

static json_object *member(json_object *o, const char *key) {
  json_object *v = NULL;
  if (!json_object_object_get_ex(o, key, &v))
    fail_msg("JSON lacks \"%s\": %s", key, json_object_to_json_string(o));
  return v;
}

static const char *member_str(json_object *o, const char *key) {
  json_object *v = member(o, key);
  assert_true(json_object_is_type(v, json_type_string));
  return json_object_get_string(v);
}

static int member_int(json_object *o, const char *key) {
  json_object *v = member(o, key);
  assert_true(json_object_is_type(v, json_type_int));
  return json_object_get_int(v);
}

/* Returns the number of lines in out. */
static int line_count(const char *out) {
  int n = 0;
  for (const char *p = out; *p; p++)
    n += *p == '\n';
  return n;
}

/* A lease as `claimer claim` printed it. */
typedef struct claimed {
  char item_id[256];
  char token[64];
  int attempt;
} claimed_t;

/* Runs `claimer claim` for one item of queue and parses its line. */
static void claim_one(const fixture_t *f, const char *queue, const char *worker,
                      const char *expect_id, claimed_t *out) {
  char *text = NULL;
  int ex = run(&text, NULL, "claim", "--dsn", f->dsn, "-q", queue, "--worker",
               worker, "--lease", "60", NULL);
  if (ex != 0)
    fail_msg("claim exited %d: %s", ex, text);
  assert_int_equal(line_count(text), 1);
  json_object *o = parse_json(text);
  snprintf(out->item_id, sizeof out->item_id, "%s", member_str(o, "item_id"));
  snprintf(out->token, sizeof out->token, "%s", member_str(o, "token"));
  out->attempt = member_int(o, "attempt");
  assert_string_equal(out->item_id, expect_id);
  assert_int_equal(strlen(out->token), 33);
  assert_int_equal(out->token[16], '-');
  json_object_put(o);
  free(text);
}

/* ------------------------------------------------------------------------ */
/* Bad input: exit 2, a clear message, nothing changed (G8)                  */

static void test_bad_dsn(void **state) {
  fixture_t *f = *state;
  const char *bad = "postgresql://u:s3cretpw@host:notaport/db";
  expect_rejected(f, NULL,
                  (const char *const[]){"malformed connection string", "port",
                                        "notaport", NULL},
                  (const char *const[]){"enqueue", "--dsn", bad, "-q", "q",
                                        "--id", "x", NULL});
  /* The password must not leak into any message. */
  char *out = NULL;
  assert_int_equal(
      run(&out, NULL, "enqueue", "--dsn", bad, "-q", "q", "--id", "x", NULL),
      2);
  assert_lacks(out, "s3cretpw");
  free(out);
  assert_int_equal(run(&out, NULL, "status", "--dsn", bad, NULL), 2);
  assert_lacks(out, "s3cretpw");
  free(out);
}

static void test_bad_payload(void **state) {
  fixture_t *f = *state;
  expect_rejected(
      f, NULL,
      (const char *const[]){"--payload", "not valid JSON", "byte 6", NULL},
      (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q", "--id", "x",
                            "--payload", "{\"a\":1", NULL});
}

static void test_empty_id(void **state) {
  fixture_t *f = *state;
  expect_rejected(f, NULL, (const char *const[]){"--id", "empty", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--id", "", NULL});
}

static void test_oversized_id(void **state) {
  fixture_t *f = *state;
  char id[257];
  memset(id, 'a', 256);
  id[256] = '\0';
  expect_rejected(f, NULL,
                  (const char *const[]){"--id", "256 bytes", "255", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--id", id, NULL});
  /* 255 bytes is the limit, and is accepted. */
  id[255] = '\0';
  char *out = NULL;
  assert_int_equal(
      run(&out, NULL, "enqueue", "--dsn", f->dsn, "-q", "q", "--id", id, NULL),
      0);
  free(out);
  assert_int_equal(
      q_long(f, "SELECT count(*) FROM claimer.items WHERE item_id = '%s'", id),
      1);
}

static void test_invalid_utf8_id(void **state) {
  fixture_t *f = *state;
  expect_rejected(
      f, NULL, (const char *const[]){"--id", "UTF-8", "byte 2", NULL},
      (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q", "--id",
                            "ab\xff"
                            "c",
                            NULL});
  /* The message escapes the bad byte instead of echoing it. */
  char *out = NULL;
  assert_int_equal(run(&out, NULL, "enqueue", "--dsn", f->dsn, "-q", "q",
                       "--id",
                       "ab\xff"
                       "c",
                       NULL),
                   2);
  assert_null(strchr(out, '\xff'));
  free(out);
}

static void test_injection_queue(void **state) {
  fixture_t *f = *state;
  expect_rejected(f, NULL,
                  (const char *const[]){"--queue", "not allowed", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q",
                                        "x'; drop table claimer.items; --",
                                        "--id", "i", NULL});
  expect_rejected(
      f, NULL, (const char *const[]){"--queue", "not allowed", NULL},
      (const char *const[]){"claim", "--dsn", f->dsn, "-q",
                            "x'; drop table claimer.items; --", NULL});
  /* The table is still there. */
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM pg_tables WHERE schemaname = "
                          "'claimer' AND tablename = 'items'"),
                   1);
}

/* One queue grammar everywhere: ':' separates a weight and is no part of a
 * name, so the queue `jobs:2` cannot be enqueued to and never worked as
 * `jobs` with weight 2; a bad weight is refused, not used. */
static void test_queue_colon_and_weights(void **state) {
  fixture_t *f = *state;
  expect_rejected(f, NULL,
                  (const char *const[]){"--queue", "\"jobs:2\"", "byte 4",
                                        "':' separates a weight",
                                        "not part of a name", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q",
                                        "jobs:2", "--id", "i", NULL});
  expect_rejected(
      f, NULL, (const char *const[]){"--queue", "':' separates a weight", NULL},
      (const char *const[]){"claim", "--dsn", f->dsn, "-q", "jobs:2", NULL});
  expect_rejected(f, "{\"id\": \"c1\", \"queue\": \"jobs:2\"}\n",
                  (const char *const[]){"line 1", "':' separates a weight",
                                        "nothing was enqueued", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--ndjson", NULL});
  static const struct {
    const char *q, *want;
  } bad[] = {
      {"a:-1", "queue \"a\": weight -1 is out of range 1..1000"},
      {"a:1.5", "queue \"a\": weight \"1.5\" is not an integer"},
      {"a:", "queue \"a\": the weight after ':' is missing"},
      {":3", "queue \":3\": the name before ':' is missing"},
      {"a:0", "weight 0 is out of range 1..1000"},
      {"a:1001", "weight 1001 is out of range 1..1000"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_rejected(
        f, NULL, (const char *const[]){"flag --queue", bad[i].want, NULL},
        (const char *const[]){"work", "--dsn", f->dsn, "-q", "ok", "-q",
                              bad[i].q, "--exec", "true", NULL});
}

static void test_negative_lease(void **state) {
  fixture_t *f = *state;
  expect_rejected(f, NULL,
                  (const char *const[]){"--lease", "-5", "out of range", NULL},
                  (const char *const[]){"claim", "--dsn", f->dsn, "-q", "q",
                                        "--lease", "-5", NULL});
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims"), 0);
}

static void test_unknown_flag(void **state) {
  fixture_t *f = *state;
  expect_rejected(f, NULL,
                  (const char *const[]){"unknown option --frobnicate", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--id", "x", "--frobnicate", NULL});
}

/* The reaper's bad settings: exit 2 with the key named, nothing reaped
 * (a stale lease stays), nothing written. */
static void test_reap_bad_config(void **state) {
  fixture_t *f = *state;
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue, state, "
                  "attempts) VALUES ('stale', 'q', 'leased', 1) "
                  "ON CONFLICT (item_id) DO NOTHING");
  th_exec(f->raw, "INSERT INTO claimer.claims (item_id, queue, worker_id, "
                  "token, attempt, lease_until) VALUES ('stale', 'q', 'w', "
                  "'t', 1, now() - interval '1 h') ON CONFLICT DO NOTHING");
  expect_rejected(
      f, NULL,
      (const char *const[]){"claimer reap: flag --interval: \"-1\" is not a "
                            "duration",
                            NULL},
      (const char *const[]){"reap", "--once", "--dsn", f->dsn, "--interval",
                            "-1", NULL});
  expect_rejected(
      f, NULL,
      (const char *const[]){"claimer reap: flag --hook-url: scheme \"ftp\" "
                            "is not supported (expected http:// or https://)",
                            NULL},
      (const char *const[]){"reap", "--once", "--dsn", f->dsn, "--hook-url",
                            "ftp://alerts.example/", NULL});
  expect_rejected(
      f, NULL,
      (const char *const[]){"claimer reap: flag --queue-sla: queue \"a\": "
                            "SLA 0 is out of range",
                            NULL},
      (const char *const[]){"reap", "--once", "--dsn", f->dsn, "--queue-sla",
                            "a:0", NULL});
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims "
                                   "WHERE item_id = 'stale'"),
                   1);
  th_exec(f->raw, "DELETE FROM claimer.items WHERE item_id = 'stale'");
}

static void test_missing_required(void **state) {
  fixture_t *f = *state;
  expect_rejected(
      f, NULL, (const char *const[]){"-q/--queue is required", NULL},
      (const char *const[]){"enqueue", "--dsn", f->dsn, "--id", "x", NULL});
  expect_rejected(
      f, NULL, (const char *const[]){"--token", "required", NULL},
      (const char *const[]){"complete", "--dsn", f->dsn, "--id", "seed", NULL});
  expect_rejected(f, NULL, (const char *const[]){"--worker is required", NULL},
                  (const char *const[]){"heartbeat", "--dsn", f->dsn, NULL});
}

static const char ndjson_one_bad[] =
    "{\"id\": \"n1\", \"payload\": {\"a\": 1}}\n"
    "{\"id\": \"n2\"}\n"
    "{\"id\": \"n3\", \"payload\": {bad}}\n"
    "\n"
    "{\"id\": \"n5\", \"priority\": 3}\n";

static void test_ndjson_bad_line(void **state) {
  fixture_t *f = *state;
  expect_rejected(f, ndjson_one_bad,
                  (const char *const[]){"line 3", "not valid JSON",
                                        "nothing was enqueued", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--ndjson", NULL});
}

static void test_ndjson_skip_invalid(void **state) {
  fixture_t *f = *state;
  seed(f);
  long before = item_count(f);
  char *out = NULL;
  int ex = run(&out, ndjson_one_bad, "enqueue", "--dsn", f->dsn, "-q", "q",
               "--ndjson", "--skip-invalid", NULL);
  if (ex != 0)
    fail_msg("exit %d: %s", ex, out);
  assert_contains(out, "line 3");
  assert_contains(out, "created 3, existed 0, rejected 1");
  free(out);
  assert_int_equal(item_count(f), before + 3);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.items WHERE item_id IN "
                          "('n1', 'n2', 'n5') AND queue = 'q'"),
                   3);
  assert_int_equal(
      q_long(f, "SELECT count(*) FROM claimer.items WHERE item_id = 'n1' "
                "AND payload = '{\"a\": 1}'::jsonb"),
      1);
  assert_int_equal(
      q_long(f, "SELECT priority FROM claimer.items WHERE item_id = 'n5'"), 3);
}

/* Numbers jsonb cannot store (numeric holds values below 1e131072) are bad
 * input like any other: refused before the database sees them. */
static const char ndjson_out_of_range[] =
    "{\"id\": \"r1\", \"payload\": {\"a\": 1}}\n"
    "{\"id\": \"r2\", \"payload\": {\"big\": 1e999999}}\n"
    "{\"id\": \"r3\", \"payload\": [1e131071]}\n";

static void test_out_of_range_number(void **state) {
  fixture_t *f = *state;
  expect_rejected(
      f, NULL,
      (const char *const[]){"--payload", "number out of range at byte 0",
                            "1e131072", NULL},
      (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q", "--id", "x",
                            "--payload", "1e999999", NULL});
  expect_rejected(
      f, NULL,
      (const char *const[]){"--payload", "number out of range at byte 5",
                            "after the decimal point", NULL},
      (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q", "--id", "x",
                            "--payload", "{\"a\":1e-20000}", NULL});
  /* complete --result: the lease stays as it was, and can still complete. */
  char *out = NULL;
  assert_int_equal(run(&out, NULL, "enqueue", "--dsn", f->dsn, "-q", "rq",
                       "--id", "res-1", NULL),
                   0);
  free(out);
  claimed_t c;
  claim_one(f, "rq", "w1", "res-1", &c);
  expect_rejected(
      f, NULL,
      (const char *const[]){"--result", "number out of range at byte 0", NULL},
      (const char *const[]){"complete", "--dsn", f->dsn, "--id", "res-1",
                            "--token", c.token, "--result", "1e999999", NULL});
  assert_int_equal(q_long(f, "SELECT count(*) FROM claimer.claims WHERE "
                             "item_id = 'res-1'"),
                   1);
  assert_int_equal(run(&out, NULL, "complete", "--dsn", f->dsn, "--id", "res-1",
                       "--token", c.token, "--result", "1e131071", NULL),
                   0);
  free(out);
  /* NDJSON: the pre-check refuses the line, so nothing is enqueued ... */
  expect_rejected(f, ndjson_out_of_range,
                  (const char *const[]){"line 2", "number out of range",
                                        "nothing was enqueued", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--ndjson", NULL});
  /* ... and --skip-invalid skips it and enqueues the rest. */
  int ex = run(&out, ndjson_out_of_range, "enqueue", "--dsn", f->dsn, "-q", "q",
               "--ndjson", "--skip-invalid", NULL);
  if (ex != 0)
    fail_msg("exit %d: %s", ex, out);
  assert_contains(out, "line 2");
  assert_contains(out, "created 2, existed 0, rejected 1");
  free(out);
  assert_int_equal(q_long(f, "SELECT count(*) FROM claimer.items WHERE "
                             "item_id IN ('r1', 'r3')"),
                   2);
  assert_int_equal(
      q_long(f, "SELECT count(*) FROM claimer.items WHERE item_id = 'r2'"), 0);
}

/* max_attempts means the same in a line as in the flag: 1..1000000, and 0
 * is refused (leave the key out for the queue's policy), with the flag's
 * words and its own range, not the priority's. */
static void test_ndjson_max_attempts(void **state) {
  fixture_t *f = *state;
  expect_rejected(f, NULL,
                  (const char *const[]){"--max-attempts: 0 is out of range "
                                        "[1, 1000000]",
                                        NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--id", "m0", "--max-attempts", "0",
                                        NULL});
  expect_rejected(f, "{\"id\": \"m0\", \"max_attempts\": 0}\n",
                  (const char *const[]){"line 1",
                                        "\"max_attempts\": 0 is out of range "
                                        "[1, 1000000]",
                                        "nothing was enqueued", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--ndjson", NULL});
  char *out = NULL;
  assert_int_equal(run(&out, "{\"id\": \"mx\", \"max_attempts\": 2000000}\n",
                       "enqueue", "--dsn", f->dsn, "-q", "q", "--ndjson", NULL),
                   2);
  assert_contains(out, "\"max_attempts\": 2000000 is out of range "
                       "[1, 1000000]");
  assert_lacks(out, "-1000000");
  free(out);
  assert_int_equal(run(&out, "{\"id\": \"mx\", \"max_attempts\": 1.5}\n",
                       "enqueue", "--dsn", f->dsn, "-q", "q", "--ndjson", NULL),
                   2);
  assert_contains(out, "\"max_attempts\" must be an integer in [1, 1000000]");
  free(out);
  assert_int_equal(run(&out, "{\"id\": \"px\", \"priority\": 1000001}\n",
                       "enqueue", "--dsn", f->dsn, "-q", "q", "--ndjson", NULL),
                   2);
  assert_contains(out, "\"priority\": 1000001 is out of range "
                       "[-1000000, 1000000]");
  free(out);
  assert_int_equal(run(&out,
                       "{\"id\": \"m1\", \"max_attempts\": 1}\n"
                       "{\"id\": \"m2\", \"max_attempts\": 1000000}\n"
                       "{\"id\": \"m3\"}\n",
                       "enqueue", "--dsn", f->dsn, "-q", "q", "--ndjson", NULL),
                   0);
  free(out);
  assert_int_equal(
      q_long(f, "SELECT max_attempts FROM claimer.items WHERE item_id = 'm1'"),
      1);
  assert_int_equal(
      q_long(f, "SELECT max_attempts FROM claimer.items WHERE item_id = 'm2'"),
      1000000);
  assert_int_equal(
      q_long(f, "SELECT max_attempts FROM claimer.items WHERE item_id = 'm3'"),
      25);
}

/* A key twice in an item could say two things (json-c keeps the last);
 * inside a payload, jsonb's own rule (the last wins) stands. */
static void test_ndjson_duplicate_key(void **state) {
  fixture_t *f = *state;
  expect_rejected(f,
                  "{\"id\": \"d1\"}\n"
                  "{\"id\": \"d2\", \"payload\": 1, \"id\": \"d3\"}\n",
                  (const char *const[]){"line 2", "duplicate key \"id\"",
                                        "nothing was enqueued", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--ndjson", NULL});
  expect_rejected(f, "{\"id\": \"d2\", \"\\u0069d\": \"d3\"}\n",
                  (const char *const[]){"line 1", "duplicate key \"id\"", NULL},
                  (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q",
                                        "--ndjson", NULL});
  expect_rejected(
      f,
      "{\"id\": \"d2\", \"payload\": {\"a\": 1}, "
      "\"payload\": [2]}\n",
      (const char *const[]){"line 1", "duplicate key \"payload\"", NULL},
      (const char *const[]){"enqueue", "--dsn", f->dsn, "-q", "q", "--ndjson",
                            NULL});
  char *out = NULL;
  int ex = run(&out,
               "{\"id\": \"d1\"}\n"
               "{\"id\": \"d2\", \"payload\": 1, \"id\": \"d3\"}\n"
               "{\"id\": \"d4\", \"payload\": {\"k\": 1, \"k\": 2}}\n",
               "enqueue", "--dsn", f->dsn, "-q", "q", "--ndjson",
               "--skip-invalid", NULL);
  if (ex != 0)
    fail_msg("exit %d: %s", ex, out);
  assert_contains(out, "created 2, existed 0, rejected 1");
  free(out);
  assert_int_equal(q_long(f, "SELECT count(*) FROM claimer.items WHERE "
                             "item_id IN ('d2', 'd3')"),
                   0);
  assert_int_equal(q_long(f, "SELECT count(*) FROM claimer.items WHERE "
                             "item_id = 'd4' AND payload = '{\"k\": 2}'"),
                   1);
}

/* Runs `claimer ARGS` with stdin from in_path; returns its exit status,
 * its output in *out and its peak RSS in KiB in *maxrss_kb (from wait4:
 * this process's RSS at the fork counts too, so compare runs). */
static int run_rss(const char *const args[], const char *in_path, char **out,
                   long *maxrss_kb) {
  char out_path[] = "/tmp/claimer-test-rss-XXXXXX";
  int fd = mkstemp(out_path);
  assert_true(fd >= 0);
  const char *argv[MAX_ARGS + 2];
  int n = 0;
  argv[n++] = th_claimer_bin();
  for (int i = 0; args[i] != NULL && n < MAX_ARGS; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int in = open(in_path, O_RDONLY);
    if (in < 0)
      _exit(126);
    dup2(in, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    unsetenv("CLAIMER_DSN");
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  int st = 0;
  struct rusage ru;
  assert_int_equal(wait4(pid, &st, 0, &ru), pid);
  close(fd);
  *out = th_read_file(out_path);
  unlink(out_path);
  *maxrss_kb = ru.ru_maxrss;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* An NDJSON line past the limit is refused without being held in memory:
 * the rest of it is read and dropped, and --skip-invalid goes on with the
 * next line. */
static void test_ndjson_long_line(void **state) {
  fixture_t *f = *state;
  enum { MB = 1 << 20, LONG_MB = 50 };
  char small[] = "/tmp/claimer-test-small-XXXXXX";
  char big[] = "/tmp/claimer-test-big-XXXXXX";
  int fs = mkstemp(small), fb = mkstemp(big);
  assert_true(fs >= 0 && fb >= 0);
  static const char first[] = "{\"id\": \"l1\"}\n";
  static const char last[] = "{\"id\": \"l3\"}\n";
  assert_int_equal(write(fs, first, strlen(first)), (ssize_t)strlen(first));
  assert_int_equal(write(fs, last, strlen(last)), (ssize_t)strlen(last));
  close(fs);
  /* Written a piece at a time, so that this process stays small (its RSS
   * at the fork counts in the child's peak). */
  char *chunk = malloc(MB);
  assert_non_null(chunk);
  memset(chunk, 'x', MB);
  static const char head[] = "{\"id\": \"l2\", \"payload\": \"";
  assert_int_equal(write(fb, first, strlen(first)), (ssize_t)strlen(first));
  assert_int_equal(write(fb, head, strlen(head)), (ssize_t)strlen(head));
  size_t line_len = strlen(head);
  for (int i = 0; i < LONG_MB; i++) {
    size_t m = i + 1 < LONG_MB ? MB : MB - strlen(head) - 2;
    assert_int_equal(write(fb, chunk, m), (ssize_t)m);
    line_len += m;
  }
  assert_int_equal(write(fb, "\"}\n", 3), 3);
  line_len += 2;
  assert_int_equal(line_len, (size_t)LONG_MB * MB);
  assert_int_equal(write(fb, last, strlen(last)), (ssize_t)strlen(last));
  close(fb);
  free(chunk);

  seed(f);
  char *digest = db_digest(f);
  char *out = NULL;
  long base_kb = 0, long_kb = 0;
  const char *const check_only[] = {"enqueue", "--dsn",    f->dsn, "-q",
                                    "q",       "--ndjson", NULL};
  /* The baseline: the same command on the two good lines alone.  It
   * enqueues them, so the --skip-invalid run below finds both existing. */
  const char *const base_args[] = {"enqueue", "--dsn",    f->dsn, "-q",
                                   "base",    "--ndjson", NULL};
  assert_int_equal(run_rss(base_args, small, &out, &base_kb), 0);
  free(out);
  free(digest);
  digest = db_digest(f);
  int ex = run_rss(check_only, big, &out, &long_kb);
  fprintf(stderr,
          "peak RSS: %ld KiB for 2 short lines, %ld KiB with a "
          "%d MiB line\n",
          base_kb, long_kb, LONG_MB);
  if (long_kb > base_kb + 16 * 1024)
    fail_msg("a %d MiB line raised the peak RSS from %ld to %ld KiB", LONG_MB,
             base_kb, long_kb);
  if (ex != 2)
    fail_msg("exit %d, expected 2: %s", ex, out);
  char want[128];
  snprintf(want, sizeof want,
           "stdin line 2: %d bytes; the limit for one line is %d", LONG_MB * MB,
           CL_PAYLOAD_MAX);
  assert_contains(out, want);
  assert_contains(out, "nothing was enqueued");
  free(out);
  char *after = db_digest(f);
  assert_string_equal(after, digest);
  free(after);
  free(digest);
  const char *const skip_args[] = {
      "enqueue", "--dsn",    f->dsn,           "-q",
      "q",       "--ndjson", "--skip-invalid", NULL};
  ex = run_rss(skip_args, big, &out, &long_kb);
  if (ex != 0)
    fail_msg("exit %d: %s", ex, out);
  assert_contains(out, want);
  assert_contains(out, "created 0, existed 2, rejected 1");
  free(out);
  unlink(small);
  unlink(big);
}

/* complete on an id that names no item says so; it is not a lost lease. */
static void test_complete_unknown_item(void **state) {
  fixture_t *f = *state;
  seed(f);
  char *digest = db_digest(f);
  char *out = NULL;
  int ex =
      run(&out, NULL, "complete", "--dsn", f->dsn, "--id", "no-such", "--token",
          "0000000000000001-0000000000000000", "--result", "1", NULL);
  if (ex != 1)
    fail_msg("exit %d, expected 1: %s", ex, out);
  assert_contains(out, "no item \"no-such\" exists");
  assert_contains(out, "nothing was written");
  assert_lacks(out, "reaped");
  free(out);
  char *after = db_digest(f);
  assert_string_equal(after, digest);
  free(after);
  free(digest);
  /* An item that exists but whose lease is gone is still "lease lost". */
  ex = run(&out, NULL, "complete", "--dsn", f->dsn, "--id", "seed", "--token",
           "0000000000000001-0000000000000000", NULL);
  if (ex != 3)
    fail_msg("exit %d, expected 3: %s", ex, out);
  assert_contains(out, "lease lost");
  free(out);
}

/* ------------------------------------------------------------------------ */
/* Connection failures: exit 1, fast, no secret echoed                       */

static void test_unreachable_host(void **state) {
  fixture_t *f = *state;
  seed(f);
  long before = item_count(f);
  char *out = NULL;
  double t0 = th_now();
  int ex = run(&out, NULL, "enqueue", "--dsn",
               "host=127.0.0.1 port=1 connect_timeout=3", "-q", "q", "--id",
               "unreached", NULL);
  double took = th_now() - t0;
  if (ex != 1)
    fail_msg("exit %d, expected 1: %s", ex, out);
  assert_contains(out, "cannot connect");
  assert_true(took < 10);
  free(out);
  assert_int_equal(item_count(f), before);
}

static void test_wrong_password(void **state) {
  fixture_t *f = *state;
  if (!th_pg.own) {
    print_message("skipped: the password tests need the harness's own "
                  "PostgreSQL (its claimer_pw role and pg_hba.conf); "
                  "CLAIMER_TEST_DSN is set\n");
    skip();
  }
  seed(f);
  long before = item_count(f);
  char dsn[512];
  snprintf(dsn, sizeof dsn,
           "host=127.0.0.1 port=%d dbname=%s user=claimer_pw "
           "password=wrong-password",
           th_pg.port, f->name);
  char *out = NULL;
  double t0 = th_now();
  int ex = run(&out, NULL, "enqueue", "--dsn", dsn, "-q", "q", "--id",
               "pw-item", NULL);
  double took = th_now() - t0;
  if (ex != 1)
    fail_msg("exit %d, expected 1: %s", ex, out);
  assert_contains(out, "authentication failed");
  assert_lacks(out, "wrong-password");
  if (took >= 5)
    fail_msg("a refused password took %.1f s to report (retried?)", took);
  free(out);
  assert_int_equal(item_count(f), before);

  /* The right password works. */
  snprintf(dsn, sizeof dsn,
           "host=127.0.0.1 port=%d dbname=%s user=claimer_pw "
           "password=right-password",
           th_pg.port, f->name);
  ex = run(&out, NULL, "enqueue", "--dsn", dsn, "-q", "q", "--id", "pw-item",
           NULL);
  if (ex != 0)
    fail_msg("exit %d with the right password: %s", ex, out);
  assert_string_equal(out, "pw-item\n");
  assert_lacks(out, "right-password");
  free(out);
  assert_int_equal(item_count(f), before + 1);
}

/* ------------------------------------------------------------------------ */
/* --help                                                                    */

static void test_help(void **state) {
  (void)state;
  char *out = NULL;
  assert_int_equal(run(&out, NULL, "--help", NULL), 0);
  assert_contains(out, "usage:");
  free(out);
  static const char *const cmds[] = {
      "migrate", "enqueue", "claim",  "complete", "fail", "heartbeat",
      "release", "reap",    "status", "db",       "demo"};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    int ex = run(&out, NULL, cmds[i], "--help", NULL);
    if (ex != 0)
      fail_msg("claimer %s --help exited %d: %s", cmds[i], ex, out);
    char want[64];
    snprintf(want, sizeof want, "usage: claimer %s", cmds[i]);
    assert_contains(out, want);
    free(out);
  }
  /* The top-level help lists every command. */
  assert_int_equal(run(&out, NULL, "--help", NULL), 0);
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    assert_contains(out, cmds[i]);
  free(out);
}

/* ------------------------------------------------------------------------ */
/* A worker written in shell                                                 */

static int is_uuid4_line(const char *s) {
  if (strlen(s) != 37 || s[36] != '\n' || s[14] != '4')
    return 0;
  for (int i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return 0;
    } else if (!isxdigit((unsigned char)s[i])) {
      return 0;
    }
  }
  return 1;
}

static void test_worker_flow(void **state) {
  fixture_t *f = *state;
  const char *d = f->dsn;
  char *out = NULL;

  /* Without --id a UUID is made and printed. */
  assert_int_equal(run(&out, NULL, "enqueue", "--dsn", d, "-q", "anon", NULL),
                   0);
  if (!is_uuid4_line(out))
    fail_msg("not a UUID line: \"%s\"", out);
  out[36] = '\0';
  assert_int_equal(
      q_long(f,
             "SELECT count(*) FROM claimer.items WHERE item_id = '%s' "
             "AND queue = 'anon'",
             out),
      1);
  free(out);

  /* Enqueue is idempotent. */
  assert_int_equal(run(&out, NULL, "enqueue", "--dsn", d, "-q", "jobs", "--id",
                       "job-1", "--payload", "{\"n\":1}", NULL),
                   0);
  assert_string_equal(out, "job-1\n");
  free(out);
  assert_int_equal(run(&out, NULL, "enqueue", "--dsn", d, "-q", "jobs", "--id",
                       "job-1", "--payload", "{\"n\":2}", NULL),
                   0);
  assert_contains(out, "already existed");
  free(out);
  assert_int_equal(
      q_long(f, "SELECT count(*) FROM claimer.items WHERE item_id = 'job-1' "
                "AND payload = '{\"n\":1}'::jsonb"),
      1);
  assert_int_equal(item_count(f), 2);

  /* Claim prints one JSON line. */
  char *text = NULL;
  assert_int_equal(run(&text, NULL, "claim", "--dsn", d, "-q", "jobs",
                       "--worker", "W1", "--lease", "60", NULL),
                   0);
  assert_int_equal(line_count(text), 1);
  json_object *o = parse_json(text);
  assert_string_equal(member_str(o, "item_id"), "job-1");
  assert_int_equal(member_int(o, "attempt"), 1);
  json_object *payload = member(o, "payload");
  assert_true(json_object_is_type(payload, json_type_object));
  assert_int_equal(member_int(payload, "n"), 1);
  const char *lease_until = member_str(o, "lease_until");
  assert_non_null(strchr(lease_until, 'T'));
  assert_int_equal(lease_until[strlen(lease_until) - 1], 'Z');
  char token[64];
  snprintf(token, sizeof token, "%s", member_str(o, "token"));
  assert_int_equal(strlen(token), 33);
  json_object_put(o);
  free(text);
  assert_int_equal(
      q_long(f,
             "SELECT count(*) FROM claimer.claims WHERE item_id = 'job-1' "
             "AND token = '%s' AND worker_id = 'W1'",
             token),
      1);

  /* Nothing else is ready in that queue: claim prints nothing. */
  assert_int_equal(run(&out, NULL, "claim", "--dsn", d, "-q", "jobs", NULL), 0);
  assert_string_equal(out, "");
  free(out);

  /* Complete; again with the same token; with another token. */
  assert_int_equal(run(&out, NULL, "complete", "--dsn", d, "--id", "job-1",
                       "--token", token, "--result", "{\"ok\":true}", NULL),
                   0);
  free(out);
  assert_int_equal(
      q_long(f,
             "SELECT count(*) FROM claimer.results WHERE item_id = "
             "'job-1' AND token = '%s' AND result = '{\"ok\":true}'",
             token),
      1);
  assert_int_equal(run(&out, NULL, "complete", "--dsn", d, "--id", "job-1",
                       "--token", token, "--result", "{\"ok\":true}", NULL),
                   0);
  assert_contains(out, "already");
  free(out);
  int ex = run(&out, NULL, "complete", "--dsn", d, "--id", "job-1", "--token",
               "0000000000000000-0000000000000000", "--result",
               "{\"ok\":false}", NULL);
  if (ex != 3)
    fail_msg("complete with a stranger's token exited %d: %s", ex, out);
  assert_contains(out, "lease lost");
  free(out);
  assert_int_equal(
      q_long(f,
             "SELECT count(*) FROM claimer.results WHERE item_id = "
             "'job-1' AND token = '%s' AND result = '{\"ok\":true}'",
             token),
      1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results"), 1);
  char *st = q_text(f, "SELECT state FROM claimer.items WHERE item_id = "
                       "'job-1'");
  assert_string_equal(st, "done");
  free(st);

  /* Fail until dead. */
  assert_int_equal(run(&out, NULL, "enqueue", "--dsn", d, "-q", "jobs", "--id",
                       "job-2", "--max-attempts", "2", NULL),
                   0);
  free(out);
  claimed_t c;
  claim_one(f, "jobs", "W1", "job-2", &c);
  assert_int_equal(c.attempt, 1);
  assert_int_equal(run(&text, NULL, "fail", "--dsn", d, "--id", "job-2",
                       "--token", c.token, "--error", "boom", NULL),
                   0);
  o = parse_json(text);
  assert_string_equal(member_str(o, "item_id"), "job-2");
  assert_string_equal(member_str(o, "state"), "ready");
  assert_int_equal(member_int(o, "attempts"), 1);
  assert_non_null(strchr(member_str(o, "retry_at"), 'T'));
  json_object_put(o);
  free(text);
  assert_int_equal(
      q_long(f, "SELECT count(*) FROM claimer.items WHERE item_id = 'job-2' "
                "AND state = 'ready' AND attempts = 1 AND last_error = "
                "'boom'"),
      1);
  th_exec(f->raw, "UPDATE claimer.items SET run_at = now() WHERE item_id = "
                  "'job-2'");
  claim_one(f, "jobs", "W1", "job-2", &c);
  assert_int_equal(c.attempt, 2);
  assert_int_equal(run(&text, NULL, "fail", "--dsn", d, "--id", "job-2",
                       "--token", c.token, "--error", "boom again", NULL),
                   0);
  o = parse_json(text);
  assert_string_equal(member_str(o, "state"), "dead");
  assert_int_equal(member_int(o, "attempts"), 2);
  json_object_put(o);
  free(text);
  assert_int_equal(
      q_long(f, "SELECT count(*) FROM claimer.items WHERE item_id = 'job-2' "
                "AND state = 'dead' AND attempts = 2"),
      1);

  /* Release gives the lease back without spending an attempt. */
  assert_int_equal(run(&out, NULL, "enqueue", "--dsn", d, "-q", "jobs", "--id",
                       "job-3", NULL),
                   0);
  free(out);
  claim_one(f, "jobs", "W2", "job-3", &c);
  assert_int_equal(run(&out, NULL, "release", "--dsn", d, "--id", "job-3",
                       "--token", c.token, NULL),
                   0);
  free(out);
  assert_int_equal(
      q_long(f, "SELECT count(*) FROM claimer.items WHERE item_id = 'job-3' "
                "AND state = 'ready' AND attempts = 0"),
      1);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims WHERE item_id = "
                          "'job-3'"),
                   0);
  ex = run(&out, NULL, "release", "--dsn", d, "--id", "job-3", "--token",
           c.token, NULL);
  if (ex != 3)
    fail_msg("a second release exited %d: %s", ex, out);
  assert_contains(out, "lease lost");
  free(out);

  /* Heartbeat prints the leases the worker still holds. */
  claim_one(f, "jobs", "W3", "job-3", &c);
  assert_int_equal(c.attempt, 1);
  assert_int_equal(run(&text, NULL, "heartbeat", "--dsn", d, "--worker", "W3",
                       "--lease", "120", NULL),
                   0);
  assert_int_equal(line_count(text), 1);
  o = parse_json(text);
  assert_string_equal(member_str(o, "item_id"), "job-3");
  assert_string_equal(member_str(o, "token"), c.token);
  assert_non_null(strchr(member_str(o, "lease_until"), 'T'));
  json_object_put(o);
  free(text);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims WHERE item_id = "
                          "'job-3' AND lease_until > now() + interval '100 s'"),
                   1);
  /* A worker holding nothing gets nothing back. */
  assert_int_equal(
      run(&out, NULL, "heartbeat", "--dsn", d, "--worker", "W-idle", NULL), 0);
  assert_string_equal(out, "");
  free(out);

  /* Nothing is stale; job-2's death raised an item_dead alert, which this
   * run announces first: exit 4 says so.  A second run has nothing new. */
  assert_int_equal(run(&out, NULL, "reap", "--dsn", d, "--once", NULL), 4);
  assert_contains(out, "reaped 0 stale leases");
  assert_contains(out, "event=alert kind=item_dead subject=job-2");
  assert_contains(out, "1 announced");
  free(out);
  assert_int_equal(run(&out, NULL, "reap", "--dsn", d, "--once", NULL), 0);
  assert_contains(out, "0 raised, 0 resolved, 0 announced");
  free(out);
  assert_int_equal(q_long(f,
                          "SELECT count(*) FROM claimer.claims WHERE item_id = "
                          "'job-3'"),
                   1);

  /* Status: anon has 1 ready; jobs has job-1 done, job-2 dead, job-3
   * leased. */
  assert_int_equal(run(&out, NULL, "status", "--dsn", d, NULL), 0);
  assert_contains(out, "QUEUE");
  int seen = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    char q[64];
    long ready, sched, leased, done, dead, stale;
    if (sscanf(line, "%63s %ld %ld %ld %ld %ld %ld", q, &ready, &sched, &leased,
               &done, &dead, &stale) != 7)
      continue;
    if (strcmp(q, "jobs") == 0) {
      seen |= 1;
      assert_int_equal(ready, 0);
      assert_int_equal(sched, 0);
      assert_int_equal(leased, 1);
      assert_int_equal(done, 1);
      assert_int_equal(dead, 1);
      assert_int_equal(stale, 0);
    } else if (strcmp(q, "anon") == 0) {
      seen |= 2;
      assert_int_equal(ready, 1);
      assert_int_equal(leased + done + dead + sched + stale, 0);
    }
  }
  assert_int_equal(seen, 3);
  free(out);
  assert_int_equal(run(&out, NULL, "status", "--dsn", d, "--json", NULL), 0);
  assert_int_equal(line_count(out), 2);
  seen = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    o = parse_json(line);
    const char *q = member_str(o, "queue");
    if (strcmp(q, "jobs") == 0) {
      seen |= 1;
      assert_int_equal(member_int(o, "ready"), 0);
      assert_int_equal(member_int(o, "scheduled"), 0);
      assert_int_equal(member_int(o, "leased"), 1);
      assert_int_equal(member_int(o, "done"), 1);
      assert_int_equal(member_int(o, "dead"), 1);
      assert_int_equal(member_int(o, "stale"), 0);
    } else if (strcmp(q, "anon") == 0) {
      seen |= 2;
      assert_int_equal(member_int(o, "ready"), 1);
      assert_int_equal(member_int(o, "leased"), 0);
    }
    json_object_put(o);
  }
  assert_int_equal(seen, 3);
  free(out);
}

/* ------------------------------------------------------------------------ */
/* migrate                                                                   */

static void test_migrate_twice(void **state) {
  fixture_t *f = *state;
  char *out = NULL;
  int ex = run(&out, NULL, "migrate", "--dsn", f->dsn, NULL);
  if (ex != 0)
    fail_msg("migrate exited %d: %s", ex, out);
  assert_contains(out, "applying");
  char want[64];
  snprintf(want, sizeof want, "%d applied now", cl_schema_version());
  assert_contains(out, want);
  free(out);
  assert_int_equal(
      th_long(f->raw, "SELECT count(*) FROM claimer.schema_migrations"),
      cl_schema_version());
  ex = run(&out, NULL, "migrate", "--dsn", f->dsn, NULL);
  if (ex != 0)
    fail_msg("second migrate exited %d: %s", ex, out);
  assert_contains(out, "up to date");
  assert_contains(out, "0 applied now");
  assert_lacks(out, "applying");
  free(out);
  assert_int_equal(
      th_long(f->raw, "SELECT count(*) FROM claimer.schema_migrations"),
      cl_schema_version());
}

/* ------------------------------------------------------------------------ */
/* Bulk NDJSON                                                               */

static void test_ndjson_bulk(void **state) {
  fixture_t *f = *state;
  size_t cap = (size_t)NDJSON_LINES * 64, len = 0;
  char *in = malloc(cap);
  assert_non_null(in);
  for (int i = 0; i < NDJSON_LINES; i++)
    len += (size_t)snprintf(in + len, cap - len,
                            "{\"id\":\"bulk-%05d\",\"payload\":{\"i\":%d}}\n",
                            i, i);
  assert_true(len < cap);
  char *out = NULL;
  int ex =
      run(&out, in, "enqueue", "--dsn", f->dsn, "-q", "bulk", "--ndjson", NULL);
  if (ex != 0)
    fail_msg("exit %d: %s", ex, out);
  assert_contains(out, "created 2000, existed 0, rejected 0");
  free(out);
  assert_int_equal(item_count(f), NDJSON_LINES);
  assert_int_equal(th_long(f->raw,
                           "SELECT count(*) FROM claimer.items WHERE queue = "
                           "'bulk' AND (payload->>'i')::int = "
                           "substr(item_id, 6)::int"),
                   NDJSON_LINES);
  ex =
      run(&out, in, "enqueue", "--dsn", f->dsn, "-q", "bulk", "--ndjson", NULL);
  if (ex != 0)
    fail_msg("exit %d: %s", ex, out);
  assert_contains(out, "created 0, existed 2000, rejected 0");
  free(out);
  assert_int_equal(item_count(f), NDJSON_LINES);
  free(in);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_bad_dsn),
      T(test_bad_payload),
      T(test_empty_id),
      T(test_oversized_id),
      T(test_invalid_utf8_id),
      T(test_injection_queue),
      T(test_queue_colon_and_weights),
      T(test_negative_lease),
      T(test_unknown_flag),
      T(test_reap_bad_config),
      T(test_missing_required),
      T(test_ndjson_bad_line),
      T(test_ndjson_skip_invalid),
      T(test_out_of_range_number),
      T(test_ndjson_max_attempts),
      T(test_ndjson_duplicate_key),
      T(test_ndjson_long_line),
      T(test_complete_unknown_item),
      T(test_unreachable_host),
      T(test_wrong_password),
      T(test_help),
      T(test_worker_flow),
      cmocka_unit_test_setup_teardown(test_migrate_twice, setup_unmigrated,
                                      teardown),
      T(test_ndjson_bulk),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("cli", tests, th_group_setup,
                                     th_group_teardown);
}
