/* reaper.h compiles with nothing included before it. */
#include "claimer/reaper.h"

int header_reaper_ok(void);
int header_reaper_ok(void) {
  cl_reaper_config_t cfg;
  cl_reaper_config_init(&cfg);
  return cfg.announce == NULL && cfg.events.cb == NULL;
}
