/*
 * test_loop_reaper.c: the reaper (include/claimer/reaper.h) driven on a
 * uv loop inside the test process against the harness's PostgreSQL.  A
 * lease is made stale on purpose (claimed on a blocking connection by a
 * worker that then "dies", its lease_until moved into the past); the
 * reaper expires it, raises a lease_expired alert and announces it through
 * the test's announce callback, which answers ok at once, or failed (the
 * alert is tried again after a backoff, or given up after
 * announce_max_attempts), or holds the answer across a stop.  Rows in
 * claimer.items and claimer.alerts, the stats, the cycle callback and the
 * events received through cl_events_t are checked; every test ends with
 * the reaper gone and uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "claimer/reaper.h"
#include "harness.h"
#include "loop_fixture.h"

enum { MAX_ANN = 64 };

/* How the announce callback answers. */
enum mode {
  OK_NOW,       /* cl_alert_done(ok) inside the callback */
  FAIL_THEN_OK, /* at the next tick: failed on attempt 1, ok after */
  FAIL_ALWAYS,  /* at the next tick: failed every time */
  HOLD          /* the test answers */
};

typedef struct rfx {
  lt_loop_t lt;
  char db[64];
  char dsn[1024];
  cl_conn_t *c;
  PGconn *pg;
  lt_events_t ev;
  cl_reaper_t *r;
  int exited;
  int exit_rc;
  char exit_why[512];
  int cycles;
  int cycle_rc;
  long expired; /* over all cycles */
  long raised;
  enum mode mode;
  int announced; /* calls of the announce callback */
  char kind[MAX_ANN][32];
  char subject[MAX_ANN][64];
  char json[MAX_ANN][512];
  int attempt[MAX_ANN];
  cl_alert_t *later[MAX_ANN]; /* to answer at the next tick (or hold) */
  int nlater;
  cl_reaper_stats_t stats; /* copied at the last cycle */
} rfx_t;

/* ------------------------------------------------------------------------ */
/* The program's side                                                        */

static void announce(void *arg, cl_alert_t *al) {
  rfx_t *fx = arg;
  int i = fx->announced++;
  if (i < MAX_ANN) {
    snprintf(fx->kind[i], sizeof fx->kind[i], "%s", cl_alert_kind(al));
    snprintf(fx->subject[i], sizeof fx->subject[i], "%s", cl_alert_subject(al));
    snprintf(fx->json[i], sizeof fx->json[i], "%s", cl_alert_json(al));
    fx->attempt[i] = cl_alert_attempt(al);
  }
  if (fx->mode == OK_NOW) {
    cl_alert_done(al, 1, NULL);
    cl_alert_done(al, 0, "a second answer is ignored");
    return;
  }
  if (fx->nlater < MAX_ANN)
    fx->later[fx->nlater++] = al;
}

static void tick(void *arg) {
  rfx_t *fx = arg;
  if (fx->mode == HOLD)
    return;
  int n = fx->nlater;
  cl_alert_t *later[MAX_ANN];
  memcpy(later, fx->later, (size_t)n * sizeof *later);
  fx->nlater = 0;
  for (int i = 0; i < n; i++) {
    int ok = fx->mode == FAIL_THEN_OK && cl_alert_attempt(later[i]) > 1;
    cl_alert_done(later[i], ok, ok ? NULL : "the pager is down");
  }
}

static void on_cycle(void *arg, int rc, const cl_cycle_info_t *info,
                     double seconds) {
  rfx_t *fx = arg;
  (void)seconds;
  fx->cycles++;
  fx->cycle_rc = rc;
  fx->expired += info->reap.expired;
  fx->raised += info->raised_total;
  if (fx->r != NULL)
    cl_reaper_stats(fx->r, &fx->stats);
}

static void on_exit_cb(void *arg, int rc, const char *why) {
  rfx_t *fx = arg;
  fx->exited++;
  fx->exit_rc = rc;
  snprintf(fx->exit_why, sizeof fx->exit_why, "%s", why ? why : "");
  /* The stats may still be read here; the reaper is freed after. */
  cl_reaper_stats(fx->r, &fx->stats);
  fx->r = NULL;
}

/* ------------------------------------------------------------------------ */
/* The fixture                                                               */

static int setup(void **state) {
  static int n;
  rfx_t *fx = calloc(1, sizeof *fx);
  snprintf(fx->db, sizeof fx->db, "lr_%d", ++n);
  if (lt_db_open(fx->db, fx->dsn, sizeof fx->dsn, &fx->c, &fx->pg) != 0)
    return -1;
  lt_loop_init(&fx->lt);
  fx->lt.on_tick = tick;
  fx->lt.tick_arg = fx;
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  rfx_t *fx = *state;
  if (fx->lt.open) {
    if (fx->r != NULL) {
      fx->mode = FAIL_ALWAYS; /* answers what is held */
      cl_reaper_stop(fx->r);
      for (int i = 0; i < 200 && !fx->exited; i++) {
        uv_run(&fx->lt.loop, UV_RUN_NOWAIT);
        usleep(10000);
      }
    }
    lt_loop_abandon(&fx->lt);
    if (fx->ev.n)
      lt_events_dump(&fx->ev);
  }
  lt_events_free(&fx->ev);
  cl_conn_free(&fx->c);
  PQfinish(fx->pg);
  free(fx);
  return 0;
}

static void config(rfx_t *fx, cl_reaper_config_t *cfg, int with_announce) {
  cl_reaper_config_init(cfg);
  cfg->dsn = fx->dsn;
  cfg->interval_s = 0.2;
  cfg->announce = with_announce ? announce : NULL;
  cfg->events = lt_events_sink(&fx->ev);
  cfg->on_cycle = on_cycle;
  cfg->on_exit = on_exit_cb;
  cfg->arg = fx;
}

static void reaper_start(rfx_t *fx, const cl_reaper_config_t *cfg) {
  char err[256] = "";
  assert_int_equal(cl_reaper_new(&fx->r, &fx->lt.loop, cfg, err, sizeof err),
                   0);
  assert_int_equal(cl_reaper_start(fx->r), 0);
}

static void finish(rfx_t *fx) {
  if (fx->r != NULL)
    cl_reaper_stop(fx->r);
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 20);
  assert_int_equal(fx->exit_rc, 0);
  lt_loop_finish(&fx->lt);
}

/* Enqueues id, claims it for a worker that never comes back, and moves
 * its lease into the past. */
static void stale_lease(rfx_t *fx, const char *id, int max_attempts) {
  cl_item_t it = {.item_id = id, .queue = "rq", .max_attempts = max_attempts};
  assert_int_equal(cl_enqueue(fx->c, &it, 1, NULL), 1);
  cl_lease_t *l = NULL;
  size_t n = 0;
  assert_int_equal(cl_claim(fx->c, "rq", "gone-worker", 1, 60, &l, &n), 0);
  assert_int_equal(n, 1);
  cl_leases_free(l, n);
  th_exec(fx->pg, "UPDATE claimer.claims SET lease_until = now() - "
                  "interval '1 second'");
}

static long alert_rows(rfx_t *fx, const char *cond) {
  char sql[512];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM claimer.alerts WHERE %s",
           cond);
  return th_long(fx->pg, sql);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* A stale lease is expired (the attempt spent, the item ready again), a
 * lease_expired alert raised, reported as an event and handed to the
 * announce callback, which answers ok at once: the alert is 'sent'.  A
 * second answer to the same alert is ignored. */
static void test_expire_and_announce_ok(void **state) {
  rfx_t *fx = *state;
  stale_lease(fx, "s-1", 0);
  cl_reaper_config_t cfg;
  config(fx, &cfg, 1);
  fx->mode = OK_NOW;
  reaper_start(fx, &cfg);
  LT_RUN_UNTIL(&fx->lt,
               alert_rows(fx, "kind = 'lease_expired' AND subject = 's-1' "
                              "AND hook_state = 'sent'") == 1,
               10);
  assert_int_equal(fx->expired, 1);
  assert_int_equal(fx->cycle_rc, 0);
  assert_int_equal(fx->announced, 1);
  assert_string_equal(fx->kind[0], "lease_expired");
  assert_string_equal(fx->subject[0], "s-1");
  assert_int_equal(fx->attempt[0], 1);
  assert_non_null(strstr(fx->json[0], "\"worker_id\": \"gone-worker\""));
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.items "
                                   "WHERE item_id = 's-1' AND state = "
                                   "'ready' AND attempts = 1"),
                   1);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.claims"), 0);
  assert_int_equal(alert_rows(fx, "hook_attempts = 1 AND hook_error IS NULL"),
                   1);
  assert_int_equal(
      lt_events_count(&fx->ev, "reap_cycle", "expired=1", "requeued=1", NULL),
      1);
  assert_int_equal(lt_events_count(&fx->ev, "alert", "kind=lease_expired",
                                   "subject=s-1", NULL),
                   1);
  assert_int_equal(lt_events_count(&fx->ev, "alert_hook_ok", NULL), 1);
  /* More cycles: nothing new to expire or announce. */
  int cycles = fx->cycles;
  LT_RUN_UNTIL(&fx->lt, fx->cycles >= cycles + 2, 5);
  assert_int_equal(fx->expired, 1);
  assert_int_equal(fx->announced, 1);
  finish(fx);
  assert_int_equal(fx->stats.announced, 1);
  assert_int_equal(fx->stats.hooks_ok, 1);
  assert_int_equal(fx->stats.hooks_failed, 0);
  assert_true(fx->stats.cycles >= 3);
  assert_int_equal(lt_events_count(&fx->ev, "reaper_stopped", NULL), 1);
}

/* An announcement answered failed (later, from the loop) is tried again
 * after the backoff, as attempt 2, and answered ok: 'sent', two
 * attempts, the error of the first cleared.  The alert event is reported
 * once, on the first attempt. */
static void test_announce_failed_is_retried(void **state) {
  rfx_t *fx = *state;
  stale_lease(fx, "s-1", 0);
  cl_reaper_config_t cfg;
  config(fx, &cfg, 1);
  fx->mode = FAIL_THEN_OK;
  reaper_start(fx, &cfg);
  LT_RUN_UNTIL(&fx->lt,
               lt_events_count(&fx->ev, "alert_hook_failed", NULL) == 1, 10);
  /* The backoff after attempt 1 is 0.5 to 1 s. */
  LT_RUN_UNTIL(&fx->lt, alert_rows(fx, "hook_state = 'sent'") == 1, 10);
  assert_int_equal(fx->announced, 2);
  assert_int_equal(fx->attempt[0], 1);
  assert_int_equal(fx->attempt[1], 2);
  assert_string_equal(fx->subject[1], "s-1");
  assert_int_equal(alert_rows(fx, "hook_attempts = 2 AND hook_error IS NULL"),
                   1);
  assert_int_equal(
      lt_events_count(&fx->ev, "alert_hook_failed", "attempt=1", NULL), 1);
  assert_int_equal(lt_events_count(&fx->ev, "alert", NULL), 1);
  finish(fx);
  assert_int_equal(fx->stats.announced, 1);
  assert_int_equal(fx->stats.hooks_failed, 1);
  assert_int_equal(fx->stats.hooks_ok, 1);
  assert_int_equal(fx->stats.gave_up, 0);
}

/* Failing every time: after announce_max_attempts (2 here) the alert is
 * 'failed' and the reaper says it gave up. */
static void test_announce_gives_up(void **state) {
  rfx_t *fx = *state;
  stale_lease(fx, "s-1", 0);
  cl_reaper_config_t cfg;
  config(fx, &cfg, 1);
  cfg.announce_max_attempts = 2;
  fx->mode = FAIL_ALWAYS;
  reaper_start(fx, &cfg);
  LT_RUN_UNTIL(&fx->lt, alert_rows(fx, "hook_state = 'failed'") == 1, 10);
  LT_RUN_UNTIL(&fx->lt,
               lt_events_count(&fx->ev, "alert_hook_gave_up", NULL) == 1, 5);
  assert_int_equal(fx->announced, 2);
  assert_int_equal(alert_rows(fx, "hook_attempts = 2 AND hook_error = "
                                  "'the pager is down'"),
                   1);
  /* Given up: not handed out again. */
  lt_run_for(&fx->lt, 1.5);
  assert_int_equal(fx->announced, 2);
  finish(fx);
  assert_int_equal(fx->stats.hooks_failed, 2);
  assert_int_equal(fx->stats.gave_up, 1);
}

/* A stop while an announcement is handed out waits for its answer, then
 * closes (rc 0); the answer given after the stop is recorded.  An item on
 * its last attempt dies, raising item_dead as well. */
static void test_stop_waits_for_announcement(void **state) {
  rfx_t *fx = *state;
  stale_lease(fx, "s-1", 1);
  cl_reaper_config_t cfg;
  config(fx, &cfg, 1);
  fx->mode = HOLD;
  reaper_start(fx, &cfg);
  LT_RUN_UNTIL(&fx->lt, fx->nlater == 2, 10);
  assert_int_equal(th_long(fx->pg, "SELECT count(*) FROM claimer.items "
                                   "WHERE item_id = 's-1' AND state = "
                                   "'dead' AND attempts = 1"),
                   1);
  cl_reaper_stop(fx->r);
  cl_reaper_stop(fx->r); /* safe twice */
  lt_run_for(&fx->lt, 0.3);
  assert_int_equal(fx->exited, 0);
  cl_alert_done(fx->later[0], 1, NULL);
  lt_run_for(&fx->lt, 0.2);
  assert_int_equal(fx->exited, 0);
  cl_alert_done(fx->later[1], 1, NULL);
  fx->nlater = 0;
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 10);
  assert_int_equal(fx->exit_rc, 0);
  assert_int_equal(alert_rows(fx, "hook_state = 'sent'"), 2);
  assert_int_equal(alert_rows(fx, "kind = 'item_dead' AND subject = 's-1'"), 1);
  lt_loop_finish(&fx->lt);
}

/* once: one cycle, its alerts announced by their event alone (no
 * callback: 'none'), then the reaper stops by itself with rc 0. */
static void test_once_without_announce(void **state) {
  rfx_t *fx = *state;
  stale_lease(fx, "s-1", 0);
  cl_reaper_config_t cfg;
  config(fx, &cfg, 0);
  cfg.once = 1;
  reaper_start(fx, &cfg);
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 10);
  assert_int_equal(fx->exit_rc, 0);
  assert_int_equal(fx->cycles, 1);
  assert_int_equal(fx->expired, 1);
  assert_int_equal(fx->raised, 1);
  assert_int_equal(alert_rows(fx, "hook_state = 'none'"), 1);
  assert_int_equal(
      lt_events_count(&fx->ev, "alert", "kind=lease_expired", NULL), 1);
  assert_int_equal(fx->stats.announced, 1);
  lt_loop_finish(&fx->lt);
}

/* A database without the claimer schema stops the reaper with
 * CL_ESCHEMA. */
static void test_exits_without_schema(void **state) {
  rfx_t *fx = *state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "lr_noschema", 0, dsn, sizeof dsn), 0);
  cl_reaper_config_t cfg;
  config(fx, &cfg, 1);
  cfg.dsn = dsn;
  reaper_start(fx, &cfg);
  LT_RUN_UNTIL(&fx->lt, fx->exited == 1, 10);
  assert_int_equal(fx->exit_rc, CL_ESCHEMA);
  assert_non_null(strstr(fx->exit_why, "schema is missing"));
  assert_int_equal(lt_events_count(&fx->ev, "db_fatal", NULL), 1);
  lt_loop_finish(&fx->lt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_expire_and_announce_ok, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_announce_failed_is_retried, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_announce_gives_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_waits_for_announcement, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_once_without_announce, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_exits_without_schema, setup,
                                      teardown),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("loop_reaper", tests, th_group_setup,
                                     th_group_teardown);
}
