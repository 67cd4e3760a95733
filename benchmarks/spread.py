"""Median, quartiles and extremes: how the benchmarks summarize repeated figures."""

from __future__ import annotations

import math
import statistics
from typing import Any


def quantile(values: list[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Return a distribution-free confidence interval of the median of *values*.

    The order statistics x(j) and x(n+1-j), j the largest rank such that
    fewer than j of n values fall below the median with probability at most
    (1 - level) / 2 (binomial, p = 1/2). With n < 6 that is less sure than
    *level*: the extremes then.
    """
    ordered = sorted(values)
    n = len(ordered)
    tail = (1 - level) / 2
    below, j = 0.0, 0
    while j < n // 2:
        below += math.comb(n, j) / 2**n  # P(exactly j values below)
        if below > tail:
            break
        j += 1
    j = max(j, 1)
    return ordered[j - 1], ordered[n - j]


def spread(values: list[float]) -> dict[str, Any]:
    """Median with its 95 % interval, interquartile range, extremes of *values*."""
    return {
        "median": statistics.median(values),
        "ci95": median_ci(values),
        "q1": quantile(values, 0.25),
        "q3": quantile(values, 0.75),
        "min": min(values),
        "max": max(values),
    }
