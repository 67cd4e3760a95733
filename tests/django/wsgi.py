"""WSGI entry point of the test project; it queries before the server forks.

The connection is left open on purpose: the master then holds a checked-out
connection that every worker inherits, the case the backend must survive.
PGPOOL_APP_UWSGI_HOOK=1 imports pgpool_core.servers.uwsgi, as the documentation advises.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.settings")

if os.environ.get("PGPOOL_APP_UWSGI_HOOK") == "1":
    import pgpool_core.servers.uwsgi  # noqa: F401

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402

application = get_wsgi_application()

connection.cursor().execute("SELECT 1")
