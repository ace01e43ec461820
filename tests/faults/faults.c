/*
 * faults.c: the fault harness.  It runs the whole system on a throwaway
 * PostgreSQL (the integration harness's): the reaper, N `claimer work`
 * daemons whose exec handler applies an idempotent side effect keyed by
 * CLAIMER_IDEMPOTENCY_KEY, `claimer send` for two subscribers with exec
 * sinks of the same kind, producer processes enqueueing batches through
 * the library (a batch whose outcome is unknown is sent again, as a new
 * operation) and one in-process client claiming, completing and failing
 * with the blocking API.  Meanwhile it injects faults drawn from a seeded
 * PRNG (the seed is printed; --seed replays the schedule), records every
 * client operation Jepsen-style (invoke, then ok, fail or info), and after
 * the drain dumps the final state and runs the checker (checker.h) over
 * the run's files (history.h has their formats).
 *
 * Faults of this slice: kill -9 of a random worker, sender, reaper or
 * producer (restarted at once), SIGSTOP of a worker past its lease then
 * SIGCONT, pg_terminate_backend of random claimer backends, one `pg_ctl
 * restart -m immediate`, and 1% poison items (their handler always exits
 * 1: they must end dead, and only they).
 *
 * And through cutproxy (tests/tools/cutproxy.c, driven by its control
 * FIFO), which stands between every claimer process (reaper, workers,
 * senders, producers, client; sslmode=disable) and PostgreSQL, while the
 * harness's own checks and dumps connect directly: `cut` resets every live
 * connection; `blackhole` holds all traffic 2-5 s, then resumes or resets;
 * `latency` adds 50-200 ms per forwarded chunk for 3-6 s;
 * `cut_after_commit` arms the proxy to drop the answer of the next
 * complete (its Bind) and reset once the server has sent ReadyForQuery,
 * after the commit (recorded when the proxy logs the cut); `retry_storm`
 * resets every connection and has every producer resend its last batch
 * at one moment (a new operation; enqueue is idempotent by id), and what
 * fails again at once, without backoff, for 4 s.  Sessions of the
 * harness's own: `held_xmin`, a repeatable-read snapshot held for a third
 * of the duration (30 to 60 s; the restart ends it and it is opened again
 * for the rest), and `idle_in_tx`, a transaction with an xid left idle
 * 10-20 s; the report gives claimer's dead tuples at each one's start and
 * end.
 *
 * The seed fixes the schedule: the order of the fault kinds, the gaps
 * between them, the targets (as indexes into the processes or backends
 * running then), the stop lengths, the share of items settled at which
 * PostgreSQL restarts, and the poison items.  It cannot fix the system's
 * own timing, so a replay meets the same faults, not the same
 * interleavings.
 *
 * Words: a "proc" is one process the harness keeps running (it restarts a
 * killed one under the same name); the "calm" window is the start of the
 * run, before the first fault, whose throughput is the baseline.
 *
 * Two things the harness does for the files' sake, said here so nobody is
 * surprised: a handler writes its run line once, at its end; its start is
 * first written to starts/TOKEN, and a handler killed before its end
 * leaves that file, which the dump turns into a run line without an end.
 * The sinks' effect is `mkdir effects/SINK/KEY` (it succeeds once per
 * key), then a line in effects.jsonl; a sink killed between the two left
 * the effect without its line, which the dump adds from the directory (and
 * counts: "effects recorded from the sinks' stores").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libpq-fe.h>

#include "checker.h"
#include "claimer/claimer.h"
#include "harness.h"
#include "proc.h"
#include "sql.h"

#ifndef FAULTS_SQL
#error "FAULTS_SQL (the path of grants.sql) is set by meson"
#endif

#define QUEUE "faults"
#define LEASE_S "3"
#define CLIENT_LEASE_S 5.0
#define STOP_PAST_LEASE_S 3.0
#define DRAIN_STALL_S 120.0
#define BATCH 50
#define BACKLOG 600
#define MAXPROD 8
#define MAXWORK 16
#define MAXPROCS 40
#define MAXFAULTS 4096

static const char *const subs[] = {"mail", "audit"};
enum { NSUBS = 2 };

typedef enum { K_WORK, K_SEND, K_REAP, K_PRODUCER, K_CLIENT } kind_t;

typedef struct {
  kind_t kind;
  int ix; /* the subscriber of a sender, the number of a producer */
  char name[32];
  pid_t pid; /* 0: not running */
  int starts;
  int stopped;       /* SIGSTOPped, waiting for its SIGCONT */
  double cont_at;    /* monotonic: SIGCONT at the latest then */
  double regrant_at; /* monotonic: from then, SIGCONT once every lease it
                        held was granted again (a worker, the client) */
  double resumed_at; /* monotonic: its last SIGCONT */
  int done;          /* a producer that finished its share */
  int unexpected;    /* exits the harness did not cause */
} proc_t;

/* Shared with the forked producers and the client (MAP_SHARED). */
typedef struct {
  long next_batch[MAXPROD];
  long op_id[MAXPROD + 1]; /* the last op id of each producer, the client */
  volatile long allow;     /* producers enqueue item indexes below this */
  volatile int client_stop;
  /* The retry storm (monotonic): a producer whose operation fails before
   * storm_until waits for storm_at, then resends at once, no backoff. */
  volatile double storm_at, storm_until;
  volatile long storm_gen; /* each storm: every producer resends its last */
  volatile long storm_resends;
} shm_t;

typedef struct {
  const char *kind;
  char target[64];
  double wall, end_wall; /* the fault's start and end, wall seconds */
  /* A fault that lasts: it ends at end_at (monotonic; 0: not open). */
  double end_at;
  int then_reset;     /* a blackhole that ends with a reset */
  PGconn *sess;       /* held_xmin, idle_in_tx: the session */
  long dead_at_start; /* held_xmin, idle_in_tx: claimer's dead tuples */
  long dead_at_end;   /* at the start and at the end (-1: unknown) */
} fault_t;

static struct {
  long items;
  const char *items_from; /* which setting gave the number */
  double duration;
  int workers, producers;
  uint64_t seed, rng;
  char dir[600];
  int keep;
  char dsn[1024];  /* direct: the harness's own checks and dumps */
  char pdsn[1200]; /* through the proxy: every claimer process */
  pid_t proxy_pid;
  int proxy_ctl;         /* the control FIFO's write end */
  long proxy_after_cuts; /* "after forwarding trigger" lines seen */
  int after_armed;       /* a cut_after_commit waits for its statement */
  long allow_bonus;      /* a storm's extra backlog */
  PGconn *db;
  shm_t *shm;
  proc_t procs[MAXPROCS];
  int nprocs;
  fault_t faults[MAXFAULTS];
  int nfaults;
  long poison;
  int unfenced;        /* --unfenced: the proxy removes the complete's fence */
  long backlog;        /* items enqueued ahead of the settled ones */
  double client_sleep; /* the in-process handler's run, seconds */
} R;

/* SIGINT, SIGTERM: the run is abandoned (abandon_run). */
static volatile sig_atomic_t interrupted;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "faults: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

/* splitmix64: the schedule's PRNG, and a hash for per-item choices. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t rnd(void) { return mix64(R.rng++ ^ R.seed); }
static double rnd_unit(void) {
  return (double)(rnd() >> 11) / 9007199254740992.0;
}
static int rnd_below(int n) { return (int)(rnd() % (uint64_t)n); }

/* Whether item number i is poison: 1 in 100, fixed by the seed. */
static int is_poison(long i) {
  return mix64(R.seed ^ 0x706f69736f6eull ^ (uint64_t)i) % 100 == 0;
}

static void item_id(long i, char *out, size_t n) {
  snprintf(out, n, "f-%06ld", i);
}

static void path_of(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", R.dir, name);
}

/* Appends line (with its newline) to dir/file in one write(). */
static void append_line(int fd, const char *line) {
  size_t len = strlen(line);
  ssize_t w = write(fd, line, len);
  (void)w;
}

static int open_append(const char *file) {
  char p[800];
  path_of(p, sizeof p, file);
  int fd = open(p, O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0)
    die("%s: %s", p, strerror(errno));
  return fd;
}

static void write_text(const char *file, const char *text) {
  char p[800];
  path_of(p, sizeof p, file);
  FILE *f = fopen(p, "w");
  if (!f || fputs(text, f) < 0 || fclose(f) != 0)
    die("%s: %s", p, strerror(errno));
}

/* Runs sql on the harness's own connection, reconnecting once when the
 * connection was lost (a fault of the harness's making).  Returns the
 * result (PQclear it), or NULL after printing why. */
static PGresult *q(const char *sql) {
  for (int attempt = 0; attempt < 2; attempt++) {
    if (PQstatus(R.db) != CONNECTION_OK)
      PQreset(R.db);
    PGresult *r = PQexec(R.db, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK)
      return r;
    if (attempt == 1 || PQstatus(R.db) == CONNECTION_OK) {
      fprintf(stderr, "faults: %s: %s", sql, PQresultErrorMessage(r));
      PQclear(r);
      return NULL;
    }
    PQclear(r);
  }
  return NULL;
}

/* The first column of the first row as a long; -1 when it failed. */
static long q_long(const char *sql) {
  PGresult *r = q(sql);
  long v = r && PQntuples(r) > 0 ? atol(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return v;
}

/* ------------------------------------------------------------------------ */
/* History lines (history.h)                                                */

/* Writes one history line: the common fields, then extra (a JSON
 * fragment starting with a comma, or ""). */
static void history(int fd, const char *p, const char *op, long id,
                    const char *type, const char *extra) {
  struct timespec m;
  clock_gettime(CLOCK_MONOTONIC, &m);
  char line[4000];
  int n = snprintf(line, sizeof line,
                   "{\"p\":\"%s\",\"op\":\"%s\",\"id\":%ld,\"type\":\"%s\","
                   "\"mono\":%.6f,\"wall\":%.6f%s}\n",
                   p, op, id, type, (double)m.tv_sec + (double)m.tv_nsec / 1e9,
                   wall_now(), extra);
  if (n > 0 && (size_t)n < sizeof line)
    append_line(fd, line);
}

/* The reason of a failed call, as a JSON fragment (quotes and control
 * characters dropped: it is for people). */
static void error_field(char *out, size_t n, int rc, cl_conn_t *c) {
  char msg[200];
  snprintf(msg, sizeof msg, "%s: %s", cl_err_name(rc),
           c ? cl_conn_last_error(c) : "");
  for (char *s = msg; *s; s++)
    if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
      *s = ' ';
  snprintf(out, n, ",\"error\":\"%s\"", msg);
}

/* ------------------------------------------------------------------------ */
/* The producers and the client (forked children, the library's API)      */

/* One producer's batch: its items and the history's items field. */
typedef struct {
  cl_item_t items[BATCH];
  char ids[BATCH][24], payloads[BATCH][64];
  char extra[3500];
  int m;
} batch_t;

static void build_batch(long g, batch_t *b) {
  long first = g * BATCH;
  b->m = (int)(R.items - first < BATCH ? R.items - first : BATCH);
  size_t len = (size_t)snprintf(b->extra, sizeof b->extra, ",\"items\":[");
  for (int i = 0; i < b->m; i++) {
    item_id(first + i, b->ids[i], sizeof b->ids[i]);
    snprintf(b->payloads[i], sizeof b->payloads[i], "{\"n\":%ld%s}", first + i,
             is_poison(first + i) ? ",\"poison\":true" : "");
    b->items[i] = (cl_item_t){
        .item_id = b->ids[i], .queue = QUEUE, .payload = b->payloads[i]};
    len += (size_t)snprintf(b->extra + len, sizeof b->extra - len, "%s\"%s\"",
                            i ? "," : "", b->ids[i]);
  }
  snprintf(b->extra + len, sizeof b->extra - len, "]");
}

/* Enqueues b until it is known committed, each try a new operation. */
static void send_batch(int fd, const char *name, int k, cl_conn_t *c,
                       const batch_t *b) {
  for (;;) {
    long id = ++R.shm->op_id[k];
    history(fd, name, "enqueue", id, "invoke", b->extra);
    int rc = cl_enqueue(c, b->items, (size_t)b->m, NULL);
    if (rc >= 0) {
      history(fd, name, "enqueue", id, "ok", "");
      return;
    }
    char err[300];
    error_field(err, sizeof err, rc, c);
    /* Not connected: nothing was sent.  Anything else may have
     * committed: the retry below is a new operation. */
    history(fd, name, "enqueue", id, rc == CL_ECONNECT ? "fail" : "info", err);
    if (th_now() < R.shm->storm_until) {
      /* The storm: every producer resends at the same moment, and again
       * at once while it fails (a pause of 10 ms, not to spin). */
      while (th_now() < R.shm->storm_at)
        sleep_s(0.005);
      __atomic_add_fetch(&R.shm->storm_resends, 1, __ATOMIC_RELAXED);
      if (cl_conn_reset(c) != 0)
        sleep_s(0.01);
      continue;
    }
    sleep_s(0.2);
    if (cl_conn_reset(c) != 0)
      sleep_s(0.3);
  }
}

/* In a retry storm, a producer resends its last batch at storm_at, as a
 * client whose answer timed out would (enqueue is idempotent by item id,
 * and retention keeps finished items for days, far past the run). */
static void storm_check(int fd, const char *name, int k, cl_conn_t *c,
                        long *seen, batch_t *b) {
  long gen = R.shm->storm_gen;
  if (gen == *seen)
    return;
  *seen = gen;
  if (R.shm->next_batch[k] == 0)
    return;
  while (th_now() < R.shm->storm_at)
    sleep_s(0.005);
  build_batch((R.shm->next_batch[k] - 1) * R.producers + k, b);
  __atomic_add_fetch(&R.shm->storm_resends, 1, __ATOMIC_RELAXED);
  send_batch(fd, name, k, c, b);
}

static void producer_main(int k) {
  char name[32];
  snprintf(name, sizeof name, "producer-%d", k + 1);
  int fd = open_append("history.jsonl");
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, R.pdsn) != 0)
    _exit(3);
  long nbatches = (R.items + BATCH - 1) / BATCH;
  static batch_t b;
  long seen = R.shm->storm_gen; /* a restarted producer: no old storm */
  for (;;) {
    storm_check(fd, name, k, c, &seen, &b);
    long g = R.shm->next_batch[k] * R.producers + k;
    if (g >= nbatches)
      break;
    long first = g * BATCH;
    int m = (int)(R.items - first < BATCH ? R.items - first : BATCH);
    while (first + m > R.shm->allow) {
      storm_check(fd, name, k, c, &seen, &b);
      sleep_s(0.05);
    }
    build_batch(g, &b);
    send_batch(fd, name, k, c, &b);
    R.shm->next_batch[k]++;
  }
  cl_conn_free(&c);
  _exit(0);
}

/* The in-process handler: the same side effect as the exec handler's,
 * its run line written at its end. */
static void client_run(int fd_runs, int fd_effects, const cl_lease_t *l,
                       int poison) {
  double start = wall_now();
  if (R.client_sleep > 0)
    sleep_s(R.client_sleep);
  if (!poison) {
    char p[800];
    snprintf(p, sizeof p, "%s/effects/work/%s", R.dir, l->item_id);
    if (mkdir(p, 0755) == 0) {
      char line[300];
      snprintf(line, sizeof line, "{\"sink\":\"work\",\"key\":\"%s\"}\n",
               l->item_id);
      append_line(fd_effects, line);
    }
  }
  char line[600];
  snprintf(line, sizeof line,
           "{\"item\":\"%s\",\"token\":\"%s\",\"attempt\":%d,\"start\":%.6f,"
           "\"end\":%.6f,\"key\":\"%s\",\"by\":\"client-1\"}\n",
           l->item_id, l->token, l->attempt, start, wall_now(), l->item_id);
  append_line(fd_runs, line);
}

static void client_main(void) {
  const char *name = "client-1";
  int fd = open_append("history.jsonl");
  int fd_runs = open_append("runs.jsonl");
  int fd_effects = open_append("effects.jsonl");
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, R.pdsn) != 0)
    _exit(3);
  long *ids = &R.shm->op_id[MAXPROD];
  while (!R.shm->client_stop) {
    long id = ++*ids;
    history(fd, name, "claim", id, "invoke", ",\"worker\":\"client-1\"");
    cl_lease_t *l = NULL;
    size_t n = 0;
    int rc = cl_claim(c, QUEUE, name, 4, CLIENT_LEASE_S, &l, &n);
    if (rc != 0) {
      char err[300];
      error_field(err, sizeof err, rc, c);
      history(fd, name, "claim", id, rc == CL_ECONNECT ? "fail" : "info", err);
      /* In a retry storm the client claims again at once, as a producer
       * resends. */
      if (th_now() < R.shm->storm_until) {
        if (cl_conn_reset(c) != 0)
          sleep_s(0.01);
        continue;
      }
      sleep_s(0.3);
      if (cl_conn_reset(c) != 0)
        sleep_s(0.3);
      continue;
    }
    char extra[3500];
    size_t len = (size_t)snprintf(extra, sizeof extra, ",\"items\":[");
    for (size_t i = 0; i < n; i++)
      len += (size_t)snprintf(extra + len, sizeof extra - len, "%s\"%s\"",
                              i ? "," : "", l[i].item_id);
    len += (size_t)snprintf(extra + len, sizeof extra - len, "],\"tokens\":[");
    for (size_t i = 0; i < n; i++)
      len += (size_t)snprintf(extra + len, sizeof extra - len, "%s\"%s\"",
                              i ? "," : "", l[i].token);
    snprintf(extra + len, sizeof extra - len, "]");
    history(fd, name, "claim", id, "ok", extra);
    for (size_t i = 0; i < n; i++) {
      int poison = strstr(l[i].payload, "\"poison\": true") != NULL ||
                   strstr(l[i].payload, "\"poison\":true") != NULL;
      client_run(fd_runs, fd_effects, &l[i], poison);
      char fields[400];
      snprintf(fields, sizeof fields, ",\"item\":\"%s\",\"token\":\"%s\"",
               l[i].item_id, l[i].token);
      long oid = ++*ids;
      const char *op = poison ? "fail" : "complete";
      history(fd, name, op, oid, "invoke", fields);
      if (poison)
        rc = cl_fail(c, l[i].item_id, l[i].token, "poison", 0, -1, NULL);
      else
        rc = cl_complete(c, l[i].item_id, l[i].token, "{\"ok\":true}", NULL);
      if (rc == 0) {
        history(fd, name, op, oid, "ok", "");
      } else {
        char err[300];
        error_field(err, sizeof err, rc, c);
        history(fd, name, op, oid, rc == CL_ELEASE_LOST ? "fail" : "info", err);
      }
    }
    cl_leases_free(l, n);
    sleep_s(n ? 0.05 : 0.2);
  }
  cl_conn_free(&c);
  _exit(0);
}

/* ------------------------------------------------------------------------ */
/* Processes                                                                */

static proc_t *add_proc(kind_t kind, int ix, const char *name) {
  if (R.nprocs == MAXPROCS)
    die("too many processes");
  proc_t *p = &R.procs[R.nprocs++];
  memset(p, 0, sizeof *p);
  p->kind = kind;
  p->ix = ix;
  snprintf(p->name, sizeof p->name, "%s", name);
  return p;
}

static void start_proc(proc_t *p) {
  char log[800], exec_cmd[1000];
  snprintf(log, sizeof log, "%s/logs/%s.%d.log", R.dir, p->name, ++p->starts);
  p->stopped = 0;
  if (p->kind == K_PRODUCER || p->kind == K_CLIENT) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
      die("fork: %s", strerror(errno));
    if (pid == 0) {
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      setpgid(0, 0);
      int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      if (p->kind == K_PRODUCER)
        producer_main(p->ix);
      client_main();
    }
    p->pid = pid;
    return;
  }
  const char *argv[40];
  int n = 0;
  argv[n++] = th_claimer_bin();
  if (p->kind == K_WORK) {
    snprintf(exec_cmd, sizeof exec_cmd, ". '%s/handler.sh'", R.dir);
    const char *a[] = {"work",  "-q",      QUEUE,    "--name",
                       p->name, "--lease", LEASE_S,  "--concurrency",
                       "4",     "--exec",  exec_cmd, NULL};
    for (int i = 0; a[i]; i++)
      argv[n++] = a[i];
  } else if (p->kind == K_SEND) {
    snprintf(exec_cmd, sizeof exec_cmd, "s=%s; . '%s/sink.sh'", subs[p->ix],
             R.dir);
    const char *a[] = {
        "send",    "--subscriber", subs[p->ix], "--name", p->name,
        "--lease", LEASE_S,        "--poll",    "0.2",    "--timeout",
        "10",      "--exec",       exec_cmd,    NULL};
    for (int i = 0; a[i]; i++)
      argv[n++] = a[i];
  } else {
    const char *a[] = {"reap", "--interval", "500ms", NULL};
    for (int i = 0; a[i]; i++)
      argv[n++] = a[i];
  }
  argv[n++] = "--log-level";
  /* A worker's debug events are its history of operations (below). */
  argv[n++] = p->kind == K_WORK ? "debug" : "info";
  argv[n++] = "--dsn";
  argv[n++] = R.pdsn;
  argv[n] = NULL;
  p->pid = th_spawn(argv, log);
}

static void print_log_tail(const proc_t *p) {
  char log[800], tail[3000];
  snprintf(log, sizeof log, "%s/logs/%s.%d.log", R.dir, p->name, p->starts);
  if (cl__log_tail(log, 15, tail, sizeof tail) > 0)
    fprintf(stderr, "---- %s (last lines)\n%s\n----\n", log, tail);
}

/* Collects exited children: a producer that finished is done; any other
 * exit the harness did not cause is counted, shown and restarted. */
static void reap_children(int restart) {
  for (;;) {
    int st = 0;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0)
      return;
    for (int i = 0; i < R.nprocs; i++) {
      proc_t *p = &R.procs[i];
      if (p->pid != pid)
        continue;
      p->pid = 0;
      if (p->kind == K_PRODUCER && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        p->done = 1;
        break;
      }
      if (!restart)
        break;
      p->unexpected++;
      fprintf(stderr, "faults: %s exited by itself (status %d); restarted\n",
              p->name, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
      print_log_tail(p);
      start_proc(p);
      break;
    }
  }
}

/* Kills p with SIGKILL (its process group) and waits for it. */
static void kill_wait(proc_t *p) {
  kill(-p->pid, SIGKILL);
  kill(-p->pid, SIGCONT);
  th_wait_exit(p->pid, 20);
  p->pid = 0;
  p->stopped = 0;
}

/* ------------------------------------------------------------------------ */
/* Faults                                                                   */

static fault_t *new_fault(const char *kind, const char *target) {
  if (R.nfaults == MAXFAULTS)
    return NULL;
  fault_t *f = &R.faults[R.nfaults++];
  f->kind = kind;
  snprintf(f->target, sizeof f->target, "%s", target);
  f->wall = f->end_wall = wall_now();
  return f;
}

/* A random running proc of kind (not stopped), or NULL. */
static proc_t *pick(kind_t kind) {
  proc_t *c[MAXPROCS];
  int n = 0;
  for (int i = 0; i < R.nprocs; i++)
    if (R.procs[i].kind == kind && R.procs[i].pid > 0 && !R.procs[i].stopped)
      c[n++] = &R.procs[i];
  return n ? c[rnd_below(n)] : NULL;
}

static void fault_kill9(kind_t want) {
  proc_t *p = pick(want);
  for (int k = 0; !p && k < 4; k++)
    p = pick((kind_t)k);
  if (!p)
    return;
  fault_t *f = new_fault("kill9", p->name);
  kill_wait(p);
  start_proc(p);
  if (f)
    f->end_wall = wall_now();
  printf("  fault kill9 %s\n", p->name);
}

/* SIGSTOPs a worker, a sender or the in-process client past its lease.
 * A sender is resumed after its lease plus 3-5 s.  A worker or the client
 * is resumed as soon as every lease it held has been granted to another
 * (or at the latest after its lease plus 8-10 s): its late completes then
 * meet the item's next holder still at work, the zombie at its worst. */
static void fault_stop(double now, kind_t want) {
  proc_t *p = pick(want);
  if (!p)
    p = pick(K_WORK);
  if (!p)
    return;
  new_fault("stop_cont", p->name); /* its end is set at the SIGCONT */
  kill(p->pid, SIGSTOP);
  p->stopped = 1;
  double lease = p->kind == K_CLIENT ? CLIENT_LEASE_S : atof(LEASE_S);
  p->cont_at = now + lease + STOP_PAST_LEASE_S + 2 * rnd_unit();
  p->regrant_at = 0;
  if (p->kind != K_SEND) {
    p->cont_at += 5;
    p->regrant_at = now + lease + 0.2;
  }
  printf("  fault stop_cont %s (%s)\n", p->name,
         p->kind == K_SEND ? "resumed after its lease"
                           : "resumed once its leases are granted again");
}

/* Whether a lease p was granted is still neither ended by p nor granted
 * to another (faults.grants). */
static int leases_waiting(const proc_t *p) {
  char sql[900];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM faults.grants g WHERE g.kind = 'grant' AND "
           "g.worker_id = '%s' AND NOT EXISTS (SELECT 1 FROM faults.grants e "
           "WHERE e.token = g.token AND e.kind = 'end' AND e.how <> 'reap') "
           "AND NOT EXISTS (SELECT 1 FROM faults.grants l WHERE l.item_id = "
           "g.item_id AND l.kind = 'grant' AND l.n > g.n)",
           p->name);
  return q_long(sql) != 0;
}

static void cont_due(double now, int all) {
  for (int i = 0; i < R.nprocs; i++) {
    proc_t *p = &R.procs[i];
    if (!p->stopped)
      continue;
    if (!all && now < p->cont_at &&
        (p->regrant_at <= 0 || now < p->regrant_at || leases_waiting(p)))
      continue;
    kill(p->pid, SIGCONT);
    p->stopped = 0;
    p->resumed_at = now;
    for (int j = R.nfaults - 1; j >= 0; j--)
      if (strcmp(R.faults[j].kind, "stop_cont") == 0 &&
          strcmp(R.faults[j].target, p->name) == 0) {
        R.faults[j].end_wall = wall_now();
        break;
      }
  }
}

static void fault_terminate(void) {
  PGresult *r = q("SELECT pid, coalesce(application_name, '') "
                  "FROM pg_stat_activity WHERE datname = current_database() "
                  "AND pid <> pg_backend_pid() AND backend_type = 'client "
                  "backend' AND coalesce(application_name, '') NOT LIKE "
                  "'faults-%' ORDER BY backend_start, pid");
  if (!r)
    return;
  int n = PQntuples(r);
  int k = n ? 1 + rnd_below(n < 3 ? n : 3) : 0;
  int chosen[3] = {-1, -1, -1};
  for (int i = 0; i < k; i++) {
    int j = rnd_below(n);
    while (j == chosen[0] || j == chosen[1])
      j = (j + 1) % n;
    chosen[i] = j;
    char target[64], sql[128];
    snprintf(target, sizeof target, "backend %s (%.30s)", PQgetvalue(r, j, 0),
             PQgetvalue(r, j, 1));
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%s)",
             PQgetvalue(r, j, 0));
    new_fault("terminate_backend", target);
    PQclear(q(sql));
    printf("  fault terminate_backend %s\n", target);
  }
  PQclear(r);
}

static void end_fault(fault_t *f);
static void fault_session(const char *kind, double now, double len);

static void fault_pg_restart(void) {
  /* The restart would end the harness's own sessions (held_xmin,
   * idle_in_tx): they are ended first, so that their dead tuples are
   * counted, and opened again after it for the rest of their time. */
  const char *again[4];
  double left[4];
  int nagain = 0;
  for (int i = 0; i < R.nfaults; i++)
    if (R.faults[i].end_at > 0 && R.faults[i].sess) {
      if (nagain < 4) {
        again[nagain] = R.faults[i].kind;
        left[nagain++] = R.faults[i].end_at - th_now();
      }
      end_fault(&R.faults[i]);
    }
  char data[700], err[1024];
  snprintf(data, sizeof data, "%s/data", th_pg.dir);
  const char *as_user = getuid() == 0 ? th_pg.user : NULL;
  fault_t *f = new_fault("pg_restart", "postgresql");
  printf("  fault pg_restart (pg_ctl stop -m immediate, then start)\n");
  fflush(stdout);
  if (cl__pg_stop(th_pg.bindir, data, as_user, "immediate", 30, NULL, err,
                  sizeof err) != 0)
    die("pg_ctl stop: %s", err);
  sleep_s(0.5 + rnd_unit());
  if (cl__pg_start(th_pg.bindir, data, as_user, th_pg.log, th_pg.dir, 60, err,
                   sizeof err) != 0)
    die("pg_ctl start: %s", err);
  if (f)
    f->end_wall = wall_now();
  PQreset(R.db);
  for (int i = 0; i < nagain; i++)
    if (left[i] > 1)
      fault_session(again[i], th_now(), left[i]);
}

/* ------------------------------------------------------------------------ */
/* The proxy's faults, the harness's sessions and the retry storm           */

/* Every claimer process reaches PostgreSQL through cutproxy
 * (tests/tools/cutproxy.c), driven by its control FIFO: it already follows
 * the protocol (to cut right after a statement's ReadyForQuery), so a
 * reset, a blackhole and latency were a few lines more; a libuv proxy here
 * would have repeated that framing. */

static void quiet(void *arg, const char *message);

static void proxy_cmd(const char *line) {
  char buf[2200];
  int n = snprintf(buf, sizeof buf, "%s\n", line);
  if (n <= 0 || (size_t)n >= sizeof buf)
    die("a proxy command too long: %.40s...", line);
  if (write(R.proxy_ctl, buf, (size_t)n) != n)
    die("the proxy's control FIFO: %s", strerror(errno));
}

static void proxy_log(char *out, size_t n) {
  snprintf(out, n, "%s/logs/cutproxy.log", R.dir);
}

static void start_proxy(void) {
  char fifo[800], log[800], port[16];
  path_of(fifo, sizeof fifo, "proxy.ctl");
  if (mkfifo(fifo, 0600) != 0)
    die("mkfifo %s: %s", fifo, strerror(errno));
  /* Read and write: opening never blocks, and the FIFO is never ended. */
  R.proxy_ctl = open(fifo, O_RDWR);
  if (R.proxy_ctl < 0)
    die("%s: %s", fifo, strerror(errno));
  proxy_log(log, sizeof log);
  snprintf(port, sizeof port, "%d", th_pg.port);
  const char *bin = getenv("CUTPROXY_BIN");
  /* No cut until a cut_after_commit arms one (COUNT 0). */
  const char *argv[] = {bin && *bin ? bin : "cutproxy",
                        "0",
                        "127.0.0.1",
                        port,
                        "no trigger before the first arm",
                        "after",
                        "0",
                        fifo,
                        NULL};
  if (th_pg.port <= 0)
    die("the proxy needs the harness's own PostgreSQL (a TCP port)");
  R.proxy_pid = th_spawn(argv, log);
  int lp = 0;
  for (double until = th_now() + 10; !lp && th_now() < until;) {
    char *text = th_read_file(log);
    const char *at = strncmp(text, "port ", 5) == 0 ? text : NULL;
    lp = at ? atoi(at + 5) : 0;
    free(text);
    if (!lp)
      sleep_s(0.02);
  }
  if (lp <= 0)
    die("cutproxy did not announce its port (see %s)", log);
  char tcp[1024];
  if (th_db_tcp_dsn(&th_pg, "faults", lp, tcp, sizeof tcp) != 0)
    die("no TCP DSN for the proxy");
  /* In the clear, so that the proxy can follow the protocol. */
  snprintf(R.pdsn, sizeof R.pdsn, "%s sslmode=disable", tcp);
}

static void stop_proxy(void) {
  if (R.proxy_pid <= 0)
    return;
  kill(R.proxy_pid, SIGTERM);
  if (th_wait_exit(R.proxy_pid, 10) < 0) {
    kill(R.proxy_pid, SIGKILL);
    th_wait_exit(R.proxy_pid, 10);
  }
  R.proxy_pid = 0;
}

/* --unfenced: the proxy rewrites claimer's completing statement (its
 * Parse, as claimer/sql.c spells it) so that the DELETE of the claim no
 * longer checks the token, and the result records the caller's token: a
 * late complete then takes the item from its next holder.  Padded with
 * spaces to the same length (the original's indentation makes room), so
 * that no message's length changes.  Test-only surgery, never shipped:
 * the checker must report the fenced-off results it causes.  Should
 * claimer/sql.c change the statement, nothing matches and the unfenced
 * test fails (no fenced-off results): it cannot pass by accident. */
static const char unfence_from[] =
    "AND token = $2  RETURNING item_id, queue, token, worker_id, attempt), "
    "res AS (  INSERT INTO claimer.results (item_id, queue, token, "
    "worker_id, attempt,                               result)";
static const char unfence_to[] =
    "AND $2 <> ''  RETURNING item_id, queue, $2::text AS token, worker_id, "
    "attempt), res AS (INSERT INTO claimer.results (item_id, queue, token, "
    "worker_id, attempt, result)";

static void escape_spaces(const char *in, char *out, size_t n) {
  size_t k = 0;
  for (; *in && k + 5 < n; in++)
    k += (size_t)(*in == ' ' ? snprintf(out + k, n - k, "\\x20")
                             : snprintf(out + k, n - k, "%c", *in));
  out[k] = '\0';
}

static void unfence_completes(void) {
  _Static_assert(sizeof unfence_to <= sizeof unfence_from,
                 "the rewrite fits in the original's length");
  char padded[sizeof unfence_from], from[1000], to[1000], cmd[2100];
  snprintf(padded, sizeof padded, "%-*s", (int)sizeof unfence_from - 1,
           unfence_to);
  escape_spaces(unfence_from, from, sizeof from);
  escape_spaces(padded, to, sizeof to);
  snprintf(cmd, sizeof cmd, "rewrite %s %s", from, to);
  proxy_cmd(cmd);
  printf("  unfenced: the proxy removes the token check from the completing "
         "statement\n");
}

static long proxy_rewrites(void) {
  char log[800];
  proxy_log(log, sizeof log);
  char *text = th_read_file(log);
  long n = th_count(text, "cutproxy: rewrote ");
  free(text);
  return n;
}

static void fault_cut(void) {
  new_fault("cut", "proxy: every live connection");
  proxy_cmd("reset");
  printf("  fault cut (the proxy resets every live connection)\n");
}

static void fault_blackhole(double now) {
  fault_t *f = new_fault("blackhole", "proxy: every connection");
  double len = 2 + 3 * rnd_unit();
  int then_reset = rnd_below(2);
  proxy_cmd("hole");
  if (f) {
    f->end_at = now + len;
    f->then_reset = then_reset;
  }
  printf("  fault blackhole (traffic held %.1f s, then %s)\n", len,
         then_reset ? "every connection reset" : "resumed");
}

static void fault_latency(double now) {
  fault_t *f = new_fault("latency", "proxy: 50-200 ms per chunk");
  double len = 3 + 3 * rnd_unit();
  char cmd[80];
  /* The delays are drawn from the seed too. */
  snprintf(cmd, sizeof cmd, "latency 50 200 %llu",
           (unsigned long long)(rnd() | 1));
  proxy_cmd(cmd);
  if (f)
    f->end_at = now + len;
  printf("  fault latency (50-200 ms per forwarded chunk for %.1f s)\n", len);
}

/* Arms the proxy for one cut after the next completing statement: its
 * Bind names it (the unnamed portal's empty name, then the statement's
 * name, both NUL-ended).  The proxy forwards it, drops the server's answer
 * and resets once the server sent ReadyForQuery, that is after the commit
 * of the statement's implicit transaction (a connection that pipelined an
 * earlier statement could be cut at that one's ReadyForQuery instead).
 * The fault is recorded when the proxy logs the cut. */
static void fault_cut_after_commit(void) {
  /* The name is the statement's and a hash of its text (sql.h). */
  char cmd[128];
  snprintf(cmd, sizeof cmd, "arm 1 \\x00%s\\x00",
           cl__stmt_name(CL__STMT_COMPLETE));
  proxy_cmd(cmd);
  R.after_armed = 1;
  printf("  fault cut_after_commit armed (the next complete's answer is "
         "dropped after its commit)\n");
}

static void after_cut_seen(void) {
  if (!R.after_armed)
    return;
  char log[800];
  proxy_log(log, sizeof log);
  char *text = th_read_file(log);
  long n = th_count(text, "after forwarding trigger");
  free(text);
  if (n > R.proxy_after_cuts) {
    R.proxy_after_cuts = n;
    R.after_armed = 0;
    new_fault("cut_after_commit", "proxy: a complete's connection");
    printf("  fault cut_after_commit: the proxy cut a complete's connection "
           "after its commit\n");
  }
}

/* Dead tuples in claimer's tables (since the last counter reset). */
static long dead_tuples(void) {
  return q_long("SELECT coalesce(sum(n_dead_tup), 0) FROM "
                "pg_stat_user_tables WHERE schemaname = 'claimer'");
}

/* A session of the harness's own, on the direct DSN, left in a transaction
 * until end_at: held_xmin holds a repeatable-read snapshot (the horizon
 * vacuum cannot pass), idle_in_tx an assigned transaction id, idle. */
static void fault_session(const char *kind, double now, double len) {
  char dsn[1300];
  snprintf(dsn, sizeof dsn, "%s application_name=faults-%s", R.dsn, kind);
  PGconn *s = PQconnectdb(dsn);
  const char *sql =
      strcmp(kind, "held_xmin") == 0
          ? "BEGIN ISOLATION LEVEL REPEATABLE READ; "
            "SELECT 1 FROM claimer.items LIMIT 1"
          : "BEGIN; SELECT txid_current(); SELECT count(*) FROM claimer.items";
  PGresult *r = PQstatus(s) == CONNECTION_OK ? PQexec(s, sql) : NULL;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fprintf(stderr, "faults: %s session: %s", kind, PQerrorMessage(s));
    PQclear(r);
    PQfinish(s);
    return;
  }
  PQclear(r);
  PQsetNoticeProcessor(s, quiet, NULL);
  char target[64];
  snprintf(target, sizeof target, "session pid %d", PQbackendPID(s));
  fault_t *f = new_fault(kind, target);
  if (!f) {
    PQfinish(s);
    return;
  }
  f->sess = s;
  f->end_at = now + len;
  f->dead_at_start = dead_tuples();
  f->dead_at_end = -1;
  printf("  fault %s (%s, for %.0f s)\n", kind, target, len);
}

/* After a reset of every connection, every producer resends at once, at
 * storm_at: its last batch again (a new operation), and whatever failed,
 * without backoff until storm_until; a larger backlog gives each more to
 * send. */
static void fault_retry_storm(double now) {
  R.shm->storm_at = th_now() + 0.3;
  R.shm->storm_until = th_now() + 4;
  R.allow_bonus = 2L * BATCH * R.producers;
  R.shm->allow += R.allow_bonus;
  R.shm->storm_gen++;
  fault_t *f = new_fault("retry_storm", "every producer, after a reset");
  proxy_cmd("reset");
  if (f)
    f->end_at = now + 4;
  printf("  fault retry_storm (every connection reset; the producers resend "
         "at once, without backoff)\n");
}

/* Ends a lasting fault. */
static void end_fault(fault_t *f) {
  if (strcmp(f->kind, "blackhole") == 0) {
    if (f->then_reset)
      proxy_cmd("reset");
    proxy_cmd("release");
  } else if (strcmp(f->kind, "latency") == 0) {
    proxy_cmd("latency 0 0");
  } else if (strcmp(f->kind, "retry_storm") == 0) {
    R.allow_bonus = 0;
  } else if (f->sess) {
    f->dead_at_end = dead_tuples();
    PQclear(PQexec(f->sess, "ROLLBACK"));
    PQfinish(f->sess);
    f->sess = NULL;
  }
  f->end_at = 0;
  f->end_wall = wall_now();
}

/* Ends the lasting faults that are due (all of them with all); returns
 * how many stay open. */
static int faults_due(double now, int all) {
  int open = 0;
  for (int i = 0; i < R.nfaults; i++) {
    fault_t *f = &R.faults[i];
    if (f->end_at <= 0)
      continue;
    if (all || now >= f->end_at)
      end_fault(f);
    else
      open++;
  }
  return open;
}

/* Whether a fault of kind is open. */
static int fault_open(const char *kind) {
  for (int i = 0; i < R.nfaults; i++)
    if (R.faults[i].end_at > 0 && strcmp(R.faults[i].kind, kind) == 0)
      return 1;
  return 0;
}

static const char *const all_kinds[] = {
    "kill9",     "stop_cont",  "terminate_backend", "pg_restart",
    "cut",       "blackhole",  "latency",           "cut_after_commit",
    "held_xmin", "idle_in_tx", "retry_storm"};
enum { NKINDS = sizeof all_kinds / sizeof all_kinds[0] };

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */

static const char handler_sh[] =
    "# faults: the exec handler of `claimer work` (written by the harness)\n"
    "d='%s'\n"
    "k=$CLAIMER_IDEMPOTENCY_KEY\n"
    "IFS= read -r p\n"
    "s=$(date +%%s.%%N)\n"
    "printf '{\"item\":\"%%s\",\"token\":\"%%s\",\"attempt\":%%s,"
    "\"start\":%%s,\"key\":\"%%s\"}\\n' \"$CLAIMER_ITEM_ID\" "
    "\"$CLAIMER_TOKEN\" \"$CLAIMER_ATTEMPT\" \"$s\" \"$k\" > "
    "\"$d/starts/$CLAIMER_TOKEN\"\n"
    "case $p in *'\"poison\": true'*|*'\"poison\":true'*) x=1 ;; *) x=0 ;; "
    "esac\n"
    "if [ $x = 0 ] && mkdir \"$d/effects/work/$k\" 2>/dev/null; then\n"
    "  printf '{\"sink\":\"work\",\"key\":\"%%s\"}\\n' \"$k\" >> "
    "\"$d/effects.jsonl\"\n"
    "fi\n"
    "e=$(date +%%s.%%N)\n"
    "printf '{\"item\":\"%%s\",\"token\":\"%%s\",\"attempt\":%%s,"
    "\"start\":%%s,\"end\":%%s,\"key\":\"%%s\"}\\n' \"$CLAIMER_ITEM_ID\" "
    "\"$CLAIMER_TOKEN\" \"$CLAIMER_ATTEMPT\" \"$s\" \"$e\" \"$k\" >> "
    "\"$d/runs.jsonl\"\n"
    "rm -f \"$d/starts/$CLAIMER_TOKEN\"\n"
    "if [ $x = 1 ]; then echo 'poison: always fails' >&2; exit 1; fi\n"
    "printf '{\"ok\":true,\"item\":\"%%s\"}' \"$CLAIMER_ITEM_ID\"\n";

static const char sink_sh[] =
    "# faults: the exec sink of `claimer send` (written by the harness);\n"
    "# $s is the subscriber, whose sink has its name\n"
    "d='%s'\n"
    "while IFS= read -r l; do :; done\n"
    "k=$CLAIMER_IDEMPOTENCY_KEY\n"
    "if mkdir \"$d/effects/$s/$k\" 2>/dev/null; then\n"
    "  printf '{\"sink\":\"%%s\",\"key\":\"%%s\"}\\n' \"$s\" \"$k\" >> "
    "\"$d/effects.jsonl\"\n"
    "fi\n"
    "exit 0\n";

static void make_dirs(void) {
  const char *sub[] = {"logs",         "starts",       "effects",
                       "effects/work", "effects/mail", "effects/audit"};
  for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
    char p[800];
    path_of(p, sizeof p, sub[i]);
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
      die("mkdir %s: %s", p, strerror(errno));
  }
  char text[4096];
  /* Unfenced: each run lasts 2 s (the worker's heartbeat keeps its 3 s
   * lease), longer than the stopped client's remaining work. */
  int n = snprintf(text, sizeof text, "%s", R.unfenced ? "sleep 2\n" : "");
  snprintf(text + n, sizeof text - (size_t)n, handler_sh, R.dir);
  write_text("handler.sh", text);
  snprintf(text, sizeof text, sink_sh, R.dir);
  write_text("sink.sh", text);
}

/* The server's notices (pg_terminate_backend of a backend that just
 * ended warns) are not the harness's business. */
static void quiet(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void setup_db(void) {
  if (th_pg_start(&th_pg) != 0)
    die("cannot start PostgreSQL");
  if (th_db_create(&th_pg, "faults", 1, R.dsn, sizeof R.dsn) != 0)
    die("cannot create the database");
  R.db = PQconnectdb(R.dsn);
  if (PQstatus(R.db) != CONNECTION_OK)
    die("connect: %s", PQerrorMessage(R.db));
  PQsetNoticeProcessor(R.db, quiet, NULL);
  /* The throwaway server runs with synchronous_commit off (fast tests);
   * an immediate stop would then lose commits already acknowledged,
   * which is no fault of claimer's.  This database commits for real. */
  PQclear(q("ALTER DATABASE faults SET synchronous_commit = on"));
  char *sql = th_read_file(FAULTS_SQL);
  if (!*sql)
    die("%s: empty or missing", FAULTS_SQL);
  PGresult *r = q(sql);
  free(sql);
  if (!r)
    die("applying %s failed", FAULTS_SQL);
  PQclear(r);
  cl_conn_t *c = NULL;
  cl_subscriber_opts_t o = {.from = "beginning"};
  if (cl_conn_new(&c, R.dsn) != 0 || cl_conn_connect(c) != 0)
    die("connect for the subscribers failed");
  for (int i = 0; i < NSUBS; i++)
    if (cl_subscriber_add(c, subs[i], &o, NULL) != 1)
      die("subscriber add %s: %s", subs[i], cl_conn_last_error(c));
  cl_conn_free(&c);
  /* Reconnect so that this session has synchronous_commit on too. */
  PQreset(R.db);
}

/* The drain made no progress: what the server's sessions were doing (each
 * one's state, wait and statement, and whom it waits for) goes to
 * stall.txt and the output, and each sender is asked for its own state
 * (SIGUSR1: a sender_state line in its log), so that a stall names its
 * cause. */
static void stall_report(void) {
  PGresult *r = q(
      "SELECT format('pid %s %s %s wait %s/%s xact %s s state %s s "
      "blocked by %s: %s', a.pid, a.application_name, a.state,"
      "              coalesce(a.wait_event_type, '-'),"
      "              coalesce(a.wait_event, '-'),"
      "              round(extract(epoch FROM now() - a.xact_start)::numeric, 1),"
      "              round(extract(epoch FROM now() - a.state_change)::numeric,"
      "                    1),"
      "              pg_blocking_pids(a.pid), left(a.query, 200))"
      "  FROM pg_stat_activity a"
      " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
      " ORDER BY a.pid");
  char p[800];
  path_of(p, sizeof p, "stall.txt");
  FILE *f = fopen(p, "w");
  printf("  stall: the server's sessions (also in %s):\n", p);
  for (int i = 0; r && i < PQntuples(r); i++) {
    printf("    %s\n", PQgetvalue(r, i, 0));
    if (f)
      fprintf(f, "%s\n", PQgetvalue(r, i, 0));
  }
  if (f)
    fclose(f);
  PQclear(r);
  for (int i = 0; i < R.nprocs; i++)
    if (R.procs[i].kind == K_SEND && R.procs[i].pid > 0)
      kill(R.procs[i].pid, SIGUSR1);
  sleep_s(0.5);
}

/* ------------------------------------------------------------------------ */
/* The dump (the final state, history.h)                                   */

/* Writes each row's first column (a JSON object as text) as a line. */
static long dump(const char *file, const char *sql) {
  PGresult *r = q(sql);
  if (!r)
    die("dump of %s failed", file);
  char p[800];
  path_of(p, sizeof p, file);
  FILE *f = fopen(p, "w");
  if (!f)
    die("%s: %s", p, strerror(errno));
  for (int i = 0; i < PQntuples(r); i++)
    fprintf(f, "%s\n", PQgetvalue(r, i, 0));
  long n = PQntuples(r);
  if (fclose(f) != 0)
    die("%s: %s", p, strerror(errno));
  PQclear(r);
  return n;
}

/* A set of strings, for the runs' tokens and the effects' keys. */
typedef struct {
  char **v;
  size_t n, cap;
} strset_t;

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void set_add(strset_t *s, const char *x) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1024;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v)
      die("out of memory");
  }
  s->v[s->n++] = strdup(x);
}

static int set_has(const strset_t *s, const char *x) {
  return bsearch(&x, s->v, s->n, sizeof *s->v, cmp_str) != NULL;
}

static void set_free(strset_t *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i]);
  free(s->v);
}

/* Reads field a (and b, joined by '/', when b) of each line of file. */
static void read_set(strset_t *s, const char *file, const char *a,
                     const char *b) {
  char p[800];
  path_of(p, sizeof p, file);
  FILE *f = fopen(p, "r");
  char *line = NULL;
  size_t cap = 0;
  while (f && getline(&line, &cap, f) > 0) {
    json_object *o = json_tokener_parse(line), *va, *vb;
    if (o && json_object_object_get_ex(o, a, &va) &&
        (!b || json_object_object_get_ex(o, b, &vb))) {
      char k[600];
      snprintf(k, sizeof k, "%s%s%s", json_object_get_string(va), b ? "/" : "",
               b ? json_object_get_string(vb) : "");
      set_add(s, k);
    }
    json_object_put(o);
  }
  free(line);
  if (f)
    fclose(f);
  qsort(s->v, s->n, sizeof *s->v, cmp_str);
}

/* Handlers killed before their end: their start files become run lines
 * without an end (unless the run line made it). */
static long runs_from_starts(void) {
  strset_t tokens = {0};
  read_set(&tokens, "runs.jsonl", "token", NULL);
  char p[800];
  path_of(p, sizeof p, "starts");
  DIR *d = opendir(p);
  int fd = open_append("runs.jsonl");
  long n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || set_has(&tokens, e->d_name))
      continue;
    char f[1200];
    snprintf(f, sizeof f, "%s/%s", p, e->d_name);
    char *text = th_read_file(f);
    if (*text && text[strlen(text) - 1] == '\n') {
      append_line(fd, text);
      n++;
    }
    free(text);
  }
  if (d)
    closedir(d);
  close(fd);
  set_free(&tokens);
  return n;
}

/* Effects whose line was never written (the sink was killed between its
 * mkdir and the line): recorded from the sink's directory. */
static long effects_from_stores(void) {
  strset_t have = {0};
  read_set(&have, "effects.jsonl", "sink", "key");
  const char *sinks[] = {"work", "mail", "audit"};
  int fd = open_append("effects.jsonl");
  long n = 0;
  for (int i = 0; i < 3; i++) {
    char p[800];
    snprintf(p, sizeof p, "%s/effects/%s", R.dir, sinks[i]);
    DIR *d = opendir(p);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
      char k[600], line[700];
      if (e->d_name[0] == '.')
        continue;
      snprintf(k, sizeof k, "%s/%s", sinks[i], e->d_name);
      if (set_has(&have, k))
        continue;
      snprintf(line, sizeof line, "{\"sink\":\"%s\",\"key\":\"%s\"}\n",
               sinks[i], e->d_name);
      append_line(fd, line);
      n++;
    }
    if (d)
      closedir(d);
  }
  close(fd);
  set_free(&have);
  return n;
}

/* The workers' operations.  A `claimer work` daemon logs, at debug level,
 * each lease it was granted ("leased"), each outcome as it is first sent
 * ("acking", again when a refused complete is sent as a fail) and as it
 * settles ("acked": ok, already, lease_lost or unknown), and an outcome
 * it could not send ("ack_dropped"), each with item and token.  Here they
 * become history lines, Jepsen-style like the rest: a claim is an ok claim
 * of its one item; an outcome is an invoke, then ok, fail (the database
 * refused it: lease lost, or a complete turned into a fail) or info; a
 * daemon killed in between leaves the op open, which the checker settles
 * from the final state.  Releases are not outcomes and are left out (the
 * grants log records their end). */

/* The value of key in one logfmt line (quoted or bare), or "" . */
static void logfmt_get(const char *line, const char *key, char *out, size_t n) {
  out[0] = '\0';
  size_t klen = strlen(key);
  for (const char *at = line; (at = strstr(at, key)) != NULL; at += klen) {
    if ((at != line && at[-1] != ' ') || at[klen] != '=')
      continue;
    const char *v = at + klen + 1;
    size_t k = 0;
    if (*v == '"') {
      for (v++; *v && *v != '"' && k + 1 < n; v++) {
        if (*v == '\\' && v[1])
          v++;
        out[k++] = *v;
      }
    } else {
      while (*v && *v != ' ' && *v != '\n' && k + 1 < n)
        out[k++] = *v++;
    }
    out[k] = '\0';
    return;
  }
}

/* ts=2026-12-02T09:42:58.382Z as epoch seconds (0: unreadable). */
static double logfmt_ts(const char *line) {
  char ts[64];
  logfmt_get(line, "ts", ts, sizeof ts);
  struct tm tm = {0};
  const char *rest = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest)
    return 0;
  return (double)timegm(&tm) + (*rest == '.' ? atof(rest) : 0);
}

typedef struct {
  char token[80], op[16];
  long id;
} open_op_t;

static void op_line(int fd, const char *p, const char *op, long id,
                    const char *type, double wall, const char *extra) {
  char line[700];
  snprintf(line, sizeof line,
           "{\"p\":\"%s\",\"op\":\"%s\",\"id\":%ld,\"type\":\"%s\","
           "\"wall\":%.6f%s}\n",
           p, op, id, type, wall, extra);
  append_line(fd, line);
}

static long history_from_worker_log(int fd, const proc_t *p, int start,
                                    long *id) {
  char log[800];
  snprintf(log, sizeof log, "%s/logs/%s.%d.log", R.dir, p->name, start);
  FILE *f = fopen(log, "r");
  if (!f)
    return 0;
  open_op_t open[64];
  int nopen = 0;
  long n = 0;
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    char ev[32], item[64], token[80], op[16], outcome[24], extra[400];
    logfmt_get(line, "event", ev, sizeof ev);
    int leased = strcmp(ev, "leased") == 0, acking = strcmp(ev, "acking") == 0,
        acked = strcmp(ev, "acked") == 0,
        dropped = strcmp(ev, "ack_dropped") == 0;
    if (!leased && !acking && !acked && !dropped)
      continue;
    logfmt_get(line, "item", item, sizeof item);
    logfmt_get(line, "token", token, sizeof token);
    logfmt_get(line, "op", op, sizeof op);
    double wall = logfmt_ts(line);
    if (!item[0] || !token[0] || wall <= 0 || strcmp(op, "release") == 0)
      continue;
    n++;
    if (leased) {
      snprintf(extra, sizeof extra,
               ",\"worker\":\"%s\",\"items\":[\"%s\"],\"tokens\":[\"%s\"]",
               p->name, item, token);
      ++*id;
      op_line(fd, p->name, "claim", *id, "invoke", wall, extra);
      op_line(fd, p->name, "claim", *id, "ok", wall, "");
      continue;
    }
    int k = 0;
    while (k < nopen && strcmp(open[k].token, token) != 0)
      k++;
    if (acking || (acked && k == nopen)) {
      if (k < nopen) /* a complete refused, sent again as a fail */
        op_line(fd, p->name, open[k].op, open[k].id, "fail", wall, "");
      else if (nopen < 64)
        nopen++;
      else
        k = 0; /* more in flight than a worker holds: the oldest stays open */
      snprintf(open[k].token, sizeof open[k].token, "%s", token);
      snprintf(open[k].op, sizeof open[k].op, "%s", op);
      open[k].id = ++*id;
      snprintf(extra, sizeof extra, ",\"item\":\"%s\",\"token\":\"%s\"", item,
               token);
      op_line(fd, p->name, op, open[k].id, "invoke", wall, extra);
      if (acking)
        continue;
    }
    if (k == nopen)
      continue; /* dropped with nothing open */
    const char *type = "info";
    if (acked) {
      logfmt_get(line, "outcome", outcome, sizeof outcome);
      type = strcmp(outcome, "ok") == 0 || strcmp(outcome, "already") == 0
                 ? "ok"
             : strcmp(outcome, "lease_lost") == 0 ? "fail"
                                                  : "info";
    }
    op_line(fd, p->name, open[k].op, open[k].id, type, wall,
            strcmp(type, "fail") == 0 ? ",\"error\":\"lease_lost\"" : "");
    open[k] = open[--nopen];
  }
  free(line);
  fclose(f);
  return n;
}

/* Returns the number of log events turned into history lines. */
static long history_from_worker_logs(void) {
  int fd = open_append("history.jsonl");
  long n = 0;
  for (int i = 0; i < R.nprocs; i++) {
    long id = 0;
    if (R.procs[i].kind == K_WORK)
      for (int s = 1; s <= R.procs[i].starts; s++)
        n += history_from_worker_log(fd, &R.procs[i], s, &id);
  }
  close(fd);
  return n;
}

static void dump_faults(void) {
  int fd = open_append("faults.jsonl");
  for (int i = 0; i < R.nfaults; i++) {
    fault_t *f = &R.faults[i];
    char sql[300], rec[64] = "null", line[600];
    snprintf(sql, sizeof sql,
             "SELECT extract(epoch FROM min(finished_at)) FROM "
             "claimer.results WHERE finished_at > to_timestamp(%.6f)",
             f->end_wall);
    PGresult *r = q(sql);
    if (r && PQntuples(r) && !PQgetisnull(r, 0, 0))
      snprintf(rec, sizeof rec, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    snprintf(line, sizeof line,
             "{\"kind\":\"%s\",\"target\":\"%s\",\"wall\":%.6f,"
             "\"ended\":%.6f,\"recovered\":%s}\n",
             f->kind, f->target, f->wall, f->end_wall, rec);
    append_line(fd, line);
  }
  close(fd);
}

static void dump_state(long *starts, long *stores) {
  dump("items.jsonl",
       "SELECT json_build_object('item', item_id, 'state', state, "
       "'attempts', attempts, 'poison', coalesce((payload->>'poison')::bool, "
       "false), 'last_token', last_token) FROM claimer.items ORDER BY item_id");
  dump("results.jsonl",
       "SELECT json_build_object('item', item_id, 'token', token, 'attempt', "
       "attempt, 'committed', extract(epoch FROM finished_at)) FROM "
       "claimer.results ORDER BY pos");
  dump("deliveries.jsonl",
       "SELECT json_build_object('sub', subscriber, 'item', item_id, 'state', "
       "state, 'key', idempotency_key, 'attempts', attempts, 'token', token) "
       "FROM claimer.deliveries ORDER BY subscriber, item_id");
  dump("subscribers.jsonl",
       "SELECT json_build_object('sub', subscriber, 'sink', subscriber) FROM "
       "claimer.subscribers ORDER BY subscriber");
  dump("grants.jsonl",
       "SELECT CASE WHEN g.kind = 'end' THEN json_build_object('item', "
       "g.item_id, 'token', g.token, 'ended', g.at, 'how', g.how) ELSE "
       "json_build_object('item', g.item_id, 'token', g.token, 'worker', "
       "g.worker_id, 'granted', coalesce(s.at, g.at), 'until', g.until) END "
       "FROM faults.grants g LEFT JOIN faults.grants s ON s.token = g.token "
       "AND s.kind = 'grant' ORDER BY g.n");
  dump_faults();
  long events = history_from_worker_logs();
  printf("  the workers' logs gave %ld operations' events to the history\n",
         events);
  *starts = runs_from_starts();
  *stores = effects_from_stores();
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */

static long count_results_between(double a, double b) {
  char sql[300];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.results WHERE finished_at >= "
           "to_timestamp(%.6f) AND finished_at < to_timestamp(%.6f)",
           a, b);
  return q_long(sql);
}

static int all_settled(long *done, long *dead, long *sent) {
  PGresult *r = q("SELECT (SELECT count(*) FROM claimer.items WHERE state = "
                  "'done'), (SELECT count(*) FROM claimer.items WHERE state "
                  "= 'dead'), (SELECT count(*) FROM claimer.deliveries WHERE "
                  "state = 'sent'), (SELECT count(*) FROM claimer.results)");
  if (!r)
    return 0;
  *done = atol(PQgetvalue(r, 0, 0));
  *dead = atol(PQgetvalue(r, 0, 1));
  *sent = atol(PQgetvalue(r, 0, 2));
  long results = atol(PQgetvalue(r, 0, 3));
  PQclear(r);
  return *done + *dead == R.items && *sent == results * NSUBS;
}

static void stop_all(void) {
  cont_due(0, 1);
  R.shm->client_stop = 1;
  for (int i = 0; i < R.nprocs; i++)
    if (R.procs[i].pid > 0 && R.procs[i].kind != K_CLIENT)
      kill(R.procs[i].pid, SIGTERM);
  for (int i = 0; i < R.nprocs; i++) {
    proc_t *p = &R.procs[i];
    if (p->pid <= 0)
      continue;
    int st = th_wait_exit(p->pid, 45);
    if (st != 0 && !(p->kind == K_PRODUCER && st == 128 + SIGTERM)) {
      fprintf(stderr, "faults: %s exited %d after SIGTERM\n", p->name, st);
      print_log_tail(p);
    }
    if (st < 0)
      kill_wait(p);
    p->pid = 0;
  }
}

/* Ends an interrupted run: every process group the harness started is
 * killed (the daemons with their handlers), then the proxy and
 * PostgreSQL are stopped; the run's files are kept. */
static void abandon_run(void) {
  printf("faults: interrupted: killing the run's processes\n");
  for (int i = 0; i < R.nprocs; i++)
    if (R.procs[i].pid > 0)
      kill_wait(&R.procs[i]);
  for (int i = 0; i < R.nfaults; i++)
    if (R.faults[i].sess) {
      PQfinish(R.faults[i].sess);
      R.faults[i].sess = NULL;
    }
  stop_proxy();
  if (R.db)
    PQfinish(R.db);
  th_pg_stop(&th_pg);
  printf("faults: interrupted (seed %llu); files in %s\n",
         (unsigned long long)R.seed, R.dir);
  exit(130);
}

static void on_interrupt(int sig) {
  (void)sig;
  interrupted = 1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: faults [--items N] [--duration S] [--workers N] "
          "[--producers N] [--seed S] [--dir DIR] [--unfenced]\n"
          "Runs claimer under a seeded schedule of faults, then checks the "
          "recorded history.\n"
          "--unfenced: a test of the checker: the proxy removes the token "
          "check from the\n"
          "  completing statement, and the in-process client is stopped "
          "past its lease\n"
          "  again and again; the run passes when the checker reports "
          "fenced-off results.\n"
          "Exit 0 on PASS, 1 on FAIL, 2 when the run could not be made.\n");
  exit(2);
}

static void parse_args(int argc, char **argv) {
  R.items = 5000;
  R.duration = 60;
  R.workers = 3;
  R.producers = 2;
  R.seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
  const char *env = getenv("CLAIMER_FAULTS_ITEMS");
  R.items_from = "the default";
  if (env && *env) {
    R.items = atol(env);
    R.items_from = "CLAIMER_FAULTS_ITEMS";
  }
  static const struct option opts[] = {
      {"items", required_argument, NULL, 'n'},
      {"duration", required_argument, NULL, 'd'},
      {"workers", required_argument, NULL, 'w'},
      {"producers", required_argument, NULL, 'p'},
      {"seed", required_argument, NULL, 's'},
      {"dir", required_argument, NULL, 'D'},
      {"unfenced", no_argument, NULL, 'U'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'n':
      R.items = atol(optarg);
      R.items_from = "--items";
      break;
    case 'd':
      R.duration = atof(optarg);
      break;
    case 'w':
      R.workers = atoi(optarg);
      break;
    case 'p':
      R.producers = atoi(optarg);
      break;
    case 's':
      R.seed = strtoull(optarg, NULL, 10);
      break;
    case 'D':
      snprintf(R.dir, sizeof R.dir, "%s", optarg);
      R.keep = 1;
      break;
    case 'U':
      R.unfenced = 1;
      break;
    default:
      usage();
    }
  }
  R.backlog = BACKLOG;
  if (R.unfenced) {
    /* Slow handlers, so that an item's next holder is still at work when
     * the stopped client comes back; a short backlog, so that a reaped
     * item is claimed again soon (it queues behind the backlog). */
    R.backlog = BATCH + 10;
    R.client_sleep = 0.2;
  }
  if (optind != argc || R.items < 1 || R.items > 10000000 || R.duration < 5 ||
      R.workers < 1 || R.workers > MAXWORK || R.producers < 1 ||
      R.producers > MAXPROD)
    usage();
}

/* Prints the harness's own lines and adds them to the JSON report h. */
static void harness_lines(json_object *h, double t_calm, double t_faults,
                          double t_end, long calm_n, long fault_n, long starts,
                          long stores) {
  printf("\nharness: seed %llu; %ld items (%ld poison), %d workers, %d "
         "producers, 1 in-process client, 2 subscribers\n",
         (unsigned long long)R.seed, R.items, R.poison, R.workers, R.producers);
  json_object_object_add(h, "seed", json_object_new_uint64(R.seed));
  json_object_object_add(h, "items", json_object_new_int64(R.items));
  json_object_object_add(h, "poison", json_object_new_int64(R.poison));
  json_object *fk = json_object_new_object();
  printf("harness: faults injected:");
  for (int k = 0; k < NKINDS; k++) {
    int n = 0;
    for (int i = 0; i < R.nfaults; i++)
      n += strcmp(R.faults[i].kind, all_kinds[k]) == 0;
    printf(" %s %d%s", all_kinds[k], n, k < NKINDS - 1 ? "," : "\n");
    json_object_object_add(fk, all_kinds[k], json_object_new_int(n));
  }
  json_object_object_add(h, "faults", fk);
  json_object *sess = json_object_new_array();
  for (int i = 0; i < R.nfaults; i++) {
    const fault_t *f = &R.faults[i];
    if (strcmp(f->kind, "held_xmin") != 0 && strcmp(f->kind, "idle_in_tx") != 0)
      continue;
    printf("harness: %s (%s) for %.1f s: dead tuples in claimer's tables "
           "%ld at its start, %ld at its end\n",
           f->kind, f->target, f->end_wall - f->wall, f->dead_at_start,
           f->dead_at_end);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "kind", json_object_new_string(f->kind));
    json_object_object_add(o, "seconds",
                           json_object_new_double(f->end_wall - f->wall));
    json_object_object_add(o, "dead_at_start",
                           json_object_new_int64(f->dead_at_start));
    json_object_object_add(o, "dead_at_end",
                           json_object_new_int64(f->dead_at_end));
    json_object_array_add(sess, o);
  }
  json_object_object_add(h, "sessions", sess);
  printf("harness: retry storm resends (producers' batches sent again at "
         "once): %ld\n",
         R.shm->storm_resends);
  json_object_object_add(h, "storm_resends",
                         json_object_new_int64(R.shm->storm_resends));
  double calm_s = t_faults - t_calm, fault_s = t_end - t_faults;
  double calm_rate = calm_s > 0 ? (double)calm_n / calm_s : 0;
  double fault_rate = fault_s > 0 ? (double)fault_n / fault_s : 0;
  printf("harness: throughput: %.1f results/s without faults (%ld in %.1f "
         "s), %.1f/s under faults (%ld in %.1f s)\n",
         calm_rate, calm_n, calm_s, fault_rate, fault_n, fault_s);
  json_object_object_add(h, "throughput_calm",
                         json_object_new_double(calm_rate));
  json_object_object_add(h, "throughput_faults",
                         json_object_new_double(fault_rate));
  printf("harness: runs without an end (handler killed): %ld; effects "
         "recorded from the sinks' stores (sink killed between its mkdir "
         "and its line): %ld\n",
         starts, stores);
  json_object_object_add(h, "runs_without_end", json_object_new_int64(starts));
  json_object_object_add(h, "effects_from_stores",
                         json_object_new_int64(stores));
  int unexpected = 0;
  for (int i = 0; i < R.nprocs; i++)
    unexpected += R.procs[i].unexpected;
  printf("harness: processes that exited by themselves: %d\n", unexpected);
  json_object_object_add(h, "unexpected_exits",
                         json_object_new_int(unexpected));
  PGresult *r = q("SELECT s.relname, s.n_live_tup, s.n_dead_tup, "
                  "pg_total_relation_size(s.relid) FROM pg_stat_user_tables s "
                  "WHERE s.schemaname = 'claimer' ORDER BY s.relname");
  json_object *tables = json_object_new_object();
  /* Crash recovery (the immediate restart) resets the counters: live
   * and dead are counted from the restart on. */
  printf("harness: tables at the end     live     dead      size  (tuple "
         "counts since the immediate restart, which resets them)\n");
  for (int i = 0; r && i < PQntuples(r); i++) {
    printf("  %-24s %8s %8s %7.1f MiB\n", PQgetvalue(r, i, 0),
           PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
           atof(PQgetvalue(r, i, 3)) / 1048576.0);
    json_object *t = json_object_new_object();
    json_object_object_add(t, "live",
                           json_object_new_int64(atol(PQgetvalue(r, i, 1))));
    json_object_object_add(t, "dead",
                           json_object_new_int64(atol(PQgetvalue(r, i, 2))));
    json_object_object_add(t, "bytes",
                           json_object_new_int64(atol(PQgetvalue(r, i, 3))));
    json_object_object_add(tables, PQgetvalue(r, i, 0), t);
  }
  PQclear(r);
  json_object_object_add(h, "tables", tables);
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  struct sigaction sa = {.sa_handler = on_interrupt};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);
  R.rng = 1;
  if (!R.dir[0]) {
    snprintf(R.dir, sizeof R.dir, "/tmp/claimer-faults-XXXXXX");
    if (!mkdtemp(R.dir))
      die("mkdtemp: %s", strerror(errno));
  } else if (mkdir(R.dir, 0755) != 0 && errno != EEXIST) {
    die("mkdir %s: %s", R.dir, strerror(errno));
  }
  for (long i = 0; i < R.items; i++)
    R.poison += is_poison(i);
  printf("faults: seed %llu (--seed %llu replays the schedule); %ld items "
         "(%s; %ld poison), duration %.0f s, %d workers, %d producers; run "
         "directory %s\n",
         (unsigned long long)R.seed, (unsigned long long)R.seed, R.items,
         R.items_from, R.poison, R.duration, R.workers, R.producers, R.dir);
  R.shm = mmap(NULL, sizeof *R.shm, PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (R.shm == MAP_FAILED)
    die("mmap: %s", strerror(errno));
  memset(R.shm, 0, sizeof *R.shm);
  R.shm->allow = R.backlog;

  printf("phase 1: setup (PostgreSQL, database, faults.grants, "
         "subscribers)\n");
  make_dirs();
  setup_db();

  start_proxy();
  if (R.unfenced)
    unfence_completes();
  printf("phase 2: start the processes (through cutproxy)\n");
  char name[32];
  add_proc(K_REAP, 0, "reap-1");
  for (int i = 0; i < R.workers; i++) {
    snprintf(name, sizeof name, "work-%d", i + 1);
    add_proc(K_WORK, i, name);
  }
  for (int i = 0; i < NSUBS; i++) {
    snprintf(name, sizeof name, "send-%s", subs[i]);
    add_proc(K_SEND, i, name);
  }
  for (int i = 0; i < R.producers; i++) {
    snprintf(name, sizeof name, "producer-%d", i + 1);
    add_proc(K_PRODUCER, i, name);
  }
  add_proc(K_CLIENT, 0, "client-1");
  for (int i = 0; i < R.nprocs; i++)
    start_proc(&R.procs[i]);

  double t0 = th_now(), w0 = wall_now();
  double calm = R.duration * 0.1 < 5 ? 5 : R.duration * 0.1;
  double t_faults = t0 + calm, t_end = t0 + R.duration;
  /* The restart comes when this share of the items is settled, so that
   * it always meets load. */
  double restart_share = 0.35 + 0.3 * rnd_unit();
  int restarted = R.unfenced; /* the unfenced run has no restart */
  /* The first faults cover every kind (and kill9 every kind of process):
   * held_xmin first, since it lasts longest; cut_after_commit second,
   * while completes still come (a small fast run, under the sanitizers,
   * had settled every item before it was armed); then the others in an
   * order of the seed's; then they are drawn at random. */
  /* The retry storm third, while the producers still have batches to
   * send; stop_cont three times, once per kind of process it stops. */
  const char *first[] = {"held_xmin", "cut_after_commit",  "retry_storm",
                         "kill9",     "stop_cont",         "stop_cont",
                         "stop_cont", "terminate_backend", "cut",
                         "blackhole", "latency",           "idle_in_tx"};
  enum { NFIRST = sizeof first / sizeof first[0], NFIXED = 3 };
  int order[NFIRST];
  for (int i = 0; i < NFIRST; i++)
    order[i] = i;
  for (int i = NFIRST - 1; i > NFIXED; i--) {
    int j = NFIXED + rnd_below(i - NFIXED + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  kind_t stop_order[3] = {K_CLIENT, K_SEND, K_WORK};
  for (int i = 2; i > 0; i--) {
    int j = rnd_below(i + 1);
    kind_t t = stop_order[i];
    stop_order[i] = stop_order[j];
    stop_order[j] = t;
  }
  int nstops = 0;
  double held_s = R.duration / 3 < 30   ? 30
                  : R.duration / 3 > 60 ? 60
                                        : R.duration / 3;
  kind_t kill_order[4] = {K_WORK, K_SEND, K_REAP, K_PRODUCER};
  for (int i = 3; i > 0; i--) {
    int j = rnd_below(i + 1);
    kind_t t = kill_order[i];
    kill_order[i] = kill_order[j];
    kill_order[j] = t;
  }
  int nscheduled = 0, nkills = 0;
  double next_fault = t_faults, next_progress = t0 + 5, next_poll = t0;
  long done = 0, dead = 0, sent = 0;
  printf("phase 3: load, calm for %.0f s, then faults until every item is "
         "settled (at most until %.0f s); pg_restart once %.0f%% are\n",
         calm, R.duration, 100 * restart_share);
  double w_faults = w0 + calm;
  int settled = 0;
  for (;;) {
    double now = th_now();
    reap_children(1);
    cont_due(now, 0);
    int open = faults_due(now, 0);
    after_cut_seen();
    if (now >= next_poll) {
      settled = all_settled(&done, &dead, &sent);
      R.shm->allow = done + dead + R.backlog + R.allow_bonus;
      next_poll = now + 0.5;
    }
    if (now >= next_progress) {
      printf("  %5.1f s: done %ld, dead %ld, deliveries sent %ld; %d "
             "faults\n",
             now - t0, done, dead, sent, R.nfaults);
      next_progress = now + 5;
    }
    if ((now >= t_end && restarted) ||
        (settled && now >= t_faults && restarted &&
         nscheduled >= (R.unfenced ? 3 : NFIRST) && !open && !R.after_armed))
      break;
    /* Late (the load was slower than the duration) or not, the restart
     * happens once. */
    if (interrupted)
      abandon_run();
    if (!restarted && now >= t_faults &&
        ((double)(done + dead) >= restart_share * (double)R.items ||
         now >= t_end - 1)) {
      fault_pg_restart();
      restarted = 1;
      continue;
    }
    const proc_t *client = &R.procs[R.nprocs - 1];
    if (now >= next_fault && R.unfenced &&
        (client->stopped || now < client->resumed_at + 1.0)) {
      /* One stop of the client at a time, and a second for it to make
       * its late completes after each (stopped again at once, it made
       * them after the next holder had finished, and none was fenced
       * off: seen on a loaded machine). */
      next_fault = now + 0.5;
    } else if (now >= next_fault) {
      const char *kind;
      if (R.unfenced) {
        kind = "stop_cont"; /* the client's, every time */
      } else if (nscheduled < NFIRST) {
        kind = first[order[nscheduled]];
      } else {
        const char *later[] = {"kill9",
                               "kill9",
                               "kill9",
                               "stop_cont",
                               "stop_cont",
                               "terminate_backend",
                               "terminate_backend",
                               "cut",
                               "blackhole",
                               "latency",
                               "cut_after_commit",
                               "idle_in_tx",
                               "retry_storm"};
        kind = later[rnd_below((int)(sizeof later / sizeof later[0]))];
      }
      nscheduled++;
      /* One of each lasting kind at a time (a second blackhole's release
       * would end the first): a kill -9 instead. */
      if (fault_open(kind) ||
          (strcmp(kind, "cut_after_commit") == 0 && R.after_armed))
        kind = "kill9";
      if (strcmp(kind, "kill9") == 0)
        fault_kill9(nkills < 4 ? kill_order[nkills++] : (kind_t)rnd_below(4));
      else if (strcmp(kind, "stop_cont") == 0)
        fault_stop(now, R.unfenced   ? K_CLIENT
                        : nstops < 3 ? stop_order[nstops]
                                     : (rnd_below(2) ? K_WORK : K_SEND)),
            nstops++;
      else if (strcmp(kind, "terminate_backend") == 0)
        fault_terminate();
      else if (strcmp(kind, "cut") == 0)
        fault_cut();
      else if (strcmp(kind, "blackhole") == 0)
        fault_blackhole(now);
      else if (strcmp(kind, "latency") == 0)
        fault_latency(now);
      else if (strcmp(kind, "cut_after_commit") == 0)
        fault_cut_after_commit();
      else if (strcmp(kind, "held_xmin") == 0)
        fault_session(kind, now, held_s);
      else if (strcmp(kind, "idle_in_tx") == 0)
        fault_session(kind, now, 10 + 10 * rnd_unit());
      else
        fault_retry_storm(now);
      /* The first round comes fast, so that every kind meets load. */
      next_fault = now + (nscheduled <= NFIRST ? 0.8 + 1.2 * rnd_unit()
                                               : 1.5 + 2.5 * rnd_unit());
    }
    sleep_s(0.05);
  }
  double w_end = wall_now();
  printf("phase 4: drain (faults stopped at %.1f s, %d injected)\n",
         th_now() - t0, R.nfaults);
  cont_due(0, 1);
  faults_due(0, 1);
  if (R.after_armed) {
    proxy_cmd("arm 0");
    R.after_armed = 0;
    printf("  (a cut_after_commit armed too late met no complete: "
           "disarmed)\n");
  }
  /* The drain lasts while it makes progress: it ends settled, or after
   * DRAIN_STALL_S with nothing newly settled or sent (a long run's senders
   * may have a backlog of minutes when the faults stop). */
  double drain_deadline = th_now() + DRAIN_STALL_S;
  long progress = -1;
  next_progress = th_now() + 5;
  while (!(settled = all_settled(&done, &dead, &sent)) &&
         th_now() < drain_deadline) {
    if (interrupted)
      abandon_run();
    if (done + dead + sent != progress) {
      progress = done + dead + sent;
      drain_deadline = th_now() + DRAIN_STALL_S;
    }
    R.shm->allow = done + dead + R.backlog;
    reap_children(1);
    after_cut_seen();
    if (th_now() >= next_progress) {
      printf("  drain: done %ld, dead %ld of %ld, deliveries sent %ld\n", done,
             dead, R.items, sent);
      next_progress = th_now() + 5;
    }
    sleep_s(0.2);
  }
  if (!settled)
    stall_report();
  printf("phase 5: stop (SIGTERM); %s at %.1f s: done %ld, dead %ld of %ld, "
         "deliveries sent %ld\n",
         settled ? "settled" : "NOT SETTLED (no progress for 120 s)",
         th_now() - t0, done, dead, R.items, sent);
  stop_all();
  stop_proxy();

  printf("phase 6: dump the final state and check\n");
  /* The fault window ends with the last result: what comes after (the
   * senders' tail) is no throughput of the workers'. */
  double last = (double)q_long("SELECT ceil(extract(epoch FROM "
                               "max(finished_at))) FROM claimer.results");
  if (last > w_faults && last < w_end)
    w_end = last;
  long calm_n = count_results_between(w0, w_faults);
  long fault_n = count_results_between(w_faults, w_end);
  long starts = 0, stores = 0;
  dump_state(&starts, &stores);

  fc_report_t rep;
  char err[1024];
  int rc = fc_check(R.dir, &rep, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "faults: the checker could not read the run: %s\n", err);
    return 2;
  }
  printf("\n");
  fc_report_print(stdout, &rep);
  json_object *h = json_object_new_object();
  harness_lines(h, w0, w_faults, w_end, calm_n, fault_n, starts, stores);
  int kinds_ok = 1;
  for (int k = 0; k < NKINDS && !R.unfenced; k++) {
    int n = 0;
    for (int i = 0; i < R.nfaults; i++)
      n += strcmp(R.faults[i].kind, all_kinds[k]) == 0;
    if (n == 0) {
      printf("harness: FAIL: no %s fault was injected\n", all_kinds[k]);
      kinds_ok = 0;
    }
  }

  /* The JSON report: the checker's object with the harness's beside. */
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&text, &len);
  if (!mem || fc_report_json(mem, &rep) != 0 || fclose(mem) != 0)
    die("cannot build the JSON report");
  json_object *root = json_tokener_parse(text);
  free(text);
  if (!root)
    die("the checker's JSON report does not parse");
  json_object_object_add(root, "harness", h);
  char rp[800];
  path_of(rp, sizeof rp, "report.json");
  FILE *f = fopen(rp, "w");
  if (!f)
    die("%s: %s", rp, strerror(errno));
  fprintf(f, "%s\n",
          json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
  fclose(f);
  json_object_put(root);

  int pass = rep.pass && kinds_ok && settled;
  if (R.unfenced) {
    /* The run must fail, and for the planted reason. */
    uint64_t fenced = rep.checks[FC_FENCED_OFF].count;
    printf("\nfaults: unfenced run: the proxy rewrote the completing "
           "statement on %ld connections; the checker reported %llu "
           "fenced-off results (it must report some) and %s\n",
           proxy_rewrites(), (unsigned long long)fenced,
           rep.pass ? "passed the run" : "failed the run");
    pass = fenced > 0 && !rep.pass && settled;
  }
  fc_report_free(&rep);
  printf("\nfaults: %s (seed %llu); files in %s%s\n", pass ? "PASS" : "FAIL",
         (unsigned long long)R.seed, R.dir,
         pass && !R.keep ? " (removed: pass --dir to keep them)" : "");
  PQfinish(R.db);
  th_pg_stop(&th_pg);
  if (pass && !R.keep)
    cl__rmtree(R.dir);
  return pass ? 0 : 1;
}
