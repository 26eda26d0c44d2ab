"""Incremental views (perf.create_incremental_view): a randomized property test with
concurrent writers, rollbacks and TRUNCATE against a fresh full computation; the worker's
background apply; rights; drop; and bad input."""

import math
import random
import threading
import time
from decimal import Decimal

import psycopg
import pytest

from conftest import dsn

SRC = """CREATE TABLE src (
    id serial PRIMARY KEY,
    g  int NOT NULL,
    h  text,
    x  int,
    y  numeric(12,2),
    z  float8
)"""

V1 = """SELECT g, h, count(*) AS n, count(x) AS nx, sum(x) AS sx, sum(y) AS sy, avg(y) AS ay,
               avg(z) AS az, avg(x) AS ax, min(x) AS mn, max(y) AS mx, min(h) AS mh
          FROM src WHERE x IS NULL OR x <> 13 GROUP BY g, h"""
V1_COLS = ["g", "h", "n", "nx", "sx", "sy", "ay", "az", "ax", "mn", "mx", "mh"]
V1_KEYS = 2

V2 = """SELECT g % 3 AS gm, lower(h) AS lh, count(*) AS n, sum(z) AS sz, max(x) AS mx
          FROM src GROUP BY g % 3, lower(h)"""
V2_COLS = ["gm", "lh", "n", "sz", "mx"]
V2_KEYS = 2


def rows_of(c, sql, cols, nkeys):
    out = {}
    for r in c.execute(sql).fetchall():
        out[tuple(r[:nkeys])] = dict(zip(cols, r))
    return out


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b
    return a == b


def assert_view_matches(c, view, query, cols, nkeys, step):
    got = rows_of(c, f"SELECT {', '.join(cols)} FROM {view}", cols, nkeys)
    want = rows_of(c, query, cols, nkeys)
    assert got.keys() == want.keys(), (
        f"step {step}: groups differ: extra {sorted(got.keys() - want.keys(), key=str)[:5]}, "
        f"missing {sorted(want.keys() - got.keys(), key=str)[:5]}"
    )
    for k, w in want.items():
        g = got[k]
        for col in cols:
            assert same(g[col], w[col]), f"step {step}: group {k} column {col}: view {g[col]!r} != query {w[col]!r}"


def random_row(rnd):
    return (
        rnd.randint(0, 7),
        rnd.choice(["a", "b", "C", "c", None]),
        None if rnd.random() < 0.1 else rnd.randint(-20, 40),
        None if rnd.random() < 0.1 else Decimal(rnd.randint(-100000, 100000)) / 100,
        None if rnd.random() < 0.1 else rnd.uniform(-1e3, 1e3),
    )


def one_op(c, rnd, allow_truncate):
    """One transaction of random writes; rolled back ~15% of the time. Returns its kind."""
    roll = rnd.random()
    with c.transaction() as tx:
        kind = []
        for _ in range(rnd.randint(1, 3)):
            r = rnd.random()
            if allow_truncate and r < 0.01:
                c.execute("TRUNCATE src")
                kind.append("truncate")
            elif r < 0.45:
                rows = [random_row(rnd) for _ in range(rnd.randint(1, 20))]
                with c.cursor() as cur:
                    cur.executemany("INSERT INTO src (g, h, x, y, z) VALUES (%s, %s, %s, %s, %s)", rows)
                kind.append("insert")
            elif r < 0.75:
                g, h, x, y, z = random_row(rnd)
                c.execute(
                    "UPDATE src SET g = %s, x = CASE WHEN random() < 0.5 THEN %s ELSE x END, y = %s, "
                    "h = CASE WHEN random() < 0.3 THEN %s ELSE h END, z = %s "
                    "WHERE id %% 17 = %s",
                    (g, x, y, h, z, rnd.randint(0, 16)),
                )
                kind.append("update")
            else:
                c.execute("DELETE FROM src WHERE id %% 11 = %s AND random() < 0.6", (rnd.randint(0, 10),))
                kind.append("delete")
        if roll < 0.15:
            raise psycopg.Rollback(tx)
    return kind


def test_property_concurrent_writers_match_full_computation(connect, fresh_db):
    c = connect()
    c.execute(SRC)
    rnd0 = random.Random(1234)
    with c.cursor() as cur:
        cur.executemany("INSERT INTO src (g, h, x, y, z) VALUES (%s, %s, %s, %s, %s)",
                        [random_row(rnd0) for _ in range(300)])
    c.execute("SELECT perf.create_incremental_view('v1', %s, schedule => NULL)", (V1,))
    c.execute("SELECT perf.create_incremental_view('v2', %s, schedule => NULL)", (V2,))
    assert_view_matches(c, "v1", V1, V1_COLS, V1_KEYS, 0)
    assert_view_matches(c, "v2", V2, V2_COLS, V2_KEYS, 0)

    writers, per_round, rounds = 4, 25, 11
    conns = [connect() for _ in range(writers)]
    applier = connect()
    counts = {"ops": 0, "conflicts": 0, "truncate": 0, "applies": 0}
    lock = threading.Lock()
    errors = []

    def writer(i, rnd):
        try:
            for _ in range(per_round):
                try:
                    kinds = one_op(conns[i], rnd, allow_truncate=(i == 0))
                    with lock:
                        counts["truncate"] += kinds.count("truncate")
                except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                    with lock:
                        counts["conflicts"] += 1
                with lock:
                    counts["ops"] += 1
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def apply_while_writing(stop):
        try:
            while not stop.is_set():
                for v in ("v1", "v2"):
                    applier.execute("SELECT perf.refresh_incremental(%s)", (v,))
                with lock:
                    counts["applies"] += 1
                time.sleep(0.01)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    for step in range(1, rounds + 1):
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(i, random.Random(step * 100 + i)))
                   for i in range(writers)]
        app = threading.Thread(target=apply_while_writing, args=(stop,))
        app.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        app.join()
        assert not errors, errors
        for v in ("v1", "v2"):
            c.execute("SELECT perf.refresh_incremental(%s)", (v,))
        assert_view_matches(c, "v1", V1, V1_COLS, V1_KEYS, step)
        assert_view_matches(c, "v2", V2, V2_COLS, V2_KEYS, step)
    print("property test:", counts)
    assert counts["ops"] >= 1000, counts
    assert counts["truncate"] > 0, counts
    assert counts["applies"] > 0, counts
    # Everything logged was consumed exactly once.
    assert c.execute("SELECT perf.incremental_pending('v1')").fetchone()[0] == 0


def test_rollback_leaves_no_delta_and_truncate_recomputes(connect, fresh_db):
    c = connect()
    c.execute(SRC)
    c.execute("INSERT INTO src (g, h, x) SELECT i % 4, 'a', i FROM generate_series(1, 100) i")
    c.execute("SELECT perf.create_incremental_view('v1', %s, schedule => NULL)", (V1,))
    with c.transaction() as tx:
        c.execute("INSERT INTO src (g, h, x) VALUES (99, 'z', 1)")
        raise psycopg.Rollback(tx)
    assert c.execute("SELECT perf.incremental_pending('v1')").fetchone()[0] == 0
    c.execute("TRUNCATE src")
    c.execute("INSERT INTO src (g, h, x) VALUES (5, 'q', 7)")
    assert c.execute("SELECT perf.fresh('v1')").fetchone()[0] == 2
    assert c.execute("SELECT g, h, n, mn FROM v1").fetchall() == [(5, "q", 1, 7)]


def test_worker_applies_in_background(connect, fresh_db):
    c = connect()
    c.execute(SRC)
    c.execute("SELECT perf.create_incremental_view('v2', %s, schedule => '1 second')", (V2,))
    job = c.execute("SELECT job FROM perf.incremental_views").fetchone()[0]
    assert job and c.execute("SELECT count(*) FROM perf.jobs WHERE name = %s", (job,)).fetchone()[0] == 1
    c.execute("INSERT INTO src (g, h, x) VALUES (1, 'A', 5), (4, 'a', 6)")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if c.execute("SELECT n, mx FROM v2 WHERE gm = 1 AND lh = 'a'").fetchone() == (2, 6):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the scheduler's job did not apply the change within 20 s")
    c.execute("SELECT perf.drop_incremental_view('v2')")
    assert c.execute("SELECT count(*) FROM perf.jobs WHERE name = %s", (job,)).fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM perf.incremental_views").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'src'::regclass").fetchone()[0] == 0
    assert c.execute("SELECT to_regclass('v2')").fetchone()[0] is None
    assert c.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '\\_\\_ivm%'").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_\\_ivm%'").fetchone()[0] == 0


def test_writers_need_no_rights_on_the_view_and_cannot_reuse_its_functions(connect, fresh_db):
    c = connect()
    suffix = fresh_db[-6:]
    owner, writer, reader = f"ivm_owner_{suffix}", f"ivm_writer_{suffix}", f"ivm_reader_{suffix}"
    for r in (owner, writer, reader):
        c.execute(f"CREATE ROLE {r} LOGIN")
    c.execute(f"GRANT perf_admin TO {owner}")  # creating incremental views is an admin call
    try:
        c.execute(f"CREATE SCHEMA app AUTHORIZATION {owner}")
        c.execute(f"GRANT USAGE ON SCHEMA app TO {writer}, {reader}")
        c.execute(f"SET ROLE {owner}")
        c.execute(SRC.replace("src", "app.src"))
        c.execute(f"GRANT INSERT, SELECT, UPDATE, DELETE ON app.src TO {writer}")
        c.execute(f"GRANT USAGE ON SEQUENCE app.src_id_seq TO {writer}")
        c.execute("SELECT perf.create_incremental_view('app.v', "
                  "'SELECT g, count(*) AS n, sum(x) AS s FROM app.src GROUP BY g', schedule => NULL)")
        c.execute(f"GRANT SELECT ON app.v TO {reader}")
        c.execute("RESET ROLE")
        w = connect(user=writer)
        w.execute("INSERT INTO app.src (g, x) VALUES (1, 10), (1, 5)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            w.execute("SELECT * FROM app.v")
        log = c.execute("SELECT log::text FROM perf.incremental_views").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            w.execute(f"INSERT INTO {log} (__cnt) VALUES (1)")
        w.execute("CREATE TEMP TABLE mine (LIKE app.src)")
        fn = c.execute("SELECT trigger_functions[1]::text FROM perf.incremental_views").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            w.execute(f"CREATE TRIGGER t AFTER INSERT ON mine REFERENCING NEW TABLE AS __ivm_new "
                      f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}")
        rd = connect(user=reader)
        assert rd.execute("SELECT perf.fresh('app.v')").fetchone()[0] == 1
        assert rd.execute("SELECT g, n, s FROM app.v").fetchall() == [(1, 2, 15)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            w.execute("SELECT perf.refresh_incremental('app.v')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            rd.execute("SELECT perf.drop_incremental_view('app.v')")
    finally:
        c.execute("RESET ROLE")
        c.execute("DROP SCHEMA IF EXISTS app CASCADE")
        c.execute("DELETE FROM perf.incremental_views")
        for r in (owner, writer, reader):
            c.execute(f"DROP OWNED BY {r} CASCADE")
            c.execute(f"DROP ROLE {r}")


UNSUPPORTED = [
    ("SELECT g, sum(x) OVER () FROM src", "window functions"),
    ("SELECT DISTINCT g FROM src", "DISTINCT"),
    ("SELECT g, count(*) FROM src GROUP BY g HAVING count(*) > 1", "HAVING"),
    ("SELECT g, count(*) FROM src WHERE x IN (SELECT x FROM src) GROUP BY g", "subqueries"),
    ("SELECT g, x FROM src", "no aggregates"),
    ("SELECT count(*) FROM src", "no GROUP BY"),
    ("SELECT g, count(*) FROM src WHERE random() < 0.5 GROUP BY g", "volatile"),
    ("SELECT g, count(*) FROM src WHERE ts < now() GROUP BY g", "volatile"),
    ("SELECT a.g, count(*) FROM src a LEFT JOIN src b ON a.id = b.id GROUP BY a.g", "joins"),
    ("SELECT g, count(DISTINCT x) FROM src GROUP BY g", "DISTINCT inside"),
    ("SELECT g, count(*) FILTER (WHERE x > 1) FROM src GROUP BY g", "FILTER"),
    ("SELECT g, string_agg(h, ',') FROM src GROUP BY g", "not supported: only count"),
    ("SELECT g, sum(x) + 1 AS s FROM src GROUP BY g", "neither a GROUP BY"),
    ("SELECT count(*) FROM src GROUP BY g", "must also be in the select list"),
    ("SELECT g, count(*) FROM src GROUP BY g ORDER BY g", "ORDER BY"),
    ("SELECT g, count(*) FROM srcv GROUP BY g", "not a view"),
    ("SELECT g, count(*) FROM src GROUP BY ROLLUP (g)", "GROUPING SETS"),
    ("SELECT g, count(*) FROM src GROUP BY g UNION SELECT 1, 1", "UNION"),
]


@pytest.mark.parametrize("query,why", UNSUPPORTED)
def test_unsupported_queries_refused_with_reason_and_hint(connect, query, why):
    c = connect()
    c.execute(SRC.replace("z  float8", "z float8, ts timestamptz"))
    c.execute("CREATE VIEW srcv AS SELECT * FROM src")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        c.execute("SELECT perf.create_incremental_view('bad', %s)", (query,))
    assert why in e.value.diag.message_primary, e.value.diag.message_primary
    assert "perf.manage_matview" in (e.value.diag.message_hint or "")
    assert c.execute("SELECT to_regclass('bad')").fetchone()[0] is None


def test_bad_input(connect):
    c = connect()
    c.execute(SRC)
    c.execute("CREATE TEMP TABLE tmp (g int, x int)")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        c.execute("SELECT perf.create_incremental_view('v', 'SELECT g, count(*) FROM tmp GROUP BY g')")
    assert "temporary" in e.value.diag.message_primary
    with pytest.raises(psycopg.errors.UndefinedTable):
        c.execute("SELECT perf.create_incremental_view('v', 'SELECT g, count(*) FROM nope GROUP BY g')")
    c.execute("CREATE TABLE taken (a int)")
    with pytest.raises(psycopg.errors.DuplicateTable):
        c.execute("SELECT perf.create_incremental_view('taken', 'SELECT g, count(*) FROM src GROUP BY g')")
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        c.execute("SELECT perf.create_incremental_view(NULL, 'SELECT g, count(*) FROM src GROUP BY g')")
    with pytest.raises(psycopg.errors.SyntaxError):
        c.execute("SELECT perf.create_incremental_view('v', 'SELEC g')")
    with pytest.raises(psycopg.errors.DuplicateColumn):
        c.execute("SELECT perf.create_incremental_view('v', 'SELECT g, count(*), count(x) FROM src GROUP BY g')")
    with pytest.raises(psycopg.errors.WrongObjectType):
        c.execute("SELECT perf.drop_incremental_view('taken')")
    with pytest.raises(psycopg.errors.WrongObjectType):
        c.execute("SELECT perf.refresh_incremental('taken')")
    with pytest.raises(psycopg.errors.UndefinedTable):
        c.execute("SELECT perf.refresh_incremental('missing')")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        c.execute("SELECT perf.create_incremental_view('v', 'SELECT g, count(*) AS n FROM src GROUP BY g', "
                  "schedule => 'whenever')")
    assert c.execute("SELECT count(*) FROM perf.incremental_views").fetchone()[0] == 0
    assert c.execute("SELECT to_regclass('v')").fetchone()[0] is None


def test_helpers_keep_the_source_and_view_from_being_broken(connect, fresh_db):
    c = connect()
    c.execute(SRC)
    c.execute("SELECT perf.create_incremental_view('v', 'SELECT g, sum(x) AS s FROM src GROUP BY g', schedule => NULL)")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        c.execute("ALTER TABLE src DROP COLUMN x")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        c.execute("DROP TABLE v")
    c.execute("ALTER TABLE src DROP COLUMN z")  # a column the view does not read
    c.execute("INSERT INTO src (g, x) VALUES (1, 2)")
    assert c.execute("SELECT perf.fresh('v')").fetchone()[0] == 1
    assert c.execute("SELECT g, s FROM v").fetchall() == [(1, 2)]
    c.execute("SELECT perf.drop_incremental_view('v')")
    assert c.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'src'::regclass").fetchone()[0] == 0


def test_drop_cascade_removes_catalog_row_and_job(connect, fresh_db):
    """DROP TABLE of the view (CASCADE) or of its source leaves no catalog row and no job."""
    c = connect()
    c.execute(SRC)
    c.execute("SELECT perf.create_incremental_view('v', 'SELECT g, sum(x) AS s FROM src GROUP BY g')")
    job = c.execute("SELECT job FROM perf.incremental_views WHERE view = 'v'::regclass").fetchone()[0]
    assert job and c.execute("SELECT count(*) FROM perf.jobs WHERE name = %s", (job,)).fetchone()[0] == 1
    c.execute("DROP TABLE v CASCADE")
    assert c.execute("SELECT count(*) FROM perf.incremental_views").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM perf.jobs WHERE name = %s", (job,)).fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'src'::regclass").fetchone()[0] == 0
    c.execute("INSERT INTO src (g, x) VALUES (1, 2)")  # writers are not broken
    c.execute("SELECT perf.create_incremental_view('v2', 'SELECT g, count(*) AS n FROM src GROUP BY g')")
    c.execute("DROP TABLE src CASCADE")
    assert c.execute("SELECT count(*) FROM perf.incremental_views").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM perf.jobs WHERE name LIKE 'incremental view %'").fetchone()[0] == 0
