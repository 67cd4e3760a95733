"""Settings for Django's own test suite (``tests/runtests.py --settings``).

As third-party backends do (django-cockroachdb, mssql-django): the ``default``
and ``other`` aliases Django's suite needs, on the server the conninfo in
PGPOOL_SUITE_DSN names (a superuser: the suite creates its test databases and
extensions), with ``OPTIONS["pool"]``. PGPOOL_SUITE_ENGINE picks the backend:
``django_pgpool`` or ``django.db.backends.postgresql``, with the same OPTIONS.
"""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

# The rest as in the example settings of this Django's suite (its tests/
# folder is on sys.path under runtests.py): Django 6 drops
# DEFAULT_AUTO_FIELD = "AutoField", for one, and its tests expect that.
from test_sqlite import *  # type: ignore[import-not-found]  # noqa: F403

_params: dict[str, Any] = conninfo_to_dict(os.environ["PGPOOL_SUITE_DSN"])
_params.pop("dbname", None)
_engine = os.environ["PGPOOL_SUITE_ENGINE"]
# Test databases get their own names per backend: test_<NAME>.
_name = "pgpool" if _engine == "django_pgpool" else "stock"


def _database(suffix: str) -> dict[str, Any]:
    return {
        "ENGINE": _engine,
        "NAME": f"{_name}_{suffix}",
        "USER": _params.get("user", ""),
        "PASSWORD": _params.get("password", ""),
        "HOST": _params.get("host", ""),
        "PORT": _params.get("port", ""),
        "OPTIONS": {
            **{
                k: v
                for k, v in _params.items()
                if k not in {"user", "password", "host", "port"}
            },
            "pool": True,
        },
    }


DATABASES = {"default": _database("default"), "other": _database("other")}
