"""The exceptions raised by pgpool_core (and by the framework packages)."""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout, TooManyRequests

__all__ = [
    "ConfigurationError",
    "PgPoolError",
    "PoolNotAvailable",
    "unavailable_reason",
]


class PgPoolError(Exception):
    """Base class for the errors raised by this package."""


class ConfigurationError(PgPoolError, ValueError):
    """A pool setting is missing or has a bad value; the message names it."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {message}")


class PoolNotAvailable(PgPoolError):
    """The process has no pool of its own (a forking server's master process)."""


# Server errors that mean "not now" rather than "this request is wrong": too
# many connections, the server shutting down or starting up, the session ended
# by idle_session_timeout (a connection that died in the pool).
_UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03", "57P05"})


def unavailable_reason(exc: BaseException) -> str | None:
    """Return why *exc* means the database is unavailable, or None if it doesn't.

    Unavailable: no connection in time from the pool, the database cannot be
    reached or the connection was lost, the server refuses connections or is
    shutting down. The exception's causes are searched too (Django wraps
    psycopg's errors in its own). The frameworks answer these with a 503.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeout):
            return "no connection available in the pool"
        if isinstance(current, TooManyRequests):
            return "too many requests waiting for a connection"
        if isinstance(current, psycopg.OperationalError):
            sqlstate = current.sqlstate
            # No SQLSTATE: the client's side (cannot connect, connection lost);
            # class 08: connection exceptions.
            if sqlstate is None or sqlstate.startswith("08"):
                return "the database cannot be reached"
            if sqlstate in _UNAVAILABLE_SQLSTATES:
                return "the database is not accepting connections"
        current = current.__cause__ or current.__context__
    return None
