/*
 * protocol.c: the claim protocol as blocking calls, one statement each (see
 * sql.c for the statements and why they are shaped so).  Each call builds
 * its parameters, runs the statement through cl__exec(), and hands the
 * result to a parser of its own; the parsers are shared with drivers that
 * run the same statements on an event loop.
 *
 * complete, fail and release are safe to send twice with the same token,
 * so after a lost connection they reconnect and send again: the statement
 * itself reads back what the first send did, and a settling read answers
 * what it cannot see (G9).  What to do after a lost connection or a
 * database error is not decided here but by the policy of ack.h, which
 * the worker on the loop follows too.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ack.h"
#include "internal.h"
#include "protocol.h"
#include "text.h"

/* ------------------------------------------------------------------------ */
/* A growable text buffer for array parameters.                             */

typedef struct buf {
  char *p;
  size_t len, cap;
  int oom;
} buf_t;

static void buf_grow(buf_t *b, size_t extra) {
  if (b->oom || b->len + extra + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (p == NULL) {
    b->oom = 1;
    return;
  }
  b->p = p;
  b->cap = cap;
}

static void buf_add(buf_t *b, const char *s, size_t n) {
  buf_grow(b, n);
  if (b->oom)
    return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

/* Appends s as one element of a PostgreSQL array literal: NULL as NULL,
 * anything else double-quoted with '"' and '\' escaped.  The literal goes
 * out as a bound parameter, so this is about array syntax, not SQL. */
static void buf_array_elem(buf_t *b, const char *s, int first) {
  if (!first)
    buf_add(b, ",", 1);
  if (s == NULL) {
    buf_add(b, "NULL", 4);
    return;
  }
  buf_add(b, "\"", 1);
  for (const char *p = s; *p; p++) {
    const char *run = p;
    while (*p && *p != '"' && *p != '\\')
      p++;
    buf_add(b, run, (size_t)(p - run));
    if (*p == '\0')
      break;
    char esc[2] = {'\\', *p};
    buf_add(b, esc, 2);
  }
  buf_add(b, "\"", 1);
}

char *cl__array_literal(const char *const *elems, size_t n) {
  buf_t b = {0};
  buf_add(&b, "{", 1);
  for (size_t i = 0; i < n; i++)
    buf_array_elem(&b, elems[i], i == 0);
  buf_add(&b, "}", 1);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

/* ------------------------------------------------------------------------ */
/* Enqueue                                                                   */

static int check_items(cl_conn_t *c, const cl_item_t *items, size_t n) {
  char why[512];
  for (size_t i = 0; i < n; i++) {
    const cl_item_t *it = &items[i];
    int rc = 0;
    if (it->item_id == NULL) {
      snprintf(why, sizeof why, "item id is missing");
      rc = CL_EINVAL;
    }
    if (rc == 0)
      rc = cl_check_item_id(it->item_id, why, sizeof why);
    if (rc == 0)
      rc = cl_check_queue(it->queue ? it->queue : "", why, sizeof why);
    if (rc == 0 && it->payload != NULL)
      rc = cl_check_json(it->payload, strlen(it->payload), why, sizeof why);
    if (rc == 0 && (it->max_attempts < 0 || it->max_attempts > 1000000)) {
      snprintf(why, sizeof why, "max attempts %d is out of range 1..1000000",
               it->max_attempts);
      rc = CL_EINVAL;
    }
    if (rc == 0 &&
        (!isfinite(it->run_in) || it->run_in < 0 || it->run_in > 3.2e9)) {
      snprintf(why, sizeof why, "run_in %g is not a number of seconds >= 0",
               it->run_in);
      rc = CL_EINVAL;
    }
    if (rc != 0) {
      cl__set_error(c, NULL, "item %zu: %s", i + 1, why);
      return rc;
    }
  }
  return 0;
}

int cl__parse_enqueue(PGresult *r, size_t n, int *outcome) {
  if (outcome != NULL)
    for (size_t i = 0; i < n; i++)
      outcome[i] = CL_ENQ_EXISTED;
  int created = PQntuples(r);
  for (int row = 0; row < created && outcome != NULL; row++) {
    long ord = atol(PQgetvalue(r, row, 0));
    if (ord >= 1 && (size_t)ord <= n)
      outcome[ord - 1] = CL_ENQ_CREATED;
  }
  return created;
}

int cl_enqueue(cl_conn_t *c, const cl_item_t *items, size_t n, int *outcome) {
  if (n == 0)
    return 0;
  int rc = check_items(c, items, n);
  if (rc != 0)
    return rc;
  buf_t arr[6] = {{0}};
  for (int k = 0; k < 6; k++)
    buf_add(&arr[k], "{", 1);
  char num[64];
  for (size_t i = 0; i < n; i++) {
    const cl_item_t *it = &items[i];
    buf_array_elem(&arr[0], it->item_id, i == 0);
    buf_array_elem(&arr[1], it->queue, i == 0);
    buf_array_elem(&arr[2], it->payload, i == 0);
    snprintf(num, sizeof num, "%d", it->priority);
    buf_array_elem(&arr[3], num, i == 0);
    /* 0: the queue's policy decides (claimer.queue_max_attempts). */
    snprintf(num, sizeof num, "%d", it->max_attempts);
    buf_array_elem(&arr[4], num, i == 0);
    cl__fmt_double(num, sizeof num, it->run_in);
    buf_array_elem(&arr[5], num, i == 0);
  }
  int oom = 0;
  for (int k = 0; k < 6; k++) {
    buf_add(&arr[k], "}", 1);
    oom |= arr[k].oom;
  }
  if (oom) {
    rc = CL_ENOMEM;
  } else {
    const char *params[6] = {arr[0].p, arr[1].p, arr[2].p,
                             arr[3].p, arr[4].p, arr[5].p};
    PGresult *r = NULL;
    rc = cl__exec(c, CL__STMT_ENQUEUE, params, &r);
    if (rc == 0) {
      rc = cl__parse_enqueue(r, n, outcome);
      PQclear(r);
    }
  }
  for (int k = 0; k < 6; k++)
    free(arr[k].p);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Claim                                                                     */

void cl_leases_free(cl_lease_t *leases, size_t count) {
  if (leases == NULL)
    return;
  for (size_t i = 0; i < count; i++) {
    free(leases[i].item_id);
    free(leases[i].queue);
    free(leases[i].token);
    free(leases[i].payload);
    free(leases[i].lease_until);
  }
  free(leases);
}

int cl__parse_claim(PGresult *r, const char *queue, cl_lease_t **leases,
                    size_t *count) {
  return cl__parse_claim_rows(r, 0, 0, queue, leases, count);
}

int cl__complete_claim_ok(const PGresult *r, int m) {
  int rows = PQntuples(r);
  if (rows < m || PQnfields(r) != 7)
    return 0;
  return (m == 0 || !PQgetisnull(r, m - 1, 0)) &&
         (rows == m || PQgetisnull(r, m, 0));
}

int cl__parse_claim_rows(PGresult *r, int row0, int col0, const char *queue,
                         cl_lease_t **leases, size_t *count) {
  int n = PQntuples(r) - row0;
  *leases = NULL;
  *count = 0;
  if (n <= 0)
    return 0;
  cl_lease_t *out = calloc((size_t)n, sizeof *out);
  if (out == NULL)
    return CL_ENOMEM;
  int oom = 0;
  for (int i = 0; i < n; i++) {
    int row = row0 + i;
    out[i].item_id = cl__strdup(PQgetvalue(r, row, col0));
    out[i].token = cl__strdup(PQgetvalue(r, row, col0 + 1));
    out[i].attempt = atoi(PQgetvalue(r, row, col0 + 2));
    out[i].max_attempts = atoi(PQgetvalue(r, row, col0 + 3));
    out[i].payload = cl__strdup(PQgetvalue(r, row, col0 + 4));
    out[i].lease_until = cl__strdup(PQgetvalue(r, row, col0 + 5));
    out[i].queue = cl__strdup(queue);
    oom |= !out[i].item_id || !out[i].token || !out[i].payload ||
           !out[i].lease_until || !out[i].queue;
  }
  if (oom) {
    cl_leases_free(out, (size_t)n);
    return CL_ENOMEM;
  }
  *leases = out;
  *count = (size_t)n;
  return 0;
}

static int check_lease_args(cl_conn_t *c, double lease_s) {
  if (!isfinite(lease_s) || lease_s <= 0 || lease_s > 7 * 86400) {
    cl__set_error(c, NULL, "lease of %g seconds is out of range (0, 604800]",
                  lease_s);
    return CL_EINVAL;
  }
  return 0;
}

/* A claim's arguments, checked before anything is sent. */
static int check_claim_args(cl_conn_t *c, const char *queue, const char *worker,
                            int n, double lease_s) {
  char why[256];
  if (cl_check_queue(queue ? queue : "", why, sizeof why) != 0 ||
      cl_check_worker(worker ? worker : "", why, sizeof why) != 0) {
    cl__set_error(c, NULL, "%s", why);
    return CL_EINVAL;
  }
  if (n < 1 || n > 10000) {
    cl__set_error(c, NULL, "claim count %d is out of range 1..10000", n);
    return CL_EINVAL;
  }
  return check_lease_args(c, lease_s);
}

int cl_claim(cl_conn_t *c, const char *queue, const char *worker, int n,
             double lease_s, cl_lease_t **leases, size_t *count) {
  *leases = NULL;
  *count = 0;
  int rc = check_claim_args(c, queue, worker, n, lease_s);
  if (rc != 0)
    return rc;
  char nbuf[16], lbuf[64];
  snprintf(nbuf, sizeof nbuf, "%d", n);
  cl__fmt_double(lbuf, sizeof lbuf, lease_s);
  const char *params[] = {queue, nbuf, worker, lbuf};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_CLAIM, params, &r);
  if (rc != 0)
    return rc;
  rc = cl__parse_claim(r, queue, leases, count);
  PQclear(r);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Acknowledgement answers                                                   */

int cl__parse_complete(PGresult *r, cl_complete_info_t *info) {
  int completed = atoi(PQgetvalue(r, 0, 0));
  int exists = PQgetvalue(r, 0, 1)[0] == 't';
  if (completed == 1)
    return 0;
  if (exists) {
    info->already = 1;
    return 0;
  }
  return CL_ELEASE_LOST;
}

int cl__parse_fail(PGresult *r, cl_fail_info_t *info) {
  if (PQntuples(r) == 0)
    return CL_ELEASE_LOST;
  info->dead = strcmp(PQgetvalue(r, 0, 0), "dead") == 0;
  info->attempts = atoi(PQgetvalue(r, 0, 1));
  if (info->dead)
    info->retry_at[0] = '\0';
  else
    snprintf(info->retry_at, sizeof info->retry_at, "%s", PQgetvalue(r, 0, 2));
  info->already = PQgetvalue(r, 0, 3)[0] == 't';
  return 0;
}

cl__ack_got_t cl__parse_ack(const cl__ack_t *a, int rc, PGresult *res,
                            cl_fail_info_t *fail) {
  if (rc == CL_ECONNLOST || rc == CL_ECONNECT)
    return CL__ACK_GOT_CONN_LOST;
  if (rc != 0)
    return CL__ACK_GOT_DB_ERROR;
  switch (cl__ack_stmt(a)) {
  case CL__STMT_COMPLETE: {
    cl_complete_info_t info = {0};
    if (cl__parse_complete(res, &info) != 0)
      return CL__ACK_GOT_NO_CLAIM;
    return info.already ? CL__ACK_GOT_ALREADY : CL__ACK_GOT_OK;
  }
  case CL__STMT_COMPLETE_CHECK:
    return PQntuples(res) > 0 ? CL__ACK_GOT_ALREADY : CL__ACK_GOT_NO_CLAIM;
  case CL__STMT_FAIL:
  case CL__STMT_FAIL_CHECK: {
    cl_fail_info_t info = {0};
    if (cl__parse_fail(res, &info) != 0)
      return CL__ACK_GOT_NO_CLAIM;
    if (fail != NULL)
      *fail = info;
    return info.already ? CL__ACK_GOT_ALREADY : CL__ACK_GOT_OK;
  }
  default:
    return PQntuples(res) > 0 ? CL__ACK_GOT_OK : CL__ACK_GOT_NO_CLAIM;
  }
}

int cl__many_params(const char *const *col, size_t n, char *lit[3]) {
  for (int i = 0; i < 3; i++)
    lit[i] = cl__array_literal(col + (size_t)i * n, n);
  if (lit[0] != NULL && lit[1] != NULL && lit[2] != NULL)
    return 0;
  for (int i = 0; i < 3; i++) {
    free(lit[i]);
    lit[i] = NULL;
  }
  return CL_ENOMEM;
}

cl__ack_got_t cl__parse_many_row(const PGresult *res, int i) {
  const char *v = PQgetvalue(res, i, 0);
  if (strcmp(v, "ok") == 0)
    return CL__ACK_GOT_OK;
  if (strcmp(v, "already") == 0)
    return CL__ACK_GOT_ALREADY;
  return CL__ACK_GOT_NO_CLAIM;
}

/* ------------------------------------------------------------------------ */
/* Acknowledgements, settled by the policy of ack.h                          */

int cl__reconnect_backoff(cl_conn_t *c, long *delay_ms) {
  long ms = *delay_ms;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
  *delay_ms = ms * 2 > 4000 ? 4000 : ms * 2;
  return cl_conn_reset(c) == CL_EAUTH ? CL_EAUTH : 0;
}

/* One acknowledgement on a blocking connection. */
typedef struct ack_call {
  cl__ack_t st;
  const char *item_id, *token;
  const char *result; /* complete's result (borrowed; NULL for null) */
  char *error;        /* the fail's error text as sent (owned) */
  int retry;
  double retry_in;
  cl_fail_info_t fail;   /* the last fail answer that found the item */
  char refused[512];     /* the database's first refusal (TO_FAIL or
                            STAND_IN) */
  char refused_state[6]; /* and its SQLSTATE */
} ack_call_t;

/* Sends the statement k's state names.  Returns as cl__exec. */
static int ack_send(cl_conn_t *c, ack_call_t *k, PGresult **res) {
  cl__stmt_id_t id = cl__ack_stmt(&k->st);
  const char *params[5] = {k->item_id, k->token};
  char rbuf[64];
  if (id == CL__STMT_COMPLETE) {
    params[2] = k->result;
  } else if (id == CL__STMT_FAIL) {
    cl__fmt_double(rbuf, sizeof rbuf, k->retry_in < 0 ? -1.0 : k->retry_in);
    params[2] = k->error ? k->error : "";
    params[3] = k->retry ? "true" : "false";
    params[4] = rbuf;
  }
  return cl__exec(c, id, params, res);
}

/* Drives k to the end of the policy: sends, and after a lost connection
 * reconnects (with backoff) and resends; settles; turns a refused
 * complete into a fail and a refused fail into its stand-in.  Returns 0
 * with the step that ended it in *end and the last statement's code in
 * *last, or a code that stops it before the policy could end it, with
 * the detail on c: CL_EAUTH (a refused password is not retried),
 * CL_ESCHEMA (no claimer schema: nothing about this item, and nothing a
 * fail in its place could record; the message says to migrate) or
 * CL_ENOMEM. */
static int ack_run(cl_conn_t *c, ack_call_t *k, cl__ack_step_t *end,
                   int *last) {
  long delay = 100;
  for (;;) {
    PGresult *res = NULL;
    int rc = ack_send(c, k, &res);
    if (rc == CL_EAUTH || rc == CL_ESCHEMA || rc == CL_ENOMEM)
      return rc;
    cl__ack_got_t got = cl__parse_ack(&k->st, rc, res, &k->fail);
    PQclear(res);
    *last = rc;
    cl__ack_step_t step = cl__ack_step(&k->st, got);
    switch (step) {
    case CL__ACK_RESEND:
      if (got != CL__ACK_GOT_CONN_LOST)
        break; /* a deadlock or a timeout: at once, on the same session */
      /* Something may have been sent: the outcome is unknown, not
       * "cannot connect". */
      if (cl__reconnect_backoff(c, &delay) == CL_EAUTH)
        return CL_EAUTH;
      break;
    case CL__ACK_SETTLE:
      break;
    case CL__ACK_TO_FAIL:
    case CL__ACK_STAND_IN: {
      /* The first refusal is the one the caller asked about: a complete
       * turned fail keeps the result's, not its stand-in's. */
      if (k->refused[0] == '\0') {
        snprintf(k->refused, sizeof k->refused, "%s", cl_conn_last_error(c));
        snprintf(k->refused_state, sizeof k->refused_state, "%s",
                 cl_conn_last_sqlstate(c));
      }
      char *e = cl__ack_error_text(step, cl_conn_last_error(c));
      if (e == NULL)
        return CL_ENOMEM;
      free(k->error);
      k->error = e;
      if (step == CL__ACK_TO_FAIL) {
        k->retry = 1;
        k->retry_in = -1;
      }
      break;
    }
    default:
      *end = step;
      return 0;
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Complete, fail, release                                                   */

/* Tokens are 16 hex digits, '-', 16 hex digits (see claimer.new_token()). */
static int check_token(cl_conn_t *c, const char *item_id, const char *token) {
  char why[256];
  if (cl_check_item_id(item_id ? item_id : "", why, sizeof why) != 0) {
    cl__set_error(c, NULL, "%s", why);
    return CL_EINVAL;
  }
  int ok = token != NULL && strlen(token) == 33 && token[16] == '-';
  for (int i = 0; ok && i < 33; i++)
    if (i != 16 && !strchr("0123456789abcdef", token[i]))
      ok = 0;
  if (!ok) {
    cl__set_error(c, NULL,
                  "token is not a claimer token (16 hex digits, '-', 16 hex "
                  "digits)");
    return CL_EINVAL;
  }
  return 0;
}

/* What became of an item whose failure was recorded, for messages. */
static void fail_fate(char *buf, size_t n, const cl_fail_info_t *fi) {
  if (fi->dead)
    snprintf(buf, n, "dead after %d attempt%s", fi->attempts,
             fi->attempts == 1 ? "" : "s");
  else
    snprintf(buf, n, "ready again at %s", fi->retry_at);
}

/* What cl_complete() returns for k, whose policy ended at end with last
 * the code of its last statement; the messages on c.  Shared with
 * cl_complete_many(). */
static int complete_end(cl_conn_t *c, const ack_call_t *k, cl__ack_step_t end,
                        int last, cl_complete_info_t *info) {
  const char *item_id = k->item_id, *token = k->token;
  info->retries = k->st.resends;
  char fate[96];
  switch (end) {
  case CL__ACK_DONE:
  case CL__ACK_ALREADY_DONE:
    if (!k->st.converted) {
      info->already = end == CL__ACK_ALREADY_DONE;
      return 0;
    }
    /* The complete did not happen: an error, though the attempt is now
     * ended (ack.h says why a refused complete becomes a fail). */
    fail_fate(fate, sizeof fate, &k->fail);
    cl__set_error(c, k->refused_state,
                  "the result could not be stored: %s; the attempt was "
                  "recorded as failed instead (item %s is %s)",
                  k->refused, item_id, fate);
    return CL_EDB;
  case CL__ACK_LEASE_LOST:
    cl__set_error(c, NULL,
                  "lease lost: token %s no longer holds item %s (it expired "
                  "and was reaped, or the item was completed by another "
                  "lease); nothing was written%s%s",
                  token, item_id,
                  k->st.converted ? "; the result had been refused: " : "",
                  k->st.converted ? k->refused : "");
    return CL_ELEASE_LOST;
  case CL__ACK_GIVE_UP:
    if (k->st.converted) {
      char last_error[512];
      snprintf(last_error, sizeof last_error, "%s", cl_conn_last_error(c));
      cl__set_error(c, k->refused_state,
                    "the result could not be stored (%s), nor a failure in "
                    "its place (%s); the lease is left to expire",
                    k->refused, last_error);
    }
    return last;
  default:
    /* UNSETTLED: the connection stayed down; the last failure says so. */
    return CL_ECONNLOST;
  }
}

/* A complete's arguments: a token of this item's form, a result that is
 * JSON (or NULL).  Returns 0, or CL_EINVAL / CL_EJSON with the message on
 * c. */
static int check_complete(cl_conn_t *c, const char *item_id, const char *token,
                          const char *result) {
  int rc = check_token(c, item_id, token);
  if (rc != 0 || result == NULL)
    return rc;
  char why[256];
  rc = cl_check_json(result, strlen(result), why, sizeof why);
  if (rc != 0)
    cl__set_error(c, NULL, "result: %s", why);
  return rc;
}

int cl_complete(cl_conn_t *c, const char *item_id, const char *token,
                const char *result, cl_complete_info_t *info) {
  cl_complete_info_t local;
  if (info == NULL)
    info = &local;
  memset(info, 0, sizeof *info);
  int rc = check_complete(c, item_id, token, result);
  if (rc != 0)
    return rc;
  ack_call_t k = {.item_id = item_id, .token = token, .result = result};
  cl__ack_init(&k.st, CL__ACK_COMPLETE, CL__RESEND_LIMIT);
  cl__ack_step_t end = CL__ACK_GIVE_UP;
  int last = 0;
  rc = ack_run(c, &k, &end, &last);
  free(k.error);
  info->retries = k.st.resends;
  if (rc != 0)
    return rc;
  return complete_end(c, &k, end, last, info);
}

/* cl_complete_many()'s items: where each stands. */
enum { MANY_BATCH, MANY_SOLO, MANY_ENDED };

/* The claim cl_complete_many_claim() sends with its completes. */
typedef struct many_claim {
  const char *queue, *worker;
  int n;
  double lease_s;
} many_claim_t;

/* One COMPLETE_MANY of the items of k marked MANY_BATCH (idx[0..m) their
 * indexes), or with w a COMPLETE_CLAIM of them and w's claim.  Returns as
 * cl__exec(), with the answer in *res. */
static int many_send(cl_conn_t *c, const ack_call_t *k, const size_t *idx,
                     size_t m, const many_claim_t *w, PGresult **res) {
  const char **col = malloc(3 * m * sizeof *col);
  char *lit[3] = {NULL, NULL, NULL};
  int rc = CL_ENOMEM;
  if (col != NULL) {
    for (size_t j = 0; j < m; j++) {
      col[j] = k[idx[j]].item_id;
      col[m + j] = k[idx[j]].token;
      col[2 * m + j] = k[idx[j]].result;
    }
    rc = cl__many_params(col, m, lit);
    if (rc == 0 && w == NULL)
      rc = cl__exec(c, CL__STMT_COMPLETE_MANY, (const char *const *)lit, res);
    else if (rc == 0) {
      char nbuf[16], lbuf[64];
      snprintf(nbuf, sizeof nbuf, "%d", w->n);
      cl__fmt_double(lbuf, sizeof lbuf, w->lease_s);
      const char *params[] = {lit[0], lit[1],    lit[2], w->queue,
                              nbuf,   w->worker, lbuf};
      rc = cl__exec(c, CL__STMT_COMPLETE_CLAIM, params, res);
    }
  }
  for (int i = 0; i < 3; i++)
    free(lit[i]);
  free(col);
  return rc;
}

static int complete_many_run(cl_conn_t *c, const cl_done_t *items, size_t n,
                             int *rcs, cl_complete_info_t *infos,
                             const many_claim_t *w, cl_lease_t **leases,
                             size_t *count);

int cl_complete_many(cl_conn_t *c, const cl_done_t *items, size_t n, int *rcs,
                     cl_complete_info_t *infos) {
  return complete_many_run(c, items, n, rcs, infos, NULL, NULL, NULL);
}

int cl_complete_many_claim(cl_conn_t *c, const cl_done_t *items, size_t n,
                           int *rcs, cl_complete_info_t *infos,
                           const char *queue, const char *worker, int want,
                           double lease_s, cl_lease_t **leases, size_t *count) {
  *leases = NULL;
  *count = 0;
  int rc = check_claim_args(c, queue, worker, want, lease_s);
  if (rc != 0)
    return rc;
  many_claim_t w = {queue, worker, want, lease_s};
  return complete_many_run(c, items, n, rcs, infos, &w, leases, count);
}

/* cl_complete_many(), and with w cl_complete_many_claim(): the claim
 * rides on the first send of the batch; when that send does not come
 * back whole (a lost connection, a database error), the completes go on
 * as cl_complete_many()'s do and the claim is sent alone after them. */
static int complete_many_run(cl_conn_t *c, const cl_done_t *items, size_t n,
                             int *rcs, cl_complete_info_t *infos,
                             const many_claim_t *w, cl_lease_t **leases,
                             size_t *count) {
  if (n == 0)
    return w ? cl_claim(c, w->queue, w->worker, w->n, w->lease_s, leases, count)
             : 0;
  if (n > CL_COMPLETE_MANY_MAX || items == NULL || rcs == NULL) {
    cl__set_error(c, NULL, "complete count %zu is out of range 1..%d", n,
                  CL_COMPLETE_MANY_MAX);
    return CL_EINVAL;
  }
  if (infos != NULL)
    memset(infos, 0, n * sizeof *infos);
  /* Every item is checked before anything is sent. */
  for (size_t i = 0; i < n; i++) {
    int rc =
        check_complete(c, items[i].item_id, items[i].token, items[i].result);
    if (rc != 0) {
      char msg[600];
      snprintf(msg, sizeof msg, "%s", cl_conn_last_error(c));
      cl__set_error(c, NULL, "item %zu of %zu: %s; nothing was sent", i + 1, n,
                    msg);
      return rc;
    }
  }
  ack_call_t *k = calloc(n, sizeof *k);
  size_t *idx = malloc(n * sizeof *idx);
  unsigned char *where = calloc(n, 1);
  cl__ack_step_t *end = malloc(n * sizeof *end);
  int *last = calloc(n, sizeof *last);
  int rc = 0;
  if (k == NULL || idx == NULL || where == NULL || end == NULL ||
      last == NULL) {
    rc = CL_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    k[i].item_id = items[i].item_id;
    k[i].token = items[i].token;
    k[i].result = items[i].result;
    cl__ack_init(&k[i].st, CL__ACK_COMPLETE, CL__RESEND_LIMIT);
    end[i] = CL__ACK_GIVE_UP;
  }
  /* The batch, sent whole and again whole after a lost connection; every
   * answer steps each item's own policy (ack.h).  What a batch cannot do
   * goes on item by item below: the settling read, and everything after a
   * database error, which the batch does not count against any item (one
   * refused result must not turn its batch-mates into failures). */
  long delay = 100;
  enum {
    CLAIM_NONE,
    CLAIM_RIDES,
    CLAIM_DONE,
    CLAIM_ALONE
  } claim = w ? CLAIM_RIDES : CLAIM_NONE;
  int claim_rc = 0;
  for (;;) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if (where[i] == MANY_BATCH)
        idx[m++] = i;
    if (m == 0)
      break;
    PGresult *res = NULL;
    const many_claim_t *ride = claim == CLAIM_RIDES ? w : NULL;
    int src = many_send(c, k, idx, m, ride, &res);
    if (src == CL_EAUTH || src == CL_ESCHEMA || src == CL_ENOMEM) {
      PQclear(res);
      rc = src;
      goto out;
    }
    int lost = src == CL_ECONNLOST || src == CL_ECONNECT;
    int whole =
        ride ? cl__complete_claim_ok(res, (int)m) : PQntuples(res) == (int)m;
    if (ride != NULL) {
      claim = lost || src != 0 || !whole ? CLAIM_ALONE : CLAIM_DONE;
      if (claim == CLAIM_DONE)
        claim_rc =
            cl__parse_claim_rows(res, (int)m, 1, w->queue, leases, count);
    }
    if (!lost && (src != 0 || !whole)) {
      PQclear(res);
      for (size_t j = 0; j < m; j++)
        where[idx[j]] = MANY_SOLO;
      continue;
    }
    int again = 0;
    for (size_t j = 0; j < m; j++) {
      size_t i = idx[j];
      cl__ack_got_t got =
          lost ? CL__ACK_GOT_CONN_LOST : cl__parse_many_row(res, (int)j);
      cl__ack_step_t step = cl__ack_step(&k[i].st, got);
      last[i] = src;
      if (step == CL__ACK_RESEND)
        again = 1;
      else if (step == CL__ACK_SETTLE)
        where[i] = MANY_SOLO;
      else {
        end[i] = step;
        where[i] = MANY_ENDED;
      }
    }
    PQclear(res);
    if (again && lost && cl__reconnect_backoff(c, &delay) == CL_EAUTH) {
      rc = CL_EAUTH;
      goto out;
    }
  }
  for (size_t i = 0; i < n; i++) {
    if (where[i] != MANY_SOLO)
      continue;
    rc = ack_run(c, &k[i], &end[i], &last[i]);
    if (rc != 0)
      goto out;
    where[i] = MANY_ENDED;
  }
  for (size_t i = 0; i < n; i++) {
    cl_complete_info_t local = {0};
    rcs[i] = complete_end(c, &k[i], end[i], last[i],
                          infos != NULL ? &infos[i] : &local);
  }
  /* Every complete settled: the claim that could not ride goes alone. */
  if (claim == CLAIM_ALONE)
    claim_rc =
        cl_claim(c, w->queue, w->worker, w->n, w->lease_s, leases, count);
  rc = claim_rc;
out:
  if (rc != 0 && k != NULL && where != NULL)
    for (size_t i = 0; i < n; i++)
      if (where[i] != MANY_ENDED)
        rcs[i] = rc;
  if (k != NULL)
    for (size_t i = 0; i < n; i++)
      free(k[i].error);
  free(k);
  free(idx);
  free(where);
  free(end);
  free(last);
  return rc;
}

int cl_fail(cl_conn_t *c, const char *item_id, const char *token,
            const char *error, int retry, double retry_in,
            cl_fail_info_t *info) {
  cl_fail_info_t local;
  if (info == NULL)
    info = &local;
  memset(info, 0, sizeof *info);
  int rc = check_token(c, item_id, token);
  if (rc != 0)
    return rc;
  if (!isfinite(retry_in) || retry_in > 3.2e9) {
    cl__set_error(c, NULL, "retry delay %g is not a number of seconds",
                  retry_in);
    return CL_EINVAL;
  }
  /* Error texts come from handlers' stderr: keep them bounded and valid. */
  char *err = cl__clean_text(error, CL_ERROR_TEXT_MAX);
  if (err == NULL)
    return CL_ENOMEM;
  ack_call_t k = {.item_id = item_id,
                  .token = token,
                  .error = err,
                  .retry = retry,
                  .retry_in = retry_in};
  cl__ack_init(&k.st, CL__ACK_FAIL, CL__RESEND_LIMIT);
  cl__ack_step_t end = CL__ACK_GIVE_UP;
  int last = 0;
  rc = ack_run(c, &k, &end, &last);
  free(k.error);
  if (rc != 0)
    return rc;
  switch (end) {
  case CL__ACK_DONE:
  case CL__ACK_ALREADY_DONE:
    *info = k.fail;
    if (k.st.stand_in)
      /* A success, so nobody has to look; for whoever does. */
      cl__set_error(c, k.refused_state,
                    "the error text was refused (%s); the failure was "
                    "recorded with a stand-in",
                    k.refused);
    return 0;
  case CL__ACK_LEASE_LOST:
    cl__set_error(c, NULL,
                  "lease lost: token %s no longer holds item %s; nothing was "
                  "written",
                  token, item_id);
    return CL_ELEASE_LOST;
  case CL__ACK_GIVE_UP:
    return last;
  default:
    return CL_ECONNLOST;
  }
}

int cl_release(cl_conn_t *c, const char *item_id, const char *token) {
  int rc = check_token(c, item_id, token);
  if (rc != 0)
    return rc;
  ack_call_t k = {.item_id = item_id, .token = token};
  cl__ack_init(&k.st, CL__ACK_RELEASE, CL__RESEND_LIMIT);
  cl__ack_step_t end = CL__ACK_GIVE_UP;
  int last = 0;
  rc = ack_run(c, &k, &end, &last);
  if (rc != 0)
    return rc;
  switch (end) {
  case CL__ACK_DONE:
  case CL__ACK_ALREADY_DONE:
    return 0;
  case CL__ACK_LEASE_LOST:
    cl__set_error(c, NULL, "lease lost: token %s does not hold item %s%s",
                  token, item_id,
                  k.st.resends ? " (or an earlier try released it before the "
                                 "connection dropped)"
                               : "");
    return CL_ELEASE_LOST;
  case CL__ACK_GIVE_UP:
    return last;
  default:
    return CL_ECONNLOST;
  }
}

/* ------------------------------------------------------------------------ */
/* Heartbeat                                                                 */

void cl_held_free(cl_held_t *held, size_t count) {
  if (held == NULL)
    return;
  for (size_t i = 0; i < count; i++) {
    free(held[i].item_id);
    free(held[i].token);
    free(held[i].lease_until);
  }
  free(held);
}

int cl__parse_heartbeat(PGresult *r, cl_held_t **held, size_t *count) {
  int n = PQntuples(r);
  *held = NULL;
  *count = 0;
  if (n == 0)
    return 0;
  cl_held_t *out = calloc((size_t)n, sizeof *out);
  if (out == NULL)
    return CL_ENOMEM;
  int oom = 0;
  for (int i = 0; i < n; i++) {
    out[i].item_id = cl__strdup(PQgetvalue(r, i, 0));
    out[i].token = cl__strdup(PQgetvalue(r, i, 1));
    out[i].lease_until = cl__strdup(PQgetvalue(r, i, 2));
    oom |= !out[i].item_id || !out[i].token || !out[i].lease_until;
  }
  if (oom) {
    cl_held_free(out, (size_t)n);
    return CL_ENOMEM;
  }
  *held = out;
  *count = (size_t)n;
  return 0;
}

int cl_heartbeat(cl_conn_t *c, const char *worker, double lease_s,
                 cl_held_t **held, size_t *count) {
  char why[256];
  *held = NULL;
  *count = 0;
  if (cl_check_worker(worker ? worker : "", why, sizeof why) != 0) {
    cl__set_error(c, NULL, "%s", why);
    return CL_EINVAL;
  }
  int rc = check_lease_args(c, lease_s);
  if (rc != 0)
    return rc;
  char lbuf[64];
  cl__fmt_double(lbuf, sizeof lbuf, lease_s);
  const char *params[] = {worker, lbuf};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_HEARTBEAT, params, &r);
  if (rc != 0)
    return rc;
  rc = cl__parse_heartbeat(r, held, count);
  PQclear(r);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Reap                                                                      */

void cl__parse_reap(PGresult *r, cl_reap_info_t *info) {
  int n = PQntuples(r);
  for (int i = 0; i < n; i++) {
    info->expired++;
    if (strcmp(PQgetvalue(r, i, 2), "dead") == 0)
      info->dead++;
    else
      info->requeued++;
    info->alerts_expired += !PQgetisnull(r, i, 5);
    info->alerts_dead += !PQgetisnull(r, i, 6);
  }
}

int cl_reap(cl_conn_t *c, int limit, cl_reap_info_t *info) {
  if (limit < 1 || limit > 100000) {
    cl__set_error(c, NULL, "reap limit %d is out of range 1..100000", limit);
    return CL_EINVAL;
  }
  char lbuf[16];
  snprintf(lbuf, sizeof lbuf, "%d", limit);
  const char *params[] = {lbuf};
  PGresult *r = NULL;
  int rc = cl__exec(c, CL__STMT_REAP, params, &r);
  if (rc != 0)
    return rc;
  cl__parse_reap(r, info);
  PQclear(r);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Status                                                                    */

void cl_status_free(cl_queue_status_t *rows, size_t count) {
  if (rows == NULL)
    return;
  for (size_t i = 0; i < count; i++)
    free(rows[i].queue);
  free(rows);
}

int cl_status(cl_conn_t *c, cl_queue_status_t **rows, size_t *count) {
  *rows = NULL;
  *count = 0;
  PGresult *r = NULL;
  int rc = cl__exec(c, CL__STMT_STATUS, NULL, &r);
  if (rc != 0)
    return rc;
  int n = PQntuples(r);
  cl_queue_status_t *out = n ? calloc((size_t)n, sizeof *out) : NULL;
  if (n && out == NULL) {
    PQclear(r);
    return CL_ENOMEM;
  }
  for (int i = 0; i < n; i++) {
    out[i].queue = cl__strdup(PQgetvalue(r, i, 0));
    out[i].ready = atol(PQgetvalue(r, i, 1));
    out[i].scheduled = atol(PQgetvalue(r, i, 2));
    out[i].leased = atol(PQgetvalue(r, i, 3));
    out[i].done = atol(PQgetvalue(r, i, 4));
    out[i].dead = atol(PQgetvalue(r, i, 5));
    out[i].oldest_ready_s = atof(PQgetvalue(r, i, 6));
    out[i].stale = atol(PQgetvalue(r, i, 7));
    if (out[i].queue == NULL) {
      cl_status_free(out, (size_t)n);
      PQclear(r);
      return CL_ENOMEM;
    }
  }
  PQclear(r);
  *rows = out;
  *count = (size_t)n;
  return 0;
}
