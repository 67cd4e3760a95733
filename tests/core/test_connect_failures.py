"""Issue 15: a pool that cannot connect says why, at once, and backs off refused logins.

Against the real TLS server: a wrong password, a role without the right to
log in, a port where nothing listens. ``getconn()`` raises ConnectFailed (a
PoolTimeout) with psycopg's error, masked, as its cause, instead of waiting
for the pool's timeout; a pool that is merely busy still waits. Refused logins
are retried by one attempt per pool, after a growing delay (counted in the
server's log); an outage is retried at least every second.
"""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from pgpool_core import ConnectFailed, ForkSafePool, _psycopg_pool
from pgpool_core.errors import (
    REFUSED,
    SETTINGS,
    UNREACHABLE,
    ConfigurationError,
    connect_failure,
    unavailable_reason,
)
from tests.harness.delayproxy import DelayProxy
from tests.harness.postgres import PgServer, free_port

#: The pools' timeout: no test may come near it.
TIMEOUT = 30.0


@pytest.fixture
def role(pg_server: PgServer) -> Iterator[str]:
    """A role of its own (its failed logins are counted in the server's log)."""
    name = f"role_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'right-Pw-1'")
    try:
        yield name
    finally:
        pg_server.terminate(*pg_server.client_backends(user=name))
        pg_server.execute(f"DROP ROLE {name}")


def refused_logins(pg: PgServer, position: int, role: str) -> int:
    text = pg.log_since(position)
    return text.count(f'password authentication failed for user "{role}"')


def borrow(pool: ForkSafePool) -> tuple[BaseException, float]:
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout) as info:  # code that catches PoolTimeout
        with pool.connection():
            pass
    return info.value, time.monotonic() - t0


def test_a_wrong_password_fails_at_once_with_the_cause(
    pg_server: PgServer, role: str
) -> None:
    secret = "wrong-Pw-Leak"
    pool = ForkSafePool(
        pg_server.dsn(user=role, password=secret), timeout=TIMEOUT, name="wrongpw"
    )
    try:
        first, waited = borrow(pool)
        assert isinstance(first, ConnectFailed)
        assert waited < TIMEOUT / 3, "it waited for the first attempt, not the pool"
        cause = first.__cause__
        assert isinstance(cause, psycopg.OperationalError)
        assert "password authentication failed" in str(cause)
        assert cause.__traceback__ is None, "no frame holds the conninfo"
        assert str(first).startswith(
            "couldn't get a connection from pool 'wrongpw': the database refused"
            " the login: OperationalError: connection failed: "
        )
        assert unavailable_reason(first) == "the database refused the login"
        # The next attempt is a backoff away: the next borrower fails at once.
        second, waited = borrow(pool)
        assert isinstance(second, ConnectFailed)
        assert waited < 0.5
        assert secret not in str(first) + str(second) + repr(cause.pgconn)
    finally:
        pool.close()


def test_a_server_that_cannot_be_reached_fails_at_the_next_attempt(
    pg_server: PgServer,
) -> None:
    pool = ForkSafePool(pg_server.dsn(port=free_port()), timeout=TIMEOUT, name="gone")
    try:
        for _ in range(3):
            error, waited = borrow(pool)
            assert isinstance(error, ConnectFailed)
            # Each borrower waits for the next attempt (retried at least every
            # second), not for the pool's timeout.
            assert waited < TIMEOUT / 3
            assert "Connection refused" in str(error.__cause__)
            assert unavailable_reason(error) == "the database cannot be reached"
    finally:
        pool.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose server accepts connections and never answers (case 36).

    The kernel completes the handshake and acknowledges what libpq sends
    (the backlog): each attempt to connect fails after connect_timeout.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("min_size", [1, 4])
def test_a_server_that_never_answers_fails_at_the_next_attempt(
    pg_server: PgServer, silent_port: int, min_size: int
) -> None:
    """Whatever min_size: overlapping attempts fail the borrower all the same."""
    connect_timeout = 2  # libpq's least
    pool = ForkSafePool(
        pg_server.dsn(port=silent_port, connect_timeout=connect_timeout),
        min_size=min_size,
        timeout=TIMEOUT,
        name="silent",
    )
    try:
        error, waited = borrow(pool)
        assert isinstance(error, ConnectFailed), repr(error)
        # The pool's first attempts each take connect_timeout; the borrower
        # fails when they do, not after the pool's timeout.
        assert connect_timeout - 0.5 < waited < 2 * connect_timeout + 2, waited
        assert "timeout expired" in str(error.__cause__), error.__cause__
        assert unavailable_reason(error) == "the database cannot be reached"
        # Then each borrower waits for the next attempt to fail, at most a
        # connect_timeout (the next is under way or a second away).
        error, waited = borrow(pool)
        assert isinstance(error, ConnectFailed), repr(error)
        assert waited < connect_timeout + 2, waited
    finally:
        pool.close()


def test_a_busy_pool_still_waits_for_its_timeout(dsn: str) -> None:
    pool = ForkSafePool(dsn, min_size=1, max_size=1, timeout=TIMEOUT, name="busy")
    try:
        with pool.connection():
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout) as info:
                pool.getconn(timeout=0.5)
            assert not isinstance(info.value, ConnectFailed)
            assert time.monotonic() - t0 >= 0.5
            assert "after 0.50 sec" in str(info.value)
    finally:
        pool.close()


def test_refused_logins_back_off_one_attempt_per_pool(
    pg_log: PgServer, role: str
) -> None:
    """Four connections missing: four failed logins, then one per 1, 2, 4 s.

    Before issue 15: four per second (each missing connection retried every
    second); psycopg_pool alone: each missing connection after 1, 2, 4 s.
    """
    position = pg_log.log_position()
    pool = ForkSafePool(
        pg_log.dsn(user=role, password="refused-Pw-3"), min_size=4, timeout=TIMEOUT
    )
    try:
        pool.open()
        time.sleep(8.5)
        # 4 at once, then the probe at about 1, 3 and 7 s.
        assert 4 <= refused_logins(pg_log, position, role) <= 7
    finally:
        pool.close()


def test_an_outage_is_retried_at_least_every_second(pg_server: PgServer) -> None:
    pool = ForkSafePool(pg_server.dsn(port=free_port()), min_size=2, timeout=TIMEOUT)
    try:
        pool.open()
        time.sleep(3.5)
        # Two missing connections, each retried within the second.
        assert pool.get_stats()["connections_errors"] >= 6
    finally:
        pool.close()


def test_the_pool_fills_once_the_login_is_accepted(
    pg_server: PgServer, role: str
) -> None:
    """The probe's success lets the parked attempts connect at once."""
    pool = ForkSafePool(
        pg_server.dsn(user=role, password="new-Pw-2"), min_size=3, timeout=TIMEOUT
    )
    try:
        pool.open()
        error, _ = borrow(pool)
        assert isinstance(error, ConnectFailed)
        pg_server.execute(f"ALTER ROLE {role} PASSWORD 'new-Pw-2'")
        pool.wait(10)  # the probe retries after 1, 2, 4 s
        assert pool.get_stats()["pool_available"] == 3
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            psycopg.OperationalError(
                'connection failed: connection to server at "db" (10.0.0.1), port'
                ' 5432 failed: FATAL:  password authentication failed for user "app"'
            ),
            REFUSED,
        ),
        (
            psycopg.OperationalError(
                'connection failed: ... failed: FATAL:  database "nope" does not exist'
            ),
            REFUSED,
        ),
        (
            psycopg.OperationalError(
                "connection failed: ... failed: FATAL:  no pg_hba.conf entry for"
                ' host "10.0.0.2", user "app", database "app", no encryption'
            ),
            REFUSED,
        ),
        (
            psycopg.OperationalError(
                "connection failed: ... failed: FATAL:  permission denied for"
                ' database "x"\nDETAIL:  User does not have CONNECT privilege.'
            ),
            REFUSED,
        ),
        (
            psycopg.OperationalError(
                "connection failed: ... failed: FATAL:  the database system is"
                " starting up"
            ),
            UNREACHABLE,
        ),
        (
            psycopg.OperationalError(
                "connection failed: ... failed: FATAL:  sorry, too many clients already"
            ),
            UNREACHABLE,
        ),
        (
            psycopg.OperationalError(
                'connection failed: connection to server at "db", port 5432 failed:'
                " Connection refused\n\tIs the server running on that host and"
                " accepting TCP/IP connections?"
            ),
            UNREACHABLE,
        ),
        (
            psycopg.OperationalError(
                "failed to resolve host 'db.example.com': [Errno -2] Name or"
                " service not known"
            ),
            UNREACHABLE,
        ),
        (psycopg.OperationalError("connection timeout expired"), UNREACHABLE),
        (
            psycopg.OperationalError(
                "connection failed: ... failed: fe_sendauth: no password supplied"
            ),
            SETTINGS,
        ),
        (
            psycopg.OperationalError(
                "connection failed: ... failed: SSL error: certificate verify failed"
            ),
            SETTINGS,
        ),
        (
            psycopg.OperationalError('connection is bad: invalid sslmode value: "x"'),
            SETTINGS,
        ),
        (psycopg.ProgrammingError('invalid connection option "x"'), SETTINGS),
        (ConfigurationError("conninfo", "the callable returned int"), SETTINGS),
    ],
)
def test_what_a_failed_connect_means(error: BaseException, kind: str) -> None:
    assert connect_failure(error) == kind


def test_an_outage_is_logged_once_per_change_of_state(
    pg_server: PgServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 26: 64 two-line entries in ~4 s from 4 workers, before.

    While nothing listens on its port, a pool of min_size 4 logs one line when
    its attempts start failing and one each OUTAGE_REPORT_INTERVAL (1 s here),
    none of psycopg_pool's line per attempt; then one when it connects again.
    """
    monkeypatch.setattr(_psycopg_pool, "OUTAGE_REPORT_INTERVAL", 1.0)
    caplog.set_level(logging.INFO, logger="psycopg.pool")
    caplog.set_level(logging.INFO, logger="pgpool.pool")
    port = free_port()
    pool = ForkSafePool(
        pg_server.dsn(port=port), min_size=4, timeout=TIMEOUT, name="outage"
    )
    try:
        pool.open()
        time.sleep(3.5)
        down = [r for r in caplog.records if r.levelno >= logging.WARNING]
        attempts = pool.get_stats()["connections_errors"]
        assert attempts >= 12, "each missing connection retried every second"
        messages = [r.getMessage() for r in down]
        assert messages[0].startswith("error connecting in 'outage': ")
        assert "Connection refused" in messages[0]
        assert "\n" not in messages[0]
        still = messages[1:]
        assert 2 <= len(still) <= 4, messages
        assert all(
            m.startswith("still cannot connect in 'outage' after ") for m in still
        )
        assert all(r.name == "pgpool.pool" for r in down)
        caplog.clear()
        with DelayProxy(pg_server.port, 0.0, port=port):
            pool.wait(TIMEOUT)
            back = [
                r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            ]
            assert len(back) == 1, back
            assert re.fullmatch(
                r"connected again in 'outage' after \d+ s \(\d+ attempts failed\)",
                back[0],
            )
    finally:
        pool.close()
