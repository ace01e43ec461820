/* Compiles log.h alone: nothing included before it. */
#include "log.h"

int header_log_ok(void);
int header_log_ok(void) { return 1; }
