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
        if len(parts) >= 3 and parts[-1].isdigit():
            rows[" ".join(parts[:-2])] = (parts[-2], int(parts[-1]))
    # The plain pool: every worker hung (n/a), or requests failed and the
    # workers held the master's connections.
    plain_requests, requests = rows["requests"]
    if plain_requests != "n/a":
        assert int(rows["succeeded"][0]) < int(plain_requests), output
        assert int(rows["connections shared by 2+ processes"][0]) > 0, output
    # flask_pgpool: every request succeeded, in several workers, nothing shared.
    assert requests > 0
    assert rows["succeeded"][1] == requests, output
    for row in ("failed: no answer in 3 s", "failed: HTTP 5xx"):
        assert rows[row][1] == 0, output
    assert rows["workers answering"][1] >= 2, output
    assert rows["connections shared by 2+ processes"][1] == 0, output
    assert rows['"bad record mac" in server log'][1] == 0, output
    # Explained, concluded, and a next step.
    assert "What happened:" in proc.stdout
    assert "In short: a pool made before the fork" in proc.stdout
    assert "Next: docs/quickstart.rst" in proc.stdout
    assert "[demo] stopping PostgreSQL" in output
