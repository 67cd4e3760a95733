"""Test databases made and dropped with the pooled backend.

pytest-django (--create-db, --reuse-db, xdist) and ``manage.py test`` run in
processes of their own, on test databases named here. Their tests leave
pooled connections to the test database open, through the default alias, a
mirror alias and a copy of the connection, each with a pool of its own: it
must be dropped all the same, without "database ... is being accessed by
other users".
"""

from __future__ import annotations

import subprocess

import pytest

from tests.django.support import MANAGE, run_project
from tests.harness.postgres import PgServer

pytestmark = pytest.mark.slow

INNER = "tests/django/inner_db.py"
BUSY = "is being accessed by other users"
# A "replica" alias mirrored to "default" (tests/django/settings.py).
TEST_DB_ENV = {"PGPOOL_APP_REPLICA": "1"}


def databases_like(pg: PgServer, prefix: str) -> list[str]:
    rows = pg.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
        [prefix + "%"],
    )
    return [row[0] for row in rows]


@pytest.fixture
def test_db(pg_server: PgServer, request: pytest.FixtureRequest) -> str:
    """A test database name of this test's own, dropped before and after."""
    name = "test_pgpool_" + request.node.name.split("[")[0].removeprefix("test_")

    def drop() -> None:
        for datname in databases_like(pg_server, name):
            pg_server.execute(f'DROP DATABASE "{datname}" WITH (FORCE)')

    drop()
    request.addfinalizer(drop)
    return name


def run_pytest(
    env: dict[str, str], test_db: str, *args: str
) -> subprocess.CompletedProcess[str]:
    result = run_project(
        "-m",
        "pytest",
        INNER,
        "-p",
        "no:cacheprovider",
        *args,
        env={**env, **TEST_DB_ENV, "PGPOOL_APP_TEST_DB": test_db, "PYTHONWARNINGS": ""},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "3 passed" in output, output
    assert BUSY not in output
    return result


def test_pytest_create_db(
    app_env: dict[str, str], pg_server: PgServer, test_db: str
) -> None:
    run_pytest(app_env, test_db, "--create-db")
    assert databases_like(pg_server, test_db) == []


def test_pytest_reuse_db(
    app_env: dict[str, str], pg_server: PgServer, test_db: str
) -> None:
    run_pytest(app_env, test_db, "--reuse-db")
    assert databases_like(pg_server, test_db) == [test_db]
    run_pytest(app_env, test_db, "--reuse-db")
    assert databases_like(pg_server, test_db) == [test_db]
    # --create-db drops the kept database first.
    run_pytest(app_env, test_db, "--reuse-db", "--create-db")
    assert databases_like(pg_server, test_db) == [test_db]


def test_pytest_xdist(
    app_env: dict[str, str], pg_server: PgServer, test_db: str
) -> None:
    result = run_pytest(app_env, test_db, "--create-db", "-n", "2", "-v")
    assert "[gw0]" in result.stdout and "[gw1]" in result.stdout
    assert databases_like(pg_server, test_db) == []


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_manage_py_test(
    app_env: dict[str, str], pg_server: PgServer, test_db: str, parallel: str
) -> None:
    result = run_project(
        MANAGE,
        "test",
        "tests.django.testapp",
        "--pattern",
        "runner_*.py",
        "--noinput",
        "--parallel",
        parallel,
        "-v",
        "2",
        env={**app_env, **TEST_DB_ENV, "PGPOOL_APP_TEST_DB": test_db},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Ran 3 tests" in output and "\nOK" in output, output
    assert BUSY not in output
    assert databases_like(pg_server, test_db) == []
