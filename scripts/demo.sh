#!/usr/bin/env bash
# The pg_perf demo: installs what is missing, builds and installs pg_perf, starts a cluster
# with pgrx-config/, loads a sample shop schema and workload, and prints what pg_perf found.
# Usage: scripts/demo.sh            (leaves the demo cluster running on port $DEMO_PORT)
#        scripts/demo.sh stop       (stops it)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

if [ "${1:-}" = stop ]; then
    bash scripts/cluster.sh stop demo "$DEMO_PORT"
    exit 0
fi

bash scripts/install-deps.sh
bash scripts/install-ext.sh
bash scripts/cluster.sh restart demo "$DEMO_PORT" 2>/dev/null || bash scripts/cluster.sh start demo "$DEMO_PORT"

q() { psql_at "$DEMO_PORT" -d pg_perf_demo "$@"; }
psql_at "$DEMO_PORT" -d postgres -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS pg_perf_demo WITH (FORCE)" -c "CREATE DATABASE pg_perf_demo"
q -q -c "CREATE EXTENSION pg_perf"

log "loading the sample schema (customers 50k, orders 400k, events 200k)"
q -q -f demo/schema.sql
q -q -c "SELECT perf.reset_stats()" >/dev/null
log "running the sample workload (about 500 statements)"
q -q -f demo/workload.sql >/dev/null

section() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
section "pg_perf configuration: SELECT name, value, unit FROM perf.settings()"
q -c "SELECT name, value, unit FROM perf.settings()"

section "Slow-query report: SELECT * FROM perf.slow_queries(8)"
q -c "SELECT queryid, left(query, 70) AS query, calls, round(total_time_ms::numeric, 1) AS total_ms,
             round(mean_time_ms::numeric, 2) AS mean_ms, round(p95_time_ms::numeric, 2) AS p95_ms,
             round(pct_of_db_time::numeric, 1) AS pct, plan_captured
        FROM perf.slow_queries(20) WHERE query !~ 'perf\.' LIMIT 8"

section "Why is the worst statement slow? SELECT * FROM perf.why_slow(<queryid>)"
worst=$(q -At -c "SELECT queryid FROM perf.slow_queries(20) WHERE query ~* '^select' AND query !~ 'perf\.'
                  ORDER BY plan_captured DESC, total_time_ms DESC LIMIT 1")
q -At -c "SELECT query FROM perf.slow_queries(20) WHERE queryid = $worst"
q -c "SELECT severity, finding, node, detail, suggestion FROM perf.why_slow($worst)"

section "What the workload filters on (input of the index advisor): SELECT * FROM perf.predicate_stats"
q -c "SELECT relation, columns, operators, kind, queries, calls, round(total_time_ms::numeric, 1) AS total_ms,
             round(avg_est_selectivity::numeric, 4) AS selectivity
        FROM perf.predicate_stats LIMIT 12"

section "Index health: SELECT * FROM perf.duplicate_indexes() / perf.unused_indexes()"
q -c "SELECT index, covered_by, reason FROM perf.duplicate_indexes()"
q -c "SELECT index, pg_size_pretty(index_bytes) AS size, drop_ddl FROM perf.unused_indexes()"

section "Result cache: perf.cache_track('orders'), then the same report twice through perf.cached_json()"
q -q -c "SELECT perf.cache_track('orders'); SELECT perf.cache_track('customers')" >/dev/null
report="SELECT c.country, count(*) AS orders, sum(o.total_cents) AS cents FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 1"
q -c "\\timing on" -c "SELECT jsonb_array_length(perf.cached_json('$report')) AS rows_first_call" \
  -c "SELECT jsonb_array_length(perf.cached_json('$report')) AS rows_second_call" | grep -E "rows|Time| [0-9]"
q -c "SELECT entries, hits, misses, stores, round(hit_ratio::numeric, 2) AS hit_ratio FROM perf.cache_stats()"

section "What-if: would an index help the worst statements? SELECT * FROM perf.whatif(query, ARRAY['CREATE INDEX ...'])"
q -c "SELECT 'status = failed' AS statement, round(cost_before) AS cost_before, round(cost_after) AS cost_after,
             round(improvement_pct) AS pct, indexes_used
        FROM perf.whatif('SELECT count(*) FROM orders WHERE status = ''failed''',
                         ARRAY['CREATE INDEX ON orders (status) WHERE status = ''failed'''])
      UNION ALL
      SELECT 'lower(email) lookup', round(cost_before), round(cost_after), round(improvement_pct), indexes_used
        FROM perf.whatif('SELECT id, country FROM customers WHERE lower(email) = \$1',
                         ARRAY['CREATE INDEX ON customers (lower(email))'])
      UNION ALL
      SELECT 'events @> partner', round(cost_before), round(cost_after), round(improvement_pct), indexes_used
        FROM perf.whatif('SELECT count(*) FROM events WHERE payload @> ''{\"source\": \"partner\"}''',
                         ARRAY['CREATE INDEX ON events USING gin (payload jsonb_path_ops)'])"
q -c "SELECT pg_size_pretty(bytes) AS partial_index_size FROM perf.whatif_index_size('CREATE INDEX ON orders (status) WHERE status = ''failed''')"

section "Index suggestions: SELECT * FROM perf.suggest_indexes()"
q -c "SELECT action, index_ddl, pg_size_pretty(estimated_size) AS size, round(improvement_pct::numeric, 1) AS pct,
             jsonb_array_length(queries_helped) AS queries
        FROM perf.suggest_indexes()"
q -At -c "SELECT 'workload cost (sum of calls x plan cost): ' || round(workload_cost_before::numeric) || ' now, '
                 || round(workload_cost_after::numeric) || ' with all suggestions'
            FROM perf.suggest_indexes() LIMIT 1"

section "Applying the suggestions and running the same workload again"
before_ms=$(q -At -c "SELECT round(sum(total_time_ms)::numeric, 1) FROM perf.slow_queries(1000)
                       WHERE query ~* '^(select|update)' AND query !~ 'perf\.'")
q -At -c "SELECT index_ddl FROM perf.suggest_indexes() WHERE action = 'create'" | while read -r ddl; do
    echo "  $ddl"
    q -q -c "$ddl"
done
q -q -c "ANALYZE" -c "SELECT perf.reset_stats()" >/dev/null
q -q -f demo/workload.sql >/dev/null
after_ms=$(q -At -c "SELECT round(sum(total_time_ms)::numeric, 1) FROM perf.slow_queries(1000)
                      WHERE query ~* '^(select|update)' AND query !~ 'perf\.'")
echo "workload execution time: ${before_ms} ms before, ${after_ms} ms after applying the suggestions"

section "Scheduler: a nightly maintenance job, its plan, and a job run now"
q -q -c "SELECT perf.unschedule(name) FROM perf.jobs" >/dev/null
q -c "SELECT perf.schedule('maintenance', '0 3 * * *', '', kind => 'maintenance',
                           window_start => '01:00', window_end => '05:00') AS jobid"
# A table with half its rows deleted since its last VACUUM, so the plan has work to show.
# (Separate sessions: each flushes its table statistics when it ends.)
q -q -c "DROP TABLE IF EXISTS demo_events" \
     -c "CREATE TABLE demo_events AS SELECT g AS id, now() AS at FROM generate_series(1, 20000) g" >/dev/null 2>&1
q -q -c "VACUUM ANALYZE demo_events"
q -q -c "DELETE FROM demo_events WHERE id % 2 = 0" >/dev/null
sleep 1
q -c "SELECT action, object, reason, runs_now FROM perf.maintenance_plan()"
q -q -c "SELECT perf.schedule('analyze-orders', '1 day', 'ANALYZE orders')" -c "SELECT perf.run_job('analyze-orders')" >/dev/null
sleep 1
q -c "SELECT name, schedule, next_run, last_status, last_run FROM perf.jobs_status ORDER BY name"
section "A dashboard that stays fresh: perf.manage_matview('country_revenue') while orders are written"
q -q -c "CREATE MATERIALIZED VIEW country_revenue AS
           SELECT c.country, count(*) AS orders, sum(o.total_cents) AS cents
             FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1" \
     -c "CREATE UNIQUE INDEX ON country_revenue (country)"
q -c "SELECT perf.manage_matview('country_revenue', min_interval => '1 second')"
sleep 2
for batch in 1 2 3; do
    q -q -c "INSERT INTO orders SELECT max_id + g, 1 + g % 50000, 'paid', 1000, now()
               FROM (SELECT max(id) AS max_id FROM orders) m, generate_series(1, 1000) g"
    sleep 1.5
    q -At -c "SELECT 'after batch $batch: ' || sum(orders) || ' orders on the dashboard, ' ||
                     (SELECT count(*) FROM orders) || ' in orders' FROM country_revenue"
done
q -c "SELECT view, last_refresh, last_duration, refreshes, changes_since, stale, mode, mode_reason
        FROM perf.matview_status"
section "Partitioning events by week (converted in place): perf.partition_table('events', 'created_at', '1 week')"
q -q -c "ALTER TABLE events DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (id, created_at)"
q -c "SELECT action, count(*) AS objects, max(detail) AS detail FROM perf.partition_table('events', 'created_at', '1 week') GROUP BY 1"
q -c "SELECT partition, bounds, rows_estimate, size, is_default, rows_in_default FROM perf.partitions
       WHERE parent = 'events'::regclass ORDER BY is_default, partition LIMIT 14"
q -c "SELECT * FROM perf.partition_maintenance('events')"
# Settings change later; the next maintenance (every perf.partition_interval) applies them.
q -q -c "DO \$\$ BEGIN PERFORM perf.alter_partition_set('events', premake => 8, retention => '2 years', retention_mode => 'detach'); END \$\$"
q -c "SELECT parent, \"interval\", premake, retention, retention_mode, partitions FROM perf.partition_sets"

cat <<MSG

The demo cluster keeps running: psql -h 127.0.0.1 -p $DEMO_PORT -U postgres pg_perf_demo
Stop it with: bash scripts/demo.sh stop
MSG
