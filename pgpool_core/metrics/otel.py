"""Pool metrics in OpenTelemetry's terms, per worker process.

The instruments are those of OpenTelemetry's semantic conventions for database
client connection pools (``db.client.connection.*``, experimental in the
conventions), recorded through ``opentelemetry-api`` only: install it with
``pip install psycopg-forksafe[opentelemetry]``. The application configures
the SDK and its exporter, as for any library instrumentation; until it does,
the API's no-op meter records nothing. Without ``opentelemetry-api`` nothing
is imported and :data:`recorder` is None.

Instruments, each with the attribute ``db.client.connection.pool.name`` (the
pool's ``name``; pools of one name in a process are added up):

=========================================  ===================  ===============
``db.client.connection.count``             UpDownCounter [#o]_  ``{connection}``
``db.client.connection.idle.max``          UpDownCounter [#o]_  ``{connection}``
``db.client.connection.idle.min``          UpDownCounter [#o]_  ``{connection}``
``db.client.connection.max``               UpDownCounter [#o]_  ``{connection}``
``db.client.connection.pending_requests``  UpDownCounter [#o]_  ``{request}``
``db.client.connection.timeouts``          Counter              ``{timeout}``
``db.client.connection.create_time``       Histogram            ``s``
``db.client.connection.wait_time``         Histogram            ``s``
``db.client.connection.use_time``          Histogram            ``s``
=========================================  ===================  ===============

.. [#o] Asynchronous (observable): read from this process's pools when the
   SDK collects, at no cost to requests.

``db.client.connection.count`` also has ``db.client.connection.state``:
``idle`` (in the pool, its reset maybe still in flight) or ``used`` (open, and
lent, or being checked or configured). Their sum is the number of sessions this
process holds open on the server. ``idle.min`` is ``min_size``; ``idle.max``
and ``max`` are ``max_size`` (idle connections above ``min_size`` are closed
after ``max_idle``). ``pending_requests`` counts the ``getconn()`` calls
waiting. ``wait_time`` is the time ``getconn()`` took (the check of the
connection included); ``use_time`` the time from ``getconn()`` returning to the
connection's return, however it comes back (``putconn()``, the end of a ``with
pool.connection()`` block, ``close()`` with ``close_returns``); ``create_time``
the time to connect and run ``configure``; ``timeouts`` the ``getconn()`` calls
that raised PoolTimeout.

Each worker process reports its own pools: the SDK must be set up in each
worker, after the fork (:func:`run_in_each_worker`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from importlib.metadata import version as _version
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _events
from .._events import PoolState

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = [
    "HISTOGRAM_BOUNDARIES",
    "INSTRUMENTATION_SCOPE",
    "POOL_NAME",
    "STATE",
    "Recorder",
    "recorder",
    "run_in_each_worker",
    "start_worker",
]

logger = logging.getLogger("pgpool.metrics")

#: The meter's instrumentation scope: the package that records (with the
#: version of the distribution, psycopg-forksafe).
INSTRUMENTATION_SCOPE = "pgpool_core"

#: The attributes of the semantic conventions.
POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

#: The histograms' bucket boundaries in seconds (an advice the SDK follows
#: unless a View says otherwise): a connection taken from the pool without
#: waiting is lent in microseconds, and ``timeout`` defaults to 30 s.
HISTOGRAM_BOUNDARIES = (
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
)


class Recorder(_events.Listener):
    """The synchronous instruments, recording the pools' events.

    The listener of :mod:`pgpool_core._events`: the pools call its methods
    per event. A lent connection remembers when it was lent in an attribute
    that only this class sets and reads, ``_pgpool_lent_at`` (cheaper than a
    weak mapping on every request).

    One exists per process when ``opentelemetry-api`` is installed
    (:data:`recorder`), subscribed when this module is imported (the core
    imports it then, see :mod:`pgpool_core._events`). Its methods take the
    pool's name; the attributes of each pool are made once.
    """

    __slots__ = ("wait_time", "use_time", "create_time", "timeouts", "_attributes")

    def __init__(self, meter: Meter) -> None:
        self._attributes: dict[str, dict[str, str]] = {}
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool",
            explicit_bucket_boundaries_advisory=HISTOGRAM_BOUNDARIES,
        )
        self.use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description=(
                "The time between borrowing a connection and returning it to the pool"
            ),
            explicit_bucket_boundaries_advisory=HISTOGRAM_BOUNDARIES,
        )
        self.create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection",
            explicit_bucket_boundaries_advisory=HISTOGRAM_BOUNDARIES,
        )
        self.timeouts = meter.create_counter(
            "db.client.connection.timeouts",
            unit="{timeout}",
            description=(
                "The number of connection timeouts that have occurred trying to"
                " obtain a connection from the pool"
            ),
        )

    def attributes(self, pool_name: str) -> dict[str, str]:
        """Return the attributes of the pool named *pool_name* (made once)."""
        attributes = self._attributes.get(pool_name)
        if attributes is None:
            attributes = self._attributes.setdefault(pool_name, {POOL_NAME: pool_name})
            # The pool's timeouts start at 0, not at the first one: a rate
            # can then be taken from the start.
            self.timeouts.add(0, attributes)
        return attributes

    def lent(self, conn: Any, pool_name: str, since: float) -> None:
        """Record the wait of a ``getconn()`` that started at *since* (monotonic)."""
        now = monotonic()
        conn._pgpool_lent_at = now
        self.wait_time.record(
            now - since, self._attributes.get(pool_name) or self.attributes(pool_name)
        )

    def returned(self, conn: Any, pool_name: str) -> None:
        """Record how long *conn*, now given back, was used."""
        lent_at = getattr(conn, "_pgpool_lent_at", 0.0)
        if lent_at:
            conn._pgpool_lent_at = 0.0
            self.use_time.record(
                monotonic() - lent_at,
                self._attributes.get(pool_name) or self.attributes(pool_name),
            )

    def timed_out(self, pool_name: str) -> None:
        """Count a ``getconn()`` that raised PoolTimeout."""
        self.timeouts.add(
            1, self._attributes.get(pool_name) or self.attributes(pool_name)
        )

    def connected(self, pool_name: str, seconds: float) -> None:
        """Record a new connection made in *seconds*."""
        self.create_time.record(
            seconds, self._attributes.get(pool_name) or self.attributes(pool_name)
        )


# -- the asynchronous instruments: read from the pools at collection time -------


def _by_name(read: Callable[[PoolState], int]) -> dict[str, int]:
    """Return read(state) for each open pool, summed over pools of a name."""
    totals: dict[str, int] = {}
    for state in _events.pool_states():
        totals[state.name] = totals.get(state.name, 0) + read(state)
    return totals


def _observe_count(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    for state, read in (("idle", lambda s: s.idle), ("used", lambda s: s.used)):
        for name, value in _by_name(read).items():
            yield Observation(value, {POOL_NAME: name, STATE: state})


def _observer(read: Callable[[PoolState], int]) -> Callable[..., Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        for name, value in _by_name(read).items():
            yield Observation(value, {POOL_NAME: name})

    return observe


def _make_recorder() -> Recorder | None:
    try:
        from opentelemetry import metrics as otel_metrics
    except ImportError:
        return None
    meter = otel_metrics.get_meter(INSTRUMENTATION_SCOPE, _version("psycopg-forksafe"))
    meter.create_observable_up_down_counter(
        "db.client.connection.count",
        callbacks=[_observe_count],
        unit="{connection}",
        description=(
            "The number of connections that are currently in state described by"
            " the state attribute"
        ),
    )
    for name, read, description in (
        (
            "db.client.connection.idle.max",
            lambda state: state.max_size,
            "The maximum number of idle open connections allowed",
        ),
        (
            "db.client.connection.idle.min",
            lambda state: state.min_size,
            "The minimum number of idle open connections allowed",
        ),
        (
            "db.client.connection.max",
            lambda state: state.max_size,
            "The maximum number of open connections allowed",
        ),
    ):
        meter.create_observable_up_down_counter(
            name,
            callbacks=[_observer(read)],
            unit="{connection}",
            description=description,
        )
    meter.create_observable_up_down_counter(
        "db.client.connection.pending_requests",
        callbacks=[_observer(lambda state: state.pending)],
        unit="{request}",
        description="The number of current pending requests for an open connection",
    )
    return Recorder(meter)


#: The listener of the pools' events, or None without ``opentelemetry-api``
#: (then nothing of OpenTelemetry is imported, and the pools' hot path only
#: finds no listener).
recorder: Recorder | None = _make_recorder()
if recorder is not None:
    _events.subscribe(recorder)


# -- the SDK, set up in each worker -------------------------------------------------

F = TypeVar("F", bound=Callable[[], object])

_setups: list[Callable[[], object]] = []
# The process each setup last ran in, by position in _setups.
_ran_in: dict[int, int] = {}


def run_in_each_worker(setup: F) -> F:
    """Run *setup* (no arguments) once in each worker process, after the fork.

    For the application's OpenTelemetry SDK: a ``MeterProvider`` and its
    exporter's thread made in a server's master would be copied into the
    workers without their thread (and no thread may run in a uWSGI master),
    and the workers would all report as one instance. Registered in
    ``gunicorn.conf.py`` or the WSGI module; usable as a decorator.

    In a forking master (gunicorn with :mod:`pgpool_core.servers.gunicorn` imported,
    uWSGI's master) *setup* waits for the server hooks, which run it in each
    new worker before its pools warm up (after the monkey-patching of a
    gevent or eventlet worker). Anywhere else (a uWSGI ``lazy-apps`` worker,
    a script, a test) it runs now: a Celery prefork worker imports the app
    before it is marked as a forking master, so register it there from
    Celery's ``worker_process_init`` signal, in each child. It runs with
    the servers' stop signals blocked, so that the threads it starts inherit
    that, as the pools' threads do: a thread that took SIGINT in a uWSGI
    worker would exit there. An exception is logged, never raised: a worker
    starts without metrics rather than not at all.
    """
    _setups.append(setup)
    if not _events.in_forking_master():
        _run(len(_setups) - 1)
    return setup


def start_worker() -> None:
    """Run the setups registered with :func:`run_in_each_worker` (server hooks).

    Each runs once per process; the hooks of each server call this.
    """
    for index in range(len(_setups)):
        _run(index)


def _run(index: int) -> None:
    pid = os.getpid()
    if _ran_in.get(index) == pid:
        return
    _ran_in[index] = pid
    setup = _setups[index]
    try:
        with _events.stop_signals_blocked():
            setup()
    except Exception:
        logger.exception("metrics setup %r failed in process %d", setup, pid)
