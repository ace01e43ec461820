/*
 * cli.c: the helpers every subcommand uses.  Argument checking happens
 * before any connection is made, so bad input changes nothing (G8).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include <stdint.h>

#include "cli.h"
#include "config.h"
#include "embedded.h"
#include "internal.h"

void cli_put_json_string(FILE *out, const char *s) {
  json_object *o = json_object_new_string(s);
  fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                              JSON_C_TO_STRING_NOSLASHESCAPE),
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

int cli_parse_double(const char *text, const char *name, double min, double max,
                     double *out) {
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

void cli_format_age(char *out, size_t n, double s) {
  if (s < 0)
    snprintf(out, n, "-");
  else if (s < 120)
    snprintf(out, n, "%.0fs", s);
  else if (s < 7200)
    snprintf(out, n, "%.0fm", s / 60);
  else if (s < 172800)
    snprintf(out, n, "%.0fh", s / 3600);
  else
    snprintf(out, n, "%.0fd", s / 86400);
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
    cli_usage_error("%s: %s is out of range [%ld, %ld]", name, text, min, max);
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

/* ------------------------------------------------------------------------ */
/* Secrets on the command line                                               */

static sigset_t held_old;
static int held;

void cli_hold_signals(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGHUP);
  sigaddset(&s, SIGUSR1);
  if (!held && sigprocmask(SIG_BLOCK, &s, &held_old) == 0)
    held = 1;
}

void cli_release_signals(void) {
  if (held)
    sigprocmask(SIG_SETMASK, &held_old, NULL);
  held = 0;
}

static char **argv_all;
static int argc_all;

void cli_set_argv(int argc, char **argv) {
  argc_all = argc;
  argv_all = argv;
}

/* Returns 1 when s points into one of the process's argument strings (an
 * argument vector made up inside the program, as demo makes for status,
 * is left alone). */
static int in_argv(const char *s) {
  uintptr_t p = (uintptr_t)s;
  for (int i = 0; i < argc_all; i++) {
    uintptr_t a = (uintptr_t)argv_all[i];
    if (argv_all[i] != NULL && p >= a && p <= a + strlen(argv_all[i]))
      return 1;
  }
  return 0;
}

/* The copies of secrets taken from argv, kept (and reachable) for the
 * life of the process: the config and the daemons point at them. */
typedef struct kept {
  struct kept *next;
  char s[];
} kept_t;
static kept_t *kept_list;

static char *keep(const char *s, size_t len) {
  kept_t *k = malloc(sizeof *k + len + 1);
  if (k == NULL)
    return NULL;
  memcpy(k->s, s, len);
  k->s[len] = '\0';
  k->next = kept_list;
  kept_list = k;
  return k->s;
}

static int is_secret_key(const char *k, size_t n) {
  return (n == 8 && strncmp(k, "password", 8) == 0) ||
         (n == 11 && strncmp(k, "sslpassword", 11) == 0);
}

/* A dbname may itself be a connection string, with a password of its own:
 * such a value is masked whole. */
static int is_nested_dsn(const char *key, size_t klen, const char *v,
                         size_t vlen) {
  return klen == 6 && strncmp(key, "dbname", 6) == 0 &&
         (memchr(v, '=', vlen) != NULL || memchr(v, '@', vlen) != NULL);
}

/* Masks the passwords of a URI connection string in place: the userinfo's
 * (what follows its ':' up to the '@' before the host, as libpq reads it)
 * and the values of the password, sslpassword and nested dbname query
 * parameters. */
static void mask_dsn_uri(char *s, size_t scheme_len) {
  char *q = strchr(s + scheme_len, '?');
  if (q != NULL) {
    size_t i = (size_t)(q - s) + 1;
    while (s[i] != '\0') {
      size_t end = i + strcspn(s + i, "&");
      const char *eq = memchr(s + i, '=', end - i);
      if (eq != NULL) {
        size_t klen = (size_t)(eq - (s + i));
        size_t v = i + klen + 1;
        if (v < end && (is_secret_key(s + i, klen) ||
                        is_nested_dsn(s + i, klen, s + v, end - v)))
          end = v + cl__mask_span(s, v, end - v);
      }
      i = s[end] == '&' ? end + 1 : end;
    }
  }
  char *auth = s + scheme_len;
  size_t alen = strcspn(auth, "@/");
  if (auth[alen] != '@')
    return;
  char *colon = memchr(auth, ':', alen);
  if (colon != NULL && colon + 1 < auth + alen)
    (void)cl__mask_span(s, (size_t)(colon + 1 - s),
                        (size_t)(auth + alen - colon - 1));
}

/* Masks the passwords of a connection string in place: in a URI, or in
 * key=value pairs (password, sslpassword, and a dbname that is itself a
 * connection string), read the way libpq reads them. */
static void mask_dsn(char *s) {
  static const char *const schemes[] = {"postgresql://", "postgres://"};
  for (int i = 0; i < 2; i++) {
    size_t n = strlen(schemes[i]);
    if (strncmp(s, schemes[i], n) == 0) {
      mask_dsn_uri(s, n);
      return;
    }
  }
  size_t i = 0;
  for (;;) {
    while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
      i++;
    if (s[i] == '\0')
      return;
    size_t key = i;
    while (s[i] != '\0' && s[i] != '=' && !strchr(" \t\n\r", s[i]))
      i++;
    size_t klen = i - key;
    while (s[i] != '\0' && strchr(" \t\n\r", s[i]))
      i++;
    if (s[i] != '=')
      return; /* not libpq's syntax: libpq will say so */
    i++;
    while (s[i] != '\0' && strchr(" \t\n\r", s[i]))
      i++;
    int quoted = s[i] == '\'';
    if (quoted)
      i++;
    size_t v = i;
    while (s[i] != '\0') {
      if (s[i] == '\\' && s[i + 1] != '\0') {
        i += 2;
        continue;
      }
      if (quoted ? s[i] == '\'' : strchr(" \t\n\r", s[i]) != NULL)
        break;
      i++;
    }
    if (i > v && (is_secret_key(s + key, klen) ||
                  is_nested_dsn(s + key, klen, s + v, i - v)))
      i = v + cl__mask_span(s, v, i - v);
    if (quoted && s[i] == '\'')
      i++;
  }
}

/* Copies arg, then masks it in argv with mask (when it lies in argv).
 * Returns the copy, or NULL when out of memory. */
static const char *keep_secret(char *arg, void (*mask)(char *)) {
  char *copy = keep(arg, strlen(arg));
  if (copy != NULL && in_argv(arg))
    mask(arg);
  return copy;
}

const char *cli_keep_dsn(char *arg) { return keep_secret(arg, mask_dsn); }

const char *cli_read_dsn_file(const char *path) {
  enum { LIMIT = 65536 };
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    cli_usage_error("--dsn-file %s: cannot open it: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    cli_usage_error("--dsn-file %s: not a regular file", path);
    close(fd);
    return NULL;
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    cli_usage_error("--dsn-file %s: its mode %04o lets group or others at "
                    "it; a file that holds a password must be its owner's "
                    "alone, as libpq's .pgpass must (chmod 600 %s)",
                    path, (unsigned)(st.st_mode & 07777), path);
    close(fd);
    return NULL;
  }
  char *buf = malloc(LIMIT + 1);
  size_t len = 0;
  ssize_t got = 0;
  while (buf != NULL && len < LIMIT &&
         (got = read(fd, buf + len, LIMIT - len)) != 0) {
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      break;
    len += (size_t)got;
    if (memchr(buf + len - (size_t)got, '\n', (size_t)got) != NULL)
      break;
  }
  int e = errno;
  close(fd);
  if (buf == NULL || got < 0) {
    cli_usage_error("--dsn-file %s: cannot read it: %s", path,
                    buf == NULL ? "out of memory" : strerror(e));
    free(buf);
    return NULL;
  }
  char *nl = memchr(buf, '\n', len);
  if (nl == NULL && len == LIMIT) {
    cli_usage_error("--dsn-file %s: its first line is longer than %d bytes",
                    path, LIMIT);
    free(buf);
    return NULL;
  }
  size_t n = nl != NULL ? (size_t)(nl - buf) : len;
  if (n > 0 && buf[n - 1] == '\r')
    n--;
  if (n == 0 || memchr(buf, '\0', n) != NULL) {
    cli_usage_error("--dsn-file %s: its first line is %s (it should be the "
                    "connection string)",
                    path, n == 0 ? "empty" : "not text");
    free(buf);
    return NULL;
  }
  const char *dsn = keep(buf, n);
  /* The file's bytes do not linger on the heap. */
  memset(buf, 0, len);
  free(buf);
  if (dsn == NULL)
    cli_err("out of memory");
  return dsn;
}

/* The DSN read from a file, so that messages can name its source. */
static const char *file_dsn;
static char file_dsn_option[300];

int cli_dsn_option(cli_dsn_t *d, int ch, char *arg) {
  int file = ch == CLI_OPT_DSN_FILE;
  if (d->value != NULL && (strncmp(d->option, "--dsn-file", 10) == 0) != file)
    return cli_usage_error("give --dsn or --dsn-file, not both");
  const char *v = file ? cli_read_dsn_file(arg) : keep_secret(arg, mask_dsn);
  if (v == NULL) {
    if (!file)
      cli_err("out of memory");
    return EXIT_USAGE;
  }
  d->value = v;
  if (file)
    snprintf(d->option, sizeof d->option, "--dsn-file %s", arg);
  else
    snprintf(d->option, sizeof d->option, "--dsn");
  if (file) {
    file_dsn = v;
    snprintf(file_dsn_option, sizeof file_dsn_option, "%s", d->option);
  }
  return 0;
}

int cli_flag_arg(cli_flags_t *fs, const cli_flag_key_t *key, char *arg) {
  const char *flag = key != NULL ? key->flag : "dsn-file";
  const char *path = key != NULL ? key->path : "dsn";
  const char *value = arg;
  if (strcmp(path, "dsn") == 0) {
    /* An origin is "flag --NAME" (cli_flag_add). */
    for (int i = 0; i < fs->n; i++)
      if (strcmp(fs->path[i], "dsn") == 0 &&
          strcmp(fs->origin[i] + strlen("flag --"), flag) != 0)
        return cli_usage_error("give --dsn or --dsn-file, not both");
    value = key == NULL ? cli_read_dsn_file(arg) : keep_secret(arg, mask_dsn);
    if (value == NULL) {
      if (key != NULL)
        cli_err("out of memory");
      return EXIT_USAGE;
    }
    if (key == NULL) {
      file_dsn = value;
      snprintf(file_dsn_option, sizeof file_dsn_option, "--dsn-file %s", arg);
    }
  } else if (strcmp(path, "reaper.hook.url") == 0) {
    value = keep_secret(arg, cl_config_mask_url);
    if (value == NULL) {
      cli_err("out of memory");
      return EXIT_USAGE;
    }
  }
  if (cli_flag_add(fs, flag, path, value) != 0)
    return cli_usage_error("too many options");
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Connecting                                                                */

int cli_connect(const char *dsn_opt, cl_conn_t **out) {
  return cli_connect_dsn(dsn_opt, out, NULL);
}

int cli_connect_dsn(const char *dsn_opt, cl_conn_t **out, char **dsn_used) {
  *out = NULL;
  if (dsn_used != NULL)
    *dsn_used = NULL;
  const char *dsn = dsn_opt;
  const char *source =
      dsn != NULL && file_dsn != NULL && strcmp(dsn, file_dsn) == 0
          ? file_dsn_option
          : "--dsn";
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
              info.created ? "created and started" : "started", info.data_dir,
              info.socket_dir);
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
  snprintf(fs->origin_buf[fs->n], sizeof fs->origin_buf[0], "flag --%s", flag);
  fs->path[fs->n] = path;
  fs->value[fs->n] = value;
  fs->origin[fs->n] = fs->origin_buf[fs->n];
  fs->n++;
  return 0;
}

int cli_load_config(cl_config_t *cfg, const char *path, const cli_flags_t *fs) {
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
    opts[nbase + i] =
        (struct option){keys[i].flag, required_argument, NULL, 1000 + (int)i};
  memset(&opts[nbase + nkeys], 0, sizeof *opts);
}
