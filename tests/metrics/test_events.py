"""The seam between the pools and the metrics: the pools' events (pgpool_core._events).

The core publishes to a listener it does not know and imports nothing of the
metrics; the metrics read the pools through the seam and the public API only.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from psycopg_pool import PoolTimeout

from pgpool_core import ForkSafePool, _events
from tests.metrics.test_instruments import BLOCK_OPENTELEMETRY, run_python_json
from tests.test_layout import MISSION, _modules, import_graph, loaded_by_name


def test_the_core_imports_nothing_of_the_metrics() -> None:
    """No module of pgpool_core but the metrics and the server hooks imports the
    metrics (anywhere in it, or by name); the one exception is the seam, which
    loads them by name, only with opentelemetry (tests/test_layout.py reads the
    imports)."""
    graph, modules = import_graph(), _modules()
    named = {
        (module, target)
        for module in graph
        if module.startswith("pgpool_core")
        and not module.startswith(("pgpool_core.metrics", "pgpool_core.servers"))
        for target in graph[module] | loaded_by_name(modules[module])
        if target.startswith("pgpool_core.metrics")
    }
    assert named == {("pgpool_core._events", "pgpool_core.metrics.otel")}
    assert set(MISSION) <= set(graph)


def test_the_metrics_import_only_the_public_core_and_the_seam() -> None:
    internal = sorted(
        f"{module}: {target}"
        for module, targets in import_graph().items()
        if module.startswith("pgpool_core.metrics")
        for target in targets
        if not target.startswith(("pgpool_core.metrics", "pgpool_core._events"))
        and any(part.startswith("_") for part in target.split(".")[1:])
    )
    assert internal == []


# -- the seam, seen from a process -------------------------------------------------

USE_POOL_ONLY = """
import json, sys
from pgpool_core import ForkSafePool, _events
with ForkSafePool(sys.argv[1], min_size=1) as pool:
    with pool.connection() as conn:
        conn.execute("SELECT 1")
otel = sys.modules.get("pgpool_core.metrics.otel")
print(json.dumps({
    "metrics": sorted(m for m in sys.modules if m.startswith("pgpool_core.metrics")),
    "listener": _events.listener is not None,
    "is_the_recorder": otel is not None and _events.listener is otel.recorder,
}))
"""


def _run(dsn: str, opentelemetry: str) -> Any:
    block = BLOCK_OPENTELEMETRY if opentelemetry == "blocked" else ""
    return run_python_json(block + USE_POOL_ONLY, dsn)


def test_without_opentelemetry_the_metrics_are_not_loaded(dsn: str) -> None:
    assert _run(dsn, "blocked") == {
        "metrics": [],
        "listener": False,
        "is_the_recorder": False,
    }


def test_with_opentelemetry_the_pools_record_unasked(dsn: str) -> None:
    # The application sets up the SDK as for any library; it need not
    # import pgpool_core.metrics for the pools to record.
    assert _run(dsn, "installed") == {
        "metrics": ["pgpool_core.metrics", "pgpool_core.metrics.otel"],
        "listener": True,
        "is_the_recorder": True,
    }


# -- the events and the readings -----------------------------------------------------


class Events(_events.Listener):
    """A listener that writes down what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def lent(self, conn: Any, pool_name: str, since: float) -> None:
        self.heard.append(("lent", pool_name))

    def returned(self, conn: Any, pool_name: str) -> None:
        self.heard.append(("returned", pool_name))

    def timed_out(self, pool_name: str) -> None:
        self.heard.append(("timed_out", pool_name))

    def connected(self, pool_name: str, seconds: float) -> None:
        self.heard.append(("connected", pool_name))


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    """A listener of this test's own, the metrics' restored after it."""
    listener = Events()
    monkeypatch.setattr(_events, "listener", None)
    _events.subscribe(listener)
    return listener


def test_a_listener_hears_each_event_of_the_pools(dsn: str, events: Events) -> None:
    with ForkSafePool(
        dsn, name="heard", min_size=1, max_size=1, timeout=0.1, reset=None
    ) as pool:
        pool.wait()
        with pool.connection():
            with pytest.raises(PoolTimeout):
                pool.getconn()

    assert events.heard == [
        ("connected", "heard"),
        ("lent", "heard"),
        ("timed_out", "heard"),
        ("returned", "heard"),
    ]


def test_the_readings_leave_out_a_client_that_timed_out(dsn: str) -> None:
    with ForkSafePool(
        dsn, name="readings", min_size=1, max_size=2, timeout=0.1
    ) as pool:
        pool.wait()
        held = [pool.getconn(), pool.getconn()]
        with pytest.raises(PoolTimeout):
            pool.getconn()
        (state,) = [s for s in _events.pool_states() if s.name == "readings"]
        stats = pool.get_stats()
        for conn in held:
            pool.putconn(conn)

    assert state == _events.PoolState("readings", 0, 2, 1, 2, pending=0)
    # psycopg_pool keeps it in its queue until a connection comes back.
    assert stats["requests_waiting"] == 1


def test_the_wait_heard_is_all_of_the_getconn(dsn: str, events: Events) -> None:
    """``lent``'s *since* is when ``getconn()`` started: the wait heard (what the
    metrics record as ``wait_time``) includes what getconn() did before it took
    a connection; here taking back the loan of a connection dropped without
    being given back (its warning, written by a slow log handler)."""
    waits: list[float] = []

    def lent(conn: Any, pool_name: str, since: float) -> None:
        waits.append(time.monotonic() - since)

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "without being given back" in record.getMessage():
                time.sleep(0.3)

    events.lent = lent  # type: ignore[method-assign]
    slow = Slow()
    logger = logging.getLogger("pgpool.pool")
    logger.addHandler(slow)
    try:
        with ForkSafePool(
            dsn, name="waited", min_size=1, max_size=1, timeout=5
        ) as pool:
            pool.wait()
            conn = pool.getconn()
            del conn  # collected while lent: taken back by the next getconn()
            waits.clear()
            t0 = time.monotonic()
            pool.putconn(pool.getconn())
            elapsed = time.monotonic() - t0
    finally:
        logger.removeHandler(slow)

    assert elapsed >= 0.3
    assert waits and waits[0] >= 0.3, (elapsed, waits)
