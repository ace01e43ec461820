/*
 * dead.c: the dead letters: items whose attempts are spent, or that a
 * handler failed for good.  A person lists them, puts them back for a new
 * round (attempts reset, the old error kept in the item's history) or
 * discards them.  The statements are in sql.c.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

void cl_dead_free(cl_dead_t *rows, size_t count) {
  if (rows == NULL)
    return;
  for (size_t i = 0; i < count; i++) {
    free(rows[i].item_id);
    free(rows[i].queue);
    free(rows[i].last_error);
    free(rows[i].finished_at);
    free(rows[i].payload);
  }
  free(rows);
}

int cl_dead_list(cl_conn_t *c, const char *queue, int limit, cl_dead_t **rows,
                 size_t *count) {
  *rows = NULL;
  *count = 0;
  char why[256];
  if (queue != NULL && cl_check_queue(queue, why, sizeof why) != 0) {
    cl__set_error(c, NULL, "%s", why);
    return CL_EINVAL;
  }
  if (limit < 1 || limit > 100000) {
    cl__set_error(c, NULL, "limit %d is out of range 1..100000", limit);
    return CL_EINVAL;
  }
  char lbuf[16];
  snprintf(lbuf, sizeof lbuf, "%d", limit);
  const char *params[] = {queue, lbuf};
  PGresult *r = NULL;
  int rc = cl__exec(c, CL__STMT_DEAD_LIST, params, &r);
  if (rc != 0)
    return rc;
  int n = PQntuples(r);
  cl_dead_t *out = n ? calloc((size_t)n, sizeof *out) : NULL;
  if (n && out == NULL) {
    PQclear(r);
    return CL_ENOMEM;
  }
  int oom = 0;
  for (int i = 0; i < n; i++) {
    out[i].item_id = cl__strdup(PQgetvalue(r, i, 0));
    out[i].queue = cl__strdup(PQgetvalue(r, i, 1));
    out[i].attempts = atoi(PQgetvalue(r, i, 2));
    out[i].max_attempts = atoi(PQgetvalue(r, i, 3));
    out[i].last_error = cl__strdup(PQgetvalue(r, i, 4));
    out[i].finished_at = cl__strdup(PQgetvalue(r, i, 5));
    out[i].payload = cl__strdup(PQgetvalue(r, i, 6));
    oom |= !out[i].item_id || !out[i].queue || !out[i].last_error ||
           !out[i].finished_at || !out[i].payload;
  }
  PQclear(r);
  if (oom) {
    cl_dead_free(out, (size_t)n);
    return CL_ENOMEM;
  }
  *rows = out;
  *count = (size_t)n;
  return 0;
}

/* The shared shape of retry and discard: ids, or all of a queue. */
static int dead_change(cl_conn_t *c, cl__stmt_id_t id, const char *const *ids,
                       size_t n, const char *queue) {
  char why[512];
  if (ids == NULL) {
    if (cl_check_queue(queue ? queue : "", why, sizeof why) != 0) {
      cl__set_error(c, NULL, "%s", why);
      return CL_EINVAL;
    }
  } else {
    if (n == 0 || n > 100000) {
      cl__set_error(c, NULL, "%zu item ids: give 1..100000", n);
      return CL_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
      if (cl_check_item_id(ids[i] ? ids[i] : "", why, sizeof why) != 0) {
        cl__set_error(c, NULL, "item %zu: %s", i + 1, why);
        return CL_EINVAL;
      }
    }
  }
  char *arr = ids ? cl__array_literal(ids, n) : NULL;
  if (ids != NULL && arr == NULL)
    return CL_ENOMEM;
  const char *params[] = {arr, ids ? NULL : queue};
  PGresult *r = NULL;
  int rc = cl__exec(c, id, params, &r);
  free(arr);
  if (rc != 0)
    return rc;
  rc = PQntuples(r);
  PQclear(r);
  return rc;
}

int cl_dead_retry(cl_conn_t *c, const char *const *ids, size_t n,
                  const char *queue) {
  return dead_change(c, CL__STMT_DEAD_RETRY, ids, n, queue);
}

int cl_dead_discard(cl_conn_t *c, const char *const *ids, size_t n,
                    const char *queue) {
  return dead_change(c, CL__STMT_DEAD_DISCARD, ids, n, queue);
}
