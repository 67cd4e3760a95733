"""The Flask contenders of ``make bench``: one endpoint, one small indexed query.

``BENCH_CONTENDER`` picks how the view gets its connection, ``BENCH_DSN`` is
the database. Every contender serves ``GET /q?id=N`` (``SELECT body FROM
bench_items WHERE id = N``, answered as JSON) and ``GET /health`` (no query).
Nothing connects at import: gunicorn preloads this module in its master.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from flask import Flask, request
from psycopg_pool import ConnectionPool

CONTENDER = os.environ.get("BENCH_CONTENDER", "flask_pgpool")
DSN = os.environ["BENCH_DSN"]
QUERY = "SELECT body FROM bench_items WHERE id = %s"
#: The pools' size, the same for every contender that takes one.
MIN_SIZE, MAX_SIZE = 2, 4

app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, Any]:
    return {"ok": True}


def _item_id() -> int:
    return request.args.get("id", 1, type=int)


if CONTENDER in ("flask_pgpool", "flask_pgpool_no_reset"):
    from flask_pgpool import PgPool

    app.config.update(
        PGPOOL_CONNINFO=DSN, PGPOOL_MIN_SIZE=MIN_SIZE, PGPOOL_MAX_SIZE=MAX_SIZE
    )
    if CONTENDER == "flask_pgpool_no_reset":
        # No session reset after each request: what fork safety alone costs.
        app.config["PGPOOL_RESET"] = None
    pgpool = PgPool(app)

    @app.get("/q")
    def query() -> dict[str, Any]:
        row = pgpool.connection.execute(QUERY, (_item_id(),)).fetchone()
        return {"body": row[0] if row else None}

elif CONTENDER == "hand_pool":
    # The floor: a plain psycopg_pool made by each worker after the fork (on
    # its first request), no reset, no check.
    _pool: ConnectionPool[Any] | None = None
    _pool_pid = 0

    def _get_pool() -> ConnectionPool[Any]:
        global _pool, _pool_pid
        if _pool is None or _pool_pid != os.getpid():
            _pool = ConnectionPool(DSN, min_size=MIN_SIZE, max_size=MAX_SIZE, open=True)
            _pool_pid = os.getpid()
        return _pool

    @app.get("/q")
    def query() -> dict[str, Any]:
        with _get_pool().connection() as conn:
            row = conn.execute(QUERY, (_item_id(),)).fetchone()
        return {"body": row[0] if row else None}

elif CONTENDER == "connect_per_request":
    # What people fall back to: a new TLS connection for every request.

    @app.get("/q")
    def query() -> dict[str, Any]:
        with psycopg.connect(DSN) as conn:
            row = conn.execute(QUERY, (_item_id(),)).fetchone()
        return {"body": row[0] if row else None}

elif CONTENDER == "flask_sqlalchemy":
    # Flask-SQLAlchemy on psycopg 3 with its default pool (QueuePool).
    from flask_sqlalchemy import SQLAlchemy
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy import URL, text

    params = conninfo_to_dict(DSN)
    app.config["SQLALCHEMY_DATABASE_URI"] = URL.create(
        "postgresql+psycopg",
        username=str(params.pop("user")),
        password=str(params.pop("password")),
        host=str(params.pop("host")),
        port=int(params.pop("port")),
        database=str(params.pop("dbname")),
        query={k: str(v) for k, v in params.items()},
    )
    db = SQLAlchemy(app)
    sql = text("SELECT body FROM bench_items WHERE id = :id")

    @app.get("/q")
    def query() -> dict[str, Any]:
        row = db.session.execute(sql, {"id": _item_id()}).first()
        return {"body": row[0] if row else None}

else:
    raise RuntimeError(f"unknown BENCH_CONTENDER {CONTENDER!r}")
