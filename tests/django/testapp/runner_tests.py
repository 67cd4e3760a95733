"""Tests for ``manage.py test``, run by test_testdb.py (pytest doesn't collect them)."""

from __future__ import annotations

from django.db import connection
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
