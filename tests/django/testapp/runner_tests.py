"""Tests for ``manage.py test``, run by test_testdb.py (pytest doesn't collect them)."""

from __future__ import annotations

from django.db import connection, connections
from django.test import TestCase, TransactionTestCase

from .models import Item


class PooledTestCase(TestCase):
    def test_uses_the_pooled_test_database(self) -> None:
        Item.objects.create(name="one")
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            self.assertTrue(cursor.fetchone()[0].startswith("test_"))
        self.assertIsNotNone(connection.pool)


class PooledTransactionTestCase(TransactionTestCase):
    def test_commits(self) -> None:
        Item.objects.create(name="committed")
        connection.close()
        self.assertEqual(Item.objects.count(), 1)


class OtherPoolsTestCase(TestCase):
    """A mirror alias and a copy keep pools of their own on the test database."""

    databases = {"default", "replica"}

    def test_reads_through_other_pools(self) -> None:
        copied = connection.copy("pgpool_copy")  # as Django's own tests do
        for wrapper in (connections["replica"], copied):
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT current_database()")
                name = cursor.fetchone()[0]
            self.assertEqual(name, connection.settings_dict["NAME"])
            self.assertIsNot(wrapper.pool, connection.pool)
        copied.close()  # back to its pool, which keeps it open
