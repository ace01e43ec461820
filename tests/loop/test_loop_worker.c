/*
 * test_loop_worker.c: the in-process worker (include/claimer/worker.h)
 * driven on a uv loop inside the test process against the harness's
 * PostgreSQL, through its public API only: items enqueued with
 * cl_enqueue() on a blocking connection, a C handler that completes,
 * fails, releases or holds its jobs, and the rows of claimer.items,
 * claimer.results and claimer.workers checked afterwards, with the events
 * the worker reported through cl_events_t.  The handler never reports from
 * inside start_cb or a stop callback: it acts on the fixture's next tick,
 * "later, from the same loop", as the contract has it.  Every test ends
 * with the worker gone and uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "claimer/worker.h"
#include "harness.h"
#include "loop_fixture.h"

enum { MAX_JOBS = 64, MAX_STARTS = 256 };

/* What the handler does with an item, by the prefix of its id:
 *   c-   complete with {"ok": 1}
 *   f-   fail without retry (dead)
 *   fc-  fail with retry at once on attempt 1, complete on attempt 2
 *   rc-  release the first time it is seen, complete the second
 *   h-   hold: the test reports it (or the stop callback makes it) */
typedef struct wfx {
  lt_loop_t lt;
  char db[64];
  char dsn[1024];
  char name[64];
  char app[64];
  cl_conn_t *c;
  PGconn *pg;
  lt_events_t ev;
  cl_worker_t *w;
  int exited;
  int exit_rc;
  char exit_why[1024];
  char exit_name[256];      /* cl_worker_name() read inside on_exit */
  cl_job_t *todo[MAX_JOBS]; /* started, to act on at the next tick */
  int ntodo;
  cl_job_t *held[MAX_JOBS]; /* h- jobs, in the order started */
  int nheld;
  int starts;
  char start_id[MAX_STARTS][32];
  int start_attempt[MAX_STARTS];
  char start_payload[MAX_STARTS][64];
  int stops;
  cl_stop_reason_t stop_why[MAX_JOBS];
  cl_job_t *stopped[MAX_JOBS]; /* stopped, to report at the next tick */
  int nstopped;
  int stop_report; /* 0 complete, 1 fail with retry */
  int report_rc;   /* the last report's return, from the tick */
} wfx_t;

/* ------------------------------------------------------------------------ */
/* The handler                                                               */

static int seen(const wfx_t *fx, const char *id) {
  int n = 0;
  for (int i = 0; i < fx->starts && i < MAX_STARTS; i++)
    n += strcmp(fx->start_id[i], id) == 0;
  return n;
}

static void on_stop(cl_job_t *job, void *arg, cl_stop_reason_t why) {
  wfx_t *fx = arg;
  if (fx->stops < MAX_JOBS)
    fx->stop_why[fx->stops] = why;
  fx->stops++;
  if (fx->nstopped < MAX_JOBS)
    fx->stopped[fx->nstopped++] = job;
}

static void on_start(cl_job_t *job, void *arg) {
  wfx_t *fx = arg;
  if (fx->starts < MAX_STARTS) {
    snprintf(fx->start_id[fx->starts], 32, "%s", cl_job_item_id(job));
    fx->start_attempt[fx->starts] = cl_job_attempt(job);
    snprintf(fx->start_payload[fx->starts], 64, "%s", cl_job_payload(job));
  }
  fx->starts++;
  cl_job_on_stop(job, on_stop, fx);
  if (fx->ntodo < MAX_JOBS)
    fx->todo[fx->ntodo++] = job;
}

/* Unhold job: the test reported it. */
static void unhold(wfx_t *fx, cl_job_t *job) {
  for (int i = 0; i < fx->nheld; i++) {
    if (fx->held[i] == job) {
      memmove(&fx->held[i], &fx->held[i + 1],
              (size_t)(fx->nheld - i - 1) * sizeof *fx->held);
      fx->nheld--;
      return;
    }
  }
}

static void act(wfx_t *fx, cl_job_t *job) {
  const char *id = cl_job_item_id(job);
  if (strncmp(id, "c-", 2) == 0) {
    fx->report_rc = cl_job_complete(job, "{\"ok\": 1}");
  } else if (strncmp(id, "f-", 2) == 0) {
    fx->report_rc = cl_job_fail(job, "boom", 0, 0);
  } else if (strncmp(id, "fc-", 3) == 0) {
    fx->report_rc = cl_job_attempt(job) == 1
                        ? cl_job_fail(job, "try again", 1, 0)
                        : cl_job_complete(job, "{\"ok\": 2}");
  } else if (strncmp(id, "rc-", 3) == 0) {
    fx->report_rc = seen(fx, id) == 1 ? cl_job_release(job, "not now")
                                      : cl_job_complete(job, "{\"ok\": 3}");
  } else if (fx->nheld < MAX_JOBS) {
    fx->held[fx->nheld++] = job;
  }
}

static void tick(void *arg) {
  wfx_t *fx = arg;
  int n = fx->ntodo;
  cl_job_t *todo[MAX_JOBS];
  memcpy(todo, fx->todo, (size_t)n * sizeof *todo);
  fx->ntodo = 0;
  for (int i = 0; i < n; i++)
    act(fx, todo[i]);
  n = fx->nstopped;
  cl_job_t *stopped[MAX_JOBS];
  memcpy(stopped, fx->stopped, (size_t)n * sizeof *stopped);
  fx->nstopped = 0;
  for (int i = 0; i < n; i++) {
    unhold(fx, stopped[i]);
    fx->report_rc = fx->stop_report == 0
                        ? cl_job_complete(stopped[i], "{\"late\": true}")
                        : cl_job_fail(stopped[i], "shutdown", 1, 0);
  }
}

/* ------------------------------------------------------------------------ */
/* The fixture                                                               */

static int setup(void **state) {
  static int n;
  wfx_t *fx = calloc(1, sizeof *fx);
  snprintf(fx->db, sizeof fx->db, "lw_%d", ++n);
  snprintf(fx->name, sizeof fx->name, "lt-worker-%d", n);
  snprintf(fx->app, sizeof fx->app, "lt_worker_%d", n);
  if (lt_db_open(fx->db, fx->dsn, sizeof fx->dsn, &fx->c, &fx->pg) != 0)
    return -1;
  lt_loop_init(&fx->lt);
  fx->lt.on_tick = tick;
  fx->lt.tick_arg = fx;
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  wfx_t *fx = *state;
  if (fx->lt.open) {
    /* The test failed half way: stop the worker, answering what it
     * holds, and close what is left. */
    if (fx->w != NULL) {
      cl_worker_stop(fx->w);
      for (int i = 0; i < 200 && !fx->exited; i++) {
        for (int j = 0; j < fx->nheld; j++)
          (void)cl_job_fail(fx->held[j], "teardown", 1, 0);
        fx->nheld = 0;
        uv_run(&fx->lt.loop, UV_RUN_NOWAIT);
        usleep(10000);
      }
    }
    lt_loop_abandon(&fx->lt);
    if (fx->ev.n)
      lt_events_dump(&fx->ev);
  }
  lt_events_free(&fx->ev);
  cl_conn_free(&fx->c);
  PQfinish(fx->pg);
  free(fx);
  return 0;
}

static void on_exit_cb(void *arg, int rc, const char *why) {
  wfx_t *fx = arg;
  fx->exited++;
  fx->exit_rc = rc;
  snprintf(fx->exit_why, sizeof fx->exit_why, "%s", why ? why : "");
  /* worker.h: the worker is freed right after this returns, so it is
   * still there now (ASan and valgrind would see a read of freed memory). */
  if (fx->w != NULL)
    snprintf(fx->exit_name, sizeof fx->exit_name, "%s", cl_worker_name(fx->w));
  fx->w = NULL; /* freed once this returns */
}

static void opts_for(wfx_t *fx, cl_worker_opts_t *o, const char *dsn) {
  static char full[1400];
  snprintf(full, sizeof full, "%s application_name=%s", dsn, fx->app);
  cl_worker_opts_init(o);
  o->dsn = full;
  o->name = fx->name;
  o->concurrency = 4;
  o->lease_s = 10;
  o->poll_s = 0.1;
  o->events = lt_events_sink(&fx->ev);
  o->on_exit = on_exit_cb;
  o->arg = fx;
}

static void worker_start(wfx_t *fx, const cl_worker_opts_t *o,
                         const char *queue) {
  char err[256] = "";
  assert_int_equal(cl_worker_new(&fx->w, &fx->lt.loop, o, err, sizeof err), 0);
  assert_int_equal(cl_worker_add_queue(fx->w, queue, 1, on_start, fx), 0);
  assert_int_equal(cl_worker_start(fx->w), 0);
}

/* Stops the worker (if still there), runs until it has exited, and ends
 * the loop. */
static void finish(wfx_t *fx, int want_rc) {
  if (fx->w != NULL)
    cl_worker_stop(fx->w);
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 20);
  assert_int_equal(fx->exit_rc, want_rc);
  assert_string_equal(fx->exit_name, fx->name);
  lt_loop_finish(&fx->lt);
}

static void enqueue(wfx_t *fx, const char *id, const char *queue,
                    const char *payload, int max_attempts) {
  cl_item_t it = {.item_id = id,
                  .queue = queue,
                  .payload = payload,
                  .max_attempts = max_attempts};
  assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
}

/* Rows of table (claimer.items, claimer.results) for item id that also
 * meet cond (SQL; NULL for none). */
static long rows_of(wfx_t *fx, const char *table, const char *id,
                    const char *cond) {
  char sql[512];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE item_id = '%s'%s%s",
           table, id, cond ? " AND " : "", cond ? cond : "");
  return th_long(fx->pg, sql);
}

static void assert_item(wfx_t *fx, const char *id, const char *state,
                        long attempts) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.items WHERE item_id = '%s' AND "
           "state = '%s' AND attempts = %ld",
           id, state, attempts);
  if (th_long(fx->pg, sql) != 1) {
    lt_events_dump(&fx->ev);
    fail_msg("item %s is not %s with %ld attempts", id, state, attempts);
  }
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* Complete, fail (dead), fail then complete, release then complete: the
 * rows and the events of each, then a graceful stop that deregisters. */
static void test_complete_fail_release(void **state) {
  wfx_t *fx = *state;
  enqueue(fx, "c-1", "wq", "{\"n\": 1}", 0);
  enqueue(fx, "f-1", "wq", NULL, 0);
  enqueue(fx, "fc-1", "wq", NULL, 0);
  enqueue(fx, "rc-1", "wq", NULL, 0);
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  worker_start(fx, &o, "wq");
  LT_RUN_UNTIL(&fx->lt,
               lt_events_count(&fx->ev, "completed", NULL) == 3 &&
                   lt_events_count(&fx->ev, "failed", "state=dead", NULL) == 1,
               20);
  assert_int_equal(fx->report_rc, 0);
  assert_int_equal(cl_worker_running(fx->w), 0);

  assert_item(fx, "c-1", "done", 1);
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.results WHERE item_id = 'c-1' AND "
           "result = '{\"ok\": 1}' AND attempt = 1 AND worker_id = '%s'",
           fx->name);
  assert_int_equal(th_long(fx->pg, sql), 1);
  assert_item(fx, "f-1", "dead", 1);
  assert_int_equal(rows_of(fx, "claimer.items", "f-1", "last_error = 'boom'"),
                   1);
  assert_int_equal(rows_of(fx, "claimer.results", "f-1", NULL), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts WHERE "
                                   "kind = 'item_dead' AND subject = 'f-1'"),
                   1);
  /* A failed attempt is spent; the retry is attempt 2. */
  assert_item(fx, "fc-1", "done", 2);
  /* A release spends nothing: seen twice, both times as attempt 1. */
  assert_item(fx, "rc-1", "done", 1);
  assert_int_equal(seen(fx, "rc-1"), 2);
  assert_int_equal(seen(fx, "fc-1"), 2);
  assert_int_equal(seen(fx, "c-1"), 1);
  for (int i = 0; i < fx->starts; i++) {
    if (strcmp(fx->start_id[i], "rc-1") == 0)
      assert_int_equal(fx->start_attempt[i], 1);
    if (strcmp(fx->start_id[i], "c-1") == 0)
      assert_string_equal(fx->start_payload[i], "{\"n\": 1}");
  }
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims"), 0);

  char kv[96];
  snprintf(kv, sizeof kv, "worker=%s", fx->name);
  assert_int_equal(lt_events_count(&fx->ev, "worker_started", kv, NULL), 1);
  assert_int_equal(lt_events_count(&fx->ev, "db_connected", NULL), 1);
  assert_int_equal(
      lt_events_count(&fx->ev, "failed", "item=fc-1", "state=ready", NULL), 1);
  assert_int_equal(lt_events_count(&fx->ev, "released", "item=rc-1", NULL), 1);
  assert_int_equal(
      lt_events_count(&fx->ev, "completed", "item=fc-1", "attempt=2", NULL), 1);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.workers WHERE worker_id = '%s'",
           fx->name);
  assert_int_equal(th_long(fx->pg, sql), 1);
  finish(fx, 0);
  assert_int_equal(lt_events_count(&fx->ev, "stopped", "completed=3",
                                   "failed=2", "released=1", NULL),
                   1);
  assert_int_equal(th_long(fx->pg, sql), 0);
}

/* A graceful stop with jobs running: the claimed-but-unstarted item goes
 * back at once without spending an attempt, nothing more is claimed, the
 * running jobs are not asked to stop and may still report, and the worker
 * exits (rc 0) after the last of them. */
static void test_graceful_stop_with_running_jobs(void **state) {
  wfx_t *fx = *state;
  for (int i = 1; i <= 4; i++) {
    char id[16];
    snprintf(id, sizeof id, "h-%d", i);
    enqueue(fx, id, "sq", NULL, 0);
  }
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.concurrency = 2;
  o.prefetch = 1;
  worker_start(fx, &o, "sq");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 2, 10);
  assert_int_equal(cl_worker_running(fx->w), 2);
  /* Two running and one claimed in waiting. */
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims"), 3);

  cl_worker_stop(fx->w);
  cl_worker_stop(fx->w); /* safe twice */
  LT_RUN_UNTIL(&fx->lt,
               th_long(fx->pg, "SELECT count(*) FROM claimer.claims") == 2, 10);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.items "
                                   "WHERE state = 'ready' AND attempts = 0"),
                   2);
  assert_int_equal(lt_events_count(&fx->ev, "draining", "running=2", NULL), 1);
  lt_run_for(&fx->lt, 0.3);
  assert_int_equal(fx->stops, 0);
  assert_int_equal(fx->exited, 0);
  assert_int_equal(fx->starts, 2);

  assert_int_equal(cl_job_complete(fx->held[0], "{\"after\": \"stop\"}"), 0);
  lt_run_for(&fx->lt, 0.3);
  assert_int_equal(fx->exited, 0);
  assert_int_equal(cl_job_fail(fx->held[1], "cut short", 1, 0), 0);
  fx->nheld = 0;
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 10);
  assert_int_equal(fx->exit_rc, 0);
  assert_int_equal(fx->starts, 2);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.items "
                                   "WHERE state = 'done' AND attempts = 1"),
                   1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.items "
                                   "WHERE state = 'ready' AND attempts = 1 "
                                   "AND last_error = 'cut short'"),
                   1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.workers"), 0);
  assert_int_equal(lt_events_count(&fx->ev, "stopped", "completed=1",
                                   "failed=1", "released=1", NULL),
                   1);
  finish(fx, 0);
}

/* A stop whose drain timeout passes with a job still running: the job is
 * asked to stop (CL_STOP_SHUTDOWN), its handler reports a retryable
 * failure, and the worker exits rc 0. */
static void test_drain_timeout_stops_jobs(void **state) {
  wfx_t *fx = *state;
  enqueue(fx, "h-1", "dq", NULL, 0);
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.drain_s = 0.3;
  worker_start(fx, &o, "dq");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 1, 10);
  fx->stop_report = 1;
  double t0 = th_now();
  cl_worker_stop(fx->w);
  LT_RUN_UNTIL(&fx->lt, fx->stops == 1, 5);
  double waited = th_now() - t0;
  assert_int_equal(fx->stop_why[0], CL_STOP_SHUTDOWN);
  assert_true(waited >= 0.25);
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 10);
  assert_int_equal(fx->exit_rc, 0);
  assert_int_equal(fx->report_rc, 0);
  assert_item(fx, "h-1", "ready", 1);
  assert_int_equal(
      rows_of(fx, "claimer.items", "h-1", "last_error = 'shutdown'"), 1);
  assert_int_equal(lt_events_count(&fx->ev, "drain_timeout", "running=1", NULL),
                   1);
  finish(fx, 0);
}

/* The lease is reaped under a running job (expired and reaped in one
 * transaction, so that no heartbeat slips in between): the next heartbeat
 * finds it gone, the job is asked to stop (CL_STOP_LEASE_LOST), and the
 * result its handler still reports is discarded. */
static void test_lease_lost_discards_result(void **state) {
  wfx_t *fx = *state;
  enqueue(fx, "h-1", "lq", NULL, 1);
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.lease_s = 3;
  o.heartbeat_s = 0.2;
  worker_start(fx, &o, "lq");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 1, 10);
  PGconn *raw = cl_conn_pg(fx->c);
  th_exec(raw, "BEGIN");
  th_exec(raw, "UPDATE claimer.claims SET lease_until = now() - "
               "interval '1 second'");
  cl_reap_info_t ri = {0};
  assert_int_equal(cl_reap(fx->c, 10, &ri), 0);
  th_exec(raw, "COMMIT");
  assert_int_equal(ri.expired, 1);
  assert_int_equal(ri.dead, 1);
  LT_RUN_UNTIL(&fx->lt, fx->stops == 1, 5);
  assert_int_equal(fx->stop_why[0], CL_STOP_LEASE_LOST);
  LT_RUN_UNTIL(&fx->lt,
               lt_events_count(&fx->ev, "discarded", "item=h-1", NULL) == 1, 5);
  assert_int_equal(fx->report_rc, 0);
  assert_int_equal(lt_events_count(&fx->ev, "lease_lost", "item=h-1",
                                   "seen_by=heartbeat", NULL),
                   1);
  assert_item(fx, "h-1", "dead", 1);
  assert_int_equal(rows_of(fx, "claimer.results", "h-1", NULL), 0);
  finish(fx, 0);
}

/* The held job of item id, or fails the test. */
static cl_job_t *held_job(wfx_t *fx, const char *id) {
  for (int i = 0; i < fx->nheld; i++)
    if (strcmp(cl_job_item_id(fx->held[i]), id) == 0)
      return fx->held[i];
  fail_msg("no held job for %s", id);
  return NULL;
}

/* The largest n a claim asked for (the "claimed" events' asked=). */
static int max_asked(const wfx_t *fx) {
  int m = 0;
  for (size_t i = 0; i < fx->ev.n; i++) {
    const char *l = fx->ev.lines[i];
    const char *a =
        strncmp(l, "claimed ", 8) == 0 ? strstr(l, " asked=") : NULL;
    if (a != NULL && atoi(a + 7) > m)
      m = atoi(a + 7);
  }
  return m;
}

/* The automatic prefetch (the default): jobs that end quickly (at the
 * fixture's next tick, within 10 ms) make the claims grow past
 * concurrency + concurrency/4, many items to a claim, never past
 * max(1024, 4 x concurrency) beyond what runs: 64 handlers finishing
 * within 10 ms each are 6,400 items/s, 64 of them in the 10 ms horizon. */
static void test_prefetch_grows_for_fast_jobs(void **state) {
  wfx_t *fx = *state;
  th_exec(fx->pg, "INSERT INTO claimer.items (item_id, queue) "
                  "SELECT 'c-' || g, 'pq' FROM generate_series(1, 5000) g");
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.concurrency = 64;
  worker_start(fx, &o, "pq");
  LT_RUN_UNTIL(&fx->lt, lt_events_count(&fx->ev, "completed", NULL) == 5000,
               60);
  int fast = max_asked(fx);
  print_message("fast jobs: claims asked for up to %d items\n", fast);
  assert_true(fast > 64 + 16);
  assert_true(fast <= 64 + 1024);
  finish(fx, 0);
}

/* ... and jobs that do not end keep it at concurrency/4. */
static void test_prefetch_small_for_slow_jobs(void **state) {
  wfx_t *fx = *state;
  for (int i = 1; i <= 6; i++) {
    char id[16];
    snprintf(id, sizeof id, "h-%d", i);
    enqueue(fx, id, "ph", NULL, 0);
  }
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.concurrency = 2;
  o.drain_s = 0.2; /* the third, started at the end, is stopped */
  worker_start(fx, &o, "ph");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 2, 10);
  lt_run_for(&fx->lt, 0.5);
  assert_int_equal(max_asked(fx), 2 + 1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims"), 3);
  for (int i = 0; i < 2; i++)
    assert_int_equal(cl_job_complete(fx->held[i], "{}"), 0);
  fx->nheld = 0;
  finish(fx, 0);
}

/* ... and when jobs that were fast turn slow, the items the prefetch
 * took for them wait behind busy slots where no other worker can take
 * them: once the oldest has waited a heartbeat interval, those past
 * concurrency/4 are given back, no attempt spent.  4,000 no-op items
 * grow the prefetch, then held ones (enqueued after them) fill the 32
 * slots and strand what was claimed beyond them. */
static void test_prefetch_stranded_given_back(void **state) {
  wfx_t *fx = *state;
  th_exec(fx->pg, "INSERT INTO claimer.items (item_id, queue) "
                  "SELECT 'c-' || g, 'ps' FROM generate_series(1, 4000) g");
  th_exec(fx->pg, "INSERT INTO claimer.items (item_id, queue) "
                  "SELECT 'h-' || g, 'ps' FROM generate_series(1, 200) g");
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.concurrency = 32;
  o.heartbeat_s = 0.3;
  o.drain_s = 0.2; /* the held ones end at the stop, completed late */
  worker_start(fx, &o, "ps");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 32, 60);
  long leased = th_long(fx->pg, "SELECT count(*) FROM claimer.claims");
  print_message("32 slots held, %ld leases (%ld waiting)\n", leased,
                leased - 32);
  assert_true(leased > 32 + 8); /* what the guard is for */
  assert_int_equal(lt_events_count(&fx->ev, "prefetch_given_back", NULL), 0);
  LT_RUN_UNTIL(&fx->lt,
               lt_events_count(&fx->ev, "prefetch_given_back", NULL) == 1, 5);
  lt_run_for(&fx->lt, 0.7); /* the releases' answers, two heartbeats */
  /* 32 running and concurrency/4 waiting are left leased; the rest are
   * ready again with no attempt spent, and are not claimed again while
   * nothing finishes. */
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims"),
                   32 + 8);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.items "
                                   "WHERE state = 'ready' AND attempts = 0"),
                   200 - 32 - 8);
  assert_int_equal(lt_events_count(&fx->ev, "prefetch_given_back", NULL), 1);
  /* Given back, not lost: the heartbeats after the releases neither
   * extend those leases nor report them lost. */
  assert_int_equal(lt_events_count(&fx->ev, "lease_lost", NULL), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.results"),
                   4000);
  finish(fx, 0);
}

/* Completes reported in one turn of the loop go in one batch: one
 * statement and one commit for all of them (the batch leaves at the end
 * of the turn; before, the first went alone and the rest after it).
 * A batch the database refuses (one result a trigger rejects) sends each
 * of its jobs alone: the others complete, the refused one ends its
 * attempt as a failure, as a complete sent alone would. */
static void test_completes_batched(void **state) {
  wfx_t *fx = *state;
  char id[32];
  for (int i = 1; i <= 12; i++) {
    snprintf(id, sizeof id, "h-%02d", i);
    enqueue(fx, id, "bq", NULL, 0);
  }
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.concurrency = 16;
  worker_start(fx, &o, "bq");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 12, 10);
  cl_job_t *jobs[12];
  for (int i = 0; i < 12; i++) {
    snprintf(id, sizeof id, "h-%02d", i + 1);
    jobs[i] = held_job(fx, id);
  }
  for (int i = 0; i < 12; i++) {
    assert_int_equal(cl_job_complete(jobs[i], "{\"b\": 1}"), 0);
    unhold(fx, jobs[i]);
  }
  LT_RUN_UNTIL(&fx->lt, lt_events_count(&fx->ev, "completed", NULL) == 12, 10);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.results"), 12);
  assert_int_equal(th_long(fx->pg, "SELECT count(DISTINCT xid) FROM "
                                   "claimer.results"),
                   1);

  th_exec(fx->pg,
          "CREATE FUNCTION public.refuse_r3() RETURNS trigger LANGUAGE "
          "plpgsql AS $$ BEGIN IF NEW.item_id = 'h-r3' THEN RAISE EXCEPTION "
          "'refused by the test'; END IF; RETURN NEW; END $$");
  th_exec(fx->pg, "CREATE TRIGGER refuse_r3 BEFORE INSERT ON claimer.results "
                  "FOR EACH ROW EXECUTE FUNCTION public.refuse_r3()");
  for (int i = 1; i <= 4; i++) {
    snprintf(id, sizeof id, "h-r%d", i);
    enqueue(fx, id, "bq", NULL, 0);
  }
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 4, 10);
  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof id, "h-r%d", i + 1);
    jobs[i] = held_job(fx, id);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(cl_job_complete(jobs[i], "{\"b\": 2}"), 0);
    unhold(fx, jobs[i]);
  }
  LT_RUN_UNTIL(&fx->lt,
               lt_events_count(&fx->ev, "completed", NULL) == 15 &&
                   lt_events_count(&fx->ev, "failed", "item=h-r3", NULL) == 1,
               10);
  assert_int_equal(lt_events_count(&fx->ev, "ack_batch_refused", "n=4", NULL),
                   1);
  assert_item(fx, "h-r1", "done", 1);
  assert_item(fx, "h-r2", "done", 1);
  assert_item(fx, "h-r4", "done", 1);
  assert_item(fx, "h-r3", "ready", 1);
  assert_int_equal(rows_of(fx, "claimer.items", "h-r3",
                           "last_error LIKE 'the result could not be "
                           "stored: %refused by the test%'"),
                   1);
  assert_int_equal(rows_of(fx, "claimer.results", "h-r3", NULL), 0);
  th_exec(fx->pg, "DROP TRIGGER refuse_r3 ON claimer.results");
  /* Its retry (after the backoff) would be held: stop before. */
  finish(fx, 0);
}

/* A complete and the claim it makes room for leave together: one
 * statement and one commit (COMPLETE_CLAIM), so the next item's claim
 * row was written by the transaction that wrote the result before it. */
static void test_complete_and_claim_in_one_commit(void **state) {
  wfx_t *fx = *state;
  enqueue(fx, "j-1", "jq", NULL, 0);
  enqueue(fx, "j-2", "jq", NULL, 0);
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  o.concurrency = 1;
  o.prefetch = 0;
  worker_start(fx, &o, "jq");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 1, 10);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims"), 1);
  cl_job_t *job = held_job(fx, "j-1");
  assert_int_equal(cl_job_complete(job, "{}"), 0);
  unhold(fx, job);
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 1, 10);
  job = held_job(fx, "j-2");
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims c "
                                   "JOIN claimer.results r ON r.item_id = "
                                   "'j-1' WHERE c.item_id = 'j-2' AND "
                                   "c.xmin::text::bigint = "
                                   "r.xid::text::bigint % 4294967296"),
                   1);
  assert_int_equal(cl_job_complete(job, "{}"), 0);
  unhold(fx, job);
  LT_RUN_UNTIL(&fx->lt, lt_events_count(&fx->ev, "completed", NULL) == 2, 10);
  finish(fx, 0);
}

/* The worker's backend is killed while a job runs: the worker reconnects
 * by itself, and the job's completion, reported after that, is recorded
 * with the lease it still holds. */
static void test_reconnects_and_acks(void **state) {
  wfx_t *fx = *state;
  enqueue(fx, "h-1", "rq", NULL, 0);
  cl_worker_opts_t o;
  opts_for(fx, &o, fx->dsn);
  worker_start(fx, &o, "rq");
  LT_RUN_UNTIL(&fx->lt, fx->nheld == 1, 10);
  assert_int_equal(lt_terminate(fx->pg, fx->app), 1);
  LT_RUN_UNTIL(&fx->lt, lt_events_count(&fx->ev, "db_connected", NULL) == 2,
               10);
  assert_int_equal(lt_events_count(&fx->ev, "db_disconnected", NULL), 1);
  assert_int_equal(cl_job_complete(fx->held[0], "{\"ok\": true}"), 0);
  fx->nheld = 0;
  LT_RUN_UNTIL(&fx->lt,
               lt_events_count(&fx->ev, "completed", "item=h-1", NULL) == 1,
               10);
  assert_item(fx, "h-1", "done", 1);
  assert_int_equal(fx->stops, 0);
  finish(fx, 0);
}

/* A database without the claimer schema: the worker stops by itself with
 * CL_ESCHEMA and says why. */
static void test_exits_without_schema(void **state) {
  wfx_t *fx = *state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "lw_noschema", 0, dsn, sizeof dsn), 0);
  cl_worker_opts_t o;
  opts_for(fx, &o, dsn);
  worker_start(fx, &o, "nq");
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 10);
  assert_int_equal(fx->exit_rc, CL_ESCHEMA);
  assert_non_null(strstr(fx->exit_why, "schema is missing"));
  assert_int_equal(lt_events_count(&fx->ev, "db_fatal", NULL), 1);
  lt_loop_finish(&fx->lt);
}

/* A connect_timeout libpq would refuse is refused when the worker is made
 * (the loop connection reads it; see test_loop_conn). */
static void test_new_refuses_bad_connect_timeout(void **state) {
  wfx_t *fx = *state;
  char dsn[1200];
  snprintf(dsn, sizeof dsn, "%s connect_timeout=soon", fx->dsn);
  cl_worker_opts_t o;
  opts_for(fx, &o, dsn);
  cl_worker_t *w = NULL;
  char err[256] = "";
  int rc = cl_worker_new(&w, &fx->lt.loop, &o, err, sizeof err);
  print_message("cl_worker_new: %s, err \"%s\"\n", cl_err_name(rc), err);
  assert_int_equal(rc, CL_EDSN);
  assert_null(w);
  /* worker.h promises a message with CL_EDSN. */
  assert_non_null(strstr(err, "connect_timeout"));
  lt_loop_finish(&fx->lt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_complete_fail_release, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_graceful_stop_with_running_jobs,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_timeout_stops_jobs, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_lease_lost_discards_result, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_prefetch_grows_for_fast_jobs, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_prefetch_small_for_slow_jobs, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_prefetch_stranded_given_back, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_completes_batched, setup, teardown),
      cmocka_unit_test_setup_teardown(test_complete_and_claim_in_one_commit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_reconnects_and_acks, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_exits_without_schema, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_new_refuses_bad_connect_timeout,
                                      setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("loop_worker", tests, th_group_setup,
                                     th_group_teardown);
}
