-- Managed materialized views: perf.manage_matview() keeps a view fresh; the scheduler's
-- worker refreshes it when a source changed (the result cache's change tracking), on a
-- schedule, or when it has been stale too long; never when nothing changed.
-- Written only through perf.manage_matview()/perf.unmanage_matview() (which check that the
-- caller owns the view), the scheduler and its runners, and the drop event trigger.

CREATE TABLE perf.matviews (
    view            oid PRIMARY KEY,
    -- The view's matview_refresh job in perf.jobs (its runs, retries and errors).
    jobid           bigint NOT NULL,
    schedule        text,
    timezone        text NOT NULL,
    on_change       boolean NOT NULL DEFAULT true,
    min_interval    interval NOT NULL DEFAULT '1 minute',
    max_staleness   interval,
    -- NULL: CONCURRENTLY when the view has a usable unique index, else plain.
    refresh_concurrently boolean,
    managed_since   timestamptz NOT NULL DEFAULT now(),
    last_refresh_at timestamptz,
    last_duration   interval,
    last_mode       text,
    mode_reason     text,
    refreshes       bigint NOT NULL DEFAULT 0,
    -- When the scheduler first saw a change not yet refreshed, and when it refreshes next.
    first_change_at timestamptz,
    next_refresh_at timestamptz,
    -- perf.track_instance() the sources' generations were recorded under.
    instance        bigint
);

-- Each view's sources and their change generations at its last refresh.
CREATE TABLE perf.matview_sources (
    view       oid NOT NULL REFERENCES perf.matviews ON DELETE CASCADE,
    source     oid NOT NULL,
    -- Writes to it are seen (tracking trigger, or a managed matview); if not, every
    -- check counts the view as changed.
    tracked    boolean NOT NULL,
    slot       integer,
    generation bigint,
    PRIMARY KEY (view, source)
);
SELECT pg_catalog.pg_extension_config_dump('perf.matviews', '');
SELECT pg_catalog.pg_extension_config_dump('perf.matview_sources', '');
REVOKE ALL ON perf.matviews, perf.matview_sources FROM PUBLIC;
GRANT SELECT ON perf.matviews, perf.matview_sources TO perf_reader;

-- Keeps a materialized view fresh: refreshed (as its owner) when a source changed and
-- min_interval passed (on_change), at the first `schedule` slot after a change (cron or
-- interval, in perf.scheduler_timezone or the session's TimeZone), or once a change is
-- max_staleness old; never when nothing changed. concurrently: NULL = CONCURRENTLY when
-- the view has a unique index without WHERE, true = require it, false = always plain.
-- Installs the change-tracking trigger on source tables that lack it (needs the right to
-- create triggers on them). Calling it again changes the settings.
CREATE FUNCTION perf.manage_matview(view regclass, schedule text DEFAULT NULL,
                                    on_change boolean DEFAULT true,
                                    min_interval interval DEFAULT '1 minute',
                                    max_staleness interval DEFAULT NULL,
                                    concurrently boolean DEFAULT NULL)
RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT perf.matview_manage_oid($1::oid, $2, $3, $4, $5, $6)
$$;

-- Stops refreshing a view (its job and state are removed; tracking triggers stay).
CREATE FUNCTION perf.unmanage_matview(view regclass)
RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT perf.matview_unmanage_oid($1::oid)
$$;

-- One row per managed view: when it was refreshed and how long it took, how many changes
-- its sources saw since (NULL: cannot tell, e.g. after a restart), whether it is stale,
-- when it refreshes next, how (concurrent/plain and why), and its last error.
CREATE VIEW perf.matview_status AS
SELECT m.view::regclass AS view,
       m.last_refresh_at AS last_refresh,
       m.last_duration,
       m.refreshes,
       ch.changes AS changes_since,
       (m.last_refresh_at IS NULL OR ch.changes IS NULL OR ch.changes > 0
        OR ch.untracked > 0 OR NOT c.relispopulated) AS stale,
       ch.untracked AS untracked_sources,
       m.first_change_at AS stale_since,
       m.next_refresh_at AS next_refresh,
       CASE WHEN m.refresh_concurrently IS FALSE OR NOT c.relispopulated OR ix.name IS NULL
            THEN 'plain' ELSE 'concurrent' END AS mode,
       CASE WHEN m.refresh_concurrently IS FALSE THEN 'concurrently => false'
            WHEN NOT c.relispopulated THEN 'not populated yet: the first refresh is plain'
            WHEN ix.name IS NULL THEN 'no unique index without WHERE on plain columns'
            ELSE 'unique index ' || ix.name END AS mode_reason,
       m.schedule,
       m.on_change,
       m.min_interval,
       m.max_staleness,
       j.name AS job,
       lr.status AS last_status,
       le.finished_at AS last_error_at,
       le.sqlstate AS last_sqlstate,
       le.error AS last_error,
       EXISTS (SELECT 1 FROM perf.job_runs a
                WHERE a.jobid = m.jobid AND a.status IN ('pending', 'running')) AS refreshing
  FROM perf.matviews m
  JOIN pg_catalog.pg_class c ON c.oid = m.view
  LEFT JOIN perf.jobs j ON j.jobid = m.jobid
  LEFT JOIN LATERAL (
      SELECT CASE WHEN m.instance IS DISTINCT FROM perf.track_instance()
                    OR bool_or(s.tracked AND (s.generation IS NULL
                                              OR perf.track_slot(s.source) IS DISTINCT FROM s.slot))
                  THEN NULL
                  ELSE coalesce(sum(perf.track_generation(s.source) - s.generation)
                                    FILTER (WHERE s.tracked), 0) END AS changes,
             count(*) FILTER (WHERE NOT s.tracked) AS untracked
        FROM perf.matview_sources s WHERE s.view = m.view) ch ON true
  LEFT JOIN LATERAL (
      SELECT i.indexrelid::regclass::text AS name FROM pg_catalog.pg_index i
       WHERE i.indrelid = m.view AND i.indisunique AND i.indisvalid AND i.indimmediate
         AND i.indpred IS NULL AND i.indexprs IS NULL
       ORDER BY i.indexrelid LIMIT 1) ix ON true
  LEFT JOIN LATERAL (SELECT r.status FROM perf.job_runs r
                      WHERE r.jobid = m.jobid AND r.status IN ('succeeded', 'failed')
                      ORDER BY r.runid DESC LIMIT 1) lr ON true
  LEFT JOIN LATERAL (SELECT r.finished_at, r.sqlstate, r.error FROM perf.job_runs r
                      WHERE r.jobid = m.jobid AND r.status = 'failed'
                      ORDER BY r.runid DESC LIMIT 1) le ON true
 WHERE pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
    OR pg_catalog.has_table_privilege(current_user, c.oid, 'SELECT');
REVOKE ALL ON perf.matview_status FROM PUBLIC;
GRANT SELECT ON perf.matview_status TO perf_reader;

-- Dropping a managed view removes its job and state (sql_drop event trigger).
CREATE FUNCTION perf.matview_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF to_regclass('perf.matviews') IS NOT NULL AND EXISTS (SELECT 1 FROM perf.matviews) THEN
        WITH gone AS (
            DELETE FROM perf.matviews m
             USING pg_catalog.pg_event_trigger_dropped_objects() d
             WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
               AND d.objid = m.view
            RETURNING m.jobid)
        DELETE FROM perf.jobs j USING gone WHERE j.jobid = gone.jobid;
    END IF;
    -- An incremental view (its table) or its source dropped, e.g. DROP TABLE ... CASCADE:
    -- its helper objects went with it (they depend on the view); the catalog row and the
    -- background apply job go now, instead of a job failing forever.
    IF to_regclass('perf.incremental_views') IS NOT NULL
       AND EXISTS (SELECT 1 FROM perf.incremental_views) THEN
        WITH gone AS (
            DELETE FROM perf.incremental_views i
             USING pg_catalog.pg_event_trigger_dropped_objects() d
             WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
               AND d.objid IN (i.view, i.source)
            RETURNING i.job)
        DELETE FROM perf.jobs j USING gone WHERE j.name = gone.job;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION perf.matview_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER pg_perf_matview_drop ON sql_drop
    EXECUTE FUNCTION perf.matview_dropped();
