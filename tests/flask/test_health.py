"""PgPool.health_view(): this worker's pools, answered within about a second."""

from __future__ import annotations

import time

from flask import Flask

from tests.flask.apps.notes import pgpool
from tests.flask.conftest import MakeApp
from tests.harness.postgres import PgServer

POOL_TIMEOUT = 30.0


def health_app(make_app: MakeApp, **config: object) -> Flask:
    app = make_app(PGPOOL_TIMEOUT=POOL_TIMEOUT, **config)
    app.add_url_rule("/health/db", view_func=pgpool.health_view())
    return app


def test_healthy_with_the_server_up(make_app: MakeApp) -> None:
    app = health_app(make_app)

    response = app.test_client().get("/health/db")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body is not None
    assert body["status"] == "ok"
    default = body["databases"]["default"]
    assert default["status"] == "ok"
    assert default["reason"] is None
    assert default["stats"]["name"] == default["pool"]


def test_busy_pool_on_a_live_server_is_healthy(make_app: MakeApp) -> None:
    app = health_app(make_app, PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1)
    with app.app_context():
        held = pgpool.get_pool().getconn()  # the only connection, lent
        try:
            response = app.test_client().get("/health/db")
        finally:
            pgpool.get_pool().putconn(held)

    assert response.status_code == 200
    assert response.json is not None
    assert response.json["databases"]["default"]["reason"] == "busy"


def test_unhealthy_with_the_server_down_without_waiting_the_pool_timeout(
    make_app: MakeApp, running_database: PgServer
) -> None:
    app = health_app(make_app)
    client = app.test_client()
    assert client.get("/health/db").status_code == 200

    running_database.stop()
    start = time.monotonic()
    response = client.get("/health/db")
    elapsed = time.monotonic() - start

    assert response.status_code == 503
    body = response.json
    assert body is not None
    assert body["status"] == "unavailable"
    reason = body["databases"]["default"]["reason"]
    print(f"server down: {response.status_code} in {elapsed:.2f} s: {reason}")
    assert "Connection refused" in reason or "connection" in reason.lower()
    assert running_database.password not in response.get_data(as_text=True)
    assert elapsed < POOL_TIMEOUT / 3, elapsed

    running_database.start()
    deadline = time.monotonic() + 20
    while client.get("/health/db").status_code != 200:
        assert time.monotonic() < deadline, "still unhealthy with the server back"
        time.sleep(0.2)
