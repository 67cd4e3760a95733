"""In one process: each contender's cost per request, and round trips it waits for.

No load generator, no server: each contender's WSGI callable is called
directly, ``GET /q?id=42`` (one small indexed query), its response read and
closed, as a server would:

- Flask: the app made by ``contenders.flask_app`` (the hand-written pool with
  ``with pool.connection()``, flask_pgpool, flask_pgpool with
  ``PGPOOL_RESET = None``);
- Django: ``WSGIHandler`` with one database alias per contender (Django's
  native pool, django_pgpool, django_pgpool with ``"reset": None``), the view
  running one ``connection.cursor()`` query. Closing the response sends
  ``request_finished``, whose ``close_old_connections`` gives the connection
  back to its pool (Django's test ``Client`` disconnects it, so is not used).

Each contender runs in a thread of its own, so that Django's per-thread
connections of one never show in another's ``close_old_connections``. Cost:
``--repeats`` times, the contenders in shuffled order, each runs ``--best-of``
loops of ``--requests`` requests; the fastest loop gives its wall and CPU
microseconds per request (CPU: every thread of this process, pool threads
included; the server's backends separately where ``BENCH_POSTMASTER`` names
the postmaster). The difference to the group's baseline is taken within each
repeat, seconds apart (short loops, many repeats: the machine's speed
drifts); medians and interquartile ranges over the repeats are printed.

Fork safety alone (``borrow``): the same, with requests that borrow a
connection and run no query (``/borrow``: Django's ``ensure_connection()``,
flask_pgpool's ``pgpool.connection``, the hand-written pool's ``with
pool.connection()``), against the adapters with the reset off: what the pid
checks, the loan records, the check and the adapters' code cost, without the
query's I/O, whose timing moves the CPU of a whole request by more than that.

Under ASGI (``asgi``): Django's ``ASGIHandler`` called from an event loop,
each request in a task of its own, as an ASGI server runs it (Django then
makes a new connection wrapper per request, and runs the sync view in a
thread of its own), one query per request: Django's native pool,
django_pgpool, and django_pgpool with the reset off. ``wrappers``: what
making one ``DatabaseWrapper`` of each costs (``timeit``).

Round trips: the same requests through a TCP proxy that delays each way
(``tests/harness/delayproxy.py``, 5 ms each way). A round trip the request
waits for makes it one proxy round trip slower, so ``(delayed - direct wall
time) / (what the proxy adds to one SELECT 1, measured before and after)``
counts the round trips the request path waits for; the proxy also counts
those the client starts, waited for or not.

``python micro.py [--quick]`` against ``BENCH_DSN``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import cputime
import psycopg
from contenders import (
    LABELS,
    close_flask_app,
    django_database,
    django_settings,
    flask_app,
)
from psycopg.conninfo import conninfo_to_dict
from spread import spread

from tests.harness.delayproxy import DelayProxy

FLASK = ["hand_pool", "flask_pgpool", "flask_pgpool_no_reset"]
DJANGO = ["django_native_pool", "django_pgpool", "django_pgpool_no_reset"]
GROUPS = {"flask": FLASK, "django": DJANGO}
#: Fork safety alone: requests that borrow a connection and run no query, the
#: reset off (its I/O is not fork safety's), as ``<name>#borrow``.
BORROW = {
    "flask": ["hand_pool", "flask_pgpool_no_reset"],
    "django": ["django_native_pool", "django_pgpool_no_reset"],
}
#: Under ASGI (Django's ``ASGIHandler``, a new connection wrapper per request),
#: as ``<name>#asgi``.
ASGI = ["django_native_pool", "django_pgpool", "django_pgpool_no_reset"]
#: Django wants a "default" database: the baseline's.
ALIAS = {"django_native_pool": "default"}

FULL = {
    "requests": 300,
    "best_of": 3,
    "repeats": 15,
    "rt_requests": 50,
    "rt_loops": 3,
    "delay": 0.005,
    "seed": 0,
}
QUICK = {
    "requests": 100,
    "best_of": 1,
    "repeats": 1,
    "rt_requests": 10,
    "rt_loops": 1,
    "delay": 0.005,
    "seed": 0,
}


def _environ(path: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "id=42",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
    }
    setup_testing_defaults(environ)
    return environ


class Contender:
    """One contender's WSGI callable, called in a thread of its own."""

    def __init__(
        self,
        name: str,
        app: Callable[..., Iterable[bytes]],
        path: str,
        expect: bytes = b'"item 42"',
    ) -> None:
        self.name = name
        self.app = app
        self.template = _environ(path)
        self.expect = expect
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.status = ""

    def _start_response(self, status: str, headers: Any, exc_info: Any = None) -> None:
        self.status = status

    def request(self) -> bytes:
        environ = dict(self.template)
        environ["wsgi.input"] = io.BytesIO()
        body = self.app(environ, self._start_response)
        try:
            return b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def run(self, function: Callable[[], Any]) -> Any:
        return self.thread.submit(function).result()

    def loop(self, n: int, postmaster: int | None) -> dict[str, float]:
        """Run *n* requests in the contender's thread; return the cost of one."""

        def timed() -> dict[str, float]:
            request = self.request
            server0 = cputime.tree_ns(postmaster) if postmaster else 0.0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                request()
            wall, used = time.perf_counter() - wall0, time.process_time() - cpu0
            server = (
                (cputime.tree_ns(postmaster) - server0) / 1e3 if postmaster else 0.0
            )
            return {
                "wall_us": wall / n * 1e6,
                "cpu_us": used / n * 1e6,
                "server_cpu_us": server / n,
            }

        return self.run(timed)  # type: ignore[no-any-return]

    def warm_up(self, n: int) -> None:
        body = self.run(lambda: [self.request() for _ in range(n)][-1])
        if not self.status.startswith("200") or self.expect not in body:
            raise RuntimeError(f"{self.name}: {self.status} {body[:300]!r}")


class AsgiContender(Contender):
    """One contender served by Django's ``ASGIHandler``, in an event loop of its own.

    As an ASGI server calls it: each request in a task of its own (so a
    context of its own: Django makes a new connection wrapper per request),
    the body read, the disconnect listened for, the response's close sending
    ``request_finished``.
    """

    def __init__(self, name: str, app: Any, path: str) -> None:
        super().__init__(name, app, path)
        self.event_loop = asyncio.new_event_loop()
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"id=42",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 80),
        }

    async def _request(self) -> bytes:
        sent: list[dict[str, Any]] = []
        received = False
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()  # the client never disconnects
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        # A task of its own, as servers run each request: a context of its own.
        await asyncio.ensure_future(self.app(dict(self.scope), receive, send))
        done.set()
        self.status = str(sent[0]["status"]) if sent else ""
        return b"".join(m.get("body", b"") for m in sent[1:])

    def request(self) -> bytes:
        return self.event_loop.run_until_complete(self._request())


def make_contenders(dsn: str, delayed_dsn: str) -> dict[str, Contender]:
    """Return each contender, and its twin through the proxy (name + "@delay")."""
    import django
    from django.conf import settings
    from django.core.asgi import get_asgi_application
    from django.core.wsgi import get_wsgi_application

    out: dict[str, Contender] = {}
    databases = {}
    for name in DJANGO:
        alias = ALIAS.get(name, name)
        databases[alias] = django_database(name, dsn)
        databases[f"{name}@delay"] = django_database(name, delayed_dsn)
    settings.configure(**django_settings(databases))
    django.setup()
    handler = get_wsgi_application()
    asgi_handler = get_asgi_application()
    for name in DJANGO:
        alias = ALIAS.get(name, name)
        out[name] = Contender(name, handler, f"/q/{alias}")
        out[f"{name}@delay"] = Contender(name, handler, f"/q/{name}@delay")
        if name in ASGI:
            out[f"{name}#asgi"] = AsgiContender(name, asgi_handler, f"/q/{alias}")
        if name in BORROW["django"]:
            out[f"{name}#borrow"] = Contender(
                name, handler, f"/borrow/{alias}", expect=b"true"
            )
    for name in FLASK:
        out[name] = Contender(name, flask_app(name, dsn), "/q")
        out[f"{name}@delay"] = Contender(name, flask_app(name, delayed_dsn), "/q")
        if name in BORROW["flask"]:
            out[f"{name}#borrow"] = Contender(
                name, out[name].app, "/borrow", expect=b"true"
            )
    return out


def close_contenders(contenders: dict[str, Contender]) -> None:
    from django.db import connections

    for contender in contenders.values():
        if hasattr(contender.app, "extensions"):
            close_flask_app(contender.app)  # type: ignore[arg-type]
        else:
            contender.run(connections.close_all)
        if isinstance(contender, AsgiContender):
            contender.run(contender.event_loop.close)
        contender.thread.shutdown()
    for conn in connections.all():
        close_pool = getattr(conn, "close_pool", None)
        if close_pool is not None:
            close_pool()


def cost(
    contenders: dict[str, Contender],
    cfg: dict[str, Any],
    postmaster: int | None,
    groups: dict[str, list[str]] = GROUPS,
    suffix: str = "",
) -> dict[str, Any]:
    """Each group's contenders, interleaved: best-of loops, differences per repeat.

    *suffix* picks the contenders' variant (``#borrow``); the results are
    keyed by the plain names.
    """
    out: dict[str, Any] = {}
    for group, names in groups.items():
        order = random.Random(f"{cfg['seed']} {group}{suffix}")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for _ in range(cfg["repeats"]):
            for name in order.sample(names, len(names)):
                loops = [
                    contenders[name + suffix].loop(cfg["requests"], postmaster)
                    for _ in range(cfg["best_of"])
                ]
                runs[name].append({k: min(lp[k] for lp in loops) for k in loops[0]})
        baseline = names[0]
        for name in names:
            entry: dict[str, Any] = {"group": group, "label": LABELS[name]}
            for key in ("wall_us", "cpu_us", "server_cpu_us"):
                entry[key] = spread([r[key] for r in runs[name]])
                entry[f"{key}_diff"] = spread(
                    [
                        r[key] - b[key]
                        for r, b in zip(runs[name], runs[baseline], strict=True)
                    ]
                )
                entry[key]["runs"] = [r[key] for r in runs[name]]
            entry["baseline"] = baseline
            out[name] = entry
    return out


def wrapper_cost(cfg: dict[str, Any]) -> dict[str, Any]:
    """Microseconds to make one connection wrapper of each Django contender.

    What Django pays per thread, and per request under ASGI: ``timeit``,
    ``--repeats`` runs of the two interleaved, each the best of 3 loops of
    1,000 (100 with ``--quick``); medians over the runs.
    """
    import timeit

    from django.db import connections

    number = 1000 if cfg["best_of"] > 1 else 100
    runs: dict[str, list[float]] = {name: [] for name in ASGI}
    for _ in range(cfg["repeats"]):
        for name in ASGI:
            alias = ALIAS.get(name, name)
            wrapper_class = type(connections[alias])
            entry = connections.settings[alias]
            best = min(
                timeit.repeat(
                    lambda: wrapper_class(entry, alias),  # noqa: B023
                    number=number,
                    repeat=3,
                )
            )
            runs[name].append(best / number * 1e6)
    baseline = ASGI[0]
    return {
        name: {
            "us": spread(times),
            "us_diff": spread(
                [t - b for t, b in zip(times, runs[baseline], strict=True)]
            ),
            "baseline": baseline,
        }
        for name, times in runs.items()
    }


def added_round_trip(dsn: str, delayed_dsn: str, n: int) -> float:
    """Return what the proxy adds to one round trip (``SELECT 1``), in seconds."""

    def per_query(conninfo: str) -> float:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(n):
                    conn.execute("SELECT 1")
                best = min(best, (time.perf_counter() - t0) / n)
            return best

    return per_query(delayed_dsn) - per_query(dsn)


def round_trips(
    contenders: dict[str, Contender],
    cfg: dict[str, Any],
    proxy: DelayProxy,
) -> dict[str, Any]:
    """Per request: wall time direct and delayed, round trips started (proxy)."""
    out = {}
    n, loops = cfg["rt_requests"], cfg["rt_loops"]
    for name in FLASK + DJANGO:
        direct, delayed = contenders[name], contenders[f"{name}@delay"]
        delayed.warm_up(10)
        direct_wall, delayed_wall = float("inf"), float("inf")
        flights0 = proxy.stats()["flights"]
        for _ in range(loops):
            direct_wall = min(direct_wall, direct.loop(n, None)["wall_us"])
            delayed_wall = min(delayed_wall, delayed.loop(n, None)["wall_us"])
        flights = proxy.stats()["flights"] - flights0
        out[name] = {
            "started": flights / (n * loops),
            "direct_wall_us": direct_wall,
            "delayed_wall_us": delayed_wall,
        }
    return out


def run(dsn: str, cfg: dict[str, Any], postmaster: int | None) -> dict[str, Any]:
    params = conninfo_to_dict(dsn)
    with DelayProxy(int(params["port"]), cfg["delay"], str(params["host"])) as proxy:
        delayed_dsn = psycopg.conninfo.make_conninfo(
            dsn, host=proxy.host, port=proxy.port
        )
        contenders = make_contenders(dsn, delayed_dsn)
        try:
            warm = 200 if cfg["best_of"] > 1 else 20
            for name in FLASK + DJANGO:
                contenders[name].warm_up(warm)
            for name in BORROW["flask"] + BORROW["django"]:
                contenders[f"{name}#borrow"].warm_up(warm)
            for name in ASGI:
                contenders[f"{name}#asgi"].warm_up(warm)
            result: dict[str, Any] = {
                "config": cfg,
                "contenders": cost(contenders, cfg, postmaster),
                "borrow": cost(contenders, cfg, postmaster, BORROW, "#borrow"),
                "asgi": cost(contenders, cfg, postmaster, {"django": ASGI}, "#asgi"),
                "wrappers": wrapper_cost(cfg),
            }
            # Measured before and after: what the machine runs meanwhile moves it.
            before = added_round_trip(dsn, delayed_dsn, cfg["rt_requests"])
            trips = round_trips(contenders, cfg, proxy)
            after = added_round_trip(dsn, delayed_dsn, cfg["rt_requests"])
            result["added_round_trip_ms"] = [before * 1e3, after * 1e3]
            for entry in trips.values():
                extra = entry["delayed_wall_us"] - entry["direct_wall_us"]
                entry["waited"] = extra / 1e6 / ((before + after) / 2)
            for name, entry in trips.items():
                result["contenders"][name]["round_trips"] = entry
        finally:
            close_contenders(contenders)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    for key, value in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value))
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    for key in cfg:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    postmaster = os.environ.get("BENCH_POSTMASTER")
    result = run(os.environ["BENCH_DSN"], cfg, int(postmaster) if postmaster else None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
