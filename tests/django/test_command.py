"""``manage.py pgpool check|stats|config``, run as users run it."""

from __future__ import annotations

import json

import pytest

from pgpool_core.ops.snippets import read_snippet
from tests.django.support import MANAGE, run_project
from tests.harness.postgres import PgServer, free_port


def test_check_reports_the_server(app_env: dict[str, str], pg_server: PgServer) -> None:
    result = run_project(
        MANAGE, "pgpool", "check", env={**app_env, "WEB_CONCURRENCY": "3"}
    )

    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    where = f"{pg_server.user}@{pg_server.host}:{pg_server.port}/{pg_server.dbname}"
    assert line.startswith(f"default: ok, {where}, PostgreSQL ")
    assert "TLS on (TLSv1." in line
    assert "round trip " in line and "max_connections 300" in line
    assert line.endswith("pool min_size 1, max_size 4, 3 workers x 4 = 12 connections")
    assert pg_server.password not in result.stdout + result.stderr


def test_check_fails_with_the_reason_and_no_password(pg_server: PgServer) -> None:
    dsn = pg_server.dsn(port=free_port(), password="hunter2-Secret")
    result = run_project(MANAGE, "pgpool", "check", env={"PGPOOL_APP_DSN": dsn})

    assert result.returncode == 1
    assert "default: FAILED (" in result.stderr
    assert "): the database cannot be reached: OperationalError:" in result.stderr
    assert "Connection refused" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    # What the pool sent, its own defaults too.
    assert "connect_timeout=10" in result.stderr
    assert "keepalives=1" in result.stderr


def test_check_fails_on_a_bad_password_without_showing_it(
    pg_server: PgServer,
) -> None:
    dsn = pg_server.dsn(password="hunter2-Secret")
    result = run_project(MANAGE, "pgpool", "check", env={"PGPOOL_APP_DSN": dsn})

    assert result.returncode == 1
    assert "the database refused the login" in result.stderr
    assert "password authentication failed" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_stats_prints_json_without_the_password(
    app_env: dict[str, str], pg_server: PgServer
) -> None:
    result = run_project(MANAGE, "pgpool", "stats", env=app_env)

    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    default = stats["default"]
    assert default["ok"] is True and default["error"] is None
    assert default["pool"] == "django-default"
    assert (default["min_size"], default["max_size"]) == (1, 4)
    assert default["pid"] > 0
    assert default["stats"]["pool_size"] >= 1, "it waited for min_size"
    assert "password=********" in default["conninfo"]
    assert "sslmode=require" in default["conninfo"]
    assert pg_server.password not in result.stdout + result.stderr


@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_config_prints_the_tested_settings_for_this_project(
    app_env: dict[str, str], server: str
) -> None:
    result = run_project(MANAGE, "pgpool", "config", server, env=app_env)

    assert result.returncode == 0, result.stderr
    # The test project's WSGI_APPLICATION, not the documentation's "mysite".
    assert result.stdout == read_snippet(
        server, "django", app="tests.django.wsgi:application"
    )
    assert "mysite" not in result.stdout


@pytest.mark.parametrize(
    ("server", "line"), [("uwsgi", "processes = 2"), ("gunicorn", "workers = 2")]
)
def test_config_prints_pgpool_workers(
    app_env: dict[str, str], server: str, line: str
) -> None:
    """The printed worker processes are those capacity and check count with."""
    env = {**app_env, "PGPOOL_APP_WORKERS": "2"}
    result = run_project(MANAGE, "pgpool", "config", server, env=env)

    assert result.returncode == 0, result.stderr
    assert line in result.stdout.splitlines()
    assert result.stdout == read_snippet(
        server, "django", app="tests.django.wsgi:application", workers=2
    )


def test_unknown_alias_is_an_error(app_env: dict[str, str]) -> None:
    result = run_project(MANAGE, "pgpool", "check", "--database", "other", env=app_env)
    assert result.returncode == 1
    assert "No database 'other' in DATABASES." in result.stderr


def test_capacity_fits(app_env: dict[str, str], pg_server: PgServer) -> None:
    result = run_project(
        MANAGE,
        "pgpool",
        "capacity",
        "--hosts",
        "2",
        env={**app_env, "WEB_CONCURRENCY": "3"},
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "workers per host: 3 (from WEB_CONCURRENCY)"
    assert lines[1] == (
        "default: 2 host(s) x 3 worker(s) x max_size 4 = 24 connections at worst"
    )
    assert lines[2].startswith("default: the server allows max_connections 300 - ")
    assert lines[3].startswith("default: fits (24 of ")
    assert pg_server.password not in result.stdout + result.stderr


def test_capacity_does_not_fit(app_env: dict[str, str]) -> None:
    result = run_project(MANAGE, "pgpool", "capacity", "--workers", "100", env=app_env)

    assert result.returncode == 1
    assert "default: DOES NOT FIT: 400 > " in result.stdout
    assert "lower max_size to 2 or less" in result.stdout
    assert "does not fit or cannot be reached: default" in result.stderr


def test_capacity_says_which_database_cannot_be_reached(pg_server: PgServer) -> None:
    """One line, as flask pgpool capacity prints it (one flow for both)."""
    dsn = pg_server.dsn(password="hunter2-Secret")
    result = run_project(
        MANAGE, "pgpool", "capacity", "--workers", "2", env={"PGPOOL_APP_DSN": dsn}
    )

    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("default: ")]
    assert line.startswith("default: cannot connect: ")
    assert "FATAL: password authentication failed for user" in line
    assert "does not fit or cannot be reached: default" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("field", ["HOST", "NAME"])
def test_a_conninfo_in_host_or_name_is_refused_and_masked_everywhere(
    pg_server: PgServer, field: str
) -> None:
    """Case 04: a conninfo pasted into HOST or NAME, with a password in it.

    psycopg passes it on as it is (libpq does not expand a dbname given in a
    conninfo string): the HOST cannot be resolved, and the server says the
    NAME is no database. It is refused, naming the setting (E004 for the
    commands that run the system checks, ImproperlyConfigured for the others),
    and no output shows the password.
    """
    leak = "Wr0ngP@ss-Leak"
    if field == "HOST":
        value = f"host={pg_server.host} port={pg_server.port} password={leak}"
        dsn, what = pg_server.dsn(host=value), "written as the host name"
    else:
        value = f"dbname={pg_server.dbname} password='{leak}'"
        dsn, what = pg_server.dsn(dbname=value), "written as the database name"
    env = {"PGPOOL_APP_DSN": dsn, "PGPOOL_APP_POOL_TIMEOUT": "3"}
    outputs = []
    for args in (
        ("pgpool", "check"),
        ("pgpool", "stats"),
        ("pgpool", "capacity", "--workers", "2"),
        ("check", "--database", "default"),
        ("migrate",),
        # shell runs no system check: the first use of the alias says it.
        ("shell", "-c", "from django.db import connection as c; c.ensure_connection()"),
    ):
        result = run_project(MANAGE, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert f'DATABASES["default"]["{field}"]: ' in output, output
        assert what in output
        if args[0] != "shell":
            assert "(django_pgpool.E004)" in output and "Traceback" not in output
        outputs.append(output)
    assert "Leak" not in "\n".join(outputs)
