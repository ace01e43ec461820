/*
 * cmd_work.c: `claimer work`, the worker daemon.  It reads the config (a
 * YAML file, then CLAIMER_* variables, then flags), checks the database
 * once before it starts (a wrong password or a missing schema stops it
 * here with a clear message instead of a reconnect loop), then runs one
 * libuv loop: the in-process worker of libclaimer with the exec handler,
 * and the signals.  SIGTERM or SIGINT drains (a second one exits at once);
 * SIGHUP reloads the config file.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "claimer/worker.h"
#include "cli.h"
#include "config.h"
#include "exec_handler.h"
#include "log.h"

typedef struct daemon {
  uv_loop_t loop;
  cl_worker_t *w;
  xhandler_t xh;
  cl_config_t cfg;
  const char *config_path;
  cli_flags_t *flags;
  uv_signal_t sigterm, sigint, sighup;
  int signals_seen;
  int exit_rc;
  char dsn_origin[64];
} daemon_t;

static const cli_flag_key_t flag_keys[] = {
    {"dsn", "dsn"},
    {"name", "worker.name"},
    {"concurrency", "worker.concurrency"},
    {"lease", "worker.lease"},
    {"heartbeat", "worker.heartbeat"},
    {"poll", "worker.poll_interval"},
    {"exec", "worker.command"},
    {"timeout", "worker.timeout"},
    {"result-max", "worker.result_max"},
    {"stderr-max", "worker.stderr_max"},
    {"drain-timeout", "worker.drain_timeout"},
    {"kill-grace", "worker.kill_grace"},
    {"prefetch", "worker.prefetch"},
    {"log-format", "log.format"},
    {"log-level", "log.level"},
};
#define NFLAGS (sizeof flag_keys / sizeof flag_keys[0])

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: claimer work -q QUEUE[:WEIGHT] [-q ...] --exec COMMAND "
      "[OPTIONS]\n"
      "\n"
      "Claims items of the queues and runs COMMAND (by /bin/sh -c) once "
      "per item:\n"
      "the payload on stdin; CLAIMER_ITEM_ID, CLAIMER_ATTEMPT, "
      "CLAIMER_TOKEN,\n"
      "CLAIMER_QUEUE and CLAIMER_IDEMPOTENCY_KEY in the environment.  "
      "Exit 0:\n"
      "complete, stdout is the result (JSON, or stored as a JSON "
      "string).  Exit 75:\n"
      "retry with backoff.  Any other exit or a signal: failed for good "
      "(dead),\n"
      "stderr's tail kept as the error.\n"
      "\n"
      "Options (each also a config key; see `claimer config check`):\n"
      "  -c, --config FILE      YAML config (default: CLAIMER_CONFIG)\n"
      "  -q, --queue Q[:W]      a queue (letters, digits, _ . -), with "
      "a weight\n"
      "                         W from 1 to 1000 (default 1) when several "
      "(repeatable)\n"
      "  --exec COMMAND         the handler command\n"
      "  --concurrency N        items handled at once (default 8)\n"
      "  --lease DUR            lease length (default 30s)\n"
      "  --heartbeat DUR        heartbeat interval (default lease/3)\n"
      "  --poll DUR             poll interval when no NOTIFY comes "
      "(default 2s)\n"
      "  --timeout DUR          per-item handler timeout (default 5m; 0: "
      "none)\n"
      "  --result-max SIZE      stdout kept as the result (default "
      "1MiB)\n"
      "  --stderr-max SIZE      stderr tail kept as the error (default "
      "4KiB)\n"
      "  --drain-timeout DUR    on SIGTERM, wait this long for running "
      "items (30s)\n"
      "  --kill-grace DUR       SIGTERM to SIGKILL for a stopped handler "
      "(5s)\n"
      "  --prefetch N           items claimed ahead (default: automatic, "
      "concurrency/4 up\n"
      "                         to max(1024, 4 x concurrency) as fast "
      "jobs need)\n"
      "  --name NAME            worker id, unique (default host:pid:random)\n"
      "  --log-format F         logfmt (default) or json\n"
      "  --log-level L          debug, info (default), warning, error\n" CLI_DSN_HELP
      "\n"
      "Signals: SIGTERM or SIGINT stops claiming, releases unstarted "
      "items, lets\n"
      "running ones finish up to the drain timeout, and exits 0; a "
      "second one exits\n"
      "at once (leases then expire).  SIGHUP reloads the config file: "
      "concurrency,\n"
      "command, result and stderr limits, kill grace and logging change "
      "at once;\n"
      "a change to anything else is logged as needing a restart.\n"
      "\n"
      "Exit status: 0 after a drain, 1 on a database or system error, 2 "
      "on bad\n"
      "usage or config, or a --name another live worker holds.\n");
}

/* Loads file, environment and flags into cfg and validates.  Returns 0,
 * or EXIT_USAGE with the problem in why (a reload logs it) or, when why is
 * NULL, printed. */
static int load_config(cl_config_t *cfg, const char *path,
                       const cli_flags_t *fs, char *why, size_t whylen) {
  char err[1024];
  if (cli_load_config_quiet(cfg, path, fs, err, sizeof err) != EXIT_OK) {
    if (why)
      snprintf(why, whylen, "%s", err);
    else
      cli_err("%s", err);
    return EXIT_USAGE;
  }
  int rc = 0;
  if (rc == 0 && cfg->worker.nqueues == 0) {
    snprintf(err, sizeof err,
             "no queue to work on (give -q QUEUE, CLAIMER_WORKER_QUEUES or "
             "worker.queues)");
    rc = CL_ECONFIG;
  }
  if (rc == 0 && (cfg->worker.command == NULL || !*cfg->worker.command)) {
    snprintf(err, sizeof err,
             "no handler command (give --exec COMMAND, CLAIMER_WORKER_COMMAND "
             "or worker.command)");
    rc = CL_ECONFIG;
  }
  if (rc != 0) {
    if (why)
      snprintf(why, whylen, "%s", err);
    else
      cli_err("%s", err);
    cl_config_free(cfg);
    return EXIT_USAGE;
  }
  return EXIT_OK;
}

static void close_signals(daemon_t *d) {
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void on_worker_exit(void *arg, int rc, const char *why) {
  daemon_t *d = arg;
  d->w = NULL;
  if (rc != 0) {
    cli_err("%s", why);
    /* A name another worker holds is bad usage, like a bad flag; so is a
     * queue the worker refused before it started (CL_EINVAL: its name or
     * weight).  Anything else (out of memory, the database) is an error. */
    d->exit_rc =
        rc == CL_ENAME_TAKEN || rc == CL_EINVAL ? EXIT_USAGE : EXIT_ERROR;
  }
  close_signals(d);
}

static void on_stop_signal(uv_signal_t *s, int signum) {
  daemon_t *d = s->data;
  if (d->w == NULL)
    return;
  if (++d->signals_seen == 1) {
    cl_log(CL_LEVEL_INFO, "signal", "signal", strsignal(signum), "action",
           "drain", NULL);
    cl_worker_stop(d->w);
    return;
  }
  cl_log(CL_LEVEL_WARNING, "signal", "signal", strsignal(signum), "action",
         "exit now; running handlers killed, their leases will expire",
         "running", CL_LOG_INT(cl_worker_running(d->w)), NULL);
  xhandler_kill_all(&d->xh);
  _exit(EXIT_ERROR);
}

/* SIGHUP: what can change on the fly does; the rest is reported. */
static void on_hup(uv_signal_t *s, int signum) {
  daemon_t *d = s->data;
  (void)signum;
  if (d->w == NULL)
    return;
  cl_config_t fresh;
  char why[1024];
  if (load_config(&fresh, d->config_path, d->flags, why, sizeof why) !=
      EXIT_OK) {
    cl_log(CL_LEVEL_ERROR, "reload_failed", "file",
           d->config_path ? d->config_path : "(none)", "error", why, "action",
           "kept the running config", NULL);
    return;
  }
  cl_config_t *old = &d->cfg;
  const char *needs_restart = NULL;
  if ((old->dsn == NULL) != (fresh.dsn == NULL) ||
      (old->dsn && strcmp(old->dsn, fresh.dsn) != 0))
    needs_restart = "dsn";
  else if (old->worker.lease_s != fresh.worker.lease_s)
    needs_restart = "worker.lease";
  else if (old->worker.heartbeat_s != fresh.worker.heartbeat_s)
    needs_restart = "worker.heartbeat";
  else if (old->worker.poll_s != fresh.worker.poll_s)
    needs_restart = "worker.poll_interval";
  else if (old->worker.timeout_s != fresh.worker.timeout_s)
    needs_restart = "worker.timeout";
  else if (old->worker.drain_s != fresh.worker.drain_s)
    needs_restart = "worker.drain_timeout";
  else if (old->worker.prefetch != fresh.worker.prefetch)
    needs_restart = "worker.prefetch";
  else if ((old->worker.name == NULL) != (fresh.worker.name == NULL) ||
           (old->worker.name && strcmp(old->worker.name, fresh.worker.name)))
    needs_restart = "worker.name";
  else if (old->worker.nqueues != fresh.worker.nqueues)
    needs_restart = "worker.queues";
  for (size_t i = 0; !needs_restart && i < old->worker.nqueues; i++)
    if (strcmp(old->worker.queues[i].name, fresh.worker.queues[i].name) ||
        old->worker.queues[i].weight != fresh.worker.queues[i].weight)
      needs_restart = "worker.queues";
  cl_log_setup(fresh.log_format, fresh.log_level, 2);
  cl_worker_set_event_level(d->w, fresh.log_level);
  cl_worker_set_concurrency(d->w, fresh.worker.concurrency);
  /* The handler reads these per job; the strings move to the new config. */
  d->xh.command = fresh.worker.command;
  d->xh.result_max = fresh.worker.result_max;
  d->xh.stderr_max = fresh.worker.stderr_max;
  d->xh.kill_grace_s = fresh.worker.kill_grace_s;
  cl_config_free(old);
  d->cfg = fresh;
  cl_log(CL_LEVEL_INFO, "reloaded", "file",
         d->config_path ? d->config_path : "(none)", "concurrency",
         CL_LOG_INT(fresh.worker.concurrency), "needs_restart",
         needs_restart ? needs_restart : "nothing", NULL);
}

/* Connects once, blocking, before the loop starts: a refused password or
 * a missing schema is reported now and is not retried forever.  Writes
 * the dsn to use (malloc'd; the embedded one when none was given). */
static int preflight(const char *dsn_opt, char **dsn_out) {
  cl_conn_t *c = NULL;
  int ex = cli_connect_dsn(dsn_opt, &c, dsn_out);
  if (ex != EXIT_OK)
    return ex;
  int rc = cl_schema_check(c);
  if (rc != 0) {
    ex = cli_fail(c, rc, "schema");
    free(*dsn_out);
    *dsn_out = NULL;
  }
  cl_conn_free(&c);
  return ex;
}

int cmd_work(int argc, char **argv) {
  static const struct option base_opts[] = {
      {"help", no_argument, NULL, 'h'},
      {"config", required_argument, NULL, 'c'},
      {"queue", required_argument, NULL, 'q'},
      {"dsn-file", required_argument, NULL, CLI_OPT_DSN_FILE},
  };
  enum { NBASE = sizeof base_opts / sizeof base_opts[0] };
  struct option opts[NBASE + NFLAGS + 1];
  cli_flag_options(opts, base_opts, NBASE, flag_keys, NFLAGS);

  static cli_flags_t fs;
  char *queues = NULL;
  const char *config_path = getenv("CLAIMER_CONFIG");
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, ":hc:q:", opts, NULL)) != -1) {
    if (ch == 'h') {
      usage(stdout);
      free(queues);
      return EXIT_OK;
    } else if (ch == 'c') {
      config_path = optarg;
    } else if (ch == 'q') {
      size_t len = (queues ? strlen(queues) + 1 : 0) + strlen(optarg) + 1;
      char *q = malloc(len);
      if (q == NULL) {
        free(queues);
        return EXIT_ERROR;
      }
      snprintf(q, len, "%s%s%s", queues ? queues : "", queues ? "," : "",
               optarg);
      free(queues);
      queues = q;
    } else if (ch == CLI_OPT_DSN_FILE ||
               (ch >= 1000 && ch < 1000 + (int)NFLAGS)) {
      /* Secrets are copied, then masked in argv for ps. */
      if (cli_flag_arg(&fs,
                       ch == CLI_OPT_DSN_FILE ? NULL : &flag_keys[ch - 1000],
                       optarg) != 0) {
        free(queues);
        return EXIT_USAGE;
      }
    } else {
      free(queues);
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc) {
    free(queues);
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);
  }
  if (queues != NULL) {
    (void)cli_flag_add(&fs, "queue", "worker.queues", queues);
  }

  static daemon_t d;
  d.config_path = config_path;
  d.flags = &fs;
  int ex = load_config(&d.cfg, config_path, &fs, NULL, 0);
  if (ex != EXIT_OK) {
    free(queues);
    return ex;
  }
  cl_log_setup(d.cfg.log_format, d.cfg.log_level, 2);
  cli_hold_signals(); /* a SIGTERM from here on drains, once we can */
  char *dsn = NULL;
  ex = preflight(d.cfg.dsn, &dsn);
  if (ex != EXIT_OK) {
    cl_config_free(&d.cfg);
    free(queues);
    return ex;
  }

  signal(SIGPIPE, SIG_IGN);
  /* Before the loop and its threads: the guard is a fork. */
  guard_t guard;
  if (guard_start(&guard) != 0)
    cl_log(CL_LEVEL_WARNING, "guard_failed", "error", strerror(errno), "effect",
           "handlers may outlive a worker killed with SIGKILL", NULL);
  uv_loop_init(&d.loop);
  d.xh.loop = &d.loop;
  d.xh.guard = &guard;
  d.xh.command = d.cfg.worker.command;
  d.xh.result_max = d.cfg.worker.result_max;
  d.xh.stderr_max = d.cfg.worker.stderr_max;
  d.xh.kill_grace_s = d.cfg.worker.kill_grace_s;

  cl_worker_opts_t wo;
  cl_worker_opts_init(&wo);
  wo.dsn = dsn;
  wo.name = d.cfg.worker.name;
  wo.concurrency = d.cfg.worker.concurrency;
  wo.prefetch = cl_config_prefetch(&d.cfg);
  wo.lease_s = d.cfg.worker.lease_s;
  wo.heartbeat_s = cl_config_heartbeat_s(&d.cfg);
  wo.poll_s = d.cfg.worker.poll_s;
  wo.timeout_s = d.cfg.worker.timeout_s;
  wo.drain_s = d.cfg.worker.drain_s;
  wo.events = cl_log_events();
  wo.on_exit = on_worker_exit;
  wo.arg = &d;
  char err[512] = "";
  int rc = cl_worker_new(&d.w, &d.loop, &wo, err, sizeof err);
  free(dsn);
  if (rc != 0) {
    cli_err("%s", rc == CL_ENOMEM ? "out of memory" : err);
    uv_loop_close(&d.loop);
    guard_stop(&guard);
    cl_config_free(&d.cfg);
    free(queues);
    return rc == CL_ENOMEM ? EXIT_ERROR : EXIT_USAGE;
  }
  /* The signals first: the worker's exit closes them, however it ends. */
  uv_signal_init(&d.loop, &d.sigterm);
  uv_signal_init(&d.loop, &d.sigint);
  uv_signal_init(&d.loop, &d.sighup);
  d.sigterm.data = d.sigint.data = d.sighup.data = &d;
  uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&d.sighup, on_hup, SIGHUP);
  cli_release_signals(); /* held since start-up */
  for (size_t i = 0; rc == 0 && i < d.cfg.worker.nqueues; i++)
    rc = cl_worker_add_queue(d.w, d.cfg.worker.queues[i].name,
                             d.cfg.worker.queues[i].weight, xhandler_start,
                             &d.xh);
  if (rc == 0)
    rc = cl_worker_start(d.w);
  if (rc != 0)
    /* Nothing was claimed: the stop only closes the worker's handles, and
     * on_worker_exit reports the error (its message names the queue) and
     * sets the exit status. */
    cl_worker_stop(d.w);
  uv_run(&d.loop, UV_RUN_DEFAULT);
  guard_stop(&guard); /* every handler has ended: it kills nothing */
  rc = uv_loop_close(&d.loop);
  if (rc != 0) {
    cli_err("internal error: the loop still had handles open at exit (%s)",
            uv_err_name(rc));
    d.exit_rc = EXIT_ERROR;
  } else {
    cl_log(CL_LEVEL_INFO, "exit", "status", CL_LOG_INT(d.exit_rc),
           "loop_closed", "true", NULL);
  }
  cl_config_free(&d.cfg);
  free(queues);
  return d.exit_rc;
}
