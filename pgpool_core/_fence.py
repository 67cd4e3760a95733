"""The fence around the private names of psycopg and psycopg_pool.

pgpool_core overrides and reads names that psycopg_pool and psycopg do not
publish: psycopg_pool's in :mod:`pgpool_core._psycopg_pool` only, psycopg's in
:mod:`pgpool_core._reset` only. Each of the two lists the names it relies on
in one tuple (``PSYCOPG_POOL_NAMES``, ``PSYCOPG_NAMES``) and passes it to
:func:`require` at import. A release that renamed an overridden method would
otherwise make the override stop running, silently (psycopg_pool's stock
behaviour returns and its own tests still pass); a renamed attribute would
fail at the first connection given back. The import fails instead, with one
ImportError naming what is missing, the installed version, the versions
verified (``setup.cfg``'s range) and the fix.

A name *exists* on a class when the class or one of its bases has it as an
attribute, or when the code of its methods names it: an instance attribute
(``self._nconns = min_size``) exists only in the code that sets and reads
it. That code's names are read from the compiled functions (``co_names``, and
the strings of a ``getattr(self, "_pool")``): no source needed, about 1 ms.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from collections.abc import Iterator
from importlib import metadata
from typing import Any

__all__ = ["Names", "missing", "require"]

#: ``(owner, names)`` pairs: *owner* is the dotted path of a class or a
#: module ("psycopg_pool.pool.ConnectionPool", "psycopg_pool.base").
Names = tuple[tuple[str, tuple[str, ...]], ...]

_DISTRIBUTION = "psycopg-forksafe"


def missing(names: Names) -> list[str]:
    """Return the names in *names* that are not there (``"Owner.name"`` each)."""
    absent = []
    known: dict[str, frozenset[str]] = {}
    for owner_path, attributes in names:
        owner = _resolve(owner_path)
        if owner is None:
            absent.append(owner_path)
            continue
        where = owner_path
        used: frozenset[str] = frozenset()
        if isinstance(owner, type):
            where = owner.__name__
            used = known.get(owner_path) or known.setdefault(
                owner_path, _code_names(owner)
            )
        for name in attributes:
            if not hasattr(owner, name) and name not in used:
                absent.append(f"{where}.{name}")
    return absent


def require(distribution: str, names: Names, user: str) -> None:
    """Raise ImportError unless every name in *names* exists.

    *distribution* is the package that defines them (``psycopg-pool``);
    *user* the module that relies on them, named in the message.
    """
    absent = missing(names)
    if not absent:
        return
    module = distribution.replace("-", "_")
    version = getattr(sys.modules.get(module), "__version__", None)
    if version is None:
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            version = "(unknown version)"
    verified = _verified(distribution)
    raise ImportError(
        f"{_DISTRIBUTION} does not work with {module} {version}: {user} relies on"
        f" {module}'s private names {', '.join(absent)}, which this version does"
        f" not have. Verified: {verified}. Install a version in that range"
        f" (pip install '{verified}'), or report it to {_DISTRIBUTION}'s"
        " maintainers with this message"
    )


def _resolve(path: str) -> Any:
    """Return the module or class at dotted *path*, or None if there is none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part, None)
            if found is None:
                return None
        return found
    return None


def _code_names(cls: type[Any]) -> frozenset[str]:
    """Return the names the code of *cls*, and of its bases from its package, uses."""
    package = cls.__module__.partition(".")[0]
    found: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] != package:
            continue
        found.update(getattr(klass, "__annotations__", {}))
        for value in vars(klass).values():
            for code in _codes(value):
                found.update(code.co_names)
                found.update(c for c in code.co_consts if isinstance(c, str))
    return frozenset(found)


def _codes(value: Any) -> Iterator[types.CodeType]:
    value = getattr(value, "__func__", value)  # a classmethod's, staticmethod's
    functions = [value]
    if isinstance(value, property):
        functions = [value.fget, value.fset, value.fdel]
    for function in functions:
        code = getattr(function, "__code__", None)
        if isinstance(code, types.CodeType):
            yield from _nested(code)


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


def _verified(distribution: str) -> str:
    """Return the requirement on *distribution* that setup.cfg gives."""
    try:
        requires = metadata.requires(_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        requires = []
    pattern = re.compile(rf"{re.escape(distribution)}\s*[<>=!~]", re.IGNORECASE)
    for requirement in requires:
        if pattern.match(requirement) and "extra" not in requirement:
            return requirement.replace(" ", "")
    return f"the {distribution} range in {_DISTRIBUTION}'s setup.cfg"
