"""``flask pgpool``: check the databases, pool statistics, server settings."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from functools import partial, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo, prepare_import

from pgpool_core._sizing import server_workers
from pgpool_core.ops import capacity, report
from pgpool_core.ops.snippets import print_settings, settings_output

if TYPE_CHECKING:
    from flask import Flask

    from .extension import PgPoolState

__all__ = ["pgpool_cli"]

pgpool_cli = AppGroup(
    "pgpool",
    help="The app's PostgreSQL pools (flask_pgpool). Each command loads the app"
    " as the flask command finds it: give it with --app (flask --app wsgi"
    " pgpool check) or FLASK_APP, else flask looks for wsgi.py or app.py here.",
    no_args_is_help=True,
)


def _load_app(ctx: click.Context) -> Flask:
    """Return the app as the flask command finds it, loaded with whatever it
    prints sent to standard error: each command's standard output is its
    report (JSON for ``check --json`` and ``stats``) or the server's settings.
    """
    with settings_output():
        if current_app:
            return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]
        return ctx.ensure_object(ScriptInfo).load_app()


def _in_app_context(command: Callable[..., None]) -> Callable[..., None]:
    """Run *command* in the app's context, the app loaded by :func:`_load_app`
    (for commands declared with ``with_appcontext=False``)."""

    @click.pass_context
    @wraps(command)
    def run(ctx: click.Context, /, *args: Any, **kwargs: Any) -> None:
        with _load_app(ctx).app_context():
            command(*args, **kwargs)

    return run


def _state() -> PgPoolState:
    state: PgPoolState | None = current_app.extensions.get("pgpool")
    if state is None:
        raise click.UsageError(
            f"the app {current_app.name!r} does not use flask_pgpool: call"
            " pgpool.init_app(app) where the app is made (pgpool = PgPool())"
        )
    return state


@pgpool_cli.command("check", with_appcontext=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_in_app_context
def check_command(as_json: bool) -> None:
    """Connect to each database; print its server, TLS use and round-trip time.

    Exits with status 1, saying why (libpq's reason), if a database cannot be
    reached or refuses the login. The same report as Django's "manage.py
    pgpool check".
    """
    state = _state()
    found = server_workers()
    workers = found[0] if found else None
    result = {
        bind: report.check_database(
            pool,
            conninfo=state.masked_conninfo(bind),
            mask=partial(state.mask, bind),
            workers=workers,
        )
        for bind, pool in state.pools.items()
    }
    if as_json:
        click.echo(report.to_json(result))
    else:
        for bind, entry in result.items():
            click.echo(report.check_line(bind, entry), err=not entry["ok"])
    if not all(entry["ok"] for entry in result.values()):
        raise SystemExit(report.EXIT_FAILED)


@pgpool_cli.command("stats", with_appcontext=False)
@_in_app_context
def stats_command() -> None:
    """Open this process's pools and print their statistics as JSON.

    The numbers are this command's own pools (each worker has its own: serve
    pgpool.stats() from a view to see those). Exits with status 1 if a
    database cannot be reached or refuses the login (at once), or its pool
    cannot get min_size connections within its timeout. The same report as
    Django's "manage.py pgpool stats".
    """
    state = _state()
    result = {
        bind: report.pool_stats(
            pool,
            conninfo=state.masked_conninfo(bind),
            mask=partial(state.mask, bind),
        )
        for bind, pool in state.pools.items()
    }
    click.echo(report.to_json(result))
    if not all(entry["ok"] for entry in result.values()):
        raise SystemExit(report.EXIT_FAILED)


@pgpool_cli.command("capacity", with_appcontext=False)
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
@_in_app_context
def capacity_command(hosts: int, workers: int | None, celery: int) -> None:
    """Compare the most connections the app opens with the server's limit.

    Prints hosts x workers x max_size (+ Celery children) for each database
    against max_connections - superuser_reserved_connections, and what to
    change when it does not fit. Exits with status 1 if one does not fit or
    cannot be reached.
    """
    found = capacity.default_workers() if workers is None else (workers, None)
    if found is None:
        raise click.UsageError(
            "the number of workers per host is not known here: give --workers"
        )
    state = _state()
    failed = capacity.print_capacity(
        state.pools,
        found,
        hosts=hosts,
        celery=celery,
        mask=state.mask,
        echo=lambda line, error: click.echo(line, err=error),
    )
    if failed:
        raise SystemExit(1)


@pgpool_cli.command("config", with_appcontext=False)
@click.argument("server", type=click.Choice(["uwsgi", "gunicorn"]))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the settings into this file instead of standard output.",
)
@click.pass_context
def config_command(ctx: click.Context, server: str, output: str | None) -> None:
    """Print the tested settings for SERVER (uwsgi or gunicorn), for this app.

    They load the app as the flask command found it (--app or FLASK_APP,
    else wsgi.py or app.py): "module:name", or "module:create_app()" for a
    factory. Start the server in the directory the flask command runs in.
    Only the settings go to standard output, whatever the app prints while
    it loads (that goes to standard error): redirect it into
    gunicorn.conf.py or uwsgi.ini.
    """
    app = _load_app(ctx)

    def app_path() -> str:
        with app.app_context():
            return _app_import_path()

    print_settings(server, "flask", app=app_path, output=output)


def _app_import_path() -> str:
    """Return the app as WSGI servers name it: ``"module:app"``, ``"module:f()"``.

    From ``--app`` or ``FLASK_APP`` as Flask reads it (``flask.cli``'s
    ``prepare_import``); without either, from ``wsgi.py`` or ``app.py`` here,
    or the module the app was made in (its ``import_name``): the attribute
    that holds the app, else its factory (``create_app``, ``make_app``).
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    info = click.get_current_context().find_object(ScriptInfo)
    given = info.app_import_path if info is not None else None
    names: list[str] = []
    if given:
        parts = re.split(r":(?![\\/])", given, maxsplit=1)
        name = prepare_import(parts[0])
        if len(parts) == 2:
            return f"{name}:{parts[1]}"
        names.append(name)
    else:
        here = [path for path in ("wsgi.py", "app.py") if Path(path).exists()]
        names += [prepare_import(path) for path in here]
    names.append(app.import_name)
    for name in names:
        module = sys.modules.get(name)
        if module is None:
            continue
        for attribute in ("app", "application", *sorted(vars(module))):
            if getattr(module, attribute, None) is app:
                return f"{name}:{attribute}"
        for factory in ("create_app", "make_app"):
            if callable(getattr(module, factory, None)):
                return f"{name}:{factory}()"
    raise click.UsageError(
        "cannot tell how to import the app: give it as --app module:name"
    )
