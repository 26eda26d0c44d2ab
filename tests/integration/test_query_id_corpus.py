"""Query ids from pg_perf's memo must equal core's jumble for every statement, whichever
literal differs. A generator takes a list of statement templates, finds every literal in
each (numbers, strings of every flavour, type modifiers, ordinals, precisions, bounds),
and makes variants that differ from the template in that one literal. Each statement is
sent with the simple query protocol

* by a session where pg_perf's memo assigns ids (compute_query_id = auto, verification
  off, so a memo hit really returns the memoized id), right after the template itself, so
  that a variant whose fingerprint equals the template's is answered from the memo;
* by a session where core jumbles (compute_query_id = on; pg_perf does nothing there);

and the ids must be equal. Each statement is wrapped as
`WITH s AS (<statement>) SELECT <own pg_stat_activity.query_id>`, so the id the backend
reported for the statement is read by the statement itself (the wrapper has no literal, so
it changes nothing about which literals decide the id). A third pass runs the bare
statements with perf.verify_query_ids = on (every memo hit is re-jumbled) and asserts that
no WARNING about a difference came.
"""

import re

import psycopg
import pytest

from conftest import dsn

SCHEMA = r"""
CREATE TABLE qt (a int, b int8, c varchar(5), d numeric(10,2), e bit(3), f timestamp(3),
                 g interval(2), h text, i char(4), j time(2), k timestamptz(3), l float4,
                 m bit varying(5), n int[], o date, p float8, q timetz(2), r bytea,
                 s jsonb, u numeric, v varchar(5)[]);
INSERT INTO qt VALUES (1, 2, 'abc', 1.5, B'101', now(), '1 s', 'h', 'i', now(), now(), 1.5,
                       B'1', '{1,2}', now(), 2.5, now(), '\x00', '{"a": 1}', 3, '{a}');
CREATE TABLE qt2 (a int PRIMARY KEY, h text, c varchar(5));
CREATE TYPE qrow AS (x int, y varchar(5), z numeric(6,2));
CREATE FUNCTION qf(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION qrec() RETURNS SETOF record LANGUAGE sql AS $$ SELECT 1, 'a'::text $$;
CREATE VIEW qv AS SELECT c::varchar(4) AS c4, d::numeric(8,1) AS d8 FROM qt;
"""

# Statements with literals in every kind of grammar position. Each literal is varied.
TEMPLATES = [
    # --- type modifiers on casts of columns (core keeps a length coercion only when the
    # modifier differs from the column's own) ---
    "SELECT c::varchar(5) FROM qt",
    "SELECT c::varchar(4) FROM qt",
    "SELECT c::character varying(5) FROM qt",
    "SELECT c::char varying(5) FROM qt",
    "SELECT c::national character varying(5) FROM qt",
    "SELECT c :: varchar ( 5 ) FROM qt",
    "SELECT c::varchar/* (5) */(5) FROM qt",
    "SELECT c::varchar(\n5) FROM qt",
    "SELECT c::varchar(0005) FROM qt",
    "SELECT c::pg_catalog.varchar(5) FROM qt",
    'SELECT c::"varchar"(5) FROM qt',
    'SELECT c::pg_catalog."varchar"(5) FROM qt',
    "SELECT (c)::varchar(5) FROM qt",
    "SELECT c::varchar(5)::varchar(4) FROM qt",
    "SELECT c::varchar(5)::text FROM qt",
    "SELECT c::varchar(5) = 'abc' FROM qt",
    "SELECT a FROM qt WHERE c::varchar(5) = 'abc'",
    "SELECT a FROM qt WHERE c::varchar(5) = 'abc' AND a = 1",
    "SELECT CAST(c AS varchar(5)) FROM qt",
    "SELECT CAST(c AS character varying(5)) FROM qt",
    "SELECT CAST(c AS pg_catalog.varchar(5)) FROM qt",
    "SELECT cast(c as varchar(5)) FROM qt",
    "SELECT TREAT(c AS varchar(5)) FROM qt",
    "SELECT i::char(4) FROM qt",
    "SELECT i::character(4) FROM qt",
    "SELECT i::bpchar(4) FROM qt",
    "SELECT i::nchar(4) FROM qt",
    "SELECT i::national char(4) FROM qt",
    "SELECT i::national character(4) FROM qt",
    "SELECT c::char(5) FROM qt",
    "SELECT d::numeric(10,2) FROM qt",
    "SELECT d::numeric(10, 2) FROM qt",
    "SELECT d::numeric(10) FROM qt",
    "SELECT d::decimal(10,2) FROM qt",
    "SELECT d::dec(10,2) FROM qt",
    "SELECT CAST(d AS numeric(10,2)) FROM qt",
    "SELECT u::numeric(10,2) FROM qt",
    "SELECT d::numeric(10,2) + 1.5 FROM qt",
    "SELECT round(d::numeric(10,2), 1) FROM qt",
    "SELECT e::bit(3) FROM qt",
    "SELECT m::bit varying(5) FROM qt",
    "SELECT m::varbit(5) FROM qt",
    "SELECT e::bit(3) = B'101' FROM qt",
    "SELECT f::timestamp(3) FROM qt",
    "SELECT f::timestamp(3) without time zone FROM qt",
    "SELECT k::timestamp(3) with time zone FROM qt",
    "SELECT k::timestamptz(3) FROM qt",
    "SELECT j::time(2) FROM qt",
    "SELECT j::time(2) without time zone FROM qt",
    "SELECT q::time(2) with time zone FROM qt",
    "SELECT q::timetz(2) FROM qt",
    "SELECT g::interval(2) FROM qt",
    "SELECT g::interval second(2) FROM qt",
    "SELECT g::interval day to second(2) FROM qt",
    "SELECT g::interval minute to second(2) FROM qt",
    "SELECT g::interval hour to second(2) FROM qt",
    "SELECT l::float(24) FROM qt",
    "SELECT p::float(53) FROM qt",
    "SELECT a::float(10) FROM qt",
    "SELECT a::float FROM qt WHERE a = 1",
    "SELECT n::int[3] FROM qt",
    "SELECT n::int4[3][2] FROM qt",
    "SELECT v::varchar(5)[] FROM qt",
    "SELECT v::varchar(5)[2] FROM qt",
    "SELECT c::varchar(5) FROM (SELECT c FROM qt) s",
    "SELECT x::numeric(10,2) FROM (SELECT d AS x FROM qt) s",
    "SELECT c4::varchar(4), d8::numeric(8,1) FROM qv",
    "SELECT c::varchar(5) FROM qt2",
    "SELECT coalesce(c, 'x')::varchar(5) FROM qt",
    "SELECT (CASE WHEN a = 1 THEN c END)::varchar(5) FROM qt",
    "SELECT ((1, 'abc', 1.5)::qrow).y::varchar(5)",
    "SELECT ((1, 'abc', 1.5)::qrow).z::numeric(6,2)",
    "SELECT (ROW(1, 'abc', 1.5)::qrow).y::varchar(5)",
    "SELECT y::varchar(5) FROM qrec() AS r(x int, y varchar(5))",
    "SELECT r.y::varchar(5) FROM qrec() r(x int, y varchar(5))",
    "SELECT y::varchar(5) FROM qrec() AS (x int, y varchar(5))",
    "SELECT y::varchar(5) FROM qrec() AS r(x int, y pg_catalog.varchar(5))",
    "SELECT y::varchar(5) FROM ROWS FROM (qrec() AS (x int, y varchar(5))) r",
    "SELECT y::numeric(4,1) FROM qrec() AS r(x int, y numeric(4,1))",
    "SELECT * FROM qrec() AS r(x int, y varchar(5)) WHERE x = 1",
    "SELECT XMLSERIALIZE(CONTENT '<a/>'::xml AS varchar(10))",
    "SELECT a::varchar(10) FROM XMLTABLE('/r' PASSING '<r><a>1</a></r>'::xml "
    "COLUMNS a varchar(10) PATH 'a')",
    # --- type modifiers of constants and typed literals ---
    "SELECT 'abc'::varchar(5)",
    "SELECT 'abc'::varchar(5)::varchar(4)",
    "SELECT '1.5'::numeric(10,2)",
    "SELECT 1.5::numeric(10,2)",
    "SELECT 15::numeric(10,2)",
    "SELECT CAST('abc' AS varchar(5))",
    "SELECT NULL::varchar(5)",
    "SELECT NULL::numeric(10,2)",
    "SELECT ARRAY['a']::varchar(5)[]",
    "SELECT '{a}'::varchar(5)[]",
    "SELECT varchar(5) 'abc'",
    "SELECT character varying(5) 'abc'",
    "SELECT char(4) 'ab'",
    "SELECT numeric(10,2) '1.5'",
    "SELECT decimal(10,2) '1.5'",
    "SELECT bit(3) '101'",
    "SELECT bit varying(5) '101'",
    "SELECT float(10) '1.5'",
    "SELECT timestamp(3) '2024-01-01 00:00:00.1234'",
    "SELECT timestamp(3) with time zone '2024-01-01 00:00:00.1234'",
    "SELECT time(2) '12:00:00.123'",
    "SELECT time(2) with time zone '12:00:00.123'",
    "SELECT interval(2) '1.234 s'",
    "SELECT interval '1.234' second(2)",
    "SELECT interval '1.234' second",
    "SELECT INTERVAL '1 2:03:04.5678' DAY TO SECOND(3)",
    "SELECT INTERVAL '3:04.5678' MINUTE TO SECOND(3)",
    "SELECT INTERVAL '1' YEAR",
    "SELECT INTERVAL '2:03' HOUR TO MINUTE",
    "SELECT '1.234 s'::interval second(2)",
    "SELECT '1.234 s'::interval(2)",
    "SELECT a FROM qt WHERE g > interval(1) '0.5 s'",
    "SELECT pg_catalog.varchar(5) 'abc'",
    "SELECT pg_catalog.numeric(10,2) '1.5'",
    'SELECT "varchar"(5) \'abc\'',
    "SELECT varchar(5) E'abc'",
    "SELECT varchar(5) $$abc$$",
    "SELECT varchar(5) U&'abc'",
    # --- precisions of datetime functions ---
    "SELECT CURRENT_TIMESTAMP(3)",
    "SELECT CURRENT_TIME(3)",
    "SELECT LOCALTIME(1)",
    "SELECT LOCALTIMESTAMP(1)",
    "SELECT current_timestamp ( 4 )",
    "SELECT now() > CURRENT_TIMESTAMP(3)",
    "SELECT a FROM qt WHERE f < LOCALTIMESTAMP(2)",
    "SELECT a FROM qt WHERE f < LOCALTIMESTAMP(2) AND a = 5",
    "SELECT CURRENT_TIMESTAMP(3), LOCALTIME(5), 'x'",
    "SELECT CURRENT_TIMESTAMP, CURRENT_TIME, LOCALTIME, LOCALTIMESTAMP, 1",
    # --- ordinals and other clause positions ---
    "SELECT a, b FROM qt ORDER BY 1",
    "SELECT a, b FROM qt ORDER BY 2 DESC, 1",
    "SELECT a, b FROM qt WHERE a = 1 ORDER BY 1",
    "SELECT a, count(*) FROM qt GROUP BY 1",
    "SELECT a, b, count(*) FROM qt GROUP BY 1, 2",
    "SELECT a, b, count(*) FROM qt GROUP BY ROLLUP (1, 2)",
    "SELECT a, b, count(*) FROM qt GROUP BY GROUPING SETS ((1), (2))",
    "SELECT DISTINCT ON (1) a, b FROM qt",
    "SELECT DISTINCT a, b FROM qt WHERE a = 1",
    "SELECT a FROM qt ORDER BY a LIMIT 5",
    "SELECT a FROM qt LIMIT 5",
    "SELECT a FROM qt LIMIT 5 OFFSET 10",
    "SELECT a FROM qt OFFSET 2",
    "SELECT a FROM qt OFFSET 2 ROWS",
    "SELECT a FROM qt FETCH FIRST 3 ROWS ONLY",
    "SELECT a FROM qt OFFSET 1 ROW FETCH NEXT 2 ROWS ONLY",
    "SELECT a FROM qt ORDER BY a FETCH FIRST 3 ROWS WITH TIES",
    "SELECT a FROM qt FETCH FIRST ROW ONLY",
    "SELECT a FROM qt TABLESAMPLE SYSTEM (10)",
    "SELECT a FROM qt TABLESAMPLE BERNOULLI (50) REPEATABLE (1)",
    "SELECT h COLLATE \"C\" FROM qt WHERE h = 'x'",
    "SELECT h FROM qt WHERE h < 'x' COLLATE \"C\"",
    "SELECT a OPERATOR(pg_catalog.+) 1 FROM qt",
    "SELECT sum(a) OVER (ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM qt",
    "SELECT sum(a) OVER (ORDER BY a ROWS BETWEEN 1 PRECEDING AND 2 FOLLOWING) FROM qt",
    "SELECT sum(a) OVER (PARTITION BY b) FROM qt WHERE a > 1",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM qt",
    "SELECT count(*) FILTER (WHERE a > 1) FROM qt",
    "SELECT a FROM qt WHERE a > 1 FOR UPDATE",
    "SELECT a FROM qt WHERE a > 1 FOR SHARE SKIP LOCKED",
    # --- strings of every flavour ---
    "SELECT 'x'",
    "SELECT 'it''s'",
    "SELECT E'x\\n'",
    "SELECT e'x\\'y'",
    "SELECT U&'d\\0061t'",
    "SELECT U&'d!0061t' UESCAPE '!'",
    "SELECT $$x$$",
    "SELECT $q$x$q$",
    "SELECT B'101'",
    "SELECT X'1F'",
    "SELECT N'x'",
    "SELECT 'a'\n'b'",
    "SELECT 'a' -- c\n'b'",
    "SELECT 'x', 'y' || 'z'",
    "SELECT length('abc')",
    "SELECT 'é', 'ü'",
    # --- numbers ---
    "SELECT 1",
    "SELECT -1",
    "SELECT - 1",
    "SELECT -(1)",
    "SELECT 1 - 1",
    "SELECT 1-1",
    "SELECT 2147483647",
    "SELECT 2147483648",
    "SELECT -2147483647",
    "SELECT -2147483648",
    "SELECT -2147483649",
    "SELECT 9223372036854775806",
    "SELECT 9223372036854775807",
    "SELECT 9223372036854775808",
    "SELECT -9223372036854775808",
    "SELECT -9223372036854775809",
    "SELECT 123456789012345678901234567890",
    "SELECT 1e10",
    "SELECT 1E-3",
    "SELECT .5",
    "SELECT 5.",
    "SELECT 1.5e3",
    "SELECT 00012",
    "SELECT 0.0",
    "SELECT a + 1 FROM qt",
    "SELECT b + 3000000000 FROM qt",
    "SELECT a FROM qt WHERE a = 1",
    "SELECT a FROM qt WHERE a = -1",
    "SELECT a FROM qt WHERE a = 1.5",
    "SELECT a FROM qt WHERE d = 1",
    "SELECT a FROM qt WHERE l = 1.5",
    "SELECT a FROM qt WHERE b = 2147483648",
    # --- typed literals and casts of constants ---
    "SELECT date '2024-01-01'",
    "SELECT int4 '1'",
    "SELECT int8 '5'",
    "SELECT '1'::int",
    "SELECT 1::int",
    "SELECT 1::int8",
    "SELECT '1'::numeric",
    "SELECT timestamptz '2024-01-01'",
    "SELECT interval '1 day'",
    "SELECT jsonb '{\"a\": 1}'",
    "SELECT pg_catalog.int4 '1'",
    'SELECT "int4" \'5\'',
    "SELECT boolean 'true'",
    "SELECT 'qt'::regclass",
    "SELECT 'abc'::text::varchar",
    # --- lists, arrays, rows ---
    "SELECT a FROM qt WHERE a IN (1, 2, 3)",
    "SELECT a FROM qt WHERE a IN (1, 2)",
    "SELECT a FROM qt WHERE a NOT IN (1)",
    "SELECT a FROM qt WHERE h IN ('a', 'b')",
    "SELECT a FROM qt WHERE a = ANY (ARRAY[1, 2])",
    "SELECT a FROM qt WHERE a = ANY ('{1,2}')",
    "SELECT ARRAY[1, 2, 3]",
    "SELECT n[1] FROM qt",
    "SELECT n[1:2] FROM qt",
    "SELECT (ARRAY[1, 2, 3])[2]",
    "SELECT ROW(1, 'a')",
    "SELECT (1, 'a', 2.5)::qrow",
    "VALUES (1, 'a'), (2, 'b')",
    "VALUES (1)",
    "SELECT * FROM (VALUES (1), (2)) v(x)",
    "SELECT * FROM (VALUES (1, 'a')) AS v(x, y) WHERE x = 1",
    # --- comments ---
    "SELECT /* c 1 */ a FROM qt WHERE a = 1",
    "SELECT a FROM qt WHERE a = 1 -- 5",
    "SELECT a /* varchar(5) */ FROM qt WHERE a = 1",
    "/* 1 */ SELECT a FROM qt /* 2 */ WHERE /* 3 */ a = 1",
    "SELECT c::varchar /* 6 */ (5) FROM qt",
    # --- functions and special syntax ---
    "SELECT lower('ABC')",
    "SELECT pg_catalog.lower('x')",
    "SELECT substr(h, 1, 2) FROM qt",
    "SELECT left(h, 2) FROM qt",
    "SELECT right(h, 2) FROM qt",
    "SELECT coalesce(a, 0) FROM qt",
    "SELECT round(d, 1) FROM qt",
    "SELECT date_trunc('day', f) FROM qt",
    "SELECT to_char(f, 'YYYY') FROM qt",
    "SELECT extract(year FROM f) FROM qt",
    "SELECT extract('year' FROM f) FROM qt",
    "SELECT overlay(h placing 'x' from 1 for 2) FROM qt",
    "SELECT position('a' in h) FROM qt",
    "SELECT substring(h from 1 for 2) FROM qt",
    "SELECT trim(both 'x' from h) FROM qt",
    "SELECT nullif(a, 1) FROM qt",
    "SELECT greatest(a, 1, 2), least(a, 3) FROM qt",
    "SELECT f AT TIME ZONE 'UTC' FROM qt",
    "SELECT h LIKE 'a%' ESCAPE '#' FROM qt",
    "SELECT h SIMILAR TO 'a' ESCAPE '#' FROM qt",
    "SELECT a BETWEEN 1 AND 5 FROM qt",
    "SELECT a BETWEEN SYMMETRIC 5 AND 1 FROM qt",
    "SELECT a FROM qt WHERE a BETWEEN qf(1) AND qf(5)",
    "SELECT qf(1)",
    "SELECT qf(1)::varchar(5)",
    "SELECT qf(qf(1) + 2)",
    "SELECT public.qf(1)",
    "SELECT normalize('x', NFC)",
    "SELECT 'x' IS NFC NORMALIZED",
    "SELECT CASE WHEN a = 1 THEN 'x' ELSE 'y' END FROM qt",
    "SELECT CASE a WHEN 1 THEN 2 END FROM qt",
    "SELECT EXISTS (SELECT 1 FROM qt WHERE a = 2)",
    "SELECT NOT EXISTS (SELECT 1 FROM qt WHERE a = 2)",
    "SELECT (SELECT 1)",
    "SELECT a FROM qt WHERE h IS DISTINCT FROM 'x'",
    "SELECT a FROM qt WHERE (a = 1) IS TRUE",
    "SELECT a FROM qt WHERE h ~ 'x' AND a % 2 = 0",
    "SELECT s -> 'a', s ->> 'b', s #> '{a,b}' FROM qt",
    "SELECT a FROM qt WHERE f > now() - interval '1 day'",
    "SELECT 1 AS \"x(5)\"",
    "SELECT format('%s', 1)",
    "SELECT generate_series(1, 3)",
    "SELECT * FROM generate_series(1, 3) g",
    "SELECT * FROM generate_series(1, 3) WITH ORDINALITY AS g(x, n)",
    "SELECT * FROM qt, LATERAL generate_series(1, a) g",
    "SELECT xmlelement(name foo, xmlattributes('x' AS bar), 'y')",
    "SELECT to_tsvector('english', 'a b')",
    "SELECT nextval('pg_catalog.pg_class'::regclass) IS NULL",
    # --- subqueries, CTEs, set operations, joins ---
    "WITH w AS (SELECT a FROM qt WHERE a > 1) SELECT * FROM w",
    "WITH w(x) AS (SELECT 1) SELECT x FROM w",
    "SELECT 1 UNION SELECT 2",
    "SELECT 1 UNION ALL SELECT 2 ORDER BY 1",
    "SELECT a FROM qt INTERSECT SELECT 1",
    "SELECT a FROM qt EXCEPT SELECT 1",
    "SELECT * FROM qt x JOIN qt y ON x.a = y.a + 1 WHERE x.a < 10",
    "SELECT * FROM qt x LEFT JOIN qt2 y ON y.a = 1",
    "SELECT * FROM (SELECT a, c::varchar(5) AS c FROM qt) s WHERE a = 1",
    "SELECT a FROM qt WHERE a IN (SELECT a FROM qt2 WHERE h = 'x')",
    # --- data-modifying statements ---
    "INSERT INTO qt2 VALUES (1, 'a') ON CONFLICT (a) DO NOTHING",
    "INSERT INTO qt2 (a, c) VALUES (7, 'ab') ON CONFLICT DO NOTHING",
    "INSERT INTO qt2 (a, c) VALUES (8, 'ab'::varchar(5)) ON CONFLICT DO NOTHING",
    "INSERT INTO qt2 (a, c) SELECT 9, h::varchar(5) FROM qt ON CONFLICT DO NOTHING",
    "INSERT INTO qt2 SELECT 5, 'x' ON CONFLICT (a) DO UPDATE SET c = EXCLUDED.c::varchar(3)",
    "UPDATE qt2 SET h = 'x' WHERE a = 1",
    "UPDATE qt2 SET c = c::varchar(4) WHERE a = 1",
    "UPDATE qt2 SET c = 'abc'::varchar(5) WHERE a = 1 RETURNING c::varchar(5)",
    "DELETE FROM qt2 WHERE a = 100",
    "DELETE FROM qt2 WHERE a = 100 RETURNING c::varchar(5), 1",
]

# Expressions with literals in typed and untyped positions, placed in every context below:
# the same literal must be structure or constant wherever the expression stands.
EXPRESSIONS = [
    "c::varchar(5)",
    "c::varchar(5) || 'x'",
    "CAST(c AS varchar(5))",
    "i::char(4)",
    "d::numeric(10,2)",
    "d::numeric(10,2) * 2",
    "e::bit(3)",
    "m::varbit(5)",
    "f::timestamp(3)",
    "k::timestamptz(3)",
    "j::time(2)",
    "q::timetz(2)",
    "g::interval(2)",
    "g::interval day to second(2)",
    "l::float(24)",
    "CURRENT_TIMESTAMP(3)",
    "LOCALTIME(2)",
    "'abc'::varchar(5)",
    "1.5::numeric(10,2)",
    "varchar(5) 'abc'",
    "interval '1.5' second(1)",
    "a + 1",
    "a + 3000000000",
    "d + 1.5",
    "h || 'x'",
    "h || E'x'",
    "h || $$x$$",
    "lower('X')",
    "substr(h, 1, 2)",
    "left(h, 2)",
    "coalesce(a, 0)",
    "round(d, 1)",
    "date_trunc('day', f)",
    "a IN (1, 2)",
    "-1",
    "-2147483648",
    "2147483648",
    "B'101'",
    "qf(1)::varchar(5)",
    "(c::varchar(5))::varchar(4)",
]

CONTEXTS = [
    "SELECT {e} FROM qt",
    "SELECT a FROM qt WHERE ({e}) IS NOT NULL",
    "SELECT a FROM qt WHERE a = 1 AND ({e}) IS NOT NULL",
    "SELECT * FROM (SELECT {e} AS x FROM qt) s",
    "WITH w AS (SELECT {e} AS x FROM qt) SELECT x FROM w",
    "SELECT ARRAY[{e}] FROM qt",
    "SELECT ROW({e}, 1) FROM qt",
    "SELECT CASE WHEN a > 0 THEN {e} END FROM qt",
    "SELECT count({e}) FROM qt",
    "SELECT (SELECT {e} FROM qt LIMIT 1)",
]

TEMPLATES += [c.format(e=e) for c in CONTEXTS for e in EXPRESSIONS]

# Statements that cannot be wrapped in a CTE; checked in the verification pass only.
BARE_ONLY = [
    "MERGE INTO qt2 USING (SELECT 3 AS a) s ON qt2.a = s.a "
    "WHEN MATCHED THEN UPDATE SET c = 'x'::varchar(5) WHEN NOT MATCHED THEN INSERT VALUES (s.a, 'y')",
    "MERGE INTO qt2 USING (SELECT 3 AS a) s ON qt2.a = s.a WHEN MATCHED AND qt2.a > 1 THEN DELETE",
    "SELECT c::varchar(5) FROM qt ORDER BY 1 LIMIT 1",
    "SELECT 1; SELECT c::varchar(5) FROM qt",
]

TOKEN = re.compile(
    r"""(?P<comment>--[^\n]*|/\*.*?\*/)
      | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
      | (?P<string>(?:[EeBbXxNn]|[Uu]&)?'(?:[^']|'')*')
      | (?P<qident>"(?:[^"]|"")*")
      | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<other>.)""",
    re.S | re.X,
)


def literal_variants(text):
    """Other values for one literal token, each keeping its flavour; plus one that changes
    a number's type."""
    if text[0].isdigit() or text[0] == ".":
        if re.fullmatch(r"\d+", text):
            k = int(text)
            return [str(k + 1), str(k + 3), text + ".5"]
        # Decimal or exponent: change the last digit.
        last = max(i for i, ch in enumerate(text) if ch.isdigit())
        digit = str((int(text[last]) + 1) % 10)
        return [text[:last] + digit + text[last + 1:]]
    if text.startswith("$"):
        tag = text[: text.index("$", 1) + 1]
        body = text[len(tag):-len(tag)]
        return [tag + bump(body) + tag]
    quote = text.index("'")
    prefix, body = text[:quote], text[quote + 1:-1]
    if "\n" in body:
        return []
    if prefix.lower() in ("b", "x"):
        alphabet = "01" if prefix.lower() == "b" else "0123456789ABCDEF"
        return [prefix + "'" + body[:-1] + ("1" if body[-1:] == "0" else "0") + "'",
                prefix + "'" + body + alphabet[-1] + "'"] if body else []
    return [prefix + "'" + bump(body) + "'"]


def bump(body):
    """A string that differs from `body` but most likely parses as the same type."""
    digits = [i for i, ch in enumerate(body) if ch.isdigit()]
    if digits:
        i = digits[-1]
        return body[:i] + str((int(body[i]) + 1) % 10) + body[i + 1:]
    return body + "z" if body else "z"


def variants(template):
    """The template's literal tokens (numbers and strings outside comments and
    identifiers), and for each of them the statements that differ in that one literal."""
    tokens = [(m.lastgroup, m.group(0), m.start(), m.end()) for m in TOKEN.finditer(template)]
    out = []
    for kind, text, start, end in tokens:
        if kind not in ("number", "string", "dollar"):
            continue
        for other in literal_variants(text):
            out.append(template[:start] + other + template[end:])
    return out


def corpus():
    """(base, [variants]) for every template."""
    return [(t, variants(t)) for t in TEMPLATES]


def wrap(statement):
    return ("WITH s AS (" + statement + ") SELECT (SELECT query_id FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid())")


class Session:
    def __init__(self, dbname, *settings):
        self.conn = psycopg.connect(dsn(dbname), autocommit=True)
        self.warnings = []
        self.conn.add_notice_handler(self._notice)
        for s in settings:
            self.run(s)

    def _notice(self, diag):
        if diag.severity_nonlocalized == "WARNING":
            self.warnings.append(diag.message_primary)

    def run(self, sql):
        """Runs `sql` with the simple query protocol; returns the first value of the last
        result, or an ('error', message) tuple."""
        res = self.conn.pgconn.exec_(sql.encode())
        if res.status not in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
            return ("error", (res.error_message or b"").decode(errors="replace").strip())
        if res.status == psycopg.pq.ExecStatus.TUPLES_OK and res.ntuples > 0:
            v = res.get_value(0, 0)
            return None if v is None else v.decode()
        return None

    def close(self):
        self.conn.close()


@pytest.fixture
def corpus_db(connect):
    c = connect()
    c.execute(SCHEMA)
    return c.info.dbname


def test_generator_covers_every_literal():
    """The generator finds literals where they are structure as well as where they are data,
    and never inside identifiers, keywords or comments."""
    assert variants("SELECT c::varchar(5) FROM qt2") == [
        "SELECT c::varchar(6) FROM qt2",
        "SELECT c::varchar(8) FROM qt2",
        "SELECT c::varchar(5.5) FROM qt2",
    ]
    assert variants("SELECT int4 'x' /* 5 */ -- 7") == ["SELECT int4 'xz' /* 5 */ -- 7"]
    assert variants("SELECT $q$a1$q$, B'10'") == [
        "SELECT $q$a2$q$, B'10'", "SELECT $q$a1$q$, B'11'", "SELECT $q$a1$q$, B'101'"]


def test_memo_ids_equal_core_ids_for_the_whole_corpus(corpus_db):
    memo = Session(corpus_db, "SET perf.verify_query_ids = off", "SET compute_query_id = auto")
    core = Session(corpus_db, "SET compute_query_id = on")
    hits_before = int(memo.run("SELECT hits FROM perf.query_id_memo()"))
    statements = compared = errors = 0
    mismatches = []
    for base, others in corpus():
        for stmt in [base, *others, base]:
            statements += 1
            mine = memo.run(wrap(stmt))
            theirs = core.run(wrap(stmt))
            if isinstance(mine, tuple) or isinstance(theirs, tuple):
                # Invalid variants (varchar(5.5), ORDER BY 3 past the list, ...) must fail
                # alike.
                if isinstance(mine, tuple) != isinstance(theirs, tuple):
                    mismatches.append((stmt, mine, theirs))
                errors += 1
                continue
            compared += 1
            if mine is None or mine != theirs:
                mismatches.append((stmt, mine, theirs))
    hits = int(memo.run("SELECT hits FROM perf.query_id_memo()")) - hits_before
    print(f"\nquery id corpus: {len(TEMPLATES)} templates, {statements} statements, "
          f"{compared} ids compared with core's jumble, {errors} invalid variants, "
          f"{hits} memo hits, {len(mismatches)} mismatches")
    for stmt, mine, theirs in mismatches:
        print(f"MISMATCH {stmt!r}: memo {mine} core {theirs}")
    assert not mismatches, "\n".join(f"{s!r}: memo {m} core {c}" for s, m, c in mismatches[:40])
    # The memo really served most of the corpus (otherwise this proves nothing).
    assert hits > compared // 4, (hits, compared)
    ours = [w for w in memo.warnings + core.warnings if w.startswith("pg_perf")]
    assert ours == [], ours
    memo.close()
    core.close()


def test_verification_finds_no_difference_in_the_corpus(corpus_db):
    """The bare statements (no wrapper), memo hits re-jumbled by perf.verify_query_ids."""
    s = Session(corpus_db, "SET perf.verify_query_ids = on", "SET compute_query_id = auto")
    count = 0
    for base, others in [*corpus(), *[(t, variants(t)) for t in BARE_ONLY]]:
        for stmt in [base, *others, base]:
            s.run(stmt)
            count += 1
    differ = [w for w in s.warnings if "differs from core" in w]
    print(f"\nverified {count} bare statements")
    assert differ == [], differ[:20]
    s.close()
