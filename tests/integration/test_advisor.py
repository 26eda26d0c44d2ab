"""perf.suggest_indexes() as a DBA uses it: on captured statements or an explicit list,
proposing runnable CREATE INDEX statements (btree, multicolumn, expression, GIN), never one
an existing index already covers, within the storage budget, plus drop candidates."""

import psycopg
import pytest


@pytest.fixture
def shop(connect):
    c = connect()
    c.execute("SET default_statistics_target = 1000")
    c.execute(
        "CREATE TABLE orders AS SELECT g AS id, g % 5000 AS customer_id, "
        "CASE WHEN g % 300 = 0 THEN 'failed' ELSE 'ok' END AS status, "
        "'User' || g || '@Example.com' AS email, "
        "timestamptz '2024-01-01' + g * interval '1 minute' AS created_at, "
        "jsonb_build_object('source', CASE WHEN g % 97 = 0 THEN 'partner' ELSE 'web' END, 'n', g) AS payload "
        "FROM generate_series(1, 150000) g"
    )
    c.execute("ALTER TABLE orders ADD PRIMARY KEY (id)")
    c.execute("VACUUM ANALYZE orders")
    return c


def suggestions(c, queries=None):
    rows = c.execute(
        "SELECT action, index_ddl, estimated_size, workload_cost_before, workload_cost_after, "
        "improvement_pct, queries_helped FROM perf.suggest_indexes(%s)",
        (queries,),
    ).fetchall()
    return rows


def creates(rows):
    return [r for r in rows if r[0] == "create"]


def test_selective_filter_gets_an_index_that_really_helps(shop):
    rows = creates(suggestions(shop, ["SELECT * FROM orders WHERE customer_id = 42"]))
    assert rows, "no suggestion for a selective filter on an unindexed column"
    ddl = rows[0][1]
    assert ddl.startswith("CREATE INDEX CONCURRENTLY") and "(customer_id" in ddl
    before, after = rows[0][3], rows[0][4]
    assert after < before * 0.2
    # the DDL runs as is, and the planner then uses the index
    shop.execute(ddl)
    plan = "\n".join(r[0] for r in shop.execute("EXPLAIN SELECT * FROM orders WHERE customer_id = 42").fetchall())
    assert "Index" in plan and "orders_customer_id" in plan, plan


def test_expression_and_gin_candidates(shop):
    rows = creates(suggestions(shop, [
        "SELECT id FROM orders WHERE lower(email) = 'user5@example.com'",
        "SELECT count(*) FROM orders WHERE payload @> '{\"source\": \"partner\"}'",
    ]))
    ddls = " ".join(r[1] for r in rows)
    assert "lower(email)" in ddls, ddls
    assert "USING gin" in ddls and "payload" in ddls, ddls


def test_multicolumn_for_filter_plus_order_by_limit(shop):
    rows = creates(suggestions(shop, [
        "SELECT * FROM orders WHERE customer_id = 7 ORDER BY created_at DESC LIMIT 10",
    ]))
    assert any("(customer_id, created_at" in r[1] for r in rows), [r[1] for r in rows]


def test_no_suggestion_covered_by_an_existing_index(shop):
    shop.execute("CREATE INDEX existing_cust_created ON orders (customer_id, created_at)")
    shop.execute("ANALYZE orders")
    rows = creates(suggestions(shop, ["SELECT * FROM orders WHERE customer_id = 42"]))
    assert not any("(customer_id)" in r[1] or "(customer_id, created_at)" in r[1] for r in rows), rows


def test_captured_workload_and_queries_helped(shop):
    shop.execute("SELECT perf.reset_stats()")
    for k in range(5):
        shop.execute(f"SELECT * FROM orders WHERE customer_id = {k}")
    rows = creates(suggestions(shop))
    assert rows
    helped = [h for r in rows for h in r[6]]
    texts = {h["query"] for h in helped}
    assert "SELECT * FROM orders WHERE customer_id = $1" in texts, texts
    h = next(h for h in helped if h["query"] == "SELECT * FROM orders WHERE customer_id = $1")
    assert h["calls"] == 5 and h["queryid"] != 0 and h["cost_after"] < h["cost_before"]


def test_storage_budget_is_respected(shop):
    queries = [
        "SELECT * FROM orders WHERE customer_id = 42",
        "SELECT id FROM orders WHERE lower(email) = 'user5@example.com'",
        "SELECT * FROM orders WHERE created_at > '2024-03-01' ORDER BY created_at LIMIT 5",
    ]
    unlimited = sum(r[2] for r in creates(suggestions(shop, queries)))
    shop.execute("SET perf.advisor_budget_mb = 2")
    limited = creates(suggestions(shop, queries))
    assert sum(r[2] for r in limited) <= 2 * 1024 * 1024
    assert sum(r[2] for r in limited) < unlimited


def test_duplicate_existing_index_is_a_drop_candidate(shop):
    shop.execute("CREATE INDEX dup_a ON orders (status)")
    shop.execute("CREATE INDEX dup_b ON orders (status)")
    rows = suggestions(shop, ["SELECT * FROM orders WHERE customer_id = 42"])
    drops = [r[1] for r in rows if r[0] == "drop"]
    assert any("dup_" in d and d.startswith("DROP INDEX CONCURRENTLY") for d in drops), drops


def test_bad_input_is_a_clean_error(shop):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        suggestions(shop, ["DROP TABLE orders"])
    with pytest.raises(psycopg.errors.SyntaxError):
        suggestions(shop, ["SELEC 1"])
    assert shop.execute("SELECT count(*) FROM orders").fetchone()[0] == 150000


def test_captured_writes_weigh_against_an_index(connect):
    """Write cost comes from the workload's own captured write statements: the same rare
    read gets an index on a read-only table but not on a table the workload keeps
    inserting into."""
    c = connect()
    for t in ("quiet", "busy"):
        c.execute(f"CREATE TABLE {t} AS SELECT g AS id, g % 1000 AS level, repeat('x', 40) AS msg "
                  "FROM generate_series(1, 60000) g")
        c.execute(f"ANALYZE {t}")
    c.execute("SELECT perf.reset_stats()")
    c.execute("SELECT * FROM quiet WHERE level = 3")
    c.execute("SELECT * FROM busy WHERE level = 3")
    for _ in range(60):
        c.execute("INSERT INTO busy SELECT g, g % 1000, 'y' FROM generate_series(1, 2000) g")
    ddls = [r[1] for r in creates(suggestions(c))]
    assert any("quiet" in d and "(level)" in d for d in ddls), ddls
    assert not any("busy" in d for d in ddls), ddls


def test_slow_statements_are_planned_with_their_captured_constants(shop):
    """A captured slow run keeps its statement text with constants; the advisor plans that
    (custom plan: the rare 'failed' status is selective) instead of the normalized text."""
    shop.execute("SELECT perf.reset_stats()")
    shop.execute("SET perf.slow_query_ms = 0")
    for _ in range(3):
        shop.execute("SELECT count(*) FROM orders WHERE status = 'failed'")
    sample = shop.execute(
        "SELECT p.sample_query FROM perf.slow_plans() p JOIN perf.statements s USING (queryid) "
        "WHERE s.query = 'SELECT count(*) FROM orders WHERE status = $1'").fetchone()
    assert sample == ("SELECT count(*) FROM orders WHERE status = 'failed'",)
    helped = [h for r in creates(suggestions(shop)) for h in r[6]]
    assert any(h["query"] == "SELECT count(*) FROM orders WHERE status = $1" and h["cost_after"] < 0.1 * h["cost_before"]
               for h in helped), helped


def notices_of(c):
    seen = []
    # A Diagnostic is only valid inside the handler: keep copies of its fields.
    c.add_notice_handler(lambda d: seen.append((d.message_primary or "", d.message_hint or "")))
    return seen


def test_typed_literal_statement_is_planned_from_the_capture(shop):
    """`timestamptz '...'` is captured as `timestamptz $1`, not valid SQL: the advisor plans
    it as `$1::timestamptz` instead of silently leaving it out."""
    shop.execute("SELECT perf.reset_stats()")
    for day in range(1, 4):
        shop.execute(
            f"SELECT count(*) FROM orders WHERE created_at >= timestamptz '2024-02-0{day}' "
            f"AND created_at < timestamptz '2024-02-0{day}' + interval '2 hours'")
    text = shop.execute("SELECT query FROM perf.statements WHERE query LIKE '%timestamptz $%'").fetchone()
    assert text and "timestamptz $1" in text[0], text
    helped = [(r[1], h) for r in creates(suggestions(shop)) for h in r[6]]
    assert any("(created_at" in ddl and "timestamptz $1" in h["query"] and h["cost_after"] < 0.2 * h["cost_before"]
               for ddl, h in helped), helped
    skipped = shop.execute("SELECT query, reason FROM perf.advisor_skipped()").fetchall()
    assert not any("timestamptz" in q for q, _ in skipped), skipped


def test_extended_protocol_statement_gets_its_index(shop):
    """An ORM sends bind parameters over the extended protocol: the captured text is the
    ORM's own `$n` text, planned generically."""
    shop.execute("SELECT perf.reset_stats()")
    for k in range(20):
        shop.execute("SELECT id, status FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT %s",
                      (k, 10))
        shop.execute("SELECT id FROM orders WHERE lower(email) = lower(%s)", (f"user{k}@example.com",))
    ddls = [r[1] for r in creates(suggestions(shop))]
    assert any("(customer_id, created_at DESC" in d or "(customer_id, created_at)" in d for d in ddls), ddls
    assert any("lower(email)" in d for d in ddls), ddls


def test_skipped_statements_are_reported(shop):
    """A captured statement the advisor cannot plan is listed with the reason, and
    perf.suggest_indexes() says how many were left out: never a silent drop."""
    shop.execute("CREATE TABLE gone (x int)")
    shop.execute("SELECT perf.reset_stats()")
    shop.execute("SELECT * FROM gone WHERE x = 1")
    shop.execute("SELECT * FROM orders WHERE customer_id = 1")
    shop.execute("DROP TABLE gone")
    skipped = shop.execute("SELECT queryid, query, calls, reason FROM perf.advisor_skipped()").fetchall()
    assert len(skipped) == 1, skipped
    queryid, query, calls, reason = skipped[0]
    assert query == "SELECT * FROM gone WHERE x = $1" and calls == 1 and queryid != 0
    assert 'relation "gone" does not exist' in reason, reason
    seen = notices_of(shop)
    rows = creates(suggestions(shop))
    assert any("(customer_id)" in r[1] for r in rows), rows
    assert any("1 of 2 captured statements were left out" in m and "perf.advisor_skipped()" in h
               for m, h in seen), seen


def index_columns(ddl):
    """(table, method, key list) of a CREATE INDEX statement rendered by the advisor."""
    import re
    m = re.search(r" ON (\S+) (?:USING (\w+) )?\((.*?)\)(?: INCLUDE| WHERE|;|$)", ddl)
    assert m, ddl
    keys = [k.strip().split(" ")[0] for k in m.group(3).split(",")]
    return m.group(1), m.group(2) or "btree", keys, " WHERE " in ddl


def test_no_redundant_pair_against_the_whatif_planner(shop):
    """Ranges on a correlated column (a BRIN candidate) next to ordered lookups on it (a
    btree): the advice never holds a BRIN beside a btree on the same leading column, nor
    an index whose keys are a prefix of another's."""
    queries = []
    for d in range(1, 10):
        queries += [
            f"SELECT count(*) FROM orders WHERE created_at BETWEEN '2024-02-0{d}' AND '2024-02-0{d} 12:00'",
            f"SELECT * FROM orders WHERE created_at > '2024-02-0{d}' ORDER BY created_at LIMIT 10",
            f"SELECT * FROM orders WHERE customer_id = {d} AND created_at > '2024-02-0{d}'",
            f"SELECT * FROM orders WHERE customer_id = {d}",
            f"SELECT id FROM orders WHERE status = 'failed' AND created_at > '2024-02-0{d}'",
        ]
    rows = creates(suggestions(shop, queries))
    assert rows
    shapes = [index_columns(r[1]) for r in rows]
    for i, (t1, m1, k1, p1) in enumerate(shapes):
        for j, (t2, m2, k2, p2) in enumerate(shapes):
            if i == j or t1 != t2:
                continue
            assert not (m1 == "brin" and m2 == "btree" and k1[0] == k2[0] and not p2), (rows[i][1], rows[j][1])
            assert not (m1 == m2 and p1 == p2 == False and k2[:len(k1)] == k1), (rows[i][1], rows[j][1])


def test_slow_extended_protocol_run_is_planned_with_its_bind_values(shop):
    """An ORM's slow run keeps its bind parameters: the advisor writes them into the text
    (custom plan), so the rare 'failed' status is seen as selective."""
    shop.execute("SELECT perf.reset_stats()")
    shop.execute("SET perf.slow_query_ms = 0")
    for _ in range(3):
        shop.execute("SELECT count(*) FROM orders WHERE status = %s", ("failed",))
    helped = [h for r in creates(suggestions(shop)) for h in r[6]]
    assert any(h["query"] == "SELECT count(*) FROM orders WHERE status = $1" and h["cost_after"] < 0.1 * h["cost_before"]
               for h in helped), helped


def status_query_helped(c):
    """(ddl, helped entry) pairs of suggestions whose index makes the status count cheap."""
    return [(r[1], h) for r in creates(suggestions(c)) for h in r[6]
            if h["query"] == "SELECT count(*) FROM orders WHERE status = $1"
            and h["cost_after"] < 0.1 * h["cost_before"]]


@pytest.mark.parametrize("protocol", ["literal", "bind"])
def test_skewed_value_gets_its_index_from_sample_values(shop, protocol):
    """A 0.3% status queried for that value, at the default perf.slow_query_ms (no slow run
    keeps its constants): the sample values pg_perf keeps per statement make the advisor
    plan it with 'failed' (custom plan: selective), so it gets an index on status. With
    perf.capture_sample_values = off the same workload is planned generically (status = $1
    looks like half the table) and gets none. Sent as literal text and with bind
    parameters (extended protocol)."""
    shop.execute("SET perf.slow_query_ms = 1000000")

    def run():
        shop.execute("SELECT perf.reset_stats()")
        for _ in range(20):
            if protocol == "literal":
                # Not prepared: a statement prepared before its entry existed (here: before
                # perf.reset_stats()) shows its constants again only when parsed again.
                shop.execute("SELECT count(*) FROM orders WHERE status = 'failed'", prepare=False)
            else:
                shop.execute("SELECT count(*) FROM orders WHERE status = %s", ("failed",))

    shop.execute("SET perf.capture_sample_values = off")
    run()
    assert shop.execute("SELECT count(*) FROM perf.statement_samples()").fetchone() == (0,)
    assert status_query_helped(shop) == []

    shop.execute("SET perf.capture_sample_values = on")
    run()
    samples = shop.execute(
        "SELECT sample_values, seen FROM perf.statement_samples() JOIN perf.statements s USING (queryid) "
        "WHERE s.query = 'SELECT count(*) FROM orders WHERE status = $1'").fetchall()
    expected = "$1 = 'failed'" if protocol == "literal" else "$1 = 'failed'::text"
    assert [v for v, _ in samples] == [expected], samples
    assert 1 <= samples[0][1] < 20, samples  # captured on a thinning schedule, not every run
    helped = status_query_helped(shop)
    assert helped and all("status" in ddl for ddl, _ in helped), helped


def test_sample_values_follow_the_text_visibility_rule(shop, connect):
    """Sample values are shown like query texts: to superusers, pg_read_all_stats members
    and the role that ran the statement; perf.reset_stats() forgets them."""
    shop.execute("SELECT perf.reset_stats()")
    shop.execute("SELECT count(*) FROM orders WHERE customer_id = 4242")
    shop.execute("DROP ROLE IF EXISTS sample_peeker")
    shop.execute("CREATE ROLE sample_peeker LOGIN")
    try:
        assert shop.execute("SELECT count(*) FROM perf.statement_samples() "
                            "WHERE sample_values = '$1 = 4242'").fetchone() == (1,)
        shop.execute("SET ROLE sample_peeker")
        assert shop.execute("SELECT count(*) FROM perf.statement_samples()").fetchone() == (0,)
        shop.execute("RESET ROLE")
        shop.execute("GRANT pg_read_all_stats TO sample_peeker")
        shop.execute("SET ROLE sample_peeker")
        assert shop.execute("SELECT count(*) FROM perf.statement_samples() "
                            "WHERE sample_values = '$1 = 4242'").fetchone() == (1,)
        shop.execute("RESET ROLE")
        shop.execute("SELECT perf.reset_stats()")
        assert shop.execute("SELECT count(*) FROM perf.statement_samples() "
                            "WHERE sample_values LIKE '%4242%'").fetchone() == (0,)
    finally:
        shop.execute("RESET ROLE")
        shop.execute("DROP ROLE sample_peeker")
