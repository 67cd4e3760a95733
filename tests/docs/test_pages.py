"""README.rst and docs/ stay true: complete tables and reference, shipped settings."""

from __future__ import annotations

import importlib
import json
import re

import pytest

from flask_pgpool.config import SETTINGS
from pgpool_core.ops.snippets import read_snippet
from tests.conftest import REPO
from tests.harness.interpreter import run_python

README = (REPO / "README.rst").read_text()
DOCS = REPO / "docs"

#: The modules whose __all__ is the public API, which docs/api.rst documents.
PUBLIC_MODULES = [
    "pgpool_core",
    "pgpool_core.servers.gunicorn",
    "pgpool_core.servers.uwsgi",
    "pgpool_core.servers.celery",
    "pgpool_core._green",
    "pgpool_core.ops.snippets",
    "pgpool_core.metrics.otel",
    "pgpool_core.metrics.prometheus",
    "pgpool_core.ops.health",
    "flask_pgpool",
    "django_pgpool",
    "django_pgpool.base",
    "django_pgpool.middleware",
    "django_pgpool.apps",
    "django_pgpool.health",
]


def indented(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.splitlines())


@pytest.mark.parametrize("server", ["uwsgi", "gunicorn", "postgresql"])
def test_servers_page_shows_the_shipped_settings(server: str) -> None:
    text = read_snippet(server, "flask")
    assert indented(text) in (DOCS / "servers.rst").read_text()


def test_readme_first_screen_is_install_and_both_quick_starts() -> None:
    first_screen = "\n".join(README.splitlines()[:60])
    assert 'pip install ".[binary,flask]"' in first_screen
    assert "pgpool.init_app(app)" in first_screen
    assert '"ENGINE": "django_pgpool"' in first_screen
    # Issue 26: a newcomer's two commands, what they need and how long they take.
    assert re.search(r"^    make demo +# .*~70 s", first_screen, re.MULTILINE)
    assert re.search(r"^    make test +# .*~20 min", first_screen, re.MULTILINE)
    assert "apt-get install postgresql build-essential python3-dev" in first_screen
    assert "pgbouncer" in first_screen and "Python 3.12" in first_screen
    assert re.search(r'pip install "\.\[binary,flask,(gunicorn|uwsgi)\]"', README)
    # A command that may run nothing is not offered to a newcomer.
    assert "make conformance" not in README


def test_readme_has_no_relative_links_or_images() -> None:
    """The package index shows README.rst without the repository's files."""
    assert ".. image::" not in README
    assert ".. figure::" not in README
    for target in re.findall(r"`[^`]*<([^>]+)>`_", README):
        assert target.startswith("https://"), target


def test_ci_runs_the_documented_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    assert "    make test" in (DOCS / "development.rst").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: .*\bdocs\b", makefile, re.MULTILINE)


def test_flask_settings_table_lists_every_setting() -> None:
    page = (DOCS / "configuration.rst").read_text()
    table = page[page.index(".. _flask-settings:") :]
    listed = set(re.findall(r"^``PGPOOL_(\w+)``", table, re.MULTILINE))
    assert listed == SETTINGS


# Run in a fresh interpreter: importing pgpool_core.servers.gunicorn marks the process
# that imports it as a forking master.
_UNDOCUMENTED = """
import importlib, json, re, sys

api, modules = sys.argv[1], json.loads(sys.argv[2])
documented = {}
for directive, name in re.findall(r"^\\.\\. auto(\\w+):: (\\S+)$", api, re.M):
    if directive == "module":
        documented[name] = importlib.import_module(name)
    else:
        module, _, attribute = name.rpartition(".")
        documented[name] = getattr(importlib.import_module(module), attribute)
ids = {id(obj) for obj in documented.values()}
missing = []
for module_name in modules:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        full, obj = f"{module_name}.{name}", getattr(module, name)
        # Documented by its own name, or as the same object under another
        # (flask_pgpool.ConfigurationError is pgpool_core's); a constant by name.
        constant = isinstance(obj, (str, int, frozenset, dict))
        if full not in documented and (constant or id(obj) not in ids):
            missing.append(full)
print(json.dumps(missing))
"""


def test_api_reference_documents_every_public_name() -> None:
    output = run_python(
        _UNDOCUMENTED, (DOCS / "api.rst").read_text(), json.dumps(PUBLIC_MODULES)
    )
    assert json.loads(output) == [], "not in docs/api.rst"


@pytest.mark.parametrize("package", ["pgpool_core", "flask_pgpool", "django_pgpool"])
def test_version_is_the_installed_distributions(package: str) -> None:
    from importlib.metadata import version

    assert importlib.import_module(package).__version__ == version("psycopg-forksafe")
    assert f".. autodata:: {package}.__version__" in (DOCS / "api.rst").read_text()
