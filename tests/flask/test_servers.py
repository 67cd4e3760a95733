"""flask_pgpool under real preforking servers; the app queries in the master."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.harness.forking import fork_problems
from tests.harness.postgres import PgServer
from tests.harness.servers import RunningServer, run_load

pytestmark = pytest.mark.servers

#: 400 plain queries, 100 session-state probes, 20 streamed responses, mixed.
PATHS = [
    path
    for path in itertools.chain.from_iterable(
        itertools.zip_longest(["/query"] * 400, ["/session"] * 100, ["/stream"] * 20)
    )
    if path
]


@pytest.mark.parametrize(
    ("kind", "snippet"),
    [("uwsgi", False), ("gunicorn", False), ("uwsgi", True), ("gunicorn", True)],
    ids=["uwsgi", "gunicorn", "uwsgi-config-snippet", "gunicorn-config-snippet"],
)
def test_flask_app_under_server(
    serve: Callable[..., RunningServer],
    pg_log: PgServer,
    tmp_path: Path,
    kind: str,
    snippet: bool,
) -> None:
    """``--master --processes 4`` / ``-w 4 --preload``, or the printed settings."""
    position = pg_log.log_position()
    env = {"PGPOOL_APP_DSN": pg_log.dsn()}
    if snippet:
        # What `flask pgpool config <server>` prints, as the server's config,
        # with the wsgi.py it names.
        config = tmp_path / ("uwsgi.ini" if kind == "uwsgi" else "gunicorn.conf.py")
        config.write_text(printed_config(kind))
        (tmp_path / "wsgi.py").write_text("from tests.flask.apps.wsgi import app\n")
        env["PYTHONPATH"] = str(REPO)
        server = serve(kind, "", cwd=tmp_path, config=config, env=env)
    else:
        server = serve(kind, "tests.flask.apps.wsgi:app", env=env, workers=4)

    result = run_load(server.port, PATHS, concurrency=16)

    print(f"{kind}{' (config snippet)' if snippet else ''}: {result.summary()}")
    assert fork_problems(result, pg_log, position, parent=server.proc.pid) == []
    assert len(result.worker_pids()) >= 2, result.summary()
    bodies = result.bodies()
    probes = [b for b in bodies if "leaked" in b]
    assert len(probes) == 100
    assert [b for b in probes if b["leaked"]] == []
    reuse = Counter(b["backend"] for b in probes)
    assert max(reuse.values()) > 1, "connections were reused between requests"
    streams = [b for b in bodies if "later" in b]
    assert len(streams) == 20
    for body in streams:
        assert body["later"] == [body["backend"], "open"], body
    assert pg_log.password not in server.output()


def printed_config(kind: str) -> str:
    from tests.flask.apps.notes import create_app

    app = create_app(PGPOOL_CONNINFO="host=localhost")
    result = app.test_cli_runner().invoke(args=["pgpool", "config", kind])
    assert result.exit_code == 0, result.output
    return result.output
