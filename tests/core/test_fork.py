"""ForkSafePool across a real fork, over TLS.

Two kinds of fork: ``os.fork()``, which runs the ``os.register_at_fork``
handlers, and libc's ``fork()`` called directly, which runs none, as uWSGI
does: there only the pid check on access can notice the new process. Like
uWSGI's master, the process that calls libc's fork() must have no other thread
(CPython does not re-initialise its locks after such a fork).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from psycopg_pool import PoolClosed

from pgpool_core import ForkSafePool, _process
from tests.harness.forking import FORKS, run_in_child, server_sockets
from tests.harness.postgres import PgServer, backend_pid

pytestmark = pytest.mark.pool(min_size=2, max_size=2, timeout=10, name="forked")


def test_child_gets_its_own_backends_and_spares_the_parents(
    pool: ForkSafePool, pg_log: PgServer
) -> None:
    position = pg_log.log_position()
    pool.wait()
    held = pool.getconn()  # checked out across the fork
    parent_backends = {backend_pid(pool), held.info.backend_pid}

    def child() -> list[int]:
        seen = {backend_pid(pool) for _ in range(4)}
        # What a careless child might do with what it inherited:
        pool.putconn(held)
        pool.close()
        held.close()
        try:
            pool.getconn()
        except PoolClosed:
            return sorted(seen)
        raise AssertionError("a pool closed in the child stays closed there")

    child_backends = set(run_in_child(child))

    assert child_backends.isdisjoint(parent_backends)
    # The child's close() did not end the parent's sessions.
    assert held.execute("SELECT 1").fetchone() == (1,)
    pool.putconn(held)
    for _ in range(4):
        assert backend_pid(pool) in parent_backends
    assert pg_log.bad_mac_lines(position) == []


def test_child_logs_one_info_line_for_its_fresh_pool(pool: ForkSafePool) -> None:
    backend_pid(pool)

    def child() -> list[str]:
        records: list[str] = []

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record.getMessage())

        logger = logging.getLogger("pgpool")
        logger.setLevel(logging.INFO)
        logger.addHandler(Collect())
        for _ in range(3):
            backend_pid(pool)
        return records

    records = run_in_child(child)
    fresh = [r for r in records if "fresh pool made" in r]
    assert len(fresh) == 1, records
    assert f"process {os.getpid()}" in fresh[0]
    assert "'forked'" in fresh[0]


def test_inherited_sockets_are_pointed_away_in_the_child(
    pool: ForkSafePool,
) -> None:
    pool.wait()
    held = pool.getconn()
    fd = held.pgconn.socket

    def child() -> str:
        _process.after_fork_in_child()  # already ran for os.fork; idempotent
        return os.readlink(f"/proc/self/fd/{fd}")

    try:
        assert run_in_child(child) == os.devnull
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    finally:
        pool.putconn(held)


def test_connections_in_pool_threads_at_fork_are_abandoned_too(
    dsn: str, pg_server: PgServer
) -> None:
    """Fork while pool threads reset a returned connection and make new ones.

    Such connections are in neither the pool nor a loan: the child must still
    hold none of their sockets (it would otherwise close them when the garbage
    collector frees them, writing on the parent's sessions).
    """
    before = server_sockets(os.getpid(), pg_server.port)
    for attempt in range(10):
        pool = ForkSafePool(dsn, min_size=2, max_size=4, name=f"busy-{attempt}")
        try:
            # Returned at once: reset by a pool thread while min_size
            # connections (and one more: the pool was empty) are being made.
            backend_pid(pool)

            def child(pool: ForkSafePool = pool) -> list[int]:
                backend_pid(pool)
                mine = server_sockets(os.getpid(), pg_server.port)
                parents = server_sockets(os.getppid(), pg_server.port)
                return sorted((mine & parents) - before)

            assert run_in_child(child) == [], f"attempt {attempt}"
            assert backend_pid(pool) > 0  # the parent's sessions still work
        finally:
            pool.close()


@pytest.mark.parametrize("fork", FORKS.values(), ids=FORKS.keys())
def test_forking_master_gives_workers_a_pool(
    monkeypatch: pytest.MonkeyPatch, dsn: str, fork: Callable[[], int]
) -> None:
    """A master (no threads, plain connections) forks a worker that pools."""
    monkeypatch.setattr(_process, "_forking_master_pid", None)
    monkeypatch.setattr(_process, "_closed_at_fork_in", None)  # a first fork
    _process.mark_forking_master()
    pool = ForkSafePool(dsn, min_size=1, max_size=1, name="mastered")
    master_conn = pool.getconn()  # import-time code that never gives it back
    master_fd = master_conn.pgconn.socket
    assert threading.active_count() == 1, threading.enumerate()

    def worker() -> dict[str, Any]:
        first = backend_pid(pool)
        # Code that gives the master's connection back in the worker (Django
        # closing the connection it inherited) must neither use nor close it.
        pool.putconn(master_conn)
        return {
            "first": first,
            "again": backend_pid(pool),
            "pooled": pool.process_pool_open,
            "master_fd": os.readlink(f"/proc/self/fd/{master_fd}"),
        }

    master_backend = master_conn.info.backend_pid
    result = run_in_child(worker, fork)
    assert result["pooled"]
    assert result["first"] == result["again"], "the worker's connection is pooled"
    assert result["first"] != master_backend
    if fork is os.fork:
        # The at-fork handler closed it in the master before the fork: no
        # child shares it, and the master keeps no backend for its life.
        assert master_conn.closed
        return
    assert result["master_fd"] == os.devnull
    # The master's own connection was left alone by the worker.
    assert master_conn.execute("SELECT 1").fetchone() == (1,)
    pool.close()
    assert master_conn.closed, "close() in the master closes its plain connections"


@pytest.mark.parametrize("fork", FORKS)
def test_the_guard_leaves_the_parent_once_per_process_before_any_use(
    fork: str,
) -> None:
    """ProcessGuard, the one pid check: *leave* runs first, once per process.

    With the parent's pid, before the first check in the child returns, at
    every depth of fork; a *leave* that raised runs again at the next check
    (the child must not go on with what it inherited).
    """
    calls: list[tuple[int, int]] = []
    failures = [RuntimeError("first try")]

    def leave(parent: int) -> None:
        calls.append((os.getpid(), parent))
        if failures:
            raise failures.pop()

    guard = _process.ProcessGuard(leave, shared=True)
    guard.check()
    assert calls == []
    parent = os.getpid()

    def child() -> dict[str, Any]:
        try:
            guard.check()
        except RuntimeError:
            pass
        guard.check()
        guard.check()
        grandchild = run_in_child(lambda: (guard.check(), list(calls))[1])
        return {"pid": os.getpid(), "calls": calls, "grandchild": grandchild}

    result = run_in_child(child, FORKS[fork])

    me = result["pid"]
    assert result["calls"] == [[me, parent], [me, parent]]
    assert result["grandchild"][-1][1] == me
    assert len(result["grandchild"]) == 3
    assert calls == [], "the parent never leaves itself"
