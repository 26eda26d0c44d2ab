-- perf.health(): one row per check, judged against the perf.health_* thresholds.
-- status is ok, warn or critical; value is what was measured (NULL when there is nothing to
-- judge yet); threshold is the level that was crossed (the warn level when none was).

CREATE FUNCTION perf._health_status(value float8, warn float8, critical float8, higher_is_worse bool)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN value IS NULL THEN 'ok'
        WHEN higher_is_worse AND value >= critical THEN 'critical'
        WHEN higher_is_worse AND value >= warn THEN 'warn'
        WHEN NOT higher_is_worse AND value < critical THEN 'critical'
        WHEN NOT higher_is_worse AND value < warn THEN 'warn'
        ELSE 'ok' END
$$;

CREATE FUNCTION perf.health()
RETURNS TABLE (check_name text, status text, value float8, threshold float8, advice text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v float8;
    w float8;
    c float8;
    detail text;
    st text;
BEGIN
    PERFORM perf._require_role('perf_reader', 'perf.health()');
    -- Buffer cache hit ratio of this database (judged once 1,000 blocks were requested).
    SELECT CASE WHEN blks_hit + blks_read >= 1000 THEN blks_hit::float8 / (blks_hit + blks_read) END
      INTO v FROM pg_stat_database WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database());
    w := current_setting('perf.health_cache_hit_ratio_warn')::float8;
    c := current_setting('perf.health_cache_hit_ratio_critical')::float8;
    st := perf._health_status(v, w, c, false);
    RETURN QUERY SELECT 'cache_hit_ratio', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN v IS NULL THEN 'Fewer than 1,000 block requests since the statistics were reset: nothing to judge yet.'
             WHEN st = 'ok' THEN 'Reads are served from shared buffers.'
             ELSE format('Only %s%% of block requests hit shared buffers: raise shared_buffers (now %s) if the working set should fit, or find the statements reading the most blocks: SELECT * FROM perf.slow_queries(order_by => ''io'').',
                         round((v * 100)::numeric, 2), current_setting('shared_buffers')) END;

    -- Connections in use over what applications may use.
    SELECT count(*)::float8 / greatest(1, current_setting('max_connections')::float8
                                          - current_setting('superuser_reserved_connections')::float8)
      INTO v FROM pg_stat_activity WHERE backend_type = 'client backend';
    w := current_setting('perf.health_connections_warn')::float8;
    c := current_setting('perf.health_connections_critical')::float8;
    st := perf._health_status(v, w, c, true);
    RETURN QUERY SELECT 'connection_utilization', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'Connection slots are available.'
             ELSE format('%s%% of usable connections are in use (max_connections = %s): put a pooler (PgBouncer) in front or find idle sessions in pg_stat_activity.',
                         round((v * 100)::numeric, 1), current_setting('max_connections')) END;

    -- Share of this database's executions slower than perf.slow_query_ms (from 100 calls on).
    SELECT CASE WHEN sum(calls) >= 100 THEN sum(slow_calls)::float8 / sum(calls) END INTO v
      FROM perf.query_stats(false) WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database());
    w := current_setting('perf.health_slow_rate_warn')::float8;
    c := current_setting('perf.health_slow_rate_critical')::float8;
    st := perf._health_status(v, w, c, true);
    RETURN QUERY SELECT 'slow_query_rate', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN v IS NULL THEN 'Fewer than 100 statements recorded in this database: nothing to judge yet.'
             WHEN st = 'ok' THEN 'Few executions exceed perf.slow_query_ms.'
             ELSE format('%s%% of executions took longer than perf.slow_query_ms (%s ms): see SELECT * FROM perf.slow_queries(order_by => ''slow_calls'') and perf.why_slow(queryid), and SELECT * FROM perf.suggest_indexes().',
                         round((v * 100)::numeric, 2), current_setting('perf.slow_query_ms')) END;

    -- Oldest transaction that is not idle in transaction.
    SELECT max(extract(epoch FROM now() - xact_start)), (array_agg(pid ORDER BY xact_start))[1]::text
      INTO v, detail FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND xact_start IS NOT NULL
       AND state NOT IN ('idle in transaction', 'idle in transaction (aborted)') AND pid <> pg_backend_pid();
    w := current_setting('perf.health_long_transaction_warn_s')::float8;
    c := current_setting('perf.health_long_transaction_critical_s')::float8;
    st := perf._health_status(v, w, c, true);
    RETURN QUERY SELECT 'long_transaction', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'No transaction has run long.'
             ELSE format('Backend %s has been in one transaction for %s s: it holds back VACUUM everywhere. Check it in pg_stat_activity; SELECT pg_cancel_backend(%s) ends its query.',
                         detail, round(v::numeric), detail) END;

    -- Sessions idle inside an open transaction.
    SELECT max(extract(epoch FROM now() - state_change)), (array_agg(pid ORDER BY state_change))[1]::text
      INTO v, detail FROM pg_stat_activity
     WHERE state IN ('idle in transaction', 'idle in transaction (aborted)');
    w := current_setting('perf.health_idle_in_transaction_warn_s')::float8;
    c := current_setting('perf.health_idle_in_transaction_critical_s')::float8;
    st := perf._health_status(v, w, c, true);
    RETURN QUERY SELECT 'idle_in_transaction', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'No session sits idle inside a transaction.'
             ELSE format('Backend %s has been idle in transaction for %s s, holding its locks and snapshot: fix the application (commit or roll back), set idle_in_transaction_session_timeout, or SELECT pg_terminate_backend(%s).',
                         detail, round(v::numeric), detail) END;

    -- Replication lag: on a standby its own replay delay, on a primary its slowest standby's.
    IF pg_is_in_recovery() THEN
        SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                    ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END INTO v;
        detail := 'this standby';
    ELSE
        SELECT max(extract(epoch FROM replay_lag)), string_agg(DISTINCT application_name, ', ')
          INTO v, detail FROM pg_stat_replication;
    END IF;
    w := current_setting('perf.health_replication_lag_warn_s')::float8;
    c := current_setting('perf.health_replication_lag_critical_s')::float8;
    st := perf._health_status(v, w, c, true);
    RETURN QUERY SELECT 'replication_lag', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN v IS NULL THEN 'No standby is streaming from this server.'
             WHEN st = 'ok' THEN 'Standbys keep up.'
             ELSE format('Replay on %s is %s s behind: check the standby''s I/O, long queries there holding replay back (max_standby_streaming_delay), and the network.',
                         detail, round(v::numeric)) END;

    -- Transaction id and multixact wraparound, as a share of the 2^31 horizon.
    SELECT max(greatest(age(datfrozenxid), mxid_age(datminmxid)))::float8 / 2147483648,
           (array_agg(datname::text ORDER BY greatest(age(datfrozenxid), mxid_age(datminmxid)) DESC))[1]
      INTO v, detail FROM pg_database WHERE datallowconn;
    w := current_setting('perf.health_wraparound_warn')::float8;
    c := current_setting('perf.health_wraparound_critical')::float8;
    st := perf._health_status(v, w, c, true);
    RETURN QUERY SELECT 'xid_wraparound', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'Transaction ids are far from wraparound.'
             ELSE format('Database %s has used %s%% of the xid/multixact horizon: VACUUM (FREEZE) its oldest tables (ORDER BY age(relfrozenxid) DESC in pg_class) and look for what blocks autovacuum (long transactions, prepared transactions, replication slots).',
                         detail, round((v * 100)::numeric, 1)) END;

    -- Dead rows: the worst table over 8 MB of this database.
    SELECT s.n_dead_tup::float8 / greatest(1, s.n_live_tup + s.n_dead_tup), format('%I.%I', s.schemaname, s.relname)
      INTO v, detail FROM pg_stat_user_tables s
     WHERE pg_relation_size(s.relid) > 8 * 1024 * 1024
     ORDER BY 1 DESC LIMIT 1;
    w := current_setting('perf.health_dead_rows_warn')::float8;
    c := current_setting('perf.health_dead_rows_critical')::float8;
    st := perf._health_status(v, w, c, true);
    RETURN QUERY SELECT 'table_bloat', st, v, CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'No large table carries many dead rows.'
             ELSE format('%s%% of the rows of %s are dead: VACUUM %s, and check why autovacuum falls behind (long transactions, autovacuum_vacuum_scale_factor for large tables).',
                         round((v * 100)::numeric, 1), detail, detail) END;

    -- Jobs of this database that keep failing (those the caller may see).
    SELECT max(consecutive_failures)::float8,
           (array_agg(format('%s (%s: %s)', name, last_sqlstate, left(last_error, 200)) ORDER BY consecutive_failures DESC))[1]
      INTO v, detail FROM perf.jobs_status WHERE consecutive_failures > 0;
    w := current_setting('perf.health_failing_jobs_warn')::float8;
    c := current_setting('perf.health_failing_jobs_critical')::float8;
    st := perf._health_status(coalesce(v, 0), w, c, true);
    RETURN QUERY SELECT 'failing_jobs', st, coalesce(v, 0), CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'No scheduled job is failing.'
             ELSE format('Job %s has failed %s times in a row: see SELECT * FROM perf.job_runs WHERE status = ''failed'' ORDER BY runid DESC, fix the command or perf.alter_job(...).',
                         detail, v::int) END;

    -- Rows piling up in the default partitions of managed partition sets.
    SELECT max(coalesce(p.rows_in_default, p.rows_estimate))::float8,
           (array_agg(p.parent::text ORDER BY coalesce(p.rows_in_default, p.rows_estimate) DESC))[1]
      INTO v, detail FROM perf.partitions p WHERE p.is_default;
    w := current_setting('perf.health_default_partition_rows_warn')::float8;
    c := current_setting('perf.health_default_partition_rows_critical')::float8;
    st := perf._health_status(coalesce(v, 0), w, c, true);
    RETURN QUERY SELECT 'default_partition_rows', st, coalesce(v, 0), CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'No rows wait in a managed default partition.'
             ELSE format('%s rows sit in the default partition of %s (scans of the set read them all, and a new partition for their range cannot be attached until they move): SELECT * FROM perf.partition_maintenance(%L) moves them into proper partitions; schedule it with kind => ''partition_maintenance''.',
                         v::bigint, detail, detail) END;

    -- Managed materialized views whose sources changed long ago and that were not refreshed
    -- (a failing refresh, a long min_interval or schedule, the worker off).
    SELECT max(extract(epoch FROM now() - m.stale_since))::float8,
           (array_agg(m.view::text ORDER BY m.stale_since))[1]
      INTO v, detail FROM perf.matview_status m WHERE m.stale AND m.stale_since IS NOT NULL;
    w := current_setting('perf.health_matview_stale_warn_s')::float8;
    c := current_setting('perf.health_matview_stale_critical_s')::float8;
    st := perf._health_status(coalesce(v, 0), w, c, true);
    RETURN QUERY SELECT 'stale_matviews', st, coalesce(v, 0), CASE st WHEN 'critical' THEN c ELSE w END,
        CASE WHEN st = 'ok' THEN 'Every managed materialized view absorbed its changes in time.'
             ELSE format('%s has not absorbed a change made %s s ago: see SELECT * FROM perf.matview_status (last_status, last_error); fix the error, lower min_interval, or check perf.worker_enabled.',
                         detail, v::bigint) END;

    -- Indexes left invalid by a failed CREATE INDEX CONCURRENTLY / REINDEX CONCURRENTLY.
    SELECT count(*)::float8, string_agg(x.indexrelid::regclass::text, ', ' ORDER BY x.indexrelid::regclass::text)
      INTO v, detail FROM pg_index x WHERE NOT x.indisvalid;
    st := perf._health_status(v, 1, 1, true);
    RETURN QUERY SELECT 'invalid_indexes', st, v, 1::float8,
        CASE WHEN st = 'ok' THEN 'No index is left invalid.'
             ELSE format('Invalid indexes (they cost writes and help no read): %s. DROP INDEX CONCURRENTLY or REINDEX INDEX CONCURRENTLY each.', detail) END;
END
$$;
