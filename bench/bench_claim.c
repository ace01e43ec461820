/*
 * bench_claim: claim+complete throughput of the claim protocol, with P
 * concurrent processes, either through libclaimer directly (claims in
 * batches of B; each batch's completes and the next claim in one
 * statement and one commit, cl_complete_many_claim(); with --complete
 * many the batch completed by one cl_complete_many() and the next claim
 * its own statement, with --complete one one cl_complete() per item) or
 * through the
 * `claimer` CLI (one claim and one complete process per item, as a shell
 * worker would run them).
 * Reports items/s, the p50/p99 latency from claim to completed per item,
 * the claims made and how many of them were wasted (a claim through the
 * library that got fewer items than it asked for while ready items were
 * left: items a concurrent claimer's locks hid from it, the cost of the
 * race), and the peak RSS of a worker process.  Figures, not a pass/fail
 * test.
 *
 * usage: bench_claim [--dsn DSN] [--items N] [--procs P] [--batch B]
 *                    [--complete one|many|joint] [--cli PATH_TO_CLAIMER]
 *                    [--queue Q] [--enqueue-only | --no-enqueue]
 *                    [--seconds T [--interval S]]
 * --seconds stops the library's claimers after T seconds (the queue must
 * hold enough; made ahead with --enqueue-only) and prints the rate of
 * each S-second interval (default 10), so that a slowdown shows.
 * Without --dsn: CLAIMER_DSN, else the embedded PostgreSQL.  --queue names
 * the queue (else a fresh one); --enqueue-only makes the N items and
 * exits, --no-enqueue drains N items made before, so that a caller can
 * measure the server's counters around the drain alone (bench/run).
 */
#include <json-c/json.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "claimer/claimer.h"
#include "embedded.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Ready items of queue left (after a short claim: none are added while
 * the drain runs, so any left were there during the claim), -1 on error. */
static long ready_left(cl_conn_t *c, const char *queue) {
  const char *p[] = {queue};
  PGresult *r = PQexecParams(cl_conn_pg(c),
                             "SELECT count(*) FROM claimer.items "
                             "WHERE queue = $1 AND state = 'ready'",
                             1, NULL, p, NULL, NULL, 0);
  long n =
      PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return n;
}

/* How the library's claimers complete: one cl_complete() per item, one
 * cl_complete_many() per batch, or the batch's completes and the next
 * claim in one cl_complete_many_claim() (the default). */
enum { COMPLETE_ONE, COMPLETE_MANY, COMPLETE_JOINT };

/* Writes each of n latencies lat (seconds) to fd; 0, or 1 on error. */
static int put_lat(int fd, double lat, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (write(fd, &lat, sizeof lat) != sizeof lat)
      return 1;
  return 0;
}

/* Whether a claim of n for batch was wasted (ready items were left while
 * it got fewer: hidden by the others' locks); 0 no, 1 yes, 2 no and the
 * queue is empty, -1 on error. */
static int claim_wasted(cl_conn_t *c, const char *queue, size_t n, int batch) {
  if (n >= (size_t)batch)
    return 0;
  long left = ready_left(c, queue);
  if (left < 0) {
    fprintf(stderr, "count: %s\n", PQerrorMessage(cl_conn_pg(c)));
    return -1;
  }
  return left > 0 ? 1 : n == 0 ? 2 : 0;
}

/* Claims and completes through the library until the queue is empty;
 * writes per-item latencies (seconds, from the start of the call that
 * claimed the item to the end of the one that completed it) to fd, then
 * its count of claims and of wasted claims (two longs, a negative claim
 * count first). */
static int lib_worker(const char *dsn, const char *queue, int batch, int mode,
                      double until, int fd) {
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0)
    return 1;
  char worker[32];
  snprintf(worker, sizeof worker, "bench-%d", (int)getpid());
  long claims = 0, wasted = 0;
  cl_done_t *d = malloc((size_t)batch * sizeof *d);
  int *rcs = malloc((size_t)batch * sizeof *rcs);
  if (d == NULL || rcs == NULL)
    return 1;
  cl_lease_t *l = NULL; /* held, claimed by the call that began at t0 */
  size_t n = 0;
  double t0 = now_s();
  int empty = 0;
  for (;;) {
    double t1 = now_s();
    int last = empty || (until > 0 && t1 >= until);
    for (size_t i = 0; i < n; i++)
      d[i] = (cl_done_t){l[i].item_id, l[i].token, "{\"ok\":true}"};
    cl_lease_t *next = NULL;
    size_t nn = 0;
    int rc = 0, claimed = 0;
    if (mode == COMPLETE_JOINT && !last) {
      rc = cl_complete_many_claim(c, d, n, rcs, NULL, queue, worker, batch, 60,
                                  &next, &nn);
      claimed = 1;
    } else if (mode != COMPLETE_ONE) {
      rc = cl_complete_many(c, d, n, rcs, NULL);
    } else {
      for (size_t i = 0; i < n && rc == 0; i++) {
        rc = cl_complete(c, l[i].item_id, l[i].token, "{\"ok\":true}", NULL);
        rcs[i] = rc;
        if (rc == 0 && put_lat(fd, now_s() - t0, 1) != 0)
          return 1;
      }
    }
    if (rc != 0) {
      fprintf(stderr, "complete: %s\n", cl_conn_last_error(c));
      return 1;
    }
    for (size_t i = 0; i < n; i++)
      if (rcs[i] != 0) {
        fprintf(stderr, "complete %s: %s\n", l[i].item_id, cl_err_name(rcs[i]));
        return 1;
      }
    if (mode != COMPLETE_ONE && put_lat(fd, now_s() - t0, n) != 0)
      return 1;
    cl_leases_free(l, n);
    if (last)
      break;
    double tc = now_s();
    if (!claimed && cl_claim(c, queue, worker, batch, 60, &next, &nn) != 0) {
      fprintf(stderr, "claim: %s\n", cl_conn_last_error(c));
      return 1;
    }
    claims++;
    int w = claim_wasted(c, queue, nn, batch);
    if (w < 0)
      return 1;
    wasted += w == 1;
    empty = w == 2;
    l = next;
    n = nn;
    /* A joint claim began with the completes; a separate one after. */
    t0 = claimed ? t1 : tc;
  }
  free(d);
  free(rcs);
  cl_conn_free(&c);
  /* The counts, told apart from latencies by their sign. */
  double tail[2] = {-(double)claims - 1, (double)wasted};
  return write(fd, tail, sizeof tail) == sizeof tail ? 0 : 1;
}

/* The same through the CLI: `claimer claim` then `claimer complete`. */
static int cli_worker(const char *cli, const char *dsn, const char *queue,
                      int fd) {
  char cmd[4096];
  for (;;) {
    double t0 = now_s();
    snprintf(cmd, sizeof cmd, "'%s' claim --dsn \"$BENCH_DSN\" -q %s -n 1", cli,
             queue);
    FILE *p = popen(cmd, "r");
    char line[8192] = "";
    int got = p && fgets(line, sizeof line, p) != NULL;
    if (p == NULL || pclose(p) != 0)
      return 1;
    if (!got)
      break;
    json_object *o = json_tokener_parse(line);
    json_object *id = NULL, *tok = NULL;
    if (o == NULL || !json_object_object_get_ex(o, "item_id", &id) ||
        !json_object_object_get_ex(o, "token", &tok))
      return 1;
    snprintf(cmd, sizeof cmd,
             "'%s' complete --dsn \"$BENCH_DSN\" --id '%s' --token %s "
             "--result '{\"ok\":true}'",
             cli, json_object_get_string(id), json_object_get_string(tok));
    json_object_put(o);
    if (system(cmd) != 0)
      return 1;
    double lat = now_s() - t0;
    if (write(fd, &lat, sizeof lat) != sizeof lat)
      return 1;
  }
  (void)dsn;
  return 0;
}

int main(int argc, char **argv) {
  const char *dsn = getenv("CLAIMER_DSN"), *cli = NULL, *qname = NULL;
  int items = 20000, procs = 1, batch = 16, mode = COMPLETE_JOINT;
  int enqueue = 1, drain = 1;
  double seconds = 0, interval = 10;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dsn") == 0 && i + 1 < argc)
      dsn = argv[++i];
    else if (strcmp(argv[i], "--items") == 0 && i + 1 < argc)
      items = atoi(argv[++i]);
    else if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc)
      procs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
      batch = atoi(argv[++i]);
    else if (strcmp(argv[i], "--cli") == 0 && i + 1 < argc)
      cli = argv[++i];
    else if (strcmp(argv[i], "--queue") == 0 && i + 1 < argc)
      qname = argv[++i];
    else if (strcmp(argv[i], "--complete") == 0 && i + 1 < argc &&
             (strcmp(argv[i + 1], "one") == 0 ||
              strcmp(argv[i + 1], "many") == 0 ||
              strcmp(argv[i + 1], "joint") == 0)) {
      i++;
      mode = strcmp(argv[i], "one") == 0    ? COMPLETE_ONE
             : strcmp(argv[i], "many") == 0 ? COMPLETE_MANY
                                            : COMPLETE_JOINT;
    } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc)
      interval = atof(argv[++i]);
    else if (strcmp(argv[i], "--enqueue-only") == 0)
      drain = 0;
    else if (strcmp(argv[i], "--no-enqueue") == 0)
      enqueue = 0;
    else {
      fprintf(stderr, "usage: bench_claim [--dsn DSN] [--items N] "
                      "[--procs P] [--batch B] [--complete one|many|joint] "
                      "[--cli CLAIMER] [--queue Q] "
                      "[--enqueue-only | --no-enqueue] "
                      "[--seconds T [--interval S]]\n");
      return 2;
    }
  }
  if (items < 1 || procs < 1 || procs > 64 || batch < 1 || seconds < 0 ||
      interval <= 0 || (seconds > 0 && cli != NULL)) {
    fprintf(stderr, "bench_claim: bad numbers\n");
    return 2;
  }
  cl_embedded_info_t info;
  if (dsn == NULL) {
    char why[1024];
    if (cl_embedded_ensure(NULL, &info, why, sizeof why) != 0) {
      fprintf(stderr, "bench_claim: %s\n", why);
      return 1;
    }
    dsn = info.dsn;
  }
  setenv("BENCH_DSN", dsn, 1);
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0 ||
      cl_migrate(c, NULL, NULL) < 0) {
    fprintf(stderr, "bench_claim: %s\n", c ? cl_conn_last_error(c) : "dsn");
    return 1;
  }
  char queue[64];
  if (qname != NULL)
    snprintf(queue, sizeof queue, "%s", qname);
  else
    snprintf(queue, sizeof queue, "bench_%ld_%d", (long)time(NULL), getpid());
  cl_item_t *b = calloc(1000, sizeof *b);
  char(*ids)[100] = calloc(1000, sizeof *ids);
  for (int at = 0; enqueue && at < items; at += 1000) {
    int m = items - at < 1000 ? items - at : 1000;
    for (int i = 0; i < m; i++) {
      snprintf(ids[i], sizeof ids[i], "%s-%d", queue, at + i);
      b[i] = (cl_item_t){
          .item_id = ids[i], .queue = queue, .payload = "{\"n\":1}"};
    }
    if (cl_enqueue(c, b, (size_t)m, NULL) < 0) {
      fprintf(stderr, "enqueue: %s\n", cl_conn_last_error(c));
      return 1;
    }
  }
  free(b);
  free(ids);
  if (!drain) {
    cl_conn_free(&c);
    return 0;
  }
  int fds[2];
  if (pipe(fds) != 0)
    return 1;
  double t0 = now_s();
  double until = seconds > 0 ? t0 + seconds : 0;
  for (int p = 0; p < procs; p++) {
    fflush(NULL);
    if (fork() == 0) {
      close(fds[0]);
      _exit(cli ? cli_worker(cli, dsn, queue, fds[1])
                : lib_worker(dsn, queue, batch, mode, until, fds[1]));
    }
  }
  close(fds[1]);
  double *lat = malloc((size_t)items * sizeof *lat);
  size_t n = 0;
  double one;
  long claims = 0, wasted = 0;
  int counts = 0; /* the next double is a wasted count */
  /* Items finished per interval, by the time their latency arrived. */
  int nint = seconds > 0 ? (int)(seconds / interval + 1) : 0;
  long *per = nint ? calloc((size_t)nint, sizeof *per) : NULL;
  while (read(fds[0], &one, sizeof one) == sizeof one) {
    if (counts) {
      wasted += (long)one;
      counts = 0;
    } else if (one < 0) {
      claims += (long)(-one - 1);
      counts = 1;
    } else if (n < (size_t)items) {
      lat[n++] = one;
      int k = per ? (int)((now_s() - t0) / interval) : -1;
      if (k >= 0 && k < nint)
        per[k]++;
    }
  }
  int failed = 0, st;
  while (wait(&st) > 0)
    failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
  double secs = now_s() - t0;
  qsort(lat, n, sizeof *lat, cmp_double);
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  printf("%-4s procs=%-2d batch=%-3d items=%zu  %.0f items/s  "
         "p50=%.2f ms  p99=%.2f ms  claims=%ld wasted=%ld  "
         "peak RSS per worker=%ld KiB%s\n",
         cli                      ? "cli"
         : mode == COMPLETE_JOINT ? "lib"
         : mode == COMPLETE_MANY  ? "lib2"
                                  : "lib1",
         procs, cli ? 1 : batch, n, (double)n / secs, n ? lat[n / 2] * 1e3 : 0,
         n ? lat[(n * 99) / 100] * 1e3 : 0, claims, wasted, ru.ru_maxrss,
         failed ? "  (A WORKER FAILED)" : "");
  if (per != NULL) {
    printf("intervals of %.0f s, items/s:", interval);
    for (int k = 0; k < nint && (k + 1) * interval <= seconds + 1e-9; k++)
      printf(" %.0f", (double)per[k] / interval);
    printf("\n");
    free(per);
  }
  free(lat);
  cl_conn_free(&c);
  return failed || (seconds == 0 && n != (size_t)items);
}
