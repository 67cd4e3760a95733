"""``make bench`` / ``make bench-quick``: pgpool next to what users would pick instead.

Starts a throwaway PostgreSQL with TLS (the test harness), then runs the
groups ``--only`` names (all by default, comma-separated or repeated):

- ``flask``, ``django``: each contender of the group (``contenders.py``)
  served by its own gunicorn, 4 sync workers, preload, all started at once;
  then ``--rounds`` rounds, each loading every contender for ``--seconds``
  from a separate process (``wrk`` if it is on PATH, else ``loadgen.py``),
  the order shuffled each round. A contender's ratio is the median of its
  ratios to the baseline (the group's first) in the same round, for
  requests/s and for CPU per request (the gunicorn workers' and PostgreSQL
  backends' CPU, from /proc), with their interquartile range: the machine's
  speed drifts over minutes, two contenders measured seconds apart share it.
- ``django-asgi`` (``asgi``): Django's contenders under gunicorn's
  ``uvicorn_worker.UvicornWorker`` (an ASGI server that forks its workers
  from a preloaded master; one pool per worker), one query per request.
- ``flask-page``, ``django-page`` (``page``): ``GET /page``, four queries and
  a template per request (``contenders.py``), both adapters with the reset by
  default and ``"always"``.
- ``flask-delay``, ``django-delay`` (``delay``: both): the same, PostgreSQL
  reached through a TCP proxy that adds ``--delay-ms`` each way
  (``tests/harness/delayproxy.py``; loopback hides what round trips cost);
  the proxy also counts the round trips each request starts.
- ``micro``: in one process, without load generator or server, each
  adapter's WSGI app called directly, against its baseline: microseconds per
  request and round trips per request (``micro.py``).
- ``memory``: the Django example under uWSGI, preload + django_pgpool and
  then ``lazy-apps = true``: memory of master + 4 workers, and how long a
  killed worker takes until it serves again.

Prints a table and the targets of issues 16 and 23 (``targets()``, here), writes
``benchmarks/results.json`` and ``results.png`` (the ratios, the chart of the
Performance page). ``--quick`` (``make bench-quick``, under a minute) runs
every piece once, briefly, and writes both to the temporary directory: a
smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from contenders import DJANGO, DJANGO_ASGI, DJANGO_PAGE, FLASK, FLASK_PAGE, LABELS
from cputime import children, tree_ns
from report import chart, table, targets_table
from spread import spread

from tests.harness.delayproxy import DelayProxy
from tests.harness.postgres import PgServer, start_cluster, stop_cluster
from tests.harness.servers import RunningServer, request, run_load, start_server

DJANGO_SITE = REPO / "example_projects" / "django_site"
PATH = "/q?id=42"
PAGE_PATH = "/page?id=42"
ROWS = 1000
CONCURRENCY = 16

#: The HTTP groups: (framework, contenders, WSGI app, through the delay proxy).
HTTP_GROUPS: dict[str, tuple[str, list[str], str, bool]] = {
    "flask": ("flask", FLASK, "flask_app:app", False),
    "django": ("django", DJANGO, "django_app:application", False),
    "flask-delay": ("flask", FLASK, "flask_app:app", True),
    "django-delay": ("django", DJANGO, "django_app:application", True),
    "django-asgi": ("django", DJANGO_ASGI, "django_app:asgi_application", False),
    "flask-page": ("flask", FLASK_PAGE, "flask_app:app", False),
    "django-page": ("django", DJANGO_PAGE, "django_app:application", False),
}
#: The path a group loads, if not PATH.
GROUP_PATHS = {"flask-page": PAGE_PATH, "django-page": PAGE_PATH}
#: gunicorn's worker class for a group, if not its sync worker.
WORKER_CLASSES = {"django-asgi": "uvicorn_worker.UvicornWorker"}
ALIASES = {
    "delay": ["flask-delay", "django-delay"],
    "loopback": ["flask", "django"],
    "asgi": ["django-asgi"],
    "page": ["flask-page", "django-page"],
}
SELECTORS = [*HTTP_GROUPS, "micro", "memory"]

#: settle: seconds of rest before each contender's turn in a round.
FULL = {
    "rounds": 12,
    "seconds": 2.0,
    "warmup": 2.0,
    "settle": 0.25,
    "delay_ms": 0.5,
    "respawns": 3,
}
#: Every piece once, briefly; through the proxy only each group's first two
#: contenders (the others' apps are those of the loopback groups).
QUICK = {
    "rounds": 1,
    "seconds": 1.0,
    "warmup": 0.0,
    "settle": 0.0,
    "delay_ms": 0.5,
    "respawns": 1,
}
QUICK_DELAYED_CONTENDERS = 2


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# -- load --------------------------------------------------------------------


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group())  # type: ignore[union-attr]
    unit = text.lstrip("0123456789.")
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(port: int, seconds: float, path: str = PATH) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONCURRENCY}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    socket_errors = re.search(
        r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        # gunicorn's sync workers close every connection: wrk counts the
        # close after a complete answer as a read error; those are not lost.
        errors += sum(int(socket_errors.group(i)) for i in (1, 3, 4))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return {
        "requests": requests,
        "errors": errors,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
    }


def run_python_load(port: int, seconds: float, path: str = PATH) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "loadgen.py"),
            str(port),
            path,
            str(CONCURRENCY),
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def use_wrk() -> bool:
    """wrk if it is on PATH, unless BENCH_LOADGEN=python asks for loadgen.py."""
    return bool(shutil.which("wrk")) and os.environ.get("BENCH_LOADGEN") != "python"


def load(port: int, seconds: float, path: str = PATH) -> dict[str, float]:
    if use_wrk():
        return run_wrk(port, seconds, path)
    return run_python_load(port, seconds, path)


# -- the HTTP groups ---------------------------------------------------------


def prepare_database(pg: PgServer) -> None:
    pg.execute("DROP TABLE IF EXISTS bench_items")
    pg.execute("CREATE TABLE bench_items (id integer PRIMARY KEY, body text)")
    pg.execute(
        "INSERT INTO bench_items SELECT i, 'item ' || i FROM generate_series(1, %s) i",
        (ROWS,),
    )
    pg.execute("ANALYZE bench_items")


def postmaster_pid(pg: PgServer) -> int:
    assert pg.datadir is not None
    return int((pg.datadir / "postmaster.pid").read_text().split()[0])


def server_cpu_ns(pg: PgServer, server: RunningServer) -> float:
    """CPU used so far by the server's workers and PostgreSQL's processes, ns.

    Less noisy than requests/s on a shared machine: what others run there
    slows every contender down, but barely changes what each request costs.
    The other contenders' servers are idle meanwhile.
    """
    return tree_ns(server.proc.pid) + tree_ns(postmaster_pid(pg), reaped=True)


def measure_slot(
    pg: PgServer,
    server: RunningServer,
    seconds: float,
    proxy: DelayProxy | None,
    path: str = PATH,
) -> dict[str, float]:
    flights0 = proxy.stats()["flights"] if proxy else 0
    cpu0 = server_cpu_ns(pg, server)
    result = load(server.port, seconds, path)
    used = server_cpu_ns(pg, server) - cpu0
    result["cpu_us_per_request"] = used / 1e3 / max(result["requests"], 1)
    if proxy is not None:
        flights = proxy.stats()["flights"] - flights0
        result["round_trips_per_request"] = flights / max(result["requests"], 1)
    return result


def http_group(
    pg: PgServer, name: str, cfg: dict[str, Any], proxy: DelayProxy | None
) -> dict[str, Any]:
    """Serve every contender of group *name* at once; load them in shuffled rounds."""
    framework, contenders, app, _ = HTTP_GROUPS[name]
    if cfg["quick"] and proxy:
        contenders = contenders[:QUICK_DELAYED_CONTENDERS]
    dsn = pg.dsn(host=proxy.host, port=proxy.port) if proxy else pg.dsn()
    path = GROUP_PATHS.get(name, PATH)
    worker_class = WORKER_CLASSES.get(name)
    extra = ["--worker-class", worker_class] if worker_class else []

    def start(contender: str) -> RunningServer:
        env = {"BENCH_CONTENDER": contender, "BENCH_DSN": dsn}
        return start_server(
            "gunicorn", app, cwd=HERE, env=env, workers=4, extra_args=extra
        )

    with ThreadPoolExecutor(len(contenders)) as pool, ExitStack() as stack:
        futures = {c: pool.submit(start, c) for c in contenders}
        started = [f.result() for f in futures.values() if f.exception() is None]
        # All at once: each takes a second or two to stop gracefully.
        stack.callback(lambda: list(pool.map(RunningServer.stop, started)))
        servers = {c: f.result() for c, f in futures.items()}
        say(f"{name}: servers up")
        for contender, server in servers.items():
            if cfg["warmup"]:
                load(server.port, cfg["warmup"], path)
            else:
                run_load(server.port, [path] * 8, concurrency=4)  # most workers
            if not server.get(path).ok:
                raise RuntimeError(
                    f"{name} {contender}: {server.get(path).body[:300]!r}"
                )
        rounds: list[dict[str, dict[str, float]]] = []
        order = random.Random(f"{cfg['seed']} {name}")
        for number in range(cfg["rounds"]):
            measured = {}
            # Shuffled, not rotated: rotation keeps who follows whom, and what
            # one leaves behind (connect per request's exiting backends) would
            # always fall on the same next contender. Then a pause for it.
            for contender in order.sample(contenders, len(contenders)):
                time.sleep(cfg["settle"])
                measured[contender] = measure_slot(
                    pg, servers[contender], cfg["seconds"], proxy, path
                )
            rounds.append(measured)
            say(
                f"{name} round {number + 1}/{cfg['rounds']}: "
                + ", ".join(
                    f"{c} {measured[c]['rps']:.0f}/s"
                    f" {measured[c]['cpu_us_per_request']:.0f}us"
                    for c in contenders
                )
            )
            for contender, result in measured.items():
                if result["errors"] and not servers[contender].get(path).ok:
                    say(f"{contender}: failing: {servers[contender].get(path).body!r}")
    return summarize_group(name, framework, contenders, rounds, proxy)


def summarize_group(
    name: str,
    framework: str,
    contenders: list[str],
    rounds: list[dict[str, dict[str, float]]],
    proxy: DelayProxy | None,
) -> dict[str, Any]:
    baseline = contenders[0]
    entries = []
    for contender in contenders:
        runs = [r[contender] for r in rounds]
        rps_ratios = [r[contender]["rps"] / r[baseline]["rps"] for r in rounds]
        # Requests per CPU second, relative to the baseline's: > 1 is cheaper.
        cpu_ratios = [
            r[baseline]["cpu_us_per_request"] / r[contender]["cpu_us_per_request"]
            for r in rounds
        ]
        entry: dict[str, Any] = {
            "name": contender,
            "label": LABELS[contender],
            "rps": spread([r["rps"] for r in runs]),
            "cpu_us_per_request": spread([r["cpu_us_per_request"] for r in runs]),
            "p50_ms": spread([r["p50_ms"] for r in runs]),
            "p99_ms": spread([r["p99_ms"] for r in runs]),
            "rps_ratio": spread(rps_ratios),
            "cpu_ratio": spread(cpu_ratios),
            "errors": sum(int(r["errors"]) for r in runs),
            "requests": sum(int(r["requests"]) for r in runs),
            "runs": runs,
        }
        if proxy is not None:
            entry["round_trips_per_request"] = statistics.median(
                r["round_trips_per_request"] for r in runs
            )
        entries.append(entry)
    return {
        "name": name,
        "framework": framework,
        "delay_ms": proxy.delay * 1e3 if proxy else 0.0,
        "baseline": baseline,
        "rounds": len(rounds),
        "entries": entries,
    }


def http_benchmarks(
    pg: PgServer, groups: list[str], cfg: dict[str, Any]
) -> dict[str, Any]:
    out = {}
    for name in groups:
        delayed = HTTP_GROUPS[name][3]
        say(f"{name}: starting the gunicorn servers ...")
        t0 = time.monotonic()
        if delayed:
            with DelayProxy(pg.port, cfg["delay_ms"] / 1e3, pg.host) as proxy:
                out[name] = http_group(pg, name, cfg, proxy)
        else:
            out[name] = http_group(pg, name, cfg, None)
        out[name]["seconds"] = time.monotonic() - t0
    return out


# -- memory and respawn (uWSGI, the Django example) --------------------------


#: The uWSGI modes of the memory and respawn runs, and their lazy-apps setting.
MEMORY_MODES = {"uwsgi_preload_django_pgpool": False, "uwsgi_lazy_apps": True}


def memory_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key.lower()] = int(rest.split()[0])
    return values


def migrate_example(pg: PgServer) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": pg.dsn(),
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "PYTHONPATH": str(REPO),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=DJANGO_SITE,
        env=env,
        check=True,
        timeout=120,
    )
    return {"DATABASE_URL": pg.dsn(), "DJANGO_SETTINGS_MODULE": "mysite.settings"}


def respawn_time(server: RunningServer) -> float:
    """Kill a worker; return the seconds until its replacement answers.

    The other workers are stopped meanwhile (SIGSTOP), so that the first answer
    can only come from the new worker.
    """
    workers = children(server.proc.pid)
    victim, others = workers[0], workers[1:]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while True:
            response = request("127.0.0.1", server.port, "/notes", timeout=60)
            if response.ok:
                body = response.json()
                if body.get("pid") not in others:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > 60:
                raise RuntimeError("the killed worker was not replaced in 60 s")
            time.sleep(0.001)
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def memory_and_respawn(pg: PgServer, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    env = migrate_example(pg)
    out = []
    for mode, lazy in MEMORY_MODES.items():
        server = start_server(
            "uwsgi",
            "",
            cwd=DJANGO_SITE,
            env=env,
            config=DJANGO_SITE / "uwsgi.ini",
            lazy_apps=lazy,
        )
        try:
            # Every worker serves for a while before its memory is read.
            seconds = max(cfg["warmup"], 1)
            subprocess.run(
                [
                    sys.executable,
                    str(HERE / "loadgen.py"),
                    str(server.port),
                    "/notes",
                    "8",
                    str(seconds),
                ],
                capture_output=True,
                check=True,
                timeout=seconds + 60,
            )
            master = server.proc.pid
            workers = children(master)
            mem = {pid: memory_kb(pid) for pid in [master, *workers]}
            respawns = [respawn_time(server) for _ in range(cfg["respawns"])]
            entry = {
                "name": mode,
                "workers": len(workers),
                "workers_rss_mb": sum(mem[p]["rss"] for p in workers) / 1024,
                "total_pss_mb": sum(m["pss"] for m in mem.values()) / 1024,
                "respawn_s": {
                    "min": min(respawns),
                    "median": statistics.median(respawns),
                    "runs": respawns,
                },
            }
            say(
                f"{mode}: workers' RSS {entry['workers_rss_mb']:.1f} MB, master +"
                f" workers PSS {entry['total_pss_mb']:.1f} MB, respawn"
                f" {entry['respawn_s']['median'] * 1000:.0f} ms"
            )
            out.append(entry)
        finally:
            server.stop()
    return out


# -- in one process ----------------------------------------------------------


def micro_benchmark(pg: PgServer, cfg: dict[str, Any]) -> dict[str, Any]:
    say("micro: each adapter's WSGI app in one process ...")
    t0 = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "micro.py"),
            f"--seed={cfg['seed']}",
            *(["--quick"] if cfg["quick"] else []),
        ],
        env={
            **os.environ,
            "BENCH_DSN": pg.dsn(),
            "BENCH_POSTMASTER": str(postmaster_pid(pg)),
        },
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    result["seconds"] = time.monotonic() - t0
    return result


# -- targets -----------------------------------------------------------------

#: (group, contender, goal): its median ratio to the group's baseline, by req/s
#: and by CPU per request.
RATIO_TARGETS = [
    ("django", "django_pgpool", 0.97),
    ("django-delay", "django_pgpool", 1.0),
    ("django", "django_pgpool_no_reset", 0.99),
    ("django-delay", "django_pgpool_no_reset", 0.99),
    ("django-asgi", "django_pgpool", 0.97),
    ("flask", "flask_pgpool", 0.97),
    ("flask-delay", "flask_pgpool", 1.0),
    ("flask", "flask_pgpool_no_reset", 0.99),
    ("flask-delay", "flask_pgpool_no_reset", 0.99),
]
#: In one process: CPU microseconds per request more than the baseline.
MICRO_TARGETS = [("django_pgpool", 10.0), ("flask_pgpool", 10.0)]
#: The same under Django's ASGIHandler (a new connection wrapper per request).
ASGI_TARGETS = [("django_pgpool", 20.0)]
#: Microseconds to make a connection wrapper more than Django's own.
WRAPPER_TARGETS = [("django_pgpool", 20.0)]
#: Fork safety alone (a request that borrows and runs no query, reset off).
BORROW_TARGETS = [("django_pgpool_no_reset", 10.0), ("flask_pgpool_no_reset", 10.0)]


def _judge(
    target: str, value: dict[str, Any], goal: float, *, at_least: bool, digits: int
) -> dict[str, Any]:
    """Met or missed by the median; sure only if its 95 % interval agrees."""
    low, high = value["ci95"]
    met = value["median"] >= goal if at_least else value["median"] <= goal
    sure = (low >= goal or high < goal) if at_least else (high <= goal or low > goal)
    return {
        "target": target,
        "value": round(value["median"], digits),
        "ci95": [round(low, digits), round(high, digits)],
        "goal": goal,
        "met": met,
        "sure": sure,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of issues 16 and 23 (and preload's memory) this run measured."""
    out = []
    for group, name, goal in RATIO_TARGETS:
        if group not in results["http"]:
            continue
        found = results["http"][group]
        entry = next((e for e in found["entries"] if e["name"] == name), None)
        if entry is None:
            continue  # not run (--quick runs two contenders through the proxy)
        for key, what in (("rps_ratio", "req/s"), ("cpu_ratio", "CPU/request")):
            target = f"{group}: {name} >= {goal}x {found['baseline']}, {what}"
            out.append(_judge(target, entry[key], goal, at_least=True, digits=3))
    micro = results.get("micro") or {}
    for key, goals, what in (
        ("contenders", MICRO_TARGETS, "in one process"),
        ("borrow", BORROW_TARGETS, "fork safety (no query)"),
        ("asgi", ASGI_TARGETS, "in one process, ASGI"),
    ):
        for name, goal in goals if micro.get(key) else []:
            entry = micro[key][name]
            target = f"{what}: {name} <= {entry['baseline']} + {goal:g} us CPU"
            out.append(
                _judge(target, entry["cpu_us_diff"], goal, at_least=False, digits=1)
            )
    for name, goal in WRAPPER_TARGETS if micro.get("wrappers") else []:
        entry = micro["wrappers"][name]
        target = f"a connection wrapper: {name} <= {entry['baseline']} + {goal:g} us"
        out.append(_judge(target, entry["us_diff"], goal, at_least=False, digits=1))
    memory = {e["name"]: e for e in results.get("memory") or []}
    if memory:
        # PSS splits shared pages among sharers; RSS counts them in every
        # worker, so it cannot show what preload shares.
        ratio = (
            memory["uwsgi_preload_django_pgpool"]["total_pss_mb"]
            / memory["uwsgi_lazy_apps"]["total_pss_mb"]
        )
        out.append(
            {
                "target": "preload memory (PSS, master + workers) <= 0.7x lazy-apps",
                "value": round(ratio, 3),
                "goal": 0.7,
                "met": ratio <= 0.7,
            }
        )
    return out


def selected(only: list[str]) -> list[str]:
    """Return the groups that *only* names, in SELECTORS order (all if none)."""
    names: set[str] = set()
    for item in only:
        for word in filter(None, (w.strip() for w in item.split(","))):
            if word in ALIASES:
                names.update(ALIASES[word])
            elif word in SELECTORS:
                names.add(word)
            else:
                known = ", ".join([*SELECTORS, *ALIASES])
                raise SystemExit(f"--only: unknown group {word!r} (known: {known})")
    return [s for s in SELECTORS if s in names or not names]


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        return ""
    return head


def make_parser() -> argparse.ArgumentParser:
    """Return run.py's command line (``make bench BENCH_ARGS="..."`` passes it)."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 60 s)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GROUPS",
        help=f"comma-separated, of {', '.join([*SELECTORS, *ALIASES])} (default: all)",
    )
    parser.add_argument("--rounds", type=int, help=f"default {FULL['rounds']}")
    parser.add_argument(
        "--seconds", type=float, help=f"per contender and round ({FULL['seconds']:g})"
    )
    parser.add_argument(
        "--warmup", type=float, help=f"seconds per server ({FULL['warmup']:g})"
    )
    parser.add_argument(
        "--delay-ms", type=float, help=f"each way, delay groups ({FULL['delay_ms']:g})"
    )
    parser.add_argument(
        "--seed", type=int, help="of the rounds' order (default: the time)"
    )
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--chart", type=Path, default=None)
    return parser


def main() -> int:
    parser = make_parser()
    args = parser.parse_args()
    groups = selected(args.only)
    cfg: dict[str, Any] = {**(QUICK if args.quick else FULL), "quick": args.quick}
    cfg["seed"] = int(time.time()) if args.seed is None else args.seed
    for key in ("rounds", "seconds", "warmup", "delay_ms"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if cfg["rounds"] < 1 or cfg["seconds"] < 1 or cfg["delay_ms"] < 0:
        parser.error("--rounds and --seconds must be >= 1, --delay-ms >= 0")
    # A smoke test leaves the last full run's results where they are.
    tmp = Path(tempfile.gettempdir())
    results_path = args.results or (
        tmp / "pgpool-bench-quick.json" if args.quick else HERE / "results.json"
    )
    chart_path = args.chart or (
        tmp / "pgpool-bench-quick.png" if args.quick else HERE / "results.png"
    )
    started = time.monotonic()
    say(f"groups: {', '.join(groups)}; starting a throwaway PostgreSQL with TLS ...")
    pg = start_cluster()
    try:
        prepare_database(pg)
        say(f"PostgreSQL ready after {time.monotonic() - started:.1f} s")
        results: dict[str, Any] = {
            "quick": args.quick,
            "groups": groups,
            "config": cfg,
            "concurrency": CONCURRENCY,
            "load_generator": "wrk" if use_wrk() else "loadgen.py",
            "revision": git_revision(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
        }
        http = [g for g in groups if g in HTTP_GROUPS]
        results["http"] = http_benchmarks(pg, http, cfg)
        results["micro"] = micro_benchmark(pg, cfg) if "micro" in groups else None
        results["memory"] = memory_and_respawn(pg, cfg) if "memory" in groups else None
        results["machine"]["load_after"] = os.getloadavg()
    finally:
        say("stopping PostgreSQL ...")
        stop_cluster(pg)
    results["targets"] = targets(results)
    results["seconds"] = time.monotonic() - started
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    if results["http"]:
        chart(results, chart_path)
    print()
    print(table(results))
    print()
    print(targets_table(results))
    print()
    say(f"results in {results_path}" + f", chart in {chart_path}" * bool(http))
    say(
        f"took {results['seconds']:.0f} s; load average before"
        f" {results['machine']['load_before'][0]:.1f}, after"
        f" {results['machine']['load_after'][0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
