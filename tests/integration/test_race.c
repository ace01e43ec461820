/*
 * test_race.c: the race itself.  Eight separate processes, each with its
 * own connection, claim and complete 10,000 items at once.  An insert-only
 * log of every claim granted (a trigger installed by this test on
 * claimer.claims) shows that no item was ever granted twice and that no
 * grant came after the item's result; the results table shows one result
 * per item (G2, G3).
 */
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

enum { ITEMS = 10000, PROCS = 8, BATCH = 8 };

/* One racer: claim up to BATCH, complete each, until nothing is ready.
 * Exits 0, or 1 on any unexpected outcome. */
static int racer(const char *dsn, int index) {
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0)
    return 1;
  char worker[32];
  snprintf(worker, sizeof worker, "racer-%d", index);
  int status = 0, empty = 0;
  while (empty < 3) {
    cl_lease_t *l = NULL;
    size_t n = 0;
    if (cl_claim(c, "race", worker, BATCH, 120, &l, &n) != 0) {
      fprintf(stderr, "racer %d: claim: %s\n", index, cl_conn_last_error(c));
      status = 1;
      break;
    }
    empty = n == 0 ? empty + 1 : 0;
    for (size_t i = 0; i < n; i++) {
      char result[64];
      snprintf(result, sizeof result, "{\"by\":%d}", index);
      cl_complete_info_t info;
      int rc = cl_complete(c, l[i].item_id, l[i].token, result, &info);
      if (rc != 0 || info.already) {
        fprintf(stderr, "racer %d: complete %s: %s\n", index, l[i].item_id,
                cl_conn_last_error(c));
        status = 1;
      }
    }
    cl_leases_free(l, n);
  }
  cl_conn_free(&c);
  return status;
}

static void test_eight_processes_ten_thousand_items(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "race", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "CREATE TABLE grants (seq bigserial, item_id text, token text,"
             " at timestamptz DEFAULT clock_timestamp())");
  th_exec(p, "CREATE FUNCTION log_grant() RETURNS trigger LANGUAGE plpgsql "
             "AS $$ BEGIN INSERT INTO grants (item_id, token) VALUES "
             "(NEW.item_id, NEW.token); RETURN NULL; END $$");
  th_exec(p, "CREATE TRIGGER log_grant AFTER INSERT ON claimer.claims "
             "FOR EACH ROW EXECUTE FUNCTION log_grant()");
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, payload) "
             "SELECT 'item-' || g, 'race', jsonb_build_object('n', g) "
             "FROM generate_series(1, 10000) g");

  double t0 = th_now();
  pid_t pids[PROCS];
  for (int i = 0; i < PROCS; i++) {
    fflush(NULL);
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0)
      _exit(racer(dsn, i));
  }
  for (int i = 0; i < PROCS; i++) {
    int st = 0;
    assert_true(waitpid(pids[i], &st, 0) == pids[i]);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
  }
  double secs = th_now() - t0;
  printf("# race: %d items by %d processes in %.2f s (%.0f items/s)\n", ITEMS,
         PROCS, secs, ITEMS / secs);

  /* Every item done once, one result each. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'done' AND attempts = 1"),
                   ITEMS);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results"), ITEMS);
  assert_int_equal(th_long(p, "SELECT count(DISTINCT item_id) FROM "
                              "claimer.results"),
                   ITEMS);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims"), 0);
  /* No item granted twice: with no expiry in this run, a second grant would
   * be a double claim or a claim of a done item. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM grants"), ITEMS);
  assert_int_equal(th_long(p, "SELECT count(DISTINCT item_id) FROM grants"),
                   ITEMS);
  /* Every grant precedes its item's result, and the result carries the
   * granted token. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM grants g JOIN "
                              "claimer.results r USING (item_id) "
                              "WHERE g.token = r.token AND g.at <= "
                              "r.finished_at + interval '1 second'"),
                   ITEMS);
  /* The work was shared. */
  long workers = th_long(p, "SELECT count(DISTINCT worker_id) FROM "
                            "claimer.results");
  printf("# race: %ld of %d processes completed items\n", workers, PROCS);
  assert_true(workers >= 4);
  PQfinish(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_eight_processes_ten_thousand_items),
  };
  return cmocka_run_group_tests_name("race", tests, th_group_setup,
                                     th_group_teardown);
}
