/*
 * test_ack.c: the acknowledgement policy of claimer/ack.h, row by row.
 * Each case below is one row of the header's table tried with inputs
 * that match it (for rows that hold for "any" operation, once per
 * operation; for rows with a bound, on both sides of it), and each runs as
 * a test of its own so that the count printed is the count of cases.
 * Then the counters cl__ack_step() keeps, whole ladders walked to their
 * end (a database that refuses everything, a connection that never comes
 * back), the statement each state sends and the texts of the stand-ins.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ack.h"

enum { C = CL__ACK_COMPLETE, F = CL__ACK_FAIL, R = CL__ACK_RELEASE };
#define OK CL__ACK_GOT_OK
#define ALREADY CL__ACK_GOT_ALREADY
#define NO_CLAIM CL__ACK_GOT_NO_CLAIM
#define LOST CL__ACK_GOT_CONN_LOST
#define DB CL__ACK_GOT_DB_ERROR

typedef struct row_case {
  const char *name;
  int op, got;
  int resends, db_errors, settling, stand_in, limit;
  cl__ack_step_t want;
} row_case_t;

#define ROW(name, op, got, resends, db, settling, stand_in, limit, want)       \
  { name, op, got, resends, db, settling, stand_in, limit, CL__ACK_##want }

static const row_case_t rows[] = {
    /* any, OK, not settling: DONE */
    ROW("r01 complete OK -> DONE", C, OK, 0, 0, 0, 0, 8, DONE),
    ROW("r01 fail OK -> DONE", F, OK, 0, 0, 0, 0, 8, DONE),
    ROW("r01 release OK -> DONE", R, OK, 0, 0, 0, 0, 8, DONE),
    ROW("r01 fail OK after resends and a stand-in -> DONE", F, OK, 3, 1, 0, 1,
        0, DONE),
    /* any, OK or ALREADY, settling: ALREADY_DONE */
    ROW("r02 complete read found it -> ALREADY_DONE", C, ALREADY, 1, 0, 1, 0, 8,
        ALREADY_DONE),
    ROW("r02 fail read found it -> ALREADY_DONE", F, ALREADY, 1, 0, 1, 0, 8,
        ALREADY_DONE),
    ROW("r02 complete read OK -> ALREADY_DONE", C, OK, 1, 0, 1, 0, 0,
        ALREADY_DONE),
    ROW("r02 fail read OK -> ALREADY_DONE", F, OK, 2, 1, 1, 0, 0, ALREADY_DONE),
    /* any, ALREADY, not settling: ALREADY_DONE */
    ROW("r03 complete ALREADY -> ALREADY_DONE", C, ALREADY, 1, 0, 0, 0, 8,
        ALREADY_DONE),
    ROW("r03 complete ALREADY, no resend -> ALREADY_DONE", C, ALREADY, 0, 0, 0,
        0, 8, ALREADY_DONE),
    ROW("r03 fail ALREADY -> ALREADY_DONE", F, ALREADY, 1, 0, 0, 0, 8,
        ALREADY_DONE),
    ROW("r03 release ALREADY -> ALREADY_DONE", R, ALREADY, 0, 0, 0, 0, 8,
        ALREADY_DONE),
    /* release, NO_CLAIM: LEASE_LOST (no settling read) */
    ROW("r04 release NO_CLAIM -> LEASE_LOST", R, NO_CLAIM, 0, 0, 0, 0, 8,
        LEASE_LOST),
    ROW("r04 release NO_CLAIM after a resend -> LEASE_LOST", R, NO_CLAIM, 1, 0,
        0, 0, 8, LEASE_LOST),
    /* complete/fail, NO_CLAIM, settling: LEASE_LOST */
    ROW("r05 complete read found nothing -> LEASE_LOST", C, NO_CLAIM, 1, 0, 1,
        0, 8, LEASE_LOST),
    ROW("r05 fail read found nothing -> LEASE_LOST", F, NO_CLAIM, 4, 1, 1, 0, 0,
        LEASE_LOST),
    /* complete/fail, NO_CLAIM, no resend: LEASE_LOST */
    ROW("r06 complete NO_CLAIM first send -> LEASE_LOST", C, NO_CLAIM, 0, 0, 0,
        0, 8, LEASE_LOST),
    ROW("r06 fail NO_CLAIM first send -> LEASE_LOST", F, NO_CLAIM, 0, 0, 0, 0,
        8, LEASE_LOST),
    ROW("r06 fail NO_CLAIM after db errors only -> LEASE_LOST", F, NO_CLAIM, 0,
        2, 0, 1, 8, LEASE_LOST),
    /* complete/fail, NO_CLAIM, resends > 0: SETTLE */
    ROW("r07 complete NO_CLAIM after a resend -> SETTLE", C, NO_CLAIM, 1, 0, 0,
        0, 8, SETTLE),
    ROW("r07 fail NO_CLAIM after a resend -> SETTLE", F, NO_CLAIM, 1, 0, 0, 0,
        8, SETTLE),
    ROW("r07 fail NO_CLAIM after resends, with stand-in -> SETTLE", F, NO_CLAIM,
        5, 0, 0, 1, 0, SETTLE),
    /* any, CONN_LOST, under the limit or none: RESEND */
    ROW("r08 complete CONN_LOST -> RESEND", C, LOST, 0, 0, 0, 0, 8, RESEND),
    ROW("r08 fail CONN_LOST -> RESEND", F, LOST, 0, 0, 0, 0, 8, RESEND),
    ROW("r08 release CONN_LOST -> RESEND", R, LOST, 0, 0, 0, 0, 8, RESEND),
    ROW("r08 complete CONN_LOST, one below the limit -> RESEND", C, LOST, 7, 0,
        0, 0, 8, RESEND),
    ROW("r08 complete CONN_LOST, no limit -> RESEND", C, LOST, 1000, 0, 0, 0, 0,
        RESEND),
    ROW("r08 settling read CONN_LOST -> RESEND", C, LOST, 1, 0, 1, 0, 8,
        RESEND),
    ROW("r08 fail CONN_LOST after db errors -> RESEND", F, LOST, 0, 2, 0, 0, 8,
        RESEND),
    /* any, CONN_LOST, at the limit: UNSETTLED */
    ROW("r09 complete CONN_LOST at the limit -> UNSETTLED", C, LOST, 8, 0, 0, 0,
        8, UNSETTLED),
    ROW("r09 fail CONN_LOST at the limit -> UNSETTLED", F, LOST, 8, 0, 0, 0, 8,
        UNSETTLED),
    ROW("r09 release CONN_LOST at the limit -> UNSETTLED", R, LOST, 8, 0, 0, 0,
        8, UNSETTLED),
    ROW("r09 settling read CONN_LOST past the limit -> UNSETTLED", F, LOST, 9,
        0, 1, 0, 8, UNSETTLED),
    /* release, DB_ERROR: GIVE_UP at once */
    ROW("r10 release DB_ERROR -> GIVE_UP", R, DB, 0, 0, 0, 0, 8, GIVE_UP),
    ROW("r10 release DB_ERROR after a resend -> GIVE_UP", R, DB, 2, 0, 0, 0, 0,
        GIVE_UP),
    /* complete/fail, DB_ERROR, under the retries: RESEND */
    ROW("r11 complete DB_ERROR first -> RESEND", C, DB, 0, 0, 0, 0, 8, RESEND),
    ROW("r11 complete DB_ERROR second -> RESEND", C, DB, 0, 1, 0, 0, 8, RESEND),
    ROW("r11 fail DB_ERROR first -> RESEND", F, DB, 0, 0, 0, 0, 8, RESEND),
    ROW("r11 fail with stand-in DB_ERROR second -> RESEND", F, DB, 0, 1, 0, 1,
        8, RESEND),
    ROW("r11 settling read DB_ERROR first -> RESEND", C, DB, 1, 0, 1, 0, 8,
        RESEND),
    /* complete/fail, DB_ERROR, settling: GIVE_UP */
    ROW("r12 complete settling read refused -> GIVE_UP", C, DB, 1, 2, 1, 0, 8,
        GIVE_UP),
    ROW("r12 fail settling read refused -> GIVE_UP", F, DB, 1, 2, 1, 0, 8,
        GIVE_UP),
    /* complete, DB_ERROR, refused: TO_FAIL */
    ROW("r13 complete refused -> TO_FAIL", C, DB, 0, 2, 0, 0, 8, TO_FAIL),
    ROW("r13 complete refused after resends -> TO_FAIL", C, DB, 3, 5, 0, 0, 0,
        TO_FAIL),
    /* fail, DB_ERROR, refused, no stand-in yet: STAND_IN */
    ROW("r14 fail refused -> STAND_IN", F, DB, 0, 2, 0, 0, 8, STAND_IN),
    ROW("r14 fail refused after resends -> STAND_IN", F, DB, 2, 3, 0, 0, 0,
        STAND_IN),
    /* fail, DB_ERROR, refused, stand-in sent: GIVE_UP */
    ROW("r15 stand-in refused -> GIVE_UP", F, DB, 0, 2, 0, 1, 8, GIVE_UP),
    ROW("r15 stand-in refused after resends -> GIVE_UP", F, DB, 4, 2, 0, 1, 0,
        GIVE_UP),
};
enum { NROWS = sizeof rows / sizeof rows[0] };

static void run_row(void **state) {
  const row_case_t *r = *state;
  cl__ack_t a;
  cl__ack_init(&a, (cl__ack_op_t)r->op, r->limit);
  a.resends = r->resends;
  a.db_errors = r->db_errors;
  a.settling = r->settling;
  a.stand_in = r->stand_in;
  cl__ack_t before = a;
  cl__ack_step_t got = cl__ack_next(&a, (cl__ack_got_t)r->got);
  if (got != r->want)
    fail_msg("%s: got %s", r->name, cl__ack_step_name(got));
  /* cl__ack_next() is pure, and cl__ack_step() agrees with it. */
  assert_memory_equal(&a, &before, sizeof a);
  assert_int_equal(cl__ack_step(&a, (cl__ack_got_t)r->got), r->want);
}

/* Every combination of the inputs gives a step of the table, and the
 * steps a row never gives do not appear: a release never settles nor
 * converts; a success is never a lost lease; only a database error
 * converts or gives up. */
static void every_input_has_a_step(void **state) {
  (void)state;
  for (int op = C; op <= R; op++)
    for (int got = OK; got <= DB; got++)
      for (int res = 0; res <= 9; res++)
        for (int db = 0; db <= 3; db++)
          for (int set = 0; set <= 1; set++)
            for (int si = 0; si <= 1; si++)
              for (int lim = 0; lim <= 8; lim += 8) {
                cl__ack_t a;
                cl__ack_init(&a, (cl__ack_op_t)op, lim);
                a.resends = res;
                a.db_errors = db;
                a.settling = set;
                a.stand_in = si;
                cl__ack_step_t s = cl__ack_next(&a, (cl__ack_got_t)got);
                assert_true(s < CL__ACK_STEP_COUNT);
                if (op == R)
                  assert_true(s != CL__ACK_SETTLE && s != CL__ACK_TO_FAIL &&
                              s != CL__ACK_STAND_IN);
                if (got == OK || got == ALREADY)
                  assert_true(s == CL__ACK_DONE || s == CL__ACK_ALREADY_DONE);
                if (s == CL__ACK_TO_FAIL || s == CL__ACK_STAND_IN ||
                    s == CL__ACK_GIVE_UP)
                  assert_int_equal(got, DB);
                if (s == CL__ACK_UNSETTLED)
                  assert_int_equal(got, LOST);
                if (s == CL__ACK_TO_FAIL)
                  assert_int_equal(op, C);
                if (s == CL__ACK_STAND_IN)
                  assert_int_equal(op, F);
              }
}

/* The counters: each resend is counted where its cause says; a new
 * statement starts with no database errors. */
static void step_moves_the_counters(void **state) {
  (void)state;
  cl__ack_t a;
  cl__ack_init(&a, CL__ACK_COMPLETE, 8);
  assert_int_equal(a.op, CL__ACK_COMPLETE);
  assert_int_equal(a.resend_limit, 8);
  assert_int_equal(cl__ack_step(&a, LOST), CL__ACK_RESEND);
  assert_int_equal(a.resends, 1);
  assert_int_equal(a.db_errors, 0);
  assert_int_equal(cl__ack_step(&a, DB), CL__ACK_RESEND);
  assert_int_equal(a.resends, 1);
  assert_int_equal(a.db_errors, 1);
  assert_int_equal(cl__ack_step(&a, NO_CLAIM), CL__ACK_SETTLE);
  assert_int_equal(a.settling, 1);
  assert_int_equal(a.db_errors, 0);
  assert_int_equal(a.op, CL__ACK_COMPLETE);
  assert_int_equal(cl__ack_step(&a, ALREADY), CL__ACK_ALREADY_DONE);
  /* A negative limit means none, like 0. */
  cl__ack_init(&a, CL__ACK_FAIL, -3);
  assert_int_equal(a.resend_limit, 0);
}

/* A database that refuses everything: complete, twice more, becomes a
 * fail; that, twice more, gets its stand-in; that, twice more, is given
 * up.  Nine sends, never a loop. */
static void ladder_refused_complete(void **state) {
  (void)state;
  static const cl__ack_step_t want[] = {
      CL__ACK_RESEND, CL__ACK_RESEND, CL__ACK_TO_FAIL,
      CL__ACK_RESEND, CL__ACK_RESEND, CL__ACK_STAND_IN,
      CL__ACK_RESEND, CL__ACK_RESEND, CL__ACK_GIVE_UP};
  cl__ack_t a;
  cl__ack_init(&a, CL__ACK_COMPLETE, 0);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    cl__ack_step_t s = cl__ack_step(&a, DB);
    if (s != want[i])
      fail_msg("send %zu: got %s, want %s", i + 1, cl__ack_step_name(s),
               cl__ack_step_name(want[i]));
    if (s == CL__ACK_TO_FAIL) {
      assert_int_equal(a.op, CL__ACK_FAIL);
      assert_int_equal(a.converted, 1);
      assert_int_equal(a.db_errors, 0);
      assert_int_equal(cl__ack_stmt(&a), CL__STMT_FAIL);
    }
    if (s == CL__ACK_STAND_IN) {
      assert_int_equal(a.stand_in, 1);
      assert_int_equal(a.db_errors, 0);
    }
  }
  assert_int_equal(a.resends, 0);
}

/* A refused fail: its stand-in, then given up.  A refused release: given
 * up at once. */
static void ladder_refused_fail_and_release(void **state) {
  (void)state;
  cl__ack_t a;
  cl__ack_init(&a, CL__ACK_FAIL, 8);
  assert_int_equal(cl__ack_step(&a, DB), CL__ACK_RESEND);
  assert_int_equal(cl__ack_step(&a, DB), CL__ACK_RESEND);
  assert_int_equal(cl__ack_step(&a, DB), CL__ACK_STAND_IN);
  assert_int_equal(a.converted, 0);
  assert_int_equal(cl__ack_step(&a, OK), CL__ACK_DONE);
  cl__ack_init(&a, CL__ACK_RELEASE, 8);
  assert_int_equal(cl__ack_step(&a, DB), CL__ACK_GIVE_UP);
}

/* A connection that never comes back: with a limit, `limit` resends then
 * UNSETTLED; without, resends for ever (the worker's stop timer ends it). */
static void ladder_connection_gone(void **state) {
  (void)state;
  cl__ack_t a;
  cl__ack_init(&a, CL__ACK_COMPLETE, 8);
  for (int i = 0; i < 8; i++)
    assert_int_equal(cl__ack_step(&a, LOST), CL__ACK_RESEND);
  assert_int_equal(a.resends, 8);
  assert_int_equal(cl__ack_step(&a, LOST), CL__ACK_UNSETTLED);
  cl__ack_init(&a, CL__ACK_COMPLETE, 0);
  for (int i = 0; i < 10000; i++)
    assert_int_equal(cl__ack_step(&a, LOST), CL__ACK_RESEND);
}

/* G9 walked through: the first send's answer is lost, the resend finds
 * no claim, the settling read finds this token's result (committed) or
 * finds nothing (the lease is lost). */
static void ladder_ambiguous(void **state) {
  (void)state;
  cl__ack_t a;
  cl__ack_init(&a, CL__ACK_COMPLETE, 8);
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_COMPLETE);
  assert_int_equal(cl__ack_step(&a, LOST), CL__ACK_RESEND);
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_COMPLETE);
  assert_int_equal(cl__ack_step(&a, NO_CLAIM), CL__ACK_SETTLE);
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_COMPLETE_CHECK);
  assert_int_equal(cl__ack_step(&a, LOST), CL__ACK_RESEND);
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_COMPLETE_CHECK);
  assert_int_equal(cl__ack_step(&a, ALREADY), CL__ACK_ALREADY_DONE);
  cl__ack_init(&a, CL__ACK_FAIL, 8);
  assert_int_equal(cl__ack_step(&a, LOST), CL__ACK_RESEND);
  assert_int_equal(cl__ack_step(&a, NO_CLAIM), CL__ACK_SETTLE);
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_FAIL_CHECK);
  assert_int_equal(cl__ack_step(&a, NO_CLAIM), CL__ACK_LEASE_LOST);
}

static void statements(void **state) {
  (void)state;
  cl__ack_t a;
  cl__ack_init(&a, CL__ACK_FAIL, 0);
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_FAIL);
  cl__ack_init(&a, CL__ACK_RELEASE, 0);
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_RELEASE);
  a.settling = 1; /* never by the table; still a release */
  assert_int_equal(cl__ack_stmt(&a), CL__STMT_RELEASE);
}

static void error_texts(void **state) {
  (void)state;
  char *e = cl__ack_error_text(CL__ACK_TO_FAIL, "value too long");
  assert_string_equal(e, "the result could not be stored: value too long");
  free(e);
  e = cl__ack_error_text(CL__ACK_STAND_IN, NULL);
  assert_string_equal(e, "the failure could not be recorded as given: ");
  free(e);
  assert_null(cl__ack_error_text(CL__ACK_RESEND, "x"));
  /* The stand-in is short, and a long reason is clipped on a character
   * boundary: 299 ASCII bytes then 'é' (2 bytes) straddling byte 300. */
  char reason[1000];
  memset(reason, 'a', 299);
  strcpy(reason + 299, "\xc3\xa9 and more");
  e = cl__ack_error_text(CL__ACK_STAND_IN, reason);
  size_t lead = strlen("the failure could not be recorded as given: ");
  assert_int_equal(strlen(e), lead + 299);
  free(e);
  memset(reason, 'b', sizeof reason - 1);
  reason[sizeof reason - 1] = '\0';
  e = cl__ack_error_text(CL__ACK_STAND_IN, reason);
  assert_int_equal(strlen(e), lead + 300);
  free(e);
}

static void step_names(void **state) {
  (void)state;
  assert_string_equal(cl__ack_step_name(CL__ACK_DONE), "DONE");
  assert_string_equal(cl__ack_step_name(CL__ACK_UNSETTLED), "UNSETTLED");
  assert_string_equal(cl__ack_step_name(CL__ACK_STEP_COUNT), "?");
  assert_string_equal(cl__ack_step_name((cl__ack_step_t)-1), "?");
}

int main(void) {
  static const struct CMUnitTest fixed[] = {
      cmocka_unit_test(every_input_has_a_step),
      cmocka_unit_test(step_moves_the_counters),
      cmocka_unit_test(ladder_refused_complete),
      cmocka_unit_test(ladder_refused_fail_and_release),
      cmocka_unit_test(ladder_connection_gone),
      cmocka_unit_test(ladder_ambiguous),
      cmocka_unit_test(statements),
      cmocka_unit_test(error_texts),
      cmocka_unit_test(step_names),
  };
  enum { NFIXED = sizeof fixed / sizeof fixed[0] };
  struct CMUnitTest tests[NROWS + NFIXED];
  for (size_t i = 0; i < NROWS; i++)
    tests[i] = (struct CMUnitTest){.name = rows[i].name,
                                   .test_func = run_row,
                                   .initial_state = (void *)&rows[i]};
  for (size_t i = 0; i < NFIXED; i++)
    tests[NROWS + i] = fixed[i];
  return cmocka_run_group_tests_name("ack", tests, NULL, NULL);
}
