"""gunicorn's gevent worker under preload, with the shipped gunicorn.conf.py.

gunicorn patches a gevent worker after ``post_fork``, long after the master
imported psycopg (the app, preloaded, and the conf's hooks import it): psycopg
then keeps a wait that blocks the whole worker, and Django's connections,
made thread-local in the master, are shared by every greenlet. A worker must
run its requests' queries side by side, each request on a connection of its
own, as it does without preload (the baseline: no preload, no hooks).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgpool_core.ops.snippets import read_snippet
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
from pgpool_core.servers.gunicorn import post_fork, pre_fork, when_ready, worker_exit
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
        "from pgpool_core import _green as green, _process as lifecycle\n"
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


def test_a_pool_made_before_a_patch_no_hook_saw_is_replaced_at_use(dsn: str) -> None:
    """A process patched late by code no hook knows: decided at use, not at hook time.

    Its pool, made before the patch, has real threads and psycopg's blocking
    waits: 8 greenlets each running a 0.5 s query took 4 s. At its next use
    the process is found patched, and a fresh pool serves them side by side.
    """
    code = (
        "import os, time\n"
        "from pgpool_core import ForkSafePool\n"
        "pool = ForkSafePool(os.environ['DSN'], min_size=1, max_size=8)\n"
        "with pool.connection() as conn:\n"
        "    conn.execute('SELECT 1')\n"
        "before = pool.pool\n"
        "from gevent import monkey\n"
        "monkey.patch_all()\n"
        "import gevent, psycopg.waiting\n"
        "def one():\n"
        "    with pool.connection() as conn:\n"
        "        conn.execute('SELECT pg_sleep(0.5)')\n"
        "started = time.monotonic()\n"
        "gevent.joinall([gevent.spawn(one) for _ in range(8)], raise_error=True)\n"
        "wall = time.monotonic() - started\n"
        "print(pool.pool is before, psycopg.waiting.wait.__name__, round(wall, 2))\n"
        "pool.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    same, wait, wall = proc.stdout.split()
    assert same == "False"
    assert wait == "wait_poll"
    assert float(wall) < 2.0  # 8 x 0.5 s one at a time: 4 s


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


# -- every server that patches, timed against time.sleep -------------------------------

GREENLETS = 16  # requests at once, each running a 1 s query or a 1 s time.sleep
NAP = 1.0
POOL_MAX = 12  # per worker: 2 workers run all 16 queries at once, even split 12/4

#: The app, with a route that sleeps without the database (the control).
GREEN_ENTRY_POINTS = {
    "flask": """\
from tests.flask.apps.notes import create_app, pgpool

inner = create_app(PGPOOL_MIN_SIZE={max}, PGPOOL_MAX_SIZE={max})
with inner.app_context():  # a query before the fork
    pgpool.connection.execute("SELECT 1")
""",
    "django": "from tests.django.wsgi import application as inner\n",
}

WITH_NAP = """\
import json, os, time


def app(environ, start_response):
    if environ["PATH_INFO"] != "/nap":
        return inner(environ, start_response)
    time.sleep(float(environ["QUERY_STRING"].partition("=")[2]))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({{"pid": os.getpid()}}).encode()]
"""

#: Added to the shipped uwsgi.ini: the gevent loop engine, patching each worker.
UWSGI_GEVENT_LOOP = f"""
gevent = {GREENLETS}
gevent-monkey-patch = true
"""


@pytest.mark.parametrize(
    ("server", "green", "framework", "lazy_apps"),
    [
        ("uwsgi", "gevent", "flask", False),
        ("uwsgi", "gevent", "django", False),
        ("uwsgi", "gevent", "flask", True),
        ("gunicorn", "gevent", "flask", False),
        ("gunicorn", "gevent", "django", False),
    ],
)
def test_green_server_runs_queries_as_fast_as_the_control(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    tmp_path: Path,
    server: str,
    green: str,
    framework: str,
    lazy_apps: bool,
) -> None:
    """Each server that monkey-patches its workers, with its shipped settings.

    uWSGI's gevent loop engine patches each worker after its postfork hooks,
    gunicorn's gevent worker after ``post_fork`` (gunicorn 25 dropped its
    eventlet worker). Before,
    under uWSGI psycopg kept the waits it chose at import, and the warm-up's
    pool real threads: one query held the whole worker (16 queries of 1 s
    took 8 s on 2 workers). The queries must take about as long as the same
    number of ``time.sleep(1)`` in the same server. With uWSGI's
    ``lazy-apps`` each worker imports the app before its patch (and the
    first one runs no postfork hook).
    """
    source = GREEN_ENTRY_POINTS[framework] + WITH_NAP
    (tmp_path / "wsgi.py").write_text(source.format(max=POOL_MAX))
    config = tmp_path / ("uwsgi.ini" if server == "uwsgi" else "gunicorn.conf.py")
    settings = read_snippet(server, framework, app="wsgi:app", workers=WORKERS)
    extra_args: list[str] = []
    if server == "uwsgi":
        settings += UWSGI_GEVENT_LOOP
    else:
        extra_args = ["--worker-class", green]
    config.write_text(settings)
    env: dict[str, Any] = {
        "PGPOOL_APP_DSN": pg_server.dsn(),
        "PGPOOL_APP_POOL_MIN": str(POOL_MAX),
        "PGPOOL_APP_POOL_MAX": str(POOL_MAX),
        "PYTHONPATH": str(REPO),
    }
    if framework == "django":
        env["DJANGO_SETTINGS_MODULE"] = "tests.django.settings"
    running = serve(
        server,
        "",
        cwd=tmp_path,
        config=config,
        env=env,
        lazy_apps=lazy_apps,
        extra_args=extra_args,
    )

    if server == "uwsgi":
        assert "running gevent loop engine" in running.output(), running.output()

    def timed(path: str) -> tuple[float, Any]:
        started = time.monotonic()
        result = run_load(running.port, [path] * GREENLETS, concurrency=GREENLETS)
        wall = time.monotonic() - started
        assert result.failures == [], result.summary()
        return wall, result

    timed("/hold?seconds=0")  # every worker's pool filled
    control, _ = timed(f"/nap?seconds={NAP}")
    wall, result = timed(f"/hold?seconds={NAP}")

    bodies = result.bodies()
    serial = GREENLETS / WORKERS * NAP  # one query at a time per worker
    print(
        f"{server} {green}, {framework}{', lazy-apps' * lazy_apps}:"
        f" {GREENLETS} x time.sleep({NAP}) {control:.1f} s,"
        f" {GREENLETS} x pg_sleep({NAP}) {wall:.1f} s (one at a time per worker:"
        f" {serial:.0f} s); at most {most_at_once(bodies)} queries at once in a"
        " worker"
    )
    assert wall < control + serial / 2, result.summary()
    assert most_at_once(bodies) >= 2
    assert shared_while_running(bodies) == []
    assert "Traceback" not in running.output(), running.output()[-3000:]
