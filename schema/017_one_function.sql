-- 017_one_function: the claim and the batch complete in one function,
-- with the functions the library called before kept as thin callers.
--
-- complete_claim (011) called complete_many and then claim, so a round
-- ran three PL/pgSQL functions, each with its own SET list, its own
-- expressions compiled again in every transaction and its own RETURN
-- QUERY result copied into the caller's.  At small batches that is a
-- large share of the server's work per item: one claim of one item cost
-- 160 us of executor time as 008's function against 105 us as the same
-- statement sent alone (pg_stat_statements, pgbench, one session).  The
-- two statements now sit in complete_claim itself, which the library
-- calls for every claim, every batch complete and every round of both:
-- the completes exactly as complete_many's (fenced per item, G3; one
-- outcome per input, in input order, read back per item after a resend,
-- G9), then the claim exactly as 016's (the cursor, SKIP LOCKED, the
-- unique claims.item_id the arbiter through ON CONFLICT DO NOTHING, G2),
-- when p_n > 0.  The function's settings are the union of the two it
-- replaces: generic plans, sequential scans off (every row reached by a
-- key or by items_ready) and nested loops off (014: the batch complete's
-- joins linear in the batch); the claim's one join, of its inserted
-- claims to its updated items, is then a hash join.  The clock the
-- cursor's next scan from the start is timed by starts at the claim, not
-- at the function's start, as when the claim was a function of its own:
-- a round's completes do not lengthen it.  The claim's scans are 016's
-- less two statements' worth of work: the scan from the start and the
-- three from the cursor are two statements, of which a claim runs one
-- (016 ran the four as one, the branches not taken cut off by a constant
-- filter but still started), and the cursor's new place is read from
-- the last of the arrays (the rows come out in the order of items_ready)
-- where 016 sorted them again in a statement of its own.
-- claim and complete_many stay, for SQL callers and libraries built
-- before this version, as calls of complete_claim.  Measured on the
-- 2-core bench machine, bench_claim through the library, this version and
-- the one before alternated on two databases of one server, executor time
-- of the joint statement per item (pg_stat_statements): batch 1, one
-- process, 388, 406 and 386 us before, 367, 355 and 356 after (1,305-1,402
-- jobs/s before, 1,458-1,468 after).  At batch 1 with 4 processes, at
-- batch 10 and at batch 100 the two moved within their noise (batch 100,
-- one process: 43.3-46.6 us per item either way).
CREATE OR REPLACE FUNCTION claimer.complete_claim(p_ids text[],
                                                  p_tokens text[],
                                                  p_results jsonb[],
                                                  p_queue text,
                                                  p_n integer,
                                                  p_worker text,
                                                  p_lease_s float8)
RETURNS TABLE (outcome text, item_id text, token text, attempt integer,
               max_attempts integer, payload text, lease_until text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_nestloop = off AS $$
#variable_conflict use_column
DECLARE
  key text;
  -- 'next_full|priority|run_at|item_id' (the id last: it may hold a '|')
  cur text;
  c_pri integer;
  c_run timestamptz;
  c_id text;
  -- The clock's epoch after which a scan from the start is due.
  next_full float8 := 0;
  t0 float8;
  full_scan boolean;
  -- The candidates, position by position: id, attempts, priority, run_at.
  ids text[];
  atts integer[];
  pris integer[];
  runs timestamptz[];
  got integer;
BEGIN
  IF cardinality(p_ids) > 0 THEN
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
    SELECT CASE WHEN res.item_id IS NOT NULL THEN 'ok'
                WHEN EXISTS (SELECT 1 FROM claimer.results x
                              WHERE x.item_id = input.item_id
                                AND x.token = input.token) THEN 'already'
                ELSE 'lost' END,
           NULL::text, NULL::text, NULL::integer, NULL::integer, NULL::text,
           NULL::text
      FROM input LEFT JOIN res
        ON res.item_id = input.item_id AND res.token = input.token
     ORDER BY input.ord;
  END IF;
  IF p_n > 0 THEN
    key := 'claimer.cursor_' || md5(p_queue);
    cur := nullif(current_setting(key, true), '');
    t0 := extract(epoch FROM clock_timestamp());
    IF cur IS NOT NULL THEN
      next_full := split_part(cur, '|', 1)::float8;
      c_pri := split_part(cur, '|', 2)::integer;
      c_run := split_part(cur, '|', 3)::timestamptz;
      c_id := substr(cur, length(split_part(cur, '|', 1)) +
                          length(split_part(cur, '|', 2)) +
                          length(split_part(cur, '|', 3)) + 4);
    END IF;
    full_scan := c_id IS NULL OR t0 >= next_full;
    -- 009's scans: from the start of the queue, or from the cursor
    -- (higher priorities, the cursor's priority after it, lower
    -- priorities: the three in index order, so that the rows come out in
    -- the order of items_ready).  The outer LIMIT stops pulling rows, so
    -- locking them, once it has p_n: each branch locks only what it gives.
    IF full_scan THEN
      SELECT coalesce(array_agg(s.item_id), '{}'),
             coalesce(array_agg(s.attempts), '{}'),
             coalesce(array_agg(s.priority), '{}'),
             coalesce(array_agg(s.run_at), '{}')
        INTO ids, atts, pris, runs FROM (
        SELECT i.item_id, i.attempts, i.priority, i.run_at
          FROM claimer.items i
         WHERE i.queue = p_queue AND i.state = 'ready' AND i.run_at <= now()
         ORDER BY i.priority DESC, i.run_at, i.item_id
         LIMIT p_n
         FOR UPDATE SKIP LOCKED) s;
      next_full := extract(epoch FROM clock_timestamp());
      next_full := next_full + greatest(1.0, 100 * (next_full - t0));
    ELSE
      SELECT coalesce(array_agg(s.item_id), '{}'),
             coalesce(array_agg(s.attempts), '{}'),
             coalesce(array_agg(s.priority), '{}'),
             coalesce(array_agg(s.run_at), '{}')
        INTO ids, atts, pris, runs FROM (
        SELECT * FROM (
          SELECT i.item_id, i.attempts, i.priority, i.run_at
            FROM claimer.items i
           WHERE i.queue = p_queue AND i.state = 'ready'
             AND i.run_at <= now() AND i.priority > c_pri
           ORDER BY i.priority DESC, i.run_at, i.item_id
           LIMIT p_n
           FOR UPDATE SKIP LOCKED) b
        UNION ALL
        SELECT * FROM (
          SELECT i.item_id, i.attempts, i.priority, i.run_at
            FROM claimer.items i
           WHERE i.queue = p_queue AND i.state = 'ready'
             AND i.run_at <= now() AND i.priority = c_pri
             AND (i.run_at, i.item_id) > (c_run, c_id)
           ORDER BY i.priority DESC, i.run_at, i.item_id
           LIMIT p_n
           FOR UPDATE SKIP LOCKED) c
        UNION ALL
        SELECT * FROM (
          SELECT i.item_id, i.attempts, i.priority, i.run_at
            FROM claimer.items i
           WHERE i.queue = p_queue AND i.state = 'ready'
             AND i.run_at <= now() AND i.priority < c_pri
           ORDER BY i.priority DESC, i.run_at, i.item_id
           LIMIT p_n
           FOR UPDATE SKIP LOCKED) d
        LIMIT p_n) s;
    END IF;
    -- The last candidate in index order is the last one aggregated.
    -- After a scan from the start, the cursor is its last item; after a
    -- scan from the cursor, it moves on only (higher priorities taken do
    -- not move it back).
    got := cardinality(ids);
    IF got > 0 AND (full_scan OR pris[got] < c_pri OR
                    (pris[got] = c_pri AND
                     (runs[got], ids[got]) > (c_run, c_id)))
    THEN
      c_pri := pris[got];
      c_run := runs[got];
      c_id := ids[got];
    END IF;
    IF c_id IS NOT NULL THEN
      PERFORM set_config(key, concat_ws('|', next_full, c_pri, c_run, c_id),
                         false);
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
    SELECT NULL::text, ins.item_id, ins.token, ins.attempt, upd.max_attempts,
           upd.payload::text, claimer.rfc3339(ins.lease_until)
      FROM ins JOIN upd ON upd.item_id = ins.item_id
     ORDER BY upd.priority DESC, upd.run_at, ins.item_id;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION claimer.claim(p_queue text, p_n integer,
                                         p_worker text, p_lease_s float8)
RETURNS TABLE (item_id text, token text, attempt integer,
               max_attempts integer, payload text, lease_until text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  SELECT c.item_id, c.token, c.attempt, c.max_attempts, c.payload,
         c.lease_until
    FROM claimer.complete_claim('{}', '{}', '{}', p_queue, p_n, p_worker,
                                p_lease_s) c;
END
$$;

CREATE OR REPLACE FUNCTION claimer.complete_many(p_ids text[],
                                                 p_tokens text[],
                                                 p_results jsonb[])
RETURNS TABLE (ord bigint, outcome text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  SELECT c.ord, c.outcome
    FROM claimer.complete_claim(p_ids, p_tokens, p_results, NULL, 0, NULL,
                                NULL) WITH ORDINALITY
         AS c(outcome, item_id, token, attempt, max_attempts, payload,
              lease_until, ord);
END
$$;
