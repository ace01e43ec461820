/*
 * claimer.h: the public API of libclaimer, a lease-based job claimer on
 * PostgreSQL.
 *
 * Glossary (the words every other file uses):
 *   item     a unit of work, enqueued once under its item_id (the
 *            idempotency key chosen by the producer).
 *   claim    the row in claimer.claims that a worker inserted to own an
 *            item; the unique item_id of that table is the race's arbiter.
 *   lease    a claim seen as a promise with an expiry (lease_until, on the
 *            database clock).  It lapses unless heartbeated.
 *   token    the fencing token of one lease: unique across the life of the
 *            database (a sequence value with a random part, so that it stays
 *            unique after a failover that lost WAL).  Every call that ends a
 *            lease must present it.
 *   attempt  the 1-based number of the try a lease stands for; an item's
 *            attempts counter only moves when a try is spent (complete,
 *            fail, lease expiry), never on release.
 *   result   the row written by complete, in the same transaction that ends
 *            the lease; at most one per item, ever.
 *   delivery a subscriber's record of having consumed one result.
 *
 * Conventions (after libuv): functions return 0 or a negative CL_E* code;
 * cl_strerror() and cl_err_name() describe a code; the detail (libpq
 * message, SQLSTATE) of the last failure lives on the connection.  Objects
 * are opaque, created by cl_x_new() and freed by cl_x_free(&x), which accepts
 * NULL and sets the pointer to NULL.  Strings passed in are borrowed;
 * strings handed out are owned by the object or array they came in, and
 * freed with it.
 */
#ifndef CLAIMER_H
#define CLAIMER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CLAIMER_BUILDING) && defined(__GNUC__)
#define CL_EXTERN __attribute__((visibility("default")))
#else
#define CL_EXTERN
#endif

#if defined(__GNUC__)
#define CL_MUST_CHECK __attribute__((warn_unused_result))
#else
#define CL_MUST_CHECK
#endif

#define CL_VERSION_STRING "0.1.0"

/* Limits enforced on input before anything reaches the database. */
#define CL_ITEM_ID_MAX 255 /* bytes, UTF-8, at least 1 */
/* Queue names: 1..63 bytes of [A-Za-z0-9_.-].  No ':', which separates a
 * weight or a per-queue value (NAME:WEIGHT in `claimer work -q`). */
#define CL_QUEUE_MAX 63          /* bytes, [A-Za-z0-9_.-], at least 1 */
#define CL_WORKER_MAX 200        /* bytes, printable UTF-8, at least 1 */
#define CL_PAYLOAD_MAX (1 << 20) /* bytes of JSON text */
#define CL_ERROR_TEXT_MAX 8192   /* bytes of an error message kept */

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

/* XX(NAME, value, message).  Our own codes live below -1000, away from
 * errno; cl_strerror() and cl_err_name() also describe 0 ("CL_OK") and
 * negated errno values -1..-999 ("CL_ESYSTEM" when glibc has no name). */
#define CL_ERRNO_MAP(XX)                                                       \
  XX(INVAL, -1001, "invalid argument")                                         \
  XX(NOMEM, -1002, "out of memory")                                            \
  XX(CONNECT, -1003, "cannot connect to the database")                         \
  XX(AUTH, -1004, "database authentication failed")                            \
  XX(CONNLOST, -1005, "connection lost before the outcome was known")          \
  XX(DB, -1006, "database error")                                              \
  XX(LEASE_LOST, -1007, "lease lost")                                          \
  XX(NOTFOUND, -1008, "not found")                                             \
  XX(SCHEMA, -1009, "claimer schema missing or newer than this binary")        \
  XX(CHECKSUM, -1010, "applied migration differs from the shipped one")        \
  XX(CONFIG, -1011, "bad configuration")                                       \
  XX(JSON, -1012, "not valid JSON")                                            \
  XX(IO, -1013, "input/output error")                                          \
  XX(EMBEDDED, -1014, "embedded PostgreSQL failed")                            \
  XX(DSN, -1015, "malformed connection string")                                \
  XX(NAME_TAKEN, -1016, "worker name in use by a live worker")                 \
  XX(BUSY, -1017, "deliveries not yet settled")

typedef enum cl_errno {
#define CL__ERR_ENUM(name, value, msg) CL_E##name = value,
  CL_ERRNO_MAP(CL__ERR_ENUM)
#undef CL__ERR_ENUM
} cl_errno_t;

/* Returns a static, human description of err (never NULL). */
CL_EXTERN const char *cl_strerror(int err);
/* Returns the static name of err, such as "CL_ELEASE_LOST" (never NULL). */
CL_EXTERN const char *cl_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Events                                                                    */

/* The worker and the reaper never write anywhere by themselves: they tell
 * the program what they did through an event callback it installs
 * (cl_events_t in their options), and the program logs, counts or drops
 * each event.  `claimer work` and `claimer reap` write one log line per
 * event.  An event is a name ("claimed", "lease_lost", "reap_cycle", ...)
 * and key/value fields; a field marked number holds a decimal number
 * (integer or with 3 decimals), the others are text.  Values never hold a
 * password: connection strings appear only as cl_dsn_redact() made them. */
typedef enum cl_level {
  CL_LEVEL_DEBUG,
  CL_LEVEL_INFO,
  CL_LEVEL_WARNING,
  CL_LEVEL_ERROR
} cl_level_t;

typedef struct cl_field {
  const char *key;
  const char *value; /* never NULL ("" for none) */
  int number;        /* 1: value is a decimal number */
} cl_field_t;

/* Called on the loop's thread; fields[0..n) and their strings are valid
 * only during the call. */
typedef void (*cl_event_cb)(void *arg, cl_level_t level, const char *event,
                            const cl_field_t *fields, size_t n);

typedef struct cl_events {
  cl_event_cb cb; /* NULL: events are dropped (the default) */
  void *arg;
  cl_level_t min; /* events below this level are not even formatted */
} cl_events_t;

/* "debug", "info", "warning", "error". */
CL_EXTERN const char *cl_level_name(cl_level_t level);

/* ------------------------------------------------------------------------ */
/* Input validation (pure C, no database)                                    */

/* Each returns 0 when the value is acceptable, or a negative code
 * (CL_EINVAL for ids, queues and workers; CL_EJSON, or CL_ENOMEM, for JSON;
 * CL_EDSN for connection strings) and writes a sentence naming the problem
 * into err (err may be NULL).  Byte offsets in messages are 0-based.
 * Worker names and item ids reject control characters (C0, DEL, C1). */
CL_EXTERN int cl_check_item_id(const char *id, char *err, size_t errlen);
CL_EXTERN int cl_check_queue(const char *queue, char *err, size_t errlen);
CL_EXTERN int cl_check_worker(const char *worker, char *err, size_t errlen);
/* Checks an RFC 3339 date-time (2026-12-02T09:30:00Z; a fraction, an
 * offset +01:00, a space for the T), each field in range. */
CL_EXTERN int cl_check_time(const char *t, char *err, size_t errlen);
/* Checks that s[0..len) is one complete JSON value, in valid UTF-8, at most
 * CL_PAYLOAD_MAX bytes, that PostgreSQL's jsonb input accepts: no \u0000 or
 * unpaired surrogate escape, and every number within PostgreSQL's numeric
 * (below 1e131072, at most 16383 digits after the decimal point counting
 * the exponent's, an exponent within +-1073741822); nesting is kept to 64
 * levels.  Returns 0 or CL_EJSON; the message names the byte offset of the
 * fault ("not valid JSON at byte N: ..." or, for a number jsonb cannot
 * hold, "number out of range at byte N: ..."). */
CL_EXTERN int cl_check_json(const char *s, size_t len, char *err,
                            size_t errlen);
/* Returns the byte offset of the first invalid UTF-8 sequence in s[0..len),
 * or -1 when all of it is valid (overlongs and surrogates are invalid). */
CL_EXTERN long cl_utf8_invalid_at(const char *s, size_t len);

/* Checks a libpq connection string (URI or key=value).  On failure writes a
 * message that never contains the password. */
CL_EXTERN int cl_check_dsn(const char *dsn, char *err, size_t errlen);
/* Returns a malloc'd key=value rewrite of dsn safe for logs: any password
 * (and sslpassword) replaced by "***".  Returns NULL only when out of memory; a
 * malformed dsn yields the placeholder "(malformed connection string)". */
CL_EXTERN char *cl_dsn_redact(const char *dsn);

/* Writes a new random (version 4) UUID in its 36-character text form plus
 * NUL into out.  Returns 0 or CL_EIO when no randomness could be read. */
CL_EXTERN int cl_uuid4(char out[37]);

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

typedef struct cl_conn cl_conn_t;

/* Creates an unconnected handle for dsn (copied).  Returns 0, CL_EDSN when
 * dsn is malformed (nothing allocated; *out set to NULL) or CL_ENOMEM. */
CL_EXTERN CL_MUST_CHECK int cl_conn_new(cl_conn_t **out, const char *dsn);
/* Closes the connection if open and frees c; accepts NULL, sets *c = NULL. */
CL_EXTERN void cl_conn_free(cl_conn_t **c);
/* Connects (blocking, once, no retry).  Returns 0, CL_EAUTH for a rejected
 * password or role (do not retry these), CL_ECONNECT otherwise.  A
 * connect_timeout of 10 s applies unless the dsn gives one. */
CL_EXTERN CL_MUST_CHECK int cl_conn_connect(cl_conn_t *c);
/* Drops and re-establishes the connection; same returns as connect. */
CL_EXTERN CL_MUST_CHECK int cl_conn_reset(cl_conn_t *c);
/* The last failure's message (libpq's, secrets removed) and SQLSTATE; both
 * owned by c, valid until the next call on c; "" when none. */
CL_EXTERN const char *cl_conn_last_error(const cl_conn_t *c);
CL_EXTERN const char *cl_conn_last_sqlstate(const cl_conn_t *c);
/* The dsn with its password redacted; owned by c. */
CL_EXTERN const char *cl_conn_dsn_redacted(const cl_conn_t *c);
/* The libpq connection, for drivers that run statements themselves (the
 * libuv worker); owned by c.  NULL when not connected. */
struct pg_conn;
CL_EXTERN struct pg_conn *cl_conn_pg(cl_conn_t *c);

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */

typedef void (*cl_migrate_cb)(void *arg, int version, const char *name);

/* Applies every shipped migration not yet applied, in order, each in its
 * own transaction, all under an advisory lock so that concurrent runs apply
 * each once.  Calls cb (may be NULL) before applying each.  Returns the
 * number applied (0: already up to date), CL_ECHECKSUM when an applied
 * migration's checksum differs from the shipped one, CL_ESCHEMA when the
 * database has migrations this binary does not know, or CL_EDB. */
CL_EXTERN int cl_migrate(cl_conn_t *c, cl_migrate_cb cb, void *arg);
/* Returns 0 when the schema is exactly what this binary ships, CL_ESCHEMA
 * (with a message saying what to run) or CL_ECHECKSUM otherwise. */
CL_EXTERN int cl_schema_check(cl_conn_t *c);
/* The number of shipped migrations. */
CL_EXTERN int cl_schema_version(void);

/* ------------------------------------------------------------------------ */
/* Producers                                                                 */

typedef struct cl_item {
  const char *item_id; /* required, 1..CL_ITEM_ID_MAX bytes of UTF-8 */
  const char *queue;   /* required */
  const char *payload; /* JSON text, NULL for JSON null */
  int priority;        /* higher is claimed first */
  int max_attempts;    /* 0: the queue's policy (claimer.queue_policy,
                          which the reaper writes; 25 when none) */
  double run_in;       /* seconds from now (database clock), >= 0 */
} cl_item_t;

enum { CL_ENQ_CREATED = 1, CL_ENQ_EXISTED = 2 };

/* Enqueues n items in one statement.  Idempotent per item_id: an existing
 * item is left as it is.  On success writes CL_ENQ_CREATED or
 * CL_ENQ_EXISTED into outcome[i] for each item (outcome may be NULL) and
 * returns the number created.  Every item is validated first: one bad item
 * fails the whole call with CL_EINVAL or CL_EJSON (message on c) before the
 * database is touched.  The same item_id twice in one batch counts as
 * created once and existed once. */
CL_EXTERN int cl_enqueue(cl_conn_t *c, const cl_item_t *items, size_t n,
                         int *outcome);

/* ------------------------------------------------------------------------ */
/* Workers                                                                   */

typedef struct cl_lease {
  char *item_id;
  char *queue;
  char *token;
  int attempt; /* 1 on the first try */
  int max_attempts;
  char *payload;     /* JSON text */
  char *lease_until; /* RFC 3339, UTC, database clock */
} cl_lease_t;

/* Claims up to n ready items of queue for worker, each with a lease of
 * lease_s seconds.  On success stores a malloc'd array in *leases (free with
 * cl_leases_free) and its length in *count (possibly 0, with *leases NULL),
 * and returns 0. */
CL_EXTERN int cl_claim(cl_conn_t *c, const char *queue, const char *worker,
                       int n, double lease_s, cl_lease_t **leases,
                       size_t *count);
CL_EXTERN void cl_leases_free(cl_lease_t *leases, size_t count);

typedef struct cl_complete_info {
  int already; /* this token had completed the item before this call */
  int retries; /* reconnects needed to settle the outcome */
} cl_complete_info_t;

/* Ends the lease (item_id, token) and records result (JSON text, NULL for
 * null) as the item's one result, in one statement.  Returns 0 when the
 * item is done with this token's result (also when an earlier call with the
 * same token had already done it: info->already), CL_ELEASE_LOST when the
 * token no longer holds the lease (nothing written), CL_EJSON / CL_EINVAL
 * for bad input.  When the connection drops with the outcome unknown it
 * reconnects and asks again (G9), up to a few times; CL_ECONNLOST if it
 * never could.  A database error (a deadlock, a timeout) is tried again
 * twice with the same token; a result the database keeps refusing ends
 * the attempt as a failure instead ("the result could not be stored:
 * REASON", retried with backoff, so the item still ends dead after its
 * attempts, G4) and returns CL_EDB with that said on c.  The policy is
 * claimer/ack.h's, the same as the in-process worker's.  info may be
 * NULL. */
CL_EXTERN int cl_complete(cl_conn_t *c, const char *item_id, const char *token,
                          const char *result, cl_complete_info_t *info);

/* One item of cl_complete_many(). */
typedef struct cl_done {
  const char *item_id;
  const char *token;
  const char *result; /* JSON text, NULL for null */
} cl_done_t;

#define CL_COMPLETE_MANY_MAX 10000

/* Completes items[0..n) as cl_complete() would each, but in one statement
 * and one commit: rcs[i] gets what cl_complete() would have returned for
 * item i (0 done, also when an earlier call with that token had done it,
 * infos[i].already; CL_ELEASE_LOST; CL_EDB for a result the database
 * refused, the attempt recorded as failed instead; CL_ECONNLOST), and
 * infos[i] (infos may be NULL) the rest.  Fencing is per item (G3): a lost
 * lease refuses that item alone.  After a lost connection the batch is
 * sent again whole with the same tokens, and each item settles on its own
 * (G9); after a database error on the batch (one result it will not
 * store, a deadlock), every item goes on alone under cl_complete()'s
 * policy, so that one item's refusal is never another's.  Every item is
 * checked first: a bad one fails the call with CL_EINVAL or CL_EJSON,
 * naming it, before anything is sent.  Returns 0 when every rcs[i] is
 * set, or a code that stopped the call (CL_EAUTH, CL_ESCHEMA, CL_ENOMEM;
 * then the items it did not settle have that code in rcs).  The message
 * on c is the last item's that failed.  n is at most CL_COMPLETE_MANY_MAX;
 * 0 does nothing. */
CL_EXTERN int cl_complete_many(cl_conn_t *c, const cl_done_t *items, size_t n,
                               int *rcs, cl_complete_info_t *infos);

/* cl_complete_many() of items[0..n), then cl_claim() of up to want items
 * of queue for worker with leases of lease_s seconds, in one statement and
 * one commit when all goes well: one round trip and one flush of the WAL
 * where the two calls take two of each (a worker's loop: finish a round,
 * ask for the next).  The completes keep every promise of
 * cl_complete_many() (fenced per item, G3; settled per item after a lost
 * connection, G9).  When the joint send does not come back whole (a lost
 * connection, a database error) the completes go on as cl_complete_many()
 * sends them, and once every one has settled the claim is sent alone;
 * items the lost send may have claimed are held under worker's name
 * until their leases expire (the worker daemon's heartbeat gives such
 * orphans back).  rcs and infos as cl_complete_many()'s (n may be 0: a
 * claim alone); the leases as cl_claim()'s in *leases and *count.
 * Returns 0 when every rcs[i] is set and the claim was made (possibly of
 * no item), a bad argument's code before anything is sent, or the code
 * that stopped the completes or the claim (rcs then as
 * cl_complete_many() leaves them, *count 0). */
CL_EXTERN int cl_complete_many_claim(cl_conn_t *c, const cl_done_t *items,
                                     size_t n, int *rcs,
                                     cl_complete_info_t *infos,
                                     const char *queue, const char *worker,
                                     int want, double lease_s,
                                     cl_lease_t **leases, size_t *count);

typedef struct cl_fail_info {
  int dead;          /* 1: the item is dead (attempts spent, or no retry) */
  int attempts;      /* attempts spent so far */
  char retry_at[40]; /* RFC 3339 when not dead */
  int already;       /* an earlier call with this token had done it */
} cl_fail_info_t;

/* Ends the lease (item_id, token) as a failed attempt.  With retry, the
 * item goes back to ready after retry_in seconds, or, when retry_in < 0,
 * after an exponential backoff with jitter; without retry, or when
 * max_attempts are spent, it is dead.  Returns 0, CL_ELEASE_LOST, or an
 * error.  Retrying after a lost connection is safe (it is done here, as
 * for cl_complete).  An error text the database refuses is recorded with
 * a short stand-in naming the database's reason ("the failure could not
 * be recorded as given: REASON"), and 0 is returned: the attempt is spent
 * either way.  info may be NULL. */
CL_EXTERN int cl_fail(cl_conn_t *c, const char *item_id, const char *token,
                      const char *error, int retry, double retry_in,
                      cl_fail_info_t *info);

/* Gives the lease back without spending an attempt (for shutdown).  Returns
 * 0 or CL_ELEASE_LOST. */
CL_EXTERN int cl_release(cl_conn_t *c, const char *item_id, const char *token);

typedef struct cl_held {
  char *item_id;
  char *token;
  char *lease_until;
} cl_held_t;

/* Records worker as alive and extends every lease it holds to lease_s
 * seconds from now, in one statement.  Stores the leases still held in a
 * malloc'd array (free with cl_held_free); a lease missing from it is lost
 * and its handler must stop.  Returns 0 or an error. */
CL_EXTERN int cl_heartbeat(cl_conn_t *c, const char *worker, double lease_s,
                           cl_held_t **held, size_t *count);
CL_EXTERN void cl_held_free(cl_held_t *held, size_t count);

/* ------------------------------------------------------------------------ */
/* Reaper                                                                    */

typedef struct cl_reap_info {
  long expired;        /* stale leases ended in this call */
  long requeued;       /* of those, items back to ready */
  long dead;           /* of those, items dead (attempts spent) */
  long alerts_expired; /* lease_expired alerts raised */
  long alerts_dead;    /* item_dead alerts raised */
} cl_reap_info_t;

/* Ends up to limit leases whose lease_until has passed on the database
 * clock: the attempt the lease held is spent (attempts counts claims), and
 * the item is ready again at once (no backoff: a crashed worker's items
 * should not wait), or dead when that was its last attempt.
 * Each stale lease is handled by exactly one caller even when several
 * reapers run at once.  Returns 0 and fills info (adds to it). */
CL_EXTERN int cl_reap(cl_conn_t *c, int limit, cl_reap_info_t *info);

/* The kinds of alert, in the order of cl_cycle_info_t.raised[]. */
#define CL_ALERT_KIND_MAP(XX)                                                  \
  XX(ITEM_OVERDUE, "item_overdue")                                             \
  XX(LEASE_EXPIRED, "lease_expired")                                           \
  XX(ITEM_DEAD, "item_dead")                                                   \
  XX(WORKER_LOST, "worker_lost")                                               \
  XX(DELIVERY_IN_DOUBT, "delivery_in_doubt")                                   \
  XX(DELIVERY_DEAD, "delivery_dead")

typedef enum cl_alert_kind {
#define CL__ALERT_ENUM(name, text) CL_ALERT_##name,
  CL_ALERT_KIND_MAP(CL__ALERT_ENUM)
#undef CL__ALERT_ENUM
      CL_ALERT_KINDS
} cl_alert_kind_t;

/* "item_overdue", ...; NULL for a value out of range. */
CL_EXTERN const char *cl_alert_kind_name(int kind);

typedef struct cl_reaper_opts {
  int batch;                     /* rows per statement, 1..100000 (1000) */
  double worker_lost_after;      /* heartbeat intervals without one (3);
                                    workers that did not register their
                                    interval are left to lease expiry */
  double default_sla_s;          /* item_overdue after this (3600) */
  const char *const *sla_queues; /* per-queue SLAs: nsla names ... */
  const double *sla_s;           /* ... and seconds */
  size_t nsla;
  /* Retention, in seconds; 0 keeps forever.  Done and discarded items
   * (with their results and deliveries) are deleted this long after they
   * finished, unless a subscriber is still owed the result (7 days). */
  double retention_done_s;
  double retention_dead_s;    /* dead letters (0: kept) */
  double retention_alerts_s;  /* resolved alerts (30 days) */
  double retention_workers_s; /* silent workers holding no lease (1 day) */
} cl_reaper_opts_t;

typedef struct cl_cycle_info {
  cl_reap_info_t reap;         /* leases expired in the cycle */
  long workers_lost;           /* workers found lost (new or still lost) */
  long leases_released;        /* their leases made due at once */
  long raised[CL_ALERT_KINDS]; /* new alerts, by kind */
  long raised_total;
  long resolved;        /* alerts whose condition cleared */
  long deleted_items;   /* retention: done and discarded items */
  long deleted_dead;    /* retention: dead items */
  long deleted_alerts;  /* retention: resolved alerts */
  long deleted_workers; /* retention: long-silent workers */
} cl_cycle_info_t;

CL_EXTERN void cl_reaper_opts_init(cl_reaper_opts_t *o);
/* One full reaper cycle, each step in bounded batches (each its own short
 * transaction) until done: lost workers (alert, leases due now), stale
 * leases (the attempt spent, ready again or dead; lease_expired and item_dead
 * alerts), overdue items, deliveries in doubt, resolving the alerts whose
 * condition cleared, then retention.  It does not announce alerts (log
 * lines, hooks): the reaper daemon does (reaper.h).  Safe to run on several
 * hosts at once: every row is handled by one of them and each alert raised
 * once.  Fills info (zeroed first) and returns 0, or an error from the step
 * that failed. */
CL_EXTERN int cl_reap_cycle(cl_conn_t *c, const cl_reaper_opts_t *o,
                            cl_cycle_info_t *info);

/* ------------------------------------------------------------------------ */
/* Dead letters                                                              */

typedef struct cl_dead {
  char *item_id;
  char *queue;
  int attempts;
  int max_attempts;
  char *last_error;  /* the error it died with ("" when none) */
  char *finished_at; /* RFC 3339, when it died */
  char *payload;     /* JSON text */
} cl_dead_t;

/* Lists up to limit (1..100000) dead items of queue (NULL: all queues),
 * oldest first.  Stores a malloc'd array (free with cl_dead_free) and
 * returns 0. */
CL_EXTERN int cl_dead_list(cl_conn_t *c, const char *queue, int limit,
                           cl_dead_t **rows, size_t *count);
CL_EXTERN void cl_dead_free(cl_dead_t *rows, size_t count);
/* Puts dead items back to ready for a new round, attempts reset to 0 and
 * the error they died with kept in their history: the n items named in ids
 * (n >= 1), or, when ids is NULL, every dead item of queue.  Items that are
 * not dead are left as they are.  Returns the number put back, or an error.
 * Workers of the queue are woken. */
CL_EXTERN int cl_dead_retry(cl_conn_t *c, const char *const *ids, size_t n,
                            const char *queue);
/* Takes dead items out of the dead letters for good (state 'discarded';
 * the row stays so its item_id stays taken).  Arguments and return as
 * cl_dead_retry(). */
CL_EXTERN int cl_dead_discard(cl_conn_t *c, const char *const *ids, size_t n,
                              const char *queue);

/* ------------------------------------------------------------------------ */
/* Status                                                                    */

typedef struct cl_queue_status {
  char *queue;
  long ready;     /* ready now */
  long scheduled; /* ready but run_at in the future */
  long leased;
  long done;
  long dead;
  double oldest_ready_s; /* age of the oldest ready item, 0 when none */
  long stale;            /* leases past lease_until, not yet reaped */
} cl_queue_status_t;

/* Reads the per-queue view.  Stores a malloc'd array (free with
 * cl_status_free) and returns 0. */
CL_EXTERN int cl_status(cl_conn_t *c, cl_queue_status_t **rows, size_t *count);
CL_EXTERN void cl_status_free(cl_queue_status_t *rows, size_t count);

/* ------------------------------------------------------------------------ */
/* Subscribers and deliveries (the senders' side)                            */

/* A subscriber consumes the results of its queues (all when none are
 * given), each once: a delivery row keyed (subscriber, item_id) records it
 * (G5).  Names follow the queue rules (1..63 of [A-Za-z0-9_.-]). */
typedef struct cl_subscriber_opts {
  const char *const *queues; /* nqueues names; none: every queue */
  size_t nqueues;
  const char *from;     /* "now" (default: results from here on),
                           "beginning", or a position (decimal) */
  const char *in_doubt; /* "retry" (default: send again with the same key)
                           or "hold" (wait for a person) */
  int max_attempts;     /* attempts per delivery, then dead (0: 10) */
  int break_after;      /* the circuit breaker: failed attempts in a row
                           (any delivery; one sent resets) that pause the
                           subscriber with a subscriber_failing alert
                           (0: 100; < 0: never) */
  /* Flow control, shared by every sender of the subscriber through the
   * database (not per process): */
  int concurrency;      /* deliveries leased at once (0: no limit) */
  double rate;          /* deliveries started per second (0: no limit) */
  const char *ordering; /* "none" (default) or "fifo": one delivery at a
                           time, by position, each position delivered only
                           once final (no earlier one can still commit); a
                           failed or held delivery holds back the rest
                           until it is sent or dead */
  /* The retry schedule: the waits in seconds after the first, second, ...
   * failed attempt (the last repeats), each jittered +-10%; nbackoff 0:
   * 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h (the Standard Webhooks
   * example).  At most 50 waits, each in (0, 31 d]. */
  const double *backoff_s;
  size_t nbackoff;
} cl_subscriber_opts_t;

/* Which policy fields cl_subscriber_set() writes. */
enum {
  CL_SUB_QUEUES = 1 << 0,
  CL_SUB_IN_DOUBT = 1 << 1,
  CL_SUB_MAX_ATTEMPTS = 1 << 2,
  CL_SUB_BREAK_AFTER = 1 << 3,
  CL_SUB_CONCURRENCY = 1 << 4,
  CL_SUB_RATE = 1 << 5,
  CL_SUB_ORDERING = 1 << 6,
  CL_SUB_BACKOFF = 1 << 7,
  CL_SUB_ALL = (1 << 8) - 1
};

/* Adds subscriber name.  Returns 1 when created (its first position in
 * *from_pos, may be NULL), 0 when it existed already (nothing changed),
 * or CL_EINVAL for a bad name or option (message on c). */
CL_EXTERN int cl_subscriber_add(cl_conn_t *c, const char *name,
                                const cl_subscriber_opts_t *o,
                                long long *from_pos);
/* Changes the policy of subscriber name: the fields of o named in the
 * mask fields (CL_SUB_*), each as cl_subscriber_add() reads it (0 or NULL:
 * the default); the others, its cursor and its deliveries stay.  Returns
 * 0, CL_ENOTFOUND, or CL_EINVAL for a bad option (message on c; nothing
 * changed).  Declaring subscribers (a config file) is cl_subscriber_add()
 * and, when it existed, cl_subscriber_set(..., CL_SUB_ALL). */
CL_EXTERN int cl_subscriber_set(cl_conn_t *c, const char *name,
                                const cl_subscriber_opts_t *o, unsigned fields);
/* Pauses (paused 1, why may be NULL) or resumes (0) a subscriber: a
 * paused one is given nothing to send; nothing is lost.  Returns 0 or
 * CL_ENOTFOUND. */
CL_EXTERN int cl_subscriber_pause(cl_conn_t *c, const char *name, int paused,
                                  const char *why);
/* Removes a subscriber and its deliveries.  Refuses with CL_EBUSY while
 * some delivery is not 'sent' (their count in *unsettled, may be NULL)
 * unless force is 1.  Returns 0 or CL_ENOTFOUND. */
CL_EXTERN int cl_subscriber_remove(cl_conn_t *c, const char *name, int force,
                                   long *unsettled);

typedef struct cl_subscriber_status {
  char *name;
  char *queues; /* comma-separated; "" for every queue */
  int paused;
  char *paused_why;
  char *in_doubt;
  long long from_pos, cursor_pos;
  long pending, in_flight, retry, sent, held, dead;
  long long lag;       /* positions between the newest result and the cursor */
  int concurrency;     /* 0: no limit */
  double rate;         /* per second; 0: no limit */
  char *ordering;      /* "none" or "fifo" */
  double oldest_age_s; /* the oldest result owed and not yet sent (not
                          dead): seconds since it was written; -1 none */
  int max_attempts;    /* attempts per delivery, then dead */
  int break_after;     /* failed attempts in a row that pause it; 0 never */
  char *backoff;       /* its retry schedule in seconds, comma-separated;
                          "" for the default */
} cl_subscriber_status_t;

/* Every subscriber, by name (free with cl_subscribers_free). */
CL_EXTERN int cl_subscriber_list(cl_conn_t *c, cl_subscriber_status_t **rows,
                                 size_t *count);
CL_EXTERN void cl_subscribers_free(cl_subscriber_status_t *rows, size_t count);

typedef struct cl_delivery {
  char *item_id;
  char *queue;
  char *token;           /* fences the delivery's sent or fail */
  char *idempotency_key; /* stable for (subscriber, item_id) (G10) */
  char *result;          /* JSON text */
  char *payload;         /* the item's, JSON text */
  char *lease_until;     /* RFC 3339, database clock */
  int attempt;           /* 1 on the first send */
  long long pos;         /* the result's position */
  double wait_s;         /* the subscriber's rate limit: call the sink this
                            many seconds after the claim, not before (0
                            without a limit) */
} cl_delivery_t;

/* Claims up to n deliveries of subscriber for sender (a name, as a worker
 * has), each leased for lease_s seconds: failed attempts come due first
 * (and, under the 'retry' policy, deliveries left in doubt: sent again
 * with the same idempotency key), then results not yet delivered, by
 * position; no result is ever skipped, also one whose transaction
 * committed after a later one's.  Returns the number claimed (0 when none
 * is due, the subscriber is paused or unknown) with *out (free with
 * cl_deliveries_free), or an error. */
CL_EXTERN int cl_deliver_claim(cl_conn_t *c, const char *subscriber,
                               const char *sender, int n, double lease_s,
                               cl_delivery_t **out);
CL_EXTERN void cl_deliveries_free(cl_delivery_t *d, size_t count);

/* Records that the sink took the delivery.  Returns 0 (*already 1 when an
 * earlier call with this token had recorded it; may be NULL), or
 * CL_ELEASE_LOST when the token no longer holds it (it was leased again:
 * nothing written).  After a lost connection it reconnects and sends again
 * (G9), up to a few times; CL_ECONNLOST if it never could. */
CL_EXTERN int cl_delivery_sent(cl_conn_t *c, const char *subscriber,
                               const char *item_id, const char *token,
                               int *already);

typedef struct cl_delivery_fail_info {
  int dead;         /* 1: attempts spent (or no retry): a delivery_dead
                       alert was raised */
  int attempts;     /* attempts so far */
  char next_at[40]; /* RFC 3339 when due again */
  int already;      /* an earlier call with this token had recorded it */
} cl_delivery_fail_info_t;

/* Records a failed attempt: due again after retry_in seconds (< 0: the
 * subscriber's schedule, by default 5 s, 5 min, 30 min, 2 h, 5 h, then
 * 10 h, jittered) while
 * attempts remain and retry is 1, else dead.  Returns 0 or
 * CL_ELEASE_LOST, resending after a lost connection like
 * cl_delivery_sent.  info may be NULL. */
CL_EXTERN int cl_delivery_fail(cl_conn_t *c, const char *subscriber,
                               const char *item_id, const char *token,
                               const char *error, int retry, double retry_in,
                               cl_delivery_fail_info_t *info);

/* A delivery as a person sees it (cl_delivery_list). */
typedef struct cl_delivery_row {
  char *item_id;
  char *state; /* sending, retry, held, dead, sent */
  int attempts;
  char *idempotency_key;
  char *next_at;    /* RFC 3339, "" when not due again */
  char *updated_at; /* RFC 3339 */
  char *last_error; /* "" when none */
  long long pos;
} cl_delivery_row_t;

/* Deliveries of subscriber in state (NULL: every one not sent), by
 * position, at most limit.  Free with cl_delivery_rows_free. */
CL_EXTERN int cl_delivery_list(cl_conn_t *c, const char *subscriber,
                               const char *state, int limit,
                               cl_delivery_row_t **rows, size_t *count);
CL_EXTERN void cl_delivery_rows_free(cl_delivery_row_t *rows, size_t count);
/* Makes dead (or failed) deliveries due now with their attempts reset:
 * ids[0..n) of them, or every dead one when ids is NULL.  Returns how
 * many. */
CL_EXTERN int cl_delivery_retry(cl_conn_t *c, const char *subscriber,
                                const char *const *ids, size_t n);
/* Settles a delivery in doubt (held, or sending past its lease) as sent
 * (as_sent 1: the sink has it) or due again now with the same key (0).
 * Returns 0 or CL_ENOTFOUND (no such delivery in doubt). */
CL_EXTERN int cl_delivery_resolve(cl_conn_t *c, const char *subscriber,
                                  const char *item_id, int as_sent);
/* Sends sent deliveries again with their keys: those of results from
 * position from_pos on (>= 0), or sent since `since` (RFC 3339; NULL
 * for no bound).  Returns how many. */
CL_EXTERN int cl_delivery_replay(cl_conn_t *c, const char *subscriber,
                                 long long from_pos, const char *since);

#ifdef __cplusplus
}
#endif
#endif /* CLAIMER_H */
