"""A server's master in a process of its own: python -m tests.django.forking_master.

Run by test_fork.py with a fork kind ("os.fork" or "libc fork") and
"open" or "pre_fork". A fresh process has no other thread, the only state in
which libc's fork() is safe for CPython, as in a uWSGI master. The master has
no pool: its connection is plain, without ``_pool``; with "pre_fork" it is
closed before the fork, as gunicorn's pre_fork hook does. A worker forked from
it then does what Django does when a request starts, and queries. Prints what
happened as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from pgpool_core import _process as lifecycle  # noqa: E402
from tests.harness.forking import FORKS, run_in_child  # noqa: E402


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def main(fork_kind: str, moment: str) -> dict[str, Any]:
    lifecycle.mark_forking_master()
    master_backend = backend_pid()
    held = connection.connection
    report: dict[str, Any] = {
        "master_backend": master_backend,
        "plain": getattr(held, "_pool", None) is None,
    }
    if moment == "pre_fork":
        lifecycle.close_in_master()
    report["threads"] = threading.active_count()

    def worker() -> dict[str, Any]:
        connection.close_if_unusable_or_obsolete()  # a request starts
        connection.close()
        first = backend_pid()
        connection.close()  # a request ends
        pool = connection.pool
        return {
            "first": first,
            "again": backend_pid(),
            "pooled": pool is not None and pool.process_pool_open,
            "held_closed": held.closed,
        }

    report["worker"] = run_in_child(worker, FORKS[fork_kind])
    if moment == "open":
        report["master_after"] = backend_pid()
    connection.close()
    report["held_closed_at_end"] = held.closed
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
