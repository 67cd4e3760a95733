"""Server hooks for gunicorn.conf.py.

Importing this module from ``gunicorn.conf.py`` marks the master as a forking
master: pools touched by import-time code there (``preload_app = True``) use
plain connections and start no thread. Use the hooks as they are::

    from pgpool_core.gunicorn import post_fork, pre_fork, worker_exit

or call them from hooks of your own. They only warm up and tidy; fork safety
does not depend on them.
"""

from __future__ import annotations

from typing import Any

from . import capacity, lifecycle

__all__ = ["post_fork", "pre_fork", "when_ready", "worker_exit"]

lifecycle.mark_forking_master()


def when_ready(server: Any) -> None:
    """Close what import-time code opened in the master (gunicorn ``when_ready``)."""
    lifecycle.close_in_master()


def pre_fork(server: Any, worker: Any) -> None:
    """Close what the master opened before each fork (gunicorn ``pre_fork``)."""
    lifecycle.close_in_master()


def post_fork(server: Any, worker: Any) -> None:
    """Give the new worker fresh pools and start connecting (gunicorn ``post_fork``)."""
    capacity.record_gunicorn_workers(getattr(server, "num_workers", None))
    lifecycle.after_fork_in_child()
    lifecycle.warm_up_all()


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's pools as it exits (gunicorn ``worker_exit``)."""
    lifecycle.close_all()
