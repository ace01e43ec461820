/*
 * hookd.c: an HTTP endpoint that receives alert webhooks for the
 * integration tests, records what it was sent, and can refuse or stall on
 * purpose, so that the tests can check what the sender does when a
 * receiver is down or slow.
 *
 *   hookd --out FILE [--port-file FILE] [--fail N] [--status CODE]
 *         [--delay-ms MS]
 *
 * It listens on 127.0.0.1 on a free port.  Once listening, it writes the
 * port and a newline to the --port-file (through FILE.tmp and a rename, so
 * a reader sees the whole file or none) and prints
 * "hookd listening on 127.0.0.1:PORT" on stdout, flushed.
 *
 * A POST to any path, with a Content-Type that starts with
 * application/json and a body of at most 1 MiB, is a delivery.  The first N
 * deliveries (--fail, default 0) are answered with --status (default 500)
 * and not recorded; the later ones are answered 200 "ok" and recorded: one
 * line appended to --out, the body with its line breaks turned into
 * spaces, written with a single write() on a descriptor opened O_APPEND, so
 * a reader never sees half a line.  A delivery is recorded before the
 * answer is sent, so that by the time the sender hears (or gives up) the
 * line is there.  Other requests are refused: a method other than POST with
 * 405, a larger body with 413, another content type with 415; they do not
 * use up the --fail count.  --delay-ms holds every answer back that long,
 * for the sender's timeouts; a shutdown cuts the wait short, and the
 * answer may then be lost.
 *
 * For webhooks (claimer send): --secret WHSEC (repeatable) makes hookd
 * check every delivery's Standard Webhooks headers (webhook-id,
 * webhook-timestamp within 5 minutes, webhook-signature v1 over
 * id.timestamp.body with any of the secrets); one that fails is answered
 * 401 and not recorded.  --script CODES answers the deliveries, in order,
 * with the listed statuses before they are recorded (a non-2xx one is not
 * recorded), then 200 for the rest: "500,429:2,200" is a 500, then a 429
 * with Retry-After: 2, then a 200.  A recorded delivery carrying a
 * webhook-id is written as the id, a space and the body, and the id's
 * count goes up: at shutdown "N distinct ids, M repeated" tells effects
 * per key.
 *
 * Each connection has its own thread, so a delayed answer holds up no
 * other request.  SIGTERM or SIGINT stops the daemon and prints
 * "hookd: N requests, M recorded" on stdout, N counting every request seen;
 * the exit status is then 0.  Bad arguments exit 2; a failure to open the
 * files or to listen exits 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "signature.h"

#define MAX_BODY (1024 * 1024)

/* One request being received; freed in on_completed(). */
typedef struct request {
  bool is_post;
  bool is_json;
  bool too_large;
  char *body;
  size_t len, cap;
} request_t;

static int out_fd = -1;
static long fail_left;
static unsigned int fail_status = 500;
static long delay_ms;

/* The lock guards the counters, the --fail count and the order of the lines
 * in --out; the condition wakes delayed answers at shutdown. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond;
static bool stopping;
static unsigned long n_requests, n_recorded, n_badsig;

/* --secret: the key ring deliveries are checked against (NULL: none). */
static cl_sig_keys_t *keys;
/* --script: statuses (and Retry-After seconds, -1 none) still to answer. */
enum { SCRIPT_MAX = 64 };
static long script_status[SCRIPT_MAX], script_after[SCRIPT_MAX];
static int script_n, script_next;
/* The webhook-ids recorded, for "distinct, repeated" at shutdown. */
static char **ids;
static size_t nids, capids;
static unsigned long n_repeated;

/* Counts id among the recorded ones (under the lock). */
static void note_id(const char *id) {
  for (size_t i = 0; i < nids; i++) {
    if (strcmp(ids[i], id) == 0) {
      n_repeated++;
      return;
    }
  }
  if (nids == capids) {
    size_t cap = capids ? capids * 2 : 1024;
    char **p = realloc(ids, cap * sizeof *p);
    if (p == NULL)
      return;
    ids = p;
    capids = cap;
  }
  ids[nids] = strdup(id);
  if (ids[nids] != NULL)
    nids++;
}

/* Waits --delay-ms, or less if the daemon is stopping. */
static void delay_answer(void) {
  if (delay_ms <= 0)
    return;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += delay_ms / 1000;
  until.tv_nsec += (delay_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&lock);
  while (!stopping &&
         pthread_cond_timedwait(&stop_cond, &lock, &until) != ETIMEDOUT) {
  }
  pthread_mutex_unlock(&lock);
}

/* Returns 0 once body[0..len) and a newline are in --out as one line, or
 * -1 (logged). */
static int record(const char *id, const char *body, size_t len) {
  size_t pre = id ? strlen(id) + 1 : 0;
  char *line = malloc(pre + len + 1);
  if (line == NULL) {
    fprintf(stderr, "hookd: out of memory for a %zu byte body\n", len);
    return -1;
  }
  if (id != NULL) {
    memcpy(line, id, pre - 1);
    line[pre - 1] = ' ';
  }
  for (size_t i = 0; i < len; i++)
    line[pre + i] = body[i] == '\n' || body[i] == '\r' ? ' ' : body[i];
  line[pre + len] = '\n';
  ssize_t w = write(out_fd, line, pre + len + 1);
  int saved = errno;
  free(line);
  len += pre;
  if (w != (ssize_t)(len + 1)) {
    fprintf(stderr, "hookd: cannot record a delivery: %s\n",
            w < 0 ? strerror(saved) : "short write");
    return -1;
  }
  return 0;
}

/* Queues a response with a static text body.  Returns MHD's verdict. */
static enum MHD_Result answer(struct MHD_Connection *conn, unsigned int status,
                              const char *text, long retry_after) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
  if (resp == NULL)
    return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
  if (retry_after >= 0) {
    char v[24];
    snprintf(v, sizeof v, "%ld", retry_after);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
  }
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "POST");
  enum MHD_Result r = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return r;
}

/* Keeps one chunk of the body, up to MAX_BODY; past that the body is
 * dropped and the rest of it read and thrown away, so that the client,
 * which may send all of it before reading, gets its 413. */
static void take_chunk(request_t *rq, const char *data, size_t n) {
  if (rq->too_large || !rq->is_post || !rq->is_json)
    return;
  if (n > MAX_BODY - rq->len) {
    rq->too_large = true;
    free(rq->body);
    rq->body = NULL;
    rq->len = rq->cap = 0;
    return;
  }
  if (rq->len + n > rq->cap) {
    size_t cap = rq->cap > 0 ? rq->cap : 4096;
    while (cap < rq->len + n)
      cap *= 2;
    char *b = realloc(rq->body, cap);
    if (b == NULL) {
      rq->too_large = true; /* answered 413 rather than half recorded */
      free(rq->body);
      rq->body = NULL;
      rq->len = rq->cap = 0;
      return;
    }
    rq->body = b;
    rq->cap = cap;
  }
  memcpy(rq->body + rq->len, data, n);
  rq->len += n;
}

/* Called by MHD once with *req_cls NULL when the headers are in, then once
 * per chunk of body, then once more with no data: only then is the request
 * answered, whatever its verdict, since the whole body has been read. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *data_size, void **req_cls) {
  request_t *rq = *req_cls;
  if (rq == NULL) {
    rq = calloc(1, sizeof *rq);
    if (rq == NULL)
      return MHD_NO;
    rq->is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    rq->is_json = ct != NULL && strncasecmp(ct, "application/json", 16) == 0;
    *req_cls = rq;
    pthread_mutex_lock(&lock);
    n_requests++;
    pthread_mutex_unlock(&lock);
    return MHD_YES;
  }
  if (*data_size > 0) {
    take_chunk(rq, data, *data_size);
    *data_size = 0;
    return MHD_YES;
  }

  unsigned int status = MHD_HTTP_OK;
  const char *text = "ok\n";
  long retry_after = -1;
  if (!rq->is_post) {
    status = MHD_HTTP_METHOD_NOT_ALLOWED;
    text = "only POST is accepted\n";
  } else if (!rq->is_json) {
    status = MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
    text = "Content-Type must be application/json\n";
  } else if (rq->too_large) {
    status = MHD_HTTP_CONTENT_TOO_LARGE;
    text = "body larger than 1 MiB\n";
  } else {
    const char *id =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-id");
    int sig_ok = 1;
    if (keys != NULL) {
      const char *ts = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                   "webhook-timestamp");
      const char *sg = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                   "webhook-signature");
      sig_ok = id != NULL && ts != NULL && sg != NULL &&
               cl_sig_verify(keys, id, ts, sg, rq->body ? rq->body : "",
                             rq->len, (int64_t)time(NULL), 300) == 0;
    }
    pthread_mutex_lock(&lock);
    if (!sig_ok) {
      n_badsig++;
      status = MHD_HTTP_UNAUTHORIZED;
      text = "bad or missing webhook signature\n";
    } else if (script_next < script_n && (script_status[script_next] < 200 ||
                                          script_status[script_next] > 299)) {
      status = (unsigned int)script_status[script_next];
      retry_after = script_after[script_next];
      script_next++;
      text = "answering as scripted (--script)\n";
    } else if (fail_left > 0) {
      fail_left--;
      status = fail_status;
      text = "failing on purpose (--fail)\n";
    } else if (record(id, rq->body != NULL ? rq->body : "", rq->len) == 0) {
      if (script_next < script_n)
        status = (unsigned int)script_status[script_next++];
      n_recorded++;
      if (id != NULL)
        note_id(id);
    } else {
      status = MHD_HTTP_INTERNAL_SERVER_ERROR;
      text = "cannot record\n";
    }
    pthread_mutex_unlock(&lock);
  }
  delay_answer();
  return answer(conn, status, text, retry_after);
}

/* Frees the request, however it ended (answered, cut off, or shutdown). */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
  request_t *rq = *req_cls;
  if (rq == NULL)
    return;
  free(rq->body);
  free(rq);
  *req_cls = NULL;
}

/* Writes "PORT\n" to path through path.tmp and a rename.  Returns 0 or -1
 * (logged). */
static int write_port_file(const char *path, unsigned int port) {
  char tmp[PATH_MAX];
  char text[16];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int tn = snprintf(text, sizeof text, "%u\n", port);
  if (n < 0 || (size_t)n >= sizeof tmp || tn < 0) {
    fprintf(stderr, "hookd: --port-file: path too long\n");
    return -1;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, text, (size_t)tn) != tn) {
    fprintf(stderr, "hookd: cannot write %s: %s\n", tmp, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  if (close(fd) != 0 || rename(tmp, path) != 0) {
    fprintf(stderr, "hookd: cannot write %s: %s\n", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Returns 0 and stores the value of a whole decimal number in [min, max],
 * or -1 (logged, naming the option). */
static int parse_long(const char *opt, const char *s, long min, long max,
                      long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max) {
    fprintf(stderr, "hookd: %s: expected a number in %ld..%ld, got '%s'\n", opt,
            min, max, s);
    return -1;
  }
  *out = v;
  return 0;
}

static int usage(void) {
  fprintf(stderr, "usage: hookd --out FILE [--port-file FILE] [--fail N] "
                  "[--status CODE] [--delay-ms MS] [--secret WHSEC ...] "
                  "[--script CODE[:RETRY_AFTER],...]\n");
  return 2;
}

/* Parses --script "500,429:2,200".  Returns 0 or -1 (logged). */
static int parse_script(const char *text) {
  char *copy = strdup(text);
  if (copy == NULL)
    return -1;
  int rc = 0;
  char *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t && rc == 0;
       t = strtok_r(NULL, ",", &save)) {
    if (script_n == SCRIPT_MAX) {
      fprintf(stderr, "hookd: --script: at most %d answers\n", SCRIPT_MAX);
      rc = -1;
      break;
    }
    char *after = strchr(t, ':');
    if (after != NULL)
      *after++ = '\0';
    script_after[script_n] = -1;
    rc = parse_long("--script", t, 200, 599, &script_status[script_n]);
    if (rc == 0 && after != NULL)
      rc = parse_long("--script", after, 0, 86400, &script_after[script_n]);
    script_n++;
  }
  free(copy);
  return rc;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"out", required_argument, NULL, 'o'},
      {"port-file", required_argument, NULL, 'p'},
      {"fail", required_argument, NULL, 'f'},
      {"status", required_argument, NULL, 's'},
      {"delay-ms", required_argument, NULL, 'd'},
      {"secret", required_argument, NULL, 'k'},
      {"script", required_argument, NULL, 'x'},
      {NULL, 0, NULL, 0},
  };
  const char *out_path = NULL, *port_path = NULL;
  long status = 500;
  opterr = 0;
  for (;;) {
    int c = getopt_long(argc, argv, ":", opts, NULL);
    if (c == -1)
      break;
    switch (c) {
    case 'o':
      out_path = optarg;
      break;
    case 'p':
      port_path = optarg;
      break;
    case 'f':
      if (parse_long("--fail", optarg, 0, 1000000000, &fail_left) != 0)
        return usage();
      break;
    case 's':
      if (parse_long("--status", optarg, 200, 599, &status) != 0)
        return usage();
      break;
    case 'd':
      if (parse_long("--delay-ms", optarg, 0, 3600000, &delay_ms) != 0)
        return usage();
      break;
    case 'k': {
      char why[256];
      if ((keys == NULL && cl_sig_keys_new(&keys) != 0) ||
          cl_sig_keys_add(keys, optarg, strlen(optarg), why, sizeof why)) {
        fprintf(stderr, "hookd: --secret: %s\n", why);
        return usage();
      }
      break;
    }
    case 'x':
      if (parse_script(optarg) != 0)
        return usage();
      break;
    case ':':
      fprintf(stderr, "hookd: %s needs a value\n", argv[optind - 1]);
      return usage();
    default:
      fprintf(stderr, "hookd: unknown option '%s'\n", argv[optind - 1]);
      return usage();
    }
  }
  if (optind < argc) {
    fprintf(stderr, "hookd: unexpected argument '%s'\n", argv[optind]);
    return usage();
  }
  if (out_path == NULL) {
    fprintf(stderr, "hookd: --out is required\n");
    return usage();
  }
  fail_status = (unsigned int)status;

  out_fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0) {
    fprintf(stderr, "hookd: cannot open %s: %s\n", out_path, strerror(errno));
    return 1;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&stop_cond, &ca);
  pthread_condattr_destroy(&ca);

  /* The signals are blocked before MHD starts its threads, which inherit
   * the mask, and taken with sigwait() below: no handler runs anywhere. */
  sigset_t stop_sigs;
  sigemptyset(&stop_sigs);
  sigaddset(&stop_sigs, SIGTERM);
  sigaddset(&stop_sigs, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  struct MHD_Daemon *d =
      MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
                           MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
                       0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
                       (struct sockaddr *)&a, MHD_OPTION_NOTIFY_COMPLETED,
                       on_completed, NULL, MHD_OPTION_END);
  const union MHD_DaemonInfo *info =
      d != NULL ? MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
  if (info == NULL || info->port == 0) {
    fprintf(stderr, "hookd: cannot listen on 127.0.0.1\n");
    if (d != NULL)
      MHD_stop_daemon(d);
    close(out_fd);
    return 1;
  }
  unsigned int port = info->port;
  if (port_path != NULL && write_port_file(port_path, port) != 0) {
    MHD_stop_daemon(d);
    close(out_fd);
    return 1;
  }
  printf("hookd listening on 127.0.0.1:%u\n", port);
  fflush(stdout);

  int sig = 0;
  while (sigwait(&stop_sigs, &sig) != 0) {
  }

  pthread_mutex_lock(&lock);
  stopping = true;
  pthread_cond_broadcast(&stop_cond);
  pthread_mutex_unlock(&lock);
  MHD_stop_daemon(d);
  close(out_fd);
  pthread_cond_destroy(&stop_cond);
  printf("hookd: %lu requests, %lu recorded, %lu bad signatures, %zu "
         "distinct ids, %lu repeated\n",
         n_requests, n_recorded, n_badsig, nids, n_repeated);
  fflush(stdout);
  for (size_t i = 0; i < nids; i++)
    free(ids[i]);
  free(ids);
  cl_sig_keys_free(&keys);
  return 0;
}
