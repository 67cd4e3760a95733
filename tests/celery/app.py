"""A Celery app for the fork tests, used by the worker the tests start.

Like tests/apps/plain_app.py, it makes its pool at import time and queries
before the worker forks its children. PGPOOL_APP_MODE picks the pool:
"forksafe" (ForkSafePool, with ``import pgpool_core.servers.celery``) or "naive" (a
plain psycopg_pool ConnectionPool, which the tests must catch failing).

Each process's connections carry its pid in their application_name, and the
worker's signals are reported to a file, for the tests to read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals
from psycopg.conninfo import make_conninfo

from tests.celery.config import NAP_TASK, SLEEP_TASK, TASK, celery_config

MODE = os.environ.get("PGPOOL_APP_MODE", "forksafe")
DSN = os.environ["PGPOOL_APP_DSN"]
BASE = Path(os.environ["PGPOOL_CELERY_DIR"])
REPORT = BASE / "signals.jsonl"


def app_dsn() -> str:
    return make_conninfo(DSN, application_name=f"celery-app-{os.getpid()}")


pool: Any
if MODE == "naive":
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(app_dsn(), min_size=2, max_size=4, timeout=1, open=True)
    pool.wait()
else:
    import pgpool_core.servers.celery  # noqa: F401  (the import under test)
    from pgpool_core import ForkSafePool

    if os.environ.get("PGPOOL_APP_DEFAULT_SIZES"):
        pool = ForkSafePool(app_dsn, timeout=5)  # sized from the worker's pool
    else:
        pool = ForkSafePool(app_dsn, min_size=2, max_size=4, timeout=5)

# Import-time use, in the worker's main process before it forks.
with pool.connection() as conn:
    conn.execute("SELECT 1")

app = Celery("pgpool_test")
app.conf.update(celery_config(BASE))


@app.task(name=TASK)
def backend_pid() -> dict[str, Any]:
    body: dict[str, Any] = {"pid": os.getpid()}
    try:
        with pool.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            # Tasks overlap, so that they spread over the children.
            time.sleep(0.01)
        body["backend"] = row[0] if row else None
    except Exception as err:
        body["error"] = f"{type(err).__name__}: {err}"
    return body


@app.task(name=SLEEP_TASK)
def sleep(seconds: float) -> dict[str, Any]:
    """Hold a connection in a query for *seconds*; say when it ran."""
    with pool.connection() as conn:
        started = time.time()
        row = conn.execute(
            "SELECT pg_backend_pid(), pg_sleep(%s)", [seconds]
        ).fetchone()
        ended = time.time()
    assert row is not None
    return {"pid": os.getpid(), "backend": row[0], "started": started, "ended": ended}


@app.task(name=NAP_TASK)
def nap(seconds: float) -> dict[str, Any]:
    """Sleep *seconds* without the database (time.sleep, patched or not)."""
    time.sleep(seconds)
    return {"pid": os.getpid()}


# Connected after pgpool_core.servers.celery's receivers, so they run after them.


def report(event: str) -> None:
    state: dict[str, Any] = {"event": event, "pid": os.getpid()}
    if MODE != "naive":
        from pgpool_core import _process

        state["open"] = pool.process_pool_open
        state["forking_master"] = _process.in_forking_master()
    with open(REPORT, "a") as out:
        out.write(json.dumps(state) + "\n")


@signals.worker_ready.connect
def _ready(**kwargs: Any) -> None:
    report("worker_ready")


@signals.worker_process_init.connect
def _process_init(**kwargs: Any) -> None:
    report("worker_process_init")


@signals.worker_process_shutdown.connect
def _process_shutdown(**kwargs: Any) -> None:
    report("worker_process_shutdown")


@signals.worker_shutdown.connect
def _shutdown(**kwargs: Any) -> None:
    report("worker_shutdown")
