#!/usr/bin/env bash
# Cost of a scrape: perf.metrics() and perf.health() on a database with 10,000 tables (each
# with a primary-key index) and 5,000 distinct recorded statements (issue #15's bar: a
# metrics() call returns in < 1 s). Uses its own throwaway cluster (default port 55490).
# Usage: bench/metrics_bench.sh [tables] [statements]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
cd "$REPO_ROOT"
TABLES=${1:-10000}
STATEMENTS=${2:-5000}
PORT=${METRICS_BENCH_PORT:-55490}
NAME=metrics-bench

bash scripts/install-ext.sh --release
bash scripts/cluster.sh destroy "$NAME" "$PORT" 2>/dev/null || true
bash scripts/cluster.sh start "$NAME" "$PORT"
trap 'bash scripts/cluster.sh destroy "$NAME" "$PORT" >/dev/null 2>&1 || true' EXIT
q() { psql_at "$PORT" -d bench -qAt "$@"; }
psql_at "$PORT" -d postgres -qc "CREATE DATABASE bench"
q -c "CREATE EXTENSION pg_perf"
log "creating $TABLES tables"
for ((start = 1; start <= TABLES; start += 1000)); do
    q -c "DO \$\$ BEGIN FOR i IN $start..$((start + 999 < TABLES ? start + 999 : TABLES)) LOOP
            EXECUTE format('CREATE TABLE t_%s (id int PRIMARY KEY, v int)', i);
          END LOOP; END \$\$"
done
log "running $STATEMENTS distinct statements"
for ((i = 1; i <= STATEMENTS; i++)); do echo "SELECT v FROM t_$i WHERE id = 1;"; done | q >/dev/null
q -c "SELECT pg_stat_force_next_flush()" >/dev/null
recorded=$(q -c "SELECT count(*) FROM perf.statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')")
log "statements recorded in bench: $recorded"
for fn in "perf.metrics()" "perf.health()"; do
    times=()
    for round in 1 2 3 4 5; do
        ms=$(q -c "\\timing on" -c "SELECT length(${fn}::text)" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        times+=("$ms")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
    echo "$fn over $TABLES tables, $recorded statements: ms per call (5 rounds, sorted): $sorted"
done
lines=$(q -c "SELECT perf.metrics()" | wc -l)
echo "metrics() output: $lines lines"
