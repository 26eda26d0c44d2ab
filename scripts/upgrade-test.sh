#!/usr/bin/env bash
# Upgrade test: installs the previous release's SQL (rebuilt from git history), runs
# ALTER EXTENSION pg_perf UPDATE with today's library, and requires that the old release's
# rows (a job, its runs, a partition set) are kept and that the result is the same schema as a
# fresh CREATE EXTENSION (every object the extension owns, described from the catalogs, and
# its grants), then runs the regress suite (less the install test) in the upgraded database.
# The previous release is named in sql/upgrades/previous: "<version> <commit>".
# Usage: scripts/upgrade-test.sh   (expects the test cluster on $TEST_PORT with today's build)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

source "$(dirname "${BASH_SOURCE[0]}")/upgrade-lib.sh"
old_version=$OLD_VERSION
new_version=$NEW_VERSION
[ "$old_version" != "$new_version" ] || die "sql/upgrades/previous names the current version $new_version"
script=$UPGRADE_SCRIPT
[ -f "$script" ] || die "missing $script: every release ships an upgrade script from the previous one (scripts/make-upgrade-sql.sh)"
mkdir -p "$UPGRADE_DIR"
old_sql=$(release_install_sql "$OLD_VERSION" "$OLD_COMMIT")
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
# State the old release keeps in its tables must survive the update: a job with its run
# history and a partition set (rows written directly: the old release's SQL functions may not
# match today's library until the update has run).
q -d pg_perf_upgraded \
    -c "INSERT INTO perf.jobs (name, schedule, command, timezone, enabled, owner)
        VALUES ('upgrade_job', '5 minutes', 'SELECT 1', 'UTC', false, 'postgres'::regrole)" \
    -c "INSERT INTO perf.job_runs (jobid, trigger, status, scheduled_for)
        SELECT jobid, 'manual', 'succeeded', now() FROM perf.jobs WHERE name = 'upgrade_job'" \
    -c "CREATE TABLE upgrade_events (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts)" \
    -c "SELECT count(*) FROM perf.partition_table('upgrade_events', 'ts', '1 day', premake => 2)" >/dev/null
before=$(q -d pg_perf_upgraded -c "SELECT (SELECT jobid FROM perf.jobs WHERE name = 'upgrade_job') || ' '
    || (SELECT count(*) FROM perf.job_runs) || ' ' || (SELECT count(*) FROM perf.partition_config)")
q -d pg_perf_upgraded -c "ALTER EXTENSION pg_perf UPDATE TO '$new_version'"
after=$(q -d pg_perf_upgraded -c "SELECT (SELECT jobid FROM perf.jobs WHERE name = 'upgrade_job') || ' '
    || (SELECT count(*) FROM perf.job_runs) || ' ' || (SELECT count(*) FROM perf.partition_config)")
[ "$before" = "$after" ] || die "state lost in the update: job id, runs, partition sets were '$before', now '$after'"
# Identity values continue after the kept rows.
next=$(q -d pg_perf_upgraded -c "INSERT INTO perf.jobs (name, schedule, command, timezone, enabled, owner)
    VALUES ('upgrade_job2', '5 minutes', 'SELECT 1', 'UTC', false, 'postgres'::regrole) RETURNING jobid > ${before%% *}" | head -n 1)
[ "$next" = t ] || die "perf.jobs' identity restarted after the update"
q -d pg_perf_upgraded -c "DELETE FROM perf.jobs" -c "DELETE FROM perf.partition_config" -c "DROP TABLE upgrade_events"
log "$old_version -> $new_version kept state: job id, runs, partition sets = $after"
got=$(q -d pg_perf_upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_perf'")
[ "$got" = "$new_version" ] || die "after the update the extension is at $got, not $new_version"
tracked=$(q -d pg_perf_upgraded -c "SELECT count(*) FROM perf.cache_tracked WHERE relid = 'upgrade_probe'::regclass")
[ "$tracked" = 1 ] || die "the table the old release tracked is no longer tracked after the update"
q -d pg_perf_upgraded -c "SELECT perf.cache_untrack('upgrade_probe')" -c "DROP TABLE upgrade_probe"

out="$UPGRADE_DIR"
# Every object the extension owns, described from the catalogs in a canonical order (pg_dump
# leaves extension members out): definition, owner, ACL, and for relations their columns,
# defaults, constraints, indexes, triggers, policies and options; plus the extension's
# configuration tables.
describe_sql=$(cat <<'SQL'
WITH members AS (
    SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, 0) AS name
      FROM pg_depend d
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_perf')
)
SELECT m.name || E'\n' || CASE m.classid
    WHEN 'pg_proc'::regclass THEN
        (SELECT pg_get_functiondef(p.oid) || E'\nowner ' || p.proowner::regrole || ' acl ' || coalesce(p.proacl::text, '-')
           FROM pg_proc p WHERE p.oid = m.objid)
    WHEN 'pg_class'::regclass THEN
        (SELECT 'kind ' || c.relkind::text || ' owner ' || c.relowner::regrole || ' acl ' || coalesce(c.relacl::text, '-')
                || ' rls ' || c.relrowsecurity || ' options ' || coalesce(c.reloptions::text, '-')
                || E'\n' || coalesce(pg_get_viewdef(c.oid), '')
                || coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                  || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                  || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
                                  || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
                                  || coalesce(' acl ' || a.attacl::text, ''), E'\n' ORDER BY a.attnum)
                               FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
                || coalesce(E'\n' || (SELECT string_agg(co.conname || ' ' || pg_get_constraintdef(co.oid), E'\n' ORDER BY co.conname)
                               FROM pg_constraint co WHERE co.conrelid = c.oid), '')
                || coalesce(E'\n' || (SELECT string_agg(pg_get_indexdef(i.indexrelid), E'\n' ORDER BY 1)
                               FROM pg_index i WHERE i.indrelid = c.oid), '')
                || coalesce(E'\n' || (SELECT string_agg(pg_get_triggerdef(t.oid), E'\n' ORDER BY t.tgname)
                               FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '')
                || coalesce(E'\n' || (SELECT string_agg(po.polname || ' ' || po.polcmd::text || ' ' || po.polpermissive
                                  || ' ' || po.polroles::regrole[]::text || ' ' || coalesce(pg_get_expr(po.polqual, po.polrelid), '-')
                                  || ' ' || coalesce(pg_get_expr(po.polwithcheck, po.polrelid), '-'), E'\n' ORDER BY po.polname)
                               FROM pg_policy po WHERE po.polrelid = c.oid), '')
           FROM pg_class c WHERE c.oid = m.objid)
    ELSE ''
  END || coalesce(E'\ncomment ' || obj_description(m.objid, m.classid::regclass::text), '')
  FROM members m
UNION ALL
SELECT 'extension config ' || coalesce(extconfig::regclass[]::text, '-') || ' ' || coalesce(extcondition::text, '-')
  FROM pg_extension WHERE extname = 'pg_perf'
UNION ALL
SELECT 'schema perf owner ' || nspowner::regrole || ' acl ' || coalesce(nspacl::text, '-')
  FROM pg_namespace WHERE nspname = 'perf'
ORDER BY 1
SQL
)
dump() { q -d "$1" -c "$describe_sql"; }
dump pg_perf_fresh >"$out/fresh.sql"
dump pg_perf_upgraded >"$out/upgraded.sql"
if ! diff -u "$out/fresh.sql" "$out/upgraded.sql" >"$out/schema.diff"; then
    head -n 80 "$out/schema.diff" >&2
    die "the updated schema differs from a fresh install (full diff: $out/schema.diff)"
fi
log "$old_version -> $new_version: same schema as a fresh install ($(grep -c "" "$out/fresh.sql") lines describing $(q -d pg_perf_fresh -c "SELECT count(*) FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_perf')") objects)"

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
