"""A Flask app made by a factory on a module-level PgPool, as users write them.

Every test app comes from create_app(); tests.flask.apps.wsgi makes the one
the servers run. The reliability tests' app (tests.reliability.apps.flask_app)
serves this module's pgpool and its views health, query and hold.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, request, stream_with_context

from flask_pgpool import PgPool
from tests.harness.postgres import query_backend_pid

pgpool = PgPool()
bp = Blueprint("notes", __name__)


def create_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        PGPOOL_CONNINFO=os.environ.get("PGPOOL_APP_DSN"),
        PGPOOL_MIN_SIZE=1,
        PGPOOL_MAX_SIZE=2,
        PGPOOL_TIMEOUT=5,
    )
    app.config.update(config)
    pgpool.init_app(app)
    app.register_blueprint(bp)
    return app


@bp.get("/health")
def health() -> dict[str, Any]:
    return {"pid": os.getpid()}


@bp.get("/query")
def query() -> dict[str, Any]:
    return {"pid": os.getpid(), "backend": query_backend_pid(pgpool.connection)}


@bp.get("/hold")
def hold() -> dict[str, Any]:
    """Keep a connection busy for ?seconds=; say when the queries ran.

    The query starts with ``SELECT pg_sleep``: PgServer.wait_for_sleepers()
    sees it.
    """
    conn = pgpool.connection  # borrowed here, maybe after a wait
    started = time.time()
    conn.execute("SELECT pg_sleep(%s)", [float(request.args["seconds"])])
    backend = query_backend_pid(conn)
    return {
        "pid": os.getpid(),
        "backend": backend,
        "started": started,
        "ended": time.time(),
    }


@bp.get("/session")
def session() -> dict[str, Any]:
    """Report session state left by an earlier request, then leave some."""
    conn = pgpool.connection
    row = conn.execute(
        "SELECT pg_backend_pid(), current_setting('pgpool.mark', true),"
        " to_regclass('pg_temp.pgpool_mark') IS NOT NULL"
    ).fetchone()
    assert row is not None
    backend_pid, mark, temp_table = row
    conn.execute("SELECT set_config('pgpool.mark', 'left behind', false)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS pgpool_mark (x int)")
    conn.commit()
    leaked = []
    if mark:
        leaked.append(f"setting {mark!r}")
    if temp_table:
        leaked.append("temp table")
    return {"pid": os.getpid(), "backend": backend_pid, "leaked": leaked}


@bp.get("/stream")
def stream() -> Response:
    """Stream a JSON body; the generator uses the view's connection and transaction."""
    first = query_backend_pid(pgpool.connection)
    pgpool.connection.execute("SELECT set_config('pgpool.stream', 'open', true)")

    def generate() -> Iterator[str]:
        yield f'{{"pid": {os.getpid()}, "backend": {first}'
        row = pgpool.connection.execute(
            "SELECT pg_backend_pid(), current_setting('pgpool.stream', true)"
        ).fetchone()
        assert row is not None
        yield f', "later": {json.dumps(list(row))}}}'

    return Response(stream_with_context(generate()), mimetype="application/json")
