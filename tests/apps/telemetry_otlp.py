# telemetry.py: the pools' metrics over OTLP, from each worker after the fork.
import os
import uuid

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from pgpool_core.metrics.otel import run_in_each_worker


@run_in_each_worker
def start_telemetry() -> None:
    # Each worker is an instance of its own; OTEL_SERVICE_NAME, the endpoint
    # (OTEL_EXPORTER_OTLP_ENDPOINT) and the interval
    # (OTEL_METRIC_EXPORT_INTERVAL) come from the environment.
    resource = Resource.create(
        {"service.instance.id": str(uuid.uuid4()), "process.pid": os.getpid()}
    )
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(provider)
