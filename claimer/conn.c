/*
 * conn.c: the connection handle.  It owns one libpq connection, the dsn it
 * was made from (kept only to reconnect; messages show the redacted form),
 * the set of statements prepared on the current session, and the detail of
 * the last failure.  Every failure of a statement funnels through
 * cl__result_error(), which decides what the caller can conclude: the
 * statement failed (CL_EDB), the schema is missing (CL_ESCHEMA), or the
 * connection broke and the outcome is unknown (CL_ECONNLOST; G9).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

char *cl__strdup(const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}

void cl__fmt_double(char *buf, size_t n, double v) {
  snprintf(buf, n, "%.6f", v);
}

void cl__set_error(cl_conn_t *c, const char *sqlstate, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof c->error, fmt, ap);
  va_end(ap);
  /* libpq messages end with a newline; one-line messages log better. */
  size_t len = strlen(c->error);
  while (len > 0 && (c->error[len - 1] == '\n' || c->error[len - 1] == ' '))
    c->error[--len] = '\0';
  snprintf(c->sqlstate, sizeof c->sqlstate, "%s", sqlstate ? sqlstate : "");
}

int cl_conn_new(cl_conn_t **out, const char *dsn) {
  *out = NULL;
  if (dsn == NULL)
    return CL_EINVAL;
  if (cl_check_dsn(dsn, NULL, 0) != 0)
    return CL_EDSN;
  cl_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return CL_ENOMEM;
  c->dsn = cl__strdup(dsn);
  c->dsn_redacted = cl_dsn_redact(dsn);
  if (c->dsn == NULL || c->dsn_redacted == NULL) {
    cl_conn_free(&c);
    return CL_ENOMEM;
  }
  *out = c;
  return 0;
}

void cl_conn_free(cl_conn_t **cp) {
  if (cp == NULL || *cp == NULL)
    return;
  cl_conn_t *c = *cp;
  if (c->pg != NULL)
    PQfinish(c->pg);
  free(c->dsn);
  free(c->dsn_redacted);
  free(c);
  *cp = NULL;
}

int cl__connect_error(cl_conn_t *c, const char *msg) {
  /* libpq gives no SQLSTATE for a failed connection; its message is the
   * only place that says the password or role was refused, and those
   * must not be retried. */
  int auth = strstr(msg, "password authentication failed") != NULL ||
             strstr(msg, "no password supplied") != NULL ||
             strstr(msg, "authentication failed for user") != NULL ||
             (strstr(msg, "role \"") != NULL &&
              strstr(msg, "does not exist") != NULL) ||
             strstr(msg, "no pg_hba.conf entry") != NULL;
  cl__set_error(c, auth ? "28P01" : "08001", "%s: %s",
                auth ? "authentication failed" : "cannot connect", msg);
  return auth ? CL_EAUTH : CL_ECONNECT;
}

void cl__ignore_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

/* Opens the libpq connection.  The dsn's own options win; we only add a
 * connect_timeout when it has none, and an application_name, by passing
 * them as earlier keywords that the dsn (expanded last) overrides. */
static int conn_open(cl_conn_t *c) {
  const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
  const char *vals[] = {"10", "claimer", c->dsn, NULL};
  c->prepared = 0;
  c->pg = PQconnectdbParams(keys, vals, 1);
  if (c->pg == NULL) {
    cl__set_error(c, NULL, "out of memory");
    return CL_ENOMEM;
  }
  if (PQstatus(c->pg) == CONNECTION_OK) {
    PQsetNoticeProcessor(c->pg, cl__ignore_notice, NULL);
    c->error[0] = c->sqlstate[0] = '\0';
    return 0;
  }
  int rc = cl__connect_error(c, PQerrorMessage(c->pg));
  PQfinish(c->pg);
  c->pg = NULL;
  return rc;
}

int cl_conn_connect(cl_conn_t *c) {
  if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK)
    return 0;
  if (c->pg != NULL) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  return conn_open(c);
}

int cl_conn_reset(cl_conn_t *c) {
  if (c->pg != NULL) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  return conn_open(c);
}

const char *cl_conn_last_error(const cl_conn_t *c) { return c->error; }
const char *cl_conn_last_sqlstate(const cl_conn_t *c) { return c->sqlstate; }
const char *cl_conn_dsn_redacted(const cl_conn_t *c) { return c->dsn_redacted; }
struct pg_conn *cl_conn_pg(cl_conn_t *c) {
  return c->pg;
}

int cl__result_error(cl_conn_t *c, const PGresult *res) {
  if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) {
    cl__set_error(c, "08006", "connection lost: %s",
                  c->pg ? PQerrorMessage(c->pg) : "not connected");
    return CL_ECONNLOST;
  }
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
  if (state == NULL || *state == '\0') {
    /* A result with no SQLSTATE comes from libpq itself: the server went
     * away mid-statement. */
    cl__set_error(c, "08006", "connection lost: %s", msg);
    return CL_ECONNLOST;
  }
  /* 3F000: schema missing, 42P01: table missing, 42883: function missing. */
  if (strcmp(state, "3F000") == 0 || strcmp(state, "42P01") == 0 ||
      strcmp(state, "42883") == 0) {
    cl__set_error(c, state,
                  "the claimer schema is missing or incomplete (run "
                  "`claimer migrate`): %s",
                  msg);
    return CL_ESCHEMA;
  }
  /* Class 08 and the admin-shutdown family: the session is gone. */
  if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
      strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0) {
    cl__set_error(c, state, "connection lost: %s", msg);
    return CL_ECONNLOST;
  }
  cl__set_error(c, state, "%s", msg);
  return CL_EDB;
}

int cl__pooler_seen(cl_conn_t *c, const PGresult *res) {
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  if (state == NULL ||
      (strcmp(state, "26000") != 0 && strcmp(state, "42P05") != 0))
    return 0;
  c->unnamed = 1;
  c->prepared = 0;
  return 1;
}

/* Runs st unnamed, or as prepared on this session (preparing it first). */
static PGresult *exec_stmt(cl_conn_t *c, cl__stmt_id_t id,
                           const char *const *params) {
  const cl__stmt_t *st = &cl__stmts[id];
  if (c->unnamed)
    return PQexecParams(c->pg, st->sql, st->nparams, NULL, params, NULL, NULL,
                        0);
  uint64_t bit = (uint64_t)1 << id;
  if ((c->prepared & bit) == 0) {
    PGresult *p =
        PQprepare(c->pg, cl__stmt_name(id), st->sql, st->nparams, NULL);
    if (PQresultStatus(p) != PGRES_COMMAND_OK)
      return p;
    PQclear(p);
    c->prepared |= bit;
  }
  return PQexecPrepared(c->pg, cl__stmt_name(id), st->nparams, params, NULL,
                        NULL, 0);
}

int cl__exec(cl_conn_t *c, cl__stmt_id_t id, const char *const *params,
             PGresult **res) {
  *res = NULL;
  if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) {
    int rc = cl_conn_connect(c);
    if (rc != 0)
      return rc;
  }
  int was_unnamed = c->unnamed;
  PGresult *r = exec_stmt(c, id, params);
  ExecStatusType s = PQresultStatus(r);
  if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK && !was_unnamed &&
      cl__pooler_seen(c, r)) {
    /* It did not run: once more, unnamed. */
    PQclear(r);
    r = exec_stmt(c, id, params);
    s = PQresultStatus(r);
  }
  if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
    int rc = cl__result_error(c, r);
    PQclear(r);
    return rc;
  }
  *res = r;
  return 0;
}
