/*
 * internal.h: what the modules of libclaimer share and the outside does not
 * see: the connection object's layout, the statement table and the helpers
 * that run a statement and turn its failure into a CL_E* code.
 */
#ifndef CLAIMER_INTERNAL_H
#define CLAIMER_INTERNAL_H

#include <libpq-fe.h>

#include "claimer/claimer.h"
#include "sql.h"

struct cl_conn {
  char *dsn;          /* as given; may hold a password, never logged */
  char *dsn_redacted; /* for messages */
  PGconn *pg;
  uint64_t prepared; /* bit i: statement i prepared on this session */
  int unnamed;       /* 1: statements go unnamed (behind a pooler) */
  char error[1024];
  char sqlstate[6];
};

/* Records a failure on c: msg (copied, secrets never included by callers)
 * and the SQLSTATE (may be NULL). */
void cl__set_error(cl_conn_t *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs statement id with params (text format) on c, preparing it on first
 * use in this session.  Returns 0 and the result in *res (caller PQclear()s)
 * when the statement succeeded; otherwise a CL_E* code with the detail on c
 * and *res NULL: CL_ECONNLOST when the connection broke (outcome unknown),
 * CL_ESCHEMA when the claimer schema is missing, CL_EDB for other errors. */
int cl__exec(cl_conn_t *c, cl__stmt_id_t id, const char *const *params,
             PGresult **res);

/* Whether a failed result says that the session is a pooler's rather than
 * one server session: a statement prepared on it is unknown to the server
 * (26000), or a name not yet prepared on it is known (42P05).  Either way
 * the statement did not run.  Then c sends its statements unnamed from
 * here on (Parse, Bind and Execute together, good on whichever server
 * session takes them) and 1 is returned; else 0. */
int cl__pooler_seen(cl_conn_t *c, const PGresult *res);

/* Maps a failed PGresult (or NULL) on pg to a CL_E* code and records it on
 * c.  Shared by the blocking calls and by loop drivers. */
int cl__result_error(cl_conn_t *c, const PGresult *res);

/* Classifies a failed connection attempt by libpq's message msg, records
 * it on c, and returns CL_EAUTH (a refused password or role: do not retry)
 * or CL_ECONNECT. */
int cl__connect_error(cl_conn_t *c, const char *msg);

/* A libpq notice processor that drops notices (a library must not write on
 * stderr). */
void cl__ignore_notice(void *arg, const char *message);

/* Returns elems[0..n) as a malloc'd PostgreSQL array literal (for a bound
 * text[] parameter), or NULL when out of memory. */
char *cl__array_literal(const char *const *elems, size_t n);

/* Returns a malloc'd copy of s (NULL stays NULL); on failure NULL. */
char *cl__strdup(const char *s);

/* Replaces s[at..at+len) by "***" (by as many '*' as it has bytes when
 * shorter), moves the rest of s up and zeroes the bytes it left, so s
 * never grows (a masked argv string stays in place).  Returns the length
 * of what replaced the span.  Used for config output and process titles. */
size_t cl__mask_span(char *s, size_t at, size_t len);

/* A random double in [0, 1) from a per-thread source seeded by the
 * kernel (for jitter; never rand()). */
double cl__random_unit(void);

/* Writes a default process id, "host:pid:" and 8 random hex digits, into
 * buf (n >= 64): host:pid alone can repeat (containers sharing a
 * hostname, each with pid 1), and two drivers under one id would extend
 * and release each other's leases.  For workers and senders. */
void cl__default_name(char *buf, size_t n);

/* Formats a double as a decimal for a SQL parameter. */
void cl__fmt_double(char *buf, size_t n, double v);

#endif
