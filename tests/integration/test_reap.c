/*
 * test_reap.c: several reapers at once.  Three processes reap the same
 * 10,000 stale leases concurrently: each lease is ended exactly once, so
 * every item's attempts went up by exactly one.  Then reapers race a
 * heartbeat of the leases' worker: each lease ends up either extended and
 * held (attempts unchanged) or reaped once, never both.
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

enum { ITEMS = 10000 };

/* Enqueues ITEMS items and claims them all for worker w. */
static void lease_all(PGconn *p, const char *dsn) {
  th_exec(p, "INSERT INTO claimer.items (item_id, queue) "
             "SELECT 'item-' || g, 'q' FROM generate_series(1, 10000) g");
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  size_t total = 0;
  for (;;) {
    cl_lease_t *l = NULL;
    size_t n = 0;
    assert_int_equal(cl_claim(c, "q", "w", 500, 300, &l, &n), 0);
    cl_leases_free(l, n);
    if (n == 0)
      break;
    total += n;
  }
  assert_int_equal(total, ITEMS);
  cl_conn_free(&c);
}

/* A reaper process: reaps in batches of 50 until a pass finds nothing,
 * writes how many it expired to fd. */
static int reaper(const char *dsn, int fd) {
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0)
    return 1;
  cl_reap_info_t ri = {0};
  long before;
  do {
    before = ri.expired;
    if (cl_reap(c, 50, &ri) != 0) {
      fprintf(stderr, "reaper: %s\n", cl_conn_last_error(c));
      return 1;
    }
  } while (ri.expired > before);
  cl_conn_free(&c);
  return write(fd, &ri.expired, sizeof ri.expired) == sizeof ri.expired ? 0 : 1;
}

/* Forks n reapers and returns the sum of what they expired. */
static long run_reapers(const char *dsn, int n) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pids[8];
  for (int i = 0; i < n; i++) {
    fflush(NULL);
    pids[i] = fork();
    if (pids[i] == 0) {
      close(fds[0]);
      _exit(reaper(dsn, fds[1]));
    }
  }
  close(fds[1]);
  long sum = 0, one;
  int reports = 0;
  while (read(fds[0], &one, sizeof one) == sizeof one) {
    printf("# reaper expired %ld\n", one);
    sum += one;
    reports++;
  }
  close(fds[0]);
  for (int i = 0; i < n; i++) {
    int st = 0;
    waitpid(pids[i], &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  assert_int_equal(reports, n);
  return sum;
}

static void test_three_reapers_each_lease_once(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "reap3", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  lease_all(p, dsn);
  th_exec(p, "UPDATE claimer.claims SET lease_until = now() - "
             "interval '1 second'");
  assert_int_equal(run_reapers(dsn, 3), ITEMS);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "attempts = 1 AND state = 'ready' AND "
                              "last_error LIKE 'lease expired%'"),
                   ITEMS);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims"), 0);
  /* One lease_expired alert per lease, however many reapers saw it. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.alerts WHERE "
                              "kind = 'lease_expired'"),
                   ITEMS);
  assert_int_equal(th_long(p, "SELECT count(DISTINCT subject) FROM "
                              "claimer.alerts"),
                   ITEMS);
  PQfinish(p);
}

static void test_reapers_race_heartbeat(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "reap_hb", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  lease_all(p, dsn);
  th_exec(p, "UPDATE claimer.claims SET lease_until = now() - "
             "interval '1 second'");
  fflush(NULL);
  pid_t hb = fork();
  if (hb == 0) {
    cl_conn_t *c = NULL;
    if (cl_conn_new(&c, dsn) != 0)
      _exit(1);
    for (int i = 0; i < 20; i++) {
      cl_held_t *h = NULL;
      size_t n = 0;
      if (cl_heartbeat(c, "w", 300, &h, &n) != 0)
        _exit(1);
      cl_held_free(h, n);
    }
    cl_conn_free(&c);
    _exit(0);
  }
  long reaped = run_reapers(dsn, 2);
  int st = 0;
  waitpid(hb, &st, 0);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  long held = th_long(p, "SELECT count(*) FROM claimer.claims");
  printf("# heartbeat kept %ld leases, reapers ended %ld\n", held, reaped);
  assert_int_equal(held + reaped, ITEMS);
  /* Held: leased, attempts 0.  Reaped: ready, attempts 1.  Nothing else. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items i WHERE "
                              "(EXISTS (SELECT 1 FROM claimer.claims c WHERE "
                              "c.item_id = i.item_id) AND i.attempts = 0 AND "
                              "i.state = 'leased') OR (NOT EXISTS (SELECT 1 "
                              "FROM claimer.claims c WHERE c.item_id = "
                              "i.item_id) AND i.attempts = 1 AND i.state = "
                              "'ready')"),
                   ITEMS);
  PQfinish(p);
}

/* Retention deletes old done items with their results, in batches, and
 * never an unfinished item, a dead or discarded one (kept by default: a
 * discarded item_id stays taken), or a result a subscriber is still owed:
 * one it has no delivery of yet, or whose delivery is not settled. */
static void test_retention_keeps_what_is_owed(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "retain", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  /* 250 plain old done items with results (three batches of 100). */
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, state, attempts, "
             "finished_at, enqueued_at) SELECT 'old-' || g, 'q', 'done', 1, "
             "timestamptz '2026-07-01 12:00:00+00' + g * interval '1 ms', "
             "timestamptz '2026-06-30 12:00:00+00' "
             "FROM generate_series(1, 250) g");
  th_exec(p, "INSERT INTO claimer.results (item_id, queue, token, worker_id, "
             "attempt) SELECT item_id, queue, 't', 'w', 1 FROM claimer.items");
  /* Owed to subscriber 'audit' (queue a only): no delivery yet; one
   * delivered; one still sending. */
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, state, attempts, "
             "finished_at) VALUES "
             "('owed', 'a', 'done', 1, '2026-07-01 11:00+00'), "
             "('sent', 'a', 'done', 1, '2026-07-01 11:00+00'), "
             "('sending', 'b', 'done', 1, '2026-07-01 11:00+00'), "
             "('d-retry', 'b', 'done', 1, '2026-07-01 11:00+00'), "
             "('d-held', 'b', 'done', 1, '2026-07-01 11:00+00'), "
             "('d-dead', 'b', 'done', 1, '2026-07-01 11:00+00'), "
             "('fresh', 'q', 'done', 1, now()), "
             "('ready', 'q', 'ready', 0, NULL), "
             "('dead', 'q', 'dead', 3, '2026-07-01 11:00+00'), "
             "('gone', 'q', 'discarded', 3, '2026-07-01 11:00+00')");
  th_exec(p, "UPDATE claimer.items SET enqueued_at = now() - interval "
             "'3 days' WHERE item_id = 'ready'");
  th_exec(p, "INSERT INTO claimer.results (item_id, queue, token, worker_id, "
             "attempt) SELECT item_id, queue, 't', 'w', 1 FROM claimer.items "
             "WHERE item_id IN ('owed', 'sent', 'sending', 'fresh', "
             "'d-retry', 'd-held', 'd-dead')");
  th_exec(p, "INSERT INTO claimer.subscribers (subscriber, queues) VALUES "
             "('audit', '{a}')");
  th_exec(p, "INSERT INTO claimer.deliveries (subscriber, item_id, state, "
             "idempotency_key) VALUES ('audit', 'sent', 'sent', 'k1'), "
             "('email', 'sending', 'sending', 'k2'), "
             "('email', 'd-retry', 'retry', 'k4'), "
             "('email', 'd-held', 'held', 'k5'), "
             "('email', 'd-dead', 'dead', 'k6')");

  /* A session whose dates print in a form that reads back differently
   * (Dublin's "IST" is also Israel's): retention's resume key must not
   * go through it. */
  char dsn2[1200];
  snprintf(dsn2, sizeof dsn2,
           "%s options='-c datestyle=Postgres -c "
           "timezone=Europe/Dublin'",
           dsn);
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn2), 0);
  cl_reaper_opts_t o;
  cl_reaper_opts_init(&o);
  o.batch = 100;
  o.retention_done_s = 86400;
  cl_cycle_info_t info;
  assert_int_equal(cl_reap_cycle(c, &o, &info), 0);
  /* 250 old ones, and 'sent' (its one subscriber has it). */
  assert_int_equal(info.deleted_items, 251);
  assert_int_equal(info.deleted_dead, 0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id LIKE 'old-%' OR item_id = 'sent'"),
                   0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results WHERE "
                              "item_id LIKE 'old-%' OR item_id = 'sent'"),
                   0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id IN ('owed', 'sending', 'fresh', "
                              "'ready', 'dead', 'gone', 'd-retry', "
                              "'d-held', 'd-dead')"),
                   9);
  /* A delivery failed and due again, held in doubt, or dead (a person
   * may retry it) keeps its result too. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results"), 6);
  /* 'owed' goes once audit records it as sent; dead letters go when their
   * own retention says so. */
  th_exec(p, "INSERT INTO claimer.deliveries (subscriber, item_id, state, "
             "idempotency_key) VALUES ('audit', 'owed', 'sent', 'k3')");
  o.retention_dead_s = 86400;
  assert_int_equal(cl_reap_cycle(c, &o, &info), 0);
  assert_int_equal(info.deleted_items, 1);
  assert_int_equal(info.deleted_dead, 2); /* 'dead' and 'gone' */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "item_id IN ('sending', 'fresh', 'ready', "
                              "'d-retry', 'd-held', 'd-dead')"),
                   6);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items"), 6);
  cl_conn_free(&c);
  PQfinish(p);
}

/* An item deleted by hand, or the items table truncated, takes its claim,
 * its result and the result's deliveries with it (schema/010: statement
 * triggers where the foreign keys' ON DELETE CASCADE was), and a delete
 * of many items is one statement per table, not one per row. */
static void test_item_delete_takes_its_rows(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "reap_delete", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, state, attempts) "
             "VALUES ('leased', 'q', 'leased', 1), ('done', 'q', 'done', 1), "
             "('kept', 'q', 'done', 1)");
  th_exec(p, "INSERT INTO claimer.claims (item_id, queue, worker_id, token, "
             "attempt, lease_until) VALUES "
             "('leased', 'q', 'w', 't1', 1, now() + interval '1 h')");
  th_exec(p, "INSERT INTO claimer.results (item_id, queue, token, worker_id, "
             "attempt) VALUES ('done', 'q', 't2', 'w', 1), "
             "('kept', 'q', 't3', 'w', 1)");
  th_exec(p, "INSERT INTO claimer.deliveries (subscriber, item_id, state, "
             "idempotency_key) VALUES ('audit', 'done', 'sent', 'k1'), "
             "('audit', 'kept', 'sent', 'k2')");
  th_exec(p, "DELETE FROM claimer.items WHERE item_id IN ('leased', 'done')");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results WHERE "
                              "item_id = 'done'"),
                   0);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.deliveries WHERE "
                              "item_id = 'done'"),
                   0);
  /* The item not deleted keeps its rows. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.results"), 1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.deliveries"), 1);
  th_exec(p, "TRUNCATE claimer.items");
  assert_int_equal(th_long(p, "SELECT (SELECT count(*) FROM claimer.results)"
                              " + (SELECT count(*) FROM claimer.deliveries)"
                              " + (SELECT count(*) FROM claimer.claims)"),
                   0);
  /* A TRUNCATE that names them too (the benches' and tests' reset). */
  th_exec(p, "INSERT INTO claimer.items (item_id, queue) VALUES ('t', 'q')");
  th_exec(p, "INSERT INTO claimer.results (item_id, queue, token, worker_id, "
             "attempt) VALUES ('t', 'q', 't4', 'w', 1)");
  th_exec(p, "TRUNCATE claimer.items, claimer.claims, claimer.results, "
             "claimer.deliveries CASCADE");
  th_exec(p, "INSERT INTO claimer.items (item_id, queue) VALUES ('t', 'q')");
  th_exec(p, "INSERT INTO claimer.results (item_id, queue, token, worker_id, "
             "attempt) VALUES ('t', 'q', 't4', 'w', 1)");
  th_exec(p, "TRUNCATE claimer.items, claimer.deliveries");
  assert_int_equal(th_long(p, "SELECT (SELECT count(*) FROM claimer.results)"
                              " + (SELECT count(*) FROM claimer.deliveries)"
                              " + (SELECT count(*) FROM claimer.claims)"),
                   0);
  /* No foreign key is checked per row on the hot path any more. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM pg_constraint WHERE "
                              "contype = 'f' AND confrelid = "
                              "'claimer.items'::regclass"),
                   0);
  PQfinish(p);
}

/* A lost worker's heartbeat that arrives while the reaper finds it lost:
 * the heartbeat locks the worker's claims, then its row; the reaper must
 * not wait on those claims while it holds the row (that order deadlocked),
 * so it skips them and the heartbeat goes through.  A worker that never
 * registered its heartbeat interval (a script's `claimer heartbeat`) is
 * never called lost: its leases run to expiry. */
static void test_lost_worker_races_heartbeat(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "reap_lost", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  PGconn *hb = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.items (item_id, queue, state, attempts) "
             "VALUES ('x-1', 'q', 'leased', 1), ('y-1', 'q', 'leased', 1)");
  th_exec(p, "INSERT INTO claimer.workers (worker_id, heartbeat_at, "
             "heartbeat_s) VALUES ('late', now() - interval '1 min', 1), "
             "('script', now() - interval '1 min', NULL)");
  th_exec(p, "INSERT INTO claimer.claims (item_id, queue, worker_id, token, "
             "attempt, lease_until) VALUES "
             "('x-1', 'q', 'late', 'tx', 1, now() + interval '1 h'), "
             "('y-1', 'q', 'script', 'ty', 1, now() + interval '1 h')");
  /* The heartbeat's first half: its claims locked. */
  th_exec(hb, "BEGIN");
  th_exec(hb, "SELECT 1 FROM claimer.claims WHERE worker_id = 'late' "
              "FOR UPDATE");
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  cl_reaper_opts_t o;
  cl_reaper_opts_init(&o);
  cl_cycle_info_t info;
  assert_int_equal(cl_reap_cycle(c, &o, &info), 0);
  assert_int_equal(info.workers_lost, 1);
  assert_int_equal(info.raised[CL_ALERT_WORKER_LOST], 1);
  assert_int_equal(info.leases_released, 0); /* skipped, not waited for */
  /* Its second half goes through: no deadlock. */
  th_exec(hb, "UPDATE claimer.workers SET heartbeat_at = now() "
              "WHERE worker_id = 'late'");
  th_exec(hb, "COMMIT");
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.claims WHERE "
                              "lease_until > now()"),
                   2);
  /* Its next heartbeat (the one above started before the alert) says it
   * is back, so the alert resolves; the script worker was never lost. */
  th_exec(p, "UPDATE claimer.workers SET heartbeat_at = now() "
             "WHERE worker_id = 'late'");
  assert_int_equal(cl_reap_cycle(c, &o, &info), 0);
  assert_int_equal(info.resolved, 1);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.alerts WHERE "
                              "subject = 'script'"),
                   0);
  cl_conn_free(&c);
  PQfinish(hb);
  PQfinish(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_three_reapers_each_lease_once),
      cmocka_unit_test(test_reapers_race_heartbeat),
      cmocka_unit_test(test_retention_keeps_what_is_owed),
      cmocka_unit_test(test_item_delete_takes_its_rows),
      cmocka_unit_test(test_lost_worker_races_heartbeat),
  };
  return cmocka_run_group_tests_name("reap", tests, th_group_setup,
                                     th_group_teardown);
}
