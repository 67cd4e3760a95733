"""The Django test project through a real PgBouncer in session mode, over TLS.

Session mode is PgBouncer's default ``pool_mode``; the pools keep their
session reset there (each client connection has a server session of its own).
PgBouncer, like Neon's and Supabase's poolers, refuses a startup parameter it
does not know: a pool that added ``options`` got no connection at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from tests.django.support import MANAGE, run_project
from tests.harness.pgbouncer import PgBouncer
from tests.harness.servers import RunningServer, run_load

pytestmark = pytest.mark.servers

APP = "tests.django.wsgi:application"


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_django_through_pgbouncer_in_session_mode(
    serve: Callable[..., RunningServer], session_pgbouncer: PgBouncer, kind: str
) -> None:
    log_before = len(session_pgbouncer.log())
    # Two workers with two connections each: each connection serves many
    # requests, each of which changes the time zone and leaves a marker.
    env = {
        "PGPOOL_APP_DSN": session_pgbouncer.dsn(),
        "DJANGO_SETTINGS_MODULE": "tests.django.settings",
        "PGPOOL_APP_POOL_MAX": "2",
    }
    server = serve(kind, APP, env=env, workers=2)

    result = run_load(server.port, ["/time-zone"] * 200, concurrency=8)

    print(f"django {kind} through PgBouncer (session mode): {result.summary()}")
    assert result.failures == [], result.summary()
    # Django's zone (UTC with USE_TZ), not the server sessions' own default
    # (conftest.SESSION_TIME_ZONE, where RESET ALL returns them), after every
    # reset; and nothing of the request before.
    seen = Counter(
        (body["seen"]["time_zone"], body["seen"]["marker"]) for body in result.bodies()
    )
    assert seen == {("UTC", None): 200}, seen
    reuse = Counter(body["backend"] for body in result.bodies())
    assert len(reuse) <= 4 and max(reuse.values()) > 1, reuse
    assert len(result.worker_pids()) == 2, result.summary()
    logged = session_pgbouncer.log()[log_before:]
    assert "unsupported startup parameter" not in logged


def test_manage_py_check_through_pgbouncer_in_session_mode(
    session_pgbouncer: PgBouncer,
) -> None:
    env = {"PGPOOL_APP_DSN": session_pgbouncer.dsn()}
    result = run_project(MANAGE, "pgpool", "check", env=env)

    assert result.returncode == 0, result.stderr
    server = session_pgbouncer.server
    where = f"{server.user}@127.0.0.1:{session_pgbouncer.port}/{server.dbname}"
    assert result.stdout.startswith(f"default: ok, {where}, "), result.stdout
