"""The optional ``django_pgpool`` app: system checks and ``manage.py pgpool``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["DjangoPgpoolConfig"]


class DjangoPgpoolConfig(AppConfig):
    """Adds the pool checks and the ``pgpool`` management command.

    Its ``ready()`` checks the settings that need no database (the checks
    ``django_pgpool.E001`` to ``E005``) at ``django.setup()``: a WSGI or ASGI
    server, a Celery worker or a script that loads the project with one of
    them fails there with ImproperlyConfigured naming the setting, instead of
    answering a 500 to every request. Under ``manage.py`` (and
    ``django-admin``) it leaves them to the system checks, which every command
    that needs the database runs and shows.
    """

    name = "django_pgpool"
    verbose_name = "pgpool"

    def ready(self) -> None:
        from . import checks as pgpool_checks
        from . import conf

        checks.register(pgpool_checks.check_databases)
        checks.register(pgpool_checks.check_settings)
        checks.register(pgpool_checks.check_max_connections, checks.Tags.database)
        if not conf.run_by_manage_py():
            pgpool_checks.raise_startup_errors()
