"""Query ids without jumbling every statement: with compute_query_id = auto, pg_perf gives a
client's statement the queryId core computed for the first statement with the same text
fingerprint. These tests prove the ids are core's (perf.verify_query_ids compares each
memoized id with a fresh jumble; without it, the same statistics entry is hit by core's own
id), that statements core tells apart stay apart, and that catalog, search_path and role
changes are never answered from a stale memo.

Statements are sent with the simple query protocol (PQexec), as psql and pgbench send them:
that is the path the memo serves."""

import psycopg
import pytest

from conftest import dsn

# (first, second): the same statement with other constants. Core gives both one queryId,
# and the second must be answered from the memo.
SAME_SHAPE = [
    ("SELECT v FROM kv WHERE k = 1", "SELECT v FROM kv WHERE k = 99"),
    ("SELECT v FROM kv WHERE k IN (1, 2, 3)", "SELECT v FROM kv WHERE k IN (4, 5, 6)"),
    ("SELECT v FROM kv WHERE v = 'a' OR v LIKE 'b%'", "SELECT v FROM kv WHERE v = 'zz' OR v LIKE 'q%'"),
    ("SELECT k FROM kv WHERE k > 1.5", "SELECT k FROM kv WHERE k > 2e3"),
    ("SELECT k FROM kv WHERE k > -5", "SELECT k FROM kv WHERE k > -7"),
    ("SELECT k FROM kv WHERE k::int8 > 3000000000", "SELECT k FROM kv WHERE k::int8 > 4000000000"),
    ("SELECT k, v FROM kv WHERE k > 1 ORDER BY v LIMIT 10 OFFSET 2",
     "SELECT k, v FROM kv WHERE k > 7 ORDER BY v LIMIT 10 OFFSET 2"),
    ("SELECT v, count(*) FROM kv WHERE k < 50 GROUP BY v HAVING count(*) > 1",
     "SELECT v, count(*) FROM kv WHERE k < 70 GROUP BY v HAVING count(*) > 1"),
    ("SELECT * FROM kv a JOIN kv b ON a.k = b.k + 1 WHERE a.k < 10",
     "SELECT * FROM kv a JOIN kv b ON a.k = b.k + 2 WHERE a.k < 20"),
    ("WITH w AS (SELECT k FROM kv WHERE k < 5) SELECT count(*) FROM w",
     "WITH w AS (SELECT k FROM kv WHERE k < 9) SELECT count(*) FROM w"),
    ("SELECT (SELECT max(k) FROM kv WHERE k < 3), E'x\\ty', $$d$$",
     "SELECT (SELECT max(k) FROM kv WHERE k < 4), E'other', $q$e$q$"),
    ("SELECT k FROM kv WHERE k = ANY ('{1,2}'::int[]) AND v <> ''",
     "SELECT k FROM kv WHERE k = ANY ('{3}'::int[]) AND v <> 'x'"),
    ("SELECT sum(k + 1) OVER (PARTITION BY v ORDER BY k) FROM kv",
     "SELECT sum(k + 5) OVER (PARTITION BY v ORDER BY k) FROM kv"),
    ("SELECT '{\"a\": 1}'::jsonb -> 'a', interval '1 day', date '2024-01-01'",
     "SELECT '{\"b\": 2}'::jsonb -> 'b', interval '2 hours', date '2025-02-02'"),
    ("INSERT INTO kv VALUES (1001, 'a') ON CONFLICT (k) DO UPDATE SET v = 'b' RETURNING k",
     "INSERT INTO kv VALUES (1002, 'c') ON CONFLICT (k) DO UPDATE SET v = 'd' RETURNING k"),
    ("UPDATE kv SET v = 'u' WHERE k = 1001", "UPDATE kv SET v = 'w' WHERE k = 1002"),
    ("DELETE FROM kv WHERE k = 1001", "DELETE FROM kv WHERE k = 1002"),
    ("/* app=a */ SELECT v FROM kv WHERE k = 3 -- trailing", "/* app=b */ SELECT v FROM kv WHERE k = 4"),
    ("SELECT v FROM kv WHERE k = 5; SELECT v FROM kv WHERE k = 6 ORDER BY 1",
     "SELECT v FROM kv WHERE k = 7; SELECT v FROM kv WHERE k = 8 ORDER BY 1"),
]

# Pairs core tells apart although they differ only in constants: never one memo entry.
DIFFERENT_IDS = [
    ("SELECT k, v FROM kv ORDER BY 1", "SELECT k, v FROM kv ORDER BY 2"),
    ("SELECT v, k, count(*) FROM kv GROUP BY 1, 2", "SELECT v, k, count(*) FROM kv GROUP BY 2, 1"),
    ("SELECT DISTINCT ON (1) k, v FROM kv", "SELECT DISTINCT ON (2) k, v FROM kv"),
    ("SELECT 1.5::float(24)", "SELECT 1.5::float(25)"),
    ("SELECT k FROM kv WHERE k::int8 > 2147483647", "SELECT k FROM kv WHERE k::int8 > 3000000000"),
    ("SELECT -2147483648", "SELECT 2147483648"),
    ("SELECT 1", "SELECT 1.0"),
    ("SELECT 9223372036854775807", "SELECT 9223372036854775808"),
]


class Session:
    """One connection that runs statements with the simple query protocol and collects the
    server's WARNINGs."""

    def __init__(self, dbname, verify=True):
        self.conn = psycopg.connect(dsn(dbname), autocommit=True)
        self.warnings = []
        self.conn.add_notice_handler(self._notice)
        self.run(f"SET perf.verify_query_ids = {'on' if verify else 'off'}")

    def _notice(self, diag):
        if diag.severity_nonlocalized == "WARNING":
            self.warnings.append(diag.message_primary)

    def run(self, sql):
        res = self.conn.pgconn.exec_(sql.encode())
        status = res.status
        if status not in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
            raise AssertionError(f"{sql!r} failed: {res.error_message.decode()}")
        return res

    def value(self, sql):
        res = self.run(sql)
        return res.get_value(0, 0).decode()

    def memo(self):
        hits, misses = self.value("SELECT hits || ',' || misses FROM perf.query_id_memo()").split(",")
        return int(hits), int(misses)

    def memo_hits(self, sql):
        """How many of the statements in `sql` were answered from the memo. The counter is
        read by a statement that is itself a memo hit from the second time on, so that one
        is taken off."""
        self.memo()
        before = self.memo()[0]
        self.run(sql)
        return self.memo()[0] - before - 1

    def close(self):
        self.conn.close()


@pytest.fixture
def kv_db(connect):
    c = connect()
    c.execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
    c.execute("INSERT INTO kv SELECT g, 'v' || (g % 7) FROM generate_series(1, 100) g")
    c.execute("ANALYZE kv")
    return c.info.dbname


def entries(dbname, like):
    with psycopg.connect(dsn(dbname), autocommit=True) as c:
        return c.execute(
            "SELECT queryid, calls FROM perf.statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE %s "
            "ORDER BY queryid",
            (like,),
        ).fetchall()


def test_memoized_ids_are_cores_ids(kv_db):
    s = Session(kv_db, verify=True)
    for first, second in SAME_SHAPE:
        s.run(first)
        # Each statement of `second` (one, or two for the multi-statement pair) is a hit.
        expected = 1 + second.count(";")
        assert s.memo_hits(second) == expected, f"{second!r} was not answered from the memo"
    assert s.warnings == [], s.warnings
    s.close()


def test_constants_that_change_the_tree_are_never_shared(kv_db):
    s = Session(kv_db, verify=True)
    for first, second in DIFFERENT_IDS:
        s.run(first)
        assert s.memo_hits(second) == 0, f"{second!r} was answered from {first!r}'s memo entry"
        # ... while the same text again is a hit (the memo is in use at all).
        assert s.memo_hits(second) == 1, f"{second!r} repeated was not answered from the memo"
    assert s.warnings == [], s.warnings
    s.close()


def test_without_verification_core_ids_hit_the_same_entries(kv_db):
    """Memo ids (verification off) and core's own jumble (compute_query_id = on) land on
    the same statistics entry."""
    memo_session = Session(kv_db, verify=False)
    core_session = Session(kv_db, verify=False)
    core_session.run("SET compute_query_id = on")
    for k in range(5):
        memo_session.run(f"SELECT v FROM kv WHERE k = {k} AND v <> 'none'")
        memo_session.run(f"SELECT k, v FROM kv WHERE k > {k} ORDER BY 2 LIMIT 3")
    for k in range(3):
        core_session.run(f"SELECT v FROM kv WHERE k = {k + 50} AND v <> 'other'")
        core_session.run(f"SELECT k, v FROM kv WHERE k > {k + 7} ORDER BY 2 LIMIT 3")
    assert memo_session.memo()[0] >= 8
    assert [calls for _, calls in entries(kv_db, "SELECT v FROM kv WHERE k = $1 AND v <> $2")] == [8]
    assert [calls for _, calls in entries(kv_db, "SELECT k, v FROM kv WHERE k > $1 ORDER BY 2 LIMIT $2")] == [8]
    memo_session.close()
    core_session.close()


def test_catalog_changes_empty_the_memo(kv_db):
    s = Session(kv_db, verify=False)
    s.run("CREATE TABLE churn (a int, b int)")
    s.run("SELECT b FROM churn WHERE a = 1")
    # Same name, new relation and column order: core's id changes, so must ours.
    other = psycopg.connect(dsn(kv_db), autocommit=True)
    other.execute("DROP TABLE churn")
    other.execute("CREATE TABLE churn (b int, a int)")
    other.close()
    s.run("SELECT b FROM churn WHERE a = 2")
    ids = entries(kv_db, "SELECT b FROM churn WHERE a = $1")
    assert len(ids) == 2 and all(calls == 1 for _, calls in ids), ids
    # A new function overload changes what f(1) resolves to.
    s.run("CREATE FUNCTION memo_f(numeric) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1'")
    s.run("SELECT memo_f(1) AS one")
    s.run("CREATE FUNCTION memo_f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 2'")
    assert s.value("SELECT memo_f(2) AS one") == "2"
    ids = entries(kv_db, "SELECT memo_f($1) AS one")
    assert len(ids) == 2, ids
    s.close()


def test_search_path_and_role_are_part_of_the_key(kv_db):
    s = Session(kv_db, verify=True)
    s.run("CREATE SCHEMA s1; CREATE SCHEMA s2")
    s.run("CREATE TABLE s1.t (x int); CREATE TABLE s2.t (y int, x int)")
    s.run("SET search_path = s1")
    s.run("SELECT x FROM t WHERE x = 1")
    s.run("SET search_path = s2")
    s.run("SELECT x FROM t WHERE x = 2")
    s.run("RESET search_path")
    # Roles are cluster-wide: names of this test's own, dropped at the end.
    r1, r2 = f"{kv_db}_r1", f"{kv_db}_r2"
    s.run(f"CREATE ROLE {r1}; CREATE ROLE {r2}")
    s.run(f"CREATE SCHEMA {r1} AUTHORIZATION {r1}; CREATE SCHEMA {r2} AUTHORIZATION {r2}")
    s.run(f"CREATE TABLE {r1}.own (x int); CREATE TABLE {r2}.own (z int, x int)")
    s.run(f"GRANT SELECT ON {r1}.own TO {r1}; GRANT SELECT ON {r2}.own TO {r2}")
    s.run('SET search_path = "$user"')
    s.run(f"SET ROLE {r1}")
    s.run("SELECT x FROM own WHERE x = 1")
    s.run(f"SET ROLE {r2}")
    s.run("SELECT x FROM own WHERE x = 2")
    s.run("RESET ROLE")
    s.run("RESET search_path")
    s.run(f"DROP SCHEMA {r1}, {r2} CASCADE; DROP ROLE {r1}; DROP ROLE {r2}")
    assert s.warnings == [], s.warnings
    assert len(entries(kv_db, "SELECT x FROM t WHERE x = $1")) == 2
    s.close()


def test_parser_settings_that_change_the_tree(kv_db):
    s = Session(kv_db, verify=True)
    s.run("SELECT k FROM kv WHERE v = NULL")
    s.run("SET transform_null_equals = on")
    s.run("SELECT k FROM kv WHERE v = NULL")
    s.run("RESET transform_null_equals")
    # Strings read with backslash escapes: the memo steps aside, ids still right.
    s.run("SET standard_conforming_strings = off")
    s.run("SET escape_string_warning = off")
    s.run("SELECT k FROM kv WHERE v = 'a\\'b' OR k = 1")
    s.run("SELECT k FROM kv WHERE v = 'c\\'d' OR k = 2")
    s.run("RESET standard_conforming_strings")
    assert s.warnings == [], s.warnings
    # `v = NULL` is an equality with a constant (normalized to $1); transformed, it is
    # `v IS NULL` and keeps its text: two statements, each counted once.
    assert [calls for _, calls in entries(kv_db, "SELECT k FROM kv WHERE v = $1")] == [1]
    assert [calls for _, calls in entries(kv_db, "SELECT k FROM kv WHERE v = NULL")] == [1]
    s.close()


def test_functions_and_extended_protocol_still_get_ids(kv_db):
    """Statements the memo does not serve (inside functions, with $n parameters) get core's
    ids all the same."""
    s = Session(kv_db, verify=True)
    s.run("SET perf.track = 'all'")
    s.run(
        "CREATE FUNCTION memo_lookup(key int) RETURNS text LANGUAGE plpgsql AS "
        "$$ DECLARE wanted int := key; BEGIN RETURN (SELECT v FROM kv WHERE kv.k = wanted); END $$"
    )
    assert s.value("SELECT memo_lookup(3)") == "v3"
    assert s.value("SELECT memo_lookup(4)") == "v4"
    s.run("RESET perf.track")
    with psycopg.connect(dsn(kv_db), autocommit=True) as c:
        for k in range(3):
            c.execute("SELECT v FROM kv WHERE k = %s AND v LIKE 'v%%'", (k,))
            c.execute("SELECT count(*) FROM kv WHERE v LIKE 'extended%'")
    assert [calls for _, calls in entries(kv_db, "SELECT v FROM kv WHERE k = $1 AND v LIKE $2")] == [3]
    assert [calls for _, calls in entries(kv_db, "SELECT count(*) FROM kv WHERE v LIKE $1")] == [3]
    assert [calls for _, calls in entries(kv_db, "(SELECT v FROM kv WHERE kv.k = wanted)%")] == [2]
    assert s.warnings == [], s.warnings
    s.close()
