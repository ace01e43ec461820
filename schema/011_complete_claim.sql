-- 011_complete_claim: the completes of a round and the next claim in one
-- statement and one commit.
--
-- A worker that finishes items and wants more sent two statements, each
-- its own transaction: complete_many, then claim.  With synchronous
-- commits each is a WAL flush the session waits for, and at small batches
-- the fixed cost of a statement (executor start, the commit) is most of
-- the server's work per item.  complete_claim does both in one: first
-- the completes, exactly as complete_many (fenced per item, G3; one
-- outcome per input, in input order, read back per item after a resend,
-- G9), then the claim, exactly as claim (G2), when p_n > 0.  They commit
-- together: a worker's completes are never lost by its claim, because a
-- caller that does not get the answer sends the completes again alone
-- (the same tokens settle per item) and learns of the claim's items as
-- orphans or lets their leases expire, as after any claim whose answer
-- was lost.
--
-- One row per complete first (outcome set, the rest NULL), then one row
-- per item claimed (outcome NULL), in claim order.
CREATE FUNCTION claimer.complete_claim(p_ids text[], p_tokens text[],
                                       p_results jsonb[], p_queue text,
                                       p_n integer, p_worker text,
                                       p_lease_s float8)
RETURNS TABLE (outcome text, item_id text, token text, attempt integer,
               max_attempts integer, payload text, lease_until text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
  IF cardinality(p_ids) > 0 THEN
    RETURN QUERY
    SELECT m.outcome, NULL::text, NULL::text, NULL::integer, NULL::integer,
           NULL::text, NULL::text
      FROM claimer.complete_many(p_ids, p_tokens, p_results) m
     ORDER BY m.ord;
  END IF;
  IF p_n > 0 THEN
    RETURN QUERY
    SELECT NULL::text, c.item_id, c.token, c.attempt, c.max_attempts,
           c.payload, c.lease_until
      FROM claimer.claim(p_queue, p_n, p_worker, p_lease_s) c;
  END IF;
END
$$;
