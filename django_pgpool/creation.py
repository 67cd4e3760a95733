"""Test databases: no session may be left on one that is cloned or dropped."""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.backends.postgresql import creation as postgresql

__all__ = ["DatabaseCreation"]


class DatabaseCreation(postgresql.DatabaseCreation):
    """Django's, closing every pool on a test database before it is copied or dropped.

    PostgreSQL refuses ``DROP DATABASE`` and ``CREATE DATABASE ... TEMPLATE``
    while any other session is connected to the database ("database ... is
    being accessed by other users"). Django's backend closes the pool of the
    alias it works on; an alias mirrored to it (``TEST: {"MIRROR": ...}``), a
    copy made with ``connection.copy()`` or another alias on the same database
    keeps a pool of its own there. Every one is closed first, with the
    connections that this thread's wrappers hold on that database.
    """

    connection: Any

    # django-stubs leaves out the private methods overridden here: hence the
    # "type: ignore" comments.

    def _create_test_db(
        self, verbosity: int, autoclobber: bool, keepdb: bool = False
    ) -> str:
        # An old test database of that name may be dropped and made again.
        self.connection.close_pools_on(self._get_test_db_name())  # type: ignore[attr-defined]
        name: str = super()._create_test_db(verbosity, autoclobber, keepdb)  # type: ignore[misc]
        return name

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        # The template must have no session; the clone may exist already and
        # then be dropped.
        self.connection.close_pools_on(self.connection.settings_dict["NAME"])
        self.connection.close_pools_on(self.get_test_db_clone_settings(suffix)["NAME"])
        super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        self.connection.close_pools_on(test_database_name)
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]


def close_connections_on(name: str) -> None:
    """Give back or close this thread's connections to database *name*, any backend.

    A pooled alias of Django's own backend has its pool closed too.
    """
    for wrapper in connections.all(initialized_only=True):
        if wrapper.settings_dict["NAME"] != name:
            continue
        wrapper.close()
        close_pool = getattr(wrapper, "close_pool", None)
        if close_pool is not None and not hasattr(wrapper, "close_pools_on"):
            close_pool()  # Django's own pool, in an alias of Django's backend
