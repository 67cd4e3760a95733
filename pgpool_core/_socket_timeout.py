"""``socket_timeout``: how long a pool's connection may wait on a silent server.

libpq has no read timeout, and psycopg waits on a connection's socket for as
long as the server takes. A network path that stops forwarding while its
peer still acknowledges at the TCP level (a stuck proxy or load balancer, a
pooler waiting for its server, a middlebox that forgot the connection but
not its socket) holds a query forever: keepalives and ``tcp_user_timeout``
see nothing wrong, since the peer answers them, and ``statement_timeout``
cannot help a query the server never received. So each of a pool's
connections bounds every wait on its socket: when nothing arrived from the
server (nor, while sending, could anything be written) for
``socket_timeout`` seconds, the connection is closed (never lent again) and
the operation raises :class:`~pgpool_core.errors.SocketTimeout`, a
``psycopg.OperationalError`` that the frameworks answer with a 503. The
bound is on silence, not on the whole operation: a large result that keeps
arriving is never cut. pgJDBC calls the same bound ``socketTimeout``.

A query that rightly runs longer than ``socket_timeout`` before its first
row (a migration's ``CREATE INDEX``, a report) is not cut: when the bound
passes, the pool asks the server on a connection of its own (made and
answered within 2 s each) whether the silent connection's backend is still
running a query; if it is, and not blocked sending to the client, the wait
goes on for another ``socket_timeout``. A path that stopped forwarding
fails that question, so the connection is closed. Through PgBouncer
(``pgbouncer=True``) the pool cannot ask: the backend's pid is not the
client's, and a query silent for ``socket_timeout`` fails; raise it there
for long work, or set it to None (no bound). When it fails, the server is
not told: the query runs on until it ends or the server notices the closed
connection (``statement_timeout``, ``client_connection_check_interval``).

How: psycopg runs each operation of a connection (a query, a fetch, a
commit) as a generator, which ``Connection.wait()`` hands to psycopg's wait
function (``psycopg.waiting.wait``, chosen by psycopg when imported, or by
:mod:`pgpool_core._green` under gevent and eventlet). The wait function
resumes the generator when the socket is ready, and every 0.1 s (psycopg's
interval) with nothing ready. :func:`bound_waits` has each connection's
``wait`` hand on the generator wrapped
(``pgpool_core._reset.shadow_wait()``), which counts the time since
the socket was last ready: a bound on top of whatever wait function psycopg
uses, looked up at each call. Not bounded: connecting (``connect_timeout``),
and ``Connection.notifies()``, which waits for notifications as long as its
own ``timeout`` says.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any, NoReturn

import psycopg

from ._reset import shadow_wait
from .errors import SocketTimeout

__all__ = ["SOCKET_TIMEOUT_DEFAULT", "bound_waits", "bounded"]

#: Seconds a pool's connection may wait on its socket with nothing from the
#: server, by default: longer than a web request rightly waits for one
#: query, shorter than the 60 s after which the documented uWSGI ``harakiri``
#: and gunicorn ``timeout`` kill a worker (case 35 measured requests held
#: until then, and queries held for minutes outside a server).
SOCKET_TIMEOUT_DEFAULT = 45.0

# psycopg's interval between two wake-ups of a wait (``psycopg.connection``'s
# ``_WAIT_INTERVAL``).
_INTERVAL = 0.1

# On the connection: [seconds or None, the setting named when it passes]; and
# (the pool's name, StillRunning or None).
_BOUND = "_pgpool_socket_timeout"
_PASSED = "_pgpool_bound_passed"
_SETTING = "socket_timeout"


#: Asked when the bound passes, with the silent connection's backend pid:
#: True if the server says that backend is still running a query.
StillRunning = Callable[[int], bool]


def bound_waits(
    conn: psycopg.Connection[Any],
    seconds: float | None,
    pool_name: str,
    still_running: StillRunning | None = None,
) -> None:
    """Bound each wait of *conn* on its socket to *seconds* (None: no bound).

    Called on each connection a pool makes, before anything else uses it.
    Each operation's generator is wrapped as its wait begins
    (``pgpool_core._reset.shadow_wait()``): psycopg's handling of Ctrl-C
    and its choice of wait function stay.
    When the bound passes, the connection is closed (its socket, locally:
    ``PQfinish``) and :class:`~pgpool_core.errors.SocketTimeout` is raised,
    naming *pool_name* and the setting to raise; unless *still_running*
    says the backend is still at work (then the wait goes on).
    """
    # Read as each wait begins (_bounded_wait()), changed in place by
    # bounded(); and what a wait needs once its bound passed.
    setattr(conn, _BOUND, [seconds, _SETTING])
    setattr(conn, _PASSED, (pool_name, still_running))
    shadow_wait(conn, _bounded_wait)


def _bounded_wait(conn: Any, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Drive *gen*; once its socket stays unready for the bound, close *conn*
    and raise (unless the server says it is still at work on it: then
    another bound)."""
    # psycopg's wait functions send gen the socket's readiness, or 0 (nothing
    # ready) every interval while it waits.
    seconds, setting = conn._pgpool_socket_timeout
    if seconds is None:
        return (yield from gen)
    try:
        waiting = next(gen)
        while True:
            ready = yield waiting
            if not ready:
                # The first wake-up with nothing ready: a wait began an
                # interval ago (no clock read while the socket is ready).
                since = monotonic() - _INTERVAL
                waiting = gen.send(ready)
                ready = yield waiting
                while not ready:
                    if monotonic() - since >= seconds:
                        pool_name, still_running = conn._pgpool_bound_passed
                        if (
                            setting != _SETTING
                            or still_running is None
                            or not still_running(conn.info.backend_pid)
                        ):
                            _time_out(gen, conn, seconds, setting, pool_name)
                        since = monotonic()  # a long query: wait on
                    waiting = gen.send(ready)
                    ready = yield waiting
            waiting = gen.send(ready)
    except StopIteration as done:
        return done.value


@contextmanager
def bounded(
    conn: psycopg.Connection[Any], seconds: float, setting: str
) -> Iterator[None]:
    """Bound *conn*'s waits to *seconds* in the block, if shorter than its own.

    For a wait shorter than ``socket_timeout`` (the health check's
    ``SELECT 1``); *setting* is what the error names. *conn* must be a pool's
    (:func:`bound_waits` ran on it); otherwise nothing is bounded.
    """
    bound: list[Any] | None = getattr(conn, _BOUND, None)
    if bound is None:
        yield
        return
    previous = bound[:]
    if previous[0] is None or seconds < previous[0]:
        bound[:] = (seconds, setting)
    try:
        yield
    finally:
        bound[:] = previous


def _time_out(
    gen: Generator[Any, Any, Any],
    conn: psycopg.Connection[Any],
    seconds: float,
    setting: str,
    pool_name: str,
) -> NoReturn:
    """Close *conn*, silent for *seconds*, and raise SocketTimeout."""
    gen.close()
    conn.pgconn.finish()  # not close(): with close_returns, that gives it back
    message = (
        f"pool {pool_name!r}: the server sent nothing for {round(seconds, 2):g} s"
        f" ({setting}); the connection is closed"
    )
    if setting == _SETTING:
        message += (
            ". A network path that stopped forwarding, or a query that runs"
            f" longer: raise {_SETTING} (None: no bound) if queries may rightly"
            " take longer"
        )
    raise SocketTimeout(message)
