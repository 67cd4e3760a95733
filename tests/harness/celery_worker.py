"""A real Celery worker for the tests, in its own process group.

Like the servers of servers.py, it is stopped through its pid (the group
leader's, which is the worker's main process) and its output goes to a file.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .servers import start_process_group, stop_process_group

READY = re.compile(r"\S+@\S+ ready\.")


@dataclass
class CeleryWorker:
    """A ``celery worker`` process group started by start_worker()."""

    proc: subprocess.Popen[bytes]
    logfile: Path

    @property
    def pid(self) -> int:
        """The worker's main process (the parent of prefork children)."""
        return self.proc.pid

    def output(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the worker; return its exit code.

        SIGTERM goes to the main process only: that is Celery's warm shutdown,
        in which the children finish and exit on their own (and send
        worker_process_shutdown). A prefork child dies at once on SIGTERM, so
        the group gets SIGKILL only for what is left afterwards.
        """
        return stop_process_group(self.proc, timeout, term_leader_only=True)


def start_worker(
    app: str,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    pool: str = "prefork",
    concurrency: int = 4,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 60.0,
) -> CeleryWorker:
    """Start ``celery -A app worker``; return once it logs that it is ready."""
    logfile = Path(tempfile.mkstemp(prefix="pgpool-celery-", suffix=".log")[1])
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--hostname",
        "pgpool-test@%h",
        # They need a broadcast exchange, and these tests need none of them.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *extra_args,
    ]
    proc = start_process_group(cmd, cwd=cwd, env=env, logfile=logfile)
    worker = CeleryWorker(proc, logfile)
    deadline = time.monotonic() + ready_timeout
    while not READY.search(worker.output()):
        if proc.poll() is not None:
            worker.stop()
            raise RuntimeError(
                f"celery worker exited with {proc.returncode} before it was"
                f" ready:\n{worker.output()}"
            )
        if time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(
                f"celery worker not ready in {ready_timeout} s:\n{worker.output()}"
            )
        time.sleep(0.1)
    return worker
