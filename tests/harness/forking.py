"""Run a function in a forked child and get its result back, for fork tests."""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import struct
import time
import traceback
from collections.abc import Callable, Iterable, Sized
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .postgres import PgServer


def libc_fork() -> int:
    """Fork as uWSGI does: libc's fork(), so CPython's at-fork handlers don't run."""
    # PyDLL keeps the GIL held across the call, like a fork from Python code.
    return int(ctypes.PyDLL(None).fork())


#: The two ways a process gets forked, for parametrised tests.
FORKS: dict[str, Callable[[], int]] = {"os.fork": os.fork, "libc fork": libc_fork}


def run_in_child(
    work: Callable[[], Any],
    fork: Callable[[], int] = os.fork,
    *,
    timeout: float = 60.0,
) -> Any:
    """Run *work* in a forked child; return its JSON-able result, or raise its error.

    A child that hangs (the failure fork bugs tend to cause) is killed after
    *timeout* seconds and the test fails, instead of hanging the suite.
    Before libc_fork, the calling process must have no other thread: CPython
    does not re-initialise its locks after a fork it did not make.
    """
    read_end, write_end = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            result = {"ok": work()}
        except BaseException as err:
            result = {"error": f"{type(err).__name__}: {err}\n{traceback.format_exc()}"}
            code = 1
        try:
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the child did not finish in {timeout} s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b"{}")
    if "error" in result:
        raise AssertionError(f"in the child: {result['error']}")
    assert os.waitstatus_to_exitcode(status) == 0, f"child exit status {status}"
    return result["ok"]


def bytes_sent(fd: int) -> int:
    """Return the bytes TCP socket *fd* has sent so far (Linux ``tcp_info``).

    Counted by the kernel for the socket, whichever process wrote them: a
    child that inherited it and wrote on it shows here in the parent.
    """
    sock = socket.socket(fileno=os.dup(fd))
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
    finally:
        sock.close()
    # struct tcp_info's tcpi_bytes_sent (Linux 4.19 and later).
    return int(struct.unpack_from("Q", info, 200)[0])


class ForkedRun(Protocol):
    """What a load on forked workers gave: requests to a server, tasks to Celery."""

    @property
    def failures(self) -> Sized: ...

    def shared_backends(self) -> dict[int, set[int]]: ...

    def worker_pids(self) -> set[int]: ...

    def summary(self) -> str: ...


def server_sockets(pid: int, port: int) -> set[int]:
    """Return the inodes of the TCP sockets process *pid* has open to *port*.

    An empty set if the process is gone. Needs /proc (Linux) and the right to
    read the process's file descriptors (the same user, or root).
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        tables = [f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"]
        connected = set()
        for table in tables:
            with open(table) as lines:
                next(lines)  # the header
                for line in lines:
                    fields = line.split()
                    remote_port = int(fields[2].rpartition(":")[2], 16)
                    if remote_port == port:
                        connected.add(int(fields[9]))
    except FileNotFoundError:  # the process ended
        return set()
    return inodes & connected


def shared_sockets(pids: Iterable[int], port: int) -> dict[int, set[int]]:
    """Map each socket to *port* that two or more of *pids* hold to those pids."""
    holders: dict[int, set[int]] = {}
    for pid in pids:
        for inode in server_sockets(pid, port):
            holders.setdefault(inode, set()).add(pid)
    return {inode: pids for inode, pids in holders.items() if len(pids) > 1}


def fork_problems(
    run: ForkedRun, server: PgServer, log_position: int, *, parent: int | None = None
) -> list[str]:
    """Return the symptoms of connections shared across fork that *run* shows.

    Failures, fewer than two processes answering (the others hung: forked
    while a pool thread held a lock, or blocked on a socket another process
    reads), a backend that answered for two processes, "bad record mac" in
    the server's log since *log_position*, and (given the *parent* that forked
    the processes, still running) a socket to the server that a process which
    answered shares with the parent or another one. A fixed setup must show
    none; a naive one (a plain pool opened before the fork) must show some.
    The last one does not depend on timing: a process that answered through a
    connection it inherited still holds that connection's socket.
    """
    problems = []
    if parent is not None:
        sockets = shared_sockets({parent, *run.worker_pids()}, server.port)
        if sockets:
            problems.append(f"sockets to the server held by two processes: {sockets}")
    if run.failures:
        problems.append(f"failures: {run.summary()}")
    if len(run.worker_pids()) < 2:
        problems.append(f"only processes {sorted(run.worker_pids())} answered")
    shared = run.shared_backends()
    if shared:
        problems.append(f"backends shared by two processes: {shared}")
    bad_mac = server.bad_mac_lines(log_position)
    if bad_mac:
        problems.append(f"{len(bad_mac)} 'bad record mac' lines, first: {bad_mac[0]}")
    return problems
