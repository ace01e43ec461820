/*
 * sql.c: the statements of the claim protocol.  Each is one statement (CTEs
 * where several tables change), so it runs as one implicit transaction:
 * the claim row, the item's state and the result change together or not at
 * all.  Parameters are always bound, never spliced into the text.
 *
 * The shapes, and why:
 *  - claim picks candidates from the ready index with FOR UPDATE SKIP
 *    LOCKED, so concurrent claimers take different rows instead of queueing
 *    behind one another on the oldest item, then INSERTs their claim rows
 *    ON CONFLICT DO NOTHING: the unique claims.item_id stays the arbiter
 *    (G2).  A candidate re-checked after a concurrent commit must still be
 *    'ready' (READ COMMITTED re-evaluates the WHERE on the locked row), so a
 *    done item is never claimed.
 *  - complete, fail and release delete the claim row only where the token
 *    matches (G3): zero rows deleted means the lease is gone.  complete then
 *    reads back whether a result with this token exists, which settles a
 *    retry after a lost connection (G9); fail does the same through
 *    items.last_token.
 *  - reap locks stale claims with SKIP LOCKED, so several reapers split the
 *    work and each stale lease is ended exactly once.
 */
#include "sql.h"

const cl__stmt_t cl__stmts[CL__STMT_COUNT] = {
  [CL__STMT_ENQUEUE] = {"claimer_enqueue", 6,
    "WITH input AS ("
    "  SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int[],"
    "                       $5::int[], $6::float8[])"
    "    WITH ORDINALITY AS t(item_id, queue, payload, priority,"
    "                         max_attempts, run_in, ord)"
    "), ins AS ("
    "  INSERT INTO claimer.items (item_id, queue, payload, priority,"
    "                             max_attempts, run_at)"
    "  SELECT item_id, queue, coalesce(payload, 'null'), priority,"
    "         max_attempts, now() + run_in * interval '1 second'"
    "    FROM input ORDER BY ord"
    "  ON CONFLICT (item_id) DO NOTHING"
    "  RETURNING item_id, queue"
    "), wake AS ("
    "  SELECT count(pg_notify('claimer_enqueue', q)) AS n"
    "    FROM (SELECT DISTINCT queue AS q FROM ins) d"
    "), first AS ("
    "  SELECT DISTINCT ON (item_id) item_id, ord FROM input"
    "   ORDER BY item_id, ord"
    ")"
    "SELECT first.ord FROM first JOIN ins USING (item_id), wake"},

  [CL__STMT_CLAIM] = {"claimer_claim", 4,
    "WITH cand AS ("
    "  SELECT item_id, attempts, max_attempts FROM claimer.items"
    "   WHERE queue = $1 AND state = 'ready' AND run_at <= now()"
    "   ORDER BY priority DESC, run_at, item_id"
    "   LIMIT $2"
    "   FOR UPDATE SKIP LOCKED"
    "), ins AS ("
    "  INSERT INTO claimer.claims (item_id, queue, worker_id, token, attempt,"
    "                              lease_until)"
    "  SELECT item_id, $1, $3, claimer.new_token(), attempts + 1,"
    "         now() + $4::float8 * interval '1 second'"
    "    FROM cand"
    "  ON CONFLICT (item_id) DO NOTHING"
    "  RETURNING item_id, token, attempt, lease_until"
    "), upd AS ("
    "  UPDATE claimer.items i SET state = 'leased'"
    "    FROM ins WHERE i.item_id = ins.item_id"
    "  RETURNING i.item_id, i.payload, i.max_attempts, i.priority, i.run_at"
    ")"
    "SELECT ins.item_id, ins.token, ins.attempt, upd.max_attempts,"
    "       upd.payload::text, claimer.rfc3339(ins.lease_until)"
    "  FROM ins JOIN upd USING (item_id)"
    " ORDER BY upd.priority DESC, upd.run_at, ins.item_id"},

  [CL__STMT_COMPLETE] = {"claimer_complete", 3,
    "WITH del AS ("
    "  DELETE FROM claimer.claims WHERE item_id = $1 AND token = $2"
    "  RETURNING item_id, queue, token, worker_id, attempt"
    "), res AS ("
    "  INSERT INTO claimer.results (item_id, queue, token, worker_id, attempt,"
    "                               result)"
    "  SELECT item_id, queue, token, worker_id, attempt,"
    "         coalesce($3::jsonb, 'null') FROM del"
    "  RETURNING item_id, attempt"
    "), upd AS ("
    "  UPDATE claimer.items i SET state = 'done', attempts = res.attempt,"
    "         finished_at = now()"
    "    FROM res WHERE i.item_id = res.item_id"
    "  RETURNING i.item_id"
    ")"
    "SELECT (SELECT count(*) FROM upd)::int,"
    "       EXISTS (SELECT 1 FROM claimer.results r"
    "                WHERE r.item_id = $1 AND r.token = $2)"},

  /* The settling reads of G9, sent as their own statements (so with a
   * fresh snapshot) after a resend found no claim. */
  [CL__STMT_COMPLETE_CHECK] = {"claimer_complete_check", 2,
    "SELECT 1 FROM claimer.results WHERE item_id = $1 AND token = $2"},

  [CL__STMT_FAIL_CHECK] = {"claimer_fail_check", 2,
    "SELECT state, attempts, claimer.rfc3339(run_at), true"
    "  FROM claimer.items WHERE item_id = $1 AND last_token = $2"},

  [CL__STMT_FAIL] = {"claimer_fail", 5,
    "WITH del AS ("
    "  DELETE FROM claimer.claims WHERE item_id = $1 AND token = $2"
    "  RETURNING item_id, attempt"
    "), upd AS ("
    "  UPDATE claimer.items i SET"
    "         attempts = del.attempt, last_error = $3, last_token = $2,"
    "         state = CASE WHEN $4::bool AND del.attempt < i.max_attempts"
    "                      THEN 'ready' ELSE 'dead' END,"
    "         run_at = CASE WHEN $4::bool AND del.attempt < i.max_attempts"
    "                  THEN now() + CASE WHEN $5::float8 >= 0"
    "                                    THEN $5::float8 * interval '1 second'"
    "                                    ELSE claimer.backoff(del.attempt) END"
    "                  ELSE i.run_at END,"
    "         finished_at = CASE WHEN $4::bool AND del.attempt < i.max_attempts"
    "                       THEN NULL ELSE now() END"
    "    FROM del WHERE i.item_id = del.item_id"
    "  RETURNING i.state, i.attempts, i.run_at"
    ")"
    "SELECT state, attempts, claimer.rfc3339(run_at), false FROM upd "
    "UNION ALL "
    "SELECT state, attempts, claimer.rfc3339(run_at), true FROM claimer.items"
    " WHERE item_id = $1 AND last_token = $2"
    "   AND NOT EXISTS (SELECT 1 FROM del)"},

  [CL__STMT_RELEASE] = {"claimer_release", 2,
    "WITH del AS ("
    "  DELETE FROM claimer.claims WHERE item_id = $1 AND token = $2"
    "  RETURNING item_id"
    ")"
    "UPDATE claimer.items i SET state = 'ready'"
    "  FROM del WHERE i.item_id = del.item_id"
    " RETURNING i.item_id"},

  [CL__STMT_HEARTBEAT] = {"claimer_heartbeat", 2,
    "WITH w AS ("
    "  INSERT INTO claimer.workers (worker_id) VALUES ($1)"
    "  ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()"
    "), ext AS ("
    "  UPDATE claimer.claims"
    "     SET lease_until = greatest(lease_until,"
    "                                now() + $2::float8 * interval '1 second')"
    "   WHERE worker_id = $1"
    "  RETURNING item_id, token, lease_until"
    ")"
    "SELECT item_id, token, claimer.rfc3339(lease_until) FROM ext"
    " ORDER BY item_id"},

  [CL__STMT_REAP] = {"claimer_reap", 1,
    "WITH stale AS ("
    "  SELECT item_id FROM claimer.claims WHERE lease_until < now()"
    "   ORDER BY lease_until LIMIT $1"
    "   FOR UPDATE SKIP LOCKED"
    "), del AS ("
    "  DELETE FROM claimer.claims c USING stale s WHERE c.item_id = s.item_id"
    "  RETURNING c.item_id, c.token, c.worker_id, c.attempt, c.lease_until"
    "), upd AS ("
    "  UPDATE claimer.items i SET"
    "         attempts = del.attempt, last_token = NULL,"
    "         last_error = format('lease expired: worker %s held it until %s',"
    "                             del.worker_id,"
    "                             claimer.rfc3339(del.lease_until)),"
    "         state = CASE WHEN del.attempt >= i.max_attempts"
    "                      THEN 'dead' ELSE 'ready' END,"
    "         run_at = CASE WHEN del.attempt >= i.max_attempts"
    "                  THEN i.run_at ELSE now() END,"
    "         finished_at = CASE WHEN del.attempt >= i.max_attempts"
    "                       THEN now() ELSE NULL END"
    "    FROM del WHERE i.item_id = del.item_id"
    "  RETURNING i.item_id, i.queue, i.state, del.worker_id, del.token"
    ")"
    "SELECT item_id, queue, state, worker_id, token FROM upd"},

  [CL__STMT_STATUS] = {"claimer_status", 0,
    "SELECT queue, ready, scheduled, leased, done, dead, oldest_ready_s, stale"
    "  FROM claimer.queue_status ORDER BY queue"},

  /* A worker daemon's row: who it is, for dashboards and for the reaper,
   * which reaps workers whose heartbeat stopped. */
  [CL__STMT_REGISTER] = {"claimer_register", 6,
    "INSERT INTO claimer.workers (worker_id, host, pid, version, concurrency,"
    "                             queues)"
    " VALUES ($1, $2, $3::int, $4, $5::int, $6::text[])"
    " ON CONFLICT (worker_id) DO UPDATE SET host = EXCLUDED.host,"
    "   pid = EXCLUDED.pid, version = EXCLUDED.version,"
    "   concurrency = EXCLUDED.concurrency, queues = EXCLUDED.queues,"
    "   heartbeat_at = now()"},

  [CL__STMT_DEREGISTER] = {"claimer_deregister", 1,
    "DELETE FROM claimer.workers WHERE worker_id = $1"},

  /* Dead letters.  $1 a queue (NULL: all), $2 a limit. */
  [CL__STMT_DEAD_LIST] = {"claimer_dead_list", 2,
    "SELECT item_id, queue, attempts, max_attempts, coalesce(last_error, ''),"
    "       claimer.rfc3339(finished_at), payload::text"
    "  FROM claimer.items"
    " WHERE state = 'dead' AND ($1::text IS NULL OR queue = $1)"
    " ORDER BY finished_at, item_id LIMIT $2::int"},

  /* Back to ready for a new round: attempts reset, the error it died with
   * appended to its history.  $1 item ids (NULL: every dead item of the
   * queue $2).  Wakes the queue's workers. */
  [CL__STMT_DEAD_RETRY] = {"claimer_dead_retry", 2,
    "WITH upd AS ("
    "  UPDATE claimer.items SET state = 'ready', run_at = now(),"
    "         finished_at = NULL, last_token = NULL, last_error = NULL,"
    "         attempts = 0,"
    "         history = history || jsonb_build_object("
    "             'event', 'dead_retried', 'at', claimer.rfc3339(now()),"
    "             'attempts', attempts, 'error', last_error)"
    "   WHERE state = 'dead'"
    "     AND CASE WHEN $1::text[] IS NULL THEN queue = $2"
    "              ELSE item_id = ANY ($1::text[]) END"
    "  RETURNING item_id, queue"
    "), wake AS ("
    "  SELECT count(pg_notify('claimer_enqueue', q)) AS n"
    "    FROM (SELECT DISTINCT queue AS q FROM upd) d"
    ")"
    "SELECT item_id FROM upd, wake ORDER BY item_id"},

  /* Out of the dead letters for good; the row stays, so its item_id is
   * still taken (G1). */
  [CL__STMT_DEAD_DISCARD] = {"claimer_dead_discard", 2,
    "UPDATE claimer.items SET state = 'discarded',"
    "       history = history || jsonb_build_object("
    "           'event', 'discarded', 'at', claimer.rfc3339(now()),"
    "           'attempts', attempts, 'error', last_error)"
    " WHERE state = 'dead'"
    "   AND CASE WHEN $1::text[] IS NULL THEN queue = $2"
    "            ELSE item_id = ANY ($1::text[]) END"
    " RETURNING item_id"},
};
