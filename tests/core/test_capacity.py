"""Capacity: the worst case against the server's limit, and the warning at start."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgpool_core import ForkSafePool, _process, _sizing
from pgpool_core.ops import capacity
from tests.conftest import REPO
from tests.harness.postgres import PgServer
from tests.harness.servers import RunningServer, run_load

OVER = "more than the server allows"


def test_plan_counts_hosts_workers_and_celery() -> None:
    limit = _sizing.ServerLimit(max_connections=100, superuser_reserved=3)
    plan = _sizing.Plan(max_size=5, workers=4, hosts=3, celery=2)
    assert (plan.web, plan.background, plan.total) == (60, 30, 90)
    assert plan.fits(limit)
    bigger = _sizing.Plan(max_size=10, workers=4, hosts=3, celery=2)
    assert not bigger.fits(limit)
    # 97 available over 3 x (4 + 2) = 18 processes: max_size 5 fits.
    assert bigger.largest_max_size(limit) == 5
    advice = bigger.advice(limit)
    assert advice[0] == "lower max_size to 5 or less"
    assert "PgBouncer in transaction mode" in advice[1]
    assert "raise max_connections to 183 or more" in advice[2]


@pytest.mark.parametrize(
    ("min_size", "advice"),
    [
        (0, "lower max_size to 2 or less"),
        (2, "lower max_size to 2 or less"),
        # max_size 2 below min_size 4 would fail validation.
        (4, "lower min_size and max_size to 2 or less"),
    ],
)
def test_the_advice_never_breaks_validation(min_size: int, advice: str) -> None:
    limit = _sizing.ServerLimit(max_connections=100, superuser_reserved=3)
    plan = _sizing.Plan(max_size=8, min_size=min_size, workers=40)
    assert plan.advice(limit)[0] == advice
    size = int(advice.split(" to ")[1].split()[0])
    ForkSafePool("host=db", min_size=min(min_size, size), max_size=size)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("flask_notes/uwsgi.ini", 4), ("django_site/gunicorn.conf.py", 4)],
)
def test_workers_from_the_examples_configs(name: str, expected: int) -> None:
    path = REPO / "example_projects" / name
    assert capacity.workers_from_config(path) == expected


def test_workers_from_a_uwsgi_ini_without_them(tmp_path: Path) -> None:
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nmaster = true\n")
    assert capacity.workers_from_config(ini) is None


def test_web_concurrency_is_the_running_servers_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    assert _sizing.server_workers() == (7, "WEB_CONCURRENCY")


def test_reads_the_servers_limit(pg_server: PgServer) -> None:
    with pg_server.connect() as conn:
        limit = _sizing.read_server_limit(conn)
    [(max_connections, reserved)] = pg_server.execute(
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int"
    )
    assert (limit.max_connections, limit.superuser_reserved) == (
        max_connections,
        reserved,
    )
    assert limit.available <= max_connections - reserved


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pgpool.capacity" and r.levelno == logging.WARNING
    ]


def test_one_warning_per_process_when_over(
    pg_server: PgServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "100")  # 100 x 4 > 300
    pool = ForkSafePool(pg_server.dsn(), min_size=1, max_size=4)
    try:
        for _ in range(3):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        _process.release(pool)
        with pool.connection() as conn:  # a new pool, same process
            conn.execute("SELECT 1")
    finally:
        pool.close()
    [message] = _warnings(caplog)
    assert "100 worker(s) (WEB_CONCURRENCY) x max_size 4 = 400 connections" in message
    assert "max_connections 300 - superuser_reserved_connections" in message
    assert "; to fit, lower max_size to 2 or less; " in message
    assert "pgpool capacity" not in message, "no framework: no command to name"


@pytest.mark.parametrize(
    ("framework", "command"),
    [("flask", "flask pgpool capacity"), ("django", "manage.py pgpool capacity")],
)
def test_the_warning_names_the_frameworks_command(
    pg_server: PgServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    framework: str,
    command: str,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "100")
    if framework == "flask":
        from flask import Flask

        from flask_pgpool import PgPool

        app = Flask("capacity")
        app.config.update(PGPOOL_CONNINFO=pg_server.dsn(), PGPOOL_MIN_SIZE=4)
        PgPool(app)
        pool = app.extensions["pgpool"].pools["default"]
    else:
        from tests.django.support import database_settings, load_alias

        wrapper = load_alias(
            database_settings(pg_server, OPTIONS={"pool": {"min_size": 4}})
        )
        pool = wrapper.pool
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    finally:
        pool.close()
    [message] = _warnings(caplog)
    # 297 connections over 100 workers: max_size 2, below min_size 4.
    assert "to fit, lower min_size and max_size to 2 or less" in message
    assert f"`{command}` sums the hosts" in message
    other = "manage.py" if framework == "flask" else "flask pgpool"
    assert other not in message


@pytest.mark.parametrize("pgbouncer", [False, True])
def test_no_warning_when_it_fits_or_behind_pgbouncer(
    pg_server: PgServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    pgbouncer: bool,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "100" if pgbouncer else "2")
    pool = ForkSafePool(pg_server.dsn(), min_size=1, max_size=4, pgbouncer=pgbouncer)
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    finally:
        pool.close()
    assert _warnings(caplog) == []


@pytest.mark.servers
@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
def test_each_worker_warns_once_at_start(
    serve: Callable[..., RunningServer], pg_server: PgServer, kind: str
) -> None:
    folder = REPO / "example_projects" / "flask_notes"
    config = folder / ("uwsgi.ini" if kind == "uwsgi" else "gunicorn.conf.py")
    # The example: 4 workers x max_size 4. Told there are 80, it does not fit.
    server = serve(
        kind,
        "",
        cwd=folder,
        config=config,
        env={"DATABASE_URL": pg_server.dsn(), "WEB_CONCURRENCY": "80"},
    )
    result = run_load(server.port, ["/notes?limit=1"] * 100)
    server.stop()

    assert result.failures == [], result.summary()
    warned = re.findall(r"in process (\d+): 80 worker\(s\)", server.output())
    assert OVER in server.output()
    # One warning per worker that served, none twice, none from the master.
    assert sorted(int(pid) for pid in warned) == sorted(set(map(int, warned)))
    assert result.worker_pids() <= set(map(int, warned))
    assert server.proc.pid not in set(map(int, warned))


def test_the_plan_says_which_workers_would_starve() -> None:
    limit = _sizing.ServerLimit(max_connections=20, superuser_reserved=3)
    plan = _sizing.Plan(max_size=4, min_size=4, workers=8)
    assert plan.start_share(limit) == 2
    assert plan.starving(limit) == (
        "with min_size 4 each, the first 5 worker(s) to start would take all 17"
        " connections and the last 3 worker(s) would get no connection: each"
        " connects 2 (17 // 8) at start, more only while its requests wait"
    )
    crowd = _sizing.Plan(max_size=1, min_size=1, workers=30)
    assert crowd.start_share(limit) == 1
    assert crowd.starving(limit) == (
        "13 of the 30 worker(s) will get no connection while the others hold one each"
    )
    fits = _sizing.Plan(max_size=8, min_size=2, workers=8)
    assert (fits.start_share(limit), fits.starving(limit)) == (None, None)


def test_a_worker_makes_its_share_at_start_and_grows_on_demand(
    pg_server: PgServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "100")  # 100 x min_size 4 > 297
    [(available,)] = pg_server.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
    )
    share = available // 100
    pool = ForkSafePool(pg_server.dsn(), min_size=4, max_size=4, name="share")
    try:
        pool.wait(timeout=10)
        stats = pool.get_stats()
        assert (stats["pool_min"], stats["pool_size"]) == (share, share), stats
        # Requests that wait make it grow, up to max_size.
        held = [pool.getconn() for _ in range(share + 1)]
        assert pool.get_stats()["pool_size"] == share + 1
        for conn in held:
            pool.putconn(conn)
    finally:
        pool.close()
    [message] = _warnings(caplog)
    assert "worker(s) would get no connection: each connects" in message


@pytest.fixture
def limited_role(pg_server: PgServer) -> Iterator[str]:
    """A role whose CONNECTION LIMIT is 2: its logins past that get 53300."""
    pg_server.execute("DROP ROLE IF EXISTS pgpool_limited")
    pg_server.execute(
        "CREATE ROLE pgpool_limited LOGIN PASSWORD 'limited-Secret-1'"
        " CONNECTION LIMIT 2"
    )
    try:
        yield pg_server.dsn(user="pgpool_limited", password="limited-Secret-1")
    finally:
        pg_server.terminate(*pg_server.client_backends(user="pgpool_limited"))
        pg_server.execute("DROP ROLE IF EXISTS pgpool_limited")


def test_a_full_server_stops_the_growth_not_the_pool(
    limited_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No slot left: a pool with connections keeps them and stops asking.

    Retrying every second, it would take the next slot freed, which may be
    the only one a worker without any connection can get.
    """
    monkeypatch.setenv("WEB_CONCURRENCY", "1")  # a server's worker: one first
    pool = ForkSafePool(limited_role, min_size=4, max_size=4, name="full")
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        deadline = time.monotonic() + 10
        stats = pool.get_stats()
        # The refused ones given up: the count falls as an attempt fails, the
        # pool's minimum right after, as its refusal is handled.
        while stats["pool_size"] > 2 or stats["pool_min"] != stats["pool_size"]:
            assert time.monotonic() < deadline, stats
            time.sleep(0.05)
            stats = pool.get_stats()
        # Two, or one if the two others started at once and each counted
        # the other (PostgreSQL counts a role's sessions as each starts).
        assert stats["pool_min"] == stats["pool_size"] in (1, 2), stats
        time.sleep(1.5)  # psycopg_pool would retry within a second
        assert pool.get_stats()["connections_num"] == stats["connections_num"]
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_plan_counts_what_a_uwsgi_master_keeps() -> None:
    """Django's start-up connection, under uWSGI without fork hooks: one per
    host, for the master's life (docs/django.rst)."""
    limit = _sizing.ServerLimit(max_connections=100, superuser_reserved=3)
    plan = _sizing.Plan(max_size=1, workers=4, hosts=3, celery=8, master=1)
    assert plan.total == 3 * 4 + 3 * 8 + 3
    assert plan.describe() == (
        "3 host(s) x 4 worker(s) x max_size 1 = 12 + 3 host(s) x 8 Celery"
        " child(ren) x max_size 1 = 24 + 3 host(s) x 1 kept by the uWSGI master"
        " = 3, 39"
    )
    assert (
        _sizing.Plan(max_size=2, workers=32, hosts=3, master=1).largest_max_size(limit)
        == (97 - 3) // 96
    )
