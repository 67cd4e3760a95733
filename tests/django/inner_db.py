"""Tests that test_testdb.py runs in a pytest of its own (not collected here).

They use the pool on the test database, and leave its connections idle in
the pool when they end: the test database must still be dropped cleanly, also
when a mirror alias ("replica", PGPOOL_APP_REPLICA=1) and a copy of the
connection (``connection.copy()``) kept pools of their own on it.
"""

from __future__ import annotations

import pytest
from django.db import connection, connections

from tests.django.testapp.models import Item


@pytest.mark.django_db
def test_uses_the_pooled_test_database() -> None:
    Item.objects.create(name="one")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        name = cursor.fetchone()[0]
    assert name.startswith("test_"), name
    assert connection.pool is not None
    assert Item.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_commits_on_the_test_database() -> None:
    Item.objects.create(name="committed")
    connection.close()  # back to the pool, which keeps it open
    assert Item.objects.count() == 1


@pytest.mark.django_db(databases="__all__")
def test_other_pools_on_the_test_database() -> None:
    copied = connection.copy("pgpool_copy")  # as Django's own tests do
    for wrapper in (connections["replica"], copied):
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone()[0] == connection.settings_dict["NAME"]
        assert wrapper.pool is not None
        assert wrapper.pool is not connection.pool
    copied.close()  # back to its pool, which keeps it open
