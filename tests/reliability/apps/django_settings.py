"""Settings of the Django app of the reliability tests (see tests.reliability.apps).

PGPOOL_APP_DSN gives the database (a conninfo string: what is not NAME, USER,
PASSWORD, HOST or PORT goes to OPTIONS), PGPOOL_APP_POOL the pool options,
PGPOOL_APP_DATABASE a JSON dict merged into the DATABASES entry (its OPTIONS
merged too), PGPOOL_APP_SETTINGS a JSON dict of more settings.
"""

from __future__ import annotations

import json
import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

_params: dict[str, Any] = conninfo_to_dict(os.environ.get("PGPOOL_APP_DSN", ""))

SECRET_KEY = "pgpool-reliability-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.reliability.apps.django_urls"
INSTALLED_APPS = ["django_pgpool"]
MIDDLEWARE = ["django_pgpool.middleware.DatabaseUnavailableMiddleware"]

_database: dict[str, Any] = {
    "ENGINE": "django_pgpool",
    "NAME": _params.pop("dbname", ""),
    "USER": _params.pop("user", ""),
    "PASSWORD": _params.pop("password", ""),
    "HOST": _params.pop("host", ""),
    "PORT": _params.pop("port", ""),
    "OPTIONS": {
        **_params,
        "pool": json.loads(os.environ.get("PGPOOL_APP_POOL", "true")),
    },
}
_overrides = json.loads(os.environ.get("PGPOOL_APP_DATABASE", "{}"))
_database["OPTIONS"].update(_overrides.pop("OPTIONS", {}))
_database.update(_overrides)
DATABASES = {"default": _database}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgpool": {"handlers": ["console"], "level": "INFO"}},
}

globals().update(json.loads(os.environ.get("PGPOOL_APP_SETTINGS", "{}")))
