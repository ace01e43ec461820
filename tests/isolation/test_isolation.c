/*
 * test_isolation.c: the protocol's races, step by step, through
 * PostgreSQL's own isolationtester.  Each spec (specs/NAME.spec.in) pins
 * one race of the protocol: sessions stand for workers, reapers,
 * producers and senders, and its permutations interleave their
 * statements, including the ones where one waits on another's lock.  The
 * statements are the library's own: the template names them by id
 * (@STMT:COMPLETE@) and this program puts in the text of
 * cl__stmts[CL__STMT_COMPLETE] from claimer/sql.c, so a spec cannot drift
 * from what the library sends.  @INCLUDE:FILE@ pastes in a file of
 * specs/ (the wrappers of common.sql, the teardown of reset.sql).
 *
 * Each spec runs on a fresh migrated database of the harness's server;
 * the output must equal expected/NAME.out, or a unified diff is printed.
 * The generated spec and the output are kept in the build directory
 * (tests/isolation/specs/ and results/) for a look after a failure.
 *
 * One line per spec, then "isolation: 10 specs, N permutations passed".
 * CLAIMER_TEST_FILTER=NAME runs one spec (the cmocka test of that name).
 * CLAIMER_ISOLATION_ACCEPT=1 writes each output over its expected file
 * instead of comparing.  Read every file it wrote before committing it:
 * an expected file that shows a bug is worse than none.
 * CLAIMER_ISOLATIONTESTER names the isolationtester binary; by default it
 * is found under `pg_config --pkglibdir`/pgxs/src/test/isolation/.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "sql.h"

#ifndef ISO_SRCDIR
#error "ISO_SRCDIR must name tests/isolation in the source tree"
#endif
#ifndef ISO_BUILDDIR
#error "ISO_BUILDDIR must name tests/isolation in the build tree"
#endif

/* The specs, in the order of the races in the protocol's life. */
static const char *const spec_names[] = {
    "claim_claim",     "claim_complete", "complete_reap", "many_reap",
    "heartbeat_reap",  "fail_reap",      "reap_reap",     "enqueue_retain",
    "dclaim_retain",   "dclaim_dclaim",  "dsent_dclaim",  "replay_retain",
    "complete_dclaim",
};
enum { NSPECS = sizeof spec_names / sizeof spec_names[0] };

static const struct {
  const char *name;
  cl__stmt_id_t id;
} stmt_ids[] = {
#define ISO_STMT_ID(name, nparams) {#name, CL__STMT_##name},
    CL__STMT_MAP(ISO_STMT_ID)
#undef ISO_STMT_ID
};

/* What the run saw, for the summary line. */
static int specs_run, specs_passed, perms_run, perms_passed;
static char tester[1024];

/* ------------------------------------------------------------------------ */
/* A growing string                                                          */

typedef struct buf {
  char *s;
  size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->s, cap);
    assert_non_null(p);
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

/* The whole file at path (malloc'd), or NULL when it cannot be read. */
static char *slurp(const char *path) {
  if (access(path, R_OK) != 0)
    return NULL;
  return th_read_file(path);
}

static void spill(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    fail_msg("cannot write %s: %s", path, strerror(errno));
  fputs(text, f);
  if (fclose(f) != 0)
    fail_msg("cannot write %s: %s", path, strerror(errno));
}

/* ------------------------------------------------------------------------ */
/* The template                                                              */

/* The statement named name (len bytes), or -1. */
static int stmt_by_name(const char *name, size_t len) {
  for (size_t i = 0; i < sizeof stmt_ids / sizeof stmt_ids[0]; i++)
    if (strlen(stmt_ids[i].name) == len &&
        memcmp(stmt_ids[i].name, name, len) == 0)
      return (int)stmt_ids[i].id;
  return -1;
}

/* Appends sql as a standard SQL string literal.  The isolation tester ends
 * a block at the first brace, so a statement holding one cannot go into a
 * spec: that fails the test rather than cutting it silently. */
static void add_literal(buf_t *out, const char *stmt, const char *sql) {
  if (strpbrk(sql, "{}") != NULL)
    fail_msg("statement %s holds a brace: a spec block cannot carry it", stmt);
  buf_str(out, "'");
  for (const char *p = sql; *p; p++) {
    if (*p == '\'')
      buf_str(out, "'");
    buf_add(out, p, 1);
  }
  buf_str(out, "'");
}

/* Expands the template text (from file from, for messages) into out:
 * @STMT:NAME@ becomes the text of cl__stmts[CL__STMT_NAME] as a literal,
 * @INCLUDE:FILE@ the file specs/FILE, expanded in turn.  Any other '@'
 * stays.  An unknown statement or file fails the test. */
static void expand(buf_t *out, const char *text, const char *from, int depth) {
  if (depth > 3)
    fail_msg("%s: @INCLUDE@ nested too deep", from);
  const char *p = text;
  for (;;) {
    const char *at = strchr(p, '@');
    if (at == NULL) {
      buf_str(out, p);
      return;
    }
    buf_add(out, p, (size_t)(at - p));
    int is_stmt = strncmp(at, "@STMT:", 6) == 0;
    int is_incl = strncmp(at, "@INCLUDE:", 9) == 0;
    const char *name = at + (is_stmt ? 6 : 9);
    const char *end = (is_stmt || is_incl) ? strchr(name, '@') : NULL;
    if (end == NULL || memchr(name, '\n', (size_t)(end - name)) != NULL) {
      buf_add(out, at, 1);
      p = at + 1;
      continue;
    }
    size_t len = (size_t)(end - name);
    if (is_stmt) {
      int id = stmt_by_name(name, len);
      if (id < 0)
        fail_msg("%s: no statement %.*s in cl__stmts", from, (int)len, name);
      add_literal(out, stmt_ids[id].name, cl__stmts[id].sql);
    } else {
      char path[1024];
      snprintf(path, sizeof path, "%s/specs/%.*s", ISO_SRCDIR, (int)len, name);
      char *inc = slurp(path);
      if (inc == NULL)
        fail_msg("%s: cannot read %s", from, path);
      expand(out, inc, path, depth + 1);
      free(inc);
    }
    p = end + 1;
  }
}

/* ------------------------------------------------------------------------ */
/* The output                                                                */

/* The permutations of an isolationtester output: pointers to each
 * "starting permutation:" line, at most max; returns how many. */
static int permutations(const char *out, const char **at, int max) {
  int n = 0;
  for (const char *p = strstr(out, "starting permutation:"); p && n < max;
       p = strstr(p + 1, "starting permutation:"))
    at[n++] = p;
  return n;
}

/* How many permutations of got are the same as expected's (counted by
 * position: a permutation left out or added changes all after it). */
static int same_permutations(const char *expected, const char *got) {
  enum { MAXP = 256 };
  const char *e[MAXP], *g[MAXP];
  int ne = permutations(expected, e, MAXP), ng = permutations(got, g, MAXP);
  int same = 0;
  for (int i = 0; i < ne && i < ng; i++) {
    size_t le = (i + 1 < ne ? e[i + 1] : e[i] + strlen(e[i])) - e[i];
    size_t lg = (i + 1 < ng ? g[i + 1] : g[i] + strlen(g[i])) - g[i];
    if (le == lg && memcmp(e[i], g[i], le) == 0)
      same++;
  }
  return same;
}

/* ------------------------------------------------------------------------ */
/* The isolation tester                                                      */

/* Finds the isolationtester binary into tester; returns 0, or -1 with the
 * reason in why. */
static int find_tester(char *why, size_t n) {
  const char *env = getenv("CLAIMER_ISOLATIONTESTER");
  if (env != NULL && *env) {
    snprintf(tester, sizeof tester, "%s", env);
  } else {
    char dir[800] = "";
    FILE *p = popen("pg_config --pkglibdir 2>/dev/null", "r");
    if (p != NULL) {
      if (fgets(dir, sizeof dir, p) == NULL)
        dir[0] = '\0';
      pclose(p);
    }
    dir[strcspn(dir, "\n")] = '\0';
    if (dir[0] == '\0' && th_pg.bindir[0] != '\0')
      snprintf(dir, sizeof dir, "%s/../lib", th_pg.bindir);
    snprintf(tester, sizeof tester,
             "%s/pgxs/src/test/isolation/isolationtester", dir);
  }
  if (access(tester, X_OK) != 0) {
    snprintf(why, n,
             "no isolationtester at %s (Debian: postgresql-server-dev-15; "
             "or set CLAIMER_ISOLATIONTESTER)",
             tester);
    return -1;
  }
  return 0;
}

static void run_spec(void **state) {
  const char *name = *state;
  char why[1200];
  if (find_tester(why, sizeof why) != 0)
    th_skip(why);
  specs_run++;
  double t0 = th_now();

  char path[1024];
  snprintf(path, sizeof path, "%s/specs/%s.spec.in", ISO_SRCDIR, name);
  char *tmpl = slurp(path);
  if (tmpl == NULL)
    fail_msg("cannot read %s", path);
  buf_t spec = {0};
  expand(&spec, tmpl, path, 0);
  free(tmpl);
  if (strstr(spec.s, "@STMT:") != NULL)
    fail_msg("%s: a placeholder is left after expansion", name);
  mkdir(ISO_BUILDDIR "/specs", 0755);
  mkdir(ISO_BUILDDIR "/results", 0755);
  char spec_path[1024], out_path[1024], exp_path[1024];
  snprintf(spec_path, sizeof spec_path, "%s/specs/%s.spec", ISO_BUILDDIR, name);
  snprintf(out_path, sizeof out_path, "%s/results/%s.out", ISO_BUILDDIR, name);
  snprintf(exp_path, sizeof exp_path, "%s/expected/%s.out", ISO_SRCDIR, name);
  spill(spec_path, spec.s);

  char db[64], dsn[1024];
  snprintf(db, sizeof db, "iso_%s", name);
  assert_int_equal(th_db_create(&th_pg, db, 1, dsn, sizeof dsn), 0);
  const char *argv[] = {tester, dsn, NULL};
  char *out = NULL;
  int rc = th_run(argv, spec.s, &out);
  free(spec.s);
  spill(out_path, out);

  const char *at[256];
  int n = permutations(out, at, 256);
  if (getenv("CLAIMER_ISOLATION_ACCEPT") != NULL &&
      strcmp(getenv("CLAIMER_ISOLATION_ACCEPT"), "1") == 0) {
    perms_run += n;
    spill(exp_path, out);
    print_message("isolation: %-15s %2d permutations written to %s "
                  "(read it: does it show what the spec claims?)\n",
                  name, n, exp_path);
    specs_passed++;
    perms_passed += n;
    free(out);
    return;
  }
  char *expected = slurp(exp_path);
  if (expected == NULL) {
    free(out);
    fail_msg("%s: no expected output %s (CLAIMER_ISOLATION_ACCEPT=1 writes "
             "it; then read it)",
             name, exp_path);
  }
  int same = same_permutations(expected, out);
  int want = permutations(expected, at, 256);
  perms_run += want;
  perms_passed += same;
  if (rc == 0 && strcmp(expected, out) == 0) {
    specs_passed++;
    print_message("isolation: %-15s %2d permutations ok (%.1f s)\n", name, n,
                  th_now() - t0);
    free(expected);
    free(out);
    return;
  }
  print_message("isolation: %-15s %2d of %d permutations as expected: "
                "FAILED (%.1f s)\n",
                name, same, want, th_now() - t0);
  const char *diff[] = {"diff", "-u", exp_path, out_path, NULL};
  char *d = NULL;
  th_run(diff, NULL, &d);
  /* Straight to stderr: cmocka's print_error() cuts long messages. */
  fflush(stdout);
  fprintf(stderr,
          "isolation: %s: isolationtester exited %d; diff -u %s %s:\n%s\n",
          name, rc, exp_path, out_path, d);
  fflush(stderr);
  free(d);
  free(expected);
  free(out);
  fail_msg("%s: the output is not the expected one", name);
}

static int group_teardown(void **state) {
  if (specs_run > 0 && specs_passed == specs_run && perms_passed == perms_run)
    print_message("isolation: %d specs, %d permutations passed\n", specs_run,
                  perms_passed);
  else if (specs_run > 0)
    print_message("isolation: %d specs (%d failed), %d of %d permutations "
                  "passed: see the diffs above\n",
                  specs_run, specs_run - specs_passed, perms_passed, perms_run);
  return th_group_teardown(state);
}

/* Every template in specs/ is in spec_names, so none is left out of the
 * run by mistake. */
static void every_template_listed(void **state) {
  (void)state;
  DIR *d = opendir(ISO_SRCDIR "/specs");
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    size_t len = strlen(e->d_name);
    if (len <= 8 || strcmp(e->d_name + len - 8, ".spec.in") != 0)
      continue;
    int listed = 0;
    for (int i = 0; i < NSPECS; i++)
      listed |= strlen(spec_names[i]) == len - 8 &&
                strncmp(spec_names[i], e->d_name, len - 8) == 0;
    if (!listed) {
      closedir(d);
      fail_msg("specs/%s is not in spec_names of test_isolation.c", e->d_name);
    }
  }
  closedir(d);
}

int main(void) {
  struct CMUnitTest tests[NSPECS + 1];
  tests[0] = (struct CMUnitTest){.name = "every_template_listed",
                                 .test_func = every_template_listed};
  for (int i = 0; i < NSPECS; i++) {
    tests[i + 1] = (struct CMUnitTest){.name = spec_names[i],
                                       .test_func = run_spec,
                                       .initial_state = (void *)spec_names[i]};
  }
  /* A step that waits on something no other session will release ends
   * its spec in a minute instead of the tester's default six. */
  setenv("PGISOLATIONTIMEOUT", "60", 1);
  th_filter_from_env();
  return cmocka_run_group_tests_name("isolation", tests, th_group_setup,
                                     group_teardown);
}
