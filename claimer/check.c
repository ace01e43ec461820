/*
 * check.c: validation of everything a caller hands to claimer before any of
 * it reaches the database (item ids, queue and worker names, JSON payloads,
 * connection strings), plus the two small helpers that sit with them: the
 * password redaction of a connection string for logs, and random UUIDs.
 * The point is to fail early with a sentence a person can act on, instead of
 * a database error halfway through a batch.  Every byte offset in a message
 * is 0-based (the first byte is "byte 0"), as cl_utf8_invalid_at() returns
 * it.  Messages never echo raw control characters or invalid UTF-8 (they are
 * escaped by text.c, which also owns the reading of UTF-8) and never echo a
 * password.  Nothing here keeps state, so every function is safe to call
 * from any thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strcasestr; the build defines it anyway */
#endif
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json_object.h>
#include <json-c/json_tokener.h>
#include <libpq-fe.h>

#include "claimer/claimer.h"
#include "internal.h"
#include "text.h"

/* How many levels of arrays and objects a payload may nest.  PostgreSQL
 * takes far more, but real payloads stay shallow and a bound keeps a hostile
 * payload from costing much. */
#define JSON_MAX_DEPTH 64

/* How much of a bad value a message quotes back. */
#define ECHO_MAX 40

/* A password shorter than this cannot be cut out of a libpq message without
 * mangling the rest of it, so the message is withheld instead. */
#define SECRET_MIN 4

/* ------------------------------------------------------------------------ */
/* Plain strings                                                             */

/* Item ids and worker names are free text as text.c defines it: 1..max
 * bytes of valid UTF-8 without control characters, since both end up in
 * logs and on terminals. */
int cl_check_item_id(const char *id, char *err, size_t errlen) {
  return cl__check_text("item id", id, CL_ITEM_ID_MAX, 0, err, errlen);
}

int cl_check_worker(const char *worker, char *err, size_t errlen) {
  return cl__check_text("worker name", worker, CL_WORKER_MAX, 0, err, errlen);
}

static bool is_queue_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* Queue names are kept to a plain ASCII set so that they read the same in
 * logs, metrics labels and shell commands.  ':' is left out because it
 * separates a weight (claimer work -q NAME:WEIGHT, CLAIMER_WORKER_QUEUES)
 * or a per-queue value (NAME:DURATION): were it allowed, "jobs:2" would be
 * a queue to enqueue and claim but a weighted "jobs" to work. */
int cl_check_queue(const char *queue, char *err, size_t errlen) {
  if (queue == NULL) {
    cl__msg(err, errlen, "queue name is missing");
    return CL_EINVAL;
  }
  size_t len = strlen(queue);
  if (len == 0) {
    cl__msg(err, errlen, "queue name is empty");
    return CL_EINVAL;
  }
  if (len > CL_QUEUE_MAX) {
    cl__msg(err, errlen, "queue name is %zu bytes; the limit is %d", len,
            CL_QUEUE_MAX);
    return CL_EINVAL;
  }
  for (size_t i = 0; i < len; i++) {
    if (!is_queue_char((unsigned char)queue[i])) {
      char shown[CL__ESC_SIZE(ECHO_MAX)];
      cl__escape(shown, sizeof shown, queue, len, ECHO_MAX, CL__ESC_QUOTES);
      if (queue[i] == ':')
        cl__msg(err, errlen,
                "queue name \"%s\" has ':' at byte %zu: ':' separates a "
                "weight (NAME:WEIGHT, as in claimer work -q jobs:2) and is "
                "not part of a name",
                shown, i);
      else
        cl__msg(err, errlen,
                "queue name \"%s\" has a character not allowed at byte %zu "
                "(allowed: letters, digits, _ . -)",
                shown, i);
      return CL_EINVAL;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

/*
 * A payload must be something PostgreSQL's jsonb accepts, because it goes
 * into a jsonb column.  json-c's strict mode checks the structure (and stops
 * trailing data), but in 0.16 it also lets through NaN, Infinity and
 * -Infinity, "1." and "1.e5", raw control characters inside strings, \u0000
 * and unpaired surrogate escapes, and it does not reject overlong UTF-8.
 * jsonb refuses all of those, and numbers its numeric type cannot hold
 * (1e999999), so a small lexer of our own checks every token against RFC
 * 8259 and numeric's limits as well; json-c checks the grammar.  Both run, and
 * the fault with the smaller offset is reported (the lexer's on a tie, as its
 * words are more specific).
 */

/* Where and why the lexer found a fault. */
typedef struct json_fault {
  size_t at;
  bool range; /* valid JSON, but out of the range jsonb stores */
  char why[256];
} json_fault_t;

__attribute__((format(printf, 3, 4))) static bool
fault(json_fault_t *f, size_t at, const char *fmt, ...) {
  va_list ap;
  f->at = at;
  va_start(ap, fmt);
  vsnprintf(f->why, sizeof f->why, fmt, ap);
  va_end(ap);
  return false;
}

static bool is_json_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ASCII classes, spelled out because <ctype.h> follows the locale and
 * could call a Latin-1 byte a letter. */
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static bool is_letter(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Reads the escape "\uXXXX" at s[i].  Returns its code unit, or -1 when
 * there is no complete one there. */
static long read_u_escape(const unsigned char *s, size_t len, size_t i) {
  if (i > len || len - i < 6 || s[i] != '\\' || s[i + 1] != 'u')
    return -1;
  long v = 0;
  for (size_t k = 2; k < 6; k++) {
    int h = hex_value(s[i + k]);
    if (h < 0)
      return -1;
    v = v * 16 + h;
  }
  return v;
}

/* Checks the string token that opens at s[*pos] ('"') and moves *pos past
 * its closing quote.  Returns true, or false with the fault in f. */
static bool lex_string(const unsigned char *s, size_t len, size_t *pos,
                       json_fault_t *f) {
  size_t start = *pos, i = start + 1;
  for (;;) {
    if (i >= len)
      return fault(f, len, "the string that starts at byte %zu is not closed",
                   start);
    unsigned char c = s[i];
    if (c == '"') {
      *pos = i + 1;
      return true;
    }
    if (c < 0x20)
      return fault(f, i,
                   "control character 0x%02x inside a string must be "
                   "written as an escape",
                   c);
    if (c != '\\') {
      i++;
      continue;
    }
    if (i + 1 >= len)
      return fault(f, len, "the string that starts at byte %zu is not closed",
                   start);
    unsigned char e = s[i + 1];
    if (e != '\0' && strchr("\"\\/bfnrt", e) != NULL) {
      i += 2;
      continue;
    }
    if (e != 'u') {
      char shown[16];
      const char *e_at = (const char *)s + i + 1;
      size_t n = cl__utf8_decode(e_at, len - i - 1, NULL);
      cl__escape(shown, sizeof shown, e_at, n > 0 ? n : 1, 4, CL__ESC_QUOTES);
      return fault(f, i, "\"\\%s\" is not a JSON escape", shown);
    }
    long u = read_u_escape(s, len, i);
    if (u < 0)
      return fault(f, i, "\\u must be followed by four hex digits");
    if (u == 0)
      return fault(f, i,
                   "\\u0000 is not allowed (PostgreSQL's jsonb cannot "
                   "store it)");
    if (u >= 0xDC00 && u <= 0xDFFF)
      return fault(f, i,
                   "unpaired surrogate \\u%04lx (a low surrogate must "
                   "follow a high one)",
                   u);
    if (u >= 0xD800 && u <= 0xDBFF) {
      long low = read_u_escape(s, len, i + 6);
      if (low < 0xDC00 || low > 0xDFFF)
        return fault(f, i,
                     "unpaired surrogate \\u%04lx (a high surrogate "
                     "must be followed by a low one)",
                     u);
      i += 12;
      continue;
    }
    i += 6;
  }
}

/* What PostgreSQL's numeric (which jsonb stores every number as) can hold,
 * from numeric.c in PostgreSQL 15: the weight of the first base-10000
 * digit is an int16 (NUMERIC_WEIGHT_MAX 32767, so at most 4 * 32768 =
 * 131072 decimal digits before the point), the display scale (digits after
 * the point, trailing zeros and those an exponent adds included) is 14 bits
 * (NUMERIC_DSCALE_MAX 0x3FFF), and numeric_in refuses an exponent whose
 * magnitude reaches INT_MAX / 2 before it looks at the value, so even a
 * zero such as 0e1073741823 is refused.  Each bound was checked against a
 * real PostgreSQL 15 ("value overflows numeric format"). */
#define NUMERIC_INT_DIGITS_MAX 131072
#define NUMERIC_DSCALE_MAX 16383
#define NUMERIC_EXPONENT_LIMIT 1073741823 /* INT_MAX / 2, itself refused */

/* Returns the value of the exponent digits s[from..to), saturated at a
 * bound far past NUMERIC_EXPONENT_LIMIT, so that a million digits cannot
 * overflow it. */
static long long exponent_value(const unsigned char *s, size_t from,
                                size_t to) {
  long long v = 0;
  for (size_t i = from; i < to; i++) {
    v = v * 10 + (s[i] - '0');
    if (v > 10LL * NUMERIC_EXPONENT_LIMIT)
      return 10LL * NUMERIC_EXPONENT_LIMIT;
  }
  return v;
}

/* Checks that the number written s[start..end) (already known to follow
 * the grammar) fits PostgreSQL's numeric, as jsonb input requires.  The
 * integer digits are s[int_at..int_end), the fraction digits
 * s[frac_at..frac_end) (empty when frac_at == frac_end), the exponent's
 * digits s[exp_at..exp_end) with sign exp_neg.  Returns true, or false
 * with the fault (at start) in f. */
static bool numeric_fits(const unsigned char *s, size_t start, size_t int_at,
                         size_t int_end, size_t frac_at, size_t frac_end,
                         size_t exp_at, size_t exp_end, bool exp_neg,
                         json_fault_t *f) {
  long long exp = exponent_value(s, exp_at, exp_end);
  if (exp_neg)
    exp = -exp;
  if (exp >= NUMERIC_EXPONENT_LIMIT || exp <= -NUMERIC_EXPONENT_LIMIT) {
    f->range = true;
    return fault(f, start,
                 "PostgreSQL's numeric (which jsonb stores numbers as) "
                 "refuses an exponent beyond +-%d",
                 NUMERIC_EXPONENT_LIMIT - 1);
  }
  long long nfrac = (long long)(frac_end - frac_at);
  long long dscale = nfrac - exp > 0 ? nfrac - exp : 0;
  if (dscale > NUMERIC_DSCALE_MAX) {
    f->range = true;
    return fault(f, start,
                 "PostgreSQL's numeric (which jsonb stores numbers as) "
                 "holds at most %d digits after the decimal point, and this "
                 "number has %lld (counting trailing zeros and the "
                 "exponent)",
                 NUMERIC_DSCALE_MAX, dscale);
  }
  /* The power of ten of the first nonzero digit; a zero has none, and
   * numeric stores it with weight 0 whatever its exponent. */
  long long msd = 0;
  bool zero = true;
  for (size_t i = int_at; i < int_end && zero; i++)
    if (s[i] != '0') {
      msd = (long long)(int_end - i) - 1;
      zero = false;
    }
  for (size_t i = frac_at; i < frac_end && zero; i++)
    if (s[i] != '0') {
      msd = -(long long)(i - frac_at) - 1;
      zero = false;
    }
  if (!zero && msd + exp >= NUMERIC_INT_DIGITS_MAX) {
    f->range = true;
    return fault(f, start,
                 "the number is too large for PostgreSQL's numeric (which "
                 "jsonb stores numbers as): it holds values below 1e%d, "
                 "that is at most %d digits before the decimal point",
                 NUMERIC_INT_DIGITS_MAX, NUMERIC_INT_DIGITS_MAX);
  }
  /* A first digit below 1e-131072 would overflow the weight the other way,
   * but the display scale limit above already refuses anything that small. */
  return true;
}

/* Checks the number token that starts at s[*pos] against RFC 8259's grammar
 * (-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?) and against what
 * PostgreSQL's numeric holds, and moves *pos past it. */
static bool lex_number(const unsigned char *s, size_t len, size_t *pos,
                       json_fault_t *f) {
  size_t start = *pos, i = start;
  if (s[i] == '-') {
    i++;
    if (i >= len || !is_digit(s[i]))
      return fault(f, i,
                   "a minus sign must be followed by a digit (NaN and "
                   "Infinity are not JSON)");
  }
  size_t int_at = i;
  if (s[i] == '0') {
    i++;
    if (i < len && is_digit(s[i]))
      return fault(f, i, "a number must not have leading zeros");
  } else {
    while (i < len && is_digit(s[i]))
      i++;
  }
  size_t int_end = i, frac_at = i, frac_end = i;
  if (i < len && s[i] == '.') {
    i++;
    if (i >= len || !is_digit(s[i]))
      return fault(f, i, "a decimal point must be followed by a digit");
    frac_at = i;
    while (i < len && is_digit(s[i]))
      i++;
    frac_end = i;
  }
  size_t exp_at = i, exp_end = i;
  bool exp_neg = false;
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-'))
      exp_neg = s[i++] == '-';
    if (i >= len || !is_digit(s[i]))
      return fault(f, i, "an exponent must have digits");
    exp_at = i;
    while (i < len && is_digit(s[i]))
      i++;
    exp_end = i;
  }
  if (!numeric_fits(s, start, int_at, int_end, frac_at, frac_end, exp_at,
                    exp_end, exp_neg, f))
    return false;
  *pos = i;
  return true;
}

/* Checks every token of s[0..len) (valid UTF-8, no NUL) and the nesting
 * depth, which is a matter of counting brackets outside strings.  The
 * grammar (what may follow what) is left to json-c.  Returns true, or false
 * with the first fault in f. */
static bool json_lex(const char *text, size_t len, json_fault_t *f) {
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0, depth = 0;
  bool seen_value = false;
  while (i < len) {
    unsigned char c = s[i];
    if (is_json_ws(c)) {
      i++;
    } else if (c == '[' || c == '{') {
      if (++depth > JSON_MAX_DEPTH)
        return fault(f, i, "nested too deeply (the limit is %d levels)",
                     JSON_MAX_DEPTH);
      seen_value = true;
      i++;
    } else if (c == ']' || c == '}') {
      if (depth > 0)
        depth--;
      i++;
    } else if (c == ':' || c == ',') {
      i++;
    } else if (c == '"') {
      seen_value = true;
      if (!lex_string(s, len, &i, f))
        return false;
    } else if (c == '-' || is_digit(c)) {
      seen_value = true;
      if (!lex_number(s, len, &i, f))
        return false;
    } else if (is_letter(c)) {
      size_t start = i;
      while (i < len && (is_letter(s[i]) || is_digit(s[i]) || s[i] == '_'))
        i++;
      size_t n = i - start;
      if (!((n == 4 && memcmp(s + start, "true", 4) == 0) ||
            (n == 5 && memcmp(s + start, "false", 5) == 0) ||
            (n == 4 && memcmp(s + start, "null", 4) == 0))) {
        char shown[CL__ESC_SIZE(20)];
        cl__escape(shown, sizeof shown, text + start, n, 20, CL__ESC_QUOTES);
        return fault(f, start,
                     "\"%s\" is not a JSON value (the words are true, false "
                     "and null; NaN and Infinity are not JSON)",
                     shown);
      }
      seen_value = true;
    } else {
      char shown[16];
      size_t n = cl__utf8_decode(text + i, len - i, NULL);
      cl__escape(shown, sizeof shown, text + i, n > 0 ? n : 1, 4,
                 CL__ESC_QUOTES);
      return fault(f, i, "unexpected character \"%s\"", shown);
    }
  }
  if (!seen_value)
    return fault(f, len, "there is no value, only whitespace");
  return true;
}

/* Runs json-c's strict parser over s[0..len).  Returns true when it found
 * exactly one value with nothing but whitespace after it; otherwise false
 * with the fault in f, or with f->at = SIZE_MAX when json-c could not even
 * start (out of memory). */
static bool json_parse(const char *s, size_t len, json_fault_t *f) {
  /* One level more than our limit: json-c counts a scalar inside the
   * innermost container as a level, and our lexer owns the depth message. */
  struct json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH + 1);
  if (tok == NULL) {
    f->at = (size_t)-1;
    return false;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  struct json_object *obj = json_tokener_parse_ex(tok, s, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  if (jerr == json_tokener_continue) {
    /* A number (or nothing) at the very end: json-c needs to see the end of
     * input, which it takes to be a NUL byte.  s itself need not be
     * NUL-terminated, so the NUL comes in a second call. */
    obj = json_tokener_parse_ex(tok, "", 1);
    jerr = json_tokener_get_error(tok);
    end = len;
  }
  bool ok = jerr == json_tokener_success;
  if (!ok) {
    fault(f, end, "%s", json_tokener_error_desc(jerr));
  } else {
    for (size_t i = end; i < len; i++) {
      if (!is_json_ws((unsigned char)s[i])) {
        ok = fault(f, i, "there is more after the JSON value");
        break;
      }
    }
  }
  json_object_put(obj);
  json_tokener_free(tok);
  return ok;
}

/* Returns 0 when s[0..len) is one JSON value that jsonb will take, CL_EJSON
 * (with the reason) when it is not, CL_EINVAL when s is NULL but len is not
 * 0, CL_ENOMEM when json-c could not allocate its parser. */
/* ------------------------------------------------------------------------ */
/* Times                                                                     */

/* n digits at s, their value in *v. */
static bool digits(const char *s, int n, int *v) {
  *v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    *v = *v * 10 + (s[i] - '0');
  }
  return true;
}

/* RFC 3339's date-time (section 5.6), the form every time claimer prints
 * takes: YYYY-MM-DDTHH:MM:SS, a fraction if any, then Z or +HH:MM/-HH:MM.
 * A space may stand for the T (as the RFC allows and psql prints).  The
 * fields are range-checked (a day past its month's end too, leap years
 * included), so PostgreSQL is never the one to refuse it. */
int cl_check_time(const char *t, char *err, size_t errlen) {
  if (t == NULL || *t == '\0') {
    cl__msg(err, errlen, "time is missing (RFC 3339: 2026-12-02T09:30:00Z)");
    return CL_EINVAL;
  }
  char shown[CL__ESC_SIZE(ECHO_MAX)];
  cl__escape(shown, sizeof shown, t, strlen(t), ECHO_MAX, CL__ESC_QUOTES);
  int y, mo, d, h, mi, sec, oh = 0, om = 0;
  const char *p = t;
  bool ok = strlen(t) >= 20 && digits(p, 4, &y) && p[4] == '-' &&
            digits(p + 5, 2, &mo) && p[7] == '-' && digits(p + 8, 2, &d) &&
            (p[10] == 'T' || p[10] == 't' || p[10] == ' ') &&
            digits(p + 11, 2, &h) && p[13] == ':' && digits(p + 14, 2, &mi) &&
            p[16] == ':' && digits(p + 17, 2, &sec);
  if (ok) {
    p += 19;
    if (*p == '.') {
      const char *f = ++p;
      while (*p >= '0' && *p <= '9')
        p++;
      ok = p > f;
    }
    if (ok && (*p == 'Z' || *p == 'z'))
      ok = p[1] == '\0';
    else if (ok && (*p == '+' || *p == '-'))
      ok = digits(p + 1, 2, &oh) && p[3] == ':' && digits(p + 4, 2, &om) &&
           p[6] == '\0';
    else
      ok = false;
  }
  if (!ok) {
    cl__msg(err, errlen,
            "time \"%s\" is not RFC 3339 (such as 2026-12-02T09:30:00Z or "
            "2026-12-02 10:30:00+01:00)",
            shown);
    return CL_EINVAL;
  }
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
      (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 || sec > 60 ||
      oh > 23 || om > 59) {
    cl__msg(err, errlen, "time \"%s\" has a field out of range", shown);
    return CL_EINVAL;
  }
  return 0;
}

int cl_check_json(const char *s, size_t len, char *err, size_t errlen) {
  if (s == NULL && len > 0) {
    cl__msg(err, errlen, "JSON text is missing");
    return CL_EINVAL;
  }
  if (len == 0) {
    cl__msg(err, errlen, "JSON text is empty");
    return CL_EJSON;
  }
  if (len > CL_PAYLOAD_MAX) {
    cl__msg(err, errlen, "JSON text is %zu bytes; the limit is %d", len,
            CL_PAYLOAD_MAX);
    return CL_EJSON;
  }
  const char *nul = memchr(s, '\0', len);
  if (nul != NULL) {
    cl__msg(err, errlen, "JSON text contains a NUL byte at byte %zu",
            (size_t)(nul - s));
    return CL_EJSON;
  }
  long bad = cl_utf8_invalid_at(s, len);
  if (bad >= 0) {
    cl__msg(err, errlen, "not valid UTF-8 at byte %ld", bad);
    return CL_EJSON;
  }
  json_fault_t lexf = {.range = false}, parsef = {.range = false};
  bool lex_ok = json_lex(s, len, &lexf);
  bool parse_ok = json_parse(s, len, &parsef);
  if (!parse_ok && parsef.at == (size_t)-1) {
    cl__msg(err, errlen, "out of memory while checking JSON");
    return CL_ENOMEM;
  }
  if (lex_ok && parse_ok)
    return 0;
  const json_fault_t *f = &parsef;
  if (!lex_ok && (parse_ok || lexf.at <= parsef.at))
    f = &lexf;
  cl__msg(err, errlen, "%s at byte %zu: %s",
          f->range ? "number out of range" : "not valid JSON", f->at, f->why);
  return CL_EJSON;
}

/* ------------------------------------------------------------------------ */
/* Connection strings                                                        */

/* The passwords a connection string may carry, in every spelling a libpq
 * message might echo: as written, percent-decoded, unquoted. */
typedef struct secrets {
  char *v[24];
  size_t n;
  bool doubt; /* one was too short to cut out, or there were too many */
} secrets_t;

static void secrets_add(secrets_t *sec, const char *p, size_t n) {
  if (n == 0)
    return;
  if (n < SECRET_MIN || sec->n == sizeof sec->v / sizeof sec->v[0]) {
    sec->doubt = true;
    return;
  }
  char *copy = strndup(p, n);
  if (copy == NULL) {
    sec->doubt = true;
    return;
  }
  sec->v[sec->n++] = copy;
}

/* Adds p[0..n) and, when it differs, its percent-decoded form (URIs may
 * encode a password; libpq echoes either form). */
static void secrets_add_uri(secrets_t *sec, const char *p, size_t n) {
  secrets_add(sec, p, n);
  char *dec = malloc(n + 1);
  if (dec == NULL) {
    sec->doubt = true;
    return;
  }
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (p[i] == '%' && i + 2 < n &&
        (hi = hex_value((unsigned char)p[i + 1])) >= 0 &&
        (lo = hex_value((unsigned char)p[i + 2])) >= 0) {
      dec[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      dec[o++] = p[i];
    }
  }
  if (o != n)
    secrets_add(sec, dec, o);
  free(dec);
}

/* Adds p[0..n) with libpq's backslash escapes of key=value strings undone,
 * when that differs. */
static void secrets_add_unescaped(secrets_t *sec, const char *p, size_t n) {
  char *un = malloc(n + 1);
  if (un == NULL) {
    sec->doubt = true;
    return;
  }
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\\' && i + 1 < n)
      i++;
    un[o++] = p[i];
  }
  if (o != n)
    secrets_add(sec, un, o);
  free(un);
}

static void secrets_free(secrets_t *sec) {
  for (size_t i = 0; i < sec->n; i++)
    free(sec->v[i]);
  sec->n = 0;
}

/*
 * Collects every password in dsn, read the way libpq reads it, but without
 * trusting that dsn parses (it is called when it did not):
 *  - the userinfo of anything that looks like a URI ("://"): libpq takes
 *    what lies before the first '@' or '/' as user[:password];
 *  - the value of every key ending in "password" (password, sslpassword;
 *    any case) followed by '=', in key=value form (quoted or not, with
 *    backslash escapes) and in URI query form (up to '&' or '#').
 * It over-collects on purpose: cutting a harmless string out of a message
 * costs little, leaking a password costs a lot.
 */
static void collect_secrets(const char *dsn, secrets_t *sec) {
  for (const char *p = strstr(dsn, "://"); p != NULL;
       p = strstr(p + 3, "://")) {
    const char *a = p + 3, *e = a;
    while (*e != '\0' && *e != '@' && *e != '/')
      e++;
    if (*e != '@')
      continue;
    const char *colon = memchr(a, ':', (size_t)(e - a));
    if (colon != NULL)
      secrets_add_uri(sec, colon + 1, (size_t)(e - colon - 1));
  }
  for (const char *p = dsn; (p = strcasestr(p, "password")) != NULL; p += 8) {
    const char *v = p + 8;
    while (isspace((unsigned char)*v))
      v++;
    if (*v != '=')
      continue;
    v++;
    while (isspace((unsigned char)*v))
      v++;
    if (*v == '\'') {
      const char *q = v + 1, *e = q;
      while (*e != '\0' && *e != '\'') {
        if (*e == '\\' && e[1] != '\0')
          e++;
        e++;
      }
      secrets_add(sec, q, (size_t)(e - q));
      secrets_add_unescaped(sec, q, (size_t)(e - q));
    } else {
      size_t kv = 0, uri = 0;
      while (v[kv] != '\0' && !isspace((unsigned char)v[kv]))
        kv++;
      while (v[uri] != '\0' && !isspace((unsigned char)v[uri]) &&
             v[uri] != '&' && v[uri] != '#')
        uri++;
      secrets_add(sec, v, kv);
      secrets_add_unescaped(sec, v, kv);
      if (uri != kv)
        secrets_add_uri(sec, v, uri);
    }
  }
}

static int longer_first(const void *a, const void *b) {
  size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
  return la < lb ? 1 : la > lb ? -1 : 0;
}

/* Returns a malloc'd copy of msg with every secret replaced by "***"
 * (longest first, so that one secret inside another goes whole), or NULL
 * when out of memory or when a secret still shows afterwards. */
static char *scrub(const char *msg, secrets_t *sec) {
  char *cur = strdup(msg);
  if (cur == NULL)
    return NULL;
  qsort(sec->v, sec->n, sizeof sec->v[0], longer_first);
  for (size_t k = 0; k < sec->n; k++) {
    const char *needle = sec->v[k];
    size_t nlen = strlen(needle), count = 0;
    for (const char *h = strstr(cur, needle); h != NULL;
         h = strstr(h + nlen, needle))
      count++;
    if (count == 0)
      continue;
    /* "***" is shorter than any secret we keep (SECRET_MIN). */
    char *next = malloc(strlen(cur) + 1);
    if (next == NULL) {
      free(cur);
      return NULL;
    }
    char *o = next;
    const char *src = cur;
    for (const char *h = strstr(src, needle); h != NULL;
         h = strstr(src, needle)) {
      memcpy(o, src, (size_t)(h - src));
      o += h - src;
      memcpy(o, "***", 3);
      o += 3;
      src = h + nlen;
    }
    strcpy(o, src);
    free(cur);
    cur = next;
  }
  for (size_t k = 0; k < sec->n; k++) {
    if (strstr(cur, sec->v[k]) != NULL) {
      free(cur);
      return NULL;
    }
  }
  return cur;
}

/* Writes "malformed connection string: <detail>" into err, with every
 * password of dsn cut out of detail and the rest escaped for printing.
 * When in doubt (a password too short to cut out cleanly, no memory) the
 * detail is left out rather than risked. */
static void dsn_error(const char *dsn, const char *detail, char *err,
                      size_t errlen) {
  if (err == NULL || errlen == 0)
    return;
  secrets_t sec = {.n = 0};
  collect_secrets(dsn, &sec);
  char *clean = sec.doubt ? NULL : scrub(detail, &sec);
  secrets_free(&sec);
  size_t n = clean != NULL ? strlen(clean) : 0;
  while (n > 0 && isspace((unsigned char)clean[n - 1]))
    n--;
  char *shown = clean != NULL ? malloc(CL__ESC_SIZE(n)) : NULL;
  if (shown == NULL) {
    cl__msg(err, errlen,
            "malformed connection string (the detail is withheld "
            "because it might show the password)");
  } else {
    cl__escape(shown, CL__ESC_SIZE(n), clean, n, n, 0);
    cl__msg(err, errlen, "malformed connection string: %s", shown);
  }
  free(shown);
  free(clean);
}

/* Checks every port in a (possibly comma-separated, multi-host) port
 * option: each empty (the default) or a number from 1 to 65535.  libpq
 * itself only looks at ports when it connects.  Returns the offending
 * element's length (never 0, as an empty one is fine) and sets *bad, or
 * returns 0 when all are fine. */
static size_t bad_port(const char *ports, const char **bad) {
  const char *p = ports;
  for (;;) {
    size_t n = strcspn(p, ",");
    long v = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
      ok = is_digit((unsigned char)p[i]) && i < 5;
      v = v * 10 + (p[i] - '0');
    }
    if (!ok || (n > 0 && (v < 1 || v > 65535))) {
      *bad = p;
      return n;
    }
    if (p[n] == '\0')
      return 0;
    p += n + 1;
  }
}

/* Returns 0, CL_EDSN (empty or malformed; the reason in err, without the
 * password), CL_EINVAL when dsn is NULL, or CL_ENOMEM. */
int cl_check_dsn(const char *dsn, char *err, size_t errlen) {
  if (dsn == NULL) {
    cl__msg(err, errlen, "connection string is missing");
    return CL_EINVAL;
  }
  const char *p = dsn;
  while (isspace((unsigned char)*p))
    p++;
  if (*p == '\0') {
    /* libpq reads "" as "all defaults"; for claimer that is a mistake, and
     * the embedded default is chosen by giving no DSN at all. */
    cl__msg(err, errlen, "empty connection string");
    return CL_EDSN;
  }
  char *msg = NULL;
  PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
  if (opts == NULL) {
    if (msg == NULL) {
      cl__msg(err, errlen,
              "out of memory while parsing the connection "
              "string");
      return CL_ENOMEM;
    }
    dsn_error(dsn, msg, err, errlen);
    PQfreemem(msg);
    return CL_EDSN;
  }
  int rc = 0;
  for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
    if (o->val == NULL || strcmp(o->keyword, "port") != 0)
      continue;
    const char *bad = NULL;
    size_t n = bad_port(o->val, &bad);
    if (n == 0)
      continue;
    char shown[CL__ESC_SIZE(ECHO_MAX)], detail[CL__ESC_SIZE(ECHO_MAX) + 64];
    cl__escape(shown, sizeof shown, bad, n, ECHO_MAX, CL__ESC_QUOTES);
    snprintf(detail, sizeof detail,
             "port \"%s\" is not a number from 1 to 65535", shown);
    dsn_error(dsn, detail, err, errlen);
    rc = CL_EDSN;
    break;
  }
  PQconninfoFree(opts);
  return rc;
}

/* Appends value to out as a libpq key=value value: bare when it has no
 * whitespace, quote or backslash, else in single quotes with ' and \
 * escaped by a backslash.  Returns the new end. */
static char *put_value(char *out, const char *value) {
  bool quote = *value == '\0';
  for (const char *v = value; *v != '\0'; v++)
    if (isspace((unsigned char)*v) || *v == '\'' || *v == '\\')
      quote = true;
  if (!quote) {
    size_t n = strlen(value);
    memcpy(out, value, n);
    return out + n;
  }
  *out++ = '\'';
  for (const char *v = value; *v != '\0'; v++) {
    if (*v == '\'' || *v == '\\')
      *out++ = '\\';
    *out++ = *v;
  }
  *out++ = '\'';
  return out;
}

/* Rebuilds dsn as key=value pairs from what libpq parsed, so a URI and a
 * key=value string come out in the same form.  Options libpq marks as
 * secret (dispchar "*": password, sslpassword) become "***".  A value that
 * itself holds a connection string (a dbname such as "postgresql://u:pw@h")
 * has its passwords cut out too, or is hidden whole when in doubt. */
char *cl_dsn_redact(const char *dsn) {
  static const char malformed[] = "(malformed connection string)";
  if (dsn == NULL)
    return strdup(malformed);
  char *msg = NULL;
  PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
  if (opts == NULL) {
    if (msg == NULL)
      return NULL;
    PQfreemem(msg);
    return strdup(malformed);
  }
  size_t cap = 1;
  for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
    if (o->val != NULL && o->val[0] != '\0')
      cap += strlen(o->keyword) + 2 * strlen(o->val) + 8;
  char *out = malloc(cap), *end = out;
  bool failed = out == NULL;
  for (const PQconninfoOption *o = opts; o->keyword != NULL && !failed; o++) {
    if (o->val == NULL || o->val[0] == '\0')
      continue;
    if (end != out)
      *end++ = ' ';
    size_t k = strlen(o->keyword);
    memcpy(end, o->keyword, k);
    end += k;
    *end++ = '=';
    if (o->dispchar != NULL && strchr(o->dispchar, '*') != NULL) {
      end = put_value(end, "***");
      continue;
    }
    secrets_t sec = {.n = 0};
    collect_secrets(o->val, &sec);
    char *clean = NULL;
    if (sec.n == 0 && !sec.doubt)
      clean = strdup(o->val);
    else if (!sec.doubt)
      clean = scrub(o->val, &sec);
    else
      clean = strdup("***");
    secrets_free(&sec);
    if (clean == NULL) {
      failed = true;
      break;
    }
    end = put_value(end, clean);
    free(clean);
  }
  PQconninfoFree(opts);
  if (failed) {
    free(out);
    return NULL;
  }
  *end = '\0';
  return out;
}

/* ------------------------------------------------------------------------ */
/* UUIDs                                                                     */

/* Fills buf with n random bytes from the kernel: getrandom(), or
 * /dev/urandom where a sandbox refuses that system call.  Returns 0 or -1. */
static int fill_random(unsigned char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(buf + got, n - got, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  if (got == n)
    return 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  close(fd);
  return got == n ? 0 : -1;
}

size_t cl__mask_span(char *s, size_t at, size_t len) {
  size_t total = strlen(s);
  size_t stars = len < 3 ? len : 3;
  memset(s + at, '*', stars);
  memmove(s + at + stars, s + at + len, total - at - len + 1);
  memset(s + total - (len - stars), 0, len - stars);
  return stars;
}

/* A random double in [0, 1), for jitter.  Not rand(): that is never
 * seeded in a library (workers restarted together would stay in
 * lockstep), and drawing from it would disturb the host program's
 * sequence.  Each thread keeps an xorshift64* state seeded once from the
 * kernel (the clock and the address of the state when that fails). */
double cl__random_unit(void) {
  static _Thread_local uint64_t state;
  if (state == 0) {
    unsigned char b[8];
    uint64_t seed = 0;
    if (fill_random(b, sizeof b) == 0)
      memcpy(&seed, b, sizeof seed);
    else
      seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
             (uint64_t)(uintptr_t)&state;
    state = seed ? seed : 0x9e3779b97f4a7c15ULL;
  }
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return (double)((state * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
}

/* Writes a version 4 UUID (RFC 9562: 122 random bits, version nibble 4,
 * variant bits 10) in lowercase 8-4-4-4-12 form.  On failure out is "". */
int cl_uuid4(char out[37]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char b[16];
  if (out == NULL)
    return CL_EINVAL;
  if (fill_random(b, sizeof b) != 0) {
    out[0] = '\0';
    return CL_EIO;
  }
  b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
  char *o = out;
  for (size_t i = 0; i < sizeof b; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      *o++ = '-';
    *o++ = hex[b[i] >> 4];
    *o++ = hex[b[i] & 0x0F];
  }
  *o = '\0';
  return 0;
}

void cl__default_name(char *buf, size_t n) {
  char host[128] = "localhost";
  if (gethostname(host, sizeof host) != 0)
    snprintf(host, sizeof host, "localhost");
  host[sizeof host - 1] = '\0';
  char uuid[37];
  if (cl_uuid4(uuid) != 0)
    snprintf(uuid, sizeof uuid, "%08lx", (unsigned long)time(NULL));
  uuid[8] = '\0';
  snprintf(buf, n, "%s:%ld:%s", host, (long)getpid(), uuid);
}
