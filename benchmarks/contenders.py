"""The contenders of the benchmarks: how each Flask app and Django database is made.

One home for both runs: ``flask_app.py`` and ``django_app.py`` serve one
contender each under gunicorn (``run.py``), ``micro.py`` calls several in one
process. Every contender answers ``GET /q?id=N`` with one small indexed query
(``SELECT body FROM bench_items WHERE id = N``) as JSON, and ``GET /health``
without a query. Nothing connects when an app is made: gunicorn preloads it
in its master.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from flask import Flask, request
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

QUERY = "SELECT body FROM bench_items WHERE id = %s"
#: The pools' size, the same for every contender that takes one.
MIN_SIZE, MAX_SIZE = 2, 4

#: The Flask contenders, the baseline first.
FLASK = [
    "hand_pool",
    "flask_pgpool",
    "flask_pgpool_no_reset",
    "connect_per_request",
    "flask_sqlalchemy",
]
#: The Django contenders, the baseline first.
DJANGO = [
    "django_native_pool",
    "django_pgpool",
    "django_pgpool_no_reset",
    "conn_max_age_60",
    "django_db_connection_pool",
]
LABELS = {
    "hand_pool": "hand-written pool per worker",
    "flask_pgpool": "flask_pgpool",
    "flask_pgpool_no_reset": "flask_pgpool, PGPOOL_RESET None",
    "connect_per_request": "connect per request (TLS)",
    "flask_sqlalchemy": "Flask-SQLAlchemy (QueuePool)",
    "django_native_pool": "Django native pool",
    "django_pgpool": "django_pgpool",
    "django_pgpool_no_reset": 'django_pgpool, "reset" None',
    "conn_max_age_60": "CONN_MAX_AGE=60",
    "django_db_connection_pool": "django-db-connection-pool",
}


# -- Flask -------------------------------------------------------------------


def flask_app(contender: str, dsn: str) -> Flask:
    """Return the Flask app of *contender*, connecting to *dsn*."""
    app = Flask(f"bench_{contender}")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    def item_id() -> int:
        return request.args.get("id", 1, type=int)

    if contender in ("flask_pgpool", "flask_pgpool_no_reset"):
        from flask_pgpool import PgPool

        app.config.update(
            PGPOOL_CONNINFO=dsn, PGPOOL_MIN_SIZE=MIN_SIZE, PGPOOL_MAX_SIZE=MAX_SIZE
        )
        if contender == "flask_pgpool_no_reset":
            # No session reset after each request: what fork safety alone costs.
            app.config["PGPOOL_RESET"] = None
        pgpool = PgPool(app)

        @app.get("/q")
        def query() -> dict[str, Any]:
            row = pgpool.connection.execute(QUERY, (item_id(),)).fetchone()
            return {"body": row[0] if row else None}

        @app.get("/borrow")
        def borrow() -> dict[str, Any]:
            # Borrowed, given back when the app context ends.
            return {"ok": not pgpool.connection.closed}

    elif contender == "hand_pool":
        # The floor: a plain psycopg_pool made by each worker after the fork
        # (on its first request), no reset, no check.
        pools: dict[int, ConnectionPool[Any]] = {}

        def get_pool() -> ConnectionPool[Any]:
            pool = pools.get(os.getpid())
            if pool is None:
                pools.clear()
                pool = pools[os.getpid()] = ConnectionPool(
                    dsn, min_size=MIN_SIZE, max_size=MAX_SIZE, open=True
                )
            return pool

        app.extensions["bench_pools"] = pools

        @app.get("/q")
        def query() -> dict[str, Any]:
            with get_pool().connection() as conn:
                row = conn.execute(QUERY, (item_id(),)).fetchone()
            return {"body": row[0] if row else None}

        @app.get("/borrow")
        def borrow() -> dict[str, Any]:
            with get_pool().connection():
                pass
            return {"ok": True}

    elif contender == "connect_per_request":
        # What people fall back to: a new TLS connection for every request.

        @app.get("/q")
        def query() -> dict[str, Any]:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(QUERY, (item_id(),)).fetchone()
            return {"body": row[0] if row else None}

    elif contender == "flask_sqlalchemy":
        # Flask-SQLAlchemy on psycopg 3 with its default pool (QueuePool).
        from flask_sqlalchemy import SQLAlchemy
        from sqlalchemy import URL, text

        params = conninfo_to_dict(dsn)
        app.config["SQLALCHEMY_DATABASE_URI"] = URL.create(
            "postgresql+psycopg",
            username=str(params.pop("user")),
            password=str(params.pop("password")),
            host=str(params.pop("host")),
            port=int(params.pop("port")),
            database=str(params.pop("dbname")),
            query={k: str(v) for k, v in params.items()},
        )
        db = SQLAlchemy(app)
        sql = text("SELECT body FROM bench_items WHERE id = :id")

        @app.get("/q")
        def query() -> dict[str, Any]:
            row = db.session.execute(sql, {"id": item_id()}).first()
            return {"body": row[0] if row else None}

    else:
        raise ValueError(f"unknown Flask contender {contender!r}")
    return app


def close_flask_app(app: Flask) -> None:
    """Close the pools *app* made in this process (micro.py's clean-up)."""
    if "pgpool" in app.extensions:
        for pool in app.extensions["pgpool"].pools.values():
            pool.close()
    for pool in app.extensions.get("bench_pools", {}).values():
        pool.close()
    if "sqlalchemy" in app.extensions:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


# -- Django ------------------------------------------------------------------


def django_database(contender: str, dsn: str) -> dict[str, Any]:
    """Return the ``DATABASES`` entry of *contender*, connecting to *dsn*."""
    params = conninfo_to_dict(dsn)
    database: dict[str, Any] = {
        "NAME": params.pop("dbname"),
        "USER": params.pop("user"),
        "PASSWORD": params.pop("password"),
        "HOST": params.pop("host"),
        "PORT": params.pop("port"),
        "OPTIONS": dict(params),
    }
    pool = {"min_size": MIN_SIZE, "max_size": MAX_SIZE}
    if contender == "django_pgpool":
        database.update(ENGINE="django_pgpool")
        database["OPTIONS"]["pool"] = pool
    elif contender == "django_pgpool_no_reset":
        # No session reset after each request: what fork safety alone costs.
        database.update(ENGINE="django_pgpool")
        database["OPTIONS"]["pool"] = {**pool, "reset": None}
    elif contender == "django_native_pool":
        database.update(ENGINE="django.db.backends.postgresql")
        database["OPTIONS"]["pool"] = pool
    elif contender == "conn_max_age_60":
        database.update(ENGINE="django.db.backends.postgresql", CONN_MAX_AGE=60)
    elif contender == "django_db_connection_pool":
        # django-db-connection-pool: SQLAlchemy's QueuePool, its default options.
        database.update(ENGINE="dj_db_conn_pool.backends.postgresql")
    else:
        raise ValueError(f"unknown Django contender {contender!r}")
    return database


def django_settings(databases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the settings of the Django contenders (``django_urls`` the URLs)."""
    return {
        "DEBUG": False,
        "SECRET_KEY": "benchmark-only",
        "ALLOWED_HOSTS": ["*"],
        "ROOT_URLCONF": "django_urls",
        "INSTALLED_APPS": [],
        "MIDDLEWARE": [],
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "DATABASES": databases,
    }
