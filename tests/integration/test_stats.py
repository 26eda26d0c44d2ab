"""Statement capture as real clients see it: counts under concurrency, eviction, restart
persistence, latency percentiles, and why_slow's rules on crafted slow queries."""

import math
import os
import struct
import threading

import psycopg
import pytest

from conftest import PORT, cluster, dsn


def stats_for(c, like):
    return c.execute(
        "SELECT queryid, query, calls, rows, errors, toplevel, p50_exec_time, p95_exec_time, p99_exec_time "
        "FROM perf.statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query LIKE %s ORDER BY calls DESC",
        (like,),
    ).fetchall()


def test_normalized_text_and_exact_counts(connect):
    c = connect()
    c.execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
    c.execute("INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 100) g")
    for k in range(1, 11):
        c.execute(f"SELECT v FROM kv WHERE k = {k}")
    rows = stats_for(c, "SELECT v FROM kv WHERE k = %")
    assert len(rows) == 1, rows
    _, text, calls, nrows, errors, toplevel, *_ = rows[0]
    assert text == "SELECT v FROM kv WHERE k = $1"  # no constant ever reaches shared memory
    assert (calls, nrows, errors, toplevel) == (10, 10, 0, True)


def test_concurrent_clients_lose_no_counts(connect):
    setup = connect()
    setup.execute("CREATE TABLE hits (id int PRIMARY KEY)")
    setup.execute("INSERT INTO hits SELECT generate_series(1, 1000)")
    clients, per_client = 6, 400
    errors = []

    def worker(n):
        try:
            with psycopg.connect(dsn(setup.info.dbname), autocommit=True) as c:
                for i in range(per_client):
                    c.execute("SELECT id FROM hits WHERE id = %s", (1 + (n * per_client + i) % 1000,))
                    # a second, distinct statement per client, interleaved
                    c.execute(f"SELECT count(*) FROM hits WHERE id < {n + 2}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = stats_for(setup, "SELECT id FROM hits WHERE id = $1")
    assert rows[0][2] == clients * per_client
    assert rows[0][3] == clients * per_client
    counts = stats_for(setup, "SELECT count(*) FROM hits WHERE id < $1")
    assert counts[0][2] == clients * per_client


def test_nested_statements_and_errors(connect):
    c = connect()
    c.execute("CREATE TABLE t (x int)")
    c.execute(
        "CREATE FUNCTION f(n int) RETURNS int LANGUAGE plpgsql AS $$ "
        "BEGIN INSERT INTO t SELECT generate_series(1, n); RETURN (SELECT count(*) FROM t); END $$"
    )
    c.execute("SET perf.track = 'all'")
    for _ in range(3):
        c.execute("SELECT f(4)")
    nested = stats_for(c, "INSERT INTO t SELECT generate_series(%")
    assert nested and not nested[0][5], nested  # recorded with toplevel = false
    assert nested[0][2] == 3 and nested[0][3] == 12
    c.execute("SET perf.track = 'top'")
    before = stats_for(c, "INSERT INTO t SELECT generate_series(%")[0][2]
    c.execute("SELECT f(1)")
    assert stats_for(c, "INSERT INTO t SELECT generate_series(%")[0][2] == before
    # failures are counted, not timed
    for _ in range(2):
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1 / (x - x) FROM t LIMIT 1")
    failed = stats_for(c, "SELECT $1 / (x - x) FROM t LIMIT $2")
    assert failed and failed[0][4] == 2 and failed[0][2] == 0


def test_disabled_records_nothing(connect):
    c = connect()
    c.execute("SET perf.enabled = off")
    c.execute("SELECT 424242 AS marker_disabled")
    c.execute("SET perf.enabled = on")
    assert not stats_for(c, "SELECT $1 AS marker_disabled")


def test_percentiles_within_one_bucket(connect):
    c = connect()
    for _ in range(90):
        c.execute("SELECT pg_sleep(0.002)")
    for _ in range(10):
        c.execute("SELECT pg_sleep(0.040)")
    _, _, calls, _, _, _, p50, p95, p99 = stats_for(c, "SELECT pg_sleep($1)")[0]
    assert calls == 100
    bucket = math.sqrt(2)
    # true p50 is one 2 ms sleep (plus overhead), true p95/p99 one 40 ms sleep
    assert 2.0 / bucket <= p50 <= 3.5 * bucket, p50
    assert 40.0 / bucket <= p95 <= 48.0 * bucket, p95
    assert 40.0 / bucket <= p99 <= 48.0 * bucket, p99


def findings(c, queryid):
    return {r[0]: r for r in c.execute("SELECT finding, severity, node, detail, suggestion FROM perf.why_slow(%s)", (queryid,))}


def run_and_explain(c, sql, like, times=2):
    for _ in range(times):
        c.execute(sql)
    rows = stats_for(c, like)
    assert rows, f"{like} not recorded"
    return findings(c, rows[0][0])


@pytest.fixture
def slow_db(connect):
    c = connect()
    c.execute("SET perf.slow_query_ms = 0")
    c.execute("SET perf.plan_sample_rate = 1")
    c.execute("SET max_parallel_workers_per_gather = 0")
    c.execute(
        "CREATE TABLE orders AS SELECT g AS id, CASE WHEN g % 200 = 0 THEN 'failed' ELSE 'ok' END AS status, "
        "g % 1000 AS customer_id, md5(g::text) AS note FROM generate_series(1, 120000) g"
    )
    c.execute("CREATE TABLE customers AS SELECT g AS id, 'c' || g AS name FROM generate_series(1, 3000) g")
    c.execute("ANALYZE orders")
    c.execute("ANALYZE customers")
    return c


def test_why_slow_selective_seq_scan_points_to_advisor(slow_db):
    f = run_and_explain(slow_db, "SELECT count(*) FROM orders WHERE status = 'failed'",
                        "SELECT count(*) FROM orders WHERE status = $1")
    assert "seq_scan_selective_filter" in f, f
    assert "perf.suggest_indexes()" in f["seq_scan_selective_filter"][4]
    assert "status" in f["seq_scan_selective_filter"][4]


def test_why_slow_sort_spill(slow_db):
    slow_db.execute("SET work_mem = '64kB'")
    f = run_and_explain(slow_db, "SELECT * FROM orders ORDER BY note LIMIT 1 OFFSET 50000",
                        "SELECT * FROM orders ORDER BY note LIMIT $1 OFFSET $2")
    assert "sort_spilled_to_disk" in f, f
    assert "temp_spill" in f  # from the counters, even without a plan


def test_why_slow_hash_batches(slow_db):
    slow_db.execute("SET work_mem = '64kB'")
    slow_db.execute("SET enable_mergejoin = off")
    slow_db.execute("SET enable_nestloop = off")
    f = run_and_explain(slow_db, "SELECT count(*) FROM orders a JOIN orders b ON a.note = b.note",
                        "SELECT count(*) FROM orders a JOIN orders b ON a.note = b.note")
    assert "hash_spilled_to_disk" in f, f


def test_why_slow_nested_loop_inner_seq_scan(slow_db):
    slow_db.execute("SET enable_hashjoin = off")
    slow_db.execute("SET enable_mergejoin = off")
    slow_db.execute("SET enable_material = off")
    f = run_and_explain(slow_db,
                        "SELECT count(*) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id < 1200",
                        "SELECT count(*) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id < $1", times=1)
    assert "nested_loop_inner_seq_scan" in f, f


def test_why_slow_row_misestimate(slow_db):
    # correlated predicates: the planner multiplies selectivities and underestimates
    slow_db.execute("CREATE TABLE corr AS SELECT g % 100 AS a, g % 100 AS b FROM generate_series(1, 100000) g")
    slow_db.execute("ANALYZE corr")
    f = run_and_explain(slow_db, "SELECT count(*) FROM corr WHERE a = 1 AND b = 1",
                        "SELECT count(*) FROM corr WHERE a = $1 AND b = $2")
    assert "row_misestimate" in f, f


def test_why_slow_heap_fetches(slow_db):
    slow_db.execute("CREATE TABLE ios (id int, pad text)")
    slow_db.execute("INSERT INTO ios SELECT g, 'x' FROM generate_series(1, 50000) g")
    slow_db.execute("CREATE INDEX ON ios (id)")
    slow_db.execute("ANALYZE ios")
    slow_db.execute("SET enable_seqscan = off")
    slow_db.execute("SET enable_bitmapscan = off")
    f = run_and_explain(slow_db, "SELECT count(id) FROM ios WHERE id < 40000",
                        "SELECT count(id) FROM ios WHERE id < $1")
    assert "index_only_scan_heap_fetches" in f, f
    assert "VACUUM" in f["index_only_scan_heap_fetches"][4]


def test_why_slow_unknown_queryid_is_an_error(connect):
    c = connect()
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        c.execute("SELECT * FROM perf.why_slow(1)")
    assert "perf.slow_queries()" in e.value.diag.message_hint


def test_slow_plan_keeps_parameters(slow_db):
    with slow_db.cursor() as cur:
        for _ in range(2):
            cur.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (42,), prepare=True)
    plan = slow_db.execute(
        "SELECT p.params, p.analyzed, p.plan->'Plan'->>'Node Type' FROM perf.slow_plans() p "
        "JOIN perf.statements s USING (queryid) WHERE s.query LIKE 'SELECT count(*) FROM orders WHERE customer_id = $1'"
    ).fetchone()
    assert plan is not None
    assert "$1 = '42'" in plan[0]
    assert plan[1] is True
    assert plan[2] == "Aggregate"


def test_predicates_feed_the_advisor(slow_db):
    slow_db.execute("SELECT count(*) FROM orders WHERE status = 'failed' AND customer_id > 10")
    rows = slow_db.execute(
        "SELECT columns, operator_classes, kind FROM perf.predicate_stats WHERE relation = 'orders'::regclass"
    ).fetchall()
    assert ("customer_id, status", "range, equality", "filter") in rows, rows


def test_eviction_keeps_server_and_recent_statements(fresh_db):
    """More distinct statements than perf.max_statements: the table stays bounded, evicts,
    and keeps working (IN lists of different lengths have different query ids)."""
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute("ALTER SYSTEM SET perf.max_statements = 100")
    cluster("restart", "test", str(PORT))
    try:
        with psycopg.connect(dsn(fresh_db), autocommit=True) as c:
            c.execute("SELECT perf.reset_stats()")
            cap = c.execute("SELECT max_entries FROM perf.stats_info()").fetchone()[0]
            assert 100 <= cap < 200
            for n in range(1, 401):
                c.execute("SELECT 1 WHERE 1 IN (" + ",".join(["1"] * n) + ")")
            entries, max_entries, evictions, _ = c.execute("SELECT * FROM perf.stats_info()").fetchone()
            assert entries <= max_entries
            assert evictions > 0
            # the statement just run is there, with its count
            c.execute("SELECT 1 WHERE 1 IN (" + ",".join(["1"] * 400) + ")")
            last = c.execute(
                "SELECT calls FROM perf.statements WHERE query LIKE 'SELECT $1 WHERE $2 IN (%%' "
                "ORDER BY last_seen DESC LIMIT 1").fetchone()
            assert last is not None and last[0] >= 1
    finally:
        with psycopg.connect(dsn(), autocommit=True) as c:
            c.execute("ALTER SYSTEM RESET perf.max_statements")
        cluster("restart", "test", str(PORT))


def test_statistics_survive_clean_restart(connect, fresh_db):
    c = connect()
    for _ in range(7):
        c.execute("SELECT 777 AS survives_restart")
    before = stats_for(c, "SELECT $1 AS survives_restart")
    c.close()
    cluster("restart", "test", str(PORT))
    with psycopg.connect(dsn(fresh_db), autocommit=True) as c2:
        after = stats_for(c2, "SELECT $1 AS survives_restart")
    assert after == before


STATS_FILE_MAGIC = 0x50475046  # "PGPF", little-endian in the file


def test_stats_file_has_header_and_foreign_one_is_ignored(connect, fresh_db):
    """The stats file written at a clean shutdown starts with a header (magic, pg_perf
    format version, PostgreSQL major); a file whose header does not match this build is
    ignored with a LOG line at startup (statistics start empty), never a failed start."""
    c = connect()
    for _ in range(3):
        c.execute("SELECT 4242 AS header_probe")
    datadir = c.execute("SHOW data_directory").fetchone()[0]
    major = int(c.execute("SHOW server_version_num").fetchone()[0]) // 10000
    c.close()
    path = os.path.join(datadir, "pg_stat", "pg_perf.stat")
    log = os.path.join(datadir, "server.log")
    cluster("stop", "test", str(PORT))
    try:
        with open(path, "rb") as f:
            data = bytearray(f.read())
        magic, fmt, pg_major = struct.unpack_from("<IQI", data, 0)
        assert magic == STATS_FILE_MAGIC
        assert pg_major == major
        # Another pg_perf file format: must be ignored, not misread.
        struct.pack_into("<Q", data, 4, fmt ^ 0xFF)
        with open(path, "wb") as f:
            f.write(data)
        log_size = os.path.getsize(log)
    finally:
        cluster("start", "test", str(PORT))
    with psycopg.connect(dsn(fresh_db), autocommit=True) as c2:
        assert stats_for(c2, "SELECT $1 AS header_probe") == []
    with open(log, "rb") as f:
        f.seek(log_size)
        assert b"pg_perf: ignoring pg_stat/pg_perf.stat: file format" in f.read()
    assert not os.path.exists(path)


def test_why_slow_filter_removes_rows_after_index_scan(slow_db):
    slow_db.execute("CREATE INDEX ON orders (customer_id)")
    slow_db.execute("ANALYZE orders")
    slow_db.execute("SET enable_seqscan = off")
    f = run_and_explain(slow_db, "SELECT count(*) FROM orders WHERE customer_id < 30 AND note LIKE 'ab%'",
                        "SELECT count(*) FROM orders WHERE customer_id < $1 AND note LIKE $2")
    assert "filter_removes_rows" in f, f
    assert f["filter_removes_rows"][1] == "warning"


def test_track_planning_records_plan_time(fresh_db):
    """perf.track_planning needs a restart (the planner hook is only installed when on)."""
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute("ALTER SYSTEM SET perf.track_planning = on")
    cluster("restart", "test", str(PORT))
    try:
        with psycopg.connect(dsn(fresh_db), autocommit=True) as c:
            for _ in range(3):
                c.execute("SELECT count(*) FROM pg_class WHERE relname = 'planned_marker'")
            plans, plan_time, calls = c.execute(
                "SELECT plans, total_plan_time, calls FROM perf.statements "
                "WHERE query = 'SELECT count(*) FROM pg_class WHERE relname = $1'").fetchone()
            assert (plans, calls) == (3, 3)
            assert plan_time > 0
    finally:
        with psycopg.connect(dsn(), autocommit=True) as c:
            c.execute("ALTER SYSTEM RESET perf.track_planning")
        cluster("restart", "test", str(PORT))
