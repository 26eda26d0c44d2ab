#!/usr/bin/env bash
# Incremental views vs full refresh, side by side in one run, in interleaved rounds:
#   R    REFRESH MATERIALIZED VIEW of a GROUP BY aggregate over BENCH_ROWS rows (default 2M)
#   I1   perf.refresh_incremental() of the equivalent incremental view after 1 changed row
#        (a committed UPDATE of one row's amount and qty: a delete and an insert in one
#        group), in a session that applied before (plans cached: an application calling
#        perf.fresh() on a pooled connection)
#   I1k  the same after 1,000 changed rows (one UPDATE statement of 1,000 random rows)
#   C1   as I1 in a new session (the scheduler's job runs each apply in a new process)
# and the write overhead of the view's triggers on INSERT, same table shape with and without
# an incremental view on it:
#   W1   10,000 single-row INSERT statements (a PL/pgSQL loop, one transaction)
#   W100k one INSERT ... SELECT of 100,000 rows
# Time is measured inside the server (clock_timestamp() around the statement); reported as
# ratios only (bench/README.md): R / I1 (target >= 100), R / I1k, R / C1, W with view /
# W without.
# Each round's ratio is taken within the round; the median over the rounds is reported.
# The source table has an index on the GROUP BY columns (it serves max()'s recomputation of
# the groups that lost rows; the matview's refresh does not use it).
#
# Usage: bench/incremental_bench.sh [--port PORT] [--rounds N]
#   --port PORT   server on 127.0.0.1:PORT (default $TEST_PORT), preloading pg_perf (use a
#                 release build: scripts/install-ext.sh --release). Connects as postgres;
#                 DROPs and CREATEs the database incremental_bench there (dropped at the end).
#   --rounds N    rounds (default 5)
# Environment: BENCH_ROWS (default 2000000).
# Output: a markdown table on stdout, also saved to bench/out/incremental_bench.md.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
cd "$REPO_ROOT"

port=${TEST_PORT:-55433}
rounds=5
rows=${BENCH_ROWS:-2000000}
while [ $# -gt 0 ]; do
    case $1 in
    --port) port=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -h | --help) sed -n '2,/^source/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument $1" ;;
    esac
done
DB=incremental_bench
OUT=bench/out/incremental_bench.md
mkdir -p bench/out

q() { psql_at "$port" -d "$DB" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# ms of one statement run in its own transaction, measured in the server.
timed() {
    q -c "SET client_min_messages = warning" -c "
        DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
            EXECUTE \$sql\$ $1 \$sql\$;
            PERFORM set_config('bench.ms', (extract(epoch FROM clock_timestamp() - t0) * 1000)::text, false);
        END \$\$" -c "SELECT round(current_setting('bench.ms')::numeric, 2)"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }

psql_at "$port" -d postgres -X -q -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
trap 'psql_at "$port" -d postgres -X -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

QUERY="SELECT region, product, count(*) AS orders, sum(amount) AS revenue, avg(qty) AS avg_qty, max(amount) AS largest FROM sales GROUP BY region, product"
log "loading $rows rows"
q -c "CREATE EXTENSION pg_perf" \
  -c "CREATE TABLE sales (id bigserial PRIMARY KEY, region int NOT NULL, product int NOT NULL,
                          amount numeric(12,2) NOT NULL, qty int NOT NULL)" \
  -c "INSERT INTO sales (region, product, amount, qty)
      SELECT i % 97, (i / 97) % 53, (i % 10007) / 100.0, 1 + i % 9 FROM generate_series(1, $rows) i" \
  -c "CREATE INDEX ON sales (region, product)" \
  -c "VACUUM ANALYZE sales" \
  -c "CREATE MATERIALIZED VIEW sales_mv AS $QUERY" \
  -c "SELECT perf.create_incremental_view('sales_iv', '$QUERY', schedule => NULL)" >/dev/null
groups=$(q -c "SELECT count(*) FROM sales_iv")
same=$(q -c "SELECT count(*) = 0 FROM ((TABLE sales_mv EXCEPT SELECT region, product, orders, revenue, avg_qty, largest FROM sales_iv)
             UNION ALL (SELECT region, product, orders, revenue, avg_qty, largest FROM sales_iv EXCEPT TABLE sales_mv)) d")
[ "$same" = t ] || die "the incremental view differs from the matview after creation"

# Write-overhead tables: same shape, one with an incremental view.
q -c "CREATE TABLE w_plain (id bigserial PRIMARY KEY, region int NOT NULL, amount numeric(12,2) NOT NULL)" \
  -c "CREATE TABLE w_view (LIKE w_plain INCLUDING ALL)" \
  -c "SELECT perf.create_incremental_view('w_iv', 'SELECT region, count(*) AS n, sum(amount) AS total FROM w_view GROUP BY region', schedule => NULL)" >/dev/null

W1="DO \$w\$ BEGIN FOR i IN 1..10000 LOOP INSERT INTO TBL (region, amount) VALUES (i % 97, i % 1000); END LOOP; END \$w\$"
W100="INSERT INTO TBL (region, amount) SELECT i % 97, i % 1000 FROM generate_series(1, 100000) i"

UPD1="UPDATE sales SET amount = amount + 1, qty = qty + 1 WHERE id = (SELECT 1 + (random() * ($rows - 1))::bigint)"
UPD1K="UPDATE sales SET amount = amount + 1, qty = qty + 1 WHERE id IN
       (SELECT 1 + (random() * ($rows - 1))::bigint FROM generate_series(1, 1000))"
APPLY="SELECT perf.refresh_incremental('sales_iv')"
declare -a r_ms i1_ms i1k_ms c1_ms rr1 rr1k rc1 w1p w1v w100p w100v rw1 rw100
for round in $(seq 1 "$rounds"); do
    log "round $round/$rounds"
    one() {
        case $1 in
        R) r=$(timed "REFRESH MATERIALIZED VIEW sales_mv") ;;
        # Warm: the session applied before (an application calling perf.fresh() on a pooled
        # connection: the apply function's plans are cached). Each change commits first.
        I)
            mapfile -t out < <(q -c "$UPD1" -c "$APPLY" \
                -c "$UPD1" -c "DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
                    PERFORM perf.refresh_incremental('sales_iv');
                    PERFORM set_config('bench.i1', (extract(epoch FROM clock_timestamp() - t0) * 1000)::text, false);
                END \$\$" \
                -c "$UPD1K" -c "DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
                    PERFORM perf.refresh_incremental('sales_iv');
                    PERFORM set_config('bench.i1k', (extract(epoch FROM clock_timestamp() - t0) * 1000)::text, false);
                END \$\$" \
                -c "SELECT round(current_setting('bench.i1')::numeric, 2), round(current_setting('bench.i1k')::numeric, 2)" | grep '|')
            i1=${out[-1]%%|*}; i1k=${out[-1]##*|} ;;
        # Cold: a new session, as the scheduler's job runs it (one runner process per run).
        C)
            q -c "$UPD1" >/dev/null
            c1=$(timed "$APPLY") ;;
        esac
    }
    if [ $((round % 2)) = 1 ]; then order="R I C"; else order="C I R"; fi
    for s in $order; do one "$s"; done
    r_ms+=("$r"); i1_ms+=("$i1"); i1k_ms+=("$i1k"); c1_ms+=("$c1")
    rr1+=("$(ratio "$r" "$i1")"); rr1k+=("$(ratio "$r" "$i1k")"); rc1+=("$(ratio "$r" "$c1")")
    if [ $((round % 2)) = 1 ]; then order="plain view"; else order="view plain"; fi
    for t in $order; do
        ms1=$(timed "${W1//TBL/w_$t}")
        ms100=$(timed "${W100//TBL/w_$t}")
        if [ "$t" = plain ]; then a1=$ms1; a100=$ms100; else b1=$ms1; b100=$ms100; fi
    done
    w1p+=("$a1"); w1v+=("$b1"); w100p+=("$a100"); w100v+=("$b100")
    rw1+=("$(ratio "$b1" "$a1")"); rw100+=("$(ratio "$b100" "$a100")")
    # Not timed: apply the write tables' log so it does not grow from round to round.
    q -c "SELECT perf.refresh_incremental('w_iv')" >/dev/null
done

same=$(q -c "REFRESH MATERIALIZED VIEW sales_mv" -c "SELECT count(*) = 0 FROM ((TABLE sales_mv EXCEPT SELECT region, product, orders, revenue, avg_qty, largest FROM sales_iv)
             UNION ALL (SELECT region, product, orders, revenue, avg_qty, largest FROM sales_iv EXCEPT TABLE sales_mv)) d")
[ "$same" = t ] || die "the incremental view differs from the matview at the end"

med() { printf '%s\n' "$@" | median; }
{
    echo "incremental_bench: $rows source rows, $groups groups, $rounds rounds; view equal to the matview at the start and after all rounds: yes"
    echo
    echo "| case | ms (median) | ratio (median) | rounds | target |"
    echo "|---|---|---|---|---|"
    echo "| R: REFRESH MATERIALIZED VIEW | $(med "${r_ms[@]}") | | ${r_ms[*]} | |"
    echo "| I1: incremental apply, 1 changed row (warm session) | $(med "${i1_ms[@]}") | R/I1 **$(med "${rr1[@]}")** | ${rr1[*]} | >= 100 |"
    echo "| I1k: incremental apply, 1,000 changed rows (warm session) | $(med "${i1k_ms[@]}") | R/I1k **$(med "${rr1k[@]}")** | ${rr1k[*]} | |"
    echo "| C1: incremental apply, 1 changed row, new session (as the job runs it) | $(med "${c1_ms[@]}") | R/C1 **$(med "${rc1[@]}")** | ${rc1[*]} | |"
    echo "| 10,000 single-row INSERTs, without / with view | $(med "${w1p[@]}") / $(med "${w1v[@]}") | with/without **$(med "${rw1[@]}")** | ${rw1[*]} | |"
    echo "| one 100,000-row INSERT, without / with view | $(med "${w100p[@]}") / $(med "${w100v[@]}") | with/without **$(med "${rw100[@]}")** | ${rw100[*]} | |"
} | tee "$OUT"
