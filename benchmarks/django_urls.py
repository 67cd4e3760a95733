"""The Django contenders' views: ``/q?id=N`` (one query), ``/health`` (none).

``/borrow/<alias>`` borrows the alias's connection and runs no query (given
back by ``request_finished``): what the pool and the backend cost alone.

``/q/<alias>`` queries another database alias of the settings: ``micro.py``
serves every contender from one process, one alias each.
"""

from __future__ import annotations

from contenders import QUERY
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.urls import path


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def query(request: HttpRequest, alias: str = "default") -> JsonResponse:
    with connections[alias].cursor() as cursor:
        cursor.execute(QUERY, [int(request.GET.get("id", 1))])
        row = cursor.fetchone()
    return JsonResponse({"body": row[0] if row else None})


def borrow(request: HttpRequest, alias: str) -> JsonResponse:
    connections[alias].ensure_connection()
    return JsonResponse({"ok": True})


urlpatterns = [
    path("health", health),
    path("q", query),
    path("q/<str:alias>", query),
    path("borrow/<str:alias>", borrow),
]
