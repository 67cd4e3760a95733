"""A pool's connection is one of a subclass of its own class, made once per class:
watched (the tracked reset), its waits bounded (``socket_timeout``), both or
neither, by the user's class's names; and :func:`bounded` still shortens the
bound of each wait, whatever the pool's ``socket_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgpool_core import ForkSafePool
from pgpool_core._socket_timeout import bounded
from pgpool_core.errors import SocketTimeout


class AppConnection(psycopg.Connection[Any]):
    """A user's connection class."""


def _options(socket_timeout: float | None, reset: str | None) -> dict[str, Any]:
    """The pool's options: *socket_timeout*, and *reset* unless "default"."""
    options: dict[str, Any] = {"socket_timeout": socket_timeout}
    if reset != "default":
        options["reset"] = reset
    return options


@pytest.mark.parametrize("user_class", [psycopg.Connection, AppConnection])
@pytest.mark.parametrize("socket_timeout", [45.0, None])
@pytest.mark.parametrize("reset", ["default", None, "always"])
def test_a_pool_connection_is_one_subclass_of_its_class_by_its_names(
    make_pool: Callable[..., ForkSafePool],
    user_class: type[psycopg.Connection[Any]],
    socket_timeout: float | None,
    reset: str | None,
) -> None:
    options = _options(socket_timeout, reset)
    classes = set()
    for _ in range(2):
        pool = make_pool(connection_class=user_class, **options)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            cls = type(conn)
            classes.add(cls)
            # One subclass doing all that applies, not one per thing it does.
            assert cls.__mro__[1] is user_class
            assert cls.__name__ == user_class.__name__
            assert cls.__qualname__ == user_class.__qualname__
            assert cls.__module__ == user_class.__module__
            assert repr(conn).startswith(
                f"<{user_class.__module__}.{user_class.__qualname__} "
            )
            # The wait is the class's: nothing on the instance.
            assert "wait" not in conn.__dict__
            assert cls.wait is not user_class.wait
    assert len(classes) == 1, "made once per class and what it does"


@pytest.mark.parametrize("socket_timeout", [45.0, None])
@pytest.mark.parametrize("reset", ["default", None])
def test_bounded_shortens_the_bound_of_a_pool_connection(
    make_pool: Callable[..., ForkSafePool],
    socket_timeout: float | None,
    reset: str | None,
) -> None:
    options = _options(socket_timeout, reset)
    pool = make_pool(**options)
    with pool.connection() as conn:
        started = time.monotonic()
        with bounded(conn, 0.3, "the test's bound"):
            with pytest.raises(SocketTimeout, match="the test's bound"):
                conn.execute("SELECT pg_sleep(3)")
        assert time.monotonic() - started < 2.5
        assert conn.closed
    # Given back: the pool's next connection waits as long as the server takes.
    with pool.connection() as conn:
        with bounded(conn, 5.0, "the test's bound"):
            conn.execute("SELECT pg_sleep(0.5)")
        conn.execute("SELECT pg_sleep(0.5)")  # its own bound again: none, or 45 s
