/*
 * test_deliver.c: the senders' protocol (schema/005_senders.sql,
 * claimer/deliver.c) against a real PostgreSQL: subscribers consume each
 * result once (G5) with a key stable for (subscriber, item_id) (G10); a
 * result whose transaction commits after a later one's is not skipped;
 * a delivery is fenced by its token and settles after a resend (G9);
 * failed attempts back off and end dead with an alert; the 'hold' policy
 * keeps a delivery in doubt for a person; pause and remove; bad input.
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

typedef struct fx {
  char dsn[1024];
  cl_conn_t *c;
  PGconn *pg;
} fx_t;

static int setup(void **state) {
  static int n;
  fx_t *fx = calloc(1, sizeof *fx);
  char db[32];
  snprintf(db, sizeof db, "deliver_%d", ++n);
  if (fx == NULL || th_db_create(&th_pg, db, 1, fx->dsn, sizeof fx->dsn) != 0)
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

/* Enqueues ids prefix-0.. prefix-(n-1) in queue and completes each, so
 * that each has a result (in this order of position). */
static void results(fx_t *fx, const char *queue, const char *prefix, int n) {
  for (int i = 0; i < n; i++) {
    char id[64], res[96];
    snprintf(id, sizeof id, "%s-%d", prefix, i);
    cl_item_t it = {.item_id = id, .queue = queue, .payload = "{\"n\":1}"};
    assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
    cl_lease_t *l = NULL;
    size_t got = 0;
    assert_int_equal(cl_claim(fx->c, queue, "w", 1, 30, &l, &got), 0);
    assert_int_equal(got, 1);
    snprintf(res, sizeof res, "{\"id\":\"%s\"}", id);
    assert_int_equal(cl_complete(fx->c, l[0].item_id, l[0].token, res, NULL),
                     0);
    cl_leases_free(l, got);
  }
}

static void add_sub(fx_t *fx, const char *name, const char *queue,
                    const char *in_doubt, int max_attempts) {
  const char *qs[] = {queue};
  cl_subscriber_opts_t o = {.queues = queue ? qs : NULL,
                            .nqueues = queue ? 1 : 0,
                            .from = "beginning",
                            .in_doubt = in_doubt,
                            .max_attempts = max_attempts};
  assert_int_equal(cl_subscriber_add(fx->c, name, &o, NULL), 1);
}

/* Claims and marks sent everything due for sub; returns how many, and
 * counts the item ids seen into *seen_twice when one comes back. */
static int drain(fx_t *fx, const char *sub, int *seen_twice) {
  int total = 0;
  for (int round = 0; round < 1000; round++) {
    cl_delivery_t *d = NULL;
    int n = cl_deliver_claim(fx->c, sub, "sender-1", 7, 30, &d);
    assert_true(n >= 0);
    if (n == 0)
      return total;
    for (int i = 0; i < n; i++) {
      int already = -1;
      assert_int_equal(
          cl_delivery_sent(fx->c, sub, d[i].item_id, d[i].token, &already), 0);
      if (already)
        (*seen_twice)++;
    }
    total += n;
    cl_deliveries_free(d, (size_t)n);
  }
  fail_msg("drain did not end");
  return total;
}

/* Two subscribers consume the same results independently, each once, with
 * the documented key. */
static void test_two_subscribers_each_once(void **state) {
  fx_t *fx = *state;
  results(fx, "mail", "m", 40);
  results(fx, "audit", "a", 20);
  add_sub(fx, "every", NULL, NULL, 0);
  add_sub(fx, "auditor", "audit", NULL, 0);
  int twice = 0;
  assert_int_equal(drain(fx, "every", &twice), 60);
  assert_int_equal(drain(fx, "auditor", &twice), 20);
  assert_int_equal(twice, 0);
  assert_int_equal(drain(fx, "every", &twice), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   80);
  /* The key is 'clm_' and 32 hex digits of sha256(sub U+001F item). */
  assert_int_equal(
      th_long(fx->pg,
              "SELECT count(*) FROM claimer.deliveries WHERE "
              "idempotency_key = 'clm_' || left(encode(sha256(convert_to("
              "subscriber || chr(31) || item_id, 'UTF8')), 'hex'), 32)"),
      80);
  cl_subscriber_status_t *rows = NULL;
  size_t n = 0;
  assert_int_equal(cl_subscriber_list(fx->c, &rows, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(rows[0].name, "auditor");
  assert_int_equal(rows[0].sent, 20);
  assert_int_equal(rows[0].pending, 0);
  assert_int_equal(rows[1].sent, 60);
  cl_subscribers_free(rows, n);
}

/* A result whose transaction commits after later ones have committed and
 * been delivered is still delivered: the cursor never passes a position
 * an open transaction may hold. */
static void test_late_commit_not_skipped(void **state) {
  fx_t *fx = *state;
  add_sub(fx, "late", NULL, NULL, 0);
  /* The slow one: claimed, then completed in a transaction held open. */
  cl_item_t it = {.item_id = "slow", .queue = "q"};
  assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
  cl_lease_t *l = NULL;
  size_t got = 0;
  assert_int_equal(cl_claim(fx->c, "q", "w", 1, 300, &l, &got), 0);
  assert_int_equal(got, 1);
  PGconn *slow = th_connect(fx->dsn);
  th_exec(slow, "BEGIN");
  char sql[1024];
  snprintf(sql, sizeof sql,
           "WITH del AS (DELETE FROM claimer.claims WHERE item_id = 'slow' "
           "RETURNING item_id, queue, token, worker_id, attempt), "
           "res AS (INSERT INTO claimer.results (item_id, queue, token, "
           "worker_id, attempt) SELECT item_id, queue, token, worker_id, "
           "attempt FROM del RETURNING item_id) "
           "UPDATE claimer.items SET state = 'done' WHERE item_id IN "
           "(SELECT item_id FROM res)");
  th_exec(slow, sql);
  long slow_pos = th_long(slow, "SELECT pos FROM claimer.results "
                                "WHERE item_id = 'slow'");
  cl_leases_free(l, got);
  /* Later positions commit and are delivered, several times over, so
   * that ticks come and go while the slow transaction stays open. */
  int twice = 0, delivered = 0;
  for (int round = 0; round < 5; round++) {
    char prefix[16];
    snprintf(prefix, sizeof prefix, "fast%d", round);
    results(fx, "q", prefix, 4);
    delivered += drain(fx, "late", &twice);
  }
  assert_int_equal(delivered, 20);
  long cursor = th_long(fx->pg, "SELECT cursor_pos FROM "
                                "claimer.subscriber_status WHERE "
                                "subscriber = 'late'");
  print_message("slow result at pos %ld; cursor %ld while it is open\n",
                slow_pos, cursor);
  assert_true(cursor < slow_pos);
  th_exec(slow, "COMMIT");
  PQfinish(slow);
  assert_int_equal(drain(fx, "late", &twice), 1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE item_id = 'slow' AND state = "
                                   "'sent'"),
                   1);
  /* And the cursor moves past everything once no transaction is open. */
  for (int i = 0; i < 3; i++)
    drain(fx, "late", &twice);
  assert_int_equal(twice, 0);
  assert_int_equal(th_long(fx->pg, "SELECT (cursor_pos = (SELECT max(pos) FROM "
                                   "claimer.results))::int FROM "
                                   "claimer.subscriber_status"),
                   1);
}

/* Schema 013 gives back what the old tick let a cursor pass: results at
 * or below a subscriber's cursor, of its queues, with no delivery to it
 * (the state the xmax-bounded tick left, made here by moving the cursor
 * over them) are delivered after the migration, and nothing twice. */
static void test_skipped_results_given_back(void **state) {
  fx_t *fx = *state;
  add_sub(fx, "every", NULL, NULL, 0);
  add_sub(fx, "mailer", "mail", NULL, 0);
  results(fx, "mail", "m", 3);
  int twice = 0;
  assert_int_equal(drain(fx, "every", &twice), 3);
  assert_int_equal(drain(fx, "mailer", &twice), 3);
  results(fx, "mail", "s", 2);
  results(fx, "audit", "a", 2);
  results(fx, "mail", "t", 1);
  /* "every" skipped s-0, s-1, a-0, a-1, t-0; "mailer" s-0, s-1 (its
   * cursor stops below t-0, which it is given). */
  th_exec(fx->pg, "UPDATE claimer.subscribers SET tick_pos = NULL, "
                  "tick_xid = NULL, cursor_pos = (SELECT max(pos) FROM "
                  "claimer.results)");
  th_exec(fx->pg, "UPDATE claimer.subscribers SET cursor_pos = (SELECT pos "
                  "FROM claimer.results WHERE item_id = 's-1') WHERE "
                  "subscriber = 'mailer'");
  assert_int_equal(drain(fx, "every", &twice), 0);
  assert_int_equal(drain(fx, "mailer", &twice), 1);
  /* 013 again, and the later ones, which change nothing applied twice. */
  th_exec(fx->pg, "DELETE FROM claimer.schema_migrations WHERE version >= 13");
  assert_int_equal(cl_migrate(fx->c, NULL, NULL), cl_schema_version() - 12);
  assert_int_equal(drain(fx, "every", &twice), 5);
  assert_int_equal(drain(fx, "mailer", &twice), 2);
  assert_int_equal(twice, 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   14);
}

/* Fencing: a wrong token writes nothing; a resend with the right one says
 * already; a lease that ran out is leased again (retry policy) with the
 * same key and a new token, and the old token is then refused. */
static void test_fencing_and_resend(void **state) {
  fx_t *fx = *state;
  results(fx, "q", "f", 1);
  add_sub(fx, "s", NULL, NULL, 0);
  cl_delivery_t *d = NULL;
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 1, &d), 1);
  assert_int_equal(d[0].attempt, 1);
  assert_int_equal(cl_delivery_sent(fx->c, "s", "f-0", "not-a-token", NULL),
                   CL_ELEASE_LOST);
  char key[80], old[80];
  snprintf(key, sizeof key, "%s", d[0].idempotency_key);
  snprintf(old, sizeof old, "%s", d[0].token);
  cl_deliveries_free(d, 1);
  usleep(1300 * 1000); /* the lease runs out */
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-2", 5, 30, &d), 1);
  assert_int_equal(d[0].attempt, 2);
  assert_string_equal(d[0].idempotency_key, key);
  assert_string_not_equal(d[0].token, old);
  assert_int_equal(cl_delivery_sent(fx->c, "s", "f-0", old, NULL),
                   CL_ELEASE_LOST);
  int already = -1;
  assert_int_equal(cl_delivery_sent(fx->c, "s", "f-0", d[0].token, &already),
                   0);
  assert_int_equal(already, 0);
  assert_int_equal(cl_delivery_sent(fx->c, "s", "f-0", d[0].token, &already),
                   0);
  assert_int_equal(already, 1);
  cl_deliveries_free(d, 1);
}

/* Failed attempts: due again after their delay, then dead with a
 * delivery_dead alert; the subscriber's other deliveries go on. */
static void test_fail_retry_dead(void **state) {
  fx_t *fx = *state;
  results(fx, "q", "x", 1);
  add_sub(fx, "s", NULL, NULL, 2);
  cl_delivery_t *d = NULL;
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 30, &d), 1);
  cl_delivery_fail_info_t info;
  assert_int_equal(
      cl_delivery_fail(fx->c, "s", "x-0", d[0].token, "503", 1, 0, &info), 0);
  assert_int_equal(info.dead, 0);
  assert_int_equal(info.attempts, 1);
  assert_true(info.next_at[0] != '\0');
  /* A resend of the same fail is recognised. */
  assert_int_equal(
      cl_delivery_fail(fx->c, "s", "x-0", d[0].token, "503", 1, 0, &info), 0);
  assert_int_equal(info.already, 1);
  cl_deliveries_free(d, 1);
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 30, &d), 1);
  assert_int_equal(d[0].attempt, 2);
  assert_int_equal(cl_delivery_fail(fx->c, "s", "x-0", d[0].token, "still 503",
                                    1, -1, &info),
                   0);
  assert_int_equal(info.dead, 1);
  cl_deliveries_free(d, 1);
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 30, &d), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'delivery_dead' AND "
                                   "subject = 's/x-0' AND resolved_at IS "
                                   "NULL"),
                   1);
  /* The schedule: the first failure waits about 5 s. */
  results(fx, "q", "y", 1);
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 30, &d), 1);
  assert_int_equal(
      cl_delivery_fail(fx->c, "s", "y-0", d[0].token, "e", 1, -1, &info), 0);
  assert_int_equal(th_long(fx->pg, "SELECT round(extract(epoch FROM next_at "
                                   "- now()))::int FROM claimer.deliveries "
                                   "WHERE item_id = 'y-0'") /
                       2,
                   2);
  cl_deliveries_free(d, 1);
}

/* 'hold': a delivery whose sender stopped in doubt is not sent again; the
 * reaper raises delivery_in_doubt; the late answer of its sender (or a
 * person) settles it. */
static void test_hold_in_doubt(void **state) {
  fx_t *fx = *state;
  results(fx, "q", "h", 1);
  add_sub(fx, "careful", NULL, "hold", 0);
  cl_delivery_t *d = NULL;
  assert_int_equal(cl_deliver_claim(fx->c, "careful", "sender-1", 5, 1, &d), 1);
  usleep(1300 * 1000);
  cl_delivery_t *again = NULL;
  assert_int_equal(
      cl_deliver_claim(fx->c, "careful", "sender-2", 5, 30, &again), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'held'"),
                   1);
  cl_reaper_opts_t ro;
  cl_reaper_opts_init(&ro);
  cl_cycle_info_t ci;
  assert_int_equal(cl_reap_cycle(fx->c, &ro, &ci), 0);
  assert_int_equal(ci.raised[CL_ALERT_DELIVERY_IN_DOUBT], 1);
  assert_int_equal(cl_delivery_sent(fx->c, "careful", "h-0", d[0].token, NULL),
                   0);
  assert_int_equal(cl_reap_cycle(fx->c, &ro, &ci), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'delivery_in_doubt' AND "
                                   "resolved_at IS NULL"),
                   0);
  cl_deliveries_free(d, 1);
}

/* Pause gives nothing and loses nothing; remove refuses while deliveries
 * are unsettled unless forced. */
static void test_pause_and_remove(void **state) {
  fx_t *fx = *state;
  results(fx, "q", "p", 3);
  add_sub(fx, "s", NULL, NULL, 0);
  assert_int_equal(cl_subscriber_pause(fx->c, "s", 1, "receiver down"), 0);
  cl_delivery_t *d = NULL;
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 30, &d), 0);
  assert_int_equal(cl_subscriber_pause(fx->c, "s", 0, NULL), 0);
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 30, &d), 3);
  long open = 0;
  assert_int_equal(cl_subscriber_remove(fx->c, "s", 0, &open), CL_EBUSY);
  assert_int_equal(open, 3);
  assert_non_null(strstr(cl_conn_last_error(fx->c), "not yet sent"));
  assert_int_equal(cl_subscriber_remove(fx->c, "s", 1, &open), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries"),
                   0);
  assert_int_equal(cl_subscriber_remove(fx->c, "s", 0, NULL), CL_ENOTFOUND);
  assert_int_equal(cl_subscriber_pause(fx->c, "s", 1, NULL), CL_ENOTFOUND);
  cl_deliveries_free(d, 3);
}

/* Bad input: a clear error, nothing written. */
static void test_bad_input(void **state) {
  fx_t *fx = *state;
  cl_subscriber_opts_t o = {.from = "yesterday"};
  assert_int_equal(cl_subscriber_add(fx->c, "s", &o, NULL), CL_EINVAL);
  assert_non_null(strstr(cl_conn_last_error(fx->c), "yesterday"));
  assert_int_equal(cl_subscriber_add(fx->c, "bad name!", NULL, NULL),
                   CL_EINVAL);
  assert_non_null(strstr(cl_conn_last_error(fx->c), "subscriber name"));
  o = (cl_subscriber_opts_t){.in_doubt = "maybe"};
  assert_int_equal(cl_subscriber_add(fx->c, "s", &o, NULL), CL_EINVAL);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.subscribers"),
                   0);
  cl_delivery_t *d = NULL;
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 0, 30, &d),
                   CL_EINVAL);
  /* An unknown subscriber has nothing to send. */
  assert_int_equal(cl_deliver_claim(fx->c, "nobody", "sender-1", 5, 30, &d), 0);
  /* Adding twice changes nothing. */
  assert_int_equal(cl_subscriber_add(fx->c, "s", NULL, NULL), 1);
  assert_int_equal(cl_subscriber_add(fx->c, "s", NULL, NULL), 0);
}

/* Runs `claimer subscriber ARGS... --dsn DSN`; returns its exit status
 * and its output (stdout and stderr) in *out. */
static int sub_cli(fx_t *fx, char **out, const char *a1, const char *a2,
                   const char *a3, const char *a4, const char *a5) {
  const char *argv[12] = {th_claimer_bin(), "subscriber"};
  int n = 2;
  const char *args[] = {a1, a2, a3, a4, a5};
  for (int i = 0; i < 5 && args[i]; i++)
    argv[n++] = args[i];
  argv[n++] = "--dsn";
  argv[n++] = fx->dsn;
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

/* The CLI: add, list, pause, resume, remove, and its refusals. */
static void test_cli(void **state) {
  fx_t *fx = *state;
  results(fx, "mail", "c", 2);
  char *out = NULL;
  assert_int_equal(
      sub_cli(fx, &out, "add", "mailer", "--queue", "mail", "--from=beginning"),
      0);
  assert_non_null(strstr(out, "added subscriber mailer"));
  free(out);
  assert_int_equal(sub_cli(fx, &out, "add", "mailer", NULL, NULL, NULL), 0);
  assert_non_null(strstr(out, "exists"));
  free(out);
  assert_int_equal(sub_cli(fx, &out, "list", NULL, NULL, NULL, NULL), 0);
  assert_non_null(strstr(out, "mailer"));
  assert_non_null(strstr(out, "active"));
  free(out);
  /* claimer status shows it too, after the queues. */
  const char *st[] = {th_claimer_bin(), "status", "--dsn", fx->dsn, NULL};
  assert_int_equal(th_run(st, NULL, &out), 0);
  assert_non_null(strstr(out, "SUBSCRIBER"));
  assert_non_null(strstr(out, "mailer"));
  free(out);
  assert_int_equal(
      sub_cli(fx, &out, "pause", "mailer", "--reason", "receiver down", NULL),
      0);
  free(out);
  assert_int_equal(sub_cli(fx, &out, "list", "--json", NULL, NULL, NULL), 0);
  assert_non_null(strstr(out, "\"paused\":true"));
  assert_non_null(strstr(out, "\"paused_why\":\"receiver down\""));
  assert_non_null(strstr(out, "\"pending\":2"));
  free(out);
  assert_int_equal(sub_cli(fx, &out, "resume", "mailer", NULL, NULL, NULL), 0);
  free(out);
  /* Unsettled deliveries: remove is refused (4) unless --force. */
  cl_delivery_t *d = NULL;
  assert_int_equal(cl_deliver_claim(fx->c, "mailer", "s", 5, 30, &d), 2);
  cl_deliveries_free(d, 2);
  assert_int_equal(sub_cli(fx, &out, "remove", "mailer", NULL, NULL, NULL), 4);
  assert_non_null(strstr(out, "2 deliveries not yet sent"));
  free(out);
  /* Bad input: exit 2, nothing changed. */
  assert_int_equal(sub_cli(fx, &out, "add", "x", "--from", "yesterday", NULL),
                   2);
  assert_non_null(strstr(out, "yesterday"));
  free(out);
  assert_int_equal(sub_cli(fx, &out, "add", "bad name", NULL, NULL, NULL), 2);
  free(out);
  assert_int_equal(sub_cli(fx, &out, "frobnicate", NULL, NULL, NULL, NULL), 2);
  free(out);
  assert_int_equal(sub_cli(fx, &out, "list", "--force", NULL, NULL, NULL), 2);
  assert_non_null(strstr(out, "--force does not go with subscriber list"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.subscribers"),
                   1);
  assert_int_equal(sub_cli(fx, &out, "remove", "nobody", NULL, NULL, NULL), 1);
  assert_non_null(strstr(out, "no subscriber"));
  free(out);
  assert_int_equal(sub_cli(fx, &out, "remove", "mailer", "--force", NULL, NULL),
                   0);
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.subscribers"),
                   0);
}

/* Runs `claimer deliveries ARGS... --dsn DSN`. */
static int deliveries_cli(fx_t *fx, char **out, const char *const *args) {
  const char *argv[24] = {th_claimer_bin(), "deliveries"};
  int n = 2;
  for (int i = 0; args[i] != NULL && n < 20; i++)
    argv[n++] = args[i];
  argv[n++] = "--dsn";
  argv[n++] = fx->dsn;
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

/* A person's tools: list what waits, resolve one in doubt, retry the
 * dead, replay a window with the same keys. */
static void test_deliveries_cli(void **state) {
  fx_t *fx = *state;
  results(fx, "q", "d", 3);
  add_sub(fx, "s", NULL, "hold", 1);
  cl_delivery_t *d = NULL;
  /* d-0 in doubt (held), d-1 dead, d-2 sent. */
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 3, 1, &d), 3);
  char keys[3][80];
  for (int i = 0; i < 3; i++)
    snprintf(keys[i], sizeof keys[i], "%s", d[i].idempotency_key);
  assert_int_equal(
      cl_delivery_fail(fx->c, "s", "d-1", d[1].token, "boom", 1, -1, NULL), 0);
  assert_int_equal(cl_delivery_sent(fx->c, "s", "d-2", d[2].token, NULL), 0);
  cl_deliveries_free(d, 3);
  usleep(1300 * 1000);
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 3, 30, &d), 0);
  char *out = NULL;
  const char *list[] = {"list", "--subscriber", "s", NULL};
  assert_int_equal(deliveries_cli(fx, &out, list), 0);
  assert_non_null(strstr(out, "held"));
  assert_non_null(strstr(out, "dead"));
  assert_non_null(strstr(out, "boom"));
  assert_null(strstr(out, "d-2"));
  free(out);
  const char *resolve[] = {"resolve", "--subscriber", "s",     "--id",
                           "d-0",     "--as",         "retry", NULL};
  assert_int_equal(deliveries_cli(fx, &out, resolve), 0);
  free(out);
  assert_int_equal(deliveries_cli(fx, &out, resolve), 1); /* not in doubt */
  assert_non_null(strstr(out, "in doubt"));
  free(out);
  const char *retry[] = {"retry", "--subscriber", "s", "--all-dead", NULL};
  assert_int_equal(deliveries_cli(fx, &out, retry), 0);
  assert_non_null(strstr(out, "1 delivery due again"));
  free(out);
  const char *replay[] = {"replay", "--subscriber", "s", "--from", "0", NULL};
  assert_int_equal(deliveries_cli(fx, &out, replay), 0);
  assert_non_null(strstr(out, "1 delivery to send again"));
  free(out);
  /* All three come back, each with its own key. */
  assert_int_equal(cl_deliver_claim(fx->c, "s", "sender-1", 5, 30, &d), 3);
  for (int i = 0; i < 3; i++) {
    int k = d[i].item_id[2] - '0';
    assert_string_equal(d[i].idempotency_key, keys[k]);
  }
  cl_deliveries_free(d, 3);
  /* Bad usage: exit 2. */
  const char *bad1[] = {"resolve", "--subscriber", "s", "--id", "d-0", NULL};
  assert_int_equal(deliveries_cli(fx, &out, bad1), 2);
  free(out);
  const char *bad2[] = {"list", "--subscriber", "s", "--state", "lost", NULL};
  assert_int_equal(deliveries_cli(fx, &out, bad2), 2);
  free(out);
  const char *bad3[] = {"replay", "--subscriber", "s", NULL};
  assert_int_equal(deliveries_cli(fx, &out, bad3), 2);
  free(out);
  /* A time PostgreSQL would have refused: named here, nothing changed. */
  long sent = th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                              "WHERE state = 'sent'");
  const char *bad4[] = {"replay",  "--subscriber", "s",
                        "--since", "yesterday",    NULL};
  assert_int_equal(deliveries_cli(fx, &out, bad4), 2);
  assert_non_null(strstr(out, "--since: time \"yesterday\" is not RFC 3339"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'sent'"),
                   sent);
  /* A good one replays what was sent since then. */
  const char *since[] = {"replay",  "--subscriber",         "s",
                         "--since", "2000-01-01T00:00:00Z", NULL};
  assert_int_equal(deliveries_cli(fx, &out, since), 0);
  free(out);
}

/* The circuit breaker: break_after failed attempts in a row pause the
 * subscriber with subscriber_failing; a sent one resets the count; resume
 * resets it too, and nothing was lost meanwhile. */
static void test_circuit_breaker(void **state) {
  fx_t *fx = *state;
  results(fx, "q", "b", 6);
  const char *qs[] = {"q"};
  cl_subscriber_opts_t o = {
      .queues = qs, .nqueues = 1, .from = "beginning", .break_after = 3};
  assert_int_equal(cl_subscriber_add(fx->c, "fragile", &o, NULL), 1);
  cl_delivery_t *d = NULL;
  assert_int_equal(cl_deliver_claim(fx->c, "fragile", "s1", 6, 30, &d), 6);
  /* Two failures, a success (the count goes back to 0), three failures. */
  for (int i = 0; i < 2; i++)
    assert_int_equal(cl_delivery_fail(fx->c, "fragile", d[i].item_id,
                                      d[i].token, "503", 1, 0, NULL),
                     0);
  assert_int_equal(
      cl_delivery_sent(fx->c, "fragile", d[2].item_id, d[2].token, NULL), 0);
  for (int i = 3; i < 5; i++)
    assert_int_equal(cl_delivery_fail(fx->c, "fragile", d[i].item_id,
                                      d[i].token, "503", 1, 0, NULL),
                     0);
  assert_int_equal(th_long(fx->pg, "SELECT paused::int FROM "
                                   "claimer.subscribers"),
                   0);
  assert_int_equal(cl_delivery_fail(fx->c, "fragile", d[5].item_id, d[5].token,
                                    "503 again", 1, 0, NULL),
                   0);
  assert_int_equal(th_long(fx->pg, "SELECT paused::int FROM "
                                   "claimer.subscribers"),
                   1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'subscriber_failing' AND "
                                   "detail->>'reason' = 'circuit breaker'"),
                   1);
  cl_deliveries_free(d, 6);
  /* Paused: nothing is sent, nothing lost. */
  assert_int_equal(cl_deliver_claim(fx->c, "fragile", "s1", 6, 30, &d), 0);
  assert_int_equal(cl_subscriber_pause(fx->c, "fragile", 0, NULL), 0);
  assert_int_equal(th_long(fx->pg, "SELECT failures_in_row FROM "
                                   "claimer.subscribers"),
                   0);
  assert_int_equal(cl_deliver_claim(fx->c, "fragile", "s1", 6, 30, &d), 5);
  cl_deliveries_free(d, 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_two_subscribers_each_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_late_commit_not_skipped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_skipped_results_given_back, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_fencing_and_resend, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fail_retry_dead, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hold_in_doubt, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pause_and_remove, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deliveries_cli, setup, teardown),
      cmocka_unit_test_setup_teardown(test_circuit_breaker, setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("deliver", tests, th_group_setup,
                                     th_group_teardown);
}
