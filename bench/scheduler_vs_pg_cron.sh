#!/usr/bin/env bash
# pg_perf's scheduler vs pg_cron, side by side in one cluster (both preloaded, pg_cron with
# cron.use_background_workers = on), in four phases (~6 min in all):
#
#  1. idle CPU: 100 jobs each, none due during the phase (once a year); user+system CPU
#     of pg_cron's launcher and of pg_perf's launcher + scheduler over 60 s (/proc/PID/stat).
#  2. '1 second' jobs (pg_perf only: pg_cron 1.4.2 has no seconds schedules) for S seconds,
#     with perf.job_history_max_rows off: start latency, drift, history rows and bytes per
#     hour; then perf.job_history_max_rows = 100 and the history it leaves.
#  3. minute jobs: K jobs each; pg_cron's on '* * * * *' (due at :00), pg_perf's on
#     '30 * * * * *' (cron with a seconds field, due at :30) so the two never start
#     processes at the same moment and disturb each other; 3 boundaries each (3K runs).
#  4. history bytes per row of both.
#
# Start latency = when the job's command ran (its INSERT of clock_timestamp(), measured the
# same way for both) minus when it was due. Also for pg_perf: job_runs.started_at −
# scheduled_for (its own record). Drift = due slots off anchor + k × interval, and the
# latency of the last runs vs the first.
#
# Needs pg_cron 1.4 in $PG_CONFIG's tree (pg_cron.so + extension files, e.g. from Debian's
# postgresql-15-cron). Usage: bench/scheduler_vs_pg_cron.sh [K=34] [S=100]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
cd "$REPO_ROOT"
K=${1:-34}
S=${2:-100}
PORT=${CRONBENCH_PORT:-$((TEST_PORT + 7))}
NAME=cronbench
[ -f "$($PG_CONFIG --pkglibdir)/pg_cron.so" ] || die "pg_cron is not installed for $PG_CONFIG"

data="$PERF_ROOT/$NAME"
# A fresh cluster each run: pg_cron's launcher attaches to cron.database_name at start.
bash scripts/cluster.sh stop "$NAME" "$PORT" >/dev/null 2>&1 || true
rm -rf "$data"
bash scripts/cluster.sh start "$NAME" "$PORT" >/dev/null
printf "%s\n" "shared_preload_libraries = 'pg_perf,pg_cron'" "cron.database_name = 'bench'" \
    "cron.use_background_workers = on" "cron.max_running_jobs = $((K + 8))" \
    "max_worker_processes = $((K + 24))" "perf.max_job_workers = $((K + 8))" \
    "perf.job_history_max_rows = 0" "perf.job_history_days = 0" \
    | as_postgres tee "$data/pg_perf.conf.d/zz-cronbench.conf" >/dev/null
bash scripts/cluster.sh restart "$NAME" "$PORT" >/dev/null
q() { psql_at "$PORT" "$@"; }
q -d postgres -q -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
q -d bench -q -c "CREATE EXTENSION pg_perf" -c "CREATE EXTENSION pg_cron" \
    -c "CREATE TABLE hits (who text, job int, at timestamptz)"
for _ in $(seq 1 120); do
    up=$(q -d bench -At -c "SELECT count(DISTINCT backend_type) FROM pg_stat_activity
                             WHERE datname = 'bench' AND backend_type IN ('pg_cron launcher', 'pg_perf scheduler')")
    [ "$up" = 2 ] && break
    sleep 1
done
[ "$up" = 2 ] || die "pg_cron or pg_perf did not start a scheduler in database bench"
pids() { q -d bench -At -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type IN ($1)"; }
ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

# 1. Idle CPU with 100 jobs each.
log "phase 1: idle CPU, 100 jobs each, 60 s"
q -d bench -q -c "SELECT cron.schedule('idle' || i, '0 3 1 1 *', 'SELECT 1') FROM generate_series(1, 100) i" \
    -c "SELECT perf.schedule('idle' || i, '0 3 1 1 *', 'SELECT 1', timezone => 'UTC') FROM generate_series(1, 100) i" >/dev/null
sleep 2
cron_p=$(pids "'pg_cron launcher'")
perf_p=$(pids "'pg_perf launcher', 'pg_perf scheduler'")
c0=$(ticks "$cron_p"); p0=$(ticks "$perf_p")
sleep 60
c1=$(ticks "$cron_p"); p1=$(ticks "$perf_p")
hz=$(getconf CLK_TCK)
idle_cron_ms=$(( (c1 - c0) * 1000 / hz )); idle_perf_ms=$(( (p1 - p0) * 1000 / hz ))

# 2. '1 second' jobs, pg_perf only.
log "phase 2: a '1 second' job (pg_perf; pg_cron 1.4.2 has none), $S s"
sz0=$(q -d bench -At -c "SELECT pg_total_relation_size('perf.job_runs')")
q -d bench -q -c "SELECT perf.schedule('sec', '1 second', 'INSERT INTO hits SELECT ''sec'', 0, clock_timestamp()')" >/dev/null
sleep "$S"
q -d bench -q -c "SELECT perf.alter_job('sec', enabled => false)" >/dev/null
sleep 1
q -d bench -X -q -c "VACUUM perf.job_runs"
sec=$(q -d bench -At -F ' ' <<'SQL'
WITH j AS (SELECT jobid, schedule_since AS anchor FROM perf.jobs WHERE name = 'sec'),
h AS (SELECT extract(epoch FROM h.at - j.anchor) AS s FROM hits h, j WHERE h.who = 'sec'),
cmd AS (SELECT (s - floor(s)) * 1000 AS ms, row_number() OVER (ORDER BY s) AS k, count(*) OVER () AS n FROM h),
r AS (SELECT extract(epoch FROM r.started_at - r.scheduled_for) * 1000 AS ms,
             abs(extract(epoch FROM r.scheduled_for - j.anchor) - round(extract(epoch FROM r.scheduled_for - j.anchor))) * 1000 AS off_ms,
             r.queued_at < r.scheduled_for AS ahead
        FROM perf.job_runs r JOIN j USING (jobid) WHERE r.status = 'succeeded')
SELECT (SELECT count(*) FROM cmd),
       round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM cmd)::numeric, 2),
       round((SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM cmd)::numeric, 2),
       round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM r)::numeric, 2),
       round((SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM r)::numeric, 2),
       round((SELECT max(off_ms) FROM r)::numeric, 3),
       round((SELECT avg(ms) FROM cmd WHERE k <= 10)::numeric, 2),
       round((SELECT avg(ms) FROM cmd WHERE k > n - 10)::numeric, 2),
       (SELECT count(*) FILTER (WHERE ahead) || '/' || count(*) FROM r),
       (SELECT count(*) FROM perf.job_runs r JOIN j USING (jobid))
SQL
)
read -r sec_n sec_p50 sec_p99 sec_rec_p50 sec_rec_p99 sec_off sec_first sec_last sec_ahead sec_rows <<<"$sec"
sz1=$(q -d bench -At -c "SELECT pg_total_relation_size('perf.job_runs')")
# Bounded history: perf.job_history_max_rows = 100, reload, one housekeeping pass.
printf "%s\n" "perf.job_history_max_rows = 100" "perf.worker_naptime = 1" \
    | as_postgres tee "$data/pg_perf.conf.d/zz-cronbench-bound.conf" >/dev/null
q -d bench -q -c "SELECT pg_reload_conf()" >/dev/null
sleep 3
bounded=$(q -d bench -At -c "SELECT count(*) FROM perf.job_runs")

# 3. Minute jobs, K each: pg_cron at :00, pg_perf at :30.
log "phase 3: $K minute jobs each, 3 boundaries each"
q -d bench -q -c "SELECT cron.schedule('c' || i, '* * * * *', format('INSERT INTO hits SELECT ''cron'', %s, clock_timestamp()', i)) FROM generate_series(1, $K) i" \
    -c "SELECT perf.schedule('p' || i, '30 * * * * *', format('INSERT INTO hits SELECT ''perf'', %s, clock_timestamp()', i), timezone => 'UTC') FROM generate_series(1, $K) i" >/dev/null
for _ in $(seq 1 300); do
    n=$(q -d bench -At -c "SELECT least(count(*) FILTER (WHERE who = 'cron'), count(*) FILTER (WHERE who = 'perf')) FROM hits")
    [ "$n" -ge $((3 * K)) ] && break
    sleep 1
done
q -d bench -q -c "SELECT cron.unschedule(jobid) FROM cron.job" -c "SELECT perf.alter_job(name, enabled => false) FROM perf.jobs" >/dev/null
sleep 2
min=$(q -d bench -At -F ' ' <<'SQL'
WITH h AS (SELECT who, extract(epoch FROM at - date_trunc('minute', at)) * 1000
                       - CASE who WHEN 'perf' THEN 30000 ELSE 0 END AS ms
             FROM hits WHERE who IN ('cron', 'perf')),
s AS (SELECT who, count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 FROM h GROUP BY who),
r AS (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
        FROM (SELECT extract(epoch FROM started_at - scheduled_for) * 1000 AS ms
                FROM perf.job_runs r JOIN perf.jobs j USING (jobid)
               WHERE j.name LIKE 'p%' AND r.status = 'succeeded') x)
SELECT c.n, round(c.p50::numeric, 2), round(c.p99::numeric, 2),
       p.n, round(p.p50::numeric, 2), round(p.p99::numeric, 2),
       round(r.p50::numeric, 2), round(r.p99::numeric, 2),
       round((p.p50 / nullif(c.p50, 0))::numeric, 3), round((p.p99 / nullif(c.p99, 0))::numeric, 3)
  FROM s c, s p, r WHERE c.who = 'cron' AND p.who = 'perf'
SQL
)
read -r cron_n cron_p50 cron_p99 perf_n perf_p50 perf_p99 rec_p50 rec_p99 r50 r99 <<<"$min"

# 4. History bytes per row.
q -d bench -X -q -c "VACUUM cron.job_run_details"
hist=$(q -d bench -At -F ' ' -c "SELECT count(*), pg_total_relation_size('cron.job_run_details') FROM cron.job_run_details")
read -r cron_rows cron_bytes <<<"$hist"

per_row=$(( (sz1 - sz0) / (sec_rows > 0 ? sec_rows : 1) ))
cat <<EOF

== start latency after the due time (ms; command's clock_timestamp() − due) ==
minute jobs ($K each, 3 boundaries): pg_cron n=$cron_n p50=$cron_p50 p99=$cron_p99 | pg_perf n=$perf_n p50=$perf_p50 p99=$perf_p99
  ratio pg_perf/pg_cron: p50 $r50, p99 $r99
  pg_perf's own record (started_at − scheduled_for): p50=$rec_p50 p99=$rec_p99
'1 second' job (pg_perf only; pg_cron 1.4.2 has no seconds schedules): n=$sec_n p50=$sec_p50 p99=$sec_p99
  own record: p50=$sec_rec_p50 p99=$sec_rec_p99; runners started ahead of the slot: $sec_ahead
== drift ('1 second' job) ==
  max distance of a slot from anchor + k s: $sec_off ms; mean latency first 10 runs $sec_first ms, last 10 $sec_last ms
== history ==
  pg_perf: $sec_rows rows for $sec_n runs, ~$per_row bytes/row (job_runs + indexes) -> a '1 second' job adds $((3600 * per_row / 1024)) kB/hour unbounded;
           with perf.job_history_max_rows = 100: $bounded rows left
  pg_cron: $cron_rows rows, ~$(( cron_bytes / (cron_rows > 0 ? cron_rows : 1) )) bytes/row (job_run_details + indexes), never pruned
== idle CPU over 60 s, 100 jobs each (user+system) ==
  pg_cron launcher: ${idle_cron_ms} ms | pg_perf launcher + scheduler: ${idle_perf_ms} ms
EOF
bash scripts/cluster.sh stop "$NAME" "$PORT" >/dev/null
