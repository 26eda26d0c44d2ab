"""Roles and privileges (README.md, "Roles and privileges"): perf_reader / perf_admin exist,
every function of schema perf is classified below and makes its check (SQLSTATE 42501 naming
the function, with a hint that is the GRANT to run), a plain user cannot change pg_perf's
tables, and no function or view shows another user's query text to a plain user.

CLASSES is the one list of who may call what; the README table says the same in prose. A new
function in schema perf fails test_every_function_is_classified until it is added here."""

import re
import uuid

import psycopg
import pytest
from psycopg import sql

from conftest import dsn

# admin: needs perf_admin; reader: needs perf_reader (perf_admin includes it); public: any
# role (own data only, or no data); internal: called by an admin function (a plain caller
# gets 42501 from the check, whose hint may name perf_admin or be PostgreSQL's own);
# helper: internal, pure or acting with the caller's own rights only (no check).
CLASSES = {
    # statements (own statements for every role; text of others' needs pg_read_all_stats)
    "query_stats": "public", "slow_queries": "public", "slow_plans": "public",
    "why_slow": "public", "query_predicates": "public", "query_id_memo": "public",
    "stats_info": "reader", "reset_stats": "admin",
    "unused_indexes": "reader", "duplicate_indexes": "reader",
    # advisor (runs as the caller, on the caller's own statements)
    "whatif": "public", "whatif_index_size": "public", "suggest_indexes": "public",
    "advisor_skipped": "public",
    # cache
    "cached": "public", "cached_json": "public", "cached_json_text": "public",
    "cache_invalidate_trigger": "helper",  # the trigger: fires for every writer of a tracked table
    "cache_stats": "reader", "cache_refusals": "reader", "cache_entries": "reader",
    "cache_track": "admin", "cache_untrack": "admin", "cache_invalidate": "admin",
    "cache_invalidate_oid": "admin", "cache_flush": "admin",
    # scheduler and maintenance
    "schedule": "admin", "alter_job": "admin", "unschedule": "admin", "run_job": "admin",
    "scheduler_wake": "admin", "job_next_run": "public",
    "maintenance_plan": "reader", "run_maintenance": "admin",
    "stats_snapshot": "admin", "_stats_snapshot_save": "internal",
    # partitioning
    "partition_table": "admin", "partition_maintenance": "admin", "partition_forget": "admin",
    "alter_partition_set": "admin",
    "partition_progress_all": "reader", "partition_now": "public",
    "_partition_config_put": "internal", "_partition_progress": "internal",
    "_partition_progress_done": "internal", "_partition_maintain_set": "internal",
    "_partition_convert": "internal", "_partition_create_initial": "internal",
    # metrics and health
    "metrics": "reader", "database_stats": "reader", "health": "reader",
    "_health_status": "helper",
    # managed matviews
    "manage_matview": "admin", "unmanage_matview": "admin", "matview_manage_oid": "admin",
    "matview_unmanage_oid": "admin", "matview_dropped": "internal",
    "track_generation": "reader", "track_slot": "reader", "track_instance": "reader",
    # applying suggested indexes
    "apply_index": "admin",
    # incremental views
    "create_incremental_view": "admin", "drop_incremental_view": "admin",
    # (applying pending changes needs SELECT on the view, like reading it: applications call it)
    "refresh_incremental": "public", "fresh": "public", "incremental_pending": "public",
    # sample values (own statements; others' need pg_read_all_stats, like texts)
    "statement_samples": "public",
    # misc
    "version": "public", "settings": "public", "_require_role": "helper",
}
for _h in ("name", "ts_key", "key_ts", "bucket_expr", "bucket", "next", "literal", "suffix",
           "unquote", "bucket_key", "children", "floor", "columns", "lock_timeout", "backoff",
           "copy_grants", "standalone", "move", "count", "local_expr", "local_bucket_expr",
           "bucket_counts", "drained_check", "check_settings", "default_keys", "holdable",
           "analyze_parent"):
    CLASSES["_partition_" + _h] = "helper"

# Views and tables: who may SELECT (nobody but the extension's owner may write any of them).
RELATIONS = {
    "statements": "public", "predicates": "public", "predicate_stats": "public",
    "cache_tracked": "public", "jobs": "public", "job_runs": "public", "jobs_status": "public",
    "table_access": "reader", "maintenance_log": "reader", "statement_snapshots": "reader",
    "statement_trends": "reader", "partition_config": "reader", "partition_sets": "reader",
    "partitions": "reader", "partition_progress": "reader",
    "matviews": "reader", "matview_sources": "reader", "matview_status": "reader",
    "index_applications": "reader", "index_application_statements": "reader",
    "index_outcomes": "reader", "index_outcome_statements": "reader",
    "incremental_views": "public",
}

# Functions whose role check names the SQL function users call (a wrapper around them).
CHECK_NAME = {"cache_invalidate_oid": "cache_invalidate", "matview_manage_oid": "manage_matview",
              "matview_unmanage_oid": "unmanage_matview"}

# A value of each argument type, never NULL (STRICT functions would not even be called).
VALUES = {
    "regclass": "'roles_t'::regclass", "text": "'roles_x'", "integer": "1", "bigint": "1",
    "smallint": "1", "oid": "1", "numeric": "1", "boolean": "false", "interval": "'1 day'",
    "jsonb": "'[]'::jsonb", "json": "'[]'::json", "double precision": "1",
    "time without time zone": "'01:00'", "timestamp with time zone": "now()",
    "timestamp without time zone": "now()::timestamp", "text[]": "ARRAY['roles_x']",
    "anyelement": "NULL::roles_t", "name": "'roles_x'",
}


def functions(c):
    """(name, call SQL with every argument given, prokind) of every function in schema perf."""
    rows = c.execute("""
        SELECT p.proname, p.prokind,
               coalesce(array_agg(format_type(t.oid, NULL) ORDER BY a.ord)
                        FILTER (WHERE t.oid IS NOT NULL), '{}')
          FROM pg_proc p
          LEFT JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY a(typ, ord) ON true
          LEFT JOIN pg_type t ON t.oid = a.typ
         WHERE p.pronamespace = 'perf'::regnamespace
         GROUP BY p.oid, p.proname, p.prokind ORDER BY 1""").fetchall()
    out = []
    for name, kind, args in rows:
        vals = ", ".join(VALUES.get(a, f"NULL::{a}") for a in args)
        out.append((name, f"SELECT perf.{name}({vals})", kind))
    return out


def is_role_check(e):
    """The error comes from pg_perf's role check (not from a later ownership check)."""
    return (e.sqlstate == "42501"
            and (e.diag.message_primary or "").startswith("permission denied for function perf."))


def call(c, query):
    """Runs query; returns the psycopg error, or None."""
    try:
        cur = c.execute(query)
        if cur.description:
            cur.fetchall()
        return None
    except psycopg.Error as e:
        return e


@pytest.fixture
def plain(connect, fresh_db):
    """A plain LOGIN role and a connection as it; the table roles_t (owned by postgres)."""
    admin = connect()
    name = "roles_" + uuid.uuid4().hex[:8]
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    admin.execute("CREATE TABLE roles_t (id int PRIMARY KEY, v int)")
    admin.execute("INSERT INTO roles_t SELECT g, g % 10 FROM generate_series(1, 100) g")
    admin.execute(sql.SQL("GRANT SELECT ON roles_t TO {}").format(sql.Identifier(name)))
    c = psycopg.connect(dsn(fresh_db, user=name), autocommit=True)
    c.execute("SET statement_timeout = '60s'")
    yield name, c, admin
    c.close()
    admin.execute("DELETE FROM perf.jobs WHERE owner = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                  (name,))
    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_roles_exist_nologin_and_admin_includes_reader(connect):
    c = connect()
    rows = c.execute("""SELECT rolname, rolcanlogin, rolsuper FROM pg_roles
                         WHERE rolname IN ('perf_reader', 'perf_admin') ORDER BY 1""").fetchall()
    assert rows == [("perf_admin", False, False), ("perf_reader", False, False)]
    assert c.execute("SELECT pg_has_role('perf_admin', 'perf_reader', 'MEMBER')").fetchone()[0]


def test_roles_survive_drop_and_recreate_and_a_second_database(connect, fresh_db):
    """Roles are cluster-wide: DROP EXTENSION leaves them (with their members), CREATE
    EXTENSION finds them, and a second database's CREATE EXTENSION does too."""
    c = connect()
    member = "roles_m_" + uuid.uuid4().hex[:6]
    other_db = "roles_db_" + uuid.uuid4().hex[:6]
    c.execute(f"CREATE ROLE {member}")
    try:
        c.execute(f"GRANT perf_admin TO {member}")
        c.execute("DROP EXTENSION pg_perf")
        assert c.execute("SELECT count(*) FROM pg_roles"
                         " WHERE rolname IN ('perf_reader', 'perf_admin')").fetchone()[0] == 2
        c.execute("CREATE EXTENSION pg_perf")
        assert c.execute(f"SELECT pg_has_role('{member}', 'perf_admin', 'MEMBER')").fetchone()[0]
        with psycopg.connect(dsn(), autocommit=True) as a:
            a.execute(f'CREATE DATABASE "{other_db}"')
        try:
            with psycopg.connect(dsn(other_db), autocommit=True) as o:
                o.execute("CREATE EXTENSION pg_perf")
                assert o.execute("SELECT pg_has_role('perf_admin', 'perf_reader', 'MEMBER')").fetchone()[0]
        finally:
            with psycopg.connect(dsn(), autocommit=True) as a:
                a.execute(f'DROP DATABASE "{other_db}" WITH (FORCE)')
    finally:
        c.execute(f"DROP ROLE {member}")


def test_every_function_is_classified(connect):
    names = {n for n, _, _ in functions(connect())}
    missing = sorted(names - CLASSES.keys())
    assert not missing, f"functions without a role class (add them to CLASSES and the README): {missing}"
    gone = sorted(CLASSES.keys() - names)
    assert not gone, f"classified functions that do not exist: {gone}"


def test_readme_role_table_lists_every_public_function_and_view(connect):
    """The README's role table names every function (but internal _helpers) and view."""
    import os
    from conftest import REPO
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    names = {n for n, _, _ in functions(connect()) if not n.startswith("_")}
    names |= set(RELATIONS)
    absent = sorted(n for n in names if not re.search(rf"`perf\.{re.escape(n)}\b", readme))
    assert not absent, f"not in README's role table: {absent}"


def test_each_function_checks_its_role(plain):
    """As a plain role: admin, reader and internal functions raise 42501 from the check with
    the GRANT as hint; public and helper functions don't. With perf_reader, reader functions
    pass the check and admin functions still refuse; with perf_admin, everything passes."""
    role, c, admin = plain
    funcs = [f for f in functions(admin) if f[2] != "p"]  # (no procedures in pg_perf today)
    wrong = []

    def check(granted):
        for name, query, _ in funcs:
            cls = CLASSES[name]
            if name in ("cache_invalidate_trigger",):
                continue  # a trigger function cannot be called directly
            e = call(c, query)
            needs = {"admin": "perf_admin", "internal": "perf_admin", "reader": "perf_reader"}.get(cls)
            refused = needs is not None and needs not in granted
            if refused:
                if cls == "internal":
                    ok = e is not None and e.sqlstate == "42501"
                else:
                    ok = (e is not None and is_role_check(e)
                          and e.diag.message_hint == f"GRANT {needs} TO {role};"
                          and f"perf.{CHECK_NAME.get(name, name)}(" in e.diag.message_primary)
                if not ok:
                    wrong.append(f"{granted or 'plain'}: {query}: expected 42501 with hint, got "
                                 f"{e and e.sqlstate} {e}")
            elif e is not None and is_role_check(e):
                wrong.append(f"{granted or 'plain'}: {query}: refused by the role check: {e}")

    check(set())
    admin.execute(sql.SQL("GRANT perf_reader TO {}").format(sql.Identifier(role)))
    check({"perf_reader"})
    admin.execute(sql.SQL("REVOKE perf_reader FROM {}").format(sql.Identifier(role)))
    admin.execute(sql.SQL("GRANT perf_admin TO {}").format(sql.Identifier(role)))
    check({"perf_admin", "perf_reader"})
    assert not wrong, "\n".join(wrong)


def test_run_maintenance_dry_run_is_a_read(plain):
    role, c, admin = plain
    e = call(c, "SELECT * FROM perf.run_maintenance(dry_run => true)")
    assert e is not None and is_role_check(e) and e.diag.message_hint == f"GRANT perf_reader TO {role};"
    admin.execute(sql.SQL("GRANT perf_reader TO {}").format(sql.Identifier(role)))
    assert call(c, "SELECT * FROM perf.run_maintenance(dry_run => true)") is None
    e = call(c, "SELECT * FROM perf.run_maintenance()")
    assert e is not None and is_role_check(e) and e.diag.message_hint == f"GRANT perf_admin TO {role};"


def test_relation_privileges(plain):
    """Nobody but the extension's owner may write pg_perf's tables, views or sequences, with
    or without pg_perf's roles; SELECT is as RELATIONS says."""
    role, c, admin = plain
    rels = admin.execute("""SELECT c.relname, c.relkind FROM pg_class c
                             WHERE c.relnamespace = 'perf'::regnamespace
                               AND c.relkind IN ('r', 'p', 'v', 'm', 'S')""").fetchall()
    problems = []
    for who in (role, "perf_reader", "perf_admin"):
        for rel, kind in rels:
            q = sql.Identifier("perf", rel)
            if kind == "S":
                for p in ("USAGE", "UPDATE"):
                    if admin.execute("SELECT has_sequence_privilege(%s, %s, %s)",
                                     (who, f"perf.{rel}", p)).fetchone()[0]:
                        problems.append(f"{who} has {p} on sequence perf.{rel}")
                continue
            for p in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                if admin.execute("SELECT has_table_privilege(%s, %s::regclass, %s)",
                                 (who, q.as_string(admin), p)).fetchone()[0]:
                    problems.append(f"{who} has {p} on perf.{rel}")
            if kind in ("r", "p", "v", "m"):
                if rel not in RELATIONS:
                    problems.append(f"perf.{rel} is not in RELATIONS")
                    continue
                may = admin.execute("SELECT has_table_privilege(%s, %s::regclass, 'SELECT')",
                                    (who, q.as_string(admin))).fetchone()[0]
                should = RELATIONS[rel] == "public" or who != role
                if may != should:
                    problems.append(f"{who}: SELECT on perf.{rel} is {may}, expected {should}")
    assert not problems, "\n".join(problems)
    # And by trying: every write to every table fails with 42501.
    for rel, kind in rels:
        if kind not in ("r", "p"):
            continue
        q = sql.Identifier("perf", rel).as_string(admin)
        for stmt in (f"INSERT INTO {q} DEFAULT VALUES", f"UPDATE {q} SET {first_column(admin, rel)} = "
                     f"{first_column(admin, rel)}", f"DELETE FROM {q}", f"TRUNCATE {q}"):
            e = call(c, stmt)
            assert e is not None and e.sqlstate == "42501", (stmt, e)


def first_column(c, rel):
    return c.execute("""SELECT quote_ident(attname) FROM pg_attribute
                         WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
                           AND attidentity = '' AND attgenerated = ''
                         ORDER BY attnum LIMIT 1""", (f"perf.{rel}",)).fetchone()[0]


def test_no_function_shows_another_users_query_text(plain):
    """postgres runs a slow statement with a marker only its text (and plan) contains; a
    plain role, and one with perf_reader, call every function they may call without
    arguments (and why_slow on that statement) and read every view: the marker never shows."""
    role, c, admin = plain
    admin.execute("SET perf.slow_query_ms = 0")
    for _ in range(3):
        admin.execute("SELECT count(*) AS roles_secret_alias FROM roles_t WHERE v = 3")
    qid = admin.execute("SELECT queryid FROM perf.statements WHERE query LIKE '%roles_secret_alias%'"
                        " LIMIT 1").fetchone()
    assert qid, "the marker statement was not recorded"
    callable_ = admin.execute("""
        SELECT p.proname FROM pg_proc p
         WHERE p.pronamespace = 'perf'::regnamespace AND p.pronargs = p.pronargdefaults
           AND p.prokind = 'f' AND p.proname NOT LIKE '\\_%'""").fetchall()
    queries = [f"SELECT * FROM perf.{n}()" for (n,) in callable_
               if CLASSES.get(n) in ("public", "reader")]
    queries.append(f"SELECT * FROM perf.why_slow({qid[0]})")
    queries.append("SELECT * FROM perf.slow_queries(100000)")  # past the default limit
    queries += [f"SELECT * FROM perf.{r}" for r in RELATIONS]
    leaks = []
    for granted in ("plain", "perf_reader"):
        if granted == "perf_reader":
            admin.execute(sql.SQL("GRANT perf_reader TO {}").format(sql.Identifier(role)))
        for q in queries:
            try:
                cur = c.execute(q)
                rows = cur.fetchall() if cur.description else []
            except psycopg.Error as e:
                if "roles_secret_alias" in str(e):
                    leaks.append(f"{granted}: {q} (in its error)")
                continue
            if "roles_secret_alias" in repr(rows):
                leaks.append(f"{granted}: {q}")
    assert not leaks, "another user's query text shown by:\n" + "\n".join(leaks)
    # The marker is really there to find: the owner sees it, and so does the role once it is
    # a member of pg_read_all_stats (PostgreSQL's role for reading every statement's text).
    assert "roles_secret_alias" in repr(admin.execute("SELECT * FROM perf.slow_queries(100000)").fetchall())
    admin.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
    assert "roles_secret_alias" in repr(c.execute("SELECT * FROM perf.statements").fetchall())


def test_whatif_and_suggest_indexes_work_for_a_plain_role(plain):
    role, c, _ = plain
    rows = c.execute("SELECT * FROM perf.whatif('SELECT * FROM roles_t WHERE v = 5', "
                     "ARRAY['CREATE INDEX ON roles_t (v)'])").fetchall()
    assert rows
    c.execute("SELECT * FROM perf.suggest_indexes(ARRAY['SELECT * FROM roles_t WHERE v = 5'])").fetchall()
    c.execute("SELECT * FROM perf.suggest_indexes()").fetchall()


def test_cache_and_own_statements_work_for_a_plain_role(plain):
    role, c, _ = plain
    assert c.execute("SELECT perf.cached_json('SELECT v FROM roles_t WHERE id = $1', '[1]')").fetchone()[0] == [{"v": 1}]
    c.execute("SELECT count(*) AS roles_mine FROM roles_t WHERE v = 1")
    texts = [r[0] for r in c.execute("SELECT query FROM perf.statements").fetchall()]
    assert any("roles_mine" in (t or "") for t in texts), texts


def test_security_definer_functions_pin_search_path(connect):
    rows = connect().execute("""
        SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
         WHERE p.pronamespace = 'perf'::regnamespace AND p.prosecdef""").fetchall()
    bad = [r for r in rows if not any((s or "").startswith("search_path=pg_catalog")
                                      for s in (r[1] or []))]
    assert not bad, bad
