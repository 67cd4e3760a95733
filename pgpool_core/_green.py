"""Under gevent and eventlet: psycopg waits that yield, chosen after the patch.

psycopg picks its wait function once, when ``psycopg.waiting`` is imported
(see that module): ``wait_c`` unless ``PSYCOPG_WAIT_FUNC`` names another, or
gevent has already patched ``select``, in which case it waits with
``select.poll``, which gevent makes cooperative. Its connection wait uses the
``selectors.DefaultSelector`` of that moment. A server that patches the
worker after the app was imported (gunicorn's gevent and eventlet workers,
with ``preload_app`` or a ``gunicorn.conf.py`` that imports these packages)
leaves psycopg with waits that block the whole worker: one query holds every
request the worker serves. eventlet is never detected by psycopg.

:func:`after_patch` redoes that choice in a patched process, and runs what
adapters registered with :func:`on_patched` (``django_pgpool`` gives each
greenlet its own Django connections there). The server hooks call it when the
patch happens (gunicorn's, uWSGI's with its gevent loop engine, Celery's);
the pools call it too, before they make this process's pool, and replace one
made before the patch (``pgpool_core._process.ProcessPools.current()``), for
a patch that no hook saw.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import sys
from collections.abc import Callable
from typing import Any

from ._reset import use_connect_selector, use_wait_function

__all__ = [
    "after_gevent_patch",
    "after_patch",
    "on_patched",
    "patch_pending",
    "patched_by",
    "use_cooperative_wait",
]

logger = logging.getLogger("pgpool.green")

_callbacks: list[Callable[[], None]] = []

# The process where after_patch() last ran.
_done_in: int | None = None


def patched_by() -> str | None:
    """Return ``"gevent"`` or ``"eventlet"`` if it patched ``select`` here, or None.

    Neither library is imported: only one already imported can have patched.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("select"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("select"):
        return "eventlet"
    return None


def patch_pending() -> bool:
    """Return True in a process that its server will patch later, not patched yet.

    That is a worker of uWSGI's gevent loop engine with ``gevent-monkey-patch``
    (``gevent-early-monkey-patch`` patches before the app is imported): uWSGI
    patches it as its loop starts, after the app (with ``lazy-apps``) and the
    postfork hooks ran. A pool made before would keep real threads and
    blocking waits.
    """
    uwsgi: Any = sys.modules.get("uwsgi")
    if uwsgi is None:
        return False
    try:
        options = uwsgi.opt
    except AttributeError:  # pragma: no cover - not uWSGI's module
        return False
    pending = options.get("gevent") and options.get("gevent-monkey-patch")
    return bool(pending) and patched_by() is None


def use_cooperative_wait() -> bool:
    """Make psycopg wait through the patched ``select``; return True if it changed.

    What psycopg itself picks when gevent patched before it was imported:
    ``wait_poll`` (``wait_select`` where the patched module has no ``poll``,
    as under eventlet), and the patched ``DefaultSelector`` for connecting.
    Nothing changes in a process that nothing patched, or when ``psycopg`` is
    not imported yet (it then chooses for itself); a wait function named by
    ``PSYCOPG_WAIT_FUNC`` is the user's choice, and kept.
    """
    waiting: Any = sys.modules.get("psycopg.waiting")
    if waiting is None or not patched_by():
        return False
    changed = use_connect_selector(waiting, selectors.DefaultSelector)
    if "PSYCOPG_WAIT_FUNC" not in os.environ:
        name = "poll" if hasattr(select, "poll") else "select"
        changed = use_wait_function(waiting, name) or changed
    if changed:
        logger.debug(
            "psycopg waits with %s in process %d", waiting.wait.__name__, os.getpid()
        )
    return changed


def on_patched(callback: Callable[[], None]) -> None:
    """Have :func:`after_patch` call *callback* (once each, in registration order).

    If it ran in this process already, *callback* is called now.
    """
    if callback in _callbacks:
        return
    _callbacks.append(callback)
    if _done_in == os.getpid():
        callback()


def after_patch() -> None:
    """In a process that gevent or eventlet patched, make psycopg and the adapters fit.

    Does nothing where nothing is patched, and runs once per process. Call it
    after the patch and before the process serves (gunicorn's
    ``post_worker_init``, Celery's ``worker_init``).
    """
    global _done_in
    if _done_in == os.getpid() or patched_by() is None:
        return
    _done_in = os.getpid()
    use_cooperative_wait()
    for callback in list(_callbacks):
        callback()


def after_gevent_patch(then: Callable[[], None] | None = None) -> None:
    """Run :func:`after_patch`, then *then*, as soon as gevent's ``patch_all()``
    is done here.

    For a process that gevent will patch later (a gunicorn gevent worker at
    ``post_fork``, a worker of uWSGI's gevent loop engine at ``postfork``);
    gevent announces the end of its patching with an event. *then* runs once,
    in the patching process (the server hooks' warm-up).
    """
    from gevent import events

    pending = [os.getpid()]  # emptied once run (not unsubscribed: gevent is
    # iterating over its subscribers then)

    def on_event(event: object) -> None:
        if isinstance(event, events.GeventDidPatchAllEvent) and os.getpid() in pending:
            pending.clear()
            after_patch()
            if then is not None:
                then()

    events.subscribers.append(on_event)
