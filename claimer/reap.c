/*
 * reap.c: the steps of a reaper cycle (reap_steps.h) and the blocking
 * driver that runs them, cl_reap_cycle().  Each step runs in batches until
 * a batch comes back short, so no transaction holds many rows for long and
 * several reapers split the work (SKIP LOCKED, and alerts unique per open
 * (kind, subject)).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "protocol.h"
#include "reap_steps.h"

static const char *const kind_names[] = {
#define CL__ALERT_NAME(name, text) text,
    CL_ALERT_KIND_MAP(CL__ALERT_NAME)
#undef CL__ALERT_NAME
};

const char *cl_alert_kind_name(int kind) {
  if (kind < 0 || kind >= CL_ALERT_KINDS)
    return NULL;
  return kind_names[kind];
}

void cl_reaper_opts_init(cl_reaper_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->batch = 1000;
  o->worker_lost_after = 3;
  o->default_sla_s = 3600;
  o->retention_done_s = 7 * 86400;
  o->retention_dead_s = 0;
  o->retention_alerts_s = 30 * 86400;
  o->retention_workers_s = 86400;
}

static const struct {
  cl__stmt_id_t stmt;
  const char *name;
} steps[CL__RS_COUNT] = {
    [CL__RS_WORKERS] = {CL__STMT_REAP_WORKERS, "lost_workers"},
    [CL__RS_REAP] = {CL__STMT_REAP, "stale_leases"},
    [CL__RS_OVERDUE] = {CL__STMT_ALERT_OVERDUE, "overdue_items"},
    [CL__RS_IN_DOUBT] = {CL__STMT_ALERT_IN_DOUBT, "deliveries_in_doubt"},
    [CL__RS_RESOLVE] = {CL__STMT_ALERT_RESOLVE, "resolve_alerts"},
    [CL__RS_RETAIN_DONE] = {CL__STMT_RETAIN_DONE, "retain_done"},
    [CL__RS_RETAIN_DEAD] = {CL__STMT_RETAIN_DEAD, "retain_dead"},
    [CL__RS_RETAIN_ALERTS] = {CL__STMT_RETAIN_ALERTS, "retain_alerts"},
    [CL__RS_RETAIN_WORKERS] = {CL__STMT_RETAIN_WORKERS, "retain_workers"},
};

cl__stmt_id_t cl__rstep_stmt(cl__rstep_t step) { return steps[step].stmt; }
const char *cl__rstep_name(cl__rstep_t step) { return steps[step].name; }

/* A duration option: finite, >= 0 (or > 0 when positive is set). */
static int bad_seconds(double v, int positive) {
  return !(v >= 0 && v <= 3.2e9) || (positive && !(v > 0));
}

int cl__rparams_init(cl__rparams_t *rp, const cl_reaper_opts_t *o, char *err,
                     size_t errlen) {
  memset(rp, 0, sizeof *rp);
  if (o->batch < 1 || o->batch > 100000) {
    snprintf(err, errlen, "batch %d is out of range 1..100000", o->batch);
    return CL_EINVAL;
  }
  if (bad_seconds(o->worker_lost_after, 1) ||
      bad_seconds(o->default_sla_s, 1)) {
    snprintf(err, errlen, "reaper durations must be more than 0");
    return CL_EINVAL;
  }
  const double ret[4] = {o->retention_done_s, o->retention_dead_s,
                         o->retention_alerts_s, o->retention_workers_s};
  for (int i = 0; i < 4; i++) {
    if (bad_seconds(ret[i], 0)) {
      snprintf(err, errlen, "retention must be 0 (keep) or more");
      return CL_EINVAL;
    }
    cl__fmt_double(rp->ret[i], sizeof rp->ret[i], ret[i]);
  }
  for (size_t i = 0; i < o->nsla; i++) {
    if (o->sla_queues[i] == NULL || bad_seconds(o->sla_s[i], 1)) {
      snprintf(err, errlen,
               "per-queue SLA %zu must name a queue and be "
               "more than 0",
               i + 1);
      return CL_EINVAL;
    }
  }
  rp->batch = o->batch;
  snprintf(rp->batch_s, sizeof rp->batch_s, "%d", o->batch);
  cl__fmt_double(rp->mult, sizeof rp->mult, o->worker_lost_after);
  cl__fmt_double(rp->sla, sizeof rp->sla, o->default_sla_s);

  const char **vals = calloc(o->nsla + 1, sizeof *vals);
  char(*nums)[48] = calloc(o->nsla + 1, sizeof *nums);
  for (size_t i = 0; vals && nums && i < o->nsla; i++) {
    cl__fmt_double(nums[i], sizeof nums[i], o->sla_s[i]);
    vals[i] = nums[i];
  }
  if (vals && nums) {
    rp->queues = cl__array_literal(o->sla_queues, o->nsla);
    rp->slas = cl__array_literal(vals, o->nsla);
  }
  free(vals);
  free(nums);
  if (rp->queues == NULL || rp->slas == NULL) {
    cl__rparams_free(rp);
    snprintf(err, errlen, "out of memory");
    return CL_ENOMEM;
  }

  const char *b = rp->batch_s;
  const char *const table[CL__RS_COUNT][4] = {
      [CL__RS_WORKERS] = {rp->mult, b},
      [CL__RS_REAP] = {b},
      [CL__RS_OVERDUE] = {rp->sla, b, rp->queues, rp->slas},
      [CL__RS_IN_DOUBT] = {b},
      [CL__RS_RESOLVE] = {b},
      [CL__RS_RETAIN_DONE] = {rp->ret[0], b, rp->after_ts, rp->after_id},
      [CL__RS_RETAIN_DEAD] = {rp->ret[1], b},
      [CL__RS_RETAIN_ALERTS] = {rp->ret[2], b},
      [CL__RS_RETAIN_WORKERS] = {rp->ret[3], b},
  };
  memcpy(rp->p, table, sizeof table);
  for (int s = 0; s < CL__RS_COUNT; s++)
    rp->enabled[s] = s < CL__RS_RETAIN_DONE || ret[s - CL__RS_RETAIN_DONE] > 0;
  return 0;
}

void cl__rparams_free(cl__rparams_t *rp) {
  free(rp->queues);
  free(rp->slas);
  rp->queues = rp->slas = NULL;
}

/* Counts a raised alert: column col is the new alert's id, NULL when one
 * was open already. */
static void count_raise(cl_cycle_info_t *info, PGresult *r, int i, int col,
                        cl_alert_kind_t kind) {
  if (!PQgetisnull(r, i, col)) {
    info->raised[kind]++;
    info->raised_total++;
  }
}

void cl__rstep_start(cl__rparams_t *rp, cl__rstep_t step) {
  if (step == CL__RS_RETAIN_DONE) {
    snprintf(rp->after_ts, sizeof rp->after_ts, "-infinity");
    rp->after_id[0] = '\0';
  }
}

int cl__rstep_rows(cl__rparams_t *rp, cl__rstep_t step, PGresult *r,
                   cl_cycle_info_t *info) {
  int n = PQntuples(r);
  switch (step) {
  case CL__RS_WORKERS:
    for (int i = 0; i < n; i++) {
      info->workers_lost++;
      count_raise(info, r, i, 1, CL_ALERT_WORKER_LOST);
      info->leases_released += atol(PQgetvalue(r, i, 2));
    }
    break;
  case CL__RS_REAP: {
    cl_reap_info_t one = {0};
    cl__parse_reap(r, &one);
    info->reap.expired += one.expired;
    info->reap.requeued += one.requeued;
    info->reap.dead += one.dead;
    info->reap.alerts_expired += one.alerts_expired;
    info->reap.alerts_dead += one.alerts_dead;
    info->raised[CL_ALERT_LEASE_EXPIRED] += one.alerts_expired;
    info->raised[CL_ALERT_ITEM_DEAD] += one.alerts_dead;
    info->raised_total += one.alerts_expired + one.alerts_dead;
    break;
  }
  case CL__RS_OVERDUE:
    for (int i = 0; i < n; i++)
      count_raise(info, r, i, 1, CL_ALERT_ITEM_OVERDUE);
    break;
  case CL__RS_IN_DOUBT:
    for (int i = 0; i < n; i++)
      count_raise(info, r, i, 1, CL_ALERT_DELIVERY_IN_DOUBT);
    break;
  case CL__RS_RESOLVE:
    info->resolved += n;
    break;
  case CL__RS_RETAIN_DONE:
    if (n != 1)
      return 0;
    info->deleted_items += atol(PQgetvalue(r, 0, 0));
    n = atoi(PQgetvalue(r, 0, 1));
    if (!PQgetisnull(r, 0, 2)) {
      /* A key that did not move would loop: end the step instead. */
      if (strcmp(rp->after_ts, PQgetvalue(r, 0, 2)) == 0 &&
          strcmp(rp->after_id, PQgetvalue(r, 0, 3)) == 0)
        return 0;
      snprintf(rp->after_ts, sizeof rp->after_ts, "%s", PQgetvalue(r, 0, 2));
      snprintf(rp->after_id, sizeof rp->after_id, "%s", PQgetvalue(r, 0, 3));
    }
    break;
  case CL__RS_RETAIN_DEAD:
    info->deleted_dead += n;
    break;
  case CL__RS_RETAIN_ALERTS:
    info->deleted_alerts += n;
    break;
  case CL__RS_RETAIN_WORKERS:
    info->deleted_workers += n;
    break;
  case CL__RS_COUNT:
    break;
  }
  return n;
}

int cl_reap_cycle(cl_conn_t *c, const cl_reaper_opts_t *o,
                  cl_cycle_info_t *info) {
  memset(info, 0, sizeof *info);
  cl__rparams_t rp;
  char err[256];
  int rc = cl__rparams_init(&rp, o, err, sizeof err);
  if (rc != 0) {
    cl__set_error(c, NULL, "%s", err);
    return rc;
  }
  /* A step the database refuses (a timeout, say) does not keep the others
   * from running; a lost connection does. */
  int first = 0;
  char first_msg[sizeof c->error];
  for (int s = 0; s < CL__RS_COUNT && (rc == 0 || rc == CL_EDB); s++) {
    if (!rp.enabled[s])
      continue;
    cl__rstep_start(&rp, (cl__rstep_t)s);
    for (;;) {
      PGresult *r = NULL;
      rc = cl__exec(c, steps[s].stmt, rp.p[s], &r);
      if (rc != 0)
        break;
      int n = cl__rstep_rows(&rp, (cl__rstep_t)s, r, info);
      PQclear(r);
      if (n < rp.batch)
        break;
    }
    if (rc == CL_EDB && first == 0) {
      first = rc;
      memcpy(first_msg, c->error, sizeof first_msg);
    }
  }
  cl__rparams_free(&rp);
  if (rc == 0 && first != 0)
    memcpy(c->error, first_msg, sizeof c->error);
  return rc != 0 ? rc : first;
}
