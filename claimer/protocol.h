/*
 * protocol.h: the result parsers of the claim protocol's statements, shared
 * by the blocking calls in protocol.c and by event-loop drivers that send
 * the statements of sql.h themselves.  Each takes a successful PGresult of
 * its statement; none takes ownership of it.
 */
#ifndef CLAIMER_PROTOCOL_H
#define CLAIMER_PROTOCOL_H

#include <libpq-fe.h>

#include "ack.h"
#include "claimer/claimer.h"

/* Marks outcome[0..n) created or existed; returns the number created. */
int cl__parse_enqueue(PGresult *r, size_t n, int *outcome);
/* Returns 0 with a malloc'd array of leases (cl_leases_free), or
 * CL_ENOMEM. */
int cl__parse_claim(PGresult *r, const char *queue, cl_lease_t **leases,
                    size_t *count);
/* The same, from the rows row0.. of r whose CLAIM columns start at
 * column col0 (a COMPLETE_CLAIM answer: its claim rows after the
 * completes' and one column on). */
int cl__parse_claim_rows(PGresult *r, int row0, int col0, const char *queue,
                         cl_lease_t **leases, size_t *count);
/* Whether r is a well-formed COMPLETE_CLAIM answer to m completes: at
 * least m rows, the first m with an outcome, the rest without. */
int cl__complete_claim_ok(const PGresult *r, int m);
/* Returns 0 (info->already set when an earlier send had completed it) or
 * CL_ELEASE_LOST. */
int cl__parse_complete(PGresult *r, cl_complete_info_t *info);
/* Returns 0 with info filled, or CL_ELEASE_LOST. */
int cl__parse_fail(PGresult *r, cl_fail_info_t *info);
/* Returns what an acknowledgement's send came back with, for the policy
 * of ack.h: rc is the statement's outcome (0 with res, the answer to
 * cl__ack_stmt(a); or a CL_E* code, res unused): CL_ECONNLOST and
 * CL_ECONNECT are a lost connection, any other code a database error.
 * When the answer is a fail's (or its settling read's) and found the item,
 * fills *fail (may be NULL). */
cl__ack_got_t cl__parse_ack(const cl__ack_t *a, int rc, PGresult *res,
                            cl_fail_info_t *fail);
/* COMPLETE_MANY's three array parameters, from col: the item ids in
 * col[0..n), their tokens in col[n..2n), their results in col[2n..3n)
 * (NULL elements for null).  Returns 0 with the literals in lit (the
 * caller frees them), or CL_ENOMEM with lit all NULL.  Shared by
 * cl_complete_many() and the worker's batches. */
int cl__many_params(const char *const *col, size_t n, char *lit[3]);
/* Row i of a COMPLETE_MANY answer, as the ack policy reads it: 'ok' OK,
 * 'already' ALREADY, anything else ('lost') NO_CLAIM. */
cl__ack_got_t cl__parse_many_row(const PGresult *res, int i);
/* Returns 0 with a malloc'd array (cl_held_free), or CL_ENOMEM. */
int cl__parse_heartbeat(PGresult *r, cl_held_t **held, size_t *count);
/* Adds the reaped rows to info. */
void cl__parse_reap(PGresult *r, cl_reap_info_t *info);

/* Lost connections a blocking acknowledgement (of an item or of a
 * delivery) resends after; with cl__reconnect_backoff()'s waits (100 ms
 * doubling to 4 s) that is about 15 s in all. */
#define CL__RESEND_LIMIT 8

/* Waits *delay_ms (then doubles it, at most 4 s) and reconnects c, before
 * a resend whose outcome is unknown.  Returns CL_EAUTH when the password
 * or role is now refused (not worth resending), else 0: a failed
 * reconnect shows on the resend itself. */
int cl__reconnect_backoff(cl_conn_t *c, long *delay_ms);

/* Fills d from row i of a DELIVERY_CLAIM result (strings malloc'd).
 * Returns 0, or CL_ENOMEM with d's strings freed and NULLed.  Shared by
 * cl_deliver_claim() and the sender on the loop. */
int cl__parse_delivery(const PGresult *res, int i, cl_delivery_t *d);
/* 1 when row i is not a delivery but the rate limit's "claim again in
 * wait_s seconds" (column 9), which the claim adds when the subscriber's
 * rate is what cut it short. */
int cl__delivery_row_is_wait(const PGresult *res, int i);
/* Frees d's strings (not d). */
void cl__delivery_clear(cl_delivery_t *d);

#endif
