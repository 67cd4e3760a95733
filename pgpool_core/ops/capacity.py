"""How many connections the app may open at worst, against what the server allows.

One place for the arithmetic that ``flask pgpool capacity``, ``manage.py pgpool
capacity``, Django's ``django_pgpool.W001`` check and the warning a worker logs
at start all use: hosts x workers x max_size (+ Celery children x max_size)
against ``max_connections - superuser_reserved_connections`` (and PostgreSQL
16's ``reserved_connections``). Both commands are :func:`print_capacity`; the
check is :func:`measure`.
"""

from __future__ import annotations

import ast
import configparser
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from .. import _sizing

__all__ = [
    "LIMITS_SQL",
    "Plan",
    "ServerLimit",
    "default_concurrency",
    "default_workers",
    "measure",
    "plan_for",
    "print_capacity",
    "read_server_limit",
    "server_workers",
    "workers_from_config",
]

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
    hooks (or found by :func:`pgpool_core._sizing.current`), else a Celery
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
    found = _sizing.current()
    if found is not None and found.workers is not None:
        return found.workers, f"{found.server} workers"
    return None


def workers_from_config(path: Path) -> int | None:
    """Return the worker count a uwsgi.ini or gunicorn.conf.py at *path* sets."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if path.suffix == ".py":
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return None
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(
                    isinstance(t, ast.Name) and t.id == "workers" for t in node.targets
                )
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, int)
            ):
                return node.value.value
        return None
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    for key in ("processes", "workers", "p"):
        value = parser.get("uwsgi", key, fallback="")
        if value.strip().isdigit():
            return int(value)
    return None


#: Server config files looked for in the current directory, in this order.
CONFIG_FILES = ("uwsgi.ini", "gunicorn.conf.py")


def default_concurrency() -> tuple[_sizing.Concurrency, str] | None:
    """How the server's workers serve, and where from: this process, else a
    config file here (:data:`CONFIG_FILES`), as :func:`default_workers` finds
    the worker count. For the ``capacity`` commands: a pool whose sizes are
    not set is sized from it, as in the workers."""
    found = _sizing.current()
    if found is not None:
        return found, "this process"
    for name in CONFIG_FILES:
        found = _sizing.from_config(Path(name))
        if found is not None:
            return found, f"./{name}"
    return None


def default_workers() -> tuple[int, str] | None:
    """The running server's worker count, else the one a config file here sets."""
    found = server_workers()
    if found is not None:
        return found
    for name in CONFIG_FILES:
        count = workers_from_config(Path(name))
        if count:
            return count, f"./{name}"
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
    (:attr:`pgpool_core._sizing.Sizes.why`) and the host's sum against the
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


def plan_for(
    pool: Any,
    *,
    workers: int,
    hosts: int = 1,
    celery: int = 0,
    concurrency: _sizing.Concurrency | None = None,
    master: int = 0,
) -> tuple[Plan, _sizing.Sizes]:
    """Return the worst case of *pool* (a ForkSafePool) and its workers' sizes.

    The sizes are those its pools get in a worker of *concurrency* (None: not
    known, psycopg_pool's defaults), as the workers choose them at start
    (:meth:`ForkSafePool.sizes_for`); a Celery prefork child's, those of one
    task at a time. *master*: see :class:`Plan`. The ``capacity`` commands
    print it.
    """
    sizes = pool.sizes_for(concurrency)
    child = pool.sizes_for(
        _sizing.Concurrency("Celery", "sync", 1, celery, "Celery prefork child")
    )
    plan = Plan(
        max_size=sizes.max_size,
        min_size=sizes.min_size,
        workers=workers,
        hosts=hosts,
        celery=celery,
        celery_max_size=child.max_size,
        master=master,
    )
    return plan, sizes


def report(
    name: str,
    plan: Plan,
    limit: ServerLimit,
    *,
    pgbouncer: bool = False,
    sizes: _sizing.Sizes | None = None,
) -> tuple[list[str], bool]:
    """Return the lines the ``capacity`` commands print for one pool, and if it fits.

    Behind PgBouncer the app's connections are PgBouncer's clients: what
    reaches the server is PgBouncer's pool sizes, so the plan always fits.
    *sizes*, if given, are said last: what each worker's pool gets, and why.
    """
    lines, fits = _report(name, plan, limit, pgbouncer=pgbouncer)
    if sizes is not None:
        lines.append(
            f"{name}: each worker: min_size {sizes.min_size}, max_size"
            f" {sizes.max_size} ({sizes.why})"
        )
    return lines, fits


def _report(
    name: str, plan: Plan, limit: ServerLimit, *, pgbouncer: bool
) -> tuple[list[str], bool]:
    lines = [
        f"{name}: {plan.describe()} connections at worst",
        f"{name}: the server allows {limit.describe()}",
    ]
    if pgbouncer:
        lines.append(
            f"{name}: behind PgBouncer: these are PgBouncer's clients (keep them"
            " under its max_client_conn); the server sees at most PgBouncer's"
            f" pool sizes, which must stay under {limit.available}"
        )
        return lines, True
    if plan.fits(limit):
        lines.append(
            f"{name}: fits ({plan.total} of {limit.available},"
            f" {limit.available - plan.total} to spare)"
        )
        return lines, True
    lines.append(
        f"{name}: DOES NOT FIT: {plan.total} > {limit.available}; to fit,"
        f" {'; '.join(plan.advice(limit))}"
    )
    return lines, False


def measure(
    pool: Any,
    *,
    workers: int,
    hosts: int = 1,
    celery: int = 0,
    concurrency: _sizing.Concurrency | None = None,
    master: int = 0,
) -> tuple[Plan, _sizing.Sizes, ServerLimit]:
    """Connect through *pool* (a ForkSafePool) and return its worst case,
    its workers' sizes and the server's limit.

    :func:`plan_for` with the same arguments, and :func:`read_server_limit`
    on a connection of the pool. Raises what connecting raises.
    """
    with pool.connect() as conn:
        limit = read_server_limit(conn)
    plan, sizes = plan_for(
        pool,
        workers=workers,
        hosts=hosts,
        celery=celery,
        concurrency=concurrency,
        master=master,
    )
    return plan, sizes, limit


def print_capacity(
    pools: Mapping[str, Any],
    workers: tuple[int, str | None],
    *,
    hosts: int = 1,
    celery: int = 0,
    master_keeps_connection: bool = False,
    mask: Callable[[str, str], str],
    echo: Callable[[str, bool], None],
) -> list[str]:
    """Print the ``capacity`` commands' report; return the names that fail.

    What ``flask pgpool capacity`` and ``manage.py pgpool capacity`` print:
    the worker count and where it comes from, how each worker serves
    (:func:`default_concurrency`), then :func:`report` for each pool. A name
    fails when its worst case does not fit, or it cannot be reached.

    *pools*: name -> ForkSafePool, or a str saying why the name has none (an
    error line). *workers*: the worker processes per host and where the count
    comes from (None: given, not said), e.g. :func:`default_workers`.
    *master_keeps_connection*: a connection that start-up code opened stays
    in a uWSGI master without ``py-call-uwsgi-fork-hooks`` (Django's, see
    :class:`Plan`). *mask(name, text)* masks the secrets of that name's pool
    in an error's text; *echo(line, error)* prints a line, to standard error
    if *error*.
    """
    count, source = workers
    if source is not None:
        echo(f"workers per host: {count} (from {source})", False)
    model = default_concurrency()
    if model is not None:
        echo(f"each worker serves: {model[0].why()} (from {model[1]})", False)
    concurrency = model[0] if model is not None else None
    master = int(
        master_keeps_connection
        and concurrency is not None
        and not concurrency.master_closes
    )
    failed = []
    for name, pool in pools.items():
        if isinstance(pool, str):
            failed.append(name)
            echo(f"{name}: {pool}", True)
            continue
        try:
            plan, sizes, limit = measure(
                pool,
                workers=count,
                hosts=hosts,
                celery=celery,
                concurrency=concurrency,
                master=master,
            )
        except Exception as err:
            failed.append(name)
            reason = " ".join(mask(name, f"{type(err).__name__}: {err}").split())
            echo(f"{name}: cannot connect: {reason}", True)
            continue
        lines, fits = report(name, plan, limit, pgbouncer=pool.pgbouncer, sizes=sizes)
        for line in lines:
            echo(line, False)
        if not fits:
            failed.append(name)
    return failed
