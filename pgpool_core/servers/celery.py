"""Worker hooks for Celery: import this module where the Celery app is made.

In a Flask app's or a Django project's Celery module (``proj/celery.py``)::

    import pgpool_core.servers.celery  # noqa: F401

Importing it connects these receivers (once, however often it is imported;
in a process that only sends tasks they never run):

``worker_init``
    With the prefork pool (Celery's default), marks the worker's main process
    as a forking master and closes what import-time code opened there. That
    process runs no task: it forks the children, at start and again whenever
    one is replaced (``worker_max_tasks_per_child``, a time limit, a crash),
    so it keeps no pool thread and no idle connection; code that still
    queries there gets plain connections. With ``--pool=solo``, ``threads``,
    ``gevent`` or ``eventlet`` tasks run in the main process, which keeps its
    pools; under gevent and eventlet, psycopg's waits are made to yield to
    the event loop (see :mod:`pgpool_core._green`).
``worker_process_init``
    Gives each prefork child fresh pools, runs the setups of
    :func:`pgpool_core.metrics.otel.run_in_each_worker` and starts connecting
    (under ``solo`` it runs in the main process, and only starts connecting).
``worker_process_shutdown``
    Closes a prefork child's pools as it exits.
``worker_shutdown``
    Closes the main process's pools as the worker stops (``solo``, ``threads``).

They only warm up and tidy, as the server hooks do: fork safety does not
depend on them, and Celery does not promise to send the shutdown signals.

A process that runs tasks (a prefork child, or the worker itself under the
other pools) keeps its pools from one task to the next: see
:func:`keeps_pools`.
"""

from __future__ import annotations

import os
from typing import Any

from .. import _green, _process, _sizing
from ..metrics import otel

try:
    from celery import signals
except ImportError as err:
    raise ImportError(
        "pgpool_core.servers.celery needs Celery: pip install psycopg-forksafe[celery]"
    ) from err

__all__ = ["is_prefork_pool", "keeps_pools"]

#: Celery's prefork pool, as its pool aliases name it.
_PREFORK = "celery.concurrency.prefork:TaskPool"
_PREFORK_ALIASES = frozenset({"prefork", "processes", _PREFORK})


def is_prefork_pool(pool_cls: Any) -> bool:
    """Return True if *pool_cls* (a worker's ``pool_cls``) is the prefork pool.

    *pool_cls* is a class when the worker was started by ``celery worker``, a
    name (``"prefork"``, ``"solo"``, ``"module:Class"``) when it comes from the
    ``worker_pool`` setting. Nothing is imported: the gevent and eventlet pool
    modules must not be imported before their monkey-patching.
    """
    if isinstance(pool_cls, str):
        return pool_cls in _PREFORK_ALIASES
    return any(
        f"{cls.__module__}:{cls.__qualname__}" == _PREFORK
        for cls in getattr(pool_cls, "__mro__", ())
    )


# The process that runs tasks and keeps its pools until it exits (see
# keeps_pools()); a pid, so that a process forked from it is not one.
_task_process: int | None = None

# The prefork pool's size (its children, per host), for the children's sizing.
_prefork_children: int | None = None


def keeps_pools() -> bool:
    """Return True in a worker process that runs tasks, these hooks connected.

    That is a prefork child from ``worker_process_init`` on, or the worker's
    own process under ``solo``, ``threads``, ``gevent`` or ``eventlet`` from
    ``worker_init`` on. Its pools serve all its tasks and are closed as it
    exits (``worker_process_shutdown``, ``worker_shutdown``); adapters keep
    them open when asked to close them at a task boundary. Celery's Django
    fixup calls ``close_pool()`` on every pooled Django alias before and after
    each task (Celery 5.6.0 in every pool, 5.6.1 and later in prefork
    children): that would make each task open a pool of its own, ``min_size``
    new TLS sessions per task.
    """
    return _task_process == os.getpid()


def _worker_init(sender: Any = None, **kwargs: Any) -> None:
    global _task_process, _prefork_children
    if sender is None:
        return
    pool_cls = getattr(sender, "pool_cls", None)
    if is_prefork_pool(pool_cls):
        _prefork_children = getattr(sender, "concurrency", None)
        _process.mark_forking_master()
        _process.close_in_master()
    else:
        _task_process = os.getpid()
        found = _sizing.celery_concurrency(
            pool_cls, getattr(sender, "concurrency", None)
        )
        if found is not None:
            _sizing.record(found)
            _process.refit_all()  # a pool import-time code made unsized
        # gevent and eventlet patched before the app was imported; psycopg
        # only notices gevent.
        _green.after_patch()


def _worker_process_init(**kwargs: Any) -> None:
    global _task_process
    _task_process = os.getpid()
    if _prefork_children is not None:  # not under solo (see worker_process_init)
        _sizing.record_celery_child(_prefork_children)
    _process.after_fork_in_child()
    otel.start_worker()
    _process.warm_up_all()


def _worker_process_shutdown(**kwargs: Any) -> None:
    _process.close_all()


def _worker_shutdown(**kwargs: Any) -> None:
    _process.close_all()


# With a dispatch_uid, connecting again (a reload, the module imported under
# a second name) keeps the first receiver and adds none; weak=False keeps the
# receivers alive whatever becomes of this module object.
signals.worker_init.connect(_worker_init, weak=False, dispatch_uid="pgpool.init")
signals.worker_process_init.connect(
    _worker_process_init, weak=False, dispatch_uid="pgpool.process_init"
)
signals.worker_process_shutdown.connect(
    _worker_process_shutdown, weak=False, dispatch_uid="pgpool.process_shutdown"
)
signals.worker_shutdown.connect(
    _worker_shutdown, weak=False, dispatch_uid="pgpool.shutdown"
)
