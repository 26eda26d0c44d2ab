"""pg_perf on a real hot standby: a primary and a streaming replica made with pg_basebackup on
this machine, both preloaded with pg_perf. What runs read-only must work on the standby (statement
capture, why_slow, the what-if planner and the advisor), and what would write or go stale must not:
the result cache bypasses during recovery, so a reader on the standby never sees a result older
than what the standby has replayed."""

import os
import shutil
import subprocess
import time

import psycopg
import pytest

from conftest import PORT, REPO, cluster
from test_metrics import scrape

PRIMARY_PORT = PORT + 20
STANDBY_PORT = PORT + 21
PERF_ROOT = os.environ.get("PERF_ROOT", "/var/tmp/pg_perf")
PG_CONFIG = os.environ.get("PG_CONFIG", "/usr/lib/postgresql/15/bin/pg_config")
DB = "standby_it"


def bindir():
    return subprocess.run([PG_CONFIG, "--bindir"], check=True, capture_output=True, text=True).stdout.strip()


def as_postgres(*cmd):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def connect(port, dbname=DB):
    return psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={dbname}", autocommit=True)


def wait_for_replay(primary, standby, timeout=30.0):
    """Waits until the standby has replayed everything the primary had written when called."""
    target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]
        if done:
            return
        time.sleep(0.05)
    raise AssertionError(f"standby did not replay up to {target} within {timeout} s")


@pytest.fixture(scope="module")
def pair():
    """(primary, standby) connections to the test database on a fresh streaming pair."""
    for name, port in (("standby-replica", STANDBY_PORT), ("standby-primary", PRIMARY_PORT)):
        cluster("stop", name, str(port))
        shutil.rmtree(os.path.join(PERF_ROOT, name), ignore_errors=True)
    cluster("start", "standby-primary", str(PRIMARY_PORT))
    with connect(PRIMARY_PORT, "postgres") as c:
        c.execute(f"CREATE DATABASE {DB}")
    with connect(PRIMARY_PORT) as c:
        c.execute("CREATE EXTENSION pg_perf")
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, customer int, total numeric)")
        c.execute("INSERT INTO orders SELECT g, g % 5000, g FROM generate_series(1, 200000) g")
        c.execute("ANALYZE orders")
    replica = os.path.join(PERF_ROOT, "standby-replica")
    as_postgres(os.path.join(bindir(), "pg_basebackup"), "-h", "127.0.0.1", "-p", str(PRIMARY_PORT),
                "-U", "postgres", "-D", replica, "-R", "-X", "stream", "-c", "fast", "--no-sync")
    cluster("start", "standby-replica", str(STANDBY_PORT))
    primary, standby = connect(PRIMARY_PORT), connect(STANDBY_PORT)
    assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    wait_for_replay(primary, standby)
    yield primary, standby
    primary.close()
    standby.close()
    for name, port in (("standby-replica", STANDBY_PORT), ("standby-primary", PRIMARY_PORT)):
        cluster("stop", name, str(port))
        shutil.rmtree(os.path.join(PERF_ROOT, name), ignore_errors=True)


def test_statements_are_captured_on_the_standby(pair):
    _, standby = pair
    for customer in range(1, 21):
        standby.execute(f"SELECT count(*) FROM orders WHERE customer = {customer}")
    row = standby.execute(
        "SELECT calls, rows FROM perf.statements "
        "WHERE query = 'SELECT count(*) FROM orders WHERE customer = $1'"
    ).fetchone()
    assert row == (20, 20)


def test_query_ids_match_core_on_the_standby(pair):
    _, standby = pair
    standby.execute("SET compute_query_id = on")
    standby.execute("SELECT total FROM orders WHERE id = 7")
    ours = standby.execute(
        "SELECT queryid FROM perf.statements WHERE query = 'SELECT total FROM orders WHERE id = $1'"
    ).fetchone()[0]
    core = standby.execute(
        "EXPLAIN (VERBOSE, FORMAT JSON) SELECT total FROM orders WHERE id = 7"
    ).fetchone()[0][0]["Query Identifier"]
    assert ours == core


def test_why_slow_explains_a_slow_statement_on_the_standby(pair):
    _, standby = pair
    standby.execute("SET perf.slow_query_ms = 0")
    standby.execute("SELECT sum(total) FROM orders WHERE customer = 42")
    qid = standby.execute(
        "SELECT queryid FROM perf.statements WHERE query = 'SELECT sum(total) FROM orders WHERE customer = $1'"
    ).fetchone()[0]
    findings = standby.execute("SELECT finding, detail FROM perf.why_slow(%s)", (qid,)).fetchall()
    assert findings, "why_slow found nothing for a sequential scan filtered on an unindexed column"
    assert any("customer" in detail for _, detail in findings), findings


def test_whatif_and_advisor_run_read_only_on_the_standby(pair):
    _, standby = pair
    before, after, used = standby.execute(
        "SELECT cost_before, cost_after, indexes_used FROM perf.whatif("
        "'SELECT * FROM orders WHERE customer = 42', ARRAY['CREATE INDEX ON orders (customer)'])"
    ).fetchone()
    assert after < before / 10 and len(used) == 1
    ddl = [r[0] for r in standby.execute(
        "SELECT index_ddl FROM perf.suggest_indexes(ARRAY['SELECT * FROM orders WHERE customer = 42'])"
    ).fetchall()]
    assert any("customer" in d for d in ddl), ddl
    # Nothing was created: the standby cannot write, and the primary never saw it.
    assert standby.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'").fetchone()[0] == 1


def test_cache_bypasses_during_recovery_and_never_serves_stale_rows(pair):
    primary, standby = pair
    query = "SELECT count(*) AS n FROM orders WHERE customer = 7"
    first = standby.execute("SELECT perf.cached_json(%s)", (query,)).fetchone()[0]
    assert first == [{"n": 40}]
    primary.execute("INSERT INTO orders VALUES (900001, 7, 1), (900002, 7, 1)")
    wait_for_replay(primary, standby)
    second = standby.execute("SELECT perf.cached_json(%s)", (query,)).fetchone()[0]
    assert second == [{"n": 42}]
    stored = standby.execute("SELECT count(*) FROM perf.cache_entries()").fetchone()[0]
    assert stored == 0, "the cache stored an entry on a standby, where no commit can invalidate it"
    refusals = dict(standby.execute("SELECT reason, count FROM perf.cache_refusals()").fetchall())
    assert refusals.get("recovery", 0) >= 2, refusals


def test_metrics_and_health_on_both_sides(pair):
    primary, standby = pair
    _, on_standby = scrape(standby)
    assert on_standby["pg_replication_is_replica"].samples[0].value == 1
    assert "pg_replication_lag_seconds" in on_standby
    _, on_primary = scrape(primary)
    assert on_primary["pg_replication_is_replica"].samples[0].value == 0
    diff = on_primary["pg_stat_replication_pg_wal_lsn_diff"].samples
    assert len(diff) == 1 and diff[0].value >= 0, diff
    assert "pg_perf_replication_replay_lag_seconds" in on_primary
    for side in (primary, standby):
        checks = dict(side.execute("SELECT check_name, status FROM perf.health()").fetchall())
        assert checks["replication_lag"] == "ok", checks
        assert set(checks.values()) <= {"ok", "warn", "critical"}


def test_scheduler_stays_idle_on_the_standby(pair):
    primary, standby = pair
    kinds = {r[0] for r in standby.execute(
        "SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'pg_perf%'").fetchall()}
    assert not kinds, f"pg_perf background workers run on a standby: {kinds}"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        standby.execute("SELECT perf.schedule('x', '1 minute', 'SELECT 1')")
    # The primary's scheduler runs (it has pg_perf installed in this database).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kinds = {r[0] for r in primary.execute(
            "SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'pg_perf%'").fetchall()}
        if "pg_perf scheduler" in kinds:
            break
        time.sleep(0.1)
    assert "pg_perf launcher" in kinds and "pg_perf scheduler" in kinds, kinds


def test_standby_keeps_its_statistics_across_a_restart(pair):
    # Last in this file: the restart ends the module's standby connection.
    _, standby = pair
    standby.execute("SELECT id FROM orders WHERE id = 1 AND customer = 1")
    cluster("restart", "standby-replica", str(STANDBY_PORT))
    with connect(STANDBY_PORT) as again:
        calls = again.execute(
            "SELECT calls FROM perf.statements WHERE query = 'SELECT id FROM orders WHERE id = $1 AND customer = $2'"
        ).fetchone()
        assert calls == (1,)
        assert again.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def test_promoted_standby_starts_its_scheduler():
    # After the restart test: the module's connections are gone, so connect afresh.
    with connect(STANDBY_PORT) as standby:
        assert standby.execute("SELECT pg_promote(wait => true)").fetchone()[0]
        deadline = time.monotonic() + 15
        kinds = set()
        while time.monotonic() < deadline and "pg_perf scheduler" not in kinds:
            kinds = {r[0] for r in standby.execute(
                "SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'pg_perf%'").fetchall()}
            time.sleep(0.1)
        assert "pg_perf scheduler" in kinds, kinds
        jobid = standby.execute("SELECT perf.schedule('after_promotion', '1 minute', 'SELECT 1')").fetchone()[0]
        assert jobid > 0
