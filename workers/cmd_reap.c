/*
 * cmd_reap.c: `claimer reap`, the reaper.  It reads the config (a YAML
 * file, CLAIMER_* variables, flags; the reaper: section), checks the
 * database once, then runs the reaper of libclaimer (reaper.h) on a libuv
 * loop: a cycle every interval as a daemon, or one cycle and its alert
 * announcements with --once (for cron and systemd timers), whose exit
 * status says whether new alerts came up.  The reaper's events become log
 * lines; its announcements run the hooks (hook.h): the command first, then
 * the POST, and the alert is sent when both succeeded.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "claimer/reaper.h"
#include "cli.h"
#include "config.h"
#include "hook.h"
#include "log.h"

enum { EXIT_NEW_ALERTS = 4 };

static const cli_flag_key_t flag_keys[] = {
    {"dsn", "dsn"},
    {"interval", "reaper.interval"},
    {"batch", "reaper.batch"},
    {"limit", "reaper.batch"}, /* the older name */
    {"sla", "reaper.sla"},
    {"queue-sla", "reaper.queue_sla"},
    {"worker-lost-after", "reaper.worker_lost_after"},
    {"hook-exec", "reaper.hook.exec"},
    {"hook-url", "reaper.hook.url"},
    {"hook-timeout", "reaper.hook.timeout"},
    {"max-attempts", "reaper.max_attempts"},
    {"queue-max-attempts", "reaper.queue_max_attempts"},
    {"backoff", "reaper.backoff"},
    {"backoff-max", "reaper.backoff_max"},
    {"queue-backoff", "reaper.queue_backoff"},
    {"log-format", "log.format"},
    {"log-level", "log.level"},
};
#define NFLAGS (sizeof flag_keys / sizeof flag_keys[0])

typedef struct reapd {
  uv_loop_t loop;
  cl_reaper_t *r;
  uv_signal_t sigterm, sigint, sighup;
  int signals_seen;
  int interrupted;
  int once;
  int exit_rc;
  long raised;
  cl_reaper_stats_t st;
  char *hook_exec, *hook_url; /* copied from the config; NULL: none */
  double hook_timeout_s;
} reapd_t;

/* One announcement in progress: the hooks in turn. */
typedef struct announce {
  reapd_t *d;
  cl_alert_t *alert;
  int stage; /* 0: the command next, 1: the POST next, 2: all done */
} announce_t;

static void hook_next(announce_t *an);

static void on_hook(void *arg, int ok, const char *error) {
  announce_t *an = arg;
  if (!ok) {
    cl_alert_done(an->alert, 0, error);
    free(an);
    return;
  }
  hook_next(an);
}

/* Runs the next configured hook, or answers the alert when none is left. */
static void hook_next(announce_t *an) {
  reapd_t *d = an->d;
  cl_alert_t *al = an->alert;
  for (;;) {
    int stage = an->stage++;
    int rc;
    if (stage == 0 && d->hook_exec != NULL) {
      rc = cl__hook_exec(&d->loop, d->hook_exec, cl_alert_json(al),
                         cl_alert_id(al), cl_alert_kind(al),
                         cl_alert_subject(al), d->hook_timeout_s, on_hook, an);
      if (rc != 0)
        on_hook(an, 0, "exec hook: out of memory");
      return;
    }
    if (stage == 1 && d->hook_url != NULL) {
      rc = cl__hook_http(&d->loop, d->hook_url, cl_alert_json(al),
                         d->hook_timeout_s, on_hook, an);
      if (rc != 0)
        on_hook(an, 0, "http hook: out of memory");
      return;
    }
    if (stage >= 2) {
      cl_alert_done(al, 1, NULL);
      free(an);
      return;
    }
  }
}

static void on_announce(void *arg, cl_alert_t *alert) {
  announce_t *an = calloc(1, sizeof *an);
  if (an == NULL) {
    cl_alert_done(alert, 0, "out of memory");
    return;
  }
  an->d = arg;
  an->alert = alert;
  hook_next(an);
}

/* The reaper's events as log lines.  reaper_started says which hooks run,
 * which only this program knows: the fields go in before the DSN. */
static void on_event(void *arg, cl_level_t level, const char *event,
                     const cl_field_t *f, size_t n) {
  reapd_t *d = arg;
  if (strcmp(event, "reaper_started") != 0 || n + 2 > 32) {
    cl_log_event(NULL, level, event, f, n);
    return;
  }
  cl_field_t g[32];
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(f[i].key, "announce") == 0) {
      g[m++] = (cl_field_t){"hook_exec", d->hook_exec ? "yes" : "no", 0};
      g[m++] = (cl_field_t){"hook_url", d->hook_url ? "yes" : "no", 0};
      continue;
    }
    g[m++] = f[i];
  }
  cl_log_event(NULL, level, event, g, m);
}

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: claimer reap [--once] [OPTIONS]\n"
      "\n"
      "The reaper.  Each cycle, in batches of --batch rows:\n"
      "  - workers whose heartbeat is older than N of their intervals are "
      "lost:\n"
      "    a worker_lost alert, and their leases are due at once;\n"
      "  - leases past lease_until (database clock) end: the attempt is "
      "spent, the\n"
      "    item ready again at once, or dead after its last attempt; a "
      "lease_expired\n"
      "    alert (item_dead too when it died);\n"
      "  - items unfinished past their SLA raise item_overdue; deliveries "
      "left in\n"
      "    'sending' past their lease raise delivery_in_doubt;\n"
      "  - alerts whose condition cleared are resolved;\n"
      "  - retention: finished items, resolved alerts and long-gone workers "
      "older\n"
      "    than reaper.retention.* are deleted (never a result a subscriber "
      "is\n"
      "    still owed).\n"
      "Each alert is raised once per (kind, subject), however many reapers "
      "run, and\n"
      "goes out as NOTIFY claimer_alerts; after the cycle, one reaper "
      "announces it:\n"
      "a warning log line, then the hooks (JSON on stdin of --hook-exec, "
      "POSTed to\n"
      "--hook-url), retried with backoff when they fail.\n"
      "\n"
      "Options (each also a config key; see `claimer config check`):\n"
      "  --once                  one cycle and its announcements, then exit\n"
      "  -c, --config FILE       YAML config (default: CLAIMER_CONFIG)\n"
      "  --interval DUR          between cycles (default 5s)\n"
      "  --batch N               rows per statement (default 1000)\n"
      "  --sla DUR               item_overdue after this (default 1h)\n"
      "  --queue-sla Q:DUR,...   per-queue SLAs\n"
      "  --worker-lost-after N   heartbeat intervals (default 3)\n"
      "  --hook-exec COMMAND     run per new alert, its JSON on stdin\n"
      "  --hook-url URL          POST each new alert's JSON here\n"
      "  --hook-timeout DUR      per hook run (default 10s)\n"
      "  --max-attempts N        retry policy: tries for items enqueued "
      "without one\n"
      "  --queue-max-attempts Q:N,...  the same per queue\n"
      "  --backoff DUR           first retry delay, doubling (default 1s)\n"
      "  --backoff-max DUR       its cap (default 1h)\n"
      "  --queue-backoff Q:DUR,...     first retry delay per queue\n"
      "                          (the policy is written to "
      "claimer.queue_policy at\n"
      "                          start, only when one of these is set)\n"
      "  --log-format F          logfmt (default) or json\n"
      "  --log-level L           debug, info (default), warning, error\n" CLI_DSN_HELP
      "The hook URL's password and query values are masked in argv too.\n"
      "\n"
      "Output with --once (stdout, one line each):\n"
      "  reaped N stale leases: R back to ready, D dead\n"
      "  workers lost: N (M leases made due)\n"
      "  alerts: N raised (KIND n, ...), M resolved, A announced\n"
      "  retention: deleted N items, M alerts, W workers\n"
      "Exit status with --once: 0 no new alert, 4 new alerts (raised or "
      "first\n"
      "announced by this run), 1 database or system error, 2 bad usage or "
      "config.\n"
      "As a daemon: SIGTERM or SIGINT stops after the statement in flight "
      "and\n"
      "waits for running hooks, exit 0; a second one exits 1 at once.  "
      "SIGHUP is\n"
      "logged and ignored (restart to apply a changed config).  An "
      "interrupted\n"
      "--once exits 1.\n");
}

static void print_cycle(const cl_cycle_info_t *in, long announced) {
  const cl_reap_info_t *r = &in->reap;
  printf("reaped %ld stale lease%s: %ld back to ready, %ld dead\n", r->expired,
         r->expired == 1 ? "" : "s", r->requeued, r->dead);
  printf("workers lost: %ld (%ld lease%s made due)\n", in->workers_lost,
         in->leases_released, in->leases_released == 1 ? "" : "s");
  printf("alerts: %ld raised", in->raised_total);
  const char *sep = " (";
  for (int k = 0; k < CL_ALERT_KINDS; k++) {
    if (in->raised[k] == 0)
      continue;
    printf("%s%s %ld", sep, cl_alert_kind_name(k), in->raised[k]);
    sep = ", ";
  }
  printf("%s, %ld resolved, %ld announced\n", *sep == ',' ? ")" : "",
         in->resolved, announced);
  printf("retention: deleted %ld items, %ld alerts, %ld workers\n",
         in->deleted_items + in->deleted_dead, in->deleted_alerts,
         in->deleted_workers);
  fflush(stdout);
}

static cl_cycle_info_t last_info;

static void on_cycle(void *arg, int rc, const cl_cycle_info_t *info,
                     double seconds) {
  reapd_t *d = arg;
  (void)seconds;
  if (rc == 0) {
    d->raised += info->raised_total;
    last_info = *info;
  }
}

static void on_exit_cb(void *arg, int rc, const char *why) {
  reapd_t *d = arg;
  cl_reaper_stats(d->r, &d->st);
  d->r = NULL;
  if (rc != 0) {
    cli_err("%s", why && *why ? why : "the reaper stopped on an error");
    d->exit_rc = EXIT_ERROR;
  }
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void on_stop_signal(uv_signal_t *s, int signum) {
  reapd_t *d = s->data;
  if (d->r == NULL)
    return;
  if (++d->signals_seen > 1) {
    cl_log(CL_LEVEL_WARNING, "signal", "signal", strsignal(signum), "action",
           "exit now; hooks still running are abandoned, their alerts "
           "announced again later",
           NULL);
    _exit(EXIT_ERROR);
  }
  cl_log(CL_LEVEL_INFO, "signal", "signal", strsignal(signum), "action", "stop",
         NULL);
  /* An interrupted --once did not do its job: say so in the status. */
  if (d->once)
    d->interrupted = 1;
  cl_reaper_stop(d->r);
}

/* SIGHUP: nothing to reload on the fly; said, not fatal. */
static void on_hup(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  cl_log(CL_LEVEL_WARNING, "reload_unsupported", "action",
         "restart the reaper to apply a changed config", NULL);
}

int cmd_reap(int argc, char **argv) {
  static const struct option base_opts[] = {
      {"help", no_argument, NULL, 'h'},
      {"once", no_argument, NULL, 'o'},
      {"config", required_argument, NULL, 'c'},
      {"dsn-file", required_argument, NULL, CLI_OPT_DSN_FILE},
  };
  enum { NBASE = sizeof base_opts / sizeof base_opts[0] };
  struct option opts[NBASE + NFLAGS + 1];
  cli_flag_options(opts, base_opts, NBASE, flag_keys, NFLAGS);

  static cli_flags_t fs;
  static reapd_t d;
  const char *config_path = getenv("CLAIMER_CONFIG");
  int ch;
  opterr = 0;
  optind = 1;
  while ((ch = getopt_long(argc, argv, ":hc:", opts, NULL)) != -1) {
    if (ch == 'h') {
      usage(stdout);
      return EXIT_OK;
    } else if (ch == 'o') {
      d.once = 1;
    } else if (ch == 'c') {
      config_path = optarg;
    } else if (ch == CLI_OPT_DSN_FILE ||
               (ch >= 1000 && ch < 1000 + (int)NFLAGS)) {
      /* Secrets (--dsn, --hook-url) are copied, then masked in argv. */
      if (cli_flag_arg(&fs,
                       ch == CLI_OPT_DSN_FILE ? NULL : &flag_keys[ch - 1000],
                       optarg) != 0)
        return EXIT_USAGE;
    } else {
      return cli_bad_option(argv, optopt);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument \"%s\"", argv[optind]);

  cl_config_t cfg;
  if (cli_load_config(&cfg, config_path, &fs) != EXIT_OK)
    return EXIT_USAGE;
  cl_log_setup(cfg.log_format, cfg.log_level, 2);
  cli_hold_signals(); /* a SIGTERM from here on drains, once we can */

  /* Connect once, blocking: a refused password or a missing schema is
   * reported now, not retried forever. */
  cl_conn_t *c = NULL;
  char *dsn = NULL;
  int ex = cli_connect_dsn(cfg.dsn, &c, &dsn);
  if (ex == EXIT_OK) {
    int rc = cl_schema_check(c);
    if (rc != 0)
      ex = cli_fail(c, rc, "schema");
    cl_conn_free(&c);
  }
  if (ex != EXIT_OK) {
    free(dsn);
    cl_config_free(&cfg);
    return ex;
  }

  cl_reaper_config_t rc_;
  cl_reaper_config_init(&rc_);
  rc_.dsn = dsn;
  rc_.once = d.once;
  rc_.interval_s = cfg.reaper.interval_s;
  rc_.cycle.batch = cfg.reaper.batch;
  rc_.cycle.worker_lost_after = cfg.reaper.worker_lost_after;
  rc_.cycle.default_sla_s = cfg.reaper.sla_s;
  rc_.cycle.sla_queues = (const char *const *)cfg.reaper.queue_sla_names;
  rc_.cycle.sla_s = cfg.reaper.queue_sla_s;
  rc_.cycle.nsla = cfg.reaper.nqueue_sla;
  rc_.cycle.retention_done_s = cfg.reaper.retention.done_s;
  rc_.cycle.retention_dead_s = cfg.reaper.retention.dead_s;
  rc_.cycle.retention_alerts_s = cfg.reaper.retention.alerts_s;
  rc_.cycle.retention_workers_s = cfg.reaper.retention.workers_s;
  d.hook_timeout_s = cfg.reaper.hook.timeout_s;
  if (cfg.reaper.hook.exec != NULL || cfg.reaper.hook.url != NULL) {
    rc_.announce = on_announce;
    /* The hooks run one after the other, each up to its timeout. */
    rc_.announce_timeout_s =
        d.hook_timeout_s *
        ((cfg.reaper.hook.exec != NULL) + (cfg.reaper.hook.url != NULL));
  }
  rc_.announce_max_attempts = cfg.reaper.hook.max_attempts;
  rc_.events = cl_log_events();
  rc_.events.cb = on_event;
  rc_.events.arg = &d;
  rc_.policy = cl_config_queue_policy_set(&cfg);
  rc_.max_attempts = cfg.reaper.max_attempts;
  rc_.backoff_s = cfg.reaper.backoff_s;
  rc_.backoff_max_s = cfg.reaper.backoff_max_s;
  rc_.qma_names = (const char *const *)cfg.reaper.queue_max_attempts_names;
  rc_.qma = cfg.reaper.queue_max_attempts;
  rc_.nqma = cfg.reaper.nqueue_max_attempts;
  rc_.qb_names = (const char *const *)cfg.reaper.queue_backoff_names;
  rc_.qb_s = cfg.reaper.queue_backoff_s;
  rc_.nqb = cfg.reaper.nqueue_backoff;
  rc_.on_cycle = on_cycle;
  rc_.on_exit = on_exit_cb;
  rc_.arg = &d;

  signal(SIGPIPE, SIG_IGN);
  char err[512];
  int rc = 0;
  if ((cfg.reaper.hook.exec != NULL &&
       (d.hook_exec = strdup(cfg.reaper.hook.exec)) == NULL) ||
      (cfg.reaper.hook.url != NULL &&
       (d.hook_url = strdup(cfg.reaper.hook.url)) == NULL)) {
    snprintf(err, sizeof err, "out of memory");
    rc = CL_ENOMEM;
  } else if (d.hook_url != NULL && cl__hook_http_init() != 0) {
    snprintf(err, sizeof err, "cannot set up libcurl");
    rc = CL_ENOMEM;
  }
  uv_loop_init(&d.loop);
  if (rc == 0)
    rc = cl_reaper_new(&d.r, &d.loop, &rc_, err, sizeof err);
  free(dsn);
  cl_config_free(&cfg); /* the reaper copied what it keeps, d the hooks */
  if (rc != 0) {
    cli_err("%s", err);
    uv_loop_close(&d.loop);
    free(d.hook_exec);
    free(d.hook_url);
    return rc == CL_ENOMEM ? EXIT_ERROR : EXIT_USAGE;
  }
  uv_signal_init(&d.loop, &d.sigterm);
  uv_signal_init(&d.loop, &d.sigint);
  uv_signal_init(&d.loop, &d.sighup);
  d.sigterm.data = d.sigint.data = d.sighup.data = &d;
  uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&d.sighup, on_hup, SIGHUP);
  cli_release_signals(); /* held since start-up */
  if ((rc = cl_reaper_start(d.r)) != 0) {
    /* Only a second start fails; stop cleanly all the same. */
    cli_err("cannot start the reaper: %s", cl_strerror(rc));
    d.exit_rc = EXIT_ERROR;
    cl_reaper_stop(d.r);
  }
  uv_run(&d.loop, UV_RUN_DEFAULT);
  free(d.hook_exec);
  free(d.hook_url);
  if (uv_loop_close(&d.loop) != 0) {
    cli_err("internal error: the loop still had handles open at exit");
    d.exit_rc = EXIT_ERROR;
  }
  if (d.interrupted && d.exit_rc == EXIT_OK) {
    cli_err("interrupted before the cycle and its announcements were done");
    d.exit_rc = EXIT_ERROR;
  }
  if (d.once && d.exit_rc == EXIT_OK) {
    print_cycle(&last_info, d.st.announced);
    if (d.raised > 0 || d.st.announced > 0)
      d.exit_rc = EXIT_NEW_ALERTS;
  }
  return d.exit_rc;
}
