/*
 * test_config.c: unit tests of the configuration module (config.c): the
 * defaults, the YAML loader and every message it gives for a bad file (each
 * checked word for word, with its line and column), the CLAIMER_*
 * environment, cl_config_set() as the flags use it, the checks between keys,
 * the printer, whose output must load back to the same values, and the
 * reaper's section (nested maps, per-queue SLAs, the hook URL, the queue
 * retry policy and whether one was given), and the subscribers: section
 * (its records, every bad field at its node, file only, printed masked).
 * Files
 * that must exist on disk (the size cap, a missing file) go into a mkdtemp
 * directory made by the group fixture; everything else is loaded from
 * strings.  Where a message must not show a password the test looks for its
 * absence explicitly.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "config.h"

#define ERRLEN 1024

#define assert_contains(hay, needle)                                           \
  do {                                                                         \
    const char *hay_ = (hay), *needle_ = (needle);                             \
    if (strstr(hay_, needle_) == NULL)                                         \
      fail_msg("\"%s\" does not contain \"%s\"", hay_, needle_);               \
  } while (0)

#define assert_not_contains(hay, needle)                                       \
  do {                                                                         \
    const char *hay_ = (hay), *needle_ = (needle);                             \
    if (strstr(hay_, needle_) != NULL)                                         \
      fail_msg("\"%s\" contains \"%s\"", hay_, needle_);                       \
  } while (0)

/* The group's scratch directory. */
typedef struct fixture {
  char dir[64];
} fixture_t;

static int group_setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/test_config.XXXXXX");
  if (mkdtemp(f->dir) == NULL) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int group_teardown(void **state) {
  fixture_t *f = *state;
  char path[128];
  snprintf(path, sizeof path, "%s/big.yaml", f->dir);
  unlink(path);
  rmdir(f->dir);
  free(f);
  return 0;
}

/* The variables a test may set; cleared before and after each test so that
 * one test's environment never leaks into the next (or comes from the
 * shell that runs the tests). */
static const char *const env_vars[] = {
    "CLAIMER_DSN",
    "CLAIMER_LOG_FORMAT",
    "CLAIMER_LOG_LEVEL",
    "CLAIMER_WORKER_NAME",
    "CLAIMER_WORKER_QUEUES",
    "CLAIMER_WORKER_CONCURRENCY",
    "CLAIMER_WORKER_LEASE",
    "CLAIMER_WORKER_HEARTBEAT",
    "CLAIMER_WORKER_POLL_INTERVAL",
    "CLAIMER_WORKER_COMMAND",
    "CLAIMER_WORKER_TIMEOUT",
    "CLAIMER_WORKER_RESULT_MAX",
    "CLAIMER_WORKER_STDERR_MAX",
    "CLAIMER_WORKER_DRAIN_TIMEOUT",
    "CLAIMER_WORKER_KILL_GRACE",
    "CLAIMER_WORKER_PREFETCH",
    "CLAIMER_REAPER_INTERVAL",
    "CLAIMER_REAPER_BATCH",
    "CLAIMER_REAPER_WORKER_LOST_AFTER",
    "CLAIMER_REAPER_SLA",
    "CLAIMER_REAPER_QUEUE_SLA",
    "CLAIMER_REAPER_MAX_ATTEMPTS",
    "CLAIMER_REAPER_BACKOFF",
    "CLAIMER_REAPER_BACKOFF_MAX",
    "CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS",
    "CLAIMER_REAPER_QUEUE_BACKOFF",
    "CLAIMER_REAPER_RETENTION_DONE",
    "CLAIMER_REAPER_RETENTION_DEAD",
    "CLAIMER_REAPER_RETENTION_ALERTS",
    "CLAIMER_REAPER_RETENTION_WORKERS",
    "CLAIMER_REAPER_HOOK_EXEC",
    "CLAIMER_REAPER_HOOK_URL",
    "CLAIMER_REAPER_HOOK_TIMEOUT",
    "CLAIMER_REAPER_HOOK_MAX_ATTEMPTS",
    "CLAIMER_HOME",
    "CLAIMER_TEST_DSN",
    "CLAIMER_ITEM_ID",
};

static int clear_env(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
    unsetenv(env_vars[i]);
  return 0;
}

/* Loads yaml (as "cfg.yaml") over a fresh default config, expects it to
 * fail, and checks the message word for word.  The config must come out
 * as it went in: all defaults. */
static void expect_error(const char *yaml, const char *message) {
  cl_config_t cfg;
  char err[ERRLEN] = "";
  cl_config_init(&cfg);
  int rc = cl_config_load_string(&cfg, yaml, strlen(yaml), "cfg.yaml", err,
                                 sizeof err);
  if (rc != CL_ECONFIG)
    fail_msg("rc %d (%s) for:\n%s", rc, err, yaml);
  assert_string_equal(err, message);
  assert_int_equal(cfg.worker.concurrency, 8);
  assert_null(cfg.dsn);
  assert_int_equal(cfg.worker.nqueues, 0);
  assert_true(cfg.reaper.interval_s == 5);
  assert_int_equal(cfg.reaper.nqueue_sla, 0);
  assert_null(cfg.reaper.hook.url);
  assert_int_equal(cfg.nsubscribers, 0);
  assert_string_equal(cl_config_origin(&cfg, "worker.concurrency"), "default");
  cl_config_free(&cfg);
}

/* Loads yaml (as "cfg.yaml") into cfg, which must succeed. */
static void load_ok(cl_config_t *cfg, const char *yaml) {
  char err[ERRLEN] = "";
  int rc = cl_config_load_string(cfg, yaml, strlen(yaml), "cfg.yaml", err,
                                 sizeof err);
  if (rc != 0)
    fail_msg("rc %d: %s", rc, err);
}

/* ------------------------------------------------------------------------ */
/* Defaults and a full file                                                  */

static void defaults(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_null(cfg.dsn);
  assert_int_equal(cfg.log_format, CL_LOG_LOGFMT);
  assert_int_equal(cfg.log_level, CL_LEVEL_INFO);
  assert_null(cfg.worker.name);
  assert_null(cfg.worker.queues);
  assert_int_equal(cfg.worker.nqueues, 0);
  assert_int_equal(cfg.worker.concurrency, 8);
  assert_true(cfg.worker.lease_s == 30);
  assert_true(cfg.worker.heartbeat_s == 0);
  assert_true(cfg.worker.poll_s == 2);
  assert_null(cfg.worker.command);
  assert_true(cfg.worker.timeout_s == 300);
  assert_int_equal(cfg.worker.result_max, 1048576);
  assert_int_equal(cfg.worker.stderr_max, 4096);
  assert_true(cfg.worker.drain_s == 30);
  assert_true(cfg.worker.kill_grace_s == 5);
  assert_int_equal(cfg.worker.prefetch, 0);
  assert_true(cl_config_heartbeat_s(&cfg) == 10);
  assert_int_equal(cl_config_prefetch(&cfg), -1); /* automatic */
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_string_equal(cl_config_origin(&cfg, "worker.lease"), "default");
  assert_null(cl_config_origin(&cfg, "worker.nope"));
  cl_config_free(&cfg);
  cl_config_free(NULL);
}

static const char full_yaml[] = "dsn: \"postgresql://user:secret@db1/claims\"\n"
                                "log:\n"
                                "  format: json   # or logfmt\n"
                                "  level: debug\n"
                                "worker:\n"
                                "  name: web-1\n"
                                "  queues:\n"
                                "    - emails\n"
                                "    - name: payments\n"
                                "      weight: 3\n"
                                "  concurrency: 16\n"
                                "  lease: 45s\n"
                                "  heartbeat: 10s\n"
                                "  poll_interval: 250ms\n"
                                "  command: \"./handler.sh --flag\"\n"
                                "  timeout: 5m\n"
                                "  result_max: 64KiB\n"
                                "  stderr_max: 4KB\n"
                                "  drain_timeout: 1h\n"
                                "  kill_grace: 1.5\n"
                                "  prefetch: 2\n";

static void full_file(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, full_yaml);
  assert_string_equal(cfg.dsn, "postgresql://user:secret@db1/claims");
  assert_int_equal(cfg.log_format, CL_LOG_JSON);
  assert_int_equal(cfg.log_level, CL_LEVEL_DEBUG);
  assert_string_equal(cfg.worker.name, "web-1");
  assert_int_equal(cfg.worker.nqueues, 2);
  assert_string_equal(cfg.worker.queues[0].name, "emails");
  assert_int_equal(cfg.worker.queues[0].weight, 1);
  assert_string_equal(cfg.worker.queues[1].name, "payments");
  assert_int_equal(cfg.worker.queues[1].weight, 3);
  assert_int_equal(cfg.worker.concurrency, 16);
  assert_true(cfg.worker.lease_s == 45);
  assert_true(cfg.worker.heartbeat_s == 10);
  assert_true(cfg.worker.poll_s == 0.25);
  assert_string_equal(cfg.worker.command, "./handler.sh --flag");
  assert_true(cfg.worker.timeout_s == 300);
  assert_int_equal(cfg.worker.result_max, 65536);
  assert_int_equal(cfg.worker.stderr_max, 4000);
  assert_true(cfg.worker.drain_s == 3600);
  assert_true(cfg.worker.kill_grace_s == 1.5);
  assert_int_equal(cfg.worker.prefetch, 2);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_string_equal(cl_config_origin(&cfg, "dsn"), "cfg.yaml:1");
  assert_string_equal(cl_config_origin(&cfg, "worker.queues"), "cfg.yaml:7");
  assert_string_equal(cl_config_origin(&cfg, "worker.prefetch"), "cfg.yaml:21");
  cl_config_free(&cfg);
}

/* A second file only changes what it names. */
static void layered_files(void **state) {
  (void)state;
  cl_config_t cfg;
  cl_config_init(&cfg);
  load_ok(&cfg, full_yaml);
  char err[ERRLEN];
  const char *second = "worker:\n  concurrency: 3\n  name: null\n";
  assert_int_equal(cl_config_load_string(&cfg, second, strlen(second),
                                         "second.yaml", err, sizeof err),
                   0);
  assert_int_equal(cfg.worker.concurrency, 3);
  assert_null(cfg.worker.name);
  assert_true(cfg.worker.lease_s == 45);
  assert_string_equal(cl_config_origin(&cfg, "worker.concurrency"),
                      "second.yaml:2");
  assert_string_equal(cl_config_origin(&cfg, "worker.lease"), "cfg.yaml:12");
  cl_config_free(&cfg);
}

/* Empty input means all defaults, and so do a file of comments, a lone
 * "---", an explicit null document and an empty section. */
static void empty_means_defaults(void **state) {
  (void)state;
  static const char *const texts[] = {
      "", "# nothing here\n\n", "---\n", "~\n", "worker:\nlog: ~\n",
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    cl_config_t cfg;
    cl_config_init(&cfg);
    load_ok(&cfg, texts[i]);
    assert_int_equal(cfg.worker.concurrency, 8);
    assert_string_equal(cl_config_origin(&cfg, "worker.concurrency"),
                        "default");
    cl_config_free(&cfg);
  }
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */

static void unknown_keys(void **state) {
  (void)state;
  expect_error("worker:\n  lease: 30s\n  concurency: 4\n",
               "cfg.yaml:3:3: unknown key \"concurency\" in worker "
               "(did you mean \"concurrency\"?)");
  expect_error("dsn: \"host=x\"\nwroker:\n  lease: 30s\n",
               "cfg.yaml:2:1: unknown key \"wroker\" (did you mean "
               "\"worker\"?)");
  expect_error("log:\n  colour: red\n", "cfg.yaml:2:3: unknown key \"colour\" "
                                        "in log");
  expect_error("foo: 1\n", "cfg.yaml:1:1: unknown key \"foo\"");
  /* A prefix of a key is taken as that key misspelled. */
  expect_error("worker:\n  conc: 4\n",
               "cfg.yaml:2:3: unknown key \"conc\" in worker (did you mean "
               "\"concurrency\"?)");
  /* A dotted key is not a path. */
  expect_error("worker.lease: 30s\n",
               "cfg.yaml:1:1: unknown key \"worker.lease\"");
  /* A key may not be a map or a list. */
  expect_error("? [a, b]\n: 1\n",
               "cfg.yaml:1:3: a key must be a plain string, got a list");
}

static void duplicate_keys(void **state) {
  (void)state;
  expect_error("worker:\n  lease: 30s\n  concurrency: 4\n"
               "  heartbeat: 5s\n  lease: 60s\n",
               "cfg.yaml:5:3: duplicate key \"lease\" in worker (first at "
               "line 2)");
  expect_error("dsn: \"host=a\"\nlog: {}\ndsn: \"host=b\"\n",
               "cfg.yaml:3:1: duplicate key \"dsn\" (first at line 1)");
  /* Even when the section is repeated whole. */
  expect_error("worker:\n  lease: 30s\nworker:\n  poll_interval: 1s\n",
               "cfg.yaml:3:1: duplicate key \"worker\" (first at line 1)");
}

/* ------------------------------------------------------------------------ */
/* Types                                                                     */

static void wrong_types(void **state) {
  (void)state;
  expect_error("worker:\n  lease: 30s\n  name: w\n  concurrency: eight\n",
               "cfg.yaml:4:16: worker.concurrency: expected an integer, got "
               "\"eight\"");
  expect_error("worker:\n  concurrency: {a: 1}\n",
               "cfg.yaml:2:16: worker.concurrency: expected an integer, got "
               "a map");
  expect_error("worker:\n  concurrency: 8.5\n",
               "cfg.yaml:2:16: worker.concurrency: expected an integer, got "
               "\"8.5\"");
  expect_error("worker:\n  concurrency:\n",
               "cfg.yaml:2:15: worker.concurrency: expected an integer, got "
               "nothing");
  expect_error("worker:\n  lease: ~\n",
               "cfg.yaml:2:10: worker.lease: expected a duration, got null");
  expect_error("worker: [a, b]\n",
               "cfg.yaml:1:9: worker: expected a map, got a list");
  expect_error("log: loud\n",
               "cfg.yaml:1:6: log: expected a map, got \"loud\"");
  expect_error("worker:\n  name: [a]\n",
               "cfg.yaml:2:9: worker.name: expected a string, got a list");
  expect_error("worker:\n  command: true\n",
               "cfg.yaml:2:12: worker.command: expected a string, got the "
               "boolean true (quote it to mean the text)");
  expect_error("dsn:\n  host: db1\n",
               "cfg.yaml:2:3: dsn: expected a connection string, got a map");
  expect_error("worker:\n  queues: emails\n",
               "cfg.yaml:2:11: worker.queues: expected a list of queue "
               "names, got \"emails\"");
  expect_error("log:\n  level: warn\n",
               "cfg.yaml:2:10: log.level: expected one of debug, info, "
               "warning, error, got \"warn\" (did you mean \"warning\"?)");
  expect_error("log:\n  format: xml\n",
               "cfg.yaml:2:11: log.format: expected one of logfmt, json, got "
               "\"xml\"");
  /* A quoted "true" is text. */
  cl_config_t cfg;
  cl_config_init(&cfg);
  load_ok(&cfg, "worker:\n  command: \"true\"\n  concurrency: \"12\"\n");
  assert_string_equal(cfg.worker.command, "true");
  assert_int_equal(cfg.worker.concurrency, 12);
  cl_config_free(&cfg);
}

static void ranges(void **state) {
  (void)state;
  expect_error("worker:\n  concurrency: 0\n",
               "cfg.yaml:2:16: worker.concurrency: 0 is out of range "
               "1..10000");
  expect_error("worker:\n  concurrency: 99999999999999999999999\n",
               "cfg.yaml:2:16: worker.concurrency: 99999999999999999999999 is "
               "out of range 1..10000");
  expect_error("worker:\n  prefetch: -1\n",
               "cfg.yaml:2:13: worker.prefetch: -1 is out of range 0..10000");
  expect_error("worker:\n  lease: 0s\n",
               "cfg.yaml:2:10: worker.lease: 0s is out of range 1s..7d");
  /* Issue 9: a lease inside the fencing margin fenced every job. */
  expect_error("worker:\n  lease: 1ms\n",
               "cfg.yaml:2:10: worker.lease: 1ms is out of range 1s..7d");
  expect_error("worker:\n  lease: 169h\n",
               "cfg.yaml:2:10: worker.lease: 169h is out of range 1s..7d");
  expect_error("worker:\n  poll_interval: 5ms\n",
               "cfg.yaml:2:18: worker.poll_interval: 5ms is out of range "
               "10ms..1h");
  expect_error("worker:\n  result_max: 2MiB\n",
               "cfg.yaml:2:15: worker.result_max: 2MiB is out of range "
               "1..1MiB");
  expect_error("worker:\n  result_max: 0\n",
               "cfg.yaml:2:15: worker.result_max: 0 is out of range 1..1MiB");
  expect_error("worker:\n  stderr_max: 65537\n",
               "cfg.yaml:2:15: worker.stderr_max: 65537 is out of range "
               "0..64KiB");
}

static void durations(void **state) {
  (void)state;
  static const char tail[] =
      " is not a duration (a number of seconds >= 0, or a number with ms, "
      "s, m, h or d)";
  static const char *const bad[] = {"-5s", "-5", "5x", "5 s",  "1e3",
                                    ".5",  "5.", "s",  "1h30m"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char yaml[64], msg[256];
    snprintf(yaml, sizeof yaml, "worker:\n  lease: %s\n", bad[i]);
    snprintf(msg, sizeof msg, "cfg.yaml:2:10: worker.lease: \"%s\"%s", bad[i],
             tail);
    expect_error(yaml, msg);
  }
  static const struct {
    const char *text;
    double s;
  } good[] = {{"1.5", 1.5},   {"1250ms", 1.25}, {"30s", 30},     {"5m", 300},
              {"2h", 7200},   {"0.5m", 30},     {"\"10s\"", 10}, {"45", 45},
              {"7d", 604800}, {"0.5d", 43200}};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char yaml[64];
    cl_config_t cfg;
    cl_config_init(&cfg);
    snprintf(yaml, sizeof yaml, "worker:\n  lease: %s\n", good[i].text);
    load_ok(&cfg, yaml);
    if (fabs(cfg.worker.lease_s - good[i].s) > 1e-12)
      fail_msg("%s read as %g", good[i].text, cfg.worker.lease_s);
    cl_config_free(&cfg);
  }
}

static void sizes(void **state) {
  (void)state;
  static const struct {
    const char *text;
    size_t bytes;
  } good[] = {{"100", 100},  {"100B", 100}, {"64KiB", 65536}, {"1MiB", 1048576},
              {"4kB", 4000}, {"4KB", 4000}, {"1MB", 1000000}};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char yaml[64];
    cl_config_t cfg;
    cl_config_init(&cfg);
    snprintf(yaml, sizeof yaml, "worker:\n  result_max: %s\n", good[i].text);
    load_ok(&cfg, yaml);
    assert_int_equal(cfg.worker.result_max, good[i].bytes);
    cl_config_free(&cfg);
  }
  expect_error("worker:\n  result_max: 1.5KiB\n",
               "cfg.yaml:2:15: worker.result_max: \"1.5KiB\" is not a size "
               "(a whole number of bytes, or one with B, KiB, MiB, GiB, kB, "
               "MB or GB)");
  expect_error("worker:\n  stderr_max: 4kib\n",
               "cfg.yaml:2:15: worker.stderr_max: \"4kib\" is not a size (a "
               "whole number of bytes, or one with B, KiB, MiB, GiB, kB, MB "
               "or GB)");
}

/* ------------------------------------------------------------------------ */
/* Strings                                                                   */

static void strings(void **state) {
  (void)state;
  expect_error("worker:\n  command: \"run\\tit\"\n",
               "cfg.yaml:2:12: worker.command: contains a control character "
               "at byte 3");
  expect_error("worker:\n  command: \"\"\n",
               "cfg.yaml:2:12: worker.command: is empty");
  expect_error("worker:\n  name: \"a\\0b\"\n",
               "cfg.yaml:2:9: worker.name: contains a NUL character");
  expect_error("worker:\n  name: \"web\\e[31m\"\n",
               "cfg.yaml:2:9: worker.name: worker name contains a control "
               "character at byte 3");
  /* A C1 control arrives as valid UTF-8 from an escape. */
  expect_error("worker:\n  command: \"a\\x85b\"\n",
               "cfg.yaml:2:12: worker.command: contains a control character "
               "at byte 1");
  /* Raw control characters and bad UTF-8 are libyaml's to refuse. */
  expect_error("worker:\n  name: \"a\x01\"\n",
               "cfg.yaml:2:11: control characters are not allowed (byte "
               "0x01)");
  expect_error("worker:\n  name: \"w\xff\"\n",
               "cfg.yaml:2:11: invalid leading UTF-8 octet (byte 0xff)");
  /* Unknown keys are echoed escaped, never raw. */
  expect_error("worker:\n  \"na\\tme\": x\n",
               "cfg.yaml:2:3: unknown key \"na\\x09me\" in worker (did you "
               "mean \"name\"?)");
  /* Non-ASCII text is fine. */
  cl_config_t cfg;
  cl_config_init(&cfg);
  load_ok(&cfg, "worker:\n  name: \"caf\xc3\xa9-1\"\n");
  assert_string_equal(cfg.worker.name, "caf\xc3\xa9-1");
  cl_config_free(&cfg);
}

static char *print(const cl_config_t *cfg);

/* A handler or hook command may span lines, as `sh -c` runs them: a YAML
 * block (`command: |`), an escaped newline, a variable or a flag.  Other
 * control characters are still refused, a carriage return among them. */
static void command_lines(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, "worker:\n"
                "  command: |\n"
                "    echo one\n"
                "    echo two\n"
                "reaper:\n"
                "  hook:\n"
                "    exec: \"logger a\\nlogger b\"\n");
  assert_string_equal(cfg.worker.command, "echo one\necho two\n");
  assert_string_equal(cfg.reaper.hook.exec, "logger a\nlogger b");
  /* It prints as a string that loads back the same. */
  char *text = print(&cfg);
  cl_config_t back;
  cl_config_init(&back);
  if (cl_config_load_string(&back, text, strlen(text), "printed", err,
                            sizeof err) != 0)
    fail_msg("%s\n%s", err, text);
  assert_string_equal(back.worker.command, cfg.worker.command);
  assert_string_equal(back.reaper.hook.exec, cfg.reaper.hook.exec);
  cl_config_free(&back);
  free(text);
  cl_config_free(&cfg);
  setenv("CLAIMER_WORKER_COMMAND", "cd /tmp\n./run", 1);
  cl_config_init(&cfg);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  assert_string_equal(cfg.worker.command, "cd /tmp\n./run");
  assert_int_equal(cl_config_set(&cfg, "worker.command", "a\nb", "flag --exec",
                                 err, sizeof err),
                   0);
  assert_string_equal(cfg.worker.command, "a\nb");
  cl_config_free(&cfg);
  expect_error("worker:\n  command: \"a\\rb\"\n",
               "cfg.yaml:2:12: worker.command: contains a control character "
               "at byte 1");
  /* Names and other text stay on one line. */
  expect_error("worker:\n  name: \"a\\nb\"\n",
               "cfg.yaml:2:9: worker.name: worker name contains a control "
               "character at byte 1");
}

/* ------------------------------------------------------------------------ */
/* Queues                                                                    */

static void queues(void **state) {
  (void)state;
  expect_error("worker:\n  queues:\n    - emails\n    - \"bad name\"\n",
               "cfg.yaml:4:7: worker.queues[1]: queue name \"bad name\" has a "
               "character not allowed at byte 3 (allowed: letters, digits, "
               "_ . -)");
  expect_error("worker:\n  queues:\n    - emails\n    - name: emails\n",
               "cfg.yaml:4:13: worker.queues[1]: queue \"emails\" is listed "
               "twice (first at line 3)");
  expect_error("worker:\n  queues:\n    - name: payments\n      wieght: 3\n",
               "cfg.yaml:4:7: unknown key \"wieght\" in worker.queues[0] "
               "(did you mean \"weight\"?)");
  expect_error("worker:\n  queues:\n    - weight: 3\n",
               "cfg.yaml:3:7: worker.queues[0]: a queue needs a name (name: "
               "NAME)");
  expect_error("worker:\n  queues:\n    - {name: a, weight: 0}\n",
               "cfg.yaml:3:25: worker.queues[0].weight: 0 is out of range "
               "1..1000");
  expect_error("worker:\n  queues:\n    - {name: a, weight: x}\n",
               "cfg.yaml:3:25: worker.queues[0].weight: expected an integer, "
               "got \"x\"");
  expect_error("worker:\n  queues:\n    - [a]\n",
               "cfg.yaml:3:7: worker.queues[0]: expected a queue name or "
               "{name: N, weight: W}, got a list");
  expect_error("worker:\n  queues:\n    - null\n",
               "cfg.yaml:3:7: worker.queues[0]: expected a queue name or "
               "{name: N, weight: W}, got null");
  expect_error("worker:\n  queues:\n    - {name: a, name: b}\n",
               "cfg.yaml:3:17: duplicate key \"name\" in worker.queues[0] "
               "(first at line 3)");
  /* Numbers are names too; the flow form works. */
  cl_config_t cfg;
  cl_config_init(&cfg);
  load_ok(&cfg, "worker:\n  queues: [2024, {name: \"a.b\", weight: 1000}]\n");
  assert_int_equal(cfg.worker.nqueues, 2);
  assert_string_equal(cfg.worker.queues[0].name, "2024");
  assert_string_equal(cfg.worker.queues[1].name, "a.b");
  assert_int_equal(cfg.worker.queues[1].weight, 1000);
  cl_config_free(&cfg);
  /* ':' is no part of a name, in YAML either. */
  expect_error("worker:\n  queues: [{name: \"a:b\", weight: 2}]\n",
               "cfg.yaml:2:19: worker.queues[0]: queue name \"a:b\" has ':' "
               "at byte 1: ':' separates a weight (NAME:WEIGHT, as in claimer "
               "work -q jobs:2) and is not part of a name");
}

/* The text form (flag -q, CLAIMER_WORKER_QUEUES): NAME[:WEIGHT], the
 * weight an integer 1..1000; anything else is refused, naming the fault. */
static void queue_weights(void **state) {
  (void)state;
  static const struct {
    const char *text;
    const char *err;
  } bad[] = {
      {"a:-1", "flag --queue: queue \"a\": weight -1 is out of range 1..1000"},
      {"a:0", "flag --queue: queue \"a\": weight 0 is out of range 1..1000"},
      {"a:1001",
       "flag --queue: queue \"a\": weight 1001 is out of range 1..1000"},
      {"a:1.5", "flag --queue: queue \"a\": weight \"1.5\" is not an integer "
                "(expected NAME:WEIGHT, WEIGHT 1..1000)"},
      {"a:x", "flag --queue: queue \"a\": weight \"x\" is not an integer "
              "(expected NAME:WEIGHT, WEIGHT 1..1000)"},
      {"a:2:3", "flag --queue: queue \"a\": weight \"2:3\" is not an integer "
                "(expected NAME:WEIGHT, WEIGHT 1..1000)"},
      {"a:", "flag --queue: queue \"a\": the weight after ':' is missing "
             "(expected NAME:WEIGHT, WEIGHT 1..1000)"},
      {":3", "flag --queue: queue \":3\": the name before ':' is missing "
             "(expected NAME:WEIGHT)"},
      {"ok, b:99999999999999999999",
       "flag --queue: queue \"b\": weight 99999999999999999999 is out of "
       "range 1..1000"},
  };
  char err[ERRLEN];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cl_config_t cfg;
    cl_config_init(&cfg);
    err[0] = '\0';
    int rc = cl_config_set(&cfg, "worker.queues", bad[i].text, "flag --queue",
                           err, sizeof err);
    if (rc != CL_ECONFIG || strcmp(err, bad[i].err) != 0)
      fail_msg("-q %s: rc %d, \"%s\"; expected \"%s\"", bad[i].text, rc, err,
               bad[i].err);
    assert_int_equal(cfg.worker.nqueues, 0);
    cl_config_free(&cfg);
  }
  cl_config_t cfg;
  cl_config_init(&cfg);
  assert_int_equal(cl_config_set(&cfg, "worker.queues",
                                 "a, b:1,c:1000 , d-2.x_y:07", "flag --queue",
                                 err, sizeof err),
                   0);
  assert_int_equal(cfg.worker.nqueues, 4);
  assert_string_equal(cfg.worker.queues[0].name, "a");
  assert_int_equal(cfg.worker.queues[0].weight, 1);
  assert_string_equal(cfg.worker.queues[1].name, "b");
  assert_int_equal(cfg.worker.queues[1].weight, 1);
  assert_string_equal(cfg.worker.queues[2].name, "c");
  assert_int_equal(cfg.worker.queues[2].weight, 1000);
  assert_string_equal(cfg.worker.queues[3].name, "d-2.x_y");
  assert_int_equal(cfg.worker.queues[3].weight, 7);
  cl_config_free(&cfg);
}

static void too_many_queues(void **state) {
  (void)state;
  size_t cap = 32 + 16 * (CL_CONFIG_QUEUES_MAX + 1);
  char *yaml = malloc(cap);
  assert_non_null(yaml);
  size_t o = (size_t)snprintf(yaml, cap, "worker:\n  queues:\n");
  for (int i = 0; i <= CL_CONFIG_QUEUES_MAX; i++)
    o += (size_t)snprintf(yaml + o, cap - o, "    - q%d\n", i);
  char msg[128];
  snprintf(msg, sizeof msg,
           "cfg.yaml:%d:7: worker.queues[%d]: more than %d "
           "queues",
           CL_CONFIG_QUEUES_MAX + 3, CL_CONFIG_QUEUES_MAX,
           CL_CONFIG_QUEUES_MAX);
  expect_error(yaml, msg);
  free(yaml);
}

/* ------------------------------------------------------------------------ */
/* YAML features that are refused                                            */

static void anchors_aliases_tags(void **state) {
  (void)state;
  expect_error("worker:\n  lease: &x 30s\n  heartbeat: 10s\n",
               "cfg.yaml:2:10: anchors and aliases are not supported");
  expect_error("a: &x\n  b: 1\n",
               "cfg.yaml:1:4: anchors and aliases are not supported");
  expect_error("worker:\n  queues:\n    - emails\n    - *q\n",
               "cfg.yaml:4:7: anchors and aliases are not supported");
  expect_error("worker:\n  lease: !!str 30s\n",
               "cfg.yaml:2:10: tags are not supported (remove \"!!str\")");
  expect_error("worker: !mine\n  lease: 30s\n",
               "cfg.yaml:1:9: tags are not supported (remove \"!mine\")");
}

static void documents(void **state) {
  (void)state;
  expect_error("worker:\n  lease: 30s\n---\nworker:\n  lease: 60s\n",
               "cfg.yaml:3:1: more than one YAML document (a config file "
               "holds one map)");
  expect_error("- a\n- b\n",
               "cfg.yaml:1:1: the top level must be a map of keys, got a "
               "list");
  expect_error("just text\n", "cfg.yaml:1:1: the top level must be a map of "
                              "keys, got \"just text\"");
}

static void syntax_errors(void **state) {
  (void)state;
  expect_error("worker: lease: 30s\n",
               "cfg.yaml:1:14: mapping values are not allowed in this "
               "context");
  expect_error("worker:\n  queues: [a, b\n",
               "cfg.yaml:3:1: did not find expected ',' or ']' (while "
               "parsing a flow sequence that starts at 2:11)");
  expect_error("worker:\n\tlease: 30s\n",
               "cfg.yaml:2:1: found character that cannot start any token "
               "(while scanning for the next token that starts at 2:1)");
  expect_error("dsn: \"unterminated\n",
               "cfg.yaml:2:1: found unexpected end of stream (while scanning "
               "a quoted scalar that starts at 1:6)");
  /* Nesting is bounded before anything else is looked at. */
  char deep[64];
  memset(deep, '[', 20);
  memset(deep + 20, ']', 20);
  deep[40] = '\0';
  char yaml[96];
  snprintf(yaml, sizeof yaml, "worker: %s\n", deep);
  expect_error(yaml, "cfg.yaml:1:24: nested deeper than 16 levels");
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

static void file_limits(void **state) {
  fixture_t *f = *state;
  char path[128], err[ERRLEN], msg[256];
  cl_config_t cfg;
  cl_config_init(&cfg);

  snprintf(path, sizeof path, "%s/big.yaml", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs("worker:\n  lease: 30s\n", fp);
  for (long n = 21; n < 70000 - 1; n++)
    fputc(n % 64 == 0 ? '\n' : '#', fp);
  fputc('\n', fp);
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(cl_config_load_file(&cfg, path, err, sizeof err),
                   CL_ECONFIG);
  snprintf(msg, sizeof msg,
           "%s: file is 70000 bytes, over the 65536-byte limit for a config "
           "file",
           path);
  assert_string_equal(err, msg);

  /* At the limit itself it loads. */
  fp = fopen(path, "w");
  assert_non_null(fp);
  fputs("worker:\n  concurrency: 3\n", fp);
  for (long n = 25; n < CL_CONFIG_FILE_MAX - 1; n++)
    fputc(n % 64 == 0 ? '\n' : '#', fp);
  fputc('\n', fp);
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(cl_config_load_file(&cfg, path, err, sizeof err), 0);
  assert_int_equal(cfg.worker.concurrency, 3);
  snprintf(msg, sizeof msg, "%s:2", path);
  assert_string_equal(cl_config_origin(&cfg, "worker.concurrency"), msg);

  snprintf(path, sizeof path, "%s/missing.yaml", f->dir);
  assert_int_equal(cl_config_load_file(&cfg, path, err, sizeof err),
                   CL_ECONFIG);
  snprintf(msg, sizeof msg, "%s: cannot open: No such file or directory", path);
  assert_string_equal(err, msg);

  assert_int_equal(cl_config_load_file(&cfg, f->dir, err, sizeof err),
                   CL_ECONFIG);
  snprintf(msg, sizeof msg, "%s: cannot read: it is a directory", f->dir);
  assert_string_equal(err, msg);

  /* A string over the limit is refused the same way. */
  char *big = malloc(CL_CONFIG_FILE_MAX + 2);
  assert_non_null(big);
  memset(big, '#', CL_CONFIG_FILE_MAX + 1);
  assert_int_equal(cl_config_load_string(&cfg, big, CL_CONFIG_FILE_MAX + 1,
                                         "cfg.yaml", err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "cfg.yaml: file is 65537 bytes, over the "
                           "65536-byte limit for a config file");
  free(big);
  assert_int_equal(cfg.worker.concurrency, 3);
  cl_config_free(&cfg);
}

/* ------------------------------------------------------------------------ */
/* Connection strings never show their password                             */

static void dsn_secrets(void **state) {
  (void)state;
  static const char pw[] = "s3cr3tpw";
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  const char *bad = "dsn: \"postgresql://alice:s3cr3tpw@db1:99999/claims\"\n";
  assert_int_equal(cl_config_load_string(&cfg, bad, strlen(bad), "cfg.yaml",
                                         err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "cfg.yaml:1:6: dsn: malformed connection string: "
                           "port \"99999\" is not a number from 1 to 65535");
  assert_not_contains(err, pw);

  bad = "dsn: \"host=db1 password=s3cr3tpw port='\"\n";
  assert_int_equal(cl_config_load_string(&cfg, bad, strlen(bad), "cfg.yaml",
                                         err, sizeof err),
                   CL_ECONFIG);
  assert_contains(err, "cfg.yaml:1:6: dsn: malformed connection string");
  assert_not_contains(err, pw);

  /* A good dsn next to a bad key stays out of the message. */
  bad = "dsn: \"postgresql://alice:s3cr3tpw@db1/claims\"\nworker:\n  "
        "lease: -1\n";
  assert_int_equal(cl_config_load_string(&cfg, bad, strlen(bad), "cfg.yaml",
                                         err, sizeof err),
                   CL_ECONFIG);
  assert_not_contains(err, pw);
  assert_null(cfg.dsn);

  /* From the environment, too. */
  setenv("CLAIMER_DSN", "postgresql://alice:s3cr3tpw@db1:0/claims", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_DSN: malformed connection string: "
                           "port \"0\" is not a number from 1 to 65535");
  assert_not_contains(err, pw);
  unsetenv("CLAIMER_DSN");

  /* And the printer redacts it. */
  load_ok(&cfg, "dsn: \"postgresql://alice:s3cr3tpw@db1/claims\"\n");
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  assert_non_null(out);
  assert_int_equal(cl_config_print(&cfg, out), 0);
  fclose(out);
  assert_not_contains(text, pw);
  assert_contains(text, "password=***");
  free(text);
  cl_config_free(&cfg);
}

/* ------------------------------------------------------------------------ */
/* All or nothing                                                            */

static void all_or_nothing(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, full_yaml);
  /* Several keys are read before the fault on the last line. */
  const char *bad = "dsn: \"host=other\"\nworker:\n  name: other\n"
                    "  queues: [x, y, z]\n  concurrency: 2\n  lease: nope\n";
  assert_int_equal(cl_config_load_string(&cfg, bad, strlen(bad), "bad.yaml",
                                         err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(cfg.dsn, "postgresql://user:secret@db1/claims");
  assert_string_equal(cfg.worker.name, "web-1");
  assert_int_equal(cfg.worker.nqueues, 2);
  assert_int_equal(cfg.worker.concurrency, 16);
  assert_string_equal(cl_config_origin(&cfg, "worker.concurrency"),
                      "cfg.yaml:11");

  setenv("CLAIMER_WORKER_CONCURRENCY", "5", 1);
  setenv("CLAIMER_WORKER_LEASE", "-5s", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_WORKER_LEASE: \"-5s\" is not a "
                           "duration (a number of seconds >= 0, or a number "
                           "with ms, s, m, h or d)");
  assert_int_equal(cfg.worker.concurrency, 16);

  assert_int_equal(
      cl_config_set(&cfg, "worker.queues", "a,a", "flag -q", err, sizeof err),
      CL_ECONFIG);
  assert_string_equal(err, "flag -q: queue \"a\" is listed twice");
  assert_int_equal(cfg.worker.nqueues, 2);
  cl_config_free(&cfg);
}

/* A copy owns its own memory. */
static void copy(void **state) {
  (void)state;
  cl_config_t a, b;
  cl_config_init(&a);
  load_ok(&a, full_yaml);
  assert_int_equal(cl_config_copy(&b, &a), 0);
  cl_config_free(&a);
  assert_string_equal(b.worker.name, "web-1");
  assert_string_equal(b.worker.queues[1].name, "payments");
  assert_string_equal(cl_config_origin(&b, "worker.name"), "cfg.yaml:6");
  cl_config_free(&b);
}

/* ------------------------------------------------------------------------ */
/* Environment and flags                                                     */

static void environment(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, "worker:\n  concurrency: 4\n  lease: 60s\n");
  setenv("CLAIMER_WORKER_CONCURRENCY", "12", 1);
  setenv("CLAIMER_WORKER_QUEUES", "emails, payments:3,v2:1", 1);
  setenv("CLAIMER_LOG_LEVEL", "debug", 1);
  setenv("CLAIMER_WORKER_POLL_INTERVAL", "500ms", 1);
  setenv("CLAIMER_WORKER_RESULT_MAX", "64KiB", 1);
  /* Not ours: ignored, whatever they hold. */
  setenv("CLAIMER_HOME", "/nowhere", 1);
  setenv("CLAIMER_TEST_DSN", "not a dsn '", 1);
  setenv("CLAIMER_ITEM_ID", "x", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  assert_int_equal(cfg.worker.concurrency, 12);
  assert_true(cfg.worker.lease_s == 60);
  assert_int_equal(cfg.log_level, CL_LEVEL_DEBUG);
  assert_true(cfg.worker.poll_s == 0.5);
  assert_int_equal(cfg.worker.result_max, 65536);
  assert_int_equal(cfg.worker.nqueues, 3);
  assert_string_equal(cfg.worker.queues[0].name, "emails");
  assert_int_equal(cfg.worker.queues[0].weight, 1);
  assert_string_equal(cfg.worker.queues[1].name, "payments");
  assert_int_equal(cfg.worker.queues[1].weight, 3);
  assert_string_equal(cfg.worker.queues[2].name, "v2");
  assert_int_equal(cfg.worker.queues[2].weight, 1);
  assert_string_equal(cl_config_origin(&cfg, "worker.concurrency"),
                      "env CLAIMER_WORKER_CONCURRENCY");
  assert_string_equal(cl_config_origin(&cfg, "worker.lease"), "cfg.yaml:3");

  setenv("CLAIMER_WORKER_CONCURRENCY", "eight", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_WORKER_CONCURRENCY: expected an "
                           "integer, got \"eight\"");
  setenv("CLAIMER_WORKER_CONCURRENCY", "", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_WORKER_CONCURRENCY: expected an "
                           "integer, got \"\"");
  unsetenv("CLAIMER_WORKER_CONCURRENCY");
  setenv("CLAIMER_WORKER_QUEUES", "a,,b", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_WORKER_QUEUES: queue name is empty");
  setenv("CLAIMER_WORKER_QUEUES", "a:0", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_WORKER_QUEUES: queue \"a\": weight 0 "
                           "is out of range 1..1000");
  setenv("CLAIMER_WORKER_QUEUES", "v:2:1", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_WORKER_QUEUES: queue \"v\": weight "
                           "\"2:1\" is not an integer (expected NAME:WEIGHT, "
                           "WEIGHT 1..1000)");
  setenv("CLAIMER_WORKER_QUEUES", "", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  assert_int_equal(cfg.worker.nqueues, 0);
  cl_config_free(&cfg);
}

static void set_from_flags(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_int_equal(cl_config_set(&cfg, "worker.concurrency", "3",
                                 "flag --concurrency", err, sizeof err),
                   0);
  assert_int_equal(cfg.worker.concurrency, 3);
  assert_string_equal(cl_config_origin(&cfg, "worker.concurrency"),
                      "flag --concurrency");
  assert_int_equal(
      cl_config_set(&cfg, "log.format", "json", NULL, err, sizeof err), 0);
  assert_string_equal(cl_config_origin(&cfg, "log.format"), "set");

  assert_int_equal(cl_config_set(&cfg, "worker.concurrency", "0",
                                 "flag --concurrency", err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag --concurrency: 0 is out of range 1..10000");
  assert_int_equal(cfg.worker.concurrency, 3);
  assert_int_equal(
      cl_config_set(&cfg, "worker.lease", "-5s", NULL, err, sizeof err),
      CL_ECONFIG);
  assert_string_equal(err, "worker.lease: \"-5s\" is not a duration (a "
                           "number of seconds >= 0, or a number with ms, s, "
                           "m, h or d)");
  assert_int_equal(cl_config_set(&cfg, "worker.concurency", "4", "flag --x",
                                 err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag --x: unknown key \"worker.concurency\" (did "
                           "you mean \"worker.concurrency\"?)");
  assert_int_equal(
      cl_config_set(&cfg, "nothing.like.it", "4", NULL, err, sizeof err),
      CL_ECONFIG);
  assert_string_equal(err, "unknown key \"nothing.like.it\"");
  cl_config_free(&cfg);
}

/* ------------------------------------------------------------------------ */
/* Rules between keys                                                        */

static void validate_rules(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, "worker:\n  heartbeat: 30s\n");
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "worker.heartbeat (30s, from cfg.yaml:2) must be "
                           "shorter than worker.lease (30s, from default) "
                           "minus the fencing margin (3s)");
  assert_int_equal(cl_config_set(&cfg, "worker.lease", "2m", "flag --lease",
                                 err, sizeof err),
                   0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_true(cl_config_heartbeat_s(&cfg) == 30);
  /* Issue 9: a heartbeat inside the margin fences every job; one of 1 ms
   * is a thousand transactions a second. */
  assert_int_equal(cl_config_set(&cfg, "worker.heartbeat", "28s",
                                 "flag --heartbeat", err, sizeof err),
                   0);
  assert_int_equal(cl_config_set(&cfg, "worker.lease", "30s", "flag --lease",
                                 err, sizeof err),
                   0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "worker.heartbeat (28s, from flag --heartbeat) "
                           "must be shorter than worker.lease (30s, from "
                           "flag --lease) minus the fencing margin (3s)");
  assert_int_equal(cl_config_set(&cfg, "worker.heartbeat", "1ms",
                                 "flag --heartbeat", err, sizeof err),
                   0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "worker.heartbeat (1ms, from flag --heartbeat) is "
                           "below the minimum of 100ms");
  assert_int_equal(cl_config_set(&cfg, "worker.heartbeat", "10s",
                                 "flag --heartbeat", err, sizeof err),
                   0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);

  /* Values set behind the loader's back are checked too. */
  cfg.worker.concurrency = 0;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "worker.concurrency: 0 is out of range 1..10000 "
                           "(from default)");
  cfg.worker.concurrency = 8;
  cfg.worker.timeout_s = -1;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "worker.timeout: -1s is out of range 0s..7d "
                           "(from default)");
  cfg.worker.timeout_s = 0;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  cl_config_free(&cfg);
}

/* ------------------------------------------------------------------------ */
/* Printing                                                                  */

static char *print(const cl_config_t *cfg) {
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  assert_non_null(out);
  assert_int_equal(cl_config_print(cfg, out), 0);
  fclose(out);
  return text;
}

static void print_defaults(void **state) {
  (void)state;
  cl_config_t cfg;
  cl_config_init(&cfg);
  char *text = print(&cfg);
  assert_string_equal(
      text,
      "dsn: null                               # default (null: the embedded "
      "PostgreSQL)\n"
      "log:\n"
      "  format: logfmt                        # default\n"
      "  level: info                           # default\n"
      "worker:\n"
      "  name: null                            # default (null: host:pid)\n"
      "  queues: []                            # default ([]: none; the "
      "worker needs one)\n"
      "  concurrency: 8                        # default\n"
      "  lease: 30s                            # default\n"
      "  heartbeat: 0s                         # default (0: lease/3)\n"
      "  poll_interval: 2s                     # default\n"
      "  command: null                         # default (null: no handler)\n"
      "  timeout: 5m                           # default\n"
      "  result_max: 1MiB                      # default\n"
      "  stderr_max: 4KiB                      # default\n"
      "  drain_timeout: 30s                    # default\n"
      "  kill_grace: 5s                        # default\n"
      "  prefetch: 0                           # default (0: concurrency/4, "
      "rounded up)\n"
      "reaper:\n"
      "  interval: 5s                          # default\n"
      "  batch: 1000                           # default\n"
      "  worker_lost_after: 3                  # default\n"
      "  sla: 1h                               # default\n"
      "  queue_sla: {}                         # default ({}: reaper.sla for "
      "every queue)\n"
      "  max_attempts: 25                      # default\n"
      "  backoff: 1s                           # default\n"
      "  backoff_max: 1h                       # default\n"
      "  queue_max_attempts: {}                # default ({}: "
      "reaper.max_attempts for every queue)\n"
      "  queue_backoff: {}                     # default ({}: reaper.backoff "
      "for every queue)\n"
      "  retention:\n"
      "    done: 7d                            # default\n"
      "    dead: 0s                            # default (0: keep forever)\n"
      "    alerts: 30d                         # default\n"
      "    workers: 1d                         # default\n"
      "  hook:\n"
      "    exec: null                          # default (null: no command)\n"
      "    url: null                           # default (null: no URL)\n"
      "    timeout: 10s                        # default\n"
      "    max_attempts: 10                    # default\n"
      "subscribers: {}                         # default ({}: none; declared "
      "in a file only)\n");
  free(text);
  cl_config_free(&cfg);
}

/* What the printer writes loads back to the same values. */
static void print_round_trip(void **state) {
  (void)state;
  cl_config_t a, b;
  char err[ERRLEN];
  cl_config_init(&a);
  load_ok(&a, full_yaml);
  assert_int_equal(cl_config_set(&a, "worker.queues",
                                 "emails,payments:3,true,2024,a.b:7", "flag",
                                 err, sizeof err),
                   0);
  assert_int_equal(cl_config_set(&a, "worker.command",
                                 "sh -c 'echo \"hi\" \\\\'", "flag", err,
                                 sizeof err),
                   0);
  assert_int_equal(cl_config_set(&a, "worker.poll_interval", "0.01", "flag",
                                 err, sizeof err),
                   0);
  char *text = print(&a);
  assert_contains(text, "  queues:                               # flag\n"
                        "    - emails\n"
                        "    - {name: payments, weight: 3}\n"
                        "    - \"true\"\n"
                        "    - \"2024\"\n"
                        "    - {name: a.b, weight: 7}\n");
  assert_contains(text, "  lease: 45s                            # "
                        "cfg.yaml:12\n");
  assert_contains(text, "  poll_interval: 10ms                   # flag\n");
  assert_contains(text, "  kill_grace: 1.5s                      # "
                        "cfg.yaml:20\n");
  cl_config_init(&b);
  if (cl_config_load_string(&b, text, strlen(text), "printed", err,
                            sizeof err) != 0)
    fail_msg("%s\n%s", err, text);
  assert_int_equal(b.log_format, a.log_format);
  assert_int_equal(b.log_level, a.log_level);
  assert_string_equal(b.worker.name, a.worker.name);
  assert_int_equal(b.worker.nqueues, a.worker.nqueues);
  for (size_t i = 0; i < a.worker.nqueues; i++) {
    assert_string_equal(b.worker.queues[i].name, a.worker.queues[i].name);
    assert_int_equal(b.worker.queues[i].weight, a.worker.queues[i].weight);
  }
  assert_int_equal(b.worker.concurrency, a.worker.concurrency);
  assert_true(b.worker.lease_s == a.worker.lease_s);
  assert_true(b.worker.heartbeat_s == a.worker.heartbeat_s);
  assert_true(b.worker.poll_s == a.worker.poll_s);
  assert_string_equal(b.worker.command, a.worker.command);
  assert_true(b.worker.timeout_s == a.worker.timeout_s);
  assert_int_equal(b.worker.result_max, a.worker.result_max);
  assert_int_equal(b.worker.stderr_max, a.worker.stderr_max);
  assert_true(b.worker.drain_s == a.worker.drain_s);
  assert_true(b.worker.kill_grace_s == a.worker.kill_grace_s);
  assert_int_equal(b.worker.prefetch, a.worker.prefetch);
  /* The dsn comes back redacted, which is still a valid dsn. */
  assert_string_equal(b.dsn, "user=user password=*** dbname=claims "
                             "host=db1");
  free(text);
  cl_config_free(&a);
  cl_config_free(&b);
}

/* A dsn is the one string the printer shows that is not checked text, so
 * it can hold any character.  Those that YAML refuses raw (C1 controls,
 * U+FFFE) or folds into a space (NEL) must be printed as escapes that
 * YAML reads back as the same character, and never raw (a raw U+009B is
 * CSI to a terminal).  The printer used to write them raw: the output then
 * failed to load ("control characters are not allowed") or loaded as
 * another dsn. */
static void print_round_trip_dsn_characters(void **state) {
  (void)state;
  static const struct {
    const char *value, *shown;
  } odd[] = {
      {"a\xc2\x9bz", "a\\x9bz"},       /* CSI */
      {"a\xc2\x85z", "a\\x85z"},       /* NEL */
      {"a\xef\xbf\xbez", "a\\ufffez"}, /* a non-character */
      {"a\x1b[31mz", "a\\x1b[31mz"},   /* ESC, as before */
      /* As they are: YAML keeps these in a double-quoted scalar. */
      {"a\xc3\xa9\xe2\x80\xa8\xe2\x80\xa9\xef\xbb\xbf",
       "a\xc3\xa9\xe2\x80\xa8\xe2\x80\xa9\xef\xbb\xbf"},
  };
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
    cl_config_t a, b;
    char err[ERRLEN], dsn[64], line[64];
    snprintf(dsn, sizeof dsn, "host=db1 application_name=%s", odd[i].value);
    cl_config_init(&a);
    assert_int_equal(cl_config_set(&a, "dsn", dsn, "flag", err, sizeof err), 0);
    char *text = print(&a);
    snprintf(line, sizeof line, "dsn: \"host=db1 application_name=%s\"",
             odd[i].shown);
    assert_contains(text, line);
    cl_config_init(&b);
    if (cl_config_load_string(&b, text, strlen(text), "printed", err,
                              sizeof err) != 0)
      fail_msg("case %zu: %s\n%s", i, err, text);
    assert_string_equal(b.dsn, dsn);
    free(text);
    cl_config_free(&a);
    cl_config_free(&b);
  }
}

/* ------------------------------------------------------------------------ */
/* The reaper's keys                                                         */

static void reaper_defaults(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_true(cfg.reaper.interval_s == 5);
  assert_int_equal(cfg.reaper.batch, 1000);
  assert_int_equal(cfg.reaper.worker_lost_after, 3);
  assert_true(cfg.reaper.sla_s == 3600);
  assert_null(cfg.reaper.queue_sla_names);
  assert_null(cfg.reaper.queue_sla_s);
  assert_int_equal(cfg.reaper.nqueue_sla, 0);
  assert_true(cfg.reaper.retention.done_s == 7 * 86400);
  assert_true(cfg.reaper.retention.dead_s == 0);
  assert_true(cfg.reaper.retention.alerts_s == 30 * 86400);
  assert_true(cfg.reaper.retention.workers_s == 86400);
  assert_null(cfg.reaper.hook.exec);
  assert_null(cfg.reaper.hook.url);
  assert_true(cfg.reaper.hook.timeout_s == 10);
  assert_int_equal(cfg.reaper.hook.max_attempts, 10);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_string_equal(cl_config_origin(&cfg, "reaper.retention.done"),
                      "default");
  assert_null(cl_config_origin(&cfg, "reaper.retention"));
  cl_config_free(&cfg);
}

static const char reaper_yaml[] =
    "reaper:\n"
    "  interval: 250ms\n"
    "  batch: 500\n"
    "  worker_lost_after: 5\n"
    "  sla: 2h\n"
    "  queue_sla:\n"
    "    emails: 5m\n"
    "    payments: 30s\n"
    "    v.2: 1d\n"
    "  retention:\n"
    "    done: 14d\n"
    "    dead: 90d\n"
    "    alerts: 0\n"
    "  hook:\n"
    "    exec: \"./alert.sh --page\"\n"
    "    url: \"https://alice:s3cr3tpw@hooks.example:8443/a?token=t0k\"\n"
    "    timeout: 2.5\n"
    "    max_attempts: 1000\n";

static void reaper_full(void **state) {
  (void)state;
  cl_config_t cfg, copy_;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, reaper_yaml);
  assert_true(cfg.reaper.interval_s == 0.25);
  assert_int_equal(cfg.reaper.batch, 500);
  assert_int_equal(cfg.reaper.worker_lost_after, 5);
  assert_true(cfg.reaper.sla_s == 7200);
  assert_int_equal(cfg.reaper.nqueue_sla, 3);
  assert_string_equal(cfg.reaper.queue_sla_names[0], "emails");
  assert_true(cfg.reaper.queue_sla_s[0] == 300);
  assert_string_equal(cfg.reaper.queue_sla_names[1], "payments");
  assert_true(cfg.reaper.queue_sla_s[1] == 30);
  assert_string_equal(cfg.reaper.queue_sla_names[2], "v.2");
  assert_true(cfg.reaper.queue_sla_s[2] == 86400);
  assert_true(cfg.reaper.retention.done_s == 14 * 86400);
  assert_true(cfg.reaper.retention.dead_s == 90 * 86400);
  assert_true(cfg.reaper.retention.alerts_s == 0);
  assert_string_equal(cfg.reaper.hook.exec, "./alert.sh --page");
  assert_string_equal(cfg.reaper.hook.url,
                      "https://alice:s3cr3tpw@hooks.example:8443/a?token=t0k");
  assert_true(cfg.reaper.hook.timeout_s == 2.5);
  assert_int_equal(cfg.reaper.hook.max_attempts, 1000);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_sla"), "cfg.yaml:6");
  assert_string_equal(cl_config_origin(&cfg, "reaper.retention.dead"),
                      "cfg.yaml:12");
  assert_string_equal(cl_config_origin(&cfg, "reaper.hook.url"), "cfg.yaml:16");

  /* The flow form, nested, works the same. */
  load_ok(&cfg, "reaper: {retention: {done: 7d}, hook: {url: "
                "\"http://h/x\"}, queue_sla: {emails: 1m}}\n");
  assert_true(cfg.reaper.retention.done_s == 604800);
  assert_string_equal(cfg.reaper.hook.url, "http://h/x");
  assert_int_equal(cfg.reaper.nqueue_sla, 1);
  assert_true(cfg.reaper.queue_sla_s[0] == 60);
  /* And a null queue_sla or url clears it. */
  load_ok(&cfg, "reaper:\n  queue_sla: ~\n  hook:\n    url: null\n");
  assert_int_equal(cfg.reaper.nqueue_sla, 0);
  assert_null(cfg.reaper.queue_sla_names);
  assert_null(cfg.reaper.hook.url);
  assert_string_equal(cfg.reaper.hook.exec, "./alert.sh --page");

  /* A copy owns its own SLAs and hook strings. */
  load_ok(&cfg, reaper_yaml);
  assert_int_equal(cl_config_copy(&copy_, &cfg), 0);
  cl_config_free(&cfg);
  assert_int_equal(copy_.reaper.nqueue_sla, 3);
  assert_string_equal(copy_.reaper.queue_sla_names[2], "v.2");
  assert_true(copy_.reaper.queue_sla_s[1] == 30);
  assert_string_equal(copy_.reaper.hook.exec, "./alert.sh --page");
  assert_string_equal(copy_.reaper.hook.url,
                      "https://alice:s3cr3tpw@hooks.example:8443/a?token=t0k");
  assert_string_equal(cl_config_origin(&copy_, "reaper.hook.exec"),
                      "cfg.yaml:15");
  cl_config_free(&copy_);
}

static void reaper_environment(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, "reaper:\n  batch: 10\n  sla: 1h\n");
  setenv("CLAIMER_REAPER_INTERVAL", "2s", 1);
  setenv("CLAIMER_REAPER_BATCH", "250", 1);
  setenv("CLAIMER_REAPER_QUEUE_SLA", "emails:5m, payments:30s,a.b:1.5d", 1);
  setenv("CLAIMER_REAPER_RETENTION_DONE", "3d", 1);
  setenv("CLAIMER_REAPER_HOOK_URL", "http://hooks.example/alert", 1);
  setenv("CLAIMER_REAPER_HOOK_MAX_ATTEMPTS", "3", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  assert_true(cfg.reaper.interval_s == 2);
  assert_int_equal(cfg.reaper.batch, 250);
  assert_true(cfg.reaper.sla_s == 3600);
  assert_int_equal(cfg.reaper.nqueue_sla, 3);
  assert_string_equal(cfg.reaper.queue_sla_names[0], "emails");
  assert_true(cfg.reaper.queue_sla_s[0] == 300);
  assert_string_equal(cfg.reaper.queue_sla_names[1], "payments");
  assert_true(cfg.reaper.queue_sla_s[1] == 30);
  assert_string_equal(cfg.reaper.queue_sla_names[2], "a.b");
  assert_true(cfg.reaper.queue_sla_s[2] == 129600);
  assert_true(cfg.reaper.retention.done_s == 3 * 86400);
  assert_string_equal(cfg.reaper.hook.url, "http://hooks.example/alert");
  assert_int_equal(cfg.reaper.hook.max_attempts, 3);
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_sla"),
                      "env CLAIMER_REAPER_QUEUE_SLA");
  assert_string_equal(cl_config_origin(&cfg, "reaper.retention.done"),
                      "env CLAIMER_REAPER_RETENTION_DONE");
  assert_string_equal(cl_config_origin(&cfg, "reaper.hook.url"),
                      "env CLAIMER_REAPER_HOOK_URL");
  assert_string_equal(cl_config_origin(&cfg, "reaper.sla"), "cfg.yaml:3");

  /* Each kind's errors, and nothing changes when one fails. */
  setenv("CLAIMER_REAPER_INTERVAL", "-1s", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_INTERVAL: \"-1s\" is not a "
                           "duration (a number of seconds >= 0, or a number "
                           "with ms, s, m, h or d)");
  unsetenv("CLAIMER_REAPER_INTERVAL");
  setenv("CLAIMER_REAPER_BATCH", "0", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_BATCH: 0 is out of range "
                           "1..100000");
  unsetenv("CLAIMER_REAPER_BATCH");
  setenv("CLAIMER_REAPER_QUEUE_SLA", "emails:5m,emails:1m", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_SLA: queue \"emails\" is "
                           "listed twice");
  setenv("CLAIMER_REAPER_QUEUE_SLA", "emails", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_SLA: queue \"emails\" "
                           "has no SLA (expected NAME:DURATION)");
  setenv("CLAIMER_REAPER_QUEUE_SLA", "bad name:5m", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_SLA: queue name \"bad "
                           "name\" has a character not allowed at byte 3 "
                           "(allowed: letters, digits, _ . -)");
  setenv("CLAIMER_REAPER_QUEUE_SLA", "emails:soon", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_SLA: queue \"emails\": "
                           "SLA \"soon\" is not a duration (a number of "
                           "seconds >= 0, or a number with ms, s, m, h or d)");
  setenv("CLAIMER_REAPER_QUEUE_SLA", "a:1m,,b:1m", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_SLA: queue name is empty");
  unsetenv("CLAIMER_REAPER_QUEUE_SLA");
  setenv("CLAIMER_REAPER_HOOK_URL", "ftp://alice:s3cr3tpw@files/x", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_HOOK_URL: scheme \"ftp\" is "
                           "not supported (expected http:// or https://)");
  assert_not_contains(err, "s3cr3tpw");
  unsetenv("CLAIMER_REAPER_HOOK_URL");
  assert_int_equal(cfg.reaper.batch, 250);
  assert_int_equal(cfg.reaper.nqueue_sla, 3);
  assert_string_equal(cfg.reaper.hook.url, "http://hooks.example/alert");

  /* An empty list is no per-queue SLAs. */
  setenv("CLAIMER_REAPER_QUEUE_SLA", "", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  assert_int_equal(cfg.reaper.nqueue_sla, 0);
  cl_config_free(&cfg);
}

static void reaper_errors(void **state) {
  (void)state;
  expect_error("reaper:\n  interval: -1s\n",
               "cfg.yaml:2:13: reaper.interval: \"-1s\" is not a duration (a "
               "number of seconds >= 0, or a number with ms, s, m, h or d)");
  expect_error("reaper:\n  interval: 10ms\n",
               "cfg.yaml:2:13: reaper.interval: 10ms is out of range "
               "50ms..1d");
  expect_error("reaper:\n  interval: 2d\n",
               "cfg.yaml:2:13: reaper.interval: 2d is out of range 50ms..1d");
  expect_error("reaper:\n  batch: 0\n",
               "cfg.yaml:2:10: reaper.batch: 0 is out of range 1..100000");
  expect_error("reaper:\n  worker_lost_after: 1001\n",
               "cfg.yaml:2:22: reaper.worker_lost_after: 1001 is out of range "
               "1..1000");
  expect_error("reaper:\n  sla: 0s\n",
               "cfg.yaml:2:8: reaper.sla: 0s is out of range (more than 0s, at "
               "most 3200000000s)");
  expect_error("reaper:\n  retention:\n    dead: -7d\n",
               "cfg.yaml:3:11: reaper.retention.dead: \"-7d\" is not a "
               "duration (a number of seconds >= 0, or a number with ms, s, "
               "m, h or d)");
  expect_error("reaper:\n  hook:\n    timeout: 0\n",
               "cfg.yaml:3:14: reaper.hook.timeout: 0 is out of range (more "
               "than 0s, at most 1h)");
  expect_error("reaper:\n  hook:\n    max_attempts: 0\n",
               "cfg.yaml:3:19: reaper.hook.max_attempts: 0 is out of range "
               "1..1000");
  expect_error("reaper:\n  hook:\n    exec: \"\"\n",
               "cfg.yaml:3:11: reaper.hook.exec: is empty");
  /* Misspelled keys, at each level. */
  expect_error("reaper:\n  intervall: 5s\n",
               "cfg.yaml:2:3: unknown key \"intervall\" in reaper (did you "
               "mean \"interval\"?)");
  expect_error("reaper:\n  retention:\n    done: 7d\n    alert: 90d\n",
               "cfg.yaml:4:5: unknown key \"alert\" in reaper.retention (did "
               "you mean \"alerts\"?)");
  expect_error("reaper:\n  hook:\n    uri: \"http://h/\"\n",
               "cfg.yaml:3:5: unknown key \"uri\" in reaper.hook (did you mean "
               "\"url\"?)");
  expect_error("reaper:\n  retension:\n    done: 7d\n",
               "cfg.yaml:2:3: unknown key \"retension\" in reaper (did you "
               "mean \"retention\"?)");
  expect_error("reaper:\n  retention: 7d\n",
               "cfg.yaml:2:14: reaper.retention: expected a map, got \"7d\"");
  expect_error("reaper:\n  hook:\n    exec: \"a\"\n    exec: \"b\"\n",
               "cfg.yaml:4:5: duplicate key \"exec\" in reaper.hook (first at "
               "line 3)");
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_int_equal(cl_config_set(&cfg, "reaper.intervall", "5s", "flag --x",
                                 err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag --x: unknown key \"reaper.intervall\" (did "
                           "you mean \"reaper.interval\"?)");
  assert_int_equal(cl_config_set(&cfg, "reaper.retention.done", "1d",
                                 "flag --keep-done", err, sizeof err),
                   0);
  assert_true(cfg.reaper.retention.done_s == 86400);
  assert_string_equal(cl_config_origin(&cfg, "reaper.retention.done"),
                      "flag --keep-done");
  cl_config_free(&cfg);
}

static void reaper_queue_sla(void **state) {
  (void)state;
  expect_error("reaper:\n  queue_sla:\n    emails: 5m\n    \"bad name\": 1m\n",
               "cfg.yaml:4:5: reaper.queue_sla: queue name \"bad name\" has a "
               "character not allowed at byte 3 (allowed: letters, digits, "
               "_ . -)");
  expect_error("reaper:\n  queue_sla:\n    emails: 5m\n    emails: 1m\n",
               "cfg.yaml:4:5: reaper.queue_sla: queue \"emails\" is listed "
               "twice (first at line 3)");
  expect_error("reaper:\n  queue_sla:\n    emails: 0\n",
               "cfg.yaml:3:13: reaper.queue_sla.emails: 0 is out of range "
               "(more than 0s, at most 3200000000s)");
  expect_error("reaper:\n  queue_sla: {emails: 5x}\n",
               "cfg.yaml:2:23: reaper.queue_sla.emails: \"5x\" is not a "
               "duration (a number of seconds >= 0, or a number with ms, s, "
               "m, h or d)");
  expect_error("reaper:\n  queue_sla: {emails: }\n",
               "cfg.yaml:2:23: reaper.queue_sla.emails: expected a duration, "
               "got nothing");
  expect_error("reaper:\n  queue_sla: [emails]\n",
               "cfg.yaml:2:14: reaper.queue_sla: expected a map of queue "
               "names to durations, got a list");
  expect_error("reaper:\n  queue_sla: {true: 5m}\n",
               "cfg.yaml:2:15: reaper.queue_sla: expected a queue name, got "
               "the boolean true (quote it to mean the text)");

  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_sla", "emails:0s",
                                 "flag --queue-sla", err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag --queue-sla: queue \"emails\": SLA 0s is out "
                           "of range (more than 0s, at most 3200000000s)");
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_sla", "emails:",
                                 "flag --queue-sla", err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag --queue-sla: queue \"emails\" has no SLA "
                           "(expected NAME:DURATION)");
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_sla", "emails:5m",
                                 "flag --queue-sla", err, sizeof err),
                   0);
  assert_int_equal(cfg.reaper.nqueue_sla, 1);

  /* Values set behind the loader's back are checked too. */
  cfg.reaper.queue_sla_s[0] = 0;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "reaper.queue_sla: queue \"emails\": SLA 0s is out "
                           "of range (more than 0s, at most 3200000000s) "
                           "(from flag --queue-sla)");
  cfg.reaper.queue_sla_s[0] = 60;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  cl_config_free(&cfg);

  /* At most CL_CONFIG_QUEUES_MAX of them. */
  size_t cap = 16 + 12 * (CL_CONFIG_QUEUES_MAX + 1);
  char *text = malloc(cap);
  assert_non_null(text);
  size_t o = 0;
  for (int i = 0; i <= CL_CONFIG_QUEUES_MAX; i++)
    o += (size_t)snprintf(text + o, cap - o, "%sq%d:1m", i ? "," : "", i);
  cl_config_init(&cfg);
  assert_int_equal(
      cl_config_set(&cfg, "reaper.queue_sla", text, NULL, err, sizeof err),
      CL_ECONFIG);
  char msg[128];
  snprintf(msg, sizeof msg, "reaper.queue_sla: more than %d queues",
           CL_CONFIG_QUEUES_MAX);
  assert_string_equal(err, msg);
  free(text);
  cl_config_free(&cfg);
}

static void reaper_hook_url(void **state) {
  (void)state;
  static const char pw[] = "s3cr3tpw";
  static const struct {
    const char *url, *why;
  } bad[] = {
      {"ftp://alice:s3cr3tpw@files.example/x",
       "scheme \"ftp\" is not supported (expected http:// or https://)"},
      {"alice:s3cr3tpw@hooks.example",
       "is not a URL (expected http://HOST/PATH or https://HOST/PATH)"},
      {"https://alice:s3cr3tpw@/x", "has no host"},
      {"https://alice:s3cr3tpw@h:99999/x",
       "has a bad port (expected a number from 1 to 65535)"},
      {"https://h/a b", "contains a space at byte 11"},
      {"", "is empty"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char yaml[128], msg[256];
    snprintf(yaml, sizeof yaml, "reaper:\n  hook:\n    url: \"%s\"\n",
             bad[i].url);
    snprintf(msg, sizeof msg, "cfg.yaml:3:10: reaper.hook.url: %s", bad[i].why);
    expect_error(yaml, msg);
  }
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  const char *yaml =
      "reaper:\n  hook:\n    url: \"ftp://alice:s3cr3tpw@files.example/x\"\n";
  assert_int_equal(cl_config_load_string(&cfg, yaml, strlen(yaml), "cfg.yaml",
                                         err, sizeof err),
                   CL_ECONFIG);
  assert_not_contains(err, pw);
  /* The good ones: both schemes in any case, ports, IPv6, a query. */
  static const char *const good[] = {
      "http://h",
      "HTTPS://hooks.example/alert",
      "https://alice:s3cr3tpw@hooks.example:8443/a?token=t0k#f",
      "http://[::1]:8080/x",
      "https://token@hooks.example/x",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    if (cl_config_set(&cfg, "reaper.hook.url", good[i], NULL, err,
                      sizeof err) != 0)
      fail_msg("%s: %s", good[i], err);
    assert_string_equal(cfg.reaper.hook.url, good[i]);
  }
  /* Values set behind the loader's back are checked too. */
  free(cfg.reaper.hook.url);
  cfg.reaper.hook.url = strdup("gopher://alice:s3cr3tpw@h/");
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "reaper.hook.url: scheme \"gopher\" is not "
                           "supported (expected http:// or https://) (from "
                           "set)");
  cl_config_free(&cfg);
}

/* The printer shows the hook URL without its password, and what it prints
 * loads back to the same values. */
static void reaper_print(void **state) {
  (void)state;
  static const char pw[] = "s3cr3tpw";
  cl_config_t a, b;
  char err[ERRLEN];
  cl_config_init(&a);
  load_ok(&a, reaper_yaml);
  char *text = print(&a);
  assert_not_contains(text, pw);
  assert_contains(
      text, "reaper:\n"
            "  interval: 250ms                       # cfg.yaml:2\n"
            "  batch: 500                            # cfg.yaml:3\n"
            "  worker_lost_after: 5                  # cfg.yaml:4\n"
            "  sla: 2h                               # cfg.yaml:5\n"
            "  queue_sla:                            # cfg.yaml:6\n"
            "    emails: 5m\n"
            "    payments: 30s\n"
            "    v.2: 1d\n"
            "  max_attempts: 25                      # default\n"
            "  backoff: 1s                           # default\n"
            "  backoff_max: 1h                       # default\n"
            "  queue_max_attempts: {}                # default ({}: "
            "reaper.max_attempts for every queue)\n"
            "  queue_backoff: {}                     # default ({}: "
            "reaper.backoff for every queue)\n"
            "  retention:\n"
            "    done: 14d                           # cfg.yaml:11\n"
            "    dead: 90d                           # cfg.yaml:12\n"
            "    alerts: 0s                          # cfg.yaml:13 (0: "
            "keep forever)\n"
            "    workers: 1d                         # default\n"
            "  hook:\n"
            "    exec: \"./alert.sh --page\"           # cfg.yaml:15\n"
            "    url: \"https://alice:***@hooks.example:8443/a?token=***\""
            "  # cfg.yaml:16\n"
            "    timeout: 2.5s                       # cfg.yaml:17\n"
            "    max_attempts: 1000                  # cfg.yaml:18\n");
  cl_config_init(&b);
  if (cl_config_load_string(&b, text, strlen(text), "printed", err,
                            sizeof err) != 0)
    fail_msg("%s\n%s", err, text);
  assert_true(b.reaper.interval_s == a.reaper.interval_s);
  assert_int_equal(b.reaper.batch, a.reaper.batch);
  assert_int_equal(b.reaper.worker_lost_after, a.reaper.worker_lost_after);
  assert_true(b.reaper.sla_s == a.reaper.sla_s);
  assert_int_equal(b.reaper.nqueue_sla, a.reaper.nqueue_sla);
  for (size_t i = 0; i < a.reaper.nqueue_sla; i++) {
    assert_string_equal(b.reaper.queue_sla_names[i],
                        a.reaper.queue_sla_names[i]);
    assert_true(b.reaper.queue_sla_s[i] == a.reaper.queue_sla_s[i]);
  }
  assert_true(b.reaper.retention.done_s == a.reaper.retention.done_s);
  assert_true(b.reaper.retention.dead_s == a.reaper.retention.dead_s);
  assert_true(b.reaper.retention.alerts_s == a.reaper.retention.alerts_s);
  assert_string_equal(b.reaper.hook.exec, a.reaper.hook.exec);
  assert_true(b.reaper.hook.timeout_s == a.reaper.hook.timeout_s);
  assert_int_equal(b.reaper.hook.max_attempts, a.reaper.hook.max_attempts);
  /* The url comes back redacted, which is still a valid url. */
  assert_string_equal(b.reaper.hook.url,
                      "https://alice:***@hooks.example:8443/a?token=***");
  free(text);

  /* Without a password (or a userinfo) the url's authority is shown as it
   * is; every query value is masked, whatever its name (token, sig, key,
   * X-Amz-Signature...: a list would miss one), the names and the
   * fragment stay. */
  assert_int_equal(cl_config_set(&a, "reaper.hook.url",
                                 "http://hooks.example/a?pass=x:y@z", "flag",
                                 err, sizeof err),
                   0);
  text = print(&a);
  assert_contains(text, "    url: \"http://hooks.example/a?pass=***\"");
  free(text);
  assert_int_equal(
      cl_config_set(&a, "reaper.hook.url",
                    "https://u:pw@hooks.example/p?token=tok1&channel=ops&"
                    "flag&sig=&X-Amz-Signature=s1g;k=v#top",
                    "flag", err, sizeof err),
      0);
  text = print(&a);
  /* A value shorter than three bytes gets as many stars as it has. */
  assert_contains(text, "    url: \"https://u:**@hooks.example/p?token=***&"
                        "channel=***&flag&sig=&X-Amz-Signature=***;k=*#top\"");
  assert_not_contains(text, "tok1");
  assert_not_contains(text, "s1g");
  free(text);
  cl_config_free(&a);
  cl_config_free(&b);
}

/* ------------------------------------------------------------------------ */
/* The queue retry policy                                                    */

static void retry_defaults(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_int_equal(cfg.reaper.max_attempts, 25);
  assert_true(cfg.reaper.backoff_s == 1);
  assert_true(cfg.reaper.backoff_max_s == 3600);
  assert_null(cfg.reaper.queue_max_attempts_names);
  assert_null(cfg.reaper.queue_max_attempts);
  assert_int_equal(cfg.reaper.nqueue_max_attempts, 0);
  assert_null(cfg.reaper.queue_backoff_names);
  assert_null(cfg.reaper.queue_backoff_s);
  assert_int_equal(cfg.reaper.nqueue_backoff, 0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_int_equal(cl_config_queue_policy_set(&cfg), 0);
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_backoff"),
                      "default");
  cl_config_free(&cfg);
}

static const char retry_yaml[] = "reaper:\n"
                                 "  max_attempts: 7\n"
                                 "  backoff: 500ms\n"
                                 "  backoff_max: 2h\n"
                                 "  queue_max_attempts:\n"
                                 "    payments: 5\n"
                                 "    mail: 1000000\n"
                                 "    v.2: 1\n"
                                 "  queue_backoff: {mail: 10s, payments: 1m}\n";

static void retry_full(void **state) {
  (void)state;
  cl_config_t cfg, copy_;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, retry_yaml);
  assert_int_equal(cfg.reaper.max_attempts, 7);
  assert_true(cfg.reaper.backoff_s == 0.5);
  assert_true(cfg.reaper.backoff_max_s == 7200);
  assert_int_equal(cfg.reaper.nqueue_max_attempts, 3);
  assert_string_equal(cfg.reaper.queue_max_attempts_names[0], "payments");
  assert_int_equal(cfg.reaper.queue_max_attempts[0], 5);
  assert_string_equal(cfg.reaper.queue_max_attempts_names[1], "mail");
  assert_int_equal(cfg.reaper.queue_max_attempts[1], 1000000);
  assert_string_equal(cfg.reaper.queue_max_attempts_names[2], "v.2");
  assert_int_equal(cfg.reaper.queue_max_attempts[2], 1);
  assert_int_equal(cfg.reaper.nqueue_backoff, 2);
  assert_string_equal(cfg.reaper.queue_backoff_names[0], "mail");
  assert_true(cfg.reaper.queue_backoff_s[0] == 10);
  assert_string_equal(cfg.reaper.queue_backoff_names[1], "payments");
  assert_true(cfg.reaper.queue_backoff_s[1] == 60);
  /* The SLAs are untouched by their neighbours. */
  assert_int_equal(cfg.reaper.nqueue_sla, 0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_int_equal(cl_config_queue_policy_set(&cfg), 1);
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_max_attempts"),
                      "cfg.yaml:5");
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_backoff"),
                      "cfg.yaml:9");

  /* A copy owns its own maps. */
  assert_int_equal(cl_config_copy(&copy_, &cfg), 0);
  cl_config_free(&cfg);
  assert_int_equal(copy_.reaper.nqueue_max_attempts, 3);
  assert_string_equal(copy_.reaper.queue_max_attempts_names[2], "v.2");
  assert_int_equal(copy_.reaper.queue_max_attempts[1], 1000000);
  assert_int_equal(copy_.reaper.nqueue_backoff, 2);
  assert_string_equal(copy_.reaper.queue_backoff_names[1], "payments");
  assert_true(copy_.reaper.queue_backoff_s[1] == 60);
  assert_int_equal(cl_config_queue_policy_set(&copy_), 1);
  /* And a null map clears it. */
  load_ok(&copy_, "reaper:\n  queue_max_attempts: ~\n  queue_backoff: {}\n");
  assert_int_equal(copy_.reaper.nqueue_max_attempts, 0);
  assert_null(copy_.reaper.queue_max_attempts_names);
  assert_null(copy_.reaper.queue_max_attempts);
  assert_int_equal(copy_.reaper.nqueue_backoff, 0);
  assert_null(copy_.reaper.queue_backoff_s);
  cl_config_free(&copy_);
}

static void retry_environment(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, retry_yaml);
  setenv("CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS", "payments:3, mail:10,a.b:2", 1);
  setenv("CLAIMER_REAPER_BACKOFF_MAX", "1d", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  assert_int_equal(cfg.reaper.nqueue_max_attempts, 3);
  assert_string_equal(cfg.reaper.queue_max_attempts_names[0], "payments");
  assert_int_equal(cfg.reaper.queue_max_attempts[0], 3);
  assert_string_equal(cfg.reaper.queue_max_attempts_names[1], "mail");
  assert_int_equal(cfg.reaper.queue_max_attempts[1], 10);
  assert_string_equal(cfg.reaper.queue_max_attempts_names[2], "a.b");
  assert_int_equal(cfg.reaper.queue_max_attempts[2], 2);
  assert_true(cfg.reaper.backoff_max_s == 86400);
  /* What the environment does not name stays as the file had it. */
  assert_int_equal(cfg.reaper.max_attempts, 7);
  assert_int_equal(cfg.reaper.nqueue_backoff, 2);
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_max_attempts"),
                      "env CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS");
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_backoff"),
                      "cfg.yaml:9");

  setenv("CLAIMER_REAPER_QUEUE_BACKOFF", "mail:10s,payments:1m", 1);
  setenv("CLAIMER_REAPER_MAX_ATTEMPTS", "100", 1);
  setenv("CLAIMER_REAPER_BACKOFF", "2s", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  assert_int_equal(cfg.reaper.max_attempts, 100);
  assert_true(cfg.reaper.backoff_s == 2);
  assert_string_equal(cl_config_origin(&cfg, "reaper.queue_backoff"),
                      "env CLAIMER_REAPER_QUEUE_BACKOFF");

  /* A failure changes nothing. */
  setenv("CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS", "payments:5,payments:6", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS: queue "
                           "\"payments\" is listed twice");
  assert_int_equal(cfg.reaper.queue_max_attempts[0], 3);
  setenv("CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS", "mail", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS: queue "
                           "\"mail\" has no max_attempts (expected "
                           "NAME:INTEGER)");
  unsetenv("CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS");
  setenv("CLAIMER_REAPER_QUEUE_BACKOFF", "mail:2d", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "env CLAIMER_REAPER_QUEUE_BACKOFF: queue \"mail\": "
                           "backoff 2d is out of range (more than 0s, at most "
                           "1d)");
  assert_true(cfg.reaper.queue_backoff_s[0] == 10);
  cl_config_free(&cfg);
}

static void retry_errors(void **state) {
  (void)state;
  expect_error("reaper:\n  max_attempts: 0\n",
               "cfg.yaml:2:17: reaper.max_attempts: 0 is out of range "
               "1..1000000");
  expect_error("reaper:\n  backoff: 0\n",
               "cfg.yaml:2:12: reaper.backoff: 0 is out of range (more than "
               "0s, at most 1d)");
  expect_error("reaper:\n  backoff_max: 32d\n",
               "cfg.yaml:2:16: reaper.backoff_max: 32d is out of range (more "
               "than 0s, at most 31d)");
  expect_error("reaper:\n  queue_max_attempts:\n    payments: 5\n"
               "    payments: 6\n",
               "cfg.yaml:4:5: reaper.queue_max_attempts: queue \"payments\" is "
               "listed twice (first at line 3)");
  expect_error("reaper:\n  queue_max_attempts: {payments: five}\n",
               "cfg.yaml:2:34: reaper.queue_max_attempts.payments: expected an "
               "integer, got \"five\"");
  expect_error("reaper:\n  queue_max_attempts: {payments: 0}\n",
               "cfg.yaml:2:34: reaper.queue_max_attempts.payments: 0 is out of "
               "range 1..1000000");
  expect_error("reaper:\n  queue_max_attempts: {\"bad name\": 5}\n",
               "cfg.yaml:2:24: reaper.queue_max_attempts: queue name \"bad "
               "name\" has a character not allowed at byte 3 (allowed: "
               "letters, digits, _ . -)");
  expect_error("reaper:\n  queue_max_attempts: [payments]\n",
               "cfg.yaml:2:23: reaper.queue_max_attempts: expected a map of "
               "queue names to integers, got a list");
  expect_error("reaper:\n  queue_backoff:\n    mail: 2d\n",
               "cfg.yaml:3:11: reaper.queue_backoff.mail: 2d is out of range "
               "(more than 0s, at most 1d)");
  expect_error("reaper:\n  max_attempt: 5\n",
               "cfg.yaml:2:3: unknown key \"max_attempt\" in reaper (did you "
               "mean \"max_attempts\"?)");

  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_max_attempts",
                                 "payments:five", "flag --queue-max-attempts",
                                 err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag --queue-max-attempts: queue \"payments\": "
                           "max_attempts: expected an integer, got \"five\"");
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_max_attempts",
                                 "mail:10,payments:5,mail:3", "flag", err,
                                 sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag: queue \"mail\" is listed twice");
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_max_attempts",
                                 "payments:1000001", "flag", err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag: queue \"payments\": max_attempts 1000001 is "
                           "out of range 1..1000000");
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_backoff", "mail:soon",
                                 "flag", err, sizeof err),
                   CL_ECONFIG);
  assert_string_equal(err, "flag: queue \"mail\": backoff \"soon\" is not a "
                           "duration (a number of seconds >= 0, or a number "
                           "with ms, s, m, h or d)");
  assert_int_equal(cl_config_queue_policy_set(&cfg), 0);

  /* The rules between keys. */
  assert_int_equal(cl_config_set(&cfg, "reaper.backoff_max", "500ms", "flag",
                                 err, sizeof err),
                   0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "reaper.backoff_max: 500ms is less than "
                           "reaper.backoff (1s)");
  assert_int_equal(
      cl_config_set(&cfg, "reaper.backoff", "500ms", "flag", err, sizeof err),
      0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  cl_config_free(&cfg);
  cl_config_init(&cfg);
  load_ok(&cfg, "reaper:\n  queue_backoff: {mail: 10s, \"v.2\": 2h}\n");
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "reaper.queue_backoff: queue \"v.2\": backoff 2h is "
                           "more than reaper.backoff_max (1h)");
  assert_int_equal(
      cl_config_set(&cfg, "reaper.backoff_max", "2h", "flag", err, sizeof err),
      0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);

  /* Values set behind the loader's back are checked too. */
  load_ok(&cfg, "reaper:\n  queue_max_attempts: {payments: 5}\n");
  cfg.reaper.queue_max_attempts[0] = 0;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "reaper.queue_max_attempts: queue \"payments\": "
                           "max_attempts 0 is out of range 1..1000000 (from "
                           "cfg.yaml:2)");
  cfg.reaper.queue_max_attempts[0] = 5;
  cfg.reaper.queue_backoff_s[1] = 0;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "reaper.queue_backoff: queue \"v.2\": backoff 0s "
                           "is out of range (more than 0s, at most 1d) (from "
                           "cfg.yaml:2)");
  cl_config_free(&cfg);
}

/* cl_config_queue_policy_set() says whether any of the five keys was
 * given, whatever the value and whichever way it came. */
static void retry_policy_set(void **state) {
  (void)state;
  static const char *const files[] = {
      "reaper:\n  max_attempts: 25\n", /* the default, but given */
      "reaper:\n  backoff: 1s\n",
      "reaper:\n  backoff_max: 2h\n",
      "reaper:\n  queue_max_attempts: {payments: 5}\n",
      "reaper:\n  queue_backoff: ~\n",
  };
  static const char *const keys[][2] = {
      {"reaper.max_attempts", "3"},
      {"reaper.backoff", "5s"},
      {"reaper.backoff_max", "1d"},
      {"reaper.queue_max_attempts", "mail:3"},
      {"reaper.queue_backoff", "mail:1m"},
  };
  static const char *const env[][2] = {
      {"CLAIMER_REAPER_MAX_ATTEMPTS", "3"},
      {"CLAIMER_REAPER_BACKOFF", "5s"},
      {"CLAIMER_REAPER_BACKOFF_MAX", "1d"},
      {"CLAIMER_REAPER_QUEUE_MAX_ATTEMPTS", "mail:3"},
      {"CLAIMER_REAPER_QUEUE_BACKOFF", "mail:1m"},
  };
  cl_config_t cfg;
  char err[ERRLEN];
  /* Other keys, the SLAs among them, are no retry policy. */
  cl_config_init(&cfg);
  load_ok(&cfg, reaper_yaml);
  setenv("CLAIMER_REAPER_SLA", "5h", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  unsetenv("CLAIMER_REAPER_SLA");
  assert_int_equal(cl_config_set(&cfg, "reaper.queue_sla", "mail:1h", "flag",
                                 err, sizeof err),
                   0);
  assert_int_equal(cl_config_queue_policy_set(&cfg), 0);
  cl_config_free(&cfg);
  for (size_t i = 0; i < 5; i++) {
    cl_config_init(&cfg);
    load_ok(&cfg, files[i]);
    if (cl_config_queue_policy_set(&cfg) != 1)
      fail_msg("file: %s", files[i]);
    cl_config_free(&cfg);

    cl_config_init(&cfg);
    assert_int_equal(
        cl_config_set(&cfg, keys[i][0], keys[i][1], NULL, err, sizeof err), 0);
    if (cl_config_queue_policy_set(&cfg) != 1)
      fail_msg("set: %s", keys[i][0]);
    cl_config_free(&cfg);

    cl_config_init(&cfg);
    setenv(env[i][0], env[i][1], 1);
    assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
    unsetenv(env[i][0]);
    if (cl_config_queue_policy_set(&cfg) != 1)
      fail_msg("env: %s", env[i][0]);
    /* A copy carries it too. */
    cl_config_t copy_;
    assert_int_equal(cl_config_copy(&copy_, &cfg), 0);
    assert_int_equal(cl_config_queue_policy_set(&copy_), 1);
    cl_config_free(&copy_);
    cl_config_free(&cfg);
  }
}

/* What the printer writes of the policy loads back to the same values. */
static void retry_print(void **state) {
  (void)state;
  cl_config_t a, b;
  char err[ERRLEN];
  cl_config_init(&a);
  load_ok(&a, retry_yaml);
  assert_int_equal(cl_config_set(&a, "reaper.queue_backoff",
                                 "mail:10s,payments:1m,true:1.5,x.y:250ms",
                                 "flag", err, sizeof err),
                   0);
  char *text = print(&a);
  assert_contains(text, "  max_attempts: 7                       # cfg.yaml:2\n"
                        "  backoff: 500ms                        # cfg.yaml:3\n"
                        "  backoff_max: 2h                       # cfg.yaml:4\n"
                        "  queue_max_attempts:                   # cfg.yaml:5\n"
                        "    payments: 5\n"
                        "    mail: 1000000\n"
                        "    v.2: 1\n"
                        "  queue_backoff:                        # flag\n"
                        "    mail: 10s\n"
                        "    payments: 1m\n"
                        "    \"true\": 1.5s\n"
                        "    x.y: 250ms\n"
                        "  retention:\n");
  cl_config_init(&b);
  if (cl_config_load_string(&b, text, strlen(text), "printed", err,
                            sizeof err) != 0)
    fail_msg("%s\n%s", err, text);
  assert_int_equal(b.reaper.max_attempts, a.reaper.max_attempts);
  assert_true(b.reaper.backoff_s == a.reaper.backoff_s);
  assert_true(b.reaper.backoff_max_s == a.reaper.backoff_max_s);
  assert_int_equal(b.reaper.nqueue_max_attempts, a.reaper.nqueue_max_attempts);
  for (size_t i = 0; i < a.reaper.nqueue_max_attempts; i++) {
    assert_string_equal(b.reaper.queue_max_attempts_names[i],
                        a.reaper.queue_max_attempts_names[i]);
    assert_int_equal(b.reaper.queue_max_attempts[i],
                     a.reaper.queue_max_attempts[i]);
  }
  assert_int_equal(b.reaper.nqueue_backoff, a.reaper.nqueue_backoff);
  for (size_t i = 0; i < a.reaper.nqueue_backoff; i++) {
    assert_string_equal(b.reaper.queue_backoff_names[i],
                        a.reaper.queue_backoff_names[i]);
    assert_true(b.reaper.queue_backoff_s[i] == a.reaper.queue_backoff_s[i]);
  }
  assert_int_equal(cl_config_validate(&b, err, sizeof err), 0);
  free(text);
  cl_config_free(&a);
  cl_config_free(&b);
}

/* ------------------------------------------------------------------------ */
/* The subscribers: section                                                  */

static const char subs_yaml[] =
    "subscribers:\n"
    "  mail:\n"
    "    queues: [emails, \"v.2\"]\n"
    "    from: beginning\n"
    "    in_doubt: hold\n"
    "    max_attempts: 5\n"
    "    break_after: 0\n"
    "    concurrency: 4\n"
    "    rate: 2.5\n"
    "    ordering: fifo\n"
    "    sink:\n"
    "      exec: /usr/local/bin/send-mail\n"
    "      timeout: 45s\n"
    "  hooks:\n"
    "    from: 17\n"
    "    sink:\n"
    "      webhook: https://example.com/hook?token=Tok-3n\n"
    "      secret_file: /etc/claimer/hook.secret\n"
    "  audit:\n"
    "    sink:\n"
    "      pg: {target: \"host=db dbname=audit password=Pg-S3cret\",\n"
    "           sql: \"INSERT INTO audit_log VALUES ($1, $5)\"}\n"
    "  relay:\n"
    "    sink: {webhook: \"http://127.0.0.1:9/in\", secret_env: RELAY_KEYS}\n"
    "    backoff: [10s, 1m, 1h]\n";

static void subscribers_full(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  assert_int_equal(cfg.nsubscribers, 0);
  load_ok(&cfg, subs_yaml);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  assert_int_equal(cfg.nsubscribers, 4);

  const cl_config_subscriber_t *m = &cfg.subscribers[0];
  assert_string_equal(m->name, "mail");
  assert_string_equal(m->origin, "cfg.yaml:2");
  assert_int_equal(m->nqueues, 2);
  assert_string_equal(m->queues[0], "emails");
  assert_string_equal(m->queues[1], "v.2");
  assert_string_equal(m->from, "beginning");
  assert_int_equal(m->in_doubt, CL_CONFIG_IN_DOUBT_HOLD);
  assert_int_equal(m->max_attempts, 5);
  assert_int_equal(m->break_after, 0);
  assert_int_equal(m->concurrency, 4);
  assert_true(m->rate == 2.5);
  assert_int_equal(m->ordering, CL_CONFIG_ORDERING_FIFO);
  assert_int_equal(m->nbackoff, 0); /* the default schedule */
  assert_int_equal(m->sink.kind, CL_CONFIG_SINK_EXEC);
  assert_string_equal(m->sink.exec, "/usr/local/bin/send-mail");
  assert_true(m->sink.timeout_s == 45);
  assert_null(m->sink.webhook);
  assert_null(m->sink.secret_at);

  /* The defaults, and where the sender's own checks will point. */
  const cl_config_subscriber_t *h = cl_config_subscriber(&cfg, "hooks");
  assert_ptr_equal(h, &cfg.subscribers[1]);
  assert_int_equal(h->nqueues, 0);
  assert_string_equal(h->from, "17");
  assert_int_equal(h->in_doubt, CL_CONFIG_IN_DOUBT_RETRY);
  assert_int_equal(h->max_attempts, 10);
  assert_int_equal(h->break_after, 100);
  assert_int_equal(h->concurrency, 0);
  assert_true(h->rate == 0);
  assert_int_equal(h->ordering, CL_CONFIG_ORDERING_NONE);
  assert_int_equal(h->sink.kind, CL_CONFIG_SINK_WEBHOOK);
  assert_string_equal(h->sink.webhook, "https://example.com/hook?token=Tok-3n");
  assert_string_equal(h->sink.secret_file, "/etc/claimer/hook.secret");
  assert_string_equal(h->sink.secret_at, "cfg.yaml:18:20");
  assert_true(h->sink.timeout_s == 30);

  const cl_config_subscriber_t *a = cl_config_subscriber(&cfg, "audit");
  assert_int_equal(a->sink.kind, CL_CONFIG_SINK_PG);
  assert_string_equal(a->sink.pg_target,
                      "host=db dbname=audit password=Pg-S3cret");
  assert_string_equal(a->sink.pg_sql, "INSERT INTO audit_log VALUES ($1, $5)");
  assert_string_equal(a->sink.target_at, "cfg.yaml:21:20");
  assert_string_equal(a->sink.sql_at, "cfg.yaml:22:17");
  const cl_config_subscriber_t *r = cl_config_subscriber(&cfg, "relay");
  assert_string_equal(r->sink.secret_env, "RELAY_KEYS");
  assert_null(r->sink.secret_file);
  assert_int_equal(r->nbackoff, 3);
  assert_true(r->backoff_s[0] == 10 && r->backoff_s[1] == 60 &&
              r->backoff_s[2] == 3600);
  assert_null(cl_config_subscriber(&cfg, "nobody"));
  assert_null(cl_config_subscriber(&cfg, NULL));

  /* As the library takes them. */
  cl_subscriber_opts_t o;
  cl_config_subscriber_opts(m, &o);
  assert_int_equal(o.nqueues, 2);
  assert_string_equal(o.queues[1], "v.2");
  assert_string_equal(o.from, "beginning");
  assert_string_equal(o.in_doubt, "hold");
  assert_int_equal(o.max_attempts, 5);
  assert_int_equal(o.break_after, -1); /* 0 in the file: never */
  assert_int_equal(o.concurrency, 4);
  assert_true(o.rate == 2.5);
  assert_string_equal(o.ordering, "fifo");
  cl_config_subscriber_opts(a, &o);
  assert_int_equal(o.nqueues, 0);
  assert_string_equal(o.from, "now");
  assert_string_equal(o.in_doubt, "retry");
  assert_int_equal(o.max_attempts, 10);
  assert_int_equal(o.break_after, 100);
  assert_string_equal(o.ordering, "none");

  /* A copy owns its own records. */
  cl_config_t b;
  assert_int_equal(cl_config_copy(&b, &cfg), 0);
  cl_config_free(&cfg);
  assert_int_equal(b.nsubscribers, 4);
  assert_string_equal(b.subscribers[0].queues[1], "v.2");
  assert_string_equal(b.subscribers[2].sink.sql_at, "cfg.yaml:22:17");
  cl_config_free(&b);
  assert_int_equal(b.nsubscribers, 0);
  assert_null(b.subscribers);
}

/* Every bad record is refused at its node, word for word. */
static void subscribers_errors(void **state) {
  (void)state;
  static const struct {
    const char *yaml, *message;
  } bad[] = {
      {"subscribers:\n  mail:\n    sink: {exec: x}\n    ordring: fifo\n",
       "cfg.yaml:4:5: unknown key \"ordring\" in subscribers.mail (did you "
       "mean \"ordering\"?)"},
      {"subscriber:\n  mail: {sink: {exec: x}}\n",
       "cfg.yaml:1:1: unknown key \"subscriber\" (did you mean "
       "\"subscribers\"?)"},
      {"subscribers:\n  mail:\n    sink: {exec: x, timout: 5s}\n",
       "cfg.yaml:3:21: unknown key \"timout\" in subscribers.mail.sink (did "
       "you mean \"timeout\"?)"},
      {"subscribers:\n  mail:\n    in_doubt: maybe\n    sink: {exec: x}\n",
       "cfg.yaml:3:15: subscribers.mail.in_doubt: expected one of retry, hold, "
       "got \"maybe\""},
      {"subscribers:\n  mail:\n    ordering: fifi\n    sink: {exec: x}\n",
       "cfg.yaml:3:15: subscribers.mail.ordering: expected one of none, fifo, "
       "got \"fifi\" (did you mean \"fifo\"?)"},
      {"subscribers:\n  mail:\n    from: begining\n    sink: {exec: x}\n",
       "cfg.yaml:3:11: subscribers.mail.from: expected now, beginning or a "
       "position (a whole number >= 0), got \"begining\" (did you mean "
       "\"beginning\"?)"},
      {"subscribers:\n  mail:\n    from: -1\n    sink: {exec: x}\n",
       "cfg.yaml:3:11: subscribers.mail.from: expected now, beginning or a "
       "position (a whole number >= 0), got \"-1\""},
      {"subscribers:\n  mail:\n    max_attempts: 0\n    sink: {exec: x}\n",
       "cfg.yaml:3:19: subscribers.mail.max_attempts: 0 is out of range "
       "1..1000"},
      {"subscribers:\n  mail:\n    max_attempts: 1001\n    sink: {exec: x}\n",
       "cfg.yaml:3:19: subscribers.mail.max_attempts: 1001 is out of range "
       "1..1000"},
      {"subscribers:\n  mail:\n    break_after: -1\n    sink: {exec: x}\n",
       "cfg.yaml:3:18: subscribers.mail.break_after: -1 is out of range "
       "0..1000000"},
      {"subscribers:\n  mail:\n    concurrency: 100001\n    sink: {exec: x}\n",
       "cfg.yaml:3:18: subscribers.mail.concurrency: 100001 is out of range "
       "0..100000"},
      {"subscribers:\n  mail:\n    concurrency: two\n    sink: {exec: x}\n",
       "cfg.yaml:3:18: subscribers.mail.concurrency: expected an integer, got "
       "\"two\""},
      {"subscribers:\n  mail:\n    rate: 1000001\n    sink: {exec: x}\n",
       "cfg.yaml:3:11: subscribers.mail.rate: 1000001 is out of range "
       "0..1000000"},
      {"subscribers:\n  mail:\n    rate: -1\n    sink: {exec: x}\n",
       "cfg.yaml:3:11: subscribers.mail.rate: expected a number of deliveries "
       "per second (such as 50 or 0.5; 0: no limit), got \"-1\""},
      {"subscribers:\n  mail:\n    queues: [a, a]\n    sink: {exec: x}\n",
       "cfg.yaml:3:17: subscribers.mail.queues[1]: queue \"a\" is listed twice "
       "(first at line 3)"},
      {"subscribers:\n  mail:\n    backoff: [5s, 0s]\n    sink: {exec: x}\n",
       "cfg.yaml:3:19: subscribers.mail.backoff[1]: expected a duration above "
       "0 and at most 31d (such as 30s, 5m, 2h), got \"0s\""},
      {"subscribers:\n  mail:\n    backoff: 5s\n    sink: {exec: x}\n",
       "cfg.yaml:3:14: subscribers.mail.backoff: expected a list of durations "
       "(such as [5s, 5m, 1h]), got \"5s\""},
      {"subscribers:\n  mail:\n    backof: [5s]\n    sink: {exec: x}\n",
       "cfg.yaml:3:5: unknown key \"backof\" in subscribers.mail (did you mean "
       "\"backoff\"?)"},
      {"subscribers:\n  mail:\n    queues: emails\n    sink: {exec: x}\n",
       "cfg.yaml:3:13: subscribers.mail.queues: expected a list of queue "
       "names, got \"emails\""},
      {"subscribers:\n  bad name:\n    sink: {exec: x}\n",
       "cfg.yaml:2:3: subscribers: subscriber name \"bad name\" has a character "
       "not allowed at byte 3 (allowed: letters, digits, _ . -)"},
      {"subscribers:\n  mail: {sink: {exec: x}}\n  mail: {sink: {exec: y}}\n",
       "cfg.yaml:3:3: duplicate key \"mail\" in subscribers (first at line 2)"},
      {"subscribers: [mail]\n",
       "cfg.yaml:1:14: subscribers: expected a map of subscriber names to "
       "their settings, got a list"},
      {"subscribers:\n  mail:\n    queues: [a]\n",
       "cfg.yaml:2:3: subscribers.mail: needs a sink (sink: with one of exec, "
       "webhook or pg)"},
      {"subscribers:\n  mail: nothing\n",
       "cfg.yaml:2:9: subscribers.mail: expected a map of its settings and its "
       "sink, got \"nothing\""},
      /* The sink: exactly one kind, with what that kind needs. */
      {"subscribers:\n  mail:\n    sink: {timeout: 5s}\n",
       "cfg.yaml:3:11: subscribers.mail.sink: needs one of exec, webhook or "
       "pg"},
      {"subscribers:\n  mail:\n    sink:\n      exec: x\n"
       "      webhook: https://a/\n      secret_env: K\n",
       "cfg.yaml:5:7: subscribers.mail.sink: both exec and webhook (a sink is "
       "exactly one of exec, webhook or pg)"},
      {"subscribers:\n  mail:\n    sink:\n      pg: {target: \"host=x\", "
       "sql: y}\n      exec: x\n",
       "cfg.yaml:5:7: subscribers.mail.sink: both pg and exec (a sink is "
       "exactly one of exec, webhook or pg)"},
      {"subscribers:\n  mail:\n    sink:\n      webhook: ftp://a/\n"
       "      secret_env: K\n",
       "cfg.yaml:4:16: subscribers.mail.sink.webhook: scheme \"ftp\" is not "
       "supported (expected http:// or https://)"},
      {"subscribers:\n  mail:\n    sink:\n      webhook: https://a/\n",
       "cfg.yaml:4:7: subscribers.mail.sink: webhook needs its signing "
       "secrets: secret_file FILE or secret_env VAR"},
      {"subscribers:\n  mail:\n    sink: {exec: x, secret_file: /a}\n",
       "cfg.yaml:3:21: subscribers.mail.sink: secret_file goes with webhook, "
       "not exec"},
      {"subscribers:\n  mail:\n    sink: {webhook: \"http://a/\", "
       "secret_file: /a, secret_env: B}\n",
       "cfg.yaml:3:51: subscribers.mail.sink: both secret_file and secret_env "
       "(give the secrets one way)"},
      {"subscribers:\n  mail:\n    sink: {webhook: \"http://a/\", "
       "secret_env: 1B}\n",
       "cfg.yaml:3:46: subscribers.mail.sink.secret_env: \"1B\" is not the name "
       "of an environment variable (letters, digits and _, not starting with "
       "a digit)"},
      {"subscribers:\n  mail:\n    sink:\n      pg: {target: \"host=x\"}\n",
       "cfg.yaml:4:11: subscribers.mail.sink.pg: needs sql (the statement to "
       "run there)"},
      {"subscribers:\n  mail:\n    sink:\n      pg: {sql: \"SELECT 1\"}\n",
       "cfg.yaml:4:11: subscribers.mail.sink.pg: needs target (the DSN of the "
       "database to write to)"},
      {"subscribers:\n  mail:\n    sink:\n      pg: \"host=x\"\n",
       "cfg.yaml:4:11: subscribers.mail.sink.pg: expected a map {target: DSN, "
       "sql: SQL}, got \"host=x\""},
      {"subscribers:\n  mail:\n    sink:\n      pg: {sql: y, user: u}\n",
       "cfg.yaml:4:20: unknown key \"user\" in subscribers.mail.sink.pg"},
      {"subscribers:\n  mail:\n    sink: {exec: x, timeout: 0}\n",
       "cfg.yaml:3:30: subscribers.mail.sink.timeout: 0 is out of range "
       "100ms..1d"},
      {"subscribers:\n  mail:\n    sink: {exec: \"\"}\n",
       "cfg.yaml:3:18: subscribers.mail.sink.exec: is empty"},
      {"subscribers:\n  mail:\n    sink: {exec: }\n",
       "cfg.yaml:3:18: subscribers.mail.sink.exec: expected a string, got "
       "nothing"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_error(bad[i].yaml, bad[i].message);

  /* A pg target's password is never echoed, also when it is bad. */
  cl_config_t cfg;
  char err[ERRLEN];
  const char *yaml = "subscribers:\n  audit:\n    sink:\n      pg: {target: "
                     "\"password=Pg-S3cret port=x\", sql: y}\n";
  cl_config_init(&cfg);
  assert_int_equal(cl_config_load_string(&cfg, yaml, strlen(yaml), "cfg.yaml",
                                         err, sizeof err),
                   CL_ECONFIG);
  const char *want = "cfg.yaml:4:20: subscribers.audit.sink.pg.target: ";
  if (strncmp(err, want, strlen(want)) != 0)
    fail_msg("\"%s\" does not start with \"%s\"", err, want);
  assert_not_contains(err, "Pg-S3cret");
  cl_config_free(&cfg);

  /* More than CL_CONFIG_SUBSCRIBERS_MAX. */
  char many[8192];
  size_t o = (size_t)snprintf(many, sizeof many, "subscribers:\n");
  for (int i = 0; i <= CL_CONFIG_SUBSCRIBERS_MAX; i++)
    o += (size_t)snprintf(many + o, sizeof many - o,
                          "  s%d: {sink: {exec: x}}\n", i);
  expect_error(many, "cfg.yaml:66:3: subscribers: more than 64 subscribers");
}

/* Subscribers come from a file only; a later file's section replaces the
 * whole of an earlier one's, and a failed load leaves it as it was. */
static void subscribers_file_only(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, subs_yaml);
  setenv("CLAIMER_SUBSCRIBERS", "mail", 1);
  setenv("CLAIMER_SUBSCRIBERS_MAIL_MAX_ATTEMPTS", "3", 1);
  assert_int_equal(cl_config_apply_env(&cfg, err, sizeof err), 0);
  unsetenv("CLAIMER_SUBSCRIBERS");
  unsetenv("CLAIMER_SUBSCRIBERS_MAIL_MAX_ATTEMPTS");
  assert_int_equal(cfg.nsubscribers, 4);
  assert_int_equal(cfg.subscribers[0].max_attempts, 5);
  assert_int_equal(
      cl_config_set(&cfg, "subscribers", "mail", "flag", err, sizeof err),
      CL_ECONFIG);
  assert_string_equal(err, "flag: unknown key \"subscribers\"");
  assert_null(cl_config_origin(&cfg, "subscribers"));

  const char *bad = "subscribers:\n  other: {sink: {exec: x}}\n"
                    "  mail: {sink: {exec: x, timeout: -1}}\n";
  assert_int_equal(cl_config_load_string(&cfg, bad, strlen(bad), "bad.yaml",
                                         err, sizeof err),
                   CL_ECONFIG);
  assert_int_equal(cfg.nsubscribers, 4);
  assert_string_equal(cfg.subscribers[0].name, "mail");

  load_ok(&cfg, "subscribers:\n  other: {sink: {exec: y}}\n");
  assert_int_equal(cfg.nsubscribers, 1);
  assert_string_equal(cfg.subscribers[0].name, "other");
  assert_null(cl_config_subscriber(&cfg, "mail"));
  /* A file without the section leaves it alone; an empty one empties it. */
  load_ok(&cfg, "worker:\n  concurrency: 3\n");
  assert_int_equal(cfg.nsubscribers, 1);
  load_ok(&cfg, "subscribers: {}\n");
  assert_int_equal(cfg.nsubscribers, 0);
  load_ok(&cfg, "subscribers:\n");
  assert_int_equal(cfg.nsubscribers, 0);
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  cl_config_free(&cfg);
}

/* Records changed behind the loader's back are checked too. */
static void subscribers_validate(void **state) {
  (void)state;
  cl_config_t cfg;
  char err[ERRLEN];
  cl_config_init(&cfg);
  load_ok(&cfg, subs_yaml);
  cl_config_subscriber_t *m = &cfg.subscribers[0];
  m->max_attempts = 0;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "subscribers.mail.max_attempts: 0 is out of range "
                           "1..1000 (from cfg.yaml:2)");
  m->max_attempts = 5;
  m->rate = -0.5;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "subscribers.mail.rate: -0.5 is out of range "
                           "0..1000000 (from cfg.yaml:2)");
  m->rate = 1;
  m->ordering = (cl_config_ordering_t)7;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "subscribers.mail.ordering: 7 is not a valid value "
                           "(from cfg.yaml:2)");
  m->ordering = CL_CONFIG_ORDERING_NONE;
  m->sink.kind = CL_CONFIG_SINK_PG;
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "subscribers.mail.sink: needs exactly one of exec, "
                           "webhook (with one of secret_file and secret_env) "
                           "or pg (with target and sql) (from cfg.yaml:2)");
  m->sink.kind = CL_CONFIG_SINK_EXEC;
  free(cfg.subscribers[1].name);
  cfg.subscribers[1].name = strdup("mail");
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), CL_ECONFIG);
  assert_string_equal(err, "subscribers: \"mail\" is declared twice (from "
                           "cfg.yaml:14)");
  free(cfg.subscribers[1].name);
  cfg.subscribers[1].name = strdup("hooks");
  assert_int_equal(cl_config_validate(&cfg, err, sizeof err), 0);
  cl_config_free(&cfg);
}

/* config check prints every record with every field, secrets masked, as
 * YAML that loads back to the same records. */
static void subscribers_print(void **state) {
  (void)state;
  cl_config_t a, b;
  char err[ERRLEN];
  cl_config_init(&a);
  load_ok(&a, subs_yaml);
  char *text = print(&a);
  assert_contains(text,
                  "subscribers:                            # cfg.yaml:1\n"
                  "  mail:                                 # cfg.yaml:2\n"
                  "    queues: [emails, v.2]\n"
                  "    from: beginning                     # only when it is "
                  "created\n"
                  "    in_doubt: hold\n"
                  "    max_attempts: 5\n"
                  "    break_after: 0                      # never\n"
                  "    concurrency: 4\n"
                  "    rate: 2.5\n"
                  "    ordering: fifo\n"
                  "    backoff: []                         # 5s, 5m, 30m, 2h, "
                  "5h, then 10h\n"
                  "    sink:\n"
                  "      exec: \"/usr/local/bin/send-mail\"\n"
                  "      timeout: 45s\n"
                  "  hooks:                                # cfg.yaml:14\n"
                  "    queues: []                          # every queue\n"
                  "    from: 17                            # only when it is "
                  "created\n"
                  "    in_doubt: retry\n"
                  "    max_attempts: 10\n"
                  "    break_after: 100\n"
                  "    concurrency: 0                      # no limit\n"
                  "    rate: 0                             # no limit\n"
                  "    ordering: none\n"
                  "    backoff: []                         # 5s, 5m, 30m, 2h, "
                  "5h, then 10h\n"
                  "    sink:\n"
                  "      webhook: \"https://example.com/hook?token=***\"\n"
                  "      secret_file: \"/etc/claimer/hook.secret\"\n"
                  "      timeout: 30s\n");
  assert_contains(text, "    sink:\n"
                        "      pg:\n"
                        "        target: \"password=*** dbname=audit "
                        "host=db\"\n"
                        "        sql: \"INSERT INTO audit_log VALUES ($1, "
                        "$5)\"\n"
                        "      timeout: 30s\n");
  assert_contains(text, "      secret_env: \"RELAY_KEYS\"\n");
  assert_contains(text, "    backoff: [10s, 1m, 1h]\n");
  assert_not_contains(text, "Pg-S3cret");
  assert_not_contains(text, "Tok-3n");
  cl_config_init(&b);
  if (cl_config_load_string(&b, text, strlen(text), "printed", err,
                            sizeof err) != 0)
    fail_msg("%s\n%s", err, text);
  assert_int_equal(cl_config_validate(&b, err, sizeof err), 0);
  assert_int_equal(b.nsubscribers, a.nsubscribers);
  for (size_t i = 0; i < a.nsubscribers; i++) {
    const cl_config_subscriber_t *x = &a.subscribers[i], *y = &b.subscribers[i];
    assert_string_equal(y->name, x->name);
    assert_int_equal(y->nqueues, x->nqueues);
    for (size_t j = 0; j < x->nqueues; j++)
      assert_string_equal(y->queues[j], x->queues[j]);
    assert_string_equal(y->from, x->from != NULL ? x->from : "now");
    assert_int_equal(y->in_doubt, x->in_doubt);
    assert_int_equal(y->max_attempts, x->max_attempts);
    assert_int_equal(y->break_after, x->break_after);
    assert_int_equal(y->concurrency, x->concurrency);
    assert_true(y->rate == x->rate);
    assert_int_equal(y->ordering, x->ordering);
    assert_int_equal(y->nbackoff, x->nbackoff);
    for (size_t j = 0; j < x->nbackoff; j++)
      assert_true(y->backoff_s[j] == x->backoff_s[j]);
    assert_int_equal(y->sink.kind, x->sink.kind);
    assert_true(y->sink.timeout_s == x->sink.timeout_s);
    if (x->sink.exec != NULL)
      assert_string_equal(y->sink.exec, x->sink.exec);
    if (x->sink.pg_sql != NULL)
      assert_string_equal(y->sink.pg_sql, x->sink.pg_sql);
  }
  free(text);
  cl_config_free(&a);
  cl_config_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(defaults, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(full_file, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(layered_files, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(empty_means_defaults, clear_env,
                                      clear_env),
      cmocka_unit_test_setup_teardown(unknown_keys, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(duplicate_keys, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(wrong_types, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(ranges, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(durations, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(sizes, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(strings, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(command_lines, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(queues, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(queue_weights, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(too_many_queues, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(anchors_aliases_tags, clear_env,
                                      clear_env),
      cmocka_unit_test_setup_teardown(documents, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(syntax_errors, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(file_limits, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(dsn_secrets, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(all_or_nothing, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(copy, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(environment, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(set_from_flags, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(validate_rules, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(print_defaults, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(print_round_trip, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(print_round_trip_dsn_characters,
                                      clear_env, clear_env),
      cmocka_unit_test_setup_teardown(reaper_defaults, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(reaper_full, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(reaper_environment, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(reaper_errors, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(reaper_queue_sla, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(reaper_hook_url, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(reaper_print, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(retry_defaults, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(retry_full, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(retry_environment, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(retry_errors, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(retry_policy_set, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(retry_print, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(subscribers_full, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(subscribers_errors, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(subscribers_file_only, clear_env,
                                      clear_env),
      cmocka_unit_test_setup_teardown(subscribers_validate, clear_env,
                                      clear_env),
      cmocka_unit_test_setup_teardown(subscribers_print, clear_env, clear_env),
  };
  return cmocka_run_group_tests_name("config", tests, group_setup,
                                     group_teardown);
}
