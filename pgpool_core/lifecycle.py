"""The life of pools across fork: who owns what, what a child does with its inheritance.

Correctness rests on one thing only: every access compares ``os.getpid()`` with
the pid that made the pool. The hooks in this module (``os.register_at_fork``,
the server hooks in :mod:`pgpool_core.gunicorn` and :mod:`pgpool_core.uwsgi`)
only do the same work earlier, so that a worker starts warm.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import ForkSafePool

__all__ = [
    "abandon",
    "abandon_connection",
    "after_fork_in_child",
    "all_pools",
    "close_all",
    "close_in_master",
    "in_forking_master",
    "is_abandoned",
    "mark_forking_master",
    "process_lock",
    "register",
    "stop_signals_blocked",
    "warm_up_all",
]

logger = logging.getLogger("pgpool.lifecycle")

_pools: weakref.WeakSet[ForkSafePool] = weakref.WeakSet()

# What a child inherited and must neither use, nor close, nor let the garbage
# collector close: closing a psycopg_pool joins threads that do not exist in
# the child (a 20 s hang under uWSGI); a connection's close sends Terminate on
# the parent's socket. Kept here for the life of the process.
_abandoned: list[Any] = []
_abandoned_ids: set[int] = set()

# One lock per process. dict.setdefault is atomic, so the first threads of a
# new process agree on one lock even though the parent's may have been held at
# fork time.
_locks: dict[int, threading.Lock] = {}

_forking_master_pid: int | None = None

#: The signals servers send to stop a worker. Pool threads must not take them:
#: a psycopg_pool thread that catches SIGINT in a uWSGI worker calls exit()
#: there and the worker never dies.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP})


def register(pool: ForkSafePool) -> None:
    """Remember *pool* for the server hooks."""
    _pools.add(pool)


def all_pools() -> list[ForkSafePool]:
    """Return every live ForkSafePool of this process."""
    return list(_pools)


def process_lock() -> threading.Lock:
    """Return this process's lock for creating pools."""
    pid = os.getpid()
    lock = _locks.get(pid)
    if lock is None:
        lock = _locks.setdefault(pid, threading.Lock())
    return lock


def mark_forking_master() -> None:
    """Declare that this process forks workers and serves nothing itself.

    Imported server hooks call it in the master. Until the fork, pools serve
    import-time code with plain connections and start no thread.
    """
    global _forking_master_pid
    _forking_master_pid = os.getpid()


def in_forking_master() -> bool:
    """Return True in a process that will fork workers (a server's master)."""
    if _forking_master_pid == os.getpid():
        return True
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return False
    # uWSGI forks without holding the GIL: a pool thread in the master may hold
    # it at that moment, and the worker then hangs forever. worker_id() is 0
    # in the master and while the app is preloaded; mules and the spooler are
    # not forked from, but they serve nothing either.
    try:
        return bool(uwsgi.worker_id() == 0)
    except Exception:  # pragma: no cover - a uwsgi module without worker_id()
        return False


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block the stop signals in this thread; threads started meanwhile inherit that."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_devnull: int | None = None


def abandon_connection(conn: Any) -> None:
    """Make an inherited connection unusable in this process without a byte sent.

    Its socket descriptor is pointed at /dev/null (the parent's socket stays
    open in the parent), so that nothing written by mistake can reach the
    server, and the descriptor number cannot be reused by a new socket that a
    stray write would then corrupt.
    """
    global _devnull
    if id(conn) in _abandoned_ids:
        return
    abandon(conn)
    try:
        fd = conn.pgconn.socket
    except Exception:
        return  # already closed, or never connected
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(_devnull, fd)
    except OSError:  # pragma: no cover - the descriptor was closed already
        pass


def abandon(obj: Any) -> None:
    """Keep *obj* (inherited from a parent) referenced forever and never touch it."""
    _abandoned.append(obj)
    _abandoned_ids.add(id(obj))


def is_abandoned(obj: Any) -> bool:
    """Return True if *obj* was inherited from a parent and abandoned."""
    return id(obj) in _abandoned_ids


def after_fork_in_child() -> None:
    """Abandon what every pool inherited; the next access makes a fresh pool."""
    for pool in all_pools():
        pool._leave_inherited()


def warm_up_all() -> None:
    """Open every ForkSafePool's pool in this process; connections come later."""
    for pool in all_pools():
        try:
            pool.open()
        except Exception as err:
            # A worker must start even if the database is down: requests will
            # say so, and the pool reconnects in the background.
            logger.warning(
                "pool %r: warm-up failed in process %d: %s", pool.name, os.getpid(), err
            )


def close_all(timeout: float = 5.0) -> None:
    """Close the pools this process made itself (never inherited ones)."""
    for pool in all_pools():
        pool.close(timeout=timeout)


def close_in_master() -> None:
    """Close what import-time code left open in a master, before it forks."""
    close_all()


# The pools prepared for an os.fork() in progress.
_forking: list[ForkSafePool] = []


def _before_fork() -> None:
    _forking[:] = all_pools()
    for pool in _forking:
        pool._before_fork()


def _end_fork() -> None:
    """Undo _before_fork(), in the parent and (after abandoning) in the child."""
    for pool in _forking:
        pool._after_fork()
    _forking.clear()


def _after_fork_in_child() -> None:
    after_fork_in_child()
    _end_fork()


# uWSGI forks with fork(), which runs none of these: there, the pid check on
# every access does the child's part, a master runs no pool thread, and
# CPython frees none of the parent threads' objects.
os.register_at_fork(
    before=_before_fork,
    after_in_parent=_end_fork,
    after_in_child=_after_fork_in_child,
)
