/* Compiles worker.h alone: nothing included before it. */
#include "claimer/worker.h"

int header_worker_ok(void);
int header_worker_ok(void) { return 1; }
