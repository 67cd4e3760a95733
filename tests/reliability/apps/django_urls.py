"""URLs of the Django app of the reliability tests: the Flask app's paths."""

from __future__ import annotations

from django.urls import path
from health_check.views import HealthCheckView

from tests.django.views import health, hold, query
from tests.reliability.apps import django_views as views

urlpatterns = [
    path("health", health),
    path(
        "pool-health",
        HealthCheckView.as_view(
            checks=[("django_pgpool.health.PoolHealthCheck", {"alias": "default"})]
        ),
    ),
    path("query", query),
    path("hold", hold),
    path("slow", views.slow),
    path("raise", views.fail),
    path("stream", views.stream),
    path("forget", views.forget),
    path("stats", views.stats),
    path("probe", views.session_probe),
]
