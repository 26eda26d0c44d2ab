"""Fixtures for out-of-process tests: real clients talking to the test cluster that
scripts/test.sh starts (preloaded with pg_perf, configured from pgrx-config/)."""

import os
import subprocess
import time
import uuid

import psycopg
import pytest

PORT = int(os.environ.get("PERF_TEST_PORT", "55433"))
REPO = os.environ.get("PERF_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def dsn(dbname="postgres", **extra):
    parts = [f"host=127.0.0.1 port={PORT} user=postgres dbname={dbname}"]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


def cluster(*args, env=None):
    """Runs scripts/cluster.sh with the given arguments; raises on failure."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    subprocess.run(["bash", os.path.join(REPO, "scripts", "cluster.sh"), *args],
                   check=True, env=full_env, stdout=subprocess.DEVNULL)


@pytest.fixture
def fresh_db():
    """A new database with pg_perf created in it; dropped afterwards."""
    name = "it_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dsn(name), autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_perf")
    yield name
    with psycopg.connect(dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def connect(fresh_db):
    """Factory for autocommit connections to the fresh database; closes them all after."""
    conns = []

    def _connect(**kw):
        c = psycopg.connect(dsn(fresh_db), autocommit=True, **kw)
        conns.append(c)
        return c

    yield _connect
    for c in conns:
        c.close()


def wait_for(fn, timeout=15.0, step=0.05):
    """Polls fn() until it returns something truthy; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {fn}")
        time.sleep(step)
