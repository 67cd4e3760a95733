"""PgPool: a fork-safe psycopg pool per Flask app, a connection per app context."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Mapping
from functools import partial
from typing import Any, cast

import psycopg
from flask import (
    Flask,
    Response,
    current_app,
    g,
    has_request_context,
    jsonify,
    request,
)
from flask.globals import app_ctx
from psycopg.errors import IdleInTransactionSessionTimeout
from psycopg_pool import ConnectionPool

from pgpool_core import ForkSafePool
from pgpool_core._loans import name_borrower, restore_borrower
from pgpool_core.errors import unavailable_reason
from pgpool_core.ops.health import PoolHealth, check_pool

from .cli import pgpool_cli
from .config import DEFAULT_BIND, BindConfig, read_config
from .errors import DatabaseUnavailable

__all__ = ["PgPool", "PgPoolState"]

logger = logging.getLogger("pgpool.flask")

#: Where an app context keeps its borrowed connections, by bind.
_G_NAME = "_pgpool_connections"
#: The current app context and request, found as the proxies find them: their
#: lookups, bound once (each request that borrows runs them).
_current_app_ctx: Callable[[], Any] = cast(Any, app_ctx)._get_current_object
_current_request: Callable[[], Any] = cast(Any, request)._get_current_object


class PgPoolState:
    """What :meth:`PgPool.init_app` made for one app: ``app.extensions["pgpool"]``."""

    def __init__(
        self,
        extension: PgPool,
        binds: Mapping[str, BindConfig],
        retry_after: int,
    ) -> None:
        #: The PgPool instance registered on the app.
        self.extension = extension
        #: The app's ForkSafePool of each database, by bind ("default" first).
        self.pools: dict[str, ForkSafePool] = {
            bind: ForkSafePool._of_validated(config.conninfo, **config.options)
            for bind, config in binds.items()
        }
        for bind, pool in self.pools.items():
            pool.capacity_command = "flask pgpool capacity"
            pool.used_by = f"flask_pgpool bind {bind!r}"
        #: Seconds sent in Retry-After with a 503.
        self.retry_after = retry_after
        self._binds = dict(binds)

    def __repr__(self) -> str:
        pools = ", ".join(f"{bind}={pool!r}" for bind, pool in self.pools.items())
        return f"<{type(self).__name__} {pools} retry_after={self.retry_after}>"

    def pool_for(self, bind: str) -> ForkSafePool:
        """Return the ForkSafePool of *bind*; raise KeyError naming the known ones."""
        try:
            return self.pools[bind]
        except KeyError:
            known = ", ".join(repr(b) for b in self.pools)
            raise KeyError(
                f"no database {bind!r}: the app has {known}"
                " (the names other than 'default' are PGPOOL_BINDS keys)"
            ) from None

    def masked_conninfo(self, bind: str) -> str:
        """Return the conninfo of *bind* with the password masked."""
        return self._binds[bind].masked_conninfo()

    def mask(self, bind: str, text: str) -> str:
        """Return *text* with the secrets of *bind* (and all known ones) masked."""
        return self._binds[bind].mask(text)

    def mask_exception(self, bind: str, exc: BaseException) -> BaseException:
        """Mask the secrets of *bind* in the message of *exc* and its causes."""
        return self._binds[bind].mask_exception(exc)


class PgPool:
    """Fork-safe psycopg connection pools for Flask apps.

    One instance may serve several apps (an app factory, tests)::

        pgpool = PgPool()

        def create_app():
            app = Flask(__name__)
            app.config["PGPOOL_CONNINFO"] = "postgresql://app@db/app"
            pgpool.init_app(app)
            return app

    Each app gets a :class:`pgpool_core.ForkSafePool` per database; nothing
    connects until a connection is used, so an app made in a uWSGI or gunicorn
    master is safe to fork.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    def init_app(self, app: Flask) -> None:
        """Read the app's PGPOOL_* settings and register the extension on it.

        Raises :class:`pgpool_core.ConfigurationError` naming a bad setting.
        Connects to nothing.
        """
        if "pgpool" in app.extensions:
            raise RuntimeError(
                "A 'PgPool' instance has already been registered on this Flask"
                " app. Import and use that instance instead."
            )
        config = read_config(app.config, app.name)
        app.extensions["pgpool"] = PgPoolState(self, config.binds, config.retry_after)
        app.after_request(_keep_for_stream)
        app.teardown_appcontext(_return_connections)
        # A connection lost mid-request, or a session the server ended
        # (idle_in_transaction_session_timeout: SQLSTATE 25P03, which psycopg
        # classes as an InternalError), is a 503 too.
        for lost in (psycopg.OperationalError, IdleInTransactionSessionTimeout):
            if lost not in app.error_handler_spec[None][None]:
                app.register_error_handler(lost, _database_lost)
        app.cli.add_command(pgpool_cli)

    # -- the current app's state ----------------------------------------------

    def _get_state(self) -> PgPoolState:
        return self._context()[1]

    def _context(self) -> tuple[Any, PgPoolState]:
        """Return the current app context's ``g`` and the app's state.

        One lookup of the context, rather than one per proxy (``g``,
        ``current_app``): this runs in every request that uses a connection.
        """
        try:
            ctx = _current_app_ctx()
        except RuntimeError:
            raise RuntimeError(
                "flask_pgpool: working outside of an application context: use"
                " the connection in a view, a CLI command or a"
                " `with app.app_context():` block."
            ) from None
        state: PgPoolState | None = ctx.app.extensions.get("pgpool")
        if state is None or state.extension is not self:
            raise RuntimeError(
                "The current Flask app is not registered with this 'PgPool'"
                " instance. Did you forget to call 'init_app', or did you create"
                " multiple 'PgPool' instances?"
            )
        return ctx.g, state

    # -- connections -----------------------------------------------------------

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The current app context's connection to the default database.

        Borrowed on first use, given back when the app context ends (after a
        streamed response, when the stream ends). A transaction still open
        then is rolled back: commit with ``with conn.transaction():`` or
        ``conn.commit()``.
        """
        return self.get_connection(DEFAULT_BIND)

    def get_connection(self, bind: str = DEFAULT_BIND) -> psycopg.Connection[Any]:
        """Return the current app context's connection to *bind* (a PGPOOL_BINDS key).

        In a request, failing to get one (pool exhausted, database unreachable)
        raises :class:`DatabaseUnavailable`, a 503, unless the app has an error
        handler for the psycopg exception, which then gets it.
        """
        ctx_g, state = self._context()
        # One call of g's (Python) methods, not two: a _Borrowed costs none.
        borrowed: _Borrowed = ctx_g.setdefault(_G_NAME, _Borrowed())
        conn = borrowed.get(bind)
        if conn is not None and not conn.closed:
            return conn
        pool = state.pools.get(bind)
        if pool is None:
            pool = state.pool_for(bind)  # raises KeyError naming the known ones
        if conn is not None:
            # Closed by the view, or lost with the server: the next use of the
            # context gets a new one.
            del borrowed[bind]
            pool.putconn(conn)
        label = borrowed.label
        if label is None:
            try:
                # Named in the pool's warnings (warn_held_after, a rolled-back
                # write), maybe after the request context is gone.
                label = _new_label(_RequestLabel, (_current_request(),))
            except RuntimeError:
                pass  # no request: a CLI command, an app context of its own
            else:
                borrowed.label = label
        try:
            if pool.warn_held_after is None:
                conn = pool.getconn()
            else:
                # As ``with borrower(label):``, without a generator's calls.
                token = name_borrower(label)
                try:
                    conn = pool.getconn()
                finally:
                    restore_borrower(token)
        except psycopg.OperationalError as err:
            unavailable = _unavailable(state, bind, pool, err)
            if unavailable is None:
                raise
            raise unavailable from err
        borrowed[bind] = conn
        return conn

    # -- pools -------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[Any]:
        """This process's ``psycopg_pool.ConnectionPool`` of the default database."""
        return self.get_pool(DEFAULT_BIND)

    def get_pool(self, bind: str = DEFAULT_BIND) -> ConnectionPool[Any]:
        """This process's ``psycopg_pool.ConnectionPool`` of *bind*."""
        return self._get_state().pool_for(bind).pool

    def stats(self) -> dict[str, dict[str, Any]]:
        """Return each database's pool statistics in this process, by bind.

        ``ForkSafePool.stats()`` (pid, pool name, ``ConnectionPool.get_stats()``)
        with the conninfo, password masked.
        """
        state = self._get_state()
        return {
            bind: {"conninfo": state.masked_conninfo(bind), **pool.stats()}
            for bind, pool in state.pools.items()
        }

    # -- health ---------------------------------------------------------------

    def health(self, *, timeout: float = 1.0) -> dict[str, PoolHealth]:
        """Check each database's pool of this process, by bind.

        :func:`pgpool_core.ops.health.check_pool` for each: a connection borrowed
        within *timeout* seconds answers ``SELECT 1``, else a new one is tried
        (bounded by ``connect_timeout``); never the pool's ``timeout``.
        """
        state = self._get_state()
        return {bind: check_pool(pool, timeout) for bind, pool in state.pools.items()}

    def health_view(self, *, timeout: float = 1.0) -> Callable[[], Response]:
        """Return a view answering for this worker's pools: 200, or 503 if one fails.

        For a load balancer's or an orchestrator's probe::

            app.add_url_rule("/health/db", view_func=pgpool.health_view())

        The JSON body has ``status`` ("ok" or "unavailable") and, by bind,
        :meth:`pgpool_core.ops.health.PoolHealth.as_dict` (pid, reason, stats).
        The response is not cached (``Cache-Control: no-store``).
        """

        def pgpool_health() -> Response:
            checked = self.health(timeout=timeout)
            healthy = all(result.healthy for result in checked.values())
            response = jsonify(
                status="ok" if healthy else "unavailable",
                databases={bind: result.as_dict() for bind, result in checked.items()},
            )
            response.status_code = 200 if healthy else 503
            response.headers["Cache-Control"] = "no-store"
            return response

        return pgpool_health


class _Borrowed(dict[str, psycopg.Connection[Any]]):
    """An app context's connections by bind, and the request that borrowed them.

    Made by dict's own ``__init__`` (no Python call per request): its
    attributes, set when known, default to the class's.
    """

    #: The request that borrowed them (see get_connection()).
    label: _RequestLabel | None = None
    #: True when the response is a generator: its end gives them back.
    streaming = False


def _unavailable(
    state: PgPoolState, bind: str, pool: ForkSafePool, err: psycopg.OperationalError
) -> DatabaseUnavailable | None:
    """Return the 503 that *err*, failing to borrow, is; None: raise *err* itself."""
    # PoolTimeout and TooManyRequests are OperationalErrors too. The message
    # of a failed connect may quote a host holding a password.
    state.mask_exception(bind, err)
    if not has_request_context() or _handled_by_app(err):
        return None
    reason = unavailable_reason(err)
    logger.warning(
        "pool %r: no connection for %s %s, answering 503: %s",
        pool.name,
        request.method,
        request.path,
        state.mask(bind, f"{type(err).__name__}: {err}"),
    )
    return DatabaseUnavailable(bind, state.retry_after, reason)


class _RequestLabel(tuple[Any, ...]):
    """Names a request in a warning, read from the request only if one is logged.

    A tuple (the request), made without a Python call per request.
    """

    __slots__ = ()

    __repr__ = object.__repr__

    def __str__(self) -> str:
        request = self[0]
        return f"{request.method} {request.path} (endpoint {request.endpoint})"


#: Makes a _RequestLabel without a Python ``__new__``.
_new_label: Callable[[type[_RequestLabel], tuple[Any, ...]], _RequestLabel]
_new_label = tuple.__new__


def _handled_by_app(err: psycopg.Error) -> bool:
    """Return True if the app or the request's blueprints handle *err* themselves.

    Handlers for psycopg's exception classes count; one for ``Exception`` does
    not (it gets the 503, as it gets every HTTP error), nor does the
    extension's own.
    """
    classes = [cls for cls in type(err).__mro__ if issubclass(cls, psycopg.Error)]
    spec = current_app.error_handler_spec
    for scope in (*request.blueprints, None):
        handlers = spec.get(scope, {}).get(None, {})
        if any(handlers.get(cls) not in (None, _database_lost) for cls in classes):
            return True
    return False


def _app_handler(err: Exception) -> Callable[[Any], Any] | None:
    """Return the error handler Flask would pick for *err* without the extension's."""
    spec = current_app.error_handler_spec
    for scope in (*request.blueprints, None):
        handlers = spec.get(scope, {}).get(None, {})
        for cls in type(err).__mro__:
            handler = handlers.get(cls)
            if handler is not None and handler is not _database_lost:
                return handler
    return None


def _database_lost(err: psycopg.Error) -> Any:
    """Answer 503 when a view's database goes away (the extension's error handler).

    A query that fails because the connection was lost (a server restart, a
    terminated backend, a network path that stopped answering), because the
    server refuses or shuts down, or because it ended the session
    (``idle_in_transaction_session_timeout``), is a 503 with Retry-After as a
    failed borrow is. Any other error, or one the app handles itself, goes
    where it would go without this handler.
    """
    reason = unavailable_reason(err)
    state: PgPoolState = current_app.extensions["pgpool"]
    for bind in state.pools:
        state.mask_exception(bind, err)
    if reason is None or _handled_by_app(err):
        handler = _app_handler(err)
        if handler is None:
            raise err
        return current_app.ensure_sync(handler)(err)
    borrowed: dict[str, psycopg.Connection[Any]] = g.get(_G_NAME) or {}
    bind = next(
        (b for b, conn in borrowed.items() if conn.broken or conn.closed),
        DEFAULT_BIND,
    )
    logger.warning(
        "pool %r: %s during %s %s, answering 503: %s",
        state.pools[bind].name,
        reason,
        request.method,
        request.path,
        state.mask(bind, f"{type(err).__name__}: {err}"),
    )
    unavailable = DatabaseUnavailable(bind, state.retry_after, reason)
    unavailable.__cause__ = err
    return current_app.handle_http_exception(unavailable)


def _keep_for_stream(response: Response) -> Response:
    """Keep the connections of a generator's response until the stream ends.

    Flask may tear the app context down when the view returns, before a
    ``stream_with_context`` generator runs (Flask 3.1.2 and later), and again
    when it ends; a generator that uses a connection it closed over has no
    context at all. The end of the body is the one end they all share.
    """
    body = response.response
    if type(body) is list:  # Flask's body for str, bytes, dict...: at once
        return response
    if isinstance(body, Generator):
        state: PgPoolState = current_app.extensions["pgpool"]
        borrowed: _Borrowed = g.setdefault(_G_NAME, _Borrowed())
        borrowed.streaming = True
        response.response = _GiveBackAtEnd(body, partial(_give_back, state, borrowed))
    return response


class _GiveBackAtEnd:
    """A response body that gives the connections back when it ends or is closed.

    Not a generator: a server may close a body it never iterated (a client
    gone early), and an unstarted generator's close() runs no cleanup.
    """

    def __init__(self, body: Iterator[Any], give_back: Callable[[], None]) -> None:
        self._body = body
        self._give_back = give_back

    def __iter__(self) -> _GiveBackAtEnd:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._body)
        except BaseException:
            self.close()  # the end (StopIteration), or the generator failed
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._give_back()


def _return_connections(exc: BaseException | None) -> None:
    """Give back the app context's connections, unless a stream still needs them."""
    ctx = _current_app_ctx()  # one lookup, not one per proxy
    ctx_g = ctx.g
    borrowed: _Borrowed | None = ctx_g.pop(_G_NAME, None)
    if borrowed is None:
        return
    if borrowed.streaming:
        setattr(ctx_g, _G_NAME, borrowed)  # as it was: the stream's end gives back
        return
    if borrowed:
        _give_back(ctx.app.extensions["pgpool"], borrowed)


def _give_back(state: PgPoolState, borrowed: _Borrowed) -> None:
    """Return *borrowed* connections to their pools; roll back what is left open."""
    # The pool names the request if a transaction it rolls back had written;
    # a label the caller had set (``with borrower(...)``) is kept.
    token = name_borrower(borrowed.label)
    try:
        while borrowed:
            bind, conn = borrowed.popitem()
            pool = state.pools[bind]
            try:
                # A view that only read left its transaction open: documented,
                # no warning (one that wrote is warned about by the pool). The
                # reset rolls it back in its own query.
                pool.putconn(conn, warn_open_transaction=False)
            except Exception as err:
                logger.warning(
                    "pool %r: a connection could not be given back: %s",
                    pool.name,
                    state.mask(bind, f"{type(err).__name__}: {err}"),
                )
    finally:
        restore_borrower(token)
