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
from django.core.exceptions import ImproperlyConfigured
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


def refused_alias(load: LoadWrapper, **overrides: Any) -> tuple[Any, ...]:
    try:
        load(**overrides)
    except ImproperlyConfigured:
        exc_type, exc, tb = sys.exc_info()
        return exc_type, exc, tb
    raise AssertionError("the alias loaded")


def test_debug_page_of_a_host_that_holds_a_conninfo(
    settings: Any, load: LoadWrapper, pg_server: PgServer
) -> None:
    """Refused when the alias is loaded (psycopg would pass it on unexpanded)."""
    settings.DEBUG = True
    host = f"host=127.0.0.1 port={free_port()} password='Wr0ngP@ss-Leak'"
    info = refused_alias(
        load, HOST=host, PASSWORD="", OPTIONS={"pool": False, "connect_timeout": 2}
    )
    request = RequestFactory().get("/items")
    reporter = ExceptionReporter(request, *info)
    frames = reporter.get_traceback_data()["frames"]
    page = technical_500_response(request, *info).content.decode()

    assert 'DATABASES["x"]["HOST"]' not in page  # the test's alias is "pgpool_N"
    assert "written as the host name" in page
    ours = [frame for frame in frames if "/django_pgpool/" in frame["filename"]]
    assert [frame["function"] for frame in ours] == ["__init__"]
    assert leaked(str(ours[0]["vars"])) == []
    assert leaked(str(info[1]) + repr(info[1])) == []
    # Django's own frames (the handler that loads the alias) show the entry,
    # as its Settings section does: HOST is not a setting it hides.
    django_frames = [f for f in frames if "/django/db/" in f["filename"]]
    assert any(leaked(str(frame["vars"])) for frame in django_frames)


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
        frame for frame in data["frames"] if frame.get("function") == "connect"
    ]
    assert connect_frames
    for frame in connect_frames:
        assert all(value == "'********************'" for _, value in frame["vars"])
