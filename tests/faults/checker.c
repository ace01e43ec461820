/*
 * checker.c: reads what a fault run recorded (history.h has the formats)
 * and checks the guarantees against it, with no database.  It works in two
 * passes.  The first reads every file into plain records: operations (an
 * invoke joined with its outcome), leases (one per token, the grant lines
 * folded together), runs, effects, results, deliveries, subscribers,
 * faults and the final items; every record that names an item shares one
 * item record.  The second sorts what needs an order (an item's leases by
 * grant time, its results by commit, its runs by start) and counts each
 * check, keeping the first few examples.  Words: an "op" is one client
 * operation of history.jsonl; it is "open" when its invoke has no outcome;
 * to "settle" an info or open op is to decide from the final state whether
 * it took effect ("committed") or not.
 */
#include "checker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <json-c/json.h>

#define WORK_SINK "work"

/* ------------------------------------------------------------------------ */
/* Strings: an arena, so the records can point into it freely               */

typedef struct chunk {
  struct chunk *next;
  size_t used, cap;
  _Alignas(max_align_t) char data[];
} chunk_t;

typedef struct {
  chunk_t *head;
} arena_t;

/* Returns n bytes aligned for any object, freed with the arena, or NULL. */
static void *arena_alloc(arena_t *a, size_t n) {
  const size_t align = _Alignof(max_align_t);
  n = (n + align - 1) / align * align;
  if (!a->head || a->head->cap - a->head->used < n) {
    size_t cap = n > 65536 ? n : 65536;
    chunk_t *ch = malloc(sizeof *ch + cap);
    if (!ch)
      return NULL;
    ch->next = a->head;
    ch->used = 0;
    ch->cap = cap;
    a->head = ch;
  }
  void *p = a->head->data + a->head->used;
  a->head->used += n;
  return p;
}

/* Returns a copy of s[0..n) with a NUL after it, in the arena, or NULL. */
static char *arena_strndup(arena_t *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

static void arena_free(arena_t *a) {
  while (a->head) {
    chunk_t *next = a->head->next;
    free(a->head);
    a->head = next;
  }
}

/* ------------------------------------------------------------------------ */
/* A map from byte strings (keys may hold NUL: composite keys) to indexes    */

typedef struct {
  const char *key; /* NULL: a free slot */
  size_t len;
  size_t val;
} slot_t;

typedef struct {
  slot_t *slots;
  size_t cap, n;
} smap_t;

static uint64_t hash_bytes(const char *k, size_t len) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)k[i];
    h *= 1099511628211ull;
  }
  return h;
}

static slot_t *smap_slot(const smap_t *m, const char *k, size_t len) {
  size_t i = hash_bytes(k, len) & (m->cap - 1);
  for (;;) {
    slot_t *s = &m->slots[i];
    if (!s->key || (s->len == len && memcmp(s->key, k, len) == 0))
      return s;
    i = (i + 1) & (m->cap - 1);
  }
}

/* Returns true and the value in *val when k is in the map. */
static bool smap_get(const smap_t *m, const char *k, size_t len, size_t *val) {
  if (m->cap == 0)
    return false;
  slot_t *s = smap_slot(m, k, len);
  if (!s->key)
    return false;
  *val = s->val;
  return true;
}

/* Sets k to val; k must outlive the map.  Returns 0, or -1 out of memory. */
static int smap_put(smap_t *m, const char *k, size_t len, size_t val) {
  if ((m->n + 1) * 2 > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    slot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
      return -1;
    smap_t bigger = {slots, cap, 0};
    for (size_t i = 0; i < m->cap; i++)
      if (m->slots[i].key) {
        *smap_slot(&bigger, m->slots[i].key, m->slots[i].len) = m->slots[i];
        bigger.n++;
      }
    free(m->slots);
    *m = bigger;
  }
  slot_t *s = smap_slot(m, k, len);
  if (!s->key) {
    s->key = k;
    s->len = len;
    m->n++;
  }
  s->val = val;
  return 0;
}

static void smap_free(smap_t *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------ */
/* Records                                                                  */

enum { OUT_OPEN, OUT_OK, OUT_FAIL, OUT_INFO };

typedef struct {
  const char *p, *op, *worker;
  int64_t id;
  int outcome;
  bool has_wall;
  double wall;        /* of the invoke */
  const char **items; /* enqueue: the invoke's; claim: the ok's */
  size_t nitems;
  const char **tokens; /* claim ok: one per item */
  const char *item, *token, *sub, *key;
  double window_end; /* claim: the next claim invoke of p */
} op_t;

typedef struct {
  const char *id;
  bool present; /* in items.jsonl */
  const char *state;
  bool poison;
  bool has_last_token;
  const char *last_token; /* NULL: null in the dump */
  bool mentioned;         /* named by some enqueue */
  bool enqueued;
  size_t result0, nresults; /* in the sorted results */
  size_t lease0, nleases;   /* in the sorted leases */
  size_t run0, nruns;       /* in the sorted runs */
} item_t;

typedef struct {
  size_t item;
  const char *token, *worker, *how;
  bool has_grant, has_ended;
  double granted, until, ended;
  size_t end_line;
  bool accounted; /* by a claim op */
} lease_t;

typedef struct {
  size_t item;
  const char *token;
  double start, end;
  bool has_end;
} run_t;

typedef struct {
  size_t item;
  const char *token;
  double committed;
} result_t;

typedef struct {
  const char *sub, *item, *state, *key, *token;
} delivery_t;

typedef struct {
  const char *sub, *sink;
} sub_t;

typedef struct {
  const char *sink, *key;
  uint64_t count;
  bool expected;
} effect_t;

typedef struct {
  const char *kind;
  double wall, ended, recovered;
  bool has_ended, has_recovered;
} fault_t;

/* Typed growable arrays: <name>_push returns a zeroed new element or NULL. */
#define DEFINE_VEC(name, T)                                                    \
  typedef struct {                                                             \
    T *v;                                                                      \
    size_t n, cap;                                                             \
  } name##_vec_t;                                                              \
  static T *name##_push(name##_vec_t *a) {                                     \
    if (a->n == a->cap) {                                                      \
      size_t cap = a->cap ? 2 * a->cap : 16;                                   \
      T *v = realloc(a->v, cap * sizeof *v);                                   \
      if (!v)                                                                  \
        return NULL;                                                           \
      a->v = v;                                                                \
      a->cap = cap;                                                            \
    }                                                                          \
    T *x = &a->v[a->n++];                                                      \
    memset(x, 0, sizeof *x);                                                   \
    return x;                                                                  \
  }

DEFINE_VEC(op, op_t)
DEFINE_VEC(item, item_t)
DEFINE_VEC(lease, lease_t)
DEFINE_VEC(run, run_t)
DEFINE_VEC(result, result_t)
DEFINE_VEC(delivery, delivery_t)
DEFINE_VEC(sub, sub_t)
DEFINE_VEC(effect, effect_t)
DEFINE_VEC(fault, fault_t)

typedef struct {
  fc_report_t *r;
  char *err;
  size_t errlen;
  bool oom;
  const char *file; /* where the line being read is, for messages */
  size_t line;
  arena_t arena;
  json_tokener *tok;
  char *scratch; /* for composite lookup keys */
  size_t scratch_cap;

  op_vec_t ops;
  smap_t op_by_pid; /* p NUL id -> the latest op */
  item_vec_t items;
  smap_t item_by_id;
  lease_vec_t leases;
  smap_t lease_by_token;
  lease_t **lease_order; /* by item, then granted */
  run_vec_t runs;
  result_vec_t results;
  delivery_vec_t deliveries;
  smap_t delivery_by_key; /* sub NUL item */
  sub_vec_t subs;
  smap_t sub_by_name;
  effect_vec_t effects;
  smap_t effect_by_key; /* sink NUL key */
  fault_vec_t faults;
} checker_t;

/* ------------------------------------------------------------------------ */
/* Errors and examples                                                      */

/* Returns FC_EINPUT with "file:line: message" in the caller's buffer. */
static int bad_line(checker_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int bad_line(checker_t *c, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c->errlen)
    snprintf(c->err, c->errlen, "%s:%zu: %s", c->file, c->line, msg);
  return FC_EINPUT;
}

static int oom(checker_t *c) {
  c->oom = true;
  if (c->errlen)
    snprintf(c->err, c->errlen, "out of memory");
  return FC_ENOMEM;
}

/* Counts one case of check id, keeping it as an example while there is
 * room.  An allocation failure is remembered in c->oom. */
static void note(checker_t *c, fc_check_id_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(checker_t *c, fc_check_id_t id, const char *fmt, ...) {
  fc_count_t *k = &c->r->checks[id];
  k->count++;
  if (k->nexamples == FC_EXAMPLES)
    return;
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0)
    c->oom = true;
  else
    k->examples[k->nexamples++] = s;
  va_end(ap);
}

/* Returns "a NUL b" in the scratch buffer (valid until the next call), its
 * length in *len, or NULL out of memory. */
static const char *key2(checker_t *c, const char *a, const char *b,
                        size_t *len) {
  size_t la = strlen(a), lb = strlen(b);
  if (la + lb + 1 > c->scratch_cap) {
    size_t cap = (la + lb + 1) * 2;
    char *s = realloc(c->scratch, cap);
    if (!s)
      return NULL;
    c->scratch = s;
    c->scratch_cap = cap;
  }
  memcpy(c->scratch, a, la);
  c->scratch[la] = '\0';
  memcpy(c->scratch + la + 1, b, lb);
  *len = la + lb + 1;
  return c->scratch;
}

/* Returns the same key copied into the arena, or NULL. */
static const char *keep_key(checker_t *c, const char *k, size_t len) {
  return arena_strndup(&c->arena, k, len);
}

/* ------------------------------------------------------------------------ */
/* Fields of a line                                                         */

/* Each getter returns 0, or FC_EINPUT naming the field when it is required
 * and absent (or null), or of the wrong type.  *has says whether it was
 * there (may be NULL for required fields). */

static json_object *field(json_object *o, const char *name) {
  json_object *v = NULL;
  if (!json_object_object_get_ex(o, name, &v))
    return NULL;
  return v; /* NULL for a JSON null too */
}

static int get_str(checker_t *c, json_object *o, const char *name,
                   bool required, const char **out) {
  json_object *v = field(o, name);
  *out = NULL;
  if (!v)
    return required ? bad_line(c, "\"%s\" is missing", name) : 0;
  if (!json_object_is_type(v, json_type_string))
    return bad_line(c, "\"%s\" is not a string", name);
  const char *s = json_object_get_string(v);
  size_t len = (size_t)json_object_get_string_len(v);
  if (strlen(s) != len)
    return bad_line(c, "\"%s\" contains a NUL", name);
  if (required && len == 0)
    return bad_line(c, "\"%s\" is empty", name);
  *out = arena_strndup(&c->arena, s, len);
  return *out ? 0 : oom(c);
}

static int get_num(checker_t *c, json_object *o, const char *name,
                   bool required, double *out, bool *has) {
  json_object *v = field(o, name);
  *out = 0;
  if (has)
    *has = v != NULL;
  if (!v)
    return required ? bad_line(c, "\"%s\" is missing", name) : 0;
  if (!json_object_is_type(v, json_type_double) &&
      !json_object_is_type(v, json_type_int))
    return bad_line(c, "\"%s\" is not a number", name);
  *out = json_object_get_double(v);
  return 0;
}

static int get_bool(checker_t *c, json_object *o, const char *name, bool *out) {
  json_object *v = field(o, name);
  *out = false;
  if (!v)
    return 0;
  if (!json_object_is_type(v, json_type_boolean))
    return bad_line(c, "\"%s\" is not a boolean", name);
  *out = json_object_get_boolean(v);
  return 0;
}

/* An array of non-empty strings, copied into the arena (absent: n = 0). */
static int get_strs(checker_t *c, json_object *o, const char *name,
                    const char ***out, size_t *n) {
  json_object *v = field(o, name);
  *out = NULL;
  *n = 0;
  if (!v)
    return 0;
  if (!json_object_is_type(v, json_type_array))
    return bad_line(c, "\"%s\" is not an array", name);
  size_t len = json_object_array_length(v);
  const char **a = arena_alloc(&c->arena, (len ? len : 1) * sizeof *a);
  if (!a)
    return oom(c);
  for (size_t i = 0; i < len; i++) {
    json_object *e = json_object_array_get_idx(v, i);
    if (!json_object_is_type(e, json_type_string) ||
        json_object_get_string_len(e) == 0 ||
        strlen(json_object_get_string(e)) !=
            (size_t)json_object_get_string_len(e))
      return bad_line(c, "\"%s\"[%zu] is not a non-empty string", name, i);
    a[i] = arena_strndup(&c->arena, json_object_get_string(e),
                         (size_t)json_object_get_string_len(e));
    if (!a[i])
      return oom(c);
  }
  *out = a;
  *n = len;
  return 0;
}

/* Returns the index of the item record for id, made on first sight, or
 * (size_t)-1 out of memory. */
static size_t item_ix(checker_t *c, const char *id) {
  size_t ix;
  if (smap_get(&c->item_by_id, id, strlen(id), &ix))
    return ix;
  item_t *it = item_push(&c->items);
  if (!it || smap_put(&c->item_by_id, id, strlen(id), c->items.n - 1) != 0) {
    oom(c);
    return (size_t)-1;
  }
  it->id = id;
  return c->items.n - 1;
}

#define TRY(x)                                                                 \
  do {                                                                         \
    int rc__ = (x);                                                            \
    if (rc__ != 0)                                                             \
      return rc__;                                                             \
  } while (0)

#define ITEM(c, id, out)                                                       \
  do {                                                                         \
    (out) = item_ix((c), (id));                                                \
    if ((out) == (size_t)-1)                                                   \
      return FC_ENOMEM;                                                        \
  } while (0)

/* ------------------------------------------------------------------------ */
/* One parser per file                                                      */

static int parse_history(checker_t *c, json_object *o) {
  const char *p, *opname, *type;
  TRY(get_str(c, o, "p", true, &p));
  TRY(get_str(c, o, "op", true, &opname));
  TRY(get_str(c, o, "type", true, &type));
  json_object *idv = field(o, "id");
  if (!idv)
    return bad_line(c, "\"id\" is missing");
  if (!json_object_is_type(idv, json_type_int))
    return bad_line(c, "\"id\" is not an integer");
  int64_t id = json_object_get_int64(idv);
  char idtext[32];
  snprintf(idtext, sizeof idtext, "%lld", (long long)id);
  size_t klen;
  const char *k = key2(c, p, idtext, &klen);
  if (!k)
    return oom(c);

  int outcome;
  if (strcmp(type, "invoke") == 0)
    outcome = OUT_OPEN;
  else if (strcmp(type, "ok") == 0)
    outcome = OUT_OK;
  else if (strcmp(type, "fail") == 0)
    outcome = OUT_FAIL;
  else if (strcmp(type, "info") == 0)
    outcome = OUT_INFO;
  else
    return bad_line(c, "\"type\" is \"%s\", not invoke, ok, fail or info",
                    type);

  op_t *op;
  if (outcome == OUT_OPEN) {
    /* A reused (p, id) replaces the earlier op in the map: an outcome
     * belongs to the latest invoke. */
    const char *kept = keep_key(c, k, klen);
    op = op_push(&c->ops);
    if (!kept || !op || smap_put(&c->op_by_pid, kept, klen, c->ops.n - 1))
      return oom(c);
    op->p = p;
    op->op = opname;
    op->id = id;
    op->outcome = OUT_OPEN;
    TRY(get_num(c, o, "wall", false, &op->wall, &op->has_wall));
  } else {
    size_t ix;
    if (!smap_get(&c->op_by_pid, k, klen, &ix) ||
        c->ops.v[ix].outcome != OUT_OPEN)
      return bad_line(c, "%s of %s#%lld without an invoke waiting for it", type,
                      p, (long long)id);
    op = &c->ops.v[ix];
    if (strcmp(op->op, opname) != 0)
      return bad_line(c, "%s#%lld was invoked as %s, its outcome says %s", p,
                      (long long)id, op->op, opname);
    op->outcome = outcome;
  }

  /* The invoke's fields first; an outcome adds what was not known. */
  const char *s;
  TRY(get_str(c, o, "item", false, &s));
  if (s && !op->item)
    op->item = s;
  TRY(get_str(c, o, "token", false, &s));
  if (s && !op->token)
    op->token = s;
  TRY(get_str(c, o, "sub", false, &s));
  if (s && !op->sub)
    op->sub = s;
  TRY(get_str(c, o, "key", false, &s));
  if (s && !op->key)
    op->key = s;
  TRY(get_str(c, o, "worker", false, &s));
  if (s && !op->worker)
    op->worker = s;
  const char **items, **tokens;
  size_t nitems, ntokens;
  TRY(get_strs(c, o, "items", &items, &nitems));
  TRY(get_strs(c, o, "tokens", &tokens, &ntokens));
  if (ntokens && ntokens != nitems)
    return bad_line(c, "%zu \"tokens\" for %zu \"items\"", ntokens, nitems);
  /* Items with their tokens (a claim's ok) always replace what the
   * invoke had: the pair goes together. */
  if (tokens || (items && !op->items)) {
    op->items = items;
    op->nitems = nitems;
    op->tokens = tokens;
  }
  if (outcome == OUT_OPEN && strcmp(opname, "enqueue") == 0 && !op->items) {
    if (!op->item)
      return bad_line(c, "an enqueue names no \"items\"");
    const char **one = arena_alloc(&c->arena, sizeof *one);
    if (!one)
      return oom(c);
    one[0] = op->item;
    op->items = one;
    op->nitems = 1;
  }
  size_t ix;
  for (size_t i = 0; i < nitems; i++)
    ITEM(c, items[i], ix);
  if (op->item)
    ITEM(c, op->item, ix);
  return 0;
}

static int parse_items(checker_t *c, json_object *o) {
  const char *id, *state;
  TRY(get_str(c, o, "item", true, &id));
  TRY(get_str(c, o, "state", true, &state));
  size_t ix;
  ITEM(c, id, ix);
  item_t *it = &c->items.v[ix];
  if (it->present)
    return bad_line(c, "item \"%s\" twice", id);
  it->present = true;
  it->state = state;
  TRY(get_bool(c, o, "poison", &it->poison));
  json_object *lt;
  if (json_object_object_get_ex(o, "last_token", &lt)) {
    it->has_last_token = true;
    TRY(get_str(c, o, "last_token", false, &it->last_token));
  }
  return 0;
}

static int parse_results(checker_t *c, json_object *o) {
  const char *id, *token;
  double committed;
  TRY(get_str(c, o, "item", true, &id));
  TRY(get_str(c, o, "token", true, &token));
  TRY(get_num(c, o, "committed", true, &committed, NULL));
  result_t *res = result_push(&c->results);
  if (!res)
    return oom(c);
  ITEM(c, id, res->item);
  res->token = token;
  res->committed = committed;
  return 0;
}

static int parse_grants(checker_t *c, json_object *o) {
  const char *id, *token;
  TRY(get_str(c, o, "item", true, &id));
  TRY(get_str(c, o, "token", true, &token));
  size_t item;
  ITEM(c, id, item);
  double ended;
  bool is_end;
  TRY(get_num(c, o, "ended", false, &ended, &is_end));
  double granted = 0, until = 0;
  if (!is_end) {
    TRY(get_num(c, o, "granted", true, &granted, NULL));
    TRY(get_num(c, o, "until", true, &until, NULL));
  }
  size_t ix;
  lease_t *l;
  if (smap_get(&c->lease_by_token, token, strlen(token), &ix)) {
    l = &c->leases.v[ix];
    if (l->item != item)
      return bad_line(c, "token \"%s\" is granted for \"%s\" and \"%s\"", token,
                      c->items.v[l->item].id, id);
  } else {
    l = lease_push(&c->leases);
    if (!l ||
        smap_put(&c->lease_by_token, token, strlen(token), c->leases.n - 1))
      return oom(c);
    l->item = item;
    l->token = token;
  }
  if (is_end) {
    if (l->has_ended)
      return bad_line(c, "token \"%s\" ended twice", token);
    l->has_ended = true;
    l->ended = ended;
    l->end_line = c->line;
    TRY(get_str(c, o, "how", false, &l->how));
    return 0;
  }
  if (!l->has_grant || granted < l->granted)
    l->granted = granted;
  if (!l->has_grant || until > l->until)
    l->until = until;
  if (!l->worker)
    TRY(get_str(c, o, "worker", false, &l->worker));
  l->has_grant = true;
  return 0;
}

static int parse_runs(checker_t *c, json_object *o) {
  const char *id, *token;
  TRY(get_str(c, o, "item", true, &id));
  TRY(get_str(c, o, "token", true, &token));
  run_t *run = run_push(&c->runs);
  if (!run)
    return oom(c);
  ITEM(c, id, run->item);
  run->token = token;
  TRY(get_num(c, o, "start", true, &run->start, NULL));
  TRY(get_num(c, o, "end", false, &run->end, &run->has_end));
  if (run->has_end && run->end < run->start)
    return bad_line(c, "\"end\" is before \"start\"");
  return 0;
}

static int parse_effects(checker_t *c, json_object *o) {
  const char *sink, *key;
  TRY(get_str(c, o, "sink", true, &sink));
  TRY(get_str(c, o, "key", true, &key));
  size_t len, ix;
  const char *k = key2(c, sink, key, &len);
  if (!k)
    return oom(c);
  if (!smap_get(&c->effect_by_key, k, len, &ix)) {
    const char *kept = keep_key(c, k, len);
    effect_t *e = effect_push(&c->effects);
    if (!kept || !e ||
        smap_put(&c->effect_by_key, kept, len, c->effects.n - 1) != 0)
      return oom(c);
    e->sink = sink;
    e->key = key;
    ix = c->effects.n - 1;
  }
  c->effects.v[ix].count++;
  c->r->totals.effects++;
  return 0;
}

static int parse_faults(checker_t *c, json_object *o) {
  fault_t *f = fault_push(&c->faults);
  if (!f)
    return oom(c);
  TRY(get_str(c, o, "kind", true, &f->kind));
  TRY(get_num(c, o, "wall", true, &f->wall, NULL));
  TRY(get_num(c, o, "ended", false, &f->ended, &f->has_ended));
  TRY(get_num(c, o, "recovered", false, &f->recovered, &f->has_recovered));
  return 0;
}

static int parse_deliveries(checker_t *c, json_object *o) {
  const char *sub, *id, *state, *key, *token;
  TRY(get_str(c, o, "sub", true, &sub));
  TRY(get_str(c, o, "item", true, &id));
  TRY(get_str(c, o, "state", true, &state));
  TRY(get_str(c, o, "key", true, &key));
  TRY(get_str(c, o, "token", false, &token));
  size_t ix, len;
  ITEM(c, id, ix);
  const char *k = key2(c, sub, id, &len);
  if (!k)
    return oom(c);
  if (smap_get(&c->delivery_by_key, k, len, &ix)) {
    note(c, FC_DUPLICATE_DELIVERIES, "%s/%s", sub, id);
    return 0;
  }
  const char *kept = keep_key(c, k, len);
  delivery_t *d = delivery_push(&c->deliveries);
  if (!kept || !d ||
      smap_put(&c->delivery_by_key, kept, len, c->deliveries.n - 1) != 0)
    return oom(c);
  d->sub = sub;
  d->item = id;
  d->state = state;
  d->key = key;
  d->token = token;
  return 0;
}

static int parse_subscribers(checker_t *c, json_object *o) {
  const char *name, *sink;
  TRY(get_str(c, o, "sub", true, &name));
  TRY(get_str(c, o, "sink", false, &sink));
  size_t ix;
  if (smap_get(&c->sub_by_name, name, strlen(name), &ix))
    return 0;
  sub_t *s = sub_push(&c->subs);
  if (!s || smap_put(&c->sub_by_name, name, strlen(name), c->subs.n - 1))
    return oom(c);
  s->sub = name;
  s->sink = sink ? sink : name;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading JSON Lines                                                       */

typedef int (*line_fn)(checker_t *c, json_object *o);

/* Returns NULL and the object of buf[0..len) in *out, or why it is not a
 * JSON object. */
static const char *parse_line(checker_t *c, const char *buf, size_t len,
                              json_object **out) {
  static char why[160];
  *out = NULL;
  size_t i = 0;
  while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r'))
    i++;
  if (i == len)
    return "an empty line";
  if (len > (size_t)1 << 30)
    return "a line over 1 GiB";
  json_tokener_reset(c->tok);
  json_object *o = json_tokener_parse_ex(c->tok, buf, (int)len);
  enum json_tokener_error e = json_tokener_get_error(c->tok);
  if (e == json_tokener_continue)
    return "not JSON: the line ends inside a value";
  if (e != json_tokener_success) {
    snprintf(why, sizeof why, "not JSON: %s", json_tokener_error_desc(e));
    return why;
  }
  for (size_t j = json_tokener_get_parse_end(c->tok); j < len; j++)
    if (buf[j] != ' ' && buf[j] != '\t' && buf[j] != '\r') {
      json_object_put(o);
      return "not JSON: characters after the value";
    }
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    return "not a JSON object";
  }
  *out = o;
  return NULL;
}

/* Reads dir/name line by line into fn.  An absent file is empty unless it
 * is required; a torn last line (unterminated and not JSON) is counted and
 * skipped where torn_ok.  Returns 0 or an FC_E* code. */
static int read_jsonl(checker_t *c, const char *dir, const char *name,
                      bool required, bool torn_ok, line_fn fn) {
  char path[4096];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
    snprintf(c->err, c->errlen, "%s/%s: path too long", dir, name);
    return FC_EINPUT;
  }
  FILE *f = fopen(path, "r");
  if (!f) {
    int e = errno;
    if (e == ENOENT && !required)
      return 0;
    snprintf(c->err, c->errlen, "%s: %s", path, strerror(e));
    return e == ENOENT ? FC_EINPUT : FC_EIO;
  }
  c->file = name;
  c->line = 0;
  char *buf = NULL;
  size_t cap = 0;
  ssize_t n;
  int rc = 0;
  while (rc == 0 && (n = getline(&buf, &cap, f)) >= 0) {
    c->line++;
    c->r->totals.lines++;
    bool terminated = n > 0 && buf[n - 1] == '\n';
    size_t len = (size_t)n - (terminated ? 1 : 0);
    json_object *o;
    const char *why = parse_line(c, buf, len, &o);
    if (why && !terminated && torn_ok) {
      note(c, FC_TORN_LINES, "%s:%zu", name, c->line);
      break; /* an unterminated line is the last */
    }
    if (why) {
      rc = bad_line(c, "%s%s", why,
                    terminated ? "" : " (a torn last line: bad in a dump)");
      break;
    }
    rc = fn(c, o);
    json_object_put(o);
  }
  if (rc == 0 && ferror(f)) {
    snprintf(c->err, c->errlen, "%s: read error", path);
    rc = FC_EIO;
  }
  free(buf);
  fclose(f);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Ordering                                                                 */

static int cmp_double(double a, double b) { return (a > b) - (a < b); }

static int cmp_lease(const void *a, const void *b) {
  const lease_t *x = *(lease_t *const *)a, *y = *(lease_t *const *)b;
  if (x->item != y->item)
    return x->item < y->item ? -1 : 1;
  return cmp_double(x->granted, y->granted);
}

static int cmp_run(const void *a, const void *b) {
  const run_t *x = a, *y = b;
  if (x->item != y->item)
    return x->item < y->item ? -1 : 1;
  return cmp_double(x->start, y->start);
}

static int cmp_result(const void *a, const void *b) {
  const result_t *x = a, *y = b;
  if (x->item != y->item)
    return x->item < y->item ? -1 : 1;
  return cmp_double(x->committed, y->committed);
}

/* Unaccounted leases by worker, then granted (NULL workers first). */
static int cmp_worker_lease(const void *a, const void *b) {
  const lease_t *x = *(lease_t *const *)a, *y = *(lease_t *const *)b;
  int w = strcmp(x->worker ? x->worker : "", y->worker ? y->worker : "");
  if (w != 0 || (!x->worker) != (!y->worker))
    return w ? w : (x->worker ? 1 : -1);
  return cmp_double(x->granted, y->granted);
}

static int cmp_dbl(const void *a, const void *b) {
  return cmp_double(*(const double *)a, *(const double *)b);
}

/* Sorts leases, runs and results by item and records each item's range. */
static int order(checker_t *c) {
  if (c->leases.n) {
    c->lease_order = malloc(c->leases.n * sizeof *c->lease_order);
    if (!c->lease_order)
      return oom(c);
  }
  for (size_t i = 0; i < c->leases.n; i++)
    c->lease_order[i] = &c->leases.v[i];
  if (c->leases.n)
    qsort(c->lease_order, c->leases.n, sizeof *c->lease_order, cmp_lease);
  if (c->runs.n)
    qsort(c->runs.v, c->runs.n, sizeof *c->runs.v, cmp_run);
  if (c->results.n)
    qsort(c->results.v, c->results.n, sizeof *c->results.v, cmp_result);
  for (size_t i = c->leases.n; i-- > 0;) {
    item_t *it = &c->items.v[c->lease_order[i]->item];
    it->lease0 = i;
    it->nleases++;
  }
  for (size_t i = c->runs.n; i-- > 0;) {
    item_t *it = &c->items.v[c->runs.v[i].item];
    it->run0 = i;
    it->nruns++;
  }
  for (size_t i = c->results.n; i-- > 0;) {
    item_t *it = &c->items.v[c->results.v[i].item];
    it->result0 = i;
    it->nresults++;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The checks                                                               */

static bool is_state(const item_t *it, const char *state) {
  return it->present && strcmp(it->state, state) == 0;
}

static bool has_result_with(const checker_t *c, const item_t *it,
                            const char *token) {
  for (size_t i = 0; i < it->nresults; i++)
    if (strcmp(c->results.v[it->result0 + i].token, token) == 0)
      return true;
  return false;
}

static const lease_t *lease_of(const checker_t *c, const char *token) {
  size_t ix;
  if (!token || !smap_get(&c->lease_by_token, token, strlen(token), &ix))
    return NULL;
  return &c->leases.v[ix];
}

static const char *sink_of(const checker_t *c, const char *sub) {
  size_t ix;
  if (smap_get(&c->sub_by_name, sub, strlen(sub), &ix))
    return c->subs.v[ix].sink;
  return sub;
}

static const delivery_t *delivery_of(checker_t *c, const char *sub,
                                     const char *item) {
  size_t len, ix;
  const char *k = key2(c, sub, item, &len);
  if (!k) {
    c->oom = true;
    return NULL;
  }
  if (!smap_get(&c->delivery_by_key, k, len, &ix))
    return NULL;
  return &c->deliveries.v[ix];
}

static effect_t *effect_of(checker_t *c, const char *sink, const char *key) {
  size_t len, ix;
  const char *k = key2(c, sink, key, &len);
  if (!k) {
    c->oom = true;
    return NULL;
  }
  if (!smap_get(&c->effect_by_key, k, len, &ix))
    return NULL;
  return &c->effects.v[ix];
}

/* Enqueues: ok ones enqueued their items; info and open ones are settled
 * by whether their items exist (committed when any does).  An item that
 * exists was enqueued, whoever did it. */
static int settle_enqueue(checker_t *c, op_t *op, fc_op_stats_t *st) {
  bool any = false;
  for (size_t i = 0; i < op->nitems; i++) {
    size_t ix;
    if (!smap_get(&c->item_by_id, op->items[i], strlen(op->items[i]), &ix))
      continue; /* cannot be: parsing made every named item */
    item_t *it = &c->items.v[ix];
    it->mentioned = true;
    if (op->outcome == OUT_OK || it->present)
      it->enqueued = true;
    any = any || it->present;
  }
  if (op->outcome == OUT_OK || op->outcome == OUT_FAIL)
    return 0;
  if (op->nitems == 0)
    return -1;
  if (any)
    st->committed++;
  else
    st->not_committed++;
  return 1;
}

/* Returns 1 when the op took effect, 0 when it did not, -1 when the final
 * state cannot say.  Claims and enqueues are settled elsewhere. */
static int settle(checker_t *c, const op_t *op) {
  size_t ix;
  const item_t *it = NULL;
  if (op->item && smap_get(&c->item_by_id, op->item, strlen(op->item), &ix))
    it = &c->items.v[ix];
  if (strcmp(op->op, "complete") == 0) {
    if (!it || !op->token)
      return -1;
    return has_result_with(c, it, op->token);
  }
  if (strcmp(op->op, "fail") == 0) {
    if (!it || !op->token)
      return -1;
    if (has_result_with(c, it, op->token))
      return 0; /* the lease ended by a complete */
    if (it->has_last_token && it->last_token &&
        strcmp(it->last_token, op->token) == 0)
      return 1;
    const lease_t *l = lease_of(c, op->token);
    if (l && l->has_ended && l->how)
      return strcmp(l->how, "fail") == 0;
    /* A committed fail of the item's last lease would have left its token
     * in last_token: nothing later can overwrite it. */
    if (l && it->has_last_token && it->nleases &&
        c->lease_order[it->lease0 + it->nleases - 1] == l)
      return 0;
    return -1;
  }
  if (strcmp(op->op, "sent") == 0) {
    if (!op->sub || !op->item)
      return -1;
    const delivery_t *d = delivery_of(c, op->sub, op->item);
    if (!d)
      return 0;
    return strcmp(d->state, "sent") == 0 &&
           (!d->token || !op->token || strcmp(d->token, op->token) == 0);
  }
  if (strcmp(op->op, "deliver") == 0) {
    if (!op->sub || !op->item)
      return -1;
    const delivery_t *d = delivery_of(c, op->sub, op->item);
    const char *key = op->key ? op->key : d ? d->key : NULL;
    if (!key)
      return -1;
    const effect_t *e = effect_of(c, sink_of(c, op->sub), key);
    return e && e->count > 0;
  }
  return -1;
}

static fc_op_stats_t *op_stats(checker_t *c, const char *name) {
  fc_report_t *r = c->r;
  for (size_t i = 0; i < r->nops; i++)
    if (strcmp(r->ops[i].op, name) == 0)
      return &r->ops[i];
  fc_op_stats_t *ops = realloc(r->ops, (r->nops + 1) * sizeof *ops);
  if (!ops)
    return NULL;
  r->ops = ops;
  fc_op_stats_t *st = &ops[r->nops];
  memset(st, 0, sizeof *st);
  st->op = strdup(name);
  if (!st->op)
    return NULL;
  r->nops++;
  return st;
}

/* Claims: ok ones account for the grants of their tokens; an info or open
 * one is committed when its worker holds grants, accounted for by no ok
 * claim, that began between its invoke and the next claim invoke of its
 * process.  Runs after every op has been counted. */
static int settle_claims(checker_t *c) {
  smap_t last = {0}; /* p -> its latest claim op */
  for (size_t i = 0; i < c->ops.n; i++) {
    op_t *op = &c->ops.v[i];
    if (strcmp(op->op, "claim") != 0)
      continue;
    op->window_end = 1e300;
    size_t prev;
    if (smap_get(&last, op->p, strlen(op->p), &prev) && op->has_wall)
      c->ops.v[prev].window_end = op->wall;
    if (smap_put(&last, op->p, strlen(op->p), i) != 0) {
      smap_free(&last);
      return oom(c);
    }
    if (op->outcome != OUT_OK)
      continue;
    for (size_t j = 0; op->tokens && j < op->nitems; j++) {
      lease_t *l = (lease_t *)lease_of(c, op->tokens[j]);
      if (l)
        l->accounted = true;
    }
  }
  smap_free(&last);

  size_t n = 0;
  lease_t **free_leases = NULL;
  if (c->leases.n) {
    free_leases = malloc(c->leases.n * sizeof *free_leases);
    if (!free_leases)
      return oom(c);
  }
  for (size_t i = 0; i < c->leases.n; i++)
    if (!c->leases.v[i].accounted)
      free_leases[n++] = &c->leases.v[i];
  if (n)
    qsort(free_leases, n, sizeof *free_leases, cmp_worker_lease);

  for (size_t i = 0; i < c->ops.n; i++) {
    op_t *op = &c->ops.v[i];
    if (strcmp(op->op, "claim") != 0 ||
        (op->outcome != OUT_INFO && op->outcome != OUT_OPEN))
      continue;
    fc_op_stats_t *st = op_stats(c, op->op);
    if (!st) {
      free(free_leases);
      return oom(c);
    }
    const char *worker = op->worker ? op->worker : op->p;
    if (!op->has_wall) {
      st->unresolved++;
      note(c, FC_UNRESOLVED_INFO, "%s#%lld claim (no wall)", op->p,
           (long long)op->id);
      continue;
    }
    /* The first free lease of worker granted at or after the invoke. */
    size_t lo = 0, hi = n;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      const lease_t *l = free_leases[mid];
      int w = l->worker ? strcmp(l->worker, worker) : -1;
      if (w < 0 || (w == 0 && l->granted < op->wall))
        lo = mid + 1;
      else
        hi = mid;
    }
    bool got = false;
    for (size_t j = lo; j < n; j++) {
      lease_t *l = free_leases[j];
      if (!l->worker || strcmp(l->worker, worker) != 0 ||
          l->granted >= op->window_end)
        break;
      l->accounted = true;
      got = true;
    }
    if (got)
      st->committed++;
    else
      st->not_committed++;
  }
  free(free_leases);

  for (size_t i = 0; i < c->leases.n; i++) {
    const lease_t *l = &c->leases.v[i];
    if (!l->accounted)
      note(c, FC_UNEXPLAINED_GRANTS, "%s/%s", c->items.v[l->item].id, l->token);
  }
  return 0;
}

static int check_ops(checker_t *c) {
  fc_report_t *r = c->r;
  for (size_t i = 0; i < c->ops.n; i++) {
    op_t *op = &c->ops.v[i];
    fc_op_stats_t *st = op_stats(c, op->op);
    if (!st)
      return oom(c);
    st->invoke++;
    switch (op->outcome) {
    case OUT_OK:
      st->ok++;
      break;
    case OUT_FAIL:
      st->fail++;
      /* A complete or fail answered "lease lost": a zombie fenced off. */
      if (strcmp(op->op, "complete") == 0 || strcmp(op->op, "fail") == 0)
        note(c, FC_REFUSED, "%s %s/%s", op->op, op->item ? op->item : "?",
             op->token ? op->token : "?");
      break;
    case OUT_INFO:
      st->info++;
      break;
    default:
      st->open++;
      break;
    }
    bool ambiguous = op->outcome == OUT_INFO || op->outcome == OUT_OPEN;
    if (strcmp(op->op, "enqueue") == 0) {
      if (settle_enqueue(c, op, st) < 0) {
        st->unresolved++;
        note(c, FC_UNRESOLVED_INFO, "%s#%lld enqueue (no items)", op->p,
             (long long)op->id);
      }
      continue;
    }
    if (!ambiguous || strcmp(op->op, "claim") == 0)
      continue;
    int s = settle(c, op);
    if (s > 0)
      st->committed++;
    else if (s == 0)
      st->not_committed++;
    else {
      st->unresolved++;
      note(c, FC_UNRESOLVED_INFO, "%s#%lld %s", op->p, (long long)op->id,
           op->op);
    }
  }
  TRY(settle_claims(c));
  for (size_t i = 0; i < r->nops; i++) {
    r->totals.info += r->ops[i].info + r->ops[i].open;
    r->totals.info_committed += r->ops[i].committed;
    r->totals.info_not_committed += r->ops[i].not_committed;
  }
  return 0;
}

static void check_items(checker_t *c) {
  fc_report_t *r = c->r;
  for (size_t i = 0; i < c->items.n; i++) {
    item_t *it = &c->items.v[i];
    /* What exists, or was ever granted, run or completed, was enqueued. */
    if (it->present || it->nleases || it->nruns || it->nresults)
      it->enqueued = true;
    if (it->present && !it->mentioned)
      note(c, FC_UNEXPLAINED_ITEMS, "%s", it->id);
    bool done = is_state(it, "done"), dead = is_state(it, "dead");
    r->totals.done += done;
    r->totals.dead += dead;
    if (it->enqueued) {
      r->totals.enqueued++;
      if (!done && !dead)
        note(c, FC_LOST, "%s", it->id);
    }
    if (it->nresults > 1)
      note(c, FC_DUPLICATE_RESULTS, "%s", it->id);
    if (done && it->nresults == 0)
      note(c, FC_DONE_WITHOUT_RESULT, "%s", it->id);
    if (it->nresults > 0 && !done)
      note(c, FC_RESULT_NOT_DONE, "%s", it->id);
    if (dead && !it->poison)
      note(c, FC_DEAD_NOT_POISON, "%s", it->id);
    if (it->present && it->poison && !dead)
      note(c, FC_POISON_NOT_DEAD, "%s", it->id);
  }
  r->totals.items = c->items.n;
}

/* Each result must carry the token of the item's last grant that began at
 * or before its commit. */
static void check_fencing(checker_t *c) {
  for (size_t i = 0; i < c->results.n; i++) {
    const result_t *res = &c->results.v[i];
    const item_t *it = &c->items.v[res->item];
    const lease_t *last = NULL;
    for (size_t j = 0; j < it->nleases; j++) {
      const lease_t *l = c->lease_order[it->lease0 + j];
      if (l->granted > res->committed)
        break;
      last = l;
    }
    if (!last || strcmp(last->token, res->token) != 0)
      note(c, FC_FENCED_OFF, "%s", it->id);
  }
  c->r->totals.results = c->results.n;
}

/* Every subscriber gets every result, once, sent; every done item has its
 * work effect and every sent delivery its sink's effect; no key twice. */
static void check_deliveries_and_effects(checker_t *c) {
  fc_report_t *r = c->r;
  for (size_t s = 0; s < c->subs.n; s++) {
    const sub_t *sub = &c->subs.v[s];
    for (size_t i = 0; i < c->items.n; i++) {
      const item_t *it = &c->items.v[i];
      if (it->nresults == 0)
        continue;
      const delivery_t *d = delivery_of(c, sub->sub, it->id);
      if (!d)
        note(c, FC_MISSING_DELIVERIES, "%s/%s", sub->sub, it->id);
      else if (strcmp(d->state, "sent") != 0)
        note(c, FC_UNSENT_DELIVERIES, "%s/%s", sub->sub, it->id);
    }
  }
  for (size_t i = 0; i < c->items.n; i++) {
    const item_t *it = &c->items.v[i];
    if (!is_state(it, "done"))
      continue;
    effect_t *e = effect_of(c, WORK_SINK, it->id);
    if (e)
      e->expected = true;
    else
      note(c, FC_MISSING_EFFECTS, "%s/%s", WORK_SINK, it->id);
  }
  for (size_t i = 0; i < c->deliveries.n; i++) {
    const delivery_t *d = &c->deliveries.v[i];
    if (strcmp(d->state, "sent") != 0)
      continue;
    const char *sink = sink_of(c, d->sub);
    effect_t *e = effect_of(c, sink, d->key);
    if (e)
      e->expected = true;
    else
      note(c, FC_MISSING_EFFECTS, "%s/%s", sink, d->key);
  }
  for (size_t i = 0; i < c->effects.n; i++) {
    const effect_t *e = &c->effects.v[i];
    if (e->count > 1)
      note(c, FC_DUPLICATE_EFFECTS, "%s/%s", e->sink, e->key);
    if (!e->expected)
      note(c, FC_UNEXPECTED_EFFECTS, "%s/%s", e->sink, e->key);
  }
  r->totals.deliveries = c->deliveries.n;
  r->totals.subscribers = c->subs.n;
}

/* The span a run's lease was live, [*lo, *hi): from its grant to the
 * earlier of its last extension and its end; everything when the token
 * was never granted for the run's item (conservative). */
static void live_span(const checker_t *c, const run_t *run, double *lo,
                      double *hi) {
  const lease_t *l = lease_of(c, run->token);
  if (!l || l->item != run->item || !l->has_grant) {
    *lo = -1e300;
    *hi = 1e300;
    return;
  }
  *lo = l->granted;
  *hi = l->has_ended && l->ended < l->until ? l->ended : l->until;
}

/* Two runs of one item overlap when their spans meet while both leases are
 * live.  A run without an end is taken to run until its lease stopped
 * being live.  Two runs at once under one token are no overlap of leases
 * (there is one lease): they are counted apart, as a worker that started
 * its handler twice. */
static void check_runs(checker_t *c) {
  fc_report_t *r = c->r;
  r->totals.runs = c->runs.n;
  for (size_t i = 0; i < c->runs.n; i++) {
    const run_t *run = &c->runs.v[i];
    const lease_t *l = lease_of(c, run->token);
    if (!l || l->item != run->item || !l->has_grant)
      note(c, FC_RUNS_WITHOUT_GRANT, "%s/%s", c->items.v[run->item].id,
           run->token);
  }
  for (size_t i = 0; i < c->items.n; i++) {
    const item_t *it = &c->items.v[i];
    if (it->nruns > 1) {
      note(c, FC_RERUNS, "%s", it->id);
      r->totals.extra_runs += it->nruns - 1;
    }
    bool overlap = false, concurrent = false;
    for (size_t a = 0; a < it->nruns; a++) {
      const run_t *x = &c->runs.v[it->run0 + a];
      double xlo, xhi;
      live_span(c, x, &xlo, &xhi);
      double xend = x->has_end ? x->end : xhi;
      for (size_t b = a + 1; b < it->nruns; b++) {
        const run_t *y = &c->runs.v[it->run0 + b];
        double ylo, yhi;
        live_span(c, y, &ylo, &yhi);
        double yend = y->has_end ? y->end : yhi;
        double lo = x->start, hi = xend;
        if (y->start > lo)
          lo = y->start;
        if (yend < hi)
          hi = yend;
        if (xlo > lo)
          lo = xlo;
        if (ylo > lo)
          lo = ylo;
        if (xhi < hi)
          hi = xhi;
        if (yhi < hi)
          hi = yhi;
        if (lo < hi && strcmp(x->token, y->token) == 0)
          concurrent = true;
        else if (lo < hi)
          overlap = true;
      }
    }
    if (concurrent)
      note(c, FC_CONCURRENT_RUNS, "%s", it->id);
    if (overlap)
      note(c, FC_OVERLAPPING_LEASES, "%s", it->id);
  }
}

/* Returns the p-th percentile (nearest rank) of sorted v[0..n), n > 0. */
static double percentile(const double *v, size_t n, unsigned p) {
  size_t rank = (p * n + 99) / 100;
  return v[rank ? rank - 1 : 0];
}

static int check_faults(checker_t *c) {
  fc_report_t *r = c->r;
  double *d = NULL;
  if (c->faults.n && !(d = malloc(c->faults.n * sizeof *d)))
    return oom(c);
  for (size_t i = 0; i < c->faults.n; i++) {
    const char *kind = c->faults.v[i].kind;
    bool seen = false;
    for (size_t j = 0; j < r->nfaults && !seen; j++)
      seen = strcmp(r->faults[j].kind, kind) == 0;
    if (seen)
      continue;
    fc_fault_stats_t *fs = realloc(r->faults, (r->nfaults + 1) * sizeof *fs);
    if (!fs) {
      free(d);
      return oom(c);
    }
    r->faults = fs;
    fc_fault_stats_t *st = &fs[r->nfaults];
    memset(st, 0, sizeof *st);
    if (!(st->kind = strdup(kind))) {
      free(d);
      return oom(c);
    }
    r->nfaults++;
    size_t n = 0;
    for (size_t j = i; j < c->faults.n; j++) {
      const fault_t *f = &c->faults.v[j];
      if (strcmp(f->kind, kind) != 0)
        continue;
      st->count++;
      /* From the fault's end: a blackhole's own 5 s is no recovery. */
      if (f->has_recovered)
        d[n++] = f->recovered - (f->has_ended ? f->ended : f->wall);
    }
    st->recovered = n;
    if (n) {
      qsort(d, n, sizeof *d, cmp_dbl);
      st->p50 = percentile(d, n, 50);
      st->p99 = percentile(d, n, 99);
      st->max = d[n - 1];
    }
  }
  free(d);
  return 0;
}

static int cmp_op_stats(const void *a, const void *b) {
  return strcmp(((const fc_op_stats_t *)a)->op, ((const fc_op_stats_t *)b)->op);
}

static int cmp_fault_stats(const void *a, const void *b) {
  return strcmp(((const fc_fault_stats_t *)a)->kind,
                ((const fc_fault_stats_t *)b)->kind);
}

/* ------------------------------------------------------------------------ */
/* The whole check                                                          */

static int run_checks(checker_t *c, const char *dir) {
  /* The final state first, then what happened; the order matters only for
   * which error a broken directory reports first. */
  TRY(read_jsonl(c, dir, "items.jsonl", true, false, parse_items));
  TRY(read_jsonl(c, dir, "results.jsonl", true, false, parse_results));
  TRY(read_jsonl(c, dir, "grants.jsonl", true, false, parse_grants));
  TRY(read_jsonl(c, dir, "deliveries.jsonl", false, false, parse_deliveries));
  TRY(read_jsonl(c, dir, "subscribers.jsonl", false, false, parse_subscribers));
  TRY(read_jsonl(c, dir, "history.jsonl", true, true, parse_history));
  TRY(read_jsonl(c, dir, "runs.jsonl", false, true, parse_runs));
  TRY(read_jsonl(c, dir, "effects.jsonl", false, true, parse_effects));
  TRY(read_jsonl(c, dir, "faults.jsonl", false, true, parse_faults));
  if (c->oom)
    return oom(c);
  for (size_t i = 0; i < c->leases.n; i++)
    if (!c->leases.v[i].has_grant) {
      c->file = "grants.jsonl";
      c->line = c->leases.v[i].end_line;
      return bad_line(c, "token \"%s\" ended but was never granted",
                      c->leases.v[i].token);
    }
  c->r->totals.grants = c->leases.n;

  TRY(order(c));
  TRY(check_ops(c));
  check_items(c);
  check_fencing(c);
  check_deliveries_and_effects(c);
  check_runs(c);
  TRY(check_faults(c));
  if (c->oom)
    return oom(c);

  fc_report_t *r = c->r;
  if (r->nops)
    qsort(r->ops, r->nops, sizeof *r->ops, cmp_op_stats);
  if (r->nfaults)
    qsort(r->faults, r->nfaults, sizeof *r->faults, cmp_fault_stats);
  r->pass = true;
  for (int i = 0; i < FC_NCHECKS; i++)
    if (fc_check_gates((fc_check_id_t)i) && r->checks[i].count)
      r->pass = false;
  return 0;
}

int fc_check(const char *dir, fc_report_t *out, char *err, size_t errlen) {
  char scratch[1];
  memset(out, 0, sizeof *out);
  checker_t c = {0};
  c.r = out;
  c.err = errlen ? err : scratch;
  c.errlen = errlen;
  if (errlen)
    err[0] = '\0';
  int rc;
  c.tok = json_tokener_new();
  if (!c.tok)
    rc = oom(&c);
  else
    rc = run_checks(&c, dir);
  if (c.tok)
    json_tokener_free(c.tok);
  free(c.ops.v);
  smap_free(&c.op_by_pid);
  free(c.items.v);
  smap_free(&c.item_by_id);
  free(c.leases.v);
  smap_free(&c.lease_by_token);
  free(c.lease_order);
  free(c.runs.v);
  free(c.results.v);
  free(c.deliveries.v);
  smap_free(&c.delivery_by_key);
  free(c.subs.v);
  smap_free(&c.sub_by_name);
  free(c.effects.v);
  smap_free(&c.effect_by_key);
  free(c.faults.v);
  free(c.scratch);
  arena_free(&c.arena);
  if (rc != 0)
    fc_report_free(out);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The report                                                               */

static const struct {
  const char *name, *what;
  bool gates;
} checks[FC_NCHECKS] = {
#define FC_CHECK_ROW(e, name, gates, what) {name, what, gates},
    FC_CHECK_LIST(FC_CHECK_ROW)
#undef FC_CHECK_ROW
};

const char *fc_check_name(fc_check_id_t id) {
  return (unsigned)id < FC_NCHECKS ? checks[id].name : "?";
}

bool fc_check_gates(fc_check_id_t id) {
  return (unsigned)id < FC_NCHECKS && checks[id].gates;
}

void fc_report_free(fc_report_t *r) {
  if (!r)
    return;
  for (int i = 0; i < FC_NCHECKS; i++)
    for (size_t j = 0; j < r->checks[i].nexamples; j++)
      free(r->checks[i].examples[j]);
  for (size_t i = 0; i < r->nops; i++)
    free(r->ops[i].op);
  free(r->ops);
  for (size_t i = 0; i < r->nfaults; i++)
    free(r->faults[i].kind);
  free(r->faults);
  memset(r, 0, sizeof *r);
}

static void print_checks(FILE *f, const fc_report_t *r, bool gates) {
  for (int i = 0; i < FC_NCHECKS; i++) {
    if (checks[i].gates != gates)
      continue;
    const fc_count_t *k = &r->checks[i];
    fprintf(f, "  %-26s %8llu  %s%s", checks[i].name,
            (unsigned long long)k->count, gates && k->count ? "FAIL " : "",
            k->count ? "" : checks[i].what);
    for (size_t j = 0; j < k->nexamples; j++)
      fprintf(f, "%s%s", j ? ", " : "", k->examples[j]);
    if (k->count > k->nexamples)
      fprintf(f, ", ...");
    fputc('\n', f);
  }
}

void fc_report_print(FILE *f, const fc_report_t *r) {
#define U(x) ((unsigned long long)(x))
  fprintf(f, "fault check: %s\n", r->pass ? "PASS" : "FAIL");
  fprintf(f,
          "  %llu lines read; items %llu (enqueued %llu, done %llu, dead "
          "%llu); results %llu; grants %llu; runs %llu (%llu re-runs); "
          "effects %llu; deliveries %llu to %llu subscribers\n",
          U(r->totals.lines), U(r->totals.items), U(r->totals.enqueued),
          U(r->totals.done), U(r->totals.dead), U(r->totals.results),
          U(r->totals.grants), U(r->totals.runs), U(r->totals.extra_runs),
          U(r->totals.effects), U(r->totals.deliveries),
          U(r->totals.subscribers));
  fprintf(f, "\n  %-26s %8s  %s\n", "checks (nonzero fails)", "count",
          "examples");
  print_checks(f, r, true);
  fprintf(f, "\n  %-26s %8s  %s\n", "reported, not failures", "count",
          "examples");
  print_checks(f, r, false);
  fprintf(f, "\noperations   invoke       ok     fail     info     open"
             "  settled: committed  not  unresolved\n");
  for (size_t i = 0; i < r->nops; i++) {
    const fc_op_stats_t *o = &r->ops[i];
    fprintf(f, "  %-10s %6llu %8llu %8llu %8llu %8llu %19llu %4llu %11llu\n",
            o->op, U(o->invoke), U(o->ok), U(o->fail), U(o->info), U(o->open),
            U(o->committed), U(o->not_committed), U(o->unresolved));
  }
  fprintf(f,
          "  %llu info or open, settled %llu committed, %llu not committed\n",
          U(r->totals.info), U(r->totals.info_committed),
          U(r->totals.info_not_committed));
  fprintf(f, "\nfaults              count  recovered   p50 (s)   p99 (s)   max "
             "(s)   (from the fault's end to the next result)\n");
  for (size_t i = 0; i < r->nfaults; i++) {
    const fc_fault_stats_t *k = &r->faults[i];
    fprintf(f, "  %-18s %5llu %10llu", k->kind, U(k->count), U(k->recovered));
    if (k->recovered)
      fprintf(f, " %9.3f %9.3f %9.3f\n", k->p50, k->p99, k->max);
    else
      fprintf(f, " %9s %9s %9s\n", "-", "-", "-");
  }
  if (r->nfaults == 0)
    fprintf(f, "  (none)\n");
#undef U
}

/* Seconds with millisecond precision, printed as such. */
static json_object *seconds(double s) {
  char text[48];
  snprintf(text, sizeof text, "%.3f", s);
  return json_object_new_double_s(s, text);
}

/* Adds v (which may be NULL: a failed allocation) to o under key; on
 * failure v is released.  Returns 0 or -1. */
static int add(json_object *o, const char *key, json_object *v) {
  if (!v)
    return -1;
  if (json_object_object_add(o, key, v) != 0) {
    json_object_put(v);
    return -1;
  }
  return 0;
}

static int add_u(json_object *o, const char *key, uint64_t v) {
  return add(o, key, json_object_new_int64((int64_t)v));
}

/* Returns a new object (or array) added to o under key, or NULL. */
static json_object *add_new(json_object *o, const char *key, bool array) {
  json_object *v = array ? json_object_new_array() : json_object_new_object();
  return add(o, key, v) == 0 ? v : NULL;
}

static int add_checks(json_object *root, const fc_report_t *r) {
  json_object *all = add_new(root, "checks", false);
  if (!all)
    return -1;
  for (int i = 0; i < FC_NCHECKS; i++) {
    json_object *k = add_new(all, checks[i].name, false);
    if (!k || add_u(k, "count", r->checks[i].count) ||
        add(k, "fails", json_object_new_boolean(checks[i].gates)))
      return -1;
    json_object *ex = add_new(k, "examples", true);
    if (!ex)
      return -1;
    for (size_t j = 0; j < r->checks[i].nexamples; j++) {
      json_object *s = json_object_new_string(r->checks[i].examples[j]);
      if (!s || json_object_array_add(ex, s) != 0) {
        json_object_put(s);
        return -1;
      }
    }
  }
  return 0;
}

static int add_totals(json_object *root, const fc_report_t *r) {
  json_object *t = add_new(root, "totals", false);
  if (!t)
    return -1;
  const struct {
    const char *name;
    uint64_t v;
  } rows[] = {
      {"lines", r->totals.lines},
      {"items", r->totals.items},
      {"enqueued", r->totals.enqueued},
      {"done", r->totals.done},
      {"dead", r->totals.dead},
      {"results", r->totals.results},
      {"grants", r->totals.grants},
      {"runs", r->totals.runs},
      {"extra_runs", r->totals.extra_runs},
      {"effects", r->totals.effects},
      {"deliveries", r->totals.deliveries},
      {"subscribers", r->totals.subscribers},
      {"info", r->totals.info},
      {"info_committed", r->totals.info_committed},
      {"info_not_committed", r->totals.info_not_committed},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    if (add_u(t, rows[i].name, rows[i].v))
      return -1;
  return 0;
}

static int add_ops(json_object *root, const fc_report_t *r) {
  json_object *ops = add_new(root, "operations", false);
  if (!ops)
    return -1;
  for (size_t i = 0; i < r->nops; i++) {
    const fc_op_stats_t *s = &r->ops[i];
    json_object *o = add_new(ops, s->op, false);
    if (!o || add_u(o, "invoke", s->invoke) || add_u(o, "ok", s->ok) ||
        add_u(o, "fail", s->fail) || add_u(o, "info", s->info) ||
        add_u(o, "open", s->open) || add_u(o, "committed", s->committed) ||
        add_u(o, "not_committed", s->not_committed) ||
        add_u(o, "unresolved", s->unresolved))
      return -1;
  }
  return 0;
}

static int add_faults(json_object *root, const fc_report_t *r) {
  json_object *faults = add_new(root, "faults", false);
  if (!faults)
    return -1;
  for (size_t i = 0; i < r->nfaults; i++) {
    const fc_fault_stats_t *s = &r->faults[i];
    json_object *o = add_new(faults, s->kind, false);
    if (!o || add_u(o, "count", s->count) ||
        add_u(o, "recovered", s->recovered))
      return -1;
    if (s->recovered &&
        (add(o, "p50_s", seconds(s->p50)) || add(o, "p99_s", seconds(s->p99)) ||
         add(o, "max_s", seconds(s->max))))
      return -1;
  }
  return 0;
}

int fc_report_json(FILE *f, const fc_report_t *r) {
  json_object *root = json_object_new_object();
  if (!root || add(root, "pass", json_object_new_boolean(r->pass)) ||
      add_checks(root, r) || add_totals(root, r) || add_ops(root, r) ||
      add_faults(root, r)) {
    json_object_put(root);
    return -1;
  }
  const char *s = json_object_to_json_string_ext(
      root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
  int rc = s && fprintf(f, "%s\n", s) >= 0 ? 0 : -1;
  json_object_put(root);
  return rc;
}
