"""Validate pool options and conninfo strings.

:data:`POOL_OPTIONS` is the one list of the pool options: ForkSafePool's
signature is held to it by a test, Flask's ``PGPOOL_*`` settings and Django's
``OPTIONS["pool"]`` keys are derived from it, and so is each check here.
"""

from __future__ import annotations

import difflib
import inspect
import ipaddress
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, get_origin

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import _libpq
from ._secrets import SECRET_KEYWORDS, mask_secrets, remember_secrets
from .errors import ConfigurationError

__all__ = [
    "KEEPALIVE_DEFAULTS",
    "MAX_WAITING_MAX",
    "NUM_WORKERS_MAX",
    "POOL_OPTIONS",
    "PSYCOPG_CONNECT_ARGS",
    "RETRY_AFTER_WHY",
    "SECONDS_MAX",
    "SIZE_MAX",
    "did_you_mean",
    "merge_defaults",
    "parse_conninfo",
    "seconds_over_bound",
    "validate_connection",
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

#: The longest ``socket_timeout`` accepted (seconds): a day. Longer is no
#: bound at all (None says so); past ~1e9 the deadline arithmetic would
#: overflow.
SOCKET_TIMEOUT_MAX = 24 * 60 * 60.0


#: The highest value of each number an option takes (docs/configuration.rst,
#: "Numbers and their bounds"); validate_pool_options refuses one above.
#:
#: Seconds (``timeout``, ``max_lifetime``, ``max_idle``,
#: ``reconnect_timeout``, ``warn_held_after``, Flask's and Django's
#: ``PGPOOL_RETRY_AFTER``): a year. psycopg_pool waits on threading locks and
#: events, whose waits raise OverflowError above ``threading.TIMEOUT_MAX``
#: (~292 years on 64-bit Linux, 49.7 days on Windows, the bound there):
#: infinity or 1e308 fails every getconn() that waits and kills the pool's
#: scheduler thread.
SECONDS_MAX = min(365 * 24 * 3600, int(threading.TIMEOUT_MAX))
#: ``min_size``, ``max_size``: PostgreSQL's MAX_BACKENDS (2^18 - 1), the
#: highest ``max_connections`` a server can have; the server's own is
#: compared with the pool's size at its first connect
#: (:mod:`pgpool_core._sizing`).
SIZE_MAX = 262_143
#: ``num_workers``: threads each process starts for each pool (8 MiB of
#: address space each, with the default stack size). They only open, check
#: and close connections (psycopg_pool's default is 3); 10**9 of them fail
#: with "can't start new thread" after starting thousands.
NUM_WORKERS_MAX = 100
#: ``max_waiting``: requests that may wait at once; 0 means no limit, which
#: a million, more threads or greenlets than a process holds, amounts to.
MAX_WAITING_MAX = 1_000_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Takes:
    """What a pool option takes: the check of its value, the words of its error."""

    expected: str
    accepts: Callable[[Any], bool]
    none: bool = False  # None is accepted too (the default, or "off")
    maximum: float | None = None  # its bound
    # Why the bound, and what to set instead (None: seconds_over_bound's).
    over: tuple[str, str] | None = None


def _integer_from(lowest: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= lowest


def _positive_seconds(value: Any) -> bool:
    return _is_number(value) and value > 0


def _is_connection_class(cls: Any) -> bool:
    # A generic alias (Connection[DictRow]) stands for its class, as in psycopg.
    origin = get_origin(cls) or cls
    return isinstance(origin, type) and issubclass(origin, psycopg.Connection)


# Why each bound, and what to set instead: the rest of the error's message.
_SIZE_REASON = (
    "PostgreSQL's highest max_connections: no server takes more",
    f"set at most {SIZE_MAX}, and keep workers x max_size under the server's"
    " max_connections (the capacity command does the sum)",
)
_WORKERS_REASON = (
    "each is a thread in every process, and they only open, check and close"
    " connections: psycopg_pool's default is 3",
    f"set at most {NUM_WORKERS_MAX}",
)
_WAITING_REASON = (
    "more requests than a process holds threads or greenlets",
    f"set at most {MAX_WAITING_MAX}, or 0 for no limit",
)

_BOOLEAN = _Takes("True or False", lambda value: isinstance(value, bool))
_CALLABLE = _Takes("a callable or None", callable, none=True)
_SECONDS = _Takes("a number of seconds > 0", _positive_seconds, maximum=SECONDS_MAX)

#: Every option ForkSafePool takes besides conninfo, in its signature's order,
#: and what each takes: psycopg_pool's own ConnectionPool options, plus
#: ``keepalives``, ``warn_held_after``, ``pgbouncer`` and ``socket_timeout``.
_OPTIONS: dict[str, _Takes] = {
    "kwargs": _Takes(
        "a dict of connection parameters or a callable",
        lambda value: isinstance(value, Mapping) or callable(value),
        none=True,
    ),
    "name": _Takes("a string or None", lambda value: isinstance(value, str), none=True),
    "connection_class": _Takes(
        "a subclass of psycopg.Connection", _is_connection_class, none=True
    ),
    "min_size": _Takes(
        "an integer >= 0", _integer_from(0), maximum=SIZE_MAX, over=_SIZE_REASON
    ),
    "max_size": _Takes(
        "an integer >= 1 or None",
        _integer_from(1),
        none=True,
        maximum=SIZE_MAX,
        over=_SIZE_REASON,
    ),
    "open": _Takes(
        "True, False or None", lambda value: isinstance(value, bool), none=True
    ),
    "configure": _CALLABLE,
    "check": _CALLABLE,
    "reset": _Takes(
        'a callable, None or "always"',
        lambda value: callable(value) or (isinstance(value, str) and value == "always"),
        none=True,
    ),
    "close_returns": _BOOLEAN,
    "timeout": _SECONDS,
    "max_waiting": _Takes(
        "an integer >= 0",
        _integer_from(0),
        maximum=MAX_WAITING_MAX,
        over=_WAITING_REASON,
    ),
    "max_lifetime": _SECONDS,
    "max_idle": _SECONDS,
    "reconnect_timeout": _SECONDS,
    "reconnect_failed": _CALLABLE,
    "num_workers": _Takes(
        "an integer >= 1",
        _integer_from(1),
        maximum=NUM_WORKERS_MAX,
        over=_WORKERS_REASON,
    ),
    "keepalives": _BOOLEAN,
    "warn_held_after": _Takes(
        "a number of seconds > 0 or None",
        _positive_seconds,
        none=True,
        maximum=SECONDS_MAX,
    ),
    "pgbouncer": _BOOLEAN,
    "socket_timeout": _Takes(
        f"a number of seconds > 0 and <= {SOCKET_TIMEOUT_MAX:g} (a day),"
        " or None (no bound)",
        lambda value: _positive_seconds(value) and value <= SOCKET_TIMEOUT_MAX,
        none=True,
    ),
}

#: Every option ForkSafePool takes besides conninfo: psycopg_pool's own
#: ConnectionPool options, plus ``keepalives``, ``warn_held_after``,
#: ``pgbouncer`` and ``socket_timeout``. The one list of their names: Flask's
#: ``PGPOOL_*`` settings and Django's ``OPTIONS["pool"]`` keys are these, and a
#: test holds ForkSafePool's signature to it.
POOL_OPTIONS = frozenset(_OPTIONS)

#: Why a ``Retry-After`` (``PGPOOL_RETRY_AFTER``) has the bound of the
#: options' seconds, for :func:`seconds_over_bound`.
RETRY_AFTER_WHY = "a client that waits it out sleeps in a wait that overflows"
_POOL_WAITS = "the pool waits in Python's thread waits, which overflow"


def seconds_over_bound(value: float, why: str = _POOL_WAITS) -> str | None:
    """Why *value*, a number of seconds > 0, is too large for an option, or None.

    Above :data:`SECONDS_MAX`: the message (to follow the setting's name)
    gives the value, the bound, *why* (what overflows above
    ``threading.TIMEOUT_MAX``), and the fix.
    """
    if value <= SECONDS_MAX:
        return None
    return (
        f"got {value!r}, over the bound of {SECONDS_MAX} seconds"
        f" ({SECONDS_MAX // 86400} days: {why} above threading.TIMEOUT_MAX);"
        f" set a finite number of seconds <= {SECONDS_MAX}"
    )


def validate_pool_options(
    options: Mapping[str, Any],
    *,
    setting: Callable[[str], str] = str,
) -> None:
    """Check *options*; raise ConfigurationError naming the first bad one.

    Each value against what its option takes (:data:`POOL_OPTIONS`), then
    ``max_size`` against ``min_size``, then each number against its bound.
    *setting* turns an option name into the name the user wrote (a Flask config
    key, a Django ``OPTIONS["pool"]`` key) so that the error names it.
    """
    for key in options:
        if key not in POOL_OPTIONS and key != "conninfo":
            known = ", ".join(sorted(POOL_OPTIONS))
            raise ConfigurationError(
                setting(key),
                f"unknown pool option{did_you_mean(key, POOL_OPTIONS)}"
                f" (the known ones are: {known})",
            )
    for key, takes in _OPTIONS.items():
        if key not in options:
            continue
        value = options[key]
        if (value is None and takes.none) or takes.accepts(value):
            continue
        if key == "reset" and isinstance(value, str):
            raise ConfigurationError(
                setting(key),
                f'unknown reset {value!r}: expected "always" (reset the session'
                " after every loan), None (roll back only) or a callable; leave"
                " it unset for the default",
            )
        if key == "connection_class":
            raise ConfigurationError(
                setting(key), f"expected {takes.expected}, got {value!r}"
            )
        # kwargs may hold a password: name its type only.
        shown = "" if key == "kwargs" else f" {value!r}"
        raise ConfigurationError(
            setting(key),
            f"expected {takes.expected}, got {type(value).__name__}{shown}",
        )
    # A min_size left unset follows max_size down (see pgpool_core._sizing).
    min_size, max_size = options.get("min_size"), options.get("max_size")
    if max_size is not None and min_size is not None and min_size > max_size:
        raise ConfigurationError(
            setting("max_size"),
            f"must be >= min_size ({min_size}), got {max_size}",
        )
    if max_size is None and min_size == 0:
        raise ConfigurationError(
            setting("max_size"), "must be set (>= 1) when min_size is 0"
        )
    _check_bounds(options, setting)


def _check_bounds(options: Mapping[str, Any], setting: Callable[[str], str]) -> None:
    """Refuse a number over its bound (types and lower bounds are checked)."""
    for key, takes in _OPTIONS.items():
        value = options.get(key)
        if takes.maximum is None or value is None or value <= takes.maximum:
            continue
        if takes.over is None:
            raise ConfigurationError(setting(key), seconds_over_bound(value) or "")
        why, fix = takes.over
        raise ConfigurationError(
            setting(key),
            f"got {value!r}, over the bound of {takes.maximum} ({why}); {fix}",
        )


# -- conninfo ---------------------------------------------------------------------


def did_you_mean(name: object, known: Iterable[str], *, prefix: str = "") -> str:
    """Return ``"; did you mean x?"`` for the known name closest to *name*, or "".

    Case-insensitive; *prefix* is put before the name suggested (a Flask or
    Django setting's ``PGPOOL_``). Other projects' names for a setting, too
    far from ours for a close match, are known by name: ``URL``, ``DSN``,
    ``DATABASE_URI`` ... -> ``CONNINFO``; ``POOL_SIZE`` -> ``MAX_SIZE``.
    """
    if not isinstance(name, str):
        return ""
    by_upper = {k.upper(): k for k in known}
    # Another project's name (PGPOOL_URL, a DSN), with or without a prefix.
    bare = name.upper().removeprefix(prefix.upper()).removeprefix("PGPOOL_")
    meant = _SYNONYMS.get(bare)
    for candidate in (meant, f"PGPOOL_{meant}") if meant else ():
        if candidate in by_upper:
            return f"; did you mean {prefix}{by_upper[candidate]}?"
    close = difflib.get_close_matches(name.upper(), by_upper, n=1)
    return f"; did you mean {prefix}{by_upper[close[0]]}?" if close else ""


#: Other projects' names for a setting (SQLAlchemy's URL and URI, a DSN),
#: upper case, without the prefix -> ours: too far apart for difflib.
_SYNONYMS = {
    **dict.fromkeys(
        (
            "URL",
            "URI",
            "DSN",
            "DATABASE",
            "DATABASE_URL",
            "DATABASE_URI",
            "DATABASE_DSN",
            "DB_URL",
            "DB_URI",
            "SQLALCHEMY_DATABASE_URI",
            "CONNECTION_STRING",
            "CONNSTRING",
            "CONNINFO_STRING",
        ),
        "CONNINFO",
    ),
    "POOL_SIZE": "MAX_SIZE",
    "SIZE": "MAX_SIZE",
    "OPTIONS": "KWARGS",
    "CONNECT_ARGS": "KWARGS",
}


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
    scheme = _OTHER_SCHEME.match(conninfo)
    if scheme is not None:
        if _libpq.URL_PREFIX.fullmatch(scheme.group(0)):
            return (
                f'the URL\'s scheme "{scheme.group(0)}" is read in lower case'
                ' only: write "postgresql://"'
            )
        if scheme.group(0).lower().startswith("postgres"):
            return (
                f"the URL's scheme \"{scheme.group(0)}\" is SQLAlchemy's, with a"
                ' driver libpq does not read: write "postgresql://"'
            )
        return (
            f"the URL's scheme \"{scheme.group(0)}\" is not PostgreSQL's: libpq"
            ' reads "postgresql://" and "postgres://" URLs'
        )
    if conninfo.startswith(("postgresql://", "postgres://")):
        return _explain_url_error(conninfo, message)
    return _explain_keyword_error(conninfo) or (
        "libpq cannot parse it (its message is not shown: it may quote a password)"
    )


#: A URL's scheme that libpq does not read ("postgresql+psycopg://", "mysql://"):
#: letters, digits, "+", "-", "." before "://" at the start (RFC 3986).
_OTHER_SCHEME = re.compile(r"(?!postgres(?:ql)?://)[A-Za-z][A-Za-z0-9+.-]*://")


def _setting_name(name: str) -> str:
    return f'"{name}"' if name in _libpq.keywords() else "a setting"


_QUOTING_HINT = (
    "; a value with spaces, quotes or backslashes is written in single quotes,"
    " with \\' and \\\\ for a quote and a backslash inside"
)


def _explain_keyword_error(text: str) -> str | None:
    """Say where key=value *text* breaks libpq's syntax, in words that quote no value.

    Names only settings libpq knows, and an unknown one only if no secret
    setting comes before it: a word after a password may be part of it.
    """
    settings, problem = _libpq.read_keyword_syntax(text)
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
        if name in _libpq.keywords():
            return f'missing "=" after "{name}"'
        return f'a word without "=" {where}{_QUOTING_HINT if before else ""}'
    if not after_secret and re.fullmatch(r"[a-z_]{1,40}", name):
        close = difflib.get_close_matches(name, _libpq.keywords(), n=1)
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
    parts = [(label, uri[start:end]) for label, start, end in _libpq.url_parts(uri)]
    token = _libpq.parse_error_token(message)
    for fragment, reason in _URL_REASONS:
        if fragment in message:
            part = next((label for label, raw in parts if raw == token), None)
            return f"{reason} in {part or 'the URL'}{_URL_HINT}"
    if "key/value separator" in message:
        extra = "extra" in message
        key = token if token in _libpq.keywords() else None
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
            close = difflib.get_close_matches(token, _libpq.keywords(), n=1)
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


# -- connection settings, checked without the network ------------------------------

#: psycopg's own ``Connection.connect()`` arguments, which are not libpq's.
PSYCOPG_CONNECT_ARGS = frozenset(
    name
    for name, parameter in inspect.signature(
        psycopg.Connection.connect
    ).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)

# libpq settings whose value is an integer (parse_int_param in fe-connect.c,
# into a C int, refusing one out of its range); all but connect_timeout
# (<= 0: no timeout) must be >= 0, or the socket option fails at connect.
_INT_MAX = 2**31 - 1
_INTEGER_SETTINGS = {
    "connect_timeout": False,
    "keepalives": True,
    "keepalives_idle": True,
    "keepalives_interval": True,
    "keepalives_count": True,
    "tcp_user_timeout": True,
    "sslcompression": True,
    "sslsni": True,
    "gssdelegation": True,
}
# Linux's bounds of the TCP options libpq sets from these (MAX_TCP_KEEPIDLE,
# MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT in include/net/tcp.h): out of them,
# every TCP connect fails ("setsockopt(TCP_KEEPIDLE) failed: Invalid
# argument"). libpq sets them only with keepalives on, and not on Unix
# sockets.
_LINUX_TCP_BOUNDS = {
    "keepalives_idle": (1, 32767, "TCP_KEEPIDLE"),
    "keepalives_interval": (1, 32767, "TCP_KEEPINTVL"),
    "keepalives_count": (1, 127, "TCP_KEEPCNT"),
}
# Files libpq reads: a path that does not exist is ignored by libpq (no
# client certificate, no CRL), or refused at connect (sslrootcert with
# verify-ca or verify-full); either way, a path set to one is a mistake.
_FILE_SETTINGS = ("sslrootcert", "sslcert", "sslkey", "sslcrl", "passfile")
_TLS_FILE_SETTINGS = frozenset({"sslrootcert", "sslcert", "sslkey", "sslcrl"})
# What libpq accepts, for the message when it refuses a value (libpq's own
# check, below, decides).
_VALUES = {
    "sslmode": "disable, allow, prefer, require, verify-ca or verify-full",
    "gssencmode": "disable, prefer or require",
    "channel_binding": "disable, prefer or require",
    "target_session_attrs": (
        "any, read-write, read-only, primary, standby or prefer-standby"
    ),
    "load_balance_hosts": "disable or random",
    "sslcertmode": "disable, allow or require",
    "sslnegotiation": "postgres or direct",
    "ssl_min_protocol_version": "TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3",
    "ssl_max_protocol_version": "TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3",
}
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
# The errors libpq gives for settings it refuses before connecting
# (connectOptions2 and conninfo_add_defaults in fe-connect.c).
_LIBPQ_REFUSES = re.compile(
    r"invalid \S+ (?:value|number|range)|invalid integer value"
    r"|invalid SSL protocol version range|could not match \d+ port numbers"
    r"|require_auth|weak sslmode|sslnegotiation|definition of service"
    r'|service file|\S+ value "[^"]*" invalid when'
)
_NO_SUCH_SOCKET_DIR = "/nonexistent-pgpool-check"


def _kwarg_setting(key: str) -> str:
    return f"kwargs[{key!r}]"


def validate_connection(
    conninfo: str = "",
    kwargs: Mapping[str, Any] | None = None,
    *,
    setting: str = "conninfo",
    kwarg_setting: Callable[[str], str] = _kwarg_setting,
) -> None:
    """Check connection settings without the network; raise ConfigurationError.

    What libpq would refuse, or silently ignore, when a connection is made,
    checked now: a conninfo it cannot parse; a *kwargs* key that is neither
    a libpq setting nor an argument of psycopg's ``connect()``; a port out of
    range; a host name that cannot be one (a connection string written as the
    host, a name in the ``.invalid`` domain, which never resolves: RFC 6761);
    a connection string written as the database name (psycopg passes it on
    as a name: libpq expands it only when given apart);
    a ``hostaddr`` that is no IP address; an integer setting that is no
    integer; a certificate, key, CRL or password file that does not exist or
    cannot be read; and what libpq itself refuses before connecting (an
    ``sslmode`` or ``target_session_attrs`` it does not know, ports that do
    not match the hosts, an undefined ``service`` ...), which is asked of
    libpq: a connection started to a Unix socket that does not exist fails
    before any network access, with libpq's own error if a value is wrong.

    The error names *setting* for what the conninfo string holds, and
    ``kwarg_setting(key)`` for *kwargs*; its message holds no secret. Not
    checked: what needs the network (does the host resolve, does the server
    take the login): a pool's first failure, and the ``check`` commands,
    say that.
    """
    # Outputs about these settings (errors, the log lines of a pool) mask
    # their secrets from now on, also where a value misread as a host or a
    # port holds a piece of one.
    if isinstance(conninfo, str) and isinstance(kwargs, (Mapping, type(None))):
        remember_secrets(conninfo, kwargs)
    params: dict[str, str] = {}
    where: dict[str, str] = {}
    if conninfo:
        for key, value in parse_conninfo(conninfo, setting=setting).items():
            params[key], where[key] = str(value), setting
    for key, value in (kwargs or {}).items():
        name = kwarg_setting(key)
        if value is None:
            continue  # psycopg leaves it out
        if key in PSYCOPG_CONNECT_ARGS:
            _check_psycopg_arg(name, key, value)
            continue
        if key not in _libpq.keywords():
            raise ConfigurationError(
                name,
                "not a libpq connection parameter nor an argument of psycopg's"
                f" connect(){did_you_mean(key, _libpq.keywords())}",
            )
        if isinstance(value, bytes) or not isinstance(value, (str, int, float)):
            raise ConfigurationError(
                name, f"expected a string or a number, got {type(value).__name__}"
            )
        params[key], where[key] = str(value), name
    try:
        _check_values(params, where)
    except ConfigurationError as err:
        message = mask_secrets(err.message, conninfo, kwargs)
        raise ConfigurationError(err.setting, message) from None


def _check_psycopg_arg(name: str, key: str, value: Any) -> None:
    if key == "autocommit" and not isinstance(value, bool):
        raise ConfigurationError(name, f"expected True or False, got {value!r}")
    if key == "prepare_threshold" and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ):
        raise ConfigurationError(
            name, f"expected an integer >= 0 or None, got {value!r}"
        )


def _check_values(params: dict[str, str], where: dict[str, str]) -> None:
    hosts = params["host"].split(",") if "host" in params else []
    for port in params.get("port", "").split(","):
        port = port.strip(_libpq.C_SPACE)
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigurationError(
                where["port"], f'port "{port}" is not a port number (1 to 65535)'
            )
    for host in hosts:
        problem = _host_problem(host)
        if problem:
            raise ConfigurationError(where["host"], problem)
    dbname = params.get("dbname", "")
    if "=" in dbname or _libpq.URL_PREFIX.match(dbname):
        # libpq expands a dbname that holds a conninfo only when it is given
        # apart (PQconnectdbParams' expand_dbname); psycopg joins it into one
        # string, where it is a database name.
        raise ConfigurationError(
            where["dbname"],
            "dbname: a connection string written as the database name, which"
            " psycopg passes on unexpanded: give its settings one by one",
        )
    if params.get("hostaddr"):
        addresses = params["hostaddr"].split(",")
        for address in addresses:
            try:
                if address:
                    ipaddress.ip_address(address.strip(_libpq.C_SPACE))
            except ValueError:
                raise ConfigurationError(
                    where["hostaddr"], f'hostaddr "{address}" is not an IP address'
                ) from None
        if hosts and len(hosts) != len(addresses):
            raise ConfigurationError(
                where["hostaddr"],
                f"{len(addresses)} addresses for {len(hosts)} hosts: give as many"
                " hostaddr values as host names, in the same order",
            )
    _check_integers(params, where, hosts)
    tls = params.get("sslmode") != "disable"
    for key in _FILE_SETTINGS:
        problem = _file_problem(key, params.get(key, ""), tls)
        if problem:
            raise ConfigurationError(where[key], problem)
    _ask_libpq(params, where, len(hosts))


def _check_integers(
    params: dict[str, str], where: dict[str, str], hosts: list[str]
) -> None:
    """Check the integer settings, and those the environment sets (PG*)."""
    values: dict[str, tuple[str, str, str | None]] = {
        key: (params[key], where[key], None)
        for key in _INTEGER_SETTINGS
        if key in params
    }
    unset = [key for key in _INTEGER_SETTINGS if key not in params]
    for key, (name, value) in _libpq.environment_variables(unset).items():
        values[key] = (value, name, name)
    numbers: dict[str, int] = {}
    for key, (value, setting, variable) in values.items():
        if key not in _libpq.keywords():
            continue
        non_negative = _INTEGER_SETTINGS[key]
        expected = "an integer >= 0" if non_negative else "an integer"
        fix = (
            f"; set the environment variable {variable} to {expected} or unset it"
            if variable
            else ""
        )
        text = value.strip(_libpq.C_SPACE)
        if not re.fullmatch(r"[-+]?\d+", text) or (non_negative and int(text) < 0):
            raise ConfigurationError(
                setting, f"{key}: expected {expected}, got {value!r}{fix}"
            )
        if not -_INT_MAX - 1 <= int(text) <= _INT_MAX:
            raise ConfigurationError(
                setting,
                f"{key}: got {value!r}, out of the range of a C int, which libpq"
                f" reads it into ({-_INT_MAX - 1} to {_INT_MAX})"
                + (fix or "; set one within it"),
            )
        numbers[key] = int(text)
    tcp = numbers.get("keepalives", 1) != 0 and not (
        hosts and all(h.strip(_libpq.C_SPACE).startswith(("/", "@")) for h in hosts)
    )
    if not (tcp and sys.platform.startswith("linux")):
        return
    for key, (lowest, highest, option) in _LINUX_TCP_BOUNDS.items():
        if key in numbers and not lowest <= numbers[key] <= highest:
            raise ConfigurationError(
                values[key][1],
                f"{key}: got {values[key][0]!r}, out of Linux's bounds for"
                f" {option}, {lowest} to {highest}: every TCP connect would fail"
                f' ("setsockopt({option}) failed: Invalid argument"); set {lowest}'
                f" to {highest}",
            )


def _host_problem(host: str) -> str | None:
    """Why *host* (one of a host list) can be no host, or None."""
    host = host.strip(_libpq.C_SPACE)
    if not host or host.startswith(("/", "@")):
        return None  # libpq's default, or a Unix socket's directory
    if "=" in host or _libpq.URL_PREFIX.match(host):
        return (
            "host: a connection string written as the host name, which libpq"
            " takes for a name, unexpanded: give its settings one by one"
        )
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    with_port = re.fullmatch(r"(.+):(\d+)", host)
    if with_port is not None and _host_problem(with_port.group(1)) is None:
        return (
            f'host "{host}" ends with a port number: write the host alone and'
            f" {with_port.group(2)} as the port (port=, or Django's PORT)"
        )
    if not _HOST_NAME.fullmatch(host) or len(host) > 253:
        return f'host "{host}" cannot be a host name or an IP address'
    if host.rstrip(".").lower().rsplit(".", 1)[-1] == "invalid":
        return (
            f'host "{host}" is in the .invalid domain, which never resolves (RFC 6761)'
        )
    return None


def _file_problem(key: str, path: str, tls: bool) -> str | None:
    if not path or (key in _TLS_FILE_SETTINGS and not tls):
        return None  # unset, or no TLS: libpq does not read it
    if key == "sslrootcert" and path == "system":
        return None  # the system's trusted roots (libpq 16)
    if key == "sslkey" and ":" in path and not path.startswith("/"):
        return None  # an OpenSSL engine's key, "engine:key"
    if not os.path.exists(path):
        return f'{key} names "{path}", which does not exist'
    if not os.access(path, os.R_OK):
        return (
            f'{key} names "{path}", which this process (uid {os.getuid()}) cannot read'
        )
    return None


def _ask_libpq(params: dict[str, str], where: dict[str, str], hosts: int) -> None:
    """Start a connection to a socket that does not exist: libpq checks first."""
    probe = {k: v for k, v in params.items() if k not in SECRET_KEYWORDS}
    probe["host"] = ",".join([_NO_SUCH_SOCKET_DIR] * max(hosts, 1))
    probe["hostaddr"] = ""  # checked above; else libpq would connect to it
    pgconn = pq.PGconn.connect_start(make_conninfo("", **probe).encode())
    try:
        message = pgconn.get_error_message().strip()
    finally:
        pgconn.finish()
    if not _LIBPQ_REFUSES.match(message):
        return
    key = _setting_in(message, where)
    from_environment = _libpq.environment_variables(
        k for k in _libpq.keywords() if k not in where
    )
    variable_key = None if key else _setting_in(message, from_environment)
    about = key or variable_key
    hint = ""
    if about is not None and about in _VALUES and message.startswith("invalid"):
        hint = f" ({about} is one of {_VALUES[about]})"
    if variable_key is not None:
        variable = from_environment[variable_key][0]
        raise ConfigurationError(
            variable,
            f"libpq refuses {variable_key}, which this environment variable sets:"
            f" {message}{hint}; fix or unset it",
        )
    if key is None:
        raise ConfigurationError(
            next(iter(where.values()), "conninfo"),
            f"libpq refuses the settings (or the environment's PG* variables):"
            f" {message}",
        )
    raise ConfigurationError(where[key], f"libpq refuses {key}: {message}{hint}")


def _setting_in(message: str, where: Mapping[str, object]) -> str | None:
    """The setting (one given) that libpq's *message* is about, the first named."""
    named = re.search(r'connection option "(\w+)"', message)
    if named and named.group(1) in where:
        return named.group(1)
    found = [
        (match.start(), key)
        for key in where
        for match in [re.search(rf"\b{re.escape(key)}\b", message)]
        if match
    ]
    if "port number" in message and "port" in where:
        found.append((-1, "port"))
    if "protocol version range" in message:
        found += [(-1, k) for k in ("ssl_min_protocol_version",) if k in where]
    if "weak sslmode" in message:
        # libpq's default sslmode is "prefer": the setting is the other one.
        found = [(i, k) for i, k in found if k != "sslmode"] or found
    return min(found)[1] if found else None
