/*
 * http.h: an HTTP client on a libuv loop, for the programs' outgoing POSTs
 * (the webhook sink, later the alert hook).  Many requests run at once on
 * one loop and one thread: libcurl's multi interface is driven by the
 * loop's own sockets (a uv_poll_t per socket libcurl names) and one
 * uv_timer_t (libcurl's timeout), never by a thread per request.
 * Connections are kept alive and reused, within a cap per host and in
 * total.  Each request is answered once with an outcome that says what the
 * receiver can have seen: the status, a class for the sender's policy
 * (sent, gone, retry, failed, in doubt), Retry-After in seconds, the first
 * bytes of the body, and an error text that never holds the URL's
 * credentials or query.
 *
 * Words.  A request is "sent" once libcurl has handed at least one byte of
 * it to the connection (the kernel, or the TLS layer above it): from then
 * on the receiver may have acted on it.  It is "answered" when a complete
 * final (non-1xx) header block came back.  A request that was sent and not
 * answered is "in doubt": the receiver may or may not have acted, and only
 * an idempotency key lets it be sent again safely.
 *
 * How "sent" is told, with libcurl: CURLINFO_REQUEST_SIZE (bytes of the
 * request libcurl wrote to the connection; it only counts what a send()
 * accepted) or CURLINFO_SIZE_UPLOAD_T (body bytes written, which also
 * covers a request whose first write came back short) greater than 0.
 * Both stay 0 when the transfer never got a connection (refused, DNS
 * failure, TLS handshake or certificate refused, still waiting for a free
 * connection under the caps), so those failures are safe to retry.  The
 * CURLcode is not used for this: a timeout (CURLE_OPERATION_TIMEDOUT) can
 * come before or after sending, and so can a reset.  One thing libcurl
 * does on its own: when a request sent on a reused keep-alive connection
 * gets nothing back at all (the server had closed it), libcurl sends it
 * again once on a new connection; the counters then include the first
 * try, so such a request, if it fails again, is in doubt.  If the second
 * try is answered, the receiver may have seen the request twice: the
 * idempotency key covers that too.
 *
 * Classes (cl_http_class_t), decided in this order:
 *   - ABORTED: cl_http_close() was called before the request ended; `sent`
 *     says whether the receiver may have seen it.
 *   - answered: 2xx OK; 410 GONE; 408, 429 and 5xx RETRY; anything else
 *     (3xx, since redirects are never followed, other 4xx, 1xx finals)
 *     FAILED.  The status decides even when libcurl failed afterwards
 *     (the body was cut or timed out): the receiver has given its verdict.
 *   - not answered and sent: IN_DOUBT (a timeout, a connection cut after
 *     the request went out, an empty or garbled reply).
 *   - not sent: RETRY for connection errors (refused, unreachable, DNS,
 *     TLS, a timeout before any byte went out); FAILED for errors a retry
 *     cannot mend (a URL libcurl rejects, a feature it lacks).
 *
 * Every function returns 0 or a negative CL_E* code (or a negated errno);
 * when a function returns an error its callback is never called.
 * Everything runs on the loop's thread.
 */
#ifndef CLAIMER_HTTP_H
#define CLAIMER_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct cl_http cl_http_t;

/* XX(NAME, name): the classes of an outcome (see above). */
#define CL_HTTP_CLASS_MAP(XX)                                                  \
  XX(OK, "ok")                                                                 \
  XX(GONE, "gone")                                                             \
  XX(RETRY, "retry")                                                           \
  XX(FAILED, "failed")                                                         \
  XX(IN_DOUBT, "in_doubt")                                                     \
  XX(ABORTED, "aborted")

typedef enum cl_http_class {
#define CL__HTTP_CLASS_ENUM(name, text) CL_HTTP_##name,
  CL_HTTP_CLASS_MAP(CL__HTTP_CLASS_ENUM)
#undef CL__HTTP_CLASS_ENUM
} cl_http_class_t;

/* Returns the static lower-case name of cls ("in_doubt"), or "unknown". */
const char *cl_http_class_name(cl_http_class_t cls);

/* What a request came to.  Handed to its callback; the strings are
 * borrowed and valid only during the call. */
typedef struct cl_http_result {
  cl_http_class_t cls;
  long status;       /* the final HTTP status, 0 when none was received */
  long retry_after;  /* seconds the receiver asked to wait (its Retry-After,
                        either form; a date in the past gives 0), -1 absent */
  int sent;          /* 1 when the request may have reached the receiver */
  int curl_code;     /* the CURLcode the transfer ended with (0: none) */
  const char *error; /* "" for OK; else one line, without the URL's user,
                        password or query */
  const char *body;  /* the first max_body bytes of the response body, with a
                        NUL after them (the body itself may hold NULs) */
  size_t body_len;
  int body_truncated; /* 1 when the body was longer than what is kept */
  double total_s;     /* from cl_http_post() to the end, in seconds */
} cl_http_result_t;

/* Called exactly once per accepted request, from the loop, never from
 * inside cl_http_post().  It may post more requests, or close the client
 * (the requests still in flight are then answered ABORTED, later). */
typedef void (*cl_http_cb)(void *arg, const cl_http_result_t *res);
/* Called once when the client is closed: every request answered, every
 * handle closed, the memory freed. */
typedef void (*cl_http_closed_cb)(void *arg);

/* Options for cl_http_new(); a field left 0 takes its default. */
typedef struct cl_http_opts {
  long max_host_connections;  /* per host and port (default 8) */
  long max_total_connections; /* in all (default 64); also the number of
                                 idle connections kept for reuse */
  long connect_timeout_ms;    /* default 10000, never more than a request's
                                 own timeout */
  size_t max_body;            /* response bytes kept (default 4096) */
  int no_reuse;               /* 1: a new connection for every request */
} cl_http_opts_t;

/* Sets libcurl up for the process: call once from the main thread before
 * any other thread starts and before the first cl_http_new().  Returns 0
 * or CL_ENOMEM.  Calling it again does nothing. */
int cl_http_global_init(void);
/* Releases what cl_http_global_init() set up (for leak checkers at exit):
 * call from the main thread when no client is left.  Optional. */
void cl_http_global_cleanup(void);

/* Creates a client on loop (borrowed: it must outlive the client) with
 * opts (copied; NULL for the defaults).  On success *out is the client,
 * which cl_http_close() ends; on failure *out is NULL and nothing is left
 * on the loop.  Returns 0, CL_EINVAL (a negative option) or CL_ENOMEM. */
int cl_http_new(cl_http_t **out, uv_loop_t *loop, const cl_http_opts_t *opts);

/* POSTs len bytes of body (copied; may be NULL when len is 0) to url (an
 * http:// or https:// URL, copied; TLS is verified, redirects are never
 * followed).  headers is a NULL-terminated array of "Name: value" lines
 * (copied; may be NULL); "Content-Type: application/json" is added unless
 * one is given, "Expect:" is always sent empty (no 100-continue wait), and
 * the User-Agent is claimer/VERSION.  timeout_ms (> 0) bounds the whole
 * request, from this call on, waiting for a free connection included (a
 * request still waiting for one is answered within some 50 ms of it).
 * Returns 0 (cb(arg, ...) is then called exactly once, later), CL_EINVAL
 * (a malformed URL, another scheme, a header with a line break or no
 * colon, timeout_ms <= 0), -ECANCELED when the client is closing, or
 * CL_ENOMEM; cb is never called when it returns an error. */
int cl_http_post(cl_http_t *h, const char *url, const char *const *headers,
                 const void *body, size_t len, long timeout_ms, cl_http_cb cb,
                 void *arg);

/* Requests in flight (accepted and not yet answered). */
size_t cl_http_in_flight(const cl_http_t *h);

/* Starts closing h: what is in flight is stopped (and answered ABORTED,
 * except for requests whose outcome libcurl already had, which get it),
 * every connection is closed, and once every uv handle is closed the
 * callbacks run, on a later turn of the loop: the requests' callbacks,
 * then closed_cb(arg) (closed_cb may be NULL).  h is freed after closed_cb
 * and must not be used once cl_http_close() has been called, except by
 * cl_http_post() from inside those callbacks (it returns -ECANCELED).
 * Calling it again, or on NULL, does nothing. */
void cl_http_close(cl_http_t *h, cl_http_closed_cb closed_cb, void *arg);

#endif
