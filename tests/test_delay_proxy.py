"""The delay proxy of the harness (tests/harness/delayproxy.py), which the
benchmarks use as a network: it adds its delay each way, does not let delays
pile up, and passes every byte through unchanged (TLS included)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.harness.delayproxy import DelayProxy
from tests.harness.postgres import PgServer

DELAY = 0.02


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on loopback: echoes until EOF, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads = []

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=echo, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for thread in threads:
            thread.join(10)


def test_bytes_pass_unchanged_both_ways(echo_port: int) -> None:
    """Megabytes in many chunks come back intact, in order; EOF passes through."""
    payload = os.urandom(3 * 1024 * 1024)
    received = bytearray()
    with DelayProxy(echo_port, 0.001) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=30) as sock:

            def read() -> None:
                while data := sock.recv(65536):
                    received.extend(data)

            reader = threading.Thread(target=read)
            reader.start()
            for start in range(0, len(payload), 10000):
                sock.sendall(payload[start : start + 10000])
            sock.shutdown(socket.SHUT_WR)  # the echo server closes at EOF
            reader.join(30)
            assert not reader.is_alive(), "the end of stream did not come through"
        stats = proxy.stats()
    assert bytes(received) == payload
    assert stats["bytes"] == {"to_server": len(payload), "to_client": len(payload)}
    assert stats["connections"] == 1


def test_each_way_is_delayed_and_delays_do_not_pile_up(echo_port: int) -> None:
    with DelayProxy(echo_port, DELAY) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(5):
                t0 = time.monotonic()
                sock.sendall(b"x")
                assert sock.recv(10) == b"x"
                assert time.monotonic() - t0 >= 2 * DELAY
            # 20 messages 1 ms apart: each is late by its own delay only, so
            # the last echo comes ~2 * DELAY after it was sent, not 20 times.
            t0 = time.monotonic()
            for _ in range(20):
                sock.sendall(b"y")
                time.sleep(0.001)
            got = b""
            while len(got) < 20:
                got += sock.recv(100)
            elapsed = time.monotonic() - t0
        assert got == b"y" * 20
        assert 2 * DELAY <= elapsed < 10 * 2 * DELAY


def test_postgres_over_tls_through_the_proxy(pg_server: PgServer) -> None:
    """A TLS session passes unchanged; each query is one more flight, 2 x delay late."""
    delay = 0.005
    with DelayProxy(pg_server.port, delay, target_host=pg_server.host) as proxy:
        dsn = pg_server.dsn(host=proxy.host, port=proxy.port)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.pgconn.ssl_in_use
            before = proxy.stats()["flights"]
            for _ in range(5):
                t0 = time.monotonic()
                conn.execute("SELECT 1").fetchone()
                assert time.monotonic() - t0 >= 2 * delay
            assert proxy.stats()["flights"] - before == 5
            # A megabyte each way, checked by the server and by us.
            big = os.urandom(512 * 1024).hex()
            row = conn.execute("SELECT %s::text, md5(%s)", (big, big)).fetchone()
            assert row is not None
            assert row[0] == big
            assert row[1] == hashlib.md5(big.encode()).hexdigest()
