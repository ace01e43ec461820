/*
 * deliver.c: the senders' side of the protocol as blocking calls:
 * subscribers (add, pause, remove, list) and deliveries (claim, sent,
 * fail).  The logic lives in the functions of schema/005_senders.sql,
 * one statement each; this file checks the input first (G8), runs the
 * statement, and after a lost connection sends a sent or a fail again
 * with the same token (G9): both read the delivery FOR UPDATE, so a
 * resend that waited on the first send's lock sees what it did and says
 * "already".  A delivery needs no settling read of its own.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "protocol.h"
#include "text.h"

static int check_sub(cl_conn_t *c, const char *name) {
  char why[256];
  if (cl_check_queue(name ? name : "", why, sizeof why) != 0) {
    cl__set_error(c, NULL, "subscriber name: %s", why);
    return CL_EINVAL;
  }
  return 0;
}

/* Runs id, sending it again after a lost connection (reconnecting with
 * backoff) or a transient database error.  Returns cl__exec()'s code. */
static int exec_resending(cl_conn_t *c, cl__stmt_id_t id,
                          const char *const *params, PGresult **res) {
  long delay = 100;
  int lost = 0, db = 0;
  for (;;) {
    int rc = cl__exec(c, id, params, res);
    /* The same limits as an item's acknowledgement (ack.h, protocol.h):
     * lost connections with backoff, database errors (a deadlock, a
     * timeout) at once. */
    if (rc == CL_ECONNLOST && lost++ < CL__RESEND_LIMIT) {
      if (cl__reconnect_backoff(c, &delay) == CL_EAUTH)
        return CL_EAUTH;
      continue;
    }
    if (rc == CL_EDB && db++ < CL__ACK_DB_RETRIES)
      continue;
    return rc;
  }
}

/* ------------------------------------------------------------------------ */
/* Subscribers                                                               */

/* The policy of o as the statements' parameters $2 (queues) to $9 of
 * SUB_ADD, after checking each field (a bad one: CL_EINVAL, message on c,
 * nothing sent).  p->queues is malloc'd (free it); from is checked only
 * when check_from. */
typedef struct sub_params {
  char *queues;
  char *backoff; /* an array literal, malloc'd; NULL: the default */
  const char *from, *in_doubt, *ordering;
  char maxa[16], brk[16], conc[16], rate[48];
} sub_params_t;

static int sub_params(cl_conn_t *c, const cl_subscriber_opts_t *o,
                      int check_from, sub_params_t *p) {
  memset(p, 0, sizeof *p);
  char why[256];
  for (size_t i = 0; i < o->nqueues; i++) {
    if (cl_check_queue(o->queues[i] ? o->queues[i] : "", why, sizeof why)) {
      cl__set_error(c, NULL, "queue: %s", why);
      return CL_EINVAL;
    }
  }
  p->from = o->from ? o->from : "now";
  if (check_from && strcmp(p->from, "now") != 0 &&
      strcmp(p->from, "beginning") != 0) {
    char *end = NULL;
    long long v = strtoll(p->from, &end, 10);
    if (end == p->from || *end != '\0' || v < 0) {
      cl__set_error(c, NULL,
                    "--from \"%.40s\" is not now, beginning or a position "
                    "(a whole number >= 0)",
                    p->from);
      return CL_EINVAL;
    }
  }
  p->in_doubt = o->in_doubt ? o->in_doubt : "retry";
  if (strcmp(p->in_doubt, "retry") != 0 && strcmp(p->in_doubt, "hold") != 0) {
    cl__set_error(c, NULL, "in-doubt policy \"%.40s\" is not retry or hold",
                  p->in_doubt);
    return CL_EINVAL;
  }
  p->ordering = o->ordering ? o->ordering : "none";
  if (strcmp(p->ordering, "none") != 0 && strcmp(p->ordering, "fifo") != 0) {
    cl__set_error(c, NULL, "ordering \"%.40s\" is not none or fifo",
                  p->ordering);
    return CL_EINVAL;
  }
  if (o->max_attempts < 0 || o->max_attempts > 1000) {
    cl__set_error(c, NULL, "max attempts %d is out of range [1, 1000]",
                  o->max_attempts);
    return CL_EINVAL;
  }
  if (o->concurrency < 0 || o->concurrency > 100000) {
    cl__set_error(c, NULL,
                  "concurrency %d is out of range [0 (no limit), 100000]",
                  o->concurrency);
    return CL_EINVAL;
  }
  if (!(o->rate >= 0 && o->rate <= 1000000)) {
    cl__set_error(c, NULL,
                  "rate %g per second is out of range [0 (no limit), "
                  "1000000]",
                  o->rate);
    return CL_EINVAL;
  }
  if (o->nbackoff > 50) {
    cl__set_error(c, NULL, "a retry schedule of %zu waits; at most 50",
                  o->nbackoff);
    return CL_EINVAL;
  }
  for (size_t i = 0; i < o->nbackoff; i++) {
    if (!(o->backoff_s[i] > 0 && o->backoff_s[i] <= 2678400)) {
      cl__set_error(c, NULL,
                    "retry wait %zu of the schedule (%g s) is out of range "
                    "(0, 31 days]",
                    i + 1, o->backoff_s[i]);
      return CL_EINVAL;
    }
  }
  if (o->nbackoff > 0) {
    size_t len = o->nbackoff * 48 + 3;
    if ((p->backoff = malloc(len)) == NULL)
      return CL_ENOMEM;
    size_t at = 0;
    p->backoff[at++] = '{';
    for (size_t i = 0; i < o->nbackoff; i++) {
      if (i > 0)
        p->backoff[at++] = ',';
      cl__fmt_double(p->backoff + at, len - at, o->backoff_s[i]);
      at += strlen(p->backoff + at);
    }
    p->backoff[at++] = '}';
    p->backoff[at] = '\0';
  }
  p->queues = o->nqueues ? cl__array_literal(o->queues, o->nqueues) : NULL;
  if (o->nqueues && p->queues == NULL) {
    free(p->backoff);
    return CL_ENOMEM;
  }
  snprintf(p->maxa, sizeof p->maxa, "%d",
           o->max_attempts ? o->max_attempts : 10);
  snprintf(p->brk, sizeof p->brk, "%d",
           o->break_after == 0  ? 100
           : o->break_after < 0 ? 0
                                : o->break_after);
  snprintf(p->conc, sizeof p->conc, "%d", o->concurrency);
  cl__fmt_double(p->rate, sizeof p->rate, o->rate);
  return 0;
}

int cl_subscriber_add(cl_conn_t *c, const char *name,
                      const cl_subscriber_opts_t *o, long long *from_pos) {
  cl_subscriber_opts_t none = {0};
  if (o == NULL)
    o = &none;
  int rc = check_sub(c, name);
  sub_params_t p;
  if (rc != 0 || (rc = sub_params(c, o, 1, &p)) != 0)
    return rc;
  const char *params[] = {name,  p.queues, p.from, p.in_doubt, p.maxa,
                          p.brk, p.conc,   p.rate, p.ordering, p.backoff};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_SUB_ADD, params, &r);
  free(p.queues);
  free(p.backoff);
  if (rc != 0)
    return rc;
  int created = PQntuples(r) > 0;
  if (created && from_pos != NULL)
    *from_pos = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return created;
}

/* sql.c's SUB_SET tests these bits by value. */
_Static_assert(CL_SUB_QUEUES == 1 && CL_SUB_IN_DOUBT == 2 &&
                   CL_SUB_MAX_ATTEMPTS == 4 && CL_SUB_BREAK_AFTER == 8 &&
                   CL_SUB_CONCURRENCY == 16 && CL_SUB_RATE == 32 &&
                   CL_SUB_ORDERING == 64 && CL_SUB_BACKOFF == 128,
               "the masks of SUB_SET in sql.c");

int cl_subscriber_set(cl_conn_t *c, const char *name,
                      const cl_subscriber_opts_t *o, unsigned fields) {
  cl_subscriber_opts_t none = {0};
  if (o == NULL)
    o = &none;
  int rc = check_sub(c, name);
  sub_params_t p;
  if (rc != 0 || (rc = sub_params(c, o, 0, &p)) != 0)
    return rc;
  char mask[16];
  snprintf(mask, sizeof mask, "%u", fields & (unsigned)CL_SUB_ALL);
  const char *params[] = {name,  mask,   p.queues, p.in_doubt, p.maxa,
                          p.brk, p.conc, p.rate,   p.ordering, p.backoff};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_SUB_SET, params, &r);
  free(p.queues);
  free(p.backoff);
  if (rc != 0)
    return rc;
  int found = PQntuples(r) > 0;
  PQclear(r);
  if (!found) {
    cl__set_error(c, NULL, "no subscriber \"%s\"", name);
    return CL_ENOTFOUND;
  }
  return 0;
}

int cl_subscriber_pause(cl_conn_t *c, const char *name, int paused,
                        const char *why) {
  int rc = check_sub(c, name);
  if (rc != 0)
    return rc;
  char *w = cl__clean_text(why, 1000);
  if (w == NULL)
    return CL_ENOMEM;
  const char *params[] = {name, paused ? "true" : "false", w};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_SUB_PAUSE, params, &r);
  free(w);
  if (rc != 0)
    return rc;
  int found = PQntuples(r) > 0;
  PQclear(r);
  if (!found) {
    cl__set_error(c, NULL, "no subscriber \"%s\"", name);
    return CL_ENOTFOUND;
  }
  return 0;
}

int cl_subscriber_remove(cl_conn_t *c, const char *name, int force,
                         long *unsettled) {
  int rc = check_sub(c, name);
  if (rc != 0)
    return rc;
  const char *params[] = {name, force ? "true" : "false"};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_SUB_REMOVE, params, &r);
  if (rc != 0)
    return rc;
  int found = atoi(PQgetvalue(r, 0, 0));
  long open = atol(PQgetvalue(r, 0, 1));
  int removed = atoi(PQgetvalue(r, 0, 2));
  PQclear(r);
  if (unsettled != NULL)
    *unsettled = open;
  if (!found) {
    cl__set_error(c, NULL, "no subscriber \"%s\"", name);
    return CL_ENOTFOUND;
  }
  if (!removed) {
    cl__set_error(c, NULL,
                  "subscriber \"%s\" has %ld deliveries not yet sent "
                  "(sending, retry, held or dead); settle them or force",
                  name, open);
    return CL_EBUSY;
  }
  return 0;
}

void cl_subscribers_free(cl_subscriber_status_t *rows, size_t count) {
  for (size_t i = 0; rows != NULL && i < count; i++) {
    free(rows[i].name);
    free(rows[i].queues);
    free(rows[i].paused_why);
    free(rows[i].in_doubt);
    free(rows[i].ordering);
    free(rows[i].backoff);
  }
  free(rows);
}

int cl_subscriber_list(cl_conn_t *c, cl_subscriber_status_t **rows,
                       size_t *count) {
  *rows = NULL;
  *count = 0;
  PGresult *r = NULL;
  int rc = cl__exec(c, CL__STMT_SUB_LIST, NULL, &r);
  if (rc != 0)
    return rc;
  int n = PQntuples(r);
  cl_subscriber_status_t *out = n ? calloc((size_t)n, sizeof *out) : NULL;
  if (n && out == NULL) {
    PQclear(r);
    return CL_ENOMEM;
  }
  for (int i = 0; i < n; i++) {
    cl_subscriber_status_t *s = &out[i];
    s->name = cl__strdup(PQgetvalue(r, i, 0));
    s->queues = cl__strdup(PQgetvalue(r, i, 1));
    s->paused = PQgetvalue(r, i, 2)[0] == 't';
    s->paused_why = cl__strdup(PQgetvalue(r, i, 3));
    s->in_doubt = cl__strdup(PQgetvalue(r, i, 4));
    s->from_pos = strtoll(PQgetvalue(r, i, 5), NULL, 10);
    s->cursor_pos = strtoll(PQgetvalue(r, i, 6), NULL, 10);
    s->pending = atol(PQgetvalue(r, i, 7));
    s->in_flight = atol(PQgetvalue(r, i, 8));
    s->retry = atol(PQgetvalue(r, i, 9));
    s->sent = atol(PQgetvalue(r, i, 10));
    s->held = atol(PQgetvalue(r, i, 11));
    s->dead = atol(PQgetvalue(r, i, 12));
    s->lag = strtoll(PQgetvalue(r, i, 13), NULL, 10);
    s->concurrency = atoi(PQgetvalue(r, i, 14));
    s->rate = strtod(PQgetvalue(r, i, 15), NULL);
    s->ordering = cl__strdup(PQgetvalue(r, i, 16));
    s->oldest_age_s = strtod(PQgetvalue(r, i, 17), NULL);
    s->max_attempts = atoi(PQgetvalue(r, i, 18));
    s->break_after = atoi(PQgetvalue(r, i, 19));
    s->backoff = cl__strdup(PQgetvalue(r, i, 20));
    if (!s->name || !s->queues || !s->paused_why || !s->in_doubt ||
        !s->ordering || !s->backoff) {
      cl_subscribers_free(out, (size_t)n);
      PQclear(r);
      return CL_ENOMEM;
    }
  }
  PQclear(r);
  *rows = out;
  *count = (size_t)n;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Deliveries                                                                */

void cl__delivery_clear(cl_delivery_t *d) {
  free(d->item_id);
  free(d->queue);
  free(d->token);
  free(d->idempotency_key);
  free(d->result);
  free(d->payload);
  free(d->lease_until);
  memset(d, 0, sizeof *d);
}

int cl__delivery_row_is_wait(const PGresult *res, int i) {
  return PQgetisnull(res, i, 0);
}

int cl__parse_delivery(const PGresult *res, int i, cl_delivery_t *d) {
  d->item_id = cl__strdup(PQgetvalue(res, i, 0));
  d->queue = cl__strdup(PQgetvalue(res, i, 1));
  d->token = cl__strdup(PQgetvalue(res, i, 2));
  d->attempt = atoi(PQgetvalue(res, i, 3));
  d->idempotency_key = cl__strdup(PQgetvalue(res, i, 4));
  d->pos = strtoll(PQgetvalue(res, i, 5), NULL, 10);
  d->result = cl__strdup(PQgetvalue(res, i, 6));
  d->payload = cl__strdup(PQgetvalue(res, i, 7));
  d->lease_until = cl__strdup(PQgetvalue(res, i, 8));
  d->wait_s = strtod(PQgetvalue(res, i, 9), NULL);
  if (d->item_id && d->queue && d->token && d->idempotency_key && d->result &&
      d->payload && d->lease_until)
    return 0;
  cl__delivery_clear(d);
  return CL_ENOMEM;
}

void cl_deliveries_free(cl_delivery_t *d, size_t count) {
  for (size_t i = 0; d != NULL && i < count; i++)
    cl__delivery_clear(&d[i]);
  free(d);
}

int cl_deliver_claim(cl_conn_t *c, const char *subscriber, const char *sender,
                     int n, double lease_s, cl_delivery_t **out) {
  *out = NULL;
  int rc = check_sub(c, subscriber);
  if (rc != 0)
    return rc;
  char why[256];
  if (cl_check_worker(sender ? sender : "", why, sizeof why) != 0) {
    cl__set_error(c, NULL, "sender name: %s", why);
    return CL_EINVAL;
  }
  if (n < 1 || n > 10000 || !(lease_s >= 1 && lease_s <= 604800)) {
    cl__set_error(c, NULL,
                  "claim of %d for %g s is out of range (1..10000 "
                  "deliveries, 1 s..7 d)",
                  n, lease_s);
    return CL_EINVAL;
  }
  char nb[16], lb[48];
  snprintf(nb, sizeof nb, "%d", n);
  cl__fmt_double(lb, sizeof lb, lease_s);
  const char *params[] = {subscriber, nb, lb, sender};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_DELIVERY_CLAIM, params, &r);
  if (rc != 0)
    return rc;
  int rows = PQntuples(r), got = 0;
  cl_delivery_t *d = rows ? calloc((size_t)rows, sizeof *d) : NULL;
  if (rows && d == NULL) {
    PQclear(r);
    return CL_ENOMEM;
  }
  int oom = 0;
  for (int i = 0; i < rows; i++) /* skips the rate limit's "come back" */
    if (!cl__delivery_row_is_wait(r, i))
      oom |= cl__parse_delivery(r, i, &d[got++]) != 0;
  PQclear(r);
  if (oom) {
    /* The leases run out and the deliveries come back: nothing is lost. */
    cl_deliveries_free(d, (size_t)got);
    return CL_ENOMEM;
  }
  if (got == 0) {
    free(d);
    d = NULL;
  }
  *out = d;
  return got;
}

static int check_ack(cl_conn_t *c, const char *subscriber, const char *item_id,
                     const char *token) {
  int rc = check_sub(c, subscriber);
  if (rc != 0)
    return rc;
  char why[256];
  if (cl_check_item_id(item_id ? item_id : "", why, sizeof why) != 0) {
    cl__set_error(c, NULL, "%s", why);
    return CL_EINVAL;
  }
  if (token == NULL || *token == '\0') {
    cl__set_error(c, NULL, "no token given");
    return CL_EINVAL;
  }
  return 0;
}

int cl_delivery_sent(cl_conn_t *c, const char *subscriber, const char *item_id,
                     const char *token, int *already) {
  int rc = check_ack(c, subscriber, item_id, token);
  if (rc != 0)
    return rc;
  const char *params[] = {subscriber, item_id, token};
  PGresult *r = NULL;
  rc = exec_resending(c, CL__STMT_DELIVERY_SENT, params, &r);
  if (rc != 0)
    return rc;
  int found = PQntuples(r) > 0;
  if (found && already != NULL)
    *already = PQgetvalue(r, 0, 1)[0] != 't';
  PQclear(r);
  if (!found) {
    cl__set_error(c, NULL,
                  "the token no longer holds delivery %s of \"%s\": nothing "
                  "written",
                  item_id, subscriber);
    return CL_ELEASE_LOST;
  }
  return 0;
}

int cl_delivery_fail(cl_conn_t *c, const char *subscriber, const char *item_id,
                     const char *token, const char *error, int retry,
                     double retry_in, cl_delivery_fail_info_t *info) {
  cl_delivery_fail_info_t local;
  if (info == NULL)
    info = &local;
  memset(info, 0, sizeof *info);
  int rc = check_ack(c, subscriber, item_id, token);
  if (rc != 0)
    return rc;
  if (isnan(retry_in) || retry_in > 3.2e9) {
    cl__set_error(c, NULL, "retry delay %g is not a number of seconds",
                  retry_in);
    return CL_EINVAL;
  }
  char *err = cl__clean_text(error, CL_ERROR_TEXT_MAX);
  if (err == NULL)
    return CL_ENOMEM;
  char rbuf[48];
  cl__fmt_double(rbuf, sizeof rbuf, retry_in < 0 ? -1.0 : retry_in);
  const char *params[] = {subscriber, item_id, token, err, retry ? rbuf : NULL};
  PGresult *r = NULL;
  rc = exec_resending(c, CL__STMT_DELIVERY_FAIL, params, &r);
  free(err);
  if (rc != 0)
    return rc;
  int found = PQntuples(r) > 0;
  if (found) {
    info->dead = strcmp(PQgetvalue(r, 0, 0), "dead") == 0;
    snprintf(info->next_at, sizeof info->next_at, "%s", PQgetvalue(r, 0, 1));
    info->attempts = atoi(PQgetvalue(r, 0, 2));
    info->already = PQgetvalue(r, 0, 3)[0] != 't';
  }
  PQclear(r);
  if (!found) {
    cl__set_error(c, NULL,
                  "the token no longer holds delivery %s of \"%s\": nothing "
                  "written",
                  item_id, subscriber);
    return CL_ELEASE_LOST;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* For a person: list, retry, resolve, replay                                */

void cl_delivery_rows_free(cl_delivery_row_t *rows, size_t count) {
  for (size_t i = 0; rows != NULL && i < count; i++) {
    free(rows[i].item_id);
    free(rows[i].state);
    free(rows[i].idempotency_key);
    free(rows[i].next_at);
    free(rows[i].updated_at);
    free(rows[i].last_error);
  }
  free(rows);
}

static int check_state(cl_conn_t *c, const char *state) {
  static const char *const states[] = {"sending", "sent", "retry", "held",
                                       "dead"};
  for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
    if (strcmp(state, states[i]) == 0)
      return 0;
  cl__set_error(c, NULL,
                "state \"%.40s\" is not sending, sent, retry, held or dead",
                state);
  return CL_EINVAL;
}

int cl_delivery_list(cl_conn_t *c, const char *subscriber, const char *state,
                     int limit, cl_delivery_row_t **rows, size_t *count) {
  *rows = NULL;
  *count = 0;
  int rc = check_sub(c, subscriber);
  if (rc == 0 && state != NULL)
    rc = check_state(c, state);
  if (rc != 0)
    return rc;
  char lb[16];
  snprintf(lb, sizeof lb, "%d", limit < 1 ? 100 : limit);
  const char *params[] = {subscriber, state ? state : "", lb};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_DELIVERY_LIST, params, &r);
  if (rc != 0)
    return rc;
  int n = PQntuples(r);
  cl_delivery_row_t *out = n ? calloc((size_t)n, sizeof *out) : NULL;
  int oom = n && out == NULL;
  for (int i = 0; !oom && i < n; i++) {
    cl_delivery_row_t *d = &out[i];
    d->item_id = cl__strdup(PQgetvalue(r, i, 0));
    d->state = cl__strdup(PQgetvalue(r, i, 1));
    d->attempts = atoi(PQgetvalue(r, i, 2));
    d->idempotency_key = cl__strdup(PQgetvalue(r, i, 3));
    d->next_at = cl__strdup(PQgetvalue(r, i, 4));
    d->updated_at = cl__strdup(PQgetvalue(r, i, 5));
    d->last_error = cl__strdup(PQgetvalue(r, i, 6));
    d->pos = strtoll(PQgetvalue(r, i, 7), NULL, 10);
    oom = !d->item_id || !d->state || !d->idempotency_key || !d->next_at ||
          !d->updated_at || !d->last_error;
  }
  PQclear(r);
  if (oom) {
    cl_delivery_rows_free(out, (size_t)n);
    return CL_ENOMEM;
  }
  *rows = out;
  *count = (size_t)n;
  return 0;
}

int cl_delivery_retry(cl_conn_t *c, const char *subscriber,
                      const char *const *ids, size_t n) {
  int rc = check_sub(c, subscriber);
  if (rc != 0)
    return rc;
  char why[256];
  for (size_t i = 0; ids != NULL && i < n; i++) {
    if (cl_check_item_id(ids[i] ? ids[i] : "", why, sizeof why) != 0) {
      cl__set_error(c, NULL, "%s", why);
      return CL_EINVAL;
    }
  }
  char *lit = ids != NULL ? cl__array_literal(ids, n) : NULL;
  if (ids != NULL && lit == NULL)
    return CL_ENOMEM;
  const char *params[] = {subscriber, lit};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_DELIVERY_RETRY, params, &r);
  free(lit);
  if (rc != 0)
    return rc;
  int got = PQntuples(r);
  PQclear(r);
  return got;
}

int cl_delivery_resolve(cl_conn_t *c, const char *subscriber,
                        const char *item_id, int as_sent) {
  int rc = check_ack(c, subscriber, item_id, "-");
  if (rc != 0)
    return rc;
  const char *params[] = {subscriber, item_id, as_sent ? "sent" : "retry"};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_DELIVERY_RESOLVE, params, &r);
  if (rc != 0)
    return rc;
  int found = PQntuples(r) > 0;
  PQclear(r);
  if (!found) {
    cl__set_error(c, NULL,
                  "no delivery %s of \"%s\" is in doubt (held, or sending "
                  "past its lease)",
                  item_id, subscriber);
    return CL_ENOTFOUND;
  }
  return 0;
}

int cl_delivery_replay(cl_conn_t *c, const char *subscriber, long long from_pos,
                       const char *since) {
  int rc = check_sub(c, subscriber);
  if (rc != 0)
    return rc;
  if (from_pos < 0 && since == NULL) {
    cl__set_error(c, NULL, "replay needs a position or a time to start from");
    return CL_EINVAL;
  }
  char why[256];
  if (since != NULL && cl_check_time(since, why, sizeof why) != 0) {
    cl__set_error(c, NULL, "--since: %s", why);
    return CL_EINVAL;
  }
  char pb[32];
  snprintf(pb, sizeof pb, "%lld", from_pos);
  const char *params[] = {subscriber, from_pos >= 0 ? pb : NULL, since};
  PGresult *r = NULL;
  rc = cl__exec(c, CL__STMT_DELIVERY_REPLAY, params, &r);
  if (rc != 0)
    return rc;
  int got = PQntuples(r);
  PQclear(r);
  return got;
}
