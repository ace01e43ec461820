/*
 * test_checker.c: unit tests of the fault harness's checker
 * (tests/faults/checker.c).  Each test writes a small recorded run into a
 * fresh temporary directory: first a clean one (three items: two done and
 * delivered to one subscriber, one poison item dead; every grant, run,
 * effect and fault consistent), then the one change the test is about: a
 * planted anomaly that must be counted and named, an ambiguous outcome
 * that must be settled, or a broken line that must be refused with its
 * file:line.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "checker.h"

typedef struct {
  char dir[64];
  char err[512];
  fc_report_t r;
} fixture_t;

/* ------------------------------------------------------------------------ */
/* Writing a run                                                            */

static void write_file(const fixture_t *f, const char *name, const char *mode,
                       const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", f->dir, name);
  FILE *fp = fopen(path, mode);
  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
}

/* Replaces a file's text. */
static void put(const fixture_t *f, const char *name, const char *text) {
  write_file(f, name, "w", text);
}

/* Adds lines at a file's end. */
static void append(const fixture_t *f, const char *name, const char *text) {
  write_file(f, name, "a", text);
}

static void drop(const fixture_t *f, const char *name) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", f->dir, name);
  assert_int_equal(unlink(path), 0);
}

static const char clean_history[] =
    "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":1,\"type\":\"invoke\","
    "\"items\":[\"f-1\",\"f-2\",\"f-3\"],\"mono\":1.0,\"wall\":100.0}\n"
    "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":1,\"type\":\"ok\","
    "\"mono\":1.1,\"wall\":100.1}\n"
    "{\"p\":\"work-1\",\"op\":\"claim\",\"id\":1,\"type\":\"invoke\","
    "\"wall\":101.0}\n"
    "{\"p\":\"work-2\",\"op\":\"claim\",\"id\":1,\"type\":\"invoke\","
    "\"wall\":101.0}\n"
    "{\"p\":\"work-1\",\"op\":\"claim\",\"id\":1,\"type\":\"ok\","
    "\"items\":[\"f-1\",\"f-2\"],\"tokens\":[\"t1\",\"t2\"],\"wall\":101.1}\n"
    "{\"p\":\"work-2\",\"op\":\"claim\",\"id\":1,\"type\":\"ok\","
    "\"items\":[\"f-3\"],\"tokens\":[\"t3\"],\"wall\":101.5}\n"
    "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":2,\"type\":\"invoke\","
    "\"item\":\"f-3\",\"token\":\"t3\",\"wall\":101.8}\n"
    "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":2,\"type\":\"ok\","
    "\"wall\":101.9}\n"
    "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":2,\"type\":\"invoke\","
    "\"item\":\"f-1\",\"token\":\"t1\",\"wall\":102.0}\n"
    "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":2,\"type\":\"ok\","
    "\"wall\":102.1}\n"
    "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":3,\"type\":\"invoke\","
    "\"item\":\"f-2\",\"token\":\"t2\",\"wall\":102.1}\n"
    "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":3,\"type\":\"ok\","
    "\"wall\":102.2}\n"
    "{\"p\":\"send-1\",\"op\":\"sent\",\"id\":1,\"type\":\"invoke\","
    "\"sub\":\"mail\",\"item\":\"f-1\",\"token\":\"d1\",\"wall\":103.0}\n"
    "{\"p\":\"send-1\",\"op\":\"sent\",\"id\":1,\"type\":\"ok\","
    "\"wall\":103.1}\n";

static const char clean_grants[] =
    "{\"item\":\"f-1\",\"token\":\"t1\",\"worker\":\"work-1\","
    "\"granted\":101.05,\"until\":131.05}\n"
    "{\"item\":\"f-2\",\"token\":\"t2\",\"worker\":\"work-1\","
    "\"granted\":101.05,\"until\":131.05}\n"
    "{\"item\":\"f-3\",\"token\":\"t3\",\"worker\":\"work-2\","
    "\"granted\":101.45,\"until\":131.45}\n"
    "{\"item\":\"f-1\",\"token\":\"t1\",\"worker\":\"work-1\","
    "\"granted\":101.05,\"until\":141.0}\n"
    "{\"item\":\"f-3\",\"token\":\"t3\",\"ended\":101.85,\"how\":\"fail\"}\n"
    "{\"item\":\"f-1\",\"token\":\"t1\",\"ended\":102.05,"
    "\"how\":\"complete\"}\n"
    "{\"item\":\"f-2\",\"token\":\"t2\",\"ended\":102.15,"
    "\"how\":\"complete\"}\n";

static const char clean_items[] =
    "{\"item\":\"f-1\",\"state\":\"done\",\"attempts\":1,\"poison\":false}\n"
    "{\"item\":\"f-2\",\"state\":\"done\",\"attempts\":1,\"poison\":false}\n"
    "{\"item\":\"f-3\",\"state\":\"dead\",\"attempts\":1,\"poison\":true,"
    "\"last_token\":\"t3\"}\n";

static const char clean_results[] =
    "{\"item\":\"f-1\",\"token\":\"t1\",\"attempt\":1,\"committed\":102.05}\n"
    "{\"item\":\"f-2\",\"token\":\"t2\",\"attempt\":1,\"committed\":102.15}\n";

static const char clean_runs[] =
    "{\"item\":\"f-1\",\"token\":\"t1\",\"attempt\":1,\"start\":101.2,"
    "\"end\":101.9,\"key\":\"f-1\"}\n"
    "{\"item\":\"f-3\",\"token\":\"t3\",\"attempt\":1,\"start\":101.6,"
    "\"end\":101.7,\"key\":\"f-3\"}\n"
    "{\"item\":\"f-2\",\"token\":\"t2\",\"attempt\":1,\"start\":101.2,"
    "\"end\":102.0,\"key\":\"f-2\"}\n";

static const char clean_effects[] = "{\"sink\":\"work\",\"key\":\"f-1\"}\n"
                                    "{\"sink\":\"work\",\"key\":\"f-2\"}\n"
                                    "{\"sink\":\"mail\",\"key\":\"k-m-1\"}\n"
                                    "{\"sink\":\"mail\",\"key\":\"k-m-2\"}\n";

static const char clean_deliveries[] =
    "{\"sub\":\"mail\",\"item\":\"f-1\",\"state\":\"sent\",\"key\":\"k-m-1\","
    "\"attempts\":1,\"token\":\"d1\"}\n"
    "{\"sub\":\"mail\",\"item\":\"f-2\",\"state\":\"sent\",\"key\":\"k-m-2\","
    "\"attempts\":2}\n";

static const char clean_faults[] =
    "{\"kind\":\"kill9\",\"target\":\"work-3\",\"wall\":110.0,"
    "\"ended\":110.5,\"recovered\":111.5}\n"
    "{\"kind\":\"cut\",\"target\":\"work-1\",\"wall\":130.0,"
    "\"recovered\":130.25}\n"
    "{\"kind\":\"kill9\",\"target\":\"work-1\",\"wall\":120.0,"
    "\"recovered\":120.5}\n"
    "{\"kind\":\"pg_restart\",\"wall\":140.0}\n";

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/claimer-checker-XXXXXX");
  if (!mkdtemp(f->dir)) {
    free(f);
    return -1;
  }
  *state = f;
  put(f, "history.jsonl", clean_history);
  put(f, "grants.jsonl", clean_grants);
  put(f, "items.jsonl", clean_items);
  put(f, "results.jsonl", clean_results);
  put(f, "runs.jsonl", clean_runs);
  put(f, "effects.jsonl", clean_effects);
  put(f, "deliveries.jsonl", clean_deliveries);
  put(f, "subscribers.jsonl", "{\"sub\":\"mail\"}\n");
  put(f, "faults.jsonl", clean_faults);
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  fc_report_free(&f->r);
  DIR *d = opendir(f->dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      char path[512];
      snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  rmdir(f->dir);
  free(f);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading the verdict                                                      */

/* Runs the checker, which must accept the input; returns the report. */
static const fc_report_t *check(fixture_t *f) {
  fc_report_free(&f->r);
  int rc = fc_check(f->dir, &f->r, f->err, sizeof f->err);
  if (rc != 0)
    print_error("fc_check: %d %s\n", rc, f->err);
  assert_int_equal(rc, 0);
  return &f->r;
}

/* Runs the checker, which must refuse the input with code rc and a message
 * starting with prefix. */
static void refused(fixture_t *f, int rc, const char *prefix) {
  fc_report_free(&f->r);
  assert_int_equal(fc_check(f->dir, &f->r, f->err, sizeof f->err), rc);
  if (strncmp(f->err, prefix, strlen(prefix)) != 0)
    print_error("message: %s\n", f->err);
  assert_int_equal(strncmp(f->err, prefix, strlen(prefix)), 0);
  assert_false(f->r.pass);
}

static uint64_t count(const fc_report_t *r, fc_check_id_t id) {
  return r->checks[id].count;
}

static bool has_example(const fc_report_t *r, fc_check_id_t id,
                        const char *ex) {
  for (size_t i = 0; i < r->checks[id].nexamples; i++)
    if (strcmp(r->checks[id].examples[i], ex) == 0)
      return true;
  return false;
}

/* Fails unless every check but those named (a list ending in -1) is 0. */
static void only(const fc_report_t *r, ...) {
  bool named[FC_NCHECKS] = {false};
  va_list ap;
  va_start(ap, r);
  for (int id = va_arg(ap, int); id >= 0; id = va_arg(ap, int))
    named[id] = true;
  va_end(ap);
  for (int i = 0; i < FC_NCHECKS; i++)
    if (!named[i] && r->checks[i].count != 0) {
      print_error("%s: %llu\n", fc_check_name((fc_check_id_t)i),
                  (unsigned long long)r->checks[i].count);
      fail();
    }
}

static const fc_op_stats_t *op(const fc_report_t *r, const char *name) {
  for (size_t i = 0; i < r->nops; i++)
    if (strcmp(r->ops[i].op, name) == 0)
      return &r->ops[i];
  fail_msg("no operation %s", name);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* The clean run                                                            */

static void clean_history_passes(void **state) {
  const fc_report_t *r = check(*state);
  assert_true(r->pass);
  only(r, -1);
  assert_int_equal(r->totals.items, 3);
  assert_int_equal(r->totals.enqueued, 3);
  assert_int_equal(r->totals.done, 2);
  assert_int_equal(r->totals.dead, 1);
  assert_int_equal(r->totals.results, 2);
  assert_int_equal(r->totals.grants, 3);
  assert_int_equal(r->totals.runs, 3);
  assert_int_equal(r->totals.extra_runs, 0);
  assert_int_equal(r->totals.effects, 4);
  assert_int_equal(r->totals.deliveries, 2);
  assert_int_equal(r->totals.subscribers, 1);
  assert_int_equal(r->totals.info, 0);
  assert_int_equal(r->totals.lines, 14 + 7 + 3 + 2 + 3 + 4 + 2 + 1 + 4);
  /* Operations, by name. */
  assert_int_equal(r->nops, 5);
  assert_string_equal(r->ops[0].op, "claim");
  assert_int_equal(op(r, "claim")->invoke, 2);
  assert_int_equal(op(r, "claim")->ok, 2);
  assert_int_equal(op(r, "complete")->ok, 2);
  assert_int_equal(op(r, "enqueue")->ok, 1);
  assert_int_equal(op(r, "fail")->ok, 1);
  assert_int_equal(op(r, "sent")->ok, 1);
  /* Faults by kind, recovery by nearest rank, counted from the fault's
   * end where it has one (work-3's kill9: 1.0 s, not 1.5). */
  assert_int_equal(r->nfaults, 3);
  assert_string_equal(r->faults[0].kind, "cut");
  assert_string_equal(r->faults[1].kind, "kill9");
  assert_int_equal(r->faults[1].count, 2);
  assert_int_equal(r->faults[1].recovered, 2);
  assert_true(r->faults[1].p50 > 0.49 && r->faults[1].p50 < 0.51);
  assert_true(r->faults[1].p99 > 0.99 && r->faults[1].p99 < 1.01);
  assert_true(r->faults[1].max > 0.99 && r->faults[1].max < 1.01);
  assert_true(r->faults[0].p50 > 0.24 && r->faults[0].p50 < 0.26);
  assert_string_equal(r->faults[2].kind, "pg_restart");
  assert_int_equal(r->faults[2].count, 1);
  assert_int_equal(r->faults[2].recovered, 0);
}

/* Without its optional files (runs, effects, faults, deliveries,
 * subscribers) a run is still read; what they would show is missing (and
 * the mail effects, with no delivery left, are unexpected). */
static void optional_files_may_be_absent(void **state) {
  fixture_t *f = *state;
  drop(f, "runs.jsonl");
  drop(f, "faults.jsonl");
  drop(f, "deliveries.jsonl");
  drop(f, "subscribers.jsonl");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, FC_UNEXPECTED_EFFECTS, -1);
  assert_int_equal(count(r, FC_UNEXPECTED_EFFECTS), 2);
  drop(f, "effects.jsonl");
  r = check(f);
  only(r, FC_MISSING_EFFECTS, -1);
  assert_int_equal(count(r, FC_MISSING_EFFECTS), 2);
  assert_true(has_example(r, FC_MISSING_EFFECTS, "work/f-2"));
}

/* ------------------------------------------------------------------------ */
/* Planted anomalies, one each                                              */

/* An ok enqueue whose item ends ready, and one whose item vanished. */
static void lost_item(void **state) {
  fixture_t *f = *state;
  append(
      f, "history.jsonl",
      "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":"
      "\"invoke\",\"items\":[\"f-4\",\"f-5\"]}\n"
      "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":\"ok\"}\n");
  append(f, "items.jsonl", "{\"item\":\"f-4\",\"state\":\"ready\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_LOST, -1);
  assert_int_equal(count(r, FC_LOST), 2);
  assert_true(has_example(r, FC_LOST, "f-4"));
  assert_true(has_example(r, FC_LOST, "f-5"));
}

/* An item no enqueue names, but that was granted, is known to have
 * existed: it is lost when it did not end done or dead. */
static void granted_item_is_known_enqueued(void **state) {
  fixture_t *f = *state;
  append(f, "grants.jsonl",
         "{\"item\":\"f-6\",\"token\":\"t6\",\"worker\":\"work-9\","
         "\"granted\":105.0,\"until\":135.0}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_LOST, FC_UNEXPLAINED_GRANTS, -1);
  assert_true(has_example(r, FC_LOST, "f-6"));
  assert_true(has_example(r, FC_UNEXPLAINED_GRANTS, "f-6/t6"));
  assert_int_equal(r->totals.enqueued, 4);
}

static void duplicate_result(void **state) {
  fixture_t *f = *state;
  append(f, "results.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t1\",\"committed\":102.5}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_DUPLICATE_RESULTS, -1);
  assert_int_equal(count(r, FC_DUPLICATE_RESULTS), 1);
  assert_true(has_example(r, FC_DUPLICATE_RESULTS, "f-1"));
}

/* A done item without a result, and a result for an item that is dead. */
static void done_without_result_and_result_not_done(void **state) {
  fixture_t *f = *state;
  put(f, "results.jsonl",
      "{\"item\":\"f-1\",\"token\":\"t1\",\"committed\":102.05}\n"
      "{\"item\":\"f-3\",\"token\":\"t3\",\"committed\":101.8}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  assert_int_equal(count(r, FC_DONE_WITHOUT_RESULT), 1);
  assert_true(has_example(r, FC_DONE_WITHOUT_RESULT, "f-2"));
  assert_int_equal(count(r, FC_RESULT_NOT_DONE), 1);
  assert_true(has_example(r, FC_RESULT_NOT_DONE, "f-3"));
  /* f-3 now has a result that mail never got. */
  assert_true(has_example(r, FC_MISSING_DELIVERIES, "mail/f-3"));
  assert_int_equal(count(r, FC_DUPLICATE_RESULTS), 0);
}

/* The result carries the token of an earlier grant, whose lease had been
 * taken over before the result committed. */
static void fenced_off_result(void **state) {
  fixture_t *f = *state;
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"worker\":\"work-3\","
         "\"granted\":100.5,\"until\":100.9}\n");
  put(f, "results.jsonl",
      "{\"item\":\"f-1\",\"token\":\"t0\",\"committed\":102.05}\n"
      "{\"item\":\"f-2\",\"token\":\"t2\",\"committed\":102.15}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_FENCED_OFF, FC_UNEXPLAINED_GRANTS, -1);
  assert_int_equal(count(r, FC_FENCED_OFF), 1);
  assert_true(has_example(r, FC_FENCED_OFF, "f-1"));
}

/* Only grants that began by the commit count: a later grant (say, of a
 * reused id) does not fence an earlier result, and a result whose token
 * was never granted is fenced off. */
static void fencing_counts_grants_up_to_the_commit(void **state) {
  fixture_t *f = *state;
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t9\",\"worker\":\"work-1\","
         "\"granted\":102.05,\"until\":132.0}\n");
  append(f, "history.jsonl",
         "{\"p\":\"work-1\",\"op\":\"claim\",\"id\":4,\"type\":\"invoke\","
         "\"wall\":102.0}\n"
         "{\"p\":\"work-1\",\"op\":\"claim\",\"id\":4,\"type\":\"ok\","
         "\"items\":[\"f-1\"],\"tokens\":[\"t9\"]}\n");
  const fc_report_t *r = check(f);
  /* Granted at the very instant of the commit: it is the last grant. */
  assert_int_equal(count(r, FC_FENCED_OFF), 1);
  put(f, "grants.jsonl", clean_grants);
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t9\",\"worker\":\"work-1\","
         "\"granted\":102.06,\"until\":132.0}\n");
  r = check(f);
  assert_true(r->pass);
  only(r, -1);
  append(f, "results.jsonl",
         "{\"item\":\"f-2\",\"token\":\"never\",\"committed\":103.0}\n");
  r = check(f);
  assert_int_equal(count(r, FC_FENCED_OFF), 1);
  assert_true(has_example(r, FC_FENCED_OFF, "f-2"));
}

static void duplicate_sink_effect(void **state) {
  fixture_t *f = *state;
  append(f, "effects.jsonl", "{\"sink\":\"work\",\"key\":\"f-1\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_DUPLICATE_EFFECTS, -1);
  assert_int_equal(count(r, FC_DUPLICATE_EFFECTS), 1);
  assert_true(has_example(r, FC_DUPLICATE_EFFECTS, "work/f-1"));
}

/* A done item without its work effect, a sent delivery without its sink's;
 * an effect nothing expects is reported but fails nothing. */
static void missing_and_unexpected_effects(void **state) {
  fixture_t *f = *state;
  put(f, "effects.jsonl",
      "{\"sink\":\"work\",\"key\":\"f-1\"}\n"
      "{\"sink\":\"mail\",\"key\":\"k-m-1\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_MISSING_EFFECTS, -1);
  assert_int_equal(count(r, FC_MISSING_EFFECTS), 2);
  assert_true(has_example(r, FC_MISSING_EFFECTS, "work/f-2"));
  assert_true(has_example(r, FC_MISSING_EFFECTS, "mail/k-m-2"));
  put(f, "effects.jsonl", clean_effects);
  append(f, "effects.jsonl", "{\"sink\":\"work\",\"key\":\"f-3\"}\n");
  r = check(f);
  assert_true(r->pass);
  only(r, FC_UNEXPECTED_EFFECTS, -1);
  assert_true(has_example(r, FC_UNEXPECTED_EFFECTS, "work/f-3"));
}

static void dead_item_not_poison(void **state) {
  fixture_t *f = *state;
  put(f, "items.jsonl",
      "{\"item\":\"f-1\",\"state\":\"done\"}\n"
      "{\"item\":\"f-2\",\"state\":\"done\"}\n"
      "{\"item\":\"f-3\",\"state\":\"dead\",\"poison\":false}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_DEAD_NOT_POISON, -1);
  assert_true(has_example(r, FC_DEAD_NOT_POISON, "f-3"));
}

static void poison_item_not_dead(void **state) {
  fixture_t *f = *state;
  put(f, "items.jsonl",
      "{\"item\":\"f-1\",\"state\":\"done\"}\n"
      "{\"item\":\"f-2\",\"state\":\"done\",\"poison\":true}\n"
      "{\"item\":\"f-3\",\"state\":\"dead\",\"poison\":true}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_POISON_NOT_DEAD, -1);
  assert_true(has_example(r, FC_POISON_NOT_DEAD, "f-2"));
}

/* mail misses a result; a second subscriber got nothing. */
static void missing_delivery(void **state) {
  fixture_t *f = *state;
  put(f, "deliveries.jsonl",
      "{\"sub\":\"mail\",\"item\":\"f-1\",\"state\":\"sent\","
      "\"key\":\"k-m-1\"}\n");
  append(f, "subscribers.jsonl", "{\"sub\":\"audit\",\"sink\":\"log\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_MISSING_DELIVERIES, FC_UNEXPECTED_EFFECTS, -1);
  assert_int_equal(count(r, FC_MISSING_DELIVERIES), 3);
  assert_true(has_example(r, FC_MISSING_DELIVERIES, "mail/f-2"));
  assert_true(has_example(r, FC_MISSING_DELIVERIES, "audit/f-1"));
  assert_true(has_example(r, FC_MISSING_DELIVERIES, "audit/f-2"));
}

/* A delivery held for a person is not sent; its sink's effect (maybe
 * applied before the crash) is then not expected. */
static void unsent_delivery(void **state) {
  fixture_t *f = *state;
  put(f, "deliveries.jsonl",
      "{\"sub\":\"mail\",\"item\":\"f-1\",\"state\":\"sent\","
      "\"key\":\"k-m-1\"}\n"
      "{\"sub\":\"mail\",\"item\":\"f-2\",\"state\":\"held\","
      "\"key\":\"k-m-2\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_UNSENT_DELIVERIES, FC_UNEXPECTED_EFFECTS, -1);
  assert_true(has_example(r, FC_UNSENT_DELIVERIES, "mail/f-2"));
  assert_true(has_example(r, FC_UNEXPECTED_EFFECTS, "mail/k-m-2"));
}

static void duplicate_delivery(void **state) {
  fixture_t *f = *state;
  append(f, "deliveries.jsonl",
         "{\"sub\":\"mail\",\"item\":\"f-1\",\"state\":\"sent\","
         "\"key\":\"k-m-1\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_DUPLICATE_DELIVERIES, -1);
  assert_true(has_example(r, FC_DUPLICATE_DELIVERIES, "mail/f-1"));
}

/* ------------------------------------------------------------------------ */
/* Overlapping runs                                                         */

/* A second run of f-1 (token t0, an earlier grant still live) while the
 * run of t1 goes on. */
static void overlapping_live_leases(void **state) {
  fixture_t *f = *state;
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"worker\":\"work-3\","
         "\"granted\":100.4,\"until\":110.0}\n");
  append(f, "runs.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"start\":100.5,\"end\":102.0}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_OVERLAPPING_LEASES, FC_RERUNS, FC_UNEXPLAINED_GRANTS, -1);
  assert_int_equal(count(r, FC_OVERLAPPING_LEASES), 1);
  assert_true(has_example(r, FC_OVERLAPPING_LEASES, "f-1"));
  assert_int_equal(count(r, FC_RERUNS), 1);
  assert_int_equal(r->totals.extra_runs, 1);
}

/* A re-run is no failure: the earlier run ended before the next began, or
 * it ran on but its lease had expired by then. */
static void rerun_without_overlap(void **state) {
  fixture_t *f = *state;
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"worker\":\"work-3\","
         "\"granted\":100.4,\"until\":110.0}\n");
  append(f, "runs.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"start\":100.5,\"end\":101.2}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, FC_RERUNS, FC_UNEXPLAINED_GRANTS, -1);
  assert_true(has_example(r, FC_RERUNS, "f-1"));

  /* Ran until 101.5 (the run of t1 began at 101.2), but the lease of t0
   * was live only until 101.1. */
  put(f, "grants.jsonl", clean_grants);
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"worker\":\"work-3\","
         "\"granted\":100.4,\"until\":101.1}\n");
  put(f, "runs.jsonl", clean_runs);
  append(f, "runs.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"start\":100.5,\"end\":101.5}\n");
  r = check(f);
  assert_true(r->pass);
  only(r, FC_RERUNS, FC_UNEXPLAINED_GRANTS, -1);
}

/* A run with no end (killed) is taken to run until its lease stopped
 * being live: to its last "until", or to its "ended" when that is known. */
static void run_without_end_lasts_its_lease(void **state) {
  fixture_t *f = *state;
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"worker\":\"work-3\","
         "\"granted\":100.4,\"until\":101.5}\n");
  append(f, "runs.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"start\":100.5}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  assert_int_equal(count(r, FC_OVERLAPPING_LEASES), 1);
  /* Its worker row was reaped at 101.0: the lease ended there. */
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t0\",\"ended\":101.0,"
         "\"how\":\"reap\"}\n");
  r = check(f);
  assert_true(r->pass);
  only(r, FC_RERUNS, FC_UNEXPLAINED_GRANTS, -1);
}

/* Two runs at once under one token are one lease run twice: reported
 * apart, no failure. */
static void concurrent_runs_under_one_lease(void **state) {
  fixture_t *f = *state;
  append(f, "runs.jsonl",
         "{\"item\":\"f-2\",\"token\":\"t2\",\"start\":101.5,\"end\":101.6}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, FC_CONCURRENT_RUNS, FC_RERUNS, -1);
  assert_true(has_example(r, FC_CONCURRENT_RUNS, "f-2"));
}

/* ------------------------------------------------------------------------ */
/* Ambiguous outcomes                                                       */

/* An enqueue info whose item exists was committed (and the item must then
 * finish); one whose item does not exist was not, and is not lost. */
static void info_enqueue_settled_both_ways(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":"
         "\"invoke\",\"items\":[\"f-4\"]}\n"
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":\"info\","
         "\"error\":\"connection lost\"}\n"
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":3,\"type\":"
         "\"invoke\",\"item\":\"f-9\"}\n"
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":3,\"type\":\"info\","
         "\"error\":\"connection lost\"}\n");
  append(f, "items.jsonl",
         "{\"item\":\"f-4\",\"state\":\"dead\",\"poison\":true}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, -1);
  const fc_op_stats_t *e = op(r, "enqueue");
  assert_int_equal(e->info, 2);
  assert_int_equal(e->committed, 1);
  assert_int_equal(e->not_committed, 1);
  assert_int_equal(e->unresolved, 0);
  assert_int_equal(r->totals.enqueued, 4);
  assert_int_equal(r->totals.info, 2);
  /* Committed, but never finished: lost. */
  put(f, "items.jsonl", clean_items);
  append(f, "items.jsonl", "{\"item\":\"f-4\",\"state\":\"ready\"}\n");
  r = check(f);
  only(r, FC_LOST, -1);
  assert_true(has_example(r, FC_LOST, "f-4"));
}

/* A complete info is committed when the item's result has its token. */
static void info_complete_settled_both_ways(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":4,\"type\":\"invoke\","
         "\"item\":\"f-1\",\"token\":\"t1\"}\n"
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":4,\"type\":\"info\"}\n"
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":5,\"type\":\"invoke\","
         "\"item\":\"f-2\",\"token\":\"t-old\"}\n"
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":5,\"type\":\"info\"}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, -1);
  const fc_op_stats_t *c = op(r, "complete");
  assert_int_equal(c->info, 2);
  assert_int_equal(c->committed, 1);
  assert_int_equal(c->not_committed, 1);
  assert_int_equal(r->totals.info_committed, 1);
  assert_int_equal(r->totals.info_not_committed, 1);
}

/* A claim info is committed when its worker holds grants no ok claim
 * explains, begun between its invoke and its process's next claim. */
static void info_claim_settled_both_ways(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":"
         "\"invoke\",\"items\":[\"f-4\"]}\n"
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":\"ok\"}\n"
         "{\"p\":\"work-3\",\"op\":\"claim\",\"id\":1,\"type\":\"invoke\","
         "\"wall\":104.0}\n"
         "{\"p\":\"work-3\",\"op\":\"claim\",\"id\":1,\"type\":\"info\"}\n"
         "{\"p\":\"work-3\",\"op\":\"claim\",\"id\":2,\"type\":\"invoke\","
         "\"wall\":106.0}\n"
         "{\"p\":\"work-3\",\"op\":\"claim\",\"id\":2,\"type\":\"info\"}\n");
  append(f, "grants.jsonl",
         "{\"item\":\"f-4\",\"token\":\"t4\",\"worker\":\"work-3\","
         "\"granted\":104.5,\"until\":134.5}\n");
  append(f, "items.jsonl",
         "{\"item\":\"f-4\",\"state\":\"dead\",\"poison\":true}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, -1);
  const fc_op_stats_t *c = op(r, "claim");
  assert_int_equal(c->info, 2);
  assert_int_equal(c->committed, 1);
  assert_int_equal(c->not_committed, 1);
  /* Under another worker name, the grant is not this claim's. */
  put(f, "grants.jsonl", clean_grants);
  append(f, "grants.jsonl",
         "{\"item\":\"f-4\",\"token\":\"t4\",\"worker\":\"elsewhere\","
         "\"granted\":104.5,\"until\":134.5}\n");
  r = check(f);
  assert_int_equal(op(r, "claim")->not_committed, 2);
  assert_true(has_example(r, FC_UNEXPLAINED_GRANTS, "f-4/t4"));
}

/* An ok claim's items and tokens replace the items its invoke named (the
 * ones asked for): its grants are then explained by it. */
static void claim_ok_items_replace_the_invoke_s(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":"
         "\"invoke\",\"items\":[\"f-4\"]}\n"
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":\"ok\"}\n"
         "{\"p\":\"work-3\",\"op\":\"claim\",\"id\":1,\"type\":\"invoke\","
         "\"items\":[\"f-4\",\"f-5\"],\"wall\":104.0}\n"
         "{\"p\":\"work-3\",\"op\":\"claim\",\"id\":1,\"type\":\"ok\","
         "\"items\":[\"f-4\"],\"tokens\":[\"t4\"]}\n");
  append(f, "grants.jsonl",
         "{\"item\":\"f-4\",\"token\":\"t4\",\"worker\":\"work-3\","
         "\"granted\":104.5,\"until\":134.5}\n");
  append(f, "items.jsonl",
         "{\"item\":\"f-4\",\"state\":\"dead\",\"poison\":true}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, -1);
}

/* A fail info: committed when items.last_token or the lease's end says
 * so; not when a result carries the token, or when the lease is the
 * item's last and last_token is another; else it cannot be settled. */
static void info_fail_settled(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":3,\"type\":\"invoke\","
         "\"item\":\"f-3\",\"token\":\"t3\"}\n"
         "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":3,\"type\":\"info\"}\n"
         "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":4,\"type\":\"invoke\","
         "\"item\":\"f-1\",\"token\":\"t1\"}\n"
         "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":4,\"type\":\"info\"}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  assert_int_equal(op(r, "fail")->committed, 1);
  assert_int_equal(op(r, "fail")->not_committed, 1);

  /* Without last_token, the end line settles it. */
  put(f, "items.jsonl",
      "{\"item\":\"f-1\",\"state\":\"done\"}\n"
      "{\"item\":\"f-2\",\"state\":\"done\"}\n"
      "{\"item\":\"f-3\",\"state\":\"dead\",\"poison\":true}\n");
  r = check(f);
  assert_int_equal(op(r, "fail")->committed, 1);

  /* Without either: for the item's last lease, a null last_token says
   * the fail did not land (the lease ran out). */
  const char *no_end =
      "{\"item\":\"f-1\",\"token\":\"t1\",\"worker\":\"work-1\","
      "\"granted\":101.05,\"until\":131.05}\n"
      "{\"item\":\"f-2\",\"token\":\"t2\",\"worker\":\"work-1\","
      "\"granted\":101.05,\"until\":131.05}\n"
      "{\"item\":\"f-3\",\"token\":\"t3\",\"worker\":\"work-2\","
      "\"granted\":101.45,\"until\":131.45}\n";
  put(f, "grants.jsonl", no_end);
  put(f, "items.jsonl",
      "{\"item\":\"f-1\",\"state\":\"done\"}\n"
      "{\"item\":\"f-2\",\"state\":\"done\"}\n"
      "{\"item\":\"f-3\",\"state\":\"dead\",\"poison\":true,"
      "\"last_token\":null}\n");
  r = check(f);
  assert_true(r->pass);
  assert_int_equal(op(r, "fail")->not_committed, 2);
  assert_int_equal(op(r, "fail")->unresolved, 0);
}

/* An info nothing in the final state can settle fails the run: a fail of
 * an earlier lease with no end line and another last_token, and an op
 * the checker has no rule for. */
static void unresolved_info(void **state) {
  fixture_t *f = *state;
  append(f, "grants.jsonl",
         "{\"item\":\"f-3\",\"token\":\"t3a\",\"worker\":\"work-2\","
         "\"granted\":100.2,\"until\":100.4}\n");
  append(
      f, "history.jsonl",
      "{\"p\":\"work-2\",\"op\":\"claim\",\"id\":0,\"type\":\"invoke\","
      "\"wall\":100.1}\n"
      "{\"p\":\"work-2\",\"op\":\"claim\",\"id\":0,\"type\":\"ok\","
      "\"items\":[\"f-3\"],\"tokens\":[\"t3a\"]}\n"
      "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":5,\"type\":\"invoke\","
      "\"item\":\"f-3\",\"token\":\"t3a\"}\n"
      "{\"p\":\"work-2\",\"op\":\"fail\",\"id\":5,\"type\":\"info\"}\n"
      "{\"p\":\"work-2\",\"op\":\"heartbeat\",\"id\":6,\"type\":\"invoke\"}\n"
      "{\"p\":\"work-2\",\"op\":\"heartbeat\",\"id\":6,\"type\":\"info\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);
  only(r, FC_UNRESOLVED_INFO, -1);
  assert_int_equal(count(r, FC_UNRESOLVED_INFO), 2);
  assert_true(has_example(r, FC_UNRESOLVED_INFO, "work-2#5 fail"));
  assert_true(has_example(r, FC_UNRESOLVED_INFO, "work-2#6 heartbeat"));
  assert_int_equal(op(r, "fail")->unresolved, 1);
}

/* An invoke with no outcome is open and settled like an info; a restarted
 * process that counts its ids again leaves the old invoke open. */
static void open_operations_are_settled(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":7,\"type\":\"invoke\","
         "\"item\":\"f-2\",\"token\":\"t2\"}\n"
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":7,\"type\":\"invoke\","
         "\"item\":\"f-1\",\"token\":\"t-x\"}\n"
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":7,\"type\":\"fail\","
         "\"error\":\"lease lost\"}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  const fc_op_stats_t *c = op(r, "complete");
  assert_int_equal(c->invoke, 4);
  assert_int_equal(c->ok, 2);
  assert_int_equal(c->fail, 1);
  assert_int_equal(c->open, 1);
  assert_int_equal(c->committed, 1);
  assert_int_equal(r->totals.info, 1);
}

/* ------------------------------------------------------------------------ */
/* Bad input                                                                */

/* A writer killed mid-line leaves an unterminated last line: counted and
 * skipped in the files written during faults. */
static void torn_last_line_is_tolerated(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl", "{\"p\":\"work-1\",\"op\":\"compl");
  append(f, "runs.jsonl", "{\"item\":\"f-2\",\"tok");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, FC_TORN_LINES, -1);
  assert_int_equal(count(r, FC_TORN_LINES), 2);
  assert_true(has_example(r, FC_TORN_LINES, "history.jsonl:15"));
  assert_true(has_example(r, FC_TORN_LINES, "runs.jsonl:4"));
  /* A complete last line without its newline is simply read. */
  put(f, "runs.jsonl", clean_runs);
  append(f, "effects.jsonl", "{\"sink\":\"work\",\"key\":\"f-1\"}");
  r = check(f);
  only(r, FC_TORN_LINES, FC_DUPLICATE_EFFECTS, -1);
}

/* The dumps are written after the drain: a torn line there is bad. */
static void torn_line_in_a_dump_is_bad(void **state) {
  fixture_t *f = *state;
  append(f, "items.jsonl", "{\"item\":\"f-4\",\"sta");
  refused(f, FC_EINPUT,
          "items.jsonl:4: not JSON: the line ends inside a value (a torn "
          "last line: bad in a dump)");
}

static void malformed_middle_line(void **state) {
  fixture_t *f = *state;
  put(f, "results.jsonl",
      "{\"item\":\"f-1\",\"token\":\"t1\",\"committed\":102.05}\n"
      "{\"item\":\"f-2\",\"token\":\"t2\" \"committed\":102.15}\n"
      "{\"item\":\"f-3\",\"token\":\"t3\",\"committed\":102.15}\n");
  refused(f, FC_EINPUT, "results.jsonl:2: not JSON: ");
  /* A bad last line with its newline is no torn line, even in history. */
  put(f, "results.jsonl", clean_results);
  append(f, "history.jsonl", "{\"p\":\"work-1\",\"op\":\"compl\n");
  refused(f, FC_EINPUT, "history.jsonl:15: not JSON: ");
  put(f, "history.jsonl", clean_history);
  append(f, "effects.jsonl", "[\"work\",\"f-1\"]\n");
  refused(f, FC_EINPUT, "effects.jsonl:5: not a JSON object");
  put(f, "effects.jsonl", clean_effects);
  append(f, "faults.jsonl", "\n");
  refused(f, FC_EINPUT, "faults.jsonl:5: an empty line");
}

static void missing_or_mistyped_field(void **state) {
  fixture_t *f = *state;
  append(f, "runs.jsonl", "{\"item\":\"f-1\",\"start\":100.0}\n");
  refused(f, FC_EINPUT, "runs.jsonl:4: \"token\" is missing");
  put(f, "runs.jsonl", clean_runs);
  append(f, "history.jsonl",
         "{\"p\":\"work-1\",\"op\":\"claim\",\"id\":\"9\",\"type\":"
         "\"invoke\"}\n");
  refused(f, FC_EINPUT, "history.jsonl:15: \"id\" is not an integer");
  put(f, "history.jsonl", clean_history);
  append(f, "grants.jsonl",
         "{\"item\":\"f-1\",\"token\":\"t7\",\"granted\":\"soon\"}\n");
  refused(f, FC_EINPUT, "grants.jsonl:8: \"granted\" is not a number");
  put(f, "grants.jsonl", clean_grants);
  append(f, "history.jsonl",
         "{\"p\":\"work-1\",\"op\":\"claim\",\"id\":9,\"type\":\"done\"}\n");
  refused(f, FC_EINPUT, "history.jsonl:15: \"type\" is \"done\"");
}

/* An outcome must follow its invoke; a token is one item's. */
static void inconsistent_records(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"work-1\",\"op\":\"complete\",\"id\":2,\"type\":\"ok\"}\n");
  refused(f, FC_EINPUT,
          "history.jsonl:15: ok of work-1#2 without an invoke waiting");
  put(f, "history.jsonl", clean_history);
  append(f, "grants.jsonl",
         "{\"item\":\"f-2\",\"token\":\"t1\",\"granted\":1,\"until\":2}\n");
  refused(f, FC_EINPUT, "grants.jsonl:8: token \"t1\" is granted for");
  put(f, "grants.jsonl", clean_grants);
  append(f, "grants.jsonl",
         "{\"item\":\"f-2\",\"token\":\"t8\",\"ended\":103.0}\n");
  refused(f, FC_EINPUT, "grants.jsonl:8: token \"t8\" ended but was never");
  put(f, "grants.jsonl", clean_grants);
  append(f, "items.jsonl", "{\"item\":\"f-1\",\"state\":\"done\"}\n");
  refused(f, FC_EINPUT, "items.jsonl:4: item \"f-1\" twice");
}

static void missing_required_file(void **state) {
  fixture_t *f = *state;
  drop(f, "grants.jsonl");
  char want[128];
  snprintf(want, sizeof want, "%s/grants.jsonl: ", f->dir);
  refused(f, FC_EINPUT, want);
}

/* ------------------------------------------------------------------------ */
/* The report's two forms                                                   */

static char *read_all(FILE *fp) {
  long n = ftell(fp);
  assert_true(n > 0);
  char *s = malloc((size_t)n + 1);
  assert_non_null(s);
  rewind(fp);
  assert_int_equal(fread(s, 1, (size_t)n, fp), (size_t)n);
  s[n] = '\0';
  return s;
}

static void report_as_json_and_table(void **state) {
  fixture_t *f = *state;
  append(
      f, "history.jsonl",
      "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":"
      "\"invoke\",\"items\":[\"f-4\"]}\n"
      "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":\"ok\"}\n");
  const fc_report_t *r = check(f);
  assert_false(r->pass);

  FILE *fp = tmpfile();
  assert_non_null(fp);
  assert_int_equal(fc_report_json(fp, r), 0);
  char *text = read_all(fp);
  fclose(fp);
  json_object *o = json_tokener_parse(text);
  free(text);
  assert_non_null(o);
  json_object *v, *k;
  assert_true(json_object_object_get_ex(o, "pass", &v));
  assert_false(json_object_get_boolean(v));
  assert_true(json_object_object_get_ex(o, "checks", &v));
  assert_true(json_object_object_get_ex(v, "lost", &k));
  assert_true(json_object_object_get_ex(k, "count", &v));
  assert_int_equal(json_object_get_int64(v), 1);
  assert_true(json_object_object_get_ex(k, "examples", &v));
  assert_int_equal(json_object_array_length(v), 1);
  assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 0)),
                      "f-4");
  assert_true(json_object_object_get_ex(k, "fails", &v));
  assert_true(json_object_get_boolean(v));
  assert_true(json_object_object_get_ex(o, "operations", &v));
  assert_true(json_object_object_get_ex(v, "enqueue", &k));
  assert_true(json_object_object_get_ex(k, "ok", &v));
  assert_int_equal(json_object_get_int64(v), 2);
  assert_true(json_object_object_get_ex(o, "faults", &v));
  assert_true(json_object_object_get_ex(v, "kill9", &k));
  assert_true(json_object_object_get_ex(k, "p50_s", &v));
  assert_string_equal(json_object_to_json_string(v), "0.500");
  assert_true(json_object_object_get_ex(o, "totals", &v));
  assert_true(json_object_object_get_ex(v, "enqueued", &k));
  assert_int_equal(json_object_get_int64(k), 4);
  json_object_put(o);

  fp = tmpfile();
  assert_non_null(fp);
  fc_report_print(fp, r);
  text = read_all(fp);
  fclose(fp);
  assert_non_null(strstr(text, "fault check: FAIL"));
  assert_non_null(strstr(text, "FAIL f-4"));
  assert_non_null(strstr(text, "kill9"));
  free(text);
}

/* A complete and a fail answered "lease lost" (a zombie fenced off by the
 * database) are reported, and are no failure of the run. */
static void refused_completions_are_reported(void **state) {
  fixture_t *f = *state;
  append(f, "history.jsonl",
         "{\"p\":\"client-1\",\"op\":\"complete\",\"id\":9,\"type\":"
         "\"invoke\",\"item\":\"f-1\",\"token\":\"t0\",\"wall\":103.0}\n"
         "{\"p\":\"client-1\",\"op\":\"complete\",\"id\":9,\"type\":"
         "\"fail\",\"error\":\"lease_lost\",\"wall\":103.1}\n"
         "{\"p\":\"client-1\",\"op\":\"fail\",\"id\":10,\"type\":"
         "\"invoke\",\"item\":\"f-3\",\"token\":\"t9\",\"wall\":103.2}\n"
         "{\"p\":\"client-1\",\"op\":\"fail\",\"id\":10,\"type\":"
         "\"fail\",\"wall\":103.3}\n");
  const fc_report_t *r = check(f);
  assert_true(r->pass);
  only(r, FC_REFUSED, -1);
  assert_int_equal(count(r, FC_REFUSED), 2);
  assert_true(has_example(r, FC_REFUSED, "complete f-1/t0"));
  assert_true(has_example(r, FC_REFUSED, "fail f-3/t9"));
}

/* Runs check-history (its path from CHECK_HISTORY, set by meson) with
 * args; its standard output goes to out (NULL: /dev/null).  Returns its
 * exit status. */
static int check_history(const char *out, const char *a1, const char *a2,
                         const char *a3) {
  const char *bin = getenv("CHECK_HISTORY");
  assert_non_null(bin);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int null = open("/dev/null", O_WRONLY);
    if (fd < 0 || null < 0)
      _exit(127);
    dup2(fd, 1);
    dup2(null, 2);
    execl(bin, bin, a1, a2, a3, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  return WEXITSTATUS(st);
}

/* check-history's exit status: 0 for a clean run, 1 for a planted
 * anomaly, 2 for bad input and bad usage; --json - writes the report as
 * one JSON object on standard output. */
static void check_history_exit_codes(void **state) {
  fixture_t *f = *state;
  char json[128];
  snprintf(json, sizeof json, "%s/out.json", f->dir);
  assert_int_equal(check_history(NULL, f->dir, NULL, NULL), 0);
  assert_int_equal(check_history(json, f->dir, "--json", "-"), 0);
  json_object *o = json_object_from_file(json);
  assert_non_null(o);
  json_object *v;
  assert_true(json_object_object_get_ex(o, "pass", &v));
  assert_true(json_object_get_boolean(v));
  json_object_put(o);
  unlink(json);
  append(f, "items.jsonl", "{\"item\":\"f-4\",\"state\":\"ready\"}\n");
  append(f, "history.jsonl",
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":"
         "\"invoke\",\"items\":[\"f-4\"]}\n"
         "{\"p\":\"producer-1\",\"op\":\"enqueue\",\"id\":2,\"type\":"
         "\"ok\"}\n");
  assert_int_equal(check_history(NULL, f->dir, NULL, NULL), 1);
  put(f, "results.jsonl", "{\"item\":\"f-1\",\"token\":\n");
  assert_int_equal(check_history(NULL, f->dir, NULL, NULL), 2);
  assert_int_equal(check_history(NULL, "/nonexistent/claimer-run", NULL, NULL),
                   2);
  assert_int_equal(check_history(NULL, "--bogus", NULL, NULL), 2);
  assert_int_equal(check_history(NULL, f->dir, f->dir, NULL), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(refused_completions_are_reported, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(check_history_exit_codes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(clean_history_passes, setup, teardown),
      cmocka_unit_test_setup_teardown(optional_files_may_be_absent, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(lost_item, setup, teardown),
      cmocka_unit_test_setup_teardown(granted_item_is_known_enqueued, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(duplicate_result, setup, teardown),
      cmocka_unit_test_setup_teardown(done_without_result_and_result_not_done,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(fenced_off_result, setup, teardown),
      cmocka_unit_test_setup_teardown(fencing_counts_grants_up_to_the_commit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(duplicate_sink_effect, setup, teardown),
      cmocka_unit_test_setup_teardown(missing_and_unexpected_effects, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(dead_item_not_poison, setup, teardown),
      cmocka_unit_test_setup_teardown(poison_item_not_dead, setup, teardown),
      cmocka_unit_test_setup_teardown(missing_delivery, setup, teardown),
      cmocka_unit_test_setup_teardown(unsent_delivery, setup, teardown),
      cmocka_unit_test_setup_teardown(duplicate_delivery, setup, teardown),
      cmocka_unit_test_setup_teardown(overlapping_live_leases, setup, teardown),
      cmocka_unit_test_setup_teardown(rerun_without_overlap, setup, teardown),
      cmocka_unit_test_setup_teardown(run_without_end_lasts_its_lease, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(concurrent_runs_under_one_lease, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(info_enqueue_settled_both_ways, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(info_complete_settled_both_ways, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(info_claim_settled_both_ways, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(claim_ok_items_replace_the_invoke_s,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(info_fail_settled, setup, teardown),
      cmocka_unit_test_setup_teardown(unresolved_info, setup, teardown),
      cmocka_unit_test_setup_teardown(open_operations_are_settled, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(torn_last_line_is_tolerated, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(torn_line_in_a_dump_is_bad, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(malformed_middle_line, setup, teardown),
      cmocka_unit_test_setup_teardown(missing_or_mistyped_field, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(inconsistent_records, setup, teardown),
      cmocka_unit_test_setup_teardown(missing_required_file, setup, teardown),
      cmocka_unit_test_setup_teardown(report_as_json_and_table, setup,
                                      teardown),
  };
  return cmocka_run_group_tests_name("checker", tests, NULL, NULL);
}
