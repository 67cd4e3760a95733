"""Answer 503 with Retry-After when the database cannot serve a request now."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from pgpool_core import mask_secrets
from pgpool_core.errors import unavailable_message, unavailable_reason

from .conf import retry_after

__all__ = ["DatabaseUnavailableMiddleware", "unavailable_reason"]

logger = logging.getLogger("pgpool.django")


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Turn a pool timeout or an unreachable database into 503 + ``Retry-After``.

    Without it such a request ends in a 500 after waiting for the pool's
    ``timeout``; with it, clients and load balancers are told to come back in
    ``PGPOOL_RETRY_AFTER`` seconds (default 5). Only exceptions raised by views
    are seen, as with any ``process_exception``.

    Made when the server loads the app (Django's ``WSGIHandler``): without the
    ``django_pgpool`` app, whose ``ready()`` does it, it checks the settings
    then (``django_pgpool.E001`` to ``E005``), so that a bad one stops the
    server from starting rather than failing every request.
    """

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if not apps.is_installed("django_pgpool"):
            from .checks import raise_startup_errors

            raise_startup_errors()

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        reason = unavailable_reason(exception)
        if reason is None:
            return None
        logger.warning(
            "503 for %s %s: %s: %s",
            request.method,
            request.path,
            reason,
            mask_secrets(exception),
        )
        response = HttpResponse(
            unavailable_message(reason) + "\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(retry_after())
        return response
