/*
 * log.h: the programs' log (not libclaimer's: the library reports events
 * through a callback, and cl_log_event() is the one that writes them
 * here).  One line per event, logfmt by default or JSON on request, on one
 * file descriptor (stderr unless told otherwise).  A line is an event name
 * plus key/value pairs:
 *
 *   ts=2026-11-23T10:00:00.123Z level=info event=claimed queue=emails n=8
 *   {"ts":"2026-11-23T10:00:00.123Z","level":"info","event":"claimed",...}
 *
 * Callers never pass a password: connection strings reach a log only
 * through cl_dsn_redact().  Each line goes out in one write(2), so lines of
 * several processes sharing a file do not interleave.
 */
#ifndef CLAIMER_LOG_H
#define CLAIMER_LOG_H

#include "claimer/claimer.h"
#include "config.h"

/* Chooses the format, the lowest level written and the descriptor. */
void cl_log_setup(cl_log_format_t format, cl_level_t min, int fd);
/* 1 when a line at level would be written (to skip costly arguments). */
int cl_log_enabled(cl_level_t level);
/* Writes one line: event, then key/value string pairs ending with a NULL
 * key.  A NULL value is written as an empty string. */
void cl_log(cl_level_t level, const char *event, ...);
/* The event callback (cl_events_t) that writes libclaimer's events as
 * lines of this log: install it with cl_log_events().  arg is unused. */
void cl_log_event(void *arg, cl_level_t level, const char *event,
                  const cl_field_t *fields, size_t n);
/* Returns an event sink writing to this log, at its current level. */
cl_events_t cl_log_events(void);

/* Numbers as values: CL_LOG_INT(n), CL_LOG_NUM(x) (a double, 3 decimals).
 * They are written bare in JSON, so a log reader sees numbers. */
#define CL_LOG_INT(v) cl__ev_int((char[32]){0}, (long long)(v))
#define CL_LOG_NUM(v) cl__ev_num((char[48]){0}, (double)(v))
const char *cl__ev_int(char buf[32], long long v);
const char *cl__ev_num(char buf[48], double v);

#endif
