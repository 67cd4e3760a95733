"""Hooks for uWSGI: import this module in the WSGI file (or uWSGI ``import =``).

Under uWSGI it registers a ``uwsgidecorators.postfork`` function that gives each
worker fresh pools, runs the setups of
:func:`pgpool_core.metrics.otel.run_in_each_worker` and starts connecting
(``pgpool_core._process`` closes them when the worker exits, as in any
process). With uWSGI's gevent loop engine (``gevent`` and
``gevent-monkey-patch``), which patches each worker after that hook, the last
two wait for the patch, and psycopg's waits are chosen again then (see
:mod:`pgpool_core._green`). Outside uWSGI it does nothing,
so the import is safe in code that also runs under gunicorn, in tests or in a
shell.

The hooks only warm up and tidy: uWSGI does not call postfork functions for the
first worker under ``lazy-apps``, and fork safety does not depend on them.
"""

from __future__ import annotations

import sys

from .. import _green, _process
from ..metrics import otel

__all__ = ["running_under_uwsgi"]


def running_under_uwsgi() -> bool:
    """Return True inside a uWSGI process."""
    # The uwsgi module is built into the uWSGI binary; pip's uWSGI package
    # installs only uwsgidecorators, which imports it.
    return "uwsgi" in sys.builtin_module_names or "uwsgi" in sys.modules


def _postfork() -> None:
    _process.after_fork_in_child()
    if _green.patch_pending():
        # uWSGI's gevent loop engine patches each worker as its loop starts,
        # after this hook: threads started now would be real ones, and
        # psycopg's waits would block the whole worker.
        _green.after_gevent_patch(then=_start_worker)
    else:
        _start_worker()


def _start_worker() -> None:
    otel.start_worker()
    _process.warm_up_all()


if running_under_uwsgi():
    import uwsgidecorators

    uwsgidecorators.postfork(_postfork)
    if _green.patch_pending() and not _process.in_forking_master():
        # Imported in a worker (lazy-apps), whose patch comes later.
        _green.after_gevent_patch()
