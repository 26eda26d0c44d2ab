-- Incremental views (src/ivm): the catalog and the SQL functions that apply pending changes.
-- perf.create_incremental_view()/perf.drop_incremental_view() (Rust) write the catalog;
-- PUBLIC may read it.

CREATE TABLE perf.incremental_views (
    view              regclass PRIMARY KEY,
    source            regclass NOT NULL,
    owner             oid NOT NULL,
    query             text NOT NULL,
    -- The view's helper objects (in the view's schema, owned by its creator).
    log               regclass NOT NULL,
    apply             regprocedure NOT NULL,
    trigger_functions regprocedure[] NOT NULL,
    -- A plain view of the query: keeps the source's columns from being dropped or retyped.
    guard             regclass,
    -- The perf.jobs job that applies changes in the background (NULL: none).
    job               text,
    created_at        timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('perf.incremental_views', '');
REVOKE ALL ON perf.incremental_views FROM PUBLIC;
GRANT SELECT ON perf.incremental_views TO PUBLIC;  -- like pg_views: definitions are not secret

-- Applies the changes logged since the last apply (all of them, as one batch) and returns
-- how many log rows it consumed; with wait => false it returns -1 at once when another
-- session is applying. Needs SELECT on the view; the work runs as the view's owner.
CREATE FUNCTION perf.refresh_incremental(view regclass, wait boolean DEFAULT true)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    n bigint;
BEGIN
    IF view IS NULL OR wait IS NULL THEN
        RAISE EXCEPTION 'view and wait must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT i.apply INTO f FROM perf.incremental_views i WHERE i.view = refresh_incremental.view;
    IF NOT FOUND THEN
        RAISE EXCEPTION '"%" is not an incremental view', view USING ERRCODE = '42809',
              HINT = 'SELECT view FROM perf.incremental_views lists the incremental views.';
    END IF;
    IF NOT has_table_privilege(view, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for incremental view %', view USING ERRCODE = '42501',
              HINT = 'Applying changes needs SELECT on the view.';
    END IF;
    EXECUTE 'SELECT ' || f::oid::regproc::text || '($1)' INTO n USING wait;
    RETURN n;
END $$;

-- Makes the view current before a read: applies pending changes (waiting for a concurrent
-- apply) and returns the number of log rows applied. Call it as its own statement before
-- reading the view in the same transaction.
CREATE FUNCTION perf.fresh(view regclass) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ SELECT perf.refresh_incremental(view, true) $$;

-- Pending changes per incremental view (log rows not applied yet, as this session sees them).
CREATE FUNCTION perf.incremental_pending(view regclass) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE l regclass; n bigint;
BEGIN
    SELECT i.log INTO l FROM perf.incremental_views i WHERE i.view = incremental_pending.view;
    IF l IS NULL OR NOT has_table_privilege(l, 'SELECT') THEN RETURN NULL; END IF;
    EXECUTE 'SELECT count(*) FROM ' || l::text INTO n;
    RETURN n;
END $$;
