/*
 * config.h: the configuration of claimer's daemons, read from a YAML file,
 * then overridden by CLAIMER_* environment variables, then by command-line
 * flags, in that order.  Every key is one row of a table in config.c, which
 * the YAML loader, the environment, the flags and the printer all go
 * through, so a key is named the same way everywhere: "worker.lease" in
 * the file is `worker: {lease: ...}`, CLAIMER_WORKER_LEASE in the
 * environment, and what cl_config_set() takes.  The configuration records
 * where each value came from, so `claimer config check` can say why a value
 * is what it is.
 *
 * Values in text form (environment, flags, and YAML scalars alike):
 *   durations  a number of seconds (may be fractional: 0.5), or a number
 *              with a unit: 250ms, 30s, 5m, 1h, 7d (a day is 86400 s).
 *              Never negative.
 *   sizes      a whole number of bytes, or one with a unit: B; KiB, MiB,
 *              GiB (1024-based); kB or KB, MB, GB (1000-based).
 *   queues     in YAML a list whose items are a name or {name: N, weight:
 *              W}; as text a comma-separated list of NAME or NAME:WEIGHT
 *              ("emails,payments:3").  A name that itself ends in ":DIGITS"
 *              needs its weight spelled out as text ("v:2:1").  Weights are
 *              1..1000 (default 1).
 *   per-queue  (reaper.queue_sla, reaper.queue_backoff: durations;
 *   maps       reaper.queue_max_attempts: integers) in YAML a map from
 *              queue name to value ({emails: 5m, payments: 30s}); as text
 *              a comma-separated list of NAME:VALUE ("emails:5m,
 *              payments:30s"), split at the last ':' so that a name may
 *              hold one ("v:2:1h").  A queue is named at most once.
 *   URLs       (reaper.hook.url) http:// or https:// with a host; shown
 *              with the password of their userinfo and every query value
 *              as "***".
 * An empty file (or one with only comments, or a lone null document) means
 * all defaults.  Anchors, aliases, tags and multiple documents are refused.
 * Strings may not hold control characters.
 *
 * The subscribers: section is the one part outside the key table: a map
 * from subscriber name to a record (queues, from, in_doubt, max_attempts,
 * break_after, concurrency, rate, ordering, and a sink of exactly one of
 * exec, webhook or pg), which `claimer send --config` and `claimer
 * subscriber sync` write to the database and serve.  It is read from the
 * file only: no CLAIMER_* variable and no cl_config_set() path reaches it,
 * since a list of records has no sensible one-line text form (and a
 * second file that has the section replaces the whole of it).
 */
#ifndef CLAIMER_CONFIG_H
#define CLAIMER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "claimer/claimer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest config file accepted, in bytes. */
#define CL_CONFIG_FILE_MAX 65536
/* Room for the per-key origins; config.c checks its table fits. */
#define CL_CONFIG_KEYS_MAX 64
/* The most queues one worker may serve, and the most entries of one
 * per-queue map (such as reaper.queue_sla). */
#define CL_CONFIG_QUEUES_MAX 256

typedef enum cl_log_format { CL_LOG_LOGFMT, CL_LOG_JSON } cl_log_format_t;

typedef struct cl_config_queue {
  char *name;
  int weight; /* 1..1000 */
} cl_config_queue_t;

/* The most subscribers one config declares (and one `claimer send`
 * serves). */
#define CL_CONFIG_SUBSCRIBERS_MAX 64

typedef enum cl_config_sink_kind {
  CL_CONFIG_SINK_NONE, /* only in a record not from a file: invalid */
  CL_CONFIG_SINK_EXEC,
  CL_CONFIG_SINK_WEBHOOK,
  CL_CONFIG_SINK_PG
} cl_config_sink_kind_t;

/* A subscriber's sink: what `claimer send` takes as --exec, --webhook with
 * --secret-file or --secret-env, --pg-target with --pg-sql, and
 * --timeout. */
typedef struct cl_config_sink {
  cl_config_sink_kind_t kind;
  char *exec;        /* CL_CONFIG_SINK_EXEC: the command (/bin/sh -c) */
  char *webhook;     /* CL_CONFIG_SINK_WEBHOOK: an http(s) URL, shown
                        masked as reaper.hook.url is ... */
  char *secret_file; /* ... and its signing secrets: a file (its path; the
                        secrets themselves are never read here) ... */
  char *secret_env;  /* ... or an environment variable's name */
  char *pg_target;   /* CL_CONFIG_SINK_PG: the target database's DSN, shown
                        with its password as "***" ... */
  char *pg_sql;      /* ... and the statement run there */
  double timeout_s;  /* per delivery, default 30, [0.1, 86400] */
  /* Where the values that only the sender can check (a secret file's mode
   * and contents, a statement's PREPARE) were in the file, as
   * "FILE:LINE:COLUMN"; NULL when not from a file. */
  char *secret_at, *target_at, *sql_at;
} cl_config_sink_t;

typedef enum cl_config_in_doubt {
  CL_CONFIG_IN_DOUBT_RETRY,
  CL_CONFIG_IN_DOUBT_HOLD
} cl_config_in_doubt_t;

typedef enum cl_config_ordering {
  CL_CONFIG_ORDERING_NONE,
  CL_CONFIG_ORDERING_FIFO
} cl_config_ordering_t;

/* One record of subscribers:, with the same ranges as `claimer subscriber
 * add` checks. */
typedef struct cl_config_subscriber {
  char *name;    /* the queue-name rules (cl_check_queue) */
  char **queues; /* nqueues names; none (default): every queue */
  size_t nqueues;
  char *from; /* "now", "beginning" or a position (decimal, >= 0); NULL
                 (default): now.  Used only when the subscriber is
                 created. */
  cl_config_in_doubt_t in_doubt; /* default retry */
  int max_attempts;              /* default 10, 1..1000 */
  int break_after;               /* default 100, 0..1000000; 0: never */
  int concurrency;               /* default 0 (no limit), 0..100000 */
  double rate;                   /* default 0 (no limit), 0..1000000 */
  cl_config_ordering_t ordering; /* default none */
  double *backoff_s; /* the retry schedule: nbackoff waits (at most 50,
                        each a duration in (0, 31 d]); none (default): the
                        Standard Webhooks example */
  size_t nbackoff;
  cl_config_sink_t sink;
  char *origin; /* "FILE:LINE" of its name; NULL when not from a file */
} cl_config_subscriber_t;

typedef struct cl_config {
  char *dsn;                  /* NULL: not set (CLAIMER_DSN is read by
                                 cl_config_apply_env; with neither, the
                                 caller picks the embedded PostgreSQL) */
  cl_log_format_t log_format; /* default logfmt */
  cl_level_t log_level;       /* default info */
  struct {
    char *name;                /* NULL: the caller picks host:pid */
    cl_config_queue_t *queues; /* default: none (the worker needs >= 1) */
    size_t nqueues;
    int concurrency;     /* default 8, 1..10000 */
    double lease_s;      /* default 30, (0, 604800] */
    double heartbeat_s;  /* default 0 = lease/3; else < lease */
    double poll_s;       /* default 2, [0.01, 3600] */
    char *command;       /* the exec handler; NULL: none */
    double timeout_s;    /* per item, default 300; 0 = none */
    size_t result_max;   /* stdout kept, default 1 MiB, 1..1 MiB */
    size_t stderr_max;   /* stderr tail kept, default 4096, 0..65536 */
    double drain_s;      /* graceful drain, default 30, [0, 86400] */
    double kill_grace_s; /* SIGTERM to SIGKILL, default 5, [0, 3600] */
    int prefetch;        /* default 0 = automatic (cl_worker_opts) */
  } worker;
  struct {
    double interval_s;      /* between cycles, default 5, [0.05, 86400] */
    int batch;              /* rows per statement, default 1000, 1..100000 */
    int worker_lost_after;  /* heartbeat intervals, default 3, 1..1000 */
    double sla_s;           /* item_overdue after, default 3600, (0, 3.2e9] */
    char **queue_sla_names; /* per-queue SLAs: nqueue_sla names ... */
    double *queue_sla_s;    /* ... and their seconds, (0, 3.2e9] */
    size_t nqueue_sla;      /* default 0: sla_s for every queue */
    /* The retry policy of items whose enqueue did not give their own:
     * attempts in all, and the delay before a retry, backoff_s after the
     * first failure, doubling per attempt, capped at backoff_max_s. */
    int max_attempts;                /* default 25, 1..1000000 */
    double backoff_s;                /* default 1, (0, 86400] */
    double backoff_max_s;            /* default 3600, (0, 31 d]; >= backoff_s */
    char **queue_max_attempts_names; /* per-queue max_attempts: names ... */
    int *queue_max_attempts;         /* ... and theirs, 1..1000000 */
    size_t nqueue_max_attempts;      /* default 0: max_attempts for all */
    char **queue_backoff_names;      /* per-queue backoff: names ... */
    double *queue_backoff_s;         /* ... and seconds, (0, 86400], each
                                        <= backoff_max_s */
    size_t nqueue_backoff;           /* default 0: backoff_s for every queue */
    struct {
      double done_s;    /* done items, default 7 d; 0 = keep */
      double dead_s;    /* dead and discarded items, default 0 = keep */
      double alerts_s;  /* resolved alerts, default 30 d; 0 = keep */
      double workers_s; /* silent workers holding no lease, default 1 d;
                           0 = keep */
    } retention;
    struct {
      char *exec;       /* run per new alert, JSON on stdin; NULL: none */
      char *url;        /* POSTed each new alert's JSON; NULL: none */
      double timeout_s; /* per attempt, default 10, (0, 3600] */
      int max_attempts; /* default 10, 1..1000 */
    } hook;
  } reaper;
  /* The subscribers: section, in the file's order (file only). */
  cl_config_subscriber_t *subscribers;
  size_t nsubscribers;
  /* Private: "FILE:LINE" of the subscribers: key (NULL: the default). */
  char *subscribers_origin_;
  /* Private: where each value came from, one malloc'd string per row of
   * the key table (NULL: the default).  Read it with cl_config_origin(). */
  char *origin_[CL_CONFIG_KEYS_MAX];
} cl_config_t;

/* Reads a duration as the config spells one (30, 0.5, 250ms, 30s, 5m, 1h,
 * 7d) into *out seconds.  Returns 0, or -1 when text is not one. */
int cl_config_parse_duration(const char *text, double *out);

/* Fills cfg with the defaults (no allocation; cl_config_free() is still
 * the way to dispose of it once anything has been loaded). */
void cl_config_init(cl_config_t *cfg);
/* Frees what cfg owns and leaves it holding the defaults.  Accepts NULL. */
void cl_config_free(cl_config_t *cfg);
/* Makes dst (uninitialised) a deep copy of src.  Returns 0 or CL_ENOMEM
 * (dst then holds the defaults). */
CL_MUST_CHECK int cl_config_copy(cl_config_t *dst, const cl_config_t *src);

/* The loaders, cl_config_apply_env() and cl_config_set() all leave cfg
 * untouched when they fail; they return 0, CL_ECONFIG or CL_ENOMEM, and
 * write a message into err (may be NULL).  Messages never hold a password,
 * and start with where the fault is: "FILE:LINE:COLUMN: " (1-based, the
 * offending node) for YAML, "env CLAIMER_X: " for the environment, and the
 * caller's origin for cl_config_set(). */

/* Reads the YAML file at path (at most CL_CONFIG_FILE_MAX bytes) over cfg:
 * keys the file sets replace the values in cfg, the others stay. */
CL_MUST_CHECK int cl_config_load_file(cl_config_t *cfg, const char *path,
                                      char *err, size_t errlen);
/* The same for the YAML text[0..len); name stands for the file's path in
 * messages and origins. */
CL_MUST_CHECK int cl_config_load_string(cl_config_t *cfg, const char *text,
                                        size_t len, const char *name, char *err,
                                        size_t errlen);
/* Applies every CLAIMER_<PATH> variable of the environment that names a
 * key (CLAIMER_DSN, CLAIMER_WORKER_LEASE, ...).  Other CLAIMER_* variables
 * are none of its business and are ignored.  An empty value is a value
 * (and usually a bad one), not an absence. */
CL_MUST_CHECK int cl_config_apply_env(cl_config_t *cfg, char *err,
                                      size_t errlen);
/* Sets the key at path (such as "worker.concurrency") from its text form,
 * recording origin (copied; such as "flag --concurrency"; NULL: "set"). */
CL_MUST_CHECK int cl_config_set(cl_config_t *cfg, const char *path,
                                const char *value, const char *origin,
                                char *err, size_t errlen);
/* Checks every value against its range and the rules between keys (the
 * heartbeat shorter than the lease), and every subscriber record (its
 * fields, and a sink of exactly one kind with what that kind needs).
 * Returns 0 or CL_ECONFIG. */
CL_MUST_CHECK int cl_config_validate(const cl_config_t *cfg, char *err,
                                     size_t errlen);

/* Writes cfg as YAML that cl_config_load_*() reads back, every key with a
 * comment saying where its value came from: "default", "FILE:LINE",
 * "env CLAIMER_X" or the origin given to cl_config_set(); then the
 * subscribers, each record with every field.  The dsn and reaper.hook.url
 * are shown with their passwords replaced by "***", and the url's query
 * values too (cl_config_mask_url); so are each webhook URL and pg target
 * of the subscribers.  Returns 0, CL_EIO when out could not be written, or
 * CL_ENOMEM. */
int cl_config_print(const cl_config_t *cfg, FILE *out);

/* Masks, in place, what of an http(s) URL may be a secret: the password of
 * its userinfo ("https://user:***@host") and the value of every query
 * parameter ("?token=***&channel=***"; the names and the fragment stay).
 * Each becomes "***", or as many '*' as it had bytes when shorter, and the
 * rest moves up, so url never grows (the freed bytes are zeroed): it can
 * rewrite a command-line argument in place.  Text without "SCHEME://", or
 * NULL, is left alone. */
void cl_config_mask_url(char *url);

/* Returns where the value of the key at path came from ("default" when
 * never set), owned by cfg; NULL when there is no such key. */
const char *cl_config_origin(const cl_config_t *cfg, const char *path);
/* The values the worker runs with when a key says "0 = automatic": the
 * heartbeat interval (lease/3 when unset) and the prefetch (-1 when unset:
 * the worker sizes it, cl_worker_opts.prefetch). */
double cl_config_heartbeat_s(const cl_config_t *cfg);
int cl_config_prefetch(const cl_config_t *cfg);
/* Returns 1 when cfg carries a queue retry policy: any of reaper.
 * max_attempts, backoff, backoff_max, queue_max_attempts or queue_backoff
 * was set by a file, the environment or cl_config_set() (even to its
 * default value); 0 when all five are defaults.  The reaper writes the
 * policy to the database only then, so that a reaper without one never
 * overwrites another's. */
int cl_config_queue_policy_set(const cl_config_t *cfg);

/* Returns the subscriber of cfg called name, owned by cfg; NULL when the
 * config declares none such. */
const cl_config_subscriber_t *cl_config_subscriber(const cl_config_t *cfg,
                                                   const char *name);
/* Fills o with the policy of s as cl_subscriber_add() and
 * cl_subscriber_set(..., CL_SUB_ALL) take it (break_after 0, never, as
 * -1).  o borrows s's strings and queue names: it is valid while s is. */
void cl_config_subscriber_opts(const cl_config_subscriber_t *s,
                               cl_subscriber_opts_t *o);

#ifdef __cplusplus
}
#endif
#endif /* CLAIMER_CONFIG_H */
