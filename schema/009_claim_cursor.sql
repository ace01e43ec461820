-- 009_claim_cursor: a claim that does not walk over what was claimed before.
--
-- Each claim turns its items' rows from 'ready' to 'leased'; the old row
-- versions' entries stay in items_ready until vacuum removes them, and
-- while any snapshot older than the claim is open (a long report, a
-- forgotten transaction: a held xmin) nothing can remove them, nor even
-- mark them dead in the index.  The claim scanned items_ready from the
-- queue's first entry, so every claim walked over every item claimed
-- since that snapshot: with a transaction held open, 2 claimers at batch
-- 10 fell from 8,755 to 2,282 jobs/s within 40 s (bench/run section 5b),
-- and one claim of 10 read 1,273 buffers after 66,000 claims.
--
-- The claim now starts where this session's last claim on the queue
-- ended: a cursor (the priority, run_at and item_id of the last item it
-- claimed) kept in a session setting, so no table is written for it.  It
-- looks first at higher priorities than the cursor's (so that urgent work
-- is never made to wait), then at the cursor's priority after the cursor,
-- then at lower priorities.  New work of the cursor's priority sorts
-- after it: it is enqueued at now(), and retries, expired leases and
-- releases are put at now() or later (a released item now goes to the
-- back of its priority, claimer/sql.c RELEASE; before, it kept its place).
-- What can sort before it (an item whose enqueuing transaction committed
-- late, a run_at given in the past, a candidate another claim had locked
-- and then let go) is found by a scan from the start of the queue, which a
-- session makes when it has no cursor, at most a second after its last
-- one, and, when the last one took long, 100 times its duration after it
-- (so that such scans cost at most 1% of the time a held xmin makes them
-- slow).  Such an item waits that long at most.  The rest is the claim
-- of 008: candidates locked with SKIP LOCKED, the unique claims.item_id
-- the arbiter through ON CONFLICT DO NOTHING (G2), one row per item
-- claimed, in claim order.  A pooler that moves sessions between clients
-- moves the cursor with them: it is a hint, and a wrong one costs only a
-- scan from the start.
CREATE OR REPLACE FUNCTION claimer.claim(p_queue text, p_n integer,
                                         p_worker text, p_lease_s float8)
RETURNS TABLE (item_id text, token text, attempt integer,
               max_attempts integer, payload text, lease_until text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
  key text := 'claimer.cursor_' || md5(p_queue);
  -- 'next_full|priority|run_at|item_id' (the id last: it may hold a '|')
  cur text := nullif(current_setting(key, true), '');
  c_pri integer;
  c_run timestamptz;
  c_id text;
  next_full float8 := 0; -- clock epoch after which a scan from the start is due
  t0 float8 := extract(epoch FROM clock_timestamp());
  full_scan boolean;
  ids text[] := '{}';
  more text[];
  last record;
BEGIN
  IF cur IS NOT NULL THEN
    next_full := split_part(cur, '|', 1)::float8;
    c_pri := split_part(cur, '|', 2)::integer;
    c_run := split_part(cur, '|', 3)::timestamptz;
    c_id := substr(cur, length(split_part(cur, '|', 1)) +
                        length(split_part(cur, '|', 2)) +
                        length(split_part(cur, '|', 3)) + 4);
  END IF;
  full_scan := c_id IS NULL OR t0 >= next_full;
  IF NOT full_scan THEN
    SELECT coalesce(array_agg(s.item_id), '{}') INTO ids FROM (
      SELECT i.item_id FROM claimer.items i
       WHERE i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
         AND i.priority > c_pri
       ORDER BY i.priority DESC, i.run_at, i.item_id
       LIMIT p_n
       FOR UPDATE SKIP LOCKED) s;
    IF cardinality(ids) < p_n THEN
      SELECT coalesce(array_agg(s.item_id), '{}') INTO more FROM (
        SELECT i.item_id FROM claimer.items i
         WHERE i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
           AND i.priority = c_pri AND (i.run_at, i.item_id) > (c_run, c_id)
         ORDER BY i.priority DESC, i.run_at, i.item_id
         LIMIT p_n - cardinality(ids)
         FOR UPDATE SKIP LOCKED) s;
      ids := ids || more;
    END IF;
    IF cardinality(ids) < p_n THEN
      SELECT coalesce(array_agg(s.item_id), '{}') INTO more FROM (
        SELECT i.item_id FROM claimer.items i
         WHERE i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
           AND i.priority < c_pri
         ORDER BY i.priority DESC, i.run_at, i.item_id
         LIMIT p_n - cardinality(ids)
         FOR UPDATE SKIP LOCKED) s;
      ids := ids || more;
    END IF;
  ELSE
    SELECT coalesce(array_agg(s.item_id), '{}') INTO ids FROM (
      SELECT i.item_id FROM claimer.items i
       WHERE i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
       ORDER BY i.priority DESC, i.run_at, i.item_id
       LIMIT p_n
       FOR UPDATE SKIP LOCKED) s;
    next_full := extract(epoch FROM clock_timestamp());
    next_full := next_full + greatest(1.0, 100 * (next_full - t0));
  END IF;
  IF cardinality(ids) > 0 THEN
    SELECT i.priority, i.run_at, i.item_id INTO last FROM claimer.items i
     WHERE i.item_id = ANY (ids)
     ORDER BY i.priority, i.run_at DESC, i.item_id DESC
     LIMIT 1;
    -- After a scan from the start, the cursor is its last item; after a
    -- scan from the cursor, it moves on only (higher priorities taken do
    -- not move it back).
    IF full_scan OR last.priority < c_pri
       OR (last.priority = c_pri AND (last.run_at, last.item_id) > (c_run, c_id))
    THEN
      c_pri := last.priority;
      c_run := last.run_at;
      c_id := last.item_id;
    END IF;
  END IF;
  IF c_id IS NOT NULL THEN
    PERFORM set_config(key, concat_ws('|', next_full, c_pri, c_run, c_id), false);
  END IF;
  RETURN QUERY
  WITH ins AS (
    INSERT INTO claimer.claims AS c (item_id, queue, worker_id, token,
                                     attempt, lease_until)
    SELECT i.item_id, p_queue, p_worker, claimer.new_token(),
           i.attempts + 1, now() + p_lease_s * interval '1 second'
      FROM claimer.items i
     WHERE i.item_id = ANY (ids)
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

-- The batch complete of 008 joined its input to claimer.claims; planned
-- generically, with statistics that see claims nearly empty (it is, most
-- of the time, when analyzed), the join read claims_pkey whole for each
-- batch: every lease held by anyone, and under a held xmin every claim
-- row deleted since (10,840 buffers to complete 10 items after 66,000
-- claims); given other statistics, it read claims whole by a sequential
-- scan instead.  The rows are now reached by their keys (= ANY of the
-- ids, an index probe per id whatever the estimate), as the claim reaches
-- its own, and both functions plan with sequential scans off: every row
-- they touch is found by a key or by items_ready, never by reading a
-- table, whatever the statistics say.  The rest is 008's.
CREATE OR REPLACE FUNCTION claimer.complete_many(p_ids text[],
                                                 p_tokens text[],
                                                 p_results jsonb[])
RETURNS TABLE (ord bigint, outcome text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH input AS (
    SELECT * FROM unnest(p_ids, p_tokens, p_results)
      WITH ORDINALITY AS t(item_id, token, result, ord)
  ), del AS (
    DELETE FROM claimer.claims c USING input
     WHERE c.item_id = ANY (p_ids)
       AND c.item_id = input.item_id AND c.token = input.token
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
      FROM res
     WHERE i.item_id = ANY (ARRAY(SELECT res.item_id FROM res))
       AND i.item_id = res.item_id
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
