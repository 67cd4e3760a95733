"""Connections still out when their pool is closed, or when the process forks.

Adapters that keep a borrowed connection across calls (Django's
DatabaseWrapper) give it back later, maybe after close() or in a child.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pgpool_core import ForkSafePool, lifecycle
from tests.harness.forking import FORKS, run_in_child
from tests.harness.postgres import PgServer


@pytest.fixture
def pool(dsn: str) -> Iterator[ForkSafePool]:
    pool = ForkSafePool(dsn, min_size=1, max_size=2, timeout=5, name="loans")
    try:
        yield pool
    finally:
        pool.close()


def test_putconn_after_close_closes_the_connection(pool: ForkSafePool) -> None:
    conn = pool.getconn()
    pool.close()

    pool.putconn(conn)

    assert conn.closed
    assert not pool.process_pool_open, "giving back must not make a new pool"


def test_putconn_after_release_closes_the_connection(pool: ForkSafePool) -> None:
    conn = pool.getconn()
    lifecycle.release(pool)  # as Django's close_pool() does

    pool.putconn(conn)

    assert conn.closed
    assert not pool.process_pool_open, "giving back must not make a new pool"
    with pool.connection() as again:  # the next use opens a new pool
        assert again.execute("SELECT 1").fetchone() == (1,)


def test_putconn_after_close_in_a_forking_master(
    pool: ForkSafePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "_forking_master_pid", os.getpid())
    conn = pool.getconn()  # a plain connection, no pool
    lifecycle.close_in_master()  # as gunicorn's pre_fork hook does
    assert conn.closed

    pool.putconn(conn)

    assert not pool.process_pool_open
    assert not pool.closed, "the workers it forks will use it"


def test_putconn_of_a_foreign_connection_still_fails(
    pool: ForkSafePool, pg_server: PgServer
) -> None:
    with psycopg.connect(pg_server.dsn()) as foreign:
        with pytest.raises(ValueError, match="doesn't come from any pool"):
            pool.putconn(foreign)


@pytest.mark.parametrize("fork", FORKS.values(), ids=FORKS.keys())
@pytest.mark.parametrize("closed_first", [False, True], ids=["open", "closed"])
def test_child_drops_an_inherited_loan_without_a_pool(
    pool: ForkSafePool,
    pg_log: PgServer,
    fork: Callable[[], int],
    closed_first: bool,
) -> None:
    position = pg_log.log_position()
    held = pool.getconn()
    parent_backend = held.info.backend_pid
    if closed_first:
        pool.close()

    def child() -> dict[str, bool]:
        inherited = pool.is_inherited(held)
        pool.putconn(held)
        return {"inherited": inherited, "pool_made": pool.process_pool_open}

    assert run_in_child(child, fork) == {"inherited": True, "pool_made": False}
    assert not pool.is_inherited(held)
    # The parent's session is intact.
    assert held.execute("SELECT pg_backend_pid()").fetchone() == (parent_backend,)
    pool.putconn(held)
    assert pg_log.bad_mac_lines(position) == []


@pytest.mark.parametrize("fork", FORKS.values(), ids=FORKS.keys())
def test_child_drops_a_master_connection_closed_before_the_fork(
    pool: ForkSafePool, monkeypatch: pytest.MonkeyPatch, fork: Callable[[], int]
) -> None:
    """gunicorn's pre_fork hook closes what the master lent; a worker forgets it."""
    monkeypatch.setattr(lifecycle, "_forking_master_pid", os.getpid())
    held = pool.getconn()  # Django's connection in a master: plain
    lifecycle.close_in_master()
    assert held.closed

    def child() -> bool:
        inherited = pool.is_inherited(held)
        pool.putconn(held)  # ignored, not a ValueError
        return inherited

    assert run_in_child(child, fork) is True
