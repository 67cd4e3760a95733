"""What the pool metrics cost each request, in microseconds of CPU, in one process.

``python benchmarks/metrics_cost.py [N] [ROUNDS]``, against ``BENCH_DSN`` or a
throwaway TLS cluster. Three modes, each in a fresh interpreter, their rounds
interleaved:

- ``absent``: ``opentelemetry`` cannot be imported (as without the extra), so
  the pools' events have no listener (``pgpool_core._events``): the hot path's
  None checks only;
- ``api``: ``opentelemetry-api`` without an SDK: the API's no-op (proxy)
  instruments;
- ``sdk``: the SDK's ``MeterProvider`` with an ``InMemoryMetricReader``
  (collected once at the end, so that the callbacks run too).

Two loops, N requests each: ``bare`` borrows and returns a connection with
``with pool.connection()`` and ``reset=None`` (the pool's own path, where the
metrics' share is largest); ``query`` runs ``SELECT 1`` in the block with the
default reset. CPU is the process's (all threads); each figure is the median
of the rounds, with the spread (min-max) of the difference to ``absent``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODES = ("absent", "api", "sdk")

# Run in the child: one mode, both loops; prints JSON.
CHILD = r"""
import json, sys, time
mode, dsn, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "absent":
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(name)
    sys.meta_path.insert(0, Block())
elif mode == "sdk":
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
from pgpool_core import ForkSafePool
from pgpool_core.metrics import otel as pgmetrics
assert (pgmetrics.recorder is None) == (mode == "absent"), mode

def settle(pool):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s = pool.get_stats()
        if s["pool_available"] >= s["pool_size"]:
            return
        time.sleep(0.0002)

def timed(pool, once):
    for _ in range(200):
        once()
    settle(pool)
    cpu0 = time.process_time()
    for _ in range(n):
        once()
    settle(pool)
    return (time.process_time() - cpu0) / n * 1e6

out = {}
with ForkSafePool(dsn, name="bare", min_size=2, max_size=4, reset=None) as pool:
    pool.wait()
    def bare():
        with pool.connection():
            pass
    out["bare"] = timed(pool, bare)
with ForkSafePool(dsn, name="query", min_size=2, max_size=4) as pool:
    pool.wait()
    def query():
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    out["query"] = timed(pool, query)
if mode == "sdk":
    assert any(reader.get_metrics_data().resource_metrics)
print(json.dumps(out))
"""


def measure(dsn: str, n: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {m: {} for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, mode, dsn, str(n)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            for loop, value in json.loads(proc.stdout).items():
                results[mode].setdefault(loop, []).append(value)
    return results


def report(results: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = [f"{'loop':<7} {'mode':<7} {'CPU us/request':>15} {'+ vs absent':>12}"]
    for loop in results["absent"]:
        base = results["absent"][loop]
        for mode in MODES:
            values = results[mode][loop]
            diffs = [v - b for v, b in zip(values, base, strict=True)]
            median, low, high = statistics.median(diffs), min(diffs), max(diffs)
            extra = f"{median:+.1f} ({low:+.1f}..{high:+.1f})"
            if mode == "absent":
                extra = ""
            lines.append(
                f"{loop:<7} {mode:<7} {statistics.median(values):>15.1f} {extra:>12}"
            )
    return lines


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    dsn = os.environ.get("BENCH_DSN")
    server = None
    if not dsn:
        from tests.harness.postgres import start_cluster

        server = start_cluster()
        dsn = server.dsn()
    try:
        results = measure(dsn, n, rounds)
    finally:
        if server is not None:
            from tests.harness.postgres import stop_cluster

            stop_cluster(server)
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
