"""The report of ``run.py``: the tables, the targets' verdicts, the chart.

Everything here reads the results ``run.py`` collects (the shape of
``results.json``, the verdicts of its ``targets()`` included) and nothing
else, so that a saved run can be printed again:
``python benchmarks/report.py results.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from contenders import DJANGO, FLASK, LABELS

#: The column headings of the tables (docs/performance.rst shows them).
HTTP_HEADER = (
    f"{'contender':<34} {'req/s':>6} {'ratio (IQR)':>17} {'CPU us':>6}"
    f" {'ratio (IQR)':>17} {'p50 ms':>6} {'p99 ms':>6} {'errors':>6} {'trips':>5}"
)
MICRO_HEADER = (
    f"{'contender':<34} {'wall':>6} {'diff (IQR)':>17} {'CPU':>6} {'diff (IQR)':>17}"
    f" {'server':>6} {'round trips':>11}"
)
BORROW_HEADER = (
    "-- fork safety alone, in one process: requests that borrow a connection"
    " and run no query, reset off (CPU us per request; diff to the baseline"
    " in the same round, median (IQR))"
)
ASGI_HEADER = (
    "-- under ASGI, in one process: Django's ASGIHandler, one query per"
    " request, a new connection wrapper each (CPU us per request; diff to"
    " the baseline in the same round, median (IQR))"
)
WRAPPER_HEADER = (
    "-- making one connection wrapper (us, timeit; diff to Django's own in"
    " the same round, median (IQR))"
)
MEMORY_HEADER = (
    f"{'mode':<34} {'workers RSS MB':>15} {'PSS MB':>7} {'respawn ms med (min)':>21}"
)


def _ratio(value: dict[str, float]) -> str:
    return f"{value['median']:.2f} ({value['q1']:.2f}-{value['q3']:.2f})"


def _diff(value: dict[str, float], digits: int = 0) -> str:
    if value["q1"] == value["q3"] == 0:
        return "0"  # the baseline
    return (
        f"{value['median']:+.{digits}f}"
        f" ({value['q1']:+.{digits}f} {value['q3']:+.{digits}f})"
    )


def http_table(group: dict[str, Any]) -> list[str]:
    delay = f", PostgreSQL {group['delay_ms']:g} ms away each way" * bool(
        group["delay_ms"]
    )
    lines = [
        f"-- {group['name']} (baseline: {LABELS[group['baseline']]}{delay};"
        f" {group['rounds']} rounds)",
    ]
    trips = "round_trips_per_request" in group["entries"][0]
    for e in group["entries"]:
        line = (
            f"{e['label']:<34} {e['rps']['median']:>6.0f} {_ratio(e['rps_ratio']):>17}"
            f" {e['cpu_us_per_request']['median']:>6.0f} {_ratio(e['cpu_ratio']):>17}"
            f" {e['p50_ms']['median']:>6.2f} {e['p99_ms']['median']:>6.2f}"
            f" {e['errors']:>6}"
        )
        if trips:
            line += f" {e['round_trips_per_request']:>5.2f}"
        lines.append(line)
    return lines


def table(results: dict[str, Any]) -> str:
    lines = []
    if results["http"]:
        lines.append(HTTP_HEADER)
        for group in results["http"].values():
            lines += http_table(group)
    micro = results.get("micro")
    if micro:
        cfg = micro["config"]
        lines.append(
            f"-- in one process, per request (us; median of {cfg['repeats']}"
            f" rounds, each the best of {cfg['best_of']} x {cfg['requests']}"
            " requests; diff: to the baseline in the same round, median (IQR);"
            " round trips waited / started)"
        )
        lines.append(MICRO_HEADER)
        for entry in micro["contenders"].values():
            trips = entry["round_trips"]
            lines.append(
                f"{entry['label']:<34} {entry['wall_us']['median']:>6.0f}"
                f" {_diff(entry['wall_us_diff']):>17}"
                f" {entry['cpu_us']['median']:>6.0f}"
                f" {_diff(entry['cpu_us_diff']):>17}"
                f" {entry['server_cpu_us']['median']:>6.0f}"
                f" {trips['waited']:>5.1f} / {trips['started']:.1f}"
            )
        for key, header in (("borrow", BORROW_HEADER), ("asgi", ASGI_HEADER)):
            if micro.get(key):
                lines.append(header)
                for entry in micro[key].values():
                    lines.append(
                        f"{entry['label']:<34} {entry['cpu_us']['median']:>6.1f}"
                        f" {_diff(entry['cpu_us_diff'], 1):>17}"
                    )
        if micro.get("wrappers"):
            lines.append(WRAPPER_HEADER)
            for name, entry in micro["wrappers"].items():
                lines.append(
                    f"{LABELS[name]:<34} {entry['us']['median']:>6.1f}"
                    f" {_diff(entry['us_diff'], 1):>17}"
                )
    if results.get("memory"):
        lines.append("-- uWSGI, Django example, master + 4 workers")
        lines.append(MEMORY_HEADER)
        for e in results["memory"]:
            respawn = (
                f"{e['respawn_s']['median'] * 1000:.0f}"
                f" ({e['respawn_s']['min'] * 1000:.0f})"
            )
            lines.append(
                f"{e['name']:<34} {e['workers_rss_mb']:>15.1f}"
                f" {e['total_pss_mb']:>7.1f} {respawn:>21}"
            )
    return "\n".join(lines)


def targets_table(results: dict[str, Any]) -> str:
    lines = [
        "-- targets (median, its 95 % interval; unsure: the interval holds the goal,"
        " more rounds would tell)"
    ]
    for t in results["targets"]:
        mark = "met" if t["met"] else "MISSED"
        if not t.get("sure", True):
            mark += ", unsure"
        ci = f" ({t['ci95'][0]:g}..{t['ci95'][1]:g})" if "ci95" in t else ""
        lines.append(f"{t['target']:<66} {t['value']:>7}{ci:<18} {mark}")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """Each contender's ratios to its baseline, loopback and delayed, with IQRs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = results["http"]
    # The one-query groups (the ASGI and page groups are in the tables only).
    charted = [g for k, g in groups.items() if k.partition("-")[2] in ("", "delay")]
    names = [
        n
        for n in FLASK + DJANGO
        if any(e["name"] == n for g in charted for e in g["entries"])
    ]
    if not names:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 2), sharey=True)
    height = 0.38
    for offset, delayed, color, label in (
        (-height / 2, False, "#1f77b4", "loopback"),
        (height / 2, True, "#ff7f0e", f"{results['config']['delay_ms']:g} ms each way"),
    ):
        for ax, key, title in (
            (axes[0], "rps_ratio", "requests/s, ratio to the baseline"),
            (axes[1], "cpu_ratio", "requests per CPU second, ratio to the baseline"),
        ):
            ys, values, low, high = [], [], [], []
            for i, name in enumerate(names):
                framework = "flask" if name in FLASK else "django"
                group = groups.get(f"{framework}-delay" if delayed else framework)
                entry = group and next(
                    (e for e in group["entries"] if e["name"] == name), None
                )
                if not entry:
                    continue
                ratio = entry[key]
                ys.append(i + offset)
                values.append(ratio["median"])
                low.append(ratio["median"] - ratio["q1"])
                high.append(ratio["q3"] - ratio["median"])
            if values:
                ax.barh(ys, values, height, xerr=[low, high], color=color, label=label)
            ax.set_xlabel(title)
            ax.axvline(1.0, color="black", linewidth=0.8)
    axes[0].set_yticks(range(len(names)), [LABELS[n] for n in names])
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right")
    fig.suptitle(
        "gunicorn, 4 sync workers, preload, one indexed query over TLS; median"
        f" of per-round ratios, IQR bars ({results['machine']['cpus']} CPUs,"
        f" {results['load_generator']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    results = json.loads(Path(sys.argv[1]).read_text())
    print(table(results))
    print()
    print(targets_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
