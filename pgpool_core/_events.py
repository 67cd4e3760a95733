"""The pools' events, for what observes them (:mod:`pgpool_core.metrics.otel`).

The core publishes here and imports nothing of its observers; this module
imports nothing of the core, so that every module of it can import this one.

- Per event, on the hot path: the core calls a method of ``listener``
  (a :class:`Listener`: lent, returned, timed out, connected) after one
  ``if listener is not None``: nothing more when no observer subscribed
  (:func:`subscribe`).
- At collection time: an observer reads this process's open pools with
  ``pool_states()`` (a list of :class:`PoolState`), and asks
  ``in_forking_master()`` and ``stop_signals_blocked()`` of the process;
  ``pgpool_core._process`` supplies them (``supply()``) when it is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

__all__ = [
    "Listener",
    "PoolState",
    "in_forking_master",
    "listener",
    "pool_states",
    "stop_signals_blocked",
    "subscribe",
    "supply",
]


class Listener:
    """The calls the pools make per event; *pool_name* is the pool's ``name``.

    A listener overrides those it hears; the others do nothing.
    """

    __slots__ = ()

    def lent(self, conn: Any, pool_name: str, since: float) -> None:
        """*conn* was lent by a ``getconn()`` that started at *since* (monotonic)."""

    def returned(self, conn: Any, pool_name: str) -> None:
        """*conn* came back, however (``putconn()``, ``close_returns``)."""

    def timed_out(self, pool_name: str) -> None:
        """A ``getconn()`` raised PoolTimeout (ConnectFailed included)."""

    def connected(self, pool_name: str, seconds: float) -> None:
        """A new connection was made, and configured, in *seconds*."""


#: The subscribed listener, or None (no observer): the hot path checks it.
listener: Listener | None = None


def subscribe(new: Listener) -> None:
    """Make *new* the listener of every pool's events (replacing any other)."""
    global listener
    listener = new


class PoolState(NamedTuple):
    """One open pool of this process, as it stands when an observer reads it."""

    #: The pool's ``name``.
    name: str
    #: Connections in the pool (its reset maybe still in flight).
    idle: int
    #: Open connections not in the pool: lent, or being checked or configured.
    used: int
    min_size: int
    max_size: int
    #: ``getconn()`` calls waiting (not those that already timed out).
    pending: int


def _no_pools() -> list[PoolState]:
    return []


def _not_a_master() -> bool:
    return False


#: Return the state of each open pool of this process.
pool_states: Callable[[], list[PoolState]] = _no_pools
#: Return True in a process that will fork workers (a server's master).
in_forking_master: Callable[[], bool] = _not_a_master
#: Block the servers' stop signals in this thread while in the context.
stop_signals_blocked: Callable[[], AbstractContextManager[None]] = (
    contextlib.nullcontext
)


def supply(
    *,
    states: Callable[[], list[PoolState]],
    forking_master: Callable[[], bool],
    signals_blocked: Callable[[], AbstractContextManager[None]],
) -> None:
    """Give observers the core's readings (``pgpool_core._process``, once)."""
    global pool_states, in_forking_master, stop_signals_blocked
    pool_states = states
    in_forking_master = forking_master
    stop_signals_blocked = signals_blocked


def _opentelemetry_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False


# The metrics' promise (docs/metrics.rst): with opentelemetry-api installed,
# every pool records through it, whether or not the application imports
# pgpool_core.metrics (it sets up the SDK, as for any library's
# instrumentation); without it, nothing of the metrics nor of OpenTelemetry is
# imported. This is the one place the core names its observer: loaded by
# name, it subscribes itself.
if _opentelemetry_installed():
    importlib.import_module("pgpool_core.metrics.otel")
