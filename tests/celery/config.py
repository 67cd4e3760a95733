"""Celery settings shared by the test worker and the test that sends tasks.

Broker and results live in files under one directory, so no server is needed:
kombu's filesystem transport and Celery's ``file://`` result backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The name the worker's task is registered and sent under.
TASK = "pgpool_test.backend_pid"
#: A task that holds a connection in a query (tests/celery/app.py).
SLEEP_TASK = "pgpool_test.sleep"
#: A task that sleeps without the database: the control of SLEEP_TASK's timing.
NAP_TASK = "pgpool_test.nap"
#: The task of the Django project's worker (tests/celery/django_app.py).
DJANGO_TASK = "pgpool_test.django_session"


def celery_config(base: Path) -> dict[str, Any]:
    """Return the settings of a Celery app whose broker and results are in *base*."""
    folders = {name: base / name for name in ("queue", "control", "results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "control_folder": str(folders["control"]),
            "store_processed": False,
            "polling_interval": 0.1,
        },
        "broker_connection_retry_on_startup": True,
        "result_backend": f"file://{folders['results']}",
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # One task at a time per child: the tasks spread over the children.
        "worker_prefetch_multiplier": 1,
        # Remote control and events need a broadcast the tests don't use.
        "worker_enable_remote_control": False,
        "worker_send_task_events": False,
        # A child stuck on a socket another process also reads (the naive
        # pool) is killed, and its task fails, instead of hanging the test.
        "task_time_limit": 10,
    }
