/*
 * bench_reap: the reaper's figures.  Figures, not a pass/fail test.
 *
 *   backlog  N expired leases, made in bulk with SQL (items 'leased' with
 *            attempts 1, claims of worker 'bench-dead' whose lease_until
 *            has passed), ended by P reaper processes at once, each running
 *            cl_reap_cycle() once on its own connection.  Reports the setup
 *            time apart from the reap time, leases/s, the lease_expired
 *            alerts in claimer.alerts, the peak RSS of a reaper process
 *            (wait4's ru_maxrss, as getrusage(RUSAGE_CHILDREN) gives it but
 *            per case), and a check, printed, that every item has
 *            attempts = 2 and that no claim is left.
 *   history  H done items with their results (loaded in chunks of 1M rows,
 *            then VACUUM ANALYZE) plus a fixed workload per cycle: 1,000
 *            expired leases and 100 ready items past the default SLA.  The
 *            median of K cycles on one connection, the workload re-made and
 *            the alerts deleted before each, so that every cycle does the
 *            same work.  Then EXPLAIN (ANALYZE, BUFFERS) of each statement
 *            the cycle prepared, run on the reaper's own connection (so with
 *            the plan it uses) inside a transaction that is rolled back.
 *            What grows with H is the cost of retained history.
 *   latency  the reaper's latency bound, with real processes: one
 *            `claimer reap` daemon (--interval 1s) and, K times, one
 *            `claimer work` holding 8 items (`sleep 600` each) that is
 *            SIGKILLed.  The kill instant is taken on the database clock
 *            (clock_timestamp() just before kill()); an item is claimable
 *            again at greatest(raised_at of its lease_expired alert, its
 *            run_at), the reap and any retry backoff.  Twice: with
 *            worker-loss detection (heartbeat 0.5 s, lost after 3 of them)
 *            and with it off (--worker-lost-after 1000, lease 3 s), so
 *            that only lease expiry frees the items.  Each is held against
 *            min(lease, lost_after x heartbeat) + interval + 1 s (the
 *            largest backoff of attempt 1).  Needs --claimer; the
 *            handlers live in sessions of their own, so this process
 *            becomes their subreaper (Linux) and kills them after each
 *            round.  The daemons' logs are kept in a temporary directory.
 *
 * It WIPES claimer.items, claims, results, deliveries, alerts and workers
 * (TRUNCATE ... CASCADE) before each case.  Without --dsn (and without
 * CLAIMER_DSN) it uses its own database, claimer_bench, on the embedded
 * PostgreSQL, dropped and created afresh, and never the embedded claimer
 * database; given a DSN it refuses to run without --yes-wipe.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "claimer/claimer.h"
#include "embedded.h"

#define MAX_LIST 8
#define CHUNK 1000000L
#define WORK_LEASES 1000
#define WORK_OVERDUE 100

static const char usage_text[] =
    "usage: bench_reap [--dsn DSN --yes-wipe] [--leases N[,N...]]\n"
    "                  [--reapers P[,P...]] [--history H[,H...]]\n"
    "                  [--alert-history R] [--cycles K]\n"
    "                  [--claimer PATH] [--kills K]\n"
    "                  [--only backlog|history|latency] [--plans]\n"
    "\n"
    "  --leases   backlog sizes of expired leases (100000,1000000)\n"
    "  --reapers  reaper processes at once, one run each (1)\n"
    "  --history  done items (with results) kept in the tables (100000);\n"
    "             10000000 takes minutes and some 3-5 GB of disk\n"
    "  --alert-history  resolved alerts kept too, with each history (0)\n"
    "  --cycles   reaper cycles timed per history size, median shown (5)\n"
    "  --plans    print the whole EXPLAIN output, not just its summary\n"
    "  --claimer  the claimer binary: runs the latency mode too, which\n"
    "             SIGKILLs `claimer work` processes under `claimer reap`\n"
    "  --kills    workers killed per latency variant, 8 items each (20)\n"
    "\n"
    "Before each case this WIPES the tables claimer.items, claims, results,\n"
    "deliveries, alerts and workers (TRUNCATE ... CASCADE).  Without --dsn\n"
    "or CLAIMER_DSN it works in a database of its own, claimer_bench, on\n"
    "the embedded PostgreSQL (dropped and created afresh each run).  Given a\n"
    "DSN it refuses to run unless --yes-wipe says that its claimer tables\n"
    "may be emptied: never point it at a database whose jobs you want.\n";

static int show_plans;
static long alert_history;

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------ */
/* SQL helpers                                                               */

/* Runs sql with n text parameters (n == 0: the simple protocol, so VACUUM
 * works).  Returns the result, owned by the caller, or NULL after printing
 * the error. */
static PGresult *q(PGconn *p, const char *sql, int n,
                   const char *const *params) {
  PGresult *r = n == 0 ? PQexec(p, sql)
                       : PQexecParams(p, sql, n, NULL, params, NULL, NULL, 0);
  ExecStatusType s = PQresultStatus(r);
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
    return r;
  fprintf(stderr, "bench_reap: %s\n  in: %.200s\n", PQerrorMessage(p), sql);
  PQclear(r);
  return NULL;
}

/* Runs sql for its effect.  Returns 0 or -1 (error printed). */
static int run(PGconn *p, const char *sql, int n, const char *const *params) {
  PGresult *r = q(p, sql, n, params);
  PQclear(r);
  return r ? 0 : -1;
}

/* Returns the first column of the first row as a long, or -1. */
static long one_long(PGconn *p, const char *sql) {
  PGresult *r = q(p, sql, 0, NULL);
  long v = r && PQntuples(r) > 0 ? atol(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return v;
}

static int wipe(PGconn *p) {
  return run(p,
             "TRUNCATE claimer.items, claimer.claims, claimer.results,"
             " claimer.deliveries, claimer.alerts, claimer.workers CASCADE",
             0, NULL);
}

/* A checkpoint before a timed run, so that it does not pay for the writes
 * of the setup.  Needs a superuser (or pg_checkpoint); skipped otherwise. */
static void checkpoint(PGconn *p) {
  PGresult *r = PQexec(p, "CHECKPOINT");
  PQclear(r);
}

/* ------------------------------------------------------------------------ */
/* Reaper processes                                                          */

typedef struct msg {
  int rc;
  cl_cycle_info_t info;
} msg_t;

/* A reaper process: connects, says so on ready_fd, waits for go_fd to close,
 * runs one cycle and writes its msg_t to out_fd.  Returns the exit code. */
static int reaper_child(const char *dsn, int ready_fd, int go_fd, int out_fd) {
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0) {
    fprintf(stderr, "reaper: %s\n", c ? cl_conn_last_error(c) : "bad dsn");
    return 1;
  }
  cl_reaper_opts_t o;
  cl_reaper_opts_init(&o);
  char b = 'r', go;
  if (write(ready_fd, &b, 1) != 1)
    return 1;
  /* Closed, so that the parent sees the end of the pipe once every reaper
   * said it is ready or died trying. */
  close(ready_fd);
  while (read(go_fd, &go, 1) > 0)
    ;
  msg_t m;
  memset(&m, 0, sizeof m);
  m.rc = cl_reap_cycle(c, &o, &m.info);
  if (m.rc != 0)
    fprintf(stderr, "reaper %d: %s: %s\n", (int)getpid(), cl_err_name(m.rc),
            cl_conn_last_error(c));
  int ok = write(out_fd, &m, sizeof m) == (ssize_t)sizeof m;
  cl_conn_free(&c);
  return ok && m.rc == 0 ? 0 : 1;
}

typedef struct run_out {
  double secs;
  long expired, alerts_expired;
  long max_rss_kib;
  int failed;
} run_out_t;

/* Starts procs reapers, times them from the moment all are connected until
 * all have finished their cycle, and waits for them.  Returns 0, or -1 when
 * they could not be started. */
static int run_reapers(const char *dsn, int procs, run_out_t *out) {
  int ready[2], go[2], res[2];
  memset(out, 0, sizeof *out);
  if (pipe(ready) != 0 || pipe(go) != 0 || pipe(res) != 0)
    return -1;
  pid_t pids[64];
  int started = 0;
  for (int i = 0; i < procs; i++) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
      break;
    if (pid == 0) {
      close(ready[0]);
      close(go[1]);
      close(res[0]);
      _exit(reaper_child(dsn, ready[1], go[0], res[1]));
    }
    pids[started++] = pid;
  }
  close(ready[1]);
  close(go[0]);
  close(res[1]);
  int n = 0;
  char b;
  while (n < started && read(ready[0], &b, 1) == 1)
    n++;
  double t0 = mono();
  close(go[1]);
  msg_t m;
  while (read(res[0], &m, sizeof m) == (ssize_t)sizeof m) {
    out->failed |= m.rc != 0;
    out->expired += m.info.reap.expired;
    out->alerts_expired += m.info.raised[CL_ALERT_LEASE_EXPIRED];
  }
  out->secs = mono() - t0;
  close(ready[0]);
  close(res[0]);
  for (int i = 0; i < started; i++) {
    int st;
    struct rusage ru;
    if (wait4(pids[i], &st, 0, &ru) < 0 || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0)
      out->failed = 1;
    else if (ru.ru_maxrss > out->max_rss_kib)
      out->max_rss_kib = ru.ru_maxrss;
  }
  if (started < procs || n < procs)
    out->failed = 1;
  return started == 0 ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* backlog: N expired leases                                                 */

/* Makes items lo..hi leased with attempts 1 and their claims expired. */
static int make_leases(PGconn *p, long lo, long hi) {
  char a[32], z[32];
  snprintf(a, sizeof a, "%ld", lo);
  snprintf(z, sizeof z, "%ld", hi);
  const char *pr[] = {a, z};
  if (run(p,
          "INSERT INTO claimer.items (item_id, queue, state, attempts)"
          " SELECT 'lease-' || g, 'bench_reap', 'leased', 1"
          "   FROM generate_series($1::bigint, $2::bigint) g",
          2, pr) != 0)
    return -1;
  /* Expired a minute to two minutes ago, in many distinct instants, as a
   * backlog left by a worker that died would be. */
  return run(p,
             "INSERT INTO claimer.claims (item_id, queue, worker_id, token,"
             "                            attempt, claimed_at, lease_until)"
             " SELECT 'lease-' || g, 'bench_reap', 'bench-dead',"
             "        claimer.new_token(), 2, now() - interval '10 minutes',"
             "        now() - interval '1 minute'"
             "              - (g % 60000) * interval '1 millisecond'"
             "   FROM generate_series($1::bigint, $2::bigint) g",
             2, pr);
}

static int bench_backlog(PGconn *p, const char *dsn, long leases, int procs) {
  if (wipe(p) != 0)
    return -1;
  double t0 = mono();
  for (long lo = 1; lo <= leases; lo += CHUNK) {
    long hi = lo + CHUNK - 1 < leases ? lo + CHUNK - 1 : leases;
    if (make_leases(p, lo, hi) != 0)
      return -1;
  }
  if (run(p, "VACUUM ANALYZE claimer.items, claimer.claims", 0, NULL) != 0)
    return -1;
  checkpoint(p);
  double setup = mono() - t0;

  run_out_t o;
  if (run_reapers(dsn, procs, &o) != 0) {
    fprintf(stderr, "bench_reap: cannot start reapers\n");
    return -1;
  }
  PGresult *r = q(p,
                  "SELECT count(*),"
                  "       count(*) FILTER (WHERE attempts = 2),"
                  "       count(*) FILTER (WHERE state = 'ready'),"
                  "       (SELECT count(*) FROM claimer.claims),"
                  "       (SELECT count(*) FROM claimer.alerts"
                  "         WHERE kind = 'lease_expired')"
                  "  FROM claimer.items",
                  0, NULL);
  if (r == NULL)
    return -1;
  long items = atol(PQgetvalue(r, 0, 0)), two = atol(PQgetvalue(r, 0, 1));
  long ready = atol(PQgetvalue(r, 0, 2)), claims = atol(PQgetvalue(r, 0, 3));
  long alerts = atol(PQgetvalue(r, 0, 4));
  PQclear(r);
  printf("backlog  leases=%-8ld reapers=%d  setup %.1f s  reap %.2f s  "
         "%.0f leases/s  lease_expired alerts=%ld  peak RSS per reaper=%ld "
         "KiB%s\n",
         leases, procs, setup, o.secs, (double)o.expired / o.secs, alerts,
         o.max_rss_kib, o.failed ? "  (A REAPER FAILED)" : "");
  int good = two == leases && items == leases && claims == 0 &&
             o.expired == leases && alerts == leases;
  printf("  check: %ld/%ld items with attempts = 2, %ld ready, %ld claims "
         "left, %ld expired and %ld alerts by the reapers' count: %s\n",
         two, items, ready, claims, o.expired, o.alerts_expired,
         good ? "as expected" : "NOT AS EXPECTED");
  fflush(stdout);
  return o.failed ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* history: one cycle's cost against H retained items                        */

static int work_make(PGconn *p);

/* Loads h done items with their results, and alert_history resolved
 * alerts, in chunks, saying how far it is; then makes the workload and
 * analyzes it all. */
static int load_history(PGconn *p, long h) {
  char hs[32];
  snprintf(hs, sizeof hs, "%ld", h);
  double t0 = mono();
  for (long lo = 1; lo <= h; lo += CHUNK) {
    long hi = lo + CHUNK - 1 < h ? lo + CHUNK - 1 : h;
    char a[32], z[32];
    snprintf(a, sizeof a, "%ld", lo);
    snprintf(z, sizeof z, "%ld", hi);
    const char *pr[] = {a, z, hs};
    /* Finished within the last hour, so that no retention default a
     * reaper may gain takes the history away during the measurement. */
    if (run(p,
            "INSERT INTO claimer.items (item_id, queue, state, payload,"
            "        attempts, enqueued_at, run_at, finished_at)"
            " SELECT 'hist-' || g, 'bench_hist', 'done', '{\"n\":1}', 1,"
            "        t - interval '1 second', t - interval '1 second', t"
            "   FROM generate_series($1::bigint, $2::bigint) g,"
            "        LATERAL (SELECT now() - interval '1 hour'"
            "                 + g * (interval '50 minutes' / $3::bigint)) x(t)",
            3, pr) != 0 ||
        run(p,
            "INSERT INTO claimer.results (item_id, queue, token, worker_id,"
            "        attempt, result, finished_at)"
            " SELECT 'hist-' || g, 'bench_hist',"
            "        lpad(to_hex(g), 16, '0') || '-'"
            "          || substr(md5(g::text), 1, 16),"
            "        'bench-hist', 1, '{\"ok\":true}',"
            "        now() - interval '1 hour'"
            "          + g * (interval '50 minutes' / $3::bigint)"
            "   FROM generate_series($1::bigint, $2::bigint) g",
            3, pr) != 0)
      return -1;
    double s = mono() - t0;
    printf("  history: %ld / %ld items (and results) loaded, %.0f s, "
           "%.0f items/s\n",
           hi, h, s, (double)hi / s);
    fflush(stdout);
  }
  if (alert_history > 0) {
    /* Delivered to any hooks long ago, when the schema has hooks. */
    long hooks = one_long(p, "SELECT count(*) FROM information_schema.columns"
                             " WHERE table_schema = 'claimer'"
                             "   AND table_name = 'alerts'"
                             "   AND column_name = 'hook_state'");
    for (long lo = 1; lo <= alert_history; lo += CHUNK) {
      long hi = lo + CHUNK - 1 < alert_history ? lo + CHUNK - 1 : alert_history;
      char a[32], z[32];
      snprintf(a, sizeof a, "%ld", lo);
      snprintf(z, sizeof z, "%ld", hi);
      const char *pr[] = {a, z};
      if (run(p,
              hooks > 0
                  ? "INSERT INTO claimer.alerts (kind, subject, raised_at,"
                    "        resolved_at, hook_state)"
                    " SELECT 'lease_expired', 'hist-' || g,"
                    "        now() - interval '1 hour',"
                    "        now() - interval '30 minutes', 'sent'"
                    "   FROM generate_series($1::bigint, $2::bigint) g"
                  : "INSERT INTO claimer.alerts (kind, subject, raised_at,"
                    "        resolved_at)"
                    " SELECT 'lease_expired', 'hist-' || g,"
                    "        now() - interval '1 hour',"
                    "        now() - interval '30 minutes'"
                    "   FROM generate_series($1::bigint, $2::bigint) g",
              2, pr) != 0)
        return -1;
      printf("  history: %ld / %ld resolved alerts loaded, %.0f s\n", hi,
             alert_history, mono() - t0);
      fflush(stdout);
    }
  }
  if (work_make(p) != 0)
    return -1;
  printf("  history: VACUUM ANALYZE ...\n");
  fflush(stdout);
  double t1 = mono();
  if (run(p,
          "VACUUM ANALYZE claimer.items, claimer.results, claimer.claims,"
          " claimer.alerts",
          0, NULL) != 0)
    return -1;
  checkpoint(p);
  PGresult *r = q(p,
                  "SELECT pg_size_pretty(pg_total_relation_size("
                  "           'claimer.items')),"
                  "       pg_size_pretty(pg_total_relation_size("
                  "           'claimer.results'))",
                  0, NULL);
  if (r == NULL)
    return -1;
  printf("  history: loaded in %.0f s, VACUUM ANALYZE %.0f s; items %s, "
         "results %s (with indexes)\n",
         t1 - t0, mono() - t1, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
  PQclear(r);
  fflush(stdout);
  return 0;
}

/* The per-cycle workload: WORK_LEASES items of queue bench_work (leased,
 * attempts 1, their claims expired) and WORK_OVERDUE items of bench_late
 * ready for two hours, past the default SLA.  Made once; work_reset() puts
 * the leases back before every cycle. */
static int work_make(PGconn *p) {
  char n[16], m[16];
  snprintf(n, sizeof n, "%d", WORK_LEASES);
  snprintf(m, sizeof m, "%d", WORK_OVERDUE);
  const char *pn[] = {n}, *pm[] = {m};
  return run(p,
             "INSERT INTO claimer.items (item_id, queue, state, attempts)"
             " SELECT 'work-' || g, 'bench_work', 'ready', 1"
             "   FROM generate_series(1, $1::int) g",
             1, pn) != 0 ||
                 run(p,
                     "INSERT INTO claimer.items (item_id, queue, state,"
                     "        enqueued_at, run_at)"
                     " SELECT 'late-' || g, 'bench_late', 'ready',"
                     "        now() - interval '2 hours',"
                     "        now() - interval '2 hours'"
                     "   FROM generate_series(1, $1::int) g",
                     1, pm) != 0
             ? -1
             : 0;
}

/* Puts the workload back as it was before a cycle: the work items leased
 * again with expired claims, and no open alert (so the cycle raises them
 * all again).  By primary key, so it costs the same whatever the history. */
static int work_reset(PGconn *p) {
  char n[16];
  snprintf(n, sizeof n, "%d", WORK_LEASES);
  const char *pn[] = {n};
  if (run(p,
          "UPDATE claimer.items SET state = 'leased', attempts = 1,"
          "       last_error = NULL, enqueued_at = now(), run_at = now()"
          " WHERE item_id IN (SELECT 'work-' || g"
          "                     FROM generate_series(1, $1::int) g)",
          1, pn) != 0 ||
      run(p,
          "INSERT INTO claimer.claims (item_id, queue, worker_id, token,"
          "                            attempt, claimed_at, lease_until)"
          " SELECT 'work-' || g, 'bench_work', 'bench-dead',"
          "        claimer.new_token(), 2, now() - interval '10 minutes',"
          "        now() - interval '1 minute'"
          "   FROM generate_series(1, $1::int) g",
          1, pn) != 0)
    return -1;
  return run(p, "DELETE FROM claimer.alerts WHERE resolved_at IS NULL", 0,
             NULL);
}

/* The statements of a cycle, in its order, by their prepared names, with
 * the arguments reap.c passes for the default options. */
typedef struct stmt_ref {
  const char *label, *name, *args;
} stmt_ref_t;

/* EXPLAIN (ANALYZE, BUFFERS) of each statement the reaper's connection
 * prepared, run in a transaction that is rolled back, the workload just
 * reset: so each sees what the first batch of a cycle sees.  Prints the
 * execution time, the top node's buffers and any sequential scan. */
static void explain_cycle(PGconn *p, PGconn *admin) {
  cl_reaper_opts_t o;
  cl_reaper_opts_init(&o);
  char w[96], b[32], ov[96];
  snprintf(b, sizeof b, "('%d')", o.batch);
  snprintf(w, sizeof w, "('%.17g', '%d')", o.worker_lost_after, o.batch);
  snprintf(ov, sizeof ov, "('%.17g', '%d', '{}', '{}')", o.default_sla_s,
           o.batch);
  const stmt_ref_t st[] = {
      {"REAP_WORKERS", "claimer_reap_workers", w},
      {"REAP", "claimer_reap", b},
      {"ALERT_OVERDUE", "claimer_alert_overdue", ov},
      {"ALERT_IN_DOUBT", "claimer_alert_in_doubt", b},
      {"ALERT_RESOLVE", "claimer_alert_resolve", b},
  };
  if (work_reset(admin) != 0 || run(p, "BEGIN", 0, NULL) != 0)
    return;
  for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
    const char *pr[] = {st[i].name};
    PGresult *r =
        q(p, "SELECT 1 FROM pg_prepared_statements WHERE name = $1", 1, pr);
    int there = r && PQntuples(r) == 1;
    PQclear(r);
    if (!there) {
      printf("  explain %-14s not prepared on this connection; skipped\n",
             st[i].label);
      continue;
    }
    char sql[256];
    snprintf(sql, sizeof sql, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE %s%s",
             st[i].name, st[i].args);
    r = q(p, sql, 0, NULL);
    if (r == NULL) {
      printf("  explain %-14s failed (see above); skipped\n", st[i].label);
      if (run(p, "ROLLBACK", 0, NULL) != 0 || run(p, "BEGIN", 0, NULL) != 0)
        return;
      continue;
    }
    const char *exec = "?", *bufs = NULL;
    for (int k = 0; k < PQntuples(r); k++) {
      const char *line = PQgetvalue(r, k, 0);
      if (strstr(line, "Execution Time:"))
        exec = strchr(line, ':') + 2;
      else if (bufs == NULL && strstr(line, "Buffers:"))
        bufs = strstr(line, "Buffers:");
    }
    printf("  explain %-14s %s  (%s)\n", st[i].label, exec,
           bufs ? bufs : "no buffers line");
    for (int k = 0; k < PQntuples(r); k++) {
      const char *line = PQgetvalue(r, k, 0);
      if (show_plans || strstr(line, "Seq Scan"))
        printf("      %s\n", line);
    }
    PQclear(r);
  }
  run(p, "ROLLBACK", 0, NULL);
}

static int bench_history(PGconn *p, const char *dsn, long h, int cycles) {
  if (wipe(p) != 0)
    return -1;
  printf("history  H=%ld: loading\n", h);
  fflush(stdout);
  if (load_history(p, h) != 0)
    return -1;

  /* One reaper connection for all cycles, as a reaper daemon keeps one:
   * the first cycle also prepares the statements. */
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0) {
    fprintf(stderr, "bench_reap: %s\n", c ? cl_conn_last_error(c) : "dsn");
    cl_conn_free(&c);
    return -1;
  }
  cl_reaper_opts_t o;
  cl_reaper_opts_init(&o);
  double *t = calloc((size_t)cycles, sizeof *t);
  int odd = 0, rc = 0;
  cl_cycle_info_t info;
  memset(&info, 0, sizeof info);
  for (int k = 0; k < cycles && rc == 0; k++) {
    if (work_reset(p) != 0) {
      rc = -1;
      break;
    }
    double t0 = mono();
    rc = cl_reap_cycle(c, &o, &info);
    t[k] = mono() - t0;
    if (rc != 0) {
      fprintf(stderr, "bench_reap: cycle: %s: %s\n", cl_err_name(rc),
              cl_conn_last_error(c));
      break;
    }
    odd |= info.reap.expired != WORK_LEASES ||
           info.raised[CL_ALERT_LEASE_EXPIRED] != WORK_LEASES ||
           info.raised[CL_ALERT_ITEM_OVERDUE] != WORK_OVERDUE;
  }
  if (rc == 0) {
    double first = t[0];
    qsort(t, (size_t)cycles, sizeof *t, cmp_double);
    long left = one_long(p, "SELECT count(*) FROM claimer.items"
                            " WHERE state = 'done'");
    printf("history  H=%-9ld cycle median %.1f ms  (min %.1f, max %.1f, "
           "first %.1f; %d cycles)\n",
           h, t[cycles / 2] * 1e3, t[0] * 1e3, t[cycles - 1] * 1e3, first * 1e3,
           cycles);
    printf("  last cycle: %ld leases expired, alerts raised %ld "
           "lease_expired + %ld item_overdue, %ld resolved; %s; "
           "%ld done items still there\n",
           info.reap.expired, info.raised[CL_ALERT_LEASE_EXPIRED],
           info.raised[CL_ALERT_ITEM_OVERDUE], info.resolved,
           odd ? "SOME CYCLE DID NOT DO THE SAME WORK" : "every cycle alike",
           left);
    explain_cycle(cl_conn_pg(c), p);
  }
  fflush(stdout);
  free(t);
  cl_conn_free(&c);
  return rc == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* latency: from a killed worker to its items claimable again                */

#define LAT_ITEMS 8

/* One way the reaper frees a dead worker's items: the worker's options and
 * the reaper's. */
typedef struct lat_variant {
  const char *name;
  double lease_s, heartbeat_s, lost_after, interval_s;
} lat_variant_t;

static const lat_variant_t lat_variants[] = {
    {"worker lost", 10, 0.5, 3, 1},
    {"lease expiry", 3, 0.5, 1000, 1},
};

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig) {
  (void)sig;
  interrupted = 1;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Forks and runs argv[0] with stdin from /dev/null and stdout and stderr
 * appended to log, in a process group of its own so that one kill() ends
 * it and nothing else.  Returns the pid, or -1. */
static pid_t spawn_logged(char *const argv[], const char *log) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    int in = open("/dev/null", O_RDONLY);
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
        dup2(out, 2) < 0)
      _exit(127);
    execv(argv[0], argv);
    dprintf(2, "bench_reap: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  if (pid > 0)
    setpgid(pid, pid); /* also here, so that no kill() can come first */
  return pid;
}

/* Returns 1 when the file at path contains needle. */
static int log_has(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f) != NULL)
    found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

/* Waits up to secs for pid to exit.  Returns 1 with its status in *st, or
 * 0 when it is still running. */
static int wait_exit(pid_t pid, double secs, int *st) {
  double end = mono() + secs;
  do {
    if (waitpid(pid, st, WNOHANG) == pid)
      return 1;
    sleep_ms(20);
  } while (mono() < end);
  return 0;
}

/* Kills and waits for every child of this process but keep: the handlers
 * of a killed worker, which run in sessions of their own and were handed
 * to this process, their subreaper.  Scans again until none is left, as a
 * handler's own children are handed over when it dies.  Returns how many
 * it ended, or -1 where it cannot tell (not Linux). */
static int end_orphans(pid_t keep) {
#ifdef __linux__
  int ended = 0;
  for (int pass = 0; pass < 100; pass++) {
    int found = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
      char *end;
      long pid = strtol(e->d_name, &end, 10);
      if (*end != '\0' || pid <= 0 || pid == (long)keep)
        continue;
      char path[64], buf[512];
      snprintf(path, sizeof path, "/proc/%ld/stat", pid);
      FILE *f = fopen(path, "r");
      if (f == NULL)
        continue;
      size_t n = fread(buf, 1, sizeof buf - 1, f);
      fclose(f);
      buf[n] = '\0';
      /* The command name, in parentheses, may hold spaces and ')'. */
      char *rp = strrchr(buf, ')'), state;
      long ppid;
      if (rp == NULL || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2 ||
          ppid != (long)getpid())
        continue;
      found++;
      kill(-(pid_t)pid, SIGKILL); /* its group: a handler leads one */
      kill((pid_t)pid, SIGKILL);
      if (waitpid((pid_t)pid, NULL, 0) == (pid_t)pid)
        ended++;
    }
    if (d != NULL)
      closedir(d);
    if (found == 0)
      break;
  }
  return ended;
#else
  (void)keep;
  return -1;
#endif
}

/* The round's outcome: the latency of each item and when worker_lost was
 * raised (seconds after the kill; lost < 0 when it was not). */
typedef struct lat_round {
  double lat[LAT_ITEMS];
  double lost;
  int n, missing_alerts, orphans;
} lat_round_t;

/* Polls sql (one text parameter, one count) until it gives want or secs
 * pass.  Returns 0, or -1 on timeout, error or interruption (said). */
static int wait_count(PGconn *p, const char *sql, const char *param, long want,
                      double secs, const char *what) {
  const char *pr[] = {param};
  double end = mono() + secs;
  long got = -1;
  while (!interrupted) {
    PGresult *r = q(p, sql, 1, pr);
    if (r == NULL)
      return -1;
    got = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (got == want)
      return 0;
    if (mono() > end) {
      fprintf(stderr, "bench_reap: %s: %ld, not %ld, after %.0f s\n", what, got,
              want, secs);
      return -1;
    }
    sleep_ms(20);
  }
  return -1;
}

/* One round: enqueues LAT_ITEMS items, starts worker lat-R on them, waits
 * until it holds them all, kills it and waits until the reaper made them
 * ready again.  Returns 0 with *out filled, or -1 (said). */
static int lat_round(PGconn *p, const char *dsn, const char *claimer,
                     const lat_variant_t *v, int round, pid_t reaper,
                     const char *wlog, lat_round_t *out) {
  char name[32], like[40], lease[32], hb[32];
  snprintf(name, sizeof name, "lat-%d", round);
  snprintf(like, sizeof like, "lat-%d-%%", round);
  snprintf(lease, sizeof lease, "%gs", v->lease_s);
  snprintf(hb, sizeof hb, "%gs", v->heartbeat_s);
  memset(out, 0, sizeof *out);
  out->lost = -1;
  const char *pn[] = {name};
  if (run(p,
          "INSERT INTO claimer.items (item_id, queue)"
          " SELECT $1 || '-' || g, 'lat' FROM generate_series(1, 8) g",
          1, pn) != 0)
    return -1;
  char *argv[] = {(char *)claimer,
                  "work",
                  "--dsn",
                  (char *)dsn,
                  "-q",
                  "lat",
                  "--exec",
                  "sleep 600",
                  "--concurrency",
                  "8",
                  "--lease",
                  lease,
                  "--heartbeat",
                  hb,
                  "--poll",
                  "0.2s",
                  "--name",
                  name,
                  NULL};
  pid_t w = spawn_logged(argv, wlog);
  if (w < 0) {
    perror("bench_reap: fork");
    return -1;
  }
  int rc = wait_count(p,
                      "SELECT count(*) FROM claimer.claims"
                      " WHERE worker_id = $1",
                      name, LAT_ITEMS, 30, "claims of the worker");
  /* In its steady state: a heartbeat since its claims, then a random part
   * of a heartbeat interval, so that the kill falls anywhere in it. */
  if (rc == 0)
    rc = wait_count(p,
                    "SELECT count(*) FROM claimer.workers"
                    " WHERE worker_id = $1 AND heartbeat_at >"
                    "       (SELECT max(claimed_at) FROM claimer.claims"
                    "         WHERE worker_id = $1)",
                    name, 1, 10, "heartbeats of the worker after its claims");
  if (rc == 0)
    sleep_ms(random() % (long)(v->heartbeat_s * 1000));
  char kill_at[64] = "";
  if (rc == 0 && !interrupted) {
    /* The kill instant on the database clock, which the alerts and run_at
     * are on too: a round trip before the kill, so a little early. */
    PGresult *r = q(p, "SELECT clock_timestamp()::text", 0, NULL);
    if (r != NULL)
      snprintf(kill_at, sizeof kill_at, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    rc = r != NULL ? 0 : -1;
  }
  kill(-w, SIGKILL);
  int st;
  waitpid(w, &st, 0);
  if (rc == 0 && WIFEXITED(st)) {
    fprintf(stderr,
            "bench_reap: the worker exited (%d) before the kill; "
            "see %s\n",
            WEXITSTATUS(st), wlog);
    rc = -1;
  }
  if (rc == 0) {
    double bound = (v->lost_after * v->heartbeat_s < v->lease_s
                        ? v->lost_after * v->heartbeat_s
                        : v->lease_s) +
                   v->interval_s + 1;
    rc = wait_count(p,
                    "SELECT count(*) FROM claimer.items"
                    " WHERE item_id LIKE $1 AND state = 'ready'",
                    like, LAT_ITEMS, bound + 30, "items ready again");
  }
  if (rc == 0) {
    const char *pr[] = {like, kill_at};
    PGresult *r = q(p,
                    "SELECT extract(epoch FROM greatest(a.raised_at, i.run_at)"
                    "                          - $2::timestamptz)::float8,"
                    "       a.alert_id IS NULL"
                    "  FROM claimer.items i"
                    "  LEFT JOIN claimer.alerts a"
                    "    ON a.kind = 'lease_expired' AND a.subject = i.item_id"
                    "   AND a.raised_at >= $2::timestamptz"
                    " WHERE i.item_id LIKE $1",
                    2, pr);
    for (int k = 0; r != NULL && k < PQntuples(r) && k < LAT_ITEMS; k++) {
      out->lat[out->n++] = atof(PQgetvalue(r, k, 0));
      out->missing_alerts += PQgetvalue(r, k, 1)[0] == 't';
    }
    PQclear(r);
    const char *pl[] = {name, kill_at};
    r = q(p,
          "SELECT extract(epoch FROM raised_at - $2::timestamptz)::float8"
          "  FROM claimer.alerts WHERE kind = 'worker_lost' AND subject = $1"
          "   AND raised_at >= $2::timestamptz",
          2, pl);
    if (r != NULL && PQntuples(r) > 0)
      out->lost = atof(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  out->orphans = end_orphans(reaper);
  /* Out of the way of the next round's worker, which takes queue lat. */
  if (run(p, "DELETE FROM claimer.items WHERE item_id LIKE $1", 1,
          (const char *const[]){like}) != 0)
    rc = -1;
  return rc;
}

/* Runs one variant: a reaper daemon, kills rounds, the figures.  Returns
 * 0, or -1 when something failed (said). */
static int bench_latency_variant(PGconn *p, const char *dsn,
                                 const char *claimer, const lat_variant_t *v,
                                 int kills, const char *dir, int tag) {
  if (wipe(p) != 0)
    return -1;
  double detect = v->lost_after * v->heartbeat_s < v->lease_s
                      ? v->lost_after * v->heartbeat_s
                      : v->lease_s;
  double bound = detect + v->interval_s + 1;
  char rlog[600], wlog[600], every[32], lost[32];
  snprintf(rlog, sizeof rlog, "%s/reap-%d.log", dir, tag);
  snprintf(wlog, sizeof wlog, "%s/work-%d.log", dir, tag);
  snprintf(every, sizeof every, "%gs", v->interval_s);
  snprintf(lost, sizeof lost, "%g", v->lost_after);
  printf("latency  %s: lease %g s, heartbeat %g s, reaper --interval %s "
         "--worker-lost-after %s; %d kills of %d items; logs %s\n",
         v->name, v->lease_s, v->heartbeat_s, every, lost, kills, LAT_ITEMS,
         dir);
  fflush(stdout);
  char *argv[] = {(char *)claimer,       "reap",       "--dsn",
                  (char *)dsn,           "--interval", every,
                  "--worker-lost-after", lost,         NULL};
  pid_t reaper = spawn_logged(argv, rlog);
  if (reaper < 0) {
    perror("bench_reap: fork");
    return -1;
  }
  int rc = 0, st = 0, exited = 0;
  double end = mono() + 15;
  while (!log_has(rlog, "db_connected") && !interrupted) {
    if ((exited = waitpid(reaper, &st, WNOHANG) == reaper) || mono() > end) {
      fprintf(stderr, "bench_reap: the reaper did not connect; see %s\n", rlog);
      rc = -1;
      break;
    }
    sleep_ms(20);
  }

  double *lat = calloc((size_t)kills * LAT_ITEMS, sizeof *lat);
  double *lostv = calloc((size_t)kills, sizeof *lostv);
  int n = 0, nlost = 0, missing = 0, orphans = 0;
  for (int k = 1; k <= kills && rc == 0 && !interrupted; k++) {
    lat_round_t o;
    if (lat_round(p, dsn, claimer, v, k, reaper, wlog, &o) != 0) {
      rc = -1;
      break;
    }
    double lo = o.lat[0], hi = o.lat[0];
    for (int i = 0; i < o.n; i++) {
      lat[n++] = o.lat[i];
      lo = o.lat[i] < lo ? o.lat[i] : lo;
      hi = o.lat[i] > hi ? o.lat[i] : hi;
    }
    if (o.lost >= 0)
      lostv[nlost++] = o.lost;
    missing += o.missing_alerts;
    orphans += o.orphans > 0 ? o.orphans : 0;
    char losts[48] = "no worker_lost";
    if (o.lost >= 0)
      snprintf(losts, sizeof losts, "worker_lost +%.2f s", o.lost);
    printf("  %s  kill %2d/%d: %s, %d items claimable again "
           "+%.2f..%.2f s%s\n",
           v->name, k, kills, losts, o.n, lo, hi, hi > bound ? "  OVER" : "");
    fflush(stdout);
  }
  if (interrupted) {
    fprintf(stderr, "bench_reap: interrupted\n");
    rc = -1;
  }

  /* The reaper ends on SIGTERM after the statement in flight, exits 0 and
   * logs reaper_stopped. */
  if (!exited) {
    kill(reaper, SIGTERM);
    if (!wait_exit(reaper, 15, &st)) {
      fprintf(stderr, "bench_reap: the reaper ignored SIGTERM for 15 s\n");
      kill(-reaper, SIGKILL);
      waitpid(reaper, &st, 0);
    }
  }
  int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  int stopped = log_has(rlog, "reaper_stopped");
  end_orphans(0);

  if (n > 0) {
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    int over = 0;
    for (int i = 0; i < n; i++)
      over += lat[i] > bound;
    int i99 = (int)(n * 0.99) < n ? (int)(n * 0.99) : n - 1;
    printf("latency  %s: samples=%d  p50=%.2f s  p99=%.2f s  max=%.2f s  "
           "bound %.2f s = min(lease %g, %g x heartbeat %g) + interval %g + "
           "backoff 1; over the bound: %d\n",
           v->name, n, lat[n / 2], lat[i99], lat[n - 1], bound, v->lease_s,
           v->lost_after, v->heartbeat_s, v->interval_s, over);
    if (nlost > 0) {
      qsort(lostv, (size_t)nlost, sizeof *lostv, cmp_double);
      printf("  worker_lost raised after the kill: p50=%.2f s  max=%.2f s "
             "(%d of %d kills)\n",
             lostv[nlost / 2], lostv[nlost - 1], nlost, kills);
    } else {
      printf("  worker_lost raised after the kill: never\n");
    }
    printf("  %d items without a lease_expired alert; %d orphaned handler "
           "processes (sh, sleep) killed\n",
           missing, orphans);
  }
  printf("  reaper: %s, %s (%s)\n", clean ? "exit 0" : "DID NOT EXIT 0",
         stopped ? "reaper_stopped logged" : "NO reaper_stopped IN ITS LOG",
         rlog);
  fflush(stdout);
  free(lat);
  free(lostv);
  return rc == 0 && clean && stopped && missing == 0 ? 0 : -1;
}

/* The latency mode: both variants, under SIGINT and SIGTERM handlers so
 * that an interrupted run still ends what it started. */
static int bench_latency(PGconn *p, const char *dsn, const char *claimer,
                         int kills) {
  char dir[512];
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/bench_reap.XXXXXX",
           tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror("bench_reap: mkdtemp");
    return -1;
  }
#ifdef __linux__
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    perror("bench_reap: PR_SET_CHILD_SUBREAPER");
#else
  printf("latency  (the handlers of killed workers, sleep 600, are left to "
         "finish by themselves here)\n");
#endif
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  srandom((unsigned)getpid() ^ (unsigned)time(NULL));
  int failed = 0;
  for (size_t i = 0;
       i < sizeof lat_variants / sizeof lat_variants[0] && !interrupted; i++)
    failed |= bench_latency_variant(p, dsn, claimer, &lat_variants[i], kills,
                                    dir, (int)i + 1) != 0;
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
#ifdef __linux__
  prctl(PR_SET_CHILD_SUBREAPER, 0);
#endif
  return failed || interrupted ? -1 : 0;
}

/* ------------------------------------------------------------------------ */

/* Parses "a,b,c" into up to MAX_LIST values >= min.  Returns the count, or
 * 0 when malformed. */
static int parse_list(const char *s, long min, long *out) {
  int n = 0;
  while (*s != '\0' && n < MAX_LIST) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < min || (*end != ',' && *end != '\0'))
      return 0;
    out[n++] = v;
    s = *end == ',' ? end + 1 : end;
  }
  return *s == '\0' ? n : 0;
}

/* The embedded server, in a database of its own (dropped and created
 * afresh, so that its schema is the one this binary ships): writes its dsn
 * into out.  Returns 0 or -1 (error printed). */
static int embedded_db(char *out, size_t n) {
  cl_embedded_info_t info;
  char why[1024];
  if (cl_embedded_ensure(NULL, &info, why, sizeof why) != 0) {
    fprintf(stderr, "bench_reap: %s\n", why);
    return -1;
  }
  PGconn *p = PQconnectdb(info.dsn);
  if (PQstatus(p) != CONNECTION_OK) {
    fprintf(stderr, "bench_reap: %s", PQerrorMessage(p));
    PQfinish(p);
    return -1;
  }
  /* Not the "does not exist, skipping" notice of a first run. */
  run(p, "SET client_min_messages = warning", 0, NULL);
  int rc = run(p, "DROP DATABASE IF EXISTS claimer_bench", 0, NULL) != 0 ||
                   run(p, "CREATE DATABASE claimer_bench", 0, NULL) != 0
               ? -1
               : 0;
  PQfinish(p);
  /* In a key=value string the last value of a key wins. */
  if ((size_t)snprintf(out, n, "%s dbname=claimer_bench", info.dsn) >= n)
    rc = -1;
  return rc;
}

int main(int argc, char **argv) {
  const char *dsn = getenv("CLAIMER_DSN"), *only = NULL, *claimer = NULL;
  long leases[MAX_LIST] = {100000, 1000000}, reapers[MAX_LIST] = {1};
  long history[MAX_LIST] = {100000};
  int nleases = 2, nreapers = 1, nhistory = 1, cycles = 5, yes_wipe = 0;
  int kills = 20;
  static const struct option opts[] = {
      {"dsn", required_argument, NULL, 'd'},
      {"yes-wipe", no_argument, NULL, 'Y'},
      {"leases", required_argument, NULL, 'l'},
      {"reapers", required_argument, NULL, 'r'},
      {"history", required_argument, NULL, 'H'},
      {"cycles", required_argument, NULL, 'k'},
      {"alert-history", required_argument, NULL, 'A'},
      {"only", required_argument, NULL, 'o'},
      {"plans", no_argument, NULL, 'p'},
      {"claimer", required_argument, NULL, 'c'},
      {"kills", required_argument, NULL, 'K'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int ch, bad = 0;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'd':
      dsn = optarg;
      break;
    case 'Y':
      yes_wipe = 1;
      break;
    case 'l':
      bad |= (nleases = parse_list(optarg, 1, leases)) == 0;
      break;
    case 'r':
      bad |= (nreapers = parse_list(optarg, 1, reapers)) == 0;
      break;
    case 'H':
      bad |= (nhistory = parse_list(optarg, 0, history)) == 0;
      break;
    case 'k':
      cycles = atoi(optarg);
      bad |= cycles < 1 || cycles > 1000;
      break;
    case 'A':
      alert_history = atol(optarg);
      bad |= alert_history < 0;
      break;
    case 'o':
      only = optarg;
      break;
    case 'p':
      show_plans = 1;
      break;
    case 'c':
      claimer = optarg;
      break;
    case 'K':
      kills = atoi(optarg);
      bad |= kills < 1 || kills > 1000;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return 0;
    default:
      bad = 1;
    }
  }
  for (int i = 0; i < nreapers; i++)
    bad |= reapers[i] > 64;
  if (only && strcmp(only, "backlog") != 0 && strcmp(only, "history") != 0 &&
      strcmp(only, "latency") != 0)
    bad = 1;
  if (only && strcmp(only, "latency") == 0 && claimer == NULL) {
    fprintf(stderr, "bench_reap: --only latency needs --claimer PATH\n");
    bad = 1;
  }
  if (claimer != NULL && access(claimer, X_OK) != 0) {
    fprintf(stderr, "bench_reap: %s: %s\n", claimer, strerror(errno));
    bad = 1;
  }
  if (bad || optind != argc) {
    fputs(usage_text, stderr);
    return 2;
  }
  char edsn[1400];
  if (dsn != NULL && !yes_wipe) {
    fprintf(stderr,
            "bench_reap: refusing to run on %s without --yes-wipe: "
            "it empties the claimer tables there (see --help)\n",
            getenv("CLAIMER_DSN") == dsn ? "CLAIMER_DSN" : "--dsn");
    return 2;
  }
  if (dsn == NULL) {
    if (embedded_db(edsn, sizeof edsn) != 0)
      return 1;
    dsn = edsn;
  }
  cl_conn_t *c = NULL;
  int m = 0;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0 ||
      (m = cl_migrate(c, NULL, NULL)) < 0) {
    fprintf(stderr, "bench_reap: %s%s%s\n", m < 0 ? cl_err_name(m) : "",
            m < 0 ? ": " : "", c ? cl_conn_last_error(c) : "bad dsn");
    cl_conn_free(&c);
    return 1;
  }
  PGconn *p = cl_conn_pg(c);
  char *red = cl_dsn_redact(dsn);
  printf("bench_reap on %s (schema version %d); the tables are wiped "
         "before each case\n",
         red ? red : "?", cl_schema_version());
  free(red);
  fflush(stdout);

  int failed = 0;
  if (only == NULL || strcmp(only, "backlog") == 0)
    for (int i = 0; i < nleases; i++)
      for (int j = 0; j < nreapers; j++)
        failed |= bench_backlog(p, dsn, leases[i], (int)reapers[j]) != 0;
  if (only == NULL || strcmp(only, "history") == 0)
    for (int i = 0; i < nhistory; i++)
      failed |= bench_history(p, dsn, history[i], cycles) != 0;
  if (claimer != NULL && (only == NULL || strcmp(only, "latency") == 0))
    failed |= bench_latency(p, dsn, claimer, kills) != 0;
  wipe(p);
  cl_conn_free(&c);
  return failed;
}
