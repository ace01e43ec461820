-- reset.sql: every spec's teardown, included by each: the helpers go
-- and the claimer tables are emptied, so the next permutation starts from
-- its setup alone.
SET client_min_messages = warning;
DROP SCHEMA iso CASCADE;
TRUNCATE claimer.items, claimer.alerts, claimer.workers, claimer.subscribers,
         claimer.queue_policy RESTART IDENTITY CASCADE;
