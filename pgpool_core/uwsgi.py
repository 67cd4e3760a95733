"""The uWSGI hooks under their first import path.

Configurations written for the first previews (``import pgpool_core.uwsgi`` in a
WSGI file, ``import = pgpool_core.uwsgi`` in a ``uwsgi.ini``) run unchanged:
importing this module imports :mod:`pgpool_core.servers.uwsgi`, with what its
import does.
"""

from __future__ import annotations

from .servers.uwsgi import *  # noqa: F403
from .servers.uwsgi import __all__ as __all__
