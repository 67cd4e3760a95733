"""Faults under load for the Flask and Django apps, served by gunicorn --preload.

Issue 7, scenarios 1 to 5: terminated backends, a database restart, idle
connections killed by the server, half-open connections, and a database that
is down when the app starts. tests/reliability/test_core_faults.py proves the
same of the core with a framework-less app.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.harness.blackhole import BlackHoleProxy
from tests.harness.postgres import PgServer
from tests.harness.servers import LoadLoop, RunningServer, run_load
from tests.reliability.support import (
    FRAMEWORKS,
    RECOVERY_BOUND,
    Outcome,
    ServerClock,
    Window,
    first_success_after,
    idle_death,
    idle_kills,
    restart_database,
    serve_app,
    terminate_backends,
)

pytestmark = [pytest.mark.servers, pytest.mark.parametrize("app", FRAMEWORKS)]

RETRY_AFTER = 7


def test_terminated_backends(
    serve: Callable[..., RunningServer], pg_log: PgServer, app: str
) -> None:
    """1: every backend terminated under load; only requests in flight may fail.

    The app's sessions log each statement: a liveness check with a round trip
    is an empty statement, and a healthy checkout must send none.
    """
    server = serve_app(serve, app, pg_log, options="-c log_statement=all")
    position = pg_log.log_position()
    with LoadLoop(server.port, "/query") as load:
        load.wait_for(200)
        window = terminate_backends(pg_log)
        load.wait_for(400, sent_after=window.end)
        result = load.stop()

    outcome = Outcome(app, "terminated backends", result, [window])
    outcome.report()
    outcome.assert_no_failure_beyond_in_flight()
    assert len([r for r in result.responses if r.started > window.end]) >= 400
    statements = pg_log.statements_since(position)
    assert "SELECT pg_backend_pid()" in statements, "the app's statements are logged"
    checks = [s for s in statements if not s.strip()]
    assert checks == [], f"{len(checks)} empty statements: checkouts cost a round trip"


def test_database_restart(
    serve: Callable[..., RunningServer], running_database: PgServer, app: str
) -> None:
    """2: fast restart under load; requests succeed within 2 s of acceptance."""
    pg = running_database
    server = serve_app(serve, app, pg, pool={"timeout": 3})
    with LoadLoop(server.port, "/query", timeout=15) as load:
        load.wait_for(200)
        window, accepting = restart_database(pg)
        time.sleep(RECOVERY_BOUND + 2)
        result = load.stop()

    recovery = first_success_after(result.responses, accepting)
    outcome = Outcome(app, "restart", result, [window], [recovery or -1])
    outcome.report()
    assert recovery is not None and recovery < RECOVERY_BOUND, result.summary()
    assert [r for r in result.responses if r.started > window.end], "load went on"
    outcome.assert_no_failure_beyond_in_flight()


def test_idle_connections_killed_by_the_server(
    serve: Callable[..., RunningServer], pg_log: PgServer, app: str
) -> None:
    """3, the seed's case: idle pooled connections die; the next requests succeed."""
    server = serve_app(serve, app, pg_log, options="-c idle_session_timeout=1000")
    clock, position = ServerClock(pg_log), pg_log.log_position()
    with LoadLoop(server.port, "/query") as load:
        load.wait_for(200)
        killed = idle_death(load, pg_log, idle=2.5)
        load.wait_for(len(load.responses) + 400)
        result = load.stop()

    kills = idle_kills(clock, position)  # a request in flight at one may fail
    outcome = Outcome(app, f"idle death ({killed} connections killed)", result, kills)
    outcome.report()
    assert killed >= 4, "every worker's connections were killed while idle"
    outcome.assert_no_failure_beyond_in_flight()


def test_half_open_connections_answer_503_in_time(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    blackhole: BlackHoleProxy,
    app: str,
) -> None:
    """4: the path to the server turns into a black hole: 503s, no hung worker.

    A query on an established connection fails once tcp_user_timeout passes; a
    request that waits for a connection gets its 503 once the pool's timeout
    does (new connections fail after connect_timeout, meanwhile).
    """
    user_timeout_ms, connect_timeout, pool_timeout = 1000, 2, 2
    workers = 4
    server = serve_app(
        serve,
        app,
        pg_server,
        workers=workers,
        pool={"min_size": 2, "max_size": 2, "timeout": pool_timeout},
        settings={"PGPOOL_RETRY_AFTER": RETRY_AFTER},
        host=blackhole.host,
        port=blackhole.port,
        tcp_user_timeout=user_timeout_ms,
        connect_timeout=connect_timeout,
    )
    before = run_load(server.port, ["/query"] * 100, concurrency=workers)
    assert before.failures == [], before.summary()

    blackhole.cut()
    cut = time.monotonic()
    # As many clients as workers: no request waits in the server's queue.
    during = run_load(server.port, ["/query"] * 16, concurrency=workers, timeout=60)
    blackhole.restore()
    restored = time.monotonic()
    with LoadLoop(server.port, "/query", timeout=30) as load:
        load.wait_for(1, timeout=60)
        while not any(r.ok for r in load.responses):
            assert time.monotonic() - restored < 30, "the app serves again"
            time.sleep(0.05)
        recovered = load.stop()

    bound = user_timeout_ms / 1000 + connect_timeout + pool_timeout + 1
    slowest = max(r.elapsed for r in during.responses)
    outcome = Outcome(
        app,
        f"half-open (slowest answer {slowest:.2f} s, bound {bound:.0f} s)",
        during,
        [Window("black hole", cut, restored)],
        [first_success_after(recovered.responses, restored) or -1],
    )
    outcome.report()
    assert [r.status for r in during.responses] == [503] * 16, during.summary()
    for response in during.responses:
        assert response.headers["retry-after"] == str(RETRY_AFTER)
    assert slowest < bound, during.summary()
    after = run_load(server.port, ["/query"] * 100, concurrency=workers)
    assert after.failures == [], after.summary()


@pytest.mark.parametrize("worker", ["sync", "gevent"])
def test_stalled_path_answers_503_within_socket_timeout(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    blackhole: BlackHoleProxy,
    app: str,
    worker: str,
) -> None:
    """Issue 27, 1: the path stops forwarding but keeps the connections open.

    The peer still acknowledges (a stuck proxy or pooler), so keepalives and
    tcp_user_timeout see nothing, and an idle connection passes the pool's
    check: a query on one fails once socket_timeout passes, a request that
    waits for a connection once the pool's timeout does. Before the fix, the
    requests ended when gunicorn's worker timeout killed the worker. The
    pool's health check answers within its own timeout (1 s). The same with
    gevent workers, whose psycopg waits are chosen after the patch: the bound
    works on top of whichever wait function psycopg uses.
    """
    socket_timeout, connect_timeout, pool_timeout = 2, 2, 3
    workers = 2
    server = serve_app(
        serve,
        app,
        pg_server,
        workers=workers,
        pool={
            "min_size": 2,
            "max_size": 2,
            "timeout": pool_timeout,
            "socket_timeout": socket_timeout,
        },
        settings={"PGPOOL_RETRY_AFTER": RETRY_AFTER},
        host=blackhole.host,
        port=blackhole.port,
        connect_timeout=connect_timeout,
        extra_args=["--worker-class", worker],
    )
    before = run_load(server.port, ["/query"] * 100, concurrency=workers)
    assert before.failures == [], before.summary()

    blackhole.stall()
    stalled = time.monotonic()
    # One probe per worker, each with its pool's stalled idle connections.
    probes = run_load(server.port, ["/pool-health"] * workers, concurrency=workers)
    during = run_load(server.port, ["/query"] * 12, concurrency=workers, timeout=60)
    blackhole.restore()
    restored = time.monotonic()
    deadline = restored + 30
    while server.get("/query", timeout=15).status != 200:
        assert time.monotonic() < deadline, "the app serves again once the path is"
        time.sleep(0.2)

    bound = max(socket_timeout, pool_timeout) + 2
    slowest = max(r.elapsed for r in during.responses)
    Outcome(
        app,
        f"stalled path, {worker} workers (slowest answer {slowest:.2f} s,"
        f" bound {bound:.0f} s)",
        during,
        [Window("stall", stalled, restored)],
    ).report()
    # django-health-check answers a failed check with a 500.
    unhealthy = 503 if app == "flask" else 500
    assert [r.status for r in probes.responses] == [unhealthy] * workers, (
        probes.summary()
    )
    assert max(r.elapsed for r in probes.responses) < 1 + 1, probes.summary()
    assert [r.status for r in during.responses] == [503] * 12, during.summary()
    for response in during.responses:
        assert response.headers["retry-after"] == str(RETRY_AFTER)
    assert slowest < bound, during.summary()
    assert any(b"socket_timeout" in r.body for r in during.responses), [
        r.body for r in during.responses
    ]


def test_database_down_at_boot(
    serve: Callable[..., RunningServer], running_database: PgServer, app: str
) -> None:
    """5: the app starts without its database, answers 503, then serves."""
    pg = running_database
    pool_timeout, workers = 2, 4
    pg.stop("fast")
    server = serve_app(
        serve,
        app,
        pg,
        workers=workers,
        import_query=False,
        pool={"timeout": pool_timeout},
        settings={"PGPOOL_RETRY_AFTER": RETRY_AFTER},
    )
    down = run_load(server.port, ["/query"] * 8, concurrency=workers, timeout=30)
    with LoadLoop(server.port, "/query", timeout=15) as load:
        pg.start()
        accepting = time.monotonic()
        time.sleep(RECOVERY_BOUND + 2)
        up = load.stop()

    recovery = first_success_after(up.responses, accepting)
    outcome = Outcome(
        app,
        f"down at boot ({len(down.responses)} requests while down, all 503)",
        up,
        [Window("down", 0, accepting + RECOVERY_BOUND)],
        [recovery or -1],
    )
    outcome.report()
    assert [r.status for r in down.responses] == [503] * 8, down.summary()
    for response in down.responses:
        assert response.headers["retry-after"] == str(RETRY_AFTER)
        assert response.elapsed < pool_timeout + 1
    assert recovery is not None and recovery < RECOVERY_BOUND, up.summary()
    outcome.assert_no_failure_beyond_in_flight()
    assert [r for r in up.responses if r.started > accepting + RECOVERY_BOUND]
    assert server.proc.poll() is None
    output = server.output()
    assert output.count("Booting worker") == workers, "no worker was restarted"
