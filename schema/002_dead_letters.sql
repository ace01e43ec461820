-- 002_dead_letters: what a person does with a dead item.
--
-- An item's history keeps what happened to it beyond its current row: each
-- retry of a dead item appends the error it died with and its attempt
-- count, so resetting attempts for a new round loses nothing.  A discarded
-- item stays (its item_id keeps its idempotency, G1) in the state
-- 'discarded', out of the dead letters.

ALTER TABLE claimer.items ADD COLUMN history jsonb NOT NULL DEFAULT '[]';

ALTER TABLE claimer.items DROP CONSTRAINT items_state;
ALTER TABLE claimer.items ADD CONSTRAINT items_state
    CHECK (state IN ('ready', 'leased', 'done', 'dead', 'discarded'));

-- Dead letters by queue and age, for `claimer dead list`.
CREATE INDEX items_dead ON claimer.items (queue, finished_at)
    WHERE state = 'dead';
