"""The backend in one process: a drop-in for Django's, with a resetting pool."""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any
from unittest import mock

import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper
from django.db.backends.signals import connection_created
from django.db.utils import ConnectionHandler
from django.test import Client

from django_pgpool.base import DatabaseWrapper
from django_pgpool.borrowers import RequestLabel
from pgpool_core import ForkSafePool
from tests.django.support import database_settings, load_alias
from tests.django.testapp.models import Item
from tests.harness.postgres import PgServer, query_backend_pid

MakeWrapper = Callable[..., DatabaseWrapper]


def fetch(wrapper: Any, sql: str) -> Any:
    with wrapper.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


# -- drop-in -------------------------------------------------------------------


@pytest.mark.django_db
def test_is_djangos_postgresql_backend_with_a_fork_safe_pool() -> None:
    assert isinstance(connections["default"], PostgresWrapper)
    assert connection.vendor == "postgresql"
    assert isinstance(connection.pool, ForkSafePool)
    assert fetch(connection, "SELECT current_database()")[0].startswith("test_")
    assert connection.connection.pgconn.ssl_in_use


@pytest.mark.django_db(transaction=True)
def test_atomic_commits_and_rolls_back() -> None:
    with transaction.atomic():
        Item.objects.create(name="kept")
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            Item.objects.create(name="undone")
            1 / 0  # noqa: B018
    assert list(Item.objects.values_list("name", flat=True)) == ["kept"]


@pytest.mark.django_db(transaction=True)
def test_savepoints() -> None:
    with transaction.atomic():
        Item.objects.create(name="outer")
        with pytest.raises(ValueError):
            with transaction.atomic():
                Item.objects.create(name="inner")
                raise ValueError
        # Django 6.1 renamed savepoint() to savepoint_create().
        create = getattr(transaction, "savepoint_create", transaction.savepoint)
        sid = create()
        Item.objects.create(name="rolled back to savepoint")
        transaction.savepoint_rollback(sid)
    assert list(Item.objects.values_list("name", flat=True)) == ["outer"]


@pytest.mark.django_db(transaction=True)
def test_atomic_requests() -> None:
    client = Client(raise_request_exception=False)
    assert client.get("/items", {"name": "ok"}).status_code == 200
    assert client.get("/items", {"name": "bad", "fail": "1"}).status_code == 500
    assert list(Item.objects.values_list("name", flat=True)) == ["ok"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_atomic", [False, True], ids=["autocommit", "atomic"])
def test_server_side_cursors(in_atomic: bool) -> None:
    Item.objects.bulk_create(Item(name=f"i{n}") for n in range(5))
    with transaction.atomic() if in_atomic else contextlib.nullcontext():
        names = []
        open_cursors = None
        for item in Item.objects.order_by("id").iterator(chunk_size=2):
            names.append(item.name)
            if open_cursors is None:
                open_cursors = fetch(
                    connection,
                    "SELECT count(*) FROM pg_cursors WHERE name LIKE '_django_curs_%'",
                )[0]
    assert names == [f"i{n}" for n in range(5)]
    assert open_cursors == 1


def test_close_gives_the_connection_back_to_the_pool(make_wrapper: MakeWrapper) -> None:
    wrapper = make_wrapper()  # max_size=1: a second connection would time out
    first = query_backend_pid(wrapper)
    raw = wrapper.connection

    wrapper.close()

    assert wrapper.connection is None
    assert not raw.closed
    assert query_backend_pid(wrapper) == first
    assert wrapper.pool is not None
    assert wrapper.pool.get_stats()["connections_num"] == 1


def test_threads_that_never_close_give_their_connections_back(
    pg_server: PgServer, django_db_blocker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Threads that use the ORM and end without connection.close() (a thread
    pool, a background thread): Django without a pool carries on; so does the
    pool, with a warning for each connection not given back."""
    caplog.set_level(logging.WARNING, logger="pgpool")
    alias = "pgpool_threads"
    # Django's handler: one connection wrapper per thread, as django.db.connections.
    handler = ConnectionHandler(
        {
            "default": {},
            alias: database_settings(
                pg_server,
                OPTIONS={"pool": {"min_size": 1, "max_size": 2, "timeout": 2}},
            ),
        }
    )

    def work() -> None:
        fetch(handler[alias], "SELECT 1")  # never closed

    with django_db_blocker.unblock():
        try:
            threads = [threading.Thread(target=work, name=f"orm-{i}") for i in range(3)]
            for thread in threads:  # one after another: the third finds none left
                thread.start()
                thread.join()

            assert fetch(handler[alias], "SELECT 1") == (1,)

            pool = handler[alias].pool
            assert pool is not None
            assert pool.get_stats()["connections_lost"] >= 2
        finally:
            handler[alias].close()
            handler[alias].close_pool()
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "without being given back" in r.getMessage()
    ]
    assert all(f"for Django database alias {alias!r}" in w for w in warnings)
    borrowers = {w.split("thread ")[1].split(" ")[0] for w in warnings}
    assert {"'orm-0'", "'orm-1'"} <= borrowers <= {"'orm-0'", "'orm-1'", "'orm-2'"}
    assert pg_server.password not in caplog.text


@pytest.mark.parametrize("health_checks", [False, True])
def test_a_terminated_connection_is_replaced(
    make_wrapper: MakeWrapper, pg_server: PgServer, health_checks: bool
) -> None:
    wrapper = make_wrapper(CONN_HEALTH_CHECKS=health_checks)
    first = query_backend_pid(wrapper)
    wrapper.close()
    # Waited for until the backend is gone, its FATAL message sent: without,
    # the borrow below could run before the message arrives.
    pg_server.terminate(first, wait=True)

    second = query_backend_pid(wrapper)

    assert second != first


def test_ensure_connection_wrapped_on_djangos_base_class(
    pg_server: PgServer, django_db_blocker: Any
) -> None:
    """Code that wraps BaseDatabaseWrapper.ensure_connection reaches ours as Django's.

    As Django's own test_utils tests do: the wrapper calls the bound method
    it saved before patching, which with Django's backend is the base's. An
    override of ours that called super() would call the wrapper again,
    forever (a RecursionError that aborts Django's parallel runner).
    """

    def calls_with(engine: str) -> list[bool]:
        wrapper = load_alias(database_settings(pg_server, ENGINE=engine))
        real_ensure_connection = wrapper.ensure_connection
        calls = []

        def wrapped() -> None:
            calls.append(wrapper.connection is None)
            real_ensure_connection()

        try:
            with mock.patch.object(
                BaseDatabaseWrapper, "ensure_connection", side_effect=wrapped
            ):
                query_backend_pid(wrapper)
        finally:
            wrapper.close()
            wrapper.close_pool()
        return calls

    with django_db_blocker.unblock():
        djangos = calls_with("django.db.backends.postgresql")
        ours = calls_with("django_pgpool")

    assert djangos[0] is True, "called first to connect"
    assert ours == djangos


def test_close_pool_then_close_closes_the_connection(
    make_wrapper: MakeWrapper,
) -> None:
    wrapper = make_wrapper()
    first = query_backend_pid(wrapper)
    raw = wrapper.connection
    wrapper.close_pool()  # as Django's ensure_timezone() does

    assert fetch(wrapper, "SELECT pg_backend_pid()") == (first,), "still usable"
    wrapper.close()

    assert raw.closed
    assert query_backend_pid(wrapper) != first  # a new pool


def test_a_pool_closed_while_connecting_is_not_read_after(
    make_wrapper: MakeWrapper,
) -> None:
    """connect() finds the alias's pool once; closed in it, a new one is read.

    Django's connect() reads ``self.pool`` five times; the wrapper looks the
    pool up once per connect(). A ``connection_created`` receiver (the end of
    connect()) that closes it, as ensure_timezone() does, reads the next one.
    """
    wrapper = make_wrapper()
    query_backend_pid(wrapper)
    wrapper.close()
    first = wrapper.pool
    read: list[Any] = []

    def receiver(sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection is wrapper:
            wrapper.close_pool()
            read.append(wrapper.pool)

    connection_created.connect(receiver, weak=False)
    try:
        wrapper.connect()
    finally:
        connection_created.disconnect(receiver)

    assert first is not None
    assert read[0] is not None and read[0] is not first
    assert wrapper.pool is read[0]
    wrapper.close()  # given back to the first pool, which closes it


@pytest.mark.parametrize("autocommit", [True, False])
def test_autocommit_is_set_on_each_connection_lent(
    make_wrapper: MakeWrapper, autocommit: bool
) -> None:
    """AUTOCOMMIT holds after each connect(): the first (making the pool) and after."""
    wrapper = make_wrapper(AUTOCOMMIT=autocommit)
    for _ in range(3):
        wrapper.ensure_connection()
        assert wrapper.connection.autocommit is autocommit
        assert wrapper.get_autocommit() is autocommit
        fetch(wrapper, "SELECT 1")
        status = wrapper.connection.info.transaction_status
        assert (status == psycopg.pq.TransactionStatus.IDLE) is autocommit
        wrapper.close()


def test_a_request_label_is_an_object_of_its_own() -> None:
    """A RequestLabel (public: what the warnings name) is hashable and equal to
    itself only, as any object: one per request, whatever its environ holds."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/nowhere"}
    first, second = RequestLabel(environ), RequestLabel(environ)
    assert len({first, second}) == 2
    assert first == first
    assert first != second
    assert str(first) == "GET /nowhere"
    for copied in (copy.copy(first), copy.deepcopy(first)):
        assert str(copied) == "GET /nowhere"
        assert copied.environ == environ and copied.scope is None


# -- session reset -------------------------------------------------------------


def test_session_state_is_reset_between_borrowers(make_wrapper: MakeWrapper) -> None:
    wrapper = make_wrapper()
    first = query_backend_pid(wrapper)
    with wrapper.cursor() as cursor:
        cursor.execute("SET application_name = 'leaked'")
        cursor.execute("SET search_path = leaked, public")
        cursor.execute("SELECT set_config('pgpool.marker', 'leaked', false)")
        cursor.execute("CREATE TEMP TABLE pgpool_leak (x int)")
        cursor.execute("SELECT pg_advisory_lock(4711)")
    wrapper.close()

    assert query_backend_pid(wrapper) == first, "the same connection, from the pool"
    state = fetch(
        wrapper,
        "SELECT current_setting('application_name'),"
        " current_setting('search_path'),"
        " current_setting('pgpool.marker', true),"
        " to_regclass('pg_temp.pgpool_leak'),"
        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        "  AND pid = pg_backend_pid())",
    )
    assert state == ("", '"$user", public', "", None, 0)


@pytest.mark.parametrize(("pool", "sent"), [({}, 0), ({"reset": "always"}, 2)])
def test_pool_reset_always_resets_after_every_request(
    make_wrapper: MakeWrapper, pg_log: PgServer, pool: dict[str, Any], sent: int
) -> None:
    """By default a request of plain statements sends no session reset."""
    wrapper = make_wrapper(
        OPTIONS={
            "pool": {"min_size": 1, "max_size": 1, "timeout": 5, **pool},
            "options": "-c log_statement=all",
        }
    )
    query_backend_pid(wrapper)
    wrapper.close()
    assert wrapper.pool is not None
    wrapper.pool.check()  # settled
    position = pg_log.log_position()
    for _ in range(2):
        assert fetch(wrapper, "SELECT 1") == (1,)
        wrapper.close()
    wrapper.pool.check()
    statements = pg_log.statements_since(position)
    assert statements.count("SELECT 1") == 2
    assert sum("DISCARD SEQUENCES" in s for s in statements) == sent


@pytest.fixture(scope="session")
def app_role(pg_server: PgServer) -> str:
    pg_server.execute(
        "DO $$ BEGIN CREATE ROLE pgpool_django_role NOLOGIN;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    return "pgpool_django_role"


def test_time_zone_and_role_are_set_again_after_a_reset(
    make_wrapper: MakeWrapper, app_role: str
) -> None:
    # The server's default time zone for these sessions is Tokyo, so that
    # only Django's configure (run again after the reset) makes it UTC.
    wrapper = make_wrapper(
        OPTIONS={"options": "-c TimeZone=Asia/Tokyo", "assume_role": app_role}
    )
    assert fetch(wrapper, "SELECT current_setting('TimeZone'), current_user") == (
        "UTC",
        app_role,
    )
    first = query_backend_pid(wrapper)
    with wrapper.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'America/Chicago'")
        cursor.execute("RESET ROLE")
    wrapper.close()

    assert query_backend_pid(wrapper) == first
    assert fetch(wrapper, "SELECT current_setting('TimeZone'), current_user") == (
        "UTC",
        app_role,
    )


# -- configuration errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "named", "says"),
    [
        ({"max_sise": 8}, '["OPTIONS"]["pool"]["max_sise"]', "unknown pool option"),
        ({"min_size": -1}, '["OPTIONS"]["pool"]["min_size"]', "an integer >= 0"),
        (
            {"min_size": 4, "max_size": 2},
            '["OPTIONS"]["pool"]["max_size"]',
            ">= min_size",
        ),
        ({"timeout": "10"}, '["OPTIONS"]["pool"]["timeout"]', "a number of seconds"),
        (
            {"kwargs": {"sslmode": "require"}},
            '["OPTIONS"]["pool"]["kwargs"]',
            "set by Django",
        ),
        ({"configure": print}, '["OPTIONS"]["pool"]["configure"]', "set by Django"),
        ("yes", '["OPTIONS"]["pool"]', "expected True or a dict"),
    ],
)
def test_bad_pool_option_fails_when_the_alias_loads(
    pg_server: PgServer, pool: Any, named: str, says: str
) -> None:
    settings_dict = database_settings(pg_server, OPTIONS={"pool": pool})
    with pytest.raises(ImproperlyConfigured) as info:
        load_alias(settings_dict, alias="typo")
    message = str(info.value)
    assert message.startswith(f'DATABASES["typo"]{named}: ')
    assert says in message


def test_settings_are_validated_once_per_alias_and_settings(
    pg_server: PgServer, django_db_blocker: Any
) -> None:
    """Django makes a wrapper per thread, and per request under ASGI: each
    wrapper, the pool's and the system checks' reads of the same entry reuse
    the first validation; a changed entry (override_settings) is validated
    again, a bad one fails every time."""
    from django_pgpool import conf

    counted = {
        name: mock.patch.object(conf, name, wraps=getattr(conf, name))
        for name in ("validate_pool_options", "validate_connection")
    }
    with contextlib.ExitStack() as stack:
        calls = {name: stack.enter_context(patch) for name, patch in counted.items()}

        def validations() -> dict[str, int]:
            return {name: spy.call_count for name, spy in calls.items()}

        entry = database_settings(pg_server)
        wrapper = load_alias(entry)
        alias = wrapper.alias
        wrappers = [DatabaseWrapper(entry, alias) for _ in range(5)]
        with django_db_blocker.unblock():
            try:
                assert wrapper.pool is not None  # made with a wrapper of its own
                conf.pool_options(alias, entry)  # as the system checks read it
                conf.check_connection_settings(alias, entry)
                assert validations() == {
                    "validate_pool_options": 1,
                    "validate_connection": 1,
                }

                changed = database_settings(
                    pg_server, OPTIONS={"pool": {"min_size": 1, "max_size": 2}}
                )
                wrappers += [DatabaseWrapper(changed, alias) for _ in range(3)]
                assert validations() == {
                    "validate_pool_options": 2,
                    "validate_connection": 2,
                }
                # The same values in another dict: the same entry.
                DatabaseWrapper(copy.deepcopy(entry), alias)
                assert validations()["validate_pool_options"] == 2

                bad = database_settings(pg_server, OPTIONS={"pool": {"min_size": -1}})
                for _ in range(2):
                    with pytest.raises(ImproperlyConfigured, match="min_size"):
                        DatabaseWrapper(bad, alias)
                assert validations()["validate_pool_options"] == 4
            finally:
                wrapper.close_pool()
    assert {w.settings_dict["OPTIONS"]["pool"]["max_size"] for w in wrappers} == {1, 2}


def test_an_entry_changed_in_place_is_validated_again(pg_server: PgServer) -> None:
    """The wrappers of an alias compare its entry with the one last validated:
    an entry changed in place (the same dict) is validated again, and a bad
    value fails at once, as in a new dict."""
    from django_pgpool import conf

    entry = database_settings(pg_server)
    alias = "changed_in_place"
    with mock.patch.object(
        conf, "validate_pool_options", wraps=conf.validate_pool_options
    ) as spy:
        DatabaseWrapper(entry, alias)
        DatabaseWrapper(entry, alias)
        assert spy.call_count == 1
        entry["OPTIONS"]["pool"]["max_size"] = 3
        wrapper = DatabaseWrapper(entry, alias)
        assert spy.call_count == 2
        entry["OPTIONS"]["pool"]["min_size"] = -1
        with pytest.raises(ImproperlyConfigured, match="min_size"):
            DatabaseWrapper(entry, alias)
        assert wrapper.settings_dict["OPTIONS"]["pool"]["max_size"] == 3


def test_an_alias_is_validated_once_from_its_wrapper_to_its_first_query(
    make_wrapper: Callable[..., DatabaseWrapper],
    monkeypatch: pytest.MonkeyPatch,
    validations: Counter[str],
) -> None:
    """The wrapper's settings check, the system checks, the pool's wrapper, the
    pool and its first connection: the alias's settings are validated once,
    wherever the validation is (conf, the pool)."""
    from django_pgpool import conf
    from django_pgpool.checks import check_databases

    monkeypatch.setattr(conf, "_validated", {})  # none validated before
    wrapper = make_wrapper()
    # Not override_settings(): DATABASES must not reach the live connections.
    monkeypatch.setattr(
        django_settings, "DATABASES", {wrapper.alias: wrapper.settings_dict}
    )
    assert check_databases() == []
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert validations == {"validate_pool_options": 1, "validate_connection": 1}


@pytest.mark.parametrize("max_age", [60, None])
def test_conn_max_age_with_a_pool_names_the_alias(
    pg_server: PgServer, max_age: int | None
) -> None:
    settings_dict = database_settings(pg_server, CONN_MAX_AGE=max_age)
    with pytest.raises(ImproperlyConfigured) as info:
        load_alias(settings_dict, alias="persistent")
    message = str(info.value)
    # Django's message, word for word, as Django's own tests look for it.
    assert message.startswith("Pooling doesn't support persistent connections. ")
    assert 'DATABASES["persistent"]["CONN_MAX_AGE"]' in message
    assert "Set it to 0" in message


def test_without_pool_it_is_djangos_backend(make_wrapper: MakeWrapper) -> None:
    wrapper = make_wrapper(OPTIONS={"pool": False}, CONN_MAX_AGE=60)
    first = query_backend_pid(wrapper)
    raw = wrapper.connection
    assert wrapper.pool is None

    wrapper.close()

    assert raw.closed
    assert query_backend_pid(wrapper) != first


def test_pgbouncer_option_reaches_the_pool(make_wrapper: MakeWrapper) -> None:
    wrapper = make_wrapper(
        OPTIONS={"pgbouncer": True, "prepare_threshold": 5},
        DISABLE_SERVER_SIDE_CURSORS=True,
    )
    assert "pgbouncer" not in wrapper.get_connection_params()
    assert wrapper.pool is not None and wrapper.pool.pgbouncer
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    # Not prepared behind PgBouncer, whatever OPTIONS["prepare_threshold"] says.
    assert wrapper.connection.prepare_threshold is None
    wrapper.close()
