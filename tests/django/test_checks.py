"""The system checks of the django_pgpool app: one test per id.

E006, which connects, is in tests/test_bad_configurations.py (run by
``manage.py check --database`` and ``migrate`` against a server that refuses
the login, cannot be reached, or has no such database).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core import checks

from django_pgpool.checks import (
    check_databases,
    check_max_connections,
    check_settings,
)
from tests.django.support import database_settings
from tests.harness.postgres import PgServer


def ids(messages: list[checks.CheckMessage]) -> list[str | None]:
    return [message.id for message in messages]


@pytest.fixture
def databases(monkeypatch: pytest.MonkeyPatch, pg_server: PgServer) -> Any:
    """Replace settings.DATABASES with one alias "x" (overrides as arguments)."""

    def set_x(**overrides: Any) -> None:
        entry = database_settings(pg_server, **overrides)
        # Not override_settings(): DATABASES must not reach the live connections.
        monkeypatch.setattr(django_settings, "DATABASES", {"x": entry})

    return set_x


def test_the_app_registers_its_checks() -> None:
    registered = checks.registry.registry.get_checks(include_deployment_checks=True)
    assert check_databases in registered
    assert check_settings in registered
    assert check_max_connections in registered


def test_a_good_configuration_passes(databases: Any) -> None:
    databases()
    assert check_databases() == []
    assert check_settings() == []


def test_e001_conn_max_age_with_a_pool(databases: Any) -> None:
    databases(CONN_MAX_AGE=600)
    [message] = check_databases()
    assert message.id == "django_pgpool.E001"
    assert 'DATABASES["x"]["CONN_MAX_AGE"]' in message.msg
    assert "set it to 0" in (message.hint or "")


def test_e002_bad_pool_option(databases: Any) -> None:
    databases(OPTIONS={"pool": {"max_sise": 8}})
    [message] = check_databases()
    assert message.id == "django_pgpool.E002"
    assert 'DATABASES["x"]["OPTIONS"]["pool"]["max_sise"]' in message.msg


@pytest.mark.parametrize(
    ("name", "value"), [("PGPOOL_RETRY_AFTER", "soon"), ("PGPOOL_WORKERS", 0)]
)
def test_e003_bad_pgpool_setting(settings: Any, name: str, value: object) -> None:
    setattr(settings, name, value)
    [message] = check_settings()
    assert message.id == "django_pgpool.E003"
    assert message.msg.startswith(f"{name}: expected an integer >= 1")


@pytest.mark.parametrize(
    ("overrides", "named", "hint"),
    [
        ({"PORT": "99999"}, '["PORT"]: port "99999"', ""),
        ({"HOST": "host=db port=5432"}, '["HOST"]: host: a connection', "in HOST"),
        ({"NAME": "dbname=app"}, '["NAME"]: dbname: a connection', "in NAME"),
        ({"OPTIONS": {"sslmde": "require"}}, '["OPTIONS"]["sslmde"]: ', "libpq's"),
    ],
)
def test_e004_a_connection_setting_that_cannot_work(
    databases: Any, overrides: dict[str, Any], named: str, hint: str
) -> None:
    databases(**overrides)
    [message] = check_databases()
    assert message.id == "django_pgpool.E004"
    assert message.msg.startswith(f'DATABASES["x"]{named}')
    assert hint in (message.hint or "")


def test_e005_an_unknown_pgpool_setting(settings: Any) -> None:
    settings.PGPOOL_WORKRS = 4
    [message] = check_settings()
    assert message.id == "django_pgpool.E005"
    assert message.msg.startswith("PGPOOL_WORKRS: unknown setting; did you mean")
    assert "PGPOOL_WORKERS?" in message.msg


@pytest.mark.django_db
@pytest.mark.parametrize(("workers", "warned"), [(1000, True), (2, False)])
def test_w001_more_connections_than_the_server_allows(
    settings: Any, workers: int, warned: bool
) -> None:
    settings.PGPOOL_WORKERS = workers
    messages = check_max_connections(databases=["default"])
    assert ids(messages) == (["django_pgpool.W001"] if warned else [])
    if warned:
        # The test cluster: max_connections 300, 3 reserved; max_size 4.
        assert "1000 worker processes x max_size 4 = 4000" in messages[0].msg
        assert "the 297 the server allows" in messages[0].msg
    assert check_max_connections(databases=None) == [], "a database check only"


def test_w002_tls_without_keepalives(databases: Any) -> None:
    databases(OPTIONS={"pool": {"keepalives": False}})
    assert ids(check_databases()) == ["django_pgpool.W002"]
    databases(OPTIONS={"pool": {"keepalives": False}, "keepalives": 1})
    assert check_databases() == []
    databases(OPTIONS={"pool": {"keepalives": False}, "sslmode": "disable"})
    assert check_databases() == []


def test_w003_engine_without_pool(databases: Any) -> None:
    databases(OPTIONS={"pool": None})
    [message] = check_databases()
    assert message.id == "django_pgpool.W003"
    assert 'DATABASES["x"]' in message.msg


def test_w004_pgbouncer_with_server_side_cursors(databases: Any) -> None:
    databases(OPTIONS={"pgbouncer": True})
    [message] = check_databases()
    assert message.id == "django_pgpool.W004"
    assert "DISABLE_SERVER_SIDE_CURSORS" in (message.hint or "")
    databases(OPTIONS={"pgbouncer": True}, DISABLE_SERVER_SIDE_CURSORS=True)
    assert check_databases() == []


def test_e002_pgbouncer_not_a_bool(databases: Any) -> None:
    databases(OPTIONS={"pgbouncer": "yes"})
    [message] = check_databases()
    assert message.id == "django_pgpool.E002"
    assert 'DATABASES["x"]["OPTIONS"]["pgbouncer"]: expected True or False' in (
        message.msg
    )


@pytest.mark.django_db
def test_w001_not_behind_pgbouncer(settings: Any) -> None:
    settings.PGPOOL_WORKERS = 1000
    options = django_settings.DATABASES["default"]["OPTIONS"]
    options["pgbouncer"] = True
    try:
        assert check_max_connections(databases=["default"]) == []
    finally:
        del options["pgbouncer"]
