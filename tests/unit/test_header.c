/*
 * test_header.c: the public header compiles on its own (nothing included
 * before it) and its error list is usable from a program.  The other
 * public headers (worker.h, reaper.h, sender.h) each compile alone in
 * header_*.c, built with include/ as their only include directory; the
 * programs' log.h and config.h likewise.
 */
#include "claimer/claimer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

int header_worker_ok(void);
int header_log_ok(void);
int header_config_ok(void);
int header_reaper_ok(void);
int header_sender_ok(void);

static void test_alone(void **state) {
  (void)state;
  assert_string_equal(cl_err_name(CL_ELEASE_LOST), "CL_ELEASE_LOST");
  assert_true(strlen(cl_strerror(CL_EDSN)) > 0);
  assert_int_equal(cl_schema_version() >= 1, 1);
  assert_int_equal(header_worker_ok() + header_reaper_ok() +
                       header_sender_ok() + header_log_ok() +
                       header_config_ok(),
                   5);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_alone)};
  return cmocka_run_group_tests_name("header", tests, NULL, NULL);
}
