-- 006_breaker: a circuit breaker per subscriber.
--
-- After break_after failed attempts in a row (any of its deliveries; a
-- delivery sent resets the count), the subscriber is paused and a
-- subscriber_failing alert is raised: a receiver that is down for good
-- stops being hammered, and its deliveries wait, nothing lost, until a
-- person resumes it (`claimer subscriber resume`, which resets the count).
-- 0 turns the breaker off.  Kept by a trigger on the deliveries, so every
-- path that records an outcome (the sender, the blocking calls) counts.
-- A sent delivery writes the subscriber's row only when the count is not
-- already 0, so the hot path takes no lock on it.

ALTER TABLE claimer.subscribers
    ADD COLUMN break_after          integer NOT NULL DEFAULT 100,
    ADD COLUMN failures_in_row      integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT subscribers_break_after CHECK (break_after >= 0);

CREATE FUNCTION claimer.delivery_breaker() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  s claimer.subscribers;
BEGIN
  IF NEW.state = 'sent' THEN
    UPDATE claimer.subscribers SET failures_in_row = 0
     WHERE subscriber = NEW.subscriber AND failures_in_row <> 0;
  ELSIF NEW.state IN ('retry', 'dead') AND OLD.state = 'sending' THEN
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
                                   'last_error',
                                   claimer.clip_error(NEW.last_error)));
    END IF;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_breaker
  AFTER UPDATE OF state ON claimer.deliveries
  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION claimer.delivery_breaker();
