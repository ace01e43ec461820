/*
 * cmd_demo.c: `claimer demo`, the main job in miniature.  It enqueues a few
 * thousand items, forks several worker processes (each with its own
 * connection) that race to claim and complete them, kills one of them with
 * SIGKILL mid-way while it holds leases, reaps its expired leases so its
 * items come back, and ends by checking from the database that every item
 * is done with exactly one result.
 */
#include <json-c/json.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "embedded.h"

static volatile sig_atomic_t worker_stop;

static void on_term(int sig) {
  (void)sig;
  worker_stop = 1;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A worker process: claim a batch, "work" a few milliseconds on each item,
 * complete it; until told to stop.  Exits 0, or 1 on a database error. */
static int run_worker(const char *dsn, const char *queue, int index,
                      double lease) {
  struct sigaction sa = {0};
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  cl_conn_t *c = NULL;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0) {
    fprintf(stderr, "demo worker %d: cannot connect: %s\n", index,
            c ? cl_conn_last_error(c) : "bad dsn");
    cl_conn_free(&c);
    return 1;
  }
  char worker[64];
  snprintf(worker, sizeof worker, "demo-worker-%d:%ld", index, (long)getpid());
  srand((unsigned)getpid());
  int status = 0;
  while (!worker_stop) {
    cl_lease_t *leases = NULL;
    size_t n = 0;
    int rc = cl_claim(c, queue, worker, 10, lease, &leases, &n);
    if (rc != 0) {
      fprintf(stderr, "demo worker %d: claim: %s\n", index,
              cl_conn_last_error(c));
      status = 1;
      break;
    }
    if (n == 0)
      sleep_ms(50);
    for (size_t i = 0; i < n; i++) {
      sleep_ms(1 + rand() % 4); /* the side effect would happen here */
      char result[160];
      snprintf(result, sizeof result, "{\"by\":\"%s\",\"attempt\":%d}", worker,
               leases[i].attempt);
      rc = cl_complete(c, leases[i].item_id, leases[i].token, result, NULL);
      if (rc != 0 && rc != CL_ELEASE_LOST) {
        fprintf(stderr, "demo worker %d: complete: %s\n", index,
                cl_conn_last_error(c));
        status = 1;
      }
    }
    cl_leases_free(leases, n);
  }
  cl_conn_free(&c);
  return status;
}

/* Runs one query with a text parameter and returns the first row's columns
 * as longs in out[0..ncols); returns 0 or -1. */
static int query_longs(cl_conn_t *c, const char *sql, const char *param,
                       long *out, int ncols) {
  const char *params[] = {param};
  PGresult *r =
      PQexecParams(cl_conn_pg(c), sql, 1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    cli_err("query failed: %s", PQresultErrorMessage(r));
    PQclear(r);
    return -1;
  }
  for (int i = 0; i < ncols; i++)
    out[i] = atol(PQgetvalue(r, 0, i));
  PQclear(r);
  return 0;
}

int cmd_demo(int argc, char **argv) {
  static const struct option opts[] = {
      CLI_DSN_OPTIONS,
      {"items", required_argument, NULL, 'n'},
      {"workers", required_argument, NULL, 'w'},
      {"lease", required_argument, NULL, 'l'},
      {"help", no_argument, NULL, 'h'},
      {0}};
  const char *dsn_opt = NULL;
  cli_dsn_t src = {0};
  int items = 3000, workers = 4;
  double lease = 2;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (ch) {
    case 'D':
    case CLI_OPT_DSN_FILE:
      if (cli_dsn_option(&src, ch, optarg) != 0)
        return EXIT_USAGE;
      dsn_opt = src.value;
      break;
    case 'n':
      if (cli_parse_int(optarg, "--items", 1, 1000000, &items))
        return EXIT_USAGE;
      break;
    case 'w':
      if (cli_parse_int(optarg, "--workers", 2, 64, &workers))
        return EXIT_USAGE;
      break;
    case 'l':
      if (cli_parse_double(optarg, "--lease", 0.5, 60, &lease))
        return EXIT_USAGE;
      break;
    case 'h':
      printf("usage: claimer demo [--items N] [--workers W] [--lease S] "
             "[--dsn DSN | --dsn-file FILE]\n\n"
             "Migrates, enqueues N items (default 3000) on a fresh queue,\n"
             "starts W worker processes (default 4) that race to claim and\n"
             "complete them with leases of S seconds (default 2), kills one\n"
             "worker with SIGKILL while it holds leases, reaps so that its\n"
             "items come back, and checks that every item ends done with\n"
             "exactly one result.\n"
             "\n" CLI_DSN_HELP);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);

  cl_conn_t *c = NULL;
  int ex = cli_connect(dsn_opt, &c);
  if (ex != EXIT_OK)
    return ex;
  /* The children need the same database: reuse what cli_connect chose. */
  cl_embedded_info_t info;
  const char *dsn = dsn_opt ? dsn_opt : getenv("CLAIMER_DSN");
  if (dsn == NULL) {
    cl_embedded_locate(NULL, &info);
    dsn = info.dsn;
  }
  printf("claimer demo on %s\n", cl_conn_dsn_redacted(c));
  int rc = cl_migrate(c, NULL, NULL);
  if (rc < 0) {
    ex = cli_fail(c, rc, "migrate");
    cl_conn_free(&c);
    return ex;
  }
  char queue[64];
  snprintf(queue, sizeof queue, "demo_%ld", (long)time(NULL));

  /* Enqueue in batches of 500. */
  char(*ids)[80] = calloc((size_t)items, sizeof *ids);
  char(*payloads)[48] = calloc((size_t)items, sizeof *payloads);
  cl_item_t *batch = calloc(500, sizeof *batch);
  if (ids == NULL || payloads == NULL || batch == NULL) {
    cli_err("out of memory");
    free(ids);
    free(payloads);
    free(batch);
    cl_conn_free(&c);
    return EXIT_ERROR;
  }
  long created = 0;
  for (int at = 0; at < items && ex == EXIT_OK; at += 500) {
    int m = items - at < 500 ? items - at : 500;
    for (int i = 0; i < m; i++) {
      snprintf(ids[at + i], sizeof ids[0], "%s-%06d", queue, at + i);
      snprintf(payloads[at + i], sizeof payloads[0], "{\"n\":%d}", at + i);
      batch[i] = (cl_item_t){
          .item_id = ids[at + i], .queue = queue, .payload = payloads[at + i]};
    }
    rc = cl_enqueue(c, batch, (size_t)m, NULL);
    if (rc < 0)
      ex = cli_fail(c, rc, "enqueue");
    else
      created += rc;
  }
  free(ids);
  free(payloads);
  free(batch);
  if (ex != EXIT_OK) {
    cl_conn_free(&c);
    return ex;
  }
  printf("enqueued %ld items on queue %s\n", created, queue);
  fflush(stdout);

  pid_t *pids = calloc((size_t)workers, sizeof *pids);
  if (pids == NULL) {
    cl_conn_free(&c);
    return EXIT_ERROR;
  }
  for (int w = 0; w < workers; w++) {
    pids[w] = fork();
    if (pids[w] == 0) {
      /* The child must not use the parent's connection. */
      _exit(run_worker(dsn, queue, w, lease));
    }
    if (pids[w] < 0) {
      cli_err("fork failed");
      pids[w] = 0;
    }
  }
  printf("started %d worker processes, leases of %.1f s\n", workers, lease);
  fflush(stdout);

  const char *count_sql = "SELECT count(*) FILTER (WHERE state = 'done'),"
                          "       count(*) FILTER (WHERE state = 'leased'),"
                          "       count(*) FILTER (WHERE state = 'ready'),"
                          "       count(*) FILTER (WHERE state = 'dead')"
                          "  FROM claimer.items WHERE queue = $1";
  int killed = -1;
  long reaped = 0;
  time_t started = time(NULL);
  for (;;) {
    long counts[4];
    if (query_longs(c, count_sql, queue, counts, 4) != 0) {
      ex = EXIT_ERROR;
      break;
    }
    if (killed < 0 && counts[0] >= items / 3 && pids[workers - 1] > 0) {
      killed = workers - 1;
      kill(pids[killed], SIGKILL);
      waitpid(pids[killed], NULL, 0);
      pids[killed] = 0;
      printf("killed worker %d with SIGKILL while it held leases; its items "
             "come back when their leases expire and the reaper runs\n",
             killed);
    }
    cl_reap_info_t ri = {0};
    rc = cl_reap(c, 1000, &ri);
    if (rc != 0) {
      ex = cli_fail(c, rc, "reap");
      break;
    }
    reaped += ri.expired;
    printf("  done %5ld/%d  leased %4ld  ready %5ld  dead %ld  reaped %ld\n",
           counts[0], items, counts[1], counts[2], counts[3], reaped);
    fflush(stdout);
    if (counts[0] + counts[3] >= items)
      break;
    if (time(NULL) - started > 300) {
      cli_err("not finished after 300 s; giving up");
      ex = EXIT_ERROR;
      break;
    }
    sleep_ms(500);
  }
  for (int w = 0; w < workers; w++)
    if (pids[w] > 0)
      kill(pids[w], SIGTERM);
  int worker_failed = 0;
  for (int w = 0; w < workers; w++) {
    int st = 0;
    if (pids[w] > 0 && waitpid(pids[w], &st, 0) > 0 &&
        (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
      worker_failed = 1;
  }
  free(pids);
  if (ex == EXIT_OK) {
    long v[5];
    if (query_longs(c,
                    "SELECT count(*), count(r.item_id),"
                    "       count(*) FILTER (WHERE i.state = 'done'),"
                    "       count(*) FILTER (WHERE r.attempt > 1),"
                    "       (SELECT count(*) - count(DISTINCT item_id)"
                    "          FROM claimer.results WHERE queue = $1)"
                    "  FROM claimer.items i"
                    "  LEFT JOIN claimer.results r USING (item_id)"
                    " WHERE i.queue = $1",
                    queue, v, 5) != 0) {
      ex = EXIT_ERROR;
    } else {
      printf("\nitems %ld, done %ld, results %ld (duplicates %ld); %ld items "
             "finished on a second attempt after the killed worker's leases "
             "were reaped\n",
             v[0], v[2], v[1], v[4], v[3]);
      if (v[0] != items || v[2] != items || v[1] != items || v[4] != 0 ||
          worker_failed) {
        cli_err("FAILED: expected %d items done with one result each", items);
        ex = EXIT_ERROR;
      } else {
        printf("OK: every item done exactly once\n");
      }
    }
  }
  cl_conn_free(&c);
  if (ex == EXIT_OK) {
    char *args[] = {"status", "--dsn", (char *)dsn, NULL};
    optind = 1;
    printf("\n");
    fflush(stdout);
    cmd_status(3, args);
  }
  return ex;
}
