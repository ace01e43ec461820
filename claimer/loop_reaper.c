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
 *
 * The announcer and each alert it holds are explicit state machines; every
 * move goes through one function (ann_move, alert_move) and follows an
 * arrow below.  The announcer:
 *
 *   IDLE --cycle_ended--> CLAIMING --claimed--> ANNOUNCING
 *    ^  ^                  |  ^                   |    |
 *    |  '----nothing-------'  '-----over, full----'    |
 *    '--------------------over (not full, or stopping)-'
 *
 *   cycle_ended  a cycle ended (not when stopping); ignored unless IDLE:
 *                the alerts it raised are claimed after the batch in hand;
 *   claimed      ANNOUNCE_CLAIM returned alerts: they are the batch;
 *   nothing      it returned none, failed, or the batch found no memory;
 *   over         no alert of the batch is with the program or being
 *                settled; a full claim may have left more due, so claim
 *                again unless stopping.
 *
 * An alert of the batch, from the claim that leased it to this reaper:
 *
 *   CLAIMED --hand_out--> ANNOUNCING --answer--> SETTLING --settled--> SETTLED
 *     |   |                                        ^
 *     |   '--settle_all----------------------------'
 *     '--leave--> LEFT
 *
 *   hand_out     given to the announce callback (at most HOOK_PARALLEL of
 *                the batch announcing or settling at once);
 *   answer       cl_alert_done(): ANNOUNCE_DONE goes out, 'sent' or
 *                'error', for this alert alone;
 *   settle_all   no announce callback: the alert's event was its
 *                announcement, and the whole batch is settled 'none' in
 *                one ANNOUNCE_DONE;
 *   settled      ANNOUNCE_DONE answered, whatever it said: one refused or
 *                cut off leaves the lease to run out, and a later claim
 *                announces the alert again;
 *   leave        the reaper is stopping before the alert's turn: it is not
 *                handed out, and its lease runs out likewise.
 *
 * The batch is over when every alert is SETTLED or LEFT; its memory is kept
 * until the next claim comes back (or the reaper is freed), never freed
 * from inside a call the program made.
 *
 * Illegal moves.  The only one a program can cause through the API is a
 * second cl_alert_done(), an answer in SETTLING or SETTLED: reaper.h
 * promises it is ignored, so it is an ignored move in every build, not an
 * assertion (a program's misuse must not abort a debug build of the CLI
 * either).  Every other move without an arrow (an answer for an alert never
 * handed out, a hand-out or a settle of an alert past CLAIMED, a second
 * settled, a batch freed with an alert in flight, the announcer moved from
 * the wrong state) can only be a bug in this file: assert() stops a debug
 * build there, and a build without assertions refuses the move and does
 * nothing for it, so that no statement is sent and no callback is made on
 * the strength of a state the alert is not in.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claimer/reaper.h"
#include "event.h"
#include "internal.h"
#include "loop_conn.h"
#include "reap_steps.h"

enum {
  HOOK_BATCH = 16,   /* alerts claimed at a time when announcing */
  HOOK_PARALLEL = 4, /* announcements at once */
  RETAIN_EVERY_MS = 60000,
};

/* The announcer's states, and what moves it (the diagram above). */
enum ann_state { ANN_IDLE, ANN_CLAIMING, ANN_ANNOUNCING };
enum ann_event { AN_CYCLE_ENDED, AN_CLAIMED, AN_NOTHING, AN_OVER };

/* An alert's states, and what moves it (the diagram above). */
enum al_state {
  AL_CLAIMED = 0, /* what calloc gives a new batch */
  AL_ANNOUNCING,
  AL_SETTLING,
  AL_SETTLED,
  AL_LEFT,
};
enum { AL_NSTATES = AL_LEFT + 1 };
enum al_event { AE_HAND_OUT, AE_ANSWER, AE_SETTLE_ALL, AE_SETTLED, AE_LEAVE };

struct cl_alert {
  char *id;
  char *attempt;
  char *kind;
  char *subject;
  char *json;
  enum al_state state; /* moved by alert_move() only */
  struct cl_reaper *r;
};
typedef struct cl_alert alert_t;

/* The alerts of one claim. */
typedef struct batch {
  alert_t *alerts;
  size_t n;
  size_t count[AL_NSTATES]; /* alerts in each state, kept by alert_move() */
  int full;                 /* the claim came back full: more may be due */
  int stepping, again;      /* batch_step() runs / was called meanwhile */
} batch_t;

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
  int step_rc;    /* the first step that failed, if any ... */
  int fail_step;  /* ... and which */
  int retain_now; /* this cycle runs the retention steps */
  uint64_t last_retain;
  cl_cycle_info_t info;
  uint64_t t0;

  /* The announcer. */
  enum ann_state ann; /* moved by ann_move() only */
  batch_t batch;      /* the last claim's alerts (kept after it is over) */
  cl_reaper_stats_t st;
};

static void maybe_finish(cl_reaper_t *r);
static void ann_move(cl_reaper_t *r, enum ann_event ev);

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
                 cl__loop_conn_cb cb, void *arg) {
  if (r->a_closing)
    return CL_ECONNLOST;
  return cl__loop_conn_send(r->a, id, p, cb, arg);
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
              cl__rstep_name((cl__rstep_t)r->fail_step), "error", aerr(r),
              NULL);
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
              CL_EV_INT(in->deleted_workers), "seconds", CL_EV_NUM(secs), NULL);
  } else {
    cl__event(&r->c.events, CL_LEVEL_DEBUG, "reap_cycle", "seconds",
              CL_EV_NUM(secs), NULL);
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
    ann_move(r, AN_CYCLE_ENDED);
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
                 on_step, r);
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

/* Moves al by ev along the alert's diagram (top of the file) and keeps the
 * batch's counts.  Returns 1 when al moved; 0 for a second answer (ignored:
 * reaper.h), and, in a build without assertions, for a move that has no
 * arrow, which is refused so that the caller does nothing for it. */
static int alert_move(alert_t *al, enum al_event ev) {
  enum al_state from = al->state, to = from;
  int arrow = 0;
  switch (from) {
  case AL_CLAIMED:
    arrow = 1;
    if (ev == AE_HAND_OUT)
      to = AL_ANNOUNCING;
    else if (ev == AE_SETTLE_ALL)
      to = AL_SETTLING;
    else if (ev == AE_LEAVE)
      to = AL_LEFT;
    else
      arrow = 0;
    break;
  case AL_ANNOUNCING:
    arrow = ev == AE_ANSWER;
    to = AL_SETTLING;
    break;
  case AL_SETTLING:
    if (ev == AE_ANSWER)
      return 0; /* answered before */
    arrow = ev == AE_SETTLED;
    to = AL_SETTLED;
    break;
  case AL_SETTLED:
    if (ev == AE_ANSWER)
      return 0; /* answered before, and settled since */
    break;
  case AL_LEFT:
    break;
  }
  assert(arrow && "alert: a move with no arrow in the diagram");
  if (!arrow)
    return 0;
  batch_t *b = &al->r->batch;
  b->count[from]--;
  b->count[to]++;
  al->state = to;
  return 1;
}

/* Alerts of the batch with the program or being settled. */
static size_t in_flight(const batch_t *b) {
  return b->count[AL_ANNOUNCING] + b->count[AL_SETTLING];
}

/* Frees the last batch.  Every alert must be over: one with the program
 * may still be answered, and one being settled still has its callback to
 * come, which is handed the alert. */
static void free_batch(cl_reaper_t *r) {
  batch_t *b = &r->batch;
  assert(b->count[AL_CLAIMED] == 0 && in_flight(b) == 0);
  for (size_t i = 0; i < b->n; i++) {
    alert_t *al = &b->alerts[i];
    free(al->id);
    free(al->attempt);
    free(al->kind);
    free(al->subject);
    free(al->json);
  }
  free(b->alerts);
  memset(b, 0, sizeof *b);
}

/* Reports what a settle did: the alerts it gave up on (marked 'failed'),
 * or that it failed (then the leases run out and the alerts come back). */
static void report_settled(cl_reaper_t *r, int rc, PGresult *res) {
  if (rc != 0) {
    cl__event(&r->c.events, CL_LEVEL_WARNING, "alert_settle_failed", "error",
              aerr(r), NULL);
    return;
  }
  for (int i = 0; i < PQntuples(res); i++) {
    if (strcmp(PQgetvalue(res, i, 1), "failed") == 0) {
      r->st.gave_up++;
      cl__event(&r->c.events, CL_LEVEL_ERROR, "alert_hook_gave_up", "alert_id",
                PQgetvalue(res, i, 0), "max_attempts",
                CL_EV_INT(r->c.announce_max_attempts), NULL);
    }
  }
}

/* Sends ANNOUNCE_DONE for ids at attempts (array literals) with outcome
 * "sent", "none" or "error".  Returns rsend's code: on error cb is not
 * called. */
static int send_done(cl_reaper_t *r, const char *ids, const char *attempts,
                     const char *outcome, const char *error,
                     cl__loop_conn_cb cb, void *arg) {
  char maxa[16];
  snprintf(maxa, sizeof maxa, "%d", r->c.announce_max_attempts);
  const char *p[] = {ids, attempts, outcome, error, maxa};
  return rsend(r, CL__STMT_ANNOUNCE_DONE, p, cb, arg);
}

/* Hands out the batch's alerts in order while fewer than HOOK_PARALLEL are
 * in flight, leaves the rest when stopping, and ends the batch once none is
 * in flight.  Called when the batch arrives and after each alert settles.
 * A program that answers inside its announce callback, with the settle
 * failing at once, calls back in here from the hand-out loop: that call
 * only asks the loop for another round, so the batch cannot end under it. */
static void batch_step(cl_reaper_t *r) {
  batch_t *b = &r->batch;
  assert(r->ann == ANN_ANNOUNCING && has_hooks(r));
  if (b->stepping) {
    b->again = 1;
    return;
  }
  b->stepping = 1;
  do {
    b->again = 0;
    for (size_t i = 0; i < b->n && in_flight(b) < HOOK_PARALLEL && !r->stopping;
         i++) {
      alert_t *al = &b->alerts[i];
      if (al->state == AL_CLAIMED && alert_move(al, AE_HAND_OUT))
        r->c.announce(r->c.arg, al);
    }
  } while (b->again);
  b->stepping = 0;
  if (r->stopping) /* their leases run out; another run announces them */
    for (size_t i = 0; i < b->n; i++)
      if (b->alerts[i].state == AL_CLAIMED)
        alert_move(&b->alerts[i], AE_LEAVE);
  if (in_flight(b) == 0)
    ann_move(r, AN_OVER);
}

static void on_alert_settled(void *arg, int rc, PGresult *res) {
  alert_t *al = arg;
  cl_reaper_t *r = al->r;
  report_settled(r, rc, res);
  alert_move(al, AE_SETTLED);
  batch_step(r);
}

const char *cl_alert_id(const cl_alert_t *al) { return al->id; }
const char *cl_alert_kind(const cl_alert_t *al) { return al->kind; }
const char *cl_alert_subject(const cl_alert_t *al) { return al->subject; }
const char *cl_alert_json(const cl_alert_t *al) { return al->json; }
int cl_alert_attempt(const cl_alert_t *al) { return atoi(al->attempt); }

void cl_alert_done(cl_alert_t *al, int ok, const char *error) {
  cl_reaper_t *r = al->r;
  if (!alert_move(al, AE_ANSWER))
    return; /* a second answer: ignored (reaper.h) */
  char ids[40], att[24];
  snprintf(ids, sizeof ids, "{%s}", al->id);
  snprintf(att, sizeof att, "{%s}", al->attempt);
  if (ok) {
    r->st.hooks_ok++;
    cl__event(&r->c.events, CL_LEVEL_DEBUG, "alert_hook_ok", "alert_id", al->id,
              NULL);
  } else {
    r->st.hooks_failed++;
    cl__event(&r->c.events, CL_LEVEL_WARNING, "alert_hook_failed", "alert_id",
              al->id, "kind", al->kind, "attempt", al->attempt, "error", error,
              NULL);
  }
  if (send_done(r, ids, att, ok ? "sent" : "error", ok ? NULL : error,
                on_alert_settled, al) != 0)
    on_alert_settled(al, CL_ENOMEM, NULL);
}

static void on_batch_settled(void *arg, int rc, PGresult *res) {
  cl_reaper_t *r = arg;
  batch_t *b = &r->batch;
  report_settled(r, rc, res);
  for (size_t i = 0; i < b->n; i++)
    alert_move(&b->alerts[i], AE_SETTLED);
  ann_move(r, AN_OVER);
}

/* Without an announce callback an alert's event is its announcement: the
 * whole batch is settled 'none' in one statement. */
static void settle_all(cl_reaper_t *r) {
  batch_t *b = &r->batch;
  const char **ids = calloc(b->n, sizeof *ids);
  const char **att = calloc(b->n, sizeof *att);
  char *ids_lit = NULL, *att_lit = NULL;
  if (ids && att) {
    for (size_t i = 0; i < b->n; i++) {
      ids[i] = b->alerts[i].id ? b->alerts[i].id : "0";
      att[i] = b->alerts[i].attempt ? b->alerts[i].attempt : "0";
    }
    ids_lit = cl__array_literal(ids, b->n);
    att_lit = cl__array_literal(att, b->n);
  }
  free(ids);
  free(att);
  for (size_t i = 0; i < b->n; i++)
    alert_move(&b->alerts[i], AE_SETTLE_ALL);
  if (ids_lit == NULL || att_lit == NULL ||
      send_done(r, ids_lit, att_lit, "none", NULL, on_batch_settled, r) != 0)
    on_batch_settled(r, CL_ENOMEM, NULL);
  free(ids_lit);
  free(att_lit);
}

static void on_ann_claimed(void *arg, int rc, PGresult *res) {
  cl_reaper_t *r = arg;
  batch_t *b = &r->batch;
  if (rc != 0) {
    cl__event(&r->c.events, CL_LEVEL_WARNING, "alert_claim_failed", "error",
              aerr(r), NULL);
    if (r->c.once)
      r->fatal_rc = r->fatal_rc ? r->fatal_rc : rc;
    ann_move(r, AN_NOTHING);
    return;
  }
  /* A result comes from the loop, never from inside a call of the
   * program's: the last batch's alerts can go now. */
  free_batch(r);
  int n = PQntuples(res);
  if (n == 0 || (b->alerts = calloc((size_t)n, sizeof *b->alerts)) == NULL) {
    ann_move(r, AN_NOTHING);
    return;
  }
  b->n = (size_t)n;
  int oom = 0;
  for (int i = 0; i < n; i++) {
    alert_t *al = &b->alerts[i];
    al->r = r;
    al->state = AL_CLAIMED;
    al->id = cl__strdup(PQgetvalue(res, i, 0));
    al->attempt = cl__strdup(PQgetvalue(res, i, 1));
    al->kind = cl__strdup(PQgetvalue(res, i, 2));
    al->subject = cl__strdup(PQgetvalue(res, i, 3));
    al->json = cl__strdup(PQgetvalue(res, i, 4));
    oom |= !al->id || !al->attempt || !al->kind || !al->subject || !al->json;
  }
  if (oom) {
    /* No half-copied alert is announced: the batch goes, and the leases
     * run out so that a later claim brings the alerts back. */
    free_batch(r);
    ann_move(r, AN_NOTHING);
    return;
  }
  b->count[AL_CLAIMED] = b->n;
  b->full = n >= (has_hooks(r) ? HOOK_BATCH : r->rp.batch);
  for (int i = 0; i < n; i++) {
    alert_t *al = &b->alerts[i];
    if (atoi(al->attempt) == 1) {
      r->st.announced++;
      cl__event(&r->c.events, CL_LEVEL_WARNING, "alert", "kind", al->kind,
                "subject", al->subject, "alert_id", al->id, "alert", al->json,
                NULL);
    }
  }
  ann_move(r, AN_CLAIMED);
  if (has_hooks(r))
    batch_step(r);
  else
    settle_all(r);
}

static void ann_claim(cl_reaper_t *r) {
  int want = has_hooks(r) ? HOOK_BATCH : r->rp.batch;
  /* Long enough to run the batch's hooks, each up to its timeout. */
  double lease = 60;
  if (has_hooks(r))
    lease =
        30 + (double)(HOOK_BATCH / HOOK_PARALLEL + 1) * r->c.announce_timeout_s;
  char nb[16], lb[48];
  snprintf(nb, sizeof nb, "%d", want);
  cl__fmt_double(lb, sizeof lb, lease);
  const char *p[] = {nb, lb};
  if (rsend(r, CL__STMT_ANNOUNCE_CLAIM, p, on_ann_claimed, r) != 0)
    on_ann_claimed(r, CL_ENOMEM, NULL);
}

/* Moves the announcer by ev along its diagram (top of the file), then acts
 * on the state entered: CLAIMING sends the claim, IDLE lets a stopping
 * reaper finish.  The state is set first, as the claim may be answered
 * (failed) before ann_claim() returns. */
static void ann_move(cl_reaper_t *r, enum ann_event ev) {
  enum ann_state to = r->ann;
  int arrow = 0;
  switch (r->ann) {
  case ANN_IDLE:
    arrow = ev == AN_CYCLE_ENDED;
    to = ANN_CLAIMING;
    break;
  case ANN_CLAIMING:
    if (ev == AN_CYCLE_ENDED)
      return;
    arrow = ev == AN_CLAIMED || ev == AN_NOTHING;
    to = ev == AN_CLAIMED ? ANN_ANNOUNCING : ANN_IDLE;
    break;
  case ANN_ANNOUNCING:
    if (ev == AN_CYCLE_ENDED)
      return;
    arrow = ev == AN_OVER && r->batch.count[AL_CLAIMED] == 0 &&
            in_flight(&r->batch) == 0;
    to = r->batch.full && !r->stopping ? ANN_CLAIMING : ANN_IDLE;
    break;
  }
  assert(arrow && "announcer: a move with no arrow in the diagram");
  if (!arrow)
    return;
  r->ann = to;
  if (to == ANN_CLAIMING)
    ann_claim(r);
  else if (to == ANN_IDLE)
    maybe_finish(r);
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
  rc = r->policy[0] && r->policy[1] && r->policy[2] && r->policy[3] ? 0
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
    cl__event(&r->c.events, CL_LEVEL_ERROR, "queue_policy_failed", "error",
              aerr(r), "action", r->c.once ? "stop" : "try again next cycle",
              NULL);
    if (r->c.once)
      fatal(r, rc, aerr(r));
    return;
  }
  r->policy_pending = 0;
  /* A change to a policy another reaper wrote is worth a warning: two
   * configs with different policies would undo each other. */
  int changed = atol(PQgetvalue(res, 0, 0)) + atol(PQgetvalue(res, 0, 1)) > 0;
  cl__event(&r->c.events, changed ? CL_LEVEL_WARNING : CL_LEVEL_INFO,
            "queue_policy", "rows_written", PQgetvalue(res, 0, 0),
            "rows_removed", PQgetvalue(res, 0, 1), NULL);
}

static void send_policy(cl_reaper_t *r) {
  const char *p[] = {r->policy[0], r->policy[1], r->policy[2], r->policy[3]};
  r->policy_inflight = 1;
  if (rsend(r, CL__STMT_POLICY_SYNC, p, on_policy, r) != 0)
    on_policy(r, CL_ENOMEM, NULL);
}

/* ------------------------------------------------------------------------ */
/* Life                                                                      */

static void on_up(void *arg) {
  cl_reaper_t *r = arg;
  cl__event(&r->c.events, CL_LEVEL_INFO, "db_connected", "dsn",
            cl__loop_conn_dsn_redacted(r->a), NULL);
}

static void on_down(void *arg, int rc, const char *why, unsigned retry_ms) {
  cl_reaper_t *r = arg;
  if (rc == CL_EAUTH || rc == CL_ESCHEMA || r->c.once) {
    cl__event(&r->c.events, CL_LEVEL_ERROR, "db_fatal", "error", why, "dsn",
              cl__loop_conn_dsn_redacted(r->a), NULL);
    fatal(r, rc, why);
    return;
  }
  cl__event(&r->c.events, CL_LEVEL_WARNING, "db_disconnected", "error", why,
            "retry_in_ms", CL_EV_INT(retry_ms), NULL);
}

static void free_reaper(cl_reaper_t *r) {
  free_batch(r);
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
  cl__event(&r->c.events, CL_LEVEL_INFO, "reaper_stopped", "cycles",
            CL_EV_INT(r->st.cycles), "announced", CL_EV_INT(r->st.announced),
            NULL);
  if (cb)
    cb(arg, rc, why); /* may still read the stats */
  free_reaper(r);
}

static void on_timer_closed(uv_handle_t *h) { on_closed_part(h->data); }
static void on_conn_closed(void *arg) { on_closed_part(arg); }

static void maybe_finish(cl_reaper_t *r) {
  if (r->c.once && r->cycle_done && !r->in_cycle && r->ann == ANN_IDLE)
    r->stopping = 1;
  if (!r->stopping || r->closing || r->in_cycle || r->ann != ANN_IDLE)
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
    snprintf(err, errlen,
             "interval, announce timeout or announce attempts "
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
      snprintf(err, errlen,
               "retry policy out of range (attempts >= 1, "
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
  if (rc == 0 &&
      (rc = cl__loop_conn_new(&r->a, loop, r->dsn, NULL, &hooks, r)) != 0)
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
  cl__event(&r->c.events, CL_LEVEL_INFO, "reaper_started", "once",
            r->c.once ? "true" : "false", "interval_s",
            CL_EV_NUM(r->c.interval_s), "batch", CL_EV_INT(r->rp.batch),
            "announce", has_hooks(r) ? "yes" : "no", "dsn",
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
