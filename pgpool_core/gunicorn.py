"""The gunicorn hooks under their first import path.

Configurations written for the first previews (``from pgpool_core.gunicorn
import post_fork, ...`` in a ``gunicorn.conf.py``) run unchanged: importing this
module imports :mod:`pgpool_core.servers.gunicorn`, with what its import does.
"""

from __future__ import annotations

from .servers.gunicorn import *  # noqa: F403
from .servers.gunicorn import __all__ as __all__
