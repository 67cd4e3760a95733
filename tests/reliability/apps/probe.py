"""SQL shared by the Flask and Django apps: the session probe and the notes table."""

from __future__ import annotations

from typing import Any

import psycopg

#: Made by the tests (tests/reliability/support.py).
TABLE = "reliability_notes"
INSERT = f"INSERT INTO {TABLE} (note) VALUES (%s)"
COUNT = f"SELECT count(*) FROM {TABLE} WHERE note = %s"

_REPORT = f"""
SELECT pg_backend_pid(),
       current_setting('pgpool.config_mark', true),
       current_setting('pgpool.set_mark', true),
       current_setting('search_path'),
       to_regclass('pg_temp.reliability_leak') IS NOT NULL,
       (SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
       (SELECT count(*) FROM pg_listening_channels()),
       pg_current_xact_id_if_assigned() IS NOT NULL,
       (SELECT count(*) FROM {TABLE} WHERE note = 'uncommitted')
"""

#: What report() returns on a fresh session.
CLEAN = {
    "config_mark": None,
    "set_mark": None,
    "search_path": '"$user", public',
    "temp_table": False,
    "advisory_locks": 0,
    "listening": 0,
    "in_transaction": False,
    "uncommitted_rows": 0,
}


def report(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Return the session state that *conn* shows now, and its prepared statements.

    The first statement fails if an earlier borrower left a failed transaction.
    ``prepared_statements`` counts the statements an earlier borrower prepared
    on the server; the last statement is prepared (``prepare=True``): on a
    connection that comes back, psycopg runs it by name, which fails if a reset
    dropped it.
    """
    row = conn.execute(_REPORT).fetchone()
    assert row is not None
    prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    # A server-binding cursor: Django's own binds on the client, unprepared.
    with psycopg.Cursor(conn) as cursor:
        answer = cursor.execute("SELECT %s::int + 1", [41], prepare=True).fetchone()
    return {
        "backend": row[0],
        "state": {
            "config_mark": row[1] or None,
            "set_mark": row[2] or None,
            "search_path": row[3],
            "temp_table": row[4],
            "advisory_locks": row[5],
            "listening": row[6],
            "in_transaction": row[7],
            "uncommitted_rows": row[8],
        },
        "prepared_answer": answer[0] if answer else None,
        "prepared_statements": prepared[0] if prepared else None,
    }


def leave_session_state(conn: psycopg.Connection[Any]) -> None:
    """Change the session in every way a borrower may forget to undo."""
    for sql in (
        "SELECT set_config('pgpool.config_mark', 'left behind', false)",
        "SET pgpool.set_mark = 'left behind'",
        "SET search_path = leaked, public",
        "CREATE TEMP TABLE IF NOT EXISTS reliability_leak (x int)",
        "SELECT pg_advisory_lock(pg_backend_pid())",
        "LISTEN reliability_channel",
    ):
        conn.execute(sql)
