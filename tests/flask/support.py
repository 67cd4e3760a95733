"""Helpers for the Flask tests: the real ``flask`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from tests.conftest import REPO

#: The ``flask`` command of this environment.
FLASK = os.path.join(os.path.dirname(sys.executable), "flask")


def run_flask(
    app: str, *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app APP ARGS...`` from the repository (as run_project does
    for Django's ``manage.py``, tests.django.support)."""
    return subprocess.run(
        [FLASK, "--app", app, *args],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
