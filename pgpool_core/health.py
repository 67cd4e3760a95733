"""The health check under their first import path.

Configurations written for the first previews
(``pgpool_core.health.check_pool()``) run unchanged: importing this module
imports :mod:`pgpool_core.ops.health`, with what its import does.
"""

from __future__ import annotations

from .ops.health import *  # noqa: F403
from .ops.health import __all__ as __all__
