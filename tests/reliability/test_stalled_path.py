"""Issue 27, 1: a path that keeps the connection open but forwards nothing.

A stuck proxy, load balancer or pooler: the TCP connection stays up and the
peer's kernel acknowledges what is sent, so keepalives and tcp_user_timeout
see nothing wrong, and libpq has no read timeout. ``socket_timeout`` bounds
each wait on the socket: the query fails with SocketTimeout (a 503 in the
frameworks), the connection is closed and never lent again, and the health
check answers within its own timeout. The framework apps under gunicorn are
in tests/reliability/test_faults.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from pgpool_core import ForkSafePool, SocketTimeout
from pgpool_core._socket_timeout import SOCKET_TIMEOUT_DEFAULT
from pgpool_core.errors import unavailable_reason
from pgpool_core.ops import health
from tests.harness.blackhole import BlackHoleProxy
from tests.harness.postgres import PgServer

#: The bound the tests set, and the slack a loaded machine may add.
SOCKET_TIMEOUT = 1.5
SLACK = 3.0


def stalled(
    pg: PgServer,
    proxy: BlackHoleProxy,
    socket_timeout: float | None = SOCKET_TIMEOUT_DEFAULT,
) -> ForkSafePool:
    """A pool of 2 connections made through *proxy*, idle, then the path stalled."""
    dsn = pg.dsn(host=proxy.host, port=proxy.port)
    pool: ForkSafePool = ForkSafePool(
        dsn, min_size=2, timeout=5, name="stalled", socket_timeout=socket_timeout
    )
    pool.wait(10)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    time.sleep(0.5)  # the answer to its reset arrives: both connections idle
    proxy.stall()
    return pool


@pytest.fixture
def stalled_pool(
    pg_server: PgServer, blackhole: BlackHoleProxy
) -> Iterator[ForkSafePool]:
    pool = stalled(pg_server, blackhole, socket_timeout=SOCKET_TIMEOUT)
    try:
        yield pool
    finally:
        pool.close(timeout=1)


def test_a_query_on_a_stalled_connection_fails_within_socket_timeout(
    stalled_pool: ForkSafePool,
) -> None:
    """The idle connection looks healthy (nothing on its socket): it is lent."""
    conn = stalled_pool.getconn()
    t0 = time.monotonic()
    with pytest.raises(SocketTimeout) as info:
        conn.execute("SELECT 2")
    elapsed = time.monotonic() - t0
    assert SOCKET_TIMEOUT <= elapsed < SOCKET_TIMEOUT + SLACK, elapsed
    message = str(info.value)
    assert "'stalled'" in message and "socket_timeout" in message, message
    assert f"{SOCKET_TIMEOUT:g} s" in message, message
    assert isinstance(info.value, psycopg.OperationalError)
    assert unavailable_reason(info.value) == (
        "the database stopped answering (socket_timeout)"
    )
    assert conn.closed, "closed locally: never lent again"
    stalled_pool.putconn(conn)
    assert stalled_pool.get_stats().get("pool_size", 0) <= 2


def test_the_health_check_answers_within_its_timeout(
    pg_server: PgServer, blackhole: BlackHoleProxy
) -> None:
    """Its SELECT 1 is bounded by the check's timeout, not by socket_timeout."""
    pool = stalled(pg_server, blackhole)  # socket_timeout: the default, 45 s
    try:
        t0 = time.monotonic()
        result = health.check_pool(pool, timeout=1.0)
        elapsed = time.monotonic() - t0
    finally:
        pool.close(timeout=1)
    assert not result.healthy, result
    assert elapsed < 1.0 + SLACK, elapsed
    assert result.reason is not None, result
    assert "health check's timeout" in result.reason, result


def test_a_busy_pool_on_a_stalled_path_is_unhealthy_within_2_s(
    pg_server: PgServer, blackhole: BlackHoleProxy
) -> None:
    """Every connection lent: the check's own connect is bounded by its timeout.

    Not by the pool's connect_timeout (10 s by default): by what is left of
    the check's timeout, or libpq's least, 2 s.
    """
    pool = stalled(pg_server, blackhole)
    held = [pool.getconn(), pool.getconn()]
    try:
        t0 = time.monotonic()
        result = health.check_pool(pool, timeout=0.5)
        elapsed = time.monotonic() - t0
    finally:
        for conn in held:
            pool.putconn(conn)
        pool.close(timeout=1)
    assert not result.healthy, result
    assert result.reason is not None and "timeout expired" in result.reason, result
    assert elapsed < 0.5 + 2 + SLACK, elapsed


def test_a_transaction_is_bounded_too(stalled_pool: ForkSafePool) -> None:
    """Commit, fetch, and the pool's own check go through the same wait."""
    done: dict[str, object] = {}

    def work() -> None:
        try:
            with stalled_pool.connection() as conn:
                with conn.transaction():
                    conn.execute("SELECT 3")
        except Exception as ex:  # noqa: BLE001 (the outcome is checked below)
            done["error"] = ex

    thread = threading.Thread(target=work)
    t0 = time.monotonic()
    thread.start()
    thread.join(SOCKET_TIMEOUT + SLACK + 5)
    assert not thread.is_alive(), "still waiting"
    assert isinstance(done.get("error"), SocketTimeout), done
    assert time.monotonic() - t0 < SOCKET_TIMEOUT + SLACK


def test_the_default_is_documented_and_generous() -> None:
    pool = ForkSafePool("host=localhost", open=False)
    assert pool.socket_timeout == SOCKET_TIMEOUT_DEFAULT == 45.0


def test_the_bound_is_on_silence_not_on_work(pg_server: PgServer) -> None:
    """Each wait is bounded, not the loan; notifies() waits as it is told.

    A query that rightly runs longer than socket_timeout goes on: the server,
    asked on a connection of the pool's own, says its backend is at work (a
    migration's CREATE INDEX is not cut). Where the pool cannot ask
    (pgbouncer=True), it fails like a stalled one, its message says which
    setting to raise, and the pool serves on.
    """
    pool = ForkSafePool(
        pg_server.dsn(), min_size=1, timeout=5, socket_timeout=1, name="work"
    )
    try:
        with pool.connection() as conn:
            t0 = time.monotonic()
            for _ in range(3):
                conn.execute("SELECT pg_sleep(0.5)")
            assert time.monotonic() - t0 > 1.5  # longer than the bound, in all
            conn.execute("LISTEN pgpool_test")
            conn.commit()
            t0 = time.monotonic()
            assert list(conn.notifies(timeout=1.5)) == []
            assert time.monotonic() - t0 >= 1.4, "notifies() waits its own timeout"
        with pool.connection() as conn:
            t0 = time.monotonic()
            assert conn.execute("SELECT 5 FROM pg_sleep(2.5)").fetchone() == (5,)
            assert time.monotonic() - t0 >= 2.5
    finally:
        pool.close()
    pool = ForkSafePool(
        pg_server.dsn(),
        min_size=1,
        timeout=5,
        socket_timeout=1,
        name="through-pgbouncer",
        pgbouncer=True,
    )
    try:
        with pool.connection() as conn:
            with pytest.raises(SocketTimeout) as info:
                conn.execute("SELECT pg_sleep(3)")
            assert conn.closed
        assert "raise socket_timeout (None: no bound)" in str(info.value)
        with pool.connection() as conn:
            assert conn.execute("SELECT 4").fetchone() == (4,)
    finally:
        pool.close()
