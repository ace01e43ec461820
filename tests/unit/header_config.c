/* Compiles config.h alone: nothing included before it. */
#include "config.h"

int header_config_ok(void);
int header_config_ok(void) { return 1; }
