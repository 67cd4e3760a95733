"""``flask pgpool``: check the databases, pool statistics, server settings."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
import psycopg
from flask import current_app
from flask.cli import AppGroup

from pgpool_core.snippets import read_snippet

if TYPE_CHECKING:
    from .extension import PgPoolState

__all__ = ["pgpool_cli"]

pgpool_cli = AppGroup(
    "pgpool", help="The app's PostgreSQL pools (flask_pgpool).", no_args_is_help=True
)


def _state() -> PgPoolState:
    state: PgPoolState = current_app.extensions["pgpool"]
    return state


@pgpool_cli.command("check")
def check_command() -> None:
    """Connect to each database; print its version, TLS use and round-trip time.

    Exits with status 1, saying why, if a database cannot be reached.
    """
    state = _state()
    failed = False
    for bind, pool in state.pools.items():
        try:
            line = _check(pool.connect)
        except Exception as err:
            failed = True
            # libpq's messages run over several lines: one line per database.
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            reason = state.mask(bind, reason)
            click.echo(
                f"{bind}: FAILED ({state.masked_conninfo(bind)}): {reason}", err=True
            )
        else:
            click.echo(f"{bind}: ok, {line}")
    if failed:
        raise SystemExit(1)


def _check(connect: Callable[[], psycopg.Connection[Any]]) -> str:
    t0 = time.perf_counter()
    conn = connect()
    connected = time.perf_counter() - t0
    try:
        conn.autocommit = True
        t0 = time.perf_counter()
        conn.execute("SELECT 1")
        round_trip = time.perf_counter() - t0
        row = conn.execute(
            "SELECT current_setting('server_version'), (SELECT version || ' '"
            " || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
        ).fetchone()
        version, tls = row if row else ("?", None)
        info = conn.info
        where = f"{info.user}@{info.host}:{info.port}/{info.dbname}"
        tls_text = f"TLS on ({tls})" if conn.pgconn.ssl_in_use else "TLS off"
    finally:
        conn.close()
    return (
        f"{where}, PostgreSQL {version}, {tls_text},"
        f" connect {connected * 1000:.1f} ms, round trip {round_trip * 1000:.2f} ms"
    )


@pgpool_cli.command("stats")
def stats_command() -> None:
    """Open this process's pools and print their statistics as JSON.

    The numbers are this command's own pools (each worker has its own: serve
    ``pgpool.stats()`` from a view to see those). Exits with status 1 if a
    pool cannot get its ``min_size`` connections within its timeout.
    """
    state = _state()
    result: dict[str, dict[str, Any]] = {}
    failed = False
    for bind, pool in state.pools.items():
        entry: dict[str, Any] = {
            "conninfo": state.masked_conninfo(bind),
            "min_size": pool.min_size,
            "max_size": pool.max_size,
            "timeout": pool.timeout,
        }
        try:
            pool.wait(pool.timeout)
        except Exception as err:
            failed = True
            entry["error"] = state.mask(bind, f"{type(err).__name__}: {err}")
        entry.update(pool.stats())
        pool.close()
        result[bind] = entry
    click.echo(json.dumps(result, indent=2, default=str))
    if failed:
        raise SystemExit(1)


@pgpool_cli.command("config")
@click.argument("server", type=click.Choice(["uwsgi", "gunicorn"]))
def config_command(server: str) -> None:
    """Print the tested settings for SERVER (uwsgi or gunicorn)."""
    click.echo(read_snippet(server, "flask"), nl=False)
