"""The life of pools across fork: who owns what, what a child does with its inheritance.

Correctness rests on one thing only: a :class:`ProcessGuard`, checked first
at every entry point through which a process can first touch a connection,
compares ``os.getpid()`` with the pid it last saw and, in a process that
inherited what it guards, abandons that before anything uses it. It is the one
place that compares pids (the two entry points of every loan,
:meth:`ProcessPools.current` and :meth:`ProcessPools.lent_here`, read its pid
themselves and call it only when the process changed: the same check, without
a call); :class:`ProcessPools` checks its own in each of its methods, and an
adapter that keeps a connection across calls (Django's connection wrapper)
checks one of its own in each of its entry methods. The
hooks in this module (``os.register_at_fork``, the server hooks in
:mod:`pgpool_core.servers.gunicorn` and :mod:`pgpool_core.servers.uwsgi`) only do
the same work earlier, so that a worker starts warm.

Each :class:`~pgpool_core.ForkSafePool` keeps its per-process state in a
:class:`ProcessPools`: this process's :class:`~pgpool_core._psycopg_pool.ProcessPool`
(none in a forking master, which gets plain connections instead), the
connections made here, and what was inherited from a parent, abandoned
untouched. The module keeps every ProcessPools for the server hooks, the
at-fork handlers and the exit, and gives the metrics what they read of them
(:func:`pool_states`, handed to :mod:`pgpool_core._events` at import).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from . import _events, _green, _sizing

if TYPE_CHECKING:
    from ._psycopg_pool import ProcessPool

__all__ = [
    "EXIT_CLOSE_TIMEOUT",
    "FORK_CONNECT_WAIT",
    "STOP_SIGNALS",
    "ProcessGuard",
    "ProcessPools",
    "abandon",
    "abandon_connection",
    "after_fork_in_child",
    "all_pools",
    "close_all",
    "close_in_master",
    "on_close_in_master",
    "pool_states",
    "drop",
    "refit_all",
    "in_forking_master",
    "is_abandoned",
    "mark_forking_master",
    "process_lock",
    "release",
    "stop_signals_blocked",
    "warm_up_all",
]

logger = logging.getLogger("pgpool.lifecycle")
pool_logger = logging.getLogger("pgpool.pool")

Connection = psycopg.Connection[Any]

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

#: Seconds the exit waits for each pool thread to stop (see :func:`_at_exit`).
EXIT_CLOSE_TIMEOUT = 0.2

#: Seconds os.fork() waits for the connections pool threads are making (see
#: :meth:`ProcessPools.before_fork`).
FORK_CONNECT_WAIT = 2.0

_getpid = os.getpid


def process_lock() -> threading.Lock:
    """Return this process's lock for creating pools."""
    pid = os.getpid()
    lock = _locks.get(pid)
    if lock is None:
        lock = _locks.setdefault(pid, threading.Lock())
    return lock


def _forget_unpatched_lock() -> None:
    # A gunicorn gevent worker abandons its inherited pools in post_fork,
    # before gevent patches it: the lock made then is a real one, and a
    # greenlet waiting for it while another holds it (and yields, starting
    # the pool's threads) blocks the whole worker for good. Once patched, the
    # next pool creation makes a cooperative one (nothing holds it meanwhile:
    # the process serves nothing yet).
    _locks.pop(os.getpid(), None)


_green.on_patched(_forget_unpatched_lock)


def mark_forking_master() -> None:
    """Declare that this process forks workers and serves nothing itself.

    Imported server hooks call it in the master. Until the fork, pools serve
    import-time code with plain connections and start no thread.
    """
    global _forking_master_pid
    _forking_master_pid = os.getpid()


def in_forking_master() -> bool:
    """Return True in a process that will fork workers (a server's master).

    One that imported server hooks (:func:`mark_forking_master`), uWSGI's
    master, or gunicorn's, found on the stack when it imports a preloaded app
    or runs a hook (:func:`pgpool_core._sizing.gunicorn_master_on_stack`): with
    or without the hooks in its config, a master keeps no pool.
    """
    if _forking_master_pid == os.getpid():
        return True
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        if _sizing.gunicorn_master_on_stack():
            mark_forking_master()
            return True
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


class ProcessGuard:
    """Fork safety's one check: abandon what a parent process left, before any use.

    Made in a process, by an object whose state belongs to the process that
    uses it (its pools, its connections). :meth:`check`, called first by each
    of the object's entry points, compares ``os.getpid()`` with the pid of the
    process that last used the object; in another process (a child that
    inherited the object through fork, at-fork handlers run or not, as under
    uWSGI), it first calls *leave* with that parent's pid, once: *leave*
    abandons what belongs to the parent, never closing it (see
    :func:`abandon_connection`), so that the entry point finds nothing
    inherited and makes this process's own. Only then is this process
    recorded, so that a *leave* that raised runs again at the next check.

    *shared*: the object is used by several threads at once (a
    :class:`ProcessPools`); *leave* then runs under this process's lock
    (:func:`process_lock`), and the threads that check meanwhile wait for it.
    Without, the object is one thread's (a Django connection wrapper), and
    *leave* may itself check other guards (the pool it borrowed from).
    """

    __slots__ = ("pid", "_leave", "_shared")

    def __init__(self, leave: Callable[[int], None], *, shared: bool) -> None:
        #: The process that last used the guarded object.
        self.pid = _getpid()
        self._leave = leave
        self._shared = shared

    def check(self) -> None:
        """Abandon what the object holds from a parent process, if it is in another.

        An entry point run for every loan may first compare :attr:`pid` with
        ``os.getpid()`` itself, and call this only when they differ.
        """
        if self.pid != _getpid():
            self._moved()

    def _moved(self) -> None:
        with process_lock() if self._shared else contextlib.nullcontext():
            pid = _getpid()
            if self.pid != pid:  # unless another thread left it meanwhile
                self._leave(self.pid)
                self.pid = pid


class _Process:
    """What a ProcessPools holds in the process that uses it."""

    __slots__ = ("pool", "stopped", "made", "plain", "select")

    def __init__(self) -> None:
        # The pool serving this process; None in a forking master, or once
        # released (the next use makes another).
        self.pool: ProcessPool[Any] | None = None
        # The last pool released here, for its statistics.
        self.stopped: ProcessPool[Any] | None = None
        # Every connection made here: one that a pool thread held when the
        # process forked (being reset on return, being added) is in neither
        # the pool nor a loan, and the child must abandon it too.
        self.made: weakref.WeakSet[Connection] = weakref.WeakSet()
        # The plain connections lent while this process was a forking master.
        self.plain: weakref.WeakSet[Connection] = weakref.WeakSet()
        # select.select when the pool was made: gevent and eventlet replace
        # it when they patch, and a pool made before is unfit for greenlets.
        self.select: object = select.select


class ProcessPools:
    """One ForkSafePool's pools: at most one per process, made on first use.

    *owner* is the ForkSafePool (referenced weakly, for :func:`release`).
    *make_pool* returns a new, unopened :class:`ProcessPool` whose ``owner`` is
    this object; :meth:`current` opens it, with the stop signals blocked in
    its threads. While :attr:`enabled` is False (its ForkSafePool closed), or
    :attr:`warm` is (its ForkSafePool dropped by an adapter, see
    :func:`drop`), the server hooks make no pool.

    Every method first checks its :class:`ProcessGuard`: a parent's pool and
    connections are found out there and abandoned, never closed (see
    :func:`abandon_connection`).
    """

    def __init__(
        self, owner: object, name: str, make_pool: Callable[[], ProcessPool[Any]]
    ) -> None:
        self.owner = weakref.ref(owner)
        self.name = name
        self.enabled = True
        # False once an adapter dropped the ForkSafePool (see drop()), in
        # this process and those forked from it, until it is used again.
        self.warm = True
        self._make_pool = make_pool
        # What this process holds; None until it uses the pool. Read after
        # the guard's check only (what it holds then is this process's).
        self._here: _Process | None = None
        self._guard = ProcessGuard(self._leave_inherited, shared=True)
        # The parent whose pool was abandoned here, until a fresh one is made.
        self._inherited_from: int | None = None
        # Across os.fork(): strong references to the connections made here,
        # which CPython would otherwise free in the child with the parent's
        # threads, closing them (libpq then writes Terminate on the parent's
        # socket).
        self._pinned: list[Connection] = []
        # This process's pool while os.fork() keeps its threads from connecting.
        self._held: ProcessPool[Any] | None = None
        _registry.add(self)

    # -- this process's pool ---------------------------------------------------

    def current(self) -> ProcessPool[Any] | None:
        """Return this process's pool, made on first use; None in a forking master.

        A pool made before gevent or eventlet patched this process (its
        threads real ones, psycopg's waits blocking every greenlet) is
        replaced by one made after the patch: whether the process is patched
        is decided at use, not when a server hook ran (uWSGI's gevent loop
        engine patches each worker after its postfork hooks).
        """
        if self._guard.pid != _getpid():  # checked without a call on every loan
            self._guard.check()
        here = self._here
        if here is not None:
            pool = here.pool
            # psycopg_pool 3.3.3's flag: a pool whose wait() timed out closed
            # itself (so did its ForkSafePool, unless waited on directly).
            # select.select is what gevent and eventlet replace when they patch.
            if pool is not None and not pool.closed and here.select is select.select:
                return pool
        # Before this process's lock is taken: a lock made before the patch
        # blocks every greenlet (see pgpool_core._green).
        _green.after_patch()
        with process_lock():
            return self._current_locked()

    def _current_locked(self) -> ProcessPool[Any] | None:
        self.warm = True  # used: its pool serves, warm it up again
        here = self._record_locked()
        if here.pool is not None:
            if not here.pool.closed and here.select is select.select:
                return here.pool  # another thread made it while we waited
            if not here.pool.closed:
                pool_logger.info(
                    "pool %r: made in process %d before it was monkey-patched;"
                    " replaced",
                    self.name,
                    self._guard.pid,
                )
                with stop_signals_blocked():
                    here.pool.close(EXIT_CLOSE_TIMEOUT)
            here.pool, here.stopped = None, here.pool
        if in_forking_master() or _green.patch_pending():
            # Plain connections until the fork, or the patch.
            return None
        here.select = select.select
        pool = self._make_pool()
        with stop_signals_blocked():
            pool.open()
        here.pool = pool
        if self._inherited_from is not None:
            pool_logger.info(
                "pool %r: fresh pool made in process %d; the one inherited from"
                " process %d is abandoned",
                self.name,
                self._guard.pid,
                self._inherited_from,
            )
            self._inherited_from = None
        else:
            pool_logger.debug(
                "pool %r: opened in process %d", self.name, self._guard.pid
            )
        return pool

    def _record_locked(self) -> _Process:
        """Return this process's record, made now if it has none (after the check)."""
        here = self._here
        if here is None:
            here = self._here = _Process()
        return here

    def _record(self) -> _Process:
        """:meth:`_record_locked`, taking the process lock only to make it."""
        here = self._here
        if here is None:
            with process_lock():
                here = self._record_locked()
        return here

    def has_pool(self) -> bool:
        """Return True if this process has a pool of its own, open."""
        self._guard.check()
        here = self._here
        return here is not None and here.pool is not None and not here.pool.closed

    def latest(self) -> ProcessPool[Any] | None:
        """Return this process's pool, or the last one released here; make none."""
        self._guard.check()
        here = self._here
        return None if here is None else here.pool or here.stopped

    def lent_here(self, pool: object) -> bool:
        """Return True if *pool* is this process's pool, or the last one released
        here (the usual lender of a connection given back)."""
        if self._guard.pid != _getpid():  # checked without a call on every return
            self._guard.check()
        here = self._here
        return here is not None and (pool is here.pool or pool is here.stopped)

    def owns(self, pool: object) -> bool:
        """Return True if *pool* is one of this object's pools."""
        return getattr(pool, "owner", None) is self

    def warm_up(self) -> None:
        """Make this process's pool now, unless disabled, dropped or in a
        forking master."""
        if self.enabled and self.warm:
            self.current()

    def refit(self) -> None:
        """Close this process's pool if its sizes are not its owner's any more."""
        self._guard.check()
        here, owner = self._here, self.owner()
        pool = None if here is None else here.pool
        sizes = getattr(owner, "sizes", None)
        if pool is None or sizes is None:
            return
        wanted = sizes()
        if (pool.min_size, pool.max_size) != (wanted.min_size, wanted.max_size):
            self.release()

    def release(self, timeout: float = 5.0) -> None:
        """Close this process's pool and a forking master's plain connections.

        Inherited ones are abandoned, never closed. Connections still lent
        are closed when given back (their pool is closed). The next use makes
        a new pool, unless :attr:`enabled` is False.
        """
        self._guard.check()
        with process_lock():
            here = self._here
            if here is None:
                return
            pool, here.pool = here.pool, None
            if pool is not None:
                here.stopped = pool
            plain = list(here.plain)
        for conn in plain:
            conn.close()
        if pool is not None:
            with stop_signals_blocked():
                pool.close(timeout)
            pool_logger.debug(
                "pool %r: closed in process %d", self.name, self._guard.pid
            )

    # -- connections -------------------------------------------------------------

    def track(self, conn: Connection) -> None:
        """Remember *conn*, made in this process, for a child to abandon."""
        self._guard.check()
        self._record().made.add(conn)

    def lend_plain(self, conn: Connection) -> None:
        """Remember *conn*, a forking master's plain connection, as lent."""
        self._guard.check()
        self._record().plain.add(conn)

    def take_plain(self, conn: Connection) -> bool:
        """Forget *conn* if it is a plain connection lent here; say if it was."""
        self._guard.check()
        here = self._here
        if here is None or conn not in here.plain:
            return False
        here.plain.discard(conn)
        return True

    def open_connections(self) -> int:
        """Return how many connections made in this process are open (for metrics).

        Idle, lent, or being checked, reset or configured: the sessions this
        process holds on the server.
        """
        self._guard.check()
        here = self._here
        if here is None:
            return 0
        return sum(not conn.closed for conn in _snapshot(here.made))

    def plain_lent(self) -> int:
        """Return how many plain connections are lent in this process."""
        self._guard.check()
        here = self._here
        return 0 if here is None else len(here.plain)

    # -- inheritance ---------------------------------------------------------------

    def leave_if_inherited(self) -> None:
        """Abandon what was inherited from a parent process, making no pool."""
        self._guard.check()

    def _leave_inherited(self, parent: int) -> None:
        """Abandon what this object holds from process *parent*; touch none of it.

        Called by the guard, under this process's lock.
        """
        here, self._here = self._here, None
        if here is None:
            return
        # Logged when the fresh pool that replaces it is made.
        self._inherited_from = parent
        for pool in (here.pool, here.stopped):
            if pool is not None:
                abandon(pool)
                for conn in pool.abandon():
                    abandon_connection(conn)
        # The connections lent, and those a pool thread of the parent was
        # handling at the fork. Closed ones too (a master's plain connection
        # closed before the fork): still the parent's, never given back here.
        for conn in list(here.made):
            abandon_connection(conn)

    def before_fork(self) -> None:
        """Before os.fork(): let pool threads finish the connections they make,
        start no other, and keep every connection alive through the fork."""
        self._guard.check()
        here = self._here
        if here is None:
            return
        if here.pool is not None:
            here.pool.hold_connects(FORK_CONNECT_WAIT)
            self._held = here.pool
        self._pinned = _snapshot(here.made)

    def after_fork(self) -> None:
        """After os.fork(), in parent and child: undo what before_fork() did.

        In the child, after_fork_in_child() has abandoned what was pinned.
        """
        held, self._held = self._held, None
        if held is not None:
            held.release_connects()
        self._pinned = []


_registry: weakref.WeakSet[ProcessPools] = weakref.WeakSet()


def all_pools() -> list[ProcessPools]:
    """Return the per-process state of every live ForkSafePool."""
    return list(_registry)


def after_fork_in_child() -> None:
    """Abandon what every pool inherited; the next access makes a fresh pool."""
    for pools in all_pools():
        pools.leave_if_inherited()


def warm_up_all() -> None:
    """Make every open ForkSafePool's pool in this process; connections come later.

    Not those an adapter dropped (see :func:`drop`): only pools that will serve.
    """
    for pools in all_pools():
        try:
            pools.warm_up()
        except Exception as err:
            # A worker must start even if the database is down: requests will
            # say so, and the pool reconnects in the background.
            logger.warning(
                "pool %r: warm-up failed in process %d: %s",
                pools.name,
                os.getpid(),
                err,
            )


def release(pool: object, timeout: float = 5.0) -> None:
    """Close this process's pool of *pool* (a ForkSafePool); leave *pool* open.

    Not ``ForkSafePool.close()``, which closes it for good: what a command
    does before it exits (an adapter whose framework drops the pool uses
    :func:`drop`). Inherited pools are abandoned, never closed; the next use
    makes a fresh pool.
    """
    for pools in all_pools():
        if pools.owner() is pool:
            pools.release(timeout)


def drop(pool: object, timeout: float = 5.0) -> None:
    """Close this process's pool of *pool* (a ForkSafePool) and stop warming it up.

    What an adapter does when its framework drops *pool* and makes another
    for its next use (Django's ``close_pool()``, which Celery's Django fixup
    calls in the worker's main process; a test database replacing the
    alias's). As :func:`release`, and then the server hooks
    (:func:`warm_up_all`) make no pool for it, in this process or in those it
    forks later: each worker would hold ``min_size`` sessions that nothing
    borrows, beside the pool that serves. Borrowing from it again undoes
    that; giving back a connection does not.
    """
    for pools in all_pools():
        if pools.owner() is pool:
            pools.warm = False
            pools.release(timeout)


def close_all(timeout: float = 5.0) -> None:
    """Close the pools this process made itself (never inherited ones).

    Not ``ForkSafePool.close()``: the ForkSafePools stay open, and their next
    use (in this process or a child) makes a fresh pool.
    """
    for pools in all_pools():
        pools.release(timeout=timeout)


def refit_all() -> None:
    """Close this process's pools whose sizes are not their owner's any more.

    For a server hook that records how this process serves
    (:func:`pgpool_core._sizing.record`) after import-time code made a pool
    sized without knowing it (a Celery worker's own process under
    ``threads``): the next use makes a pool of the sizes the user set or the
    server's model gives.
    """
    for pools in all_pools():
        pools.refit()


# Called by close_in_master() before it closes what is left: a framework
# closes its own connections there through its own objects, which then
# forget them (django_pgpool: Django's connections.close_all()).
_master_closers: list[Callable[[], None]] = []


def on_close_in_master(closer: Callable[[], None]) -> None:
    """Have :func:`close_in_master` call *closer* first (once per call).

    For an adapter whose objects hold connections (a Django wrapper): closed
    behind its back, the object would keep a closed connection and fail its
    next query, where closed through it, it makes a new one. *closer* must
    not raise; an error is logged and the rest is closed all the same.
    """
    _master_closers.append(closer)


def close_in_master() -> None:
    """Close what import-time code left open in a master, before it forks."""
    for closer in _master_closers:
        try:
            closer()
        except Exception as err:
            logger.warning("closing before the fork: %s", err)
    close_all()


def _at_exit() -> None:
    # psycopg_pool's threads would otherwise be stopped by the pools' __del__
    # during interpreter finalization, which on Python 3.13.0 waits 5 s for
    # each of them (20 s for one pool). Inherited pools are only abandoned.
    close_all(timeout=EXIT_CLOSE_TIMEOUT)


atexit.register(_at_exit)

# The pools prepared for an os.fork() in progress.
_forking: list[ProcessPools] = []


# The master that closed what its start-up code left open, at its first fork.
_closed_at_fork_in: int | None = None


def _before_fork() -> None:
    global _closed_at_fork_in
    if _closed_at_fork_in != os.getpid() and in_forking_master():
        # A server's master forking its first worker (gunicorn's, with or
        # without the hooks; Celery's prefork; uWSGI's with
        # py-call-uwsgi-fork-hooks): what start-up code left open here (a
        # Django connection kept by its wrapper) is closed before any child
        # can share it, as the gunicorn hooks' pre_fork does. Only then:
        # code the master runs later (an embedded scheduler) keeps its own.
        _closed_at_fork_in = os.getpid()
        close_in_master()
    _forking[:] = all_pools()
    for pools in _forking:
        pools.before_fork()


def _end_fork() -> None:
    """Undo _before_fork(), in the parent and (after abandoning) in the child."""
    for pools in _forking:
        pools.after_fork()
    _forking.clear()


def _after_fork_in_child() -> None:
    after_fork_in_child()
    _end_fork()


# uWSGI forks with fork(), which runs none of these: there, the guard's check at
# every entry point does the child's part, a master runs no pool thread, and
# CPython frees none of the parent threads' objects.
os.register_at_fork(
    before=_before_fork,
    after_in_parent=_end_fork,
    after_in_child=_after_fork_in_child,
)


def _snapshot(made: weakref.WeakSet[Any]) -> list[Any]:
    """Return the connections of *made* now (empty if it kept changing)."""
    for _ in range(3):
        try:
            return list(made)
        except RuntimeError:  # a pool thread added one meanwhile
            continue
    return []


def pool_states() -> list[_events.PoolState]:
    """Return the state of each open pool of this process (for metrics)."""
    states = []
    for pools in all_pools():
        pool = pools.latest()
        if pool is None or pool.closed:
            continue
        stats = pool.get_stats()
        idle = stats["pool_available"]
        states.append(
            _events.PoolState(
                name=pools.name,
                idle=idle,
                used=max(pools.open_connections() - idle, 0),
                min_size=stats["pool_min"],
                max_size=stats["pool_max"],
                pending=pool.pending_requests(),
            )
        )
    return states


# What observers (pgpool_core.metrics) read of this process, through the seam.
_events.supply(
    states=pool_states,
    forking_master=in_forking_master,
    signals_blocked=stop_signals_blocked,
)
