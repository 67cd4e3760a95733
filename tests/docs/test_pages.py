"""README.rst and docs/ stay true: complete tables and reference, shipped settings."""

from __future__ import annotations

import importlib
import re

import pytest

from flask_pgpool.config import SETTINGS
from tests.conftest import REPO

README = (REPO / "README.rst").read_text()
DOCS = REPO / "docs"

#: The modules whose __all__ is the public API, which docs/api.rst documents.
PUBLIC_MODULES = [
    "pgpool_core",
    "pgpool_core.gunicorn",
    "pgpool_core.uwsgi",
    "pgpool_core.celery",
    "pgpool_core.snippets",
    "flask_pgpool",
    "django_pgpool",
    "django_pgpool.base",
    "django_pgpool.middleware",
    "django_pgpool.apps",
]


def indented(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.splitlines())


@pytest.mark.parametrize(
    "name", ["uwsgi-flask.ini", "gunicorn-flask.conf.py", "postgresql.conf"]
)
def test_servers_page_shows_the_shipped_settings(name: str) -> None:
    text = (REPO / "pgpool_core" / "snippets" / name).read_text()
    assert indented(text) in (DOCS / "servers.rst").read_text()


def test_readme_first_screen_is_install_and_both_quick_starts() -> None:
    first_screen = "\n".join(README.splitlines()[:60])
    assert 'pip install ".[binary,flask]"' in first_screen
    assert "pgpool.init_app(app)" in first_screen
    assert '"ENGINE": "django_pgpool"' in first_screen


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


def documented() -> dict[str, object]:
    """Map each name docs/api.rst documents (``.. autoX:: name``) to its object."""
    api = (DOCS / "api.rst").read_text()
    found = {}
    for directive, name in re.findall(r"^\.\. auto(\w+):: (\S+)$", api, re.MULTILINE):
        if directive == "module":
            found[name] = importlib.import_module(name)
            continue
        module_name, _, attribute = name.rpartition(".")
        found[name] = getattr(importlib.import_module(module_name), attribute)
    return found


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_api_reference_documents_every_public_name(module_name: str) -> None:
    objects = documented()
    module = importlib.import_module(module_name)
    ids = {id(obj) for obj in objects.values()}
    for name in module.__all__:
        full = f"{module_name}.{name}"
        obj = getattr(module, name)
        # Documented by its own name, or as the same object under another
        # (flask_pgpool.ConfigurationError is pgpool_core's); a constant by name.
        assert full in objects or (
            not isinstance(obj, str | int | frozenset | dict) and id(obj) in ids
        ), f"{full} is not in docs/api.rst"


@pytest.mark.parametrize("package", ["pgpool_core", "flask_pgpool", "django_pgpool"])
def test_version_is_the_installed_distributions(package: str) -> None:
    from importlib.metadata import version

    assert importlib.import_module(package).__version__ == version("psycopg-forksafe")
    assert f".. autodata:: {package}.__version__" in (DOCS / "api.rst").read_text()
