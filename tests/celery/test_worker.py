"""The bug and the fix under a real Celery worker, over TLS.

The worker runs tests/celery/app.py, which queries at import time in the
worker's main process, before it forks its children. Tasks go through kombu's
filesystem transport and come back through Celery's file:// result backend.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.celery.config import NAP_TASK, SLEEP_TASK, TASK
from tests.harness.celery_worker import CeleryWorker
from tests.harness.forking import fork_problems
from tests.harness.overlap import most_at_once, shared_while_running
from tests.harness.postgres import PgServer

MAX_SIZE = 4  # the app's pool


@dataclass
class TaskRun:
    """What came back from the tasks sent by run_tasks()."""

    sent: int
    bodies: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def worker_pids(self) -> set[int]:
        return {body["pid"] for body in self.bodies}

    def backends(self) -> set[int]:
        return {body["backend"] for body in self.bodies}

    def shared_backends(self) -> dict[int, set[int]]:
        """Return each backend pid that answered in more than one process."""
        seen: dict[int, set[int]] = {}
        for body in self.bodies:
            seen.setdefault(body["backend"], set()).add(body["pid"])
        return {backend: pids for backend, pids in seen.items() if len(pids) > 1}

    def summary(self) -> str:
        errors = Counter(failure[:200] for failure in self.failures)
        return (
            f"{self.sent} tasks, {len(self.failures)} failed,"
            f" worker pids {sorted(self.worker_pids())},"
            f" {len(self.backends())} backends,"
            f" first errors {errors.most_common(3)}"
        )


def run_tasks(client: Celery, count: int, *, timeout: float) -> TaskRun:
    """Send *count* tasks; wait up to *timeout* s for all their results."""
    pending = [client.send_task(TASK) for _ in range(count)]
    run = TaskRun(count)
    deadline = time.monotonic() + timeout
    while pending:
        waiting = []
        for result in pending:
            if not result.ready():
                waiting.append(result)
            elif result.state != "SUCCESS":
                run.failures.append(f"{result.state}: {result.result!r}")
            elif "error" in result.result:
                run.failures.append(result.result["error"])
            else:
                run.bodies.append(result.result)
        pending = waiting
        if pending and time.monotonic() > deadline:
            run.failures += [f"no result in {timeout} s"] * len(pending)
            break
        time.sleep(0.1)
    return run


def signal_reports(base: Path) -> list[dict[str, Any]]:
    """Return what the app's receivers saw, run after pgpool_core.servers.celery's."""
    path = base / "signals.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def reports_of(events: list[dict[str, Any]], event: str) -> dict[int, dict[str, Any]]:
    return {e["pid"]: e for e in events if e["event"] == event}


def test_forksafe_pool_in_prefork_children(
    start_celery: Callable[..., CeleryWorker], client: Celery, pg_log: PgServer
) -> None:
    position = pg_log.log_position()
    worker = start_celery(pg_log, "forksafe")

    run = run_tasks(client, 200, timeout=90)

    problems = fork_problems(run, pg_log, position, parent=worker.pid)
    print(f"celery prefork forksafe: {run.summary()}; problems: {problems}")
    assert problems == []
    children = run.worker_pids()
    assert worker.pid not in children
    assert len(children) >= 2, run.summary()


def test_naive_pool_is_caught(
    start_celery: Callable[..., CeleryWorker], client: Celery, pg_log: PgServer
) -> None:
    """The same test catches the bug: a plain ConnectionPool opened before fork."""
    position = pg_log.log_position()
    worker = start_celery(pg_log, "naive")

    # Fewer tasks: most of them wait for the pool's timeout, and a child may
    # block on a socket another process reads too, until the task time limit
    # (10 s) kills it.
    run = run_tasks(client, 40, timeout=60)

    problems = fork_problems(run, pg_log, position, parent=worker.pid)
    print(f"celery prefork naive: {problems}")
    assert problems != []


def test_prefork_main_process_is_a_forking_master(
    start_celery: Callable[..., CeleryWorker],
    client: Celery,
    pg_log: PgServer,
    base: Path,
) -> None:
    """The main process keeps no pool; children warm up and close theirs."""
    worker = start_celery(pg_log, "forksafe")
    run = run_tasks(client, 40, timeout=60)
    assert run.failures == [], run.summary()

    # Its import-time pool was closed at worker_init, before the fork.
    assert pg_log.sessions(f"celery-app-{worker.pid}") == 0
    ready = reports_of(signal_reports(base), "worker_ready")
    assert ready == {
        worker.pid: {
            "event": "worker_ready",
            "pid": worker.pid,
            "open": False,
            "forking_master": True,
        }
    }

    returncode = worker.stop()

    output = worker.output()
    assert returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    events = signal_reports(base)
    started = reports_of(events, "worker_process_init")
    stopped = reports_of(events, "worker_process_shutdown")
    assert len(started) == 4, events
    assert run.worker_pids() <= started.keys()
    # Each child opened its pool at start, and closed it as it exited.
    assert {pid: e["open"] for pid, e in started.items()} == dict.fromkeys(
        started, True
    )
    assert {pid: e["open"] for pid, e in stopped.items()} == dict.fromkeys(
        started, False
    )


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_main_process_keeps_its_pool_without_prefork(
    start_celery: Callable[..., CeleryWorker],
    client: Celery,
    pg_log: PgServer,
    base: Path,
    pool: str,
) -> None:
    """Tasks run in the main process: it is no forking master, its pool serves."""
    worker = start_celery(pg_log, "forksafe", pool=pool)

    run = run_tasks(client, 50, timeout=60)

    print(f"celery {pool} forksafe: {run.summary()}")
    assert run.failures == [], run.summary()
    assert run.worker_pids() == {worker.pid}
    # Pooled: a forking master would make one connection per task.
    assert len(run.backends()) <= MAX_SIZE, run.summary()
    ready = reports_of(signal_reports(base), "worker_ready")
    assert ready[worker.pid]["forking_master"] is False
    assert ready[worker.pid]["open"] is True

    returncode = worker.stop()

    assert returncode == 0, worker.output()[-3000:]
    shutdown = reports_of(signal_reports(base), "worker_shutdown")
    assert shutdown[worker.pid]["open"] is False


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_green_pools_run_queries_side_by_side(
    start_celery: Callable[..., CeleryWorker],
    client: Celery,
    pg_log: PgServer,
    pool: str,
) -> None:
    """Celery patches before the app imports psycopg, which only notices gevent.

    8 tasks of 0.5 s on 4 greenlets take about as long with a query
    (``pg_sleep``) as without (``time.sleep``), not 8 x 0.5 s.
    """
    worker = start_celery(pg_log, "forksafe", pool=pool)

    def timed(task: str, seconds: float) -> tuple[float, list[dict[str, Any]]]:
        started = time.monotonic()
        results = [client.send_task(task, args=[seconds]) for _ in range(8)]
        bodies = [result.get(timeout=60) for result in results]
        return time.monotonic() - started, bodies

    timed(SLEEP_TASK, 0)  # the pool filled
    control, _ = timed(NAP_TASK, 0.5)
    wall, bodies = timed(SLEEP_TASK, 0.5)

    most = most_at_once(bodies)
    print(
        f"celery -P {pool}: 8 x time.sleep(0.5) {control:.1f} s,"
        f" 8 x pg_sleep(0.5) {wall:.1f} s; at most {most} queries at once"
    )
    assert {body["pid"] for body in bodies} == {worker.pid}
    assert wall < control + 8 * 0.5 / 2  # one at a time: 4 s
    assert most >= 2, bodies
    assert shared_while_running(bodies) == []
