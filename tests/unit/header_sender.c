/* sender.h compiles with nothing included before it. */
#include "claimer/sender.h"

int header_sender_ok(void);
int header_sender_ok(void) {
  cl_sender_opts_t o;
  cl_sender_opts_init(&o);
  return o.sink == NULL && o.concurrency > 0;
}
