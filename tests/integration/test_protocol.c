/*
 * test_protocol.c: the claim protocol call by call against a real
 * PostgreSQL: idempotent enqueue (G1), claim, complete and its idempotent
 * retry, fencing of complete, fail and heartbeat after a lease was reaped
 * and taken by another worker (G3), fail with backoff until dead, release
 * without spending an attempt, and the shape of tokens (G10).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "harness.h"

typedef struct fixture {
  char dsn[1024];
  cl_conn_t *c;
  PGconn *raw;
} fixture_t;

static int setup(void **state) {
  static int n;
  fixture_t *f = calloc(1, sizeof *f);
  char name[64];
  snprintf(name, sizeof name, "proto_%d", ++n);
  if (th_db_create(&th_pg, name, 1, f->dsn, sizeof f->dsn) != 0)
    return -1;
  if (cl_conn_new(&f->c, f->dsn) != 0 || cl_conn_connect(f->c) != 0)
    return -1;
  f->raw = th_connect(f->dsn);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  cl_conn_free(&f->c);
  PQfinish(f->raw);
  free(f);
  return 0;
}

static void enqueue_one(cl_conn_t *c, const char *id, const char *queue,
                        const char *payload, int max_attempts) {
  cl_item_t it = {.item_id = id,
                  .queue = queue,
                  .payload = payload,
                  .max_attempts = max_attempts};
  int outcome = 0;
  assert_int_equal(cl_enqueue(c, &it, 1, &outcome), 1);
  assert_int_equal(outcome, CL_ENQ_CREATED);
}

/* Claims exactly one lease or fails the test. */
static cl_lease_t *claim_one(cl_conn_t *c, const char *queue,
                             const char *worker, double lease) {
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(c, queue, worker, 1, lease, &l, &n), 0);
  assert_int_equal(n, 1);
  return l;
}

/* Makes every lease of the database stale and reaps it. */
static void expire_and_reap(fixture_t *f, long expect) {
  th_exec(f->raw, "UPDATE claimer.claims SET lease_until = now() - "
                  "interval '1 second'");
  cl_reap_info_t ri = {0};
  assert_int_equal(cl_reap(f->c, 100, &ri), 0);
  assert_int_equal(ri.expired, expect);
}

static void test_enqueue_idempotent(void **state) {
  fixture_t *f = *state;
  cl_item_t it = {.item_id = "a", .queue = "q", .payload = "{\"x\":1}"};
  int outcome = 0;
  assert_int_equal(cl_enqueue(f->c, &it, 1, &outcome), 1);
  assert_int_equal(outcome, CL_ENQ_CREATED);
  /* The same id again, even with another payload, creates nothing. */
  it.payload = "{\"x\":2}";
  assert_int_equal(cl_enqueue(f->c, &it, 1, &outcome), 0);
  assert_int_equal(outcome, CL_ENQ_EXISTED);
  assert_int_equal(th_long(f->raw, "SELECT (payload->>'x')::int FROM "
                                   "claimer.items WHERE item_id = 'a'"),
                   1);
  /* A batch: per item, including a duplicate inside the batch. */
  cl_item_t batch[4] = {{.item_id = "a", .queue = "q"},
                        {.item_id = "b", .queue = "q"},
                        {.item_id = "c", .queue = "q", .payload = "[1,2]"},
                        {.item_id = "b", .queue = "q"}};
  int outs[4];
  assert_int_equal(cl_enqueue(f->c, batch, 4, outs), 2);
  assert_int_equal(outs[0], CL_ENQ_EXISTED);
  assert_int_equal(outs[1], CL_ENQ_CREATED);
  assert_int_equal(outs[2], CL_ENQ_CREATED);
  assert_int_equal(outs[3], CL_ENQ_EXISTED);
  assert_int_equal(cl_enqueue(f->c, batch, 4, outs), 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"), 3);
  /* Ids with quotes and backslashes survive the array encoding. */
  enqueue_one(f->c, "we\"ird\\id,{x}", "q", "\"s\\\"\"", 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "item_id = E'we\"ird\\\\id,{x}' AND "
                                   "payload = '\"s\\\"\"'::jsonb"),
                   1);
}

static void test_enqueue_rejects_bad_batch_whole(void **state) {
  fixture_t *f = *state;
  cl_item_t batch[2] = {{.item_id = "ok", .queue = "q"},
                        {.item_id = "bad", .queue = "q", .payload = "{"}};
  assert_int_equal(cl_enqueue(f->c, batch, 2, NULL), CL_EJSON);
  assert_non_null(strstr(cl_conn_last_error(f->c), "item 2"));
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"), 0);
}

static void test_claim_complete(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "i1", "q", "{\"n\":1}", 0);
  cl_lease_t *l = claim_one(f->c, "q", "w1", 30);
  assert_string_equal(l->item_id, "i1");
  assert_int_equal(l->attempt, 1);
  assert_string_equal(l->payload, "{\"n\": 1}");
  assert_non_null(strchr(l->lease_until, 'T'));
  /* Leased: nobody else gets it. */
  cl_lease_t *none = NULL;
  size_t n = 9;
  assert_int_equal(cl_claim(f->c, "q", "w2", 5, 30, &none, &n), 0);
  assert_int_equal(n, 0);
  cl_complete_info_t info;
  assert_int_equal(cl_complete(f->c, l->item_id, l->token, "{\"ok\":1}", &info),
                   0);
  assert_int_equal(info.already, 0);
  /* The same call again (a retry) is ok and writes nothing new. */
  assert_int_equal(cl_complete(f->c, l->item_id, l->token, "{\"ok\":2}", &info),
                   0);
  assert_int_equal(info.already, 1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results"), 1);
  assert_int_equal(th_long(f->raw, "SELECT (result->>'ok')::int FROM "
                                   "claimer.results"),
                   1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "state = 'done' AND attempts = 1"),
                   1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims"), 0);
  /* A done item is never claimed again. */
  assert_int_equal(cl_claim(f->c, "q", "w2", 5, 30, &none, &n), 0);
  assert_int_equal(n, 0);
  cl_leases_free(l, 1);
}

static void test_fencing_complete(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "i1", "q", NULL, 0);
  cl_lease_t *first = claim_one(f->c, "q", "slow", 0.2);
  expire_and_reap(f, 1);
  cl_lease_t *second = claim_one(f->c, "q", "fast", 30);
  assert_int_equal(second->attempt, 2);
  assert_string_not_equal(first->token, second->token);
  /* The first holder's complete is fenced off and writes nothing. */
  assert_int_equal(cl_complete(f->c, first->item_id, first->token, "1", NULL),
                   CL_ELEASE_LOST);
  assert_non_null(strstr(cl_conn_last_error(f->c), "lease lost"));
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results"), 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items "
                                   "WHERE state = 'leased'"),
                   1);
  assert_int_equal(cl_complete(f->c, second->item_id, second->token, "2", NULL),
                   0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results "
                                   "WHERE result = '2'"),
                   1);
  /* After the item is done, the first token is still refused. */
  assert_int_equal(cl_complete(f->c, first->item_id, first->token, "1", NULL),
                   CL_ELEASE_LOST);
  cl_leases_free(first, 1);
  cl_leases_free(second, 1);
}

/* Many completes in one statement: fencing per item (a lost lease
 * refuses that item alone, even beside the item's new holder in the same
 * batch), one transaction for all (one xid on every result), a resend
 * settles per item, bad input refuses the whole call before anything is
 * sent. */
static void test_complete_many(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "ma", "q", NULL, 0);
  enqueue_one(f->c, "mb", "q", NULL, 0);
  enqueue_one(f->c, "mc", "q", NULL, 0);
  cl_lease_t *a = claim_one(f->c, "q", "w1", 30);
  cl_lease_t *b = claim_one(f->c, "q", "w1", 30);
  cl_lease_t *old = claim_one(f->c, "q", "w1", 0.2);
  assert_string_equal(old->item_id, "mc");
  th_exec(f->raw, "UPDATE claimer.claims SET lease_until = now() - "
                  "interval '1 second' WHERE item_id = 'mc'");
  cl_reap_info_t ri = {0};
  assert_int_equal(cl_reap(f->c, 100, &ri), 0);
  assert_int_equal(ri.expired, 1);
  cl_lease_t *fresh = claim_one(f->c, "q", "w1", 30);
  assert_string_equal(fresh->item_id, "mc");
  cl_done_t items[] = {{a->item_id, a->token, "{\"n\":1}"},
                       {b->item_id, b->token, NULL},
                       {old->item_id, old->token, "{\"stale\":1}"},
                       {fresh->item_id, fresh->token, "{\"n\":3}"}};
  int rcs[4] = {-1, -1, -1, -1};
  cl_complete_info_t infos[4];
  assert_int_equal(cl_complete_many(f->c, items, 4, rcs, infos), 0);
  assert_int_equal(rcs[0], 0);
  assert_int_equal(rcs[1], 0);
  assert_int_equal(rcs[2], CL_ELEASE_LOST);
  assert_int_equal(rcs[3], 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(infos[i].already, 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results"), 3);
  assert_int_equal(th_long(f->raw, "SELECT count(DISTINCT xid) FROM "
                                   "claimer.results"),
                   1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results "
                                   "WHERE item_id = 'mb' AND result = 'null'"),
                   1);
  char q[256];
  snprintf(q, sizeof q,
           "SELECT count(*) FROM claimer.results WHERE item_id = 'mc' AND "
           "token = '%s' AND result = '{\"n\":3}'",
           fresh->token);
  assert_int_equal(th_long(f->raw, q), 1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "state = 'done'"),
                   3);
  assert_int_equal(th_long(f->raw, "SELECT attempts FROM claimer.items WHERE "
                                   "item_id = 'mc'"),
                   2);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims"), 0);
  /* The same batch again (a resend): each reads back as already done,
   * the stale token is still refused, nothing new is written. */
  assert_int_equal(cl_complete_many(f->c, items, 4, rcs, infos), 0);
  assert_int_equal(rcs[0], 0);
  assert_int_equal(infos[0].already, 1);
  assert_int_equal(rcs[1], 0);
  assert_int_equal(infos[1].already, 1);
  assert_int_equal(rcs[2], CL_ELEASE_LOST);
  assert_int_equal(rcs[3], 0);
  assert_int_equal(infos[3].already, 1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results"), 3);
  /* Bad input: the whole call is refused, naming the item. */
  enqueue_one(f->c, "md", "q", NULL, 0);
  cl_lease_t *d = claim_one(f->c, "q", "w1", 30);
  cl_done_t bad[] = {{d->item_id, d->token, "{}"},
                     {d->item_id, "not-a-token", "{}"}};
  assert_int_equal(cl_complete_many(f->c, bad, 2, rcs, NULL), CL_EINVAL);
  assert_non_null(strstr(cl_conn_last_error(f->c), "item 2 of 2"));
  cl_done_t badjson[] = {{d->item_id, d->token, "{nope"}};
  assert_int_equal(cl_complete_many(f->c, badjson, 1, rcs, NULL), CL_EJSON);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims "
                                   "WHERE item_id = 'md'"),
                   1);
  assert_int_equal(cl_complete_many(f->c, bad, 0, rcs, NULL), 0);
  cl_leases_free(a, 1);
  cl_leases_free(b, 1);
  cl_leases_free(old, 1);
  cl_leases_free(fresh, 1);
  cl_leases_free(d, 1);
}

/* Makes the database refuse item_id's result (a trigger on results that
 * raises "refused by the test"; item_id is the test's own constant). */
static void refuse_result(PGconn *p, const char *item_id) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "CREATE OR REPLACE FUNCTION public.refuse_result() RETURNS trigger "
           "LANGUAGE plpgsql AS $$ BEGIN IF NEW.item_id = '%s' THEN RAISE "
           "EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$",
           item_id);
  th_exec(p, sql);
  th_exec(p, "CREATE TRIGGER refuse_result BEFORE INSERT ON claimer.results "
             "FOR EACH ROW EXECUTE FUNCTION public.refuse_result()");
}

/* Completes and the next claim in one statement and one commit
 * (cl_complete_many_claim): per-item outcomes as cl_complete_many's (a
 * lost lease refuses that item alone), the claim's leases in claim
 * order, the results and the new claims written by one transaction; a
 * claim alone (n = 0); bad claim arguments refused before anything is
 * sent.  When the joint statement fails (a result the database refuses),
 * the completes go on alone and the claim is sent after them. */
static void test_complete_many_claim(void **state) {
  fixture_t *f = *state;
  for (int i = 1; i <= 5; i++) {
    char id[16];
    snprintf(id, sizeof id, "j%d", i);
    enqueue_one(f->c, id, "q", NULL, 0);
  }
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(f->c, "q", "w1", 2, 30, &l, &n), 0);
  assert_int_equal(n, 2);
  cl_done_t items[] = {
      {l[0].item_id, l[0].token, "{\"n\":1}"},
      {l[1].item_id, "0000000000000000-0000000000000000", NULL}};
  int rcs[2] = {-1, -1};
  cl_complete_info_t infos[2];
  cl_lease_t *next = NULL;
  size_t nn = 0;
  assert_int_equal(cl_complete_many_claim(f->c, items, 2, rcs, infos, "q", "w1",
                                          2, 30, &next, &nn),
                   0);
  assert_int_equal(rcs[0], 0);
  assert_int_equal(rcs[1], CL_ELEASE_LOST);
  assert_int_equal(nn, 2);
  assert_string_equal(next[0].item_id, "j3");
  assert_string_equal(next[1].item_id, "j4");
  assert_string_equal(next[0].queue, "q");
  assert_int_equal(next[0].attempt, 1);
  /* One transaction: the result's xid wrote the new claims. */
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims c "
                                   "JOIN claimer.results r ON r.item_id = "
                                   "'j1' WHERE c.item_id IN ('j3', 'j4') AND "
                                   "c.xmin::text::bigint = "
                                   "r.xid::text::bigint % 4294967296"),
                   2);
  /* A claim alone, and the queue run dry: no lease, no error. */
  cl_leases_free(l, n);
  assert_int_equal(cl_complete_many_claim(f->c, NULL, 0, rcs, NULL, "q", "w1",
                                          5, 30, &l, &n),
                   0);
  assert_int_equal(n, 1);
  assert_string_equal(l[0].item_id, "j5");
  /* Bad claim arguments: refused, nothing sent (j3 still leased). */
  cl_done_t one[] = {{next[0].item_id, next[0].token, NULL}};
  cl_lease_t *none = NULL;
  size_t nnone = 7;
  assert_int_equal(cl_complete_many_claim(f->c, one, 1, rcs, NULL, "q", "w1", 0,
                                          30, &none, &nnone),
                   CL_EINVAL);
  assert_int_equal(nnone, 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims "
                                   "WHERE item_id = 'j3'"),
                   1);
  /* A refused result fails the joint statement: the completes go alone
   * (j3 ends its attempt as a failure, j4 completes), then the claim. */
  refuse_result(f->raw, "j3");
  enqueue_one(f->c, "j6", "q", NULL, 0);
  cl_done_t two[] = {{next[0].item_id, next[0].token, NULL},
                     {next[1].item_id, next[1].token, NULL}};
  assert_int_equal(cl_complete_many_claim(f->c, two, 2, rcs, NULL, "q", "w1", 5,
                                          30, &none, &nnone),
                   0);
  th_exec(f->raw, "DROP TRIGGER refuse_result ON claimer.results");
  assert_int_equal(rcs[0], CL_EDB);
  assert_int_equal(rcs[1], 0);
  assert_int_equal(nnone, 1);
  assert_string_equal(none[0].item_id, "j6");
  cl_leases_free(none, nnone);
  cl_leases_free(next, nn);
  cl_leases_free(l, n);
}

/* One result the database refuses (a trigger here) does not make its
 * batch-mates fail: the batch is given up, every item goes on alone, the
 * refused one ends its attempt as a failure (as cl_complete's), the others
 * complete. */
static void test_complete_many_one_refused(void **state) {
  fixture_t *f = *state;
  refuse_result(f->raw, "mr2");
  enqueue_one(f->c, "mr1", "q", NULL, 0);
  enqueue_one(f->c, "mr2", "q", NULL, 0);
  enqueue_one(f->c, "mr3", "q", NULL, 0);
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(f->c, "q", "w1", 3, 30, &l, &n), 0);
  assert_int_equal(n, 3);
  cl_done_t items[3];
  for (int i = 0; i < 3; i++)
    items[i] = (cl_done_t){l[i].item_id, l[i].token, "{\"ok\":true}"};
  int rcs[3] = {-1, -1, -1};
  assert_int_equal(cl_complete_many(f->c, items, 3, rcs, NULL), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(rcs[i], strcmp(l[i].item_id, "mr2") == 0 ? CL_EDB : 0);
  assert_non_null(strstr(cl_conn_last_error(f->c), "refused by the test"));
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "state = 'done'"),
                   2);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "item_id = 'mr2' AND state = 'ready' AND "
                                   "attempts = 1 AND last_error LIKE "
                                   "'the result could not be stored%'"),
                   1);
  cl_leases_free(l, n);
}

static void test_fencing_fail_and_heartbeat(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "i1", "q", NULL, 0);
  cl_lease_t *first = claim_one(f->c, "q", "slow", 0.2);
  expire_and_reap(f, 1);
  cl_lease_t *second = claim_one(f->c, "q", "fast", 30);
  cl_fail_info_t fi;
  assert_int_equal(
      cl_fail(f->c, first->item_id, first->token, "late", 1, -1, &fi),
      CL_ELEASE_LOST);
  assert_int_equal(th_long(f->raw, "SELECT attempts FROM claimer.items"), 1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "last_error = 'late'"),
                   0);
  /* The slow worker's heartbeat no longer lists the item. */
  cl_held_t *held = NULL;
  size_t n = 9;
  assert_int_equal(cl_heartbeat(f->c, "slow", 30, &held, &n), 0);
  assert_int_equal(n, 0);
  /* The holder's heartbeat does, and extends it. */
  th_exec(f->raw, "UPDATE claimer.claims SET lease_until = now() + "
                  "interval '2 seconds'");
  assert_int_equal(cl_heartbeat(f->c, "fast", 60, &held, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(held[0].token, second->token);
  assert_true(th_long(f->raw, "SELECT extract(epoch FROM lease_until - now())"
                              "::int FROM claimer.claims") >= 55);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.workers "
                                   "WHERE worker_id IN ('slow', 'fast')"),
                   2);
  cl_held_free(held, n);
  cl_leases_free(first, 1);
  cl_leases_free(second, 1);
}

static void test_fail_backoff_then_dead(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "poison", "q", NULL, 3);
  for (int attempt = 1; attempt <= 3; attempt++) {
    cl_lease_t *l = claim_one(f->c, "q", "w", 30);
    assert_int_equal(l->attempt, attempt);
    cl_fail_info_t fi;
    assert_int_equal(cl_fail(f->c, l->item_id, l->token, "boom", 1, -1, &fi),
                     0);
    assert_int_equal(fi.attempts, attempt);
    assert_int_equal(fi.already, 0);
    /* A retry of the same fail is recognised, not counted twice. */
    cl_fail_info_t again;
    assert_int_equal(cl_fail(f->c, l->item_id, l->token, "boom", 1, -1, &again),
                     0);
    assert_int_equal(again.already, 1);
    assert_int_equal(again.attempts, attempt);
    if (attempt < 3) {
      assert_int_equal(fi.dead, 0);
      /* Backoff: 2^(attempt-1) s times a jitter in [0.5, 1). */
      double lo = 0.5 * (1 << (attempt - 1)) - 0.2;
      double hi = 1.0 * (1 << (attempt - 1)) + 0.2;
      PGresult *r = PQexec(f->raw, "SELECT extract(epoch FROM run_at - now())"
                                   " FROM claimer.items");
      double delay = atof(PQgetvalue(r, 0, 0));
      PQclear(r);
      assert_true(delay >= lo && delay <= hi);
      /* Not claimable before its time. */
      cl_lease_t *none = NULL;
      size_t n = 9;
      assert_int_equal(cl_claim(f->c, "q", "w", 1, 30, &none, &n), 0);
      assert_int_equal(n, 0);
      th_exec(f->raw, "UPDATE claimer.items SET run_at = now()");
    } else {
      assert_int_equal(fi.dead, 1);
    }
    cl_leases_free(l, 1);
  }
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.dead_items "
                                   "WHERE attempts = 3 AND last_error = "
                                   "'boom'"),
                   1);
  /* fail without retry sends an item straight to dead. */
  enqueue_one(f->c, "once", "q", NULL, 0);
  cl_lease_t *l = claim_one(f->c, "q", "w", 30);
  cl_fail_info_t fi;
  assert_int_equal(cl_fail(f->c, l->item_id, l->token, "no", 0, -1, &fi), 0);
  assert_int_equal(fi.dead, 1);
  cl_leases_free(l, 1);
}

static void test_release_spends_no_attempt(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "r", "q", NULL, 0);
  for (int i = 0; i < 3; i++) {
    cl_lease_t *l = claim_one(f->c, "q", "w", 30);
    assert_int_equal(l->attempt, 1);
    assert_int_equal(cl_release(f->c, l->item_id, l->token), 0);
    assert_int_equal(cl_release(f->c, l->item_id, l->token), CL_ELEASE_LOST);
    cl_leases_free(l, 1);
  }
  assert_int_equal(th_long(f->raw, "SELECT attempts FROM claimer.items"), 0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "state = 'ready'"),
                   1);
}

/* The claim goes on from where the session's last claim on the queue
 * ended (schema/009): a higher priority enqueued since is taken at once,
 * and so is a lower one once the cursor's priority has run out;
 * an item that sorts before the cursor (here a run_at given in the past)
 * waits for the scan from the start, at most a second; an id holding the
 * cursor's separator is no trouble.  The session's first claim plans the
 * claim's statements inside the scan it times: a claim on another queue
 * first, so that the scan from the start timed here is the scan alone
 * (a first scan slower than 11 ms, seen once under a loaded test run,
 * put the next one 100 x its time away, past the 1.1 s waited). */
static void test_claim_cursor(void **state) {
  fixture_t *f = *state;
  char id[16];
  cl_lease_t *w = NULL;
  size_t nw = 0;
  assert_int_equal(cl_claim(f->c, "cq-warm", "w", 1, 30, &w, &nw), 0);
  assert_int_equal(nw, 0);
  cl_leases_free(w, nw);
  for (int i = 1; i <= 5; i++) {
    snprintf(id, sizeof id, "a-%d", i);
    enqueue_one(f->c, id, "cq", NULL, 0);
  }
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(f->c, "cq", "w", 2, 30, &l, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(l[0].item_id, "a-1");
  assert_string_equal(l[1].item_id, "a-2");
  cl_leases_free(l, n);
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue, run_at) "
                  "VALUES ('late', 'cq', now() - interval '1 hour')");
  cl_item_t urgent = {.item_id = "urgent", .queue = "cq", .priority = 5};
  assert_int_equal(cl_enqueue(f->c, &urgent, 1, NULL), 1);
  l = claim_one(f->c, "cq", "w", 30);
  assert_string_equal(l->item_id, "urgent");
  cl_leases_free(l, 1);
  l = claim_one(f->c, "cq", "w", 30);
  assert_string_equal(l->item_id, "a-3");
  cl_leases_free(l, 1);
  usleep(1100 * 1000);
  l = claim_one(f->c, "cq", "w", 30);
  assert_string_equal(l->item_id, "late");
  cl_leases_free(l, 1);
  l = claim_one(f->c, "cq", "w", 30);
  assert_string_equal(l->item_id, "a-4");
  cl_leases_free(l, 1);

  /* A cursor at a high priority: lower ones are taken at once too. */
  cl_item_t hi = {.item_id = "hi-1", .queue = "cp", .priority = 5};
  assert_int_equal(cl_enqueue(f->c, &hi, 1, NULL), 1);
  l = claim_one(f->c, "cp", "w", 30);
  assert_string_equal(l->item_id, "hi-1");
  cl_leases_free(l, 1);
  enqueue_one(f->c, "lo-1", "cp", NULL, 0);
  l = claim_one(f->c, "cp", "w", 30);
  assert_string_equal(l->item_id, "lo-1");
  cl_leases_free(l, 1);

  enqueue_one(f->c, "b|1", "cb", NULL, 0);
  enqueue_one(f->c, "b|2", "cb", NULL, 0);
  l = claim_one(f->c, "cb", "w", 30);
  assert_string_equal(l->item_id, "b|1");
  cl_leases_free(l, 1);
  l = claim_one(f->c, "cb", "w", 30);
  assert_string_equal(l->item_id, "b|2");
  cl_leases_free(l, 1);
}

/* Completes the n leases l through complete_many on the plain
 * connection raw; returns how many came back 'ok'. */
static long complete_raw(PGconn *raw, const cl_lease_t *l, size_t n) {
  size_t cap = 16;
  for (size_t i = 0; i < n; i++)
    cap += strlen(l[i].item_id) + strlen(l[i].token) + 8;
  char *ids = malloc(cap), *toks = malloc(cap);
  assert_non_null(ids);
  assert_non_null(toks);
  size_t a = 0, b = 0;
  a += (size_t)snprintf(ids, cap, "{");
  b += (size_t)snprintf(toks, cap, "{");
  for (size_t i = 0; i < n; i++) {
    a += (size_t)snprintf(ids + a, cap - a, "%s\"%s\"", i ? "," : "",
                          l[i].item_id);
    b += (size_t)snprintf(toks + b, cap - b, "%s\"%s\"", i ? "," : "",
                          l[i].token);
  }
  snprintf(ids + a, cap - a, "}");
  snprintf(toks + b, cap - b, "}");
  const char *p[] = {ids, toks};
  PGresult *r =
      PQexecParams(raw,
                   "SELECT count(*) FILTER (WHERE outcome = 'ok') FROM "
                   "claimer.complete_many($1::text[], $2::text[], "
                   "array_fill('{}'::jsonb, ARRAY[cardinality($1::text[])]))",
                   2, NULL, p, NULL, NULL, 0);
  free(ids);
  free(toks);
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  long ok = strtol(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return ok;
}

/* A batch complete reaches the claims it settles by their keys, not by
 * reading claims_pkey whole (schema/009: with 2,000 leases held by
 * another worker, 008's join read every entry for a batch of 10). */
static void test_complete_many_reads_its_claims_only(void **state) {
  fixture_t *f = *state;
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue) "
                  "SELECT 'held-' || g, 'hq' FROM generate_series(1, 2000) g");
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue) "
                  "SELECT 'mine-' || g, 'mq' FROM generate_series(1, 10) g");
  th_exec(f->raw, "ANALYZE claimer.claims");
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(f->c, "hq", "other", 2000, 60, &l, &n), 0);
  assert_int_equal(n, 2000);
  cl_leases_free(l, n);
  assert_int_equal(cl_claim(f->c, "mq", "w", 10, 60, &l, &n), 0);
  assert_int_equal(n, 10);
  th_exec(f->raw, "BEGIN");
  assert_int_equal(complete_raw(f->raw, l, n), 10);
  cl_leases_free(l, n);
  /* Entries of any index of claims, and rows of a sequential scan. */
  long read = th_long(
      f->raw, "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid)) "
              "FROM pg_class c WHERE c.oid = 'claimer.claims'::regclass OR "
              "c.oid IN (SELECT indexrelid FROM pg_index "
              "WHERE indrelid = 'claimer.claims'::regclass)");
  th_exec(f->raw, "COMMIT");
  print_message("claims rows and index entries read to complete 10: %ld\n",
                read);
  assert_true(read <= 20);
}

static void collect_notice(void *arg, const char *message) {
  char **buf = arg;
  size_t have = *buf ? strlen(*buf) : 0, add = strlen(message);
  char *grown = realloc(*buf, have + add + 1);
  assert_non_null(grown);
  memcpy(grown + have, message, add + 1);
  *buf = grown;
}

/* A batch complete takes time linear in its size (schema/014): neither
 * of its joins is a nested loop, which made a batch of 100 compare every
 * input row with every claim and rescan items_pkey by the whole array
 * once per result.  The plans are read from auto_explain, sent to this
 * session as notices. */
static void test_complete_many_plans_linear(void **state) {
  fixture_t *f = *state;
  /* A history as a drain leaves one (finished items by the 100,000):
   * with tables this size the planner took the nested loops. */
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue, state, "
                  "finished_at) SELECT 'old-' || g, 'lq', 'done', now() "
                  "FROM generate_series(1, 100000) g");
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue) "
                  "SELECT 'lin-' || g, 'lq' FROM generate_series(1, 100) g");
  th_exec(f->raw, "ANALYZE claimer.items");
  th_exec(f->raw, "ANALYZE claimer.claims");
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(f->c, "lq", "w", 100, 60, &l, &n), 0);
  assert_int_equal(n, 100);
  char *plans = NULL;
  PQnoticeProcessor old = PQsetNoticeProcessor(f->raw, collect_notice, &plans);
  th_exec(f->raw, "LOAD 'auto_explain'");
  th_exec(f->raw, "SET auto_explain.log_min_duration = 0");
  th_exec(f->raw, "SET auto_explain.log_nested_statements = on");
  th_exec(f->raw, "SET auto_explain.log_level = notice");
  th_exec(f->raw, "SET client_min_messages = notice");
  assert_int_equal(complete_raw(f->raw, l, n), 100);
  cl_leases_free(l, n);
  th_exec(f->raw, "RESET auto_explain.log_min_duration");
  PQsetNoticeProcessor(f->raw, old, NULL);
  assert_non_null(plans);
  /* The plans were seen: the delete of the claims and the update of the
   * items. */
  assert_non_null(strstr(plans, "Delete on claims"));
  assert_non_null(strstr(plans, "Update on items"));
  if (strstr(plans, "Nested Loop") != NULL)
    fprintf(stderr, "%s\n", plans);
  assert_null(strstr(plans, "Nested Loop"));
  free(plans);
}

/* A claim finds each item's row by items_pkey once, for its update
 * (schema/016): the locking scan of items_ready keeps the attempts,
 * priority and run_at that the claim row and the cursor need, where 009
 * read every row again twice.  The attempt a claim row takes is still
 * the item's attempts + 1.  Counted by the index's scans in this
 * transaction (one per key a btree scan of = ANY looks up). */
static void test_claim_reads_each_item_once(void **state) {
  fixture_t *f = *state;
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue, attempts) "
                  "SELECT 'once-' || g, 'oq', g % 3 FROM "
                  "generate_series(1, 100) g");
  th_exec(f->raw, "ANALYZE claimer.items");
  th_exec(f->raw, "BEGIN");
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM "
                                   "claimer.claim('oq', 100, 'w', 60)"),
                   100);
  long scans = th_long(f->raw, "SELECT pg_stat_get_xact_numscans("
                               "'claimer.items_pkey'::regclass)");
  th_exec(f->raw, "COMMIT");
  assert_in_range(scans, 1, 100);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims c "
                                   "JOIN claimer.items i USING (item_id) "
                                   "WHERE c.attempt = i.attempts + 1 AND "
                                   "i.state = 'leased'"),
                   100);
}

/* claim() and complete_many(), which the library no longer calls
 * (schema/017: it calls complete_claim, their one body), still answer
 * SQL callers and older libraries as before: the claim in claim order,
 * one outcome per input in input order, a resend 'already' per item. */
static void test_sql_claim_and_complete_many(void **state) {
  fixture_t *f = *state;
  th_exec(f->raw, "INSERT INTO claimer.items (item_id, queue, priority) "
                  "VALUES ('sq-1', 'sq', 0), ('sq-2', 'sq', 0), "
                  "('sq-3', 'sq', 5)");
  char got[256];
  th_text(f->raw,
          "SELECT string_agg(item_id || ':' || attempt, ',' ORDER BY n) "
          "FROM claimer.claim('sq', 2, 'w', 60) WITH ORDINALITY "
          "AS c(item_id, token, attempt, max_attempts, payload, "
          "lease_until, n)",
          got, sizeof got);
  assert_string_equal(got, "sq-3:1,sq-1:1");
/* The three completes, with the tokens read from table t: claims before
 * the first send, results after it. */
#define SQL_MANY(t)                                                            \
  "SELECT string_agg(ord || ':' || outcome, ',' ORDER BY ord) FROM "           \
  "claimer.complete_many(ARRAY['sq-1', 'sq-2', 'sq-3'], ARRAY["                \
  "(SELECT token FROM claimer." t " WHERE item_id = 'sq-1'), 'x', "            \
  "(SELECT token FROM claimer." t " WHERE item_id = 'sq-3')], "                \
  "ARRAY[NULL, NULL, '{\"r\": 1}']::jsonb[])"
  th_text(f->raw, SQL_MANY("claims"), got, sizeof got);
  assert_string_equal(got, "1:ok,2:lost,3:ok");
  th_text(f->raw, SQL_MANY("results"), got, sizeof got);
#undef SQL_MANY
  assert_string_equal(got, "1:already,2:lost,3:already");
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items "
                                   "WHERE state = 'done'"),
                   2);
  assert_int_equal(th_long(f->raw, "SELECT (result->>'r')::int FROM "
                                   "claimer.results WHERE item_id = 'sq-3'"),
                   1);
}

/* The database itself refuses a malformed queue name (items_queue_form,
 * schema/015), whatever the client: 1 to 63 of A-Z a-z 0-9 _ . : - and
 * nothing else. */
static void test_queue_form_in_the_database(void **state) {
  fixture_t *f = *state;
  char longest[64], too_long[65];
  memset(longest, 'q', 63);
  longest[63] = '\0';
  memset(too_long, 'q', 64);
  too_long[64] = '\0';
  const char *good[] = {"a", "Az09_.:-", longest};
  const char *bad[] = {"",    too_long, "a b", "a\nb", "caf\xc3\xa9",
                       "a/b", "a|b"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    const char *p[] = {good[i]};
    PGresult *r = PQexecParams(f->raw,
                               "INSERT INTO claimer.items (item_id, queue) "
                               "VALUES ('g-' || md5($1), $1)",
                               1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
  }
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *p[] = {bad[i]};
    PGresult *r = PQexecParams(f->raw,
                               "INSERT INTO claimer.items (item_id, queue) "
                               "VALUES ('b-' || md5($1), $1)",
                               1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_non_null(strstr(PQresultErrorMessage(r), "items_queue_form"));
    PQclear(r);
  }
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items"), 3);
}

static void test_reap_dead_after_max_attempts(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "crashy", "q", NULL, 2);
  for (int attempt = 1; attempt <= 2; attempt++) {
    cl_lease_t *l = claim_one(f->c, "q", "w", 30);
    assert_int_equal(l->attempt, attempt);
    expire_and_reap(f, 1);
    cl_leases_free(l, 1);
  }
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.items WHERE "
                                   "state = 'dead' AND attempts = 2 AND "
                                   "last_error LIKE 'lease expired%'"),
                   1);
}

static void test_order_and_schedule(void **state) {
  fixture_t *f = *state;
  cl_item_t items[3] = {
      {.item_id = "low", .queue = "q", .priority = 0},
      {.item_id = "high", .queue = "q", .priority = 5},
      {.item_id = "later", .queue = "q", .priority = 9, .run_in = 3600}};
  assert_int_equal(cl_enqueue(f->c, items, 3, NULL), 3);
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(f->c, "q", "w", 10, 30, &l, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(l[0].item_id, "high");
  assert_string_equal(l[1].item_id, "low");
  cl_leases_free(l, n);
  /* Other queues are untouched. */
  assert_int_equal(cl_claim(f->c, "other", "w", 10, 30, &l, &n), 0);
  assert_int_equal(n, 0);
}

static void test_tokens(void **state) {
  fixture_t *f = *state;
  char prev[64] = "";
  for (int i = 0; i < 20; i++) {
    char id[16];
    snprintf(id, sizeof id, "t%d", i);
    enqueue_one(f->c, id, "q", NULL, 0);
    cl_lease_t *l = claim_one(f->c, "q", "w", 30);
    /* 16 hex digits of sequence, '-', 16 random hex digits. */
    assert_int_equal(strlen(l->token), 33);
    assert_int_equal(l->token[16], '-');
    /* The sequence part orders tokens by issue. */
    assert_true(strncmp(prev, l->token, 16) < 0);
    snprintf(prev, sizeof prev, "%s", l->token);
    assert_int_equal(cl_complete(f->c, l->item_id, l->token, NULL, NULL), 0);
    cl_leases_free(l, 1);
  }
  assert_int_equal(th_long(f->raw, "SELECT count(DISTINCT substr(token, 18)) "
                                   "FROM claimer.results"),
                   20);
  /* A malformed token is bad input, not a lost lease. */
  assert_int_equal(cl_complete(f->c, "t1", "nope", NULL, NULL), CL_EINVAL);
}

static void test_status_view(void **state) {
  fixture_t *f = *state;
  cl_item_t items[3] = {{.item_id = "s1", .queue = "sq"},
                        {.item_id = "s2", .queue = "sq"},
                        {.item_id = "s3", .queue = "sq", .run_in = 600}};
  assert_int_equal(cl_enqueue(f->c, items, 3, NULL), 3);
  cl_lease_t *l = claim_one(f->c, "sq", "w", 30);
  assert_int_equal(cl_complete(f->c, l->item_id, l->token, NULL, NULL), 0);
  cl_leases_free(l, 1);
  l = claim_one(f->c, "sq", "w", 30);
  cl_queue_status_t *rows = NULL;
  size_t n = 0;
  assert_int_equal(cl_status(f->c, &rows, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(rows[0].queue, "sq");
  assert_int_equal(rows[0].ready, 0);
  assert_int_equal(rows[0].scheduled, 1);
  assert_int_equal(rows[0].leased, 1);
  assert_int_equal(rows[0].done, 1);
  assert_int_equal(rows[0].dead, 0);
  cl_status_free(rows, n);
  cl_leases_free(l, 1);
}

/* Issue 9.11, a late completion.  A lease past lease_until that no reaper
 * has ended yet is still the holder's: nobody else can hold the item, so
 * its complete is accepted (G3 holds) and saves a rerun of the side
 * effect, and a heartbeat revives it.  Once reaped, or granted to
 * another, the same complete is refused. */
static void test_late_completion(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "late-1", "q", NULL, 0);
  enqueue_one(f->c, "late-2", "q", NULL, 0);
  enqueue_one(f->c, "late-3", "q", NULL, 0);
  enqueue_one(f->c, "late-4", "q", NULL, 0);
  cl_lease_t *l1 = claim_one(f->c, "q", "w", 30);
  cl_lease_t *l2 = claim_one(f->c, "q", "w2", 30);
  cl_lease_t *l3 = claim_one(f->c, "q", "w3", 30);
  cl_lease_t *l4 = claim_one(f->c, "q", "w4", 30);
  th_exec(f->raw, "UPDATE claimer.claims SET lease_until = now() - "
                  "interval '5 seconds'");
  /* Expired, unreaped: accepted. */
  assert_int_equal(cl_complete(f->c, l1->item_id, l1->token, "1", NULL), 0);
  /* Expired, unreaped, heartbeated: the lease is alive again. */
  cl_held_t *held = NULL;
  size_t n = 0;
  assert_int_equal(cl_heartbeat(f->c, "w2", 30, &held, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(held[0].token, l2->token);
  cl_held_free(held, n);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.claims "
                                   "WHERE item_id = 'late-2' AND "
                                   "lease_until > now() + interval '20 s'"),
                   1);
  assert_int_equal(cl_complete(f->c, l2->item_id, l2->token, "2", NULL), 0);
  /* Reaped: refused, nothing written. */
  cl_reap_info_t ri = {0};
  assert_int_equal(cl_reap(f->c, 100, &ri), 0);
  assert_int_equal(ri.expired, 2);
  assert_int_equal(cl_complete(f->c, l4->item_id, l4->token, "4", NULL),
                   CL_ELEASE_LOST);
  /* Reaped and granted to another: refused; the new holder's stands. */
  cl_lease_t *again = claim_one(f->c, "q", "w5", 30);
  assert_string_equal(again->item_id, "late-3");
  assert_int_equal(cl_complete(f->c, l3->item_id, l3->token, "3", NULL),
                   CL_ELEASE_LOST);
  assert_int_equal(cl_complete(f->c, again->item_id, again->token, "5", NULL),
                   0);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results"), 3);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results "
                                   "WHERE item_id = 'late-3' AND result = "
                                   "'5'"),
                   1);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.results "
                                   "WHERE item_id = 'late-4'"),
                   0);
  cl_leases_free(l1, 1);
  cl_leases_free(l2, 1);
  cl_leases_free(l3, 1);
  cl_leases_free(l4, 1);
  cl_leases_free(again, 1);
}

/* Issue 9.1 through the blocking call (`claimer fail`): an error of 7,900
 * escape-heavy characters with no retry once made the item_dead NOTIFY too
 * long, so the FAIL was refused and the item stayed leased.  Now it dies,
 * its whole error kept on the item, the alert's copy clipped. */
static void test_fail_long_error(void **state) {
  fixture_t *f = *state;
  enqueue_one(f->c, "loud", "q", NULL, 5);
  cl_lease_t *l = claim_one(f->c, "q", "w", 30);
  char err[7901];
  for (int i = 0; i < 7900; i++)
    err[i] = "\"\\\x01"[i % 3];
  err[7900] = '\0';
  cl_fail_info_t fi = {0};
  assert_int_equal(cl_fail(f->c, l->item_id, l->token, err, 0, -1, &fi), 0);
  assert_int_equal(fi.dead, 1);
  assert_int_equal(th_long(f->raw, "SELECT length(last_error) FROM "
                                   "claimer.items WHERE state = 'dead'"),
                   7900);
  assert_int_equal(th_long(f->raw, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'item_dead' AND "
                                   "(detail->>'error_truncated')::bool"),
                   1);
  cl_leases_free(l, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_enqueue_idempotent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_enqueue_rejects_bad_batch_whole,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_claim_complete, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fencing_complete, setup, teardown),
      cmocka_unit_test_setup_teardown(test_complete_many, setup, teardown),
      cmocka_unit_test_setup_teardown(test_complete_many_claim, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_complete_many_one_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_fencing_fail_and_heartbeat, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_fail_backoff_then_dead, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_release_spends_no_attempt, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_claim_cursor, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sql_claim_and_complete_many, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_queue_form_in_the_database, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_claim_reads_each_item_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_complete_many_plans_linear, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_complete_many_reads_its_claims_only,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_reap_dead_after_max_attempts, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_order_and_schedule, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
      cmocka_unit_test_setup_teardown(test_status_view, setup, teardown),
      cmocka_unit_test_setup_teardown(test_late_completion, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fail_long_error, setup, teardown),
  };
  return cmocka_run_group_tests_name("protocol", tests, th_group_setup,
                                     th_group_teardown);
}
