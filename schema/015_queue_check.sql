-- 015_queue_check: the queue-name check of items without a bounded regex.
--
-- A CHECK constraint is evaluated on every row an UPDATE writes, whatever
-- columns it sets, so items_queue_form ran twice per job (the claim's
-- update to 'leased' and the complete's to 'done').  Its regex
-- '^[A-Za-z0-9_.:-]{1,63}$' is slow to run: the bound {1,63} makes 63
-- copies of the class in the automaton.  On the bench machine one
-- evaluation took about 4.3 us (a million in 4.57 s, against 0.28 s for
-- the same query with only the length test), and a perf profile of a
-- batch-100 drain put about a tenth of the server's CPU per job under
-- ExecConstraints, most of it in pg_regexec.  The same rule as a length
-- test and a search for any character outside the class takes about
-- 0.3 us: the same names pass and fail (the class is ASCII, so bytes and
-- characters count alike; any other character, a newline included, is
-- outside it).  Adding the constraint reads the table once, under the
-- lock of the migration.
ALTER TABLE claimer.items
  DROP CONSTRAINT items_queue_form,
  ADD CONSTRAINT items_queue_form
    CHECK (octet_length(queue) BETWEEN 1 AND 63
           AND queue !~ '[^A-Za-z0-9_.:-]');
