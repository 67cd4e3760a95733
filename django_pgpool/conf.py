"""The settings django_pgpool reads, their defaults, and their validation."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from pgpool_core import (
    ConfigurationError,
    mask_secrets,
    validate_connection,
    validate_pool_options,
)
from pgpool_core._options import RETRY_AFTER_WHY, did_you_mean, seconds_over_bound
from pgpool_core._sizing import server_workers
from pgpool_core.errors import RETRY_AFTER_DEFAULT

__all__ = [
    "ENGINE",
    "RETRY_AFTER_DEFAULT",
    "SETTINGS",
    "check_alias",
    "check_conn_max_age",
    "check_connection_settings",
    "connection_params",
    "pgbouncer",
    "pool_options",
    "retry_after",
    "run_by_manage_py",
    "unknown_settings",
    "validated_pool_options",
    "workers",
]

#: The ENGINE value that selects this backend.
ENGINE = "django_pgpool"

#: The ``PGPOOL_*`` settings django_pgpool reads.
SETTINGS = frozenset({"PGPOOL_RETRY_AFTER", "PGPOOL_WORKERS"})

# The DATABASES keys Django turns into libpq's settings (get_connection_params).
_FIELDS = {
    "dbname": "NAME",
    "user": "USER",
    "password": "PASSWORD",
    "host": "HOST",
    "port": "PORT",
}

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


# What was found valid, by (what, alias, a snapshot of the DATABASES entry):
# the wrappers of an alias (Django makes one per thread, and per request under
# ASGI), its pool and the system checks validate its settings once. A changed
# entry (override_settings) is another key, validated again. Only successes
# are kept: an error is raised again, checked again. By (what, alias): the
# entry last found valid (a copy of it) and its key, see _once().
_validated: dict[tuple[Any, ...], Any] = {}
_VALIDATED_MAX = 128  # entries; a process that changes settings endlessly clears


def _snapshot(value: Any) -> Any:
    """Return a hashable copy of *value* (a DATABASES entry): TypeError if it can't."""
    kind = type(value)
    if kind is dict:
        return tuple(
            [(k, v if type(v) in _PLAIN else _snapshot(v)) for k, v in value.items()]
        )
    if kind is list or kind is tuple:
        return (kind, *[_snapshot(v) for v in value])
    if isinstance(value, Mapping):
        return (Mapping, _snapshot(dict(value)))
    hash(value)  # TypeError: an unhashable value, validated every time
    return value


_PLAIN = frozenset({str, int, bool, float, type(None)})


def _plain_copy(value: Any) -> Any:
    """Return a copy of *value* (a DATABASES entry) that no one else can change.

    Only of dicts, lists and tuples of plain values (str, int, bool, float,
    None): ``_NOT_PLAIN`` for anything else, whose equality may not follow
    its value.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        copied = {}
        for k, v in value.items():
            v = _plain_copy(v)
            if v is _NOT_PLAIN:
                return _NOT_PLAIN
            copied[k] = v
        return copied
    if kind is list or kind is tuple:
        items = [_plain_copy(v) for v in value]
        if any(v is _NOT_PLAIN for v in items):
            return _NOT_PLAIN
        return kind(items)
    return _NOT_PLAIN


_NOT_PLAIN = object()


def _once(
    what: str,
    alias: str,
    settings_dict: Mapping[str, Any],
    validate: Callable[[str, Mapping[str, Any]], Any],
) -> Any:
    """Return ``validate(alias, settings_dict)``, run once per alias and value
    of *settings_dict* (a function, not a closure: no object made per call)."""
    # The alias's entry as last validated, and its key: a wrapper per request
    # (ASGI) compares the entry with it (one dict comparison, in C) instead of
    # taking a snapshot of it (about 2 us).
    last = _validated.get((what, alias))
    if last is not None and last[0] == settings_dict:
        found = _validated.get(last[1], _validated)
        if found is not _validated:
            return found
    try:
        key = (what, alias, _snapshot(settings_dict))
    except TypeError:
        return validate(alias, settings_dict)
    found = _validated.get(key, _validated)
    if found is _validated:
        found = validate(alias, settings_dict)  # raises ImproperlyConfigured: not kept
        if len(_validated) >= _VALIDATED_MAX:
            _validated.clear()
        _validated[key] = found
    copied = _plain_copy(settings_dict)
    if copied is not _NOT_PLAIN:
        _validated[(what, alias)] = (copied, key)
    return found


def validated_pool_options(
    alias: str, settings_dict: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Check the alias's settings; return its pool options (None: no pool).

    :func:`pool_options` and :func:`check_connection_settings`, in that order,
    run once per alias and value of its ``DATABASES`` entry in a process
    (compared by a snapshot of its values: a changed entry is checked again).
    ImproperlyConfigured as they raise it. A new dict each time.
    """
    options = _once("all", alias, settings_dict, _validate_all)
    return None if options is None else dict(options)


def check_alias(alias: str, settings_dict: Mapping[str, Any]) -> None:
    """Check the alias's settings as :func:`validated_pool_options` does.

    The same checks, run as rarely; ImproperlyConfigured as they raise it.
    For the backend's constructor (a wrapper per thread, per request under
    ASGI), which needs no copy of the options.
    """
    last = _validated.get(("all", alias))
    if last is None or last[0] != settings_dict or last[1] not in _validated:
        _once("all", alias, settings_dict, _validate_all)  # its fast path, inline


def _validate_all(
    alias: str, settings_dict: Mapping[str, Any]
) -> dict[str, Any] | None:
    options = pool_options(alias, settings_dict)
    check_connection_settings(alias, settings_dict)
    return options


def pool_options(alias: str, settings_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the alias's ``OPTIONS["pool"]`` as ForkSafePool options, or None.

    None means no pool, as with Django's backend. A bad value raises
    ImproperlyConfigured naming the setting, and the key at fault. Checked
    once per alias and value of the entry (see :func:`validated_pool_options`);
    a new dict each time.
    """
    options = _once("pool", alias, settings_dict, _pool_options)
    return None if options is None else dict(options)


def _pool_options(
    alias: str, settings_dict: Mapping[str, Any]
) -> dict[str, Any] | None:
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
    seconds = _positive_int("PGPOOL_RETRY_AFTER", value)
    too_large = seconds_over_bound(seconds, RETRY_AFTER_WHY)
    if too_large is not None:
        raise ImproperlyConfigured(f"PGPOOL_RETRY_AFTER: {too_large}")
    return seconds


def workers() -> int | None:
    """Return how many worker processes serve the app on one host, if known.

    From ``PGPOOL_WORKERS``, else the ``WEB_CONCURRENCY`` environment variable
    (gunicorn's own default), else uWSGI's ``processes`` when running under it
    (see :func:`pgpool_core._sizing.server_workers`).
    """
    found = workers_and_source()
    return None if found is None else found[0]


def workers_and_source() -> tuple[int, str] | None:
    """Return :func:`workers` and the setting it comes from."""
    value = getattr(settings, "PGPOOL_WORKERS", None)
    if value is not None:
        return _positive_int("PGPOOL_WORKERS", value), "PGPOOL_WORKERS"
    return server_workers()


def unknown_settings() -> list[tuple[str, str]]:
    """Return each ``PGPOOL_*`` setting django_pgpool does not know, and why.

    A typo's value would be silently ignored (Django reads no setting it
    does not know): the message says which known one was meant.
    """
    known = sorted(SETTINGS)
    return [
        (
            name,
            f"{name}: unknown setting{_meant(name)} (the known"
            f" ones are: {', '.join(known)})",
        )
        for name in dir(settings)
        if name.startswith("PGPOOL_") and name not in SETTINGS
    ]


def _meant(name: str) -> str:
    """Say which setting *name* may be: a close one, or DATABASES for a URL."""
    # flask_pgpool's PGPOOL_CONNINFO, or another name for it (PGPOOL_URL).
    if did_you_mean(name, ["PGPOOL_CONNINFO"]):
        return (
            "; django_pgpool reads the connection from DATABASES: NAME, USER,"
            " PASSWORD, HOST, PORT and OPTIONS"
        )
    return did_you_mean(name, SETTINGS)


def _setting_of(alias: str, key: str) -> str:
    field = _FIELDS.get(key)
    if field is not None:
        return f'DATABASES["{alias}"]["{field}"]'
    return f'DATABASES["{alias}"]["OPTIONS"]["{key}"]'


def connection_params(alias: str, settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Return what Django's backend would pass to psycopg for the alias.

    Its ``get_connection_params()``, on a copy of the entry with Django's
    defaults, without connecting. ImproperlyConfigured as Django raises it
    (no NAME, a NAME too long), masked.
    """
    from django.db.backends.postgresql import base as postgresql
    from django.db.utils import ConnectionHandler

    entry = {**settings_dict, "OPTIONS": dict(settings_dict.get("OPTIONS") or {})}
    # Django's defaults for the entry (its handler wants a "default" alias).
    entry = ConnectionHandler().configure_settings({"default": entry})["default"]
    try:
        params: dict[str, Any] = postgresql.DatabaseWrapper(
            entry, alias
        ).get_connection_params()
    except ImproperlyConfigured as err:
        name = entry.get("NAME")
        if isinstance(name, str) and ("=" in name or "://" in name):
            # A URL too long for a name: say what it is, not Django's limit.
            try:
                validate_connection(
                    "", {"dbname": name}, kwarg_setting=lambda k: _setting_of(alias, k)
                )
            except ConfigurationError as problem:
                raise ImproperlyConfigured(str(problem)) from None
        secrets = {"dbname": entry.get("NAME"), "host": entry.get("HOST")}
        raise ImproperlyConfigured(
            f'DATABASES["{alias}"]["NAME"]: '
            + mask_secrets(str(err), kwargs={**secrets, **entry["OPTIONS"]})
        ) from None
    params.pop("pgbouncer", None)  # ours (see pool_options), not libpq's
    return params


def check_connection_settings(alias: str, settings_dict: Mapping[str, Any]) -> None:
    """Check the alias's connection settings without the network.

    Raise ImproperlyConfigured naming the setting (``DATABASES["default"]
    ["PORT"]``, ``...["OPTIONS"]["sslmode"]``): what
    :func:`pgpool_core.validate_connection` checks (a port out of
    range, a connection string written in HOST or NAME, which psycopg passes
    on unexpanded, an unknown key in OPTIONS, a value libpq refuses, a missing
    certificate file...), Django's own NAME rules, and
    ``OPTIONS["isolation_level"]``. Once per alias and value of the entry
    (see :func:`validated_pool_options`): a certificate file removed since is
    found missing by libpq, at connect.
    """
    _once("connection", alias, settings_dict, _check_connection_settings)


def _check_connection_settings(alias: str, settings_dict: Mapping[str, Any]) -> None:
    params = connection_params(alias, settings_dict)
    try:
        validate_connection(
            "", params, kwarg_setting=lambda key: _setting_of(alias, key)
        )
    except ConfigurationError as err:
        raise ImproperlyConfigured(str(err)) from None
    level = (settings_dict.get("OPTIONS") or {}).get("isolation_level")
    if level is not None:
        try:
            psycopg.IsolationLevel(level)
        except ValueError:
            names = ", ".join(
                f"IsolationLevel.{v.name}" for v in psycopg.IsolationLevel
            )
            raise ImproperlyConfigured(
                f"{_setting_of(alias, 'isolation_level')}: expected one of {names},"
                f" got {level!r}"
            ) from None


def run_by_manage_py() -> bool:
    """Return True if this runs within a ``manage.py`` (or django-admin) command.

    Its commands run the system checks, which report bad settings
    (``django_pgpool.E001`` ...) better than an exception at ``django.setup()``
    or when an alias is loaded would: those are for everything else (a WSGI
    server, a Celery worker, a script).
    """
    management = sys.modules.get("django.core.management")
    if management is None:
        return False
    execute = management.ManagementUtility.execute.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is execute:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False
