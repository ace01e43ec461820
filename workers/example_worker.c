/*
 * example_worker.c: a C service as a worker, with no process per item.  It
 * registers an in-process handler for a queue on its own libuv loop; the
 * handler answers each item after a delay on a timer (standing in for
 * asynchronous work: an HTTP call, a query), then reports the result from
 * the same loop.  SIGTERM or SIGINT drains and exits 0.
 *
 *   claimer-example-worker DSN QUEUE [CONCURRENCY [DELAY_MS]]
 *
 * DELAY_MS 0 answers at once: the benchmark's no-op handler.  -1 answers
 * at once with the wall clock at the handler's start as the result (a JSON
 * number of seconds), for bench_work's enqueue-to-start latency.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "claimer/worker.h"
#include "log.h"

typedef struct work {
  cl_job_t *job;
  uv_timer_t timer;
} work_t;

static long delay_ms;
static int exit_rc;

static void on_closed(uv_handle_t *h) { free(h->data); }

static void finish(work_t *wk) {
  char result[512];
  /* The payload is JSON already; the result embeds it. */
  snprintf(result, sizeof result, "{\"item\":\"%s\",\"attempt\":%d}",
           cl_job_item_id(wk->job), cl_job_attempt(wk->job));
  if (cl_job_complete(wk->job, result) != 0)
    (void)cl_job_fail(wk->job, "cannot store the result", 1, -1);
  uv_close((uv_handle_t *)&wk->timer, on_closed);
}

static void on_timer(uv_timer_t *t) { finish(t->data); }

/* Asked to stop early (lease lost, fenced, timeout, shutdown): give up the
 * work and say so; the worker decides what becomes of the report. */
static void on_stop(cl_job_t *job, void *arg, cl_stop_reason_t why) {
  work_t *wk = arg;
  (void)job;
  uv_timer_stop(&wk->timer);
  (void)cl_job_fail(wk->job, "stopped", 1, -1);
  (void)why;
  uv_close((uv_handle_t *)&wk->timer, on_closed);
}

static void on_job(cl_job_t *job, void *arg) {
  uv_loop_t *loop = arg;
  if (delay_ms < 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char now[64];
    snprintf(now, sizeof now, "%lld.%06ld", (long long)ts.tv_sec,
             ts.tv_nsec / 1000);
    if (cl_job_complete(job, now) != 0)
      (void)cl_job_fail(job, "cannot store the result", 1, -1);
    return;
  }
  if (delay_ms == 0) {
    if (cl_job_complete(job, "{\"ok\":true}") != 0)
      (void)cl_job_fail(job, "cannot store the result", 1, -1);
    return;
  }
  work_t *wk = calloc(1, sizeof *wk);
  if (wk == NULL) {
    (void)cl_job_fail(job, "out of memory", 1, -1);
    return;
  }
  wk->job = job;
  uv_timer_init(loop, &wk->timer);
  wk->timer.data = wk;
  cl_job_on_stop(job, on_stop, wk);
  uv_timer_start(&wk->timer, on_timer, (uint64_t)delay_ms, 0);
}

static cl_worker_t *worker;

static void on_exit_cb(void *arg, int rc, const char *why) {
  uv_signal_t *sigs = arg;
  worker = NULL;
  if (rc != 0) {
    fprintf(stderr, "example worker: %s\n", why);
    /* CL_EINVAL only comes from setup (a bad queue name): bad usage. */
    exit_rc = rc == CL_EINVAL ? 2 : 1;
  }
  uv_close((uv_handle_t *)&sigs[0], NULL);
  uv_close((uv_handle_t *)&sigs[1], NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (worker)
    cl_worker_stop(worker);
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: %s DSN QUEUE [CONCURRENCY [DELAY_MS]]\n", argv[0]);
    return 2;
  }
  int concurrency = argc > 3 ? atoi(argv[3]) : 8;
  delay_ms = argc > 4 ? atol(argv[4]) : 0;
  cl_log_setup(CL_LOG_LOGFMT, CL_LEVEL_INFO, 2);
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_signal_t sigs[2];
  cl_worker_opts_t o;
  cl_worker_opts_init(&o);
  o.dsn = argv[1];
  o.concurrency = concurrency;
  o.events = cl_log_events();
  o.on_exit = on_exit_cb;
  o.arg = sigs;
  char err[256] = "";
  int rc = cl_worker_new(&worker, &loop, &o, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "example worker: %s\n",
            rc == CL_ENOMEM ? "out of memory" : err);
    uv_loop_close(&loop);
    return rc == CL_ENOMEM ? 1 : 2;
  }
  /* The signals first: on_exit_cb closes them, however the worker ends. */
  uv_signal_init(&loop, &sigs[0]);
  uv_signal_init(&loop, &sigs[1]);
  uv_signal_start(&sigs[0], on_signal, SIGTERM);
  uv_signal_start(&sigs[1], on_signal, SIGINT);
  rc = cl_worker_add_queue(worker, argv[2], 1, on_job, &loop);
  if (rc == 0)
    rc = cl_worker_start(worker);
  if (rc != 0)
    /* Never started: the stop closes its handles, and on_exit_cb says
     * why (the queue's name, or out of memory) and sets the status. */
    cl_worker_stop(worker);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "example worker: handles left open at exit\n");
    return 1;
  }
  return exit_rc;
}
