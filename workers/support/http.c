/*
 * http.c: the loop's HTTP client (http.h).  libcurl's multi interface in
 * its socket form: libcurl says which sockets to watch for what through
 * the socket callback, and when to call it back through the timer
 * callback; the loop watches (one uv_poll_t per socket, one uv_timer_t for
 * the whole client) and calls curl_multi_socket_action() when something
 * happens; after each call the finished transfers are read with
 * curl_multi_info_read() and answered.  libcurl is only ever called from
 * the loop's callbacks and from the public functions here, never from
 * inside its own callbacks, which only record (the header and body
 * callbacks) or move uv handles (the socket and timer callbacks).
 *
 * Lifetimes.  A request (req_t) lives from cl_http_post() until its
 * callback has returned.  A socket's poll handle (sock_t) lives from the
 * first time libcurl names the socket until its close callback, which
 * frees it; libcurl is told to forget it first (curl_multi_assign), so a
 * new socket on the same descriptor gets a handle of its own.  The client
 * lives until the last of its handles (the two timers, the polls) has gone
 * through its close callback: only then are the requests that closing
 * ended answered, closed_cb called and the client freed.
 */
#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "claimer/claimer.h"

enum {
  DEF_HOST_CONNECTIONS = 8,
  DEF_TOTAL_CONNECTIONS = 64,
  DEF_CONNECT_TIMEOUT_MS = 10000,
  DEF_MAX_BODY = 4096,
  FIELD_MAX = 128,        /* bytes kept of a Retry-After or Date value */
  DEADLINE_GRACE_MS = 50, /* libcurl's own timeout goes first */
  ERROR_MAX = CURL_ERROR_SIZE + 64,
  SECRET_N = 10 /* URL parts kept out of error texts */
};

typedef struct sock sock_t;
typedef struct req req_t;

/* One socket libcurl asked us to watch. */
struct sock {
  uv_poll_t poll;
  cl_http_t *h;
  curl_socket_t fd;
  sock_t *prev, *next; /* h->socks, until closed */
};

/* One POST, from cl_http_post() to its answer. */
struct req {
  cl_http_t *h;
  CURL *easy;
  struct curl_slist *headers;
  char *url;  /* for the error text's scrubbing */
  char *body; /* the request body, ours (libcurl only points at it) */
  cl_http_cb cb;
  void *arg;
  long timeout_ms;
  uint64_t start_ns, deadline_ns; /* uv_hrtime() */

  /* What came back, filled in by libcurl's callbacks. */
  long block_status; /* status line of the header block being read */
  int answered;      /* a final (non-1xx) header block is complete */
  char retry_after[FIELD_MAX];
  char date[FIELD_MAX];
  char *resp; /* max_body + 1 bytes once anything arrived */
  size_t resp_len;
  int truncated;
  char curl_error[CURL_ERROR_SIZE];

  /* The outcome, once known. */
  cl_http_result_t res;
  char error[ERROR_MAX];
  req_t *prev, *next; /* h->reqs while in flight, then h->ended */
};

struct cl_http {
  uv_loop_t *loop;
  CURLM *multi;         /* NULL once closing */
  uv_timer_t timer;     /* libcurl's timeout */
  uv_timer_t deadline;  /* the requests' own deadlines (see on_deadline) */
  uint64_t deadline_ns; /* when it is armed for, 0 when it is not */
  cl_http_opts_t opts;
  req_t *reqs; /* in flight */
  size_t n_reqs;
  req_t *ended, *ended_tail; /* ended by cl_http_close(), to answer */
  sock_t *socks;
  int open_handles; /* the timer and the polls, until their close callback */
  int closing;
  int finished;
  cl_http_closed_cb closed_cb;
  void *closed_arg;
};

const char *cl_http_class_name(cl_http_class_t cls) {
  switch (cls) {
#define CL__HTTP_CLASS_NAME(name, text)                                        \
  case CL_HTTP_##name:                                                         \
    return text;
    CL_HTTP_CLASS_MAP(CL__HTTP_CLASS_NAME)
#undef CL__HTTP_CLASS_NAME
  }
  return "unknown";
}

/* ------------------------------------------------------------------------ */
/* Process setup                                                             */

static int global_done;

int cl_http_global_init(void) {
  if (global_done)
    return 0;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return CL_ENOMEM;
  global_done = 1;
  return 0;
}

void cl_http_global_cleanup(void) {
  if (!global_done)
    return;
  curl_global_cleanup();
  global_done = 0;
}

/* ------------------------------------------------------------------------ */
/* Lists                                                                     */

static void req_link(req_t **head, req_t *r) {
  r->prev = NULL;
  r->next = *head;
  if (*head != NULL)
    (*head)->prev = r;
  *head = r;
}

static void req_unlink(req_t **head, req_t *r) {
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    *head = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

/* Appends r to the requests closing ended, answered in that order. */
static void ended_append(cl_http_t *h, req_t *r) {
  r->prev = h->ended_tail;
  r->next = NULL;
  if (h->ended_tail != NULL)
    h->ended_tail->next = r;
  else
    h->ended = r;
  h->ended_tail = r;
}

static void req_free(req_t *r) {
  if (r->easy != NULL)
    curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  free(r->url);
  free(r->body);
  free(r->resp);
  free(r);
}

/* ------------------------------------------------------------------------ */
/* Outcomes                                                                  */

/* Replaces every occurrence of secret in s (a NUL-terminated string in a
 * buffer of n bytes) with "***". */
static void scrub_one(char *s, size_t n, const char *secret) {
  size_t slen = strlen(secret);
  if (slen == 0)
    return;
  char out[ERROR_MAX];
  size_t o = 0;
  for (const char *p = s; *p != '\0' && o + 1 < sizeof out;) {
    if (strncmp(p, secret, slen) == 0) {
      for (const char *m = "***"; *m != '\0' && o + 1 < sizeof out; m++)
        out[o++] = *m;
      p += slen;
    } else {
      out[o++] = *p++;
    }
  }
  out[o] = '\0';
  snprintf(s, n, "%s", out);
}

/* Takes the URL's user, password, options, query and fragment out of s,
 * as written and decoded: libcurl's messages may quote parts of a URL,
 * and those parts may carry credentials or tokens. */
static void scrub(char *s, size_t n, const char *url) {
  CURLU *u = curl_url();
  if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
    curl_url_cleanup(u);
    return;
  }
  static const CURLUPart parts[] = {CURLUPART_USER, CURLUPART_PASSWORD,
                                    CURLUPART_OPTIONS, CURLUPART_QUERY,
                                    CURLUPART_FRAGMENT};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    for (int decode = 0; decode < 2; decode++) {
      char *part = NULL;
      if (curl_url_get(u, parts[i], &part, decode ? CURLU_URLDECODE : 0) ==
              CURLUE_OK &&
          part != NULL)
        scrub_one(s, n, part);
      curl_free(part);
    }
  }
  curl_url_cleanup(u);
}

/* Returns the seconds a Retry-After value asks for: delta-seconds as they
 * are (capped at INT_MAX), an HTTP-date (any of the three forms, which
 * curl_getdate() reads) less the response's Date when it has one (the
 * receiver's own clock, so that a skew between the clocks does not
 * count), less ours otherwise, and at least 0.  Returns -1 for an empty
 * or unreadable value. */
static long retry_after_seconds(const char *v, const char *date) {
  while (*v == ' ' || *v == '\t')
    v++;
  if (*v == '\0')
    return -1;
  if (isdigit((unsigned char)*v)) {
    const char *p = v;
    long long n = 0;
    while (isdigit((unsigned char)*p)) {
      if (n < INT_MAX)
        n = n * 10 + (*p - '0');
      p++;
    }
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p != '\0')
      return -1;
    return n > INT_MAX ? INT_MAX : (long)n;
  }
  /* Every HTTP-date form names its day and month and has a time of day;
   * curl_getdate() is lenient enough to read other things as dates. */
  int alpha = 0;
  for (const char *p = v; *p != '\0'; p++)
    alpha |= isalpha((unsigned char)*p) != 0;
  if (!alpha || strchr(v, ':') == NULL)
    return -1;
  time_t when = curl_getdate(v, NULL);
  if (when == -1)
    return -1;
  time_t base = date[0] != '\0' ? curl_getdate(date, NULL) : -1;
  if (base == -1)
    base = time(NULL);
  double d = difftime(when, base);
  if (d <= 0)
    return 0;
  return d > INT_MAX ? INT_MAX : (long)d;
}

/* 1 for libcurl errors that no retry can mend: the transfer could not be
 * set up here, whatever the receiver does. */
static int local_error(CURLcode rc) {
  switch (rc) {
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_FAILED_INIT:
  case CURLE_URL_MALFORMAT:
  case CURLE_NOT_BUILT_IN:
  case CURLE_FUNCTION_NOT_FOUND:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_UNKNOWN_OPTION:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
    return 1;
  default:
    return 0;
  }
}

static cl_http_class_t class_of_status(long status) {
  if (status >= 200 && status <= 299)
    return CL_HTTP_OK;
  if (status == 410)
    return CL_HTTP_GONE;
  if (status == 408 || status == 429 || (status >= 500 && status <= 599))
    return CL_HTTP_RETRY;
  return CL_HTTP_FAILED;
}

/* Fills r->res from what libcurl and the callbacks recorded.  rc is how
 * the transfer ended; aborted says cl_http_close() stopped it. */
static void settle(req_t *r, CURLcode rc, int aborted) {
  cl_http_result_t *res = &r->res;
  long code = 0, request_size = 0;
  curl_off_t uploaded = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &request_size);
  curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
  if (!aborted && rc == CURLE_OK)
    r->answered = 1; /* libcurl read a whole response */
  if (r->answered && code < 200)
    code = r->block_status;

  memset(res, 0, sizeof *res);
  res->sent = request_size > 0 || uploaded > 0 || r->answered;
  res->status = r->answered ? code : 0;
  res->curl_code = (int)rc;
  res->retry_after =
      r->answered ? retry_after_seconds(r->retry_after, r->date) : -1;
  if (r->resp != NULL)
    r->resp[r->resp_len] = '\0';
  res->body = r->resp != NULL ? r->resp : "";
  res->body_len = r->resp_len;
  res->body_truncated = r->truncated;
  res->total_s = (double)(uv_hrtime() - r->start_ns) / 1e9;

  const char *why =
      r->curl_error[0] != '\0' ? r->curl_error : curl_easy_strerror(rc);
  if (aborted) {
    res->cls = CL_HTTP_ABORTED;
    snprintf(r->error, sizeof r->error,
             "aborted: the HTTP client was closed %s",
             res->sent ? "after the request was sent" : "before it was sent");
  } else if (r->answered) {
    res->cls = class_of_status(res->status);
    if (res->cls == CL_HTTP_OK)
      r->error[0] = '\0';
    else if (rc != CURLE_OK)
      snprintf(r->error, sizeof r->error, "HTTP %ld (then: %s)", res->status,
               why);
    else
      snprintf(r->error, sizeof r->error, "HTTP %ld", res->status);
  } else {
    res->cls = res->sent         ? CL_HTTP_IN_DOUBT
               : local_error(rc) ? CL_HTTP_FAILED
                                 : CL_HTTP_RETRY;
    snprintf(r->error, sizeof r->error, "%s", why);
    /* libcurl's messages end with a line break now and then */
    size_t n = strlen(r->error);
    while (n > 0 && (r->error[n - 1] == '\n' || r->error[n - 1] == '\r'))
      r->error[--n] = '\0';
  }
  scrub(r->error, sizeof r->error, r->url);
  res->error = r->error;
}

/* ------------------------------------------------------------------------ */
/* libcurl's callbacks                                                       */

/* Copies the value of a header line (len bytes, no line break) named name
 * into out (FIELD_MAX bytes), trimmed, when the line is that header. */
static void take_field(const char *line, size_t len, const char *name,
                       char *out) {
  size_t nlen = strlen(name);
  if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
    return;
  const char *v = line + nlen + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  size_t n = (size_t)(end - v);
  if (n >= FIELD_MAX)
    n = FIELD_MAX - 1;
  memcpy(out, v, n);
  out[n] = '\0';
}

/* Each header line of each response, the status line and the blank line
 * that ends a block included.  A 1xx block is followed by another; only
 * the final block's fields are kept, and nothing after it (trailers). */
static size_t on_header(char *line, size_t size, size_t n, void *arg) {
  req_t *r = arg;
  size_t len = size * n, end = len;
  if (r->answered)
    return len;
  while (end > 0 && (line[end - 1] == '\r' || line[end - 1] == '\n'))
    end--;
  if (end == 0) {
    if (r->block_status >= 200)
      r->answered = 1;
    return len;
  }
  if (end > 5 && strncmp(line, "HTTP/", 5) == 0) {
    const char *p = memchr(line, ' ', end);
    long status = 0;
    if (p != NULL)
      for (p++; p < line + end && isdigit((unsigned char)*p); p++)
        status = status * 10 + (*p - '0');
    r->block_status = status;
    r->retry_after[0] = r->date[0] = '\0';
    return len;
  }
  take_field(line, end, "Retry-After", r->retry_after);
  take_field(line, end, "Date", r->date);
  return len;
}

/* The response body: the first max_body bytes are kept, the rest read and
 * dropped, so that the connection can be reused. */
static size_t on_body(char *data, size_t size, size_t n, void *arg) {
  req_t *r = arg;
  size_t len = size * n, max = r->h->opts.max_body;
  size_t take = max - r->resp_len < len ? max - r->resp_len : len;
  if (take < len)
    r->truncated = 1;
  if (take == 0)
    return len;
  if (r->resp == NULL && (r->resp = malloc(max + 1)) == NULL) {
    r->truncated = 1;
    return len;
  }
  memcpy(r->resp + r->resp_len, data, take);
  r->resp_len += take;
  return len;
}

static void on_sock_closed(uv_handle_t *handle);
static void maybe_finish(cl_http_t *h);

/* Stops watching s and closes its handle; freed in the close callback. */
static void sock_close(sock_t *s) {
  cl_http_t *h = s->h;
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    h->socks = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  s->prev = s->next = NULL;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void check_done(cl_http_t *h);
static void on_deadline(uv_timer_t *t);

/* The request a transfer belongs to (CURLOPT_PRIVATE). */
static req_t *req_of(CURL *easy) {
  char *p = NULL;
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
  return (req_t *)(void *)p;
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  sock_t *s = poll->data;
  cl_http_t *h = s->h;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  int running;
  /* s may be closed by this call (its close callback comes later). */
  curl_multi_socket_action(h->multi, s->fd, flags, &running);
  check_done(h);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what, or stop watching it. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                          void *socketp) {
  cl_http_t *h = userp;
  sock_t *s = socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      curl_multi_assign(h->multi, fd, NULL);
      sock_close(s);
    }
    return 0;
  }
  if (h->closing)
    return 0;
  if (s == NULL) {
    s = calloc(1, sizeof *s);
    if (s == NULL)
      return -1; /* libcurl then fails the transfers on this socket */
    if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->h = h;
    s->fd = fd;
    s->poll.data = s;
    s->next = h->socks;
    if (h->socks != NULL)
      h->socks->prev = s;
    h->socks = s;
    h->open_handles++;
    curl_multi_assign(h->multi, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  return uv_poll_start(&s->poll, events, on_poll) == 0 ? 0 : -1;
}

static void on_timer(uv_timer_t *t) {
  cl_http_t *h = t->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(h);
}

/* CURLMOPT_TIMERFUNCTION: call libcurl back in ms milliseconds (-1: never).
 * 0 is turned into 1: a libuv timer restarted at 0 from its own callback
 * would run again in the same pass over the timers. */
static int on_curl_timer(CURLM *multi, long ms, void *userp) {
  cl_http_t *h = userp;
  (void)multi;
  if (h->closing)
    return 0;
  if (ms < 0)
    uv_timer_stop(&h->timer);
  else
    uv_timer_start(&h->timer, on_timer, ms > 0 ? (uint64_t)ms : 1, 0);
  return 0;
}

/* Answers the transfers libcurl has finished, one by one; stops when a
 * callback closed the client (the rest are then answered by the close). */
static void check_done(cl_http_t *h) {
  CURLMsg *m;
  int left;
  while (!h->closing && (m = curl_multi_info_read(h->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    CURL *easy = m->easy_handle;
    CURLcode rc = m->data.result; /* m dies with the removal below */
    req_t *r = req_of(easy);
    settle(r, rc, 0);
    curl_multi_remove_handle(h->multi, easy);
    req_unlink(&h->reqs, r);
    h->n_reqs--;
    if (h->n_reqs == 0) { /* an idle client keeps the loop alive no more */
      uv_timer_stop(&h->deadline);
      h->deadline_ns = 0;
    }
    r->cb(r->arg, &r->res);
    req_free(r);
  }
}

/* Arms h->deadline for the earliest deadline of the requests in flight,
 * or stops it when there are none. */
static void arm_deadline(cl_http_t *h) {
  uint64_t first = 0;
  for (req_t *r = h->reqs; r != NULL; r = r->next)
    if (first == 0 || r->deadline_ns < first)
      first = r->deadline_ns;
  h->deadline_ns = first;
  if (first == 0) {
    uv_timer_stop(&h->deadline);
    return;
  }
  uint64_t now = uv_hrtime();
  uint64_t ms = first > now ? (first - now) / 1000000 + 1 : 1;
  uv_timer_start(&h->deadline, on_deadline, ms, 0);
}

/* The backstop for CURLOPT_TIMEOUT_MS.  libcurl (7.88) does not time out a
 * transfer parked while it waits for a free connection under the caps: it
 * stays parked until a connection frees, however long that takes.  So
 * every request also has a deadline of its own, its timeout and a little
 * more; one timer follows the earliest.  When it fires, libcurl first gets
 * to act on its own timeouts; a request still there past its deadline is
 * then taken out of libcurl and answered as timed out (in doubt if any of
 * it was sent, which does not happen while parked; retry otherwise). */
static void on_deadline(uv_timer_t *t) {
  cl_http_t *h = t->data;
  int running;
  h->deadline_ns = 0;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(h);
  while (!h->closing) {
    uint64_t now = uv_hrtime();
    req_t *r = h->reqs;
    while (r != NULL && r->deadline_ns > now)
      r = r->next;
    if (r == NULL)
      break;
    settle(r, CURLE_OPERATION_TIMEDOUT, 0);
    if (!r->answered) /* libcurl's text would name the wrong cause */
      snprintf(r->error, sizeof r->error,
               r->res.sent ? "no answer within %ld ms"
                           : "no connection free within %ld ms (the "
                             "connection caps were reached)",
               r->timeout_ms);
    curl_multi_remove_handle(h->multi, r->easy);
    req_unlink(&h->reqs, r);
    h->n_reqs--;
    r->cb(r->arg, &r->res);
    req_free(r);
  }
  if (!h->closing)
    arm_deadline(h);
}

/* ------------------------------------------------------------------------ */
/* The client                                                                */

int cl_http_new(cl_http_t **out, uv_loop_t *loop, const cl_http_opts_t *opts) {
  *out = NULL;
  cl_http_opts_t o = {0};
  if (opts != NULL)
    o = *opts;
  if (loop == NULL || o.max_host_connections < 0 ||
      o.max_total_connections < 0 || o.connect_timeout_ms < 0)
    return CL_EINVAL;
  if (o.max_host_connections == 0)
    o.max_host_connections = DEF_HOST_CONNECTIONS;
  if (o.max_total_connections == 0)
    o.max_total_connections = DEF_TOTAL_CONNECTIONS;
  if (o.connect_timeout_ms == 0)
    o.connect_timeout_ms = DEF_CONNECT_TIMEOUT_MS;
  if (o.max_body == 0)
    o.max_body = DEF_MAX_BODY;
  if (o.max_body > SIZE_MAX - 1)
    return CL_EINVAL;

  cl_http_t *h = calloc(1, sizeof *h);
  if (h == NULL)
    return CL_ENOMEM;
  h->loop = loop;
  h->opts = o;
  h->multi = curl_multi_init();
  if (h->multi == NULL) {
    free(h);
    return CL_ENOMEM;
  }
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                    o.max_host_connections);
  curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                    o.max_total_connections);
  curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, o.max_total_connections);
  /* Neither can fail on a live loop; were they to, nothing is left. */
  if (uv_timer_init(loop, &h->timer) != 0 ||
      uv_timer_init(loop, &h->deadline) != 0) {
    curl_multi_cleanup(h->multi);
    free(h);
    return CL_ENOMEM;
  }
  h->timer.data = h;
  h->deadline.data = h;
  h->open_handles = 2;
  *out = h;
  return 0;
}

size_t cl_http_in_flight(const cl_http_t *h) { return h->n_reqs; }

/* Returns 0 when url is an http or https URL libcurl can parse. */
static int check_url(const char *url) {
  CURLU *u = curl_url();
  if (u == NULL)
    return CL_ENOMEM;
  char *scheme = NULL;
  int rc = CL_EINVAL;
  if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0))
    rc = 0;
  curl_free(scheme);
  curl_url_cleanup(u);
  return rc;
}

/* Returns 0 when line is one "Name: value" header line. */
static int check_header(const char *line) {
  const char *colon = strchr(line, ':');
  if (colon == NULL || colon == line || strpbrk(line, "\r\n") != NULL)
    return CL_EINVAL;
  for (const char *p = line; p < colon; p++)
    if (*p == ' ' || *p == '\t')
      return CL_EINVAL;
  return 0;
}

/* Adds line to r's header list.  Returns 0 or CL_ENOMEM. */
static int add_header(req_t *r, const char *line) {
  struct curl_slist *l = curl_slist_append(r->headers, line);
  if (l == NULL)
    return CL_ENOMEM;
  r->headers = l;
  return 0;
}

/* Sets r->easy up for the POST.  Returns 0 or CL_ENOMEM. */
static int setup_easy(req_t *r, const char *url, size_t len, long timeout_ms) {
  const cl_http_opts_t *o = &r->h->opts;
  CURL *c = r->easy;
  long connect_ms =
      o->connect_timeout_ms < timeout_ms ? o->connect_timeout_ms : timeout_ms;
  int bad = 0;
  bad |= curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") !=
         CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
  /* Verification is libcurl's default; said here so that nobody wonders. */
  bad |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, "claimer/" CL_VERSION_STRING) !=
         CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 60L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 20L) != CURLE_OK;
  /* A proxy's CONNECT answer must not pass for the receiver's. */
  bad |= curl_easy_setopt(c, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L) != CURLE_OK;
  if (o->no_reuse)
    bad |= curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) !=
         CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_HEADERDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->curl_error) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_PRIVATE, (char *)r) != CURLE_OK;
  return bad ? CL_ENOMEM : 0;
}

int cl_http_post(cl_http_t *h, const char *url, const char *const *headers,
                 const void *body, size_t len, long timeout_ms, cl_http_cb cb,
                 void *arg) {
  if (h == NULL || url == NULL || cb == NULL || timeout_ms <= 0 ||
      (body == NULL && len > 0))
    return CL_EINVAL;
  if (h->closing)
    return -ECANCELED;
  int rc = check_url(url);
  if (rc != 0)
    return rc;
  int has_type = 0;
  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
    if (check_header(headers[i]) != 0)
      return CL_EINVAL;
    has_type |= strncasecmp(headers[i], "Content-Type:", 13) == 0;
  }

  req_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return CL_ENOMEM;
  r->h = h;
  r->cb = cb;
  r->arg = arg;
  r->url = strdup(url);
  r->body = malloc(len > 0 ? len : 1);
  r->easy = curl_easy_init();
  rc = r->url == NULL || r->body == NULL || r->easy == NULL ? CL_ENOMEM : 0;
  if (rc == 0 && len > 0)
    memcpy(r->body, body, len);
  for (size_t i = 0; rc == 0 && headers != NULL && headers[i] != NULL; i++)
    rc = add_header(r, headers[i]);
  if (rc == 0 && !has_type)
    rc = add_header(r, "Content-Type: application/json");
  if (rc == 0)
    rc = add_header(r, "Expect:"); /* no wait for 100-continue */
  if (rc == 0)
    rc = setup_easy(r, url, len, timeout_ms);
  r->timeout_ms = timeout_ms;
  r->start_ns = uv_hrtime();
  r->deadline_ns =
      r->start_ns + ((uint64_t)timeout_ms + DEADLINE_GRACE_MS) * 1000000;
  if (rc == 0 && curl_multi_add_handle(h->multi, r->easy) != CURLM_OK)
    rc = CL_ENOMEM;
  if (rc != 0) {
    req_free(r);
    return rc;
  }
  req_link(&h->reqs, r);
  h->n_reqs++;
  if (h->deadline_ns == 0 || r->deadline_ns < h->deadline_ns) {
    uv_timer_start(&h->deadline, on_deadline,
                   (uint64_t)timeout_ms + DEADLINE_GRACE_MS, 0);
    h->deadline_ns = r->deadline_ns;
  }
  return 0;
}

/* Once the last handle is closed: the requests closing ended are answered,
 * then closed_cb, then h is freed. */
static void maybe_finish(cl_http_t *h) {
  if (!h->closing || h->open_handles > 0 || h->finished)
    return;
  h->finished = 1;
  while (h->ended != NULL) {
    req_t *r = h->ended;
    h->ended = r->next;
    if (h->ended == NULL)
      h->ended_tail = NULL;
    r->cb(r->arg, &r->res);
    req_free(r);
  }
  if (h->closed_cb != NULL)
    h->closed_cb(h->closed_arg);
  free(h);
}

static void on_sock_closed(uv_handle_t *handle) {
  sock_t *s = handle->data;
  cl_http_t *h = s->h;
  free(s);
  h->open_handles--;
  maybe_finish(h);
}

static void on_timer_closed(uv_handle_t *handle) {
  cl_http_t *h = handle->data;
  h->open_handles--;
  maybe_finish(h);
}

void cl_http_close(cl_http_t *h, cl_http_closed_cb closed_cb, void *arg) {
  if (h == NULL || h->closing)
    return;
  h->closing = 1;
  h->closed_cb = closed_cb;
  h->closed_arg = arg;
  /* Transfers libcurl has finished but nobody has read yet (when this is
   * called from a request's callback) keep their outcome. */
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    CURL *easy = m->easy_handle;
    CURLcode rc = m->data.result;
    req_t *r = req_of(easy);
    settle(r, rc, 0);
    curl_multi_remove_handle(h->multi, easy);
    req_unlink(&h->reqs, r);
    h->n_reqs--;
    ended_append(h, r);
  }
  while (h->reqs != NULL) {
    req_t *r = h->reqs;
    settle(r, CURLE_OK, 1);
    curl_multi_remove_handle(h->multi, r->easy);
    req_unlink(&h->reqs, r);
    h->n_reqs--;
    ended_append(h, r);
  }
  /* The idle connections' sockets, if libcurl still watches any: their
   * handles are closed before libcurl closes the descriptors. */
  while (h->socks != NULL) {
    sock_t *s = h->socks;
    curl_multi_assign(h->multi, s->fd, NULL);
    sock_close(s);
  }
  curl_multi_cleanup(h->multi);
  h->multi = NULL;
  uv_close((uv_handle_t *)&h->timer, on_timer_closed);
  uv_close((uv_handle_t *)&h->deadline, on_timer_closed);
}
