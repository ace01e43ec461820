/*
 * sql.c: the statements of the claim protocol.  Each is one statement (CTEs
 * where several tables change), so it runs as one implicit transaction:
 * the claim row, the item's state and the result change together or not at
 * all.  Parameters are always bound, never spliced into the text.
 *
 * The shapes, and why:
 *  - claim (schema/008; since 017 in complete_claim) picks candidates
 *    from the ready index with FOR UPDATE SKIP LOCKED, so concurrent
 *    claimers take different rows instead of queueing behind one another
 *    on the oldest item, then INSERTs their claim rows ON CONFLICT DO
 *    NOTHING: the unique claims.item_id stays the arbiter (G2).  A
 *    candidate re-checked after a concurrent commit must still be 'ready'
 *    (READ COMMITTED re-evaluates the WHERE on the locked row), so a done
 *    item is never claimed.
 *  - complete, fail and release delete the claim row only where the token
 *    matches (G3): zero rows deleted means the lease is gone.  complete then
 *    reads back whether a result with this token exists, which settles a
 *    retry after a lost connection (G9); fail does the same through
 *    items.last_token.
 *  - reap locks stale claims with SKIP LOCKED, so several reapers split the
 *    work and each stale lease is ended exactly once.
 */
#include "sql.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

/* The SQL is laid out by hand, one clause per line: clang-format keeps
 * out of the table. */
// clang-format off
const cl__stmt_t cl__stmts[CL__STMT_COUNT] = {
  [CL__STMT_ENQUEUE] = {"claimer_enqueue", CL__STMT_NPARAMS_ENQUEUE,
    "WITH input AS ("
    "  SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int[],"
    "                       $5::int[], $6::float8[])"
    "    WITH ORDINALITY AS t(item_id, queue, payload, priority,"
    "                         max_attempts, run_in, ord)"
    "), ins AS ("
    "  INSERT INTO claimer.items (item_id, queue, payload, priority,"
    "                             max_attempts, run_at)"
    "  SELECT input.item_id, input.queue, coalesce(input.payload, 'null'),"
    "         input.priority,"
    /* 0: the queue's policy, else the default row's, else 25 (joins, not
     * a function per row: this is the enqueue hot path). */
    "         coalesce(nullif(input.max_attempts, 0), qp.max_attempts,"
    "                  dp.max_attempts, 25),"
    "         now() + input.run_in * interval '1 second'"
    "    FROM input"
    "    LEFT JOIN claimer.queue_policy qp ON qp.queue = input.queue"
    "    LEFT JOIN claimer.queue_policy dp ON dp.queue = '*'"
    /* Rows go in (and so take their unique-index locks) in item_id order,
     * the same order in every batch: two batches that share ids wait for
     * one another, never in a cycle, so they cannot deadlock.  ord only
     * breaks ties between copies of one id, so the first copy is the one
     * inserted, as `first` below counts it. */
    "   ORDER BY input.item_id, input.ord"
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

  /* The claim of complete_claim (schema/017), with no completes: a
   * function whose plans are generic, planned once per session, not on
   * every call (008), and the one body of the claim and the batch
   * complete, so that no call nests a function in another. */
  [CL__STMT_CLAIM] = {"claimer_claim", CL__STMT_NPARAMS_CLAIM,
    "SELECT item_id, token, attempt, max_attempts, payload, lease_until"
    "  FROM claimer.complete_claim(ARRAY[]::text[], ARRAY[]::text[],"
    "                              ARRAY[]::jsonb[], $1, $2::int, $3,"
    "                              $4::float8)"},

  [CL__STMT_COMPLETE] = {"claimer_complete", CL__STMT_NPARAMS_COMPLETE,
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

  /* Many completes in one statement and one commit, fenced per item
   * (G3) and read back per item (G9): complete_claim (schema/017, the
   * body of 008's complete_many) with no claim.  $1 item ids, $2 their
   * tokens, $3 their results (NULL elements for null); one row per
   * input, in input order: 'ok', 'already' or 'lost'. */
  [CL__STMT_COMPLETE_MANY] = {"claimer_complete_many", CL__STMT_NPARAMS_COMPLETE_MANY,
    "SELECT outcome FROM claimer.complete_claim($1::text[], $2::text[],"
    "                                           $3::jsonb[], NULL, 0, NULL,"
    "                                           NULL) WITH ORDINALITY"
    "       AS c(outcome, item_id, token, attempt, max_attempts, payload,"
    "            lease_until, ord)"
    " ORDER BY ord"},

  /* complete_many's completes and claim's claim in one statement and
   * one commit (schema/011): $1-$3 as COMPLETE_MANY's, $4-$7 as CLAIM's.
   * One row per complete first (outcome set), in input order, then one
   * row per item claimed (outcome NULL), its columns CLAIM's. */
  [CL__STMT_COMPLETE_CLAIM] = {"claimer_complete_claim", CL__STMT_NPARAMS_COMPLETE_CLAIM,
    "SELECT outcome, item_id, token, attempt, max_attempts, payload,"
    "       lease_until"
    "  FROM claimer.complete_claim($1::text[], $2::text[], $3::jsonb[], $4,"
    "                              $5::int, $6, $7::float8)"},

  /* The settling reads of G9, sent as their own statements (so with a
   * fresh snapshot) after a resend found no claim. */
  [CL__STMT_COMPLETE_CHECK] = {"claimer_complete_check", CL__STMT_NPARAMS_COMPLETE_CHECK,
    "SELECT 1 FROM claimer.results WHERE item_id = $1 AND token = $2"},

  [CL__STMT_FAIL_CHECK] = {"claimer_fail_check", CL__STMT_NPARAMS_FAIL_CHECK,
    "SELECT state, attempts, claimer.rfc3339(run_at), true"
    "  FROM claimer.items WHERE item_id = $1 AND last_token = $2"},

  [CL__STMT_FAIL] = {"claimer_fail", CL__STMT_NPARAMS_FAIL,
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
    "                                    ELSE claimer.retry_delay(i.queue,"
    "                                                             del.attempt)"
    "                               END"
    "                  ELSE i.run_at END,"
    "         finished_at = CASE WHEN $4::bool AND del.attempt < i.max_attempts"
    "                       THEN NULL ELSE now() END"
    "    FROM del WHERE i.item_id = del.item_id"
    "  RETURNING i.item_id, i.queue, i.state, i.attempts, i.max_attempts,"
    "            i.run_at"
    "), dead AS ("
    "  SELECT claimer.raise_alert('item_dead', item_id, jsonb_build_object("
    "             'item_id', item_id, 'queue', queue, 'attempts', attempts,"
    "             'max_attempts', max_attempts,"
    "             'error', claimer.clip_error($3::text),"
    "             'error_truncated', length($3::text) > 1000)) AS alert"
    "    FROM upd WHERE state = 'dead'"
    ")"
    "SELECT state, attempts, claimer.rfc3339(run_at), false"
    "  FROM upd, (SELECT count(alert) FROM dead) d "
    "UNION ALL "
    "SELECT state, attempts, claimer.rfc3339(run_at), true FROM claimer.items"
    " WHERE item_id = $1 AND last_token = $2"
    "   AND NOT EXISTS (SELECT 1 FROM del)"},

  [CL__STMT_RELEASE] = {"claimer_release", CL__STMT_NPARAMS_RELEASE,
    "WITH del AS ("
    "  DELETE FROM claimer.claims WHERE item_id = $1 AND token = $2"
    "  RETURNING item_id"
    ")"
    "UPDATE claimer.items i SET state = 'ready',"
    "       run_at = greatest(i.run_at, now())"
    "  FROM del WHERE i.item_id = del.item_id"
    " RETURNING i.item_id"},

  [CL__STMT_HEARTBEAT] = {"claimer_heartbeat", CL__STMT_NPARAMS_HEARTBEAT,
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

  /* The worker daemon's heartbeat, fenced by its instance ($3): when the
   * name's row is no longer this instance's (taken over by another
   * process, or removed), it extends nothing and returns one row of NULLs.
   * Tokens in $4 are not extended: acks the database refused for good,
   * left to expire so the reaper spends their attempt. */
  [CL__STMT_WORKER_HEARTBEAT] = {"claimer_worker_heartbeat", CL__STMT_NPARAMS_WORKER_HEARTBEAT,
    "WITH w AS ("
    "  UPDATE claimer.workers SET heartbeat_at = now()"
    "   WHERE worker_id = $1 AND instance = $3"
    "  RETURNING worker_id"
    "), ext AS ("
    "  UPDATE claimer.claims"
    "     SET lease_until = greatest(lease_until,"
    "                                now() + $2::float8 * interval '1 second')"
    "   WHERE worker_id = $1 AND EXISTS (SELECT 1 FROM w)"
    "     AND NOT (token = ANY ($4::text[]))"
    "  RETURNING item_id, token, lease_until"
    ")"
    "SELECT item_id, token, claimer.rfc3339(lease_until) FROM ext "
    "UNION ALL "
    "SELECT NULL, NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM w)"
    " ORDER BY 1 NULLS FIRST"},

  [CL__STMT_REAP] = {"claimer_reap", CL__STMT_NPARAMS_REAP,
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
    "  RETURNING i.item_id, i.queue, i.state, i.attempts, i.max_attempts,"
    "            del.worker_id, del.token, del.lease_until"
    "), al AS ("
    "  SELECT item_id,"
    "         claimer.raise_alert('lease_expired', item_id, jsonb_build_object("
    "             'item_id', item_id, 'queue', queue, 'worker_id', worker_id,"
    "             'attempt', attempts, 'lease_until',"
    "             claimer.rfc3339(lease_until), 'outcome', state)) AS expired,"
    "         CASE WHEN state = 'dead' THEN"
    "           claimer.raise_alert('item_dead', item_id, jsonb_build_object("
    "             'item_id', item_id, 'queue', queue, 'attempts', attempts,"
    "             'max_attempts', max_attempts, 'error',"
    "             'lease expired on its last attempt')) END AS dead"
    "    FROM upd"
    ")"
    "SELECT upd.item_id, upd.queue, upd.state, upd.worker_id, upd.token,"
    "       al.expired, al.dead"
    "  FROM upd JOIN al USING (item_id)"},

  [CL__STMT_STATUS] = {"claimer_status", CL__STMT_NPARAMS_STATUS,
    "SELECT queue, ready, scheduled, leased, done, dead, oldest_ready_s, stale"
    "  FROM claimer.queue_status ORDER BY queue"},

  /* A worker daemon's row: who it is, for dashboards and for the reaper,
   * which reaps workers whose heartbeat stopped.  $8 the instance id,
   * random per process: a name whose row another instance heartbeated
   * within 3 of its intervals is refused (no row back) unless $9 says the
   * holder is known to be gone; then the holder is returned instead. */
  [CL__STMT_REGISTER] = {"claimer_register", CL__STMT_NPARAMS_REGISTER,
    "WITH up AS ("
    "  INSERT INTO claimer.workers AS w (worker_id, host, pid, version,"
    "                                    concurrency, queues, heartbeat_s,"
    "                                    instance)"
    "  VALUES ($1, $2, $3::int, $4, $5::int, $6::text[], $7::float8, $8)"
    "  ON CONFLICT (worker_id) DO UPDATE SET host = EXCLUDED.host,"
    "    pid = EXCLUDED.pid, version = EXCLUDED.version,"
    "    concurrency = EXCLUDED.concurrency, queues = EXCLUDED.queues,"
    "    heartbeat_s = EXCLUDED.heartbeat_s, heartbeat_at = now(),"
    "    started_at = CASE WHEN w.instance IS NOT DISTINCT FROM"
    "                           EXCLUDED.instance"
    "                      THEN w.started_at ELSE now() END,"
    "    instance = EXCLUDED.instance"
    "  WHERE w.instance IS NOT DISTINCT FROM EXCLUDED.instance OR $9::bool"
    "     OR w.heartbeat_at < now() - make_interval(secs => 3 * coalesce("
    "            w.heartbeat_s, EXCLUDED.heartbeat_s))"
    "  RETURNING worker_id"
    ")"
    "SELECT true, NULL, NULL, NULL FROM up "
    "UNION ALL "
    "SELECT false, w.host, w.pid::text,"
    "       extract(epoch FROM now() - w.heartbeat_at)::float8::text"
    "  FROM claimer.workers w"
    " WHERE w.worker_id = $1 AND NOT EXISTS (SELECT 1 FROM up)"},

  [CL__STMT_DEREGISTER] = {"claimer_deregister", CL__STMT_NPARAMS_DEREGISTER,
    "DELETE FROM claimer.workers WHERE worker_id = $1"
    "   AND instance IS NOT DISTINCT FROM $2"},

  /* Dead letters.  $1 a queue (NULL: all), $2 a limit. */
  [CL__STMT_DEAD_LIST] = {"claimer_dead_list", CL__STMT_NPARAMS_DEAD_LIST,
    "SELECT item_id, queue, attempts, max_attempts, coalesce(last_error, ''),"
    "       claimer.rfc3339(finished_at), payload::text"
    "  FROM claimer.items"
    " WHERE state = 'dead' AND ($1::text IS NULL OR queue = $1)"
    " ORDER BY finished_at, item_id LIMIT $2::int"},

  /* Back to ready for a new round: attempts reset, the error it died with
   * appended to its history.  $1 item ids (NULL: every dead item of the
   * queue $2).  Wakes the queue's workers. */
  [CL__STMT_DEAD_RETRY] = {"claimer_dead_retry", CL__STMT_NPARAMS_DEAD_RETRY,
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
  [CL__STMT_DEAD_DISCARD] = {"claimer_dead_discard", CL__STMT_NPARAMS_DEAD_DISCARD,
    "UPDATE claimer.items SET state = 'discarded',"
    "       history = history || jsonb_build_object("
    "           'event', 'discarded', 'at', claimer.rfc3339(now()),"
    "           'attempts', attempts, 'error', last_error)"
    " WHERE state = 'dead'"
    "   AND CASE WHEN $1::text[] IS NULL THEN queue = $2"
    "            ELSE item_id = ANY ($1::text[]) END"
    " RETURNING item_id"},

  /* The reaper's scans.  Workers whose heartbeat is older than $1 times
   * the interval they registered are lost: an alert, and their leases made
   * due now, so the reap that follows hands the items back at once instead
   * of at expiry.  Workers that never said their interval (a script
   * calling `claimer heartbeat`) are left to lease expiry.  No lock here
   * is waited for (SKIP LOCKED on workers, then on claims): a heartbeat
   * locks the claims before the worker's row, so waiting in the other
   * order could deadlock with it.  $2 a limit. */
  [CL__STMT_REAP_WORKERS] = {"claimer_reap_workers", CL__STMT_NPARAMS_REAP_WORKERS,
    "WITH lost AS ("
    "  SELECT worker_id, heartbeat_at, heartbeat_s FROM claimer.workers w"
    "   WHERE heartbeat_s IS NOT NULL"
    "     AND heartbeat_at < now() - make_interval(secs =>"
    "                                              $1::float8 * heartbeat_s)"
    /* Not again once alerted and holding no live lease: a batch loop
     * would otherwise see the same lost workers forever. */
    "     AND (NOT EXISTS (SELECT 1 FROM claimer.alerts a"
    "                       WHERE a.kind = 'worker_lost'"
    "                         AND a.subject = w.worker_id"
    "                         AND a.resolved_at IS NULL)"
    "          OR EXISTS (SELECT 1 FROM claimer.claims c"
    "                      WHERE c.worker_id = w.worker_id"
    "                        AND c.lease_until > now()))"
    "   ORDER BY heartbeat_at, worker_id LIMIT $2::int"
    "   FOR UPDATE SKIP LOCKED"
    "), held AS ("
    "  SELECT c.item_id FROM claimer.claims c JOIN lost USING (worker_id)"
    "   WHERE c.lease_until > now()"
    "   FOR UPDATE OF c SKIP LOCKED"
    "), rel AS ("
    "  UPDATE claimer.claims c SET lease_until = now()"
    "    FROM held WHERE c.item_id = held.item_id"
    "  RETURNING c.worker_id"
    "), al AS ("
    "  SELECT worker_id, claimer.raise_alert('worker_lost', worker_id,"
    "           jsonb_build_object('worker_id', worker_id, 'last_heartbeat',"
    "             claimer.rfc3339(heartbeat_at), 'heartbeat_s', heartbeat_s,"
    "             'leases_released', (SELECT count(*) FROM rel"
    "                                  WHERE rel.worker_id = lost.worker_id)))"
    "           AS alert"
    "    FROM lost ORDER BY worker_id"
    ")"
    "SELECT al.worker_id, al.alert,"
    "       (SELECT count(*) FROM rel WHERE rel.worker_id = al.worker_id)"
    "  FROM al"},

  /* Items older than their SLA with no result: the item's own sla, else
   * its queue's ($3 queues, $4 seconds), else $1 seconds.  $2 a limit. */
  [CL__STMT_ALERT_OVERDUE] = {"claimer_alert_overdue", CL__STMT_NPARAMS_ALERT_OVERDUE,
    "WITH q AS ("
    "  SELECT * FROM unnest($3::text[], $4::float8[]) AS t(queue, sla_s)"
    "), cand AS ("
    "  SELECT i.item_id, i.queue, i.state, i.enqueued_at,"
    "         coalesce(i.sla, make_interval(secs => coalesce(q.sla_s,"
    "                                                     $1::float8))) AS sla"
    "    FROM claimer.items i LEFT JOIN q ON q.queue = i.queue"
    "   WHERE i.state IN ('ready', 'leased')"
    "     AND i.enqueued_at < now() - coalesce(i.sla, make_interval(secs =>"
    "             coalesce(q.sla_s, $1::float8)))"
    /* An item not tried yet is late from when it was due (run_in, or a
     * dead letter put back), not from when it was enqueued. */
    "     AND (i.attempts > 0 OR i.run_at < now() - coalesce(i.sla,"
    "             make_interval(secs => coalesce(q.sla_s, $1::float8))))"
    "     AND NOT EXISTS (SELECT 1 FROM claimer.alerts a"
    "                      WHERE a.kind = 'item_overdue'"
    "                        AND a.subject = i.item_id"
    "                        AND a.resolved_at IS NULL)"
    "   ORDER BY i.enqueued_at, i.item_id LIMIT $2::int"
    ")"
    /* In item_id order, so that two reapers raising the same alerts wait
     * for each other in one order and never deadlock. */
    "SELECT item_id, claimer.raise_alert('item_overdue', item_id,"
    "         jsonb_build_object('item_id', item_id, 'queue', queue,"
    "           'state', state, 'enqueued_at', claimer.rfc3339(enqueued_at),"
    "           'sla_s', extract(epoch FROM sla)))"
    "  FROM (SELECT * FROM cand ORDER BY item_id) c"},

  /* Deliveries a sender left in 'sending' past its lease: it may have
   * crashed between sending and recording "sent".  $1 a limit. */
  [CL__STMT_ALERT_IN_DOUBT] = {"claimer_alert_in_doubt", CL__STMT_NPARAMS_ALERT_IN_DOUBT,
    "WITH cand AS ("
    "  SELECT d.subscriber, d.item_id, d.attempts, d.lease_until,"
    "         d.idempotency_key FROM claimer.deliveries d"
    "   WHERE ((d.state = 'sending' AND d.lease_until < now())"
    "          OR d.state = 'held')"
    "     AND NOT EXISTS (SELECT 1 FROM claimer.alerts a"
    "                      WHERE a.kind = 'delivery_in_doubt'"
    "                        AND a.subject = d.subscriber || '/' || d.item_id"
    "                        AND a.resolved_at IS NULL)"
    "   ORDER BY d.lease_until, d.subscriber, d.item_id LIMIT $1::int"
    ")"
    "SELECT item_id, claimer.raise_alert('delivery_in_doubt',"
    "         subscriber || '/' || item_id, jsonb_build_object("
    "           'subscriber', subscriber, 'item_id', item_id,"
    "           'attempts', attempts, 'idempotency_key', idempotency_key,"
    "           'lease_until', claimer.rfc3339(lease_until)))"
    "  FROM (SELECT * FROM cand ORDER BY subscriber, item_id) c"},

  /* Open alerts whose condition has cleared.  $1 a limit. */
  [CL__STMT_ALERT_RESOLVE] = {"claimer_alert_resolve", CL__STMT_NPARAMS_ALERT_RESOLVE,
    "WITH clear AS ("
    "  SELECT a.alert_id FROM claimer.alerts a"
    "    LEFT JOIN claimer.items i"
    "      ON a.kind IN ('item_overdue', 'lease_expired', 'item_dead')"
    "     AND i.item_id = a.subject"
    "    LEFT JOIN claimer.workers w"
    "      ON a.kind = 'worker_lost' AND w.worker_id = a.subject"
    "    LEFT JOIN claimer.deliveries d"
    "      ON a.kind IN ('delivery_in_doubt', 'delivery_dead')"
    "     AND d.subscriber = a.detail->>'subscriber'"
    "     AND d.item_id = a.detail->>'item_id'"
    "   WHERE a.resolved_at IS NULL AND CASE a.kind"
    "     WHEN 'item_overdue' THEN i.item_id IS NULL"
    "                           OR i.state NOT IN ('ready', 'leased')"
    "     WHEN 'lease_expired' THEN i.item_id IS NULL"
    "                           OR i.state IN ('done', 'dead', 'discarded')"
    "     WHEN 'item_dead' THEN i.item_id IS NULL OR i.state <> 'dead'"
    "     WHEN 'worker_lost' THEN w.worker_id IS NULL"
    "                          OR w.heartbeat_at > a.raised_at"
    "     WHEN 'delivery_in_doubt' THEN d.item_id IS NULL"
    "                          OR d.state NOT IN ('sending', 'held')"
    "                          OR (d.state = 'sending'"
    "                              AND d.lease_until >= now())"
    "     WHEN 'delivery_dead' THEN d.item_id IS NULL"
    "                          OR d.state <> 'dead'"
    "     END"
    "   ORDER BY a.alert_id LIMIT $1::int"
    "   FOR UPDATE OF a SKIP LOCKED"
    ")"
    "UPDATE claimer.alerts a SET resolved_at = now() FROM clear"
    " WHERE a.alert_id = clear.alert_id"
    " RETURNING a.alert_id, a.kind, a.subject"},

  /* Announcing new alerts (the outbox of 003): up to $1 pending alerts
   * that are due, leased to this reaper for $2 seconds.  hook_attempts,
   * counted up here, fences ANNOUNCE_DONE: a reaper whose lease ran out
   * and was taken over cannot settle the alert any more. */
  [CL__STMT_ANNOUNCE_CLAIM] = {"claimer_announce_claim", CL__STMT_NPARAMS_ANNOUNCE_CLAIM,
    "WITH due AS ("
    "  SELECT alert_id FROM claimer.alerts"
    "   WHERE hook_state = 'pending' AND hook_next_at <= now()"
    "   ORDER BY hook_next_at, alert_id LIMIT $1::int"
    "   FOR UPDATE SKIP LOCKED"
    ")"
    "UPDATE claimer.alerts a SET hook_attempts = a.hook_attempts + 1,"
    "       hook_next_at = now() + make_interval(secs => $2::float8)"
    "  FROM due WHERE a.alert_id = due.alert_id"
    " RETURNING a.alert_id, a.hook_attempts, a.kind, a.subject,"
    "           claimer.alert_json(a)::text"},

  /* Settles announced alerts $1 (ids) at their attempts $2: $3 'sent'
   * (the hooks took it), 'none' (no hook configured), or 'error' ($4 the
   * error): then again after a backoff capped at 5 minutes, or 'failed'
   * once $5 attempts are spent.  Returns the rows settled. */
  [CL__STMT_ANNOUNCE_DONE] = {"claimer_announce_done", CL__STMT_NPARAMS_ANNOUNCE_DONE,
    "UPDATE claimer.alerts a"
    "   SET hook_state = CASE WHEN $3 <> 'error' THEN $3"
    "                         WHEN a.hook_attempts >= $5::int THEN 'failed'"
    "                         ELSE 'pending' END,"
    "       hook_error = CASE WHEN $3 = 'error' THEN $4 END,"
    "       hook_next_at = CASE WHEN $3 = 'error' THEN now() + least("
    "           claimer.backoff(a.hook_attempts), interval '5 minutes')"
    "         ELSE a.hook_next_at END"
    "  FROM unnest($1::bigint[], $2::int[]) AS s(alert_id, attempt)"
    " WHERE a.alert_id = s.alert_id AND a.hook_attempts = s.attempt"
    "   AND a.hook_state = 'pending'"
    " RETURNING a.alert_id, a.hook_state"},

  /* Retention, each a bounded batch: done items finished more than $1
   * seconds ago, with their results and deliveries (ON DELETE CASCADE),
   * unless a subscriber is still owed the result.  $2 a limit.  The batch
   * goes on after ($3 finished_at, $4 item_id), the key of the last row
   * the previous batch looked at, so that results still owed (which stay,
   * at the old end of the index) are looked at once per run, not once per
   * batch.  Returns rows deleted, rows looked at and the new key. */
  [CL__STMT_RETAIN_DONE] = {"claimer_retain_done", CL__STMT_NPARAMS_RETAIN_DONE,
    /* In a function (007): it takes the replay lock first.  RFC 3339 in
     * UTC reads back the same whatever the session's DateStyle and
     * TimeZone. */
    "SELECT deleted, looked, last_at, last_id"
    "  FROM claimer.retain_done($1::float8, $2::int, $3::timestamptz, $4)"},

  /* Dead and discarded items that died more than $1 seconds ago (a
   * discarded item's row keeps its item_id taken, G1, as long as dead
   * letters are kept).  $2 a limit. */
  [CL__STMT_RETAIN_DEAD] = {"claimer_retain_dead", CL__STMT_NPARAMS_RETAIN_DEAD,
    "WITH old AS ("
    "  SELECT item_id FROM claimer.items"
    "   WHERE state IN ('dead', 'discarded')"
    "     AND finished_at < now() - make_interval(secs => $1::float8)"
    "   ORDER BY finished_at LIMIT $2::int"
    "   FOR UPDATE SKIP LOCKED"
    ")"
    "DELETE FROM claimer.items i USING old WHERE i.item_id = old.item_id"
    " RETURNING i.item_id"},

  /* Alerts resolved more than $1 seconds ago.  $2 a limit. */
  [CL__STMT_RETAIN_ALERTS] = {"claimer_retain_alerts", CL__STMT_NPARAMS_RETAIN_ALERTS,
    "WITH old AS ("
    "  SELECT alert_id FROM claimer.alerts"
    "   WHERE resolved_at < now() - make_interval(secs => $1::float8)"
    "   ORDER BY resolved_at LIMIT $2::int"
    "   FOR UPDATE SKIP LOCKED"
    ")"
    "DELETE FROM claimer.alerts a USING old WHERE a.alert_id = old.alert_id"
    " RETURNING a.alert_id"},

  /* Workers silent for more than $1 seconds that hold no lease any more:
   * gone for good (their worker_lost alert then resolves).  $2 a limit. */
  [CL__STMT_RETAIN_WORKERS] = {"claimer_retain_workers", CL__STMT_NPARAMS_RETAIN_WORKERS,
    "WITH old AS ("
    "  SELECT w.worker_id FROM claimer.workers w"
    "   WHERE w.heartbeat_at < now() - make_interval(secs => $1::float8)"
    "     AND NOT EXISTS (SELECT 1 FROM claimer.claims c"
    "                      WHERE c.worker_id = w.worker_id)"
    "   ORDER BY w.heartbeat_at LIMIT $2::int"
    "   FOR UPDATE SKIP LOCKED"
    ")"
    "DELETE FROM claimer.workers w USING old WHERE w.worker_id = old.worker_id"
    " RETURNING w.worker_id"},

  /* The retry policy from a reaper's config (claimer.sync_queue_policy):
   * rows for the queues $1 (and '*' for the defaults) with $2 max
   * attempts, $3 backoff and $4 cap (NULL elements: not set).  Returns
   * rows written and rows removed. */
  [CL__STMT_POLICY_SYNC] = {"claimer_policy_sync", CL__STMT_NPARAMS_POLICY_SYNC,
    "SELECT written, removed FROM claimer.sync_queue_policy($1::text[],"
    "         $2::int[], $3::float8[], $4::float8[])"},

  /* Senders (005).  The functions carry the logic; see the migration. */
  [CL__STMT_SUB_ADD] = {"claimer_sub_add", CL__STMT_NPARAMS_SUB_ADD,
    "INSERT INTO claimer.subscribers (subscriber, queues, from_pos,"
    "                                 in_doubt, max_attempts, break_after,"
    "                                 concurrency, rate_limit, ordering,"
    "                                 backoff_s)"
    "VALUES ($1, $2::text[], CASE $3"
    "          WHEN 'beginning' THEN 0"
    "          WHEN 'now' THEN coalesce((SELECT max(pos) FROM"
    "                                    claimer.results), 0) + 1"
    "          ELSE $3::bigint END,"
    "        $4, $5::int, $6::int, $7::int, $8::float8, $9,"
    "        $10::float8[])"
    "ON CONFLICT (subscriber) DO NOTHING"
    " RETURNING from_pos"},
  [CL__STMT_SUB_LIST] = {"claimer_sub_list", CL__STMT_NPARAMS_SUB_LIST,
    "SELECT subscriber, coalesce(array_to_string(queues, ','), ''),"
    "       paused, coalesce(paused_why, ''), in_doubt, from_pos,"
    "       cursor_pos, pending, in_flight, retry, sent, held, dead,"
    "       lag_positions, concurrency, rate_limit, ordering,"
    "       coalesce(oldest_age_s, -1), max_attempts, break_after,"
    "       coalesce(array_to_string(backoff_s, ','), '')"
    "  FROM claimer.subscriber_status ORDER BY subscriber"},
  /* $2: a mask of the fields to write (CL_SUB_* of claimer.h), the rest
   * the values, as SUB_ADD takes them. */
  [CL__STMT_SUB_SET] = {"claimer_sub_set", CL__STMT_NPARAMS_SUB_SET,
    "UPDATE claimer.subscribers SET"
    "  queues = CASE WHEN $2::int & 1 <> 0 THEN $3::text[] ELSE queues END,"
    "  in_doubt = CASE WHEN $2::int & 2 <> 0 THEN $4 ELSE in_doubt END,"
    "  max_attempts = CASE WHEN $2::int & 4 <> 0 THEN $5::int"
    "                 ELSE max_attempts END,"
    "  break_after = CASE WHEN $2::int & 8 <> 0 THEN $6::int"
    "                ELSE break_after END,"
    "  concurrency = CASE WHEN $2::int & 16 <> 0 THEN $7::int"
    "                ELSE concurrency END,"
    "  rate_limit = CASE WHEN $2::int & 32 <> 0 THEN $8::float8"
    "               ELSE rate_limit END,"
    "  ordering = CASE WHEN $2::int & 64 <> 0 THEN $9 ELSE ordering END,"
    "  backoff_s = CASE WHEN $2::int & 128 <> 0 THEN $10::float8[]"
    "              ELSE backoff_s END,"
    "  updated_at = now()"
    " WHERE subscriber = $1 RETURNING subscriber"},
  [CL__STMT_SUB_PAUSE] = {"claimer_sub_pause", CL__STMT_NPARAMS_SUB_PAUSE,
    "UPDATE claimer.subscribers SET paused = $2::bool,"
    "       paused_why = CASE WHEN $2::bool THEN nullif($3, '') END,"
    "       failures_in_row = CASE WHEN $2::bool THEN failures_in_row"
    "                              ELSE 0 END,"
    "       updated_at = now()"
    " WHERE subscriber = $1 RETURNING subscriber"},
  /* $2: remove even with unsettled deliveries.  Returns the unsettled
   * count and whether the row went. */
  [CL__STMT_SUB_REMOVE] = {"claimer_sub_remove", CL__STMT_NPARAMS_SUB_REMOVE,
    "WITH s AS ("
    "  SELECT subscriber FROM claimer.subscribers WHERE subscriber = $1"
    "     FOR UPDATE"
    "), open AS ("
    "  SELECT count(*) AS n FROM claimer.deliveries d"
    "   WHERE d.subscriber = $1 AND d.state <> 'sent'"
    "), del_d AS ("
    "  DELETE FROM claimer.deliveries d USING s, open"
    "   WHERE d.subscriber = s.subscriber AND (open.n = 0 OR $2::bool)"
    "  RETURNING 1"
    "), del AS ("
    "  DELETE FROM claimer.subscribers x USING s, open"
    "   WHERE x.subscriber = s.subscriber AND (open.n = 0 OR $2::bool)"
    "  RETURNING 1"
    ")"
    "SELECT (SELECT count(*) FROM s)::int, (SELECT n FROM open)::int,"
    "       (SELECT count(*) FROM del)::int"},
  [CL__STMT_DELIVERY_CLAIM] = {"claimer_delivery_claim", CL__STMT_NPARAMS_DELIVERY_CLAIM,
    "SELECT item_id, queue, token, attempt, idempotency_key, pos, result,"
    "       payload, lease_until, wait_s"
    "  FROM claimer.delivery_claim($1, $2::int, $3::float8, $4)"},
  /* Deliveries never handed to a sink, given back (007). */
  [CL__STMT_DELIVERY_RELEASE] = {"claimer_delivery_release", CL__STMT_NPARAMS_DELIVERY_RELEASE,
    "SELECT token FROM claimer.delivery_release($1, $2::text[])"},
  [CL__STMT_DELIVERY_SENT] = {"claimer_delivery_sent", CL__STMT_NPARAMS_DELIVERY_SENT,
    "SELECT state, did FROM claimer.delivery_sent($1, $2, $3)"},
  /* $5: seconds until due again; < 0 the schedule; NULL dead now. */
  [CL__STMT_DELIVERY_FAIL] = {"claimer_delivery_fail", CL__STMT_NPARAMS_DELIVERY_FAIL,
    "SELECT state, coalesce(next_at, ''), attempts, did"
    "  FROM claimer.delivery_fail($1, $2, $3, $4,"
    "                             $5::float8)"},
  [CL__STMT_DELIVERY_HEARTBEAT] = {"claimer_delivery_heartbeat", CL__STMT_NPARAMS_DELIVERY_HEARTBEAT,
    "SELECT token FROM claimer.delivery_heartbeat($1, $2::float8,"
    "                                            $3::text[])"},
  /* The sink told us to stop for good (a webhook's 410 Gone): the
   * subscriber is paused and subscriber_failing raised, once. */
  [CL__STMT_SUB_DISABLE] = {"claimer_sub_disable", CL__STMT_NPARAMS_SUB_DISABLE,
    "WITH u AS ("
    "  UPDATE claimer.subscribers SET paused = true, paused_why = $2,"
    "         updated_at = now()"
    "   WHERE subscriber = $1 AND NOT paused RETURNING subscriber"
    ")"
    "SELECT claimer.raise_alert('subscriber_failing', u.subscriber,"
    "         jsonb_build_object('subscriber', u.subscriber, 'reason', $2))"
    "  FROM u"},
  /* A subscriber's deliveries for a person: $2 a state or '' for all but
   * 'sent' (those are the ones that need someone), oldest first. */
  [CL__STMT_DELIVERY_LIST] = {"claimer_delivery_list", CL__STMT_NPARAMS_DELIVERY_LIST,
    "SELECT d.item_id, d.state, d.attempts, d.idempotency_key,"
    "       coalesce(claimer.rfc3339(d.next_at), ''),"
    "       claimer.rfc3339(d.updated_at), coalesce(d.last_error, ''),"
    "       r.pos"
    "  FROM claimer.deliveries d JOIN claimer.results r USING (item_id)"
    " WHERE d.subscriber = $1"
    "   AND CASE WHEN $2 = '' THEN d.state <> 'sent' ELSE d.state = $2 END"
    " ORDER BY r.pos LIMIT $3::int"},
  /* Dead (and failed) deliveries due again now with their attempts reset:
   * $2 the item ids, or NULL for every dead one. */
  [CL__STMT_DELIVERY_RETRY] = {"claimer_delivery_retry", CL__STMT_NPARAMS_DELIVERY_RETRY,
    "UPDATE claimer.deliveries SET state = 'retry', next_at = now(),"
    "       attempts = 0, updated_at = now()"
    " WHERE subscriber = $1 AND state IN ('dead', 'retry')"
    "   AND ($2::text[] IS NULL AND state = 'dead'"
    "        OR item_id = ANY ($2::text[]))"
    " RETURNING item_id"},
  /* A person settles a held delivery: $3 'sent' (the sink has it) or
   * 'retry' (send again, same key, now). */
  [CL__STMT_DELIVERY_RESOLVE] = {"claimer_delivery_resolve", CL__STMT_NPARAMS_DELIVERY_RESOLVE,
    "UPDATE claimer.deliveries SET state = $3,"
    "       sent_at = CASE WHEN $3 = 'sent' THEN now() END,"
    "       next_at = CASE WHEN $3 = 'retry' THEN now() END,"
    "       lease_until = NULL, updated_at = now()"
    " WHERE subscriber = $1 AND item_id = $2 AND state IN ('held', 'sending')"
    "   AND (state = 'held' OR lease_until < now())"
    " RETURNING item_id"},
  /* Replay: sent deliveries from position $2 on, or sent since $3, are
   * sent again with their keys (attempts reset). */
  [CL__STMT_DELIVERY_REPLAY] = {"claimer_delivery_replay", CL__STMT_NPARAMS_DELIVERY_REPLAY,
    "SELECT item_id FROM claimer.delivery_replay($1, $2::bigint,"
    "                                            $3::timestamptz)"},
};
// clang-format on

static char stmt_names[CL__STMT_COUNT][64];
static pthread_once_t stmt_names_once = PTHREAD_ONCE_INIT;

/* Each name and the FNV-1a hash (32 bits) of its text. */
static void make_stmt_names(void) {
  for (int i = 0; i < CL__STMT_COUNT; i++) {
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)cl__stmts[i].sql;
         *p != '\0'; p++)
      h = (h ^ *p) * 16777619u;
    snprintf(stmt_names[i], sizeof stmt_names[i], "%s_%08x", cl__stmts[i].name,
             (unsigned)h);
  }
}

const char *cl__stmt_name(cl__stmt_id_t id) {
  pthread_once(&stmt_names_once, make_stmt_names);
  return stmt_names[id];
}
