"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgpool_core import ForkSafePool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pool(**options): the ForkSafePool options of the `pool` fixture"
    )


@pytest.fixture
def make_pool(dsn: str) -> Iterator[Callable[..., ForkSafePool]]:
    """Make ForkSafePools on the test database, all closed after the test.

    One connection and a 5 s timeout unless the options given say otherwise.
    """
    pools: list[ForkSafePool] = []

    def make(**options: Any) -> ForkSafePool:
        defaults = {"min_size": 1, "max_size": 1, "timeout": 5}
        pool = ForkSafePool(dsn, **{**defaults, **options})
        pools.append(pool)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            pool.close()


@pytest.fixture
def pool(
    make_pool: Callable[..., ForkSafePool], request: pytest.FixtureRequest
) -> ForkSafePool:
    """A ForkSafePool on the test database, closed after the test.

    One connection, a 5 s timeout, unless the module says otherwise with
    ``pytestmark = pytest.mark.pool(**options)`` (its name, which messages
    show, for one).
    """
    marker = request.node.get_closest_marker("pool")
    return make_pool(**(marker.kwargs if marker else {}))
