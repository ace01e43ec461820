/*
 * guard.h: the handlers' guard, one small process per `claimer work` that
 * outlives the worker and kills the process groups of its running
 * handlers when the worker dies without doing it itself (SIGKILL, a
 * crash, the OOM killer).  Each handler runs in a session of its own, so
 * nothing else would end it: it would run on beside the item's next
 * holder.
 *
 * The worker tells the guard, over a pipe, each handler group it starts
 * and each it has ended (8 bytes each, atomic writes); the guard reads
 * them and, at the end of the pipe (the worker's death closes it: the
 * write end is close-on-exec, so no child holds it), SIGKILLs every group
 * still registered, then exits.  A worker that exits normally has ended
 * every group itself and closes the pipe: the guard kills nothing.  The
 * guard is in a session of its own too, so a kill of the worker's process
 * group does not take it along; it ignores SIGINT, SIGTERM and SIGHUP
 * (a terminal's ^C or a service manager's stop reach the worker, which
 * drains), not SIGKILL.
 */
#ifndef CLAIMER_GUARD_H
#define CLAIMER_GUARD_H

#include <sys/types.h>

typedef struct guard {
  int fd;    /* the pipe's write end; -1 without a guard */
  pid_t pid; /* the guard process */
} guard_t;

/* Forks the guard (call it before the loop starts threads).  Returns 0,
 * or -1 with errno set (g->fd is then -1: handlers run unguarded). */
int guard_start(guard_t *g);
/* Registers (started 1) or unregisters (0) the process group pgid.  A
 * guard that is gone is not an error: the worker goes on unguarded. */
void guard_tell(guard_t *g, pid_t pgid, int started);
/* Closes the pipe and reaps the guard, which has nothing left to kill.
 * Safe without a guard. */
void guard_stop(guard_t *g);

#endif
