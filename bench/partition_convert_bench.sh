#!/usr/bin/env bash
# Converting a populated 1,000,000-row plain table into a weekly partition set with
# perf.partition_table() while pgbench keeps inserting into it (1 client, as fast as it can).
# Checks that every row is intact (count and checksum of the old rows before/after, every
# row pgbench inserted present) and reports the conversion time, the inserts that ran during
# it, and the longest an insert waited (the ACCESS EXCLUSIVE swap at the end).
#
# Usage: bench/partition_convert_bench.sh [--port PORT] [--rows N]
#   --port PORT  server on 127.0.0.1:PORT preloading pg_perf (default $TEST_PORT)
#   --rows N     rows in the table (default 1000000)
# Creates and drops the database bench_part_convert there.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
cd "$REPO_ROOT"

port=${TEST_PORT:-55433}
rows=1000000
while [ $# -gt 0 ]; do
    case $1 in
    --port) port=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
    esac
done
db=bench_part_convert
pgbench="$($PG_CONFIG --bindir)/pgbench"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/pg_perf-convert.XXXXXX")
chmod 777 "$work"
trap 'rm -rf "$work"' EXIT
q() { psql_at "$port" -d "$db" -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_at "$port" -d postgres -X -q -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
q -c "CREATE EXTENSION pg_perf"
log "loading $rows rows"
q -c "CREATE TABLE big (id bigserial, at timestamptz NOT NULL, kind text NOT NULL, v int, PRIMARY KEY (id, at))" \
  -c "CREATE INDEX big_kind_idx ON big (kind)" \
  -c "INSERT INTO big (at, kind, v) SELECT '2024-01-01'::timestamptz + g * interval '30 seconds', 'k' || (g % 7), g
        FROM generate_series(1, $rows) g" \
  -c "VACUUM ANALYZE big"
read -r before_count before_sum max_id < <(q -At -F ' ' -c "SELECT count(*), sum(hashtext(b::text)), max(id) FROM big b")

echo "INSERT INTO big (at, kind, v) VALUES (now(), 'live', 1);" >"$work/insert.sql"
chown -R postgres: "$work" 2>/dev/null || true
log "converting while pgbench inserts"
(cd "$work" && runuser -u postgres -- "$pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 1 -T 40 \
    -f "$work/insert.sql" -l --log-prefix="$work/ins" "$db" >"$work/pgbench.out" 2>&1) &
bench_pid=$!
sleep 3
t0=$(date +%s.%N)
q -At -c "SET perf.partition_notice_interval = 0" \
  -c "SELECT detail FROM perf.partition_table('big', 'at', '1 week') WHERE action = 'convert'"
t1=$(date +%s.%N)
wait "$bench_pid" || die "pgbench failed: $(cat "$work/pgbench.out")"

read -r after_count after_sum live < <(q -At -F ' ' -c "SELECT count(*), sum(hashtext(b::text)) FILTER (WHERE id <= $max_id),
                                                                count(*) FILTER (WHERE kind = 'live') FROM big b")
inserted=$(cat "$work"/ins.* | wc -l)
max_wait_ms=$(cat "$work"/ins.* | awk '{ if ($3 > m) m = $3 } END { printf "%.1f", m / 1000 }')
during=$(cat "$work"/ins.* | awk -v a="$t0" -v b="$t1" '{ t = $5 + $6 / 1e6; if (t >= a && t <= b) n++ } END { print n + 0 }')
kind=$(q -At -c "SELECT relkind FROM pg_class WHERE oid = 'big'::regclass")

printf '\nconverted %s rows in %.1f s; relkind %s\n' "$before_count" "$(echo "$t1 - $t0" | bc)" "$kind"
printf 'pgbench inserted %s rows (%s during the conversion); longest insert: %s ms\n' "$inserted" "$during" "$max_wait_ms"
printf 'rows before %s, after %s (= before + inserted: %s); checksum of the old rows %s\n' \
    "$before_count" "$after_count" "$([ "$after_count" = $((before_count + inserted)) ] && [ "$live" = "$inserted" ] && echo yes || echo NO)" \
    "$([ "$after_sum" = "$before_sum" ] && echo equal || echo DIFFERENT)"
psql_at "$port" -d postgres -X -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
[ "$kind" = p ] && [ "$after_sum" = "$before_sum" ] && [ "$after_count" = $((before_count + inserted)) ] || die "rows not intact"
