-- 004_hardening: bounded alert notifications and one live worker per name.
--
-- NOTIFY payloads are capped by PostgreSQL at 8000 bytes.  An alert whose
-- JSON is larger (an item_dead whose error is long or escape-heavy) made
-- raise_alert, and with it the FAIL that raised it, fail: the item was then
-- released for free and rerun without end.  The notification now carries
-- the detail only when it fits; otherwise it says "detail_truncated" and a
-- listener reads the row by alert_id.  The statements that put an error
-- into an alert's detail clip it too (claimer.clip_error), so the alert row
-- stays small whatever a handler printed.
--
-- A worker daemon registers under its name with an instance id, random per
-- process.  A name whose row is held by another instance that heartbeated
-- recently is refused, so two daemons never share a name (each would take
-- the other's leases for its own lost claims and release them).

ALTER TABLE claimer.workers ADD COLUMN instance text;

-- The error as an alert's detail keeps it: at most 1000 characters (with
-- an ellipsis when cut).
CREATE FUNCTION claimer.clip_error(p_error text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN length(p_error) > 1000
              THEN left(p_error, 1000) || '...' ELSE p_error END
$$;

CREATE OR REPLACE FUNCTION claimer.raise_alert(p_kind text, p_subject text,
                                               p_detail jsonb) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  a claimer.alerts;
  msg text;
BEGIN
  INSERT INTO claimer.alerts (kind, subject, detail)
  VALUES (p_kind, p_subject, p_detail)
  ON CONFLICT (kind, subject) WHERE resolved_at IS NULL DO NOTHING
  RETURNING * INTO a;
  IF a.alert_id IS NULL THEN
    RETURN NULL;
  END IF;
  msg := claimer.alert_json(a)::text;
  IF octet_length(msg) > 7000 THEN
    msg := jsonb_build_object('alert_id', a.alert_id, 'kind', a.kind,
                              'subject', a.subject,
                              'raised_at', claimer.rfc3339(a.raised_at),
                              'detail_truncated', true)::text;
  END IF;
  PERFORM pg_notify('claimer_alerts', msg);
  RETURN a.alert_id;
END
$$;
