"""A forked child and the connection its thread inherited (os.fork and libc fork).

Celery's prefork workers call close() and close_pool() in every child; a
management command may fork and query; a server's worker inherits what
wsgi.py left open in the master. None of them may touch the parent's socket.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from django_pgpool.base import DatabaseWrapper
from pgpool_core import lifecycle
from tests.django.support import run_project
from tests.harness.forking import FORKS, run_in_child
from tests.harness.postgres import PgServer

MakeWrapper = Callable[..., DatabaseWrapper]

# Python 3.12+ warns when os.fork() runs while threads (the pool's) exist, as
# they do in a gunicorn master without the hooks: the case under test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

# One connection per pool: getting the same backend again proves it was pooled.
POOL = {"pool": {"min_size": 1, "max_size": 1, "timeout": 5}}


def backend_pid(wrapper: Any) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("first", ["close", "close_pool", "query"])
def test_child_never_touches_the_parents_connection(
    make_wrapper: MakeWrapper, pg_log: PgServer, first: str
) -> None:
    """The parent has a pool (and its threads), as a gunicorn master without hooks."""
    wrapper = make_wrapper(OPTIONS=POOL)
    parent_backend = backend_pid(wrapper)  # checked out across the fork
    held = wrapper.connection
    position = pg_log.log_position()

    def child() -> dict[str, Any]:
        backends = []
        if first == "close":
            wrapper.close()
        elif first == "close_pool":
            wrapper.close_pool()
        backends.append(backend_pid(wrapper))
        wrapper.close()
        wrapper.close_pool()
        backends.append(backend_pid(wrapper))
        wrapper.close()
        return {
            "backends": backends,
            # Returned to the inherited pool or closed, it would be closed.
            "held_closed": held.closed,
            "held_abandoned": lifecycle.is_abandoned(held),
        }

    result = run_in_child(child, os.fork)

    assert parent_backend not in result["backends"]
    assert result["held_closed"] is False
    assert result["held_abandoned"] is True
    assert wrapper.connection is held
    assert backend_pid(wrapper) == parent_backend
    wrapper.close()
    assert backend_pid(wrapper) == parent_backend, "the parent's pool still works"
    assert pg_log.bad_mac_lines(position) == []


@pytest.mark.parametrize("fork", FORKS)
@pytest.mark.parametrize("moment", ["open", "pre_fork"])
def test_worker_closes_what_a_master_without_pool_left(
    app_env: dict[str, str], pg_log: PgServer, fork: str, moment: str
) -> None:
    """A server's master has no pool; its worker must close its plain connection.

    Django's own _close() fails there with AttributeError: 'Connection' object
    has no attribute '_pool'.
    """
    position = pg_log.log_position()
    result = run_project(
        "-m",
        "tests.django.forking_master",
        fork,
        moment,
        env={**app_env, "PGPOOL_APP_POOL_MAX": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)

    assert report["plain"] and report["threads"] == 1
    worker = report["worker"]
    assert worker["pooled"]
    assert worker["first"] == worker["again"], "the worker's connections are pooled"
    assert worker["first"] != report["master_backend"]
    if moment == "open":
        assert not worker["held_closed"], "the worker left the master's alone"
        assert report["master_after"] == report["master_backend"]
    assert report["held_closed_at_end"]
    assert pg_log.bad_mac_lines(position) == []
