"""Django's error pages on a failed connect: no password in frames or messages.

Django's technical 500 page (DEBUG = True) shows every frame's local
variables, and hides none of them, sensitive_variables() or not (its filter
is active only when DEBUG is False). Django's own backend shows the password
there; this one must not, with DEBUG on or off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.http import HttpResponse
from django.test import RequestFactory
from django.views.debug import ExceptionReporter, technical_500_response

from django_pgpool.base import DatabaseWrapper
from tests.django.support import database_settings, load_alias
from tests.harness.postgres import PgServer, free_port

# Every character class a password may hold; all but a few escape in HTML.
WRONG = "Wr0ng P@ss'w\\-Leak%20\"<é>"
FRAGMENTS = ("Wr0ng", "P@ss", "Leak", "s'w", "ng P")

LoadWrapper = Callable[..., Any]


@pytest.fixture
def load(
    pg_server: PgServer, django_db_blocker: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LoadWrapper]:
    """Load an alias on the test cluster (it is also settings.DATABASES["x"])."""
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        entry = database_settings(pg_server, **overrides)
        # The page's Settings section shows settings.DATABASES.
        monkeypatch.setattr(
            django_settings, "DATABASES", {**django_settings.DATABASES, "x": entry}
        )
        wrapper = load_alias(entry)
        made.append(wrapper)
        return wrapper

    with django_db_blocker.unblock():
        yield make
    for wrapper in made:
        wrapper.close()
        if isinstance(wrapper, DatabaseWrapper):
            wrapper.close_pool()


def failed_connect(wrapper: Any) -> tuple[Any, BaseException, Any]:
    try:
        wrapper.ensure_connection()
    except Exception:
        exc_type, exc, tb = sys.exc_info()
        assert exc_type is not None and exc is not None
        return exc_type, exc, tb
    raise AssertionError("the connection did not fail")


def debug_page(wrapper: Any) -> str:
    """The technical 500 page (HTML) of the wrapper's failed connect."""
    request = RequestFactory().get("/items")
    response = technical_500_response(request, *failed_connect(wrapper))
    assert isinstance(response, HttpResponse)
    return response.content.decode()


def leaked(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


def outside_settings(page: str) -> str:
    """The page without its Settings section (Django's own, see the README)."""
    start = page.index('id="settings-info"')
    return page[:start]


@pytest.mark.parametrize("pooled", [False, True], ids=["unpooled", "pooled"])
def test_debug_page_of_a_wrong_password_shows_none_of_it(
    settings: Any, load: LoadWrapper, pooled: bool
) -> None:
    settings.DEBUG = True
    options: dict[str, Any] = {"connect_timeout": 2}
    options["pool"] = {"min_size": 1, "max_size": 1, "timeout": 1} if pooled else False
    page = debug_page(load(PASSWORD=WRONG, OPTIONS=options))

    assert "conn_params" in page  # the frames are there, with their locals
    assert leaked(page) == []


def test_debug_page_hides_a_host_that_holds_a_conninfo(
    settings: Any, load: LoadWrapper
) -> None:
    settings.DEBUG = True
    host = f"host=127.0.0.1 port={free_port()} password='Wr0ngP@ss-Leak'"
    page = debug_page(
        load(HOST=host, PASSWORD="", OPTIONS={"pool": False, "connect_timeout": 2})
    )

    assert "failed to resolve host" in page
    assert leaked(outside_settings(page)) == []
    # What Django itself shows: DATABASES in its Settings section, where it
    # hides PASSWORD but not a password inside HOST or NAME.
    assert "Wr0ngP@ss-Leak" in page


def test_djangos_own_backend_shows_the_password(
    settings: Any, load: LoadWrapper
) -> None:
    """The fault this backend fixes, as Django 5.2 and 6 have it."""
    settings.DEBUG = True
    wrapper = load(
        ENGINE="django.db.backends.postgresql",
        PASSWORD=WRONG,
        OPTIONS={"pool": False, "connect_timeout": 2},
    )
    assert not isinstance(wrapper, DatabaseWrapper)
    assert leaked(outside_settings(debug_page(wrapper)))


@pytest.mark.parametrize("pooled", [False, True], ids=["unpooled", "pooled"])
def test_error_report_with_debug_off_hides_the_connect_frames(
    settings: Any, load: LoadWrapper, pooled: bool
) -> None:
    """What AdminEmailHandler mails (DEBUG = False): sensitive_variables() at work."""
    settings.DEBUG = False
    options: dict[str, Any] = {"connect_timeout": 2}
    options["pool"] = {"min_size": 1, "max_size": 1, "timeout": 1} if pooled else False
    wrapper = load(PASSWORD=WRONG, OPTIONS=options)
    request = RequestFactory().get("/items")
    reporter = ExceptionReporter(request, *failed_connect(wrapper), is_email=True)
    text = reporter.get_traceback_text()
    data = reporter.get_traceback_data()

    assert leaked(text) == []
    connect_frames = [
        frame for frame in data["frames"] if frame["function"] == "connect"
    ]
    assert connect_frames
    for frame in connect_frames:
        assert all(value == "'********************'" for _, value in frame["vars"])
