"""The seam between the pools and the metrics: the pools' events (pgpool_core._events).

The core publishes to a listener it does not know and imports nothing of the
metrics; the metrics read the pools through the seam and the public API only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import PoolTimeout

from pgpool_core import ForkSafePool, _events
from tests.conftest import REPO
from tests.metrics.test_instruments import BLOCK_OPENTELEMETRY, run_python_json

PACKAGE = REPO / "pgpool_core"


def _imports(path: Path) -> Iterator[str]:
    """Yield the absolute name of each module *path* imports, anywhere in it.

    Function-level imports and ``importlib.import_module("...")`` included;
    ``from . import x`` gives ``pgpool_core.x``.
    """
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    package = parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            for alias in node.names:
                yield f"{module}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield str(node.args[0].value)


def _core_modules() -> list[Path]:
    """The core: every module of pgpool_core but the metrics and server hooks."""
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in ("metrics", "servers")
    ]


def test_the_core_imports_nothing_of_the_metrics() -> None:
    named = {
        str(path.relative_to(REPO)): name
        for path in _core_modules()
        for name in _imports(path)
        if name.startswith("pgpool_core.metrics")
    }
    # The one exception: the seam loads them by name, only with opentelemetry.
    assert named == {"pgpool_core/_events.py": "pgpool_core.metrics.otel"}
    assert {"pool.py", "_psycopg_pool.py", "_process.py", "_reset.py"} <= {
        path.name for path in _core_modules()
    }


def test_the_metrics_import_only_the_public_core_and_the_seam() -> None:
    internal = sorted(
        f"{path.name}: {name}"
        for path in sorted((PACKAGE / "metrics").glob("*.py"))
        for name in _imports(path)
        if name.startswith("pgpool_core.")
        and not name.startswith(("pgpool_core.metrics.", "pgpool_core._events"))
        and any(part.startswith("_") for part in name.split(".")[1:])
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
