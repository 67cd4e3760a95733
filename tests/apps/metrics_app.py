"""A WSGI app with no framework for the metrics tests, served preloaded.

Its pool is made at import, in the master; PGPOOL_APP_TELEMETRY names the
module that sets up OpenTelemetry in each worker (``telemetry_otlp`` or
``telemetry_prometheus``, imported as the docs show). ``/metrics`` answers
Prometheus' scrape with the second; ``/query`` borrows a connection.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import pgpool_core.servers.uwsgi  # noqa: F401  (worker warm-up; a no-op elsewhere)
from pgpool_core import ForkSafePool

telemetry = importlib.import_module(
    "tests.apps." + os.environ.get("PGPOOL_APP_TELEMETRY", "telemetry_otlp")
)

pool = ForkSafePool(
    os.environ["PGPOOL_APP_DSN"],
    name="metrics-app",
    min_size=2,
    max_size=4,
    timeout=5,
    kwargs={"application_name": os.environ["PGPOOL_APP_NAME"]},
)

# Import-time use, in the master: a plain connection there.
with pool.connection() as conn:
    conn.execute("SELECT 1")


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/metrics":
        return telemetry.metrics_app(environ, start_response)  # type: ignore[no-any-return]
    body: dict[str, Any] = {"pid": os.getpid()}
    if path == "/query":
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.01)")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
