# telemetry.py: the pools' metrics for Prometheus, one target for all workers.
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from pgpool_core.metrics.otel import run_in_each_worker
from pgpool_core.metrics.prometheus import (
    PrometheusMultiprocessExporter,
    mark_dead_processes,
)


@run_in_each_worker
def start_telemetry() -> None:
    # Each worker writes into PROMETHEUS_MULTIPROC_DIR every
    # OTEL_METRIC_EXPORT_INTERVAL milliseconds (60000 unless set).
    reader = PeriodicExportingMetricReader(PrometheusMultiprocessExporter())
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def metrics_app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """The scrape, served by any worker: every live worker's metrics, merged."""
    mark_dead_processes()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [generate_latest(registry)]
