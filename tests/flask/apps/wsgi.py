"""The WSGI app the server tests run (PGPOOL_APP_DSN is the database).

It is made at import and queries the database there: in a preforking
server's master, before the fork, as real apps do (a start-up check, a cache
warm-up).
"""

from __future__ import annotations

from tests.flask.apps.notes import create_app, pgpool

app = create_app()

with app.app_context():
    pgpool.connection.execute("SELECT 1")
