"""A fork-safe psycopg connection pool for preforking servers (uWSGI, gunicorn, Celery).

``ForkSafePool`` takes ``psycopg_pool.ConnectionPool``'s arguments and gives
each process its own pool, made on first use; a pool inherited through fork is
abandoned without touching the parent's sockets.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from ._loans import borrower
from ._options import POOL_OPTIONS, validate_connection, validate_pool_options
from ._reset import (
    RESET_SQL,
    check_socket,
    check_target_session_attrs,
)
from ._secrets import ConnectionParams, mask_conninfo, mask_exception, mask_secrets
from .errors import (
    ConfigurationError,
    ConnectFailed,
    PgPoolError,
    PoolNotAvailable,
    SocketTimeout,
)
from .pool import ForkSafePool

__all__ = [
    "POOL_OPTIONS",
    "RESET_SQL",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionParams",
    "ForkSafePool",
    "PgPoolError",
    "PoolNotAvailable",
    "SocketTimeout",
    "borrower",
    "check_socket",
    "check_target_session_attrs",
    "mask_conninfo",
    "mask_exception",
    "mask_secrets",
    "validate_connection",
    "validate_pool_options",
]

#: The installed distribution's version (psycopg-forksafe).
__version__ = _version("psycopg-forksafe")
