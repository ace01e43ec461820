/*
 * bench_work: the worker daemon's figures.
 *
 *   throughput  P worker processes x concurrency C drain N items, with the
 *               no-op in-process handler (claimer-example-worker, delay 0)
 *               or an exec handler (`claimer work --exec`, one /bin/sh per
 *               item); items/s from the first start to the last result,
 *               and the peak RSS of a worker process (wait4's ru_maxrss).
 *   latency     one idle `claimer work` and items enqueued one at a time:
 *               enqueue-to-start is the time from cl_enqueue() returning
 *               to the handler's first instruction (it prints the wall
 *               clock as its result; same host, same clock).  p50/p99.
 *
 * usage: bench_work [--dsn DSN] [--claimer PATH] [--example PATH]
 *                   [--items N] [--exec-items N] [--samples N]
 *                   [--one inproc|exec,PROCS,CONCURRENCY [--no-insert]]
 *                   [--latency inproc|exec]
 * --latency runs the enqueue-to-start measure alone with that handler and
 * prints "latency mode=M samples=N p50_ms=X p99_ms=Y max_ms=Z".
 * --one runs that one throughput case and prints "items/s=X rss_kib=Y";
 * with --no-insert it drains the N items the caller put in queue
 * bench-work (so that the caller can read the server's counters around
 * the drain alone: bench/run).
 * Without --dsn: CLAIMER_DSN, else the embedded PostgreSQL.  Figures, not
 * a pass/fail test.
 */
#include <fcntl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "claimer/claimer.h"
#include "embedded.h"

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static long count(PGconn *p, const char *sql) {
  PGresult *r = PQexec(p, sql);
  long v =
      PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return v;
}

static void run_sql(PGconn *p, const char *sql) {
  PGresult *r = PQexec(p, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK &&
      PQresultStatus(r) != PGRES_TUPLES_OK) {
    fprintf(stderr, "bench_work: %s: %s", sql, PQerrorMessage(p));
    exit(1);
  }
  PQclear(r);
}

static pid_t spawn(char *const argv[]) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", 1);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static const char *dsn, *claimer_bin, *example_bin;

/* One throughput run.  Returns items/s and the largest peak RSS (KiB). */
static int no_insert;

static double run_throughput(PGconn *p, int exec, int procs, int conc,
                             long items, long *rss_kib) {
  /* Only the benchmark's own queues are touched: the embedded database may
   * hold the user's items. */
  char sql[256];
  if (!no_insert) {
    run_sql(p, "DELETE FROM claimer.items WHERE queue = 'bench-work'");
    snprintf(sql, sizeof sql,
             "INSERT INTO claimer.items (item_id, queue, payload) SELECT "
             "'bench-work-' || g, 'bench-work', jsonb_build_object('n', g) "
             "FROM "
             "generate_series(1, %ld) g",
             items);
    run_sql(p, sql);
  }
  pid_t pids[16];
  char cbuf[16];
  snprintf(cbuf, sizeof cbuf, "%d", conc);
  double t0 = mono();
  for (int i = 0; i < procs; i++) {
    if (exec) {
      char *argv[] = {(char *)claimer_bin,
                      "work",
                      "--dsn",
                      (char *)dsn,
                      "-q",
                      "bench-work",
                      "--concurrency",
                      cbuf,
                      "--log-level",
                      "warning",
                      "--exec",
                      "IFS= read -r p; printf '{\"ok\":true}'",
                      NULL};
      pids[i] = spawn(argv);
    } else {
      char *argv[] = {
          (char *)example_bin, (char *)dsn, "bench-work", cbuf, "0", NULL};
      pids[i] = spawn(argv);
    }
  }
  while (count(p, "SELECT count(*) FROM claimer.results WHERE queue = "
                  "'bench-work'") < items)
    sleep_ms(20);
  double took = mono() - t0;
  *rss_kib = 0;
  for (int i = 0; i < procs; i++)
    kill(pids[i], SIGTERM);
  for (int i = 0; i < procs; i++) {
    int st;
    struct rusage ru;
    if (wait4(pids[i], &st, 0, &ru) == pids[i] && ru.ru_maxrss > *rss_kib)
      *rss_kib = ru.ru_maxrss;
  }
  return (double)items / took;
}

/* Enqueue-to-start of an idle worker woken by NOTIFY: with exec, the
 * handler is `claimer work --exec` (poll 60 s, so only NOTIFY wakes it)
 * and "start" its shell's `date`; in-process, claimer-example-worker with
 * DELAY_MS -1 (its handler stamps the wall clock; no fork in the
 * measurement).  Prints the figures, and with machine a line
 * "latency mode=M samples=N p50_ms=X p99_ms=Y max_ms=Z". */
static void run_latency(PGconn *p, int samples, int exec, int machine) {
  run_sql(p, "DELETE FROM claimer.items WHERE queue = 'bench-lat'");
  char *inproc_argv[] = {
      (char *)example_bin, (char *)dsn, "bench-lat", "4", "-1", NULL};
  /* A long poll interval: only NOTIFY can wake the worker quickly. */
  char *argv[] = {(char *)claimer_bin,
                  "work",
                  "--dsn",
                  (char *)dsn,
                  "-q",
                  "bench-lat",
                  "--concurrency",
                  "4",
                  "--poll",
                  "60",
                  "--log-level",
                  "warning",
                  "--exec",
                  "printf '%s' \"$(date +%s.%N)\"",
                  NULL};
  pid_t pid = spawn(exec ? argv : inproc_argv);
  sleep_ms(1000); /* connected and idle */
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0) {
    fprintf(stderr, "bench_work: cannot connect\n");
    exit(1);
  }
  double *lat = calloc((size_t)samples, sizeof *lat);
  int n = 0;
  for (int i = 0; i < samples; i++) {
    char id[32];
    snprintf(id, sizeof id, "bench-lat-%d", i);
    cl_item_t it = {.item_id = id, .queue = "bench-lat"};
    if (cl_enqueue(c, &it, 1, NULL) != 1)
      continue;
    double sent = wall();
    char sql[128];
    snprintf(sql, sizeof sql,
             "SELECT (result #>> '{}')::numeric * 1000000 FROM "
             "claimer.results WHERE item_id = '%s'",
             id);
    double end = mono() + 10;
    for (;;) {
      PGresult *r = PQexec(p, sql);
      int got = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
      double started = got ? atof(PQgetvalue(r, 0, 0)) / 1e6 : 0;
      PQclear(r);
      if (got) {
        lat[n++] = (started - sent) * 1000.0;
        break;
      }
      if (mono() > end)
        break;
      sleep_ms(2);
    }
    sleep_ms(50);
  }
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  cl_conn_free(&c);
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  if (n > 0 && machine)
    printf("latency mode=%s samples=%d p50_ms=%.2f p99_ms=%.2f "
           "max_ms=%.2f\n",
           exec ? "exec" : "inproc", n, lat[n / 2], lat[(int)(n * 0.99)],
           lat[n - 1]);
  else if (n > 0)
    printf("enqueue-to-start (NOTIFY, %s): samples=%d  p50=%.2f ms  "
           "p99=%.2f ms  max=%.2f ms\n",
           exec ? "exec handler, poll 60 s" : "in-process handler", n,
           lat[n / 2], lat[(int)(n * 0.99)], lat[n - 1]);
  free(lat);
}

int main(int argc, char **argv) {
  long items = 20000, exec_items = 2000;
  int samples = 200;
  const char *one = NULL, *latency = NULL;
  static const struct option opts[] = {
      {"dsn", required_argument, NULL, 'd'},
      {"claimer", required_argument, NULL, 'c'},
      {"example", required_argument, NULL, 'e'},
      {"items", required_argument, NULL, 'n'},
      {"exec-items", required_argument, NULL, 'x'},
      {"samples", required_argument, NULL, 's'},
      {"one", required_argument, NULL, 'o'},
      {"no-insert", no_argument, NULL, 'i'},
      {"latency", required_argument, NULL, 'l'},
      {NULL, 0, NULL, 0}};
  int ch;
  dsn = getenv("CLAIMER_DSN");
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'd':
      dsn = optarg;
      break;
    case 'c':
      claimer_bin = optarg;
      break;
    case 'e':
      example_bin = optarg;
      break;
    case 'n':
      items = atol(optarg);
      break;
    case 'x':
      exec_items = atol(optarg);
      break;
    case 's':
      samples = atoi(optarg);
      break;
    case 'o':
      one = optarg;
      break;
    case 'i':
      no_insert = 1;
      break;
    case 'l':
      latency = optarg;
      break;
    default:
      fprintf(stderr, "usage: bench_work [--dsn DSN] [--claimer PATH] "
                      "[--example PATH] [--items N] [--exec-items N] "
                      "[--samples N] [--one inproc|exec,P,C [--no-insert]] "
                      "[--latency inproc|exec]"
                      "\n");
      return 2;
    }
  }
  cl_embedded_info_t info;
  if (dsn == NULL) {
    char err[1024];
    if (cl_embedded_ensure(NULL, &info, err, sizeof err) != 0) {
      fprintf(stderr, "bench_work: %s\n", err);
      return 1;
    }
    dsn = info.dsn;
  }
  if (claimer_bin == NULL || example_bin == NULL) {
    fprintf(stderr, "bench_work: --claimer and --example are required\n");
    return 2;
  }
  PGconn *p = PQconnectdb(dsn);
  if (PQstatus(p) != CONNECTION_OK) {
    fprintf(stderr, "bench_work: %s", PQerrorMessage(p));
    return 1;
  }
  if (one != NULL) {
    char mode[16];
    int np = 0, nc = 0;
    if (sscanf(one, "%15[a-z],%d,%d", mode, &np, &nc) != 3 ||
        (strcmp(mode, "inproc") != 0 && strcmp(mode, "exec") != 0) || np < 1 ||
        np > 16 || nc < 1 || nc > 10000 || items < 1) {
      fprintf(stderr,
              "bench_work: --one wants inproc|exec,PROCS (1..16),"
              "CONCURRENCY (1..10000), not '%s'\n",
              one);
      return 2;
    }
    long rss = 0;
    double rate =
        run_throughput(p, strcmp(mode, "exec") == 0, np, nc, items, &rss);
    printf("items/s=%.0f rss_kib=%ld\n", rate, rss);
    PQfinish(p);
    return 0;
  }
  if (latency != NULL) {
    if (strcmp(latency, "inproc") != 0 && strcmp(latency, "exec") != 0) {
      fprintf(stderr, "bench_work: --latency wants inproc or exec, not '%s'\n",
              latency);
      return 2;
    }
    run_latency(p, samples, strcmp(latency, "exec") == 0, 1);
    PQfinish(p);
    return 0;
  }
  run_latency(p, samples, 0, 0);
  run_latency(p, samples, 1, 0);
  static const int procs[] = {1, 2, 4}, concs[] = {1, 8, 32};
  for (int exec = 0; exec < 2; exec++) {
    long n = exec ? exec_items : items;
    printf("%s handler, %ld items:\n",
           exec ? "exec (/bin/sh per item)" : "no-op in-process", n);
    printf("  procs  concurrency  items/s  peak RSS/worker\n");
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 3; j++) {
        long rss = 0;
        double rate = run_throughput(p, exec, procs[i], concs[j], n, &rss);
        printf("  %5d  %11d  %7.0f  %6.1f MiB\n", procs[i], concs[j], rate,
               rss / 1024.0);
        fflush(stdout);
      }
  }
  PQfinish(p);
  return 0;
}
