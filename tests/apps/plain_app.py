"""A WSGI app with no framework, for the fork tests.

It makes its pool at import time and queries before the server forks, as many
real apps do (a start-up check, a cache warm-up). PGPOOL_APP_MODE picks the
pool: "forksafe" (ForkSafePool) or "naive" (a plain psycopg_pool
ConnectionPool, which the fork tests must catch failing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

MODE = os.environ.get("PGPOOL_APP_MODE", "forksafe")
DSN = os.environ["PGPOOL_APP_DSN"]

pool: Any
if MODE == "naive":
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(DSN, min_size=2, max_size=4, timeout=3, open=True)
    pool.wait()
else:
    import pgpool_core.servers.uwsgi  # noqa: F401  (worker warm-up; a no-op elsewhere)
    from pgpool_core import ForkSafePool

    timeout = float(os.environ.get("PGPOOL_APP_TIMEOUT", "5"))
    if os.environ.get("PGPOOL_APP_DEFAULT_SIZES"):
        # No size set: sized from the server (tests/test_sizing.py), idle
        # connections above min_size closed after PGPOOL_APP_MAX_IDLE s.
        import logging

        logging.basicConfig(level=logging.INFO)
        max_idle = float(os.environ.get("PGPOOL_APP_MAX_IDLE", "600"))
        pool = ForkSafePool(DSN, timeout=timeout, max_idle=max_idle)
    else:
        pool = ForkSafePool(DSN, min_size=2, max_size=4, timeout=timeout)

# Import-time use, in the master when the server preloads the app.
with pool.connection() as conn:
    conn.execute("SELECT 1")

if os.environ.get("PGPOOL_APP_LEAK"):
    # Import-time code that borrows a connection and never gives it back.
    leaked = pool.getconn()
    leaked.autocommit = True
    leaked.execute("SET application_name = 'leaked-in-master'")


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    body: dict[str, Any] = {"pid": os.getpid()}
    status = "200 OK"
    if environ["PATH_INFO"] != "/health":
        try:
            with pool.connection() as conn:
                if environ["PATH_INFO"] == "/slow":
                    conn.execute("SELECT pg_sleep(0.02)")
                if environ["PATH_INFO"] == "/write":
                    # The failover tests' table; the answer names the server.
                    row = conn.execute(
                        "INSERT INTO failover_writes (port)"
                        " VALUES (inet_server_port()) RETURNING port"
                    ).fetchone()
                    body["port"] = row[0] if row else None
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
            body["backend"] = row[0] if row else None
        except Exception as err:
            status = "500 Internal Server Error"
            body["error"] = f"{type(err).__name__}: {err}"
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json")])
    return [data]


app = application
