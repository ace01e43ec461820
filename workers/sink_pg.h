/*
 * sink_pg.h: the PostgreSQL sink of `claimer send`: a statement of the
 * user's run in a target database in one transaction with an insert into
 * the target's inbox (claimer_sink.inbox, primary key (subscriber,
 * idempotency_key)), so that a repeat (a resend after a crash, a lost
 * COMMIT answer, a replay) is found by the target's own transaction and
 * skipped: the effect happens exactly once, with nothing in doubt.
 *
 * The statement gets the delivery as parameters: $1 item_id (text), $2
 * queue (text), $3 result (jsonb), $4 payload (jsonb), $5 idempotency_key
 * (text), $6 subscriber (text), $7 attempt (int).  It runs on a small pool
 * of blocking connections in libuv's thread pool, never on the loop.
 *
 * When the target is the claimer database itself (same_db), the
 * delivery's 'sent' mark (claimer.delivery_sent, fenced by its token)
 * commits in the same transaction as the effect: both happen, or
 * neither.  A token that no longer holds the delivery rolls it all back.
 */
#ifndef CLAIMER_SINK_PG_H
#define CLAIMER_SINK_PG_H

#include <uv.h>

#include "claimer/sender.h"

typedef struct pgsink pgsink_t;

/* Creates claimer_sink.inbox in the target dsn when missing.  Returns 0,
 * or a CL_E* code with a message in err (no password in it). */
int pgsink_setup(const char *dsn, char *err, size_t errlen);

/* Opens nconns connections to the target, checks that the inbox exists
 * and that sql parses there (PREPARE).  Returns 0, CL_EINVAL (the inbox is
 * missing, or sql does not parse: the message says which), CL_ECONNECT /
 * CL_EAUTH, or CL_ENOMEM; err holds the message. */
int pgsink_open(pgsink_t **out, uv_loop_t *loop, const char *dsn,
                const char *sql, int nconns, int same_db, char *err,
                size_t errlen);

/* Runs the delivery in the target; reports through cl_send_done() from the
 * loop: sent (also when the inbox already had the key: a repeat, counted),
 * or a failed attempt (the transaction rolled back: nothing happened, so
 * a lost connection too is a plain retry, never in doubt). */
void pgsink_send(pgsink_t *p, cl_send_t *send);

/* Repeats the inbox skipped so far. */
long pgsink_repeats(const pgsink_t *p);

/* Closes the connections; call once no send is in flight. */
void pgsink_close(pgsink_t **p);

#endif
