-- Result cache: tracked tables, the typed-rows wrapper, tracking functions.
-- See docs/cache-design.md for the guarantees.

-- Tables whose invalidation trigger is installed and enabled ALWAYS: the only tables cached
-- results may read. Derived from pg_trigger, so nothing but the table's owner (who alone can
-- create, drop, enable or disable its triggers) changes it; there is no state of its own
-- that another role could write.
CREATE VIEW perf.cache_tracked AS
SELECT g.tgrelid AS relid
  FROM pg_catalog.pg_trigger g
 WHERE g.tgname = 'pg_perf_cache_invalidate'
   AND g.tgfoid = 'perf.cache_invalidate_trigger()'::regprocedure
   AND g.tgenabled = 'A';
REVOKE ALL ON perf.cache_tracked FROM PUBLIC;
GRANT SELECT ON perf.cache_tracked TO PUBLIC;

-- Typed rows from the cache: SELECT * FROM perf.cached(NULL::orders, 'SELECT * FROM orders WHERE id = $1', '[42]')
CREATE FUNCTION perf.cached(rowtype anyelement, query text, params jsonb DEFAULT '[]',
                            ttl interval DEFAULT NULL)
RETURNS SETOF anyelement
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM jsonb_populate_recordset($1, perf.cached_json($2, $3, $4))
$$;

-- Drops cached results that depend on a relation; returns how many. Only the table's
-- owner (or a superuser) may: perf.cache_invalidate_oid() checks.
CREATE FUNCTION perf.cache_invalidate(rel regclass) RETURNS bigint
LANGUAGE sql VOLATILE STRICT AS $$ SELECT perf.cache_invalidate_oid($1::oid) $$;

-- Installs the invalidation trigger on a table (and all its partitions) so its results can
-- be cached. Idempotent; needs the right to create triggers on the table (its owner).
CREATE FUNCTION perf.cache_track(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r regclass;
    kind "char";
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf.cache_track()');
    IF rel IS NULL THEN
        RAISE EXCEPTION 'perf.cache_track: rel must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the table to track, e.g. perf.cache_track(''orders'').';
    END IF;
    SELECT relkind INTO kind FROM pg_catalog.pg_class WHERE oid = rel;
    IF rel::oid < 16384 OR (SELECT relnamespace = 'pg_catalog'::regnamespace
                              FROM pg_catalog.pg_class WHERE oid = rel) THEN
        RAISE EXCEPTION 'perf.cache_track: % is a system catalog', rel
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Only user tables can be cached.';
    END IF;
    IF (SELECT relpersistence FROM pg_catalog.pg_class WHERE oid = rel) <> 'p' THEN
        RAISE EXCEPTION 'perf.cache_track: % is a temporary or unlogged table', rel
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Results over temporary or unlogged tables are never cached.';
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'perf.cache_track: % is not a table', rel
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Track the tables a view reads; materialized, foreign and temporary tables cannot be cached.';
    END IF;
    FOR r IN SELECT relid FROM pg_catalog.pg_partition_tree(rel) WHERE relid IS NOT NULL
             UNION SELECT rel LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                        WHERE tgrelid = r AND tgname = 'pg_perf_cache_invalidate') THEN
            EXECUTE format('CREATE TRIGGER pg_perf_cache_invalidate
                              AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                              FOR EACH STATEMENT EXECUTE FUNCTION perf.cache_invalidate_trigger()', r);
        END IF;
        -- ALWAYS: also fires for logical replication apply (session_replication_role = replica).
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pg_perf_cache_invalidate', r);
    END LOOP;
END
$$;

-- Removes the invalidation trigger from a table and its partitions; results that depend on
-- it are dropped and it is no longer cached.
CREATE FUNCTION perf.cache_untrack(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r regclass;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf.cache_untrack()');
    IF rel IS NULL THEN
        RAISE EXCEPTION 'perf.cache_untrack: rel must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the table to stop tracking, e.g. perf.cache_untrack(''orders'').';
    END IF;
    FOR r IN SELECT relid FROM pg_catalog.pg_partition_tree(rel) WHERE relid IS NOT NULL
             UNION SELECT rel LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS pg_perf_cache_invalidate ON %s', r);
        PERFORM perf.cache_invalidate(r);
    END LOOP;
END
$$;

-- Application roles call the cache (and read their own statement statistics); tracking,
-- invalidating and flushing are for perf_admin, checked inside each function.
GRANT USAGE ON SCHEMA perf TO PUBLIC;
