/*
 * embedded.h: the embedded PostgreSQL the programs use when no DSN is
 * given: a cluster of its own under a state directory, started on demand,
 * reached over a unix socket only.  Programs' side, not libclaimer.
 */
#ifndef CLAIMER_EMBEDDED_H
#define CLAIMER_EMBEDDED_H

#include <stddef.h>

typedef struct cl_embedded_info {
  char state_dir[1024];  /* where everything lives */
  char data_dir[1024];   /* the cluster */
  char socket_dir[1024]; /* the unix socket (no TCP) */
  char log_file[1024];
  char dsn[1200]; /* how to connect */
  int running;    /* 1 when the server answers */
  int created;    /* 1 when this call ran initdb */
  int started;    /* 1 when this call started the server */
} cl_embedded_info_t;

/* Fills info with the paths for state_dir (NULL: CLAIMER_HOME, else
 * $XDG_STATE_HOME/claimer, else ~/.local/state/claimer; as root
 * /var/lib/claimer) and whether the server runs.  Returns 0, CL_EINVAL for
 * a NULL info, or CL_EEMBEDDED when no state dir can be chosen. */
int cl_embedded_locate(const char *state_dir, cl_embedded_info_t *info);
/* Creates the cluster when missing (initdb, as an unprivileged user when
 * run as root), starts it when not running, and creates the claimer
 * database.  Safe to call from several processes at once.  Returns 0 or
 * CL_EEMBEDDED with a message in err. */
int cl_embedded_ensure(const char *state_dir, cl_embedded_info_t *info,
                       char *err, size_t errlen);
/* Stops the server (fast shutdown) when it runs.  Returns 0 or
 * CL_EEMBEDDED. */
int cl_embedded_stop(const char *state_dir, char *err, size_t errlen);

#endif
