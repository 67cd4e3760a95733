"""A TCP path to PostgreSQL that a test can turn into a black hole.

The app connects to an address inside a network namespace made for the test
(a veth pair: our own test host, nothing else is reached); a forwarder there
relays to the test server on 127.0.0.1. ``cut()`` takes the namespace's end
of the link down: packets then vanish without an error or a reset, as when a
NAT or firewall forgets a connection or a host dies. Established connections
stay "open" on the app's side; only timeouts can tell. ``stall()`` is the
other kind of black hole: the forwarder stops forwarding, in both directions,
but keeps every connection open and keeps reading (the kernel acknowledges
what the app sends), as a stuck proxy or load balancer does: keepalives and
``tcp_user_timeout`` see nothing wrong.

Needs root (network namespaces); the harness runs as root on CI.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import subprocess
import threading
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def _in_netns(name: str) -> Iterator[None]:
    """Make the sockets created in the block in namespace *name* (this thread only)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test namespace failed")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover
                raise OSError(ctypes.get_errno(), "setns back failed")
    finally:
        os.close(own)
        os.close(target)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class BlackHoleProxy:
    """Forward host:port (in a test namespace) to 127.0.0.1:target_port."""

    def __init__(self, target_port: int) -> None:
        tag = os.urandom(3).hex()
        self.netns = f"pgpool-bh-{tag}"
        self._outer = f"pgbh{tag}o"
        self._inner = f"pgbh{tag}i"
        octet = 16 + int(tag[:2], 16) % 200
        self.host = f"10.231.{octet}.2"
        self._outer_ip = f"10.231.{octet}.1"
        self._target = ("127.0.0.1", target_port)
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        # Stalled connections (their sockets), and whether new ones are.
        self._stalled: set[socket.socket] = set()
        self._stalling = False
        self._setup()
        try:
            with _in_netns(self.netns):
                self._listener = socket.socket()
            self._listener.bind((self.host, 0))
            self._listener.listen(64)
            self.port = self._listener.getsockname()[1]
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _setup(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self._outer, "type", "veth", "peer", "name", self._inner)
        _ip("link", "set", self._inner, "netns", self.netns)
        _ip("addr", "add", f"{self._outer_ip}/30", "dev", self._outer)
        _ip("link", "set", self._outer, "up")
        ns = ("-n", self.netns)
        _ip(*ns, "addr", "add", f"{self.host}/30", "dev", self._inner)
        _ip(*ns, "link", "set", self._inner, "up")
        _ip(*ns, "link", "set", "lo", "up")

    def cut(self) -> None:
        """Drop every packet on the link from now on, silently."""
        _ip("-n", self.netns, "link", "set", self._inner, "down")

    def restore(self) -> None:
        """Carry packets again; forward new connections again after ``stall()``.

        Connections stalled stay so: bytes they lost cannot be given back.
        """
        _ip("-n", self.netns, "link", "set", self._inner, "up")
        with self._lock:
            self._stalling = False

    def stall(self) -> None:
        """Stop forwarding on every connection, and on new ones; close nothing.

        What is read is dropped: the app's side sees its writes acknowledged
        and nothing ever answered. New connections are accepted and stalled.
        """
        with self._lock:
            self._stalling = True
            self._stalled.update(self._sockets)

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        listener = getattr(self, "_listener", None)
        if listener is not None:
            listener.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self._outer], capture_output=True)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.2)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                stalling = self._stalling
                if stalling:
                    self._sockets.append(client)
                    self._stalled.add(client)
            if stalling:  # read and drop, never connect
                threading.Thread(
                    target=self._pipe, args=(client, client), daemon=True
                ).start()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if source not in self._stalled:
                    sink.sendall(chunk)
        except OSError:
            pass
        finally:
            if source not in self._stalled:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
