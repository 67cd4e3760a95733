"""Views of the Django app of the reliability tests, as those of the Flask app.

health, query and hold are the Django tests' own (tests.django.views).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from django.db import DataError, connection, transaction
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from tests.harness.postgres import query_backend_pid
from tests.reliability.apps import probe


def slow(request: HttpRequest) -> JsonResponse:
    """Keep a connection borrowed, idle, for ?seconds= (warn_held_after)."""
    pid = query_backend_pid(connection)
    time.sleep(float(request.GET["seconds"]))
    return JsonResponse({"pid": os.getpid(), "backend": pid})


def fail(request: HttpRequest) -> JsonResponse:
    """Write in a transaction, then fail: rolled back, the connection given back."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(probe.INSERT, ["raised"])
        raise RuntimeError("the view fails after a write, on purpose")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream rows read with the request's connection while the body is sent."""

    def generate() -> Iterator[str]:
        for n in range(3):
            with connection.cursor() as cursor:
                cursor.execute(probe.COUNT, ["streamed"])
                seen = cursor.fetchone()[0]
            yield json.dumps({"chunk": n, "seen": seen}) + "\n"

    return StreamingHttpResponse(generate(), content_type="application/x-ndjson")


def forget(request: HttpRequest) -> JsonResponse:
    """Leave autocommit, write, and never commit."""
    transaction.set_autocommit(False)
    with connection.cursor() as cursor:
        cursor.execute(probe.INSERT, ["forgotten"])
    return JsonResponse({"pid": os.getpid(), "backend": query_backend_pid(connection)})


def stats(request: HttpRequest) -> JsonResponse:
    pool = connection.pool
    assert pool is not None
    return JsonResponse({"pid": os.getpid(), "stats": pool.stats()})


def session_probe(request: HttpRequest) -> JsonResponse:
    """Report the session state an earlier borrower left, then leave some."""
    connection.ensure_connection()
    conn: Any = connection.connection  # Django keeps it in autocommit
    seen = probe.report(conn)
    probe.leave_session_state(conn)
    leave = request.GET.get("leave", "")
    if leave == "open":
        transaction.set_autocommit(False)
        with connection.cursor() as cursor:
            cursor.execute(probe.INSERT, ["uncommitted"])
    elif leave == "failed":
        transaction.set_autocommit(False)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        except DataError:
            pass
    return JsonResponse({"pid": os.getpid(), "seen": seen})
