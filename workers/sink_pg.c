/*
 * sink_pg.c: the PostgreSQL sink (see sink_pg.h).  Each delivery is one
 * job in libuv's thread pool: it takes a free connection of the pool,
 * runs BEGIN, the inbox insert (ON CONFLICT DO NOTHING), the user's
 * statement only when the insert took, and COMMIT; the answer goes back
 * to the loop in the job's after-callback, which reports the outcome.  A
 * failure rolls the transaction back, so nothing happened and the
 * delivery is simply tried again; a COMMIT whose answer was lost may have
 * committed, and then the retry finds the key in the inbox and skips.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"
#include "sink_pg.h"

enum { POOL_MAX = 16, ERR_MAX = 600 };

/* Parameter types of the user's statement: text, text, jsonb, jsonb,
 * text, text, int4 (OIDs from pg_type). */
static const Oid stmt_types[7] = {25, 25, 3802, 3802, 25, 25, 23};

struct pgsink {
  uv_loop_t *loop;
  char *dsn, *sql;
  PGconn *conns[POOL_MAX];
  int free_[POOL_MAX]; /* a stack of free connection indexes */
  int nfree, nconns;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  long repeats;
  int same_db; /* the mark commits with the effect */
};

typedef struct job {
  uv_work_t work;
  pgsink_t *p;
  cl_send_t *send;
  char *params[7];
  char *token;
  int ok, repeat;
  char error[ERR_MAX];
} job_t;

/* libpq's messages carry no password; they only need to be one line. */
static void one_line(char *msg) {
  for (char *c = msg; *c; c++)
    if (*c == '\n' || *c == '\r')
      *c = ' ';
}

/* The target's notices ("schema already exists, skipping" at a second
 * sink-setup, a RAISE NOTICE in the user's statement) are not ours to
 * print: libpq's default writes them raw to stderr. */
static void quiet(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static PGconn *connect_target(const char *dsn, char *err, size_t n) {
  PGconn *c = PQconnectdb(dsn);
  if (PQstatus(c) != CONNECTION_OK) {
    snprintf(err, n, "pg sink: cannot connect to the target: %s",
             PQerrorMessage(c));
    one_line(err);
    PQfinish(c);
    return NULL;
  }
  PQsetNoticeProcessor(c, quiet, NULL);
  return c;
}

static int exec_ok(PGconn *c, const char *sql, char *err, size_t n) {
  PGresult *r = PQexec(c, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
           PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) {
    snprintf(err, n, "%s", PQresultErrorMessage(r));
    one_line(err);
  }
  PQclear(r);
  return ok;
}

int pgsink_setup(const char *dsn, char *err, size_t errlen) {
  PGconn *c = connect_target(dsn, err, errlen);
  if (c == NULL)
    return CL_ECONNECT;
  int ok = exec_ok(c,
                   "CREATE SCHEMA IF NOT EXISTS claimer_sink;"
                   "CREATE TABLE IF NOT EXISTS claimer_sink.inbox ("
                   "  subscriber      text        NOT NULL,"
                   "  idempotency_key text        NOT NULL,"
                   "  item_id         text        NOT NULL,"
                   "  received_at     timestamptz NOT NULL DEFAULT now(),"
                   "  PRIMARY KEY (subscriber, idempotency_key))",
                   err, errlen);
  PQfinish(c);
  return ok ? 0 : CL_EDB;
}

int pgsink_open(pgsink_t **out, uv_loop_t *loop, const char *dsn,
                const char *sql, int nconns, int same_db, char *err,
                size_t errlen) {
  *out = NULL;
  pgsink_t *p = calloc(1, sizeof *p);
  if (p == NULL)
    return CL_ENOMEM;
  p->loop = loop;
  p->same_db = same_db;
  p->dsn = strdup(dsn);
  p->sql = strdup(sql);
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->cond, NULL);
  int rc = p->dsn && p->sql ? 0 : CL_ENOMEM;
  if (nconns < 1)
    nconns = 1;
  if (nconns > POOL_MAX)
    nconns = POOL_MAX;
  for (int i = 0; rc == 0 && i < nconns; i++) {
    PGconn *c = connect_target(dsn, err, errlen);
    if (c == NULL) {
      rc = CL_ECONNECT;
      break;
    }
    p->conns[p->nconns] = c;
    p->free_[p->nfree++] = p->nconns++;
    if (i > 0)
      continue;
    /* Checked once, on the first connection: the inbox, the statement. */
    char why[ERR_MAX];
    if (!exec_ok(c, "SELECT 1 FROM claimer_sink.inbox LIMIT 0", why,
                 sizeof why)) {
      snprintf(err, errlen,
               "pg sink: the target has no inbox (run `claimer sink-setup "
               "--target DSN` first): %s",
               why);
      rc = CL_EINVAL;
    }
  }
  for (int i = 0; rc == 0 && i < p->nconns; i++) {
    PGresult *r = PQprepare(p->conns[i], "claimer_sink", sql, 7, stmt_types);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      snprintf(err, errlen, "pg sink: the statement does not prepare: %s",
               PQresultErrorMessage(r));
      one_line(err);
      rc = CL_EINVAL;
    }
    PQclear(r);
  }
  if (rc != 0) {
    pgsink_close(&p);
    return rc;
  }
  *out = p;
  return 0;
}

static int take_conn(pgsink_t *p) {
  pthread_mutex_lock(&p->lock);
  while (p->nfree == 0)
    pthread_cond_wait(&p->cond, &p->lock);
  int i = p->free_[--p->nfree];
  pthread_mutex_unlock(&p->lock);
  return i;
}

static void give_conn(pgsink_t *p, int i) {
  pthread_mutex_lock(&p->lock);
  p->free_[p->nfree++] = i;
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->lock);
}

/* On a thread of the pool: the delivery's transaction. */
static void work(uv_work_t *w) {
  job_t *j = w->data;
  pgsink_t *p = j->p;
  int i = take_conn(p);
  PGconn *c = p->conns[i];
  if (PQstatus(c) != CONNECTION_OK) {
    PQreset(c);
    if (PQstatus(c) == CONNECTION_OK) {
      PGresult *r = PQprepare(c, "claimer_sink", p->sql, 7, stmt_types);
      PQclear(r);
    }
  }
  char why[ERR_MAX] = "";
  int ok = exec_ok(c, "BEGIN", why, sizeof why);
  if (ok) {
    const char *inbox[] = {j->params[5], j->params[4], j->params[0]};
    PGresult *r = PQexecParams(
        c,
        "INSERT INTO claimer_sink.inbox (subscriber, idempotency_key, "
        "item_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        3, NULL, inbox, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
      snprintf(why, sizeof why, "%s", PQresultErrorMessage(r));
    j->repeat = ok && strcmp(PQcmdTuples(r), "0") == 0;
    PQclear(r);
  }
  if (ok && !j->repeat) {
    PGresult *r = PQexecPrepared(c, "claimer_sink", 7,
                                 (const char *const *)j->params, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
         PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
      snprintf(why, sizeof why, "%s", PQresultErrorMessage(r));
    PQclear(r);
  }
  if (ok && p->same_db) {
    /* The mark, fenced by the token, in the same transaction (also for a
     * repeat: the delivery is sent either way). */
    const char *mark[] = {j->params[5], j->params[0], j->token};
    PGresult *r =
        PQexecParams(c, "SELECT state FROM claimer.delivery_sent($1, $2, $3)",
                     3, NULL, mark, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (!ok)
      snprintf(why, sizeof why, "%s",
               PQresultStatus(r) == PGRES_TUPLES_OK
                   ? "the token no longer holds the delivery: rolled back"
                   : PQresultErrorMessage(r));
    PQclear(r);
  }
  if (ok)
    ok = exec_ok(c, "COMMIT", why, sizeof why);
  else if (PQstatus(c) == CONNECTION_OK)
    exec_ok(c, "ROLLBACK", why + strlen(why), sizeof why - strlen(why));
  give_conn(p, i);
  j->ok = ok;
  if (!ok) {
    snprintf(j->error, sizeof j->error, "pg sink: %s", why);
    one_line(j->error);
  }
}

/* Back on the loop: the report. */
static void after(uv_work_t *w, int status) {
  job_t *j = w->data;
  if (j->ok && j->repeat) {
    /* One line per repeat, so that a daemon's count survives its kill. */
    j->p->repeats++;
    cl_log(CL_LEVEL_INFO, "repeat_skipped", "subscriber",
           cl_send_subscriber(j->send), "item", cl_send_item_id(j->send), "key",
           cl_send_key(j->send), "by", "the target's inbox", NULL);
  }
  if (status != 0)
    cl_send_done(j->send, CL_SEND_RETRY, "pg sink: cancelled", -1);
  else if (j->ok)
    cl_send_done(j->send, CL_SEND_OK, NULL, 0);
  else
    cl_send_done(j->send, CL_SEND_RETRY, j->error, -1);
  for (int i = 0; i < 7; i++)
    free(j->params[i]);
  free(j->token);
  free(j);
}

void pgsink_send(pgsink_t *p, cl_send_t *send) {
  job_t *j = calloc(1, sizeof *j);
  char attempt[16];
  snprintf(attempt, sizeof attempt, "%d", cl_send_attempt(send));
  const char *v[7] = {cl_send_item_id(send),
                      cl_send_queue(send),
                      cl_send_result(send),
                      cl_send_payload(send),
                      cl_send_key(send),
                      cl_send_subscriber(send),
                      attempt};
  int ok = j != NULL;
  for (int i = 0; ok && i < 7; i++)
    ok = (j->params[i] = strdup(v[i])) != NULL;
  if (ok)
    ok = (j->token = strdup(cl_send_token(send))) != NULL;
  if (ok) {
    j->p = p;
    j->send = send;
    j->work.data = j;
    ok = uv_queue_work(p->loop, &j->work, work, after) == 0;
  }
  if (!ok) {
    for (int i = 0; j != NULL && i < 7; i++)
      free(j->params[i]);
    if (j != NULL)
      free(j->token);
    free(j);
    cl_send_done(send, CL_SEND_RETRY, "pg sink: out of memory", -1);
  }
}

long pgsink_repeats(const pgsink_t *p) { return p->repeats; }

void pgsink_close(pgsink_t **pp) {
  pgsink_t *p = *pp;
  if (p == NULL)
    return;
  for (int i = 0; i < p->nconns; i++)
    PQfinish(p->conns[i]);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->cond);
  free(p->dsn);
  free(p->sql);
  free(p);
  *pp = NULL;
}
