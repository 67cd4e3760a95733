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

from tests.harness.postgres import (
    PgServer,
    existing_server,
    start_cluster,
    stop_cluster,
)
from tests.harness.servers import LoadLoop, LoadResult, start_server

EXAMPLE = REPO / "example_projects" / "flask_notes"
SECONDS = float(os.environ.get("DEMO_SECONDS", "8"))
VARIANTS = [
    ("plain psycopg_pool", "naive_wsgi:app"),
    ("flask_pgpool", "wsgi:app"),
]


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def run_variant(pg: PgServer, label: str, app: str) -> dict[str, str]:
    say(f"{label}: starting uWSGI (master + 4 workers, preload) ...")
    position = pg.log_position() if pg.has_log else 0
    server = start_server(
        "uwsgi", app, cwd=EXAMPLE, env={"DATABASE_URL": pg.dsn()}, workers=4
    )
    try:
        say(f"{label}: sending requests for {SECONDS:.0f} s, 16 at a time ...")
        with LoadLoop(server.port, "/notes", concurrency=16, timeout=3) as load:
            time.sleep(SECONDS)
            result: LoadResult = load.stop()
    finally:
        say(f"{label}: stopping uWSGI ...")
        server.stop(timeout=12)
    backends = {b["backend"] for b in result.bodies() if "backend" in b}
    bad_mac = str(len(pg.bad_mac_lines(position))) if pg.has_log else "n/a"
    return {
        "requests": str(len(result.responses)),
        "failed": str(len(result.failures)),
        "workers answering": str(len(result.worker_pids())),
        "distinct backends": str(len(backends)),
        "backends shared by workers": str(len(result.shared_backends())),
        '"bad record mac" in server log': bad_mac,
    }


def print_table(columns: dict[str, dict[str, str]]) -> None:
    rows = list(next(iter(columns.values())))
    width = max(len(r) for r in rows) + 2
    widths = [max(len(label), 8) + 2 for label in columns]
    print()
    pairs = list(zip(columns, widths, strict=True))
    print("".ljust(width) + "".join(label.rjust(w) for label, w in pairs))
    for row in rows:
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
    fixed = columns["flask_pgpool"]
    return 0 if fixed["failed"] == "0" else 1


if __name__ == "__main__":
    sys.exit(main())
