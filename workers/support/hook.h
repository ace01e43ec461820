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

/* POSTs json to url (http or https) as application/json; a 2xx answer is
 * success; no redirects are followed.  Returns 0 (cb later, once) or
 * CL_ENOMEM. */
int cl__hook_http(uv_loop_t *loop, const char *url, const char *json,
                  double timeout_s, cl__hook_cb cb, void *arg);

/* Sets libcurl up once per process; call before the first cl__hook_http
 * (from the main thread).  Returns 0 or CL_ENOMEM. */
int cl__hook_http_init(void);

#endif
