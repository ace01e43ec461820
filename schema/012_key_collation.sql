-- 012_key_collation: the key columns compare as bytes (COLLATE "C").
--
-- Item ids, queue names, worker names and tokens are identifiers, not
-- words, yet they took the database's collation: every B-tree step on
-- items_pkey, items_ready, claims_pkey, claims_worker and results_pkey
-- compared two of them through strcoll() (a profile of the claim and the
-- complete at batch 100 on a C.UTF-8 database: about a tenth of the
-- server's CPU in varstr_cmp, strcoll and their locale lookups; an
-- en_US.UTF-8 database pays more).  With COLLATE "C" a comparison is a
-- memcmp().  It also takes the indexes on these columns out of reach of a
-- C library upgrade that changes a locale's sort order (which silently
-- corrupts such indexes until they are rebuilt).  What changes for a
-- reader: ORDER BY on these columns sorts by bytes (code points, for
-- UTF-8), the same on every server.
--
-- The columns' indexes are rebuilt (the tables themselves are not
-- rewritten: the type stays text) under an exclusive lock, so on a large
-- history this migration takes as long as building those indexes.  The
-- views over these columns are dropped and made again from their own
-- definitions, with their owner, comment and grants (a dashboard role's
-- SELECT survives).
DO $$
DECLARE
  v record;
  saved jsonb := '[]';
  s jsonb;
  g jsonb;
BEGIN
  FOR v IN
    SELECT c.oid, c.relname, pg_get_viewdef(c.oid) AS def,
           pg_get_userbyid(c.relowner) AS owner,
           obj_description(c.oid, 'pg_class') AS comment,
           array_to_string(c.reloptions, ', ') AS options,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                     ELSE quote_ident(pg_get_userbyid(a.grantee))
                                END,
                     'privilege', a.privilege_type,
                     'grantable', a.is_grantable)), '[]')
              FROM aclexplode(c.relacl) a
             WHERE a.grantee <> c.relowner) AS grants
      FROM pg_class c
     WHERE c.relnamespace = 'claimer'::regnamespace AND c.relkind = 'v'
     ORDER BY c.oid
  LOOP
    saved := saved || jsonb_build_object('name', v.relname, 'def', v.def,
               'owner', v.owner, 'comment', v.comment, 'options', v.options,
               'grants', v.grants);
  END LOOP;
  FOR s IN SELECT * FROM jsonb_array_elements(saved) LOOP
    EXECUTE format('DROP VIEW IF EXISTS claimer.%I CASCADE', s->>'name');
  END LOOP;

  ALTER TABLE claimer.items
      ALTER COLUMN item_id TYPE text COLLATE "C",
      ALTER COLUMN queue TYPE text COLLATE "C";
  ALTER TABLE claimer.claims
      ALTER COLUMN item_id TYPE text COLLATE "C",
      ALTER COLUMN queue TYPE text COLLATE "C",
      ALTER COLUMN worker_id TYPE text COLLATE "C",
      ALTER COLUMN token TYPE text COLLATE "C";
  ALTER TABLE claimer.results
      ALTER COLUMN item_id TYPE text COLLATE "C",
      ALTER COLUMN queue TYPE text COLLATE "C",
      ALTER COLUMN token TYPE text COLLATE "C",
      ALTER COLUMN worker_id TYPE text COLLATE "C";
  ALTER TABLE claimer.deliveries
      ALTER COLUMN item_id TYPE text COLLATE "C";
  ALTER TABLE claimer.workers
      ALTER COLUMN worker_id TYPE text COLLATE "C";

  FOR s IN SELECT * FROM jsonb_array_elements(saved) LOOP
    EXECUTE format('CREATE VIEW claimer.%I%s AS %s', s->>'name',
                   CASE WHEN s->>'options' IS NULL THEN ''
                        ELSE ' WITH (' || (s->>'options') || ')' END,
                   s->>'def');
    IF s->>'owner' <> current_user THEN
      EXECUTE format('ALTER VIEW claimer.%I OWNER TO %I', s->>'name',
                     s->>'owner');
    END IF;
    IF s->>'comment' IS NOT NULL THEN
      EXECUTE format('COMMENT ON VIEW claimer.%I IS %L', s->>'name',
                     s->>'comment');
    END IF;
    FOR g IN SELECT * FROM jsonb_array_elements(s->'grants') LOOP
      EXECUTE format('GRANT %s ON claimer.%I TO %s%s', g->>'privilege',
                     s->>'name', g->>'grantee',
                     CASE WHEN (g->>'grantable')::boolean
                          THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
  END LOOP;
END
$$;
