/*
 * test_dead.c: the dead letters through `claimer dead`: items failed for
 * good are listed (text and JSON); retry puts one back with attempts reset
 * and the error it died with kept in its history; naming an item that is
 * not dead says so and exits 1; discard takes the rest out for good while
 * their item_ids stay taken (G1); bad usage exits 2 and changes nothing.
 */
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "harness.h"

static char dsn[1024];

/* Runs `claimer dead ARGS... --dsn DSN`; returns its exit status and its
 * output in *out (malloc'd). */
static int dead(char **out, const char *a1, const char *a2, const char *a3,
                const char *a4, const char *a5) {
  const char *argv[12] = {th_claimer_bin(), "dead"};
  int n = 2;
  const char *args[] = {a1, a2, a3, a4, a5};
  for (int i = 0; i < 5 && args[i]; i++)
    argv[n++] = args[i];
  argv[n++] = "--dsn";
  argv[n++] = dsn;
  argv[n] = NULL;
  return th_run(argv, NULL, out);
}

/* Three items of queue dl, each failed for good with "boom N". */
static void make_dead(PGconn *p) {
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  cl_item_t items[3];
  char ids[3][8];
  for (int i = 0; i < 3; i++) {
    snprintf(ids[i], sizeof ids[i], "dl-%d", i + 1);
    items[i] = (cl_item_t){.item_id = ids[i],
                           .queue = "dl",
                           .payload = "{\"n\":1}",
                           .max_attempts = 3};
  }
  assert_int_equal(cl_enqueue(c, items, 3, NULL), 3);
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(c, "dl", "w", 3, 60, &l, &n), 0);
  assert_int_equal(n, 3);
  for (size_t i = 0; i < n; i++) {
    char err[32];
    snprintf(err, sizeof err, "boom %s\nsecond line", l[i].item_id);
    assert_int_equal(cl_fail(c, l[i].item_id, l[i].token, err, 0, 0, NULL), 0);
  }
  cl_leases_free(l, n);
  cl_conn_free(&c);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'dead'"),
                   3);
}

static void test_dead_letters(void **state) {
  (void)state;
  assert_int_equal(th_db_create(&th_pg, "dead", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  make_dead(p);
  char *out = NULL;

  assert_int_equal(dead(&out, "list", "-q", "dl", NULL, NULL), 0);
  assert_non_null(strstr(out, "dl-1"));
  assert_non_null(strstr(out, "boom dl-3 ..."));
  assert_null(strstr(out, "second line")); /* one line per item */
  assert_non_null(strstr(out, "3 dead items in dl"));
  free(out);

  assert_int_equal(dead(&out, "list", "--json", NULL, NULL, NULL), 0);
  int lines = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    json_object *o = json_tokener_parse(line);
    assert_non_null(o);
    json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, "payload", &v));
    assert_int_equal(json_object_get_int(json_object_object_get(v, "n")), 1);
    assert_true(json_object_object_get_ex(o, "error", &v));
    assert_non_null(strstr(json_object_get_string(v), "second line"));
    json_object_put(o);
    lines++;
  }
  assert_int_equal(lines, 3);
  free(out);

  assert_int_equal(dead(&out, "retry", "--id", "dl-1", NULL, NULL), 0);
  assert_string_equal(out, "retried 1 dead item\n");
  free(out);
  assert_int_equal(
      th_long(p, "SELECT count(*) FROM claimer.items WHERE item_id = 'dl-1' "
                 "AND state = 'ready' AND attempts = 0 AND last_error IS "
                 "NULL AND history->0->>'event' = 'dead_retried' AND "
                 "history->0->>'error' = E'boom dl-1\\nsecond line' AND "
                 "(history->0->>'attempts')::int = 1"),
      1);

  /* dl-1 is no longer dead, "nope" never was: both named, neither
   * changed, exit 1 with a message. */
  assert_int_equal(dead(&out, "retry", "--id", "dl-1", "--id", "nope"), 1);
  assert_non_null(strstr(out, "retried 0 dead items"));
  assert_non_null(strstr(out, "2 of the 2 items named were not dead"));
  free(out);

  assert_int_equal(dead(&out, "discard", "-q", "dl", "--all", NULL), 0);
  assert_string_equal(out, "discarded 2 dead items\n");
  free(out);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'discarded' AND history->0->>'event' "
                              "= 'discarded'"),
                   2);
  assert_int_equal(dead(&out, "list", NULL, NULL, NULL, NULL), 0);
  assert_non_null(strstr(out, "0 dead items"));
  free(out);
  /* A discarded item's id stays taken. */
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  cl_item_t again = {.item_id = "dl-2", .queue = "dl"};
  int outcome = 0;
  assert_int_equal(cl_enqueue(c, &again, 1, &outcome), 0);
  assert_int_equal(outcome, CL_ENQ_EXISTED);
  cl_conn_free(&c);
  PQfinish(p);
}

static void test_dead_bad_usage(void **state) {
  (void)state;
  assert_int_equal(th_db_create(&th_pg, "dead_usage", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  make_dead(p);
  const char *snap = "SELECT md5(string_agg(item_id || state || attempts || "
                     "history::text, ',' ORDER BY item_id)) FROM "
                     "claimer.items";
  PGresult *r = PQexec(p, snap);
  char before[40];
  snprintf(before, sizeof before, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  static const struct {
    const char *a[5];
    const char *msg;
  } cases[] = {
      {{"retry"}, "name the items: --id ID (repeatable), or -q QUEUE --all"},
      {{"retry", "--all"}, "--all needs -q QUEUE"},
      {{"discard", "--id", "dl-1", "--all"}, "give --id or --all, not both"},
      {{"retry", "--id", ""}, "--id:"},
      {{"retry", "-q", "bad queue", "--all"}, "--queue:"},
      {{"list", "--limit", "0"}, "--limit: 0 is out of range"},
      {{"bury"}, "unknown subcommand \"bury\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *out = NULL;
    int st = dead(&out, cases[i].a[0], cases[i].a[1], cases[i].a[2],
                  cases[i].a[3], cases[i].a[4]);
    if (st != 2 || strstr(out, cases[i].msg) == NULL)
      fail_msg("case %zu: exit %d, output: %s", i, st, out);
    free(out);
  }
  r = PQexec(p, snap);
  assert_string_equal(PQgetvalue(r, 0, 0), before);
  PQclear(r);
  PQfinish(p);
}

/* 002 to 012 as an upgrade: a version-1 database holding items (dead
 * ones among them) gains the history column, the 'discarded' state, the
 * alert machinery and the senders' tables without losing a row. */
static void test_upgrade_from_v1(void **state) {
  (void)state;
  assert_int_equal(th_db_create(&th_pg, "dead_upgrade", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  make_dead(p);
  /* Back to version 1, with the data in place: 016 to 012, 011, 010 (the
   * foreign keys back), 009 (it replaces 008's functions), 008, 007, 006 and
   * 005 first (007's columns go with the subscribers table, 003's). */
  /* 017 (functions replaced), 016 (a function replaced), 015 (a check
   * made again), 014 (a function's setting), 013 (a function replaced,
   * ticks dropped) and 012's collations stay: applied again, they change
   * nothing. */
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version >= 13");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 12");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 11");
  th_exec(p, "DROP FUNCTION claimer.complete_claim(text[], text[], jsonb[], "
             "text, integer, text, float8)");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 10");
  th_exec(p, "DROP TRIGGER items_deleted ON claimer.items");
  th_exec(p, "DROP TRIGGER items_truncated ON claimer.items");
  th_exec(p, "DROP FUNCTION claimer.items_deleted(), "
             "claimer.items_truncated()");
  th_exec(p, "ALTER TABLE claimer.claims ADD CONSTRAINT claims_item_fk "
             "FOREIGN KEY (item_id) REFERENCES claimer.items (item_id) "
             "ON DELETE CASCADE");
  th_exec(p, "ALTER TABLE claimer.results ADD CONSTRAINT results_item_fk "
             "FOREIGN KEY (item_id) REFERENCES claimer.items (item_id) "
             "ON DELETE CASCADE");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 9");
  th_exec(p, "DROP FUNCTION claimer.claim(text, integer, text, float8), "
             "claimer.complete_many(text[], text[], jsonb[])");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 8");
  th_exec(p, "DROP FUNCTION claimer.delivery_release(text, text[]), "
             "claimer.delivery_wait(float8[], integer), "
             "claimer.retain_done(float8, integer, timestamptz, text), "
             "claimer.delivery_replay(text, bigint, timestamptz)");
  th_exec(p, "DROP INDEX claimer.deliveries_sending");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 7");
  th_exec(p, "DROP TRIGGER deliveries_breaker ON claimer.deliveries");
  th_exec(p, "DROP FUNCTION claimer.delivery_breaker()");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 6");
  th_exec(p, "DROP VIEW claimer.subscriber_status");
  th_exec(p, "DROP FUNCTION claimer.delivery_heartbeat(text, float8, text[]),"
             " claimer.delivery_fail(text, text, text, text, float8),"
             " claimer.delivery_sent(text, text, text),"
             " claimer.delivery_claim(text, integer, float8, text),"
             " claimer.delivery_backoff(integer),"
             " claimer.idempotency_key(text, text)");
  th_exec(p, "ALTER TABLE claimer.alerts DROP CONSTRAINT alerts_kind");
  th_exec(p, "ALTER TABLE claimer.alerts ADD CONSTRAINT alerts_kind CHECK "
             "(kind IN ('item_overdue', 'lease_expired', 'item_dead', "
             "'worker_lost', 'delivery_in_doubt'))");
  th_exec(p, "DROP INDEX claimer.deliveries_due");
  th_exec(p, "ALTER TABLE claimer.deliveries DROP CONSTRAINT "
             "deliveries_state, DROP COLUMN next_at, DROP COLUMN sender");
  th_exec(p, "ALTER TABLE claimer.deliveries ADD CONSTRAINT deliveries_state "
             "CHECK (state IN ('sending', 'sent', 'held'))");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 5");
  th_exec(p, "DROP FUNCTION claimer.clip_error(text)");
  th_exec(p, "ALTER TABLE claimer.workers DROP COLUMN instance");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 4");
  th_exec(p, "DROP FUNCTION claimer.retry_delay(text, integer)");
  th_exec(p, "DROP FUNCTION claimer.sync_queue_policy(text[], integer[], "
             "float8[], float8[])");
  th_exec(p, "DROP TABLE claimer.queue_policy");
  th_exec(p, "DROP FUNCTION claimer.result_undelivered(text)");
  th_exec(p, "DROP TABLE claimer.subscribers");
  th_exec(p, "DROP INDEX claimer.items_retain, claimer.alerts_resolved, "
             "claimer.alerts_open_id");
  th_exec(p, "DROP VIEW claimer.open_alerts");
  th_exec(p, "DROP FUNCTION claimer.raise_alert(text, text, jsonb)");
  th_exec(p, "DROP FUNCTION claimer.alert_json(claimer.alerts)");
  th_exec(p, "ALTER TABLE claimer.alerts DROP COLUMN hook_state, DROP COLUMN "
             "hook_attempts, DROP COLUMN hook_next_at, DROP COLUMN "
             "hook_error");
  th_exec(p, "ALTER TABLE claimer.workers DROP COLUMN heartbeat_s");
  th_exec(p, "DELETE FROM claimer.alerts");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 3");
  th_exec(p, "DROP INDEX claimer.items_dead");
  th_exec(p, "ALTER TABLE claimer.items DROP CONSTRAINT items_state");
  th_exec(p, "ALTER TABLE claimer.items ADD CONSTRAINT items_state CHECK "
             "(state IN ('ready', 'leased', 'done', 'dead'))");
  th_exec(p, "ALTER TABLE claimer.items DROP COLUMN history");
  th_exec(p, "DELETE FROM claimer.schema_migrations WHERE version = 2");
  /* A dashboard's grant and a comment on a view 012 makes again. */
  th_exec(p, "DO $$ BEGIN CREATE ROLE claimer_test_dash; EXCEPTION WHEN "
             "duplicate_object THEN NULL; END $$");
  th_exec(p, "GRANT SELECT ON claimer.active_leases TO claimer_test_dash");
  th_exec(p, "COMMENT ON VIEW claimer.active_leases IS 'leases now'");
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  assert_int_equal(cl_migrate(c, NULL, NULL), cl_schema_version() - 1);
  assert_int_equal(th_long(p, "SELECT has_table_privilege("
                              "'claimer_test_dash', 'claimer.active_leases',"
                              " 'SELECT')::int + (obj_description("
                              "'claimer.active_leases'::regclass, 'pg_class')"
                              " = 'leases now')::int"),
                   2);
  assert_int_equal(th_long(p, "SELECT count(*) FROM information_schema.columns"
                              " WHERE table_schema = 'claimer' AND "
                              "table_name IN ('items', 'claims', 'results') "
                              "AND column_name IN ('item_id', 'queue') AND "
                              "collation_name = 'C'"),
                   6);
  th_exec(p, "REVOKE ALL ON claimer.active_leases FROM claimer_test_dash");
  th_exec(p, "DROP ROLE claimer_test_dash");
  assert_int_equal(cl_schema_check(c), 0);
  cl_conn_free(&c);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'dead' AND history = '[]'"),
                   3);
  char *out = NULL;
  assert_int_equal(dead(&out, "discard", "--id", "dl-3", NULL, NULL), 0);
  free(out);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.items WHERE "
                              "state = 'discarded'"),
                   1);
  PQfinish(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dead_letters),
      cmocka_unit_test(test_dead_bad_usage),
      cmocka_unit_test(test_upgrade_from_v1),
  };
  return cmocka_run_group_tests_name("dead", tests, th_group_setup,
                                     th_group_teardown);
}
