"""Flask extension for fork-safe psycopg connection pools (uWSGI, gunicorn --preload).

::

    from flask_pgpool import PgPool

    pgpool = PgPool()

    def create_app():
        app = Flask(__name__)
        app.config["PGPOOL_CONNINFO"] = "postgresql://app@db/app?sslmode=require"
        pgpool.init_app(app)
        return app

``pgpool.connection`` is the app context's psycopg connection, borrowed on
first use and given back (an open transaction rolled back) when the context
ends.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from .errors import ConfigurationError, DatabaseUnavailable
from .extension import PgPool, PgPoolState

__all__ = ["ConfigurationError", "DatabaseUnavailable", "PgPool", "PgPoolState"]

#: The installed distribution's version (psycopg-forksafe).
__version__ = _version("psycopg-forksafe")
