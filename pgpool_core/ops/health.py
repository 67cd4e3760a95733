"""Health of this process's pool, answered without waiting the pool's timeout.

A load balancer's probe reaches one worker, which answers for its own pool:
:func:`check_pool` borrows a connection for at most *timeout* seconds (1 s by
default, not the pool's ``timeout``) and runs ``SELECT 1`` on it, waiting no
longer than what is left of *timeout* (at least half of it): a connection
that stops answering (a path that forwards nothing any more, which the
pool's check cannot see) makes the pool unhealthy within about *timeout*,
and is closed. If no connection can be had that soon (every connection
lent, or the pool cannot connect), one plain connection is made and closed,
bounded by what is left of *timeout*, or 2 s (libpq's least
``connect_timeout``): a busy pool on a live server is healthy, a server that
refuses connections is unhealthy at once, one that does not answer is
unhealthy after those 2 s.

The adapters answer from it: ``flask_pgpool.PgPool.health_view()`` and
``django_pgpool.health.PoolHealthCheck`` (django-health-check).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import PoolTimeout, TooManyRequests

from .._secrets import mask_secrets
from .._socket_timeout import bounded

if TYPE_CHECKING:
    from ..pool import ForkSafePool

__all__ = ["PoolHealth", "check_pool"]


@dataclass(frozen=True)
class PoolHealth:
    """What :func:`check_pool` found; ``reason`` says why it is not healthy."""

    pool: str
    pid: int
    healthy: bool
    #: Why the pool is not healthy (psycopg's error, password masked), or
    #: "busy" when it is healthy but lent every connection.
    reason: str | None = None
    #: Seconds the check took.
    elapsed: float = 0.0
    #: ``ForkSafePool.stats()`` as the check began.
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: status ("ok" or "unavailable") and the rest."""
        return {
            "status": "ok" if self.healthy else "unavailable",
            "pool": self.pool,
            "pid": self.pid,
            "reason": self.reason,
            "elapsed": round(self.elapsed, 4),
            "stats": self.stats,
        }


def check_pool(pool: ForkSafePool[Any], timeout: float = 1.0) -> PoolHealth:
    """Say whether *pool* can serve this process now, within about *timeout* s.

    Healthy: a connection borrowed within *timeout* seconds answered ``SELECT
    1``; or, when none could be borrowed that soon, a new plain connection
    could be made (the pool is busy). Never raises for the database's
    errors, which are the answer (passwords masked). ``SELECT 1`` gets what
    is left of *timeout*, at least half of it: unanswered by then, the
    connection is closed and the pool unhealthy.
    """
    start = monotonic()
    stats: dict[str, Any] = {}

    def answer(healthy: bool, reason: str | None = None) -> PoolHealth:
        elapsed = monotonic() - start
        return PoolHealth(pool.name, os.getpid(), healthy, reason, elapsed, stats)

    if pool.closed:
        return answer(False, "the pool is closed")
    stats = pool.stats()
    try:
        conn = pool.getconn(timeout)
    except (PoolTimeout, TooManyRequests):
        # Busy, or unable to connect: a connection of our own tells which,
        # within what is left of the timeout (libpq waits at least 2 s).
        left = timeout - (monotonic() - start)
        try:
            pool.connect(connect_timeout=max(2, math.ceil(left))).close()
        except psycopg.Error as err:
            return answer(False, _masked(pool, err))
        return answer(True, "busy")
    except psycopg.Error as err:  # a forking master's plain connection
        return answer(False, _masked(pool, err))
    left = max(timeout - (monotonic() - start), timeout / 2)
    try:
        with bounded(conn, left, "the health check's timeout"):
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return answer(False, _masked(pool, err))
    finally:
        # The reset on return ends the transaction; the check waits for none
        # of it (it is read when the connection is next lent).
        pool.putconn(conn, warn_open_transaction=False)
    return answer(True)


def _masked(pool: ForkSafePool[Any], err: psycopg.Error) -> str:
    """Return psycopg's message for *err*, secrets masked, on one line."""
    return " ".join(mask_secrets(err, pool.conninfo, pool.kwargs).split())
