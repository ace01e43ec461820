-- 008_hot_path: the claim without a plan per call, and cheaper tokens.
--
-- The claim was one statement of three CTEs sent with its parameters; a
-- prepared statement whose LIMIT is a parameter is planned afresh on every
-- execution (PostgreSQL's generic plan for it assumes a tenth of the ready
-- rows and loses to the custom one), and planning it took about 0.3 ms of
-- server CPU per call, as much as running it for one item.  The claim is
-- now this function, whose plans are generic (planned once per session):
-- its update reaches the claimed rows by their keys (= ANY of the
-- inserted ids), which is an index scan whatever the row estimate, so the
-- generic plan is as good as a custom one for 1 or 1,000 items.  Its
-- semantics are the statement's of claimer/sql.c before (G2: candidates
-- locked with SKIP LOCKED, the unique claims.item_id the arbiter through
-- ON CONFLICT DO NOTHING, a candidate re-checked as 'ready').
CREATE FUNCTION claimer.claim(p_queue text, p_n integer, p_worker text,
                              p_lease_s float8)
RETURNS TABLE (item_id text, token text, attempt integer,
               max_attempts integer, payload text, lease_until text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH cand AS (
    SELECT i.item_id, i.attempts FROM claimer.items i
     WHERE i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
     ORDER BY i.priority DESC, i.run_at, i.item_id
     LIMIT p_n
     FOR UPDATE SKIP LOCKED
  ), ins AS (
    INSERT INTO claimer.claims AS c (item_id, queue, worker_id, token,
                                     attempt, lease_until)
    SELECT cand.item_id, p_queue, p_worker, claimer.new_token(),
           cand.attempts + 1, now() + p_lease_s * interval '1 second'
      FROM cand
    ON CONFLICT ON CONSTRAINT claims_pkey DO NOTHING
    RETURNING c.item_id, c.token, c.attempt, c.lease_until
  ), upd AS (
    UPDATE claimer.items i SET state = 'leased'
     WHERE i.item_id = ANY (ARRAY(SELECT ins.item_id FROM ins))
    RETURNING i.item_id, i.payload, i.max_attempts, i.priority, i.run_at
  )
  SELECT ins.item_id, ins.token, ins.attempt, upd.max_attempts,
         upd.payload::text, claimer.rfc3339(ins.lease_until)
    FROM ins JOIN upd ON upd.item_id = ins.item_id
   ORDER BY upd.priority DESC, upd.run_at, ins.item_id;
END
$$;

-- Tokens: the sequence value, then 64 random bits from random() (seeded
-- per session from the operating system's strong random source) instead
-- of an md5 of a random UUID: a third of the CPU, the same form, the same
-- uniqueness after a failover (G10).  Tokens fence, they are not secrets:
-- dashboards show them.
CREATE OR REPLACE FUNCTION claimer.new_token() RETURNS text
LANGUAGE sql VOLATILE PARALLEL UNSAFE AS $$
  SELECT lpad(to_hex(nextval('claimer.token_seq')), 16, '0') || '-' ||
         lpad(to_hex(floor(random() * 4294967296)::bigint), 8, '0') ||
         lpad(to_hex(floor(random() * 4294967296)::bigint), 8, '0')
$$;

-- Many completes in one statement (claimer/sql.c, COMPLETE_MANY), in a
-- function for the same reason as the claim: its arrays made every call a
-- fresh plan.  One row per input element, in input order (ord): 'ok' (this
-- call recorded it), 'already' (a result with this token was there before
-- it: a resend, G9) or 'lost' (the token holds no lease, G3).  Everything
-- joins on (item_id, token), so one item twice in a batch under two tokens
-- (a lease lost and granted again to the same worker) cannot pair one
-- token's claim with the other's result; results go in in item_id order,
-- the same in every batch, so that batches cannot deadlock on the unique
-- index.
CREATE FUNCTION claimer.complete_many(p_ids text[], p_tokens text[],
                                      p_results jsonb[])
RETURNS TABLE (ord bigint, outcome text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH input AS (
    SELECT * FROM unnest(p_ids, p_tokens, p_results)
      WITH ORDINALITY AS t(item_id, token, result, ord)
  ), del AS (
    DELETE FROM claimer.claims c USING input
     WHERE c.item_id = input.item_id AND c.token = input.token
    RETURNING c.item_id, c.queue, c.token, c.worker_id, c.attempt,
              input.result
  ), res AS (
    INSERT INTO claimer.results AS r (item_id, queue, token, worker_id,
                                      attempt, result)
    SELECT del.item_id, del.queue, del.token, del.worker_id, del.attempt,
           coalesce(del.result, 'null') FROM del ORDER BY del.item_id
    RETURNING r.item_id, r.token, r.attempt
  ), upd AS (
    UPDATE claimer.items i SET state = 'done', attempts = res.attempt,
           finished_at = now()
      FROM res WHERE i.item_id = res.item_id
    RETURNING i.item_id
  )
  SELECT input.ord,
         CASE WHEN res.item_id IS NOT NULL THEN 'ok'
              WHEN EXISTS (SELECT 1 FROM claimer.results x
                            WHERE x.item_id = input.item_id
                              AND x.token = input.token) THEN 'already'
              ELSE 'lost' END
    FROM input LEFT JOIN res
      ON res.item_id = input.item_id AND res.token = input.token;
END
$$;
