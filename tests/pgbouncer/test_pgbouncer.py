"""Through a real PgBouncer in transaction mode: the core option, then the examples.

PgBouncer 1.18 (Debian 12's) knows nothing of prepared statements: a
statement psycopg prepared on one server session is missing on the next
transaction's, unless the pool prepares none (``pgbouncer=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from pgpool_core import ForkSafePool
from tests.examples.test_examples import (
    CONFIGS,
    EXAMPLES,
    example_env,
    post_note,
    prepare,
    read_and_write,
)
from tests.harness.pgbouncer import PgBouncer
from tests.harness.postgres import PgServer
from tests.harness.servers import LoadResult, RunningServer

NOT_PREPARED = "prepared statement"  # "... does not exist" / "... already exists"


def _run_same_query_then_move(pool: ForkSafePool, bouncer: PgBouncer) -> None:
    """Run one query often enough to be prepared, then on another server session.

    PgBouncer hands a client the server session used last: while one other
    client holds that one in a transaction, the next transaction of the pool's
    connection runs on another session.
    """
    for i in range(10):
        with pool.connection() as conn:
            conn.execute("SELECT %s::int", [i]).fetchone()
    with psycopg.connect(bouncer.dsn()) as holder:
        holder.execute("SELECT 1")  # BEGIN: this client now holds a session
        with pool.connection() as conn:
            conn.execute("SELECT %s::int", [10]).fetchone()


def test_without_the_option_prepared_statements_break(pgbouncer: PgBouncer) -> None:
    """The failure the option prevents: proves the setup can show it."""
    pool = ForkSafePool(pgbouncer.dsn(), min_size=1, max_size=1)
    try:
        with pytest.raises(psycopg.errors.InvalidSqlStatementName) as err:
            _run_same_query_then_move(pool, pgbouncer)
        assert "does not exist" in str(err.value)
    finally:
        pool.close()


def test_with_the_option_nothing_is_prepared(
    pgbouncer: PgBouncer, pg_log: PgServer
) -> None:
    position = pg_log.log_position()
    pool = ForkSafePool(pgbouncer.dsn(), min_size=1, max_size=1, pgbouncer=True)
    try:
        _run_same_query_then_move(pool, pgbouncer)
        with pool.connection() as conn:
            assert conn.prepare_threshold is None
    finally:
        pool.close()
    assert NOT_PREPARED not in pg_log.log_since(position)


def test_reset_restores_the_connection_without_session_commands(
    pgbouncer: PgBouncer,
) -> None:
    pool = ForkSafePool(pgbouncer.dsn(), min_size=1, max_size=1, pgbouncer=True)
    try:
        with pool.connection() as conn:
            first = conn
            conn.autocommit = True
            conn.prepare_threshold = 0
            conn.read_only = True
        with pool.connection() as conn:
            assert conn is first
            assert conn.prepare_threshold is None
            assert conn.autocommit is False
            assert conn.read_only is None
            # The connection works: the reset left it idle and usable.
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def writes(server: RunningServer, count: int) -> LoadResult:
    """POST *count* notes, 16 at a time.

    Only writes: each commits, so psycopg keeps counting the INSERT on each
    connection and prepares it (a ROLLBACK, which ends every read request,
    makes psycopg forget what it prepared).
    """
    with ThreadPoolExecutor(16) as executor:
        return LoadResult(
            list(executor.map(lambda i: post_note(server.port, f"w{i}"), range(count)))
        )


def _serve_example(
    serve: Callable[..., RunningServer],
    bouncer: PgBouncer,
    example: str,
    kind: str,
    *,
    option: bool,
) -> LoadResult:
    """Serve *example* through PgBouncer; 400 mixed requests, then 200 writes."""
    folder = EXAMPLES / example
    # Tables are made directly on the server; the app goes through PgBouncer.
    prepare(example, bouncer.server.dsn())
    env = example_env(example, bouncer.dsn())
    if option:
        env["PGPOOL_PGBOUNCER"] = "1"
    server = serve(kind, "", cwd=folder, config=folder / CONFIGS[kind], env=env)
    mixed = read_and_write(server, 400)
    return LoadResult(mixed.responses + writes(server, 200).responses)


@pytest.mark.servers
@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
@pytest.mark.parametrize("example", ["flask_notes", "django_site"])
def test_example_through_pgbouncer(
    serve: Callable[..., RunningServer],
    pgbouncer: PgBouncer,
    pg_log: PgServer,
    example: str,
    kind: str,
) -> None:
    position = pg_log.log_position()

    result = _serve_example(serve, pgbouncer, example, kind, option=True)

    logged = pg_log.log_since(position)
    not_prepared = logged.count(NOT_PREPARED)
    print(
        f"{example} {kind} through PgBouncer: {result.summary()};"
        f" {not_prepared} 'prepared statement' errors logged"
    )
    assert result.failures == [], result.summary()
    assert len([r for r in result.responses if r.status == 201]) == 300
    assert len(result.worker_pids()) >= 2, result.summary()
    assert not_prepared == 0
    assert pg_log.bad_mac_lines(position) == []


@pytest.mark.servers
def test_flask_example_through_pgbouncer_needs_the_option(
    serve: Callable[..., RunningServer],
    pgbouncer: PgBouncer,
    pg_log: PgServer,
) -> None:
    """Without PGPOOL_PGBOUNCER the same load fails: the test above can fail."""
    position = pg_log.log_position()

    result = _serve_example(serve, pgbouncer, "flask_notes", "uwsgi", option=False)

    print(f"flask_notes uwsgi through PgBouncer, no option: {result.summary()}")
    assert result.failures != []
    assert NOT_PREPARED in pg_log.log_since(position)
