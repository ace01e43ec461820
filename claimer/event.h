/*
 * event.h: how the loop drivers inside libclaimer report events to the
 * program (cl_events_t, claimer.h).  A driver calls cl__event() with the
 * event's name and key/value string pairs ending with a NULL key; numbers
 * go through CL_EV_INT / CL_EV_NUM, whose strings carry a marker byte that
 * cl__event() turns into cl_field_t.number.  Nothing here writes to a file
 * descriptor: without a callback an event is dropped.
 */
#ifndef CLAIMER_EVENT_H
#define CLAIMER_EVENT_H

#include <stdarg.h>

#include "claimer/claimer.h"

/* The most fields one event carries; further pairs are dropped. */
#define CL__EVENT_FIELDS_MAX 24

/* 1 when an event at level would reach a callback (so that costly
 * arguments are only built when someone listens). */
int cl__event_on(const cl_events_t *ev, cl_level_t level);

/* Reports event name at level with key/value pairs (a NULL value is
 * reported as ""), ending with a NULL key. */
void cl__event(const cl_events_t *ev, cl_level_t level, const char *name, ...);
/* The same with the pairs in ap (for the programs' own log, which shares
 * this marker scheme). */
void cl__eventv(const cl_events_t *ev, cl_level_t level, const char *name,
                va_list ap);

#define CL_EV_INT(v) cl__ev_int((char[32]){0}, (long long)(v))
#define CL_EV_NUM(v) cl__ev_num((char[48]){0}, (double)(v))
const char *cl__ev_int(char buf[32], long long v);
const char *cl__ev_num(char buf[48], double v);

#endif
