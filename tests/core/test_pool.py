"""ForkSafePool against a real TLS PostgreSQL, in one process."""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import FrameType
from typing import Any

import psycopg
import psycopg_pool.pool
import pytest
from psycopg.rows import dict_row
from psycopg_pool import PoolClosed, PoolTimeout

from pgpool_core import ForkSafePool, PoolNotAvailable, _process
from pgpool_core._process import STOP_SIGNALS
from tests.harness.postgres import PgServer, backend_pid

pytestmark = pytest.mark.pool(name="t")


def test_nothing_connects_until_first_use(pg_server: PgServer) -> None:
    before = threading.active_count()
    pool = ForkSafePool(pg_server.dsn(), min_size=1)
    assert not pool.closed, "open, as ConnectionPool(open=None) is"
    assert not pool.process_pool_open
    assert threading.active_count() == before
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.process_pool_open
    pool.close()
    assert pool.closed
    assert not pool.process_pool_open


def test_connections_use_tls_and_keepalives(pool: ForkSafePool) -> None:
    with pool.connection() as conn:
        assert conn.pgconn.ssl_in_use
        params = conn.info.get_parameters()
        assert params["keepalives"] == "1"
        assert params["keepalives_idle"] == "60"
        assert params["connect_timeout"] == "10"


def test_connection_commits_on_success_and_rolls_back_on_error(
    pool: ForkSafePool,
) -> None:
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t_commit (x int)")
        conn.execute("TRUNCATE t_commit")
    with pool.connection() as conn:
        conn.execute("INSERT INTO t_commit VALUES (1)")
    with pytest.raises(ZeroDivisionError):
        with pool.connection() as conn:
            conn.execute("INSERT INTO t_commit VALUES (2)")
            1 / 0  # noqa: B018
    with pool.connection() as conn:
        assert conn.execute("SELECT x FROM t_commit").fetchall() == [(1,)]


def test_putconn_rolls_back_an_open_transaction(pool: ForkSafePool) -> None:
    conn = pool.getconn()
    conn.execute("CREATE TEMP TABLE t_open (x int)")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    pool.putconn(conn)
    with pool.connection() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT to_regclass('pg_temp.t_open')").fetchone() == (
            None,
        )


def test_session_state_does_not_reach_the_next_borrower(pool: ForkSafePool) -> None:
    with pool.connection() as conn:
        first = backend_pid(conn)
        conn.autocommit = True
        conn.execute("SELECT set_config('application_name', 'leaked', false)")
        conn.execute("SET search_path TO leaked, public")
        conn.execute("SET statement_timeout = '1234ms'")
        conn.execute("CREATE TEMP TABLE t_leak (x int)")
        conn.execute("SELECT pg_advisory_lock(4711)")
        conn.execute("LISTEN leaked_channel")
        conn.execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
        conn.execute("CREATE TEMP SEQUENCE s_leak")
        conn.execute("SELECT nextval('s_leak')")
        conn.read_only = True
        conn.row_factory = dict_row  # type: ignore[assignment]
    time.sleep(0.2)  # the reset runs in a pool worker
    with pool.connection() as conn:
        assert backend_pid(conn) == first, "min_size=max_size=1: the same connection"
        assert not conn.autocommit
        assert conn.read_only is None
        row = conn.execute(
            "SELECT current_setting('application_name'),"
            " current_setting('search_path'),"
            " current_setting('statement_timeout'),"
            " to_regclass('pg_temp.t_leak'),"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            "  AND pid = pg_backend_pid()),"
            " (SELECT count(*) FROM pg_listening_channels()),"
            " (SELECT count(*) FROM pg_cursors)"
        ).fetchone()
        assert row == ("", '"$user", public', "0", None, 0, 0, 0)


def test_prepared_statements_survive_the_reset(dsn: str) -> None:
    pool = ForkSafePool(dsn, min_size=1, max_size=1, kwargs={"prepare_threshold": 0})
    try:
        for i in range(5):
            with pool.connection() as conn:
                assert conn.execute("SELECT %s::int + 1", [i]).fetchone() == (i + 1,)
                time.sleep(0.05)
        with pool.connection() as conn:
            prepared = conn.execute(
                "SELECT count(*) FROM pg_prepared_statements"
            ).fetchone()
            assert prepared is not None and prepared[0] >= 1
    finally:
        pool.close()


def test_an_open_transaction_is_rolled_back_keeping_prepared_statements(
    dsn: str,
) -> None:
    """The rollback on return rides with the reset; prepared statements stay.

    The server keeps prepared statements through a rollback; psycopg's own
    rollback() would forget them (and deallocate them all).
    """
    pool = ForkSafePool(dsn, min_size=1, max_size=1, kwargs={"prepare_threshold": 0})
    try:
        with pool.connection() as conn:  # prepared, committed
            assert conn.execute("SELECT %s::int * 2", [1]).fetchone() == (2,)
        conn = pool.getconn()
        assert conn.execute("SELECT %s::int * 2", [2]).fetchone() == (4,)
        conn.execute("CREATE TABLE pgpool_left_open (x int)")
        pool.putconn(conn)  # its transaction still open

        with pool.connection() as conn:
            row = conn.execute("SELECT to_regclass('pgpool_left_open')").fetchone()
            assert row == (None,)  # rolled back, not committed
            statements = {
                statement
                for (statement,) in conn.execute(
                    "SELECT statement FROM pg_prepared_statements"
                )
            }
            assert "SELECT $1::int * 2" in statements
            assert conn.execute("SELECT %s::int * 2", [4]).fetchone() == (8,)
    finally:
        pool.close()


def test_reset_reapplies_configure(dsn: str) -> None:
    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET TIME ZONE 'Asia/Tokyo'")
        conn.execute("SET application_name = 'configured'")
        conn.commit()

    pool = ForkSafePool(dsn, min_size=1, max_size=1, configure=configure)
    try:
        with pool.connection() as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute("SET application_name = 'changed'")
        time.sleep(0.2)
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT current_setting('TimeZone'),"
                " current_setting('application_name')"
            ).fetchone()
            assert row == ("Asia/Tokyo", "configured")
    finally:
        pool.close()


def test_reset_none_keeps_state(dsn: str) -> None:
    pool = ForkSafePool(dsn, min_size=1, max_size=1, reset=None)
    try:
        with pool.connection() as conn:
            conn.execute("SET application_name = 'kept'")
        with pool.connection() as conn:
            row = conn.execute("SELECT current_setting('application_name')").fetchone()
            assert row == ("kept",)
    finally:
        pool.close()


def test_terminated_connections_are_replaced_at_once(
    pg_server: PgServer, dsn: str
) -> None:
    """Every idle connection killed: the next checkout still gets one fast.

    psycopg_pool's own check loop would back off a second or more after the
    second dead connection; ours tries the next one at once.
    """
    pool = ForkSafePool(dsn, min_size=4, max_size=4, timeout=10, name="term")
    try:
        pool.wait()
        pg_server.terminate(*pg_server.client_backends(application_name=""))
        time.sleep(0.3)  # let the FATAL messages arrive on the sockets
        t0 = time.monotonic()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        elapsed = time.monotonic() - t0
        # Bounded by connecting anew, not by a back-off: generous for CI.
        assert elapsed < 3.0, elapsed
    finally:
        pool.close()


def test_an_idle_pool_lends_no_connection_older_than_max_lifetime(dsn: str) -> None:
    """psycopg_pool (psycopg#1018) looks at the age only when a connection
    comes back: after a quiet spell it would lend these two, 3 x older."""
    pool = ForkSafePool(dsn, min_size=2, max_size=2, max_lifetime=0.5, name="life")
    try:
        pool.wait()
        with pool.connection() as a, pool.connection() as b:
            first = {backend_pid(a), backend_pid(b)}
        time.sleep(1.5)  # idle: nothing given back meanwhile
        for _ in range(2):
            with pool.connection() as conn:
                age = conn.execute(
                    "SELECT extract(epoch FROM now() - backend_start)"
                    " FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                ).fetchone()
                assert backend_pid(conn) not in first
                assert age is not None and float(age[0]) < 0.5, age
        assert pool.get_stats().get("connections_lost", 0) == 0
    finally:
        pool.close()


def test_healthy_checkout_costs_no_round_trip(
    pool: ForkSafePool, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psycopg_pool import ConnectionPool

    full_checks: list[int] = []
    real_check = ConnectionPool.check_connection

    def counting_check(conn: psycopg.Connection[Any]) -> None:
        full_checks.append(conn.info.backend_pid)
        real_check(conn)

    monkeypatch.setattr(
        ConnectionPool, "check_connection", staticmethod(counting_check)
    )
    for _ in range(3):
        with pool.connection() as conn:
            victim = backend_pid(conn)
    assert full_checks == [], "a healthy connection is checked without a query"

    pg_server.terminate(victim)
    time.sleep(0.3)
    with pool.connection() as conn:
        assert backend_pid(conn) != victim
    # Found out when its reset's answer is read, or by the check (the server's
    # message was waiting on the socket): only that one was checked for real.
    assert full_checks in ([], [victim]), "only the terminated one was checked"
    stats = pool.get_stats()
    assert stats["connections_lost"] == 1, "counted as a failed check counts it"


def test_the_usual_loan_and_return_take_one_step_each(pool: ForkSafePool) -> None:
    """A connection idle in the pool is lent, and given back, by ProcessPool's
    getconn() and putconn() alone, which do what psycopg_pool's nested steps
    would (pgpool_core._psycopg_pool): none of those runs, and psycopg_pool's
    statistics count the loans as its steps do."""
    pool.putconn(pool.getconn())  # this process's pool made, its connection idle
    before = pool.get_stats()
    ran: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename == psycopg_pool.pool.__file__:
            ran.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        for _ in range(3):
            pool.putconn(pool.getconn())
    finally:
        sys.setprofile(None)
    assert ran == []
    stats = pool.get_stats()
    assert stats["requests_num"] == before["requests_num"] + 3
    assert stats["pool_available"] == 1
    for key in ("requests_queued", "requests_errors", "returns_bad"):
        assert stats.get(key, 0) == before.get(key, 0), key


def test_exhaustion_raises_pool_timeout_naming_the_pool(pool: ForkSafePool) -> None:
    with pool.connection():
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout, match="pool 't' after 0.50 sec"):
            pool.getconn(timeout=0.5)
        assert time.monotonic() - t0 < 1.5


def test_stats_have_pid_and_name_and_no_password(pool: ForkSafePool) -> None:
    import os

    with pool.connection():
        stats = pool.stats()
    assert stats["pid"] == os.getpid()
    assert stats["name"] == "t"
    assert stats["pool_max"] == 1
    assert "password" not in repr(stats) and "pgpool-test" not in repr(stats)


def test_closed_is_closed_for_good(pool: ForkSafePool) -> None:
    """As ConnectionPool: a user who closed a pool wants its later use caught."""
    with pool.connection():
        pass
    pool.close()
    assert pool.closed
    with pytest.raises(PoolClosed, match="'t' is already closed"):
        pool.getconn()
    with pytest.raises(PoolClosed, match="cannot be reused"):
        pool.open()
    assert pool.get_stats()["requests_num"] == 1, "the closed pool's statistics"


def test_release_leaves_the_pool_open(pool: ForkSafePool) -> None:
    """What the server hooks and Django's close_pool() do: the next use reopens."""
    with pool.connection() as conn:
        first = backend_pid(conn)
    _process.release(pool)
    assert not pool.closed
    assert not pool.process_pool_open
    with pool.connection() as conn:
        assert backend_pid(conn) != first


def test_a_dropped_pool_is_not_warmed_up(pool: ForkSafePool) -> None:
    """What Django's close_pool() does: the server hooks warm only pools that serve.

    Until it is borrowed from again.
    """
    (pools,) = [p for p in _process.all_pools() if p.owner() is pool]
    with pool.connection():
        pass
    _process.drop(pool)
    assert not pool.closed
    pools.warm_up()  # what warm_up_all() does for each pool
    assert not pool.process_pool_open
    with pool.connection():
        pass
    _process.release(pool)
    pools.warm_up()
    assert pool.process_pool_open


def test_pool_threads_block_stop_signals(pool: ForkSafePool) -> None:
    pool.open(wait=True)
    threads = [t for t in threading.enumerate() if t.name.startswith("t-")]
    assert threads, "the pool has worker threads"
    for thread in threads:
        with open(f"/proc/self/task/{thread.native_id}/status") as f:
            blocked = next(
                int(line.split()[1], 16) for line in f if line.startswith("SigBlk:")
            )
        for signum in STOP_SIGNALS:
            assert blocked & (1 << (signum - 1)), (thread.name, signum)
    # The main thread still takes them.
    with open(f"/proc/self/task/{threading.main_thread().native_id}/status") as f:
        blocked = next(
            int(line.split()[1], 16) for line in f if line.startswith("SigBlk:")
        )
    assert not any(blocked & (1 << (s - 1)) for s in STOP_SIGNALS)


def test_forking_master_uses_plain_connections(
    monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    from pgpool_core import _process

    monkeypatch.setattr(_process, "_forking_master_pid", None)
    _process.mark_forking_master()
    before = {t.ident for t in threading.enumerate()}
    pool = ForkSafePool(dsn, min_size=2, name="master")
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert conn.closed, "a forking master's connection is closed when returned"
    assert {t.ident for t in threading.enumerate()} == before, "no pool thread"
    with pytest.raises(PoolNotAvailable, match="forking server's master"):
        pool.pool  # noqa: B018
    assert pool.stats()["forking_master"] is True


def test_info_log_never_shows_the_password(
    caplog: pytest.LogCaptureFixture, pg_server: PgServer
) -> None:
    caplog.set_level(logging.DEBUG)
    pool = ForkSafePool(pg_server.dsn(), min_size=1, name="quiet")
    with pool.connection():
        pass
    pool.close()
    assert pg_server.password not in caplog.text


def test_connect_gives_a_configured_unpooled_connection(dsn: str) -> None:
    configured: list[int] = []
    pool = ForkSafePool(
        dsn, min_size=1, configure=lambda c: configured.append(backend_pid(c))
    )
    with pool.connect() as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.info.get_parameters()["keepalives"] == "1"
        assert configured == [backend_pid(conn)]
    assert conn.closed
    assert not pool.process_pool_open, "connect() makes no pool"
