-- 010_no_row_fk: claims and results without a foreign key checked per row.
--
-- Each claim row and each result row was checked against claimer.items by
-- its foreign key: one RI trigger per row, each an SPI query that finds
-- the item and locks it FOR KEY SHARE.  Per job that was two queries (one
-- in the claim, one in the complete), two Heap/LOCK records in the WAL
-- (the item row already locked or updated by the same statement, locked
-- again), and 11 us of server time at batch 100 in pg_stat_statements,
-- for a check that cannot fail: both rows are only ever written from the
-- item's own row, in the statement that holds it (the claim inserts from
-- the candidates it locked; the complete from the claim it deletes).
--
-- What the keys gave beyond that check was ON DELETE CASCADE: deleting an
-- item (retention, or a person by hand) took its claim and its result, and
-- through the result its deliveries.  Two statement-level triggers keep
-- that: after a DELETE on items, one statement per table removes the
-- claims and results of every item deleted (read from the statement's
-- transition table, so it costs per statement, not per row); after a
-- TRUNCATE of items, claims and results are truncated with it (and the
-- deliveries with the results, by their own key).  Nothing on the hot
-- path deletes items, so the claim and the complete pay for neither.
ALTER TABLE claimer.claims DROP CONSTRAINT claims_item_fk;
ALTER TABLE claimer.results DROP CONSTRAINT results_item_fk;

CREATE FUNCTION claimer.items_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM claimer.claims c USING gone g WHERE c.item_id = g.item_id;
  DELETE FROM claimer.results r USING gone g WHERE r.item_id = g.item_id;
  RETURN NULL;
END
$$;

CREATE TRIGGER items_deleted AFTER DELETE ON claimer.items
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION claimer.items_deleted();

-- A TRUNCATE that names claims or results (or deliveries) beside items
-- has emptied them already, and truncating them again from here fails
-- (the statement still has them open: object_in_use); then a DELETE does
-- what is left, which is nothing for a table that statement emptied.
CREATE FUNCTION claimer.items_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    TRUNCATE claimer.claims;
  EXCEPTION WHEN object_in_use THEN
    DELETE FROM claimer.claims;
  END;
  BEGIN
    TRUNCATE claimer.results CASCADE;
  EXCEPTION WHEN object_in_use THEN
    DELETE FROM claimer.results;
  END;
  RETURN NULL;
END
$$;

CREATE TRIGGER items_truncated AFTER TRUNCATE ON claimer.items
    FOR EACH STATEMENT EXECUTE FUNCTION claimer.items_truncated();
