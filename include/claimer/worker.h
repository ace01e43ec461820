/*
 * worker.h: a worker on a libuv loop, in-process.  A C program registers a
 * handler per queue; the worker claims items in batches on one pipelined
 * connection, hands each to its handler as a job, heartbeats every lease
 * it holds in one statement per tick, wakes on NOTIFY when items are
 * enqueued (with a jittered poll as fallback), and ends each job's lease
 * with the outcome the handler reports.  The `claimer work` daemon is this
 * worker with a handler that runs a command per item.
 *
 * The handler contract: start_cb(job) begins the work (it must not block
 * the loop); later, from the same loop, the handler calls exactly one of
 * cl_job_complete() or cl_job_fail(), after which the job is the worker's
 * again.  When the job must stop early the worker calls the stop callback
 * the handler set (cl_job_on_stop); the handler stops its work and still
 * reports (its report is then discarded or turned into a failure, as the
 * reason says).  Reasons:
 *   CL_STOP_LEASE_LOST  the heartbeat found the lease gone (expired and
 *                       reaped, or taken over): any result is discarded.
 *   CL_STOP_FENCED      the lease minus a safety margin has passed on this
 *                       process's monotonic clock, counted from before the
 *                       claim was sent (G7): the lease may be gone; the job
 *                       ends as a failed attempt whatever the handler says.
 *   CL_STOP_TIMEOUT     the per-job timeout passed.
 *   CL_STOP_SHUTDOWN    the drain timeout of a graceful stop passed.
 */
#ifndef CLAIMER_WORKER_H
#define CLAIMER_WORKER_H

#include <uv.h>

#include "claimer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cl_worker cl_worker_t;
typedef struct cl_job cl_job_t;

typedef enum cl_stop_reason {
  CL_STOP_LEASE_LOST = 1,
  CL_STOP_FENCED,
  CL_STOP_TIMEOUT,
  CL_STOP_SHUTDOWN
} cl_stop_reason_t;

typedef void (*cl_job_start_cb)(cl_job_t *job, void *arg);
typedef void (*cl_job_stop_cb)(cl_job_t *job, void *arg, cl_stop_reason_t why);
/* Called once when the worker has stopped and closed all its handles: rc
 * 0 after a graceful stop, or the error that stopped it (CL_EAUTH: the
 * password or role was refused; CL_ESCHEMA: the schema is missing;
 * CL_ENAME_TAKEN: another live worker holds the name).  For a worker
 * stopped before it started, rc is 0 or the first error a setup call
 * returned (see cl_worker_stop).  why (never NULL) says it in a sentence.
 * The worker is freed right after this returns. */
typedef void (*cl_worker_exit_cb)(void *arg, int rc, const char *why);

typedef struct cl_worker_opts {
  const char *dsn;    /* required; copied */
  const char *name;   /* worker id, unique among live workers (a name
                         another live worker holds stops this one with
                         CL_ENAME_TAKEN); NULL: "host:pid:" and 8 random
                         hex digits */
  int concurrency;    /* jobs running at once, >= 1 (default 8) */
  int prefetch;       /* claimed but not started, beyond concurrency;
                         -1 (default): automatic, from concurrency/4
                         rounded up to max(1024, 4 x concurrency), as
                         many as the handlers finish in 10 ms or two
                         claim round trips, whichever is longer; when
                         the oldest has waited a heartbeat interval,
                         those past concurrency/4 are given back
                         (event prefetch_given_back) */
  double lease_s;     /* lease length (default 30) */
  double heartbeat_s; /* 0: lease / 3 (default) */
  double poll_s;      /* fallback poll, jittered +-20% (default 2) */
  double timeout_s;   /* per job; 0: none (default) */
  double drain_s;     /* graceful stop: wait this long for jobs (30) */
  cl_events_t events; /* what the worker reports (claimed, lease_lost,
                         db_disconnected, ...); none by default */
  cl_worker_exit_cb on_exit;
  void *arg;
} cl_worker_opts_t;

/* The bounds cl_worker_new() holds the timings to: a lease shorter than
 * CL_WORKER_LEASE_MIN seconds leaves no room past the fencing margin; a
 * heartbeat (when given) must be at least CL_WORKER_HEARTBEAT_MIN seconds
 * and shorter than the lease minus the margin. */
#define CL_WORKER_LEASE_MIN 1.0
#define CL_WORKER_HEARTBEAT_MIN 0.1

/* The fencing margin for a lease of lease_s seconds: a tenth of it, at
 * least 0.2 s and at most 5 s.  A job is stopped (CL_STOP_FENCED) this
 * long before its lease ends on the worker's own monotonic clock. */
CL_EXTERN double cl_worker_fence_margin_s(double lease_s);

/* Fills o with the defaults. */
CL_EXTERN void cl_worker_opts_init(cl_worker_opts_t *o);

/* Creates a worker on loop.  Returns 0, CL_EINVAL or CL_EDSN (with a
 * message in err) or CL_ENOMEM; on error nothing is allocated. */
CL_EXTERN CL_MUST_CHECK int cl_worker_new(cl_worker_t **out, uv_loop_t *loop,
                                          const cl_worker_opts_t *opts,
                                          char *err, size_t errlen);
/* Adds a queue (copied) with a weight (1..1000: its share of claims when
 * several queues have work) and its handler.  Before cl_worker_start()
 * only.  Returns 0, CL_EINVAL (a malformed queue name, a weight out of
 * range, no handler, a queue given twice, or a worker already started)
 * or CL_ENOMEM.  On error the worker is as before the call; the first
 * error before the start is kept, with a sentence naming the queue, for
 * on_exit (see cl_worker_stop). */
CL_EXTERN CL_MUST_CHECK int cl_worker_add_queue(cl_worker_t *w,
                                                const char *queue, int weight,
                                                cl_job_start_cb start,
                                                void *arg);
/* Connects and starts claiming.  Returns 0, or CL_EINVAL when no queue
 * was added (kept for on_exit like the errors of cl_worker_add_queue) or
 * the worker was started or stopped already; on error nothing started,
 * and the worker is freed with cl_worker_stop(). */
CL_EXTERN CL_MUST_CHECK int cl_worker_start(cl_worker_t *w);
/* Graceful stop: claims no more, releases claimed-but-unstarted items
 * without spending an attempt, lets running jobs finish for up to the
 * drain timeout (then stops them with CL_STOP_SHUTDOWN), removes its row
 * from claimer.workers, closes, and calls on_exit.  Safe to call twice.
 *
 * On a worker never started (cl_worker_start() not called, or failed)
 * this is how to free it: it closes the handles cl_worker_new() made
 * (the loop must run for their close callbacks; no database is touched)
 * and then calls on_exit with rc 0, or with the first error that
 * cl_worker_add_queue() or cl_worker_start() returned and its message.
 * The loop can then be closed with uv_loop_close() == 0. */
CL_EXTERN void cl_worker_stop(cl_worker_t *w);
/* The worker id. */
CL_EXTERN const char *cl_worker_name(const cl_worker_t *w);
/* Jobs running now (started, not yet reported). */
CL_EXTERN int cl_worker_running(const cl_worker_t *w);
/* Changes the concurrency of a running worker (SIGHUP reload). */
CL_EXTERN void cl_worker_set_concurrency(cl_worker_t *w, int concurrency);
/* Changes the lowest level of event reported (SIGHUP reload). */
CL_EXTERN void cl_worker_set_event_level(cl_worker_t *w, cl_level_t min);

/* The job's facts; strings owned by the job, valid until it is reported. */
CL_EXTERN const char *cl_job_item_id(const cl_job_t *job);
CL_EXTERN const char *cl_job_queue(const cl_job_t *job);
CL_EXTERN const char *cl_job_token(const cl_job_t *job);
CL_EXTERN const char *cl_job_payload(const cl_job_t *job); /* JSON text */
CL_EXTERN int cl_job_attempt(const cl_job_t *job);
CL_EXTERN int cl_job_max_attempts(const cl_job_t *job);
/* Sets the callback that asks the handler to stop early. */
CL_EXTERN void cl_job_on_stop(cl_job_t *job, cl_job_stop_cb cb, void *arg);

/* Reports success with result (JSON text, NULL for null; copied).  Returns
 * 0, after which job is no longer the caller's; or CL_EJSON when result
 * is not valid JSON (the job stays the caller's). */
CL_EXTERN int cl_job_complete(cl_job_t *job, const char *result);
/* Gives the item back without spending an attempt, for a handler that
 * could not even start (out of file descriptors or processes, say): the
 * worker's fault, not the item's.  why (copied; may be NULL) is logged.
 * The worker then pauses starting and claiming for a while (0.25 s,
 * doubling while starts keep failing, at most 10 s) and warns at most
 * once a minute.  Returns 0, after which job is no longer the caller's. */
CL_EXTERN int cl_job_release(cl_job_t *job, const char *why);
/* Reports failure with error (copied; may be NULL).  retry: back to ready
 * after retry_in seconds (< 0: exponential backoff; at most 3.2e9) while
 * attempts remain, else dead.  Returns 0, after which job is no longer the
 * caller's, or CL_EINVAL for a retry_in out of range. */
CL_EXTERN int cl_job_fail(cl_job_t *job, const char *error, int retry,
                          double retry_in);

#ifdef __cplusplus
}
#endif
#endif /* CLAIMER_WORKER_H */
