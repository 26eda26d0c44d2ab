#!/usr/bin/env bash
# The index advisor's runtime on many captured statements (issue #16: "< 2 s for 100
# captured statements"), on an adversarial workload: one 300k-row table with 6 filterable
# columns, 100 distinct statement shapes (equality, ranges, IN, ORDER BY ... LIMIT over every
# pair of columns and more), each run a few times with varying constants so that pg_perf keeps
# sample values for it (perf.capture_sample_values, on by default). Then perf.suggest_indexes()
# is timed BENCH_CALLS times (median), first with the sample values, then with the samples
# left out (perf.reset_stats() and a capture with perf.capture_sample_values = off), and next
# to it a plain EXPLAIN of the same 100 statements (the side-by-side reference).
#
# Usage: bench/advisor_runtime.sh
#   Measures the pg_perf.so installed now (use a release build: scripts/install-ext.sh
#   --release), in a private throwaway cluster (initdb in a temp dir, unix socket only, as
#   postgres; removed on exit), server defaults otherwise. About 1-2 minutes.
# Environment:
#   BENCH_CALLS      advisor calls per configuration (default 3)
#   BENCH_PORT       port of the private server (default 57431; names its socket file only)
#   BENCH_KEEP_TMP=1 keep the temp dir
# Output: a markdown report on stdout, also saved to bench/out/advisor_runtime.md. Exits 1
# when the median with sample values is not under 2 s (a check, not a timed test).
BENCH_PORT=${BENCH_PORT:-57431}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CALLS=${BENCH_CALLS:-3}
[[ "$CALLS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CALLS must be a positive integer"
TARGET_S=2
bench_init
so_desc=$(bench_describe_pg_perf)
[[ "$so_desc" == *"release build"* ]] ||
    printf '\033[1;33mwarning:\033[0m pg_perf.so is not a release build: %s\n' "$so_desc" >&2
REPORT="$BENCH_OUT/advisor_runtime.md"
rm -f "$REPORT"

dbpsql() {
    local db=$1
    shift
    as_postgres "$(pgbin psql)" -X -q -v ON_ERROR_STOP=1 -h "$BENCH_TMP" -p "$BENCH_PORT" -U postgres -d "$db" "$@"
}

DATA="$BENCH_TMP/data"
as_postgres "$(pgbin initdb)" -D "$DATA" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
bench_server_start "$DATA" -c shared_preload_libraries=pg_perf -c compute_query_id=on \
    -c jit=off -c autovacuum=off -c fsync=off -c timezone=UTC

dbpsql postgres <<'EOF'
CREATE EXTENSION pg_perf;
CREATE TABLE items (
    id bigint PRIMARY KEY,
    a int NOT NULL,          -- 1000 distinct values
    b int NOT NULL,          -- 50 distinct, correlated with a
    c text NOT NULL,         -- status: 1% 'open'
    d timestamptz NOT NULL,  -- grows with id
    e numeric NOT NULL,      -- a price
    f text NOT NULL          -- a code, looked up by lower(f)
);
INSERT INTO items
SELECT g, g % 1000, (g % 1000) / 20,
       CASE WHEN g % 100 = 0 THEN 'open' WHEN g % 7 = 0 THEN 'hold' ELSE 'closed' END,
       timestamptz '2024-01-01' + g * interval '1 minute', (g * 37 % 10000) / 100.0,
       'Code' || (g % 50000)
  FROM generate_series(1, 300000) g;
VACUUM ANALYZE items;
-- 100 statement shapes: every ordered pair of the 6 columns as filter + the other as
-- equality or range, ORDER BY ... LIMIT, IN lists, expressions.
CREATE TABLE shapes (n serial, tmpl text);
INSERT INTO shapes (tmpl)
SELECT format('SELECT id FROM items WHERE %s AND %s', p1, p2)
  FROM (VALUES ('a = {i}'), ('b = {j}'), ('c = ''open'''), ('d >= timestamptz ''2024-03-01'' + {j} * interval ''1 day'''),
               ('e BETWEEN {j} AND {j} + 1'), ('lower(f) = ''code{i}''')) x(p1),
       (VALUES ('a > {i}'), ('b < {j}'), ('c <> ''closed'''), ('d < timestamptz ''2024-05-01'''),
               ('e > {j}'), ('f LIKE ''Code1%''')) y(p2)
UNION ALL
SELECT format('SELECT * FROM items WHERE %s ORDER BY %s DESC LIMIT 10', p, o)
  FROM (VALUES ('a = {i}'), ('b = {j}'), ('c = ''open'''), ('e > {j}'), ('lower(f) = ''code{i}''')) x(p),
       (VALUES ('d'), ('e'), ('a'), ('id')) y(o)
UNION ALL
SELECT format('SELECT count(*) FROM items WHERE %s IN ({i}, {j}, {k}) AND %s', p, q)
  FROM (VALUES ('a'), ('b')) x(p),
       (VALUES ('c = ''open'''), ('d > timestamptz ''2024-02-01'''), ('e < 5'), ('true')) y(q)
UNION ALL
SELECT format('SELECT %s, count(*) FROM items WHERE %s GROUP BY 1', g, w)
  FROM (VALUES ('a'), ('b'), ('c')) x(g),
       (VALUES ('d >= timestamptz ''2024-04-01'' + {j} * interval ''1 hour'''), ('e BETWEEN {j} AND {j} + 2'), ('b = {j}'),
               ('c = ''hold'''), ('a < {j}'), ('lower(f) LIKE ''code1{j}%''')) y(w)
UNION ALL
SELECT format('UPDATE items SET e = e + 1 WHERE %s', w)
  FROM (VALUES ('id = {i}'), ('a = {i} AND b = {j}'), ('c = ''open'' AND a = {i}'), ('lower(f) = ''code{i}''')) x(w)
UNION ALL
SELECT format('SELECT id, e FROM items WHERE a = {i} AND b = {j} AND c = ''open'' AND %s', w)
  FROM (VALUES ('d > timestamptz ''2024-02-01'''), ('e > 3'), ('true'), ('f <> ''x''')) x(w)
UNION ALL
SELECT format('SELECT id, a, b FROM items WHERE %s', w)
  FROM (VALUES ('a = {i}'), ('b = {j}'), ('c = ''open'''), ('c = ''hold'''), ('d >= timestamptz ''2024-06-01'' + {j} * interval ''1 day'''),
               ('e = {j}'), ('lower(f) = ''code{i}'''), ('f = ''Code{i}'''), ('a BETWEEN {i} AND {i} + 5'), ('b IN ({j}, {k})'),
               ('d < timestamptz ''2024-01-02'''), ('e < 0.5')) x(w)
UNION ALL
SELECT 'SELECT i1.id FROM items i1 JOIN items i2 ON i2.id = i1.a WHERE i1.b = {j} AND i2.c = ''open''';
EOF
nshapes=$(dbpsql postgres -At -c "SELECT count(*) FROM shapes")
log "$nshapes statement shapes"
[ "$nshapes" -ge 100 ] || die "expected at least 100 shapes, got $nshapes"
# capture.sql: the first 100 shapes, 6 runs each with varying constants.
dbpsql postgres -At -c "
  SELECT replace(replace(replace(s.tmpl, '{i}', ((r * 7919 + s.n) % 1000)::text),
                 '{j}', ((r * 13 + s.n) % 50)::text), '{k}', ((r * 31) % 1000)::text) || ';'
    FROM (SELECT * FROM shapes ORDER BY n LIMIT 100) s, generate_series(1, 6) r ORDER BY r, s.n" >"$BENCH_TMP/capture.sql"
dbpsql postgres -At -c "
  SELECT 'EXPLAIN ' || replace(replace(replace(s.tmpl, '{i}', '5'), '{j}', '7'), '{k}', '9') || ';'
    FROM (SELECT * FROM shapes ORDER BY n LIMIT 100) s ORDER BY s.n" >"$BENCH_TMP/explain.sql"
chown postgres: "$BENCH_TMP"/*.sql

# Runs the capture with perf.capture_sample_values = $1, then times the advisor CALLS times.
# Prints "median_s calls statements samples".
measure() {
    local capture=$1
    dbpsql postgres -c "SELECT perf.reset_stats()" >/dev/null
    dbpsql postgres -c "SET perf.capture_sample_values = $capture" -f "$BENCH_TMP/capture.sql" >/dev/null
    local stmts samples times=()
    stmts=$(dbpsql postgres -At -c "SELECT count(*) FROM perf.statements WHERE query LIKE '%items%' AND query NOT LIKE '%perf.%'")
    samples=$(dbpsql postgres -At -c "SELECT count(*) FROM perf.statement_samples()")
    for _ in $(seq "$CALLS"); do
        times+=("$(dbpsql postgres -At <<'EOF'
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM perf.suggest_indexes() \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3);
EOF
)")
    done
    local med
    med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    local joined
    joined=$(IFS=,; echo "${times[*]}")
    echo "$med $joined $stmts $samples"
}
read -r with_s with_all stmts_on samples_on < <(measure on)
# What-if requests of one more call (the advisor's DEBUG1 line), for the report.
debug=$(dbpsql postgres -At -c "SET client_min_messages = debug1" -c "SELECT count(*) FROM perf.suggest_indexes()" 2>&1)
requests=$(grep -o '[0-9]* oracle calls' <<<"$debug" | head -1)
timing=$(grep -o 'pg_perf advisor timing: .*' <<<"$debug" | head -1)
read -r without_s without_all stmts_off samples_off < <(measure off)
explain_s=$(dbpsql postgres -At <<EOF
SELECT clock_timestamp() AS t0 \gset
\o /dev/null
\i $BENCH_TMP/explain.sql
\o
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3);
EOF
)
verdict=$(awk -v s="$with_s" -v t="$TARGET_S" 'BEGIN { print (s < t) ? "PASS" : "FAIL" }')
{
    echo "\`bench/advisor_runtime.sh\`, $so_desc, $(date -u +%Y-%m-%d), $(bench_describe_repo)"
    echo
    echo "| configuration | captured statements | samples kept | advisor runtime (median of $CALLS) | calls | target | verdict |"
    echo "|---|---:|---:|---:|---|---|---|"
    echo "| sample values on (default) | $stmts_on | $samples_on | **${with_s} s** | ${with_all//,/, } | < ${TARGET_S} s | $verdict |"
    echo "| sample values off | $stmts_off | $samples_off | ${without_s} s | ${without_all//,/, } | | |"
    echo "| plain EXPLAIN of the 100 statements | | | ${explain_s} s | | | |"
    echo
    echo "What-if requests of one call with sample values: ${requests:-?} (the advisor's DEBUG1 line)."
    echo "Where its time went: ${timing#pg_perf advisor timing: }."

} | tee "$REPORT"
[ "$verdict" = PASS ]
