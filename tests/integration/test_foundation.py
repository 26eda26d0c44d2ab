"""The foundation as a DBA meets it: install, configure, and refuse to half-work."""

import psycopg
import pytest

from conftest import PORT, cluster, dsn

NOPRELOAD_PORT = PORT + 10


def test_create_extension_show_and_reserved_prefix(connect):
    c = connect()
    assert c.execute("SHOW perf.enabled").fetchone()[0] == "on"
    assert c.execute("SELECT perf.version()").fetchone()[0].count(".") == 2
    with pytest.raises(psycopg.errors.InvalidName) as e:
        c.execute("SET perf.nonsense = 1")
    assert "perf.nonsense" in str(e.value)
    # The extension's schema is fixed.
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        c.execute("ALTER EXTENSION pg_perf SET SCHEMA public")


def test_settings_reports_every_perf_guc(connect):
    c = connect()
    names = {r[0] for r in c.execute("SELECT name FROM perf.settings()")}
    shown = {r[0] for r in c.execute("SELECT name FROM pg_settings WHERE name LIKE 'perf.%'")}
    assert "perf.enabled" in names
    assert names == shown


def test_without_preload_create_extension_is_a_clean_error():
    cluster("start", "nopreload", str(NOPRELOAD_PORT), env={"PERF_NO_PRELOAD": "1"})
    try:
        nd = f"host=127.0.0.1 port={NOPRELOAD_PORT} user=postgres dbname=postgres"
        with psycopg.connect(nd, autocommit=True) as c:
            c.execute("DROP EXTENSION IF EXISTS pg_perf")
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
                c.execute("CREATE EXTENSION pg_perf")
            assert "shared_preload_libraries" in str(e.value)
            assert e.value.diag.message_hint and "restart" in e.value.diag.message_hint
            # The same connection still works: an ERROR, not a crash.
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        cluster("stop", "nopreload", str(NOPRELOAD_PORT))
