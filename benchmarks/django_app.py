"""The Django contender of one gunicorn server of ``make bench``.

``BENCH_CONTENDER`` picks the database backend (``contenders.DJANGO``),
``BENCH_DSN`` is the database; the views are ``django_urls``. ``application``
is the WSGI app, ``asgi_application`` the ASGI one (gunicorn's
``uvicorn_worker.UvicornWorker``). No query runs at
import: Django's native pool breaks when the preloading master queries (the
workers share its sockets).
"""

from __future__ import annotations

import os

import django
from contenders import django_database, django_settings
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

settings.configure(
    **django_settings(
        {
            "default": django_database(
                os.environ["BENCH_CONTENDER"], os.environ["BENCH_DSN"]
            )
        }
    )
)
django.setup()
application = get_wsgi_application()
asgi_application = get_asgi_application()
