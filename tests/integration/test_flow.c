/*
 * test_flow.c: a subscriber's flow control (schema/007_flow.sql), shared
 * by all of its senders through the database, with real `claimer send`
 * processes against a real PostgreSQL: a rate limit holds across two
 * senders; a concurrency limit holds across two senders; fifo ordering
 * delivers by position under kill -9 and never hands out a position that
 * an open transaction could still precede; pause stops new sends at once
 * and resume loses nothing; deliveries waiting for their rate slot are
 * given back at a stop, not left in doubt; under the hold policy a
 * sender killed mid-send leaves its deliveries held, alerted and settled
 * by `claimer deliveries resolve`; bad policy input exits 2.
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

typedef struct fx {
  char dsn[1024];
  char dir[600];
  char effects[700];
  cl_conn_t *c;
  PGconn *pg;
} fx_t;

static int setup(void **state) {
  static int n;
  fx_t *fx = calloc(1, sizeof *fx);
  char db[32];
  snprintf(db, sizeof db, "flow_%d", ++n);
  if (fx == NULL || th_db_create(&th_pg, db, 1, fx->dsn, sizeof fx->dsn) != 0)
    return -1;
  snprintf(fx->dir, sizeof fx->dir, "%s/%s", th_pg.dir, db);
  snprintf(fx->effects, sizeof fx->effects, "%s/effects", fx->dir);
  if (mkdir(fx->dir, 0700) != 0)
    return -1;
  if (cl_conn_new(&fx->c, fx->dsn) != 0 || cl_conn_connect(fx->c) != 0)
    return -1;
  fx->pg = th_connect(fx->dsn);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fx_t *fx = *state;
  cl_conn_free(&fx->c);
  PQfinish(fx->pg);
  free(fx);
  return 0;
}

/* n results of queue q, items PREFIX-0 .. PREFIX-(n-1) completed in that
 * order (so their positions follow it). */
static void results(fx_t *fx, const char *prefix, int n) {
  char(*ids)[48] = calloc((size_t)n, sizeof *ids);
  cl_item_t *items = calloc((size_t)n, sizeof *items);
  assert_non_null(ids);
  assert_non_null(items);
  for (int i = 0; i < n; i++) {
    snprintf(ids[i], sizeof ids[i], "%s-%d", prefix, i);
    items[i].item_id = ids[i];
    items[i].queue = "q";
  }
  assert_int_equal(cl_enqueue(fx->c, items, (size_t)n, NULL), n);
  cl_lease_t *l = NULL;
  size_t got = 0;
  assert_int_equal(cl_claim(fx->c, "q", "w", n, 60, &l, &got), 0);
  assert_int_equal((int)got, n);
  for (int i = 0; i < n; i++)
    for (size_t j = 0; j < got; j++)
      if (strcmp(l[j].item_id, ids[i]) == 0)
        assert_int_equal(
            cl_complete(fx->c, l[j].item_id, l[j].token, "{}", NULL), 0);
  cl_leases_free(l, got);
  free(items);
  free(ids);
}

/* Runs `claimer ARGS...` (NULL-ended) with --dsn; returns the exit
 * status, output in *out (may be NULL). */
static int claimer(fx_t *fx, char **out, ...) {
  const char *argv[40];
  int n = 0;
  argv[n++] = th_claimer_bin();
  va_list ap;
  va_start(ap, out);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 36;)
    argv[n++] = a;
  va_end(ap);
  argv[n++] = "--dsn";
  argv[n++] = fx->dsn;
  argv[n] = NULL;
  char *o = NULL;
  int rc = th_run(argv, NULL, &o);
  if (out)
    *out = o;
  else
    free(o);
  return rc;
}

/* Starts a `claimer send --subscriber sub` daemon with the exec sink cmd,
 * its log in DIR/sender-TAG.log. */
static pid_t sender(fx_t *fx, const char *cmd, const char *tag,
                    const char *concurrency) {
  char log[700];
  snprintf(log, sizeof log, "%s/sender-%s.log", fx->dir, tag);
  const char *argv[] = {
      th_claimer_bin(), "send",      "--subscriber", "sub",   "--exec", cmd,
      "--concurrency",  concurrency, "--lease",      "2",     "--poll", "0.2",
      "--log-level",    "warning",   "--dsn",        fx->dsn, NULL};
  return th_spawn(argv, log);
}

static long sent_count(fx_t *fx) {
  return th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                         "WHERE state = 'sent'");
}

/* Waits up to timeout_s for n deliveries sent. */
static void wait_sent(fx_t *fx, long n, double timeout_s) {
  double end = th_now() + timeout_s;
  while (sent_count(fx) < n && th_now() < end)
    usleep(50 * 1000);
  assert_int_equal(sent_count(fx), n);
}

/* Occurrences of needle in the senders' logs. */
static int logs_count(fx_t *fx, const char *needle) {
  char cmd[1400], path[700];
  snprintf(path, sizeof path, "%s/all.log", fx->dir);
  snprintf(cmd, sizeof cmd, "cat '%s'/sender-*.log > '%s'", fx->dir, path);
  assert_int_equal(system(cmd), 0);
  char *all = th_read_file(path);
  int n = th_count(all, needle);
  free(all);
  return n;
}

static void stop(pid_t pid) {
  /* A sender restarted a moment ago may not have its handler yet: a
   * SIGTERM then would kill it (exit 143) rather than drain it. */
  th_wait_sigterm_caught(pid, 10);
  kill(-pid, SIGTERM);
  assert_int_equal(th_wait_exit(pid, 20), 0);
}

/* The lines of the effects file: "SECONDS WORD" each, in the order the
 * sink wrote them.  Returns how many (at most max). */
static int read_effects(fx_t *fx, double *t, char (*word)[64], int max) {
  char *eff = th_read_file(fx->effects);
  int n = 0;
  for (char *line = eff, *nl; *line && n < max; line = nl + 1) {
    nl = strchr(line, '\n');
    if (nl == NULL)
      break;
    *nl = '\0';
    if (sscanf(line, "%lf %63s", &t[n], word[n]) == 2)
      n++;
  }
  free(eff);
  return n;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* A rate of 50/s set once in the database holds across two senders of
 * 16 slots each (which alone would run hundreds per second). */
static void test_rate_across_two_senders(void **state) {
  fx_t *fx = *state;
  enum { N = 300 };
  results(fx, "r", N);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", "--rate", "50", NULL),
                   0);
  char cmd[2000];
  snprintf(cmd, sizeof cmd,
           "echo \"$(date +%%s.%%N) $CLAIMER_IDEMPOTENCY_KEY\" >> '%s'",
           fx->effects);
  pid_t a = sender(fx, cmd, "a", "16"), b = sender(fx, cmd, "b", "16");
  wait_sent(fx, N, 60);
  stop(a);
  stop(b);
  /* No lease was lost on the way (a heartbeat's answer once condemned
   * the deliveries claimed while it was in flight): each sent once. */
  assert_int_equal(logs_count(fx, "lease_lost"), 0);
  assert_int_equal(th_long(fx->pg, "SELECT max(attempts) FROM "
                                   "claimer.deliveries"),
                   1);
  static double t[N + 10];
  static char key[N + 10][64];
  int n = read_effects(fx, t, key, N + 10);
  assert_int_equal(n, N);
  double lo = t[0], hi = t[0];
  for (int i = 1; i < n; i++) {
    lo = t[i] < lo ? t[i] : lo;
    hi = t[i] > hi ? t[i] : hi;
  }
  double rate = (n - 1) / (hi - lo);
  /* The widest gap between two sends in time order, for the record. */
  double *sorted = calloc((size_t)n, sizeof *sorted);
  assert_non_null(sorted);
  memcpy(sorted, t, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
  double widest = 0;
  int at = 0;
  for (int i = 1; i < n; i++)
    if (sorted[i] - sorted[i - 1] > widest) {
      widest = sorted[i] - sorted[i - 1];
      at = i;
    }
  for (int i = 0; i + 50 < n; i += 50)
    print_message("  sends %d..%d: %.1f/s\n", i, i + 50,
                  50 / (sorted[i + 50] - sorted[i]));
  free(sorted);
  print_message("widest gap between sends: %.3f s, before send %d\n", widest,
                at);
  /* Both senders took part. */
  long senders = th_long(fx->pg, "SELECT count(DISTINCT sender) FROM "
                                 "claimer.deliveries");
  print_message("rate limit 50/s, 2 senders (%ld took part): %d deliveries "
                "in %.2f s = %.1f/s\n",
                senders, n, hi - lo, rate);
  assert_int_equal(senders, 2);
  assert_true(rate >= 45 && rate <= 55);
}

/* A concurrency of 3 in the database holds across two senders of 8 slots
 * each: never more than 3 sinks at once, and 3 are reached. */
static void test_concurrency_across_two_senders(void **state) {
  fx_t *fx = *state;
  enum { N = 30 };
  results(fx, "c", N);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", "--concurrency", "3", NULL),
                   0);
  char cmd[2000];
  snprintf(cmd, sizeof cmd,
           "echo \"$(date +%%s.%%N) +\" >> '%s'; sleep 0.3; "
           "echo \"$(date +%%s.%%N) -\" >> '%s'",
           fx->effects, fx->effects);
  pid_t a = sender(fx, cmd, "a", "8"), b = sender(fx, cmd, "b", "8");
  wait_sent(fx, N, 60);
  stop(a);
  stop(b);
  static double t[2 * N + 10];
  static char ev[2 * N + 10][64];
  int n = read_effects(fx, t, ev, 2 * N + 10);
  assert_int_equal(n, 2 * N);
  /* The lines are in the order written: count the sinks running. */
  int running = 0, most = 0;
  for (int i = 0; i < n; i++) {
    running += strcmp(ev[i], "+") == 0 ? 1 : -1;
    most = running > most ? running : most;
  }
  print_message("concurrency 3, 2 senders x 8 slots: at most %d at once\n",
                most);
  assert_int_equal(most, 3);
}

/* The exec sink for fifo: the item id from the delivery's JSON, one line
 * per call, then a pause so that a kill can land mid-send. */
static void fifo_cmd(fx_t *fx, char *cmd, size_t n) {
  snprintf(cmd, n,
           "id=$(sed 's/.*\"item_id\":\"\\([^\"]*\\)\".*/\\1/'); "
           "echo \"$(date +%%s.%%N) $id\" >> '%s'; sleep 0.05",
           fx->effects);
}

/* fifo under kill -9: two senders, one of them killed again and again;
 * every item is delivered, and the first delivery of each comes in
 * position order (a resend after a kill repeats only the one before). */
static void test_fifo_under_kill9(void **state) {
  fx_t *fx = *state;
  enum { N = 40 };
  results(fx, "f", N);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", "--ordering", "fifo", NULL),
                   0);
  char cmd[2000];
  fifo_cmd(fx, cmd, sizeof cmd);
  pid_t a = sender(fx, cmd, "a", "8"), b = sender(fx, cmd, "b", "8");
  int kills = 0;
  double end = th_now() + 120;
  while (sent_count(fx) < N && th_now() < end) {
    usleep(400 * 1000);
    if (sent_count(fx) >= N)
      break;
    kill(-a, SIGKILL); /* the sender and its command */
    th_wait_exit(a, 10);
    kills++;
    char tag[16];
    snprintf(tag, sizeof tag, "a%d", kills);
    a = sender(fx, cmd, tag, "8");
  }
  assert_int_equal(sent_count(fx), N);
  stop(a);
  stop(b);
  static double t[4 * N];
  static char id[4 * N][64];
  int n = read_effects(fx, t, id, 4 * N);
  int next = 0, repeats = 0;
  for (int i = 0; i < n; i++) {
    char want[48];
    snprintf(want, sizeof want, "f-%d", next);
    if (strcmp(id[i], want) == 0) {
      next++;
      continue;
    }
    /* Not the next one: it must be a resend of the one before. */
    snprintf(want, sizeof want, "f-%d", next - 1);
    if (strcmp(id[i], want) != 0)
      fail_msg("fifo broken at line %d: %s after f-%d", i + 1, id[i], next - 1);
    repeats++;
  }
  print_message("fifo: %d items in position order, %d senders killed, %d "
                "raw re-sends of the item in flight\n",
                next, kills, repeats);
  assert_int_equal(next, N);
  assert_true(kills >= 1);
}

/* fifo with --once: one run delivers all that is due (a claim that must
 * wait for a tick says "come back" rather than "nothing"). */
static void test_fifo_once(void **state) {
  fx_t *fx = *state;
  results(fx, "o", 5);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", "--ordering", "fifo", NULL),
                   0);
  char cmd[2000], *out = NULL;
  fifo_cmd(fx, cmd, sizeof cmd);
  assert_int_equal(claimer(fx, &out, "send", "--subscriber", "sub", "--exec",
                           cmd, "--once", NULL),
                   0);
  print_message("%s", out);
  assert_non_null(strstr(out, "sent 5,"));
  free(out);
}

/* fifo never hands out a position an open transaction could precede:
 * with an earlier result's transaction open, the later (committed) ones
 * wait under fifo, while an unordered subscriber takes them. */
static void test_fifo_waits_for_open_transaction(void **state) {
  fx_t *fx = *state;
  cl_subscriber_opts_t fifo = {.from = "beginning", .ordering = "fifo"};
  cl_subscriber_opts_t any = {.from = "beginning"};
  assert_int_equal(cl_subscriber_add(fx->c, "sub", &fifo, NULL), 1);
  assert_int_equal(cl_subscriber_add(fx->c, "any", &any, NULL), 1);
  cl_item_t it = {.item_id = "early", .queue = "q"};
  assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
  cl_lease_t *l = NULL;
  size_t got = 0;
  assert_int_equal(cl_claim(fx->c, "q", "w", 1, 60, &l, &got), 0);
  assert_int_equal((int)got, 1);
  cl_leases_free(l, got);
  /* "early" takes its position in a transaction left open. */
  PGconn *held = th_connect(fx->dsn);
  th_exec(held, "BEGIN");
  th_exec(held, "WITH del AS (DELETE FROM claimer.claims WHERE item_id = "
                "'early' RETURNING item_id, queue, token, worker_id, "
                "attempt), res AS (INSERT INTO claimer.results (item_id, "
                "queue, token, worker_id, attempt) SELECT item_id, queue, "
                "token, worker_id, attempt FROM del RETURNING item_id) "
                "UPDATE claimer.items SET state = 'done' WHERE item_id IN "
                "(SELECT item_id FROM res)");
  results(fx, "late", 2); /* late-0, late-1: committed, later positions */
  cl_delivery_t *d = NULL;
  int n = 0;
  for (int round = 0; round < 3; round++) { /* ticks come and go */
    assert_true((n = cl_deliver_claim(fx->c, "sub", "s1", 10, 30, &d)) >= 0);
    assert_int_equal(n, 0);
  }
  int any_n = 0;
  for (int round = 0; round < 3 && any_n == 0; round++) {
    assert_true((any_n = cl_deliver_claim(fx->c, "any", "s1", 10, 30, &d)) >=
                0);
    cl_deliveries_free(d, (size_t)any_n);
  }
  print_message("early result uncommitted: fifo got 0, unordered got %d\n",
                any_n);
  assert_int_equal(any_n, 2);
  th_exec(held, "COMMIT");
  PQfinish(held);
  /* Now one at a time, early first. */
  const char *order[] = {"early", "late-0", "late-1"};
  for (int k = 0; k < 3; k++) {
    n = 0;
    for (int round = 0; round < 4 && n == 0; round++)
      assert_true((n = cl_deliver_claim(fx->c, "sub", "s1", 10, 30, &d)) >= 0);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].item_id, order[k]);
    /* The next waits while this one is out. */
    cl_delivery_t *none = NULL;
    assert_int_equal(cl_deliver_claim(fx->c, "sub", "s1", 10, 30, &none), 0);
    int already = -1;
    assert_int_equal(
        cl_delivery_sent(fx->c, "sub", d[0].item_id, d[0].token, &already), 0);
    cl_deliveries_free(d, 1);
  }
}

/* Pause: no send starts after the pause has committed (the sends in
 * flight finish); resume: the rest is delivered, nothing lost, none
 * twice. */
static void test_pause_stops_resume_continues(void **state) {
  fx_t *fx = *state;
  enum { N = 60 };
  results(fx, "p", N);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", NULL),
                   0);
  char cmd[2000];
  snprintf(cmd, sizeof cmd,
           "echo \"$(date +%%s.%%N) $CLAIMER_IDEMPOTENCY_KEY\" >> '%s'; "
           "sleep 0.1",
           fx->effects);
  pid_t a = sender(fx, cmd, "a", "2");
  double end = th_now() + 30;
  while (sent_count(fx) < 10 && th_now() < end)
    usleep(20 * 1000);
  struct timespec ts;
  assert_int_equal(claimer(fx, NULL, "subscriber", "pause", "sub", NULL), 0);
  clock_gettime(CLOCK_REALTIME, &ts);
  double paused_at = (double)ts.tv_sec + ts.tv_nsec / 1e9;
  usleep(1500 * 1000); /* several polls */
  long at_pause = sent_count(fx);
  static double t[2 * N];
  static char key[2 * N][64];
  int n = read_effects(fx, t, key, 2 * N);
  double last = 0;
  for (int i = 0; i < n; i++)
    last = t[i] > last ? t[i] : last;
  print_message("paused after %ld sent: last send started %.3f s after the "
                "pause returned\n",
                at_pause, last - paused_at);
  assert_true(at_pause < N);
  assert_true(last - paused_at < 0.2); /* only what was claimed before */
  usleep(1000 * 1000);
  assert_int_equal(sent_count(fx), at_pause); /* still nothing new */
  assert_int_equal(claimer(fx, NULL, "subscriber", "resume", "sub", NULL), 0);
  wait_sent(fx, N, 60);
  stop(a);
  n = read_effects(fx, t, key, 2 * N);
  assert_int_equal(n, N); /* each once */
  assert_int_equal(th_long(fx->pg, "SELECT count(DISTINCT idempotency_key) "
                                   "FROM claimer.deliveries WHERE state = "
                                   "'sent'"),
                   N);
}

/* A sender stopped with deliveries waiting for their rate slot gives them
 * back: due again, the attempt returned, not held in doubt (the
 * subscriber holds what is in doubt). */
static void test_stop_releases_waiting(void **state) {
  fx_t *fx = *state;
  enum { N = 20 };
  results(fx, "w", N);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", "--rate", "4", "--in-doubt", "hold",
                           NULL),
                   0);
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "echo \"$(date +%%s.%%N) x\" >> '%s'", fx->effects);
  pid_t a = sender(fx, cmd, "a", "8");
  double end = th_now() + 20;
  while (sent_count(fx) < 2 && th_now() < end)
    usleep(20 * 1000);
  stop(a);
  long sent = sent_count(fx);
  long held = th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                              "WHERE state IN ('held', 'sending')");
  long back = th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                              "WHERE state = 'retry' AND attempts = 0 "
                              "AND next_at <= now()");
  print_message("stopped after %ld sent: %ld given back, %ld in doubt\n", sent,
                back, held);
  assert_int_equal(held, 0);
  assert_true(back >= 1);
  /* A breaker did not count them. */
  assert_int_equal(th_long(fx->pg, "SELECT failures_in_row FROM "
                                   "claimer.subscribers"),
                   0);
  assert_int_equal(
      claimer(fx, NULL, "subscriber", "set", "sub", "--rate", "0", NULL), 0);
  pid_t b = sender(fx, cmd, "b", "8");
  wait_sent(fx, N, 30);
  stop(b);
  /* Each delivered once: a release is not an attempt. */
  assert_int_equal(th_long(fx->pg, "SELECT max(attempts) FROM "
                                   "claimer.deliveries"),
                   1);
  char *out = NULL;
  assert_int_equal(claimer(fx, &out, "subscriber", "list", "--json", NULL), 0);
  assert_non_null(strstr(out, "\"rate\":0,"));
  assert_non_null(strstr(out, "\"oldest_age_s\":null"));
  free(out);
}

/* The hold policy with a real crash: a sender killed (with its command)
 * between the call and the record leaves the delivery in doubt; the next
 * sender does not send it again but holds it, the reaper raises
 * delivery_in_doubt, and `claimer deliveries resolve` settles it: as sent
 * (no second call) or as retry (sent again, same key). */
static void test_hold_kill9_resolve(void **state) {
  fx_t *fx = *state;
  results(fx, "h", 2);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", "--in-doubt", "hold", NULL),
                   0);
  char cmd[2000];
  snprintf(
      cmd, sizeof cmd,
      "echo \"$(date +%%s.%%N) $CLAIMER_ITEM_ID/$CLAIMER_IDEMPOTENCY_KEY\" "
      ">> '%s'; [ -e '%s/calm' ] || sleep 60",
      fx->effects, fx->dir);
  pid_t a = sender(fx, cmd, "a", "8");
  static double t[16];
  static char what[16][64];
  double end = th_now() + 20;
  while (read_effects(fx, t, what, 16) < 2 && th_now() < end)
    usleep(50 * 1000);
  assert_int_equal(read_effects(fx, t, what, 16), 2);
  kill(-a, SIGKILL); /* the sender and both commands, mid-send */
  assert_int_equal(th_wait_exit(a, 10), 128 + SIGKILL);
  usleep(2300 * 1000); /* the leases (2 s) run out */
  char calm[700];
  snprintf(calm, sizeof calm, "%s/calm", fx->dir);
  FILE *cf = fopen(calm, "w");
  assert_non_null(cf);
  fclose(cf);
  char *out = NULL;
  assert_int_equal(claimer(fx, &out, "send", "--subscriber", "sub", "--exec",
                           cmd, "--once", NULL),
                   0);
  assert_non_null(strstr(out, "sent 0,"));
  free(out);
  assert_int_equal(read_effects(fx, t, what, 16), 2); /* not sent again */
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.deliveries "
                                   "WHERE state = 'held'"),
                   2);
  /* 4: new alerts raised */
  assert_int_equal(claimer(fx, NULL, "reap", "--once", NULL), 4);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'delivery_in_doubt' AND "
                                   "resolved_at IS NULL"),
                   2);
  /* A person looks: h-0 reached the receiver, h-1 did not. */
  assert_int_equal(claimer(fx, &out, "deliveries", "resolve", "--subscriber",
                           "sub", "--id", "h-0", "--as", "sent", NULL),
                   0);
  free(out);
  assert_int_equal(claimer(fx, &out, "deliveries", "resolve", "--subscriber",
                           "sub", "--id", "h-1", "--as", "retry", NULL),
                   0);
  free(out);
  assert_int_equal(claimer(fx, &out, "send", "--subscriber", "sub", "--exec",
                           cmd, "--once", NULL),
                   0);
  assert_non_null(strstr(out, "sent 1,"));
  free(out);
  int n = read_effects(fx, t, what, 16);
  assert_int_equal(n, 3);
  assert_non_null(strstr(what[2], "h-1/"));
  /* h-1's second call carried the key of its first. */
  assert_true(strcmp(what[2], what[0]) == 0 || strcmp(what[2], what[1]) == 0);
  assert_int_equal(sent_count(fx), 2);
  assert_int_equal(claimer(fx, NULL, "reap", "--once", NULL), 0);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.alerts "
                                   "WHERE kind = 'delivery_in_doubt' AND "
                                   "resolved_at IS NULL"),
                   0);
  print_message("hold: 2 in doubt after kill -9, held and not re-sent, 2 "
                "alerts; resolved as sent (1 call) and as retry (2 calls, "
                "same key); alerts resolved\n");
}

/* The lag and the oldest age count only the subscriber's own queues
 * (positions are shared by every queue). */
static void test_lag_own_queues(void **state) {
  fx_t *fx = *state;
  const char *qs[] = {"q"};
  cl_subscriber_opts_t o = {.from = "beginning", .queues = qs, .nqueues = 1};
  assert_int_equal(cl_subscriber_add(fx->c, "sub", &o, NULL), 1);
  results(fx, "mine", 3);
  for (int i = 0; i < 5; i++) { /* results of another queue, later */
    char id[32];
    snprintf(id, sizeof id, "other-%d", i);
    cl_item_t it = {.item_id = id, .queue = "o"};
    assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
    cl_lease_t *l = NULL;
    size_t got = 0;
    assert_int_equal(cl_claim(fx->c, "o", "w", 1, 60, &l, &got), 0);
    assert_int_equal(cl_complete(fx->c, l[0].item_id, l[0].token, "{}", NULL),
                     0);
    cl_leases_free(l, got);
  }
  cl_subscriber_status_t *rows = NULL;
  size_t n = 0;
  assert_int_equal(cl_subscriber_list(fx->c, &rows, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(rows[0].lag, 3);
  assert_int_equal(rows[0].pending, 3);
  assert_true(rows[0].oldest_age_s >= 0);
  cl_subscribers_free(rows, n);
  cl_delivery_t *d = NULL;
  int got = 0;
  for (int round = 0; round < 3 && got == 0; round++)
    assert_true((got = cl_deliver_claim(fx->c, "sub", "s1", 10, 30, &d)) >= 0);
  assert_int_equal(got, 3);
  for (int i = 0; i < got; i++)
    assert_int_equal(
        cl_delivery_sent(fx->c, "sub", d[i].item_id, d[i].token, NULL), 0);
  cl_deliveries_free(d, (size_t)got);
  cl_deliver_claim(fx->c, "sub", "s1", 10, 30, &d); /* the cursor moves */
  cl_deliver_claim(fx->c, "sub", "s1", 10, 30, &d);
  assert_int_equal(cl_subscriber_list(fx->c, &rows, &n), 0);
  print_message("lag %lld, oldest %.1f s after the 3 results of q were "
                "sent (5 of queue o came later)\n",
                rows[0].lag, rows[0].oldest_age_s);
  assert_int_equal(rows[0].lag, 0);
  assert_true(rows[0].oldest_age_s < 0);
  cl_subscribers_free(rows, n);
}

/* The subscriber's own retry schedule: the waits after each failed
 * attempt as given (jittered +-10%), the last repeating; "default" gives
 * the Standard Webhooks schedule back. */
static double fail_wait(fx_t *fx) {
  cl_delivery_t *d = NULL;
  int n = 0;
  for (int round = 0; round < 3 && n == 0; round++)
    assert_true((n = cl_deliver_claim(fx->c, "sub", "s1", 1, 30, &d)) >= 0);
  assert_int_equal(n, 1);
  cl_delivery_fail_info_t info;
  assert_int_equal(cl_delivery_fail(fx->c, "sub", d[0].item_id, d[0].token,
                                    "receiver down", 1, -1, &info),
                   0);
  cl_deliveries_free(d, 1);
  double w = (double)th_long(fx->pg, "SELECT (extract(epoch FROM next_at - "
                                     "updated_at) * 1000)::bigint FROM "
                                     "claimer.deliveries") /
             1000;
  th_exec(fx->pg, "UPDATE claimer.deliveries SET next_at = now()");
  return w;
}

static void test_backoff_schedule(void **state) {
  fx_t *fx = *state;
  results(fx, "b", 1);
  assert_int_equal(claimer(fx, NULL, "subscriber", "add", "sub", "--from",
                           "beginning", "--backoff", "2s,1m", NULL),
                   0);
  double w1 = fail_wait(fx), w2 = fail_wait(fx), w3 = fail_wait(fx);
  print_message("schedule 2s,1m: waits %.2f s, %.2f s, %.2f s\n", w1, w2, w3);
  assert_true(w1 >= 1.8 && w1 <= 2.2);
  assert_true(w2 >= 54 && w2 <= 66);
  assert_true(w3 >= 54 && w3 <= 66); /* the last repeats */
  char *out = NULL;
  assert_int_equal(claimer(fx, &out, "subscriber", "list", "--json", NULL), 0);
  assert_non_null(strstr(out, "\"backoff_s\":[2,60]"));
  free(out);
  assert_int_equal(claimer(fx, NULL, "subscriber", "set", "sub", "--backoff",
                           "default", NULL),
                   0);
  double w4 = fail_wait(fx); /* the 4th failure: 2 h in the default */
  print_message("default schedule, 4th failure: %.0f s\n", w4);
  assert_true(w4 >= 0.9 * 7200 && w4 <= 1.1 * 7200);
  assert_int_equal(claimer(fx, &out, "subscriber", "list", "--json", NULL), 0);
  assert_non_null(strstr(out, "\"backoff_s\":[]"));
  free(out);
  /* Bad schedules: exit 2, named, nothing changed. */
  assert_int_equal(
      claimer(fx, &out, "subscriber", "set", "sub", "--backoff", "0s", NULL),
      2);
  assert_non_null(strstr(out, "--backoff: \"0s\" is not a duration above 0"));
  free(out);
  assert_int_equal(claimer(fx, &out, "subscriber", "set", "sub", "--backoff",
                           "5s,40d", NULL),
                   2);
  assert_non_null(strstr(out, "\"40d\""));
  free(out);
}

/* Bad policy input: exit 2, a message naming it, nothing changed. */
static void test_bad_policy(void **state) {
  fx_t *fx = *state;
  char *out = NULL;
  assert_int_equal(
      claimer(fx, &out, "subscriber", "add", "sub", "--ordering", "lifo", NULL),
      2);
  assert_non_null(strstr(out, "--ordering \"lifo\" is not none or fifo"));
  free(out);
  assert_int_equal(
      claimer(fx, &out, "subscriber", "add", "sub", "--rate", "-1", NULL), 2);
  assert_non_null(strstr(out, "--rate"));
  free(out);
  assert_int_equal(claimer(fx, &out, "subscriber", "set", "nobody",
                           "--concurrency", "2", NULL),
                   1);
  assert_non_null(strstr(out, "no subscriber \"nobody\""));
  free(out);
  assert_int_equal(
      claimer(fx, &out, "subscriber", "set", "sub", "--from", "now", NULL), 2);
  assert_non_null(strstr(out, "--from does not go with subscriber set"));
  free(out);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.subscribers"),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_rate_across_two_senders, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_concurrency_across_two_senders,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_fifo_under_kill9, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fifo_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fifo_waits_for_open_transaction,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_pause_stops_resume_continues, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stop_releases_waiting, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_hold_kill9_resolve, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lag_own_queues, setup, teardown),
      cmocka_unit_test_setup_teardown(test_backoff_schedule, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_policy, setup, teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("flow", tests, th_group_setup,
                                     th_group_teardown);
}
