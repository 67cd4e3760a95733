"""Fixtures of the Django tests.

pytest-django loads tests.django.settings for the whole run (setup.cfg). Its
test databases are made on the test cluster: django_db_modify_db_settings
points the aliases there, unless PGPOOL_APP_DSN already did (a pytest run
started by a test, see test_testdb.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from django_pgpool.base import DatabaseWrapper
from tests.django.support import database_settings, load_alias
from tests.harness.postgres import PgServer


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    request: pytest.FixtureRequest,
) -> None:
    """Point the project's databases at the test cluster."""
    if "PGPOOL_APP_DSN" in os.environ:
        return
    pg: PgServer = request.getfixturevalue("pg_server")
    for settings_dict in settings.DATABASES.values():
        # In place: the connection wrappers share these dicts.
        settings_dict.update(
            HOST=pg.host,
            PORT=str(pg.port),
            USER=pg.user,
            PASSWORD=pg.password,
            NAME=pg.dbname,
        )


@pytest.fixture(autouse=True, scope="module")
def _close_pools_after_module() -> Iterator[None]:
    """Leave no pool (nor its threads) open for the tests that come after.

    pytest-django runs the database tests of the whole session first; tests
    elsewhere that fork, or count threads, must not find the pool of the
    test database running.
    """
    yield
    for wrapper in connections.all(initialized_only=True):
        wrapper.close()
        if isinstance(wrapper, DatabaseWrapper):
            wrapper.close_pool()


@pytest.fixture
def app_env(pg_server: PgServer) -> dict[str, str]:
    """The environment that points the test project at the test cluster."""
    return {
        "PGPOOL_APP_DSN": pg_server.dsn(),
        "DJANGO_SETTINGS_MODULE": "tests.django.settings",
    }


@pytest.fixture
def make_wrapper(
    pg_server: PgServer, django_db_blocker: Any
) -> Iterator[Callable[..., DatabaseWrapper]]:
    """Make connection wrappers of new aliases on the cluster's test database.

    Keyword arguments override the DATABASES entry (OPTIONS is merged). Their
    connections and pools are closed after the test.
    """
    made: list[DatabaseWrapper] = []

    def make(**overrides: Any) -> DatabaseWrapper:
        wrapper = load_alias(database_settings(pg_server, **overrides))
        assert isinstance(wrapper, DatabaseWrapper)
        made.append(wrapper)
        return wrapper

    with django_db_blocker.unblock():
        try:
            yield make
        finally:
            for wrapper in made:
                wrapper.close()
                wrapper.close_pool()
