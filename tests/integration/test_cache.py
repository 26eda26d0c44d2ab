"""The result cache (perf.cached_json / perf.cached) as real clients see it, several sessions
at a time: hits, invalidation at commit from other sessions, own writes, aborts, privileges
and roles (REVOKE, SET ROLE, SET SESSION AUTHORIZATION, row-level security), schemas,
partitions, DDL, refusals, bad input, TTL, and a concurrent readers/writers checker.

Contract: docs/cache-design.md; scenario list: rule 10 of the cache correctness notes.

Conventions used throughout:
- `cached_json(c, q, params)` calls perf.cached_json; `direct(c, q, params)` runs the same
  query on the same connection as `SELECT coalesce(jsonb_agg(t), '[]') FROM (<q>) t` with the
  same parameters (sent untyped, so PostgreSQL infers their types exactly as it does for
  perf.cached_json), so both are compared exactly.
- Hits, misses and stores are deltas of perf.cache_stats(), refusals deltas of
  perf.cache_refusals(), read on a separate superuser connection. These counters are
  cluster-wide: the tests assume nothing else uses the cache of the test cluster while they
  run (pytest runs them one at a time).
- Roles are cluster-wide: every test creates roles with unique names and drops them in a
  finally block.
"""

import contextlib
import json
import random
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from conftest import dsn

# --------------------------------------------------------------------------------------------
# helpers


def cached_json(c, query, params=(), ttl=None, fn="cached_json"):
    """perf.cached_json(query, params[, ttl]) -> the decoded JSON array. With
    fn="cached_json_text": the same through perf.cached_json_text (which returns json)."""
    assert fn in ("cached_json", "cached_json_text")
    if ttl is None:
        row = c.execute(f"SELECT perf.{fn}(%s, %s)", (query, Jsonb(list(params)))).fetchone()
    else:
        row = c.execute(f"SELECT perf.{fn}(%s, %s, %s::interval)",
                        (query, Jsonb(list(params)), ttl)).fetchone()
    return row[0]


def cached_text(c, query, params=()):
    """perf.cached_json_text(query, params) -> (the raw text the client receives, its SQL type)."""
    with psycopg.RawCursor(c) as cur:
        cur.execute("SELECT perf.cached_json_text($1, $2)::text, "
                    "pg_typeof(perf.cached_json_text($1, $2))::text",
                    [query, json.dumps(list(params))])
        return cur.fetchone()


def _param_text(v):
    """A JSON parameter value as perf.cached_json hands it to the type's input function."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


def direct(c, query, params=()):
    """The same query executed directly, in the same JSON shape, with $n parameters."""
    with psycopg.RawCursor(c) as cur:
        cur.execute(f"SELECT coalesce(jsonb_agg(t), '[]'::jsonb) FROM (\n{query}\n) t",
                    [_param_text(p) for p in params] if params else None)
        return cur.fetchone()[0]


def cache_stats(c):
    cur = c.execute("SELECT * FROM perf.cache_stats()")
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def cache_refusals(c):
    return {reason: count for reason, count in c.execute("SELECT reason, count FROM perf.cache_refusals()")}


class Counters:
    """Deltas of perf.cache_stats() and perf.cache_refusals() since the last reset()."""

    def __init__(self, admin):
        self.admin = admin
        self.reset()

    def reset(self):
        self.stats0 = cache_stats(self.admin)
        self.refusals0 = cache_refusals(self.admin)

    def delta(self):
        now = cache_stats(self.admin)
        return {k: now[k] - self.stats0[k]
                for k in ("hits", "misses", "stores", "refusals", "invalidations", "expirations")}

    def refused(self, reason):
        return cache_refusals(self.admin).get(reason, 0) - self.refusals0.get(reason, 0)


def prime(c, cnt, query, params=()):
    """Caches `query`: calls it twice and asserts the second call was a hit. Returns the result."""
    first = cached_json(c, query, params)
    cnt.reset()
    again = cached_json(c, query, params)
    d = cnt.delta()
    assert d["hits"] == 1, f"second identical call was not a hit ({d}): {query} {params}"
    assert again == first
    return first


def make_items(c, name="items", rows=10, track=True):
    """id 1..rows, grp = id % 3, name 'item<id>', val = 10 * id."""
    table = sql.Identifier(*name.split("."))
    c.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, grp int NOT NULL, name text NOT NULL, "
                      "val int NOT NULL)").format(table))
    c.execute(sql.SQL("INSERT INTO {} SELECT g, g %% 3, 'item' || g, g * 10 "
                      "FROM generate_series(1, %s) g").format(table), (rows,))
    if track:
        c.execute("SELECT perf.cache_track(%s)", (name,))


def ident(name):
    return sql.Identifier(name)


@contextlib.contextmanager
def roles(admin, *prefixes, login=False):
    """Creates roles with unique names (allowed to use schema perf), drops them afterwards."""
    names = [f"{p}_{uuid.uuid4().hex[:8]}" for p in prefixes]
    try:
        for n in names:
            admin.execute(sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(ident(n)))
            # The contract does not say whether the extension grants USAGE on schema perf to
            # PUBLIC; grant it so that only the table privileges under test decide.
            admin.execute(sql.SQL("GRANT USAGE ON SCHEMA perf TO {}").format(ident(n)))
        yield names
    finally:
        for n in names:
            if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (n,)).fetchone():
                admin.execute(sql.SQL("DROP OWNED BY {}").format(ident(n)))
                admin.execute(sql.SQL("DROP ROLE {}").format(ident(n)))


def set_role(c, role):
    c.execute(sql.SQL("SET ROLE {}").format(ident(role)))


def reasons_text(err):
    d = err.diag
    return " ".join(x for x in (d.message_primary, d.message_detail, d.message_hint) if x)


ITEMS_ALL = "SELECT id, grp, name, val FROM items ORDER BY id"
ITEMS_GRP = "SELECT id, name, val FROM items WHERE grp = $1 ORDER BY id"
ITEMS_AGG = "SELECT count(*) AS n, sum(val) AS total FROM items WHERE grp = $1"


# --------------------------------------------------------------------------------------------
# 1. basics


def test_miss_then_hit_equal_to_direct_execution(connect):
    """The first call misses and stores, the identical second call is a hit (also from another
    session of the same user); results equal direct execution; different parameter values are
    different entries; an empty result is []."""
    admin = connect()
    make_items(admin)
    c = connect()
    cnt = Counters(admin)

    r1 = cached_json(c, ITEMS_GRP, [1])
    d = cnt.delta()
    assert (d["hits"], d["misses"], d["stores"]) == (0, 1, 1), d
    assert r1 == direct(c, ITEMS_GRP, [1])
    assert [r["id"] for r in r1] == [1, 4, 7, 10]
    assert r1[0] == {"id": 1, "name": "item1", "val": 10}

    cnt.reset()
    assert cached_json(c, ITEMS_GRP, [1]) == r1
    d = cnt.delta()
    assert (d["hits"], d["misses"], d["stores"]) == (1, 0, 0), d

    # another parameter value is another entry
    cnt.reset()
    r2 = cached_json(c, ITEMS_GRP, [2])
    d = cnt.delta()
    assert (d["hits"], d["misses"], d["stores"]) == (0, 1, 1), d
    assert r2 == direct(c, ITEMS_GRP, [2]) and r2 != r1
    cnt.reset()
    assert cached_json(c, ITEMS_GRP, [1]) == r1
    assert cached_json(c, ITEMS_GRP, [2]) == r2
    assert cnt.delta()["hits"] == 2

    # the same parameter with another JSON type is not confused with it either
    assert cached_json(c, ITEMS_GRP, ["2"]) == r2

    # aggregates and empty results
    agg = cached_json(c, ITEMS_AGG, [0])
    assert agg == direct(c, ITEMS_AGG, [0]) == [{"n": 3, "total": 180}]
    assert cached_json(c, ITEMS_GRP, [7]) == [] == direct(c, ITEMS_GRP, [7])
    cnt.reset()
    assert cached_json(c, ITEMS_GRP, [7]) == []
    assert cnt.delta()["hits"] == 1

    # another session of the same user with the same settings shares the entry
    other = connect()
    cnt.reset()
    assert cached_json(other, ITEMS_GRP, [1]) == r1
    assert cnt.delta()["hits"] == 1


def test_json_text_form_is_a_separate_entry_with_the_same_text(connect):
    """perf.cached_json_text returns json: the jsonb form's text exactly, stored once. It is
    its own entry (format json in perf.cache_entries()): a miss, then hits, also from
    another session; a committed write in another session invalidates it, the writer's own
    uncommitted rows bypass it, and refused queries still return the right rows."""
    admin = connect()
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    q = ITEMS_GRP

    jsonb_result = cached_json(c, q, [1])
    cnt.reset()
    text_result = cached_json(c, q, [1], fn="cached_json_text")
    d = cnt.delta()
    assert (d["hits"], d["misses"], d["stores"]) == (0, 1, 1), d  # not the jsonb entry
    assert text_result == jsonb_result == direct(c, q, [1])
    raw, typ = c.execute("SELECT perf.cached_json_text(%s, %s)::text, perf.cached_json(%s, %s)::text",
                         (q, Jsonb([1]), q, Jsonb([1]))).fetchone()
    assert raw == typ
    cnt.reset()
    raw_text, sql_type = cached_text(c, q, [1])
    assert sql_type == "json" and raw_text == raw
    assert cnt.delta()["hits"] == 2  # both calls in cached_text
    formats = sorted(f for (f,) in admin.execute(
        "SELECT format FROM perf.cache_entries() WHERE query = %s AND params = '[1]'", (q,)))
    assert formats == ["json", "jsonb"]

    other = connect()
    cnt.reset()
    assert cached_json(other, q, [1], fn="cached_json_text") == jsonb_result
    assert cnt.delta()["hits"] == 1

    # a committed write in another session: never stale
    other.execute("UPDATE items SET val = 999 WHERE id = 4")
    cnt.reset()
    fresh = cached_json(c, q, [1], fn="cached_json_text")
    assert cnt.delta()["hits"] == 0
    assert fresh == direct(c, q, [1]) and {"id": 4, "name": "item4", "val": 999} in fresh

    # own uncommitted writes bypass the cache, and are not shared
    with c.transaction():
        c.execute("DELETE FROM items WHERE id = 1")
        cnt.reset()
        mine = cached_json(c, q, [1], fn="cached_json_text")
        assert cnt.refused("own_writes") == 1 and cnt.delta()["hits"] == 0
        assert mine == direct(c, q, [1]) and [r["id"] for r in mine] == [4, 7, 10]
        assert cached_json(other, q, [1], fn="cached_json_text") == fresh
    assert cached_json(other, q, [1], fn="cached_json_text") == direct(other, q, [1])

    # refused (untracked table): executed, same text as the jsonb form
    admin.execute("CREATE TABLE loose (id int)")
    admin.execute("INSERT INTO loose VALUES (1), (2)")
    cnt.reset()
    assert cached_json(c, "SELECT id FROM loose ORDER BY id", fn="cached_json_text") == [{"id": 1}, {"id": 2}]
    assert cnt.refused("untracked_table") == 1


def test_typed_rows_equal_direct_select(connect):
    """perf.cached(NULL::items, ...) returns typed rows equal to a direct SELECT, in order,
    and the second call is served from the cache."""
    admin = connect()
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    q = "SELECT * FROM items WHERE id <= $1 ORDER BY id"
    typed = "SELECT * FROM perf.cached(NULL::items, %s, %s)"
    want = c.execute("SELECT * FROM items WHERE id <= 4 ORDER BY id").fetchall()
    assert c.execute(typed, (q, Jsonb([4]))).fetchall() == want
    assert want[0] == (1, 1, "item1", 10)
    cnt.reset()
    assert c.execute(typed, (q, Jsonb([4]))).fetchall() == want
    assert cnt.delta()["hits"] == 1
    assert c.execute(typed, (q, Jsonb([0]))).fetchall() == []


def test_parameter_values_convert_like_direct_execution(connect):
    """Strings, numbers, booleans and null parameters are converted to the inferred types:
    each result equals direct execution with the same values."""
    admin = connect()
    make_items(admin)
    admin.execute("CREATE TABLE ev (id int PRIMARY KEY, at date NOT NULL, amount numeric NOT NULL, "
                  "flag bool NOT NULL, tags text[] NOT NULL)")
    admin.execute("INSERT INTO ev SELECT g, date '2024-01-01' + g, g * 1.25, g % 2 = 0, "
                  "ARRAY['t' || g, 'x'] FROM generate_series(1, 8) g")
    admin.execute("SELECT perf.cache_track('ev')")
    c = connect()
    cases = [
        ("SELECT id, name FROM items WHERE name = $1", ["item3"]),
        ("SELECT id FROM items WHERE val > $1 AND val <= $2 ORDER BY id", [25, 60]),
        ("SELECT id FROM items WHERE (val > $1) = $2 ORDER BY id", [50, True]),
        ("SELECT id FROM items WHERE id = coalesce($1::int, 2)", [None]),
        ("SELECT id, at, amount FROM ev WHERE at >= $1 ORDER BY id", ["2024-01-05"]),
        ("SELECT id, amount FROM ev WHERE amount > $1 ORDER BY id", [3.5]),
        ("SELECT id FROM ev WHERE flag = $1 ORDER BY id", [False]),
        ("SELECT id, tags FROM ev WHERE $1 = ANY (tags) ORDER BY id", ["t4"]),
        ("SELECT $1::text AS s, $2::int AS i", ["a'b\"c", 7]),
        ("SELECT id FROM items ORDER BY id -- trailing comment", []),
    ]
    for q, params in cases:
        for _ in range(2):  # a miss, then (for cacheable ones) a hit
            got = cached_json(c, q, params)
            assert got == direct(c, q, params), (q, params)
            assert got != [], (q, params)


# --------------------------------------------------------------------------------------------
# 2. committed writes from another session


WRITES = {
    "insert": "INSERT INTO items VALUES (100, 1, 'new', 1000)",
    "update": "UPDATE items SET val = val + 1 WHERE grp = 1",
    "delete": "DELETE FROM items WHERE id = 4",
    "truncate": "TRUNCATE items",
    "upsert": "INSERT INTO items VALUES (4, 1, 'upserted', 4) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
    "merge": "MERGE INTO items t USING (VALUES (7, 'merged')) s(id, name) ON t.id = s.id "
             "WHEN MATCHED THEN UPDATE SET name = s.name",
    "cte": "WITH d AS (DELETE FROM items WHERE id = 10 RETURNING id) SELECT count(*) FROM d",
    "function": "SELECT bump_items()",
    "updatable_view": "UPDATE items_view SET val = 0 WHERE id = 1",
    "copy": None,  # COPY FROM STDIN, below
}


@pytest.mark.parametrize("op", list(WRITES))
def test_committed_write_in_other_session_is_never_stale(connect, op):
    """After another session commits an INSERT / UPDATE / DELETE / TRUNCATE (or an upsert, MERGE,
    data-modifying CTE, write inside a function, write through an updatable view, COPY), the
    next cached call returns the new data: it equals direct execution and differs from the
    cached result served just before."""
    admin = connect()
    make_items(admin)
    admin.execute("CREATE FUNCTION bump_items() RETURNS void LANGUAGE plpgsql AS "
                  "$$ BEGIN UPDATE items SET val = val * 2 WHERE id = 1; END $$")
    admin.execute("CREATE VIEW items_view AS SELECT * FROM items")
    reader = connect()
    cnt = Counters(admin)
    before_all = prime(reader, cnt, ITEMS_ALL)
    before_agg = prime(reader, cnt, ITEMS_AGG, [1])

    writer = connect()
    if op == "copy":
        with writer.cursor().copy("COPY items (id, grp, name, val) FROM STDIN") as cp:
            cp.write_row((101, 1, "copied", 5))
    else:
        writer.execute(WRITES[op])

    after_all = cached_json(reader, ITEMS_ALL)
    assert after_all == direct(reader, ITEMS_ALL)
    assert after_all != before_all, "the write did not change the data: test is vacuous"
    after_agg = cached_json(reader, ITEMS_AGG, [1])
    assert after_agg == direct(reader, ITEMS_AGG, [1])
    if op not in ("merge", "upsert"):  # renames only
        assert after_agg != before_agg
    # and the same from a third session that never cached anything
    third = connect()
    assert cached_json(third, ITEMS_ALL) == after_all


# --------------------------------------------------------------------------------------------
# 3. own writes in an open transaction


def test_own_uncommitted_writes_are_seen_and_not_shared(connect):
    """Inside a transaction that wrote the table, cached calls return its own uncommitted rows
    (bypass, refusal reason own_writes, no hit); other sessions meanwhile get the committed
    data, and a result they compute while the writer is open is not served after its commit;
    after COMMIT everybody sees the new data."""
    admin = connect()
    make_items(admin)
    a = connect()
    b = connect()
    cnt = Counters(admin)
    old = prime(a, cnt, ITEMS_ALL)
    assert cached_json(b, ITEMS_ALL) == old

    with a.transaction():
        a.execute("INSERT INTO items VALUES (100, 1, 'mine', 1)")
        a.execute("UPDATE items SET val = -1 WHERE id = 1")
        for _ in range(2):
            cnt.reset()
            mine = cached_json(a, ITEMS_ALL)
            assert cnt.refused("own_writes") == 1
            assert cnt.delta()["hits"] == 0
            assert mine == direct(a, ITEMS_ALL)
            assert mine[-1]["id"] == 100 and mine[0]["val"] == -1
        # a query shape never cached before also sees the own rows
        assert cached_json(a, ITEMS_AGG, [1]) == direct(a, ITEMS_AGG, [1])
        assert cached_json(a, ITEMS_AGG, [1])[0]["n"] == 5

        # other sessions: the committed data, from the cache or computed
        assert cached_json(b, ITEMS_ALL) == old == direct(b, ITEMS_ALL)
        for _ in range(2):  # computed while a writer is in progress: correct, maybe stored
            assert cached_json(b, ITEMS_AGG, [1]) == direct(b, ITEMS_AGG, [1]) == [{"n": 4, "total": 220}]

        # TRUNCATE in the same transaction is an own write too
        a.execute("TRUNCATE items")
        assert cached_json(a, ITEMS_ALL) == [] == direct(a, ITEMS_ALL)
        a.execute("INSERT INTO items VALUES (200, 1, 'after-truncate', 2)")
        assert cached_json(a, ITEMS_ALL) == direct(a, ITEMS_ALL)

    new = direct(b, ITEMS_ALL)
    assert new == [{"id": 200, "grp": 1, "name": "after-truncate", "val": 2}]
    assert cached_json(b, ITEMS_ALL) == new
    assert cached_json(b, ITEMS_AGG, [1]) == direct(b, ITEMS_AGG, [1]) == [{"n": 1, "total": 2}]
    assert cached_json(a, ITEMS_ALL) == new
    # the transaction is over: a uses the cache again
    cnt.reset()
    assert cached_json(a, ITEMS_ALL) == new
    assert cnt.delta()["hits"] == 1


# --------------------------------------------------------------------------------------------
# 4. aborted writes


def test_rollback_leaves_cached_entry_valid(connect):
    """A transaction that wrote the table (INSERT, UPDATE, DELETE, TRUNCATE) and rolled back,
    or failed, invalidates nothing: the next call is a hit equal to direct execution; the
    writer's own session uses the cache again after its ROLLBACK."""
    admin = connect()
    make_items(admin)
    reader = connect()
    writer = connect()
    cnt = Counters(admin)
    before = prime(reader, cnt, ITEMS_ALL)

    writer.execute("BEGIN")
    writer.execute("INSERT INTO items VALUES (100, 1, 'x', 1)")
    writer.execute("UPDATE items SET val = 0")
    writer.execute("DELETE FROM items WHERE id = 2")
    writer.execute("TRUNCATE items")
    assert cached_json(writer, ITEMS_ALL) == []  # own writes
    writer.execute("ROLLBACK")

    cnt.reset()
    assert cached_json(reader, ITEMS_ALL) == before == direct(reader, ITEMS_ALL)
    assert cnt.delta()["hits"] == 1
    cnt.reset()
    assert cached_json(writer, ITEMS_ALL) == before
    assert cnt.delta()["hits"] == 1

    # a transaction aborted by an error
    with pytest.raises(psycopg.errors.UniqueViolation):
        with writer.transaction():
            writer.execute("UPDATE items SET name = 'doomed' WHERE id = 1")
            writer.execute("INSERT INTO items VALUES (2, 2, 'dup', 2)")
    cnt.reset()
    assert cached_json(reader, ITEMS_ALL) == before == direct(reader, ITEMS_ALL)
    assert cnt.delta()["hits"] == 1

    # a rolled-back savepoint inside a committed transaction: the commit invalidates, and
    # the result has the kept change only
    with writer.transaction():
        writer.execute("UPDATE items SET name = 'kept' WHERE id = 3")
        with writer.transaction():  # SAVEPOINT ... ROLLBACK TO SAVEPOINT
            writer.execute("UPDATE items SET name = 'undone' WHERE id = 5")
            raise psycopg.Rollback()
    after = cached_json(reader, ITEMS_ALL)
    assert after == direct(reader, ITEMS_ALL)
    assert after[2]["name"] == "kept" and after[4]["name"] == "item5"


# --------------------------------------------------------------------------------------------
# 5.-8. privileges and roles


def test_revoke_after_caching_is_not_served(connect):
    """A role that could read the table caches a result; after REVOKE SELECT its next cached
    call fails with insufficient_privilege instead of being served from the cache."""
    admin = connect()
    make_items(admin)
    with roles(admin, "r1", login=True) as (r1,):
        admin.execute(sql.SQL("GRANT SELECT ON items TO {}").format(ident(r1)))
        u = connect(user=r1)
        assert u.execute("SELECT current_user").fetchone()[0] == r1
        cnt = Counters(admin)
        first = prime(u, cnt, ITEMS_ALL)
        assert first == direct(u, ITEMS_ALL)
        prime(u, cnt, ITEMS_GRP, [1])

        admin.execute(sql.SQL("REVOKE SELECT ON items FROM {}").format(ident(r1)))
        cnt.reset()
        for q, p in ((ITEMS_ALL, []), (ITEMS_GRP, [1])):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                cached_json(u, q, p)
            assert "items" in str(e.value)
        assert cnt.delta()["hits"] == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            u.execute("SELECT * FROM perf.cached(NULL::items, %s)", (ITEMS_ALL,)).fetchall()

        # granted again: served correctly again
        admin.execute(sql.SQL("GRANT SELECT (id, grp, name) ON items TO {}").format(ident(r1)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            cached_json(u, ITEMS_ALL)  # val is not granted
        q = "SELECT id, name FROM items ORDER BY id"
        assert cached_json(u, q) == direct(u, q)
        u.close()


def test_revoked_role_membership_is_not_served(connect):
    """A role reading through membership in a group role caches a result; after REVOKE of the
    membership its next cached call fails with insufficient_privilege."""
    admin = connect()
    make_items(admin)
    with roles(admin, "grp", "member", login=True) as (grp, member):
        admin.execute(sql.SQL("GRANT SELECT ON items TO {}").format(ident(grp)))
        admin.execute(sql.SQL("GRANT {} TO {}").format(ident(grp), ident(member)))
        u = connect(user=member)
        cnt = Counters(admin)
        assert prime(u, cnt, ITEMS_ALL) == direct(u, ITEMS_ALL)
        admin.execute(sql.SQL("REVOKE {} FROM {}").format(ident(grp), ident(member)))
        cnt.reset()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            cached_json(u, ITEMS_ALL)
        assert cnt.delta()["hits"] == 0
        u.close()


def _switch_identity_scenario(connect, switch, reset):
    """Shared body of the SET ROLE / SET SESSION AUTHORIZATION tests."""
    admin = connect()
    make_items(admin)
    admin.execute("CREATE VIEW items_low AS SELECT id, name FROM items WHERE id <= 3")
    q_view = "SELECT id, name FROM items_low ORDER BY id"
    with roles(admin, "r_none", "r_view", "r_reader") as (r_none, r_view, r_reader):
        admin.execute(sql.SQL("GRANT SELECT ON items_low TO {}").format(ident(r_view)))
        admin.execute(sql.SQL("GRANT SELECT ON items TO {}").format(ident(r_reader)))
        s = connect()  # a superuser session that switches identity
        cnt = Counters(admin)
        su_all = prime(s, cnt, ITEMS_ALL)
        su_view = prime(s, cnt, q_view)

        # no privilege at all: an error, never the superuser's cached rows
        switch(s, r_none)
        cnt.reset()
        for q in (ITEMS_ALL, q_view):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                cached_json(s, q)
        assert cnt.delta()["hits"] == 0
        reset(s)

        # SELECT on the view only: the view works (its own result), the table does not
        switch(s, r_view)
        cnt.reset()
        got = cached_json(s, q_view)
        assert cnt.delta()["hits"] == 0, "served the superuser's entry to another role"
        assert got == direct(s, q_view) == su_view
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            cached_json(s, ITEMS_ALL)
        cnt.reset()
        assert cached_json(s, q_view) == got  # its own entry now
        assert cnt.delta()["hits"] == 1
        reset(s)

        # a reader computes its own entry, it does not reuse the superuser's
        switch(s, r_reader)
        cnt.reset()
        got = cached_json(s, ITEMS_ALL)
        d = cnt.delta()
        assert d["hits"] == 0 and d["misses"] == 1, d
        assert got == direct(s, ITEMS_ALL) == su_all
        reset(s)

        # the superuser's entry is still there: the misses above were not a flush
        cnt.reset()
        assert cached_json(s, ITEMS_ALL) == su_all
        assert cnt.delta()["hits"] == 1
        s.close()


def test_set_role_does_not_share_entries(connect):
    """After SET ROLE, the superuser's cached entries are not served: a role without privilege
    gets insufficient_privilege, a role with SELECT on a view only can read the view but not
    the table, and a role with SELECT computes its own entry (a miss) with correct rows."""
    _switch_identity_scenario(connect, set_role, lambda c: c.execute("RESET ROLE"))


def test_set_session_authorization_does_not_share_entries(connect):
    """Same as the SET ROLE test with SET SESSION AUTHORIZATION: entries are keyed by the
    current user, and privileges are checked for the new identity."""
    _switch_identity_scenario(
        connect,
        lambda c, r: c.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(ident(r))),
        lambda c: c.execute("RESET SESSION AUTHORIZATION"),
    )


def test_security_definer_function_uses_its_owner(connect):
    """Inside a SECURITY DEFINER function the key and the privileges are the function owner's
    (current_user, not session user): a function owned by a role without privilege fails even
    when its caller (a superuser) has the same query cached; one owned by a reader returns the
    reader's entry to any caller."""
    admin = connect()
    make_items(admin)
    with roles(admin, "r_none", "r_reader") as (r_none, r_reader):
        admin.execute(sql.SQL("GRANT SELECT ON items TO {}").format(ident(r_reader)))
        for fn, owner in (("as_none", r_none), ("as_reader", r_reader)):
            admin.execute(sql.SQL("CREATE FUNCTION {}(q text) RETURNS jsonb LANGUAGE sql SECURITY DEFINER "
                                  "AS $$ SELECT perf.cached_json(q) $$").format(ident(fn)))
            admin.execute(sql.SQL("ALTER FUNCTION {}(text) OWNER TO {}").format(ident(fn), ident(owner)))
        s = connect()
        cnt = Counters(admin)
        su = prime(s, cnt, ITEMS_ALL)
        cnt.reset()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute("SELECT as_none(%s)", (ITEMS_ALL,)).fetchone()
        assert cnt.delta()["hits"] == 0
        cnt.reset()
        assert s.execute("SELECT as_reader(%s)", (ITEMS_ALL,)).fetchone()[0] == su
        d = cnt.delta()
        assert d["hits"] == 0 and d["misses"] == 1, d  # not the superuser's entry
        # the reader's entry serves any caller of the reader's function, also a role without privilege
        set_role(s, r_none)
        cnt.reset()
        assert s.execute("SELECT as_reader(%s)", (ITEMS_ALL,)).fetchone()[0] == su
        assert cnt.delta()["hits"] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            cached_json(s, ITEMS_ALL)
        s.execute("RESET ROLE")
        s.close()


def test_row_level_security_is_never_cached(connect):
    """On a table with row-level security every call is refused (row_security), executed with
    the caller's policies: each role gets exactly its own rows, never another role's, even when
    the other role called the identical query just before; the superuser (bypassing RLS) gets
    all rows. Policies use constants only, so row_security is the only possible refusal."""
    admin = connect()
    with roles(admin, "ra", "rb") as (ra, rb):
        admin.execute("CREATE TABLE docs (id int PRIMARY KEY, owner text NOT NULL, body text NOT NULL)")
        admin.execute("INSERT INTO docs VALUES (1, %s, 'a1'), (2, %s, 'a2'), (3, %s, 'a3'), "
                      "(4, %s, 'b4'), (5, %s, 'b5')", (ra, ra, ra, rb, rb))
        admin.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
        for r in (ra, rb):
            admin.execute(sql.SQL("CREATE POLICY {} ON docs FOR SELECT TO {} USING (owner = {})").format(
                ident("p_" + r), ident(r), sql.Literal(r)))
            admin.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(ident(r)))
        admin.execute("SELECT perf.cache_track('docs')")
        q = "SELECT id, owner, body FROM docs ORDER BY id"
        q_param = "SELECT id, body FROM docs WHERE id >= $1 ORDER BY id"
        s = connect()
        cnt = Counters(admin)
        calls = 0
        for _ in range(2):
            for role, ids in ((ra, [1, 2, 3]), (rb, [4, 5]), (None, [1, 2, 3, 4, 5])):
                if role:
                    set_role(s, role)
                got = cached_json(s, q)
                got_p = cached_json(s, q_param, [2])
                calls += 2
                assert [r["id"] for r in got] == ids
                assert got == direct(s, q)
                assert got_p == direct(s, q_param, [2])
                assert [r["id"] for r in got_p] == [i for i in ids if i >= 2]
                if role:
                    assert {r["owner"] for r in got} == {role}
                s.execute("RESET ROLE")
        assert cnt.refused("row_security") == calls
        d = cnt.delta()
        assert d["hits"] == 0 and d["stores"] == 0, d

        # strict mode names the reason
        set_role(s, ra)
        s.execute("SET perf.cache_strict = on")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            cached_json(s, q)
        assert "row_security" in reasons_text(e.value)
        s.execute("RESET perf.cache_strict")
        s.execute("RESET ROLE")
        s.close()


# --------------------------------------------------------------------------------------------
# 9. schemas and search_path


def test_same_table_name_in_two_schemas(connect):
    """s1.items and s2.items, both tracked, different contents: the identical query text under
    search_path s1 and s2 gives each schema's own data, from the cache after the first call;
    a write to one schema is seen there and the other schema stays correct."""
    admin = connect()
    admin.execute("CREATE SCHEMA s1")
    admin.execute("CREATE SCHEMA s2")
    for s, n in (("s1", 3), ("s2", 5)):
        admin.execute(sql.SQL("CREATE TABLE {}.items (id int PRIMARY KEY, label text NOT NULL)").format(ident(s)))
        admin.execute(sql.SQL("INSERT INTO {}.items SELECT g, %s::text || '-' || g FROM generate_series(1, %s) g")
                      .format(ident(s)), (s, n))
        admin.execute("SELECT perf.cache_track(%s)", (f"{s}.items",))
    q = "SELECT id, label FROM items ORDER BY id"
    c = connect()
    cnt = Counters(admin)
    c.execute("SET search_path = s1")
    r1 = cached_json(c, q)
    assert r1 == direct(c, q) and {x["label"][:2] for x in r1} == {"s1"} and len(r1) == 3
    c.execute("SET search_path = s2")
    cnt.reset()
    r2 = cached_json(c, q)
    assert cnt.delta()["hits"] == 0
    assert r2 == direct(c, q) and {x["label"][:2] for x in r2} == {"s2"} and len(r2) == 5
    for path, want in (("s1", r1), ("s2", r2), ("s1", r1), ("s2", r2)):
        c.execute(sql.SQL("SET search_path = {}").format(ident(path)))
        cnt.reset()
        assert cached_json(c, q) == want
        assert cnt.delta()["hits"] == 1
    # a session starting with s2 gets s2's data
    o = connect()
    o.execute("SET search_path = s2")
    assert cached_json(o, q) == r2
    # writes to s1 only
    w = connect()
    w.execute("INSERT INTO s1.items VALUES (99, 's1-new')")
    c.execute("SET search_path = s1")
    new1 = cached_json(c, q)
    assert new1 == direct(c, q) and new1[-1] == {"id": 99, "label": "s1-new"}
    c.execute("SET search_path = s2")
    assert cached_json(c, q) == r2 == direct(c, q)
    # a search_path listing both resolves to the first
    c.execute("SET search_path = s2, s1")
    assert cached_json(c, q) == r2


def test_new_table_shadowing_a_cached_name(connect):
    """With search_path = s1, s2 and only s2.items existing, a cached query on `items` reads
    s2.items; once s1.items is created (and filled, tracked) the same query text must return
    s1.items' rows, not the cached s2 rows."""
    admin = connect()
    admin.execute("CREATE SCHEMA s1")
    admin.execute("CREATE SCHEMA s2")
    admin.execute("CREATE TABLE s2.items (id int PRIMARY KEY, label text)")
    admin.execute("INSERT INTO s2.items VALUES (1, 's2')")
    admin.execute("SELECT perf.cache_track('s2.items')")
    q = "SELECT id, label FROM items ORDER BY id"
    c = connect()
    c.execute("SET search_path = s1, s2")
    cnt = Counters(admin)
    assert prime(c, cnt, q) == [{"id": 1, "label": "s2"}]
    admin.execute("CREATE TABLE s1.items (id int PRIMARY KEY, label text)")
    admin.execute("INSERT INTO s1.items VALUES (1, 's1'), (2, 's1')")
    got = cached_json(c, q)
    assert got == direct(c, q) == [{"id": 1, "label": "s1"}, {"id": 2, "label": "s1"}]
    admin.execute("SELECT perf.cache_track('s1.items')")
    assert cached_json(c, q) == direct(c, q)
    assert cached_json(c, q) == direct(c, q)


# --------------------------------------------------------------------------------------------
# 10. TRUNCATE, DROP and re-CREATE, other DDL


def test_truncate_invalidates(connect):
    """TRUNCATE committed by another session: cached row listings become [] and aggregates
    zero, exactly as direct execution."""
    admin = connect()
    make_items(admin)
    reader = connect()
    cnt = Counters(admin)
    assert len(prime(reader, cnt, ITEMS_ALL)) == 10
    assert prime(reader, cnt, ITEMS_AGG, [2]) == [{"n": 3, "total": 150}]
    connect().execute("TRUNCATE items")
    assert cached_json(reader, ITEMS_ALL) == [] == direct(reader, ITEMS_ALL)
    assert cached_json(reader, ITEMS_AGG, [2]) == [{"n": 0, "total": None}] == direct(reader, ITEMS_AGG, [2])


def test_drop_and_recreate_table_with_same_name(connect):
    """After DROP TABLE the cached query fails (undefined_table) instead of being served; after
    CREATE TABLE with the same name (untracked) it executes directly (untracked_table) and
    returns the new table's rows; once tracked, it is cached again with the new rows."""
    admin = connect()
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    q = "SELECT id, name FROM items ORDER BY id"
    old = prime(c, cnt, q)
    w = connect()
    w.execute("DROP TABLE items")
    cnt.reset()
    with pytest.raises(psycopg.errors.UndefinedTable):
        cached_json(c, q)
    assert cnt.delta()["hits"] == 0

    w.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
    w.execute("INSERT INTO items VALUES (1, 'recreated-1'), (2, 'recreated-2')")
    cnt.reset()
    got = cached_json(c, q)
    assert got == direct(c, q) == [{"id": 1, "name": "recreated-1"}, {"id": 2, "name": "recreated-2"}]
    assert got != old
    assert cnt.refused("untracked_table") == 1
    assert cnt.delta()["hits"] == 0

    w.execute("SELECT perf.cache_track('items')")
    assert prime(c, cnt, q) == got
    w.execute("UPDATE items SET name = 'renamed' WHERE id = 2")
    assert cached_json(c, q) == direct(c, q)
    assert cached_json(c, q)[1]["name"] == "renamed"


def test_ddl_on_source_invalidates(connect):
    """ALTER TABLE ADD COLUMN, RENAME swapping two tables, CREATE OR REPLACE VIEW and a replaced
    function change what the identical query text returns: each next call equals direct
    execution."""
    admin = connect()
    make_items(admin)
    make_items(admin, "items2", rows=4)
    admin.execute("UPDATE items2 SET name = 'other-' || id")
    admin.execute("CREATE VIEW cheap AS SELECT id, val FROM items WHERE val < 50")
    admin.execute("CREATE FUNCTION price(v int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT v * 2'")
    c = connect()
    cnt = Counters(admin)
    q_star = "SELECT * FROM items ORDER BY id"
    q_view = "SELECT id, val FROM cheap ORDER BY id"
    q_func = "SELECT id, price(val) AS p FROM items ORDER BY id"
    steps = [
        "ALTER TABLE items ADD COLUMN extra int NOT NULL DEFAULT 7",
        "CREATE OR REPLACE VIEW cheap AS SELECT id, val FROM items WHERE val < 80",
        "CREATE OR REPLACE FUNCTION price(v int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT v * 3'",
        "ALTER TABLE items RENAME TO items_tmp; ALTER TABLE items2 RENAME TO items; "
        "ALTER TABLE items_tmp RENAME TO items2",
        "ALTER TABLE items DROP COLUMN grp",
    ]
    w = connect()
    for step in steps:
        before = {q: prime(c, cnt, q) for q in (q_star, q_view, q_func)}
        with w.transaction():
            for stmt in step.split("; "):
                w.execute(stmt)
        changed = False
        for q in (q_star, q_view, q_func):
            got = cached_json(c, q)
            assert got == direct(c, q), (step, q)
            changed |= got != before[q]
        assert changed, f"step did not change any result (vacuous): {step}"


def test_change_registry_full_of_ddl_churn_is_swept_and_the_cache_stays_correct(connect):
    """Every relation changed since the server started holds a slot in the shared change
    registry (16,384 slots). DDL churn (here ~13,000 tables created and dropped, as years of
    partition maintenance make) fills it; at three quarters a sweep frees the slots nobody is
    committing, and every stored result is invalidated once. A write noted before the sweep
    and committed after it is never served stale, and the cache stores and hits again after
    the sweep (before this, a full registry refused to cache any relation not yet in it)."""
    admin = connect()
    make_items(admin)
    reader = connect()
    cnt = Counters(admin)
    prime(reader, cnt, ITEMS_ALL)
    assert admin.execute("SELECT perf.track_slot('items'::regclass)").fetchone()[0] is not None

    writer = connect()
    writer.execute("BEGIN")
    writer.execute("UPDATE items SET val = val + 1 WHERE id = 1")

    churn = connect()
    churn.execute("CREATE TABLE churn_probe (a int)")
    swept = False
    for _ in range(20):
        churn.execute("DO $$ BEGIN FOR i IN 1..1000 LOOP "
                      "EXECUTE format('CREATE TABLE churn_%s (a int)', i); "
                      "EXECUTE format('DROP TABLE churn_%s', i); END LOOP; END $$")
        # items' slot is freed by the sweep (its writer is not committing yet).
        if admin.execute("SELECT perf.track_slot('items'::regclass)").fetchone()[0] is None:
            swept = True
            break
    assert swept, "20,000 dropped tables never made the registry sweep"

    # Every stored result was invalidated: the next call misses, then stores and hits again.
    cnt.reset()
    after_sweep = cached_json(reader, ITEMS_ALL)
    assert cnt.delta()["hits"] == 0
    assert after_sweep == direct(reader, ITEMS_ALL)
    prime(reader, cnt, ITEMS_ALL)

    # The write noted before the sweep commits now: never served stale.
    writer.execute("COMMIT")
    fresh = cached_json(reader, ITEMS_ALL)
    assert fresh == direct(reader, ITEMS_ALL)
    assert fresh != after_sweep, "the write did not change the data: test is vacuous"

    # And writes after the sweep invalidate as before.
    prime(reader, cnt, ITEMS_ALL)
    admin.execute("UPDATE items SET val = val + 1 WHERE id = 2")
    assert cached_json(reader, ITEMS_ALL) == direct(reader, ITEMS_ALL)
    churn.execute("DROP TABLE churn_probe")


def test_disabled_trigger_and_replica_role_writes_are_seen(connect):
    """Writes with session_replication_role = replica (logical replication apply) still
    invalidate; after the invalidation trigger is disabled, writes that fire no trigger are
    still never served stale (the table is no longer cached)."""
    admin = connect()
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    before = prime(c, cnt, ITEMS_ALL)
    w = connect()
    w.execute("SET session_replication_role = replica")
    w.execute("UPDATE items SET val = 5 WHERE id = 1")
    got = cached_json(c, ITEMS_ALL)
    assert got == direct(c, ITEMS_ALL) and got != before
    w.execute("RESET session_replication_role")

    prime(c, cnt, ITEMS_ALL)
    admin.execute("ALTER TABLE items DISABLE TRIGGER USER")
    for i in range(3):
        got = cached_json(c, ITEMS_ALL)
        assert got == direct(c, ITEMS_ALL)
        cached_json(c, ITEMS_ALL)
        w.execute("UPDATE items SET val = %s WHERE id = 2", (1000 + i,))
        got = cached_json(c, ITEMS_ALL)
        assert got == direct(c, ITEMS_ALL)
        assert got[1]["val"] == 1000 + i


# --------------------------------------------------------------------------------------------
# 11. partitioned source


def _make_partitioned(admin):
    admin.execute("CREATE TABLE meas (id int NOT NULL, val int NOT NULL) PARTITION BY RANGE (id)")
    admin.execute("CREATE TABLE meas_1 PARTITION OF meas FOR VALUES FROM (1) TO (100)")
    admin.execute("CREATE TABLE meas_2 PARTITION OF meas FOR VALUES FROM (100) TO (200)")
    admin.execute("INSERT INTO meas SELECT g, g FROM generate_series(2, 198, 2) g")
    admin.execute("SELECT perf.cache_track('meas')")


MEAS_QUERIES = [
    ("SELECT count(*) AS n, sum(val) AS total FROM meas", []),
    ("SELECT id, val FROM meas WHERE id < $1 ORDER BY id", [10]),        # pruned to meas_1
    ("SELECT count(*) AS n, sum(val) AS total FROM meas WHERE id >= 100", []),  # meas_2 only
    ("SELECT id, val FROM meas ORDER BY val DESC, id LIMIT 3", []),
]


def test_partitioned_source_writes_via_parent_and_partition_invalidate(connect):
    """cache_track(parent) of a range-partitioned table with two partitions: writes through the
    parent and directly into a partition (INSERT, UPDATE, DELETE, TRUNCATE) are seen by cached
    queries on the parent, including queries pruned to a single partition."""
    admin = connect()
    _make_partitioned(admin)
    c = connect()
    w = connect()
    cnt = Counters(admin)
    writes = [
        "INSERT INTO meas VALUES (3, 1000)",                 # parent -> meas_1
        "INSERT INTO meas VALUES (151, 5000)",               # parent -> meas_2
        "UPDATE meas SET val = val + 1 WHERE id >= 150",     # parent, rows in meas_2
        "UPDATE meas SET val = -val WHERE id = 4",           # parent, rows in meas_1
        "INSERT INTO meas_1 VALUES (1, 7000)",               # partition directly
        "UPDATE meas_2 SET val = 9000 WHERE id = 100",       # partition directly
        "DELETE FROM meas_1 WHERE id = 2",                   # partition directly
        "DELETE FROM meas WHERE id = 198",                   # parent
        "UPDATE meas SET id = id + 100 WHERE id = 6",        # row moves meas_1 -> meas_2
        "TRUNCATE meas_2",                                   # partition directly
        "TRUNCATE meas",                                     # parent
    ]
    for stmt in writes:
        before = [prime(c, cnt, q, p) for q, p in MEAS_QUERIES]
        w.execute(stmt)
        after = [cached_json(c, q, p) for q, p in MEAS_QUERIES]
        for (q, p), got in zip(MEAS_QUERIES, after):
            assert got == direct(c, q, p), (stmt, q)
        assert after != before, f"write changed nothing (vacuous): {stmt}"
        # the typed variant over the parent too
        typed = c.execute("SELECT * FROM perf.cached(NULL::meas, 'SELECT * FROM meas ORDER BY id, val')").fetchall()
        assert typed == c.execute("SELECT * FROM meas ORDER BY id, val").fetchall()


def test_partition_added_after_tracking_is_never_stale(connect):
    """A partition created after cache_track(parent) has no trigger of its own: writes made
    directly into it must still never be served stale by queries on the parent."""
    admin = connect()
    _make_partitioned(admin)
    c = connect()
    w = connect()
    admin.execute("CREATE TABLE meas_3 PARTITION OF meas FOR VALUES FROM (200) TO (300)")
    q = "SELECT count(*) AS n, sum(val) AS total FROM meas"
    for i, stmt in enumerate([
        "INSERT INTO meas VALUES (250, 1)",          # via parent
        "INSERT INTO meas_3 VALUES (251, 2)",        # directly into the new partition
        "UPDATE meas_3 SET val = val + 10",
        "DELETE FROM meas_3 WHERE id = 250",
    ]):
        cached_json(c, q)
        cached_json(c, q)
        w.execute(stmt)
        assert cached_json(c, q) == direct(c, q), stmt


# --------------------------------------------------------------------------------------------
# 12. refusals


REFUSALS = [
    ("mutable_function", "SELECT id FROM items WHERE now() > '2000-01-01'::timestamptz ORDER BY id", []),
    ("mutable_function", "SELECT id FROM items WHERE random() < 2 ORDER BY id", []),
    ("mutable_function", "SELECT id, val FROM items WHERE val < $1 + 0 * extract(epoch FROM clock_timestamp()) "
                         "ORDER BY id", [45]),
    ("row_locks", "SELECT id, name FROM items WHERE id = $1 FOR UPDATE", [1]),
    ("row_locks", "SELECT id FROM items WHERE grp = $1 ORDER BY id FOR SHARE", [2]),
    ("unsupported_relation", "SELECT x FROM scratch ORDER BY x", []),          # temporary table
    ("unsupported_relation", "SELECT x FROM loose_unlogged ORDER BY x", []),   # unlogged table
    ("unsupported_relation", "SELECT id, name FROM items_mv ORDER BY id", []),  # materialized view
    ("unsupported_relation", "SELECT count(*) AS n FROM pg_catalog.pg_am", []),  # system catalog
    ("untracked_table", "SELECT x FROM loose ORDER BY x", []),
    ("untracked_table", "SELECT i.id, l.x FROM items i JOIN loose l ON l.x = i.id ORDER BY 1", []),
    ("row_security", "SELECT id, name FROM items_sb ORDER BY id", []),          # security_barrier view
    ("too_large", "SELECT id, repeat('x', 600) AS pad FROM items ORDER BY id", []),
]


@pytest.mark.parametrize("reason,query,params", REFUSALS,
                         ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(REFUSALS)])
def test_refused_queries_are_correct_counted_and_strict(connect, reason, query, params):
    """A query the cache must refuse is executed directly: its result equals direct execution,
    perf.cache_refusals() counts the reason once per call, nothing is stored or served; with
    perf.cache_strict = on the same call is an ERROR with SQLSTATE 0A000 naming the reason."""
    admin = connect()
    make_items(admin)
    admin.execute("CREATE TABLE loose (x int)")
    admin.execute("INSERT INTO loose VALUES (1), (2), (3)")
    admin.execute("CREATE UNLOGGED TABLE loose_unlogged (x int)")
    admin.execute("INSERT INTO loose_unlogged VALUES (4), (5)")
    admin.execute("CREATE MATERIALIZED VIEW items_mv AS SELECT id, name FROM items WHERE id < 4")
    admin.execute("CREATE VIEW items_sb WITH (security_barrier) AS SELECT id, name FROM items WHERE grp = 1")
    c = connect()
    c.execute("CREATE TEMP TABLE scratch (x int)")
    c.execute("INSERT INTO scratch VALUES (7), (8)")
    if reason == "too_large":
        c.execute("SET perf.cache_max_entry_kb = 1")  # the result is ~6 kB
    cnt = Counters(admin)
    for _ in range(3):
        got = cached_json(c, query, params)
        assert got == direct(c, query, params)
        assert got != []
    assert cnt.refused(reason) == 3
    d = cnt.delta()
    assert d["hits"] == 0 and d["stores"] == 0, d
    assert d["refusals"] >= 3

    c.execute("SET perf.cache_strict = on")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        cached_json(c, query, params)
    assert e.value.sqlstate == "0A000"
    assert reason in reasons_text(e.value)
    c.execute("RESET perf.cache_strict")
    assert c.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_snapshot_isolation_bypasses_cache(connect, level):
    """In a REPEATABLE READ / SERIALIZABLE transaction cached calls are refused (isolation)
    and return the transaction's snapshot, even though the cache holds a newer result
    committed meanwhile by another session; strict mode makes the call an ERROR (0A000)."""
    admin = connect()
    make_items(admin)
    c = connect()
    o = connect()
    w = connect()
    cnt = Counters(admin)
    prime(c, cnt, ITEMS_ALL)
    c.execute(f"BEGIN ISOLATION LEVEL {level}")
    snap = direct(c, ITEMS_ALL)  # takes the transaction snapshot
    w.execute("UPDATE items SET val = val + 1000")
    newer = prime(o, cnt, ITEMS_ALL)  # the cache now holds the committed, newer result
    assert newer != snap and newer == direct(o, ITEMS_ALL)
    cnt.reset()
    for _ in range(2):
        assert cached_json(c, ITEMS_ALL) == snap
        assert cached_json(c, ITEMS_AGG, [1]) == direct(c, ITEMS_AGG, [1])
    assert cnt.refused("isolation") == 4
    assert cnt.delta()["hits"] == 0
    c.execute("SET LOCAL perf.cache_strict = on")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        cached_json(c, ITEMS_ALL)
    assert "isolation" in reasons_text(e.value)
    c.execute("ROLLBACK")
    # back in READ COMMITTED: the cache serves the newer committed result
    cnt.reset()
    assert cached_json(c, ITEMS_ALL) == newer
    assert cnt.delta()["hits"] == 1


def test_cache_disabled_and_data_modifying_cte(connect):
    """perf.cache_enabled = off executes directly (refusal reason disabled, no hit, correct
    result even though an entry exists). A data-modifying CTE is never cached or served from
    the cache (whether it errors or not), and modifies nothing twice."""
    admin = connect()
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    prime(c, cnt, ITEMS_ALL)
    c.execute("SET perf.cache_enabled = off")
    cnt.reset()
    for _ in range(2):
        assert cached_json(c, ITEMS_ALL) == direct(c, ITEMS_ALL)
    assert cnt.refused("disabled") == 2
    assert cnt.delta()["hits"] == 0
    c.execute("RESET perf.cache_enabled")

    q = "WITH d AS (DELETE FROM items WHERE id = $1 RETURNING id) SELECT id FROM d"
    cnt.reset()
    deleted = 0
    for i in (1, 1, 2):
        try:
            got = cached_json(c, q, [i])
            deleted += len(got)
        except psycopg.Error:
            pass
    d = cnt.delta()
    assert d["hits"] == 0 and d["stores"] == 0, d
    assert c.execute("SELECT count(*) FROM items").fetchone()[0] == 10 - deleted
    assert deleted <= 2


def test_prepared_transaction_commit_invalidates(connect):
    """Two-phase commit: while a prepared transaction that wrote the table is pending other
    sessions see the old data; after COMMIT PREPARED (from another session) the next call
    returns the new data. Skipped when max_prepared_transactions = 0."""
    admin = connect()
    if int(admin.execute("SHOW max_prepared_transactions").fetchone()[0]) == 0:
        pytest.skip("max_prepared_transactions = 0 on the test cluster")
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    before = prime(c, cnt, ITEMS_ALL)
    gid = "it_" + uuid.uuid4().hex[:10]
    w = connect()
    try:
        w.execute("BEGIN")
        w.execute("UPDATE items SET val = 0 WHERE id = 1")
        w.execute(f"PREPARE TRANSACTION '{gid}'")
        assert cached_json(c, ITEMS_ALL) == before == direct(c, ITEMS_ALL)
        admin.execute(f"COMMIT PREPARED '{gid}'")
        gid = None
        got = cached_json(c, ITEMS_ALL)
        assert got == direct(c, ITEMS_ALL) and got[0]["val"] == 0
    finally:
        if gid:
            admin.execute(f"ROLLBACK PREPARED '{gid}'")


def test_pending_prepared_transaction_serves_committed_data(connect):
    """While a prepared transaction that wrote the source table is pending, its changes are
    not committed, so cached calls may keep serving the committed data (hits equal to direct
    execution); COMMIT PREPARED invalidates before the changes become visible, so the next
    call sees them. Skipped when max_prepared_transactions = 0."""
    admin = connect()
    if int(admin.execute("SHOW max_prepared_transactions").fetchone()[0]) == 0:
        pytest.skip("max_prepared_transactions = 0 on the test cluster")
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    before = prime(c, cnt, ITEMS_ALL)
    gid = "it_" + uuid.uuid4().hex[:10]
    w = connect()
    try:
        w.execute("BEGIN")
        w.execute("DELETE FROM items WHERE id = 1")
        w.execute(f"PREPARE TRANSACTION '{gid}'")
        cnt.reset()
        for _ in range(2):
            assert cached_json(c, ITEMS_ALL) == before == direct(c, ITEMS_ALL)
        assert cnt.delta()["hits"] == 2
        admin.execute(f"COMMIT PREPARED '{gid}'")
        gid = None
        after = cached_json(c, ITEMS_ALL)
        assert after == direct(c, ITEMS_ALL) and after[0]["id"] == 2
    finally:
        if gid:
            admin.execute(f"ROLLBACK PREPARED '{gid}'")


# --------------------------------------------------------------------------------------------
# 13. bad input


BAD_INPUT = [
    ("syntax error", "SELEC id FROM items", []),
    ("two statements", "SELECT 1 AS a; SELECT 2 AS b", []),
    ("empty query", "", []),
    ("only a comment", "-- nothing", []),
    ("INSERT", "INSERT INTO items VALUES (100, 1, 'bad', 1)", []),
    ("DELETE RETURNING", "DELETE FROM items RETURNING id", []),
    ("utility", "CREATE TABLE sneaky (x int)", []),
    ("breaks out of the wrapper", "SELECT 1 AS x) t; DELETE FROM items; SELECT (1", []),
    ("params not an array", "SELECT id FROM items WHERE id = $1", {"a": 1}),
    ("params a scalar", "SELECT id FROM items WHERE id = $1", 1),
    ("too few params", "SELECT id FROM items WHERE id = $1", []),
    ("too many params", "SELECT id FROM items WHERE id = $1", [1, 2]),
    ("params for no placeholder", "SELECT id FROM items ORDER BY id", [1]),
    ("value does not convert", "SELECT id FROM items WHERE id = $1", ["abc"]),
    ("unknown table", "SELECT * FROM no_such_table", []),
]


@pytest.mark.parametrize("what,query,params", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_a_clean_error(connect, what, query, params):
    """Bad input raises a clean ERROR (a SQLSTATE that is not an internal error, with a
    message), changes nothing, and the connection and the cache keep working afterwards."""
    admin = connect()
    make_items(admin)
    c = connect()
    before = direct(c, ITEMS_ALL)
    with pytest.raises(psycopg.Error) as e:
        c.execute("SELECT perf.cached_json(%s, %s)", (query, Jsonb(params))).fetchone()
    err = e.value
    assert err.sqlstate and not err.sqlstate.startswith(("XX", "08", "57", "58")), (err.sqlstate, str(err))
    assert err.diag.message_primary
    assert c.execute("SELECT 1").fetchone() == (1,)
    assert direct(c, ITEMS_ALL) == before
    assert admin.execute("SELECT to_regclass('sneaky')").fetchone()[0] is None
    cnt = Counters(admin)
    prime(c, cnt, ITEMS_ALL)
    # also inside a transaction block: the error aborts it cleanly, ROLLBACK recovers
    c.execute("BEGIN")
    with pytest.raises(psycopg.Error):
        c.execute("SELECT perf.cached_json(%s, %s)", (query, Jsonb(params))).fetchone()
    c.execute("ROLLBACK")
    assert cached_json(c, ITEMS_ALL) == before


# --------------------------------------------------------------------------------------------
# 14.-15. TTL, explicit invalidation


def test_ttl_expires_entries(connect):
    """ttl => '1 second': a hit right away, a miss (and a correct result) after 1.5 s;
    perf.cache_default_ttl works the same way, and an explicit ttl overrides it."""
    admin = connect()
    make_items(admin)
    c = connect()
    cnt = Counters(admin)
    first = cached_json(c, ITEMS_GRP, [1], ttl="1 second")
    cnt.reset()
    assert cached_json(c, ITEMS_GRP, [1], ttl="1 second") == first
    assert cnt.delta()["hits"] == 1
    time.sleep(1.5)
    cnt.reset()
    assert cached_json(c, ITEMS_GRP, [1], ttl="1 second") == first == direct(c, ITEMS_GRP, [1])
    d = cnt.delta()
    assert d["hits"] == 0 and d["misses"] == 1, d
    assert d["expirations"] >= 1, d

    c.execute("SET perf.cache_default_ttl = 1")
    cached_json(c, ITEMS_GRP, [2])
    cached_json(c, ITEMS_GRP, [0], ttl="1 hour")
    cnt.reset()
    cached_json(c, ITEMS_GRP, [2])
    cached_json(c, ITEMS_GRP, [0], ttl="1 hour")
    assert cnt.delta()["hits"] == 2
    time.sleep(1.5)
    cnt.reset()
    assert cached_json(c, ITEMS_GRP, [2]) == direct(c, ITEMS_GRP, [2])
    assert cnt.delta()["hits"] == 0
    cnt.reset()
    assert cached_json(c, ITEMS_GRP, [0], ttl="1 hour") == direct(c, ITEMS_GRP, [0])
    assert cnt.delta()["hits"] == 1


def test_invalidate_untrack_and_flush(connect):
    """perf.cache_invalidate(items) drops the entries over items (next call misses) and keeps
    those over another table (still a hit); perf.cache_flush() drops everything;
    perf.cache_untrack(items) drops its entries and stops caching it (untracked_table)."""
    admin = connect()
    make_items(admin)
    make_items(admin, "others", rows=3)
    c = connect()
    cnt = Counters(admin)
    q_other = "SELECT id, name FROM others ORDER BY id"
    prime(c, cnt, ITEMS_ALL)
    prime(c, cnt, ITEMS_GRP, [1])
    other = prime(c, cnt, q_other)

    dropped = admin.execute("SELECT perf.cache_invalidate('items')").fetchone()[0]
    assert dropped >= 2
    cnt.reset()
    assert cached_json(c, ITEMS_ALL) == direct(c, ITEMS_ALL)
    assert cached_json(c, ITEMS_GRP, [1]) == direct(c, ITEMS_GRP, [1])
    d = cnt.delta()
    assert d["hits"] == 0 and d["misses"] == 2, d
    cnt.reset()
    assert cached_json(c, q_other) == other
    assert cnt.delta()["hits"] == 1

    prime(c, cnt, ITEMS_ALL)
    assert admin.execute("SELECT perf.cache_flush()").fetchone()[0] >= 2
    cnt.reset()
    cached_json(c, ITEMS_ALL)
    cached_json(c, q_other)
    d = cnt.delta()
    assert d["hits"] == 0 and d["misses"] == 2, d
    assert cache_stats(admin)["entries"] >= 2

    prime(c, cnt, ITEMS_ALL)
    admin.execute("SELECT perf.cache_untrack('items')")
    cnt.reset()
    for _ in range(2):
        assert cached_json(c, ITEMS_ALL) == direct(c, ITEMS_ALL)
    assert cnt.refused("untracked_table") == 2
    assert cnt.delta()["hits"] == 0
    connect().execute("UPDATE items SET val = 0")
    assert cached_json(c, ITEMS_ALL) == direct(c, ITEMS_ALL)


def test_output_settings_are_part_of_the_key(connect):
    """TimeZone, IntervalStyle, bytea_output and extra_float_digits change the JSON text of a
    result: under each setting the cached result equals direct execution, and switching back
    is a hit with the first setting's result."""
    admin = connect()
    admin.execute("CREATE TABLE fmt (id int PRIMARY KEY, ts timestamptz, d interval, b bytea, f float8)")
    admin.execute("INSERT INTO fmt VALUES (1, '2024-03-01 12:00:00+00', '1 day 2 hours', '\\x00ff41', 1.0/3)")
    admin.execute("SELECT perf.cache_track('fmt')")
    q = "SELECT id, ts, d, b, f FROM fmt ORDER BY id"
    c = connect()
    cnt = Counters(admin)
    for setting, a, b in [
        ("TimeZone", "UTC", "Asia/Tokyo"),
        ("IntervalStyle", "postgres", "iso_8601"),
        ("bytea_output", "hex", "escape"),
        ("extra_float_digits", "1", "-5"),
    ]:
        c.execute(sql.SQL("SET {} = {}").format(ident(setting), sql.Literal(a)))
        ra = cached_json(c, q)
        assert ra == direct(c, q)
        c.execute(sql.SQL("SET {} = {}").format(ident(setting), sql.Literal(b)))
        rb = cached_json(c, q)
        assert rb == direct(c, q)
        assert ra != rb, setting
        c.execute(sql.SQL("SET {} = {}").format(ident(setting), sql.Literal(a)))
        cnt.reset()
        assert cached_json(c, q) == ra
        assert cnt.delta()["hits"] == 1, setting
        c.execute(sql.SQL("RESET {}").format(ident(setting)))


# --------------------------------------------------------------------------------------------
# 16. concurrent readers and writers


BASE_ROWS = 20          # ids 1..20 are never deleted
TOTAL = BASE_ROWS * 100  # sum(val) invariant
POISON = 10 ** 9        # stamp offset used by transactions that roll back
MIN_READS = 10_000
MIN_COMMITS = 150       # per writer
MIN_SECONDS = 45
MAX_SECONDS = 240
WRITERS = 3
READERS = 3

# Every reader call picks one of the two forms; each has its own entries.
FORMS = ("cached_json", "cached_json_text")
SHAPES = [
    ("agg", "SELECT count(*) AS n, sum(val) AS total, min(stamp) AS lo, max(stamp) AS hi FROM acct",
     lambda rnd: []),
    ("grp", "SELECT id, val, stamp FROM acct WHERE grp = $1 ORDER BY id", lambda rnd: [rnd.randrange(4)]),
    ("one", "SELECT id, grp, val, stamp FROM acct WHERE id = $1", lambda rnd: [rnd.randint(1, 8)]),
    ("top", "SELECT id, val, stamp FROM acct ORDER BY val DESC, id LIMIT 5", lambda rnd: []),
]


def _check_result(shape, res, v_before, v_after):
    """Problems with one cached result (empty list if none): it must be one consistent
    committed snapshot (all rows stamped by the same writer, the sum invariant), at least as
    new as the version committed before the call, never newer than the version after it, and
    never contain rolled-back data."""
    problems = []
    if shape == "agg":
        if len(res) != 1:
            return [f"agg returned {len(res)} rows"]
        r = res[0]
        if r["total"] != TOTAL:
            problems.append(f"sum {r['total']} != {TOTAL}")
        if r["n"] < BASE_ROWS:
            problems.append(f"count {r['n']} < {BASE_ROWS}")
        stamps = {r["lo"], r["hi"]}
    else:
        # each grp has 5 of the never-deleted rows, plus inserted ones
        want = {"grp": 5, "one": 1, "top": 5}[shape]
        if len(res) < want or (shape != "grp" and len(res) != want):
            problems.append(f"{shape} returned {len(res)} rows, expected {want}")
        stamps = {r["stamp"] for r in res}
    if not stamps:
        return problems + ["no stamps"]
    if len(stamps) != 1:
        problems.append(f"mixed snapshots: stamps {sorted(stamps)}")
    hi = max(stamps)
    if hi >= POISON:
        problems.append(f"rolled-back data visible: stamp {hi}")
    elif hi < v_before:
        problems.append(f"STALE: stamp {hi} < version {v_before} committed before the call")
    elif hi > v_after:
        problems.append(f"from the future: stamp {hi} > version {v_after} read after the call")
    return problems


# Tracking churn (the `churn` variant): stopping and restarting invalidation of the source
# table while writers and readers run, each step committed by its own session.
CHURN_STEPS = [
    ("SELECT perf.cache_untrack('acct')", "SELECT perf.cache_track('acct')"),
    ("ALTER TABLE acct DISABLE TRIGGER pg_perf_cache_invalidate",
     "ALTER TABLE acct ENABLE ALWAYS TRIGGER pg_perf_cache_invalidate"),
    ("ALTER TABLE acct DISABLE TRIGGER USER", "SELECT perf.cache_track('acct')"),
]


@pytest.mark.parametrize("churn", [False, True], ids=["steady", "churn"])
def test_concurrent_readers_writers_never_stale(connect, fresh_db, churn):
    """The key concurrency check (long: ~45 s, at most 240 s). 3 writer threads each commit >= 150
    transactions on a small tracked table (move value between random rows, occasional INSERT /
    DELETE, ~10% ROLLBACK), each also incrementing a one-row `version` table and stamping all
    rows with the new version in the same transaction. 3 reader threads make >= 10,000 cached
    calls over 4 query shapes (aggregate, lookup by parameter, ORDER BY LIMIT). For every call
    the version is read (directly) just before: the cached result must carry at least that
    version (never stale after commit), be one consistent snapshot with the sum invariant, and
    contain no rolled-back data; when no commit happened between the call and a direct
    execution right after it, the two must be equal. The cache must have served > 10% of the
    calls as hits, so the test cannot pass vacuously. The `churn` variant also untracks and
    retracks the table, and disables and re-enables its invalidation trigger, from another
    session during the run (writes then fire no trigger): still no stale result."""
    admin = connect()
    admin.execute("CREATE TABLE acct (id int PRIMARY KEY, grp int NOT NULL, val bigint NOT NULL, "
                  "stamp bigint NOT NULL)")
    admin.execute("INSERT INTO acct SELECT g, g %% 4, 100, 0 FROM generate_series(1, %s) g", (BASE_ROWS,))
    admin.execute("CREATE TABLE version (v bigint NOT NULL)")
    admin.execute("INSERT INTO version VALUES (0)")
    admin.execute("SELECT perf.cache_track('acct')")
    assert admin.execute("SELECT sum(val) FROM acct").fetchone()[0] == TOTAL

    stop = threading.Event()
    lock = threading.Lock()
    commits = [0] * WRITERS
    rollbacks = [0] * WRITERS
    reads = [0] * READERS
    exact = [0] * READERS
    problems = []  # the first 50 bad results
    bad = [0]
    errors = []

    def writer(n):
        rnd = random.Random(1000 + n)
        try:
            with psycopg.connect(dsn(fresh_db), autocommit=True) as c:
                while not stop.is_set():
                    abort = rnd.random() < 0.1
                    with c.transaction():
                        # the version row lock serializes writers: versions commit in order
                        v = c.execute("UPDATE version SET v = v + 1 RETURNING v").fetchone()[0]
                        ids = [r[0] for r in c.execute("SELECT id FROM acct")]
                        a, b = rnd.sample(ids, 2)
                        amount = rnd.randint(1, 30)
                        c.execute("UPDATE acct SET val = val - %s WHERE id = %s", (amount, a))
                        c.execute("UPDATE acct SET val = val + %s WHERE id = %s", (amount, b))
                        op = rnd.random()
                        extra = [i for i in ids if i > BASE_ROWS]
                        if op < 0.15 or (op < 0.3 and not extra):
                            c.execute("INSERT INTO acct SELECT max(id) + 1, (max(id) + 1) %% 4, 0, %s FROM acct",
                                      (v,))
                        elif op < 0.3:
                            gone = rnd.choice(extra)
                            heir = rnd.randint(1, BASE_ROWS)
                            c.execute("UPDATE acct SET val = val + (SELECT val FROM acct WHERE id = %s) "
                                      "WHERE id = %s", (gone, heir))
                            c.execute("DELETE FROM acct WHERE id = %s", (gone,))
                        c.execute("UPDATE acct SET stamp = %s", (v + POISON if abort else v,))
                        if abort:
                            raise psycopg.Rollback()
                    if abort:
                        rollbacks[n] += 1
                    else:
                        commits[n] += 1
                    # pauses leave windows without writers in progress, so results get cached
                    time.sleep(rnd.uniform(0.01, 0.08))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(("writer", n, repr(e)))
            stop.set()

    def reader(n):
        rnd = random.Random(2000 + n)
        try:
            with psycopg.connect(dsn(fresh_db), autocommit=True) as c:
                while not stop.is_set():
                    name, q, mkparams = rnd.choice(SHAPES)
                    params = mkparams(rnd)
                    fn = rnd.choice(FORMS)
                    v_before = c.execute("SELECT v FROM version").fetchone()[0]
                    res = cached_json(c, q, params, fn=fn)
                    fresh = direct(c, q, params)
                    v_after = c.execute("SELECT v FROM version").fetchone()[0]
                    found = _check_result(name, res, v_before, v_after)
                    if v_after == v_before:
                        # no commit between the cached call and the direct execution
                        exact[n] += 1
                        if res != fresh:
                            found.append(f"differs from direct execution at version {v_before}: "
                                         f"{res} != {fresh}")
                    reads[n] += 1
                    if found:
                        with lock:
                            bad[0] += 1
                            if len(problems) < 50:
                                problems.append((f"{fn}:{name}", params, v_before, v_after, found))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(("reader", n, repr(e)))
            stop.set()

    churned = [0]

    def churner():
        rnd = random.Random(3000)
        try:
            with psycopg.connect(dsn(fresh_db), autocommit=True) as c:
                try:
                    while not stop.is_set():
                        # tracked most of the time, so results still get cached
                        time.sleep(rnd.uniform(0.3, 0.8))
                        off, on = rnd.choice(CHURN_STEPS)
                        c.execute(off)
                        time.sleep(rnd.uniform(0.05, 0.3))
                        c.execute(on)
                        churned[0] += 1
                finally:
                    c.execute("SELECT perf.cache_track('acct')")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(("churner", 0, repr(e)))
            stop.set()

    cnt = Counters(admin)
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
    if churn:
        threads.append(threading.Thread(target=churner))
    start = time.monotonic()
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed > MAX_SECONDS:
                break
            if (sum(reads) >= MIN_READS and min(commits) >= MIN_COMMITS and elapsed >= MIN_SECONDS):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    elapsed = time.monotonic() - start
    d = cnt.delta()
    total_reads = sum(reads)
    summary = (f"{elapsed:.1f}s, reads={total_reads} exact={sum(exact)} commits={commits} churned={churned[0]} "
               f"rollbacks={rollbacks} stats={d} refusals={cache_refusals(admin)}")
    print(summary)  # shown with pytest -s
    assert not errors, f"{errors[:5]} ({summary})"
    assert not any(t.is_alive() for t in threads), summary
    assert bad[0] == 0, f"{bad[0]} bad results ({summary}), first: " + "; ".join(
        f"{name}{params} v{v0}..v{v1}: {' / '.join(found)}"[:400] for name, params, v0, v1, found in problems[:5])
    assert total_reads >= MIN_READS, f"too few checked reads in {MAX_SECONDS}s: {summary}"
    assert min(commits) >= MIN_COMMITS, summary
    assert sum(rollbacks) > 0, summary
    assert not churn or churned[0] >= 10, f"too little tracking churn: {summary}"
    assert sum(exact) >= total_reads // 10, f"too few exact comparisons: {summary}"
    assert d["hits"] > total_reads // 10, f"the cache served too few hits, test would be vacuous: {summary}"
    # final state, for good measure
    assert admin.execute("SELECT sum(val) FROM acct").fetchone()[0] == TOTAL
    for _, q, mk in SHAPES:
        p = mk(random.Random(0))
        for fn in FORMS:
            assert cached_json(admin, q, p, fn=fn) == direct(admin, q, p)
            cnt.reset()
            assert cached_json(admin, q, p, fn=fn) == direct(admin, q, p)
            assert cnt.delta()["hits"] == 1, fn
