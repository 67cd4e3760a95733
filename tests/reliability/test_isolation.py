"""Issue 7, scenario 8: no request sees the session state an earlier one left.

Each probe request reports what its connection shows, then leaves every kind
of session state behind (``set_config(..., false)``, ``SET``, a temporary
table, an advisory lock, ``LISTEN``) and, in turn, an open transaction with a
write, a failed transaction, or nothing more. Two workers with two connections
each serve 150 probes: every connection serves many. The probe also runs a
prepared statement, which psycopg reuses on a connection that comes back.

tests/flask/test_servers.py and tests/django/test_servers.py check a few kinds
of state under both servers; this adds the others, transactions and prepared
statements, for both frameworks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from tests.harness.postgres import PgServer
from tests.harness.servers import RunningServer, run_load
from tests.reliability.apps.probe import CLEAN
from tests.reliability.support import FRAMEWORKS, serve_app

pytestmark = pytest.mark.servers


@pytest.mark.parametrize("app", FRAMEWORKS)
def test_session_state_never_reaches_the_next_borrower(
    serve: Callable[..., RunningServer],
    pg_server: PgServer,
    notes_table: str,
    app: str,
) -> None:
    server = serve_app(
        serve,
        app,
        pg_server,
        workers=2,
        pool={"min_size": 2, "max_size": 2},
        # Django disables psycopg's prepared statements unless told.
        database={"OPTIONS": {"prepare_threshold": 5}},
    )
    paths = ["/probe?leave=open", "/probe?leave=failed", "/probe"] * 50

    result = run_load(server.port, paths, concurrency=4)

    print(f"RELIABILITY {app} session isolation: {result.summary()}")
    assert result.failures == [], result.summary()
    seen = [body["seen"] for body in result.bodies()]
    assert len(seen) == len(paths)
    leaks = [s["state"] for s in seen if s["state"] != CLEAN]
    assert leaks == [], f"{len(leaks)} requests saw an earlier one's state: {leaks[0]}"
    assert {s["prepared_answer"] for s in seen} == {42}
    reuse = Counter(s["backend"] for s in seen)
    assert len(reuse) <= 4 and max(reuse.values()) > 10, reuse
    # Statements an earlier borrower prepared are still there, and work. (A
    # rollback makes psycopg drop them: only a probe after one that committed
    # finds them.)
    assert sum(1 for s in seen if s["prepared_statements"] > 0) > len(paths) // 6
    assert pg_server.execute(f"SELECT count(*) FROM {notes_table}") == [(0,)]
