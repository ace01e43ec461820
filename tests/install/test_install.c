/*
 * test_install.c: libclaimer as a program outside this tree sees it.  The
 * build is installed into a scratch directory (meson install --destdir),
 * and then:
 *   - the shared object needs neither libyaml nor libcurl, and exports no
 *     configuration, log or internal (cl__) symbol: those belong to the
 *     programs' side (workers/support), not the library;
 *   - enqueue.c, ten lines that include <claimer/claimer.h>, builds with
 *     nothing but `pkg-config --cflags --libs claimer` against the
 *     installed header and library, and enqueues an item into a real
 *     database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static char destdir[700];

/* Runs a shell script; returns its status, its output in *out. */
static int sh(const char *script, char **out) {
  const char *argv[] = {"/bin/sh", "-c", script, NULL};
  return th_run(argv, NULL, out);
}

/* Installs the build once per program into destdir. */
static int install_setup(void **state) {
  (void)state;
  if (th_group_setup(state) != 0)
    return -1;
  snprintf(destdir, sizeof destdir, "%s/destdir", th_pg.dir);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "meson install -C '%s' --destdir '%s' --no-rebuild --quiet "
           "&& find '%s' -name claimer.pc | grep -q .",
           getenv("CLAIMER_BUILD_ROOT"), destdir, destdir);
  char *out = NULL;
  int rc = sh(cmd, &out);
  if (rc != 0)
    fprintf(stderr, "meson install failed (%d):\n%s\n", rc, out);
  free(out);
  return rc == 0 ? 0 : -1;
}

static int install_teardown(void **state) { return th_group_teardown(state); }

/* The installed shared object's dependencies and exported symbols. */
static void test_library_boundary(void **state) {
  (void)state;
  char cmd[2048], *out = NULL;
  snprintf(cmd, sizeof cmd,
           "so=$(find '%s' -name 'libclaimer.so.0' | head -1) && "
           "echo \"so: $so\" && ldd \"$so\" && "
           "echo exported: $(nm -D --defined-only \"$so\" | wc -l) && "
           "nm -D --defined-only \"$so\" | awk '{print $3}' | "
           "grep -E '^(cl_config|cl_log|cl__|cl_embedded)' | "
           "sed 's/^/bad symbol: /'; true",
           destdir);
  assert_int_equal(sh(cmd, &out), 0);
  fputs(out, stdout);
  assert_non_null(strstr(out, "libpq.so"));
  assert_null(strstr(out, "libyaml"));
  assert_null(strstr(out, "libcurl"));
  assert_null(strstr(out, "bad symbol:"));
  free(out);
}

/* enqueue.c built through pkg-config alone, run against a database. */
static void test_pkg_config_program(void **state) {
  (void)state;
  char dsn[1024];
  assert_int_equal(th_db_create(&th_pg, "install", 1, dsn, sizeof dsn), 0);
  char cmd[4096], *out = NULL;
  snprintf(cmd, sizeof cmd,
           "set -e; cd '%s'; pc=$(find . -name claimer.pc | head -1); "
           "export PKG_CONFIG_PATH=\"$PWD/$(dirname \"$pc\")\"; "
           "flags=$(pkg-config --define-variable=prefix=\"$PWD/usr/local\" "
           "--cflags --libs claimer); echo \"flags: $flags\"; "
           "cc -std=c11 -Wall -Werror -o enqueue '%s' $flags; "
           "libdir=$(pkg-config --define-variable=prefix=\"$PWD/usr/local\" "
           "--variable=libdir claimer); "
           "LD_LIBRARY_PATH=\"$libdir\" ldd ./enqueue | grep libclaimer; "
           "LD_LIBRARY_PATH=\"$libdir\" ./enqueue '%s' installed-1",
           destdir, getenv("CLAIMER_ENQUEUE_C"), dsn);
  int rc = sh(cmd, &out);
  fputs(out, stdout);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "enqueued 1: "));
  /* It ran against the installed library, not the build tree's. */
  assert_non_null(strstr(out, destdir));
  free(out);
  PGconn *pg = th_connect(dsn);
  assert_int_equal(th_long(pg, "SELECT count(*) FROM claimer.items WHERE "
                               "item_id = 'installed-1' AND queue = "
                               "'installed'"),
                   1);
  PQfinish(pg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_library_boundary),
      cmocka_unit_test(test_pkg_config_program),
  };
  th_filter_from_env();
  return cmocka_run_group_tests_name("install", tests, install_setup,
                                     install_teardown);
}
