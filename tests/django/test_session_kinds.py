"""Nothing of one borrower reaches the next through django_pgpool, kind by kind.

The kinds, and how each is seen, are in tests/session_kinds.py. Each borrow is
Django's own: ``ensure_connection()`` takes a connection from the pool (with
what Django sets on it), ``close()`` gives it back, as at the end of a request.
psycopg's prepared statements are on, as Django's documentation says to turn
them on (``server_side_binding`` and ``prepare_threshold``), so that the kinds
about them exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from django_pgpool.base import DatabaseWrapper
from tests.harness.postgres import PgServer
from tests.session_kinds import KINDS, Kind


def borrow(wrapper: DatabaseWrapper, work: Callable[[Any], Any]) -> tuple[int, Any]:
    wrapper.ensure_connection()
    conn = wrapper.connection
    try:
        return conn.info.backend_pid, work(conn)
    finally:
        wrapper.close()


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_nothing_of_one_borrower_reaches_the_next(
    make_wrapper: Callable[..., DatabaseWrapper], pg_server: PgServer, kind: Kind
) -> None:
    wrapper = make_wrapper(
        OPTIONS={"server_side_binding": True, "prepare_threshold": 5}
    )
    dsn = pg_server.dsn()
    first = borrow(wrapper, lambda conn: kind.see(conn, dsn))
    borrow(wrapper, lambda conn: kind.leave(conn, dsn))
    assert borrow(wrapper, lambda conn: kind.see(conn, dsn)) == first
