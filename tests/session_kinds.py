"""What a borrower can leave on a pooled connection, kind by kind, and how to see it.

Each :class:`Kind` has ``leave(conn, dsn)``, what a careless borrower does and
never undoes, and ``see(conn, dsn)``, what the next borrower can observe of it
(JSON-able). The tests of the core, of flask_pgpool and of django_pgpool borrow
a pool's only connection three times: ``see`` on the fresh connection (the
baseline), ``leave``, then ``see`` again, which must find what it found first.

``leave`` commits what it means to leave in the session (psycopg's
``commit()`` does nothing in autocommit); a kind whose name says "left open"
returns inside the transaction that wrote. Queries that psycopg is to prepare
run on a server-binding ``psycopg.Cursor``, whatever the connection's
``cursor_factory`` (Django's binds on the client, and prepares nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.rows import dict_row
from psycopg.types import TypeInfo

Connection = psycopg.Connection[Any]

#: What handlers added by an earlier borrower heard (this process).
HEARD: list[str] = []


@dataclass(frozen=True)
class Kind:
    """One kind of state a borrower can leave behind."""

    name: str
    leave: Callable[[Connection, str], None]
    see: Callable[[Connection, str], Any]
    #: True if the kind exists only where psycopg prepares statements.
    needs_prepared_statements: bool = False

    def __str__(self) -> str:
        return self.name


def _server_bound(conn: Connection) -> psycopg.Cursor[Any]:
    return psycopg.Cursor(conn)


def _notify(dsn: str, channel: str, payload: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute(f"NOTIFY {channel}, '{payload}'")
    time.sleep(0.1)  # delivered to the listening session's socket


def _notifications(conn: Connection, dsn: str) -> list[list[str]]:
    conn.execute("LISTEN pgpool_kind_b")
    conn.commit()
    return [[n.channel, n.payload] for n in conn.notifies(timeout=0.3, stop_after=1)]


def _leave_notification_read(conn: Connection, dsn: str) -> None:
    conn.execute("LISTEN pgpool_kind_a")
    conn.commit()
    _notify(dsn, "pgpool_kind_a", "for borrower A")
    conn.execute("SELECT 1")  # reads it into psycopg's backlog
    conn.commit()


def _leave_notification_unread(conn: Connection, dsn: str) -> None:
    conn.execute("LISTEN pgpool_kind_a")
    conn.commit()
    _notify(dsn, "pgpool_kind_a", "for borrower A")  # still on the socket


def _leave_handlers(conn: Connection, dsn: str) -> None:
    conn.add_notice_handler(lambda diag: HEARD.append(f"notice {diag.message_primary}"))
    conn.add_notify_handler(lambda n: HEARD.append(f"notify {n.payload}"))


def _see_handlers(conn: Connection, dsn: str) -> list[str]:
    before = len(HEARD)
    conn.execute("DO $$BEGIN RAISE NOTICE 'for borrower B'; END$$")
    conn.execute("LISTEN pgpool_kind_b")
    conn.commit()
    conn.execute("NOTIFY pgpool_kind_b, 'for borrower B'")
    conn.commit()
    conn.execute("SELECT 1")
    conn.commit()
    return HEARD[before:]


class _TextLoader(Loader):
    def load(self, data: Buffer) -> str:
        return bytes(data).decode()


class _ShoutingDumper(Dumper):
    oid = 25  # text

    def dump(self, obj: str) -> bytes:
        return obj.upper().encode()


def _leave_adapters(conn: Connection, dsn: str) -> None:
    conn.adapters.register_loader("int4", _TextLoader)
    conn.adapters.register_dumper(str, _ShoutingDumper)
    conn.adapters.types.add(TypeInfo("pgpool_kind_type", 23, 1007))


def _see_adapters(conn: Connection, dsn: str) -> list[Any]:
    row = conn.execute("SELECT 1::int4, %s::text", ["quiet"]).fetchone()
    conn.commit()
    assert row is not None
    return [*row, conn.adapters.types.get("pgpool_kind_type") is not None]


class _OtherCursor(psycopg.ServerCursor[Any]):
    pass


def _leave_attributes(conn: Connection, dsn: str) -> None:
    conn.autocommit = not conn.autocommit
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    conn.read_only = True
    conn.deferrable = True
    conn.prepare_threshold = None
    conn.prepared_max = 3
    conn.row_factory = dict_row  # type: ignore[assignment]
    conn.cursor_factory = psycopg.ClientCursor
    conn.server_cursor_factory = _OtherCursor


def _see_attributes(conn: Connection, dsn: str) -> list[Any]:
    return [
        conn.autocommit,
        str(conn.isolation_level),
        conn.read_only,
        conn.deferrable,
        conn.prepare_threshold,
        conn.prepared_max,
        getattr(conn.row_factory, "__name__", repr(conn.row_factory)),
        conn.cursor_factory.__name__,
        conn.server_cursor_factory.__name__,
    ]


def _leave_user_attribute(conn: Connection, dsn: str) -> None:
    conn.tenant_id = 42  # type: ignore[attr-defined]


def _see_user_attribute(conn: Connection, dsn: str) -> Any:
    return getattr(conn, "tenant_id", "not set")


def _leave_user_prepare(conn: Connection, dsn: str) -> None:
    conn.execute("PREPARE pgpool_kind_stmt AS SELECT 1")
    conn.commit()


def _leave_user_prepare_beside_psycopgs(conn: Connection, dsn: str) -> None:
    _server_bound(conn).execute("SELECT %s::int + 1", [1], prepare=True)  # psycopg's
    _leave_user_prepare(conn, dsn)


def _see_user_prepare(conn: Connection, dsn: str) -> list[Any]:
    row = conn.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE name = 'pgpool_kind_stmt'"
    ).fetchone()
    assert row is not None
    try:
        conn.execute("PREPARE pgpool_kind_stmt AS SELECT 2")  # fails if it's there
    except psycopg.Error as err:
        return [row[0], f"{type(err).__name__}: {err}"]
    conn.execute("DEALLOCATE pgpool_kind_stmt")
    conn.commit()
    return [row[0], "PREPARE ok"]


def _leave_rolled_back_ddl(conn: Connection, dsn: str) -> None:
    if conn.autocommit:
        conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE pgpool_kind_rows (a int)")
    for _ in range(6):  # prepared by psycopg on the way
        _server_bound(conn).execute("SELECT * FROM pgpool_kind_rows").fetchall()
    # left open: rolled back when given back


def _see_rows(conn: Connection, table: str) -> str:
    conn.execute(f"CREATE TEMP TABLE {table} (a text, b int)")
    try:
        _server_bound(conn).execute(f"SELECT * FROM {table}").fetchall()
    except psycopg.Error as err:
        return f"{type(err).__name__}: {err}"
    return "ok"  # the table goes with the reset (or the rollback)


def _leave_dropped_temp_table(conn: Connection, dsn: str) -> None:
    conn.execute("CREATE TEMP TABLE pgpool_kind_temp (a int)")
    conn.commit()
    for _ in range(6):  # prepared by psycopg on the way
        _server_bound(conn).execute("SELECT * FROM pgpool_kind_temp").fetchall()
    conn.commit()
    # DISCARD TEMP in the reset drops it


_FORTY_TWO = "SELECT 42 AS pgpool_kind"


def _leave_deallocated_psycopg_statement(conn: Connection, dsn: str) -> None:
    _server_bound(conn).execute(_FORTY_TWO, prepare=True)
    row = conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE NOT from_sql AND statement = %s",
        [_FORTY_TWO],
    ).fetchone()
    assert row is not None
    conn.execute(f'DEALLOCATE "{row[0]}"')  # behind psycopg's back
    conn.commit()


def _see_forty_two(conn: Connection, dsn: str) -> str:
    try:
        row = _server_bound(conn).execute(_FORTY_TWO, prepare=True).fetchone()
    except psycopg.Error as err:
        conn.rollback()
        return f"{type(err).__name__}: {err}"
    conn.commit()
    return str(row[0] if row else None)


KINDS = [
    Kind(
        "notification read into psycopg's backlog",
        _leave_notification_read,
        _notifications,
    ),
    Kind("notification left on the socket", _leave_notification_unread, _notifications),
    Kind("notice and notify handlers", _leave_handlers, _see_handlers),
    Kind("adapters and types registered", _leave_adapters, _see_adapters),
    Kind("connection attributes and factories", _leave_attributes, _see_attributes),
    Kind(
        "an attribute of the user's on the connection",
        _leave_user_attribute,
        _see_user_attribute,
    ),
    Kind("a user's PREPARE", _leave_user_prepare, _see_user_prepare),
    Kind(
        "a user's PREPARE beside psycopg's statements",
        _leave_user_prepare_beside_psycopgs,
        _see_user_prepare,
    ),
    Kind(
        "a statement prepared in a transaction left open, rolled back",
        _leave_rolled_back_ddl,
        lambda conn, dsn: _see_rows(conn, "pgpool_kind_rows"),
        needs_prepared_statements=True,
    ),
    Kind(
        "a statement prepared on a temporary table the reset drops",
        _leave_dropped_temp_table,
        lambda conn, dsn: _see_rows(conn, "pgpool_kind_temp"),
        needs_prepared_statements=True,
    ),
    Kind(
        "psycopg's statement deallocated behind its back",
        _leave_deallocated_psycopg_statement,
        _see_forty_two,
        needs_prepared_statements=True,
    ),
]
