"""The notes blueprint: list, read and add notes."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, abort, request
from psycopg.rows import dict_row

from . import pgpool

bp = Blueprint("notes", __name__)


@bp.get("/health")
def health() -> dict[str, Any]:
    """Answer without touching the database (for load balancers)."""
    return {"ok": True}


@bp.get("/notes")
def list_notes() -> dict[str, Any]:
    limit = min(request.args.get("limit", 20, type=int), 100)
    cur = pgpool.connection.cursor(row_factory=dict_row)
    rows = cur.execute(
        "SELECT id, body, created_at FROM notes ORDER BY id DESC LIMIT %s", [limit]
    ).fetchall()
    return {"notes": rows, **_who()}


@bp.get("/notes/<int:note_id>")
def get_note(note_id: int) -> dict[str, Any]:
    cur = pgpool.connection.cursor(row_factory=dict_row)
    row = cur.execute(
        "SELECT id, body, created_at FROM notes WHERE id = %s", [note_id]
    ).fetchone()
    if row is None:
        abort(404)
    return row


@bp.post("/notes")
def add_note() -> tuple[dict[str, Any], int]:
    body = (request.get_json(silent=True) or {}).get("body")
    if not isinstance(body, str) or not body.strip():
        abort(400, "send JSON with a non-empty 'body'")
    # Commits are explicit: a transaction still open when the request ends is
    # rolled back.
    with pgpool.connection.transaction():
        row = pgpool.connection.execute(
            "INSERT INTO notes (body) VALUES (%s) RETURNING id", [body]
        ).fetchone()
    assert row is not None
    return {"id": row[0], **_who()}, 201


def _who() -> dict[str, int]:
    """Which worker and which PostgreSQL backend served this request."""
    return {"pid": os.getpid(), "backend": pgpool.connection.info.backend_pid}
