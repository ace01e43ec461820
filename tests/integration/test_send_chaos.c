/*
 * test_send_chaos.c: `claimer send` under a killer.  N results (10,000 by
 * default, CLAIMER_CHAOS_RESULTS) are consumed by three subscribers, each
 * served by two `claimer send` daemons (real processes, short leases):
 * `mail` through the exec sink (a shell line appended to a file), `hook`
 * through the webhook sink to hookd (which checks every signature) and
 * `audit` through the pg sink into a target database of its own.  Every
 * half second to a second a random daemon is killed with SIGKILL (its
 * process group; the commands of the exec sink run in sessions of their
 * own and finish as orphans, as after a crash of the sender alone) and
 * started again at once, until every subscriber has N deliveries 'sent'.
 *
 * What must hold then (G5, G9, G10): each subscriber records each result
 * exactly once (N rows, all 'sent'); every effect carries the key
 * claimer.idempotency_key(subscriber, item_id); the exec file and the
 * receiver saw every key at least once (repeats are expected: a sink that
 * ran before its sender died is run again with the same key, and their
 * number is printed, not hidden); the pg target holds exactly one audit
 * row per key, since its inbox and the statement commit together.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "harness.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

enum { NSUBS = 3, SENDERS = 2, BATCH = 1000 };

/* The defaults: CLAIMER_CHAOS_RESULTS results, delivered within
 * CLAIMER_CHAOS_DEADLINE seconds: a stall should fail, not a busy
 * machine.  For 10,000 on 2 shared cores the plain build took 65-95 s
 * alone and 147 s beside the `work` test; the sanitized build 101 s alone
 * and 175 s beside `work`, so scripts/test gives it 4,000 (32 s). */
enum { DEFAULT_RESULTS = 10000, DEFAULT_DEADLINE = 300 };

/* One subscriber, its sink's arguments and its daemons. */
typedef struct sub {
  const char *name;
  const char *sink[8]; /* the sink's options, NULL-terminated */
  pid_t pid[SENDERS];  /* 0: not running */
  int started[SENDERS];
  int killed;
} sub_t;

typedef struct fx {
  char dsn[1024];
  char target[1024];
  char dir[600];
  cl_conn_t *c;
  PGconn *pg; /* the claimer database */
  PGconn *t;  /* the pg sink's target */
  sub_t subs[NSUBS];
  pid_t hookd;
  char hook_url[128], hook_out[700], hook_log[700];
  char mail_cmd[1024], mail_file[700], secret_file[700];
} fx_t;

static int setup(void **state) {
  fx_t *fx = calloc(1, sizeof *fx);
  if (fx == NULL ||
      th_db_create(&th_pg, "chaos", 1, fx->dsn, sizeof fx->dsn) != 0 ||
      th_db_create(&th_pg, "chaos_target", 0, fx->target, sizeof fx->target) !=
          0)
    return -1;
  snprintf(fx->dir, sizeof fx->dir, "%s/chaos", th_pg.dir);
  if (mkdir(fx->dir, 0700) != 0)
    return -1;
  if (cl_conn_new(&fx->c, fx->dsn) != 0 || cl_conn_connect(fx->c) != 0)
    return -1;
  fx->pg = th_connect(fx->dsn);
  fx->t = th_connect(fx->target);
  *state = fx;
  return 0;
}

/* Kills whatever is still running (a failed assertion leaves daemons
 * behind, which would otherwise outlive the test's server). */
static int teardown(void **state) {
  fx_t *fx = *state;
  for (int i = 0; i < NSUBS; i++)
    for (int k = 0; k < SENDERS; k++)
      if (fx->subs[i].pid[k] > 0) {
        kill(-fx->subs[i].pid[k], SIGKILL);
        th_wait_exit(fx->subs[i].pid[k], 10);
      }
  if (fx->hookd > 0) {
    kill(fx->hookd, SIGKILL);
    th_wait_exit(fx->hookd, 10);
  }
  cl_conn_free(&fx->c);
  PQfinish(fx->pg);
  PQfinish(fx->t);
  free(fx);
  return 0;
}

/* n results, made in batches: enqueue, claim and complete BATCH at a
 * time through the library. */
static void make_results(fx_t *fx, int n) {
  cl_item_t *items = calloc(BATCH, sizeof *items);
  char(*ids)[32] = calloc(BATCH, sizeof *ids);
  assert_non_null(items);
  assert_non_null(ids);
  for (int base = 0; base < n; base += BATCH) {
    int m = n - base < BATCH ? n - base : BATCH;
    for (int i = 0; i < m; i++) {
      snprintf(ids[i], sizeof ids[i], "chaos-%d", base + i);
      items[i] = (cl_item_t){.item_id = ids[i],
                             .queue = "chaos",
                             .payload = "{\"to\":\"someone\"}"};
    }
    assert_int_equal(cl_enqueue(fx->c, items, (size_t)m, NULL), m);
    cl_lease_t *l = NULL;
    size_t got = 0;
    assert_int_equal(cl_claim(fx->c, "chaos", "chaos-setup", m, 60, &l, &got),
                     0);
    assert_int_equal((int)got, m);
    for (size_t i = 0; i < got; i++)
      assert_int_equal(
          cl_complete(fx->c, l[i].item_id, l[i].token, "{\"ok\":1}", NULL), 0);
    cl_leases_free(l, got);
  }
  free(items);
  free(ids);
}

/* Starts hookd checking signatures with SECRET; its URL in fx->hook_url. */
static void hookd_up(fx_t *fx) {
  char port_file[700];
  snprintf(port_file, sizeof port_file, "%s/hookd.port", fx->dir);
  snprintf(fx->hook_out, sizeof fx->hook_out, "%s/hookd.out", fx->dir);
  snprintf(fx->hook_log, sizeof fx->hook_log, "%s/hookd.log", fx->dir);
  const char *argv[] = {
      getenv("HOOKD_BIN"), "--out",    fx->hook_out, "--port-file",
      port_file,           "--secret", SECRET,       NULL};
  assert_non_null(argv[0]);
  fx->hookd = th_spawn(argv, fx->hook_log);
  double end = th_now() + 10;
  char *port = NULL;
  while ((port = th_read_file(port_file))[0] == '\0' && th_now() < end) {
    free(port);
    usleep(20 * 1000);
  }
  if (atoi(port) <= 0)
    fail_msg("hookd did not write its port within 10 s");
  snprintf(fx->hook_url, sizeof fx->hook_url, "http://127.0.0.1:%d/hook",
           atoi(port));
  free(port);
}

/* The three subscribers and their sinks' options. */
static void subscribers(fx_t *fx) {
  snprintf(fx->mail_file, sizeof fx->mail_file, "%s/mail.effects", fx->dir);
  snprintf(fx->mail_cmd, sizeof fx->mail_cmd,
           "echo \"$CLAIMER_IDEMPOTENCY_KEY\" >> '%s'", fx->mail_file);
  snprintf(fx->secret_file, sizeof fx->secret_file, "%s/whsec", fx->dir);
  FILE *f = fopen(fx->secret_file, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", SECRET);
  fclose(f);
  assert_int_equal(chmod(fx->secret_file, 0600), 0);

  char *out = NULL;
  const char *setup_argv[] = {th_claimer_bin(), "sink-setup", "--target",
                              fx->target, NULL};
  int rc = th_run(setup_argv, NULL, &out);
  if (rc != 0)
    fail_msg("claimer sink-setup exited %d: %s", rc, out);
  free(out);
  th_exec(fx->t, "CREATE TABLE audit (n bigserial PRIMARY KEY, "
                 "item_id text NOT NULL, key text NOT NULL, "
                 "attempt int NOT NULL, at timestamptz DEFAULT now())");

  sub_t *s = fx->subs;
  s[0] = (sub_t){.name = "mail", .sink = {"--exec", fx->mail_cmd, NULL}};
  s[1] = (sub_t){.name = "hook",
                 .sink = {"--webhook", fx->hook_url, "--secret-file",
                          fx->secret_file, NULL}};
  /* No unique index on audit: a second effect would be a second row. */
  s[2] = (sub_t){.name = "audit",
                 .sink = {"--pg-target", fx->target, "--pg-sql",
                          "INSERT INTO audit (item_id, key, attempt) "
                          "VALUES ($1, $5, $7)",
                          NULL}};
  cl_subscriber_opts_t o = {.from = "beginning"};
  for (int i = 0; i < NSUBS; i++)
    assert_int_equal(cl_subscriber_add(fx->c, s[i].name, &o, NULL), 1);
}

static void sender_log(const fx_t *fx, const sub_t *s, int k, int n, char *buf,
                       size_t len) {
  snprintf(buf, len, "%s/%s-%d-%d.log", fx->dir, s->name, k, n);
}

/* Occurrences of needle in every log of s's daemons, killed or not. */
static long logs_count(const fx_t *fx, const sub_t *s, const char *needle) {
  long total = 0;
  for (int k = 0; k < SENDERS; k++)
    for (int n = 0; n <= s->started[k]; n++) {
      char path[800];
      sender_log(fx, s, k, n, path, sizeof path);
      char *log = th_read_file(path);
      total += th_count(log, needle);
      free(log);
    }
  return total;
}

/* Starts daemon k of subscriber s (a new log per start). */
static void sender_start(fx_t *fx, sub_t *s, int k) {
  const char *argv[32] = {th_claimer_bin(), "send", "--subscriber", s->name,
                          "--lease",        "3",    "--poll",       "0.2",
                          "--timeout",      "5",    "--log-level",  "info",
                          "--dsn",          fx->dsn};
  int n = 14;
  for (int i = 0; s->sink[i] != NULL; i++)
    argv[n++] = s->sink[i];
  argv[n] = NULL;
  char log[800];
  sender_log(fx, s, k, ++s->started[k], log, sizeof log);
  s->pid[k] = th_spawn(argv, log);
}

/* Fails the test, with its log, if a daemon exited on its own. */
static void check_alive(fx_t *fx) {
  for (int i = 0; i < NSUBS; i++)
    for (int k = 0; k < SENDERS; k++) {
      sub_t *s = &fx->subs[i];
      int st = 0;
      if (s->pid[k] <= 0 || waitpid(s->pid[k], &st, WNOHANG) != s->pid[k])
        continue;
      s->pid[k] = 0;
      char log[800];
      sender_log(fx, s, k, s->started[k], log, sizeof log);
      char *text = th_read_file(log);
      print_message("%s", text);
      free(text);
      fail_msg("sender %d of %s exited by itself (status %d, log above)", k,
               s->name, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
}

static long sent_of(fx_t *fx, const char *sub) {
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.deliveries WHERE subscriber = '%s' "
           "AND state = 'sent'",
           sub);
  return th_long(fx->pg, sql);
}

/* Loads text (COPY's text format, one row a line) with copy_sql. */
static void copy_in(PGconn *pg, const char *copy_sql, const char *text) {
  PGresult *r = PQexec(pg, copy_sql);
  if (PQresultStatus(r) != PGRES_COPY_IN)
    fail_msg("%s: %s", copy_sql, PQresultErrorMessage(r));
  PQclear(r);
  assert_int_equal(PQputCopyData(pg, text, (int)strlen(text)), 1);
  assert_int_equal(PQputCopyEnd(pg, NULL), 1);
  r = PQgetResult(pg);
  if (PQresultStatus(r) != PGRES_COMMAND_OK)
    fail_msg("%s: %s", copy_sql, PQresultErrorMessage(r));
  PQclear(r);
  while ((r = PQgetResult(pg)) != NULL)
    PQclear(r);
}

/* A growing string. */
typedef struct buf {
  char *s;
  size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 65536;
    while (cap < b->len + n + 1)
      cap *= 2;
    b->s = realloc(b->s, cap);
    assert_non_null(b->s);
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

/* hookd's --out lines ("ID BODY") as "ID<tab>ITEM_ID" rows, the item id
 * read from the body's data. */
static char *hook_rows(const char *lines) {
  buf_t b = {0};
  buf_add(&b, "", 0);
  for (const char *p = lines; *p;) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    const char *sp = memchr(p, ' ', len);
    const char *it = strstr(p, "\"item_id\":\"");
    const char *q = it ? strchr(it + 11, '"') : NULL;
    if (sp == NULL || it == NULL || q == NULL || q > p + len)
      fail_msg("hookd recorded a line without webhook-id or item_id: %.*s",
               (int)(len < 200 ? len : 200), p);
    buf_add(&b, p, (size_t)(sp - p));
    buf_add(&b, "\t", 1);
    buf_add(&b, it + 11, (size_t)(q - (it + 11)));
    buf_add(&b, "\n", 1);
    p += len + (eol != NULL);
  }
  return b.s;
}

/* The target's audit rows as "ITEM_ID<tab>KEY<tab>ATTEMPT" rows. */
static char *audit_rows(PGconn *t) {
  PGresult *r = PQexec(t, "SELECT item_id, key, attempt FROM audit");
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  buf_t b = {0};
  buf_add(&b, "", 0);
  for (int i = 0; i < PQntuples(r); i++)
    for (int j = 0; j < 3; j++) {
      const char *v = PQgetvalue(r, i, j);
      buf_add(&b, v, strlen(v));
      buf_add(&b, j < 2 ? "\t" : "\n", 1);
    }
  PQclear(r);
  return b.s;
}

/* In table (its keys in column key, rows of subscriber sub): keys not
 * owed to sub, and results of which no key arrived. */
static void keys_match(fx_t *fx, const char *table, const char *sub) {
  char sql[600];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM %s t WHERE NOT EXISTS (SELECT 1 FROM "
           "claimer.results r WHERE claimer.idempotency_key('%s', r.item_id) "
           "= t.key)",
           table, sub);
  long foreign = th_long(fx->pg, sql);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.results r WHERE NOT EXISTS (SELECT "
           "1 FROM %s t WHERE t.key = claimer.idempotency_key('%s', "
           "r.item_id))",
           table, sub);
  long missing = th_long(fx->pg, sql);
  if (foreign != 0 || missing != 0)
    fail_msg("%s: %ld effects carry a key that is not "
             "claimer.idempotency_key('%s', item_id) of any result; %ld "
             "results never reached the sink",
             sub, foreign, sub, missing);
}

/* The database's side of subscriber sub: n rows, all 'sent', each with
 * its documented key. */
static void deliveries_exact(fx_t *fx, const char *sub, long n) {
  char sql[400];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.deliveries WHERE subscriber = '%s' "
           "AND state <> 'sent'",
           sub);
  long other = th_long(fx->pg, sql);
  long sent = sent_of(fx, sub);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM claimer.deliveries WHERE subscriber = '%s' "
           "AND idempotency_key <> claimer.idempotency_key(subscriber, "
           "item_id)",
           sub);
  long badkey = th_long(fx->pg, sql);
  if (sent != n || other != 0 || badkey != 0)
    fail_msg("%s: %ld deliveries 'sent' (want exactly %ld), %ld in another "
             "state (want 0), %ld with a key other than "
             "claimer.idempotency_key(subscriber, item_id)",
             sub, sent, n, other, badkey);
}

static long attempts_over_one(fx_t *fx, const char *sub) {
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT coalesce(sum(attempts - 1), 0) FROM claimer.deliveries "
           "WHERE subscriber = '%s'",
           sub);
  return th_long(fx->pg, sql);
}

static double rand_unit(void) {
  return (double)rand() / ((double)RAND_MAX + 1);
}

static void test_chaos(void **state) {
  fx_t *fx = *state;
  const char *env = getenv("CLAIMER_CHAOS_RESULTS");
  long n = env && *env ? atol(env) : DEFAULT_RESULTS;
  assert_true(n >= 1 && n <= 1000000);
  const char *dl_env = getenv("CLAIMER_CHAOS_DEADLINE");
  double limit = dl_env && *dl_env ? atof(dl_env) : DEFAULT_DEADLINE;
  assert_true(limit > 0);
  const char *seed_env = getenv("CLAIMER_CHAOS_SEED");
  unsigned seed =
      seed_env && *seed_env ? (unsigned)atol(seed_env) : (unsigned)time(NULL);
  srand(seed);
  print_message("chaos: %ld results (CLAIMER_CHAOS_RESULTS%s), 3 subscribers, "
                "%d senders each, deadline %.0f s, seed %u "
                "(CLAIMER_CHAOS_SEED)\n",
                n, env && *env ? "" : " unset: the default", SENDERS, limit,
                seed);

  double t0 = th_now();
  make_results(fx, (int)n);
  hookd_up(fx);
  subscribers(fx);
  double t1 = th_now();
  print_message("setup: %ld results and the subscribers in %.1f s\n", n,
                t1 - t0);

  for (int i = 0; i < NSUBS; i++)
    for (int k = 0; k < SENDERS; k++)
      sender_start(fx, &fx->subs[i], k);

  /* The killer: every 0.5-1 s one daemon, chosen at random, is killed
   * with its process group and started again at once. */
  double deadline = t1 + limit, next_kill = th_now() + 0.5 + 0.5 * rand_unit();
  double next_poll = 0, next_progress = th_now() + 10;
  long sent[NSUBS] = {0};
  int done = 0, kills = 0;
  while (!done && th_now() < deadline) {
    check_alive(fx);
    if (th_now() >= next_kill) {
      sub_t *s = &fx->subs[rand() % NSUBS];
      int k = rand() % SENDERS;
      pid_t pid = s->pid[k];
      assert_int_equal(kill(-pid, SIGKILL), 0);
      int rc = th_wait_exit(pid, 10);
      if (rc != 128 + SIGKILL)
        fail_msg("sender %d of %s: status %d after SIGKILL (want %d)", k,
                 s->name, rc, 128 + SIGKILL);
      s->pid[k] = 0;
      s->killed++;
      kills++;
      sender_start(fx, s, k);
      next_kill = th_now() + 0.5 + 0.5 * rand_unit();
    }
    if (th_now() >= next_poll) {
      done = 1;
      for (int i = 0; i < NSUBS; i++) {
        sent[i] = sent_of(fx, fx->subs[i].name);
        done &= sent[i] >= n;
      }
      next_poll = th_now() + 0.25;
      if (th_now() >= next_progress) {
        print_message("  %4.0f s: sent mail %ld, hook %ld, audit %ld; %d "
                      "killed\n",
                      th_now() - t1, sent[0], sent[1], sent[2], kills);
        next_progress += 10;
      }
    }
    usleep(20 * 1000);
  }
  double t2 = th_now();
  print_message("delivered: mail %ld, hook %ld, audit %ld of %ld in %.1f s, "
                "%d senders killed\n",
                sent[0], sent[1], sent[2], n, t2 - t1, kills);
  if (!done)
    fail_msg("not every subscriber had %ld deliveries sent within %.0f s "
             "(mail %ld, hook %ld, audit %ld)",
             n, limit, sent[0], sent[1], sent[2]);

  /* Stop the daemons: SIGTERM drains (every sink still running ends), so
   * the files are whole afterwards.  A daemon takes SIGTERM as a loop
   * event only once its loop runs: each is first seen connected. */
  for (int i = 0; i < NSUBS; i++)
    for (int k = 0; k < SENDERS; k++) {
      sub_t *s = &fx->subs[i];
      char log[800];
      sender_log(fx, s, k, s->started[k], log, sizeof log);
      double end = th_now() + 20;
      char *text = NULL;
      while (strstr(text = th_read_file(log), "db_connected") == NULL &&
             th_now() < end) {
        free(text);
        usleep(20 * 1000);
      }
      if (strstr(text, "db_connected") == NULL)
        fail_msg("sender %d of %s not connected after 20 s: %s", k, s->name,
                 text);
      free(text);
      kill(s->pid[k], SIGTERM);
    }
  for (int i = 0; i < NSUBS; i++)
    for (int k = 0; k < SENDERS; k++) {
      sub_t *s = &fx->subs[i];
      int rc = th_wait_exit(s->pid[k], 40);
      if (rc != 0) {
        char log[800];
        sender_log(fx, s, k, s->started[k], log, sizeof log);
        char *text = th_read_file(log);
        print_message("%s", text);
        free(text);
        fail_msg("sender %d of %s exited %d after SIGTERM (want 0)", k, s->name,
                 rc);
      }
      s->pid[k] = 0;
    }
  kill(fx->hookd, SIGTERM);
  assert_int_equal(th_wait_exit(fx->hookd, 10), 0);
  fx->hookd = 0;
  char *hlog = th_read_file(fx->hook_log);
  const char *sum = strstr(hlog, "hookd: ");
  unsigned long h_req = 0, h_rec = 0, h_bad = 0, h_ids = 0, h_rep = 0;
  if (sum == NULL ||
      sscanf(sum,
             "hookd: %lu requests, %lu recorded, %lu bad signatures, %lu "
             "distinct ids, %lu repeated",
             &h_req, &h_rec, &h_bad, &h_ids, &h_rep) != 5)
    fail_msg("hookd printed no summary: %s", hlog);
  free(hlog);

  /* The database: each subscriber recorded each result exactly once. */
  for (int i = 0; i < NSUBS; i++)
    deliveries_exact(fx, fx->subs[i].name, n);

  /* mail: every key at least once; repeats counted. */
  th_exec(fx->pg, "CREATE TEMP TABLE mail_fx (key text)");
  char *mail = th_read_file(fx->mail_file);
  copy_in(fx->pg, "COPY mail_fx (key) FROM STDIN", mail);
  free(mail);
  long m_lines = th_long(fx->pg, "SELECT count(*) FROM mail_fx");
  long m_distinct = th_long(fx->pg, "SELECT count(DISTINCT key) FROM mail_fx");
  keys_match(fx, "mail_fx", "mail");
  if (m_distinct != n)
    fail_msg("mail: %ld distinct keys in the exec file (want %ld)", m_distinct,
             n);

  /* hook: every signature good, every key at least once, and each the key
   * of the item its body names. */
  th_exec(fx->pg, "CREATE TEMP TABLE hook_fx (key text, item_id text)");
  char *hout = th_read_file(fx->hook_out);
  char *hrows = hook_rows(hout);
  free(hout);
  copy_in(fx->pg, "COPY hook_fx (key, item_id) FROM STDIN", hrows);
  free(hrows);
  long hk_lines = th_long(fx->pg, "SELECT count(*) FROM hook_fx");
  long hk_wrong = th_long(fx->pg, "SELECT count(*) FROM hook_fx WHERE key <> "
                                  "claimer.idempotency_key('hook', item_id)");
  keys_match(fx, "hook_fx", "hook");
  if (h_bad != 0 || h_ids != (unsigned long)n || hk_wrong != 0 ||
      hk_lines != (long)h_rec)
    fail_msg("hook: %lu bad signatures (want 0), %lu distinct ids (want "
             "%ld), %ld bodies whose webhook-id is not their item's key "
             "(want 0), %ld lines for %lu recorded",
             h_bad, h_ids, n, hk_wrong, hk_lines, h_rec);

  /* audit: exactly one row per key, and the inbox agrees. */
  th_exec(fx->pg, "CREATE TEMP TABLE audit_fx (item_id text, key text, "
                  "attempt int)");
  char *arows = audit_rows(fx->t);
  copy_in(fx->pg, "COPY audit_fx (item_id, key, attempt) FROM STDIN", arows);
  free(arows);
  long a_rows = th_long(fx->pg, "SELECT count(*) FROM audit_fx");
  long a_distinct = th_long(fx->pg, "SELECT count(DISTINCT key) FROM audit_fx");
  long a_wrong = th_long(fx->pg, "SELECT count(*) FROM audit_fx WHERE key <> "
                                 "claimer.idempotency_key('audit', item_id)");
  long inbox = th_long(fx->t, "SELECT count(*) FROM claimer_sink.inbox WHERE "
                              "subscriber = 'audit'");
  keys_match(fx, "audit_fx", "audit");
  /* A delivery claimed again after its row had committed (its sender was
   * killed between the target's COMMIT and the sent mark): each later
   * attempt found the key in the inbox, or was itself cut short. */
  long a_after = th_long(fx->pg, "SELECT count(*) FROM audit_fx a JOIN "
                                 "claimer.deliveries d ON d.subscriber = "
                                 "'audit' AND d.item_id = a.item_id WHERE "
                                 "d.attempts > a.attempt");
  long a_later = th_long(fx->pg, "SELECT coalesce(sum(d.attempts - "
                                 "a.attempt), 0) FROM audit_fx a JOIN "
                                 "claimer.deliveries d ON d.subscriber = "
                                 "'audit' AND d.item_id = a.item_id");
  if (a_rows != n || a_distinct != n || a_wrong != 0 || inbox != n)
    fail_msg("audit: %ld rows (want %ld), %ld distinct keys (want %ld), %ld "
             "with a key not their item's (want 0), %ld inbox rows (want "
             "%ld)",
             a_rows, n, a_distinct, n, a_wrong, inbox, n);

  print_message("mail: %ld delivered, %ld distinct keys, %ld raw re-sends, "
                "%d senders killed (%ld attempts past the first)\n",
                n, m_distinct, m_lines - m_distinct, fx->subs[0].killed,
                attempts_over_one(fx, "mail"));
  print_message("hook: %ld delivered, %lu distinct ids, %lu raw re-sends, "
                "%lu bad signatures, %lu requests, %d senders killed (%ld "
                "attempts past the first)\n",
                n, h_ids, h_rep, h_bad, h_req, fx->subs[1].killed,
                attempts_over_one(fx, "hook"));
  /* Each repeat the inbox caught is logged by the daemon that met it. */
  long a_skipped = logs_count(fx, &fx->subs[2], "event=repeat_skipped");
  print_message("audit: %ld delivered, %ld rows, %ld inbox rows, 0 "
                "repeated effects; %ld repeats skipped by the inbox (the "
                "senders' logs), of %ld deliveries claimed again after their "
                "row committed (%ld later attempts; the rest were cut "
                "short), %d senders killed (%ld attempts past the first)\n",
                n, a_rows, inbox, a_skipped, a_after, a_later,
                fx->subs[2].killed, attempts_over_one(fx, "audit"));
  assert_true(a_skipped <= a_later);
  print_message("total: %.1f s (setup %.1f s, delivery %.1f s, checks "
                "%.1f s)\n",
                th_now() - t0, t1 - t0, t2 - t1, th_now() - t2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_chaos, setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("send_chaos", tests, th_group_setup,
                                     th_group_teardown);
}
