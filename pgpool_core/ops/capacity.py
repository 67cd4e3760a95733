"""How many connections the app may open at worst, against what the server allows.

The operators' side of the arithmetic that ``flask pgpool capacity``,
``manage.py pgpool capacity``, Django's ``django_pgpool.W001`` check and the
warning a worker logs at start all use: hosts x workers x max_size (+ Celery
children x max_size) against ``max_connections - superuser_reserved_connections``
(and PostgreSQL 16's ``reserved_connections``). The arithmetic itself
(:class:`~pgpool_core._sizing.Plan`, :class:`~pgpool_core._sizing.ServerLimit`)
and the warning live in the core, :mod:`pgpool_core._sizing`; this module adds
the several hosts, the config files and the printed report. Both commands are
:func:`print_capacity`; the check is :func:`measure`.
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import _sizing
from .._sizing import Plan, ServerLimit, read_server_limit, server_workers

__all__ = [
    "default_concurrency",
    "default_workers",
    "measure",
    "plan_for",
    "print_capacity",
    "workers_from_config",
]


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
