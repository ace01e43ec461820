/*
 * hook.h: running an alert hook on a libuv loop, for the reaper: a shell
 * command with the alert's JSON on stdin, or an HTTP POST of the JSON.
 * Neither blocks the loop: the command is a child process (its own process
 * group, killed at the timeout), the POST runs in libuv's thread pool.
 */
#ifndef CLAIMER_HOOK_H
#define CLAIMER_HOOK_H

#include <uv.h>

/* The outcome: ok 1, or 0 and what went wrong (secrets left out). */
typedef void (*cl__hook_cb)(void *arg, int ok, const char *error);

/* Runs /bin/sh -c cmd with json on stdin and CLAIMER_ALERT_ID,
 * CLAIMER_ALERT_KIND and CLAIMER_ALERT_SUBJECT in its environment; exit 0
 * is success.  stdout is discarded, the tail of stderr reported.  Returns
 * 0 (cb is then called exactly once, later) or CL_ENOMEM. */
int cl__hook_exec(uv_loop_t *loop, const char *cmd, const char *json,
                  const char *alert_id, const char *kind, const char *subject,
                  double timeout_s, cl__hook_cb cb, void *arg);

/* How a command run by cl__exec_run() ended. */
typedef enum cl__exec_end {
  CL__EXEC_OK,         /* exit 0 */
  CL__EXEC_EXITED,     /* exit status (non-zero) */
  CL__EXEC_SIGNALED,   /* killed by a signal (not ours) */
  CL__EXEC_TIMED_OUT,  /* we killed it at the timeout */
  CL__EXEC_NOT_STARTED /* it could not be started */
} cl__exec_end_t;

/* status: the exit status for CL__EXEC_EXITED; msg: what went wrong (the
 * stderr tail included), NULL for CL__EXEC_OK. */
typedef void (*cl__exec_cb)(void *arg, cl__exec_end_t end, int status,
                            const char *msg);

typedef struct cl__exec cl__exec_t;

/* Kills a command cl__exec_run() started (its whole session); its
 * callback follows with CL__EXEC_SIGNALED.  x is valid until then. */
void cl__exec_kill(cl__exec_t *x);

/* Runs /bin/sh -c cmd as cl__hook_exec does (its own session, killed at
 * the timeout, input on stdin, stdout discarded), with names[i]=vals[i]
 * added to the environment; what ("exec sink") leads the message.
 * Returns 0 (cb later, once; *out, may be NULL, the run until then) or
 * CL_ENOMEM. */
int cl__exec_run(uv_loop_t *loop, const char *what, const char *cmd,
                 const char *input, const char *const *names,
                 const char *const *vals, size_t nenv, double timeout_s,
                 cl__exec_cb cb, void *arg, cl__exec_t **out);

/* POSTs json to url (http or https) as application/json; a 2xx answer is
 * success; no redirects are followed.  Returns 0 (cb later, once) or
 * CL_ENOMEM. */
int cl__hook_http(uv_loop_t *loop, const char *url, const char *json,
                  double timeout_s, cl__hook_cb cb, void *arg);

/* Sets libcurl up once per process; call before the first cl__hook_http
 * (from the main thread).  Returns 0 or CL_ENOMEM. */
int cl__hook_http_init(void);

#endif
