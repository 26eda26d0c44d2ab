#!/usr/bin/env bash
# Partition maintenance, pg_perf side by side with pg_partman 5.1.0 (or 4.7.2: whichever is
# installed; a benchmark only, never a dependency), each in its own fresh database on the same
# server, interleaved in rounds:
#   noop     a maintenance run over 100 daily sets that are fully premade (nothing to do):
#            perf.partition_maintenance() vs partman.run_maintenance(), the second run in a
#            session (as in a scheduler's long-lived worker)
#   premake  making one daily set with 1000 partitions ahead (premake 1000, start today):
#            perf.partition_table(...) vs partman.create_parent(...)
#   drain    moving 100,000 rows out of the default partition into 10 new daily partitions:
#            perf.partition_maintenance(set) vs partman.partition_data_time(set, 100)
#   ddl      (with premake) the floor under premake: the same 1001 partitions and default
#            made by a bare PL/pgSQL loop of CREATE TABLE ... PARTITION OF and nothing else,
#            in pg_perf's database, also against pg_partman's premake time. Each such
#            statement rebuilds the parent's partition descriptor (it parses every existing
#            partition's bound), so n partitions cost O(n^2) in PostgreSQL itself.
#   future   (a check, not timed) a row for a day beyond the premade ones sits in the default
#            partition, then premake grows so that day's partition is due: each tool's
#            maintenance must make it and move the row (pg_partman raises "updated partition
#            constraint for default partition would be violated").
# Reported as ratios pg_perf / pg_partman (bench/README.md: this machine's speed swings, so
# only side-by-side ratios count); the median over the rounds, next to every round's value;
# once by wall clock and once by the backend's own CPU time (steadier on a loaded host).
# Targets: noop and premake <= 0.20, drain <= 0.50.
#
# Usage: bench/partition_bench.sh [--port PORT] [--rounds N] [--cases "noop premake drain"]
#   --port PORT  server on 127.0.0.1:PORT (default $TEST_PORT, the test cluster), preloading
#                pg_perf, with pg_partman's extension files installed in its share directory:
#                5.1.0 from source: bench/install-partman.sh DIR (a checkout of
#                github.com/pgpartman/pg_partman at v5.1.0; SQL only, no background worker);
#                4.7.2: apt-get download postgresql-15-partman; dpkg -x postgresql-15-partman_*.deb x;
#                cp x/usr/share/postgresql/15/extension/pg_partman* "$($PG_CONFIG --sharedir)/extension/"
#   --rounds N   rounds (default 3)
#   --cases LIST which cases to run (default: noop premake drain future; ddl comes with premake)
# Creates and drops the databases bench_part_perf and bench_part_partman there.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
cd "$REPO_ROOT"

port=${TEST_PORT:-55433}
rounds=3
cases="noop premake drain future"
while [ $# -gt 0 ]; do
    case $1 in
    --port) port=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
    esac
done

q() { local db=$1; shift; psql_at "$port" -d "$db" -X -q -v ON_ERROR_STOP=1 "$@"; }

# pg_partman 5 dropped the 'native' type and the named intervals ('daily') of 4.x.
partman_version=$(psql_at "$port" -d postgres -X -At -c "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_partman'")
[ -n "$partman_version" ] || die "pg_partman is not installed on the server on port $port (see the usage above)"
case $partman_version in
4.*) partman_daily="'native', 'daily'" ;;
*) partman_daily="'1 day'" ;;
esac
log "pg_partman $partman_version"
# CPU time (user + system) of the backend itself, in clock ticks, from /proc/self/stat (the
# server runs as a superuser-owned process reading its own file): unlike the wall clock, it
# does not count the time this loaded, shared host spends running other processes.
cpu_ticks="(SELECT s[12]::bigint + s[13]::bigint FROM regexp_split_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ') s)"
tck=$(getconf CLK_TCK)
# "wall_ms cpu_ms" one statement takes, measured in the server (no connection or psql
# overhead). With a third argument "warm", the statement runs once untimed first in the same
# session (as a scheduler's long-lived worker would run it: functions compiled, caches warm).
timed() {
    local db=$1 sql=$2 warm=${3:-}
    local pre="SET bench.ms = 0"
    [ "$warm" = warm ] && pre="DO \$\$ BEGIN PERFORM count(*) FROM ($sql) s; END \$\$"
    q "$db" -At -c "SET client_min_messages = warning" -c "SET TimeZone = 'UTC'" -c "$pre" -c "
        DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); c0 bigint := $cpu_ticks; BEGIN
            PERFORM count(*) FROM ($sql) s;
            PERFORM set_config('bench.ms', (extract(epoch FROM clock_timestamp() - t0) * 1000)::text, false);
            PERFORM set_config('bench.cpu', (($cpu_ticks - c0) * 1000.0 / $tck)::text, false);
        END \$\$" -c "SELECT round(current_setting('bench.ms')::numeric, 1) || ' ' || round(current_setting('bench.cpu')::numeric)"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

fresh_db() {
    local db=$1 ext=$2
    psql_at "$port" -d postgres -X -q -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    if [ "$ext" = partman ]; then
        q "$db" -c "CREATE SCHEMA partman" -c "CREATE EXTENSION pg_partman SCHEMA partman"
    else
        q "$db" -c "CREATE EXTENSION pg_perf"
    fi
}

# noop: 100 daily sets, premade 4 ahead; the first maintenance run does any work left, the
# timed one has nothing to do.
setup_noop() {
    local db=$1 ext=$2 i
    fresh_db "$db" "$ext"
    for i in $(seq 1 100); do
        echo "CREATE TABLE t$i (id bigint, at timestamptz NOT NULL, v int) PARTITION BY RANGE (at);"
        echo "CREATE INDEX ON t$i (at);"
        if [ "$ext" = partman ]; then
            echo "SELECT partman.create_parent('public.t$i', 'at', $partman_daily, p_premake := 4);"
        else
            echo "SELECT count(*) FROM perf.partition_table('t$i', 'at', '1 day', premake => 4);"
        fi
    done | q "$db" >/dev/null
    if [ "$ext" = partman ]; then
        q "$db" -c "SELECT partman.run_maintenance()" >/dev/null
    else
        q "$db" -c "SELECT count(*) FROM perf.partition_maintenance()" >/dev/null
    fi
}

# drain: a set made today with 4 premade partitions and a default; 100,000 rows 20..11 days
# ago land in the default partition.
# A fresh database with table NAME (id, at, v), an index on at, made a daily set from today
# with 4 premade partitions and a default, by either tool.
daily_set_of_4() {
    local db=$1 ext=$2 name=$3
    fresh_db "$db" "$ext"
    q "$db" -c "CREATE TABLE $name (id bigint, at timestamptz NOT NULL, v int) PARTITION BY RANGE (at)" \
        -c "CREATE INDEX ON $name (at)"
    if [ "$ext" = partman ]; then
        q "$db" -c "SELECT partman.create_parent('public.$name', 'at', $partman_daily, p_premake := 4,
                                                 p_start_partition := to_char(now(), 'YYYY-MM-DD'))" >/dev/null
    else
        q "$db" -c "SELECT count(*) FROM perf.partition_table('$name', 'at', '1 day', premake => 4)" >/dev/null
    fi
}

setup_drain() {
    local db=$1 ext=$2
    daily_set_of_4 "$db" "$ext" d
    q "$db" -c "INSERT INTO d SELECT g, date_trunc('day', now()) - interval '20 days' + (g % 10) * interval '1 day'
                                        + (g % 86400) * interval '1 second', g
                  FROM generate_series(1, 100000) g" -c "VACUUM ANALYZE d"
}

# future (a check): a set premade 4 days ahead gets a row for day +6 (in the default
# partition), then premake 8: maintenance must make day +6's partition with the row in it.
# Prints "ok" or the error the maintenance raised.
check_future() {
    local db=$1 ext=$2 out where
    daily_set_of_4 "$db" "$ext" f
    # a row of today (pg_partman 5 premakes ahead of the newest row in a partition) and the
    # early one for day +6
    q "$db" -c "INSERT INTO f VALUES (1, now(), 1), (2, date_trunc('day', now()) + interval '6 days 1 hour', 2)"
    [ "$(q "$db" -At -c "SELECT tableoid::regclass FROM f WHERE id = 2")" = f_default ] || die "$ext: the row is not in f_default"
    if [ "$ext" = partman ]; then
        out=$(q "$db" -c "UPDATE partman.part_config SET premake = 8 WHERE parent_table = 'public.f'" \
                      -c "SELECT partman.run_maintenance('public.f')" 2>&1 >/dev/null)
    else
        out=$(q "$db" -c "UPDATE perf.partition_config SET premake = 8 WHERE parent = 'f'::regclass" \
                      -c "SELECT count(*) FROM perf.partition_maintenance('f')" 2>&1 >/dev/null)
    fi
    where=$(q "$db" -At -c "SELECT tableoid::regclass FROM f WHERE id = 2")
    if [ -z "$out" ]; then
        echo "ok, the row is now in $where"
    else
        echo "failed: $(echo "$out" | grep -m1 ERROR | cut -c1-140) (the row is in $where)"
    fi
}

has_case() { [[ " $cases " == *" $1 "* ]]; }
# The floor: n+1 partitions from today and a default, one CREATE TABLE ... PARTITION OF each.
bare_premake_fn="CREATE FUNCTION bench_bare_premake(n int) RETURNS int LANGUAGE plpgsql AS \$f\$
    DECLARE d timestamptz := date_trunc('day', now());
    BEGIN
        FOR i IN 0 .. n LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF b FOR VALUES FROM (%L) TO (%L)',
                           'b_p' || to_char(d + i * interval '1 day', 'YYYYMMDD'),
                           d + i * interval '1 day', d + (i + 1) * interval '1 day');
        END LOOP;
        CREATE TABLE b_default PARTITION OF b DEFAULT;
        RETURN n + 2;
    END \$f\$"

declare -A results
for r in $(seq 1 "$rounds"); do
    order="perf partman"
    [ $((r % 2)) = 0 ] && order="partman perf"
    for ext in $order; do
        db=bench_part_$ext
        log "round $r: $ext"
        if has_case noop; then
        setup_noop "$db" "$ext"
        if [ "$ext" = partman ]; then
            ms=$(timed "$db" "SELECT partman.run_maintenance()" warm)
        else
            ms=$(timed "$db" "SELECT * FROM perf.partition_maintenance()" warm)
        fi
        results[noop,$ext,$r]=$ms
        fi

        if has_case premake; then
        fresh_db "$db" "$ext"
        q "$db" -c "CREATE TABLE p (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at)"
        if [ "$ext" = partman ]; then
            ms=$(timed "$db" "SELECT partman.create_parent('public.p', 'at', $partman_daily, p_premake := 1000,
                                                          p_start_partition := to_char(now(), 'YYYY-MM-DD'))")
        else
            ms=$(timed "$db" "SELECT * FROM perf.partition_table('p', 'at', '1 day', premake => 1000)")
        fi
        n=$(q "$db" -At -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'p'::regclass")
        [ "$n" -ge 1001 ] || die "$ext made $n partitions, not 1001+"
        results[premake,$ext,$r]=$ms
        if [ "$ext" = perf ]; then
            q "$db" -c "CREATE TABLE b (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at)" -c "$bare_premake_fn"
            ms=$(timed "$db" "SELECT bench_bare_premake(1000)")
            n=$(q "$db" -At -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'b'::regclass")
            [ "$n" = 1002 ] || die "the bare loop made $n partitions, not 1002"
            results[ddl,perf,$r]=$ms
        fi
        fi

        if has_case drain; then
        setup_drain "$db" "$ext"
        if [ "$ext" = partman ]; then
            ms=$(timed "$db" "SELECT partman.partition_data_time('public.d', p_batch_count := 100)")
        else
            ms=$(timed "$db" "SELECT * FROM perf.partition_maintenance('d')")
        fi
        left=$(q "$db" -At -c "SELECT count(*) FROM ONLY d_default")
        total=$(q "$db" -At -c "SELECT count(*) FROM d")
        [ "$left" = 0 ] && [ "$total" = 100000 ] || die "$ext drain left $left rows in the default ($total in total)"
        results[drain,$ext,$r]=$ms
        fi

        if has_case future && [ "$r" = 1 ]; then
            results[future,$ext]=$(check_future "$db" "$ext")
        fi
    done
done

report() {
    local field=$1 unit=$2 c pm r a b
    printf '\n%s\n%-8s %12s %12s %8s   %s\n' "$unit" case "pg_perf ms" "partman ms" ratio "rounds (pg_perf/partman)"
    for c in noop premake ddl drain; do
        has_case "$c" || { [ "$c" = ddl ] && has_case premake; } || continue
        # ddl: the bare loop against pg_partman's premake
        pm=$c
        [ "$c" = ddl ] && pm=premake
        ratios=()
        perf_ms=()
        pm_ms=()
        for r in $(seq 1 "$rounds"); do
            a=$(echo "${results[$c,perf,$r]}" | cut -d' ' -f"$field")
            b=$(echo "${results[$pm,partman,$r]}" | cut -d' ' -f"$field")
            ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", (b > 0) ? a / b : 0}')")
            perf_ms+=("$a")
            pm_ms+=("$b")
        done
        printf '%-8s %12s %12s %8s   %s\n' "$c" \
            "$(printf '%s\n' "${perf_ms[@]}" | median)" "$(printf '%s\n' "${pm_ms[@]}" | median)" \
            "$(printf '%s\n' "${ratios[@]}" | median)" "${ratios[*]}"
    done
}
echo "pg_partman $partman_version"
report 1 "wall clock"
report 2 "backend CPU time (resolution $((1000 / tck)) ms)"
if has_case future; then
    printf '\nfuture row in the default partition, then its partition made by maintenance:\n'
    printf '  pg_perf:    %s\n  pg_partman: %s\n' "${results[future,perf]}" "${results[future,partman]}"
fi
for ext in perf partman; do
    psql_at "$port" -d postgres -X -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS bench_part_$ext WITH (FORCE)"
done
