"""psycopg's and psycopg_pool's private names: listed, checked, used in two modules.

pgpool_core overrides and reads names psycopg_pool and psycopg do not
document: psycopg_pool's in ``pgpool_core/_psycopg_pool.py`` only, psycopg's
in ``pgpool_core/_reset.py`` only, each listed in one tuple that the module
checks at import (``pgpool_core/_fence.py``). A release that renamed one
fails the import with one error naming it, the installed version, the range
verified and the fix (proven here against a copy of the real package with
names renamed, in a fresh interpreter). The lists are complete: a private
name of theirs that a fence module uses and does not list, or that another
module uses at all, fails these tests.
"""

from __future__ import annotations

import ast
import functools
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pytest
from psycopg._preparing import PrepareManager
from psycopg._typeinfo import TypesRegistry
from psycopg.adapt import AdaptersMap

from pgpool_core import _fence, _psycopg_pool, _reset

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pgpool_core", "flask_pgpool", "django_pgpool")
FENCES = {
    "pgpool_core/_psycopg_pool.py": _psycopg_pool.PSYCOPG_POOL_NAMES,
    "pgpool_core/_reset.py": _reset.PSYCOPG_NAMES,
}
# Names a fence module reads only where the installed version has them.
WHERE_PRESENT = {"pgpool_core/_reset.py": _reset.PSYCOPG_NAMES_WHERE_PRESENT}
# Modules that still touch a private name and are on their way out of it
# (none today; the test below fails when one no longer does).
PENDING: set[str] = set()


def _classes_of(*modules: Any) -> list[type[Any]]:
    return [
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == module.__name__
    ]


def _private_names(classes: list[type[Any]]) -> frozenset[str]:
    """The names starting with one underscore that *classes* have or their code uses."""
    names: set[str] = set()
    for cls in classes:
        names.update(dir(cls))
        names.update(_fence._code_names(cls))
    return frozenset(
        n
        for n in names
        if n.startswith("_") and not n.startswith("__") and not n.startswith("_pgpool")
    )


# What psycopg_pool's pool and psycopg's connection, cursors, errors,
# prepared statements and adapters have or name in their code; the private
# names of the module psycopg waits with.
POOL_PRIVATE = _private_names(_classes_of(psycopg_pool.pool, psycopg_pool.base))
PSYCOPG_PRIVATE = _private_names(
    [
        psycopg.Connection,
        psycopg.Cursor,
        psycopg.ServerCursor,
        psycopg.Error,
        PrepareManager,
        AdaptersMap,
        TypesRegistry,
    ]
) | {n for n in vars(psycopg.waiting) if n.startswith("_") and not n.startswith("__")}


def _module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    return ".".join(relative.parts).removesuffix(".__init__")


@functools.cache
def _parsed(path: Path) -> tuple[ast.Module, dict[str, str]]:
    """The module at *path* and where each name it imports comes from (dotted)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).rpartition(".")[0]
    if path.name == "__init__.py":
        package = _module_name(path)
    origins: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                origins[alias.asname or alias.name.partition(".")[0]] = (
                    alias.name if alias.asname else alias.name.partition(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                origins[alias.asname or alias.name] = f"{base}.{alias.name}"
    return tree, origins


def _extends_theirs(path: Path, base: ast.expr) -> bool:
    """Whether class base *base*, in the module at *path*, is psycopg's or
    psycopg_pool's, or a class of the package's that extends one (read from
    the source: importing the server hooks would mark this process a master)."""
    tree, origins = _parsed(path)
    parts = []
    while isinstance(base, ast.Attribute):
        parts.insert(0, base.attr)
        base = base.value
    if isinstance(base, ast.Subscript):  # Generic[T], ConnectionPool[CT]
        return _extends_theirs(path, base.value)
    if not isinstance(base, ast.Name):
        return True  # unknown: not ours
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == base.id and not parts:
            return any(_extends_theirs(path, b) for b in node.bases)
    dotted = ".".join([origins.get(base.id, base.id), *parts])
    top = dotted.partition(".")[0]
    if top in ("psycopg", "psycopg_pool"):
        return True
    if top in PACKAGES:
        module, _, name = dotted.rpartition(".")
        source = REPO / Path(*module.split("."))
        source = (
            source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
        )
        if source.exists():
            return _extends_theirs(source, ast.Name(name))
    return False


def _uses(path: Path, private: frozenset[str]) -> Iterator[tuple[int, str]]:
    """Yield (line, name) for each of *private* that the module at *path* uses.

    Attributes (``pool._nconns``, ``super()._connect``), names of methods
    defined in a class (an override), strings given to getattr() and its
    kind (``getattr(conn, "_pool")``). Not ``self._x`` in a class of the
    package's own that extends nothing of psycopg's: its own attribute.
    """

    def ours(node: ast.ClassDef, parent: ast.AST) -> bool:
        # A class made in a function may extend anything (its base a variable).
        return isinstance(parent, ast.Module) and not any(
            _extends_theirs(path, base) for base in node.bases
        )

    def walk(node: ast.AST, own: bool) -> Iterator[tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            inner = own
            if isinstance(child, ast.ClassDef):
                inner = ours(child, node)
                for item in child.body:
                    if (
                        isinstance(item, ast.FunctionDef)
                        and item.name in private
                        and not inner
                    ):
                        yield item.lineno, item.name
            elif isinstance(child, ast.FunctionDef) and not isinstance(
                node, ast.ClassDef | ast.FunctionDef
            ):
                inner = False  # a module's function: no self of ours
            if isinstance(child, ast.Attribute) and child.attr in private:
                target = child.value
                on_self = (
                    isinstance(target, ast.Name) and target.id in ("self", "cls")
                ) or (
                    isinstance(target, ast.Call)
                    and isinstance(target.func, ast.Name)
                    and target.func.id == "super"
                )
                if not (on_self and own):
                    yield child.lineno, child.attr
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(child.args) > 1
                and isinstance(child.args[1], ast.Constant)
                and child.args[1].value in private
            ):
                yield child.lineno, child.args[1].value
            yield from walk(child, inner)

    yield from walk(ast.parse(path.read_text()), False)


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def _fenced(names: _fence.Names) -> set[str]:
    return {name for _, group in names for name in group}


def _import_with(
    tmp_path: Path, package: str, renames: dict[str, str], version: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Import pgpool_core in a fresh interpreter with a copy of *package* first
    on sys.path, its source with each name in *renames* renamed (as a release
    that renamed them), and with *version* as its ``__version__``."""
    source = Path(importlib.import_module(package).__file__ or "").parent
    copy = tmp_path / package
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.rglob("*.py"):
        text = path.read_text()
        for old, new in renames.items():
            text = text.replace(old, new)
        if version is not None and path.name == "version.py":
            text = f'__version__ = "{version}"\n'
        path.write_text(text)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {package}, pgpool_core; print({package}.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error an import that failed ended with."""
    assert proc.returncode != 0, proc.stdout
    return " ".join(proc.stderr.strip().splitlines()[-1].split())


def test_a_psycopg_pool_release_without_a_name_fails_the_import(tmp_path: Path) -> None:
    """An overridden method and an attribute renamed: the import names both,
    the version, the range verified and the fix."""
    renames = {
        "_getconn_with_check_loop": "_getconn_checked",
        "_nconns": "_connections_count",
    }
    error = _error(_import_with(tmp_path, "psycopg_pool", renames, version="3.4.0"))
    assert error.startswith("ImportError: "), error
    assert "psycopg_pool 3.4.0" in error
    assert "ConnectionPool._getconn_with_check_loop" in error
    assert "ConnectionPool._nconns" in error
    assert "pgpool_core._psycopg_pool" in error
    assert ">=3.3" in error and "<3.4" in error  # setup.cfg's range
    assert "pip install 'psycopg-pool" in error
    assert "_expire_at" not in error  # only what is missing


def test_a_psycopg_release_without_a_connection_field_fails_the_import(
    tmp_path: Path,
) -> None:
    """A field of psycopg.Connection's instances, set in its ``__init__`` only,
    and one of its prepared statements' renamed: the import names them."""
    renames = {"_notifies_backlog": "_notifications", "_to_flush": "_flush_queue"}
    error = _error(_import_with(tmp_path, "psycopg", renames))
    assert error.startswith("ImportError: "), error
    assert f"psycopg {psycopg.__version__}" in error
    assert "Connection._notifies_backlog" in error
    assert "PrepareManager._to_flush" in error
    assert "pgpool_core._reset" in error
    assert "pip install 'psycopg" in error and "<3.4" in error


def test_a_psycopg_release_without_its_connect_selector_fails_the_import(
    tmp_path: Path,
) -> None:
    """``psycopg.waiting.DefaultSelector``, which a patched process replaces
    (pgpool_core._green): gone, the replacement would set a name nothing
    reads, and connects would block every greenlet; the import names it."""
    renames = {
        "import DefaultSelector": "import DefaultSelector as ConnectSelector",
        "with DefaultSelector()": "with ConnectSelector()",
    }
    error = _error(_import_with(tmp_path, "psycopg", renames))
    assert error.startswith("ImportError: "), error
    assert "psycopg.waiting.DefaultSelector" in error
    assert "pgpool_core._reset" in error


def test_the_copies_import_when_nothing_is_renamed(tmp_path: Path) -> None:
    """The copies the two tests above make are the ones imported, and work."""
    for package in ("psycopg_pool", "psycopg"):
        proc = _import_with(tmp_path / package, package, {})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(str(tmp_path / package)), proc.stdout


def test_every_fenced_name_exists_today() -> None:
    """Each listed name is found, the instance attributes in the code that sets
    them; a name that is not there is reported."""
    assert _fence.missing(_psycopg_pool.PSYCOPG_POOL_NAMES) == []
    assert _fence.missing(_reset.PSYCOPG_NAMES) == []
    # Found in the code, not as a class attribute:
    assert not hasattr(psycopg_pool.ConnectionPool, "_nconns")
    assert not hasattr(psycopg.Connection, "_notifies_backlog")
    assert _fence.missing(
        (
            ("psycopg.Connection", ("_prepared", "_no_such_field")),
            ("psycopg_pool.pool", ("AddConnection", "NoSuchTask")),
            ("psycopg_pool.pool.NoSuchClass", ("x",)),
        )
    ) == [
        "Connection._no_such_field",
        "psycopg_pool.pool.NoSuchTask",
        "psycopg_pool.pool.NoSuchClass",
    ]


@pytest.mark.parametrize(
    ("module", "private"),
    [
        ("pgpool_core/_psycopg_pool.py", POOL_PRIVATE),
        ("pgpool_core/_reset.py", PSYCOPG_PRIVATE),
    ],
)
def test_a_fence_lists_every_private_name_its_module_uses(
    module: str, private: frozenset[str]
) -> None:
    """Every private name of psycopg_pool's (psycopg's) that the module
    overrides or reads is in its fence's list."""
    uses = list(_uses(REPO / module, private))
    assert len(uses) > 10  # the scan sees them
    unlisted = sorted(
        {f"{line}: {name}" for line, name in uses}
        - {
            f"{line}: {name}"
            for line, name in uses
            if name in _fenced(FENCES[module])
            or name in _fenced(WHERE_PRESENT.get(module, ()))
        }
    )
    assert unlisted == []


def test_no_other_module_touches_a_private_name_of_theirs() -> None:
    """Outside the two fence modules, no module of the package overrides or
    reads a private name of psycopg_pool's pool or psycopg's connection."""
    private = POOL_PRIVATE | PSYCOPG_PRIVATE
    found = {}
    for path in _modules():
        relative = str(path.relative_to(REPO))
        if relative in FENCES:
            continue
        uses = sorted(set(_uses(path, private)))
        if relative in PENDING:
            assert uses, f"{relative} is fenced now: remove it from PENDING"
        elif uses:
            found[relative] = uses
    assert found == {}
