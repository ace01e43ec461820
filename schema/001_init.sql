-- 001_init: the claimer schema, version 1.
--
-- The keys are the point: items.item_id is the producer's idempotency key
-- (G1); claims.item_id is unique, so at most one lease per item exists at
-- any instant (G2); results.item_id is unique, so at most one result per
-- item exists, ever (G3); deliveries are keyed (subscriber, item_id) (G5);
-- open alerts are unique per (kind, subject).  Lease times are only ever
-- computed from now() on the database clock (G6).
--
-- The schema itself and claimer.schema_migrations are created by the
-- migration runner before this file runs.

-- Fencing tokens: a sequence value (monotonic, so a sink may compare two
-- tokens of one item) followed by 64 random bits, so that a token stays
-- unique after a failover to a standby that lost the tail of the WAL and
-- hands out a sequence value a second time (G10).
CREATE SEQUENCE claimer.token_seq AS bigint;

CREATE FUNCTION claimer.new_token() RETURNS text
LANGUAGE sql VOLATILE PARALLEL UNSAFE AS $$
  SELECT lpad(to_hex(nextval('claimer.token_seq')), 16, '0') || '-' ||
         substr(md5(gen_random_uuid()::text), 1, 16)
$$;

-- Timestamps leave the database as RFC 3339 in UTC.
CREATE FUNCTION claimer.rfc3339(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Delay before the next try after `attempts` spent ones: 1 s doubling up to
-- one hour, times a jitter in [0.5, 1) so that items failed together do not
-- come back together.
CREATE FUNCTION claimer.backoff(attempts integer) RETURNS interval
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT make_interval(secs => least(3600.0, power(2.0, greatest(least(attempts, 20), 1) - 1))
                              * (0.5 + random() / 2))
$$;

CREATE TABLE claimer.items (
    item_id      text        NOT NULL,
    queue        text        NOT NULL,
    state        text        NOT NULL DEFAULT 'ready',
    payload      jsonb       NOT NULL DEFAULT 'null',
    priority     integer     NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 25,
    last_error   text,
    -- The token of the last try that its worker failed, so that a fail
    -- retried after a lost connection can tell that its first send had
    -- landed (G9).  A lease ended by the reaper clears it: a fenced-off
    -- worker's late fail must read as "lease lost".
    last_token   text,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    sla          interval,
    CONSTRAINT items_pkey PRIMARY KEY (item_id),
    CONSTRAINT items_item_id_size CHECK (octet_length(item_id) BETWEEN 1 AND 255),
    CONSTRAINT items_queue_form CHECK (queue ~ '^[A-Za-z0-9_.:-]{1,63}$'),
    CONSTRAINT items_state CHECK (state IN ('ready', 'leased', 'done', 'dead')),
    CONSTRAINT items_attempts CHECK (attempts >= 0 AND max_attempts >= 1)
);

-- The ready set, found by an index whatever the size of the history: only
-- ready rows are in it, in the order claim takes them.
CREATE INDEX items_ready ON claimer.items (queue, priority DESC, run_at, item_id)
    WHERE state = 'ready';
-- Unfinished items by age, for SLA alerts and the status view.
CREATE INDEX items_open_age ON claimer.items (queue, enqueued_at)
    WHERE state IN ('ready', 'leased');
-- Finished items by age, for retention in bounded batches.
CREATE INDEX items_finished ON claimer.items (finished_at)
    WHERE state IN ('done', 'dead');

CREATE TABLE claimer.claims (
    item_id     text        NOT NULL,
    queue       text        NOT NULL,
    worker_id   text        NOT NULL,
    token       text        NOT NULL,
    attempt     integer     NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL,
    -- The race: one claim row per item.
    CONSTRAINT claims_pkey PRIMARY KEY (item_id),
    CONSTRAINT claims_item_fk FOREIGN KEY (item_id)
        REFERENCES claimer.items (item_id) ON DELETE CASCADE
);
CREATE INDEX claims_lease_until ON claimer.claims (lease_until);
CREATE INDEX claims_worker ON claimer.claims (worker_id);

CREATE TABLE claimer.results (
    item_id     text        NOT NULL,
    -- Position for pollers, with the writing transaction's id so that a
    -- poller can hold back positions whose transactions may still commit.
    pos         bigint      GENERATED ALWAYS AS IDENTITY,
    xid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    queue       text        NOT NULL,
    token       text        NOT NULL,
    worker_id   text        NOT NULL,
    attempt     integer     NOT NULL,
    result      jsonb       NOT NULL DEFAULT 'null',
    finished_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT results_pkey PRIMARY KEY (item_id),
    CONSTRAINT results_item_fk FOREIGN KEY (item_id)
        REFERENCES claimer.items (item_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX results_pos ON claimer.results (pos);

CREATE TABLE claimer.deliveries (
    subscriber      text        NOT NULL,
    item_id         text        NOT NULL,
    state           text        NOT NULL DEFAULT 'sending',
    attempts        integer     NOT NULL DEFAULT 0,
    -- Derived from (subscriber, item_id), never from a token (G10).
    idempotency_key text        NOT NULL,
    token           text,
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT deliveries_pkey PRIMARY KEY (subscriber, item_id),
    CONSTRAINT deliveries_result_fk FOREIGN KEY (item_id)
        REFERENCES claimer.results (item_id) ON DELETE CASCADE,
    CONSTRAINT deliveries_state CHECK (state IN ('sending', 'sent', 'held'))
);
CREATE INDEX deliveries_item ON claimer.deliveries (item_id);
CREATE INDEX deliveries_in_doubt ON claimer.deliveries (lease_until)
    WHERE state = 'sending';

CREATE TABLE claimer.workers (
    worker_id    text        NOT NULL,
    host         text,
    pid          integer,
    version      text,
    concurrency  integer,
    queues       text[],
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workers_pkey PRIMARY KEY (worker_id)
);

CREATE TABLE claimer.alerts (
    alert_id    bigint      GENERATED ALWAYS AS IDENTITY,
    kind        text        NOT NULL,
    subject     text        NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}',
    raised_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    CONSTRAINT alerts_pkey PRIMARY KEY (alert_id),
    CONSTRAINT alerts_kind CHECK (kind IN ('item_overdue', 'lease_expired',
        'item_dead', 'worker_lost', 'delivery_in_doubt'))
);
-- Raised once per (kind, subject) while open, however many reapers run.
CREATE UNIQUE INDEX alerts_open ON claimer.alerts (kind, subject)
    WHERE resolved_at IS NULL;

-- Dashboards ------------------------------------------------------------

-- Per queue: what waits, what runs, what finished, and how old the oldest
-- waiting item is.  Counting done items reads the history of the queue.
CREATE VIEW claimer.queue_status AS
SELECT i.queue,
       count(*) FILTER (WHERE i.state = 'ready' AND i.run_at <= now()) AS ready,
       count(*) FILTER (WHERE i.state = 'ready' AND i.run_at > now()) AS scheduled,
       count(*) FILTER (WHERE i.state = 'leased') AS leased,
       count(*) FILTER (WHERE i.state = 'done') AS done,
       count(*) FILTER (WHERE i.state = 'dead') AS dead,
       coalesce(extract(epoch FROM now() - min(i.run_at)
                FILTER (WHERE i.state = 'ready' AND i.run_at <= now())), 0)::float8
           AS oldest_ready_s,
       (SELECT count(*) FROM claimer.claims c
         WHERE c.queue = i.queue AND c.lease_until < now()) AS stale
  FROM claimer.items i
 GROUP BY i.queue;

-- Leases that hold now, with the time they have left.
CREATE VIEW claimer.active_leases AS
SELECT c.item_id, c.queue, c.worker_id, c.token, c.attempt, c.claimed_at,
       c.lease_until,
       extract(epoch FROM c.lease_until - now())::float8 AS seconds_left
  FROM claimer.claims c
 WHERE c.lease_until >= now();

-- Leases past their expiry that no reaper has ended yet.
CREATE VIEW claimer.stale_leases AS
SELECT c.item_id, c.queue, c.worker_id, c.token, c.attempt, c.claimed_at,
       c.lease_until,
       extract(epoch FROM now() - c.lease_until)::float8 AS seconds_overdue
  FROM claimer.claims c
 WHERE c.lease_until < now();

-- The dead letters.
CREATE VIEW claimer.dead_items AS
SELECT i.item_id, i.queue, i.attempts, i.max_attempts, i.last_error,
       i.enqueued_at, i.finished_at, i.payload
  FROM claimer.items i
 WHERE i.state = 'dead';
