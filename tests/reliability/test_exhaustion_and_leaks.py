"""Issue 7, scenarios 6 and 7: an exhausted pool, and connections that must come back.

6: more concurrent requests than ``max_size`` hold connections: the others get
a 503 with Retry-After within the pool's timeout + 1 s, and no more than
``max_waiting`` of them wait at all.

7: a view that raises, one that streams, one that forgets to commit: every
connection goes back to the pool, and a connection held longer than
``warn_held_after`` logs a warning naming the endpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pgpool_core import ConfigurationError, ForkSafePool, borrower
from tests.harness.postgres import PgServer
from tests.harness.servers import LoadResult, RunningServer, run_load
from tests.reliability.support import FRAMEWORKS, serve_app

RETRY_AFTER = 7


@pytest.mark.servers
@pytest.mark.parametrize("app", FRAMEWORKS)
def test_exhausted_pool_answers_503_and_honours_max_waiting(
    serve: Callable[..., RunningServer], pg_server: PgServer, app: str
) -> None:
    """6: one worker with threads; max_size requests hold every connection."""
    timeout, max_size, max_waiting, extra = 1.0, 2, 2, 5
    server = serve_app(
        serve,
        app,
        pg_server,
        workers=1,
        extra_args=["--threads", str(max_size + extra + 1)],
        pool={
            "min_size": max_size,
            "max_size": max_size,
            "timeout": timeout,
            "max_waiting": max_waiting,
        },
        settings={"PGPOOL_RETRY_AFTER": RETRY_AFTER},
    )
    with ThreadPoolExecutor(max_size + extra) as executor:
        holders = [
            executor.submit(server.get, f"/hold?seconds={timeout + 3}")
            for _ in range(max_size)
        ]
        pg_server.wait_for_sleepers(max_size)
        waiting = [executor.submit(server.get, "/query") for _ in range(extra)]
        answers = [future.result() for future in waiting]
        held = [future.result() for future in holders]

    output = server.output()
    print(
        f"RELIABILITY {app} exhaustion: {max_size} holders,"
        f" {extra} more requests: {LoadResult(answers).summary()},"
        f" slowest {max(a.elapsed for a in answers):.2f} s"
        f" (timeout {timeout} s, max_waiting {max_waiting})"
    )
    assert [r.status for r in held] == [200] * max_size, held
    assert [r.status for r in answers] == [503] * extra, answers
    for answer in answers:
        assert answer.headers["retry-after"] == str(RETRY_AFTER)
        assert answer.elapsed < timeout + 1.0, answer.elapsed
    # psycopg_pool's two refusals: TooManyRequests for those over max_waiting
    # at once, PoolTimeout for those that waited.
    assert output.count("requests waiting\n") == extra - max_waiting, output
    assert output.count("couldn't get a connection") == max_waiting, output


def wait_for_stats(server: RunningServer, timeout: float = 5.0) -> dict[str, Any]:
    """Return the worker's pool statistics once every connection is back."""
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, Any] = server.get("/stats").json()["stats"]
        if stats["pool_available"] == stats["pool_size"] or (
            time.monotonic() > deadline
        ):
            return stats
        time.sleep(0.05)


@pytest.mark.servers
@pytest.mark.parametrize("app", FRAMEWORKS)
def test_every_connection_goes_back_to_the_pool(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    notes_table: str,
    app: str,
) -> None:
    """7: raising, streaming and forgetful views leak nothing; a long hold warns."""
    size, threshold = 2, 0.5
    server = serve_app(
        serve,
        app,
        pg_server,
        workers=1,  # one process: its statistics are the whole app's
        pool={
            "min_size": size,
            "max_size": size,
            "timeout": 2,
            "warn_held_after": threshold,
        },
    )
    # Ten of each on a two-connection pool: one leak per request would leave
    # the later requests without a connection (503).
    paths = ["/raise", "/stream", "/forget"] * 10 + ["/query"] * 10
    result = run_load(server.port, paths, concurrency=1)
    slow = server.get(f"/slow?seconds={threshold + 0.5}")

    statuses = [
        (path, r.status) for path, r in zip(paths, result.responses, strict=True)
    ]
    expected = [(path, 500 if path == "/raise" else 200) for path in paths]
    stats = wait_for_stats(server)
    print(f"RELIABILITY {app} leaks: {len(paths) + 1} requests, stats {stats}")
    assert statuses == expected, result.summary()
    assert slow.status == 200
    streams = [
        r.body.decode()
        for p, r in zip(paths, result.responses, strict=True)
        if p == "/stream"
    ]
    assert all(body.count("\n") == 3 for body in streams), streams[0]
    assert stats["pool_size"] == size
    assert stats["pool_available"] == size, stats
    assert pg_server.execute(f"SELECT note FROM {notes_table}") == [], "rolled back"

    warnings = [line for line in server.output().splitlines() if "held for" in line]
    endpoint = "reliability.slow" if app == "flask" else "django_views.slow"
    assert len(warnings) == 1, warnings
    assert "GET /slow" in warnings[0] and endpoint in warnings[0], warnings[0]
    assert f"warn_held_after={threshold}" in warnings[0], warnings[0]


# -- warn_held_after in the core ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(0, "seconds > 0"), (-1, "seconds > 0"), ("5", "seconds > 0"), (True, "> 0")],
)
def test_warn_held_after_is_checked(value: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool("host=localhost", warn_held_after=value)
    assert info.value.setting == "warn_held_after"
    assert fragment in str(info.value)


def test_a_long_loan_logs_a_warning_naming_its_borrower(
    pg_server: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgpool.pool")
    pool = ForkSafePool(
        pg_server.dsn(), min_size=1, name="held", warn_held_after=0.2, timeout=5
    )
    try:
        with pool.connection():
            pass  # quick: no warning
        with borrower("the nightly report"):
            with pool.connection():
                time.sleep(0.3)
        conn = pool.getconn()
        time.sleep(0.3)
        pool.putconn(conn)
    finally:
        pool.close()

    warnings = [r.getMessage() for r in caplog.records if "held for" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("pool 'held': a connection was held for 0.")
    assert "by the nightly report" in warnings[0]
    assert "warn_held_after=0.2" in warnings[0]
    assert "by an unnamed borrower" in warnings[1]


def test_no_warning_without_warn_held_after(
    pg_server: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "pgpool")
    pool = ForkSafePool(pg_server.dsn(), min_size=1, timeout=5)
    try:
        with borrower("a slow view"), pool.connection():
            time.sleep(0.2)
    finally:
        pool.close()
    assert "held for" not in caplog.text
