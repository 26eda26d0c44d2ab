#!/usr/bin/env bash
# Result cache, side by side in one run, for 1 and 2 clients (pgbench, custom scripts):
#   A  direct  a ~50-100 ms aggregate (GROUP BY over a 1.2M-row table), executed directly
#   B  hit     the same query through perf.cached_json_text(...) (json: the stored text is
#              served as is), warmed first (a cache hit)
#   B' jsonb   the same through perf.cached_json(...) (jsonb: rendered again by jsonb_out on
#              every call), warmed first
#   C  SELECT 1  a trivial round trip
# Reported as ratios only (bench/README.md): direct/hit (target >= 100), hit/SELECT 1
# (target <= 1.5), and hit throughput with 2 clients / 1 client (target > 1), for B and B'
# alike. Runs are
# interleaved in rounds (the order reverses every round); each ratio is taken within a round
# and the median over the rounds is reported, next to every round's value.
# Every hit run is checked against perf.cache_stats() and perf.cache_entries(): if a single
# call of the hit phase was not served from the cache, the script fails.
#
# Usage: bench/cache_bench.sh [--port PORT] [--keep-db] [--no-cache] [--fill N]
#   --port PORT   server on 127.0.0.1:PORT (default $TEST_PORT, the test cluster:
#                 scripts/cluster.sh start test 55433). It must preload pg_perf. Connects as
#                 postgres; DROPs and CREATEs the database cache_bench there.
#   --keep-db     keep the cache_bench database at the end (default: drop it)
#   --no-cache    harness check only: direct query and SELECT 1, no pg_perf needed (for
#                 builds without the cache); reports no cache numbers
#   --fill N      first fill the cache with N distinct small entries,
#                 perf.cached_json_text('SELECT $1::int', jsonb_build_array(i), '1 hour') for
#                 i in 1..N, and check they all stay cached through the run: the hit ratios
#                 with a full index (compare --fill 100 with --fill 400000). The server's
#                 perf.cache_size_mb must hold them (the default 64 MB holds 400,000). The
#                 cache is flushed at the end (perf.cache_flush(), whole server).
# Environment:
#   BENCH_ROUNDS     rounds (default 7)
#   BENCH_SECS       seconds per pgbench run (default 2); a round is 6 runs. Short runs
#                    keep the runs of a ratio close in time, so load swings hit both alike
#   BENCH_ROWS       rows in the table (default 1200000): tune so the direct query takes
#                    50-100 ms (its 1-client latency is printed for that purpose only)
#   BENCH_PROTOCOL   pgbench -M: simple (default), extended or prepared
#   BENCH_PGOPTIONS  PGOPTIONS for every client session (all three kinds alike), e.g.
#                    '-c max_parallel_workers_per_gather=0'
# Output: a markdown table on stdout, also saved to bench/out/cache_bench.md; the raw per-run
# numbers (for debugging only, never to be reported) go to bench/out/cache_bench.runs.tsv.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^source/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//' >&2; }

port=$TEST_PORT
keep_db=0
with_cache=1
fill=0
while [ $# -gt 0 ]; do
    case "$1" in
    --port) port=${2:?--port needs a value}; shift ;;
    --port=*) port=${1#--port=} ;;
    --keep-db) keep_db=1 ;;
    --no-cache) with_cache=0 ;;
    --fill) fill=${2:?--fill needs a value}; shift ;;
    --fill=*) fill=${1#--fill=} ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument $1" ;;
    esac
    shift
done
ROUNDS=${BENCH_ROUNDS:-7}
SECS=${BENCH_SECS:-2}
ROWS=${BENCH_ROWS:-1200000}
PROTOCOL=${BENCH_PROTOCOL:-simple}
[[ "$port" =~ ^[0-9]+$ ]] || die "port must be a number, got '$port'"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECS must be a positive integer"
[[ "$ROWS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS must be a positive integer"
[[ "$fill" =~ ^[0-9]+$ ]] || die "--fill must be a number of entries, got '$fill'"
[ "$fill" = 0 ] || [ "$with_cache" = 1 ] || die "--fill needs the cache (not with --no-cache)"
case "$PROTOCOL" in simple | extended | prepared) ;; *) die "BENCH_PROTOCOL must be simple, extended or prepared" ;; esac
# Same session settings for psql (warm-up, checks) and pgbench: the cache key includes
# search_path, TimeZone, DateStyle, ... so both must see the same ones.
# The test cluster checks every memoized query id against core's jumble
# (perf.verify_query_ids = on in pgrx-config): production runs without that check.
export PGOPTIONS="-c perf.verify_query_ids=off ${BENCH_PGOPTIONS:-}"

DB=cache_bench
TABLE=cache_bench_sales
# The aggregate: 10 groups, sums and an average over every row. Immutable functions only
# (the cache refuses now(), random(), ...). No single quotes (it is embedded in a literal)
# and no ':' (pgbench variables).
QUERY="SELECT region, count(*) AS orders, sum(qty) AS units, sum(amount) AS revenue, round(avg(amount), 2) AS avg_amount FROM $TABLE GROUP BY region ORDER BY region"
TTL='1 hour' # longer than the run: an expiry in the middle would be a (detected) miss
CACHED="perf.cached_json_text('$QUERY', '[]', '$TTL')"
CACHED_JSONB="perf.cached_json('$QUERY', '[]', '$TTL')"

start=$SECONDS
bench_init
report="$BENCH_OUT/cache_bench.md"
runs="$BENCH_OUT/cache_bench.runs.tsv"
# No stale report survives a failed run.
rm -f "$report" "$runs"
so_sum=$(bench_pg_perf_sum)
so_desc=$(bench_describe_pg_perf)

# psql on the benchmark server: sql DB [psql args...]
sql() {
    local db=$1
    shift
    psql_at "$port" -d "$db" -q -At "$@"
}

# Drops the database (best effort first drops its cache entries, which would otherwise sit
# in shared memory until their TTL).
drop_db() {
    sql "$DB" -c "SELECT perf.cache_invalidate('$TABLE')" >/dev/null 2>&1 || true
    sql postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
}

db_created=0
cache_bench_cleanup() {
    local rc=$? pid
    set +e
    for pid in "${_bench_pids[@]}"; do _bench_kill_tree "$pid"; done
    for pid in "${_bench_pids[@]}"; do wait "$pid" 2>/dev/null; done
    _bench_pids=()
    if [ "$fill" -gt 0 ] && [ "$db_created" = 1 ]; then
        sql "$DB" -c "SELECT perf.cache_flush()" >/dev/null 2>&1 || true
    fi
    if [ "$db_created" = 1 ]; then
        if [ "$keep_db" = 1 ]; then
            log "kept database $DB on port $port"
        else
            drop_db 2>/dev/null || printf 'warning: could not drop database %s on port %s\n' "$DB" "$port" >&2
        fi
    fi
    (exit "$rc")
    _bench_cleanup
}
trap cache_bench_cleanup EXIT

# --- the server ---
sql postgres -c "SELECT 1" >/dev/null 2>&1 ||
    die "no server on 127.0.0.1:$port (the test cluster: scripts/cluster.sh start test $TEST_PORT)"
server_version=$(sql postgres -c "SELECT version()")
preload=$(sql postgres -c "SHOW shared_preload_libraries")
if [ "$with_cache" = 1 ]; then
    [[ ",${preload// /}," == *,pg_perf,* ]] ||
        die "the server on port $port does not preload pg_perf (shared_preload_libraries='$preload')"
    n_prepared=$(sql postgres -c "SELECT count(*) FROM pg_prepared_xacts")
    [ "$n_prepared" = 0 ] ||
        die "$n_prepared prepared transaction(s) on port $port: the cache refuses everything while they exist (reason prepared_xacts); see pg_prepared_xacts"
fi
# pg_perf.so installed after the server started: the server may run an older build.
so_note=""
so_file="$("$PG_CONFIG" --pkglibdir)/pg_perf.so"
if [ "$with_cache" = 1 ] && [ -f "$so_file" ]; then
    pm_start=$(sql postgres -c "SELECT extract(epoch FROM pg_postmaster_start_time())::bigint")
    if [ "$(stat -c %Y "$so_file")" -gt "$pm_start" ]; then
        so_note="pg_perf.so was installed after the server started: the server may be running an older build (restart the cluster)"
        printf '\033[1;33mwarning:\033[0m %s\n' "$so_note" >&2
    fi
    [[ "$so_desc" == *"release build"* ]] ||
        printf '\033[1;33mwarning:\033[0m pg_perf.so is not a release build: %s\n' "$so_desc" >&2
fi

# --- the database: a narrow table of $ROWS rows in 10 regions, frozen and analyzed ---
log "creating database $DB on port $port, $ROWS rows"
drop_db
sql postgres -c "CREATE DATABASE $DB" >/dev/null
db_created=1
[ "$with_cache" = 0 ] || sql "$DB" -c "CREATE EXTENSION pg_perf" >/dev/null
# autovacuum off for this table: it is never written after the load, and an ANALYZE in the
# middle of the run could invalidate the cached result.
sql "$DB" >/dev/null <<EOF
CREATE TABLE $TABLE (id int PRIMARY KEY, region int NOT NULL, product int NOT NULL,
                     qty int NOT NULL, amount int NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO $TABLE
    SELECT i, i % 10, (i * 7919::bigint) % 1000, 1 + i % 7, (i * 31::bigint) % 10000
    FROM generate_series(1, $ROWS) i;
VACUUM (FREEZE, ANALYZE) $TABLE;
EOF
[ "$with_cache" = 0 ] || sql "$DB" -c "SELECT perf.cache_track('$TABLE')" >/dev/null
sql "$DB" -c CHECKPOINT
n=$(sql "$DB" -c "SELECT count(*) FROM $TABLE")
[ "$n" = "$ROWS" ] || die "$TABLE has $n rows, expected $ROWS"
table_size=$(sql "$DB" -c "SELECT pg_size_pretty(pg_table_size('$TABLE'))")
n_groups=$(sql "$DB" -c "SELECT count(*) FROM ($QUERY) t")
settings=$(sql "$DB" -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
    WHERE name IN ('max_parallel_workers_per_gather', 'jit', 'shared_buffers', 'compute_query_id')
       OR name LIKE 'perf.cache%' OR name IN ('perf.enabled', 'perf.slow_query_ms', 'perf.plan_sample_rate')")

# --- the cache: store the result, check that the next call is a hit and returns the same ---
# stats FORMAT: "hits misses refusals stores evictions expirations invalidations entry_hits",
# where entry_hits is the hit counter of our entry of that format (json or jsonb) in
# perf.cache_entries() (-1: no entry). perf.cache_entries() only shows the current
# database's entries, and ours is the only query cached in it.
stats() {
    sql "$DB" -F ' ' -c "SELECT s.hits, s.misses, s.refusals, s.stores, s.evictions, s.expirations, s.invalidations,
        coalesce((SELECT sum(e.hits) FROM perf.cache_entries() e WHERE e.query LIKE '%$TABLE%' AND e.format = '$1'), -1)
        FROM perf.cache_stats() s"
}
# delta BEFORE AFTER FIELD(1-based): AFTER[FIELD] - BEFORE[FIELD]
delta() { awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { split(a, x, " "); split(b, y, " "); print y[f] - x[f] }'; }
field() { awk -v a="$1" -v f="$2" 'BEGIN { split(a, x, " "); print x[f] }'; }
describe_delta() {
    printf 'hits +%s, misses +%s, refusals +%s, stores +%s, evictions +%s, expirations +%s, invalidations +%s' \
        "$(delta "$1" "$2" 1)" "$(delta "$1" "$2" 2)" "$(delta "$1" "$2" 3)" "$(delta "$1" "$2" 4)" \
        "$(delta "$1" "$2" 5)" "$(delta "$1" "$2" 6)" "$(delta "$1" "$2" 7)"
}
refusals() {
    local r
    r=$(sql "$DB" -F ' ' -c "SELECT reason, count FROM perf.cache_refusals() WHERE count > 0 ORDER BY 1" | paste -sd, -)
    echo "${r:-none}"
}

result_bytes=""
if [ "$with_cache" = 1 ]; then
    sql "$DB" -c "SELECT to_regprocedure('perf.cached_json_text(text,jsonb,interval)') IS NOT NULL" | grep -qx t ||
        die "perf.cached_json_text(text, jsonb, interval) does not exist in the installed pg_perf (use --no-cache for a harness check)"
    direct_jsonb="(SELECT coalesce(jsonb_agg(t), '[]') FROM ($QUERY) t)"
    # warm FORMAT CALL: stores the entry, checks that the next call is a hit equal to the
    # direct query's result.
    warm() {
        local format=$1 call=$2 s0 s1 s2 same
        log "warming the cache ($format)"
        s0=$(stats "$format")
        # perf.cache_strict: a refusal is an ERROR naming the reason, instead of a silent miss.
        sql "$DB" -c "SET perf.cache_strict = on" -c "SELECT $call" >/dev/null ||
            die "the first $format call failed (refused? see above)"
        s1=$(stats "$format")
        [ "$(field "$s1" 8)" -ge 0 ] ||
            die "the first $format call stored no entry in perf.cache_entries() ($(describe_delta "$s0" "$s1"); refusals: $(refusals))"
        same=$(sql "$DB" -c "SET perf.cache_strict = on" -c "SELECT $call::jsonb = $direct_jsonb")
        s2=$(stats "$format")
        [ "$(delta "$s1" "$s2" 2)" = 0 ] && [ "$(delta "$s1" "$s2" 8)" -ge 1 ] ||
            die "the second $format call was not a hit ($(describe_delta "$s1" "$s2"), entry hits $(field "$s1" 8) -> $(field "$s2" 8); refusals: $(refusals))"
        [ "$same" = t ] || die "the cached $format result differs from the direct query's"
    }
    # --fill: N small entries first, in batches (one statement each); all must be stored.
    FILL_QUERY="SELECT \$1::int"
    fill_entries() { sql "$DB" -c "SELECT entries FROM perf.cache_stats()"; }
    if [ "$fill" -gt 0 ]; then
        log "filling the cache with $fill small entries"
        for ((lo = 1; lo <= fill; lo += 50000)); do
            hi=$((lo + 49999 > fill ? fill : lo + 49999))
            sql "$DB" -c "SET perf.cache_strict = on" -c "SELECT count(perf.cached_json_text('$FILL_QUERY', jsonb_build_array(i), '1 hour')) FROM generate_series($lo, $hi) i" >/dev/null ||
                die "filling the cache failed (refused? see above)"
        done
        n_filled=$(sql "$DB" -c "SELECT count(*) FROM perf.cache_entries() WHERE query = '$FILL_QUERY'")
        [ "$n_filled" = "$fill" ] ||
            die "after filling, $n_filled entries of '$FILL_QUERY' are cached, not $fill (perf.cache_size_mb too small? $(sql "$DB" -F ' ' -c "SELECT 'entries', entries, 'bytes', bytes, 'capacity', capacity_bytes, 'evictions', evictions FROM perf.cache_stats()"))"
        fill_before=$(sql "$DB" -F ' ' -c "SELECT entries, bytes, capacity_bytes, evictions FROM perf.cache_stats()")
    fi
    warm json "$CACHED"
    warm jsonb "$CACHED_JSONB"
    # Both forms give the client the same text.
    [ "$(sql "$DB" -c "SELECT $CACHED::text = $CACHED_JSONB::text")" = t ] ||
        die "perf.cached_json_text and perf.cached_json return different texts"
    result_bytes=$(sql "$DB" -c "SELECT octet_length($CACHED::text)")
fi

# --- the pgbench scripts ---
echo "$QUERY;" >"$BENCH_TMP/direct.sql"
echo "SELECT $CACHED;" >"$BENCH_TMP/hit.sql"
echo "SELECT $CACHED_JSONB;" >"$BENCH_TMP/jsonb.sql"
echo "SELECT 1;" >"$BENCH_TMP/select1.sql"

# run_pgbench KIND CLIENTS: one pgbench run; sets RUN_TPS and RUN_TXNS. Background + wait,
# so the cleanup trap can kill it.
run_pgbench() {
    local kind=$1 c=$2 out="$BENCH_TMP/pgbench.out" pid rc=0 failed
    "$(pgbin pgbench)" -n -M "$PROTOCOL" -h 127.0.0.1 -p "$port" -U postgres -f "$BENCH_TMP/$kind.sql" \
        -c "$c" -j "$c" -T "$SECS" "$DB" >"$out" 2>&1 &
    pid=$!
    _bench_pids+=("$pid")
    wait "$pid" || rc=$?
    _bench_pids=()
    [ "$rc" = 0 ] || { tail -n 20 "$out" >&2; die "pgbench ($kind, $c clients) failed with status $rc"; }
    RUN_TPS=$(awk '/^tps = / { print $3; exit }' "$out")
    RUN_TXNS=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$out")
    failed=$(awk -F': ' '/^number of failed transactions/ { split($2, a, " "); print a[1]; exit }' "$out")
    [[ "$RUN_TPS" =~ ^[0-9.]+$ && "$RUN_TXNS" =~ ^[0-9]+$ ]] || { cat "$out" >&2; die "could not read pgbench's output"; }
    [ "${failed:-0}" = 0 ] || { cat "$out" >&2; die "pgbench ($kind, $c clients): $failed failed transactions"; }
    [ "$RUN_TXNS" -gt 0 ] || die "pgbench ($kind, $c clients) completed no transaction in ${SECS}s"
}

# measure KIND CLIENTS: run_pgbench, and for the hit runs (hit, jsonb) check that every call
# was a hit of that kind's entry.
hit_total=0 miss_total=0 refusal_total=0 entry_total=0 txn_total=0
measure() {
    local kind=$1 c=$2 before after dh dm dr de format
    case "$kind" in hit) format=json ;; jsonb) format=jsonb ;; *) run_pgbench "$kind" "$c"; return 0 ;; esac
    before=$(stats "$format")
    run_pgbench "$kind" "$c"
    after=$(stats "$format")
    dh=$(delta "$before" "$after" 1) dm=$(delta "$before" "$after" 2) dr=$(delta "$before" "$after" 3)
    de=$(delta "$before" "$after" 8)
    if [ "$(field "$before" 8)" -lt 0 ] || [ "$(field "$after" 8)" -lt 0 ] || [ "$dm" != 0 ] || [ "$dr" != 0 ] ||
        [ "$dh" -lt "$RUN_TXNS" ]; then
        die "HIT RUN WAS NOT ALL HITS ($kind, $c clients, $RUN_TXNS calls): $(describe_delta "$before" "$after"); entry hits $(field "$before" 8) -> $(field "$after" 8) (-1 = no entry); refusals: $(refusals). The hit numbers would be wrong; nothing reported."
    fi
    if [ "$de" -lt "$RUN_TXNS" ]; then
        printf '\033[1;33mwarning:\033[0m entry hit counter grew by %s for %s hits (%s clients): lost updates?\n' "$de" "$RUN_TXNS" "$c" >&2
    fi
    hit_total=$((hit_total + dh)) miss_total=$((miss_total + dm)) refusal_total=$((refusal_total + dr))
    entry_total=$((entry_total + de)) txn_total=$((txn_total + RUN_TXNS))
}

if [ "$with_cache" = 1 ]; then kinds=(direct select1 hit jsonb); else kinds=(direct select1); fi
# One round: the tight ratios (hits vs SELECT 1, hits with 2 clients vs 1) on adjacent runs,
# the direct query (target 100x, a wide margin) at the ends. Reversed every other round.
if [ "$with_cache" = 1 ]; then
    order=(direct:1 jsonb:1 select1:1 hit:1 hit:2 select1:2 jsonb:2 direct:2)
else
    order=(direct:1 select1:1 select1:2 direct:2)
fi

log "warm-up: each kind once, 2 clients, ${SECS}s"
for k in "${kinds[@]}"; do measure "$k" 2; done

declare -A tps
printf '# raw pgbench tps per run, for debugging only (never report absolute tps: bench/README.md)\nround\tkind\tclients\ttps\ttransactions\n' >"$runs"
for ((r = 1; r <= ROUNDS; r++)); do
    seq=("${order[@]}")
    if ((r % 2 == 0)); then
        seq=()
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do seq+=("${order[$i]}"); done
    fi
    log "round $r/$ROUNDS: ${seq[*]}"
    for run in "${seq[@]}"; do
        k=${run%:*} c=${run#*:}
        measure "$k" "$c"
        tps[$k.$c.$r]=$RUN_TPS
        printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$k" "$c" "$RUN_TPS" "$RUN_TXNS" >>"$runs"
    done
done

# --- ratios: per round, then the median over rounds ---
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6g\n", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fmt() { awk -v x="$1" 'BEGIN { if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x }'; }
# verdict VALUE OP TARGET
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=" ? x >= t : op == "<=" ? x <= t : x > t); print (ok ? "PASS" : "FAIL") }'; }

# row LABEL CLIENTS OP TARGET NUM_KIND NUM_CLIENTS DEN_KIND DEN_CLIENTS: the ratio
# tps[NUM] / tps[DEN] per round (a throughput ratio, or the inverse latency ratio).
row() {
    local label=$1 clients=$2 op=$3 target=$4 nk=$5 nc=$6 dk=$7 dc=$8 vals=() cells="" med v r
    for ((r = 1; r <= ROUNDS; r++)); do
        v=$(ratio "${tps[$nk.$nc.$r]}" "${tps[$dk.$dc.$r]}")
        vals+=("$v")
        cells="$cells $(fmt "$v") |"
    done
    med=$(median "${vals[@]}")
    if [ -n "$op" ]; then
        printf '| %s | %s | %s %s | **%s** |%s %s |\n' "$label" "$clients" "$op" "$target" "$(fmt "$med")" "$cells" "$(verdict "$med" "$op" "$target")"
    else
        printf '| %s | %s | — | %s |%s — |\n' "$label" "$clients" "$(fmt "$med")" "$cells"
    fi
}

direct_ms=()
for ((r = 1; r <= ROUNDS; r++)); do direct_ms+=("$(awk -v t="${tps[direct.1.$r]}" 'BEGIN { printf "%.1f\n", 1000 / t }')"); done
direct_med=$(median "${direct_ms[@]}")
calib_warn=""
if awk -v x="$direct_med" 'BEGIN { exit !(x < 50 || x > 100) }'; then
    calib_warn=" — outside 50–100 ms: adjust BENCH_ROWS (now $ROWS)"
fi

fill_note=""
if [ "$fill" -gt 0 ]; then
    n_filled=$(sql "$DB" -c "SELECT count(*) FROM perf.cache_entries() WHERE query = '$FILL_QUERY'")
    [ "$n_filled" = "$fill" ] ||
        die "only $n_filled of the $fill fill entries are still cached at the end: the hit runs did not run with a full cache"
    fill_after=$(sql "$DB" -F ' ' -c "SELECT entries, bytes, capacity_bytes, evictions FROM perf.cache_stats()")
    fill_note="cache filled first with $fill entries \`perf.cached_json_text('$FILL_QUERY', jsonb_build_array(i), '1 hour')\`, i = 1..$fill, all still cached at the end; perf.cache_stats (entries bytes capacity_bytes evictions) after the fill: $fill_before, at the end: $fill_after"
fi
[ "$with_cache" = 0 ] || [ "$(bench_pg_perf_sum)" = "$so_sum" ] ||
    die "pg_perf.so was replaced during the run (someone reinstalled it); run again"
elapsed=$((SECONDS - start))
{
    if [ "$with_cache" = 1 ]; then
        echo "cache_bench: direct aggregate (A) vs perf.cached_json_text hit (B) and perf.cached_json hit (B') vs \`SELECT 1\` (C), pgbench -M $PROTOCOL over 127.0.0.1:$port, $ROUNDS round(s) of ${SECS}s runs interleaved (order reversed every round); ratios per round, median in bold"
    else
        echo "cache_bench --no-cache: HARNESS CHECK ONLY, no cache numbers. Direct aggregate (A) vs \`SELECT 1\` (C), pgbench -M $PROTOCOL over 127.0.0.1:$port, $ROUNDS round(s) of ${SECS}s runs"
    fi
    echo
    printf '| ratio | clients | target | median |'
    for ((r = 1; r <= ROUNDS; r++)); do printf ' r%s |' "$r"; done
    printf ' verdict |\n|---|---:|---|---:|'
    for ((r = 1; r <= ROUNDS; r++)); do printf -- '---:|'; done
    printf -- '---|\n'
    if [ "$with_cache" = 1 ]; then
        row "direct / hit (latency)" 1 ">=" 100 hit 1 direct 1
        row "direct / hit (latency)" 2 ">=" 100 hit 2 direct 2
        row "hit / SELECT 1 (latency)" 1 "<=" 1.5 select1 1 hit 1
        row "hit / SELECT 1 (latency)" 2 "<=" 1.5 select1 2 hit 2
        row "hit throughput, 2 clients / 1 client" "2 vs 1" ">" 1 hit 2 hit 1
        row "B' jsonb form: direct / hit (latency)" 1 ">=" 100 jsonb 1 direct 1
        row "B' jsonb form: direct / hit (latency)" 2 ">=" 100 jsonb 2 direct 2
        row "B' jsonb form: hit / SELECT 1 (latency)" 1 "<=" 1.5 select1 1 jsonb 1
        row "B' jsonb form: hit / SELECT 1 (latency)" 2 "<=" 1.5 select1 2 jsonb 2
        row "B' jsonb form: hit throughput, 2 clients / 1 client" "2 vs 1" ">" 1 jsonb 2 jsonb 1
    else
        row "direct / SELECT 1 (latency)" 1 "" "" select1 1 direct 1
        row "direct / SELECT 1 (latency)" 2 "" "" select1 2 direct 2
    fi
    row "SELECT 1 throughput, 2 clients / 1 (reference)" "2 vs 1" "" "" select1 2 select1 1
    row "direct throughput, 2 clients / 1 (reference)" "2 vs 1" "" "" direct 2 direct 1
    echo
    echo "- latency ratio X / Y = throughput(Y) / throughput(X) at the same number of clients, each pair measured in the same round"
    echo "- query (A, and inside B): \`$QUERY\` — $n_groups rows; table $TABLE: $ROWS rows, $table_size, frozen, analyzed, autovacuum off$([ "$with_cache" = 1 ] && echo ", tracked with perf.cache_track")"
    if [ "$with_cache" = 1 ]; then
        echo "- B: \`SELECT $CACHED\` (returns json) — result $result_bytes bytes of JSON, checked equal to the direct query's"
        echo "- B': \`SELECT $CACHED_JSONB\` (returns jsonb; the same text reaches the client, rendered by jsonb_out on every call), checked equal to the direct query's and to B's text"
        echo "- cache during the hit runs of B and B' (perf.cache_stats deltas, pgbench warm-up runs included): hit ratio $(awk -v h="$hit_total" -v m="$miss_total" 'BEGIN { printf "%.4f", (h + m) ? h / (h + m) : 0 }') ($hit_total hits, $miss_total misses, $refusal_total refusals, for $txn_total calls; the entry's own counter +$entry_total). The script fails if any hit-run call misses or is refused."
    fi
    [ -z "$fill_note" ] || echo "- $fill_note"
    echo "- calibration only, not a result: direct query latency, 1 client, median over rounds $direct_med ms (per round: ${direct_ms[*]})$calib_warn"
    echo "- server: $server_version; shared_preload_libraries='$preload'; $settings; PGOPTIONS='$PGOPTIONS'"
    if [ "$with_cache" = 1 ]; then
        echo "- pg_perf.so: $so_desc, sha256 $so_sum${so_note:+ — WARNING: $so_note}"
    fi
    echo "- commit: $(bench_describe_repo)"
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), took ${elapsed}s"
} | tee "$report"
log "saved to ${report#"$REPO_ROOT"/} (raw runs: ${runs#"$REPO_ROOT"/})"
