"""Fixtures of the flask_pgpool tests: apps from the factory, on the TLS server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.flask.apps.notes import create_app
from tests.harness.postgres import PgServer

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(pg_server: PgServer) -> Iterator[MakeApp]:
    """Return create_app() on the test database; close the apps' pools afterwards."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        config.setdefault("PGPOOL_CONNINFO", pg_server.dsn())
        app = create_app(**config)
        made.append(app)
        return app

    yield make
    for app in made:
        for pool in app.extensions["pgpool"].pools.values():
            pool.close()


@pytest.fixture(scope="session")
def reports_db(pg_server: PgServer) -> str:
    """A second database on the server, for a second bind."""
    name = "pgpool_flask_reports"
    if not pg_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]):
        pg_server.execute(f"CREATE DATABASE {name}")
    return name


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
