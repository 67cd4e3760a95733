"""Which loans may have changed the server session: the default reset follows those.

The default ``reset`` (``pgpool_core._reset``) sends
:data:`pgpool_core.RESET_SQL` only after a loan that ran something able to
change the session. That is decided here, on the client, as each statement
starts, by :func:`changes_session`: what is not plain data access or
transaction control, what calls a function known to change the session,
and whatever cannot be read counts as changing. Unsure means reset.

How a connection is watched: its class is made a subclass of its own
(``pgpool_core._reset.watch()``, with the other uses of psycopg's private
names) whose ``cursor()`` makes each cursor it returns one of a
subclass of the cursor's own class too. Such a cursor classifies each
statement as it starts it (``execute``, ``executemany``, ``stream``,
``copy``) and, if plain, *vouches* for it; every statement any cursor starts
on the connection goes through the connection's ``_start_query()``, which
marks the connection changed when nobody vouched for the statement: a server
cursor, a cursor made directly (``psycopg.Cursor(conn)``), one the subclass
could not be made for. Statements sent through ``conn.pgconn`` (libpq)
directly are not seen (seeing them would cost every statement 0.5-3 us:
psycopg itself reads ``conn.pgconn`` 5 to 14 times a statement), nor what a
server function changes: those need ``reset="always"``.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["changes_session", "kind_of", "statement_kind", "take_changed"]

# What a statement is, by what it may do: read (or control the transaction),
# write data, or change the session (everything else).
READS, WRITES, CHANGES = 0, 1, 2

# The statements that read or write data only (SHOW reads a setting), or
# control the transaction: their first word. Anything else may change the
# session (SET, RESET, PREPARE, DEALLOCATE, LISTEN, DECLARE, CREATE TEMP,
# DISCARD, LOAD, DO, CALL, ...), or is not recognised: both count as changing.
_PLAIN = frozenset(
    (
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "VALUES",
        "TABLE",
        "WITH",
        "COPY",
        "SHOW",
        "BEGIN",
        "START",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "END",
        "ABORT",
    )
)
# Whitespace, comments and opening parentheses before a statement's first
# word. A line comment ends at a newline or a carriage return (PostgreSQL's
# scanner, scan.l). A block comment that holds a "/*" (PostgreSQL nests them)
# is not skipped: then no word follows, and the statement counts as changing.
# (Each alternative starts with its own character, and none repeats inside
# the repetition: the match takes linear time, whatever the text.)
_SKIPPED = r"\s|--[^\n\r]*(?:[\n\r]|\Z)|/\*(?:[^*/]|\*(?!/)|/(?!\*))*\*/"
_FIRST_WORD = re.compile(rf"(?:{_SKIPPED}|\()*([A-Za-z]+)")
_NOTHING = re.compile(rf"(?:{_SKIPPED}|;)*\Z")
_LINE_END = re.compile(r"[\n\r]")
# Functions that change the session, as PostgreSQL's documentation lists
# them, by the start of their name, lower case: set_config() (a GUC until
# the session ends, unless is_local); the session-level advisory locks
# (pg_advisory_lock, pg_advisory_lock_shared, pg_try_advisory_lock*) and
# their unlocking; setseed() (random()'s sequence); nextval() and setval()
# (what currval() and lastval() return); dblink's named connections and
# cursors; pg_trgm's set_limit() (pg_trgm.similarity_threshold, as a SET).
# Matched anywhere in the text (a string literal too: unsure means reset),
# only if the text has a "(": no call without one.
_FUNCTIONS = (
    "set_config",
    "set_limit",
    "pg_advisory_lock",
    "pg_advisory_unlock",
    "pg_try_advisory_lock",
    "setseed",
    "nextval",
    "setval",
    "dblink_connect",
    "dblink_open",
    # They run the text of a query given as a string: what it calls is
    # not in the statement's text (query_to_xml*, ts_stat, ts_rewrite).
    "query_to_xml",
    "ts_stat",
    "ts_rewrite",
)
# An UPDATE of pg_settings is a SET (PostgreSQL's documentation,
# "pg_settings"; its rule does nothing in a data-modifying WITH).
_SETTINGS = "pg_settings"
# SELECT ... INTO makes a table (temporary or not). After a number too:
# PostgreSQL 14 reads "1INTO" as 1 INTO (15 refuses it).
_INTO = re.compile(r"(?<![a-z_$])into\b")
# Plain statements that write (a data-modifying WITH too), for the warning
# about a transaction left open that had written (see SessionReset.start()).
_WRITING = frozenset(("INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "WITH"))


# Texts classified so far (an app runs the same few hundred), and what they
# were found to be. Emptied when full; long texts (a bulk INSERT's) are not
# kept.
class _Seen(dict[str | bytes, int]):
    # A text not seen yet is classified (statement_kind() keeps it);
    # anything else is not looked up here (TypeError, as for the unhashable
    # Composables): statement_kind() needs its context.
    __slots__ = ()

    def __missing__(self, text: str | bytes) -> int:
        if isinstance(text, str | bytes):
            return statement_kind(text)
        raise TypeError(f"not a text: {type(text).__name__}")


_seen = _Seen()
_SEEN_MAX = 2048
_SEEN_LONGEST = 8192

#: ``kind_of[text]``: what *text* (a ``str`` or ``bytes``) is
#: (:data:`CHANGES`, :data:`WRITES`, :data:`READS`), as :func:`statement_kind`
#: says; for a text seen before, one dict lookup (each statement a watched
#: cursor starts). TypeError for anything else (a ``Composable``).
kind_of: dict[str | bytes, int] = _seen


def changes_session(query: object, context: Any = None) -> bool:
    """Return True if running *query* may change the server session.

    *query* is what a cursor is given: a ``str``, ``bytes``, or a
    :mod:`psycopg.sql` ``Composable`` (made into its text with *context*, a
    cursor or connection). Anything else counts as changing. False only for
    text whose every statement is plain data access (``SELECT``,
    ``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``VALUES``, ``TABLE``,
    ``WITH``, ``COPY``, ``SHOW``) or transaction control (``BEGIN``, ``START``,
    ``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``, ``RELEASE``, ``END``,
    ``ABORT``), that calls none of the functions known to change the session
    (``set_config``, the session advisory locks, ``setseed``, ``nextval``,
    ``setval``, dblink's connections, pg_trgm's ``set_limit``;
    ``query_to_xml``, ``ts_stat`` and
    ``ts_rewrite``, which run a query's text), updates no ``pg_settings``,
    spells no identifier with Unicode escapes (``U&"..."``) and makes no
    table with ``SELECT ... INTO``; leading whitespace, comments and
    parentheses are skipped (a ``;`` in a line comment ends no statement). About
    0.4 us for a text seen before (up to 2048 texts of up to 8192 characters
    are remembered), 4-6 us for a new one of 200 characters.
    """
    return statement_kind(query, context) == CHANGES


def statement_kind(query: object, context: Any = None) -> int:
    """Return :data:`CHANGES`, :data:`WRITES` or :data:`READS` for *query*.

    As :func:`changes_session`; WRITES for plain text that may write data
    directly (``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``COPY``, or
    ``WITH``).
    """
    if isinstance(query, str | bytes):
        text: str | bytes = query
    elif isinstance(query, sql.Composable):
        try:
            text = query.as_bytes(context)
        except Exception:
            return CHANGES
    else:
        return CHANGES
    found = _seen.get(text)
    if found is None:
        if isinstance(text, bytes):
            try:
                found = _classify(text.decode())
            except UnicodeDecodeError:
                found = CHANGES
        else:
            found = _classify(text)
        if len(text) <= _SEEN_LONGEST:
            if len(_seen) >= _SEEN_MAX:
                _seen.clear()
            _seen[text] = found
    return found


def _classify(text: str) -> int:
    if '&"' in text:
        return CHANGES  # U&"...": an identifier spelled with escapes, any name
    if ";" in text:
        parts = text.split(";")
        for part in parts[:-1]:
            comment = part.rfind("--")
            if comment >= 0 and not _LINE_END.search(part, comment):
                return CHANGES  # the ";" is inside a line comment (or a string)
        statements = [part for part in parts if not _NOTHING.match(part)]
        if not statements:
            return READS  # empty: psycopg_pool's check sends ""
        if len(statements) > 1:
            return max(_classify(part) for part in statements)
        text = statements[0]
    match = _FIRST_WORD.match(text)
    if match is None:
        # "" changes nothing; a text that starts with no word is unknown.
        return READS if _NOTHING.match(text) else CHANGES
    first = match.group(1).upper()
    if first not in _PLAIN:
        return CHANGES
    lowered: str | None = None
    if "(" in text:
        lowered = text.lower()
        if any(name in lowered for name in _FUNCTIONS):
            return CHANGES
    if first == "SELECT" or first == "WITH":
        if lowered is None:
            lowered = text.lower()
        if "into" in lowered and _INTO.search(lowered):
            return CHANGES
    if first == "UPDATE":
        if lowered is None:
            lowered = text.lower()
        if _SETTINGS in lowered:
            return CHANGES
    return WRITES if first in _WRITING else READS


# -- watching a connection -------------------------------------------------------

# On a watched connection: the loan ran something that may have changed the
# session; a cursor of ours vouched for the statement about to start. (Read
# and cleared in place by SessionReset.start()'s usual cases too, without a
# call to take_changed().)
CHANGED = "_pgpool_changed"
VOUCHED = "_pgpool_vouched"
WROTE = "_pgpool_wrote"  # ... a statement that writes data directly


def take_changed(conn: psycopg.Connection[Any]) -> tuple[bool, bool]:
    """Return whether *conn* ran something that may have changed its session,
    and whether it ran a statement that writes data directly.

    And start again: the next call answers for what runs after this one.
    ``(True, True)`` for a connection that is not watched
    (``pgpool_core._reset.watch()``).
    """
    d = conn.__dict__
    changed: bool = d.get(CHANGED, True)
    wrote: bool = d.get(WROTE, True)
    d[CHANGED] = d[VOUCHED] = d[WROTE] = False
    return changed, wrote
