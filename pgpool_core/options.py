"""Validate pool options and conninfo strings.

The masking of secrets lives in :mod:`pgpool_core.masking`; its public names
are importable from here too, where they were first exported.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any, get_origin

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import libpq
from .errors import ConfigurationError
from .masking import (
    MASK,
    SECRET_KEYWORDS,
    ConnectionParams,
    MaskingFilter,
    connect_masked,
    mask_conninfo,
    mask_exception,
    mask_secrets,
    remember_kwargs,
    remember_secrets,
)

__all__ = [
    "KEEPALIVE_DEFAULTS",
    "ConnectionParams",
    "MASK",
    "POOL_OPTIONS",
    "SECRET_KEYWORDS",
    "MaskingFilter",
    "connect_masked",
    "mask_conninfo",
    "mask_exception",
    "mask_secrets",
    "merge_defaults",
    "parse_conninfo",
    "remember_kwargs",
    "remember_secrets",
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


# -- conninfo ---------------------------------------------------------------------


def parse_conninfo(conninfo: str, *, setting: str = "conninfo") -> dict[str, Any]:
    """Parse a conninfo string or URL; raise ConfigurationError naming *setting*.

    The error says what is wrong in words that hold no part of a value: libpq's
    own message quotes the token it stopped at, which may be a piece of the
    password.
    """
    if not isinstance(conninfo, str):
        raise ConfigurationError(
            setting,
            "expected a connection string or a callable,"
            f" got {type(conninfo).__name__}",
        )
    if "\0" in conninfo:
        raise ConfigurationError(
            setting,
            "cannot parse the connection string: it holds a NUL character"
            " (libpq would silently drop everything after it)",
        )
    try:
        return conninfo_to_dict(conninfo)
    except UnicodeEncodeError:
        raise ConfigurationError(
            setting,
            "cannot parse the connection string: it holds a character that"
            " cannot be encoded in UTF-8 (a lone surrogate)",
        ) from None
    except psycopg.Error as err:
        why = _explain_parse_error(conninfo, str(err))
        raise ConfigurationError(
            setting, f"cannot parse the connection string: {why}"
        ) from None


# -- why a conninfo cannot be parsed, in words that quote no value ---------------


def _explain_parse_error(conninfo: str, message: str) -> str:
    if conninfo.startswith(("postgresql://", "postgres://")):
        return _explain_url_error(conninfo, message)
    return _explain_keyword_error(conninfo) or (
        "libpq cannot parse it (its message is not shown: it may quote a password)"
    )


def _setting_name(name: str) -> str:
    return f'"{name}"' if name in libpq.keywords() else "a setting"


_QUOTING_HINT = (
    "; a value with spaces, quotes or backslashes is written in single quotes,"
    " with \\' and \\\\ for a quote and a backslash inside"
)


def _explain_keyword_error(text: str) -> str | None:
    """Say where key=value *text* breaks libpq's syntax, in words that quote no value.

    Names only settings libpq knows, and an unknown one only if no secret
    setting comes before it: a word after a password may be part of it.
    """
    settings, problem = libpq.read_keyword_syntax(text)
    if problem is None:
        return None
    kind, name = problem
    if kind == "unterminated":
        return f"unterminated quoted value of {_setting_name(name)}"
    before = settings[:-1] if kind == "unknown" else settings
    after_secret = any(s.name in SECRET_KEYWORDS for s in before)
    where = (
        f"after the value of {_setting_name(before[-1].name)}"
        if before
        else "at the start"
    )
    if kind == "missing =":
        if name in libpq.keywords():
            return f'missing "=" after "{name}"'
        return f'a word without "=" {where}{_QUOTING_HINT if before else ""}'
    if not after_secret and re.fullmatch(r"[a-z_]{1,40}", name):
        close = difflib.get_close_matches(name, libpq.keywords(), n=1)
        also = f' (did you mean "{close[0]}"?)' if close else ""
        return f'unknown setting "{name}"{also}'
    return f"an unknown setting name {where}{_QUOTING_HINT if after_secret else ''}"


_URL_REASONS = (
    ("unexpected spaces", "an unencoded space"),
    ("invalid percent-encoded token", 'a "%" not followed by two hex digits'),
    ("forbidden value %00", "an encoded NUL (%00)"),
)
_URL_HINT = (
    "; percent-encode the user name and password"
    ' (urllib.parse.quote(password, safe=""))'
)


def _explain_url_error(uri: str, message: str) -> str:
    """Say what breaks libpq's URL syntax, and in which part (fe-connect.c)."""
    parts = [(label, uri[start:end]) for label, start, end in libpq.url_parts(uri)]
    token = libpq.parse_error_token(message)
    for fragment, reason in _URL_REASONS:
        if fragment in message:
            part = next((label for label, raw in parts if raw == token), None)
            return f"{reason} in {part or 'the URL'}{_URL_HINT}"
    if "key/value separator" in message:
        extra = "extra" in message
        key = token if token in libpq.keywords() else None
        which = f'the query parameter "{key}"' if key else "a query parameter"
        what = 'a second "="' if extra else 'no "="'
        hint = _URL_HINT if key in SECRET_KEYWORDS else ""
        return f"{what} in {which}{hint}"
    if "invalid URI query parameter" in message:
        secret_before = any(
            label.startswith("the query parameter")
            and label.split('"')[1] in SECRET_KEYWORDS
            for label, _ in parts
        )
        if token and not secret_before and re.fullmatch(r"[a-z_]{1,40}", token):
            close = difflib.get_close_matches(token, libpq.keywords(), n=1)
            also = f' (did you mean "{close[0]}"?)' if close else ""
            return f'unknown query parameter "{token}"{also}'
        return "an unknown query parameter name" + (_URL_HINT if secret_before else "")
    if "IPv6" in message:
        if "may not be empty" in message:
            return 'an empty IPv6 host address ("[]")'
        return 'an IPv6 host address with no closing "]"' + _URL_HINT
    if "unexpected character" in message:
        return (
            'an unexpected character after an IPv6 host address (expected ":" or "/")'
        )
    return "libpq cannot parse it (its message is not shown: it may quote a password)"


def merge_defaults(
    conninfo: str, kwargs: Mapping[str, Any], *, keepalives: bool = True
) -> str:
    """Add the keepalive and connect_timeout defaults that *conninfo*, *kwargs* lack.

    Also remembers the secrets of both (:func:`remember_secrets`): a pool's
    conninfo, or each one its callable returns, passes here.
    """
    remember_secrets(conninfo, kwargs)
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
