/*
 * config.c: the configuration of claimer's daemons: a table with one row
 * per key, and the four ways in and one way out that go through it.  The
 * YAML loader turns libyaml's events into a small tree (so that every node
 * keeps its line and column, and duplicate keys can be caught), then walks
 * the tree against the table; the environment, cl_config_set() and the
 * validator parse and check text with the same per-kind code; the printer
 * writes the table back out as YAML.  Adding a key, or a whole section
 * ("reaper.interval", say), is adding a field to cl_config_t and a row to
 * the table: the path's dots make the sections, and the environment name
 * is derived from the path.  Every change is all-or-nothing: the work is
 * done on a scratch copy that replaces the caller's configuration only once
 * all of it succeeded.  Messages quote bad values escaped (control
 * characters and invalid UTF-8 as \xNN), never quote a connection string
 * or a URL, and so never show a password.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "claimer/worker.h"
#include "config.h"
#include "internal.h"
#include "text.h"

/* How much of a bad value a message quotes back. */
#define ECHO_MAX 40
/* How deep YAML may nest; the deepest real config is 4 levels (top, worker,
 * queues, one queue; or top, reaper, hook, url), so this only stops a
 * hostile file from eating the stack. */
#define DEPTH_MAX 16
/* The longest key path, and the longest key the suggestion looks at. */
#define PATH_MAX_LEN 128
/* The column where the printer's origin comments start. */
#define COMMENT_COL 40
#define COMMAND_MAX 4096
#define WEIGHT_MAX 1000
/* The longest SLA or retention, in seconds (about a century): far past any
 * real need, and well inside what PostgreSQL's intervals and a double's
 * exact seconds hold. */
#define LONG_MAX_S 3.2e9
#define DAY_S 86400
/* The most attempts an item may be given, as the enqueue checks it too. */
#define ATTEMPTS_MAX 1000000

/* ------------------------------------------------------------------------ */
/* The key table                                                             */

typedef enum kind {
  K_STRING,   /* char *, NULL when unset; checked by the row's check */
  K_DSN,      /* char *, a libpq connection string; never echoed */
  K_ENUM,     /* an enum stored as int; the row's names by value */
  K_INT,      /* int in [min, max] */
  K_DURATION, /* double seconds in [min, max] (min excluded if min_open) */
  K_SIZE,     /* size_t bytes in [min, max] */
  K_QUEUES,   /* cl_config_queue_t *, with the count right after it */
  K_URL,      /* char *, an http(s) URL; its password never echoed */
  K_QMAP,     /* a per-queue map: char **names, then the values (double *
                 or int *, each checked against the row's item), then
                 size_t count, in a row */
} kind_t;

typedef struct keydef {
  const char *path; /* "worker.lease": sections, then the key */
  kind_t kind;
  size_t offset; /* of the field in cl_config_t */
  double def;    /* the default of numeric and enum kinds */
  double min, max;
  bool min_open;
  const char *const *names; /* K_ENUM */
  /* K_STRING: returns 0 or an error with a message; NULL: check_text */
  int (*check)(const char *s, char *err, size_t errlen);
  const char *zero; /* what 0 (or unset) means, for the printer */
  /* K_QMAP: the row each value is checked against, a K_DURATION or a
   * K_INT whose path names the value in messages ("queue "q": SLA ...") */
  const struct keydef *item;
  bool policy; /* part of the queue retry policy the reaper stores */
} keydef_t;

static int check_text(const char *s, char *err, size_t errlen);
static int check_command(const char *s, char *err, size_t errlen);
static int check_url(const char *s, char *err, size_t errlen);
static int check_env_name(const char *s, char *err, size_t errlen);

static const char *const format_names[] = {"logfmt", "json", NULL};
static const char *const level_names[] = {"debug", "info", "warning", "error",
                                          NULL};

#define OFF(field) offsetof(cl_config_t, field)

/* The values of the per-queue maps. */
static const keydef_t sla_item = {
    .path = "SLA", .kind = K_DURATION, .max = LONG_MAX_S, .min_open = true};
static const keydef_t attempts_item = {
    .path = "max_attempts", .kind = K_INT, .min = 1, .max = ATTEMPTS_MAX};
static const keydef_t backoff_item = {
    .path = "backoff", .kind = K_DURATION, .max = DAY_S, .min_open = true};

/* The environment name of a row is CLAIMER_ and its path in upper case
 * with dots as underscores, so a new key must not land on a name other
 * tools use (CLAIMER_HOME, CLAIMER_CONFIG, CLAIMER_TEST_DSN, CLAIMER_PG_USER,
 * CLAIMER_ITEM_*). */
static const keydef_t keys[] = {
    {"dsn", K_DSN, OFF(dsn), .zero = "the embedded PostgreSQL"},
    {"log.format", K_ENUM, OFF(log_format), CL_LOG_LOGFMT,
     .names = format_names},
    {"log.level", K_ENUM, OFF(log_level), CL_LEVEL_INFO, .names = level_names},
    {"worker.name", K_STRING, OFF(worker.name), .check = cl_check_worker,
     .zero = "host:pid"},
    {"worker.queues", K_QUEUES, OFF(worker.queues),
     .zero = "none; the worker needs one"},
    {"worker.concurrency", K_INT, OFF(worker.concurrency), 8, 1, 10000},
    {"worker.lease", K_DURATION, OFF(worker.lease_s), 30, CL_WORKER_LEASE_MIN,
     604800},
    {"worker.heartbeat", K_DURATION, OFF(worker.heartbeat_s), 0, 0, 604800,
     .zero = "lease/3"},
    {"worker.poll_interval", K_DURATION, OFF(worker.poll_s), 2, 0.01, 3600},
    {"worker.command", K_STRING, OFF(worker.command), .check = check_command,
     .zero = "no handler"},
    {"worker.timeout", K_DURATION, OFF(worker.timeout_s), 300, 0, 604800,
     .zero = "no timeout"},
    {"worker.result_max", K_SIZE, OFF(worker.result_max), 1048576, 1, 1048576},
    {"worker.stderr_max", K_SIZE, OFF(worker.stderr_max), 4096, 0, 65536,
     .zero = "nothing kept"},
    {"worker.drain_timeout", K_DURATION, OFF(worker.drain_s), 30, 0, 86400,
     .zero = "no waiting"},
    {"worker.kill_grace", K_DURATION, OFF(worker.kill_grace_s), 5, 0, 3600,
     .zero = "SIGKILL at once"},
    {"worker.prefetch", K_INT, OFF(worker.prefetch), 0, 0, 10000,
     .zero = "concurrency/4, rounded up"},
    {"reaper.interval", K_DURATION, OFF(reaper.interval_s), 5, 0.05, DAY_S},
    {"reaper.batch", K_INT, OFF(reaper.batch), 1000, 1, 100000},
    {"reaper.worker_lost_after", K_INT, OFF(reaper.worker_lost_after), 3, 1,
     1000},
    {"reaper.sla", K_DURATION, OFF(reaper.sla_s), 3600, 0, LONG_MAX_S,
     .min_open = true},
    {"reaper.queue_sla", K_QMAP, OFF(reaper.queue_sla_names), .item = &sla_item,
     .zero = "reaper.sla for every queue"},
    {"reaper.max_attempts", K_INT, OFF(reaper.max_attempts), 25, 1,
     ATTEMPTS_MAX, .policy = true},
    {"reaper.backoff", K_DURATION, OFF(reaper.backoff_s), 1, 0, DAY_S,
     .min_open = true, .policy = true},
    {"reaper.backoff_max", K_DURATION, OFF(reaper.backoff_max_s), 3600, 0,
     31 * DAY_S, .min_open = true, .policy = true},
    {"reaper.queue_max_attempts", K_QMAP, OFF(reaper.queue_max_attempts_names),
     .item = &attempts_item, .zero = "reaper.max_attempts for every queue",
     .policy = true},
    {"reaper.queue_backoff", K_QMAP, OFF(reaper.queue_backoff_names),
     .item = &backoff_item, .zero = "reaper.backoff for every queue",
     .policy = true},
    {"reaper.retention.done", K_DURATION, OFF(reaper.retention.done_s),
     7 * DAY_S, 0, LONG_MAX_S, .zero = "keep forever"},
    {"reaper.retention.dead", K_DURATION, OFF(reaper.retention.dead_s), 0, 0,
     LONG_MAX_S, .zero = "keep forever"},
    {"reaper.retention.alerts", K_DURATION, OFF(reaper.retention.alerts_s),
     30 * DAY_S, 0, LONG_MAX_S, .zero = "keep forever"},
    {"reaper.retention.workers", K_DURATION, OFF(reaper.retention.workers_s),
     DAY_S, 0, LONG_MAX_S, .zero = "keep forever"},
    {"reaper.hook.exec", K_STRING, OFF(reaper.hook.exec),
     .check = check_command, .zero = "no command"},
    {"reaper.hook.url", K_URL, OFF(reaper.hook.url), .zero = "no URL"},
    {"reaper.hook.timeout", K_DURATION, OFF(reaper.hook.timeout_s), 10, 0, 3600,
     .min_open = true},
    {"reaper.hook.max_attempts", K_INT, OFF(reaper.hook.max_attempts), 10, 1,
     1000},
};

#define NKEYS (sizeof keys / sizeof keys[0])

_Static_assert(NKEYS <= CL_CONFIG_KEYS_MAX, "raise CL_CONFIG_KEYS_MAX");
_Static_assert(sizeof(cl_log_format_t) == sizeof(int) &&
                   sizeof(cl_level_t) == sizeof(int),
               "K_ENUM fields are accessed as int");

/* The weight of a queue inside a YAML list is checked against this row. */
static const keydef_t weight_key = {"weight", K_INT, 0, 1, 1, WEIGHT_MAX};

_Static_assert(offsetof(cl_config_t, worker.nqueues) ==
                   offsetof(cl_config_t, worker.queues) +
                       sizeof(cl_config_queue_t *),
               "a K_QUEUES count follows its array");
#define QMAP_LAYOUT(names, values, count)                                      \
  _Static_assert(offsetof(cl_config_t, values) ==                              \
                         offsetof(cl_config_t, names) + sizeof(char **) &&     \
                     offsetof(cl_config_t, count) ==                           \
                         offsetof(cl_config_t, values) + sizeof(void *),       \
                 "a K_QMAP field is names, values and count in a row")
QMAP_LAYOUT(reaper.queue_sla_names, reaper.queue_sla_s, reaper.nqueue_sla);
QMAP_LAYOUT(reaper.queue_max_attempts_names, reaper.queue_max_attempts,
            reaper.nqueue_max_attempts);
QMAP_LAYOUT(reaper.queue_backoff_names, reaper.queue_backoff_s,
            reaper.nqueue_backoff);
_Static_assert(sizeof(double *) == sizeof(void *) &&
                   sizeof(int *) == sizeof(void *),
               "a K_QMAP field's values are one pointer");

static void *field(const cl_config_t *cfg, const keydef_t *k) {
  return (char *)cfg + k->offset;
}

/* The count that follows the array of a K_QUEUES field f. */
static size_t *queue_count(void *f) {
  return (size_t *)((char *)f + sizeof(cl_config_queue_t *));
}

/* The parts of a K_QMAP field f: the values are secs or ints as the
 * row's item is a K_DURATION or a K_INT. */
static char ***qmap_names(void *f) { return (char ***)f; }
static double **qmap_secs(void *f) {
  return (double **)((char *)f + sizeof(char **));
}
static int **qmap_ints(void *f) {
  return (int **)((char *)f + sizeof(char **));
}
static size_t *qmap_count(void *f) {
  return (size_t *)((char *)f + sizeof(char **) + sizeof(void *));
}

/* Returns true for the kinds held as one malloc'd string. */
static bool is_string(const keydef_t *k) {
  return k->kind == K_STRING || k->kind == K_DSN || k->kind == K_URL;
}

/* Returns true for the kinds that own memory. */
static bool is_owned(const keydef_t *k) {
  return is_string(k) || k->kind == K_QUEUES || k->kind == K_QMAP;
}

static size_t key_index(const keydef_t *k) { return (size_t)(k - keys); }

static const keydef_t *find_key(const char *path) {
  for (size_t i = 0; i < NKEYS; i++)
    if (strcmp(keys[i].path, path) == 0)
      return &keys[i];
  return NULL;
}

/* Returns true when some key lives under path (a section such as
 * "worker"). */
static bool is_section(const char *path) {
  size_t n = strlen(path);
  for (size_t i = 0; i < NKEYS; i++)
    if (strncmp(keys[i].path, path, n) == 0 && keys[i].path[n] == '.')
      return true;
  return false;
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

/* Writes s[0..len) into out as text that is safe to print (text.c's
 * escape, '"' and '\' escaped too when quoted), at most ECHO_MAX bytes of
 * s, "..." marking a cut. */
static void echo_n(char *out, size_t outlen, const char *s, size_t len,
                   bool quoted) {
  cl__escape(out, outlen, s, len, ECHO_MAX, quoted ? CL__ESC_QUOTES : 0);
}

/* Room for an echo of ECHO_MAX bytes, uncut. */
#define ECHO_LEN CL__ESC_SIZE(ECHO_MAX)

static void echo(char out[ECHO_LEN], const char *s, bool quoted) {
  echo_n(out, ECHO_LEN, s, strlen(s), quoted);
}

/* The optimal string alignment distance between a[0..an) and b[0..bn)
 * (edits, counting a swap of neighbours as one), both at most
 * PATH_MAX_LEN. */
static size_t edit_distance(const char *a, size_t an, const char *b,
                            size_t bn) {
  size_t d[3][PATH_MAX_LEN + 1]; /* rows i-2, i-1, i, used in turn */
  for (size_t j = 0; j <= bn; j++)
    d[0][j] = j;
  for (size_t i = 1; i <= an; i++) {
    size_t *cur = d[i % 3], *prev = d[(i - 1) % 3], *pp = d[(i - 2) % 3];
    cur[0] = i;
    for (size_t j = 1; j <= bn; j++) {
      size_t cost = a[i - 1] != b[j - 1];
      size_t v = prev[j - 1] + cost;
      if (prev[j] + 1 < v)
        v = prev[j] + 1;
      if (cur[j - 1] + 1 < v)
        v = cur[j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          pp[j - 2] + 1 < v)
        v = pp[j - 2] + 1;
      cur[j] = v;
    }
  }
  return d[an % 3][bn];
}

typedef struct span {
  const char *p;
  size_t n;
} span_t;

/* Returns the index of the candidate word most likely meant, or -1: one
 * within two edits (one for words of three letters or fewer, so "foo" is
 * not taken for "log"), or one that word is the start of ("conc"). */
static int suggest(const char *word, const span_t *cand, size_t ncand) {
  size_t wn = strlen(word);
  int best = -1;
  size_t best_d = SIZE_MAX;
  if (wn == 0 || wn > PATH_MAX_LEN)
    return -1;
  for (size_t i = 0; i < ncand; i++) {
    if (cand[i].n > PATH_MAX_LEN)
      continue;
    size_t d = edit_distance(word, wn, cand[i].p, cand[i].n);
    size_t longer = wn > cand[i].n ? wn : cand[i].n;
    bool near = d <= 2 && 2 * d < longer;
    bool prefix = wn >= 3 && wn < cand[i].n && !strncmp(word, cand[i].p, wn);
    if ((near || prefix) && d < best_d) {
      best = (int)i;
      best_d = d;
    }
  }
  return best;
}

/* Writes ` (did you mean "X"?)` into out when a candidate is close to
 * word, "" otherwise. */
static void did_you_mean(char *out, size_t outlen, const char *word,
                         const span_t *cand, size_t ncand) {
  int s = suggest(word, cand, ncand);
  if (s < 0)
    out[0] = '\0';
  else
    snprintf(out, outlen, " (did you mean \"%.*s\"?)", (int)cand[s].n,
             cand[s].p);
}

/* Fills cand with the distinct names one level below section ("" for the
 * top) and returns how many. */
static size_t children(const char *section, span_t cand[NKEYS]) {
  size_t sn = strlen(section), n = 0;
  for (size_t i = 0; i < NKEYS; i++) {
    const char *p = keys[i].path;
    if (sn > 0) {
      if (strncmp(p, section, sn) != 0 || p[sn] != '.')
        continue;
      p += sn + 1;
    }
    size_t len = strcspn(p, ".");
    bool seen = false;
    for (size_t j = 0; j < n && !seen; j++)
      seen = cand[j].n == len && strncmp(cand[j].p, p, len) == 0;
    if (!seen)
      cand[n++] = (span_t){p, len};
  }
  return n;
}

/* ------------------------------------------------------------------------ */
/* Values in text form                                                       */

typedef struct value {
  long long i;          /* K_INT, K_ENUM */
  double d;             /* K_DURATION */
  size_t z;             /* K_SIZE */
  char *s;              /* K_STRING, K_DSN, K_URL; NULL: unset */
  cl_config_queue_t *q; /* K_QUEUES */
  size_t nq;
  char **mn;  /* K_QMAP: the queue names ... */
  double *md; /* ... and their values: seconds (a K_DURATION item) ... */
  int *mi;    /* ... or integers (a K_INT item) */
  size_t nm;
} value_t;

static void queues_free(cl_config_queue_t *q, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(q[i].name);
  free(q);
}

static void value_free(value_t *v) {
  free(v->s);
  queues_free(v->q, v->nq);
  for (size_t i = 0; i < v->nm; i++)
    free(v->mn[i]);
  free(v->mn);
  free(v->md);
  free(v->mi);
  *v = (value_t){0};
}

/* Returns the index of the queue called name in v, or -1. */
static long queue_find(const value_t *v, const char *name) {
  for (size_t i = 0; i < v->nq; i++)
    if (strcmp(v->q[i].name, name) == 0)
      return (long)i;
  return -1;
}

/* Appends a copy of name with weight to v.  Returns 0 or CL_ENOMEM. */
static int queue_push(value_t *v, const char *name, int weight) {
  cl_config_queue_t *q = realloc(v->q, (v->nq + 1) * sizeof *q);
  if (q == NULL)
    return CL_ENOMEM;
  v->q = q;
  if ((q[v->nq].name = strdup(name)) == NULL)
    return CL_ENOMEM;
  q[v->nq++].weight = weight;
  return 0;
}

/* Returns the index of the queue called name in the per-queue map v, or
 * -1. */
static long qmap_find(const value_t *v, const char *name) {
  for (size_t i = 0; i < v->nm; i++)
    if (strcmp(v->mn[i], name) == 0)
      return (long)i;
  return -1;
}

/* Returns entry i of the per-queue map v as a value of row item. */
static value_t qmap_get(const value_t *v, const keydef_t *item, size_t i) {
  value_t one = {0};
  if (item->kind == K_INT)
    one.i = v->mi[i];
  else
    one.d = v->md[i];
  return one;
}

/* Appends a copy of name with one (a value of row item) to the per-queue
 * map v.  Returns 0 or CL_ENOMEM. */
static int qmap_push(value_t *v, const keydef_t *item, const char *name,
                     const value_t *one) {
  char **mn = realloc(v->mn, (v->nm + 1) * sizeof *mn);
  if (mn == NULL)
    return CL_ENOMEM;
  v->mn = mn;
  if (item->kind == K_INT) {
    int *mi = realloc(v->mi, (v->nm + 1) * sizeof *mi);
    if (mi == NULL)
      return CL_ENOMEM;
    v->mi = mi;
    mi[v->nm] = (int)one->i;
  } else {
    double *md = realloc(v->md, (v->nm + 1) * sizeof *md);
    if (md == NULL)
      return CL_ENOMEM;
    v->md = md;
    md[v->nm] = one->d;
  }
  if ((mn[v->nm] = strdup(name)) == NULL)
    return CL_ENOMEM;
  v->nm++;
  return 0;
}

/* Reads the K_QMAP field f of row k into v, borrowing its arrays. */
static void qmap_load(const keydef_t *k, void *f, value_t *v) {
  v->mn = *qmap_names(f);
  v->md = k->item->kind == K_INT ? NULL : *qmap_secs(f);
  v->mi = k->item->kind == K_INT ? *qmap_ints(f) : NULL;
  v->nm = *qmap_count(f);
}

/* Points the K_QMAP field f of row k at v's arrays. */
static void qmap_save(const keydef_t *k, void *f, const value_t *v) {
  *qmap_names(f) = v->mn;
  if (k->item->kind == K_INT)
    *qmap_ints(f) = v->mi;
  else
    *qmap_secs(f) = v->md;
  *qmap_count(f) = v->nm;
}

/* Parses an optional '-' and decimal digits.  Returns 0, -1 when text is
 * not such a number, -2 when it does not fit. */
static int parse_ll(const char *text, long long *out) {
  const char *p = text + (text[0] == '-');
  if (*p == '\0' || strspn(p, "0123456789") != strlen(p))
    return -1;
  errno = 0;
  long long v = strtoll(text, NULL, 10);
  if (errno == ERANGE)
    return -2;
  *out = v;
  return 0;
}

/* Parses "DIGITS[.DIGITS]" at the start of text into *out (without
 * strtod, whose decimal point follows the locale) and returns the length
 * read, or 0 when text does not start with one. */
static size_t parse_decimal(const char *text, double *out) {
  size_t n = strspn(text, "0123456789");
  if (n == 0)
    return 0;
  double v = 0;
  for (size_t i = 0; i < n; i++)
    v = v * 10 + (text[i] - '0');
  if (text[n] == '.') {
    size_t f = strspn(text + n + 1, "0123456789");
    if (f == 0)
      return 0;
    double scale = 1;
    double frac = 0;
    for (size_t i = 0; i < f && i < 17; i++) {
      frac = frac * 10 + (text[n + 1 + i] - '0');
      scale *= 10;
    }
    v += frac / scale;
    n += 1 + f;
  }
  *out = v;
  return n;
}

/* Parses a duration ("1.5", "250ms", "30s", "5m", "1h", "7d") into
 * seconds.  Returns 0 or -1. */
static int parse_duration(const char *text, double *out) {
  static const struct {
    const char *unit;
    double div, mul;
  } units[] = {{"", 1, 1},   {"ms", 1000, 1}, {"s", 1, 1},
               {"m", 1, 60}, {"h", 1, 3600},  {"d", 1, DAY_S}};
  double v;
  size_t n = parse_decimal(text, &v);
  if (n == 0)
    return -1;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(text + n, units[i].unit) == 0) {
      *out = v / units[i].div * units[i].mul;
      return 0;
    }
  }
  return -1;
}

int cl_config_parse_duration(const char *text, double *out) {
  return parse_duration(text, out);
}

/* Parses a size ("4096", "64KiB", "1MB") into bytes.  Returns 0, -1 when
 * text is not a size, -2 when it does not fit. */
static int parse_size(const char *text, size_t *out) {
  static const struct {
    const char *unit;
    unsigned long long mul;
  } units[] = {{"", 1},
               {"B", 1},
               {"KiB", 1ULL << 10},
               {"MiB", 1ULL << 20},
               {"GiB", 1ULL << 30},
               {"kB", 1000},
               {"KB", 1000},
               {"MB", 1000000},
               {"GB", 1000000000}};
  size_t n = strspn(text, "0123456789");
  if (n == 0)
    return -1;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(text + n, units[i].unit) != 0)
      continue;
    errno = 0;
    unsigned long long v = strtoull(text, NULL, 10);
    if (errno == ERANGE || v > SIZE_MAX / units[i].mul)
      return -2;
    *out = (size_t)(v * units[i].mul);
    return 0;
  }
  return -1;
}

/* Writes seconds in the largest unit that shows it exactly: "250ms",
 * "30s", "5m", "1h", "7d"; what parse_duration() reads back. */
static void format_duration(char *out, size_t n, double s) {
  if (s >= DAY_S && fmod(s, DAY_S) == 0)
    snprintf(out, n, "%.15gd", s / DAY_S);
  else if (s >= 3600 && fmod(s, 3600) == 0)
    snprintf(out, n, "%.15gh", s / 3600);
  else if (s >= 60 && fmod(s, 60) == 0)
    snprintf(out, n, "%.15gm", s / 60);
  else if (s > 0 && s < 1 && fabs(s * 1000 - nearbyint(s * 1000)) < 1e-9)
    snprintf(out, n, "%.15gms", nearbyint(s * 1000));
  else
    snprintf(out, n, "%.15gs", s);
}

static void format_size(char *out, size_t n, size_t z) {
  if (z > 0 && z % (1u << 30) == 0)
    snprintf(out, n, "%zuGiB", z >> 30);
  else if (z > 0 && z % (1u << 20) == 0)
    snprintf(out, n, "%zuMiB", z >> 20);
  else if (z > 0 && z % (1u << 10) == 0)
    snprintf(out, n, "%zuKiB", z >> 10);
  else
    snprintf(out, n, "%zu", z);
}

/* Writes "one of a, b, c" for an enum row. */
static void enum_list(char *out, size_t n, const keydef_t *k) {
  size_t o = (size_t)snprintf(out, n, "one of");
  for (size_t i = 0; k->names[i] != NULL && o < n; i++)
    o += (size_t)snprintf(out + o, n - o, "%s %s", i ? "," : "", k->names[i]);
}

/* Describes what a value of row k looks like, for "expected X". */
static void expected(char *out, size_t n, const keydef_t *k) {
  switch (k->kind) {
  case K_STRING:
    snprintf(out, n, "a string");
    break;
  case K_DSN:
    snprintf(out, n, "a connection string");
    break;
  case K_ENUM:
    enum_list(out, n, k);
    break;
  case K_INT:
    snprintf(out, n, "an integer");
    break;
  case K_DURATION:
    snprintf(out, n, "a duration");
    break;
  case K_SIZE:
    snprintf(out, n, "a size");
    break;
  case K_QUEUES:
    snprintf(out, n, "a list of queues");
    break;
  case K_URL:
    snprintf(out, n, "a URL");
    break;
  case K_QMAP:
    snprintf(out, n, "a map of queue names to %s",
             k->item->kind == K_INT ? "integers" : "durations");
    break;
  }
}

/* Returns true when v is inside row k's range. */
static bool in_range(const keydef_t *k, const value_t *v) {
  switch (k->kind) {
  case K_INT:
    return v->i >= (long long)k->min && v->i <= (long long)k->max;
  case K_DURATION:
    return (k->min_open ? v->d > k->min : v->d >= k->min) && v->d <= k->max;
  case K_SIZE:
    return v->z >= (size_t)k->min && v->z <= (size_t)k->max;
  default:
    return true;
  }
}

/* Writes "SHOWN is out of range MIN..MAX" for row k. */
static void range_why(char *why, size_t n, const keydef_t *k,
                      const char *shown) {
  char lo[32], hi[32];
  switch (k->kind) {
  case K_DURATION:
    format_duration(lo, sizeof lo, k->min);
    format_duration(hi, sizeof hi, k->max);
    break;
  case K_SIZE:
    format_size(lo, sizeof lo, (size_t)k->min);
    format_size(hi, sizeof hi, (size_t)k->max);
    break;
  default:
    snprintf(lo, sizeof lo, "%.0f", k->min);
    snprintf(hi, sizeof hi, "%.0f", k->max);
    break;
  }
  if (k->min_open)
    cl__msg(why, n, "%s is out of range (more than %s, at most %s)", shown, lo,
            hi);
  else
    cl__msg(why, n, "%s is out of range %s..%s", shown, lo, hi);
}

/* The rule for free text (any K_STRING row without a check of its own):
 * text.c's, 1..COMMAND_MAX bytes of UTF-8 without control characters,
 * which in a command line or a log would only hide what is really there. */
static int check_text(const char *s, char *err, size_t errlen) {
  return cl__check_text(NULL, s, COMMAND_MAX, 0, err, errlen);
}

/* The rule for a command that `/bin/sh -c` runs (worker.command,
 * reaper.hook.exec): free text that may span lines, as a YAML block
 * (`command: |`) does; the shell runs each line.  A carriage return, a tab
 * and the other control characters are still refused. */
static int check_command(const char *s, char *err, size_t errlen) {
  return cl__check_text(NULL, s, COMMAND_MAX, CL__TEXT_LINES, err, errlen);
}

/* The rule for the name of an environment variable (a webhook sink's
 * secret_env): letters, digits and '_', not starting with a digit, as the
 * shell can set it. */
static int check_env_name(const char *s, char *err, size_t errlen) {
  static const char word[] = "abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
  if (check_text(s, err, errlen) != 0)
    return CL_EINVAL;
  if (strspn(s, word) != strlen(s) || isdigit((unsigned char)s[0])) {
    char shown[ECHO_LEN];
    echo(shown, s, true);
    cl__msg(err, errlen,
            "\"%s\" is not the name of an environment variable (letters, "
            "digits and _, not starting with a digit)",
            shown);
    return CL_EINVAL;
  }
  return 0;
}

/* Returns true when s[0..n) is a port: 1..65535 in decimal. */
static bool is_port(const char *s, size_t n) {
  if (n == 0 || n > 5 || strspn(s, "0123456789") < n)
    return false;
  long v = strtol(s, NULL, 10);
  return v >= 1 && v <= 65535;
}

/* Finds the authority of url (what follows "SCHEME://" up to the path,
 * query or fragment): sets *auth and *alen and returns true, or returns
 * false when url has no "SCHEME://". */
static bool url_authority(const char *url, const char **auth, size_t *alen) {
  static const char scheme_chars[] = "abcdefghijklmnopqrstuvwxyz"
                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-";
  size_t sl = strspn(url, scheme_chars);
  if (sl == 0 || !isalpha((unsigned char)url[0]) ||
      strncmp(url + sl, "://", 3) != 0)
    return false;
  *auth = url + sl + 3;
  *alen = strcspn(*auth, "/?#");
  return true;
}

/* The rule for a webhook URL: text as check_text() takes it, without
 * spaces, "http://" or "https://", a host, and if a port then a good one.
 * Messages never quote the URL (its userinfo may hold a password), only
 * the scheme. */
static int check_url(const char *s, char *err, size_t errlen) {
  if (check_text(s, err, errlen) != 0)
    return CL_EINVAL;
  const char *space = strchr(s, ' ');
  if (space != NULL) {
    cl__msg(err, errlen, "contains a space at byte %zu", (size_t)(space - s));
    return CL_EINVAL;
  }
  const char *auth;
  size_t alen;
  if (!url_authority(s, &auth, &alen)) {
    cl__msg(err, errlen,
            "is not a URL (expected http://HOST/PATH or https://HOST/PATH)");
    return CL_EINVAL;
  }
  size_t sl = (size_t)(auth - 3 - s);
  if (!(sl == 4 && strncasecmp(s, "http", 4) == 0) &&
      !(sl == 5 && strncasecmp(s, "https", 5) == 0)) {
    char shown[ECHO_LEN];
    echo_n(shown, sizeof shown, s, sl, true);
    cl__msg(err, errlen,
            "scheme \"%s\" is not supported (expected http:// or https://)",
            shown);
    return CL_EINVAL;
  }
  /* The host follows the userinfo, which ends at the last '@'. */
  const char *host = auth, *end = auth + alen;
  for (const char *p = auth; p < end; p++)
    if (*p == '@')
      host = p + 1;
  const char *port = NULL;
  if (host < end && *host == '[') {
    const char *close = memchr(host, ']', (size_t)(end - host));
    if (close == NULL || close == host + 1) {
      cl__msg(err, errlen, "has a malformed IPv6 host");
      return CL_EINVAL;
    }
    if (close + 1 < end) {
      if (close[1] != ':') {
        cl__msg(err, errlen, "has a malformed IPv6 host");
        return CL_EINVAL;
      }
      port = close + 2;
    }
  } else {
    const char *colon = memchr(host, ':', (size_t)(end - host));
    if (colon == host || host == end) {
      cl__msg(err, errlen, "has no host");
      return CL_EINVAL;
    }
    if (colon != NULL)
      port = colon + 1;
  }
  if (port != NULL && !is_port(port, (size_t)(end - port))) {
    cl__msg(err, errlen, "has a bad port (expected a number from 1 to 65535)");
    return CL_EINVAL;
  }
  return 0;
}

void cl_config_mask_url(char *url) {
  const char *auth;
  size_t alen;
  if (url == NULL || !url_authority(url, &auth, &alen))
    return;
  /* The query first, which lies after the userinfo: masking it does not
   * move the authority.  Every value is masked, whatever its name: a list
   * of secret names (token, sig, key...) would miss the next one. */
  char *q = strchr(url + (auth - url) + alen, '?');
  if (q != NULL) {
    size_t i = (size_t)(q - url) + 1;
    while (url[i] != '\0' && url[i] != '#') {
      size_t end = i + strcspn(url + i, "&;#");
      const char *eq = memchr(url + i, '=', end - i);
      if (eq != NULL && (size_t)(eq - url) + 1 < end) {
        size_t v = (size_t)(eq - url) + 1;
        end = v + cl__mask_span(url, v, end - v);
      }
      i = url[end] == '&' || url[end] == ';' ? end + 1 : end;
    }
  }
  /* The password of the userinfo: after its first ':', up to the last
   * '@' of the authority. */
  const char *at = NULL;
  for (const char *p = auth; p < auth + alen; p++)
    if (*p == '@')
      at = p;
  const char *colon =
      at != NULL ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
  if (colon != NULL && colon + 1 < at)
    (void)cl__mask_span(url, (size_t)(colon + 1 - url),
                        (size_t)(at - colon - 1));
}

/* Returns a malloc'd copy of url masked by cl_config_mask_url(); NULL when
 * out of memory. */
static char *url_redact(const char *url) {
  char *out = strdup(url);
  if (out != NULL)
    cl_config_mask_url(out);
  return out;
}

static int parse_queue_text(const char *text, value_t *v, char *why, size_t n);
static int parse_qmap_text(const keydef_t *item, const char *text, value_t *v,
                           char *why, size_t n);

/* Parses text as a value of row k into *v (which the caller frees).
 * Returns 0, CL_ECONFIG with the reason in why (without the key's name),
 * or CL_ENOMEM. */
static int parse_text(const keydef_t *k, const char *text, value_t *v,
                      char *why, size_t n) {
  char shown[ECHO_LEN];
  int r = 0;
  switch (k->kind) {
  case K_STRING:
    if ((k->check != NULL ? k->check : check_text)(text, why, n) != 0)
      return CL_ECONFIG;
    return (v->s = strdup(text)) == NULL ? CL_ENOMEM : 0;
  case K_DSN:
    r = cl_check_dsn(text, why, n);
    if (r != 0)
      return r == CL_ENOMEM ? r : CL_ECONFIG;
    return (v->s = strdup(text)) == NULL ? CL_ENOMEM : 0;
  case K_URL:
    if (check_url(text, why, n) != 0)
      return CL_ECONFIG;
    return (v->s = strdup(text)) == NULL ? CL_ENOMEM : 0;
  case K_QMAP:
    return parse_qmap_text(k->item, text, v, why, n);
  case K_ENUM: {
    span_t cand[8];
    size_t nc = 0;
    for (; nc < 8 && k->names[nc] != NULL; nc++) {
      cand[nc] = (span_t){k->names[nc], strlen(k->names[nc])};
      if (strcmp(text, k->names[nc]) == 0) {
        v->i = (long long)nc;
        return 0;
      }
    }
    char list[128], hint[80];
    enum_list(list, sizeof list, k);
    did_you_mean(hint, sizeof hint, text, cand, nc);
    echo(shown, text, true);
    cl__msg(why, n, "expected %s, got \"%s\"%s", list, shown, hint);
    return CL_ECONFIG;
  }
  case K_INT:
    r = parse_ll(text, &v->i);
    if (r == -1) {
      echo(shown, text, true);
      cl__msg(why, n, "expected an integer, got \"%s\"", shown);
      return CL_ECONFIG;
    }
    break;
  case K_DURATION:
    if (parse_duration(text, &v->d) != 0) {
      echo(shown, text, true);
      cl__msg(why, n,
              "\"%s\" is not a duration (a number of seconds >= 0, or a "
              "number with ms, s, m, h or d)",
              shown);
      return CL_ECONFIG;
    }
    r = 0;
    break;
  case K_SIZE:
    r = parse_size(text, &v->z);
    if (r == -1) {
      echo(shown, text, true);
      cl__msg(why, n,
              "\"%s\" is not a size (a whole number of bytes, or one with "
              "B, KiB, MiB, GiB, kB, MB or GB)",
              shown);
      return CL_ECONFIG;
    }
    break;
  case K_QUEUES:
    return parse_queue_text(text, v, why, n);
  }
  if (r == -2 || !in_range(k, v)) {
    echo(shown, text, false);
    range_why(why, n, k, shown);
    return CL_ECONFIG;
  }
  return 0;
}

/* Checks a queue name, and that v has room for one more queue (or entry
 * of a per-queue map).  Returns 0 or CL_ECONFIG with the reason in why. */
static int check_queue(const value_t *v, const char *name, char *why,
                       size_t n) {
  if (cl_check_queue(name, why, n) != 0)
    return CL_ECONFIG;
  if (v->nq >= CL_CONFIG_QUEUES_MAX || v->nm >= CL_CONFIG_QUEUES_MAX) {
    cl__msg(why, n, "more than %d queues", CL_CONFIG_QUEUES_MAX);
    return CL_ECONFIG;
  }
  return 0;
}

/* Parses "NAME[:WEIGHT],..." (spaces around items allowed; "" is no
 * queues).  A name never holds ':' (cl_check_queue), so the first ':' ends
 * it, and what follows must be a weight: an integer 1..WEIGHT_MAX.  "a:",
 * ":3", "a:-1" and "a:1.5" are refused, not read as names or defaults. */
static int parse_queue_text(const char *text, value_t *v, char *why, size_t n) {
  const char *p = text;
  if (*p == '\0')
    return 0;
  for (;;) {
    size_t len = strcspn(p, ",");
    const char *s = p, *e = p + len;
    while (s < e && *s == ' ')
      s++;
    while (e > s && e[-1] == ' ')
      e--;
    char *item = strndup(s, (size_t)(e - s));
    if (item == NULL)
      return CL_ENOMEM;
    int weight = 1, rc = 0;
    char shown[ECHO_LEN];
    char *colon = strchr(item, ':');
    if (colon == item) {
      echo(shown, item, true);
      cl__msg(why, n,
              "queue \"%s\": the name before ':' is missing (expected "
              "NAME:WEIGHT)",
              shown);
      rc = CL_ECONFIG;
    } else if (colon != NULL) {
      *colon = '\0';
      const char *wtext = colon + 1;
      value_t w = {0};
      char wwhy[256];
      echo(shown, item, true);
      if (*wtext == '\0') {
        cl__msg(why, n,
                "queue \"%s\": the weight after ':' is missing (expected "
                "NAME:WEIGHT, WEIGHT 1..%d)",
                shown, WEIGHT_MAX);
        rc = CL_ECONFIG;
      } else if (parse_ll(wtext, &w.i) == -1) {
        char wshown[ECHO_LEN];
        echo(wshown, wtext, true);
        cl__msg(why, n,
                "queue \"%s\": weight \"%s\" is not an integer (expected "
                "NAME:WEIGHT, WEIGHT 1..%d)",
                shown, wshown, WEIGHT_MAX);
        rc = CL_ECONFIG;
      } else if (parse_text(&weight_key, wtext, &w, wwhy, sizeof wwhy) != 0) {
        cl__msg(why, n, "queue \"%s\": weight %s", shown, wwhy);
        rc = CL_ECONFIG;
      } else {
        weight = (int)w.i;
      }
    }
    if (rc == 0 && check_queue(v, item, why, n) != 0)
      rc = CL_ECONFIG;
    if (rc == 0 && queue_find(v, item) >= 0) {
      echo(shown, item, true);
      cl__msg(why, n, "queue \"%s\" is listed twice", shown);
      rc = CL_ECONFIG;
    }
    if (rc == 0)
      rc = queue_push(v, item, weight);
    free(item);
    if (rc != 0 || p[len] == '\0')
      return rc;
    p += len + 1;
  }
}

/* Writes "queue "SHOWN": LABEL REASON" into why, for a bad value of the
 * per-queue map whose values are rows like item; the label takes a colon
 * when the reason does not start with the value ("expected an integer,
 * got ..."). */
static void qmap_why(char *why, size_t n, const char *shown,
                     const keydef_t *item, const char *reason) {
  bool bare = strncmp(reason, "expected ", 9) == 0;
  cl__msg(why, n, "queue \"%s\": %s%s%s", shown, item->path, bare ? ": " : " ",
          reason);
}

/* Parses "NAME:VALUE,..." (spaces around items allowed; "" is an empty
 * map), each VALUE a value of row item.  The value is what follows the
 * last ':' (neither a duration, an integer nor a queue name holds one, so
 * "a:b:5m" is refused for its name). */
static int parse_qmap_text(const keydef_t *item, const char *text, value_t *v,
                           char *why, size_t n) {
  const char *p = text;
  if (*p == '\0')
    return 0;
  for (;;) {
    size_t len = strcspn(p, ",");
    const char *s = p, *e = p + len;
    while (s < e && *s == ' ')
      s++;
    while (e > s && e[-1] == ' ')
      e--;
    char *name = strndup(s, (size_t)(e - s));
    if (name == NULL)
      return CL_ENOMEM;
    char *colon = strrchr(name, ':');
    char shown[ECHO_LEN];
    value_t d = {0};
    int rc = 0;
    if (colon != NULL)
      *colon = '\0';
    if (check_queue(v, name, why, n) != 0) {
      rc = CL_ECONFIG;
    } else if (colon == NULL || colon[1] == '\0') {
      echo(shown, name, true);
      cl__msg(why, n, "queue \"%s\" has no %s (expected NAME:%s)", shown,
              item->path, item->kind == K_INT ? "INTEGER" : "DURATION");
      rc = CL_ECONFIG;
    } else if (qmap_find(v, name) >= 0) {
      echo(shown, name, true);
      cl__msg(why, n, "queue \"%s\" is listed twice", shown);
      rc = CL_ECONFIG;
    } else {
      char dwhy[256];
      if (parse_text(item, colon + 1, &d, dwhy, sizeof dwhy) != 0) {
        echo(shown, name, true);
        qmap_why(why, n, shown, item, dwhy);
        rc = CL_ECONFIG;
      }
    }
    if (rc == 0)
      rc = qmap_push(v, item, name, &d);
    free(name);
    if (rc != 0 || p[len] == '\0')
      return rc;
    p += len + 1;
  }
}

/* ------------------------------------------------------------------------ */
/* Subscriber records                                                        */

static const char *const in_doubt_names[] = {"retry", "hold", NULL};
static const char *const ordering_names[] = {"none", "fifo", NULL};

/* The fields of a subscriber record and of its sink that the key table's
 * per-kind code reads and checks.  Their ranges are those `claimer
 * subscriber add` and `claimer send` check (and deliver.c after them);
 * each path names its field in messages. */
static const keydef_t sub_in_doubt = {
    .path = "in_doubt", .kind = K_ENUM, .names = in_doubt_names};
static const keydef_t sub_max_attempts = {
    .path = "max_attempts", .kind = K_INT, .def = 10, .min = 1, .max = 1000};
static const keydef_t sub_break_after = {.path = "break_after",
                                         .kind = K_INT,
                                         .def = 100,
                                         .max = 1000000,
                                         .zero = "never"};
static const keydef_t sub_concurrency = {
    .path = "concurrency", .kind = K_INT, .max = 100000, .zero = "no limit"};
/* Only the range of rate, a plain number with no kind of its own here. */
static const keydef_t sub_rate = {
    .path = "rate", .kind = K_INT, .max = 1000000, .zero = "no limit"};
static const keydef_t sub_ordering = {
    .path = "ordering", .kind = K_ENUM, .names = ordering_names};
static const keydef_t sink_exec = {
    .path = "exec", .kind = K_STRING, .check = check_command};
static const keydef_t sink_webhook = {.path = "webhook", .kind = K_URL};
static const keydef_t sink_secret_file = {.path = "secret_file",
                                          .kind = K_STRING};
static const keydef_t sink_secret_env = {
    .path = "secret_env", .kind = K_STRING, .check = check_env_name};
static const keydef_t sink_timeout = {
    .path = "timeout", .kind = K_DURATION, .def = 30, .min = 0.1, .max = DAY_S};
static const keydef_t pg_target = {.path = "target", .kind = K_DSN};
static const keydef_t pg_sql = {
    .path = "sql", .kind = K_STRING, .check = check_command};

static void subscriber_init(cl_config_subscriber_t *s) {
  *s = (cl_config_subscriber_t){0};
  s->in_doubt = CL_CONFIG_IN_DOUBT_RETRY;
  s->max_attempts = (int)sub_max_attempts.def;
  s->break_after = (int)sub_break_after.def;
  s->ordering = CL_CONFIG_ORDERING_NONE;
  s->sink.timeout_s = sink_timeout.def;
}

/* The string fields of a record, each one malloc'd string or NULL. */
enum { SUB_STRINGS = 12 };
static void subscriber_strings(cl_config_subscriber_t *s,
                               char **f[SUB_STRINGS]) {
  char **all[SUB_STRINGS] = {&s->name,
                             &s->from,
                             &s->origin,
                             &s->sink.exec,
                             &s->sink.webhook,
                             &s->sink.secret_file,
                             &s->sink.secret_env,
                             &s->sink.pg_target,
                             &s->sink.pg_sql,
                             &s->sink.secret_at,
                             &s->sink.target_at,
                             &s->sink.sql_at};
  memcpy(f, all, sizeof all);
}

/* Frees what s owns and leaves it holding the defaults. */
static void subscriber_free(cl_config_subscriber_t *s) {
  char **f[SUB_STRINGS];
  subscriber_strings(s, f);
  for (size_t i = 0; i < SUB_STRINGS; i++)
    free(*f[i]);
  for (size_t i = 0; i < s->nqueues; i++)
    free(s->queues[i]);
  free(s->queues);
  free(s->backoff_s);
  subscriber_init(s);
}

static void subscribers_free(cl_config_subscriber_t *subs, size_t n) {
  for (size_t i = 0; i < n; i++)
    subscriber_free(&subs[i]);
  free(subs);
}

/* Makes dst a deep copy of src.  Returns 0 or CL_ENOMEM; either way dst
 * owns only its own copies (for subscriber_free()). */
static int subscriber_copy(cl_config_subscriber_t *dst,
                           const cl_config_subscriber_t *src) {
  char **d[SUB_STRINGS], **s[SUB_STRINGS];
  *dst = *src;
  dst->queues = NULL;
  dst->nqueues = 0;
  dst->backoff_s = NULL;
  dst->nbackoff = 0;
  subscriber_strings(dst, d);
  subscriber_strings((cl_config_subscriber_t *)src, s);
  for (size_t i = 0; i < SUB_STRINGS; i++)
    *d[i] = NULL;
  for (size_t i = 0; i < SUB_STRINGS; i++)
    if (*s[i] != NULL && (*d[i] = strdup(*s[i])) == NULL)
      return CL_ENOMEM;
  if (src->nqueues > 0 &&
      (dst->queues = calloc(src->nqueues, sizeof *dst->queues)) == NULL)
    return CL_ENOMEM;
  for (; dst->nqueues < src->nqueues; dst->nqueues++)
    if ((dst->queues[dst->nqueues] = strdup(src->queues[dst->nqueues])) == NULL)
      return CL_ENOMEM;
  if (src->nbackoff > 0) {
    if ((dst->backoff_s = calloc(src->nbackoff, sizeof *dst->backoff_s)) ==
        NULL)
      return CL_ENOMEM;
    memcpy(dst->backoff_s, src->backoff_s,
           src->nbackoff * sizeof *dst->backoff_s);
    dst->nbackoff = src->nbackoff;
  }
  return 0;
}

/* Stores in *out a deep copy of the n records of src (NULL when none).
 * Returns 0 or CL_ENOMEM (nothing allocated). */
static int subscribers_copy(cl_config_subscriber_t **out,
                            const cl_config_subscriber_t *src, size_t n) {
  *out = NULL;
  if (n == 0)
    return 0;
  cl_config_subscriber_t *a = calloc(n, sizeof *a);
  if (a == NULL)
    return CL_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (subscriber_copy(&a[i], &src[i]) != 0) {
      subscribers_free(a, i + 1);
      return CL_ENOMEM;
    }
  }
  *out = a;
  return 0;
}

const cl_config_subscriber_t *cl_config_subscriber(const cl_config_t *cfg,
                                                   const char *name) {
  for (size_t i = 0; name != NULL && i < cfg->nsubscribers; i++)
    if (strcmp(cfg->subscribers[i].name, name) == 0)
      return &cfg->subscribers[i];
  return NULL;
}

void cl_config_subscriber_opts(const cl_config_subscriber_t *s,
                               cl_subscriber_opts_t *o) {
  *o = (cl_subscriber_opts_t){0};
  o->queues = (const char *const *)s->queues;
  o->nqueues = s->nqueues;
  o->from = s->from != NULL ? s->from : "now";
  o->in_doubt = in_doubt_names[s->in_doubt == CL_CONFIG_IN_DOUBT_HOLD];
  o->max_attempts = s->max_attempts;
  /* In the library 0 is its default (100) and a negative number never. */
  o->break_after = s->break_after == 0 ? -1 : s->break_after;
  o->concurrency = s->concurrency;
  o->rate = s->rate;
  o->ordering = ordering_names[s->ordering == CL_CONFIG_ORDERING_FIFO];
  o->backoff_s = s->backoff_s;
  o->nbackoff = s->nbackoff;
}

/* ------------------------------------------------------------------------ */
/* The configuration object                                                  */

void cl_config_init(cl_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < NKEYS; i++) {
    const keydef_t *k = &keys[i];
    void *f = field(cfg, k);
    switch (k->kind) {
    case K_ENUM:
    case K_INT:
      *(int *)f = (int)k->def;
      break;
    case K_DURATION:
      *(double *)f = k->def;
      break;
    case K_SIZE:
      *(size_t *)f = (size_t)k->def;
      break;
    default:
      break; /* strings NULL, no queues, no SLAs */
    }
  }
}

/* Frees the value of row k in cfg, leaving the field zero. */
static void field_free(cl_config_t *cfg, const keydef_t *k) {
  void *f = field(cfg, k);
  if (is_string(k)) {
    free(*(char **)f);
    *(char **)f = NULL;
  } else if (k->kind == K_QUEUES) {
    queues_free(*(cl_config_queue_t **)f, *queue_count(f));
    *(cl_config_queue_t **)f = NULL;
    *queue_count(f) = 0;
  } else if (k->kind == K_QMAP) {
    value_t m = {0};
    qmap_load(k, f, &m);
    value_free(&m);
    qmap_save(k, f, &m);
  }
}

void cl_config_free(cl_config_t *cfg) {
  if (cfg == NULL)
    return;
  for (size_t i = 0; i < NKEYS; i++) {
    field_free(cfg, &keys[i]);
    free(cfg->origin_[i]);
  }
  subscribers_free(cfg->subscribers, cfg->nsubscribers);
  free(cfg->subscribers_origin_);
  cl_config_init(cfg);
}

/* Moves v into row k's field of cfg (v is left empty), freeing what was
 * there. */
static void store(cl_config_t *cfg, const keydef_t *k, value_t *v) {
  void *f = field(cfg, k);
  field_free(cfg, k);
  switch (k->kind) {
  case K_STRING:
  case K_DSN:
  case K_URL:
    *(char **)f = v->s;
    v->s = NULL;
    break;
  case K_ENUM:
  case K_INT:
    *(int *)f = (int)v->i;
    break;
  case K_DURATION:
    *(double *)f = v->d;
    break;
  case K_SIZE:
    *(size_t *)f = v->z;
    break;
  case K_QUEUES:
    *(cl_config_queue_t **)f = v->q;
    *queue_count(f) = v->nq;
    v->q = NULL;
    v->nq = 0;
    break;
  case K_QMAP:
    qmap_save(k, f, v);
    v->mn = NULL;
    v->md = NULL;
    v->mi = NULL;
    v->nm = 0;
    break;
  }
}

/* Stores v under row k with a copy of origin.  Returns 0 or CL_ENOMEM
 * (nothing changed; v still the caller's). */
static int assign(cl_config_t *cfg, const keydef_t *k, value_t *v,
                  const char *origin) {
  char *o = strdup(origin);
  if (o == NULL)
    return CL_ENOMEM;
  free(cfg->origin_[key_index(k)]);
  cfg->origin_[key_index(k)] = o;
  store(cfg, k, v);
  return 0;
}

int cl_config_copy(cl_config_t *dst, const cl_config_t *src) {
  /* Take the numbers, then detach dst from src's memory before copying
   * any of it, so that a failure halfway frees only dst's own copies. */
  *dst = *src;
  dst->subscribers = NULL;
  dst->nsubscribers = 0;
  dst->subscribers_origin_ = NULL;
  for (size_t i = 0; i < NKEYS; i++) {
    void *f = field(dst, &keys[i]);
    dst->origin_[i] = NULL;
    if (is_string(&keys[i])) {
      *(char **)f = NULL;
    } else if (keys[i].kind == K_QUEUES) {
      *(cl_config_queue_t **)f = NULL;
      *queue_count(f) = 0;
    } else if (keys[i].kind == K_QMAP) {
      qmap_save(&keys[i], f, &(value_t){0});
    }
  }
  for (size_t i = 0; i < NKEYS; i++) {
    const keydef_t *k = &keys[i];
    void *sf = field(src, k);
    value_t v = {0};
    bool ok = true;
    if (is_string(k)) {
      const char *s = *(char **)sf;
      ok = s == NULL || (v.s = strdup(s)) != NULL;
    } else if (k->kind == K_QUEUES) {
      const cl_config_queue_t *q = *(cl_config_queue_t **)sf;
      for (size_t j = 0; ok && j < *queue_count(sf); j++)
        ok = queue_push(&v, q[j].name, q[j].weight) == 0;
    } else if (k->kind == K_QMAP) {
      value_t m = {0};
      qmap_load(k, sf, &m);
      for (size_t j = 0; ok && j < m.nm; j++) {
        value_t one = qmap_get(&m, k->item, j);
        ok = qmap_push(&v, k->item, m.mn[j], &one) == 0;
      }
    }
    if (ok && is_owned(k))
      store(dst, k, &v);
    if (ok && src->origin_[i] != NULL)
      ok = (dst->origin_[i] = strdup(src->origin_[i])) != NULL;
    if (!ok) {
      value_free(&v);
      cl_config_free(dst);
      return CL_ENOMEM;
    }
  }
  if (subscribers_copy(&dst->subscribers, src->subscribers,
                       src->nsubscribers) != 0) {
    cl_config_free(dst);
    return CL_ENOMEM;
  }
  dst->nsubscribers = src->nsubscribers;
  if (src->subscribers_origin_ != NULL &&
      (dst->subscribers_origin_ = strdup(src->subscribers_origin_)) == NULL) {
    cl_config_free(dst);
    return CL_ENOMEM;
  }
  return 0;
}

/* Replaces *cfg by *scratch (whose contents move). */
static void swap_in(cl_config_t *cfg, cl_config_t *scratch) {
  cl_config_free(cfg);
  *cfg = *scratch;
  cl_config_init(scratch);
}

const char *cl_config_origin(const cl_config_t *cfg, const char *path) {
  const keydef_t *k = find_key(path);
  if (k == NULL)
    return NULL;
  const char *o = cfg->origin_[key_index(k)];
  return o != NULL ? o : "default";
}

double cl_config_heartbeat_s(const cl_config_t *cfg) {
  return cfg->worker.heartbeat_s > 0 ? cfg->worker.heartbeat_s
                                     : cfg->worker.lease_s / 3;
}

int cl_config_prefetch(const cl_config_t *cfg) {
  return cfg->worker.prefetch > 0 ? cfg->worker.prefetch : -1;
}

int cl_config_queue_policy_set(const cl_config_t *cfg) {
  for (size_t i = 0; i < NKEYS; i++)
    if (keys[i].policy && cfg->origin_[i] != NULL)
      return 1;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Text: cl_config_set() and the environment                                */

/* Writes "unknown key "X" (did you mean "Y"?)" for a whole path. */
static void unknown_path(char *err, size_t errlen, const char *where,
                         const char *path) {
  span_t cand[NKEYS];
  for (size_t i = 0; i < NKEYS; i++)
    cand[i] = (span_t){keys[i].path, strlen(keys[i].path)};
  char shown[ECHO_LEN], hint[PATH_MAX_LEN + 32];
  echo(shown, path, true);
  did_you_mean(hint, sizeof hint, path, cand, NKEYS);
  cl__msg(err, errlen, "%s%sunknown key \"%s\"%s", where, *where ? ": " : "",
          shown, hint);
}

int cl_config_set(cl_config_t *cfg, const char *path, const char *value,
                  const char *origin, char *err, size_t errlen) {
  const keydef_t *k = path != NULL ? find_key(path) : NULL;
  if (k == NULL) {
    unknown_path(err, errlen, origin != NULL ? origin : "",
                 path != NULL ? path : "");
    return CL_ECONFIG;
  }
  const char *where = origin != NULL ? origin : path;
  if (value == NULL) {
    cl__msg(err, errlen, "%s: no value", where);
    return CL_ECONFIG;
  }
  value_t v = {0};
  char why[512] = "out of memory";
  int rc = parse_text(k, value, &v, why, sizeof why);
  if (rc == 0 && assign(cfg, k, &v, origin != NULL ? origin : "set") != 0)
    rc = CL_ENOMEM;
  if (rc != 0)
    cl__msg(err, errlen, "%s: %s", where,
            rc == CL_ENOMEM ? "out of memory" : why);
  value_free(&v);
  return rc;
}

/* Writes row k's environment name into out. */
static void env_name(char *out, size_t n, const keydef_t *k) {
  size_t o = (size_t)snprintf(out, n, "CLAIMER_");
  for (const char *p = k->path; *p != '\0' && o + 1 < n; p++)
    out[o++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
  out[o] = '\0';
}

int cl_config_apply_env(cl_config_t *cfg, char *err, size_t errlen) {
  cl_config_t scratch;
  if (cl_config_copy(&scratch, cfg) != 0) {
    cl__msg(err, errlen, "out of memory");
    return CL_ENOMEM;
  }
  for (size_t i = 0; i < NKEYS; i++) {
    char name[PATH_MAX_LEN + 16], origin[PATH_MAX_LEN + 32];
    env_name(name, sizeof name, &keys[i]);
    const char *text = getenv(name);
    if (text == NULL)
      continue;
    snprintf(origin, sizeof origin, "env %s", name);
    int rc = cl_config_set(&scratch, keys[i].path, text, origin, err, errlen);
    if (rc != 0) {
      cl_config_free(&scratch);
      return rc;
    }
  }
  swap_in(cfg, &scratch);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* YAML                                                                      */

typedef enum ntype { N_SCALAR, N_SEQ, N_MAP } ntype_t;

/* A node of the document, with its 1-based position.  A map's kids are
 * key, value, key, value... */
typedef struct node {
  ntype_t type;
  size_t line, col;
  char *text; /* N_SCALAR: NUL-terminated, len bytes (may hold a NUL) */
  size_t len;
  bool plain; /* an unquoted scalar, so "null" and "true" mean that */
  struct node **kids;
  size_t nkids;
} node_t;

static void node_free(node_t *n) {
  if (n == NULL)
    return;
  for (size_t i = 0; i < n->nkids; i++)
    node_free(n->kids[i]);
  free(n->kids);
  free(n->text);
  free(n);
}

typedef struct loader {
  yaml_parser_t parser;
  const char *name;
  const char *text;
  size_t len;
  char *err;
  size_t errlen;
  cl_config_t *cfg; /* the scratch copy */
} loader_t;

/* Writes "NAME:LINE:COL: message" and returns CL_ECONFIG. */
__attribute__((format(printf, 4, 5))) static int
fail_at(loader_t *L, size_t line, size_t col, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cl__msg(L->err, L->errlen, "%s:%zu:%zu: %s", L->name, line, col, msg);
  return CL_ECONFIG;
}

/* Turns a byte offset of the text into a 1-based line and column (in
 * characters), for the reader's errors, which carry only the offset. */
static void offset_mark(const loader_t *L, size_t off, size_t *line,
                        size_t *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && i < L->len; i++) {
    unsigned char c = (unsigned char)L->text[i];
    if (c == '\n') {
      (*line)++;
      *col = 1;
    } else if ((c & 0xC0) != 0x80) {
      (*col)++;
    }
  }
}

/* Reports libyaml's failure: its problem, where, and what it was doing. */
static int parser_error(loader_t *L) {
  yaml_parser_t *p = &L->parser;
  size_t line, col;
  if (p->error == YAML_MEMORY_ERROR) {
    cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
    return CL_ENOMEM;
  }
  if (p->error == YAML_READER_ERROR) {
    offset_mark(L, p->problem_offset, &line, &col);
    if (p->problem_value != -1)
      return fail_at(L, line, col, "%s (byte 0x%02x)",
                     p->problem ? p->problem : "cannot read",
                     (unsigned)p->problem_value & 0xFF);
    return fail_at(L, line, col, "%s", p->problem ? p->problem : "bad input");
  }
  line = p->problem_mark.line + 1;
  col = p->problem_mark.column + 1;
  if (p->context != NULL)
    return fail_at(L, line, col, "%s (%s that starts at %zu:%zu)",
                   p->problem ? p->problem : "syntax error", p->context,
                   p->context_mark.line + 1, p->context_mark.column + 1);
  return fail_at(L, line, col, "%s", p->problem ? p->problem : "syntax error");
}

static int next_event(loader_t *L, yaml_event_t *ev) {
  if (!yaml_parser_parse(&L->parser, ev))
    return parser_error(L);
  return 0;
}

/* Refuses an event's anchor or tag: a config is plain data. */
static int plain_only(loader_t *L, const yaml_event_t *ev,
                      const yaml_char_t *anchor, const yaml_char_t *tag) {
  size_t line = ev->start_mark.line + 1, col = ev->start_mark.column + 1;
  if (anchor != NULL)
    return fail_at(L, line, col, "anchors and aliases are not supported");
  if (tag != NULL) {
    static const char std[] = "tag:yaml.org,2002:";
    const char *t = (const char *)tag;
    char shown[ECHO_LEN];
    bool is_std = strncmp(t, std, sizeof std - 1) == 0;
    echo(shown, is_std ? t + sizeof std - 1 : t, true);
    return fail_at(L, line, col, "tags are not supported (remove \"%s%s\")",
                   is_std ? "!!" : "", shown);
  }
  return 0;
}

static int build(loader_t *L, const yaml_event_t *ev, int depth, node_t **out);

/* Reads the children of a sequence or map into n, up to its end event. */
static int build_kids(loader_t *L, node_t *n, yaml_event_type_t end,
                      int depth) {
  size_t cap = 0;
  for (;;) {
    yaml_event_t ev;
    int rc = next_event(L, &ev);
    if (rc != 0)
      return rc;
    if (ev.type == end) {
      yaml_event_delete(&ev);
      return 0;
    }
    if (n->nkids == cap) {
      size_t ncap = cap ? 2 * cap : 8;
      node_t **k = realloc(n->kids, ncap * sizeof *k);
      if (k == NULL) {
        yaml_event_delete(&ev);
        cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
        return CL_ENOMEM;
      }
      n->kids = k;
      cap = ncap;
    }
    node_t *kid = NULL;
    rc = build(L, &ev, depth + 1, &kid);
    yaml_event_delete(&ev);
    if (kid != NULL)
      n->kids[n->nkids++] = kid;
    if (rc != 0)
      return rc;
  }
}

/* Builds the node that starts with ev (a scalar, a sequence or map start,
 * or an alias) into *out.  On failure *out may hold a partial node, which
 * the caller frees. */
static int build(loader_t *L, const yaml_event_t *ev, int depth, node_t **out) {
  size_t line = ev->start_mark.line + 1, col = ev->start_mark.column + 1;
  int rc;
  switch (ev->type) {
  case YAML_ALIAS_EVENT:
    return fail_at(L, line, col, "anchors and aliases are not supported");
  case YAML_SCALAR_EVENT:
    rc = plain_only(L, ev, ev->data.scalar.anchor, ev->data.scalar.tag);
    break;
  case YAML_SEQUENCE_START_EVENT:
    rc = plain_only(L, ev, ev->data.sequence_start.anchor,
                    ev->data.sequence_start.tag);
    break;
  case YAML_MAPPING_START_EVENT:
    rc = plain_only(L, ev, ev->data.mapping_start.anchor,
                    ev->data.mapping_start.tag);
    break;
  default:
    return fail_at(L, line, col, "unexpected YAML event");
  }
  if (rc != 0)
    return rc;
  if (depth >= DEPTH_MAX)
    return fail_at(L, line, col, "nested deeper than %d levels", DEPTH_MAX);
  node_t *n = calloc(1, sizeof *n);
  if (n == NULL) {
    cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
    return CL_ENOMEM;
  }
  *out = n;
  n->line = line;
  n->col = col;
  if (ev->type == YAML_SCALAR_EVENT) {
    n->type = N_SCALAR;
    n->len = ev->data.scalar.length;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->text = malloc(n->len + 1);
    if (n->text == NULL) {
      cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
      return CL_ENOMEM;
    }
    memcpy(n->text, ev->data.scalar.value, n->len);
    n->text[n->len] = '\0';
    return 0;
  }
  if (ev->type == YAML_SEQUENCE_START_EVENT) {
    n->type = N_SEQ;
    return build_kids(L, n, YAML_SEQUENCE_END_EVENT, depth);
  }
  n->type = N_MAP;
  return build_kids(L, n, YAML_MAPPING_END_EVENT, depth);
}

/* Reads the one document of the stream into *root (NULL for an empty
 * stream). */
static int parse_document(loader_t *L, node_t **root) {
  yaml_event_t ev;
  int rc;
  *root = NULL;
  if ((rc = next_event(L, &ev)) != 0) /* the stream start */
    return rc;
  yaml_event_delete(&ev);
  if ((rc = next_event(L, &ev)) != 0)
    return rc;
  bool empty = ev.type == YAML_STREAM_END_EVENT;
  yaml_event_delete(&ev);
  if (empty)
    return 0;
  if ((rc = next_event(L, &ev)) != 0)
    return rc;
  rc = build(L, &ev, 0, root);
  yaml_event_delete(&ev);
  if (rc != 0)
    return rc;
  if ((rc = next_event(L, &ev)) != 0) /* the document end */
    return rc;
  yaml_event_delete(&ev);
  if ((rc = next_event(L, &ev)) != 0)
    return rc;
  if (ev.type == YAML_DOCUMENT_START_EVENT)
    rc = fail_at(L, ev.start_mark.line + 1, ev.start_mark.column + 1,
                 "more than one YAML document (a config file holds one map)");
  yaml_event_delete(&ev);
  return rc;
}

static bool is_null(const node_t *n) {
  return n->type == N_SCALAR && n->plain &&
         (n->len == 0 || strcmp(n->text, "~") == 0 ||
          strcmp(n->text, "null") == 0 || strcmp(n->text, "Null") == 0 ||
          strcmp(n->text, "NULL") == 0);
}

static bool is_bool(const node_t *n) {
  static const char *const words[] = {"true",  "True",  "TRUE",
                                      "false", "False", "FALSE"};
  if (n->type != N_SCALAR || !n->plain)
    return false;
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (strcmp(n->text, words[i]) == 0)
      return true;
  return false;
}

/* Describes what a node is, for "got X": a map, a list, nothing, null, or
 * its text quoted.  Callers never pass a connection string's text. */
static void got(char *out, size_t n, const node_t *node) {
  char shown[ECHO_LEN];
  if (node->type == N_MAP)
    snprintf(out, n, "a map");
  else if (node->type == N_SEQ)
    snprintf(out, n, "a list");
  else if (is_null(node))
    snprintf(out, n, node->len == 0 ? "nothing" : "null");
  else {
    echo_n(shown, sizeof shown, node->text, node->len, true);
    snprintf(out, n, "\"%s\"", shown);
  }
}

/* Checks that node is a scalar that can be read as text for label: not a
 * map or list, not a plain boolean where text is wanted (quote it), no NUL.
 * Returns 1 for a null the caller accepts (nullable), 0 for text, or
 * CL_ECONFIG. */
static int scalar_of(loader_t *L, const node_t *node, const char *label,
                     const char *want, bool text, bool nullable) {
  char what[ECHO_LEN + 16];
  if (nullable && is_null(node))
    return 1;
  if (node->type != N_SCALAR || is_null(node)) {
    got(what, sizeof what, node);
    return fail_at(L, node->line, node->col, "%s: expected %s, got %s", label,
                   want, what);
  }
  if (text && is_bool(node))
    return fail_at(L, node->line, node->col,
                   "%s: expected %s, got the boolean %s (quote it to mean "
                   "the text)",
                   label, want, node->text);
  if (memchr(node->text, '\0', node->len) != NULL)
    return fail_at(L, node->line, node->col, "%s: contains a NUL character",
                   label);
  return 0;
}

/* Reads one item of worker.queues (a name, or a map of name and weight)
 * and adds it to v. */
static int queue_item(loader_t *L, const node_t *item, size_t index,
                      const char *path, value_t *v,
                      size_t first_line[CL_CONFIG_QUEUES_MAX]) {
  char label[PATH_MAX_LEN + 32], why[512];
  snprintf(label, sizeof label, "%s[%zu]", path, index);
  const node_t *name = NULL;
  int weight = 1;
  if (item->type == N_MAP) {
    static const span_t cand[] = {{"name", 4}, {"weight", 6}};
    for (size_t i = 0; i + 1 < item->nkids; i += 2) {
      const node_t *k = item->kids[i], *val = item->kids[i + 1];
      char shown[ECHO_LEN], hint[64];
      if (k->type != N_SCALAR)
        return fail_at(L, k->line, k->col, "%s: a key must be a string", label);
      for (size_t j = 0; j < i; j += 2)
        if (item->kids[j]->type == N_SCALAR && item->kids[j]->len == k->len &&
            memcmp(item->kids[j]->text, k->text, k->len) == 0) {
          echo_n(shown, sizeof shown, k->text, k->len, true);
          return fail_at(L, k->line, k->col,
                         "duplicate key \"%s\" in %s (first at line %zu)",
                         shown, label, item->kids[j]->line);
        }
      if (strcmp(k->text, "name") == 0 && k->len == 4) {
        int rc = scalar_of(L, val, label, "a queue name", true, false);
        if (rc != 0)
          return rc;
        name = val;
      } else if (strcmp(k->text, "weight") == 0 && k->len == 6) {
        char wlabel[PATH_MAX_LEN + 48];
        snprintf(wlabel, sizeof wlabel, "%s.weight", label);
        int rc = scalar_of(L, val, wlabel, "an integer", false, false);
        if (rc != 0)
          return rc;
        value_t w = {0};
        if (parse_text(&weight_key, val->text, &w, why, sizeof why) != 0)
          return fail_at(L, val->line, val->col, "%s: %s", wlabel, why);
        weight = (int)w.i;
      } else {
        echo_n(shown, sizeof shown, k->text, k->len, true);
        did_you_mean(hint, sizeof hint, k->text, cand, 2);
        return fail_at(L, k->line, k->col, "unknown key \"%s\" in %s%s", shown,
                       label, hint);
      }
    }
    if (name == NULL)
      return fail_at(L, item->line, item->col,
                     "%s: a queue needs a name (name: NAME)", label);
  } else {
    int rc = scalar_of(L, item, label, "a queue name or {name: N, weight: W}",
                       true, false);
    if (rc != 0)
      return rc;
    name = item;
  }
  if (check_queue(v, name->text, why, sizeof why) != 0)
    return fail_at(L, name->line, name->col, "%s: %s", label, why);
  long dup = queue_find(v, name->text);
  if (dup >= 0) {
    char shown[ECHO_LEN];
    echo(shown, name->text, true);
    return fail_at(L, name->line, name->col,
                   "%s: queue \"%s\" is listed twice (first at line %zu)",
                   label, shown, first_line[dup]);
  }
  first_line[v->nq] = name->line;
  if (queue_push(v, name->text, weight) != 0) {
    cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
    return CL_ENOMEM;
  }
  return 0;
}

/* Reads the map of the per-queue row k (queue name: value) into v. */
static int qmap_yaml(loader_t *L, const keydef_t *k, const node_t *map,
                     value_t *v) {
  char why[512], want[64];
  expected(want, sizeof want, k->item);
  size_t first_line[CL_CONFIG_QUEUES_MAX];
  for (size_t i = 0; i + 1 < map->nkids; i += 2) {
    const node_t *name = map->kids[i], *val = map->kids[i + 1];
    int rc = scalar_of(L, name, k->path, "a queue name", true, false);
    if (rc != 0)
      return rc;
    if (check_queue(v, name->text, why, sizeof why) != 0)
      return fail_at(L, name->line, name->col, "%s: %s", k->path, why);
    char shown[ECHO_LEN], label[PATH_MAX_LEN + ECHO_LEN + 2];
    echo(shown, name->text, true);
    long dup = qmap_find(v, name->text);
    if (dup >= 0)
      return fail_at(L, name->line, name->col,
                     "%s: queue \"%s\" is listed twice (first at line %zu)",
                     k->path, shown, first_line[dup]);
    snprintf(label, sizeof label, "%s.%s", k->path, shown);
    rc = scalar_of(L, val, label, want, false, false);
    if (rc != 0)
      return rc;
    value_t d = {0};
    if (parse_text(k->item, val->text, &d, why, sizeof why) != 0)
      return fail_at(L, val->line, val->col, "%s: %s", label, why);
    first_line[v->nm] = name->line;
    if (qmap_push(v, k->item, name->text, &d) != 0) {
      cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
      return CL_ENOMEM;
    }
  }
  return 0;
}

static int out_of_memory(loader_t *L) {
  cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
  return CL_ENOMEM;
}

/* Reads the scalar node as a value of row k (not a list or map kind) into
 * *v; label names it in messages.  A null leaves *v unset when nullable,
 * and is refused otherwise. */
static int scalar_value(loader_t *L, const keydef_t *k, const node_t *node,
                        const char *label, bool nullable, value_t *v) {
  char want[128], why[512];
  expected(want, sizeof want, k);
  bool text = is_string(k) || k->kind == K_ENUM;
  int rc = scalar_of(L, node, label, want, text, nullable);
  if (rc == 1)
    return 0; /* null: unset */
  if (rc != 0)
    return rc;
  rc = parse_text(k, node->text, v, why, sizeof why);
  if (rc == CL_ENOMEM)
    return out_of_memory(L);
  if (rc != 0)
    return fail_at(L, node->line, node->col, "%s: %s", label, why);
  return 0;
}

/* Reads node as the value of row k into *v. */
static int node_value(loader_t *L, const keydef_t *k, const node_t *node,
                      value_t *v) {
  char want[128];
  expected(want, sizeof want, k);
  if (k->kind == K_QMAP) {
    if (is_null(node))
      return 0;
    if (node->type != N_MAP) {
      char what[ECHO_LEN + 16];
      got(what, sizeof what, node);
      return fail_at(L, node->line, node->col, "%s: expected %s, got %s",
                     k->path, want, what);
    }
    return qmap_yaml(L, k, node, v);
  }
  if (k->kind == K_QUEUES) {
    if (is_null(node))
      return 0;
    if (node->type != N_SEQ) {
      char what[ECHO_LEN + 16];
      got(what, sizeof what, node);
      return fail_at(L, node->line, node->col,
                     "%s: expected a list of queue names, got %s", k->path,
                     what);
    }
    size_t first_line[CL_CONFIG_QUEUES_MAX];
    for (size_t i = 0; i < node->nkids; i++) {
      int rc = queue_item(L, node->kids[i], i, k->path, v, first_line);
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  return scalar_value(L, k, node, k->path, is_string(k), v);
}

/* Checks key i of map: a scalar, and not a repeat of an earlier key; in
 * names the map for the message (" in worker"; "" at the top). */
static int map_key(loader_t *L, const node_t *map, size_t i, const char *in) {
  const node_t *key = map->kids[i];
  if (key->type != N_SCALAR) {
    char what[32];
    got(what, sizeof what, key);
    return fail_at(L, key->line, key->col,
                   "a key must be a plain string, got %s", what);
  }
  for (size_t j = 0; j < i; j += 2) {
    const node_t *prev = map->kids[j];
    if (prev->type == N_SCALAR && prev->len == key->len &&
        memcmp(prev->text, key->text, key->len) == 0) {
      char shown[ECHO_LEN];
      echo_n(shown, sizeof shown, key->text, key->len, true);
      return fail_at(L, key->line, key->col,
                     "duplicate key \"%s\"%s (first at line %zu)", shown, in,
                     prev->line);
    }
  }
  return 0;
}

static int subscribers_yaml(loader_t *L, const node_t *key, const node_t *map);

/* The one top-level key outside the table. */
static const span_t subscribers_word = {"subscribers", 11};

/* Applies the keys of map, found under section ("" at the top). */
static int apply_map(loader_t *L, const node_t *map, const char *section) {
  for (size_t i = 0; i + 1 < map->nkids; i += 2) {
    const node_t *key = map->kids[i], *val = map->kids[i + 1];
    char shown[ECHO_LEN], in[PATH_MAX_LEN + 8];
    snprintf(in, sizeof in, "%s%s", *section ? " in " : "", section);
    int rc = map_key(L, map, i, in);
    if (rc != 0)
      return rc;
    echo_n(shown, sizeof shown, key->text, key->len, true);
    if (*section == '\0' && key->len == subscribers_word.n &&
        memcmp(key->text, subscribers_word.p, key->len) == 0) {
      if ((rc = subscribers_yaml(L, key, val)) != 0)
        return rc;
      continue;
    }
    /* A key with a dot or a NUL in it is nobody's: "worker.lease" at the
     * top must not pass for worker: {lease}. */
    char path[PATH_MAX_LEN + 1];
    const keydef_t *k = NULL;
    bool section_key = false;
    size_t sn = strlen(section);
    bool usable = key->len > 0 && strlen(key->text) == key->len &&
                  strchr(key->text, '.') == NULL &&
                  sn + 1 + key->len <= PATH_MAX_LEN;
    if (usable) {
      snprintf(path, sizeof path, "%s%s%s", section, sn ? "." : "", key->text);
      k = find_key(path);
      section_key = k == NULL && is_section(path);
    }
    if (k != NULL) {
      value_t v = {0};
      rc = node_value(L, k, val, &v);
      if (rc == 0) {
        char *origin = NULL;
        if (asprintf(&origin, "%s:%zu", L->name, key->line) < 0)
          origin = NULL;
        if (origin == NULL || assign(L->cfg, k, &v, origin) != 0) {
          cl__msg(L->err, L->errlen, "%s: out of memory", L->name);
          rc = CL_ENOMEM;
        }
        free(origin);
      }
      value_free(&v);
      if (rc != 0)
        return rc;
    } else if (section_key) {
      if (is_null(val))
        continue; /* "worker:" with nothing under it */
      if (val->type != N_MAP) {
        char what[ECHO_LEN + 16];
        got(what, sizeof what, val);
        return fail_at(L, val->line, val->col, "%s: expected a map, got %s",
                       path, what);
      }
      rc = apply_map(L, val, path);
      if (rc != 0)
        return rc;
    } else {
      span_t cand[NKEYS + 1];
      size_t nc = children(section, cand);
      if (*section == '\0')
        cand[nc++] = subscribers_word;
      char hint[PATH_MAX_LEN + 32];
      did_you_mean(hint, sizeof hint, key->text, cand, nc);
      return fail_at(L, key->line, key->col, "unknown key \"%s\"%s%s", shown,
                     in, hint);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* YAML: the subscribers                                                     */

/* The keys of a subscriber record, of its sink, and of a pg sink, in the
 * order of the switches below. */
static const span_t sub_keys[] = {{"queues", 6},       {"from", 4},
                                  {"in_doubt", 8},     {"max_attempts", 12},
                                  {"break_after", 11}, {"concurrency", 11},
                                  {"rate", 4},         {"ordering", 8},
                                  {"backoff", 7},      {"sink", 4}};
static const span_t sink_keys[] = {{"exec", 4},         {"webhook", 7},
                                   {"secret_file", 11}, {"secret_env", 10},
                                   {"pg", 2},           {"timeout", 7}};
static const span_t pg_keys[] = {{"target", 6}, {"sql", 3}};
#define NSPANS(a) (sizeof(a) / sizeof((a)[0]))
/* Room for a label such as "subscribers.NAME.sink.pg.target" (a name is
 * at most 63 bytes) or " in" one. */
#define LABEL_LEN 160

/* Writes a, b and c joined into out, which holds LABEL_LEN. */
static void join_label(char out[LABEL_LEN], const char *a, const char *b,
                       const char *c) {
  if (snprintf(out, LABEL_LEN, "%s%s%s", a, b, c) >= LABEL_LEN)
    out[LABEL_LEN - 1] = '\0';
}

/* Finds key among the ncand candidates: sets *index and returns 0, or
 * reports it unknown in label (with a "did you mean") and returns
 * CL_ECONFIG. */
static int which_key(loader_t *L, const node_t *key, const span_t *cand,
                     size_t ncand, const char *label, size_t *index) {
  for (size_t i = 0; i < ncand; i++) {
    if (key->len == cand[i].n && memcmp(key->text, cand[i].p, key->len) == 0) {
      *index = i;
      return 0;
    }
  }
  char shown[ECHO_LEN], hint[PATH_MAX_LEN + 32];
  echo_n(shown, sizeof shown, key->text, key->len, true);
  did_you_mean(hint, sizeof hint, key->text, cand, ncand);
  return fail_at(L, key->line, key->col, "unknown key \"%s\" in %s%s", shown,
                 label, hint);
}

/* Stores in *out "FILE:LINE:COLUMN" of node n (freeing what was there).
 * Returns 0 or CL_ENOMEM. */
static int mark_at(loader_t *L, const node_t *n, char **out) {
  char *s = NULL;
  if (asprintf(&s, "%s:%zu:%zu", L->name, n->line, n->col) < 0)
    return out_of_memory(L);
  free(*out);
  *out = s;
  return 0;
}

/* Reads node as a string of row k (not null) into *out, freeing what was
 * there. */
static int string_yaml(loader_t *L, const keydef_t *k, const node_t *node,
                       const char *label, char **out) {
  value_t v = {0};
  int rc = scalar_value(L, k, node, label, false, &v);
  if (rc == 0) {
    free(*out);
    *out = v.s;
    v.s = NULL;
  }
  value_free(&v);
  return rc;
}

/* Reads node as an integer (or enum) of row k into *out. */
static int int_yaml(loader_t *L, const keydef_t *k, const node_t *node,
                    const char *label, int *out) {
  value_t v = {0};
  int rc = scalar_value(L, k, node, label, false, &v);
  if (rc == 0)
    *out = (int)v.i;
  return rc;
}

/* from: now, beginning, or a position. */
static int from_yaml(loader_t *L, const node_t *val, const char *label,
                     char **out) {
  static const span_t words[] = {{"now", 3}, {"beginning", 9}};
  int rc =
      scalar_of(L, val, label, "now, beginning or a position", false, false);
  if (rc != 0)
    return rc;
  long long pos = -1;
  if (strcmp(val->text, "now") != 0 && strcmp(val->text, "beginning") != 0 &&
      (parse_ll(val->text, &pos) != 0 || pos < 0)) {
    char shown[ECHO_LEN], hint[64];
    echo_n(shown, sizeof shown, val->text, val->len, true);
    did_you_mean(hint, sizeof hint, val->text, words, NSPANS(words));
    return fail_at(L, val->line, val->col,
                   "%s: expected now, beginning or a position (a whole number "
                   ">= 0), got \"%s\"%s",
                   label, shown, hint);
  }
  char *s = strdup(val->text);
  if (s == NULL)
    return out_of_memory(L);
  free(*out);
  *out = s;
  return 0;
}

/* rate: deliveries per second, a plain decimal number. */
static int rate_yaml(loader_t *L, const node_t *val, const char *label,
                     double *out) {
  int rc = scalar_of(L, val, label, "a number of deliveries per second", false,
                     false);
  if (rc != 0)
    return rc;
  double r = 0;
  size_t n = parse_decimal(val->text, &r);
  char shown[ECHO_LEN], why[256];
  echo_n(shown, sizeof shown, val->text, val->len, true);
  if (n == 0 || n != val->len)
    return fail_at(L, val->line, val->col,
                   "%s: expected a number of deliveries per second (such as "
                   "50 or 0.5; 0: no limit), got \"%s\"",
                   label, shown);
  if (r > sub_rate.max) {
    range_why(why, sizeof why, &sub_rate, val->text);
    return fail_at(L, val->line, val->col, "%s: %s", label, why);
  }
  *out = r;
  return 0;
}

/* The most waits of a retry schedule, and the longest. */
enum { BACKOFF_MAX = 50 };
#define BACKOFF_MAX_S (31 * DAY_S)

/* backoff: a list of durations, the waits after each failed attempt (the
 * last repeats); null or [] for the default schedule. */
static int backoff_yaml(loader_t *L, const node_t *val, const char *label,
                        cl_config_subscriber_t *s) {
  char what[ECHO_LEN + 16];
  if (is_null(val))
    return 0;
  if (val->type != N_SEQ) {
    got(what, sizeof what, val);
    return fail_at(L, val->line, val->col,
                   "%s: expected a list of durations (such as [5s, 5m, 1h]), "
                   "got %s",
                   label, what);
  }
  if (val->nkids > BACKOFF_MAX)
    return fail_at(L, val->line, val->col,
                   "%s: %zu waits; a schedule has at most %d", label,
                   val->nkids, BACKOFF_MAX);
  if (val->nkids > 0 &&
      (s->backoff_s = calloc(val->nkids, sizeof *s->backoff_s)) == NULL)
    return out_of_memory(L);
  for (size_t i = 0; i < val->nkids; i++) {
    const node_t *item = val->kids[i];
    char ilabel[LABEL_LEN], index[32];
    snprintf(index, sizeof index, "[%zu]", i);
    join_label(ilabel, label, index, "");
    int rc = scalar_of(L, item, ilabel, "a duration", false, false);
    if (rc != 0)
      return rc;
    double v = 0;
    if (parse_duration(item->text, &v) != 0 || !(v > 0 && v <= BACKOFF_MAX_S)) {
      char shown[ECHO_LEN];
      echo_n(shown, sizeof shown, item->text, item->len, true);
      return fail_at(L, item->line, item->col,
                     "%s: expected a duration above 0 and at most 31d (such "
                     "as 30s, 5m, 2h), got \"%s\"",
                     ilabel, shown);
    }
    s->backoff_s[s->nbackoff++] = v;
  }
  return 0;
}

/* queues: a list of queue names; null or [] for every queue. */
static int sub_queues_yaml(loader_t *L, const node_t *val, const char *label,
                           cl_config_subscriber_t *s) {
  char what[ECHO_LEN + 16], why[512];
  if (is_null(val))
    return 0;
  if (val->type != N_SEQ) {
    got(what, sizeof what, val);
    return fail_at(L, val->line, val->col,
                   "%s: expected a list of queue names, got %s", label, what);
  }
  if (val->nkids > 0 &&
      (s->queues = calloc(val->nkids, sizeof *s->queues)) == NULL)
    return out_of_memory(L);
  for (size_t i = 0; i < val->nkids; i++) {
    const node_t *item = val->kids[i];
    char ilabel[LABEL_LEN], index[32];
    snprintf(index, sizeof index, "[%zu]", i);
    join_label(ilabel, label, index, "");
    int rc = scalar_of(L, item, ilabel, "a queue name", true, false);
    if (rc != 0)
      return rc;
    value_t seen = {.nq = i};
    if (check_queue(&seen, item->text, why, sizeof why) != 0)
      return fail_at(L, item->line, item->col, "%s: %s", ilabel, why);
    for (size_t j = 0; j < i; j++) {
      if (strcmp(s->queues[j], item->text) == 0) {
        char shown[ECHO_LEN];
        echo(shown, item->text, true);
        return fail_at(L, item->line, item->col,
                       "%s: queue \"%s\" is listed twice (first at line %zu)",
                       ilabel, shown, val->kids[j]->line);
      }
    }
    if ((s->queues[i] = strdup(item->text)) == NULL)
      return out_of_memory(L);
    s->nqueues++;
  }
  return 0;
}

/* pg: {target: DSN, sql: SQL}. */
static int pg_yaml(loader_t *L, const node_t *map, const char *label,
                   cl_config_sink_t *k) {
  char what[ECHO_LEN + 16], in[LABEL_LEN];
  if (map->type != N_MAP) {
    got(what, sizeof what, map);
    return fail_at(L, map->line, map->col,
                   "%s: expected a map {target: DSN, sql: SQL}, got %s", label,
                   what);
  }
  join_label(in, " in ", label, "");
  for (size_t i = 0; i + 1 < map->nkids; i += 2) {
    const node_t *key = map->kids[i], *val = map->kids[i + 1];
    char flabel[LABEL_LEN];
    size_t which = 0;
    int rc = map_key(L, map, i, in);
    if (rc == 0)
      rc = which_key(L, key, pg_keys, NSPANS(pg_keys), label, &which);
    if (rc != 0)
      return rc;
    join_label(flabel, label, ".", pg_keys[which].p);
    if (which == 0)
      rc = string_yaml(L, &pg_target, val, flabel, &k->pg_target);
    else
      rc = string_yaml(L, &pg_sql, val, flabel, &k->pg_sql);
    if (rc == 0)
      rc = mark_at(L, val, which == 0 ? &k->target_at : &k->sql_at);
    if (rc != 0)
      return rc;
  }
  if (k->pg_target == NULL)
    return fail_at(L, map->line, map->col,
                   "%s: needs target (the DSN of the database to write to)",
                   label);
  if (k->pg_sql == NULL)
    return fail_at(L, map->line, map->col,
                   "%s: needs sql (the statement to run there)", label);
  return 0;
}

/* sink: exactly one of exec, webhook (with secret_file or secret_env) and
 * pg, and a timeout. */
static int sink_yaml(loader_t *L, const node_t *map, const char *label,
                     cl_config_sink_t *k) {
  /* The kind each key of sink_keys names (NONE: not a kind). */
  static const cl_config_sink_kind_t kinds[NSPANS(sink_keys)] = {
      CL_CONFIG_SINK_EXEC, CL_CONFIG_SINK_WEBHOOK, CL_CONFIG_SINK_NONE,
      CL_CONFIG_SINK_NONE, CL_CONFIG_SINK_PG,      CL_CONFIG_SINK_NONE};
  char what[ECHO_LEN + 16], in[LABEL_LEN];
  if (map->type != N_MAP) {
    got(what, sizeof what, map);
    return fail_at(L, map->line, map->col,
                   "%s: expected a map with one of exec, webhook or pg, got %s",
                   label, what);
  }
  join_label(in, " in ", label, "");
  const node_t *kind_key = NULL, *secret_key = NULL;
  for (size_t i = 0; i + 1 < map->nkids; i += 2) {
    const node_t *key = map->kids[i], *val = map->kids[i + 1];
    char flabel[LABEL_LEN];
    size_t which = 0;
    int rc = map_key(L, map, i, in);
    if (rc == 0)
      rc = which_key(L, key, sink_keys, NSPANS(sink_keys), label, &which);
    if (rc != 0)
      return rc;
    join_label(flabel, label, ".", sink_keys[which].p);
    if (kinds[which] != CL_CONFIG_SINK_NONE && kind_key != NULL)
      return fail_at(L, key->line, key->col,
                     "%s: both %s and %s (a sink is exactly one of exec, "
                     "webhook or pg)",
                     label, kind_key->text, key->text);
    if ((which == 2 || which == 3) && secret_key != NULL)
      return fail_at(L, key->line, key->col,
                     "%s: both %s and %s (give the secrets one way)", label,
                     secret_key->text, key->text);
    switch (which) {
    case 0:
      rc = string_yaml(L, &sink_exec, val, flabel, &k->exec);
      break;
    case 1:
      rc = string_yaml(L, &sink_webhook, val, flabel, &k->webhook);
      break;
    case 2:
      rc = string_yaml(L, &sink_secret_file, val, flabel, &k->secret_file);
      break;
    case 3:
      rc = string_yaml(L, &sink_secret_env, val, flabel, &k->secret_env);
      break;
    case 4:
      rc = pg_yaml(L, val, flabel, k);
      break;
    default: {
      value_t v = {0};
      rc = scalar_value(L, &sink_timeout, val, flabel, false, &v);
      if (rc == 0)
        k->timeout_s = v.d;
    }
    }
    if (rc == 0 && (which == 2 || which == 3)) {
      secret_key = key;
      rc = mark_at(L, val, &k->secret_at);
    }
    if (rc != 0)
      return rc;
    if (kinds[which] != CL_CONFIG_SINK_NONE) {
      kind_key = key;
      k->kind = kinds[which];
    }
  }
  if (kind_key == NULL)
    return fail_at(L, map->line, map->col,
                   "%s: needs one of exec, webhook or pg", label);
  if (secret_key != NULL && k->kind != CL_CONFIG_SINK_WEBHOOK)
    return fail_at(L, secret_key->line, secret_key->col,
                   "%s: %s goes with webhook, not %s", label, secret_key->text,
                   kind_key->text);
  if (k->kind == CL_CONFIG_SINK_WEBHOOK && secret_key == NULL)
    return fail_at(L, kind_key->line, kind_key->col,
                   "%s: webhook needs its signing secrets: secret_file FILE "
                   "or secret_env VAR",
                   label);
  return 0;
}

/* Writes why for a bad subscriber name: cl_check_queue() speaks of a
 * queue name, which here is a subscriber's. */
static void sub_name_why(char *out, size_t n, const char *why) {
  if (strncmp(why, "queue name", 10) == 0)
    cl__msg(out, n, "subscriber name%s", why + 10);
  else
    cl__msg(out, n, "%s", why);
}

/* One subscriber: its name and its record. */
static int subscriber_yaml(loader_t *L, const node_t *name, const node_t *rec,
                           cl_config_subscriber_t *s) {
  char why[512], msg[512], what[ECHO_LEN + 16];
  char label[LABEL_LEN], in[LABEL_LEN];
  int rc = scalar_of(L, name, "subscribers", "a subscriber name", true, false);
  if (rc != 0)
    return rc;
  if (cl_check_queue(name->text, why, sizeof why) != 0) {
    sub_name_why(msg, sizeof msg, why);
    return fail_at(L, name->line, name->col, "subscribers: %s", msg);
  }
  /* A good name is plain text: it goes in labels as it is. */
  snprintf(label, sizeof label, "subscribers.%s", name->text);
  join_label(in, " in ", label, "");
  if ((s->name = strdup(name->text)) == NULL ||
      asprintf(&s->origin, "%s:%zu", L->name, name->line) < 0) {
    s->origin = NULL;
    return out_of_memory(L);
  }
  if (rec->type != N_MAP) {
    got(what, sizeof what, rec);
    return fail_at(L, rec->line, rec->col,
                   "%s: expected a map of its settings and its sink, got %s",
                   label, what);
  }
  const node_t *sink = NULL;
  for (size_t i = 0; i + 1 < rec->nkids; i += 2) {
    const node_t *key = rec->kids[i], *val = rec->kids[i + 1];
    char flabel[LABEL_LEN];
    size_t which = 0;
    rc = map_key(L, rec, i, in);
    if (rc == 0)
      rc = which_key(L, key, sub_keys, NSPANS(sub_keys), label, &which);
    if (rc != 0)
      return rc;
    join_label(flabel, label, ".", sub_keys[which].p);
    int v = 0;
    switch (which) {
    case 0:
      rc = sub_queues_yaml(L, val, flabel, s);
      break;
    case 1:
      rc = from_yaml(L, val, flabel, &s->from);
      break;
    case 2:
      if ((rc = int_yaml(L, &sub_in_doubt, val, flabel, &v)) == 0)
        s->in_doubt = (cl_config_in_doubt_t)v;
      break;
    case 3:
      rc = int_yaml(L, &sub_max_attempts, val, flabel, &s->max_attempts);
      break;
    case 4:
      rc = int_yaml(L, &sub_break_after, val, flabel, &s->break_after);
      break;
    case 5:
      rc = int_yaml(L, &sub_concurrency, val, flabel, &s->concurrency);
      break;
    case 6:
      rc = rate_yaml(L, val, flabel, &s->rate);
      break;
    case 7:
      if ((rc = int_yaml(L, &sub_ordering, val, flabel, &v)) == 0)
        s->ordering = (cl_config_ordering_t)v;
      break;
    case 8:
      rc = backoff_yaml(L, val, flabel, s);
      break;
    default:
      sink = val;
      rc = sink_yaml(L, val, flabel, &s->sink);
    }
    if (rc != 0)
      return rc;
  }
  if (sink == NULL)
    return fail_at(L, name->line, name->col,
                   "%s: needs a sink (sink: with one of exec, webhook or pg)",
                   label);
  return 0;
}

/* The subscribers: section, which replaces what cfg had. */
static int subscribers_yaml(loader_t *L, const node_t *key, const node_t *map) {
  cl_config_subscriber_t *subs = NULL;
  size_t n = 0;
  int rc = 0;
  if (!is_null(map) && map->type != N_MAP) {
    char what[ECHO_LEN + 16];
    got(what, sizeof what, map);
    return fail_at(L, map->line, map->col,
                   "subscribers: expected a map of subscriber names to their "
                   "settings, got %s",
                   what);
  }
  if (!is_null(map) && map->nkids > 0) {
    if (map->nkids / 2 > CL_CONFIG_SUBSCRIBERS_MAX) {
      const node_t *over = map->kids[2 * CL_CONFIG_SUBSCRIBERS_MAX];
      return fail_at(L, over->line, over->col,
                     "subscribers: more than %d subscribers",
                     CL_CONFIG_SUBSCRIBERS_MAX);
    }
    if ((subs = calloc(map->nkids / 2, sizeof *subs)) == NULL)
      return out_of_memory(L);
    for (size_t i = 0; rc == 0 && i + 1 < map->nkids; i += 2) {
      rc = map_key(L, map, i, " in subscribers");
      if (rc != 0)
        break;
      subscriber_init(&subs[n]);
      rc = subscriber_yaml(L, map->kids[i], map->kids[i + 1], &subs[n++]);
    }
  }
  char *origin = NULL;
  if (rc == 0 && asprintf(&origin, "%s:%zu", L->name, key->line) < 0) {
    origin = NULL;
    rc = out_of_memory(L);
  }
  if (rc != 0) {
    subscribers_free(subs, n);
    return rc;
  }
  cl_config_t *cfg = L->cfg;
  subscribers_free(cfg->subscribers, cfg->nsubscribers);
  free(cfg->subscribers_origin_);
  cfg->subscribers = subs;
  cfg->nsubscribers = n;
  cfg->subscribers_origin_ = origin;
  return 0;
}

int cl_config_load_string(cl_config_t *cfg, const char *text, size_t len,
                          const char *name, char *err, size_t errlen) {
  if (name == NULL)
    name = "(config)";
  if (text == NULL) {
    text = "";
    len = 0;
  }
  if (len > CL_CONFIG_FILE_MAX) {
    cl__msg(err, errlen,
            "%s: file is %zu bytes, over the %d-byte limit for a config "
            "file",
            name, len, CL_CONFIG_FILE_MAX);
    return CL_ECONFIG;
  }
  loader_t L = {
      .name = name, .text = text, .len = len, .err = err, .errlen = errlen};
  cl_config_t scratch;
  if (cl_config_copy(&scratch, cfg) != 0) {
    cl__msg(err, errlen, "%s: out of memory", name);
    return CL_ENOMEM;
  }
  L.cfg = &scratch;
  if (!yaml_parser_initialize(&L.parser)) {
    cl_config_free(&scratch);
    cl__msg(err, errlen, "%s: out of memory", name);
    return CL_ENOMEM;
  }
  yaml_parser_set_input_string(&L.parser, (const unsigned char *)text, len);
  node_t *root = NULL;
  int rc = parse_document(&L, &root);
  yaml_parser_delete(&L.parser);
  if (rc == 0 && root != NULL && !is_null(root)) {
    if (root->type != N_MAP) {
      char what[ECHO_LEN + 16];
      got(what, sizeof what, root);
      rc = fail_at(&L, root->line, root->col,
                   "the top level must be a map of keys, got %s", what);
    } else {
      rc = apply_map(&L, root, "");
    }
  }
  node_free(root);
  if (rc != 0) {
    cl_config_free(&scratch);
    return rc;
  }
  swap_in(cfg, &scratch);
  return 0;
}

int cl_config_load_file(cl_config_t *cfg, const char *path, char *err,
                        size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    cl__msg(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return CL_ECONFIG;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    cl__msg(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    close(fd);
    return CL_ECONFIG;
  }
  if (S_ISDIR(st.st_mode)) {
    cl__msg(err, errlen, "%s: cannot read: it is a directory", path);
    close(fd);
    return CL_ECONFIG;
  }
  if (S_ISREG(st.st_mode) && st.st_size > CL_CONFIG_FILE_MAX) {
    cl__msg(err, errlen,
            "%s: file is %lld bytes, over the %d-byte limit for a config "
            "file",
            path, (long long)st.st_size, CL_CONFIG_FILE_MAX);
    close(fd);
    return CL_ECONFIG;
  }
  /* Read one byte past the limit, so that a pipe or a growing file that
   * is too long is caught too. */
  char *buf = malloc(CL_CONFIG_FILE_MAX + 1);
  if (buf == NULL) {
    close(fd);
    cl__msg(err, errlen, "%s: out of memory", path);
    return CL_ENOMEM;
  }
  size_t got_n = 0;
  while (got_n < CL_CONFIG_FILE_MAX + 1) {
    ssize_t r = read(fd, buf + got_n, CL_CONFIG_FILE_MAX + 1 - got_n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      cl__msg(err, errlen, "%s: cannot read: %s", path, strerror(errno));
      free(buf);
      close(fd);
      return CL_ECONFIG;
    }
    if (r == 0)
      break;
    got_n += (size_t)r;
  }
  close(fd);
  int rc;
  if (got_n > CL_CONFIG_FILE_MAX) {
    cl__msg(err, errlen, "%s: file is over the %d-byte limit for a config file",
            path, CL_CONFIG_FILE_MAX);
    rc = CL_ECONFIG;
  } else {
    rc = cl_config_load_string(cfg, buf, got_n, path, err, errlen);
  }
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Validation                                                                */

/* Reads row k's field of cfg into v (strings and queues borrowed, not
 * copied: v must not be freed). */
static void peek(const cl_config_t *cfg, const keydef_t *k, value_t *v) {
  const void *f = field(cfg, k);
  *v = (value_t){0};
  switch (k->kind) {
  case K_STRING:
  case K_DSN:
  case K_URL:
    v->s = *(char *const *)f;
    break;
  case K_ENUM:
  case K_INT:
    v->i = *(const int *)f;
    break;
  case K_DURATION:
    v->d = *(const double *)f;
    break;
  case K_SIZE:
    v->z = *(const size_t *)f;
    break;
  case K_QUEUES:
    v->q = *(cl_config_queue_t *const *)f;
    v->nq = *(const size_t *)((const char *)f + sizeof(void *));
    break;
  case K_QMAP:
    qmap_load(k, (void *)f, v);
    break;
  }
}

/* Writes row k's value v in YAML into a malloc'd string (NULL when out of
 * memory); queues are the printer's business. */
static char *format_value(const keydef_t *k, const value_t *v);

/* Checks row k's value v.  Returns 0 or CL_ECONFIG with the reason in
 * why. */
static int check_value(const keydef_t *k, const value_t *v, char *why,
                       size_t n) {
  switch (k->kind) {
  case K_STRING:
    if (v->s == NULL)
      return 0;
    return (k->check != NULL ? k->check : check_text)(v->s, why, n) != 0
               ? CL_ECONFIG
               : 0;
  case K_DSN:
    return v->s != NULL && cl_check_dsn(v->s, why, n) != 0 ? CL_ECONFIG : 0;
  case K_URL:
    return v->s != NULL && check_url(v->s, why, n) != 0 ? CL_ECONFIG : 0;
  case K_QMAP: {
    value_t seen = {0};
    for (size_t i = 0; i < v->nm; i++) {
      char shown[ECHO_LEN], rwhy[256];
      seen.nm = i;
      seen.mn = v->mn;
      if (v->mn[i] == NULL || check_queue(&seen, v->mn[i], why, n) != 0)
        return CL_ECONFIG;
      echo(shown, v->mn[i], true);
      if (qmap_find(&seen, v->mn[i]) >= 0) {
        cl__msg(why, n, "queue \"%s\" is listed twice", shown);
        return CL_ECONFIG;
      }
      value_t one = qmap_get(v, k->item, i);
      if (check_value(k->item, &one, rwhy, sizeof rwhy) != 0) {
        qmap_why(why, n, shown, k->item, rwhy);
        return CL_ECONFIG;
      }
    }
    return 0;
  }
  case K_ENUM: {
    long long count = 0;
    while (k->names[count] != NULL)
      count++;
    if (v->i >= 0 && v->i < count)
      return 0;
    cl__msg(why, n, "%lld is not a valid value", v->i);
    return CL_ECONFIG;
  }
  case K_QUEUES: {
    value_t seen = {0};
    for (size_t i = 0; i < v->nq; i++) {
      int rc = 0;
      char shown[ECHO_LEN];
      seen.nq = i;
      seen.q = v->q;
      if (v->q[i].name == NULL || check_queue(&seen, v->q[i].name, why, n))
        rc = CL_ECONFIG;
      else if (queue_find(&seen, v->q[i].name) >= 0) {
        echo(shown, v->q[i].name, true);
        cl__msg(why, n, "queue \"%s\" is listed twice", shown);
        rc = CL_ECONFIG;
      } else if (v->q[i].weight < 1 || v->q[i].weight > WEIGHT_MAX) {
        echo(shown, v->q[i].name, true);
        cl__msg(why, n, "queue \"%s\": weight %d is out of range 1..%d", shown,
                v->q[i].weight, WEIGHT_MAX);
        rc = CL_ECONFIG;
      }
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  default:
    if (in_range(k, v) && !(k->kind == K_DURATION && isnan(v->d)))
      return 0;
    char *shown = format_value(k, v);
    range_why(why, n, k, shown != NULL ? shown : "the value");
    free(shown);
    return CL_ECONFIG;
  }
}

/* Checks the sink k as the loader does.  Returns 0 or CL_ECONFIG with the
 * reason in why. */
static int check_sink(const cl_config_sink_t *k, char *why, size_t n) {
  const struct {
    const keydef_t *row;
    const char *s;
  } strings[] = {{&sink_exec, k->exec},
                 {&sink_webhook, k->webhook},
                 {&sink_secret_file, k->secret_file},
                 {&sink_secret_env, k->secret_env},
                 {&pg_target, k->pg_target},
                 {&pg_sql, k->pg_sql}};
  char r[512];
  for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
    value_t v = {.s = (char *)strings[i].s};
    if (check_value(strings[i].row, &v, r, sizeof r) != 0) {
      cl__msg(why, n, "sink.%s: %s", strings[i].row->path, r);
      return CL_ECONFIG;
    }
  }
  value_t t = {.d = k->timeout_s};
  if (check_value(&sink_timeout, &t, r, sizeof r) != 0) {
    cl__msg(why, n, "sink.timeout: %s", r);
    return CL_ECONFIG;
  }
  int kinds = (k->exec != NULL) + (k->webhook != NULL) +
              (k->pg_target != NULL || k->pg_sql != NULL);
  bool secrets = k->secret_file != NULL || k->secret_env != NULL;
  bool ok = kinds == 1;
  switch (k->kind) {
  case CL_CONFIG_SINK_EXEC:
    ok = ok && k->exec != NULL && !secrets;
    break;
  case CL_CONFIG_SINK_WEBHOOK:
    ok = ok && k->webhook != NULL &&
         (k->secret_file != NULL) != (k->secret_env != NULL);
    break;
  case CL_CONFIG_SINK_PG:
    ok = ok && k->pg_target != NULL && k->pg_sql != NULL && !secrets;
    break;
  default:
    ok = false;
  }
  if (!ok) {
    cl__msg(why, n,
            "sink: needs exactly one of exec, webhook (with one of "
            "secret_file and secret_env) or pg (with target and sql)");
    return CL_ECONFIG;
  }
  return 0;
}

/* Checks the subscriber s as the loader does.  Returns 0 or CL_ECONFIG
 * with the reason in why. */
static int check_subscriber(const cl_config_subscriber_t *s, char *why,
                            size_t n) {
  char r[512];
  value_t seen = {0};
  for (size_t i = 0; i < s->nqueues; i++) {
    seen.nq = i;
    if (s->queues[i] == NULL || check_queue(&seen, s->queues[i], r, sizeof r)) {
      cl__msg(why, n, "queues: %s", s->queues[i] ? r : "a name is missing");
      return CL_ECONFIG;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(s->queues[j], s->queues[i]) == 0) {
        char shown[ECHO_LEN];
        echo(shown, s->queues[i], true);
        cl__msg(why, n, "queues: queue \"%s\" is listed twice", shown);
        return CL_ECONFIG;
      }
    }
  }
  long long pos = 0;
  if (s->from != NULL && strcmp(s->from, "now") != 0 &&
      strcmp(s->from, "beginning") != 0 &&
      (parse_ll(s->from, &pos) != 0 || pos < 0)) {
    char shown[ECHO_LEN];
    echo(shown, s->from, true);
    cl__msg(why, n,
            "from: expected now, beginning or a position (a whole number "
            ">= 0), got \"%s\"",
            shown);
    return CL_ECONFIG;
  }
  const struct {
    const keydef_t *row;
    long long i;
  } ints[] = {{&sub_in_doubt, s->in_doubt},
              {&sub_max_attempts, s->max_attempts},
              {&sub_break_after, s->break_after},
              {&sub_concurrency, s->concurrency},
              {&sub_ordering, s->ordering}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    value_t v = {.i = ints[i].i};
    if (check_value(ints[i].row, &v, r, sizeof r) != 0) {
      cl__msg(why, n, "%s: %s", ints[i].row->path, r);
      return CL_ECONFIG;
    }
  }
  if (!(s->rate >= 0 && s->rate <= sub_rate.max)) {
    char shown[32];
    snprintf(shown, sizeof shown, "%.15g", s->rate);
    range_why(r, sizeof r, &sub_rate, shown);
    cl__msg(why, n, "rate: %s", r);
    return CL_ECONFIG;
  }
  if (s->nbackoff > BACKOFF_MAX) {
    cl__msg(why, n, "backoff: %zu waits; a schedule has at most %d",
            s->nbackoff, BACKOFF_MAX);
    return CL_ECONFIG;
  }
  for (size_t i = 0; i < s->nbackoff; i++) {
    if (!(s->backoff_s[i] > 0 && s->backoff_s[i] <= BACKOFF_MAX_S)) {
      cl__msg(why, n, "backoff[%zu]: %g s is not above 0 and at most 31d", i,
              s->backoff_s[i]);
      return CL_ECONFIG;
    }
  }
  return check_sink(&s->sink, why, n);
}

/* Checks every subscriber of cfg, and that each name is declared once. */
static int check_subscribers(const cl_config_t *cfg, char *err, size_t errlen) {
  char why[600];
  if (cfg->nsubscribers > CL_CONFIG_SUBSCRIBERS_MAX) {
    cl__msg(err, errlen, "subscribers: more than %d subscribers",
            CL_CONFIG_SUBSCRIBERS_MAX);
    return CL_ECONFIG;
  }
  for (size_t i = 0; i < cfg->nsubscribers; i++) {
    const cl_config_subscriber_t *s = &cfg->subscribers[i];
    const char *origin = s->origin != NULL ? s->origin : "set";
    if (s->name == NULL || cl_check_queue(s->name, why, sizeof why) != 0) {
      char msg[600];
      sub_name_why(msg, sizeof msg, s->name ? why : "a name is missing");
      cl__msg(err, errlen, "subscribers: %s (from %s)", msg, origin);
      return CL_ECONFIG;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(cfg->subscribers[j].name, s->name) == 0) {
        cl__msg(err, errlen, "subscribers: \"%s\" is declared twice (from %s)",
                s->name, origin);
        return CL_ECONFIG;
      }
    }
    if (check_subscriber(s, why, sizeof why) != 0) {
      cl__msg(err, errlen, "subscribers.%s.%s (from %s)", s->name, why, origin);
      return CL_ECONFIG;
    }
  }
  return 0;
}

int cl_config_validate(const cl_config_t *cfg, char *err, size_t errlen) {
  char why[512];
  for (size_t i = 0; i < NKEYS; i++) {
    value_t v;
    peek(cfg, &keys[i], &v);
    if (check_value(&keys[i], &v, why, sizeof why) != 0) {
      cl__msg(err, errlen, "%s: %s (from %s)", keys[i].path, why,
              cl_config_origin(cfg, keys[i].path));
      return CL_ECONFIG;
    }
  }
  /* Each beat is a transaction: a few a second per worker at most. */
  if (cfg->worker.heartbeat_s > 0 &&
      cfg->worker.heartbeat_s < CL_WORKER_HEARTBEAT_MIN) {
    char hb[32], lo[32];
    format_duration(hb, sizeof hb, cfg->worker.heartbeat_s);
    format_duration(lo, sizeof lo, CL_WORKER_HEARTBEAT_MIN);
    cl__msg(err, errlen,
            "worker.heartbeat (%s, from %s) is below the minimum of %s", hb,
            cl_config_origin(cfg, "worker.heartbeat"), lo);
    return CL_ECONFIG;
  }
  /* A heartbeat as long as the lease minus the fencing margin would fence
   * every job before its lease is extended. */
  double margin = cl_worker_fence_margin_s(cfg->worker.lease_s);
  if (cfg->worker.heartbeat_s > 0 &&
      cfg->worker.heartbeat_s >= cfg->worker.lease_s - margin) {
    char hb[32], lease[32], m[32];
    format_duration(hb, sizeof hb, cfg->worker.heartbeat_s);
    format_duration(lease, sizeof lease, cfg->worker.lease_s);
    format_duration(m, sizeof m, margin);
    cl__msg(err, errlen,
            "worker.heartbeat (%s, from %s) must be shorter than "
            "worker.lease (%s, from %s) minus the fencing margin (%s)",
            hb, cl_config_origin(cfg, "worker.heartbeat"), lease,
            cl_config_origin(cfg, "worker.lease"), m);
    return CL_ECONFIG;
  }
  /* The cap bounds every retry's delay, so a cap below the first delay
   * (the default one or a queue's) would quietly replace that delay. */
  char cap[32], d[32];
  format_duration(cap, sizeof cap, cfg->reaper.backoff_max_s);
  if (cfg->reaper.backoff_max_s < cfg->reaper.backoff_s) {
    format_duration(d, sizeof d, cfg->reaper.backoff_s);
    cl__msg(err, errlen,
            "reaper.backoff_max: %s is less than reaper.backoff (%s)", cap, d);
    return CL_ECONFIG;
  }
  for (size_t i = 0; i < cfg->reaper.nqueue_backoff; i++) {
    if (cfg->reaper.queue_backoff_s[i] <= cfg->reaper.backoff_max_s)
      continue;
    char shown[ECHO_LEN];
    echo(shown, cfg->reaper.queue_backoff_names[i], true);
    format_duration(d, sizeof d, cfg->reaper.queue_backoff_s[i]);
    cl__msg(err, errlen,
            "reaper.queue_backoff: queue \"%s\": backoff %s is more than "
            "reaper.backoff_max (%s)",
            shown, d, cap);
    return CL_ECONFIG;
  }
  return check_subscribers(cfg, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Printing                                                                  */

/* Returns s as a malloc'd YAML double-quoted scalar, or NULL when out of
 * memory.  Escapes go by code point (CL__ESC_CODE_POINTS), as YAML reads
 * them, and cover everything YAML would refuse or fold if written as it
 * is, so that the printed value loads back the same (a dsn can hold any
 * character; the other strings are checked text).  Only bytes that are not
 * UTF-8 cannot come back: YAML has no spelling for them. */
static char *yaml_quote(const char *s) {
  size_t len = strlen(s), cap = CL__ESC_SIZE(len) + 2;
  char *out = malloc(cap);
  if (out == NULL)
    return NULL;
  out[0] = '"';
  size_t n = cl__escape(out + 1, cap - 2, s, len, len,
                        CL__ESC_QUOTES | CL__ESC_CODE_POINTS);
  out[n + 1] = '"';
  out[n + 2] = '\0';
  return out;
}

static char *format_value(const keydef_t *k, const value_t *v) {
  char buf[64];
  switch (k->kind) {
  case K_STRING:
    return v->s != NULL ? yaml_quote(v->s) : strdup("null");
  case K_DSN: {
    if (v->s == NULL)
      return strdup("null");
    char *red = cl_dsn_redact(v->s);
    char *q = red != NULL ? yaml_quote(red) : NULL;
    free(red);
    return q;
  }
  case K_URL: {
    if (v->s == NULL)
      return strdup("null");
    char *red = url_redact(v->s);
    char *q = red != NULL ? yaml_quote(red) : NULL;
    free(red);
    return q;
  }
  case K_QMAP:
    snprintf(buf, sizeof buf, "%s", v->nm == 0 ? "{}" : "");
    break;
  case K_ENUM:
    for (long long i = 0; k->names[i] != NULL; i++)
      if (i == v->i)
        return strdup(k->names[i]);
    snprintf(buf, sizeof buf, "%lld", v->i);
    break;
  case K_INT:
    snprintf(buf, sizeof buf, "%lld", v->i);
    break;
  case K_DURATION:
    format_duration(buf, sizeof buf, v->d);
    break;
  case K_SIZE:
    format_size(buf, sizeof buf, v->z);
    break;
  case K_QUEUES:
    snprintf(buf, sizeof buf, "%s", v->nq == 0 ? "[]" : "");
    break;
  }
  return strdup(buf);
}

/* A queue name can go unquoted when it cannot be read as anything else. */
static bool plain_name(const char *s) {
  if (!isalpha((unsigned char)s[0]) && s[0] != '_')
    return false;
  if (strchr(s, ':') != NULL)
    return false;
  return strcasecmp(s, "null") != 0 && strcasecmp(s, "true") != 0 &&
         strcasecmp(s, "false") != 0;
}

/* Writes one "key: value   # comment" line, the comments lined up: the
 * comment is origin then note; without an origin (a field of a record)
 * just the note, and with neither there is none. */
static void emit(FILE *out, int indent, const char *key, const char *value,
                 const char *origin, const char *note) {
  int w = fprintf(out, "%*s%s:%s%s", indent, "", key, *value ? " " : "", value);
  if (origin == NULL && note == NULL) {
    fputc('\n', out);
    return;
  }
  int pad = w < COMMENT_COL - 2 ? COMMENT_COL - w : 2;
  fprintf(out, "%*s# %s%s\n", pad, "", origin ? origin : "", note ? note : "");
}

/* Returns the length of the first n+1 components of path ("worker" for
 * n = 0 in "worker.lease"). */
static size_t components_len(const char *path, int n) {
  size_t len = strcspn(path, ".");
  for (; n > 0 && path[len] == '.'; n--)
    len += 1 + strcspn(path + len + 1, ".");
  return len;
}

/* Returns name as YAML: plain when it can be, else quoted (malloc'd; NULL
 * when out of memory). */
static char *yaml_name(const char *name) {
  return plain_name(name) ? strdup(name) : yaml_quote(name);
}

/* Writes the string field k of a sink (NULL: nothing), masked as its kind
 * says. */
static int emit_string(FILE *out, int indent, const keydef_t *k,
                       const char *s) {
  if (s == NULL)
    return 0;
  char *text = format_value(k, &(value_t){.s = (char *)s});
  if (text == NULL)
    return CL_ENOMEM;
  emit(out, indent, k->path, text, NULL, NULL);
  free(text);
  return 0;
}

/* Writes the integer field k of a record, with what 0 means when it says. */
static void emit_int(FILE *out, int indent, const keydef_t *k, long long v) {
  char text[32];
  snprintf(text, sizeof text, "%lld", v);
  emit(out, indent, k->path, text, NULL, v == 0 ? k->zero : NULL);
}

/* Writes one subscriber record, every field with its value. */
static int print_subscriber(const cl_config_subscriber_t *s, FILE *out) {
  char *name = yaml_name(s->name);
  if (name == NULL)
    return CL_ENOMEM;
  emit(out, 2, name, "", s->origin != NULL ? s->origin : "set", "");
  free(name);
  /* queues: [a, b] */
  size_t len = 3;
  char **shown = calloc(s->nqueues + 1, sizeof *shown);
  int rc = shown != NULL ? 0 : CL_ENOMEM;
  for (size_t i = 0; rc == 0 && i < s->nqueues; i++) {
    if ((shown[i] = yaml_name(s->queues[i])) == NULL)
      rc = CL_ENOMEM;
    else
      len += strlen(shown[i]) + 2;
  }
  char *list = rc == 0 ? malloc(len) : NULL;
  if (list != NULL) {
    size_t o = (size_t)snprintf(list, len, "[");
    for (size_t i = 0; i < s->nqueues; i++)
      o += (size_t)snprintf(list + o, len - o, "%s%s", i ? ", " : "", shown[i]);
    snprintf(list + o, len - o, "]");
    emit(out, 4, "queues", list, NULL, s->nqueues == 0 ? "every queue" : NULL);
  }
  for (size_t i = 0; shown != NULL && i < s->nqueues; i++)
    free(shown[i]);
  free(shown);
  if (list == NULL)
    return CL_ENOMEM;
  free(list);
  emit(out, 4, "from", s->from != NULL ? s->from : "now", NULL,
       "only when it is created");
  emit(out, 4, "in_doubt", in_doubt_names[s->in_doubt != 0], NULL, NULL);
  emit_int(out, 4, &sub_max_attempts, s->max_attempts);
  emit_int(out, 4, &sub_break_after, s->break_after);
  emit_int(out, 4, &sub_concurrency, s->concurrency);
  char rate[32];
  snprintf(rate, sizeof rate, "%.15g", s->rate);
  emit(out, 4, "rate", rate, NULL, s->rate == 0 ? sub_rate.zero : NULL);
  emit(out, 4, "ordering", ordering_names[s->ordering != 0], NULL, NULL);
  char sched[BACKOFF_MAX * 24 + 4];
  size_t at = (size_t)snprintf(sched, sizeof sched, "[");
  for (size_t i = 0; i < s->nbackoff && at < sizeof sched; i++) {
    char d[32];
    format_duration(d, sizeof d, s->backoff_s[i]);
    at += (size_t)snprintf(sched + at, sizeof sched - at, "%s%s", i ? ", " : "",
                           d);
  }
  if (at < sizeof sched)
    snprintf(sched + at, sizeof sched - at, "]");
  emit(out, 4, "backoff", sched, NULL,
       s->nbackoff == 0 ? "5s, 5m, 30m, 2h, 5h, then 10h" : NULL);
  /* The sink: its kind's keys (a webhook's URL masked, a pg target's
   * password too), then its timeout. */
  const cl_config_sink_t *k = &s->sink;
  char timeout[32];
  format_duration(timeout, sizeof timeout, k->timeout_s);
  emit(out, 4, "sink", "", NULL, NULL);
  if (emit_string(out, 6, &sink_exec, k->exec) != 0 ||
      emit_string(out, 6, &sink_webhook, k->webhook) != 0 ||
      emit_string(out, 6, &sink_secret_file, k->secret_file) != 0 ||
      emit_string(out, 6, &sink_secret_env, k->secret_env) != 0)
    return CL_ENOMEM;
  if (k->pg_target != NULL || k->pg_sql != NULL) {
    emit(out, 6, "pg", "", NULL, NULL);
    if (emit_string(out, 8, &pg_target, k->pg_target) != 0 ||
        emit_string(out, 8, &pg_sql, k->pg_sql) != 0)
      return CL_ENOMEM;
  }
  emit(out, 6, "timeout", timeout, NULL, NULL);
  return 0;
}

/* Writes the subscribers: section. */
static int print_subscribers(const cl_config_t *cfg, FILE *out) {
  const char *origin =
      cfg->subscribers_origin_ != NULL ? cfg->subscribers_origin_ : "default";
  if (cfg->nsubscribers == 0) {
    emit(out, 0, "subscribers", "{}", origin,
         " ({}: none; declared in a file only)");
    return 0;
  }
  emit(out, 0, "subscribers", "", origin, "");
  for (size_t i = 0; i < cfg->nsubscribers; i++) {
    int rc = print_subscriber(&cfg->subscribers[i], out);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int cl_config_print(const cl_config_t *cfg, FILE *out) {
  const char *prev = NULL;
  for (size_t i = 0; i < NKEYS; i++) {
    const keydef_t *k = &keys[i];
    /* Open the sections of this key that the previous key was not in. */
    int depth = 0;
    for (const char *dot = strchr(k->path, '.'); dot != NULL;
         dot = strchr(dot + 1, '.'), depth++) {
      size_t len = components_len(k->path, depth);
      size_t start = depth == 0 ? 0 : components_len(k->path, depth - 1) + 1;
      if (prev == NULL || strncmp(prev, k->path, len) != 0 || prev[len] != '.')
        fprintf(out, "%*s%.*s:\n", 2 * depth, "", (int)(len - start),
                k->path + start);
    }
    prev = k->path;
    const char *last_dot = strrchr(k->path, '.');
    value_t v;
    peek(cfg, k, &v);
    char *text = format_value(k, &v);
    if (text == NULL)
      return CL_ENOMEM;
    const char *origin = cl_config_origin(cfg, k->path);
    bool is_zero = is_string(k)            ? v.s == NULL
                   : k->kind == K_QUEUES   ? v.nq == 0
                   : k->kind == K_QMAP     ? v.nm == 0
                   : k->kind == K_INT      ? v.i == 0
                   : k->kind == K_DURATION ? v.d == 0
                   : k->kind == K_SIZE     ? v.z == 0
                                           : false;
    const char *zero_text = is_string(k)          ? "null"
                            : k->kind == K_QUEUES ? "[]"
                            : k->kind == K_QMAP   ? "{}"
                                                  : "0";
    char note[128] = "";
    if (is_zero && k->zero != NULL)
      snprintf(note, sizeof note, " (%s: %s)", zero_text, k->zero);
    emit(out, 2 * depth, last_dot ? last_dot + 1 : k->path, text, origin, note);
    free(text);
    for (size_t j = 0; k->kind == K_QUEUES && j < v.nq; j++) {
      char *name = plain_name(v.q[j].name) ? strdup(v.q[j].name)
                                           : yaml_quote(v.q[j].name);
      if (name == NULL)
        return CL_ENOMEM;
      if (v.q[j].weight == 1)
        fprintf(out, "%*s- %s\n", 2 * depth + 2, "", name);
      else
        fprintf(out, "%*s- {name: %s, weight: %d}\n", 2 * depth + 2, "", name,
                v.q[j].weight);
      free(name);
    }
    for (size_t j = 0; k->kind == K_QMAP && j < v.nm; j++) {
      value_t one = qmap_get(&v, k->item, j);
      char *name = plain_name(v.mn[j]) ? strdup(v.mn[j]) : yaml_quote(v.mn[j]);
      char *val = format_value(k->item, &one);
      if (name == NULL || val == NULL) {
        free(name);
        free(val);
        return CL_ENOMEM;
      }
      fprintf(out, "%*s%s: %s\n", 2 * depth + 2, "", name, val);
      free(name);
      free(val);
    }
  }
  int rc = print_subscribers(cfg, out);
  if (rc != 0)
    return rc;
  if (fflush(out) != 0 || ferror(out))
    return CL_EIO;
  return 0;
}
