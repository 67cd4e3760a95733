"""The WSGI module of the Flask app of the reliability tests.

The app is made at import and, unless PGPOOL_APP_IMPORT_QUERY is "0", queries
there: in a preloading server's master, before the fork, as real apps do.
"""

from __future__ import annotations

import os

from tests.reliability.apps.flask_app import create_app, pgpool

app = create_app()

if os.environ.get("PGPOOL_APP_IMPORT_QUERY", "1") != "0":
    with app.app_context():
        pgpool.connection.execute("SELECT 1")
