/*
 * embedded.c: the embedded PostgreSQL that claimer uses when no DSN is
 * given.  A state directory holds one cluster (pgdata), its unix socket
 * (run; the server listens on no TCP port), its log (postgresql.log) and a
 * lock file (lock).  cl_embedded_ensure makes it all exist and run, and is
 * safe to call from many processes at once: each holds an exclusive flock on
 * the lock file for the whole call, so one of them creates or starts the
 * server while the others wait and then find it running.  A new cluster is
 * made in pgdata.init and renamed to pgdata only once it is complete, so a
 * crash half way through initdb leaves nothing that looks like a cluster.
 * When the caller is root the cluster belongs to an unprivileged user
 * (proc.c runs the server programs as that user), and connections use local
 * trust authentication, which is why the socket directory is mode 0700.
 */
#include "embedded.h"
#include "claimer/claimer.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EMBEDDED_PORT "5432"
#define EMBEDDED_DB "claimer"
#define START_TIMEOUT_S 60
#define STOP_TIMEOUT_S 60
#define TAIL_LINES 6
#define TAIL_BYTES 1024

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

/* Writes "<what>; the end of <file>:\n<tail>" into err, or just what when the
 * file says nothing. */
static void errf_tail(char *err, size_t errlen, const char *what,
                      const char *file) {
  char tail[TAIL_BYTES];

  if (cl__log_tail(file, TAIL_LINES, tail, sizeof tail) > 0)
    errf(err, errlen, "%s; the end of %s:\n%s", what, file, tail);
  else
    errf(err, errlen, "%s", what);
}

/* Removes the newline libpq ends its messages with, in place; returns s. */
static char *chomp(char *s) {
  size_t len = strlen(s);

  while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
    s[--len] = '\0';
  return s;
}

/* ------------------------------------------------------------------------ */
/* Paths                                                                     */

/* Writes the state directory to use into out (n bytes), absolute and
 * without a trailing slash: arg, else $CLAIMER_HOME, else /var/lib/claimer
 * for root, else $XDG_STATE_HOME/claimer, else $HOME/.local/state/claimer.
 * Returns 0 or CL_EEMBEDDED. */
static int state_dir_resolve(const char *arg, char *out, size_t n, char *err,
                             size_t errlen) {
  const char *env;
  char cwd[PATH_MAX];
  int len;

  if (arg == NULL || arg[0] == '\0') {
    env = getenv("CLAIMER_HOME");
    if (env != NULL && env[0] != '\0')
      arg = env;
  }
  if (arg != NULL && arg[0] != '\0') {
    if (arg[0] == '/') {
      len = snprintf(out, n, "%s", arg);
    } else {
      if (getcwd(cwd, sizeof cwd) == NULL) {
        errf(err, errlen, "cannot make %s absolute: getcwd: %s", arg,
             strerror(errno));
        return CL_EEMBEDDED;
      }
      len = snprintf(out, n, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, arg);
    }
  } else if (geteuid() == 0) {
    len = snprintf(out, n, "/var/lib/claimer");
  } else if ((env = getenv("XDG_STATE_HOME")) != NULL && env[0] == '/') {
    /* The XDG spec says a relative value is to be ignored. */
    len = snprintf(out, n, "%s/claimer", env);
  } else if ((env = getenv("HOME")) != NULL && env[0] == '/') {
    len = snprintf(out, n, "%s/.local/state/claimer", env);
  } else {
    errf(err, errlen,
         "cannot choose a state directory: HOME is not set; set "
         "CLAIMER_HOME");
    return CL_EEMBEDDED;
  }
  if (len < 0 || (size_t)len >= n) {
    errf(err, errlen, "the state directory path is too long");
    return CL_EEMBEDDED;
  }
  while (len > 1 && out[len - 1] == '/')
    out[--len] = '\0';
  return 0;
}

/* Appends " key=value" to the dsn in buf (n bytes), quoting value the way
 * libpq parses it.  Returns 0, or -1 when it does not fit. */
static int dsn_add(char *buf, size_t n, const char *key, const char *value) {
  size_t len = strlen(buf);
  int quote = value[0] == '\0' || strpbrk(value, " \t\n\r\\'") != NULL;

  if (len > 0) {
    if (len + 1 >= n)
      return -1;
    buf[len++] = ' ';
  }
  for (const char *k = key; *k != '\0'; k++) {
    if (len + 1 >= n)
      return -1;
    buf[len++] = *k;
  }
  if (len + 1 >= n)
    return -1;
  buf[len++] = '=';
  if (quote) {
    if (len + 1 >= n)
      return -1;
    buf[len++] = '\'';
  }
  for (const char *v = value; *v != '\0'; v++) {
    if (quote && (*v == '\'' || *v == '\\')) {
      if (len + 1 >= n)
        return -1;
      buf[len++] = '\\';
    }
    if (len + 1 >= n)
      return -1;
    buf[len++] = *v;
  }
  if (quote) {
    if (len + 1 >= n)
      return -1;
    buf[len++] = '\'';
  }
  buf[len] = '\0';
  return 0;
}

/* Fills info's paths and dsn for the state directory state_dir (absolute)
 * and the server user user; clears the flags.  Returns 0 or CL_EEMBEDDED. */
static int info_fill(const char *state_dir, const char *user,
                     cl_embedded_info_t *info, char *err, size_t errlen) {
  memset(info, 0, sizeof *info);
  if ((size_t)snprintf(info->state_dir, sizeof info->state_dir, "%s",
                       state_dir) >= sizeof info->state_dir ||
      (size_t)snprintf(info->data_dir, sizeof info->data_dir, "%s/pgdata",
                       state_dir) >= sizeof info->data_dir ||
      (size_t)snprintf(info->socket_dir, sizeof info->socket_dir, "%s/run",
                       state_dir) >= sizeof info->socket_dir ||
      (size_t)snprintf(info->log_file, sizeof info->log_file,
                       "%s/postgresql.log",
                       state_dir) >= sizeof info->log_file) {
    errf(err, errlen, "the state directory path %s is too long", state_dir);
    return CL_EEMBEDDED;
  }
  if (dsn_add(info->dsn, sizeof info->dsn, "host", info->socket_dir) != 0 ||
      dsn_add(info->dsn, sizeof info->dsn, "port", EMBEDDED_PORT) != 0 ||
      dsn_add(info->dsn, sizeof info->dsn, "dbname", EMBEDDED_DB) != 0 ||
      dsn_add(info->dsn, sizeof info->dsn, "user", user) != 0) {
    errf(err, errlen, "the state directory path %s is too long", state_dir);
    return CL_EEMBEDDED;
  }
  return 0;
}

/* Returns 0 when the server programs can be given path: pg_ctl hands the
 * data directory and the log file to /bin/sh inside double quotes, and the
 * socket directory goes into postgresql.conf.  Else CL_EEMBEDDED. */
static int path_check(const char *path, char *err, size_t errlen) {
  for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
    if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '$' || *p == '`' ||
        *p == '\\') {
      errf(err, errlen,
           "the state directory %s holds a character PostgreSQL's pg_ctl "
           "cannot take (a control character, \", $, ` or \\): choose "
           "another (CLAIMER_HOME)",
           path);
      return CL_EEMBEDDED;
    }
  }
  return 0;
}

/* What claimer puts in a state directory.  A non-empty directory is a
 * claimer home when it holds the lock file (every claimer that used it made
 * that first) and nothing but these: anything else means the directory is
 * someone else's, and claimer would take it over (chmod 0700, chown to the
 * server's user as root). */
static const char *const home_entries[] = {
    "lock", "run", "pgdata", "pgdata.init", "postgresql.log", NULL};

/* Returns 0 when the state directory dir may be taken: it does not exist
 * yet (it will be made), or it is a directory, not a symbolic link, owned
 * by the caller, by root or by the server's user server_uid (a home made as
 * root belongs to that user), and either empty or a claimer home.  Else
 * CL_EEMBEDDED with a message naming dir and the problem.  Changes
 * nothing. */
static int home_check(const char *dir, uid_t server_uid, char *err,
                      size_t errlen) {
  struct stat st;
  int fd;
  DIR *d;
  struct dirent *e;
  int has_lock = 0;
  char foreign[NAME_MAX + 1] = "";
  char first[NAME_MAX + 1] = "";

  fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int e0 = errno;

    if (e0 == ENOENT)
      return 0;
    if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
      errf(err, errlen,
           "the state directory %s is a symbolic link: claimer does not "
           "follow one to its state (it would take over what the link points "
           "to); give the real directory in CLAIMER_HOME",
           dir);
    else if (e0 == ENOTDIR)
      errf(err, errlen, "the state directory %s is not a directory", dir);
    else
      errf(err, errlen, "cannot open the state directory %s: %s", dir,
           strerror(e0));
    return CL_EEMBEDDED;
  }
  if (fstat(fd, &st) != 0) {
    errf(err, errlen, "cannot look at the state directory %s: %s", dir,
         strerror(errno));
    close(fd);
    return CL_EEMBEDDED;
  }
  if (st.st_uid != geteuid() && st.st_uid != 0 && st.st_uid != server_uid) {
    errf(err, errlen,
         "the state directory %s is owned by uid %u, not by you (uid %u) or "
         "root: claimer takes only a directory of its own user's",
         dir, (unsigned)st.st_uid, (unsigned)geteuid());
    close(fd);
    return CL_EEMBEDDED;
  }
  d = fdopendir(fd);
  if (d == NULL) {
    errf(err, errlen, "cannot read the state directory %s: %s", dir,
         strerror(errno));
    close(fd);
    return CL_EEMBEDDED;
  }
  while ((e = readdir(d)) != NULL) {
    const char *name = e->d_name;
    int known = 0;

    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
      continue;
    for (const char *const *h = home_entries; *h != NULL && !known; h++)
      known = strcmp(name, *h) == 0;
    if (first[0] == '\0')
      snprintf(first, sizeof first, "%s", name);
    if (strcmp(name, "lock") == 0)
      has_lock = 1;
    if (!known) {
      snprintf(foreign, sizeof foreign, "%s", name);
      break;
    }
  }
  closedir(d);
  if (foreign[0] != '\0' || (first[0] != '\0' && !has_lock)) {
    errf(err, errlen,
         "the state directory %s is not empty and not a claimer home (it "
         "holds \"%s\"%s; a claimer home holds its lock file and only "
         "lock, run, pgdata and postgresql.log): choose a new or empty "
         "directory (CLAIMER_HOME)",
         dir, foreign[0] != '\0' ? foreign : first,
         foreign[0] != '\0' ? "" : " but no lock file");
    return CL_EEMBEDDED;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Talking to the server                                                     */

/* Returns libpq's verdict on the server behind info->dsn, answered within a
 * few seconds. */
static PGPing ping(const cl_embedded_info_t *info) {
  const char *const keys[] = {"dbname", "connect_timeout", NULL};
  const char *const values[] = {info->dsn, "5", NULL};

  return PQpingParams(keys, values, 1);
}

/* Returns the current CLOCK_MONOTONIC time in milliseconds. */
static long long now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Makes the server on info->data_dir accept connections within timeout_s:
 * starts it when pg_ctl says it is not running, and otherwise waits, since it
 * may be starting or recovering after a crash (asking pg_ctl again every
 * second, for it may die meanwhile).  Sets info->started when it started
 * the server.  Returns 0 or CL_EEMBEDDED. */
static int server_up(cl_embedded_info_t *info, const char *bindir,
                     const char *as_user, int timeout_s, char *err,
                     size_t errlen) {
  long long deadline = now_ms() + (long long)timeout_s * 1000;
  long long next_status = 0;
  char what[2 * sizeof info->data_dir + 128];
  PGPing p;
  int rc;

  for (;;) {
    const struct timespec pause = {0, 100 * 1000 * 1000};

    p = ping(info);
    if (p == PQPING_OK)
      return 0;
    if (p == PQPING_NO_ATTEMPT || now_ms() >= deadline)
      break;
    if (now_ms() >= next_status) {
      rc = cl__pg_running(bindir, info->data_dir, as_user, err, errlen);
      if (rc < 0)
        return rc;
      if (rc == 0) {
        if (info->started) {
          snprintf(what, sizeof what,
                   "the server on %s stopped right after it started",
                   info->data_dir);
          errf_tail(err, errlen, what, info->log_file);
          return CL_EEMBEDDED;
        }
        rc = cl__pg_start(bindir, info->data_dir, as_user, info->log_file,
                          info->state_dir, timeout_s, err, errlen);
        if (rc != 0)
          return rc;
        info->started = 1;
        continue;
      }
      next_status = now_ms() + 1000;
    }
    nanosleep(&pause, NULL);
  }
  snprintf(what, sizeof what, "the server on %s runs but %s on %s after %d s",
           info->data_dir,
           p == PQPING_REJECT       ? "rejects connections"
           : p == PQPING_NO_ATTEMPT ? "cannot be asked (bad parameters)"
                                    : "does not answer",
           info->socket_dir, timeout_s);
  errf_tail(err, errlen, what, info->log_file);
  return CL_EEMBEDDED;
}

/* Creates the claimer database when missing, connecting to the postgres
 * database as user.  Returns 0 or CL_EEMBEDDED. */
static int database_ensure(const cl_embedded_info_t *info, const char *user,
                           char *err, size_t errlen) {
  const char *const keys[] = {
      "host", "port", "dbname", "user", "connect_timeout", "application_name",
      NULL};
  const char *const values[] = {
      info->socket_dir, EMBEDDED_PORT, "postgres", user, "10", "claimer", NULL};
  PGconn *conn;
  PGresult *res;
  char msg[512];
  int rc = CL_EEMBEDDED;

  conn = PQconnectdbParams(keys, values, 0);
  if (conn == NULL) {
    errf(err, errlen, "cannot connect to the embedded server: out of memory");
    return CL_EEMBEDDED;
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn));
    errf(err, errlen, "cannot connect to the embedded server on %s as %s: %s",
         info->socket_dir, user, chomp(msg));
    goto out;
  }
  res = PQexec(conn, "SELECT 1 FROM pg_catalog.pg_database "
                     "WHERE datname = '" EMBEDDED_DB "'");
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
    errf(err, errlen, "cannot look for the database %s: %s", EMBEDDED_DB,
         chomp(msg));
    PQclear(res);
    goto out;
  }
  if (PQntuples(res) > 0) {
    PQclear(res);
    rc = 0;
    goto out;
  }
  PQclear(res);
  res = PQexec(conn, "CREATE DATABASE " EMBEDDED_DB);
  if (PQresultStatus(res) == PGRES_COMMAND_OK) {
    rc = 0;
  } else {
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    /* 42P04 duplicate_database: someone else made it meanwhile. */
    if (state != NULL && strcmp(state, "42P04") == 0) {
      rc = 0;
    } else {
      snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
      errf(err, errlen, "cannot create the database %s: %s", EMBEDDED_DB,
           chomp(msg));
    }
  }
  PQclear(res);
out:
  PQfinish(conn);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Making the cluster                                                        */

/* Writes the lines claimer adds to a new cluster's postgresql.conf into out
 * (n bytes).  Returns 0, or -1 when they do not fit. */
static int conf_text(const cl_embedded_info_t *info, char *out, size_t n) {
  char quoted[2 * sizeof info->socket_dir];
  size_t k = 0;
  int len;

  /* In postgresql.conf a quote inside a string is doubled. */
  for (const char *p = info->socket_dir; *p != '\0'; p++) {
    if (*p == '\'')
      quoted[k++] = '\'';
    quoted[k++] = *p;
  }
  quoted[k] = '\0';
  len = snprintf(out, n,
                 "\n"
                 "# Added by claimer for its embedded server: no TCP, one\n"
                 "# unix socket in the state directory, log on stderr\n"
                 "# (pg_ctl -l sends it to postgresql.log).\n"
                 "listen_addresses = ''\n"
                 "unix_socket_directories = '%s'\n"
                 "port = " EMBEDDED_PORT "\n"
                 "max_connections = 100\n"
                 "shared_buffers = 128MB\n"
                 "logging_collector = off\n"
                 "log_destination = 'stderr'\n"
                 "log_line_prefix = '%%m [%%p] '\n"
                 "log_min_messages = warning\n"
                 "log_checkpoints = off\n"
                 "lc_messages = 'C'\n",
                 quoted);
  return (len < 0 || (size_t)len >= n) ? -1 : 0;
}

/* Removes dir when it is an empty directory, so that the new cluster can
 * take its place.  Returns 0 when dir is gone (or never was), 1 when it holds
 * something (or is not a directory), -1 (errno set) when it cannot tell. */
static int dir_clear_if_empty(const char *dir) {
  if (rmdir(dir) == 0 || errno == ENOENT)
    return 0;
  if (errno == ENOTEMPTY || errno == EEXIST || errno == ENOTDIR)
    return 1;
  return -1;
}

/* Creates the cluster in info->data_dir by way of pgdata.init.  Returns 0 or
 * CL_EEMBEDDED. */
static int cluster_create(const cl_embedded_info_t *info, const char *bindir,
                          const char *as_user, const char *user, char *err,
                          size_t errlen) {
  char tmp[PATH_MAX];
  char conf[4096];
  int rc;

  if ((size_t)snprintf(tmp, sizeof tmp, "%s/pgdata.init", info->state_dir) >=
          sizeof tmp ||
      conf_text(info, conf, sizeof conf) != 0) {
    errf(err, errlen, "the state directory path %s is too long",
         info->state_dir);
    return CL_EEMBEDDED;
  }
  rc = dir_clear_if_empty(info->data_dir);
  if (rc > 0) {
    errf(err, errlen,
         "%s exists but holds no cluster (no PG_VERSION): move it away and "
         "try again",
         info->data_dir);
    return CL_EEMBEDDED;
  }
  if (rc < 0) {
    errf(err, errlen, "cannot look into %s: %s", info->data_dir,
         strerror(errno));
    return CL_EEMBEDDED;
  }
  /* What an interrupted initdb left; we hold the lock, so it is no one's. */
  rc = cl__rmtree(tmp);
  if (rc != 0) {
    errf(err, errlen, "cannot remove the leftover %s: %s", tmp, strerror(-rc));
    return CL_EEMBEDDED;
  }
  rc = cl__initdb(bindir, tmp, as_user, user, NULL, conf, info->log_file, err,
                  errlen);
  if (rc != 0)
    return rc;
  if (rename(tmp, info->data_dir) != 0) {
    errf(err, errlen, "cannot rename %s to %s: %s", tmp, info->data_dir,
         strerror(errno));
    return CL_EEMBEDDED;
  }
  return 0;
}

/* Returns 0 when the cluster belongs to uid, the user the server runs as;
 * else CL_EEMBEDDED naming the owner.  The server would refuse to start. */
static int owner_check(const cl_embedded_info_t *info, const char *user,
                       uid_t uid, char *err, size_t errlen) {
  struct stat st;

  if (stat(info->data_dir, &st) != 0) {
    errf(err, errlen, "cannot look at %s: %s", info->data_dir, strerror(errno));
    return CL_EEMBEDDED;
  }
  if (st.st_uid != uid) {
    errf(err, errlen,
         "%s belongs to uid %u, but the server would run as %s (uid %u): "
         "run as that user, or as root with CLAIMER_PG_USER naming it",
         info->data_dir, (unsigned)st.st_uid, user, (unsigned)uid);
    return CL_EEMBEDDED;
  }
  return 0;
}

/* Opens the lock file of the state directory and waits for an exclusive
 * flock on it.  Returns the descriptor (closing it releases the lock) or
 * CL_EEMBEDDED. */
static int lock_take(const cl_embedded_info_t *info, uid_t uid, gid_t gid,
                     char *err, size_t errlen) {
  char path[PATH_MAX];
  struct stat st;
  int fd;

  if ((size_t)snprintf(path, sizeof path, "%s/lock", info->state_dir) >=
      sizeof path) {
    errf(err, errlen, "the state directory path %s is too long",
         info->state_dir);
    return CL_EEMBEDDED;
  }
  /* Close-on-exec: a server started below must not inherit the lock. */
  fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) {
    errf(err, errlen, "cannot open the lock file %s: %s", path,
         strerror(errno));
    return CL_EEMBEDDED;
  }
  if (uid != (uid_t)-1 && fstat(fd, &st) == 0 &&
      (st.st_uid != uid || st.st_gid != gid))
    (void)fchown(fd, uid, gid);
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      errf(err, errlen, "cannot lock %s: %s", path, strerror(errno));
      close(fd);
      return CL_EEMBEDDED;
    }
  }
  return fd;
}

/* The part of cl_embedded_ensure done under the lock.  Returns 0 or
 * CL_EEMBEDDED. */
static int ensure_locked(cl_embedded_info_t *info, const char *bindir,
                         const char *user, uid_t uid, gid_t gid, int root,
                         char *err, size_t errlen) {
  const char *as_user = root ? user : NULL;
  char version[PATH_MAX];
  struct stat st;
  int rc;

  rc = cl__mkdir_owned(info->socket_dir, 0700, root ? uid : (uid_t)-1,
                       root ? gid : (gid_t)-1);
  if (rc != 0) {
    errf(err, errlen, "cannot create the socket directory %s: %s",
         info->socket_dir, strerror(-rc));
    return CL_EEMBEDDED;
  }
  if ((size_t)snprintf(version, sizeof version, "%s/PG_VERSION",
                       info->data_dir) >= sizeof version) {
    errf(err, errlen, "the state directory path %s is too long",
         info->state_dir);
    return CL_EEMBEDDED;
  }
  if (stat(version, &st) != 0) {
    if (errno != ENOENT) {
      errf(err, errlen, "cannot look at %s: %s", version, strerror(errno));
      return CL_EEMBEDDED;
    }
    rc = cluster_create(info, bindir, as_user, user, err, errlen);
    if (rc != 0)
      return rc;
    info->created = 1;
  }
  rc = owner_check(info, user, uid, err, errlen);
  if (rc != 0)
    return rc;

  /* The common case costs one connection attempt, no process. */
  rc = server_up(info, bindir, as_user, START_TIMEOUT_S, err, errlen);
  if (rc != 0)
    return rc;
  info->running = 1;
  return database_ensure(info, user, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

/* Returns 0 with info filled (running from a ping; nothing created),
 * CL_EINVAL when info is NULL, or CL_EEMBEDDED when no state directory can
 * be chosen (HOME unset) or its path is too long. */
int cl_embedded_locate(const char *state_dir, cl_embedded_info_t *info) {
  char dir[PATH_MAX];
  char user[256];
  int rc;

  if (info == NULL)
    return CL_EINVAL;
  memset(info, 0, sizeof *info);
  rc = state_dir_resolve(state_dir, dir, sizeof dir, NULL, 0);
  if (rc != 0)
    return rc;
  if (cl__server_user(user, sizeof user, NULL, NULL, NULL, 0) != 0) {
    /* The user may not exist yet; name the one ensure would demand. */
    const char *want = geteuid() == 0 ? getenv("CLAIMER_PG_USER") : NULL;

    snprintf(user, sizeof user, "%s",
             want != NULL && want[0] != '\0' ? want : "postgres");
  }
  rc = info_fill(dir, user, info, NULL, 0);
  if (rc != 0)
    return rc;
  info->running = ping(info) == PQPING_OK;
  return 0;
}

/* Returns 0 with info (may be NULL) filled and the server running with its
 * claimer database, or CL_EEMBEDDED with a message in err naming what failed
 * and quoting the end of the log. */
int cl_embedded_ensure(const char *state_dir, cl_embedded_info_t *info,
                       char *err, size_t errlen) {
  cl_embedded_info_t local;
  char dir[PATH_MAX];
  char bindir[PATH_MAX];
  char user[256];
  uid_t uid;
  gid_t gid;
  int root = geteuid() == 0;
  int lock_fd;
  int rc;

  if (info == NULL)
    info = &local;
  memset(info, 0, sizeof *info);
  if (state_dir_resolve(state_dir, dir, sizeof dir, err, errlen) != 0 ||
      path_check(dir, err, errlen) != 0 ||
      cl__server_user(user, sizeof user, &uid, &gid, err, errlen) != 0 ||
      info_fill(dir, user, info, err, errlen) != 0)
    return CL_EEMBEDDED;
  {
    size_t limit = sizeof(((struct sockaddr_un *)NULL)->sun_path);
    size_t need = strlen(info->socket_dir) + sizeof "/.s.PGSQL." EMBEDDED_PORT;

    if (need > limit) {
      errf(err, errlen,
           "the socket directory %s is too long for a unix socket (%zu "
           "bytes with the socket name, at most %zu): choose a shorter state "
           "directory (CLAIMER_HOME)",
           info->socket_dir, need - 1, limit - 1);
      return CL_EEMBEDDED;
    }
  }
  if (home_check(info->state_dir, uid, err, errlen) != 0 ||
      cl__pg_bindir(bindir, sizeof bindir, err, errlen) != 0)
    return CL_EEMBEDDED;
  /* 0700: local connections are trusted, so only the owner (and root) may
   * reach the socket. */
  rc = cl__mkdir_owned(info->state_dir, 0700, root ? uid : (uid_t)-1,
                       root ? gid : (gid_t)-1);
  if (rc != 0) {
    errf(err, errlen, "cannot create the state directory %s: %s",
         info->state_dir, strerror(-rc));
    return CL_EEMBEDDED;
  }
  lock_fd = lock_take(info, root ? uid : (uid_t)-1, gid, err, errlen);
  if (lock_fd < 0)
    return CL_EEMBEDDED;
  rc = ensure_locked(info, bindir, user, uid, gid, root, err, errlen);
  close(lock_fd);
  if (rc != 0) {
    info->running = ping(info) == PQPING_OK;
    return CL_EEMBEDDED;
  }
  return 0;
}

/* Returns 0 when the server is stopped (also when it was not running or
 * there is no cluster), or CL_EEMBEDDED with a message in err. */
int cl_embedded_stop(const char *state_dir, char *err, size_t errlen) {
  cl_embedded_info_t info;
  char dir[PATH_MAX];
  char version[sizeof info.data_dir + 16];
  char bindir[PATH_MAX];
  char user[256];
  struct stat st;
  uid_t uid;
  gid_t gid;
  int root = geteuid() == 0;
  int lock_fd;
  int rc;

  if (state_dir_resolve(state_dir, dir, sizeof dir, err, errlen) != 0 ||
      info_fill(dir, "", &info, err, errlen) != 0)
    return CL_EEMBEDDED;
  if ((size_t)snprintf(version, sizeof version, "%s/PG_VERSION",
                       info.data_dir) < sizeof version &&
      stat(version, &st) != 0 && errno == ENOENT)
    return 0;
  if (path_check(dir, err, errlen) != 0 ||
      cl__server_user(user, sizeof user, &uid, &gid, err, errlen) != 0 ||
      home_check(dir, uid, err, errlen) != 0 ||
      cl__pg_bindir(bindir, sizeof bindir, err, errlen) != 0)
    return CL_EEMBEDDED;
  /* Wait for a concurrent ensure rather than stop a server mid-start. */
  lock_fd = lock_take(&info, root ? uid : (uid_t)-1, gid, err, errlen);
  if (lock_fd < 0)
    return CL_EEMBEDDED;
  rc = cl__pg_stop(bindir, info.data_dir, root ? user : NULL, "fast",
                   STOP_TIMEOUT_S, info.log_file, err, errlen);
  close(lock_fd);
  return rc == 0 ? 0 : CL_EEMBEDDED;
}
