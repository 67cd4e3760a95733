"""Two runs of ``run.py`` side by side: do their ratios agree?

``python benchmarks/compare.py A.json B.json`` prints, for each contender of
each group both ran, the median ratio to the baseline (requests/s and CPU per
request) of each run with its interquartile range, and says whether the two
ranges overlap; then the in-process differences to the baseline, the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _ratio(value: dict[str, float]) -> str:
    return f"{value['median']:.2f} ({value['q1']:.2f}-{value['q3']:.2f})"


def _diff(value: dict[str, float]) -> str:
    return f"{value['median']:+.0f} ({value['q1']:+.0f} {value['q3']:+.0f})"


def compare(
    a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("run A", "run B")
) -> tuple[list[str], int, int]:
    """Return the lines, and how many pairs agree out of how many."""
    lines = []
    if set(a["http"]) & set(b["http"]):
        lines += [
            f"{'':<38} {'req/s ratio':^40} {'CPU/request ratio':^40}",
            f"{'contender':<38} {names[0]:>16} {names[1]:>17} {'agree':>5}"
            f" {names[0]:>16} {names[1]:>17} {'agree':>5}",
        ]
    agree = total = 0
    for name, group in a["http"].items():
        other = b["http"].get(name)
        if other is None:
            continue
        lines.append(f"-- {name} ({group['rounds']} and {other['rounds']} rounds)")
        entries = {e["name"]: e for e in other["entries"]}
        for entry in group["entries"][1:]:
            twin = entries.get(entry["name"])
            if twin is None:
                continue
            line = f"{entry['label']:<38}"
            for key in ("rps_ratio", "cpu_ratio"):
                x, y = entry[key], twin[key]
                ok = _overlap((x["q1"], x["q3"]), (y["q1"], y["q3"]))
                agree += ok
                total += 1
                line += f" {_ratio(x):>16} {_ratio(y):>17} {'yes' if ok else 'NO':>5}"
            lines.append(line)
    if a.get("micro") and b.get("micro"):
        lines.append(
            "-- in one process, CPU us per request more than the baseline, (IQR)"
        )
        for name, entry in a["micro"]["contenders"].items():
            twin = b["micro"]["contenders"].get(name)
            if twin is None or name == entry["baseline"]:
                continue
            x, y = entry["cpu_us_diff"], twin["cpu_us_diff"]
            if "q1" not in x or "q1" not in y:
                continue  # a run from before the rounds in one process
            ok = _overlap((x["q1"], x["q3"]), (y["q1"], y["q3"]))
            agree += ok
            total += 1
            lines.append(
                f"{entry['label']:<38} {_diff(x):>16} {_diff(y):>17}"
                f" {'yes' if ok else 'NO':>5}"
            )
    return lines, agree, total


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:3]]
    a, b = (json.loads(p.read_text()) for p in paths)
    lines, agree, total = compare(a, b, (paths[0].stem, paths[1].stem))
    print("\n".join(lines))
    print(f"\n{agree} of {total} pairs agree (their ranges overlap)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
