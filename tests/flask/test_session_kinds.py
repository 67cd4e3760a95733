"""Nothing of one request reaches the next through flask_pgpool, kind by kind.

The kinds, and how each is seen, are in tests/session_kinds.py. The app has one
connection: every request gets the same one.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.flask.apps.notes import pgpool
from tests.flask.conftest import MakeApp
from tests.harness.postgres import PgServer
from tests.session_kinds import KINDS, Kind


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_nothing_of_one_request_reaches_the_next(
    make_app: MakeApp, pg_server: PgServer, kind: Kind
) -> None:
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=1)
    dsn = pg_server.dsn()

    @app.get("/see")
    def see() -> dict[str, Any]:
        conn = pgpool.connection
        return {"backend": conn.info.backend_pid, "seen": kind.see(conn, dsn)}

    @app.get("/leave")
    def leave() -> str:
        kind.leave(pgpool.connection, dsn)
        return "left"

    client = app.test_client()
    first = client.get("/see").json
    assert client.get("/leave").status_code == 200
    assert client.get("/see").json == first
