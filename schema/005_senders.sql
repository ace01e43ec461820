-- 005_senders: downstream senders consume results, once per subscriber.
--
-- A subscriber (claimer.subscribers, 003) is owed the results of its
-- queues (NULL: all) from position from_pos on.  A sender claims them by
-- inserting delivery rows keyed (subscriber, item_id): the primary key is
-- the arbiter, as the claims table is for items, so each subscriber
-- records each result once however many senders run (G5).  A delivery is
-- a lease like a claim: a fencing token, lease_until on the database
-- clock, attempts counted when granted.
--
--   sending  leased to a sender; the sink is being called (or about to be)
--   sent     the sink took it (the end)
--   retry    the last attempt failed; due again at next_at
--   held     in doubt under the subscriber's 'hold' policy: a sender
--            stopped between calling the sink and recording the outcome;
--            it waits for a person (claimer deliveries resolve)
--   dead     its attempts are spent (a delivery_dead alert)
--
-- No result is skipped.  A result's pos comes from an identity, assigned
-- when its row is inserted, and its transaction may commit after one that
-- holds a later pos: a poller that only asks for "pos greater than the
-- last seen" would step over it.  Each subscriber keeps a cursor: every
-- result at or below cursor_pos is final (committed or never to be) and
-- has its delivery row (or is not for this subscriber).  The cursor moves
-- only up to a tick's position: tick_pos is the identity's last value
-- read together with tick_xid, the snapshot's xmax at that moment (the
-- first transaction id not yet assigned).  A result with a pos at or below
-- tick_pos was inserted by a transaction holding an id below tick_xid (the
-- complete statement writes the item before the result, so its id is
-- assigned before its pos); once the oldest running transaction
-- (pg_snapshot_xmin) has passed tick_xid, every such transaction has ended
-- and every such pos is final.  This is PgQ's tick, per subscriber.
--
-- The idempotency key of a delivery derives from (subscriber, item_id)
-- alone, never from a token or a row id (G10): 'clm_' and the first 32 hex
-- digits of sha256(subscriber || U+001F || item_id).  A receiver holding
-- the subscriber name and the item id can recompute it.

ALTER TABLE claimer.subscribers
    ADD COLUMN paused       boolean     NOT NULL DEFAULT false,
    ADD COLUMN paused_why   text,
    ADD COLUMN in_doubt     text        NOT NULL DEFAULT 'retry',
    ADD COLUMN max_attempts integer     NOT NULL DEFAULT 10,
    ADD COLUMN cursor_pos   bigint,
    ADD COLUMN tick_pos     bigint,
    ADD COLUMN tick_xid     xid8,
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT subscribers_in_doubt CHECK (in_doubt IN ('retry', 'hold')),
    ADD CONSTRAINT subscribers_max_attempts CHECK (max_attempts >= 1),
    ADD CONSTRAINT subscribers_name CHECK (
        subscriber ~ '^[A-Za-z0-9_.-]{1,63}$');

ALTER TABLE claimer.deliveries DROP CONSTRAINT deliveries_state;
ALTER TABLE claimer.deliveries
    ADD COLUMN next_at timestamptz,
    ADD COLUMN sender  text,
    ADD CONSTRAINT deliveries_state
        CHECK (state IN ('sending', 'sent', 'retry', 'held', 'dead'));
-- Failed attempts coming due, per subscriber.
CREATE INDEX deliveries_due ON claimer.deliveries (subscriber, next_at)
    WHERE state = 'retry';

-- The senders' alerts: a delivery whose attempts are spent, and a
-- subscriber paused by its circuit breaker.
ALTER TABLE claimer.alerts DROP CONSTRAINT alerts_kind;
ALTER TABLE claimer.alerts ADD CONSTRAINT alerts_kind CHECK (kind IN (
    'item_overdue', 'lease_expired', 'item_dead', 'worker_lost',
    'delivery_in_doubt', 'delivery_dead', 'subscriber_failing'));

CREATE FUNCTION claimer.idempotency_key(p_subscriber text, p_item_id text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT 'clm_' || left(encode(sha256(convert_to(
           p_subscriber || chr(31) || p_item_id, 'UTF8')), 'hex'), 32)
$$;

-- The wait after `attempts` failed attempts of a delivery: the schedule of
-- the Standard Webhooks example (5 s, 5 min, 30 min, 2 h, 5 h, then 10 h),
-- times a jitter in [0.9, 1.1) so that a receiver back from an outage is
-- not hit by every retry at once.
CREATE FUNCTION claimer.delivery_backoff(attempts integer) RETURNS interval
LANGUAGE sql VOLATILE AS $$
  SELECT (CASE
            WHEN attempts <= 1 THEN 5
            WHEN attempts = 2 THEN 300
            WHEN attempts = 3 THEN 1800
            WHEN attempts = 4 THEN 7200
            WHEN attempts = 5 THEN 18000
            ELSE 36000
          END * (0.9 + random() * 0.2)) * interval '1 second'
$$;

-- Claims up to p_n deliveries of subscriber p_sub for sender p_sender, each
-- leased for p_lease_s seconds: first failed attempts come due and, under
-- the 'retry' policy, deliveries whose sender stopped in doubt (sent again
-- with the same key); then results not yet delivered, oldest position
-- first.  Under 'hold', a delivery found in doubt becomes 'held' instead.
-- A paused or unknown subscriber gets nothing.  The subscriber's row is
-- locked for the claim, so that the cursor moves under one claimer at a
-- time; the sink calls run outside it, in parallel.
CREATE FUNCTION claimer.delivery_claim(p_sub text, p_n integer,
                                       p_lease_s float8, p_sender text)
RETURNS TABLE (item_id text, queue text, token text, attempt integer,
               idempotency_key text, pos bigint, result text, payload text,
               lease_until text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  s claimer.subscribers;
  cur bigint;
  safe bigint;
  low bigint;
  snap pg_snapshot := pg_current_snapshot();
  lease timestamptz := now() + p_lease_s * interval '1 second';
  left_n integer := p_n;
  got integer;
  tp bigint;
  tx xid8;
BEGIN
  SELECT * INTO s FROM claimer.subscribers sb WHERE sb.subscriber = p_sub
     FOR UPDATE;
  IF NOT FOUND OR s.paused OR p_n < 1 THEN
    RETURN;
  END IF;

  -- In doubt: leased, the lease gone, no outcome recorded.
  IF s.in_doubt = 'hold' THEN
    UPDATE claimer.deliveries d
       SET state = 'held', updated_at = now()
     WHERE d.subscriber = p_sub AND d.state = 'sending'
       AND d.lease_until < now();
  END IF;

  -- Again: failed attempts come due, and (retry policy) the ones in doubt.
  RETURN QUERY
  WITH again AS (
    SELECT d.item_id FROM claimer.deliveries d
     WHERE d.subscriber = p_sub
       AND ((d.state = 'retry' AND d.next_at <= now())
            OR (d.state = 'sending' AND d.lease_until < now()))
     ORDER BY d.item_id
     LIMIT left_n
     FOR UPDATE SKIP LOCKED
  ), upd AS (
    UPDATE claimer.deliveries d
       SET state = 'sending', token = claimer.new_token(),
           attempts = d.attempts + 1, lease_until = lease, sender = p_sender,
           next_at = NULL, updated_at = now()
      FROM again
     WHERE d.subscriber = p_sub AND d.item_id = again.item_id
    RETURNING d.item_id, d.token, d.attempts, d.idempotency_key
  )
  SELECT upd.item_id, r.queue, upd.token, upd.attempts,
         upd.idempotency_key, r.pos, r.result::text, i.payload::text,
         claimer.rfc3339(lease)
    FROM upd
    JOIN claimer.results r ON r.item_id = upd.item_id
    JOIN claimer.items i ON i.item_id = upd.item_id;
  GET DIAGNOSTICS got = ROW_COUNT;
  left_n := left_n - got;

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
    )
    SELECT ins.item_id, cand.queue, ins.token, ins.attempts,
           ins.idempotency_key, cand.pos, cand.result::text,
           i.payload::text, claimer.rfc3339(lease)
      FROM ins
      JOIN cand ON cand.item_id = ins.item_id
      JOIN claimer.items i ON i.item_id = ins.item_id
     ORDER BY cand.pos;
  END IF;

  -- The cursor moves up to the safe position, stopping below the first
  -- result of ours there that has no delivery yet (the batch was full).
  IF safe > cur THEN
    SELECT min(r.pos) INTO low FROM claimer.results r
     WHERE r.pos > cur AND r.pos <= safe AND r.pos >= s.from_pos
       AND (s.queues IS NULL OR r.queue = ANY (s.queues))
       AND NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                        WHERE d.subscriber = p_sub
                          AND d.item_id = r.item_id);
    cur := CASE WHEN low IS NULL THEN safe ELSE low - 1 END;
  END IF;
  -- A new tick once the last one has served: the identity's last value
  -- first, then a snapshot taken after it (a statement of its own), whose
  -- xmax is above the id of every transaction holding a pos up to it.
  IF s.tick_xid IS NULL OR pg_snapshot_xmin(snap) >= s.tick_xid THEN
    tp := coalesce(pg_sequence_last_value(
            pg_get_serial_sequence('claimer.results', 'pos')::regclass), 0);
    tx := pg_snapshot_xmax(pg_current_snapshot());
    UPDATE claimer.subscribers sb
       SET cursor_pos = cur, tick_pos = tp, tick_xid = tx
     WHERE sb.subscriber = p_sub;
  ELSIF cur IS DISTINCT FROM s.cursor_pos THEN
    UPDATE claimer.subscribers sb SET cursor_pos = cur
     WHERE sb.subscriber = p_sub;
  END IF;
END
$$;

-- Records that the sink took delivery (p_sub, p_item) under p_token.
-- Returns ('sent', true) when this call recorded it, ('sent', false) when
-- an earlier call with the same token had (a resend after a lost
-- connection, G9), and no row when the token no longer holds the delivery
-- (it was leased again after its lease ran out: nothing written).  A
-- token whose lease ran out but was not leased again still records: the
-- sink took it, and nobody else has sent it since.  The row is read FOR
-- UPDATE, so a resend that waited on the first send's lock sees its
-- outcome.
CREATE FUNCTION claimer.delivery_sent(p_sub text, p_item text, p_token text)
RETURNS TABLE (state text, did boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  d claimer.deliveries;
BEGIN
  SELECT * INTO d FROM claimer.deliveries x
   WHERE x.subscriber = p_sub AND x.item_id = p_item AND x.token = p_token
     FOR UPDATE;
  IF NOT FOUND OR d.state NOT IN ('sending', 'held', 'sent') THEN
    RETURN;
  END IF;
  IF d.state = 'sent' THEN
    RETURN QUERY SELECT 'sent'::text, false;
    RETURN;
  END IF;
  UPDATE claimer.deliveries x
     SET state = 'sent', sent_at = now(), updated_at = now(),
         lease_until = NULL, last_error = NULL
   WHERE x.subscriber = p_sub AND x.item_id = p_item;
  RETURN QUERY SELECT 'sent'::text, true;
END
$$;

-- Records a failed attempt of (p_sub, p_item) under p_token: due again
-- after p_retry_in seconds (< 0: the backoff schedule; NULL: never, dead
-- at once) while attempts remain, else dead with a delivery_dead alert.
-- Returns the state now, next_at and whether this call did it; no row when
-- the token holds no lease.
CREATE FUNCTION claimer.delivery_fail(p_sub text, p_item text,
                                      p_token text, p_error text,
                                      p_retry_in float8)
RETURNS TABLE (state text, next_at text, attempts integer, did boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  d claimer.deliveries;
  maxa integer;
  dead boolean;
BEGIN
  SELECT sb.max_attempts INTO maxa FROM claimer.subscribers sb
   WHERE sb.subscriber = p_sub;
  SELECT * INTO d FROM claimer.deliveries x
   WHERE x.subscriber = p_sub AND x.item_id = p_item AND x.token = p_token
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF d.state <> 'sending' THEN
    -- An earlier call with this token recorded the outcome (G9).
    IF d.state IN ('retry', 'dead') THEN
      RETURN QUERY SELECT d.state, claimer.rfc3339(d.next_at), d.attempts,
                          false;
    END IF;
    RETURN;
  END IF;
  dead := p_retry_in IS NULL OR d.attempts >= coalesce(maxa, 10);
  UPDATE claimer.deliveries x
     SET state = CASE WHEN dead THEN 'dead' ELSE 'retry' END,
         next_at = CASE WHEN dead THEN NULL
                        WHEN p_retry_in < 0
                          THEN now() + claimer.delivery_backoff(d.attempts)
                        ELSE now() + p_retry_in * interval '1 second' END,
         last_error = left(p_error, 8192), lease_until = NULL,
         updated_at = now()
   WHERE x.subscriber = p_sub AND x.item_id = p_item
  RETURNING * INTO d;
  IF dead THEN
    PERFORM claimer.raise_alert('delivery_dead', p_sub || '/' || p_item,
              jsonb_build_object('subscriber', p_sub, 'item_id', p_item,
                                 'attempts', d.attempts,
                                 'idempotency_key', d.idempotency_key,
                                 'error', claimer.clip_error(p_error)));
  END IF;
  RETURN QUERY SELECT d.state, claimer.rfc3339(d.next_at), d.attempts, true;
END
$$;

-- Extends the leases of the deliveries sender p_sender holds under the
-- tokens p_tokens by p_lease_s seconds; returns the tokens still held.
CREATE FUNCTION claimer.delivery_heartbeat(p_sender text, p_lease_s float8,
                                           p_tokens text[])
RETURNS TABLE (token text)
LANGUAGE sql VOLATILE AS $$
  UPDATE claimer.deliveries d
     SET lease_until = now() + p_lease_s * interval '1 second',
         updated_at = now()
   WHERE d.token = ANY (p_tokens) AND d.sender = p_sender
     AND d.state = 'sending'
  RETURNING d.token
$$;

-- What a dashboard wants per subscriber.  pending counts the results owed
-- and not yet claimed (from the cursor on); lag is in positions.
CREATE VIEW claimer.subscriber_status AS
SELECT s.subscriber, s.queues, s.paused, s.paused_why, s.in_doubt,
       s.from_pos, coalesce(s.cursor_pos, s.from_pos - 1) AS cursor_pos,
       (SELECT count(*) FROM claimer.results r
         WHERE r.pos > coalesce(s.cursor_pos, s.from_pos - 1)
           AND r.pos >= s.from_pos
           AND (s.queues IS NULL OR r.queue = ANY (s.queues))
           AND NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                            WHERE d.subscriber = s.subscriber
                              AND d.item_id = r.item_id)) AS pending,
       (SELECT count(*) FROM claimer.deliveries d
         WHERE d.subscriber = s.subscriber AND d.state = 'sending')
           AS in_flight,
       (SELECT count(*) FROM claimer.deliveries d
         WHERE d.subscriber = s.subscriber AND d.state = 'retry') AS retry,
       (SELECT count(*) FROM claimer.deliveries d
         WHERE d.subscriber = s.subscriber AND d.state = 'sent') AS sent,
       (SELECT count(*) FROM claimer.deliveries d
         WHERE d.subscriber = s.subscriber AND d.state = 'held') AS held,
       (SELECT count(*) FROM claimer.deliveries d
         WHERE d.subscriber = s.subscriber AND d.state = 'dead') AS dead,
       coalesce((SELECT max(r.pos) FROM claimer.results r), 0)
         - coalesce(s.cursor_pos, s.from_pos - 1) AS lag_positions
  FROM claimer.subscribers s;
