"""A Django project's Celery app, set up as the README says, for the worker tests.

The project is tests/django (PGPOOL_APP_DSN, PGPOOL_APP_POOL_*). Celery's
Django fixup is installed because DJANGO_SETTINGS_MODULE is set: it closes
Django's connections, and calls ``close_pool()``, around every task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery, signals

import pgpool_core.servers.celery  # noqa: F401  (the import under test)
from tests.celery.config import DJANGO_TASK, celery_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.settings")

BASE = Path(os.environ["PGPOOL_CELERY_DIR"])
REPORT = BASE / "signals.jsonl"

app = Celery("pgpool_django_test")
app.conf.update(celery_config(BASE))
# One child runs the tasks in turn: fetching them together spares a broker
# poll between two tasks (2 s each with Celery 5.3's filesystem transport).
app.conf.worker_prefetch_multiplier = 10

if os.environ.get("PGPOOL_QUERY_AT_IMPORT"):
    # A query in the worker's main process as it starts (what an
    # AppConfig.ready() check or a schedule read from the database does):
    # Celery's Django fixup then drops the alias's pool there.
    import django
    from django.db import connection

    django.setup()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@app.task(name=DJANGO_TASK)
def django_session() -> dict[str, Any]:
    """Return this task's process and backend, and what it found in the session."""
    from django.db import connection

    with connection.cursor() as cursor:
        # A session setting left by an earlier task on the same backend would
        # show here: the connection must come back reset.
        cursor.execute(
            "SELECT pg_backend_pid(), current_setting('pgpool.left_by_task', true)"
        )
        backend, left = cursor.fetchone()
        cursor.execute("SET pgpool.left_by_task = 'yes'")
    return {"pid": os.getpid(), "backend": backend, "left": left or None}


def report(event: str) -> None:
    from django.db import connection

    pool = connection.pool
    state = {"event": event, "pid": os.getpid(), "open": pool.process_pool_open}
    with open(REPORT, "a") as out:
        out.write(json.dumps(state) + "\n")


# Connected after pgpool_core.servers.celery's receivers, so they run after them.


@signals.worker_process_shutdown.connect
def _process_shutdown(**kwargs: Any) -> None:
    report("worker_process_shutdown")
