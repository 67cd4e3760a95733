"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgpool_core import ForkSafePool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pool(**options): the ForkSafePool options of the `pool` fixture"
    )


@pytest.fixture
def pool(dsn: str, request: pytest.FixtureRequest) -> Iterator[ForkSafePool]:
    """A ForkSafePool on the test database, closed after the test.

    One connection, a 5 s timeout, unless the module says otherwise with
    ``pytestmark = pytest.mark.pool(**options)`` (its name, which messages
    show, for one).
    """
    marker = request.node.get_closest_marker("pool")
    options = marker.kwargs if marker else {}
    pool = ForkSafePool(dsn, **{"min_size": 1, "max_size": 1, "timeout": 5, **options})
    try:
        yield pool
    finally:
        pool.close()
