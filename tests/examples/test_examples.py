"""The example projects, served by every config they ship, under reads and writes."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from pgpool_core.ops.snippets import read_snippet
from tests.conftest import REPO
from tests.harness.postgres import PgServer
from tests.harness.servers import LoadResult, Response, RunningServer

pytestmark = pytest.mark.servers

EXAMPLES = REPO / "example_projects"
#: Example folder -> framework of its snippets.
FRAMEWORKS = {"flask_notes": "flask", "django_site": "django"}
CONFIGS = {"uwsgi": "uwsgi.ini", "gunicorn": "gunicorn.conf.py"}


def post_note(port: int, body: str) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/notes",
            json.dumps({"body": body}),
            {"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return Response(resp.status, resp.read())
    except Exception as err:
        return Response(0, b"", error=repr(err))
    finally:
        conn.close()


def read_and_write(server: RunningServer, count: int) -> LoadResult:
    """Send *count* requests, one in four a write, 16 at a time."""

    def one(i: int) -> Response:
        if i % 4 == 0:
            return post_note(server.port, f"note {i}")
        return server.get("/notes?limit=5")

    with ThreadPoolExecutor(16) as executor:
        return LoadResult(list(executor.map(one, range(count))))


@pytest.mark.parametrize("server", CONFIGS)
@pytest.mark.parametrize("example", FRAMEWORKS)
def test_configs_are_the_snippets(example: str, server: str) -> None:
    shipped = (EXAMPLES / example / CONFIGS[server]).read_text()
    assert shipped == read_snippet(server, FRAMEWORKS[example])


@pytest.mark.parametrize("server", CONFIGS)
@pytest.mark.parametrize("example", FRAMEWORKS)
def test_the_config_command_prints_the_shipped_config(
    pg_server: PgServer, example: str, server: str
) -> None:
    """``flask pgpool config`` and ``manage.py pgpool config``, run in the
    example for its own app, print the very file it ships: one source."""
    if example == "django_site":
        command = [sys.executable, "manage.py", "pgpool", "config", server]
    else:
        command = [sys.executable, "-m", "flask", "--app", "wsgi"]
        command += ["pgpool", "config", server]
    printed = subprocess.run(
        command,
        cwd=EXAMPLES / example,
        env={**os.environ, **example_env(example, pg_server.dsn())},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == (EXAMPLES / example / CONFIGS[server]).read_text()


@pytest.mark.parametrize("server", CONFIGS)
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_configs_bind_the_loopback_interface(framework: str, server: str) -> None:
    """As shipped, nothing listens on every interface (an app behind a proxy)."""
    text = read_snippet(server, framework)
    assert "127.0.0.1:8000" in text
    assert not re.search(r"(?<![\d.]):8000\b", text), text


@pytest.mark.parametrize("server", CONFIGS)
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_the_app_is_written_as_given(framework: str, server: str) -> None:
    """The app's line is the app, whatever its text: a factory's argument
    that looks like the snippets' placeholders is not filled in."""
    app = "shop:make('{framework}', '{app}')"
    line = {"gunicorn": f"wsgi_app = {json.dumps(app)}", "uwsgi": f"module = {app}"}
    text = read_snippet(server, framework, app=app)
    assert line[server] in text.splitlines(), text


def example_env(example: str, dsn: str) -> dict[str, str]:
    env = {"DATABASE_URL": dsn}
    if example == "django_site":
        # The Django tests of this suite set their own settings module.
        env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    return env


def prepare(example: str, dsn: str) -> None:
    """Create the example's tables."""
    if example == "django_site":
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=EXAMPLES / example,
            env={**os.environ, **example_env(example, dsn)},
            check=True,
            timeout=120,
        )


@pytest.mark.parametrize(
    ("kind", "lazy_apps"),
    [("uwsgi", False), ("uwsgi", True), ("gunicorn", False)],
    ids=["uwsgi", "uwsgi-lazy-apps", "gunicorn"],
)
@pytest.mark.parametrize("example", FRAMEWORKS)
def test_example_under_load(
    serve: Callable[..., RunningServer],
    pg_log: PgServer,
    example: str,
    kind: str,
    lazy_apps: bool,
) -> None:
    folder = EXAMPLES / example
    prepare(example, pg_log.dsn())
    position = pg_log.log_position()
    server = serve(
        kind,
        "",
        cwd=folder,
        config=folder / CONFIGS[kind],
        lazy_apps=lazy_apps,
        env=example_env(example, pg_log.dsn()),
    )

    result = read_and_write(server, 400)

    print(f"{example} {kind}: {result.summary()}")
    # uWSGI warns at start about harakiri without post-buffering.
    assert "WARNING: you have enabled harakiri" not in server.output()
    assert result.failures == [], result.summary()
    writes = [r for r in result.responses if r.status == 201]
    assert len(writes) == 100
    assert len(result.worker_pids()) >= 2, result.summary()
    assert result.shared_backends() == {}
    assert pg_log.bad_mac_lines(position) == []
