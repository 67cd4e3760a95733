"""The Flask app of the reliability tests: an app factory on a module-level PgPool.

The servers run tests.reliability.apps.flask_wsgi; the CLI runs create_app().
The PgPool and the views health, query and hold are the Flask tests' own
(tests.flask.apps.notes); the others are the reliability tests' only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from flask import Blueprint, Flask, Response, request, stream_with_context

from tests.flask.apps.notes import health, hold, pgpool, query
from tests.harness.postgres import query_backend_pid
from tests.reliability.apps import probe

bp = Blueprint("reliability", __name__)
bp.add_url_rule("/health", view_func=health)
bp.add_url_rule("/pool-health", view_func=pgpool.health_view(timeout=1.0))
bp.add_url_rule("/query", view_func=query)
bp.add_url_rule("/hold", view_func=hold)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["PGPOOL_CONNINFO"] = os.environ.get("PGPOOL_APP_DSN")
    pool = json.loads(os.environ.get("PGPOOL_APP_POOL", "{}"))
    app.config.update({f"PGPOOL_{key.upper()}": value for key, value in pool.items()})
    app.config.update(json.loads(os.environ.get("PGPOOL_APP_SETTINGS", "{}")))
    pgpool.init_app(app)
    app.register_blueprint(bp)
    return app


@bp.get("/slow")
def slow() -> dict[str, Any]:
    """Keep a connection borrowed, idle, for ?seconds= (warn_held_after)."""
    pid = query_backend_pid(pgpool.connection)
    time.sleep(float(request.args["seconds"]))
    return {"pid": os.getpid(), "backend": pid}


@bp.get("/raise")
def fail() -> dict[str, Any]:
    """Write, then fail: the write is rolled back, the connection given back."""
    pgpool.connection.execute(probe.INSERT, ["raised"])
    raise RuntimeError("the view fails after a write, on purpose")


@bp.get("/stream")
def stream() -> Response:
    """Stream rows read with the view's connection, in the view's transaction."""
    conn = pgpool.connection
    conn.execute(probe.INSERT, ["streamed"])

    def generate() -> Iterator[str]:
        for n in range(3):
            row = pgpool.connection.execute(probe.COUNT, ["streamed"]).fetchone()
            yield json.dumps({"chunk": n, "seen": row[0] if row else None}) + "\n"

    return Response(stream_with_context(generate()), mimetype="application/x-ndjson")


@bp.get("/forget")
def forget() -> dict[str, Any]:
    """Write and never commit."""
    pgpool.connection.execute(probe.INSERT, ["forgotten"])
    return {"pid": os.getpid(), "backend": query_backend_pid(pgpool.connection)}


@bp.get("/stats")
def stats() -> dict[str, Any]:
    return {"pid": os.getpid(), "stats": pgpool.stats()["default"]}


@bp.get("/probe")
def session_probe() -> dict[str, Any]:
    """Report the session state an earlier borrower left, then leave some."""
    conn = pgpool.connection
    seen = probe.report(conn)
    probe.leave_session_state(conn)
    conn.commit()  # the session state stays: only a reset can undo it
    leave = request.args.get("leave", "")
    if leave == "open":
        conn.execute(probe.INSERT, ["uncommitted"])
    elif leave == "failed":
        try:
            conn.execute("SELECT 1 / 0")
        except psycopg.errors.DivisionByZero:
            pass
    return {"pid": os.getpid(), "seen": seen}
