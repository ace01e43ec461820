/*
 * bench_send: the sender's figures.  Figures, not a pass/fail test.
 *
 * N results (--results, 5,000) are made once through the library
 * (enqueue, claim, complete in batches), and the tables analyzed (VACUUM
 * ANALYZE, as before the other benches' timed runs: without row counts
 * the planner's choices slowed one sender several times over after a
 * TRUNCATE).  Then, for each sink and each
 * process count P (--procs, 1,2), a fresh subscriber of them all is
 * drained by P `claimer send --once` processes started together:
 *
 *   exec     --exec true: a no-op command, one /bin/sh per delivery;
 *   webhook  --webhook to hookd on 127.0.0.1 (signed; hookd checks every
 *            signature; the sender keeps its connections alive);
 *   pg       --pg-target into a target database of its own, one
 *            INSERT per delivery in a transaction with the inbox row.
 *
 * Seconds run from the first spawn to the last exit (so they include the
 * processes' start and their last empty claim); deliveries/s is N over
 * that.  The peak RSS is the largest ru_maxrss that wait4() gives for a
 * sender process of the run.  Each run is checked, and a failed check is
 * printed: N deliveries 'sent', the "sent" lines of the processes summing
 * to N, hookd's N distinct ids and no bad signature, N audit rows.  The
 * load column is the 1-minute load average as the run starts: on a
 * shared machine the figures are only as quiet as it was.
 *
 * usage: bench_send --claimer PATH [--hookd PATH] [--results N]
 *                   [--procs P[,P]] [--concurrency C] [--sinks LIST]
 *                   [--dsn DSN --target-dsn DSN --yes-wipe]
 *
 * Without --dsn (and without CLAIMER_DSN) it works in databases of its
 * own on the embedded PostgreSQL, claimer_bench_send and
 * claimer_bench_send_target, dropped and created afresh.  Given a DSN it
 * empties that database's claimer tables (TRUNCATE) and refuses to run
 * without --yes-wipe; the pg sink then needs --target-dsn (a database it
 * may create a table audit_bench_send in, and whose inbox rows of its own
 * subscribers, bench-N, it deletes), else that case is skipped.
 * Without --hookd the webhook case is skipped (said so).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "claimer/claimer.h"
#include "embedded.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

enum { BATCH = 1000, MAX_PROCS = 8 };

static const char usage_text[] =
    "usage: bench_send --claimer PATH [--hookd PATH] [--results N]\n"
    "                  [--procs P[,P]] [--concurrency C] [--sinks LIST]\n"
    "                  [--dsn DSN --target-dsn DSN --yes-wipe]\n"
    "\n"
    "  --claimer      the claimer binary (required)\n"
    "  --hookd        tests/tools/hookd, for the webhook case\n"
    "  --results      results to deliver per run (5000)\n"
    "  --procs        `claimer send --once` processes per run (1,2)\n"
    "  --concurrency  each sender's --concurrency (its default, 8)\n"
    "  --sinks        which cases, of exec,webhook,pg (all)\n"
    "\n"
    "Without --dsn or CLAIMER_DSN it uses databases of its own on the\n"
    "embedded PostgreSQL (claimer_bench_send, claimer_bench_send_target),\n"
    "made afresh.  Given a DSN it TRUNCATEs the claimer tables there, so it\n"
    "refuses unless --yes-wipe; the pg case then needs --target-dsn.\n";

static const char *claimer_bin, *hookd_bin, *concurrency;
static char tmpdir[] = "/tmp/claimer-bench-send-XXXXXX";

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Runs sql for its effect.  Returns 0 or -1 (error printed). */
static int run_sql(PGconn *p, const char *sql) {
  PGresult *r = PQexec(p, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
           PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok)
    fprintf(stderr, "bench_send: %s\n  in: %.200s\n", PQerrorMessage(p), sql);
  PQclear(r);
  return ok ? 0 : -1;
}

/* The first column of the first row as a long, or -1. */
static long one_long(PGconn *p, const char *sql) {
  PGresult *r = PQexec(p, sql);
  long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
               ? atol(PQgetvalue(r, 0, 0))
               : -1;
  if (v < 0)
    fprintf(stderr, "bench_send: %s\n  in: %.200s\n", PQerrorMessage(p), sql);
  PQclear(r);
  return v;
}

/* Starts argv with stdout and stderr into out_path.  Returns the pid. */
static pid_t spawn(const char *const argv[], const char *out_path) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int in = open("/dev/null", O_RDONLY);
    if (fd < 0 || in < 0)
      _exit(126);
    dup2(in, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  return pid;
}

/* The whole file (malloc'd; "" when missing). */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return strdup("");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)(n > 0 ? n : 0) + 1);
  size_t got = s && n > 0 ? fread(s, 1, (size_t)n, f) : 0;
  if (s)
    s[got] = '\0';
  fclose(f);
  return s;
}

/* N results in queue bench-send, in batches through the library.
 * Returns 0 or -1 (error printed). */
static int make_results(cl_conn_t *c, long n) {
  cl_item_t items[BATCH];
  static char ids[BATCH][32];
  for (long base = 0; base < n; base += BATCH) {
    int m = n - base < BATCH ? (int)(n - base) : BATCH;
    for (int i = 0; i < m; i++) {
      snprintf(ids[i], sizeof ids[i], "bench-send-%ld", base + i);
      items[i] = (cl_item_t){.item_id = ids[i],
                             .queue = "bench-send",
                             .payload = "{\"to\":\"someone\"}"};
    }
    cl_lease_t *l = NULL;
    size_t got = 0;
    if (cl_enqueue(c, items, (size_t)m, NULL) != m ||
        cl_claim(c, "bench-send", "bench-send", m, 600, &l, &got) != 0 ||
        (int)got != m) {
      fprintf(stderr, "bench_send: making results: %s\n",
              cl_conn_last_error(c));
      cl_leases_free(l, got);
      return -1;
    }
    for (size_t i = 0; i < got; i++)
      if (cl_complete(c, l[i].item_id, l[i].token, "{\"ok\":1}", NULL) != 0) {
        fprintf(stderr, "bench_send: complete: %s\n", cl_conn_last_error(c));
        cl_leases_free(l, got);
        return -1;
      }
    cl_leases_free(l, got);
  }
  return 0;
}

/* hookd, for one webhook run. */
typedef struct hookd {
  pid_t pid;
  char url[128], log[700];
} hookd_t;

static int hookd_up(hookd_t *h, int run) {
  char out[700], port_file[700];
  snprintf(out, sizeof out, "%s/hookd-%d.out", tmpdir, run);
  snprintf(port_file, sizeof port_file, "%s/hookd-%d.port", tmpdir, run);
  snprintf(h->log, sizeof h->log, "%s/hookd-%d.log", tmpdir, run);
  const char *argv[] = {hookd_bin, "--out",    out,    "--port-file",
                        port_file, "--secret", SECRET, NULL};
  h->pid = spawn(argv, h->log);
  int port = 0;
  for (double end = mono() + 10; port <= 0 && mono() < end; sleep_ms(20)) {
    char *s = slurp(port_file);
    port = atoi(s);
    free(s);
  }
  if (port <= 0) {
    fprintf(stderr, "bench_send: hookd did not start (%s)\n", h->log);
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    return -1;
  }
  snprintf(h->url, sizeof h->url, "http://127.0.0.1:%d/hook", port);
  return 0;
}

/* Stops hookd; returns 0 when it saw n distinct ids, none badly signed. */
static int hookd_down(hookd_t *h, long n) {
  kill(h->pid, SIGTERM);
  waitpid(h->pid, NULL, 0);
  char *log = slurp(h->log);
  const char *sum = strstr(log, "hookd: ");
  unsigned long req = 0, rec = 0, bad = 0, ids = 0, rep = 0;
  int ok = sum != NULL &&
           sscanf(sum,
                  "hookd: %lu requests, %lu recorded, %lu bad signatures, "
                  "%lu distinct ids, %lu repeated",
                  &req, &rec, &bad, &ids, &rep) == 5 &&
           bad == 0 && ids == (unsigned long)n;
  if (!ok)
    fprintf(stderr, "bench_send: check failed: hookd: %s\n",
            sum ? sum : "no summary");
  free(log);
  return ok ? 0 : -1;
}

typedef struct run_out {
  double seconds;
  long rss_kib; /* the largest ru_maxrss of the run's senders */
  long sent;    /* summed over their "sent N" lines */
  int failed;
} run_out_t;

/* P `claimer send --once` processes of subscriber sub with the sink's
 * options, started together; waits for all. */
static void run_senders(const char *dsn, const char *sub,
                        const char *const *sink, int procs, int run,
                        run_out_t *o) {
  const char *argv[24] = {claimer_bin, "send",   "--subscriber",
                          sub,         "--once", "--log-level",
                          "warning",   "--dsn",  dsn};
  int n = 9;
  if (concurrency != NULL) {
    argv[n++] = "--concurrency";
    argv[n++] = concurrency;
  }
  for (int i = 0; sink[i] != NULL; i++)
    argv[n++] = sink[i];
  argv[n] = NULL;
  pid_t pids[MAX_PROCS];
  char outs[MAX_PROCS][700];
  memset(o, 0, sizeof *o);
  double t0 = mono();
  for (int i = 0; i < procs; i++) {
    snprintf(outs[i], sizeof outs[i], "%s/send-%d-%d.out", tmpdir, run, i);
    pids[i] = spawn(argv, outs[i]);
  }
  for (int i = 0; i < procs; i++) {
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (wait4(pids[i], &st, 0, &ru) != pids[i] || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0) {
      char *text = slurp(outs[i]);
      fprintf(stderr, "bench_send: sender %d of %s failed (status %d): %s\n", i,
              sub, st, text);
      free(text);
      o->failed = 1;
    }
    if (ru.ru_maxrss > o->rss_kib)
      o->rss_kib = ru.ru_maxrss;
  }
  o->seconds = mono() - t0;
  /* Each prints "sent N, retry ..." as its last line (--once). */
  for (int i = 0; i < procs; i++) {
    char *text = slurp(outs[i]);
    for (const char *l = text; l != NULL && *l;
         l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
      if (strncmp(l, "sent ", 5) == 0)
        o->sent += atol(l + 5);
    free(text);
  }
}

typedef enum sink { SINK_EXEC, SINK_WEBHOOK, SINK_PG } sink_t;
static const char *const sink_names[] = {"exec (true)", "webhook (hookd)",
                                         "pg (target db)"};
static const char *const sink_words[] = {"exec", "webhook", "pg"};

/* Returns 1 when word is one of the comma-separated words of list. */
static int listed(const char *list, const char *word) {
  size_t n = strlen(word);
  for (const char *s = list; s != NULL;
       s = strchr(s, ',') ? strchr(s, ',') + 1 : NULL)
    if (strncmp(s, word, n) == 0 && (s[n] == ',' || s[n] == '\0'))
      return 1;
  return 0;
}

/* One run: a fresh subscriber, its senders, the checks.  Returns 0 or -1
 * (a check failed, printed). */
static int bench_case(cl_conn_t *c, PGconn *p, PGconn *t, const char *dsn,
                      const char *target, sink_t sink, int procs, long n,
                      int run) {
  static const char *queues[] = {"bench-send"};
  char sub[64], secret_file[700];
  snprintf(sub, sizeof sub, "bench-%d", run);
  cl_subscriber_opts_t so = {
      .queues = queues, .nqueues = 1, .from = "beginning"};
  if (cl_subscriber_add(c, sub, &so, NULL) != 1) {
    fprintf(stderr, "bench_send: subscriber add: %s\n", cl_conn_last_error(c));
    return -1;
  }
  hookd_t h = {0};
  const char *opts[8] = {NULL};
  if (sink == SINK_EXEC) {
    opts[0] = "--exec";
    opts[1] = "true";
  } else if (sink == SINK_WEBHOOK) {
    if (hookd_up(&h, run) != 0) {
      cl_subscriber_remove(c, sub, 1, NULL);
      return -1;
    }
    snprintf(secret_file, sizeof secret_file, "%s/whsec", tmpdir);
    opts[0] = "--webhook";
    opts[1] = h.url;
    opts[2] = "--secret-file";
    opts[3] = secret_file;
  } else {
    opts[0] = "--pg-target";
    opts[1] = target;
    opts[2] = "--pg-sql";
    opts[3] = "INSERT INTO audit_bench_send (subscriber, item_id, key) "
              "VALUES ($6, $1, $5)";
  }
  double load[1] = {0};
  if (getloadavg(load, 1) != 1)
    load[0] = -1;
  run_out_t o;
  run_senders(dsn, sub, opts, procs, run, &o);
  int failed = o.failed;
  if (sink == SINK_WEBHOOK)
    failed |= hookd_down(&h, n) != 0;
  char sql[300];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.deliveries WHERE subscriber = '%s' "
           "AND state = 'sent'",
           sub);
  long sent = one_long(p, sql);
  if (sent != n || o.sent != n) {
    fprintf(stderr,
            "bench_send: check failed: %ld deliveries sent in the database, "
            "%ld by the processes' count (want %ld each)\n",
            sent, o.sent, n);
    failed = 1;
  }
  if (sink == SINK_PG) {
    snprintf(sql, sizeof sql,
             "SELECT count(DISTINCT key) FROM audit_bench_send WHERE "
             "subscriber = '%s'",
             sub);
    long rows = one_long(t, sql);
    if (rows != n) {
      fprintf(stderr, "bench_send: check failed: %ld audit rows (want %ld)\n",
              rows, n);
      failed = 1;
    }
  }
  printf("  %-16s %5d  %7ld  %7.2f  %12.0f  %11.1f MiB  %8.1f%s\n",
         sink_names[sink], procs, n, o.seconds, (double)n / o.seconds,
         (double)o.rss_kib / 1024.0, load[0], failed ? "  (check failed)" : "");
  fflush(stdout);
  long unsettled = 0;
  if (cl_subscriber_remove(c, sub, 1, &unsettled) != 0)
    failed = 1;
  return failed ? -1 : 0;
}

/* The embedded server's databases of this bench, made afresh: their
 * DSNs into dsn and target.  Returns 0 or -1 (error printed). */
static int embedded_dbs(char *dsn, char *target, size_t n) {
  cl_embedded_info_t info;
  char why[1024];
  if (cl_embedded_ensure(NULL, &info, why, sizeof why) != 0) {
    fprintf(stderr, "bench_send: %s\n", why);
    return -1;
  }
  PGconn *p = PQconnectdb(info.dsn);
  if (PQstatus(p) != CONNECTION_OK) {
    fprintf(stderr, "bench_send: %s", PQerrorMessage(p));
    PQfinish(p);
    return -1;
  }
  run_sql(p, "SET client_min_messages = warning");
  int rc =
      run_sql(p, "DROP DATABASE IF EXISTS claimer_bench_send WITH (FORCE)") ||
              run_sql(p, "DROP DATABASE IF EXISTS claimer_bench_send_target "
                         "WITH (FORCE)") ||
              run_sql(p, "CREATE DATABASE claimer_bench_send") ||
              run_sql(p, "CREATE DATABASE claimer_bench_send_target")
          ? -1
          : 0;
  PQfinish(p);
  /* In a key=value string the last value of a key wins. */
  if ((size_t)snprintf(dsn, n, "%s dbname=claimer_bench_send", info.dsn) >= n ||
      (size_t)snprintf(target, n, "%s dbname=claimer_bench_send_target",
                       info.dsn) >= n)
    rc = -1;
  return rc;
}

/* Removes the bench's files (all in tmpdir itself) and tmpdir. */
static void remove_tmpdir(void) {
  DIR *d = opendir(tmpdir);
  for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
    char path[700];
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
        (size_t)snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name) <
            sizeof path)
      unlink(path);
  }
  if (d != NULL)
    closedir(d);
  if (rmdir(tmpdir) != 0)
    fprintf(stderr, "bench_send: could not remove %s: %s\n", tmpdir,
            strerror(errno));
}

int main(int argc, char **argv) {
  const char *dsn = getenv("CLAIMER_DSN"), *target = NULL;
  const char *sinks = "exec,webhook,pg";
  long n = 5000;
  int procs[2] = {1, 2}, nprocs = 2, yes_wipe = 0, bad = 0;
  static const struct option opts[] = {
      {"dsn", required_argument, NULL, 'd'},
      {"target-dsn", required_argument, NULL, 'T'},
      {"yes-wipe", no_argument, NULL, 'Y'},
      {"claimer", required_argument, NULL, 'c'},
      {"hookd", required_argument, NULL, 'k'},
      {"results", required_argument, NULL, 'n'},
      {"procs", required_argument, NULL, 'p'},
      {"concurrency", required_argument, NULL, 'C'},
      {"sinks", required_argument, NULL, 'S'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'd':
      dsn = optarg;
      break;
    case 'T':
      target = optarg;
      break;
    case 'Y':
      yes_wipe = 1;
      break;
    case 'c':
      claimer_bin = optarg;
      break;
    case 'k':
      hookd_bin = optarg;
      break;
    case 'n':
      n = atol(optarg);
      bad |= n < 1 || n > 10000000;
      break;
    case 'p':
      nprocs = sscanf(optarg, "%d,%d", &procs[0], &procs[1]);
      bad |= nprocs < 1;
      for (int i = 0; i < nprocs; i++)
        bad |= procs[i] < 1 || procs[i] > MAX_PROCS;
      break;
    case 'C':
      concurrency = optarg;
      break;
    case 'S':
      sinks = optarg;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return 0;
    default:
      bad = 1;
    }
  }
  if (claimer_bin == NULL || access(claimer_bin, X_OK) != 0) {
    fprintf(stderr, "bench_send: --claimer PATH: %s\n",
            claimer_bin ? strerror(errno) : "required");
    bad = 1;
  }
  if (bad || optind != argc) {
    fputs(usage_text, stderr);
    return 2;
  }
  if (dsn != NULL && !yes_wipe) {
    fprintf(stderr,
            "bench_send: refusing to run on %s without --yes-wipe: it "
            "empties the claimer tables there (see --help)\n",
            getenv("CLAIMER_DSN") == dsn ? "CLAIMER_DSN" : "--dsn");
    return 2;
  }
  static char edsn[1400], etarget[1400];
  if (dsn == NULL) {
    if (embedded_dbs(edsn, etarget, sizeof edsn) != 0)
      return 1;
    dsn = edsn;
    target = etarget;
  }
  cl_conn_t *c = NULL;
  int m = 0;
  if (cl_conn_new(&c, dsn) != 0 || cl_conn_connect(c) != 0 ||
      (m = cl_migrate(c, NULL, NULL)) < 0) {
    fprintf(stderr, "bench_send: %s%s%s\n", m < 0 ? cl_err_name(m) : "",
            m < 0 ? ": " : "", c ? cl_conn_last_error(c) : "bad dsn");
    cl_conn_free(&c);
    return 1;
  }
  PGconn *p = cl_conn_pg(c);
  if (run_sql(p, "TRUNCATE claimer.items, claimer.claims, claimer.results, "
                 "claimer.deliveries, claimer.alerts, claimer.workers "
                 "CASCADE") != 0 ||
      run_sql(p, "DELETE FROM claimer.subscribers") != 0 ||
      mkdtemp(tmpdir) == NULL) {
    cl_conn_free(&c);
    return 1;
  }
  PGconn *t = NULL;
  if (target != NULL) {
    t = PQconnectdb(target);
    const char *setup[] = {claimer_bin, "sink-setup", "--target", target, NULL};
    char out[700];
    snprintf(out, sizeof out, "%s/sink-setup.out", tmpdir);
    int st = 0;
    pid_t pid = spawn(setup, out);
    if (PQstatus(t) != CONNECTION_OK || waitpid(pid, &st, 0) != pid ||
        st != 0 || run_sql(t, "SET client_min_messages = warning") != 0 ||
        run_sql(t, "DROP TABLE IF EXISTS audit_bench_send") != 0 ||
        /* A run before this one left its keys in the inbox under the same
         * subscriber names: its repeats would be skipped, not delivered. */
        run_sql(t, "DELETE FROM claimer_sink.inbox WHERE subscriber LIKE "
                   "'bench-%'") != 0 ||
        run_sql(t, "CREATE TABLE audit_bench_send (subscriber text, item_id "
                   "text, key text, at timestamptz DEFAULT now())") != 0) {
      fprintf(stderr, "bench_send: the pg target is not usable: %s(see %s)\n",
              PQerrorMessage(t), out);
      PQfinish(t);
      t = NULL;
    }
  }
  char secret_file[700];
  snprintf(secret_file, sizeof secret_file, "%s/whsec", tmpdir);
  FILE *f = fopen(secret_file, "w");
  if (f == NULL) {
    cl_conn_free(&c);
    return 1;
  }
  fprintf(f, "%s\n", SECRET);
  fclose(f);
  chmod(secret_file, 0600);

  double t0 = mono();
  /* Then analyzed, as bench_claim's and bench_reap's tables are before a
   * timed run: on tables never analyzed since their TRUNCATE the planner
   * has no row counts, and one sender's exec drain ran at 58-75
   * deliveries/s instead of about 380 (bench/run --quick, 1,000 results). */
  if (make_results(c, n) != 0 ||
      run_sql(p, "VACUUM ANALYZE claimer.items, claimer.results, "
                 "claimer.deliveries, claimer.subscribers") != 0) {
    cl_conn_free(&c);
    return 1;
  }
  char *red = cl_dsn_redact(dsn);
  printf("bench_send on %s: %ld results made in %.1f s; one fresh "
         "subscriber per run, `claimer send --once` processes%s%s\n",
         red ? red : "?", n, mono() - t0,
         concurrency ? ", --concurrency " : " (concurrency 8)",
         concurrency ? concurrency : "");
  free(red);
  printf("  %-16s %5s  %7s  %7s  %12s  %15s  %8s\n", "sink", "procs", "results",
         "seconds", "deliveries/s", "peak RSS/sender", "load 1m");
  fflush(stdout);
  int failed = 0, run = 0;
  for (int s = SINK_EXEC; s <= SINK_PG; s++) {
    if (!listed(sinks, sink_words[s]))
      continue;
    if (s == SINK_WEBHOOK && hookd_bin == NULL) {
      printf("  %-16s skipped: no --hookd (built with -Dtests=true)\n",
             sink_names[s]);
      continue;
    }
    if (s == SINK_PG && t == NULL) {
      printf("  %-16s skipped: no target database (--target-dsn)\n",
             sink_names[s]);
      continue;
    }
    for (int i = 0; i < nprocs; i++)
      failed |=
          bench_case(c, p, t, dsn, target, (sink_t)s, procs[i], n, ++run) != 0;
  }
  if (failed)
    fprintf(stderr, "bench_send: a check failed; the logs are in %s\n", tmpdir);
  else
    remove_tmpdir();
  PQfinish(t);
  cl_conn_free(&c);
  return failed;
}
