"""Statement texts in databases whose encoding is not UTF-8. PostgreSQL's constant locations
are byte offsets in the database encoding; normalizing a text that was first read as UTF-8
(every non-UTF-8 byte widened to a replacement character) cut constants in the wrong places
and let them reach shared memory verbatim. Each statement here has non-ASCII text (in
constants and in comments) before a constant that must never be stored."""

import uuid

import psycopg
import pytest

from conftest import dsn

# (database encoding, client encoding, statement, normalized text expected in
# perf.statements). The client sends UTF-8 or the database's own encoding; the server
# converts to the database encoding before parsing either way. Statements of one database
# differ in structure: statements that differ only in aliases and comments share one id and
# so one entry (with the first text seen).
CASES = [
    ("LATIN1", "UTF8", "SELECT 'é' /* ü */, 'topsecret'", "SELECT $1 /* ü */, $2"),
    ("LATIN1", "LATIN1", "SELECT 'ÄÖÜ' AS \"größe\", 'topsecret', true -- ß",
     "SELECT $1 AS \"größe\", $2, $3 -- ß"),
    ("LATIN1", "UTF8", "/* café */ SELECT length('naïve') + 1, 'topsecret' WHERE 'ñ' <> 'topsecret'",
     "/* café */ SELECT length($1) + $2, $3 WHERE $4 <> $5"),
    ("EUC_JP", "UTF8", "SELECT '日本' /* 日本語 */, 'topsecret'", "SELECT $1 /* 日本語 */, $2"),
    ("EUC_JP", "EUC_JP", "SELECT 'カタカナ' AS \"列\", 'topsecret', 42",
     "SELECT $1 AS \"列\", $2, $3"),
    ("EUC_JP", "UTF8", "/* 漢字 */ SELECT 'topsecret' = 'ひらがな', 'topsecret'",
     "/* 漢字 */ SELECT $1 = $2, $3"),
    ("SQL_ASCII", "UTF8", "SELECT 'é' /* ü */, 'topsecret'", "SELECT $1 /* ü */, $2"),
    ("SQL_ASCII", "UTF8", "SELECT '日本' /* 日本語 */, 'topsecret', 7", "SELECT $1 /* 日本語 */, $2, $3"),
]


@pytest.fixture(scope="module")
def encoded_dbs():
    names = {}
    with psycopg.connect(dsn(), autocommit=True) as admin:
        for enc in sorted({c[0] for c in CASES}):
            name = f"enc_{enc.lower()}_{uuid.uuid4().hex[:6]}"
            admin.execute(f"CREATE DATABASE \"{name}\" ENCODING '{enc}' TEMPLATE template0 "
                          "LC_COLLATE 'C' LC_CTYPE 'C'")
            with psycopg.connect(dsn(name), autocommit=True) as c:
                c.execute("CREATE EXTENSION pg_perf")
            names[enc] = name
    yield names
    with psycopg.connect(dsn(), autocommit=True) as admin:
        for name in names.values():
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def texts(dbname):
    """Texts of this database's statements as a UTF-8 client reads them."""
    with psycopg.connect(dsn(dbname), autocommit=True, client_encoding="UTF8") as c:
        return [r[0] for r in c.execute(
            "SELECT query FROM perf.statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()]


@pytest.mark.parametrize("enc,client,stmt,expected", CASES)
def test_normalized_text_in_non_utf8_databases(encoded_dbs, enc, client, stmt, expected):
    db = encoded_dbs[enc]
    with psycopg.connect(dsn(db), autocommit=True, client_encoding=client) as c:
        # Twice: once with the constant locations of a fresh jumble, once from the memo.
        for _ in range(2):
            c.pgconn.exec_(stmt.encode(c.info.encoding))
    found = texts(db)
    assert not [t for t in found if "topsecret" in t], found
    assert expected in found, found


def test_dml_and_utility_texts(encoded_dbs):
    """Data-modifying statements and utility statements (kept as sent) also keep their
    non-ASCII characters and lose their constants."""
    db = encoded_dbs["LATIN1"]
    with psycopg.connect(dsn(db), autocommit=True, client_encoding="UTF8") as c:
        c.execute("CREATE TABLE \"tä\" (\"ü\" text)")
        c.pgconn.exec_("INSERT INTO \"tä\" VALUES ('ö topsecret') /* é */".encode())
        c.pgconn.exec_("COMMENT ON TABLE \"tä\" IS 'schön'".encode())
    found = texts(db)
    assert "INSERT INTO \"tä\" VALUES ($1) /* é */" in found, found
    assert "COMMENT ON TABLE \"tä\" IS 'schön'" in found, found
    assert not [t for t in found if "topsecret" in t], found
