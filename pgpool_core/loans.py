"""How long connections stay borrowed, and by whom: the ``warn_held_after`` warning.

The same name is given when a transaction a borrower left open had written
and was rolled back (see :mod:`pgpool_core.session`).

A connection a request keeps for seconds (a slow stream, a view that sleeps
between queries, an external call made while holding it) starves the other
requests of the process. With ``warn_held_after`` set, a pool logs a warning
when such a connection comes back, naming what borrowed it: the adapters
(flask_pgpool, django_pgpool) name the request's endpoint with
:func:`borrower`; other code may do the same.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import monotonic
from typing import Any

__all__ = ["Loans", "borrower", "current_borrower", "set_borrower"]

logger = logging.getLogger("pgpool.pool")

_borrower: ContextVar[object | None] = ContextVar("pgpool_borrower", default=None)


@contextmanager
def borrower(label: object) -> Iterator[None]:
    """Name what borrows connections in the block (a request, a job).

    A connection borrowed in the block and held longer than its pool's
    ``warn_held_after``, or given back in the block with
    ``warn_open_transaction=False`` inside a transaction that had written
    (its writes are rolled back), is logged with ``str(label)``, which is
    only computed then.
    """
    token = _borrower.set(label)
    try:
        yield
    finally:
        _borrower.reset(token)


def set_borrower(label: object | None) -> None:
    """Name what borrows connections from now on in this context (None: nothing).

    For adapters whose requests start and end in separate calls (signals).
    """
    _borrower.set(label)


def current_borrower() -> object | None:
    """Return what borrows connections in this context (see :func:`borrower`)."""
    return _borrower.get()


class Loans:
    """When and by whom each connection of a pool was borrowed (with a threshold)."""

    def __init__(self, pool_name: str, warn_held_after: float | None) -> None:
        self.pool_name = pool_name
        self.warn_held_after = warn_held_after
        self._loans: weakref.WeakKeyDictionary[Any, tuple[float, object | None]]
        self._loans = weakref.WeakKeyDictionary()

    def lent(self, conn: Any) -> None:
        """Note that *conn* was borrowed now."""
        if self.warn_held_after is not None:
            self._loans[conn] = (monotonic(), _borrower.get())

    def returned(self, conn: Any) -> None:
        """Note that *conn* came back; warn if it was held too long."""
        loan = self._loans.pop(conn, None)
        if loan is None or self.warn_held_after is None:
            return
        since, label = loan
        held = monotonic() - since
        if held > self.warn_held_after:
            logger.warning(
                "pool %r: a connection was held for %.2f s by %s"
                " (warn_held_after=%s s)",
                self.pool_name,
                held,
                "an unnamed borrower" if label is None else label,
                self.warn_held_after,
            )
