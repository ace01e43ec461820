/*
 * checker.h: the fault harness's checker.  It reads the files a run of the
 * harness recorded (history.h describes them) from one directory, with no
 * database, and answers whether the guarantees held: nothing lost, at most
 * one result per item and only from the current lease, dead letters
 * exactly the poison items, every result delivered to every subscriber,
 * idempotent sinks that saw each key once, every ambiguous outcome
 * settled, and never two handlers running with live leases on one item.
 * Alongside, what is reported but is no failure: re-runs (effects are at
 * least once), operation outcomes by kind, and fault recovery times.
 */
#ifndef CLAIMER_FAULTS_CHECKER_H
#define CLAIMER_FAULTS_CHECKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* At most this many examples are kept per check. */
#define FC_EXAMPLES 5

/* The checks: enum name, report name, whether a nonzero count fails the
 * run, and what is counted (the examples are of the same thing). */
#define FC_CHECK_LIST(X)                                                       \
  X(LOST, "lost", true, "items enqueued but neither done nor dead")            \
  X(DUPLICATE_RESULTS, "duplicate_results", true,                              \
    "items with more than one result")                                         \
  X(DONE_WITHOUT_RESULT, "done_without_result", true,                          \
    "done items with no result")                                               \
  X(RESULT_NOT_DONE, "result_not_done", true,                                  \
    "items with a result that are not done")                                   \
  X(FENCED_OFF, "fenced_off_results", true,                                    \
    "results whose token is not the item's last grant before the commit")      \
  X(DEAD_NOT_POISON, "dead_not_poison", true,                                  \
    "dead items that are not poison")                                          \
  X(POISON_NOT_DEAD, "poison_not_dead", true,                                  \
    "poison items that are not dead")                                          \
  X(MISSING_DELIVERIES, "missing_deliveries", true,                            \
    "(subscriber, result) with no delivery")                                   \
  X(UNSENT_DELIVERIES, "unsent_deliveries", true,                              \
    "(subscriber, result) whose delivery is not sent")                         \
  X(DUPLICATE_DELIVERIES, "duplicate_deliveries", true,                        \
    "(subscriber, item) with more than one delivery")                          \
  X(DUPLICATE_EFFECTS, "duplicate_effects", true,                              \
    "(sink, key) with more than one effect")                                   \
  X(MISSING_EFFECTS, "missing_effects", true,                                  \
    "(sink, key) expected but with no effect")                                 \
  X(UNRESOLVED_INFO, "unresolved_info", true,                                  \
    "info or open operations the final state cannot settle")                   \
  X(OVERLAPPING_LEASES, "overlapping_live_leases", true,                       \
    "items with two runs at once, both leases live")                           \
  X(RERUNS, "reruns", false, "items whose handler ran more than once")         \
  X(REFUSED, "fenced_completions_refused", false,                              \
    "completes and fails the database refused: their lease was gone")          \
  X(CONCURRENT_RUNS, "concurrent_runs_one_lease", false,                       \
    "items with two runs at once under one lease")                             \
  X(UNEXPECTED_EFFECTS, "unexpected_effects", false,                           \
    "(sink, key) with effects no done item or sent delivery expects")          \
  X(UNEXPLAINED_ITEMS, "unexplained_items", false,                             \
    "items in the final state that no enqueue named")                          \
  X(UNEXPLAINED_GRANTS, "unexplained_grants", false,                           \
    "grants no claim in the history accounts for (the daemons' claims are "    \
    "not recorded there)")                                                     \
  X(RUNS_WITHOUT_GRANT, "runs_without_grant", false,                           \
    "runs whose token was never granted for their item")                       \
  X(TORN_LINES, "torn_lines", false, "torn last lines skipped (file:line)")

typedef enum {
#define FC_CHECK_ENUM(e, name, gates, what) FC_##e,
  FC_CHECK_LIST(FC_CHECK_ENUM)
#undef FC_CHECK_ENUM
      FC_NCHECKS
} fc_check_id_t;

/* A count and its first examples (owned by the report). */
typedef struct {
  uint64_t count;
  size_t nexamples;
  char *examples[FC_EXAMPLES];
} fc_count_t;

/* One kind of operation in history.jsonl: how many were invoked, how they
 * ended (open: no outcome was ever written), and how the info and open
 * ones were settled. */
typedef struct {
  char *op;
  uint64_t invoke, ok, fail, info, open;
  uint64_t committed, not_committed, unresolved;
} fc_op_stats_t;

/* One kind of fault in faults.jsonl: how many, how many were followed by
 * recovery, and the recovery time (recovered - wall) in seconds. */
typedef struct {
  char *kind;
  uint64_t count, recovered;
  double p50, p99, max;
} fc_fault_stats_t;

typedef struct {
  bool pass;
  fc_count_t checks[FC_NCHECKS];
  struct {
    uint64_t lines;      /* lines read, over all files */
    uint64_t items;      /* distinct items seen anywhere */
    uint64_t enqueued;   /* of those, known to have been enqueued */
    uint64_t done, dead; /* final states */
    uint64_t results, grants, runs, extra_runs, effects;
    uint64_t deliveries, subscribers;
    uint64_t info, info_committed, info_not_committed;
  } totals;
  fc_op_stats_t *ops; /* by op name */
  size_t nops;
  fc_fault_stats_t *faults; /* by kind */
  size_t nfaults;
} fc_report_t;

/* fc_check's results: 0, or a negative code with a message in err. */
enum {
  FC_OK = 0,
  FC_EINPUT = -1, /* bad input: a malformed line, a missing field or file */
  FC_EIO = -2,    /* a file could not be read */
  FC_ENOMEM = -3,
};

/* Returns 0 and fills *out (free it with fc_report_free) with the verdict
 * on the files in dir, PASS or FAIL alike; or returns a negative FC_E*
 * code with a message (naming file:line for a bad line) in err, and
 * leaves *out empty (fc_report_free on it is harmless). */
int fc_check(const char *dir, fc_report_t *out, char *err, size_t errlen);

/* Writes the report as a table for people. */
void fc_report_print(FILE *f, const fc_report_t *r);

/* Writes the report as one JSON object and a newline.  Returns 0, or -1
 * when the object could not be built or written. */
int fc_report_json(FILE *f, const fc_report_t *r);

/* Frees what the report owns and empties it.  Accepts NULL. */
void fc_report_free(fc_report_t *r);

/* The report name of a check, and whether a nonzero count fails a run. */
const char *fc_check_name(fc_check_id_t id);
bool fc_check_gates(fc_check_id_t id);

#endif
