"""The reset between two borrowers: sent on return, settled before the next use.

The returning borrower waits for no round trip: its connection goes back to
psycopg_pool's deque *settling*, and the reset's answer is read before anything
uses it again. These tests hold the reset back on the server (a lock that
``DISCARD TEMP`` waits for) to catch a connection while it settles.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.adapt import Buffer, Dumper, Loader, PyFormat
from psycopg.pq import Format as PqFormat
from psycopg.rows import dict_row
from psycopg.types import TypeInfo
from psycopg_pool import ConnectionPool, PoolTimeout

from pgpool_core import ForkSafePool, _reset, borrower
from pgpool_core._reset import is_settling
from pgpool_core.pool import DEFAULT
from tests.harness.delayproxy import DelayProxy
from tests.harness.forking import run_in_child
from tests.harness.postgres import PgServer, backend_pid
from tests.session_kinds import KINDS, Kind

Connection = psycopg.Connection[Any]


pytestmark = pytest.mark.pool(name="settle")


@contextmanager
def settling(pool: ForkSafePool, pg_server: PgServer) -> Iterator[Connection]:
    """Give a connection back; its reset waits (on the server) until the block ends.

    The borrower leaves a temporary table; dropping it writes pg_depend, which
    an EXCLUSIVE lock held by another (superuser's) session keeps waiting.
    """
    conn = pool.getconn()
    conn.execute("CREATE TEMP TABLE pgpool_settling (x int)")
    conn.commit()
    with pg_server.connect() as blocker, blocker.transaction():
        blocker.execute("LOCK TABLE pg_catalog.pg_depend IN EXCLUSIVE MODE")
        t0 = time.monotonic()
        pool.putconn(conn)
        assert time.monotonic() - t0 < 1.0, "putconn waited for the reset"
        assert is_settling(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE
        assert waiting_for_lock(pg_server, backend_pid(conn))
        yield conn


def waiting_for_lock(pg_server: PgServer, pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = pg_server.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
        )
        if rows and rows[0][0] == "Lock":
            return True
        time.sleep(0.02)
    return False


# -- settling ------------------------------------------------------------------------


def test_putconn_does_not_wait_for_the_reset(
    pool: ForkSafePool, pg_server: PgServer
) -> None:
    with settling(pool, pg_server) as conn:
        # In psycopg_pool's deque, counted as available, as any returned one.
        assert pool.get_stats()["pool_available"] == 1
    with pool.connection() as again:
        assert again is conn and not is_settling(again)
        row = again.execute("SELECT to_regclass('pg_temp.pgpool_settling')")
        assert row.fetchone() == (None,)


def test_a_waiting_borrower_gets_the_connection_reset(pool: ForkSafePool) -> None:
    conn = pool.getconn()
    conn.execute("SET application_name = 'left by A'")
    conn.commit()
    seen: list[Any] = []

    def wait_for_it() -> None:
        with pool.connection() as other:
            seen.append(other.execute("SHOW application_name").fetchone())

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.3)  # waiting in psycopg_pool's queue
    pool.putconn(conn)  # handed straight to the waiter, settling
    waiter.join(5)
    assert seen == [("",)]


def test_a_failed_reset_is_never_lent(
    pool: ForkSafePool, pg_server: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    with settling(pool, pg_server) as conn:
        victim = backend_pid(conn)
        pg_server.execute("SELECT pg_cancel_backend(%s)", [victim])
    with pool.connection() as again:
        assert backend_pid(again) != victim
    assert conn.closed
    assert pool.get_stats()["connections_lost"] == 1
    [record] = [r for r in caplog.records if "error resetting" in r.message]
    assert record.levelno == logging.WARNING
    assert "canceling statement" in record.message


def test_a_reset_not_answered_in_time_is_discarded(
    pool: ForkSafePool, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reset, "SETTLE_TIMEOUT", 0.5)
    with settling(pool, pg_server) as conn:
        t0 = time.monotonic()
        with pool.connection() as again:
            assert again is not conn
            assert again.execute("SELECT 1").fetchone() == (1,)
        assert 0.5 <= time.monotonic() - t0 < 4
    assert conn.closed
    assert pool.get_stats()["connections_lost"] == 1


def test_a_reset_not_answered_waits_no_longer_than_the_client(
    pool: ForkSafePool, pg_server: PgServer
) -> None:
    """getconn(timeout=...) and the health check's wait bound the settling too."""
    with settling(pool, pg_server) as conn:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.5)
        waited = time.monotonic() - t0
    assert waited < 2, f"waited {waited:.1f} s: SETTLE_TIMEOUT, not the client's 0.5 s"
    assert conn.closed


def test_check_settles_first(pool: ForkSafePool, pg_server: PgServer) -> None:
    with pool.connection() as conn:
        first = backend_pid(conn)
    pool.check()  # ConnectionPool.check() on a settling connection
    stats = pool.get_stats()
    assert stats.get("connections_lost", 0) == 0
    assert stats["pool_available"] == 1
    with pool.connection() as conn:
        assert backend_pid(conn) == first

    with settling(pool, pg_server) as conn:
        pg_server.execute("SELECT pg_cancel_backend(%s)", [backend_pid(conn)])
        pool.check()  # its reset failed: lost, replaced
    assert conn.closed
    assert pool.get_stats()["connections_lost"] == 1
    with pool.connection() as again:
        assert backend_pid(again) not in (first, 0)


def test_drain_and_close_with_settling_connections(
    pool: ForkSafePool, pg_server: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with settling(pool, pg_server) as conn:
        pool.drain()
        assert conn.closed
    with pool.connection(timeout=3) as fresh:
        assert fresh is not conn
    with settling(pool, pg_server) as conn:
        t0 = time.monotonic()
        pool.close()
        assert time.monotonic() - t0 < 2
        assert conn.closed
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_stats_keep_psycopg_pools_shape(
    pool: ForkSafePool, pg_server: PgServer, dsn: str
) -> None:
    with settling(pool, pg_server):
        stats = pool.get_stats()
    with ConnectionPool(dsn, min_size=1, max_size=1) as plain:
        conn = plain.getconn()  # as settling() borrows
        conn.execute("CREATE TEMP TABLE pgpool_settling (x int)")
        conn.commit()
        plain.putconn(conn)
        expected = plain.get_stats()
    assert stats.keys() == expected.keys()
    assert stats["pool_available"] == stats["pool_size"] == 1


def test_a_settling_connection_at_fork_is_abandoned(
    pool: ForkSafePool, pg_log: PgServer
) -> None:
    position = pg_log.log_position()
    with settling(pool, pg_log) as conn:
        parent = backend_pid(conn)

        def child() -> int:
            with pool.connection() as mine:
                return backend_pid(mine)

        assert run_in_child(child) != parent
        assert not conn.closed and is_settling(conn)
    with pool.connection() as again:  # the child touched none of it
        assert again is conn
        assert again.execute("SELECT 1").fetchone() == (1,)
    assert pg_log.bad_mac_lines(position) == []


def test_a_query_the_borrower_left_running_is_closed(pool: ForkSafePool) -> None:
    """Not to be confused with our own reset in flight: that one is waited for."""
    conn = pool.getconn()
    conn.pgconn.send_query(b"SELECT pg_sleep(5)")
    t0 = time.monotonic()
    pool.putconn(conn)
    assert time.monotonic() - t0 < 0.5
    assert conn.closed and not is_settling(conn)


@pytest.mark.parametrize(
    "block",
    ["transaction", "pipeline", "notifies", "two-phase", "notifies, suspended"],
)
def test_client_state_that_cannot_be_undone_is_not_lent(
    pool: ForkSafePool, block: str
) -> None:
    """Each refused before anything is sent: the reset's shortcuts too (a
    loan that ran nothing, or only a read)."""
    conn = pool.getconn()
    first = backend_pid(conn)
    held: list[Any] = []  # the borrower's objects, still alive
    if block == "transaction":
        held.append(conn.transaction())
        held[0].__enter__()
    elif block == "pipeline":
        held.append(conn.pipeline())
        held[0].__enter__()
    elif block == "two-phase":
        conn.tpc_begin(conn.xid(1, "pgpool", "settle"))
        conn.execute("SELECT 1")
    elif block == "notifies, suspended":
        conn.execute("LISTEN pgpool_suspended")
        conn.execute("NOTIFY pgpool_suspended, 'one'")
        conn.commit()
        held.append(conn.notifies(timeout=1))
        assert next(held[0]).payload == "one"  # suspended, the lock held
    else:
        notifies = conn.notifies(timeout=0.1)
        for _ in notifies:  # pragma: no cover - nothing is notified
            pass
        conn._notifies_backlog = None  # as while a notifies() generator runs
    pool.putconn(conn)
    assert conn.closed
    with pool.connection() as again:
        assert backend_pid(again) != first


# -- what the reset undoes, kind by kind -------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_nothing_of_one_borrower_reaches_the_next(dsn: str, kind: Kind) -> None:
    pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=5, name="kinds")
    try:
        conn = pool.getconn()
        first = backend_pid(conn)
        baseline = kind.see(conn, dsn)
        pool.putconn(conn)

        conn = pool.getconn()
        kind.leave(conn, dsn)
        pool.putconn(conn)

        conn = pool.getconn()
        assert backend_pid(conn) == first, "the same connection"
        assert kind.see(conn, dsn) == baseline
        pool.putconn(conn)
    finally:
        pool.close()


def test_psycopgs_own_statements_are_kept(pool: ForkSafePool) -> None:
    """The server keeps them through a rollback, and the reset keeps them."""
    for _ in range(3):
        conn = pool.getconn()
        conn.execute("SELECT %s::int * 3", [1], prepare=True)
        conn.execute("PREPARE pgpool_users AS SELECT 1")  # dropped, theirs stay
        pool.putconn(conn, warn_open_transaction=False)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT statement, from_sql FROM pg_prepared_statements"
        ).fetchall()
        assert rows == [("SELECT $1::int * 3", False)]


# -- a write rolled back -----------------------------------------------------------


def test_a_rolled_back_write_is_warned_about_naming_the_borrower(
    pool: ForkSafePool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pgpool_writes (x int)")

    conn = pool.getconn()
    conn.execute("SELECT count(*) FROM pgpool_writes")  # read only: no warning
    with borrower("GET /count"):
        pool.putconn(conn, warn_open_transaction=False)
    conn = pool.getconn()
    conn.execute("INSERT INTO pgpool_writes VALUES (1)")
    with borrower("POST /forgot-to-commit"):
        pool.putconn(conn, warn_open_transaction=False)
    assert caplog.records == [], "nothing is waited for on return"

    with pool.connection() as conn:  # logged when it settles
        assert conn.execute("SELECT count(*) FROM pgpool_writes").fetchone() == (0,)
    [record] = caplog.records
    assert record.name == "pgpool.pool"
    assert "POST /forgot-to-commit" in record.message
    assert "'settle'" in record.message and "rolled back" in record.message


def test_an_unannounced_rollback_gets_psycopg_pools_warning_only(
    pool: ForkSafePool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    conn = pool.getconn()
    conn.execute("CREATE TEMP TABLE pgpool_unannounced (x int)")
    pool.putconn(conn)
    with pool.connection():
        pass
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "rolling back returned connection"
    ]


def test_reset_none_rolls_back_with_a_bare_rollback(
    dsn: str, pg_log: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No warning there: asking whether it wrote would be a SELECT of its own."""
    caplog.set_level(logging.WARNING)
    pool = ForkSafePool(
        dsn,
        min_size=1,
        max_size=1,
        reset=None,
        kwargs={"options": "-c log_statement=all"},
    )
    try:
        conn = pool.getconn()
        conn.execute("CREATE TEMP TABLE pgpool_no_reset (x int)")
        position = pg_log.log_position()
        pool.putconn(conn, warn_open_transaction=False)
        with pool.connection() as conn:
            row = conn.execute("SELECT to_regclass('pg_temp.pgpool_no_reset')")
            assert row.fetchone() == (None,)
        logged = pg_log.log_since(position)
    finally:
        pool.close()
    assert caplog.records == []
    assert "statement: ROLLBACK\n" in logged
    assert "pg_current_xact_id_if_assigned" not in logged


@pytest.mark.parametrize("left_open", [False, True], ids=["idle", "a read left open"])
def test_reset_none_keeps_the_borrowers_handlers_and_notifications(
    dsn: str, left_open: bool
) -> None:
    """Nothing but the rollback, as psycopg_pool: a transaction left open or not."""
    pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=5, reset=None)
    try:
        conn = pool.getconn()
        conn.add_notice_handler(_heard)
        conn.execute("LISTEN pgpool_kept")
        conn.commit()
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("NOTIFY pgpool_kept, 'for the next'")
        time.sleep(0.1)  # on the listening session's socket
        if left_open:
            conn.execute("SELECT 1")  # reads it into psycopg's backlog
        pool.putconn(conn, warn_open_transaction=False)
        with pool.connection() as again:
            assert again is conn
            assert _removed(again.remove_notice_handler)
            heard = again.notifies(timeout=0.5, stop_after=1)
            assert [n.payload for n in heard] == ["for the next"]
    finally:
        pool.close()


def test_a_prepare_in_every_loan_never_finds_its_own(pool: ForkSafePool) -> None:
    """After five, psycopg prepares the PREPARE itself: still dropped each time."""
    for _ in range(8):
        with pool.connection() as conn:
            conn.execute("SELECT %s::int * 5", [1], prepare=True)
            conn.execute("PREPARE pgpool_every AS SELECT 1")


def test_a_prepare_with_psycopgs_tracking_off_is_dropped(pool: ForkSafePool) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT %s::int * 7", [1], prepare=True)
    with pool.connection() as conn:
        conn.prepare_threshold = None
        conn.execute("PREPARE pgpool_untracked AS SELECT 1")
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE from_sql"
        ).fetchall()
        assert row == []


def test_statements_are_counted_only_after_a_loan_that_may_add_some(
    dsn: str, pg_log: PgServer
) -> None:
    """Reading pg_prepared_statement() costs the server ~20 us: not every time.

    Counted after a query psycopg did not prepare (a PREPARE is one), never
    after a loan that ran only statements psycopg had prepared. (With
    ``reset="always"``: by default, these loans send no session reset at all.)
    """
    pool = ForkSafePool(
        dsn,
        min_size=1,
        max_size=1,
        reset="always",
        kwargs={"options": "-c log_statement=all", "application_name": "counted"},
    )
    query = "SELECT %s::int * 11"
    try:
        with pool.connection() as conn:
            conn.execute(query, [1], prepare=True)  # prepared: counted once
        pool.check()  # settles it
        position = pg_log.log_position()
        for _ in range(3):
            with pool.connection() as conn:
                conn.execute(query, [2])  # psycopg's statement: not counted
        with pool.connection() as conn:
            conn.execute("SELECT 1")  # not prepared by psycopg: counted
        pool.check()
        statements = pg_log.statements_since(position)
    finally:
        pool.close()
    resets = [statement for statement in statements if "DISCARD TEMP" in statement]
    counted = ["pg_prepared_statement()" in line for line in resets]
    assert counted == [False, False, False, True]


def test_the_reset_keeps_the_servers_cached_plans(dsn: str, pg_log: PgServer) -> None:
    """Never DISCARD ALL, even where it would do the rest of the reset alone.

    An idle connection on which psycopg keeps no prepared statement (Django's:
    autocommit, prepare_threshold=None) could be reset by one DISCARD ALL, 20
    us of the server's CPU less; but its DISCARD PLANS drops the plans of
    PL/pgSQL functions and triggers, which the next request would make again
    (a four-statement function's call: 141 -> ~300 us of the server's CPU).
    """
    pool = ForkSafePool(
        dsn,
        min_size=1,
        max_size=1,
        kwargs={
            "options": "-c log_statement=all",
            "application_name": "plans",
            "autocommit": True,
            "prepare_threshold": None,
        },
    )
    try:
        pool.check()  # the first connection made, its log written
        position = pg_log.log_position()
        with pool.connection() as conn:
            conn.execute("SET search_path TO pg_catalog")
            conn.execute("PREPARE pgpool_plans AS SELECT 1")
        pool.check()  # settled: its reset logged
        with pool.connection() as conn:
            path = conn.execute("SHOW search_path").fetchone()
            prepared = conn.execute("SELECT name FROM pg_prepared_statements")
            assert (path, prepared.fetchall()) == (('"$user", public',), [])
        pool.check()
        statements = pg_log.statements_since(position)
    finally:
        pool.close()
    resets = [statement for statement in statements if "DISCARD" in statement]
    # The second loan ran only plain statements: no session reset after it.
    assert len(resets) == 1, resets
    assert all("DISCARD TEMP" in r and "DISCARD ALL" not in r for r in resets), resets


def _configure_tenant(conn: Connection) -> None:
    """A configure that sets an attribute of its own on each connection."""
    conn.tenant_id = None  # type: ignore[attr-defined]


def test_an_attribute_configure_set_is_given_back_its_value(dsn: str) -> None:
    """Issue 27: the borrower's own attributes go; configure's get their value back."""

    pool = ForkSafePool(
        dsn, min_size=1, max_size=1, timeout=5, configure=_configure_tenant
    )
    try:
        with pool.connection() as conn:
            conn.tenant_id = 42  # type: ignore[attr-defined]
            conn.request_id = "r1"  # type: ignore[attr-defined]
        with pool.connection() as again:
            assert again is conn
            assert again.tenant_id is None  # type: ignore[attr-defined]
            assert not hasattr(again, "request_id")
            del again.tenant_id  # type: ignore[attr-defined]
        with pool.connection() as again:
            assert again.tenant_id is None  # type: ignore[attr-defined]
    finally:
        pool.close()


def test_an_attribute_set_in_place_of_one_configure_set_is_removed(dsn: str) -> None:
    """One deleted, one added: the instance's size is as configure left it."""

    pool = ForkSafePool(
        dsn, min_size=1, max_size=1, timeout=5, configure=_configure_tenant
    )
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")  # its first check and settling done
        with pool.connection() as conn:
            del conn.tenant_id  # type: ignore[attr-defined]
            conn.request_id = "r1"  # type: ignore[attr-defined]
        with pool.connection() as again:
            assert again is conn
            assert again.tenant_id is None  # type: ignore[attr-defined]
            assert not hasattr(again, "request_id")
    finally:
        pool.close()


# -- each route to the Python side, on its own ---------------------------------------


class _Shouting(Dumper):
    oid = 25  # text

    def dump(self, obj: str) -> bytes:
        return obj.upper().encode()


class _Thing:
    pass


class _ThingDumper(Dumper):  # no oid: registered by class only
    def dump(self, obj: _Thing) -> bytes:
        return b"thing"


class _TextLoader(Loader):
    def load(self, data: Buffer) -> str:
        return bytes(data).decode()


class _OtherServerCursor(psycopg.ServerCursor[Any]):
    pass


def _heard(diag: Any) -> None:
    pass


def _dumper_of(conn: Connection, cls: type) -> str:
    try:
        return conn.adapters.get_dumper(cls, PyFormat.TEXT).__name__
    except psycopg.ProgrammingError:
        return "none"


def _removed(remove: Callable[[Any], None]) -> bool:
    try:
        remove(_heard)
    except ValueError:
        return False
    return True


# Each: what a borrower does, on an idle connection and running no statement,
# through one route only; what the next borrower can see of it.
_ROUTES: dict[str, tuple[Callable[[Connection], None], Callable[[Connection], Any]]] = {
    "autocommit": (
        lambda c: setattr(c, "autocommit", not c.autocommit),
        lambda c: c.autocommit,
    ),
    "isolation_level": (
        lambda c: setattr(c, "isolation_level", psycopg.IsolationLevel.SERIALIZABLE),
        lambda c: c.isolation_level,
    ),
    "read_only": (lambda c: setattr(c, "read_only", True), lambda c: c.read_only),
    "deferrable": (lambda c: setattr(c, "deferrable", True), lambda c: c.deferrable),
    "prepare_threshold": (
        lambda c: setattr(c, "prepare_threshold", None),
        lambda c: c.prepare_threshold,
    ),
    "prepared_max": (
        lambda c: setattr(c, "prepared_max", 3),
        lambda c: c.prepared_max,
    ),
    "row_factory": (
        lambda c: setattr(c, "row_factory", dict_row),
        lambda c: c.row_factory,
    ),
    "cursor_factory": (
        lambda c: setattr(c, "cursor_factory", psycopg.ClientCursor),
        lambda c: c.cursor_factory,
    ),
    "server_cursor_factory": (
        lambda c: setattr(c, "server_cursor_factory", _OtherServerCursor),
        lambda c: c.server_cursor_factory,
    ),
    "adapters.register_dumper": (
        lambda c: c.adapters.register_dumper(str, _Shouting),
        lambda c: _dumper_of(c, str),
    ),
    "adapters.register_dumper, by class only": (
        lambda c: c.adapters.register_dumper(_Thing, _ThingDumper),
        lambda c: _dumper_of(c, _Thing),
    ),
    "adapters.register_loader": (
        lambda c: c.adapters.register_loader("int4", _TextLoader),
        lambda c: c.adapters.get_loader(23, PqFormat.TEXT),
    ),
    "adapters.types.add": (
        lambda c: c.adapters.types.add(TypeInfo("pgpool_route_type", 23, 1007)),
        lambda c: c.adapters.types.get("pgpool_route_type") is not None,
    ),
    "add_notice_handler": (
        lambda c: c.add_notice_handler(_heard),
        lambda c: _removed(c.remove_notice_handler),
    ),
    "add_notify_handler": (
        lambda c: c.add_notify_handler(_heard),
        lambda c: _removed(c.remove_notify_handler),
    ),
    "pgconn.notice_handler": (
        lambda c: setattr(c.pgconn, "notice_handler", _heard),
        lambda c: c.pgconn.notice_handler,
    ),
    "an attribute set": (
        lambda c: setattr(c, "tenant_id", 42),
        lambda c: getattr(c, "tenant_id", "not set"),
    ),
    "conn.__dict__": (
        lambda c: c.__dict__.update(request_id="r1"),
        lambda c: c.__dict__.get("request_id", "not set"),
    ),
    "wait replaced": (
        lambda c: setattr(c, "wait", lambda gen, *args, **kwargs: None),
        lambda c: c.wait,
    ),
}


# The transaction's characteristics cannot be set inside one.
_IN_A_TRANSACTION = [
    name
    for name in _ROUTES
    if name not in ("autocommit", "isolation_level", "read_only", "deferrable")
]


@pytest.mark.parametrize(
    ("route", "reset", "left_open"),
    [
        *((route, DEFAULT, False) for route in _ROUTES),
        *((route, DEFAULT, True) for route in _IN_A_TRANSACTION),
        *((route, "always", False) for route in _ROUTES),
    ],
    ids=[
        *(f"{route}-default" for route in _ROUTES),
        *(f"{route}-default, a read left open" for route in _IN_A_TRANSACTION),
        *(f"{route}-always" for route in _ROUTES),
    ],
)
def test_each_route_to_the_python_side_is_undone_on_its_own(
    dsn: str, route: str, reset: Any, left_open: bool
) -> None:
    """The restore compares each route's fields at once (one C call): each
    change alone, made with no statement run (the reset's usual shortcuts:
    nothing to send, or a lone ROLLBACK), is still undone."""
    leave, see = _ROUTES[route]
    options = {} if reset is DEFAULT else {"reset": reset}
    pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=5, **options)
    try:
        with pool.connection() as conn:
            baseline = see(conn)
        conn = pool.getconn()
        if left_open:
            conn.execute("SELECT 1")
        leave(conn)
        pool.putconn(conn, warn_open_transaction=False)
        with pool.connection() as again:
            assert again is conn
            assert see(again) == baseline
            assert again.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


# -- a lone ROLLBACK, read without psycopg's generator when it has all come -----------


def test_a_lone_rollback_answered_late_is_read_in_full(pg_server: PgServer) -> None:
    """The answer not there yet when the connection is wanted: waited for."""
    with DelayProxy(pg_server.port, 0.02, target_host=pg_server.host) as proxy:
        dsn = pg_server.dsn(host=proxy.host, port=proxy.port)
        pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=5)
        try:
            for _ in range(3):
                conn = pool.getconn()
                first = backend_pid(conn)
                conn.execute("SELECT 1")  # a read left open: only a ROLLBACK
                pool.putconn(conn, warn_open_transaction=False)
                with pool.connection() as again:  # at once: not answered yet
                    assert backend_pid(again) == first
                    status = again.info.transaction_status
                    assert status == psycopg.pq.TransactionStatus.IDLE
                    assert again.execute("SELECT 2").fetchone() == (2,)
            assert pool.get_stats().get("connections_lost", 0) == 0
        finally:
            pool.close()


def test_a_lone_rollback_never_answered_is_never_lent(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A silent backend (stopped): waited for no longer than the reset's bound."""
    monkeypatch.setattr(_reset, "SETTLE_TIMEOUT", 0.5)
    pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=5)
    try:
        conn = pool.getconn()
        first = backend_pid(conn)
        conn.execute("SELECT 1")  # a read left open: only a ROLLBACK
        os.kill(first, signal.SIGSTOP)
        try:
            pool.putconn(conn, warn_open_transaction=False)
            t0 = time.monotonic()
            with pool.connection() as again:
                assert backend_pid(again) != first
                assert again.execute("SELECT 1").fetchone() == (1,)
            assert 0.5 <= time.monotonic() - t0 < 4
        finally:
            os.kill(first, signal.SIGCONT)
        assert conn.closed
        assert pool.get_stats()["connections_lost"] == 1
    finally:
        pool.close()


def test_a_lone_rollback_after_the_server_ended_the_session_is_never_lent(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """idle_in_transaction_session_timeout ended it: the server's reason is logged."""
    caplog.set_level(logging.INFO, logger="psycopg.pool")
    options = "-c idle_in_transaction_session_timeout=100"
    pool = ForkSafePool(
        dsn, min_size=1, max_size=1, timeout=5, kwargs={"options": options}
    )
    try:
        conn = pool.getconn()
        first = backend_pid(conn)
        conn.execute("SELECT 1")
        time.sleep(0.5)  # ended by the server meanwhile
        pool.putconn(conn, warn_open_transaction=False)
        with pool.connection() as again:
            assert backend_pid(again) != first
        assert conn.closed
        assert pool.get_stats()["connections_lost"] == 1
    finally:
        pool.close()
    [record] = [r for r in caplog.records if "failed check" in r.message]
    # The server's message, as the answer's error result has it (not libpq's
    # about the lost connection that followed).
    assert record.message.endswith(
        ": FATAL:  terminating connection due to idle-in-transaction timeout"
    )
