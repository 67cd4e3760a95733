"""The pool's instruments, in one process, against the real server.

The SDK's MeterProvider is set once for the test process (OpenTelemetry's
global provider cannot be replaced); each test has a pool of its own name and
reads that pool's series only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    InMemoryMetricReader,
    MetricsData,
    Sum,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from psycopg_pool import PoolTimeout

from pgpool_core import ConfigurationError, ForkSafePool
from pgpool_core.metrics import otel as pool_metrics
from pgpool_core.metrics.prometheus import (
    PrometheusMultiprocessExporter,
    mark_dead_processes,
    prometheus_name,
)
from tests.harness.interpreter import run_python
from tests.harness.postgres import PgServer

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

#: The semantic conventions' table: name -> (instrument, unit, attributes).
CONVENTIONS = {
    "db.client.connection.count": ("updowncounter", "{connection}", {POOL_NAME, STATE}),
    "db.client.connection.idle.max": ("updowncounter", "{connection}", {POOL_NAME}),
    "db.client.connection.idle.min": ("updowncounter", "{connection}", {POOL_NAME}),
    "db.client.connection.max": ("updowncounter", "{connection}", {POOL_NAME}),
    "db.client.connection.pending_requests": (
        "updowncounter",
        "{request}",
        {POOL_NAME},
    ),
    "db.client.connection.timeouts": ("counter", "{timeout}", {POOL_NAME}),
    "db.client.connection.create_time": ("histogram", "s", {POOL_NAME}),
    "db.client.connection.wait_time": ("histogram", "s", {POOL_NAME}),
    "db.client.connection.use_time": ("histogram", "s", {POOL_NAME}),
}


@pytest.fixture(scope="session")
def reader() -> InMemoryMetricReader:
    """The SDK's in-memory reader of this process's global MeterProvider."""
    assert pool_metrics.recorder is not None, "opentelemetry-api is a test dependency"
    in_memory = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[in_memory]))
    return in_memory


class Readings:
    """One collection, for one pool: kinds and data points by instrument name."""

    def __init__(self, data: MetricsData, pool: str) -> None:
        self.scopes: set[tuple[str, str | None]] = set()
        self.kinds: dict[str, tuple[str, str, set[str]]] = {}
        self.points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                if scope.name != pool_metrics.INSTRUMENTATION_SCOPE:
                    continue
                self.scopes.add((scope.name, scope.version))
                for metric in scope_metrics.metrics:
                    points = [
                        p
                        for p in metric.data.data_points
                        if (p.attributes or {}).get(POOL_NAME) == pool
                    ]
                    if not points:
                        continue
                    self.kinds[metric.name] = (
                        _kind(metric.data),
                        metric.unit or "",
                        set().union(*(set(p.attributes or {}) for p in points)),
                    )
                    self.points[metric.name] = [
                        (dict(p.attributes or {}), p) for p in points
                    ]

    def value(self, name: str, **match: str) -> Any:
        (point,) = [
            p
            for attributes, p in self.points[name]
            if all(attributes.get(k) == v for k, v in match.items())
        ]
        return point.value if hasattr(point, "value") else point

    def count(self, name: str, state: str) -> int:
        return int(self.value(name, **{STATE: state}))


def _kind(data: Any) -> str:
    if isinstance(data, Histogram):
        return "histogram"
    assert isinstance(data, Sum)
    return "counter" if data.is_monotonic else "updowncounter"


def read(reader: InMemoryMetricReader, pool: str) -> Readings:
    data = reader.get_metrics_data()
    assert data is not None
    return Readings(data, pool)


@pytest.fixture
def make_pool(dsn: str) -> Iterator[Any]:
    made: list[ForkSafePool[Any]] = []

    def make(name: str, **options: Any) -> ForkSafePool[Any]:
        options.setdefault("min_size", 2)
        options.setdefault("max_size", 3)
        pool: ForkSafePool[Any] = ForkSafePool(dsn, name=name, **options)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def test_instruments_follow_the_semantic_conventions(
    reader: InMemoryMetricReader, make_pool: Any
) -> None:
    pool = make_pool("semconv", timeout=0.1)
    pool.wait()
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    held = [pool.getconn() for _ in range(3)]
    with pytest.raises(PoolTimeout):
        pool.getconn()
    for conn in held:
        pool.putconn(conn)

    readings = read(reader, "semconv")

    assert readings.kinds == {
        name: (kind, unit, attributes)
        for name, (kind, unit, attributes) in CONVENTIONS.items()
    }
    assert readings.scopes == {("pgpool_core", version("psycopg-forksafe"))}


def test_counts_are_the_sessions_postgresql_sees(
    reader: InMemoryMetricReader, make_pool: Any, pg_server: PgServer
) -> None:
    application_name = f"pgpool-counts-{os.getpid()}"
    pool = make_pool(
        "counts", min_size=3, max_size=5, kwargs={"application_name": application_name}
    )
    pool.wait()
    sessions = pg_server.sessions(application_name)

    borrowed = [pool.getconn(), pool.getconn()]
    during = read(reader, "counts")
    for conn in borrowed:
        pool.putconn(conn)
    after = read(reader, "counts")

    count = "db.client.connection.count"
    assert (during.count(count, "idle"), during.count(count, "used")) == (1, 2)
    assert (after.count(count, "idle"), after.count(count, "used")) == (3, 0)
    assert sessions == 3
    assert during.value("db.client.connection.idle.min") == 3
    assert during.value("db.client.connection.idle.max") == 5
    assert during.value("db.client.connection.max") == 5


def test_waits_uses_connects_and_timeouts_are_recorded(
    reader: InMemoryMetricReader, make_pool: Any
) -> None:
    pool = make_pool("events", min_size=1, max_size=1, timeout=0.5)
    pool.wait()
    conn = pool.getconn()
    time.sleep(0.05)
    pool.putconn(conn)

    held = pool.getconn()
    pending: list[int] = []
    waiter = threading.Thread(target=_expect_timeout, args=(pool,))
    waiter.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not pending[-1:] == [1]:
        pending.append(read(reader, "events").value(PENDING))
    waiter.join()
    pool.putconn(held)
    readings = read(reader, "events")

    assert pending[-1] == 1  # the waiting getconn(), while it waited
    assert readings.value(PENDING) == 0
    assert readings.value("db.client.connection.timeouts") == 1
    waits = readings.value("db.client.connection.wait_time")
    uses = readings.value("db.client.connection.use_time")
    connects = readings.value("db.client.connection.create_time")
    assert waits.count == 2  # those that got a connection
    assert uses.count == 2
    assert uses.max >= 0.05
    assert connects.count == 1
    assert 0 < connects.sum < 10


PENDING = "db.client.connection.pending_requests"


def _expect_timeout(pool: ForkSafePool[Any]) -> None:
    with pytest.raises(PoolTimeout):
        pool.getconn()


def test_use_ends_however_the_connection_comes_back(
    reader: InMemoryMetricReader, make_pool: Any
) -> None:
    pool = make_pool("returns", min_size=1, max_size=2, close_returns=True)
    pool.getconn().close()  # close_returns: back to the pool
    with pool.connection():
        pass

    assert read(reader, "returns").value("db.client.connection.use_time").count == 2


# -- without the SDK, without the API ------------------------------------------

BLOCK_OPENTELEMETRY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
"""

USE_POOL = """
import json, sys
from pgpool_core import ForkSafePool
from pgpool_core.metrics import otel as metrics
with ForkSafePool(sys.argv[1], min_size=1) as pool:
    with pool.connection() as conn:
        conn.execute("SELECT 1")
otel = sys.modules.get("opentelemetry.metrics")
print(json.dumps({
    "recorder": metrics.recorder is not None,
    "imported": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "provider": otel and type(otel.get_meter_provider()).__name__,
}))
"""


def run_python_json(code: str, *args: str) -> Any:
    return json.loads(run_python(code, *args, warnings_as_errors=True))


def test_without_opentelemetry_nothing_is_imported(dsn: str) -> None:
    result = run_python_json(BLOCK_OPENTELEMETRY + USE_POOL, dsn)
    assert result == {"recorder": False, "imported": [], "provider": None}


def test_the_api_alone_records_through_its_no_op_meter(dsn: str) -> None:
    result = run_python_json(USE_POOL, dsn)
    assert result["recorder"] is True
    # No SDK: the API's proxy provider, whose instruments record nothing.
    assert result["provider"] == "_ProxyMeterProvider"


# -- run_in_each_worker ------------------------------------------------------------

WORKER_SETUP = """
import json, os, signal, sys
from pgpool_core import _process as lifecycle
from pgpool_core.metrics import otel as metrics

ran = []

def setup():
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    ran.append((os.getpid(), lifecycle.STOP_SIGNALS <= blocked))

def failing():
    raise RuntimeError("no collector")

if sys.argv[1] == "master":
    lifecycle.mark_forking_master()
metrics.run_in_each_worker(failing)
assert metrics.run_in_each_worker(setup) is setup
before_fork = list(ran)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    metrics.start_worker()
    metrics.start_worker()
    os.write(write, json.dumps(ran).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(read, 65536))
print(json.dumps({"parent": os.getpid(), "before_fork": before_fork, "child": child}))
"""


def test_setup_waits_for_the_fork_in_a_forking_master() -> None:
    result = run_python_json(WORKER_SETUP, "master")
    assert result["before_fork"] == []
    # Once in the worker, with the stop signals blocked; the failing setup
    # before it was logged, not raised.
    ((pid, blocked),) = result["child"]
    assert pid != result["parent"]
    assert blocked is True


def test_setup_runs_at_once_elsewhere() -> None:
    result = run_python_json(WORKER_SETUP, "plain")
    assert result["before_fork"] == [[result["parent"], True]]
    # A process forked from it runs it again when a server hook asks.
    assert len(result["child"]) == 2


# -- Prometheus ---------------------------------------------------------------------


def test_prometheus_names() -> None:
    assert (
        prometheus_name("db.client.connection.wait_time", "s")
        == "db_client_connection_wait_time_seconds"
    )
    assert (
        prometheus_name("db.client.connection.count", "{connection}")
        == "db_client_connection_count"
    )
    assert prometheus_name("queue.size", "By") == "queue_size_bytes"


def test_exporter_writes_what_the_sdk_collected(
    reader: InMemoryMetricReader,
    make_pool: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    pool = make_pool("exported")
    pool.wait()
    with pool.connection():
        pass
    data = reader.get_metrics_data()
    assert data is not None
    exporter = PrometheusMultiprocessExporter()

    exporter.export(data)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    text = generate_latest(registry).decode()

    label = 'db_client_connection_pool_name="exported"'
    assert (
        f"db_client_connection_count{{{label},db_client_connection_state="
        f'"idle",pid="{os.getpid()}"}} 2.0'
    ) in text
    assert f"db_client_connection_wait_time_seconds_count{{{label}}} 1.0" in text
    assert f"db_client_connection_timeouts_total{{{label}}} 0.0" in text
    assert "# TYPE db_client_connection_use_time_seconds histogram" in text
    exporter.shutdown()
    assert not list(tmp_path.glob("gauge_liveall_*.db"))


def test_exporter_needs_its_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR"):
        PrometheusMultiprocessExporter(str(tmp_path / "missing"))


def test_dead_processes_leave_the_scrape(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    for pid in (dead_pid, os.getpid()):
        (tmp_path / f"gauge_liveall_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")

    assert mark_dead_processes(str(tmp_path)) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            f"counter_{dead_pid}.db",
            f"counter_{os.getpid()}.db",
            f"gauge_liveall_{os.getpid()}.db",
        ]
    )
