"""Sphinx configuration: ``make docs`` builds it with warnings as errors."""

from __future__ import annotations

import sys
from importlib.metadata import version as _version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "psycopg-forksafe"
author = "the psycopg-forksafe authors"
copyright = author  # noqa: A001 - the name Sphinx reads
release = _version("psycopg-forksafe")
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]

html_theme = "furo"
html_title = f"psycopg-forksafe {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

# Every reference to this project's names must resolve. The builds run without
# network, so there is no intersphinx: other projects' names stay unlinked.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(psycopg|psycopg_pool|flask|werkzeug|django|celery|opentelemetry"
        r"|prometheus_client|health_check)(\..*)?",
    ),
    (r"py:.*", r"(Meter|MetricsData|MetricExportResult|MetricExporter|HealthCheck)"),
    (r"py:.*", r"pgpool_core\.metrics\.otel\.F"),
    (r"py:.*", r"(Connection|ConnectionPool|Flask|HttpRequest|HttpResponse)"),
    # psycopg.Error's constructor, which ConnectFailed and SocketTimeout inherit.
    (r"py:.*", r"(ErrorInfo|PGconn)"),
    (r"py:.*", r"(collections\.abc|typing)\..*"),
    (r"py:.*", r"(Any|Callable|Iterator|Mapping|Sequence|T|CT|Self|ConnectionCB)"),
    # Internal modules and classes that public signatures and docstrings name.
    (r"py:.*", r"pgpool_core\.ops\.capacity|(flask_pgpool\.config\.)?BindConfig"),
]
