"""System checks of the optional ``django_pgpool`` app (ids ``django_pgpool.*``).

E001  CONN_MAX_AGE is not 0 on a pooled alias.
E002  OPTIONS["pool"] is not True or a dict of valid pool options.
E003  PGPOOL_RETRY_AFTER or PGPOOL_WORKERS is not an integer >= 1, or
      PGPOOL_RETRY_AFTER is over its bound (a year of seconds).
E004  a connection setting that cannot work, found without the network: a
      port out of range, a connection string written in HOST or NAME, an
      unknown OPTIONS key, a value libpq refuses, a missing certificate file.
E005  a PGPOOL_* setting django_pgpool does not know (a typo).
E006  the database cannot be reached or refuses the login (a database check:
      ``manage.py check --database ALIAS``, ``migrate``), with libpq's reason.
W001  workers x max_size exceeds what the server's max_connections allows
      (a database check).
W002  TLS without TCP keepalives.
W003  the django_pgpool ENGINE without OPTIONS["pool"]: no pool at all.
W004  OPTIONS["pgbouncer"] without DISABLE_SERVER_SIDE_CURSORS.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured

from pgpool_core.errors import CONNECT_REASONS, connect_failure
from pgpool_core.ops import capacity

from . import conf

__all__ = [
    "check_databases",
    "check_max_connections",
    "check_settings",
    "raise_startup_errors",
    "startup_errors",
]

_CONNECTION_HINTS = {
    "HOST": "Write the host name (or IP address, or a Unix socket's directory)"
    " in HOST alone, the port in PORT, the database in NAME, the user in USER,"
    " the password in PASSWORD, and other libpq settings in OPTIONS.",
    "NAME": "Write the database name in NAME alone, the host in HOST, the port"
    " in PORT, the user in USER, the password in PASSWORD, and other libpq"
    " settings in OPTIONS.",
}


def _our_aliases() -> Iterator[tuple[str, dict[str, Any]]]:
    for alias, settings_dict in settings.DATABASES.items():
        if settings_dict.get("ENGINE") == conf.ENGINE:
            yield alias, settings_dict


def check_databases(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check the DATABASES entries that use the django_pgpool ENGINE."""
    messages: list[CheckMessage] = []
    for alias, settings_dict in _our_aliases():
        try:
            conf.check_connection_settings(alias, settings_dict)
        except ImproperlyConfigured as err:
            message = str(err)
            messages.append(
                Error(message, hint=_connection_hint(message), id="django_pgpool.E004")
            )
        if not (settings_dict.get("OPTIONS") or {}).get("pool"):
            messages.append(
                Warning(
                    f'DATABASES["{alias}"] uses the django_pgpool ENGINE without'
                    ' OPTIONS["pool"]: it makes no pool, and connections are not'
                    " protected across fork.",
                    hint='Add "pool": True (or a dict of pool options) to its'
                    " OPTIONS, or use django.db.backends.postgresql.",
                    id="django_pgpool.W003",
                )
            )
            continue
        try:
            conf.check_conn_max_age(alias, settings_dict)
        except ImproperlyConfigured as err:
            messages.append(
                Error(
                    str(err),
                    hint=f'Remove CONN_MAX_AGE from DATABASES["{alias}"] or set it'
                    " to 0.",
                    id="django_pgpool.E001",
                )
            )
            continue
        try:
            options = conf.pool_options(alias, settings_dict) or {}
        except ImproperlyConfigured as err:
            messages.append(
                Error(
                    str(err),
                    hint="The pool options are psycopg_pool.ConnectionPool's, by"
                    " the same names (min_size, max_size, timeout, ...).",
                    id="django_pgpool.E002",
                )
            )
            continue
        messages.extend(_check_keepalives(alias, settings_dict, options))
        if options.get("pgbouncer") and not settings_dict.get(
            "DISABLE_SERVER_SIDE_CURSORS"
        ):
            messages.append(
                Warning(
                    f'DATABASES["{alias}"]: OPTIONS["pgbouncer"] is True but'
                    " server-side cursors are on: QuerySet.iterator() outside a"
                    " transaction then fails behind PgBouncer in transaction"
                    " mode.",
                    hint=f'Set DATABASES["{alias}"]["DISABLE_SERVER_SIDE_CURSORS"]'
                    " = True.",
                    id="django_pgpool.W004",
                )
            )
    return messages


def _connection_hint(message: str) -> str | None:
    field = message.split('"]["', 1)[-1].split('"]', 1)[0]
    if "a connection string written as" in message:
        return _CONNECTION_HINTS.get(field)
    if field == "OPTIONS":
        return (
            "OPTIONS holds libpq's connection parameters, by the same names,"
            " psycopg's connect() arguments, and Django's own (assume_role,"
            " isolation_level, pool, server_side_binding)."
        )
    return None


def _check_keepalives(
    alias: str, settings_dict: dict[str, Any], options: dict[str, Any]
) -> list[CheckMessage]:
    connect_options = settings_dict.get("OPTIONS") or {}
    if connect_options.get("sslmode") == "disable":
        return []
    keepalives = connect_options.get("keepalives")
    if keepalives is None:
        off = options.get("keepalives", True) is False
    else:
        off = str(keepalives) == "0"
    if not off:
        return []
    return [
        Warning(
            f'DATABASES["{alias}"]: TLS connections without TCP keepalives. A'
            " connection dropped by a firewall or NAT is then noticed only after"
            " the kernel's two hours, and the requests that use it hang.",
            hint='Remove "keepalives": False from the pool options (the pool then'
            " adds keepalives=1 keepalives_idle=60 keepalives_interval=10"
            " keepalives_count=6), or set these in OPTIONS.",
            id="django_pgpool.W002",
        )
    ]


def check_settings(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check the PGPOOL_* settings."""
    messages: list[CheckMessage] = [
        Error(
            message,
            hint="Correct the name, or remove the setting.",
            obj=name,
            id="django_pgpool.E005",
        )
        for name, message in conf.unknown_settings()
    ]
    for read in (conf.retry_after, conf.workers):
        try:
            read()
        except ImproperlyConfigured as err:
            messages.append(
                Error(
                    str(err),
                    hint="Set it to a whole number, or remove it for the default.",
                    id="django_pgpool.E003",
                )
            )
    return messages


def check_max_connections(
    app_configs: Iterable[AppConfig] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Connect to each pooled alias of *databases*: E006 if it fails, else W001.

    A database check (``manage.py check --database ALIAS``, ``migrate``): one
    connection, made as the pool makes them but outside it, so that a server
    that refuses the login or cannot be reached is reported with libpq's
    reason within ``connect_timeout``, instead of after the pool's timeout.
    Then workers x max_size is compared with the server's max_connections.
    """
    from django.db import connections

    from .base import DatabaseWrapper

    messages: list[CheckMessage] = []
    try:
        workers = conf.workers()
    except ImproperlyConfigured:
        workers = None  # E003 says why
    for alias, settings_dict in _our_aliases():
        if alias not in (databases or ()):
            continue
        try:
            conf.check_connection_settings(alias, settings_dict)
            options = conf.pool_options(alias, settings_dict)
        except ImproperlyConfigured:
            continue  # E001/E002/E004 say why
        if options is None:
            continue  # W003: Django's backend, unpooled
        wrapper = connections[alias]
        pool = getattr(wrapper, "pool", None)
        if not isinstance(wrapper, DatabaseWrapper) or pool is None:
            continue
        # The sizes the workers choose (set, or from the server's model).
        model = capacity.default_concurrency()
        try:
            plan, _, limit = capacity.measure(
                pool, workers=workers or 1, concurrency=model[0] if model else None
            )
        except Exception as err:
            reason = CONNECT_REASONS[connect_failure(err)]
            cause = " ".join(wrapper.mask(f"{type(err).__name__}: {err}").split())
            messages.append(
                Error(
                    f'DATABASES["{alias}"]: {reason}: {cause}',
                    hint="Run manage.py pgpool check for the details; the pool"
                    " would fail every request the same way.",
                    id="django_pgpool.E006",
                )
            )
            continue
        if options.get("pgbouncer"):
            continue  # behind PgBouncer, its pool sizes bound the server's load
        max_size = plan.max_size
        if plan.fits(limit):
            continue
        if workers is None:
            count = f"one worker process x max_size {max_size} = {plan.total}"
        else:
            count = f"{workers} worker processes x max_size {max_size} = {plan.total}"
        messages.append(
            Warning(
                f'DATABASES["{alias}"]: {count} connections from one host, more'
                f" than the {limit.available} the server allows"
                f" ({limit.describe()}).",
                hint="Lower the pool's max_size or the number of workers, or raise"
                " max_connections; several hosts add up. Set PGPOOL_WORKERS to"
                " the worker count if it is not known here.",
                id="django_pgpool.W001",
            )
        )
    return messages


def startup_errors() -> list[CheckMessage]:
    """Return the errors of the checks that need no database (E001 to E005).

    What the app's ``ready()`` refuses to start with outside ``manage.py``
    (whose commands run the checks and show them).
    """
    return [
        message
        for message in (*check_databases(), *check_settings())
        if message.is_serious()
    ]


def raise_startup_errors() -> None:
    """Raise ImproperlyConfigured listing :func:`startup_errors`, if any."""
    errors = startup_errors()
    if errors:
        raise ImproperlyConfigured(
            "django_pgpool's system checks found errors (manage.py check shows"
            " them too):\n" + "\n".join(str(error) for error in errors)
        )
