"""List and add notes, as JSON."""

from __future__ import annotations

import json
import os

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Note


def health(request: HttpRequest) -> HttpResponse:
    """Answer without touching the database (for load balancers)."""
    return JsonResponse({"ok": True})


@csrf_exempt
def notes(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            body = json.loads(request.body)["body"]
        except (ValueError, KeyError, TypeError):
            return JsonResponse({"error": "send JSON with a 'body'"}, status=400)
        if not isinstance(body, str) or not body.strip():
            return JsonResponse({"error": "'body' must not be empty"}, status=400)
        with transaction.atomic():
            note = Note.objects.create(body=body)
        return JsonResponse({"id": note.id, **_who()}, status=201)
    latest = list(Note.objects.values("id", "body")[:5])
    return JsonResponse({"notes": latest, **_who()})


def _who() -> dict[str, int]:
    """Which worker and which PostgreSQL backend served this request."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    return {"pid": os.getpid(), "backend": backend}
