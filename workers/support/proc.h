/*
 * proc.h: running PostgreSQL's server programs on behalf of libclaimer
 * (internal).  The server refuses to run as root, so when the caller is
 * root every server command (initdb, pg_ctl) runs as an unprivileged user
 * that owns the cluster.  These functions find the server binaries, pick
 * that user, create directories it owns, run a program as it (argument
 * vector, no shell), and read the end of a log for error messages.  The
 * embedded server (embedded.c) is built on them, and so is the test harness
 * that starts throwaway clusters (fsync off, a TCP port).  Last, it builds
 * the environment of the children the worker and the reaper start, without
 * the database's credentials.
 *
 * Every function that takes err/errlen writes one sentence naming what
 * failed into err on failure (err may be NULL; the text is truncated to
 * errlen) and leaves it alone on success.  Nothing here prints anything.
 */
#ifndef CLAIMER_PROC_H
#define CLAIMER_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Finds the directory holding PostgreSQL's server programs: the environment
 * variable CLAIMER_PG_BINDIR when set (it must hold pg_ctl and initdb), else
 * the highest-numbered /usr/lib/postgresql/<version>/bin that holds both,
 * else the directory of the pg_ctl found on PATH (symbolic links resolved,
 * so that pg_ctl finds its postgres) when initdb sits next to it.  Writes the
 * directory, without a trailing slash, into out (n bytes).  Returns 0, or
 * CL_EEMBEDDED with a message telling how to install the server. */
int cl__pg_bindir(char *out, size_t n, char *err, size_t errlen);

/* Names the user the server runs as: when the process runs as root, the
 * unprivileged user named by CLAIMER_PG_USER (default "postgres"), which must
 * exist and must not be root; otherwise the current user.  Writes its name
 * into name (n bytes) and its ids into *uid and *gid (either pointer may be
 * NULL).  Returns 0 or CL_EEMBEDDED. */
int cl__server_user(char *name, size_t n, uid_t *uid, gid_t *gid, char *err,
                    size_t errlen);

/* Creates the directory path with mkdir -p semantics: missing parents are
 * made with mode 0755 (less the umask) and owned by the caller; path itself
 * ends with exactly mode and, unless uid / gid is (uid_t)-1 / (gid_t)-1, that
 * owner and group, whether it was created now or existed.  path itself is
 * never followed when it is a symbolic link (parents are).  Returns 0 or a
 * negative errno (-ENOTDIR when path or a parent is not a directory, or
 * path is a symbolic link, -ENAMETOOLONG, -EPERM from chown when not root,
 * ...). */
int cl__mkdir_owned(const char *path, mode_t mode, uid_t uid, gid_t gid);

/* Runs argv[0] (an absolute path; no PATH search, no shell) with arguments
 * argv (NULL-terminated) and waits for it.
 *   as_user  the user name to run as (its groups, HOME, USER and LOGNAME
 *            too); NULL or the current user's name runs as the caller.
 *            Another user needs root.
 *   cwd      the directory to start in (NULL: "/"); it must be readable by
 *            that user, since a server inherits it.
 *   out_file where stdout and stderr go, opened for appending and created
 *            (mode 0600, owned by as_user) when missing; NULL: /dev/null.
 * stdin is /dev/null, the signal mask and dispositions are reset, and no
 * descriptor of the caller leaks into the child.
 * Returns the program's exit status (0..255; 128 + the signal number when a
 * signal killed it), writing "<program> exited with status N" into err when
 * that is not 0; or CL_EEMBEDDED when it could not be run at all (no such
 * program, unknown user, setuid or chdir refused, fork failed). */
int cl__run(const char *const argv[], const char *as_user, const char *cwd,
            const char *out_file, char *err, size_t errlen);

/* Copies the last `lines` lines of the file at path (at most n - 1 bytes of
 * them, from the end of the file) into out, NUL-terminated, without the final
 * newline.  Returns the number of bytes written, 0 when the file is empty, or
 * a negative errno when it cannot be read (out is then ""). */
int cl__log_tail(const char *path, int lines, char *out, size_t n);

/* Removes path and everything below it without following symbolic links
 * (rm -rf).  Returns 0 (also when path does not exist) or a negative errno
 * for the first entry that could not be removed. */
int cl__rmtree(const char *path);

/* Creates a new cluster in data_dir by running bindir/initdb as as_user
 * (NULL: the caller) with superuser name superuser and the options
 *   -E UTF8 --no-locale --auth-local=trust --auth-host=reject
 * followed by extra_args (NULL-terminated, may be NULL; later options win, so
 * "--auth-host=trust" or "--no-sync" can be given), the output of initdb
 * appended to out_file (NULL: discarded).  Then appends conf (may be NULL),
 * lines of postgresql.conf such as "fsync = off\nport = 54321\n", to the
 * cluster's postgresql.conf.  data_dir must be missing or an empty directory
 * whose parent as_user can write.  Returns 0 or CL_EEMBEDDED with a message
 * that ends with the last lines of out_file. */
int cl__initdb(const char *bindir, const char *data_dir, const char *as_user,
               const char *superuser, const char *const extra_args[],
               const char *conf, const char *out_file, char *err,
               size_t errlen);

/* Asks `pg_ctl status` about data_dir, running it as as_user (NULL: the
 * caller).  Returns 1 when a postmaster runs on it, 0 when none does (also
 * when data_dir holds no cluster, and when the postmaster is a zombie: killed
 * but not yet reaped, as happens in containers whose init reaps late),
 * CL_EEMBEDDED when pg_ctl fails otherwise. */
int cl__pg_running(const char *bindir, const char *data_dir,
                   const char *as_user, char *err, size_t errlen);

/* Starts a server on data_dir with `pg_ctl start -w -t timeout_s -s`, as
 * as_user (NULL: the caller), the server's log in log_file (which as_user
 * must be able to append to; the output of pg_ctl goes there too), the
 * working directory cwd (NULL: data_dir).  pg_ctl waits until the server
 * accepts connections.  A stale postmaster.pid left by a crash is handled by
 * the server, except when its postmaster is a zombie (which the server would
 * take for alive): then this removes it and the socket's lock file first.
 * Returns 0 or CL_EEMBEDDED with the last lines of log_file. */
int cl__pg_start(const char *bindir, const char *data_dir, const char *as_user,
                 const char *log_file, const char *cwd, int timeout_s,
                 char *err, size_t errlen);

/* Stops the server on data_dir with `pg_ctl stop -m mode -w -t timeout_s -s`
 * (mode: "smart", "fast" or "immediate"; NULL: "fast"), as as_user (NULL: the
 * caller), pg_ctl's output appended to out_file (NULL: discarded).  Returns
 * 0, also when no server was running, or CL_EEMBEDDED. */
int cl__pg_stop(const char *bindir, const char *data_dir, const char *as_user,
                const char *mode, int timeout_s, const char *out_file,
                char *err, size_t errlen);

/* The variables no child of claimer inherits: the database's credentials
 * and what points libpq at them (CLAIMER_DSN, which may hold a password,
 * PGPASSWORD, PGPASSFILE, PGSERVICEFILE, whose services may hold
 * passwords, and PGSSLKEY, the client's private key), and the hook URL of
 * claimer's own config (CLAIMER_REAPER_HOOK_URL, which may hold a token).
 * What only says where the server is (PGHOST, PGPORT, PGUSER, PGDATABASE,
 * PGSSLMODE, ...) is kept: a handler may reach the database with
 * credentials of its own.  NULL-terminated. */
extern const char *const cl__child_env_secrets[];

/* Builds the environment of a child claimer starts (an exec handler of the
 * worker, an alert hook of the reaper): environ less cl__child_env_secrets
 * and less every variable named in names, then names[i]=values[i] for
 * i < n.  Returns one malloc'd block holding the NULL-terminated array and
 * its strings (free() it alone), or NULL when out of memory. */
char **cl__child_env(const char *const names[], const char *const values[],
                     size_t n);

#endif /* CLAIMER_PROC_H */
