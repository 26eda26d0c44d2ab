#!/usr/bin/env bash
# CPU instructions per statement of a pgbench-like primary-key lookup
#   SELECT abalance FROM pgbench_accounts WHERE aid = <k>;
# on a single-user backend under callgrind, for these configurations measured in one run:
#   none                no preload libraries (compute_query_id default)
#   query_id            no preload libraries, compute_query_id=on (core's query jumbling alone)
#   pg_stat_statements  shared_preload_libraries=pg_stat_statements (its defaults)
#   pg_perf             shared_preload_libraries=pg_perf, its defaults (compute_query_id=auto:
#                       pg_perf memoizes core's query ids per statement text), $PERF_BENCH_OPTS
#   pg_perf_core_ids    the same with compute_query_id=on (core jumbles every statement)
#   pg_perf_no_samples  pg_perf with perf.capture_sample_values=off (not in the default list)
# Each configuration runs N and 2N statements on fresh copies of one prepared data dir;
# (total(2N) - total(N)) / N is the cost of one statement, repeatable to < 0.1%.
#
# Usage: bench/stats_overhead.sh [--no-install] [N]
#   --no-install     measure the pg_perf.so that is installed now (default: first install a
#                    release build with scripts/install-ext.sh --release)
#   N                statements in the short run (default $BENCH_N or 20000)
# Environment:
#   PERF_BENCH_OPTS  extra postgres options for the pg_perf configuration only,
#                    e.g. PERF_BENCH_OPTS='-c perf.enabled=off'
#   BENCH_CONFIGS    configurations and their order (default
#                    "none query_id pg_stat_statements pg_perf_core_ids pg_perf"; the first is
#                    the baseline)
#   BENCH_JOBS       callgrind runs side by side (default: number of CPUs; counts don't change)
# Output: a markdown table on stdout, also saved to bench/out/stats_overhead.md; the callgrind
# files of the last run are kept as bench/out/stats_overhead.<config>.{N,2N}.out.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_parse_install_n 20000 "$@"
read -ra configs <<<"${BENCH_CONFIGS:-none query_id pg_stat_statements pg_perf_core_ids pg_perf}"
read -ra perf_opts <<<"${PERF_BENCH_OPTS:-}"
[ ${#configs[@]} -gt 0 ] || die "BENCH_CONFIGS is empty"
for c in "${configs[@]}"; do
    case "$c" in none | query_id | pg_stat_statements | pg_perf | pg_perf_core_ids | pg_perf_no_samples) ;; *) die "unknown configuration '$c'" ;; esac
done
want_pg_perf=0
[[ " ${configs[*]} " == *" pg_perf"* ]] && want_pg_perf=1

SCALE=1 # pgbench scale: 100,000 rows in pgbench_accounts
ROWS=$((SCALE * 100000))

start=$SECONDS
[ "$BENCH_INSTALL" = 1 ] && [ "$want_pg_perf" = 1 ] && bench_install_release
bench_require_valgrind
bench_init
so_sum=$(bench_pg_perf_sum)
so_desc=$(bench_describe_pg_perf)
if [ "$want_pg_perf" = 1 ] && [[ "$so_desc" != *"release build"* ]]; then
    printf '\033[1;33mwarning:\033[0m pg_perf.so is not a release build: %s\n' "$so_desc" >&2
fi

# postgres options per configuration
config_opts() {
    case "$1" in
    none) ;;
    query_id) echo "-c compute_query_id=on" ;;
    pg_stat_statements) echo "-c shared_preload_libraries=pg_stat_statements" ;;
    pg_perf) echo "-c shared_preload_libraries=pg_perf ${perf_opts[*]}" ;;
    pg_perf_core_ids) echo "-c shared_preload_libraries=pg_perf -c compute_query_id=on ${perf_opts[*]}" ;;
    pg_perf_no_samples) echo "-c shared_preload_libraries=pg_perf -c perf.capture_sample_values=off ${perf_opts[*]}" ;;
    esac
}

# --- the template: pgbench -i -s 1, frozen and analyzed; extensions created as a DBA would ---
setup_db() {
    log "pgbench -i -s $SCALE"
    as_postgres "$(pgbin pgbench)" -i -q -s "$SCALE" -h "$BENCH_TMP" -p "$BENCH_PORT" -U postgres postgres 2>&1 |
        grep -vE '^(NOTICE: |dropping|creating|generating|vacuuming|done|[0-9]+ of [0-9]+ tuples)' >&2 || true
    bench_psql -c "VACUUM (FREEZE, ANALYZE) pgbench_accounts" \
        -c "CREATE EXTENSION pg_prewarm" -c "CREATE EXTENSION pg_stat_statements"
    if [ "$want_pg_perf" = 1 ]; then bench_psql -c "CREATE EXTENSION pg_perf"; fi
    local n
    n=$(bench_psql -At -c "SELECT count(*) FROM pgbench_accounts")
    [ "$n" = "$ROWS" ] || die "pgbench_accounts has $n rows, expected $ROWS"
}
template="$BENCH_TMP/template"
setup_preload=""
[ "$want_pg_perf" = 1 ] && setup_preload="-c shared_preload_libraries=pg_perf"
bench_prepare_template "$template" setup_db $setup_preload

# --- statement files: a warm-up line that loads table and index into shared buffers, then
# primary-key lookups with k spread over the table; the N file is a prefix of the 2N file ---
gen_sql() {
    awk -v n="$1" -v rows="$ROWS" 'BEGIN {
        print "SELECT pg_prewarm('"'"'pgbench_accounts'"'"'), pg_prewarm('"'"'pgbench_accounts_pkey'"'"');"
        for (i = 1; i <= n; i++) printf "SELECT abalance FROM pgbench_accounts WHERE aid = %d;\n", (i * 7919) % rows + 1
    }'
}
gen_sql "$N" >"$BENCH_TMP/stmts.N.sql"
gen_sql $((2 * N)) >"$BENCH_TMP/stmts.2N.sql"

# --- pre-flight: each configuration really is what its name says, and the query finds rows ---
# Single-user mode prints each result row as `<tab> 1: name = "value"<tab>(typeid = ...)`.
show_value() { # show_value FILE NAME: the value of the first result row of column NAME
    awk -v name="$2" 'index($0, "\t 1: " name " = \"") == 1 { sub(/^[^"]*"/, ""); sub(/"\t.*$/, ""); print; exit }' "$1"
}
preflight() {
    local config=$1 out="$BENCH_TMP/preflight.$1.txt"
    read -ra opts <<<"$(config_opts "$config")"
    printf '%s\n' "SHOW shared_preload_libraries;" "SHOW compute_query_id;" \
        "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;" \
        "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) AS perf FROM pg_settings WHERE name LIKE 'perf.%';" \
        >"$BENCH_TMP/preflight.sql"
    bench_single "$template" "$BENCH_TMP/preflight.sql" "$out" "${opts[@]}"
    local libs qid bal perf
    libs=$(show_value "$out" shared_preload_libraries)
    qid=$(show_value "$out" compute_query_id)
    bal=$(show_value "$out" abalance)
    perf=$(show_value "$out" perf)
    [ "$bal" = 0 ] || die "$config: the lookup returned '$bal' instead of abalance 0 (see $out)"
    case "$config" in
    none | query_id) [ -z "$libs" ] || die "$config: shared_preload_libraries is '$libs'" ;;
    pg_perf*) [ "$libs" = pg_perf ] || die "$config: shared_preload_libraries is '$libs'" ;;
    *) [ "$libs" = "$config" ] || die "$config: shared_preload_libraries is '$libs'" ;;
    esac
    local desc="shared_preload_libraries='$libs' compute_query_id=$qid"
    [[ "$config" = pg_perf* ]] && desc="$desc${perf:+ $perf}"
    echo "$desc"
}
declare -A desc instr total_n total_2n
for c in "${configs[@]}"; do
    desc[$c]=$(preflight "$c")
    log "$c: ${desc[$c]}"
done

# --- the measurement ---
for c in "${configs[@]}"; do
    log "$c: callgrind, $N and $((2 * N)) statements"
    read -ra opts <<<"$(config_opts "$c")"
    bench_instr_per_stmt "$template" "$BENCH_TMP/stmts.N.sql" "$BENCH_TMP/stmts.2N.sql" "$N" \
        "stats_overhead.$c" "${opts[@]}"
    instr[$c]=$BENCH_INSTR total_n[$c]=$BENCH_TOTAL_N total_2n[$c]=$BENCH_TOTAL_2N
    log "$c: ${instr[$c]} instructions per statement"
done

# --- the report ---
[ "$want_pg_perf" = 0 ] || [ "$(bench_pg_perf_sum)" = "$so_sum" ] ||
    die "pg_perf.so was replaced during the run (someone reinstalled it); the pg_perf numbers are mixed, run again"
base=${configs[0]}
elapsed=$((SECONDS - start))
report="$BENCH_OUT/stats_overhead.md"
{
    echo "stats_overhead: \`SELECT abalance FROM pgbench_accounts WHERE aid = k\` (pgbench -s $SCALE, PK lookup), N=$N vs 2N=$((2 * N)) statements"
    echo
    echo "| config | instr/stmt | vs $base | total Ir (N) | total Ir (2N) |"
    echo "|---|---:|---:|---:|---:|"
    for c in "${configs[@]}"; do
        if [ "$c" = "$base" ]; then vs="—"; else vs=$(bench_pct "${instr[$c]}" "${instr[$base]}"); fi
        printf '| %s | %s | %s | %s | %s |\n' "$c" "${instr[$c]}" "$vs" "${total_n[$c]}" "${total_2n[$c]}"
    done
    echo
    for c in "${configs[@]}"; do echo "- $c: ${desc[$c]}"; done
    echo "- pg_perf.so: $so_desc, sha256 $so_sum$([ "$BENCH_INSTALL" = 0 ] && echo ' — not rebuilt (--no-install)')"
    echo "- PERF_BENCH_OPTS: '${PERF_BENCH_OPTS:-}'"
    echo "- commit: $(bench_describe_repo)"
    echo "- $("$(pgbin postgres)" --version), $(valgrind --version), $(date -u '+%Y-%m-%d %H:%M UTC'), took ${elapsed}s"
} | tee "$report"
log "saved to ${report#"$REPO_ROOT"/}"
