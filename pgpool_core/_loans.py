"""How long connections stay borrowed, and by whom; loans whose borrower is gone.

The ``warn_held_after`` warning, and the lost loans (:class:`LoanBook`).

The same name is given when a transaction a borrower left open had written
and was rolled back (see :mod:`pgpool_core._reset`).

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from time import monotonic
from typing import Any, NamedTuple

__all__ = [
    "Loan",
    "LoanBook",
    "Loans",
    "borrower",
    "current_borrower",
    "name_borrower",
    "restore_borrower",
    "set_borrower",
]

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


#: :func:`set_borrower` returning a token for :data:`restore_borrower`: the
#: context variable's own methods, for the adapters' per-request calls (no
#: Python call, and no read of the label they replace).
name_borrower: Callable[[object | None], Token[object | None]] = _borrower.set
#: Name again what was named before the :data:`name_borrower` call that gave
#: the token (as at the end of :func:`borrower`'s block).
restore_borrower: Callable[[Token[object | None]], None] = _borrower.reset


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
_ref = weakref.ref
# Where a lent connection carries its loan's weak reference.
_LOAN = "_pgpool_loan"


class Loan(NamedTuple):
    """A connection lent by a pool, and who borrowed it."""

    #: A weak reference to the connection, calling back its book when the
    #: connection is garbage-collected.
    ref: weakref.ref[Any]
    #: The thread that borrowed it.
    thread: threading.Thread
    #: What borrowed it (see :func:`borrower`), or None.
    label: object | None


#: Makes a Loan without its generated ``__new__`` (a Python call per loan).
_new_loan: Callable[[type[Loan], tuple[Any, ...]], Loan] = tuple.__new__


class LoanBook:
    """A pool's connections out on loan, and those whose borrower is gone.

    A loan is noted when its connection is lent (:meth:`lend`), ended when it
    comes back (:meth:`end`). A connection garbage-collected while lent (its
    borrower, a thread-local Django connection of a thread that ended, say,
    was collected) has its weak reference queued in :attr:`collected` by the
    garbage collector, which may run in any thread, at any allocation, even
    one made while that thread holds the pool's lock: the callback only
    appends to a deque and wakes the pool (no lock, no I/O). The pool takes
    the loans back with :meth:`take_lost`, in a worker, and when a connection
    is next borrowed or given back.

    Loans are kept by the id of their weak reference, which the lent
    connection also carries while it is out, and which the loan keeps alive
    (so its id is unique in the book): a collected connection's reference
    finds its own loan, even when a connection lent since has its id
    (CPython reuses a freed object's memory), whatever the connection's
    ``__eq__``; and the book needs no lock (each step is one dict operation).
    A loan's reference lives as long as the loan: one that ended is freed,
    and its callback never runs.
    """

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self.out: dict[int, Loan] = {}
        self.collected: deque[weakref.ref[Any]] = deque()
        self._wake = wake
        # Made once: lend() runs for every loan.
        self._callback = self._collected

    def _collected(self, ref: weakref.ref[Any]) -> None:
        # The weak reference's callback: in the garbage collector, in any
        # thread, maybe while it holds the pool's lock. No lock, no I/O:
        # wake (the pool's) may only do what a weakref callback may.
        self.collected.append(ref)
        if self._wake is not None:
            self._wake()

    def lend(self, conn: Any) -> None:
        """Note that *conn* was lent now, to this thread (and borrower)."""
        attrs = conn.__dict__
        earlier = attrs.get(_LOAN)
        if earlier is not None:  # lent again without coming back
            self.out.pop(id(earlier), None)
        ref = attrs[_LOAN] = _ref(conn, self._callback)
        self.out[id(ref)] = _new_loan(Loan, (ref, _current_thread(), _borrower.get()))

    def end(self, conn: Any) -> None:
        """Note that *conn* came back (if this book lent it)."""
        attrs = conn.__dict__
        ref = attrs.pop(_LOAN, None)
        # Another pool's connection (given back to the wrong pool, which
        # refuses it next) keeps its loan in its own book.
        if ref is not None and self.out.pop(id(ref), None) is None:
            attrs[_LOAN] = ref

    def take_lost(self) -> list[Loan]:
        """Return the loans whose connection was collected since the last call."""
        lost: list[Loan] = []
        while True:
            try:
                ref = self.collected.popleft()
            except IndexError:
                return lost
            loan = self.out.pop(id(ref), None)
            if loan is not None:
                lost.append(loan)

    def borrowers_ended(self) -> dict[int, Loan]:
        """Return the loans out to threads that ended, by the id of their reference.

        The loans themselves keep their references, and so the ids, from
        being reused by later loans while the caller holds the result.
        """
        loans = list(self.out.items())
        return {key: loan for key, loan in loans if not loan.thread.is_alive()}
