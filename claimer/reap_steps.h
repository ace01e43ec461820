/*
 * reap_steps.h: the steps of a reaper cycle, shared by the blocking driver
 * (cl_reap_cycle, reap.c) and the one on a libuv loop (loop_reaper.c).  A
 * step is a statement of sql.h run in batches until a batch comes back
 * short; its rows are added up into a cl_cycle_info_t.  The order matters:
 * lost workers first, so the leases they held are due by the time the
 * stale-lease step runs in the same cycle; resolving after raising, so an
 * alert raised and cleared within one cycle does not wait for the next.
 */
#ifndef CLAIMER_REAP_STEPS_H
#define CLAIMER_REAP_STEPS_H

#include <libpq-fe.h>

#include "claimer/claimer.h"
#include "sql.h"

typedef enum cl__rstep {
  CL__RS_WORKERS,
  CL__RS_REAP,
  CL__RS_OVERDUE,
  CL__RS_IN_DOUBT,
  CL__RS_RESOLVE,
  CL__RS_RETAIN_DONE,
  CL__RS_RETAIN_DEAD,
  CL__RS_RETAIN_ALERTS,
  CL__RS_RETAIN_WORKERS,
  CL__RS_COUNT
} cl__rstep_t;

/* A cycle's parameters in text form, built once from the options. */
typedef struct cl__rparams {
  int batch;
  int enabled[CL__RS_COUNT]; /* retention steps are off at 0 seconds */
  const char *p[CL__RS_COUNT][4];
  char batch_s[16], mult[48], sla[48];
  char ret[4][48];
  char *queues, *slas; /* array literals of the per-queue SLAs */
  /* Where retain_done goes on: the last (finished_at, item_id) looked at.
   * cl__rstep_start() resets it at the start of a step. */
  char after_ts[64], after_id[CL_ITEM_ID_MAX + 1];
} cl__rparams_t;

/* Checks o and fills rp.  Returns 0, or CL_EINVAL with a message in err,
 * or CL_ENOMEM.  cl__rparams_free() after a success. */
int cl__rparams_init(cl__rparams_t *rp, const cl_reaper_opts_t *o, char *err,
                     size_t errlen);
void cl__rparams_free(cl__rparams_t *rp);

/* The statement step runs. */
cl__stmt_id_t cl__rstep_stmt(cl__rstep_t step);
/* Step's name for logs ("lost_workers", "stale_leases", ...). */
const char *cl__rstep_name(cl__rstep_t step);
/* Called before the first batch of a step. */
void cl__rstep_start(cl__rparams_t *rp, cl__rstep_t step);
/* Adds the rows of one batch of step to info; returns how many rows the
 * batch looked at (a batch shorter than rp->batch ends the step). */
int cl__rstep_rows(cl__rparams_t *rp, cl__rstep_t step, PGresult *r,
                   cl_cycle_info_t *info);

#endif
