"""The Django contenders' views: ``/q?id=N`` (one query), ``/page?id=N`` (a page),
``/health`` (none).

``/borrow/<alias>`` borrows the alias's connection and runs no query (given
back by ``request_finished``): what the pool and the backend cost alone.

``/q/<alias>`` and ``/page/<alias>`` query another database alias of the
settings: ``micro.py`` serves every contender from one process, one alias each.
"""

from __future__ import annotations

from contenders import QUERY
from django.db import connections, models
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.urls import path


class Item(models.Model):
    """A row of ``bench_items`` (``run.py`` makes the table)."""

    body = models.TextField()

    class Meta:
        app_label = "contenders"
        db_table = "bench_items"
        managed = False


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def query(request: HttpRequest, alias: str = "default") -> JsonResponse:
    with connections[alias].cursor() as cursor:
        cursor.execute(QUERY, [int(request.GET.get("id", 1))])
        row = cursor.fetchone()
    return JsonResponse({"body": row[0] if row else None})


def page(request: HttpRequest, alias: str = "default") -> HttpResponse:
    """A page as real ones are: four ORM queries, then a template."""
    item_id = int(request.GET.get("id", 1))
    items = Item.objects.using(alias)
    item = items.get(pk=item_id)
    context = {
        "item": item,
        "following": list(items.filter(pk__gt=item_id).order_by("pk")[:10]),
        "before": items.filter(pk__lt=item_id).count(),
        "similar": items.filter(body__startswith=item.body[:6]).exists(),
    }
    return HttpResponse(render_to_string("page.html", context, request))


def borrow(request: HttpRequest, alias: str) -> JsonResponse:
    connections[alias].ensure_connection()
    return JsonResponse({"ok": True})


urlpatterns = [
    path("health", health),
    path("q", query),
    path("q/<str:alias>", query),
    path("page", page),
    path("page/<str:alias>", page),
    path("borrow/<str:alias>", borrow),
]
