"""The PgBouncer fixtures: one in transaction mode, one in session mode."""

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

#: The time zone of session_pgbouncer's server sessions: not Django's (UTC),
#: so that only the app's own SET makes a session Django's.
SESSION_TIME_ZONE = "Asia/Tokyo"


def _binary() -> str:
    binary = find_pgbouncer()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {INSTALL_HINT} (.ci/run installs it)")
        pytest.skip(INSTALL_HINT)
    return binary


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    """PgBouncer (transaction mode, TLS on both sides) in front of pg_server."""
    bouncer = start_pgbouncer(pg_server, _binary())
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def session_pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    """PgBouncer in session mode (its default), TLS on both sides.

    Its server sessions start in :data:`SESSION_TIME_ZONE` (``RESET ALL``
    returns them there). Like any PgBouncer, it refuses startup parameters
    it does not know (``options``).
    """
    bouncer = start_pgbouncer(
        pg_server,
        _binary(),
        pool_mode="session",
        database=f"timezone={SESSION_TIME_ZONE}",
    )
    try:
        yield bouncer
    finally:
        bouncer.stop()
