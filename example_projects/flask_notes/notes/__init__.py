"""A small notes API: Flask app factory + flask_pgpool."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from flask_pgpool import PgPool

pgpool = PgPool()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Make the app. DATABASE_URL is the database; nothing connects yet."""
    app = Flask(__name__)
    app.config["PGPOOL_CONNINFO"] = os.environ.get(
        "DATABASE_URL", "postgresql:///notes?sslmode=prefer"
    )
    app.config["PGPOOL_MIN_SIZE"] = 2
    app.config["PGPOOL_MAX_SIZE"] = 4
    app.config["PGPOOL_TIMEOUT"] = 5
    # "1" when DATABASE_URL points at PgBouncer in transaction mode.
    app.config["PGPOOL_PGBOUNCER"] = os.environ.get("PGPOOL_PGBOUNCER") == "1"
    app.config.update(config or {})
    pgpool.init_app(app)

    from . import api, schema

    app.register_blueprint(api.bp)
    schema.register(app)
    return app
