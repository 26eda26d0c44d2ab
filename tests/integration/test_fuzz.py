"""Fuzzing the SQL surface: every function in schema perf, called as a superuser and as a
plain role with NULLs, empty and huge strings, utility statements, rewritten statements,
bad index DDL and out-of-range numbers. Whatever the input, the server must not crash (a
backend crash restarts the server and drops every connection) and no call may fail with
XX000 (internal_error): bad input gets an ERROR with a proper SQLSTATE.

The function list is read from the catalog, so a function added later is fuzzed too."""

import time

import psycopg
import pytest
from psycopg import sql

from conftest import dsn

HUGE = "x" * 1_000_000

# Statements for parameters that take SQL text: the classes that crashed or leaked before
# (utility statements, statements rules rewrite into utility statements or into nothing,
# several statements, parameters, NUL-free garbage) and harmless plain ones.
STATEMENTS = [
    None,
    "",
    " ",
    ";",
    "SELECT 1 INTO fuzz_into",
    "CREATE TABLE fuzz_ctas AS SELECT 1",
    "SELECT * FROM fuzz_t WHERE v = 1",
    "SELECT * FROM fuzz_t WHERE v = $1",
    "INSERT INTO fuzz_notify_view VALUES (1)",  # DO INSTEAD NOTIFY rule
    "INSERT INTO fuzz_nothing_view VALUES (1)",  # DO INSTEAD NOTHING rule
    "VACUUM fuzz_t",
    "BEGIN",
    "COMMIT",
    "COPY fuzz_t TO STDOUT",
    "NOTIFY fuzz",
    "SET work_mem = '1MB'",
    "EXPLAIN SELECT 1",
    "SELECT 1; SELECT 2",
    "DO $$ BEGIN END $$",
    "CALL fuzz_proc()",
    "SELECT nextval('fuzz_seq')",
    "DELETE FROM fuzz_t",
    "SELEC garbage (((",
    "SELECT * FROM no_such_table",
    "SELECT " + ", ".join(f"{i}" for i in range(2000)),
    HUGE,
]

INDEX_DDL = [
    [],
    [None],
    [""],
    ["CREATE INDEX ON fuzz_t (v)"],
    ["CREATE INDEX ON fuzz_t (" + ", ".join(["v"] * 33) + ")"],
    ["CREATE INDEX ON fuzz_t (" + ", ".join(f"(v + {i})" for i in range(33)) + ")"],
    ["CREATE INDEX ON fuzz_view (v)"],
    ["CREATE INDEX ON fuzz_seq (last_value)"],
    ["CREATE INDEX ON fuzz_t (v) WITH (nonsense = 1)"],
    ["CREATE INDEX ON fuzz_t (v COLLATE \"C\")"],
    ["CREATE UNIQUE INDEX ON fuzz_t USING hash (v)"],
    ["CREATE INDEX ON fuzz_t ((nextval('fuzz_seq')))"],
    ["CREATE INDEX ON fuzz_t ((1 / (v - v)))"],
    ["CREATE INDEX ON fuzz_t USING heap (v)"],
    ["CREATE INDEX ON fuzz_t USING no_such_am (v)"],
    ["CREATE INDEX ON fuzz_t (ctid)"],
    ["CREATE INDEX ON fuzz_t (no_such_column)"],
    ["CREATE INDEX ON pg_class (relname)"],
    ["CREATE INDEX ON fuzz_t (v) WHERE random() > 0.5"],
    ["CREATE INDEX ON fuzz_t (v) INCLUDE (v)"],
    ["CREATE INDEX ON fuzz_t USING brin (v DESC)"],
    ["CREATE INDEX ON fuzz_t (v); CREATE INDEX ON fuzz_t (w)"],
    ["DROP TABLE fuzz_t"],
    ["SELECT 1"],
    [HUGE],
]

VALUES = {
    "text": STATEMENTS,
    "text[]": INDEX_DDL + [[s] for s in STATEMENTS],
    "jsonb": [None, "null", "[]", "{}", '"x"', "[null]", "[1, 2, 3]", '[{"a": 1}]',
              "[" * 500 + "]" * 500, '["' + "y" * 100_000 + '"]'],
    "json": [None, "null", "[]", "{}"],
    "interval": [None, "0", "-1 second", "1 second", "-infinity", "1000000 years"],
    "integer": [None, 0, -1, 1, 2**31 - 1, -(2**31)],
    "bigint": [None, 0, -1, 1, 2**63 - 1, -(2**63)],
    "smallint": [None, 0, -1, 1, 32767],
    "double precision": [None, 0.0, -1.0, 1e308, float("nan"), float("inf")],
    "real": [None, 0.0, -1.0, float("nan")],
    "numeric": [None, 0, -1, "NaN"],
    "boolean": [None, True, False],
    "oid": [None, 0, 1, 1259, 4294967295],
    "regclass": [None, "pg_class", "fuzz_t", "fuzz_view", "fuzz_seq", "fuzz_mv",
                 "fuzz_part", "fuzz_idx", "fuzz_temp"],
    "name": [None, "", "x" * 100],
    "timestamp with time zone": [None, "-infinity", "infinity", "2000-01-01"],
    "anyelement": [None],
}

# The value every other argument has while one is varied: valid, so the varied one is what
# the function has to deal with.
BASE = {
    "text": "SELECT * FROM fuzz_t WHERE v = 1",
    "text[]": [],
    "jsonb": "[]",
    "interval": "1 second",
    "integer": 1,
    "bigint": 1,
    "regclass": "fuzz_t",
}

SETUP = [
    "CREATE TABLE fuzz_t (id int PRIMARY KEY, v int, w text)",
    "INSERT INTO fuzz_t SELECT g, g % 10, md5(g::text) FROM generate_series(1, 2000) g",
    "CREATE INDEX fuzz_idx ON fuzz_t (w)",
    "ANALYZE fuzz_t",
    "CREATE VIEW fuzz_view AS SELECT * FROM fuzz_t",
    "CREATE MATERIALIZED VIEW fuzz_mv AS SELECT * FROM fuzz_t",
    "CREATE SEQUENCE fuzz_seq",
    "CREATE TABLE fuzz_part (d date, v int) PARTITION BY RANGE (d)",
    "CREATE TABLE fuzz_part_1 PARTITION OF fuzz_part FOR VALUES FROM ('2000-01-01') TO ('2100-01-01')",
    "CREATE TABLE fuzz_rule_target (v int)",
    "CREATE VIEW fuzz_notify_view AS SELECT * FROM fuzz_rule_target",
    "CREATE RULE fuzz_notify AS ON INSERT TO fuzz_notify_view DO INSTEAD NOTIFY fuzz",
    "CREATE VIEW fuzz_nothing_view AS SELECT * FROM fuzz_rule_target",
    "CREATE RULE fuzz_nothing AS ON INSERT TO fuzz_nothing_view DO INSTEAD NOTHING",
    "CREATE PROCEDURE fuzz_proc() LANGUAGE sql AS 'SELECT 1'",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {plain}",
    "GRANT USAGE, SELECT ON fuzz_seq TO {plain}",
    "GRANT CREATE ON SCHEMA public TO {plain}",
]

# Statements run (and captured by pg_perf) before the fuzzing starts.
CAPTURED = [
    "SELECT 1 INTO TEMP fuzz_into_captured",
    "CREATE TEMP TABLE fuzz_ctas_captured AS SELECT * FROM fuzz_t",
    "INSERT INTO fuzz_notify_view VALUES (1)",
    "INSERT INTO fuzz_nothing_view VALUES (1)",
    "EXPLAIN SELECT * FROM fuzz_t WHERE v = 3",
    "DO $$ BEGIN PERFORM count(*) FROM fuzz_t; END $$",
    "CALL fuzz_proc()",
    "PREPARE fuzz_p(int) AS SELECT * FROM fuzz_t WHERE v = $1",
    "EXECUTE fuzz_p(4)",
    "SELECT * FROM fuzz_t WHERE v = 1 FOR UPDATE",
    "WITH d AS (DELETE FROM fuzz_t WHERE id < 0 RETURNING *) SELECT * FROM d",
    "SELECT * FROM fuzz_view WHERE v = 2",
    "SELECT * FROM fuzz_part WHERE d = '2024-01-01' AND v = 1",
    "SELECT * FROM fuzz_t WHERE v = 1/0",
    "VACUUM fuzz_t",
    "SELECT * FROM fuzz_mv WHERE v = 5",
]

# Functions whose calls are skipped for a value because it is not an input error but a
# long-running request (none yet: a statement_timeout bounds every call instead).
STATEMENT_TIMEOUT = "20s"
# SQLSTATE classes a fuzzed call may end with: anything but an internal error, a crash, or
# "connection lost".
FORBIDDEN = {"XX000", "XX001", "XX002"}


def perf_functions(c):
    """(name, [argument type names], [default count]) of every function in schema perf."""
    rows = c.execute(
        """SELECT p.proname,
                  ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) t),
                  p.pronargdefaults, p.prokind
             FROM pg_proc p
            WHERE p.pronamespace = 'perf'::regnamespace AND p.prokind IN ('f', 'p')
              AND p.prorettype <> 'trigger'::regtype
            ORDER BY 1, 2"""
    ).fetchall()
    return [(r[0], list(r[1]), r[2], r[3]) for r in rows]


def calls_for(args):
    """Argument tuples: all NULL, then each argument varied over its pool with the others at
    their first non-NULL value."""
    pools = [VALUES.get(a, [None]) for a in args]
    base = [BASE.get(a, next((v for v in p if v is not None), None)) for a, p in zip(args, pools)]
    yield tuple(None for _ in args)
    for i, pool in enumerate(pools):
        for v in pool:
            call = list(base)
            call[i] = v
            yield tuple(call)


def render(name, args, kind, values):
    # A polymorphic argument takes its type from a table's row type.
    casts = [sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL("fuzz_t" if a == "anyelement" else a))
             for a in args]
    fn = sql.Identifier("perf", name)
    if kind == "p":
        return sql.SQL("CALL {}({})").format(fn, sql.SQL(", ").join(casts))
    return sql.SQL("SELECT * FROM {}({})").format(fn, sql.SQL(", ").join(casts))


def adapt(args, values):
    out = []
    for a, v in zip(args, values):
        if isinstance(v, float) and a in ("double precision", "real"):
            out.append(str(v) if v == v else "NaN")
        else:
            out.append(v)
    return out


@pytest.fixture
def plain_role(connect, fresh_db):
    """A plain login role for this database only; dropped afterwards."""
    admin = connect()
    name = "fuzz_" + fresh_db
    admin.execute(f'CREATE ROLE "{name}" LOGIN')
    # With pg_perf's roles, so that hostile input reaches each function's non-superuser
    # paths instead of stopping at the role check (test_roles.py covers the check).
    admin.execute(f'GRANT perf_admin TO "{name}"')
    yield name
    # A new connection: a crash during the test may have broken the first one.
    with psycopg.connect(dsn(fresh_db), autocommit=True) as c:
        c.execute(f'DROP OWNED BY "{name}"')
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f'DROP ROLE "{name}"')


@pytest.mark.parametrize("superuser", [True, False], ids=["superuser", "plain_role"])
def test_every_perf_function_survives_hostile_input(connect, fresh_db, plain_role, superuser):
    admin = connect()
    for s in SETUP:
        admin.execute(s.format(plain=f'"{plain_role}"'))
    role = "postgres" if superuser else plain_role
    # A captured workload, so the advisor and the statistics functions have input: plain
    # statements, with parameters, and the kinds that have no plan or a rewritten one.
    for i in range(5):
        admin.execute("SELECT * FROM fuzz_t WHERE v = %s AND w > 'a'", (i,))
        admin.execute(f"SELECT count(*) FROM fuzz_t WHERE v = {i} /* comment */")
    for stmt in CAPTURED:
        try:
            admin.execute(stmt)
        except psycopg.Error:
            pass  # failing statements are part of the workload too
    queryids = [r[0] for r in admin.execute("SELECT queryid FROM perf.query_stats()").fetchall()]
    VALUES["bigint"] = VALUES["bigint"][:6] + queryids[:20]
    start_time = admin.execute("SELECT pg_postmaster_start_time()").fetchone()[0]

    def session():
        c = psycopg.connect(dsn(fresh_db, user=role), autocommit=True)
        c.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        c.execute("CREATE TEMP TABLE IF NOT EXISTS fuzz_temp (v int)")
        return c

    c = session()
    internal, crashes = [], []
    calls = 0
    for name, args, _ndefaults, kind in perf_functions(admin):
        for values in calls_for(args):
            calls += 1
            query = render(name, args, kind, values)
            what = f"perf.{name}{str(values)[:200]}"
            try:
                cur = c.execute(query, adapt(args, values))
                if cur.description:
                    cur.fetchall()
            except psycopg.Error as e:
                state = e.sqlstate
                if c.broken or state is None or state.startswith("57P"):
                    # A crash drops every connection: note it, wait for crash recovery,
                    # go on, so one run lists every crashing input.
                    crashes.append(f"{what}: {state} {str(e)[:200]}")
                    c = wait_for_server(session)
                    continue
                if state in FORBIDDEN:
                    internal.append(f"{what}: {state} {str(e)[:300]}")
            if c.closed or c.broken:
                crashes.append(f"{what}: connection broken")
                c = wait_for_server(session)
    c.close()
    print(f"{calls} fuzzed calls as {role}")
    assert not crashes and not internal, (
        f"{len(crashes)} calls crashed the server:\n" + "\n".join(crashes)
        + f"\n{len(internal)} internal errors (XX000):\n" + "\n".join(internal))
    # A crash of any backend restarts the server and drops every connection, this one too.
    assert admin.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == start_time
    assert calls > 300, f"only {calls} calls were made: the function list looks wrong"


def wait_for_server(session):
    deadline = time.time() + 60
    while True:
        try:
            return session()
        except psycopg.Error:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
