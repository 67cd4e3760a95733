"""How long connections stay borrowed, and by whom; loans whose borrower is gone.

The ``warn_held_after`` warning, and the lost loans (:class:`LoanBook`).

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
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import monotonic
from typing import Any

__all__ = ["Loan", "LoanBook", "Loans", "borrower", "current_borrower", "set_borrower"]

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


_current_thread = threading.current_thread


class Loan(weakref.ref[Any]):
    """A connection lent by a pool: a weak reference to it, and who borrowed it.

    Calls its book back when the connection is garbage-collected (its borrower
    dropped it without giving it back).
    """

    __slots__ = ("key", "thread", "label")

    key: int
    thread: threading.Thread
    label: object | None

    def __new__(
        cls, conn: Any, callback: Any, key: int, thread: threading.Thread, label: Any
    ) -> Loan:
        self = super().__new__(cls, conn, callback)
        self.key = key
        self.thread = thread
        self.label = label
        return self

    def __init__(
        self, conn: Any, callback: Any, key: int, thread: threading.Thread, label: Any
    ) -> None:
        # weakref.ref's __init__ takes (object, callback) only.
        super().__init__(conn, callback)  # type: ignore[call-arg]


class LoanBook:
    """A pool's connections out on loan, and those whose borrower is gone.

    A loan is noted when its connection is lent (:meth:`lend`), ended when it
    comes back (:meth:`end`). A connection garbage-collected while lent (its
    borrower, a thread-local Django connection of a thread that ended, say,
    was collected) is queued in :attr:`lost` by the garbage collector, which
    may run in any thread, at any allocation, even one made while that
    thread holds the pool's lock: the callback only appends to a deque (no
    lock, no I/O). The pool takes them with :meth:`take_lost` when a
    connection is next borrowed or given back.
    """

    def __init__(self) -> None:
        self.out: dict[int, Loan] = {}
        self.lost: deque[Loan] = deque()
        self._collected = self.lost.append

    def lend(self, conn: Any) -> None:
        """Note that *conn* was lent now, to this thread (and borrower)."""
        key = id(conn)
        self.out[key] = Loan(
            conn, self._collected, key, _current_thread(), _borrower.get()
        )

    def end(self, conn: Any) -> Loan | None:
        """Note that *conn* came back; return its loan (None if unknown)."""
        return self.out.pop(id(conn), None)

    def take_lost(self) -> list[Loan]:
        """Return the loans whose connection was collected since the last call."""
        lost: list[Loan] = []
        while True:
            try:
                loan = self.lost.popleft()
            except IndexError:
                break
            # A connection made since may have the same id: its loan stays.
            if self.out.get(loan.key) is loan:
                self.out.pop(loan.key, None)
            lost.append(loan)
        return lost

    def borrowers_ended(self) -> frozenset[int]:
        """Return the loans (by key) out to threads that ended."""
        for _ in range(3):
            try:
                return frozenset(
                    key for key, loan in self.out.items() if not loan.thread.is_alive()
                )
            except RuntimeError:  # lent or returned meanwhile
                continue
        return frozenset()
