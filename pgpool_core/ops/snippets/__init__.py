"""The server settings the documentation shows and the CLIs print (``config uwsgi``).

One file per server (``uwsgi.ini``, ``gunicorn.conf.py``, ``postgresql.conf``),
for both frameworks: ``{framework}`` and ``{app}`` in it stand for the
framework and its WSGI application, which :func:`read_snippet` fills in. The
example projects ship its output (``tests/examples`` checks they do).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import TextIO

__all__ = [
    "EXAMPLE_APPS",
    "SNIPPETS",
    "print_settings",
    "read_snippet",
    "settings_output",
]

#: Snippet name -> file name, per server and framework.
SNIPPETS = {
    ("uwsgi", "flask"): "uwsgi.ini",
    ("uwsgi", "django"): "uwsgi.ini",
    ("gunicorn", "flask"): "gunicorn.conf.py",
    ("gunicorn", "django"): "gunicorn.conf.py",
    ("postgresql", "flask"): "postgresql.conf",
    ("postgresql", "django"): "postgresql.conf",
}

#: The WSGI application the settings load unless given another, per framework:
#: the example projects' (and the documentation's).
EXAMPLE_APPS = {"flask": "wsgi:app", "django": "mysite.wsgi:application"}

# What read_snippet() fills in: the app (quoted or not) and the framework.
_PLACEHOLDERS = re.compile(r'"\{app\}"|\{app\}|\{framework\}')


def read_snippet(
    server: str, framework: str, *, app: str | None = None, workers: int | None = None
) -> str:
    """Return the settings for *server* ("uwsgi", "gunicorn", "postgresql").

    *framework* is "flask" or "django". *app* is the WSGI application as
    both servers name it (``"shop.wsgi:application"``, ``"app:create_app()"``);
    without it, the example's (:data:`EXAMPLE_APPS`: ``wsgi:app`` for Flask,
    ``mysite.wsgi:application`` for Django), which is what the documentation
    shows. *workers* (Django's ``PGPOOL_WORKERS``) replaces the example's 4
    worker processes. Raises ValueError for another *server*.
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
        app = EXAMPLE_APPS[framework]
    # In one pass, so that an app's own text ("shop:make('{framework}')") is
    # written as given. gunicorn.conf.py quotes the app as a Python string;
    # uwsgi.ini does not.
    values = {'"{app}"': json.dumps(app), "{app}": app, "{framework}": framework}
    return _PLACEHOLDERS.sub(lambda match: values[match.group()], text)


def print_settings(
    server: str,
    framework: str,
    *,
    app: Callable[[], str],
    workers: Callable[[], int | None] | None = None,
    output: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Print :func:`read_snippet`'s settings, or write them into *output*.

    What ``flask pgpool config`` and ``manage.py pgpool config`` do. *app*
    (and *workers*) are called under :func:`settings_output`, so that what
    finding the app prints goes to standard error; *stream* is where the
    settings go (default ``sys.stdout``). *output* is a file to write them
    into instead (UTF-8).
    """
    with settings_output(stream) as out:
        text = read_snippet(
            server,
            framework,
            app=app(),
            workers=None if workers is None else workers(),
        )
        if output is None:
            out.write(text)
    if output is not None:
        Path(output).write_text(text, encoding="utf-8")


@contextmanager
def settings_output(stream: TextIO | None = None) -> Iterator[TextIO]:
    """Send everything printed meanwhile to stderr; yield where the settings go.

    For ``flask pgpool config`` and ``manage.py pgpool config``, whose output
    is redirected into ``gunicorn.conf.py`` or ``uwsgi.ini``: an app that
    prints while it loads (a start-up query's result in ``wsgi.py``) would
    put its lines into the file. *stream* (default ``sys.stdout``) is where
    the settings go; inside the block ``sys.stdout`` is ``sys.stderr`` and,
    when *stream* is a file descriptor (a shell's ``>``), so is that
    descriptor, for what C code or a subprocess writes. The yielded stream
    writes to the original output. Both are put back at the end.
    """
    target = sys.stdout if stream is None else stream
    saved_stdout = sys.stdout
    try:
        fd = target.fileno()
        err_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = err_fd = -1  # not a file (a test runner's buffer)
    target.flush()
    sys.stdout = sys.stderr
    if fd < 0:
        try:
            yield target
        finally:
            sys.stdout = saved_stdout
        return
    copy = os.dup(fd)
    os.dup2(err_fd, fd)
    output = open(copy, "w", encoding=getattr(target, "encoding", None) or "utf-8")
    try:
        yield output
    finally:
        output.flush()
        sys.stdout.flush()
        os.dup2(copy, fd)
        output.close()
        sys.stdout = saved_stdout
