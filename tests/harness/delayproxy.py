"""A TCP proxy that adds a fixed delay each way: a network, on loopback.

This kernel has no netem (``tc qdisc ... netem delay``), and loopback hides
exactly what round trips cost. :class:`DelayProxy` starts this module as its
own process (``python -m tests.harness.delayproxy TARGET_PORT DELAY``, so
that it takes no CPU or GIL from the process it serves) listening on
127.0.0.1; each chunk read from one side is written to the other *delay*
seconds after it arrived, in order, unchanged: TLS passes through, and a
round trip takes ``2 * delay`` more. The delay does not accumulate (a chunk
waits for its own due time, not behind the delays of those before it) and
the TCP handshake is not delayed (connecting costs no extra round trip).

An asyncio loop on ``select()`` (microsecond timeouts; epoll's are whole
milliseconds, which would round a 0.5 ms delay up to 1 ms). The process also
counts, per connection, the client's *flights*: data it sends after the
server last answered, which is one round trip each, whether the client waits
for its answer or not. It answers ``stats`` on stdin with a JSON line on
stdout, and exits at end of input: it does not outlive its parent.

No maintained one fits (checked on PyPI and Debian): Toxiproxy's latency
toxic does this but is a Go server that neither index ships; the Python
packages named for delay are HTTP proxies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent


class _Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.flights = 0
        self.chunks = {"to_server": 0, "to_client": 0}
        self.bytes = {"to_server": 0, "to_client": 0}

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "flights": self.flights,
            "chunks": dict(self.chunks),
            "bytes": dict(self.bytes),
        }


class _Delayed:
    """One direction of a connection: what *sink* gets, *delay* after it came."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.sink: _Side | None = None
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes | None) -> None:
        """Send *data* (None: end of stream) after the delay."""
        self.queue.append((self.loop.time() + self.delay, data))
        if self.timer is None and self.sink is not None:
            self._arm()

    def attach(self, sink: _Side) -> None:
        self.sink = sink
        if self.queue and self.timer is None:
            self._arm()

    def _arm(self) -> None:
        self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        assert self.sink is not None and self.sink.transport is not None
        sink = self.sink.transport
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if sink.is_closing():
                self.queue.clear()
                return
            if data is not None:
                sink.write(data)
            elif self.sink.eof_in:
                sink.close()  # both halves are done
            else:
                self.sink.eof_out = True
                try:
                    sink.write_eof()
                except OSError:  # the other end is gone already
                    sink.close()
        if self.queue:
            self._arm()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; *to_peer* carries what it reads."""

    def __init__(self, stats: _Stats, to_peer: _Delayed, direction: str) -> None:
        self.stats = stats
        self.to_peer = to_peer
        self.direction = direction
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        # Client side only: did the server send anything since our last chunk?
        self.answered = True
        self.eof_in = False  # our socket's peer sent EOF
        self.eof_out = False  # we sent EOF on our socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.stats.chunks[self.direction] += 1
        self.stats.bytes[self.direction] += len(data)
        if self.direction == "to_server":
            if self.answered:
                self.stats.flights += 1
                self.answered = False
        elif self.peer is not None:
            self.peer.answered = True
        self.to_peer.push(data)

    def eof_received(self) -> bool:
        self.eof_in = True
        self.to_peer.push(None)
        # Keep our sending half open until the other side's EOF comes through.
        return not self.eof_out

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.eof_in:
            self.eof_in = True
            self.to_peer.push(None)

    # Flow control: stop reading the peer while our sending buffer is full.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Server:
    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.stats = _Stats()

    def client(self) -> _Side:
        loop = asyncio.get_running_loop()
        to_server, to_client = _Delayed(loop, self.delay), _Delayed(loop, self.delay)
        client = _Side(self.stats, to_server, "to_server")
        self.stats.connections += 1
        loop.create_task(self._connect(client, to_server, to_client))
        return client

    async def _connect(
        self, client: _Side, to_server: _Delayed, to_client: _Delayed
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, upstream = await loop.create_connection(
                lambda: _Side(self.stats, to_client, "to_client"), *self.target
            )
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        assert isinstance(transport, asyncio.Transport)
        assert client.transport is not None
        client.peer, upstream.peer = upstream, client
        to_server.attach(upstream)
        to_client.attach(client)


async def _serve(target: tuple[str, int], delay: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = _Server(target, delay)
    listener = await loop.create_server(server.client, "127.0.0.1", port, backlog=512)
    print(listener.sockets[0].getsockname()[1], flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        if line.strip() == b"stats":
            print(json.dumps(server.stats.as_dict()), flush=True)
    listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target_port", type=int)
    parser.add_argument("delay", type=float, help="seconds, each way")
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="to listen on")
    args = parser.parse_args()
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    target = (args.target_host, args.target_port)
    try:
        loop.run_until_complete(_serve(target, args.delay, args.port))
    finally:
        loop.close()


class DelayProxy:
    """127.0.0.1:``port`` forwards to *target_host*:*target_port*, *delay* s each way.

    *port* 0: a free port, then in ``port``.

    Its own process, in its own process group, stopped by :meth:`close` (a
    context manager); ``stats()`` returns what it counted so far: connections,
    flights (round trips the clients started), chunks and bytes each way.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        target_port: int,
        delay: float,
        target_host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.delay = delay
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.harness.delayproxy",
                str(target_port),
                repr(delay),
                f"--target-host={target_host}",
                f"--port={port}",
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the delay proxy did not start: {line!r}")
        self.port = int(line)

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # it exits at end of input
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
