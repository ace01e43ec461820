/*
 * loop_worker.c: the in-process worker (see worker.h for the handler contract).
 *
 * A job is one state machine: job_move() takes an event, changes the
 * state (asserting that the move is in the table above job_next()) and
 * does what the move means; nothing else writes job->state once a claim's
 * answer has made the job, WAITING.
 *
 *   claimed
 *      |
 *      v          START                       TIMEOUT, SHUTDOWN
 *   WAITING ---------------> RUNNING ---------------------------> STOPPING
 *    |    |                     |                                    |
 *    |    |                     +------------------+-----------------+
 *    |    |                                        | from either:
 *    |    | FENCE, GIVE_BACK    +------------------+--------+
 *    |    | (a release)         | REPORT           | FENCE  | LOST
 *    |    |                     | (as given)       v        v
 *    |    |                     |              FENCED --LOST--> LOST
 *    |    |                     |                 |              |
 *    |    |                     |                 | REPORT       | REPORT
 *    |    |                     v                 | (a complete  | (discarded)
 *    |    +------------------> ACKING <-----------+  becomes a   |
 *    |                          |    \               fail)       |
 *    |                   SETTLE |     \ SETTLED, DROPPED         |
 *    |                          v      v                         |
 *    |                      SETTLING -> DONE <-------------------+
 *    |                   SETTLED,       ^
 *    |                   DROPPED        |
 *    +------------ LOST ----------------+
 *
 * Staying put: STOPPING on TIMEOUT and SHUTDOWN, FENCED and LOST on
 * SHUTDOWN (the handler was asked to stop already, and what becomes of
 * its report is settled), ACKING and SETTLING on RESEND.  DONE is the
 * end: unlinked, freed once its timer has closed.
 *
 * The fencing guarantees are these moves: a lost lease discards the
 * report (LOST, G3), a fenced job's complete becomes a failure (FENCED,
 * G7), a report after a timeout or a shutdown stands (STOPPING).  What is
 * sent while ACKING and SETTLING, and when it ends, is the ack policy's
 * (ack.h).
 *
 * Everything goes over one pipelined connection (loop_conn.c), so the
 * answers come back in the order the statements went out; the heartbeat
 * relies on it: a job claimed by a statement sent before the heartbeat is
 * known when the heartbeat's answer arrives, and a job whose ack went out
 * after the heartbeat is still known, so "held by the database but unknown
 * here" means a claim whose answer was lost with a connection, and "known
 * here but not held" means a lost lease.  The first kind is released, the
 * second stopped.
 *
 * Local deadlines run on uv_now(), the loop's monotonic clock, and count
 * from before the statement that granted or extended the lease was sent,
 * so they always end before the lease does on the database clock (G6, G7).
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ack.h"
#include "claimer/worker.h"
#include "event.h"
#include "internal.h"
#include "loop_conn.h"
#include "protocol.h"
#include "text.h"

/* A job's life: the diagram at the top of the file; job_next() has the
 * table. */
enum jstate {
  J_WAITING,  /* claimed, on the waiting list; no handler yet */
  J_RUNNING,  /* its handler has it */
  J_STOPPING, /* its handler was asked to stop (timeout, shutdown); the
                 report stands as given */
  J_FENCED,   /* asked to stop: lease minus margin passed on the local
                 clock; the report becomes a failure */
  J_LOST,     /* asked to stop: the heartbeat found the lease gone; the
                 report is discarded */
  J_ACKING,   /* its outcome's statement is out (ack.h says what next) */
  J_SETTLING, /* the settling read of G9 is out */
  J_DONE      /* over here: unlinked, freed once its timer has closed */
};

/* What moves a job. */
enum jevent {
  E_START,     /* a slot is free */
  E_TIMEOUT,   /* the per-job timeout passed */
  E_SHUTDOWN,  /* the drain timeout passed, or the worker cannot go on */
  E_FENCE,     /* lease minus margin passed on the local clock */
  E_LOST,      /* the heartbeat did not find the lease */
  E_GIVE_BACK, /* a stop began before the job started, or it was
                  stranded (give_back_stranded()) */
  E_REPORT,    /* the handler reported (job->ack says what) */
  E_RESEND,    /* the ack policy sends again (the same, a fail, a stand-in) */
  E_SETTLE,    /* the ack policy sends the settling read */
  E_SETTLED,   /* the ack policy reached an end */
  E_DROPPED    /* nothing can be sent: the connection is closed */
};

typedef struct wqueue {
  char *name;
  int weight;
  int credit; /* smooth weighted round robin */
  int hint;   /* 1: may have ready items */
  cl_job_start_cb start;
  void *arg;
} wqueue_t;

struct cl_job {
  cl_worker_t *w;
  struct cl_job *prev, *next; /* all live jobs */
  struct cl_job *wnext;       /* the waiting FIFO */
  cl_lease_t lease;
  wqueue_t *q;
  enum jstate state;        /* moved by job_move() only */
  cl_stop_reason_t stopped; /* the last reason the handler was asked to
                               stop for; 0: none */
  uint64_t expiry_ms;       /* local lease end, uv_now() clock */
  uint64_t timeout_at;      /* 0: none */
  uint64_t started_ms;
  uint64_t claimed_ms; /* uv_now() when the claim's answer made it */
  uv_timer_t timer;
  cl_job_stop_cb stop_cb;
  void *stop_arg;
  cl__ack_t ack;        /* the outcome being sent, and how far (ack.h) */
  int acking_logged;    /* 1 + the op last logged as "acking" (debug) */
  struct cl_job *bnext; /* the completes waiting for the next batch */
  int solo;             /* 1: its complete goes alone (its batch was refused) */
  char *result, *error;
  int retry;
  double retry_in;
};

typedef struct claim_ctx {
  cl_worker_t *w;
  wqueue_t *q;
  int n;
  int row0, col0; /* where the claim's rows start in the answer (after a
                     joint send's completes, one column on) */
  uint64_t sent_ms;
  uint64_t sent_ns; /* uv_hrtime(): the round trip, for the prefetch */
} claim_ctx_t;

struct cl_worker {
  uv_loop_t *loop;
  cl__loop_conn_t *a;
  cl_worker_opts_t o;
  char *dsn, *name;
  char instance[37]; /* random per process: fences the name (REGISTER) */
  wqueue_t *queues;
  size_t nqueues;
  cl_job_t *jobs; /* doubly linked, all live jobs */
  cl_job_t *wait_head, *wait_tail;
  int nwaiting, running, acking;
  /* Completes wait here (FIFO through bnext) while a COMPLETE_MANY is out:
   * everything that finished during one round trip goes in the next
   * statement and commit, and a complete with none out goes at once. */
  cl_job_t *batch_head, *batch_tail;
  int batch_inflight;
  int claim_inflight, hb_inflight, registered;
  int reg_ok; /* registered on the current connection */
  int reg_inflight;
  /* Tokens whose ack the database refused for good: no longer extended,
   * so that their leases expire and the reaper spends the attempt, and
   * never released as orphans (a free rerun). */
  char **spent;
  size_t nspent;
  /* Handlers that could not start (EMFILE, ...): the item goes back
   * without spending an attempt and the worker pauses before more. */
  uv_timer_t pause_timer;
  uint64_t pause_until;
  int start_streak;    /* failures in a row */
  long start_unwarned; /* failures since the last warning */
  uint64_t start_warned_ms;
  int started, stopping, closing, dereg_sent;
  int fatal_rc;
  /* The first error cl_worker_add_queue() or cl_worker_start() returned:
   * what on_exit gets when the worker is stopped without having started. */
  int setup_rc;
  char setup_why[512];
  int takeover; /* REGISTER may take the name from a holder known gone */
  char fatal_why[1024];
  uv_timer_t hb_timer, poll_timer, drain_timer, hard_timer;
  /* Claims and batches of completes wait for the end of the loop's turn
   * (an idle handle, run before the loop would block): everything that
   * finished in one turn goes in one statement, and a claim is sized by
   * all the room that turn freed, not by the first job to end in it. */
  uv_idle_t kick;
  int kick_claim, kick_batch;
  /* The prefetch, when automatic (opts.prefetch -1): as many items as
   * the handlers get through in a few claim round trips (Little's law:
   * the rate they finish at times the time a claim takes), so that fast
   * jobs come many to a claim and slow ones a few.  pf_min is
   * concurrency/4 rounded up, pf_max the most it grows to. */
  int pf_auto, pf_min, pf_max;
  double pf_rate; /* items finished per second, smoothed */
  double pf_rtt;  /* a claim's round trip in seconds, smoothed */
  uint64_t pf_t0; /* uv_hrtime() of the rate's window start */
  long pf_done0;  /* items finished at pf_t0 */
  int handles_open;
  uint64_t lease_ms, margin_ms;
  long n_claimed, n_completed, n_failed, n_lost, n_released, n_orphans;
};

static const char *const channels[] = {"claimer_enqueue", NULL};

static void maybe_claim(cl_worker_t *w);
static void fill(cl_worker_t *w);
static void maybe_finish(cl_worker_t *w);
static void send_ack(cl_job_t *job);
static void batch_kick(cl_worker_t *w);
static void claim_now(cl_worker_t *w);
static void batch_now(cl_worker_t *w);
static void joint_now(cl_worker_t *w);
static int paused(cl_worker_t *w);
static void send_register(cl_worker_t *w);
static void begin_stop(cl_worker_t *w);

/* ------------------------------------------------------------------------ */
/* Jobs                                                                      */

const char *cl_job_item_id(const cl_job_t *job) { return job->lease.item_id; }
const char *cl_job_queue(const cl_job_t *job) { return job->lease.queue; }
const char *cl_job_token(const cl_job_t *job) { return job->lease.token; }
const char *cl_job_payload(const cl_job_t *job) { return job->lease.payload; }
int cl_job_attempt(const cl_job_t *job) { return job->lease.attempt; }
int cl_job_max_attempts(const cl_job_t *job) { return job->lease.max_attempts; }

void cl_job_on_stop(cl_job_t *job, cl_job_stop_cb cb, void *arg) {
  job->stop_cb = cb;
  job->stop_arg = arg;
}

static void on_job_closed(uv_handle_t *h) {
  cl_job_t *job = h->data;
  cl_worker_t *w = job->w;
  free(job->lease.item_id);
  free(job->lease.queue);
  free(job->lease.token);
  free(job->lease.payload);
  free(job->lease.lease_until);
  free(job->result);
  free(job->error);
  free(job);
  w->handles_open--;
  maybe_finish(w);
}

/* The handler has the job: started, not yet reported. */
static int job_with_handler(const cl_job_t *job) {
  return job->state == J_RUNNING || job->state == J_STOPPING ||
         job->state == J_FENCED || job->state == J_LOST;
}

/* Its outcome is on its way to the database. */
static int job_acking(const cl_job_t *job) {
  return job->state == J_ACKING || job->state == J_SETTLING;
}

/* Its timer keeps a deadline: the fence, and while it runs its timeout. */
static int job_timed(const cl_job_t *job) {
  return job->state == J_WAITING || job->state == J_RUNNING ||
         job->state == J_STOPPING;
}

/* This process still takes the lease for held (the heartbeat extends it,
 * or learns that it is lost). */
static int job_holds_lease(const cl_job_t *job) {
  return job_timed(job) || job->state == J_FENCED;
}

static void on_job_timer(uv_timer_t *t);

/* Arms the job's one timer for its next local deadline: the fence (lease
 * minus margin) and, while running, the per-job timeout.  Nothing to arm
 * once fenced, lost or reported. */
static void job_arm(cl_job_t *job) {
  cl_worker_t *w = job->w;
  if (!job_timed(job))
    return;
  uint64_t at =
      job->expiry_ms > w->margin_ms ? job->expiry_ms - w->margin_ms : 0;
  if (job->state != J_WAITING && job->timeout_at && job->timeout_at < at)
    at = job->timeout_at;
  uint64_t now = uv_now(w->loop);
  uv_timer_start(&job->timer, on_job_timer, at > now ? at - now : 0, 0);
}

static const char *stop_name(cl_stop_reason_t why) {
  switch (why) {
  case CL_STOP_LEASE_LOST:
    return "lease_lost";
  case CL_STOP_FENCED:
    return "fenced";
  case CL_STOP_TIMEOUT:
    return "timeout";
  default:
    return "shutdown";
  }
}

/* Asks the handler to stop, once per reason (a later, different reason
 * asks again, as worker.h promises).  The handler may report from inside
 * its callback: callers look at the job's state again afterwards. */
static void job_stop(cl_job_t *job, cl_stop_reason_t why) {
  if (job->stopped == why)
    return;
  job->stopped = why;
  if (cl__event_on(&job->w->o.events, CL_LEVEL_DEBUG))
    cl__event(&job->w->o.events, CL_LEVEL_DEBUG, "stopping", "item",
              job->lease.item_id, "reason", stop_name(why), NULL);
  if (job->stop_cb)
    job->stop_cb(job, job->stop_arg, why);
}

/* Takes job, claimed but not started, off the waiting list. */
static void wait_remove(cl_worker_t *w, cl_job_t *job) {
  cl_job_t **pp = &w->wait_head;
  for (cl_job_t *prev = NULL; *pp; prev = *pp, pp = &(*pp)->wnext) {
    if (*pp == job) {
      *pp = job->wnext;
      if (w->wait_tail == job)
        w->wait_tail = prev;
      break;
    }
  }
  job->wnext = NULL;
  w->nwaiting--;
}

/* The transition table of the diagram at the top of the file: the state
 * a job in `from` moves to on ev, or -1 for a move that must not happen.
 *
 *   from               event               to
 *   WAITING            START               RUNNING
 *   WAITING            FENCE, GIVE_BACK    ACKING (a release)
 *   WAITING            LOST                DONE
 *   RUNNING, STOPPING  TIMEOUT, SHUTDOWN   STOPPING
 *   RUNNING, STOPPING  FENCE               FENCED
 *   RUNNING, STOPPING  REPORT              ACKING (as reported)
 *   RUNNING, STOPPING,
 *   FENCED             LOST                LOST
 *   FENCED             SHUTDOWN            FENCED
 *   FENCED             REPORT              ACKING (a complete: a fail)
 *   LOST               SHUTDOWN            LOST
 *   LOST               REPORT              DONE (discarded)
 *   ACKING             RESEND              ACKING
 *   ACKING             SETTLE              SETTLING
 *   SETTLING           RESEND              SETTLING
 *   ACKING, SETTLING   SETTLED, DROPPED    DONE
 *
 * A fenced or lost job keeps no timer, so no TIMEOUT or FENCE reaches it;
 * one that is reported or acknowledged is past the heartbeat's LOST. */
static int job_next(enum jstate from, enum jevent ev) {
  switch (from) {
  case J_WAITING:
    if (ev == E_START)
      return J_RUNNING;
    if (ev == E_FENCE || ev == E_GIVE_BACK)
      return J_ACKING;
    if (ev == E_LOST)
      return J_DONE;
    return -1;
  case J_RUNNING:
  case J_STOPPING:
    if (ev == E_TIMEOUT || ev == E_SHUTDOWN)
      return J_STOPPING;
    if (ev == E_FENCE)
      return J_FENCED;
    if (ev == E_LOST)
      return J_LOST;
    if (ev == E_REPORT)
      return J_ACKING;
    return -1;
  case J_FENCED:
    if (ev == E_SHUTDOWN)
      return J_FENCED;
    if (ev == E_LOST)
      return J_LOST;
    if (ev == E_REPORT)
      return J_ACKING;
    return -1;
  case J_LOST:
    if (ev == E_SHUTDOWN)
      return J_LOST;
    if (ev == E_REPORT)
      return J_DONE;
    return -1;
  case J_ACKING:
  case J_SETTLING:
    if (ev == E_RESEND)
      return from;
    if (ev == E_SETTLE && from == J_ACKING)
      return J_SETTLING;
    if (ev == E_SETTLED || ev == E_DROPPED)
      return J_DONE;
    return -1;
  case J_DONE:
    return -1;
  }
  return -1;
}

/* A fenced job's report: its lease may be gone, so a result is not
 * trusted to it; the attempt ends as a failure, fenced by the token like
 * any other (G7).  Whatever it reported, the error says why. */
static void fence_report(cl_job_t *job) {
  if (job->ack.op == CL__ACK_COMPLETE) {
    free(job->result);
    job->result = NULL;
    cl__ack_init(&job->ack, CL__ACK_FAIL, 0);
    job->retry = 1;
    job->retry_in = -1;
  }
  free(job->error);
  job->error = cl__strdup("stopped by the worker: its lease was about to "
                          "expire (fenced)");
}

/* Moves job by ev (the one place a job's state changes) and does what the
 * move itself means: the waiting list, the counters, the timer, the ack
 * a move starts (a release for a job never started; a fail for a fenced
 * job's complete), a lost job's report discarded, and the end (unlinked;
 * freed once its timer has closed).  Sending, events of the cause and
 * the handler's stop callback are the caller's.  Returns the new state;
 * an illegal move is a bug, caught by the assertion. */
static enum jstate job_move(cl_job_t *job, enum jevent ev) {
  cl_worker_t *w = job->w;
  enum jstate from = job->state;
  int to = job_next(from, ev);
  assert(to >= 0 && "illegal job move: see the table above job_next()");
  if (to < 0)
    return from;
  int had_handler = job_with_handler(job), was_acking = job_acking(job);
  job->state = (enum jstate)to;
  if (from == J_WAITING)
    wait_remove(w, job);
  switch (ev) {
  case E_START:
    w->running++;
    job->started_ms = uv_now(w->loop);
    if (w->o.timeout_s > 0)
      job->timeout_at = job->started_ms + (uint64_t)(w->o.timeout_s * 1000);
    job_arm(job);
    break;
  case E_FENCE:
  case E_GIVE_BACK:
    /* Never started: back to ready, no attempt spent.  Started and
     * fenced: the fence was its last deadline. */
    if (from == J_WAITING)
      cl__ack_init(&job->ack, CL__ACK_RELEASE, 0);
    uv_timer_stop(&job->timer);
    break;
  case E_LOST:
    uv_timer_stop(&job->timer);
    if (to == J_DONE)
      w->n_lost++; /* never started: just forgotten */
    break;
  case E_REPORT:
    uv_timer_stop(&job->timer);
    if (from == J_FENCED)
      fence_report(job);
    if (to == J_DONE) {
      /* The lease was lost while the handler ran: whatever it found, it
       * is nobody's result now (G3). */
      cl__event(&w->o.events, CL_LEVEL_WARNING, "discarded", "item",
                job->lease.item_id, "token", job->lease.token, "reason",
                "lease lost while the handler ran", NULL);
      w->n_lost++;
    }
    break;
  default:
    break;
  }
  if (had_handler && !job_with_handler(job))
    w->running--;
  if (!was_acking && job_acking(job))
    w->acking++;
  if (was_acking && !job_acking(job))
    w->acking--;
  assert(!job_acking(job) ||
         (job->state == J_SETTLING) == (job->ack.settling != 0));
  if (job->state == J_DONE) {
    if (job->prev)
      job->prev->next = job->next;
    else
      w->jobs = job->next;
    if (job->next)
      job->next->prev = job->prev;
    uv_timer_stop(&job->timer);
    uv_close((uv_handle_t *)&job->timer, on_job_closed);
  }
  return job->state;
}

static void on_job_timer(uv_timer_t *t) {
  cl_job_t *job = t->data;
  cl_worker_t *w = job->w;
  uint64_t now = uv_now(w->loop);
  int fence = now + w->margin_ms >= job->expiry_ms;
  /* Every move out of a timed state stops the timer. */
  assert(job_timed(job));
  if (job->state == J_WAITING) {
    if (!fence)
      return; /* the heartbeat arms it again */
    /* Never started and its lease is nearly out: give it back. */
    cl__event(&w->o.events, CL_LEVEL_WARNING, "fenced_unstarted", "item",
              job->lease.item_id, "token", job->lease.token, NULL);
    job_move(job, E_FENCE);
    send_ack(job);
    return;
  }
  if (fence) {
    cl__event(&w->o.events, CL_LEVEL_WARNING, "fenced", "item",
              job->lease.item_id, "token", job->lease.token, "queue",
              job->lease.queue, "reason",
              "lease minus margin passed on the local clock", NULL);
    job_move(job, E_FENCE);
    job_stop(job, CL_STOP_FENCED);
    return;
  }
  if (job->timeout_at && now >= job->timeout_at) {
    job->timeout_at = 0;
    cl__event(&w->o.events, CL_LEVEL_WARNING, "timeout", "item",
              job->lease.item_id, "queue", job->lease.queue, "after_s",
              CL_EV_NUM(w->o.timeout_s), NULL);
    job_move(job, E_TIMEOUT);
    job_stop(job, CL_STOP_TIMEOUT);
  }
  job_arm(job);
}

static void job_start(cl_job_t *job) {
  cl_worker_t *w = job->w;
  job_move(job, E_START);
  if (cl__event_on(&w->o.events, CL_LEVEL_DEBUG))
    cl__event(&w->o.events, CL_LEVEL_DEBUG, "started", "item",
              job->lease.item_id, "queue", job->lease.queue, "attempt",
              CL_EV_INT(job->lease.attempt), NULL);
  job->q->start(job, job->q->arg);
}

static void on_kick(uv_idle_t *h) {
  cl_worker_t *w = h->data;
  uv_idle_stop(h);
  int batch = w->kick_batch, claim = w->kick_claim;
  w->kick_batch = w->kick_claim = 0;
  if (w->closing)
    return;
  if (batch && claim)
    joint_now(w);
  else if (batch)
    batch_now(w);
  else if (claim)
    claim_now(w);
}

static void kick(cl_worker_t *w) {
  if (!w->closing)
    uv_idle_start(&w->kick, on_kick);
}

/* A claim for the room there is, at the end of this turn of the loop. */
static void maybe_claim(cl_worker_t *w) {
  w->kick_claim = 1;
  kick(w);
}

/* The completes waiting go, at the end of this turn, unless a batch is
 * out (its answer kicks the next). */
static void batch_kick(cl_worker_t *w) {
  w->kick_batch = 1;
  kick(w);
}

/* Starts waiting jobs while there is room. */
static void fill(cl_worker_t *w) {
  if (paused(w))
    return;
  while (w->wait_head && w->running < w->o.concurrency && !w->closing)
    job_start(w->wait_head);
}

/* Gives every claimed, unstarted job back (a stop began). */
static void give_back_waiting(cl_worker_t *w) {
  while (w->wait_head) {
    cl_job_t *job = w->wait_head;
    job_move(job, E_GIVE_BACK);
    send_ack(job);
  }
}

/* Remembers token as refused for good (see struct cl_worker).  The list
 * is bounded; past its bound the oldest are forgotten. */
static void spend_token(cl_worker_t *w, const char *token) {
  enum { SPENT_MAX = 100000 };
  if (w->nspent == SPENT_MAX) {
    free(w->spent[0]);
    memmove(w->spent, w->spent + 1, (SPENT_MAX - 1) * sizeof *w->spent);
    w->nspent--;
  }
  char **v = realloc(w->spent, (w->nspent + 1) * sizeof *v);
  char *t = cl__strdup(token);
  if (v == NULL || t == NULL) {
    if (v != NULL)
      w->spent = v;
    free(t);
    return;
  }
  w->spent = v;
  w->spent[w->nspent++] = t;
}

static void on_pause_timer(uv_timer_t *t) {
  cl_worker_t *w = t->data;
  fill(w);
  maybe_claim(w);
}

static int paused(cl_worker_t *w) {
  return w->pause_until != 0 && uv_now(w->loop) < w->pause_until;
}

/* A handler could not start: the worker's fault, not the item's.  Pauses
 * starting and claiming, longer with each pause in a row that did not
 * help (0.25 s doubling to 10 s), and says so at most once a minute. */
static void note_start_failure(cl_worker_t *w, const char *why) {
  uint64_t now = uv_now(w->loop);
  w->start_unwarned++;
  /* The failures of jobs started before the pause began belong to the
   * same round: they do not lengthen it. */
  if (paused(w))
    return;
  int k = w->start_streak < 6 ? w->start_streak : 6;
  w->start_streak++;
  uint64_t pause = (uint64_t)250 << k;
  if (pause > 10000)
    pause = 10000;
  w->pause_until = now + pause;
  uv_timer_start(&w->pause_timer, on_pause_timer, pause, 0);
  if (w->start_warned_ms == 0 || now - w->start_warned_ms >= 60000) {
    cl__event(&w->o.events, CL_LEVEL_WARNING, "handler_start_failed", "error",
              why, "failures", CL_EV_INT(w->start_unwarned), "pause_ms",
              CL_EV_INT(pause), "attempt_spent", "false", NULL);
    w->start_warned_ms = now;
    w->start_unwarned = 0;
  }
}

/* A handler ran (it reported): a streak of start failures is over. */
static void note_start_ok(cl_worker_t *w) {
  if (w->start_streak == 0)
    return;
  if (w->start_unwarned == 0)
    cl__event(&w->o.events, CL_LEVEL_INFO, "handler_start_recovered",
              "after_failures", CL_EV_INT(w->start_streak), NULL);
  w->start_streak = 0;
}

/* ------------------------------------------------------------------------ */
/* Acks: complete, fail, release, each settled after a lost connection     */

static void on_ack(void *arg, int rc, PGresult *res);

static const char *ack_op_name(cl__ack_op_t op) {
  return op == CL__ACK_COMPLETE ? "complete"
         : op == CL__ACK_FAIL   ? "fail"
                                : "release";
}

/* Sends the statement the job's ack state names (ack.h): the outcome
 * itself, or its settling read.  At debug level each outcome is logged
 * as it is first sent ("acking", again when a refused complete becomes a
 * fail) and as it settles ("acked"), with the token: with "leased" they
 * are the worker's history of operations (the fault harness reads it). */
static void send_ack(cl_job_t *job) {
  cl_worker_t *w = job->w;
  char rbuf[64];
  if (job->acking_logged != 1 + (int)job->ack.op &&
      cl__event_on(&w->o.events, CL_LEVEL_DEBUG)) {
    job->acking_logged = 1 + (int)job->ack.op;
    cl__event(&w->o.events, CL_LEVEL_DEBUG, "acking", "item",
              job->lease.item_id, "token", job->lease.token, "op",
              ack_op_name(job->ack.op), NULL);
  }
  cl__stmt_id_t id = cl__ack_stmt(&job->ack);
  if (id == CL__STMT_COMPLETE && !job->solo) {
    job->bnext = NULL;
    if (w->batch_tail)
      w->batch_tail->bnext = job;
    else
      w->batch_head = job;
    w->batch_tail = job;
    batch_kick(w);
    return;
  }
  const char *params[5] = {job->lease.item_id, job->lease.token};
  if (id == CL__STMT_COMPLETE) {
    params[2] = job->result;
  } else if (id == CL__STMT_FAIL) {
    params[2] = job->error ? job->error : "";
    params[3] = job->retry ? "true" : "false";
    cl__fmt_double(rbuf, sizeof rbuf, job->retry_in < 0 ? -1.0 : job->retry_in);
    params[4] = rbuf;
  }
  if (cl__loop_conn_send(w->a, id, params, on_ack, job) != 0) {
    cl__event(&w->o.events, CL_LEVEL_WARNING, "ack_dropped", "item",
              job->lease.item_id, "token", job->lease.token, "reason",
              "the connection is closed; the lease will expire", NULL);
    job_move(job, E_DROPPED);
  }
}

static void ack_settled(cl_job_t *job, int rc, int already) {
  cl_worker_t *w = job->w;
  const char *item = job->lease.item_id;
  double took = (double)(uv_now(w->loop) - job->started_ms) / 1000.0;
  if (cl__event_on(&w->o.events, CL_LEVEL_DEBUG))
    cl__event(&w->o.events, CL_LEVEL_DEBUG, "acked", "item", item, "token",
              job->lease.token, "op", ack_op_name(job->ack.op), "outcome",
              rc == 0                ? (already ? "already" : "ok")
              : rc == CL_ELEASE_LOST ? "lease_lost"
                                     : "unknown",
              NULL);
  if (rc == CL_ELEASE_LOST) {
    w->n_lost++;
    cl__event(&w->o.events, CL_LEVEL_WARNING, "lease_lost", "item", item,
              "token", job->lease.token, "outcome",
              job->ack.op == CL__ACK_COMPLETE ? "result discarded"
                                              : "nothing written",
              NULL);
  } else if (rc != 0) {
    cl__event(&w->o.events, CL_LEVEL_ERROR, "ack_failed", "item", item, "error",
              cl__loop_conn_error(w->a), "outcome",
              "lease left to expire; the reaper spends the attempt", NULL);
  } else if (job->ack.op == CL__ACK_COMPLETE) {
    w->n_completed++;
    if (cl__event_on(&w->o.events, CL_LEVEL_DEBUG))
      cl__event(&w->o.events, CL_LEVEL_DEBUG, "completed", "item", item,
                "queue", job->lease.queue, "attempt",
                CL_EV_INT(job->lease.attempt), "took_s", CL_EV_NUM(took),
                "already", already ? "true" : "false", NULL);
  } else if (job->ack.op == CL__ACK_FAIL) {
    w->n_failed++;
  } else {
    w->n_released++;
    if (cl__event_on(&w->o.events, CL_LEVEL_DEBUG))
      cl__event(&w->o.events, CL_LEVEL_DEBUG, "released", "item", item, NULL);
  }
  job_move(job, E_SETTLED);
  fill(w);
  maybe_claim(w);
}

/* An acknowledgement's answer: the policy of ack.h says what comes next,
 * and this only carries it out (sends, events, counters). */
static void ack_answer(cl_job_t *job, cl__ack_got_t got, int rc,
                       const cl_fail_info_t *fi);

static void on_ack(void *arg, int rc, PGresult *res) {
  cl_job_t *job = arg;
  cl_worker_t *w = job->w;
  if (rc == CL_ECONNLOST && w->closing) {
    /* The stop is closing the connection: nothing can be sent again. */
    job_move(job, E_DROPPED);
    return;
  }
  assert(job_acking(job));
  cl_fail_info_t info = {0};
  cl__ack_got_t got = cl__parse_ack(&job->ack, rc, res, &info);
  ack_answer(job, got, rc, &info);
}

/* Carries out what the policy says after an answer got (rc the request's
 * code; fi the fail's answer, when it is one). */
static void ack_answer(cl_job_t *job, cl__ack_got_t got, int rc,
                       const cl_fail_info_t *fi) {
  cl_worker_t *w = job->w;
  cl_fail_info_t info = *fi;
  if (job->ack.op == CL__ACK_FAIL &&
      (got == CL__ACK_GOT_OK || got == CL__ACK_GOT_ALREADY)) {
    if (job->state == J_SETTLING)
      cl__event(&w->o.events, CL_LEVEL_INFO, "failed", "item",
                job->lease.item_id, "state", info.dead ? "dead" : "ready",
                "attempts", CL_EV_INT(info.attempts), "already", "true", NULL);
    else
      cl__event(&w->o.events, info.dead ? CL_LEVEL_WARNING : CL_LEVEL_INFO,
                "failed", "item", job->lease.item_id, "queue", job->lease.queue,
                "state", info.dead ? "dead" : "ready", "attempts",
                CL_EV_INT(info.attempts), "retry_at", info.retry_at, "error",
                job->error, NULL);
  }
  cl__ack_step_t step = cl__ack_step(&job->ack, got);
  switch (step) {
  case CL__ACK_RESEND:
    if (got == CL__ACK_GOT_DB_ERROR)
      cl__event(&w->o.events, CL_LEVEL_WARNING, "ack_retry", "item",
                job->lease.item_id, "error", cl__loop_conn_error(w->a), NULL);
    job_move(job, E_RESEND);
    send_ack(job);
    return;
  case CL__ACK_SETTLE:
    job_move(job, E_SETTLE);
    send_ack(job);
    return;
  case CL__ACK_TO_FAIL:
  case CL__ACK_STAND_IN:
    free(job->error);
    job->error = cl__ack_error_text(step, cl__loop_conn_error(w->a));
    if (step == CL__ACK_TO_FAIL) {
      job->retry = 1;
      job->retry_in = -1;
    }
    job_move(job, E_RESEND);
    send_ack(job);
    return;
  case CL__ACK_DONE:
    ack_settled(job, 0, 0);
    return;
  case CL__ACK_ALREADY_DONE:
    ack_settled(job, 0, 1);
    return;
  case CL__ACK_LEASE_LOST:
    ack_settled(job, CL_ELEASE_LOST, 0);
    return;
  default:
    /* GIVE_UP (UNSETTLED needs a resend limit, which the loop has none
     * of): refused for good.  The lease is left to expire (no longer
     * extended, never released as an orphan), so the reaper spends its
     * attempt (G4). */
    spend_token(w, job->lease.token);
    ack_settled(job, rc != 0 ? rc : CL_EDB, 0);
    return;
  }
}

/* Completes in batches.  One COMPLETE_MANY is out at a time; completes
 * reported meanwhile wait in the worker's FIFO and go in the next one, so
 * that under load one statement and one commit settle everything that
 * finished during a round trip, and an idle worker's complete goes at
 * once.  Each job keeps its own ack policy (ack.h): the batch's answer is
 * one outcome per job, stepped as a COMPLETE's would be.  A lost
 * connection resends the same jobs (RESEND puts them back in the FIFO);
 * the settling read goes alone; a database error on the batch (one result
 * it will not store, a deadlock) sends each of its jobs alone from then
 * on, so that one job's refusal is never counted against another. */

/* At most this many completes, and about this many bytes of results, in
 * one statement. */
#define BATCH_MAX 1000
#define BATCH_BYTES (1u << 20)

typedef struct batch_ctx {
  cl_worker_t *w;
  size_t n;
  cl_job_t *jobs[];
} batch_ctx_t;

/* A batch's answer: rc and res as the connection gave them, whole when
 * res holds one outcome per complete in rows 0..n). */
static void batch_answered(batch_ctx_t *b, int rc, PGresult *res, int whole) {
  cl_worker_t *w = b->w;
  int lost = rc == CL_ECONNLOST || rc == CL_ECONNECT;
  int refused = !lost && (rc != 0 || !whole);
  if (refused && rc == 0)
    cl__event(&w->o.events, CL_LEVEL_ERROR, "ack_batch_failed", "error",
              "the answer does not have one row per complete", NULL);
  else if (refused)
    cl__event(&w->o.events, CL_LEVEL_WARNING, "ack_batch_refused", "n",
              CL_EV_INT(b->n), "error", cl__loop_conn_error(w->a), "outcome",
              "each complete is sent alone", NULL);
  /* Resends go back in the FIFO; the next batch goes once all are in. */
  for (size_t i = 0; i < b->n; i++) {
    cl_job_t *job = b->jobs[i];
    if (lost && w->closing) {
      job_move(job, E_DROPPED);
      continue;
    }
    if (refused) {
      job->solo = 1;
      send_ack(job);
      continue;
    }
    cl__ack_got_t got =
        lost ? CL__ACK_GOT_CONN_LOST : cl__parse_many_row(res, (int)i);
    cl_fail_info_t none = {0};
    ack_answer(job, got, rc, &none);
  }
  free(b);
  w->batch_inflight = 0;
  batch_kick(w);
}

static void on_batch(void *arg, int rc, PGresult *res) {
  batch_ctx_t *b = arg;
  cl_worker_t *w = b->w;
  batch_answered(b, rc, res, rc == 0 && PQntuples(res) == (int)b->n);
  if (!w->closing)
    maybe_finish(w);
}

/* A batch that could not be sent (rc): out of memory, each complete goes
 * alone; the connection closed, each is dropped (its lease expires). */
static void batch_unsent(batch_ctx_t *b, int rc) {
  cl_worker_t *w = b->w;
  size_t n = b->n;
  for (size_t i = 0; i < n; i++) {
    cl_job_t *job = b->jobs[i];
    if (rc == CL_ENOMEM) {
      job->solo = 1;
      send_ack(job);
      continue;
    }
    cl__event(&w->o.events, CL_LEVEL_WARNING, "ack_dropped", "item",
              job->lease.item_id, "token", job->lease.token, "reason",
              "the connection is closed; the lease will expire", NULL);
    job_move(job, E_DROPPED);
  }
  free(b);
}

/* Takes the completes waiting (up to BATCH_MAX of them, BATCH_BYTES of
 * results) off the FIFO into a batch with COMPLETE_MANY's literals in
 * lit.  NULL when none wait or a batch is out; out of memory, the oldest
 * is sent alone instead and NULL returned. */
static batch_ctx_t *batch_take(cl_worker_t *w, char *lit[3]) {
  if (w->batch_inflight || w->batch_head == NULL || w->closing)
    return NULL;
  size_t n = 0, bytes = 0;
  for (cl_job_t *j = w->batch_head; j && n < BATCH_MAX && bytes < BATCH_BYTES;
       j = j->bnext) {
    n++;
    bytes += j->result ? strlen(j->result) : 0;
  }
  batch_ctx_t *b = malloc(sizeof *b + n * sizeof b->jobs[0]);
  const char **col = malloc(3 * n * sizeof *col);
  if (b == NULL || col == NULL) {
    free(b);
    free(col);
    /* Out of memory: the oldest goes alone instead. */
    cl_job_t *job = w->batch_head;
    w->batch_head = job->bnext;
    if (w->batch_head == NULL)
      w->batch_tail = NULL;
    job->solo = 1;
    send_ack(job);
    return NULL;
  }
  b->w = w;
  b->n = n;
  for (size_t i = 0; i < n; i++) {
    cl_job_t *job = w->batch_head;
    w->batch_head = job->bnext;
    job->bnext = NULL;
    b->jobs[i] = job;
    col[i] = job->lease.item_id;
    col[n + i] = job->lease.token;
    col[2 * n + i] = job->result;
  }
  if (w->batch_head == NULL)
    w->batch_tail = NULL;
  int rc = cl__many_params(col, n, lit);
  free(col);
  if (rc != 0) {
    batch_unsent(b, rc);
    return NULL;
  }
  return b;
}

/* Sends batch b (its literals lit, freed here) as COMPLETE_MANY. */
static void batch_send(cl_worker_t *w, batch_ctx_t *b, char *lit[3]) {
  int rc = cl__loop_conn_send(w->a, CL__STMT_COMPLETE_MANY,
                              (const char *const *)lit, on_batch, b);
  for (int k = 0; k < 3; k++)
    free(lit[k]);
  if (rc != 0) {
    batch_unsent(b, rc);
    return;
  }
  w->batch_inflight = 1;
}

static void batch_now(cl_worker_t *w) {
  char *lit[3];
  batch_ctx_t *b = batch_take(w, lit);
  if (b != NULL)
    batch_send(w, b, lit);
}

/* The stop closes the connection: completes still waiting for a batch
 * can never be sent. */
static void batch_drop_waiting(cl_worker_t *w) {
  while (w->batch_head) {
    cl_job_t *job = w->batch_head;
    w->batch_head = job->bnext;
    cl__event(&w->o.events, CL_LEVEL_WARNING, "ack_dropped", "item",
              job->lease.item_id, "token", job->lease.token, "reason",
              "the worker stopped before it could be sent; the lease will "
              "expire",
              NULL);
    job_move(job, E_DROPPED);
  }
  w->batch_tail = NULL;
}

/* The handler's report of kind; what becomes of it (sent as given,
 * turned into a failure, discarded) is the move's (job_move). */
static int job_report(cl_job_t *job, cl__ack_op_t kind) {
  cl_worker_t *w = job->w;
  /* No bound on resends: the loop connection reconnects by itself, and
   * the stop's last-resort timer gives up on a database that stays
   * away. */
  cl__ack_init(&job->ack, kind, 0);
  if (job_move(job, E_REPORT) == J_ACKING)
    send_ack(job);
  fill(w);
  maybe_claim(w);
  maybe_finish(w);
  return 0;
}

int cl_job_complete(cl_job_t *job, const char *result) {
  if (job == NULL || !job_with_handler(job))
    return CL_EINVAL;
  note_start_ok(job->w);
  if (result != NULL) {
    char why[256];
    if (cl_check_json(result, strlen(result), why, sizeof why) != 0)
      return CL_EJSON;
    job->result = cl__strdup(result);
    if (job->result == NULL)
      return CL_ENOMEM;
  }
  return job_report(job, CL__ACK_COMPLETE);
}

int cl_job_fail(cl_job_t *job, const char *error, int retry, double retry_in) {
  if (job == NULL || !job_with_handler(job) ||
      (isfinite(retry_in) && retry_in > 3.2e9))
    return CL_EINVAL;
  char *e = cl__clean_text(error, CL_ERROR_TEXT_MAX);
  if (e == NULL)
    return CL_ENOMEM;
  note_start_ok(job->w);
  job->error = e;
  job->retry = retry;
  job->retry_in = isfinite(retry_in) ? retry_in : -1;
  return job_report(job, CL__ACK_FAIL);
}

int cl_job_release(cl_job_t *job, const char *why) {
  if (job == NULL || !job_with_handler(job))
    return CL_EINVAL;
  note_start_failure(job->w, why ? why : "the handler could not start");
  return job_report(job, CL__ACK_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* Claiming                                                                  */

/* Picks the queue to claim from: smooth weighted round robin over the
 * queues that may have work. */
static wqueue_t *pick_queue(cl_worker_t *w) {
  int total = 0;
  wqueue_t *best = NULL;
  for (size_t i = 0; i < w->nqueues; i++) {
    wqueue_t *q = &w->queues[i];
    if (!q->hint)
      continue;
    q->credit += q->weight;
    total += q->weight;
    if (best == NULL || q->credit > best->credit)
      best = q;
  }
  if (best)
    best->credit -= total;
  return best;
}

static void claim_answered(void *arg, int rc, PGresult *res);

/* A claim's answer; a stop waits for it (what it granted must be released,
 * not left to expire). */
static void on_claim(void *arg, int rc, PGresult *res) {
  cl_worker_t *w = ((claim_ctx_t *)arg)->w;
  claim_answered(arg, rc, res);
  maybe_finish(w);
}

static void claim_answered(void *arg, int rc, PGresult *res) {
  claim_ctx_t *ctx = arg;
  cl_worker_t *w = ctx->w;
  w->claim_inflight = 0;
  if (rc != 0) {
    if (rc != CL_ECONNLOST) {
      cl__event(&w->o.events, CL_LEVEL_ERROR, "claim_failed", "queue",
                ctx->q->name, "error", cl__loop_conn_error(w->a), NULL);
      /* Wait for the poll tick rather than spin on an error. */
      for (size_t i = 0; i < w->nqueues; i++)
        w->queues[i].hint = 0;
    }
    free(ctx);
    return;
  }
  double rtt = (double)(uv_hrtime() - ctx->sent_ns) / 1e9;
  w->pf_rtt = w->pf_rtt == 0 ? rtt : 0.8 * w->pf_rtt + 0.2 * rtt;
  cl_lease_t *leases = NULL;
  size_t n = 0;
  if (cl__parse_claim_rows(res, ctx->row0, ctx->col0, ctx->q->name, &leases,
                           &n) != 0) {
    cl__event(&w->o.events, CL_LEVEL_ERROR, "claim_failed", "queue",
              ctx->q->name, "error", "out of memory", NULL);
    free(ctx);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    cl_job_t *job = calloc(1, sizeof *job);
    if (job == NULL) {
      /* The lease expires and the reaper hands the item back. */
      cl__event(&w->o.events, CL_LEVEL_ERROR, "out_of_memory", "item",
                leases[i].item_id, NULL);
      continue;
    }
    job->w = w;
    job->lease = leases[i];
    memset(&leases[i], 0, sizeof leases[i]);
    job->q = ctx->q;
    job->state = J_WAITING; /* born here; job_move() from now on */
    job->expiry_ms = ctx->sent_ms + w->lease_ms;
    uv_timer_init(w->loop, &job->timer);
    job->timer.data = job;
    w->handles_open++;
    job->next = w->jobs;
    if (w->jobs)
      w->jobs->prev = job;
    w->jobs = job;
    if (w->wait_tail)
      w->wait_tail->wnext = job;
    else
      w->wait_head = job;
    w->wait_tail = job;
    w->nwaiting++;
    w->n_claimed++;
    job->claimed_ms = uv_now(w->loop);
    if (cl__event_on(&w->o.events, CL_LEVEL_DEBUG))
      cl__event(&w->o.events, CL_LEVEL_DEBUG, "leased", "item",
                job->lease.item_id, "token", job->lease.token, "attempt",
                CL_EV_INT(job->lease.attempt), NULL);
    job_arm(job);
  }
  cl_leases_free(leases, n);
  if ((int)n < ctx->n)
    ctx->q->hint = 0;
  if (n > 0 && cl__event_on(&w->o.events, CL_LEVEL_DEBUG))
    cl__event(&w->o.events, CL_LEVEL_DEBUG, "claimed", "queue", ctx->q->name,
              "n", CL_EV_INT(n), "asked", CL_EV_INT(ctx->n), NULL);
  free(ctx);
  if (w->stopping) {
    /* Claimed while a stop began: give them straight back. */
    give_back_waiting(w);
    return;
  }
  fill(w);
  maybe_claim(w);
}

/* The automatic prefetch's horizon: a claim carries about this much of
 * the handlers' work, and at least two claim round trips of it (so that
 * the next claim's answer is back before the buffer runs dry).  Bounded
 * by a quarter lease: a prefetched item waits little of its lease. */
#define PF_HORIZON_S 0.01
/* The most it grows to, unless 4 x concurrency is more.  No-op jobs at
 * 10,000/s per worker fill a 10 ms horizon with 100 items and two round
 * trips of a batch of a few hundred with several hundred: a bound of 64
 * cut the in-process worker's drain (2 x 8, bench/run) by a third
 * against 1,024.  What a large prefetch risks, items stranded behind
 * slots that turned slow, give_back_stranded() bounds. */
#define PREFETCH_MAX 1024

static int prefetch_now(cl_worker_t *w) {
  if (!w->pf_auto)
    return w->o.prefetch;
  uint64_t now = uv_hrtime();
  long done = w->n_claimed - w->running - w->nwaiting;
  double dt = (double)(now - w->pf_t0) / 1e9;
  if (w->pf_t0 == 0 || dt > 10) {
    w->pf_t0 = now;
    w->pf_done0 = done;
    w->pf_rate = 0;
  } else if (dt >= 0.005) {
    double sample = (double)(done - w->pf_done0) / dt;
    w->pf_rate = w->pf_rate == 0 ? sample : 0.5 * w->pf_rate + 0.5 * sample;
    w->pf_t0 = now;
    w->pf_done0 = done;
  }
  double horizon = 2 * w->pf_rtt > PF_HORIZON_S ? 2 * w->pf_rtt : PF_HORIZON_S;
  if (horizon > w->o.lease_s / 4)
    horizon = w->o.lease_s / 4;
  double p = w->pf_rate * horizon;
  if (p > w->pf_max)
    return w->pf_max;
  return p > w->pf_min ? (int)p : w->pf_min;
}

/* The claim the room there is calls for, with CLAIM's count in nbuf and
 * lease in lbuf; NULL when none is due (a claim is out, the worker is
 * stopping or paused, no room, no queue's turn). */
static claim_ctx_t *claim_take(cl_worker_t *w, char nbuf[16], char lbuf[64]) {
  if (w->stopping || w->closing || w->claim_inflight || !w->reg_ok ||
      paused(w) || !cl__loop_conn_is_up(w->a))
    return NULL;
  int want = w->o.concurrency + prefetch_now(w) - w->running - w->nwaiting;
  if (want <= 0)
    return NULL;
  if (want > 10000)
    want = 10000;
  wqueue_t *q = pick_queue(w);
  if (q == NULL)
    return NULL;
  claim_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL)
    return NULL;
  ctx->w = w;
  ctx->q = q;
  ctx->n = want;
  /* Taken before the send: the lease runs from no later than this. */
  ctx->sent_ms = uv_now(w->loop);
  ctx->sent_ns = uv_hrtime();
  snprintf(nbuf, 16, "%d", want);
  cl__fmt_double(lbuf, 64, w->o.lease_s);
  return ctx;
}

static void claim_now(cl_worker_t *w) {
  char nbuf[16], lbuf[64];
  claim_ctx_t *ctx = claim_take(w, nbuf, lbuf);
  if (ctx == NULL)
    return;
  const char *params[] = {ctx->q->name, nbuf, w->name, lbuf};
  if (cl__loop_conn_send(w->a, CL__STMT_CLAIM, params, on_claim, ctx) != 0) {
    free(ctx);
    return;
  }
  w->claim_inflight = 1;
}

/* A joint send: the batch's completes and the claim in one statement
 * and one commit (COMPLETE_CLAIM). */
typedef struct joint_ctx {
  batch_ctx_t *b;
  claim_ctx_t *claim;
} joint_ctx_t;

static void on_joint(void *arg, int rc, PGresult *res) {
  joint_ctx_t *j = arg;
  cl_worker_t *w = j->b->w;
  claim_ctx_t *claim = j->claim;
  int whole = rc == 0 && cl__complete_claim_ok(res, (int)j->b->n);
  claim->row0 = (int)j->b->n;
  claim->col0 = 1;
  batch_answered(j->b, rc, res, whole);
  free(j);
  if (rc == 0 && whole) {
    claim_answered(claim, 0, res);
  } else {
    /* The claim did not happen (or, on a lost connection, its items are
     * orphans the heartbeat gives back); one goes alone next turn, and
     * says so if it fails on its own. */
    w->claim_inflight = 0;
    free(claim);
    maybe_claim(w);
  }
  if (!w->closing)
    maybe_finish(w);
}

/* The completes waiting and the claim due, in one statement when both
 * are ready to go, else whichever is. */
static void joint_now(cl_worker_t *w) {
  /* The batch first: taking it changes nothing but the FIFO, while a
   * claim taken charges its queue's share (pick_queue). */
  char *lit[3];
  batch_ctx_t *b = batch_take(w, lit);
  if (b == NULL) {
    claim_now(w);
    return;
  }
  char nbuf[16], lbuf[64];
  claim_ctx_t *claim = claim_take(w, nbuf, lbuf);
  if (claim == NULL) {
    batch_send(w, b, lit);
    return;
  }
  joint_ctx_t *j = malloc(sizeof *j);
  int rc = CL_ENOMEM;
  if (j != NULL) {
    j->b = b;
    j->claim = claim;
    const char *params[] = {lit[0], lit[1],  lit[2], claim->q->name,
                            nbuf,   w->name, lbuf};
    rc = cl__loop_conn_send(w->a, CL__STMT_COMPLETE_CLAIM, params, on_joint, j);
  }
  for (int k = 0; k < 3; k++)
    free(lit[k]);
  if (rc != 0) {
    free(j);
    free(claim);
    batch_unsent(b, rc);
    return;
  }
  w->batch_inflight = 1;
  w->claim_inflight = 1;
}

/* ------------------------------------------------------------------------ */
/* Heartbeat                                                                 */

typedef struct hb_ctx {
  cl_worker_t *w;
  uint64_t sent_ms;
} hb_ctx_t;

static int cmp_held(const void *x, const void *y) {
  return strcmp(((const cl_held_t *)x)->token, ((const cl_held_t *)y)->token);
}

static void on_release_orphan(void *arg, int rc, PGresult *res) {
  (void)arg;
  (void)rc;
  (void)res;
}

static void on_heartbeat(void *arg, int rc, PGresult *res) {
  hb_ctx_t *ctx = arg;
  cl_worker_t *w = ctx->w;
  uint64_t sent = ctx->sent_ms;
  free(ctx);
  w->hb_inflight = 0;
  if (rc != 0) {
    if (rc != CL_ECONNLOST)
      cl__event(&w->o.events, CL_LEVEL_ERROR, "heartbeat_failed", "error",
                cl__loop_conn_error(w->a), NULL);
    return;
  }
  if (PQntuples(res) > 0 && PQgetisnull(res, 0, 0)) {
    /* The name's row is not this instance's any more: it was removed, or
     * another process took the name while this one was away.  Extend
     * nothing, release nothing; register again, which either gets the
     * name back or stops this worker. */
    cl__event(&w->o.events, CL_LEVEL_WARNING, "worker_name_lost", "worker",
              w->name, "action", "registering again", NULL);
    w->reg_ok = 0;
    send_register(w);
    return;
  }
  cl_held_t *held = NULL;
  size_t n = 0;
  if (cl__parse_heartbeat(res, &held, &n) != 0)
    return;
  if (n > 1)
    qsort(held, n, sizeof *held, cmp_held);
  char *seen = calloc(n + 1, 1);
  for (cl_job_t *job = w->jobs, *next; job; job = next) {
    next = job->next;
    cl_held_t key = {.token = job->lease.token};
    cl_held_t *h = n ? bsearch(&key, held, n, sizeof *held, cmp_held) : NULL;
    if (h != NULL) {
      if (seen)
        seen[h - held] = 1;
      if (job_timed(job)) {
        job->expiry_ms = sent + w->lease_ms;
        job_arm(job);
      }
      continue;
    }
    /* A reported job's own ack will learn it; a lost one is known. */
    if (!job_holds_lease(job))
      continue;
    cl__event(&w->o.events, CL_LEVEL_WARNING, "lease_lost", "item",
              job->lease.item_id, "token", job->lease.token, "seen_by",
              "heartbeat", NULL);
    /* Waiting: never started, just forgotten (DONE); else stopped. */
    if (job_move(job, E_LOST) == J_LOST)
      job_stop(job, CL_STOP_LEASE_LOST);
  }
  /* Held by the database, unknown here: a claim whose answer was lost with
   * a connection.  Give it back without spending an attempt. */
  for (size_t i = 0; seen && i < n; i++) {
    if (seen[i])
      continue;
    w->n_orphans++;
    cl__event(&w->o.events, CL_LEVEL_INFO, "orphan_released", "item",
              held[i].item_id, "token", held[i].token, NULL);
    const char *params[] = {held[i].item_id, held[i].token};
    (void)cl__loop_conn_send(w->a, CL__STMT_RELEASE, params, on_release_orphan,
                             NULL);
  }
  free(seen);
  cl_held_free(held, n);
  fill(w);
  maybe_claim(w);
}

static void send_heartbeat(cl_worker_t *w) {
  if (w->hb_inflight || w->closing || !w->reg_ok || !cl__loop_conn_is_up(w->a))
    return;
  hb_ctx_t *ctx = calloc(1, sizeof *ctx);
  char *spent = cl__array_literal((const char *const *)w->spent, w->nspent);
  if (ctx == NULL || spent == NULL) {
    free(ctx);
    free(spent);
    return;
  }
  ctx->w = w;
  ctx->sent_ms = uv_now(w->loop);
  char lbuf[64];
  cl__fmt_double(lbuf, sizeof lbuf, w->o.lease_s);
  const char *params[] = {w->name, lbuf, w->instance, spent};
  int rc = cl__loop_conn_send(w->a, CL__STMT_WORKER_HEARTBEAT, params,
                              on_heartbeat, ctx);
  free(spent);
  if (rc != 0) {
    free(ctx);
    return;
  }
  w->hb_inflight = 1;
}

/* A prefetch sized for fast jobs strands items when the jobs turn slow:
 * they wait, leased, behind busy slots, where no other worker can take
 * them.  When the oldest waiting job has waited a whole heartbeat
 * interval, the rate the prefetch was sized by was wrong: the waiting
 * jobs past concurrency/4 (the newest: the oldest start first, as
 * claimed) are given back, no attempt spent, and the rate is measured
 * afresh.  A fixed prefetch (opts.prefetch >= 0) is the caller's: its
 * jobs wait as asked. */
static void give_back_stranded(cl_worker_t *w) {
  cl_job_t *job = w->wait_head;
  /* Not while stopping (the stop gives them all back), nor while the
   * connection is down: the releases could not go, and the heartbeat
   * after the reconnect settles what is still held. */
  if (!w->pf_auto || job == NULL || w->stopping || w->closing ||
      !cl__loop_conn_is_up(w->a) ||
      uv_now(w->loop) - job->claimed_ms < (uint64_t)(w->o.heartbeat_s * 1000))
    return;
  int keep = w->pf_min, n = 0;
  for (int i = 0; job != NULL && i < keep; i++)
    job = job->wnext;
  while (job != NULL) {
    cl_job_t *next = job->wnext;
    job_move(job, E_GIVE_BACK);
    send_ack(job);
    job = next;
    n++;
  }
  w->pf_rate = 0;
  w->pf_t0 = 0;
  if (n > 0)
    cl__event(&w->o.events, CL_LEVEL_INFO, "prefetch_given_back", "n",
              CL_EV_INT(n), "kept", CL_EV_INT(w->nwaiting), NULL);
}

static void on_hb_timer(uv_timer_t *t) {
  cl_worker_t *w = t->data;
  give_back_stranded(w);
  send_heartbeat(w);
}

/* ------------------------------------------------------------------------ */
/* Connection events                                                         */

static void on_register(void *arg, int rc, PGresult *res) {
  cl_worker_t *w = arg;
  w->reg_inflight = 0;
  if (rc != 0) {
    /* Tried again at the next poll tick. */
    if (rc != CL_ECONNLOST)
      cl__event(&w->o.events, CL_LEVEL_ERROR, "register_failed", "error",
                cl__loop_conn_error(w->a), NULL);
    return;
  }
  int n = PQntuples(res);
  if (n > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
    w->registered = w->reg_ok = 1;
    w->takeover = 0;
    /* Reconcile at once: extend what we hold, release orphans. */
    send_heartbeat(w);
    maybe_claim(w);
    return;
  }
  /* Refused: another instance heartbeats under this name. */
  const char *host = n > 0 ? PQgetvalue(res, 0, 1) : "";
  const char *pid = n > 0 ? PQgetvalue(res, 0, 2) : "";
  const char *age = n > 0 ? PQgetvalue(res, 0, 3) : "";
  char me[256] = "";
  if (gethostname(me, sizeof me) != 0)
    me[0] = '\0';
  me[sizeof me - 1] = '\0';
  long p = atol(pid);
  if (!w->takeover && p > 0 && p != (long)getpid() && strcmp(host, me) == 0 &&
      kill((pid_t)p, 0) != 0 && errno == ESRCH) {
    /* Its row says it runs here, and no such process does: a predecessor
     * that crashed (a restart faster than the reaper).  Its leases are
     * this worker's orphans now. */
    cl__event(&w->o.events, CL_LEVEL_WARNING, "worker_name_reclaimed", "worker",
              w->name, "previous_pid", pid, "reason",
              "no such process on this host", NULL);
    w->takeover = 1;
    send_register(w);
    return;
  }
  snprintf(w->fatal_why, sizeof w->fatal_why,
           "worker name \"%s\" is in use by a live worker (host %s, pid %s, "
           "last heartbeat %.1f s ago): give each worker its own --name, or "
           "none for a unique default",
           w->name, *host ? host : "?", *pid ? pid : "?", atof(age));
  cl__event(&w->o.events, CL_LEVEL_ERROR, "worker_name_taken", "worker",
            w->name, "holder_host", host, "holder_pid", pid, NULL);
  w->fatal_rc = CL_ENAME_TAKEN;
  begin_stop(w);
}

static void send_register(cl_worker_t *w) {
  char host[256] = "";
  if (gethostname(host, sizeof host) != 0)
    host[0] = '\0';
  host[sizeof host - 1] = '\0';
  char pid[16], conc[16];
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  snprintf(conc, sizeof conc, "%d", w->o.concurrency);
  /* The queue names passed cl_check_queue(): no quotes or commas. */
  size_t len = 3;
  for (size_t i = 0; i < w->nqueues; i++)
    len += strlen(w->queues[i].name) + 1;
  char *arr = malloc(len);
  if (arr == NULL)
    return;
  strcpy(arr, "{");
  for (size_t i = 0; i < w->nqueues; i++) {
    if (i)
      strcat(arr, ",");
    strcat(arr, w->queues[i].name);
  }
  strcat(arr, "}");
  char hb[64];
  cl__fmt_double(hb, sizeof hb, w->o.heartbeat_s);
  const char *params[] = {w->name,
                          host,
                          pid,
                          CL_VERSION_STRING,
                          conc,
                          arr,
                          hb,
                          w->instance,
                          w->takeover ? "true" : "false"};
  if (cl__loop_conn_send(w->a, CL__STMT_REGISTER, params, on_register, w) == 0)
    w->reg_inflight = 1;
  free(arr);
}

static void on_up(void *arg) {
  cl_worker_t *w = arg;
  cl__event(&w->o.events, CL_LEVEL_INFO, "db_connected", "dsn",
            cl__loop_conn_dsn_redacted(w->a), NULL);
  for (size_t i = 0; i < w->nqueues; i++)
    w->queues[i].hint = 1;
  /* Heartbeats and claims wait for the name (on_register); acks do not. */
  send_register(w);
}

static void on_down(void *arg, int rc, const char *why, unsigned retry_ms) {
  cl_worker_t *w = arg;
  w->claim_inflight = 0;
  w->hb_inflight = 0;
  w->reg_ok = 0;
  w->reg_inflight = 0;
  if (rc == CL_EAUTH || rc == CL_ESCHEMA) {
    cl__event(&w->o.events, CL_LEVEL_ERROR, "db_fatal", "error", why, "dsn",
              cl__loop_conn_dsn_redacted(w->a), NULL);
    w->fatal_rc = rc;
    snprintf(w->fatal_why, sizeof w->fatal_why, "%s", why);
    begin_stop(w);
    return;
  }
  cl__event(&w->o.events, CL_LEVEL_WARNING, "db_disconnected", "error", why,
            "retry_in_ms", CL_EV_INT(retry_ms), "running",
            CL_EV_INT(w->running), NULL);
}

static void on_notify(void *arg, const char *channel, const char *payload) {
  cl_worker_t *w = arg;
  (void)channel;
  for (size_t i = 0; i < w->nqueues; i++) {
    if (strcmp(w->queues[i].name, payload) == 0) {
      w->queues[i].hint = 1;
      maybe_claim(w);
      return;
    }
  }
}

static void on_poll_timer(uv_timer_t *t) {
  cl_worker_t *w = t->data;
  for (size_t i = 0; i < w->nqueues; i++)
    w->queues[i].hint = 1;
  if (!w->reg_ok && !w->reg_inflight && !w->closing && w->fatal_rc == 0 &&
      cl__loop_conn_is_up(w->a))
    send_register(w);
  maybe_claim(w);
  double jitter = 0.8 + 0.4 * cl__random_unit();
  uv_timer_start(t, on_poll_timer, (uint64_t)(w->o.poll_s * 1000 * jitter), 0);
}

/* ------------------------------------------------------------------------ */
/* Stopping                                                                  */

static void on_handle_closed(uv_handle_t *h) {
  cl_worker_t *w = h->data;
  w->handles_open--;
  maybe_finish(w);
}

static void on_conn_closed(void *arg) {
  cl_worker_t *w = arg;
  w->a = NULL;
  w->handles_open--;
  maybe_finish(w);
}

/* Closes the handles cl_worker_new() made; the last close callback frees
 * the worker and calls on_exit (maybe_finish). */
static void close_handles(cl_worker_t *w) {
  w->closing = 1;
  uv_close((uv_handle_t *)&w->hb_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->poll_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->hard_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->pause_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->kick, on_handle_closed);
  cl__loop_conn_close(w->a, on_conn_closed, w);
}

static void close_all(cl_worker_t *w) {
  if (w->closing)
    return;
  batch_drop_waiting(w);
  cl__event(&w->o.events, CL_LEVEL_INFO, "stopped", "worker", w->name,
            "claimed", CL_EV_INT(w->n_claimed), "completed",
            CL_EV_INT(w->n_completed), "failed", CL_EV_INT(w->n_failed), "lost",
            CL_EV_INT(w->n_lost), "released", CL_EV_INT(w->n_released), NULL);
  close_handles(w);
}

static void on_deregister(void *arg, int rc, PGresult *res) {
  cl_worker_t *w = arg;
  (void)res;
  if (rc != 0 && rc != CL_ECONNLOST)
    cl__event(&w->o.events, CL_LEVEL_WARNING, "deregister_failed", "error",
              cl__loop_conn_error(w->a), NULL);
  close_all(w);
}

static void free_worker(cl_worker_t *w) {
  for (size_t i = 0; i < w->nqueues; i++)
    free(w->queues[i].name);
  free(w->queues);
  for (size_t i = 0; i < w->nspent; i++)
    free(w->spent[i]);
  free(w->spent);
  free(w->dsn);
  free(w->name);
  free(w);
}

/* Ends the stop once no job is running or being acknowledged. */
static void maybe_finish(cl_worker_t *w) {
  if (w->closing) {
    if (w->handles_open == 0) {
      cl_worker_exit_cb cb = w->o.on_exit;
      void *arg = w->o.arg;
      /* worker.h promises the worker lives while on_exit runs (it may
       * still ask for the name); a cl_worker_stop() from inside it is a
       * no-op, as the worker is already closing. */
      if (cb)
        cb(arg, w->fatal_rc, w->fatal_why);
      free_worker(w);
    }
    return;
  }
  if (!w->stopping || w->running > 0 || w->acking > 0 || w->nwaiting > 0 ||
      w->claim_inflight)
    return;
  if (w->dereg_sent)
    return;
  w->dereg_sent = 1;
  if (w->fatal_rc == 0 && w->registered) {
    const char *params[] = {w->name, w->instance};
    if (cl__loop_conn_send(w->a, CL__STMT_DEREGISTER, params, on_deregister,
                           w) == 0)
      return;
  }
  close_all(w);
}

static void stop_running(cl_worker_t *w) {
  for (cl_job_t *job = w->jobs, *next; job; job = next) {
    next = job->next;
    if (job_with_handler(job)) {
      job_move(job, E_SHUTDOWN);
      job_stop(job, CL_STOP_SHUTDOWN);
    }
  }
}

static void on_drain_timer(uv_timer_t *t) {
  cl_worker_t *w = t->data;
  cl__event(&w->o.events, CL_LEVEL_WARNING, "drain_timeout", "running",
            CL_EV_INT(w->running), "after_s", CL_EV_NUM(w->o.drain_s), NULL);
  stop_running(w);
}

/* The last resort: acks that cannot reach the database are given up; their
 * leases expire and the reaper hands the items back. */
static void on_hard_timer(uv_timer_t *t) {
  cl_worker_t *w = t->data;
  if (w->running > 0) {
    uv_timer_start(t, on_hard_timer, 1000, 0);
    return;
  }
  cl__event(&w->o.events, CL_LEVEL_WARNING, "stop_forced", "unacknowledged",
            CL_EV_INT(w->acking), "reason",
            "the database stayed unreachable; those leases will expire", NULL);
  if (w->fatal_rc == 0) {
    w->fatal_rc = CL_ECONNLOST;
    snprintf(w->fatal_why, sizeof w->fatal_why,
             "stopped with %d outcomes not recorded (the database stayed "
             "unreachable); their leases will expire",
             w->acking);
  }
  close_all(w);
}

static void begin_stop(cl_worker_t *w) {
  if (w->stopping)
    return;
  w->stopping = 1;
  uv_timer_stop(&w->poll_timer);
  /* Claimed but never started: back to ready, no attempt spent. */
  give_back_waiting(w);
  if (w->fatal_rc != 0) {
    /* No drain: the worker cannot go on (a refused password, a missing
     * schema, a name another worker holds). */
    if (w->running > 0)
      cl__event(&w->o.events, CL_LEVEL_WARNING, "stopping_jobs", "running",
                CL_EV_INT(w->running), "reason", "the worker cannot go on",
                NULL);
    stop_running(w);
  } else {
    cl__event(&w->o.events, CL_LEVEL_INFO, "draining", "running",
              CL_EV_INT(w->running), "drain_timeout_s", CL_EV_NUM(w->o.drain_s),
              NULL);
    uv_timer_start(&w->drain_timer, on_drain_timer,
                   (uint64_t)(w->o.drain_s * 1000), 0);
  }
  uv_timer_start(&w->hard_timer, on_hard_timer,
                 (uint64_t)(w->o.drain_s * 1000) + 15000, 0);
  maybe_finish(w);
}

void cl_worker_stop(cl_worker_t *w) {
  if (w->started) {
    begin_stop(w);
    return;
  }
  if (w->closing)
    return;
  /* Never started: nothing claimed, no row in claimer.workers, no
   * connection made.  Only the handles are left, and the exit callback
   * says why the worker never ran, if a setup call failed. */
  w->fatal_rc = w->setup_rc;
  snprintf(w->fatal_why, sizeof w->fatal_why, "%s", w->setup_why);
  close_handles(w);
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

double cl_worker_fence_margin_s(double lease_s) {
  double m = lease_s / 10;
  return m < 0.2 ? 0.2 : m > 5 ? 5 : m;
}

void cl_worker_opts_init(cl_worker_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->concurrency = 8;
  o->prefetch = -1;
  o->lease_s = 30;
  o->poll_s = 2;
  o->drain_s = 30;
}

int cl_worker_new(cl_worker_t **out, uv_loop_t *loop,
                  const cl_worker_opts_t *opts, char *err, size_t errlen) {
  *out = NULL;
  char why[256] = "";
  int rc = 0;
  if (opts->dsn == NULL)
    snprintf(why, sizeof why, "no dsn given"), rc = CL_EINVAL;
  else if (opts->concurrency < 1 || opts->concurrency > 10000)
    snprintf(why, sizeof why, "concurrency %d is out of range 1..10000",
             opts->concurrency),
        rc = CL_EINVAL;
  else if (!(opts->lease_s >= CL_WORKER_LEASE_MIN && opts->lease_s <= 604800))
    snprintf(why, sizeof why,
             "lease %g s is out of range [%g, 604800]: a shorter one would "
             "be fenced by the worker's safety margin before work starts",
             opts->lease_s, CL_WORKER_LEASE_MIN),
        rc = CL_EINVAL;
  else if (opts->heartbeat_s < 0 ||
           (opts->heartbeat_s > 0 &&
            opts->heartbeat_s < CL_WORKER_HEARTBEAT_MIN))
    snprintf(why, sizeof why,
             "heartbeat %g s is below the %g s minimum (each beat is a "
             "transaction)",
             opts->heartbeat_s, CL_WORKER_HEARTBEAT_MIN),
        rc = CL_EINVAL;
  else if (opts->heartbeat_s > 0 &&
           opts->heartbeat_s >=
               opts->lease_s - cl_worker_fence_margin_s(opts->lease_s))
    snprintf(why, sizeof why,
             "heartbeat %g s must be shorter than the lease (%g s) minus "
             "the fencing margin (%g s), or every job is fenced before its "
             "lease is extended",
             opts->heartbeat_s, opts->lease_s,
             cl_worker_fence_margin_s(opts->lease_s)),
        rc = CL_EINVAL;
  else if (!(opts->poll_s >= 0.01 && opts->poll_s <= 3600))
    snprintf(why, sizeof why,
             "poll interval %g s is out of range "
             "[0.01, 3600]",
             opts->poll_s),
        rc = CL_EINVAL;
  else if (opts->timeout_s < 0 || opts->drain_s < 0)
    snprintf(why, sizeof why, "timeouts must be >= 0"), rc = CL_EINVAL;
  else if (opts->name && cl_check_worker(opts->name, why, sizeof why) != 0)
    rc = CL_EINVAL;
  else if (cl_check_dsn(opts->dsn, why, sizeof why) != 0)
    rc = CL_EDSN;
  if (rc != 0) {
    if (err)
      snprintf(err, errlen, "%s", why);
    return rc;
  }
  cl_worker_t *w = calloc(1, sizeof *w);
  if (w == NULL)
    return CL_ENOMEM;
  w->loop = loop;
  w->o = *opts;
  w->pf_min = (w->o.concurrency + 3) / 4;
  w->pf_max =
      4 * w->o.concurrency > PREFETCH_MAX ? 4 * w->o.concurrency : PREFETCH_MAX;
  if (w->pf_max > 10000)
    w->pf_max = 10000;
  if (w->o.prefetch < 0) {
    w->pf_auto = 1;
    w->o.prefetch = w->pf_min;
  }
  if (w->o.heartbeat_s <= 0)
    w->o.heartbeat_s = w->o.lease_s / 3;
  w->lease_ms = (uint64_t)(w->o.lease_s * 1000);
  w->margin_ms = (uint64_t)(cl_worker_fence_margin_s(w->o.lease_s) * 1000);
  if (cl_uuid4(w->instance) != 0)
    snprintf(w->instance, sizeof w->instance, "%lx-%lx",
             (unsigned long)time(NULL), (unsigned long)getpid());
  w->dsn = cl__strdup(opts->dsn);
  char name[CL_WORKER_MAX + 1];
  if (opts->name == NULL) {
    cl__default_name(name, sizeof name);
  } else {
    snprintf(name, sizeof name, "%s", opts->name);
  }
  w->name = cl__strdup(name);
  w->o.dsn = w->dsn;
  w->o.name = w->name;
  cl__loop_conn_hooks_t hooks = {on_up, on_down, on_notify};
  if (w->dsn == NULL || w->name == NULL ||
      (rc = cl__loop_conn_new(&w->a, loop, w->dsn, channels, &hooks, w)) != 0) {
    free_worker(w);
    rc = rc ? rc : CL_ENOMEM;
    if (err)
      snprintf(err, errlen, "%s",
               rc == CL_EDSN ? "malformed connection string (or a "
                               "connect_timeout that is not whole seconds)"
                             : "out of memory");
    return rc;
  }
  uv_timer_init(loop, &w->hb_timer);
  uv_timer_init(loop, &w->poll_timer);
  uv_timer_init(loop, &w->drain_timer);
  uv_timer_init(loop, &w->hard_timer);
  uv_timer_init(loop, &w->pause_timer);
  w->hb_timer.data = w->poll_timer.data = w;
  w->drain_timer.data = w->hard_timer.data = w;
  w->pause_timer.data = w;
  uv_idle_init(loop, &w->kick);
  w->kick.data = w;
  w->handles_open = 7; /* five timers, the kick and the connection */
  *out = w;
  return 0;
}

/* Returns rc, which a setup call is failing with, after keeping the first
 * such error and its message (fmt) for on_exit (see cl_worker_stop). */
__attribute__((format(printf, 3, 4))) static int
setup_failed(cl_worker_t *w, int rc, const char *fmt, ...) {
  if (w->setup_rc != 0)
    return rc;
  w->setup_rc = rc;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->setup_why, sizeof w->setup_why, fmt, ap);
  va_end(ap);
  return rc;
}

int cl_worker_add_queue(cl_worker_t *w, const char *queue, int weight,
                        cl_job_start_cb start, void *arg) {
  char why[256];
  if (w->started || w->closing)
    return CL_EINVAL; /* a running worker's own exit says nothing of it */
  if (cl_check_queue(queue ? queue : "", why, sizeof why) != 0)
    return setup_failed(w, CL_EINVAL, "%s", why);
  if (weight < 1 || weight > 1000)
    return setup_failed(w, CL_EINVAL,
                        "queue \"%s\": weight %d is out of range 1..1000",
                        queue, weight);
  if (start == NULL)
    return setup_failed(w, CL_EINVAL, "queue \"%s\": no handler given", queue);
  for (size_t i = 0; i < w->nqueues; i++)
    if (strcmp(w->queues[i].name, queue) == 0)
      return setup_failed(w, CL_EINVAL, "queue \"%s\" is given twice", queue);
  wqueue_t *qs = realloc(w->queues, (w->nqueues + 1) * sizeof *qs);
  if (qs == NULL)
    return setup_failed(w, CL_ENOMEM, "out of memory");
  w->queues = qs;
  wqueue_t *q = &qs[w->nqueues];
  memset(q, 0, sizeof *q);
  q->name = cl__strdup(queue);
  if (q->name == NULL)
    return setup_failed(w, CL_ENOMEM, "out of memory");
  q->weight = weight;
  q->hint = 1;
  q->start = start;
  q->arg = arg;
  w->nqueues++;
  return 0;
}

int cl_worker_start(cl_worker_t *w) {
  if (w->started || w->closing)
    return CL_EINVAL;
  if (w->nqueues == 0)
    return setup_failed(w, CL_EINVAL,
                        "no queue to work on (cl_worker_add_queue)");
  w->started = 1;
  cl__event(&w->o.events, CL_LEVEL_INFO, "worker_started", "worker", w->name,
            "concurrency", CL_EV_INT(w->o.concurrency), "prefetch",
            CL_EV_INT(w->o.prefetch), "prefetch_max",
            CL_EV_INT(w->pf_auto ? w->pf_max : w->o.prefetch), "lease_s",
            CL_EV_NUM(w->o.lease_s), "heartbeat_s", CL_EV_NUM(w->o.heartbeat_s),
            "dsn", cl__loop_conn_dsn_redacted(w->a), NULL);
  uint64_t hb = (uint64_t)(w->o.heartbeat_s * 1000);
  uv_timer_start(&w->hb_timer, on_hb_timer, hb, hb);
  uv_timer_start(&w->poll_timer, on_poll_timer, (uint64_t)(w->o.poll_s * 1000),
                 0);
  cl__loop_conn_start(w->a);
  return 0;
}

const char *cl_worker_name(const cl_worker_t *w) { return w->name; }
int cl_worker_running(const cl_worker_t *w) { return w->running; }

void cl_worker_set_event_level(cl_worker_t *w, cl_level_t min) {
  w->o.events.min = min;
}

void cl_worker_set_concurrency(cl_worker_t *w, int concurrency) {
  if (concurrency < 1 || concurrency > 10000)
    return;
  w->o.concurrency = concurrency;
  fill(w);
  maybe_claim(w);
}
