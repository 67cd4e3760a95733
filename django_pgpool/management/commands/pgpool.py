"""``manage.py pgpool check|stats|capacity|config uwsgi|config gunicorn``."""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from pgpool_core import ForkSafePool, capacity, mask_conninfo
from pgpool_core.snippets import read_snippet

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
            help="Connect to each pooled database; print its version, TLS and"
            " round-trip time. Exit 1 if one cannot be reached.",
        )
        stats = actions.add_parser(
            "stats", help="Print the pool statistics of this process, as JSON."
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

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "config":
            self.stdout.write(read_snippet(options["server"], "django"), ending="")
            return
        wrappers = self._wrappers(options.get("databases"))
        if action == "check":
            self._check(wrappers)
        elif action == "capacity":
            self._capacity(wrappers, options)
        else:
            self._stats(wrappers)

    def _capacity(self, wrappers: list[DatabaseWrapper], options: Any) -> None:
        workers = options.get("workers")
        if workers is None:
            found = conf.workers_and_source() or capacity.default_workers()
            if found is None:
                raise CommandError(
                    "the number of workers per host is not known here: give"
                    " --workers (or set PGPOOL_WORKERS)"
                )
            workers, source = found
            self.stdout.write(f"workers per host: {workers} (from {source})")
        failed = []
        for wrapper in wrappers:
            pool = wrapper.pool
            if pool is None:
                failed.append(wrapper.alias)
                self.stderr.write(
                    f'{wrapper.alias}: no pool (OPTIONS["pool"] is not set)'
                )
                continue
            try:
                with pool.connect() as conn:
                    limit = capacity.read_server_limit(conn)
            except Exception as err:
                failed.append(wrapper.alias)
                reason = wrapper.mask(f"{type(err).__name__}: {err}".strip())
                self.stderr.write(f"{wrapper.alias}: cannot connect: {reason}")
                continue
            plan = capacity.Plan(
                max_size=pool.max_size,
                min_size=pool.min_size,
                workers=workers,
                hosts=options["hosts"],
                celery=max(options["celery"], 0),
            )
            lines, fits = capacity.report(
                wrapper.alias, plan, limit, pgbouncer=pool.pgbouncer
            )
            for line in lines:
                self.stdout.write(line)
            if not fits:
                failed.append(wrapper.alias)
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

    def _check(self, wrappers: list[DatabaseWrapper]) -> None:
        failed = []
        workers = conf.workers()
        for wrapper in wrappers:
            alias = wrapper.alias
            pool = wrapper.pool
            if pool is None:
                failed.append(alias)
                self.stderr.write(f'{alias}: no pool (OPTIONS["pool"] is not set)')
                continue
            try:
                line = self._check_one(pool)
            except Exception as err:
                failed.append(alias)
                reason = wrapper.mask(f"{type(err).__name__}: {err}".strip())
                self.stderr.write(f"{alias}: cannot connect: {reason}")
                continue
            sizes = f"pool min_size {pool.min_size}, max_size {pool.max_size}"
            if workers is not None:
                sizes += (
                    f", {workers} workers x {pool.max_size} ="
                    f" {workers * pool.max_size} connections"
                )
            self.stdout.write(f"{alias}: ok, {line}; {sizes}")
        if failed:
            raise CommandError(f"cannot use database(s): {', '.join(failed)}")

    @staticmethod
    def _check_one(pool: ForkSafePool) -> str:
        with pool.connect() as conn:
            t0 = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            rtt = (time.perf_counter() - t0) * 1000
            row = conn.execute(
                "SELECT current_setting('server_version'),"
                " current_setting('max_connections'),"
                " (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
            ).fetchone()
            tls = "on" if conn.pgconn.ssl_in_use else "off"
        version, max_connections, protocol = row if row else ("?", "?", None)
        if protocol:
            tls += f" ({protocol})"
        return (
            f"PostgreSQL {version}, TLS {tls}, round trip {rtt:.1f} ms,"
            f" max_connections {max_connections}"
        )

    def _stats(self, wrappers: list[DatabaseWrapper]) -> None:
        report: dict[str, Any] = {}
        for wrapper in wrappers:
            pool = wrapper.pool
            entry: dict[str, Any] = {"database": _masked_dsn(wrapper)}
            if pool is not None:
                entry.update(
                    name=pool.name,
                    min_size=pool.min_size,
                    max_size=pool.max_size,
                    timeout=pool.timeout,
                    stats=pool.stats(),
                )
            report[wrapper.alias] = entry
        try:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        finally:
            for wrapper in wrappers:
                wrapper.close_pool()


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _masked_dsn(wrapper: DatabaseWrapper) -> str:
    return wrapper.mask(mask_conninfo("", wrapper.get_connection_params()))
