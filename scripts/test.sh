#!/usr/bin/env bash
# Runs every pg_perf test on this machine, installing what is missing first:
#   1. plain `cargo test` for the pure-Rust modules (no server)
#   2. `cargo pgrx test` for in-backend #[pg_test]s (pgrx starts its own preloaded cluster)
#   3. pg_regress expected-output tests for the SQL surface, against a cluster we start
#   4. out-of-process integration tests (pytest + psycopg, several real connections)
#   (and upgrade: the previous release's SQL, ALTER EXTENSION UPDATE, same schema as a fresh
#   install, the regress suite on the upgraded database; scripts/upgrade-test.sh)
# Usage: scripts/test.sh [unit|pgrx|regress|upgrade|integration]...   (default: all)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(unit pgrx regress upgrade integration)
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

bash scripts/install-deps.sh

passed=0
failed=0
run_stage() {
    local name=$1
    shift
    log "stage: $name"
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        printf '\033[1;31mstage %s FAILED\033[0m\n' "$name" >&2
    fi
}

stage_unit() {
    # #[pg_test]s are named tests::pg_*; they need the server and run in the pgrx stage.
    cargo test --lib --quiet -- --skip "::pg_"
}

stage_pgrx() {
    # pgdata must be writable by postgres and outside /root.
    mkdir -p "$PERF_ROOT"
    chmod 755 "$PERF_ROOT"
    [ "$(id -u)" = 0 ] && chown postgres: "$PERF_ROOT"
    if [ "$(id -u)" = 0 ]; then
        cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$PERF_ROOT/pgrx-test-data"
    else
        cargo pgrx test "pg$PG_MAJOR"
    fi
}

start_test_cluster() {
    bash scripts/install-ext.sh
    bash scripts/cluster.sh restart test "$TEST_PORT" 2>/dev/null ||
        bash scripts/cluster.sh start test "$TEST_PORT"
}

stage_regress() {
    local out="$PERF_ROOT/regress-out"
    rm -rf "$out"
    mkdir -p "$out"
    psql_at "$TEST_PORT" -d postgres -q -c "DROP DATABASE IF EXISTS pg_perf_regress WITH (FORCE)" -c "CREATE DATABASE pg_perf_regress"
    local tests
    tests=$(cat tests/regress/schedule)
    if ! "$($PG_CONFIG --pkglibdir)/pgxs/src/test/regress/pg_regress" \
        --use-existing --host=127.0.0.1 --port="$TEST_PORT" --user=postgres \
        --inputdir=tests/regress --outputdir="$out" --dbname=pg_perf_regress $tests; then
        cat "$out/regression.diffs" >&2 || true
        return 1
    fi
}

stage_integration() {
    local venv="$REPO_ROOT/target/pytest-venv"
    # Reinstalled whenever requirements.txt changes (a stamp holds the file it was made from).
    if [ ! -x "$venv/bin/pytest" ] || ! cmp -s tests/integration/requirements.txt "$venv/requirements.stamp"; then
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/integration/requirements.txt
        cp tests/integration/requirements.txt "$venv/requirements.stamp"
    fi
    PERF_TEST_PORT="$TEST_PORT" PERF_REPO_ROOT="$REPO_ROOT" \
        "$venv/bin/pytest" -q -p no:cacheprovider tests/integration
}

# The test cluster runs with perf.verify_query_ids = on: every statement the regress and
# integration stages sent that got its query id from the memo was also jumbled by core,
# and any difference was logged. None may be.
stage_query_id_check() {
    local log="$PERF_ROOT/test/server.log"
    if grep -n "memoized query id" "$log" >&2; then
        echo "memoized query ids differed from core's jumble (see above)" >&2
        return 1
    fi
}

want unit && run_stage unit stage_unit
want pgrx && run_stage pgrx stage_pgrx
if want regress || want upgrade || want integration; then
    start_test_cluster
    want regress && run_stage regress stage_regress
    want upgrade && run_stage upgrade bash scripts/upgrade-test.sh
    want integration && run_stage integration stage_integration
    run_stage query_id_check stage_query_id_check
    bash scripts/cluster.sh stop test "$TEST_PORT"
fi

echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
