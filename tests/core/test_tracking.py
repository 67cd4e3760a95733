"""The default reset resets the session only after a loan that may have changed it.

Each loan runs one kind of statement on a pool's only connection; the server's
log (``log_statement=all``) then says whether the session reset
(:data:`pgpool_core.RESET_SQL`, which ends with ``DISCARD SEQUENCES``) was
sent. Plain data access and transaction control send none; everything else,
and whatever the client cannot read, sends it. ``reset="always"`` sends it
after every loan.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgpool_core import ConfigurationError, ForkSafePool
from pgpool_core._tracking import changes_session
from tests.harness.postgres import PgServer

Connection = psycopg.Connection[Any]
Loan = Callable[[Connection], Any]

TABLE = "pgpool_tracked"


@pytest.fixture(scope="module")
def table(pg_server: PgServer) -> str:
    pg_server.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id serial PRIMARY KEY, a int)"
    )
    pg_server.execute("CREATE SEQUENCE IF NOT EXISTS pgpool_tracked_seq")
    return TABLE


def resets_sent(pool: ForkSafePool, pg_log: PgServer, loan: Loan) -> int:
    """Run *loan* on *pool*'s connection; return how many session resets followed."""
    with pool.connection() as conn:
        conn.execute("SELECT 1")  # made and configured before the count starts
    pool.check()  # settled
    position = pg_log.log_position()
    with pool.connection() as conn:
        loan(conn)
    pool.check()  # settled: its reset, if any, is logged
    statements = pg_log.statements_since(position)
    assert statements, "nothing logged: is log_statement on?"
    return sum("DISCARD SEQUENCES" in statement for statement in statements)


@pytest.fixture
def make_pool(
    make_pool: Callable[..., ForkSafePool],
) -> Callable[..., ForkSafePool]:
    """conftest's, its statements logged by the server, under a name of its own."""

    def make(**options: Any) -> ForkSafePool:
        kwargs = {"options": "-c log_statement=all", "application_name": "tracked"}
        kwargs.update(options.pop("kwargs", {}))
        return make_pool(kwargs=kwargs, **options)

    return make


def _run(query: Any) -> Loan:
    def loan(conn: Connection) -> None:
        conn.execute(query)

    loan.__name__ = repr(query)
    return loan


def _executemany(conn: Connection) -> None:
    conn.cursor().executemany(f"INSERT INTO {TABLE} (a) VALUES (%s)", [[1], [2]])


def _stream(conn: Connection) -> None:
    list(conn.cursor().stream("SELECT generate_series(1, 3)"))


def _copy_out(conn: Connection) -> None:
    with conn.cursor().copy("COPY (SELECT 1) TO STDOUT") as copy:
        list(copy)


def _copy_in(conn: Connection) -> None:
    with conn.cursor().copy(f"COPY {TABLE} (a) FROM STDIN") as copy:
        copy.write_row([3])


def _transaction_block(conn: Connection) -> None:
    with conn.transaction():
        conn.execute(f"UPDATE {TABLE} SET a = a WHERE false")
        with conn.transaction():  # a savepoint
            conn.execute("SELECT 1")


def _sql_control(conn: Connection) -> None:
    conn.autocommit = True
    for statement in ("BEGIN", "SAVEPOINT s", "RELEASE s", "COMMIT"):
        conn.execute(statement)
    for statement in ("START TRANSACTION", "ROLLBACK", "BEGIN", "END"):
        conn.execute(statement)
    conn.execute("BEGIN")
    conn.execute("ABORT")


def _server_cursor(conn: Connection) -> None:
    with conn.cursor("pgpool_named") as cur:
        cur.execute("SELECT 1")
        cur.fetchall()


def _direct_cursor(conn: Connection) -> None:
    # A cursor the connection did not make: its statements are not read.
    psycopg.Cursor(conn).execute("SELECT 1")


def _client_cursor_factory(conn: Connection) -> None:
    conn.cursor_factory = psycopg.ClientCursor
    conn.execute("SELECT %s", [1])


def _pipeline(conn: Connection) -> None:
    with conn.pipeline():
        conn.execute("SELECT 1")
        conn.execute(f"INSERT INTO {TABLE} (a) VALUES (%s)", [4])


def _pipeline_set(conn: Connection) -> None:
    with conn.pipeline():
        conn.execute("SELECT 1")
        conn.execute("SET search_path TO pg_catalog")


def _error_left(conn: Connection) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")


PLAIN: list[Loan] = [
    _run("SELECT 1"),
    _run("  -- a comment\n  /* and another */ ((SELECT 1))"),
    _run(b"SELECT 1"),
    _run(sql.SQL("SELECT {}").format(sql.Literal(1))),
    _run(f"INSERT INTO {TABLE} (a) VALUES (1)"),
    _run(f"UPDATE {TABLE} SET a = 2 WHERE a = 1"),
    _run(f"DELETE FROM {TABLE} WHERE a = 2"),
    _run(
        f"MERGE INTO {TABLE} t USING (VALUES (1)) v (a) ON t.a = v.a"
        " WHEN NOT MATCHED THEN INSERT (a) VALUES (v.a)"
    ),
    _run("VALUES (1), (2)"),
    _run("SHOW search_path"),
    _run(f"TABLE {TABLE}"),
    _run("WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
    _run("SELECT current_setting('search_path'), count(*) FROM pg_class"),
    _run("SELECT 1; SELECT 2;"),
    _executemany,
    _stream,
    _copy_out,
    _copy_in,
    _transaction_block,
    _sql_control,
    _client_cursor_factory,
    _pipeline,
    _error_left,
]

CHANGING: list[Loan] = [
    _run("SET search_path TO pg_catalog"),
    _run("set application_name = 'x'"),
    _run("RESET search_path"),
    _run("SET ROLE NONE"),
    _run("SET SESSION AUTHORIZATION DEFAULT"),
    _run("PREPARE pgpool_p AS SELECT 1"),
    _run("DEALLOCATE ALL"),
    _run("LISTEN pgpool_channel"),
    _run("UNLISTEN *"),
    _run("DECLARE pgpool_c CURSOR WITH HOLD FOR SELECT 1"),
    _run("CREATE TEMP TABLE pgpool_t (a int)"),
    _run("SELECT 1 AS a INTO TEMP pgpool_into"),
    _run("DISCARD TEMP"),
    _run("LOAD 'plpgsql'"),
    _run("DO $$BEGIN PERFORM 1; END$$"),
    _run("NOTIFY pgpool_channel"),  # not recognised
    _run("SELECT set_config('pgpool.marker', 'x', false)"),
    _run("SELECT pg_catalog.pg_advisory_lock(4712)"),
    _run("SELECT pg_advisory_lock_shared(4712)"),
    _run("SELECT pg_try_advisory_lock(4712)"),
    _run("SELECT setseed(0.5)"),
    _run("SELECT nextval('pgpool_tracked_seq')"),
    _run("SELECT setval('pgpool_tracked_seq', 7)"),
    _run("SELECT 1; SET search_path TO pg_catalog"),
    _run("/* SELECT */ SET search_path TO pg_catalog"),
    _run("/* /* nested */ SELECT 1 */ SET search_path TO pg_catalog"),
    _run("-- SELECT\nSET search_path TO pg_catalog"),
    _run(b"SET search_path TO pg_catalog"),
    # A ";" inside a line comment is no statement's end.
    _run("-- a note; SELECT\nSET search_path TO pg_catalog"),
    _run("SELECT 1; -- a note; SELECT\nSET search_path TO pg_catalog"),
    # PostgreSQL's line comment ends at a carriage return too.
    _run("-- a note\rSET search_path TO pg_catalog"),
    # An UPDATE of pg_settings is a SET (PostgreSQL's docs, "pg_settings").
    _run("UPDATE pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path'"),
    # Functions that run the text of a query: set_config() is not in the text.
    _run(
        "SELECT query_to_xml('SELECT set_' || 'config(''search_path'', ''pg_catalog'',"
        " false)', true, true, '')"
    ),
    _run(
        "SELECT * FROM ts_stat('SELECT to_tsvector(set_' || 'config(''search_path'',"
        " ''pg_catalog'', false))')"
    ),
    # A Unicode-escaped identifier spells any function's name.
    _run("SELECT U&\"\\0073et_config\"('search_path', 'pg_catalog', false)"),
    _run(sql.SQL("SET search_path TO {}").format(sql.Identifier("pg_catalog"))),
    _server_cursor,
    _direct_cursor,
    _pipeline_set,
]


@pytest.mark.parametrize("loan", PLAIN, ids=lambda loan: loan.__name__)
def test_a_plain_loan_sends_no_session_reset(
    make_pool: Callable[..., ForkSafePool], pg_log: PgServer, table: str, loan: Loan
) -> None:
    assert resets_sent(make_pool(), pg_log, loan) == 0


@pytest.mark.parametrize("loan", CHANGING, ids=lambda loan: loan.__name__)
def test_a_loan_that_may_change_the_session_is_reset(
    make_pool: Callable[..., ForkSafePool], pg_log: PgServer, table: str, loan: Loan
) -> None:
    pool = make_pool()
    assert resets_sent(pool, pg_log, loan) == 1
    assert resets_sent(pool, pg_log, _run("SELECT 1")) == 0, "and only after it"


@pytest.mark.parametrize("loan", PLAIN[:3], ids=lambda loan: loan.__name__)
def test_reset_always_resets_after_every_loan(
    make_pool: Callable[..., ForkSafePool], pg_log: PgServer, table: str, loan: Loan
) -> None:
    assert resets_sent(make_pool(reset="always"), pg_log, loan) == 1


def test_reset_none_never_resets(
    make_pool: Callable[..., ForkSafePool], pg_log: PgServer
) -> None:
    pool = make_pool(reset=None)
    assert resets_sent(pool, pg_log, _run("SET search_path TO pg_catalog")) == 0


@pytest.mark.parametrize(
    ("options", "seen"),
    [({}, "42"), ({"reset": "always"}, "")],
    ids=["default", "always"],
)
def test_only_always_undoes_what_a_function_changed(
    make_pool: Callable[..., ForkSafePool],
    pg_server: PgServer,
    options: dict[str, Any],
    seen: str,
) -> None:
    """A row-level-security helper that calls set_config(..., false) itself.

    The statement is plain (a SELECT of the app's function): the client
    cannot see what the function does. The docs' table says so.
    """
    pg_server.execute(
        "CREATE OR REPLACE FUNCTION pgpool_set_tenant(t text) RETURNS text"
        " LANGUAGE sql AS $$ SELECT set_config('app.tenant', t, false) $$"
    )
    pool = make_pool(**options)
    with pool.connection() as conn:
        conn.execute("SELECT pgpool_set_tenant('42')")
    with pool.connection() as conn:
        row = conn.execute("SELECT current_setting('app.tenant', true)").fetchone()
    assert row == (seen,)


def test_a_plain_loan_keeps_what_configure_set(
    make_pool: Callable[..., ForkSafePool], pg_log: PgServer
) -> None:
    """Not reset, configure does not run again; after a reset it does."""
    runs: list[int] = []

    def configure(conn: Connection) -> None:
        runs.append(1)
        conn.execute("SET search_path TO pg_catalog, public")
        conn.commit()

    pool = make_pool(configure=configure)
    assert resets_sent(pool, pg_log, _run("SELECT 1")) == 0
    assert runs == [1], "configure ran once, when the connection was made"
    assert resets_sent(pool, pg_log, _run("SET search_path TO public")) == 1
    assert runs == [1, 1], "and again after the reset (RESET ALL undid it)"
    with pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog, public",)


def test_a_rolled_back_write_is_still_warned_about(
    make_pool: Callable[..., ForkSafePool],
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Asked of the server (with the ROLLBACK) only after a statement that writes."""
    pool = make_pool()
    for statement, warned in [
        ("SELECT 1", False),
        (f"INSERT INTO {TABLE} (a) VALUES (5)", True),
    ]:
        caplog.clear()
        conn = pool.getconn()
        conn.execute(statement)
        pool.putconn(conn, warn_open_transaction=False)
        pool.check()
        lost = [r for r in caplog.records if "had written" in r.getMessage()]
        assert bool(lost) == warned, statement


def test_a_write_is_asked_about_only_after_its_own_loan(
    make_pool: Callable[..., ForkSafePool], pg_log: PgServer, table: str
) -> None:
    """The next loan, a read left open, is rolled back with a lone ROLLBACK."""
    pool = make_pool()
    with pool.connection() as conn:
        conn.execute(f"INSERT INTO {TABLE} (a) VALUES (7)")  # committed
    pool.check()
    position = pg_log.log_position()
    conn = pool.getconn()
    conn.execute("SELECT 1")
    pool.putconn(conn, warn_open_transaction=False)  # its rollback expected
    pool.check()
    statements = pg_log.statements_since(position)
    assert "ROLLBACK" in statements
    assert not [s for s in statements if "pg_current_xact_id_if_assigned" in s]


def test_a_statement_prepared_in_a_write_rolled_back_is_not_kept(
    make_pool: Callable[..., ForkSafePool], table: str
) -> None:
    """psycopg prepared it during the loan, whose transaction wrote: it may be
    planned against what the rollback undid (a loan that changed nothing
    else, otherwise rolled back with a lone ROLLBACK)."""
    pool = make_pool()
    conn = pool.getconn()
    conn.execute(f"INSERT INTO {TABLE} (a) VALUES (%s)", [8], prepare=True)
    pool.putconn(conn)  # no warning of a lost write asked for
    with pool.connection() as conn:
        rows = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    assert rows == []


@pytest.mark.parametrize("value", ["sometimes", "ALWAYS", "DISCARD ALL"])
def test_an_unknown_reset_word_is_refused(dsn: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(dsn, reset=value)
    assert info.value.setting == "reset"
    assert '"always"' in str(info.value)


def test_the_classifier_is_cheap() -> None:
    """Not minutes: the figures are in the documentation (timed with timeit)."""
    query = (
        'SELECT "app_item"."id", "app_item"."name", "app_item"."price" FROM'
        ' "app_item" WHERE ("app_item"."owner_id" = %s AND "app_item"."price" > %s)'
        ' ORDER BY "app_item"."name" ASC LIMIT 21'
    )
    assert not changes_session(query)
    seconds = timeit.timeit(lambda: changes_session(query), number=10_000)
    assert seconds / 10_000 < 50e-6


@pytest.mark.parametrize(
    "text", [" " * 100_000 + "$", "/*" + " " * 100_000, "(" * 100_000 + "$"]
)
def test_the_classifier_takes_linear_time(text: str) -> None:
    """Not seconds: no pattern backtracks over a long run of whitespace."""
    t0 = time.perf_counter()
    assert changes_session(text)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    "statement",
    [
        "-- a note; SELECT\nSET search_path TO pg_catalog",
        "-- a note\rSET search_path TO pg_catalog",
        "UPDATE pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path'",
        "SELECT query_to_xml('SELECT set_' || 'config(''search_path'', ''pg_catalog'',"
        " false)', true, true, '')",
        "SELECT U&\"\\0073et_config\"('search_path', 'pg_catalog', false)",
    ],
    ids=[
        "semicolon-in-comment",
        "carriage-return",
        "pg_settings",
        "query_to_xml",
        "U&",
    ],
)
def test_the_next_borrower_does_not_see_a_disguised_set(
    make_pool: Callable[..., ForkSafePool], statement: str
) -> None:
    """Each of these statements is a SET the first words do not show."""
    pool = make_pool()
    with pool.connection() as conn:
        conn.execute(statement)
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog",)
    with pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)


def test_pg_trgm_set_limit_is_a_set(
    make_pool: Callable[..., ForkSafePool], pg_server: PgServer
) -> None:
    """pg_trgm's set_limit() sets pg_trgm.similarity_threshold for the session
    (its documentation: "instead use SET pg_trgm.similarity_threshold")."""
    pg_server.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    pool = make_pool()
    with pool.connection() as conn:
        assert conn.execute("SELECT set_limit(0.5)").fetchone() == (0.5,)
    with pool.connection() as conn:
        row = conn.execute("SHOW pg_trgm.similarity_threshold").fetchone()
    assert row == ("0.3",)


@pytest.mark.parametrize("text", ["SELECT 1INTO TEMP t", "SELECT $1INTO t"])
def test_into_right_after_a_number_makes_a_table(text: str) -> None:
    """PostgreSQL 14 (supported) reads ``1INTO`` as ``1 INTO``; 15 refuses it.

    Only the classifier: the test server is 15, where these texts fail.
    """
    assert changes_session(text)
    assert not changes_session("SELECT point_into, x_into FROM t")
