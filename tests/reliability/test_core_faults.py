"""Faults under load, with the framework-neutral app under gunicorn --preload.

The framework versions are in tests/reliability/test_faults.py; here the
core's check and reconnection are proven on their own, and a longer outage.
The faults and the way failures count are shared (tests/reliability/support.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.harness.blackhole import BlackHoleProxy
from tests.harness.postgres import PgServer
from tests.harness.servers import LoadLoop, RunningServer, run_load
from tests.reliability.support import (
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

pytestmark = pytest.mark.servers


def serve_core(
    serve: Callable[..., RunningServer],
    pg: PgServer,
    *,
    pool_timeout: float = 5,
    **dsn_params: object,
) -> RunningServer:
    return serve_app(serve, "core", pg, pool={"timeout": pool_timeout}, **dsn_params)


def test_terminated_backends(
    serve: Callable[..., RunningServer], pg_log: PgServer
) -> None:
    server = serve_core(serve, pg_log)
    with LoadLoop(server.port, "/query") as load:
        load.wait_for(200)
        window = terminate_backends(pg_log)
        load.wait_for(400, sent_after=window.end)
        result = load.stop()

    outcome = Outcome("core", "terminated backends", result, [window])
    outcome.report()
    outcome.assert_no_failure_beyond_in_flight()
    assert len([r for r in result.responses if r.started > window.end]) >= 400


def test_database_restart(
    serve: Callable[..., RunningServer], running_database: PgServer
) -> None:
    pg = running_database
    server = serve_core(serve, pg)
    with LoadLoop(server.port, "/query", timeout=15) as load:
        load.wait_for(200)
        window, accepting = restart_database(pg)
        time.sleep(RECOVERY_BOUND + 2)
        result = load.stop()

    recovery = first_success_after(result.responses, accepting)
    Outcome("core", "restart", result, [window], [recovery or -1]).report()
    assert recovery is not None, "requests succeed again after the restart"
    assert [r for r in result.responses if r.started > window.end], "load went on"
    Outcome("core", "restart", result, [window]).assert_no_failure_beyond_in_flight()


def test_database_down_for_a_while(
    serve: Callable[..., RunningServer], running_database: PgServer
) -> None:
    """A longer outage: reconnect attempts must not have backed off for minutes."""
    pg = running_database
    server = serve_core(serve, pg, pool_timeout=2)
    with LoadLoop(server.port, "/query", timeout=15) as load:
        load.wait_for(100)
        start = time.monotonic()
        pg.stop("fast")
        # psycopg_pool alone tries again 1, 3, 7, 15 and 31 s after the fault:
        # the server is back at 25 s, the first connection would come at 28 s.
        time.sleep(25)
        pg.start()
        accepting = time.monotonic()
        time.sleep(RECOVERY_BOUND + 2)
        result = load.stop()

    first_ok = first_success_after(result.responses, accepting)
    window = Window("25 s outage", start, accepting + RECOVERY_BOUND)
    outcome = Outcome("core", "25 s outage", result, [window], [first_ok or -1])
    outcome.report()
    assert first_ok is not None, result.summary()
    assert first_ok < RECOVERY_BOUND, "requests succeed within 2 s of acceptance"
    assert [r for r in result.responses if r.started > window.end], "load went on"
    outcome.assert_no_failure_beyond_in_flight()


def test_idle_connections_killed_by_the_server(
    serve: Callable[..., RunningServer], pg_log: PgServer
) -> None:
    """The seed's case: idle pooled connections die; the next requests succeed."""
    server = serve_core(serve, pg_log, options="-c idle_session_timeout=1000")
    clock, position = ServerClock(pg_log), pg_log.log_position()
    with LoadLoop(server.port, "/query") as load:
        load.wait_for(200)
        killed = idle_death(load, pg_log, idle=2.5)
        load.wait_for(len(load.responses) + 400)
        result = load.stop()

    kills = idle_kills(clock, position)  # a request in flight at one may fail
    outcome = Outcome(
        "core", f"idle death ({killed} connections killed)", result, kills
    )
    outcome.report()
    assert killed > 0, "the server ended the idle connections"
    outcome.assert_no_failure_beyond_in_flight()


def test_half_open_connections_fail_within_the_timeouts(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    blackhole: BlackHoleProxy,
) -> None:
    """The path to the server turns into a black hole: nothing hangs for good.

    Established connections then look healthy to the client; a query sent on
    one fails once tcp_user_timeout passes, a new connection once
    connect_timeout does, a wait for one once the pool's timeout does.
    """
    user_timeout_ms, connect_timeout, pool_timeout = 2000, 2, 3
    server = serve_core(
        serve,
        pg_server,
        pool_timeout=pool_timeout,
        host=blackhole.host,
        port=blackhole.port,
        tcp_user_timeout=user_timeout_ms,
        connect_timeout=connect_timeout,
    )
    before = run_load(server.port, ["/query"] * 100, concurrency=8)
    assert before.failures == [], before.summary()

    blackhole.cut()
    cut = time.monotonic()
    during = run_load(server.port, ["/query"] * 40, concurrency=8, timeout=30)

    # A request may meet the three waits in turn, at worst.
    bound = user_timeout_ms / 1000 + connect_timeout + pool_timeout + 1
    slowest = max(r.elapsed for r in during.responses)
    blackhole.restore()
    restored = time.monotonic()
    Outcome(
        "core",
        f"half-open (slowest answer {slowest:.2f} s, bound {bound:.0f} s)",
        during,
        [Window("black hole", cut, restored)],
    ).report()
    # The framework-less app answers 500 where the frameworks answer 503.
    assert all(r.status in (200, 500) for r in during.responses), during.summary()
    assert slowest < bound, during.summary()
    assert during.failures, "the black hole was noticed"

    deadline = time.monotonic() + 30
    while server.get("/query", timeout=15).status != 200:
        assert time.monotonic() < deadline, "the app serves again once the path is back"
        time.sleep(0.2)
    after = run_load(server.port, ["/query"] * 100, concurrency=8)
    assert after.failures == [], after.summary()
