"""Run psycopg_pool's own sync pool tests against ForkSafePool; compare with the list.

Usage (from the repository root, with the project's environment)::

    python -m tests.conformance.psycopg_pool [--stock] [--if-present] [-- ARGS...]

psycopg's tests live outside the repository (they are psycopg's files, kept
beside the project, never copied into it): ``PGPOOL_CONFORMANCE_KIT`` names
the folder, else the first ``shared/conformance/psycopg-pool`` beside the
repository or beside one of its parent folders (``<repo>/../shared/...``; a
git worktree's ``../../shared/...``). They run on a
throwaway TLS cluster of the harness that also accepts plain connections from
127.0.0.1, for the kit's TCP proxy (pproxy), which cannot speak TLS.

Every test must pass except those in ``psycopg_pool_allowed.txt`` (each with
its reason; pytest reports them as xfailed, plugin/pgpool_allowed.py), and each of
those must fail (unless its reason says "racy"): the
run fails on a failure outside the list and on a listed test that passes or
no longer exists, so that the list stays true. A failure outside the list is
run once more before it counts: the suite has timing tests, written for an
idle machine. ``--stock`` runs the
same tests on psycopg_pool's own ConnectionPool, which must pass them all.

Without the kit the run fails, saying where it looked (``make conformance``);
with ``--if-present`` (``make test``, which a fresh clone runs without the
kit) it says that the tests were not run and passes, except under
``CI=true``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conformance.plugin.pgpool_allowed import ALLOWED_FILE, read_allowed

REPO = Path(__file__).resolve().parents[2]
#: The folder of pgpool_allowed, the plugin (alone: the kit has its own
#: ``tests`` package, and this folder's psycopg_pool.py would hide psycopg's).
PLUGIN_FOLDER = Path(__file__).with_name("plugin")
KIT_VARIABLE = "PGPOOL_CONFORMANCE_KIT"
KIT_PATH = Path("shared", "conformance", "psycopg-pool")
#: Where the kit is looked for when the variable is not set, nearest first.
DEFAULT_KITS = tuple(parent / KIT_PATH for parent in REPO.parents)
#: psycopg_pool's sync pool tests: test_pool.py and ConnectionPool's half of
#: test_pool_common.py.
TEST_FILES = ("tests/pool/test_pool.py", "tests/pool/test_pool_common.py")
SELECTION = "not NullConnectionPool"


def find_kit() -> Path | None:
    """Return the conformance kit's folder, or None if it is not there."""
    named = os.environ.get(KIT_VARIABLE)
    for kit in (Path(named),) if named else DEFAULT_KITS:
        if (kit / "forksafe_swap.py").is_file():
            return kit
    return None


@dataclass
class Outcomes:
    """What one pytest run did, by test id."""

    passed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # id -> first line
    skipped: set[str] = field(default_factory=set)

    @property
    def ran(self) -> set[str]:
        return self.passed | set(self.failed) | self.skipped


def read_junit(path: Path) -> Outcomes:
    """Read pytest's JUnit XML report into Outcomes."""
    outcomes = Outcomes()
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        test_id = f"{module}.py::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            # A listed test's failure, reported as xfailed (plugin/pgpool_allowed.py).
            skipped = case.find("skipped")
            if skipped is not None and skipped.get("type") == "pytest.xfail":
                problem = skipped
        if problem is not None:
            message = (problem.get("message") or "").strip().splitlines()
            outcomes.failed[test_id] = message[0] if message else problem.tag
        elif case.find("skipped") is not None:
            outcomes.skipped.add(test_id)
        else:
            outcomes.passed.add(test_id)
    return outcomes


@dataclass
class Verdict:
    """The run compared with the list."""

    unexpected_failures: dict[str, str]
    unexpected_passes: list[str]
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not (self.unexpected_failures or self.unexpected_passes or self.missing)


def may_pass(reason: str) -> bool:
    """Return True for an allowed failure whose reason says it is racy."""
    return "racy" in reason.partition(":")[0]


def compare(outcomes: Outcomes, allowed: dict[str, str]) -> Verdict:
    """Compare a run's outcomes with the allowed failures."""
    return Verdict(
        unexpected_failures={
            test: why for test, why in outcomes.failed.items() if test not in allowed
        },
        unexpected_passes=sorted(
            test
            for test, reason in allowed.items()
            if test in outcomes.passed and not may_pass(reason)
        ),
        missing=sorted(test for test in allowed if test not in outcomes.ran),
    )


def run_pytest(
    kit: Path, dsn: str, args: Sequence[str], *, swap: bool, report: Path
) -> Outcomes:
    """Run the kit's tests in a subprocess; return their outcomes."""
    command = [sys.executable, "-m", "pytest"]
    if swap:
        command += ["-p", "forksafe_swap", "-p", "pgpool_allowed"]
    cache = Path(tempfile.gettempdir()) / "pgpool-psycopg-pool-tests-cache"
    command += ["-o", f"cache_dir={cache}", f"--junitxml={report}", "-q", *args]
    path = os.pathsep.join([str(kit), str(PLUGIN_FOLDER)])
    env = {**os.environ, "PYTHONPATH": path, "PSYCOPG_TEST_DSN": dsn}
    subprocess.run(command, cwd=kit, env=env, check=False)
    if not report.exists():
        raise SystemExit(f"pytest wrote no report; its command was: {command}")
    return read_junit(report)


def _print_list(title: str, items: Iterable[str]) -> None:
    items = list(items)
    if items:
        print(f"\n{title}:")
        for item in items:
            print(f"  {item}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stock",
        action="store_true",
        help="run psycopg_pool's own ConnectionPool instead: every test must pass",
    )
    parser.add_argument(
        "--if-present",
        action="store_true",
        help="without the kit, say the tests were not run and pass (not under CI=true)",
    )
    parser.add_argument("pytest_args", nargs="*", help="more arguments for pytest")
    options = parser.parse_args(argv)

    kit = find_kit()
    if kit is None:
        looked = os.environ.get(KIT_VARIABLE) or DEFAULT_KITS[0]
        message = (
            "psycopg_pool's own pool tests were not run: their kit (psycopg's"
            " files, kept outside the repository) was not found; set"
            f" {KIT_VARIABLE} to the folder holding forksafe_swap.py (looked in"
            f" {looked} and the same place beside each parent folder)"
        )
        if options.if_present and os.environ.get("CI", "").lower() != "true":
            print(f"note: {message}", file=sys.stderr)
            return 0
        print(f"error: {message}", file=sys.stderr)
        return 1

    sys.path.insert(0, str(REPO))
    from tests.harness.postgres import start_cluster, stop_cluster

    allowed = {} if options.stock else read_allowed()
    args = [*TEST_FILES, "-k", SELECTION, *options.pytest_args]
    started = time.monotonic()
    server = start_cluster(plain_loopback=True)
    try:
        with tempfile.TemporaryDirectory(prefix="pgpool-conformance-") as tmp:
            run = run_pytest(
                kit,
                server.dsn(),
                args,
                swap=not options.stock,
                report=Path(tmp) / "first.xml",
            )
            verdict = compare(run, allowed)
            flaky: list[str] = []
            if verdict.unexpected_failures:
                # Once more, alone: timing tests written for an idle machine.
                again = run_pytest(
                    kit,
                    server.dsn(),
                    [*sorted(verdict.unexpected_failures), *options.pytest_args],
                    swap=not options.stock,
                    report=Path(tmp) / "again.xml",
                )
                flaky = sorted(again.passed & set(verdict.unexpected_failures))
                for test in flaky:
                    del run.failed[test]
                    run.passed.add(test)
                verdict = compare(run, allowed)
    finally:
        stop_cluster(server)

    what = "ConnectionPool (stock)" if options.stock else "ForkSafePool"
    print(
        f"\npsycopg_pool's suite on {what}: {len(run.passed)} passed,"
        f" {len(run.failed)} failed ({len(set(run.failed) & set(allowed))}"
        f" allowed), {len(run.skipped)} skipped,"
        f" in {time.monotonic() - started:.0f} s"
    )
    _print_list("Passed only when run again (timing)", flaky)
    _print_list(
        "Failed, not in the list",
        (f"{test}: {why}" for test, why in sorted(verdict.unexpected_failures.items())),
    )
    _print_list(
        f"Listed in {ALLOWED_FILE.name} but passed (remove them)",
        verdict.unexpected_passes,
    )
    _print_list(
        f"Listed in {ALLOWED_FILE.name} but not run (renamed or removed?)",
        verdict.missing,
    )
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
