"""Result cache hardening (issue #10), with several real connections: tracking changes
committed while a read is in progress, temporary tables shadowing permanent ones across
sessions, and DDL that must (or must not) invalidate cached results.

Single-session SQL surface (NULL arguments, negative TTL, privileges, settings in the key,
a transaction's own DDL) is in tests/regress/sql/cache_hardening.sql."""

import threading
import time

import psycopg
import pytest

from test_cache import Counters, cached_json, direct, make_items, prime

ITEMS_ALL = "SELECT id, grp, name, val FROM items ORDER BY id"

# Ways to stop invalidation of a tracked table, each committed by its own session.
STOP_TRACKING = {
    "untrack": "SELECT perf.cache_untrack('items')",
    "disable_trigger": "ALTER TABLE items DISABLE TRIGGER pg_perf_cache_invalidate",
    "disable_user_triggers": "ALTER TABLE items DISABLE TRIGGER USER",
}


def _entry_hits(c, query):
    """(valid entries, their hits) of `query` in perf.cache_entries()."""
    return c.execute("SELECT count(*) FILTER (WHERE valid), coalesce(sum(hits) FILTER (WHERE valid), 0) "
                     "FROM perf.cache_entries() WHERE query = %s", (query,)).fetchone()


@pytest.mark.parametrize("how", list(STOP_TRACKING))
def test_tracking_stopped_during_a_read_then_writes_are_never_stale(connect, how):
    """A read whose statement started while the table was tracked runs its cached call after
    another session committed untrack (or disabled the trigger) and a write: the result must not
    be stored as if the table were still tracked, or the next write (which fires no trigger)
    would leave it stale forever (ttl 0)."""
    admin = connect()
    make_items(admin)
    reader = connect()
    reader.execute("SET perf.cache_default_ttl = 0")
    result = {}

    def slow_read():
        # The statement's snapshot is taken before pg_sleep; perf.cached_json runs after it.
        row = reader.execute("SELECT pg_sleep(1.0), perf.cached_json(%s)", (ITEMS_ALL,)).fetchone()
        result["first"] = row[1]

    t = threading.Thread(target=slow_read)
    t.start()
    time.sleep(0.3)
    other = connect()
    other.execute(STOP_TRACKING[how])
    other.execute("UPDATE items SET val = 1 WHERE id = 1")
    t.join()
    assert result["first"] == direct(reader, ITEMS_ALL)
    # writes that fire no invalidation trigger
    for i in range(3):
        other.execute("UPDATE items SET val = %s WHERE id = 2", (1000 + i,))
        got = cached_json(reader, ITEMS_ALL)
        assert got == direct(reader, ITEMS_ALL), f"stale after {how} + write {i}"
        assert got[1]["val"] == 1000 + i


def test_temp_table_shadowing_a_permanent_one_in_another_session(connect):
    """Session B has a temporary table `items`; session A caches a query on the permanent
    `items`. The same query text in B reads B's temporary table, never A's cached result; B's
    queries on other tables are still cached."""
    admin = connect()
    make_items(admin)
    make_items(admin, "others", rows=3)
    b = connect()
    b.execute("CREATE TEMP TABLE items (id int, grp int, name text, val int)")
    b.execute("INSERT INTO items VALUES (1, 0, 'temp', -1)")
    a = connect()
    cnt = Counters(admin)
    cached = prime(a, cnt, ITEMS_ALL)
    assert len(cached) == 10
    for _ in range(2):
        got = cached_json(b, ITEMS_ALL)
        assert got == direct(b, ITEMS_ALL) == [{"id": 1, "grp": 0, "name": "temp", "val": -1}]
    # A still hits its entry; B caches queries on other tables.
    assert prime(a, cnt, ITEMS_ALL) == cached
    q_others = "SELECT id, name FROM others ORDER BY id"
    assert prime(b, cnt, q_others) == direct(b, q_others)
    # A second session with the same temporary table names shares B's entries.
    c = connect()
    c.execute("CREATE TEMP TABLE items (id int)")
    cnt.reset()
    assert cached_json(c, q_others) == direct(c, q_others)
    assert cnt.delta()["hits"] == 1
    # B drops its temporary table: the permanent table is what the text names again.
    b.execute("DROP TABLE items")
    assert cached_json(b, ITEMS_ALL) == direct(b, ITEMS_ALL) == cached


UNRELATED_DDL = [
    "CREATE TEMP TABLE scratch (x int)",
    "CREATE TEMP TABLE scratch2 (x int) ON COMMIT DROP",
    "CREATE TABLE unrelated (x int)",
    "ALTER TABLE unrelated ADD COLUMN y int",
    "CREATE INDEX ON unrelated (x)",
    "GRANT SELECT ON unrelated TO PUBLIC",
    "DROP TABLE unrelated",
    "CREATE TABLE unrelated_tracked (x int)",
    "SELECT perf.cache_track('unrelated_tracked')",
    "ALTER TABLE unrelated_tracked DISABLE TRIGGER USER",
    "DROP TABLE unrelated_tracked",
]


def test_unrelated_ddl_keeps_entries_and_source_ddl_invalidates(connect):
    """DDL by other sessions on other tables (temporary or not) keeps cached entries valid (the
    next call is a hit); ALTER, GRANT/REVOKE or a trigger change on a source table invalidates
    them (the next call is a miss and equals direct execution)."""
    admin = connect()
    make_items(admin)
    reader = connect()
    cnt = Counters(admin)
    prime(reader, cnt, ITEMS_ALL)
    ddl = connect()
    for stmt in UNRELATED_DDL:
        ddl.execute(stmt)
        valid, hits = _entry_hits(admin, ITEMS_ALL)
        assert valid == 1, f"{stmt} invalidated an unrelated entry"
        cnt.reset()
        assert cached_json(reader, ITEMS_ALL) == direct(reader, ITEMS_ALL)
        assert cnt.delta()["hits"] == 1, f"not a hit after unrelated DDL: {stmt}"
        assert _entry_hits(admin, ITEMS_ALL)[1] == hits + 1

    for stmt in ["ALTER TABLE items ADD COLUMN extra int DEFAULT 5",
                 "GRANT SELECT ON items TO PUBLIC",
                 "REVOKE SELECT ON items FROM PUBLIC",
                 "CREATE INDEX ON items (val)",
                 "ALTER TABLE items ALTER COLUMN val TYPE bigint"]:
        prime(reader, cnt, ITEMS_ALL)
        ddl.execute(stmt)
        cnt.reset()
        assert cached_json(reader, ITEMS_ALL) == direct(reader, ITEMS_ALL)
        d = cnt.delta()
        if not stmt.startswith("CREATE INDEX"):  # an index changes no result
            assert d["hits"] == 0, f"served a cached result after {stmt}"


SHADOWING_CREATE = {
    "ctas": "CREATE TABLE s1.items AS SELECT 1 AS id, 2 AS grp, 'new' AS name, 3 AS val",
    "explain_analyze_ctas": "EXPLAIN ANALYZE CREATE TABLE s1.items AS "
                            "SELECT 1 AS id, 2 AS grp, 'new' AS name, 3 AS val",
    "view": "CREATE VIEW s1.items AS SELECT 1 AS id, 2 AS grp, 'new' AS name, 3 AS val",
}


@pytest.mark.parametrize("how", list(SHADOWING_CREATE))
def test_new_permanent_table_shadowing_a_cached_name_in_another_session(connect, how):
    """A session with search_path = s1, public caches `items` (public.items); another session
    creates s1.items: the next call reads s1.items, while a table with another name created at
    the same time changes nothing."""
    admin = connect()
    make_items(admin)
    admin.execute("CREATE SCHEMA s1")
    c = connect()
    c.execute("SET search_path = s1, public")
    cnt = Counters(admin)
    prime(c, cnt, ITEMS_ALL)
    connect().execute("CREATE TABLE s1.other (x int)")
    cnt.reset()
    cached_json(c, ITEMS_ALL)
    assert cnt.delta()["hits"] == 1
    connect().execute(SHADOWING_CREATE[how])
    got = cached_json(c, ITEMS_ALL)
    assert got == direct(c, ITEMS_ALL) == [{"id": 1, "grp": 2, "name": "new", "val": 3}]


def test_ddl_on_a_partitioned_parent_reaches_its_partitions(connect):
    """Invalidation of DDL on a partitioned table reaches queries that read a partition
    directly: ALTER TABLE parent ADD COLUMN changes `SELECT *` on the partition, DISABLE TRIGGER
    on the parent stops tracking the partitions, DROP of the parent drops the partition."""
    admin = connect()
    admin.execute("CREATE TABLE meas (id int NOT NULL, val int NOT NULL) PARTITION BY RANGE (id)")
    admin.execute("CREATE TABLE meas_1 PARTITION OF meas FOR VALUES FROM (1) TO (100)")
    admin.execute("INSERT INTO meas SELECT g, g FROM generate_series(1, 5) g")
    admin.execute("SELECT perf.cache_track('meas')")
    c = connect()
    cnt = Counters(admin)
    q = "SELECT * FROM meas_1 ORDER BY id"
    prime(c, cnt, q)
    admin.execute("ALTER TABLE meas ADD COLUMN extra int NOT NULL DEFAULT 9")
    got = cached_json(c, q)
    assert got == direct(c, q) and got[0]["extra"] == 9
    prime(c, cnt, q)
    admin.execute("ALTER TABLE meas DISABLE TRIGGER USER")
    admin.execute("UPDATE meas_1 SET val = -1 WHERE id = 1")
    got = cached_json(c, q)
    assert got == direct(c, q) and got[0]["val"] == -1
    admin.execute("SELECT perf.cache_track('meas')")
    prime(c, cnt, q)
    admin.execute("DROP TABLE meas")
    cnt.reset()
    with pytest.raises(psycopg.errors.UndefinedTable):
        cached_json(c, q)
    assert cnt.delta()["hits"] == 0


def test_temp_type_shadowing_a_permanent_one_in_another_session(connect):
    """A session's temporary type shadows a permanent type of the same name in casts: its
    query text must not get another session's cached result."""
    admin = connect()
    admin.execute("CREATE TYPE mood AS (sad int)")
    q = "SELECT (ROW(7)::mood).*"
    a = connect()
    b = connect()
    b.execute("CREATE TYPE pg_temp.mood AS (happy text)")
    b.execute("SET search_path = pg_temp, public")
    a.execute("SET search_path = pg_temp, public")
    # both sessions have a temporary schema; only b's holds something (the type)
    a.execute("CREATE TEMP TABLE t0 (x int)")
    a.execute("DROP TABLE t0")
    cnt = Counters(admin)
    assert prime(a, cnt, q) == [{"sad": 7}]
    assert cached_json(b, q) == direct(b, q) == [{"happy": "7"}]
