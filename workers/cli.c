/*
 * cli.c: the helpers every subcommand uses.  Argument checking happens
 * before any connection is made, so bad input changes nothing (G8).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "config.h"

void cli_put_json_string(FILE *out, const char *s) {
  json_object *o = json_object_new_string(s);
  fputs(json_object_to_json_string_ext(
            o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
        out);
  json_object_put(o);
}

const char *cli_cmd = "claimer";

void cli_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", cli_cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

int cli_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", cli_cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see %s --help)\n", cli_cmd);
  va_end(ap);
  return EXIT_USAGE;
}

int cli_bad_option(char *const argv[], int optopt_value) {
  const char *arg = argv[optind - 1];
  if (optopt_value != 0 && strncmp(arg, "--", 2) != 0)
    return cli_usage_error("option -%c: unknown, or needs a value",
                           optopt_value);
  if (optopt_value == 0)
    return cli_usage_error("unknown option %s", arg);
  return cli_usage_error("option %s needs a value", arg);
}

int cli_parse_double(const char *text, const char *name, double min,
                     double max, double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (*text == '\0' || *end != '\0' || errno != 0 || !isfinite(v)) {
    cli_usage_error("%s: \"%s\" is not a number", name, text);
    return -1;
  }
  if (v < min || v > max) {
    cli_usage_error("%s: %s is out of range [%g, %g]", name, text, min, max);
    return -1;
  }
  *out = v;
  return 0;
}

int cli_parse_int(const char *text, const char *name, long min, long max,
                  int *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0) {
    cli_usage_error("%s: \"%s\" is not an integer", name, text);
    return -1;
  }
  if (v < min || v > max) {
    cli_usage_error("%s: %s is out of range [%ld, %ld]", name, text, min,
                    max);
    return -1;
  }
  *out = (int)v;
  return 0;
}

int cli_check_json_arg(const char *text, const char *name) {
  char why[512];
  if (cl_check_json(text, strlen(text), why, sizeof why) != 0) {
    cli_usage_error("%s: %s", name, why);
    return -1;
  }
  return 0;
}

int cli_connect(const char *dsn_opt, cl_conn_t **out) {
  return cli_connect_dsn(dsn_opt, out, NULL);
}

int cli_connect_dsn(const char *dsn_opt, cl_conn_t **out, char **dsn_used) {
  *out = NULL;
  if (dsn_used != NULL)
    *dsn_used = NULL;
  const char *dsn = dsn_opt;
  const char *source = "--dsn";
  if (dsn == NULL && (dsn = getenv("CLAIMER_DSN")) != NULL)
    source = "CLAIMER_DSN";
  cl_embedded_info_t info;
  if (dsn == NULL) {
    char why[2048];
    if (cl_embedded_ensure(NULL, &info, why, sizeof why) != 0) {
      cli_err("embedded PostgreSQL: %s", why);
      return EXIT_ERROR;
    }
    if (info.created || info.started)
      fprintf(stderr,
              "claimer: %s the embedded PostgreSQL in %s (socket in %s)\n",
              info.created ? "created and started" : "started",
              info.data_dir, info.socket_dir);
    dsn = info.dsn;
    source = "embedded";
  }
  char why[512];
  if (cl_check_dsn(dsn, why, sizeof why) != 0) {
    cli_usage_error("%s: %s", source, why);
    return EXIT_USAGE;
  }
  cl_conn_t *c = NULL;
  int rc = cl_conn_new(&c, dsn);
  if (rc != 0) {
    cli_err("%s", cl_strerror(rc));
    return rc == CL_EDSN ? EXIT_USAGE : EXIT_ERROR;
  }
  rc = cl_conn_connect(c);
  if (rc != 0) {
    cli_err("%s (%s)", cl_conn_last_error(c), cl_conn_dsn_redacted(c));
    cl_conn_free(&c);
    return EXIT_ERROR;
  }
  /* The embedded database is claimer's own: bring its schema up to date
   * rather than make a first-time user run migrate. */
  if (strcmp(source, "embedded") == 0) {
    rc = cl_migrate(c, NULL, NULL);
    if (rc < 0) {
      int ex = cli_fail(c, rc, "migrate");
      cl_conn_free(&c);
      return ex;
    }
  }
  if (dsn_used != NULL && (*dsn_used = strdup(dsn)) == NULL) {
    cli_err("out of memory");
    cl_conn_free(&c);
    return EXIT_ERROR;
  }
  *out = c;
  return EXIT_OK;
}

int cli_fail(cl_conn_t *c, int rc, const char *what) {
  const char *detail = c ? cl_conn_last_error(c) : "";
  if (*detail == '\0')
    detail = cl_strerror(rc);
  if (what != NULL && *what)
    cli_err("%s: %s", what, detail);
  else
    cli_err("%s", detail);
  switch (rc) {
  case CL_EINVAL:
  case CL_EJSON:
  case CL_EDSN:
    return EXIT_USAGE;
  case CL_ELEASE_LOST:
    return EXIT_LEASE_LOST;
  default:
    return EXIT_ERROR;
  }
}

void cli_default_worker(char *buf, size_t n) {
  char host[256] = "localhost";
  if (gethostname(host, sizeof host) != 0)
    snprintf(host, sizeof host, "localhost");
  host[sizeof host - 1] = '\0';
  snprintf(buf, n, "%s:%ld", host, (long)getpid());
}

int cli_flag_add(cli_flags_t *fs, const char *flag, const char *path,
                 const char *value) {
  if (fs->n >= 64)
    return -1;
  snprintf(fs->origin_buf[fs->n], sizeof fs->origin_buf[0], "flag --%s",
           flag);
  fs->path[fs->n] = path;
  fs->value[fs->n] = value;
  fs->origin[fs->n] = fs->origin_buf[fs->n];
  fs->n++;
  return 0;
}

int cli_load_config(cl_config_t *cfg, const char *path,
                    const cli_flags_t *fs) {
  char err[1024];
  int ex = cli_load_config_quiet(cfg, path, fs, err, sizeof err);
  if (ex != EXIT_OK)
    cli_err("%s", err);
  return ex;
}

int cli_load_config_quiet(cl_config_t *cfg, const char *path,
                          const cli_flags_t *fs, char *err, size_t errlen) {
  cl_config_init(cfg);
  int rc = 0;
  if (path != NULL)
    rc = cl_config_load_file(cfg, path, err, errlen);
  if (rc == 0)
    rc = cl_config_apply_env(cfg, err, errlen);
  for (int i = 0; rc == 0 && i < fs->n; i++)
    rc = cl_config_set(cfg, fs->path[i], fs->value[i], fs->origin[i], err,
                       errlen);
  if (rc == 0)
    rc = cl_config_validate(cfg, err, errlen);
  if (rc != 0) {
    cl_config_free(cfg);
    return EXIT_USAGE;
  }
  return EXIT_OK;
}

void cli_flag_options(struct option *opts, const struct option *base,
                      size_t nbase, const cli_flag_key_t *keys, size_t nkeys) {
  memcpy(opts, base, nbase * sizeof *opts);
  for (size_t i = 0; i < nkeys; i++)
    opts[nbase + i] = (struct option){keys[i].flag, required_argument, NULL,
                                      1000 + (int)i};
  memset(&opts[nbase + nkeys], 0, sizeof *opts);
}
