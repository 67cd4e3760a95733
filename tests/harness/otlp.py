"""An OTLP/HTTP metrics receiver standing in for an OpenTelemetry Collector.

It listens on the loopback, decodes what exporters POST to ``/v1/metrics``
(protobuf, with opentelemetry-proto, the OTLP exporter's own dependency) and
keeps the latest report of each instance (``service.instance.id``).
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from .postgres import free_port


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Report:
    """One instance's latest export: its resource, scopes and data points."""

    resource: dict[str, Any]
    scopes: set[tuple[str, str]] = field(default_factory=set)
    # name -> (unit, kind, is_monotonic) and name -> [(attributes, value)]
    kinds: dict[str, tuple[str, str, bool]] = field(default_factory=dict)
    points: dict[str, list[tuple[dict[str, Any], Any]]] = field(default_factory=dict)

    def values(self, name: str, **match: Any) -> list[Any]:
        """Return the values of *name* (a histogram's counts), attributes matching."""
        return [
            value
            for attributes, value in self.points.get(name, [])
            if all(attributes.get(k) == v for k, v in match.items())
        ]


class Collector:
    """The receiver: ``endpoint`` for OTEL_EXPORTER_OTLP_ENDPOINT, ``reports``."""

    def __init__(self) -> None:
        self.reports: dict[str, Report] = {}
        self.requests = 0
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector._receive(ExportMetricsServiceRequest.FromString(body))
                answer = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def latest(self) -> dict[str, Report]:
        with self._lock:
            return dict(self.reports)

    def _receive(self, request: Any) -> None:
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            report = Report(resource)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                report.scopes.add((scope.name, scope.version))
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    monotonic = bool(getattr(data, "is_monotonic", False))
                    report.kinds[metric.name] = (metric.unit, kind, monotonic)
                    report.points[metric.name] = [
                        (
                            _attributes(point.attributes),
                            point.count
                            if kind == "histogram"
                            else _value_of_number(point),
                        )
                        for point in data.data_points
                    ]
            with self._lock:
                self.requests += 1
                self.reports[str(resource.get("service.instance.id"))] = report


def _value_of_number(point: Any) -> Any:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
