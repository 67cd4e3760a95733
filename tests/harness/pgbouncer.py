"""A throwaway PgBouncer (transaction mode unless told) in front of the test server.

Started from the OS package's ``pgbouncer`` binary with a generated ini, in its
own process group (through ``runuser -u postgres --`` when the tests run as
root: PgBouncer refuses root), and stopped through its pid. TLS on both legs:
clients must use TLS to reach it (a new self-signed certificate), and it uses
TLS to the server (``server_tls_sslmode = require``). Clients authenticate
with SCRAM against a userlist holding the test user's password, which
PgBouncer also uses for the server's SCRAM authentication.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from .postgres import PgServer, _make_certificate, free_port

#: What a user without PgBouncer is told.
INSTALL_HINT = (
    "PgBouncer is not installed: `apt-get install pgbouncer` (Debian/Ubuntu),"
    " or set PGPOOL_TEST_PGBOUNCER to the pgbouncer binary"
)

#: Server sessions PgBouncer keeps per database and user: fewer than the
#: app's connections, so that transactions of one client land on several.
POOL_SIZE = 5


def find_pgbouncer() -> str | None:
    """Return the pgbouncer binary, or None."""
    explicit = os.environ.get("PGPOOL_TEST_PGBOUNCER")
    if explicit:
        return explicit
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )


@dataclass
class PgBouncer:
    """A running PgBouncer, and how to reach the server through it."""

    server: PgServer
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    root: Path

    def dsn(self, **params: Any) -> str:
        """The test database through PgBouncer (TLS required)."""
        base = {
            "host": self.host,
            "port": self.port,
            "user": self.server.user,
            "password": self.server.password,
            "dbname": self.server.dbname,
            "sslmode": "require",
        }
        base.update(params)
        return make_conninfo("", **base)

    @property
    def logfile(self) -> Path:
        return self.root / "pgbouncer.log"

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop PgBouncer through its pid (its process group's leader)."""
        if self.proc.poll() is None:
            _killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        _killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def start_pgbouncer(
    server: PgServer,
    binary: str,
    *,
    pool_mode: str = "transaction",
    database: str = "",
) -> PgBouncer:
    """Start PgBouncer before *server*; return once it answers.

    *pool_mode*: PgBouncer's (``transaction``, or ``session``, its default);
    *database*: more parameters of its ``[databases]`` entry
    (``"timezone=Asia/Tokyo"``: the server sessions' own default).
    """
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="pgpool-pgbouncer-"))
    _make_certificate(root)
    port = free_port()
    (root / "userlist.txt").write_text(
        f"{_quote(server.user)} {_quote(server.password)}\n"
    )
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "pool_mode": pool_mode,
        "default_pool_size": str(POOL_SIZE),
        "max_client_conn": "500",
        "auth_type": "scram-sha-256",
        "auth_file": str(root / "userlist.txt"),
        "client_tls_sslmode": "require",
        "client_tls_key_file": str(root / "server.key"),
        "client_tls_cert_file": str(root / "server.crt"),
        "server_tls_sslmode": "require",
        "ignore_startup_parameters": "extra_float_digits",
        "logfile": str(root / "pgbouncer.log"),
        "pidfile": str(root / "pgbouncer.pid"),
    }
    lines = [
        "[databases]",
        f"* = host={server.host} port={server.port} {database}".rstrip(),
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in settings.items()),
    ]
    ini = root / "pgbouncer.ini"
    ini.write_text("\n".join(lines) + "\n")
    cmd = [binary, str(ini)]
    if as_postgres:
        entry = pwd.getpwnam("postgres")
        for path in [root, *root.iterdir()]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    for path in root.iterdir():
        os.chmod(path, 0o600)
    with open(root / "stdout.log", "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    bouncer = PgBouncer(server, "127.0.0.1", port, proc, root)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            output = (root / "stdout.log").read_text(errors="replace") + bouncer.log()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}:\n{output}")
        try:
            with psycopg.connect(bouncer.dsn(), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return bouncer
        except psycopg.OperationalError as err:
            if time.monotonic() > deadline:
                output = bouncer.log()
                bouncer.stop()
                raise RuntimeError(
                    f"pgbouncer did not answer in 30 s: {err}\n{output}"
                ) from err
            time.sleep(0.2)
