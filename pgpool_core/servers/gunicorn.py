"""Server hooks for gunicorn.conf.py.

Importing this module from ``gunicorn.conf.py`` marks the master as a forking
master: pools touched by import-time code there (``preload_app = True``) use
plain connections and start no thread. Use the hooks as they are::

    from pgpool_core.servers.gunicorn import post_fork, post_worker_init
    from pgpool_core.servers.gunicorn import pre_fork, worker_exit

or call them from hooks of your own. They only warm up and tidy; fork safety
does not depend on them.

The gevent and eventlet workers monkey-patch the standard library after
``post_fork``, in the worker's ``init_process``; psycopg, imported before,
would keep waits that block the whole worker (see :mod:`pgpool_core._green`).
For them, ``post_fork`` leaves the warm-up to ``post_worker_init``, which runs
after the patch, and psycopg's waits are chosen again once gevent has patched
(from ``post_worker_init`` under eventlet).
"""

from __future__ import annotations

from typing import Any

from .. import _green, _process, _sizing
from ..metrics import otel

__all__ = ["post_fork", "post_worker_init", "pre_fork", "when_ready", "worker_exit"]

#: gunicorn's workers that monkey-patch in init_process(), by module.
_PATCHING_WORKERS = {
    "gunicorn.workers.ggevent": "gevent",
    "gunicorn.workers.geventlet": "eventlet",
}

_process.mark_forking_master()


def when_ready(server: Any) -> None:
    """Close what import-time code opened in the master (gunicorn ``when_ready``)."""
    _process.close_in_master()


def pre_fork(server: Any, worker: Any) -> None:
    """Close what the master opened before each fork (gunicorn ``pre_fork``)."""
    _process.close_in_master()


def post_fork(server: Any, worker: Any) -> None:
    """Give the new worker fresh pools and start connecting (gunicorn ``post_fork``).

    First runs the setups registered with
    :func:`pgpool_core.metrics.otel.run_in_each_worker` (the OpenTelemetry SDK). A
    gevent or eventlet worker does both in ``post_worker_init``: threads
    started before its monkey-patching would be real threads, waiting on
    locks that block every greenlet.
    """
    _sizing.record_gunicorn_workers(getattr(server, "num_workers", None))
    _sizing.record_gunicorn_worker(server, worker)
    _process.after_fork_in_child()
    patcher = _patched_later_by(worker)
    if patcher is None:
        otel.start_worker()
        _process.warm_up_all()
    elif patcher == "gevent":
        _green.after_gevent_patch()


def post_worker_init(worker: Any) -> None:
    """Fit psycopg to a patched worker, then start connecting (gunicorn
    ``post_worker_init``, after the worker loaded the app).

    The setups of :func:`pgpool_core.metrics.otel.run_in_each_worker` run here in
    a gevent or eventlet worker, after its monkey-patching.
    """
    _green.after_patch()
    otel.start_worker()
    _process.warm_up_all()


def _patched_later_by(worker: Any) -> str | None:
    """Return ``"gevent"`` or ``"eventlet"`` if *worker* monkey-patches after
    ``post_fork``, else None."""
    for cls in type(worker).__mro__:
        if cls.__module__ in _PATCHING_WORKERS:
            return _PATCHING_WORKERS[cls.__module__]
    return None


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's pools as it exits (gunicorn ``worker_exit``)."""
    _process.close_all()
