"""The pool's sessions are in Django's time zone, set as Django sets it.

Django's backend sends only the user's startup parameters and sets its time
zone after connecting (``configure``); so does this one, since poolers refuse
startup parameters they do not know (PgBouncer, Neon's, Supabase's:
``unsupported startup parameter: options``). ``RESET ALL`` in the reset
returns a session to the server's zone: ``configure`` runs again after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django_pgpool.base import DatabaseWrapper

SQL = (
    "SELECT current_setting('TimeZone'), reset_val FROM pg_settings"
    " WHERE name = 'TimeZone'"
)


def fetch(wrapper: Any, sql: str) -> Any:
    with wrapper.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def test_sessions_are_in_djangos_time_zone_after_each_reset(
    make_wrapper: Callable[..., DatabaseWrapper],
) -> None:
    # The session's own default (the server's, here the user's startup
    # option) differs from Django's UTC: what RESET ALL returns to.
    wrapper = make_wrapper(OPTIONS={"options": "-c TimeZone=Asia/Tokyo"})
    assert fetch(wrapper, SQL) == ("UTC", "Asia/Tokyo")
    with wrapper.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'America/Chicago'")
    wrapper.close()
    assert fetch(wrapper, SQL) == ("UTC", "Asia/Tokyo")


def test_only_the_users_startup_parameters_are_sent(
    make_wrapper: Callable[..., DatabaseWrapper],
) -> None:
    wrapper = make_wrapper()
    pool = wrapper.pool
    assert pool is not None
    assert "options" not in pool.masked_conninfo()
    wrapper.ensure_connection()
    assert wrapper.connection.info.get_parameters().get("options") is None
    assert fetch(wrapper, "SELECT current_setting('TimeZone')") == ("UTC",)
