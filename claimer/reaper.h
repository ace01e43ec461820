/*
 * reaper.h: the reaper on a libuv loop, as `claimer reap` runs it.  Every
 * interval it runs one cycle (cl_reap_cycle's steps, each a pipelined
 * statement in bounded batches) on one non-blocking connection, and after
 * each cycle it announces new alerts: a warning log line per alert, then
 * the hooks, if any: a command run with the alert's JSON on stdin (exit 0
 * is success) and/or an HTTP POST of the JSON to a URL (2xx is success).
 *
 * Announcing is an outbox in the database (claimer.alerts.hook_state), so
 * each alert is announced by one reaper however many run, also for alerts
 * raised outside a reaper (a worker's fail that kills an item).  A hook
 * that fails is tried again after a backoff (capped at 5 minutes) up to
 * max_attempts, then the alert is marked 'failed'.  The hooks run beside
 * the cycles, never in their way: a slow or failing hook delays no reap.
 * A hook may see an alert twice (a reaper that crashed after the hook ran
 * but before it recorded so); alert_id in the JSON tells the repeats.
 */
#ifndef CLAIMER_REAPER_H
#define CLAIMER_REAPER_H

#include <uv.h>

#include "claimer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cl_reaper cl_reaper_t;

/* After every cycle: rc 0 and what it did, or the error that cut it
 * short (the next cycle tries again, unless once is set). */
typedef void (*cl_reaper_cycle_cb)(void *arg, int rc,
                                   const cl_cycle_info_t *info,
                                   double seconds);
/* Once, when the reaper has stopped and closed its handles: rc 0, or the
 * error that stopped it (CL_EAUTH, CL_ESCHEMA; with once set, any error
 * of the cycle).  The reaper is freed right after this returns. */
typedef void (*cl_reaper_exit_cb)(void *arg, int rc, const char *why);

typedef struct cl_reaper_config {
  const char *dsn;        /* required; copied */
  cl_reaper_opts_t cycle; /* the cycle's options (cl_reaper_opts_init) */
  double interval_s;      /* between cycle starts (5) */
  int once;               /* one cycle, its announcements, then stop */
  const char *hook_exec;  /* shell command, alert JSON on stdin; NULL */
  const char *hook_url;   /* http(s) URL to POST the JSON to; NULL */
  double hook_timeout_s;  /* per hook run (10) */
  int hook_max_attempts;  /* then 'failed' (10) */
  /* The retry policy (claimer.queue_policy), written once at start when
   * policy is 1: max_attempts for items enqueued without one, backoff_s
   * doubling to backoff_max_s after a failure, and per-queue exceptions.
   * Rows of queues not named here are removed. */
  int policy;
  int max_attempts;             /* (25) */
  double backoff_s;             /* (1) */
  double backoff_max_s;         /* (3600) */
  const char *const *qma_names; /* per-queue max attempts: nqma names ... */
  const int *qma;               /* ... and values */
  size_t nqma;
  const char *const *qb_names;  /* per-queue first backoff: nqb names ... */
  const double *qb_s;           /* ... and seconds */
  size_t nqb;
  cl_reaper_cycle_cb on_cycle;
  cl_reaper_exit_cb on_exit;
  void *arg;
} cl_reaper_config_t;

/* What the reaper announced so far. */
typedef struct cl_reaper_stats {
  long cycles;
  long announced;   /* alerts logged (and handed to the hooks) */
  long hooks_ok;    /* alerts the hooks took */
  long hooks_failed;/* hook runs that failed (retried later) */
  long gave_up;     /* alerts marked 'failed' */
} cl_reaper_stats_t;

CL_EXTERN void cl_reaper_config_init(cl_reaper_config_t *cfg);
/* Creates a reaper on loop.  Returns 0, CL_EINVAL or CL_EDSN (message in
 * err), or CL_ENOMEM; nothing is allocated on error. */
CL_EXTERN CL_MUST_CHECK int cl_reaper_new(cl_reaper_t **out, uv_loop_t *loop,
                                          const cl_reaper_config_t *cfg,
                                          char *err, size_t errlen);
/* Connects and runs the first cycle at once. */
CL_EXTERN int cl_reaper_start(cl_reaper_t *r);
/* Stops after the statement in flight: no new cycle, hooks running are
 * waited for (up to their timeout), then closes and calls on_exit.  Safe
 * to call twice. */
CL_EXTERN void cl_reaper_stop(cl_reaper_t *r);
CL_EXTERN void cl_reaper_stats(const cl_reaper_t *r, cl_reaper_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif
