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
from pgpool_core import _process
from tests.django.support import run_project
from tests.harness.forking import FORKS, bytes_sent, run_in_child
from tests.harness.postgres import PgServer, query_backend_pid

MakeWrapper = Callable[..., DatabaseWrapper]

# Python 3.12+ warns when os.fork() runs while threads (the pool's) exist, as
# they do in a gunicorn master without the hooks: the case under test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

# One connection per pool: getting the same backend again proves it was pooled.
POOL = {"pool": {"min_size": 1, "max_size": 1, "timeout": 5}}


@pytest.mark.parametrize("first", ["close", "close_pool", "query"])
def test_child_never_touches_the_parents_connection(
    make_wrapper: MakeWrapper, pg_log: PgServer, first: str
) -> None:
    """The parent has a pool (and its threads), as a gunicorn master without hooks."""
    wrapper = make_wrapper(OPTIONS=POOL)
    parent_backend = query_backend_pid(wrapper)  # checked out across the fork
    held = wrapper.connection
    position = pg_log.log_position()

    def child() -> dict[str, Any]:
        backends = []
        if first == "close":
            wrapper.close()
        elif first == "close_pool":
            wrapper.close_pool()
        backends.append(query_backend_pid(wrapper))
        wrapper.close()
        wrapper.close_pool()
        backends.append(query_backend_pid(wrapper))
        wrapper.close()
        return {
            "backends": backends,
            # Returned to the inherited pool or closed, it would be closed.
            "held_closed": held.closed,
            "held_abandoned": _process.is_abandoned(held),
        }

    result = run_in_child(child, os.fork)

    assert parent_backend not in result["backends"]
    assert result["held_closed"] is False
    assert result["held_abandoned"] is True
    assert wrapper.connection is held
    assert query_backend_pid(wrapper) == parent_backend
    wrapper.close()
    assert query_backend_pid(wrapper) == parent_backend, "the parent's pool still works"
    assert pg_log.bad_mac_lines(position) == []


def _close_cursor(cursor: Any) -> None:
    cursor.close()


# Every method of the wrapper through which a process can first reach
# self.connection (Django 5.2's and 6.x's BaseDatabaseWrapper and PostgreSQL
# DatabaseWrapper), called as Django or an app calls it.
ENTRY_POINTS: dict[str, Callable[[DatabaseWrapper], Any]] = {
    "ensure_connection": lambda w: w.ensure_connection(),
    "connect": lambda w: w.connect(),
    "close": lambda w: w.close(),
    "_close": lambda w: w._close(),
    "cursor": lambda w: _close_cursor(w.cursor()),
    "_cursor": lambda w: _close_cursor(w._cursor()),
    "chunked_cursor": lambda w: _close_cursor(w.chunked_cursor()),
    "create_cursor": lambda w: _close_cursor(w.create_cursor()),
    "commit": lambda w: w.commit(),
    "_commit": lambda w: w._commit(),
    "rollback": lambda w: w.rollback(),
    "_rollback": lambda w: w._rollback(),
    "get_autocommit": lambda w: w.get_autocommit(),
    "set_autocommit": lambda w: w.set_autocommit(False),
    "_set_autocommit": lambda w: w._set_autocommit(False),
    "savepoint": lambda w: w.savepoint(),
    "savepoint_rollback": lambda w: w.savepoint_rollback("s1_x1"),
    "savepoint_commit": lambda w: w.savepoint_commit("s1_x1"),
    "is_usable": lambda w: w.is_usable(),
    "close_if_health_check_failed": lambda w: w.close_if_health_check_failed(),
    "close_if_unusable_or_obsolete": lambda w: w.close_if_unusable_or_obsolete(),
    "check_constraints": lambda w: w.check_constraints(),
    "disable_constraint_checking": lambda w: w.disable_constraint_checking(),
    "enable_constraint_checking": lambda w: w.enable_constraint_checking(),
    "init_connection_state": lambda w: w.init_connection_state(),
    "ensure_timezone": lambda w: w.ensure_timezone(),
    "temporary_connection": lambda w: w.temporary_connection().__enter__(),
    "_nodb_cursor": lambda w: w._nodb_cursor().__enter__(),
    "pg_version": lambda w: w.pg_version,
    "get_database_version": lambda w: w.get_database_version(),
    "on_commit": lambda w: w.on_commit(lambda: None),
    "close_pool": lambda w: w.close_pool(),
}
# Django's calls them with a connection made (as Django's backend, they fail
# without one): in the child, the inherited one is no connection.
NEED_ONE = {"create_cursor", "_set_autocommit"}
# Those that never use self.connection (a pooled one: at most they ask
# whether there is one): the next query finds it inherited.
NEVER_READ = {
    "close_if_health_check_failed",
    "init_connection_state",
    "disable_constraint_checking",
    "enable_constraint_checking",
    "_nodb_cursor",  # a wrapper of its own
    "pg_version",  # read when the parent connected
    "get_database_version",
    "close_pool",
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_child_checks_at_each_entry_point_first(
    make_wrapper: MakeWrapper,
    pg_log: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    entry: str,
) -> None:
    """Not one byte on the parent's socket, whichever method the child calls first.

    The wrapper checks for an inherited connection where Django starts to use
    it, not at every read of ``self.connection``. The at-fork handlers do
    nothing here, as under uWSGI (libc's fork() runs none): the wrapper's
    check alone keeps the parent's socket untouched.
    """
    wrapper = make_wrapper(OPTIONS=POOL)
    parent_backend = query_backend_pid(wrapper)  # checked out across the fork
    held = wrapper.connection
    sent = bytes_sent(held.pgconn.socket)
    position = pg_log.log_position()
    monkeypatch.setattr(_process, "after_fork_in_child", lambda: None)

    def child() -> dict[str, Any]:
        assert wrapper.connection is held
        try:
            ENTRY_POINTS[entry](wrapper)
        except AttributeError:
            if entry not in NEED_ONE:
                raise
        after_entry = wrapper.connection
        backend = query_backend_pid(wrapper)
        return {
            "dropped": after_entry is not held,
            "backend": backend,
            "held_closed": held.closed,
            "held_abandoned": _process.is_abandoned(held),
        }

    result = run_in_child(child, os.fork)

    assert bytes_sent(held.pgconn.socket) == sent, "the child wrote on the socket"
    assert result["dropped"] or entry in NEVER_READ
    assert result["backend"] != parent_backend, "the child has its own connection"
    assert result["held_closed"] is False
    assert result["held_abandoned"] is True
    assert wrapper.connection is held
    assert query_backend_pid(wrapper) == parent_backend, "the parent's is still usable"
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
    if moment == "open" and fork == "os.fork":
        # The at-fork handler closed it in the master before its first fork,
        # through Django's wrapper: no child shares it, and the master's
        # next query connects anew instead of failing on a closed one.
        assert worker["held_closed"]
        assert report["master_after"] != report["master_backend"]
    elif moment == "open":
        # libc's fork runs no handler (uWSGI without fork hooks).
        assert not worker["held_closed"], "the worker left the master's alone"
        assert report["master_after"] == report["master_backend"]
    assert report["held_closed_at_end"]
    assert pg_log.bad_mac_lines(position) == []
