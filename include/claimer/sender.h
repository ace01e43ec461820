/*
 * sender.h: a sender on a libuv loop, in-process: the protocol's third
 * driver, beside the worker and the reaper.  It consumes the results owed
 * to one subscriber: claims deliveries in batches on one pipelined
 * connection (cl_deliver_claim's statement), hands each to the program's
 * sink callback, extends the leases it holds in one statement per tick,
 * and records each outcome the sink reports (sent, or a failed attempt),
 * sending the record again after a lost connection (G9).  `claimer send`
 * is this sender with sinks that run a command or POST a webhook.
 *
 * The sink contract: sink_cb(delivery) begins the send (it must not block
 * the loop); later, from the same loop, the program calls cl_send_done()
 * exactly once with what happened.  The delivery carries an idempotency
 * key stable for (subscriber, item_id) across every retry, sender crash
 * and replay (G10): give it to the sink so that it can drop a repeat.
 */
#ifndef CLAIMER_SENDER_H
#define CLAIMER_SENDER_H

#include <uv.h>

#include "claimer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cl_sender cl_sender_t;
typedef struct cl_send cl_send_t;

/* What the sink reports. */
typedef enum cl_send_outcome {
  CL_SEND_OK = 1,  /* the sink took it: recorded 'sent' */
  CL_SEND_RETRY,   /* a failed attempt: due again after retry_in seconds
                      (< 0: the subscriber's schedule) while attempts
                      remain, else dead */
  CL_SEND_FAILED,  /* a failed attempt that no retry will mend: dead now */
  CL_SEND_IN_DOUBT /* the sink may or may not have taken it (a timeout
                      after the request went out): nothing is recorded,
                      the lease runs out and the subscriber's in-doubt
                      policy decides (send again with the same key, or
                      hold for a person) */
} cl_send_outcome_t;

typedef void (*cl_sink_cb)(cl_send_t *send, void *arg);
/* Once, when the sender has stopped and closed its handles: rc 0, or the
 * error that stopped it (CL_EAUTH, CL_ESCHEMA).  The sender is freed
 * right after this returns. */
typedef void (*cl_sender_exit_cb)(void *arg, int rc, const char *why);

typedef struct cl_sender_opts {
  const char *dsn;        /* required; copied */
  const char *subscriber; /* required; copied */
  const char *name;       /* sender id; NULL: "host:pid:" and random hex */
  int concurrency;        /* sends at once (default 8) */
  double lease_s;         /* lease per delivery (default 30) */
  double poll_s;          /* between claims when idle (default 1) */
  double drain_s;         /* graceful stop: wait this long for sends (30) */
  int once;               /* stop when nothing is due and nothing in flight */
  cl_sink_cb sink;        /* required */
  void *sink_arg;
  cl_events_t events; /* what the sender reports; none by default */
  cl_sender_exit_cb on_exit;
  void *arg;
} cl_sender_opts_t;

typedef struct cl_sender_stats {
  long claimed, sent, retried, dead, in_doubt, lost;
} cl_sender_stats_t;

CL_EXTERN void cl_sender_opts_init(cl_sender_opts_t *o);
/* Creates a sender on loop.  Returns 0, CL_EINVAL or CL_EDSN (message in
 * err) or CL_ENOMEM; nothing is allocated on error. */
CL_EXTERN CL_MUST_CHECK int cl_sender_new(cl_sender_t **out, uv_loop_t *loop,
                                          const cl_sender_opts_t *opts,
                                          char *err, size_t errlen);
/* Connects and starts claiming.  Returns 0, or CL_EINVAL when started
 * already. */
CL_EXTERN CL_MUST_CHECK int cl_sender_start(cl_sender_t *s);
/* Graceful stop: claims no more, lets sends in flight finish for up to
 * the drain timeout (then asks those still out to stop: cl_send_on_stop),
 * records what they reported, closes once every send has reported, and
 * calls on_exit.  On a sender never started it just closes.  Safe to call
 * twice. */
CL_EXTERN void cl_sender_stop(cl_sender_t *s);
CL_EXTERN void cl_sender_stats(const cl_sender_t *s, cl_sender_stats_t *out);
/* Reports what the sender holds now, as the event "sender_state" (at
 * info): its deliveries by state, the claim and heartbeat in flight and
 * for how long, the connection and its requests unanswered.  For an
 * operator asking a sender that seems idle why (`claimer send` does it on
 * SIGUSR1). */
CL_EXTERN void cl_sender_log_state(const cl_sender_t *s);
/* Pauses the subscriber for good reason given by its sink (a webhook's
 * 410 Gone): its senders, here and elsewhere, send nothing more until
 * `claimer subscriber resume`, and a subscriber_failing alert is raised
 * (why, copied, is its reason).  Asynchronous; reported as the event
 * "subscriber_paused". */
CL_EXTERN void cl_sender_disable(cl_sender_t *s, const char *why);

/* The delivery's facts; strings owned by it, valid until cl_send_done(). */
CL_EXTERN const char *cl_send_subscriber(const cl_send_t *d);
CL_EXTERN const char *cl_send_item_id(const cl_send_t *d);
CL_EXTERN const char *cl_send_queue(const cl_send_t *d);
CL_EXTERN const char *cl_send_key(const cl_send_t *d); /* idempotency key */
/* The delivery's fencing token: a sink that records the delivery itself
 * (claimer.delivery_sent() in its own transaction) passes it. */
CL_EXTERN const char *cl_send_token(const cl_send_t *d);
CL_EXTERN const char *cl_send_result(const cl_send_t *d);  /* JSON text */
CL_EXTERN const char *cl_send_payload(const cl_send_t *d); /* JSON text */
CL_EXTERN int cl_send_attempt(const cl_send_t *d);
CL_EXTERN long long cl_send_pos(const cl_send_t *d);

/* Sets the callback that asks the sink to stop early (a graceful stop's
 * drain timeout passed, or the database is gone for good): the sink stops
 * its send and still reports, CL_SEND_IN_DOUBT when the effect may have
 * happened.  The sender waits for every report before it closes. */
typedef void (*cl_send_stop_cb)(cl_send_t *send, void *arg);
CL_EXTERN void cl_send_on_stop(cl_send_t *d, cl_send_stop_cb cb, void *arg);

/* Reports the send's outcome (error copied, may be NULL; retry_in for
 * CL_SEND_RETRY).  After this the delivery is the sender's again.  A
 * second report is ignored. */
CL_EXTERN void cl_send_done(cl_send_t *d, cl_send_outcome_t outcome,
                            const char *error, double retry_in);

#ifdef __cplusplus
}
#endif
#endif /* CLAIMER_SENDER_H */
