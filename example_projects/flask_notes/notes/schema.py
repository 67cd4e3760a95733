"""The notes table, and ``flask --app wsgi init-db`` to create it."""

from __future__ import annotations

import click
from flask import Flask

from . import pgpool

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body text NOT NULL CHECK (body <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


def create_schema() -> None:
    """Create the table if it is missing (in an app context)."""
    with pgpool.connection.transaction():
        pgpool.connection.execute(SCHEMA)


def register(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the notes table."""
        create_schema()
        click.echo("notes table ready")
