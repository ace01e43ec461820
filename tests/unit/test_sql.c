/*
 * test_sql.c: the statement table of sql.c against its list in sql.h.
 * Each statement's parameter count is written twice (the XX list and the
 * table) and once more implicitly (the highest $N its text uses); a
 * mismatch would bind the wrong values or fail at prepare time on the
 * first use only.  The prepared-statement bitmap of a connection is a
 * uint64_t, so the table must fit in 64.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sql.h"

_Static_assert(CL__STMT_COUNT <= 64,
               "the prepared bitmap of a connection holds 64 statements");

static const int listed[] = {
#define COUNT_OF(name, nparams) nparams,
    CL__STMT_MAP(COUNT_OF)
#undef COUNT_OF
};

/* The highest $N in sql (0 when none). */
static int highest_param(const char *sql) {
  int hi = 0;
  for (const char *p = strchr(sql, '$'); p; p = strchr(p + 1, '$')) {
    int n = atoi(p + 1);
    hi = n > hi ? n : hi;
  }
  return hi;
}

static void counts_agree(void **state) {
  (void)state;
  assert_int_equal(sizeof listed / sizeof listed[0], CL__STMT_COUNT);
  for (int i = 0; i < CL__STMT_COUNT; i++) {
    const cl__stmt_t *s = &cl__stmts[i];
    assert_non_null(s->name);
    assert_non_null(s->sql);
    if (s->nparams != listed[i] || highest_param(s->sql) != s->nparams)
      fail_msg("%s: the list says %d parameters, the table %d, its text "
               "uses up to $%d",
               s->name, listed[i], s->nparams, highest_param(s->sql));
  }
}

static void names_unique(void **state) {
  (void)state;
  for (int i = 0; i < CL__STMT_COUNT; i++)
    for (int j = i + 1; j < CL__STMT_COUNT; j++)
      assert_string_not_equal(cl__stmts[i].name, cl__stmts[j].name);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(counts_agree),
      cmocka_unit_test(names_unique),
  };
  return cmocka_run_group_tests_name("sql", tests, NULL, NULL);
}
