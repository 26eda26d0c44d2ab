#!/usr/bin/env bash
# Upgrade test: installs the previous release's SQL (rebuilt from git history), runs
# ALTER EXTENSION pg_perf UPDATE with today's library, and requires the result to be the same
# schema as a fresh CREATE EXTENSION (pg_dump of every object the extension owns, and its
# grants), then runs the regress suite (less the install test) in the upgraded database.
# The previous release is named in sql/upgrades/previous: "<version> <commit>".
# Usage: scripts/upgrade-test.sh   (expects the test cluster on $TEST_PORT with today's build)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

read -r old_version old_commit <sql/upgrades/previous
new_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ "$old_version" != "$new_version" ] || die "sql/upgrades/previous names the current version $new_version"
script="sql/pg_perf--$old_version--$new_version.sql"
[ -f "$script" ] || die "missing $script: every release ships an upgrade script from the previous one"

old_sql="$REPO_ROOT/target/upgrade/pg_perf--$old_version.sql"
if [ ! -s "$old_sql" ]; then
    log "generating the $old_version install script from $old_commit"
    src="$REPO_ROOT/target/upgrade/src-$old_version"
    rm -rf "$src"
    mkdir -p "$src"
    git archive "$old_commit" | tar -x -C "$src"
    (cd "$src" && CARGO_TARGET_DIR="$REPO_ROOT/target/upgrade/build" \
        cargo pgrx schema "pg$PG_MAJOR" --pg-config "$PG_CONFIG" --out "$old_sql.tmp" >"$REPO_ROOT/target/upgrade/schema.log" 2>&1) ||
        { tail -n 30 "$REPO_ROOT/target/upgrade/schema.log" >&2; die "cargo pgrx schema failed for $old_commit"; }
    mv "$old_sql.tmp" "$old_sql"
fi
extdir="$("$PG_CONFIG" --sharedir)/extension"
cp "$old_sql" "$extdir/pg_perf--$old_version.sql"
cp "$script" "$extdir/"

q() { psql_at "$TEST_PORT" -qAt "$@"; }
q -d postgres -c "DROP DATABASE IF EXISTS pg_perf_upgraded WITH (FORCE)" -c "CREATE DATABASE pg_perf_upgraded" \
    -c "DROP DATABASE IF EXISTS pg_perf_fresh WITH (FORCE)" -c "CREATE DATABASE pg_perf_fresh"
q -d pg_perf_fresh -c "CREATE EXTENSION pg_perf"
q -d pg_perf_upgraded -c "CREATE EXTENSION pg_perf VERSION '$old_version'"
# A table tracked by the old release's result cache must stay tracked across the update.
q -d pg_perf_upgraded -c "CREATE TABLE upgrade_probe (id int)" -c "SELECT perf.cache_track('upgrade_probe')"
q -d pg_perf_upgraded -c "ALTER EXTENSION pg_perf UPDATE TO '$new_version'"
got=$(q -d pg_perf_upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_perf'")
[ "$got" = "$new_version" ] || die "after the update the extension is at $got, not $new_version"
tracked=$(q -d pg_perf_upgraded -c "SELECT count(*) FROM perf.cache_tracked WHERE relation = 'upgrade_probe'::regclass")
[ "$tracked" = 1 ] || die "the table the old release tracked is no longer tracked after the update"
q -d pg_perf_upgraded -c "SELECT perf.cache_untrack('upgrade_probe')" -c "DROP TABLE upgrade_probe"

out="$REPO_ROOT/target/upgrade"
dump() {
    # Every object of the extension's schema with its ACL; comments and ownership included.
    as_postgres "$(pgbin pg_dump)" -h 127.0.0.1 -p "$TEST_PORT" -U postgres --schema-only --schema=perf "$1" |
        grep -v '^--' | grep -v '^$' | grep -v '^SET \|^SELECT pg_catalog.set_config'
}
dump pg_perf_fresh >"$out/fresh.sql"
dump pg_perf_upgraded >"$out/upgraded.sql"
if ! diff -u "$out/fresh.sql" "$out/upgraded.sql" >"$out/schema.diff"; then
    head -n 80 "$out/schema.diff" >&2
    die "the updated schema differs from a fresh install (full diff: $out/schema.diff)"
fi
log "$old_version -> $new_version: same schema as a fresh install ($(wc -l <"$out/fresh.sql") lines of pg_dump)"

# The regress suite (its install test aside) against the upgraded database.
regress_out="$out/regress"
rm -rf "$regress_out"
mkdir -p "$regress_out"
tests=$(tr ' ' '\n' <tests/regress/schedule | grep -vx foundation | grep . | tr '\n' ' ')
"$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
    --use-existing --host=127.0.0.1 --port="$TEST_PORT" --user=postgres \
    --inputdir=tests/regress --outputdir="$regress_out" --dbname=pg_perf_upgraded $tests ||
    { cat "$regress_out/regression.diffs" >&2 || true; die "regress suite failed on the upgraded database"; }
q -d postgres -c "DROP DATABASE pg_perf_upgraded WITH (FORCE)" -c "DROP DATABASE pg_perf_fresh WITH (FORCE)"
