"""The exceptions raised by pgpool_core (and by the framework packages)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout, TooManyRequests

__all__ = [
    "CONNECT_REASONS",
    "REFUSED",
    "SETTINGS",
    "UNREACHABLE",
    "ConfigurationError",
    "ConnectFailed",
    "RETRY_AFTER_DEFAULT",
    "PgPoolError",
    "PoolNotAvailable",
    "SessionResetFailed",
    "SocketTimeout",
    "connect_failure",
    "exception_chain",
    "server_full",
    "unavailable_message",
    "unavailable_reason",
]


class PgPoolError(Exception):
    """Base class for the errors raised by this package."""


class ConfigurationError(PgPoolError, ValueError):
    """A pool setting is missing or has a bad value; the message names it."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        self.message = message
        super().__init__(f"{setting}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.setting, self.message))


class PoolNotAvailable(PgPoolError):
    """The process has no pool of its own (a forking server's master process)."""


class SessionResetFailed(PgPoolError, psycopg.OperationalError):
    """A returned connection's reset was refused, or not answered in time.

    The pool then discards the connection; borrowers never see this error.
    """


class SocketTimeout(PgPoolError, psycopg.OperationalError):
    """The server sent nothing for longer than the pool's ``socket_timeout``.

    Raised by a query (or a commit, a fetch...) on a pool's connection whose
    wait on its socket outlasted ``socket_timeout`` seconds: a network path
    that stopped forwarding while the connection stays open (a stuck proxy
    or load balancer, a pooler waiting for its server), or a query that
    rightly runs longer. The connection is closed (never lent again) before
    this is raised. A ``psycopg.OperationalError``, without SQLSTATE, as for
    a connection lost: the frameworks answer 503. See
    :mod:`pgpool_core._socket_timeout`.
    """


class ConnectFailed(PgPoolError, PoolTimeout):
    """The pool has no connection, and its latest attempt to connect failed.

    Raised by ``getconn()`` when the pool's next attempt to connect fails, or
    at once while the server refuses the login, rather than after the pool's
    timeout (see :func:`pgpool_core.errors.connect_failure` for how often the
    pool retries); a pool that is merely busy waits as psycopg_pool does. Its
    ``__cause__`` is psycopg's error (libpq's message, the password masked),
    which its message quotes. A ``psycopg_pool.PoolTimeout``, so that
    ``except PoolTimeout`` still catches it.
    """


# -- what a failed connect means ---------------------------------------------------

#: The server refuses this login: a wrong password, no such role or database,
#: no pg_hba.conf entry, no CONNECT privilege. Retrying at once floods the
#: server's log (and fail2ban, account lockouts) and changes nothing.
REFUSED = "refused"
#: The settings cannot work: libpq rejects them before connecting, cannot
#: verify the server's certificate, has no password to send; or the pool's
#: conninfo callable or ``configure`` fails. As with REFUSED, retrying at once
#: changes nothing.
SETTINGS = "settings"
#: The server cannot be reached or is not accepting connections now: refused
#: or timed out connects, a name that does not resolve, the server starting
#: up, shutting down, or out of connection slots. Over when it is back.
UNREACHABLE = "unreachable"

# Server errors (SQLSTATE classes 53 and 57, and PgBouncer's) that mean "not
# now" at login; any other error the server sends at login refuses it.
# psycopg has no SQLSTATE for a failed connect, only libpq's message.
_SERVER_NOT_NOW = re.compile(
    r"the database system is (?:starting up|shutting down|in recovery mode"
    r"|not yet accepting connections|not accepting connections)"
    r"|too many clients|too many connections|connection slots are reserved"
    r"|terminating connection due to administrator command|out of memory"
    r"|could not fork|pgbouncer cannot connect to server"
    r"|server login has been failing|no more connections allowed"
    r"|pooler is shutting down",
    re.IGNORECASE,
)
_SERVER_ERROR = re.compile(r"\b(?:FATAL|ERROR):\s+(.*)")
# libpq's own errors about settings that cannot work (fe-connect.c,
# fe-auth.c, fe-secure-openssl.c); "connection is bad:" is psycopg's prefix
# for options libpq rejected before connecting.
_CLIENT_SETTINGS = re.compile(
    r"connection is bad:|fe_sendauth|invalid \w+ value|invalid port number"
    r"|invalid integer value|could not match \d+ port numbers"
    r"|could not parse network address|authentication method requirement"
    r"|channel binding|SSL was required|GSSAPI encryption required"
    r"|certificate|private key|sslmode value|service file|definition of service"
    r"|server requested .* authentication|authentication method \d+ not supported",
    re.IGNORECASE,
)
# SQLSTATEs of a login the server refuses: class 28 (invalid authorization
# specification), 3D000 (no such database), 42501 (no CONNECT privilege).
_REFUSED_SQLSTATES = ("28", "3D000", "42501")
_NOT_NOW_SQLSTATE_CLASSES = ("08", "53", "57", "58")


def connect_failure(exc: BaseException) -> str:
    """Say what a failed attempt to connect means: REFUSED, SETTINGS or UNREACHABLE.

    From the SQLSTATE when there is one (an error of a query in
    ``configure``), else from libpq's message, in which a login the server
    refuses is an error it sent (``FATAL:``) other than those of SQLSTATE
    classes 53 and 57 ("too many clients", "the database system is starting
    up" ...). A pool retries UNREACHABLE at least every second (the server
    may be back any moment), the others with a growing delay.
    """
    if isinstance(exc, psycopg.Error):
        sqlstate = exc.sqlstate
        if sqlstate:
            if sqlstate.startswith(_REFUSED_SQLSTATES):
                return REFUSED
            if sqlstate.startswith(_NOT_NOW_SQLSTATE_CLASSES):
                return UNREACHABLE
            return SETTINGS
        if not isinstance(exc, psycopg.OperationalError):
            return SETTINGS  # "invalid connection option": psycopg's, not libpq's
        message = str(exc)
        said = [match.group(1) for match in _SERVER_ERROR.finditer(message)]
        if any(not _SERVER_NOT_NOW.search(text) for text in said):
            return REFUSED
        if _CLIENT_SETTINGS.search(message):
            return SETTINGS
        return UNREACHABLE
    # A conninfo or kwargs callable that failed or returned a bad value, a
    # configure function that raised.
    return SETTINGS


# PostgreSQL's messages of SQLSTATE 53300 at login (postmaster.c,
# postinit.c): the server, or the role's CONNECTION LIMIT, has no slot left.
_SERVER_FULL = re.compile(
    r"too many clients already|too many connections for"
    r"|remaining connection slots are reserved",
    re.IGNORECASE,
)


def server_full(exc: BaseException) -> bool:
    """Return True if a failed connect means the server has no connection slot left.

    SQLSTATE 53300 (``too_many_connections``): ``max_connections`` reached
    (less the reserved slots), or the role's or database's ``CONNECTION
    LIMIT``. At login psycopg has only libpq's message, which is matched.
    """
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if exc.sqlstate is not None:
        return exc.sqlstate == "53300"
    return _SERVER_FULL.search(str(exc)) is not None


# -- which errors are "not now" ----------------------------------------------------

# Server errors that mean "not now" rather than "this request is wrong": too
# many connections, the server shutting down or starting up, the session ended
# by idle_session_timeout (a connection that died in the pool).
_UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03", "57P05"})

#: Seconds a 503 answer asks clients to wait in its ``Retry-After`` header,
#: unless ``PGPOOL_RETRY_AFTER`` says otherwise (Flask's and Django's default).
RETRY_AFTER_DEFAULT = 5

#: How :func:`unavailable_reason` (a 503 page, a log line) says each kind of
#: :func:`connect_failure`.
CONNECT_REASONS = {
    REFUSED: "the database refused the login",
    SETTINGS: "the connection settings do not work",
    UNREACHABLE: "the database cannot be reached",
}


def unavailable_reason(exc: BaseException) -> str | None:
    """Return why *exc* means the database is unavailable, or None if it doesn't.

    Unavailable: no connection in time from the pool; the database cannot be
    reached, refuses the login or the connection was lost; the server refuses
    connections or is shutting down; it ended the session mid-request
    (``idle_in_transaction_session_timeout``, SQLSTATE 25P03, which psycopg
    classes as an InternalError). The exception's causes are searched too
    (Django wraps psycopg's errors in its own). The frameworks answer these
    with a 503.
    """
    for current in exception_chain(exc):
        if isinstance(current, ConnectFailed):
            cause = current.__cause__
            return CONNECT_REASONS[
                connect_failure(cause) if cause is not None else UNREACHABLE
            ]
        if isinstance(current, PoolTimeout):
            return "no connection available in the pool"
        if isinstance(current, SocketTimeout):
            return "the database stopped answering (socket_timeout)"
        if isinstance(current, TooManyRequests):
            return "too many requests waiting for a connection"
        if isinstance(current, psycopg.OperationalError):
            sqlstate = current.sqlstate
            # No SQLSTATE: the client's side (cannot connect, connection lost);
            # class 08: connection exceptions.
            if sqlstate is None:
                return CONNECT_REASONS[connect_failure(current)]
            if sqlstate.startswith("08"):
                return CONNECT_REASONS[UNREACHABLE]
            if sqlstate in _UNAVAILABLE_SQLSTATES:
                return "the database is not accepting connections"
        if isinstance(current, psycopg.errors.IdleInTransactionSessionTimeout):
            return (
                "the server ended the session: a transaction stayed idle longer"
                " than idle_in_transaction_session_timeout"
            )
    return None


def unavailable_message(reason: str | None) -> str:
    """Return the text of the 503 page for *reason*, from :func:`unavailable_reason`.

    The one text Flask's :class:`flask_pgpool.DatabaseUnavailable` and
    Django's :class:`django_pgpool.middleware.DatabaseUnavailableMiddleware`
    answer with (status 503, ``Retry-After``: :data:`RETRY_AFTER_DEFAULT`
    seconds unless ``PGPOOL_RETRY_AFTER`` is set); a general one when the
    reason is not known (None).
    """
    if reason is None:
        return "The database is busy or unreachable. Please try again later."
    return f"Service unavailable: {reason}; try again later."


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield *exc*, then its ``__cause__`` (else its ``__context__``), and so on.

    Each exception once, so that a chain that loops ends. The chain Python's
    traceback shows, which :func:`unavailable_reason` searches and
    :func:`pgpool_core._secrets.mask_exception` masks.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
