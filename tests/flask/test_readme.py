"""README.rst's Flask section: its example works as written, its table is complete."""

from __future__ import annotations

import re
import sys
import textwrap
import types
from collections.abc import Iterator

import pytest
from flask import Flask

from flask_pgpool.config import SETTINGS
from tests.conftest import REPO
from tests.harness.postgres import PgServer

README = (REPO / "README.rst").read_text()
FLASK = README[README.index("\nFlask\n=====\n") : README.index("\nDjango\n======\n")]


def code_block(starting_with: str) -> str:
    for match in re.finditer(
        r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", FLASK, re.MULTILINE
    ):
        code = textwrap.dedent(match.group(1))
        if code.startswith(starting_with):
            return code
    raise AssertionError(f"no Python block starting with {starting_with!r}")


@pytest.fixture
def myapp(pg_server: PgServer) -> Iterator[types.ModuleType]:
    """The README's myapp.py, pointed at the test database."""
    code = code_block("# myapp.py")
    placeholder = '"postgresql://app@db/app?sslmode=require"'
    assert placeholder in code
    module = types.ModuleType("myapp")
    sys.modules["myapp"] = module
    try:
        exec(
            compile(code.replace(placeholder, repr(pg_server.dsn())), "myapp", "exec"),
            module.__dict__,
        )
        yield module
    finally:
        del sys.modules["myapp"]


def test_the_example_works_as_written(
    myapp: types.ModuleType, pg_server: PgServer
) -> None:
    pg_server.execute(
        "CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, name text)"
    )
    pg_server.execute("DELETE FROM items")
    app: Flask = myapp.create_app()
    try:
        client = app.test_client()
        added = client.post("/items", json={"name": "kettle"})
        assert added.status_code == 201
        assert client.get("/items").json == [
            {"id": added.json["id"], "name": "kettle"}  # type: ignore[index]
        ]
        assert app.extensions["pgpool"].extension is myapp.pgpool
    finally:
        app.extensions["pgpool"].pools["default"].close()
        pg_server.execute("DROP TABLE items")


def test_the_table_lists_every_setting() -> None:
    listed = set(re.findall(r"^``PGPOOL_(\w+)``", FLASK, re.MULTILINE))
    assert listed == SETTINGS
