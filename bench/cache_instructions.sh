#!/usr/bin/env bash
# CPU instructions per call of a result-cache hit, next to a `SELECT 1`, on a single-user
# backend under callgrind (repeatable to < 0.1%, whatever the machine's load). The same
# 10-row aggregate as bench/cache_bench.sh, warmed in both forms first, then N and 2N calls of:
#   hit_json    SELECT perf.cached_json_text('<query>', '[]', '1 hour')   (returns json)
#   hit_jsonb   SELECT perf.cached_json('<query>', '[]', '1 hour')        (returns jsonb)
#   select1     SELECT 1
# (total(2N) - total(N)) / N is the cost of one call. It explains cache_bench's latency
# ratios (with both cores busy they tend to the CPU ratio) but is not one of its targets:
# a single-user backend prints results with its debug receiver, not the wire protocol, and
# no client or kernel time is counted.
#
# Usage: bench/cache_instructions.sh [--no-install] [--fill M] [N]
#   --no-install   measure the pg_perf.so installed now (default: install a release build)
#   --fill M       every run first fills the cache with M distinct small entries,
#                  perf.cached_json_text('SELECT $1::int', jsonb_build_array(i), '1 hour')
#                  for i in 1..M (the same in the N and 2N runs, so it cancels out): the cost
#                  of a hit with a full index (compare --fill 100 with --fill 400000; the
#                  default perf.cache_size_mb of 64 holds 400,000). Slow under callgrind.
#   N              calls in the short run (default $BENCH_N or 2000)
# Output: a markdown table on stdout, also saved to bench/out/cache_instructions.md; the
# callgrind files stay in bench/out/cache_instructions.<kind>.{N,2N}.out, for
# callgrind_annotate --inclusive=yes on each (the difference per function, divided by N, is
# where a call's instructions go).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FILL=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --fill) FILL=${2:?--fill needs a value}; shift ;;
    --fill=*) FILL=${1#--fill=} ;;
    *) args+=("$1") ;;
    esac
    shift
done
[[ "$FILL" =~ ^[0-9]+$ ]] || die "--fill must be a number of entries, got '$FILL'"
bench_parse_install_n 2000 "${args[@]}"

start=$SECONDS
[ "$BENCH_INSTALL" = 1 ] && bench_install_release
bench_require_valgrind
bench_init
so_sum=$(bench_pg_perf_sum)
so_desc=$(bench_describe_pg_perf)

TABLE=cache_bench_sales
ROWS=1200000
QUERY="SELECT region, count(*) AS orders, sum(qty) AS units, sum(amount) AS revenue, round(avg(amount), 2) AS avg_amount FROM $TABLE GROUP BY region ORDER BY region"
declare -A CALL=(
    [hit_json]="SELECT perf.cached_json_text('$QUERY', '[]', '1 hour');"
    [hit_jsonb]="SELECT perf.cached_json('$QUERY', '[]', '1 hour');"
    [select1]="SELECT 1;"
)
KINDS=(hit_json hit_jsonb select1)
# With --fill, every hit run pays for the fill under callgrind (minutes): the jsonb form
# (the same lookup) is left out, and `SELECT 1` runs without the fill (it does not use the
# cache).
[ "$FILL" = 0 ] || KINDS=(hit_json select1)

setup() {
    bench_psql <<EOF
CREATE EXTENSION pg_perf;
CREATE TABLE $TABLE (id int PRIMARY KEY, region int NOT NULL, product int NOT NULL,
                     qty int NOT NULL, amount int NOT NULL);
INSERT INTO $TABLE
    SELECT i, i % 10, (i * 7919::bigint) % 1000, 1 + i % 7, (i * 31::bigint) % 10000
    FROM generate_series(1, $ROWS) i;
VACUUM (FREEZE, ANALYZE) $TABLE;
SELECT perf.cache_track('$TABLE');
EOF
}
template="$BENCH_TMP/template"
bench_prepare_template "$template" setup -c shared_preload_libraries=pg_perf
opts=(-c shared_preload_libraries=pg_perf -c perf.cache_strict=on)

# Every run starts by storing both forms (the single-user backend starts with an empty
# cache), so that all measured calls are hits; perf.cache_strict makes a refusal an ERROR.
# A check run first proves it: after 3 calls of each form, each entry has 2 hits.
FILL_QUERY='SELECT $1::int'
warm="${CALL[hit_json]}"$'\n'"${CALL[hit_jsonb]}"
[ "$FILL" = 0 ] ||
    warm="SELECT count(perf.cached_json_text('$FILL_QUERY', jsonb_build_array(i), '1 hour')) FROM generate_series(1, $FILL) i;"$'\n'"$warm"
{
    echo "$warm"
    for _ in 1 2; do echo "${CALL[hit_json]}"; echo "${CALL[hit_jsonb]}"; done
    echo "SELECT 'entries:' || string_agg(format || '=' || hits, ',' ORDER BY format) FROM perf.cache_entries() WHERE query LIKE '%$TABLE%';"
    echo "SELECT 'filled:' || count(*) FROM perf.cache_entries() WHERE query = '$FILL_QUERY';"
} >"$BENCH_TMP/check.sql"
chown postgres: "$BENCH_TMP/check.sql"
bench_single "$template" "$BENCH_TMP/check.sql" "$BENCH_TMP/check.out" "${opts[@]}"
grep -q 'entries:json=2,jsonb=2' "$BENCH_TMP/check.out" ||
    die "the warmed calls were not all hits: $(grep -o 'entries:[^"]*' "$BENCH_TMP/check.out" || echo 'no entries')"
grep -q "filled:$FILL\"" "$BENCH_TMP/check.out" ||
    die "not all $FILL fill entries were cached: $(grep -o 'filled:[^"]*' "$BENCH_TMP/check.out" || echo '?')"

declare -A instr
for k in "${KINDS[@]}"; do
    for n in "$N" $((2 * N)); do
        f="$BENCH_TMP/$k.$n.sql"
        {
            if [ "$k" = select1 ] && [ "$FILL" != 0 ]; then echo "${warm#*$'\n'}"; else echo "$warm"; fi
            for ((i = 0; i < n; i++)); do echo "${CALL[$k]}"; done
        } >"$f"
        chown postgres: "$f"
    done
    log "callgrind: $k, $N and $((2 * N)) calls"
    bench_instr_per_stmt "$template" "$BENCH_TMP/$k.$N.sql" "$BENCH_TMP/$k.$((2 * N)).sql" "$N" \
        "cache_instructions.$k" "${opts[@]}"
    instr[$k]=$BENCH_INSTR
done
[ "$(bench_pg_perf_sum)" = "$so_sum" ] || die "pg_perf.so was replaced during the run; run again"

report="$BENCH_OUT/cache_instructions.md"
{
    echo "cache_instructions: instructions per call on a single-user backend (callgrind), N = $N and $((2 * N)) calls"
    echo
    echo "| call | instructions per call | / SELECT 1 |"
    echo "|---|---:|---:|"
    for k in "${KINDS[@]}"; do
        call=${CALL[$k]%;}
        printf '| %s `%s` | %.0f | %.2f |\n' "$k" "${call//"$QUERY"/<query>}" "${instr[$k]}" \
            "$(awk -v a="${instr[$k]}" -v b="${instr[select1]}" 'BEGIN { print a / b }')"
    done
    echo
    echo "- query: \`$QUERY\` (10 rows, 950 bytes of JSON), table of $ROWS rows, tracked"
    if [ "$FILL" -gt 0 ]; then
        echo "- every hit run first filled the cache with $FILL entries (\`perf.cached_json_text('$FILL_QUERY', jsonb_build_array(i), '1 hour')\`, i = 1..$FILL), all cached (checked)"
    fi
    echo "- pg_perf.so: $so_desc, sha256 $so_sum"
    echo "- commit: $(bench_describe_repo); $(date -u '+%Y-%m-%d %H:%M UTC'), took $((SECONDS - start))s"
} | tee "$report"
log "saved to ${report#"$REPO_ROOT"/}"
