"""Settings of the example project: django_pgpool as the database ENGINE."""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django_pgpool",  # system checks and `manage.py pgpool`
    "notes",
]

MIDDLEWARE = [
    # A pool that cannot give a connection answers 503 + Retry-After.
    "django_pgpool.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_PGBOUNCER = os.environ.get("PGPOOL_PGBOUNCER") == "1"

# DATABASE_URL: a libpq connection string or URL.
_db = conninfo_to_dict(
    os.environ.get("DATABASE_URL", "postgresql:///notes?sslmode=prefer")
)
DATABASES = {
    "default": {
        "ENGINE": "django_pgpool",  # instead of django.db.backends.postgresql
        "NAME": _db.pop("dbname", "notes"),
        "USER": _db.pop("user", ""),
        "PASSWORD": _db.pop("password", ""),
        "HOST": _db.pop("host", ""),
        "PORT": _db.pop("port", ""),
        "OPTIONS": {
            **_db,  # sslmode and the rest
            "pool": {"min_size": 2, "max_size": 4, "timeout": 5},
            # True when DATABASE_URL points at PgBouncer in transaction mode.
            "pgbouncer": _PGBOUNCER,
        },
        # Server-side cursors need a session: not behind PgBouncer.
        "DISABLE_SERVER_SIDE_CURSORS": _PGBOUNCER,
    }
}
