"""perf.metrics() read by a real Prometheus parser, and perf.health() flagging problems made on
purpose by other sessions: an idle-in-transaction session, a low buffer cache hit ratio, a long
transaction, an invalid index."""

import threading
import time

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import dsn

# Every family the issue names, by the name a dashboard queries (prometheus_client strips a
# counter's _total suffix from the family name).
EXPECTED = {
    "pg_up": "gauge",
    "pg_stat_database_xact_commit": "counter",
    "pg_stat_database_blks_hit": "counter",
    "pg_perf_buffer_cache_hit_ratio": "gauge",
    "pg_stat_activity_count": "gauge",
    "pg_stat_activity_max_tx_duration": "gauge",
    "pg_settings_max_connections": "gauge",
    "pg_perf_connections_used_ratio": "gauge",
    "pg_replication_is_replica": "gauge",
    "pg_replication_lag_seconds": "gauge",
    "pg_perf_database_frozen_xid_age": "gauge",
    "pg_perf_database_min_multixact_age": "gauge",
    "pg_database_size_bytes": "gauge",
    "pg_locks_count": "gauge",
    "pg_stat_bgwriter_checkpoints_timed": "counter",
    "pg_perf_wal_bytes": "counter",
    "pg_perf_table_bloat_bytes": "gauge",
    "pg_perf_index_bloat_bytes": "gauge",
    "pg_perf_cache_hits": "counter",
    "pg_perf_cache_hit_ratio": "gauge",
    "pg_perf_statement_calls": "counter",
    "pg_perf_statement_slow_calls": "counter",
    "pg_perf_statement_exec_seconds": "counter",
    "pg_perf_statement_p99_seconds": "gauge",
    "pg_perf_statement_duration_seconds": "histogram",
}


def scrape(c):
    text = c.execute("SELECT perf.metrics()").fetchone()[0]
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_parse_and_cover_every_family(connect):
    c = connect()
    c.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    c.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 20000) g")
    c.execute("CREATE INDEX t_v ON t (v)")
    c.execute("UPDATE t SET v = v + 1 WHERE id % 2 = 0")  # dead rows and index bloat
    c.execute("ANALYZE t")
    c.execute("SELECT pg_stat_force_next_flush()")  # table counters reach shared stats now
    for i in range(50):
        c.execute(f"SELECT v FROM t WHERE id = {i}")
    c.execute("SELECT perf.cache_track('t')")
    c.execute("SELECT perf.cached_json('SELECT count(*) FROM t')")
    c.execute("SELECT perf.cached_json('SELECT count(*) FROM t')")
    text, fams = scrape(c)
    missing = {n for n in EXPECTED if n not in fams}
    assert not missing, missing
    wrong = {n: fams[n].type for n, t in EXPECTED.items() if fams[n].type != t}
    assert not wrong, wrong
    # pg_perf's own counters are spelled *_total in the text itself.
    assert "\npg_perf_statement_calls_total{" in text
    assert "\npg_perf_cache_hits_total " in text

    db = c.info.dbname
    calls = {s.labels["datname"]: s.value for s in fams["pg_perf_statement_calls"].samples}
    assert calls[db] >= 50
    hist = [s for s in fams["pg_perf_statement_duration_seconds"].samples if s.labels.get("datname") == db]
    buckets = [s for s in hist if s.name.endswith("_bucket")]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts), "cumulative bucket counts must not decrease"
    assert buckets[-1].labels["le"] == "+Inf"
    count = next(s.value for s in hist if s.name.endswith("_count"))
    assert count == buckets[-1].value
    assert count == pytest.approx(calls[db])
    bloat = {s.labels["relname"] for s in fams["pg_perf_table_bloat_bytes"].samples}
    assert "t" in bloat
    hits = fams["pg_perf_cache_hits"].samples[0].value
    assert hits >= 1


def test_metrics_as_a_plain_role(connect):
    c = connect()
    c.execute("DROP ROLE IF EXISTS metrics_reader")
    c.execute("CREATE ROLE metrics_reader LOGIN")
    c.execute("GRANT perf_reader TO metrics_reader")
    try:
        with psycopg.connect(dsn(c.info.dbname, user="metrics_reader"), autocommit=True) as r:
            text, fams = scrape(r)
            assert "pg_up" in fams and "pg_perf_statement_calls" in fams
            assert "<insufficient privilege>" not in text  # no statement text at all
    finally:
        c.execute("DROP ROLE metrics_reader")


def health(c):
    return {r[0]: r[1:] for r in c.execute(
        "SELECT check_name, status, value, threshold, advice FROM perf.health()").fetchall()}


def test_health_is_ok_on_a_quiet_database(connect):
    c = connect()
    h = health(c)
    for check in ("connection_utilization", "long_transaction", "xid_wraparound", "invalid_indexes"):
        assert h[check][0] == "ok", (check, h[check])
    assert {s for s, *_ in h.values()} <= {"ok", "warn", "critical"}


def test_health_flags_an_idle_in_transaction_session(connect):
    c = connect()
    idle = connect()
    idle.execute("BEGIN")
    idle.execute("SELECT 1")
    time.sleep(1.2)
    c.execute("SET perf.health_idle_in_transaction_warn_s = 1")
    c.execute("SET perf.health_idle_in_transaction_critical_s = 3600")
    status, value, threshold, advice = health(c)["idle_in_transaction"]
    assert status == "warn" and value >= 1 and threshold == 1
    assert str(idle.info.backend_pid) in advice and "pg_terminate_backend" in advice
    idle.execute("ROLLBACK")
    assert health(c)["idle_in_transaction"][0] == "ok"


def test_health_flags_a_long_transaction(connect):
    c = connect()
    busy = connect()
    t = threading.Thread(target=lambda: busy.execute("SELECT pg_sleep(2.5)"))
    t.start()
    try:
        time.sleep(1.5)
        c.execute("SET perf.health_long_transaction_warn_s = 0.5")
        c.execute("SET perf.health_long_transaction_critical_s = 1")
        status, value, threshold, advice = health(c)["long_transaction"]
        assert status == "critical" and value >= 1 and threshold == 1, (status, value, threshold)
        assert str(busy.info.backend_pid) in advice
    finally:
        t.join()


def test_health_flags_a_low_cache_hit_ratio(connect):
    c = connect()
    c.execute("CREATE TABLE big (id int, pad text)")
    c.execute("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
    c.execute("SELECT count(*) FROM big")
    value = health(c)["cache_hit_ratio"][1]
    assert value is not None and 0 < value < 1
    # Thresholds set just above what was measured: the same ratio must now be judged low.
    c.execute(f"SET perf.health_cache_hit_ratio_warn = {min(1.0, value + 0.02)}")
    c.execute(f"SET perf.health_cache_hit_ratio_critical = {min(1.0, value + 0.01)}")
    status, _, threshold, advice = health(c)["cache_hit_ratio"]
    assert status == "critical" and threshold == pytest.approx(min(1.0, value + 0.01))
    assert "shared_buffers" in advice


def test_health_flags_an_invalid_index(connect):
    c = connect()
    c.execute("CREATE TABLE dup (v int)")
    c.execute("INSERT INTO dup VALUES (1), (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        c.execute("CREATE UNIQUE INDEX CONCURRENTLY dup_v ON dup (v)")
    status, value, _, advice = health(c)["invalid_indexes"]
    assert status == "critical" and value >= 1 and "dup_v" in advice
    c.execute("DROP INDEX dup_v")


def metric_names_in(text):
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def test_grafana_dashboard_uses_only_exported_names(connect):
    import json
    import os
    import re

    from conftest import REPO

    c = connect()
    c.execute("SELECT 1")
    exported = metric_names_in(scrape(c)[0])
    # Families with samples only when there is something to report (a primary with standbys,
    # tables with dead rows); test_metrics_parse_and_cover_every_family sees the bloat one.
    optional = {"pg_perf_replication_replay_lag_seconds", "pg_perf_table_bloat_bytes"}
    with open(os.path.join(REPO, "contrib", "grafana", "pg_perf.json")) as f:
        dash = json.load(f)
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(pg_[a-z0-9_]+)", target["expr"]))
    assert used, "the dashboard queries nothing"
    unknown = used - exported - optional
    assert not unknown, unknown


def test_postgres_exporter_queries_run_and_match_metrics_names(connect):
    import os

    import yaml

    from conftest import REPO

    c = connect()
    c.execute("SELECT 1")
    exported = metric_names_in(scrape(c)[0])
    with open(os.path.join(REPO, "contrib", "postgres_exporter", "queries.yaml")) as f:
        spec = yaml.safe_load(f)
    assert {"pg_perf_statement", "pg_perf_cache", "pg_perf_health"} <= set(spec)
    for namespace, q in spec.items():
        cur = c.execute(q["query"])
        columns = [d.name for d in cur.description]
        rows = cur.fetchall()
        declared = [next(iter(m)) for m in q["metrics"]]
        assert columns == declared, (namespace, columns, declared)
        assert rows, f"{namespace} returned no rows"
        for m in q["metrics"]:
            (col, spec_col), = m.items()
            if spec_col["usage"] == "LABEL" or namespace == "pg_perf_health":
                continue
            name = f"{namespace}_{col}"
            assert name in exported, f"{name} (postgres_exporter) is not what perf.metrics() calls it"


def test_health_and_metrics_flag_a_failing_job(connect):
    c = connect()
    c.execute("SELECT perf.schedule('always_fails', '1 second', 'SELECT 1/0')")
    deadline = time.monotonic() + 20
    failures = 0
    while time.monotonic() < deadline and failures < 2:
        failures = c.execute(
            "SELECT consecutive_failures FROM perf.jobs_status WHERE name = 'always_fails'").fetchone()[0]
        time.sleep(0.2)
    assert failures >= 2, "the scheduler did not run the job twice within 20 s"
    c.execute("SELECT perf.alter_job('always_fails', enabled => false)")
    c.execute("SET perf.health_failing_jobs_warn = 1")
    c.execute("SET perf.health_failing_jobs_critical = 100")
    status, value, threshold, advice = health(c)["failing_jobs"]
    assert status == "warn" and value >= 2 and threshold == 1, (status, value)
    assert "always_fails" in advice and "22012" in advice
    _, fams = scrape(c)
    fails = {s.labels["job"]: s.value for s in fams["pg_perf_job_consecutive_failures"].samples}
    assert fails["always_fails"] >= 2
    runs = {(s.labels["job"], s.labels["status"]): s.value for s in fams["pg_perf_job_runs"].samples}
    assert runs[("always_fails", "failed")] >= 2


def test_health_and_metrics_flag_rows_in_a_default_partition(connect):
    c = connect()
    c.execute("CREATE TABLE ev (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at)")
    c.execute("SELECT count(*) FROM perf.partition_table('ev', 'at', '1 day', premake => 2)")
    assert health(c)["default_partition_rows"][0] == "ok"
    c.execute("INSERT INTO ev SELECT now() + interval '40 days', g FROM generate_series(1, 5) g")
    status, value, threshold, advice = health(c)["default_partition_rows"]
    assert status == "warn" and value == 5 and threshold == 1, (status, value)
    assert "partition_maintenance('public.ev')" in advice
    _, fams = scrape(c)
    rows = {s.labels["parent"]: s.value for s in fams["pg_perf_partition_default_rows"].samples}
    assert rows["ev"] == 5
    c.execute("SELECT count(*) FROM perf.partition_maintenance('ev')")
    assert health(c)["default_partition_rows"][0] == "ok"


def test_health_and_metrics_flag_a_stale_matview(connect):
    """A managed view whose source changed and that is not refreshed in time (here: a long
    min_interval) is stale: metrics show its age, health warns past the threshold."""
    c = connect()
    c.execute("CREATE TABLE mt (id int)")
    c.execute("CREATE MATERIALIZED VIEW mtv AS SELECT count(*) AS n FROM mt")
    c.execute("SELECT perf.manage_matview('mtv', min_interval => '1 hour')")
    deadline = time.monotonic() + 30
    while c.execute("SELECT refreshes FROM perf.matview_status WHERE view = 'mtv'::regclass").fetchone()[0] < 1:
        assert time.monotonic() < deadline, "the first refresh did not happen"
        time.sleep(0.2)
    assert health(c)["stale_matviews"][0] == "ok"
    c.execute("INSERT INTO mt VALUES (1)")
    time.sleep(1.2)
    c.execute("SET perf.health_matview_stale_warn_s = 1")
    status, value, threshold, advice = health(c)["stale_matviews"]
    assert status == "warn" and value >= 1 and threshold == 1, (status, value)
    assert "mtv" in advice
    _, fams = scrape(c)
    stale = {s.labels["view"]: s.value for s in fams["pg_perf_matview_stale"].samples}
    age = {s.labels["view"]: s.value for s in fams["pg_perf_matview_stale_seconds"].samples}
    assert stale["mtv"] == 1 and age["mtv"] >= 1
    c.execute("SELECT perf.unmanage_matview('mtv')")
