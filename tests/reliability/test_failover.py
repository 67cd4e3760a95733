"""Failover: a primary with a streaming standby, and a conninfo naming both.

``host=primary,standby port=p1,p2 target_session_attrs=read-write``: the
primary stops, the standby is promoted. Until the promotion no session can be
made (the standby is read-only, libpq refuses it), so requests fail; after it
the app writes to the new primary within RECOVERY_BOUND, and no write ever
reaches a server in recovery (the standby logs every write it is sent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from pgpool_core import ForkSafePool, check_socket, check_target_session_attrs
from tests.harness.postgres import PgServer, start_cluster, start_standby, stop_cluster
from tests.harness.servers import LoadLoop, RunningServer
from tests.reliability.support import (
    RECOVERY_BOUND,
    Outcome,
    Window,
    first_success_after,
    serve_app,
)

pytestmark = pytest.mark.slow

TABLE = "CREATE TABLE failover_writes (id serial PRIMARY KEY, port int)"
#: What the standby's log_statement = 'mod' logs for each write it is sent.
WRITE = "statement: INSERT INTO failover_writes"
READY = "database system is ready to accept connections"


@pytest.fixture
def pair() -> Iterator[tuple[PgServer, PgServer]]:
    """A throwaway primary and its streaming standby, which logs the writes sent."""
    primary = start_cluster()
    try:
        primary.execute(TABLE)
        standby = start_standby(primary, log_statement="mod")
        try:
            yield primary, standby
        finally:
            stop_cluster(standby)
    finally:
        stop_cluster(primary)


def both(primary: PgServer, standby: PgServer) -> dict[str, str]:
    """The conninfo parameters naming both servers, primary first."""
    return {
        "host": f"{primary.host},{standby.host}",
        "port": f"{primary.port},{standby.port}",
        "target_session_attrs": "read-write",
    }


def test_failover_to_the_promoted_standby(
    serve: Callable[..., RunningServer], pair: tuple[PgServer, PgServer]
) -> None:
    primary, standby = pair
    server = serve_app(
        serve, "core", primary, workers=2, pool={"timeout": 1}, **both(primary, standby)
    )
    position = standby.log_position()
    with LoadLoop(server.port, "/write", concurrency=4) as load:
        load.wait_for(100)
        stopping = time.monotonic()
        primary.stop("fast")
        time.sleep(1.0)  # the standby, still in recovery, is all there is
        promoting = time.monotonic()
        standby.promote()
        promoted = time.monotonic()
        load.wait_for(100, sent_after=promoted)
        result = load.stop()

    recovery = first_success_after(result.responses, promoted)
    outcome = Outcome(
        "core",
        f"failover (promotion took {promoted - promoting:.2f} s)",
        result,
        [Window("failover", stopping, promoted + RECOVERY_BOUND)],
        [recovery or -1],
    )
    log = standby.log_since(position)
    in_recovery = log[: log.index(READY)] if READY in log else log
    sent_to_standby = in_recovery.count(WRITE)
    outcome.report()
    print(f"FAILOVER writes sent to the standby in recovery: {sent_to_standby}")
    assert recovery is not None and recovery < RECOVERY_BOUND, result.summary()
    outcome.assert_no_failure_beyond_in_flight(server.output())
    assert sent_to_standby == 0
    assert "read-only transaction" not in log
    written = [b for b in result.bodies() if "port" in b]
    assert {b["port"] for b in written} == {primary.port, standby.port}


def test_a_server_in_recovery_is_not_lent_for_writes(
    pair: tuple[PgServer, PgServer],
) -> None:
    """Its in_hot_standby says so with no round trip."""
    primary, standby = pair
    with standby.connect(target_session_attrs="any") as conn:
        assert conn.info.parameter_status("in_hot_standby") == "on"
        for attrs in ("read-write", "primary"):
            with pytest.raises(psycopg.OperationalError, match="in recovery"):
                check_target_session_attrs(conn, attrs)
        for attrs in ("any", "read-only", "standby", "prefer-standby", ""):
            check_target_session_attrs(conn, attrs)
        check_socket(conn)  # it asked for any server

    with primary.connect(target_session_attrs="read-write") as conn:
        check_socket(conn)
        conn.execute("SET default_transaction_read_only = on")
        check_target_session_attrs(conn, "primary")  # still not in recovery
        with pytest.raises(psycopg.OperationalError, match="read-only"):
            check_socket(conn)
        assert conn.closed  # by check_socket: a pool replaces it


def test_a_connection_refused_for_writes_is_replaced(pg_server: PgServer) -> None:
    """A connection whose server stopped taking writes is closed, not kept.

    Kept, it would be refused at every checkout until max_lifetime, and the
    pool would never connect again, which is when libpq picks the server
    that takes writes now. The session says it is read-only here (reset=None
    leaves the SET in place); a demoted primary says the same of all.
    """
    pool = ForkSafePool(
        pg_server.dsn(target_session_attrs="read-write"),
        min_size=1,
        max_size=1,
        timeout=2,
        reset=None,
    )
    try:
        with pool.connection() as conn:
            first = conn.info.backend_pid
            conn.execute("SET default_transaction_read_only = on")
        with pool.connection() as conn:
            conn.execute("CREATE TEMPORARY TABLE written (x int)")
            second = conn.info.backend_pid
        stats = pool.get_stats()
    finally:
        pool.close()
    assert second != first
    assert stats["connections_lost"] == 1


def test_a_primary_made_read_only_gets_one_write_per_connection(
    pair: tuple[PgServer, PgServer],
) -> None:
    """A planned switchover starts so: the server reports the change late.

    An idle backend applies a reload, and reports the new
    default_transaction_read_only, with its next statement: the next write on
    each pooled connection is refused; after that, none is lent for writes.
    """
    primary, _ = pair
    pool = ForkSafePool(
        primary.dsn(target_session_attrs="read-write"), min_size=2, timeout=1
    )
    try:
        for _ in range(2):
            with pool.connection() as conn, pool.connection() as other:
                conn.execute("INSERT INTO failover_writes (port) VALUES (1)")
                other.execute("INSERT INTO failover_writes (port) VALUES (1)")
        position = primary.log_position()
        primary.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        primary.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)

        outcomes = []
        for _ in range(6):
            try:
                with pool.connection() as conn:
                    conn.execute("INSERT INTO failover_writes (port) VALUES (2)")
                outcomes.append("written")
            except psycopg.errors.ReadOnlySqlTransaction:
                outcomes.append("refused by the server")
            except PoolTimeout:
                outcomes.append("no connection")
    finally:
        pool.close()
    refused = primary.log_since(position).count("read-only transaction")
    print(f"FAILOVER read-only primary: {outcomes}; {refused} writes refused")
    assert "written" not in outcomes
    assert outcomes.count("refused by the server") <= 2  # one per connection
    assert outcomes[-2:] == ["no connection"] * 2
    assert refused <= 2
