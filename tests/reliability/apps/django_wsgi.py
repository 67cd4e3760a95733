"""WSGI entry point of the Django app of the reliability tests.

Unless PGPOOL_APP_IMPORT_QUERY is "0", it queries at import (in a preloading
server's master) and leaves the connection open, as tests/django/wsgi.py does.
"""

from __future__ import annotations

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.reliability.apps.django_settings"

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402

application = get_wsgi_application()

if os.environ.get("PGPOOL_APP_IMPORT_QUERY", "1") != "0":
    connection.cursor().execute("SELECT 1")
