"""``make demo``: the bug and the fix, side by side, on real TLS.

Starts a throwaway PostgreSQL with TLS (or uses DATABASE_URL), serves the
flask_notes example under uWSGI in preload mode (master + 4 workers) twice --
once with a plain psycopg_pool made at import, once with flask_pgpool -- sends
the same load to both for a few seconds, prints what happened, and stops
everything it started.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.forking import shared_sockets
from tests.harness.postgres import (
    PgServer,
    existing_server,
    start_cluster,
    stop_cluster,
)
from tests.harness.servers import (
    LoadLoop,
    LoadResult,
    Response,
    ServerNotAnswering,
    start_server,
)

EXAMPLE = REPO / "example_projects" / "flask_notes"
SECONDS = float(os.environ.get("DEMO_SECONDS", "8"))
TIMEOUT = 3.0  # seconds a client waits for an answer
VARIANTS = [
    ("plain psycopg_pool", "naive_wsgi:app"),
    ("flask_pgpool", "wsgi:app"),
]


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def child_pids(parent: int) -> set[int]:
    """Return the pids of *parent*'s children (uWSGI's workers), from /proc."""
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # "pid (comm) state ppid ...": comm may hold spaces.
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:  # ended meanwhile
                continue
            if int(fields[1]) == parent:
                children.add(int(entry))
    return children


def failure_kind(response: Response) -> str:
    """Say how a request failed: no answer in time, an HTTP 5xx, a reset."""
    if response.status >= 500:
        return "5xx"
    error = response.error or ""
    if "timed out" in error or "Timeout" in error:
        return "timeout"
    if any(kind in error for kind in ("Reset", "RemoteDisconnected", "BrokenPipe")):
        return "reset"
    return "other"


def run_variant(pg: PgServer, label: str, app: str) -> dict[str, str]:
    say(f"{label}: starting uWSGI (master + 4 workers, preload) ...")
    position = pg.log_position() if pg.has_log else 0
    try:
        server = start_server(
            "uwsgi",
            app,
            cwd=EXAMPLE,
            env={"DATABASE_URL": pg.dsn()},
            workers=4,
            ready_timeout=30,
        )
    except ServerNotAnswering as err:
        if not err.workers_hung():
            raise
        # The bug at its worst: the master forked while a pool thread held
        # the GIL or a lock, and no worker ever answers.
        say(f"{label}: uWSGI forked its workers, and none answered in 30 s")
        return dict.fromkeys(ROWS, "n/a") | {"workers answering": "0"}
    # A connection made in the master and inherited by the workers is a
    # socket to the server that several of these processes hold open, until
    # the server or the pool closes it: look before and during the load.
    master = server.proc.pid
    shared: set[int] = set()

    def look() -> None:
        shared.update(shared_sockets({master, *child_pids(master)}, pg.port))

    try:
        look()
        say(f"{label}: sending requests for {SECONDS:.0f} s, 16 at a time ...")
        with LoadLoop(server.port, "/notes", concurrency=16, timeout=TIMEOUT) as load:
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.5)
                look()
            result: LoadResult = load.stop()
    finally:
        say(f"{label}: stopping uWSGI ...")
        server.stop(timeout=12)
    kinds = [failure_kind(r) for r in result.failures]
    bad_mac = str(len(pg.bad_mac_lines(position))) if pg.has_log else "n/a"
    values = [
        len(result.responses),
        len(result.responses) - len(result.failures),
        kinds.count("timeout"),
        kinds.count("5xx"),
        kinds.count("reset"),
        kinds.count("other"),
        len(result.worker_pids()),
        len(shared),
    ]
    return {
        **dict(zip(ROWS, map(str, values), strict=False)),
        ROWS[-1]: bad_mac,
    }


ROWS = [
    "requests",
    "succeeded",
    f"failed: no answer in {TIMEOUT:.0f} s",
    "failed: HTTP 5xx",
    "failed: connection reset or closed",
    "failed: other errors",
    "workers answering",
    "connections shared by 2+ processes",
    '"bad record mac" in server log',
]


def print_table(columns: dict[str, dict[str, str]]) -> None:
    rows = list(next(iter(columns.values())))
    width = max(len(r) for r in rows) + 2
    widths = [max(len(label), 8) + 2 for label in columns]
    print()
    pairs = list(zip(columns, widths, strict=True))
    print("".ljust(width) + "".join(label.rjust(w) for label, w in pairs))
    for row in rows:
        if row == "failed: other errors" and all(
            column[row] in ("0", "n/a") for column in columns.values()
        ):
            continue
        cells = [columns[label][row].rjust(w) for label, w in pairs]
        print(row.ljust(width) + "".join(cells))
    print()


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if url:
        say("using DATABASE_URL (the server log is not read)")
        pg = existing_server(url)
        cluster = None
    else:
        say("starting a throwaway PostgreSQL with TLS on ...")
        pg = cluster = start_cluster()
        say(f"PostgreSQL listening on {pg.host}:{pg.port}, TLS required")
    try:
        columns = {label: run_variant(pg, label, app) for label, app in VARIANTS}
    finally:
        if cluster is not None:
            say("stopping PostgreSQL ...")
            stop_cluster(cluster)
    print_table(columns)
    print(EXPLANATION)
    print(conclusion(columns["plain psycopg_pool"], columns["flask_pgpool"]))
    print(NEXT)
    fixed = columns["flask_pgpool"]
    return 0 if fixed["succeeded"] == fixed["requests"] else 1


EXPLANATION = """\
What happened: uWSGI imports the app once in its master, then forks 4 workers
(preload, its default).
- plain psycopg_pool: the pool opened at import, and every worker inherited
  its connections (shared by 2+ processes). They read and write the same TLS
  sessions: requests hang (no answer), fail (5xx) or are cut off, and
  PostgreSQL logs "bad record mac".
- flask_pgpool: each worker leaves what it inherited untouched and opens its
  own connections on first use: none shared, nothing fails.
"""

NEXT = "Next: docs/quickstart.rst (Flask, Django), docs/servers.rst (settings)."


def conclusion(plain: dict[str, str], fixed: dict[str, str]) -> str:
    """One line: how many requests failed each way."""
    if plain["requests"] == "n/a":
        broken = "hung every worker"
    else:
        failed = int(plain["requests"]) - int(plain["succeeded"])
        broken = f"failed {failed} of {plain['requests']} requests"
    fixed_failed = int(fixed["requests"]) - int(fixed["succeeded"])
    return (
        f"In short: a pool made before the fork {broken}; flask_pgpool failed"
        f" {fixed_failed} of {fixed['requests']}, with preload kept."
    )


if __name__ == "__main__":
    sys.exit(main())
