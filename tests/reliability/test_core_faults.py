"""Faults under load, with the framework-neutral app under gunicorn --preload.

The framework packages add their own versions of these; here the core's check
and reconnection are proven on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import REPO
from tests.harness.blackhole import BlackHoleProxy
from tests.harness.postgres import PgServer
from tests.harness.servers import LoadLoop, RunningServer, run_load

pytestmark = pytest.mark.servers

HOOKS = REPO / "tests" / "apps" / "gunicorn_hooks.py"

CLIENT_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
    " AND pid <> pg_backend_pid() AND datname = current_database()"
)


def serve_app(
    serve: Callable[..., RunningServer],
    pg: PgServer,
    *,
    pool_timeout: float = 5,
    **dsn_params: object,
) -> RunningServer:
    env = {
        "PGPOOL_APP_DSN": pg.dsn(**dsn_params),
        "PGPOOL_APP_MODE": "forksafe",
        "PGPOOL_APP_TIMEOUT": str(pool_timeout),
    }
    return serve("gunicorn", "tests.apps.plain_app:application", env=env, config=HOOKS)


def test_terminated_backends(
    serve: Callable[..., RunningServer], pg_log: PgServer
) -> None:
    server = serve_app(serve, pg_log)
    with LoadLoop(server.port, "/query") as load:
        load.wait_for(200)
        victims = [row[0] for row in pg_log.execute(CLIENT_BACKENDS)]
        pg_log.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
            [victims],
        )
        while pg_log.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", [victims]
        ):
            time.sleep(0.01)
        gone = time.monotonic()
        seen = len(load.responses)
        load.wait_for(seen + 400)
        after = load.sent_after(gone)
        everything = load.stop()

    print(f"terminated {len(victims)} backends; {everything.summary()}")
    assert victims, "the app had connections to terminate"
    assert after.failures == [], after.summary()
    assert len(after.responses) >= 400


def test_database_restart(
    serve: Callable[..., RunningServer], pg_log: PgServer
) -> None:
    server = serve_app(serve, pg_log)
    with LoadLoop(server.port, "/query", timeout=15) as load:
        load.wait_for(200)
        pg_log.restart("fast")
        accepting = time.monotonic()
        time.sleep(4)
        settled = load.sent_after(accepting + 2.0)
        recovered = [r for r in load.sent_after(accepting).responses if r.status == 200]
        everything = load.stop()

    first_ok = min(r.started + r.elapsed for r in recovered) - accepting
    print(
        f"restart: first success {first_ok:.2f} s after the server accepted;"
        f" {everything.summary()}"
    )
    assert recovered, "requests succeed again after the restart"
    assert settled.responses, "requests were sent once the server was back"
    assert settled.failures == [], settled.summary()


def test_database_down_for_a_while(
    serve: Callable[..., RunningServer], pg_log: PgServer
) -> None:
    """A longer outage: reconnect attempts must not have backed off for minutes."""
    server = serve_app(serve, pg_log, pool_timeout=2)
    with LoadLoop(server.port, "/query", timeout=15) as load:
        load.wait_for(100)
        pg_log.stop("fast")
        # psycopg_pool alone tries again 1, 3, 7, 15 and 31 s after the fault:
        # the server is back at 25 s, the first connection would come at 28 s.
        time.sleep(25)
        pg_log.start()
        accepting = time.monotonic()
        time.sleep(4)
        settled = load.sent_after(accepting + 2.0)
        recovered = [r for r in load.sent_after(accepting).responses if r.status == 200]
        everything = load.stop()

    assert recovered, everything.summary()
    first_ok = min(r.started + r.elapsed for r in recovered) - accepting
    print(f"25 s outage: first success {first_ok:.2f} s after the server accepted")
    assert first_ok < 2.0, "requests succeed within 2 s of the server accepting"
    assert settled.responses and settled.failures == [], settled.summary()


def test_idle_connections_killed_by_the_server(
    serve: Callable[..., RunningServer], pg_log: PgServer
) -> None:
    """The seed's case: idle pooled connections die; the next requests succeed."""
    server = serve_app(serve, pg_log, options="-c idle_session_timeout=1000")
    with LoadLoop(server.port, "/query", max_requests=200) as load:
        load.wait_for(200)
    position = pg_log.log_position()
    time.sleep(2.5)  # every pooled connection is now past its idle timeout
    assert "idle-session timeout" in pg_log.log_since(position)

    with LoadLoop(server.port, "/query", max_requests=400) as load:
        load.wait_for(400)
        result = load.stop()

    assert result.failures == [], result.summary()


@pytest.fixture
def blackhole(pg_server: PgServer) -> Iterator[BlackHoleProxy]:
    proxy = BlackHoleProxy(pg_server.port)
    try:
        yield proxy
    finally:
        proxy.close()


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
    server = serve_app(
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
    during = run_load(server.port, ["/query"] * 40, concurrency=8, timeout=30)

    # A request may meet the three waits in turn, at worst.
    bound = user_timeout_ms / 1000 + connect_timeout + pool_timeout + 1
    slowest = max(r.elapsed for r in during.responses)
    print(f"black hole: slowest answer {slowest:.2f} s; {during.summary()}")
    assert all(r.status in (200, 500) for r in during.responses), during.summary()
    assert slowest < bound, during.summary()
    assert during.failures, "the black hole was noticed"

    blackhole.restore()
    deadline = time.monotonic() + 30
    while server.get("/query", timeout=15).status != 200:
        assert time.monotonic() < deadline, "the app serves again once the path is back"
        time.sleep(0.2)
    after = run_load(server.port, ["/query"] * 100, concurrency=8)
    assert after.failures == [], after.summary()
