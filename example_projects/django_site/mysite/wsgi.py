"""The WSGI entry point: ``mysite.wsgi:application`` for uWSGI and gunicorn.

The start-up check below queries the database at import: in preload mode that
is in the server's master, before it forks the workers, and the connection
stays open there. The stock backend's pool breaks on that (the workers share
its socket); django_pgpool makes it safe.
"""

import os

from django.core.wsgi import get_wsgi_application
from django.db import connection

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()

with connection.cursor() as cursor:
    cursor.execute("SELECT 1")
