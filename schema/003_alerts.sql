-- 003_alerts: what the reaper needs to tell people what needs them.
--
-- A worker records its heartbeat interval, so that the reaper can call it
-- lost after a configured multiple of it.  An alert is raised once per
-- (kind, subject) while open (the unique index of 001), by the statement
-- that sees its cause: the reap that expires a lease, the fail or reap that
-- kills an item, the reaper's scans for overdue items, lost workers and
-- deliveries in doubt.  Each raise also goes out as NOTIFY claimer_alerts.
-- Announcing an alert (a warning log line, the exec and HTTP hooks) is an
-- outbox: hook_state says whether a reaper has done it yet ('pending'),
-- and hook_next_at leases a pending alert to the reaper announcing it.
--
-- Retention: the reaper deletes finished items (with their results and
-- deliveries), resolved alerts and long-lost workers by age, in bounded
-- batches, never a result some subscriber has not recorded as sent.

ALTER TABLE claimer.workers ADD COLUMN heartbeat_s float8;

ALTER TABLE claimer.alerts
    ADD COLUMN hook_state text NOT NULL DEFAULT 'pending',
    ADD COLUMN hook_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN hook_next_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN hook_error text,
    ADD CONSTRAINT alerts_hook_state
        CHECK (hook_state IN ('pending', 'sent', 'failed', 'none'));

CREATE INDEX alerts_hook_pending ON claimer.alerts (hook_next_at)
    WHERE hook_state = 'pending';

-- The alert's JSON, as NOTIFY and the hooks carry it.
CREATE FUNCTION claimer.alert_json(a claimer.alerts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('alert_id', a.alert_id, 'kind', a.kind,
                            'subject', a.subject, 'detail', a.detail,
                            'raised_at', claimer.rfc3339(a.raised_at))
$$;

-- Raises an alert unless one is open for (kind, subject); returns the new
-- alert's id, or NULL when it was already open.  Notifies on a raise.
CREATE FUNCTION claimer.raise_alert(p_kind text, p_subject text,
                                    p_detail jsonb) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  a claimer.alerts;
BEGIN
  INSERT INTO claimer.alerts (kind, subject, detail)
  VALUES (p_kind, p_subject, p_detail)
  ON CONFLICT (kind, subject) WHERE resolved_at IS NULL DO NOTHING
  RETURNING * INTO a;
  IF a.alert_id IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('claimer_alerts', claimer.alert_json(a)::text);
  RETURN a.alert_id;
END
$$;

-- Open alerts, newest first, for dashboards.
CREATE VIEW claimer.open_alerts AS
SELECT a.alert_id, a.kind, a.subject, a.detail, a.raised_at,
       extract(epoch FROM now() - a.raised_at)::float8 AS open_s,
       a.hook_state
  FROM claimer.alerts a
 WHERE a.resolved_at IS NULL;

-- Retention removes resolved alerts by age.
CREATE INDEX alerts_resolved ON claimer.alerts (resolved_at)
    WHERE resolved_at IS NOT NULL;
-- Open alerts, which the reaper re-checks each cycle, without reading the
-- resolved ones.
CREATE INDEX alerts_open_id ON claimer.alerts (alert_id)
    WHERE resolved_at IS NULL;

-- Retention ---------------------------------------------------------------

-- Dead and discarded items by age, for their retention (done ones go
-- through items_finished).
CREATE INDEX items_retain ON claimer.items (finished_at)
    WHERE state IN ('dead', 'discarded');

-- The subscribers that consume results (the senders).  Retention keeps a
-- result until every subscriber it is owed to has recorded it as sent: a
-- subscriber is owed the results of its queues (NULL: all queues) from
-- position from_pos on.
CREATE TABLE claimer.subscribers (
    subscriber  text        NOT NULL,
    queues      text[],
    from_pos    bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscribers_pkey PRIMARY KEY (subscriber)
);

-- 1 when item_id's result (if any) is still owed to some subscriber, or a
-- delivery of it is not settled: retention must keep the item.
CREATE FUNCTION claimer.result_undelivered(p_item_id text) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM claimer.deliveries d
                  WHERE d.item_id = p_item_id AND d.state <> 'sent')
      OR EXISTS (SELECT 1 FROM claimer.results r
                   JOIN claimer.subscribers s
                     ON (s.queues IS NULL OR r.queue = ANY (s.queues))
                    AND r.pos >= s.from_pos
                  WHERE r.item_id = p_item_id
                    AND NOT EXISTS (SELECT 1 FROM claimer.deliveries d
                                     WHERE d.subscriber = s.subscriber
                                       AND d.item_id = r.item_id
                                       AND d.state = 'sent'))
$$;

-- Retry policy per queue --------------------------------------------------

-- How many tries an item gets when its enqueue did not say, and how long a
-- failed try waits: backoff_s doubling per attempt up to backoff_max_s,
-- times a jitter in [0.5, 1).  The row '*' (not a valid queue name) holds
-- the defaults for queues without a row.  The reaper writes it from its
-- config (reaper.max_attempts, reaper.backoff, reaper.queue_*).
CREATE TABLE claimer.queue_policy (
    queue         text        NOT NULL,
    max_attempts  integer,
    backoff_s     float8,
    backoff_max_s float8,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queue_policy_pkey PRIMARY KEY (queue),
    CONSTRAINT queue_policy_values CHECK (
        (max_attempts IS NULL OR max_attempts >= 1) AND
        (backoff_s IS NULL OR backoff_s > 0) AND
        (backoff_max_s IS NULL OR backoff_max_s > 0))
);

-- The wait before the try after `attempts` spent ones, by queue.
CREATE FUNCTION claimer.retry_delay(p_queue text, attempts integer)
RETURNS interval
LANGUAGE sql VOLATILE AS $$
  WITH p AS (
    SELECT coalesce(q.backoff_s, d.backoff_s, 1.0) AS base,
           coalesce(q.backoff_max_s, d.backoff_max_s, 3600.0) AS cap
      FROM (SELECT 1) one
      LEFT JOIN claimer.queue_policy q ON q.queue = p_queue
      LEFT JOIN claimer.queue_policy d ON d.queue = '*'
  )
  SELECT make_interval(secs => least(p.cap, p.base * power(2.0,
             greatest(least(attempts, 30), 1) - 1)) * (0.5 + random() / 2))
    FROM p
$$;

-- Replaces the policy with the one given (queues, with '*' for the
-- defaults; NULL elements: not set): rows of other queues go.  Two
-- reapers syncing at once take turns (an advisory lock), so the table
-- ends as one of them wrote it, never a mix.
CREATE FUNCTION claimer.sync_queue_policy(p_queues text[], p_max integer[],
                                          p_backoff float8[],
                                          p_cap float8[],
                                          OUT written bigint,
                                          OUT removed bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('claimer.queue_policy'));
  DELETE FROM claimer.queue_policy p
   WHERE p.queue <> ALL (p_queues);
  GET DIAGNOSTICS removed = ROW_COUNT;
  INSERT INTO claimer.queue_policy AS p (queue, max_attempts, backoff_s,
                                         backoff_max_s)
  SELECT * FROM unnest(p_queues, p_max, p_backoff, p_cap)
  ON CONFLICT (queue) DO UPDATE SET max_attempts = EXCLUDED.max_attempts,
     backoff_s = EXCLUDED.backoff_s, backoff_max_s = EXCLUDED.backoff_max_s,
     updated_at = now()
   WHERE (p.max_attempts, p.backoff_s, p.backoff_max_s) IS DISTINCT FROM
         (EXCLUDED.max_attempts, EXCLUDED.backoff_s, EXCLUDED.backoff_max_s);
  GET DIAGNOSTICS written = ROW_COUNT;
END
$$;
