"""ProcessPool: the psycopg_pool.ConnectionPool that serves one process.

A :class:`~pgpool_core.ForkSafePool` makes one in each process that uses it
(see :mod:`pgpool_core._process`). It is psycopg_pool's own pool, with its
accounting, statistics, check loop, maintenance tasks and log messages, except
where this module says otherwise:

- a returned connection's reset (which rolls back an open transaction, in the
  same query) is sent by the returning thread and not waited for
  (:meth:`ProcessPool._reset_connection`, the one place a returned connection
  is reset); the connection goes back to the pool *settling*, and its reset
  is finished before anything uses it again
  (:meth:`ProcessPool._check_connection`, the one place a pooled connection
  is made ready before it is lent, and :meth:`ProcessPool.check_connection`
  for ``check()``; see :mod:`pgpool_core._reset`);
- an open transaction is rolled back through libpq, keeping psycopg's
  prepared statements;
- after a mass termination, a connection found dead by the check is followed
  at once by the next idle one, a bounded number of times, before
  psycopg_pool's backoff (:meth:`ProcessPool._getconn_with_check_loop`);
- a connection past ``max_lifetime`` is not lent: it is closed and replaced
  when it is taken from the pool, not only when it is given back
  (:meth:`ProcessPool._expired`);
- a connect that fails because the server cannot be reached is retried at
  least every :data:`RECONNECT_DELAY_MAX`; one the server refuses (a wrong
  password) is retried by one attempt at a time, after a growing delay up to
  :data:`REFUSED_DELAY_MAX` (:meth:`ProcessPool.schedule_task`);
- while the pool has no connection, ``getconn()`` raises
  :class:`~pgpool_core.errors.ConnectFailed`, with the cause, when the next
  attempt to connect fails, or at once while the server refuses the login,
  instead of waiting for its timeout (:meth:`ProcessPool.getconn`), whatever
  ``min_size``: psycopg_pool's queue of waiting clients knows when each began
  to wait (``_WaitQueue``), so that overlapping attempts fail those for whom
  they were the next one (:meth:`ProcessPool._failed_to_connect`);
- the connects in progress are counted, so that os.fork() can wait for them;
- at open in a server's worker (*first_alone*), one connection is made
  first, the rest of ``min_size`` once it is made; only as many as this
  process's share of the server allows (*start_share*); a connect refused
  because the server has no slot left (SQLSTATE 53300) is not retried while
  the pool has a connection (:meth:`ProcessPool._start_initial_tasks`,
  :meth:`ProcessPool.schedule_task`): every worker of a server warms up at
  the same moment, and the first ones must not take every slot;
- a connection lent and garbage-collected without being given back (its
  borrower is gone: a thread that ended with it, say) is counted lost and
  replaced up to ``min_size``, with a warning naming its borrower
  (:meth:`ProcessPool._reclaim_lost`).
- while it cannot connect, the pool logs one line when the failures start
  (``error connecting in 'name': <libpq's reason>``), one every
  :data:`OUTAGE_REPORT_INTERVAL` while they last and one when it connects
  again, at WARNING on ``pgpool.pool``, instead of psycopg_pool's line for
  each failed attempt (:meth:`ProcessPool._report_failure`).

The usual loan and return (a connection idle in the open pool, given back to
it) take one step each (:meth:`ProcessPool.getconn`,
:meth:`ProcessPool.putconn`): what psycopg_pool's nested steps do for them,
in their order, with the same statistics, logs and bookkeeping; anything
else goes through psycopg_pool's steps (and the overrides above).

The private psycopg_pool methods overridden here were read from psycopg_pool
3.3.3 (``psycopg_pool/pool.py``); each override says so. Every psycopg_pool
name this package overrides or reads that psycopg_pool does not document is
used in this module only, listed in :data:`PSYCOPG_POOL_NAMES` and checked
at import (:mod:`pgpool_core._fence`).
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from queue import SimpleQueue
from time import monotonic, sleep
from typing import Any, Generic

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.abc import CT

from . import _events, _fence, _green
from ._loans import Loan, LoanBook
from ._reset import (
    SessionReset,
    announce_rollback,
    is_settling,
    rollback_announced,
    settle,
)
from ._secrets import mask_exception
from .errors import (
    CONNECT_REASONS,
    UNREACHABLE,
    ConnectFailed,
    SessionResetFailed,
    connect_failure,
    server_full,
)

# The psycopg_pool names this module relies on that psycopg_pool does not
# document (read from 3.3.3), by where they are; checked just below, before
# anything uses them. Nothing else in the package touches one (see
# tests/core/test_fence.py).
PSYCOPG_POOL_NAMES: _fence.Names = (
    # Overridden: the steps of lending, returning, checking, resetting,
    # connecting and starting that this module changes. A renamed one would
    # silently stop running.
    (
        "psycopg_pool.pool.ConnectionPool",
        (
            "_getconn_with_check_loop",
            "_get_ready_connection",
            "_check_connection",
            "_reset_connection",
            "_connect",
            "_start_workers",
            "_start_initial_tasks",
            # Public, but overridden for what psycopg_pool calls them for.
            "schedule_task",
            "reconnect_failed",
            "check_connection",
        ),
    ),
    # Called, as psycopg_pool's own steps call them: refusing a closed pool,
    # taking a connection unchecked, giving it back, closing one, growing,
    # the backoff's jitter.
    (
        "psycopg_pool.pool.ConnectionPool",
        (
            "_check_open_getconn",
            "_getconn_unchecked",
            "_putconn",
            "_close_connection",
            "_maybe_grow_pool",
            "_jitter",
        ),
    ),
    # The pool's state, read and changed under its lock as psycopg_pool's
    # steps change it: idle connections, the count (and its low mark since
    # the last shrink), the sizes, the waiting clients (replaced by
    # _WaitQueue), the workers' queue (replaced by a SimpleQueue), the
    # statistics and their keys, the check and reset functions, when it was
    # drained, what a wait() for it to fill up waits on.
    (
        "psycopg_pool.pool.ConnectionPool",
        (
            "_lock",
            "_pool",
            "_nconns",
            "_nconns_min",
            "_min_size",
            "_max_size",
            "_growing",
            "_closed",
            "_waiting",
            "_tasks",
            "_stats",
            "_REQUESTS_NUM",
            "_REQUESTS_ERRORS",
            "_RETURNS_BAD",
            "_CONNECTIONS_LOST",
            "_USAGE_MS",
            "_check",
            "_reset",
            "_drained_at",
            "_pool_full_event",
        ),
    ),
    # What psycopg_pool keeps on each connection: the pool that lent it
    # (lending_pool()), when it was made and when it expires
    # (ProcessPool._expired(), putconn()).
    ("psycopg_pool.pool.ConnectionPool", ("_pool", "_created_at", "_expire_at")),
    # Its tasks and backoff, undocumented classes: a connect (its chain of
    # attempts, whether it grows the pool), a maintenance task (whose _run
    # ours override), a waiting client (failed by _failed_to_connect).
    ("psycopg_pool.pool", ("AddConnection", "MaintenanceTask", "WaitingClient")),
    ("psycopg_pool.pool.AddConnection", ("attempt", "growing")),
    ("psycopg_pool.pool.MaintenanceTask", ("_run",)),
    ("psycopg_pool.pool.WaitingClient", ("fail",)),
    ("psycopg_pool.base", ("AttemptWithBackoff",)),
    (
        "psycopg_pool.base.AttemptWithBackoff",
        ("give_up_at", "delay", "update_delay", "time_to_give_up"),
    ),
)
_fence.require("psycopg-pool", PSYCOPG_POOL_NAMES, __name__)

from psycopg_pool.base import AttemptWithBackoff  # noqa: E402 (fenced above)
from psycopg_pool.pool import AddConnection, MaintenanceTask  # noqa: E402

__all__ = [
    "OUTAGE_REPORT_INTERVAL",
    "RECONNECT_DELAY_MAX",
    "REFUSED_DELAY_MAX",
    "ProcessPool",
    "lending_pool",
]

logger = logging.getLogger("pgpool.pool")

# The messages psycopg_pool logs are logged where it logs them, at its levels.
psycopg_logger = logging.getLogger("psycopg.pool")

#: The longest wait between two attempts to replace a connection that failed.
#: psycopg_pool doubles its wait at each failure (1, 2, 4 ... 128 s): after a
#: minute's outage the first request could wait a minute more after the server
#: is back. Capped, requests succeed about a second after it accepts again.
RECONNECT_DELAY_MAX = 1.0

#: The longest wait between two attempts to connect after the server refused
#: a login (a wrong password, no such database: see
#: :func:`pgpool_core.errors.connect_failure`). One attempt per pool retries,
#: after 1, 2, 4 ... seconds: psycopg_pool's backoff, but for the pool rather
#: than for each connection it misses, and never given up for long.
REFUSED_DELAY_MAX = 60.0

#: Seconds between two log lines of a pool that still cannot connect. One
#: line for each failed attempt, as psycopg_pool logs them, is 16 a second
#: from 4 workers with min_size 4, each of two lines (libpq's message).
OUTAGE_REPORT_INTERVAL = 60.0

# A closed (broken) connection's transaction status.
_UNKNOWN = TransactionStatus.UNKNOWN
_IDLE = TransactionStatus.IDLE
# In a transaction (open, or failed).
_IN_TRANSACTION = frozenset({TransactionStatus.INTRANS, TransactionStatus.INERROR})

#: psycopg_pool's line for each failed attempt (psycopg_pool/pool.py 3.3.3).
_CONNECT_ERROR_MESSAGE = "error connecting in %r: %s"

#: Seconds between two looks for loans of ended threads while clients wait
#: (ProcessPool._watch_ended).
WATCH_ENDED_INTERVAL = 0.25


@dataclass(frozen=True)
class _Failure:
    """A failed attempt to connect: what went wrong, as :func:`connect_failure` says."""

    cause: BaseException  # masked, without traceback: safe to show
    kind: str
    full: bool = False  # the server had no connection slot left (53300)


@dataclass
class _Outage:
    """A pool's failures to connect since it last connected, for its log lines."""

    since: float
    kind: str
    reported_at: float
    failed: int = 0


class _ReportedByThePool(logging.Filter):
    """Drop psycopg_pool's line for an attempt a ProcessPool reports itself.

    Installed on the ``psycopg.pool`` logger: psycopg_pool logs each failed
    attempt to connect right after ``_connect()`` raised, in the same thread,
    which :meth:`ProcessPool._failed_to_connect` marks. Other pools' lines
    (a plain ConnectionPool's) pass.
    """

    def __init__(self) -> None:
        super().__init__()
        self.marked = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(self.marked, "pool", None)
        if name is None or record.msg != _CONNECT_ERROR_MESSAGE:
            return True
        self.marked.pool = None
        args = record.args
        return not (isinstance(args, tuple) and args and args[0] == name)


_reported_by_the_pool = _ReportedByThePool()
psycopg_logger.addFilter(_reported_by_the_pool)


class _NoConnection(Exception):
    """Fails a waiting client (not a PoolTimeout: getconn() would replace it)."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.kind)
        self.failure = failure


class ProcessPool(ConnectionPool[CT]):
    """psycopg's ConnectionPool for one process; the differences are the module's.

    Takes ConnectionPool's arguments (always made closed: ``open=False``), and:

    *owner*
        The object whose pool this is (a ForkSafePool's per-process state):
        ``ForkSafePool.putconn()`` recognises its connections by it.
    *session*
        The reset started in the returning thread and settled before the
        connection is used again (it rolls back an open transaction itself).
        A *reset* given too runs after it, in a pool thread, as psycopg_pool
        runs it.
    *returned*
        Called with each connection given back, however it comes (``putconn()``,
        or ``close()`` with ``close_returns``).
    *used_by*
        What lends its connections (``"Django database alias 'default'"``),
        for the warning about a loan never given back; None: nothing said.
    *start_share*
        Called with the pool's first connection (configured, not yet in the
        pool): how many connections to make at start, if fewer than
        ``min_size`` (None: ``min_size``). The pool then keeps that many
        (its ``pool_min``) and grows up to ``max_size`` while clients wait.
    *first_alone*
        Make one connection first at open, the rest once it is made (a
        worker of a server whose workers all open their pools at once);
        else all of ``min_size`` at once, as psycopg_pool does.
    """

    def __init__(
        self,
        conninfo: Any = "",
        *,
        owner: object = None,
        session: SessionReset,
        returned: Callable[[CT], None] | None = None,
        used_by: str | None = None,
        start_share: Callable[[CT], int | None] | None = None,
        first_alone: bool = False,
        **kwargs: Any,
    ) -> None:
        self.owner = owner
        #: The process that made it, the only one it serves.
        self.pid = os.getpid()
        self.used_by = used_by
        self._loans = LoanBook(wake=self._wake_reclaimer)
        self._reclaim_task = _ReclaimLost(self)
        self._watch_task = _WatchEnded(self)
        self._watching_ended = False
        self._wakeable = False  # the workers' queue is a SimpleQueue
        # The loans of ended threads that survived the last garbage collection.
        self._collected_ended: dict[int, Loan] = {}
        self._session = session
        self._returned = returned
        self._connects = threading.Condition(threading.Lock())
        self._connecting = 0
        # The latest attempt to connect, if it failed and none succeeded since;
        # the connections made (alive while not closed).
        self._failure: _Failure | None = None
        self._made: weakref.WeakSet[CT] = weakref.WeakSet()
        # While the server refuses logins, one chain of attempts (the probe,
        # known by its AttemptWithBackoff) retries; the others wait, parked.
        self._probe: AttemptWithBackoff | None = None
        self._parked: list[AddConnection] = []
        self._refusals = 0
        # The failures since the last connect, for the log (_report_failure).
        self._outage: _Outage | None = None
        self._start_share = start_share
        self._first_alone = first_alone
        # The connections of min_size not started at open (made once the
        # first is); None once the first connection was made.
        self._deferred: int | None = 0
        # A connect refused for want of a slot was given up on
        # (_give_up_full): the server could not give min_size (wait()).
        self._gave_up_full = False
        super().__init__(conninfo, **{**kwargs, "open": False})
        self._waiting: _WaitQueue[CT] = _WaitQueue()

    def wait(self, timeout: float = 30.0) -> None:
        # Extends psycopg_pool's: it compares the pool with _min_size, which
        # giving up on a refused slot lowers; whether that happens before or
        # after the pool's first connection is counted is a race. Either way
        # the server could not give min_size: PoolTimeout, as psycopg_pool's
        # wait() when min_size is not reached (the pool closed too).
        super().wait(timeout)
        if self._gave_up_full:
            self.close()
            raise PoolTimeout(
                f"pool {self.name!r}: the server has no connection slot left"
                " for min_size"
            )

    # -- lending -------------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> CT:
        # Extends psycopg_pool 3.3.3's: while the pool has no connection, a
        # client waits for the next attempt to connect (under way, or at most
        # RECONNECT_DELAY_MAX away) and fails with its error if it fails
        # (_failed_to_connect), rather than waiting for the pool's timeout;
        # while the server refuses the login, the next attempt may be a minute
        # away (REFUSED_DELAY_MAX): the client fails at once
        # (_get_ready_connection). A pool that is merely busy waits as
        # psycopg_pool's does. Loans whose borrower is gone are taken back
        # first (_reclaim_lost), and each connection lent is noted, and heard
        # by the observer (_events).
        #
        # The usual loan, a connection idle in the open pool, is lent here in
        # one step: psycopg_pool's getconn(), _getconn_with_check_loop(),
        # _getconn_unchecked() and _get_ready_connection() do, for it, what is
        # written below, in that order (the same statistics, logs and
        # bookkeeping); anything else (no idle connection, the pool closed, no
        # time left, a connection expired or failing its check) goes on
        # through them. The pool is always made closed (open=False), so
        # psycopg_pool's _check_open_getconn() has nothing to say of an open
        # one.
        loans = self._loans
        # The observer hears the wait from here: taking back lost loans (a
        # garbage collection, maybe) is part of it, not of the deadline.
        since = start = monotonic()
        if loans.collected or not self._pool:
            self._reclaim_lost()
            start = monotonic()
        if timeout is None:
            timeout = self.timeout
        deadline = start + timeout
        # psycopg_pool's INFO lines, the level asked once for both.
        info = psycopg_logger.isEnabledFor(logging.INFO)
        if info:
            psycopg_logger.info("connection requested from %r", self.name)
        self._stats[self._REQUESTS_NUM] += 1
        conn: CT | None = None
        if not self._closed and timeout > 0.0:
            with self._lock:
                idle = self._pool
                if idle:
                    conn = idle.popleft()
                    if len(idle) < self._nconns_min:
                        self._nconns_min = len(idle)
        try:
            if conn is not None:
                # The first turn of _getconn_with_check_loop(), which goes on
                # if the connection expired or fails its check.
                conn._pool = self
                if conn._expire_at <= start and self._expired(conn):
                    conn = None
                    dead: bool | None = None  # (failed its check: closed or not)
                else:
                    # _check_connection(), inline; its failures are logged
                    # there (_check_failed).
                    settled = False
                    try:
                        remaining = deadline - monotonic()
                        settle(conn, remaining if remaining > 0.0 else 0.0)
                        settled = True
                        check = self._check
                        if check:
                            check(conn)
                    except Exception as ex:
                        self._check_failed(ex, settled)
                        dead = conn.closed
                        self._putconn(conn, from_getconn=True)
                        conn = None
                    except BaseException:
                        self._putconn(conn, from_getconn=True)
                        raise
                    else:
                        if info:
                            psycopg_logger.info("connection given by %r", self.name)
                if conn is None:
                    conn = self._getconn_with_check_loop(deadline, dead)
            else:
                self._check_open_getconn()
                conn = self._getconn_with_check_loop(deadline)
        except PoolTimeout:
            # psycopg_pool's: the client's timeout, not the last attempt's.
            raise PoolTimeout(
                f"couldn't get a connection after {timeout:.2f} sec"
            ) from None
        except _NoConnection as ex:
            raise self._connect_failed(ex.failure) from ex.failure.cause
        loans.lend(conn)
        listener = _events.listener  # None: no observer (metrics off)
        if listener is not None:
            listener.lent(conn, self.name, since)
        return conn

    def _get_ready_connection(self, timeout: float | None) -> CT | None:
        # Extends psycopg_pool 3.3.3's, called under the pool's lock when a
        # client asks, before it waits: a client about to wait for a pool
        # that has no connection, while the server refuses the login, fails
        # instead (under the lock, so that no attempt fails unseen meanwhile).
        conn = super()._get_ready_connection(timeout)
        if conn is None and not self._watching_ended and self._loans.out:
            # The client will wait: while clients wait, a pool worker looks
            # for loans of threads that ended since (see _watch_ended).
            self._watching_ended = True
            self.schedule_task(self._watch_task, WATCH_ENDED_INTERVAL)
        failure = self._failure
        if (
            conn is None
            and failure is not None
            and failure.kind != UNREACHABLE
            and not self._has_connection()
        ):
            self._stats[self._REQUESTS_ERRORS] += 1
            self._maybe_grow_pool()  # none under way (given up): start one
            raise _NoConnection(failure)
        return conn

    def _has_connection(self) -> bool:
        return bool(self._pool) or any(not conn.closed for conn in self._made)

    def _connect_failed(self, failure: _Failure) -> ConnectFailed:
        cause = failure.cause
        return ConnectFailed(
            f"couldn't get a connection from pool {self.name!r}:"
            f" {CONNECT_REASONS[failure.kind]}: {type(cause).__name__}:"
            f" {' '.join(str(cause).split())}"
        )

    def pending_requests(self) -> int:
        """Return how many ``getconn()`` calls are waiting for a connection.

        Not ``requests_waiting`` of ``get_stats()``: psycopg_pool 3.3.3 leaves
        a client that timed out in its queue until a connection comes back;
        only those with neither a connection nor an error count.
        """
        waiting = list(self._waiting)
        return sum(pos.conn is None and pos.error is None for pos in waiting)

    def putconn(self, conn: CT, *, warn_open_transaction: bool = True) -> None:
        # Extends psycopg_pool 3.3.3's: the loan ends (loans whose borrower
        # is gone are taken back), and the observer hears of it. With
        # warn_open_transaction False, an open transaction is rolled back
        # without psycopg_pool's warning (ForkSafePool.putconn()). Then a
        # connection of this pool, open, without a reset function of the
        # user's (which psycopg_pool runs in a pool thread): the usual return,
        # done here in one step, as psycopg_pool's putconn(), _putconn(),
        # _return_connection() and _add_to_pool() do it, in that order (the
        # same statistics, logs, checks and hand-over to a waiting client).
        # Anything else goes through them (ValueError for a connection of
        # another pool, closed if the pool is).
        loans = self._loans
        loans.end(conn)
        if loans.collected:
            self._reclaim_lost()
        listener = _events.listener  # None: no observer (metrics off)
        if listener is not None:
            listener.returned(conn, self.name)  # however it comes back
        if self._returned is not None:
            self._returned(conn)
        if self._reset or self._closed or getattr(conn, "_pool", None) is not self:
            if not warn_open_transaction:
                announce_rollback(conn)  # for _reset_connection(), later
            super().putconn(conn)
            return
        if psycopg_logger.isEnabledFor(logging.INFO):
            psycopg_logger.info("returning connection to %r", self.name)
        # _reset_connection()'s usual cases, inline: idle, or in a transaction
        # whose rollback the borrower expects; anything else goes through it.
        pgconn = conn.pgconn
        status = pgconn.transaction_status
        if status == _IDLE or (not warn_open_transaction and status in _IN_TRANSACTION):
            announced = not warn_open_transaction or rollback_announced(conn)
            try:
                self._session.start(conn, warn_write=announced)
            except Exception as ex:
                self._reset_failed(conn, ex)
        else:
            self._reset_connection(conn, not warn_open_transaction)
        if pgconn.transaction_status == _UNKNOWN:
            self._stats[self._RETURNS_BAD] += 1
            # Connection no more in working state: create a new one.
            psycopg_logger.warning("discarding closed connection: %s", conn)
            self.run_task(AddConnection(self))
            return
        if conn._created_at <= self._drained_at or conn._expire_at <= monotonic():
            psycopg_logger.info("discarding expired connection")
            self._close_connection(conn)
            self.run_task(AddConnection(self))
            return
        # psycopg_pool's _add_to_pool(): to a waiting client, else the pool.
        conn._pool = None
        if self._closed:
            self._close_connection(conn)
            return
        with self._lock:
            if self._closed:  # closed meanwhile
                self._close_connection(conn)
                return
            waiting = self._waiting
            while waiting:
                # Unless it timed out meanwhile.
                if waiting.popleft().set(conn):
                    break
            else:
                idle = self._pool
                idle.append(conn)
                # A wait() for the pool to fill up is told.
                full = self._pool_full_event
                if full and len(idle) >= self._min_size:
                    full.set()

    def _start_workers(self) -> None:
        # Extends psycopg_pool 3.3.3's (open() made self._tasks a Queue just
        # before): the workers' queue is a SimpleQueue, whose put() may be
        # called from a weakref callback, in the garbage collector, even in a
        # thread inside the queue's own code (queue.Queue's put() takes a
        # lock that thread may hold): a lost loan wakes a worker, which takes
        # it back, so that clients already waiting get a new connection.
        # Not under gevent or eventlet: this module's SimpleQueue, imported
        # before the patch, would block the whole worker; their queues take
        # locks. There, lost loans are taken back at the next getconn() or
        # putconn(), and by the watch while clients wait.
        self._wakeable = _green.patched_by() is None
        if self._wakeable:
            self._tasks = SimpleQueue()  # type: ignore[assignment]
        super()._start_workers()

    def _wake_reclaimer(self) -> None:
        # Called from the weakref callback of a lent connection collected:
        # no lock, no I/O (see LoanBook).
        if self._wakeable and not self._closed and self.pid == os.getpid():
            self._tasks.put_nowait(self._reclaim_task)

    def _watch_ended(self) -> None:
        """While clients wait, take back the loans of threads that ended since.

        A thread's connection held in a reference cycle (Django's connection
        wrapper, Flask's app context) is freed only by a garbage collection,
        which nothing else may run before the waiting clients' timeout.
        """
        self._reclaim_lost()
        if self._waiting and not self._closed and self._loans.out:
            self.schedule_task(self._watch_task, WATCH_ENDED_INTERVAL)
        else:
            self._watching_ended = False

    def _reclaim_lost(self) -> None:
        """Take back the loans whose connection was collected while lent.

        Such a connection was closed by the garbage collector (libpq ended its
        session); the pool still counts it in ``pool_size``, and would lend
        nothing more once all are lost. Each is counted in
        ``connections_lost`` and replaced, as psycopg_pool does with a
        connection it finds broken, while the pool holds fewer than
        ``min_size`` or clients wait; and logged, naming its borrower, as
        SQLAlchemy's pool does ("The garbage collector is trying to clean up
        non-checked-in connection").

        A thread that ended with a connection is often freed only by a full
        garbage collection (Django's connection wrapper holds reference
        cycles): when the pool has nothing to lend and loans of ended threads
        are out that no collection has seen yet, one is run. A loan still
        referenced (by another thread, say) is never taken back.
        """
        lost = self._loans.take_lost()
        if not lost and not self._pool and self._nconns >= self._max_size:
            ended = self._loans.borrowers_ended()
            if ended and not ended.keys() <= self._collected_ended.keys():
                gc.collect()
                lost = self._loans.take_lost()
                self._collected_ended = self._loans.borrowers_ended()
        for loan in lost:
            self._lost_loan(loan)

    def _lost_loan(self, loan: Loan) -> None:
        with self._lock:
            self._stats[self._CONNECTIONS_LOST] += 1
            self._nconns -= 1
            replace = not self._closed and (
                self._nconns < self._min_size or bool(self._waiting)
            )
            if replace:
                self._nconns += 1
        if replace:
            self.run_task(AddConnection(self))
        logger.warning(
            "pool %r: a connection lent to thread %r%s%s in process %d was"
            " garbage-collected without being given back; its session is"
            " closed and the pool counts it lost. Give every connection back"
            " before its borrower ends (putconn(), a with block, Django's"
            " connection.close())",
            self.name,
            loan.thread.name,
            f" for {self.used_by}" if self.used_by else "",
            "" if loan.label is None else f" by {loan.label}",
            os.getpid(),
        )

    def record_usage(self, seconds: float) -> None:
        """Count *seconds* of use in ``usage_ms``, as ``connection()`` does."""
        # psycopg_pool 3.3.3: ConnectionPool.connection() counts it this way.
        self._stats[self._USAGE_MS] += int(1000.0 * seconds)

    def _getconn_with_check_loop(self, deadline: float, dead: bool | None = None) -> CT:
        # Overrides psycopg_pool 3.3.3's loop of the same name; the same but
        # for `at_once` and for an expired connection, replaced (_expired).
        # psycopg_pool retries once at once, then backs off
        # (1 s, 2 s...): after a mass termination (a failover, an idle
        # timeout) requests would wait seconds behind the dead idle
        # connections. A connection found dead (closed by its check) is
        # followed at once by the next idle one, at most as many times as
        # connections were idle at the first failure. A check that fails on
        # a live connection gets psycopg_pool's backoff: no connection storm.
        # *dead*, given by getconn() after its first turn (see there): the
        # connection it took failed its check, and was closed or not.
        attempt: AttemptWithBackoff | None = None
        at_once: int | None = None
        while True:
            if dead is None:
                conn = self._getconn_unchecked(deadline - monotonic())
                if self._expired(conn):
                    continue  # replaced; the next idle one, or the new one
                try:
                    self._check_connection(conn, deadline)
                except Exception:
                    dead = conn.closed
                    self._putconn(conn, from_getconn=True)
                except BaseException:
                    # Cancellation, KeyboardInterrupt etc.: don't lose the
                    # connection, but don't try again either.
                    self._putconn(conn, from_getconn=True)
                    raise
                else:
                    psycopg_logger.info("connection given by %r", self.name)
                    return conn

            if at_once is None:
                at_once = len(self._pool)
            if dead and at_once > 0 and self._pool:
                at_once -= 1
                dead = None
                continue
            dead = None

            now = monotonic()
            if not attempt:
                attempt = AttemptWithBackoff(timeout=deadline - now)
            else:
                attempt.update_delay(now)
            if attempt.time_to_give_up(now):
                raise PoolTimeout()
            else:
                sleep(attempt.delay)

    def _expired(self, conn: CT) -> bool:
        """Close and replace *conn* if it is past ``max_lifetime``; say if it was.

        psycopg_pool 3.3.3 looks at a connection's age (its ``_expire_at``,
        ``max_lifetime`` with up to 5 % less at random) only when it is given
        back (``_return_connection``) or in ``check()``: a pool that sat idle
        for hours would lend connections many times older than
        ``max_lifetime`` (psycopg#1018), just when a credential rotation, a
        failover or a DNS change should have been picked up. Here an expired
        one is also refused before it is lent, without a round trip, and
        replaced as psycopg_pool replaces an expired one given back.
        """
        if conn._expire_at > monotonic():
            return False
        psycopg_logger.info("discarding expired connection %s", conn)
        self._close_connection(conn)
        self.run_task(AddConnection(self))
        return True

    def _check_connection(self, conn: CT, deadline: float | None = None) -> None:
        # Overrides psycopg_pool 3.3.3's: the one place a connection taken
        # from the pool is made ready before it is lent. Its reset is settled
        # first (a failed one closes it: counted lost and replaced, as
        # psycopg_pool does with a connection that fails its check), waiting
        # no longer than the client's deadline, then the check runs.
        # (getconn() runs it inline for the first connection it takes.)
        timeout = None if deadline is None else max(deadline - monotonic(), 0.0)
        settled = False
        try:
            settle(conn, timeout)
            settled = True
            if self._check:
                self._check(conn)
        except Exception as ex:
            self._check_failed(ex, settled)
            raise

    @staticmethod
    def _check_failed(ex: Exception, settled: bool) -> None:
        """Log why a connection could not be lent: its reset failed (*settled*
        False), or it was lost meanwhile, or its check failed."""
        if not settled and isinstance(ex, SessionResetFailed):
            psycopg_logger.warning("error resetting connection: %s", ex)
        else:
            # Lost meanwhile (terminated, the server gone): as a check that
            # fails.
            psycopg_logger.info("connection failed check: %s", ex)

    @staticmethod
    def check_connection(conn: CT) -> None:
        # Overrides psycopg_pool 3.3.3's, which its check() calls on each
        # pooled connection: the reset of a settling one is finished first
        # (a failed one closes it; check() then counts it lost and replaces
        # it).
        settle(conn)
        ConnectionPool.check_connection(conn)

    def _reset_connection(self, conn: CT, announced: bool = False) -> None:
        # Overrides psycopg_pool 3.3.3's: the one place a returned connection
        # is reset (in the returning thread when psycopg_pool has no reset of
        # its own to run, else in a pool thread). The same outcomes and
        # messages, but the reset (and the rollback of an open transaction,
        # a ROLLBACK through libpq in the same query rather than
        # conn.rollback(), which would also make psycopg deallocate its
        # prepared statements) is sent, not waited for: the connection goes
        # back settling (see pgpool_core._reset). *announced*: its borrower
        # expects an open transaction rolled back (putconn() says so here,
        # else announce_rollback() did).
        status = conn.pgconn.transaction_status
        if status == TransactionStatus.UNKNOWN:
            return  # closed: psycopg_pool discards it
        if status == TransactionStatus.ACTIVE:
            if is_settling(conn):
                return  # never lent since its reset (a waiter gave it back)
            # A query of the borrower's still in flight (an abandoned COPY, a
            # send_query()): waiting for it could take forever. Close it.
            psycopg_logger.warning("closing returned connection: %s", conn)
            self._close_connection(conn)
            return
        # An open transaction the borrower did not announce is warned about
        # now, as psycopg_pool does; an announced one only if it had written
        # (which its settling finds out: a "rolled back" warning is enough).
        announced = announced or rollback_announced(conn)
        if status != TransactionStatus.IDLE and not announced:
            psycopg_logger.warning("rolling back returned connection: %s", conn)
        try:
            self._session.start(conn, warn_write=announced)
            reset = self._reset
            if reset:
                # In a pool thread (psycopg_pool's ReturnConnection task):
                # nothing to gain from settling later.
                settle(conn)
                reset(conn)
                status = conn.pgconn.transaction_status
                if status != TransactionStatus.IDLE:
                    sname = TransactionStatus(status).name
                    raise psycopg.ProgrammingError(
                        f"connection left in status {sname} by reset function"
                        f" {reset}: discarded"
                    )
        except Exception as ex:
            self._reset_failed(conn, ex)

    def _reset_failed(self, conn: CT, ex: Exception) -> None:
        # psycopg_pool 3.3.3's _reset_connection(): a reset that failed.
        psycopg_logger.warning("error resetting connection: %s", ex)
        self._close_connection(conn)

    # -- connecting ----------------------------------------------------------

    def _start_initial_tasks(self) -> None:
        # Extends psycopg_pool 3.3.3's (called by open(), under the pool's
        # lock), which starts min_size connects at once: with first_alone,
        # one first, the others once it is made (_start_rest). The workers
        # of a server all warm up at the same moment: against a tight
        # max_connections, the first ones would otherwise take every slot
        # before the last ones have any.
        if self._first_alone:
            self._deferred = max(self._nconns - 1, 0)
            self._nconns -= self._deferred
        super()._start_initial_tasks()

    def _start_rest(self, conn: CT) -> None:
        """After the pool's first connection *conn*: start the rest of min_size.

        As many as this process's share of the server allows
        (``start_share``); with fewer than ``min_size``, that many are kept
        (``pool_min``) and more are made only while clients wait.
        """
        with self._lock:
            deferred, self._deferred = self._deferred, None
        if deferred is None:
            return  # not the first connection
        share = None
        if self._start_share is not None:
            try:
                share = self._start_share(conn)
            except Exception as ex:  # never fails a connect
                logger.debug("pool %r: no share known: %s", self.name, ex)
        with self._lock:
            if share is not None and share < self._min_size:
                self._min_size = max(share, 1)
                logger.info(
                    "pool %r: making %d connection(s) at start in process %d,"
                    " its share of the server's",
                    self.name,
                    self._min_size,
                    self.pid,
                )
            count = max(min(deferred, self._min_size - self._nconns), 0)
            self._nconns += count
        for _ in range(count):
            self.run_task(AddConnection(self))

    def schedule_task(self, task: Any, delay: float) -> None:
        # Extends psycopg_pool 3.3.3's: the next attempt of a chain of failed
        # connects (an AddConnection) comes within RECONNECT_DELAY_MAX while
        # the server cannot be reached. While it refuses the login, one chain
        # (the probe) retries after a delay that doubles up to
        # REFUSED_DELAY_MAX; the others park until it succeeds. While it has
        # no slot left (53300), a pool that has a connection does not retry
        # (_give_up_full): the next slot freed may be the only one a process
        # without any can get.
        if isinstance(task, AddConnection):
            if self._give_up_full(task):
                return
            with self._lock:
                failure = self._failure
                if failure is None or failure.kind == UNREACHABLE:
                    delay = min(delay, RECONNECT_DELAY_MAX)
                elif self._probe is None or self._probe is task.attempt:
                    self._probe = task.attempt
                    self._refusals += 1
                    delay = self._jitter(
                        min(2.0 ** (self._refusals - 1), REFUSED_DELAY_MAX), -0.1, 0.1
                    )
                    # No later than the chain gives up (reconnect_timeout),
                    # as psycopg_pool's AttemptWithBackoff.update_delay().
                    give_up_at = task.attempt.give_up_at if task.attempt else 0.0
                    if give_up_at > 0.0:
                        delay = min(delay, max(0.0, give_up_at - monotonic()))
                else:
                    self._parked.append(task)
                    return
        super().schedule_task(task, delay)

    def _give_up_full(self, task: AddConnection) -> bool:
        """Drop *task*, a connect the server refused for want of a slot, if
        the pool has a connection; keep what it has as its ``pool_min``."""
        with self._lock:
            failure = self._failure
            if failure is None or not failure.full or not self._has_connection():
                return False
            self._nconns -= 1
            if task.growing and self._growing:
                self._growing = False
            # Not made again to reach min_size; wait() still fails (the
            # server could not give min_size).
            self._min_size = max(min(self._min_size, self._nconns), 1)
            self._gave_up_full = True
            kept = self._nconns
        logger.info(
            "pool %r: the server has no connection slot left; keeping %d"
            " connection(s) in process %d, more only while clients wait",
            self.name,
            kept,
            self.pid,
        )
        return True

    def reconnect_failed(self) -> None:
        # Extends psycopg_pool 3.3.3's, called when a chain of attempts gives
        # up (reconnect_timeout): a parked chain becomes the probe; with no
        # chain left, the next getconn() starts one and waits for it.
        with self._lock:
            self._probe = None
            parked = self._parked.pop(0) if self._parked else None
            if self._nconns == 0:
                self._failure = None
        if parked is not None:
            self.schedule_task(parked, 0.0)
        super().reconnect_failed()

    def _connect(self, timeout: float | None = None) -> CT:
        # Extends psycopg_pool 3.3.3's: counts the connects in progress, keeps
        # their outcome, and records how long they take.
        with self._connects:
            self._connecting += 1
        _reported_by_the_pool.marked.pool = None
        since = monotonic()
        try:
            conn = super()._connect(timeout)
            listener = _events.listener
            if listener is not None:  # configure included
                listener.connected(self.name, monotonic() - since)
            # Known as made before it stops counting as under way: an
            # attempt failing meanwhile must not find neither, and fail the
            # waiting clients (_failed_to_connect).
            self._connected(conn)
            if self._deferred is not None:
                self._start_rest(conn)
        except Exception as ex:
            self._failed_to_connect(ex, since)
            raise
        finally:
            with self._connects:
                self._connecting -= 1
                self._connects.notify_all()
        return conn

    def _connected(self, conn: CT) -> None:
        with self._lock:
            self._made.add(conn)
            self._failure = None
            self._refusals = 0
            self._probe = None
            parked, self._parked = self._parked, []
            outage, self._outage = self._outage, None
        if outage is not None:
            logger.warning(
                "connected again in %r after %.0f s (%d attempts failed)",
                self.name,
                monotonic() - outage.since,
                outage.failed,
            )
        for task in parked:
            self.run_task(task)

    def _failed_to_connect(self, ex: Exception, started: float) -> None:
        """Keep the failure (masked); fail the waiting clients if nothing is left.

        Called by the thread that failed, while its attempt (begun at
        *started*, ``monotonic()``) is still counted in ``_connecting``.
        """
        conninfo = self.conninfo if isinstance(self.conninfo, str) else None
        kwargs = self.kwargs if isinstance(self.kwargs, Mapping) else None
        mask_exception(ex, conninfo, kwargs)  # psycopg_pool logs it next
        failure = _Failure(_detached(ex), connect_failure(ex), server_full(ex))
        waiting: list[Any] = []
        parked: list[AddConnection] = []
        with self._lock:
            previous, self._failure = self._failure, failure
            if failure.kind == UNREACHABLE:
                # Back to retrying every chain within RECONNECT_DELAY_MAX.
                self._refusals = 0
                self._probe = None
                parked, self._parked = self._parked, []
            # Nothing to lend, and no other attempt under way that may
            # succeed (this one is still counted): the waiting clients fail.
            # With several chains (min_size > 1), an unreachable server's
            # attempts overlap (each takes connect_timeout, the next is at
            # most RECONNECT_DELAY_MAX away): then a failure that follows
            # another fails the clients for whom it was the next attempt:
            # those that began to wait before it began, or at most
            # RECONNECT_DELAY_MAX after (the pool's first attempts begin as
            # the first client's getconn() makes the pool). Not a first
            # failure (one of the first connects finding the server out of
            # slots while the others succeed), nor an older attempt failing
            # once the server is back, while newer ones succeed.
            if not self._has_connection():
                if self._connecting <= 1:
                    waiting = list(self._waiting)
                    self._waiting.clear()
                elif previous is not None:
                    waiting = self._waiting.take_waiting_since(
                        started + RECONNECT_DELAY_MAX
                    )
        for task in parked:
            self.run_task(task)
        for pos in waiting:
            pos.fail(_NoConnection(failure))
        self._report_failure(failure)

    def _report_failure(self, failure: _Failure) -> None:
        """Log the failure if it starts an outage (or changes its kind), or
        :data:`OUTAGE_REPORT_INTERVAL` after the last line; count it.

        psycopg_pool's own line for it, which follows, is dropped
        (:class:`_ReportedByThePool`): one line per pool per change of state,
        whatever ``min_size`` and however often the attempts are retried.
        """
        now = monotonic()
        with self._lock:
            outage = self._outage
            started = outage is None or outage.kind != failure.kind
            if outage is None:
                outage = self._outage = _Outage(now, failure.kind, now)
            outage.failed += 1
            due = now - outage.reported_at >= OUTAGE_REPORT_INTERVAL
            if started or due:
                outage.kind, outage.reported_at = failure.kind, now
            failed, since = outage.failed, outage.since
        _reported_by_the_pool.marked.pool = self.name
        reason = " ".join(str(failure.cause).split())
        if started:
            logger.warning(
                "error connecting in %r: %s (retrying; logged again every %.0f s"
                " until it connects)",
                self.name,
                reason,
                OUTAGE_REPORT_INTERVAL,
            )
        elif due:
            logger.warning(
                "still cannot connect in %r after %.0f s (%d attempts failed): %s",
                self.name,
                now - since,
                failed,
                reason,
            )

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

    # -- for the process that owns it -----------------------------------------

    def abandon(self) -> list[CT]:
        """Make this pool (inherited through fork) inert; return its idle connections.

        Its ``__del__`` would stop worker threads that only exist in the parent
        (a closed pool's does nothing); its connections are the parent's.
        """
        self._closed = True
        return list(self._pool)


def lending_pool(conn: Any) -> Any:
    """Return the psycopg_pool pool that lent *conn* (a ProcessPool or not), or None.

    psycopg_pool marks each connection of its pools with it (``_pool``),
    None while the connection is in the pool.
    """
    return getattr(conn, "_pool", None)


class _WaitQueue(deque[Any], Generic[CT]):
    """psycopg_pool's queue of waiting clients, which knows when each began to wait.

    psycopg_pool 3.3.3 only appends to it, pops from its left and clears it
    (a client that timed out stays until popped), so the clients are in the
    order they began to wait.
    """

    def __init__(self) -> None:
        super().__init__()
        self._since: dict[int, float] = {}

    def append(self, pos: Any) -> None:
        super().append(pos)
        since = self._since
        if len(since) > 2 * len(self) + 16:  # forget the clients popped
            alive = {id(p) for p in self}
            since = self._since = {k: t for k, t in since.items() if k in alive}
        since[id(pos)] = monotonic()

    def take_waiting_since(self, moment: float) -> list[Any]:
        """Remove and return the clients that were waiting at *moment*."""
        taken = []
        since = self._since
        while self and since.get(id(self[0]), moment) <= moment:
            taken.append(self.popleft())
        return taken


def _detached(exc: BaseException) -> BaseException:
    """Return a copy of *exc* without traceback, cause or context.

    Kept as the cause of later errors: a traceback would hold the frames of
    psycopg_pool's connect, whose local variables (shown by a debug page)
    hold the conninfo and its password.
    """
    try:
        copied = copy.copy(exc)
    except Exception:
        copied = exc
    copied.__traceback__ = None
    copied.__cause__ = None
    copied.__context__ = None
    return copied


class _ReclaimLost(MaintenanceTask):
    """Take back the loans whose connection was collected (in a pool worker)."""

    def _run(self, pool: ConnectionPool[Any]) -> None:
        assert isinstance(pool, ProcessPool)
        pool._reclaim_lost()


class _WatchEnded(MaintenanceTask):
    """Look for loans of ended threads while clients wait (in a pool worker)."""

    def _run(self, pool: ConnectionPool[Any]) -> None:
        assert isinstance(pool, ProcessPool)
        pool._watch_ended()
