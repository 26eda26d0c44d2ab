"""A preloaded pg_perf must not change a single field of any error a client sees.

Every statement of the corpus below fails. Its full error report (every field the protocol
carries: SQLSTATE, severity, messages, positions, internal query, context, the schema /
table / column / datatype / constraint names drivers map errors with, source file, line
and function) is read on a cluster without pg_perf preloaded and compared, byte for byte,
with the report from preloaded clusters: the test cluster (perf.track_planning = off), and
a second preloaded cluster with perf.track_planning = on (a postmaster setting), each with
perf.track = top and = all.

The extra clusters use ports PORT+5 and PORT+6 (inside this checkout's port range).
"""

import psycopg
import pytest

from conftest import PORT, cluster

NOPRELOAD_PORT = PORT + 5
PLANNING_PORT = PORT + 6
DB = "errfields"

FIELDS = [
    "severity", "severity_nonlocalized", "sqlstate", "message_primary", "message_detail",
    "message_hint", "statement_position", "internal_position", "internal_query", "context",
    "schema_name", "table_name", "column_name", "datatype_name", "constraint_name",
    "source_file", "source_line", "source_function",
]

SETUP = r"""
CREATE SCHEMA app;
CREATE TABLE app.parent (id int PRIMARY KEY);
INSERT INTO app.parent VALUES (1), (2);
CREATE TABLE app.u (
    id int CONSTRAINT u_pkey PRIMARY KEY,
    email text NOT NULL CONSTRAINT u_email_key UNIQUE,
    age int CONSTRAINT u_age_check CHECK (age >= 0),
    parent_id int CONSTRAINT u_parent_fk REFERENCES app.parent (id)
);
INSERT INTO app.u VALUES (1, 'a@x', 1, 1), (2, 'b@x', 2, 2);
CREATE TABLE app.dup (v int);
INSERT INTO app.dup VALUES (1), (1);
CREATE DOMAIN app.posint AS int CONSTRAINT posint_check CHECK (VALUE > 0);
CREATE TABLE app.d (v app.posint);
CREATE PROCEDURE app.p_fail(n int) LANGUAGE plpgsql AS $$
BEGIN
    IF n > 0 THEN
        RAISE EXCEPTION 'procedure failed with %', n USING DETAIL = 'detail p', HINT = 'hint p',
            ERRCODE = '22023';
    END IF;
END $$;
CREATE PROCEDURE app.p_insert() LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.u VALUES (10, 'a@x', 1, 1);
END $$;
CREATE FUNCTION app.f_div(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE r int;
BEGIN
    SELECT 10 / n INTO r;
    RETURN r;
END $$;
CREATE FUNCTION app.f_dyn(q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
END $$;
CREATE FUNCTION app.f_badcol() RETURNS int LANGUAGE plpgsql AS $$
DECLARE r int;
BEGIN
    SELECT nosuchcol INTO r FROM app.u LIMIT 1;
    RETURN r;
END $$;
CREATE FUNCTION app.f_reraise() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO app.u VALUES (11, 'a@x', 1, 1);
    EXCEPTION WHEN unique_violation THEN
        RAISE;
    END;
END $$;
CREATE FUNCTION app.f_catch_raise_new() RETURNS void LANGUAGE plpgsql AS $$
DECLARE c text; t text;
BEGIN
    INSERT INTO app.u VALUES (12, 'a@x', 1, 1);
EXCEPTION WHEN unique_violation THEN
    GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME, t = TABLE_NAME;
    RAISE EXCEPTION 'wrapped: % on %', c, t USING ERRCODE = 'P0003', CONSTRAINT = c, TABLE = t;
END $$;
CREATE FUNCTION app.f_immutable_boom() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'boom while planning' USING ERRCODE = '22012', DETAIL = 'folded';
END $$;
CREATE FUNCTION app.f_sql_inline(n int) RETURNS int IMMUTABLE LANGUAGE sql AS $$ SELECT 1 / n $$;
CREATE FUNCTION app.trg_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.v < 0 THEN
        RAISE EXCEPTION 'negative v: %', NEW.v USING COLUMN = 'v', TABLE = TG_TABLE_NAME,
            SCHEMA = TG_TABLE_SCHEMA, ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TABLE app.trg (v int);
CREATE TRIGGER trg_check BEFORE INSERT ON app.trg FOR EACH ROW EXECUTE FUNCTION app.trg_fn();
CREATE TABLE app.deferred (id int CONSTRAINT deferred_fk REFERENCES app.parent (id)
    DEFERRABLE INITIALLY DEFERRED);
"""

# (name, statements, protocol): every statement but the last must succeed, the last must
# fail. "ext" runs through psycopg's default cursor (extended protocol), "simple" through
# a ClientCursor (simple query protocol). A case whose first statement is BEGIN is rolled
# back after it.
CORPUS = [
    ("unique violation", ["INSERT INTO app.u VALUES (3, 'a@x', 1, 1)"], "ext"),
    ("primary key violation", ["INSERT INTO app.u VALUES (1, 'z@x', 1, 1)"], "simple"),
    ("foreign key violation", ["INSERT INTO app.u VALUES (3, 'c@x', 1, 99)"], "ext"),
    ("foreign key on delete", ["DELETE FROM app.parent WHERE id = 1"], "simple"),
    ("not null", ["INSERT INTO app.u (id, email) VALUES (3, NULL)"], "ext"),
    ("check violation", ["UPDATE app.u SET age = -1 WHERE id = 1"], "simple"),
    ("domain check", ["INSERT INTO app.d VALUES (0)"], "ext"),
    ("division by zero", ["SELECT 1 / (SELECT count(*) - 2 FROM app.u)"], "simple"),
    ("syntax error with position", ["SELECT id, FROM app.u"], "simple"),
    ("undefined column with position", ["SELECT nosuch FROM app.u"], "ext"),
    ("undefined table", ["SELECT * FROM app.nosuch"], "ext"),
    ("type error", ["SELECT 'abc'::int"], "simple"),
    ("CALL raising", ["CALL app.p_fail(3)"], "simple"),
    ("CALL with constraint violation inside", ["CALL app.p_insert()"], "ext"),
    ("DO with every RAISE option", [r"""DO $$ BEGIN
        RAISE EXCEPTION 'custom %', 42 USING DETAIL = 'the detail', HINT = 'the hint',
            ERRCODE = 'P0042', COLUMN = 'col_x', CONSTRAINT = 'con_x', DATATYPE = 'type_x',
            TABLE = 'tab_x', SCHEMA = 'sch_x';
        END $$"""], "simple"),
    ("DO with statement error", [r"DO $$ BEGIN INSERT INTO app.u VALUES (4, 'b@x', 1, 1); END $$"],
     "ext"),
    ("DO with nested DO", [r"DO $$ BEGIN EXECUTE 'DO $i$ BEGIN PERFORM 1/0; END $i$'; END $$"],
     "simple"),
    ("plpgsql runtime error", ["SELECT app.f_div(0)"], "ext"),
    ("plpgsql syntax error in EXECUTE", ["SELECT app.f_dyn('SELEC 1')"], "simple"),
    ("plpgsql EXECUTE utility error", ["SELECT app.f_dyn('CREATE TABLE app.u (x int)')"], "ext"),
    ("plpgsql undefined column", ["SELECT app.f_badcol()"], "ext"),
    ("caught and re-raised", ["SELECT app.f_reraise()"], "simple"),
    ("caught, new error with fields", ["SELECT app.f_catch_raise_new()"], "ext"),
    ("trigger error", ["INSERT INTO app.trg VALUES (-5)"], "ext"),
    ("CREATE TABLE AS division", ["CREATE TABLE app.ctas AS SELECT 1 / (id - 1) FROM app.u"],
     "simple"),
    ("CREATE TABLE existing", ["CREATE TABLE app.u (x int)"], "ext"),
    ("ALTER TABLE ADD CONSTRAINT check fails",
     ["ALTER TABLE app.u ADD CONSTRAINT u_age_big CHECK (age > 5)"], "simple"),
    ("ALTER TABLE ADD UNIQUE fails", ["ALTER TABLE app.dup ADD CONSTRAINT dup_v_key UNIQUE (v)"],
     "ext"),
    ("ALTER COLUMN TYPE USING fails",
     ["ALTER TABLE app.u ALTER COLUMN parent_id TYPE int USING (parent_id / 0)"], "simple"),
    ("CREATE UNIQUE INDEX fails", ["CREATE UNIQUE INDEX dup_v_idx ON app.dup (v)"], "ext"),
    ("DROP with dependents", ["DROP TABLE app.parent"], "simple"),
    ("EXPLAIN ANALYZE failing", ["EXPLAIN ANALYZE INSERT INTO app.u VALUES (5, 'a@x', 1, 1)"],
     "ext"),
    ("EXPLAIN ANALYZE CTAS failing",
     ["EXPLAIN ANALYZE CREATE TABLE app.ctas2 AS SELECT 1 / (id - 1) FROM app.u"], "simple"),
    ("PREPARE then EXECUTE failing",
     ["PREPARE pfail(int) AS SELECT 10 / $1", "EXECUTE pfail(0)"], "simple"),
    ("PREPARE of bad statement", ["PREPARE pbad AS SELECT nosuch FROM app.u"], "ext"),
    ("protocol-level prepared failing", ["@prepared SELECT 10 / %s"], "ext"),
    ("nested savepoints", ["BEGIN", "SAVEPOINT a", "INSERT INTO app.u VALUES (6, 'f@x', 1, 1)",
                           "SAVEPOINT b", "INSERT INTO app.u VALUES (7, 'f@x', 1, 1)"], "ext"),
    ("after rollback to savepoint", ["BEGIN", "SAVEPOINT a", "SELECT 1 / 0"], "simple"),
    ("error in aborted transaction", ["BEGIN", "@fail SELECT 1 / 0", "SELECT 1"], "simple"),
    ("deferred FK at COMMIT", ["BEGIN", "INSERT INTO app.deferred VALUES (99)", "COMMIT"], "ext"),
    ("LOCK missing table", ["LOCK TABLE app.nosuch"], "simple"),
    ("VACUUM inside transaction", ["BEGIN", "VACUUM app.u"], "simple"),
    ("COPY FROM STDIN bad line", ["@copy COPY app.u (id, email, age, parent_id) FROM STDIN"],
     "ext"),
    ("COPY FROM STDIN unique violation", ["@copyuniq COPY app.u (id, email) FROM STDIN"], "ext"),
    ("COPY TO missing column", ["COPY app.u (nosuch) TO STDOUT"], "simple"),
    ("planning: immutable function folded", ["SELECT * FROM app.u WHERE id = app.f_immutable_boom()"],
     "ext"),
    ("planning: inlined SQL function", ["SELECT * FROM app.u WHERE id = app.f_sql_inline(0)"],
     "simple"),
    ("planning: constant division", ["SELECT * FROM app.u WHERE id = 1 / 0"], "ext"),
    ("planning: in CTAS", ["CREATE TABLE app.ctas3 AS SELECT app.f_immutable_boom()"], "simple"),
    ("planning: in EXPLAIN", ["EXPLAIN SELECT * FROM app.u WHERE id = app.f_sql_inline(0)"], "ext"),
]

COPY_BAD = "8\tg@x\t1\t1\nnot_a_number\th@x\t1\t1\n"
COPY_UNIQUE = "8\tg@x\n9\ta@x\n"


def diag_of(exc):
    return {f: getattr(exc.diag, f) for f in FIELDS}


def run_case(conn, statements, protocol):
    """Runs one case on `conn`; returns the failing statement's full error report."""
    cur = conn.cursor() if protocol == "ext" else psycopg.ClientCursor(conn)
    failure = None
    try:
        for i, stmt in enumerate(statements):
            last = i == len(statements) - 1
            try:
                if stmt.startswith("@copy"):
                    tag, sql = stmt.split(" ", 1)
                    with cur.copy(sql) as cp:
                        cp.write(COPY_BAD if tag == "@copy" else COPY_UNIQUE)
                elif stmt.startswith("@prepared "):
                    cur.execute(stmt[len("@prepared "):], (0,), prepare=True)
                elif stmt.startswith("@fail "):
                    cur.execute(stmt[len("@fail "):])
                    raise AssertionError(f"{stmt!r} should have failed")
                else:
                    cur.execute(stmt)
            except psycopg.Error as e:
                if stmt.startswith("@fail "):
                    continue
                assert last, f"{stmt!r} failed before the last statement: {e}"
                failure = diag_of(e)
        assert failure is not None, f"{statements[-1]!r} did not fail"
        return failure
    finally:
        if statements[0] == "BEGIN":
            conn.execute("ROLLBACK")


def corpus_reports(port, track=None):
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname={DB}"
    reports = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lc_messages = 'C'")
        if track is not None:
            conn.execute(f"SET perf.track = '{track}'")
        for name, statements, protocol in CORPUS:
            reports[name] = run_case(conn, statements, protocol)
    return reports


def prepare_db(port, with_extension):
    admin_dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={DB}",
                         autocommit=True) as c:
        if with_extension:
            c.execute("CREATE EXTENSION pg_perf")
        c.execute(SETUP)


def drop_db(port):
    admin_dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture(scope="module")
def reference():
    """The reports of a cluster where pg_perf is installed but not preloaded."""
    cluster("start", "errfields_nopreload", str(NOPRELOAD_PORT), env={"PERF_NO_PRELOAD": "1"})
    try:
        prepare_db(NOPRELOAD_PORT, with_extension=False)
        yield corpus_reports(NOPRELOAD_PORT)
    finally:
        cluster("stop", "errfields_nopreload", str(NOPRELOAD_PORT))


@pytest.fixture(scope="module")
def planning_port():
    """A second preloaded cluster with perf.track_planning = on (needs a restart)."""
    name = "errfields_planning"
    cluster("start", name, str(PLANNING_PORT))
    try:
        with psycopg.connect(f"host=127.0.0.1 port={PLANNING_PORT} user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute("ALTER SYSTEM SET perf.track_planning = on")
        cluster("restart", name, str(PLANNING_PORT))
        with psycopg.connect(f"host=127.0.0.1 port={PLANNING_PORT} user=postgres dbname=postgres",
                             autocommit=True) as c:
            assert c.execute("SHOW perf.track_planning").fetchone()[0] == "on"
        prepare_db(PLANNING_PORT, with_extension=True)
        yield PLANNING_PORT
    finally:
        cluster("stop", name, str(PLANNING_PORT))


def assert_same(reference, reports):
    assert len(reference) == len(CORPUS) >= 30
    mismatches = []
    for name, ref in reference.items():
        got = reports[name]
        for field in FIELDS:
            if got[field] != ref[field]:
                mismatches.append(f"{name}: {field}: expected {ref[field]!r}, got {got[field]!r}")
    assert not mismatches, "\n".join(mismatches)


def test_reference_corpus_covers_every_field(reference):
    """The corpus exercises the fields under test (so a lost field cannot go unnoticed)."""
    for field in ["context", "statement_position", "internal_position", "internal_query",
                  "schema_name", "table_name", "column_name", "datatype_name", "constraint_name",
                  "message_detail", "message_hint"]:
        assert any(r[field] is not None for r in reference.values()), field
    assert "COPY u, line 2" in reference["COPY FROM STDIN bad line"]["context"]
    assert reference["unique violation"]["constraint_name"] == "u_email_key"
    assert reference["CREATE UNIQUE INDEX fails"]["sqlstate"] == "23505"


@pytest.mark.parametrize("track", ["top", "all"])
def test_error_fields_identical_with_pg_perf_preloaded(reference, track):
    prepare_db(PORT, with_extension=True)
    try:
        assert_same(reference, corpus_reports(PORT, track))
    finally:
        drop_db(PORT)


@pytest.mark.parametrize("track", ["top", "all"])
def test_error_fields_identical_with_track_planning(reference, planning_port, track):
    assert_same(reference, corpus_reports(planning_port, track))


def test_failed_utility_statements_still_counted(connect):
    """Errors now pass through the utility hook untouched: it must still count them, and
    restore the nesting level when a PL/pgSQL handler catches one."""
    c = connect()

    def stats(text):
        return c.execute(
            "SELECT calls, errors, toplevel FROM perf.statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND query = %s",
            (text,),
        ).fetchall()

    c.execute("CREATE TABLE ut (x int PRIMARY KEY)")
    for _ in range(2):
        with pytest.raises(psycopg.errors.DuplicateTable):
            c.execute("CREATE TABLE ut (x int PRIMARY KEY)")
    assert stats("CREATE TABLE ut (x int PRIMARY KEY)") == [(1, 2, True)]

    c.execute("CREATE TABLE IF NOT EXISTS ut_copy (x int PRIMARY KEY)")
    with c.cursor().copy("COPY ut_copy FROM STDIN") as cp:
        cp.write("1\n")
    with pytest.raises(psycopg.errors.UniqueViolation):
        with c.cursor().copy("COPY ut_copy FROM STDIN") as cp:
            cp.write("2\n1\n")
    assert stats("COPY ut_copy FROM STDIN") == [(1, 1, True)]

    # A nested utility statement fails and is caught: the statements after it are still
    # top-level ones.
    c.execute("SET perf.track = 'all'")
    c.execute(
        "DO $$ BEGIN EXECUTE 'CREATE TABLE ut (x int)'; EXCEPTION WHEN duplicate_table THEN "
        "NULL; END $$"
    )
    c.execute("SELECT 9191 AS after_caught")
    assert [r[2] for r in stats("SELECT $1 AS after_caught")] == [True]



CACHE_SETUP = r"""
CREATE TABLE cu (id int CONSTRAINT cu_pk PRIMARY KEY);
INSERT INTO cu VALUES (1);
CREATE FUNCTION cu_ins() RETURNS int LANGUAGE plpgsql AS $$
BEGIN INSERT INTO cu VALUES (1); RETURN 1; END $$;
CREATE FUNCTION cu_raise() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'custom' USING ERRCODE = 'P0042', DETAIL = 'd', HINT = 'h', COLUMN = 'c',
        CONSTRAINT = 'k', DATATYPE = 't', TABLE = 'tb', SCHEMA = 's';
END $$;
CREATE FUNCTION cu_boom() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'boom' USING ERRCODE = 'P0043', CONSTRAINT = 'k2', TABLE = 'cu';
END $$;
"""


@pytest.mark.parametrize("query", [
    # fail while executing
    "SELECT cu_ins()", "SELECT cu_raise()", "SELECT 1 / (id - 1) FROM cu",
    "SELECT ('x' || id)::int FROM cu",
    # fail while parsing, analyzing or planning
    "SELEC 1", "SELECT nosuch FROM cu", "SELECT 'x'::int", "SELECT 1 / 0",
    "SELECT * FROM cu WHERE id = cu_boom()",
])
def test_cached_query_errors_keep_every_field(connect, query):
    """perf.cached_json() runs the user's query as SPI would: its ERROR keeps every field,
    the context gains SPI's 'SQL statement' line, and a syntax error position becomes an
    internal position in the query (never one in the client's statement)."""
    c = connect()
    c.execute(CACHE_SETUP)
    with pytest.raises(psycopg.Error) as direct:
        c.execute(query)
    want = diag_of(direct.value)
    for fn in ["cached_json", "cached_json_text"]:
        with pytest.raises(psycopg.Error) as cached:
            c.execute(f"SELECT perf.{fn}(%s)", (query,))
        got = diag_of(cached.value)
        positional = ("context", "statement_position", "internal_position", "internal_query")
        for field in FIELDS:
            if field not in positional:
                assert got[field] == want[field], (fn, field)
        assert got["statement_position"] is None, (fn, got)
        if want["statement_position"] is not None:
            assert (got["internal_position"], got["internal_query"], got["context"]) == (
                want["statement_position"], query, want["context"]), (fn, got)
        else:
            assert (got["internal_position"], got["internal_query"]) == (None, None), (fn, got)
            prefix = want["context"] + "\n" if want["context"] else ""
            assert got["context"].startswith(prefix), (fn, got["context"])
            # Parsing and planning name the query; SPI names the statement it runs.
            wrapped = f"SELECT coalesce(jsonb_agg(t.*), '[]'::jsonb) FROM (\n{query}\n) t"
            assert got["context"][len(prefix):] in (
                f'SQL statement "{query}"', f'SQL statement "{wrapped}"'), (fn, got["context"])


def test_cached_query_parameter_error(connect):
    c = connect()
    c.execute(CACHE_SETUP)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
        c.execute("SELECT perf.cached_json('SELECT $1::int', '[\"x\"]')")
    assert e.value.diag.message_primary == 'invalid input syntax for type integer: "x"'
    assert e.value.diag.source_function == "pg_strtoint32"


@pytest.mark.parametrize("query", [
    "SELEC 1", "SELECT nosuch FROM cu", "SELECT 'x'::int", "SELECT 1 / 0",
    "SELECT * FROM cu WHERE id = cu_boom()", "SELECT * FROM nosuch_table",
])
@pytest.mark.parametrize("fn", ["whatif", "suggest_indexes"])
def test_whatif_query_errors_keep_every_field(connect, query, fn):
    """perf.whatif() and perf.suggest_indexes(ARRAY[...]) parse, analyze and plan the user's
    statement as SPI would: its ERROR keeps every field (SQLSTATE, names, source location),
    and a position becomes an internal position in the statement."""
    c = connect()
    c.execute(CACHE_SETUP)
    with pytest.raises(psycopg.Error) as direct:
        c.execute(query)
    want = diag_of(direct.value)
    call = "SELECT * FROM perf.whatif(%s)" if fn == "whatif" else "SELECT * FROM perf.suggest_indexes(ARRAY[%s])"
    with pytest.raises(psycopg.Error) as got_e:
        c.execute(call, (query,))
    got = diag_of(got_e.value)
    positional = ("context", "statement_position", "internal_position", "internal_query")
    for field in FIELDS:
        if field not in positional:
            assert got[field] == want[field], (field, got, want)
    assert got["statement_position"] is None, got
    if want["statement_position"] is not None:
        assert (got["internal_position"], got["internal_query"]) == (want["statement_position"], query), got
    else:
        assert f'SQL statement "{query}"' in (got["context"] or ""), got
