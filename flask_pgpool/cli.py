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

from pgpool_core import capacity, lifecycle
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
            reason = " ".join(state.mask(bind, f"{type(err).__name__}: {err}").split())
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
        lifecycle.release(pool)
        result[bind] = entry
    click.echo(json.dumps(result, indent=2, default=str))
    if failed:
        raise SystemExit(1)


@pgpool_cli.command("capacity")
@click.option(
    "--hosts",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Hosts (machines, containers) that run the app.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes per host. Default: WEB_CONCURRENCY, else the"
    " processes of ./uwsgi.ini or the workers of ./gunicorn.conf.py.",
)
@click.option(
    "--celery",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Celery prefork children per host that use the same pools.",
)
def capacity_command(hosts: int, workers: int | None, celery: int) -> None:
    """Compare the most connections the app opens with the server's limit.

    Prints hosts x workers x max_size (+ Celery children) for each database
    against max_connections - superuser_reserved_connections, and what to
    change when it does not fit. Exits with status 1 if one does not fit or
    cannot be reached.
    """
    if workers is None:
        found = capacity.default_workers()
        if found is None:
            raise click.UsageError(
                "the number of workers per host is not known here: give --workers"
            )
        workers, source = found
        click.echo(f"workers per host: {workers} (from {source})")
    state = _state()
    failed = False
    for bind, pool in state.pools.items():
        try:
            with pool.connect() as conn:
                limit = capacity.read_server_limit(conn)
        except Exception as err:
            failed = True
            reason = " ".join(state.mask(bind, f"{type(err).__name__}: {err}").split())
            click.echo(f"{bind}: FAILED: {reason}", err=True)
            continue
        plan = capacity.Plan(
            max_size=pool.max_size,
            min_size=pool.min_size,
            workers=workers,
            hosts=hosts,
            celery=celery,
        )
        lines, fits = capacity.report(bind, plan, limit, pgbouncer=pool.pgbouncer)
        for line in lines:
            click.echo(line)
        failed = failed or not fits
    if failed:
        raise SystemExit(1)


@pgpool_cli.command("config")
@click.argument("server", type=click.Choice(["uwsgi", "gunicorn"]))
def config_command(server: str) -> None:
    """Print the tested settings for SERVER (uwsgi or gunicorn)."""
    click.echo(read_snippet(server, "flask"), nl=False)
