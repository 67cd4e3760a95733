"""The optional ``django_pgpool`` app: system checks and ``manage.py pgpool``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["DjangoPgpoolConfig"]


class DjangoPgpoolConfig(AppConfig):
    """Adds the pool checks and the ``pgpool`` management command."""

    name = "django_pgpool"
    verbose_name = "pgpool"

    def ready(self) -> None:
        from . import checks as pgpool_checks

        checks.register(pgpool_checks.check_databases)
        checks.register(pgpool_checks.check_settings)
        checks.register(pgpool_checks.check_max_connections, checks.Tags.database)
