/*
 * test_home.c: the embedded PostgreSQL's state directory (CLAIMER_HOME)
 * is taken only when it is claimer's to take.  A symbolic link, a
 * directory owned by another user, a file, and a non-empty directory that
 * is not a claimer home are each refused with a message naming the path
 * and the problem, a non-zero exit, and nothing changed (owner, mode and
 * contents of the directory and of a link's target stay as they were).  A
 * new directory becomes a claimer home, and a claimer home is taken again.
 *
 * These run the real `claimer db start` (and `claimer status`, which starts
 * the embedded server when no DSN is given); the last one starts a real
 * embedded PostgreSQL and stops it again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

static char tmpdir[] = "/tmp/claimer-home-XXXXXX";

__attribute__((sentinel)) static int run_home(const char *home, char **out,
                                              ...);

static int group_setup(void **state) {
  (void)state;
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  /* As root the server runs as postgres, which must reach the homes. */
  return chmod(tmpdir, 0755);
}

static int group_teardown(void **state) {
  (void)state;
  /* Stop whatever server a test left running in one of its directories
   * (db stop does nothing where no cluster is). */
  static const char *const dirs[] = {"target",  "empty-target", "nobodys",
                                     "project", "home",         "empty-home"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, dirs[i]);
    char *out = NULL;
    if (run_home(dir, &out, "db", "stop", NULL) != 0)
      fprintf(stderr, "db stop %s: %s", dir, out);
    free(out);
  }
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", tmpdir);
  return 0;
}

/* Runs `claimer ARGS...` with CLAIMER_HOME=home; output in *out. */
__attribute__((sentinel)) static int run_home(const char *home, char **out,
                                              ...) {
  const char *argv[16];
  int n = 0;
  argv[n++] = th_claimer_bin();
  va_list ap;
  va_start(ap, out);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && n < 15)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  setenv("CLAIMER_HOME", home, 1);
  int ex = th_run(argv, NULL, out);
  unsetenv("CLAIMER_HOME");
  return ex;
}

/* What a path looks like: its lstat and, for a directory, its entries
 * (sorted, joined by '/'). */
typedef struct snap {
  struct stat st;
  char entries[1024];
} snap_t;

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void take(const char *path, snap_t *s) {
  memset(s, 0, sizeof *s);
  if (lstat(path, &s->st) != 0)
    fail_msg("lstat %s: %s", path, strerror(errno));
  if (!S_ISDIR(s->st.st_mode))
    return;
  DIR *d = opendir(path);
  assert_non_null(d);
  char *names[64];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < 64)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      names[n++] = strdup(e->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], cmp_str);
  for (int i = 0; i < n; i++) {
    strncat(s->entries, names[i], sizeof s->entries - strlen(s->entries) - 2);
    strcat(s->entries, "/");
    free(names[i]);
  }
}

static void assert_same(const char *path, const snap_t *before) {
  snap_t now;
  take(path, &now);
  if (now.st.st_mode != before->st.st_mode ||
      now.st.st_uid != before->st.st_uid ||
      now.st.st_gid != before->st.st_gid ||
      strcmp(now.entries, before->entries) != 0)
    fail_msg("%s changed: mode %o -> %o, owner %u:%u -> %u:%u, entries "
             "\"%s\" -> \"%s\"",
             path, (unsigned)before->st.st_mode, (unsigned)now.st.st_mode,
             (unsigned)before->st.st_uid, (unsigned)before->st.st_gid,
             (unsigned)now.st.st_uid, (unsigned)now.st.st_gid, before->entries,
             now.entries);
}

static void assert_contains(const char *out, const char *want) {
  if (strstr(out, want) == NULL)
    fail_msg("output lacks \"%s\":\n%s", want, out);
}

static void make_dir(const char *path, mode_t mode) {
  if (mkdir(path, mode) != 0)
    fail_msg("mkdir %s: %s", path, strerror(errno));
  assert_int_equal(chmod(path, mode), 0);
}

static void make_file(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  close(fd);
}

/* Runs both `db start` and `status` (which would start the embedded
 * server) on home; both must fail naming home and why. */
static void expect_refused(const char *home, const char *why) {
  char *out = NULL;
  int ex = run_home(home, &out, "db", "start", NULL);
  if (ex == 0)
    fail_msg("db start took %s: %s", home, out);
  assert_contains(out, home);
  assert_contains(out, why);
  free(out);
  ex = run_home(home, &out, "status", NULL);
  if (ex == 0)
    fail_msg("status took %s: %s", home, out);
  assert_contains(out, home);
  assert_contains(out, why);
  free(out);
}

/* CLAIMER_HOME a symbolic link to a non-empty directory (the issue: root's
 * own, which claimer chowned to postgres, mode 0700), and one to an empty
 * directory: refused, the link and its target unchanged. */
static void test_symlink(void **state) {
  (void)state;
  char target[256], keep[300], link[256], empty[256], link2[256];
  snprintf(target, sizeof target, "%s/target", tmpdir);
  snprintf(keep, sizeof keep, "%s/keep", target);
  snprintf(link, sizeof link, "%s/link", tmpdir);
  make_dir(target, 0755);
  make_file(keep);
  assert_int_equal(symlink(target, link), 0);
  snap_t t, l;
  take(target, &t);
  take(link, &l);
  expect_refused(link, "symbolic link");
  assert_same(target, &t);
  assert_same(link, &l);

  snprintf(empty, sizeof empty, "%s/empty-target", tmpdir);
  snprintf(link2, sizeof link2, "%s/link-to-empty", tmpdir);
  make_dir(empty, 0755);
  assert_int_equal(symlink(empty, link2), 0);
  take(empty, &t);
  expect_refused(link2, "symbolic link");
  assert_same(empty, &t);
}

/* A directory owned by another user (not the caller, not root): refused,
 * its owner and mode unchanged. */
static void test_other_owner(void **state) {
  (void)state;
  if (geteuid() != 0) {
    print_message("skipped: making a directory owned by another user needs "
                  "root\n");
    skip();
  }
  char dir[256];
  snprintf(dir, sizeof dir, "%s/nobodys", tmpdir);
  make_dir(dir, 0755);
  assert_int_equal(chown(dir, 65534, 65534), 0);
  snap_t s;
  take(dir, &s);
  expect_refused(dir, "owned by uid 65534");
  assert_same(dir, &s);
}

/* A non-empty directory that is not a claimer home, and a plain file:
 * refused, unchanged. */
static void test_not_a_home(void **state) {
  (void)state;
  char dir[256], notes[300], file[256];
  snprintf(dir, sizeof dir, "%s/project", tmpdir);
  snprintf(notes, sizeof notes, "%s/notes.txt", dir);
  make_dir(dir, 0755);
  make_file(notes);
  snap_t s;
  take(dir, &s);
  expect_refused(dir, "not a claimer home");
  assert_same(dir, &s);

  snprintf(file, sizeof file, "%s/a-file", tmpdir);
  make_file(file);
  take(file, &s);
  expect_refused(file, "not a directory");
  assert_same(file, &s);
}

/* A new directory becomes a claimer home, which is taken again, stopped
 * or running; the claimer home it made is recognised. */
static void test_new_home(void **state) {
  (void)state;
  char home[256];
  snprintf(home, sizeof home, "%s/home", tmpdir);
  char *out = NULL;
  int ex = run_home(home, &out, "db", "start", NULL);
  if (ex != 0)
    fail_msg("db start on a new home exited %d: %s", ex, out);
  assert_contains(out, "created and started");
  free(out);
  ex = run_home(home, &out, "db", "start", NULL);
  if (ex != 0)
    fail_msg("db start again exited %d: %s", ex, out);
  assert_contains(out, "already running");
  free(out);
  ex = run_home(home, &out, "db", "stop", NULL);
  if (ex != 0)
    fail_msg("db stop exited %d: %s", ex, out);
  free(out);
  ex = run_home(home, &out, "status", NULL);
  if (ex != 0)
    fail_msg("status on a stopped home exited %d: %s", ex, out);
  free(out);
  ex = run_home(home, &out, "db", "stop", NULL);
  if (ex != 0)
    fail_msg("db stop exited %d: %s", ex, out);
  free(out);
  /* An empty directory of the caller's is taken too. */
  char empty[256];
  snprintf(empty, sizeof empty, "%s/empty-home", tmpdir);
  make_dir(empty, 0755);
  ex = run_home(empty, &out, "db", "start", NULL);
  if (ex != 0)
    fail_msg("db start on an empty directory exited %d: %s", ex, out);
  free(out);
  ex = run_home(empty, &out, "db", "stop", NULL);
  assert_int_equal(ex, 0);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_symlink),
      cmocka_unit_test(test_other_owner),
      cmocka_unit_test(test_not_a_home),
      cmocka_unit_test(test_new_home),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("home", tests, group_setup,
                                     group_teardown);
}
