"""CPU time of processes, from /proc: nanoseconds where the kernel has them.

``/proc/PID/task/TID/schedstat`` gives each thread's time on CPU in
nanoseconds; ``/proc/PID/stat`` only in clock ticks (10 ms), too coarse for
a contender measured for two seconds. What exited is only in the parent's
``cutime``/``cstime`` (ticks, but summed by the kernel before rounding).
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The command may hold spaces and parentheses: the fields follow the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Return the pids of *pid*'s children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except (OSError, ValueError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def process_ns(pid: int) -> float:
    """Return the CPU time of *pid*'s live threads, in ns (0 if it is gone)."""
    total = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            try:  # no schedstat in this kernel: ticks
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) * _TICK_NS
            except (OSError, ValueError, IndexError):
                continue
    return total


def reaped_ns(pid: int) -> float:
    """Return the CPU time of *pid*'s children that have exited, in ns."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) * _TICK_NS


def tree_ns(pid: int, *, reaped: bool = False) -> float:
    """Return the CPU time of *pid*'s live children (and of its reaped ones), ns."""
    total = sum(process_ns(child) for child in children(pid))
    return total + (reaped_ns(pid) if reaped else 0.0)
