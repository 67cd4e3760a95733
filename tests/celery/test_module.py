"""pgpool_core.servers.celery without a worker: receivers, pool check, error."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest
from celery import signals
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadPool

import pgpool_core.servers.celery

RECEIVERS = {
    signals.worker_init: "pgpool.init",
    signals.worker_process_init: "pgpool.process_init",
    signals.worker_process_shutdown: "pgpool.process_shutdown",
    signals.worker_shutdown: "pgpool.shutdown",
}


def connected(signal: Any, uid: str) -> int:
    """Return how many receivers of *signal* were connected with *uid*."""
    return sum(1 for key, _ in signal.receivers if key[0] == uid)


def test_import_connects_each_receiver_once() -> None:
    importlib.reload(pgpool_core.servers.celery)
    importlib.reload(pgpool_core.servers.celery)

    assert {uid: connected(signal, uid) for signal, uid in RECEIVERS.items()} == {
        uid: 1 for uid in RECEIVERS.values()
    }


class CustomPrefork(PreforkPool):
    pass


@pytest.mark.parametrize(
    ("pool_cls", "prefork"),
    [
        ("prefork", True),
        ("processes", True),
        ("celery.concurrency.prefork:TaskPool", True),
        (PreforkPool, True),
        (CustomPrefork, True),
        ("solo", False),
        ("threads", False),
        ("gevent", False),
        ("eventlet", False),
        (SoloPool, False),
        (ThreadPool, False),
        (None, False),
    ],
)
def test_is_prefork_pool(pool_cls: object, prefork: bool) -> None:
    assert pgpool_core.servers.celery.is_prefork_pool(pool_cls) is prefork


def test_without_celery_the_import_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "celery", None)  # what a missing package does
    monkeypatch.delitem(sys.modules, "pgpool_core.servers.celery")

    with pytest.raises(
        ImportError, match=r"pip install psycopg-forksafe\[celery\]"
    ) as info:
        importlib.import_module("pgpool_core.servers.celery")

    assert isinstance(info.value.__cause__, ImportError)
