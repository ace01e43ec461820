-- 013_tick_xid: a sender's tick is bounded by an xid taken after it reads
-- the last position.
--
-- The tick (005, 007) let a subscriber's cursor pass every position up to
-- tick_pos once the oldest running transaction had reached tick_xid, and
-- took tick_xid from a snapshot's xmax, on the reading that xmax is the
-- first xid not yet assigned.  It is not: a snapshot's xmax is the latest
-- completed xid + 1, and a transaction that holds a newer xid and is still
-- running is neither below xmax nor in the snapshot's list.  A complete
-- whose transaction was the newest one with an xid when a sender ticked
-- (its result's position taken, its commit not yet made) left
-- tick_xid <= its xid; the sender's next claim saw an oldest running xid
-- of exactly that xid, took the tick for served and moved the cursor past
-- the result, which was never delivered to that subscriber once it
-- committed (G5; seen as a missing delivery in the fault harness, pinned
-- by tests/isolation/specs/complete_dclaim.spec.in).
--
-- Now the claim reads the last position first, before its transaction has
-- an xid, and the xid its own transaction then takes (the subscriber's row
-- lock assigns it) is the tick's bound: xids are handed out in order, and
-- a transaction holds its xid before it takes a position (its claim's
-- DELETE comes before its result's INSERT), so every transaction holding
-- a position up to tick_pos has an xid below tick_xid.  Once a later
-- claim's snapshot has an oldest running xid at or above tick_xid, all of
-- them have ended.  (That snapshot's xmin is below any such transaction
-- still running: the tick's own transaction has completed, so xmax is
-- above them all.)  A claim made inside a transaction that already had an
-- xid takes no new tick; the one it has still serves.
--
-- Ticks taken the old way are dropped: each subscriber's next claim takes
-- a new one, and the results a cursor passed that way are given back.
UPDATE claimer.subscribers SET tick_pos = NULL, tick_xid = NULL;

-- Results a cursor already passed that way: a result at or below a
-- subscriber's cursor, of its queues, with no delivery to it was skipped
-- (deliveries go only with their subscriber or their item).  The cursor
-- moves back to just below the first such result, and the next claims
-- deliver them, in position order.  (A subscriber whose queues were
-- widened after its cursor passed a queue's results also gets those.)
-- One pass over the results below each cursor.
UPDATE claimer.subscribers s
   SET cursor_pos = m.low - 1
  FROM (SELECT sb.subscriber, min(r.pos) AS low
          FROM claimer.subscribers sb
          JOIN claimer.results r
            ON r.pos >= sb.from_pos AND r.pos <= sb.cursor_pos
           AND (sb.queues IS NULL OR r.queue = ANY (sb.queues))
         WHERE NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                            WHERE d.subscriber = sb.subscriber
                              AND d.item_id = r.item_id)
         GROUP BY sb.subscriber) m
 WHERE s.subscriber = m.subscriber;

-- As in 007, but for the tick (read the last position first; the bound is
-- this transaction's own xid).
CREATE OR REPLACE FUNCTION claimer.delivery_claim(p_sub text, p_n integer,
                                       p_lease_s float8, p_sender text)
RETURNS TABLE (item_id text, queue text, token text, attempt integer,
               idempotency_key text, pos bigint, result text, payload text,
               lease_until text, wait_s float8)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  -- First, before the subscriber's row lock gives this transaction its
  -- xid: whether it had one already, and the identity's last value.
  had_xid boolean := pg_current_xact_id_if_assigned() IS NOT NULL;
  tp bigint := coalesce(pg_sequence_last_value(
                 pg_get_serial_sequence('claimer.results', 'pos')::regclass),
               0);
  s claimer.subscribers;
  cur bigint;
  safe bigint;
  low bigint;
  snap pg_snapshot := pg_current_snapshot();
  lease timestamptz := now() + p_lease_s * interval '1 second';
  left_n integer := p_n;
  want integer;
  allow integer;
  got integer;
  granted integer := 0;
  tx xid8;
  t timestamptz;
  gap float8 := 0;
  tat timestamptz;
  busy integer;
  head_item text;
  head_ready boolean := false;
  fifo boolean;
BEGIN
  SELECT * INTO s FROM claimer.subscribers sb WHERE sb.subscriber = p_sub
     FOR UPDATE;
  IF NOT FOUND OR s.paused OR p_n < 1 THEN
    RETURN;
  END IF;
  -- The rate's clock is read after the lock: a claim that waited for
  -- another sender's must not reckon its slots from before that wait.
  t := clock_timestamp();
  fifo := s.ordering = 'fifo';

  -- In doubt: leased, the lease gone, no outcome recorded.  Rows another
  -- transaction holds are skipped, not waited for: this one holds the
  -- subscriber's row, and a late sent or fail locks its delivery first
  -- and the subscriber's row after it (the breaker's trigger), so waiting
  -- here deadlocked (tests/isolation/specs/dsent_dclaim.spec.in).  A
  -- skipped one is held by the next claim.
  IF s.in_doubt = 'hold' THEN
    UPDATE claimer.deliveries d
       SET state = 'held', updated_at = now()
     WHERE d.subscriber = p_sub
       AND d.item_id IN (SELECT x.item_id FROM claimer.deliveries x
                          WHERE x.subscriber = p_sub AND x.state = 'sending'
                            AND x.lease_until < now()
                            FOR UPDATE SKIP LOCKED);
  END IF;

  -- Concurrency: the live leases of every sender count.
  IF s.concurrency > 0 OR fifo THEN
    SELECT count(*) INTO busy FROM claimer.deliveries d
     WHERE d.subscriber = p_sub AND d.state = 'sending'
       AND d.lease_until >= now();
    left_n := least(left_n, CASE WHEN fifo THEN 1 ELSE s.concurrency END
                              - busy);
  END IF;

  -- FIFO: the first unsettled delivery by position goes first, alone.
  IF fifo AND left_n > 0 THEN
    SELECT d.item_id,
           (d.state = 'retry' AND d.next_at <= now())
             OR (d.state = 'sending' AND d.lease_until < now())
      INTO head_item, head_ready
      FROM claimer.deliveries d
      JOIN claimer.results r ON r.item_id = d.item_id
     WHERE d.subscriber = p_sub AND d.state IN ('sending', 'retry', 'held')
     ORDER BY r.pos
     LIMIT 1;
    IF head_item IS NOT NULL AND NOT head_ready THEN
      left_n := 0;
    END IF;
  END IF;

  -- The rate: slots that begin within the next second.
  want := left_n;
  IF s.rate_limit > 0 AND left_n > 0 THEN
    gap := 1.0 / s.rate_limit;
    tat := greatest(coalesce(s.rate_tat, t), t);
    left_n := least(left_n, greatest(0, ceil(
                extract(epoch FROM (t + interval '1 second' - tat)) / gap)
                )::integer);
  END IF;
  allow := left_n;

  -- Again: failed attempts come due, and (retry policy) the ones in doubt.
  IF left_n > 0 THEN
    RETURN QUERY
    WITH again AS (
      SELECT d.item_id FROM claimer.deliveries d
       WHERE d.subscriber = p_sub
         AND ((d.state = 'retry' AND d.next_at <= now())
              OR (d.state = 'sending' AND d.lease_until < now()))
         AND (NOT fifo OR d.item_id = head_item)
       ORDER BY d.item_id
       LIMIT left_n
       FOR UPDATE SKIP LOCKED
    ), upd AS (
      UPDATE claimer.deliveries d
         SET state = 'sending', token = claimer.new_token(),
             attempts = d.attempts + 1, lease_until = lease,
             sender = p_sender, next_at = NULL, updated_at = now()
        FROM again
       WHERE d.subscriber = p_sub AND d.item_id = again.item_id
      RETURNING d.item_id, d.token, d.attempts, d.idempotency_key
    ), got_rows AS (
      SELECT upd.*, r.queue, r.pos, r.result, i.payload,
             row_number() OVER (ORDER BY r.pos) - 1 AS k
        FROM upd
        JOIN claimer.results r ON r.item_id = upd.item_id
        JOIN claimer.items i ON i.item_id = upd.item_id
    )
    SELECT got_rows.item_id, got_rows.queue, got_rows.token, got_rows.attempts,
           got_rows.idempotency_key, got_rows.pos, got_rows.result::text,
           got_rows.payload::text, claimer.rfc3339(lease),
           CASE WHEN gap > 0
                THEN greatest(0, extract(epoch FROM (tat - t)) + got_rows.k * gap)
                ELSE 0 END::float8
      FROM got_rows ORDER BY got_rows.pos;
    GET DIAGNOSTICS got = ROW_COUNT;
    granted := got;
    left_n := left_n - got;
  END IF;
  IF fifo AND head_item IS NOT NULL THEN
    left_n := 0; -- the head (sent again or not yet due) goes alone
  END IF;

  -- The tick: positions at or below tick_pos are final once every
  -- transaction that could hold one has ended.
  cur := coalesce(s.cursor_pos, s.from_pos - 1);
  safe := cur;
  IF s.tick_xid IS NOT NULL AND pg_snapshot_xmin(snap) >= s.tick_xid THEN
    safe := greatest(cur, s.tick_pos);
  END IF;

  IF left_n > 0 THEN
    RETURN QUERY
    WITH cand AS (
      SELECT r.item_id, r.queue, r.pos, r.result FROM claimer.results r
       WHERE r.pos > cur AND r.pos >= s.from_pos
         AND (NOT fifo OR r.pos <= safe)
         AND (s.queues IS NULL OR r.queue = ANY (s.queues))
         AND NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                          WHERE d.subscriber = p_sub
                            AND d.item_id = r.item_id)
       ORDER BY r.pos
       LIMIT left_n
    ), ins AS (
      INSERT INTO claimer.deliveries AS d (subscriber, item_id, state,
                                          attempts, idempotency_key, token,
                                          lease_until, sender)
      SELECT p_sub, cand.item_id, 'sending', 1,
             claimer.idempotency_key(p_sub, cand.item_id),
             claimer.new_token(), lease, p_sender
        FROM cand ORDER BY cand.pos
      ON CONFLICT ON CONSTRAINT deliveries_pkey DO NOTHING
      RETURNING d.item_id, d.token, d.attempts, d.idempotency_key
    ), got_rows AS (
      SELECT ins.*, cand.queue, cand.pos, cand.result, i.payload,
             row_number() OVER (ORDER BY cand.pos) - 1 + granted AS k
        FROM ins
        JOIN cand ON cand.item_id = ins.item_id
        JOIN claimer.items i ON i.item_id = ins.item_id
    )
    SELECT got_rows.item_id, got_rows.queue, got_rows.token, got_rows.attempts,
           got_rows.idempotency_key, got_rows.pos, got_rows.result::text,
           got_rows.payload::text, claimer.rfc3339(lease),
           CASE WHEN gap > 0
                THEN greatest(0, extract(epoch FROM (tat - t)) + got_rows.k * gap)
                ELSE 0 END::float8
      FROM got_rows ORDER BY got_rows.pos;
    GET DIAGNOSTICS got = ROW_COUNT;
    granted := granted + got;
  END IF;

  -- FIFO with nothing to hand out while results wait for their positions
  -- to be final (the tick this claim takes serves the next one): come
  -- back shortly rather than at the idle poll, and do not take "nothing
  -- now" for "nothing due" (a sender run with --once would stop).
  IF fifo AND granted = 0 AND left_n > 0 AND head_item IS NULL
     AND EXISTS (SELECT 1 FROM claimer.results r
                  WHERE r.pos > greatest(cur, safe) AND r.pos >= s.from_pos
                    AND (s.queues IS NULL OR r.queue = ANY (s.queues))
                    AND NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                                     WHERE d.subscriber = p_sub
                                       AND d.item_id = r.item_id)) THEN
    RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::integer,
                        NULL::text, NULL::bigint, NULL::text, NULL::text,
                        NULL::text, 0.1::float8;
  END IF;

  -- The rate's slots taken; when the rate cut the claim short, the wait
  -- until the next slot can be claimed.
  IF gap > 0 AND granted > 0 THEN
    tat := tat + granted * gap * interval '1 second';
    UPDATE claimer.subscribers sb SET rate_tat = tat
     WHERE sb.subscriber = p_sub;
  END IF;
  IF gap > 0 AND allow < want AND granted >= allow THEN
    RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::integer,
                        NULL::text, NULL::bigint, NULL::text, NULL::text,
                        NULL::text,
                        greatest(0, extract(epoch FROM
                          (tat - interval '1 second' - t)))::float8;
  END IF;

  -- The cursor moves up to the safe position, stopping below the first
  -- result of ours there that has no delivery yet (the batch was full).
  -- (ORDER BY ... LIMIT 1, not min(): an index scan in position order that
  -- stops at the first such result; min() over the anti-join read the
  -- whole backlog on every claim, quadratic over a drain.)
  IF safe > cur THEN
    low := NULL;
    SELECT r.pos INTO low FROM claimer.results r
     WHERE r.pos > cur AND r.pos <= safe AND r.pos >= s.from_pos
       AND (s.queues IS NULL OR r.queue = ANY (s.queues))
       AND NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                        WHERE d.subscriber = p_sub
                          AND d.item_id = r.item_id)
     ORDER BY r.pos
     LIMIT 1;
    cur := CASE WHEN low IS NULL THEN safe ELSE low - 1 END;
  END IF;
  -- A new tick once the last one has served: the identity's last value,
  -- read at the start, bounded by this transaction's xid, assigned after
  -- that read (above the xid of every transaction holding a position up
  -- to it).  Not when the transaction had its xid before the read.  The
  -- old tick's positions are below the new bound too, so it never moves
  -- back.
  IF NOT had_xid
     AND (s.tick_xid IS NULL OR pg_snapshot_xmin(snap) >= s.tick_xid) THEN
    tp := greatest(tp, s.tick_pos);
    tx := pg_current_xact_id();
    UPDATE claimer.subscribers sb
       SET cursor_pos = cur, tick_pos = tp, tick_xid = tx
     WHERE sb.subscriber = p_sub;
  ELSIF cur IS DISTINCT FROM s.cursor_pos THEN
    UPDATE claimer.subscribers sb SET cursor_pos = cur
     WHERE sb.subscriber = p_sub;
  END IF;
END
$$;
