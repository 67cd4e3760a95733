"""``manage.py pgpool check|stats|config uwsgi|config gunicorn``."""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from psycopg.conninfo import make_conninfo

from pgpool_core import ForkSafePool, mask_conninfo
from pgpool_core.options import mask_secrets
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
        for sub in (check, stats):
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
        else:
            self._stats(wrappers)

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
                reason = _mask(f"{type(err).__name__}: {err}".strip(), wrapper)
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


def _masked_dsn(wrapper: DatabaseWrapper) -> str:
    params = {
        key: value
        for key, value in wrapper.get_connection_params().items()
        if isinstance(value, (str, int)) and not isinstance(value, bool)
    }
    return mask_conninfo(make_conninfo("", **params))


def _mask(text: str, wrapper: DatabaseWrapper) -> str:
    for password in (
        wrapper.settings_dict.get("PASSWORD"),
        (wrapper.settings_dict.get("OPTIONS") or {}).get("password"),
    ):
        if password:
            text = mask_secrets(text, make_conninfo("", password=password))
    return text
