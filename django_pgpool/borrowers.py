"""Name each request as the borrower of its connections, for ``warn_held_after``.

The pool then says which request kept a connection too long: ``GET
/reports/export (view reports.views.export)``. The view is looked up only when
a warning is logged.
"""

from __future__ import annotations

from typing import Any

from django.core.handlers.wsgi import get_path_info
from django.core.signals import request_finished, request_started
from django.urls import resolve

from pgpool_core.loans import set_borrower

__all__ = ["RequestLabel"]


class RequestLabel:
    """A request, as the warn_held_after warning names it."""

    __slots__ = ("method", "path")

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path

    def __str__(self) -> str:
        try:
            view = resolve(self.path).view_name
        except Exception:  # no such URL, or no URLconf here
            return f"{self.method} {self.path}"
        return f"{self.method} {self.path} (view {view})"


def _request_started(
    sender: Any,
    environ: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    if environ is not None:
        label = RequestLabel(environ.get("REQUEST_METHOD", "?"), get_path_info(environ))
    elif scope is not None:
        label = RequestLabel(scope.get("method", "?"), scope.get("path", ""))
    else:
        return
    set_borrower(label)


def _request_finished(sender: Any, **kwargs: Any) -> None:
    set_borrower(None)


request_started.connect(_request_started, dispatch_uid="django_pgpool.borrowers")
request_finished.connect(_request_finished, dispatch_uid="django_pgpool.borrowers")
