"""Fixtures of the Celery tests: the broker's directory and a client app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.celery.config import celery_config
from tests.conftest import REPO
from tests.harness.celery_worker import CeleryWorker, start_worker
from tests.harness.postgres import PgServer


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The directory that holds the broker's queue and the results."""
    return tmp_path / "celery"


@pytest.fixture
def client(base: Path) -> Iterator[Celery]:
    """A Celery app that only sends tasks to the worker and reads their results."""
    app = Celery("pgpool_test_client", set_as_current=False)
    app.conf.update(celery_config(base))
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def start_celery(base: Path) -> Iterator[Callable[..., CeleryWorker]]:
    """Start workers of tests/celery/app.py; all are stopped after the test.

    ``start(pg, mode="forksafe", pool="prefork", concurrency=4, **env)``:
    *mode* is PGPOOL_APP_MODE (tests/celery/app.py), *env* more variables.
    """
    started: list[CeleryWorker] = []

    def start(
        pg: PgServer,
        mode: str = "forksafe",
        pool: str = "prefork",
        concurrency: int = 4,
        **env: str,
    ) -> CeleryWorker:
        env = {
            "PGPOOL_APP_DSN": pg.dsn(),
            "PGPOOL_APP_MODE": mode,
            "PGPOOL_CELERY_DIR": str(base),
            **env,
        }
        worker = start_worker(
            "tests.celery.app", cwd=REPO, env=env, pool=pool, concurrency=concurrency
        )
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
