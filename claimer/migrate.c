/*
 * migrate.c: applies the migrations embedded from schema/ (see
 * migrations.h).  Each shipped migration is applied once, in order, in a
 * transaction of its own, while a session advisory lock keeps concurrent
 * runs (several hosts deploying at once) from applying one twice.  The
 * checksum of every applied migration is compared with the shipped text: a
 * database changed by hand, or by a different build with the same version
 * number, is refused rather than migrated on top of.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "migrations.h"

/* "claimer" in ASCII: the advisory lock key of the migration runner. */
#define MIGRATE_LOCK_KEY "27985188330759538"

static const char bootstrap_sql[] =
    "CREATE SCHEMA IF NOT EXISTS claimer;"
    "CREATE TABLE IF NOT EXISTS claimer.schema_migrations ("
    "  version    integer     PRIMARY KEY,"
    "  name       text        NOT NULL,"
    "  checksum   text        NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now())";

int cl_schema_version(void) { return cl__migrations_count; }

/* Runs sql (no parameters, may hold several statements) and returns 0 or a
 * CL_E* code with the detail on c. */
static int run_simple(cl_conn_t *c, const char *sql) {
  PGresult *r = PQexec(c->pg, sql);
  ExecStatusType s = PQresultStatus(r);
  int rc = 0;
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
    rc = cl__result_error(c, r);
  PQclear(r);
  return rc;
}

/* Runs a one-parameter query and returns its result in *out (caller
 * PQclear()s), or a CL_E* code. */
static int run_query(cl_conn_t *c, const char *sql, int nparams,
                     const char *const *params, PGresult **out) {
  PGresult *r = PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
  ExecStatusType s = PQresultStatus(r);
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
    int rc = cl__result_error(c, r);
    PQclear(r);
    return rc;
  }
  *out = r;
  return 0;
}

/* Fills sums[i] (65 bytes each) with the hex SHA-256 of shipped migration
 * i, computed by the server so that no hash code lives here. */
static int shipped_checksums(cl_conn_t *c, char (*sums)[65]) {
  for (int i = 0; i < cl__migrations_count; i++) {
    const char *params[] = {cl__migrations[i].sql};
    PGresult *r = NULL;
    int rc = run_query(c,
                       "SELECT encode(sha256(convert_to($1::text, 'UTF8')),"
                       " 'hex')",
                       1, params, &r);
    if (rc != 0)
      return rc;
    snprintf(sums[i], 65, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  return 0;
}

/* Compares what the database has applied with what ships.  Returns the
 * number of applied migrations (all matching), or CL_ECHECKSUM /
 * CL_ESCHEMA with the message on c. */
static int compare_applied(cl_conn_t *c, char (*sums)[65]) {
  PGresult *r = NULL;
  int rc = run_query(c,
                     "SELECT version, name, checksum FROM "
                     "claimer.schema_migrations ORDER BY version",
                     0, NULL, &r);
  if (rc != 0)
    return rc;
  int n = PQntuples(r);
  for (int i = 0; i < n; i++) {
    int version = atoi(PQgetvalue(r, i, 0));
    const char *name = PQgetvalue(r, i, 1);
    const char *sum = PQgetvalue(r, i, 2);
    if (version != i + 1 || version > cl__migrations_count) {
      cl__set_error(c, NULL,
                    "the database has migration %d (%s) that this claimer "
                    "(%s, %d migrations) does not ship: upgrade claimer",
                    version, name, CL_VERSION_STRING, cl__migrations_count);
      PQclear(r);
      return CL_ESCHEMA;
    }
    if (strcmp(sum, sums[i]) != 0) {
      cl__set_error(c, NULL,
                    "migration %s was applied with checksum %.12s but this "
                    "claimer ships %.12s: the schema was changed outside "
                    "claimer; refusing to migrate",
                    name, sum, sums[i]);
      PQclear(r);
      return CL_ECHECKSUM;
    }
  }
  PQclear(r);
  return n;
}

/* Applies migration i in its own transaction. */
static int apply_one(cl_conn_t *c, int i, const char *sum) {
  const cl__migration_t *m = &cl__migrations[i];
  int rc = run_simple(c, "BEGIN");
  if (rc == 0)
    rc = run_simple(c, m->sql);
  if (rc == 0) {
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = {version, m->name, sum};
    PGresult *r = NULL;
    rc = run_query(c,
                   "INSERT INTO claimer.schema_migrations (version, name, "
                   "checksum) VALUES ($1::int, $2, $3)",
                   3, params, &r);
    PQclear(r);
  }
  if (rc == 0)
    rc = run_simple(c, "COMMIT");
  if (rc != 0) {
    char saved[sizeof c->error];
    char state[sizeof c->sqlstate];
    memcpy(saved, c->error, sizeof saved);
    memcpy(state, c->sqlstate, sizeof state);
    if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK)
      (void)run_simple(c, "ROLLBACK");
    cl__set_error(c, state, "migration %s failed: %s", m->name, saved);
  }
  return rc;
}

int cl_migrate(cl_conn_t *c, cl_migrate_cb cb, void *arg) {
  int rc = cl_conn_connect(c);
  if (rc != 0)
    return rc;
  char(*sums)[65] = calloc((size_t)cl__migrations_count, sizeof *sums);
  if (sums == NULL)
    return CL_ENOMEM;
  rc = run_simple(c, "SET client_min_messages = warning");
  if (rc == 0)
    rc = run_simple(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")");
  if (rc != 0) {
    free(sums);
    return rc;
  }
  rc = run_simple(c, bootstrap_sql);
  if (rc == 0)
    rc = shipped_checksums(c, sums);
  int applied = rc == 0 ? compare_applied(c, sums) : rc;
  int count = 0;
  for (int i = applied; applied >= 0 && i < cl__migrations_count; i++) {
    if (cb != NULL)
      cb(arg, cl__migrations[i].version, cl__migrations[i].name);
    rc = apply_one(c, i, sums[i]);
    if (rc != 0) {
      applied = rc;
      break;
    }
    count++;
  }
  free(sums);
  if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK) {
    char saved[sizeof c->error];
    memcpy(saved, c->error, sizeof saved);
    (void)run_simple(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
    memcpy(c->error, saved, sizeof saved);
  }
  return applied < 0 ? applied : count;
}

int cl_schema_check(cl_conn_t *c) {
  int rc = cl_conn_connect(c);
  if (rc != 0)
    return rc;
  char(*sums)[65] = calloc((size_t)cl__migrations_count, sizeof *sums);
  if (sums == NULL)
    return CL_ENOMEM;
  rc = shipped_checksums(c, sums);
  int applied = rc == 0 ? compare_applied(c, sums) : rc;
  free(sums);
  if (applied >= 0 && applied < cl__migrations_count) {
    cl__set_error(c, NULL,
                  "the database has %d of %d claimer migrations: run "
                  "`claimer migrate`",
                  applied, cl__migrations_count);
    return CL_ESCHEMA;
  }
  return applied < 0 ? applied : 0;
}
