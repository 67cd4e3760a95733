"""Django's PostgreSQL backend with a fork-safe psycopg pool.

Use it as a database ENGINE::

    DATABASES = {
        "default": {
            "ENGINE": "django_pgpool",
            "NAME": "app",
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 8}},
        }
    }

Add ``"django_pgpool"`` to INSTALLED_APPS for its system checks and the
``manage.py pgpool`` command, and
``"django_pgpool.middleware.DatabaseUnavailableMiddleware"`` to MIDDLEWARE to
answer 503 when no connection can be had.
"""

from __future__ import annotations

from importlib.metadata import version as _version

__all__: list[str] = []

#: The installed distribution's version (psycopg-forksafe).
__version__ = _version("psycopg-forksafe")
