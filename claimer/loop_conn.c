/*
 * loop_conn.c: a libpq connection on a libuv loop (see loop_conn.h for the
 * contract).  The connection is one explicit state machine:
 *
 *   IDLE --start--> CONNECTING --ok--> UP --break--> WAITING --timer-->
 *   CONNECTING ...; a refused password ends in GAVE_UP; close() ends in
 *   CLOSED from any state.
 *
 * In UP every request goes out as Parse-less Bind/Execute of a statement
 * prepared on this session, followed by its own Sync.  Results come back
 * strictly in order, so the sent requests form a FIFO: each expects its
 * result, the NULL that ends it, then PGRES_PIPELINE_SYNC.  A request is
 * answered only at its Sync, because the implicit transaction commits
 * there: a result seen before its Sync is not yet durable.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loop_conn.h"

/* LOSING: the session broke while requests were being sent; it ends on
 * the next turn of the loop (lose_later). */
enum state { IDLE, CONNECTING, UP, LOSING, WAITING, GAVE_UP, CLOSED };
enum kind { REQ_STMT, REQ_PREPARE, REQ_SQL };

typedef struct req {
  struct req *next;
  enum kind kind;
  cl__stmt_id_t id;
  char **params; /* one allocation: pointers then the strings */
  char *sql;     /* REQ_SQL: the text, owned */
  cl__loop_conn_cb cb;
  void *arg;
  PGresult *res;
  int synced_wait; /* 1: result complete, waiting for the Sync */
  int unprepared;  /* 1: its statement's prepare, sent before, failed */
} req_t;

typedef struct reqq {
  req_t *head, *tail;
  size_t n;
} reqq_t;

typedef struct pollh {
  uv_poll_t h;
  cl__loop_conn_t *a;
} pollh_t;

struct cl__loop_conn {
  uv_loop_t *loop;
  cl_conn_t *c; /* dsn, redacted dsn, the PGconn, the last error */
  char **channels;
  cl__loop_conn_hooks_t hooks;
  void *arg;
  enum state state;
  pollh_t *poll;
  int poll_fd;
  int poll_events;
  uv_timer_t timer;
  uint64_t connect_timeout_ms; /* the dsn's connect_timeout; 0: none */
  /* The dsn's hosts, as libpq lists them (comma-separated host, hostaddr
   * and port), so that an attempt whose deadline passed on one host can
   * go on with the next: libpq's blocking connect does, and PQconnectPoll
   * cannot be told to. */
  char *hosts, *addrs, *ports;
  int nhosts; /* entries of the longer of hosts and addrs */
  int skip;   /* this attempt starts at host number skip */
  int handles_open;
  unsigned failures;
  reqq_t queued; /* not yet sent */
  reqq_t sent;   /* sent, waiting for results */
  void (*closed_cb)(void *);
  void *closed_arg;
};

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

static void q_push(reqq_t *q, req_t *r) {
  r->next = NULL;
  if (q->tail)
    q->tail->next = r;
  else
    q->head = r;
  q->tail = r;
  q->n++;
}

static void q_push_front(reqq_t *q, req_t *r) {
  r->next = q->head;
  q->head = r;
  if (q->tail == NULL)
    q->tail = r;
  q->n++;
}

static req_t *q_pop(reqq_t *q) {
  req_t *r = q->head;
  if (r == NULL)
    return NULL;
  q->head = r->next;
  if (q->head == NULL)
    q->tail = NULL;
  q->n--;
  r->next = NULL;
  return r;
}

static void req_free(req_t *r) {
  if (r->res)
    PQclear(r->res);
  free(r->params);
  free(r->sql);
  free(r);
}

/* Answers r and frees it.  The callback may send more requests or close
 * the connection; the caller re-checks the state afterwards. */
static void req_answer(req_t *r, int rc) {
  if (r->cb != NULL)
    r->cb(r->arg, rc, rc == 0 ? r->res : NULL);
  req_free(r);
}

unsigned cl__backoff_ms(unsigned failures, double unit_random) {
  double ms = 100.0;
  for (unsigned i = 1; i < failures && ms < 10000.0; i++)
    ms *= 2;
  if (ms > 10000.0)
    ms = 10000.0;
  if (unit_random < 0 || unit_random >= 1)
    unit_random = 0.5;
  return (unsigned)(ms * (0.5 + unit_random / 2));
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */

static void maybe_free(cl__loop_conn_t *a) {
  if (a->state != CLOSED || a->handles_open > 0)
    return;
  void (*cb)(void *) = a->closed_cb;
  void *arg = a->closed_arg;
  for (char **ch = a->channels; ch && *ch; ch++)
    free(*ch);
  free(a->channels);
  free(a->hosts);
  free(a->addrs);
  free(a->ports);
  cl_conn_free(&a->c);
  free(a);
  if (cb)
    cb(arg);
}

static void on_poll_closed(uv_handle_t *h) {
  pollh_t *p = h->data;
  cl__loop_conn_t *a = p->a;
  free(p);
  a->handles_open--;
  maybe_free(a);
}

static void on_timer_closed(uv_handle_t *h) {
  cl__loop_conn_t *a = h->data;
  a->handles_open--;
  maybe_free(a);
}

static void poll_drop(cl__loop_conn_t *a) {
  if (a->poll == NULL)
    return;
  uv_poll_stop(&a->poll->h);
  uv_close((uv_handle_t *)&a->poll->h, on_poll_closed);
  a->poll = NULL;
  a->poll_fd = -1;
  a->poll_events = 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches the connection's current socket for events; a new socket (libpq
 * may move to another host) gets a new poll handle. */
static int poll_watch(cl__loop_conn_t *a, int events) {
  int fd = PQsocket(a->c->pg);
  if (fd < 0)
    return -1;
  if (a->poll != NULL && a->poll_fd != fd)
    poll_drop(a);
  if (a->poll == NULL) {
    pollh_t *p = calloc(1, sizeof *p);
    if (p == NULL)
      return -1;
    p->a = a;
    p->h.data = p;
    if (uv_poll_init(a->loop, &p->h, fd) != 0) {
      free(p);
      return -1;
    }
    a->handles_open++;
    a->poll = p;
    a->poll_fd = fd;
    a->poll_events = 0;
  }
  if (events != a->poll_events) {
    if (uv_poll_start(&a->poll->h, events, on_poll) != 0)
      return -1;
    a->poll_events = events;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Losing and making the session                                            */

static void begin_connect(cl__loop_conn_t *a);

static void on_retry_timer(uv_timer_t *t) {
  cl__loop_conn_t *a = t->data;
  if (a->state == WAITING)
    begin_connect(a);
}

/* Ends the session: every sent request is answered CL_ECONNLOST (queued
 * ones wait for the next session), then the down hook runs and, unless
 * given up, a reconnect is scheduled. */
static void session_lost(cl__loop_conn_t *a, int rc) {
  poll_drop(a);
  uv_timer_stop(&a->timer);
  if (a->c->pg != NULL) {
    PQfinish(a->c->pg);
    a->c->pg = NULL;
  }
  a->c->prepared = 0;
  int give_up = rc == CL_EAUTH || rc == CL_ESCHEMA;
  a->state = give_up ? GAVE_UP : WAITING;
  a->failures++;
  unsigned delay = give_up ? 0 : cl__backoff_ms(a->failures, cl__random_unit());
  /* Internal requests of the lost session are not carried over; after
   * giving up, nothing is. */
  reqq_t keep = {0}, drop = {0};
  for (req_t *r; (r = q_pop(&a->queued)) != NULL;) {
    if (r->kind == REQ_STMT && !give_up)
      q_push(&keep, r);
    else if (r->kind == REQ_STMT)
      q_push(&drop, r);
    else
      req_free(r);
  }
  a->queued = keep;
  while (drop.head != NULL)
    q_push(&a->sent, q_pop(&drop)); /* answered CL_ECONNLOST below */
  char why[sizeof a->c->error];
  memcpy(why, a->c->error, sizeof why);
  for (req_t *r; (r = q_pop(&a->sent)) != NULL;) {
    req_answer(r, CL_ECONNLOST);
    if (a->state == CLOSED)
      return;
  }
  if (a->hooks.down)
    a->hooks.down(a->arg, rc, why, delay);
  if (a->state == WAITING)
    uv_timer_start(&a->timer, on_retry_timer, delay, 0);
}

/* The number of entries of a comma-separated list (0 for none). */
static int csv_count(const char *s) {
  if (s == NULL || *s == '\0')
    return 0;
  int n = 1;
  for (; *s; s++)
    n += *s == ',';
  return n;
}

/* The list from its entry k on. */
static const char *csv_from(const char *s, int k) {
  for (; k > 0 && s != NULL && *s; s++)
    if (*s == ',')
      k--;
  return s;
}

/* Whether entry k of list s is val (a NULL val matches nothing). */
static int csv_is(const char *s, int k, const char *val) {
  if (s == NULL || val == NULL)
    return 0;
  const char *e = csv_from(s, k);
  size_t n = strcspn(e, ",");
  return strlen(val) == n && strncmp(e, val, n) == 0;
}

static void on_connect_deadline(uv_timer_t *t) {
  cl__loop_conn_t *a = t->data;
  if (a->state != CONNECTING)
    return;
  /* As libpq's blocking connect does: the deadline is per host, and the
   * attempt goes on with the next one.  Which one was being tried:
   * PQhost/PQport name it; find it in the lists from this attempt's first
   * host on. */
  int at = -1;
  if (a->nhosts > 1 && a->c->pg != NULL) {
    const char *h = PQhost(a->c->pg), *p = PQport(a->c->pg);
    for (int k = a->skip; k < a->nhosts && at < 0; k++)
      if ((csv_is(a->hosts, k, h) || csv_is(a->addrs, k, h)) &&
          (csv_count(a->ports) <= 1 || csv_is(a->ports, k, p)))
        at = k;
  }
  if (at >= 0 && at + 1 < a->nhosts) {
    a->skip = at + 1;
    poll_drop(a);
    PQfinish(a->c->pg);
    a->c->pg = NULL;
    begin_connect(a);
    return;
  }
  a->skip = 0; /* the next attempt starts from the first host again */
  cl__set_error(a->c, "08001", "cannot connect: no answer within %llu s",
                (unsigned long long)(a->connect_timeout_ms / 1000));
  session_lost(a, CL_ECONNECT);
}

static void pump(cl__loop_conn_t *a);

static void session_up(cl__loop_conn_t *a) {
  PGconn *pg = a->c->pg;
  uv_timer_stop(&a->timer);
  PQsetNoticeProcessor(pg, cl__ignore_notice, NULL);
  if (PQsetnonblocking(pg, 1) != 0 || PQenterPipelineMode(pg) != 1) {
    cl__set_error(a->c, "08006", "cannot enter pipeline mode: %s",
                  PQerrorMessage(pg));
    session_lost(a, CL_ECONNLOST);
    return;
  }
  a->state = UP;
  a->failures = 0;
  a->c->error[0] = a->c->sqlstate[0] = '\0';
  /* LISTEN goes first, before anything queued while we were away. */
  size_t nch = 0;
  while (a->channels && a->channels[nch])
    nch++;
  for (size_t i = nch; i-- > 0;) {
    req_t *r = calloc(1, sizeof *r);
    size_t len = strlen(a->channels[i]) + 16;
    char *sql = r ? malloc(len) : NULL;
    if (sql == NULL) {
      free(r);
      continue;
    }
    /* Channel names are ours (fixed identifiers), never user input. */
    snprintf(sql, len, "LISTEN %s", a->channels[i]);
    r->kind = REQ_SQL;
    r->sql = sql;
    q_push_front(&a->queued, r);
  }
  if (a->hooks.up)
    a->hooks.up(a->arg);
  if (a->state == UP)
    pump(a);
}

static void connect_step(cl__loop_conn_t *a) {
  PostgresPollingStatusType st = PQconnectPoll(a->c->pg);
  /* libpq may have closed the socket and opened another for the next host
   * or address, possibly under the same number: watch it afresh. */
  if (a->poll != NULL) {
    uv_poll_stop(&a->poll->h);
    a->poll_events = 0;
  }
  switch (st) {
  case PGRES_POLLING_READING:
    if (poll_watch(a, UV_READABLE) != 0)
      goto fail;
    return;
  case PGRES_POLLING_WRITING:
    if (poll_watch(a, UV_WRITABLE) != 0)
      goto fail;
    return;
  case PGRES_POLLING_OK:
    if (poll_watch(a, UV_READABLE) != 0)
      goto fail;
    session_up(a);
    return;
  default:
    break;
  }
fail:;
  int rc = cl__connect_error(a->c, PQerrorMessage(a->c->pg));
  session_lost(a, rc);
}

static void begin_connect(cl__loop_conn_t *a) {
  /* Keepalives find a silent peer when idle; tcp_user_timeout when data
   * is unacknowledged (a half-open connection after a partition).  The
   * dsn, expanded last, may override them all. */
  const char *keys[11] = {"application_name", "keepalives",
                          "keepalives_idle",  "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout",
                          "dbname",           NULL};
  const char *vals[11] = {"claimer-worker", "1",       "10", "5", "3",
                          "20000",          a->c->dsn, NULL};
  /* Going on from a host whose deadline passed: the lists from the next
   * one (keys after the expanded dsn override its values). */
  if (a->skip > 0 && a->skip < a->nhosts) {
    int n = 7;
    if (csv_count(a->hosts) > 1)
      keys[n] = "host", vals[n++] = csv_from(a->hosts, a->skip);
    if (csv_count(a->addrs) > 1)
      keys[n] = "hostaddr", vals[n++] = csv_from(a->addrs, a->skip);
    if (csv_count(a->ports) > 1)
      keys[n] = "port", vals[n++] = csv_from(a->ports, a->skip);
    keys[n] = vals[n] = NULL;
  }
  a->state = CONNECTING;
  a->c->pg = PQconnectStartParams(keys, vals, 1);
  if (a->c->pg == NULL || PQstatus(a->c->pg) == CONNECTION_BAD) {
    int rc = a->c->pg ? cl__connect_error(a->c, PQerrorMessage(a->c->pg))
                      : CL_ECONNECT;
    session_lost(a, rc);
    return;
  }
  /* The loop's clock is the time of its last iteration; a program that
   * blocked before start() (a schema check, a migration) would find the
   * deadline already past. */
  uv_update_time(a->loop);
  if (a->connect_timeout_ms > 0)
    uv_timer_start(&a->timer, on_connect_deadline, a->connect_timeout_ms, 0);
  /* As if PQconnectPoll had said "writing". */
  if (poll_watch(a, UV_WRITABLE) != 0) {
    cl__set_error(a->c, "08001", "cannot connect: cannot watch the socket");
    session_lost(a, CL_ECONNECT);
  }
}

/* ------------------------------------------------------------------------ */
/* The session                                                               */

static void on_lose_timer(uv_timer_t *t) {
  cl__loop_conn_t *a = t->data;
  if (a->state == LOSING)
    session_lost(a, CL_ECONNLOST);
}

/* The session broke while sending: it ends on the next turn of the loop,
 * not now.  pump() runs inside cl__loop_conn_send(), and answering there
 * would call the caller back before its send has returned: a caller that
 * marks its request as out when the send returns 0 would then wait for
 * an answer already given (the worker's claims and batches stalled so
 * after a restart).  Meanwhile nothing more is sent and the requests
 * sent so far stay unanswered; is_up() is false. */
static void lose_later(cl__loop_conn_t *a, const char *why) {
  cl__set_error(a->c, "08006", "connection lost: %s", why);
  poll_drop(a);
  a->state = LOSING;
  uv_timer_start(&a->timer, on_lose_timer, 0, 0);
}

/* Sends what is queued, then flushes; watches for writable while libpq
 * still holds output.  Never answers a request (see lose_later). */
static void pump(cl__loop_conn_t *a) {
  PGconn *pg = a->c->pg;
  while (a->state == UP && a->queued.head != NULL) {
    req_t *r = q_pop(&a->queued);
    int ok = 1;
    if (r->kind == REQ_STMT && a->c->unnamed) {
      const cl__stmt_t *st = &cl__stmts[r->id];
      ok =
          PQsendQueryParams(pg, st->sql, st->nparams, NULL,
                            (const char *const *)r->params, NULL, NULL, 0) == 1;
    } else if (r->kind == REQ_STMT) {
      const cl__stmt_t *st = &cl__stmts[r->id];
      const char *name = cl__stmt_name(r->id);
      uint64_t bit = (uint64_t)1 << r->id;
      if ((a->c->prepared & bit) == 0) {
        req_t *p = calloc(1, sizeof *p);
        ok = p != NULL &&
             PQsendPrepare(pg, name, st->sql, st->nparams, NULL) == 1 &&
             PQpipelineSync(pg) == 1;
        if (p != NULL) {
          p->kind = REQ_PREPARE;
          p->id = r->id;
          if (ok)
            q_push(&a->sent, p);
          else
            free(p);
        }
        if (ok)
          a->c->prepared |= bit;
      }
      ok = ok && PQsendQueryPrepared(pg, name, st->nparams,
                                     (const char *const *)r->params, NULL, NULL,
                                     0) == 1;
    } else {
      ok = PQsendQueryParams(pg, r->sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
    }
    ok = ok && PQpipelineSync(pg) == 1;
    if (!ok) {
      /* Not sent (or not wholly): the session is unusable.  The request
       * may have reached the server, so it counts as sent.  (libpq's
       * status can turn bad without the loop hearing of it: a failed
       * write reads the end of the stream behind the server's goodbye.) */
      q_push(&a->sent, r);
      lose_later(a, PQerrorMessage(pg));
      return;
    }
    q_push(&a->sent, r);
  }
  if (a->state != UP)
    return;
  int f = PQflush(pg);
  if (f < 0 || PQstatus(pg) == CONNECTION_BAD) {
    lose_later(a, PQerrorMessage(pg));
    return;
  }
  if (poll_watch(a, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE) != 0)
    lose_later(a, "cannot watch the socket");
}

/* Hands out the NOTIFYs that have arrived. */
static void drain_notifies(cl__loop_conn_t *a) {
  for (PGnotify *n; a->state == UP && (n = PQnotifies(a->c->pg)) != NULL;) {
    if (a->hooks.notify)
      a->hooks.notify(a->arg, n->relname, n->extra);
    PQfreemem(n);
  }
}

/* Consumes the results that are complete, strictly in the order sent. */
static void drain_results(cl__loop_conn_t *a) {
  PGconn *pg = a->c->pg;
  while (a->state == UP && a->sent.head != NULL && !PQisBusy(pg)) {
    req_t *r = a->sent.head;
    PGresult *res = PQgetResult(pg);
    if (!r->synced_wait) {
      if (res == NULL) {
        r->synced_wait = 1;
        continue;
      }
      if (r->res == NULL)
        r->res = res;
      else
        PQclear(res);
      continue;
    }
    if (res == NULL)
      break; /* the Sync's answer has not arrived */
    ExecStatusType s = PQresultStatus(res);
    PQclear(res);
    if (s != PGRES_PIPELINE_SYNC)
      continue;
    q_pop(&a->sent);
    ExecStatusType rs = r->res ? PQresultStatus(r->res) : PGRES_FATAL_ERROR;
    int rc = 0;
    if (rs != PGRES_TUPLES_OK && rs != PGRES_COMMAND_OK)
      rc = cl__result_error(a->c, r->res);
    if (rc != 0 && r->kind != REQ_SQL && !r->unprepared &&
        cl__pooler_seen(a->c, r->res)) {
      if (r->kind == REQ_PREPARE) {
        /* The name is there already (42P05): under a hashed name, the same
         * text; the Execute behind it runs or fails on its own. */
        req_free(r);
        continue;
      }
      /* The statement did not run (26000): it goes out again first, after
       * a reconnect; the requests sent behind it may have run, and are
       * answered as lost (their callers settle them, G9). */
      cl__set_error(a->c, "26000",
                    "connection lost: a pooler moved this session between "
                    "server sessions (%s); statements go unnamed from "
                    "here on",
                    PQresultErrorMessage(r->res));
      PQclear(r->res);
      r->res = NULL;
      r->synced_wait = 0;
      q_push_front(&a->queued, r);
      session_lost(a, CL_ECONNLOST);
      return;
    }
    if (r->kind == REQ_PREPARE && rc != 0) {
      /* The statement that follows will fail and say why (as a prepared
       * statement that does not exist, not a pooler's doing); a missing
       * schema is not worth reconnecting for. */
      a->c->prepared &= ~((uint64_t)1 << r->id);
      for (req_t *n = a->sent.head; n != NULL; n = n->next)
        if (n->kind == REQ_STMT && n->id == r->id)
          n->unprepared = 1;
    }
    if (rc == CL_ECONNLOST) {
      q_push_front(&a->sent, r);
      session_lost(a, CL_ECONNLOST);
      return;
    }
    if (rc == CL_ESCHEMA && r->kind != REQ_STMT) {
      req_free(r);
      session_lost(a, CL_ESCHEMA);
      return;
    }
    req_answer(r, rc);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  pollh_t *p = h->data;
  cl__loop_conn_t *a = p->a;
  if (a->poll != p)
    return;
  if (a->state == CONNECTING) {
    connect_step(a);
    return;
  }
  if (a->state != UP)
    return;
  PGconn *pg = a->c->pg;
  if (status < 0) {
    cl__set_error(a->c, "08006", "connection lost: %s", uv_strerror(status));
    session_lost(a, CL_ECONNLOST);
    return;
  }
  if (events & UV_READABLE) {
    if (PQconsumeInput(pg) != 1) {
      cl__set_error(a->c, "08006", "connection lost: %s", PQerrorMessage(pg));
      session_lost(a, CL_ECONNLOST);
      return;
    }
    drain_notifies(a);
    drain_results(a);
    /* Parsing results may have read NOTIFYs queued behind them. */
    drain_notifies(a);
    if (a->state == UP && PQstatus(pg) == CONNECTION_BAD) {
      cl__set_error(a->c, "08006", "connection lost: %s", PQerrorMessage(pg));
      session_lost(a, CL_ECONNLOST);
      return;
    }
  }
  if (a->state == UP)
    pump(a);
}

/* ------------------------------------------------------------------------ */
/* The interface                                                             */

/* Reads the dsn's connect_timeout into *ms by libpq's rules, so that the
 * loop waits as long as the blocking connection (conn.c) would: an integer
 * number of seconds, blanks around it allowed; 0 or less means no limit;
 * 1 counts as 2 (libpq's guard against a deadline rounded to nothing).
 * Absent, it is 10 s, the default conn.c gives libpq too.  The loop's
 * deadline is exact (a timer on the monotonic clock), where libpq's ends
 * on a whole second of time(), up to a second either side.  Returns 0,
 * CL_EDSN for a value libpq refuses ("invalid integer value": the
 * blocking connection would never connect with it) or CL_ENOMEM.
 *
 * The deadline is per host, as libpq's blocking connect has it: when it
 * passes, the attempt goes on with the dsn's next host (on_connect_deadline
 * starts a new one from there, since PQconnectPoll cannot be told to move
 * on), and only the last host's deadline ends the attempt. */
/* Keeps the dsn's host, hostaddr and port lists.  Returns 0 or CL_ENOMEM
 * (a dsn libpq cannot parse was refused before this). */
static int read_hosts(cl__loop_conn_t *a, const char *dsn) {
  PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
  if (opts == NULL)
    return CL_ENOMEM;
  int rc = 0;
  for (const PQconninfoOption *o = opts; o->keyword != NULL && rc == 0; o++) {
    char **into = strcmp(o->keyword, "host") == 0       ? &a->hosts
                  : strcmp(o->keyword, "hostaddr") == 0 ? &a->addrs
                  : strcmp(o->keyword, "port") == 0     ? &a->ports
                                                        : NULL;
    if (into != NULL && o->val != NULL && *o->val != '\0' &&
        (*into = cl__strdup(o->val)) == NULL)
      rc = CL_ENOMEM;
  }
  PQconninfoFree(opts);
  int nh = csv_count(a->hosts), na = csv_count(a->addrs);
  a->nhosts = nh > na ? nh : na;
  return rc;
}

static int read_connect_timeout(const char *dsn, uint64_t *ms) {
  *ms = 10000;
  char *msg = NULL;
  PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
  if (opts == NULL) {
    int rc = msg ? CL_EDSN : CL_ENOMEM;
    PQfreemem(msg);
    return rc;
  }
  int rc = 0;
  for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
    if (strcmp(o->keyword, "connect_timeout") != 0 || o->val == NULL)
      continue;
    char *end;
    errno = 0;
    long v = strtol(o->val, &end, 10);
    if (end == o->val || errno != 0 || v < INT_MIN || v > INT_MAX) {
      rc = CL_EDSN;
      break;
    }
    while (isspace((unsigned char)*end))
      end++;
    if (*end != '\0') {
      rc = CL_EDSN;
      break;
    }
    *ms = v <= 0 ? 0 : (uint64_t)(v < 2 ? 2 : v) * 1000;
    break;
  }
  PQconninfoFree(opts);
  return rc;
}

int cl__loop_conn_new(cl__loop_conn_t **out, uv_loop_t *loop, const char *dsn,
                      const char *const *channels,
                      const cl__loop_conn_hooks_t *hooks, void *arg) {
  *out = NULL;
  cl__loop_conn_t *a = calloc(1, sizeof *a);
  if (a == NULL)
    return CL_ENOMEM;
  int rc = cl_conn_new(&a->c, dsn);
  if (rc == 0 && (rc = read_connect_timeout(dsn, &a->connect_timeout_ms)) != 0)
    cl_conn_free(&a->c);
  if (rc == 0 && (rc = read_hosts(a, dsn)) != 0)
    cl_conn_free(&a->c);
  if (rc != 0) {
    free(a->hosts);
    free(a->addrs);
    free(a->ports);
    free(a);
    return rc;
  }
  size_t nch = 0;
  while (channels && channels[nch])
    nch++;
  a->channels = calloc(nch + 1, sizeof *a->channels);
  for (size_t i = 0; a->channels && i < nch; i++)
    if ((a->channels[i] = cl__strdup(channels[i])) == NULL)
      rc = CL_ENOMEM;
  if (a->channels == NULL || rc != 0) {
    for (size_t i = 0; a->channels && i < nch; i++)
      free(a->channels[i]);
    free(a->channels);
    free(a->hosts);
    free(a->addrs);
    free(a->ports);
    cl_conn_free(&a->c);
    free(a);
    return CL_ENOMEM;
  }
  a->loop = loop;
  if (hooks)
    a->hooks = *hooks;
  a->arg = arg;
  a->poll_fd = -1;
  uv_timer_init(loop, &a->timer);
  a->timer.data = a;
  a->handles_open = 1;
  *out = a;
  return 0;
}

void cl__loop_conn_start(cl__loop_conn_t *a) {
  if (a->state == IDLE)
    begin_connect(a);
}

int cl__loop_conn_send(cl__loop_conn_t *a, cl__stmt_id_t id,
                       const char *const *params, cl__loop_conn_cb cb,
                       void *arg) {
  if (a->state == CLOSED || a->state == GAVE_UP)
    return CL_EINVAL;
  int n = cl__stmts[id].nparams;
  size_t size = (size_t)(n + 1) * sizeof(char *);
  for (int i = 0; i < n; i++)
    size += params[i] ? strlen(params[i]) + 1 : 0;
  req_t *r = calloc(1, sizeof *r);
  char **pp = malloc(size);
  if (r == NULL || pp == NULL) {
    free(r);
    free(pp);
    return CL_ENOMEM;
  }
  char *s = (char *)(pp + n + 1);
  for (int i = 0; i < n; i++) {
    if (params[i] == NULL) {
      pp[i] = NULL;
      continue;
    }
    size_t len = strlen(params[i]) + 1;
    memcpy(s, params[i], len);
    pp[i] = s;
    s += len;
  }
  pp[n] = NULL;
  r->kind = REQ_STMT;
  r->id = id;
  r->params = pp;
  r->cb = cb;
  r->arg = arg;
  q_push(&a->queued, r);
  if (a->state == UP)
    pump(a);
  return 0;
}

int cl__loop_conn_is_up(const cl__loop_conn_t *a) { return a->state == UP; }

size_t cl__loop_conn_pending(const cl__loop_conn_t *a) {
  /* The caller's requests only: not the prepares and LISTENs we add. */
  size_t n = 0;
  for (const req_t *r = a->queued.head; r; r = r->next)
    n += r->kind == REQ_STMT;
  for (const req_t *r = a->sent.head; r; r = r->next)
    n += r->kind == REQ_STMT;
  return n;
}

const char *cl__loop_conn_error(const cl__loop_conn_t *a) {
  return a->c->error;
}

uint64_t cl__loop_conn_connect_timeout_ms(const cl__loop_conn_t *a) {
  return a->connect_timeout_ms;
}

const char *cl__loop_conn_dsn_redacted(const cl__loop_conn_t *a) {
  return cl_conn_dsn_redacted(a->c);
}

void cl__loop_conn_close(cl__loop_conn_t *a, void (*closed_cb)(void *),
                         void *arg) {
  if (a->state == CLOSED)
    return;
  a->state = CLOSED;
  a->closed_cb = closed_cb;
  a->closed_arg = arg;
  a->hooks.up = NULL;
  a->hooks.down = NULL;
  a->hooks.notify = NULL;
  poll_drop(a);
  uv_timer_stop(&a->timer);
  if (a->c->pg != NULL) {
    PQfinish(a->c->pg);
    a->c->pg = NULL;
  }
  cl__set_error(a->c, "08006", "connection closed");
  for (req_t *r; (r = q_pop(&a->sent)) != NULL;)
    req_answer(r, CL_ECONNLOST);
  for (req_t *r; (r = q_pop(&a->queued)) != NULL;)
    req_answer(r, CL_ECONNLOST);
  uv_close((uv_handle_t *)&a->timer, on_timer_closed);
}
