/*
 * test_migrate.c: the migration runner against a real PostgreSQL: an empty
 * database, a re-run that changes nothing, concurrent runs that apply each
 * migration once, and the refusals (a tampered checksum, a migration this
 * binary does not know, a missing schema).
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

static cl_conn_t *open_conn(const char *dsn) {
  cl_conn_t *c = NULL;
  assert_int_equal(cl_conn_new(&c, dsn), 0);
  assert_int_equal(cl_conn_connect(c), 0);
  return c;
}

static void test_empty_then_noop(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "m_empty", 0, dsn, sizeof dsn), 0);
  cl_conn_t *c = open_conn(dsn);
  assert_int_equal(cl_schema_check(c), CL_ESCHEMA);
  assert_int_equal(cl_migrate(c, NULL, NULL), cl_schema_version());
  assert_int_equal(cl_schema_check(c), 0);
  assert_int_equal(cl_migrate(c, NULL, NULL), 0);
  PGconn *p = th_connect(dsn);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.schema_migrations"),
                   cl_schema_version());
  /* Every table and view of the design is there. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM pg_tables WHERE "
                              "schemaname = 'claimer' AND tablename IN "
                              "('items','claims','results','deliveries',"
                              "'workers','alerts','schema_migrations')"),
                   7);
  assert_int_equal(th_long(p, "SELECT count(*) FROM pg_views WHERE "
                              "schemaname = 'claimer' AND viewname IN "
                              "('queue_status','active_leases',"
                              "'stale_leases','dead_items')"),
                   4);
  PQfinish(p);
  cl_conn_free(&c);
}

static void test_concurrent_runs_apply_once(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "m_concurrent", 0, dsn, sizeof dsn), 0);
  enum { N = 4 };
  pid_t pids[N];
  for (int i = 0; i < N; i++) {
    pids[i] = fork();
    if (pids[i] == 0) {
      cl_conn_t *c = NULL;
      int rc = cl_conn_new(&c, dsn);
      if (rc == 0)
        rc = cl_migrate(c, NULL, NULL);
      cl_conn_free(&c);
      _exit(rc < 0 ? 100 : rc);
    }
  }
  int applied = 0;
  for (int i = 0; i < N; i++) {
    int st = 0;
    assert_true(waitpid(pids[i], &st, 0) == pids[i]);
    assert_true(WIFEXITED(st));
    assert_true(WEXITSTATUS(st) != 100);
    applied += WEXITSTATUS(st);
  }
  assert_int_equal(applied, cl_schema_version());
  PGconn *p = th_connect(dsn);
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.schema_migrations"),
                   cl_schema_version());
  PQfinish(p);
}

static void test_tampered_checksum_refused(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "m_tamper", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "UPDATE claimer.schema_migrations SET checksum = "
             "'0123456789abcdef' WHERE version = 1");
  cl_conn_t *c = open_conn(dsn);
  assert_int_equal(cl_migrate(c, NULL, NULL), CL_ECHECKSUM);
  assert_non_null(strstr(cl_conn_last_error(c), "001_init"));
  assert_non_null(strstr(cl_conn_last_error(c), "refusing"));
  assert_int_equal(cl_schema_check(c), CL_ECHECKSUM);
  /* The CLI says so and exits 1. */
  char *out = NULL;
  const char *argv[] = {th_claimer_bin(), "migrate", "--dsn", dsn, NULL};
  assert_int_equal(th_run(argv, NULL, &out), 1);
  assert_non_null(strstr(out, "schema was changed outside claimer"));
  free(out);
  /* Nothing was applied or changed. */
  assert_int_equal(th_long(p, "SELECT count(*) FROM claimer.schema_migrations"),
                   cl_schema_version());
  PQfinish(p);
  cl_conn_free(&c);
}

static void test_unknown_migration_refused(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "m_future", 1, dsn, sizeof dsn), 0);
  PGconn *p = th_connect(dsn);
  th_exec(p, "INSERT INTO claimer.schema_migrations (version, name, "
             "checksum) VALUES (99, '099_future', 'x')");
  cl_conn_t *c = open_conn(dsn);
  assert_int_equal(cl_migrate(c, NULL, NULL), CL_ESCHEMA);
  assert_non_null(strstr(cl_conn_last_error(c), "099_future"));
  PQfinish(p);
  cl_conn_free(&c);
}

static void test_missing_schema_is_named(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "m_missing", 0, dsn, sizeof dsn), 0);
  cl_conn_t *c = open_conn(dsn);
  cl_lease_t *leases = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(c, "q", "w", 1, 30, &leases, &n), CL_ESCHEMA);
  assert_non_null(strstr(cl_conn_last_error(c), "claimer migrate"));
  cl_conn_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_then_noop),
      cmocka_unit_test(test_concurrent_runs_apply_once),
      cmocka_unit_test(test_tampered_checksum_refused),
      cmocka_unit_test(test_unknown_migration_refused),
      cmocka_unit_test(test_missing_schema_is_named),
  };
  return cmocka_run_group_tests_name("migrate", tests, th_group_setup,
                                     th_group_teardown);
}
