"""``manage.py pgpool check|stats|capacity|config uwsgi|config gunicorn``."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from pgpool_core import mask_conninfo
from pgpool_core.ops import capacity, report
from pgpool_core.ops.snippets import print_settings

from ... import conf
from ...base import DatabaseWrapper

__all__ = ["Command"]


class Command(BaseCommand):
    help = (
        "Check the pooled databases, print this process's pool statistics, or"
        " print the uWSGI or gunicorn settings for a Django app."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        check = actions.add_parser(
            "check",
            help="Connect to each pooled database; print its server, TLS use and"
            " round-trip time. Exit 1 if one cannot be reached or refuses the"
            " login, with libpq's reason.",
        )
        check.add_argument(
            "--json", action="store_true", help="Print the report as JSON."
        )
        stats = actions.add_parser(
            "stats",
            help="Open this process's pools; print their statistics as JSON. Exit"
            " 1 if one cannot be reached, refuses the login or cannot fill.",
        )
        plan = actions.add_parser(
            "capacity",
            help="Compare hosts x workers x max_size (+ Celery children) with the"
            " server's max_connections; say what to change if it does not fit."
            " Exit 1 if it does not.",
        )
        plan.add_argument(
            "--hosts", type=_positive, default=1, help="Hosts that run the app."
        )
        plan.add_argument(
            "--workers",
            type=_positive,
            help="Worker processes per host. Default: PGPOOL_WORKERS,"
            " WEB_CONCURRENCY, else the processes of ./uwsgi.ini or the workers"
            " of ./gunicorn.conf.py.",
        )
        plan.add_argument(
            "--celery",
            type=int,
            default=0,
            help="Celery prefork children per host that use the same pools.",
        )
        for sub in (check, stats, plan):
            sub.add_argument(
                "--database",
                action="append",
                dest="databases",
                metavar="ALIAS",
                help="Only this alias (may be repeated). Default: every alias"
                " with ENGINE django_pgpool.",
            )
        config = actions.add_parser(
            "config", help="Print the uWSGI or gunicorn settings for a Django app."
        )
        config.add_argument("server", choices=["uwsgi", "gunicorn"])
        config.add_argument(
            "-o",
            "--output",
            metavar="FILE",
            help="Write the settings into FILE instead of standard output (which"
            " also holds what settings.py or an AppConfig.ready() prints).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "config":
            # Only the settings on standard output, whatever runs meanwhile
            # prints (settings.py and ready() ran before: --output for those).
            print_settings(
                options["server"],
                "django",
                app=_wsgi_application,
                workers=_pgpool_workers,
                output=options.get("output"),
                stream=getattr(self.stdout, "_out", sys.stdout),
            )
            return
        wrappers = self._wrappers(options.get("databases"))
        if action == "check":
            self._check(wrappers, as_json=options["json"])
        elif action == "capacity":
            self._capacity(wrappers, options)
        else:
            self._stats(wrappers)

    def _capacity(self, wrappers: list[DatabaseWrapper], options: Any) -> None:
        workers = options.get("workers")
        found = (
            conf.workers_and_source() or capacity.default_workers()
            if workers is None
            else (workers, None)
        )
        if found is None:
            raise CommandError(
                "the number of workers per host is not known here: give"
                " --workers (or set PGPOOL_WORKERS)"
            )
        by_alias = {wrapper.alias: wrapper for wrapper in wrappers}
        pools = {alias: wrapper.pool for alias, wrapper in by_alias.items()}

        def echo(line: str, error: bool) -> None:
            (self.stderr if error else self.stdout).write(line)

        failed = capacity.print_capacity(
            {
                alias: 'no pool (OPTIONS["pool"] is not set)' if pool is None else pool
                for alias, pool in pools.items()
            },
            found,
            hosts=options["hosts"],
            celery=max(options["celery"], 0),
            # What start-up code in wsgi.py left open, under uWSGI without
            # py-call-uwsgi-fork-hooks (docs/django.rst).
            master_keeps_connection=True,
            mask=lambda alias, text: by_alias[alias].mask(text),
            echo=echo,
        )
        if failed:
            raise CommandError(
                f"does not fit or cannot be reached: {', '.join(failed)}"
            )

    def _wrappers(self, aliases: list[str] | None) -> list[DatabaseWrapper]:
        if aliases is None:
            aliases = [
                alias
                for alias, settings_dict in settings.DATABASES.items()
                if settings_dict.get("ENGINE") == conf.ENGINE
            ]
            if not aliases:
                raise CommandError(
                    'No database uses "ENGINE": "django_pgpool" in DATABASES.'
                )
        wrappers = []
        for alias in aliases:
            if alias not in settings.DATABASES:
                raise CommandError(f"No database {alias!r} in DATABASES.")
            wrapper = connections[alias]
            if not isinstance(wrapper, DatabaseWrapper):
                raise CommandError(
                    f'DATABASES["{alias}"] does not use "ENGINE": "django_pgpool".'
                )
            wrappers.append(wrapper)
        return wrappers

    def _check(self, wrappers: list[DatabaseWrapper], *, as_json: bool) -> None:
        workers = conf.workers()
        result: dict[str, Any] = {}
        for wrapper in wrappers:
            pool = wrapper.pool
            if pool is None:
                raise CommandError(
                    f'{wrapper.alias}: no pool (OPTIONS["pool"] is not set)'
                )
            result[wrapper.alias] = report.check_database(
                pool, conninfo=_masked_dsn(wrapper), mask=wrapper.mask, workers=workers
            )
        if as_json:
            self.stdout.write(report.to_json(result))
        else:
            for alias, entry in result.items():
                out = self.stdout if entry["ok"] else self.stderr
                out.write(report.check_line(alias, entry))
        _exit_if_failed(result)

    def _stats(self, wrappers: list[DatabaseWrapper]) -> None:
        result: dict[str, Any] = {}
        for wrapper in wrappers:
            pool = wrapper.pool
            if pool is None:
                raise CommandError(
                    f'{wrapper.alias}: no pool (OPTIONS["pool"] is not set)'
                )
            result[wrapper.alias] = report.pool_stats(
                pool, conninfo=_masked_dsn(wrapper), mask=wrapper.mask
            )
            wrapper.close_pool()
        self.stdout.write(report.to_json(result))
        _exit_if_failed(result)


def _exit_if_failed(result: dict[str, Any]) -> None:
    failed = [name for name, entry in result.items() if not entry["ok"]]
    if failed:
        raise CommandError(
            f"cannot use database(s): {', '.join(failed)}",
            returncode=report.EXIT_FAILED,
        )


def _wsgi_application() -> str:
    """Return WSGI_APPLICATION as WSGI servers name it: ``"shop.wsgi:application"``."""
    path = getattr(settings, "WSGI_APPLICATION", None)
    module, _, name = (path or "").rpartition(".")
    if not module or not name:
        raise CommandError(
            "WSGI_APPLICATION is not set: set it to the WSGI callable of the"
            ' project, as startproject does ("mysite.wsgi.application"), so that'
            " the settings name it"
        )
    return f"{module}:{name}"


def _pgpool_workers() -> int | None:
    """Return PGPOOL_WORKERS, for the printed settings' worker processes."""
    if getattr(settings, "PGPOOL_WORKERS", None) is None:
        return None
    return conf.workers()


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _masked_dsn(wrapper: DatabaseWrapper) -> str:
    pool = wrapper.pool
    if pool is not None:
        # What the pool really sends: its own defaults too.
        return wrapper.mask(pool.masked_conninfo())
    return wrapper.mask(mask_conninfo("", wrapper.get_connection_params()))
