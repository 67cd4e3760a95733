"""README.rst stays true: its settings are the shipped ones, its commands exist."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

README = (REPO / "README.rst").read_text()


def indented(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.splitlines())


@pytest.mark.parametrize(
    "name", ["uwsgi-flask.ini", "gunicorn-flask.conf.py", "postgresql.conf"]
)
def test_readme_shows_the_shipped_settings(name: str) -> None:
    text = (REPO / "pgpool_core" / "snippets" / name).read_text()
    assert indented(text) in README


def test_quick_start_commands_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"    make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.MULTILINE)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
