/*
 * loop_fixture.h: what the loop tests share.  A test owns a uv loop and a
 * ticking timer (so that uv_run(UV_RUN_ONCE) comes back at least every
 * 10 ms and the test can look at what its callbacks recorded); it runs the
 * loop until a condition holds or a deadline passes, and ends by closing
 * every handle and asserting uv_loop_close() == 0.  Assertions are made in
 * the test body, never inside a libuv callback: callbacks only record.
 * Also here: an event recorder for cl_events_t, a TCP listener that never
 * answers, and the helpers that find and kill a backend by its
 * application_name.
 */
#ifndef CLAIMER_TEST_LOOP_FIXTURE_H
#define CLAIMER_TEST_LOOP_FIXTURE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <uv.h>

#include "claimer/claimer.h"
#include "harness.h"

typedef struct lt_loop {
  uv_loop_t loop;
  uv_timer_t tick;
  int open;                   /* 1 until lt_loop_finish() */
  void (*on_tick)(void *arg); /* run every tick; may be NULL */
  void *tick_arg;
} lt_loop_t;

/* Initialises the loop and starts its tick, or fails the test. */
void lt_loop_init(lt_loop_t *lt);
/* Creates database db afresh and migrated, writes its DSN into dsn, and
 * opens a blocking libclaimer connection (*c) and a plain libpq one (*pg)
 * to it.  Returns 0, or -1 after printing why. */
int lt_db_open(const char *db, char *dsn, size_t n, cl_conn_t **c, PGconn **pg);
/* Closes the tick, runs the loop until nothing is left (the caller has
 * closed its objects already) and asserts uv_loop_close() == 0. */
void lt_loop_finish(lt_loop_t *lt);
/* For a teardown after a failed test: closes whatever handles are left,
 * runs the loop briefly and closes it, asserting nothing. */
void lt_loop_abandon(lt_loop_t *lt);

/* Runs the loop until cond holds, failing the test after secs seconds. */
#define LT_RUN_UNTIL(lt, cond, secs)                                           \
  do {                                                                         \
    double lt_end_ = th_now() + (secs);                                        \
    while (!(cond) && th_now() < lt_end_)                                      \
      uv_run(&(lt)->loop, UV_RUN_ONCE);                                        \
    if (!(cond))                                                               \
      fail_msg("not within %.1f s: %s", (double)(secs), #cond);                \
  } while (0)

/* Runs the loop for secs seconds. */
void lt_run_for(lt_loop_t *lt, double secs);

/* ------------------------------------------------------------------------ */
/* Events                                                                    */

/* Every event received, one line each: "name key=value key=value". */
typedef struct lt_events {
  char **lines;
  size_t n, cap;
} lt_events_t;

/* The cl_events_t that records into rec, from CL_LEVEL_DEBUG up. */
cl_events_t lt_events_sink(lt_events_t *rec);
void lt_events_free(lt_events_t *rec);
/* Events named name whose line holds every "key=value" of the
 * NULL-terminated list that follows (none: all events of that name). */
int lt_events_count(const lt_events_t *rec, const char *name, ...);
/* Prints every recorded line (for a failing test's message). */
void lt_events_dump(const lt_events_t *rec);

/* ------------------------------------------------------------------------ */
/* Sockets and backends                                                      */

/* Opens a TCP socket on 127.0.0.1 that listens and never accepts, so that
 * a client's connect succeeds (the kernel completes the handshake) and
 * then nothing ever answers.  Writes its port; returns the fd. */
int lt_silent_listener(int *port);

/* The pid of the one backend whose application_name is app, or 0. */
long lt_backend_pid(PGconn *admin, const char *app);
/* pg_terminate_backend() on every backend named app; returns how many. */
long lt_terminate(PGconn *admin, const char *app);

#endif
