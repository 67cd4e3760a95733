"""django_pgpool.health.PoolHealthCheck, run by django-health-check's own view."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from django.db import connections
from django.test import RequestFactory
from health_check.views import HealthCheckView

from tests.harness.postgres import PgServer

CHECK = ("django_pgpool.health.PoolHealthCheck", {"alias": "default"})


def probe() -> tuple[int, dict[str, Any], float]:
    """Ask django-health-check's view for JSON; return status, body, seconds."""
    view = HealthCheckView.as_view(checks=[CHECK])
    request = RequestFactory().get("/health/", HTTP_ACCEPT="application/json")
    start = time.monotonic()
    response = asyncio.run(view(request))
    return response.status_code, json.loads(response.content), time.monotonic() - start


@pytest.mark.django_db(transaction=True)
def test_healthy_with_the_server_up() -> None:
    status, body, _ = probe()

    assert status == 200
    assert body == {"PoolHealthCheck(alias='default')": "OK"}


@pytest.mark.django_db(transaction=True)
def test_unavailable_with_the_server_down_without_waiting_the_pool_timeout(
    running_database: PgServer,
) -> None:
    pool_timeout = connections["default"].settings_dict["OPTIONS"]["pool"]["timeout"]
    assert probe()[0] == 200

    running_database.stop()
    status, body, elapsed = probe()
    print(f"server down: {status} in {elapsed:.2f} s: {body}")
    running_database.start()

    assert status == 500  # django-health-check's answer to a failed check
    (message,) = body.values()
    assert message.startswith("Unavailable: ")
    assert running_database.password not in message
    assert elapsed < pool_timeout / 2, elapsed
    deadline = time.monotonic() + 20
    while probe()[0] != 200:
        assert time.monotonic() < deadline, "still unavailable with the server back"
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_an_alias_without_a_pool_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(connections["default"].settings_dict["OPTIONS"], "pool")

    status, body, _ = probe()

    assert status == 500
    (message,) = body.values()
    assert message.startswith("Warning: database 'default' has no django_pgpool pool")
