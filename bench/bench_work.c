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
 *   load        the same enqueue-to-start, of probe items enqueued one at
 *               a time (every 10-30 ms, at random) into a pool of P
 *               processes x concurrency C that is busy with a steady
 *               background stream of R no-op items/s in the same queue
 *               (enqueued in a batch every 5 ms, as many as are due): an
 *               offered load below the pool's capacity, not a backlog.
 *               Two seconds of load come first, then T seconds with the
 *               probes.  Reports the offered rate, the enqueued and the
 *               completed rates over those T seconds (completions by
 *               their finished_at), the items unfinished at the end of
 *               the window (what a backlog would show), and the probes'
 *               p50/p99/max.  The background items stamp their start too
 *               (in-process) or answer at once without forking (exec:
 *               the shell's `case` on CLAIMER_ITEM_ID); only the probes
 *               are measured.
 *
 * usage: bench_work [--dsn DSN] [--claimer PATH] [--example PATH]
 *                   [--items N] [--exec-items N] [--samples N]
 *                   [--one inproc|exec,PROCS,CONCURRENCY [--no-insert]]
 *                   [--latency inproc|exec]
 *                   [--load inproc|exec,PROCS,CONCURRENCY --rate R
 *                    [--seconds T]]
 * --latency runs the enqueue-to-start measure alone with that handler and
 * prints "latency mode=M samples=N p50_ms=X p99_ms=Y max_ms=Z".
 * --load runs the measure under load alone (T 30 s unless --seconds) and
 * prints "load mode=M procs=P concurrency=C offered_per_s=R
 * enqueued_per_s=E done_per_s=D seconds=T unfinished_end=U samples=N
 * p50_ms=X p99_ms=Y max_ms=Z".
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

/* The pool under load: procs processes x concurrency conc on queue
 * bench-load, as `claimer work --exec` (poll 60 s, as in the idle case) or
 * claimer-example-worker with DELAY_MS -1.  The background stream is
 * enqueued from this process on its own connection, rate items/s in a
 * batch every 5 ms (as many as are due by then, so that a late turn does
 * not lower the rate); the probes go one at a time on the same connection
 * between batches, each stamped with the wall clock after its cl_enqueue()
 * returned.  Their starts are read after the run.  Prints the machine line
 * of --load (see the top of the file).  Returns 0, or 1 when the run could
 * not be made or no probe started. */
enum { LOAD_BATCH_MAX = 2000 };

static int run_load(PGconn *p, int exec, int procs, int conc, double rate,
                    double secs) {
  run_sql(p, "DELETE FROM claimer.items WHERE queue = 'bench-load'");
  run_sql(p, "VACUUM ANALYZE claimer.items, claimer.claims, claimer.results");
  char cbuf[16];
  snprintf(cbuf, sizeof cbuf, "%d", conc);
  /* Probes stamp their start; background items answer without a fork. */
  char *exec_argv[] = {
      (char *)claimer_bin,
      "work",
      "--dsn",
      (char *)dsn,
      "-q",
      "bench-load",
      "--concurrency",
      cbuf,
      "--poll",
      "60",
      "--log-level",
      "warning",
      "--exec",
      "case $CLAIMER_ITEM_ID in probe-*) printf '%s' \"$(date +%s.%N)\" ;; "
      "*) printf '{\"ok\":true}' ;; esac",
      NULL};
  char *inproc_argv[] = {
      (char *)example_bin, (char *)dsn, "bench-load", cbuf, "-1", NULL};
  pid_t pids[16];
  for (int i = 0; i < procs; i++)
    pids[i] = spawn(exec ? exec_argv : inproc_argv);
  sleep_ms(1000); /* connected and idle */
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0) {
    fprintf(stderr, "bench_work: cannot connect\n");
    exit(1);
  }
  static char ids[LOAD_BATCH_MAX][32];
  static cl_item_t batch[LOAD_BATCH_MAX];
  int max_probes = (int)(secs * 100) + 16, nprobes = 0;
  double *sent_at = calloc((size_t)max_probes, sizeof *sent_at);
  srandom((unsigned)getpid() ^ (unsigned)time(NULL));
  const double warmup = 2.0, tick = 0.005;
  double t0 = mono(), w0_mono = t0 + warmup, w1_mono = w0_mono + secs;
  double w0_wall = 0, w1_wall = 0, next_probe = w0_mono;
  long sent = 0, sent_w0 = -1, sent_w1 = 0, failed = 0;
  for (double now = mono(); now < w1_mono; now = mono()) {
    if (sent_w0 < 0 && now >= w0_mono) {
      sent_w0 = sent;
      w0_wall = wall();
    }
    long due = (long)((now - t0) * rate) - sent;
    while (due > 0) {
      int m = due < LOAD_BATCH_MAX ? (int)due : LOAD_BATCH_MAX;
      for (int i = 0; i < m; i++) {
        snprintf(ids[i], sizeof ids[i], "load-%ld", sent + i);
        batch[i] = (cl_item_t){
            .item_id = ids[i], .queue = "bench-load", .payload = "{\"n\":1}"};
      }
      if (cl_enqueue(c, batch, (size_t)m, NULL) != m)
        failed++;
      sent += m;
      due -= m;
    }
    if (sent_w0 >= 0 && now >= next_probe && nprobes < max_probes) {
      char id[32];
      snprintf(id, sizeof id, "probe-%d", nprobes);
      cl_item_t it = {.item_id = id, .queue = "bench-load"};
      if (cl_enqueue(c, &it, 1, NULL) == 1)
        sent_at[nprobes] = wall();
      else
        failed++;
      nprobes++;
      next_probe = mono() + 0.010 + 0.020 * (double)random() / RAND_MAX;
    }
    /* Until the next background item is due, but a tick at least, and no
     * later than the next probe. */
    double wake = t0 + (double)(sent + 1) / rate;
    now = mono();
    if (wake < now + tick)
      wake = now + tick;
    if (sent_w0 >= 0 && wake > next_probe)
      wake = next_probe;
    if (wake > w1_mono)
      wake = w1_mono;
    if (wake > now)
      sleep_ms((long)((wake - now) * 1000.0 + 0.5));
  }
  sent_w1 = sent;
  w1_wall = wall();
  /* Every probe started and stamped, or 30 s. */
  for (double end = mono() + 30;
       count(p, "SELECT count(*) FROM claimer.results WHERE queue = "
                "'bench-load' AND item_id LIKE 'probe-%'") < nprobes &&
       mono() < end;)
    sleep_ms(20);
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FILTER (WHERE finished_at >= to_timestamp(%.6f) "
           "AND finished_at < to_timestamp(%.6f)) FROM claimer.results WHERE "
           "queue = 'bench-load'",
           w0_wall, w1_wall);
  long done_w = count(p, sql);
  /* Enqueued before the window's end and not finished by then: in the
   * queue or in a worker's hands. */
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.items WHERE queue = 'bench-load' "
           "AND enqueued_at < to_timestamp(%.6f) AND (finished_at IS NULL "
           "OR finished_at >= to_timestamp(%.6f))",
           w1_wall, w1_wall);
  long unfinished = count(p, sql);
  double *lat = calloc((size_t)(nprobes > 0 ? nprobes : 1), sizeof *lat);
  int n = 0;
  PGresult *r = PQexec(p, "SELECT substr(item_id, 7)::int, (result #>> "
                          "'{}')::numeric * 1000000 FROM claimer.results "
                          "WHERE queue = 'bench-load' AND item_id LIKE "
                          "'probe-%'");
  for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r);
       i++) {
    int k = atoi(PQgetvalue(r, i, 0));
    if (k >= 0 && k < nprobes && sent_at[k] > 0)
      lat[n++] = (atof(PQgetvalue(r, i, 1)) / 1e6 - sent_at[k]) * 1000.0;
  }
  PQclear(r);
  for (int i = 0; i < procs; i++)
    kill(pids[i], SIGTERM);
  for (int i = 0; i < procs; i++)
    waitpid(pids[i], NULL, 0);
  cl_conn_free(&c);
  if (failed > 0)
    fprintf(stderr, "bench_work: %ld enqueues failed under load\n", failed);
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  if (n > 0)
    printf("load mode=%s procs=%d concurrency=%d offered_per_s=%.0f "
           "enqueued_per_s=%.0f done_per_s=%.0f seconds=%.1f "
           "unfinished_end=%ld samples=%d p50_ms=%.2f p99_ms=%.2f "
           "max_ms=%.2f\n",
           exec ? "exec" : "inproc", procs, conc, rate,
           (double)(sent_w1 - sent_w0 + nprobes) / secs, (double)done_w / secs,
           secs, unfinished, n, lat[n / 2], lat[(int)(n * 0.99)], lat[n - 1]);
  else
    fprintf(stderr, "bench_work: no probe started under load\n");
  free(lat);
  free(sent_at);
  return n > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  long items = 20000, exec_items = 2000;
  int samples = 200;
  const char *one = NULL, *latency = NULL, *load = NULL;
  double load_rate = 0, load_secs = 30;
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
      {"load", required_argument, NULL, 'L'},
      {"rate", required_argument, NULL, 'r'},
      {"seconds", required_argument, NULL, 'S'},
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
    case 'L':
      load = optarg;
      break;
    case 'r':
      load_rate = atof(optarg);
      break;
    case 'S':
      load_secs = atof(optarg);
      break;
    default:
      fprintf(stderr, "usage: bench_work [--dsn DSN] [--claimer PATH] "
                      "[--example PATH] [--items N] [--exec-items N] "
                      "[--samples N] [--one inproc|exec,P,C [--no-insert]] "
                      "[--latency inproc|exec] "
                      "[--load inproc|exec,P,C --rate R [--seconds T]]"
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
  if (load != NULL) {
    char mode[16];
    int np = 0, nc = 0;
    if (sscanf(load, "%15[a-z],%d,%d", mode, &np, &nc) != 3 ||
        (strcmp(mode, "inproc") != 0 && strcmp(mode, "exec") != 0) || np < 1 ||
        np > 16 || nc < 1 || nc > 10000 || load_rate <= 0 || load_rate > 1e6 ||
        load_secs < 1 || load_secs > 3600) {
      fprintf(stderr,
              "bench_work: --load wants inproc|exec,PROCS (1..16),"
              "CONCURRENCY (1..10000) with --rate R (items/s, > 0) and "
              "--seconds T (1..3600), not '%s'\n",
              load);
      return 2;
    }
    int rc =
        run_load(p, strcmp(mode, "exec") == 0, np, nc, load_rate, load_secs);
    PQfinish(p);
    return rc;
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
