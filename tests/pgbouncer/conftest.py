"""The PgBouncer fixture: one PgBouncer in transaction mode for these tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.pgbouncer import (
    INSTALL_HINT,
    PgBouncer,
    find_pgbouncer,
    start_pgbouncer,
)
from tests.harness.postgres import PgServer


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    """PgBouncer (transaction mode, TLS on both sides) in front of pg_server."""
    binary = find_pgbouncer()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {INSTALL_HINT} (.ci/run installs it)")
        pytest.skip(INSTALL_HINT)
    bouncer = start_pgbouncer(pg_server, binary)
    try:
        yield bouncer
    finally:
        bouncer.stop()
