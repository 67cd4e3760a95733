"""Django's PostgreSQL backend with a fork-safe pool: ``"ENGINE": "django_pgpool"``."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper
from django.db.backends.postgresql import base as postgresql
from django.views.decorators.debug import sensitive_variables
from psycopg import pq, sql
from psycopg_pool import ConnectionPool

from pgpool_core import (
    ConnectionParams,
    ForkSafePool,
    _green,
    _process,
    mask_exception,
    mask_secrets,
)

from . import borrowers  # noqa: F401  (names requests for warn_held_after)
from .conf import check_alias, run_by_manage_py, validated_pool_options
from .creation import DatabaseCreation, close_connections_on

__all__ = ["DatabaseWrapper"]

logger = logging.getLogger("pgpool.django")

_IDLE = pq.TransactionStatus.IDLE

# Django's, as defined (see DatabaseWrapper.ensure_connection).
_djangos_ensure_connection = BaseDatabaseWrapper.ensure_connection


def _celery_keeps_pools() -> bool:
    """Return True in a Celery worker process whose pools serve all its tasks."""
    # Only if the app imported the hooks: this backend never imports Celery.
    hooks = sys.modules.get("pgpool_core.servers.celery")
    return hooks is not None and bool(hooks.keeps_pools())


def _connections_per_greenlet() -> None:
    """Once gevent or eventlet patched threading, give each greenlet its connections.

    Django keeps its connections in a thread-local made when ``django.db`` was
    imported. In a gunicorn master that preloaded the app, that was before the
    worker was patched: a real thread-local, which all the worker's greenlets
    would share, one request's transaction running on another's connection.
    Its wrappers are the master's (their connections are abandoned, see
    :meth:`ForkSafePool.is_inherited`), so a fresh one replaces it.
    """
    from asgiref.local import Local
    from django.db import connections

    handler: Any = connections  # _connections: Django's, untyped
    storage = getattr(handler._connections, "_storage", None)  # asgiref's
    if storage is None or isinstance(storage, threading.local):
        return  # made after the patch, or not a thread-local at all
    handler._connections = Local(handler.thread_critical)


_green.on_patched(_connections_per_greenlet)


class _AliasPool(NamedTuple):
    """An alias's pool, the database it connects to, the parameters it was made of."""

    target: tuple[Any, ...]
    pool: ForkSafePool
    #: get_connection_params() when the pool was made (see connect()).
    params: ConnectionParams


class DatabaseWrapper(postgresql.DatabaseWrapper):
    """Django's PostgreSQL backend whose ``OPTIONS["pool"]`` is a ForkSafePool.

    Everything else is Django's: the pool is made from the same settings, runs
    the same ``configure`` (time zone, ``assume_role``) and honours
    ``CONN_HEALTH_CHECKS``. What differs: each process gets its own pool, a
    returned connection's session is reset, the pool options are checked when
    the alias is loaded, and a connection inherited through fork is dropped
    without a byte sent on the parent's socket.
    """

    # One ForkSafePool per alias, shared by the alias's wrappers in all
    # threads; each in turn makes one ConnectionPool per process. Its target
    # is kept so that when the test runner points the alias at a test
    # database (or a parallel worker's clone), a new pool is made for it.
    _fork_safe_pools: dict[str, _AliasPool] = {}

    creation_class = DatabaseCreation

    # The pool the connection came from (None: not pooled).
    _lender: ForkSafePool | None = None
    # Checked first by each entry method below (see _leave_inherited).
    _fork_guard: _process.ProcessGuard
    # In ensure_connection() (see there).
    _ensuring = False
    # In connect(), the alias's pool it borrows from (see there).
    _connecting_to: _AliasPool | None = None

    # Defined by Django's backend; typed here. The pool ignores what it returns.
    _configure_connection: Callable[[psycopg.Connection[Any]], Any]

    def __init__(
        self, settings_dict: dict[str, Any], alias: str = DEFAULT_DB_ALIAS
    ) -> None:
        # Made in this process: nothing inherited.
        self._fork_guard = _process.ProcessGuard(self._leave_inherited, shared=False)
        super().__init__(settings_dict, alias)
        # A debug page shows each frame's local variables: the entry may hold
        # a password (in HOST or NAME, where Django does not hide it).
        del settings_dict
        if alias != NO_DB_ALIAS:
            # A bad setting fails here, when the alias is loaded, rather than
            # at the first query. Not under manage.py, whose commands run the
            # system checks (django_pgpool.E002, E004) and show them: it
            # loads the aliases of `check --database` and `migrate` first.
            # Checked once per alias and settings (Django makes a wrapper per
            # thread, and per request under ASGI).
            error = None
            try:
                check_alias(alias, self.settings_dict)
            except ImproperlyConfigured as err:
                error = ImproperlyConfigured(*err.args)
            if error is not None and not run_by_manage_py():
                raise error from None  # without the frames that found it

    # -- the pool ------------------------------------------------------------

    @property
    def pool(self) -> ForkSafePool | None:
        """The alias's ForkSafePool, made on first use; None without OPTIONS["pool"]."""
        entry = self._connecting_to
        if entry is not None:
            return entry.pool  # found by connect(), which Django's reads 4 times
        s = self.settings_dict
        if not s["OPTIONS"].get("pool") or self.alias == NO_DB_ALIAS:
            return None
        # The database it connects to.
        target = (s["NAME"], s["USER"], s["HOST"], s["PORT"])
        entry = self._fork_safe_pools.get(self.alias)
        if entry is not None and entry.target == target:
            return entry.pool
        if entry is not None:
            self._close_alias_pool()
        pool, params = self._make_pool()
        # As in Django: threads racing here agree on the first pool set (none
        # has opened yet: a ForkSafePool connects on first use).
        return self._fork_safe_pools.setdefault(
            self.alias, _AliasPool(target, pool, params)
        ).pool

    def _made_pool(self) -> _AliasPool | None:
        """The alias's pool entry if :attr:`pool` would return it as it is, else None.

        None also where :attr:`pool` would make one, or replace it (the alias
        now points at another database), or returns None.
        """
        s = self.settings_dict
        entry = self._fork_safe_pools.get(self.alias)  # never NO_DB_ALIAS's
        if (
            entry is None
            or entry.target != (s["NAME"], s["USER"], s["HOST"], s["PORT"])
            or not s["OPTIONS"].get("pool")
        ):
            return None
        return entry

    @sensitive_variables()
    def _make_pool(self) -> tuple[ForkSafePool, ConnectionParams]:
        options = validated_pool_options(self.alias, self.settings_dict) or {}
        if "check" not in options and self.settings_dict["CONN_HEALTH_CHECKS"]:
            # Django's meaning: check each connection with a round trip before
            # use. Without it, the pool's default check costs no round trip.
            options["check"] = ConnectionPool.check_connection
        options.setdefault("name", f"django-{self.alias}")
        kwargs = self.get_connection_params()
        params = ConnectionParams(kwargs)
        # As in Django: made in autocommit, which Django then sets as it wants.
        kwargs["autocommit"] = True
        # Only the user's startup parameters, as Django sends: poolers refuse
        # others (PgBouncer, Neon's: "unsupported startup parameter:
        # options"). Django's time zone is set by its configure, after each
        # connect and after each reset (RESET ALL returns to the server's).
        # The pool outlives this wrapper (one thread's): it configures its
        # connections with a wrapper of its own that never connects, so as not
        # to keep the first thread's wrapper alive, and with it the connection
        # that thread may have left borrowed (Django's pool keeps it).
        configurer = type(self)(self.settings_dict, self.alias)
        # Validated above (conf.validated_pool_options), once per alias.
        pool = ForkSafePool._of_validated(
            kwargs=kwargs, configure=configurer._configure_connection, **options
        )
        pool.capacity_command = "manage.py pgpool capacity"
        pool.used_by = f"Django database alias {self.alias!r}"
        return pool, params

    def close_pool(self) -> None:
        """Close this process's pool of the alias; the next use makes a new one.

        In a forked child (a Celery prefork worker, say) the pool inherited
        from the parent is left alone: closing it would end the parent's
        sessions.

        In a Celery worker process that runs tasks, with ``pgpool_core.servers.celery``
        imported, it closes nothing: Celery's Django fixup calls it before and
        after every task (Celery 5.6 and later), right after ``close()`` gave
        the connection back, and the pool serves the process's next tasks
        until the process exits (see :func:`pgpool_core.servers.celery.keeps_pools`).
        """
        if _celery_keeps_pools():
            return
        self._close_alias_pool()

    def _close_alias_pool(self) -> None:
        # Closed in connect() (by a connection_created receiver): forgotten.
        self._connecting_to = None
        entry = self._fork_safe_pools.pop(self.alias, None)
        if entry is not None:
            # Not a ForkSafePool.close(): a wrapper of another thread may
            # still hold it, and use it again.
            _process.drop(entry.pool)

    def close_pools_on(self, name: str) -> None:
        """Close every pool on database *name*, of any alias, and this thread's
        connections there: before a test database is cloned or dropped.

        Django's backend closes only the pool of the alias whose test database
        it makes or drops; the pool of an alias mirrored to it, of a copy
        (``connection.copy()``) or of another alias on the same database would
        keep sessions there, and PostgreSQL refuses the ``DROP DATABASE`` or
        the ``CREATE DATABASE ... TEMPLATE``.
        """
        close_connections_on(name)
        self._connecting_to = None  # as _close_alias_pool()
        for alias, entry in list(self._fork_safe_pools.items()):
            if entry.target[0] == name and self._fork_safe_pools.pop(alias, None):
                _process.drop(entry.pool)  # as _close_alias_pool()

    # -- the connection ------------------------------------------------------
    #
    # Django's technical 500 page and error reports show the local variables
    # of each frame: the methods that hold the connection parameters are
    # sensitive_variables() (Django hides their locals, and those of the
    # frames they call, when DEBUG is False); the parameters are a dict whose
    # repr masks the secrets (for DEBUG = True, where Django hides nothing);
    # a failed connect's traceback starts in get_new_connection(), without
    # psycopg's frames, whose locals hold the conninfo as plain strings.

    def _secret_params(self) -> dict[str, Any]:
        """The settings that may hold a secret, by libpq's names."""
        s = self.settings_dict
        return {
            **(s.get("OPTIONS") or {}),
            "dbname": s.get("NAME"),
            "user": s.get("USER"),
            "password": s.get("PASSWORD"),
            "host": s.get("HOST"),
        }

    def mask(self, text: str) -> str:
        """Return *text* with this alias's secrets masked (for an output)."""
        return mask_secrets(text, kwargs=self._secret_params())

    def get_connection_params(self) -> dict[str, Any]:
        entry = self._connecting_to
        if entry is not None:
            # In connect(), which passes them to get_new_connection(): with a
            # pool, Django's connects with the pool's parameters, and ours
            # masks the secrets of those in a failed connect's error.
            return ConnectionParams(entry.params)
        return self._connection_params()

    @sensitive_variables()
    def _connection_params(self) -> dict[str, Any]:
        try:
            params: dict[str, Any] = super().get_connection_params()
        except ImproperlyConfigured as err:
            # Django quotes NAME when it is too long: it may be a conninfo.
            mask_exception(err, kwargs=self._secret_params())
            raise
        # Ours, not libpq's: ForkSafePool(pgbouncer=...) (see conf.pool_options).
        if params.pop("pgbouncer", None):
            params["prepare_threshold"] = None
        return ConnectionParams(params)

    def _configure_role(self, connection: psycopg.Connection[Any]) -> bool:
        # Django composes SET ROLE with self.ops.compose_sql(), which borrows
        # this wrapper's own connection: from the pool's thread, while the
        # wrapper waits for the pool, that deadlocks until the pool's timeout
        # (Django 5.2 and 6.1 with "assume_role" and "pool"). Compose it on the
        # connection being configured instead.
        role = self.settings_dict["OPTIONS"].get("assume_role")
        if not role:
            return False
        connection.execute(sql.SQL("SET ROLE {}").format(sql.Literal(role)))
        return True

    # Not sensitive_variables() itself: Django calls it from connect() only,
    # which is (its frames and those it calls are hidden), and its own
    # locals hold the parameters masked (ConnectionParams) and a masked error.
    def get_new_connection(self, conn_params: Any) -> Any:
        lender = self.pool
        try:
            connection = super().get_new_connection(conn_params)
        except psycopg.Error as err:
            # Its message may quote a HOST or NAME that holds a password.
            mask_exception(err, kwargs=conn_params)
            raise err.with_traceback(None)  # noqa: B904 (the same exception)
        self._lender = lender
        return connection

    # -- fork safety: checked where Django starts to use the connection ------
    #
    # A connection this thread held when the process forked (one the master
    # left open in wsgi.py or AppConfig.ready()) belongs to the parent. The
    # methods below, Django's that call into self.connection or hand it out
    # (ensure_connection(): then code reads wrapper.connection), forget it
    # when they are the first of this wrapper's a process calls, without
    # closing it or giving it back (ForkSafePool.is_inherited() abandons it),
    # so that what Django does next finds no connection, or makes this
    # process's own. Every other method only asks whether there is one before
    # calling these (close(), init_connection_state() with a pool,
    # close_if_health_check_failed() with a pool), or reaches it through them
    # (cursor(), chunked_cursor(), _cursor(), get_autocommit(),
    # set_autocommit(), the savepoints, commit(), rollback(), pg_version);
    # tests/django/test_fork.py calls each first in a forked child. Then one
    # check of the core's pid guard per call (about 9 per request), where a
    # property checked at each of the dozen reads of self.connection per request.

    def _leave_inherited(self, parent: int) -> None:
        """Forget a connection borrowed in process *parent* (by the fork guard)."""
        connection, lender = self.connection, self._lender
        if connection is None or lender is None:
            return  # not pooled: Django's own (W003: not protected across fork)
        if lender.is_inherited(connection):
            self.connection = None
            self._lender = None
            logger.debug(
                "%s: dropped the connection inherited from process %d",
                self.alias,
                parent,
            )

    @sensitive_variables()
    def connect(self) -> None:
        self._fork_guard.check()
        # Django's reads self.pool five times, and computes the connection
        # parameters, which the pool does not use: each request that borrows
        # runs it. The alias's pool, if made, is found once: the same pool
        # as each read would find (made with the same parameters), as nothing
        # in connect() changes the alias's settings (and closing its pool
        # there, in a connection_created receiver, forgets it).
        entry = self._made_pool()
        if entry is None:
            super().connect()  # no pool, or the first connect makes it
            return
        self._connecting_to = entry
        try:
            super().connect()
        finally:
            self._connecting_to = None

    def ensure_connection(self) -> None:
        self._fork_guard.check()
        if postgresql.DatabaseWrapper.ensure_connection is _djangos_ensure_connection:
            _djangos_ensure_connection(self)  # as super()'s, without making one
            return
        if self._ensuring:
            # Called again from within super()'s: code that wraps
            # BaseDatabaseWrapper.ensure_connection with a function calling
            # this wrapper's bound method (Django's own tests do) reaches
            # Django's, as with Django's backend, instead of recursing; the
            # calls Django's makes (connect() -> set_autocommit()) go through
            # the wrapper again, as with Django's backend.
            self._ensuring = False
            try:
                _djangos_ensure_connection(self)
            finally:
                self._ensuring = True
            return
        self._ensuring = True
        try:
            super().ensure_connection()
        finally:
            self._ensuring = False

    def _commit(self) -> None:
        self._fork_guard.check()
        super()._commit()  # type: ignore[misc]  # Django's, unstubbed

    def _rollback(self) -> None:
        self._fork_guard.check()
        super()._rollback()  # type: ignore[misc]  # Django's, unstubbed

    def _set_autocommit(self, autocommit: bool) -> None:
        self._fork_guard.check()
        if self._connecting_to is not None:
            # In connect(), which sets AUTOCOMMIT on the connection the pool
            # just lent: idle, and in autocommit as made (Django's default).
            # psycopg's setter would find it idle and set the same value.
            connection = self.connection
            if (
                connection.autocommit == autocommit
                and connection.pgconn.transaction_status == _IDLE
            ):
                return
        super()._set_autocommit(autocommit)  # type: ignore[misc]  # Django's, unstubbed

    def is_usable(self) -> bool:
        self._fork_guard.check()
        return bool(super().is_usable())

    def close_if_unusable_or_obsolete(self) -> None:
        if self.connection is None:
            # Django's does nothing (at the start of each request): nothing
            # to use, nothing inherited to leave (see _leave_inherited).
            return
        self._fork_guard.check()
        super().close_if_unusable_or_obsolete()

    def ensure_timezone(self) -> bool:
        self._fork_guard.check()
        return bool(super().ensure_timezone())

    def create_cursor(self, name: str | None = None) -> Any:
        self._fork_guard.check()
        return super().create_cursor(name)

    @contextmanager
    def temporary_connection(self) -> Iterator[Any]:
        self._fork_guard.check()
        with super().temporary_connection() as cursor:
            yield cursor

    def close_if_health_check_failed(self) -> None:
        # Django's: never with a pool (whose check runs at checkout), which
        # it finds by reading self.pool; a pooled connection says so sooner.
        # Nor without a connection (before each request's first query).
        if self._lender is None and self.connection is not None:
            super().close_if_health_check_failed()

    def _close(self) -> None:
        self._fork_guard.check()
        connection, lender = self.connection, self._lender
        if connection is None:
            return
        self._lender = None
        with self.wrap_database_errors:
            if lender is None:
                connection.close()
                return
            # Back to the pool it came from, even if close_pool() replaced it
            # meanwhile (that one then closes it). Django's own _close() finds
            # it as connection._pool, which a connection made in a forking
            # master, outside any pool, does not have.
            lender.putconn(connection)
            self.connection = None


def _close_in_master() -> None:
    """Close this thread's django_pgpool connections through their wrappers.

    Called by :func:`pgpool_core._process.close_in_master` before a forking
    master's first fork (or by the gunicorn and Celery hooks): the wrappers
    forget their connections, so that Django code the master runs later
    connects anew instead of failing on a closed one.
    """
    from django.db import connections

    for wrapper in connections.all(initialized_only=True):
        if isinstance(wrapper, DatabaseWrapper):
            wrapper.close()


_process.on_close_in_master(_close_in_master)
