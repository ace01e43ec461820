/*
 * log.c: the programs' log (see log.h).  It writes libclaimer's events
 * (cl_field_t, numbers marked) and the programs' own (cl_log, whose
 * CL_LOG_INT / CL_LOG_NUM values are the library's marked numbers): logfmt
 * writes a number as it is, JSON bare.  Strings are escaped by json-c in
 * JSON and quoted where needed in logfmt, so a value can never forge a key
 * or a second line.
 */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "log.h"

static cl_log_format_t log_format = CL_LOG_LOGFMT;
static cl_level_t log_min = CL_LEVEL_INFO;
static int log_fd = 2;

void cl_log_setup(cl_log_format_t format, cl_level_t min, int fd) {
  log_format = format;
  log_min = min;
  log_fd = fd;
}

int cl_log_enabled(cl_level_t level) { return level >= log_min; }

typedef struct line {
  char *p;
  size_t len, cap;
} line_t;

static void put(line_t *l, const char *s, size_t n) {
  if (l->len + n + 2 > l->cap) {
    size_t cap = l->cap ? l->cap : 256;
    while (cap < l->len + n + 2)
      cap *= 2;
    char *p = realloc(l->p, cap);
    if (p == NULL)
      return; /* a log line is not worth failing for: drop the rest */
    l->p = p;
    l->cap = cap;
  }
  memcpy(l->p + l->len, s, n);
  l->len += n;
}

static void puts_(line_t *l, const char *s) { put(l, s, strlen(s)); }

/* A logfmt value needs quotes when empty or when it holds a space, '"',
 * '=', a backslash or a control character. */
static void put_logfmt(line_t *l, const char *v) {
  int quote = *v == '\0';
  for (const unsigned char *p = (const unsigned char *)v; *p && !quote; p++)
    quote = *p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f;
  if (!quote) {
    puts_(l, v);
    return;
  }
  put(l, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
    char esc[8];
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      put(l, esc, 2);
    } else if (*p == '\n') {
      put(l, "\\n", 2);
    } else if (*p == '\t') {
      put(l, "\\t", 2);
    } else if (*p < ' ' || *p == 0x7f) {
      snprintf(esc, sizeof esc, "\\x%02x", *p);
      puts_(l, esc);
    } else {
      put(l, (const char *)p, 1);
    }
  }
  put(l, "\"", 1);
}

static void put_json_string(line_t *l, const char *v) {
  json_object *o = json_object_new_string(v);
  if (o == NULL)
    return;
  puts_(l, json_object_to_json_string_ext(
               o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put(o);
}

static void put_pair(line_t *l, int first, const char *k, const char *v,
                     int num) {
  if (log_format == CL_LOG_JSON) {
    if (!first)
      put(l, ",", 1);
    put_json_string(l, k);
    put(l, ":", 1);
    if (num)
      puts_(l, v);
    else
      put_json_string(l, v);
  } else {
    if (!first)
      put(l, " ", 1);
    puts_(l, k);
    put(l, "=", 1);
    put_logfmt(l, v);
  }
}

/* Writes one line: ts, level, event, then fields[0..n) in one write(2). */
static void write_line(cl_level_t level, const char *event, const cl_field_t *f,
                       size_t n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[40];
  size_t wn = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + wn, sizeof when - wn, ".%03ldZ", ts.tv_nsec / 1000000);

  line_t l = {0};
  if (log_format == CL_LOG_JSON)
    put(&l, "{", 1);
  put_pair(&l, 1, "ts", when, 0);
  put_pair(&l, 0, "level", cl_level_name(level), 0);
  put_pair(&l, 0, "event", event, 0);
  for (size_t i = 0; i < n; i++)
    put_pair(&l, 0, f[i].key, f[i].value ? f[i].value : "", f[i].number);
  if (log_format == CL_LOG_JSON)
    put(&l, "}", 1);
  put(&l, "\n", 1);
  if (l.p != NULL) {
    size_t off = 0;
    while (off < l.len) {
      ssize_t w = write(log_fd, l.p + off, l.len - off);
      if (w <= 0)
        break;
      off += (size_t)w;
    }
  }
  free(l.p);
}

void cl_log_event(void *arg, cl_level_t level, const char *event,
                  const cl_field_t *fields, size_t n) {
  (void)arg;
  if (level >= log_min)
    write_line(level, event, fields, n);
}

cl_events_t cl_log_events(void) {
  return (cl_events_t){cl_log_event, NULL, log_min};
}

void cl_log(cl_level_t level, const char *event, ...) {
  cl_events_t ev = cl_log_events();
  va_list ap;
  va_start(ap, event);
  cl__eventv(&ev, level, event, ap);
  va_end(ap);
}
