/*
 * cli.h: what the subcommands of the `claimer` binary share: exit codes,
 * strict parsing of numbers and JSON arguments, the choice of database
 * (--dsn, CLAIMER_DSN, or the embedded default), and error reporting that
 * maps a library code to an exit status.
 */
#ifndef CLAIMER_CLI_H
#define CLAIMER_CLI_H

#include <getopt.h>
#include <stdio.h>

#include "claimer/claimer.h"

enum {
  EXIT_OK = 0,
  EXIT_ERROR = 1,     /* the database or the system failed */
  EXIT_USAGE = 2,     /* bad usage or bad input; nothing was changed */
  EXIT_LEASE_LOST = 3 /* the token no longer holds the lease */
};

/* The name of the running subcommand, for messages ("claimer enqueue"). */
extern const char *cli_cmd;

/* Prints "claimer CMD: message" on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints a usage error and returns EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports an unknown option or a missing argument from getopt_long(). */
int cli_bad_option(char *const argv[], int optopt_value);

/* Strict parsers: the whole text must be the number, within [min, max].
 * On failure they print "claimer CMD: --name: ..." and return -1. */
int cli_parse_double(const char *text, const char *name, double min, double max,
                     double *out);
/* An age in seconds as a person reads it: "-" (s < 0: none), 45s, 12m,
 * 5h, 3d. */
void cli_format_age(char *out, size_t n, double s);
int cli_parse_int(const char *text, const char *name, long min, long max,
                  int *out);
/* Checks a JSON argument; prints the problem and returns -1 if bad. */
int cli_check_json_arg(const char *text, const char *name);

/* Writes s as a JSON string (quoted, escaped by json-c) to out. */
void cli_put_json_string(FILE *out, const char *s);

/* ------------------------------------------------------------------------ */
/* The DSN and the other secrets of the command line                        */

/* The getopt value of --dsn-file in every option table (--dsn is 'D', or a
 * config flag key in work and reap). */
#define CLI_OPT_DSN_FILE 900
/* The two options of every command that connects, for its option table. */
#define CLI_DSN_OPTIONS                                                        \
  {"dsn", required_argument, NULL, 'D'}, {                                     \
    "dsn-file", required_argument, NULL, CLI_OPT_DSN_FILE                      \
  }
/* What every such command's --help says of them. */
#define CLI_DSN_HELP                                                           \
  "  --dsn DSN              the database: a libpq connection string (URI\n"    \
  "                         or key=value)\n"                                   \
  "  --dsn-file FILE        the same, from the first line of FILE, which\n"    \
  "                         only its owner may read (mode 0600 or less)\n"     \
  "Without either: CLAIMER_DSN, else the embedded PostgreSQL.  Keep a\n"       \
  "password out of --dsn, where ps shows it to every user until claimer\n"     \
  "has masked it: use --dsn-file, CLAIMER_DSN, or libpq's ~/.pgpass (or\n"     \
  "the file PGPASSFILE names), which libpq reads when the DSN has none.\n"

/* The daemons' start-up (connecting, checking, maybe starting the
 * embedded PostgreSQL) comes before their loop watches SIGTERM, SIGINT
 * and SIGHUP.  Holding those signals until then means one that arrives
 * early is acted on by the loop (a drain, exit 0), not by the default
 * action (death by the signal).  cli_hold_signals() blocks them;
 * cli_release_signals() restores the mask, once the loop's handlers are
 * in place, and a held signal is delivered then. */
void cli_hold_signals(void);
void cli_release_signals(void);

/* Remembers the process's argument vector, so that secrets given on the
 * command line can be masked in it (main() calls this first). */
void cli_set_argv(int argc, char **argv);

/* Where a one-shot command's DSN comes from: value is the DSN (NULL: none
 * given), option "--dsn" or "--dsn-file FILE". */
typedef struct cli_dsn {
  const char *value;
  char option[300];
} cli_dsn_t;

/* Takes --dsn (ch 'D') or --dsn-file (ch CLI_OPT_DSN_FILE) with its
 * argument arg into d.  A --dsn value is copied (the copy lives as long as
 * the process) and its passwords are then masked in argv, in place, so that
 * ps and /proc/PID/cmdline show "***"; a --dsn-file is read now
 * (cli_read_dsn_file).  Returns 0, or prints why and returns EXIT_USAGE
 * (both options given, a bad file). */
int cli_dsn_option(cli_dsn_t *d, int ch, char *arg);

/* Copies a connection string given in argv (another than --dsn: a sink's
 * target, say) and masks its password there, as cli_dsn_option() does.
 * Returns the copy (kept for the process), or NULL when out of memory. */
const char *cli_keep_dsn(char *arg);

/* Reads the DSN from the first line of the file path (its line end
 * dropped; the rest of the file is ignored).  The file must be a regular
 * file no one but its owner may read or write (mode 0600 or less, as
 * libpq demands of ~/.pgpass and ssh of a private key), and its first line
 * must not be empty.  Returns a copy that lives as long as the process, or
 * NULL after printing why. */
const char *cli_read_dsn_file(const char *path);

/* Adds a flag of a config-driven command (work, reap, config check) to fs:
 * key is the option's row in the command's table, or NULL for
 * --dsn-file, whose file is read and taken as the flag --dsn-file setting
 * "dsn".  The values of "dsn" and "reaper.hook.url" are copied and masked
 * in argv as cli_dsn_option() does.  Returns 0, or prints why and returns
 * EXIT_USAGE (--dsn with --dsn-file, a bad file, too many flags). */
struct cli_flags;
struct cli_flag_key;
int cli_flag_arg(struct cli_flags *fs, const struct cli_flag_key *key,
                 char *arg);

/* Connects to the database the user chose: dsn_opt (from --dsn), else
 * CLAIMER_DSN, else the embedded PostgreSQL, started when needed.  Returns
 * EXIT_OK with *out set, or an exit status after printing why. */
int cli_connect(const char *dsn_opt, cl_conn_t **out);
/* The same, and also writes the dsn it used (malloc'd) into *dsn_used. */
int cli_connect_dsn(const char *dsn_opt, cl_conn_t **out, char **dsn_used);

/* Prints the failure rc of a library call on c and returns its exit
 * status: 2 for bad input, 3 for a lost lease, 1 otherwise. */
int cli_fail(cl_conn_t *c, int rc, const char *what);

/* A long option that sets a config key: --flag VALUE sets path. */
typedef struct cli_flag_key {
  const char *flag;
  const char *path;
} cli_flag_key_t;

/* Fills opts (room for nbase + nkeys + 1) with the base options, then one
 * required-argument option per key, whose getopt value is 1000 + its
 * index in keys, then the terminator. */
void cli_flag_options(struct option *opts, const struct option *base,
                      size_t nbase, const cli_flag_key_t *keys, size_t nkeys);

/* Config keys set by flags, in the order given, with their origins. */
typedef struct cli_flags {
  const char *path[64];
  const char *value[64];
  const char *origin[64];
  char origin_buf[64][48];
  int n;
} cli_flags_t;

/* Records flag --flag (setting key path) with value.  -1 when full. */
int cli_flag_add(cli_flags_t *fs, const char *flag, const char *path,
                 const char *value);

/* Loads the config: defaults, the YAML file path (may be NULL), CLAIMER_*
 * variables, then the flags, and validates it.  Returns 0, or prints the
 * problem, leaves cfg holding the defaults and returns EXIT_USAGE. */
struct cl_config;
int cli_load_config(struct cl_config *cfg, const char *path,
                    const cli_flags_t *fs);
/* The same, writing the problem into err instead of printing it (for a
 * daemon's reload, which reports it through its log). */
int cli_load_config_quiet(struct cl_config *cfg, const char *path,
                          const cli_flags_t *fs, char *err, size_t errlen);

/* Writes "host:pid" into buf as a default worker name. */
void cli_default_worker(char *buf, size_t n);

/* Subcommands. */
int cmd_migrate(int argc, char **argv);
int cmd_enqueue(int argc, char **argv);
int cmd_claim(int argc, char **argv);
int cmd_complete(int argc, char **argv);
int cmd_fail(int argc, char **argv);
int cmd_heartbeat(int argc, char **argv);
int cmd_release(int argc, char **argv);
int cmd_reap(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_db(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_work(int argc, char **argv);
int cmd_dead(int argc, char **argv);
int cmd_subscriber(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_sink_setup(int argc, char **argv);
int cmd_deliveries(int argc, char **argv);

#endif
