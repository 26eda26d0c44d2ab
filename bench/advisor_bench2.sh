#!/usr/bin/env bash
# The index advisor on a second workload, different in kind from advisor_bench.sh (issue
# #16): a help-desk application whose ORM sends bind parameters over the extended protocol
# (psycopg), hand-written reports with typed literals, a 1% status, correlated columns, a
# join, jsonb containment and writes. Both advisor paths, perf.suggest_indexes() on what
# pg_perf captured and perf.suggest_indexes(ARRAY[...]) on the statements themselves, are
# measured side by side against primary keys only and a one-index-per-column baseline.
#
# The server runs with PostgreSQL's and pg_perf's default settings (only jit is off, so
# that compiling does not inflate the unindexed times and flatter the ratios, and fsync is
# off: a throwaway cluster whose commits are never timed).
#
# Usage: bench/advisor_bench2.sh
#   Measures the pg_perf.so installed now, in a private throwaway cluster (unix socket only).
# Environment:
#   BENCH_SCALE   fraction of the row counts (default 1 = tickets 2M, messages 1M,
#                 accounts 200k; 0.05 checks the harness only)
#   BENCH_ROUNDS  measured rounds (default 3, plus a warm-up round)
#   BENCH_REPS    executions per shape and round (default 5)
#   BENCH_PORT    port of the private server (default 57402; names its socket file only)
# Output: a markdown report on stdout, also saved to bench/out/advisor_bench2.md.
BENCH_PORT=${BENCH_PORT:-57402}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
venv="$REPO_ROOT/target/pytest-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import psycopg" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$REPO_ROOT/tests/integration/requirements.txt"
fi
desc=$(bench_describe_pg_perf)
[[ "$desc" == *"release build"* ]] ||
    printf '\033[1;33mwarning:\033[0m pg_perf.so is not a release build: %s\n' "$desc" >&2

DATA="$BENCH_TMP/data"
log "initdb $DATA"
as_postgres "$(pgbin initdb)" -D "$DATA" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
bench_server_start "$DATA" -c shared_preload_libraries=pg_perf -c jit=off -c fsync=off
BENCH_HOST="$BENCH_TMP" BENCH_PORT="$BENCH_PORT" "$venv/bin/python" "$BENCH_DIR/advisor_workload2.py" |
    tee "$BENCH_OUT/advisor_bench2.md"
echo "pg_perf: $desc" | tee -a "$BENCH_OUT/advisor_bench2.md"
