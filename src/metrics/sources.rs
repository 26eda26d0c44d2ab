//! Where `perf.metrics()` reads from: catalog and statistics views, one query per source.
//! A source's query returns its label columns (text) first, then one float8 column per
//! metric family, in the order the families are listed. Names follow postgres_exporter
//! where it has one (so its dashboards work: `pg_stat_database_*`, `pg_stat_activity_*`,
//! `pg_replication_*`, `pg_locks_count`, `pg_database_size_bytes`, `pg_settings_*`); the rest
//! are `pg_perf_*`, and pg_perf's own counters end in `_total`.

use super::exposition::Kind;

/// One metric family filled from a column of a source's query.
pub struct Column {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

/// One query and the families its columns feed.
pub struct Source {
    pub labels: &'static [&'static str],
    pub columns: &'static [Column],
    pub sql: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Column {
    Column {
        name,
        help,
        kind: Kind::Counter,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Column {
    Column {
        name,
        help,
        kind: Kind::Gauge,
    }
}

/// Every catalog-backed source, in output order.
pub const SOURCES: &[Source] = &[
    Source {
        labels: &["datid", "datname"],
        columns: &[
            gauge(
                "pg_stat_database_numbackends",
                "Backends connected to this database.",
            ),
            counter("pg_stat_database_xact_commit", "Transactions committed."),
            counter(
                "pg_stat_database_xact_rollback",
                "Transactions rolled back.",
            ),
            counter("pg_stat_database_blks_read", "Disk blocks read."),
            counter("pg_stat_database_blks_hit", "Buffer cache hits."),
            counter("pg_stat_database_tup_returned", "Rows returned by queries."),
            counter("pg_stat_database_tup_fetched", "Rows fetched by queries."),
            counter("pg_stat_database_tup_inserted", "Rows inserted."),
            counter("pg_stat_database_tup_updated", "Rows updated."),
            counter("pg_stat_database_tup_deleted", "Rows deleted."),
            counter(
                "pg_stat_database_conflicts",
                "Queries canceled by recovery conflicts.",
            ),
            counter("pg_stat_database_temp_files", "Temporary files created."),
            counter(
                "pg_stat_database_temp_bytes",
                "Bytes written to temporary files.",
            ),
            counter("pg_stat_database_deadlocks", "Deadlocks detected."),
            counter(
                "pg_stat_database_blk_read_time",
                "Time spent reading blocks, ms.",
            ),
            counter(
                "pg_stat_database_blk_write_time",
                "Time spent writing blocks, ms.",
            ),
            gauge(
                "pg_perf_buffer_cache_hit_ratio",
                "Share of block reads served from shared buffers (NaN before any read).",
            ),
        ],
        sql: "SELECT datid::text, datname::text, numbackends, xact_commit, xact_rollback, \
              blks_read, blks_hit, tup_returned, tup_fetched, tup_inserted, tup_updated, \
              tup_deleted, conflicts, temp_files, temp_bytes, deadlocks, blk_read_time, \
              blk_write_time, \
              CASE WHEN blks_hit + blks_read > 0 \
                   THEN blks_hit::float8 / (blks_hit + blks_read) ELSE 'NaN' END \
              FROM pg_stat_database WHERE datname IS NOT NULL ORDER BY datid",
    },
    Source {
        labels: &["datname"],
        columns: &[
            gauge("pg_database_size_bytes", "Disk space used by the database."),
            gauge(
                "pg_perf_database_frozen_xid_age",
                "Transactions since the database's oldest unfrozen xid (wraparound at ~2.1e9).",
            ),
            gauge(
                "pg_perf_database_min_multixact_age",
                "Multixacts since the database's oldest unfrozen multixact.",
            ),
        ],
        sql: "SELECT datname::text, \
              CASE WHEN has_database_privilege(oid, 'CONNECT') \
                   THEN pg_database_size(oid)::float8 ELSE 'NaN'::float8 END, \
              age(datfrozenxid), mxid_age(datminmxid) \
              FROM pg_database WHERE datallowconn ORDER BY oid",
    },
    Source {
        labels: &["datname", "state"],
        columns: &[
            gauge(
                "pg_stat_activity_count",
                "Client connections by database and state.",
            ),
            gauge(
                "pg_stat_activity_max_tx_duration",
                "Age in seconds of the oldest open transaction, by database and state.",
            ),
            gauge(
                "pg_perf_activity_max_state_duration_seconds",
                "Seconds since the longest-waiting session entered its state.",
            ),
        ],
        sql: "SELECT coalesce(datname::text, ''), coalesce(state, 'unknown'), count(*), \
              coalesce(max(extract(epoch FROM now() - xact_start)), 0), \
              coalesce(max(extract(epoch FROM now() - state_change)), 0) \
              FROM pg_stat_activity WHERE backend_type = 'client backend' \
              GROUP BY 1, 2 ORDER BY 1, 2",
    },
    Source {
        labels: &[],
        columns: &[
            gauge(
                "pg_settings_max_connections",
                "The max_connections setting.",
            ),
            gauge(
                "pg_perf_connections_used_ratio",
                "Client connections over max_connections less superuser_reserved_connections.",
            ),
            gauge(
                "pg_replication_is_replica",
                "1 on a standby (in recovery), else 0.",
            ),
            gauge(
                "pg_replication_lag_seconds",
                "On a standby: seconds since the last replayed transaction committed on the \
                 primary, 0 when everything received is replayed. 0 on a primary.",
            ),
        ],
        sql: "SELECT current_setting('max_connections')::float8, \
              (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') \
                / greatest(1, current_setting('max_connections')::float8 \
                              - current_setting('superuser_reserved_connections')::float8), \
              pg_is_in_recovery()::int, \
              CASE WHEN NOT pg_is_in_recovery() THEN 0 \
                   WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                   ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) \
              END",
    },
    Source {
        labels: &["application_name", "client_addr", "state"],
        columns: &[
            gauge(
                "pg_stat_replication_pg_wal_lsn_diff",
                "Bytes of WAL the standby has not replayed yet.",
            ),
            gauge(
                "pg_perf_replication_write_lag_seconds",
                "The standby's write lag.",
            ),
            gauge(
                "pg_perf_replication_flush_lag_seconds",
                "The standby's flush lag.",
            ),
            gauge(
                "pg_perf_replication_replay_lag_seconds",
                "The standby's replay lag.",
            ),
        ],
        sql: "SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''), \
              coalesce(state, ''), \
              coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 'NaN'), \
              coalesce(extract(epoch FROM write_lag), 0), \
              coalesce(extract(epoch FROM flush_lag), 0), \
              coalesce(extract(epoch FROM replay_lag), 0) \
              FROM pg_stat_replication WHERE NOT pg_is_in_recovery() ORDER BY 1, 2",
    },
    Source {
        labels: &["datname", "mode"],
        columns: &[gauge("pg_locks_count", "Locks held or awaited, by mode.")],
        sql: "SELECT coalesce(d.datname::text, ''), l.mode, count(*) \
              FROM pg_locks l LEFT JOIN pg_database d ON d.oid = l.database \
              GROUP BY 1, 2 ORDER BY 1, 2",
    },
    Source {
        labels: &[],
        columns: &[
            counter(
                "pg_stat_bgwriter_checkpoints_timed_total",
                "Checkpoints started by checkpoint_timeout.",
            ),
            counter(
                "pg_stat_bgwriter_checkpoints_req_total",
                "Checkpoints requested (WAL volume, CHECKPOINT).",
            ),
            counter(
                "pg_stat_bgwriter_checkpoint_write_time_total",
                "Milliseconds spent writing checkpoint buffers.",
            ),
            counter(
                "pg_stat_bgwriter_checkpoint_sync_time_total",
                "Milliseconds spent syncing checkpoint files.",
            ),
            counter(
                "pg_stat_bgwriter_buffers_checkpoint_total",
                "Buffers written by checkpoints.",
            ),
            counter(
                "pg_stat_bgwriter_buffers_clean_total",
                "Buffers written by the background writer.",
            ),
            counter(
                "pg_stat_bgwriter_buffers_backend_total",
                "Buffers written directly by backends.",
            ),
            counter("pg_perf_wal_records_total", "WAL records generated."),
            counter("pg_perf_wal_bytes_total", "WAL bytes generated."),
            counter(
                "pg_perf_wal_buffers_full_total",
                "Times WAL was written because WAL buffers were full.",
            ),
        ],
        sql: "SELECT b.checkpoints_timed, b.checkpoints_req, b.checkpoint_write_time, \
              b.checkpoint_sync_time, b.buffers_checkpoint, b.buffers_clean, b.buffers_backend, \
              w.wal_records, w.wal_bytes, w.wal_buffers_full \
              FROM pg_stat_bgwriter b, pg_stat_wal w",
    },
    Source {
        labels: &["schemaname", "relname"],
        columns: &[
            gauge(
                "pg_perf_table_bloat_bytes",
                "Estimated bytes of dead rows (dead share of rows times table size); the 20 \
                 largest of this database.",
            ),
            gauge("pg_perf_table_dead_tuples", "Dead rows (n_dead_tup)."),
        ],
        sql: "SELECT schemaname::text, relname::text, bloat, n_dead_tup FROM ( \
                SELECT s.schemaname, s.relname, s.n_dead_tup, \
                       pg_relation_size(s.relid) * s.n_dead_tup::float8 \
                         / greatest(1, s.n_live_tup + s.n_dead_tup) AS bloat \
                FROM pg_stat_user_tables s WHERE s.n_dead_tup > 0) t \
              ORDER BY bloat DESC, 1, 2 LIMIT 20",
    },
    Source {
        labels: &["schemaname", "relname", "indexrelname"],
        columns: &[gauge(
            "pg_perf_index_bloat_bytes",
            "Estimated bytes a btree index would shrink by if rebuilt (size minus the ideal \
             size from reltuples and pg_stats widths at fillfactor 90); the 20 largest of \
             this database.",
        )],
        sql: "SELECT n.nspname::text, t.relname::text, i.relname::text, \
                     greatest(0, i.relpages - ideal) * current_setting('block_size')::float8 \
              FROM ( \
                SELECT x.indexrelid, x.indrelid, \
                       ceil(ic.reltuples * (12 + coalesce(( \
                           SELECT sum(coalesce(s.avg_width, 8)) FROM pg_attribute a \
                           LEFT JOIN pg_stats s ON s.schemaname = n2.nspname \
                                AND s.tablename = tc.relname AND s.attname = a.attname \
                           WHERE a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey)), 8)) \
                         / (current_setting('block_size')::float8 * 0.9 - 24)) + 1 AS ideal \
                FROM pg_index x \
                JOIN pg_class ic ON ic.oid = x.indexrelid \
                JOIN pg_class tc ON tc.oid = x.indrelid \
                JOIN pg_namespace n2 ON n2.oid = tc.relnamespace \
                JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree' \
                WHERE ic.relpages > 10 AND n2.nspname NOT IN ('pg_catalog', 'information_schema') \
                  AND n2.nspname NOT LIKE 'pg_toast%' \
              ) b \
              JOIN pg_class i ON i.oid = b.indexrelid \
              JOIN pg_class t ON t.oid = b.indrelid \
              JOIN pg_namespace n ON n.oid = t.relnamespace \
              WHERE i.relpages > ideal \
              ORDER BY 4 DESC, 1, 2, 3 LIMIT 20",
    },
    Source {
        labels: &["schemaname", "relname", "indexrelname"],
        columns: &[gauge(
            "pg_perf_invalid_index",
            "1 for each index left invalid (a failed CREATE INDEX CONCURRENTLY); drop or \
             REINDEX it.",
        )],
        sql: "SELECT n.nspname::text, t.relname::text, i.relname::text, 1 \
              FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
              JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
              WHERE NOT x.indisvalid ORDER BY 1, 2, 3",
    },
    Source {
        labels: &["job"],
        columns: &[
            gauge(
                "pg_perf_job_consecutive_failures",
                "Failed runs of the job since its last success (this database's jobs the \
                 caller may see).",
            ),
            gauge(
                "pg_perf_job_last_run_timestamp_seconds",
                "When the job's last run started (Unix time; NaN before its first).",
            ),
            gauge(
                "pg_perf_job_running",
                "1 while a run of the job is pending or running.",
            ),
        ],
        sql: "SELECT name, consecutive_failures, \
              coalesce(extract(epoch FROM last_run), 'NaN'), running::int \
              FROM perf.jobs_status ORDER BY name",
    },
    Source {
        labels: &["job", "status"],
        columns: &[gauge(
            "pg_perf_job_runs",
            "Runs kept in the job's history, by status (history is pruned by \
             perf.job_history_days and perf.job_history_max_rows, so this is no counter).",
        )],
        sql: "SELECT j.name, r.status, count(*) FROM perf.job_runs r \
              JOIN perf.jobs j USING (jobid) GROUP BY 1, 2 ORDER BY 1, 2",
    },
    Source {
        labels: &["parent"],
        columns: &[
            gauge(
                "pg_perf_partition_set_partitions",
                "Partitions of a managed partition set (default partition included).",
            ),
            gauge(
                "pg_perf_partition_set_bytes",
                "Total size of a set's partitions.",
            ),
            gauge(
                "pg_perf_partition_default_rows",
                "Rows sitting in the set's default partition (perf.partition_maintenance() \
                 moves them out).",
            ),
        ],
        sql: "SELECT s.parent::text, s.partitions, s.total_bytes, \
              coalesce((SELECT coalesce(p.rows_in_default, p.rows_estimate) FROM perf.partitions p \
                         WHERE p.parent = s.parent AND p.is_default), 0) \
              FROM perf.partition_sets s ORDER BY 1",
    },
    Source {
        labels: &["view"],
        columns: &[
            gauge(
                "pg_perf_matview_stale",
                "1 when a managed materialized view's sources changed since its last refresh.",
            ),
            gauge(
                "pg_perf_matview_stale_seconds",
                "Age of the oldest change a managed materialized view has not absorbed yet (0: fresh).",
            ),
            gauge(
                "pg_perf_matview_refreshes",
                "Refreshes pg_perf made of the view (kept in perf.matviews).",
            ),
        ],
        sql: "SELECT view::text, stale::int, \
              coalesce(CASE WHEN stale THEN extract(epoch FROM now() - stale_since) END, 0), \
              refreshes FROM perf.matview_status ORDER BY 1",
    },
    Source {
        labels: &[],
        columns: &[
            gauge("pg_perf_cache_entries", "Results held by the result cache."),
            gauge("pg_perf_cache_bytes", "Bytes of results held."),
            gauge("pg_perf_cache_capacity_bytes", "Bytes the cache may hold."),
            counter("pg_perf_cache_hits_total", "Calls served from the cache."),
            counter("pg_perf_cache_misses_total", "Calls that ran the query."),
            counter(
                "pg_perf_cache_evictions_total",
                "Entries evicted for space.",
            ),
            counter("pg_perf_cache_expirations_total", "Entries past their TTL."),
            counter(
                "pg_perf_cache_invalidations_total",
                "Entries dropped because a source table changed.",
            ),
            counter("pg_perf_cache_stores_total", "Results stored."),
            counter(
                "pg_perf_cache_refusals_total",
                "Calls that could not be cached (volatile, own writes, recovery, ...).",
            ),
            gauge(
                "pg_perf_cache_hit_ratio",
                "Hits over hits plus misses (NaN before any call).",
            ),
        ],
        sql: "SELECT entries, bytes, capacity_bytes, hits, misses, evictions, expirations, \
              invalidations, stores, refusals, coalesce(hit_ratio, 'NaN') \
              FROM perf.cache_stats()",
    },
];
