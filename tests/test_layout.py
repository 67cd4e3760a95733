"""The packages' import graph: no cycle; the mission's modules apart from the rest.

Read from the source with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` of one of the project's modules, at module level and
inside functions and methods alike (a function-level import hides a cycle
until the function runs), resolved to the module it loads (``from . import
x`` loads ``pkg.x`` if that is a module). Imports under ``if TYPE_CHECKING:``
are left out: they never run.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from tests.harness.interpreter import run_python

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pgpool_core", "flask_pgpool", "django_pgpool")

#: Edges that other branches of the same redesign remove (issue 22): delete
#: each line once its branch is merged; the test then holds without them.
KNOWN_EDGES: set[tuple[str, str]] = {
    # Not the process branch's concern (the masking): _libpq.Setting.__repr__
    # imports _secrets, which imports _libpq at module level.
    ("pgpool_core._libpq", "pgpool_core._secrets"),
}

#: The mission's modules (the pool, its process lifecycle, the psycopg_pool
#: subclass, the reset, the sizing it logs at start) and the periphery they
#: must not import.
MISSION = (
    "pgpool_core.pool",
    "pgpool_core._process",
    "pgpool_core._psycopg_pool",
    "pgpool_core._reset",
    "pgpool_core._sizing",
)
PERIPHERY = ("pgpool_core.metrics", "pgpool_core.ops", "pgpool_core.servers")

#: Imports of the periphery by the mission's modules that other branches
#: remove: delete each line once its branch is merged.
KNOWN_PERIPHERY_IMPORTS: set[tuple[str, str]] = set()

#: The one way the core reaches the periphery: the event seam loads the
#: OpenTelemetry observer by name when opentelemetry-api is installed, and the
#: observer subscribes itself (docs/metrics.rst).
CORE_LOADS_BY_NAME = {("pgpool_core._events", "pgpool_core.metrics.otel")}

#: The periphery's first import paths, which the configurations written for the
#: previews use (``import pgpool_core.celery``): each is its new home, imported.
FIRST_PATHS = {
    "pgpool_core.gunicorn": "pgpool_core.servers.gunicorn",
    "pgpool_core.uwsgi": "pgpool_core.servers.uwsgi",
    "pgpool_core.celery": "pgpool_core.servers.celery",
    "pgpool_core.health": "pgpool_core.ops.health",
}


def _modules() -> dict[str, Path]:
    """Return every module of the packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Return the imports that can run: all but those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def core_modules() -> list[str]:
    """Return the core's modules: every module of pgpool_core but the periphery
    (and the periphery's first import paths, :data:`FIRST_PATHS`)."""
    return [
        name
        for name in _modules()
        if name.split(".")[0] == "pgpool_core"
        and not name.startswith(PERIPHERY)
        and name not in FIRST_PATHS
    ]


def loaded_by_name(path: Path) -> set[str]:
    """Return the modules *path* loads by name: ``importlib.import_module("x")``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def import_graph() -> dict[str, set[str]]:
    """Return, for each module, the project's modules its imports load."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                bases = [alias.name for alias in node.names]
                members: list[str] = []
            else:
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                bases = [base]
                members = [f"{base}.{alias.name}" for alias in node.names]
            names_taken = [m for m in members if m not in modules]
            for target in bases + members:
                # `import a.b.c` loads a, a.b and a.b.c.
                parts = target.split(".")
                for end in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:end])
                    if prefix not in modules or prefix == name:
                        continue
                    # A package this module is in was imported before it: it
                    # depends on it only for a name taken from it, not for
                    # `from . import submodule`.
                    if name.startswith(prefix + ".") and not any(
                        m.rpartition(".")[0] == prefix for m in names_taken
                    ):
                        continue
                    targets.add(prefix)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one cycle of *graph* (its modules, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_reader_sees_function_level_imports_and_skips_type_checking() -> None:
    """The reader itself: what the other tests rely on it to see, and not see."""
    graph = import_graph()
    # `from . import x` loads the module x; relative imports resolved.
    assert "pgpool_core._green" in graph["pgpool_core._process"]
    assert "pgpool_core" in graph["django_pgpool.base"]
    assert "pgpool_core" not in graph["pgpool_core._process"]  # from . import _green
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from . import a\nelse:\n    from . import b\n"
        "def f():\n    from . import c\n"
    )
    names = [alias.name for node in _imports(tree) for alias in node.names]
    assert names == ["TYPE_CHECKING", "b", "c"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_function_level_imports_included() -> None:
    """No module of the three packages imports, through others, itself.

    A cycle hidden in function-level imports (``_process -> _psycopg_pool ->
    metrics -> _process``, issue 22) works only as long as no one moves an
    import to the top; it also means neither module can be read alone.
    """
    graph = import_graph()
    for edge in KNOWN_EDGES:
        assert edge[1] in graph[edge[0]], f"{edge} is gone: remove it from KNOWN_EDGES"
        graph[edge[0]].discard(edge[1])
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_mission_imports_no_periphery() -> None:
    """The pool, its lifecycle, the psycopg_pool subclass and the reset import no
    metrics, operator tooling or server hooks: those depend on them, not back."""
    graph = import_graph()
    found = {
        (module, target)
        for module in MISSION
        for target in graph[module]
        if target.startswith(PERIPHERY)
    }
    gone = KNOWN_PERIPHERY_IMPORTS - found
    assert not gone, f"gone: remove them from KNOWN_PERIPHERY_IMPORTS: {sorted(gone)}"
    assert sorted(found - KNOWN_PERIPHERY_IMPORTS) == []


def test_the_core_imports_no_periphery() -> None:
    """No core module (pgpool_core, pool, errors, the underscore modules) imports
    the metrics, the operator tooling or the server hooks, at module level or in
    a function; the one exception is the event seam loading the OpenTelemetry
    observer by name (:data:`CORE_LOADS_BY_NAME`)."""
    graph = import_graph()
    modules = _modules()
    core = core_modules()
    assert "pgpool_core" in core and "pgpool_core._sizing" in core
    assert "pgpool_core.ops.capacity" not in core
    imported = sorted(
        (module, target)
        for module in core
        for target in graph[module]
        if target.startswith(PERIPHERY)
    )
    assert imported == []
    by_name = {
        (module, target)
        for module in core
        for target in loaded_by_name(modules[module])
        if target.startswith(PERIPHERY)
    }
    assert by_name == CORE_LOADS_BY_NAME


def test_the_first_import_paths_are_their_homes() -> None:
    """``import pgpool_core.celery`` (and the others of :data:`FIRST_PATHS`) gives
    the objects of the module's home, and imports nothing else of the package."""
    graph = import_graph()
    for old, home in FIRST_PATHS.items():
        assert graph[old] - {home.rpartition(".")[0]} == {home}, old
    code = (
        "import importlib, json, sys\n"
        f"paths = {FIRST_PATHS!r}\n"
        "same = {}\n"
        "for old, home in paths.items():\n"
        "    a, b = importlib.import_module(old), importlib.import_module(home)\n"
        "    same[old] = sorted(a.__all__) == sorted(b.__all__) and all(\n"
        "        getattr(a, n) is getattr(b, n) for n in b.__all__)\n"
        "from pgpool_core import health\n"
        "same['from pgpool_core import health'] = callable(health.check_pool)\n"
        "print(json.dumps(same))\n"
    )
    result = json.loads(run_python(code))
    assert result == dict.fromkeys(
        [*FIRST_PATHS, "from pgpool_core import health"], True
    )
