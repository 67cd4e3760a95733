"""DatabaseUnavailableMiddleware, with the errors a real pool and server raise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import DatabaseError, IntegrityError
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from django_pgpool.base import DatabaseWrapper
from django_pgpool.middleware import DatabaseUnavailableMiddleware
from tests.harness.postgres import free_port

MakeWrapper = Callable[..., DatabaseWrapper]


def error_of(wrapper: Any, sql: str = "SELECT 1") -> DatabaseError:
    with pytest.raises(DatabaseError) as info:
        with wrapper.cursor() as cursor:
            cursor.execute(sql)
    return info.value


def answer(exc: Exception) -> HttpResponse | None:
    middleware = DatabaseUnavailableMiddleware(lambda request: HttpResponse())
    request: HttpRequest = RequestFactory().get("/items")
    return middleware.process_exception(request, exc)


def test_exhausted_pool_gives_503(make_wrapper: MakeWrapper) -> None:
    holder = make_wrapper(
        OPTIONS={"pool": {"min_size": 1, "max_size": 1, "timeout": 0.2}}
    )
    holder.ensure_connection()
    # Another thread's wrapper of the same alias shares the exhausted pool.
    waiter = holder.copy()

    response = answer(error_of(waiter))

    assert response is not None and response.status_code == 503
    assert response["Retry-After"] == "7"  # PGPOOL_RETRY_AFTER in the settings
    assert b"no connection available in the pool" in response.content


def test_unreachable_database_gives_503(make_wrapper: MakeWrapper) -> None:
    wrapper = make_wrapper(PORT=str(free_port()), OPTIONS={"pool": False})

    response = answer(error_of(wrapper))

    assert response is not None and response.status_code == 503
    assert b"the database cannot be reached" in response.content


def test_retry_after_follows_the_setting(
    make_wrapper: MakeWrapper, settings: Any
) -> None:
    settings.PGPOOL_RETRY_AFTER = 30
    wrapper = make_wrapper(PORT=str(free_port()), OPTIONS={"pool": False})

    response = answer(error_of(wrapper))

    assert response is not None and response["Retry-After"] == "30"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1/0",  # DataError
        "SET statement_timeout = 1; SELECT pg_sleep(1)",  # QueryCanceled
        "SELECT * FROM no_such_table",  # ProgrammingError
    ],
)
def test_other_database_errors_are_left_alone(
    make_wrapper: MakeWrapper, sql: str
) -> None:
    assert answer(error_of(make_wrapper(), sql)) is None


def test_non_database_errors_are_left_alone() -> None:
    assert answer(IntegrityError("duplicate")) is None
    assert answer(ValueError("bad")) is None


@pytest.mark.django_db(transaction=True)
def test_a_session_ended_by_idle_in_transaction_timeout_is_a_503() -> None:
    """Case 13: SQLSTATE 25P03 is an InternalError to psycopg; still a 503.

    Through Django's WSGI handler (its test Client disconnects the
    request_finished handler that gives the connection back).
    """
    handler = WSGIHandler()

    def call(path: str) -> tuple[str, dict[str, str], bytes]:
        environ = RequestFactory().get(path).environ
        started: list[tuple[str, dict[str, str]]] = []
        body = handler(
            environ, lambda status, headers, *_: started.append((status, dict(headers)))
        )
        content = b"".join(body)
        body.close()
        return *started[0], content

    status, headers, content = call("/idle-in-transaction")
    assert status.startswith("503 "), content
    assert headers["Retry-After"] == "7"
    assert b"idle_in_transaction_session_timeout" in content
    status, _, content = call("/query")
    assert status.startswith("200 "), content
