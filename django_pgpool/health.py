"""A django-health-check check of this worker's pool: ``PoolHealthCheck``.

django-health-check 4 (``pip install psycopg-forksafe[health-check]``) runs
the checks its view lists::

    from django.urls import path
    from health_check.views import HealthCheckView

    urlpatterns = [
        path(
            "health/",
            HealthCheckView.as_view(
                checks=[
                    "health_check.checks.Cache",
                    ("django_pgpool.health.PoolHealthCheck", {"alias": "default"}),
                ]
            ),
        ),
    ]

The check answers from the alias's pool in the worker that takes the request
(:func:`pgpool_core.ops.health.check_pool`): a connection borrowed within
``wait`` seconds (1 by default) answers ``SELECT 1``; failing that, a new
connection is tried (bounded by ``connect_timeout``). It never waits the
pool's ``timeout``, unlike ``health_check.checks.Database``, which goes
through Django's connection and so through the pool's ``getconn()``.
"""

from __future__ import annotations

import dataclasses

from django.db import connections
from django.utils.connection import ConnectionDoesNotExist

try:
    from health_check.base import HealthCheck
    from health_check.exceptions import ServiceUnavailable, ServiceWarning
except ImportError as err:
    raise ImportError(
        "django_pgpool.health needs django-health-check 4:"
        " pip install psycopg-forksafe[health-check]"
    ) from err

from pgpool_core.ops.health import check_pool

__all__ = ["PoolHealthCheck"]


@dataclasses.dataclass
class PoolHealthCheck(HealthCheck):  # type: ignore[misc]
    """The pool of database *alias* in this worker process (django-health-check).

    Unavailable when no connection answers (psycopg's reason, password
    masked); a warning when the alias has no pool (``OPTIONS["pool"]``
    unset), so a misconfigured probe does not pass for a healthy pool.
    """

    alias: str = "default"
    #: Seconds to wait for a connection from the pool before trying a new one.
    wait: float = dataclasses.field(default=1.0, repr=False)

    def run(self) -> None:
        try:
            wrapper = connections[self.alias]
        except ConnectionDoesNotExist as err:
            raise ServiceUnavailable("Database alias does not exist") from err
        pool = getattr(wrapper, "pool", None)
        if pool is None:
            raise ServiceWarning(
                f"database {self.alias!r} has no django_pgpool pool"
                ' (ENGINE "django_pgpool" with OPTIONS["pool"])'
            )
        result = check_pool(pool, self.wait)
        if not result.healthy:
            raise ServiceUnavailable(result.reason or "unavailable")
