"""Pools sized from the server's concurrency model, counted in pg_stat_activity.

The app (tests/apps/plain_app.py with PGPOOL_APP_DEFAULT_SIZES) sets no size
and queries in the master before the fork; its connections carry their own
application_name, so that only they are counted.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pgpool_core import ForkSafePool, _sizing
from pgpool_core.ops.snippets import read_snippet
from tests.harness.postgres import PgServer
from tests.harness.servers import GUNICORN_HOOKS, RunningServer, run_load

APP_NAME = "pgpool-sizing"
MAX_IDLE = 1.0  # seconds: idle connections above min_size close after it


def app_backends(pg: PgServer) -> list[tuple[int, int | None]]:
    """The app's backends: (backend pid, client port)."""
    rows = pg.execute(
        "SELECT pid, client_port FROM pg_stat_activity WHERE application_name = %s",
        [APP_NAME],
    )
    return [(int(pid), port) for pid, port in rows]


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process *pid* holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def master_backends(pg: PgServer, master: int) -> int:
    """How many of the app's backends are connected to the master's sockets."""
    ports = local_ports(master)
    return sum(port in ports for _, port in app_backends(pg))


class Peak:
    """The most app backends seen while the block runs (sampled every 20 ms)."""

    def __init__(self, pg: PgServer) -> None:
        self.pg = pg
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.most = max(self.most, len(app_backends(self.pg)))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def settled_count(pg: PgServer, at_most: int, timeout: float = 20.0) -> int:
    """Wait until the app holds at most *at_most* backends; return the count."""
    deadline = time.monotonic() + timeout
    while True:
        count = len(app_backends(pg))
        if count <= at_most or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


#: kind, workers, extra args, gunicorn hooks, default max_size per worker.
MODELS = {
    "gunicorn-sync": ("gunicorn", 4, [], False, 1),
    "gunicorn-gthread": ("gunicorn", 2, ["--threads", "4"], False, 4),
    "gunicorn-gevent": ("gunicorn", 2, ["-k", "gevent"], True, _sizing.GREEN_MAX_SIZE),
    "uwsgi": ("uwsgi", 4, [], False, 1),
    "uwsgi-threads": ("uwsgi", 2, ["--threads", "4"], False, 4),
}


@pytest.mark.servers
@pytest.mark.parametrize("model", MODELS)
def test_backends_held_follow_the_concurrency_model(
    serve: Callable[..., RunningServer], pg_server: PgServer, model: str
) -> None:
    """At load, each worker holds at most what it serves at once; at idle,
    min_size (1); the master, which queried before the fork, holds none."""
    kind, workers, extra, hooks, max_size = MODELS[model]
    server = serve(
        kind,
        "tests.apps.plain_app:application",
        env={
            "PGPOOL_APP_DSN": pg_server.dsn(application_name=APP_NAME),
            "PGPOOL_APP_DEFAULT_SIZES": "1",
            "PGPOOL_APP_MAX_IDLE": str(MAX_IDLE),
        },
        workers=workers,
        config=GUNICORN_HOOKS if hooks else None,
        extra_args=extra,
    )
    assert master_backends(pg_server, server.proc.pid) == 0

    with Peak(pg_server) as peak:
        result = run_load(server.port, ["/slow"] * 300, concurrency=24)
    idle = settled_count(pg_server, workers)

    print(f"{model}: peak {peak.most}, idle {idle}; {result.summary()}")
    assert result.failures == [], result.summary()
    assert 1 <= peak.most <= workers * max_size
    assert idle <= workers, "idle connections above min_size 1 are closed"
    assert master_backends(pg_server, server.proc.pid) == 0
    # The start-up line says what was chosen and why, per worker and host.
    said = re.findall(
        r"min_size 1, max_size (\d+) \(([^)]*)\); this host: (\d+)", server.output()
    )
    assert said, server.output()[-2000:]
    assert {int(size) for size, _, _ in said} == {max_size}
    assert {int(host) for _, _, host in said} == {workers}


@pytest.mark.servers
def test_gunicorn_without_hooks_counted_today(
    serve: Callable[..., RunningServer], pg_server: PgServer
) -> None:
    """gunicorn sync -w 4 --preload, no hooks, no size set: the issue's 20
    backends (4 x 4 in the workers, 4 in the master's pool) are now 4."""
    server = serve(
        "gunicorn",
        "tests.apps.plain_app:application",
        env={
            "PGPOOL_APP_DSN": pg_server.dsn(application_name=APP_NAME),
            "PGPOOL_APP_DEFAULT_SIZES": "1",
        },
        workers=4,
    )
    with Peak(pg_server) as peak:
        result = run_load(server.port, ["/slow"] * 300, concurrency=16)
    time.sleep(0.5)
    idle = len(app_backends(pg_server))
    print(f"gunicorn sync -w 4: peak {peak.most}, idle {idle}")
    assert result.failures == [], result.summary()
    assert peak.most <= 4 and idle <= 4


@pytest.mark.parametrize(
    ("min_size", "max_size", "expected"),
    [
        (None, 2, (2, 2)),  # issue 26.4: not "must be >= min_size (4)"
        (None, 1, (1, 1)),
        (None, 8, (4, 8)),
        (6, None, (6, 6)),
        (None, None, (4, 4)),
        (2, 3, (2, 3)),
    ],
)
def test_sizes_where_the_server_is_not_known(
    min_size: int | None, max_size: int | None, expected: tuple[int, int]
) -> None:
    """A script, the shell, runserver: psycopg_pool's defaults, and a default
    min_size follows a smaller max_size set alone."""
    pool = ForkSafePool("host=db", min_size=min_size, max_size=max_size)
    assert (pool.min_size, pool.max_size) == expected


SYNC = _sizing.Concurrency("gunicorn", "sync", 1, 4, "gunicorn sync worker")
THREADS = _sizing.Concurrency("uWSGI", "threads", 8, 2, "uWSGI threads = 8")
GREEN = _sizing.Concurrency("gunicorn", "green", 1000, 2, "gunicorn gevent worker")


@pytest.mark.parametrize(
    ("concurrency", "min_size", "max_size", "expected"),
    [
        (SYNC, None, None, (1, 1)),
        (THREADS, None, None, (1, 8)),
        (GREEN, None, None, (1, _sizing.GREEN_MAX_SIZE)),
        # What the user sets wins: both, min only, max only.
        (SYNC, 3, 5, (3, 5)),
        (SYNC, 3, None, (3, 3)),
        (THREADS, 2, None, (2, 8)),
        (THREADS, 12, None, (12, 12)),
        (THREADS, None, 2, (1, 2)),
        (SYNC, None, 2, (1, 2)),
    ],
)
def test_sizes_per_concurrency_model(
    concurrency: _sizing.Concurrency,
    min_size: int | None,
    max_size: int | None,
    expected: tuple[int, int],
) -> None:
    pool = ForkSafePool("host=db", min_size=min_size, max_size=max_size)
    sizes = pool.sizes_for(concurrency)
    assert (sizes.min_size, sizes.max_size) == expected


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("gunicorn.conf.py", "workers = 4\n", ("sync", 1, 4)),
        ("gunicorn.conf.py", "workers = 2\nthreads = 8\n", ("threads", 8, 2)),
        (
            "gunicorn.conf.py",
            "workers = 2\nworker_class = 'gevent'\nworker_connections = 50\n",
            ("green", 50, 2),
        ),
        ("uwsgi.ini", "[uwsgi]\nprocesses = 4\n", ("sync", 1, 4)),
        ("uwsgi.ini", "[uwsgi]\nprocesses = 2\nthreads = 4\n", ("threads", 4, 2)),
        ("uwsgi.ini", "[uwsgi]\nprocesses = 2\ngevent = 100\n", ("green", 100, 2)),
    ],
)
def test_concurrency_from_a_servers_config(
    tmp_path: Path, name: str, text: str, expected: tuple[str, int, int]
) -> None:
    """What the capacity commands read, outside the server."""
    path = tmp_path / name
    path.write_text(text)
    found = _sizing.from_config(path)
    assert found is not None
    assert (found.model, found.at_once, found.workers) == expected


@pytest.mark.servers
@pytest.mark.parametrize("shipped", [True, False], ids=["shipped-ini", "bare"])
def test_django_under_uwsgi_master_keeps_no_backend(
    serve: Callable[..., RunningServer],
    pg_log: PgServer,
    tmp_path: Path,
    shipped: bool,
) -> None:
    """Issue 26.3: tests/django/wsgi.py queries in the master and keeps its
    connection. With the shipped uwsgi.ini (py-call-uwsgi-fork-hooks) the
    master closes it before the first fork: no backend for the master's life,
    none reset at stop. Without it, uWSGI runs no Python in the master after
    the fork: it keeps that one backend (counted by the capacity command)."""
    ini = tmp_path / "uwsgi.ini"
    text = read_snippet("uwsgi", "django", app="tests.django.wsgi:application")
    if not shipped:
        text = text.replace("py-call-uwsgi-fork-hooks = true\n", "")
    ini.write_text(text.replace("processes = 4", "processes = 2"))
    position = pg_log.log_position()
    server = serve(
        "uwsgi",
        "",
        config=ini,
        env={
            "PGPOOL_APP_DSN": pg_log.dsn(application_name=APP_NAME),
            "DJANGO_SETTINGS_MODULE": "tests.django.settings",
        },
    )
    result = run_load(server.port, ["/query"] * 100, concurrency=8)
    assert result.failures == [], result.summary()
    held = master_backends(pg_log, server.proc.pid)
    assert server.stop() == 0
    time.sleep(0.5)
    log = pg_log.log_since(position)
    # The master's start-up query made the first of the app's backends (the
    # workers connect after the fork): count its resets, not those of other
    # processes that the shared server's log holds meanwhile.
    first = re.search(
        rf"\[(\d+)\] .*connection authorized: .*application_name="
        rf"{re.escape(APP_NAME)}\b",
        log,
    )
    assert first is not None, log[-2000:]
    resets = sum(
        "Connection reset by peer" in line and f"[{first.group(1)}]" in line
        for line in log.splitlines()
    )

    print(f"django uwsgi shipped={shipped}: master {held}, resets {resets}")
    if shipped:
        assert (held, resets) == (0, 0)
    else:
        assert held == 1


@pytest.mark.parametrize(
    ("line", "closes"), [("", False), ("py-call-uwsgi-fork-hooks = true\n", True)]
)
def test_whether_a_uwsgi_master_closes_at_fork(
    tmp_path: Path, line: str, closes: bool
) -> None:
    path = tmp_path / "uwsgi.ini"
    path.write_text(f"[uwsgi]\nprocesses = 4\n{line}")
    found = _sizing.from_config(path)
    assert found is not None and found.master_closes is closes


def test_max_size_alone_in_flask_and_django_settings(pg_server: PgServer) -> None:
    """Issue 26.4: PGPOOL_MAX_SIZE = 2, or OPTIONS["pool"] {"max_size": 2},
    alone: accepted, with min_size 2 (it used to fail: "must be >= min_size
    (4)", a min_size nobody set)."""
    from flask import Flask

    from django_pgpool import conf
    from flask_pgpool import PgPool

    app = Flask("max-size-alone")
    app.config.update(PGPOOL_CONNINFO=pg_server.dsn(), PGPOOL_MAX_SIZE=2)
    PgPool(app)
    pool = app.extensions["pgpool"].pools["default"]
    assert (pool.min_size, pool.max_size) == (2, 2)
    pool.close()

    options = conf.pool_options(
        "default", {"OPTIONS": {"pool": {"max_size": 2}}, "CONN_MAX_AGE": 0}
    )
    assert options == {"max_size": 2}
    django_pool = ForkSafePool(pg_server.dsn(), **options)
    assert (django_pool.min_size, django_pool.max_size) == (2, 2)


def test_a_pool_made_in_a_recorded_worker_and_its_start_up_line(
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a server hook recorded sizes the pool made after it; the first
    connection logs the sizes, why, and the host's sum; resize() still wins."""
    monkeypatch.setattr(_sizing, "_recorded", None)
    monkeypatch.setattr(_sizing, "_found", None)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    _sizing.record(
        _sizing.Concurrency("gunicorn", "sync", 1, 4, "gunicorn sync worker")
    )
    caplog.set_level(logging.INFO, logger="pgpool.capacity")
    pool = ForkSafePool(pg_server.dsn(), name="recorded")
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert (pool.pool.min_size, pool.pool.max_size) == (1, 1)
        [line] = [r.getMessage() for r in caplog.records if r.name == "pgpool.capacity"]
        assert re.search(
            r"pool 'recorded' in process \d+: min_size 1, max_size 1 \(gunicorn"
            r" sync worker: one request at a time\); this host: 4 worker\(s\)"
            r" \(gunicorn workers\) x max_size 1 = 4 of max_connections \d+",
            line,
        ), line
        pool.resize(2, 3)
        assert (pool.min_size, pool.max_size) == (2, 3)
    finally:
        pool.close()
