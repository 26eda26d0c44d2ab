#!/usr/bin/env bash
# Job start latency and drift, pg_perf's scheduler vs pg_cron, side by side in one cluster:
# both preloaded, K jobs each on the same '* * * * *' schedule (pg_cron 1.4 has no seconds),
# running `SELECT 1` for M minutes. Latency = when a run started minus the minute it was due
# (pg_perf: job_runs.started_at - scheduled_for; pg_cron: job_run_details.start_time - the
# minute). Reported as ratios (bench/README.md), plus whether any run was due off the minute
# (drift). Both run jobs in background workers (cron.use_background_workers = on).
#
# Needs pg_cron installed in $PG_CONFIG's tree (postgresql-15-cron's pg_cron.so and
# extension files). Usage: bench/scheduler_vs_pg_cron.sh [K=8] [M=3]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
cd "$REPO_ROOT"
K=${1:-8}
M=${2:-3}
PORT=${CRONBENCH_PORT:-$((TEST_PORT + 7))}
NAME=cronbench
[ -f "$($PG_CONFIG --pkglibdir)/pg_cron.so" ] || die "pg_cron is not installed for $PG_CONFIG"

data="$PERF_ROOT/$NAME"
# A fresh cluster each run: pg_cron's launcher attaches to cron.database_name at start.
bash scripts/cluster.sh stop "$NAME" "$PORT" >/dev/null 2>&1 || true
rm -rf "$data"
bash scripts/cluster.sh start "$NAME" "$PORT" >/dev/null
printf "%s\n" "shared_preload_libraries = 'pg_perf,pg_cron'" "cron.database_name = 'bench'" \
    "cron.use_background_workers = on" "max_worker_processes = 48" \
    "perf.max_job_workers = 32" | as_postgres tee "$data/pg_perf.conf.d/zz-cronbench.conf" >/dev/null
bash scripts/cluster.sh restart "$NAME" "$PORT" >/dev/null
q() { psql_at "$PORT" "$@"; }
q -d postgres -q -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
q -d bench -q -c "CREATE EXTENSION pg_perf" -c "CREATE EXTENSION pg_cron"
# Both schedulers must be up before the measured minutes start.
for _ in $(seq 1 120); do
    up=$(q -d bench -At -c "SELECT count(DISTINCT backend_type) FROM pg_stat_activity
                             WHERE datname = 'bench' AND backend_type IN ('pg_cron launcher', 'pg_perf scheduler')")
    [ "$up" = 2 ] && break
    sleep 1
done
[ "$up" = 2 ] || die "pg_cron or pg_perf did not start a scheduler in database bench"
# Start on a minute boundary + 5 s so every measured minute has both schedulers set up.
sleep $((65 - $(date +%S | sed 's/^0//')))
q -d bench -q -c "SELECT cron.schedule('c' || i, '* * * * *', 'SELECT 1') FROM generate_series(1, $K) i" \
    -c "SELECT perf.schedule('p' || i, '* * * * *', 'SELECT 1', timezone => 'UTC') FROM generate_series(1, $K) i" >/dev/null
log "measuring $M minutes with $K jobs each"
sleep $((M * 60 + 10))
q -d bench -q -c "SELECT cron.unschedule(jobid) FROM cron.job" -c "SELECT perf.alter_job(name, enabled => false) FROM perf.jobs" >/dev/null
q -d bench -X <<'SQL'
WITH perf AS (
    SELECT extract(epoch FROM started_at - scheduled_for) * 1000 AS ms,
           scheduled_for <> date_trunc('minute', scheduled_for) AS off_minute
      FROM perf.job_runs WHERE status = 'succeeded' AND trigger = 'schedule'),
cron AS (
    SELECT extract(epoch FROM start_time - date_trunc('minute', start_time)) * 1000 AS ms
      FROM cron.job_run_details WHERE status = 'succeeded'),
p AS (SELECT count(*) AS n,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
             bool_or(off_minute) AS drift FROM perf),
c AS (SELECT count(*) AS n,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 FROM cron)
SELECT p.n AS pg_perf_runs, c.n AS pg_cron_runs,
       round((p.p50 / nullif(c.p50, 0))::numeric, 3) AS p50_latency_ratio_perf_over_cron,
       round((p.p99 / nullif(c.p99, 0))::numeric, 3) AS p99_latency_ratio_perf_over_cron,
       p.drift AS pg_perf_ran_off_its_slot
  FROM p, c;
SQL
bash scripts/cluster.sh stop "$NAME" "$PORT" >/dev/null
