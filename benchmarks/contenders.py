"""The contenders of the benchmarks: how each Flask app and Django database is made.

One home for both runs: ``flask_app.py`` and ``django_app.py`` serve one
contender each under gunicorn (``run.py``), ``micro.py`` calls several in one
process. Every contender answers ``GET /q?id=N`` with one small indexed query
(``SELECT body FROM bench_items WHERE id = N``) as JSON, ``GET /page?id=N``
as a real page does (four queries on one connection: the item, the ten after
it, how many come before it, whether similar ones exist; then an HTML
template, ``PAGE_TEMPLATE``, which Django's and Jinja's engines both read),
and ``GET /health`` without a query. Nothing connects when an app is made:
gunicorn preloads it in its master.

The ``*_always`` contenders set the reset to ``"always"`` (a full server
session reset after every loan, as before the tracked reset); they are left
out where the installed pgpool_core does not know that value yet
(:func:`reset_always_known`).
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from flask import Flask, render_template, request
from jinja2 import DictLoader
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

QUERY = "SELECT body FROM bench_items WHERE id = %s"
#: The page's queries, after the item's (``QUERY``).
FOLLOWING = "SELECT id, body FROM bench_items WHERE id > %s ORDER BY id LIMIT 10"
BEFORE = "SELECT count(*) FROM bench_items WHERE id < %s"
SIMILAR = "SELECT EXISTS (SELECT 1 FROM bench_items WHERE body LIKE %s)"
#: The page, in the syntax common to Django's templates and Jinja.
PAGE_TEMPLATE = """<!doctype html>
<html><head><title>{{ item.body }}</title></head>
<body>
<h1>{{ item.body }}</h1>
<p>{{ before }} items before it{% if similar %}, and similar ones{% endif %}.</p>
<ul>
{% for other in following %}
  <li><a href="/page?id={{ other.id }}">{{ other.body }}</a></li>
{% endfor %}</ul>
</body></html>
"""
#: The pools' size, the same for every contender that takes one.
MIN_SIZE, MAX_SIZE = 2, 4


def reset_always_known() -> bool:
    """Return True if pgpool_core takes ``reset="always"`` (issue 23)."""
    from pgpool_core import ConfigurationError, validate_pool_options

    try:
        validate_pool_options({"reset": "always"})
    except ConfigurationError:
        return False
    return True


def _known(names: list[str]) -> list[str]:
    """*names* without the ``*_always`` contenders if that value is unknown."""
    always = reset_always_known()
    return [n for n in names if always or not n.endswith("_always")]


#: The Flask contenders, the baseline first.
FLASK = _known(
    [
        "hand_pool",
        "flask_pgpool",
        "flask_pgpool_always",
        "flask_pgpool_no_reset",
        "connect_per_request",
        "flask_sqlalchemy",
    ]
)
#: The Django contenders, the baseline first.
DJANGO = _known(
    [
        "django_native_pool",
        "django_pgpool",
        "django_pgpool_always",
        "django_pgpool_no_reset",
        "conn_max_age_60",
        "django_db_connection_pool",
    ]
)
#: The page (``/page``): both adapters, reset by default and "always".
FLASK_PAGE = _known(["hand_pool", "flask_pgpool", "flask_pgpool_always"])
DJANGO_PAGE = _known(["django_native_pool", "django_pgpool", "django_pgpool_always"])
#: Django under an ASGI server that forks workers (gunicorn's UvicornWorker).
DJANGO_ASGI = _known(["django_native_pool", "django_pgpool", "django_pgpool_always"])
LABELS = {
    "hand_pool": "hand-written pool per worker",
    "flask_pgpool": "flask_pgpool",
    "flask_pgpool_always": 'flask_pgpool, PGPOOL_RESET "always"',
    "flask_pgpool_no_reset": "flask_pgpool, PGPOOL_RESET None",
    "connect_per_request": "connect per request (TLS)",
    "flask_sqlalchemy": "Flask-SQLAlchemy (QueuePool)",
    "django_native_pool": "Django native pool",
    "django_pgpool": "django_pgpool",
    "django_pgpool_always": 'django_pgpool, "reset" "always"',
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

    app.jinja_loader = DictLoader({"page.html": PAGE_TEMPLATE})

    if contender in ("flask_pgpool", "flask_pgpool_no_reset", "flask_pgpool_always"):
        from flask_pgpool import PgPool

        app.config.update(
            PGPOOL_CONNINFO=dsn, PGPOOL_MIN_SIZE=MIN_SIZE, PGPOOL_MAX_SIZE=MAX_SIZE
        )
        if contender == "flask_pgpool_no_reset":
            # No session reset after each request: what fork safety alone costs.
            app.config["PGPOOL_RESET"] = None
        elif contender == "flask_pgpool_always":
            # The server session reset after every request, whatever it ran.
            app.config["PGPOOL_RESET"] = "always"
        pgpool = PgPool(app)

        @app.get("/q")
        def query() -> dict[str, Any]:
            row = pgpool.connection.execute(QUERY, (item_id(),)).fetchone()
            return {"body": row[0] if row else None}

        @app.get("/page")
        def page() -> str:
            return flask_page(pgpool.connection, item_id())

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

        @app.get("/page")
        def page() -> str:
            with get_pool().connection() as conn:
                return flask_page(conn, item_id())

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


def flask_page(conn: psycopg.Connection[Any], item: int) -> str:
    """The page of *item*: its four queries on *conn*, then the template."""
    row = conn.execute(QUERY, (item,)).fetchone()
    body = row[0] if row else ""
    following = [
        {"id": i, "body": b} for i, b in conn.execute(FOLLOWING, (item,)).fetchall()
    ]
    before = conn.execute(BEFORE, (item,)).fetchone()
    similar = conn.execute(SIMILAR, (body[:6] + "%",)).fetchone()
    return render_template(
        "page.html",
        item={"id": item, "body": body},
        following=following,
        before=before[0] if before else 0,
        similar=similar[0] if similar else False,
    )


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
    elif contender == "django_pgpool_always":
        # The server session reset after every request, whatever it ran.
        database.update(ENGINE="django_pgpool")
        database["OPTIONS"]["pool"] = {**pool, "reset": "always"}
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
        # The page's model (django_urls.Item) is this module's app's.
        "INSTALLED_APPS": ["contenders"],
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "OPTIONS": {
                    "loaders": [
                        (
                            "django.template.loaders.cached.Loader",
                            [
                                (
                                    "django.template.loaders.locmem.Loader",
                                    {"page.html": PAGE_TEMPLATE},
                                )
                            ],
                        )
                    ],
                },
            }
        ],
        "MIDDLEWARE": [],
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "DATABASES": databases,
    }
