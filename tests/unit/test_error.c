/*
 * test_error.c: unit tests of cl_strerror() and cl_err_name().  The expected
 * names and messages come from CL_ERRNO_MAP itself, so every code in the
 * list is covered and a code added later is covered without touching this
 * file; the other tests pin down what happens to 0, to negated errno values
 * and to codes nobody defined.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "claimer/claimer.h"

typedef struct expected {
  int code;
  const char *name;
  const char *msg;
} expected_t;

static const expected_t all_codes[] = {
#define EXPECT(name, value, msg) {value, "CL_E" #name, msg},
    CL_ERRNO_MAP(EXPECT)
#undef EXPECT
};

#define N_CODES (sizeof all_codes / sizeof all_codes[0])

/* Each code's message is the one in the list, word for word. */
static void strerror_matches_the_list(void **state) {
  (void)state;
  for (size_t i = 0; i < N_CODES; i++)
    assert_string_equal(cl_strerror(all_codes[i].code), all_codes[i].msg);
}

/* Each code's name is "CL_E" plus its name in the list. */
static void err_name_matches_the_list(void **state) {
  (void)state;
  for (size_t i = 0; i < N_CODES; i++)
    assert_string_equal(cl_err_name(all_codes[i].code), all_codes[i].name);
}

/* The enum constants carry the values of the list, and spot checks of a few
 * by their enum names guard against the list and the enum drifting apart. */
static void enum_values_match(void **state) {
  (void)state;
  assert_int_equal(CL_EINVAL, -1001);
  assert_int_equal(CL_ELEASE_LOST, -1007);
  assert_int_equal(CL_EDSN, -1015);
  assert_string_equal(cl_err_name(CL_ELEASE_LOST), "CL_ELEASE_LOST");
  assert_string_equal(cl_strerror(CL_ELEASE_LOST), "lease lost");
  assert_string_equal(cl_err_name(CL_EJSON), "CL_EJSON");
  assert_string_equal(cl_strerror(CL_ENOMEM), "out of memory");
}

/* Our codes live below -1000 (clear of errno values) and no two share a
 * value, a name or a message. */
static void codes_are_distinct_and_below_errno(void **state) {
  (void)state;
  assert_true(N_CODES >= 15);
  for (size_t i = 0; i < N_CODES; i++) {
    assert_true(all_codes[i].code < -1000);
    for (size_t j = i + 1; j < N_CODES; j++) {
      assert_int_not_equal(all_codes[i].code, all_codes[j].code);
      assert_string_not_equal(all_codes[i].name, all_codes[j].name);
      assert_string_not_equal(all_codes[i].msg, all_codes[j].msg);
    }
  }
}

/* Codes nobody defined get the fixed unknown answer, never NULL. */
static void unknown_codes(void **state) {
  (void)state;
  static const int unknown[] = {1,     42,      -1000,   -1018,  -4095,
                                -4096, -999999, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_string_equal(cl_strerror(unknown[i]), "unknown error");
    assert_string_equal(cl_err_name(unknown[i]), "CL_EUNKNOWN");
  }
}

static void zero_is_success(void **state) {
  (void)state;
  assert_string_equal(cl_strerror(0), "success");
  assert_string_equal(cl_err_name(0), "CL_OK");
}

/* A negated errno value (-1..-999) passed through is described as a
 * system error, with the C library's static words when it has them. */
static void errno_values(void **state) {
  (void)state;
  const char *msg = cl_strerror(-ENOENT);
  const char *name = cl_err_name(-ENOENT);
  assert_non_null(msg);
  assert_non_null(name);
  assert_string_not_equal(msg, "unknown error");
  assert_string_not_equal(name, "CL_EUNKNOWN");
  assert_true(strcmp(name, "ENOENT") == 0 || strcmp(name, "CL_ESYSTEM") == 0);
  assert_true(strcmp(msg, "No such file or directory") == 0 ||
              strcmp(msg, "system error") == 0);
  /* The edge of the range (-1..-999), where no errno is defined. */
  assert_string_equal(cl_strerror(-999), "system error");
  assert_string_equal(cl_err_name(-999), "CL_ESYSTEM");
}

/* The strings are static: the same pointer comes back every time, so a
 * caller may keep it without copying. */
static void strings_are_static(void **state) {
  (void)state;
  assert_ptr_equal(cl_strerror(CL_EDB), cl_strerror(CL_EDB));
  assert_ptr_equal(cl_err_name(CL_EDB), cl_err_name(CL_EDB));
  assert_ptr_equal(cl_strerror(12345), cl_strerror(54321));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(strerror_matches_the_list),
      cmocka_unit_test(err_name_matches_the_list),
      cmocka_unit_test(enum_values_match),
      cmocka_unit_test(codes_are_distinct_and_below_errno),
      cmocka_unit_test(unknown_codes),
      cmocka_unit_test(zero_is_success),
      cmocka_unit_test(errno_values),
      cmocka_unit_test(strings_are_static),
  };
  return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
