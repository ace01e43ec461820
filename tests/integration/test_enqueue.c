/*
 * test_enqueue.c: enqueue against a real PostgreSQL where the database
 * itself is the judge.  First, cl_check_json accepts exactly what jsonb
 * input accepts: every case (hand-picked bounds of numeric, string escapes,
 * and numbers generated around those bounds) goes both to the check and to
 * `SELECT $1::jsonb`, and the two verdicts must agree.  Second, concurrent
 * batch enqueues of the same ids in different orders never deadlock: eight
 * `claimer enqueue --ndjson` processes, started together, each enqueue the
 * same 10,000 ids shuffled differently; every id ends up once, and each
 * producer's created + existed counts its whole input (G1).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "harness.h"

enum { IDS = 10000, PRODUCERS = 8 };

typedef struct fixture {
  char dsn[1024];
  PGconn *raw;
} fixture_t;

static int setup(void **state) {
  static int n;
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -1;
  *state = f;
  char name[64];
  snprintf(name, sizeof name, "enqueue_%d", ++n);
  if (th_db_create(&th_pg, name, 1, f->dsn, sizeof f->dsn) != 0)
    return -1;
  f->raw = th_connect(f->dsn);
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (f->raw != NULL)
    PQfinish(f->raw);
  free(f);
  return 0;
}

/* A small deterministic generator (xorshift64*), so that a failure can be
 * reproduced. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717u;
}

/* ------------------------------------------------------------------------ */
/* cl_check_json against jsonb                                               */

/* Returns 1 when PostgreSQL's jsonb input takes text, 0 when it refuses it
 * with a data error (class 22), and fails the test on anything else. */
static int jsonb_takes(PGconn *pg, const char *text) {
  const char *params[] = {text};
  PGresult *r = PQexecParams(pg, "SELECT $1::jsonb IS NOT NULL", 1, NULL,
                             params, NULL, NULL, 0);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
  const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  if (!ok && (state == NULL || strncmp(state, "22", 2) != 0)) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
    PQclear(r);
    fail_msg("jsonb of %.60s: %s", text, msg);
  }
  PQclear(r);
  return ok;
}

/* Compares the two verdicts on text; returns 1 when they agree, else
 * prints both and returns 0. */
static int same_verdict(PGconn *pg, const char *text) {
  char err[512] = "";
  int ours = cl_check_json(text, strlen(text), err, sizeof err) == 0;
  int theirs = jsonb_takes(pg, text);
  if (ours == theirs)
    return 1;
  fprintf(stderr,
          "disagree on %.80s%s (%zu bytes): cl_check_json %s%s%s, "
          "jsonb %s\n",
          text, strlen(text) > 80 ? "..." : "", strlen(text),
          ours ? "accepts" : "refuses", ours ? "" : ": ", err,
          theirs ? "accepts" : "refuses");
  return 0;
}

/* Writes a number with nint integer digits (the first nonzero unless
 * lead_zero), nfrac fraction digits (0: no point) of which the last is
 * nonzero unless trailing_zero, and exponent exp (none when no_exp) into a
 * malloc'd string. */
static char *make_number(size_t nint, int lead_zero, size_t nfrac,
                         int trailing_zero, long long exp, int no_exp) {
  char *s = malloc(nint + nfrac + 64);
  assert_non_null(s);
  size_t o = 0;
  if (rng() % 4 == 0)
    s[o++] = '-';
  if (lead_zero) {
    s[o++] = '0';
  } else {
    for (size_t i = 0; i < nint; i++)
      s[o++] = (char)('0' + (i == 0 ? 1 + rng() % 9 : rng() % 10));
  }
  if (nfrac > 0) {
    s[o++] = '.';
    for (size_t i = 0; i < nfrac; i++)
      s[o++] = (char)('0' + (i + 1 == nfrac && !trailing_zero ? 1 + rng() % 9
                                                              : rng() % 10));
  }
  if (!no_exp)
    o += (size_t)sprintf(s + o, "%s%lld", rng() % 2 ? "e" : "E", exp);
  s[o] = '\0';
  return s;
}

static void test_check_json_matches_jsonb(void **state) {
  fixture_t *f = *state;
  static const char *const cases[] = {"1e999999",
                                      "1e131071",
                                      "1e131072",
                                      "9.999e131071",
                                      "10e131071",
                                      "0.1e131072",
                                      "0.01e131073",
                                      "1e-16383",
                                      "1e-16384",
                                      "0.5e-16382",
                                      "0.5e-16383",
                                      "0e1073741822",
                                      "0e1073741823",
                                      "0e-1073741822",
                                      "0e-16383",
                                      "0e-16384",
                                      "0.0e-16383",
                                      "-1e131071",
                                      "-0",
                                      "-0.0",
                                      "1E+2",
                                      "1e+0131071",
                                      "1e0000000000000000000000131072",
                                      "0e99999999999999999999",
                                      "0e-99999999999999999999",
                                      "123e-16381",
                                      "123e-16382",
                                      "123e-16384",
                                      "0.000e16387",
                                      "0.000e-16380",
                                      "0.000e-16381",
                                      "{\"a\":[1,{\"b\":1e131072}]}",
                                      "[1e131071,1e-16383]",
                                      "\"\\u0000\"",
                                      "\"a\\u0000b\"",
                                      "{\"\\u0000\":1}",
                                      "\"\\ud800\"",
                                      "\"\\udc00\"",
                                      "\"\\ud800\\udc00\"",
                                      "\"\\ud800x\"",
                                      "\"\\ud800\\u0041\"",
                                      "\"\\ud800\\ud800\\udc00\"",
                                      "\"\\udbff\\udfff\"",
                                      "\"\\u0001\"",
                                      "\"\x7f\"",
                                      "\"\xc2\x80\"",
                                      "{\"a\":1,\"a\":2}",
                                      "NaN",
                                      "Infinity",
                                      "-Infinity",
                                      "1.",
                                      ".5",
                                      "01",
                                      "+1",
                                      "1e",
                                      "1.e5",
                                      "\"\\x\"",
                                      "\"\t\"",
                                      "[1,]",
                                      "{\"a\":1,}",
                                      " 7 ",
                                      "\f1",
                                      "true",
                                      "null",
                                      "\"\\/\"",
                                      NULL};
  int bad = 0, n = 0;
  for (int i = 0; cases[i] != NULL; i++, n++)
    bad += !same_verdict(f->raw, cases[i]);
  /* Generated numbers around each bound: digits before the point near
   * 131072, after it near 16383, exponents that move either. */
  for (int k = 0; k < 400; k++, n++) {
    size_t nint = 1, nfrac = 0;
    long long exp = 0;
    int lead_zero = 0, trailing_zero = (int)(rng() % 3 == 0), no_exp = 0;
    switch (rng() % 5) {
    case 0: /* long integers, no exponent */
      nint = 131072 - 3 + rng() % 6;
      no_exp = 1;
      break;
    case 1: /* long fractions */
      lead_zero = (int)(rng() % 2);
      nfrac = 16383 - 3 + rng() % 6;
      no_exp = (int)(rng() % 2);
      exp = (long long)(rng() % 7) - 3;
      break;
    case 2: /* short mantissa, large exponent */
      nint = 1 + rng() % 5;
      nfrac = rng() % 4;
      exp = 131072 - (long long)nint - 3 + (long long)(rng() % 7);
      break;
    case 3: /* short mantissa, small exponent */
      nint = 1 + rng() % 5;
      lead_zero = (int)(rng() % 3 == 0);
      nfrac = rng() % 4;
      exp = -(16383 - (long long)nfrac - 3 + (long long)(rng() % 7));
      break;
    default: /* zero with an exponent near numeric_in's own limit */
      lead_zero = 1;
      nfrac = rng() % 3;
      trailing_zero = 1;
      exp = (rng() % 2 ? 1 : -1) * (1073741823LL - 2 + (long long)(rng() % 4));
      break;
    }
    char *s = make_number(nint, lead_zero, nfrac, trailing_zero, exp, no_exp);
    bad += !same_verdict(f->raw, s);
    free(s);
  }
  fprintf(stderr,
          "cl_check_json and jsonb compared on %d texts: %d "
          "disagreements\n",
          n, bad);
  assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------------ */
/* Concurrent batch enqueues                                                 */

/* Writes the ids 0..IDS-1 as NDJSON lines to path in an order shuffled by
 * seed (Fisher-Yates). */
static void write_shuffled(const char *path, uint64_t seed) {
  int *order = malloc(IDS * sizeof *order);
  assert_non_null(order);
  for (int i = 0; i < IDS; i++)
    order[i] = i;
  rng_state = seed;
  for (int i = IDS - 1; i > 0; i--) {
    int j = (int)(rng() % (uint64_t)(i + 1));
    int t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  FILE *out = fopen(path, "w");
  if (out == NULL)
    fail_msg("%s: %s", path, strerror(errno));
  for (int i = 0; i < IDS; i++)
    fprintf(out, "{\"id\":\"dl-%05d\",\"payload\":{\"i\":%d}}\n", order[i],
            order[i]);
  fclose(out);
  free(order);
}

static void test_concurrent_batches_no_deadlock(void **state) {
  fixture_t *f = *state;
  char dir[] = "/tmp/claimer-enqueue-XXXXXX";
  if (mkdtemp(dir) == NULL)
    fail_msg("mkdtemp: %s", strerror(errno));
  char in[PRODUCERS][600], log[PRODUCERS][600];
  for (int p = 0; p < PRODUCERS; p++) {
    snprintf(in[p], sizeof in[p], "%s/in-%d.ndjson", dir, p);
    snprintf(log[p], sizeof log[p], "%s/out-%d.log", dir, p);
    write_shuffled(in[p], 1000003u * (uint64_t)(p + 1));
  }
  /* Every producer waits on the same pipe, so that they start together. */
  int gate[2];
  assert_int_equal(pipe(gate), 0);
  pid_t pid[PRODUCERS];
  fflush(NULL);
  for (int p = 0; p < PRODUCERS; p++) {
    pid[p] = fork();
    assert_true(pid[p] >= 0);
    if (pid[p] == 0) {
      close(gate[1]);
      char b;
      if (read(gate[0], &b, 1) < 0)
        _exit(126);
      int fin = open(in[p], O_RDONLY),
          fout = open(log[p], O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fin < 0 || fout < 0)
        _exit(126);
      dup2(fin, 0);
      dup2(fout, 1);
      dup2(fout, 2);
      unsetenv("CLAIMER_DSN");
      execl(th_claimer_bin(), th_claimer_bin(), "enqueue", "--dsn", f->dsn,
            "-q", "dl", "--ndjson", "--batch", "500", (char *)NULL);
      _exit(127);
    }
  }
  close(gate[0]);
  close(gate[1]); /* end of file on the pipe: all start */
  long created_sum = 0;
  int failed = 0, deadlocks = 0;
  for (int p = 0; p < PRODUCERS; p++) {
    int ex = th_wait_exit(pid[p], 240);
    char *out = th_read_file(log[p]);
    long created = -1, existed = -1, rejected = -1;
    const char *line = strstr(out, "created ");
    if (line != NULL)
      sscanf(line, "created %ld, existed %ld, rejected %ld", &created, &existed,
             &rejected);
    deadlocks += th_count(out, "deadlock detected");
    if (ex != 0 || created < 0 || created + existed != IDS || rejected != 0) {
      fprintf(stderr, "producer %d: exit %d: %s", p, ex, out);
      failed++;
    } else {
      created_sum += created;
    }
    free(out);
    unlink(in[p]);
    unlink(log[p]);
  }
  rmdir(dir);
  fprintf(stderr, "%d of %d producers failed, %d with deadlock detected\n",
          failed, PRODUCERS, deadlocks);
  assert_int_equal(deadlocks, 0);
  assert_int_equal(failed, 0);
  assert_int_equal(created_sum, IDS);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"), IDS);
  assert_int_equal(th_long(f->raw, "SELECT count(DISTINCT item_id) FROM "
                                   "claimer.items WHERE queue = 'dl' AND "
                                   "(payload->>'i')::int = "
                                   "substr(item_id, 4)::int"),
                   IDS);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_check_json_matches_jsonb),
      T(test_concurrent_batches_no_deadlock),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("enqueue", tests, th_group_setup,
                                     th_group_teardown);
}
