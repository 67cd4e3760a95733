"""When work ran at once: answers that report when their query started and ended.

Each answer is a dict with "pid" (the process that ran it), "backend" (the
server process of its connection), "started" and "ended" (``time.time()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def most_at_once(bodies: Sequence[dict[str, Any]]) -> int:
    """Return the most queries that one process ran at the same time."""
    most = 0
    for pid in {body["pid"] for body in bodies}:
        events = sorted(
            (moment, step)
            for body in bodies
            if body["pid"] == pid
            for moment, step in ((body["started"], 1), (body["ended"], -1))
        )
        running = 0
        for _, step in events:
            running += step
            most = max(most, running)
    return most


def shared_while_running(bodies: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """Return the pairs of answers (by index) whose queries ran at once on a backend."""
    return [
        (i, j)
        for i, one in enumerate(bodies)
        for j, other in enumerate(bodies)
        if i < j
        and one["backend"] == other["backend"]
        and one["started"] < other["ended"]
        and other["started"] < one["ended"]
    ]
