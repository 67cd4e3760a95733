"""What the ``check`` and ``stats`` commands print: one shape for both frameworks.

``flask pgpool check|stats`` and ``manage.py pgpool check|stats`` gather each
database's report here and print it the same way: ``check`` one line per
database (``--json``: the report), ``stats`` the report as JSON. Both exit
with :data:`EXIT_OK` when every database is usable, :data:`EXIT_FAILED` when
one is not (it cannot be reached, refuses the login, or its pool cannot get
``min_size`` connections within its ``timeout``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import _process
from ..errors import CONNECT_REASONS, connect_failure, unavailable_reason
from ..pool import ForkSafePool

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "check_database",
    "check_line",
    "pool_stats",
    "to_json",
]

#: Every database is usable.
EXIT_OK = 0
#: A database cannot be reached, refuses the login, or its pool cannot fill.
EXIT_FAILED = 1

_SERVER_SQL = (
    "SELECT current_setting('server_version'),"
    " current_setting('max_connections')::int,"
    " (SELECT version || ' ' || cipher FROM pg_stat_ssl"
    " WHERE pid = pg_backend_pid())"
)

Mask = Callable[[str], str]


def _base(pool: ForkSafePool, conninfo: str) -> dict[str, Any]:
    return {
        "ok": True,
        "reason": None,
        "error": None,
        "pool": pool.name,
        "conninfo": conninfo,
        "min_size": pool.min_size,
        "max_size": pool.max_size,
        "timeout": pool.timeout,
    }


def _failed(entry: dict[str, Any], err: BaseException, mask: Mask) -> None:
    reason = unavailable_reason(err) or CONNECT_REASONS[connect_failure(err)]
    entry.update(
        ok=False,
        reason=reason,
        # libpq's messages run over several lines: one line per database.
        error=" ".join(mask(f"{type(err).__name__}: {err}").split()),
    )


def check_database(
    pool: ForkSafePool,
    *,
    conninfo: str,
    mask: Mask,
    workers: int | None = None,
) -> dict[str, Any]:
    """Connect as *pool* would, without it; return the ``check`` report of it.

    One connection (``ForkSafePool.connect()``): a server that refuses the
    login or cannot be reached is reported with libpq's reason within
    ``connect_timeout``. *conninfo* is what to show of the settings (masked),
    *mask* masks any other text; *workers* (per host), if known, gives the
    most connections one host opens. Keys: ``ok``, ``reason`` and ``error``
    (None when ok), ``pool``, ``conninfo``, ``min_size``, ``max_size``,
    ``timeout``, ``workers``, ``connections_at_worst``, and when ok
    ``server`` (``user``, ``host``, ``port``, ``dbname``, ``version``,
    ``tls``: protocol and cipher or None, ``max_connections``),
    ``connect_ms`` and ``round_trip_ms``.
    """
    entry = _base(pool, conninfo)
    entry["workers"] = workers
    entry["connections_at_worst"] = None if workers is None else workers * pool.max_size
    t0 = time.perf_counter()
    try:
        conn = pool.connect()
    except Exception as err:
        _failed(entry, err, mask)
        return entry
    try:
        connected = time.perf_counter() - t0
        conn.autocommit = True
        t0 = time.perf_counter()
        conn.execute("SELECT 1", prepare=False)
        round_trip = time.perf_counter() - t0
        row = conn.execute(_SERVER_SQL, prepare=False).fetchone()
        version, max_connections, tls = row if row else ("?", None, None)
        info = conn.info
        entry["server"] = {
            "user": info.user,
            "host": info.host,
            "port": info.port,
            "dbname": info.dbname,
            "version": version,
            "tls": tls if conn.pgconn.ssl_in_use else None,
            "max_connections": max_connections,
        }
    except Exception as err:
        _failed(entry, err, mask)
        return entry
    finally:
        conn.close()
    entry["connect_ms"] = round(connected * 1000, 1)
    entry["round_trip_ms"] = round(round_trip * 1000, 2)
    return entry


def check_line(name: str, entry: Mapping[str, Any]) -> str:
    """Return the line ``check`` prints for one database (to stderr if not ok)."""
    if not entry["ok"]:
        return (
            f"{name}: FAILED ({entry['conninfo']}): {entry['reason']}: {entry['error']}"
        )
    server = entry["server"]
    tls = f"TLS on ({server['tls']})" if server["tls"] else "TLS off"
    sizes = f"pool min_size {entry['min_size']}, max_size {entry['max_size']}"
    if entry["workers"] is not None:
        sizes += (
            f", {entry['workers']} workers x {entry['max_size']} ="
            f" {entry['connections_at_worst']} connections"
        )
    return (
        f"{name}: ok, {server['user']}@{server['host']}:{server['port']}"
        f"/{server['dbname']}, PostgreSQL {server['version']}, {tls},"
        f" connect {entry['connect_ms']} ms, round trip {entry['round_trip_ms']} ms,"
        f" max_connections {server['max_connections']}; {sizes}"
    )


def pool_stats(pool: ForkSafePool, *, conninfo: str, mask: Mask) -> dict[str, Any]:
    """Open this process's pool of *pool*; return the ``stats`` report of it.

    Borrows one connection (failing as fast as ``getconn()`` does when the
    server refuses the login or cannot be reached), then waits up to the
    pool's ``timeout`` for ``min_size`` connections, then closes this
    process's pool (the object stays usable). Keys: those of
    :func:`check_database` before ``workers``, ``pid``, and ``stats``
    (``ConnectionPool.get_stats()`` of the pool, or the forking master's
    counts).
    """
    entry = _base(pool, conninfo)
    entry["pid"] = os.getpid()
    try:
        pool.putconn(pool.getconn())
        # This process's pool's wait(): ForkSafePool.wait() would close the
        # ForkSafePool itself on a timeout, as ConnectionPool.wait() does.
        pool.pool.wait(pool.timeout)
    except Exception as err:
        _failed(entry, err, mask)
    stats = pool.stats()
    for key in ("name", "pid"):
        stats.pop(key, None)
    entry["stats"] = stats
    _process.release(pool)
    return entry


def to_json(report: Mapping[str, Any]) -> str:
    """The report of each database, by its name, as the commands print it."""
    return json.dumps(report, indent=2, default=str)
