"""Prometheus, one target for all the workers: prometheus_client's multiprocess mode.

Prometheus scrapes one address per server, but each worker of a preforking
server has its own pools, and its own OpenTelemetry SDK: a scrape answered by
one worker would show that worker's pools only, and a port per worker is not
one target. prometheus_client's multiprocess mode is the known answer (its
documentation's "Multiprocess Mode (E.g. Gunicorn)"): each worker writes its
values into files in ``PROMETHEUS_MULTIPROC_DIR``, and whichever worker
answers the scrape merges them all.

:class:`PrometheusMultiprocessExporter` is an OpenTelemetry metric exporter
that writes what the SDK of a worker collects into those files; give it to a
``PeriodicExportingMetricReader`` in each worker (see
:func:`pgpool_core.metrics.otel.run_in_each_worker`). Names, units and types
follow OpenTelemetry's Prometheus compatibility rules (``.`` becomes ``_``,
``s`` adds ``_seconds``, a counter ``_total``, ``{connection}`` adds
nothing): ``db_client_connection_count``,
``db_client_connection_wait_time_seconds``...

- up-down counters and gauges (the connection counts, the limits, the pending
  requests) are gauges with ``multiprocess_mode="liveall"``: one series per
  live worker, with a ``pid`` label. A worker's are removed when it exits
  (this exporter's ``shutdown()``, run by the SDK at exit), and, for a worker
  killed or one whose server skipped its exit handlers (uWSGI may), by
  :func:`mark_dead_processes`, which the scrape calls first;
- counters and histograms (timeouts; wait, use and create times) are summed
  over all the workers, those that exited included, as prometheus_client
  does for its own.

Values are as fresh as the reader's last export (its interval).

Needs ``opentelemetry-sdk`` and ``prometheus-client``:
``pip install psycopg-forksafe[prometheus]``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

try:
    from opentelemetry.sdk.metrics.export import (
        Gauge,
        Histogram,
        MetricExporter,
        MetricExportResult,
        MetricsData,
        Sum,
    )
    from prometheus_client import multiprocess, values
    from prometheus_client.utils import floatToGoString
except ImportError as err:
    raise ImportError(
        "pgpool_core.metrics.prometheus needs opentelemetry-sdk and prometheus-client:"
        " pip install psycopg-forksafe[prometheus]"
    ) from err

from ..errors import ConfigurationError

__all__ = ["PrometheusMultiprocessExporter", "mark_dead_processes", "prometheus_name"]

# OpenTelemetry's Prometheus compatibility: the units that add a suffix.
_UNITS = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "By": "bytes",
    "1": "ratio",
}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def prometheus_name(name: str, unit: str = "") -> str:
    """Return the Prometheus name of an OpenTelemetry instrument (no ``_total``).

    ``db.client.connection.wait_time`` in ``s`` is
    ``db_client_connection_wait_time_seconds``; a unit in braces
    (``{connection}``) is an annotation and adds nothing.
    """
    base = _INVALID.sub("_", name)
    suffix = _UNITS.get(unit, "" if unit.startswith("{") else _INVALID.sub("_", unit))
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return base


def mark_dead_processes(path: str | None = None) -> list[int]:
    """Remove the live gauges of processes that no longer exist; return their pids.

    For the scrape, before it merges the files of *path*
    (``PROMETHEUS_MULTIPROC_DIR`` by default), which is one host's: a
    worker that was killed, or that exited without running its exit
    handlers, would otherwise be shown forever. Counters and histograms are
    kept, as prometheus_client's ``mark_process_dead`` keeps them.
    """
    directory = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    dead = set()
    for name in os.listdir(directory):
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match is None:
            continue
        pid = int(match[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # alive, another user's
            pass
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def _label_names(attributes: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    items = sorted((_INVALID.sub("_", k), str(v)) for k, v in attributes.items())
    return [k for k, _ in items], [v for _, v in items]


class PrometheusMultiprocessExporter(MetricExporter):
    """Write a worker's metrics into prometheus_client's multiprocess files.

    *path* is the directory, ``PROMETHEUS_MULTIPROC_DIR`` by default (the
    variable must then be set for the process that answers scrapes too);
    ConfigurationError if it is not an existing directory. Cumulative
    temporality (the SDK's default) is expected: each export writes the
    current totals.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        directory = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        if not directory or not os.path.isdir(directory):
            raise ConfigurationError(
                "PROMETHEUS_MULTIPROC_DIR",
                "must name an existing directory, shared by the workers and"
                f" emptied when the server starts (got {directory!r})",
            )
        self.path = directory
        # prometheus_client's values in mmap files, PROMETHEUS_MULTIPROC_DIR
        # being read when each is made.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        self._value_class: Any = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self._values: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def export(
        self,
        metrics_data: MetricsData,
        timeout_millis: float = 10_000,
        **kwargs: Any,
    ) -> MetricExportResult:
        with self._lock:
            for resource_metrics in metrics_data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        name = prometheus_name(metric.name, metric.unit or "")
                        help_text = metric.description or metric.name
                        self._write(name, help_text, metric.data)
        return MetricExportResult.SUCCESS

    def _write(self, name: str, help_text: str, data: Any) -> None:
        point: Any
        if isinstance(data, Sum) and data.is_monotonic:
            for point in data.data_points:
                keys, labels = _label_names(point.attributes or {})
                self._set(
                    "counter",
                    name,
                    f"{name}_total",
                    keys,
                    labels,
                    help_text,
                    point.value,
                )
        elif isinstance(data, Sum | Gauge):
            for point in data.data_points:
                keys, labels = _label_names(point.attributes or {})
                self._set("gauge", name, name, keys, labels, help_text, point.value)
        elif isinstance(data, Histogram):
            for point in data.data_points:
                keys, labels = _label_names(point.attributes or {})
                bounds = [*point.explicit_bounds, float("inf")]
                for bound, count in zip(bounds, point.bucket_counts, strict=True):
                    self._set(
                        "histogram",
                        name,
                        f"{name}_bucket",
                        [*keys, "le"],
                        [*labels, floatToGoString(bound)],  # type: ignore[no-untyped-call]
                        help_text,
                        count,
                    )
                self._set(
                    "histogram", name, f"{name}_sum", keys, labels, help_text, point.sum
                )
        # Exponential histograms have no Prometheus form here: left out.

    def _set(
        self,
        typ: str,
        metric_name: str,
        name: str,
        keys: list[str],
        labels: list[str],
        help_text: str,
        value: float,
    ) -> None:
        key = (typ, name, tuple(keys), tuple(labels))
        stored = self._values.get(key)
        if stored is None:
            stored = self._value_class(
                typ,
                metric_name,
                name,
                keys,
                labels,
                help_text,
                multiprocess_mode="liveall",
            )
            self._values[key] = stored
        stored.set(float(value))

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Remove this process's gauges: its pools are gone with it."""
        multiprocess.mark_process_dead(os.getpid(), self.path)  # type: ignore[no-untyped-call]
