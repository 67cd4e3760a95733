"""Tests that test_testdb.py runs in a pytest of its own (not collected here).

They use the pool on the test database, and leave its connections idle in
the pool when they end: the test database must still be dropped cleanly.
"""

from __future__ import annotations

import pytest
from django.db import connection

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
