"""``flask pgpool check | stats | config``: what they print, with no password."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import Result
from flask import Flask

from pgpool_core.snippets import read_snippet
from tests.conftest import REPO
from tests.flask.conftest import MakeApp
from tests.harness.postgres import PgServer, free_port


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["pgpool", *args])


@pytest.fixture(scope="module")
def reports_db(pg_server: PgServer) -> str:
    name = "pgpool_flask_reports"
    if not pg_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]):
        pg_server.execute(f"CREATE DATABASE {name}")
    return name


def test_group_lists_its_commands(app: Flask) -> None:
    result = run(app, "--help")
    assert result.exit_code == 0, result.output
    for command in ("check", "stats", "config"):
        assert command in result.output


def test_check_reports_each_database(
    make_app: MakeApp, pg_server: PgServer, reports_db: str
) -> None:
    app = make_app(PGPOOL_BINDS={"reports": pg_server.dsn(dbname=reports_db)})
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines] == ["default", "reports"]
    version = pg_server.execute("SHOW server_version")[0][0]
    for line, dbname in zip(lines, [pg_server.dbname, reports_db], strict=True):
        assert (
            f"ok, {pg_server.user}@{pg_server.host}:{pg_server.port}/{dbname}" in line
        )
        assert f"PostgreSQL {version}" in line
        assert "TLS on (TLSv1." in line
        assert " ms, round trip " in line
    assert pg_server.password not in result.output


def test_check_says_when_tls_is_off(make_app: MakeApp, pg_server: PgServer) -> None:
    if pg_server.datadir is None:
        pytest.skip("needs the test cluster's Unix socket")
    # The cluster's Unix socket, the one way in without TLS.
    socket_dir = str(pg_server.datadir.parent)
    app = make_app(PGPOOL_CONNINFO=pg_server.dsn(host=socket_dir, sslmode="disable"))
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    assert ", TLS off, " in result.output


def test_check_says_why_the_server_refused(
    make_app: MakeApp, pg_server: PgServer
) -> None:
    app = make_app(PGPOOL_CONNINFO=pg_server.dsn(sslmode="disable"))
    result = run(app, "check")
    assert result.exit_code == 1
    assert "no encryption" in result.output, "pg_hba.conf takes TLS only"


def test_check_fails_with_the_reason(make_app: MakeApp, pg_server: PgServer) -> None:
    wrong = "not-the-Password-123"
    app = make_app(
        PGPOOL_BINDS={
            "gone": pg_server.dsn(port=free_port()),
            "denied": pg_server.dsn(password=wrong),
        }
    )
    result = run(app, "check")
    assert result.exit_code == 1
    lines = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert lines["default"].startswith("ok, ")
    assert lines["gone"].startswith("FAILED (")
    assert "Connection refused" in lines["gone"]
    assert "password authentication failed" in lines["denied"]
    assert "password=********" in lines["denied"]
    assert wrong not in result.output and pg_server.password not in result.output


def test_stats_prints_json_without_password(app: Flask, pg_server: PgServer) -> None:
    result = run(app, "stats")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    default = stats["default"]
    assert default["conninfo"].count("password=********") == 1
    assert default["pool_min"] == 1 and default["pool_max"] == 2
    assert default["pool_size"] >= 1, "it waited for min_size connections"
    assert default["pid"] == os.getpid()
    assert "error" not in default
    assert pg_server.password not in result.output


def test_stats_fails_when_the_pool_cannot_fill(
    make_app: MakeApp, pg_server: PgServer
) -> None:
    app = make_app(PGPOOL_CONNINFO=pg_server.dsn(port=free_port()), PGPOOL_TIMEOUT=0.5)
    result = run(app, "stats")
    assert result.exit_code == 1
    stats = json.loads(result.output)
    assert stats["default"]["error"].startswith("PoolTimeout: ")
    assert pg_server.password not in result.output


@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_config_prints_the_snippet(app: Flask, server: str) -> None:
    result = run(app, "config", server)
    assert result.exit_code == 0
    assert result.output == read_snippet(server, "flask")


def test_config_names_the_choices(app: Flask) -> None:
    result = run(app, "config", "waitress")
    assert result.exit_code == 2
    assert "'uwsgi', 'gunicorn'" in result.output


def test_the_flask_command(pg_server: PgServer) -> None:
    """The real ``flask`` command finds the group on an app made by a factory."""
    proc = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "flask"),
            "--app",
            "tests.flask.apps.notes:create_app()",
            "pgpool",
            "check",
        ],
        cwd=REPO,
        env={**os.environ, "PGPOOL_APP_DSN": pg_server.dsn()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("default: ok, ")
    assert pg_server.password not in proc.stdout + proc.stderr
