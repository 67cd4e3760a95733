"""Metrics from the workers of real servers add up to what PostgreSQL sees.

gunicorn (4 workers, preload) and uWSGI (master + 4 processes), each worker
with its own OpenTelemetry SDK set up after the fork as docs/metrics.rst
shows: over OTLP to a collector stand-in, and for Prometheus through
prometheus_client's multiprocess files, scraped from the app as one target.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgpool_core.metrics.prometheus import mark_dead_processes
from tests.harness.otlp import Collector, Report
from tests.harness.postgres import PgServer
from tests.harness.servers import GUNICORN_HOOKS, RunningServer, run_load

pytestmark = pytest.mark.servers

WORKERS = 4
MIN_SIZE = 2  # tests/apps/metrics_app.py's pool
REQUESTS = 200
POOL = "metrics-app"
STATE = "db_client_connection_state"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


def serve_metrics_app(
    serve: Callable[..., RunningServer],
    pg: PgServer,
    kind: str,
    application_name: str,
    **env: str,
) -> RunningServer:
    return serve(
        kind,
        "tests.apps.metrics_app:application",
        workers=WORKERS,
        config=GUNICORN_HOOKS if kind == "gunicorn" else None,
        env={
            "PGPOOL_APP_DSN": pg.dsn(),
            "PGPOOL_APP_NAME": application_name,
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            **env,
        },
    )


def wait_until(
    condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.2
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def stops_cleanly(server: RunningServer) -> None:
    returncode = server.stop(timeout=20)
    output = server.output()
    assert returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_otlp_worker_counts_add_up_to_pg_stat_activity(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    collector: Collector,
    kind: str,
) -> None:
    application_name = f"pgpool-otlp-{kind}-{os.getpid()}"
    server = serve_metrics_app(
        serve,
        pg_server,
        kind,
        application_name,
        PGPOOL_APP_TELEMETRY="telemetry_otlp",
        OTEL_SERVICE_NAME="metrics-test",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
    )
    result = run_load(server.port, ["/query"] * REQUESTS, concurrency=8)
    assert result.failures == [], result.summary()

    def per_worker(reports: dict[str, Report]) -> dict[int, tuple[int, int, int]]:
        """pid -> (idle, used, wait_time count) of the app's pool."""
        return {
            int(report.resource["process.pid"]): (
                sum(
                    report.values(
                        "db.client.connection.count",
                        **{"db.client.connection.state": "idle"},
                    )
                ),
                sum(
                    report.values(
                        "db.client.connection.count",
                        **{"db.client.connection.state": "used"},
                    )
                ),
                sum(report.values("db.client.connection.wait_time")),
            )
            for report in reports.values()
        }

    def settled() -> bool:
        workers = per_worker(collector.latest())
        return (
            len(workers) == WORKERS
            and sum(w[2] for w in workers.values()) == REQUESTS
            and all(used == 0 for _, used, _ in workers.values())
            and sum(i + u for i, u, _ in workers.values())
            == pg_server.sessions(application_name)
        )

    settled_in_time = wait_until(settled)
    reports = collector.latest()
    workers = per_worker(reports)
    seen = pg_server.sessions(application_name)
    print(
        f"{kind} OTLP: per worker (idle, used, waits) {workers};"
        f" sum {sum(i + u for i, u, _ in workers.values())};"
        f" pg_stat_activity {seen}"
    )
    assert settled_in_time, (workers, seen)
    assert seen >= WORKERS * MIN_SIZE
    # Every worker is an instance of its own, its pid the worker's.
    assert len({r.resource["service.instance.id"] for r in reports.values()}) == WORKERS
    assert result.worker_pids() <= set(workers)  # all that served, reported
    assert server.proc.pid not in workers  # nothing from the master
    report = next(iter(reports.values()))
    assert report.resource["service.name"] == "metrics-test"
    assert ("pgpool_core", _version()) in report.scopes
    # Each worker made its pool's min_size connections, recorded on connect.
    for each in reports.values():
        assert (
            sum(
                each.values(
                    "db.client.connection.create_time",
                    **{"db.client.connection.pool.name": POOL},
                )
            )
            >= MIN_SIZE
        )
        assert each.values("db.client.connection.max") == [4]
        assert each.values("db.client.connection.timeouts") == [0]
    stops_cleanly(server)


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_prometheus_scrape_shows_every_workers_pool(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    tmp_path: Path,
    kind: str,
) -> None:
    application_name = f"pgpool-prometheus-{kind}-{os.getpid()}"
    server = serve_metrics_app(
        serve,
        pg_server,
        kind,
        application_name,
        PGPOOL_APP_TELEMETRY="telemetry_prometheus",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    result = run_load(server.port, ["/query"] * REQUESTS, concurrency=8)
    assert result.failures == [], result.summary()

    def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
        response = server.get("/metrics")
        assert response.status == 200, response
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(response.body.decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(
                    (sample.labels, sample.value)
                )
        return samples

    state: dict[str, Any] = {}

    def settled(killed: int | None = None) -> bool:
        samples = scrape()
        counts = samples.get("db_client_connection_count", [])
        waits = samples.get("db_client_connection_wait_time_seconds_count", [])
        state.update(
            samples=samples,
            pids={int(labels["pid"]) for labels, _ in counts},
            total=sum(value for _, value in counts),
            used=sum(v for labels, v in counts if labels[STATE] == "used"),
            waits=sum(value for _, value in waits),
            seen=pg_server.sessions(application_name),
        )
        return (
            len(state["pids"]) == WORKERS
            and killed not in state["pids"]
            and state["waits"] == REQUESTS
            and state["used"] == 0
            and state["total"] == state["seen"]
        )

    def summary() -> str:
        return (
            f"pids {sorted(state['pids'])}; connections {state['total']:g};"
            f" pg_stat_activity {state['seen']}; waits {state['waits']:g}"
        )

    settled_in_time = wait_until(settled)
    print(f"{kind} Prometheus: {summary()}")
    assert settled_in_time, summary()
    per_pid = {
        int(labels["pid"]): value
        for labels, value in state["samples"]["db_client_connection_count"]
        if labels[STATE] == "idle"
    }
    assert all(value >= MIN_SIZE for value in per_pid.values()), per_pid
    assert server.proc.pid not in per_pid
    assert state["samples"]["db_client_connection_timeouts_total"] == [
        ({"db_client_connection_pool_name": POOL}, 0.0)
    ]

    # A worker killed: the server replaces it, the scrape drops it and shows
    # the new one; its waits still count.
    killed = min(state["pids"])
    os.kill(killed, signal.SIGKILL)
    settled_in_time = wait_until(lambda: settled(killed))
    print(f"{kind} Prometheus, worker {killed} killed: {summary()}")
    assert settled_in_time, summary()

    stops_cleanly(server)
    mark_dead_processes(str(tmp_path))
    assert not list(tmp_path.glob("gauge_liveall_*.db"))


def _version() -> str:
    from importlib.metadata import version

    return version("psycopg-forksafe")
