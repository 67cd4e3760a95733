"""A throwaway PostgreSQL cluster with TLS on, for the tests.

It is made with the machine's ``initdb`` and ``pg_ctl`` (through ``runuser -u
postgres --`` when the tests run as root, since PostgreSQL refuses root), on a
free loopback port below the ephemeral range, and removed at the end. Only
``hostssl`` connections are accepted, with a password, so every test goes
through TLS like the bug it is about (psycopg_pool's own suite, whose proxy
cannot speak TLS, opts in to plain loopback connections: ``plain_loopback``).

Set ``PGPOOL_TEST_DSN`` to run against an existing server instead (the tests
that read the server log or restart it are then skipped).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgpool_core.ops.snippets import read_snippet

PASSWORD = "pgpool-test-Secret-4711"
USER = "pgpool"
DBNAME = "pgpool_test"
BAD_MAC = "bad record mac"
#: A statement in the server log, as ``log_statement=all`` writes it.
_STATEMENT = re.compile(r"LOG:  statement: ?(.*)$")


def find_bindir() -> Path | None:
    """Return the directory holding initdb and pg_ctl, or None."""
    candidates = [os.environ.get("PGPOOL_TEST_PGBIN", "")]
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(str(Path(os.path.realpath(found)).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


NO_SERVER_HELP = (
    "The tests need PostgreSQL: install the server binaries (Debian/Ubuntu:"
    " `apt-get install postgresql`; initdb and pg_ctl are then found in"
    " /usr/lib/postgresql/*/bin), or point PGPOOL_TEST_PGBIN at the directory"
    " that holds initdb and pg_ctl, or set PGPOOL_TEST_DSN to a server the"
    " tests may use (a superuser connection string with sslmode=require)."
)


def free_port() -> int:
    """Return a free loopback TCP port below 32768.

    Ports in the ephemeral range are avoided: polling one before the server
    binds it can connect a client socket to itself.
    """
    for _ in range(200):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 12000
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below 32768")


def quoted(value: str) -> str:
    """*value* as a key=value conninfo writes it: quoted, ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def backend_pid(source: Any) -> int:
    """Return the pid of the server process (backend) behind *source*.

    *source* is a psycopg connection (what the server said at login, no round
    trip) or a pool (a connection borrowed for the question, given back).
    """
    if isinstance(source, psycopg.Connection):
        return source.info.backend_pid
    with source.connection() as conn:
        return int(conn.info.backend_pid)


def query_backend_pid(connection: Any) -> int:
    """Ask the server, with ``SELECT pg_backend_pid()``, which backend serves it.

    *connection* is a psycopg connection or a Django connection wrapper (which
    connects, as a view's first query does): the round trip proves the
    connection works.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@dataclass
class PgServer:
    """A running PostgreSQL server the tests may use."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    datadir: Path | None = None
    logfile: Path | None = None
    bindir: Path | None = None
    _as_postgres: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def dsn(self, **params: Any) -> str:
        """Return a conninfo string for the test database (TLS required)."""
        base = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "sslmode": "require",
            **self.extra,
        }
        base.update(params)
        return make_conninfo("", **{k: v for k, v in base.items() if v is not None})

    def connect(self, **params: Any) -> psycopg.Connection[Any]:
        """Return a new autocommit connection (the test's own, not pooled)."""
        return psycopg.connect(self.dsn(**params), autocommit=True)

    def execute(self, sql: str, params: Any = None) -> list[Any]:
        """Run *sql* on a fresh connection and return its rows."""
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    # -- the server log ------------------------------------------------------

    @property
    def has_log(self) -> bool:
        return self.logfile is not None

    def log_position(self) -> int:
        """Return the current end of the server log, for log_since()."""
        assert self.logfile is not None, "no server log (PGPOOL_TEST_DSN in use)"
        return self.logfile.stat().st_size

    def log_since(self, position: int) -> str:
        """Return what the server logged after *position*."""
        assert self.logfile is not None, "no server log (PGPOOL_TEST_DSN in use)"
        with open(self.logfile, "rb") as f:
            f.seek(position)
            return f.read().decode("utf-8", "replace")

    def statements_since(self, position: int) -> list[str]:
        """Return the statements logged after *position* (``log_statement=all``)."""
        found = []
        for line in self.log_since(position).splitlines():
            match = _STATEMENT.search(line)
            if match:
                found.append(match.group(1))
        return found

    def bad_mac_lines(self, position: int) -> list[str]:
        """Return the "bad record mac" lines logged after *position*."""
        return [
            line for line in self.log_since(position).splitlines() if BAD_MAC in line
        ]

    # -- what the tests ask of the server --------------------------------------

    def sessions(self, application_name: str) -> int:
        """Return how many sessions named *application_name* the server has now."""
        rows = self.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return int(rows[0][0])

    def client_backends(
        self, *, user: str | None = None, application_name: str | None = None
    ) -> list[int]:
        """Return the pids of the test database's client sessions (not the asker's).

        *user*, *application_name*: only those of that role, of that name.
        """
        sql = (
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() AND datname = current_database()"
        )
        params: list[str] = []
        if user is not None:
            sql += " AND usename = %s"
            params.append(user)
        if application_name is not None:
            sql += " AND application_name = %s"
            params.append(application_name)
        return [int(row[0]) for row in self.execute(sql, params)]

    def terminate(self, *pids: int, wait: bool = False) -> None:
        """End the sessions *pids* (``pg_terminate_backend()``).

        With *wait*, return once none is in pg_stat_activity any more: each
        backend has exited, its FATAL message sent to its client.
        """
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
            [list(pids)],
        )
        while wait and self.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]
        ):
            time.sleep(0.01)

    def wait_for_sleepers(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until *count* sessions of the server run ``pg_sleep()``."""
        deadline = time.monotonic() + timeout
        sql = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%%'"
        )
        while self.execute(sql)[0][0] < count:
            assert time.monotonic() < deadline, "the holding requests never ran"
            time.sleep(0.05)

    # -- control -------------------------------------------------------------

    def _pg_ctl(
        self, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert self.bindir is not None and self.datadir is not None
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]
        return _run(cmd, as_postgres=self._as_postgres, check=check)

    def start(self) -> None:
        assert self.logfile is not None
        self._pg_ctl("-l", str(self.logfile), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        assert self.logfile is not None
        self._pg_ctl("-m", mode, "-l", str(self.logfile), "-w", "-t", "60", "restart")

    def reload(self) -> None:
        self._pg_ctl("reload")

    def is_running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def promote(self) -> None:
        """Promote a standby; return once it has left recovery."""
        self._pg_ctl("-w", "-t", "60", "promote")


def _run(
    cmd: list[str], *, as_postgres: bool, check: bool = True
) -> subprocess.CompletedProcess[str]:
    if as_postgres:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def _make_certificate(directory: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-x509",
            "-days",
            "2",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(directory / "server.key"),
            "-out",
            str(directory / "server.crt"),
        ],
        check=True,
        capture_output=True,
    )


def start_cluster(*, plain_loopback: bool = False, **overrides: str) -> PgServer:
    """Make, configure and start a throwaway cluster; return it running.

    With *plain_loopback*, connections without TLS from 127.0.0.1 are
    accepted too: only for psycopg_pool's own suite, whose TCP proxy (pproxy)
    connects with ``sslmode=disable``. The project's tests keep the default.
    *overrides*: postgresql.conf settings, by name, quoted as needed
    (``max_connections="20"``).
    """
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(NO_SERVER_HELP)
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="pgpool-pg-"))
    datadir = root / "data"
    logfile = root / "server.log"
    pwfile = root / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    _make_certificate(root)
    if as_postgres:
        entry = pwd.getpwnam("postgres")
        for path in (root, pwfile, root / "server.key", root / "server.crt"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(root / "server.key", 0o600)
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        as_postgres=as_postgres,
    )
    port = free_port()
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{root}'",
        "max_connections": "300",
        "ssl": "on",
        "ssl_cert_file": f"'{root / 'server.crt'}'",
        "ssl_key_file": f"'{root / 'server.key'}'",
        "log_connections": "on",
        "log_disconnections": "on",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "32MB",
        **overrides,
    }
    with open(datadir / "postgresql.conf", "a") as conf:
        # The settings the documentation recommends, so that they are known to load.
        conf.write("\n" + read_snippet("postgresql", "flask"))
        conf.write("\n# pgpool tests\n")
        for key, value in settings.items():
            conf.write(f"{key} = {value}\n")
    # TLS only: a test that passed without TLS would prove nothing about the bug.
    plain = "scram-sha-256" if plain_loopback else "reject"
    (datadir / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        f"hostnossl all all 127.0.0.1/32 {plain}\n"
    )
    server = PgServer(
        host="127.0.0.1",
        port=port,
        user=USER,
        password=PASSWORD,
        dbname="postgres",
        datadir=datadir,
        logfile=logfile,
        bindir=bindir,
        _as_postgres=as_postgres,
    )
    logfile.touch()
    if as_postgres:
        entry = pwd.getpwnam("postgres")
        os.chown(logfile, entry.pw_uid, entry.pw_gid)
    server.start()
    server._watchdog = _watch(server, root)
    server.execute(f"CREATE DATABASE {DBNAME}")
    server.dbname = DBNAME
    return server


def start_standby(primary: PgServer, **settings: str) -> PgServer:
    """Make a streaming standby of *primary*, a throwaway cluster; return it running.

    ``pg_basebackup -R`` over the primary's Unix socket (a ``local
    replication`` line is added to the primary's pg_hba.conf), then the
    standby's own port, socket directory, certificate and log, and
    *settings* (postgresql.conf names and values, quoted as needed). Stop it
    with :func:`stop_cluster`, before the primary.
    """
    assert primary.datadir is not None and primary.bindir is not None
    as_postgres = primary._as_postgres
    with open(primary.datadir / "pg_hba.conf", "a") as hba:
        hba.write("local replication all trust\n")
    primary.reload()
    root = Path(tempfile.mkdtemp(prefix="pgpool-pg-standby-"))
    datadir = root / "data"
    logfile = root / "server.log"
    _make_certificate(root)
    logfile.touch()
    if as_postgres:
        entry = pwd.getpwnam("postgres")
        for path in (root, root / "server.key", root / "server.crt", logfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(root / "server.key", 0o600)
    _run(
        [
            str(primary.bindir / "pg_basebackup"),
            f"--host={primary.datadir.parent}",
            f"--port={primary.port}",
            f"--username={primary.user}",
            f"--pgdata={datadir}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",  # a spread checkpoint takes minutes
            "--no-sync",
        ],
        as_postgres=as_postgres,
    )
    port = free_port()
    own = {
        "port": str(port),
        "unix_socket_directories": f"'{root}'",
        "ssl_cert_file": f"'{root / 'server.crt'}'",
        "ssl_key_file": f"'{root / 'server.key'}'",
        **settings,
    }
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write("\n# pgpool tests: the standby\n")
        for key, value in own.items():
            conf.write(f"{key} = {value}\n")
    standby = PgServer(
        host=primary.host,
        port=port,
        user=primary.user,
        password=primary.password,
        dbname=primary.dbname,
        datadir=datadir,
        logfile=logfile,
        bindir=primary.bindir,
        _as_postgres=as_postgres,
    )
    standby.start()
    standby._watchdog = _watch(standby, root)
    return standby


def _watch(server: PgServer, root: Path) -> subprocess.Popen[bytes]:
    """Start a process that stops the cluster once this process is gone.

    A test run killed from outside (a timeout, SIGKILL) runs no finalizer: the
    cluster would outlive it. The watchdog runs in its own session, so that
    what kills the run's process group spares it, and stops the cluster by
    its data directory, never by name.
    """
    assert server.bindir is not None and server.datadir is not None
    stop = [str(server.bindir / "pg_ctl"), "-D", str(server.datadir)]
    stop += ["-m", "immediate", "-w", "stop"]
    if server._as_postgres:
        stop = ["runuser", "-u", "postgres", "--", *stop]
    script = (
        'while kill -0 "$1" 2>/dev/null; do sleep 1; done; shift; '
        '"$@" >/dev/null 2>&1; rm -rf "$0"'
    )
    return subprocess.Popen(
        ["sh", "-c", script, str(root), str(os.getpid()), *stop],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_cluster(server: PgServer) -> None:
    """Stop the cluster and remove its files."""
    server.stop("immediate")
    if server._watchdog is not None:
        server._watchdog.kill()
        server._watchdog.wait()
    if server.datadir is not None:
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


def existing_server(dsn: str) -> PgServer:
    """Describe the server PGPOOL_TEST_DSN points at."""
    params = conninfo_to_dict(dsn)
    extra = {
        k: v
        for k, v in params.items()
        if k not in {"host", "port", "user", "password", "dbname"}
    }
    extra.setdefault("sslmode", "require")
    server = PgServer(
        host=str(params.get("host", "127.0.0.1")),
        port=int(params.get("port", 5432)),
        user=str(params.get("user", "postgres")),
        password=str(params.get("password", "")),
        dbname=str(params.get("dbname", "postgres")),
        extra=extra,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            server.execute("SELECT 1")
            return server
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
