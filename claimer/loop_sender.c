/*
 * loop_sender.c: the sender on a libuv loop (see sender.h for the sink
 * contract): the third driver of the protocol.  One pipelined connection
 * (loop_conn.c) carries the claims (DELIVERY_CLAIM: the watermark and
 * the race live in schema/005_senders.sql), the heartbeats of the leases
 * held (DELIVERY_HEARTBEAT, one statement per tick) and the records of
 * each outcome (DELIVERY_SENT, DELIVERY_FAIL).
 *
 * A delivery, from its claim to its end, moves through one function
 * (send_move) along these arrows; any other move is a bug in this file
 * and asserts:
 *
 *   WAITING --due--> SINKING --report--> RECORDING --recorded--> DONE
 *    |                |  |                   | ^
 *    |                |  |                   '-' resend (connection lost:
 *    |                |  |                       same token, G9)
 *    |                |  '--in_doubt--> DONE (nothing recorded: the lease
 *    |                |                       runs out, the in-doubt
 *    |                |                       policy acts)
 *    |                '--lost, fence--> LOST --report--> RECORDING
 *    |                                   '----in_doubt--> DONE
 *    '--lost, fence, release--> DONE (never handed to the sink)
 *
 *   RECORDING --drop--> DONE when the record cannot be sent (closing).
 *
 *   due       the delivery's rate slot has come (wait_s after the claim;
 *             at once without a rate limit: the claim hands it straight
 *             to SINKING);
 *   report    cl_send_done() with sent or a failed attempt;
 *   in_doubt  cl_send_done(CL_SEND_IN_DOUBT);
 *   drop      the record cannot be sent (the sender is closing);
 *   recorded  the database answered the record (even "lease lost");
 *   lost      the heartbeat found the lease gone;
 *   fence     the lease minus a margin passed on the local clock, counted
 *             from before the claim or heartbeat that set it (G7): the
 *             sink is asked to stop;
 *   release   the sender stops: what waits for its slot is given back
 *             (DELIVERY_RELEASE, due again at once).
 *
 * A LOST delivery still has its sink running: the program reports when it
 * ends, and the report of a LOST delivery is sent like any other (the
 * statement is fenced by the token: it writes only while the token holds
 * the delivery).
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "claimer/sender.h"
#include "claimer/worker.h" /* cl_worker_fence_margin_s */
#include "event.h"
#include "internal.h"
#include "loop_conn.h"
#include "protocol.h"
#include "text.h"

typedef enum sstate {
  S_WAITING,
  S_SINKING,
  S_LOST,
  S_RECORDING,
  S_DONE
} sstate_t;
typedef enum sevent {
  E_DUE,
  E_RELEASE,
  E_REPORT,
  E_IN_DOUBT,
  E_LOST,
  E_RESEND,
  E_RECORDED,
  E_DROP
} sevent_t;

struct cl_send {
  cl_sender_t *s;
  struct cl_send *prev, *next; /* all live deliveries */
  cl_delivery_t d;
  sstate_t state;
  uint64_t due_ms;    /* WAITING: the loop time of its rate slot */
  int in_hb;          /* its token is in the heartbeat in flight */
  uint64_t expiry_ms; /* the lease's end on the local clock (G7): from
                         before the claim or heartbeat that set it */
  cl_send_outcome_t outcome;
  char *error;
  double retry_in;
  int resends;
  cl_send_stop_cb stop_cb;
  void *stop_arg;
  int stop_asked;
};

struct cl_sender {
  uv_loop_t *loop;
  cl__loop_conn_t *a;
  cl_sender_opts_t o;
  char *dsn, *name, *subscriber;
  cl_send_t *live;
  int nlive; /* sinking or recording */
  int claim_inflight, hb_inflight, release_inflight;
  int claim_warned;          /* claim_slow said for the claim in flight */
  uint64_t claim_not_before; /* the rate limit's "come back" (loop ms) */
  uint64_t claim_sent_ms, hb_sent_ms, lease_ms, margin_ms;
  int last_claim_empty; /* with once: the last claim found nothing due */
  int started, stopping, closing;
  int fatal_rc;
  char fatal_why[512];
  uv_timer_t poll_timer, hb_timer, drain_timer, pace_timer, fence_timer;
  int handles_open;
  cl_sender_stats_t st;
};

static void maybe_claim(cl_sender_t *s);
static void maybe_finish(cl_sender_t *s);
static void on_pace_timer(uv_timer_t *t);
static void fence_arm(cl_sender_t *s);
static void on_poll_timer(uv_timer_t *t);
static void send_record(cl_send_t *d);

/* ------------------------------------------------------------------------ */
/* A delivery's state                                                        */

/* The state after ev in st, or -1 when there is no such arrow. */
static int send_next(sstate_t st, sevent_t ev) {
  switch (st) {
  case S_WAITING:
    if (ev == E_DUE)
      return S_SINKING;
    if (ev == E_LOST || ev == E_RELEASE)
      return S_DONE;
    return -1;
  case S_SINKING:
    if (ev == E_REPORT)
      return S_RECORDING;
    if (ev == E_IN_DOUBT)
      return S_DONE;
    if (ev == E_LOST)
      return S_LOST;
    return -1;
  case S_LOST:
    if (ev == E_REPORT)
      return S_RECORDING;
    if (ev == E_IN_DOUBT)
      return S_DONE;
    return -1;
  case S_RECORDING:
    if (ev == E_RESEND)
      return S_RECORDING;
    if (ev == E_RECORDED || ev == E_DROP)
      return S_DONE;
    return -1;
  default:
    return -1;
  }
}

static void send_move(cl_send_t *d, sevent_t ev) {
  int next = send_next(d->state, ev);
  assert(next >= 0 && "illegal delivery state move");
  if (next >= 0)
    d->state = (sstate_t)next;
}

static void send_free(cl_send_t *d) {
  cl_sender_t *s = d->s;
  if (d->prev)
    d->prev->next = d->next;
  else
    s->live = d->next;
  if (d->next)
    d->next->prev = d->prev;
  s->nlive--;
  cl__delivery_clear(&d->d);
  free(d->error);
  free(d);
}

/* The delivery has ended: it goes, and its slot is free for a claim. */
static void send_end(cl_send_t *d) {
  cl_sender_t *s = d->s;
  send_free(d);
  if (s->stopping)
    maybe_finish(s);
  else
    maybe_claim(s);
}

void cl_send_on_stop(cl_send_t *d, cl_send_stop_cb cb, void *arg) {
  d->stop_cb = cb;
  d->stop_arg = arg;
}

/* Asks every send still with its sink to stop; each reports later. */
static void ask_sinks_to_stop(cl_sender_t *s) {
  for (cl_send_t *d = s->live, *next; d != NULL; d = next) {
    next = d->next;
    if ((d->state == S_SINKING || d->state == S_LOST) && !d->stop_asked &&
        d->stop_cb != NULL) {
      d->stop_asked = 1;
      d->stop_cb(d, d->stop_arg); /* may report at once and free d */
    }
  }
}

const char *cl_send_subscriber(const cl_send_t *d) { return d->s->subscriber; }
const char *cl_send_item_id(const cl_send_t *d) { return d->d.item_id; }
const char *cl_send_queue(const cl_send_t *d) { return d->d.queue; }
const char *cl_send_key(const cl_send_t *d) { return d->d.idempotency_key; }
const char *cl_send_token(const cl_send_t *d) { return d->d.token; }
const char *cl_send_result(const cl_send_t *d) { return d->d.result; }
const char *cl_send_payload(const cl_send_t *d) { return d->d.payload; }
int cl_send_attempt(const cl_send_t *d) { return d->d.attempt; }
long long cl_send_pos(const cl_send_t *d) { return d->d.pos; }

static void on_record(void *arg, int rc, PGresult *res) {
  cl_send_t *d = arg;
  cl_sender_t *s = d->s;
  if (rc == CL_ECONNLOST && !s->closing) {
    /* Outcome unknown: the same record again, same token (G9); the
     * functions read the row FOR UPDATE and say "already". */
    d->resends++;
    send_move(d, E_RESEND);
    send_record(d);
    return;
  }
  const char *item = d->d.item_id;
  if (rc != 0) {
    cl__event(&s->o.events, CL_LEVEL_ERROR, "record_failed", "item", item,
              "error", cl__loop_conn_error(s->a), "outcome",
              "left to its lease; the in-doubt policy decides", NULL);
  } else if (PQntuples(res) == 0) {
    s->st.lost++;
    cl__event(&s->o.events, CL_LEVEL_WARNING, "delivery_lost", "item", item,
              "token", d->d.token, "outcome",
              "leased again elsewhere: nothing written", NULL);
  } else if (d->outcome == CL_SEND_OK) {
    s->st.sent++;
    if (cl__event_on(&s->o.events, CL_LEVEL_DEBUG))
      cl__event(&s->o.events, CL_LEVEL_DEBUG, "sent", "item", item, "key",
                d->d.idempotency_key, "attempt", CL_EV_INT(d->d.attempt),
                "already", PQgetvalue(res, 0, 1)[0] == 't' ? "false" : "true",
                NULL);
  } else {
    int dead = strcmp(PQgetvalue(res, 0, 0), "dead") == 0;
    if (dead)
      s->st.dead++;
    else
      s->st.retried++;
    cl__event(&s->o.events, dead ? CL_LEVEL_WARNING : CL_LEVEL_INFO,
              "send_failed", "item", item, "attempt", CL_EV_INT(d->d.attempt),
              "state", dead ? "dead" : "retry", "next_at",
              PQgetvalue(res, 0, 1), "error", d->error ? d->error : "", NULL);
  }
  send_move(d, E_RECORDED);
  send_end(d);
}

static void send_record(cl_send_t *d) {
  cl_sender_t *s = d->s;
  int rc;
  if (d->outcome == CL_SEND_OK) {
    const char *p[] = {s->subscriber, d->d.item_id, d->d.token};
    rc = cl__loop_conn_send(s->a, CL__STMT_DELIVERY_SENT, p, on_record, d);
  } else {
    char rbuf[48];
    cl__fmt_double(rbuf, sizeof rbuf, d->retry_in < 0 ? -1.0 : d->retry_in);
    const char *p[] = {s->subscriber, d->d.item_id, d->d.token,
                       d->error ? d->error : "",
                       d->outcome == CL_SEND_RETRY ? rbuf : NULL};
    rc = cl__loop_conn_send(s->a, CL__STMT_DELIVERY_FAIL, p, on_record, d);
  }
  if (rc != 0) {
    cl__event(&s->o.events, CL_LEVEL_WARNING, "record_dropped", "item",
              d->d.item_id, "reason",
              "the connection is closed; the lease will run out", NULL);
    send_move(d, E_DROP);
    send_end(d);
  }
}

void cl_send_done(cl_send_t *d, cl_send_outcome_t outcome, const char *error,
                  double retry_in) {
  if (d->state != S_SINKING && d->state != S_LOST)
    return; /* a second report: ignored, as sender.h says */
  cl_sender_t *s = d->s;
  if (outcome == CL_SEND_IN_DOUBT) {
    s->st.in_doubt++;
    cl__event(&s->o.events, CL_LEVEL_WARNING, "send_in_doubt", "item",
              d->d.item_id, "key", d->d.idempotency_key, "error",
              error ? error : "", NULL);
    send_move(d, E_IN_DOUBT);
    send_end(d);
    return;
  }
  if (outcome != CL_SEND_OK && outcome != CL_SEND_RETRY)
    outcome = CL_SEND_FAILED;
  d->outcome = outcome;
  d->retry_in = retry_in;
  if (outcome != CL_SEND_OK) /* from a sink: a response body, stderr */
    d->error = cl__clean_text(error, CL_ERROR_TEXT_MAX);
  send_move(d, E_REPORT);
  send_record(d);
}

/* ------------------------------------------------------------------------ */
/* Claims                                                                    */

/* Hands each delivery of fresh[0..n) to the sink, each once: a sink that
 * reports at once ends its own delivery only (records are answered later,
 * from the loop), so the others stay valid. */
static void sink_all(cl_sender_t *s, cl_send_t **fresh, int n) {
  for (int i = 0; i < n; i++)
    s->o.sink(fresh[i], s->o.sink_arg);
}

/* Arms the pace timer for the first waiting delivery, if any. */
static void pace_arm(cl_sender_t *s) {
  uint64_t first = UINT64_MAX, now = uv_now(s->loop);
  for (cl_send_t *d = s->live; d != NULL; d = d->next)
    if (d->state == S_WAITING && d->due_ms < first)
      first = d->due_ms;
  if (first == UINT64_MAX)
    uv_timer_stop(&s->pace_timer);
  else
    uv_timer_start(&s->pace_timer, on_pace_timer, first > now ? first - now : 0,
                   0);
}

/* The rate slots that have come: those deliveries go to the sink. */
static void on_pace_timer(uv_timer_t *t) {
  cl_sender_t *s = t->data;
  uint64_t now = uv_now(s->loop);
  int n = 0;
  for (cl_send_t *d = s->live; d != NULL; d = d->next)
    n += d->state == S_WAITING && d->due_ms <= now;
  cl_send_t **due = n ? calloc((size_t)n, sizeof *due) : NULL;
  int ndue = 0;
  for (cl_send_t *d = s->live; d != NULL && due != NULL; d = d->next)
    if (d->state == S_WAITING && d->due_ms <= now) {
      send_move(d, E_DUE);
      due[ndue++] = d;
    }
  pace_arm(s);
  sink_all(s, due, ndue);
  free(due);
  if (n > 0 && due == NULL) /* out of memory: try again shortly */
    uv_timer_start(&s->pace_timer, on_pace_timer, 10, 0);
}

static void on_claimed(void *arg, int rc, PGresult *res) {
  cl_sender_t *s = arg;
  s->claim_inflight = 0;
  if (rc != 0) {
    if (rc != CL_ECONNLOST)
      cl__event(&s->o.events, CL_LEVEL_ERROR, "claim_failed", "subscriber",
                s->subscriber, "error", cl__loop_conn_error(s->a), NULL);
    maybe_finish(s);
    return;
  }
  int n = PQntuples(res);
  s->last_claim_empty = n == 0;
  cl_send_t **fresh = n ? calloc((size_t)n, sizeof *fresh) : NULL;
  int nfresh = 0, nwait = 0;
  double come_back = -1;
  uint64_t now = uv_now(s->loop);
  for (int i = 0; i < n && (fresh != NULL); i++) {
    if (cl__delivery_row_is_wait(res, i)) {
      come_back = strtod(PQgetvalue(res, i, 9), NULL);
      continue;
    }
    cl_send_t *d = calloc(1, sizeof *d);
    if (d == NULL)
      break; /* its lease runs out; claimed again later */
    d->s = s;
    if (cl__parse_delivery(res, i, &d->d) != 0) {
      free(d); /* nothing sent: its lease runs out */
      continue;
    }
    d->expiry_ms = s->claim_sent_ms + s->lease_ms;
    d->next = s->live;
    if (s->live)
      s->live->prev = d;
    s->live = d;
    s->nlive++;
    s->st.claimed++;
    if (d->d.wait_s >= 0.001) {
      d->state = S_WAITING;
      d->due_ms = now + (uint64_t)(d->d.wait_s * 1000);
      nwait++;
    } else {
      d->state = S_SINKING;
      fresh[nfresh++] = d;
    }
  }
  if (n > 0 && cl__event_on(&s->o.events, CL_LEVEL_DEBUG))
    cl__event(&s->o.events, CL_LEVEL_DEBUG, "claimed", "subscriber",
              s->subscriber, "n", CL_EV_INT(n - (come_back >= 0)), "waiting",
              CL_EV_INT(nwait), NULL);
  if (nwait > 0)
    pace_arm(s);
  fence_arm(s);
  if (come_back >= 0) {
    /* The rate cut this claim short: the next one when a slot can be
     * had, not before (and not at the idle poll's pace either). */
    uint64_t ms = (uint64_t)(come_back * 1000) + 1;
    s->claim_not_before = now + ms;
    uv_timer_start(&s->poll_timer, on_poll_timer, ms, 0);
  }
  sink_all(s, fresh, nfresh);
  free(fresh);
  if (n > 0)
    maybe_claim(s);
  else
    maybe_finish(s);
}

static void maybe_claim(cl_sender_t *s) {
  if (s->stopping || s->closing || s->claim_inflight ||
      !cl__loop_conn_is_up(s->a) || uv_now(s->loop) < s->claim_not_before)
    return;
  int room = s->o.concurrency - s->nlive;
  if (room <= 0)
    return;
  char nb[16], lb[48];
  snprintf(nb, sizeof nb, "%d", room);
  cl__fmt_double(lb, sizeof lb, s->o.lease_s);
  const char *p[] = {s->subscriber, nb, lb, s->name};
  s->claim_sent_ms = uv_now(s->loop); /* before the claim: G7 */
  s->claim_warned = 0;
  if (cl__loop_conn_send(s->a, CL__STMT_DELIVERY_CLAIM, p, on_claimed, s) == 0)
    s->claim_inflight = 1;
}

static void on_poll_timer(uv_timer_t *t) {
  cl_sender_t *s = t->data;
  maybe_claim(s);
  /* A claim unanswered for longer than a lease holds the sender up (its
   * session waits on the server): said once per claim, so that an idle
   * sender names why. */
  uint64_t waited = uv_now(s->loop) - s->claim_sent_ms;
  if (s->claim_inflight && !s->claim_warned && waited > s->lease_ms) {
    s->claim_warned = 1;
    cl__event(&s->o.events, CL_LEVEL_WARNING, "claim_slow", "subscriber",
              s->subscriber, "waited_ms", CL_EV_INT((long)waited),
              "requests_unanswered",
              CL_EV_INT((long)cl__loop_conn_pending(s->a)), NULL);
  }
  double jitter = 0.8 + 0.4 * cl__random_unit();
  uv_timer_start(t, on_poll_timer, (uint64_t)(s->o.poll_s * 1000 * jitter), 0);
}

/* ------------------------------------------------------------------------ */
/* Heartbeats                                                                */

static void on_heartbeat(void *arg, int rc, PGresult *res) {
  cl_sender_t *s = arg;
  s->hb_inflight = 0;
  if (rc != 0) {
    for (cl_send_t *d = s->live; d != NULL; d = d->next)
      d->in_hb = 0;
    return; /* the next tick tries again */
  }
  /* Only the deliveries whose tokens the heartbeat carried: one claimed
   * while it was in flight is not in its answer, and is not lost. */
  for (cl_send_t *d = s->live, *next; d != NULL; d = next) {
    next = d->next;
    int asked = d->in_hb;
    d->in_hb = 0;
    if (!asked || (d->state != S_SINKING && d->state != S_WAITING))
      continue;
    int held = 0;
    for (int i = 0; i < PQntuples(res) && !held; i++)
      held = strcmp(PQgetvalue(res, i, 0), d->d.token) == 0;
    if (held)
      d->expiry_ms = s->hb_sent_ms + s->lease_ms;
    if (!held) {
      cl__event(&s->o.events, CL_LEVEL_WARNING, "lease_lost", "item",
                d->d.item_id, "token", d->d.token, NULL);
      int waiting = d->state == S_WAITING;
      send_move(d, E_LOST);
      if (waiting) /* never handed to the sink: nothing to record */
        send_end(d);
    }
  }
  fence_arm(s);
}

/* G7: a lease the database may have ended by now, on the local clock
 * (from before the claim or heartbeat that last set it, less a margin):
 * its sink is asked to stop, as a lease found lost is (the database still
 * decides whatever it reports: the record is fenced by the token), and a
 * delivery still waiting for its slot is dropped.  This is what keeps a
 * sender cut off from the database from sending past its lease while
 * another sender takes the delivery. */
static void on_fence_timer(uv_timer_t *t) {
  cl_sender_t *s = t->data;
  uint64_t now = uv_now(s->loop);
  for (cl_send_t *d = s->live, *next; d != NULL; d = next) {
    next = d->next;
    if ((d->state != S_SINKING && d->state != S_WAITING) ||
        now + s->margin_ms < d->expiry_ms)
      continue;
    cl__event(&s->o.events, CL_LEVEL_WARNING, "fenced", "item", d->d.item_id,
              "token", d->d.token, "reason",
              "lease minus margin passed on the local clock", NULL);
    int waiting = d->state == S_WAITING;
    send_move(d, E_LOST);
    if (waiting) {
      send_end(d);
    } else if (d->stop_cb != NULL && !d->stop_asked) {
      d->stop_asked = 1;
      d->stop_cb(d, d->stop_arg); /* may report at once and free d */
    }
  }
  fence_arm(s);
}

static void fence_arm(cl_sender_t *s) {
  uint64_t first = UINT64_MAX, now = uv_now(s->loop);
  for (cl_send_t *d = s->live; d != NULL; d = d->next)
    if ((d->state == S_SINKING || d->state == S_WAITING) &&
        d->expiry_ms < first)
      first = d->expiry_ms;
  if (first == UINT64_MAX || s->closing) {
    uv_timer_stop(&s->fence_timer);
    return;
  }
  uint64_t at = first > s->margin_ms ? first - s->margin_ms : 0;
  uv_timer_start(&s->fence_timer, on_fence_timer, at > now ? at - now : 0, 0);
}

static void on_hb_timer(uv_timer_t *t) {
  cl_sender_t *s = t->data;
  if (s->hb_inflight || !cl__loop_conn_is_up(s->a))
    return;
  size_t n = 0;
  for (cl_send_t *d = s->live; d != NULL; d = d->next)
    n += d->state == S_SINKING || d->state == S_WAITING;
  if (n == 0)
    return;
  const char **tokens = calloc(n, sizeof *tokens);
  if (tokens == NULL)
    return;
  size_t i = 0;
  for (cl_send_t *d = s->live; d != NULL; d = d->next)
    if (d->state == S_SINKING || d->state == S_WAITING) {
      tokens[i++] = d->d.token;
      d->in_hb = 1;
    }
  char *lit = cl__array_literal(tokens, n);
  free(tokens);
  if (lit == NULL)
    return;
  char lb[48];
  cl__fmt_double(lb, sizeof lb, s->o.lease_s);
  const char *p[] = {s->name, lb, lit};
  s->hb_sent_ms = uv_now(s->loop);
  if (cl__loop_conn_send(s->a, CL__STMT_DELIVERY_HEARTBEAT, p, on_heartbeat,
                         s) == 0)
    s->hb_inflight = 1;
  else
    for (cl_send_t *d = s->live; d != NULL; d = d->next)
      d->in_hb = 0;
  free(lit);
}

/* ------------------------------------------------------------------------ */
/* The connection                                                            */

static void begin_stop(cl_sender_t *s);

static void on_up(void *arg) {
  cl_sender_t *s = arg;
  cl__event(&s->o.events, CL_LEVEL_INFO, "db_connected", "dsn",
            cl__loop_conn_dsn_redacted(s->a), NULL);
  maybe_claim(s);
}

static void on_down(void *arg, int rc, const char *why, unsigned retry_ms) {
  cl_sender_t *s = arg;
  s->claim_inflight = 0;
  s->hb_inflight = 0;
  if (rc == CL_EAUTH || rc == CL_ESCHEMA) {
    cl__event(&s->o.events, CL_LEVEL_ERROR, "db_fatal", "error", why, "dsn",
              cl__loop_conn_dsn_redacted(s->a), NULL);
    s->fatal_rc = rc;
    snprintf(s->fatal_why, sizeof s->fatal_why, "%s", why);
    begin_stop(s);
    return;
  }
  cl__event(&s->o.events, CL_LEVEL_WARNING, "db_disconnected", "error", why,
            "retry_in_ms", CL_EV_INT(retry_ms), "sending", CL_EV_INT(s->nlive),
            NULL);
}

/* ------------------------------------------------------------------------ */
/* Stopping                                                                  */

static void on_handle_closed(uv_handle_t *h) {
  cl_sender_t *s = h->data;
  s->handles_open--;
  maybe_finish(s);
}

static void on_conn_closed(void *arg) {
  cl_sender_t *s = arg;
  s->a = NULL;
  s->handles_open--;
  maybe_finish(s);
}

static void free_sender(cl_sender_t *s) {
  while (s->live != NULL)
    send_free(s->live);
  free(s->dsn);
  free(s->name);
  free(s->subscriber);
  free(s);
}

static void close_all(cl_sender_t *s) {
  if (s->closing)
    return;
  s->closing = 1;
  cl__event(&s->o.events, CL_LEVEL_INFO, "sender_stopped", "subscriber",
            s->subscriber, "claimed", CL_EV_INT(s->st.claimed), "sent",
            CL_EV_INT(s->st.sent), "retried", CL_EV_INT(s->st.retried), "dead",
            CL_EV_INT(s->st.dead), "in_doubt", CL_EV_INT(s->st.in_doubt), NULL);
  uv_close((uv_handle_t *)&s->poll_timer, on_handle_closed);
  uv_close((uv_handle_t *)&s->hb_timer, on_handle_closed);
  uv_close((uv_handle_t *)&s->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&s->pace_timer, on_handle_closed);
  uv_close((uv_handle_t *)&s->fence_timer, on_handle_closed);
  cl__loop_conn_close(s->a, on_conn_closed, s);
}

static void maybe_finish(cl_sender_t *s) {
  if (s->closing) {
    if (s->handles_open == 0) {
      if (s->o.on_exit)
        s->o.on_exit(s->o.arg, s->fatal_rc, s->fatal_why);
      free_sender(s);
    }
    return;
  }
  if (s->o.once && !s->stopping && s->last_claim_empty && s->nlive == 0 &&
      !s->claim_inflight)
    begin_stop(s);
  if (!s->stopping || s->nlive > 0 || s->claim_inflight || s->release_inflight)
    return;
  close_all(s);
}

static void on_drain_timer(uv_timer_t *t) {
  cl_sender_t *s = t->data;
  /* The sinks still running are asked to stop; they report (in doubt,
   * when the effect may have happened) and the sender closes after the
   * last report, never with a send still out. */
  cl__event(&s->o.events, CL_LEVEL_WARNING, "drain_timeout", "sending",
            CL_EV_INT(s->nlive), NULL);
  ask_sinks_to_stop(s);
}

static void on_released(void *arg, int rc, PGresult *res) {
  cl_sender_t *s = arg;
  s->release_inflight = 0;
  cl__event(&s->o.events, rc == 0 ? CL_LEVEL_INFO : CL_LEVEL_WARNING,
            "deliveries_released", "subscriber", s->subscriber, "n",
            CL_EV_INT(rc == 0 ? PQntuples(res) : 0), "error",
            rc == 0 ? "" : "left to their leases", NULL);
  maybe_finish(s);
}

/* At a stop, the deliveries still waiting for their rate slot were never
 * handed to the sink: they are given back, due again at once (when the
 * statement cannot be sent, their leases run out instead). */
static void release_waiting(cl_sender_t *s) {
  size_t n = 0;
  for (cl_send_t *d = s->live; d != NULL; d = d->next)
    n += d->state == S_WAITING;
  if (n == 0)
    return;
  const char **tokens = calloc(n, sizeof *tokens);
  char *lit = NULL;
  if (tokens != NULL) {
    size_t i = 0;
    for (cl_send_t *d = s->live; d != NULL; d = d->next)
      if (d->state == S_WAITING)
        tokens[i++] = d->d.token;
    lit = cl__array_literal(tokens, n);
    free(tokens);
  }
  const char *p[] = {s->name, lit};
  if (lit != NULL && s->fatal_rc == 0 &&
      cl__loop_conn_send(s->a, CL__STMT_DELIVERY_RELEASE, p, on_released, s) ==
          0)
    s->release_inflight = 1;
  free(lit);
  for (cl_send_t *d = s->live, *next; d != NULL; d = next) {
    next = d->next;
    if (d->state == S_WAITING) {
      send_move(d, E_RELEASE);
      send_free(d);
    }
  }
  uv_timer_stop(&s->pace_timer);
}

static void begin_stop(cl_sender_t *s) {
  if (s->stopping)
    return;
  s->stopping = 1;
  uv_timer_stop(&s->poll_timer);
  uv_timer_stop(&s->hb_timer);
  release_waiting(s);
  if (s->fatal_rc != 0) {
    /* The connection is gone for good: nothing can be recorded, so the
     * sinks are asked to stop now (their reports are dropped). */
    s->claim_inflight = 0;
    ask_sinks_to_stop(s);
  }
  if (s->nlive > 0)
    uv_timer_start(&s->drain_timer, on_drain_timer,
                   (uint64_t)(s->o.drain_s * 1000), 0);
  maybe_finish(s);
}

void cl_sender_stop(cl_sender_t *s) {
  if (s->started) {
    begin_stop(s);
    return;
  }
  s->stopping = 1;
  close_all(s);
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

void cl_sender_opts_init(cl_sender_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->concurrency = 8;
  o->lease_s = 30;
  o->poll_s = 1;
  o->drain_s = 30;
}

void cl_sender_stats(const cl_sender_t *s, cl_sender_stats_t *out) {
  *out = s->st;
}

void cl_sender_log_state(const cl_sender_t *s) {
  int n[S_DONE + 1] = {0};
  for (const cl_send_t *d = s->live; d != NULL; d = d->next)
    n[d->state]++;
  uint64_t now = uv_now(s->loop);
  cl__event(
      &s->o.events, CL_LEVEL_INFO, "sender_state", "subscriber", s->subscriber,
      "live", CL_EV_INT(s->nlive), "waiting", CL_EV_INT(n[S_WAITING]),
      "sinking", CL_EV_INT(n[S_SINKING]), "lost", CL_EV_INT(n[S_LOST]),
      "recording", CL_EV_INT(n[S_RECORDING]), "claim_inflight_ms",
      CL_EV_INT(s->claim_inflight ? (long)(now - s->claim_sent_ms) : -1),
      "heartbeat_inflight_ms",
      CL_EV_INT(s->hb_inflight ? (long)(now - s->hb_sent_ms) : -1), "db",
      s->a && cl__loop_conn_is_up(s->a) ? "up" : "down", "requests_unanswered",
      CL_EV_INT(s->a ? (long)cl__loop_conn_pending(s->a) : 0), "stopping",
      s->stopping ? "true" : "false", NULL);
}

static void on_disabled(void *arg, int rc, PGresult *res) {
  cl_sender_t *s = arg;
  (void)res;
  cl__event(&s->o.events, rc == 0 ? CL_LEVEL_WARNING : CL_LEVEL_ERROR,
            "subscriber_paused", "subscriber", s->subscriber, "error",
            rc == 0 ? "" : cl__loop_conn_error(s->a), NULL);
}

void cl_sender_disable(cl_sender_t *s, const char *why) {
  char *w = cl__clean_text(why, 1000);
  const char *p[] = {s->subscriber, w ? w : "disabled by its sink"};
  if (cl__loop_conn_send(s->a, CL__STMT_SUB_DISABLE, p, on_disabled, s) != 0)
    cl__event(&s->o.events, CL_LEVEL_ERROR, "subscriber_paused", "subscriber",
              s->subscriber, "error", "the connection is closed", NULL);
  free(w);
}

int cl_sender_new(cl_sender_t **out, uv_loop_t *loop,
                  const cl_sender_opts_t *opts, char *err, size_t errlen) {
  *out = NULL;
  char why[256] = "";
  int rc = 0;
  if (opts->dsn == NULL || opts->sink == NULL)
    snprintf(why, sizeof why, "no DSN or no sink"), rc = CL_EINVAL;
  else if (cl_check_queue(opts->subscriber ? opts->subscriber : "", why,
                          sizeof why) != 0)
    rc = CL_EINVAL;
  else if (opts->concurrency < 1 || opts->concurrency > 10000)
    snprintf(why, sizeof why, "concurrency %d is out of range [1, 10000]",
             opts->concurrency),
        rc = CL_EINVAL;
  else if (!(opts->lease_s >= 1 && opts->lease_s <= 604800) ||
           !(opts->poll_s >= 0.01 && opts->poll_s <= 3600) ||
           !(opts->drain_s >= 0))
    snprintf(why, sizeof why,
             "lease (1 s..7 d), poll (0.01..3600 s) or "
             "drain (>= 0) out of range"),
        rc = CL_EINVAL;
  else if (opts->name && cl_check_worker(opts->name, why, sizeof why) != 0)
    rc = CL_EINVAL;
  else if (cl_check_dsn(opts->dsn, why, sizeof why) != 0)
    rc = CL_EDSN;
  if (rc != 0) {
    if (err)
      snprintf(err, errlen, "%s", why);
    return rc;
  }
  cl_sender_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return CL_ENOMEM;
  s->loop = loop;
  s->o = *opts;
  s->dsn = cl__strdup(opts->dsn);
  s->subscriber = cl__strdup(opts->subscriber);
  char name[CL_WORKER_MAX + 1];
  if (opts->name == NULL) {
    cl__default_name(name, sizeof name);
  } else {
    snprintf(name, sizeof name, "%s", opts->name);
  }
  s->name = cl__strdup(name);
  s->o.dsn = s->dsn;
  s->o.subscriber = s->subscriber;
  s->o.name = s->name;
  cl__loop_conn_hooks_t hooks = {on_up, on_down, NULL};
  if (s->dsn == NULL || s->subscriber == NULL || s->name == NULL ||
      (rc = cl__loop_conn_new(&s->a, loop, s->dsn, NULL, &hooks, s)) != 0) {
    free_sender(s);
    rc = rc ? rc : CL_ENOMEM;
    if (err)
      snprintf(err, errlen, "%s",
               rc == CL_EDSN ? "malformed connection string" : "out of memory");
    return rc;
  }
  uv_timer_init(loop, &s->poll_timer);
  uv_timer_init(loop, &s->hb_timer);
  uv_timer_init(loop, &s->drain_timer);
  uv_timer_init(loop, &s->pace_timer);
  uv_timer_init(loop, &s->fence_timer);
  s->poll_timer.data = s->hb_timer.data = s->drain_timer.data = s;
  s->pace_timer.data = s->fence_timer.data = s;
  s->handles_open = 6; /* five timers and the connection */
  s->lease_ms = (uint64_t)(s->o.lease_s * 1000);
  s->margin_ms = (uint64_t)(cl_worker_fence_margin_s(s->o.lease_s) * 1000);
  *out = s;
  return 0;
}

int cl_sender_start(cl_sender_t *s) {
  if (s->started || s->stopping)
    return CL_EINVAL;
  s->started = 1;
  cl__event(&s->o.events, CL_LEVEL_INFO, "sender_started", "sender", s->name,
            "subscriber", s->subscriber, "concurrency",
            CL_EV_INT(s->o.concurrency), "lease_s", CL_EV_NUM(s->o.lease_s),
            "once", s->o.once ? "true" : "false", "dsn",
            cl__loop_conn_dsn_redacted(s->a), NULL);
  uint64_t hb = (uint64_t)(s->o.lease_s * 1000 / 3);
  uv_timer_start(&s->hb_timer, on_hb_timer, hb, hb);
  uv_timer_start(&s->poll_timer, on_poll_timer, (uint64_t)(s->o.poll_s * 1000),
                 0);
  cl__loop_conn_start(s->a);
  return 0;
}
