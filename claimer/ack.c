/*
 * ack.c: the acknowledgement policy of ack.h, as code.  cl__ack_next() is
 * the table of the header, row by row in the same order, so that a reader
 * can hold one against the other; cl__ack_step() keeps the counters the
 * table reads.  Nothing here sends, sleeps or reports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ack.h"

void cl__ack_init(cl__ack_t *a, cl__ack_op_t op, int resend_limit) {
  memset(a, 0, sizeof *a);
  a->op = op;
  a->resend_limit = resend_limit > 0 ? resend_limit : 0;
}

cl__ack_step_t cl__ack_next(const cl__ack_t *a, cl__ack_got_t got) {
  int release = a->op == CL__ACK_RELEASE;
  switch (got) {
  case CL__ACK_GOT_OK:
    return a->settling ? CL__ACK_ALREADY_DONE : CL__ACK_DONE;
  case CL__ACK_GOT_ALREADY:
    return CL__ACK_ALREADY_DONE;
  case CL__ACK_GOT_NO_CLAIM:
    if (release || a->settling || a->resends == 0)
      return CL__ACK_LEASE_LOST;
    return CL__ACK_SETTLE;
  case CL__ACK_GOT_CONN_LOST:
    if (a->resend_limit == 0 || a->resends < a->resend_limit)
      return CL__ACK_RESEND;
    return CL__ACK_UNSETTLED;
  case CL__ACK_GOT_DB_ERROR:
    if (release)
      return CL__ACK_GIVE_UP;
    if (a->db_errors < CL__ACK_DB_RETRIES)
      return CL__ACK_RESEND;
    if (a->settling)
      return CL__ACK_GIVE_UP;
    if (a->op == CL__ACK_COMPLETE)
      return CL__ACK_TO_FAIL;
    return a->stand_in ? CL__ACK_GIVE_UP : CL__ACK_STAND_IN;
  }
  /* Not an outcome: nothing safe to do but leave the lease to expire. */
  return CL__ACK_GIVE_UP;
}

cl__ack_step_t cl__ack_step(cl__ack_t *a, cl__ack_got_t got) {
  cl__ack_step_t step = cl__ack_next(a, got);
  switch (step) {
  case CL__ACK_RESEND:
    if (got == CL__ACK_GOT_CONN_LOST)
      a->resends++;
    else
      a->db_errors++;
    break;
  case CL__ACK_SETTLE:
    a->settling = 1;
    a->db_errors = 0;
    break;
  case CL__ACK_TO_FAIL:
    a->op = CL__ACK_FAIL;
    a->converted = 1;
    a->db_errors = 0;
    break;
  case CL__ACK_STAND_IN:
    a->stand_in = 1;
    a->db_errors = 0;
    break;
  default:
    break;
  }
  return step;
}

cl__stmt_id_t cl__ack_stmt(const cl__ack_t *a) {
  switch (a->op) {
  case CL__ACK_COMPLETE:
    return a->settling ? CL__STMT_COMPLETE_CHECK : CL__STMT_COMPLETE;
  case CL__ACK_FAIL:
    return a->settling ? CL__STMT_FAIL_CHECK : CL__STMT_FAIL;
  default:
    return CL__STMT_RELEASE;
  }
}

char *cl__ack_error_text(cl__ack_step_t step, const char *reason) {
  const char *r = reason ? reason : "";
  if (step == CL__ACK_TO_FAIL) {
    static const char lead[] = "the result could not be stored: ";
    size_t n = sizeof lead + strlen(r);
    char *e = malloc(n);
    if (e != NULL)
      snprintf(e, n, "%s%s", lead, r);
    return e;
  }
  if (step == CL__ACK_STAND_IN) {
    /* Short on purpose: the error given was refused, perhaps for its
     * length or its bytes.  The database's reason is clipped likewise, on
     * a character boundary, so the stand-in stays valid UTF-8. */
    static const char lead[] = "the failure could not be recorded as given: ";
    size_t len = strlen(r);
    if (len > 300) {
      len = 300;
      while (len > 0 && ((unsigned char)r[len] & 0xC0) == 0x80)
        len--;
    }
    char *e = malloc(sizeof lead + len);
    if (e != NULL)
      snprintf(e, sizeof lead + len, "%s%.*s", lead, (int)len, r);
    return e;
  }
  return NULL;
}

const char *cl__ack_step_name(cl__ack_step_t step) {
  static const char *const names[] = {
#define CL__ACK_STEP_NAME(name) #name,
      CL__ACK_STEP_MAP(CL__ACK_STEP_NAME)
#undef CL__ACK_STEP_NAME
  };
  if ((unsigned)step >= CL__ACK_STEP_COUNT)
    return "?";
  return names[step];
}
