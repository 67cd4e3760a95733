"""The settings django_pgpool reads, their defaults, and their validation."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from pgpool_core import ConfigurationError, validate_pool_options

__all__ = [
    "ENGINE",
    "RETRY_AFTER_DEFAULT",
    "check_conn_max_age",
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
        raise ImproperlyConfigured(
            f'DATABASES["{alias}"]["CONN_MAX_AGE"]: pooling doesn\'t support'
            f" persistent connections, got {max_age!r}. Set it to 0 (the default):"
            " the pool keeps connections open between requests, and"
            " connection.close() gives them back to it."
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
    return dict(value)


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
    (gunicorn's own default), else uWSGI's ``processes`` when running under it.
    """
    value = getattr(settings, "PGPOOL_WORKERS", None)
    if value is not None:
        return _positive_int("PGPOOL_WORKERS", value)
    env = os.environ.get("WEB_CONCURRENCY", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    uwsgi = sys.modules.get("uwsgi")
    numproc = getattr(uwsgi, "numproc", None)
    if isinstance(numproc, int) and numproc > 0:
        return numproc
    return None
