"""The settings django_pgpool reads, their defaults, and their validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from pgpool_core import ConfigurationError, capacity, validate_pool_options

__all__ = [
    "ENGINE",
    "RETRY_AFTER_DEFAULT",
    "check_conn_max_age",
    "pgbouncer",
    "pool_options",
    "retry_after",
    "workers",
]

#: The ENGINE value that selects this backend.
ENGINE = "django_pgpool"

#: Seconds a 503 answer asks clients to wait (``PGPOOL_RETRY_AFTER``).
RETRY_AFTER_DEFAULT = 5

# Pool options Django derives from the DATABASES entry itself.
_SET_BY_DJANGO = {
    "conninfo": "NAME, USER, PASSWORD, HOST, PORT and OPTIONS",
    "kwargs": "NAME, USER, PASSWORD, HOST, PORT and OPTIONS",
    "configure": "TIME_ZONE and OPTIONS['assume_role']",
}


def _pool_setting(alias: str, key: str | None = None) -> str:
    name = f'DATABASES["{alias}"]["OPTIONS"]["pool"]'
    return name if key is None else f'{name}["{key}"]'


def check_conn_max_age(alias: str, settings_dict: Mapping[str, Any]) -> None:
    """Raise ImproperlyConfigured if the alias keeps persistent connections."""
    max_age = settings_dict.get("CONN_MAX_AGE", 0)
    if max_age != 0:
        # Django's own message first, word for word (code and tests look for
        # it), then which setting and what to do.
        raise ImproperlyConfigured(
            "Pooling doesn't support persistent connections."
            f' DATABASES["{alias}"]["CONN_MAX_AGE"] is {max_age!r}. Set it to 0'
            " (the default): the pool keeps connections open between requests,"
            " and connection.close() gives them back to it."
        )


def pool_options(alias: str, settings_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the alias's ``OPTIONS["pool"]`` as ForkSafePool options, or None.

    None means no pool, as with Django's backend. A bad value raises
    ImproperlyConfigured naming the setting, and the key at fault.
    """
    value = (settings_dict.get("OPTIONS") or {}).get("pool")
    if not value:
        return None
    if value is True:
        value = {}
    elif not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"{_pool_setting(alias)}: expected True or a dict of"
            f" psycopg_pool.ConnectionPool options, got {type(value).__name__}"
        )
    check_conn_max_age(alias, settings_dict)
    for key, source in _SET_BY_DJANGO.items():
        if key in value:
            raise ImproperlyConfigured(
                f"{_pool_setting(alias, key)}: set by Django from the database's"
                f" {source}; remove it from the pool options"
            )
    try:
        validate_pool_options(value, setting=lambda key: _pool_setting(alias, key))
    except ConfigurationError as err:
        raise ImproperlyConfigured(str(err)) from err
    options = dict(value)
    behind_pgbouncer = pgbouncer(alias, settings_dict)
    if behind_pgbouncer is not None:
        if options.get("pgbouncer", behind_pgbouncer) != behind_pgbouncer:
            raise ImproperlyConfigured(
                f"{_pool_setting(alias, 'pgbouncer')}: contradicts"
                f' DATABASES["{alias}"]["OPTIONS"]["pgbouncer"]; set only the latter'
            )
        options["pgbouncer"] = behind_pgbouncer
    return options


def pgbouncer(alias: str, settings_dict: Mapping[str, Any]) -> bool | None:
    """Return ``OPTIONS["pgbouncer"]`` (True: HOST is PgBouncer in transaction mode).

    None if it is not set.
    """
    value = (settings_dict.get("OPTIONS") or {}).get("pgbouncer")
    if value is not None and not isinstance(value, bool):
        raise ImproperlyConfigured(
            f'DATABASES["{alias}"]["OPTIONS"]["pgbouncer"]: expected True or'
            f" False, got {type(value).__name__} {value!r}"
        )
    return value


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(
            f"{name}: expected an integer >= 1, got {type(value).__name__} {value!r}"
        )
    return value


def retry_after() -> int:
    """Return ``PGPOOL_RETRY_AFTER``: the seconds a 503 answer asks clients to wait."""
    value = getattr(settings, "PGPOOL_RETRY_AFTER", RETRY_AFTER_DEFAULT)
    return _positive_int("PGPOOL_RETRY_AFTER", value)


def workers() -> int | None:
    """Return how many worker processes serve the app on one host, if known.

    From ``PGPOOL_WORKERS``, else the ``WEB_CONCURRENCY`` environment variable
    (gunicorn's own default), else uWSGI's ``processes`` when running under it
    (see :func:`pgpool_core.capacity.server_workers`).
    """
    found = workers_and_source()
    return None if found is None else found[0]


def workers_and_source() -> tuple[int, str] | None:
    """Return :func:`workers` and the setting it comes from."""
    value = getattr(settings, "PGPOOL_WORKERS", None)
    if value is not None:
        return _positive_int("PGPOOL_WORKERS", value), "PGPOOL_WORKERS"
    return capacity.server_workers()


def server_limit(alias: str) -> capacity.ServerLimit:
    """Read the connection limit of the alias's server (one round trip)."""
    from django.db import connections

    wrapper = connections[alias]
    with wrapper.cursor() as cursor:
        cursor.execute(capacity.LIMITS_SQL)
        row = cursor.fetchone()
    return capacity.ServerLimit(*row)
