"""Keep passwords out of every output: errors, reprs, log lines, pages.

:func:`mask_secrets` is the one function every output goes through.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import _libpq
from ._reset import replace_failed_pgconn
from .errors import exception_chain

__all__ = [
    "MASK",
    "MASKED_LOGGERS",
    "SECRET_KEYWORDS",
    "ConnectionParams",
    "MaskingFilter",
    "connect_masked",
    "mask_conninfo",
    "mask_exception",
    "mask_secrets",
    "remember_kwargs",
    "remember_secrets",
]

# -- secrets -------------------------------------------------------------------
#
# Masking works from the secret values themselves, not from the shape of the
# text around them: the values are collected from the conninfo and kwargs
# (parsed by libpq), from what a value may hide (a conninfo pasted as the host
# or the database name), from the environment, the password file and the
# service file, and from lenient readings of text that libpq cannot parse or
# may misread (a URL password with an unencoded "@" or "/"). Each value is then
# replaced wherever it appears, in each of the forms it takes in an output:
# percent-encoded, escaped for a conninfo, a Python repr, JSON or HTML.

#: libpq settings whose values are secrets.
SECRET_KEYWORDS = frozenset(
    {
        "password",
        "sslpassword",
        "oauth_client_secret",  # libpq 18
        "scram_client_key",  # libpq 18: a SCRAM key stands for the password
        "scram_server_key",
    }
)

#: What a secret is replaced with.
MASK = "********"

#: A secret shorter than this is masked only where no letter or digit touches
#: it: "a" must not turn "password authentication failed" into stars.
_SHORT = 4

#: PostgreSQL's longest identifier, in bytes: the server cuts a longer database
#: or user name there before quoting it in an error.
_NAMEDATALEN = 63

_SECRET_KEYWORD_AT = re.compile(
    r"(?:^|(?<=[\s?&'\"]))(?:password|sslpassword|oauth_client_secret"
    r"|scram_client_key|scram_server_key)\s*=",
    re.IGNORECASE,
)
_CONNINFO_ESCAPE = re.compile(r"([\\'])")


def _py_escaped(value: str, delimiter: str, *, ascii_only: bool = False) -> str:
    """*value* as it appears in a Python string literal between *delimiter*s."""
    escape = ascii if ascii_only else repr
    return "".join(
        "\\" + ch if ch == delimiter else ch if ch in "'\"" else escape(ch)[1:-1]
        for ch in value
    )


@functools.lru_cache(maxsize=8192)
def _forms(value: str) -> frozenset[str]:
    """Return *value* as it may appear in an output: encoded, escaped, quoted."""
    first = {
        value,
        value.strip(),
        " ".join(value.split()),  # an output that folds whitespace
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        _CONNINFO_ESCAPE.sub(r"\\\1", value),
        value.replace("\\", "\\\\").replace(":", "\\:"),  # a .pgpass line
    }
    for quote_char in ("'", '"'):
        first.add(_py_escaped(value, quote_char))
        first.add(_py_escaped(value, quote_char, ascii_only=True))
    first.add(json.dumps(value)[1:-1])
    first.add(json.dumps(value, ensure_ascii=False)[1:-1])
    # Twice escaped: a repr in a JSON document, an escaped value on an HTML page.
    forms = set(first)
    for form in first:
        forms.add(html.escape(form))
        forms.add(html.escape(form, quote=False))
        forms.add(json.dumps(form)[1:-1])
        forms.add(_py_escaped(form, "'"))
        forms.add(_CONNINFO_ESCAPE.sub(r"\\\1", form))
    forms.discard("")
    return frozenset(forms)


def _truncated(value: str) -> str:
    return value.encode()[:_NAMEDATALEN].decode(errors="ignore")


def _looks_like_conninfo(value: str) -> bool:
    # libpq's own test for a dbname to expand, made lenient on the scheme case.
    return "=" in value or _libpq.URL_PREFIX.search(value) is not None


def _secrets_in_params(params: Mapping[str, Any], depth: int = 0) -> set[str]:
    """Return the secrets in connection parameters (kwargs, or a parsed conninfo)."""
    found: set[str] = set()
    for key, value in params.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # psycopg passes str(value) on
        if not isinstance(value, str) or not value:
            continue
        if key in SECRET_KEYWORDS:
            found.add(value)
        elif depth < 3 and _looks_like_conninfo(value):
            # A conninfo given as the host, the database name, the options:
            # libpq or the server may quote the value in an error.
            inner = _secrets_in_conninfo(value, depth + 1)
            found |= inner | _cut_secrets(value, inner)
    return found


def _cut_secrets(value: str, secrets: Iterable[str]) -> set[str]:
    """Return the start of each secret that ends *value* once the server cuts it."""
    cut = _truncated(value)
    found: set[str] = set()
    if cut == value:
        return found
    for secret in secrets:
        for size in range(len(secret) - 1, 0, -1):
            if cut.endswith(secret[:size]):
                found.add(secret[:size])
                break
    return found


@functools.lru_cache(maxsize=256)
def _parsed(conninfo: str) -> dict[str, Any] | None:
    """Return libpq's reading of *conninfo*, None if it cannot parse it (cached)."""
    try:
        return conninfo_to_dict(conninfo)
    except (psycopg.Error, UnicodeError, ValueError):
        return None


@functools.lru_cache(maxsize=256)
def _secrets_in_conninfo(conninfo: str, depth: int = 0) -> frozenset[str]:
    """Return what may be a secret in *conninfo*, parsable or not (cached)."""
    # Each value read, as written too (an output may quote the text with its
    # escapes), and those libpq drops: a repeated setting keeps the last.
    found: set[str] = set()
    for setting in _libpq.read_keyword_syntax(conninfo)[0]:
        if setting.name in SECRET_KEYWORDS and setting.raw:
            found |= {setting.raw, re.sub(r"\\(.)", r"\1", setting.raw)}
    params = _parsed(conninfo)
    if params is None:
        return frozenset(found | _lenient_secrets(conninfo))
    found |= _secrets_in_params(params, depth)
    if _libpq.URL_PREFIX.search(conninfo):
        # libpq ends a URL's user information at the first "@" or "/": a
        # password holding either, unencoded, spills into the host, port or
        # database name. Mask what every reading of it would call a password.
        found |= _lenient_secrets(conninfo, keyword_syntax=False, params=params)
        for value in params.values():
            found |= _cut_secrets(str(value), found)
    return frozenset(found)


_URL_PART_KEYS = {
    "the URL's user name": "user",
    "the URL's host": "host",
    "the URL's port": "port",
    "the URL's database name": "dbname",
}


def _lenient_secrets(
    text: str,
    *,
    keyword_syntax: bool = True,
    params: Mapping[str, Any] | None = None,
) -> set[str]:
    """Return what any reading of *text* could call a secret.

    For text that libpq cannot parse (or may misread, *params* being what it
    read): everything from a secret setting's "=" to the end (and its value as
    libpq reads it); in a URL, the part of each candidate user information
    after its first ":", and libpq's values made of a piece of it.
    """
    found: set[str] = set()
    tails: set[str] = set()
    for match in _libpq.URL_PREFIX.finditer(text):
        begin = match.start()
        parts = _libpq.url_parts(text[begin:])
        # libpq's reading went wrong if it found an "@" in a host, a port or
        # a database name, or a port that is no number.
        misread = keyword_syntax or any(
            "@" in text[begin + start : begin + end]
            or (
                label.endswith("port")
                and not text[begin + start : begin + end].isdigit()
            )
            for label, start, end in parts
            if label.endswith(("host", "port", "database name"))
        )
        colon = text.find(":", match.end())
        for at in (i for i in range(colon + 1, len(text)) if text[i] == "@"):
            if colon < 0:
                break
            # The password of one reading; what libpq took of it for a host,
            # a port or a database name is masked as such.
            tails.add(text[colon + 1 : at])
            for label, start, end in parts if misread else ():
                piece = text[max(begin + start, colon + 1) : min(begin + end, at)]
                if len(piece) >= _SHORT:  # a shorter one is no telling piece
                    found.update({piece, _libpq.unquoted(piece)})
                # libpq joins the hosts and the ports with ",": the value.
                value = (params or {}).get(_URL_PART_KEYS.get(label, ""))
                if piece and isinstance(value, str) and len(value) >= _SHORT:
                    found.add(value)
    for source in {text, _libpq.unquoted(text)}:
        for match in _SECRET_KEYWORD_AT.finditer(source):
            tail = source[match.end() :]
            tails.add(tail)
            if keyword_syntax:
                tails.add(_libpq.keyword_value(tail.lstrip(_libpq.C_SPACE)))
            tails.add(tail.split("&", 1)[0])  # a URL query parameter
    for tail in tails:
        for candidate in (tail, tail.strip(), tail.strip("'\""), _libpq.unquoted(tail)):
            if candidate:
                found.add(candidate)
    return found


# -- the environment and libpq's files -----------------------------------------


def _environment_secrets(
    environ: Mapping[str, str], params: Mapping[str, Any]
) -> set[str]:
    """Return the secrets libpq would read from the environment and its files."""
    found = _secrets_in_params(
        {
            "password": environ.get("PGPASSWORD", ""),
            "sslpassword": environ.get("PGSSLPASSWORD", ""),
            # Values that may hide a conninfo.
            "host": environ.get("PGHOST", ""),
            "dbname": environ.get("PGDATABASE", ""),
            "user": environ.get("PGUSER", ""),
            "options": environ.get("PGOPTIONS", ""),
        }
    )
    home = environ.get("HOME") or os.path.expanduser("~")
    passfile = params.get("passfile") or environ.get("PGPASSFILE")
    found |= _file_secrets(
        str(passfile or os.path.join(home, ".pgpass")), passfile=True
    )
    if params.get("service") or environ.get("PGSERVICE"):
        found |= _file_secrets(
            environ.get("PGSERVICEFILE") or os.path.join(home, ".pg_service.conf"),
            passfile=False,
        )
        sysconfdir = environ.get("PGSYSCONFDIR")
        if sysconfdir:
            found |= _file_secrets(
                os.path.join(sysconfdir, "pg_service.conf"), passfile=False
            )
    return found


def _file_secrets(path: str, *, passfile: bool) -> frozenset[str]:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return frozenset()
    return _read_file_secrets(path, stat.st_mtime_ns, stat.st_size, passfile)


@functools.lru_cache(maxsize=16)
def _read_file_secrets(
    path: str, mtime_ns: int, size: int, passfile: bool
) -> frozenset[str]:
    """The passwords of a password file or a service file (cached while unchanged)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return frozenset()
    found: set[str] = set()
    for line in lines:
        if passfile:
            # hostname:port:database:username:password, with \: and \\.
            if line.startswith("#"):
                continue
            fields = re.split(r"(?<!\\):", line, maxsplit=4)
            if len(fields) == 5 and fields[4]:
                found.add(fields[4])
                found.add(re.sub(r"\\(.)", r"\1", fields[4]))
        else:
            # [service] sections of key=value lines.
            key, equals, value = line.strip().partition("=")
            if equals and key.strip() in SECRET_KEYWORDS and value.strip():
                found.add(value.strip())
    return frozenset(found)


# -- secrets remembered for the logs ---------------------------------------------

#: The secrets of every pool made in this process (oldest first, bounded):
#: psycopg_pool's log records do not say which pool they are about.
_remembered: dict[str, None] = {}
#: Bounded low: every masking builds the forms of each (encoded, escaped...),
#: again whenever the set changes, as it does at each connect of a ``kwargs``
#: callable that hands out a new token (RDS IAM, a vault); the newest are
#: what a log line about a connection quotes.
_REMEMBER_MAX = 64
_remembered_lock = threading.Lock()


def _new_remembered_lock() -> None:
    # A child of os.fork() made while a pool thread held the lock would wait
    # for it forever (uWSGI forks no such thread: no pool thread runs in a
    # master).
    global _remembered_lock
    _remembered_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_remembered_lock)


def remember_secrets(
    conninfo: str = "", kwargs: Mapping[str, Any] | None = None
) -> None:
    """Remember the secrets of *conninfo* and *kwargs* for :func:`mask_secrets`.

    Every later call of :func:`mask_secrets`, in any thread, masks them, even
    when it is not given this conninfo: that is how the log records of
    psycopg and psycopg_pool, which name neither, are masked (see
    :class:`MaskingFilter`). The pools call it for their conninfo and kwargs.
    """
    found = set(_secrets_in_conninfo(conninfo)) if conninfo else set()
    if kwargs:
        found |= _secrets_in_params(kwargs)
    if not found:
        return
    with _remembered_lock:
        for secret in found:
            _remembered.pop(secret, None)
            _remembered[secret] = None
        while len(_remembered) > _REMEMBER_MAX:
            del _remembered[next(iter(_remembered))]


def remember_kwargs(
    kwargs: Mapping[str, Any] | Callable[[], dict[str, Any]] | None,
) -> dict[str, Any] | Callable[[], dict[str, Any]] | None:
    """Return *kwargs* for a pool (a copy of a dict), remembering its secrets.

    A callable is wrapped so that the secrets of each dict it returns are
    remembered too (:func:`remember_secrets`).
    """
    if kwargs is None:
        return None
    if isinstance(kwargs, Mapping):
        remember_secrets(kwargs=kwargs)
        return ConnectionParams(kwargs)
    produce = kwargs

    @functools.wraps(produce)
    def remembering() -> dict[str, Any]:
        produced = produce()
        remember_secrets(kwargs=produced)
        return produced

    return remembering


# -- masking ----------------------------------------------------------------------


def _mask_libpq_quotes(text: str) -> str:
    # libpq's parse errors quote the token they choked on, which may be a piece
    # of a password that no reading above isolates exactly: the token is
    # masked unless it is a setting name.
    def replace(match: re.Match[str]) -> str:
        *heads, token, tail = match.groups()
        return "?".join(heads) + (token if token in _libpq.keywords() else MASK) + tail

    for pattern in _libpq.PARSE_ERROR_QUOTES:
        text = pattern.sub(replace, text)
    return text


@functools.lru_cache(maxsize=64)
def _masking_forms(
    secrets: frozenset[str],
) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
    """Return the long forms of *secrets* (longest first), a pattern for short ones."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= _forms(secret)
    long = tuple(sorted((f for f in forms if len(f) >= _SHORT), key=len, reverse=True))
    short = sorted((f for f in forms if len(f) < _SHORT), key=len, reverse=True)
    if not short:
        return long, None
    alternatives = "|".join(re.escape(form) for form in short)
    return long, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


@functools.lru_cache(maxsize=256)
def _alternation(forms: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(form) for form in forms))


def _mask_known(text: str, secrets: frozenset[str]) -> str:
    long, short = _masking_forms(secrets)
    # Substring tests first: most texts hold no secret, and "in" is cheap.
    present = tuple(form for form in long if form in text)
    if present:
        text = _alternation(present).sub(MASK, text)
    return text if short is None else short.sub(MASK, text)


def mask_secrets(
    text: object,
    conninfo: str | Callable[[], str] | None = None,
    kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Return ``str(text)`` with every secret known here masked as ``********``.

    The one function every output goes through (errors, reprs, log lines,
    statistics, pages, command output): pass it any text with what is known of
    the secrets. Masked: the secrets of *conninfo* (a key=value string or a
    URL, parsable or not) and of *kwargs* (connection parameters), including
    those of a conninfo given as the host, the database name or the options;
    those libpq reads from *environ* (default ``os.environ``: ``PGPASSWORD``,
    ``PGSSLPASSWORD``, the password file of ``passfile``, ``PGPASSFILE`` or
    ``~/.pgpass``, the service file of a ``service``); and those of every
    ``ForkSafePool`` made in this process, even with no *conninfo* given.
    Each secret is masked wherever it appears, percent-encoded, escaped or
    quoted; a token that libpq quotes in a parse error is masked unless it is
    a setting name. Callables (a pool's conninfo or kwargs factory) are not
    called: the secrets of what they returned are remembered.
    """
    text = text if isinstance(text, str) else str(text)
    if not text:
        return text
    environ = os.environ if environ is None else environ
    params: dict[str, Any] = {}
    found: set[str] = set()
    if isinstance(conninfo, str) and conninfo:
        found |= _secrets_in_conninfo(conninfo)
        params.update(_parsed(conninfo) or {})
    if isinstance(kwargs, Mapping):
        found |= _secrets_in_params(kwargs)
        params.update(kwargs)
    found |= _environment_secrets(environ, params)
    with _remembered_lock:
        found.update(_remembered)
    return _mask_known(_mask_libpq_quotes(text), frozenset(found))


def mask_exception(
    exc: BaseException,
    conninfo: str | Callable[[], str] | None = None,
    kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
) -> BaseException:
    """Mask the secrets in the message of *exc* and its causes, in place.

    For an exception about to be re-raised (so that its traceback, a debug
    page, an error tracker or a log show no secret): the string arguments of
    *exc*, of its ``__cause__`` and ``__context__`` chain and their notes go
    through :func:`mask_secrets`. Returns *exc*.
    """
    for current in exception_chain(exc):
        masked = tuple(
            mask_secrets(arg, conninfo, kwargs) if isinstance(arg, str) else arg
            for arg in current.args
        )
        if masked != current.args:
            current.args = masked
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [mask_secrets(note, conninfo, kwargs) for note in notes]
        # psycopg 3.3 keeps what libpq knew of a failed connect, password
        # and conninfo included, in a dataclass whose repr shows them.
        replace_failed_pgconn(
            current, lambda pgconn: _masked_pgconn(pgconn, conninfo, kwargs)
        )
    return exc


def _masked_pgconn(pgconn: Any, conninfo: Any, kwargs: Any) -> Any:
    """Return a copy of psycopg's ``FinishedPGconn`` with its secrets masked."""

    def masked(key: str, value: Any) -> Any:
        if isinstance(value, bytes) and value:
            if key in SECRET_KEYWORDS:
                return MASK.encode()
            text = value.decode(errors="replace")
            return mask_secrets(text, conninfo, kwargs).encode()
        return value

    changes: dict[str, Any] = {}
    for field in dataclasses.fields(pgconn):
        value = getattr(pgconn, field.name)
        if field.name == "info" and isinstance(value, list):
            changes["info"] = [
                option._replace(val=masked(option.keyword.decode(), option.val))
                if hasattr(option, "_replace")
                else option
                for option in value
            ]
        elif field.init:
            changes[field.name] = masked(field.name, value)
    return dataclasses.replace(pgconn, **changes)


class MaskingFilter(logging.Filter):
    """Mask secrets in log records (:func:`mask_secrets`) with what is remembered.

    Installed on the ``psycopg``, ``psycopg.pool`` and ``pgpool.*`` loggers:
    psycopg_pool logs connection errors (``error connecting in 'pool': ...``)
    whose text can quote a host or database name that holds a password.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            mask_exception(record.exc_info[1])
            if record.exc_text is None:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


#: The loggers whose records MaskingFilter masks.
MASKED_LOGGERS = (
    "psycopg",
    "psycopg.pool",
    "pgpool.pool",
    "pgpool.session",
    "pgpool.lifecycle",
    "pgpool.capacity",
    "pgpool.flask",
    "pgpool.django",
    "pgpool.metrics",
    "pgpool.green",
)

_masking_filter = MaskingFilter()
for _name in MASKED_LOGGERS:
    logging.getLogger(_name).addFilter(_masking_filter)


def mask_conninfo(conninfo: str = "", kwargs: Mapping[str, Any] | None = None) -> str:
    """Return *conninfo* (with *kwargs* merged) as ``key=value`` with secrets masked.

    A secret setting shows as ``password=********``; a conninfo given as the
    value of another setting (the host, the database name) is shown with its
    own secrets masked. ``<unparsable conninfo>`` if libpq cannot parse it.
    """
    try:
        params: dict[str, Any] = conninfo_to_dict(conninfo)
    except (psycopg.Error, UnicodeError, ValueError):
        return "<unparsable conninfo>"
    keywords = _libpq.keywords()
    for key, value in (kwargs or {}).items():
        if key in keywords and value is not None and not isinstance(value, bool):
            params[key] = value
    shown = {key: _masked_value(key, str(value)) for key, value in params.items()}
    rendered = make_conninfo("", **shown)
    return mask_secrets(rendered, conninfo, kwargs)


def _masked_value(key: str, value: str, depth: int = 0) -> str:
    if key in SECRET_KEYWORDS:
        return MASK
    if depth < 3 and _looks_like_conninfo(value) and _secrets_in_conninfo(value):
        try:
            inner = conninfo_to_dict(value)
        except (psycopg.Error, UnicodeError, ValueError):
            return MASK
        return make_conninfo(
            "", **{k: _masked_value(k, str(v), depth + 1) for k, v in inner.items()}
        )
    return value


_Connection = TypeVar("_Connection", bound="psycopg.Connection[Any]")


def connect_masked(
    connection_class: type[_Connection],
    conninfo: str,
    kwargs: Mapping[str, Any],
) -> _Connection:
    """Return ``connection_class.connect(conninfo, **kwargs)``; mask what it raises.

    libpq's and psycopg's connection errors can quote a host or a database
    name that holds a password (:func:`mask_exception`).
    """
    try:
        return connection_class.connect(conninfo, **kwargs)
    except psycopg.Error as err:
        mask_exception(err, conninfo, kwargs)
        raise


class ConnectionParams(dict[str, Any]):
    """Connection parameters (psycopg's ``connect()`` kwargs) whose repr masks secrets.

    A plain dict otherwise. Where such a dict is a local variable or an
    argument, a debug page, an error tracker or a log that shows it by its
    repr shows ``'password': '********'``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        shown = {
            key: MASK if key in SECRET_KEYWORDS else value
            for key, value in self.items()
        }
        return mask_secrets(dict.__repr__(shown), kwargs=self)
