/*
 * exec_handler.c: the handler of `claimer work --exec`: one child process
 * per job.  The child is `/bin/sh -c COMMAND` in a session of its own (so a
 * stop can signal the whole group), with the payload on stdin and
 * CLAIMER_ITEM_ID, CLAIMER_ATTEMPT, CLAIMER_TOKEN, CLAIMER_QUEUE and
 * CLAIMER_IDEMPOTENCY_KEY in its environment.  Its exit says the outcome:
 *
 *   0           complete; stdout (at most result_max bytes) is the result,
 *               stored as is when it is JSON, else as a JSON string (""
 *               for no output);
 *   75          EX_TEMPFAIL: retry with backoff (an attempt is spent);
 *   other, or a signal it did not get from us: fail for good (dead), the
 *               tail of stderr kept as the error.
 *
 * A child we stop (timeout, lost or fenced lease, drain timeout) gets
 * SIGTERM, then SIGKILL after the grace; a timed-out or drained job is
 * retried with backoff.  Whatever the child left running in its group when
 * it ended is killed with it: nothing of an item outlives its job.  A
 * child that cannot be started at all (no file descriptors or processes
 * left) gives the item back without spending an attempt.
 *
 * The report waits for the end of both pipes, not only for the exit: a
 * deadline (the linger after the exit, the SIGKILL after a stop) first
 * reads what the pipes hold, then kills the group and waits for the ends
 * its death brings.  A deadline that ran while the loop was behind once
 * reported before reading output already in the pipe: exit 0 with an
 * empty result.  Each child's group is also registered with the worker's
 * guard (guard.h), which kills it should the worker die first.
 */
#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "claimer/claimer.h"
#include "exec_handler.h"
#include "log.h"
#include "proc.h"

typedef struct xjob {
  struct xjob *prev, *next;
  xhandler_t *h;
  cl_job_t *job;
  uv_process_t proc;
  uv_pipe_t in, out, err;
  uv_timer_t timer;
  uv_write_t wreq;
  int handles;
  int proc_init, spawned, exited, out_eof, err_eof, reported;
  int64_t status;
  int term_signal;
  cl_stop_reason_t stopped;
  char *outbuf;
  size_t outlen;
  int out_over;
  char *errbuf; /* a ring of the last stderr_max bytes */
  size_t errlen, errpos;
  char **env;
  char *payload;
  size_t result_max, stderr_max; /* the limits this job started with */
  int spawn_error;
} xjob_t;

static char scratch[65536];

static void on_closed(uv_handle_t *hd) {
  xjob_t *x = hd->data;
  if (--x->handles > 0)
    return;
  if (x->prev)
    x->prev->next = x->next;
  else
    x->h->jobs = x->next;
  if (x->next)
    x->next->prev = x->prev;
  free(x->outbuf);
  free(x->errbuf);
  free(x->env);
  free(x->payload);
  free(x);
}

static void close_all(xjob_t *x) {
  uv_handle_t *hs[] = {(uv_handle_t *)&x->proc, (uv_handle_t *)&x->in,
                       (uv_handle_t *)&x->out, (uv_handle_t *)&x->err,
                       (uv_handle_t *)&x->timer};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
    if (hs[i] == (uv_handle_t *)&x->proc && !x->proc_init) {
      x->handles--;
      continue;
    }
    if (!uv_is_closing(hs[i]))
      uv_close(hs[i], on_closed);
  }
}

/* The stderr tail, oldest byte first, as a C string (malloc'd). */
static char *err_tail(const xjob_t *x) {
  size_t n = x->errlen;
  char *s = malloc(n + 1);
  if (s == NULL)
    return NULL;
  size_t cap = x->stderr_max;
  size_t start = n < cap ? 0 : x->errpos;
  for (size_t i = 0; i < n; i++)
    s[i] = x->errbuf[(start + i) % (cap ? cap : 1)];
  s[n] = '\0';
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
    s[--n] = '\0';
  return s;
}

/* stdout as a JSON value: as is when it is one, else a JSON string of its
 * text (invalid UTF-8 replaced; no output is ""). */
static int make_result(xjob_t *x, char **out) {
  *out = NULL;
  size_t n = x->outlen;
  while (n > 0 && (x->outbuf[n - 1] == '\n' || x->outbuf[n - 1] == '\r'))
    n--;
  x->outbuf[n] = '\0';
  if (n > 0 && strlen(x->outbuf) == n &&
      cl_check_json(x->outbuf, n, NULL, 0) == 0) {
    *out = strdup(x->outbuf);
    return *out ? 0 : CL_ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    if (x->outbuf[i] == '\0')
      x->outbuf[i] = '?';
  for (long bad; (bad = cl_utf8_invalid_at(x->outbuf, n)) >= 0;)
    x->outbuf[bad] = '?';
  json_object *o = json_object_new_string_len(x->outbuf, (int)n);
  if (o == NULL)
    return CL_ENOMEM;
  *out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  json_object_put(o);
  return *out ? 0 : CL_ENOMEM;
}

static void report(xjob_t *x) {
  if (x->reported)
    return;
  x->reported = 1;
  if (x->spawned) /* its group has been ended (end_group) */
    guard_tell(x->h->guard, x->proc.pid, 0);
  uv_timer_stop(&x->timer);
  cl_job_t *job = x->job;
  char *tail = err_tail(x);
  size_t whylen = (tail ? strlen(tail) : 0) + 128;
  char *why = malloc(whylen);
  if (why == NULL) {
    free(tail);
    tail = NULL;
    whylen = 128;
    why = malloc(whylen);
  }
  if (why == NULL) {
    (void)cl_job_fail(job, "out of memory", 1, -1);
    x->job = NULL;
    close_all(x);
    return;
  }
  if (x->stopped == CL_STOP_TIMEOUT || x->stopped == CL_STOP_SHUTDOWN ||
      x->stopped == CL_STOP_LEASE_LOST || x->stopped == CL_STOP_FENCED) {
    snprintf(why, whylen, "handler stopped (%s)%s%s",
             x->stopped == CL_STOP_TIMEOUT    ? "timeout"
             : x->stopped == CL_STOP_SHUTDOWN ? "worker shutting down"
             : x->stopped == CL_STOP_FENCED   ? "lease about to expire"
                                              : "lease lost",
             tail && *tail ? ": " : "", tail ? tail : "");
    (void)cl_job_fail(job, why, 1, -1);
  } else if (x->term_signal != 0) {
    snprintf(why, whylen, "handler killed by signal %d%s%s", x->term_signal,
             tail && *tail ? ": " : "", tail ? tail : "");
    (void)cl_job_fail(job, why, 0, 0);
  } else if (x->status == 0 && x->out_over) {
    snprintf(why, whylen, "handler output is over the %zu-byte result limit",
             x->result_max);
    (void)cl_job_fail(job, why, 0, 0);
  } else if (x->status == 0) {
    char *result = NULL;
    if (make_result(x, &result) != 0 || cl_job_complete(job, result) != 0)
      (void)cl_job_fail(job, "out of memory while storing the result", 1, -1);
    free(result);
  } else if (x->status == 75) {
    snprintf(why, whylen, "handler asked for a retry (exit 75)%s%s",
             tail && *tail ? ": " : "", tail ? tail : "");
    (void)cl_job_fail(job, why, 1, -1);
  } else {
    snprintf(why, whylen, "handler exited with status %lld%s%s",
             (long long)x->status, tail && *tail ? ": " : "", tail ? tail : "");
    (void)cl_job_fail(job, why, 0, 0);
  }
  free(tail);
  free(why);
  x->job = NULL;
  close_all(x);
}

/* The job's group may outlive its shell (a command left in the
 * background): end it before the lease goes back, so no straggler works
 * on an item someone else may hold next. */
static void end_group(xjob_t *x) {
  if (x->spawned)
    uv_kill(-x->proc.pid, SIGKILL);
}

/* What the pipes carried. */
static void take_out(xjob_t *x, const char *buf, size_t n) {
  size_t cap = x->result_max;
  size_t take = n;
  if (x->outlen + take > cap) {
    x->out_over = 1;
    take = cap - x->outlen;
  }
  memcpy(x->outbuf + x->outlen, buf, take);
  x->outlen += take;
}

static void take_err(xjob_t *x, const char *buf, size_t n) {
  size_t cap = x->stderr_max;
  for (size_t i = 0; i < n && cap > 0; i++) {
    x->errbuf[x->errpos] = buf[i];
    x->errpos = (x->errpos + 1) % cap;
    if (x->errlen < cap)
      x->errlen++;
  }
}

/* Reads what a pipe holds now, without waiting (libuv's pipes are
 * non-blocking): a deadline that passes while the loop is behind must
 * not leave behind output that already arrived.  Sets *eof at the end of
 * the stream. */
static void drain(xjob_t *x, uv_pipe_t *p, int *eof,
                  void (*take)(xjob_t *, const char *, size_t)) {
  uv_os_fd_t fd;
  if (*eof || uv_fileno((uv_handle_t *)p, &fd) != 0)
    return;
  for (;;) {
    ssize_t n = read(fd, scratch, sizeof scratch);
    if (n > 0) {
      take(x, scratch, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      uv_read_stop((uv_stream_t *)p);
      *eof = 1;
    }
    return;
  }
}

static void maybe_report(xjob_t *x) {
  if (!(x->exited && x->out_eof && x->err_eof))
    return;
  end_group(x);
  report(x);
}

/* The group was killed and its pipes still have not ended (a process
 * stuck where SIGKILL cannot reach it yet): what arrived is all there is. */
static void on_last_call(uv_timer_t *t) {
  xjob_t *x = t->data;
  drain(x, &x->out, &x->out_eof, take_out);
  drain(x, &x->err, &x->err_eof, take_err);
  report(x);
}

/* The child has exited and a deadline passed (the linger, or the SIGKILL
 * of a stopped job): first what the pipes hold already; then, when
 * something of the group still holds them, the group is killed and the
 * report waits for the ends of the pipes, which its death brings, for up
 * to three seconds more.  The report never comes from a timer that ran
 * while output sat unread. */
static void settle_exited(xjob_t *x) {
  drain(x, &x->out, &x->out_eof, take_out);
  drain(x, &x->err, &x->err_eof, take_err);
  end_group(x);
  if (x->out_eof && x->err_eof) {
    report(x);
    return;
  }
  uv_timer_stop(&x->timer);
  uv_timer_start(&x->timer, on_last_call, 3000, 0);
}

/* After the child exits, its stdout may stay open in a grandchild it left
 * behind: do not wait for that longer than a second. */
static void on_linger(uv_timer_t *t) { settle_exited(t->data); }

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal) {
  xjob_t *x = p->data;
  x->exited = 1;
  x->status = status;
  x->term_signal = term_signal;
  if (x->stopped == 0) {
    uv_timer_stop(&x->timer);
    if (!(x->out_eof && x->err_eof))
      uv_timer_start(&x->timer, on_linger, 1000, 0);
  }
  /* A stopped job keeps its SIGKILL timer: the shell may be gone while
   * what it started still runs in the group, holding the pipes. */
  maybe_report(x);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  (void)hd;
  (void)suggested;
  *buf = uv_buf_init(scratch, sizeof scratch);
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  xjob_t *x = s->data;
  if (n < 0) {
    uv_read_stop(s);
    x->out_eof = 1;
    maybe_report(x);
    return;
  }
  take_out(x, buf->base, (size_t)n);
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  xjob_t *x = s->data;
  if (n < 0) {
    uv_read_stop(s);
    x->err_eof = 1;
    maybe_report(x);
    return;
  }
  take_err(x, buf->base, (size_t)n);
}

static void on_spawn_failed(uv_timer_t *t) {
  xjob_t *x = t->data;
  char why[256];
  snprintf(why, sizeof why, "cannot start the handler: %s",
           uv_strerror(x->spawn_error));
  x->reported = 1;
  (void)cl_job_release(x->job, why);
  x->job = NULL;
  close_all(x); /* a failed spawn's handle is closed too */
}

static void on_written(uv_write_t *req, int status) {
  xjob_t *x = req->data;
  (void)status; /* a child that does not read its stdin is its business */
  if (!uv_is_closing((uv_handle_t *)&x->in))
    uv_close((uv_handle_t *)&x->in, on_closed);
}

static void on_kill_timer(uv_timer_t *t) {
  xjob_t *x = t->data;
  if (x->spawned)
    uv_kill(-x->proc.pid, SIGKILL); /* the group, even if its leader is gone */
  if (x->exited)
    settle_exited(x);
  else
    uv_timer_start(&x->timer, on_linger, 1000, 0);
}

static void on_stop(cl_job_t *job, void *arg, cl_stop_reason_t why) {
  xjob_t *x = arg;
  (void)job;
  if (!x->spawned || x->reported)
    return;
  int first = x->stopped == 0;
  x->stopped = why;
  if (!first)
    return; /* the SIGKILL is already due; a new reason does not delay it */
  uv_kill(-x->proc.pid, SIGTERM);
  uv_timer_stop(&x->timer);
  uv_timer_start(&x->timer, on_kill_timer,
                 (uint64_t)(x->h->kill_grace_s * 1000), 0);
}

/* The child's environment: ours without the database's credentials
 * (cl__child_env, which the reaper's hooks get too), plus the job's five
 * variables. */
static int make_env(xjob_t *x, cl_job_t *job) {
  char attempt[16];
  snprintf(attempt, sizeof attempt, "%d", cl_job_attempt(job));
  const char *names[] = {"CLAIMER_ITEM_ID", "CLAIMER_ATTEMPT", "CLAIMER_TOKEN",
                         "CLAIMER_QUEUE", "CLAIMER_IDEMPOTENCY_KEY"};
  /* The idempotency key is the item_id: the same on every attempt, never
   * derived from a token (G10). */
  const char *vals[] = {cl_job_item_id(job), attempt, cl_job_token(job),
                        cl_job_queue(job), cl_job_item_id(job)};
  x->env = cl__child_env(names, vals, 5);
  return x->env != NULL ? 0 : -1;
}

void xhandler_start(cl_job_t *job, void *arg) {
  xhandler_t *h = arg;
  xjob_t *x = calloc(1, sizeof *x);
  if (x == NULL) {
    (void)cl_job_release(job, "out of memory starting the handler");
    return;
  }
  x->h = h;
  x->job = job;
  /* A SIGHUP may change the handler's limits; this job keeps its own. */
  x->result_max = h->result_max;
  x->stderr_max = h->stderr_max;
  x->outbuf = malloc(x->result_max + 1);
  x->errbuf = malloc(x->stderr_max ? x->stderr_max : 1);
  x->next = h->jobs;
  if (h->jobs)
    h->jobs->prev = x;
  h->jobs = x;
  uv_loop_t *loop = h->loop;
  uv_pipe_init(loop, &x->in, 0);
  uv_pipe_init(loop, &x->out, 0);
  uv_pipe_init(loop, &x->err, 0);
  uv_timer_init(loop, &x->timer);
  x->in.data = x->out.data = x->err.data = x->timer.data = x;
  x->proc.data = x;
  x->handles = 5;
  x->wreq.data = x;
  x->payload = strdup(cl_job_payload(job));
  if (x->outbuf == NULL || x->errbuf == NULL || x->payload == NULL ||
      make_env(x, job) != 0) {
    (void)cl_job_release(job, "out of memory starting the handler");
    x->reported = 1;
    close_all(x);
    return;
  }
  char *args[] = {"/bin/sh", "-c", h->command, NULL};
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&x->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&x->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&x->err;
  uv_process_options_t opts = {0};
  opts.file = "/bin/sh";
  opts.args = args;
  opts.env = x->env;
  opts.exit_cb = on_exit_cb;
  opts.flags = UV_PROCESS_DETACHED; /* its own process group */
  opts.stdio_count = 3;
  opts.stdio = stdio;
  int rc = uv_spawn(loop, &x->proc, &opts);
  x->proc_init = 1;
  if (rc != 0) {
    /* Reported from a timer, not from inside the start callback: failing
     * here would start the next job, and fail it, recursively. */
    x->spawn_error = rc;
    uv_timer_start(&x->timer, on_spawn_failed, 0, 0);
    return;
  }
  x->spawned = 1;
  /* Should the worker die without ending it, its guard will. */
  guard_tell(h->guard, x->proc.pid, 1);
  cl_job_on_stop(job, on_stop, x);
  uv_read_start((uv_stream_t *)&x->out, on_alloc, on_out);
  uv_read_start((uv_stream_t *)&x->err, on_alloc, on_err);
  uv_buf_t b = uv_buf_init(x->payload, (unsigned)strlen(x->payload));
  /* A child that exits without reading gets its pipe closed: EPIPE,
   * ignored. */
  if (uv_write(&x->wreq, (uv_stream_t *)&x->in, &b, 1, on_written) != 0)
    uv_close((uv_handle_t *)&x->in, on_closed);
}

void xhandler_kill_all(xhandler_t *h) {
  for (xjob_t *x = h->jobs; x; x = x->next)
    if (x->spawned)
      uv_kill(-x->proc.pid, SIGKILL);
}
