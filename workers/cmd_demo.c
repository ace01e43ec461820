/*
 * cmd_demo.c: `claimer demo`, the whole path in miniature.  It enqueues a
 * few thousand items, forks several worker processes (each with its own
 * connection) that race to claim and complete them, kills one of them with
 * SIGKILL mid-way while it holds leases, reaps its expired leases so its
 * items come back, and checks from the database that every item is done
 * with exactly one result.
 *
 * Then the results go downstream to two subscribers added before the work
 * began: "mail", through an exec sink that appends each delivery's key and
 * item to a file (a stand-in for a mail server: a repeat is the same key
 * again), and "audit", through the pg sink into an audit table of the same
 * database (the inbox of `claimer sink-setup`; the sent mark commits with
 * the row).  Several `claimer send` processes, this very binary run again,
 * share the deliveries; one mail sender is killed with SIGKILL mid-way.
 * The demo ends by checking, from the database, the file and the table,
 * that every subscriber was served every result once per key, and prints
 * the file's raw repeats as they are rather than hide them.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "proc.h"
#include "sink_pg.h"

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

/* Runs one query with nparams text parameters and returns the first row's
 * columns as longs in out[0..ncols); returns 0, or -1 after saying why. */
static int query_longs(cl_conn_t *c, const char *sql,
                       const char *const params[], int nparams, long *out,
                       int ncols) {
  PGresult *r =
      PQexecParams(cl_conn_pg(c), sql, nparams, NULL, params, NULL, NULL, 0);
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

/* ------------------------------------------------------------------------ */
/* Downstream: two subscribers, several `claimer send` processes            */

enum { SENDERS_PER_SUB = 2, NSENDERS = 2 * SENDERS_PER_SUB };

/* The mail stand-in: one line "KEY ITEM" per delivery, appended (one
 * write each, so concurrent senders do not interleave).  The file's path
 * comes in the environment, so no quoting of it is needed. */
static const char mail_cmd[] =
    "printf '%s %s\\n' \"$CLAIMER_IDEMPOTENCY_KEY\" \"$CLAIMER_ITEM_ID\" "
    ">> \"$CLAIMER_DEMO_MAIL_LOG\"";

/* The audit log: no unique key of its own, so that a second row for a
 * result would show; the pg sink's inbox is what keeps it to one. */
static const char audit_ddl[] =
    "CREATE TABLE IF NOT EXISTS claimer_demo_audit ("
    "  item_id         text        NOT NULL,"
    "  queue           text        NOT NULL,"
    "  idempotency_key text        NOT NULL,"
    "  result          jsonb,"
    "  attempt         integer     NOT NULL,"
    "  logged_at       timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS claimer_demo_audit_queue"
    "  ON claimer_demo_audit (queue)";
static const char audit_sql[] =
    "INSERT INTO claimer_demo_audit (item_id, queue, idempotency_key, result, "
    "attempt) VALUES ($1, $2, $5, $3, $7)";

/* One `claimer send` child. */
typedef struct sender {
  const char *what; /* "mail" or "audit" */
  int n;            /* 1.. among the senders of its subscriber */
  char name[96];    /* its --name: the deliveries' sender column */
  char log[1100];   /* its stdout and stderr */
  pid_t pid;        /* 0 once reaped */
  int status;       /* its exit status once reaped (128 + signal) */
} sender_t;

/* Sets up what the deliveries need before any result exists: the audit
 * table and the pg sink's inbox (what `claimer sink-setup --target DSN`
 * does) in the claimer database, and the two subscribers of the queue,
 * from now on.  Returns EXIT_OK or an exit status after saying why. */
static int add_subscribers(cl_conn_t *c, const char *dsn, const char *queue,
                           const char *mail_sub, const char *audit_sub) {
  /* Each is made once, so that a second demo prints no NOTICE. */
  long have[2];
  if (query_longs(c,
                  "SELECT (to_regclass('claimer_sink.inbox') IS NOT NULL)"
                  "::int, (to_regclass($1) IS NOT NULL)::int",
                  (const char *const[]){"claimer_demo_audit"}, 1, have, 2) != 0)
    return EXIT_ERROR;
  char err[1024];
  if (!have[0] && pgsink_setup(dsn, err, sizeof err) != 0) {
    cli_err("sink-setup: %s", err);
    return EXIT_ERROR;
  }
  PGresult *r = have[1] ? NULL : PQexec(cl_conn_pg(c), audit_ddl);
  if (r != NULL && PQresultStatus(r) != PGRES_COMMAND_OK) {
    cli_err("cannot create the audit table: %s", PQresultErrorMessage(r));
    PQclear(r);
    return EXIT_ERROR;
  }
  PQclear(r);
  const char *queues[] = {queue};
  cl_subscriber_opts_t o = {.queues = queues, .nqueues = 1, .from = "now"};
  const char *subs[] = {mail_sub, audit_sub};
  for (int i = 0; i < 2; i++) {
    int rc = cl_subscriber_add(c, subs[i], &o, NULL);
    if (rc < 0)
      return cli_fail(c, rc, "subscriber add");
  }
  printf("added subscribers %s and %s: each is owed every result of %s\n",
         mail_sub, audit_sub, queue);
  return EXIT_OK;
}

/* Starts `claimer send` (this very binary, through /proc/self/exe) with
 * args (NULL-terminated), the database in CLAIMER_DSN, where ps does not
 * show it, and the mail file in CLAIMER_DEMO_MAIL_LOG; stdout and stderr
 * go to s->log.  Returns 0, or -1 when it cannot fork. */
static int start_sender(sender_t *s, const char *dsn, const char *mail_log,
                        const char *const args[]) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
        dup2(out, 2) < 0)
      _exit(127);
    if (setenv("CLAIMER_DSN", dsn, 1) != 0 ||
        setenv("CLAIMER_DEMO_MAIL_LOG", mail_log, 1) != 0)
      _exit(127);
    execv("/proc/self/exe", (char *const *)args);
    fprintf(stderr, "cannot run /proc/self/exe: %s\n", strerror(errno));
    _exit(127);
  }
  s->pid = pid;
  return 0;
}

/* Reaps s when it has exited (block: wait for it).  Returns 1 when it has
 * been reaped, now or before, 0 when it still runs. */
static int reap_sender(sender_t *s, int block) {
  if (s->pid <= 0)
    return 1;
  int st = 0;
  if (waitpid(s->pid, &st, block ? 0 : WNOHANG) != s->pid)
    return 0;
  s->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  s->pid = 0;
  return 1;
}

/* Says that sender s stopped on its own, with the end of its log. */
static void report_sender(const sender_t *s) {
  char tail[2048];
  cli_err("%s sender %d exited with status %d; the end of %s:", s->what, s->n,
          s->status, s->log);
  if (cl__log_tail(s->log, 8, tail, sizeof tail) > 0)
    fprintf(stderr, "%s\n", tail);
}

static int cmp_line(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the mail file and sorts its lines: *lines (malloc'd) points into
 * *text (malloc'd).  Returns the number of lines, or -1. */
static long read_lines(const char *path, char **text, char ***lines) {
  *text = NULL;
  *lines = NULL;
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap + 1);
  for (size_t got = 1; buf != NULL && got > 0; len += got) {
    if (len == cap) {
      char *more = realloc(buf, 2 * cap + 1);
      if (more == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = more;
      cap *= 2;
    }
    got = fread(buf + len, 1, cap - len, f);
  }
  fclose(f);
  if (buf == NULL)
    return -1;
  buf[len] = '\0';
  long n = 0;
  for (size_t i = 0; i < len; i++)
    n += buf[i] == '\n';
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (v == NULL) {
    free(buf);
    return -1;
  }
  long k = 0;
  for (char *p = buf, *nl; k < n && (nl = strchr(p, '\n')) != NULL;
       p = nl + 1) {
    *nl = '\0';
    v[k++] = p;
  }
  qsort(v, (size_t)k, sizeof *v, cmp_line);
  *text = buf;
  *lines = v;
  return k;
}

/* What the mail file says against the database. */
typedef struct mail_check {
  long lines;    /* in the file */
  long distinct; /* distinct lines ("KEY ITEM") */
  long repeated; /* lines beyond the first of their key */
  long matched;  /* distinct lines that are a sent delivery's key and item */
  long unknown;  /* distinct lines the database does not know */
  long too_many; /* keys with more lines than their delivery had attempts */
} mail_check_t;

/* Compares the mail file at path with the subscriber's deliveries: every
 * sent one should appear, with its key and item, at least once and at
 * most once per attempt.  Returns 0, or -1 after saying why. */
static int check_mail(cl_conn_t *c, const char *sub, const char *path,
                      mail_check_t *m) {
  memset(m, 0, sizeof *m);
  char *text = NULL, **lines = NULL;
  long n = read_lines(path, &text, &lines);
  if (n < 0) {
    cli_err("cannot read %s", path);
    return -1;
  }
  const char *params[] = {sub};
  PGresult *r = PQexecParams(
      cl_conn_pg(c),
      "SELECT (idempotency_key || ' ' || item_id) COLLATE \"C\" AS line,"
      "       attempts"
      "  FROM claimer.deliveries WHERE subscriber = $1 AND state = 'sent'"
      " ORDER BY line",
      1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    cli_err("query failed: %s", PQresultErrorMessage(r));
    PQclear(r);
    free(lines);
    free(text);
    return -1;
  }
  m->lines = n;
  /* Both lists are sorted bytewise: walk them side by side. */
  int row = 0, rows = PQntuples(r);
  for (long i = 0; i < n;) {
    long j = i + 1;
    while (j < n && strcmp(lines[j], lines[i]) == 0)
      j++;
    m->distinct++;
    m->repeated += j - i - 1;
    while (row < rows && strcmp(PQgetvalue(r, row, 0), lines[i]) < 0)
      row++;
    if (row < rows && strcmp(PQgetvalue(r, row, 0), lines[i]) == 0) {
      m->matched++;
      if (j - i > atol(PQgetvalue(r, row, 1)))
        m->too_many++;
    } else {
      m->unknown++;
    }
    i = j;
  }
  PQclear(r);
  free(lines);
  free(text);
  return 0;
}

/* Sends the results of queue to the two subscribers through NSENDERS
 * `claimer send` processes, kills one mail sender with SIGKILL mid-way,
 * and checks what each subscriber got.  Returns EXIT_OK or EXIT_ERROR. */
static int deliver(cl_conn_t *c, const char *dsn, const char *queue,
                   const char *mail_sub, const char *audit_sub, long results,
                   double lease) {
  char dir[512];
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/claimer-demo-XXXXXX",
           tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL) {
    cli_err("cannot make a directory %s: %s", dir, strerror(errno));
    return EXIT_ERROR;
  }
  char mail_log[600];
  snprintf(mail_log, sizeof mail_log, "%s/mail.log", dir);
  /* A sender's lease per delivery: what a killed one holds comes back
   * after it.  At least 3 s, so that a busy machine's slow commits do not
   * take leases from live senders (that would be safe, but more repeats). */
  char lease_s[32];
  snprintf(lease_s, sizeof lease_s, "%g", lease < 3 ? 3 : lease);

  sender_t senders[NSENDERS] = {{0}};
  int ex = EXIT_OK, started = 0;
  for (int i = 0; i < NSENDERS && ex == EXIT_OK; i++) {
    sender_t *s = &senders[i];
    int mail = i < SENDERS_PER_SUB;
    s->what = mail ? "mail" : "audit";
    s->n = mail ? i + 1 : i - SENDERS_PER_SUB + 1;
    snprintf(s->name, sizeof s->name, "%s.%s.%d", queue, s->what, s->n);
    snprintf(s->log, sizeof s->log, "%s/sender-%s-%d.log", dir, s->what, s->n);
    const char *args[32] = {"claimer", "send", "--subscriber",
                            mail ? mail_sub : audit_sub};
    int k = 4;
    if (mail) {
      args[k++] = "--exec";
      args[k++] = mail_cmd;
    } else {
      /* The claimer database itself as the target: the sent mark
       * commits in the transaction that writes the row. */
      args[k++] = "--pg-target";
      args[k++] = dsn;
      args[k++] = "--pg-sql";
      args[k++] = audit_sql;
    }
    const char *common[] = {"--name",    s->name, "--lease",     lease_s,
                            "--timeout", "10",    "--poll",      "0.2",
                            "--drain",   "5",     "--log-level", "warning",
                            NULL};
    for (int j = 0; common[j] != NULL; j++)
      args[k++] = common[j];
    args[k] = NULL;
    if (start_sender(s, dsn, mail_log, args) != 0) {
      cli_err("fork failed: %s", strerror(errno));
      ex = EXIT_ERROR;
    } else {
      started++;
    }
  }
  if (ex == EXIT_OK) {
    printf("\nstarted %d sender processes (claimer send), delivery leases of "
           "%s s:\n"
           "  %d for %s: exec sink, appends \"KEY ITEM\" to %s (a stand-in "
           "mail server)\n"
           "  %d for %s: pg sink, a row per delivery in claimer_demo_audit, "
           "through the inbox of claimer sink-setup\n",
           started, lease_s, SENDERS_PER_SUB, mail_sub, mail_log,
           NSENDERS - SENDERS_PER_SUB, audit_sub);
    fflush(stdout);
  }

  const char *const subs[] = {mail_sub, audit_sub};
  const char *progress_sql =
      "SELECT count(*) FILTER (WHERE subscriber = $1 AND state = 'sent'),"
      "       count(*) FILTER (WHERE subscriber = $1 AND state = 'sending'),"
      "       count(*) FILTER (WHERE subscriber = $2 AND state = 'sent'),"
      "       count(*) FILTER (WHERE subscriber = $2 AND state = 'sending'),"
      "       count(*) FILTER (WHERE state IN ('retry', 'held', 'dead'))"
      "  FROM claimer.deliveries WHERE subscriber IN ($1, $2)";
  sender_t *victim = &senders[0];
  int killed = 0;
  double last_print = -1;
  struct timespec start_ts;
  clock_gettime(CLOCK_MONOTONIC, &start_ts);
  while (ex == EXIT_OK) {
    long p[5];
    if (query_longs(c, progress_sql, subs, 2, p, 5) != 0) {
      ex = EXIT_ERROR;
      break;
    }
    struct timespec now_ts;
    clock_gettime(CLOCK_MONOTONIC, &now_ts);
    double elapsed = (double)(now_ts.tv_sec - start_ts.tv_sec) +
                     (double)(now_ts.tv_nsec - start_ts.tv_nsec) / 1e9;
    int done = p[0] >= results && p[2] >= results;
    if (done || elapsed - last_print >= 2 || last_print < 0) {
      printf("  mail sent %5ld/%ld sending %2ld   audit sent %5ld/%ld "
             "sending %2ld",
             p[0], results, p[1], p[2], results, p[3]);
      if (p[4] > 0)
        printf("   retry, held or dead %ld", p[4]);
      printf("\n");
      fflush(stdout);
      last_print = elapsed;
    }
    if (done)
      break;
    if (!killed && p[0] >= results / 3) {
      killed = 1;
      kill(victim->pid, SIGKILL);
      reap_sender(victim, 1);
      /* How many it held is known only once its backend has finished
       * what it had been sent (a claim may still commit): the end
       * counts the deliveries that took a second attempt. */
      printf("killed mail sender %d with SIGKILL mid-way (mail sent %ld, "
             "sending %ld): what it held comes back when its %s s leases run "
             "out, and the other mail sender sends it again, same keys\n",
             victim->n, p[0], p[1], lease_s);
      fflush(stdout);
    }
    for (int i = 0; i < NSENDERS; i++) {
      sender_t *s = &senders[i];
      if (s != victim && s->pid > 0 && reap_sender(s, 0)) {
        report_sender(s);
        ex = EXIT_ERROR;
      }
    }
    if (ex == EXIT_OK && elapsed > 300) {
      cli_err("the deliveries were not all sent after 300 s; giving up");
      ex = EXIT_ERROR;
    }
    sleep_ms(100);
  }
  /* Stop the senders still running: each drains and exits 0. */
  for (int i = 0; i < NSENDERS; i++)
    if (senders[i].pid > 0)
      kill(senders[i].pid, SIGTERM);
  for (int i = 0; i < NSENDERS; i++) {
    sender_t *s = &senders[i];
    int was_running = s->pid > 0;
    reap_sender(s, 1);
    if (was_running && s->status != 0 && ex == EXIT_OK) {
      report_sender(s);
      ex = EXIT_ERROR;
    }
  }
  if (ex != EXIT_OK) {
    fprintf(stderr, "the senders' logs are in %s\n", dir);
    return ex;
  }
  if (!killed)
    printf("no sender was killed: every delivery was sent before a third of "
           "them was seen sent\n");
  printf("stopped the %s%d senders (SIGTERM): each drained and exited 0\n\n",
         killed ? "other " : "", NSENDERS - killed);

  /* The check, from the database, the mail file and the audit table. */
  long m[3], a[4];
  const char *mp[] = {mail_sub, queue}, *ap[] = {audit_sub, queue};
  const char *sent_sql =
      "SELECT count(*) FILTER (WHERE d.state = 'sent'),"
      "       count(*) FILTER (WHERE d.state = 'sent' AND d.attempts > 1),"
      "       (SELECT count(*) FROM claimer.results r WHERE r.queue = $2"
      "           AND NOT EXISTS (SELECT 1 FROM claimer.deliveries x"
      "                            WHERE x.subscriber = $1"
      "                              AND x.item_id = r.item_id"
      "                              AND x.state = 'sent'))"
      "  FROM claimer.deliveries d WHERE d.subscriber = $1";
  long as[3];
  mail_check_t mc;
  if (query_longs(c, sent_sql, mp, 2, m, 3) != 0 ||
      query_longs(c, sent_sql, ap, 2, as, 3) != 0 ||
      query_longs(c,
                  "SELECT count(*), count(DISTINCT a.item_id),"
                  "       count(*) FILTER (WHERE a.idempotency_key ="
                  "                              d.idempotency_key),"
                  "       (SELECT count(*) FROM claimer.results r"
                  "         WHERE r.queue = $2 AND NOT EXISTS ("
                  "               SELECT 1 FROM claimer_demo_audit x"
                  "                WHERE x.item_id = r.item_id))"
                  "  FROM claimer_demo_audit a"
                  "  LEFT JOIN claimer.deliveries d"
                  "    ON d.subscriber = $1 AND d.item_id = a.item_id"
                  " WHERE a.queue = $2",
                  ap, 2, a, 4) != 0 ||
      check_mail(c, mail_sub, mail_log, &mc) != 0)
    return EXIT_ERROR;
  printf("mail:  %ld of %ld results sent; mail.log has %ld lines, %ld "
         "distinct keys, %ld of them the database's key for their item\n",
         m[0], results, mc.lines, mc.distinct, mc.matched);
  printf("       raw repeats: %ld %s a key; %ld deliver%s took more "
         "than one attempt (the same key every time)\n",
         mc.repeated, mc.repeated == 1 ? "line repeats" : "lines repeat", m[1],
         m[1] == 1 ? "y" : "ies");
  printf("audit: %ld of %ld results sent; claimer_demo_audit has %ld rows "
         "for %ld distinct results, %ld with their delivery's key\n",
         as[0], results, a[0], a[1], a[2]);
  printf("       %ld deliver%s took more than one attempt; still one row "
         "per result\n",
         as[1], as[1] == 1 ? "y" : "ies");
  int ok = m[0] == results && m[2] == 0 && mc.distinct == results &&
           mc.matched == results && mc.unknown == 0 && mc.too_many == 0 &&
           as[0] == results && as[2] == 0 && a[0] == results &&
           a[1] == results && a[2] == results && a[3] == 0;
  if (!ok) {
    cli_err("FAILED: expected each subscriber served each of the %ld "
            "results once per key (mail: %ld unsent, %ld unknown lines, %ld "
            "keys with more lines than attempts; audit: %ld unsent, %ld "
            "results without a row); files in %s",
            results, m[2], mc.unknown, mc.too_many, as[2], a[3], dir);
    return EXIT_ERROR;
  }
  printf("OK: every subscriber served every result, once per key\n");
  return EXIT_OK;
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
  int items = 1000, workers = 4;
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
             "Migrates, enqueues N items (default 1000) on a fresh queue,\n"
             "starts W worker processes (default 4) that race to claim and\n"
             "complete them with leases of S seconds (default 2), kills one\n"
             "worker with SIGKILL while it holds leases, reaps so that its\n"
             "items come back, and checks that every item ends done with\n"
             "exactly one result.\n"
             "\n"
             "Then it delivers the results to two subscribers of the queue,\n"
             "QUEUE.mail (an exec sink appending \"KEY ITEM\" per delivery\n"
             "to a file in a new directory under $TMPDIR or /tmp, a stand-in\n"
             "mail server) and QUEUE.audit (the pg sink into the table\n"
             "claimer_demo_audit of the same database, through the inbox of\n"
             "claimer sink-setup), with two `claimer send` processes each\n"
             "(delivery leases of S seconds, at least 3); kills one mail\n"
             "sender with SIGKILL mid-way, and checks that each subscriber\n"
             "was sent every result once per key: the file's distinct keys\n"
             "are the database's (its raw repeats counted and printed), and\n"
             "the audit table holds exactly one row per result.  The file\n"
             "and the senders' logs are kept.\n"
             "\n" CLI_DSN_HELP);
      return EXIT_OK;
    default:
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);

  cl_conn_t *c = NULL;
  /* The children need the same database: what cli_connect_dsn chose. */
  char *dsn = NULL;
  int ex = cli_connect_dsn(dsn_opt, &c, &dsn);
  if (ex != EXIT_OK)
    return ex;
  printf("claimer demo on %s\n", cl_conn_dsn_redacted(c));
  int rc = cl_migrate(c, NULL, NULL);
  if (rc < 0) {
    ex = cli_fail(c, rc, "migrate");
    cl_conn_free(&c);
    free(dsn);
    return ex;
  }
  char queue[64], mail_sub[80], audit_sub[80];
  snprintf(queue, sizeof queue, "demo_%ld", (long)time(NULL));
  snprintf(mail_sub, sizeof mail_sub, "%s.mail", queue);
  snprintf(audit_sub, sizeof audit_sub, "%s.audit", queue);
  const char *queue_p = queue;

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
    free(dsn);
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
  if (ex == EXIT_OK) {
    printf("enqueued %ld items on queue %s\n", created, queue);
    ex = add_subscribers(c, dsn, queue, mail_sub, audit_sub);
  }
  fflush(stdout);
  pid_t *pids = ex == EXIT_OK ? calloc((size_t)workers, sizeof *pids) : NULL;
  if (pids == NULL) {
    cl_conn_free(&c);
    free(dsn);
    return ex == EXIT_OK ? EXIT_ERROR : ex;
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
  /* Look every 100 ms (so that even a small run is caught mid-way), reap
   * and print every 500 ms. */
  for (int tick = 0;; tick++) {
    long counts[4];
    if (query_longs(c, count_sql, &queue_p, 1, counts, 4) != 0) {
      ex = EXIT_ERROR;
      break;
    }
    int finished = counts[0] + counts[3] >= items;
    int kill_now = killed < 0 && !finished && counts[0] >= items / 3 &&
                   pids[workers - 1] > 0;
    if (tick % 5 == 0 || finished || kill_now) {
      cl_reap_info_t ri = {0};
      rc = cl_reap(c, 1000, &ri);
      if (rc != 0) {
        ex = cli_fail(c, rc, "reap");
        break;
      }
      reaped += ri.expired;
      printf("  done %5ld/%d  leased %4ld  ready %5ld  dead %ld  reaped %ld\n",
             counts[0], items, counts[1], counts[2], counts[3], reaped);
    }
    if (kill_now) {
      killed = workers - 1;
      kill(pids[killed], SIGKILL);
      waitpid(pids[killed], NULL, 0);
      pids[killed] = 0;
      printf("killed worker %d with SIGKILL while it held leases; its items "
             "come back when their leases expire and the reaper runs\n",
             killed);
    }
    fflush(stdout);
    if (finished)
      break;
    if (time(NULL) - started > 300) {
      cli_err("not finished after 300 s; giving up");
      ex = EXIT_ERROR;
      break;
    }
    sleep_ms(100);
  }
  if (ex == EXIT_OK && killed < 0)
    printf("no worker was killed: every item was done before a third of "
           "them was seen done\n");
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
                    &queue_p, 1, v, 5) != 0) {
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
  if (ex == EXIT_OK)
    ex = deliver(c, dsn, queue, mail_sub, audit_sub, (long)items, lease);
  cl_conn_free(&c);
  if (ex == EXIT_OK) {
    char *args[] = {"status", "--dsn", dsn, NULL};
    optind = 1;
    printf("\n");
    fflush(stdout);
    cmd_status(3, args);
  }
  free(dsn);
  return ex;
}
