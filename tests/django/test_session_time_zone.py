"""The pool's sessions start in Django's time zone, so a reset keeps it for free."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django_pgpool.base import DatabaseWrapper


def fetch(wrapper: Any, sql: str) -> Any:
    with wrapper.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def test_reset_returns_to_djangos_time_zone_without_a_set(
    make_wrapper: Callable[..., DatabaseWrapper],
) -> None:
    # The server's default differs: only the startup option makes the
    # session's own default (what RESET ALL returns to) Django's UTC.
    wrapper = make_wrapper(OPTIONS={"options": "-c TimeZone=Asia/Tokyo"})
    sql = "SELECT current_setting('TimeZone'), reset_val FROM pg_settings"
    sql += " WHERE name = 'TimeZone'"
    assert fetch(wrapper, sql) == ("UTC", "UTC")
    with wrapper.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'America/Chicago'")
    wrapper.close()
    assert fetch(wrapper, sql) == ("UTC", "UTC")
