"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.blackhole import BlackHoleProxy
from tests.harness.postgres import PgServer
from tests.reliability.apps import probe


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
