"""Find the code samples of the documentation: docs/*.rst, README.rst, docstrings.

A sample is a ``.. code-block::`` of a page, or a literal block (a paragraph
ending in ``::``) of a page or of a docstring in the three packages, which
autodoc renders. tests/docs/test_samples.py runs or checks each one.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from tests.conftest import REPO

PACKAGES = ("pgpool_core", "flask_pgpool", "django_pgpool")
PAGES = [REPO / "README.rst", *sorted((REPO / "docs").glob("*.rst"))]


@dataclass(frozen=True)
class Sample:
    source: str  # "docs/flask.rst", or "flask_pgpool/__init__.py" for a docstring
    line: int  # where the block starts (1-based, in the page or the docstring)
    language: str  # "python", "sh", "ini", "text"; "literal" for a "::" block
    code: str

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0]

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<language>\S+) *$")
_LITERAL = re.compile(r"^(?P<indent> *)(?!\.\. ).*::$")


def blocks(text: str, source: str) -> list[Sample]:
    """Return the code blocks and literal blocks of reStructuredText *text*."""
    lines = text.splitlines()
    found = []
    i = 0
    while i < len(lines):
        directive = _DIRECTIVE.match(lines[i])
        literal = None if directive else _LITERAL.match(lines[i])
        if not directive and not literal:
            i += 1
            continue
        match = directive or literal
        assert match is not None
        indent = len(match["indent"])
        start = i + 1
        j = start
        # Options of the directive (":caption: ..."), then a blank line.
        while directive and j < len(lines) and lines[j].strip().startswith(":"):
            j += 1
        body = []
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            body.append(lines[j])
            j += 1
        code = textwrap.dedent("\n".join(body)).strip("\n")
        if code:
            language = directive["language"] if directive else "literal"
            found.append(Sample(source, start, language, code + "\n"))
        i = j
    return found


def page_samples() -> list[Sample]:
    return [
        sample
        for page in PAGES
        for sample in blocks(page.read_text(), str(page.relative_to(REPO)))
    ]


def docstring_samples() -> list[Sample]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(
                    node,
                    ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef,
                ):
                    doc = ast.get_docstring(node)
                    if doc:
                        source = str(path.relative_to(REPO))
                        found += blocks(doc, source)
    return found


def all_samples() -> list[Sample]:
    return page_samples() + docstring_samples()
