"""Validate pool options and conninfo strings; keep passwords out of sight."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any, get_origin

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConfigurationError

__all__ = [
    "KEEPALIVE_DEFAULTS",
    "POOL_OPTIONS",
    "mask_conninfo",
    "mask_secrets",
    "merge_defaults",
    "parse_conninfo",
    "validate_pool_options",
]

#: TCP keepalives so that an idle connection whose peer vanished (a NAT or
#: firewall that dropped it, a server that died) is noticed in about two minutes
#: instead of the kernel's two hours; tcp_user_timeout so that a query sent into
#: such a black hole fails after 30 s instead of retransmitting for ~15 minutes
#: (keepalives only probe idle connections). connect_timeout bounds a connect.
KEEPALIVE_DEFAULTS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 60,
    "keepalives_interval": 10,
    "keepalives_count": 6,
    "tcp_user_timeout": 30000,
}
CONNECT_TIMEOUT_DEFAULT = 10

#: Every option ForkSafePool takes besides conninfo: psycopg_pool's own
#: ConnectionPool options, plus ``keepalives`` and ``pgbouncer``.
POOL_OPTIONS = frozenset(
    {
        "kwargs",
        "name",
        "connection_class",
        "min_size",
        "max_size",
        "open",
        "configure",
        "check",
        "reset",
        "close_returns",
        "timeout",
        "max_waiting",
        "max_lifetime",
        "max_idle",
        "reconnect_timeout",
        "reconnect_failed",
        "num_workers",
        "keepalives",
        "warn_held_after",
        "pgbouncer",
    }
)

MASK = "********"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def validate_pool_options(
    options: Mapping[str, Any],
    *,
    setting: Callable[[str], str] = str,
) -> None:
    """Check *options*; raise ConfigurationError naming the first bad one.

    *setting* turns an option name into the name the user wrote (a Flask config
    key, a Django ``OPTIONS["pool"]`` key) so that the error names it.
    """
    for key in options:
        if key not in POOL_OPTIONS and key != "conninfo":
            known = ", ".join(sorted(POOL_OPTIONS))
            raise ConfigurationError(
                setting(key), f"unknown pool option; the known ones are: {known}"
            )

    def bad(key: str, expected: str) -> ConfigurationError:
        value = options[key]
        # kwargs may hold a password: name its type only.
        shown = "" if key == "kwargs" else f" {value!r}"
        return ConfigurationError(
            setting(key), f"expected {expected}, got {type(value).__name__}{shown}"
        )

    for key in ("min_size", "max_waiting"):
        if key in options and not (_is_int(options[key]) and options[key] >= 0):
            raise bad(key, "an integer >= 0")
    if "num_workers" in options and not (
        _is_int(options["num_workers"]) and options["num_workers"] >= 1
    ):
        raise bad("num_workers", "an integer >= 1")
    max_size = options.get("max_size")
    if max_size is not None and not (_is_int(max_size) and max_size >= 1):
        raise bad("max_size", "an integer >= 1 or None")
    min_size = options.get("min_size", 4)
    if max_size is not None and min_size > max_size:
        raise ConfigurationError(
            setting("max_size"),
            f"must be >= min_size ({min_size}), got {max_size}",
        )
    if max_size is None and min_size == 0:
        raise ConfigurationError(
            setting("max_size"), "must be set (>= 1) when min_size is 0"
        )
    for key in ("timeout", "max_lifetime", "max_idle", "reconnect_timeout"):
        if key in options and not (_is_number(options[key]) and options[key] > 0):
            raise bad(key, "a number of seconds > 0")
    held = options.get("warn_held_after")
    if held is not None and not (_is_number(held) and held > 0):
        raise bad("warn_held_after", "a number of seconds > 0 or None")
    for key in ("configure", "check", "reset", "reconnect_failed"):
        if options.get(key) is not None and not callable(options[key]):
            raise bad(key, "a callable or None")
    for key in ("close_returns", "keepalives", "pgbouncer"):
        if key in options and not isinstance(options[key], bool):
            raise bad(key, "True or False")
    if options.get("open") is not None and not isinstance(options["open"], bool):
        raise bad("open", "True, False or None")
    if options.get("name") is not None and not isinstance(options["name"], str):
        raise bad("name", "a string or None")
    kwargs = options.get("kwargs")
    if kwargs is not None and not (isinstance(kwargs, Mapping) or callable(kwargs)):
        raise bad("kwargs", "a dict of connection parameters or a callable")
    cls = options.get("connection_class")
    # A generic alias (Connection[DictRow]) stands for its class, as in psycopg.
    origin = get_origin(cls) or cls
    if cls is not None and not (
        isinstance(origin, type) and issubclass(origin, psycopg.Connection)
    ):
        raise ConfigurationError(
            setting("connection_class"),
            f"expected a subclass of psycopg.Connection, got {cls!r}",
        )


# Pieces of a conninfo string that may be a password: the value after
# "password=" (quoted or not, and any stray words up to the next "key="), and
# the password in a URL's userinfo.
_KEYWORD_PASSWORD = re.compile(
    r"password\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)((?:\s+(?!\w+\s*=)\S+)*)"
)
_URL_PASSWORD = re.compile(r"^[a-z]+://[^:/@\s]*:([^@\s]*)@", re.IGNORECASE)


def _secrets_in(conninfo: str) -> list[str]:
    found: list[str] = []
    for match in _KEYWORD_PASSWORD.finditer(conninfo):
        value = match.group(1)
        found.append(value)
        found.append(value.strip("'"))
        found.extend(match.group(2).split())
    url = _URL_PASSWORD.match(conninfo)
    if url:
        found.append(url.group(1))
    return sorted({s for s in found if s}, key=len, reverse=True)


def mask_secrets(text: str, conninfo: str) -> str:
    """Return *text* with anything that may be a password from *conninfo* masked."""
    for secret in _secrets_in(conninfo):
        text = text.replace(secret, MASK)
    return text


def parse_conninfo(conninfo: str, *, setting: str = "conninfo") -> dict[str, Any]:
    """Parse a conninfo string or URL; raise ConfigurationError naming *setting*."""
    if not isinstance(conninfo, str):
        raise ConfigurationError(
            setting,
            "expected a connection string or a callable,"
            f" got {type(conninfo).__name__}",
        )
    try:
        return conninfo_to_dict(conninfo)
    except psycopg.Error as err:
        # libpq quotes the token it choked on, which may be part of a password.
        message = mask_secrets(str(err).strip(), conninfo)
        raise ConfigurationError(
            setting, f"cannot parse the connection string: {message}"
        ) from None


def mask_conninfo(conninfo: str) -> str:
    """Return *conninfo* as a ``key=value`` string with the password masked."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "<unparsable conninfo>"
    if "password" in params:
        params["password"] = MASK
    return make_conninfo("", **params)


def merge_defaults(
    conninfo: str, kwargs: Mapping[str, Any], *, keepalives: bool = True
) -> str:
    """Add the keepalive and connect_timeout defaults that *conninfo*, *kwargs* lack."""
    params = conninfo_to_dict(conninfo)
    defaults: dict[str, Any] = {}
    if "PGCONNECT_TIMEOUT" not in os.environ:
        defaults["connect_timeout"] = CONNECT_TIMEOUT_DEFAULT
    if keepalives:
        defaults.update(KEEPALIVE_DEFAULTS)
    missing = {
        key: value
        for key, value in defaults.items()
        if key not in params and key not in kwargs
    }
    if not missing:
        return conninfo
    return make_conninfo(conninfo, **missing)
