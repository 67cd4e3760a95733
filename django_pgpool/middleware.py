"""Answer 503 with Retry-After when the database cannot serve a request now."""

from __future__ import annotations

import logging

import psycopg
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin
from psycopg_pool import PoolTimeout

from .conf import retry_after

__all__ = ["DatabaseUnavailableMiddleware", "unavailable_reason"]

logger = logging.getLogger("pgpool.django")

# Server errors that mean "not now" rather than "this request is wrong": too
# many connections, and the server shutting down or starting up.
_UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})


def unavailable_reason(exc: BaseException) -> str | None:
    """Return why *exc* means the database is unavailable, or None if it doesn't.

    Django wraps psycopg's errors in its own (``django.db.OperationalError``),
    so the exception's causes are searched too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeout):
            return "no connection available in the pool"
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


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Turn a pool timeout or an unreachable database into 503 + ``Retry-After``.

    Without it such a request ends in a 500 after waiting for the pool's
    ``timeout``; with it, clients and load balancers are told to come back in
    ``PGPOOL_RETRY_AFTER`` seconds (default 5). Only exceptions raised by views
    are seen, as with any ``process_exception``.
    """

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        reason = unavailable_reason(exception)
        if reason is None:
            return None
        logger.warning(
            "503 for %s %s: %s: %s", request.method, request.path, reason, exception
        )
        response = HttpResponse(
            f"Service unavailable: {reason}; try again later.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(retry_after())
        return response
