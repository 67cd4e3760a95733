"""The server settings the documentation shows and the CLIs print (``config uwsgi``)."""

from __future__ import annotations

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


def read_snippet(server: str, framework: str) -> str:
    """Return the settings for *server* ("uwsgi", "gunicorn", "postgresql")."""
    try:
        name = SNIPPETS[(server, framework)]
    except KeyError:
        servers = sorted({s for s, _ in SNIPPETS})
        raise ValueError(
            f"no settings for server {server!r}; choose one of {', '.join(servers)}"
        ) from None
    return (files(__package__) / name).read_text(encoding="utf-8")
