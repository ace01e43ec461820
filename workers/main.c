/*
 * main.c: the `claimer` command, with subcommands in the manner of git.
 * Each subcommand lives in a cmd_*.c file and returns its exit status:
 * 0 success, 1 error, 2 bad usage or input (nothing changed), 3 lease lost.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command_t;

static const command_t commands[] = {
    {"migrate", cmd_migrate, "apply the pending schema migrations"},
    {"enqueue", cmd_enqueue, "add items (one, or NDJSON from stdin)"},
    {"work", cmd_work, "the worker daemon: claim items and run a handler"},
    {"claim", cmd_claim, "claim ready items; prints one JSON line per lease"},
    {"complete", cmd_complete, "record an item's result and end its lease"},
    {"fail", cmd_fail, "end a lease as a failed attempt (retry or dead)"},
    {"heartbeat", cmd_heartbeat, "extend every lease of a worker"},
    {"release", cmd_release, "give a lease back without spending an attempt"},
    {"reap", cmd_reap, "expire stale leases (--once for cron)"},
    {"dead", cmd_dead, "the dead letters: list, retry, discard"},
    {"send", cmd_send, "the sender daemon: deliver results to a subscriber"},
    {"sink-setup", cmd_sink_setup, "create a pg sink's inbox in its target"},
    {"deliveries", cmd_deliveries,
     "a subscriber's deliveries: list, retry, resolve, replay"},
    {"subscriber", cmd_subscriber,
     "consumers of results: add, set, sync, list, pause, resume, remove"},
    {"status", cmd_status, "per-queue counts and the oldest ready item"},
    {"db", cmd_db, "the embedded PostgreSQL: start, stop, status, url"},
    {"demo", cmd_demo,
     "the whole path in miniature: workers and senders, one of each killed"},
    {"config", cmd_config,
     "check a YAML config file and print the effective config"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: claimer COMMAND [OPTIONS]\n"
               "\n"
               "A lease-based job claimer on PostgreSQL.\n"
               "\n"
               "Commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(out,
          "\n"
          "The database: --dsn DSN or --dsn-file FILE on any command, else\n"
          "CLAIMER_DSN, else an embedded PostgreSQL that claimer creates and\n"
          "starts itself (see `claimer db --help`).  A DSN is any libpq\n"
          "connection string; keep its password out of argv (--dsn-file,\n"
          "CLAIMER_DSN, or libpq's ~/.pgpass / PGPASSFILE).\n"
          "\n"
          "Exit status: 0 success, 1 error, 2 bad usage or input (nothing\n"
          "changed), 3 lease lost.\n"
          "Run `claimer COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv) {
  cli_set_argv(argc, argv);
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *name = argv[1];
  if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 ||
      strcmp(name, "help") == 0) {
    usage(stdout);
    return EXIT_OK;
  }
  if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
    printf("claimer %s (schema version %d)\n", CL_VERSION_STRING,
           cl_schema_version());
    return EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(name, commands[i].name) == 0) {
      static char label[64];
      snprintf(label, sizeof label, "claimer %s", commands[i].name);
      cli_cmd = label;
      return commands[i].run(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "claimer: unknown command \"%s\" (see claimer --help)\n",
          name);
  return EXIT_USAGE;
}
