"""The Django contenders of ``make bench``: settings, URLs and WSGI app in one module.

``BENCH_CONTENDER`` picks the database backend, ``BENCH_DSN`` is the
database. Every contender serves ``GET /q?id=N`` (``SELECT body FROM
bench_items WHERE id = N`` through ``connection.cursor()``, answered as JSON)
and ``GET /health`` (no query). No query runs at import: Django's native pool
breaks when the preloading master queries (the workers share its sockets).
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from psycopg.conninfo import conninfo_to_dict

CONTENDER = os.environ.get("BENCH_CONTENDER", "django_pgpool")
QUERY = "SELECT body FROM bench_items WHERE id = %s"
#: The same pool size as the Flask contenders, for both psycopg_pool backends.
POOL = {"min_size": 2, "max_size": 4}

_db = conninfo_to_dict(os.environ["BENCH_DSN"])
DATABASE: dict[str, Any] = {
    "NAME": _db.pop("dbname"),
    "USER": _db.pop("user"),
    "PASSWORD": _db.pop("password"),
    "HOST": _db.pop("host"),
    "PORT": _db.pop("port"),
    "OPTIONS": dict(_db),
}
if CONTENDER == "django_pgpool":
    DATABASE.update(ENGINE="django_pgpool")
    DATABASE["OPTIONS"]["pool"] = dict(POOL)
elif CONTENDER == "django_pgpool_no_reset":
    # No session reset after each request: what fork safety alone costs.
    DATABASE.update(ENGINE="django_pgpool")
    DATABASE["OPTIONS"]["pool"] = {**POOL, "reset": None}
elif CONTENDER == "django_native_pool":
    DATABASE.update(ENGINE="django.db.backends.postgresql")
    DATABASE["OPTIONS"]["pool"] = dict(POOL)
elif CONTENDER == "conn_max_age_60":
    DATABASE.update(ENGINE="django.db.backends.postgresql", CONN_MAX_AGE=60)
elif CONTENDER == "django_db_connection_pool":
    # django-db-connection-pool: SQLAlchemy's QueuePool, its default options.
    DATABASE.update(ENGINE="dj_db_conn_pool.backends.postgresql")
else:
    raise RuntimeError(f"unknown BENCH_CONTENDER {CONTENDER!r}")


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def query(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute(QUERY, [int(request.GET.get("id", 1))])
        row = cursor.fetchone()
    return JsonResponse({"body": row[0] if row else None})


urlpatterns = [path("health", health), path("q", query)]

settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    USE_TZ=True,
    TIME_ZONE="UTC",
    DATABASES={"default": DATABASE},
)
django.setup()
application = get_wsgi_application()
