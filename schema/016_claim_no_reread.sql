-- 016_claim_no_reread: the claim reads each candidate's row once.
--
-- The claim of 009 locked its candidates through items_ready (FOR UPDATE
-- SKIP LOCKED) keeping only their ids, then found each row again by
-- items_pkey twice before its update: once to move the cursor (the
-- priority, run_at and id of the last candidate) and once for the
-- attempts the claim row takes.  Three descents of items_pkey per item
-- claimed where one is needed (the update's).  The locking scans now keep
-- what those two reads were for (attempts, priority, run_at) beside the
-- ids, in arrays filled by the same aggregate so that their positions
-- agree, and the cursor and the claim rows are made from the arrays.
-- 009's scans (from the start of the queue, or the three from the
-- cursor) are one statement now, so that the arrays are filled once.
-- The values are those of the row versions the scans locked, which no
-- other transaction can change before this one ends, so they are what the
-- two reads found.  Everything else is 009's: the same candidates in the
-- same order, the same cursor, the unique claims.item_id the arbiter
-- through ON CONFLICT DO NOTHING (G2), one row per item claimed, in claim
-- order.  Measured on the 2-core bench machine, one session claiming 100
-- of 20,000 ready items and rolling back (pgbench, 3 runs each): 326
-- claims/s before, 363 after, about 3 us less per item claimed; a whole
-- drain at batch 100 (bench_claim, 2 processes, 7 runs each) moved less
-- than its run-to-run noise (28,534 and 28,659 jobs/s).
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
  -- The candidates, position by position: id, attempts, priority, run_at.
  ids text[];
  atts integer[];
  pris integer[];
  runs timestamptz[];
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
  -- One statement for 009's scans: from the start of the queue, or from
  -- the cursor (higher priorities, the cursor's priority after it, lower
  -- priorities).  The branch not taken is cut off by its constant filter
  -- before it reads anything, and the outer LIMIT stops pulling rows, so
  -- locking them, once it has p_n: each branch locks only what it gives.
  SELECT coalesce(array_agg(s.item_id), '{}'),
         coalesce(array_agg(s.attempts), '{}'),
         coalesce(array_agg(s.priority), '{}'),
         coalesce(array_agg(s.run_at), '{}')
    INTO ids, atts, pris, runs FROM (
    SELECT * FROM (
      SELECT i.item_id, i.attempts, i.priority, i.run_at FROM claimer.items i
       WHERE full_scan
         AND i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
       ORDER BY i.priority DESC, i.run_at, i.item_id
       LIMIT p_n
       FOR UPDATE SKIP LOCKED) a
    UNION ALL
    SELECT * FROM (
      SELECT i.item_id, i.attempts, i.priority, i.run_at FROM claimer.items i
       WHERE NOT full_scan
         AND i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
         AND i.priority > c_pri
       ORDER BY i.priority DESC, i.run_at, i.item_id
       LIMIT p_n
       FOR UPDATE SKIP LOCKED) b
    UNION ALL
    SELECT * FROM (
      SELECT i.item_id, i.attempts, i.priority, i.run_at FROM claimer.items i
       WHERE NOT full_scan
         AND i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
         AND i.priority = c_pri AND (i.run_at, i.item_id) > (c_run, c_id)
       ORDER BY i.priority DESC, i.run_at, i.item_id
       LIMIT p_n
       FOR UPDATE SKIP LOCKED) c
    UNION ALL
    SELECT * FROM (
      SELECT i.item_id, i.attempts, i.priority, i.run_at FROM claimer.items i
       WHERE NOT full_scan
         AND i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
         AND i.priority < c_pri
       ORDER BY i.priority DESC, i.run_at, i.item_id
       LIMIT p_n
       FOR UPDATE SKIP LOCKED) d
    LIMIT p_n) s;
  IF full_scan THEN
    next_full := extract(epoch FROM clock_timestamp());
    next_full := next_full + greatest(1.0, 100 * (next_full - t0));
  END IF;
  IF cardinality(ids) > 0 THEN
    SELECT u.priority, u.run_at, u.item_id INTO last
      FROM unnest(pris, runs, ids) AS u(priority, run_at, item_id)
     ORDER BY u.priority, u.run_at DESC, u.item_id DESC
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
    SELECT u.item_id, p_queue, p_worker, claimer.new_token(),
           u.attempts + 1, now() + p_lease_s * interval '1 second'
      FROM unnest(ids, atts) AS u(item_id, attempts)
     ORDER BY u.item_id
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
