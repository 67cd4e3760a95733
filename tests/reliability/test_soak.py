"""Issue 7, scenario 10: a soak with faults 1 to 3 at random moments.

10,000 requests per framework from 8 clients to gunicorn --preload with 4
workers, while the database's backends are terminated, the database restarts
(fast), and every idle connection is killed by ``idle_session_timeout``, twice
each, in random order at random moments (the seed is printed; set
PGPOOL_SOAK_SEED to replay one). A failure counts unless the request was in
flight during a fault's window (see tests/reliability/support.py), or at the
moment the server ended an idle session (read from its log): it must be
none. Marked slow, and run by ``make test`` and CI like every test.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pytest

from tests.harness.postgres import PgServer
from tests.harness.servers import LoadLoop, RunningServer
from tests.reliability.support import (
    FRAMEWORKS,
    RECOVERY_BOUND,
    Outcome,
    ServerClock,
    Window,
    first_success_after,
    idle_death,
    idle_kills,
    restart_database,
    serve_app,
    terminate_backends,
)

REQUESTS = 10_000
FAULTS = ("terminate", "restart", "idle") * 2


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.parametrize("app", FRAMEWORKS)
def test_soak_with_faults_at_random_moments(
    serve: Callable[..., RunningServer], running_database: PgServer, app: str
) -> None:
    pg = running_database
    seed = int(os.environ.get("PGPOOL_SOAK_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    faults = list(FAULTS)
    rng.shuffle(faults)
    # One random moment in each of len(faults) equal stretches of the run.
    first, last = 500, REQUESTS - 1500
    stretch = (last - first) // len(faults)
    moments = [first + i * stretch + rng.randrange(stretch) for i in range(len(faults))]
    print(f"soak seed {seed}: {list(zip(faults, moments, strict=True))}")

    server = serve_app(
        serve,
        app,
        pg,
        pool={"timeout": 3},
        # Under load no connection idles that long; idle_death() makes them.
        options="-c idle_session_timeout=1000",
    )
    clock = ServerClock(pg)
    position = pg.log_position()
    windows: list[Window] = []
    accepted: list[float] = []
    killed: list[int] = []
    with LoadLoop(
        server.port, "/query", concurrency=8, timeout=15, max_requests=REQUESTS
    ) as load:
        for fault, moment in zip(faults, moments, strict=True):
            load.wait_for(moment, timeout=120)
            if fault == "terminate":
                windows.append(terminate_backends(pg))
            elif fault == "restart":
                window, accepting = restart_database(pg)
                windows.append(window)
                accepted.append(accepting)
            else:
                killed.append(idle_death(load, pg, idle=1.5))
        load.wait_for(REQUESTS, timeout=300)
        result = load.stop()

    recoveries = [first_success_after(result.responses, t) for t in accepted]
    # A session the server ends just as a request borrows it fails that
    # request, in flight at that moment (none is in flight during idle_death()).
    windows += idle_kills(clock, position)
    outcome = Outcome(
        app,
        f"soak (seed {seed}; idle kills {killed})",
        result,
        windows,
        [r if r is not None else -1 for r in recoveries],
    )
    outcome.report()
    assert len(result.responses) == REQUESTS
    assert all(r is not None and r < RECOVERY_BOUND for r in recoveries), recoveries
    assert all(count > 0 for count in killed), "idle connections were killed"
    outcome.assert_no_failure_beyond_in_flight(server.output())
