/*
 * loop_reaper.c: the reaper on a libuv loop (reaper.h).  Two activities share
 * one pipelined connection and never wait for each other:
 *
 *   the cycle      on a repeating timer: the steps of reap_steps.h, each a
 *                  statement sent again while its batches come back full;
 *                  a tick that finds the previous cycle still running is
 *                  skipped;
 *   the announcer  after every cycle: claims due alerts from the outbox
 *                  (ANNOUNCE_CLAIM leases them to this reaper), reports
 *                  each as an "alert" event, hands them (a few at a time)
 *                  to the program's announce callback and settles each
 *                  alert when the program answers (ANNOUNCE_DONE, fenced by
 *                  its attempt count).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop_conn.h"
#include "internal.h"
#include "event.h"
#include "reap_steps.h"
#include "claimer/reaper.h"

enum {
  HOOK_BATCH = 16,   /* alerts claimed at a time when announcing */
  HOOK_PARALLEL = 4, /* announcements at once */
  RETAIN_EVERY_MS = 60000,
};

struct cl_alert {
  char *id;
  char *attempt;
  char *kind;
  char *subject;
  char *json;
  int answered; /* cl_alert_done() was called */
  struct cl_reaper *r;
};
typedef struct cl_alert alert_t;

struct cl_reaper {
  uv_loop_t *loop;
  cl__loop_conn_t *a;
  cl_reaper_config_t c;
  char *dsn;
  char **sla_names;
  double *sla_s;
  cl__rparams_t rp;
  uv_timer_t timer;
  int handles_open;
  int started, stopping, closing;
  int a_closing; /* the connection is being closed (or was) */
  int fatal_rc;
  char fatal_why[512];
  char *policy[4]; /* POLICY_SYNC's array literals; NULL: no policy */
  int policy_pending, policy_inflight;

  /* The cycle. */
  int in_cycle;
  int cycle_done; /* with once: the one cycle ended */
  int step;
  int step_rc;     /* the first step that failed, if any ... */
  int fail_step;   /* ... and which */
  int retain_now;  /* this cycle runs the retention steps */
  uint64_t last_retain;
  cl_cycle_info_t info;
  uint64_t t0;

  /* The announcer. */
  int ann_running;
  int ann_more; /* the last claim came back full */
  alert_t *alerts;
  size_t nalerts, next, busy; /* busy: running or settling */
  cl_reaper_stats_t st;
};

static void maybe_finish(cl_reaper_t *r);
static void ann_start(cl_reaper_t *r);

static void on_conn_closed(void *arg);

/* Stops for good: the connection closes now, so requests waiting in it for
 * a reconnect are answered at once. */
static void fatal(cl_reaper_t *r, int rc, const char *why) {
  if (r->fatal_rc == 0 || rc == CL_EAUTH || rc == CL_ESCHEMA) {
    r->fatal_rc = rc;
    snprintf(r->fatal_why, sizeof r->fatal_why, "%s", why);
  }
  cl_reaper_stop(r);
  if (!r->a_closing) {
    r->a_closing = 1;
    cl__loop_conn_close(r->a, on_conn_closed, r);
  }
}

/* Sends on the connection unless it is closing (then CL_ECONNLOST, and
 * cb is not called). */
static int rsend(cl_reaper_t *r, cl__stmt_id_t id, const char *const *p,
                 cl__loop_conn_cb cb) {
  if (r->a_closing)
    return CL_ECONNLOST;
  return cl__loop_conn_send(r->a, id, p, cb, r);
}

/* The connection's last error; the connection may be gone. */
static const char *aerr(const cl_reaper_t *r) {
  return r->a_closing ? "connection closed" : cl__loop_conn_error(r->a);
}

/* ------------------------------------------------------------------------ */
/* The cycle                                                                 */

static void send_step(cl_reaper_t *r);

static void end_cycle(cl_reaper_t *r, int rc) {
  r->in_cycle = 0;
  r->st.cycles++;
  double secs = (double)(uv_hrtime() - r->t0) / 1e9;
  const cl_cycle_info_t *in = &r->info;
  if (rc != 0) {
    cl__event(&r->c.events, CL_LEVEL_ERROR, "reap_cycle_failed", "step",
           cl__rstep_name((cl__rstep_t)r->fail_step), "error",
           aerr(r), NULL);
  } else if (in->reap.expired || in->workers_lost || in->raised_total ||
             in->resolved || in->deleted_items || in->deleted_dead ||
             in->deleted_alerts || in->deleted_workers) {
    cl__event(&r->c.events, CL_LEVEL_INFO, "reap_cycle", "expired",
           CL_EV_INT(in->reap.expired), "requeued",
           CL_EV_INT(in->reap.requeued), "dead", CL_EV_INT(in->reap.dead),
           "workers_lost", CL_EV_INT(in->workers_lost), "leases_released",
           CL_EV_INT(in->leases_released), "alerts_raised",
           CL_EV_INT(in->raised_total), "alerts_resolved",
           CL_EV_INT(in->resolved), "deleted_items",
           CL_EV_INT(in->deleted_items + in->deleted_dead), "deleted_alerts",
           CL_EV_INT(in->deleted_alerts), "deleted_workers",
           CL_EV_INT(in->deleted_workers), "seconds", CL_EV_NUM(secs),
           NULL);
  } else {
    cl__event(&r->c.events, CL_LEVEL_DEBUG, "reap_cycle", "seconds", CL_EV_NUM(secs), NULL);
  }
  if (r->c.on_cycle)
    r->c.on_cycle(r->c.arg, rc, in, secs);
  if (r->c.once) {
    r->cycle_done = 1;
    if (rc != 0) {
      fatal(r, rc, aerr(r));
      return;
    }
  }
  if (!r->stopping)
    ann_start(r);
  maybe_finish(r);
}

static void next_step(cl_reaper_t *r) {
  do
    r->step++;
  while (r->step < CL__RS_COUNT &&
         (!r->rp.enabled[r->step] ||
          (r->step >= CL__RS_RETAIN_DONE && !r->retain_now)));
  if (r->step >= CL__RS_COUNT || r->stopping) {
    end_cycle(r, r->step_rc);
  } else {
    cl__rstep_start(&r->rp, (cl__rstep_t)r->step);
    send_step(r);
  }
}

static void on_step(void *arg, int rc, PGresult *res) {
  cl_reaper_t *r = arg;
  if (rc != 0 && rc != CL_EDB)
    r->fail_step = r->step;
  if (rc == CL_EDB) {
    /* One step refused (a lock or statement timeout, say): the others
     * still run; the cycle reports the first failure. */
    cl__event(&r->c.events, CL_LEVEL_ERROR, "reap_step_failed", "step",
           cl__rstep_name((cl__rstep_t)r->step), "error", aerr(r), NULL);
    if (r->step_rc == 0) {
      r->step_rc = rc;
      r->fail_step = r->step;
    }
    next_step(r);
    return;
  }
  if (rc != 0) {
    end_cycle(r, rc);
    return;
  }
  int n = cl__rstep_rows(&r->rp, (cl__rstep_t)r->step, res, &r->info);
  if (n >= r->rp.batch && !r->stopping)
    send_step(r);
  else
    next_step(r);
}

static void send_step(cl_reaper_t *r) {
  int rc = rsend(r, cl__rstep_stmt((cl__rstep_t)r->step), r->rp.p[r->step],
                 on_step);
  if (rc != 0) {
    r->fail_step = r->step;
    end_cycle(r, rc);
  }
}

static void send_policy(cl_reaper_t *r);

static void on_timer(uv_timer_t *t) {
  cl_reaper_t *r = t->data;
  if (r->stopping || (r->c.once && r->cycle_done))
    return;
  if (r->in_cycle) {
    cl__event(&r->c.events, CL_LEVEL_DEBUG, "reap_cycle_skipped", "reason",
           "previous cycle still running", NULL);
    return;
  }
  if (r->policy_pending && !r->policy_inflight)
    send_policy(r); /* the last try failed: again, before the cycle */
  memset(&r->info, 0, sizeof r->info);
  r->in_cycle = 1;
  r->t0 = uv_hrtime();
  r->step = -1;
  r->step_rc = 0;
  /* Retention need not run every few seconds: at most once a minute. */
  r->retain_now = r->c.once || r->last_retain == 0 ||
                  uv_now(r->loop) - r->last_retain >= RETAIN_EVERY_MS;
  if (r->retain_now)
    r->last_retain = uv_now(r->loop);
  next_step(r);
}

/* ------------------------------------------------------------------------ */
/* The announcer                                                             */

static int has_hooks(const cl_reaper_t *r) { return r->c.announce != NULL; }

static void free_alerts(cl_reaper_t *r) {
  for (size_t i = 0; i < r->nalerts; i++) {
    alert_t *al = &r->alerts[i];
    free(al->id);
    free(al->attempt);
    free(al->kind);
    free(al->subject);
    free(al->json);
  }
  free(r->alerts);
  r->alerts = NULL;
  r->nalerts = r->next = r->busy = 0;
}

static void ann_claim(cl_reaper_t *r);
static void run_next(cl_reaper_t *r);

static void ann_end(cl_reaper_t *r) {
  free_alerts(r);
  if (r->ann_more && !r->stopping) {
    ann_claim(r);
    return;
  }
  r->ann_running = 0;
  maybe_finish(r);
}

static void on_settled(void *arg, int rc, PGresult *res) {
  cl_reaper_t *r = arg;
  if (rc != 0) {
    cl__event(&r->c.events, CL_LEVEL_WARNING, "alert_settle_failed", "error",
           aerr(r), NULL);
  } else {
    for (int i = 0; i < PQntuples(res); i++) {
      if (strcmp(PQgetvalue(res, i, 1), "failed") == 0) {
        r->st.gave_up++;
        cl__event(&r->c.events, CL_LEVEL_ERROR, "alert_hook_gave_up", "alert_id",
               PQgetvalue(res, i, 0), "max_attempts",
               CL_EV_INT(r->c.announce_max_attempts), NULL);
      }
    }
  }
  if (has_hooks(r)) {
    r->busy--;
    run_next(r);
    if (r->busy > 0 || (r->next < r->nalerts && !r->stopping))
      return;
  }
  ann_end(r);
}

/* Records an alert's outcome: "sent", "none" or "error". */
static void settle(cl_reaper_t *r, const char *ids, const char *attempts,
                   const char *outcome, const char *error) {
  char maxa[16];
  snprintf(maxa, sizeof maxa, "%d", r->c.announce_max_attempts);
  const char *p[] = {ids, attempts, outcome, error, maxa};
  if (rsend(r, CL__STMT_ANNOUNCE_DONE, p, on_settled) != 0)
    on_settled(r, CL_ENOMEM, NULL);
}

const char *cl_alert_id(const cl_alert_t *al) { return al->id; }
const char *cl_alert_kind(const cl_alert_t *al) { return al->kind; }
const char *cl_alert_subject(const cl_alert_t *al) { return al->subject; }
const char *cl_alert_json(const cl_alert_t *al) { return al->json; }
int cl_alert_attempt(const cl_alert_t *al) { return atoi(al->attempt); }

void cl_alert_done(cl_alert_t *al, int ok, const char *error) {
  cl_reaper_t *r = al->r;
  if (al->answered)
    return;
  al->answered = 1;
  char ids[40], att[24];
  snprintf(ids, sizeof ids, "{%s}", al->id);
  snprintf(att, sizeof att, "{%s}", al->attempt);
  if (ok) {
    r->st.hooks_ok++;
    cl__event(&r->c.events, CL_LEVEL_DEBUG, "alert_hook_ok", "alert_id",
              al->id, NULL);
    settle(r, ids, att, "sent", NULL);
    return;
  }
  r->st.hooks_failed++;
  cl__event(&r->c.events, CL_LEVEL_WARNING, "alert_hook_failed", "alert_id",
            al->id, "kind", al->kind, "attempt", al->attempt, "error", error,
            NULL);
  settle(r, ids, att, "error", error);
}

static void run_next(cl_reaper_t *r) {
  while (r->busy < HOOK_PARALLEL && r->next < r->nalerts && !r->stopping) {
    alert_t *al = &r->alerts[r->next++];
    r->busy++;
    al->r = r;
    r->c.announce(r->c.arg, al);
  }
}

static void on_ann_claimed(void *arg, int rc, PGresult *res) {
  cl_reaper_t *r = arg;
  if (rc != 0) {
    cl__event(&r->c.events, CL_LEVEL_WARNING, "alert_claim_failed", "error",
           aerr(r), NULL);
    r->ann_more = 0;
    if (r->c.once)
      r->fatal_rc = r->fatal_rc ? r->fatal_rc : rc;
    ann_end(r);
    return;
  }
  int n = PQntuples(res);
  int want = has_hooks(r) ? HOOK_BATCH : r->rp.batch;
  r->ann_more = n >= want;
  if (n == 0) {
    ann_end(r);
    return;
  }
  r->alerts = calloc((size_t)n, sizeof *r->alerts);
  if (r->alerts == NULL) {
    r->ann_more = 0;
    ann_end(r);
    return;
  }
  r->nalerts = (size_t)n;
  for (int i = 0; i < n; i++) {
    alert_t *al = &r->alerts[i];
    al->id = cl__strdup(PQgetvalue(res, i, 0));
    al->attempt = cl__strdup(PQgetvalue(res, i, 1));
    al->kind = cl__strdup(PQgetvalue(res, i, 2));
    al->subject = cl__strdup(PQgetvalue(res, i, 3));
    al->json = cl__strdup(PQgetvalue(res, i, 4));
    if (atoi(al->attempt) == 1) {
      r->st.announced++;
      cl__event(&r->c.events, CL_LEVEL_WARNING, "alert", "kind", al->kind, "subject",
             al->subject, "alert_id", al->id, "alert", al->json, NULL);
    }
  }
  if (!has_hooks(r)) {
    /* Nothing to run: mark them all announced in one statement. */
    const char **ids = calloc((size_t)n, sizeof *ids);
    const char **att = calloc((size_t)n, sizeof *att);
    char *ids_lit = NULL, *att_lit = NULL;
    if (ids && att) {
      for (int i = 0; i < n; i++) {
        ids[i] = r->alerts[i].id ? r->alerts[i].id : "0";
        att[i] = r->alerts[i].attempt ? r->alerts[i].attempt : "0";
      }
      ids_lit = cl__array_literal(ids, (size_t)n);
      att_lit = cl__array_literal(att, (size_t)n);
    }
    free(ids);
    free(att);
    if (ids_lit && att_lit)
      settle(r, ids_lit, att_lit, "none", NULL);
    else
      on_settled(r, CL_ENOMEM, NULL);
    free(ids_lit);
    free(att_lit);
    return;
  }
  run_next(r);
  if (r->busy == 0) /* stopping: none started; their leases run out */
    ann_end(r);
}

static void ann_claim(cl_reaper_t *r) {
  int want = has_hooks(r) ? HOOK_BATCH : r->rp.batch;
  /* Long enough to run the batch's hooks, each up to its timeout. */
  double lease = 60;
  if (has_hooks(r))
    lease = 30 + (double)(HOOK_BATCH / HOOK_PARALLEL + 1) *
                     r->c.announce_timeout_s;
  char nb[16], lb[48];
  snprintf(nb, sizeof nb, "%d", want);
  cl__fmt_double(lb, sizeof lb, lease);
  const char *p[] = {nb, lb};
  if (rsend(r, CL__STMT_ANNOUNCE_CLAIM, p, on_ann_claimed) != 0)
    on_ann_claimed(r, CL_ENOMEM, NULL);
}

static void ann_start(cl_reaper_t *r) {
  if (r->ann_running)
    return;
  r->ann_running = 1;
  ann_claim(r);
}

/* ------------------------------------------------------------------------ */
/* The retry policy                                                          */

/* Index of name in names[0..n), or -1. */
static long find_name(const char *const *names, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(names[i], name) == 0)
      return (long)i;
  return -1;
}

/* Builds POLICY_SYNC's parameters: the row '*' with the defaults, then a
 * row per queue named in either per-queue map.  0 or CL_ENOMEM. */
static int build_policy(cl_reaper_t *r, const cl_reaper_config_t *cfg) {
  size_t cap = 1 + cfg->nqma + cfg->nqb, n = 0;
  const char **q = calloc(cap, sizeof *q);
  const char **v[3];
  char(*num)[3][48] = calloc(cap, sizeof *num);
  for (int k = 0; k < 3; k++)
    v[k] = calloc(cap, sizeof *v[k]);
  int rc = CL_ENOMEM;
  if (q == NULL || num == NULL || !v[0] || !v[1] || !v[2])
    goto out;
  q[n] = "*";
  snprintf(num[n][0], sizeof num[n][0], "%d", cfg->max_attempts);
  cl__fmt_double(num[n][1], sizeof num[n][1], cfg->backoff_s);
  cl__fmt_double(num[n][2], sizeof num[n][2], cfg->backoff_max_s);
  for (int k = 0; k < 3; k++)
    v[k][n] = num[n][k];
  n++;
  for (size_t i = 0; i < cfg->nqma + cfg->nqb; i++) {
    const char *name =
        i < cfg->nqma ? cfg->qma_names[i] : cfg->qb_names[i - cfg->nqma];
    if (find_name(q, n, name) >= 0)
      continue;
    q[n] = name;
    long m = find_name(cfg->qma_names, cfg->nqma, name);
    long b = find_name(cfg->qb_names, cfg->nqb, name);
    if (m >= 0) {
      snprintf(num[n][0], sizeof num[n][0], "%d", cfg->qma[m]);
      v[0][n] = num[n][0];
    }
    if (b >= 0) {
      cl__fmt_double(num[n][1], sizeof num[n][1], cfg->qb_s[b]);
      v[1][n] = num[n][1];
    }
    n++;
  }
  r->policy[0] = cl__array_literal(q, n);
  for (int k = 0; k < 3; k++)
    r->policy[k + 1] = cl__array_literal(v[k], n);
  rc = r->policy[0] && r->policy[1] && r->policy[2] && r->policy[3]
           ? 0
           : CL_ENOMEM;
out:
  free(q);
  free(num);
  for (int k = 0; k < 3; k++)
    free(v[k]);
  return rc;
}

static void on_policy(void *arg, int rc, PGresult *res) {
  cl_reaper_t *r = arg;
  r->policy_inflight = 0;
  if (rc != 0) {
    cl__event(&r->c.events, CL_LEVEL_ERROR, "queue_policy_failed", "error", aerr(r), "action",
           r->c.once ? "stop" : "try again next cycle", NULL);
    if (r->c.once)
      fatal(r, rc, aerr(r));
    return;
  }
  r->policy_pending = 0;
  /* A change to a policy another reaper wrote is worth a warning: two
   * configs with different policies would undo each other. */
  int changed = atol(PQgetvalue(res, 0, 0)) + atol(PQgetvalue(res, 0, 1)) > 0;
  cl__event(&r->c.events, changed ? CL_LEVEL_WARNING : CL_LEVEL_INFO, "queue_policy",
         "rows_written", PQgetvalue(res, 0, 0), "rows_removed",
         PQgetvalue(res, 0, 1), NULL);
}

static void send_policy(cl_reaper_t *r) {
  const char *p[] = {r->policy[0], r->policy[1], r->policy[2], r->policy[3]};
  r->policy_inflight = 1;
  if (rsend(r, CL__STMT_POLICY_SYNC, p, on_policy) != 0)
    on_policy(r, CL_ENOMEM, NULL);
}

/* ------------------------------------------------------------------------ */
/* Life                                                                      */

static void on_up(void *arg) {
  cl_reaper_t *r = arg;
  cl__event(&r->c.events, CL_LEVEL_INFO, "db_connected", "dsn", cl__loop_conn_dsn_redacted(r->a),
         NULL);
}

static void on_down(void *arg, int rc, const char *why, unsigned retry_ms) {
  cl_reaper_t *r = arg;
  if (rc == CL_EAUTH || rc == CL_ESCHEMA || r->c.once) {
    cl__event(&r->c.events, CL_LEVEL_ERROR, "db_fatal", "error", why, "dsn",
           cl__loop_conn_dsn_redacted(r->a), NULL);
    fatal(r, rc, why);
    return;
  }
  cl__event(&r->c.events, CL_LEVEL_WARNING, "db_disconnected", "error", why, "retry_in_ms",
         CL_EV_INT(retry_ms), NULL);
}

static void free_reaper(cl_reaper_t *r) {
  free_alerts(r);
  for (int i = 0; i < 4; i++)
    free(r->policy[i]);
  cl__rparams_free(&r->rp);
  for (size_t i = 0; i < r->c.cycle.nsla; i++)
    free(r->sla_names[i]);
  free(r->sla_names);
  free(r->sla_s);
  free(r->dsn);
  free(r);
}

static void on_closed_part(cl_reaper_t *r) {
  if (--r->handles_open > 0)
    return;
  cl_reaper_exit_cb cb = r->c.on_exit;
  void *arg = r->c.arg;
  int rc = r->fatal_rc;
  const char *why = r->fatal_why;
  cl__event(&r->c.events, CL_LEVEL_INFO, "reaper_stopped", "cycles", CL_EV_INT(r->st.cycles),
         "announced", CL_EV_INT(r->st.announced), NULL);
  if (cb)
    cb(arg, rc, why); /* may still read the stats */
  free_reaper(r);
}

static void on_timer_closed(uv_handle_t *h) { on_closed_part(h->data); }
static void on_conn_closed(void *arg) { on_closed_part(arg); }

static void maybe_finish(cl_reaper_t *r) {
  if (r->c.once && r->cycle_done && !r->in_cycle && !r->ann_running)
    r->stopping = 1;
  if (!r->stopping || r->closing || r->in_cycle || r->ann_running)
    return;
  r->closing = 1;
  uv_close((uv_handle_t *)&r->timer, on_timer_closed);
  if (!r->a_closing) {
    r->a_closing = 1;
    cl__loop_conn_close(r->a, on_conn_closed, r);
  }
}

void cl_reaper_config_init(cl_reaper_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cl_reaper_opts_init(&cfg->cycle);
  cfg->interval_s = 5;
  cfg->announce_timeout_s = 10;
  cfg->announce_max_attempts = 10;
  cfg->max_attempts = 25;
  cfg->backoff_s = 1;
  cfg->backoff_max_s = 3600;
}

int cl_reaper_new(cl_reaper_t **out, uv_loop_t *loop,
                  const cl_reaper_config_t *cfg, char *err, size_t errlen) {
  *out = NULL;
  if (cfg->dsn == NULL) {
    snprintf(err, errlen, "no DSN");
    return CL_EINVAL;
  }
  if (!(cfg->interval_s >= 0.01 && cfg->interval_s <= 86400) ||
      !(cfg->announce_timeout_s > 0 && cfg->announce_timeout_s <= 7200) ||
      cfg->announce_max_attempts < 1 || cfg->announce_max_attempts > 1000) {
    snprintf(err, errlen, "interval, announce timeout or announce attempts "
                          "out of range");
    return CL_EINVAL;
  }
  cl_reaper_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return CL_ENOMEM;
  r->loop = loop;
  r->c = *cfg;
  r->dsn = cl__strdup(cfg->dsn);
  size_t nsla = cfg->cycle.nsla;
  r->sla_names = calloc(nsla + 1, sizeof *r->sla_names);
  r->sla_s = calloc(nsla + 1, sizeof *r->sla_s);
  int ok = r->dsn && r->sla_names && r->sla_s;
  for (size_t i = 0; ok && i < nsla; i++) {
    r->sla_names[i] = cl__strdup(cfg->cycle.sla_queues[i]);
    r->sla_s[i] = cfg->cycle.sla_s[i];
    ok = r->sla_names[i] != NULL;
  }
  r->c.cycle.nsla = nsla;
  r->c.cycle.sla_queues = (const char *const *)r->sla_names;
  r->c.cycle.sla_s = r->sla_s;
  r->c.dsn = r->dsn;
  if (!ok) {
    free_reaper(r);
    return CL_ENOMEM;
  }
  int rc = cl__rparams_init(&r->rp, &r->c.cycle, err, errlen);
  if (rc == 0 && cfg->policy) {
    int bad = cfg->max_attempts < 1 || !(cfg->backoff_s > 0) ||
              !(cfg->backoff_max_s >= cfg->backoff_s);
    for (size_t i = 0; i < cfg->nqma; i++)
      bad |= cfg->qma_names[i] == NULL || cfg->qma[i] < 1;
    for (size_t i = 0; i < cfg->nqb; i++)
      bad |= cfg->qb_names[i] == NULL || !(cfg->qb_s[i] > 0) ||
             cfg->qb_s[i] > cfg->backoff_max_s;
    if (bad) {
      snprintf(err, errlen, "retry policy out of range (attempts >= 1, "
                            "0 < backoff <= backoff_max)");
      rc = CL_EINVAL;
    } else if ((rc = build_policy(r, cfg)) != 0) {
      snprintf(err, errlen, "out of memory");
    }
  }
  /* The per-queue maps were only needed for the literals. */
  r->c.qma_names = r->c.qb_names = NULL;
  r->c.qma = NULL;
  r->c.qb_s = NULL;
  r->c.nqma = r->c.nqb = 0;
  cl__loop_conn_hooks_t hooks = {on_up, on_down, NULL};
  if (rc == 0 && (rc = cl__loop_conn_new(&r->a, loop, r->dsn, NULL, &hooks, r)) !=
                     0)
    snprintf(err, errlen, "%s", rc == CL_EDSN ? "bad DSN" : "out of memory");
  if (rc != 0) {
    free_reaper(r);
    return rc;
  }
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->handles_open = 2;
  *out = r;
  return 0;
}

int cl_reaper_start(cl_reaper_t *r) {
  if (r->started)
    return CL_EINVAL;
  r->started = 1;
  cl__event(&r->c.events, CL_LEVEL_INFO, "reaper_started", "once", r->c.once ? "true" : "false",
         "interval_s", CL_EV_NUM(r->c.interval_s), "batch",
         CL_EV_INT(r->rp.batch), "announce", has_hooks(r) ? "yes" : "no", "dsn",
         cl__loop_conn_dsn_redacted(r->a), NULL);
  cl__loop_conn_start(r->a);
  if (r->policy[0] != NULL) {
    r->policy_pending = 1;
    send_policy(r);
  }
  uint64_t every = (uint64_t)(r->c.interval_s * 1000);
  uv_timer_start(&r->timer, on_timer, 0, r->c.once ? 0 : every);
  return 0;
}

void cl_reaper_stop(cl_reaper_t *r) {
  if (r->stopping)
    return;
  r->stopping = 1;
  uv_timer_stop(&r->timer);
  maybe_finish(r);
}

void cl_reaper_stats(const cl_reaper_t *r, cl_reaper_stats_t *out) {
  *out = r->st;
}
