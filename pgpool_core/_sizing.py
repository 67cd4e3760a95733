"""Default pool sizes from the server's concurrency model: the one place that tells.

A process that serves one request at a time uses one connection per database
at a time; psycopg_pool's defaults (``min_size`` 4, ``max_size`` =
``min_size``) keep four open in it. When the user sets no size, a pool made
in a server's worker is sized by what that worker can use at once:

========================================  ===========  ==========  ==================
Server and worker                         Model        min_size    max_size
========================================  ===========  ==========  ==================
gunicorn ``sync``, uWSGI without threads  sync         1           1
Celery prefork child, ``solo``            sync         1           1
gunicorn ``gthread``, uWSGI ``threads``   threads      1           threads
Celery ``threads``                        threads      1           concurrency
gunicorn gevent/eventlet, uWSGI gevent    green        1           connections, at
and async, Celery gevent/eventlet                                  most
                                                                   :data:`GREEN_MAX_SIZE`
anything else (a script, ``runserver``,   unknown      4           ``min_size``
the shell, a server not recognised)
========================================  ===========  ==========  ==================

What the user sets wins (:func:`resolve`): ``max_size`` alone lowers the
default ``min_size`` to it; ``min_size`` alone raises the default
``max_size`` to it (in an unknown process ``max_size`` follows ``min_size``, as
in psycopg_pool).

The server hooks record what they know (:func:`record`: the gunicorn hooks
from ``post_fork``, the Celery receivers); without them, a gunicorn worker
is recognised by the worker object on the stack of the thread that first uses
the pool, and a uWSGI worker by ``uwsgi.opt``. :func:`current` reads it all.

On its first connection in a process a pool logs the sizes it chose, and one
warning when this host's worker processes (``server_workers``) x ``max_size``
exceed what the server lets ordinary roles open (``read_server_limit``:
``max_connections`` less the reserved connections); ``warn_if_over`` does it,
on the logger ``pgpool.capacity``, with the arithmetic of ``Plan``. The
``capacity`` commands (:mod:`pgpool_core.ops.capacity`) add the other hosts and
the Celery children to the same arithmetic.
"""

from __future__ import annotations

import configparser
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

__all__ = [
    "GREEN_MAX_SIZE",
    "LIMITS_SQL",
    "UNKNOWN_MIN_SIZE",
    "Concurrency",
    "Plan",
    "ServerLimit",
    "Sizes",
    "current",
    "from_config",
    "gunicorn_master_on_stack",
    "read_server_limit",
    "record",
    "record_gunicorn_worker",
    "record_gunicorn_workers",
    "resolve",
    "server_workers",
    "warn_if_over",
]

#: The most connections a green worker's pool opens by default (gevent,
#: eventlet, uWSGI async): their thousand concurrent requests are far more
#: than a database should serve from one process; the rest wait for one.
#: psycopg_pool's default size, so no worker holds more than before.
GREEN_MAX_SIZE = 4

#: psycopg_pool's default ``min_size``, kept where the server is not known.
UNKNOWN_MIN_SIZE = 4


@dataclass(frozen=True)
class Concurrency:
    """How one worker process of a server serves requests (or tasks).

    *server*: ``"gunicorn"``, ``"uWSGI"`` or ``"Celery"``; *model*:
    ``"sync"``, ``"threads"`` or ``"green"``; *at_once*: the requests one
    process serves at once (1, its threads, its green connections);
    *workers*: the processes per host, if known; *what*: the worker in words
    (``"gunicorn gthread worker, threads = 8"``); *master_closes*: False
    where the master runs no Python at fork (uWSGI without
    ``py-call-uwsgi-fork-hooks``), so that a connection its start-up code
    kept (Django's) stays open for its life.
    """

    server: str
    model: str
    at_once: int
    workers: int | None
    what: str
    master_closes: bool = True

    @property
    def min_size(self) -> int:
        return 1

    @property
    def max_size(self) -> int:
        if self.model == "green":
            return max(1, min(self.at_once, GREEN_MAX_SIZE))
        return max(1, self.at_once)

    def why(self) -> str:
        if self.model == "sync":
            return f"{self.what}: one request at a time"
        if self.model == "threads":
            return f"{self.what}: {self.at_once} requests at once"
        return (
            f"{self.what}: {self.at_once} requests at once, capped at"
            f" {GREEN_MAX_SIZE} connections"
        )


@dataclass(frozen=True)
class Sizes:
    """A pool's sizes in one process, and why (for the start-up line)."""

    min_size: int
    max_size: int
    why: str


def resolve(
    min_size: int | None, max_size: int | None, concurrency: Concurrency | None
) -> Sizes:
    """Return the sizes of a pool whose user set *min_size*, *max_size* (None: not).

    Set values win. Unset ones come from *concurrency* (None: psycopg_pool's
    defaults), bounded by the set one: a default ``min_size`` is at most a set
    ``max_size``, a default ``max_size`` at least a set ``min_size``.
    """
    if min_size is not None and max_size is not None:
        return Sizes(min_size, max_size, "set")
    if concurrency is None:
        if max_size is not None:
            return Sizes(
                min(UNKNOWN_MIN_SIZE, max_size),
                max_size,
                "max_size set; min_size psycopg_pool's default, at most max_size",
            )
        if min_size is not None:
            return Sizes(min_size, min_size, "min_size set; max_size = min_size")
        return Sizes(
            UNKNOWN_MIN_SIZE,
            UNKNOWN_MIN_SIZE,
            "psycopg_pool's defaults: the server is not known here",
        )
    why = concurrency.why()
    if max_size is not None:
        return Sizes(
            min(concurrency.min_size, max_size), max_size, f"max_size set; {why}"
        )
    if min_size is not None:
        return Sizes(
            min_size, max(concurrency.max_size, min_size), f"min_size set; {why}"
        )
    return Sizes(concurrency.min_size, concurrency.max_size, why)


# -- what the server hooks record -------------------------------------------------

# (pid, what it is) recorded by a hook in that process; the master's record
# for its children (Celery's prefork pool size), by the master's pid.
_recorded: tuple[int, Concurrency] | None = None


def record(concurrency: Concurrency) -> None:
    """Remember how this process serves (called by the server hooks in it)."""
    global _recorded
    _recorded = (os.getpid(), concurrency)


def _gunicorn_concurrency(worker: Any) -> Concurrency | None:
    """What gunicorn *worker* (a ``gunicorn.workers.base.Worker``) serves at once."""
    cfg = getattr(worker, "cfg", None)
    workers = _positive(getattr(cfg, "workers", None))
    names = {cls.__module__ for cls in type(worker).__mro__}
    if "gunicorn.workers.gthread" in names:
        threads = _positive(getattr(cfg, "threads", None)) or 1
        return Concurrency(
            "gunicorn", "threads", threads, workers,
            f"gunicorn gthread worker, threads = {threads}",
        )  # fmt: skip
    for module, name in (
        ("gunicorn.workers.ggevent", "gevent"),
        ("gunicorn.workers.geventlet", "eventlet"),
    ):
        if module in names:
            connections = _positive(getattr(cfg, "worker_connections", None)) or 1000
            return Concurrency(
                "gunicorn", "green", connections, workers,
                f"gunicorn {name} worker, worker_connections = {connections}",
            )  # fmt: skip
    if "gunicorn.workers.sync" in names:
        return Concurrency("gunicorn", "sync", 1, workers, "gunicorn sync worker")
    return None


def record_gunicorn_worker(server: Any, worker: Any) -> None:
    """Record what gunicorn *worker* serves at once (the hooks' ``post_fork``)."""
    found = _gunicorn_concurrency(worker)
    if found is not None:
        workers = _positive(getattr(server, "num_workers", None))
        if workers is not None and workers != found.workers:
            found = Concurrency(
                found.server, found.model, found.at_once, workers, found.what
            )
        record(found)


def _positive(value: Any) -> int | None:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, list) and value:
        value = value[-1]
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


# -- what the process itself tells ------------------------------------------------


def _frames() -> list[FrameType]:
    frames = []
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def _gunicorn_on_stack() -> tuple[str, Any] | None:
    """``("worker", worker)`` or ``("master", arbiter)`` from this thread's stack.

    A gunicorn worker serves (and forks from) inside its arbiter's and its
    own methods; the master imports a preloaded app inside ``Arbiter.setup``.
    Without the gunicorn modules imported, None at once.
    """
    base = sys.modules.get("gunicorn.workers.base")
    arbiter_module = sys.modules.get("gunicorn.arbiter")
    if base is None or arbiter_module is None:
        return None
    worker_class, arbiter_class = base.Worker, arbiter_module.Arbiter
    arbiter = None
    pid = os.getpid()
    for frame in _frames():
        names = frame.f_code.co_varnames
        for name in ("self", "worker"):
            if name not in names:
                continue
            obj = frame.f_locals.get(name)
            if isinstance(obj, worker_class) and getattr(obj, "pid", None) == pid:
                return "worker", obj
            if isinstance(obj, arbiter_class):
                arbiter = obj
    if arbiter is not None and getattr(arbiter, "pid", pid) in (pid, None):
        return "master", arbiter
    return None


def gunicorn_master_on_stack() -> bool:
    """Return True in gunicorn's master, running a preloaded app or a hook.

    For a ``gunicorn.conf.py`` without the ``pgpool_core.servers.gunicorn`` hooks.
    """
    found = _gunicorn_on_stack()
    return found is not None and found[0] == "master"


def _uwsgi_concurrency() -> Concurrency | None:
    uwsgi = sys.modules.get("uwsgi")
    opt = getattr(uwsgi, "opt", None)
    if not isinstance(opt, dict):
        return None
    try:
        if uwsgi.worker_id() == 0:  # type: ignore[union-attr]
            return None  # the master (or a mule, the spooler)
    except Exception:
        return None
    return _uwsgi_model(
        opt.get, _positive(getattr(uwsgi, "numproc", None)), _FORK_HOOKS in opt
    )


_FORK_HOOKS = "py-call-uwsgi-fork-hooks"


def _uwsgi_model(get: Any, workers: int | None, fork_hooks: bool) -> Concurrency:
    """What uWSGI's options (*get*: an option's value by name) set up."""
    for key in ("gevent", "async"):
        cores = _positive(get(key))
        if cores is not None:
            return Concurrency(
                "uWSGI", "green", cores, workers, f"uWSGI {key} = {cores}",
                fork_hooks,
            )  # fmt: skip
    threads = _positive(get("threads")) or 1
    if threads > 1:
        return Concurrency(
            "uWSGI", "threads", threads, workers, f"uWSGI threads = {threads}",
            fork_hooks,
        )  # fmt: skip
    return Concurrency(
        "uWSGI", "sync", 1, workers, "uWSGI worker without threads", fork_hooks
    )


# The last concurrency found on the stack, by pid (a gunicorn worker without
# the hooks: found once, from the thread that made the first pool).
_found: tuple[int, Concurrency] | None = None


def current() -> Concurrency | None:
    """Return how this process serves, or None where that is not known.

    Recorded by the server hooks in this process, else uWSGI's options in a
    uWSGI worker, else a gunicorn worker found on this thread's stack.
    """
    global _found
    pid = os.getpid()
    if _recorded is not None and _recorded[0] == pid:
        return _recorded[1]
    if _found is not None and _found[0] == pid:
        return _found[1]
    found = _uwsgi_concurrency()
    if found is None:
        on_stack = _gunicorn_on_stack()
        if on_stack is not None and on_stack[0] == "worker":
            found = _gunicorn_concurrency(on_stack[1])
    if found is not None:
        _found = (pid, found)
    return found


# -- what a server's config file tells (for the capacity commands) ------------------


def from_config(path: Path) -> Concurrency | None:
    """Return the concurrency a uwsgi.ini or gunicorn.conf.py at *path* sets up.

    For the ``capacity`` commands, which run outside the server: the settings
    the server's workers read (gunicorn: ``worker_class``, ``threads``,
    ``worker_connections``, ``workers``; uWSGI: ``threads``, ``gevent``,
    ``async``, ``processes``). None if the file cannot be read.
    """
    try:
        text = path.read_text()
    except OSError:
        return None
    if path.suffix == ".py":
        return _from_gunicorn_config(text)
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None

    def get(key: str) -> str:
        return parser.get("uwsgi", key, fallback="")

    workers = _positive(get("processes")) or _positive(get("workers"))
    fork_hooks = get(_FORK_HOOKS).strip().lower() in ("true", "1", "yes", "on")
    return _uwsgi_model(get, workers or _positive(get("p")), fork_hooks)


def _from_gunicorn_config(text: str) -> Concurrency | None:
    import ast

    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = node.value.value
    workers = _positive(values.get("workers"))
    threads = _positive(values.get("threads")) or 1
    worker_class = str(values.get("worker_class", "sync"))
    if "gevent" in worker_class or "eventlet" in worker_class:
        name = "gevent" if "gevent" in worker_class else "eventlet"
        connections = _positive(values.get("worker_connections")) or 1000
        return Concurrency(
            "gunicorn", "green", connections, workers,
            f"gunicorn {name} worker, worker_connections = {connections}",
        )  # fmt: skip
    # gunicorn runs the sync class as gthread when threads > 1.
    if "gthread" in worker_class or (worker_class == "sync" and threads > 1):
        return Concurrency(
            "gunicorn", "threads", threads, workers,
            f"gunicorn gthread worker, threads = {threads}",
        )  # fmt: skip
    if worker_class == "sync":
        return Concurrency("gunicorn", "sync", 1, workers, "gunicorn sync worker")
    return None


# -- Celery ----------------------------------------------------------------------

_CELERY_POOLS = {
    "threads": "threads",
    "celery.concurrency.thread": "threads",
    "gevent": "green",
    "celery.concurrency.gevent": "green",
    "eventlet": "green",
    "celery.concurrency.eventlet": "green",
    "solo": "sync",
    "celery.concurrency.solo": "sync",
}


def celery_concurrency(pool_cls: Any, concurrency: Any) -> Concurrency | None:
    """What a Celery worker's own process serves at once (not prefork's).

    *pool_cls* and *concurrency* are the worker's (``WorkController``); the
    prefork pool's children are recorded by :func:`record_celery_child`.
    """
    if isinstance(pool_cls, str):
        key = pool_cls.partition(":")[0]
    else:
        key = getattr(pool_cls, "__module__", "")
    model = _CELERY_POOLS.get(key)
    if model is None:
        return None
    name = key.rsplit(".", 1)[-1]
    at_once = 1 if model == "sync" else (_positive(concurrency) or 1)
    what = f"Celery {name} pool" + (
        "" if model == "sync" else f", concurrency {at_once}"
    )
    return Concurrency("Celery", model, at_once, 1, what)


def record_celery_child(children: Any) -> None:
    """Record this process as a prefork child of a pool of *children* processes."""
    record(
        Concurrency("Celery", "sync", 1, _positive(children), "Celery prefork child")
    )


# -- this host against the server's limit (logged at a pool's first connection) --

logger = logging.getLogger("pgpool.capacity")

#: One round trip: the server's connection limit and what it keeps in reserve.
LIMITS_SQL = (
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " coalesce(current_setting('reserved_connections', true), '0')::int"
)

# The worker count gunicorn's master gave (pgpool_core.servers.gunicorn records it).
_gunicorn_workers: int | None = None


def record_gunicorn_workers(count: Any) -> None:
    """Remember gunicorn's ``workers`` setting (called by the gunicorn hooks)."""
    global _gunicorn_workers
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        _gunicorn_workers = count


def server_workers() -> tuple[int, str] | None:
    """Return the worker processes per host of the running server, and where from.

    ``WEB_CONCURRENCY`` (gunicorn's default for ``workers``, and what many
    platforms set), else uWSGI's ``processes`` in a uWSGI process, else
    gunicorn's ``workers`` in a worker started with the pgpool_core.servers.gunicorn
    hooks (or found by :func:`current`), else a Celery
    prefork child's pool size. None when none of these is known.
    """
    env = os.environ.get("WEB_CONCURRENCY", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "WEB_CONCURRENCY"
    uwsgi = sys.modules.get("uwsgi")
    numproc = getattr(uwsgi, "numproc", None)
    if isinstance(numproc, int) and numproc > 0:
        return numproc, "uWSGI processes"
    if _gunicorn_workers is not None:
        return _gunicorn_workers, "gunicorn workers"
    found = current()
    if found is not None and found.workers is not None:
        return found.workers, f"{found.server} workers"
    return None


@dataclass(frozen=True)
class ServerLimit:
    """What a PostgreSQL server lets ordinary roles open."""

    max_connections: int
    superuser_reserved: int
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.max_connections - self.superuser_reserved - self.reserved

    def describe(self) -> str:
        text = (
            f"max_connections {self.max_connections}"
            f" - superuser_reserved_connections {self.superuser_reserved}"
        )
        if self.reserved:
            text += f" - reserved_connections {self.reserved}"
        return f"{text} = {self.available}"


def read_server_limit(conn: psycopg.Connection[Any]) -> ServerLimit:
    """Ask the server behind *conn* for its limit (one round trip).

    Leaves *conn* as it found it: a transaction this opens is rolled back.
    """
    idle = conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    row = conn.execute(LIMITS_SQL, prepare=False).fetchone()
    if idle and conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    assert row is not None
    return ServerLimit(*row)


@dataclass(frozen=True)
class Plan:
    """The worst case of one pool: every connection of every process open.

    *min_size* (default 0: none) bounds the advice: a max_size below it
    would be refused, so both are advised lower. *celery_max_size* is a
    Celery prefork child's (default: *max_size*; 1 when the pool's sizes are
    not set, see :mod:`pgpool_core._sizing`). *master* is the connections a
    master keeps for its life, per host: a Django connection that start-up
    code opened under uWSGI without ``py-call-uwsgi-fork-hooks``.
    """

    max_size: int
    workers: int = 1
    hosts: int = 1
    celery: int = 0
    min_size: int = 0
    celery_max_size: int | None = None
    master: int = 0

    @property
    def child_max_size(self) -> int:
        return self.max_size if self.celery_max_size is None else self.celery_max_size

    @property
    def web(self) -> int:
        return self.hosts * self.workers * self.max_size

    @property
    def background(self) -> int:
        return self.hosts * self.celery * self.child_max_size

    @property
    def total(self) -> int:
        return self.web + self.background + self.hosts * self.master

    def describe(self) -> str:
        text = (
            f"{self.hosts} host(s) x {self.workers} worker(s) x max_size"
            f" {self.max_size} = {self.web}"
        )
        if self.celery:
            text += (
                f" + {self.hosts} host(s) x {self.celery} Celery child(ren) x"
                f" max_size {self.child_max_size} = {self.background}"
            )
        if self.master:
            text += (
                f" + {self.hosts} host(s) x {self.master} kept by the uWSGI master"
                f" = {self.hosts * self.master}"
            )
        if self.celery or self.master:
            text += f", {self.total}"
        return text

    def fits(self, limit: ServerLimit) -> bool:
        return self.total <= limit.available

    def largest_max_size(self, limit: ServerLimit) -> int:
        """The largest max_size that fits, 0 if even 1 does not."""
        return max((limit.available - self.hosts * self.master) // self.processes, 0)

    @property
    def processes(self) -> int:
        return self.hosts * (self.workers + self.celery)

    def start_share(self, limit: ServerLimit) -> int | None:
        """How many connections each process should make at start, or None: all.

        None when every process's ``min_size`` fits; else the server's
        connections shared among the processes (at least 1), so that the
        first to start do not take every slot.
        """
        if self.processes * self.min_size <= limit.available:
            return None
        return max(limit.available // self.processes, 1)

    def starving(self, limit: ServerLimit) -> str | None:
        """Say which processes would get no connection at start; None if none would."""
        share = self.start_share(limit)
        if share is None:
            return None
        available, processes = limit.available, self.processes
        if processes > available:
            return (
                f"{processes - available} of the {processes} worker(s) will get"
                f" no connection while the others hold one each"
            )
        first = -(-available // self.min_size)  # they take every slot
        return (
            f"with min_size {self.min_size} each, the first {first} worker(s) to"
            f" start would take all {available} connections and the last"
            f" {processes - first} worker(s) would get no connection: each"
            f" connects {share} ({available} // {processes}) at start, more only"
            " while its requests wait"
        )

    def advice(self, limit: ServerLimit) -> list[str]:
        """What to change so that the worst case fits; [] if it does."""
        if self.fits(limit):
            return []
        lines = []
        size = self.largest_max_size(limit)
        if size >= 1 and size < self.min_size:
            # max_size may not be below min_size: validation would refuse it.
            lines.append(f"lower min_size and max_size to {size} or less")
        elif size >= 1:
            lines.append(f"lower max_size to {size} or less")
        lines.append(
            "or put PgBouncer in transaction mode between the app and the server"
            " (set the pgbouncer option, point the app at PgBouncer, keep"
            " PgBouncer's pool sizes within the server's limit)"
        )
        lines.append(
            "or raise max_connections to"
            f" {self.total + limit.max_connections - limit.available} or more"
            " (each connection costs server memory)"
        )
        return lines


def warn_if_over(
    pool_name: str,
    max_size: int,
    conn: psycopg.Connection[Any],
    *,
    min_size: int = 0,
    command: str | None = None,
    why: str | None = None,
) -> int | None:
    """Log the sizes chosen, and one warning if this host's worst case exceeds
    the server's limit.

    Called once per process, on the pool's first connection; never raises.
    The start-up line (INFO, logger ``pgpool.capacity``) gives the sizes, *why*
    (:attr:`Sizes.why`) and the host's sum against the
    server's limit: "4 worker(s) x max_size 1 = 4 of max_connections 100". The
    warning says what to change (:meth:`Plan.advice`), which workers would get
    no connection at start (:meth:`Plan.starving`), and names *command* (the
    framework's ``pgpool capacity`` command) for the sum over several hosts.

    Returns how many connections this process should make at start
    (:meth:`Plan.start_share`): None for ``min_size``, when every worker's
    ``min_size`` fits or the worker count or the limit is unknown.
    """
    try:
        limit = read_server_limit(conn)
        found = server_workers()
        plan = Plan(
            max_size=max_size, min_size=min_size, workers=found[0] if found else 1
        )
        share = plan.start_share(limit) if found else None
        logger.info(
            "pool %r in process %d: min_size %d, max_size %d (%s); this host:"
            " %s x max_size %d = %d of max_connections %d (%d available)",
            pool_name,
            os.getpid(),
            min_size,
            max_size,
            why or "set",
            f"{plan.workers} worker(s) ({found[1]})" if found else "1 process",
            max_size,
            plan.total,
            limit.max_connections,
            limit.available,
        )
        if plan.fits(limit):
            return share
        workers = f"{plan.workers} worker(s) ({found[1]})" if found else "1 process"
        also = f"; `{command}` sums the hosts" if command else ""
        starving = plan.starving(limit) if found else None
        logger.warning(
            "pool %r in process %d: %s x max_size %d = %d connections from this"
            " host at worst, more than the server allows (%s)%s; to fit, %s%s",
            pool_name,
            os.getpid(),
            workers,
            max_size,
            plan.total,
            limit.describe(),
            f"; {starving}" if starving else "",
            "; ".join(plan.advice(limit)),
            also,
        )
        return share
    except Exception as err:
        logger.debug("pool %r: could not read the server's limit: %s", pool_name, err)
        return None
