"""Python code run in a fresh interpreter, from the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from tests.conftest import REPO


def run_python(
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    warnings_as_errors: bool = False,
) -> str:
    """Run ``python -c CODE ARGS...``; fail unless it exits 0; return its output.

    *env* goes on top of this process's environment; *warnings_as_errors*
    adds ``-W error``. It may take a minute at most.
    """
    flags = ["-W", "error"] if warnings_as_errors else []
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, **env} if env is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
