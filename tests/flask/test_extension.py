"""PgPool with the Flask test client: scopes, transactions, streams, apps, binds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask, Response, stream_with_context
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool, PoolTimeout

from flask_pgpool import PgPool, PgPoolState
from pgpool_core import ConfigurationError
from tests.flask.apps.notes import pgpool
from tests.flask.conftest import MakeApp
from tests.harness.postgres import PgServer, free_port


def state_of(app: Flask) -> PgPoolState:
    state: PgPoolState = app.extensions["pgpool"]
    return state


@pytest.fixture
def notes(pg_server: PgServer) -> Iterator[str]:
    """An empty table flask_notes(name text)."""
    pg_server.execute("CREATE TABLE IF NOT EXISTS flask_notes (name text)")
    pg_server.execute("DELETE FROM flask_notes")
    yield "flask_notes"
    pg_server.execute("DELETE FROM flask_notes")


def saved(pg_server: PgServer) -> list[str]:
    return [row[0] for row in pg_server.execute("SELECT name FROM flask_notes")]


# -- registration ----------------------------------------------------------------


def test_init_app_connects_nothing(make_app: MakeApp, pg_server: PgServer) -> None:
    threads = threading.active_count()
    app = make_app(PGPOOL_CONNINFO=pg_server.dsn(port=free_port()))
    assert app.extensions["pgpool"].extension is pgpool
    assert not any(pool.process_pool_open for pool in state_of(app).pools.values())
    assert threading.active_count() == threads


def test_pgpool_app_registers_at_once(pg_server: PgServer) -> None:
    app = Flask(__name__)
    app.config["PGPOOL_CONNINFO"] = pg_server.dsn()
    ext = PgPool(app)
    assert state_of(app).extension is ext
    with app.app_context():
        assert ext.connection.execute("SELECT 1").fetchone() == (1,)
        assert isinstance(ext.pool, ConnectionPool)
    state_of(app).pools["default"].close()


def test_second_registration_is_refused(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already been registered on this Flask"):
        pgpool.init_app(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        PgPool().init_app(app)


def test_app_of_another_pgpool_is_not_registered(app: Flask) -> None:
    other = PgPool()
    with app.app_context():
        with pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"):
            other.connection  # noqa: B018


def test_outside_an_app_context_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="outside of an application context"):
        pgpool.connection  # noqa: B018
    with pytest.raises(RuntimeError, match="outside of an application context"):
        pgpool.pool  # noqa: B018


# -- the app context's connection ------------------------------------------------


def test_one_connection_per_app_context_given_back_at_its_end(
    make_app: MakeApp,
) -> None:
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1, PGPOOL_TIMEOUT=2)
    seen: list[psycopg.Connection[Any]] = []

    @app.get("/twice")
    def twice() -> dict[str, Any]:
        seen.append(pgpool.connection)
        seen.append(pgpool.connection)
        return {"backend": pgpool.connection.info.backend_pid}

    client = app.test_client()
    backends = {client.get("/twice").json["backend"] for _ in range(5)}  # type: ignore[index]
    assert len(seen) == 10
    assert all(seen[i] is seen[i + 1] for i in range(0, 10, 2))
    # One connection in the pool: each request got it back from the last one.
    assert len(backends) == 1


def test_a_view_that_does_not_use_it_borrows_nothing(app: Flask) -> None:
    assert app.test_client().get("/health").status_code == 200
    assert not state_of(app).pools["default"].process_pool_open, "not even opened"


def test_app_context_without_request(make_app: MakeApp) -> None:
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1)
    pool = state_of(app).pools["default"]
    with app.app_context():
        conn = pgpool.connection
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["requests_num"] == 1
    # Given back: the one-connection pool lends it again at once.
    with pool.connection(timeout=2) as again:
        assert again.info.backend_pid == conn.info.backend_pid


def test_connection_is_given_back_when_the_view_raises(
    make_app: MakeApp, notes: str, pg_server: PgServer
) -> None:
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1, PGPOOL_TIMEOUT=2)

    @app.post("/fail")
    def fail() -> str:
        pgpool.connection.execute("INSERT INTO flask_notes VALUES ('lost')")
        raise ZeroDivisionError

    client = app.test_client()
    for _ in range(3):
        assert client.post("/fail").status_code == 500
    assert saved(pg_server) == []
    assert client.get("/query").status_code == 200


def test_closed_connection_is_replaced_in_the_same_context(
    app: Flask, pg_server: PgServer
) -> None:
    @app.get("/reconnect")
    def reconnect() -> dict[str, Any]:
        first = pgpool.connection.info.backend_pid
        pg_server.terminate(first)
        with pytest.raises(psycopg.OperationalError):
            pgpool.connection.execute("SELECT 1")
        second = pgpool.connection.execute("SELECT pg_backend_pid()").fetchone()
        return {"first": first, "second": second[0] if second else None}

    body = app.test_client().get("/reconnect").json
    assert body is not None and body["second"] not in (None, body["first"])


# -- transactions ----------------------------------------------------------------


def test_writes_without_commit_are_rolled_back(
    app: Flask, notes: str, pg_server: PgServer
) -> None:
    @app.post("/note")
    def note() -> str:
        pgpool.connection.execute("INSERT INTO flask_notes VALUES ('forgotten')")
        return "ok"

    assert app.test_client().post("/note").status_code == 200
    assert saved(pg_server) == []


def test_a_view_that_wrote_without_committing_is_named(
    make_app: MakeApp, notes: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its 200 hides a write that was rolled back: the pool says so, naming it.

    Logged when the connection settles (the next checkout), so that a request
    that wrote nothing waits for no round trip to find out.
    """
    caplog.set_level(logging.WARNING)
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1)

    @app.post("/forgetful")
    def forgetful() -> str:
        pgpool.connection.execute("INSERT INTO flask_notes VALUES ('lost')")
        return "ok"

    @app.get("/reader")
    def reader() -> str:
        pgpool.connection.execute("SELECT count(*) FROM flask_notes")
        return "ok"

    client = app.test_client()
    assert client.get("/reader").status_code == 200
    assert client.post("/forgetful").status_code == 200
    assert client.get("/reader").status_code == 200
    assert client.get("/reader").status_code == 200
    [record] = caplog.records
    assert record.name == "pgpool.pool"
    assert "POST /forgetful (endpoint forgetful)" in record.getMessage()
    assert "rolled back" in record.getMessage()


def test_transaction_block_commits(app: Flask, notes: str, pg_server: PgServer) -> None:
    @app.post("/note")
    def note() -> str:
        with pgpool.connection.transaction():
            pgpool.connection.execute("INSERT INTO flask_notes VALUES ('kept')")
        return "ok"

    assert app.test_client().post("/note").status_code == 200
    assert saved(pg_server) == ["kept"]


def test_commit_commits_and_later_writes_are_rolled_back(
    app: Flask, notes: str, pg_server: PgServer
) -> None:
    @app.post("/note")
    def note() -> str:
        pgpool.connection.execute("INSERT INTO flask_notes VALUES ('committed')")
        pgpool.connection.commit()
        pgpool.connection.execute("INSERT INTO flask_notes VALUES ('after')")
        raise ValueError("the view fails after its commit")

    assert app.test_client().post("/note").status_code == 500
    assert saved(pg_server) == ["committed"]


def test_transaction_block_after_a_query_is_a_savepoint(
    app: Flask, notes: str, pg_server: PgServer
) -> None:
    """As documented: the first query opened the transaction; nothing commits it."""

    @app.post("/note")
    def note() -> str:
        pgpool.connection.execute("SELECT count(*) FROM flask_notes")
        with pgpool.connection.transaction():
            pgpool.connection.execute("INSERT INTO flask_notes VALUES ('savepoint')")
        return "ok"

    assert app.test_client().post("/note").status_code == 200
    assert saved(pg_server) == []


def test_autocommit_connections_commit_each_transaction_block(
    make_app: MakeApp, notes: str, pg_server: PgServer
) -> None:
    app = make_app(PGPOOL_KWARGS={"autocommit": True})

    @app.post("/note")
    def note() -> str:
        pgpool.connection.execute("SELECT count(*) FROM flask_notes")
        with pgpool.connection.transaction():
            pgpool.connection.execute("INSERT INTO flask_notes VALUES ('block')")
        return "ok"

    assert app.test_client().post("/note").status_code == 200
    assert saved(pg_server) == ["block"]


def test_session_state_does_not_reach_the_next_request(make_app: MakeApp) -> None:
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1)
    client = app.test_client()
    first, second = client.get("/session").json, client.get("/session").json
    assert first is not None and second is not None
    assert second["backend"] == first["backend"], "the same connection"
    assert second["leaked"] == []


def test_session_probe_sees_state_when_reset_is_off(make_app: MakeApp) -> None:
    """The probe above can fail: without the reset, the state is there."""
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1, PGPOOL_RESET=None)
    client = app.test_client()
    first, second = client.get("/session").json, client.get("/session").json
    assert first is not None and second is not None
    assert second["backend"] == first["backend"]
    assert second["leaked"] == ["setting 'left behind'", "temp table"]


@pytest.mark.parametrize(("reset", "sent"), [(None, 0), ("always", 2)])
def test_pgpool_reset_always_resets_after_every_request(
    make_app: MakeApp, pg_log: PgServer, reset: str | None, sent: int
) -> None:
    """By default a request of plain statements sends no session reset."""
    config: dict[str, Any] = {} if reset is None else {"PGPOOL_RESET": reset}
    app = make_app(
        PGPOOL_MIN_SIZE=1,
        PGPOOL_MAX_SIZE=1,
        PGPOOL_KWARGS={"options": "-c log_statement=all"},
        **config,
    )
    pool = state_of(app).pools["default"]
    pool.check()  # made
    position = pg_log.log_position()
    for _ in range(2):
        with app.app_context():
            pgpool.connection.execute("SELECT 1")
    pool.check()  # settled
    statements = pg_log.statements_since(position)
    assert statements.count("SELECT 1") == 2
    assert sum("DISCARD SEQUENCES" in s for s in statements) == sent


def test_a_bad_pgpool_reset_word_names_the_setting(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="PGPOOL_RESET: unknown reset"):
        make_app(PGPOOL_RESET="alway")


# -- streamed responses ------------------------------------------------------------


@pytest.mark.parametrize("with_context", [True, False], ids=["context", "closure"])
def test_streamed_response_keeps_the_connection_until_the_stream_ends(
    make_app: MakeApp, notes: str, pg_server: PgServer, with_context: bool
) -> None:
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1)
    pool = state_of(app).pools["default"]

    @app.get("/held-stream")
    def stream() -> Response:
        conn = pgpool.connection
        conn.execute("INSERT INTO flask_notes VALUES ('streamed, not committed')")

        def generate() -> Iterator[str]:
            yield f"{conn.info.backend_pid}\n"
            # With stream_with_context, g (and pgpool.connection) is there.
            again = pgpool.connection if with_context else conn
            row = again.execute("SELECT pg_backend_pid(), count(*) FROM flask_notes")
            yield " ".join(map(str, row.fetchone() or ())) + "\n"

        return Response(stream_with_context(generate()) if with_context else generate())

    response = app.test_client().get("/held-stream", buffered=False)
    chunks: Iterator[bytes] = iter(response.response)  # type: ignore[arg-type]
    backend = int(next(chunks))
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.3)  # the stream still holds the only connection
    assert next(chunks).split() == [str(backend).encode(), b"1"], "same transaction"
    with pytest.raises(StopIteration):
        next(chunks)
    response.close()
    with pool.connection(timeout=2) as conn:  # given back
        assert conn.info.backend_pid == backend
    assert saved(pg_server) == [], "rolled back at the end of the stream"


def test_server_app_stream_view(client: FlaskClient) -> None:
    body = client.get("/stream").json
    assert body is not None
    assert body["later"] == [body["backend"], "open"]


# -- several apps, several databases ------------------------------------------------


def test_one_pgpool_serves_two_apps(make_app: MakeApp) -> None:
    first = make_app(PGPOOL_KWARGS={"application_name": "first-app"})
    second = make_app(PGPOOL_KWARGS={"application_name": "second-app"})

    def name_of(app: Flask) -> Any:
        @app.get("/name")
        def name() -> dict[str, Any]:
            row = pgpool.connection.execute("SHOW application_name").fetchone()
            return {"name": row[0] if row else None, "pool": id(pgpool.pool)}

        body = app.test_client().get("/name").json
        assert body is not None
        return body

    a, b = name_of(first), name_of(second)
    assert (a["name"], b["name"]) == ("first-app", "second-app")
    assert a["pool"] != b["pool"]
    assert state_of(first).pools["default"] is not state_of(second).pools["default"]


def test_several_databases(
    make_app: MakeApp, pg_server: PgServer, reports_db: str
) -> None:
    app = make_app(
        PGPOOL_BINDS={
            "reports": {
                "conninfo": pg_server.dsn(dbname=reports_db),
                "min_size": 1,
                "max_size": 3,
            },
            "plain": pg_server.dsn(application_name="plain-bind"),
        }
    )

    @app.get("/databases")
    def databases() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for bind in ("default", "reports", "plain"):
            conn = pgpool.get_connection(bind)
            row = conn.execute("SELECT current_database(), pg_backend_pid()").fetchone()
            out[bind] = list(row) if row else None
        out["reports_max"] = pgpool.get_pool("reports").max_size
        return out

    body = app.test_client().get("/databases").json
    assert body is not None
    assert body["default"][0] == pg_server.dbname
    assert body["reports"][0] == reports_db
    assert body["plain"][0] == pg_server.dbname
    assert len({body[b][1] for b in ("default", "reports", "plain")}) == 3
    assert body["reports_max"] == 3
    pools = state_of(app).pools
    assert pools["reports"].name.endswith(":reports")
    for pool in pools.values():
        assert pool.stats()["requests_num"] == 1
        with pool.connection(timeout=2):
            pass  # each was given back
    with app.app_context():
        with pytest.raises(KeyError, match="no database 'report'.*'reports'"):
            pgpool.get_connection("report")


# -- pool, stats, reprs --------------------------------------------------------------


def test_pool_is_this_process_connection_pool(app: Flask) -> None:
    with app.app_context():
        assert isinstance(pgpool.pool, ConnectionPool)
        assert pgpool.pool is state_of(app).pools["default"].pool
        assert pgpool.get_pool() is pgpool.pool


def test_stats_and_reprs_hide_the_password(app: Flask, pg_server: PgServer) -> None:
    with app.app_context():
        pgpool.connection.execute("SELECT 1")
        stats = pgpool.stats()
    assert stats["default"]["conninfo"].count("********") == 1
    assert stats["default"]["requests_num"] == 1
    text = repr(stats) + repr(state_of(app)) + repr(pgpool)
    assert pg_server.password not in text
    assert "password=********" in repr(state_of(app))


def test_the_callers_borrower_label_survives_the_give_back(app: Flask) -> None:
    """A job that names itself (``with borrower(...)``) and runs an app context."""
    from pgpool_core import borrower
    from pgpool_core._loans import current_borrower

    with borrower("nightly job"):
        with app.app_context():
            pgpool.connection.execute("SELECT 1")
        assert current_borrower() == "nightly job"
