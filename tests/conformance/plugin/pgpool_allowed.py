"""pytest plugin: report psycopg_pool's tests listed as allowed failures as xfailed.

The conformance runner (tests/conformance/psycopg_pool.py) loads it with
``-p pgpool_allowed``, this folder alone on PYTHONPATH, beside the kit's
``forksafe_swap``. A listed test that fails in any phase (a teardown that
reads ``p._pool``, a worker thread's exception reported at teardown) is
reported the way ``pytest.mark.xfail`` reports one, with the list's reason, so
that pytest's own summary reads "70 passed, 27 xfailed" instead of counting
deliberate differences as failures. The runner's verdict does not change: it
reads the JUnit report, where an xfailed test is a failure it allows, and
still fails the run on a listed test that passes or no longer exists.

It imports nothing of the project: the kit has a ``tests`` package of its own.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

#: The list: psycopg_pool's tests ForkSafePool may fail, each with its reason.
ALLOWED_FILE = Path(__file__).parents[1] / "psycopg_pool_allowed.txt"


def read_allowed(path: Path = ALLOWED_FILE) -> dict[str, str]:
    """Return the allowed failures: test id -> reason.

    One test a line: its pytest id, then its reason; ``#`` starts a comment.
    """
    allowed: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        test_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path.name}:{number}: {test_id} has no reason")
        if test_id in allowed:
            raise ValueError(f"{path.name}:{number}: {test_id} is listed twice")
        allowed[test_id] = reason.strip()
    return allowed


_ALLOWED = read_allowed()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, pytest.TestReport]:
    report: pytest.TestReport = yield
    reason = _ALLOWED.get(item.nodeid)
    if reason is not None and report.failed:
        report.outcome = "skipped"
        report.wasxfail = f"allowed: {reason}"
    return report
