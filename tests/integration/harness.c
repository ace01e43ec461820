/*
 * harness.c: starts and stops the throwaway PostgreSQL of one integration
 * test program, makes a database per test, and runs the claimer binary.
 * It is built on the same internal helpers as the embedded default
 * (claimer/proc.h), so every test run exercises those too.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "proc.h"

double th_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *th_claimer_bin(void) {
  const char *bin = getenv("CLAIMER_BIN");
  return bin ? bin : "claimer";
}

th_pg_t th_pg;

int th_group_setup(void **state) {
  (void)state;
  return th_pg_start(&th_pg);
}

int th_group_teardown(void **state) {
  (void)state;
  th_pg_stop(&th_pg);
  return 0;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

static void print_log(const th_pg_t *pg) {
  char tail[4096];
  if (cl__log_tail(pg->log, 30, tail, sizeof tail) > 0)
    fprintf(stderr, "--- %s (last lines)\n%s\n---\n", pg->log, tail);
}

static int write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return -1;
  fputs(text, f);
  return fclose(f);
}

int th_pg_start(th_pg_t *pg) {
  memset(pg, 0, sizeof *pg);
  const char *ext = getenv("CLAIMER_TEST_DSN");
  if (ext != NULL && *ext) {
    snprintf(pg->admin_dsn, sizeof pg->admin_dsn, "%s", ext);
    PGconn *c = PQconnectdb(ext);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (!ok)
      fprintf(stderr, "harness: CLAIMER_TEST_DSN: %s", PQerrorMessage(c));
    PQfinish(c);
    return ok ? 0 : -1;
  }
  char err[1024];
  uid_t uid;
  gid_t gid;
  if (cl__pg_bindir(pg->bindir, sizeof pg->bindir, err, sizeof err) != 0 ||
      cl__server_user(pg->user, sizeof pg->user, &uid, &gid, err, sizeof err) !=
          0) {
    fprintf(stderr, "harness: %s\n", err);
    return -1;
  }
  snprintf(pg->dir, sizeof pg->dir, "/tmp/claimer-test-XXXXXX");
  if (mkdtemp(pg->dir) == NULL ||
      cl__mkdir_owned(pg->dir, 0700, uid, gid) != 0) {
    fprintf(stderr, "harness: cannot make %s: %s\n", pg->dir, strerror(errno));
    return -1;
  }
  pg->own = 1;
  snprintf(pg->sockdir, sizeof pg->sockdir, "%s/sock", pg->dir);
  snprintf(pg->log, sizeof pg->log, "%s/server.log", pg->dir);
  cl__mkdir_owned(pg->sockdir, 0700, uid, gid);
  char data[700];
  snprintf(data, sizeof data, "%s/data", pg->dir);
  const char *as_user = getuid() == 0 ? pg->user : NULL;
  /* The port is chosen free, then bound by the server; retry on a race. */
  for (int attempt = 0; attempt < 5; attempt++) {
    pg->port = free_port();
    char conf[1024];
    snprintf(conf, sizeof conf,
             "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
             "listen_addresses = '127.0.0.1'\nport = %d\n"
             "unix_socket_directories = '%s'\nmax_connections = 60\n"
             "shared_buffers = 64MB\nlog_min_messages = warning\n"
             "password_encryption = 'scram-sha-256'\n",
             pg->port, pg->sockdir);
    if (attempt == 0) {
      const char *extra[] = {"--no-sync", "--auth-host=trust", NULL};
      if (cl__initdb(pg->bindir, data, as_user, pg->user, extra, conf, pg->log,
                     err, sizeof err) != 0) {
        fprintf(stderr, "harness: %s\n", err);
        return -1;
      }
      char hba[800];
      snprintf(hba, sizeof hba, "%s/pg_hba.conf", data);
      write_file(hba, "local all all trust\n"
                      "host all claimer_pw 127.0.0.1/32 scram-sha-256\n"
                      "host all all 127.0.0.1/32 trust\n");
    } else {
      char auto_conf[800];
      snprintf(auto_conf, sizeof auto_conf, "%s/postgresql.auto.conf", data);
      char line[64];
      snprintf(line, sizeof line, "port = %d\n", pg->port);
      write_file(auto_conf, line);
    }
    if (cl__pg_start(pg->bindir, data, as_user, pg->log, pg->dir, 60, err,
                     sizeof err) == 0)
      break;
    if (attempt == 4) {
      fprintf(stderr, "harness: %s\n", err);
      print_log(pg);
      return -1;
    }
  }
  snprintf(pg->admin_dsn, sizeof pg->admin_dsn,
           "host=%s port=%d dbname=postgres user=%s", pg->sockdir, pg->port,
           pg->user);
  PGconn *c = PQconnectdb(pg->admin_dsn);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "harness: %s", PQerrorMessage(c));
    PQfinish(c);
    print_log(pg);
    return -1;
  }
  PGresult *r = PQexec(c, "CREATE ROLE claimer_pw LOGIN SUPERUSER "
                          "PASSWORD 'right-password'");
  PQclear(r);
  PQfinish(c);
  return 0;
}

void th_pg_stop(th_pg_t *pg) {
  if (!pg->own)
    return;
  char data[700], err[512];
  snprintf(data, sizeof data, "%s/data", pg->dir);
  cl__pg_stop(pg->bindir, data, getuid() == 0 ? pg->user : NULL, "immediate",
              30, NULL, err, sizeof err);
  if (getenv("CLAIMER_TEST_KEEP") == NULL)
    cl__rmtree(pg->dir);
  pg->own = 0;
}

/* Rewrites dsn with dbname replaced, as key=value. */
static int dsn_with_db(const char *base, const char *db, const char *host,
                       int port, char *out, size_t n) {
  char *errmsg = NULL;
  PQconninfoOption *opts = PQconninfoParse(base, &errmsg);
  if (opts == NULL) {
    PQfreemem(errmsg);
    return -1;
  }
  size_t len = 0;
  out[0] = '\0';
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    const char *v = o->val;
    if (strcmp(o->keyword, "dbname") == 0)
      continue;
    if (host && strcmp(o->keyword, "host") == 0)
      v = host;
    if (host && strcmp(o->keyword, "port") == 0)
      continue;
    if (v == NULL || *v == '\0')
      continue;
    len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s='%s' ",
                            o->keyword, v);
  }
  if (port > 0)
    len += (size_t)snprintf(out + len, len < n ? n - len : 0, "port=%d ", port);
  len += (size_t)snprintf(out + len, len < n ? n - len : 0, "dbname=%s", db);
  PQconninfoFree(opts);
  return len < n ? 0 : -1;
}

int th_db_create(th_pg_t *pg, const char *name, int migrate, char *dsn,
                 size_t n) {
  PGconn *c = PQconnectdb(pg->admin_dsn);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "harness: %s", PQerrorMessage(c));
    PQfinish(c);
    return -1;
  }
  char sql[512];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)",
           name);
  PQclear(PQexec(c, sql));
  snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
  PGresult *r = PQexec(c, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok)
    fprintf(stderr, "harness: %s", PQresultErrorMessage(r));
  PQclear(r);
  PQfinish(c);
  if (!ok || dsn_with_db(pg->admin_dsn, name, NULL, 0, dsn, n) != 0)
    return -1;
  if (migrate) {
    cl_conn_t *cc = NULL;
    int rc = cl_conn_new(&cc, dsn);
    if (rc == 0)
      rc = cl_migrate(cc, NULL, NULL);
    if (rc < 0)
      fprintf(stderr, "harness: migrate: %s\n",
              cc ? cl_conn_last_error(cc) : cl_strerror(rc));
    cl_conn_free(&cc);
    if (rc < 0)
      return -1;
  }
  return 0;
}

int th_db_tcp_dsn(th_pg_t *pg, const char *name, int port, char *dsn,
                  size_t n) {
  if (!pg->own)
    return -1;
  return dsn_with_db(pg->admin_dsn, name, "127.0.0.1",
                     port > 0 ? port : pg->port, dsn, n);
}

PGconn *th_connect(const char *dsn) {
  PGconn *c = PQconnectdb(dsn);
  if (PQstatus(c) != CONNECTION_OK)
    fail_msg("connect: %s", PQerrorMessage(c));
  return c;
}

void th_exec(PGconn *pg, const char *sql) {
  PGresult *r = PQexec(pg, sql);
  ExecStatusType s = PQresultStatus(r);
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
    PQclear(r);
    fail_msg("%s: %s", sql, msg);
  }
  PQclear(r);
}

/* The answer to sql, which must return at least one row, or fails the
 * test: the first column of its first row, to be read before PQclear. */
static PGresult *first_row(PGconn *pg, const char *sql) {
  PGresult *r = PQexec(pg, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
    PQclear(r);
    fail_msg("%s: %s", sql, msg);
  }
  return r;
}

long th_long(PGconn *pg, const char *sql) {
  PGresult *r = first_row(pg, sql);
  long v = atol(PQgetvalue(r, 0, 0));
  PQclear(r);
  return v;
}

void th_text(PGconn *pg, const char *sql, char *buf, size_t cap) {
  PGresult *r = first_row(pg, sql);
  snprintf(buf, cap, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
}

int th_run(const char *const argv[], const char *stdin_data, char **output) {
  char inpath[] = "/tmp/claimer-test-in-XXXXXX";
  char outpath[] = "/tmp/claimer-test-out-XXXXXX";
  int in = mkstemp(inpath);
  int out = mkstemp(outpath);
  if (in < 0 || out < 0)
    fail_msg("mkstemp: %s", strerror(errno));
  if (stdin_data != NULL) {
    size_t len = strlen(stdin_data), off = 0;
    while (off < len) {
      ssize_t w = write(in, stdin_data + off, len - off);
      if (w <= 0)
        fail_msg("write: %s", strerror(errno));
      off += (size_t)w;
    }
    lseek(in, 0, SEEK_SET);
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    unsetenv("CLAIMER_DSN");
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  close(in);
  unlink(inpath);
  if (output != NULL) {
    off_t size = lseek(out, 0, SEEK_END);
    char *buf = malloc((size_t)size + 1);
    lseek(out, 0, SEEK_SET);
    ssize_t got = read(out, buf, (size_t)size);
    buf[got > 0 ? got : 0] = '\0';
    *output = buf;
  }
  close(out);
  unlink(outpath);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

pid_t th_spawn(const char *const argv[], const char *log_path) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int in = open("/dev/null", O_RDONLY);
    if (fd < 0 || in < 0)
      _exit(126);
    dup2(in, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    setpgid(0, 0);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  if (pid < 0)
    fail_msg("fork: %s", strerror(errno));
  return pid;
}

int th_wait_sigterm_caught(pid_t pid, double timeout_s) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  double end = th_now() + timeout_s;
  while (th_now() < end) {
    FILE *f = fopen(path, "r");
    if (f == NULL)
      return 0;
    char line[256];
    unsigned long long mask = 0;
    while (fgets(line, sizeof line, f) != NULL)
      if (sscanf(line, "SigCgt: %llx", &mask) == 1)
        break;
    fclose(f);
    if (mask & (1ULL << (SIGTERM - 1)))
      return 1;
    usleep(10 * 1000);
  }
  return 0;
}

int th_wait_exit(pid_t pid, double timeout_s) {
  double end = th_now() + timeout_s;
  while (th_now() < end) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return -1;
}

char *th_read_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return strdup("");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)(size > 0 ? size : 0) + 1);
  size_t got = size > 0 ? fread(buf, 1, (size_t)size, f) : 0;
  buf[got] = '\0';
  fclose(f);
  return buf;
}

int th_count(const char *s, const char *needle) {
  int n = 0;
  for (; (s = strstr(s, needle)) != NULL; s++)
    n++;
  return n;
}

int th_wrap(const char **argv, int max) {
  static char wrap[512];
  const char *w = getenv("CLAIMER_TEST_WRAP");
  int n = 0;
  if (w == NULL || !*w)
    return 0;
  snprintf(wrap, sizeof wrap, "%s", w);
  for (char *t = strtok(wrap, " "); t && n < max; t = strtok(NULL, " "))
    argv[n++] = t;
  return n;
}

void th_filter_from_env(void) {
  const char *f = getenv("CLAIMER_TEST_FILTER");
  if (f != NULL && *f)
    cmocka_set_test_filter(f);
}

void th_pg_restart(th_pg_t *pg, double pause_s) {
  char data[700], err[512];
  snprintf(data, sizeof data, "%s/data", pg->dir);
  const char *as_user = getuid() == 0 ? pg->user : NULL;
  if (cl__pg_stop(pg->bindir, data, as_user, "fast", 30, NULL, err,
                  sizeof err) != 0)
    fail_msg("pg_ctl stop: %s", err);
  struct timespec ts = {(time_t)pause_s,
                        (long)((pause_s - (double)(time_t)pause_s) * 1e9)};
  nanosleep(&ts, NULL);
  if (cl__pg_start(pg->bindir, data, as_user, pg->log, pg->dir, 60, err,
                   sizeof err) != 0)
    fail_msg("pg_ctl start: %s", err);
}
