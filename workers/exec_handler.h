/*
 * exec_handler.h: the handler that runs a command per job (see
 * exec_handler.c for the protocol between the worker and the command).
 */
#ifndef CLAIMER_EXEC_HANDLER_H
#define CLAIMER_EXEC_HANDLER_H

#include <uv.h>

#include "claimer/worker.h"
#include "guard.h"

typedef struct xjob xjob_t;

typedef struct xhandler {
  uv_loop_t *loop;
  char *command;       /* run by /bin/sh -c; owned by the caller */
  size_t result_max;   /* stdout bytes kept; more fails the job */
  size_t stderr_max;   /* stderr tail kept as the error */
  double kill_grace_s; /* SIGTERM, then SIGKILL after this */
  xjob_t *jobs;        /* children alive */
  guard_t *guard;      /* told of each child's group; NULL: none */
} xhandler_t;

/* The cl_job_start_cb: arg is the xhandler_t. */
void xhandler_start(cl_job_t *job, void *arg);
/* SIGKILLs every child's process group (the second signal). */
void xhandler_kill_all(xhandler_t *h);

#endif
