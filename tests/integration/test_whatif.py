"""The what-if planner (perf.whatif, perf.whatif_index_size) against real indexes: costs
and sizes of hypothetical btree / multicolumn / partial / expression / INCLUDE indexes
compared with the same indexes actually built, hiding existing indexes, partitions, bad
input, and that hypothetical indexes never leak into normal planning."""

import json

import psycopg
import pytest

ROWS = 200_000


@pytest.fixture
def shop(connect):
    c = connect()
    c.execute("SET max_parallel_workers_per_gather = 0")
    # ANALYZE samples 300 x target rows: with 1000 it reads all 200k, so statistics (and
    # so hypothetical and real plan costs) do not depend on which rows a sample picked.
    c.execute("SET default_statistics_target = 1000")
    c.execute(
        "CREATE TABLE orders AS SELECT g AS id, g % 4000 AS customer_id, "
        "CASE WHEN g % 250 = 0 THEN 'failed' ELSE 'ok' END AS status, "
        "'User' || g || '@Example.com' AS email, "
        "timestamptz '2024-01-01' + g * interval '1 minute' AS created_at, "
        f"(g * 37) % 10000 AS total FROM generate_series(1, {ROWS}) g"
    )
    c.execute("ALTER TABLE orders ADD PRIMARY KEY (id)")
    c.execute("VACUUM ANALYZE orders")
    return c


def explain_cost(c, query):
    plan = c.execute("EXPLAIN (FORMAT JSON) " + query).fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return plan[0]["Plan"]["Total Cost"]


def whatif(c, query, indexes, hide=()):
    return c.execute(
        "SELECT cost_before, cost_after, indexes_used, plan_after FROM perf.whatif(%s, %s, %s)",
        (query, list(indexes), list(hide)),
    ).fetchone()


CASES = [
    ("btree", "CREATE INDEX ON orders (customer_id)",
     "SELECT * FROM orders WHERE customer_id = 42"),
    ("multicolumn", "CREATE INDEX ON orders (customer_id, created_at DESC)",
     "SELECT * FROM orders WHERE customer_id = 42 ORDER BY created_at DESC LIMIT 10"),
    ("partial", "CREATE INDEX ON orders (created_at) WHERE status = 'failed'",
     "SELECT id, created_at FROM orders WHERE status = 'failed' AND created_at > '2024-03-01'"),
    ("expression", "CREATE INDEX ON orders (lower(email))",
     "SELECT id FROM orders WHERE lower(email) = 'user77@example.com'"),
    ("include", "CREATE INDEX ON orders (customer_id) INCLUDE (total)",
     "SELECT customer_id, total FROM orders WHERE customer_id BETWEEN 10 AND 20"),
]


@pytest.mark.parametrize("kind,index,query", CASES, ids=[c[0] for c in CASES])
def test_hypothetical_cost_matches_real_index(shop, kind, index, query):
    """The plan cost with a hypothetical index is within 10% of the cost with the same index
    really built (and the table re-analyzed, as it would be in production)."""
    before, hypothetical, used, plan = whatif(shop, query, [index])
    assert used, f"{kind}: hypothetical index not used:\n{plan}"
    assert hypothetical < before
    shop.execute(index.replace("CREATE INDEX ON", "CREATE INDEX real_idx ON"))
    shop.execute("ANALYZE orders")
    real = explain_cost(shop, query)
    assert abs(hypothetical - real) <= 0.10 * real, f"{kind}: hypothetical {hypothetical} vs real {real}"


SIZE_CASES = [
    "CREATE INDEX ON orders (customer_id)",
    "CREATE INDEX ON orders (customer_id, created_at)",
    "CREATE INDEX ON orders (email)",
    "CREATE INDEX ON orders (created_at) WHERE status = 'failed'",
    "CREATE INDEX ON orders (customer_id) INCLUDE (total, status)",
]


@pytest.mark.parametrize("index", SIZE_CASES)
def test_estimated_size_within_30_percent(shop, index):
    est_bytes = shop.execute("SELECT bytes FROM perf.whatif_index_size(%s)", (index,)).fetchone()[0]
    shop.execute(index.replace("CREATE INDEX ON", "CREATE INDEX sized_idx ON"))
    real = shop.execute("SELECT pg_relation_size('sized_idx')").fetchone()[0]
    assert abs(est_bytes - real) <= 0.30 * real, f"estimated {est_bytes} vs built {real}"


def test_hiding_an_existing_index_models_dropping_it(shop):
    before, after, used, plan = whatif(shop, "SELECT total FROM orders WHERE id = 5", [], ["orders_pkey"])
    assert used == []
    assert after > 100 * before, plan  # without the primary key: a sequential scan
    assert "orders_pkey" in shop.execute("EXPLAIN SELECT total FROM orders WHERE id = 5").fetchall()[0][0]


def test_generic_plan_for_normalized_queries(shop):
    """Normalized statement texts ($n parameters, as perf.statements shows them) plan as
    generic plans."""
    _, _, used, plan = whatif(shop, "SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2",
                              ["CREATE INDEX ON orders (customer_id, created_at DESC)"])
    assert used == ["orders_customer_id_created_at_idx"]
    assert "$1" in plan


def test_partitioned_table_uses_hypothetical_index_on_partitions(connect):
    c = connect()
    c.execute("CREATE TABLE events (id int, day date, kind int) PARTITION BY RANGE (day)")
    c.execute("CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    c.execute("CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    c.execute("INSERT INTO events SELECT g, date '2024-01-01' + g % 700, g % 1000 FROM generate_series(1, 100000) g")
    c.execute("ANALYZE events")
    before, after, used, plan = whatif(c, "SELECT * FROM events WHERE kind = 7", ["CREATE INDEX ON events (kind)"])
    assert after < before / 5, plan
    assert used and plan.count("<hypothetical>") == 2, plan  # one index scan per partition


def test_hypothetical_indexes_never_leak(shop):
    """Neither after a session nor after an error inside one does normal planning see a
    hypothetical index."""
    q = "SELECT * FROM orders WHERE customer_id = 42"
    whatif(shop, q, ["CREATE INDEX ON orders (customer_id)"])
    assert "hypothetical" not in "\n".join(r[0] for r in shop.execute("EXPLAIN " + q).fetchall())
    # an error while the session is active (the query fails to plan)
    with pytest.raises(psycopg.errors.UndefinedColumn):
        whatif(shop, "SELECT nope FROM orders", ["CREATE INDEX ON orders (customer_id)"])
    plan = "\n".join(r[0] for r in shop.execute("EXPLAIN " + q).fetchall())
    assert "hypothetical" not in plan and "Seq Scan" in plan
    # and inside an explicit transaction that continues after a savepoint rollback
    with shop.transaction():
        shop.execute("SAVEPOINT s")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            whatif(shop, "SELECT nope FROM orders", ["CREATE INDEX ON orders (customer_id)"])
        shop.execute("ROLLBACK TO SAVEPOINT s")
        plan = "\n".join(r[0] for r in shop.execute("EXPLAIN " + q).fetchall())
        assert "hypothetical" not in plan


BAD = [
    ("DDL query", "DROP TABLE orders", [], psycopg.errors.InvalidParameterValue),
    ("syntax error", "SELEC 1", [], psycopg.errors.SyntaxError),
    ("two statements", "SELECT 1; SELECT 2", [], psycopg.errors.InvalidParameterValue),
    ("index not CREATE INDEX", "SELECT 1", ["SELECT 2"], psycopg.errors.InvalidParameterValue),
    ("unknown table", "SELECT 1", ["CREATE INDEX ON no_such_table (x)"], psycopg.errors.UndefinedTable),
    # CREATE INDEX's own SQLSTATE (42703), as for every refusal of a hypothetical index
    ("unknown column", "SELECT 1", ["CREATE INDEX ON orders (no_such_column)"], psycopg.errors.UndefinedColumn),
    ("unknown index to hide", "SELECT 1", [], psycopg.errors.InvalidParameterValue),
]


@pytest.mark.parametrize("what,query,indexes,error", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clean_error(shop, what, query, indexes, error):
    hide = ["no_such_index"] if what == "unknown index to hide" else []
    with pytest.raises(error):
        whatif(shop, query, indexes, hide)
    assert shop.execute("SELECT 1").fetchone()[0] == 1


def test_other_sessions_temp_table_is_refused(connect):
    """CREATE INDEX refuses other sessions' temporary tables (0A000); so does what-if."""
    owner = connect()
    owner.execute("CREATE TEMP TABLE scratch AS SELECT g AS v FROM generate_series(1, 100) g")
    schema = owner.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = 'scratch'::regclass"
    ).fetchone()[0]
    other = connect()
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        whatif(other, "SELECT 1", [f"CREATE INDEX ON {schema}.scratch (v)"])
    assert "temporary tables of other sessions" in str(e.value)
    # the owner itself may
    assert whatif(owner, "SELECT * FROM scratch WHERE v = 5", ["CREATE INDEX ON scratch (v)"])
