"""The version matrix and Django's own test suite, as nox sessions.

``nox -l`` lists them; ``nox -s NAME`` runs one. ``make test`` (CI) runs the
``floor`` and ``latest`` rows; the rest are for developers:

- ``tests``: every supported Python x Django x {floor, latest} of the other
  dependencies: ``floor`` is each requirement at the lowest version setup.cfg
  allows that installs and works on that Python (floor_versions()),
  ``latest`` the newest release.
- ``floor`` and ``latest``: Python 3.10 with every floor, Python 3.13 with
  every latest (the first and the last of ``tests``).
- ``django_suite``: Django's own test suite, Django's backend against ours
  (tests/django_suite/run.py), on Django 5.2 and 6.x.

A row runs tests/core, tests/flask and tests/django without the servers
(``-m "not servers and not slow"``), each session in its own virtualenv;
arguments after ``--`` go to pytest instead (``nox -s floor -- tests/core``).

Interpreters: nox looks for ``python3.X`` on PATH. The pyenv versions
(``$PYENV_ROOT/versions/3.X.*``) are put first, since pyenv's own shims fail
for a version that is not selected.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Django 6 needs Python 3.12.
DJANGO_PYTHONS = {"5.2": PYTHONS, "6": ["3.12", "3.13"]}


def floor_versions(python: str, django: str) -> list[str]:
    """The lowest versions setup.cfg allows that install and work on *python*."""
    recent = python in ("3.12", "3.13")
    return [
        "Django==5.2" if django == "5.2" else "Django==6.0",
        # On Python 3.12+, Flask 2.3.3, "Python 3.12 compatibility" (2.3.0
        # calls pkgutil.get_loader, whose DeprecationWarning fails the tests)
        # with its own lowest Werkzeug, 2.3.7; else Flask 2.3.0 with its
        # lowest, 2.3.0 (Flask 2.3's test client reads werkzeug.__version__,
        # which Werkzeug 3.1 removed).
        "Flask==2.3.3" if recent else "Flask==2.3.0",
        "Werkzeug==2.3.7" if recent else "Werkzeug==2.3.0",
        # The core reads the client-side state psycopg 3.3 keeps on a
        # connection (and the messages libpq gives through it) to reset and
        # mask it; 3.3.0 has wheels for every Python listed.
        "psycopg[binary]==3.3.0",
        # close_returns, which ForkSafePool passes, is new in 3.3.0.
        "psycopg-pool==3.3.0",
        # The extras the tests import (EXTRAS below), at their floors.
        "django-health-check==4.8.0",
        "prometheus-client==0.20.0",
    ]


def latest_versions(django: str) -> list[str]:
    """The newest versions setup.cfg allows."""
    return [
        "Django>=5.2,<6" if django == "5.2" else "Django>=6,<7",
        "Flask>=2.3,<4",
        "psycopg[binary]>=3.3,<3.4",
        "psycopg-pool>=3.3,<3.4",
    ]


# pytest and its plugins: pyproject.toml's dependency group (pip 25.1+).
TEST_GROUP = ["--group", "test"]
# The extras whose modules tests/django and the metrics tests import
# (django_pgpool.health, pgpool_core.metrics.prometheus).
EXTRAS = ".[health-check,prometheus]"
ROW_TESTS = ["tests/core", "tests/flask", "tests/django"]
ROW_MARKERS = "not servers and not slow"

nox.options.sessions = ["floor", "latest"]
nox.options.error_on_missing_interpreters = True


def _put_pyenv_first() -> None:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = []
    for version in PYTHONS:
        builds = sorted(
            (root / "versions").glob(f"{version}.*/bin/python{version}"),
            key=lambda p: [int(n) for n in p.parts[-3].split(".") if n.isdigit()],
        )
        if builds:
            found.append(str(builds[-1].parent))
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_put_pyenv_first()


def _run_row(session: nox.Session, django: str, deps: str) -> None:
    python = str(session.python)
    versions = (
        floor_versions(python, django) if deps == "floor" else latest_versions(django)
    )
    session.install("-e", EXTRAS, *versions, *TEST_GROUP)
    session.run("python", "-m", "pip", "freeze", "--exclude-editable", silent=False)
    args = session.posargs or [*ROW_TESTS, "-m", ROW_MARKERS]
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *args)


@nox.session
@nox.parametrize(
    "python,django",
    [
        (python, django)
        for django, pythons in DJANGO_PYTHONS.items()
        for python in pythons
    ],
)
@nox.parametrize("deps", ["floor", "latest"])
def tests(session: nox.Session, django: str, deps: str) -> None:
    """The matrix: Python x Django x the floors or the latest of the others."""
    _run_row(session, django, deps)


@nox.session(python="3.10")
def floor(session: nox.Session) -> None:
    """The oldest of everything: Python 3.10, Django 5.2.0, each floor (CI)."""
    _run_row(session, "5.2", "floor")


@nox.session(python="3.13")
def latest(session: nox.Session) -> None:
    """The newest of everything: Python 3.13, the latest Django and the rest (CI)."""
    _run_row(session, "6", "latest")


# Not Python 3.12.1: its unittest counts no skipped test in testsRun, by which
# Django's parallel runner finds the test each result is for, so failures
# are reported under the wrong names (fixed in 3.12.2).
@nox.session
@nox.parametrize("python,django", [("3.11", "5.2"), ("3.13", "6")])
def django_suite(session: nox.Session, django: str) -> None:
    """Django's own suite, Django's backend against ours, the wide module set."""
    session.install("-e", EXTRAS, *latest_versions(django), *TEST_GROUP)
    args = session.posargs or ["--backend", "both", "--modules", "wide"]
    session.run("python", "-m", "tests.django_suite.run", *args)
