/*
 * loop_fixture.c: the loop tests' shared fixture (see loop_fixture.h): the
 * loop with its tick, the event recorder, the silent listener and the
 * backend helpers.
 */
#include "loop_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static void on_tick(uv_timer_t *t) {
  lt_loop_t *lt = t->data;
  if (lt->on_tick)
    lt->on_tick(lt->tick_arg);
}

void lt_loop_init(lt_loop_t *lt) {
  memset(lt, 0, sizeof *lt);
  assert_int_equal(uv_loop_init(&lt->loop), 0);
  assert_int_equal(uv_timer_init(&lt->loop, &lt->tick), 0);
  lt->tick.data = lt;
  assert_int_equal(uv_timer_start(&lt->tick, on_tick, 10, 10), 0);
  lt->open = 1;
}

void lt_run_for(lt_loop_t *lt, double secs) {
  double end = th_now() + secs;
  while (th_now() < end)
    uv_run(&lt->loop, UV_RUN_ONCE);
}

void lt_loop_finish(lt_loop_t *lt) {
  uv_close((uv_handle_t *)&lt->tick, NULL);
  /* Everything else was closed by the test: the run ends once the close
   * callbacks have run, and the loop must then close cleanly. */
  uv_run(&lt->loop, UV_RUN_DEFAULT);
  lt->open = 0;
  assert_int_equal(uv_loop_close(&lt->loop), 0);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

void lt_loop_abandon(lt_loop_t *lt) {
  if (!lt->open)
    return;
  lt->open = 0;
  lt->on_tick = NULL;
  /* Give what the test stopped a moment to close by itself first. */
  for (int i = 0; i < 50 && uv_loop_alive(&lt->loop); i++)
    uv_run(&lt->loop, UV_RUN_NOWAIT);
  uv_walk(&lt->loop, close_any, NULL);
  uv_run(&lt->loop, UV_RUN_NOWAIT);
  (void)uv_loop_close(&lt->loop);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                    */

static void record(void *arg, cl_level_t level, const char *event,
                   const cl_field_t *fields, size_t n) {
  lt_events_t *rec = arg;
  (void)level;
  size_t len = strlen(event) + 1;
  for (size_t i = 0; i < n; i++)
    len += strlen(fields[i].key) + strlen(fields[i].value) + 2;
  char *line = malloc(len);
  if (line == NULL)
    return;
  size_t at = (size_t)snprintf(line, len, "%s", event);
  for (size_t i = 0; i < n; i++)
    at += (size_t)snprintf(line + at, len - at, " %s=%s", fields[i].key,
                           fields[i].value);
  if (rec->n == rec->cap) {
    size_t cap = rec->cap ? rec->cap * 2 : 64;
    char **v = realloc(rec->lines, cap * sizeof *v);
    if (v == NULL) {
      free(line);
      return;
    }
    rec->lines = v;
    rec->cap = cap;
  }
  rec->lines[rec->n++] = line;
}

cl_events_t lt_events_sink(lt_events_t *rec) {
  cl_events_t ev = {record, rec, CL_LEVEL_DEBUG};
  return ev;
}

void lt_events_free(lt_events_t *rec) {
  for (size_t i = 0; i < rec->n; i++)
    free(rec->lines[i]);
  free(rec->lines);
  memset(rec, 0, sizeof *rec);
}

/* 1 when line holds the field kv ("key=value") whole. */
static int has_field(const char *line, const char *kv) {
  size_t len = strlen(kv);
  for (const char *p = line; (p = strstr(p, kv)) != NULL; p++)
    if (p > line && p[-1] == ' ' && (p[len] == ' ' || p[len] == '\0'))
      return 1;
  return 0;
}

int lt_events_count(const lt_events_t *rec, const char *name, ...) {
  int count = 0;
  size_t nlen = strlen(name);
  for (size_t i = 0; i < rec->n; i++) {
    const char *line = rec->lines[i];
    if (strncmp(line, name, nlen) != 0 ||
        (line[nlen] != ' ' && line[nlen] != '\0'))
      continue;
    va_list ap;
    va_start(ap, name);
    int ok = 1;
    for (const char *kv; ok && (kv = va_arg(ap, const char *)) != NULL;)
      ok = has_field(line, kv);
    va_end(ap);
    count += ok;
  }
  return count;
}

void lt_events_dump(const lt_events_t *rec) {
  for (size_t i = 0; i < rec->n; i++)
    print_message("event: %s\n", rec->lines[i]);
}

/* ------------------------------------------------------------------------ */
/* Sockets and backends                                                      */

int lt_silent_listener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  /* A backlog of a few: the connections the tests make complete their
   * handshake in the kernel and wait there, unaccepted. */
  assert_int_equal(listen(fd, 8), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

long lt_backend_pid(PGconn *admin, const char *app) {
  const char *p[] = {app};
  PGresult *r = PQexecParams(admin,
                             "SELECT pid FROM pg_stat_activity "
                             "WHERE application_name = $1",
                             1, NULL, p, NULL, NULL, 0);
  long pid = 0;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
    pid = atol(PQgetvalue(r, 0, 0));
  PQclear(r);
  return pid;
}

long lt_terminate(PGconn *admin, const char *app) {
  const char *p[] = {app};
  PGresult *r = PQexecParams(admin,
                             "SELECT count(pg_terminate_backend(pid)) "
                             "FROM pg_stat_activity "
                             "WHERE application_name = $1",
                             1, NULL, p, NULL, NULL, 0);
  long n = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
    n = atol(PQgetvalue(r, 0, 0));
  PQclear(r);
  return n;
}

int lt_db_open(const char *db, char *dsn, size_t n, cl_conn_t **c,
               PGconn **pg) {
  if (th_db_create(&th_pg, db, 1, dsn, n) != 0)
    return -1;
  if (cl_conn_new(c, dsn) != 0 || cl_conn_connect(*c) != 0) {
    fprintf(stderr, "lt_db_open: %s\n", cl_conn_last_error(*c));
    return -1;
  }
  *pg = PQconnectdb(dsn);
  if (PQstatus(*pg) != CONNECTION_OK) {
    fprintf(stderr, "lt_db_open: %s", PQerrorMessage(*pg));
    return -1;
  }
  return 0;
}
