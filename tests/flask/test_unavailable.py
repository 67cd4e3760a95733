"""No connection in time: HTTP 503 with Retry-After, unless the app handles it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Blueprint, Flask
from psycopg_pool import PoolTimeout, TooManyRequests
from werkzeug.exceptions import HTTPException

from flask_pgpool import ConfigurationError, DatabaseUnavailable, PgPool
from pgpool_core import ForkSafePool
from tests.flask.apps.notes import pgpool
from tests.flask.conftest import MakeApp
from tests.harness.postgres import PgServer, free_port

TIMEOUT = 0.5


@pytest.fixture
def busy_app(make_app: MakeApp) -> Iterator[Flask]:
    """An app whose only connection is taken (by the test, not by a request)."""
    app = make_app(
        PGPOOL_MIN_SIZE=1,
        PGPOOL_MAX_SIZE=1,
        PGPOOL_TIMEOUT=TIMEOUT,
        PGPOOL_RETRY_AFTER=7,
    )
    pool: ForkSafePool = app.extensions["pgpool"].pools["default"]
    held = pool.getconn()
    yield app
    pool.putconn(held)


def test_exhausted_pool_answers_503_with_retry_after(
    busy_app: Flask, caplog: pytest.LogCaptureFixture, pg_server: PgServer
) -> None:
    started = time.monotonic()
    response = busy_app.test_client().get("/query")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert elapsed < TIMEOUT + 1
    assert b"try again later" in response.data
    assert "no connection for GET /query, answering 503: PoolTimeout" in caplog.text
    assert pg_server.password not in caplog.text + response.text


def test_unreachable_database_answers_503(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, pg_server: PgServer
) -> None:
    app = make_app(
        PGPOOL_CONNINFO=pg_server.dsn(port=free_port()),
        PGPOOL_TIMEOUT=TIMEOUT,
    )
    started = time.monotonic()
    response = app.test_client().get("/query")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5", "the default"
    assert elapsed < TIMEOUT + 1
    assert pg_server.password not in caplog.text + response.text


def test_a_host_that_holds_a_password_is_refused_without_showing_it(
    pg_server: PgServer,
) -> None:
    """Case 04's HOST: libpq takes it for a name; refused at init_app, masked."""
    host = f"host={pg_server.host} port={pg_server.port} password=Wr0ngP@ss-Leak"
    app = Flask(__name__)
    app.config.update(
        PGPOOL_CONNINFO=pg_server.dsn(host=None, password=None),
        PGPOOL_KWARGS={"host": host, "connect_timeout": 1},
    )
    with pytest.raises(ConfigurationError) as info:
        PgPool(app)
    assert info.value.setting == "PGPOOL_KWARGS['host']"
    assert "a connection string written as the host name" in str(info.value)
    assert "Leak" not in str(info.value) + repr(info.value)


def test_too_many_waiting_requests_answer_503_at_once(make_app: MakeApp) -> None:
    app = make_app(
        PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1, PGPOOL_TIMEOUT=5, PGPOOL_MAX_WAITING=1
    )
    causes: list[BaseException | None] = []

    @app.errorhandler(DatabaseUnavailable)
    def unavailable(error: DatabaseUnavailable) -> Any:
        causes.append(error.__cause__)
        return error

    pool: ForkSafePool = app.extensions["pgpool"].pools["default"]
    held = pool.getconn()
    waiter = threading.Thread(target=app.test_client().get, args=["/query"])
    waiter.start()
    try:
        while pool.get_stats().get("requests_waiting", 0) < 1:
            time.sleep(0.01)
        response = app.test_client().get("/query")
        assert response.status_code == 503
        assert [type(c) for c in causes] == [TooManyRequests]
    finally:
        pool.putconn(held)
        waiter.join()


def test_app_handler_for_pool_timeout_wins(busy_app: Flask) -> None:
    seen: list[Exception] = []

    @busy_app.errorhandler(PoolTimeout)
    def pool_timeout(error: PoolTimeout) -> Any:
        seen.append(error)
        return {"error": "busy"}, 429

    response = busy_app.test_client().get("/query")
    assert (response.status_code, response.json) == (429, {"error": "busy"})
    assert type(seen[0]) is PoolTimeout


def test_app_handler_for_a_psycopg_base_class_wins(busy_app: Flask) -> None:
    @busy_app.errorhandler(psycopg.OperationalError)
    def operational(error: psycopg.OperationalError) -> Any:
        return {"error": type(error).__name__}, 500

    response = busy_app.test_client().get("/query")
    assert (response.status_code, response.json) == (500, {"error": "PoolTimeout"})


def test_blueprint_handler_wins_in_its_blueprint(busy_app: Flask) -> None:
    reports = Blueprint("reports", __name__)

    @reports.get("/reports")
    def report() -> Any:
        return {"n": pgpool.connection.execute("SELECT 1").fetchone()}

    @reports.errorhandler(PoolTimeout)
    def busy(error: PoolTimeout) -> Any:
        return {"error": "reports are busy"}, 504

    busy_app.register_blueprint(reports)
    client = busy_app.test_client()
    assert client.get("/reports").status_code == 504
    assert client.get("/query").status_code == 503, "other views keep the 503"


def test_handler_for_503_gets_database_unavailable(busy_app: Flask) -> None:
    @busy_app.errorhandler(503)
    def unavailable(error: HTTPException) -> Any:
        assert isinstance(error, DatabaseUnavailable)
        assert isinstance(error.__cause__, PoolTimeout)
        return {"bind": error.bind, "retry_after": error.retry_after}, 503

    response = busy_app.test_client().get("/query")
    assert response.status_code == 503
    assert response.json == {"bind": "default", "retry_after": 7}


def test_catch_all_handler_gets_the_503_like_any_http_error(busy_app: Flask) -> None:
    @busy_app.errorhandler(Exception)
    def everything(error: Exception) -> Any:
        if isinstance(error, HTTPException):
            return error
        return "oops", 500

    response = busy_app.test_client().get("/query")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"


def test_outside_a_request_the_psycopg_error_is_raised(busy_app: Flask) -> None:
    with busy_app.app_context():
        with pytest.raises(PoolTimeout):
            pgpool.connection  # noqa: B018


def test_a_failed_borrow_leaves_the_context_usable(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgpool.flask")
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1, PGPOOL_TIMEOUT=TIMEOUT)
    pool: ForkSafePool = app.extensions["pgpool"].pools["default"]
    held = pool.getconn()
    client = app.test_client()
    assert client.get("/query").status_code == 503
    pool.putconn(held)
    assert client.get("/query").status_code == 200


def test_a_session_ended_by_idle_in_transaction_timeout_is_a_503(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 13: SQLSTATE 25P03 is an InternalError to psycopg; still a 503."""
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1, PGPOOL_RETRY_AFTER=7)

    @app.get("/slow")
    def slow() -> Any:
        conn = pgpool.connection
        conn.execute("SET idle_in_transaction_session_timeout = 300")
        conn.execute("SELECT 1")  # opens the transaction
        time.sleep(1)
        return {"n": conn.execute("SELECT 2").fetchone()}

    client = app.test_client()
    response = client.get("/slow")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert "idle_in_transaction_session_timeout" in response.text
    assert "answering 503: IdleInTransactionSessionTimeout" in caplog.text
    assert client.get("/query").status_code == 200, "the next request is served"
