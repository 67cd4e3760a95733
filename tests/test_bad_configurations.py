"""Issue 15: every mistake named at start-up: the table of bad configurations.

Each row is one bad configuration of a Flask or a Django app, the one error
it must give, and where it is caught:

``init_app``
    Flask: ``PgPool(app)`` raises ConfigurationError naming the setting.
``django.setup``
    Django: ``django.setup()`` (what a WSGI server, a Celery worker or a
    script does first) raises ImproperlyConfigured with the system check's id
    and the setting, in a process of its own, and the same check reports it
    (``manage.py check``: an Error, no traceback).
``check command``
    What needs the network: ``flask pgpool check``, Django's ``manage.py
    check --database default`` (``django_pgpool.E006``, which ``migrate``
    runs first): one failure naming libpq's reason, well within the pool's
    timeout.

No row's output holds the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from flask import Flask

from django_pgpool.checks import check_databases, check_settings
from flask_pgpool import ConfigurationError, PgPool
from tests.conftest import REPO
from tests.harness.postgres import PgServer, free_port

PASSWORD = "Bad-Config-Secret-9"
#: The pools' timeout in every row: a check command must not come near it.
POOL_TIMEOUT = 30
CONNECT_TIMEOUT = 2


def failing_callable() -> str:
    raise RuntimeError("the vault is sealed")


@dataclass(frozen=True)
class Bad:
    """A bad configuration, the error it must give, and where."""

    framework: str
    label: str
    where: str
    #: The setting the error names (for a check command: the database).
    setting: str
    #: A fragment of the message.
    says: str
    #: Flask: app.config items. Django: the DATABASES entry's items.
    config: dict[str, Any] = field(default_factory=dict)
    #: Django: other settings (PGPOOL_*).
    settings: dict[str, Any] = field(default_factory=dict)
    #: Django: the system check's id.
    check_id: str | None = None
    #: Network rows: the conninfo's parameters to change.
    dsn: dict[str, Any] = field(default_factory=dict)


#: Where no server listens (the rows connect to nothing but the test cluster).
NO_SERVER_PORT = free_port()
GOOD = f"host=127.0.0.1 port={NO_SERVER_PORT} dbname=appdb user=app password={PASSWORD}"
MISSING = "/nonexistent/pgpool-test/root.crt"
_K = "PGPOOL_KWARGS"
_POOL = 'DATABASES["default"]["OPTIONS"]["pool"]'
_DB = 'DATABASES["default"]'

FLASK_ROWS = [
    Bad("flask", "port out of range", "init_app", "PGPOOL_CONNINFO",
        'port "99999" is not a port number',
        {"PGPOOL_CONNINFO": GOOD.replace(str(NO_SERVER_PORT), "99999")}),
    Bad("flask", "verify-full, sslrootcert missing", "init_app", "PGPOOL_CONNINFO",
        f'sslrootcert names "{MISSING}", which does not exist',
        {"PGPOOL_CONNINFO": f"{GOOD} sslmode=verify-full sslrootcert={MISSING}"}),
    Bad("flask", "sslmode bogus", "init_app", f"{_K}['sslmode']",
        'invalid sslmode value: "bogus"', {_K: {"sslmode": "bogus"}}),
    Bad("flask", "unknown libpq parameter", "init_app", f"{_K}['no_such_param']",
        "not a libpq connection parameter", {_K: {"no_such_param": 1}}),
    Bad("flask", "libpq parameter typo", "init_app", f"{_K}['sslmod']",
        "did you mean sslmode?", {_K: {"sslmod": "require"}}),
    Bad("flask", "callable returning 42", "init_app", "PGPOOL_CONNINFO",
        "its callable returned int", {"PGPOOL_CONNINFO": lambda: 42}),
    Bad("flask", "callable raising", "init_app", "PGPOOL_CONNINFO",
        "its callable raised RuntimeError: the vault is sealed",
        {"PGPOOL_CONNINFO": failing_callable}),
    Bad("flask", "host that never resolves", "init_app", "PGPOOL_CONNINFO",
        "is in the .invalid domain",
        {"PGPOOL_CONNINFO": GOOD.replace("127.0.0.1", "no-such-host.invalid")}),
    Bad("flask", "conninfo written as the host", "init_app", f"{_K}['host']",
        "a connection string written as the host name",
        {_K: {"host": f"host=db password={PASSWORD}"}}),
    Bad("flask", "unknown conninfo keyword", "init_app", "PGPOOL_CONNINFO",
        'unknown setting "foo"', {"PGPOOL_CONNINFO": f"foo=bar {GOOD}"}),
    Bad("flask", "sslcert missing", "init_app", f"{_K}['sslcert']",
        "which does not exist", {_K: {"sslcert": MISSING}}),
    Bad("flask", "sslkey missing", "init_app", f"{_K}['sslkey']",
        "which does not exist", {_K: {"sslkey": MISSING}}),
    Bad("flask", "target_session_attrs bogus", "init_app",
        f"{_K}['target_session_attrs']", "invalid target_session_attrs value",
        {_K: {"target_session_attrs": "primry"}}),
    Bad("flask", "more ports than hosts", "init_app", f"{_K}['port']",
        "could not match 3 port numbers to 2 hosts",
        {_K: {"host": "db1,db2", "port": "5432,5433,5434"}}),
    Bad("flask", "hostaddr no IP address", "init_app", f"{_K}['hostaddr']",
        'hostaddr "10.0.0" is not an IP address', {_K: {"hostaddr": "10.0.0"}}),
    Bad("flask", "negative keepalives_idle", "init_app", f"{_K}['keepalives_idle']",
        "expected an integer >= 0", {_K: {"keepalives_idle": -1}}),
    Bad("flask", "connect_timeout not a number", "init_app",
        f"{_K}['connect_timeout']", "expected an integer",
        {_K: {"connect_timeout": "soon"}}),
    Bad("flask", "undefined service", "init_app", f"{_K}['service']",
        'definition of service "nosuch" not found', {_K: {"service": "nosuch"}}),
    Bad("flask", "psycopg argument of the wrong type", "init_app",
        f"{_K}['autocommit']", "expected True or False", {_K: {"autocommit": "yes"}}),
    Bad("flask", "kwargs callable returning a list", "init_app", _K,
        "its callable returned list", {_K: lambda: [("sslmode", "require")]}),
    Bad("flask", "setting name typo", "init_app", "PGPOOL_MAX_SIZ",
        "did you mean PGPOOL_MAX_SIZE?", {"PGPOOL_MAX_SIZ": 4}),
    Bad("flask", "min_size over max_size", "init_app", "PGPOOL_MAX_SIZE",
        "must be >= min_size", {"PGPOOL_MIN_SIZE": 4, "PGPOOL_MAX_SIZE": 2}),
    Bad("flask", "timeout of the wrong type", "init_app", "PGPOOL_TIMEOUT",
        "a number of seconds", {"PGPOOL_TIMEOUT": "5"}),
    Bad("flask", "retry_after 0", "init_app", "PGPOOL_RETRY_AFTER",
        "a whole number of seconds >= 1", {"PGPOOL_RETRY_AFTER": 0}),
    # Issue 26: newcomers' mistakes, each message naming the fix.
    Bad("flask", "PGPOOL_URL", "init_app", "PGPOOL_URL",
        "did you mean PGPOOL_CONNINFO?", {"PGPOOL_URL": GOOD}),
    Bad("flask", "PGPOOL_DSN", "init_app", "PGPOOL_DSN",
        "did you mean PGPOOL_CONNINFO?", {"PGPOOL_DSN": GOOD}),
    Bad("flask", "PGPOOL_DATABASE_URI", "init_app", "PGPOOL_DATABASE_URI",
        "did you mean PGPOOL_CONNINFO?", {"PGPOOL_DATABASE_URI": GOOD}),
    Bad("flask", "SQLAlchemy URL", "init_app", "PGPOOL_CONNINFO",
        'scheme "postgresql+psycopg://" is SQLAlchemy\'s, with a driver libpq does'
        ' not read: write "postgresql://"',
        {"PGPOOL_CONNINFO": f"postgresql+psycopg://app:{PASSWORD}@db/appdb"}),
    Bad("flask", "port in the host", "init_app", f"{_K}['host']",
        'host "127.0.0.1:27200" ends with a port number: write the host alone and'
        " 27200 as the port", {_K: {"host": "127.0.0.1:27200"}}),
    Bad("flask", "wrong password", "check command", "default",
        "password authentication failed", dsn={"password": "wrong-Pw"}),
    Bad("flask", "no such database", "check command", "default",
        'database "no_such_db" does not exist', dsn={"dbname": "no_such_db"}),
    Bad("flask", "server down", "check command", "default", "Connection refused",
        dsn={"port": "free"}),
    Bad("flask", "host that does not resolve", "check command", "default",
        "failed to resolve host", dsn={"host": "no-such-host.pgpool-test"}),
]  # fmt: skip

DJANGO_ROWS = [
    Bad("django", "pool option typo", "django.setup", f'{_POOL}["max_sise"]',
        "did you mean max_size?", {"OPTIONS": {"pool": {"max_sise": 4}}},
        check_id="E002"),
    Bad("django", "min_size over max_size", "django.setup", f'{_POOL}["max_size"]',
        "must be >= min_size",
        {"OPTIONS": {"pool": {"min_size": 4, "max_size": 2}}}, check_id="E002"),
    Bad("django", "pool option of the wrong type", "django.setup",
        f'{_POOL}["timeout"]', "a number of seconds",
        {"OPTIONS": {"pool": {"timeout": "10"}}}, check_id="E002"),
    Bad("django", "reset word unknown", "django.setup", f'{_POOL}["reset"]',
        'unknown reset \'alway\': expected "always"',
        {"OPTIONS": {"pool": {"reset": "alway"}}}, check_id="E002"),
    Bad("django", "pgbouncer not a bool", "django.setup",
        f'{_DB}["OPTIONS"]["pgbouncer"]', "expected True or False",
        {"OPTIONS": {"pgbouncer": "yes", "pool": True}}, check_id="E002"),
    Bad("django", "persistent connections", "django.setup", f'{_DB}["CONN_MAX_AGE"]',
        "Pooling doesn't support persistent connections.", {"CONN_MAX_AGE": 60},
        check_id="E001"),
    Bad("django", "port out of range", "django.setup", f'{_DB}["PORT"]',
        'port "99999" is not a port number', {"PORT": "99999"}, check_id="E004"),
    Bad("django", "conninfo written in HOST", "django.setup", f'{_DB}["HOST"]',
        "a connection string written as the host name",
        {"HOST": f"host=127.0.0.1 port=5432 password={PASSWORD}"}, check_id="E004"),
    Bad("django", "conninfo written in NAME", "django.setup", f'{_DB}["NAME"]',
        "a connection string written as the database name",
        {"NAME": f"postgresql://app:{PASSWORD}@db/appdb"}, check_id="E004"),
    Bad("django", "no NAME", "django.setup", f'{_DB}["NAME"]',
        "Please supply the NAME", {"NAME": ""}, check_id="E004"),
    Bad("django", "host that never resolves", "django.setup", f'{_DB}["HOST"]',
        "is in the .invalid domain", {"HOST": "db.invalid"}, check_id="E004"),
    Bad("django", "sslmode bogus", "django.setup", f'{_DB}["OPTIONS"]["sslmode"]',
        'invalid sslmode value: "bogus"',
        {"OPTIONS": {"sslmode": "bogus", "pool": True}}, check_id="E004"),
    Bad("django", "unknown OPTIONS key", "django.setup",
        f'{_DB}["OPTIONS"]["sslmod"]', "did you mean sslmode?",
        {"OPTIONS": {"sslmod": "require", "pool": True}}, check_id="E004"),
    Bad("django", "verify-full, sslrootcert missing", "django.setup",
        f'{_DB}["OPTIONS"]["sslrootcert"]', "which does not exist",
        {"OPTIONS": {"sslmode": "verify-full", "sslrootcert": MISSING, "pool": True}},
        check_id="E004"),
    Bad("django", "target_session_attrs bogus", "django.setup",
        f'{_DB}["OPTIONS"]["target_session_attrs"]',
        "invalid target_session_attrs value",
        {"OPTIONS": {"target_session_attrs": "primry", "pool": True}},
        check_id="E004"),
    Bad("django", "isolation_level bogus", "django.setup",
        f'{_DB}["OPTIONS"]["isolation_level"]', "expected one of IsolationLevel.",
        {"OPTIONS": {"isolation_level": 99, "pool": True}}, check_id="E004"),
    Bad("django", "retry_after 0", "django.setup", "PGPOOL_RETRY_AFTER",
        "expected an integer >= 1", settings={"PGPOOL_RETRY_AFTER": 0},
        check_id="E003"),
    Bad("django", "PGPOOL_ setting typo", "django.setup", "PGPOOL_RETRY_AFTR",
        "did you mean PGPOOL_RETRY_AFTER?", settings={"PGPOOL_RETRY_AFTR": 30},
        check_id="E005"),
    # Issue 26: newcomers' mistakes, each message naming the fix.
    Bad("django", "URL longer than a NAME", "django.setup", f'{_DB}["NAME"]',
        "a connection string written as the database name",
        {"NAME": f"postgresql://app:{PASSWORD}@db.example.com:5432/appdb"
                 "?sslmode=require"}, check_id="E004"),
    Bad("django", "port in HOST", "django.setup", f'{_DB}["HOST"]',
        'host "127.0.0.1:27200" ends with a port number: write the host alone and'
        " 27200 as the port", {"HOST": "127.0.0.1:27200"}, check_id="E004"),
    Bad("django", "PGPOOL_URL", "django.setup", "PGPOOL_URL",
        "django_pgpool reads the connection from DATABASES",
        settings={"PGPOOL_URL": f"postgresql://app:{PASSWORD}@db/appdb"},
        check_id="E005"),
    Bad("django", "wrong password", "check command", "default",
        "the database refused the login", dsn={"password": "wrong-Pw"},
        check_id="E006"),
    Bad("django", "no such database", "check command", "default",
        'database "no_such_db" does not exist', dsn={"dbname": "no_such_db"},
        check_id="E006"),
    Bad("django", "server down", "check command", "default",
        "the database cannot be reached", dsn={"port": "free"}, check_id="E006"),
    Bad("django", "host that does not resolve", "check command", "default",
        "failed to resolve host", dsn={"host": "no-such-host.pgpool-test"},
        check_id="E006"),
]  # fmt: skip

ROWS = [
    pytest.param(row, id=f"{row.framework}-{row.where}-{row.label}")
    for row in (*FLASK_ROWS, *DJANGO_ROWS)
]

# -- each number's bound (issue 27, case 37) ---------------------------------------
# Accepted before, then broken at use: OverflowError in each getconn() that
# waits (a 500), the scheduler thread dead, threads started until the OS
# refused, the server's connection slots exhausted.

_OVER = "over the bound of"
_BINDS_REPORTS = "PGPOOL_BINDS['reports']"

FLASK_BOUND_ROWS = [
    Bad("flask", "timeout infinite", "init_app", "PGPOOL_TIMEOUT",
        f"got inf, {_OVER} 31536000 seconds", {"PGPOOL_TIMEOUT": float("inf")}),
    Bad("flask", "timeout NaN", "init_app", "PGPOOL_TIMEOUT",
        "a number of seconds > 0, got float nan", {"PGPOOL_TIMEOUT": float("nan")}),
    Bad("flask", "max_idle 1e308", "init_app", "PGPOOL_MAX_IDLE",
        f"{_OVER} 31536000 seconds", {"PGPOOL_MAX_IDLE": 1e308}),
    Bad("flask", "max_lifetime of a bind infinite", "init_app",
        f"{_BINDS_REPORTS}['max_lifetime']", f"{_OVER} 31536000 seconds",
        {"PGPOOL_BINDS": {"reports": {"conninfo": GOOD,
                                      "max_lifetime": float("inf")}}}),
    Bad("flask", "num_workers 10**9", "init_app", "PGPOOL_NUM_WORKERS",
        f"{_OVER} 100 (each is a thread", {"PGPOOL_NUM_WORKERS": 10**9}),
    Bad("flask", "num_workers True", "init_app", "PGPOOL_NUM_WORKERS",
        "an integer >= 1, got bool True", {"PGPOOL_NUM_WORKERS": True}),
    Bad("flask", "min_size 10**18", "init_app", "PGPOOL_MIN_SIZE",
        f"{_OVER} 262143 (PostgreSQL's highest max_connections",
        {"PGPOOL_MIN_SIZE": 10**18, "PGPOOL_MAX_SIZE": 10**18}),
    Bad("flask", "max_waiting 10**30", "init_app", "PGPOOL_MAX_WAITING",
        "or 0 for no limit", {"PGPOOL_MAX_WAITING": 10**30}),
    Bad("flask", "retry_after 10**30", "init_app", "PGPOOL_RETRY_AFTER",
        f"{_OVER} 31536000 seconds", {"PGPOOL_RETRY_AFTER": 10**30}),
    Bad("flask", "keepalives_count over Linux's bound", "init_app",
        f"{_K}['keepalives_count']", "TCP_KEEPCNT, 1 to 127",
        {_K: {"keepalives_count": 128}}),
    Bad("flask", "tcp_user_timeout over a C int", "init_app",
        "PGPOOL_CONNINFO", "out of the range of a C int",
        {"PGPOOL_CONNINFO": f"{GOOD} tcp_user_timeout=9999999999"}),
]  # fmt: skip

DJANGO_BOUND_ROWS = [
    Bad("django", "timeout 1e308", "django.setup", f'{_POOL}["timeout"]',
        f"{_OVER} 31536000 seconds", {"OPTIONS": {"pool": {"timeout": 1e308}}},
        check_id="E002"),
    Bad("django", "min_size 10**18", "django.setup", f'{_POOL}["min_size"]',
        f"{_OVER} 262143",
        {"OPTIONS": {"pool": {"min_size": 10**18, "max_size": 10**18}}},
        check_id="E002"),
    Bad("django", "num_workers 10**9", "django.setup", f'{_POOL}["num_workers"]',
        f"{_OVER} 100", {"OPTIONS": {"pool": {"num_workers": 10**9}}},
        check_id="E002"),
    Bad("django", "retry_after 10**30", "django.setup", "PGPOOL_RETRY_AFTER",
        f"{_OVER} 31536000 seconds", settings={"PGPOOL_RETRY_AFTER": 10**30},
        check_id="E003"),
    Bad("django", "keepalives_idle 0", "django.setup",
        f'{_DB}["OPTIONS"]["keepalives_idle"]', "TCP_KEEPIDLE, 1 to 32767",
        {"OPTIONS": {"keepalives_idle": 0, "pool": True}}, check_id="E004"),
]  # fmt: skip

ROWS += [
    pytest.param(row, id=f"{row.framework}-{row.where}-{row.label}")
    for row in (*FLASK_BOUND_ROWS, *DJANGO_BOUND_ROWS)
]


def test_the_table_has_at_least_30_rows_in_both_frameworks() -> None:
    assert len(ROWS) >= 30
    assert {row.where for row in FLASK_ROWS} == {"init_app", "check command"}
    assert {row.where for row in DJANGO_ROWS} == {"django.setup", "check command"}


# -- Flask ---------------------------------------------------------------------------


def flask_app(config: dict[str, Any]) -> Flask:
    app = Flask("bad_configuration")
    app.config.update(
        PGPOOL_CONNINFO=GOOD, PGPOOL_TIMEOUT=POOL_TIMEOUT, PGPOOL_MIN_SIZE=1
    )
    app.config.update(config)
    return app


def dsn_of(pg: PgServer, row: Bad) -> str:
    params = dict(row.dsn)
    if params.get("port") == "free":
        params["port"] = free_port()
    return pg.dsn(connect_timeout=CONNECT_TIMEOUT, **params)


@pytest.mark.parametrize("row", [r for r in ROWS if r.values[0].framework == "flask"])
def test_flask(row: Bad, request: pytest.FixtureRequest) -> None:
    if row.where == "init_app":
        with pytest.raises(ConfigurationError) as info:
            PgPool(flask_app(row.config))
        error = info.value
        assert error.setting == row.setting, str(error)
        assert row.says in str(error)
        assert str(error).startswith(f"{row.setting}: ")
        assert PASSWORD not in str(error) + repr(error)
        return
    pg: PgServer = request.getfixturevalue("pg_server")
    app = flask_app({"PGPOOL_CONNINFO": dsn_of(pg, row)})
    PgPool(app)
    try:
        started = time.monotonic()
        result = app.test_cli_runner().invoke(args=["pgpool", "check"])
        took = time.monotonic() - started
    finally:
        app.extensions["pgpool"].pools["default"].close()
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"{row.setting}: FAILED (")
    assert row.says in line
    assert took < POOL_TIMEOUT / 2
    assert pg.password not in result.output


# -- Django --------------------------------------------------------------------------


def django_entry(row: Bad, pg: PgServer | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ENGINE": "django_pgpool",
        "NAME": "appdb",
        "USER": "app",
        "PASSWORD": PASSWORD,
        "HOST": "127.0.0.1",
        "PORT": str(NO_SERVER_PORT),
        "OPTIONS": {"sslmode": "require", "pool": {"timeout": POOL_TIMEOUT}},
    }
    if pg is not None:
        params = dict(row.dsn)
        if params.get("port") == "free":
            params["port"] = free_port()
        entry.update(
            NAME=params.get("dbname", pg.dbname),
            USER=pg.user,
            PASSWORD=params.get("password", pg.password),
            HOST=params.get("host", pg.host),
            PORT=str(params.get("port", pg.port)),
        )
        entry["OPTIONS"]["connect_timeout"] = CONNECT_TIMEOUT
    options = row.config.get("OPTIONS")
    entry.update({k: v for k, v in row.config.items() if k != "OPTIONS"})
    if options is not None:
        entry["OPTIONS"] = {"sslmode": "require", **options}
    return entry


def write_project(tmp_path: Path, row: Bad, pg: PgServer | None = None) -> Path:
    """A settings module and a manage.py for the row, in *tmp_path*."""
    lines = [
        'SECRET_KEY = "bad-configuration-tests"',
        'INSTALLED_APPS = ["django_pgpool"]',
        "USE_TZ = True",
        f"DATABASES = {{'default': {django_entry(row, pg)!r}}}",
        *(f"{name} = {value!r}" for name, value in row.settings.items()),
    ]
    (tmp_path / "bad_settings.py").write_text("\n".join(lines) + "\n")
    manage = tmp_path / "manage.py"
    manage.write_text(
        "import sys\nfrom django.core.management import execute_from_command_line\n"
        "execute_from_command_line(sys.argv)\n"
    )
    return manage


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bad_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def check_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "(django_pgpool.E" in line]


@pytest.mark.parametrize("row", [r for r in ROWS if r.values[0].framework == "django"])
def test_django(
    row: Bad,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    check_id = f"django_pgpool.{row.check_id}"
    if row.where == "django.setup":
        # What a WSGI server does first: one error, with its id and setting.
        write_project(tmp_path, row)
        setup = run(tmp_path, "-c", "import django; django.setup()")
        assert setup.returncode == 1
        last = setup.stderr.strip().splitlines()
        [error] = check_lines(setup.stderr)
        assert f"({check_id}) " in error and row.setting in error, setup.stderr
        assert row.says in error
        assert "ImproperlyConfigured: django_pgpool's system checks" in "\n".join(last)
        assert PASSWORD not in setup.stderr
        # manage.py check: the same error as a system check, no traceback;
        # also with --database (which loads the alias first) and migrate
        # (case 15: a traceback instead of E002).
        commands = [("check",), ("check", "--database", "default")]
        if row.label == "pool option typo":
            commands.append(("migrate",))
        for command in commands:
            checked = run(tmp_path, "manage.py", *command)
            assert checked.returncode == 1
            assert "Traceback" not in checked.stderr, checked.stderr
            # (A valid alias is then connected to: no server listens there.)
            lines = check_lines(checked.stderr)
            assert [line for line in lines if "E006" not in line] == [error]
        # And in this process, from the check functions themselves.
        monkeypatch.setattr(
            django_settings, "DATABASES", {"default": django_entry(row)}
        )
        for name, value in row.settings.items():
            monkeypatch.setattr(django_settings, name, value, raising=False)
        messages = [
            m for m in (*check_databases(), *check_settings()) if m.is_serious()
        ]
        assert [m.id for m in messages] == [check_id]
        return
    pg: PgServer = request.getfixturevalue("pg_server")
    write_project(tmp_path, row, pg)
    for args in (("check", "--database", "default"), ("migrate",)):
        started = time.monotonic()
        result = run(tmp_path, "manage.py", *args)
        took = time.monotonic() - started
        assert result.returncode == 1
        assert "Traceback" not in result.stderr, result.stderr
        [error] = check_lines(result.stderr)
        assert f'({check_id}) DATABASES["default"]: ' in error
        assert row.says in error
        assert took < POOL_TIMEOUT / 2, "not the pool's timeout"
        assert pg.password not in result.stdout + result.stderr
