"""What not to do: the notes app with a plain psycopg_pool made at import.

``make demo`` serves this next to ``wsgi.py`` to show the bug: under uWSGI or
``gunicorn --preload`` every worker inherits the master's pool, sockets and TLS
state included.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from notes.schema import SCHEMA
from psycopg_pool import ConnectionPool

pool = ConnectionPool(
    os.environ["DATABASE_URL"], min_size=2, max_size=4, timeout=3, open=True
)
with pool.connection() as conn:
    conn.execute(SCHEMA)

app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, Any]:
    return {"ok": True}


@app.get("/notes")
def list_notes() -> dict[str, Any]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, body FROM notes ORDER BY id DESC LIMIT 5"
        ).fetchall()
        return {
            "notes": [{"id": i, "body": b} for i, b in rows],
            "pid": os.getpid(),
            "backend": conn.info.backend_pid,
        }
