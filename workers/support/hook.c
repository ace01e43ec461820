/*
 * hook.c: alert hooks (hook.h).  A command runs as a child in its own
 * session so that a timeout kills everything it started; its stdin gets
 * the JSON and is closed, its stderr tail becomes the error.  An HTTP POST
 * runs with libcurl's easy interface on a thread of libuv's pool, so the
 * loop never waits on a slow endpoint.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claimer/claimer.h"
#include "hook.h"
#include "internal.h"
#include "proc.h"

enum { ERR_TAIL = 480 };

/* ------------------------------------------------------------------------ */
/* exec                                                                      */

struct cl__exec {
  uv_process_t proc;
  uv_pipe_t in, err;
  uv_timer_t timer;
  uv_write_t wr;
  char *json;
  char **env;
  char tail[ERR_TAIL + 1];
  size_t tail_len;
  int open; /* handles not yet closed */
  int spawned;
  int exited;
  int64_t status;
  int term_sig;
  int timed_out;
  char spawn_error[128];
  const char *what; /* "exec hook", "exec sink": leads the message */
  cl__hook_cb cb;   /* one of the two */
  cl__exec_cb ecb;
  void *arg;
};
typedef struct cl__exec xrun_t;

static void x_finish(xrun_t *x) {
  char msg[ERR_TAIL + 200];
  cl__exec_end_t end = CL__EXEC_OK;
  if (!x->spawned) {
    end = CL__EXEC_NOT_STARTED;
    snprintf(msg, sizeof msg, "%s: cannot start: %s", x->what, x->spawn_error);
  } else if (x->timed_out) {
    end = CL__EXEC_TIMED_OUT;
    snprintf(msg, sizeof msg, "%s: timed out%s%.*s", x->what,
             x->tail_len ? ": " : "", (int)x->tail_len, x->tail);
  } else if (x->term_sig != 0) {
    end = CL__EXEC_SIGNALED;
    snprintf(msg, sizeof msg, "%s: killed by signal %d%s%.*s", x->what,
             x->term_sig, x->tail_len ? ": " : "", (int)x->tail_len, x->tail);
  } else if (x->status != 0) {
    end = CL__EXEC_EXITED;
    snprintf(msg, sizeof msg, "%s: exit %d%s%.*s", x->what, (int)x->status,
             x->tail_len ? ": " : "", (int)x->tail_len, x->tail);
  } else {
    msg[0] = '\0';
  }
  /* One line: a stderr tail's newlines become spaces. */
  for (char *p = msg; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  if (x->ecb != NULL)
    x->ecb(x->arg, end, (int)x->status, end == CL__EXEC_OK ? NULL : msg);
  else
    x->cb(x->arg, end == CL__EXEC_OK, end == CL__EXEC_OK ? NULL : msg);
  free(x->json);
  free(x->env);
  free(x);
}

static void x_closed(uv_handle_t *h) {
  xrun_t *x = h->data;
  if (--x->open == 0)
    x_finish(x);
}

static void x_close(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, x_closed);
}

/* Closes the timer once the child is gone and its pipes are drained. */
static void x_maybe_done(xrun_t *x) {
  if (x->exited && uv_is_closing((uv_handle_t *)&x->err) &&
      uv_is_closing((uv_handle_t *)&x->in))
    x_close((uv_handle_t *)&x->timer);
}

static void x_on_timeout(uv_timer_t *t);

static void x_on_exit(uv_process_t *p, int64_t status, int sig) {
  xrun_t *x = p->data;
  x->exited = 1;
  x->status = status;
  x->term_sig = sig;
  x_close((uv_handle_t *)p);
  /* Give stderr a moment to drain; a grandchild still holding it open
   * must not keep the hook running. */
  if (!uv_is_closing((uv_handle_t *)&x->err))
    uv_timer_start(&x->timer, x_on_timeout, 200, 0);
  x_maybe_done(x);
}

static void x_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  static char scratch[4096];
  (void)h;
  (void)size;
  *buf = uv_buf_init(scratch, sizeof scratch);
}

static void x_on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  xrun_t *x = s->data;
  if (n < 0) {
    x_close((uv_handle_t *)s);
    x_maybe_done(x);
    return;
  }
  /* Keep the last ERR_TAIL bytes. */
  size_t take = (size_t)n;
  const char *src = buf->base;
  if (take >= ERR_TAIL) {
    src += take - ERR_TAIL;
    take = ERR_TAIL;
    x->tail_len = 0;
  } else if (x->tail_len + take > ERR_TAIL) {
    size_t drop = x->tail_len + take - ERR_TAIL;
    memmove(x->tail, x->tail + drop, x->tail_len - drop);
    x->tail_len -= drop;
  }
  memcpy(x->tail + x->tail_len, src, take);
  x->tail_len += take;
  /* Trailing newlines say nothing. */
  while (x->tail_len > 0 &&
         (x->tail[x->tail_len - 1] == '\n' || x->tail[x->tail_len - 1] == '\r'))
    x->tail_len--;
}

static void x_on_written(uv_write_t *w, int status) {
  xrun_t *x = w->data;
  (void)status; /* a child that does not read its stdin is its business */
  x_close((uv_handle_t *)&x->in);
  x_maybe_done(x);
}

static void x_on_timeout(uv_timer_t *t) {
  xrun_t *x = t->data;
  if (x->exited) {
    x_close((uv_handle_t *)&x->in);
    x_close((uv_handle_t *)&x->err);
    x_maybe_done(x);
    return;
  }
  x->timed_out = 1;
  /* The child leads its own session: kill all it started. */
  kill(-x->proc.pid, SIGKILL);
}

/* Runs cmd with json on stdin and, beside our environment less the
 * database's credentials (cl__child_env, which the worker's handlers get
 * too), the variables names[i]=vals[i].  Reports through cb or ecb. */
static int x_run(uv_loop_t *loop, const char *what, const char *cmd,
                 const char *json, const char *const *names,
                 const char *const *vals, size_t nenv, double timeout_s,
                 cl__hook_cb cb, cl__exec_cb ecb, void *arg, xrun_t **out) {
  xrun_t *x = calloc(1, sizeof *x);
  if (x == NULL)
    return CL_ENOMEM;
  x->what = what;
  x->ecb = ecb;
  x->json = cl__strdup(json);
  x->env = cl__child_env(names, vals, nenv);
  if (x->json == NULL || x->env == NULL) {
    free(x->json);
    free(x->env);
    free(x);
    return CL_ENOMEM;
  }
  x->cb = cb;
  x->arg = arg;
  if (out != NULL)
    *out = x; /* valid until the callback has run */
  uv_pipe_init(loop, &x->in, 0);
  uv_pipe_init(loop, &x->err, 0);
  uv_timer_init(loop, &x->timer);
  x->in.data = x->err.data = x->timer.data = x->proc.data = x->wr.data = x;
  x->open = 3;

  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&x->in;
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&x->err;
  char *args[] = {"/bin/sh", "-c", (char *)cmd, NULL};
  uv_process_options_t po = {0};
  po.file = "/bin/sh";
  po.args = args;
  po.env = x->env;
  po.stdio = stdio;
  po.stdio_count = 3;
  po.exit_cb = x_on_exit;
  po.flags = UV_PROCESS_DETACHED; /* setsid(): its own process group */
  int rc = uv_spawn(loop, &x->proc, &po);
  if (rc != 0) {
    snprintf(x->spawn_error, sizeof x->spawn_error, "%s", uv_strerror(rc));
    /* Reported from the close callbacks, never from inside this call.  A
     * failed uv_spawn has still put the handle on the loop. */
    x->exited = 1;
    x->open++;
    x_close((uv_handle_t *)&x->proc);
    x_close((uv_handle_t *)&x->in);
    x_close((uv_handle_t *)&x->err);
    x_close((uv_handle_t *)&x->timer);
    return 0;
  }
  x->spawned = 1;
  x->open++;
  uv_buf_t b = uv_buf_init(x->json, (unsigned)strlen(x->json));
  if (uv_write(&x->wr, (uv_stream_t *)&x->in, &b, 1, x_on_written) != 0)
    x_close((uv_handle_t *)&x->in);
  if (uv_read_start((uv_stream_t *)&x->err, x_alloc, x_on_err) != 0)
    x_close((uv_handle_t *)&x->err);
  uv_timer_start(&x->timer, x_on_timeout, (uint64_t)(timeout_s * 1000), 0);
  return 0;
}

int cl__hook_exec(uv_loop_t *loop, const char *cmd, const char *json,
                  const char *alert_id, const char *kind, const char *subject,
                  double timeout_s, cl__hook_cb cb, void *arg) {
  const char *const names[] = {"CLAIMER_ALERT_ID", "CLAIMER_ALERT_KIND",
                               "CLAIMER_ALERT_SUBJECT"};
  const char *const vals[] = {alert_id, kind, subject};
  return x_run(loop, "exec hook", cmd, json, names, vals, 3, timeout_s, cb,
               NULL, arg, NULL);
}

int cl__exec_run(uv_loop_t *loop, const char *what, const char *cmd,
                 const char *input, const char *const *names,
                 const char *const *vals, size_t nenv, double timeout_s,
                 cl__exec_cb cb, void *arg, cl__exec_t **out) {
  return x_run(loop, what, cmd, input, names, vals, nenv, timeout_s, NULL, cb,
               arg, out);
}

void cl__exec_kill(cl__exec_t *x) {
  if (x->spawned && !x->exited)
    kill(-x->proc.pid, SIGKILL);
}

/* ------------------------------------------------------------------------ */
/* HTTP                                                                      */

typedef struct hrun {
  uv_work_t work;
  char *url;
  char *json;
  long timeout_ms;
  int ok;
  char error[CURL_ERROR_SIZE + 64];
  cl__hook_cb cb;
  void *arg;
} hrun_t;

int cl__hook_http_init(void) {
  static int done;
  if (done)
    return 0;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return CL_ENOMEM;
  done = 1;
  return 0;
}

static size_t h_discard(char *p, size_t size, size_t n, void *arg) {
  (void)p;
  (void)arg;
  return size * n;
}

/* On a pool thread. */
static void h_work(uv_work_t *w) {
  hrun_t *h = w->data;
  char ebuf[CURL_ERROR_SIZE] = "";
  CURL *c = curl_easy_init();
  if (c == NULL) {
    snprintf(h->error, sizeof h->error, "http hook: cannot set up libcurl");
    return;
  }
  struct curl_slist *hdr = NULL, *more;
  more = curl_slist_append(hdr, "Content-Type: application/json");
  if (more != NULL)
    hdr = more;
  more = curl_slist_append(hdr, "Expect:"); /* no 100-continue wait */
  if (more != NULL)
    hdr = more;
  curl_easy_setopt(c, CURLOPT_URL, h->url);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, h->json);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(h->json));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "claimer/" CL_VERSION_STRING);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, h_discard);
  CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (rc != CURLE_OK)
    snprintf(h->error, sizeof h->error, "http hook: %s",
             ebuf[0] ? ebuf : curl_easy_strerror(rc));
  else if (code < 200 || code > 299)
    snprintf(h->error, sizeof h->error, "http hook: HTTP status %ld", code);
  else
    h->ok = 1;
  curl_slist_free_all(hdr);
  curl_easy_cleanup(c);
}

static void h_after(uv_work_t *w, int status) {
  hrun_t *h = w->data;
  (void)status;
  h->cb(h->arg, h->ok, h->ok ? NULL : h->error);
  free(h->url);
  free(h->json);
  free(h);
}

int cl__hook_http(uv_loop_t *loop, const char *url, const char *json,
                  double timeout_s, cl__hook_cb cb, void *arg) {
  hrun_t *h = calloc(1, sizeof *h);
  if (h == NULL)
    return CL_ENOMEM;
  h->url = cl__strdup(url);
  h->json = cl__strdup(json);
  h->timeout_ms = (long)(timeout_s * 1000);
  if (h->timeout_ms < 1)
    h->timeout_ms = 1;
  h->cb = cb;
  h->arg = arg;
  h->work.data = h;
  if (h->url == NULL || h->json == NULL ||
      uv_queue_work(loop, &h->work, h_work, h_after) != 0) {
    free(h->url);
    free(h->json);
    free(h);
    return CL_ENOMEM;
  }
  return 0;
}
