"""URLs of the test project."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("health", views.health),
    path("query", views.query),
    path("state", views.state),
    path("time-zone", views.time_zone),
    path("hold", views.hold),
    path("items", views.items),
    path("idle-in-transaction", views.idle_in_transaction),
]
