"""Views of the test project; each answers JSON with the worker and backend pids.

The reliability tests' project (tests.reliability.apps) serves health, query and
hold too: it has no testapp, so Item is imported where it is used.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.db import connection
from django.http import HttpRequest, JsonResponse

from tests.harness.postgres import query_backend_pid


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


def query(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid(), "backend": query_backend_pid(connection)})


def state(request: HttpRequest) -> JsonResponse:
    """Report the session state left by earlier requests, then leave some."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('pgpool.marker', true),"
            " current_setting('application_name'), current_setting('search_path'),"
            " to_regclass('pg_temp.pgpool_leak') IS NOT NULL"
        )
        marker, application_name, search_path, temp_table = cursor.fetchone()
        cursor.execute("SELECT set_config('pgpool.marker', 'leaked', false)")
        cursor.execute("SET application_name = 'leaked'")
        cursor.execute("SET search_path = leaked, public")
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS pgpool_leak (x int)")
    seen: dict[str, Any] = {
        "marker": marker or None,
        "application_name": application_name,
        "search_path": search_path,
        "temp_table": temp_table,
    }
    return JsonResponse(
        {"pid": os.getpid(), "backend": query_backend_pid(connection), "seen": seen}
    )


def time_zone(request: HttpRequest) -> JsonResponse:
    """Report the session's time zone and marker, then change both (a reset undoes)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('TimeZone'), current_setting('pgpool.marker', true)"
        )
        zone, marker = cursor.fetchone()
        cursor.execute("SET TIME ZONE 'America/Chicago'")
        cursor.execute("SELECT set_config('pgpool.marker', 'leaked', false)")
    seen = {"time_zone": zone, "marker": marker or None}
    return JsonResponse(
        {"pid": os.getpid(), "backend": query_backend_pid(connection), "seen": seen}
    )


def hold(request: HttpRequest) -> JsonResponse:
    """Keep a connection busy for ?seconds=; say when (pool exhaustion, gevent)."""
    with connection.cursor() as cursor:  # borrowed by now, maybe after a wait
        started = time.time()
        cursor.execute("SELECT pg_sleep(%s)", [float(request.GET["seconds"])])
        ended = time.time()
    body = {"pid": os.getpid(), "backend": query_backend_pid(connection)}
    return JsonResponse({**body, "started": started, "ended": ended})


def items(request: HttpRequest) -> JsonResponse:
    """Create an item (ATOMIC_REQUESTS: undone if ?fail=1 makes the view raise)."""
    from .testapp.models import Item

    Item.objects.create(name=request.GET.get("name", "item"))
    if request.GET.get("fail"):
        raise RuntimeError("failing after the insert, on purpose")
    return JsonResponse({"pid": os.getpid(), "count": Item.objects.count()})


def idle_in_transaction(request: HttpRequest) -> JsonResponse:
    """Outlive idle_in_transaction_session_timeout (case 13): the server ends it."""
    with connection.cursor() as cursor:
        cursor.execute("SET idle_in_transaction_session_timeout = 300")
        cursor.execute("SELECT 1")  # in ATOMIC_REQUESTS' transaction
        time.sleep(1)
        cursor.execute("SELECT 2")
    return JsonResponse({"pid": os.getpid()})
