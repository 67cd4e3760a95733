"""How libpq reads connection settings (fe-connect.c).

Its setting names, its key=value and URL syntaxes, and the tokens its parse
errors quote: the validation (:mod:`pgpool_core._options`) and the masking
(:mod:`pgpool_core._secrets`) must both read a conninfo as libpq does.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import unquote

from psycopg import pq

__all__ = [
    "C_SPACE",
    "PARSE_ERROR_QUOTES",
    "URL_PREFIX",
    "Setting",
    "environment_variables",
    "keyword_value",
    "keywords",
    "parse_error_token",
    "read_keyword_syntax",
    "unquoted",
    "url_parts",
]

URL_PREFIX = re.compile(r"postgres(?:ql)?://", re.IGNORECASE)
C_SPACE = " \t\n\r\f\v"  # isspace() in libpq's C locale


@functools.lru_cache(maxsize=1)
def keywords() -> frozenset[str]:
    """Every setting name this libpq knows."""
    return frozenset(opt.keyword.decode() for opt in pq.Conninfo.get_defaults())


@functools.lru_cache(maxsize=1)
def _variables() -> dict[str, str]:
    return {
        opt.keyword.decode(): opt.envvar.decode()
        for opt in pq.Conninfo.get_defaults()
        if opt.envvar
    }


def environment_variables(settings: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The settings libpq would read from the environment: {setting: (variable, value)}.

    Those of *settings* whose variable (``PGPORT`` for ``port``...) is set,
    as libpq's defaults name them; a setting given in the conninfo or the
    keyword arguments wins over its variable.
    """
    variables = _variables()
    found: dict[str, tuple[str, str]] = {}
    for setting in settings:
        variable = variables.get(setting)
        if variable is not None and variable in os.environ:
            found[setting] = (variable, os.environ[variable])
    return found


class Setting(NamedTuple):
    """A setting of a key=value conninfo, as written."""

    name: str
    raw: str  # the value as written, without its quotes, escapes kept

    def __repr__(self) -> str:
        from ._secrets import MASK, SECRET_KEYWORDS, mask_secrets  # imports this

        raw = MASK if self.name in SECRET_KEYWORDS else self.raw
        return mask_secrets(f"{type(self).__name__}(name={self.name!r}, raw={raw!r})")


def read_keyword_syntax(text: str) -> tuple[list[Setting], tuple[str, str] | None]:
    """Read key=value *text* as libpq does (fe-connect.c, conninfo_parse).

    Return the settings read, and where it stops if it is not valid: a problem
    (``"missing ="``, ``"unterminated"``, ``"unknown"``) and the name at fault.
    """
    settings: list[Setting] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in C_SPACE:
            i += 1
        if i >= n:
            return settings, None
        start = i
        while i < n and text[i] not in C_SPACE and text[i] != "=":
            i += 1
        name = text[start:i]
        while i < n and text[i] in C_SPACE:
            i += 1
        if i >= n or text[i] != "=":
            return settings, ("missing =", name)
        i += 1
        while i < n and text[i] in C_SPACE:
            i += 1
        if i < n and text[i] == "'":
            i += 1
            start = i
            while i < n and text[i] != "'":
                i += 2 if text[i] == "\\" else 1
            settings.append(Setting(name, text[start : min(i, n)]))
            if i >= n:
                return settings, ("unterminated", name)
            i += 1
        else:
            start = i
            while i < n and text[i] not in C_SPACE:
                i += 2 if text[i] == "\\" else 1
            settings.append(Setting(name, text[start : min(i, n)]))
        if name not in keywords() and name != "requiressl":
            return settings, ("unknown", name)


def url_parts(uri: str) -> list[tuple[str, int, int]]:
    """Split *uri* as libpq does (fe-connect.c, conninfo_uri_parse_options).

    Return [(what the part is, where it starts, where it ends)], undecoded.
    """
    match = URL_PREFIX.match(uri)
    p, n = (match.end() if match else 0), len(uri)
    parts: list[tuple[str, int, int]] = []
    stop = next((i for i in range(p, n) if uri[i] in "@/"), n)
    if stop < n and uri[stop] == "@":
        colon = uri.find(":", p, stop)
        parts.append(("the URL's user name", p, stop if colon < 0 else colon))
        if colon >= 0:
            parts.append(("the URL's password", colon + 1, stop))
        p = stop + 1
    while True:
        if p < n and uri[p] == "[":
            close = uri.find("]", p)
            if close < 0:
                parts.append(("the URL's host", p + 1, n))
                return parts
            parts.append(("the URL's host", p + 1, close))
            p = close + 1
        else:
            start = p
            while p < n and uri[p] not in ":/?,":
                p += 1
            parts.append(("the URL's host", start, p))
        if p < n and uri[p] == ":":
            start = p = p + 1
            while p < n and uri[p] not in "/?,":
                p += 1
            parts.append(("the URL's port", start, p))
        if p < n and uri[p] == ",":
            p += 1
            continue
        break
    if p < n and uri[p] != "?":
        start = p = p + 1
        while p < n and uri[p] != "?":
            p += 1
        parts.append(("the URL's database name", start, p))
    p += 1
    while p < n:
        end = uri.find("&", p)
        end = n if end < 0 else end
        equals = uri.find("=", p, end)
        key_end = end if equals < 0 else equals
        name = unquoted(uri[p:key_end])
        parts.append(("the name of a query parameter", p, key_end))
        if equals >= 0:
            label = f'the query parameter "{name}"' if name in keywords() else None
            parts.append((label or "a query parameter", equals + 1, end))
        p = end + 1
    return parts


def unquoted(text: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        return text


def keyword_value(text: str) -> str:
    """Read a key=value value at the start of *text* as libpq does."""
    value: list[str] = []
    i, n = 0, len(text)
    quoted = n > 0 and text[0] == "'"
    if quoted:
        i = 1
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            value.append(text[i + 1])
            i += 2
            continue
        if (quoted and ch == "'") or (not quoted and ch in C_SPACE):
            break
        value.append(ch)
        i += 1
    return "".join(value)


#: libpq's parse errors, each with the token it choked on as its one but last
#: group: a piece of the text, which may be a piece of a password.
PARSE_ERROR_QUOTES = [
    re.compile(pattern, re.DOTALL)
    for pattern in (
        r'(missing "=" after ")(.*)(" in connection info string)',
        r'(invalid connection option ")(.*)(")',
        r'(unexpected spaces found in ")(.*)(", use percent-encoded)',
        r'(invalid percent-encoded token: ")(.*)(")',
        r'(forbidden value %00 in percent-encoded value: ")(.*)(")',
        r'(invalid URI query parameter: ")(.*)(")',
        r'(key/value separator "=" in URI query parameter: ")(.*)(")',
        r'(in IPv6 host address in URI: ")(.*)(")',
        r'(IPv6 host address may not be empty in URI: ")(.*)(")',
        r'(unexpected character ").(" at position \d+ in URI[^:]*: ")(.*)(")',
        r'(invalid URI propagated to internal parser routine: ")(.*)(")',
    )
]


def parse_error_token(message: str) -> str | None:
    """Return the token a libpq parse error quotes, if it is one of those."""
    for pattern in PARSE_ERROR_QUOTES:
        match = pattern.search(message)
        if match:
            return match.group(match.lastindex - 1 if match.lastindex else 0)
    return None
