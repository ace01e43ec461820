-- 007_flow: flow control per subscriber, shared by all of its senders.
--
-- The limits live in the subscriber's row and are applied by
-- delivery_claim under that row's lock, so they hold across every sender
-- process and host, not per process:
--
--   concurrency  deliveries leased at once (0: no limit): the claim grants
--                at most concurrency minus the live leases.
--   rate_limit   deliveries started per second (0: no limit), as a
--                generic cell rate algorithm: rate_tat is the theoretical
--                time of the next slot; the k-th delivery of a claim gets
--                the slot rate_tat + k / rate_limit, and the claim hands
--                out only the slots that begin within the next second.
--                Each delivery comes with wait_s, the seconds until its
--                slot: the sender calls the sink then, not before.  When
--                the rate is what cut a claim short, one more row comes
--                back with a NULL item_id and the wait until the next slot
--                can be claimed, so that a sender neither spins nor sleeps
--                past it.
--   ordering     'none', or 'fifo': one delivery at a time, by position.
--                A position is handed out only once final (at or below
--                the tick's safe position: no transaction can still commit
--                a result below it), and the first unsettled delivery
--                (failed and waiting for its retry, held, or in doubt)
--                holds back every later one until it is sent or dead.
--
-- The retry schedule is the subscriber's too: backoff_s, the waits after
-- the first, second, ... failed attempt (the last repeats), each jittered
-- +-10%; NULL keeps 005's default (the Standard Webhooks example).
--
-- A sender that stops with deliveries waiting for their slot gives them
-- back (delivery_release): they were never handed to a sink, so they are
-- due again at once with the attempt returned, and are not in doubt.

ALTER TABLE claimer.subscribers
    ADD COLUMN concurrency integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_limit  float8  NOT NULL DEFAULT 0,
    ADD COLUMN rate_tat    timestamptz,
    ADD COLUMN ordering    text    NOT NULL DEFAULT 'none',
    ADD COLUMN backoff_s   float8[],
    ADD CONSTRAINT subscribers_concurrency
        CHECK (concurrency BETWEEN 0 AND 100000),
    ADD CONSTRAINT subscribers_rate_limit
        CHECK (rate_limit >= 0 AND rate_limit <= 1000000),
    ADD CONSTRAINT subscribers_ordering CHECK (ordering IN ('none', 'fifo')),
    ADD CONSTRAINT subscribers_backoff CHECK (backoff_s IS NULL OR (
        cardinality(backoff_s) BETWEEN 1 AND 50
        AND 0 < ALL (backoff_s) AND 2678400 >= ALL (backoff_s)));

-- The wait after `attempts` failed attempts under schedule p_schedule
-- (NULL: the default schedule of 005).
CREATE FUNCTION claimer.delivery_wait(p_schedule float8[], attempts integer)
RETURNS interval LANGUAGE sql VOLATILE AS $$
  SELECT CASE
           WHEN p_schedule IS NULL THEN claimer.delivery_backoff(attempts)
           ELSE (p_schedule[least(greatest(attempts, 1),
                                  cardinality(p_schedule))]
                 * (0.9 + random() * 0.2)) * interval '1 second'
         END
$$;

-- As in 005, with the subscriber's schedule.
CREATE OR REPLACE FUNCTION claimer.delivery_fail(p_sub text, p_item text,
                                                 p_token text, p_error text,
                                                 p_retry_in float8)
RETURNS TABLE (state text, next_at text, attempts integer, did boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  d claimer.deliveries;
  maxa integer;
  sched float8[];
  dead boolean;
BEGIN
  SELECT sb.max_attempts, sb.backoff_s INTO maxa, sched
    FROM claimer.subscribers sb WHERE sb.subscriber = p_sub;
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
                          THEN now() + claimer.delivery_wait(sched,
                                                             d.attempts)
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

-- The leases of a subscriber's deliveries: live ones count against its
-- concurrency, expired ones are in doubt.  Without it each claim read
-- every delivery the subscriber ever had.
CREATE INDEX deliveries_sending ON claimer.deliveries (subscriber, lease_until)
    WHERE state = 'sending';

-- A release (the attempt given back) is not a failed attempt: the circuit
-- breaker counts only moves out of 'sending' that keep the attempt.
CREATE OR REPLACE FUNCTION claimer.delivery_breaker() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  s claimer.subscribers;
BEGIN
  IF NEW.state = 'sent' THEN
    UPDATE claimer.subscribers SET failures_in_row = 0
     WHERE subscriber = NEW.subscriber AND failures_in_row <> 0;
  ELSIF NEW.state IN ('retry', 'dead') AND OLD.state = 'sending'
        AND NEW.attempts >= OLD.attempts THEN
    UPDATE claimer.subscribers SET failures_in_row = failures_in_row + 1
     WHERE subscriber = NEW.subscriber
    RETURNING * INTO s;
    IF s.break_after > 0 AND s.failures_in_row >= s.break_after
       AND NOT s.paused THEN
      UPDATE claimer.subscribers
         SET paused = true, updated_at = now(),
             paused_why = format('circuit breaker: %s failed attempts in a '
                                 'row', s.failures_in_row)
       WHERE subscriber = NEW.subscriber;
      PERFORM claimer.raise_alert('subscriber_failing', NEW.subscriber,
                jsonb_build_object('subscriber', NEW.subscriber,
                                   'reason', 'circuit breaker',
                                   'failures_in_row', s.failures_in_row,
                                   'error',
                                   claimer.clip_error(NEW.last_error)));
    END IF;
  END IF;
  RETURN NULL;
END
$$;

DROP FUNCTION claimer.delivery_claim(text, integer, float8, text);

-- As in 005 (the tick, the race, the in-doubt policy), with the limits
-- above; wait_s is each delivery's wait for its rate slot (0 without a
-- rate limit).
CREATE FUNCTION claimer.delivery_claim(p_sub text, p_n integer,
                                       p_lease_s float8, p_sender text)
RETURNS TABLE (item_id text, queue text, token text, attempt integer,
               idempotency_key text, pos bigint, result text, payload text,
               lease_until text, wait_s float8)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
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
  tp bigint;
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

-- Gives back deliveries sender p_sender holds under p_tokens that it never
-- handed to a sink (they waited for their rate slot when it stopped): due
-- again at once, the attempt returned.  Returns the tokens released.
CREATE FUNCTION claimer.delivery_release(p_sender text, p_tokens text[])
RETURNS TABLE (token text)
LANGUAGE sql VOLATILE AS $$
  UPDATE claimer.deliveries d
     SET state = 'retry', next_at = now(), attempts = d.attempts - 1,
         lease_until = NULL, updated_at = now()
   WHERE d.token = ANY (p_tokens) AND d.sender = p_sender
     AND d.state = 'sending'
  RETURNING d.token
$$;

-- The dashboard view gains the limits and the age of the oldest result
-- owed and not yet sent (pending, in flight, failed, held: not dead).
CREATE OR REPLACE VIEW claimer.subscriber_status AS
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
       -- Positions are shared by every queue: the lag counts only this
       -- subscriber's (005 counted every queue's, and one too many from
       -- the beginning).
       greatest(0, coalesce((SELECT max(r.pos) FROM claimer.results r
                              WHERE s.queues IS NULL
                                 OR r.queue = ANY (s.queues)), 0)
                   - greatest(coalesce(s.cursor_pos, s.from_pos - 1), 0))
         AS lag_positions, -- (positions start at 1)
       s.concurrency, s.rate_limit, s.ordering,
       extract(epoch FROM now() - least(
         (SELECT min(r.finished_at) FROM claimer.results r
           WHERE r.pos > coalesce(s.cursor_pos, s.from_pos - 1)
             AND r.pos >= s.from_pos
             AND (s.queues IS NULL OR r.queue = ANY (s.queues))
             AND NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                              WHERE d.subscriber = s.subscriber
                                AND d.item_id = r.item_id)),
         (SELECT min(r.finished_at) FROM claimer.deliveries d
            JOIN claimer.results r ON r.item_id = d.item_id
           WHERE d.subscriber = s.subscriber
             AND d.state IN ('sending', 'retry', 'held'))))::float8
         AS oldest_age_s,
       s.max_attempts, s.break_after, s.backoff_s
  FROM claimer.subscribers s;

-- Replay against retention.  A replay turns sent deliveries back into
-- 'retry'; retention deletes done items whose results nobody is owed.
-- Run at once, retention's snapshot could predate the replay's commit and
-- delete a replayed delivery with its result ("replayed 1", never sent).
-- The two now take one advisory lock, replay exclusively and retention
-- shared, and each decides in a statement that starts after it has the
-- lock (a function's statements take snapshots of their own): retention
-- sees the replay, or the replay finds the items gone.
CREATE FUNCTION claimer.retain_done(p_secs float8, p_limit integer,
                                    p_after timestamptz, p_after_id text)
RETURNS TABLE (deleted bigint, looked bigint, last_at text, last_id text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(hashtext('claimer.replay'));
  RETURN QUERY
  WITH cand AS (
    SELECT i.item_id, i.finished_at FROM claimer.items i
     WHERE i.state = 'done'
       AND i.finished_at < now() - make_interval(secs => p_secs)
       AND i.finished_at >= p_after
       AND (i.finished_at > p_after OR i.item_id > p_after_id)
     ORDER BY i.finished_at, i.item_id LIMIT p_limit
     FOR UPDATE SKIP LOCKED
  ), del AS (
    DELETE FROM claimer.items i USING cand
     WHERE i.item_id = cand.item_id
       AND NOT claimer.result_undelivered(cand.item_id)
    RETURNING i.item_id
  ), last AS (
    SELECT c.finished_at, c.item_id FROM cand c
     ORDER BY c.finished_at DESC, c.item_id DESC LIMIT 1
  )
  SELECT (SELECT count(*) FROM del), (SELECT count(*) FROM cand),
         (SELECT claimer.rfc3339(l.finished_at) FROM last l),
         (SELECT l.item_id FROM last l);
END
$$;

-- Sends again the sent deliveries of p_sub from position p_from on (NULL:
-- any) or sent since p_since (NULL: any), with their keys.
CREATE FUNCTION claimer.delivery_replay(p_sub text, p_from bigint,
                                        p_since timestamptz)
RETURNS TABLE (item_id text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('claimer.replay'));
  RETURN QUERY
  UPDATE claimer.deliveries d SET state = 'retry', next_at = now(),
         attempts = 0, updated_at = now()
    FROM claimer.results r
   WHERE d.subscriber = p_sub AND d.state = 'sent' AND r.item_id = d.item_id
     AND (p_from IS NULL OR r.pos >= p_from)
     AND (p_since IS NULL OR d.sent_at >= p_since)
  RETURNING d.item_id;
END
$$;
