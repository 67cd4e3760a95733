"""What happens to a connection between two borrowers: the reset, settling, the check.

A returned connection is reset in two halves (:class:`SessionReset`):

- **sent** as it comes back (:meth:`SessionReset.start`, in the returning
  thread): the transaction left open is rolled back and the session reset in
  one simple query, written to the socket but not waited for (by default the
  session only after a loan that may have changed it, as
  :mod:`pgpool_core._tracking` tells; with ``reset="always"`` after every
  loan). The connection
  goes back to the pool *settling*: its reset is in flight.
- **settled** before anything else uses it (:func:`settle`, when it is next
  lent, by then long answered): the answer is read (an error, or no answer
  within :data:`SETTLE_TIMEOUT`, closes the connection), what the answer
  reports is acted on (a rolled-back write is warned about; prepared
  statements the client must not keep are deallocated), and the Python side
  of the connection is made as it was when the pool made it; ``configure``
  runs again.

The default check before a connection is lent (:func:`check_socket`) costs
no round trip: only a socket with something to read (a server that hung up,
or sent something on its own) makes it ask the server, with an empty query.

So the request that gives a connection back waits for no round trip, and
everything a borrower can leave on a connection, on the server or on the
``psycopg.Connection`` object, is undone before the next borrower gets it, or
the connection is not lent again (see the documentation's "What the reset
undoes" for the list and what is deliberately kept).

The psycopg names this package relies on that psycopg does not document are
used in this module only, listed in :data:`PSYCOPG_NAMES` and checked at
import (:mod:`pgpool_core._fence`): the fields of a ``psycopg.Connection``
that the reset reads and restores, and, for the modules that need them, the
methods through which a connection is watched (:func:`watch`, for
:mod:`pgpool_core._tracking`) and its waits bounded (:func:`shadow_wait`,
for :mod:`pgpool_core._socket_timeout`), what an error keeps of a failed
connect (:func:`replace_failed_pgconn`, for :mod:`pgpool_core._secrets`) and
psycopg's wait function and connection selector (:func:`use_wait_function`,
:func:`use_connect_selector`, for :mod:`pgpool_core._green`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import select
from collections.abc import Callable, Generator
from operator import attrgetter
from selectors import EVENT_READ
from time import monotonic
from typing import Any

import psycopg
from psycopg.adapt import AdaptersMap
from psycopg.pq import ConnStatus, ExecStatus, PipelineStatus, TransactionStatus
from psycopg_pool import ConnectionPool

from . import _fence
from ._tracking import (
    CHANGED,
    CHANGES,
    VOUCHED,
    WROTE,
    kind_of,
    statement_kind,
    take_changed,
)
from .errors import SessionResetFailed

# The psycopg names this module relies on that psycopg does not document
# (read from 3.3), by where they are; checked just below, before anything
# uses them. Nothing else in the package touches one (see
# tests/core/test_fence.py).
PSYCOPG_NAMES: _fence.Names = (
    # What a borrower may set through the connection's properties, read
    # without a property call at each settling (_attributes); its
    # prepared statements (_prepared) and adapters (_adapters, replaced by
    # a pristine copy).
    (
        "psycopg.Connection",
        (
            "_autocommit",
            "_isolation_level",
            "_read_only",
            "_deferrable",
            "_prepared",
            "_adapters",
        ),
    ),
    # What the previous borrower's handlers and listening left: restored,
    # emptied (_settle()).
    (
        "psycopg.Connection",
        ("_notice_handlers", "_notify_handlers", "_notifies_backlog"),
    ),
    # Client state a borrower could still act on: such a connection is
    # discarded (_refuse_unresettable()).
    ("psycopg.Connection", ("_num_transactions", "_pipeline", "_tpc")),
    # The pool that lent it (psycopg_pool's mark), which close() gives it
    # back to with close_returns: unhooked to close it for real
    # (_close_lent()).
    ("psycopg.Connection", ("_pool",)),
    # Every statement a cursor starts goes through the connection's
    # _start_query(), wrapped by a watched connection (watch()); its
    # cursor() too. Each operation's generator goes through its wait(),
    # overridden by the same subclass when bounded (shadow_wait()).
    ("psycopg.Connection", ("_start_query", "cursor", "wait")),
    # A watched cursor classifies what it starts (_watched_cursor_class()).
    (
        "psycopg.Cursor",
        ("_start_query", "_start_copy_gen", "_closed", "_conn"),
    ),
    # psycopg's prepared statements: its counter (_pg3_N), its names, the
    # DEALLOCATEs it owes, the queries it counts (_prepare_counts()).
    (
        "psycopg._preparing.PrepareManager",
        ("_prepared_idx", "_names", "_to_flush", "_counts", "clear"),
    ),
    # What an adapters map holds, compared by identity (_adapters_key).
    (
        "psycopg.adapt.AdaptersMap",
        ("_dumpers", "_dumpers_by_oid", "_loaders", "types"),
    ),
    ("psycopg._typeinfo.TypesRegistry", ("_registry",)),
    # The reading of a query's results, driven with a deadline (_answer());
    # the generator of notifies(), which waits as long as its own timeout
    # says (shadow_wait()).
    ("psycopg.generators", ("fetch_many", "notifies")),
    # What an error keeps of a failed connect's libpq connection, password
    # included: masked (replace_failed_pgconn(), for pgpool_core._secrets).
    ("psycopg.Error", ("_pgconn",)),
    # The wait function psycopg chose at import: chosen again once gevent or
    # eventlet patched the process (use_wait_function(), for
    # pgpool_core._green).
    ("psycopg.waiting", ("wait", "wait_poll", "wait_select")),
    # The selector its connection waits make, as selectors had it at import:
    # replaced by the patched one (use_connect_selector(), for
    # pgpool_core._green).
    ("psycopg.waiting", ("DefaultSelector",)),
)
# Read only where the installed psycopg has them, never required: the
# readiness function psycopg 3.3.9 added for wait_async(), switched with the
# wait function (use_wait_function()); a pool's sync waits never read it.
PSYCOPG_NAMES_WHERE_PRESENT: _fence.Names = (
    ("psycopg.waiting", ("_ready", "_ready_poll", "_ready_select")),
)
_fence.require("psycopg", PSYCOPG_NAMES, __name__)

from psycopg.generators import fetch_many  # noqa: E402 (fenced above)

__all__ = [
    "RESET_SQL",
    "SETTLE_TIMEOUT",
    "SessionReset",
    "announce_rollback",
    "check_socket",
    "check_target_session_attrs",
    "is_settling",
    "replace_failed_pgconn",
    "rollback_announced",
    "settle",
    "shadow_wait",
    "use_connect_selector",
    "use_wait_function",
    "watch",
]

logger = logging.getLogger("pgpool.session")
pool_logger = logging.getLogger("pgpool.pool")


#: Seconds a settling connection's reset may take to answer once the
#: connection is wanted again; then it is closed (and replaced) instead.
SETTLE_TIMEOUT = 5.0

_POLL_MASK = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP

_IDLE = TransactionStatus.IDLE
_INTRANS = TransactionStatus.INTRANS
_INERROR = TransactionStatus.INERROR
# Plain ints: compared for every result of every reset.
_TUPLES_OK = int(ExecStatus.TUPLES_OK)
_COMMAND_OK = int(ExecStatus.COMMAND_OK)
_FATAL_ERROR = int(ExecStatus.FATAL_ERROR)
_CONNECTION_OK = int(ConnStatus.OK)


def check_socket(conn: psycopg.Connection[Any]) -> None:
    """Raise if *conn* is not usable; cost no round trip when it is healthy.

    ForkSafePool's default ``check``. An idle connection's socket has nothing
    to read unless the server sent something on its own: almost always a
    termination (admin shutdown, idle session timeout) or an EOF. Only then is
    the connection checked for real, with an empty query
    (``ConnectionPool.check_connection``, which closes it if it fails).

    A connection made for writes (``target_session_attrs=read-write`` or
    ``primary``) is closed once its server says it no longer takes them
    (see :func:`check_target_session_attrs`), and the error raised: a pool
    counts it lost and makes a new one, for which libpq picks a server that
    does (psycopg_pool would put a live connection that fails its check back
    in the pool, to be refused again at every checkout).
    """
    pgconn = conn.pgconn
    if pgconn.status != _CONNECTION_OK:
        raise psycopg.OperationalError("the connection is closed")
    poller = getattr(conn, _POLLER, None)
    if poller is None:
        _check_socket(conn, pgconn)  # the first check, or one with more to do
    elif pgconn.transaction_status != _IDLE or poller.poll(0):
        ConnectionPool.check_connection(conn)


def _check_socket(conn: psycopg.Connection[Any], pgconn: Any) -> None:
    attrs = getattr(conn, _TARGET_SESSION_ATTRS, None)
    if attrs is None or attrs in _WRITABLE:
        try:
            check_target_session_attrs(conn)
        except psycopg.OperationalError:
            _close_lent(conn)
            raise
    if pgconn.transaction_status != _IDLE:
        ConnectionPool.check_connection(conn)
        return
    poller = getattr(conn, _SOCKET_POLLER, None)
    if poller is None:
        if not hasattr(select, "poll"):
            if _selected(pgconn.socket, 0):
                ConnectionPool.check_connection(conn)
            return
        # One per connection (its socket never changes): a check is then
        # one call.
        poller = select.poll()
        poller.register(pgconn.socket, _POLL_MASK)
        setattr(conn, _SOCKET_POLLER, poller)
        if getattr(conn, _TARGET_SESSION_ATTRS, None) not in _WRITABLE:
            # Nothing more to check at the next ones (check_socket()).
            setattr(conn, _POLLER, poller)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


def _close_lent(conn: psycopg.Connection[Any]) -> None:
    """Close *conn*, lent by a psycopg_pool or not, for real."""
    # With close_returns (psycopg_pool 3.3), a lent connection's close()
    # would give it back to its pool: psycopg_pool's _close_connection()
    # unhooks it first.
    pool = getattr(conn, "_pool", None)
    conn._pool = None
    try:
        conn.close()
    finally:
        conn._pool = pool


def _selected(fd: int, seconds: float, *, write: bool = False) -> bool:
    """Return True if *fd* can be read (or written), or failed, within *seconds*.

    With ``select()``: eventlet's patched select module has no ``poll()``,
    which is used where there is one (``select()`` is limited to descriptors
    below FD_SETSIZE).
    """
    reading, writing = ([], [fd]) if write else ([fd], [])
    return any(select.select(reading, writing, [fd], seconds))


# What each connection's target_session_attrs asks for, read once (libpq's
# PQconninfo() costs more than the rest of the check), kept on the connection
# as psycopg_pool keeps its own (_pool, _expire_at); and the poll object that
# watches its socket.
_TARGET_SESSION_ATTRS = "_pgpool_target_session_attrs"
_WRITABLE = ("read-write", "primary")
_SOCKET_POLLER = "_pgpool_poller"
# The same, once its target_session_attrs was found to ask nothing more.
_POLLER = "_pgpool_socket_only"


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
        attrs = getattr(conn, _TARGET_SESSION_ATTRS, None)
        if attrs is None:
            attrs = _conninfo_value(conn, b"target_session_attrs")
            setattr(conn, _TARGET_SESSION_ATTRS, attrs)
    if attrs not in _WRITABLE:
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


# -- the query ---------------------------------------------------------------------

_RESET_STATEMENTS = (
    b"CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *"
)
_DISCARD = b"DISCARD TEMP; DISCARD SEQUENCES"
# The reset's one SELECT, the probe, which also says what settling must know.
_UNLOCK = b"pg_catalog.pg_advisory_unlock_all()"
# Did the transaction about to be rolled back write? (An xid is assigned by
# the first write: DML, DDL, a temporary table.) Asked before the ROLLBACK.
_WROTE = b"pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL"
# The session's prepared statements: the user's (SQL PREPARE) and the
# protocol-level ones (psycopg's).
_COUNT_PREPARED = (
    b"count(*) FILTER (WHERE from_sql), count(*) FILTER (WHERE NOT from_sql)"
)
_FROM_PREPARED = b" FROM pg_catalog.pg_prepared_statement()"
# The temporary relations DISCARD TEMP is about to drop (through pg_depend's
# index, not a scan of pg_class), asked only after a loan in which psycopg
# prepared statements: one may depend on them.
_TEMP_NAMES = (
    b"(SELECT pg_catalog.string_agg(c.relname::text, E'\\n')"
    b" FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid"
    b" WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
    b" AND d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass"
    b" AND d.refobjid = pg_catalog.pg_my_temp_schema())"
)

#: Undo what a borrower may have changed in the session, as ``DISCARD ALL``
#: would, but keep the prepared statements psycopg created (``DISCARD ALL``
#: drops them behind psycopg's back: "prepared statement _pg3_0 does not
#: exist"). Sent in one simple query with, as the case may be: ``ROLLBACK``
#: first (after the ``SELECT``, which then also asks whether the open
#: transaction wrote), the session's prepared statements counted by the
#: ``SELECT``, and ``DEALLOCATE ALL`` last when psycopg has prepared none of
#: its own.
RESET_SQL = (_RESET_STATEMENTS + b"; SELECT " + _UNLOCK + b"; " + _DISCARD).decode()

# The queries made so far, by what they hold (a handful of shapes).
_queries: dict[tuple[int, bool, bool, bool, bool, bool], bytes] = {}


def _query(
    status: int, session: bool, wrote: bool, counts: bool, temps: bool, drop: bool
) -> bytes:
    """Return the reset query for a connection in transaction *status*.

    *session*: reset the session (else only roll back); *wrote*: ask whether
    the open transaction wrote; *counts*, *temps*: count the prepared
    statements, name the temporary relations; *drop*: ``DEALLOCATE ALL``.
    In one transaction the probe runs before the ROLLBACK (one SELECT for
    all), in a failed one after it, where RESET_SQL has it.
    """
    key = (status, session, wrote, counts, temps, drop)
    query = _queries.get(key)
    if query is not None:
        return query
    columns = [_UNLOCK] if session else []
    if wrote:
        columns.append(_WROTE)
    if counts:
        columns.append(_COUNT_PREPARED)
    if temps:
        columns.append(_TEMP_NAMES)
    probe = b"SELECT " + b", ".join(columns) + (_FROM_PREPARED if counts else b"")
    if not session:
        parts = [probe] if wrote else []
        if status != _IDLE:
            parts.append(b"ROLLBACK")
    elif status == _INTRANS:
        parts = [probe, b"ROLLBACK", _RESET_STATEMENTS, _DISCARD]
    else:
        parts = [_RESET_STATEMENTS, probe, _DISCARD]
        if status == _INERROR:
            parts.insert(0, b"ROLLBACK")
    if drop:
        parts.append(b"DEALLOCATE ALL")
    query = _queries[key] = b"; ".join(parts)
    return query


# A statement whose execution may create or drop prepared statements: once
# psycopg prepared one on a connection, its statements are always counted.
_MAY_PREPARE = re.compile(
    rb"\b(?:PREPARE|DEALLOCATE|EXECUTE|DISCARD)\b|^\s*DO\b", re.IGNORECASE
)

# The user's prepared statements only: psycopg's stay.
_DEALLOCATE_USERS = (
    b"DO $pgpool$DECLARE s text; BEGIN"
    b" FOR s IN SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql"
    b" LOOP EXECUTE pg_catalog.format('DEALLOCATE %I', s); END LOOP; END$pgpool$"
)


# -- per connection ----------------------------------------------------------------

# What a borrower may set on a psycopg.Connection, restored as it was made
# (through these properties), and compared through what they read: psycopg
# 3.3's fields, read at every settling without a property call each.
_ATTRIBUTES = (
    "autocommit",
    "isolation_level",
    "read_only",
    "deferrable",
    "prepare_threshold",
    "prepared_max",
    "row_factory",
    "cursor_factory",
    "server_cursor_factory",
)


#: Return the fields behind _ATTRIBUTES of a connection, as a tuple (one C
#: call: read at every settling).
_attributes = attrgetter(
    "_autocommit",
    "_isolation_level",
    "_read_only",
    "_deferrable",
    "_prepared.prepare_threshold",
    "_prepared.prepared_max",
    "row_factory",
    "cursor_factory",
    "server_cursor_factory",
)

#: Return what a connection's handlers are: psycopg's lists, libpq's two.
_handlers = attrgetter(
    "_notice_handlers",
    "_notify_handlers",
    "pgconn.notice_handler",
    "pgconn.notify_handler",
)


# Where a connection's _State is kept: on the connection, as psycopg_pool keeps
# its own (_pool, _expire_at), so that it goes with it and costs no lookup.
_STATE = "_pgpool_session"


#: Return what changes when anything is registered on an adapters map.
#:
#: psycopg's maps are copy-on-write (psycopg/_adapters_map.py): a map made
#: from a template shares its dicts until the first registration, which
#: copies the one it changes. Compared with ``==``: the containers a map
#: copies when made (its dict of dumper dicts, its lists of them) by their
#: items, the shared dicts in them by identity unless one was copied.
_adapters_key = attrgetter("_dumpers", "_dumpers_by_oid", "_loaders", "types._registry")


class _Pending:
    """A reset sent and not read yet: what its answer holds, and for whom."""

    __slots__ = (
        "session",
        "sent",
        "flushed",
        "wrote",
        "counts",
        "temps",
        "expected",
        "since",
    )

    def __init__(self) -> None:
        self.session = False  # the query resets the session
        self.sent = False  # a query is in flight
        self.flushed = True  # all of it written to the socket
        # A "did it write" row leads the answer (a transaction was rolled back).
        self.wrote: bool | None = None
        self.counts = False  # the SELECT counts the session's prepared statements
        self.temps = False  # ... and names the temporary relations
        # psycopg's statements the server should have (None: resynchronise).
        self.expected: int | None = 0
        # psycopg's statement counter when the loan began, if it prepared since.
        self.since: int | None = None


#: The reset of a loan that left nothing to undo but the client side: no
#: query, nothing to read (SessionReset.start(); never changed after).
_RESTORE_ONLY = _Pending()
#: The reset of a loan that left only a transaction to roll back: a lone
#: ``ROLLBACK`` sent and flushed (never changed after).
_ROLLBACK = _Pending()
_ROLLBACK.sent = True


class _Snapshot:
    """The Python side of a connection at one time, as a restore makes it again."""

    __slots__ = (
        "attributes",
        "settable",
        "adapters",
        "adapters_key",
        "notice_handlers",
        "notify_handlers",
        "pgconn_handlers",
        "handlers",
        "names",
        "size",
        "user",
    )

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.attributes = _attributes(conn)
        self.settable = tuple(getattr(conn, name) for name in _ATTRIBUTES)
        # A pristine copy of the connection's map (made now, it also makes the
        # connection's map copy its dicts before its next change).
        self.adapters = AdaptersMap(conn.adapters)
        self.adapters_key = _adapters_key(self.adapters)
        self.notice_handlers = list(conn._notice_handlers)
        self.notify_handlers = list(conn._notify_handlers)
        pgconn = conn.pgconn
        self.pgconn_handlers = (pgconn.notice_handler, pgconn.notify_handler)
        # All four, compared at once (_handlers()).
        self.handlers = (
            self.notice_handlers,
            self.notify_handlers,
            *self.pgconn_handlers,
        )
        # The instance's own attributes: their names, how many, and the
        # values of the public ones psycopg does not have (set by configure
        # or by a connection class of the user's).
        d = conn.__dict__
        self.names = frozenset(d)
        self.size = len(d)
        self.user = {
            name: value
            for name, value in d.items()
            if not name.startswith("_") and name not in _PSYCOPGS
        }


_MISSING = object()

# The public names in a psycopg.Connection's __dict__.
_PSYCOPGS = frozenset(
    ("pgconn", "lock", "cursor_factory", "server_cursor_factory", "row_factory")
)


class _State:
    """One connection, as its pool made it, and its reset in flight."""

    __slots__ = (
        "reset",
        "made",
        "configured",
        "prepared_idx",
        "queries_mark",
        "count_always",
        "pending",
        "borrower",
        "announced",
        "warn_write",
        "rolled_back",
    )

    def __init__(self, reset: SessionReset, conn: psycopg.Connection[Any]) -> None:
        self.reset = reset
        # As the pool made it, before configure; as configure left it (the
        # same until the pool says configure ran: SessionReset.configured()).
        self.made = self.configured = _Snapshot(conn)
        # psycopg's prepared statement counter and its mark of the queries it
        # saw (_queries_mark()) when the current loan began.
        self.prepared_idx = conn._prepared._prepared_idx
        self.queries_mark = _queries_mark(conn._prepared)
        # Count the session's statements at every reset (see _MAY_PREPARE).
        self.count_always = False
        self.pending: _Pending | None = None
        # How the loan ended, and who gave it back (for the warning of a lost
        # write).
        self.rolled_back = False
        self.announced = False  # the borrower expects its rollback
        self.warn_write = False
        self.borrower: object = None


def _state(conn: psycopg.Connection[Any]) -> _State | None:
    state: _State | None = getattr(conn, _STATE, None)
    return state


def is_settling(conn: psycopg.Connection[Any]) -> bool:
    """Return True if *conn*'s reset was started and not settled yet."""
    state: _State | None = getattr(conn, _STATE, None)
    return state is not None and state.pending is not None


def announce_rollback(conn: psycopg.Connection[Any]) -> None:
    """Say that *conn* comes back in a transaction its borrower expects rolled back."""
    state: _State | None = getattr(conn, _STATE, None)
    if state is not None:
        state.announced = True


def rollback_announced(conn: psycopg.Connection[Any]) -> bool:
    """Return (and forget) whether *conn*'s rollback was announced."""
    state: _State | None = getattr(conn, _STATE, None)
    if state is None or not state.announced:
        return False
    state.announced = False
    return True


class SessionReset:
    """The reset of one pool's connections: how much of it, and ``configure``.

    *session*
        Reset the server session (:data:`RESET_SQL`) and drop the prepared
        statements of the borrower's own. False: only roll back what was
        left open (``reset=None``, a reset function of the user's, and behind
        PgBouncer in transaction mode, where there is no session of ours).
    *tracked*
        With *session*: reset the session only after a loan that ran
        something able to change it (the default ``reset``; see
        :mod:`pgpool_core._tracking`). False: after every loan
        (``reset="always"``).
    *restore*
        Make the Python side of the connection as it was made (attributes,
        adapters, handlers, notifications), then run *configure* again if the
        session was reset (``RESET ALL`` undid what it set).
    *name*
        The pool's name, for the log.
    *borrower*
        Return who is giving a connection back (see
        :func:`pgpool_core.borrower`), named when a rolled-back write is
        warned about.
    """

    def __init__(
        self,
        configure: Callable[[Any], None] | None,
        *,
        session: bool,
        restore: bool,
        name: str,
        borrower: Callable[[], object] | None = None,
        tracked: bool = False,
    ) -> None:
        self.configure = configure if session and restore else None
        self.session = session
        self.tracked = tracked and session and restore
        self.restore = restore
        self.name = name
        self._borrower = borrower

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} session={self.session}"
            f" tracked={self.tracked} restore={self.restore}>"
        )

    def adopt(self, conn: psycopg.Connection[Any]) -> None:
        """Record *conn*, just made, as every later borrower must find it.

        Before ``configure`` runs; :meth:`configured` after.
        """
        if self.tracked:
            watch(conn)
        setattr(conn, _STATE, _State(self, conn))

    def configured(self, conn: psycopg.Connection[Any]) -> None:
        """Record *conn* as ``configure`` left it: a loan that did not change
        the session gets it back so, without running ``configure`` again."""
        state: _State | None = getattr(conn, _STATE, None)
        if state is not None:
            state.configured = _Snapshot(conn)
        if self.tracked:
            take_changed(conn)  # configure's statements are not a loan's

    # -- the returning half --------------------------------------------------------

    def start(self, conn: psycopg.Connection[Any], *, warn_write: bool = False) -> bool:
        """Send *conn*'s reset without waiting for it; return True if it settles.

        In the returning thread: the query is written (as far as the socket
        takes it, the rest when it settles) and not waited for. False: nothing
        to undo (``reset=None`` and no transaction open). With *warn_write*,
        the transaction it rolls back is warned about, naming the borrower, if
        it had written (when it settles; with the session reset only).
        Raises (the caller closes the connection) if *conn* holds state that
        cannot be undone: a ``transaction()`` block, a pipeline or a two-phase
        transaction still open, a ``notifies()`` generator still running; or
        if it cannot send.
        """
        state: _State | None = getattr(conn, _STATE, None)
        if state is None:
            raise psycopg.ProgrammingError(
                f"connection not made by pool {self.name!r}: {conn}"
            )
        pgconn = conn.pgconn
        if _open(conn) != _NONE_OPEN or conn._notifies_backlog is None:
            _refuse_unresettable(conn, pgconn)  # raises
        status = pgconn.transaction_status
        if not self.restore and status == _IDLE and not self.session:
            state.rolled_back = False
            return False  # reset=None and nothing left open: nothing to undo
        # The default (tracked) resets the session only after a loan that
        # may have changed it.
        # (And warns about a rolled-back write only after one that ran a
        # statement that writes: the question would cost the server 10-20 us.)
        prepared = conn._prepared
        if prepared._prepared_idx == state.prepared_idx:
            # The usual loans, which psycopg prepared nothing in: nothing to
            # send but a ROLLBACK of what was left open, the client side to
            # restore when it settles (what the general case below would make
            # of them, shared). Tracked: the session unchanged, no write to
            # warn about (take_changed(), in place); else only a rollback.
            if self.tracked:
                d = conn.__dict__
                usual = not d.get(CHANGED, True) and not (
                    warn_write and status == _INTRANS and d.get(WROTE, True)
                )
                if usual:
                    d[WROTE] = d[VOUCHED] = False  # CHANGED is False
            else:
                usual = not self.session
            if usual:
                if status == _IDLE:
                    state.rolled_back = False
                    state.pending = _RESTORE_ONLY
                    return True
                state.rolled_back = True
                with conn.lock:
                    pgconn.send_query(b"ROLLBACK")
                    if pgconn.flush():
                        pending = _Pending()
                        pending.sent = True
                        pending.flushed = False
                    else:
                        pending = _ROLLBACK
                state.pending = pending
                return True
        if self.tracked:
            session, wrote = take_changed(conn)
        else:
            session, wrote = self.session, True
        pending = _Pending()
        pending.session = session
        # Prepared by psycopg during the loan: a rollback or DISCARD TEMP may
        # make those stale (the server would re-plan them, and fail if their
        # result type changed).
        if prepared._prepared_idx != state.prepared_idx:
            pending.since = state.prepared_idx
        state.rolled_back = status != _IDLE
        # Whether the transaction wrote: for the warning (which rides on the
        # session reset's own SELECT: without one, a SELECT of its own would
        # cost every such return ~10-20 us of server CPU), and for the
        # statements psycopg prepared during the loan.
        warn_write = warn_write and self.session and (session or wrote)
        if status == _INTRANS and (warn_write or pending.since is not None):
            pending.wrote = True
            if warn_write:
                state.warn_write = True
                state.borrower = self._borrower() if self._borrower else None
        if session:
            drop = self._prepare_counts(conn, state, pending)
            sql = _query(
                status, True, bool(pending.wrote), pending.counts, pending.temps, drop
            )
        elif status != _IDLE:
            sql = _query(status, False, bool(pending.wrote), False, False, False)
        elif self.restore:
            sql = b""  # restored when it settles: no query
        else:
            return False
        if sql:
            with conn.lock:
                pgconn.send_query(sql)
                pending.sent = True
                pending.flushed = pgconn.flush() == 0
        state.pending = pending
        return True

    @staticmethod
    def _prepare_counts(
        conn: psycopg.Connection[Any], state: _State, pending: _Pending
    ) -> bool:
        """Decide what the probe asks of prepared statements; True: drop them all."""
        prepared = conn._prepared
        pending.temps = pending.since is not None
        if not (prepared._names or prepared._to_flush):
            return True  # psycopg has none to keep: drop every one
        # Count the session's statements (the user's are dropped, psycopg's
        # must all be there) if the loan may have changed them: it ran a
        # query psycopg did not prepare (a SQL PREPARE or DEALLOCATE is one),
        # or psycopg prepared one (that may be a PREPARE), or tracks nothing.
        # Counting reads pg_prepared_statement() (~20 us of server CPU).
        pending.counts = (
            state.count_always
            or pending.temps
            or prepared.prepare_threshold is None
            or _queries_mark(prepared) != state.queries_mark
        )
        if pending.counts:
            flush = prepared._to_flush
            if None in flush:  # psycopg owes a DEALLOCATE ALL: settling does it
                pending.expected = None
            else:
                pending.expected = len(prepared._names) + len(flush)
        return False


def _queries_mark(prepared: Any) -> object:
    """Return what changes when psycopg runs a query it has not prepared.

    psycopg's PrepareManager counts each such query in an LRU dict (its key
    moves to the end, its count grows; psycopg/_preparing.py), unless
    ``prepare_threshold`` is None. A query it prepares meanwhile leaves it
    (the statement counter shows that one).
    """
    counts = prepared._counts
    if not counts:
        return None
    key = next(reversed(counts))
    return (len(counts), key, counts[key])


#: Return what a connection has open that a borrower could still act on (see
#: _refuse_unresettable()): as _NONE_OPEN when nothing is.
_open = attrgetter("_num_transactions", "_pipeline", "_tpc", "pgconn.pipeline_status")
_NONE_OPEN = (0, None, None, PipelineStatus.OFF)


def _refuse_unresettable(conn: psycopg.Connection[Any], pgconn: Any) -> None:
    """Raise if *conn* holds client state that its borrower could still act on.

    An open ``transaction()`` block or pipeline, or a two-phase transaction,
    would later be ended by the old borrower's object on the new borrower's
    session; a running ``notifies()`` generator would take its notifications.
    psycopg_pool discards such a connection too (its rollback() refuses).
    """
    what = None
    if conn._num_transactions:
        what = "a transaction() block"
    elif conn._pipeline is not None or pgconn.pipeline_status != PipelineStatus.OFF:
        what = "a pipeline"
    elif conn._tpc is not None:
        what = "a two-phase transaction"
    elif conn._notifies_backlog is None:
        what = "a notifies() generator"
    if what is not None:
        raise psycopg.ProgrammingError(f"returned with {what} still open: discarded")


# -- the settling half -----------------------------------------------------------------


def run_configure(
    conn: psycopg.Connection[Any], configure: Callable[[Any], None]
) -> None:
    """Run a pool's *configure* on *conn*; raise if it left a transaction open.

    psycopg_pool's rule for ``configure``: a connection it leaves in a
    transaction is discarded (ProgrammingError). Run on every new connection
    and again after each reset (``RESET ALL`` undoes what it set).
    """
    configure(conn)
    status = conn.pgconn.transaction_status
    if status != _IDLE:
        raise psycopg.ProgrammingError(
            f"connection left in status {TransactionStatus(status).name}"
            f" by configure function {configure}: discarded"
        )


def settle(conn: psycopg.Connection[Any], timeout: float | None = None) -> None:
    """Finish *conn*'s reset, if one is in flight, before anything else uses it.

    Reads the answer (waiting at most *timeout* seconds, a client's time
    left, and never more than :data:`SETTLE_TIMEOUT`), acts on it, then
    makes the connection's Python side as it was made and runs ``configure``
    again. On any failure the connection is closed and the error raised: it
    is then discarded as one that failed its check.
    """
    state: _State | None = getattr(conn, _STATE, None)
    if state is None:
        return
    pending = state.pending
    if pending is None:
        return
    state.pending = None
    try:
        reset = state.reset
        pgconn = conn.pgconn
        # After a session reset, as the pool made it (configure runs again:
        # RESET ALL undid what it set); else as configure left it.
        snapshot = state.made if pending.session else state.configured
        restore = reset.restore  # False: reset=None, a reset of the user's
        # The previous borrower's handlers hear nothing more, not even the
        # reset (with reset=None, as psycopg_pool, they stay).
        if restore and _handlers(conn) != snapshot.handlers:
            if conn._notice_handlers != snapshot.notice_handlers:
                conn._notice_handlers[:] = snapshot.notice_handlers
            if conn._notify_handlers != snapshot.notify_handlers:
                conn._notify_handlers[:] = snapshot.notify_handlers
            if (
                pgconn.notice_handler,
                pgconn.notify_handler,
            ) != snapshot.pgconn_handlers:
                pgconn.notice_handler, pgconn.notify_handler = snapshot.pgconn_handlers
        rows: list[Any] = []
        with conn.lock:
            if pending.sent:  # none in flight: nothing to read
                rows = _answer(pgconn, pending, timeout)
            # Notifications that came before UNLISTEN (or ROLLBACK) took
            # effect: libpq's queue and psycopg's backlog (with reset=None,
            # as psycopg_pool, the next borrower's).
            while restore and pgconn.notifies() is not None:
                pass
        backlog = conn._notifies_backlog
        if backlog and restore:
            backlog.clear()
        if rows or pending.since is not None:
            _act_on(conn, state, pending, rows)
        if restore:
            _restore(conn, snapshot, state.configured)
            if pending.session and reset.configure is not None:
                run_configure(conn, reset.configure)
                if reset.tracked:
                    # What configure ran is not the next loan's. Nothing else
                    # here runs a statement through a cursor (the rest goes
                    # through libpq), and start() took the loan's marks.
                    take_changed(conn)
        prepared = conn._prepared
        state.prepared_idx = prepared._prepared_idx
        state.queries_mark = _queries_mark(prepared)
    except BaseException:
        conn.close()
        raise


def _answer(pgconn: Any, pending: _Pending, timeout: float | None) -> list[Any]:
    """Read the reset's answer; return the rows of its SELECTs, first row each.

    Raise SessionResetFailed if the server refused it or it did not come
    within *timeout* seconds (at most SETTLE_TIMEOUT); OperationalError if the
    connection was lost.
    """
    deadline = 0.0  # not read until something is waited for: an answer there
    if not pending.flushed:
        deadline = _deadline(timeout)
        while pgconn.flush():
            _wait(pgconn.socket, deadline, write=True)
    pgconn.consume_input()  # what has arrived: usually all of it
    results: list[Any] = []
    if pending is _ROLLBACK and not pgconn.is_busy():
        # A lone ROLLBACK (the usual reset), whose answer has usually all
        # arrived: read as fetch_many() would, without a generator.
        first = pgconn.get_result()
        if first is not None and not pgconn.is_busy():
            last = pgconn.get_result()  # None: the end
            if (
                last is None
                and first.status == _COMMAND_OK
                and pgconn.status == _CONNECTION_OK
            ):
                return results
            results = [first] if last is None else [first, last]
        elif first is not None:
            results = [first]
    results = _fetch(pgconn, deadline or _deadline(timeout), results)
    rows: list[Any] = []
    error = None
    want = pending.wrote or pending.counts or pending.temps  # rows to read
    for result in results:
        status = result.status
        if status == _TUPLES_OK:
            if want:
                rows.append([result.get_value(0, i) for i in range(result.nfields)])
        elif status != _COMMAND_OK and error is None:
            error = (result.error_message or b"").decode("utf-8", "replace").strip()
    if pgconn.status != _CONNECTION_OK:
        raise psycopg.OperationalError(error or "the connection is closed")
    if error is not None:
        raise SessionResetFailed(f"session reset failed: {error}")
    return rows


def _deadline(timeout: float | None) -> float:
    """Return when a wait of *timeout* seconds (at most SETTLE_TIMEOUT) ends."""
    if timeout is None or timeout > SETTLE_TIMEOUT:
        timeout = SETTLE_TIMEOUT
    return monotonic() + timeout


def _fetch(pgconn: Any, deadline: float, results: list[Any]) -> list[Any]:
    """Return *results* (read already) and the rest of the query's, by *deadline*."""
    # psycopg's own reading of a query's results (compiled, with psycopg's
    # binary package), driven here so that its waits have a deadline. It
    # waits for nothing when the answer has arrived, which is usual.
    fetching = fetch_many(pgconn)
    try:
        next(fetching)
        while True:
            _wait(pgconn.socket, deadline)
            fetching.send(EVENT_READ)
    except StopIteration as done:
        rest: list[Any] = done.value
        return results + rest if results else rest
    except psycopg.DatabaseError:
        # As fetch_many() does with its own: after a fatal error (reported
        # then), a connection lost ends the results.
        if any(result.status == _FATAL_ERROR for result in results):
            return results
        raise


def _wait(fd: int, deadline: float, *, write: bool = False) -> None:
    """Wait until *fd* can be read (or written); raise if *deadline* passes first."""
    remaining = deadline - monotonic()
    if remaining > 0:
        if hasattr(select, "poll"):
            poller = select.poll()
            event = select.POLLOUT if write else select.POLLIN
            poller.register(fd, event | select.POLLERR | select.POLLHUP)
            if poller.poll(remaining * 1000.0):
                return
        elif _selected(fd, remaining, write=write):
            return
    raise SessionResetFailed("session reset not answered in time")


def _act_on(
    conn: psycopg.Connection[Any], state: _State, pending: _Pending, rows: list[Any]
) -> None:
    """Warn about a lost write; drop prepared statements the client must not keep."""
    row = rows[0] if rows else ()
    column = 1 if pending.session else 0  # after pg_advisory_unlock_all()
    wrote = False
    if pending.wrote:
        wrote = row[column] == b"t"
        column += 1
        if wrote and state.warn_write:
            pool_logger.warning(
                "pool %r: the transaction left open by %s had written; its writes"
                " were rolled back (commit them: conn.commit() or a"
                " transaction() block)",
                state.reset.name,
                "an unnamed borrower" if state.borrower is None else state.borrower,
            )
    state.borrower = None
    state.warn_write = False
    if not pending.counts and pending.since is None:
        return
    prepared = conn._prepared
    user = 0
    mismatch = False
    temps: list[str] = []
    if pending.counts:
        user, theirs = int(row[column]), int(row[column + 1])
        mismatch = pending.expected is None or theirs != pending.expected
        column += 2
    if pending.temps and row[column]:
        temps = row[column].decode("utf-8", "replace").lower().split("\n")
    stale: list[bytes] = []
    if pending.since is not None and not mismatch:
        # Statements psycopg prepared during the loan: planned against what a
        # rolled-back write (DDL) or a dropped temporary relation defined.
        ended = wrote or (state.rolled_back and pending.wrote is None)
        for key, name in list(prepared._names.items()):
            if _statement_number(name) < pending.since:
                continue
            if _MAY_PREPARE.search(key[0]):
                state.count_always = True
            text = key[0].decode("utf-8", "replace").lower()
            if ended or any(t in text for t in temps):
                del prepared._names[key]
                stale.append(name)
    if mismatch:
        _deallocate_all(conn)
        return
    statements = [b'DEALLOCATE "' + name + b'"' for name in stale]
    if user:
        statements.append(_DEALLOCATE_USERS)
    if statements:
        try:
            _exec(conn, b"; ".join(statements))
        except SessionResetFailed:
            _deallocate_all(conn)  # no PL/pgSQL here? drop them all


def _statement_number(name: bytes) -> int:
    """Return N of psycopg's statement name ``_pg3_N`` (psycopg/_preparing.py)."""
    try:
        return int(name.rpartition(b"_")[2])
    except ValueError:
        return 1 << 62  # not psycopg's naming: count it as prepared now


def _deallocate_all(conn: psycopg.Connection[Any]) -> None:
    """Drop every prepared statement, and make psycopg forget its own (as it would)."""
    _exec(conn, b"DEALLOCATE ALL")
    prepared = conn._prepared
    prepared.clear()
    prepared._to_flush.clear()  # clear() queued the DEALLOCATE ALL just run


def _exec(conn: psycopg.Connection[Any], sql: bytes) -> None:
    """Run *sql* with libpq's PQexec; raise OperationalError if it failed."""
    with conn.lock:
        result = conn.pgconn.exec_(sql)
    if result.status not in (_COMMAND_OK, _TUPLES_OK):
        message = (result.error_message or b"").decode("utf-8", "replace").strip()
        raise SessionResetFailed(f"session reset failed: {message}")


def _restore(
    conn: psycopg.Connection[Any], snapshot: _Snapshot, configured: _Snapshot
) -> None:
    """Make *conn*'s Python side as it was in *snapshot*.

    The attributes a borrower added to the instance (``conn.tenant_id =
    42``) are removed, and those configure set are given their values again
    (as *configured* has them): public names only, the ones starting with an
    underscore are psycopg's, psycopg_pool's and ours.
    """
    if _attributes(conn) != snapshot.attributes:
        for name, value in zip(_ATTRIBUTES, snapshot.settable, strict=True):
            if getattr(conn, name) != value:
                setattr(conn, name, value)
    adapters = conn._adapters
    if adapters is None or _adapters_key(adapters) != snapshot.adapters_key:
        conn._adapters = AdaptersMap(snapshot.adapters)
    d = conn.__dict__
    # Configure's first: one the borrower deleted is back before the sizes
    # are compared (else one deleted and one added would leave the same size).
    for name, value in configured.user.items():
        if d.get(name, _MISSING) is not value:
            d[name] = value
    if len(d) != configured.size:
        names = configured.names
        for name in [n for n in d if n not in names and not n.startswith("_")]:
            del d[name]
        # Ours and the libraries' added since (a poller, psycopg_pool's
        # marks): compared by size only from now on.
        configured.names = frozenset(d)
        configured.size = len(d)


# -- watching a connection (for pgpool_core._tracking), bounding its waits ---------
# -- (for pgpool_core._socket_timeout) ---------------------------------------------

#: Given a connection and the generator of one of its operations, return the
#: generator to drive instead (the same one: no change).
WaitWrapper = Callable[
    [psycopg.Connection[Any], Generator[Any, Any, Any]], Generator[Any, Any, Any]
]

# A pool's connection gets a subclass of its own class (by the same names)
# that does what applies of both: watched (watch()), its waits shadowed
# (shadow_wait()). One class per user's class and what it does, made once:
# (the user's class, watched, the wait's wrapper or None) -> the subclass.
_connection_classes: dict[tuple[type[Any], bool, WaitWrapper | None], type[Any]] = {}
# The cursor subclasses made so far, by the class each extends (False: a
# cursor class that cannot be watched).
_cursor_classes: dict[type[Any], type[Any] | bool] = {}


def watch(conn: psycopg.Connection[Any]) -> None:
    """Make *conn* tell :func:`~pgpool_core._tracking.take_changed` whether a
    loan may have changed its session.

    Its class becomes a subclass of its own (cached, by the same name), whose
    ``cursor()`` makes each cursor it returns one of a subclass of the
    cursor's own class too, which classifies each statement as it starts it
    and, if plain, *vouches* for it; the connection's ``_start_query()``,
    through which every statement any cursor starts goes, marks the
    connection changed when nobody vouched for it (see
    :mod:`pgpool_core._tracking`). Its waits stay shadowed if they were
    (:func:`shadow_wait`).
    """
    cls = type(conn)
    if not getattr(cls, "_pgpool_watched", False):
        _become(conn, cls, True, getattr(cls, "_pgpool_wrap", None))
    take_changed(conn)


def shadow_wait(conn: psycopg.Connection[Any], wrap: WaitWrapper) -> None:
    """Have each wait of *conn* on its socket drive ``wrap(conn, gen)`` instead.

    psycopg runs each operation of a connection (a query, a fetch, a commit)
    as a generator *gen*, which ``Connection.wait()`` hands to psycopg's wait
    function. *conn*'s class becomes a subclass of its own (cached, by the
    same name; still watched if it was, :func:`watch`) whose ``wait()``
    calls the class's with the generator *wrap* returns: psycopg's handling
    of Ctrl-C and its choice of wait function stay. *wrap* is called for
    every wait: what it needs of the connection, it reads from it. Not for
    ``Connection.notifies()``, whose wait lasts as long as its own
    ``timeout`` says.
    """
    cls = type(conn)
    if getattr(cls, "_pgpool_wrap", None) is not wrap:
        _become(conn, cls, getattr(cls, "_pgpool_watched", False), wrap)


def _become(
    conn: psycopg.Connection[Any],
    cls: type[Any],
    watched: bool,
    wrap: WaitWrapper | None,
) -> None:
    """Make *conn* one of the subclass of its user's class that does both."""
    base = cls.__dict__.get("_pgpool_base", cls)
    key = (base, watched, wrap)
    made = _connection_classes.get(key)
    if made is None:
        made = _connection_classes[key] = _connection_class(base, watched, wrap)
    conn.__class__ = made


def _same_names(cls: type[Any], base: type[Any]) -> type[Any]:
    # Reprs, error messages and type names stay those of the user's class.
    cls.__name__ = base.__name__
    cls.__qualname__ = base.__qualname__
    cls.__module__ = base.__module__
    return cls


# Called for every statement and every wait: the base classes' methods are
# looked up once, the flags are plain attributes (no super(), no __dict__
# lookups).


def _connection_class(
    base: type[Any], watched: bool, wrap: WaitWrapper | None
) -> type[Any]:
    """Return a subclass of connection class *base*: watched, its waits
    shadowed by *wrap* (not None), as asked."""
    space: dict[str, Any] = {
        # The user's class, and what this one does (watch(), shadow_wait()).
        "_pgpool_base": base,
        "_pgpool_watched": watched,
        "_pgpool_wrap": wrap,
    }
    if watched:
        space.update(_watching(base))
    if wrap is not None:
        space["wait"] = _shadowing_wait(base.wait, wrap)
    return _same_names(type(base.__name__, (base,), space), base)


def _watching(base: type[Any]) -> dict[str, Any]:
    base_cursor = base.cursor
    base_start = base._start_query
    cursors = _cursor_classes

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            cur = base_cursor(self, *args, **kwargs)
        else:
            cur = base_cursor(self)  # the usual call: no arguments to pass
        try:
            watched = cursors[cur.__class__]
        except KeyError:  # a cursor class not seen yet
            cls = cur.__class__
            watched = cursors[cls] = _watched_cursor_class(cls) or False
        if watched:
            cur.__class__ = watched
        return cur

    def _start_query(self: Any) -> Any:
        # Every statement a cursor starts, whatever made the cursor.
        if self._pgpool_vouched:
            self._pgpool_vouched = False
        else:
            self._pgpool_changed = True
        return base_start(self)

    return {
        "cursor": cursor,
        "_start_query": _start_query,
        # The flags (see take_changed()), set on the instance.
        "_pgpool_vouched": False,
        "_pgpool_changed": False,
        "_pgpool_wrote": False,
    }


def _shadowing_wait(wait: Any, wrap: WaitWrapper) -> Callable[..., Any]:
    def shadowing_wait(self: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            # notifies() passes its timeout (so does a caller with its own
            # interval or timeout): never the usual call, with none.
            try:
                if gen.__name__ != "notifies":
                    gen = wrap(self, gen)
            except AttributeError:  # not a generator: wrapped too
                gen = wrap(self, gen)
            return wait(self, gen, *args, **kwargs)
        return wait(self, wrap(self, gen))

    return shadowing_wait


def _watched_cursor_class(base: type[Any]) -> type[Any] | None:
    """Return the subclass of cursor class *base* that classifies statements.

    None for a server cursor (every statement it starts counts as changing)
    or a class whose instances cannot change class.
    """
    if issubclass(base, psycopg.ServerCursor) or not issubclass(base, psycopg.Cursor):
        return None
    base_start = base._start_query
    base_copy = base._start_copy_gen
    kinds = kind_of

    class Watched(base):  # type: ignore[misc]
        __slots__ = ()

        def _start_query(self, query: Any = None) -> Any:
            # execute(), executemany(), stream(); copy() gives no query here
            # (None: not a text, it changes; _start_copy_gen() vouched).
            if not self._closed:
                try:
                    kind = kinds[query]  # a text: classified once
                except TypeError:  # a Composable: made into text first
                    kind = statement_kind(query, self)
                if kind != CHANGES:
                    self._conn._pgpool_vouched = True
                    if kind:
                        self._conn._pgpool_wrote = True
            return base_start(self, query)

        def _start_copy_gen(self, statement: Any, params: Any = None) -> Any:
            conn = self._conn
            if not conn._pipeline and not self._closed:
                kind = statement_kind(statement, self)
                if kind != CHANGES:
                    conn._pgpool_vouched = True
                    if kind:
                        conn._pgpool_wrote = True
            return base_copy(self, statement, params)

    try:
        # The layout must allow changing an instance's class.
        probe = object.__new__(base)
        probe.__class__ = Watched
    except TypeError:
        return None
    return _same_names(Watched, base)


# -- errors (for pgpool_core._secrets) ---------------------------------------------


def replace_failed_pgconn(error: BaseException, replace: Callable[[Any], Any]) -> None:
    """Replace what psycopg error *error* keeps of a failed connect's libpq
    connection (psycopg 3.3's ``FinishedPGconn``, a dataclass) with
    ``replace(it)``; do nothing if it keeps none."""
    pgconn = getattr(error, "_pgconn", None)
    if isinstance(error, psycopg.Error) and dataclasses.is_dataclass(pgconn):
        error._pgconn = replace(pgconn)


# -- the wait function (for pgpool_core._green) ----------------------------------


def use_connect_selector(waiting: Any, selector: type[Any]) -> bool:
    """Have psycopg's connection waits make a *selector* (``selectors``'
    ``DefaultSelector`` as gevent or eventlet patched it).

    *waiting* is the module ``psycopg.waiting``, which imported
    ``DefaultSelector`` when it was imported. Return True if it changed.
    """
    if waiting.DefaultSelector is selector:
        return False
    waiting.DefaultSelector = selector
    return True


def use_wait_function(waiting: Any, name: str) -> bool:
    """Have psycopg wait with its ``wait_<name>`` (``"poll"``, ``"select"``).

    *waiting* is the module ``psycopg.waiting``: its ``wait``, which psycopg
    chose when imported, and from psycopg 3.3.9 the readiness function
    ``wait_async()`` uses (``_ready``), as psycopg would have chosen them in a
    process patched before. Return True if they changed.
    """
    wait = getattr(waiting, f"wait_{name}")
    if waiting.wait is wait:
        return False
    waiting.wait = wait
    # psycopg 3.3.9 and later: what wait_async() checks before the event loop.
    ready = getattr(waiting, f"_ready_{name}", None)
    if ready is not None and hasattr(waiting, "_ready"):
        waiting._ready = ready
    return True
