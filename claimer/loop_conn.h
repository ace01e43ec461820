/*
 * loop_conn.h: one libpq connection driven by a libuv loop, for the worker
 * daemon and other loop drivers inside libclaimer.  It connects without
 * blocking (PQconnectStart/PQconnectPoll under a uv_poll_t and a deadline),
 * runs in pipeline mode with a Sync after every statement (so statements
 * are sent back to back without waiting, yet each commits or fails on its
 * own), prepares the statements of sql.h once per session, LISTENs on the
 * channels it is given, and reconnects by itself with capped exponential
 * backoff and jitter.
 *
 * Requests are queued FIFO.  One not yet sent when the connection drops
 * stays queued and goes out after the reconnect; one that was sent gets its
 * callback with CL_ECONNLOST (its outcome is unknown: the caller decides
 * whether to send it again, as complete and fail may be; G9).  A refused
 * password or role is not retried: the down hook gets CL_EAUTH and the
 * connection stays closed.
 *
 * Connecting has a deadline: the dsn's connect_timeout read by libpq's
 * rules (whole seconds, 1 counted as 2, 0 or less for none), 10 s when
 * the dsn gives none (as the blocking connection, conn.c, has it).  It
 * is per host, as libpq's blocking connect has it: past it, the attempt
 * goes on with the dsn's next host, and only the last one's ends it.
 */
#ifndef CLAIMER_LOOP_CONN_H
#define CLAIMER_LOOP_CONN_H

#include <libpq-fe.h>
#include <uv.h>

#include "claimer/claimer.h"
#include "sql.h"

typedef struct cl__loop_conn cl__loop_conn_t;

/* A request's outcome: rc 0 with the result (owned by the connection,
 * cleared after the callback returns), or a CL_E* code with res NULL and
 * the detail in cl__loop_conn_error().  Called exactly once per accepted
 * request, never from inside cl__loop_conn_send() (a session that breaks
 * while sending ends on the next turn of the loop), so a caller may mark
 * its request as out after the send returns 0; cl__loop_conn_close()
 * answers what is left with CL_ECONNLOST. */
typedef void (*cl__loop_conn_cb)(void *arg, int rc, PGresult *res);

typedef struct cl__loop_conn_hooks {
  /* Connected, statements prepared, LISTENs in place. */
  void (*up)(void *arg);
  /* The connection broke or could not be made; rc is CL_ECONNLOST,
   * CL_ECONNECT, or CL_EAUTH or CL_ESCHEMA (a statement could not be
   * prepared because the claimer schema is missing): given up, no
   * reconnect follows, and every request still pending was answered
   * CL_ECONNLOST before this hook runs.  why is the libpq message, secrets
   * removed.  retry_ms is the wait before the next try (0 when given
   * up). */
  void (*down)(void *arg, int rc, const char *why, unsigned retry_ms);
  /* A NOTIFY on a channel we listen on. */
  void (*notify)(void *arg, const char *channel, const char *payload);
} cl__loop_conn_hooks_t;

/* Creates the connection object for dsn (copied) on loop; it does not
 * connect until cl__loop_conn_start().  channels (NULL-terminated, may be NULL)
 * are LISTENed on every session.  Returns 0, CL_EDSN (also for a
 * connect_timeout libpq would refuse) or CL_ENOMEM. */
int cl__loop_conn_new(cl__loop_conn_t **out, uv_loop_t *loop, const char *dsn,
                      const char *const *channels,
                      const cl__loop_conn_hooks_t *hooks, void *arg);
/* Starts connecting (and reconnecting after failures). */
void cl__loop_conn_start(cl__loop_conn_t *a);
/* Queues statement id with params (copied).  Returns 0, or CL_ENOMEM /
 * CL_EINVAL (closing) in which case cb is never called. */
int cl__loop_conn_send(cl__loop_conn_t *a, cl__stmt_id_t id,
                       const char *const *params, cl__loop_conn_cb cb,
                       void *arg);
/* 1 when the session is up. */
int cl__loop_conn_is_up(const cl__loop_conn_t *a);
/* Requests queued or sent and not yet answered. */
size_t cl__loop_conn_pending(const cl__loop_conn_t *a);
/* The last failure's message, secrets removed ("" when none). */
const char *cl__loop_conn_error(const cl__loop_conn_t *a);
/* The connect deadline in milliseconds taken from the dsn (0: none). */
uint64_t cl__loop_conn_connect_timeout_ms(const cl__loop_conn_t *a);
/* The dsn with its password redacted. */
const char *cl__loop_conn_dsn_redacted(const cl__loop_conn_t *a);
/* Closes the connection; every pending request gets CL_ECONNLOST; then
 * frees a once its libuv handles are closed and calls closed_cb (may be
 * NULL).  No hook fires after this call. */
void cl__loop_conn_close(cl__loop_conn_t *a, void (*closed_cb)(void *arg),
                         void *arg);

/* The reconnect delay after `failures` consecutive failures: 100 ms
 * doubling to 10 s, times a jitter in [0.5, 1).  Pure, for tests. */
unsigned cl__backoff_ms(unsigned failures, double unit_random);

#endif
