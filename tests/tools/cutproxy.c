/*
 * cutproxy.c: a TCP proxy that cuts connections on purpose, so that the
 * integration tests can lose a connection at a chosen moment of a chosen
 * statement and check what the library concludes (G9: an ambiguous outcome
 * is settled by reading data back, never taken as failure).
 *
 *   cutproxy LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT TRIGGER MODE [COUNT
 *            [CONTROL]]
 *
 * It listens on 127.0.0.1:LISTEN_PORT (0: a free port, announced as
 * "port N" on stdout, flushed, before the first accept) and forwards every
 * accepted connection to the upstream: UPSTREAM_HOST:UPSTREAM_PORT over
 * TCP, or, when UPSTREAM_HOST is an absolute path, the PostgreSQL unix
 * socket UPSTREAM_HOST/.s.PGSQL.UPSTREAM_PORT.  Several connections are
 * served at once from one poll() loop, with no dependencies.
 *
 * Client-to-server bytes are searched for TRIGGER, across read boundaries
 * (the tail of the previous read is kept).  The first COUNT matches
 * (default 1; 0 never cuts) cut their connection; after that every
 * connection passes through untouched.  MODE says when:
 *
 *   before  the read that holds the trigger is dropped and both sides are
 *           closed: the statement never reaches the server (a request split
 *           over several reads reaches it only in part, which the server
 *           discards).
 *   after   the read is forwarded, and so is the rest of the client's
 *           request; the server's answer is read and thrown away, and both
 *           sides are closed once the server has finished it (its
 *           ReadyForQuery message, which PostgreSQL sends after the commit of
 *           an implicit transaction), or after 10 seconds.  The statement
 *           executes and commits; the client never hears.  Waiting for
 *           ReadyForQuery, instead of closing at once, keeps the cut
 *           deterministic: a retry cannot overtake the first try, and a
 *           large answer cannot make the server's write fail before its
 *           commit.  To find that message the proxy follows the framing of
 *           the server's stream (and the client's startup packets, for the
 *           one-byte answers to SSL and GSS requests); an encrypted session
 *           cannot be followed, and is closed right after the forward.
 *
 * With CONTROL, a FIFO's path (made by the caller), the proxy also reads
 * commands from it, one a line, so that a fault harness can break live
 * connections on its own schedule:
 *
 *   reset            resets every live connection now (RST to both sides).
 *   hole             a blackhole: no byte is read or forwarded on any
 *                    connection (new ones are accepted and held too) ...
 *   release          ... until this, when traffic resumes as it was.
 *   latency MIN MAX [SEED]
 *                    holds every chunk read, either way, MIN to MAX ms
 *                    (drawn per chunk, from SEED when given) before
 *                    forwarding it; 0 0 ends it.
 *   rewrite FROM TO  (test-only surgery) replaces FROM by TO in what the
 *                    clients send, both \xHH-escaped (\x20: a space) and
 *                    of one length, so that no message's length changes;
 *                    an occurrence split over two reads is missed.  Each
 *                    chunk rewritten is logged ("rewrote 1 on connection
 *                    4").
 *   arm N [TRIGGER]  the next N trigger matches cut (as COUNT does); a
 *                    TRIGGER given here replaces the first one, and may
 *                    spell any byte as \xHH (a NUL, for a name's end).
 *
 * Each cut is logged on stderr as one line, for example
 * "cutproxy: cut connection 3 after forwarding trigger", and so is each
 * command ("cutproxy: reset 4 connections").  SIGTERM or SIGINT
 * ends the proxy with status 0; bad arguments exit 2; a failure to listen
 * exits 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define TRIGGER_MAX 1024
#define REWRITE_MAX 400
#define MAX_CONNS 256
#define AFTER_TIMEOUT_S 10.0

/* The protocol codes of the startup packets that the server answers with a
 * single byte ('N': go on in the clear; anything else: encrypted). */
#define PG_SSL_REQUEST 80877103u
#define PG_GSSENC_REQUEST 80877104u

typedef enum { MODE_BEFORE, MODE_AFTER } cut_mode_t;

/* Bytes read from one side, waiting to be written to the other. */
typedef struct pending {
  char buf[BUF_SIZE];
  size_t len, off;
  int eof;    /* the source side has closed its writing half */
  double due; /* under latency: not forwarded before this (monotonic) */
} pending_t;

typedef struct conn {
  int id;
  int cfd, sfd;
  pending_t up;   /* client to server */
  pending_t down; /* server to client */
  char tail[TRIGGER_MAX];
  size_t tail_len;
  /* "after" cut under way: the server's answer is being discarded. */
  int cutting;
  double cut_deadline;
  long z_at_cut;
  /* The client's startup packets (no type byte), until the startup
   * message proper. */
  int c_startup;
  unsigned char c_hdr[8];
  size_t c_hdr_len;
  uint32_t c_skip;
  /* The server's typed messages. */
  int s_single; /* one-byte answers still due (SSL/GSS requests) */
  int s_opaque; /* framing lost (encrypted): do not follow any more */
  unsigned char s_hdr[5];
  size_t s_hdr_len;
  uint32_t s_skip;
  unsigned char s_type;
  long s_ready; /* ReadyForQuery messages seen */
} conn_t;

static const char *upstream_host;
static const char *upstream_port;
static const char *trigger;
static size_t trigger_len;
static char trigger_buf[TRIGGER_MAX];
static cut_mode_t mode;
static long cuts_left;
static int next_id;
static conn_t *conns[MAX_CONNS];
static int nconns;
static int stop_pipe[2] = {-1, -1};
/* The control commands' state. */
static int ctl_fd = -1;
static char ctl_buf[2048];
static size_t ctl_len;
static int hole;
static long lat_min_ms, lat_max_ms;
static uint64_t lat_rng = 0x2545f4914f6cdd1dull;
static char rw_from[REWRITE_MAX], rw_to[REWRITE_MAX];
static size_t rw_len;

static void on_stop(int sig) {
  (void)sig;
  int saved = errno;
  if (write(stop_pipe[1], "x", 1) < 0) {
    /* Nothing to do: the pipe is full, so a stop is already pending. */
  }
  errno = saved;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Returns a connected socket to the upstream, or -1. */
static int connect_upstream(void) {
  if (upstream_host[0] == '/') {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    int n = snprintf(a.sun_path, sizeof a.sun_path, "%s/.s.PGSQL.%s",
                     upstream_host, upstream_port);
    if (n < 0 || (size_t)n >= sizeof a.sun_path)
      return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
      return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(upstream_host, upstream_port, &hints, &res) != 0)
    return -1;
  int fd = -1;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0)
      continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      break;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

/* The delay of one chunk under latency, in seconds (0 without). */
static double chunk_delay(void) {
  if (lat_max_ms <= 0)
    return 0;
  lat_rng ^= lat_rng << 13;
  lat_rng ^= lat_rng >> 7;
  lat_rng ^= lat_rng << 17;
  long span = lat_max_ms - lat_min_ms + 1;
  return (double)(lat_min_ms + (long)(lat_rng % (uint64_t)span)) / 1000.0;
}

/* Closes both sides with a reset (SO_LINGER 0) instead of a FIN. */
static void reset_fd(int fd) {
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

static void conn_close(int i) {
  conn_t *c = conns[i];
  close(c->cfd);
  close(c->sfd);
  free(c);
  conns[i] = conns[--nconns];
  conns[nconns] = NULL;
}

/* Follows the client's startup packets in data[0..n), counting the
 * requests that the server answers with one byte. */
static void follow_client(conn_t *c, const unsigned char *data, size_t n) {
  size_t i = 0;
  while (i < n && c->c_startup) {
    if (c->c_skip > 0) {
      size_t take = n - i < c->c_skip ? n - i : c->c_skip;
      i += take;
      c->c_skip -= (uint32_t)take;
      continue;
    }
    c->c_hdr[c->c_hdr_len++] = data[i++];
    if (c->c_hdr_len < 8)
      continue;
    c->c_hdr_len = 0;
    uint32_t len = be32(c->c_hdr), code = be32(c->c_hdr + 4);
    c->c_skip = len > 8 ? len - 8 : 0;
    if (code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST)
      c->s_single++;
    else
      c->c_startup = 0; /* the startup message: typed messages follow */
  }
}

/* Follows the framing of the server's stream in data[0..n), counting the
 * ReadyForQuery ('Z') messages. */
static void follow_server(conn_t *c, const unsigned char *data, size_t n) {
  size_t i = 0;
  while (i < n && !c->s_opaque) {
    if (c->s_skip > 0) {
      size_t take = n - i < c->s_skip ? n - i : c->s_skip;
      i += take;
      c->s_skip -= (uint32_t)take;
      if (c->s_skip == 0 && c->s_type == 'Z')
        c->s_ready++;
      continue;
    }
    if (c->s_single > 0 && c->s_hdr_len == 0) {
      if (data[i++] == 'N')
        c->s_single--;
      else
        c->s_opaque = 1;
      continue;
    }
    c->s_hdr[c->s_hdr_len++] = data[i++];
    if (c->s_hdr_len < 5)
      continue;
    c->s_hdr_len = 0;
    c->s_type = c->s_hdr[0];
    uint32_t len = be32(c->s_hdr + 1);
    if (len < 4) {
      c->s_opaque = 1;
      continue;
    }
    c->s_skip = len - 4;
    if (c->s_skip == 0 && c->s_type == 'Z')
      c->s_ready++;
  }
}

/* Returns 1 when TRIGGER occurs in the connection's kept tail followed by
 * data[0..n), and keeps the new tail. */
static int find_trigger(conn_t *c, const char *data, size_t n) {
  static char window[TRIGGER_MAX + BUF_SIZE];
  memcpy(window, c->tail, c->tail_len);
  memcpy(window + c->tail_len, data, n);
  size_t wlen = c->tail_len + n;
  int found = memmem(window, wlen, trigger, trigger_len) != NULL;
  size_t keep = trigger_len - 1 < wlen ? trigger_len - 1 : wlen;
  memcpy(c->tail, window + wlen - keep, keep);
  c->tail_len = keep;
  return found;
}

static void accept_one(int lfd) {
  int cfd = accept(lfd, NULL, NULL);
  if (cfd < 0)
    return;
  int sfd = nconns < MAX_CONNS ? connect_upstream() : -1;
  conn_t *c = sfd >= 0 ? calloc(1, sizeof *c) : NULL;
  if (c == NULL) {
    fprintf(stderr, "cutproxy: cannot reach %s:%s: %s\n", upstream_host,
            upstream_port, strerror(errno));
    if (sfd >= 0)
      close(sfd);
    close(cfd);
    return;
  }
  int one = 1;
  setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  set_nonblock(cfd);
  set_nonblock(sfd);
  c->id = ++next_id;
  c->cfd = cfd;
  c->sfd = sfd;
  c->c_startup = 1;
  conns[nconns++] = c;
}

/* Writes what is pending toward fd.  Returns 0, or -1 when fd is gone. */
static int flush_pending(pending_t *p, int fd) {
  while (p->off < p->len) {
    ssize_t w = send(fd, p->buf + p->off, p->len - p->off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
    p->off += (size_t)w;
  }
  p->len = p->off = 0;
  return 0;
}

static void rewrite_chunk(conn_t *c, char *data, size_t n);

/* Reads from the client.  Returns 0, or -1 to close the connection. */
static int read_client(conn_t *c) {
  ssize_t n = recv(c->cfd, c->up.buf, sizeof c->up.buf, 0);
  if (n < 0)
    return errno == EINTR || errno == EAGAIN ? 0 : -1;
  if (n == 0) {
    c->up.eof = 1;
    shutdown(c->sfd, SHUT_WR);
    return c->down.eof ? -1 : 0;
  }
  rewrite_chunk(c, c->up.buf, (size_t)n);
  follow_client(c, (const unsigned char *)c->up.buf, (size_t)n);
  if (cuts_left > 0 && !c->cutting && find_trigger(c, c->up.buf, (size_t)n)) {
    cuts_left--;
    if (mode == MODE_BEFORE) {
      fprintf(stderr,
              "cutproxy: cut connection %d before forwarding "
              "trigger\n",
              c->id);
      return -1;
    }
    c->cutting = 1;
    c->cut_deadline = now_s() + AFTER_TIMEOUT_S;
    c->z_at_cut = c->s_ready;
  }
  c->up.len = (size_t)n;
  c->up.off = 0;
  c->up.due = now_s() + chunk_delay();
  return 0;
}

/* Ends an "after" cut: both sides closed, the answer never forwarded. */
static void log_after_cut(const conn_t *c, const char *why) {
  fprintf(stderr,
          "cutproxy: cut connection %d after forwarding trigger "
          "(%s)\n",
          c->id, why);
}

/* Reads from the server.  Returns 0, or -1 to close the connection. */
static int read_server(conn_t *c) {
  static char discard[BUF_SIZE];
  char *dst = c->cutting ? discard : c->down.buf;
  ssize_t n = recv(c->sfd, dst, BUF_SIZE, 0);
  if (n < 0)
    return errno == EINTR || errno == EAGAIN ? 0 : -1;
  if (n == 0) {
    if (c->cutting) {
      log_after_cut(c, "the server closed first");
      return -1;
    }
    c->down.eof = 1;
    shutdown(c->cfd, SHUT_WR);
    return c->up.eof ? -1 : 0;
  }
  follow_server(c, (const unsigned char *)dst, (size_t)n);
  if (c->cutting)
    return 0;
  c->down.len = (size_t)n;
  c->down.off = 0;
  c->down.due = now_s() + chunk_delay();
  return 0;
}

static int usage(void) {
  fprintf(stderr, "usage: cutproxy LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT "
                  "TRIGGER before|after [COUNT [CONTROL]]\n");
  return 2;
}

/* Decodes text up to its end or its first space (the end is returned in
 * *rest), with \xHH escapes, into buf.  Returns the length, or -1 when it
 * is empty, longer than cap or badly escaped. */
static long unescape(const char *text, char *buf, size_t cap,
                     const char **rest) {
  size_t n = 0;
  const char *s = text;
  for (; *s && *s != ' '; n++) {
    if (n == cap)
      return -1;
    if (s[0] == '\\' && s[1] == 'x') {
      unsigned v = 0;
      if (sscanf(s + 2, "%2x", &v) != 1 || !s[2] || !s[3])
        return -1;
      buf[n] = (char)v;
      s += 4;
    } else {
      buf[n] = *s++;
    }
  }
  if (rest)
    *rest = s;
  return n ? (long)n : -1;
}

/* Sets the trigger from text with \xHH escapes.  Returns 0, or -1 when it
 * is empty, too long or badly escaped (the trigger is then unchanged). */
static int set_trigger(const char *text) {
  char buf[TRIGGER_MAX];
  const char *rest;
  long n = unescape(text, buf, sizeof buf, &rest);
  if (n < 0 || *rest)
    return -1;
  memcpy(trigger_buf, buf, (size_t)n);
  trigger = trigger_buf;
  trigger_len = (size_t)n;
  return 0;
}

/* "rewrite FROM TO": both with \xHH escapes (\x20 for a space), of the
 * same length, so that no message's length changes. */
static int set_rewrite(const char *text) {
  char from[REWRITE_MAX], to[REWRITE_MAX];
  const char *rest;
  long nf = unescape(text, from, sizeof from, &rest);
  if (nf < 0 || *rest != ' ')
    return -1;
  long nt = unescape(rest + 1, to, sizeof to, &rest);
  if (nt != nf || *rest)
    return -1;
  memcpy(rw_from, from, (size_t)nf);
  memcpy(rw_to, to, (size_t)nt);
  rw_len = (size_t)nf;
  return 0;
}

/* Rewrites every whole occurrence of rw_from in one chunk the client sent
 * (one split over two reads is missed: the log's count tells). */
static void rewrite_chunk(conn_t *c, char *data, size_t n) {
  if (rw_len == 0)
    return;
  long k = 0;
  for (char *at = data;
       (at = memmem(at, n - (size_t)(at - data), rw_from, rw_len)) != NULL;
       at += rw_len, k++)
    memcpy(at, rw_to, rw_len);
  if (k)
    fprintf(stderr, "cutproxy: rewrote %ld on connection %d\n", k, c->id);
}

static void run_command(const char *line) {
  long a = 0, b = 0;
  if (strcmp(line, "reset") == 0) {
    int n = nconns;
    while (nconns > 0) {
      reset_fd(conns[nconns - 1]->cfd);
      reset_fd(conns[nconns - 1]->sfd);
      conn_close(nconns - 1);
    }
    fprintf(stderr, "cutproxy: reset %d connections\n", n);
  } else if (strcmp(line, "hole") == 0) {
    hole = 1;
    fprintf(stderr, "cutproxy: blackhole on (%d connections)\n", nconns);
  } else if (strcmp(line, "release") == 0) {
    hole = 0;
    fprintf(stderr, "cutproxy: blackhole off\n");
  } else if (sscanf(line, "latency %ld %ld", &a, &b) == 2 && a >= 0 && b >= a &&
             b <= 60000) {
    unsigned long long seed = 0;
    if (sscanf(line, "latency %*d %*d %llu", &seed) == 1 && seed)
      lat_rng = seed;
    lat_min_ms = a;
    lat_max_ms = b;
    fprintf(stderr, "cutproxy: latency %ld-%ld ms\n", a, b);
  } else if (strncmp(line, "rewrite ", 8) == 0) {
    if (set_rewrite(line + 8) != 0) {
      fprintf(stderr, "cutproxy: bad rewrite in \"%s\"\n", line);
      return;
    }
    fprintf(stderr, "cutproxy: rewriting %zu bytes\n", rw_len);
  } else if (sscanf(line, "arm %ld", &a) == 1 && a >= 0) {
    const char *t = strchr(line + 4, ' ');
    if (t != NULL && set_trigger(t + 1) != 0) {
      fprintf(stderr, "cutproxy: bad trigger in \"%s\"\n", line);
      return;
    }
    cuts_left = a;
    fprintf(stderr, "cutproxy: armed for %ld cuts\n", a);
  } else {
    fprintf(stderr, "cutproxy: unknown command \"%s\"\n", line);
  }
}

/* Reads the commands waiting on the control FIFO and runs each line. */
static void read_control(void) {
  ssize_t n = read(ctl_fd, ctl_buf + ctl_len, sizeof ctl_buf - 1 - ctl_len);
  if (n <= 0)
    return;
  ctl_len += (size_t)n;
  char *nl;
  while ((nl = memchr(ctl_buf, '\n', ctl_len)) != NULL) {
    *nl = '\0';
    run_command(ctl_buf);
    size_t used = (size_t)(nl - ctl_buf) + 1;
    memmove(ctl_buf, nl + 1, ctl_len - used);
    ctl_len -= used;
  }
  if (ctl_len == sizeof ctl_buf - 1)
    ctl_len = 0; /* a line too long: dropped */
}

static int parse_long(const char *s, long min, long max, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  long listen_port = 0, up_port = 0;
  if (argc < 6 || argc > 8 || parse_long(argv[1], 0, 65535, &listen_port) ||
      parse_long(argv[3], 1, 65535, &up_port))
    return usage();
  upstream_host = argv[2];
  upstream_port = argv[3];
  trigger = argv[4];
  trigger_len = strlen(trigger);
  if (trigger_len == 0 || trigger_len > TRIGGER_MAX)
    return usage();
  if (strcmp(argv[5], "before") == 0)
    mode = MODE_BEFORE;
  else if (strcmp(argv[5], "after") == 0)
    mode = MODE_AFTER;
  else
    return usage();
  cuts_left = 1;
  if (argc >= 7 && parse_long(argv[6], 0, 1000000000, &cuts_left))
    return usage();
  /* O_RDWR: the FIFO never reads as ended when a writer closes. */
  if (argc == 8 && (ctl_fd = open(argv[7], O_RDWR | O_NONBLOCK)) < 0) {
    fprintf(stderr, "cutproxy: %s: %s\n", argv[7], strerror(errno));
    return 2;
  }

  if (pipe(stop_pipe) != 0)
    return 1;
  set_nonblock(stop_pipe[1]);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)listen_port);
  socklen_t alen = sizeof a;
  if (lfd < 0 ||
      setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 64) != 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
    fprintf(stderr, "cutproxy: cannot listen on 127.0.0.1:%ld: %s\n",
            listen_port, strerror(errno));
    return 1;
  }
  if (listen_port == 0) {
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
  }

  struct pollfd fds[3 + 2 * MAX_CONNS];
  for (;;) {
    int nfds = 0;
    double t = now_s();
    fds[nfds++] = (struct pollfd){.fd = stop_pipe[0], .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = lfd, .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = ctl_fd, .events = POLLIN};
    double deadline = -1;
    for (int i = 0; i < nconns; i++) {
      conn_t *c = conns[i];
      short ce = 0, se = 0;
      if (c->up.len == 0 && !c->up.eof)
        ce |= POLLIN;
      if (c->down.len > 0 && c->down.due <= t)
        ce |= POLLOUT;
      if ((c->down.len == 0 || c->cutting) && !c->down.eof)
        se |= POLLIN;
      if (c->up.len > 0 && c->up.due <= t)
        se |= POLLOUT;
      if (hole)
        ce = se = 0; /* errors and hang-ups are still reported */
      fds[nfds++] = (struct pollfd){.fd = c->cfd, .events = ce};
      fds[nfds++] = (struct pollfd){.fd = c->sfd, .events = se};
      if (c->cutting && !hole && (deadline < 0 || c->cut_deadline < deadline))
        deadline = c->cut_deadline;
      for (int k = 0; k < 2 && !hole; k++) {
        const pending_t *p = k ? &c->down : &c->up;
        if (p->len > 0 && p->due > t && (deadline < 0 || p->due < deadline))
          deadline = p->due;
      }
    }
    int timeout = -1;
    if (deadline >= 0) {
      double left = deadline - now_s();
      timeout = left <= 0 ? 0 : (int)(left * 1000) + 1;
    }
    int ready = poll(fds, (nfds_t)nfds, timeout);
    if (ready < 0 && errno != EINTR) {
      perror("cutproxy: poll");
      return 1;
    }
    if (fds[0].revents & POLLIN)
      break;
    if (fds[2].revents & POLLIN)
      read_control();
    /* Walk the connections as they were polled, back to front, so that
     * closing one (which moves the last into its slot) skips nothing. */
    int polled = (nfds - 3) / 2;
    double now = now_s();
    for (int i = polled - 1; i >= 0 && i < nconns; i--) {
      conn_t *c = conns[i];
      short cr = fds[3 + 2 * i].revents, sr = fds[4 + 2 * i].revents;
      if (hole) {
        /* Held: only a side that went away ends the connection. */
        if ((cr | sr) & (POLLERR | POLLHUP))
          conn_close(i);
        continue;
      }
      int gone =
          (sr & POLLERR) || ((sr & POLLHUP) && c->down.eof) ||
          (!c->cutting && ((cr & POLLERR) || ((cr & POLLHUP) && c->up.eof)));
      if (!gone && (sr & POLLOUT) && flush_pending(&c->up, c->sfd) != 0)
        gone = 1;
      if (!gone && (cr & POLLOUT) && flush_pending(&c->down, c->cfd) != 0)
        gone = 1;
      if (!gone && (sr & (POLLIN | POLLHUP)) &&
          (c->down.len == 0 || c->cutting) && !c->down.eof &&
          read_server(c) != 0)
        gone = 1;
      if (!gone && (cr & (POLLIN | POLLHUP | POLLERR)) && c->up.len == 0 &&
          !c->up.eof && read_client(c) != 0)
        gone = 1;
      if (!gone && c->cutting && c->up.len == 0 && c->s_ready > c->z_at_cut) {
        log_after_cut(c, "the server finished the statement; its answer was "
                         "dropped");
        gone = 1;
      }
      if (!gone && c->cutting && c->up.len == 0 && c->s_opaque) {
        log_after_cut(c, "encrypted session: closed right after the forward");
        gone = 1;
      }
      if (!gone && c->cutting && now >= c->cut_deadline) {
        log_after_cut(c, "the server did not finish within 10 s");
        gone = 1;
      }
      if (gone)
        conn_close(i);
    }
    if (fds[1].revents & POLLIN)
      accept_one(lfd);
  }
  while (nconns > 0)
    conn_close(nconns - 1);
  close(lfd);
  return 0;
}
