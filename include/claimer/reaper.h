/*
 * reaper.h: the reaper on a libuv loop, as `claimer reap` runs it.  Every
 * interval it runs one cycle (cl_reap_cycle's steps, each a pipelined
 * statement in bounded batches) on one non-blocking connection, and after
 * each cycle it announces new alerts: an "alert" event per alert, then,
 * when the program installed an announce callback, each alert handed to it
 * (a few at a time); the program answers each with cl_alert_done() once
 * it has told the world (`claimer reap` runs its exec and HTTP hooks).
 *
 * Announcing is an outbox in the database (claimer.alerts.hook_state), so
 * each alert is announced by one reaper however many run, also for alerts
 * raised outside a reaper (a worker's fail that kills an item).  An
 * announcement that fails is tried again after a backoff (capped at 5
 * minutes) up to announce_max_attempts, then the alert is marked 'failed'.
 * Announcing runs beside the cycles, never in their way: a slow or failing
 * announcement delays no reap.  The program may see an alert twice (a
 * reaper that crashed after the announcement but before it recorded so);
 * alert_id in the JSON tells the repeats.
 */
#ifndef CLAIMER_REAPER_H
#define CLAIMER_REAPER_H

#include <uv.h>

#include "claimer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cl_reaper cl_reaper_t;
/* An alert being announced: owned by the reaper, the program's to use from
 * the announce callback until it answers with cl_alert_done(). */
typedef struct cl_alert cl_alert_t;

/* Hands alert to the program to announce.  The program answers exactly
 * once, from the loop's thread, now or later, with cl_alert_done(). */
typedef void (*cl_reaper_announce_cb)(void *arg, cl_alert_t *alert);

/* After every cycle: rc 0 and what it did, or the error that cut it
 * short (the next cycle tries again, unless once is set). */
typedef void (*cl_reaper_cycle_cb)(void *arg, int rc,
                                   const cl_cycle_info_t *info, double seconds);
/* Once, when the reaper has stopped and closed its handles: rc 0, or the
 * error that stopped it (CL_EAUTH, CL_ESCHEMA; with once set, any error
 * of the cycle).  The reaper is freed right after this returns. */
typedef void (*cl_reaper_exit_cb)(void *arg, int rc, const char *why);

typedef struct cl_reaper_config {
  const char *dsn;        /* required; copied */
  cl_reaper_opts_t cycle; /* the cycle's options (cl_reaper_opts_init) */
  double interval_s;      /* between cycle starts (5) */
  int once;               /* one cycle, its announcements, then stop */
  /* Announcing: NULL, or the callback that tells the world of an alert
   * (then the alert is 'sent' when it answers ok).  Without one, an alert
   * is announced by its event alone. */
  cl_reaper_announce_cb announce;
  double announce_timeout_s; /* the longest one announcement may take
                                (the outbox lease is sized by it) (10) */
  int announce_max_attempts; /* then 'failed' (10) */
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
  const char *const *qb_names; /* per-queue first backoff: nqb names ... */
  const double *qb_s;          /* ... and seconds */
  size_t nqb;
  cl_events_t events; /* what the reaper reports (reap_cycle, alert, ...);
                         none by default */
  cl_reaper_cycle_cb on_cycle;
  cl_reaper_exit_cb on_exit;
  void *arg;
} cl_reaper_config_t;

/* What the reaper announced so far. */
typedef struct cl_reaper_stats {
  long cycles;
  long announced;    /* alerts reported (and handed to announce) */
  long hooks_ok;     /* announcements answered ok */
  long hooks_failed; /* announcements answered failed (retried later) */
  long gave_up;      /* alerts marked 'failed' */
} cl_reaper_stats_t;

CL_EXTERN void cl_reaper_config_init(cl_reaper_config_t *cfg);
/* Creates a reaper on loop.  Returns 0, CL_EINVAL or CL_EDSN (message in
 * err), or CL_ENOMEM; nothing is allocated on error. */
CL_EXTERN CL_MUST_CHECK int cl_reaper_new(cl_reaper_t **out, uv_loop_t *loop,
                                          const cl_reaper_config_t *cfg,
                                          char *err, size_t errlen);
/* Connects and runs the first cycle at once. */
CL_EXTERN int cl_reaper_start(cl_reaper_t *r);
/* Stops after the statement in flight: no new cycle, announcements handed
 * out are waited for (the program must answer them), then closes and
 * calls on_exit.  Safe
 * to call twice. */
CL_EXTERN void cl_reaper_stop(cl_reaper_t *r);
CL_EXTERN void cl_reaper_stats(const cl_reaper_t *r, cl_reaper_stats_t *out);

/* The alert's facts (strings owned by the alert). */
CL_EXTERN const char *cl_alert_id(const cl_alert_t *alert);
CL_EXTERN const char *cl_alert_kind(const cl_alert_t *alert);
CL_EXTERN const char *cl_alert_subject(const cl_alert_t *alert);
CL_EXTERN const char *cl_alert_json(const cl_alert_t *alert); /* JSON text */
/* 1 on the first announcement, more on retries. */
CL_EXTERN int cl_alert_attempt(const cl_alert_t *alert);
/* Answers an announcement: ok 1 (sent) or 0 with error (copied, may be
 * NULL; retried later).  After this the alert is no longer the
 * program's.  A second answer is ignored, in every build (no assertion
 * fires): the alert's memory lasts at least until control returns to the
 * loop, so a repeat from the same callback is harmless; one made later may
 * find the alert freed. */
CL_EXTERN void cl_alert_done(cl_alert_t *alert, int ok, const char *error);

#ifdef __cplusplus
}
#endif

#endif
