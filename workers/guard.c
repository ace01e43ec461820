/*
 * guard.c: the handlers' guard (see guard.h).  The guard process does
 * nothing but read its pipe, keep the set of groups the worker says are
 * running, and kill them when the pipe ends.  It is forked, not exec'd:
 * it runs only read(), write(), kill() and _exit() on memory of its own,
 * so it needs nothing of the worker's state.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* close_range, pipe2; the build defines it anyway */
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guard.h"

/* One message: +1 a group started, -1 it ended. */
typedef struct rec {
  int32_t op;
  int32_t pgid;
} rec_t;

/* The groups running, as the guard knows them: at most the worker's
 * concurrency (10000), in memory of the guard's own (no malloc after the
 * fork). */
enum { GROUPS_MAX = 16384 };
static pid_t groups[GROUPS_MAX];
static size_t ngroups;

static void add(pid_t g) {
  if (ngroups < GROUPS_MAX)
    groups[ngroups++] = g;
}

static void drop(pid_t g) {
  for (size_t i = 0; i < ngroups; i++)
    if (groups[i] == g) {
      groups[i] = groups[--ngroups];
      return;
    }
}

static void say(const char *msg) {
  ssize_t n = write(2, msg, strlen(msg));
  (void)n;
}

static void run_guard(int rfd) {
  /* Out of the worker's session and its process group, deaf to the
   * signals a person or a service manager sends to stop the worker. */
  setsid();
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_NAME, "claimer-guard", 0, 0, 0);
  /* Nothing of the worker's but the pipe and stderr (the worker's log):
   * no database socket, no listening socket, no handler's pipe. */
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
  }
  if (rfd > 3)
    close_range(3, (unsigned)rfd - 1, 0);
  close_range((unsigned)rfd + 1, ~0U, 0);
  rec_t r;
  size_t have = 0;
  for (;;) {
    ssize_t n = read(rfd, (char *)&r + have, sizeof r - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* the worker is gone */
    have += (size_t)n;
    if (have < sizeof r)
      continue;
    have = 0;
    if (r.op > 0)
      add((pid_t)r.pgid);
    else
      drop((pid_t)r.pgid);
  }
  size_t killed = 0;
  for (size_t i = 0; i < ngroups; i++)
    killed += kill(-groups[i], SIGKILL) == 0;
  if (killed > 0) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "claimer-guard: the worker died with %zu handler group%s "
             "running: killed\n",
             killed, killed == 1 ? "" : "s");
    say(msg);
  }
  _exit(0);
}

int guard_start(guard_t *g) {
  g->fd = -1;
  g->pid = -1;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return -1;
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    errno = e;
    return -1;
  }
  if (pid == 0) {
    close(fds[1]);
    run_guard(fds[0]);
  }
  close(fds[0]);
  g->fd = fds[1];
  g->pid = pid;
  return 0;
}

void guard_tell(guard_t *g, pid_t pgid, int started) {
  if (g == NULL || g->fd < 0)
    return;
  rec_t r = {started ? 1 : -1, (int32_t)pgid};
  for (;;) {
    ssize_t n = write(g->fd, &r, sizeof r); /* < PIPE_BUF: all or nothing */
    if (n == (ssize_t)sizeof r)
      return;
    if (n < 0 && errno == EINTR)
      continue;
    close(g->fd); /* the guard is gone (EPIPE): go on unguarded */
    g->fd = -1;
    return;
  }
}

void guard_stop(guard_t *g) {
  if (g->fd >= 0)
    close(g->fd);
  g->fd = -1;
  if (g->pid > 0)
    while (waitpid(g->pid, NULL, 0) < 0 && errno == EINTR)
      ;
  g->pid = -1;
}
