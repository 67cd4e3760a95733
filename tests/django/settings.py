"""Settings of the test project, served by uWSGI and gunicorn and used by pytest.

The database comes from PGPOOL_APP_DSN (a conninfo string); under pytest
without it, tests/django/conftest.py points the alias at the test cluster.
PGPOOL_APP_POOL_* size the pool; PGPOOL_APP_TEST_DB names the test database.
PGPOOL_APP_REPLICA=1 adds a "replica" alias, a test mirror of "default" as in
Django's documented primary/replica setup.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

_params: dict[str, Any] = conninfo_to_dict(
    os.environ.get("PGPOOL_APP_DSN", "host=127.0.0.1 dbname=pgpool_test")
)

SECRET_KEY = "pgpool-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "Europe/Paris"
ROOT_URLCONF = "tests.django.urls"
WSGI_APPLICATION = "tests.django.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_pgpool", "tests.django.testapp"]
MIDDLEWARE = ["django_pgpool.middleware.DatabaseUnavailableMiddleware"]
PGPOOL_RETRY_AFTER = 7

DATABASES = {
    "default": {
        # PGPOOL_APP_ENGINE=django.db.backends.postgresql: Django's own pool,
        # for the tests that show what goes wrong without this backend.
        "ENGINE": os.environ.get("PGPOOL_APP_ENGINE", "django_pgpool"),
        "NAME": _params.pop("dbname", "pgpool_test"),
        "USER": _params.pop("user", ""),
        "PASSWORD": _params.pop("password", ""),
        "HOST": _params.pop("host", ""),
        "PORT": _params.pop("port", ""),
        "ATOMIC_REQUESTS": True,
        "OPTIONS": {
            **_params,
            "pool": {
                "min_size": int(os.environ.get("PGPOOL_APP_POOL_MIN", "1")),
                "max_size": int(os.environ.get("PGPOOL_APP_POOL_MAX", "4")),
                "timeout": float(os.environ.get("PGPOOL_APP_POOL_TIMEOUT", "10")),
            },
        },
        "TEST": {"NAME": os.environ.get("PGPOOL_APP_TEST_DB")},
    }
}

if os.environ.get("PGPOOL_APP_WORKERS"):
    PGPOOL_WORKERS = int(os.environ["PGPOOL_APP_WORKERS"])

if os.environ.get("PGPOOL_APP_REPLICA"):
    DATABASES["replica"] = copy.deepcopy(DATABASES["default"])
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgpool": {"handlers": ["console"], "level": "INFO"}},
}
