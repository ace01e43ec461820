/*
 * event.c: the event reports of the loop drivers (see event.h).  A number
 * is formatted into a caller's buffer behind a marker byte (\x01), so one
 * variadic list carries text and numbers alike; cl__event() strips the
 * marker into cl_field_t.number.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "event.h"

#define NUM_MARK '\x01'

const char *cl_level_name(cl_level_t level) {
  switch (level) {
  case CL_LEVEL_DEBUG:
    return "debug";
  case CL_LEVEL_INFO:
    return "info";
  case CL_LEVEL_WARNING:
    return "warning";
  default:
    return "error";
  }
}

int cl__event_on(const cl_events_t *ev, cl_level_t level) {
  return ev != NULL && ev->cb != NULL && level >= ev->min;
}

const char *cl__ev_int(char buf[32], long long v) {
  snprintf(buf, 32, "%c%lld", NUM_MARK, v);
  return buf;
}

const char *cl__ev_num(char buf[48], double v) {
  if (!isfinite(v))
    v = 0;
  snprintf(buf, 48, "%c%.3f", NUM_MARK, v);
  return buf;
}

void cl__eventv(const cl_events_t *ev, cl_level_t level, const char *name,
                va_list ap) {
  if (!cl__event_on(ev, level))
    return;
  cl_field_t f[CL__EVENT_FIELDS_MAX];
  size_t n = 0;
  for (const char *k; (k = va_arg(ap, const char *)) != NULL;) {
    const char *v = va_arg(ap, const char *);
    if (n == CL__EVENT_FIELDS_MAX)
      continue;
    if (v == NULL)
      v = "";
    int num = v[0] == NUM_MARK;
    f[n++] = (cl_field_t){k, num ? v + 1 : v, num};
  }
  ev->cb(ev->arg, level, name, f, n);
}

void cl__event(const cl_events_t *ev, cl_level_t level, const char *name, ...) {
  va_list ap;
  va_start(ap, name);
  cl__eventv(ev, level, name, ap);
  va_end(ap);
}
