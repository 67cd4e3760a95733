"""Issue 15: ``check`` and ``stats`` print one shape in both frameworks.

The real commands (``flask pgpool ...``, ``manage.py pgpool ...``) on the same
database, with the database up, down, and refusing the login: the same keys,
the same verdict and reason, the same exit status (0 when usable, 1 when not;
``pgpool_core.ops.report``), and ``stats`` tells a database down from one up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pgpool_core.ops import report
from tests.django.support import MANAGE, run_project
from tests.flask.support import run_flask
from tests.harness.postgres import PgServer, free_port


def run(framework: str, *args: str, dsn: str) -> tuple[int, Any, str]:
    env = {"PGPOOL_APP_DSN": dsn, "DJANGO_SETTINGS_MODULE": "tests.django.settings"}
    if framework == "flask":
        proc = run_flask(
            "tests.flask.apps.notes:create_app()", "pgpool", *args, env=env
        )
    else:
        proc = run_project(MANAGE, "pgpool", *args, env=env)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def dsn_of(pg: PgServer, state: str) -> str:
    if state == "down":
        return pg.dsn(port=free_port())
    if state == "refused":
        return pg.dsn(password="not-the-Password")
    return pg.dsn()


@pytest.mark.parametrize("state", ["up", "down", "refused"])
@pytest.mark.parametrize("command", ["stats", "check --json"])
def test_one_shape_one_verdict(pg_server: PgServer, state: str, command: str) -> None:
    dsn = dsn_of(pg_server, state)
    results = {}
    for framework in ("flask", "django"):
        started = time.monotonic()
        code, printed, stderr = run(framework, *command.split(), dsn=dsn)
        elapsed = time.monotonic() - started
        results[framework] = (code, printed["default"], elapsed)
        assert pg_server.password not in json.dumps(printed) + stderr
    (flask_code, flask, flask_took), (django_code, django, django_took) = (
        results["flask"],
        results["django"],
    )

    assert flask.keys() == django.keys()
    expected = report.EXIT_OK if state == "up" else report.EXIT_FAILED
    assert flask_code == django_code == expected
    assert flask["ok"] is django["ok"] is (state == "up")
    assert flask["reason"] == django["reason"]
    if state == "up":
        assert flask["error"] is django["error"] is None
    else:
        assert (
            flask["reason"]
            == {
                "down": "the database cannot be reached",
                "refused": "the database refused the login",
            }[state]
        )
        for entry in (flask, django):
            assert ("Connection refused" if state == "down" else "password") in (
                entry["error"]
            )
        # Not the pools' timeouts (5 s and 10 s): the first failure says it.
        assert max(flask_took, django_took) < 20
    if command == "stats":
        assert "pool_min" in flask["stats"] and "pool_min" in django["stats"]
        for entry in (flask, django):
            assert (entry["stats"].get("pool_available", 0) >= 1) is (state == "up")
    elif state == "up":
        assert flask["server"].keys() == django["server"].keys()
        for key in ("version", "max_connections", "dbname", "user", "port"):
            assert flask["server"][key] == django["server"][key]
        assert flask["server"]["tls"] and django["server"]["tls"]


def test_django_stats_down_differs_from_up(pg_server: PgServer) -> None:
    """The issue: it printed the same pool statistics and exited 0 either way."""
    up_code, up, _ = run("django", "stats", dsn=pg_server.dsn())
    down_code, down, _ = run("django", "stats", dsn=dsn_of(pg_server, "down"))
    assert (up_code, down_code) == (0, 1)
    assert up["default"]["ok"] and not down["default"]["ok"]
    assert up["default"]["stats"]["pool_available"] >= 1
    assert down["default"]["stats"].get("pool_available", 0) == 0
    assert down["default"]["stats"].get("connections_errors", 0) >= 1


def test_a_stats_report_that_times_out_leaves_the_pool_usable(dsn: str) -> None:
    """``pgpool stats`` in a running process must not close the app's pool.

    ForkSafePool.wait() closes the pool on a timeout, as ConnectionPool.wait()
    does; the report waits on this process's pool instead.
    """
    from pgpool_core import ForkSafePool

    def slow(conn: Any) -> None:
        time.sleep(0.5)

    # One worker makes the 4 connections one after the other: 2 s.
    pool = ForkSafePool(
        dsn, min_size=4, max_size=4, num_workers=1, timeout=1, configure=slow
    )
    try:
        entry = report.pool_stats(pool, conninfo="masked", mask=str)
        assert not entry["ok"], entry  # min_size not reached in time
        with pool.connection(timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
