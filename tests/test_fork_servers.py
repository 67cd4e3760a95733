"""The bug and the fix, under real preforking servers over TLS."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.forking import fork_problems
from tests.harness.postgres import PgServer
from tests.harness.servers import (
    GUNICORN_HOOKS,
    RunningServer,
    ServerNotAnswering,
    run_load,
)

pytestmark = pytest.mark.servers

REQUESTS = 500
CONCURRENCY = 16


def serve_plain_app(
    serve: Callable[..., RunningServer],
    pg: PgServer,
    kind: str,
    mode: str,
    *,
    hooks: bool = False,
    lazy_apps: bool = False,
    leak: bool = False,
    **options: object,
) -> RunningServer:
    env = {"PGPOOL_APP_DSN": pg.dsn(), "PGPOOL_APP_MODE": mode}
    if leak:
        env["PGPOOL_APP_LEAK"] = "1"
    return serve(
        kind,
        "tests.apps.plain_app:application",
        env=env,
        config=GUNICORN_HOOKS if hooks and kind == "gunicorn" else None,
        lazy_apps=lazy_apps,
        **options,
    )


@pytest.mark.parametrize(
    ("kind", "hooks", "lazy_apps"),
    [
        ("uwsgi", False, False),
        ("uwsgi", False, True),
        ("gunicorn", False, False),
        ("gunicorn", True, False),
    ],
    ids=["uwsgi", "uwsgi-lazy-apps", "gunicorn", "gunicorn-hooks"],
)
def test_forksafe_pool_under_server(
    serve: Callable[..., RunningServer],
    pg_log: PgServer,
    kind: str,
    hooks: bool,
    lazy_apps: bool,
) -> None:
    position = pg_log.log_position()
    server = serve_plain_app(
        serve, pg_log, kind, "forksafe", hooks=hooks, lazy_apps=lazy_apps
    )

    result = run_load(server.port, ["/query"] * REQUESTS, concurrency=CONCURRENCY)

    print(f"{kind} forksafe: {result.summary()}")
    assert fork_problems(result, pg_log, position, parent=server.proc.pid) == []
    assert len(result.worker_pids()) >= 2, result.summary()


@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
def test_naive_pool_is_caught(
    serve: Callable[..., RunningServer], pg_log: PgServer, kind: str
) -> None:
    """The same test catches the bug: a plain ConnectionPool opened before fork."""
    position = pg_log.log_position()
    try:
        server = serve_plain_app(serve, pg_log, kind, "naive", ready_timeout=30)
    except ServerNotAnswering as err:
        # Every worker hung at fork, before answering anything.
        assert err.workers_hung(), err
        return

    # Fewer requests than above: a worker of the naive app may hang for good
    # (uWSGI forked while a pool thread held the GIL), and each such request
    # then waits for the client's timeout.
    result = run_load(server.port, ["/query"] * 64, concurrency=CONCURRENCY, timeout=5)

    print(f"{kind} naive: {result.summary()}")
    assert fork_problems(result, pg_log, position, parent=server.proc.pid) != []


@pytest.mark.parametrize(
    ("kind", "hooks", "left_open"),
    [("gunicorn", True, 0), ("uwsgi", False, 1)],
    ids=["gunicorn-hooks-close-it", "uwsgi-workers-leave-it"],
)
def test_connection_left_out_in_the_master(
    serve: Callable[..., RunningServer],
    pg_log: PgServer,
    kind: str,
    hooks: bool,
    left_open: int,
) -> None:
    """Import-time code borrowed a connection and never gave it back.

    gunicorn's when_ready/pre_fork hooks close it in the master. uWSGI has no
    hook there: the master keeps it, and the workers that inherited it drop
    their copy without sending a byte (else its session would end).
    """
    position = pg_log.log_position()
    server = serve_plain_app(serve, pg_log, kind, "forksafe", hooks=hooks, leak=True)

    result = run_load(server.port, ["/query"] * 200, concurrency=CONCURRENCY)

    assert fork_problems(result, pg_log, position, parent=server.proc.pid) == []
    assert pg_log.sessions("leaked-in-master") == left_open


@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
def test_workers_stop_when_told(
    serve: Callable[..., RunningServer], pg_log: PgServer, kind: str
) -> None:
    """Pool threads leave the stop signals to the main thread: no worker hangs."""
    server = serve_plain_app(serve, pg_log, kind, "forksafe", hooks=True)
    result = run_load(server.port, ["/query"] * 100, concurrency=CONCURRENCY)
    assert result.failures == []

    returncode = server.stop(timeout=20)

    output = server.output()
    assert returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
