"""Managed materialized views with the scheduler's worker running: refresh on change within
min_interval + 1 s, no refresh without changes, views on views in dependency order, plain
refresh without a unique index, failures with SQLSTATE and retries, drop/unmanage clean-up,
restarts, and bad input."""

import time

import psycopg
from conftest import cluster, dsn, wait_for, PORT


def status(c, view):
    cur = c.execute("SELECT * FROM perf.matview_status WHERE view = %s::regclass", (view,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row))


def refreshes(c, view):
    s = status(c, view)
    return s["refreshes"] if s else None


def runs(c, view):
    return c.execute(
        """SELECT r.trigger, r.status, r.sqlstate, r.started_at, r.finished_at
             FROM perf.job_runs r JOIN perf.matviews m USING (jobid)
            WHERE m.view = %s::regclass ORDER BY r.runid""",
        (view,),
    ).fetchall()


def setup_source(c):
    c.execute("CREATE TABLE t (id int PRIMARY KEY, g int NOT NULL, v int NOT NULL)")
    c.execute("INSERT INTO t SELECT i, i % 5, i FROM generate_series(1, 100) i")


def manage(c, view, **kw):
    args = ", ".join(f"{k} => %({k})s" for k in kw)
    c.execute(f"SELECT perf.manage_matview(%(v)s{', ' + args if args else ''})", {"v": view, **kw})


def test_insert_refreshes_within_min_interval_plus_1s(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT g, sum(v) AS s FROM t GROUP BY g")
    c.execute("CREATE UNIQUE INDEX ON mv (g)")
    manage(c, "mv", min_interval="1 second")
    # A managed view counts as stale until pg_perf refreshed it once.
    wait_for(lambda: refreshes(c, "mv") == 1)
    st = status(c, "mv")
    assert st["mode"] == "concurrent" and st["stale"] is False and st["changes_since"] == 0
    for k in range(3):
        c.execute("INSERT INTO t VALUES (%s, 1, 1000000)", (1000 + k,))
        t0 = time.monotonic()
        want = 1000000 * (k + 1)
        wait_for(lambda: c.execute("SELECT s FROM mv WHERE g = 1").fetchone()[0] > want, timeout=5)
        assert time.monotonic() - t0 < 2.0
    # The run is recorded as finished just after the refresh commits.
    st = wait_for(lambda: (s := status(c, "mv")) and not s["refreshing"] and s)
    assert st["last_status"] == "succeeded" and st["last_sqlstate"] is None
    assert all(r[0] == "change" and r[1] == "succeeded" for r in runs(c, "mv")), runs(c, "mv")


def test_min_interval_is_respected(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t")
    manage(c, "mv", min_interval="3 seconds")
    wait_for(lambda: refreshes(c, "mv") == 1)
    last = status(c, "mv")["last_refresh"]
    c.execute("INSERT INTO t VALUES (1000, 1, 1)")
    st = status(c, "mv")
    assert st["stale"] is True and st["changes_since"] == 1
    wait_for(lambda: refreshes(c, "mv") == 2, timeout=6)
    st = status(c, "mv")
    gap = (st["last_refresh"] - last).total_seconds()
    assert 3.0 <= gap < 4.5, gap
    assert c.execute("SELECT n FROM mv").fetchone()[0] == 101


def test_no_refresh_without_changes(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE TABLE other (x int)")
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t")
    manage(c, "mv", min_interval="0 seconds", max_staleness="1 second", schedule="1 second")
    wait_for(lambda: refreshes(c, "mv") == 1)
    # Writes elsewhere, a rolled-back write and reads of the source change nothing.
    c.execute("INSERT INTO other VALUES (1)")
    with c.transaction():
        c.execute("INSERT INTO t VALUES (1000, 1, 1)")
        raise psycopg.Rollback()
    c.execute("SELECT count(*) FROM t")
    time.sleep(3)
    assert refreshes(c, "mv") == 1
    assert len(runs(c, "mv")) == 1
    st = status(c, "mv")
    assert st["stale"] is False and st["changes_since"] == 0 and st["next_refresh"] is None


def test_schedule_and_max_staleness_batch_changes(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW sched AS SELECT count(*) AS n FROM t")
    c.execute("CREATE MATERIALIZED VIEW stale AS SELECT count(*) AS n FROM t")
    manage(c, "sched", on_change=False, schedule="3 seconds")
    manage(c, "stale", on_change=False, max_staleness="2 seconds")
    wait_for(lambda: refreshes(c, "sched") == 1 and refreshes(c, "stale") == 1)
    c.execute("INSERT INTO t VALUES (1000, 1, 1)")
    t0 = time.monotonic()
    time.sleep(0.5)
    # Not on change: both wait (for the next slot, for the change to be 2 s old).
    assert refreshes(c, "sched") == 1 and refreshes(c, "stale") == 1
    st = status(c, "stale")
    assert st["stale"] is True and st["next_refresh"] is not None
    wait_for(lambda: refreshes(c, "stale") == 2, timeout=4)
    assert 1.8 <= time.monotonic() - t0 < 3.2
    wait_for(lambda: refreshes(c, "sched") == 2, timeout=5)
    assert time.monotonic() - t0 < 4.2
    assert [r[0] for r in runs(c, "sched")][-1] == "schedule"
    # Slots pass without changes: nothing more.
    time.sleep(3.5)
    assert refreshes(c, "sched") == 2 and refreshes(c, "stale") == 2


def test_view_on_view_refreshes_after_its_source(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW a AS SELECT g, sum(v) AS s FROM t GROUP BY g")
    # b reads a and t: a change of t makes both stale, but b must wait for a.
    c.execute(
        "CREATE MATERIALIZED VIEW b AS SELECT sum(a.s) AS total, (SELECT count(*) FROM t) AS n FROM a"
    )
    # Managed in the "wrong" order on purpose.
    manage(c, "b", min_interval="0 seconds")
    manage(c, "a", min_interval="0 seconds")
    # b was managed before a: re-manage it so a counts as a managed source (a leaf).
    manage(c, "b", min_interval="0 seconds")
    wait_for(lambda: refreshes(c, "a") >= 1 and refreshes(c, "b") >= 1 and not status(c, "b")["stale"]
             and not status(c, "a")["stale"])
    time.sleep(0.5)
    na, nb = refreshes(c, "a"), refreshes(c, "b")
    c.execute("INSERT INTO t VALUES (1000, 1, 1000000)")
    wait_for(lambda: c.execute("SELECT total FROM b").fetchone()[0] == 5050 + 1000000, timeout=5)
    assert c.execute("SELECT n FROM b").fetchone()[0] == 101
    wait_for(lambda: not status(c, "a")["refreshing"] and not status(c, "b")["refreshing"])
    time.sleep(0.5)
    # Exactly one refresh each, b's after a's.
    assert refreshes(c, "a") == na + 1
    assert refreshes(c, "b") == nb + 1
    ra, rb = runs(c, "a")[-1], runs(c, "b")[-1]
    assert rb[3] >= ra[4], (ra, rb)
    srcs = c.execute(
        "SELECT source::regclass::text FROM perf.matview_sources WHERE view = 'b'::regclass ORDER BY 1"
    ).fetchall()
    assert srcs == [("a",), ("t",)]
    # A manual REFRESH of a counts as a change for b.
    nb = refreshes(c, "b")
    c.execute("REFRESH MATERIALIZED VIEW a")
    wait_for(lambda: refreshes(c, "b") == nb + 1, timeout=3)


def test_partitioned_source_and_new_partitions(connect):
    c = connect()
    c.execute("CREATE TABLE p (k int NOT NULL, v int NOT NULL) PARTITION BY RANGE (k)")
    c.execute("CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100)")
    c.execute("INSERT INTO p SELECT i, i FROM generate_series(0, 99) i")
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n, sum(v) AS s FROM p")
    manage(c, "mv", min_interval="0 seconds")
    wait_for(lambda: refreshes(c, "mv") == 1)
    c.execute("INSERT INTO p1 VALUES (5, 5)")  # straight into the partition
    wait_for(lambda: c.execute("SELECT n FROM mv").fetchone()[0] == 101, timeout=2)
    c.execute("CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200)")
    wait_for(lambda: not status(c, "mv")["stale"] and not status(c, "mv")["refreshing"])
    # The new partition was given the tracking trigger: writes to it are seen, and once
    # refreshed the view is not refreshed again.
    assert status(c, "mv")["untracked_sources"] == 0
    c.execute("INSERT INTO p2 VALUES (150, 1)")
    wait_for(lambda: c.execute("SELECT n FROM mv").fetchone()[0] == 102, timeout=2)
    wait_for(lambda: not status(c, "mv")["refreshing"])
    n = refreshes(c, "mv")
    time.sleep(1.5)
    assert refreshes(c, "mv") == n


def test_plain_refresh_without_unique_index(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT g, v FROM t WHERE v > 50")
    c.execute("CREATE UNIQUE INDEX ON mv (v) WHERE v > 60")  # partial: not usable
    manage(c, "mv", min_interval="0 seconds")
    wait_for(lambda: refreshes(c, "mv") == 1)
    st = status(c, "mv")
    assert st["mode"] == "plain"
    assert "no unique index" in st["mode_reason"]
    c.execute("INSERT INTO t VALUES (1000, 1, 1000)")
    wait_for(lambda: c.execute("SELECT count(*) FROM mv").fetchone()[0] == 51, timeout=3)
    assert c.execute("SELECT last_mode FROM perf.matviews").fetchone()[0] == "plain"
    # A usable index switches to CONCURRENTLY.
    c.execute("CREATE UNIQUE INDEX ON mv (g, v)")
    assert status(c, "mv")["mode"] == "concurrent"
    c.execute("INSERT INTO t VALUES (1001, 1, 1001)")
    wait_for(lambda: c.execute("SELECT count(*) FROM mv").fetchone()[0] == 52, timeout=3)
    assert c.execute("SELECT last_mode FROM perf.matviews").fetchone()[0] == "concurrent"


def test_refresh_runs_as_the_view_owner(connect):
    c = connect()
    role = "mv_owner_" + str(PORT)
    c.execute(f"DROP ROLE IF EXISTS {role}")
    c.execute(f"CREATE ROLE {role}")
    try:
        setup_source(c)
        c.execute(f"ALTER TABLE t OWNER TO {role}")
        c.execute("CREATE MATERIALIZED VIEW mv AS SELECT current_user::text AS who, count(*) AS n FROM t")
        c.execute(f"ALTER MATERIALIZED VIEW mv OWNER TO {role}")
        manage(c, "mv", min_interval="0 seconds")
        wait_for(lambda: refreshes(c, "mv") == 1)
        assert c.execute("SELECT who FROM mv").fetchone()[0] == role
        c.execute("DROP MATERIALIZED VIEW mv")
        c.execute("DROP TABLE t")
    finally:
        c.execute(f"DROP ROLE IF EXISTS {role}")


def test_owner_without_superuser_manages_and_drops(connect, fresh_db):
    c = connect()
    role = "mv_user_" + str(PORT)
    c.execute(f"DROP ROLE IF EXISTS {role}")
    c.execute(f"CREATE ROLE {role} LOGIN")
    c.execute(f"GRANT perf_admin TO {role}")  # managing views is an admin call
    try:
        c.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
        with psycopg.connect(dsn(fresh_db, user=role), autocommit=True) as u:
            setup_source(u)
            u.execute("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t")
            manage(u, "mv", min_interval="0 seconds")
            wait_for(lambda: refreshes(u, "mv") == 1)
            u.execute("INSERT INTO t VALUES (1000, 1, 1)")
            wait_for(lambda: u.execute("SELECT n FROM mv").fetchone()[0] == 101, timeout=2)
            u.execute("SELECT perf.alter_job('matview:mv', backoff => '2 seconds')")
            u.execute("DROP MATERIALIZED VIEW mv")
            assert u.execute("SELECT count(*) FROM perf.jobs").fetchone()[0] == 0
            u.execute("DROP TABLE t")
        assert c.execute("SELECT count(*) FROM perf.matviews").fetchone()[0] == 0
        c.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}")
    finally:
        c.execute(f"DROP ROLE IF EXISTS {role}")


def test_failure_recorded_and_retried_with_backoff(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT sum(100 / v) AS x FROM t")
    manage(c, "mv", min_interval="0 seconds")
    wait_for(lambda: refreshes(c, "mv") == 1)
    c.execute("SELECT perf.alter_job(job, backoff => '1 second') FROM perf.matview_status")
    c.execute("INSERT INTO t VALUES (1000, 1, 0)")
    st = wait_for(lambda: (s := status(c, "mv")) and s["last_sqlstate"] == "22012" and s)
    assert "division by zero" in st["last_error"] and st["stale"] is True
    # Retried (trigger 'retry') with backoff while the view stays stale.
    wait_for(lambda: any(r[0] == "retry" and r[1] == "failed" for r in runs(c, "mv")), timeout=6)
    fails = [r for r in runs(c, "mv") if r[1] == "failed"]
    gaps = [(b[3] - a[4]).total_seconds() for a, b in zip(fails, fails[1:])]
    assert all(g >= 0.9 for g in gaps), gaps
    c.execute("DELETE FROM t WHERE v = 0")
    wait_for(lambda: status(c, "mv")["last_status"] == "succeeded", timeout=10)
    assert refreshes(c, "mv") == 2


def test_drop_and_unmanage_clean_up(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW a AS SELECT count(*) AS n FROM t")
    c.execute("CREATE MATERIALIZED VIEW b AS SELECT sum(v) AS s FROM t")
    manage(c, "a")
    manage(c, "b")
    assert c.execute("SELECT count(*) FROM perf.jobs WHERE kind = 'matview_refresh'").fetchone()[0] == 2
    c.execute("DROP MATERIALIZED VIEW a")
    assert c.execute("SELECT count(*) FROM perf.matviews").fetchone()[0] == 1
    assert c.execute("SELECT count(*) FROM perf.jobs").fetchone()[0] == 1
    c.execute("SELECT perf.unmanage_matview('b')")
    assert c.execute("SELECT count(*) FROM perf.matviews").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM perf.matview_sources").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM perf.jobs").fetchone()[0] == 0
    # Dropping the source (and the view with it) also cleans up.
    manage(c, "b")
    c.execute("DROP TABLE t CASCADE")
    assert c.execute("SELECT count(*) FROM perf.matviews").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM perf.jobs").fetchone()[0] == 0


def sqlstate_of(c, sql, params=None):
    try:
        c.execute(sql, params)
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_hint
    return None, None


def test_bad_input_is_refused_and_creates_nothing(connect):
    c = connect()
    setup_source(c)
    c.execute("CREATE VIEW v AS SELECT * FROM t")
    c.execute("CREATE TEMP TABLE tmp (x int)")
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT g, v FROM t")
    cases = [
        ("SELECT perf.manage_matview('t')", "42809"),
        ("SELECT perf.manage_matview('v')", "42809"),
        ("SELECT perf.manage_matview('tmp')", "42809"),
        ("SELECT perf.manage_matview('nope')", "42P01"),
        ("SELECT perf.manage_matview(NULL)", "22004"),
        ("SELECT perf.manage_matview('mv', concurrently => true)", "55000"),
        ("SELECT perf.manage_matview('mv', on_change => false)", "22023"),
        ("SELECT perf.manage_matview('mv', schedule => 'every blue moon')", "22023"),
        ("SELECT perf.manage_matview('mv', min_interval => '-1 second')", "22023"),
        ("SELECT perf.manage_matview('mv', max_staleness => '0 seconds')", "22023"),
        ("SELECT perf.unmanage_matview('mv')", "42704"),
        ("SELECT perf.schedule('x', '@daily', '1', kind => 'matview_refresh')", "22023"),
    ]
    for sql, want in cases:
        state, hint = sqlstate_of(c, sql)
        assert state == want, (sql, state)
        assert hint or want == "42P01", sql
    assert c.execute("SELECT count(*) FROM perf.matviews").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM perf.jobs").fetchone()[0] == 0
    # A role that does not own the view may not manage it.
    role = "mv_stranger_" + str(PORT)
    c.execute(f"DROP ROLE IF EXISTS {role}")
    c.execute(f"CREATE ROLE {role}")
    try:
        c.execute(f"GRANT SELECT ON mv TO {role}")
        c.execute(f"SET ROLE {role}")
        assert sqlstate_of(c, "SELECT perf.manage_matview('mv')")[0] == "42501"
        c.execute("RESET ROLE")
        c.execute(f"REVOKE ALL ON mv FROM {role}")
    finally:
        c.execute("RESET ROLE")
        c.execute(f"DROP ROLE IF EXISTS {role}")
    # With the unique index, concurrently => true is accepted.
    c.execute("CREATE UNIQUE INDEX ON mv (g, v)")
    manage(c, "mv", concurrently=True)
    wait_for(lambda: refreshes(c, "mv") == 1)
    assert status(c, "mv")["mode"] == "concurrent"


def test_restart_counts_as_one_change(connect, fresh_db):
    c = connect()
    setup_source(c)
    c.execute("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t")
    manage(c, "mv", min_interval="0 seconds")
    wait_for(lambda: refreshes(c, "mv") == 1)
    c.close()
    cluster("restart", "test", str(PORT))
    c = psycopg.connect(dsn(fresh_db), autocommit=True)
    try:
        wait_for(lambda: refreshes(c, "mv") == 2, timeout=20)
        time.sleep(2)
        assert refreshes(c, "mv") == 2
        assert status(c, "mv")["changes_since"] == 0
        c.execute("INSERT INTO t VALUES (1000, 1, 1)")
        wait_for(lambda: refreshes(c, "mv") == 3, timeout=5)
    finally:
        c.close()
