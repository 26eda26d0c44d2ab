-- Managed materialized views' SQL surface: perf.manage_matview()/unmanage_matview(),
-- validation with SQLSTATEs (nothing created on refusal), perf.matview_status columns that
-- do not depend on the worker's timing, the refresh job, and clean-up on DROP.
SET TimeZone = 'UTC';
SET IntervalStyle = 'postgres';
SET perf.scheduler_timezone = 'UTC';
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || CASE WHEN hint <> '' THEN E'\nHINT: ' || hint ELSE '' END;
END $$;
CREATE TABLE mv_src (id int PRIMARY KEY, g int NOT NULL, v int NOT NULL);
INSERT INTO mv_src SELECT i, i % 3, i FROM generate_series(1, 30) i;
CREATE VIEW mv_plain_view AS SELECT g, v FROM mv_src;
CREATE MATERIALIZED VIEW mv_by_g AS SELECT g, sum(v) AS s FROM mv_plain_view GROUP BY g;
CREATE MATERIALIZED VIEW mv_on_mv AS SELECT sum(s) AS total FROM mv_by_g;
CREATE TEMP TABLE mv_tmp (x int);
-- bad input
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_src')$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_plain_view')$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_tmp')$$);
SELECT pg_temp.try($$SELECT perf.manage_matview(NULL)$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_by_g', concurrently => true)$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_by_g', on_change => false)$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_by_g', schedule => '61 * * * *')$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_by_g', schedule => '@never')$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_by_g', min_interval => '-1 second')$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_by_g', max_staleness => '0 seconds')$$);
SELECT pg_temp.try($$SELECT perf.manage_matview('mv_by_g', min_interval => NULL)$$);
SELECT pg_temp.try($$SELECT perf.unmanage_matview('mv_by_g')$$);
SELECT pg_temp.try($$SELECT perf.schedule('x', '@daily', '1', kind => 'matview_refresh')$$);
SELECT count(*) AS matviews FROM perf.matviews;
SELECT count(*) AS jobs FROM perf.jobs WHERE kind = 'matview_refresh';
-- managing: the tracking trigger lands on the table read through the plain view
SELECT count(*) AS tracked_before FROM perf.cache_tracked WHERE relid = 'mv_src'::regclass;
SELECT perf.manage_matview('mv_by_g', schedule => '@hourly', min_interval => '1 hour');
SELECT perf.manage_matview('mv_on_mv', on_change => false, max_staleness => '1 day');
SELECT count(*) AS tracked_after FROM perf.cache_tracked WHERE relid = 'mv_src'::regclass;
SELECT view::regclass, source::regclass, tracked FROM perf.matview_sources ORDER BY 1, 2;
SELECT name, schedule, command::oid::regclass AS command, kind, retries, backoff, enabled,
       owner::regrole
  FROM perf.jobs WHERE kind = 'matview_refresh' ORDER BY name;
SELECT view, mode, mode_reason, schedule, on_change, min_interval, max_staleness, job
  FROM perf.matview_status ORDER BY view::text;
-- a usable unique index makes it concurrent; a partial one does not
CREATE UNIQUE INDEX mv_by_g_partial ON mv_by_g (g) WHERE g > 0;
SELECT mode, mode_reason FROM perf.matview_status WHERE view = 'mv_by_g'::regclass;
CREATE UNIQUE INDEX mv_by_g_g ON mv_by_g (g);
SELECT mode, mode_reason FROM perf.matview_status WHERE view = 'mv_by_g'::regclass;
-- managing again changes the settings, keeps the job
SELECT perf.manage_matview('mv_by_g', concurrently => true, min_interval => '5 minutes');
SELECT count(*) AS jobs, min(name) AS name FROM perf.jobs WHERE name = 'matview:mv_by_g';
SELECT min_interval, schedule, refresh_concurrently FROM perf.matviews
 WHERE view = 'mv_by_g'::regclass;
-- unmanage, then DROP cleans up
SELECT perf.unmanage_matview('mv_on_mv');
SELECT view::regclass FROM perf.matviews ORDER BY 1;
DROP MATERIALIZED VIEW mv_on_mv;
DROP MATERIALIZED VIEW mv_by_g;
SELECT count(*) AS matviews, (SELECT count(*) FROM perf.matview_sources) AS sources,
       (SELECT count(*) FROM perf.jobs WHERE kind = 'matview_refresh') AS jobs FROM perf.matviews;
SELECT perf.cache_untrack('mv_src');
DROP VIEW mv_plain_view;
DROP TABLE mv_src;
