-- grants.sql: test-only, never shipped.  The fault harness applies it to
-- its own database after `claimer migrate`: a schema `faults` whose table
-- `grants` records, with clock_timestamp(), every lease claimer hands out
-- (an insert into claimer.claims), every extension of one (an update of
-- lease_until: a heartbeat) and every end of one (a delete), so that the
-- checker can tell which lease was live when (history.h, grants.jsonl).
-- The triggers are AFTER ROW triggers: they fire at the end of the
-- statement that changed the claim, so an end sees the rest of that
-- statement (the result a complete wrote, the last_token a fail set).

CREATE SCHEMA faults;

CREATE TABLE faults.grants (
    n         bigserial PRIMARY KEY,
    kind      text   NOT NULL CHECK (kind IN ('grant', 'extend', 'end')),
    item_id   text   NOT NULL,
    token     text   NOT NULL,
    worker_id text,
    at        float8 NOT NULL,  -- epoch seconds, clock_timestamp()
    until     float8,           -- grant, extend: lease_until
    how       text              -- end: complete, fail, reap or release
);

CREATE FUNCTION faults.on_claim() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    how text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO faults.grants (kind, item_id, token, worker_id, at, until)
        VALUES ('grant', NEW.item_id, NEW.token, NEW.worker_id,
                extract(epoch FROM clock_timestamp()),
                extract(epoch FROM NEW.lease_until));
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.lease_until IS DISTINCT FROM OLD.lease_until THEN
            INSERT INTO faults.grants (kind, item_id, token, worker_id, at,
                                       until)
            VALUES ('extend', NEW.item_id, NEW.token, NEW.worker_id,
                    extract(epoch FROM clock_timestamp()),
                    extract(epoch FROM NEW.lease_until));
        END IF;
        RETURN NULL;
    END IF;
    -- DELETE: how the lease ended, from what the same statement wrote.
    SELECT CASE
             WHEN EXISTS (SELECT 1 FROM claimer.results r
                           WHERE r.item_id = OLD.item_id
                             AND r.token = OLD.token) THEN 'complete'
             WHEN i.last_token = OLD.token THEN 'fail'
             WHEN i.last_error LIKE 'lease expired:%'
                  AND i.last_token IS NULL THEN 'reap'
             ELSE 'release'
           END
      INTO how
      FROM claimer.items i WHERE i.item_id = OLD.item_id;
    INSERT INTO faults.grants (kind, item_id, token, worker_id, at, how)
    VALUES ('end', OLD.item_id, OLD.token, OLD.worker_id,
            extract(epoch FROM clock_timestamp()), coalesce(how, 'release'));
    RETURN NULL;
END
$$;

CREATE TRIGGER grants_record
    AFTER INSERT OR UPDATE OR DELETE ON claimer.claims
    FOR EACH ROW EXECUTE FUNCTION faults.on_claim();

-- For the harness's question while a process is stopped: has every lease
-- it held been granted again?
CREATE INDEX grants_token ON faults.grants (token);
CREATE INDEX grants_item ON faults.grants (item_id, n);
CREATE INDEX grants_worker ON faults.grants (worker_id) WHERE kind = 'grant';
