"""The result cache's shared-memory store as real clients see it: capacity counted in bytes
(100,000 small entries fit in the default perf.cache_size_mb), eviction when full (entries
bounded, bytes within capacity, evictions counted, recently hit entries kept), and every
hit returning its own entry (100,000 keys share index buckets), also with several sessions
storing and hitting at once.

The cache statistics are cluster-wide: each test flushes the cache first (as superuser)
and assumes nothing else uses it meanwhile (pytest runs the tests one at a time).
Every comparison runs in the server: `ok(i)` below is true when the cached call for `i`
returned exactly the text it must.
"""

import random
import threading

import psycopg
import psycopg.rows
import pytest

from conftest import dsn

SMALL = "SELECT $1::int AS v"
# Immutable functions only (the cache refuses volatile ones): a ~200 kB string per key.
BIG = "SELECT repeat('x', 200000) || $1::text AS v"
BIG_TEXT = """format('[{{"v": "%%s"}}]', repeat('x', 200000) || {i})"""


def stats(c):
    return c.execute("SELECT * FROM perf.cache_stats()").fetchone()._asdict()


def refusals(c):
    return dict(c.execute("SELECT reason, count FROM perf.cache_refusals()").fetchall())


def admin_conn(fresh_db):
    c = psycopg.connect(dsn(fresh_db), autocommit=True,
                        row_factory=psycopg.rows.namedtuple_row)
    c.execute("SELECT perf.cache_flush()")
    return c


def mismatches(c, query, expected, lo, hi, ttl="1 hour"):
    """How many i in [lo, hi] get something else than `expected` (SQL text over i) from
    perf.cached_json_text(query, [i]): one statement, compared in the server."""
    return c.execute(
        f"SELECT count(*) FROM generate_series(%s::int, %s::int) i "
        f"WHERE perf.cached_json_text(%s, jsonb_build_array(i), %s::interval)::text "
        f"IS DISTINCT FROM {expected.format(i='i')}",
        (lo, hi, query, ttl)).fetchone()[0]


SMALL_TEXT = """format('[{{"v": %%s}}]', {i})"""


def test_hundred_thousand_small_entries_fit_and_hits_return_their_own(fresh_db):
    """With the default perf.cache_size_mb (64), 100,000 entries of a few bytes are all
    stored (no eviction, no cache_full) and then all served from the cache, each with its
    own value: the keys share index buckets (32 partitions x 16,384 buckets), so a hit that
    matched on the bucket instead of the key would return a neighbour's value."""
    admin = admin_conn(fresh_db)
    n = 100_000
    s0 = stats(admin)
    r0 = refusals(admin)
    assert s0["entries"] == 0
    assert s0["capacity_bytes"] == 64 * 1024 * 1024
    c = psycopg.connect(dsn(fresh_db), autocommit=True)
    assert mismatches(c, SMALL, SMALL_TEXT, 1, n) == 0
    s1 = stats(admin)
    assert s1["stores"] - s0["stores"] == n, (s0, s1, refusals(admin))
    assert s1["entries"] == n
    assert s1["evictions"] == s0["evictions"]
    assert refusals(admin).get("cache_full", 0) == r0.get("cache_full", 0)
    # Bytes count what the entries occupy: their own size plus a small fixed header.
    assert n * 20 < s1["bytes"] < n * 200, s1
    # Second pass: every call a hit, every hit its own value (also in another order).
    assert mismatches(c, SMALL, SMALL_TEXT, 1, n) == 0
    s2 = stats(admin)
    assert s2["hits"] - s1["hits"] == n and s2["misses"] == s1["misses"], (s1, s2)
    picks = random.Random(7).sample(range(1, n + 1), 2000)
    for i in picks[:200]:
        assert c.execute("SELECT perf.cached_json_text(%s, jsonb_build_array(%s::int), "
                         "'1 hour')::text", (SMALL, i)).fetchone()[0] == f'[{{"v": {i}}}]'
    assert stats(admin)["hits"] - s2["hits"] == 200
    c.close()
    admin.close()


def test_eviction_when_full_bounds_entries_and_bytes(fresh_db):
    """2,000 results of ~200 kB (6x the 64 MB capacity): every one is stored (the oldest
    entries are evicted for it, never cache_full), entries and bytes stay within capacity,
    evictions are counted, every call returns its own value, hit or not; a result of nearly
    perf.cache_max_entry_kb (1 MB) still fits in a full cache."""
    admin = admin_conn(fresh_db)
    c = psycopg.connect(dsn(fresh_db), autocommit=True)
    s0 = stats(admin)
    r0 = refusals(admin)
    n = 2000
    for lo in range(1, n + 1, 250):
        assert mismatches(c, BIG, BIG_TEXT, lo, lo + 249) == 0
        s = stats(admin)
        assert s["bytes"] <= s["capacity_bytes"]
        assert s["entries"] <= s["capacity_bytes"] // 200_000
    s1 = stats(admin)
    assert s1["stores"] - s0["stores"] == n
    assert refusals(admin).get("cache_full", 0) == r0.get("cache_full", 0)
    assert s1["evictions"] - s0["evictions"] >= n - s1["entries"] > 0, s1
    assert s1["bytes"] > s1["capacity_bytes"] // 2, "a full cache should be mostly used"
    # The most recent results survived: hits, each its own value.
    assert mismatches(c, BIG, BIG_TEXT, n - 99, n) == 0
    s2 = stats(admin)
    assert s2["hits"] - s1["hits"] >= 90, (s1, s2)
    # Whatever else survived is right; what was evicted is recomputed right.
    assert mismatches(c, BIG, BIG_TEXT, 1, n) == 0
    s2 = stats(admin)
    # Nearly the largest entry allowed, into the full cache: stored, then a hit.
    huge = "SELECT repeat('y', 1000000) || $1::text AS v"
    huge_text = """format('[{{"v": "%%s"}}]', repeat('y', 1000000) || {i})"""
    assert mismatches(c, huge, huge_text, 1, 1) == 0
    s3 = stats(admin)
    assert s3["stores"] - s2["stores"] >= 1
    assert mismatches(c, huge, huge_text, 1, 1) == 0
    assert stats(admin)["hits"] - s3["hits"] == 1
    c.close()
    admin.close()


def test_recently_hit_entry_survives_a_flood(fresh_db):
    """An entry that keeps being hit stays cached while 3,000 big results flow through the
    cache (9x its capacity): eviction takes the least recently used entries, not simply the
    oldest."""
    admin = admin_conn(fresh_db)
    c = psycopg.connect(dsn(fresh_db), autocommit=True)
    hot = "SELECT 'hot' AS h, $1::int AS v"
    expected = """format('[{{"h": "hot", "v": %%s}}]', {i})"""
    assert mismatches(c, hot, expected, 1, 1) == 0
    s0 = stats(admin)
    for lo in range(1, 3001, 50):
        assert mismatches(c, BIG, BIG_TEXT, lo, lo + 49) == 0
        assert mismatches(c, hot, expected, 1, 1) == 0
    s1 = stats(admin)
    assert s1["evictions"] - s0["evictions"] > 1000
    hits = admin.execute("SELECT hits FROM perf.cache_entries() WHERE query = %s",
                         (hot,)).fetchone()
    assert hits is not None and hits[0] == 60, hits


def test_concurrent_sessions_storing_and_hitting_get_their_own_values(fresh_db):
    """Four sessions store and hit 1,500 keys of ~80 kB and ~20 B at random in a cache kept
    full (entries slide and are evicted under the readers): every call, hit or miss, returns
    the value of its own key."""
    admin = admin_conn(fresh_db)
    mid = "SELECT repeat('m', 80000) || $1::text AS v"
    mid_text = """format('[{{"v": "%%s"}}]', repeat('m', 80000) || {i})"""
    errors = []

    def worker(seed):
        try:
            with psycopg.connect(dsn(fresh_db), autocommit=True) as c:
                rnd = random.Random(seed)
                for _ in range(150):
                    lo = rnd.randrange(1, 1500)
                    q, t = (mid, mid_text) if rnd.random() < 0.7 else (SMALL, SMALL_TEXT)
                    bad = mismatches(c, q, t, lo, lo + 9)
                    if bad:
                        errors.append((q[:20], lo, bad))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    s0 = stats(admin)
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s1 = stats(admin)
    assert s1["hits"] > s0["hits"]
    assert s1["bytes"] <= s1["capacity_bytes"]
    admin.close()


if __name__ == "__main__":
    pytest.main([__file__])
