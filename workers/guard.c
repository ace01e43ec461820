/*
 * guard.c: claimer-guard, which `claimer work` puts in front of every exec
 * handler so that a handler does not outlive its worker:
 *
 *   claimer-guard PPID PROGRAM [ARG...]
 *
 * The worker starts it as the leader of a process group of its own (the
 * handler's group, which the worker signals as a whole).  It asks the
 * kernel for SIGHUP when its parent dies, checks that its parent is still
 * PPID (it may have died before the request), then runs PROGRAM as its
 * child in the same group and waits.  When the worker dies, even by
 * SIGKILL, the guard SIGKILLs the whole group: the lease that the handler
 * was working under can no longer be fenced by anyone else (G7), and the
 * item will run again elsewhere once reaped.  Otherwise it exits as the
 * child did (the same status, or the same signal), so the worker sees the
 * handler's own outcome.  A SIGTERM sent to the group is the handler's: the
 * guard lets it through and waits for the child.
 *
 * Linux only (prctl PR_SET_PDEATHSIG).  No dependencies: it must start in
 * well under a millisecond, once per item.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

enum { GUARD_FAILED = 125 }; /* as env(1): the guard itself failed */

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: claimer-guard PPID PROGRAM [ARG...]\n");
    return GUARD_FAILED;
  }
  char *end = NULL;
  long ppid = strtol(argv[1], &end, 10);
  if (end == argv[1] || *end != '\0' || ppid <= 1) {
    fprintf(stderr, "claimer-guard: bad PPID \"%s\"\n", argv[1]);
    return GUARD_FAILED;
  }
  sigset_t waited;
  sigemptyset(&waited);
  sigaddset(&waited, SIGCHLD);
  sigaddset(&waited, SIGHUP);
  sigaddset(&waited, SIGTERM);
  sigaddset(&waited, SIGINT);
  sigset_t old;
  sigprocmask(SIG_BLOCK, &waited, &old);
  if (prctl(PR_SET_PDEATHSIG, SIGHUP) != 0) {
    fprintf(stderr, "claimer-guard: prctl: %s\n", strerror(errno));
    return GUARD_FAILED;
  }
  if (getppid() != (pid_t)ppid)
    return GUARD_FAILED; /* the worker is gone already: run nothing */

  pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "claimer-guard: fork: %s\n", strerror(errno));
    return GUARD_FAILED;
  }
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    execvp(argv[2], argv + 2);
    fprintf(stderr, "claimer-guard: %s: %s\n", argv[2], strerror(errno));
    _exit(127);
  }

  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&waited, &si);
    if (sig < 0)
      continue; /* EINTR */
    if (sig == SIGHUP && getppid() != (pid_t)ppid) {
      /* The worker died (the kernel's SIGHUP; this process now has
       * another parent).  Take the group down, this process included. */
      kill(0, SIGKILL);
      _exit(GUARD_FAILED);
    }
    if (sig != SIGCHLD)
      continue; /* the handler's to act on: it got the same signal */
    int st = 0;
    pid_t r = waitpid(child, &st, WNOHANG);
    if (r != child)
      continue;
    if (WIFEXITED(st))
      return WEXITSTATUS(st);
    /* Die by the same signal, so the worker reads the same outcome. */
    int term = WTERMSIG(st);
    signal(term, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, term);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    kill(getpid(), term);
    _exit(128 + term);
  }
}
