"""The Celery worker hooks under their first import path.

Configurations written for the first previews (``import pgpool_core.celery``
where a Celery app is made) run unchanged: importing this module imports
:mod:`pgpool_core.servers.celery`, with what its import does.
"""

from __future__ import annotations

from .servers.celery import *  # noqa: F403
from .servers.celery import __all__ as __all__
