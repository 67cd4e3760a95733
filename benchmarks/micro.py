"""Micro-benchmark: what flask_pgpool adds to each request, in microseconds.

Run in one process against ``BENCH_DSN`` (``python micro.py [N]``; ``run.py``
calls :func:`run`). Each loop borrows a connection and gives it back without
a query, N times, then waits until every connection is back in its pool, so
that work done after a return (ForkSafePool's reset, in a pool thread) is
counted too:

- ``raw``: ``psycopg_pool.ConnectionPool.connection()``, no check, no reset;
- ``forksafe``: ``ForkSafePool.connection()`` (its check and its reset);
- ``forksafe_no_reset``: the same with ``reset=None``: what fork safety
  alone costs;
- ``flask``: an app context that uses ``pgpool.connection`` (checkout, the
  teardown's rollback check, return, reset), less an empty app context;
- ``flask_no_reset``: the same with ``PGPOOL_RESET = None``.

The overhead is ``flask - raw`` per request, wall clock and CPU (all threads).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flask import Flask
from psycopg_pool import ConnectionPool

from flask_pgpool import PgPool
from pgpool_core import ForkSafePool

SIZE = {"min_size": 2, "max_size": 4}


def _wait_idle(pool: ConnectionPool[Any]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats.get("pool_available", 0) >= stats.get("pool_size", 0):
            return
        time.sleep(0.0002)


def _timed(n: int, once: Callable[[], None], settle: Callable[[], None]) -> tuple:
    for _ in range(min(200, n)):
        once()
    settle()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        once()
    settle()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall / n * 1e6, cpu / n * 1e6


def run(dsn: str, n: int = 5000, repeats: int = 3) -> dict[str, Any]:
    raw = ConnectionPool(dsn, open=True, **SIZE)
    forksafe = ForkSafePool(dsn, **SIZE)
    no_reset = ForkSafePool(dsn, reset=None, **SIZE)
    app = Flask("micro")
    app.config.update(PGPOOL_CONNINFO=dsn, PGPOOL_MIN_SIZE=2, PGPOOL_MAX_SIZE=4)
    pgpool = PgPool(app)
    # The same extension on a second app, without the session reset.
    app_no_reset = Flask("micro_no_reset")
    app_no_reset.config.update(app.config, PGPOOL_RESET=None)
    pgpool.init_app(app_no_reset)
    try:
        raw.wait()
        forksafe.wait()
        no_reset.wait()
        with app.app_context():
            pgpool.pool.wait()
            flask_pool = pgpool.pool
        with app_no_reset.app_context():
            pgpool.pool.wait()
            flask_no_reset_pool = pgpool.pool

        def raw_once() -> None:
            with raw.connection():
                pass

        def forksafe_once() -> None:
            with forksafe.connection():
                pass

        def no_reset_once() -> None:
            with no_reset.connection():
                pass

        def flask_once() -> None:
            with app.app_context():
                pgpool.connection  # noqa: B018 - borrowing is the point

        def flask_no_reset_once() -> None:
            with app_no_reset.app_context():
                pgpool.connection  # noqa: B018 - borrowing is the point

        def context_once() -> None:
            with app.app_context():
                pass

        runs: dict[str, list[tuple[float, float]]] = {
            k: []
            for k in (
                "raw",
                "forksafe",
                "forksafe_no_reset",
                "flask",
                "flask_no_reset",
                "app_context",
            )
        }
        for _ in range(repeats):
            runs["raw"].append(_timed(n, raw_once, lambda: _wait_idle(raw)))
            runs["forksafe"].append(
                _timed(n, forksafe_once, lambda: _wait_idle(forksafe.pool))
            )
            runs["forksafe_no_reset"].append(
                _timed(n, no_reset_once, lambda: _wait_idle(no_reset.pool))
            )
            runs["flask"].append(_timed(n, flask_once, lambda: _wait_idle(flask_pool)))
            runs["flask_no_reset"].append(
                _timed(n, flask_no_reset_once, lambda: _wait_idle(flask_no_reset_pool))
            )
            runs["app_context"].append(_timed(n, context_once, lambda: None))
    finally:
        raw.close()
        forksafe.close()
        no_reset.close()
        for each in (app, app_no_reset):
            with each.app_context():
                pgpool.pool.close()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    result: dict[str, Any] = {"requests_per_loop": n, "repeats": repeats}
    for name, pairs in runs.items():
        walls = [w for w, _ in pairs]
        cpus = [c for _, c in pairs]
        result[name] = {
            "wall_us_min": min(walls),
            "wall_us_median": median(walls),
            "cpu_us_median": median(cpus),
        }
    for name in ("forksafe", "forksafe_no_reset", "flask", "flask_no_reset"):
        in_app = name.startswith("flask")
        extra = result["app_context"]["wall_us_median"] if in_app else 0.0
        extra_cpu = result["app_context"]["cpu_us_median"] if in_app else 0.0
        result[f"{name}_overhead_us"] = {
            "wall": result[name]["wall_us_median"]
            - extra
            - result["raw"]["wall_us_median"],
            "cpu": result[name]["cpu_us_median"]
            - extra_cpu
            - result["raw"]["cpu_us_median"],
        }
    return result


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    print(json.dumps(run(os.environ["BENCH_DSN"], count), indent=2))
