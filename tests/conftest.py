"""Fixtures shared by every test: a TLS PostgreSQL cluster and real servers."""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.postgres import (
    PgServer,
    existing_server,
    start_cluster,
    stop_cluster,
)
from tests.harness.servers import RunningServer, start_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A running PostgreSQL server with TLS on (a throwaway cluster by default)."""
    dsn = os.environ.get("PGPOOL_TEST_DSN")
    if dsn:
        yield existing_server(dsn)
        return
    server = start_cluster()
    try:
        yield server
    finally:
        stop_cluster(server)


@pytest.fixture
def pg_log(pg_server: PgServer) -> PgServer:
    """The server, for a test that reads its log."""
    if not pg_server.has_log:
        pytest.skip("the server log is not readable with PGPOOL_TEST_DSN")
    return pg_server


@pytest.fixture
def running_database(pg_log: PgServer) -> Iterator[PgServer]:
    """The server, for a test that stops or restarts it: left running afterwards."""
    try:
        yield pg_log
    finally:
        if not pg_log.is_running():
            pg_log.start()
        pg_log.execute("SELECT 1")


@pytest.fixture
def dsn(pg_server: PgServer) -> str:
    """A conninfo string for the test database, TLS required."""
    return pg_server.dsn()


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """Start real servers (see start_server()); all are stopped after the test."""
    started: list[RunningServer] = []

    def start(kind: str, app: str, **options: Any) -> RunningServer:
        options.setdefault("cwd", REPO)
        server = start_server(kind, app, **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


_PACKAGES = frozenset({"pgpool_core", "flask_pgpool", "django_pgpool"})


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the calls of the validation functions, by name, from now on.

    ``validate_pool_options`` and ``validate_connection`` are wrapped under
    every name the packages' modules hold them by, so that no caller escapes.
    """
    from pgpool_core import _options

    counts: Counter[str] = Counter()
    for validate in (_options.validate_pool_options, _options.validate_connection):

        def counted(*args: Any, _validate: Any = validate, **kwargs: Any) -> Any:
            counts[_validate.__name__] += 1
            return _validate(*args, **kwargs)

        functools.update_wrapper(counted, validate)
        for name, module in list(sys.modules.items()):
            if name.partition(".")[0] in {
                "pgpool_core",
                "flask_pgpool",
                "django_pgpool",
            }:
                for attribute, value in list(vars(module).items()):
                    if value is validate:
                        monkeypatch.setattr(module, attribute, counted)
    return counts
