"""The test harness cleans up after a run that is killed from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# Starts a throwaway cluster (and a standby of it), says where, then waits
# to be killed.
STARTER = """
import json, sys, time
from tests.harness.postgres import start_cluster, start_standby
servers = [start_cluster()]
if sys.argv[1] == "standby":
    servers.append(start_standby(servers[0]))
print(json.dumps([
    {
        "root": str(server.datadir.parent),
        "postmaster": int((server.datadir / "postmaster.pid").read_text().split()[0]),
    }
    for server in servers
]), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("clusters", ["primary", "standby"])
def test_cluster_stops_when_its_test_run_is_killed(clusters: str) -> None:
    """SIGKILL runs no finalizer: the harness's watchdogs stop the clusters."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STARTER, clusters],
        cwd=REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        roots = [Path(server["root"]) for server in started]
        postmasters = [server["postmaster"] for server in started]
        assert all(alive(pid) for pid in postmasters)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run's whole process group
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def left() -> list[object]:
        return [pid for pid in postmasters if alive(pid)] + [
            root for root in roots if root.exists()
        ]

    deadline = time.monotonic() + 30
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in postmasters if alive(pid)], "a cluster outlived the run"
    assert not [root for root in roots if root.exists()], "cluster files outlived it"
