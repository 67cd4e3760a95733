"""The exceptions of flask_pgpool (configuration errors are pgpool_core's)."""

from __future__ import annotations

from werkzeug.exceptions import ServiceUnavailable

from pgpool_core import ConfigurationError
from pgpool_core.errors import unavailable_message

__all__ = ["ConfigurationError", "DatabaseUnavailable"]


class DatabaseUnavailable(ServiceUnavailable):
    """No connection (pool exhausted, database unreachable or refusing): HTTP 503.

    Raised by ``pgpool.connection`` in a request when borrowing a connection
    fails; the psycopg exception is its ``__cause__``. Flask answers it as a
    503 with a ``Retry-After`` header unless the app handles it (an error
    handler for 503 or for this class).
    """

    description = unavailable_message(None)

    def __init__(self, bind: str, retry_after: int, reason: str | None = None) -> None:
        super().__init__(unavailable_message(reason), retry_after=retry_after)
        #: The database: ``"default"`` (PGPOOL_CONNINFO) or a PGPOOL_BINDS key.
        self.bind = bind
        #: Why, as :func:`pgpool_core.errors.unavailable_reason` says (or None):
        #: "the database refused the login", "the database cannot be reached"...
        self.reason = reason
