/*
 * sql.h: every statement libclaimer sends on the hot path, in one table.
 * The blocking calls (protocol.c) and the event-loop drivers run the same
 * statements by id, so the SQL lives in one place (sql.c) and each
 * statement's result has one parser (protocol.c).
 */
#ifndef CLAIMER_SQL_H
#define CLAIMER_SQL_H

#define CL__STMT_MAP(XX)                                                       \
  XX(ENQUEUE, 6)                                                               \
  XX(CLAIM, 4)                                                                 \
  XX(COMPLETE, 3)                                                              \
  XX(COMPLETE_CHECK, 2)                                                        \
  XX(COMPLETE_MANY, 3)                                                         \
  XX(COMPLETE_CLAIM, 7)                                                        \
  XX(FAIL, 5)                                                                  \
  XX(FAIL_CHECK, 2)                                                            \
  XX(RELEASE, 2)                                                               \
  XX(HEARTBEAT, 2)                                                             \
  XX(WORKER_HEARTBEAT, 4)                                                      \
  XX(REAP, 1)                                                                  \
  XX(STATUS, 0)                                                                \
  XX(REGISTER, 9)                                                              \
  XX(DEREGISTER, 2)                                                            \
  XX(DEAD_LIST, 2)                                                             \
  XX(DEAD_RETRY, 2)                                                            \
  XX(DEAD_DISCARD, 2)                                                          \
  XX(REAP_WORKERS, 2)                                                          \
  XX(ALERT_OVERDUE, 4)                                                         \
  XX(ALERT_IN_DOUBT, 1)                                                        \
  XX(ALERT_RESOLVE, 1)                                                         \
  XX(ANNOUNCE_CLAIM, 2)                                                        \
  XX(ANNOUNCE_DONE, 5)                                                         \
  XX(RETAIN_DONE, 4)                                                           \
  XX(RETAIN_DEAD, 2)                                                           \
  XX(RETAIN_ALERTS, 2)                                                         \
  XX(RETAIN_WORKERS, 2)                                                        \
  XX(POLICY_SYNC, 4)                                                           \
  XX(SUB_ADD, 10)                                                              \
  XX(SUB_LIST, 0)                                                              \
  XX(SUB_PAUSE, 3)                                                             \
  XX(SUB_REMOVE, 2)                                                            \
  XX(DELIVERY_CLAIM, 4)                                                        \
  XX(DELIVERY_SENT, 3)                                                         \
  XX(DELIVERY_FAIL, 5)                                                         \
  XX(DELIVERY_HEARTBEAT, 3)                                                    \
  XX(SUB_DISABLE, 2)                                                           \
  XX(DELIVERY_LIST, 3)                                                         \
  XX(DELIVERY_RETRY, 2)                                                        \
  XX(DELIVERY_RESOLVE, 3)                                                      \
  XX(DELIVERY_REPLAY, 3)                                                       \
  XX(SUB_SET, 10)                                                              \
  XX(DELIVERY_RELEASE, 2)

typedef enum cl__stmt_id {
#define CL__STMT_ENUM(name, nparams) CL__STMT_##name,
  CL__STMT_MAP(CL__STMT_ENUM)
#undef CL__STMT_ENUM
      CL__STMT_COUNT
} cl__stmt_id_t;

/* Each statement's parameter count, as the list above gives it: the
 * table in sql.c takes its counts from here, so the two cannot disagree
 * (tests/unit/test_sql.c checks the SQL text's highest $N against it). */
enum cl__stmt_nparams {
#define CL__STMT_NP(name, nparams) CL__STMT_NPARAMS_##name = nparams,
  CL__STMT_MAP(CL__STMT_NP)
#undef CL__STMT_NP
};

/* A session's prepared statements are one bit each of a uint64_t. */
_Static_assert(CL__STMT_COUNT <= 64,
               "the statements must fit the 64-bit prepared bitmap");

typedef struct cl__stmt {
  const char *name; /* the statement's name, "claimer_claim" */
  int nparams;
  const char *sql;
} cl__stmt_t;

extern const cl__stmt_t cl__stmts[CL__STMT_COUNT];

/* The name a statement is prepared under: its name and a hash of its
 * text, "claimer_claim_1a2b3c4d".  Two versions of libclaimer whose SQL
 * differs never share a name, so a server session that a pooler hands
 * from one client to another can only hold, under a name, the text that
 * name stands for. */
const char *cl__stmt_name(cl__stmt_id_t id);

#endif
