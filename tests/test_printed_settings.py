"""Issue 15: the server settings the commands print start this project.

A project made as users make them (``django-admin startproject shop``; a
Flask package with an app factory), the settings printed by its own command
(``manage.py pgpool config``, ``flask --app ... pgpool config``) written to
``gunicorn.conf.py`` or ``uwsgi.ini`` unchanged, and the real server started
with them, from the project's directory, as the snippets say: it serves a
view that queries the database. Before, both commands printed the
documentation's app (``mysite.wsgi:application``, ``wsgi:app``), which does
not exist in such a project.

Issue 26: the apps print while they load (as a start-up query's result in
``wsgi.py`` would), at import and in the factory, through ``print()`` and
straight to file descriptor 1: ``flask pgpool config ... > gunicorn.conf.py``
kept those lines in the file, a SyntaxError at start. Only the settings go
to standard output now; Django's settings.py runs before any command, so its
lines are kept out by ``--output``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.postgres import PgServer, free_port
from tests.harness.servers import RunningServer

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.servers

SHOP_VIEW = """
from django.db import connection
from django.http import JsonResponse


def health(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return JsonResponse({"db": cursor.fetchone()[0]})
"""

#: What the apps print while they load (never in the printed settings).
LOADING = "loading: the start-up query returned 1"

FLASK_PACKAGE = """
import json
import os

from flask import Flask

from flask_pgpool import PgPool

print("__LOADING__")
pgpool = PgPool()


def create_app():
    os.write(1, b"__LOADING__ (fd 1)\\n")
    app = Flask(__name__)
    app.config["PGPOOL_CONNINFO"] = os.environ["SHOP_DSN"]
    app.config["PGPOOL_MIN_SIZE"] = 1
    pgpool.init_app(app)

    @app.get("/health")
    def health():
        return {"db": pgpool.connection.execute("SELECT 1").fetchone()[0]}

    return app
""".replace("__LOADING__", LOADING)


def environment(pg: PgServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SHOP_DSN=pg.dsn(), PYTHONUNBUFFERED="1")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.fixture
def django_project(tmp_path: Path, pg_server: PgServer) -> Path:
    """``django-admin startproject shop``, its database on the test cluster."""
    subprocess.run(
        [str(BIN / "django-admin"), "startproject", "shop"],
        cwd=tmp_path,
        check=True,
        env=environment(pg_server),
        timeout=60,
    )
    project = tmp_path / "shop"
    settings = project / "shop" / "settings.py"
    text = settings.read_text()
    text = text.replace(
        "'django.contrib.staticfiles',",
        "'django.contrib.staticfiles',\n    'django_pgpool',",
    )
    text += f"""
ALLOWED_HOSTS = ["127.0.0.1"]
DATABASES = {{
    "default": {{
        "ENGINE": "django_pgpool",
        "NAME": {pg_server.dbname!r},
        "USER": {pg_server.user!r},
        "PASSWORD": {pg_server.password!r},
        "HOST": {pg_server.host!r},
        "PORT": {str(pg_server.port)!r},
        "OPTIONS": {{"sslmode": "require", "pool": {{"min_size": 1}}}},
    }}
}}
"""
    text += f"\nprint({LOADING!r})\n"
    settings.write_text(text)
    wsgi = project / "shop" / "wsgi.py"
    wsgi.write_text(f"print({LOADING!r})\n{wsgi.read_text()}")
    (project / "shop" / "views.py").write_text(SHOP_VIEW)
    urls = project / "shop" / "urls.py"
    urls.write_text(
        urls.read_text().replace(
            "urlpatterns = [",
            "from . import views\n\nurlpatterns = [\n    path('health', views.health),",
        )
    )
    return project


@pytest.fixture
def flask_project(tmp_path: Path) -> Path:
    """A package with an app factory, found by ``flask --app shopapp``."""
    project = tmp_path / "flask_shop"
    (project / "shopapp").mkdir(parents=True)
    (project / "shopapp" / "__init__.py").write_text(FLASK_PACKAGE)
    return project


def printed(project: Path, framework: str, server: str, env: dict[str, str]) -> str:
    """The settings as a user saves them: ``> file`` for Flask, Django's --output."""
    output = project / "printed.txt"
    if framework == "django":
        cmd = [sys.executable, "manage.py", "pgpool", "config", server]
        cmd += ["--output", output.name]
    else:
        cmd = [str(BIN / "flask"), "--app", "shopapp", "pgpool", "config", server]
    result = subprocess.run(
        cmd, cwd=project, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = output.read_text() if framework == "django" else result.stdout
    # What the app printed while it loaded went elsewhere.
    assert LOADING in result.stdout + result.stderr
    assert LOADING not in text
    return text


@pytest.fixture
def started() -> Iterator[list[RunningServer]]:
    servers: list[RunningServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.parametrize("server", ["gunicorn", "uwsgi"])
@pytest.mark.parametrize("framework", ["django", "flask"])
def test_the_printed_settings_start_the_project(
    request: pytest.FixtureRequest,
    pg_server: PgServer,
    started: list[RunningServer],
    framework: str,
    server: str,
) -> None:
    project: Path = request.getfixturevalue(f"{framework}_project")
    env = environment(pg_server)
    text = printed(project, framework, server, env)
    app = "shop.wsgi:application" if framework == "django" else "shopapp:create_app()"
    if server == "gunicorn":
        assert f'wsgi_app = "{app}"' in text.splitlines()
        config = project / "gunicorn.conf.py"
    else:
        assert f"module = {app}" in text.splitlines()
        config = project / "uwsgi.ini"
    config.write_text(text)

    port = free_port()
    if server == "gunicorn":
        cmd = [str(BIN / "gunicorn"), "-c", config.name, "--bind", f"127.0.0.1:{port}"]
    else:
        cmd = [
            str(BIN / "uwsgi"),
            "--ini", config.name,
            "--http-socket", f"127.0.0.1:{port}",
            "--virtualenv", sys.prefix,
        ]  # fmt: skip
    logfile = project / f"{server}.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningServer(server, proc, port, logfile)
    started.append(running)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, running.output()
        answer = running.get("/health", timeout=2.0)
        if answer.status == 200:
            break
        assert time.monotonic() < deadline, running.output()
        time.sleep(0.1)
    answers = [running.get("/health") for _ in range(8)]
    assert [a.status for a in answers] == [200] * 8, running.output()
    assert all(a.json()["db"] == 1 for a in answers)


@pytest.mark.parametrize(
    "command", [("check", "--json"), ("stats",), ("capacity", "--workers", "4")]
)
def test_the_flask_reports_hold_only_the_report(
    flask_project: Path, pg_server: PgServer, command: tuple[str, ...]
) -> None:
    """What the app prints while it loads goes to standard error, so that
    ``flask pgpool check --json`` and ``stats`` print JSON a script can read
    (the newcomer's health-check script failed on the app's first line)."""
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "shopapp", "pgpool", *command],
        cwd=flask_project,
        env=environment(pg_server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert LOADING in result.stderr
    assert LOADING not in result.stdout
    if command[0] != "capacity":
        assert json.loads(result.stdout)["default"]["ok"] is True
