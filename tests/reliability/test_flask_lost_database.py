"""flask_pgpool: a view whose database goes away mid-request answers 503.

Under a server, tests/reliability/test_faults.py shows it with a black hole;
here, in one process, the rules: which errors make a 503, and that the app's
own handlers still win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from werkzeug.exceptions import HTTPException

from flask_pgpool import DatabaseUnavailable, PgPool
from tests.harness.postgres import PgServer


@pytest.fixture
def app(pg_server: PgServer) -> Iterator[Flask]:
    """An app whose /lost view loses its connection, and /cancelled times out."""
    app = Flask(__name__)
    app.config.update(
        PGPOOL_CONNINFO=pg_server.dsn(),
        PGPOOL_MIN_SIZE=1,
        PGPOOL_MAX_SIZE=2,
        PGPOOL_TIMEOUT=5,
        PGPOOL_RETRY_AFTER=9,
    )
    pgpool = PgPool(app)

    @app.get("/lost")
    def lost() -> dict[str, Any]:
        conn = pgpool.connection
        pid = conn.info.backend_pid
        pg_server.terminate(pid)
        conn.execute("SELECT 1")  # the server has ended the session
        return {}

    @app.get("/idle")
    def idle() -> dict[str, Any]:
        conn = pgpool.connection
        conn.execute("SET idle_session_timeout = 100")
        conn.commit()
        time.sleep(0.5)  # the server ends the idle session meanwhile
        conn.execute("SELECT 1")
        return {}

    @app.get("/ok")
    def ok() -> dict[str, Any]:
        return {"n": pgpool.connection.execute("SELECT 1").fetchone()}

    @app.get("/cancelled")
    def cancelled() -> dict[str, Any]:
        pgpool.connection.execute("SET statement_timeout = 10")
        pgpool.connection.execute("SELECT pg_sleep(1)")
        return {}

    yield app
    for pool in app.extensions["pgpool"].pools.values():
        pool.close()


@pytest.mark.parametrize(
    ("path", "error"),
    [("/lost", "AdminShutdown"), ("/idle", "IdleSessionTimeout")],
    ids=["terminated", "idle-session-timeout"],
)
def test_lost_connection_answers_503(
    app: Flask,
    pg_server: PgServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    error: str,
) -> None:
    caplog.set_level(logging.WARNING, "pgpool.flask")
    response = app.test_client().get(path)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "9"
    assert f"during GET {path}, answering 503: {error}: terminating" in caplog.text
    assert pg_server.password not in caplog.text + response.text
    assert app.test_client().get("/ok").status_code == 200, "a healthy connection"


def test_other_operational_errors_stay_500(app: Flask) -> None:
    response = app.test_client().get("/cancelled")
    assert response.status_code == 500


def test_the_apps_handler_for_a_psycopg_class_wins(app: Flask) -> None:
    seen: list[Exception] = []

    @app.errorhandler(psycopg.Error)
    def database_error(error: psycopg.Error) -> Any:
        seen.append(error)
        return {"error": type(error).__name__}, 502

    assert app.test_client().get("/lost").status_code == 502
    assert app.test_client().get("/cancelled").status_code == 502
    assert [type(e) for e in seen][1] is psycopg.errors.QueryCanceled
    assert isinstance(seen[0], psycopg.OperationalError)


def test_a_catch_all_handler_gets_the_503(app: Flask) -> None:
    seen: list[Exception] = []

    @app.errorhandler(Exception)
    def everything(error: Exception) -> Any:
        seen.append(error)
        if isinstance(error, HTTPException):
            return error
        return "oops", 500

    assert app.test_client().get("/lost").status_code == 503
    assert app.test_client().get("/cancelled").status_code == 500
    assert isinstance(seen[0], DatabaseUnavailable)
    assert isinstance(seen[0].__cause__, psycopg.OperationalError)
    assert type(seen[1]) is psycopg.errors.QueryCanceled


def test_a_handler_registered_before_init_app_is_kept(pg_server: PgServer) -> None:
    app = Flask(__name__)
    app.config.update(PGPOOL_CONNINFO=pg_server.dsn(), PGPOOL_MIN_SIZE=1)

    @app.errorhandler(psycopg.OperationalError)
    def own(error: psycopg.OperationalError) -> Any:
        return "own", 500

    PgPool(app)
    handlers = app.error_handler_spec[None][None]
    assert handlers[psycopg.OperationalError] is own
