/*
 * test_header.c: the public header compiles on its own (nothing included
 * before it) and its error list is usable from a program.
 */
#include "claimer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_alone(void **state) {
  (void)state;
  assert_string_equal(cl_err_name(CL_ELEASE_LOST), "CL_ELEASE_LOST");
  assert_true(strlen(cl_strerror(CL_EDSN)) > 0);
  assert_int_equal(cl_schema_version() >= 1, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_alone)};
  return cmocka_run_group_tests_name("header", tests, NULL, NULL);
}
