"""Helpers of the Django tests: DATABASES entries, aliases, the project's commands."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from typing import Any

from django.db.utils import ConnectionHandler

from tests.conftest import REPO
from tests.harness.postgres import PgServer

MANAGE = str(REPO / "tests" / "django" / "manage.py")

_aliases = itertools.count(1)


def database_settings(pg: PgServer, **overrides: Any) -> dict[str, Any]:
    """Return a DATABASES entry for the cluster's test database, pooled."""
    entry: dict[str, Any] = {
        "ENGINE": "django_pgpool",
        "NAME": pg.dbname,
        "USER": pg.user,
        "PASSWORD": pg.password,
        "HOST": pg.host,
        "PORT": str(pg.port),
        "OPTIONS": {
            "sslmode": "require",
            "pool": {"min_size": 1, "max_size": 1, "timeout": 5},
        },
    }
    options = overrides.pop("OPTIONS", {})
    entry.update(overrides)
    entry["OPTIONS"] = {**entry["OPTIONS"], **options}
    return entry


def load_alias(settings_dict: dict[str, Any], alias: str | None = None) -> Any:
    """Load a DATABASES entry as Django does; return its connection wrapper."""
    alias = alias or f"pgpool_{next(_aliases)}"
    return ConnectionHandler({"default": {}, alias: settings_dict})[alias]


def run_project(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run a command of the test project (``python -m ...`` or manage.py)."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PYTHONWARNINGS": "error",
        **env,
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
