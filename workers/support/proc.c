/*
 * proc.c: running PostgreSQL's server programs for libclaimer.  The
 * embedded server and the test harness both need to find initdb and pg_ctl,
 * to run them (as an unprivileged user when we are root, since the server
 * refuses to run as root), to create directories that user owns, and to
 * quote the end of a log when something fails.  Programs are run from an
 * argument vector, never through a shell.  The child between fork and exec
 * only makes async-signal-safe calls (the caller may have threads, libuv's
 * among them), so everything it needs (the user's groups, the environment,
 * the open files) is prepared by the parent; a close-on-exec pipe carries
 * the reason back when the child cannot exec.
 */
#include "proc.h"
#include "claimer/claimer.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TAIL_LINES 6
#define TAIL_BYTES 1024

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the formatted message into err (truncated), when there is one. */
static void errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;

  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Copies src into dst (n bytes).  Returns 0, or -1 when it does not fit. */
static int copy_str(char *dst, size_t n, const char *src) {
  size_t len = strlen(src);

  if (len >= n)
    return -1;
  memcpy(dst, src, len + 1);
  return 0;
}

/* Returns the last path component of path (a pointer into it). */
static const char *base_name(const char *path) {
  const char *slash = strrchr(path, '/');

  return slash != NULL ? slash + 1 : path;
}

/* The parts of a passwd entry we keep. */
typedef struct user {
  char name[256];
  char home[PATH_MAX];
  uid_t uid;
  gid_t gid;
} user_t;

/* Looks up the user called name, or with id uid when name is NULL.  Returns
 * 0 and fills u, -1 when there is no such user, or a positive errno. */
static int lookup_user(const char *name, uid_t uid, user_t *u) {
  struct passwd pw;
  struct passwd *found = NULL;
  size_t size = 16384;
  char *buf;
  int rc;

  for (;;) {
    buf = malloc(size);
    if (buf == NULL)
      return ENOMEM;
    if (name != NULL)
      rc = getpwnam_r(name, &pw, buf, size, &found);
    else
      rc = getpwuid_r(uid, &pw, buf, size, &found);
    if (rc != ERANGE || size >= (1u << 20))
      break;
    free(buf);
    size *= 4;
  }
  if (rc != 0 || found == NULL) {
    free(buf);
    /* glibc reports "no such user" as 0 with found NULL, others as ENOENT. */
    return (rc == 0 || rc == ENOENT || rc == ESRCH) ? -1 : rc;
  }
  rc = copy_str(u->name, sizeof u->name, pw.pw_name);
  if (pw.pw_dir == NULL || pw.pw_dir[0] != '/' ||
      copy_str(u->home, sizeof u->home, pw.pw_dir) != 0)
    strcpy(u->home, "/");
  u->uid = pw.pw_uid;
  u->gid = pw.pw_gid;
  free(buf);
  return rc == 0 ? 0 : ENAMETOOLONG;
}

/* Returns 1 when dir holds executable pg_ctl and initdb, else 0. */
static int has_server_programs(const char *dir) {
  char path[PATH_MAX];

  if (snprintf(path, sizeof path, "%s/pg_ctl", dir) >= (int)sizeof path ||
      access(path, X_OK) != 0)
    return 0;
  if (snprintf(path, sizeof path, "%s/initdb", dir) >= (int)sizeof path ||
      access(path, X_OK) != 0)
    return 0;
  return 1;
}

/* Parses the version directory name of /usr/lib/postgresql/<v>/bin into a
 * number that orders versions ("9.6" < "10" < "15").  Returns -1 when it is
 * not a version. */
static long version_rank(const char *bindir) {
  const char *v = bindir + strlen("/usr/lib/postgresql/");
  char *end;
  long major;
  long minor = 0;

  if (*v < '0' || *v > '9')
    return -1;
  major = strtol(v, &end, 10);
  if (*end == '.') {
    minor = strtol(end + 1, &end, 10);
  }
  if (strcmp(end, "/bin") != 0 || major < 0 || major > 100000 || minor < 0 ||
      minor > 999)
    return -1;
  return major * 1000 + minor;
}

/* ------------------------------------------------------------------------ */
/* Finding the programs and the user                                         */

int cl__pg_bindir(char *out, size_t n, char *err, size_t errlen) {
  const char *env = getenv("CLAIMER_PG_BINDIR");
  const char *path_env;
  glob_t g;
  long best_rank = -1;
  char best[PATH_MAX] = "";

  if (env != NULL && env[0] != '\0') {
    char dir[PATH_MAX];
    size_t len;

    if (copy_str(dir, sizeof dir, env) != 0) {
      errf(err, errlen, "CLAIMER_PG_BINDIR is too long");
      return CL_EEMBEDDED;
    }
    len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
      dir[--len] = '\0';
    if (!has_server_programs(dir)) {
      errf(err, errlen,
           "CLAIMER_PG_BINDIR=%s does not hold the PostgreSQL server "
           "programs pg_ctl and initdb",
           env);
      return CL_EEMBEDDED;
    }
    if (copy_str(out, n, dir) != 0) {
      errf(err, errlen, "CLAIMER_PG_BINDIR is too long");
      return CL_EEMBEDDED;
    }
    return 0;
  }

  /* Debian and Ubuntu keep each major version apart; take the newest. */
  if (glob("/usr/lib/postgresql/*/bin", GLOB_NOSORT | GLOB_ONLYDIR, NULL, &g) ==
      0) {
    for (size_t i = 0; i < g.gl_pathc; i++) {
      long rank = version_rank(g.gl_pathv[i]);

      if (rank > best_rank && has_server_programs(g.gl_pathv[i]) &&
          copy_str(best, sizeof best, g.gl_pathv[i]) == 0)
        best_rank = rank;
    }
    globfree(&g);
  }
  if (best_rank >= 0) {
    if (copy_str(out, n, best) != 0) {
      errf(err, errlen, "the path %s is too long", best);
      return CL_EEMBEDDED;
    }
    return 0;
  }

  /* Elsewhere the programs are on PATH, often as links into the real bin
   * directory; pg_ctl looks for postgres next to its real path. */
  path_env = getenv("PATH");
  if (path_env != NULL) {
    const char *p = path_env;

    for (;;) {
      const char *colon = strchr(p, ':');
      size_t len = colon != NULL ? (size_t)(colon - p) : strlen(p);
      char cand[PATH_MAX];
      char real[PATH_MAX];

      if (len > 0 && len + sizeof "/pg_ctl" <= sizeof cand) {
        memcpy(cand, p, len);
        strcpy(cand + len, "/pg_ctl");
        if (access(cand, X_OK) == 0 && realpath(cand, real) != NULL) {
          char *slash = strrchr(real, '/');

          if (slash != NULL && slash != real) {
            *slash = '\0';
            if (has_server_programs(real) && copy_str(out, n, real) == 0)
              return 0;
          }
        }
      }
      if (colon == NULL)
        break;
      p = colon + 1;
    }
  }
  errf(err, errlen,
       "PostgreSQL server binaries not found: install postgresql "
       "(apt-get install postgresql) or set CLAIMER_PG_BINDIR");
  return CL_EEMBEDDED;
}

int cl__server_user(char *name, size_t n, uid_t *uid, gid_t *gid, char *err,
                    size_t errlen) {
  user_t u;
  int rc;

  if (geteuid() == 0) {
    const char *want = getenv("CLAIMER_PG_USER");

    if (want == NULL || want[0] == '\0')
      want = "postgres";
    rc = lookup_user(want, 0, &u);
    if (rc == -1) {
      errf(err, errlen,
           "PostgreSQL refuses to run as root, and the user \"%s\" to run it "
           "as does not exist: install postgresql (which creates "
           "\"postgres\") or set CLAIMER_PG_USER to an unprivileged user",
           want);
      return CL_EEMBEDDED;
    }
    if (rc != 0) {
      errf(err, errlen, "cannot look up the user \"%s\": %s", want,
           strerror(rc));
      return CL_EEMBEDDED;
    }
    if (u.uid == 0) {
      errf(err, errlen,
           "CLAIMER_PG_USER=%s is root, and PostgreSQL refuses to run as "
           "root: name an unprivileged user",
           want);
      return CL_EEMBEDDED;
    }
  } else {
    rc = lookup_user(NULL, geteuid(), &u);
    if (rc != 0) {
      errf(err, errlen, "cannot look up the current user (uid %u): %s",
           (unsigned)geteuid(), rc == -1 ? "no passwd entry" : strerror(rc));
      return CL_EEMBEDDED;
    }
  }
  if (name != NULL && copy_str(name, n, u.name) != 0) {
    errf(err, errlen, "the user name \"%s\" is too long", u.name);
    return CL_EEMBEDDED;
  }
  if (uid != NULL)
    *uid = u.uid;
  if (gid != NULL)
    *gid = u.gid;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Files and directories                                                     */

int cl__mkdir_owned(const char *path, mode_t mode, uid_t uid, gid_t gid) {
  char buf[PATH_MAX];
  size_t len;
  struct stat st;

  if (path == NULL || path[0] == '\0')
    return -EINVAL;
  len = strlen(path);
  if (len >= sizeof buf)
    return -ENAMETOOLONG;
  memcpy(buf, path, len + 1);
  while (len > 1 && buf[len - 1] == '/')
    buf[--len] = '\0';

  for (char *p = buf + 1; *p != '\0'; p++) {
    if (*p != '/' || p[-1] == '/')
      continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
      int e = errno;

      return -e;
    }
    *p = '/';
  }
  if (mkdir(buf, mode) != 0 && errno != EEXIST) {
    int e = errno;

    return -e;
  }
  /* The owner and mode are set on what was opened, never through a
   * symbolic link put in the directory's place. */
  int fd = open(buf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;

    return e == ELOOP ? -ENOTDIR : -e;
  }
  int rc = 0;
  if (fstat(fd, &st) != 0)
    rc = -errno;
  else if (!S_ISDIR(st.st_mode))
    rc = -ENOTDIR;
  else if (((uid != (uid_t)-1 && st.st_uid != uid) ||
            (gid != (gid_t)-1 && st.st_gid != gid)) &&
           fchown(fd, uid, gid) != 0)
    rc = -errno;
  /* mkdir applied the umask; chown may have dropped set-id bits. */
  else if (fchmod(fd, mode) != 0)
    rc = -errno;
  close(fd);
  return rc;
}

int cl__log_tail(const char *path, int lines, char *out, size_t n) {
  struct stat st;
  size_t want;
  size_t got = 0;
  off_t start;
  size_t i;
  int seen = 0;
  int fd;

  if (out == NULL || n == 0)
    return -EINVAL;
  out[0] = '\0';
  if (path == NULL || lines <= 0)
    return -EINVAL;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int e = errno;

    return -e;
  }
  if (fstat(fd, &st) != 0) {
    int e = errno;

    close(fd);
    return -e;
  }
  want = n - 1;
  start = (st.st_size > (off_t)want) ? st.st_size - (off_t)want : 0;
  while (got < want) {
    ssize_t r = pread(fd, out + got, want - got, start + (off_t)got);

    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  close(fd);

  while (got > 0 && (out[got - 1] == '\n' || out[got - 1] == '\r'))
    got--;
  for (i = got; i > 0; i--) {
    if (out[i - 1] == '\n' && ++seen == lines)
      break;
  }
  memmove(out, out + i, got - i);
  got -= i;
  out[got] = '\0';
  /* Keep the message one C string even if the log holds NUL bytes. */
  for (i = 0; i < got; i++) {
    if (out[i] == '\0')
      out[i] = ' ';
  }
  return (int)got;
}

/* nftw callback of cl__rmtree: removes one entry, children first. */
static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  if ((flag == FTW_DP || flag == FTW_DNR ? rmdir(path) : unlink(path)) != 0 &&
      errno != ENOENT)
    return errno;
  return 0;
}

int cl__rmtree(const char *path) {
  int rc;

  if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0)
    return -EINVAL;
  rc = nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  if (rc == -1)
    return errno == ENOENT ? 0 : -errno;
  return rc > 0 ? -rc : 0;
}

/* ------------------------------------------------------------------------ */
/* Running a program                                                         */

/* What the child reports through the pipe when it cannot exec. */
enum stage {
  STAGE_FDS,
  STAGE_GROUPS,
  STAGE_SETGID,
  STAGE_SETUID,
  STAGE_CHDIR,
  STAGE_EXEC
};

typedef struct report {
  int stage;
  int err;
} report_t;

/* Everything the child needs, prepared before fork. */
typedef struct child_plan {
  const char *const *argv;
  char **envp;
  const char *cwd;
  int in_fd;
  int out_fd;
  int report_fd;
  int max_fd;
  int switch_user;
  uid_t uid;
  gid_t gid;
  const gid_t *groups;
  size_t ngroups;
  struct sigaction dfl;
} child_plan_t;

static void child_fail(const child_plan_t *plan, int stage)
    __attribute__((noreturn));

/* Reports why the child cannot go on and exits (child only). */
static void child_fail(const child_plan_t *plan, int stage) {
  report_t rep;
  ssize_t r;

  rep.stage = stage;
  rep.err = errno;
  do {
    r = write(plan->report_fd, &rep, sizeof rep);
  } while (r < 0 && errno == EINTR);
  _exit(127);
}

static void child_exec(const child_plan_t *plan) __attribute__((noreturn));

/* Sets up the child and execs the program; only async-signal-safe calls
 * (child only, never returns). */
static void child_exec(const child_plan_t *plan) {
  sigset_t none;
  int fd;

  /* A server inherits ignored signals and the mask through exec; the
   * caller's choices (SIGPIPE ignored, signals blocked in a thread) must not
   * leak into it. */
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP)
      (void)sigaction(sig, &plan->dfl, NULL);
  }
  sigemptyset(&none);
  (void)sigprocmask(SIG_SETMASK, &none, NULL);

  if (dup2(plan->in_fd, 0) < 0 || dup2(plan->out_fd, 1) < 0 ||
      dup2(plan->out_fd, 2) < 0)
    child_fail(plan, STAGE_FDS);
  if (plan->switch_user) {
    if (setgroups(plan->ngroups, plan->groups) != 0)
      child_fail(plan, STAGE_GROUPS);
    if (setgid(plan->gid) != 0)
      child_fail(plan, STAGE_SETGID);
    if (setuid(plan->uid) != 0)
      child_fail(plan, STAGE_SETUID);
  }
  if (chdir(plan->cwd) != 0)
    child_fail(plan, STAGE_CHDIR);
    /* No descriptor of the caller (a lock, a socket) may outlive exec: a
     * daemonized server would hold it for its whole life. */
#ifdef CLOSE_RANGE_CLOEXEC
  if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
#endif
  {
    for (fd = 3; fd < plan->max_fd; fd++)
      (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  execve(plan->argv[0], (char *const *)plan->argv, plan->envp);
  child_fail(plan, STAGE_EXEC);
}

/* Returns fd moved to a number above 2 (close-on-exec), so that dup2 onto
 * 0..2 in the child always makes a new, inheritable descriptor; -1 on
 * failure (fd is closed either way when moved). */
static int fd_above_stdio(int fd) {
  int moved;

  if (fd < 0 || fd > 2)
    return fd;
  moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return moved;
}

/* Returns a malloc'd copy of environ with HOME, USER and LOGNAME set for u;
 * the three new strings are stored in *strings (malloc'd, freed by the
 * caller after the array).  NULL when out of memory. */
static char **env_for_user(const user_t *u, char **strings) {
  size_t count = 0;
  size_t k = 0;
  size_t size;
  char **envp;
  char *s;

  for (char **e = environ; e != NULL && *e != NULL; e++)
    count++;
  envp = calloc(count + 4, sizeof *envp);
  size = strlen(u->home) + 2 * strlen(u->name) +
         sizeof "HOME=" + sizeof "USER=" + sizeof "LOGNAME=";
  s = malloc(size);
  if (envp == NULL || s == NULL) {
    free(envp);
    free(s);
    return NULL;
  }
  for (char **e = environ; e != NULL && *e != NULL; e++) {
    if (strncmp(*e, "HOME=", 5) != 0 && strncmp(*e, "USER=", 5) != 0 &&
        strncmp(*e, "LOGNAME=", 8) != 0)
      envp[k++] = *e;
  }
  *strings = s;
  envp[k++] = s;
  s += sprintf(s, "HOME=%s", u->home) + 1;
  envp[k++] = s;
  s += sprintf(s, "USER=%s", u->name) + 1;
  envp[k++] = s;
  sprintf(s, "LOGNAME=%s", u->name);
  envp[k] = NULL;
  return envp;
}

/* Returns a malloc'd list of u's groups (as initgroups would set them) and
 * its length in *n; NULL when out of memory. */
static gid_t *groups_of(const user_t *u, size_t *n) {
  int cap = 32;

  for (;;) {
    gid_t *groups = malloc((size_t)cap * sizeof *groups);
    int count = cap;

    if (groups == NULL)
      return NULL;
    if (getgrouplist(u->name, u->gid, groups, &count) >= 0) {
      *n = (size_t)count;
      return groups;
    }
    free(groups);
    if (count <= cap) {
      /* The group database failed us: keep the primary group only. */
      groups = malloc(sizeof *groups);
      if (groups != NULL) {
        groups[0] = u->gid;
        *n = 1;
      }
      return groups;
    }
    cap = count;
  }
}

int cl__run(const char *const argv[], const char *as_user, const char *cwd,
            const char *out_file, char *err, size_t errlen) {
  static const char *const stage_names[] = {
      [STAGE_FDS] = "redirecting its output",
      [STAGE_GROUPS] = "setgroups",
      [STAGE_SETGID] = "setgid",
      [STAGE_SETUID] = "setuid",
      [STAGE_CHDIR] = "entering its working directory",
      [STAGE_EXEC] = "exec",
  };
  child_plan_t plan;
  user_t u;
  char *env_strings = NULL;
  gid_t *groups = NULL;
  int pipefd[2] = {-1, -1};
  const char *prog;
  char who[300] = "";
  report_t rep;
  ssize_t r;
  pid_t pid;
  int status;
  int rc = CL_EEMBEDDED;
  long max_fd;

  if (argv == NULL || argv[0] == NULL || argv[0][0] != '/') {
    errf(err, errlen, "internal error: cl__run needs an absolute program path");
    return CL_EEMBEDDED;
  }
  prog = base_name(argv[0]);
  memset(&plan, 0, sizeof plan);
  plan.argv = argv;
  plan.envp = environ;
  plan.cwd = cwd != NULL ? cwd : "/";
  plan.in_fd = plan.out_fd = -1;
  plan.dfl.sa_handler = SIG_DFL;
  sigemptyset(&plan.dfl.sa_mask);

  if (as_user != NULL) {
    int lr = lookup_user(as_user, 0, &u);

    if (lr != 0) {
      errf(err, errlen, "cannot run %s as user \"%s\": %s", prog, as_user,
           lr == -1 ? "no such user" : strerror(lr));
      return CL_EEMBEDDED;
    }
    if (u.uid != geteuid()) {
      if (geteuid() != 0) {
        errf(err, errlen,
             "cannot run %s as user \"%s\": only root can switch users", prog,
             as_user);
        return CL_EEMBEDDED;
      }
      groups = groups_of(&u, &plan.ngroups);
      plan.envp = env_for_user(&u, &env_strings);
      if (groups == NULL || plan.envp == NULL) {
        errf(err, errlen, "cannot run %s: out of memory", prog);
        goto out;
      }
      plan.switch_user = 1;
      plan.uid = u.uid;
      plan.gid = u.gid;
      plan.groups = groups;
      snprintf(who, sizeof who, " as user \"%s\"", u.name);
    }
  }

  plan.in_fd = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (out_file != NULL)
    plan.out_fd = fd_above_stdio(open(
        out_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600));
  else
    plan.out_fd = fd_above_stdio(open("/dev/null", O_WRONLY | O_CLOEXEC));
  if (plan.in_fd < 0 || plan.out_fd < 0) {
    errf(err, errlen, "cannot run %s: cannot open %s: %s", prog,
         (plan.out_fd < 0 && out_file != NULL) ? out_file : "/dev/null",
         strerror(errno));
    goto out;
  }
  if (out_file != NULL && plan.switch_user) {
    struct stat st;

    /* The program (a server writing its log) appends as that user. */
    if (fstat(plan.out_fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (st.st_uid != u.uid || st.st_gid != u.gid) &&
        fchown(plan.out_fd, u.uid, u.gid) != 0) {
      errf(err, errlen, "cannot give %s to user \"%s\": %s", out_file, u.name,
           strerror(errno));
      goto out;
    }
  }
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    errf(err, errlen, "cannot run %s: pipe: %s", prog, strerror(errno));
    goto out;
  }
  pipefd[0] = fd_above_stdio(pipefd[0]);
  pipefd[1] = fd_above_stdio(pipefd[1]);
  if (pipefd[0] < 0 || pipefd[1] < 0) {
    errf(err, errlen, "cannot run %s: pipe: %s", prog, strerror(errno));
    goto out;
  }
  plan.report_fd = pipefd[1];
  max_fd = sysconf(_SC_OPEN_MAX);
  plan.max_fd = (max_fd < 0 || max_fd > 65536) ? 65536 : (int)max_fd;

  pid = fork();
  if (pid < 0) {
    errf(err, errlen, "cannot run %s: fork: %s", prog, strerror(errno));
    goto out;
  }
  if (pid == 0)
    child_exec(&plan);

  close(pipefd[1]);
  pipefd[1] = -1;
  do {
    r = read(pipefd[0], &rep, sizeof rep);
  } while (r < 0 && errno == EINTR);
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      errf(err, errlen, "cannot wait for %s: %s", prog, strerror(errno));
      goto out;
    }
  }
  if (r == (ssize_t)sizeof rep) {
    const char *what = (rep.stage >= 0 && rep.stage <= STAGE_EXEC)
                           ? stage_names[rep.stage]
                           : "starting it";

    if (rep.stage == STAGE_CHDIR)
      errf(err, errlen,
           "cannot run %s%s: cannot enter %s: %s (that user must be able to "
           "reach it)",
           argv[0], who, plan.cwd, strerror(rep.err));
    else
      errf(err, errlen, "cannot run %s%s: %s failed: %s", argv[0], who, what,
           strerror(rep.err));
    goto out;
  }
  if (WIFEXITED(status)) {
    rc = WEXITSTATUS(status);
    if (rc != 0)
      errf(err, errlen, "%s exited with status %d", prog, rc);
  } else if (WIFSIGNALED(status)) {
    rc = 128 + WTERMSIG(status);
    errf(err, errlen, "%s was killed by signal %d", prog, WTERMSIG(status));
  } else {
    rc = 128;
    errf(err, errlen, "%s stopped with wait status %d", prog, status);
  }

out:
  if (pipefd[0] >= 0)
    close(pipefd[0]);
  if (pipefd[1] >= 0)
    close(pipefd[1]);
  if (plan.in_fd >= 0)
    close(plan.in_fd);
  if (plan.out_fd >= 0)
    close(plan.out_fd);
  if (plan.envp != environ)
    free(plan.envp);
  free(env_strings);
  free(groups);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* initdb and pg_ctl                                                         */

/* Writes "<what>; the end of <file>:\n<tail>" into err, or just what when the
 * file says nothing. */
static void errf_tail(char *err, size_t errlen, const char *what,
                      const char *file) {
  char tail[TAIL_BYTES];

  if (file != NULL && cl__log_tail(file, TAIL_LINES, tail, sizeof tail) > 0)
    errf(err, errlen, "%s; the end of %s:\n%s", what, file, tail);
  else
    errf(err, errlen, "%s", what);
}

/* Writes "<bindir>/<prog>" into out.  Returns 0, or -1 when too long. */
static int program_path(char *out, size_t n, const char *bindir,
                        const char *prog) {
  int len = snprintf(out, n, "%s/%s", bindir, prog);

  return (len < 0 || (size_t)len >= n) ? -1 : 0;
}

/* Appends text to the file at path.  Returns 0 or a positive errno. */
static int append_file(const char *path, const char *text) {
  size_t len = strlen(text);
  size_t done = 0;
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
  int e = 0;

  if (fd < 0)
    return errno;
  while (done < len) {
    ssize_t w = write(fd, text + done, len - done);

    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      e = errno;
      break;
    }
    done += (size_t)w;
  }
  if (e == 0 && fsync(fd) != 0)
    e = errno;
  if (close(fd) != 0 && e == 0)
    e = errno;
  return e;
}

/* Reads line `line` (1-based) of data_dir/postmaster.pid into out (n bytes,
 * without the newline).  Returns 0, or -1 when there is no such line. */
static int pid_file_line(const char *data_dir, int line, char *out, size_t n) {
  char path[PATH_MAX];
  char buf[2048];
  char *p = buf;
  char *nl;
  ssize_t r;
  int fd;

  if ((size_t)snprintf(path, sizeof path, "%s/postmaster.pid", data_dir) >=
      sizeof path)
    return -1;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return -1;
  do {
    r = read(fd, buf, sizeof buf - 1);
  } while (r < 0 && errno == EINTR);
  close(fd);
  if (r <= 0)
    return -1;
  buf[r] = '\0';
  for (int i = 1; i < line; i++) {
    p = strchr(p, '\n');
    if (p == NULL)
      return -1;
    p++;
  }
  nl = strchr(p, '\n');
  if (nl == NULL)
    return -1;
  *nl = '\0';
  return copy_str(out, n, p);
}

/* Returns the pid that data_dir/postmaster.pid names when that process is
 * a zombie (dead, but not yet reaped by its parent), else 0.  A postmaster
 * started by pg_ctl is the child of init; in a container whose init does not
 * reap promptly, a killed postmaster lingers as a zombie, which pg_ctl takes
 * for a live server and which makes a new postmaster refuse its lock files. */
static pid_t postmaster_zombie(const char *data_dir) {
  char line[64];
  char path[64];
  char stat_buf[512];
  char *close_paren;
  long pid;
  ssize_t r;
  int fd;

  if (pid_file_line(data_dir, 1, line, sizeof line) != 0)
    return 0;
  pid = strtol(line, NULL, 10);
  if (pid <= 0 || pid > INT_MAX)
    return 0;
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return 0;
  do {
    r = read(fd, stat_buf, sizeof stat_buf - 1);
  } while (r < 0 && errno == EINTR);
  close(fd);
  if (r <= 0)
    return 0;
  stat_buf[r] = '\0';
  /* "pid (comm) S ...": comm may hold anything, so look after the last ')'. */
  close_paren = strrchr(stat_buf, ')');
  if (close_paren == NULL || close_paren[1] != ' ' || close_paren[2] != 'Z')
    return 0;
  return (pid_t)pid;
}

/* Removes the lock files of a postmaster that is dead but unreaped (see
 * postmaster_zombie): postmaster.pid and, when it names the same pid, the
 * lock of its first unix socket.  Does nothing when the postmaster is alive
 * or gone. */
static void clear_zombie_locks(const char *data_dir) {
  pid_t pid = postmaster_zombie(data_dir);
  char port[32];
  char sock_dir[PATH_MAX];
  char path[PATH_MAX];

  if (pid == 0)
    return;
  if (pid_file_line(data_dir, 4, port, sizeof port) == 0 &&
      pid_file_line(data_dir, 5, sock_dir, sizeof sock_dir) == 0 &&
      sock_dir[0] == '/' &&
      (size_t)snprintf(path, sizeof path, "%s/.s.PGSQL.%s.lock", sock_dir,
                       port) < sizeof path) {
    char head[64] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd >= 0) {
      ssize_t r = read(fd, head, sizeof head - 1);

      close(fd);
      if (r > 0) {
        head[r] = '\0';
        if (strtol(head, NULL, 10) == (long)pid)
          (void)unlink(path);
      }
    }
  }
  if ((size_t)snprintf(path, sizeof path, "%s/postmaster.pid", data_dir) <
      sizeof path)
    (void)unlink(path);
}

int cl__initdb(const char *bindir, const char *data_dir, const char *as_user,
               const char *superuser, const char *const extra_args[],
               const char *conf, const char *out_file, char *err,
               size_t errlen) {
  const char *argv[64];
  char prog[PATH_MAX];
  char user_opt[300];
  char parent[PATH_MAX];
  char msg[600];
  char *slash;
  size_t k = 0;
  int rc;

  if (program_path(prog, sizeof prog, bindir, "initdb") != 0 ||
      copy_str(parent, sizeof parent, data_dir) != 0) {
    errf(err, errlen, "the path %s is too long", data_dir);
    return CL_EEMBEDDED;
  }
  /* initdb runs in the directory that will hold the cluster, which the
   * user it runs as can surely enter. */
  slash = strrchr(parent, '/');
  if (slash == NULL)
    strcpy(parent, ".");
  else if (slash == parent)
    parent[1] = '\0';
  else
    *slash = '\0';

  argv[k++] = prog;
  argv[k++] = "-D";
  argv[k++] = data_dir;
  if (superuser != NULL) {
    snprintf(user_opt, sizeof user_opt, "--username=%s", superuser);
    argv[k++] = user_opt;
  }
  argv[k++] = "-E";
  argv[k++] = "UTF8";
  argv[k++] = "--no-locale";
  argv[k++] = "--auth-local=trust";
  argv[k++] = "--auth-host=reject";
  for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
    if (k + 1 >= sizeof argv / sizeof argv[0]) {
      errf(err, errlen, "internal error: too many initdb arguments");
      return CL_EEMBEDDED;
    }
    argv[k++] = extra_args[i];
  }
  argv[k] = NULL;

  rc = cl__run(argv, as_user, parent, out_file, msg, sizeof msg);
  if (rc != 0) {
    char what[800];

    snprintf(what, sizeof what, "initdb of %s failed: %s", data_dir, msg);
    errf_tail(err, errlen, what, rc > 0 ? out_file : NULL);
    return CL_EEMBEDDED;
  }
  if (conf != NULL && conf[0] != '\0') {
    char conf_path[PATH_MAX];
    int e;

    if (snprintf(conf_path, sizeof conf_path, "%s/postgresql.conf", data_dir) >=
        (int)sizeof conf_path) {
      errf(err, errlen, "the path %s is too long", data_dir);
      return CL_EEMBEDDED;
    }
    e = append_file(conf_path, conf);
    if (e != 0) {
      errf(err, errlen, "cannot append to %s: %s", conf_path, strerror(e));
      return CL_EEMBEDDED;
    }
  }
  return 0;
}

int cl__pg_running(const char *bindir, const char *data_dir,
                   const char *as_user, char *err, size_t errlen) {
  char prog[PATH_MAX];
  char msg[600];
  const char *argv[5];
  int rc;

  if (program_path(prog, sizeof prog, bindir, "pg_ctl") != 0) {
    errf(err, errlen, "the path %s is too long", bindir);
    return CL_EEMBEDDED;
  }
  argv[0] = prog;
  argv[1] = "status";
  argv[2] = "-D";
  argv[3] = data_dir;
  argv[4] = NULL;
  rc = cl__run(argv, as_user, "/", NULL, msg, sizeof msg);
  /* pg_ctl follows the LSB: 0 running, 3 not running, 4 no cluster. */
  if (rc == 0)
    return postmaster_zombie(data_dir) != 0 ? 0 : 1;
  if (rc == 3 || rc == 4)
    return 0;
  errf(err, errlen, "cannot tell whether the server on %s runs: %s", data_dir,
       msg);
  return CL_EEMBEDDED;
}

int cl__pg_start(const char *bindir, const char *data_dir, const char *as_user,
                 const char *log_file, const char *cwd, int timeout_s,
                 char *err, size_t errlen) {
  char prog[PATH_MAX];
  char timeout[16];
  char msg[600];
  const char *argv[12];
  int rc;

  if (program_path(prog, sizeof prog, bindir, "pg_ctl") != 0) {
    errf(err, errlen, "the path %s is too long", bindir);
    return CL_EEMBEDDED;
  }
  clear_zombie_locks(data_dir);
  snprintf(timeout, sizeof timeout, "%d", timeout_s > 0 ? timeout_s : 60);
  argv[0] = prog;
  argv[1] = "start";
  argv[2] = "-D";
  argv[3] = data_dir;
  argv[4] = "-l";
  argv[5] = log_file;
  argv[6] = "-w";
  argv[7] = "-t";
  argv[8] = timeout;
  argv[9] = "-s";
  argv[10] = NULL;
  rc = cl__run(argv, as_user, cwd != NULL ? cwd : data_dir, log_file, msg,
               sizeof msg);
  if (rc != 0) {
    char what[800];

    snprintf(what, sizeof what, "starting the server on %s failed: %s",
             data_dir, msg);
    errf_tail(err, errlen, what, rc > 0 ? log_file : NULL);
    return CL_EEMBEDDED;
  }
  return 0;
}

int cl__pg_stop(const char *bindir, const char *data_dir, const char *as_user,
                const char *mode, int timeout_s, const char *out_file,
                char *err, size_t errlen) {
  char prog[PATH_MAX];
  char timeout[16];
  char msg[600];
  const char *argv[12];
  int rc;

  rc = cl__pg_running(bindir, data_dir, as_user, err, errlen);
  if (rc <= 0)
    return rc;
  if (program_path(prog, sizeof prog, bindir, "pg_ctl") != 0) {
    errf(err, errlen, "the path %s is too long", bindir);
    return CL_EEMBEDDED;
  }
  snprintf(timeout, sizeof timeout, "%d", timeout_s > 0 ? timeout_s : 60);
  argv[0] = prog;
  argv[1] = "stop";
  argv[2] = "-D";
  argv[3] = data_dir;
  argv[4] = "-m";
  argv[5] = mode != NULL ? mode : "fast";
  argv[6] = "-w";
  argv[7] = "-t";
  argv[8] = timeout;
  argv[9] = "-s";
  argv[10] = NULL;
  rc = cl__run(argv, as_user, "/", out_file, msg, sizeof msg);
  if (rc == 0)
    return 0;
  /* It may have stopped on its own between status and stop. */
  if (rc > 0 && cl__pg_running(bindir, data_dir, as_user, NULL, 0) == 0)
    return 0;
  {
    char what[800];

    snprintf(what, sizeof what, "stopping the server on %s failed: %s",
             data_dir, msg);
    errf_tail(err, errlen, what, rc > 0 ? out_file : NULL);
  }
  return CL_EEMBEDDED;
}

/* ------------------------------------------------------------------------ */
/* The environment of claimer's children                                     */

const char *const cl__child_env_secrets[] = {
    "CLAIMER_DSN", "PGPASSWORD",
    "PGPASSFILE",  "PGSERVICEFILE",
    "PGSSLKEY",    "CLAIMER_REAPER_HOOK_URL",
    NULL};

/* Returns 1 when the environment entry "NAME=value" is named name. */
static int env_is(const char *entry, const char *name) {
  size_t len = strlen(name);

  return strncmp(entry, name, len) == 0 && entry[len] == '=';
}

/* Returns 1 when a child inherits the entry. */
static int env_inherited(const char *entry, const char *const names[],
                         size_t n) {
  for (const char *const *s = cl__child_env_secrets; *s != NULL; s++)
    if (env_is(entry, *s))
      return 0;
  for (size_t i = 0; i < n; i++)
    if (env_is(entry, names[i]))
      return 0;
  return 1;
}

char **cl__child_env(const char *const names[], const char *const values[],
                     size_t n) {
  size_t count = n, bytes = 0;
  char **env;
  char *p;
  size_t k = 0;

  for (char **e = environ; e != NULL && *e != NULL; e++)
    if (env_inherited(*e, names, n)) {
      count++;
      bytes += strlen(*e) + 1;
    }
  for (size_t i = 0; i < n; i++)
    bytes += strlen(names[i]) + strlen(values[i]) + 2;
  env = malloc((count + 1) * sizeof *env + bytes);
  if (env == NULL)
    return NULL;
  p = (char *)(env + count + 1);
  for (char **e = environ; e != NULL && *e != NULL; e++) {
    if (!env_inherited(*e, names, n))
      continue;
    env[k++] = p;
    p = stpcpy(p, *e) + 1;
  }
  for (size_t i = 0; i < n; i++) {
    env[k++] = p;
    p += sprintf(p, "%s=%s", names[i], values[i]) + 1;
  }
  env[k] = NULL;
  return env;
}
