"""The test harness cleans up after a run that is killed from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

# Starts a throwaway cluster, says where, then waits to be killed.
STARTER = """
import json, sys, time
from tests.harness.postgres import start_cluster
server = start_cluster()
pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
print(json.dumps({"root": str(server.datadir.parent), "postmaster": pid}), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cluster_stops_when_its_test_run_is_killed() -> None:
    """SIGKILL runs no finalizer: the harness's watchdog stops the cluster."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STARTER],
        cwd=REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        root, postmaster = Path(started["root"]), started["postmaster"]
        assert alive(postmaster)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run's whole process group
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    deadline = time.monotonic() + 30
    while (alive(postmaster) or root.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(postmaster), "the cluster outlived the killed run"
    assert not root.exists(), "the cluster's files outlived the killed run"
