"""The server settings the documentation shows and the CLIs print (``config uwsgi``)."""

from __future__ import annotations

import json
import re
from importlib.resources import files

__all__ = ["SNIPPETS", "read_snippet"]

#: Snippet name -> file name, per server and framework.
SNIPPETS = {
    ("uwsgi", "flask"): "uwsgi-flask.ini",
    ("uwsgi", "django"): "uwsgi-django.ini",
    ("gunicorn", "flask"): "gunicorn-flask.conf.py",
    ("gunicorn", "django"): "gunicorn-django.conf.py",
    ("postgresql", "flask"): "postgresql.conf",
    ("postgresql", "django"): "postgresql.conf",
}


def read_snippet(
    server: str, framework: str, *, app: str | None = None, workers: int | None = None
) -> str:
    """Return the settings for *server* ("uwsgi", "gunicorn", "postgresql").

    *app* is the WSGI application as both servers name it
    (``"shop.wsgi:application"``, ``"app:create_app()"``): it replaces the
    example's (``mysite.wsgi:application`` for Django, ``wsgi:app`` for
    Flask), which is what the documentation shows. *workers* (Django's
    ``PGPOOL_WORKERS``) replaces the example's 4 worker processes.
    """
    try:
        name = SNIPPETS[(server, framework)]
    except KeyError:
        servers = sorted({s for s, _ in SNIPPETS})
        raise ValueError(
            f"no settings for server {server!r}; choose one of {', '.join(servers)}"
        ) from None
    text = (files(__package__) / name).read_text(encoding="utf-8")
    if workers is not None:
        key = {"gunicorn": "workers", "uwsgi": "processes"}.get(server)
        if key is not None:
            text = re.sub(rf"^{key} = \d+$", f"{key} = {workers}", text, flags=re.M)
    if app is None:
        return text
    if server == "gunicorn":
        line = f"wsgi_app = {json.dumps(app)}"
        return re.sub(r"^wsgi_app = .*$", lambda _: line, text, flags=re.M)
    if server == "uwsgi":
        line = f"module = {app}"
        return re.sub(r"^module = .*$", lambda _: line, text, flags=re.M)
    return text
