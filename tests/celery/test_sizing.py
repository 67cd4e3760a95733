"""Celery workers' pools sized from their pool's concurrency, counted in
pg_stat_activity (tests/celery/app.py with no size set)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery import Celery

from tests.celery.config import SLEEP_TASK
from tests.harness.celery_worker import CeleryWorker
from tests.harness.postgres import PgServer
from tests.test_sizing import Peak

pytestmark = pytest.mark.servers


def app_backends(pg: PgServer) -> dict[str, int]:
    """The app's backends by application_name (``celery-app-<pid>``)."""
    rows = pg.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity"
        " WHERE application_name LIKE 'celery-app-%%' GROUP BY 1"
    )
    return {name: int(count) for name, count in rows}


class CeleryPeak(Peak):
    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.most = max(self.most, sum(app_backends(self.pg).values()))


@pytest.mark.parametrize(("pool", "concurrency"), [("prefork", 4), ("threads", 2)])
def test_backends_follow_the_worker_pool(
    start_celery: Callable[..., CeleryWorker],
    client: Celery,
    pg_server: PgServer,
    pool: str,
    concurrency: int,
) -> None:
    """Prefork -c 4: one connection per child (4, not 16), none in the main
    process; threads -c 2: at most 2 in the main process (not 4)."""
    worker = start_celery(
        pg_server, pool=pool, concurrency=concurrency, PGPOOL_APP_DEFAULT_SIZES="1"
    )

    with CeleryPeak(pg_server) as peak:
        results = [client.send_task(SLEEP_TASK, args=[0.1]) for _ in range(24)]
        bodies = [result.get(timeout=60) for result in results]
    held = app_backends(pg_server)

    print(f"celery {pool} -c {concurrency}: peak {peak.most}, after {held}")
    assert len(bodies) == 24
    assert 1 <= peak.most <= concurrency
    assert sum(held.values()) <= concurrency
    if pool == "prefork":
        assert held.get(f"celery-app-{worker.pid}", 0) == 0, "the main process"
        assert max(held.values()) == 1, held
