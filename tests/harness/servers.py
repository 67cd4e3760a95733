"""Real uWSGI and gunicorn servers for the tests, and a load generator.

Each server runs in its own process group, is stopped through its pid (the
group leader's), and its output goes to a file the test can read.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .postgres import free_port

BIN = Path(sys.executable).parent
#: A gunicorn config file that holds pgpool's worker hooks, and nothing else.
GUNICORN_HOOKS = Path(__file__).resolve().parent.parent / "apps" / "gunicorn_hooks.py"


@dataclass
class RunningServer:
    """A server process group started by start_server()."""

    kind: str
    proc: subprocess.Popen[bytes]
    port: int
    logfile: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.logfile.read_text(errors="replace")

    def get(self, path: str, timeout: float = 10.0) -> Response:
        return request("127.0.0.1", self.port, path, timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop the whole process group; return the leader's exit code."""
        # uWSGI (with die-on-term) and gunicorn both shut down on SIGTERM,
        # gracefully; SIGINT is uWSGI's and gunicorn's quick stop.
        return stop_process_group(self.proc, timeout)


def start_process_group(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    logfile: Path,
) -> subprocess.Popen[bytes]:
    """Start *cmd* leading a process group of its own, its output in *logfile*.

    *cwd* goes first on PYTHONPATH, *env* on top of this process's
    environment; stop it with :func:`stop_process_group`.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(cwd), full_env.get("PYTHONPATH", "")) if p
    )
    with open(logfile, "wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process_group(
    proc: subprocess.Popen[bytes], timeout: float, *, term_leader_only: bool = False
) -> int | None:
    """Stop the process group *proc* leads; return *proc*'s exit code.

    SIGTERM first (to the whole group, or to the leader only), SIGKILL to the
    group if the leader has not exited within *timeout*, and SIGKILL again for
    anything left behind by a leader that died on its own.
    """

    def signal_group(signum: int) -> None:
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    if proc.poll() is None:
        if term_leader_only:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            proc.wait(10)
    signal_group(signal.SIGKILL)
    return proc.returncode


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    elapsed: float = 0.0
    started: float = 0.0  # time.monotonic() when the request was sent

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    host: str, port: int, path: str, *, method: str = "GET", timeout: float = 10.0
) -> Response:
    """Send one HTTP request on a new connection; never raise."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        return Response(
            resp.status,
            body,
            {k.lower(): v for k, v in resp.getheaders()},
            elapsed=time.monotonic() - t0,
            started=t0,
        )
    except Exception as err:
        return Response(
            0, b"", error=repr(err), elapsed=time.monotonic() - t0, started=t0
        )
    finally:
        conn.close()


def start_server(
    kind: str,
    app: str,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    workers: int = 4,
    lazy_apps: bool = False,
    config: Path | None = None,
    extra_args: Sequence[str] = (),
    ready_path: str = "/health",
    ready_timeout: float = 60.0,
) -> RunningServer:
    """Start uWSGI or gunicorn serving *app* ("module:callable") in preload mode.

    uWSGI: ``--master --processes N`` (no lazy-apps unless asked);
    gunicorn: ``-w N --preload``. With *app* empty, the server takes everything
    but its address from *config* (an example's uwsgi.ini or gunicorn.conf.py).
    Returns once *ready_path* answers.
    """
    port = free_port()
    logfile = Path(tempfile.mkstemp(prefix=f"pgpool-{kind}-", suffix=".log")[1])
    if kind == "uwsgi":
        cmd = [
            str(BIN / "uwsgi"),
            "--http-socket", f"127.0.0.1:{port}",
            "--chdir", str(cwd),
            "--virtualenv", sys.prefix,
            "--strict",
            "--disable-logging",
        ]  # fmt: skip
        if config is not None:
            cmd[1:1] = ["--ini", str(config)]
        if app:
            module, _, callable_ = app.partition(":")
            cmd += [
                "--master",
                "--processes", str(workers),
                "--module", f"{module}:{callable_ or 'application'}",
                "--die-on-term",
                "--need-app",
                "--worker-reload-mercy", "10",
            ]  # fmt: skip
        if lazy_apps:
            cmd.append("--lazy-apps")
    elif kind == "gunicorn":
        cmd = [
            str(BIN / "gunicorn"),
            "--bind", f"127.0.0.1:{port}",
            "--chdir", str(cwd),
            "--no-control-socket",
        ]  # fmt: skip
        if config is not None:
            cmd += ["--config", str(config)]
        if app:
            cmd += [
                "--workers", str(workers),
                "--preload",
                "--graceful-timeout", "10",
                app,
            ]  # fmt: skip
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    cmd += list(extra_args)
    proc = start_process_group(cmd, cwd=cwd, env=env, logfile=logfile)
    server = RunningServer(kind, proc, port, logfile)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(
                f"{kind} exited with {proc.returncode} before answering:\n"
                + server.output()
            )
        if server.get(ready_path, timeout=2.0).status == 200:
            return server
        if time.monotonic() > deadline:
            output = server.output()
            server.stop()
            raise ServerNotAnswering(
                f"{kind} did not answer in {ready_timeout} s:\n{output}", output
            )
        time.sleep(0.1)


class ServerNotAnswering(RuntimeError):
    """A server started but answered nothing in time; ``output`` is its log."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output

    def workers_hung(self) -> bool:
        """Say if the master loaded the app and forked workers, none answering.

        What a pool whose threads ran in the master at fork can do to every
        worker (uWSGI forks without the GIL): a symptom, not a broken setup.
        """
        uwsgi = "WSGI app 0" in self.output and "spawned uWSGI worker" in self.output
        return uwsgi or "Booting worker" in self.output


@dataclass
class LoadResult:
    responses: list[Response]

    @property
    def failures(self) -> list[Response]:
        return [r for r in self.responses if not r.ok]

    def bodies(self) -> list[dict[str, Any]]:
        out = []
        for r in self.responses:
            if r.ok:
                try:
                    out.append(r.json())
                except ValueError:
                    pass
        return out

    def worker_pids(self) -> set[int]:
        return {b["pid"] for b in self.bodies() if "pid" in b}

    def shared_backends(self) -> dict[int, set[int]]:
        """Return each backend pid that answered for more than one worker."""
        seen: dict[int, set[int]] = {}
        for b in self.bodies():
            if "backend" in b:
                seen.setdefault(b["backend"], set()).add(b["pid"])
        return {backend: pids for backend, pids in seen.items() if len(pids) > 1}

    def summary(self) -> str:
        statuses = Counter(r.status for r in self.responses)
        errors = Counter(
            (r.error or r.body.decode(errors="replace"))[:200] for r in self.failures
        )
        return (
            f"{len(self.responses)} requests, {len(self.failures)} failed,"
            f" statuses {dict(statuses)}, workers {sorted(self.worker_pids())},"
            f" first errors {errors.most_common(3)}"
        )


def run_load(
    port: int,
    paths: Iterable[str],
    *,
    concurrency: int = 16,
    timeout: float = 10.0,
) -> LoadResult:
    """GET each of *paths*, *concurrency* at a time; collect the answers."""
    with ThreadPoolExecutor(concurrency) as executor:
        responses = list(
            executor.map(
                lambda p: request("127.0.0.1", port, p, timeout=timeout), paths
            )
        )
    return LoadResult(responses)


class LoadLoop:
    """Clients sending requests without pause until stop(), for fault tests.

    Each answer keeps its start time, so a test can tell the requests in
    flight at the moment of a fault from those sent after it.
    """

    def __init__(
        self,
        port: int,
        path: str,
        *,
        concurrency: int = 8,
        timeout: float = 10.0,
        max_requests: int = 100_000,
    ) -> None:
        self.responses: list[Response] = []
        self._port = port
        self._path = path
        self._timeout = timeout
        self._left = max_requests
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sending = threading.Event()
        self._sending.set()
        self._in_flight = 0
        self._threads = [
            threading.Thread(target=self._client, daemon=True)
            for _ in range(concurrency)
        ]

    def __enter__(self) -> LoadLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _client(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                if self._left <= 0:
                    return
                if not self._sending.is_set():
                    sending = False
                else:
                    sending = True
                    self._left -= 1
                    self._in_flight += 1
            if not sending:
                self._sending.wait()
                continue
            response = request(
                "127.0.0.1", self._port, self._path, timeout=self._timeout
            )
            with self._lock:
                self.responses.append(response)
                self._in_flight -= 1

    def pause(self, timeout: float = 30.0) -> None:
        """Send nothing until resume(); return once no request is in flight."""
        with self._lock:
            self._sending.clear()
        deadline = time.monotonic() + timeout
        while self._in_flight:
            if time.monotonic() > deadline:
                raise AssertionError(f"requests still in flight after {timeout} s")
            time.sleep(0.01)

    def resume(self) -> None:
        """Send requests again after pause()."""
        self._sending.set()

    def stop(self) -> LoadResult:
        self._stopping.set()
        self._sending.set()
        for thread in self._threads:
            thread.join(self._timeout + 5)
        with self._lock:
            return LoadResult(list(self.responses))

    def sent_after(self, moment: float) -> LoadResult:
        """Return the answers to the requests sent after *moment*."""
        with self._lock:
            return LoadResult([r for r in self.responses if r.started >= moment])

    def wait_for(
        self, count: int, timeout: float = 30.0, *, sent_after: float | None = None
    ) -> None:
        """Wait until *count* answers arrived (to requests sent after *sent_after*)."""
        deadline = time.monotonic() + timeout

        def arrived() -> int:
            if sent_after is None:
                return len(self.responses)
            return len(self.sent_after(sent_after).responses)

        while (got := arrived()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {got} answers of {count} in {timeout} s")
            time.sleep(0.05)
