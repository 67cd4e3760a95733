"""Connections still out when their pool is closed, when the process forks, or
when their borrower is gone without giving them back.

Adapters that keep a borrowed connection across calls (Django's
DatabaseWrapper) give it back later, maybe after close() or in a child, or
never (a thread that ends without closing it).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable, Iterator
from time import monotonic, sleep
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from pgpool_core import ForkSafePool, _process
from pgpool_core._loans import LoanBook
from tests.harness.forking import FORKS, run_in_child
from tests.harness.postgres import PgServer

pytestmark = pytest.mark.pool(max_size=2, name="loans")


def test_putconn_after_close_closes_the_connection(pool: ForkSafePool) -> None:
    conn = pool.getconn()
    pool.close()

    pool.putconn(conn)

    assert conn.closed
    assert not pool.process_pool_open, "giving back must not make a new pool"


def test_putconn_after_release_closes_the_connection(pool: ForkSafePool) -> None:
    conn = pool.getconn()
    _process.release(pool)  # as Django's close_pool() does

    pool.putconn(conn)

    assert conn.closed
    assert not pool.process_pool_open, "giving back must not make a new pool"
    with pool.connection() as again:  # the next use opens a new pool
        assert again.execute("SELECT 1").fetchone() == (1,)


def test_putconn_after_close_in_a_forking_master(
    pool: ForkSafePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_process, "_forking_master_pid", os.getpid())
    conn = pool.getconn()  # a plain connection, no pool
    _process.close_in_master()  # as gunicorn's pre_fork hook does
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
    monkeypatch.setattr(_process, "_forking_master_pid", os.getpid())
    held = pool.getconn()  # Django's connection in a master: plain
    _process.close_in_master()
    assert held.closed

    def child() -> bool:
        inherited = pool.is_inherited(held)
        pool.putconn(held)  # ignored, not a ValueError
        return inherited

    assert run_in_child(child, fork) is True


# -- loans whose borrower is gone --------------------------------------------------


def _lost_loan_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pgpool.pool"
        and r.levelno == logging.WARNING
        and "without being given back" in r.getMessage()
    ]


def _borrow_in_thread(pool: ForkSafePool, keep: Callable[[Any], None]) -> str:
    """Borrow a connection in a thread that ends without giving it back."""

    def borrow() -> None:
        conn = pool.getconn()
        conn.execute("SELECT 1")
        keep(conn)

    thread = threading.Thread(target=borrow, name="borrower-that-forgets")
    thread.start()
    thread.join()
    return thread.name


@pytest.fixture
def lost_pool(dsn: str) -> Iterator[ForkSafePool]:
    pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=2, name="lost-loans")
    try:
        yield pool
    finally:
        pool.close()


def test_a_dropped_connection_goes_back_to_the_pool(
    lost_pool: ForkSafePool, caplog: pytest.LogCaptureFixture, pg_server: PgServer
) -> None:
    caplog.set_level(logging.INFO, logger="pgpool")
    thread = _borrow_in_thread(lost_pool, lambda conn: None)  # dropped at once

    with lost_pool.connection(timeout=2) as conn:  # PoolTimeout before the fix
        assert conn.execute("SELECT 1").fetchone() == (1,)

    stats = lost_pool.get_stats()
    assert stats["connections_lost"] == 1
    assert stats["pool_size"] == 1, "replaced up to min_size"
    (warning,) = _lost_loan_warnings(caplog)
    assert f"pool 'lost-loans': a connection lent to thread {thread!r}" in warning
    assert f"in process {os.getpid()}" in warning
    assert pg_server.password not in caplog.text


def test_a_dead_thread_in_a_reference_cycle_gives_its_connection_back(
    lost_pool: ForkSafePool, caplog: pytest.LogCaptureFixture
) -> None:
    """Django's connection wrapper holds reference cycles: after its thread ends,
    only a full garbage collection frees it, which the pool runs when it has
    nothing else to lend."""
    caplog.set_level(logging.WARNING, logger="pgpool")
    was_enabled = gc.isenabled()
    gc.disable()  # as if no collection happened to run meanwhile
    try:

        def keep_in_a_cycle(conn: Any) -> None:
            cycle: list[Any] = [conn]
            cycle.append(cycle)

        thread = _borrow_in_thread(lost_pool, keep_in_a_cycle)

        with lost_pool.connection(timeout=2) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        if was_enabled:
            gc.enable()

    assert lost_pool.get_stats()["connections_lost"] == 1
    (warning,) = _lost_loan_warnings(caplog)
    assert repr(thread) in warning


def test_a_live_loan_of_a_dead_thread_is_never_taken_back(
    lost_pool: ForkSafePool, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection handed to another thread is in use: its holder gives it back."""
    caplog.set_level(logging.WARNING, logger="pgpool")
    handed: list[psycopg.Connection[Any]] = []
    _borrow_in_thread(lost_pool, handed.append)

    with pytest.raises(PoolTimeout):
        lost_pool.getconn(timeout=0.5)

    (conn,) = handed
    assert conn.execute("SELECT 1").fetchone() == (1,), "still usable"
    lost_pool.putconn(conn)
    with lost_pool.connection(timeout=2) as again:
        assert again.execute("SELECT 1").fetchone() == (1,)
    assert "connections_lost" not in lost_pool.get_stats()
    assert _lost_loan_warnings(caplog) == []


def test_lost_loans_are_replaced_up_to_min_size(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgpool")
    with ForkSafePool(dsn, min_size=1, max_size=3, timeout=2, name="lost-3") as pool:
        first, second, kept = pool.getconn(), pool.getconn(), pool.getconn()
        assert pool.get_stats()["pool_size"] == 3
        del first, second  # collected at once: no reference cycle

        pool.putconn(kept)

        # Taken back by a pool worker the collection woke, or by putconn().
        deadline = monotonic() + 5
        while pool.get_stats().get("connections_lost", 0) < 2:
            assert monotonic() < deadline, pool.get_stats()
            sleep(0.01)
        stats = pool.get_stats()
        assert stats["connections_lost"] == 2
        assert stats["pool_size"] == 1, "min_size is held by the one given back"
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert len(_lost_loan_warnings(caplog)) == 2


def test_a_waiting_client_gets_the_place_of_a_lost_loan(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client already waiting is served when a loan is lost meanwhile.

    The collection wakes a pool worker, which takes the loan back: the
    client does not wait for someone else's next getconn() or putconn().
    """
    caplog.set_level(logging.WARNING, logger="pgpool")
    with ForkSafePool(dsn, min_size=1, max_size=1, timeout=5, name="lost-wait") as pool:
        held: list[Any] = [pool.getconn()]
        got: list[float] = []

        def wait_for_one() -> None:
            with pool.connection(timeout=5) as conn:
                conn.execute("SELECT 1")
            got.append(monotonic())

        waiter = threading.Thread(target=wait_for_one)
        waiter.start()
        deadline = monotonic() + 5
        while not pool.get_stats().get("requests_waiting") and monotonic() < deadline:
            sleep(0.01)
        assert pool.get_stats().get("requests_waiting") == 1
        dropped = monotonic()
        held.clear()  # the only reference: collected at once
        waiter.join(10)

    assert got, "the waiting client timed out"
    assert got[0] - dropped < 2, "served by the worker, not at its timeout"
    assert len(_lost_loan_warnings(caplog)) == 1


class _Borrowed:
    """Stands for a connection: weakly referable, the same size every time."""


def test_a_loan_whose_id_a_new_loan_took_is_still_lost() -> None:
    """CPython gives a new object the memory, and so the id, of one just freed.

    A connection lent after another was collected may take its place in
    the book before the pool reads the collection: the collected one's loan
    must still come back as lost, or the pool would count a connection that
    is gone for good.
    """
    book = LoanBook()
    for _ in range(1000):
        first = _Borrowed()
        book.lend(first)
        key = id(first)
        del first
        second = _Borrowed()
        if id(second) == key:
            break
        book.end(second)
        book.take_lost()
    else:
        pytest.fail("no id was reused: the case cannot be made here")
    book.lend(second)

    (lost,) = book.take_lost()
    assert lost.ref() is None
    assert [loan.ref() for loan in book.out.values()] == [second]
    assert book.take_lost() == []


def test_a_connection_given_to_another_book_keeps_its_loan() -> None:
    """Given back to the wrong pool (which refuses it), it is still lent by its own."""
    own, other = LoanBook(), LoanBook()
    conn = _Borrowed()
    own.lend(conn)
    other.end(conn)
    assert len(own.out) == 1
    own.end(conn)
    assert own.out == {}
    del conn
    assert own.take_lost() == []


class _EqualBorrowed:
    """Connections of a class whose instances all compare (and hash) equal."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EqualBorrowed)

    def __hash__(self) -> int:
        return 1


def test_connections_that_compare_equal_have_loans_of_their_own() -> None:
    book = LoanBook()
    first, second = _EqualBorrowed(), _EqualBorrowed()
    book.lend(first)
    book.lend(second)
    book.end(first)
    assert [loan.ref() for loan in book.out.values()] == [second]
    del second
    (lost,) = book.take_lost()
    assert lost.ref() is None
