"""ForkSafePool: psycopg_pool.ConnectionPool's interface, one pool per process."""

from __future__ import annotations

import itertools
import logging
import os
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from time import monotonic
from types import TracebackType
from typing import Any, Generic

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from psycopg_pool.abc import CT

from . import _events, _green, _sizing
from ._loans import Loans, current_borrower
from ._options import (
    POOL_OPTIONS,
    merge_defaults,
    parse_conninfo,
    validate_connection,
    validate_pool_options,
)
from ._process import ProcessPools, in_forking_master, is_abandoned
from ._psycopg_pool import ProcessPool, lending_pool
from ._reset import SessionReset, check_socket, run_configure
from ._secrets import ConnectionParams, connect_masked, mask_conninfo, remember_kwargs
from ._socket_timeout import SOCKET_TIMEOUT_DEFAULT, bound_waits, bounded
from .errors import ConfigurationError, ConnectFailed, PoolNotAvailable

__all__ = ["ALWAYS", "DEFAULT", "ForkSafePool"]

logger = logging.getLogger("pgpool.pool")


class _Default:
    def __repr__(self) -> str:
        return "<default>"


#: Stands for "the package's default" where None already means "none".
DEFAULT: Any = _Default()

#: ``reset="always"``: reset the server session after every loan, not only
#: after one that may have changed it (the default).
ALWAYS = "always"

_counter = itertools.count(1)

# ConnectionPool's default connection_class, typed as any class CT stands for.
_CONNECTION_CLASS: Any = psycopg.Connection

# True while a pool is made of settings its caller validated (_of_validated).
_validated: ContextVar[bool] = ContextVar("pgpool_validated", default=False)


class ForkSafePool(Generic[CT]):
    """A psycopg connection pool that is safe to create before a server forks.

    Takes the arguments of :class:`psycopg_pool.ConnectionPool`, by the same
    names, keeps them as attributes by the same names, and has its methods,
    so that ``ConnectionPool(dsn, ...)`` becomes ``ForkSafePool(dsn, ...)``.
    The differences, and why, are listed in the README ("Differences from
    ConnectionPool").

    Open or closed, as a ConnectionPool is (``open``, ``close()``, ``with``),
    but lazily: each process that uses it makes its own ConnectionPool on first
    use (or at ``open()``); one inherited through fork is abandoned, its
    sockets left to the parent. A forking server's master (one that imported
    the server hooks, or uWSGI's) makes none and starts no thread: it gets
    plain connections, closed when given back.

    Defaults that differ from ``ConnectionPool``: TCP keepalives, a 30 s
    ``tcp_user_timeout`` and a 10 s ``connect_timeout`` unless set
    (``keepalives=False`` leaves out all but ``connect_timeout``); a
    ``check`` that costs no round trip on a healthy connection
    (:func:`~pgpool_core.check_socket`; ``check=None`` for none); a ``reset``
    that undoes what a borrower left on the connection object and, after a
    loan that ran something able to change the session (decided on the
    client, see :mod:`pgpool_core._tracking`), on the session, then re-runs
    ``configure``: sent by the returning thread and not waited for, finished
    before the connection is used again (``reset="always"`` resets the
    session after every loan; ``reset=None`` does nothing but the rollback,
    as ConnectionPool's default). ``open``
    defaults to open without a DeprecationWarning: nothing connects until
    first use anyway.

    ``socket_timeout`` (seconds, default
    :data:`~pgpool_core._socket_timeout.SOCKET_TIMEOUT_DEFAULT`, 45; None: no
    bound) is the longest any of the pool's connections waits on its socket
    with nothing from the server: then the connection is closed and the
    query raises :class:`~pgpool_core.errors.SocketTimeout`, a
    ``psycopg.OperationalError`` (see :mod:`pgpool_core._socket_timeout`).
    libpq has no such bound; keepalives and ``tcp_user_timeout`` miss a path
    whose peer still acknowledges but forwards nothing.

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
    it (see :mod:`pgpool_core._sizing`). There, a process pool makes one
    connection first and the rest of ``min_size`` once it is made; when the
    workers' ``min_size`` would not all fit, only its share of the server's
    connections (at least one), the rest while its requests wait. A pool
    stops growing, rather than retrying, while the server has no slot left
    and it has a connection (docs: Scaling, "A tight max_connections").
    """

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        kwargs: Mapping[str, Any] | Callable[[], dict[str, Any]] | None = None,
        name: str | None = None,
        connection_class: type[CT] = _CONNECTION_CLASS,
        min_size: int | None = None,
        max_size: int | None = None,
        open: bool | None = None,
        configure: Callable[[CT], None] | None = None,
        check: Callable[[CT], None] | None = DEFAULT,
        reset: Callable[[CT], None] | str | None = DEFAULT,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[Any], None] | None = None,
        num_workers: int = 3,
        keepalives: bool = True,
        warn_held_after: float | None = None,
        pgbouncer: bool = False,
        socket_timeout: float | None = SOCKET_TIMEOUT_DEFAULT,
    ) -> None:
        given = locals()
        validated = _validated.get()
        if not validated:
            # The options given (min_size None: sized from the server, see
            # pgpool_core._sizing; check and reset DEFAULT: ours).
            validate_pool_options(
                {
                    key: given[key]
                    for key in POOL_OPTIONS
                    if given[key] is not DEFAULT
                    and (key != "min_size" or given[key] is not None)
                }
            )

        # ConnectionPool's attributes, by its names: what the user gave.
        self.conninfo = conninfo
        self.kwargs = kwargs
        self.name = name or f"pgpool-{next(_counter)}"
        self.connection_class = connection_class
        # The sizes the user set (None: not set); min_size and max_size are
        # this process's, from these and the server's concurrency model.
        self._min_size_set = min_size
        self._max_size_set = max_size
        self.close_returns = close_returns
        self.timeout = timeout
        self.max_waiting = max_waiting
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.reconnect_timeout = reconnect_timeout
        self.num_workers = num_workers
        # Ours.
        self.keepalives = keepalives
        self.warn_held_after = warn_held_after
        self.pgbouncer = pgbouncer
        self.socket_timeout = socket_timeout
        # What the pool's connections ask when socket_timeout passes: through
        # a weak reference, for a connection must not keep its pool alive (a
        # pool dropped without close() is collected, as psycopg_pool's is).
        ref = weakref.ref(self)

        def ask_server(backend_pid: int) -> bool:
            pool = ref()
            return pool is not None and pool._still_running(backend_pid)

        self._ask_server = ask_server
        #: The command the capacity warning names (``"flask pgpool capacity"``,
        #: set by the framework packages), or None.
        self.capacity_command: str | None = None
        #: What lends this pool's connections, as the warning about a loan
        #: never given back names it (``"Django database alias 'default'"``,
        #: set by the framework packages before first use), or None.
        self.used_by: str | None = None

        # What can be checked without the network is checked now; the values
        # callables return, when they are called (on each connect).
        static_kwargs = kwargs if isinstance(kwargs, Mapping) else {}
        self._conninfo: str | Callable[[], str]
        if not validated:
            validate_connection("" if callable(conninfo) else conninfo, static_kwargs)
        if callable(conninfo):
            self._conninfo = self._merged_conninfo_of(conninfo, keepalives)
            self._masked = "<callable>"
        else:
            self._conninfo = merge_defaults(
                conninfo, static_kwargs, keepalives=keepalives
            )
            self._masked = mask_conninfo(conninfo)
        self._kwargs = remember_kwargs(
            self._checked_kwargs_of(kwargs) if callable(kwargs) else kwargs
        )
        self._configure = configure
        self._check = check_socket if check is DEFAULT else check
        self._reconnect_failed = reconnect_failed
        # Ours is started in the returning thread and settled before the next
        # use (see pgpool_core._reset): by default it resets the session
        # only after a loan that may have changed it, with "always" after
        # every loan; with reset=None or a reset of the user's, it only rolls
        # back, and theirs runs in a pool thread, as psycopg_pool runs it.
        ours = reset is DEFAULT or reset == ALWAYS
        self._session = SessionReset(
            configure,
            session=ours and not pgbouncer,
            restore=ours,
            name=self.name,
            borrower=current_borrower,
            tracked=reset is DEFAULT,
        )
        self._reset = None if ours else reset
        self._loans = Loans(self.name, warn_held_after)
        # The process whose first connection was checked against the server's limit.
        self._limit_checked_in: int | None = None
        # What the check found: how many connections to make at start there.
        self._start_share_here: int | None = None
        # Open or closed as ConnectionPool is, for every process: each makes
        # its own pool while this is open.
        self._opened = open is not False
        self._closed = open is False
        self._pools = ProcessPools(self, self.name, self._make_pool)
        self._pools.enabled = not self._closed

    @classmethod
    def _of_validated(
        cls, conninfo: str | Callable[[], str] = "", **options: Any
    ) -> ForkSafePool[Any]:
        """Make a pool of settings its caller validated: not validated again.

        For the framework packages, which validate a Django alias's or a Flask
        bind's settings once, as ``__init__`` would
        (:func:`~pgpool_core.validate_pool_options`,
        :func:`~pgpool_core.validate_connection`), naming them as the user
        wrote them.
        """
        token = _validated.set(True)
        try:
            return cls(conninfo, **options)
        finally:
            _validated.reset(token)

    # -- sizes ---------------------------------------------------------------------

    @property
    def min_size(self) -> int:
        """This process's ``min_size``: the one set, else sized from the server.

        That of this process's open pool, if it has one (see :meth:`sizes`).
        """
        pool = self._pools.latest() if self._pools.has_pool() else None
        return pool.min_size if pool is not None else self.sizes().min_size

    @property
    def max_size(self) -> int:
        """This process's ``max_size``: the one set, else sized from the server.

        That of this process's open pool, if it has one (see :meth:`sizes`).
        """
        pool = self._pools.latest() if self._pools.has_pool() else None
        return pool.max_size if pool is not None else self.sizes().max_size

    def sizes(self) -> _sizing.Sizes:
        """Return this process's sizes and why (:func:`pgpool_core._sizing.resolve`).

        The sizes set win; those not set come from how this process serves
        (:func:`pgpool_core._sizing.current`: a gunicorn sync worker gets 1 and
        1, a gthread worker 1 and its threads...), else psycopg_pool's defaults.
        """
        return self.sizes_for(_sizing.current())

    def sizes_for(self, concurrency: _sizing.Concurrency | None) -> _sizing.Sizes:
        """Return the sizes this pool would have in a worker of *concurrency*."""
        return _sizing.resolve(self._min_size_set, self._max_size_set, concurrency)

    @staticmethod
    def _merged_conninfo_of(
        conninfo: Callable[[], str], keepalives: bool
    ) -> Callable[[], str]:
        def merged() -> str:
            value = conninfo()
            if not isinstance(value, str):
                raise ConfigurationError(
                    "conninfo",
                    f"the callable returned {type(value).__name__}, not a"
                    " connection string",
                )
            parse_conninfo(value)
            return merge_defaults(value, {}, keepalives=keepalives)

        return merged

    @staticmethod
    def _checked_kwargs_of(
        kwargs: Callable[[], dict[str, Any]],
    ) -> Callable[[], dict[str, Any]]:
        def checked() -> dict[str, Any]:
            value = kwargs()
            if not isinstance(value, Mapping):
                raise ConfigurationError(
                    "kwargs",
                    f"the callable returned {type(value).__name__}, not a dict of"
                    " connection parameters",
                )
            return dict(value)

        return checked

    def __repr__(self) -> str:
        if "_pools" not in vars(self):
            # One whose settings were refused, as a traceback's locals show it.
            return f"<{type(self).__name__} (not made: its settings were refused)>"
        if self._closed:
            status = "closed"
        elif self._pools.has_pool():
            status = "open"
        elif in_forking_master():
            status = "open, forking master: no pool"
        else:
            status = "open, no pool made in this process yet"
        return (
            f"<{type(self).__name__} {self.name!r} {self._masked!r}"
            f" pid={os.getpid()} {status}>"
        )

    # -- open and close, as ConnectionPool ---------------------------------------

    def __enter__(self) -> ForkSafePool[CT]:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool, for this process and those it forks later.

        This process makes its pool now and starts filling it; with *wait*,
        waits for ``min_size`` connections as ``wait()`` does (PoolTimeout
        after *timeout* seconds closes the pool). A forking master makes none
        (its workers will): with *wait* it makes one plain connection and
        closes it, so that a wrong setting or an unreachable server fails at
        start-up with psycopg's error (the password masked).

        Opening an open pool does nothing; a closed one cannot be reopened
        (PoolClosed), as with ConnectionPool.
        """
        if self._closed:  # else opened, and enabled (Django opens it per connect)
            if self._opened:
                raise PoolClosed(
                    "pool has already been opened/closed and cannot be reused"
                )
            self._opened = True
            self._closed = False
            self._pools.enabled = True
        pool = self._pools.current()
        if pool is None:
            if wait:
                self._probe()
        elif wait:
            self._wait(pool, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool, as ``ConnectionPool.close()``: for good.

        Then ``getconn()`` raises PoolClosed, and so does ``open()``. This
        process's pool is closed (waiting up to *timeout* seconds for each of
        its threads); connections still borrowed are closed when given back.
        One inherited through fork is abandoned, never closed: that would end
        the parent's sessions. The server hooks close this process's pool
        before a server forks but leave this object open, so that the next
        use (in a worker) makes a fresh one.
        """
        if self._closed:
            self._pools.leave_if_inherited()
            return
        self._closed = True
        self._opened = True
        self._pools.enabled = False
        self._pools.release(timeout)

    @property
    def closed(self) -> bool:
        """True if the pool is closed (or not opened yet), in every process."""
        return self._closed

    @property
    def process_pool_open(self) -> bool:
        """True if this process has made its own pool, and it is open."""
        return self._pools.has_pool()

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until this process's pool holds ``min_size`` connections.

        As ``ConnectionPool.wait()``: PoolTimeout after *timeout* seconds,
        and the pool is then closed. PoolNotAvailable in a forking master.
        """
        self._wait(self.pool, timeout)

    def _wait(self, pool: ConnectionPool[CT], timeout: float) -> None:
        try:
            pool.wait(timeout)
        except PoolTimeout:
            self.close()  # psycopg_pool's pool closed itself; so does this one
            raise

    def _probe(self) -> None:
        """Make one plain connection and close it; raise psycopg's error, masked.

        (connect_masked() masks the error in place, keeping its sqlstate.)
        """
        self._connect_unpooled().close()

    # -- this process's pool -------------------------------------------------------

    def _make_pool(self) -> ProcessPool[CT]:
        # Under gevent or eventlet, psycopg's waits must yield to the event
        # loop before the pool's threads (greenlets then) connect.
        _green.use_cooperative_wait()
        sizes = self.sizes()
        return ProcessPool(
            self._conninfo,
            owner=self._pools,
            kwargs=self._kwargs,
            connection_class=self.connection_class,
            min_size=sizes.min_size,
            max_size=sizes.max_size,
            configure=self._configure_new,
            start_share=self._start_share,
            # A server's worker (their count known): all warm up at once.
            first_alone=not self.pgbouncer and _sizing.server_workers() is not None,
            check=self._check,
            reset=self._reset,
            session=self._session,
            returned=self._loans.returned if self.warn_held_after else None,
            used_by=self.used_by,
            name=self.name,
            close_returns=self.close_returns,
            timeout=self.timeout,
            max_waiting=self.max_waiting,
            max_lifetime=self.max_lifetime,
            max_idle=self.max_idle,
            reconnect_timeout=self.reconnect_timeout,
            reconnect_failed=self._connect_failed if self._reconnect_failed else None,
            num_workers=self.num_workers,
        )

    def _connect_failed(self, pool: ConnectionPool[Any]) -> None:
        if self._reconnect_failed is not None:
            self._reconnect_failed(self)

    def _configure_new(self, conn: CT) -> None:
        self._pools.track(conn)
        bound_waits(conn, self.socket_timeout, self.name, self._ask_server)
        if self.pgbouncer:
            conn.prepare_threshold = None
        self._session.adopt(conn)
        if self._configure is not None:
            run_configure(conn, self._configure)
        # As configure left it: what it ran is not a borrower's.
        self._session.configured(conn)

    def _start_share(self, conn: CT) -> int | None:
        """On a process pool's first connection: how many to make at start.

        Reads the server's limit (in the pool's thread that made *conn*) and
        warns, once per process, if this host's workers may open more (see
        :func:`pgpool_core._sizing.warn_if_over`). None: ``min_size``.
        """
        if self.pgbouncer:
            return None  # PgBouncer bounds what the server sees
        pid = os.getpid()
        if self._limit_checked_in != pid:
            # Once per process: a pool made again here (after a release)
            # reuses it.
            pool = lending_pool(conn)
            sizes = self.sizes()
            self._start_share_here = _sizing.warn_if_over(
                self.name,
                getattr(pool, "max_size", sizes.max_size),
                conn,
                min_size=getattr(pool, "min_size", sizes.min_size),
                command=self.capacity_command,
                why=sizes.why,
            )
            self._limit_checked_in = pid
            # What the check ran is not the first borrower's.
            self._session.configured(conn)
        return self._start_share_here

    @property
    def pool(self) -> ConnectionPool[CT]:
        """This process's ``psycopg_pool.ConnectionPool``, made on first access.

        PoolClosed if the pool is closed; PoolNotAvailable in a forking master.
        """
        self._check_open()
        pool = self._pools.current()
        if pool is None:
            raise PoolNotAvailable(
                f"pool {self.name!r}: this process is a forking server's master;"
                " it has no pool (use .connection(), which gives it a plain"
                " connection, or access the pool in the workers)"
            )
        return pool

    def _check_open(self) -> None:
        if self._closed:
            if self._opened:
                raise PoolClosed(f"the pool {self.name!r} is already closed")
            raise PoolClosed(f"the pool {self.name!r} is not open yet")

    def is_inherited(self, conn: psycopg.Connection[Any]) -> bool:
        """Return True if *conn* was borrowed in a parent process.

        Such a connection is the parent's: this process must neither use,
        close nor give it back (putconn() ignores it). An adapter that keeps
        a borrowed connection across requests asks before using it.
        """
        self._pools.leave_if_inherited()
        return is_abandoned(conn)

    # -- borrowing -------------------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> CT:
        """Borrow a checked connection; give it back with ``putconn()``.

        As ``ConnectionPool.getconn()``: waits up to *timeout* (default: the
        pool's ``timeout``) seconds, then raises PoolTimeout naming the pool;
        PoolClosed if the pool is closed. But while this process's pool has
        no connection and its latest attempt to connect failed, it raises
        :class:`~pgpool_core.errors.ConnectFailed` (a PoolTimeout) at once,
        psycopg's error as its ``__cause__``. A forking master gets a new
        plain connection (psycopg's error if it fails).
        """
        if self._closed:
            self._check_open()
        pool = self._pools.current()
        if pool is None:
            conn = self._connect_unpooled()
            self._pools.lend_plain(conn)
        else:
            try:
                conn = pool.getconn(timeout)  # the observer hears it lent
            except ConnectFailed:
                listener = _events.listener  # None: no observer (metrics off)
                if listener is not None:
                    listener.timed_out(self.name)  # timeouts, as psycopg_pool
                raise  # names the pool, and why
            except PoolTimeout:
                listener = _events.listener
                if listener is not None:
                    listener.timed_out(self.name)
                waited = self.timeout if timeout is None else timeout
                raise PoolTimeout(
                    f"couldn't get a connection from pool {self.name!r}"
                    f" after {waited:.2f} sec"
                ) from None
        if self.warn_held_after is not None:
            self._loans.lent(conn)
        return conn

    def putconn(
        self, conn: psycopg.Connection[Any], *, warn_open_transaction: bool = True
    ) -> None:
        """Give back a connection borrowed with ``getconn()``.

        As ``ConnectionPool.putconn()``: one still running a query is closed
        at once; an open transaction is rolled back (logging a warning, as
        psycopg_pool does, unless *warn_open_transaction* is False: for
        adapters that leave reads uncommitted; then a warning naming the
        borrower, see :func:`pgpool_core.borrower`, only if it had written);
        then the session is reset. Neither is waited for: the connection is
        back in the pool at once, and its reset is finished before it is used
        again.
        One borrowed before ``close()`` is closed. One inherited from a parent
        process is left alone. ValueError if *conn* is not this pool's.
        """
        pools = self._pools
        origin = lending_pool(conn)
        if origin is not None and pools.lent_here(origin):
            # Lent by this process's pool (so not inherited): the usual case.
            origin.putconn(conn, warn_open_transaction=warn_open_transaction)
            return
        pools.leave_if_inherited()
        if is_abandoned(conn):
            return  # inherited from the parent: not ours to return or close
        if origin is not None and pools.owns(origin):
            origin.putconn(conn, warn_open_transaction=warn_open_transaction)
            return
        if pools.take_plain(conn):
            self._loans.returned(conn)
            conn.close()  # made while this process was a forking master
            return
        where = (
            f"it comes from pool {origin.name!r}"
            if origin is not None
            else "it doesn't come from any pool"
        )
        raise ValueError(
            f"can't return connection to pool {self.name!r}, {where}: {conn}"
        )

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[CT]:
        """Borrow a connection for a ``with`` block, as ``ConnectionPool.connection()``.

        The block's transaction is committed if it ends normally, rolled back
        if it raises; the connection then goes back to the pool.
        """
        conn = self.getconn(timeout)
        t0 = monotonic()
        try:
            with conn:
                yield conn
        finally:
            origin = lending_pool(conn)
            self.putconn(conn)
            if isinstance(origin, ProcessPool):
                origin.record_usage(monotonic() - t0)

    def connect(self, *, connect_timeout: int | None = None) -> CT:
        """Return a new connection, made as the pool makes its own, but not pooled.

        For diagnostics (a CLI's ``check``, the health check), where the
        reason of a failure matters more than waiting for the pool: the
        caller closes it. *connect_timeout* (whole seconds; libpq waits at
        least 2) replaces the pool's ``connect_timeout`` for this one.
        """
        return self._connect_unpooled(connect_timeout)

    def masked_conninfo(self) -> str:
        """Return what this pool gives libpq for each connection, secrets masked.

        Its conninfo with its kwargs merged and the defaults it adds
        (``connect_timeout``, the keepalives): ``key=value`` pairs, a
        password shown as ``********``. A conninfo or kwargs callable is
        called, as it is for each connect. For the ``check`` commands, so that
        a refused login shows what was really sent.
        """
        conninfo = self._conninfo() if callable(self._conninfo) else self._conninfo
        kwargs = self._kwargs() if callable(self._kwargs) else (self._kwargs or {})
        return mask_conninfo(conninfo, kwargs)

    def _still_running(self, backend_pid: int) -> bool:
        """Whether the server says *backend_pid* is running a query.

        Asked by a connection silent for ``socket_timeout``
        (:mod:`pgpool_core._socket_timeout`): a long query, not a path that
        stopped forwarding, if the backend is ``active`` and not waiting to
        send to its client. On a connection of its own, made within 2 s
        (libpq's shortest ``connect_timeout``) and answered within 2 s; any
        failure is a no. Never through PgBouncer, whose clients' pids are not
        the server's backends'.
        """
        if self.pgbouncer:
            return False
        try:
            with self._connect_unpooled(connect_timeout=2) as side:
                with bounded(side, 2.0, "socket_timeout's check"):
                    row = side.execute(
                        "SELECT state = 'active'"
                        " AND wait_event IS DISTINCT FROM 'ClientWrite'"
                        " FROM pg_stat_activity WHERE pid = %s",
                        [backend_pid],
                    ).fetchone()
        except Exception as err:
            logger.debug("pool %r: cannot ask the server: %s", self.name, err)
            return False
        return bool(row and row[0])

    def _connect_unpooled(self, connect_timeout: int | None = None) -> CT:
        # A forking master gets a plain connection: a pool would start threads
        # there, and the master is about to fork.
        conninfo = self._conninfo() if callable(self._conninfo) else self._conninfo
        kwargs = self._kwargs() if callable(self._kwargs) else (self._kwargs or {})
        if connect_timeout is not None:
            kwargs = ConnectionParams({**kwargs, "connect_timeout": connect_timeout})
        conn = connect_masked(self.connection_class, conninfo, kwargs)
        self._pools.track(conn)
        bound_waits(conn, self.socket_timeout, self.name, self._ask_server)
        if self.pgbouncer:
            conn.prepare_threshold = None
        try:
            if self._configure is not None:
                run_configure(conn, self._configure)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- the rest of ConnectionPool's interface ------------------------------------

    @staticmethod
    def check_connection(conn: CT) -> None:
        """Check *conn* with a round trip, as ``ConnectionPool.check_connection``.

        For ``check=ForkSafePool.check_connection``, as psycopg documents it;
        the default check, :func:`pgpool_core.check_socket`, costs a round
        trip only when the connection looks broken.
        """
        ConnectionPool.check_connection(conn)

    def check(self) -> None:
        """Check this process's idle connections now (``ConnectionPool.check()``)."""
        self.pool.check()

    def drain(self) -> None:
        """Replace this process's connections (``ConnectionPool.drain()``)."""
        self.pool.drain()

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the pool's size, here and in pools made later by other processes."""
        validate_pool_options({"min_size": min_size, "max_size": max_size})
        self._min_size_set = min_size
        self._max_size_set = min_size if max_size is None else max_size
        if self._pools.has_pool():
            self.pool.resize(min_size, max_size)

    def get_stats(self) -> dict[str, int]:
        """Return ``ConnectionPool.get_stats()`` of this process's pool.

        After ``close()``, those of the pool this process closed.
        """
        return self._stats_pool().get_stats()

    def pop_stats(self) -> dict[str, int]:
        """Return and reset ``ConnectionPool.pop_stats()`` of this process's pool."""
        return self._stats_pool().pop_stats()

    def _stats_pool(self) -> ConnectionPool[Any]:
        latest = self._pools.latest()
        return latest if latest is not None else self.pool

    def stats(self) -> dict[str, Any]:
        """Return this process's pool statistics, with the pool name and pid.

        In a forking master, ``forking_master`` and ``connections_out`` (the
        plain connections lent) instead of ConnectionPool's statistics.
        """
        stats: dict[str, Any] = {"name": self.name, "pid": os.getpid()}
        if not self._closed and in_forking_master():
            stats["forking_master"] = True
            stats["connections_out"] = self._pools.plain_lent()
        else:
            stats.update(self.get_stats())
        return stats
