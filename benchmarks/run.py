"""``make bench`` / ``make bench-quick``: pgpool next to what users would pick instead.

Starts a throwaway PostgreSQL with TLS (the test harness), then:

- serves each Flask and Django contender (``flask_app.py``, ``django_app.py``)
  under gunicorn, 4 sync workers, preload, the same endpoint doing one small
  indexed query, loaded from a separate process (``wrk`` if it is on PATH,
  else ``loadgen.py``); repeated, the contenders interleaved;
- serves the Django example (``example_projects/django_site``) under uWSGI,
  preload + django_pgpool and then ``lazy-apps = true``, and measures the
  memory of master + 4 workers and how long a killed worker takes until it
  serves again;
- runs the micro-benchmark of flask_pgpool's per-request cost (``micro.py``).

Prints a table, writes ``benchmarks/results.json`` and ``results.png`` (a
chart of requests/s, p99 latency and CPU per request). ``--quick`` (``make
bench-quick``, under a minute on an idle machine) runs everything once,
briefly, and writes both to the temporary directory: a smoke test, not a
measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.postgres import PgServer, start_cluster, stop_cluster
from tests.harness.servers import RunningServer, request, run_load, start_server

HERE = Path(__file__).resolve().parent
DJANGO_SITE = REPO / "example_projects" / "django_site"
PATH = "/q?id=42"
ROWS = 1000

#: (group, contender, WSGI app); the first of each group is its baseline.
CONTENDERS = [
    ("flask", "hand_pool", "flask_app:app"),
    ("flask", "flask_pgpool", "flask_app:app"),
    ("flask", "flask_pgpool_no_reset", "flask_app:app"),
    ("flask", "connect_per_request", "flask_app:app"),
    ("flask", "flask_sqlalchemy", "flask_app:app"),
    ("django", "django_native_pool", "django_app:application"),
    ("django", "django_pgpool", "django_app:application"),
    ("django", "django_pgpool_no_reset", "django_app:application"),
    ("django", "conn_max_age_60", "django_app:application"),
    ("django", "django_db_connection_pool", "django_app:application"),
]
LABELS = {
    "hand_pool": "hand-written pool per worker",
    "flask_pgpool": "flask_pgpool",
    "flask_pgpool_no_reset": "flask_pgpool, PGPOOL_RESET None",
    "connect_per_request": "connect per request (TLS)",
    "flask_sqlalchemy": "Flask-SQLAlchemy (QueuePool)",
    "django_native_pool": "Django native pool",
    "django_pgpool": "django_pgpool",
    "django_pgpool_no_reset": 'django_pgpool, "reset" None',
    "conn_max_age_60": "CONN_MAX_AGE=60",
    "django_db_connection_pool": "django-db-connection-pool",
}

FULL = {"seconds": 8, "warmup": 2, "repeats": 3, "respawns": 3, "micro": 5000}
QUICK = {"seconds": 1, "warmup": 0, "repeats": 1, "respawns": 1, "micro": 300}
CONCURRENCY = 16


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# -- load --------------------------------------------------------------------


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group())  # type: ignore[union-attr]
    unit = text.lstrip("0123456789.")
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(port: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONCURRENCY}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            f"http://127.0.0.1:{port}{PATH}",
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


def run_python_load(port: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "loadgen.py"),
            str(port),
            PATH,
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


def load(port: int, seconds: float) -> dict[str, float]:
    if use_wrk():
        return run_wrk(port, seconds)
    return run_python_load(port, seconds)


# -- the HTTP contenders -----------------------------------------------------


def prepare_database(pg: PgServer) -> None:
    pg.execute("DROP TABLE IF EXISTS bench_items")
    pg.execute("CREATE TABLE bench_items (id integer PRIMARY KEY, body text)")
    pg.execute(
        "INSERT INTO bench_items SELECT i, 'item ' || i FROM generate_series(1, %s) i",
        (ROWS,),
    )
    pg.execute("ANALYZE bench_items")


def _stat_fields(pid: int) -> list[str]:
    # The command may hold spaces and parentheses: the fields follow the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(master: int, *, reaped: bool = False) -> float:
    """Return the CPU time of *master*'s live children (and of its reaped ones)."""
    ticks = 0
    for pid in children(master):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        fields = _stat_fields(master)
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(pg: PgServer, server: RunningServer) -> float:
    """CPU seconds used so far by the server's workers and PostgreSQL's backends.

    Less noisy than requests/s on a shared machine: what others run there
    slows every contender down, but barely changes what each request costs.
    """
    assert pg.datadir is not None
    postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    return cpu_seconds(server.proc.pid) + cpu_seconds(postmaster, reaped=True)


def measure_contender(
    pg: PgServer, contender: str, app: str, cfg: dict[str, Any]
) -> dict[str, float]:
    env = {"BENCH_CONTENDER": contender, "BENCH_DSN": pg.dsn()}
    server = start_server("gunicorn", app, cwd=HERE, env=env, workers=4)
    try:
        if cfg["warmup"]:
            load(server.port, cfg["warmup"])
        else:
            run_load(server.port, [PATH] * 32, concurrency=8)  # every worker once
        cpu0 = server_cpu(pg, server)
        result = load(server.port, cfg["seconds"])
        used = server_cpu(pg, server) - cpu0
        result["cpu_us_per_request"] = used / max(result["requests"], 1) * 1e6
        if result["errors"] and not server.get(PATH).ok:
            say(f"{contender}: failing: {server.get(PATH).body[:300]!r}")
        return result
    finally:
        server.stop()


def summarize(runs: list[dict[str, float]]) -> dict[str, Any]:
    def spread(key: str, best: str) -> dict[str, float]:
        values = [r[key] for r in runs]
        return {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
            "best": (max if best == "max" else min)(values),
        }

    return {
        "rps": spread("rps", "max"),
        "p50_ms": spread("p50_ms", "min"),
        "p99_ms": spread("p99_ms", "min"),
        "cpu_us_per_request": spread("cpu_us_per_request", "min"),
        "errors": sum(int(r["errors"]) for r in runs),
        "requests": sum(int(r["requests"]) for r in runs),
        "runs": runs,
    }


def http_benchmarks(pg: PgServer, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, float]]] = {c: [] for _, c, _ in CONTENDERS}
    for repeat in range(cfg["repeats"]):
        for _group, contender, app in CONTENDERS:
            result = measure_contender(pg, contender, app, cfg)
            say(
                f"run {repeat + 1}/{cfg['repeats']} {contender}:"
                f" {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms,"
                f" p99 {result['p99_ms']:.2f} ms,"
                f" {result['cpu_us_per_request']:.0f} us CPU/request,"
                f" {int(result['errors'])} errors"
            )
            runs[contender].append(result)
    out = []
    baselines: dict[str, float] = {}
    cpu_baselines: dict[str, float] = {}
    for group, contender, _app in CONTENDERS:
        entry = {
            "group": group,
            "name": contender,
            "label": LABELS[contender],
            **summarize(runs[contender]),
        }
        median = entry["rps"]["median"]
        cpu = entry["cpu_us_per_request"]["median"]
        baselines.setdefault(group, median)
        cpu_baselines.setdefault(group, cpu)
        entry["baseline"] = next(c for g, c, _ in CONTENDERS if g == group)
        entry["ratio_to_baseline"] = median / baselines[group]
        # Requests per CPU second, relative to the baseline's: > 1 is cheaper.
        entry["cpu_ratio_to_baseline"] = cpu_baselines[group] / cpu
        out.append(entry)
    return out


# -- memory and respawn (uWSGI, the Django example) --------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may hold spaces and parentheses: ppid follows the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


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
    modes = (("uwsgi_preload_django_pgpool", False), ("uwsgi_lazy_apps", True))
    for mode, lazy in modes:
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
            load_port = server.port
            seconds = max(cfg["warmup"], 1)
            subprocess.run(
                [
                    sys.executable,
                    str(HERE / "loadgen.py"),
                    str(load_port),
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


# -- the micro-benchmark -----------------------------------------------------


def micro_benchmark(pg: PgServer, cfg: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "micro.py"), str(cfg["micro"])],
        env={**os.environ, "BENCH_DSN": pg.dsn()},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


# -- report ------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    by_name = {e["name"]: e for e in results["http"]}

    def rps(name: str) -> float:
        return float(by_name[name]["rps"]["median"])

    def cpu(name: str) -> float:
        return float(by_name[name]["cpu_us_per_request"]["median"])

    mem = {e["name"]: e for e in results["memory"]}
    checks = [
        ("flask_pgpool", "hand_pool", 0.97),
        ("flask_pgpool_no_reset", "hand_pool", 0.97),
        ("django_pgpool", "django_native_pool", 1.0),
        ("django_pgpool_no_reset", "django_native_pool", 1.0),
        ("django_pgpool", "django_db_connection_pool", 1.2),
        ("flask_pgpool", "connect_per_request", 5.0),
        ("django_pgpool", "connect_per_request", 5.0),
    ]
    out = []
    for name, other, goal in checks:
        ratio = rps(name) / rps(other)
        # The same ratio from CPU per request, which others' load barely moves.
        by_cpu = cpu(other) / cpu(name)
        out.append(
            {
                "target": f"{name} >= {goal}x {other}",
                "value": round(ratio, 3),
                "goal": goal,
                "met": ratio >= goal,
                "value_by_cpu": round(by_cpu, 3),
                "met_by_cpu": by_cpu >= goal,
            }
        )
    for key, label in (
        ("flask_overhead_us", "flask_pgpool"),
        ("flask_no_reset_overhead_us", "flask_pgpool_no_reset"),
    ):
        overhead = results["micro"][key]["wall"]
        out.append(
            {
                "target": f"{label} overhead <= 50 us per request",
                "value": round(overhead, 1),
                "goal": 50,
                "met": overhead <= 50,
            }
        )
    # RSS counts every page a worker maps, shared with the master or not: it
    # cannot show what preload shares. PSS splits shared pages among sharers.
    for key, label in (
        ("total_pss_mb", "PSS, master + workers"),
        ("workers_rss_mb", "RSS, workers"),
    ):
        ratio = mem["uwsgi_preload_django_pgpool"][key] / mem["uwsgi_lazy_apps"][key]
        out.append(
            {
                "target": f"preload memory ({label}) <= 0.7x lazy-apps",
                "value": round(ratio, 3),
                "goal": 0.7,
                "met": ratio <= 0.7,
            }
        )
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'contender':<36} {'req/s med (min)':>15} {'ratio':>6} {'p50 ms':>7}"
        f" {'p99 ms':>7} {'errors':>6} {'CPU us/req':>10} {'ratio':>6}",
    ]
    group = None
    for e in results["http"]:
        if e["group"] != group:
            group = e["group"]
            lines.append(f"-- {group} (baseline: {LABELS[e['baseline']]})")
        rps = f"{e['rps']['median']:.0f} ({e['rps']['min']:.0f})"
        lines.append(
            f"{e['label']:<36} {rps:>15} {e['ratio_to_baseline']:>5.2f}x"
            f" {e['p50_ms']['median']:>7.2f} {e['p99_ms']['median']:>7.2f}"
            f" {e['errors']:>6} {e['cpu_us_per_request']['median']:>10.0f}"
            f" {e['cpu_ratio_to_baseline']:>5.2f}x"
        )
    lines.append("-- uWSGI, Django example, master + 4 workers")
    lines.append(
        f"{'mode':<42} {'workers RSS MB':>15} {'PSS MB':>7}"
        f" {'respawn ms med (min)':>21}"
    )
    for e in results["memory"]:
        respawn = (
            f"{e['respawn_s']['median'] * 1000:.0f}"
            f" ({e['respawn_s']['min'] * 1000:.0f})"
        )
        lines.append(
            f"{e['name']:<42} {e['workers_rss_mb']:>15.1f}"
            f" {e['total_pss_mb']:>7.1f} {respawn:>21}"
        )
    m = results["micro"]
    lines.append("-- per request, no query (us, wall median / CPU median)")
    for name, label in (
        ("raw", "psycopg_pool pool.connection()"),
        ("forksafe", "ForkSafePool.connection() (check + reset)"),
        ("forksafe_no_reset", "ForkSafePool.connection(), reset=None"),
        ("flask", "flask_pgpool app context (less empty ctx)"),
        ("flask_no_reset", "the same, PGPOOL_RESET None"),
    ):
        wall = m[name]["wall_us_median"]
        cpu = m[name]["cpu_us_median"]
        if name.startswith("flask"):
            wall -= m["app_context"]["wall_us_median"]
            cpu -= m["app_context"]["cpu_us_median"]
        lines.append(f"{label:<42} {wall:>9.1f} / {cpu:.1f}")
    lines.append("-- targets")
    lines.append(f"{'':<54} {'by req/s':<13} by CPU/request")
    for t in results["targets"]:
        mark = "met" if t["met"] else "MISSED"
        line = f"{t['target']:<54} {t['value']:>6} {mark:<6}"
        if "value_by_cpu" in t:
            by_cpu = "met" if t["met_by_cpu"] else "MISSED"
            line += f" {t['value_by_cpu']:>12} {by_cpu:<6}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = results["http"]
    labels = [e["label"] for e in entries]
    colors = ["#1f77b4" if e["group"] == "flask" else "#2ca02c" for e in entries]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 5), sharey=True)
    ypos = range(len(entries))
    ax1.barh(
        ypos,
        [e["rps"]["median"] for e in entries],
        xerr=[
            [e["rps"]["median"] - e["rps"]["min"] for e in entries],
            [e["rps"]["max"] - e["rps"]["median"] for e in entries],
        ],
        color=colors,
    )
    ax1.set_yticks(list(ypos), labels)
    ax1.invert_yaxis()
    ax1.set_xlabel("requests/s (median, min-max)")
    ax2.barh(ypos, [e["p99_ms"]["median"] for e in entries], color=colors)
    ax2.set_xlabel("p99 latency, ms (median)")
    ax3.barh(ypos, [e["cpu_us_per_request"]["median"] for e in entries], color=colors)
    ax3.set_xlabel("gunicorn + PostgreSQL CPU per request, us")
    fig.suptitle(
        "gunicorn, 4 sync workers, preload, one indexed query over TLS"
        f" ({results['machine']['cpus']} CPUs, {results['load_generator']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 60 s)")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--chart", type=Path, default=None)
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    # A smoke test leaves the last full run's results where they are.
    tmp = Path(tempfile.gettempdir())
    results_path = args.results or (
        tmp / "pgpool-bench-quick.json" if args.quick else HERE / "results.json"
    )
    chart_path = args.chart or (
        tmp / "pgpool-bench-quick.png" if args.quick else HERE / "results.png"
    )
    started = time.monotonic()
    say("starting a throwaway PostgreSQL with TLS on ...")
    pg = start_cluster()
    try:
        prepare_database(pg)
        results: dict[str, Any] = {
            "quick": args.quick,
            "config": cfg,
            "concurrency": CONCURRENCY,
            "load_generator": "wrk" if use_wrk() else "loadgen.py",
            "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
        }
        results["http"] = http_benchmarks(pg, cfg)
        results["memory"] = memory_and_respawn(pg, cfg)
        results["micro"] = micro_benchmark(pg, cfg)
        results["machine"]["load_after"] = os.getloadavg()
    finally:
        say("stopping PostgreSQL ...")
        stop_cluster(pg)
    results["targets"] = targets(results)
    results["seconds"] = time.monotonic() - started
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    chart(results, chart_path)
    print()
    print(table(results))
    print()
    say(f"results in {results_path}, chart in {chart_path}")
    say(f"took {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
