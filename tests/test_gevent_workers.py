"""gunicorn's gevent worker under preload, with the shipped gunicorn.conf.py.

gunicorn patches a gevent worker after ``post_fork``, long after the master
imported psycopg (the app, preloaded, and the conf's hooks import it): psycopg
then keeps a wait that blocks the whole worker, and Django's connections,
made thread-local in the master, are shared by every greenlet. A worker must
run its requests' queries side by side, each request on a connection of its
own, as it does without preload (the baseline: no preload, no hooks).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgpool_core.snippets import read_snippet
from tests.conftest import REPO
from tests.harness.overlap import most_at_once, shared_while_running
from tests.harness.postgres import PgServer
from tests.harness.servers import RunningServer, run_load

pytestmark = [pytest.mark.servers, pytest.mark.slow]

WORKERS = 2
REQUESTS = 60
HOLD = 0.3  # seconds each request holds its connection in a query

#: The WSGI module each framework's shipped conf names, in a project of its own.
ENTRY_POINTS = {
    "flask": ("wsgi.py", "from tests.flask.apps.wsgi import app  # noqa: F401\n"),
    "django": (
        "mysite/wsgi.py",
        "from tests.django.wsgi import application  # noqa: F401\n",
    ),
}

#: Without preload and without the hooks: the app is imported after the patch.
BASELINE = """\
wsgi_app = {wsgi_app!r}
preload_app = False
"""

#: The hooks as the README gave them before post_worker_init was added.
HOOKS_WITHOUT_POST_WORKER_INIT = """\
wsgi_app = {wsgi_app!r}
preload_app = True
from pgpool_core.gunicorn import post_fork, pre_fork, when_ready, worker_exit
"""


def project(tmp_path: Path, framework: str, conf: str) -> Path:
    """Write the project's WSGI module and its gunicorn.conf.py; return the conf."""
    module, source = ENTRY_POINTS[framework]
    (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / module).write_text(source)
    if conf == "shipped":
        text = read_snippet("gunicorn", framework)
    else:
        wsgi_app = "wsgi:app" if framework == "flask" else "mysite.wsgi:application"
        template = BASELINE if conf == "baseline" else HOOKS_WITHOUT_POST_WORKER_INIT
        text = template.format(wsgi_app=wsgi_app)
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(text)
    return config


@pytest.mark.parametrize("framework", ["flask", "django"])
@pytest.mark.parametrize("conf", ["baseline", "shipped"])
def test_gevent_worker_runs_queries_side_by_side(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    tmp_path: Path,
    framework: str,
    conf: str,
) -> None:
    run(serve, pg_server, tmp_path, framework, conf)


def test_gevent_worker_with_the_earlier_hooks(
    serve: Callable[..., RunningServer], pg_server: PgServer, tmp_path: Path
) -> None:
    """A gunicorn.conf.py without post_worker_init works too (no warm-up)."""
    run(serve, pg_server, tmp_path, "flask", "earlier")


def test_the_pool_creation_lock_made_before_the_patch_is_not_kept() -> None:
    """post_fork abandons the inherited pools before gevent patches the worker.

    The lock it makes for creating pools is then a real one: the first
    requests, side by side, would wait for it as one greenlet held it while
    starting the pool's threads, and the worker would hang for good (2 of 60
    requests timed out now and then). After the patch it must be gevent's.
    """
    code = (
        "from pgpool_core import green, lifecycle\n"
        "before = lifecycle.process_lock()\n"
        "from gevent import monkey\n"
        "monkey.patch_all()\n"
        "green.after_patch()\n"
        "after = lifecycle.process_lock()\n"
        "print(type(before).__module__, type(after).__module__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.split()
    assert before == "_thread"
    assert after.startswith("gevent"), proc.stdout


def run(
    serve: Callable[..., RunningServer],
    pg: PgServer,
    tmp_path: Path,
    framework: str,
    conf: str,
) -> None:
    config = project(tmp_path, framework, conf)
    env: dict[str, Any] = {"PGPOOL_APP_DSN": pg.dsn(), "PYTHONPATH": str(REPO)}
    if framework == "django":
        env["DJANGO_SETTINGS_MODULE"] = "tests.django.settings"
    server = serve(
        "gunicorn",
        "",
        cwd=tmp_path,
        config=config,
        env=env,
        extra_args=["--worker-class", "gevent", "--workers", str(WORKERS)],
    )
    path = f"/hold?seconds={HOLD}"

    started = time.monotonic()
    result = run_load(server.port, [path] * REQUESTS, concurrency=20, timeout=30)
    wall = time.monotonic() - started

    bodies = result.bodies()
    most = most_at_once(bodies)
    ok = len(result.responses) - len(result.failures)
    print(
        f"gunicorn -k gevent, {framework}, {conf}: {ok}/{REQUESTS} ok in"
        f" {wall:.1f} s, at most {most} queries at once in a worker;"
        f" {result.summary()}"
    )
    assert result.failures == [], result.summary()
    assert len(result.worker_pids()) == WORKERS, result.summary()
    # Cooperative waits: a worker runs several requests' queries at once...
    assert most >= 2, result.summary()
    # ...each on a connection of its own.
    assert shared_while_running(bodies) == []
    assert "Traceback" not in server.output(), server.output()[-3000:]
