"""ForkSafePool keeps psycopg_pool.ConnectionPool's public contract.

psycopg_pool's own suite runs against ForkSafePool too (``make conformance``);
these are the project's own tests of the same promises, and of the bugs that
suite found: a failing check that opened a connection storm, a connection
returned with a query in flight that was waited on.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row
from psycopg_pool import PoolClosed, PoolTimeout

from pgpool_core import ForkSafePool, _process
from tests.conftest import REPO
from tests.harness.postgres import PgServer, backend_pid, free_port

INTRANS = psycopg.pq.TransactionStatus.INTRANS


@pytest.fixture
def forking_master(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_process, "_forking_master_pid", os.getpid())


# -- open and close ----------------------------------------------------------------


def test_context_manager_opens_and_closes(dsn: str) -> None:
    with ForkSafePool(dsn, min_size=1, open=False) as pool:
        assert not pool.closed
        assert pool.process_pool_open, "entering opens this process's pool"
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.closed
    assert not pool.process_pool_open


def test_open_false_stays_closed_until_open(dsn: str) -> None:
    pool = ForkSafePool(dsn, min_size=1, open=False, name="later")
    assert pool.closed
    with pytest.raises(PoolClosed, match="'later' is not open yet"):
        pool.getconn()
    pool.open(wait=True)
    try:
        assert pool.get_stats()["pool_available"] == 1, "open(wait=True) filled it"
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
    with pytest.raises(PoolClosed, match="'later' is already closed"):
        pool.getconn()
    with pytest.raises(PoolClosed, match="cannot be reused"):
        pool.open()


def test_wait_timeout_closes_the_pool(pg_server: PgServer) -> None:
    """As ConnectionPool.wait(): PoolTimeout, and the pool is closed."""
    pool = ForkSafePool(pg_server.dsn(port=free_port()), min_size=1)
    with pytest.raises(PoolTimeout):
        pool.wait(0.5)
    assert pool.closed
    with pytest.raises(PoolClosed):
        pool.getconn()


def test_open_wait_in_a_forking_master_connects_once_without_a_pool(
    pg_server: PgServer, forking_master: None
) -> None:
    threads = threading.active_count()
    pool = ForkSafePool(pg_server.dsn(), min_size=2, open=False)
    pool.open(wait=True)
    assert not pool.closed, "open for the workers"
    assert not pool.process_pool_open
    assert threading.active_count() == threads, "no pool thread in a master"

    wrong = f"{pg_server.password}-Wrong"
    bad = ForkSafePool(pg_server.dsn(password=wrong), min_size=2, open=False)
    with pytest.raises(psycopg.OperationalError) as raised:
        bad.open(wait=True)
    assert "password authentication failed" in str(raised.value)
    assert wrong not in str(raised.value)


def test_release_keeps_it_open_close_does_not(dsn: str) -> None:
    """The hooks release what a master opened; a user's close() is for good."""
    pool = ForkSafePool(dsn, min_size=1)
    with pool.connection():
        pass
    _process.close_all()
    assert not pool.closed and not pool.process_pool_open
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.getconn()


# -- attributes, typing ------------------------------------------------------------


def test_arguments_are_kept_as_attributes_by_psycopg_names(
    pg_server: PgServer,
) -> None:
    conninfo = pg_server.dsn()
    kwargs = {"application_name": "attrs"}
    given: dict[str, Any] = {
        "kwargs": kwargs,
        "name": "attrs",
        "connection_class": psycopg.Connection,
        "min_size": 1,
        "max_size": 3,
        "close_returns": True,
        "timeout": 7.0,
        "max_waiting": 5,
        "max_lifetime": 100.0,
        "max_idle": 50.0,
        "reconnect_timeout": 20.0,
        "num_workers": 2,
    }
    pool = ForkSafePool(conninfo, open=False, **given)
    assert pool.conninfo == conninfo
    for key, value in given.items():
        assert getattr(pool, key) == value, key
    assert pg_server.password not in repr(pool)
    assert "********" in repr(pool)


def test_subscriptable_and_generic_connection_class(dsn: str) -> None:
    cls = psycopg.Connection[DictRow]
    pool: ForkSafePool[psycopg.Connection[DictRow]] = ForkSafePool[cls](
        dsn, min_size=1, connection_class=cls, kwargs={"row_factory": dict_row}
    )
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT 1 AS x").fetchone() == {"x": 1}
    finally:
        pool.close()


TYPED = """
    from psycopg import Connection
    from psycopg.rows import DictRow, TupleRow, dict_row
    from typing_extensions import assert_type

    from pgpool_core import ForkSafePool

    default = ForkSafePool("", open=False)
    assert_type(default, ForkSafePool[Connection[TupleRow]])
    assert_type(default.getconn(), Connection[TupleRow])

    dicts = ForkSafePool(
        "", connection_class=Connection[DictRow], kwargs={"row_factory": dict_row}
    )
    assert_type(dicts, ForkSafePool[Connection[DictRow]])
    with dicts as same, same.connection() as conn:
        assert_type(conn, Connection[DictRow])
        assert_type(conn.execute("SELECT 1").fetchone(), DictRow | None)
"""


@pytest.mark.slow
def test_mypy_infers_the_connection_type(tmp_path: Any) -> None:
    """Typed as ConnectionPool: the connection type follows connection_class."""
    module = tmp_path / "typed.py"
    module.write_text(textwrap.dedent(TYPED))
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        textwrap.dedent(TYPED).replace(
            "assert_type(conn, Connection[DictRow])",
            "assert_type(conn, Connection[TupleRow])",
        )
    )
    command = [sys.executable, "-m", "mypy", "--strict"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--no-error-summary"]
    good = subprocess.run([*command, str(module)], cwd=REPO, capture_output=True)
    bad = subprocess.run([*command, str(wrong)], cwd=REPO, capture_output=True)
    assert good.returncode == 0, good.stdout.decode()
    assert b'not "Connection[tuple[Any, ...]]"' in bad.stdout, bad.stdout.decode()


# -- the check ---------------------------------------------------------------------


def test_check_connection_is_psycopgs_round_trip(dsn: str, pg_server: PgServer) -> None:
    pool = ForkSafePool(
        dsn, min_size=1, max_size=1, check=ForkSafePool.check_connection
    )
    try:
        with pool.connection() as conn:
            victim = backend_pid(conn)
        pg_server.terminate(victim)
        time.sleep(0.3)  # let the FATAL message arrive on the socket
        with pool.connection() as conn:
            assert backend_pid(conn) != victim
        stats = pool.get_stats()
        # As psycopg_pool counts it: a lost connection, one request.
        assert stats["connections_lost"] == 1
        assert stats.get("returns_bad", 0) == 0
        assert stats["requests_num"] == 2
    finally:
        pool.close()


def test_a_failing_check_backs_off_and_opens_no_connection(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The storm: ~220 new TLS sessions in 2 s for one request, before."""
    caplog.set_level(logging.INFO, logger="psycopg.pool")
    checks: list[float] = []

    def check(conn: psycopg.Connection[Any]) -> None:
        checks.append(time.monotonic())
        raise RuntimeError("no")

    pool = ForkSafePool(dsn, min_size=2, check=check, name="storm")
    try:
        pool.wait()
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout, match="'storm' after 1.50 sec"):
            pool.getconn(timeout=1.5)
        assert 1.4 < time.monotonic() - t0 < 2.5
        stats = pool.get_stats()
        assert stats["connections_num"] == 2, "no connection beyond min_size"
        assert stats["pool_available"] == 2, "a live connection goes back"
    finally:
        pool.close()
    # psycopg_pool's policy: once at once, then after ~1 s.
    assert 2 <= len(checks) <= 4, checks
    failed = [r for r in caplog.records if "failed check" in r.getMessage()]
    assert failed and all(r.levelno == logging.INFO for r in failed)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- giving back -------------------------------------------------------------------


def test_a_query_in_flight_is_discarded_not_waited_on(dsn: str) -> None:
    pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=5)
    try:
        conn = pool.getconn()
        busy = backend_pid(conn)
        conn.pgconn.send_query(b"SELECT pg_sleep(5)")
        t0 = time.monotonic()
        pool.putconn(conn)
        assert time.monotonic() - t0 < 0.5
        assert conn.closed
        with pool.connection() as again:
            assert backend_pid(again) != busy
    finally:
        pool.close()


def test_an_open_transaction_is_warned_about_unless_expected(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg_pool's warning; an adapter that leaves reads uncommitted opts out."""
    caplog.set_level(logging.WARNING)
    pool = ForkSafePool(dsn, min_size=1, max_size=1)
    try:
        conn = pool.getconn()
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == INTRANS
        pool.putconn(conn, warn_open_transaction=False)
        assert caplog.records == []

        conn = pool.getconn()
        conn.execute("SELECT 1")
        pool.putconn(conn)
        [record] = caplog.records
        assert record.name == "psycopg.pool"
        # As formatted when logged (the connection is IDLE by now).
        assert "rolling back returned connection" in record.message
        assert "INTRANS" in record.message
    finally:
        pool.close()


def test_connection_counts_its_usage(dsn: str) -> None:
    pool = ForkSafePool(dsn, min_size=1)
    try:
        with pool.connection():
            time.sleep(0.2)
        assert 180 <= pool.get_stats()["usage_ms"] < 1000
    finally:
        pool.close()


# -- the exit ----------------------------------------------------------------------

EXITING = """
    import os, sys, time, warnings
    from pgpool_core import ForkSafePool

    # Python 3.12+ warns at a fork with threads running: the case under test.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded")

    pool = ForkSafePool(sys.argv[1], min_size=2)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    pool.wait()
    if sys.argv[2] == "fork":
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a child that inherited the pool exits normally
        os.waitpid(pid, 0)
        with pool.connection() as conn:  # the parent's sessions still work
            conn.execute("SELECT 1")
    print(time.time(), flush=True)
"""


@pytest.mark.parametrize("how", ["plain", "fork"])
def test_a_process_with_a_pool_open_exits_at_once(
    pg_server: PgServer, tmp_path: Any, how: str
) -> None:
    """Python 3.13.0 waited 20 s for psycopg_pool's threads: closed at exit now."""
    script = tmp_path / "exiting.py"
    script.write_text(textwrap.dedent(EXITING))
    proc = subprocess.Popen(
        [sys.executable, str(script), pg_server.dsn(), how],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    last = proc.stdout.readline()
    try:
        proc.wait(timeout=30)
    finally:
        proc.kill()
    exited = time.time()
    errors = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == 0, errors
    assert last, errors
    assert exited - float(last) < 1.0
    assert errors == ""


# -- the statistics of a loan and a return -------------------------------------------

_COUNTED = (
    "pool_size",
    "pool_available",
    "requests_num",
    "requests_queued",
    "requests_errors",
    "returns_bad",
    "connections_num",
    "connections_lost",
)


def _counted(pool: Any) -> dict[str, int]:
    stats = pool.get_stats()
    return {key: stats.get(key, 0) for key in _COUNTED}


def test_loans_and_returns_are_counted_as_psycopg_pool_counts_them(dsn: str) -> None:
    """The same loans and returns, on a ForkSafePool and on psycopg_pool's own
    ConnectionPool, give the same statistics: the usual loan and return (one
    step each in ProcessPool), a connection returned closed, one returned after
    drain(), one handed to a waiting client, one in a transaction, a timeout."""
    from psycopg_pool import ConnectionPool

    def sequence(pool: Any) -> list[dict[str, int]]:
        seen = []

        def settled() -> None:
            pool.wait(10)  # the replacements made
            time.sleep(0.2)
            seen.append(_counted(pool))

        pool.wait(10)
        for _ in range(3):
            pool.putconn(pool.getconn())
        settled()
        conn = pool.getconn()
        conn.close()
        pool.putconn(conn)  # returns_bad, replaced
        settled()
        conn = pool.getconn()
        pool.drain()
        pool.putconn(conn)  # older than the drain: closed, replaced
        settled()
        held = [pool.getconn(), pool.getconn()]
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.getconn(5)))
        waiter.start()
        deadline = time.monotonic() + 5
        while not pool.get_stats().get("requests_waiting"):
            assert time.monotonic() < deadline, "the client never waited"
            time.sleep(0.01)
        pool.putconn(held.pop())  # handed to the waiting client
        waiter.join()
        held += got
        with pytest.raises(PoolTimeout):
            pool.getconn(0.2)
        for conn in held:
            pool.putconn(conn)
        settled()
        conn = pool.getconn()
        conn.execute("SELECT 1")
        pool.putconn(conn)  # rolled back
        settled()
        return seen

    options: dict[str, Any] = {"min_size": 2, "max_size": 2, "timeout": 5}
    with ConnectionPool(dsn, open=True, **options) as theirs:
        expected = sequence(theirs)
    with ForkSafePool(dsn, **options) as ours:
        assert sequence(ours) == expected
