"""Name each request as the borrower of its connections, for ``warn_held_after``.

The pool then says which request kept a connection too long: ``GET
/reports/export (view reports.views.export)``. The view is looked up only when
a warning is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.handlers.wsgi import get_path_info
from django.core.signals import request_finished, request_started
from django.urls import resolve

from pgpool_core._loans import name_borrower

__all__ = ["RequestLabel"]


class RequestLabel(tuple[Any, ...]):
    """A request, as the warnings name it; read from the request only then.

    A pair (WSGI environ, ASGI scope), made without a Python call per request.
    """

    __slots__ = ()

    def __new__(
        cls, environ: dict[str, Any] | None, scope: dict[str, Any] | None = None
    ) -> RequestLabel:
        return _new_label(cls, (environ, scope))

    @property
    def environ(self) -> dict[str, Any] | None:
        return self[0]  # type: ignore[no-any-return]

    @property
    def scope(self) -> dict[str, Any] | None:
        return self[1]  # type: ignore[no-any-return]

    @property
    def method(self) -> str:
        if self.environ is not None:
            return str(self.environ.get("REQUEST_METHOD", "?"))
        return str((self.scope or {}).get("method", "?"))

    @property
    def path(self) -> str:
        if self.environ is not None:
            return get_path_info(self.environ)
        return str((self.scope or {}).get("path", ""))

    def __str__(self) -> str:
        method, path = self.method, self.path
        try:
            view = resolve(path).view_name
        except Exception:  # no such URL, or no URLconf here
            return f"{method} {path}"
        return f"{method} {path} (view {view})"

    # An object, not a value: hashable and equal to itself only (its environ
    # is a dict), as it was before it became a tuple.
    __repr__ = object.__repr__
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __getnewargs__(self) -> tuple[Any, ...]:
        # copy and pickle make it again with __new__(environ, scope).
        return (self[0], self[1])


#: Makes a RequestLabel without its ``__new__`` (a Python call per request).
_new_label: Callable[[type[RequestLabel], tuple[Any, ...]], RequestLabel]
_new_label = tuple.__new__


def _request_started(
    sender: Any,
    environ: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    if environ is None and scope is None:
        return
    name_borrower(_new_label(RequestLabel, (environ, scope)))  # set_borrower()


def _request_finished(sender: Any, **kwargs: Any) -> None:
    name_borrower(None)  # set_borrower(None), without its Python call


# Not weakly: Django's signals then call them without a weak reference to
# resolve at each request (functions of a module, never collected anyway).
request_started.connect(
    _request_started, weak=False, dispatch_uid="django_pgpool.borrowers"
)
request_finished.connect(
    _request_finished, weak=False, dispatch_uid="django_pgpool.borrowers"
)
