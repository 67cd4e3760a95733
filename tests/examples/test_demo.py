"""``make demo`` shows the bug and the fix (its own PostgreSQL, real uWSGI)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.servers


def test_demo_shows_the_bug_and_the_fix() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DEMO_SECONDS"] = "3"
    proc = subprocess.run(
        [sys.executable, str(REPO / "example_projects" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output

    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
            rows[" ".join(parts[:-2])] = (int(parts[-2]), int(parts[-1]))
    naive_failed, fixed_failed = rows["failed"]
    assert naive_failed > 0, output
    assert fixed_failed == 0, output
    assert rows["workers answering"][1] >= 2, output
    assert rows["backends shared by workers"][1] == 0, output
    assert rows['"bad record mac" in server log'][1] == 0, output
    assert "[demo] stopping PostgreSQL" in output
