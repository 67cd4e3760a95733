"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.blackhole import BlackHoleProxy
from tests.harness.postgres import PgServer
from tests.reliability.apps import probe


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
def notes_table(pg_server: PgServer) -> Iterator[str]:
    """The apps' table, empty."""
    pg_server.execute(f"CREATE TABLE IF NOT EXISTS {probe.TABLE} (note text)")
    pg_server.execute(f"DELETE FROM {probe.TABLE}")
    yield probe.TABLE
    pg_server.execute(f"DELETE FROM {probe.TABLE}")


@pytest.fixture
def blackhole(pg_server: PgServer) -> Iterator[BlackHoleProxy]:
    """A path to the server that a test can turn into a black hole."""
    proxy = BlackHoleProxy(pg_server.port)
    try:
        yield proxy
    finally:
        proxy.close()
