"""What the reliability tests share: the apps, the faults, and how failures count.

A fault has a window: from the moment it starts to the moment it is over (the
terminated backends are gone; the restarted server accepts connections, plus
the 2 s the issue allows). A failed request whose time in flight overlaps a
window failed because of that fault; any other failure counts against the
pool. Each test prints a ``RELIABILITY`` line with its figures.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.harness.postgres import PgServer
from tests.harness.servers import (
    GUNICORN_HOOKS,
    LoadLoop,
    LoadResult,
    Response,
    RunningServer,
)

#: The WSGI callable of each app, by the name the tests are parametrised with.
APPS = {
    "core": "tests.apps.plain_app:application",
    "flask": "tests.reliability.apps.flask_wsgi:app",
    "django": "tests.reliability.apps.django_wsgi:application",
}
FRAMEWORKS = ("flask", "django")

#: The pool every app gets unless a test says otherwise.
POOL = {"min_size": 2, "max_size": 4, "timeout": 5}

#: How long after the server accepts connections requests must succeed again.
RECOVERY_BOUND = 2.0


def app_env(
    pg: PgServer,
    *,
    pool: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    database: Mapping[str, Any] | None = None,
    import_query: bool = True,
    **dsn_params: Any,
) -> dict[str, str]:
    """Return the environment that configures the apps (tests.reliability.apps)."""
    options = {**POOL, **(pool or {})}
    return {
        "PGPOOL_APP_DSN": pg.dsn(**dsn_params),
        "PGPOOL_APP_POOL": json.dumps(options),
        # The framework-less app takes its timeout alone.
        "PGPOOL_APP_MODE": "forksafe",
        "PGPOOL_APP_TIMEOUT": str(options["timeout"]),
        "PGPOOL_APP_SETTINGS": json.dumps(settings or {}),
        "PGPOOL_APP_DATABASE": json.dumps(database or {}),
        "PGPOOL_APP_IMPORT_QUERY": "1" if import_query else "0",
        "DJANGO_SETTINGS_MODULE": "tests.reliability.apps.django_settings",
    }


def serve_app(
    serve: Callable[..., RunningServer],
    app: str,
    pg: PgServer,
    *,
    workers: int = 4,
    extra_args: Sequence[str] = (),
    **env_options: Any,
) -> RunningServer:
    """Serve *app* ("core", "flask" or "django") with gunicorn --preload and hooks."""
    return serve(
        "gunicorn",
        APPS[app],
        env=app_env(pg, **env_options),
        config=GUNICORN_HOOKS,
        workers=workers,
        extra_args=extra_args,
    )


# -- counting failures -----------------------------------------------------------


@dataclass
class Window:
    """A fault, from its start to the moment it is over (time.monotonic())."""

    fault: str
    start: float
    end: float

    def saw(self, response: Response) -> bool:
        """True if *response* was in flight at some moment of the fault."""
        return (
            response.started <= self.end
            and response.started + response.elapsed >= self.start
        )


@dataclass
class Outcome:
    """The figures of one scenario, for the report."""

    app: str
    scenario: str
    result: LoadResult
    windows: list[Window] = field(default_factory=list)
    recovery: list[float] = field(default_factory=list)

    @property
    def in_flight(self) -> list[Response]:
        """The failed requests that were in flight during a fault."""
        return [r for r in self.result.failures if any(w.saw(r) for w in self.windows)]

    @property
    def beyond_in_flight(self) -> list[Response]:
        """The failed requests that no fault excuses."""
        return [
            r for r in self.result.failures if not any(w.saw(r) for w in self.windows)
        ]

    def report(self) -> str:
        recovery = (
            ", recovery " + ", ".join(f"{s:.2f} s" for s in self.recovery)
            if self.recovery
            else ""
        )
        kinds = Counter(
            next(w.fault.split()[0] for w in self.windows if w.saw(r))
            for r in self.in_flight
        )
        by_kind = (
            ": " + ", ".join(f"{n} {k}" for k, n in kinds.items()) if kinds else ""
        )
        line = (
            f"RELIABILITY {self.app} {self.scenario}:"
            f" {len(self.result.responses)} requests,"
            f" {len(self.beyond_in_flight)} failed beyond in-flight"
            f" ({len(self.in_flight)} in flight at a fault{by_kind}){recovery}"
        )
        print(line)
        return line

    def assert_no_failure_beyond_in_flight(self, log: str = "") -> None:
        """Fail, saying when each unexcused failure happened, if there is one.

        *log* is the server's output: its lines about 503s are shown too.
        """
        beyond = self.beyond_in_flight
        if not beyond:
            return
        origin = min(r.started for r in self.result.responses)
        faults = ", ".join(
            f"{w.fault} {w.start - origin:.3f}-{w.end - origin:.3f} s"
            for w in self.windows
        )
        failures = "; ".join(
            f"sent at {r.started - origin:.3f} s, {r.elapsed:.3f} s,"
            f" {r.status} {(r.error or r.body.decode(errors='replace'))[:120]!r}"
            for r in beyond
        )
        lines = [line for line in log.splitlines() if "503" in line]
        raise AssertionError(
            f"{LoadResult(beyond).summary()}\nfaults: {faults}\n"
            f"failures: {failures}\nserver: {lines[-10:]}"
        )


def first_success_after(responses: Iterable[Response], moment: float) -> float | None:
    """Seconds from *moment* to the end of the first 2xx answer sent after it."""
    ends = [r.started + r.elapsed for r in responses if r.ok and r.started >= moment]
    return min(ends) - moment if ends else None


# -- faults ------------------------------------------------------------------------


def terminate_backends(pg: PgServer) -> Window:
    """pg_terminate_backend() every client backend of the test database."""
    start = time.monotonic()
    victims = pg.client_backends()
    assert victims, "the app had connections to terminate"
    pg.terminate(*victims, wait=True)
    return Window(f"terminate {len(victims)} backends", start, time.monotonic())


def restart_database(pg: PgServer) -> tuple[Window, float]:
    """Fast restart; return its window (to acceptance + RECOVERY_BOUND), acceptance."""
    start = time.monotonic()
    pg.restart("fast")
    accepting = time.monotonic()
    return Window("restart", start, accepting + RECOVERY_BOUND), accepting


class ServerClock:
    """Reads the times of the server's log lines as time.monotonic() values.

    The log's timestamps (``%m``: wall clock, milliseconds) are matched to this
    process's clock by a line the test makes the server log at a known moment.
    """

    MARKER = "pgpool-reliability-clock"

    def __init__(self, pg: PgServer) -> None:
        self._pg = pg
        position = pg.log_position()
        with pg.connect() as conn:
            before = time.monotonic()
            conn.execute(f"DO $$ BEGIN RAISE LOG '{self.MARKER}'; END $$")
            after = time.monotonic()
        line = next(
            line
            for line in pg.log_since(position).splitlines()
            if self.MARKER in line and "RAISE" not in line
        )
        self._offset = (before + after) / 2 - self._stamp(line)

    @staticmethod
    def _stamp(line: str) -> float:
        day, moment = line.split()[:2]
        parsed = datetime.strptime(f"{day} {moment}", "%Y-%m-%d %H:%M:%S.%f")
        return parsed.timestamp()

    def moments(self, position: int, text: str) -> list[float]:
        """Return when the server logged the lines holding *text*, since *position*."""
        return [
            self._stamp(line) + self._offset
            for line in self._pg.log_since(position).splitlines()
            if text in line
        ]


def idle_kills(clock: ServerClock, position: int) -> list[Window]:
    """The moments the server ended an idle session, as short windows.

    A request that borrowed a connection just as the server ended it fails
    (its query meets the end of the session): it was in flight at that fault.
    50 ms either side covers the log's millisecond stamps and the clock match.
    """
    return [
        Window("idle-session kill", moment - 0.05, moment + 0.05)
        for moment in clock.moments(position, "idle-session timeout")
    ]


def idle_death(load: LoadLoop, pg: PgServer, idle: float) -> int:
    """Let the app's connections sit idle for *idle* seconds; count the kills.

    The app's sessions have an ``idle_session_timeout`` shorter than *idle*:
    the server ends them all while no request is in flight, as a firewall or a
    server setting does with the pooled connections of a quiet app.
    """
    position = pg.log_position()
    load.pause()
    time.sleep(idle)
    killed = pg.log_since(position).count("idle-session timeout")
    load.resume()
    return killed
