"""ProcessPool: the psycopg_pool.ConnectionPool that serves one process.

A :class:`~pgpool_core.ForkSafePool` makes one in each process that uses it
(see :mod:`pgpool_core.lifecycle`). It is psycopg_pool's own pool, with its
accounting, statistics, check loop, maintenance tasks and log messages, except
where this module says otherwise:

- the session reset runs in the returning thread, in one round trip that also
  rolls back an open transaction (:meth:`ProcessPool._reset_connection`, the
  one place a returned connection is reset);
- an open transaction is rolled back through libpq, keeping psycopg's
  prepared statements;
- after a mass termination, a connection found dead by the check is followed
  at once by the next idle one, a bounded number of times, before
  psycopg_pool's backoff (:meth:`ProcessPool._getconn_with_check_loop`);
- failed connects are retried at least every :data:`RECONNECT_DELAY_MAX`;
- the connects in progress are counted, so that os.fork() can wait for them.

The private psycopg_pool methods overridden here were read from psycopg_pool
3.3.3 (``psycopg_pool/pool.py``); each override says so.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from time import monotonic, sleep
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.abc import CT
from psycopg_pool.base import AttemptWithBackoff
from psycopg_pool.pool import AddConnection

from . import metrics
from .session import rollback_if_needed

__all__ = ["FORK_CONNECT_WAIT", "RECONNECT_DELAY_MAX", "ProcessPool"]

# The messages psycopg_pool logs are logged where it logs them, at its levels.
psycopg_logger = logging.getLogger("psycopg.pool")

#: The longest wait between two attempts to replace a connection that failed.
#: psycopg_pool doubles its wait at each failure (1, 2, 4 ... 128 s): after a
#: minute's outage the first request could wait a minute more after the server
#: is back. Capped, requests succeed about a second after it accepts again.
RECONNECT_DELAY_MAX = 1.0

#: How long os.fork() waits for connections being made by pool threads.
FORK_CONNECT_WAIT = 2.0


class ProcessPool(ConnectionPool[CT]):
    """psycopg's ConnectionPool for one process; the differences are the module's.

    Takes ConnectionPool's arguments (always made closed: ``open=False``), and:

    *owner*
        The object whose pool this is (a ForkSafePool's per-process state):
        ``ForkSafePool.putconn()`` recognises its connections by it.
    *session_reset*
        The reset that runs in the returning thread, rolling back an open
        transaction itself; instead of psycopg_pool's *reset* (which runs in
        a pool thread, after the rollback).
    *returned*
        Called with each connection given back, however it comes (``putconn()``,
        or ``close()`` with ``close_returns``).
    """

    def __init__(
        self,
        conninfo: Any = "",
        *,
        owner: object = None,
        session_reset: Callable[[CT], None] | None = None,
        returned: Callable[[CT], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.owner = owner
        self._session_reset = session_reset
        self._returned = returned
        # Connections given back by a borrower who expects the pool to end
        # their transaction (flask_pgpool's app context): no warning.
        self._rollback_expected: weakref.WeakSet[CT] = weakref.WeakSet()
        self._connects = threading.Condition(threading.Lock())
        self._connecting = 0
        super().__init__(conninfo, **{**kwargs, "open": False})

    # -- lending -------------------------------------------------------------

    def putconn(self, conn: CT) -> None:
        if metrics.recorder is not None:  # metrics: use_time, however it comes back
            metrics.recorder.returned(conn, self.name)
        if self._returned is not None:
            self._returned(conn)
        super().putconn(conn)

    def expect_rollback(self, conn: CT) -> None:
        """Let *conn* come back inside a transaction without a warning."""
        self._rollback_expected.add(conn)

    def record_usage(self, seconds: float) -> None:
        """Count *seconds* of use in ``usage_ms``, as ``connection()`` does."""
        # psycopg_pool 3.3.3: ConnectionPool.connection() counts it this way.
        self._stats[self._USAGE_MS] += int(1000.0 * seconds)

    def _getconn_with_check_loop(self, deadline: float) -> CT:
        # Overrides psycopg_pool 3.3.3's loop of the same name; the same but
        # for `at_once`. psycopg_pool retries once at once, then backs off
        # (1 s, 2 s...): after a mass termination (a failover, an idle
        # timeout) requests would wait seconds behind the dead idle
        # connections. A connection found dead (closed by its check) is
        # followed at once by the next idle one, at most as many times as
        # connections were idle at the first failure. A check that fails on
        # a live connection gets psycopg_pool's backoff: no connection storm.
        attempt: AttemptWithBackoff | None = None
        at_once: int | None = None
        while True:
            conn = self._getconn_unchecked(deadline - monotonic())
            try:
                self._check_connection(conn)
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
                continue

            now = monotonic()
            if not attempt:
                attempt = AttemptWithBackoff(timeout=deadline - now)
            else:
                attempt.update_delay(now)
            if attempt.time_to_give_up(now):
                raise PoolTimeout()
            else:
                sleep(attempt.delay)

    def _check_connection(self, conn: CT) -> None:
        # Overrides psycopg_pool 3.3.3's: the one place a connection taken
        # from the pool is made ready before it is lent (the check).
        if not self._check:
            return
        try:
            self._check(conn)
        except Exception as ex:
            psycopg_logger.info("connection failed check: %s", ex)
            raise

    def _reset_connection(self, conn: CT) -> None:
        # Overrides psycopg_pool 3.3.3's: the one place a returned connection
        # is reset (in the returning thread when psycopg_pool has no reset of
        # its own to run, else in a pool thread). The same outcomes and
        # messages, but an open transaction is rolled back with a ROLLBACK
        # through libpq (in the session reset's own round trip when there is
        # one) rather than with conn.rollback(), which would also make psycopg
        # deallocate its prepared statements.
        status = conn.pgconn.transaction_status
        if status == TransactionStatus.UNKNOWN:
            return  # closed: psycopg_pool discards it
        if status == TransactionStatus.ACTIVE:
            # A query still in flight (an abandoned COPY, a send_query()):
            # waiting for it could take forever. Close it.
            psycopg_logger.warning("closing returned connection: %s", conn)
            self._close_connection(conn)
            return
        if status != TransactionStatus.IDLE and not self._expected(conn):
            psycopg_logger.warning("rolling back returned connection: %s", conn)
        reset = self._session_reset
        if reset is None:
            if status != TransactionStatus.IDLE and not self._rollback(conn):
                return
            reset = self._reset
            if not reset:
                return
        try:
            reset(conn)
            status = conn.pgconn.transaction_status
            if status != TransactionStatus.IDLE:
                sname = TransactionStatus(status).name
                raise psycopg.ProgrammingError(
                    f"connection left in status {sname} by reset function"
                    f" {reset}: discarded"
                )
        except Exception as ex:
            psycopg_logger.warning("error resetting connection: %s", ex)
            self._close_connection(conn)

    def _expected(self, conn: CT) -> bool:
        if conn in self._rollback_expected:
            self._rollback_expected.discard(conn)
            return True
        return False

    def _rollback(self, conn: CT) -> bool:
        """Roll back *conn*'s transaction; close it if that fails; say if it worked."""
        try:
            rollback_if_needed(conn)
        except Exception as ex:
            psycopg_logger.warning(
                "rollback failed: %s: %s. Discarding connection %s",
                ex.__class__.__name__,
                ex,
                conn,
            )
            self._close_connection(conn)
            return False
        return True

    # -- connecting ----------------------------------------------------------

    def schedule_task(self, task: Any, delay: float) -> None:
        if isinstance(task, AddConnection):
            delay = min(delay, RECONNECT_DELAY_MAX)
        super().schedule_task(task, delay)

    def _connect(self, timeout: float | None = None) -> CT:
        # Extends psycopg_pool 3.3.3's: counts the connects in progress, and
        # records how long they take.
        with self._connects:
            self._connecting += 1
        try:
            if metrics.recorder is None:
                return super()._connect(timeout)
            since = monotonic()  # metrics: create_time, configure included
            conn = super()._connect(timeout)
            metrics.recorder.connected(self.name, monotonic() - since)
            return conn
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

    # -- for the process that owns it -----------------------------------------

    def abandon(self) -> list[CT]:
        """Make this pool (inherited through fork) inert; return its idle connections.

        Its ``__del__`` would stop worker threads that only exist in the parent
        (a closed pool's does nothing); its connections are the parent's.
        """
        self._closed = True
        return list(self._pool)
