/*
 * harness.h: the integration tests' fixture.  th_pg_start() starts one
 * throwaway PostgreSQL for a test program (initdb into a temp dir, fsync
 * off, a unix socket and a free TCP port on 127.0.0.1, as the unprivileged
 * server user when run as root), or uses the server named by
 * CLAIMER_TEST_DSN when set.  Each test then makes a fresh database of its
 * own with th_db_create().  On failure the server's log is printed.
 *
 * The TCP side's pg_hba.conf trusts every role except claimer_pw, which
 * must give its password (scram-sha-256): the wrong-password tests use it.
 */
#ifndef CLAIMER_TEST_HARNESS_H
#define CLAIMER_TEST_HARNESS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct th_pg {
  int own;       /* 1: this process started the server */
  char dir[512]; /* temp dir holding data/, sock/, log */
  char sockdir[600];
  char log[600];
  char bindir[512];
  char user[64];        /* the server's superuser */
  int port;             /* TCP port on 127.0.0.1 (0 when external) */
  char admin_dsn[1024]; /* the postgres database */
} th_pg_t;

/* The server of this test program, started by th_group_setup(). */
extern th_pg_t th_pg;
/* cmocka group setup and teardown: start and stop th_pg. */
int th_group_setup(void **state);
/* Applies CLAIMER_TEST_FILTER (a cmocka pattern such as test_sigstop) to
 * the tests run next; call before cmocka_run_group_tests(). */
void th_filter_from_env(void);
int th_group_teardown(void **state);

/* Starts (or attaches to) the server.  Returns 0, or -1 after printing why. */
int th_pg_start(th_pg_t *pg);
/* Stops a server th_pg_start() started and removes its files. */
void th_pg_stop(th_pg_t *pg);
/* Restarts the server the harness started (pg_ctl stop -m fast, a pause of
 * pause_s, start), or fails the test. */
void th_pg_restart(th_pg_t *pg, double pause_s);

/* Creates database name afresh (dropping an old one), migrated to the
 * current schema when migrate is 1, and writes a unix-socket DSN for it into
 * dsn.  Returns 0 or -1 after printing why. */
int th_db_create(th_pg_t *pg, const char *name, int migrate, char *dsn,
                 size_t n);
/* The same database over TCP on 127.0.0.1 (for proxies and password
 * tests).  Returns 0, or -1 when the server has no TCP port (external). */
int th_db_tcp_dsn(th_pg_t *pg, const char *name, int port, char *dsn, size_t n);

/* Connects or fails the test. */
PGconn *th_connect(const char *dsn);
/* Runs sql (no parameters) or fails the test. */
void th_exec(PGconn *pg, const char *sql);
/* Runs sql and returns the first column of its first row as a long, or
 * fails the test. */
long th_long(PGconn *pg, const char *sql);
/* The same as text, into buf of cap bytes (cut to fit). */
void th_text(PGconn *pg, const char *sql, char *buf, size_t cap);

/* Runs the program argv (argv[0] a path) with stdin_data on its stdin (NULL:
 * /dev/null) and returns its exit status (128 + signal when killed);
 * stdout and stderr together go to a malloc'd string in *output when output
 * is not NULL.  The environment is the caller's less CLAIMER_DSN. */
int th_run(const char *const argv[], const char *stdin_data, char **output);

/* Waits up to timeout_s for process pid to catch SIGTERM (its handler in
 * place, as /proc/PID/status's SigCgt shows), so that a SIGTERM sent to
 * a process just spawned asks it to stop instead of killing it before its
 * handlers exist.  Returns 1 when it does, 0 on the timeout or when the
 * process is gone. */
int th_wait_sigterm_caught(pid_t pid, double timeout_s);

/* Starts argv (argv[0] a path, or a name found in PATH) in a process
 * group of its own, stdin from /dev/null, stdout and stderr written to
 * log_path (truncated first).  Returns its pid, or fails the test. */
pid_t th_spawn(const char *const argv[], const char *log_path);
/* Waits for pid up to timeout_s; returns its exit status (128 + signal),
 * or -1 on timeout. */
int th_wait_exit(pid_t pid, double timeout_s);
/* The whole file at path (malloc'd; "" when it does not exist). */
char *th_read_file(const char *path);
/* Counts the occurrences of needle in s. */
int th_count(const char *s, const char *needle);

/* Writes the words of CLAIMER_TEST_WRAP (a tool to run the daemons under,
 * such as valgrind; split on spaces) into argv[0..max) and returns how
 * many; 0 when it is not set. */
int th_wrap(const char **argv, int max);

/* Skips the running cmocka test after printing why (a test that cannot
 * run says so; it never silently vanishes).  Needs <cmocka.h>. */
#define th_skip(why)                                                           \
  do {                                                                         \
    print_message("skipped: %s\n", (why));                                     \
    skip();                                                                    \
  } while (0)

/* The path of the claimer binary (CLAIMER_BIN from meson). */
const char *th_claimer_bin(void);

/* Monotonic seconds. */
double th_now(void);

#endif
