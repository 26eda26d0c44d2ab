-- Indexes built from the advisor's suggestions, and what they did: perf.apply_index()
-- (src/advisor/apply.rs) writes these tables; perf.index_outcomes reads them back against
-- live statistics. Written only by perf.apply_index() and the job runner that builds the
-- index; PUBLIC may read them (no statement texts are stored here: texts come from
-- perf.query_stats(), with its visibility rule).

-- One row per perf.apply_index() call.
CREATE TABLE perf.index_applications (
    id                 bigserial PRIMARY KEY,
    ddl                text NOT NULL,          -- the statement as given
    command            text NOT NULL,          -- what runs (schema-qualified; CONCURRENTLY unless inline)
    table_oid          oid NOT NULL,
    schema_name        name NOT NULL,
    table_name         name NOT NULL,
    index_name         name NOT NULL,
    requested_by       oid NOT NULL,
    requested_at       timestamptz NOT NULL DEFAULT now(),
    mode               text NOT NULL CHECK (mode IN ('worker', 'inline')),
    jobid              bigint,                 -- perf.jobs (deleted once the build succeeded)
    runid              bigint,                 -- perf.job_runs
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'built', 'failed')),
    sqlstate           text,
    error              text,
    built_at           timestamptz,
    index_oid          oid,
    -- Statistics at build time, the baseline of everything "since the build".
    reads_at_start     bigint,                 -- table reads when the build started
    base_table_reads   bigint,                 -- seq_scan + idx_scan of the table's indexes
    base_index_scans   bigint,
    base_tup_ins       bigint,
    base_tup_upd       bigint,
    base_tup_hot_upd   bigint,
    base_tup_del       bigint
);
CREATE INDEX index_applications_runid ON perf.index_applications (runid);

-- The captured statements an application was meant to help (or whose writes it costs),
-- with their pg_perf counters when it was applied (before) and when the index was built.
CREATE TABLE perf.index_application_statements (
    application_id     bigint NOT NULL REFERENCES perf.index_applications ON DELETE CASCADE,
    queryid            bigint NOT NULL,
    relation           text NOT NULL CHECK (relation IN ('helped', 'filters', 'writes')),
    cost_before        float8,                 -- what-if planner estimates
    cost_after         float8,
    calls_before       bigint NOT NULL,
    total_ms_before    float8 NOT NULL,
    calls_at_build     bigint,
    total_ms_at_build  float8,
    PRIMARY KEY (application_id, queryid)
);

REVOKE ALL ON perf.index_applications, perf.index_application_statements FROM PUBLIC;
GRANT SELECT ON perf.index_applications, perf.index_application_statements TO perf_reader;
SELECT pg_catalog.pg_extension_config_dump('perf.index_applications', '');
SELECT pg_catalog.pg_extension_config_dump('perf.index_applications_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('perf.index_application_statements', '');

-- Per remembered statement of each applied index: mean latency before (pg_perf's counters
-- when perf.apply_index() was called) and after (the change of calls and total time since
-- the index was built), the measured gain and the time it saved (negative: it cost).
CREATE VIEW perf.index_outcome_statements WITH (security_invoker = true) AS
WITH cur AS (
    SELECT s.queryid,
           sum(s.calls)::bigint AS calls,
           sum(s.total_exec_time) AS total_ms,
           coalesce(max(s.query::text) FILTER (WHERE s.query::text <> '<insufficient privilege>'),
                    '<insufficient privilege>') AS query
      FROM perf.query_stats(true) s
     WHERE s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d
                      WHERE d.datname = pg_catalog.current_database())
     GROUP BY s.queryid
), m AS (
    SELECT a.id AS application_id, st.queryid, st.relation, cur.query,
           st.cost_before, st.cost_after,
           st.calls_before,
           st.total_ms_before / nullif(st.calls_before, 0) AS mean_ms_before,
           CASE WHEN a.status = 'built' AND cur.calls >= st.calls_at_build
                THEN cur.calls - st.calls_at_build END AS calls_after,
           CASE WHEN a.status = 'built' AND cur.calls >= st.calls_at_build
                THEN cur.total_ms - st.total_ms_at_build END AS total_ms_after
      FROM perf.index_applications a
      JOIN perf.index_application_statements st ON st.application_id = a.id
      LEFT JOIN cur ON cur.queryid = st.queryid
)
SELECT application_id, queryid, relation, query,
       round(100 * (cost_before - cost_after)::numeric / nullif(cost_before, 0)::numeric, 1)::float8
           AS estimated_gain_pct,
       calls_before, mean_ms_before,
       calls_after,
       total_ms_after / nullif(calls_after, 0) AS mean_ms_after,
       round(100 * (mean_ms_before - total_ms_after / nullif(calls_after, 0))::numeric
             / nullif(mean_ms_before, 0)::numeric, 1)::float8 AS gain_pct,
       CASE WHEN calls_after > 0 THEN calls_after * mean_ms_before - total_ms_after END AS saved_ms
  FROM m;
REVOKE ALL ON perf.index_outcome_statements FROM PUBLIC;
GRANT SELECT ON perf.index_outcome_statements TO perf_reader;

-- One row per perf.apply_index() call: the build's status, the index's size, scans and
-- write cost since the build, the measured latency of the statements it was meant to help
-- before and after, and a verdict. pays_off is false for an index that did not pay off
-- (never scanned while its table was read, or no gain); undo_ddl drops it.
CREATE VIEW perf.index_outcomes WITH (security_invoker = true) AS
WITH app AS (
    SELECT a.*,
           CASE WHEN a.status <> 'pending' THEN a.status
                WHEN r.status = 'running' THEN 'building'
                WHEN r.status = 'failed' THEN 'failed'
                ELSE 'pending' END AS state,
           coalesce(a.sqlstate, CASE WHEN a.status = 'pending' THEN r.sqlstate END) AS state_sqlstate,
           coalesce(a.error, CASE WHEN a.status = 'pending' THEN r.error END) AS state_error,
           coalesce(a.index_oid,
                    (SELECT c.oid FROM pg_catalog.pg_class c
                      WHERE c.relname = a.index_name AND c.relkind IN ('i', 'I')
                        AND c.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n
                                               WHERE n.nspname = a.schema_name))) AS ioid
      FROM perf.index_applications a
      LEFT JOIN perf.job_runs r ON r.runid = a.runid
), cur AS (
    SELECT app.*,
           i.indexrelid IS NOT NULL AS index_exists,
           i.indisvalid,
           pg_catalog.pg_relation_size(i.indexrelid) AS size_bytes,
           pg_catalog.pg_stat_get_numscans(i.indexrelid) - app.base_index_scans AS scans,
           pg_catalog.pg_stat_get_numscans(app.table_oid)
             + (SELECT coalesce(sum(pg_catalog.pg_stat_get_numscans(x.indexrelid)), 0)
                  FROM pg_catalog.pg_index x WHERE x.indrelid = app.table_oid)
             - app.base_table_reads AS table_reads,
           pg_catalog.pg_stat_get_tuples_inserted(app.table_oid) - app.base_tup_ins AS tup_ins,
           pg_catalog.pg_stat_get_tuples_updated(app.table_oid) - app.base_tup_upd AS tup_upd,
           pg_catalog.pg_stat_get_tuples_hot_updated(app.table_oid) - app.base_tup_hot_upd AS tup_hot_upd,
           pg_catalog.pg_stat_get_tuples_deleted(app.table_oid) - app.base_tup_del AS tup_del
      FROM app
      LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = app.ioid
), agg AS (
    SELECT o.application_id,
           count(*) AS statements,
           count(*) FILTER (WHERE o.relation <> 'writes' AND o.calls_after > 0) AS reads_run,
           sum(o.calls_after * o.mean_ms_before) FILTER (WHERE o.relation <> 'writes' AND o.calls_after > 0)
             / nullif(sum(o.calls_after) FILTER (WHERE o.relation <> 'writes' AND o.calls_after > 0), 0)
             AS mean_ms_before,
           sum(o.mean_ms_after * o.calls_after) FILTER (WHERE o.relation <> 'writes' AND o.calls_after > 0)
             / nullif(sum(o.calls_after) FILTER (WHERE o.relation <> 'writes' AND o.calls_after > 0), 0)
             AS mean_ms_after,
           sum(o.saved_ms) AS saved_ms
      FROM perf.index_outcome_statements o
     GROUP BY o.application_id
), v AS (
    SELECT cur.*, agg.statements, agg.reads_run, agg.mean_ms_before, agg.mean_ms_after,
           agg.saved_ms,
           round(100 * (agg.mean_ms_before - agg.mean_ms_after)::numeric
                 / nullif(agg.mean_ms_before, 0)::numeric, 1)::float8 AS gain_pct
      FROM cur LEFT JOIN agg ON agg.application_id = cur.id
), w AS (
    SELECT v.*,
           CASE
             WHEN v.state IN ('pending', 'building', 'failed') THEN v.state
             WHEN NOT v.index_exists THEN 'dropped'
             WHEN NOT v.indisvalid THEN 'invalid'
             WHEN v.scans = 0 AND (v.table_reads > 0 OR coalesce(v.reads_run, 0) > 0) THEN 'unused'
             WHEN v.scans = 0 THEN 'no data yet'
             WHEN coalesce(v.reads_run, 0) = 0 THEN 'used'
             WHEN coalesce(v.gain_pct, 0) < 10 OR coalesce(v.saved_ms, 0) <= 0 THEN 'no gain'
             ELSE 'pays off'
           END AS verdict
      FROM v
)
SELECT w.id,
       pg_catalog.quote_ident(coalesce(ns.nspname, w.schema_name)) || '.'
           || pg_catalog.quote_ident(coalesce(ic.relname, w.index_name)) AS index_name,
       pg_catalog.quote_ident(w.schema_name) || '.' || pg_catalog.quote_ident(w.table_name) AS table_name,
       w.requested_by::regrole AS requested_by,
       w.mode,
       w.state AS status,
       w.state_sqlstate AS sqlstate,
       w.state_error AS error,
       w.requested_at,
       w.built_at,
       w.indisvalid AS valid,
       w.size_bytes,
       pg_catalog.pg_size_pretty(w.size_bytes) AS size,
       w.scans AS idx_scan,
       w.table_reads,
       w.tup_ins + w.tup_upd + w.tup_del AS rows_written,
       w.tup_ins + w.tup_upd - w.tup_hot_upd AS index_entries_written,
       coalesce(w.statements, 0) AS statements,
       coalesce(w.reads_run, 0) AS statements_run,
       w.mean_ms_before,
       w.mean_ms_after,
       w.gain_pct,
       w.saved_ms,
       w.verdict,
       CASE WHEN w.verdict = 'pays off' THEN true
            WHEN w.verdict IN ('unused', 'no gain', 'failed', 'invalid') THEN false END AS pays_off,
       CASE WHEN w.index_exists THEN
            'DROP INDEX CONCURRENTLY IF EXISTS ' || pg_catalog.quote_ident(ns.nspname) || '.'
            || pg_catalog.quote_ident(ic.relname) END AS undo_ddl
  FROM w
  LEFT JOIN pg_catalog.pg_class ic ON ic.oid = w.ioid AND w.index_exists
  LEFT JOIN pg_catalog.pg_namespace ns ON ns.oid = ic.relnamespace;
REVOKE ALL ON perf.index_outcomes FROM PUBLIC;
GRANT SELECT ON perf.index_outcomes TO perf_reader;
