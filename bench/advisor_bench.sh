#!/usr/bin/env bash
# The index advisor's "done when", measured side by side in one run (method 1: ratios only):
# a realistic workload (customers 1M rows, orders 2M, events 1M; 14 read shapes and 4 write
# shapes, each with a weight = calls per unit of time) is captured by pg_perf, then
#   (a) unindexed        only the primary keys
#   (b) pg_perf          (a) + every statement perf.suggest_indexes() returned, run as is
#   (c) baseline         (a) + one single-column btree per column in a WHERE/JOIN condition
# are timed in interleaved rounds: weighted time = sum over shapes of weight x median
# execution time (EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON)); the report gives (b)/(a) and
# (c)/(a) per round and their median, index storage of (b) vs (c), and the advisor's runtime
# on the captured workload and on an explicit list of 100 statements.
#
# Usage: bench/advisor_bench.sh
#   Measures the pg_perf.so installed now, in a private throwaway cluster (initdb in a temp
#   dir, unix socket only, as postgres; removed on exit). About 3-5 minutes on an idle
#   machine, most of it in the advisor calls.
# Environment:
#   BENCH_ROUNDS     measured rounds (default 5; plus one warm-up round that is not counted)
#   BENCH_REPS       executions of each shape per round and configuration, with different
#                    constants (default 5)
#   BENCH_SCALE      fraction of the row counts (default 1 = 1M/2M/1M; 0.1 for a quick check
#                    of the harness: the targets are only meaningful at 1)
#   BENCH_PORT       port of the private server (default 57401; names its socket file only)
#   BENCH_KEEP_TMP=1 keep the temp dir (data dir, generated SQL, raw EXPLAIN output)
#   TMPDIR           where the temp dir goes (default /var/tmp)
# Output: a markdown report on stdout, also saved to bench/out/advisor_bench.md; the raw
# per-execution times go to bench/out/advisor_bench.runs.tsv (debugging only, never report
# them: absolute times on this machine swing by +-40%).
BENCH_PORT=${BENCH_PORT:-57401}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^BENCH_PORT=/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//' >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument $1" ;;
    esac
done

ROUNDS=${BENCH_ROUNDS:-5}
REPS=${BENCH_REPS:-5}
SCALE=${BENCH_SCALE:-1}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive integer"
NC=$(awk -v s="$SCALE" 'BEGIN { printf "%d", 1000000 * s }')
NO=$((2 * NC))
NE=$NC
[ "$NC" -ge 10000 ] || die "BENCH_SCALE too small"
TARGET_PCT=5   # (b) <= 5% of (a)
TARGET_ADVISOR_S=2 # < 2 s for 100 statements

start=$SECONDS
bench_init
# On failure, show why the private server went away (a crash is a finding, not noise).
_advisor_exit() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -f "$BENCH_TMP/server.log" ]; then
        grep -E 'terminated by signal|PANIC|FATAL|ERROR' "$BENCH_TMP/server.log" | tail -n 5 | cut -c1-400 >&2 || true
    fi
    (exit "$rc")
    _bench_cleanup
}
trap _advisor_exit EXIT
so_sum=$(bench_pg_perf_sum)
so_desc=$(bench_describe_pg_perf)
[[ "$so_desc" == *"release build"* ]] ||
    printf '\033[1;33mwarning:\033[0m pg_perf.so is not a release build: %s\n' "$so_desc" >&2
elapsed() { echo "$((SECONDS - start))s"; }
RUNS_TSV="$BENCH_OUT/advisor_bench.runs.tsv"
REPORT="$BENCH_OUT/advisor_bench.md"
rm -f "$RUNS_TSV" "$REPORT"

# psql as postgres in database $1 of the private server.
dbpsql() {
    local db=$1
    shift
    as_postgres "$(pgbin psql)" -X -q -v ON_ERROR_STOP=1 -h "$BENCH_TMP" -p "$BENCH_PORT" -U postgres -d "$db" "$@"
}

# --- the workload -------------------------------------------------------------------------
# name | weight (calls per unit of time) | columns in WHERE/JOIN conditions (input of the
# baseline) | statement template. Placeholders (filled by bench_fill below, deterministic in
# the execution number i): {cid} a customer, {oid} an order, {roid} a recent order (one with
# events), {win_from}/{win_to} a 7-day window, {last_day}/{last_week}/{last_month} "now"
# minus 1/7/30 days, {tot_lo}/{tot_hi} a 0.50-wide total range, {country} one of DE GB FR NL,
# {cust_since} a customer sign-up date, {flag} fraud or chargeback, {amount}, {v}, {new_ts}
# after the newest order. The baseline column lists are written next to each statement (the
# columns of its WHERE and JOIN ... ON conditions, not ORDER BY/GROUP BY); primary-key
# columns are skipped when the baseline is built.
cat >"$BENCH_TMP/shapes.txt" <<'EOF'
c_pk|400|customers.id|SELECT id, email, country, created_at FROM customers WHERE id = {cid}
o_pk|400|orders.id|SELECT id, customer_id, status, total, created_at FROM orders WHERE id = {oid}
c_email|60|customers.email|SELECT id, email, country FROM customers WHERE lower(email) = 'user{cid}@example.com'
o_by_cust|60|orders.customer_id|SELECT id, status, total, created_at FROM orders WHERE customer_id = {cid}
o_cust_recent|40|orders.customer_id|SELECT id, status, total, created_at FROM orders WHERE customer_id = {cid} ORDER BY created_at DESC LIMIT 10
o_recent|40||SELECT id, customer_id, status, total, created_at FROM orders ORDER BY created_at DESC LIMIT 20
e_by_order|60|events.order_id|SELECT id, kind, payload, created_at FROM events WHERE order_id = {roid}
o_failed|10|orders.status orders.created_at|SELECT id, customer_id, total, created_at FROM orders WHERE status = 'failed' AND created_at >= '{win_from}' AND created_at < '{win_to}'
o_refunded|5|orders.status orders.created_at|SELECT count(*), sum(total) FROM orders WHERE status = 'refunded' AND created_at >= '{last_week}'
e_flagged|10|events.payload|SELECT id, order_id, created_at FROM events WHERE payload @> '{"flag": "{flag}"}'
join_country|5|orders.customer_id customers.id customers.country orders.created_at|SELECT c.id, c.email, count(*) AS orders, sum(o.total) AS revenue FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.country = 'IS' AND o.created_at >= '{last_month}' GROUP BY c.id, c.email
o_status_day|5|orders.created_at|SELECT status, count(*), sum(total) FROM orders WHERE created_at >= '{last_day}' GROUP BY status
o_total_range|5|orders.total|SELECT count(*), avg(total) FROM orders WHERE total BETWEEN {tot_lo} AND {tot_hi}
c_country_recent|10|customers.country customers.created_at|SELECT id, email, created_at FROM customers WHERE country = '{country}' AND created_at >= '{cust_since}' ORDER BY created_at DESC LIMIT 20
o_insert|200||INSERT INTO orders (customer_id, status, total, created_at, note) VALUES ({cid}, 'pending', {amount}, '{new_ts}', 'web checkout')
o_update|200|orders.id|UPDATE orders SET status = 'shipped' WHERE id = {roid}
e_insert|200||INSERT INTO events (order_id, kind, payload, created_at) VALUES ({roid}, 'viewed', '{"type": "viewed", "source": "web", "v": {v}}', '{new_ts}')
c_update|20|customers.id|UPDATE customers SET email = 'User{cid}@Example.com' WHERE id = {cid}
EOF
NSHAPES=$(grep -c . "$BENCH_TMP/shapes.txt")
chown postgres: "$BENCH_TMP/shapes.txt"

# --- the private server ---------------------------------------------------------------------
# autovacuum off (VACUUM/ANALYZE run at fixed points), jit off (compiling would only inflate
# the unindexed times, i.e. flatter the ratios), fsync off (a throwaway cluster; commits are
# not part of any measured time: writes are timed inside EXPLAIN ANALYZE and rolled back).
DATA="$BENCH_TMP/data"
log "initdb $DATA ($(elapsed))"
as_postgres "$(pgbin initdb)" -D "$DATA" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
bench_server_start "$DATA" -c shared_preload_libraries=pg_perf -c compute_query_id=on \
    -c shared_buffers=1GB -c jit=off -c autovacuum=off -c fsync=off -c synchronous_commit=off \
    -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=8GB -c checkpoint_timeout=30min \
    -c maintenance_work_mem=512MB -c timezone=UTC -c perf.worker_enabled=off
log "private server on $BENCH_TMP/.s.PGSQL.$BENCH_PORT: $(dbpsql postgres -At -c "SELECT current_setting('server_version') || ', shared_preload_libraries=' || current_setting('shared_preload_libraries') || ', compute_query_id=' || current_setting('compute_query_id')")"

# --- statement generator (in the postgres database, which nothing measures) -------------------
dbpsql postgres -v nc="$NC" -v no="$NO" -v ne="$NE" <<'EOF'
CREATE TABLE cfg AS SELECT :nc::bigint AS nc, :no::bigint AS no, :ne::bigint AS ne,
       timestamptz '2023-01-01 00:00:00+00' + interval '40000000 seconds' AS newest;
CREATE TABLE shapes (ord serial, name text, weight int, cols text, tmpl text, kind text);
EOF
dbpsql postgres -c "\\copy shapes (name, weight, cols, tmpl) FROM '$BENCH_TMP/shapes.txt' WITH (DELIMITER '|')"
dbpsql postgres <<'EOF'
UPDATE shapes SET kind = CASE WHEN tmpl ~* '^(insert|update|delete)' THEN 'write' ELSE 'read' END;
CREATE FUNCTION ts(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00' $$;
-- The statement of template t for execution number i (deterministic).
CREATE FUNCTION bench_fill(t text, i bigint) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    c cfg;
    lo numeric;
BEGIN
    SELECT * INTO c FROM cfg;
    lo := round(1 + ((i * 97) % 99000) / 100.0, 2);
    t := replace(t, '{cid}', ((i * 7919) % c.nc + 1)::text);
    t := replace(t, '{oid}', ((i * 104729) % c.no + 1)::text);
    t := replace(t, '{roid}', (c.no - (i * 7919) % (c.no / 4))::text);
    t := replace(t, '{win_from}', ts(timestamptz '2023-01-15 00:00:00+00' + ((i * 37) % 400) * interval '1 day'));
    t := replace(t, '{win_to}', ts(timestamptz '2023-01-22 00:00:00+00' + ((i * 37) % 400) * interval '1 day'));
    t := replace(t, '{last_day}', ts(c.newest - interval '1 day' + (i % 60) * interval '1 minute'));
    t := replace(t, '{last_week}', ts(c.newest - interval '7 days' + (i % 60) * interval '1 minute'));
    t := replace(t, '{last_month}', ts(c.newest - interval '30 days' + (i % 60) * interval '1 minute'));
    t := replace(t, '{tot_lo}', lo::text);
    t := replace(t, '{tot_hi}', (lo + 0.5)::text);
    t := replace(t, '{country}', (ARRAY['DE', 'GB', 'FR', 'NL'])[i % 4 + 1]);
    t := replace(t, '{cust_since}', ts(timestamptz '2022-06-01 00:00:00+00' + (i % 90) * interval '1 day'));
    t := replace(t, '{flag}', CASE WHEN i % 2 = 0 THEN 'fraud' ELSE 'chargeback' END);
    t := replace(t, '{amount}', round(5 + ((i * 13) % 50000) / 100.0, 2)::text);
    t := replace(t, '{v}', (i % 1000)::text);
    t := replace(t, '{new_ts}', ts(c.newest + interval '1 hour' + i * interval '1 second'));
    RETURN t;
END $f$;
EOF
[ "$(dbpsql postgres -At -c "SELECT count(*) FROM shapes")" = "$NSHAPES" ] || die "loading the shapes failed"
shape_kinds=$(dbpsql postgres -At -c "SELECT count(*) FILTER (WHERE kind = 'read') || ' read, ' || count(*) FILTER (WHERE kind = 'write') || ' write' FROM shapes")
log "$NSHAPES shapes ($shape_kinds)"

# capture.sql: every shape `weight` times with varying constants, round-robin, one top-level
# statement per line. measure.sql: every shape REPS times (constants of executions 7001..),
# each under EXPLAIN ANALYZE; writes inside BEGIN ... ROLLBACK.
dbpsql postgres -At -c "SELECT bench_fill(s.tmpl, i) || ';' FROM shapes s, generate_series(1, s.weight) i ORDER BY i, s.ord" >"$BENCH_TMP/capture.sql"
dbpsql postgres -At -c "
    SELECT CASE WHEN s.kind = 'write'
                THEN format(E'BEGIN;\n\\\\echo @@ %s %s\nEXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) %s;\nROLLBACK;', s.name, r, bench_fill(s.tmpl, 7000 + r))
                ELSE format(E'\\\\echo @@ %s %s\nEXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) %s;', s.name, r, bench_fill(s.tmpl, 7000 + r)) END
      FROM shapes s, generate_series(1, $REPS) r ORDER BY r, s.ord" >"$BENCH_TMP/measure.sql"
# 100 statements for the advisor's runtime: the shapes in turn, literal constants.
dbpsql postgres -At -c "
    SELECT 'ARRAY[' || string_agg(quote_literal(bench_fill(s.tmpl, n)), E',\n' ORDER BY n) || ']::text[]'
      FROM generate_series(1, 100) n JOIN shapes s ON s.ord = (n - 1) % $NSHAPES + 1" >"$BENCH_TMP/list100.txt"
grep -q '^\\echo @@ ' "$BENCH_TMP/measure.sql" || die "measure.sql looks wrong"
! grep -q '{[a-z_]*}' "$BENCH_TMP/capture.sql" || die "unfilled placeholder in capture.sql: $(grep -o '{[a-z_]*}' "$BENCH_TMP/capture.sql" | sort -u | tr '\n' ' ')"
chown postgres: "$BENCH_TMP"/*.sql "$BENCH_TMP"/*.txt

# --- data (database bench_a) ------------------------------------------------------------------
log "loading customers $NC, orders $NO, events $NE rows ($(elapsed))"
dbpsql postgres -c "CREATE DATABASE bench_a"
dbpsql bench_a -v nc="$NC" -v no="$NO" -v ne="$NE" <<'EOF'
CREATE EXTENSION pg_perf;
CREATE TABLE customers (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    email text NOT NULL,
    name text NOT NULL,
    country text NOT NULL,
    created_at timestamptz NOT NULL
);
-- email in mixed case (the application looks it up by lower(email)); country skewed, with a
-- rare one ('IS', 0.3%); created_at grows with id.
INSERT INTO customers (id, email, name, country, created_at)
SELECT g,
       CASE g % 4 WHEN 0 THEN 'User' || g || '@Example.com' WHEN 1 THEN 'user' || g || '@EXAMPLE.com'
                  WHEN 2 THEN 'USER' || g || '@example.COM' ELSE 'user' || g || '@example.com' END,
       'Customer ' || g,
       CASE WHEN h < 400 THEN 'US' WHEN h < 550 THEN 'DE' WHEN h < 650 THEN 'GB' WHEN h < 730 THEN 'FR'
            WHEN h < 800 THEN 'NL' WHEN h < 850 THEN 'JP' WHEN h < 900 THEN 'BR' WHEN h < 950 THEN 'IN'
            WHEN h < 997 THEN 'CA' ELSE 'IS' END,
       timestamptz '2020-01-01 00:00:00+00' + g * (90000000.0 / :nc) * interval '1 second'
  FROM (SELECT g, (g * 7907) % 1000 AS h FROM generate_series(1, :nc::bigint) g) s;
CREATE TABLE orders (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    total numeric(10,2) NOT NULL,
    created_at timestamptz NOT NULL,
    note text
);
-- 2 orders per customer; status: failed 0.2%, refunded 5%, pending 4.8%, paid 15%,
-- shipped 20%, delivered 55%; total uniform 1.00..1000.99; created_at grows with id (one
-- order every 20 s at full scale, ending 2024-04-07 23:06:40 UTC).
INSERT INTO orders (id, customer_id, status, total, created_at, note)
SELECT g, (g * 48271) % :nc + 1,
       CASE WHEN h < 20 THEN 'failed' WHEN h < 520 THEN 'refunded' WHEN h < 1000 THEN 'pending'
            WHEN h < 2500 THEN 'paid' WHEN h < 4500 THEN 'shipped' ELSE 'delivered' END,
       round(1 + ((g * 7919) % 100000) / 100.0, 2),
       timestamptz '2023-01-01 00:00:00+00' + g * (40000000.0 / :no) * interval '1 second',
       CASE WHEN g % 10 = 0 THEN 'gift wrap, leave at the door' END
  FROM (SELECT g, (g * 6007) % 10000 AS h FROM generate_series(1, :no::bigint) g) s;
CREATE TABLE events (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    order_id bigint NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
-- two events for each of the newest quarter of the orders; payload with a rare key/value:
-- "flag": "fraud" 0.1%, "chargeback" 0.05%, "ok" 10%, absent otherwise.
INSERT INTO events (id, order_id, kind, payload, created_at)
SELECT g, :no - (g * 7919) % (:no / 4), k,
       jsonb_strip_nulls(jsonb_build_object('type', k, 'source', (ARRAY['web', 'ios', 'android'])[g % 3 + 1],
           'v', g % 1000,
           'flag', CASE WHEN g % 1000 = 7 THEN 'fraud' WHEN g % 2000 = 13 THEN 'chargeback'
                        WHEN g % 10 = 3 THEN 'ok' END)),
       timestamptz '2023-12-15 00:00:00+00' + g * (10000000.0 / :ne) * interval '1 second'
  FROM (SELECT g, (ARRAY['created', 'paid', 'shipped', 'viewed', 'clicked'])[g % 5 + 1] AS k
          FROM generate_series(1, :ne::bigint) g) s;
ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE events ADD PRIMARY KEY (id);
SELECT setval(pg_get_serial_sequence('customers', 'id'), :nc),
       setval(pg_get_serial_sequence('orders', 'id'), :no),
       setval(pg_get_serial_sequence('events', 'id'), :ne) \g /dev/null
VACUUM (FREEZE, ANALYZE) customers, orders, events;
EOF
tables_size=$(dbpsql bench_a -At -c "SELECT pg_size_pretty(sum(pg_table_size(c.oid))) FROM pg_class c WHERE c.relname IN ('customers', 'orders', 'events') AND c.relkind = 'r'")
log "loaded ($tables_size of tables) ($(elapsed))"

# --- capture: the workload through pg_perf ------------------------------------------------------
# Counters start empty (pg_stat_reset: the bulk load's n_tup_ins must not count as workload
# writes; perf.reset_stats: the load statements must not count as workload).
ncapture=$(grep -c . "$BENCH_TMP/capture.sql")
log "capture: $ncapture statements ($(elapsed))"
dbpsql bench_a -c "SELECT pg_stat_reset()" -c "SELECT perf.reset_stats()" >/dev/null
dbpsql bench_a -f "$BENCH_TMP/capture.sql" >/dev/null
dbpsql bench_a -c "VACUUM ANALYZE customers, orders, events"
captured=$(dbpsql bench_a -At -c "
    SELECT count(*) || ' statements, ' || sum(calls) || ' calls'
      FROM perf.statements
     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND query ~* '^(select|insert|update|delete)' AND query !~ 'perf\\.'")
log "perf.statements in bench_a: $captured ($(elapsed))"
dbpsql bench_a -At -F $'\t' -c "
    SELECT calls, query FROM perf.statements
     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND query ~* '^(select|insert|update|delete)' AND query !~ 'perf\\.'
     ORDER BY calls DESC, query" >"$BENCH_TMP/captured.tsv"

# --- the advisor ----------------------------------------------------------------------------------
# Runtime, 3 times each, alternating: the captured workload; the explicit list of 100
# statements; plain EXPLAIN of the same 100 statements (the reference for a side-by-side
# ratio). The first call of each kind also writes its rows to a file (\g file).
log "perf.suggest_indexes(): captured workload, 100 statements, EXPLAIN of the 100; 3 times each ($(elapsed))"
list100=$(cat "$BENCH_TMP/list100.txt")
{
    echo '\pset format unaligned'
    echo '\pset tuples_only on'
    echo '\pset fieldsep '"'\t'"
    echo '\timing on'
    for k in 1 2 3; do
        if [ "$k" = 1 ]; then
            echo "SELECT action, table_name, index_ddl, estimated_size, workload_cost_before, workload_cost_after, improvement_pct, write_overhead, replace(reason, E'\\n', ' ') FROM perf.suggest_indexes() \\g '$BENCH_TMP/advice.tsv'"
            echo "SELECT action, index_ddl FROM perf.suggest_indexes($list100) \\g '$BENCH_TMP/advice100.tsv'"
        else
            echo 'SELECT count(*) FROM perf.suggest_indexes();'
            echo "SELECT count(*) FROM perf.suggest_indexes($list100);"
        fi
        echo "DO \$do\$ DECLARE q text; BEGIN FOREACH q IN ARRAY $list100 LOOP EXECUTE 'EXPLAIN ' || q; END LOOP; END \$do\$;"
    done
} >"$BENCH_TMP/advisor_time.sql"
chown postgres: "$BENCH_TMP/advisor_time.sql"
dbpsql bench_a -f "$BENCH_TMP/advisor_time.sql" >"$BENCH_TMP/advisor_time.out"
mapfile -t advisor_ms < <(awk '/^Time: / { print $2 }' "$BENCH_TMP/advisor_time.out")
[ "${#advisor_ms[@]}" = 9 ] || die "advisor timing: expected 9 timings, got ${#advisor_ms[@]} (see $BENCH_TMP/advisor_time.out)"
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
adv_cap_ms=$(median3 "${advisor_ms[0]}" "${advisor_ms[3]}" "${advisor_ms[6]}")
adv_100_ms=$(median3 "${advisor_ms[1]}" "${advisor_ms[4]}" "${advisor_ms[7]}")
explain_100_ms=$(median3 "${advisor_ms[2]}" "${advisor_ms[5]}" "${advisor_ms[8]}")
adv100_rows=$(grep -c . "$BENCH_TMP/advice100.tsv" || true)
log "advisor: captured workload ${adv_cap_ms} ms, 100 statements ${adv_100_ms} ms, EXPLAIN of the 100 ${explain_100_ms} ms"
[ -s "$BENCH_TMP/advice.tsv" ] || log "warning: perf.suggest_indexes() returned no rows"
cut -f3 "$BENCH_TMP/advice.tsv" | sed 's/^/    /' >&2

# --- the three configurations -----------------------------------------------------------------------
# Byte-identical copies of bench_a (same heap files, same statistics), so the configurations
# can be interleaved without rebuilding indexes between rounds.
log "cloning bench_a into bench_b, bench_c, bench_d ($(elapsed))"
dbpsql postgres -c "CHECKPOINT" -c "CREATE DATABASE bench_b TEMPLATE bench_a STRATEGY FILE_COPY" \
    -c "CREATE DATABASE bench_c TEMPLATE bench_a STRATEGY FILE_COPY" \
    -c "CREATE DATABASE bench_d TEMPLATE bench_a STRATEGY FILE_COPY"

log "(b): applying pg_perf's suggestions, each statement on its own ($(elapsed))"
applied=0 apply_failed=()
while IFS=$'\t' read -r action _table ddl _rest; do
    [ -n "$ddl" ] || continue
    if dbpsql bench_b -c "$ddl" </dev/null 2>"$BENCH_TMP/apply.err"; then
        applied=$((applied + 1))
        log "  ok: $ddl"
    else
        apply_failed+=("$ddl: $(tr '\n' ' ' <"$BENCH_TMP/apply.err")")
        log "  FAILED ($action): $ddl: $(cat "$BENCH_TMP/apply.err")"
    fi
done <"$BENCH_TMP/advice.tsv"

log "(d): applying the explicit path's suggestions (the list of 100 statements) ($(elapsed))"
while IFS=$'\t' read -r action ddl; do
    [ "$action" = create ] && [ -n "$ddl" ] || continue
    if dbpsql bench_d -c "$ddl" </dev/null 2>"$BENCH_TMP/apply.err"; then
        log "  ok: $ddl"
    else
        apply_failed+=("(d) $ddl: $(tr '\n' ' ' <"$BENCH_TMP/apply.err")")
        log "  FAILED: $ddl: $(cat "$BENCH_TMP/apply.err")"
    fi
done <"$BENCH_TMP/advice100.tsv"

log "(c): one btree per column in a WHERE/JOIN condition ($(elapsed))"
baseline_cols=$(cut -d'|' -f3 "$BENCH_TMP/shapes.txt" | tr ' ' '\n' | grep . | sort -u)
baseline_ddl=()
for tc in $baseline_cols; do
    t=${tc%%.*} col=${tc#*.}
    covered=$(dbpsql bench_c -At -c "
        SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = '$t'::regclass AND i.indnkeyatts = 1 AND a.attname = '$col'")
    if [ "$covered" != 0 ]; then
        log "  skip $tc (primary key)"
        continue
    fi
    ddl="CREATE INDEX bl_${t}_${col} ON $t ($col);"
    dbpsql bench_c -c "$ddl"
    baseline_ddl+=("$ddl")
    log "  ok: $ddl"
done

log "ANALYZE in all four databases ($(elapsed))"
for db in bench_a bench_b bench_c bench_d; do
    dbpsql "$db" -c "ANALYZE customers, orders, events"
done
invalid=$(dbpsql bench_b -At -c "SELECT count(*) FROM pg_index WHERE NOT indisvalid")
[ "$invalid" = 0 ] || log "warning: $invalid invalid index(es) in bench_b"

# index storage (everything but the primary keys) per configuration
storage() { # storage DB: "count<TAB>bytes"
    dbpsql "$1" -At -F $'\t' -c "
        SELECT count(*), coalesce(sum(pg_relation_size(i.indexrelid)), 0)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT i.indisprimary"
}
IFS=$'\t' read -r nidx_b bytes_b < <(storage bench_b)
IFS=$'\t' read -r nidx_c bytes_c < <(storage bench_c)
IFS=$'\t' read -r nidx_d bytes_d < <(storage bench_d)
heap_bytes=$(dbpsql bench_a -At -c "SELECT sum(pg_table_size(c.oid)) FROM pg_class c WHERE c.relname IN ('customers', 'orders', 'events') AND c.relkind = 'r'")

# --- measurement: interleaved rounds ------------------------------------------------------------------
# Round 0 warms every database (not counted). Odd rounds run a b c d, even rounds d c b a.
declare -A db_of=([a]=bench_a [b]=bench_b [c]=bench_c [d]=bench_d)
measure() { # measure ROUND CONFIG
    local round=$1 cfg=$2 out="$BENCH_TMP/explain.$2.$1.out" n
    dbpsql "${db_of[$cfg]}" -At -f "$BENCH_TMP/measure.sql" >"$out"
    awk -v round="$round" -v cfg="$cfg" '
        /^@@ / { shape = $2; rep = $3; plan = ""; next }
        /^Planning Time: / { plan = $3; next }
        /^Execution Time: / { print round "\t" cfg "\t" shape "\t" rep "\t" plan "\t" $3 }
    ' "$out" >>"$RUNS_TSV"
    n=$(awk -v round="$round" -v cfg="$cfg" '$1 == round && $2 == cfg' "$RUNS_TSV" | wc -l)
    [ "$n" = $((NSHAPES * REPS)) ] || die "round $round config $cfg: $n timings, expected $((NSHAPES * REPS)) (see $out)"
}
for round in $(seq 0 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ] || [ "$round" = 0 ]; then order="a b c d"; else order="d c b a"; fi
    for cfg in $order; do measure "$round" "$cfg"; done
    log "round $round/$ROUNDS done ($order) ($(elapsed))"
done

# the plan each shape got in each configuration (scan nodes of its first execution, last round)
plan_summary() { # plan_summary CONFIG -> "shape<TAB>nodes"
    awk '
        function flush() { if (shape != "") print shape "\t" nodes; shape = ""; nodes = "" }
        /^@@ / { if ($3 != "1") { flush(); skip = 1; next } flush(); skip = 0; shape = $2; next }
        skip { next }
        {
            line = $0
            while (match(line, /(Parallel )?(Seq Scan on [a-z_]+|Index Only Scan( Backward)? using [A-Za-z0-9_]+|Index Scan( Backward)? using [A-Za-z0-9_]+|Bitmap Index Scan on [A-Za-z0-9_]+)/)) {
                node = substr(line, RSTART, RLENGTH)
                if (index(nodes, node) == 0) nodes = nodes (nodes == "" ? "" : ", ") node
                line = substr(line, RSTART + RLENGTH)
            }
        }
        END { flush() }
    ' "$BENCH_TMP/explain.$1.$ROUNDS.out"
}
: >"$BENCH_TMP/plans.tsv"
for cfg in a b c; do plan_summary "$cfg" | sed "s/^/$cfg\t/" >>"$BENCH_TMP/plans.tsv"; done

# --- statistics (SQL, in the postgres database) --------------------------------------------------------
cp "$RUNS_TSV" "$BENCH_TMP/runs.tsv" && chown postgres: "$BENCH_TMP/runs.tsv"
dbpsql postgres -c "CREATE TABLE runs (round int, cfg text, shape text, rep int, plan_ms float8, exec_ms float8)" \
    -c "\\copy runs FROM '$BENCH_TMP/runs.tsv'" \
    -c "CREATE TABLE plans (cfg text, shape text, nodes text)" \
    -c "\\copy plans FROM '$BENCH_TMP/plans.tsv'"
# per round: weighted time (weight x median over the reps) per configuration, and the ratios
dbpsql postgres <<'EOF'
CREATE TABLE med AS
SELECT round, cfg, shape,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY exec_ms) AS e,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY plan_ms + exec_ms) AS pe
  FROM runs WHERE round > 0 GROUP BY 1, 2, 3;
CREATE TABLE per_round AS
SELECT round,
       sum(s.weight * e) FILTER (WHERE cfg = 'b') / sum(s.weight * e) FILTER (WHERE cfg = 'a') AS rb,
       sum(s.weight * e) FILTER (WHERE cfg = 'c') / sum(s.weight * e) FILTER (WHERE cfg = 'a') AS rc,
       sum(s.weight * pe) FILTER (WHERE cfg = 'b') / sum(s.weight * pe) FILTER (WHERE cfg = 'a') AS rbp,
       sum(s.weight * pe) FILTER (WHERE cfg = 'c') / sum(s.weight * pe) FILTER (WHERE cfg = 'a') AS rcp,
       sum(s.weight * e) FILTER (WHERE cfg = 'b') / sum(s.weight * e) FILTER (WHERE cfg = 'c') AS rbc,
       sum(s.weight * e) FILTER (WHERE cfg = 'd') / sum(s.weight * e) FILTER (WHERE cfg = 'a') AS rd,
       sum(s.weight * e) FILTER (WHERE cfg = 'b') / sum(s.weight * e) FILTER (WHERE cfg = 'd') AS rbd
  FROM med JOIN shapes s ON s.name = med.shape GROUP BY round;
-- per shape: median over every execution of every round
CREATE TABLE shape_med AS
SELECT shape, cfg, percentile_cont(0.5) WITHIN GROUP (ORDER BY exec_ms) AS e
  FROM runs WHERE round > 0 GROUP BY 1, 2;
CREATE FUNCTION pct(x float8) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN x IS NULL THEN '—' WHEN x >= 0.1 THEN to_char(100 * x, 'FM99990.0') || '%'
                ELSE to_char(100 * x, 'FM990.00') || '%' END $$;
EOF
q() { dbpsql postgres -At -F $'\t' -c "$1"; }
IFS=$'\t' read -r med_b med_c med_bp med_cp med_bc rounds_b rounds_c < <(q "
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY rb), percentile_cont(0.5) WITHIN GROUP (ORDER BY rc),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY rbp), percentile_cont(0.5) WITHIN GROUP (ORDER BY rcp),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY rbc),
           string_agg(pct(rb), ' ' ORDER BY round), string_agg(pct(rc), ' ' ORDER BY round)
      FROM per_round")
IFS=$'\t' read -r med_d med_bd rounds_d < <(q "
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY rd), percentile_cont(0.5) WITHIN GROUP (ORDER BY rbd),
           string_agg(pct(rd), ' ' ORDER BY round)
      FROM per_round")
verdict() { awk -v x="$1" -v t="$2" 'BEGIN { print (100 * x <= t ? "PASS" : "FAIL") }'; } # verdict RATIO TARGET_PCT
pctf() { q "SELECT pct($1)"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1048576 }'; }
so_sum_end=$(bench_pg_perf_sum)

# --- the report --------------------------------------------------------------------------------------
{
    echo "advisor_bench: customers $NC, orders $NO, events $NE rows ($tables_size of tables); $NSHAPES shapes ($shape_kinds), weights = calls; $ROUNDS rounds x $REPS executions per shape and configuration, interleaved (a b c d / d c b a)"
    echo
    echo "Weighted workload time = Σ weight × median execution time (EXPLAIN ANALYZE), relative to (a), median of the per-round ratios:"
    echo
    echo "| configuration | indexes added | index storage | weighted time vs (a) | per round | incl. planning | target | verdict |"
    echo "|---|---:|---:|---:|---|---:|---|---|"
    echo "| (a) unindexed (primary keys only) | 0 | 0 MB | 100% | | 100% | | |"
    echo "| (b) pg_perf suggestions | $nidx_b | $(mb "$bytes_b") | **$(pctf "$med_b")** | $rounds_b | $(pctf "$med_bp") | ≤ ${TARGET_PCT}% | $(verdict "$med_b" "$TARGET_PCT") |"
    echo "| (c) one btree per filtered column | $nidx_c | $(mb "$bytes_c") | $(pctf "$med_c") | $rounds_c | $(pctf "$med_cp") | | |"
    echo "| (d) explicit path: suggestions for the list of 100 statements | $nidx_d | $(mb "$bytes_d") | $(pctf "$med_d") | $rounds_d | | | |"
    echo
    echo "| check | target | result | verdict |"
    echo "|---|---|---|---|"
    echo "| weighted time (b) / (a) | ≤ ${TARGET_PCT}% | $(pctf "$med_b") | $(verdict "$med_b" "$TARGET_PCT") |"
    echo "| weighted time (b) / (c) | (< 100%: better than the baseline) | $(pctf "$med_bc") | $(verdict "$med_bc" 100) |"
    echo "| weighted time (b) / (d), captured vs explicit path | ≤ 1.3x | $(awk -v x="$med_bd" 'BEGIN { printf "%.2fx", x }') | $(awk -v x="$med_bd" 'BEGIN { print (x <= 1.3 ? "PASS" : "FAIL") }') |"
    echo "| index storage (b) vs (c) | (b) < (c) | $(mb "$bytes_b") vs $(mb "$bytes_c") ($(awk -v b="$bytes_b" -v c="$bytes_c" 'BEGIN { if (c > 0) printf "%.0f%%", 100 * b / c; else print "—" }')); tables $(mb "$heap_bytes") | $(awk -v b="$bytes_b" -v c="$bytes_c" 'BEGIN { print (b < c ? "PASS" : "FAIL") }') |"
    echo "| advisor runtime, explicit list of 100 statements | < ${TARGET_ADVISOR_S} s | $(awk -v m="$adv_100_ms" 'BEGIN { printf "%.2f s", m / 1000 }') ($(awk -v m="$adv_100_ms" -v e="$explain_100_ms" 'BEGIN { printf "%.1f", m / e }')× a plain EXPLAIN of the same 100 statements; $adv100_rows rows) | $(awk -v m="$adv_100_ms" -v t="$TARGET_ADVISOR_S" 'BEGIN { print (m < 1000 * t ? "PASS" : "FAIL") }') |"
    echo "| advisor runtime, captured workload ($(wc -l <"$BENCH_TMP/captured.tsv") statements) | | $(awk -v m="$adv_cap_ms" 'BEGIN { printf "%.2f s", m / 1000 }') | |"
    echo
    echo "Advisor runtimes are absolute (the target is), median of 3, on a machine that swings ±40%; the EXPLAIN ratio is the side-by-side figure."
    echo
    echo "Per shape (median over all executions; ratios to (a); share = the shape's part of that configuration's weighted time):"
    echo
    echo "| shape | weight | filtered columns (baseline input) | (b)/(a) | (c)/(a) | share (a) | share (b) | share (c) | plan in (b) |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---|"
    q "
    WITH m AS (
        SELECT s.ord, s.name, s.weight, s.cols,
               max(e) FILTER (WHERE cfg = 'a') AS a, max(e) FILTER (WHERE cfg = 'b') AS b, max(e) FILTER (WHERE cfg = 'c') AS c
          FROM shape_med JOIN shapes s ON s.name = shape_med.shape GROUP BY 1, 2, 3, 4)
    SELECT format('| %s | %s | %s | %s | %s | %s | %s | %s | %s |', m.name, m.weight, coalesce(nullif(m.cols, ''), '—'),
                  pct(b / a), pct(c / a),
                  pct(weight * a / sum(weight * a) OVER ()), pct(weight * b / sum(weight * b) OVER ()),
                  pct(weight * c / sum(weight * c) OVER ()),
                  coalesce(nullif((SELECT nodes FROM plans p WHERE p.cfg = 'b' AND p.shape = m.name), ''), '—'))
      FROM m ORDER BY m.ord"
    echo
    echo "(b) pg_perf's suggestions (perf.suggest_indexes() on the captured workload, applied as returned; estimated vs built size):"
    echo
    echo '```sql'
    while IFS=$'\t' read -r action _table ddl est before after imp wo _reason; do
        name=$(awk '{ for (i = 1; i < NF; i++) if ($i == "CONCURRENTLY") { print $(i + 1); exit } }' <<<"$ddl")
        actual=$(dbpsql bench_b -At -c "SELECT coalesce(pg_relation_size(to_regclass('$name')), 0)" </dev/null 2>/dev/null || echo 0)
        printf -- '-- %s: estimated %s, built %s, improvement_pct %.1f, write_overhead %.1f\n' "$action" "$(mb "$est")" "$(mb "$actual")" "$imp" "$wo"
        echo "$ddl"
    done <"$BENCH_TMP/advice.tsv"
    [ -s "$BENCH_TMP/advice.tsv" ] || echo "-- (no suggestions)"
    echo '```'
    if [ -s "$BENCH_TMP/advice.tsv" ]; then
        IFS=$'\t' read -r _ _ _ _ before after _ < "$BENCH_TMP/advice.tsv"
        echo
        echo "Advisor's own estimate (planner cost units, Σ calls × cost): workload $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.0f → %.0f (%.1f%% of before)", b, a, 100 * a / b }')."
    fi
    for f in "${apply_failed[@]}"; do echo "- **failed to apply**: $f"; done
    echo
    echo "(c) baseline (built sizes):"
    echo
    echo '```sql'
    for ddl in "${baseline_ddl[@]}"; do
        name=$(awk '{ print $3 }' <<<"$ddl")
        printf '%-60s -- %s\n' "$ddl" "$(mb "$(dbpsql bench_c -At -c "SELECT pg_relation_size('$name')" </dev/null)")"
    done
    echo '```'
    echo
    echo "(d) suggestions for the explicit list of 100 statements (applied as returned):"
    echo
    echo '```sql'
    cut -f2 "$BENCH_TMP/advice100.tsv"
    echo '```'
    echo
    echo "- captured by pg_perf in bench_a: $captured"
    echo "- pg_perf.so: $so_desc, sha256 $so_sum$([ "$so_sum_end" = "$so_sum" ] || echo " (reinstalled during the run; the server kept the build it started with)")"
    echo "- commit: $(bench_describe_repo)"
    echo "- $("$(pgbin postgres)" --version), settings: shared_buffers=1GB jit=off autovacuum=off, parallel query on (defaults), $(date -u '+%Y-%m-%d %H:%M UTC'), took $((SECONDS - start))s"
} | tee "$REPORT"
log "saved to ${REPORT#"$REPO_ROOT"/}; raw times (debugging only) in ${RUNS_TSV#"$REPO_ROOT"/}"
