"""``flask pgpool check | stats | config``: what they print, with no password."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from flask_pgpool import PgPool
from pgpool_core.ops.snippets import read_snippet
from tests.conftest import REPO
from tests.flask.conftest import MakeApp
from tests.flask.support import FLASK, run_flask
from tests.harness.postgres import PgServer, free_port


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["pgpool", *args])


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
    assert default["ok"] is True and default["error"] is None
    assert default["conninfo"].count("password=********") == 1
    assert (default["min_size"], default["max_size"]) == (1, 2)
    assert default["stats"]["pool_min"] == 1 and default["stats"]["pool_max"] == 2
    assert default["stats"]["pool_size"] >= 1, "it waited for min_size connections"
    assert default["pid"] == os.getpid()
    assert pg_server.password not in result.output


def test_stats_fails_at_once_when_the_database_cannot_be_reached(
    make_app: MakeApp, pg_server: PgServer
) -> None:
    app = make_app(PGPOOL_CONNINFO=pg_server.dsn(port=free_port()), PGPOOL_TIMEOUT=30)
    started = time.monotonic()
    result = run(app, "stats")
    assert time.monotonic() - started < 10, "not the pool's timeout"
    assert result.exit_code == 1
    default = json.loads(result.output)["default"]
    assert default["ok"] is False
    assert default["reason"] == "the database cannot be reached"
    assert default["error"].startswith("ConnectFailed: ")
    assert "Connection refused" in default["error"]
    assert pg_server.password not in result.output


def test_stats_fails_when_the_pool_cannot_fill(
    make_app: MakeApp, pg_server: PgServer
) -> None:
    """The server takes one connection, the pool wants two: its timeout.

    Or ConnectFailed (a PoolTimeout) when both of the pool's first attempts
    are refused: PostgreSQL counts a role's sessions as each starts, so two
    starting at once may each find the other and both be refused.
    """
    pg_server.execute("CREATE ROLE only_one LOGIN PASSWORD 'one-Pw-1'")
    pg_server.execute("ALTER ROLE only_one CONNECTION LIMIT 1")
    try:
        app = make_app(
            PGPOOL_CONNINFO=pg_server.dsn(user="only_one", password="one-Pw-1"),
            PGPOOL_MIN_SIZE=2,
            PGPOOL_TIMEOUT=1,
        )
        result = run(app, "stats")
    finally:
        pg_server.execute("DROP ROLE only_one")
    assert result.exit_code == 1
    default = json.loads(result.output)["default"]
    if default["error"].startswith("ConnectFailed: "):
        assert "too many connections" in default["error"]
        assert default["reason"] == "the database cannot be reached"
    else:
        assert default["error"].startswith("PoolTimeout: ")
        assert default["reason"] == "no connection available in the pool"


@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_config_prints_the_snippet_for_this_app(app: Flask, server: str) -> None:
    """The app of the test runner: made by tests.flask.apps.notes's factory."""
    result = run(app, "config", server)
    assert result.exit_code == 0
    assert result.output == read_snippet(
        server, "flask", app="tests.flask.apps.notes:create_app()"
    )
    assert "wsgi:app" not in result.output


@pytest.mark.parametrize(
    ("given", "printed"),
    [
        ("tests.flask.apps.notes:create_app()", "tests.flask.apps.notes:create_app()"),
        ("tests/flask/apps/wsgi.py", "tests.flask.apps.wsgi:app"),
        ("tests.flask.apps.wsgi", "tests.flask.apps.wsgi:app"),
    ],
)
def test_config_names_the_app_the_flask_command_loads(
    pg_server: PgServer, given: str, printed: str
) -> None:
    proc = run_flask(
        given,
        "pgpool",
        "config",
        "gunicorn",
        env={"PGPOOL_APP_DSN": pg_server.dsn()},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f'wsgi_app = "{printed}"' in proc.stdout.splitlines()


def test_config_names_the_choices(app: Flask) -> None:
    result = run(app, "config", "waitress")
    assert result.exit_code == 2
    assert "'uwsgi', 'gunicorn'" in result.output


@pytest.mark.parametrize("command", ["", "check", "stats", "capacity", "config"])
def test_the_help_is_plain_text(app: Flask, command: str) -> None:
    """Issue 26: --help showed the docstrings' reST (``flask``, :mod:)."""
    result = run(app, *command.split(), "--help")
    assert result.exit_code == 0, result.output
    for markup in ("``", ":mod:", ":func:", ":class:", ":doc:"):
        assert markup not in result.output


def test_without_the_app_the_command_says_how_to_name_it(tmp_path: Path) -> None:
    """Issue 26: it read as "No such command 'pgpool'", as if not installed."""
    env = {k: v for k, v in os.environ.items() if k != "FLASK_APP"}
    for args in (["check"], ["config", "gunicorn"]):
        proc = subprocess.run(
            [FLASK, "pgpool", *args],
            cwd=tmp_path,  # no wsgi.py, no app.py
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2
        assert "No such command" not in proc.stderr
        assert "--app" in proc.stderr and "FLASK_APP" in proc.stderr, proc.stderr
    help_text = subprocess.run(
        [FLASK, "pgpool", "--help"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert help_text.returncode == 0
    assert "--app" in help_text.stdout


def test_an_app_without_the_extension_says_so(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask('plain')\n")
    proc = subprocess.run(
        [FLASK, "pgpool", "check"], cwd=tmp_path, env=dict(os.environ),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "'plain' does not use flask_pgpool: call pgpool.init_app(app)" in (
        proc.stderr
    )


def test_the_flask_command(pg_server: PgServer) -> None:
    """The real ``flask`` command finds the group on an app made by a factory."""
    proc = run_flask(
        "tests.flask.apps.notes:create_app()",
        "pgpool",
        "check",
        env={"PGPOOL_APP_DSN": pg_server.dsn()},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("default: ok, ")
    assert pg_server.password not in proc.stdout + proc.stderr


def test_capacity_fits(
    make_app: MakeApp, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    app = make_app(PGPOOL_MAX_SIZE=4)
    result = run(app, "capacity", "--hosts", "3", "--workers", "4")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "default: 3 host(s) x 4 worker(s) x max_size 4 = 48 connections at worst"
    )
    assert lines[1].startswith("default: the server allows max_connections 300")
    assert lines[2].startswith("default: fits (48 of ")
    assert pg_server.password not in result.output


def test_capacity_says_what_to_change(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "30")
    app = make_app(PGPOOL_MAX_SIZE=10)
    result = run(app, "capacity", "--celery", "10")

    assert result.exit_code == 1, result.output
    assert result.output.startswith("workers per host: 30 (from WEB_CONCURRENCY)\n")
    assert "1 host(s) x 10 Celery child(ren) x max_size 10 = 100, 400 connections" in (
        result.output
    )
    assert "DOES NOT FIT: 400 > " in result.output
    assert "lower max_size to 7 or less" in result.output
    assert "PgBouncer in transaction mode" in result.output


def test_capacity_behind_pgbouncer_points_at_pgbouncer(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    app = make_app(PGPOOL_MAX_SIZE=10, PGPOOL_PGBOUNCER=True)
    result = run(app, "capacity", "--workers", "100")

    assert result.exit_code == 0, result.output
    assert "= 1000 connections at worst" in result.output
    assert "behind PgBouncer" in result.output and "max_client_conn" in result.output


def test_capacity_says_which_database_cannot_be_reached(
    make_app: MakeApp, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line, as manage.py pgpool capacity prints it (one flow for both)."""
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    wrong = "not-the-Password-123"
    app = make_app(PGPOOL_BINDS={"denied": pg_server.dsn(password=wrong)})
    result = run(app, "capacity", "--workers", "2")

    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("default: 1 host(s) x 2 worker(s) x max_size ")
    (denied,) = [line for line in lines if line.startswith("denied: ")]
    assert denied.startswith("denied: cannot connect: ")
    assert "FATAL: password authentication failed for user" in denied
    assert wrong not in result.output and pg_server.password not in result.output


def test_capacity_without_a_worker_count_asks_for_one(
    app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.chdir(tmp_path)  # no uwsgi.ini or gunicorn.conf.py here
    result = run(app, "capacity")

    assert result.exit_code == 2
    assert "give --workers" in result.output


def test_capacity_reads_the_workers_of_the_uwsgi_ini_here(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.chdir(REPO / "example_projects" / "flask_notes")
    result = run(app, "capacity")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("workers per host: 4 (from ./uwsgi.ini)\n")
    assert "1 host(s) x 4 worker(s) x max_size 2 = 8" in result.output


@pytest.mark.parametrize(
    ("conf", "sizes", "web"),
    [
        ("workers = 4\n", "min_size 1, max_size 1 (gunicorn sync worker", 1),
        ("workers = 4\nthreads = 8\n", "min_size 1, max_size 8 (gunicorn gthread", 8),
    ],
)
def test_capacity_sizes_unset_pools_as_the_workers_do(
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    conf: str,
    sizes: str,
    web: int,
) -> None:
    """No size set: the command counts the sizes the workers will choose from
    ./gunicorn.conf.py (a Celery prefork child: 1), not psycopg_pool's 4."""
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gunicorn.conf.py").write_text(conf)
    app = Flask("sizing")
    app.config["PGPOOL_CONNINFO"] = pg_server.dsn()  # no size set
    PgPool(app)
    result = run(app, "capacity", "--hosts", "3", "--celery", "8")

    assert result.exit_code == 0, result.output
    total = 3 * 4 * web + 3 * 8
    assert (
        f"default: 3 host(s) x 4 worker(s) x max_size {web} = {3 * 4 * web}"
        f" + 3 host(s) x 8 Celery child(ren) x max_size 1 = 24, {total}"
        " connections at worst"
    ) in result.output
    assert f"default: each worker: {sizes}" in result.output
    assert f"fits ({total} of " in result.output
