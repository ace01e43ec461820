/*
 * ack.h: the one policy for ending a lease with an acknowledgement
 * (complete, fail, release) when the answer is not a plain success.  Both
 * drivers of the protocol ask it what to do next: the blocking calls of
 * protocol.c (cl_complete, cl_fail, cl_release) and the in-process worker
 * on the loop (loop_worker.c).  It is pure: it sees the operation, what
 * the last send came back with and a few counters, and names the next
 * step; the drivers do the sending, the sleeping and the reporting.  No
 * libpq or libuv type appears here, so the table is tested on its own
 * (tests/unit/test_ack.c).
 *
 * Words.  A "send" is one statement of the acknowledgement (or its
 * settling read) sent to the database.  A "resend" is the same statement
 * sent again, with the same token, because the connection broke before
 * its outcome was known (G9): complete, fail and release are safe to send
 * twice.  The "settling read" asks, in a statement of its own (so with a
 * fresh snapshot), whether a first send that found no claim on its resend
 * had in fact committed; a send that committed while the resend waited on
 * its row lock is invisible to the resend's own snapshot.  A "refusal" is
 * a database error that stays after CL__ACK_DB_RETRIES more sends: a
 * deadlock or a lock or statement timeout goes away on a resend, a
 * trigger or a value the database will not store does not.
 *
 * The decision on a refused complete: it becomes a fail, in both drivers.
 * The result cannot be stored, so the attempt ends as a failure ("the
 * result could not be stored: REASON", retried with backoff) rather than
 * keep the lease until it expires, so that an item whose result the
 * database keeps refusing ends dead after max_attempts with the reason on
 * it (G4), and now rather than a lease later.  The worker has always done
 * so (the handler handed the job over and nobody else can decide); the
 * blocking cl_complete does so too since this module: it still returns an
 * error (CL_EDB: the complete did not happen) and says in the connection's
 * last error that the attempt was recorded as a failure instead.  A
 * refused fail is sent once more with a short stand-in error naming the
 * database's reason ("the failure could not be recorded as given:
 * REASON"), so the attempt is still spent.  When even that is refused,
 * or a release is, the driver gives up and the token is "spent": the
 * worker stops extending that lease and never releases it as an orphan,
 * so it expires and the reaper spends the attempt; the blocking call
 * returns the error and leaves the lease to its holder.
 *
 * The table.  Rows are tried in order; the first that matches gives the
 * step.  "settling": the last send was the settling read.  "limit": the
 * driver's bound on resends after a lost connection (0: none; the worker
 * has no bound, its stop timer gives up instead; the blocking calls stop
 * after 8, about 15 s of backoff).  db: database errors so far on the
 * current statement, resends: resends so far, both counted by
 * cl__ack_step().
 *
 *   op        got          condition                       step
 *   --------  -----------  ------------------------------  ------------
 *   any       OK           not settling                    DONE
 *   any       OK, ALREADY  settling                        ALREADY_DONE
 *   any       ALREADY      not settling                    ALREADY_DONE
 *   release   NO_CLAIM     -                               LEASE_LOST
 *   cmpl/fail NO_CLAIM     settling                        LEASE_LOST
 *   cmpl/fail NO_CLAIM     resends == 0                    LEASE_LOST
 *   cmpl/fail NO_CLAIM     resends > 0                     SETTLE
 *   any       CONN_LOST    limit == 0 or resends < limit   RESEND
 *   any       CONN_LOST    resends >= limit > 0            UNSETTLED
 *   release   DB_ERROR     -                               GIVE_UP
 *   cmpl/fail DB_ERROR     db < CL__ACK_DB_RETRIES         RESEND
 *   cmpl/fail DB_ERROR     settling                        GIVE_UP
 *   complete  DB_ERROR     not settling                    TO_FAIL
 *   fail      DB_ERROR     not settling, no stand-in yet   STAND_IN
 *   fail      DB_ERROR     not settling, stand-in sent     GIVE_UP
 *
 * What each step means for the driver:
 *   DONE          this send recorded the outcome.
 *   ALREADY_DONE  an earlier send with this token had recorded it (the
 *                 statement or the settling read found it): success.
 *   LEASE_LOST    the token holds no lease: nothing was written (G3).
 *   RESEND        send the same statement again, same token.
 *   SETTLE        send the settling read (cl__ack_stmt() names it).
 *   TO_FAIL       send a fail instead: retry with backoff, the error from
 *                 cl__ack_error_text().
 *   STAND_IN      send the fail again with cl__ack_error_text()'s
 *                 stand-in as its error.
 *   GIVE_UP       refused for good: spend the token (see above).
 *   UNSETTLED     the connection stayed down: the outcome is unknown and
 *                 nothing is spent; the caller may send again later with
 *                 the same token (CL_ECONNLOST).
 *
 * A release is not retried after a database error: it is sent for items
 * never started, and giving it up costs nothing the reaper does not put
 * right.  Release has no settling read: a resend that finds no claim
 * reports a lost lease (the first send may have released it).
 *
 * What is not an outcome stays out of the table: a driver that cannot
 * send at all (a refused password, no claimer schema, out of memory)
 * stops before asking, and the worker's stop may close the connection
 * under an acknowledgement (it is then dropped; its lease expires).
 */
#ifndef CLAIMER_ACK_H
#define CLAIMER_ACK_H

#include "sql.h"

/* Database errors on one statement that are resent before it counts as
 * refused (a deadlock, a lock or statement timeout go away). */
#define CL__ACK_DB_RETRIES 2

typedef enum cl__ack_op {
  CL__ACK_COMPLETE,
  CL__ACK_FAIL,
  CL__ACK_RELEASE
} cl__ack_op_t;

/* What the last send came back with. */
typedef enum cl__ack_got {
  CL__ACK_GOT_OK,        /* the statement did it */
  CL__ACK_GOT_ALREADY,   /* an earlier send with this token had done it */
  CL__ACK_GOT_NO_CLAIM,  /* answered, but the token holds no claim (or the
                            settling read found nothing) */
  CL__ACK_GOT_CONN_LOST, /* the connection broke: outcome unknown */
  CL__ACK_GOT_DB_ERROR   /* the database refused the statement */
} cl__ack_got_t;

#define CL__ACK_STEP_MAP(XX)                                                   \
  XX(DONE)                                                                     \
  XX(ALREADY_DONE)                                                             \
  XX(LEASE_LOST)                                                               \
  XX(RESEND)                                                                   \
  XX(SETTLE)                                                                   \
  XX(TO_FAIL)                                                                  \
  XX(STAND_IN)                                                                 \
  XX(GIVE_UP)                                                                  \
  XX(UNSETTLED)

typedef enum cl__ack_step {
#define CL__ACK_STEP_ENUM(name) CL__ACK_##name,
  CL__ACK_STEP_MAP(CL__ACK_STEP_ENUM)
#undef CL__ACK_STEP_ENUM
      CL__ACK_STEP_COUNT
} cl__ack_step_t;

/* One acknowledgement's progress, owned by its driver. */
typedef struct cl__ack {
  cl__ack_op_t op;  /* what is sent now: a refused complete becomes a fail */
  int resends;      /* sends repeated after a lost connection, in all */
  int db_errors;    /* database errors on the current statement */
  int settling;     /* 1: the last send was the settling read */
  int stand_in;     /* 1: the fail carries the stand-in error */
  int converted;    /* 1: it began as a complete the database refused */
  int resend_limit; /* resends after lost connections; 0: no bound */
} cl__ack_t;

/* Starts an acknowledgement of op with the driver's resend limit. */
void cl__ack_init(cl__ack_t *a, cl__ack_op_t op, int resend_limit);

/* Returns the step the table gives for a in its present state and got,
 * the outcome of the last send.  Changes nothing. */
cl__ack_step_t cl__ack_next(const cl__ack_t *a, cl__ack_got_t got);

/* Returns cl__ack_next(a, got) and moves a on to match: a resend after a
 * lost connection counts in resends, one after a database error in
 * db_errors; SETTLE sets settling; TO_FAIL makes op a fail (converted);
 * STAND_IN sets stand_in; a new statement starts with db_errors 0. */
cl__ack_step_t cl__ack_step(cl__ack_t *a, cl__ack_got_t got);

/* The statement to send next for a: the operation's own, or its settling
 * read. */
cl__stmt_id_t cl__ack_stmt(const cl__ack_t *a);

/* Returns the error text to send with the fail of step TO_FAIL or
 * STAND_IN, naming reason (the database's message; NULL as ""), malloc'd
 * (the caller frees it), or NULL when out of memory or for another step. */
char *cl__ack_error_text(cl__ack_step_t step, const char *reason);

/* The step's static name ("RESEND"), or "?" for a value out of range. */
const char *cl__ack_step_name(cl__ack_step_t step);

#endif
