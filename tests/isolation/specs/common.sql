-- common.sql: the helpers every spec's setup creates (schema iso), pasted
-- in where a template includes this file.  Each wrapper runs one statement
-- of the library's table, cl__stmts[] in claimer/sql.c, whose text
-- test_isolation.c puts in place of the statement's placeholder (as a
-- quoted literal, for EXECUTE ... USING).  The parameters are passed with
-- the types the server infers for them when the library prepares the text
-- without types (as pg_prepared_statements shows them), so the statement
-- runs as the library's does.
--
-- Tokens and times change from run to run, so no wrapper shows one: each
-- session's tokens are kept in iso.tokens and a token is shown as the
-- session it was granted to (iso.who), and each wrapper answers with the
-- outcome the library reads from the statement's rows ("completed",
-- "lease lost", ...).  The spec's step names the session it stands for,
-- since the worker, sender and reaper names are the sessions' names.
--
-- The isolation tester ends an SQL block at the first closing brace, so
-- nothing here may contain one (array literals are written ARRAY[...]).

SET client_min_messages = warning;
CREATE SCHEMA iso;

-- What each session was granted: kind 'claim' (an item's lease) or
-- 'delivery/SUBSCRIBER' (a delivery to SUBSCRIBER), by the item.  Each session writes
-- only its own rows, so keeping a token adds no lock another waits on.
CREATE TABLE iso.tokens (
    kind    text NOT NULL,
    sess    text NOT NULL,
    item_id text NOT NULL,
    token   text NOT NULL,
    PRIMARY KEY (kind, sess, item_id)
);

CREATE FUNCTION iso.keep(p_kind text, p_sess text, p_item text, p_token text)
RETURNS void LANGUAGE sql AS $f$
    INSERT INTO iso.tokens VALUES (p_kind, p_sess, p_item, p_token)
    ON CONFLICT (kind, sess, item_id) DO UPDATE SET token = EXCLUDED.token
$f$;

-- The token the session holds for the item ('none' if never granted).
CREATE FUNCTION iso.tok(p_kind text, p_sess text, p_item text)
RETURNS text LANGUAGE sql STABLE AS $f$
    SELECT coalesce((SELECT token FROM iso.tokens
                      WHERE kind = p_kind AND sess = p_sess
                        AND item_id = p_item), 'none')
$f$;

-- The session a token was granted to, as the caller's snapshot sees it.
CREATE FUNCTION iso.who(p_token text) RETURNS text LANGUAGE sql STABLE AS $f$
    SELECT CASE WHEN p_token IS NULL THEN NULL
                ELSE coalesce((SELECT string_agg(sess, '+' ORDER BY sess)
                                 FROM iso.tokens WHERE token = p_token),
                              'an unknown token') END
$f$;

-- A list for an answer: 'nothing' when empty; sorted when the statement
-- gives no order.
CREATE FUNCTION iso.list(p_items text[], p_sort boolean)
RETURNS text LANGUAGE sql IMMUTABLE AS $f$
    SELECT coalesce(nullif(CASE WHEN p_sort
                                THEN (SELECT string_agg(e, ', ' ORDER BY e)
                                        FROM unnest(p_items) e)
                                ELSE array_to_string(p_items, ', ') END, ''),
                    'nothing')
$f$;

-- The library's statements ---------------------------------------------

-- ENQUEUE of one item: 'created' or 'existed' (G1).
CREATE FUNCTION iso.enqueue(p_item text, p_queue text DEFAULT 'q',
                            p_max integer DEFAULT 0)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN EXECUTE @STMT:ENQUEUE@
        USING ARRAY[p_item], ARRAY[p_queue],
              ARRAY[jsonb_build_object('item', p_item)], ARRAY[0],
              ARRAY[p_max], ARRAY[0::float8]
    LOOP
        n := n + 1;
    END LOOP;
    RETURN CASE WHEN n = 1 THEN 'created' ELSE 'existed' END;
END
$f$;

-- CLAIM for worker p_sess: the items granted, in the statement's order.
CREATE FUNCTION iso.claim(p_sess text, p_n integer DEFAULT 1,
                          p_queue text DEFAULT 'q',
                          p_lease float8 DEFAULT 60)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:CLAIM@ USING p_queue, p_n::bigint, p_sess, p_lease
    LOOP
        PERFORM iso.keep('claim', p_sess, r.item_id, r.token);
        got := got || format('%s (attempt %s)', r.item_id, r.attempt);
    END LOOP;
    RETURN 'granted ' || iso.list(got, false);
END
$f$;

-- COMPLETE with p_sess's token, as cl__parse_complete reads it.
CREATE FUNCTION iso.complete(p_sess text, p_item text)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    n integer;
    ex boolean;
BEGIN
    EXECUTE @STMT:COMPLETE@ INTO n, ex
        USING p_item, iso.tok('claim', p_sess, p_item),
              jsonb_build_object('by', p_sess);
    RETURN CASE WHEN n = 1 THEN 'completed'
                WHEN ex THEN 'already completed'
                ELSE 'lease lost' END;
END
$f$;

-- COMPLETE_MANY of the items with p_sess's tokens, in one statement, as
-- the worker's batch and cl_complete_many read it: each item's outcome,
-- in the order given.
CREATE FUNCTION iso.complete_many(p_sess text, VARIADIC p_items text[])
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
    toks text[] := ARRAY[]::text[];
    res jsonb[] := ARRAY[]::jsonb[];
    i integer := 0;
BEGIN
    FOR i IN 1 .. cardinality(p_items) LOOP
        toks := toks || iso.tok('claim', p_sess, p_items[i]);
        res := res || jsonb_build_object('by', p_sess);
    END LOOP;
    i := 0;
    FOR r IN EXECUTE @STMT:COMPLETE_MANY@ USING p_items, toks, res LOOP
        i := i + 1;
        got := got || format('%s %s', p_items[i],
                             CASE r.outcome WHEN 'ok' THEN 'completed'
                                            WHEN 'already' THEN 'already completed'
                                            ELSE 'lease lost' END);
    END LOOP;
    RETURN iso.list(got, false);
END
$f$;

-- COMPLETE_CHECK, the settling read of G9: does a result carry my token?
CREATE FUNCTION iso.complete_check(p_sess text, p_item text)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
BEGIN
    FOR r IN EXECUTE @STMT:COMPLETE_CHECK@
        USING p_item, iso.tok('claim', p_sess, p_item)
    LOOP
        RETURN 'my result is there';
    END LOOP;
    RETURN 'no result with my token';
END
$f$;

-- FAIL with p_sess's token, due again at once when retried.
CREATE FUNCTION iso.fail(p_sess text, p_item text,
                         p_retry boolean DEFAULT true)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    st text;
    att integer;
    due text;
    already boolean;
BEGIN
    EXECUTE @STMT:FAIL@ INTO st, att, due, already
        USING p_item, iso.tok('claim', p_sess, p_item),
              'failed by ' || p_sess, p_retry, 0::float8;
    IF st IS NULL THEN
        RETURN 'lease lost';
    END IF;
    RETURN format('%sfailed: %s, attempts %s',
                  CASE WHEN already THEN 'already ' ELSE '' END, st, att);
END
$f$;

-- HEARTBEAT (claimer heartbeat): the leases worker p_sess still holds.
CREATE FUNCTION iso.heartbeat(p_sess text, p_lease float8 DEFAULT 60)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:HEARTBEAT@ USING p_sess, p_lease LOOP
        got := got || format('%s (token of %s)', r.item_id, iso.who(r.token));
    END LOOP;
    RETURN 'holds ' || iso.list(got, false);
END
$f$;

-- REGISTER a worker daemon named p_sess (instance p_sess/1).
CREATE FUNCTION iso.register(p_sess text, p_heartbeat_s float8 DEFAULT 1)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    ok boolean;
    holder_host text;
    holder_pid text;
    holder_age text;
BEGIN
    EXECUTE @STMT:REGISTER@ INTO ok, holder_host, holder_pid, holder_age
        USING p_sess, 'iso-host', 1, 'iso', 1, ARRAY['q'], p_heartbeat_s,
              p_sess || '/1', false;
    RETURN CASE WHEN ok THEN 'registered' ELSE 'refused' END;
END
$f$;

-- WORKER_HEARTBEAT of the daemon p_sess: the leases it still holds, or
-- 'not registered' (a row of NULLs: the name is no longer this instance's).
CREATE FUNCTION iso.worker_heartbeat(p_sess text, p_lease float8 DEFAULT 60)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:WORKER_HEARTBEAT@
        USING p_sess, p_lease, p_sess || '/1', ARRAY[]::text[]
    LOOP
        IF r.item_id IS NULL THEN
            RETURN 'not registered';
        END IF;
        got := got || format('%s (token of %s)', r.item_id, iso.who(r.token));
    END LOOP;
    RETURN 'holds ' || iso.list(got, false);
END
$f$;

-- REAP of up to p_batch stale leases: each item, its new state, whose lease
-- it was and the alerts this reap raised.
CREATE FUNCTION iso.reap(p_batch integer DEFAULT 100)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:REAP@ USING p_batch::bigint LOOP
        got := got || format('%s -> %s (lease of %s%s%s)', r.item_id, r.state,
                             r.worker_id,
                             CASE WHEN r.expired IS NOT NULL
                                  THEN ', lease_expired raised' ELSE '' END,
                             CASE WHEN r.dead IS NOT NULL
                                  THEN ', item_dead raised' ELSE '' END);
    END LOOP;
    RETURN 'reaped ' || iso.list(got, true);
END
$f$;

-- REAP_WORKERS: workers silent for p_mult heartbeats.
CREATE FUNCTION iso.reap_workers(p_mult float8 DEFAULT 3,
                                 p_batch integer DEFAULT 100)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:REAP_WORKERS@ USING p_mult, p_batch LOOP
        got := got || format('%s (%s, %s leases released)', r.worker_id,
                             CASE WHEN r.alert IS NULL
                                  THEN 'worker_lost already open'
                                  ELSE 'worker_lost raised' END,
                             r.count);
    END LOOP;
    RETURN 'lost ' || iso.list(got, true);
END
$f$;

-- ALERT_OVERDUE with a default SLA of p_sla seconds.
CREATE FUNCTION iso.alert_overdue(p_sla float8 DEFAULT 3600,
                                  p_batch integer DEFAULT 100)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:ALERT_OVERDUE@
        USING p_sla, p_batch, ARRAY[]::text[], ARRAY[]::float8[]
    LOOP
        got := got || format('%s (%s)', r.item_id,
                             CASE WHEN r.raise_alert IS NULL
                                  THEN 'already open' ELSE 'raised' END);
    END LOOP;
    RETURN 'overdue ' || iso.list(got, true);
END
$f$;

-- RETAIN_DONE, one batch from the start: done items finished more than
-- p_keep_s seconds ago.
CREATE FUNCTION iso.retain_done(p_keep_s float8 DEFAULT 3600,
                                p_batch integer DEFAULT 100)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    deleted bigint;
    looked bigint;
    last_at text;
    last_id text;
BEGIN
    EXECUTE @STMT:RETAIN_DONE@ INTO deleted, looked, last_at, last_id
        USING p_keep_s, p_batch, '-infinity'::timestamptz, ''::text;
    RETURN format('retention deleted %s of %s done', deleted, looked);
END
$f$;

-- RETAIN_DEAD, one batch: dead items that died more than p_keep_s ago.
CREATE FUNCTION iso.retain_dead(p_keep_s float8 DEFAULT 3600,
                                p_batch integer DEFAULT 100)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:RETAIN_DEAD@ USING p_keep_s, p_batch LOOP
        got := got || r.item_id;
    END LOOP;
    RETURN 'retention deleted ' || iso.list(got, true);
END
$f$;

-- SUB_ADD: subscriber p_sub owed queue q from the beginning, with the
-- flow limits of 007.
CREATE FUNCTION iso.sub_add(p_sub text, p_concurrency integer DEFAULT 0,
                            p_ordering text DEFAULT 'none',
                            p_in_doubt text DEFAULT 'retry',
                            p_queues text[] DEFAULT ARRAY['q'])
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
BEGIN
    FOR r IN EXECUTE @STMT:SUB_ADD@
        USING p_sub, p_queues, 'beginning'::text, p_in_doubt, 10, 100,
              p_concurrency, 0::float8, p_ordering, NULL::float8[]
    LOOP
        RETURN 'added';
    END LOOP;
    RETURN 'existed';
END
$f$;

-- DELIVERY_CLAIM by sender p_sess: the deliveries granted, in order, and
-- 'come back shortly' for the row with no item (FIFO waiting for its
-- tick; this subscriber has no rate limit, the other cause).
CREATE FUNCTION iso.dclaim(p_sess text, p_sub text DEFAULT 'sub',
                           p_n integer DEFAULT 10, p_lease float8 DEFAULT 60)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:DELIVERY_CLAIM@ USING p_sub, p_n, p_lease, p_sess
    LOOP
        IF r.item_id IS NULL THEN
            got := got || 'nothing yet, come back shortly'::text;
        ELSE
            PERFORM iso.keep('delivery/' || p_sub, p_sess, r.item_id,
                             r.token);
            got := got || format('%s (attempt %s)', r.item_id, r.attempt);
        END IF;
    END LOOP;
    RETURN CASE WHEN got = ARRAY['nothing yet, come back shortly']
                THEN got[1] ELSE 'granted ' || iso.list(got, false) END;
END
$f$;

-- DELIVERY_SENT with p_sess's token, as cl_delivery_sent reads it.
CREATE FUNCTION iso.dsent(p_sess text, p_item text, p_sub text DEFAULT 'sub')
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    st text;
    did boolean;
BEGIN
    EXECUTE @STMT:DELIVERY_SENT@ INTO st, did
        USING p_sub, p_item, iso.tok('delivery/' || p_sub, p_sess, p_item);
    RETURN CASE WHEN st IS NULL THEN 'lease lost: nothing written'
                WHEN did THEN 'recorded ' || st
                ELSE 'already ' || st END;
END
$f$;

-- DELIVERY_REPLAY of p_sub from position 0: how many were sent again.
CREATE FUNCTION iso.replay(p_sub text DEFAULT 'sub')
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    n bigint := 0;
    r record;
BEGIN
    FOR r IN EXECUTE @STMT:DELIVERY_REPLAY@ USING p_sub, 0::bigint,
                                                  NULL::timestamptz
    LOOP
        n := n + 1;
    END LOOP;
    RETURN format('replayed %s', n);
END
$f$;

-- DELIVERY_FAIL with p_sess's token, due again after p_retry_in seconds.
CREATE FUNCTION iso.dfail(p_sess text, p_item text, p_sub text DEFAULT 'sub',
                          p_retry_in float8 DEFAULT 0)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    st text;
    nxt text;
    att integer;
    did boolean;
BEGIN
    EXECUTE @STMT:DELIVERY_FAIL@ INTO st, nxt, att, did
        USING p_sub, p_item, iso.tok('delivery/' || p_sub, p_sess, p_item),
              'failed by ' || p_sess, p_retry_in;
    RETURN CASE WHEN st IS NULL THEN 'lease lost: nothing written'
                ELSE format('%s %s, attempts %s',
                            CASE WHEN did THEN 'recorded' ELSE 'already' END,
                            st, att) END;
END
$f$;

-- DELIVERY_HEARTBEAT of sender p_sess over the tokens of p_sub's
-- deliveries it was granted (a sender serves one subscriber): the items it
-- still holds.
CREATE FUNCTION iso.dheartbeat(p_sess text, p_sub text DEFAULT 'sub',
                               p_lease float8 DEFAULT 60)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    got text[] := ARRAY[]::text[];
BEGIN
    FOR r IN EXECUTE @STMT:DELIVERY_HEARTBEAT@
        USING p_sess, p_lease,
              ARRAY(SELECT token FROM iso.tokens
                     WHERE kind = 'delivery/' || p_sub AND sess = p_sess)
    LOOP
        got := got || (SELECT item_id FROM iso.tokens
                        WHERE kind = 'delivery/' || p_sub
                          AND token = r.token);
    END LOOP;
    RETURN 'holds ' || iso.list(got, true);
END
$f$;

-- The clock -------------------------------------------------------------
-- Lease times are the database's (G6); a spec makes time pass for one row
-- instead of sleeping, by moving that row's times back.

-- p_item's lease ran out a minute ago.
CREATE FUNCTION iso.expire(p_item text) RETURNS text LANGUAGE sql AS $f$
    UPDATE claimer.claims SET lease_until = now() - interval '1 minute'
     WHERE item_id = p_item;
    SELECT 'the lease of ' || p_item || ' ran out'
$f$;

-- p_item's delivery to p_sub: its lease ran out p_ago ago.
CREATE FUNCTION iso.dexpire(p_item text, p_sub text DEFAULT 'sub',
                            p_ago interval DEFAULT '1 minute')
RETURNS text LANGUAGE sql AS $f$
    UPDATE claimer.deliveries SET lease_until = now() - p_ago
     WHERE subscriber = p_sub AND item_id = p_item;
    SELECT format('the lease of %s to %s ran out', p_item, p_sub)
$f$;

-- p_item was enqueued, and finished (if it did), p_ago earlier.
CREATE FUNCTION iso.age(p_item text, p_ago interval DEFAULT '2 hours')
RETURNS text LANGUAGE sql AS $f$
    UPDATE claimer.items SET enqueued_at = enqueued_at - p_ago,
                             run_at = run_at - p_ago,
                             finished_at = finished_at - p_ago
     WHERE item_id = p_item;
    SELECT format('%s is %s s older', p_item,
                  extract(epoch FROM p_ago)::bigint)
$f$;

-- Worker p_worker last heartbeated p_ago earlier.
CREATE FUNCTION iso.silence(p_worker text, p_ago interval DEFAULT '1 hour')
RETURNS text LANGUAGE sql AS $f$
    UPDATE claimer.workers SET heartbeat_at = heartbeat_at - p_ago
     WHERE worker_id = p_worker;
    SELECT format('%s has been silent for %s s', p_worker,
                  extract(epoch FROM p_ago)::bigint)
$f$;

-- Every lease runs until a minute from now (as if its holder had not been
-- late).
CREATE FUNCTION iso.renew() RETURNS text LANGUAGE sql AS $f$
    UPDATE claimer.claims SET lease_until = now() + interval '1 minute';
    SELECT 'the leases run another minute'
$f$;

-- What the tables say ---------------------------------------------------

-- Items, one line each: state (with the lease's holder, the attempt it
-- runs and whether it still runs), the attempts spent, and whose token
-- the result carries.
CREATE FUNCTION iso.items(VARIADIC p_items text[])
RETURNS SETOF text LANGUAGE sql STABLE AS $f$
    SELECT coalesce(
        (SELECT format('%s: %s%s, attempts %s, %s', i.item_id, i.state,
                       (SELECT format(' to %s (attempt %s, lease %s)',
                                      iso.who(c.token), c.attempt,
                                      CASE WHEN c.lease_until >= now()
                                           THEN 'live' ELSE 'expired' END)
                          FROM claimer.claims c WHERE c.item_id = i.item_id),
                       i.attempts,
                       coalesce((SELECT 'result by ' || iso.who(r.token)
                                   FROM claimer.results r
                                  WHERE r.item_id = i.item_id),
                                'no result'))
           FROM claimer.items i WHERE i.item_id = p.item_id),
        p.item_id || ': gone')
      FROM unnest(p_items) WITH ORDINALITY AS p(item_id, n)
     ORDER BY p.n
$f$;

-- Deliveries to p_sub, one line each: state (with the holder of a lease
-- and whether it still runs) and attempts.
CREATE FUNCTION iso.deliveries(p_sub text, VARIADIC p_items text[])
RETURNS SETOF text LANGUAGE sql STABLE AS $f$
    SELECT coalesce(
        (SELECT format('%s to %s: %s%s, attempts %s', d.item_id, d.subscriber,
                       d.state,
                       CASE WHEN d.state = 'sending'
                            THEN format(' by %s (lease %s)', iso.who(d.token),
                                        CASE WHEN d.lease_until >= now()
                                             THEN 'live' ELSE 'expired' END)
                            ELSE '' END,
                       d.attempts)
           FROM claimer.deliveries d
          WHERE d.subscriber = p_sub AND d.item_id = p.item_id),
        format('%s to %s: no delivery', p.item_id, p_sub))
      FROM unnest(p_items) WITH ORDINALITY AS p(item_id, n)
     ORDER BY p.n
$f$;

-- Every alert ever raised, as kind and subject (open or resolved), so a
-- second raise of one (kind, subject) would show twice.
CREATE FUNCTION iso.alerts() RETURNS text LANGUAGE sql STABLE AS $f$
    SELECT 'alerts: ' || coalesce(string_agg(kind || ' ' || subject, ', '
                                             ORDER BY kind, subject, alert_id),
                                  'none')
      FROM claimer.alerts
$f$;
