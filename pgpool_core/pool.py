"""ForkSafePool: one psycopg_pool.ConnectionPool per process."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from time import monotonic
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.pool import AddConnection

from . import capacity, lifecycle
from .errors import PoolNotAvailable
from .loans import Loans
from .options import (
    mask_conninfo,
    merge_defaults,
    parse_conninfo,
    validate_pool_options,
)
from .session import check_connection, make_reset, rollback_if_needed, snapshot

__all__ = ["ForkSafePool"]

logger = logging.getLogger("pgpool.pool")

ConnectionCB = Callable[[psycopg.Connection[Any]], None]


class _Default:
    def __repr__(self) -> str:
        return "<default>"


#: Stands for "the package's default" where None already means "none".
DEFAULT: Any = _Default()

_counter = itertools.count(1)

#: The longest wait between two attempts to replace a connection that failed.
#: psycopg_pool doubles its wait at each failure (1, 2, 4 ... 128 s): after a
#: minute's outage the first request could wait a minute more after the server
#: is back. Capped, requests succeed about a second after it accepts again.
RECONNECT_DELAY_MAX = 1.0


#: How long os.fork() waits for connections being made by pool threads.
FORK_CONNECT_WAIT = 2.0


class _ProcessPool(ConnectionPool[Any]):
    """psycopg's pool, retrying failed connects at least every RECONNECT_DELAY_MAX.

    Also counts the connections its threads are making, so that os.fork() can
    wait for them (see :meth:`hold_connects`).
    """

    def __init__(
        self, *args: Any, inline_reset: ConnectionCB | None = None, **kwargs: Any
    ) -> None:
        self._connects = threading.Condition(threading.Lock())
        self._connecting = 0
        self._inline_reset = inline_reset
        super().__init__(*args, **kwargs)

    def putconn(self, conn: Any) -> None:
        """Reset *conn* here, then return it as psycopg_pool does.

        psycopg_pool runs its ``reset`` in a pool thread: the hand-over costs
        the returning process more CPU than the reset itself (one round trip
        that also rolls back, see :func:`~pgpool_core.session.run_reset_sql`).
        """
        reset = self._inline_reset
        if (
            reset is not None
            and getattr(conn, "_pool", None) is self
            and not conn.closed
            and not self.closed
        ):
            try:
                reset(conn)
                status = conn.pgconn.transaction_status
                if status != TransactionStatus.IDLE:
                    raise psycopg.ProgrammingError(
                        f"connection left in status {TransactionStatus(status).name}"
                        " by the reset: discarded"
                    )
            except Exception as err:
                logger.warning("error resetting connection: %s", err)
                conn.close()  # psycopg_pool discards it and makes a new one
        super().putconn(conn)

    def schedule_task(self, task: Any, delay: float) -> None:
        if isinstance(task, AddConnection):
            delay = min(delay, RECONNECT_DELAY_MAX)
        super().schedule_task(task, delay)

    def _connect(self, timeout: float | None = None) -> Any:
        with self._connects:
            self._connecting += 1
        try:
            return super()._connect(timeout)
        finally:
            with self._connects:
                self._connecting -= 1
                self._connects.notify_all()

    def hold_connects(self, timeout: float) -> None:
        """Wait up to *timeout* until no connection is being made; start none.

        Called before os.fork(): a connection half made by a pool thread is
        known to no one but that thread, which the child does not have, so
        the child could not abandon it, and the garbage collector would close
        it there (libpq then writes on the parent's socket). Connections made
        are tracked, so waiting for those being made is enough.
        :meth:`release_connects` must follow, in parent and child.
        """
        self._connects.acquire()
        self._connects.wait_for(lambda: self._connecting == 0, timeout)

    def release_connects(self) -> None:
        self._connects.release()


class _ProcessState:
    """What one process owns: its pool (None in a forking master), its loans."""

    __slots__ = ("pid", "pool", "out")

    def __init__(self, pid: int, pool: ConnectionPool[Any] | None) -> None:
        self.pid = pid
        self.pool = pool
        self.out: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


class ForkSafePool:
    """A psycopg connection pool that is safe to create before a server forks.

    Takes the arguments of :class:`psycopg_pool.ConnectionPool`, by the same
    names, so that ``ConnectionPool(dsn, ...)`` becomes ``ForkSafePool(dsn, ...)``.
    Nothing connects when it is made. Each process that uses it gets its own
    ``ConnectionPool``, made on first use; one inherited through fork is
    abandoned, its sockets left to the parent.

    Defaults that differ from ``ConnectionPool``: TCP keepalives, a 30 s
    ``tcp_user_timeout`` and a 10 s ``connect_timeout`` unless set
    (``keepalives=False`` leaves out all but ``connect_timeout``); a
    ``check`` that costs no round trip on a healthy connection (``check=None``
    for none); a ``reset`` that undoes session state and re-runs ``configure``
    (``reset=None`` for none). ``open`` is accepted for compatibility: the pool
    always opens on first use in each process.

    ``warn_held_after`` (seconds, default None: off) logs a warning when a
    connection comes back after being borrowed for longer, naming what
    borrowed it (see :func:`pgpool_core.borrower`).

    ``pgbouncer=True`` is for a conninfo that points at PgBouncer in
    transaction mode: connections never prepare statements
    (``prepare_threshold=None``: the next transaction may run on another
    server session, which lacks them), and the default reset sends nothing
    (session commands such as ``RESET ALL`` would reach whichever server
    session PgBouncer picks); the worst-case check against the server's
    ``max_connections`` is skipped, since PgBouncer bounds what the server sees.

    On the first connection a process makes, the pool reads the server's
    ``max_connections`` and logs one warning if the host's worker processes
    (known under uWSGI, gunicorn or ``WEB_CONCURRENCY``) x ``max_size`` exceed
    it (see :mod:`pgpool_core.capacity`).
    """

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        kwargs: Mapping[str, Any] | Callable[[], dict[str, Any]] | None = None,
        name: str | None = None,
        connection_class: type[psycopg.Connection[Any]] = psycopg.Connection,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool | None = None,
        configure: ConnectionCB | None = None,
        check: ConnectionCB | None = DEFAULT,
        reset: ConnectionCB | None = DEFAULT,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[ConnectionPool[Any]], None] | None = None,
        num_workers: int = 3,
        keepalives: bool = True,
        warn_held_after: float | None = None,
        pgbouncer: bool = False,
    ) -> None:
        options: dict[str, Any] = {
            "kwargs": kwargs,
            "name": name,
            "connection_class": connection_class,
            "min_size": min_size,
            "max_size": max_size,
            "open": open,
            "configure": configure,
            "check": None if check is DEFAULT else check,
            "reset": None if reset is DEFAULT else reset,
            "close_returns": close_returns,
            "timeout": timeout,
            "max_waiting": max_waiting,
            "max_lifetime": max_lifetime,
            "max_idle": max_idle,
            "reconnect_timeout": reconnect_timeout,
            "reconnect_failed": reconnect_failed,
            "num_workers": num_workers,
            "keepalives": keepalives,
            "warn_held_after": warn_held_after,
            "pgbouncer": pgbouncer,
        }
        validate_pool_options(options)

        self.name = name or f"pgpool-{next(_counter)}"
        self.warn_held_after = warn_held_after
        self._loans = Loans(self.name, warn_held_after)
        self._conninfo: str | Callable[[], str]
        if callable(conninfo):
            self._conninfo = self._merged_conninfo_of(conninfo, keepalives)
            self._masked = "<callable>"
        else:
            parse_conninfo(conninfo)
            static_kwargs = kwargs if isinstance(kwargs, Mapping) else {}
            self._conninfo = merge_defaults(
                conninfo, static_kwargs, keepalives=keepalives
            )
            self._masked = mask_conninfo(conninfo)
        self._kwargs = dict(kwargs) if isinstance(kwargs, Mapping) else kwargs
        self._connection_class = connection_class
        self.min_size = min_size
        self.max_size = min_size if max_size is None else max_size
        self.timeout = timeout
        self._configure = configure
        self._check = check_connection if check is DEFAULT else check
        self._fresh: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[str, Any]]
        self._fresh = weakref.WeakKeyDictionary()
        self.pgbouncer = pgbouncer
        # Ours runs in the returning thread (see _ProcessPool.putconn); one
        # given runs in a pool thread, as psycopg_pool runs it.
        self._reset_inline = reset is DEFAULT
        self._reset = (
            make_reset(configure, self._fresh.get, session=not pgbouncer)
            if reset is DEFAULT
            else reset
        )
        # The process whose first connection was checked against the server's limit.
        self._limit_checked_in: int | None = None
        self._pool_options: dict[str, Any] = {
            "close_returns": close_returns,
            "max_waiting": max_waiting,
            "max_lifetime": max_lifetime,
            "max_idle": max_idle,
            "reconnect_timeout": reconnect_timeout,
            "reconnect_failed": reconnect_failed,
            "num_workers": num_workers,
        }
        self._state: _ProcessState | None = None
        # The parent whose pool was abandoned here, until a fresh one is made.
        self._inherited_from: int | None = None
        # States closed with connections still out: putconn() closes those.
        self._retired: list[_ProcessState] = []
        # Every connection made here, by process: one that a pool thread held
        # when the process forked (being reset on return, being added) is in
        # neither the pool nor a loan, and the child must abandon it too.
        self._made: dict[int, weakref.WeakSet[psycopg.Connection[Any]]] = {}
        # Across os.fork(): strong references to those, which CPython would
        # otherwise free in the child with the parent's threads, closing them
        # (libpq then writes Terminate on the parent's socket).
        self._pinned: list[psycopg.Connection[Any]] = []
        # This process's pool while os.fork() keeps its threads from connecting.
        self._held: _ProcessPool | None = None
        lifecycle.register(self)

    @staticmethod
    def _merged_conninfo_of(
        conninfo: Callable[[], str], keepalives: bool
    ) -> Callable[[], str]:
        def merged() -> str:
            return merge_defaults(conninfo(), {}, keepalives=keepalives)

        return merged

    def __repr__(self) -> str:
        state = self._state
        if state is None or state.pid != os.getpid():
            status = "not opened in this process"
        elif state.pool is None:
            status = "forking master, no pool"
        else:
            status = "open"
        return (
            f"<{type(self).__name__} {self.name!r} {self._masked!r}"
            f" pid={os.getpid()} {status}>"
        )

    # -- the process's pool --------------------------------------------------

    def _current(self) -> _ProcessState:
        """Return this process's state, making its pool on first use."""
        state = self._state
        if state is not None and state.pool is not None and state.pid == os.getpid():
            return state
        with lifecycle.process_lock():
            return self._current_locked()

    def _current_locked(self) -> _ProcessState:
        pid = os.getpid()
        state = self._state
        if state is not None and state.pid != pid:
            state = None
        self._leave_inherited()
        if state is not None and state.pool is not None:
            return state  # another thread made it while we waited
        if lifecycle.in_forking_master():
            if state is None:
                state = self._state = _ProcessState(pid, None)
            return state
        new = _ProcessState(pid, self._make_pool())
        if state is not None:
            new.out = state.out  # connections made here while it was a master
        self._state = new
        if self._inherited_from is not None:
            logger.info(
                "pool %r: fresh pool made in process %d; the one inherited from"
                " process %d is abandoned",
                self.name,
                pid,
                self._inherited_from,
            )
            self._inherited_from = None
        else:
            logger.debug("pool %r: opened in process %d", self.name, pid)
        return new

    def _make_pool(self) -> ConnectionPool[Any]:
        pool: ConnectionPool[Any] = _ProcessPool(
            self._conninfo,
            kwargs=self._kwargs,
            connection_class=self._connection_class,
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            configure=self._configure_new,
            reset=None if self._reset_inline else self._reset,
            inline_reset=self._reset if self._reset_inline else None,
            name=self.name,
            timeout=self.timeout,
            **self._pool_options,
        )
        with lifecycle.stop_signals_blocked():
            pool.open()
        return pool

    def _track(self, conn: psycopg.Connection[Any]) -> None:
        """Remember *conn* for a child to abandon (see ``_made``)."""
        made = self._made.get(os.getpid())
        if made is None:
            made = self._made.setdefault(os.getpid(), weakref.WeakSet())
        made.add(conn)

    def _configure_new(self, conn: psycopg.Connection[Any]) -> None:
        self._track(conn)
        if self.pgbouncer:
            conn.prepare_threshold = None
        self._fresh[conn] = snapshot(conn)
        if self._configure is not None:
            self._configure(conn)
        pid = os.getpid()
        if self._limit_checked_in != pid and not self.pgbouncer:
            # Once per process, in the pool's thread that made the connection.
            self._limit_checked_in = pid
            capacity.warn_if_over(self.name, self.max_size, conn)

    def _leave_inherited(self) -> None:
        """Abandon what this object holds from a parent process; touch none of it."""
        pid = os.getpid()
        inherited = [state for state in self._retired if state.pid != pid]
        state = self._state
        if state is not None and state.pid != pid:
            self._state = None
            inherited.append(state)
            # Logged when the fresh pool that replaces it is made.
            self._inherited_from = state.pid
        made = [conns for owner, conns in self._made.items() if owner != pid]
        if not inherited and not made:
            return
        self._retired = [state for state in self._retired if state.pid == pid]
        self._made = {owner: c for owner, c in self._made.items() if owner == pid}
        for state in inherited:
            if state.pool is not None:
                pool = state.pool
                # Its __del__ would try to stop worker threads that only exist
                # in the parent: a closed pool's __del__ does nothing.
                pool._closed = True
                lifecycle.abandon(pool)
                for conn in list(getattr(pool, "_pool", ())):
                    lifecycle.abandon_connection(conn)
            for conn in list(state.out):
                lifecycle.abandon_connection(conn)
        # Those a pool thread of the parent was handling at the fork.
        for conns in made:
            for conn in conns:
                if not conn.closed:
                    lifecycle.abandon_connection(conn)

    def _before_fork(self) -> None:
        """Before os.fork(): let pool threads finish the connections they make,
        start no other, and keep every connection alive through the fork."""
        pid = os.getpid()
        state = self._state
        if (
            state is not None
            and state.pid == pid
            and isinstance(state.pool, _ProcessPool)
        ):
            state.pool.hold_connects(FORK_CONNECT_WAIT)
            self._held = state.pool
        made = self._made.get(pid)
        for _ in range(3):
            try:
                self._pinned = list(made or ())
                break
            except RuntimeError:  # another thread added one meanwhile
                continue

    def _after_fork(self) -> None:
        """After os.fork(), in parent and child: undo what _before_fork() did.

        In the child, after_fork_in_child() has abandoned what was pinned.
        """
        held, self._held = self._held, None
        if held is not None:
            held.release_connects()
        self._pinned = []

    def _leave_if_inherited(self) -> None:
        """Abandon what is inherited from a parent process, making no pool."""
        pid = os.getpid()
        state = self._state
        if (state is not None and state.pid != pid) or (
            self._retired and any(retired.pid != pid for retired in self._retired)
        ):
            with lifecycle.process_lock():
                self._leave_inherited()

    def is_inherited(self, conn: psycopg.Connection[Any]) -> bool:
        """Return True if *conn* was borrowed in a parent process.

        Such a connection is the parent's: this process must neither use,
        close nor give it back (putconn() ignores it). An adapter that keeps
        a borrowed connection across requests asks before using it.
        """
        self._leave_if_inherited()
        return lifecycle.is_abandoned(conn)

    @property
    def pool(self) -> ConnectionPool[Any]:
        """This process's ``psycopg_pool.ConnectionPool``, made on first access."""
        pool = self._current().pool
        if pool is None:
            raise PoolNotAvailable(
                f"pool {self.name!r}: this process is a forking server's master;"
                " it has no pool (use .connection(), which gives it a plain"
                " connection, or access the pool in the workers)"
            )
        return pool

    # -- borrowing -----------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """Borrow a checked connection; give it back with putconn()."""
        state = self._current()
        if state.pool is None:
            conn = self._connect_unpooled()
        else:
            conn = self._getconn_checked(
                state.pool, self.timeout if timeout is None else timeout
            )
        state.out.add(conn)
        self._loans.lent(conn)
        return conn

    def _getconn_checked(
        self, pool: ConnectionPool[Any], timeout: float
    ) -> psycopg.Connection[Any]:
        # Not psycopg_pool's own check loop: it backs off ~1 s after the
        # second dead connection, so after a mass termination requests hit
        # PoolTimeout. A dead connection is discarded and the next is tried now.
        deadline = monotonic() + timeout
        while True:
            try:
                conn: psycopg.Connection[Any] = pool.getconn(
                    max(deadline - monotonic(), 0.0)
                )
            except PoolTimeout:
                raise PoolTimeout(
                    f"couldn't get a connection from pool {self.name!r}"
                    f" after {timeout:.2f} sec"
                ) from None
            if self._check is None:
                return conn
            try:
                self._check(conn)
            except Exception as err:
                logger.info(
                    "pool %r: discarding a connection that failed its check: %s",
                    self.name,
                    err,
                )
                conn.close()
                pool.putconn(conn)
                continue
            except BaseException:
                pool.putconn(conn)
                raise
            return conn

    def connect(self) -> psycopg.Connection[Any]:
        """Return a new connection, made as the pool makes its own, but not pooled.

        For diagnostics (a CLI's ``check``), where the reason of a failure
        matters more than waiting for the pool: the caller closes it.
        """
        return self._connect_unpooled()

    def _connect_unpooled(self) -> psycopg.Connection[Any]:
        # A forking master gets a plain connection: a pool would start threads
        # there, and the master is about to fork.
        conninfo = self._conninfo() if callable(self._conninfo) else self._conninfo
        kwargs = self._kwargs() if callable(self._kwargs) else (self._kwargs or {})
        conn: psycopg.Connection[Any] = self._connection_class.connect(
            conninfo, **kwargs
        )
        self._track(conn)
        if self.pgbouncer:
            conn.prepare_threshold = None
        try:
            if self._configure is not None:
                self._configure(conn)
                status = conn.pgconn.transaction_status
                if status != TransactionStatus.IDLE:
                    raise psycopg.ProgrammingError(
                        f"connection left in status {TransactionStatus(status).name}"
                        f" by configure function {self._configure}: discarded"
                    )
        except BaseException:
            conn.close()
            raise
        return conn

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Give back a connection borrowed with getconn().

        One borrowed before close() is closed; one inherited from a parent
        process is left alone. Neither makes a new pool.
        """
        self._leave_if_inherited()
        if lifecycle.is_abandoned(conn):
            return  # inherited from the parent: not ours to return or close
        self._loans.returned(conn)
        if self._put_retired(conn):
            return
        state = self._current()
        if conn not in state.out:
            if state.pool is None:
                raise ValueError(f"the connection {conn} doesn't belong to {self!r}")
            state.pool.putconn(conn)  # psycopg says what is wrong with it
            return
        pool = state.pool
        state.out.discard(conn)
        made_here = pool is not None and getattr(conn, "_pool", None) is pool
        if pool is None or not made_here:
            conn.close()  # made while this process was a forking master
            return
        if not conn.closed and not self._reset_inline:
            try:
                rollback_if_needed(conn)
            except psycopg.Error:
                conn.close()  # the pool discards it and makes a new one
        pool.putconn(conn)  # ours resets it, rolling back in the same round trip

    def _put_retired(self, conn: psycopg.Connection[Any]) -> bool:
        """Close *conn* if it was out when close() was called; say if it was."""
        for state in self._retired:
            if conn in state.out:
                break
        else:
            return False
        state.out.discard(conn)
        with lifecycle.process_lock():
            self._retired = [state for state in self._retired if state.out]
        origin: ConnectionPool[Any] | None = getattr(conn, "_pool", None)
        if origin is not None:
            origin.putconn(conn)  # it is closed: psycopg_pool closes conn
        else:
            conn.close()  # a forking master's plain connection
        return True

    @contextmanager
    def connection(
        self, timeout: float | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """Borrow a connection for a ``with`` block, as ``ConnectionPool.connection()``.

        The block's transaction is committed if it ends normally, rolled back
        if it raises; the connection then goes back to the pool.
        """
        conn = self.getconn(timeout)
        try:
            with conn:
                yield conn
        finally:
            self.putconn(conn)

    # -- the rest of ConnectionPool's interface -----------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open this process's pool now (it opens on first use anyway)."""
        state = self._current()
        if wait and state.pool is not None:
            state.pool.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until the pool holds min_size connections."""
        self.pool.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Close this process's pool; the next use opens a new one.

        A pool inherited through fork is abandoned, never closed: closing it
        would end the parent's sessions.
        """
        with lifecycle.process_lock():
            self._leave_inherited()
            state = self._state
            if state is None:
                return
            self._state = None
            if state.out:
                # Their borrowers still give them back with putconn().
                self._retired.append(state)
        for conn in list(state.out):
            if getattr(conn, "_pool", None) is None:
                conn.close()  # plain connections of a forking master
        if state.pool is not None:
            with lifecycle.stop_signals_blocked():
                state.pool.close(timeout)
            logger.debug("pool %r: closed in process %d", self.name, state.pid)

    @property
    def closed(self) -> bool:
        """True if this process has no open pool (it opens on first use)."""
        state = self._state
        return state is None or state.pid != os.getpid() or state.pool is None

    def check(self) -> None:
        """Check the idle connections now (``ConnectionPool.check()``)."""
        self.pool.check()

    def drain(self) -> None:
        """Replace all connections (``ConnectionPool.drain()``)."""
        self.pool.drain()

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the pool's size, here and in pools made later by other processes."""
        validate_pool_options({"min_size": min_size, "max_size": max_size})
        self.min_size = min_size
        self.max_size = min_size if max_size is None else max_size
        state = self._state
        if state is not None and state.pid == os.getpid() and state.pool is not None:
            state.pool.resize(min_size, max_size)

    def get_stats(self) -> dict[str, int]:
        """Return ``ConnectionPool.get_stats()`` of this process's pool."""
        return self.pool.get_stats()

    def pop_stats(self) -> dict[str, int]:
        """Return and reset ``ConnectionPool.pop_stats()`` of this process's pool."""
        return self.pool.pop_stats()

    def stats(self) -> dict[str, Any]:
        """Return this process's pool statistics, with the pool name and pid."""
        state = self._current()
        stats: dict[str, Any] = {"name": self.name, "pid": state.pid}
        if state.pool is None:
            stats["forking_master"] = True
            stats["connections_out"] = len(state.out)
        else:
            stats.update(state.pool.get_stats())
        return stats
