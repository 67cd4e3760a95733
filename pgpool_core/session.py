"""What happens to a connection between two borrowers: liveness check and reset."""

from __future__ import annotations

import logging
import select
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import ConnStatus, ExecStatus, PipelineStatus, TransactionStatus
from psycopg_pool import ConnectionPool

__all__ = [
    "RESET_SQL",
    "check_connection",
    "check_socket",
    "check_target_session_attrs",
    "make_reset",
    "rollback_if_needed",
    "run_reset_sql",
]

logger = logging.getLogger("pgpool.session")

#: Undo what a borrower may have changed in the session, as ``DISCARD ALL``
#: would, but keep the prepared statements psycopg created (``DISCARD ALL``
#: drops them behind psycopg's back: "prepared statement _pg3_0 does not exist").
RESET_SQL = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *;"
    " SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
)

_POLL_MASK = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def check_socket(conn: psycopg.Connection[Any]) -> None:
    """Raise if *conn* is not usable; cost no round trip when it is healthy.

    ForkSafePool's default ``check``. An idle connection's socket has nothing
    to read unless the server sent something on its own: almost always a
    termination (admin shutdown, idle session timeout) or an EOF. Only then is
    the connection checked for real, with an empty query
    (``ConnectionPool.check_connection``, which closes it if it fails).

    A connection made for writes (``target_session_attrs=read-write`` or
    ``primary``) is refused once its server says it no longer takes them
    (see :func:`check_target_session_attrs`).
    """
    pgconn = conn.pgconn
    if pgconn.status != ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    check_target_session_attrs(conn)
    if pgconn.transaction_status != TransactionStatus.IDLE:
        ConnectionPool.check_connection(conn)
        return
    if _readable_now(pgconn.socket):
        ConnectionPool.check_connection(conn)


#: The former name of :func:`check_socket`, kept importable: not to be confused
#: with ``ForkSafePool.check_connection``, psycopg_pool's round-trip check.
check_connection = check_socket


def _readable_now(fd: int) -> bool:
    """Return True if *fd* has something to read (or an error, an EOF) right now."""
    # eventlet's patched select module has no poll(); select() is limited to
    # descriptors below FD_SETSIZE, so poll() where there is one.
    if not hasattr(select, "poll"):
        readable, _, failed = select.select([fd], [], [fd], 0)
        return bool(readable or failed)
    poller = select.poll()
    poller.register(fd, _POLL_MASK)
    return bool(poller.poll(0))


# What each connection's target_session_attrs asks for, read once: libpq's
# PQconninfo() costs more than the rest of the check.
_target_session_attrs: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = (
    weakref.WeakKeyDictionary()
)


def check_target_session_attrs(
    conn: psycopg.Connection[Any], attrs: str | None = None
) -> None:
    """Raise if *conn*'s server no longer is what its ``target_session_attrs`` asked.

    libpq checks ``target_session_attrs`` when it connects, only then.
    ``read-write`` wants a server that is not in recovery and whose
    ``default_transaction_read_only`` is off, ``primary`` one not in
    recovery: the values PostgreSQL 14 and later report to the client as
    ``in_hot_standby`` and ``default_transaction_read_only``, read here without
    a round trip. Other values ask nothing of a connection's later life.
    *attrs* defaults to the connection's own setting (its conninfo, or
    ``PGTARGETSESSIONATTRS``).
    """
    if attrs is None:
        attrs = _target_session_attrs.get(conn)
        if attrs is None:
            attrs = _target_session_attrs[conn] = _conninfo_value(
                conn, b"target_session_attrs"
            )
    if attrs not in ("read-write", "primary"):
        return
    info = conn.info
    if info.parameter_status("in_hot_standby") == "on":
        raise psycopg.OperationalError(
            f"the server is in recovery (in_hot_standby is on):"
            f" not lent for target_session_attrs={attrs}"
        )
    if (
        attrs == "read-write"
        and info.parameter_status("default_transaction_read_only") == "on"
    ):
        raise psycopg.OperationalError(
            "the server is read-only (default_transaction_read_only is on):"
            " not lent for target_session_attrs=read-write"
        )


def _conninfo_value(conn: psycopg.Connection[Any], keyword: bytes) -> str:
    for option in conn.pgconn.info:
        if option.keyword == keyword:
            return (option.val or b"").decode()
    return ""


def rollback_if_needed(conn: psycopg.Connection[Any]) -> None:
    """Roll back a transaction the borrower left open.

    With a ``ROLLBACK`` through libpq rather than ``conn.rollback()``, which
    would also make psycopg forget its prepared statements and deallocate
    them all (the server keeps them through a rollback): a request that only
    read would otherwise never reuse one. In pipeline mode, psycopg's own.
    """
    if _rollback_prefix(conn):
        _exec(conn, b"ROLLBACK", "rollback")


_RESET_SQL_BYTES = RESET_SQL.encode()


def run_reset_sql(conn: psycopg.Connection[Any]) -> None:
    """Run RESET_SQL on *conn* in one round trip; raise if the server refused it.

    Through libpq's ``PQexec`` (which releases the GIL while it waits) rather
    than ``conn.execute()``: no cursor and no switch to autocommit and back,
    a third of the client's CPU per reset, and the reset runs after every
    request. A simple query's statements run as one implicit transaction,
    committed at its end, whatever psycopg's ``autocommit`` says; none of
    them touches psycopg's prepared statements.

    A transaction left open (or failed) is rolled back in the same round trip:
    ``ROLLBACK`` leads the query (see :func:`rollback_if_needed`).
    """
    _exec(conn, _rollback_prefix(conn) + _RESET_SQL_BYTES, "session reset")


def _rollback_prefix(conn: psycopg.Connection[Any]) -> bytes:
    """Return ``b"ROLLBACK; "`` if *conn* has a transaction to end, else ``b""``.

    In pipeline mode psycopg must leave the pipeline itself: its
    ``rollback()`` runs here, and nothing is left for libpq to roll back.
    """
    pgconn = conn.pgconn
    if pgconn.transaction_status not in (
        TransactionStatus.INTRANS,
        TransactionStatus.INERROR,
    ):
        return b""
    logger.debug("rolling back the transaction left open on %s", conn)
    if pgconn.pipeline_status != PipelineStatus.OFF:
        conn.rollback()
        return b""
    return b"ROLLBACK; "


def _exec(conn: psycopg.Connection[Any], sql: bytes, what: str) -> None:
    """Run *sql* with libpq's PQexec; raise OperationalError if it failed."""
    with conn.lock:
        result = conn.pgconn.exec_(sql)
    if result.status not in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK):
        message = (result.error_message or b"").decode("utf-8", "replace").strip()
        raise psycopg.OperationalError(f"{what} failed: {message}")


# What a fresh connection's Python side looks like, restored on reset.
_CONNECTION_ATTRIBUTES = (
    "autocommit",
    "isolation_level",
    "read_only",
    "deferrable",
    "prepare_threshold",
    "row_factory",
    "cursor_factory",
)


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Return the attributes of *conn* that a borrower may change."""
    return {name: getattr(conn, name) for name in _CONNECTION_ATTRIBUTES}


def make_reset(
    configure: Callable[[psycopg.Connection[Any]], None] | None,
    fresh: Callable[[psycopg.Connection[Any]], dict[str, Any] | None],
    *,
    session: bool = True,
) -> Callable[[psycopg.Connection[Any]], None]:
    """Return a reset callback that makes a returned connection look fresh.

    It runs RESET_SQL, restores the connection attributes *fresh* recorded when
    the connection was made, then runs *configure* again: ``RESET ALL`` undid
    what it set (Django sets the session time zone and role there).

    With ``session=False`` (behind PgBouncer in transaction mode) it only
    restores the attributes: the connection is then to PgBouncer, which hands
    each transaction to any of its server sessions, so there is no session of
    ours to reset (PgBouncer's ``server_reset_query`` is not run in that mode
    either), and nothing was undone that *configure* must set again.
    """

    def reset(conn: psycopg.Connection[Any]) -> None:
        if not session:
            rollback_if_needed(conn)
            _restore(conn, fresh(conn))
            return
        run_reset_sql(conn)
        attributes = fresh(conn)
        if attributes:
            for name, value in attributes.items():
                if getattr(conn, name) != value:
                    setattr(conn, name, value)
        if configure is not None:
            configure(conn)

    return reset


def _restore(conn: psycopg.Connection[Any], attributes: dict[str, Any] | None) -> None:
    for name, value in (attributes or {}).items():
        if getattr(conn, name) != value:
            setattr(conn, name, value)
