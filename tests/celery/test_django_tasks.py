"""Django tasks under a real Celery worker: a child's pool serves all its tasks.

Celery's Django fixup closes Django's connections before and after every task
and, from Celery 5.6, calls ``close_pool()`` too: without pgpool_core.servers.celery
each task would open a pool, ``min_size`` TLS sessions, of its own. The tests
run with the installed Celery; ``make test`` runs them with Celery's floor too
(``make test-celery-floor``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pytest
from celery import Celery

from tests.celery.config import DJANGO_TASK
from tests.conftest import REPO
from tests.harness.celery_worker import CeleryWorker, start_worker
from tests.harness.postgres import PgServer

pytestmark = pytest.mark.slow

POOL_SIZE = 2  # min_size = max_size of the project's pool
TASKS = 10
APPLICATION = "pgpool-celery-django"


def run_tasks(client: Celery, count: int, timeout: float) -> list[dict[str, Any]]:
    """Send *count* tasks (one child runs them in turn); return their results."""
    results = [client.send_task(DJANGO_TASK) for _ in range(count)]
    return [result.get(timeout=timeout) for result in results]


def sessions_opened(pg: PgServer, position: int) -> int:
    """Return how many sessions of the app the server authorized since *position*."""
    return sum(
        1
        for line in pg.log_since(position).splitlines()
        if "connection authorized" in line and f"application_name={APPLICATION}" in line
    )


@pytest.fixture
def worker(pg_log: PgServer, base: Path) -> Iterator[CeleryWorker]:
    """A prefork worker of the Django project with one child."""
    env = {
        "PGPOOL_APP_DSN": pg_log.dsn(application_name=APPLICATION),
        "PGPOOL_APP_POOL_MIN": str(POOL_SIZE),
        "PGPOOL_APP_POOL_MAX": str(POOL_SIZE),
        "PGPOOL_CELERY_DIR": str(base),
    }
    started = start_worker("tests.celery.django_app", cwd=REPO, env=env, concurrency=1)
    try:
        yield started
    finally:
        started.stop()


def test_child_keeps_its_pool_across_tasks(
    worker: CeleryWorker, client: Celery, pg_log: PgServer, base: Path
) -> None:
    position = pg_log.log_position()

    bodies = run_tasks(client, TASKS, timeout=30)

    backends = {body["backend"] for body in bodies}
    opened = sessions_opened(pg_log, position)
    print(
        f"celery {celery.__version__}: {TASKS} tasks on one child,"
        f" {len(backends)} backends, {opened} TLS sessions opened"
    )
    assert len({body["pid"] for body in bodies}) == 1
    assert len(backends) <= POOL_SIZE
    assert opened == POOL_SIZE
    # Each task found its connection reset, whatever the one before it set.
    assert [body["left"] for body in bodies] == [None] * TASKS

    returncode = worker.stop()

    assert returncode == 0, worker.output()[-3000:]
    # The child closed its pool as it exited.
    reports = (base / "signals.jsonl").read_text()
    assert '"open": false' in reports and '"open": true' not in reports, reports
    assert pg_log.sessions(APPLICATION) == 0


def start_importing_worker(
    pg: PgServer, base: Path, concurrency: int, *extra_args: str
) -> CeleryWorker:
    """A prefork worker whose main process queries as the project is imported."""
    env = {
        "PGPOOL_APP_DSN": pg.dsn(application_name=APPLICATION),
        "PGPOOL_APP_POOL_MIN": str(POOL_SIZE),
        "PGPOOL_APP_POOL_MAX": str(POOL_SIZE),
        "PGPOOL_CELERY_DIR": str(base),
        "PGPOOL_QUERY_AT_IMPORT": "1",
    }
    return start_worker(
        "tests.celery.django_app",
        cwd=REPO,
        env=env,
        concurrency=concurrency,
        extra_args=extra_args,
    )


def test_import_time_query_leaves_no_unused_pool(
    client: Celery, pg_log: PgServer, base: Path
) -> None:
    """Only the children's pools that serve hold sessions.

    Celery's Django fixup calls ``close_pool()`` in the worker's main
    process, which drops the pool the import-time query made. Each child
    warmed that dropped pool all the same: ``min_size`` sessions that nothing
    borrowed, beside the pool the alias makes at the first task (8 backends
    for 2 children of max_size 2).
    """
    worker = start_importing_worker(pg_log, base, 2)
    try:
        bodies = run_tasks(client, TASKS, timeout=30)
        expected = len({body["pid"] for body in bodies}) * POOL_SIZE
        deadline = time.monotonic() + 10
        while pg_log.sessions(APPLICATION) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # time enough for an unused pool to connect too
        held = pg_log.sessions(APPLICATION)
    finally:
        worker.stop()
    print(f"import-time query, 2 children: {held} backends held, {expected} serve")
    assert held == expected


def test_recycled_children_log_in_only_for_the_pool_that_serves(
    client: Celery, pg_log: PgServer, base: Path
) -> None:
    """With ``--max-tasks-per-child=1``, each child logs in ``min_size`` times.

    Twice that when each one also warmed the pool dropped in the main process.
    """
    tasks = 3
    position = pg_log.log_position()
    worker = start_importing_worker(pg_log, base, 1, "--max-tasks-per-child", "1")
    try:
        bodies = run_tasks(client, tasks, timeout=60)
    finally:
        worker.stop()
    opened = sessions_opened(pg_log, position)
    print(f"{tasks} one-task children: {opened} TLS sessions opened")
    assert len({body["pid"] for body in bodies}) == tasks
    # The main process's import-time pool, then one pool per child: the
    # children that ran a task, and the one forked to replace the last of
    # them, which warms its pool before the worker stops (Celery 5.3 forks it
    # in time, newer ones may not). Warming the dropped pool too made it
    # 2 x min_size per child: 14 or more.
    assert opened <= POOL_SIZE * (1 + tasks + 1)
