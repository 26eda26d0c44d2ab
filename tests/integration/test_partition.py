"""Partition sets as real clients see them, several sessions at a time (issue #14):
- a populated table converted while another client keeps inserting: every row intact
  (count and checksum before/after), progress visible from a third session, NOTICEs;
- maintenance (premake, drain of the default partition, retention) running again and again
  while clients insert (some rows into the default partition) and run long SELECTs: it
  never fails, never deadlocks, and no row is lost.

Time is injected with perf.partition_now (a session setting), so "time passes" in
milliseconds.
"""

import threading
import time

import psycopg

ROWS = 100_000


def test_convert_populated_table_while_inserting(connect):
    setup = connect()
    setup.execute(
        "CREATE TABLE events (id bigserial, at timestamptz NOT NULL, kind text, v int,"
        " PRIMARY KEY (id, at))"
    )
    setup.execute("CREATE INDEX events_kind_idx ON events (kind)")
    setup.execute(
        "INSERT INTO events (at, kind, v) SELECT '2024-01-01'::timestamptz + g * interval '1 minute',"
        " 'k' || (g % 7), g FROM generate_series(1, " + str(ROWS) + ") g"
    )
    count_before, sum_before, max_before = setup.execute(
        "SELECT count(*), sum(hashtext(e::text)), max(id) FROM events e"
    ).fetchone()
    assert count_before == ROWS

    stop = threading.Event()
    inserted = []
    insert_errors = []

    def inserter():
        c = connect()
        while not stop.is_set():
            try:
                (i,) = c.execute(
                    "INSERT INTO events (at, kind, v) VALUES (now(), 'live', 1) RETURNING id"
                ).fetchone()
                inserted.append(i)
            except psycopg.Error as e:  # pragma: no cover - reported below
                insert_errors.append(str(e))
            time.sleep(0.002)

    progress = []

    def watcher():
        c = connect()
        while not stop.is_set():
            for row in c.execute(
                "SELECT phase, rows_done, rows_total, partitions_done FROM perf.partition_progress"
            ).fetchall():
                progress.append(row)
            time.sleep(0.005)

    threads = [threading.Thread(target=inserter), threading.Thread(target=watcher)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    conv = connect()
    notices = []
    conv.add_notice_handler(lambda d: notices.append(d.message_primary))
    conv.execute("SET perf.partition_batch_rows = 5000")
    conv.execute("SET perf.partition_notice_interval = 100")
    try:
        rows = conv.execute(
            "SELECT action, object, detail FROM perf.partition_table('events', 'at', '1 week')"
        ).fetchall()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()

    assert not insert_errors, insert_errors[:3]
    assert any(a == "convert" for a, _, _ in rows), rows
    check = connect()
    assert check.execute("SELECT relkind FROM pg_class WHERE oid = 'events'::regclass").fetchone()[0] == "p"
    count_after, sum_old_after = check.execute(
        "SELECT count(*), sum(hashtext(e::text)) FILTER (WHERE id <= %s) FROM events e", (max_before,)
    ).fetchone()
    assert sum_old_after == sum_before
    assert count_after == ROWS + len(inserted)
    assert len(inserted) > 0
    got = {r[0] for r in check.execute("SELECT id FROM events WHERE id > %s", (max_before,)).fetchall()}
    assert got == set(inserted)
    # Nothing left in the default partition but what belongs nowhere else.
    (in_default,) = check.execute(
        "SELECT coalesce(sum(rows_in_default), 0) FROM perf.partitions WHERE parent = 'events'::regclass"
    ).fetchone()
    assert in_default == 0
    # Indexes under their old names.
    idx = {r[0] for r in check.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'events'::regclass")}
    assert idx == {"events_pkey", "events_kind_idx"}
    # Progress was visible from another session while it ran, and NOTICEs were sent.
    phases = {p for p, *_ in progress}
    assert "moving rows" in phases, phases
    assert any(total >= ROWS and 0 < done <= total for p, done, total, _ in progress if p == "moving rows")
    assert any("rows moved" in n for n in notices), notices
    # Finished: no progress row left.
    assert check.execute("SELECT count(*) FROM perf.partition_progress").fetchone()[0] == 0


def test_maintenance_concurrent_with_inserts_and_long_selects(connect):
    setup = connect()
    setup.execute("SET perf.partition_now = '2024-03-01 00:00+00'")
    setup.execute("CREATE TABLE m (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at)")
    setup.execute("CREATE INDEX ON m (at)")
    setup.execute(
        "SELECT count(*) FROM perf.partition_table('m', 'at', '1 day', premake => 2, retention => '20 days',"
        " retention_mode => 'detach')"
    )

    stop = threading.Event()
    errors = []
    inserted = [0]
    lock = threading.Lock()

    def inserter(offset_days):
        c = connect()
        n = 0
        while not stop.is_set():
            try:
                # Rows spread over 30 days: most land in the default partition first.
                c.execute(
                    "INSERT INTO m SELECT '2024-03-01'::timestamptz + ((%s + g) %% 30) * interval '1 day'"
                    " + g * interval '1 minute', g FROM generate_series(1, 50) g",
                    (offset_days + n,),
                )
                with lock:
                    inserted[0] += 50
                n += 1
            except psycopg.Error as e:
                errors.append(("insert", str(e)))
            time.sleep(0.005)

    def reader():
        c = connect()
        while not stop.is_set():
            try:
                with c.transaction():
                    c.execute("SELECT count(*), pg_sleep(0.3) FROM m")
            except psycopg.Error as e:
                errors.append(("select", str(e)))
            time.sleep(0.01)

    threads = [threading.Thread(target=inserter, args=(k,)) for k in (0, 11)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    maint = connect()
    maint.execute("SET perf.partition_lock_timeout = 100")
    runs = 0
    actions = {}
    try:
        for day in range(0, 40, 2):
            maint.execute(
                "SELECT set_config('perf.partition_now', ('2024-03-01 00:00+00'::timestamptz + %s * interval '1 day')::text, false)",
                (day,),
            )
            for (action,) in maint.execute("SELECT action FROM perf.partition_maintenance('m')").fetchall():
                actions[action] = actions.get(action, 0) + 1
            runs += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert runs == 20
    assert actions.get("create", 0) > 0 and actions.get("drain", 0) > 0 and actions.get("detach", 0) > 0, actions

    # Every row is in the parent or in a partition retention detached.
    check = connect()
    (in_set,) = check.execute("SELECT count(*) FROM m").fetchone()
    (detached,) = check.execute(
        "SELECT coalesce(sum(n), 0) FROM (SELECT (xpath('/row/c/text()', query_to_xml("
        "format('SELECT count(*) AS c FROM %s', k.oid::regclass), false, true, '')))[1]::text::bigint AS n"
        " FROM pg_class k WHERE k.relname ~ '^m_p[0-9]{8}$' AND NOT k.relispartition) s"
    ).fetchone()
    assert in_set + detached == inserted[0]
